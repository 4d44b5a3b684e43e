#!/usr/bin/env bash
# Runs Caracal's whole test suite on this machine: lint, Rust unit and integration tests
# against a real ClickHouse, the SQL compatibility check on current ClickHouse (chDB),
# the end-to-end suite with the Python OpenTelemetry SDK, and the browser test of the UI.
# It installs what is missing (ClickHouse, Chromium, a Python venv, the UI's packages).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

step() { printf '\n==> %s\n' "$*"; }

step "ClickHouse"
bash deploy/clickhouse.sh start

step "Python environment"
python_bin="$(bash scripts/python-env.sh | tail -n 1)"

step "Chromium for the browser test"
if ! command -v chromium >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || { echo "cannot install chromium" >&2; exit 1; }
fi

step "Web UI"
bash scripts/build-ui.sh

step "Format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Rust tests (unit, integration against ClickHouse, binary smoke test)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --doc --locked
else
  cargo test --workspace --locked
fi

step "End-to-end and SQL compatibility tests (Python OpenTelemetry SDK, chDB)"
CARACAL_BIN="$root/target/debug/caracal" "$python_bin" -m pytest tests -q

step "Browser test of the UI (Chromium via playwright-core)"
CARACAL_BIN="$root/target/debug/caracal" node --test ui/tests/

echo
echo "all test suites passed"
