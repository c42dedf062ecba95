#!/usr/bin/env bash
# Runs Python from the end-to-end suites' own virtualenv, creating it first when needed.
#
#   e2e/python.sh -m pytest e2e/kms        # any python3 arguments
#   e2e/python.sh --venv                   # prints the virtualenv's folder
#
# The virtualenv holds e2e/requirements.txt (the AWS CLI, boto3, pytest, ...). It lives outside
# the work tree, under $COFFER_CACHE_DIR (default ${XDG_CACHE_HOME:-~/.cache}/coffer), in a
# folder named after a hash of the requirements and the Python version, so a fresh clone reuses
# it and a change of either makes a new one. Nothing is installed into the system's Python.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requirements="$repo_root/e2e/requirements.txt"
python="${COFFER_PYTHON:-python3}"
cache="${COFFER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/coffer}"

key="$({ "$python" -c 'import sys; print(sys.version)'; cat "$requirements"; } | sha256sum | cut -c1-16)"
venv="$cache/venv-$key"

if [[ ! -f "$venv/.complete" ]]; then
    mkdir -p "$cache"
    # One maker at a time; a half-made virtualenv (no stamp) is made again from scratch.
    exec 9>"$cache/venv.lock"
    flock 9
    if [[ ! -f "$venv/.complete" ]]; then
        echo "e2e: creating the Python virtualenv $venv" >&2
        rm -rf "$venv"
        "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements" >&2
        touch "$venv/.complete"
    fi
    exec 9>&-
fi

if [[ "${1:-}" == "--venv" ]]; then
    echo "$venv"
    exit 0
fi
export PATH="$venv/bin:$PATH"
exec "$venv/bin/python" "$@"
