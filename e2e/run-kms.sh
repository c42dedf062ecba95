#!/usr/bin/env bash
# Runs the KMS end-to-end suite (e2e/kms) against a real `coffer server`.
#
#   COFFER_BIN=/path/to/coffer e2e/run-kms.sh     # use an existing binary
#   e2e/run-kms.sh                                # builds target/debug/coffer first
#
# Installs nothing: `pip install -r e2e/requirements.txt` beforehand. Extra arguments are passed
# to pytest (for example `-k rotation` or `-x`). Exits with pytest's status.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

if [[ -z "${COFFER_BIN:-}" ]]; then
    cargo build --bin coffer
    COFFER_BIN="$repo_root/target/debug/coffer"
fi
export COFFER_BIN

status=0
python3 -m pytest e2e/kms -q -ra "$@" || status=$?
exit "$status"
