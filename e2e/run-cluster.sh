#!/usr/bin/env bash
# Runs the cluster end-to-end suite (e2e/cluster): `coffer controller` on this machine against the
# Kubernetes cluster of the current kubeconfig.
#
#   COFFER_BIN=/path/to/coffer e2e/run-cluster.sh     # use an existing binary
#   e2e/run-cluster.sh                                # builds target/debug/coffer first
#
# Without a reachable cluster (KUBECONFIG unset or naming no existing file and no ~/.kube/config,
# kubectl not installed, or `kubectl version` getting no answer from the server) it prints a
# banner on stderr, builds nothing, lets pytest report every test as skipped with the reason,
# and exits 0. Installs nothing: `pip install -r e2e/requirements.txt` beforehand. Extra
# arguments are passed to pytest (for example `-k rotate` or `-x`). Exits with pytest's status.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

skip_reason=""
if ! command -v kubectl >/dev/null 2>&1; then
    skip_reason="kubectl not installed"
elif [[ -n "${KUBECONFIG:-}" ]]; then
    found=""
    IFS=: read -r -a kubeconfig_files <<<"$KUBECONFIG"
    for file in "${kubeconfig_files[@]}"; do
        if [[ -n "$file" && -f "$file" ]]; then
            found=yes
        fi
    done
    if [[ -z "$found" ]]; then
        skip_reason="KUBECONFIG=$KUBECONFIG names no existing file"
    fi
elif [[ ! -f "$HOME/.kube/config" ]]; then
    skip_reason="KUBECONFIG unset and no ~/.kube/config"
fi
if [[ -z "$skip_reason" ]]; then
    if ! version_err="$(kubectl version --request-timeout=5s -o json 2>&1 >/dev/null)"; then
        skip_reason="kubectl version failed: $(printf '%s\n' "$version_err" | grep -v '^[[:space:]]*$' | tail -n 1)"
    fi
fi

# The conftest takes this verdict instead of checking again (empty: a cluster is reachable).
export COFFER_E2E_CLUSTER_SKIP="$skip_reason"

if [[ -n "$skip_reason" ]]; then
    echo "=== e2e/cluster SKIPPED: no Kubernetes cluster reachable ($skip_reason) ===" >&2
elif [[ -z "${COFFER_BIN:-}" ]]; then
    cargo build --bin coffer
    COFFER_BIN="$repo_root/target/debug/coffer"
fi
if [[ -n "${COFFER_BIN:-}" ]]; then
    export COFFER_BIN
fi

status=0
python3 -m pytest e2e/cluster -q -ra "$@" || status=$?
exit "$status"
