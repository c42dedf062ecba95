#!/usr/bin/env bash
# Runs the cluster end-to-end suite (e2e/cluster): `coffer controller` on this machine against a
# real Kubernetes API server.
#
#   e2e/run-cluster.sh                                # builds target/debug/coffer (and kubectl-coffer) first
#   COFFER_BIN=/path/to/coffer e2e/run-cluster.sh     # use an existing binary
#
# Which API server:
# 1. The cluster the KUBECONFIG variable names, when it answers (a kind cluster, say). Only the
#    variable counts: ~/.kube/config alone is never used, so that the suite cannot wander into
#    a cluster nobody chose.
# 2. Otherwise the repo's own control plane (e2e/controlplane): etcd, kube-apiserver and
#    kube-controller-manager on loopback, from COFFER_K8S_ASSETS, the build cache, or built with
#    `go` (minutes, once). It is started for this run and stopped after it.
# 3. Otherwise every test is reported as skipped, with the reason, under a banner; with
#    COFFER_E2E_REQUIRE_CLUSTER=1 (as in CI) that is a failure instead.
#
# Python packages come from e2e/python.sh's virtualenv. Extra arguments go to pytest (for
# example `-k rotate` or `-x`). Exits with pytest's status.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
python="$repo_root/e2e/python.sh"
controlplane="$repo_root/e2e/controlplane/controlplane.py"
state_dir="$repo_root/build/controlplane"

skip_reason=""
mode=""
if [[ -n "${KUBECONFIG:-}" ]]; then
    if ! command -v kubectl >/dev/null 2>&1; then
        skip_reason="KUBECONFIG is set but kubectl is not installed"
    elif ! version_err="$(kubectl version --request-timeout=5s -o json 2>&1 >/dev/null)"; then
        skip_reason="the cluster KUBECONFIG=$KUBECONFIG names does not answer: $(printf '%s\n' "$version_err" | grep -v '^[[:space:]]*$' | tail -n 1)"
    else
        mode=kubeconfig
    fi
elif python3 "$controlplane" assets >/dev/null; then
    # Its progress (a first build takes minutes) and any error go to stderr as they happen.
    mode=controlplane
else
    skip_reason="KUBECONFIG unset, and no control plane could be found or built (see the lines above)"
fi

if [[ -n "$skip_reason" ]]; then
    banner="=== e2e/cluster SKIPPED: no Kubernetes cluster reachable ($skip_reason) ==="
    echo "$banner" >&2
    if [[ "${COFFER_E2E_REQUIRE_CLUSTER:-}" == "1" ]]; then
        echo "e2e/cluster: COFFER_E2E_REQUIRE_CLUSTER=1, so a skipped cluster suite is a failure" >&2
        exit 1
    fi
fi
# The conftest takes this verdict instead of checking again (empty: a cluster is reachable).
export COFFER_E2E_CLUSTER_SKIP="$skip_reason"

if [[ -z "$skip_reason" && -z "${COFFER_BIN:-}" ]]; then
    cargo build --bins
    COFFER_BIN="$repo_root/target/debug/coffer"
fi
if [[ -n "${COFFER_BIN:-}" ]]; then
    export COFFER_BIN
fi

pytest=("$python" -m pytest e2e/cluster -q -ra "$@")
if [[ "${COFFER_E2E_REQUIRE_CLUSTER:-}" == "1" ]]; then
    # Every test must run: a skip anywhere is a failure.
    pytest+=(-p e2e_strict)
    export PYTHONPATH="$repo_root/e2e${PYTHONPATH:+:$PYTHONPATH}"
fi

status=0
case "$mode" in
    controlplane)
        mkdir -p "$state_dir"
        python3 "$controlplane" run "$state_dir" -- "${pytest[@]}" || status=$?
        ;;
    *)
        "${pytest[@]}" || status=$?
        ;;
esac
exit "$status"
