#!/usr/bin/python3
"""Bad inputs as a new user makes them: each must exit with the documented code and a
message that names what was wrong; none may crash or succeed silently.

Runs the real `fedpod` binary (FEDPOD_BIN) against real files and a real
`fedpod hub serve` on loopback. Each case asserts its exit code and a phrase of its
message, and that no signal ended the process. The table of every case (command,
exit code, first line of the message) is written to FEDPOD_ERRORS_DOC when set:
docs/errors.md is that file, regenerated with

    FEDPOD_ERRORS_DOC=$PWD/docs/errors.md ctest --test-dir build -R errors_test
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

FEDPOD = os.environ.get("FEDPOD_BIN", "")
SOURCE_DIR = os.path.abspath(os.environ.get("FEDPOD_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", "..")))
DOC = os.environ.get("FEDPOD_ERRORS_DOC", "")
POD_KEY = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hIF"

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+ ")

JOB = """job_id: digits
model:
  ref: mlp
  hyperparameters: {hidden: [32], optimizer: sgd, lr: 0.05}
datastructure: {target: label, num_classes: 10, scale: 0.0625}
pods:
  - {name: pod-a, address: "tcp://127.0.0.1:5551", public_key: "%s"}
  - {name: pod-b, address: "tcp://127.0.0.1:5552", public_key: "%s"}
key_file: keys/me.key
rounds: 3
batch_size: 32
min_pods: 2
round_timeout: 20s
output_dir: out
""" % (POD_KEY, POD_KEY)

POD = """name: pod-a
listen: tcp://127.0.0.1:5551
dataset:
  path: %s
key_file: keys/pod-a.key
threads: 1
policy: {hub: HUB, token_file: keys/pod-a.token, signing_key: "SIGNING_KEY"}
""" % os.path.join(SOURCE_DIR, "examples", "digits", "pod-a.csv")


def read(path):
    with open(path) as f:
        return f.read()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


class ErrorsTest(unittest.TestCase):
    rows = []

    @classmethod
    def setUpClass(cls):
        if not FEDPOD or not os.access(FEDPOD, os.X_OK):
            raise RuntimeError("FEDPOD_BIN must name the fedpod binary (ctest sets it)")
        cls.dir = tempfile.mkdtemp(prefix="fedpod-errors-")
        cls.env = dict(os.environ, HOME=cls.dir)
        for k in ("FEDPOD_HUB", "FEDPOD_TOKEN", "FEDPOD_HUB_CA", "XDG_CONFIG_HOME"):
            cls.env.pop(k, None)
        subprocess.run([FEDPOD, "keys", "generate", "--out", os.path.join(cls.dir, "keys", "me")], env=cls.env,
                       check=True, capture_output=True)
        subprocess.run([FEDPOD, "keys", "generate", "--out", os.path.join(cls.dir, "keys", "pod-a")], env=cls.env,
                       check=True, capture_output=True)
        port_file = os.path.join(cls.dir, "hub.port")
        with open(os.path.join(cls.dir, "hub.log"), "w") as log:
            cls.hub = subprocess.Popen([FEDPOD, "hub", "serve", "--data-dir", os.path.join(cls.dir, "hub"),
                                        "--listen", "127.0.0.1:0", "--port-file", port_file],
                                       env=cls.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while not os.path.exists(port_file):
            if time.time() > deadline or cls.hub.poll() is not None:
                raise RuntimeError("the hub did not start: " + read(os.path.join(cls.dir, "hub.log")))
            time.sleep(0.05)
        cls.hub_url = "http://127.0.0.1:" + read(port_file).strip()
        reg = subprocess.run([FEDPOD, "user", "register", "alice", "--key-file",
                              os.path.join(cls.dir, "keys", "me.key"), "--hub", cls.hub_url, "--json"],
                             env=cls.env, capture_output=True, text=True, check=True)
        cls.token = json.loads(reg.stdout)["token"]
        # A pod registered on the hub, with its token and the hub's signing key, so that
        # pod.yaml's policy is valid and the cases reach what they break.
        pod_pub = re.search(r'public_key: "([^"]{40})"', read(os.path.join(cls.dir, "keys", "pod-a.pub"))).group(1)
        hub_args = ["--hub", cls.hub_url, "--token", cls.token]
        subprocess.run([FEDPOD, "pod", "register", "pod-a", "--address", "tcp://127.0.0.1:5551", "--public-key",
                        pod_pub] + hub_args, env=cls.env, check=True, capture_output=True)
        subprocess.run([FEDPOD, "pod", "token", "pod-a", "--out", os.path.join(cls.dir, "keys", "pod-a.token")]
                       + hub_args, env=cls.env, check=True, capture_output=True)
        signing = subprocess.run([FEDPOD, "hub", "signing-key", "--data-dir", os.path.join(cls.dir, "hub")],
                                 env=cls.env, check=True, capture_output=True, text=True).stdout.strip()
        global POD
        POD = POD.replace("HUB", cls.hub_url).replace("SIGNING_KEY", signing)
        write(os.path.join(cls.dir, "notazip.pt"), "this is not a TorchScript archive\n")
        write(os.path.join(cls.dir, "job.yaml"), JOB)

    @classmethod
    def tearDownClass(cls):
        cls.hub.terminate()
        cls.hub.wait(10)
        if DOC:
            cls.write_doc()
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def write_doc(cls):
        lines = [
            "# Errors: what fedpod says when the input is wrong",
            "",
            "Generated by `tests/e2e/errors_test.py` (regenerate with",
            "`FEDPOD_ERRORS_DOC=$PWD/docs/errors.md ctest --test-dir build -R errors_test`):",
            "each row is a bad input a new user is likely to make, the exit code it gets, and",
            "the first line of the message. The test asserts every row; none may crash (exit",
            "by a signal) or succeed.",
            "",
            "## Exit codes",
            "",
            "| code | meaning |",
            "|---|---|",
            "| 0 | done |",
            "| 1 | the operation failed: a job that ran and failed, a hub call the hub refused, a check "
            "(signature, audit log) that did not pass, a hub that cannot be reached |",
            "| 2 | bad usage or configuration: a command line CLI cannot parse, a job.yaml or pod.yaml "
            "that is not valid, an output folder that cannot be written, a `--resume` that cannot resume (no "
            "checkpoint, another job's, a damaged one); nothing was started |",
            "",
            "`fedpod --help` and `fedpod COMMAND --help` list every option; a word that is not a",
            "command gets the nearest one (`did you mean ...`).",
            "",
            "## Bad inputs",
            "",
            "`DIR` stands for the test's temporary folder, `PORT` for the hub's port, `TOKEN` for a",
            "user's token.",
            "",
            "| input | command | exit | first line of the message |",
            "|---|---|---|---|",
        ]
        for r in cls.rows:
            lines.append("| %s | `%s` | %d | %s |" % (r["what"], r["command"].replace("|", "\\|"), r["code"],
                                                    r["message"].replace("|", "\\|")))
        write(DOC, "\n".join(lines) + "\n")

    # --- helpers ---

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def check(self, what, args, code, phrase, files=None):
        """Runs fedpod ARGS in the test's folder (after writing `files`) and asserts the
        exit code and that `phrase` is in stderr."""
        for name, text in (files or {}).items():
            write(self.path(name), text)
        try:
            p = subprocess.run([FEDPOD] + args, cwd=self.dir, env=self.env, capture_output=True, text=True,
                               timeout=60)
        except subprocess.TimeoutExpired as e:
            self.fail("%s: fedpod %s was still running after 60 s (a bad input must be refused at once)\n%s"
                      % (what, " ".join(args), e.stderr))
        self.assertGreaterEqual(p.returncode, 0, "%s: killed by signal %d\n%s" % (what, -p.returncode, p.stderr))
        said = p.stderr if p.stderr.strip() else p.stdout  # a failed check reports on stdout
        err = [l for l in said.splitlines() if l.strip() and not LOG_LINE.match(l)]
        first = err[0] if err else ""
        self.assertEqual(p.returncode, code, "%s: fedpod %s\nstdout: %s\nstderr: %s" % (what, " ".join(args), p.stdout,
                                                                                      p.stderr))
        self.assertIn(phrase, said, what)
        shown = " ".join(args).replace(self.dir, "DIR").replace(self.hub_url.rsplit(":", 1)[1], "PORT")
        shown = shown.replace(self.token, "TOKEN").replace("f" * 64, "WRONG_TOKEN")
        message = first.replace(self.dir, "DIR").replace(self.hub_url.rsplit(":", 1)[1], "PORT")
        if len(message) > 240:
            message = message[:237] + "..."
        type(self).rows.append({"what": what, "command": "fedpod " + shown, "code": p.returncode, "message": message})

    def job(self, old, new):
        self.assertIn(old, JOB)
        return {"job.yaml": JOB.replace(old, new)}

    def pod(self, old, new):
        self.assertIn(old, POD)
        return {"pod.yaml": POD.replace(old, new)}

    # --- the command line ---

    def test_a_command_line(self):
        self.check("no command", [], 2, "A subcommand is required")
        self.check("misspelt command", ["coordinatr", "run", "job.yaml"], 2, "did you mean `fedpod coordinator`?")
        self.check("misspelt subcommand of a subcommand", ["access", "aprove", "1"], 2,
                   "did you mean `fedpod access approve`?")
        self.check("misspelt subcommand", ["hub", "serv"], 2, "did you mean `fedpod hub serve`?")
        self.check("unknown command", ["train"], 2, "its commands:")
        self.check("missing job file argument", ["coordinator", "run"], 2, "job is required")
        self.check("job file that does not exist", ["coordinator", "run", "nope.yaml"], 2, "File does not exist")
        self.check("unknown option", ["coordinator", "run", "job.yaml", "--rounds", "3"], 2,
                   "The following arguments were not expected")
        self.check("required option missing", ["keys", "generate"], 2, "--out is required")
        self.check("number out of range", ["demo", "--rounds", "0"], 2, "--rounds: must be above 0, got 0")
        self.check("value not a number", ["demo", "--rounds", "ten"], 2, "--rounds: must be a number, got 'ten'")
        self.check("choice not offered", ["demo", "--update-precision", "float8"], 2, "--update-precision")

    # --- job.yaml ---

    def test_b_job_file(self):
        self.check("job.yaml that is not YAML", ["coordinator", "run", "job.yaml"], 2, "job.yaml",
                   self.job("rounds: 3", "rounds: [3"))
        self.check("misspelt job key", ["coordinator", "run", "job.yaml"], 2, "did you mean 'rounds'?",
                   self.job("rounds: 3", "roundz: 3"))
        self.check("negative rounds", ["coordinator", "run", "job.yaml"], 2, "rounds",
                   self.job("rounds: 3", "rounds: -1"))
        self.check("rounds not a number", ["coordinator", "run", "job.yaml"], 2, "rounds",
                   self.job("rounds: 3", "rounds: three"))
        self.check("no model", ["coordinator", "run", "job.yaml"], 2, "model",
                   self.job("model:\n  ref: mlp\n  hyperparameters: {hidden: [32], optimizer: sgd, lr: 0.05}\n", ""))
        self.check("unknown built-in model", ["coordinator", "run", "job.yaml"], 2, "resnet9000",
                   self.job("ref: mlp", "ref: resnet9000"))
        self.check("misspelt hyperparameter", ["coordinator", "run", "job.yaml"], 2, "optimiser",
                   self.job("optimizer: sgd", "optimiser: sgd"))
        self.check("hyperparameter of the wrong type", ["coordinator", "run", "job.yaml"], 2, "lr",
                   self.job("lr: 0.05", "lr: fast"))
        self.check("batch size zero", ["coordinator", "run", "job.yaml"], 2, "batch_size",
                   self.job("batch_size: 32", "batch_size: 0"))
        self.check("min_pods above the pods listed", ["coordinator", "run", "job.yaml"], 2, "min_pods",
                   self.job("min_pods: 2", "min_pods: 5"))
        self.check("no pods", ["coordinator", "run", "job.yaml"], 2, "pods",
                   self.job(JOB[JOB.index("pods:"):JOB.index("key_file")], "pods: []\n"))
        self.check("pod address without tcp://", ["coordinator", "run", "job.yaml"], 2, "is not tcp://HOST:PORT",
                   self.job('address: "tcp://127.0.0.1:5551"', 'address: "127.0.0.1:5551"'))
        self.check("pod public key too short", ["coordinator", "run", "job.yaml"], 2, "public_key",
                   {"job.yaml": JOB.replace(POD_KEY, "abc", 1)})
        self.check("duration without a unit", ["coordinator", "run", "job.yaml"], 2, "round_timeout",
                   self.job("round_timeout: 20s", "round_timeout: 20 parsecs"))
        self.check("key file that does not exist", ["coordinator", "run", "job.yaml"], 2, "keys/nope.key",
                   self.job("key_file: keys/me.key", "key_file: keys/nope.key"))
        self.check("negative DP noise", ["coordinator", "run", "job.yaml"], 2, "noise_multiplier",
                   self.job("rounds: 3", "rounds: 3\ndifferential_privacy: {noise_multiplier: -1, max_grad_norm: 1}"))
        self.check("unknown update precision", ["coordinator", "run", "job.yaml"], 2, "float8",
                   self.job("rounds: 3", "rounds: 3\nupdate_precision: float8"))
        self.check("output_dir that cannot be created", ["coordinator", "run", "job.yaml"], 2, "output_dir",
                   self.job("output_dir: out", "output_dir: /proc/fedpod-out"))
        write(self.path("a-file"), "x")
        self.check("output_dir that is a file", ["coordinator", "run", "job.yaml"], 2, "is not a folder",
                   self.job("output_dir: out", "output_dir: a-file"))
        self.check("--resume without a checkpoint", ["coordinator", "run", "job.yaml", "--resume"], 2, "checkpoint",
                   self.job("output_dir: out", "output_dir: empty-out"))

    # --- pod.yaml ---

    def test_c_pod_file(self):
        self.check("pod listen port out of range", ["worker", "--config", "pod.yaml"], 2, "is not a TCP port",
                   self.pod("tcp://127.0.0.1:5551", "tcp://127.0.0.1:99999"))
        self.check("pod listen without tcp://", ["worker", "--config", "pod.yaml"], 2, "is not a tcp:// address",
                   self.pod("tcp://127.0.0.1:5551", "127.0.0.1:5551"))
        self.check("dataset file that does not exist", ["worker", "--config", "pod.yaml"], 2, "nope.csv",
                   self.pod("pod-a.csv", "nope.csv"))
        self.check("no dataset", ["worker", "--config", "pod.yaml"], 2, "dataset",
                   {"pod.yaml": "name: pod-a\nlisten: tcp://127.0.0.1:5551\nkey_file: keys/pod-a.key\n"})
        self.check("misspelt pod key", ["worker", "--config", "pod.yaml"], 2, "did you mean 'threads'?",
                   self.pod("threads: 1", "threds: 1"))
        self.check("negative threads", ["worker", "--config", "pod.yaml"], 2, "threads",
                   self.pod("threads: 1", "threads: -2"))
        self.check("threads not a number", ["worker", "--config", "pod.yaml"], 2, "threads",
                   self.pod("threads: 1", "threads: many"))
        self.check("pod key file that does not exist", ["worker", "--config", "pod.yaml"], 2, "keys/none.key",
                   self.pod("keys/pod-a.key", "keys/none.key"))
        self.check("negative privacy limit", ["worker", "--config", "pod.yaml"], 2, "min_batch_size",
                   self.pod("threads: 1", "threads: 1\nprivacy: {min_batch_size: -3}"))
        self.check("pod name with a slash", ["worker", "--config", "pod.yaml"], 2, "name: 'pod/a'",
                   self.pod("name: pod-a", "name: pod/a"))

    # --- the hub and its commands ---

    def test_d_hub(self):
        self.check("hub port out of range", ["hub", "serve", "--data-dir", "h", "--listen", "127.0.0.1:99999"], 2,
                   "bad port")
        self.check("plain HTTP beyond loopback", ["hub", "serve", "--data-dir", "h", "--listen", "0.0.0.0:8470"], 2,
                   "--tls-cert")
        self.check("certificate without its key", ["hub", "serve", "--data-dir", "h", "--tls-cert", "x.crt"], 2,
                   "go together")
        self.check("hub that is not running", ["model", "list", "--hub", "http://127.0.0.1:1"], 1, "unreachable")
        self.check("plain HTTP to a remote hub", ["model", "list", "--hub", "http://10.1.2.3:8470"], 2, "http://")
        self.check("wrong token", ["model", "push", "alice/net", "--format", "torchscript", "--artifact",
                                   "notazip.pt", "--hub", self.hub_url, "--token", "f" * 64], 1, "invalid token")
        self.check("artifact that is not TorchScript", ["model", "push", "alice/net", "--format", "torchscript",
                                                        "--artifact", "notazip.pt", "--hub", self.hub_url,
                                                        "--token", self.token], 1, "artifact")
        self.check("model name with capitals", ["model", "push", "alice/Net", "--format", "torchscript",
                                                "--artifact", "notazip.pt", "--hub", self.hub_url,
                                                "--token", self.token], 1, "model ref")
        self.check("model that does not exist", ["model", "show", "alice/nope", "--hub", self.hub_url,
                                                 "--token", self.token], 1, "no model alice/nope")
        self.check("request that does not exist", ["access", "approve", "999", "--hub", self.hub_url,
                                                   "--token", self.token], 1, "no access request 999")
        self.check("access request for a pod that does not exist",
                   ["access", "request", "--model", "alice/nope", "--pod", "nowhere", "--purpose", "x",
                    "--hub", self.hub_url, "--token", self.token], 1, "no model alice/nope")
        self.check("pod public key that is not a key", ["pod", "register", "p1", "--address", "tcp://10.0.0.5:5555",
                                                        "--public-key", "short", "--hub", self.hub_url,
                                                        "--token", self.token], 1, "public_key")
        self.check("username taken", ["user", "register", "alice", "--key-file", "keys/pod-a.key",
                                      "--hub", self.hub_url], 1, "alice")
        self.check("hub call without a token", ["access", "list", "--hub", self.hub_url], 2, "needs a token")

    # --- keys, policies, audit logs, privacy ---

    def test_e_files(self):
        self.check("key pair that exists already", ["keys", "generate", "--out", "keys/me"], 1, "already exists")
        write(self.path("policy.json"), "{not json")
        self.check("policy that is not JSON", ["policy", "verify", "--signing-key", "A" * 43 + "=", "policy.json"], 1,
                   "policy.json")
        write(self.path("audit.log"), "garbage line\n")
        self.check("audit log that is not one", ["audit", "verify", "audit.log"], 1, "audit.log")
        self.check("privacy budget of a missing pod.yaml", ["privacy", "status", "missing-pod.yaml"], 2,
                   "missing-pod.yaml: no such file")
        self.check("DP delta out of range", ["privacy", "epsilon", "--rows", "1000", "--batch-size", "32",
                                             "--noise-multiplier", "1.1", "--delta", "2"], 2, "--delta")


if __name__ == "__main__":
    unittest.main(verbosity=2)
