#!/usr/bin/env bash
# Runs csi-sanity (github.com/kubernetes-csi/csi-test) against a real `coffer csi`.
#
#   e2e/csi-sanity.sh                                # builds target/debug/coffer first
#   COFFER_BIN=/path/to/coffer e2e/csi-sanity.sh     # use an existing binary
#
# csi-sanity is built with `go install` once per version into
# ${COFFER_CACHE_DIR:-~/.cache/coffer}/tools/csi-sanity-VERSION/ and reused from then on.
#
# Coffer's plugin is a node plugin for ephemeral inline volumes only: it has no controller
# service, so CreateVolume does not exist. The specs that need one are skipped by name:
# - every "[Controller Server]" and "[GroupController ...]" spec (controller RPCs);
# - "Node Service NodeUnpublishVolume should remove target path", which makes its volume with
#   CreateVolume before publishing it.
# Every other Identity and Node spec runs: plugin info and capabilities, Probe,
# NodeGetCapabilities, NodeGetInfo, and NodePublishVolume/NodeUnpublishVolume's argument
# checks. Publishing itself needs a pod's ServiceAccount token and Coffer objects, which
# csi-sanity cannot give; tests/csi_node.rs covers it (mounts, layout, idempotence,
# unpublish, rollback, refresh, recovery). Extra arguments go to csi-sanity.
set -euo pipefail

CSI_SANITY_VERSION=v5.6.0

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

cache="${COFFER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/coffer}"
tool_dir="$cache/tools/csi-sanity-$CSI_SANITY_VERSION"
csi_sanity="$tool_dir/bin/csi-sanity"
if [[ ! -x "$csi_sanity" ]]; then
    if ! command -v go >/dev/null 2>&1; then
        echo "e2e/csi-sanity.sh: building csi-sanity needs Go on PATH" >&2
        exit 1
    fi
    echo "== building csi-sanity $CSI_SANITY_VERSION into $tool_dir (once)" >&2
    mkdir -p "$tool_dir"
    staging="$(mktemp -d "$tool_dir/.build.XXXXXX")"
    GOFLAGS=-mod=mod GOBIN="$staging" \
        go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_SANITY_VERSION"
    mkdir -p "$tool_dir/bin"
    mv -f "$staging/csi-sanity" "$csi_sanity"
    rmdir "$staging"
fi

if [[ -z "${COFFER_BIN:-}" ]]; then
    cargo build --bin coffer
    COFFER_BIN="$repo_root/target/debug/coffer"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/coffer-csi-sanity.XXXXXX")"
plugin_pid=""
cleanup() {
    if [[ -n "$plugin_pid" ]]; then
        kill "$plugin_pid" 2>/dev/null || true
        wait "$plugin_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

socket="$work/csi.sock"
# No cluster here: a kubeconfig that does not exist keeps the plugin's change feed from
# reaching any cluster (it retries in the background; publishing does not depend on it).
KUBECONFIG="$work/no-kubeconfig" NODE_NAME=csi-sanity-node \
    "$COFFER_BIN" csi --endpoint "unix://$socket" --state-dir "$work/state" \
    >"$work/plugin.log" 2>&1 &
plugin_pid=$!

for _ in $(seq 1 100); do
    [[ -S "$socket" ]] && break
    if ! kill -0 "$plugin_pid" 2>/dev/null; then
        echo "e2e/csi-sanity.sh: coffer csi exited; its log:" >&2
        cat "$work/plugin.log" >&2
        exit 1
    fi
    sleep 0.1
done
if [[ ! -S "$socket" ]]; then
    echo "e2e/csi-sanity.sh: coffer csi did not listen on $socket; its log:" >&2
    cat "$work/plugin.log" >&2
    exit 1
fi

colour=()
[[ -t 1 ]] || colour=(--ginkgo.no-color)
status=0
"$csi_sanity" "${colour[@]}" \
    --csi.endpoint "$socket" \
    --csi.mountdir "$work/mount" \
    --csi.stagingdir "$work/staging" \
    --ginkgo.skip '\[Controller Server\]|\[GroupController|should remove target path' \
    "$@" || status=$?
if [[ "$status" != 0 ]]; then
    echo "e2e/csi-sanity.sh: csi-sanity failed; the plugin's log:" >&2
    cat "$work/plugin.log" >&2
fi
exit "$status"
