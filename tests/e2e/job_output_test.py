"""What a job tells people and programs, from real jobs: `coordinator run --json`
(one event per line, stdout holding nothing else), `--quiet`, and report.html opened
in headless Chromium (chromium, chromium-driver, python3-selenium) for a completed job
with a pod left out before round 1, a job stopped with Ctrl-C (SIGINT), and a job that
failed when a pod died and too few were left.

Two real `fedpod worker` pods (CURVE, signed air-gapped policies) and `fedpod
coordinator run`. For each report the test checks what a reader needs: the status,
the hyperparameters, every pod with its outcome and reason, the per-pod test
evaluation, round numbers on every chart, and legends that do not overlap; and that
the page fits 1280 px. FEDPOD_SCREENSHOTS=DIR keeps the screenshots (docs/report/):

    FEDPOD_SCREENSHOTS=$PWD/docs/report ctest --test-dir build -R job_output_test
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_util import clean_env, public_key, read, write  # noqa: E402

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

FEDPOD = os.environ.get("FEDPOD_BIN", "")
SOURCE_DIR = os.environ.get("FEDPOD_SOURCE_DIR", "")
SHOTS = os.environ.get("FEDPOD_SCREENSHOTS", "")


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class ReportTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not FEDPOD or not SOURCE_DIR:
            raise RuntimeError("FEDPOD_BIN and FEDPOD_SOURCE_DIR must be set (ctest sets them)")
        cls.dir = tempfile.mkdtemp(prefix="fedpod-report-")
        cls.env = clean_env(cls.dir)
        cls.shots = SHOTS or os.path.join(cls.dir, "shots")
        os.makedirs(cls.shots, exist_ok=True)
        keys = cls.path("keys")
        os.makedirs(keys)
        for who in ("modeller", "pod-a", "pod-b"):
            cls.fedpod(["keys", "generate", "--out", os.path.join(keys, who)])
        cls.fedpod(["keys", "generate-signing", "--out", os.path.join(keys, "owner")])
        modeller = public_key(os.path.join(keys, "modeller.pub"))
        cls.pods = {}
        cls.procs = []
        for pod in ("pod-a", "pod-b"):
            write(cls.path(pod + ".policy.yaml"),
                  "pod: %s\nusers:\n  - {username: modeller, public_key: \"%s\"}\n"
                  "roles:\n  - {username: modeller, role: general-modeller}\ngrants: []\n" % (pod, modeller))
            cls.fedpod(["policy", "sign", "--key", os.path.join(keys, "owner.sign.key"), "--expires", "1d",
                        cls.path(pod + ".policy.yaml"), "-o", cls.path(pod + ".policy.signed.json")])
            cls.start_pod(pod)
        options = webdriver.ChromeOptions()
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1280,900", "--hide-scrollbars", "--allow-file-access-from-files"):
            options.add_argument(arg)
        options.binary_location = "/usr/bin/chromium"
        cls.browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        cls.browser.set_page_load_timeout(60)

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "browser", None):
            cls.browser.quit()
        for p in cls.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(cls.dir, ignore_errors=True)

    # --- helpers ---

    @classmethod
    def path(cls, *parts):
        return os.path.join(cls.dir, *parts)

    @classmethod
    def fedpod(cls, args):
        r = subprocess.run([FEDPOD] + args, env=cls.env, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("fedpod %s: exit %d\n%s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r.stdout

    @classmethod
    def start_pod(cls, pod):
        endpoint_file = cls.path(pod + ".endpoint")
        if os.path.exists(endpoint_file):
            os.remove(endpoint_file)
        config = cls.path(pod + ".yaml")
        write(config, "name: %s\nlisten: tcp://127.0.0.1:%s\ndataset:\n  path: %s\nthreads: 1\n"
                      "key_file: %s\npolicy:\n  file: %s\n  signing_key_file: %s\naudit_log: %s\n"
              % (pod, cls.pods[pod][0].rsplit(":", 1)[1] if pod in cls.pods else "*",
                 os.path.join(SOURCE_DIR, "examples", "digits", pod + ".csv"), cls.path("keys", pod + ".key"),
                 cls.path(pod + ".policy.signed.json"), cls.path("keys", "owner.sign.pub"),
                 cls.path(pod + ".audit.log")))
        log = open(cls.path(pod + ".log"), "a")
        proc = subprocess.Popen([FEDPOD, "worker", "--config", config, "--endpoint-file", endpoint_file],
                                env=cls.env, stdout=log, stderr=subprocess.STDOUT)
        cls.procs.append(proc)
        deadline = time.time() + 60
        while not (os.path.exists(endpoint_file) and read(endpoint_file).strip()):
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("%s did not start:\n%s" % (pod, read(cls.path(pod + ".log"))))
            time.sleep(0.05)
        cls.pods[pod] = (read(endpoint_file).split()[0], proc)

    def job(self, name, extra, pods=("pod-a", "pod-b"), hidden="[64]"):
        lines = ["job_id: report-%s" % name,
                 "model: {ref: mlp, hyperparameters: {hidden: %s, optimizer: sgd, lr: 0.1, momentum: 0.9}}" % hidden,
                 "datastructure: {target: label, num_classes: 10, scale: 0.0625}",
                 "key_file: %s" % self.path("keys", "modeller.key"),
                 "seed: 3", "local_epochs: 1", "batch_size: 32", "eval_every: 1",
                 "output_dir: %s" % self.path("out-" + name), "pods:"]
        for pod in pods:
            if pod in self.pods:
                lines.append('  - {name: %s, address: "%s", public_key_file: %s}'
                             % (pod, self.pods[pod][0], self.path("keys", pod + ".pub")))
            else:  # a pod nobody runs: nothing listens at its address
                lines.append('  - {name: %s, address: "tcp://127.0.0.1:%d", public_key_file: %s}'
                             % (pod, closed_port(), self.path("keys", "pod-a.pub")))
        path = self.path(name + ".yaml")
        write(path, "\n".join(lines) + "\n" + extra)
        return path

    def coordinator(self, job, name):
        log = open(self.path(name + ".log"), "w")
        return subprocess.Popen([FEDPOD, "coordinator", "run", job], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT)

    def history(self, name):
        return json.loads(read(self.path("out-" + name, "history.json")))

    def wait_rounds(self, name, proc, rounds):
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                if len(self.history(name)["rounds"]) >= rounds:
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        self.fail("%s did not reach round %d:\n%s" % (name, rounds, read(self.path(name + ".log"))))

    def open_report(self, name):
        self.browser.set_window_size(1280, 900)
        self.browser.get("file://" + self.path("out-" + name, "report.html"))
        return self.browser

    def table_value(self, header):
        for row in self.browser.find_elements(By.CSS_SELECTOR, "table:first-of-type tr"):
            th = row.find_elements(By.TAG_NAME, "th")
            if th and th[0].text == header:
                return row.find_element(By.TAG_NAME, "td").text
        return None

    def pod_rows(self):
        rows = {}
        for row in self.browser.find_elements(By.CSS_SELECTOR, "table.pods tr"):
            cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
            if cells:
                rows[cells[0]] = cells
        return rows

    def check_charts(self, rounds):
        """Every chart names its rounds; legends are inside their chart and do not overlap."""
        charts = self.browser.find_elements(By.CSS_SELECTOR, "svg[role=img]")
        self.assertGreaterEqual(len(charts), 5)
        for svg in charts:
            label = svg.get_attribute("aria-label")
            ticks = [t.text for t in svg.find_elements(By.CSS_SELECTOR, ".xtick")]
            if svg.find_elements(By.XPATH, ".//*[text()='no data']"):
                continue
            self.assertIn("1", ticks, "%s has no round numbers: %s" % (label, ticks))
            if rounds <= 10:  # every round numbered up to 10 rounds
                self.assertIn(str(rounds), ticks, "%s: %s" % (label, ticks))
            boxes = self.browser.execute_script(
                "const svg = arguments[0]; const s = svg.getBoundingClientRect();"
                "return [...svg.querySelectorAll('.legend')].map(e => {const b = e.getBoundingClientRect();"
                "return [b.left - s.left, b.top - s.top, b.right - s.left, b.bottom - s.top, s.width, s.height];});",
                svg)
            for k, (l, t, r, b, w, h) in enumerate(boxes):
                self.assertTrue(0 <= l and r <= w + 0.5 and 0 <= t and b <= h + 0.5,
                                "%s: legend %d outside the chart: %s" % (label, k, boxes[k]))
                for (l2, t2, r2, b2, _, _) in boxes[k + 1:]:
                    overlap = min(r, r2) - max(l, l2) > 0.5 and min(b, b2) - max(t, t2) > 0.5
                    self.assertFalse(overlap, "%s: legends overlap: %s" % (label, boxes))

    def shot(self, name):
        inner = self.browser.execute_script("return window.innerWidth")
        scroll = self.browser.execute_script("return document.documentElement.scrollWidth")
        self.assertLessEqual(scroll, inner, "%s overflows 1280 px (%d px wide)" % (name, scroll))
        height = self.browser.execute_script("return document.documentElement.scrollHeight")
        self.browser.set_window_size(1280, max(600, min(height + 160, 4000)))
        self.browser.save_screenshot(os.path.join(self.shots, "report-%s.png" % name))

    # --- the jobs ---

    def test_0_json_events_and_quiet(self):
        job = self.job("events", "rounds: 3\nmin_pods: 2\nconnect_timeout: 3s\n", pods=("pod-a", "pod-b", "pod-c"))
        r = subprocess.run([FEDPOD, "coordinator", "run", job, "--json"], env=self.env, capture_output=True,
                           text=True, timeout=180)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        events = [json.loads(line) for line in r.stdout.splitlines()]  # every line is one JSON object
        for e in events:
            self.assertEqual(e["job_id"], "report-events")
            self.assertRegex(e["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        kinds = [e["event"] for e in events]
        left = [e for e in events if e["event"] == "pod_left_out"]
        self.assertEqual([(e["pod"], e["cause"]) for e in left], [("pod-c", "connection_refused")])
        self.assertEqual(sorted(e["pod"] for e in events if e["event"] == "pod_accepted"), ["pod-a", "pod-b"])
        self.assertEqual(kinds.index("job_start"), max(i for i, k in enumerate(kinds) if k == "pod_accepted") + 1)
        # Each round: its start, a result per pod, its end; in order.
        for rnd in (1, 2, 3):
            of_round = [(i, e) for i, e in enumerate(events) if e.get("round") == rnd]
            self.assertEqual(of_round[0][1]["event"], "round_start")
            self.assertEqual(sorted(of_round[0][1]["pods"]), ["pod-a", "pod-b"])
            results = [e for _, e in of_round if e["event"] == "pod_result"]
            self.assertEqual(sorted((e["pod"], e["outcome"]) for e in results), [("pod-a", "ok"), ("pod-b", "ok")])
            end = of_round[-1][1]
            self.assertEqual(end["event"], "round_end")
            self.assertEqual((end["pods_answered"], end["pods_asked"]), (2, 2))
            self.assertIn("val_accuracy", end)
            self.assertGreaterEqual(end["eta_seconds"], 0)
        self.assertEqual(events[-1]["event"], "job_end")
        self.assertEqual(events[-1]["status"], "completed")
        test = [e for e in events if e["event"] == "evaluation" and e["split"] == "test"]
        self.assertEqual(len(test), 1)
        self.assertAlmostEqual(test[0]["accuracy"], self.history("events")["test"]["accuracy"])
        self.assertAlmostEqual(events[-1]["test_accuracy"], test[0]["accuracy"])

        quiet = subprocess.run([FEDPOD, "coordinator", "run", job, "--quiet", "--log-level", "error"], env=self.env,
                               capture_output=True, text=True, timeout=180)
        self.assertEqual(quiet.returncode, 0, quiet.stdout + quiet.stderr)
        self.assertEqual(quiet.stdout, "")
        both = subprocess.run([FEDPOD, "coordinator", "run", job, "--quiet", "--json"], env=self.env,
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(both.returncode, 2)
        self.assertIn("excludes", both.stderr)

    def test_1_completed_job_with_a_pod_left_out(self):
        job = self.job("completed", "rounds: 6\nmin_pods: 2\nconnect_timeout: 3s\n",
                       pods=("pod-a", "pod-b", "pod-c"))
        proc = self.coordinator(job, "completed")
        self.assertEqual(proc.wait(180), 0, read(self.path("completed.log")))
        self.open_report("completed")
        self.assertEqual(self.table_value("status"), "completed")
        self.assertIn("hidden = [64]", self.table_value("hyperparameters"))
        self.assertIn("lr = 0.1", self.table_value("hyperparameters"))
        self.assertEqual(self.table_value("pods"), "2 trained, 1 left out before round 1 (see Pods)")
        rows = self.pod_rows()
        self.assertTrue(rows["pod-a"][1].startswith("accepted"), rows)
        self.assertTrue(rows["pod-b"][1].startswith("accepted"), rows)
        self.assertEqual(rows["pod-c"][1], "left out: unreachable at hello")
        self.assertIn("connection refused by 127.0.0.1:", rows["pod-c"][6])
        h = self.history("completed")
        for pod in ("pod-a", "pod-b"):  # each pod's test evaluation, as history.json has it
            self.assertEqual(int(rows[pod][3]), h["test"]["pods"][pod]["num_samples"])
            self.assertAlmostEqual(float(rows[pod][5]), h["test"]["pods"][pod]["accuracy"], places=3)
        self.check_charts(6)
        self.shot("completed")

    def test_2_stopped_job(self):
        job = self.job("stopped", "rounds: 40\nmin_pods: 2\n", hidden="[512, 512]")
        proc = self.coordinator(job, "stopped")
        self.wait_rounds("stopped", proc, 3)
        proc.send_signal(signal.SIGINT)
        self.assertEqual(proc.wait(60), 130, read(self.path("stopped.log")))
        self.open_report("stopped")
        self.assertEqual(self.table_value("status"), "stopped")
        after = self.history("stopped")["stopped"]["after_round"]
        self.assertRegex(self.table_value("stopped"), r"^by SIGINT at \d{4}-\d\d-\d\dT[\d:]+Z, after round %d$" % after)
        self.check_charts(after)
        self.shot("stopped")

    def test_3_failed_job(self):
        job = self.job("failed", "rounds: 40\nmin_pods: 2\nheartbeat_interval: 200ms\nheartbeat_timeout: 2s\n",
                       hidden="[512, 512]")
        proc = self.coordinator(job, "failed")
        self.wait_rounds("failed", proc, 3)
        pod_b = self.pods["pod-b"][1]
        pod_b.kill()
        pod_b.wait()
        self.assertEqual(proc.wait(120), 1, read(self.path("failed.log")))
        self.open_report("failed")
        self.assertEqual(self.table_value("status"), "failed")
        self.assertIn("min_pods is 2", self.table_value("error"))
        rounds = len(self.history("failed")["rounds"])
        # The last round is the one that failed: pod-b's cell says why.
        last = self.browser.find_elements(By.XPATH, "//*[local-name()='title'][starts-with(., 'pod-b round %d:')]"
                                          % rounds)
        self.assertEqual(len(last), 1)
        self.assertNotIn(": ok", last[0].get_attribute("textContent"))
        self.check_charts(rounds)
        self.shot("failed")
        self.start_pod("pod-b")  # for any later test


if __name__ == "__main__":
    unittest.main(verbosity=2)
