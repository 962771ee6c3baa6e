#!/usr/bin/env bash
# Creates the identities the digits example needs to run by hand on this machine,
# under examples/digits/local/ (ignored by git):
#   keys/modeller.key|.pub       the modeller's CURVE key pair (job.yaml key_file)
#   keys/pod-X.key|.pub          each pod's key pair (pod-X.yaml key_file; job.yaml
#                                public_key_file)
#   keys/owner.sign.key|.pub     the pods' owner's Ed25519 signing key pair: the pods
#                                pin owner.sign.pub (policy.signing_key_file)
#   pod-X.policy.yaml            each pod's air-gapped policy: the modeller, as user
#                                "modeller", holds the general-modeller role, which
#                                runs the built-in models (docs/permissions.md)
#   pod-X.policy.signed.json     the same, signed by the owner: what the pod reads
#                                (a pod accepts only a policy signed by the key it pins)
# Existing keys are kept, so pods and jobs keep working across runs.
#
# Usage: examples/digits/setup-local.sh [path/to/fedpod]   (default build/cli/fedpod)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
fedpod="${1:-$here/../../build/cli/fedpod}"
[ -x "$fedpod" ] || { echo "setup-local: $fedpod not found; build first (scripts/build)" >&2; exit 2; }
mkdir -p "$here/local/keys" "$here/local/state"
for who in modeller pod-a pod-b pod-c; do
  [ -f "$here/local/keys/$who.key" ] || "$fedpod" keys generate --out "$here/local/keys/$who" > /dev/null
done
[ -f "$here/local/keys/owner.sign.key" ] || "$fedpod" keys generate-signing --out "$here/local/keys/owner" > /dev/null
modeller_key="$("$fedpod" keys show "$here/local/keys/modeller.pub")"
for pod in pod-a pod-b pod-c; do
  cat > "$here/local/$pod.policy.yaml" <<POLICY
# Who may run what on $pod (written by setup-local.sh). A pod connected to a hub
# gets this from the hub instead (policy: {hub: ...} in its pod.yaml).
pod: $pod
users:
  - {username: modeller, public_key: "$modeller_key"}
roles:
  - {username: modeller, role: general-modeller}
grants: []
POLICY
  "$fedpod" policy sign --key "$here/local/keys/owner.sign.key" --expires 365d \
    "$here/local/$pod.policy.yaml" -o "$here/local/$pod.policy.signed.json" > /dev/null
done
echo "setup-local: identities and policies in $here/local/"
