#!/usr/bin/env bash
# Runs the KMS end-to-end suite (e2e/kms) against a real `coffer server`.
#
#   COFFER_BIN=/path/to/coffer e2e/run-kms.sh     # use an existing binary
#   e2e/run-kms.sh                                # builds target/debug/coffer first
#
# Python packages (the AWS CLI, boto3, pytest) come from e2e/python.sh's virtualenv, made on
# first use. Extra arguments are passed to pytest (for example `-k rotation` or `-x`). Exits with
# pytest's status.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

if [[ -z "${COFFER_BIN:-}" ]]; then
    cargo build --bin coffer
    COFFER_BIN="$repo_root/target/debug/coffer"
fi
export COFFER_BIN

status=0
pytest=("$repo_root/e2e/python.sh" -m pytest e2e/kms -q -ra "$@")
if [[ "${COFFER_E2E_REQUIRE_CLUSTER:-}" == "1" ]]; then
    pytest+=(-p e2e_strict)
    export PYTHONPATH="$repo_root/e2e${PYTHONPATH:+:$PYTHONPATH}"
fi
"${pytest[@]}" || status=$?
exit "$status"
