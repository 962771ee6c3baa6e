#!/usr/bin/env python3
"""Writes the seed corpora of csv_fuzz, job_spec_fuzz and pod_config_fuzz.

Seeds are the repository's real files (examples/, k8s/) plus small edge cases,
each a file a user could write. Run from anywhere; it rewrites the seed-* files under
tests/fuzz/corpus/{csv,job_spec,pod_config}/ and leaves other files there alone.
(The envelope seeds come from make_envelope_seeds, a C++ program: docs/fuzzing.md.)

csv seeds start with csv_fuzz's options byte (see csv_fuzz.cpp): bit 0 no header,
bits 1-2 the delimiter (, ; tab |), bit 3 on_bad_row skip, bit 4 the declared schema
a (numeric), b (categories x y z), c (category codes), label (numeric).
"""
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fuzz" / "corpus"

NO_HEADER, SEMICOLON, TAB, PIPE, SKIP, DECLARED = 1, 2, 4, 6, 8, 16


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / ("seed-" + name)).write_bytes(data)


def csv(name, flags, text):
    write("csv", name + ".csv", bytes([flags]) + text.encode())


def csv_seeds():
    digits = (ROOT / "examples" / "digits" / "pod-a.csv").read_text().splitlines(keepends=True)
    csv("digits-head", 0, "".join(digits[:9]))
    csv("digits-no-header", NO_HEADER, "".join(digits[1:6]))
    csv("digits-semicolon", SEMICOLON, "".join(line.replace(",", ";") for line in digits[:4]))
    csv("categorical-inferred", 0, "age,city,label\n34,oslo,1\n51,lima,0\n29,oslo,2\n40,\"san jose\",1\n")
    csv("quoted", 0, 'a,b,label\n"1","x, y",0\n"2","say ""hi""",1\n  3 ,"",2\n')
    csv("crlf", 0, "a,b,label\r\n1,2,0\r\n3,4,1\r\n\r\n5,6,2\r\n")
    csv("tab", TAB, "a\tb\tlabel\n1\t2\t0\n3\t4\t1\n")
    csv("pipe-no-header", PIPE | NO_HEADER, "1|2|0\n3|4|1\n5|6|2\n")
    csv("bad-rows-skipped", SKIP, "a,b,label\n1,2,0\n1,2\n1,two,1\n\"open,3,2\n1,,0\n4,5,1\n")
    csv("bad-row-error", 0, "a,b,label\n1,2,0\n1,2,3,4\n")
    csv("declared", DECLARED, "a,b,c,label\n1.5,x,0,0\n2,y,2,1\n-3,z,1,2\n")
    csv("declared-no-header", DECLARED | NO_HEADER, "1.5,x,0,0\n2,y,2,1\n")
    csv("declared-bad-category", DECLARED | SKIP, "a,b,c,label\n1,w,0,0\n1,x,-1,0\n1,y,0.5,1\n2,z,3,2\n")
    csv("numbers", 0, "a,b,label\n+4,5e1,0\n-0,1e400,1\nnan,inf,2\n0x10,1.,0\n.5,-.5e-3,1\n")
    csv("header-only", 0, "a,b,label\n")
    csv("duplicate-header", 0, "a,a,label\n1,2,0\n")
    csv("empty", 0, "")
    csv("blank-lines", NO_HEADER, "\n \n\t\n1\n")


def job_seeds():
    for rel in ["examples/digits/job.yaml", "examples/plugin_model/job.yaml",
                "examples/torchscript_model/job.yaml", "k8s/coordinator-job/job.yaml"]:
        write("job_spec", rel.replace("/", "-"), (ROOT / rel).read_bytes())
    write("job_spec", "minimal.yaml",
          "model: {ref: logreg}\ndatastructure: {target: label, num_classes: 2}\n"
          "pods: [{name: p, address: 'tcp://127.0.0.1:5555'}]\n")
    write("job_spec", "every-key.yaml", """\
job_id: every.key_1
model:
  model_ref: cnn
  username: alice
  model_version: 2
  hyperparameters: {channels: [8, 16], hidden: 32, lr: 1e-3, nested: {a: [true, "1", ~]}}
hub: http://127.0.0.1:8470/
hub_token: secret
key_file: ~/keys/modeller.key
datastructure:
  target: label
  features: [px_0_0, px_0_1, px_1_0, px_1_1]
  ignore: [px_7_7]
  input_shape: [1, 2, 2]
  num_classes: 10
  scale: 0.0625
  split: {validation: 0.1, test: 0.2, seed: 18446744073709551615}
pods:
  - pod-a
  - {name: pod-b, address: "tcp://10.0.0.7:5555", public_key_file: local/keys/pod-b.pub}
rounds: 3
local_steps: 20
batch_size: 16
min_pods: 1
round_timeout: 1.5m
connect_timeout: 500ms
eval_every: 0
max_concurrent_uploads: 1
strategy: fedavg
seed: 42
output_dir: out/every-key
metrics_listen: ":9102"
""")
    write("job_spec", "anchors-and-tags.yaml", """\
base: &ds {target: label, num_classes: 3}
model: {ref: !!str mlp, hyperparameters: !!map {hidden: !!seq [4]}}
datastructure: *ds
pods: [{name: "p\\u00e9", address: 'tcp://[::1]:5555'}]
rounds: 0x10
""")
    write("job_spec", "not-a-mapping.yaml", "- just\n- a list\n")


def pod_seeds():
    for rel in ["examples/digits/pod-a.yaml", "examples/digits/pod-b.yaml", "examples/digits/pod-c.yaml",
                "k8s/overlays/cpu/pods/pod-a.yaml", "k8s/overlays/gpu/pods/pod-a.yaml"]:
        write("pod_config", rel.replace("/", "-"), (ROOT / rel).read_bytes())
    write("pod_config", "hub-policy.yaml", """\
name: pod-h
listen: tcp://0.0.0.0:5555
dataset:
  path: data/pod-h.csv
  header: false
  delimiter: ";"
  on_bad_row: skip
  schema:
    - {name: a, type: numeric}
    - {name: b, type: categorical, categories: [x, y, z]}
    - {name: label}
devices: [cpu, cpu]
threads: 2
job_idle_timeout: 90s
max_frame_bytes: 1048576
custom_models: refuse
log_level: debug
key_file: local/keys/pod-a.key
policy:
  hub: http://hub:8470
  token_file: owner.token
  signing_key: "MPXM1w3FJqgqy81yL17f3fL92Gku9Mhw78OMtsSKNHg="
  refresh: 10s
  max_staleness: 1h
  cache: state/pod-h.policy.json
audit_log: /var/lib/fedpod/audit.log
metrics_listen: 127.0.0.1:9101
""")
    write("pod_config", "minimal-file-policy.yaml",
          "name: p\nlisten: tcp://*:5555\ndataset: {path: d.csv}\nkey_file: k.key\n"
          "policy: {file: policy.signed.json, signing_key: \"MPXM1w3FJqgqy81yL17f3fL92Gku9Mhw78OMtsSKNHg=\"}\n")
    write("pod_config", "bad-devices.yaml",
          "name: p\nlisten: tcp://*:5555\ndataset: {path: d.csv}\ndevices: [cpu, cuda:0, cuda:00]\n"
          "key_file: k.key\npolicy: {file: policy.signed.json, signing_key: \"MPXM1w3FJqgqy81yL17f3fL92Gku9Mhw78OMtsSKNHg=\"}\n")


if __name__ == "__main__":
    csv_seeds()
    job_seeds()
    pod_seeds()
