#!/usr/bin/python3
"""Converts scikit-learn's copy of the UCI optical digits data into fedpod's demo CSVs.

Source: Debian package python3-sklearn, file sklearn/datasets/data/digits.csv.gz
(1797 rows, 64 pixel values 0..16 of an 8x8 image, label 0..9 last, no header).
The package need not be installed: without --source the script runs
`apt-get download python3-sklearn` into a temporary folder and extracts the file.

Writes, into --out (default examples/digits):
  digits.csv         all 1797 rows with a header: px_r_c for row r, column c; label
  pod-a.csv ...      three label-skewed, disjoint shares of those rows (non-IID):
                     each label goes 80% to its "home" pod and 10% to each other pod.

Deterministic: the same source and --seed give byte-identical files.
Run with Debian's interpreter: /usr/bin/python3 scripts/prepare_digits.py
"""
import argparse
import csv
import glob
import gzip
import os
import random
import subprocess
import sys
import tempfile

PACKAGE_PATH = "usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"
# Home pod of each label: pod-a holds mostly 0-3, pod-b 4-6, pod-c 7-9.
HOME = {0: 0, 1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 1, 7: 2, 8: 2, 9: 2}
PODS = ["pod-a", "pod-b", "pod-c"]
HOME_SHARE = 0.8


def find_source(tmp):
    installed = "/" + PACKAGE_PATH
    if os.path.exists(installed):
        return installed
    subprocess.run(["apt-get", "download", "python3-sklearn"], cwd=tmp, check=True)
    deb = glob.glob(os.path.join(tmp, "python3-sklearn_*.deb"))[0]
    subprocess.run(["dpkg-deb", "-x", deb, os.path.join(tmp, "x")], check=True)
    return os.path.join(tmp, "x", PACKAGE_PATH)


def read_rows(path):
    rows = []
    with gzip.open(path, "rt") as f:
        for lineno, line in enumerate(f, 1):
            values = [int(float(v)) for v in line.strip().split(",")]
            if len(values) != 65:
                sys.exit(f"{path}:{lineno}: expected 65 values, got {len(values)}")
            if not all(0 <= v <= 16 for v in values[:64]) or not 0 <= values[64] <= 9:
                sys.exit(f"{path}:{lineno}: value out of range")
            rows.append(values)
    return rows


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", help="path to digits.csv.gz (default: find or download)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "examples", "digits"))
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        rows = read_rows(args.source or find_source(tmp))
    header = [f"px_{r}_{c}" for r in range(8) for c in range(8)] + ["label"]
    os.makedirs(args.out, exist_ok=True)
    write_csv(os.path.join(args.out, "digits.csv"), header, rows)

    rng = random.Random(args.seed)
    shares = [[] for _ in PODS]
    for label in range(10):
        of_label = [r for r in rows if r[64] == label]
        rng.shuffle(of_label)
        home = HOME[label]
        n_home = round(HOME_SHARE * len(of_label))
        rest = of_label[n_home:]
        others = [p for p in range(len(PODS)) if p != home]
        shares[home].extend(of_label[:n_home])
        for i, row in enumerate(rest):
            shares[others[i % len(others)]].append(row)
    for pod, share in zip(PODS, shares):
        rng.shuffle(share)
        write_csv(os.path.join(args.out, f"{pod}.csv"), header, share)
        counts = [sum(1 for r in share if r[64] == l) for l in range(10)]
        print(f"{pod}: {len(share)} rows, per label {counts}")


if __name__ == "__main__":
    main()
