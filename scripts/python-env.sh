#!/usr/bin/env bash
# Create (if missing) and update the Python venv used by the end-to-end tests.
#
#   scripts/python-env.sh        # prints the venv's python path
#
# The venv lives in <checkout>/.caracal/venv (git-ignored). Packages come from
# tests/e2e/requirements.txt, plus chdb-core installed with --no-deps (it is an
# in-process ClickHouse and needs none of its optional dependencies). pip only runs
# when the requirements changed: a stamp file records the hash last installed.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd -P)"
VENV="$REPO_ROOT/.caracal/venv"
REQUIREMENTS="$REPO_ROOT/tests/e2e/requirements.txt"
NO_DEPS_PACKAGES=("chdb-core>=26.9.0")
STAMP="$VENV/.requirements.sha256"

PYTHON="${PYTHON:-python3}"

want_hash() {
    { cat "$REQUIREMENTS"; printf '%s\n' "${NO_DEPS_PACKAGES[@]}"; } | sha256sum | cut -d' ' -f1
}

if [[ ! -x "$VENV/bin/python" ]]; then
    mkdir -p "$(dirname -- "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi

hash="$(want_hash)"
if [[ "$(cat "$STAMP" 2>/dev/null)" != "$hash" ]]; then
    pip=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check)
    "${pip[@]}" install --upgrade pip
    "${pip[@]}" install -r "$REQUIREMENTS"
    "${pip[@]}" install --no-deps "${NO_DEPS_PACKAGES[@]}"
    printf '%s\n' "$hash" >"$STAMP"
fi

printf '%s\n' "$VENV/bin/python"
