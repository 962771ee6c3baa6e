#!/usr/bin/env bash
# FedAvg, FedProx, FedAdam and FedYogi on the same label-shards partition of MNIST
# (docs/simulation.md, "Strategies on one partition"). Each run is
# fedavg-2nn-shards.yaml with `rounds` and `strategy` changed; results go to
# out/compare/<strategy>/, and a table of test accuracy is printed at the end.
#
#   scripts/fetch-mnist && examples/mnist/compare-strategies.sh [ROUNDS]   # default 300
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
fedpod="${FEDPOD:-$root/build/cli/fedpod}"
rounds="${1:-300}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
declare -A strategies=(
  [fedavg]="fedavg"
  [fedprox]="{name: fedprox, mu: 0.01}"
  [fedadam]="{name: fedadam, server_lr: 0.01}"
  [fedyogi]="{name: fedyogi, server_lr: 0.01}"
)
for name in fedavg fedprox fedadam fedyogi; do
  sed -e "s#^job_id: .*#job_id: compare-$name#" \
      -e "s#^rounds: .*#rounds: $rounds\nstrategy: ${strategies[$name]}#" \
      -e "s#\.\./\.\./datasets#$root/datasets#g" \
      "$here/fedavg-2nn-shards.yaml" > "$work/$name.yaml"
  echo "== $name: ${strategies[$name]}"
  "$fedpod" simulate "$work/$name.yaml" -o "out/compare/$name" -q
done
python3 - "$rounds" <<'PY'
import json, sys
rounds = int(sys.argv[1])
print(f"{'strategy':10} {'best':>8} {'final':>8} {'>=95% at':>9} {'>=97% at':>9}")
for name in ("fedavg", "fedprox", "fedadam", "fedyogi"):
    h = json.load(open(f"out/compare/{name}/history.json"))
    acc = {r["round"]: r["eval"]["accuracy"] for r in h["rounds"] if r.get("eval")}
    first = lambda t: next((str(k) for k in sorted(acc) if acc[k] >= t), "-")
    print(f"{name:10} {max(acc.values()):8.4f} {h['test']['accuracy']:8.4f} {first(0.95):>9} {first(0.97):>9}")
PY
