#!/usr/bin/env bash
# Sets everything up on this machine and runs Caracal with live demo traffic:
# installs and starts ClickHouse, builds the UI and the release binary, starts
# `caracal up` (collector + query + UI) and `caracal demo` (a small instrumented system
# sending traces), then prints where the UI is. Ctrl-C stops both.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mkdir -p .caracal
http_addr="${CARACAL_HTTP_ADDR:-127.0.0.1:8080}"

echo "==> ClickHouse"
bash deploy/clickhouse.sh start
echo "==> Web UI"
bash scripts/build-ui.sh
echo "==> Build (release)"
cargo build --release --locked
binary="$root/target/release/caracal"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

echo "==> caracal up (log: .caracal/caracal.log)"
CARACAL_UI_DIR="$root/ui/dist" "$binary" up >.caracal/caracal.log 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do
  if curl -fsS "http://$http_addr/healthz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "${pids[0]}" 2>/dev/null; then
    echo "caracal up exited; its log:" >&2; tail -n 50 .caracal/caracal.log >&2; exit 1
  fi
  sleep 0.5
done
curl -fsS "http://$http_addr/healthz" >/dev/null || { echo "caracal did not become healthy" >&2; exit 1; }

echo "==> caracal demo (log: .caracal/demo.log)"
"$binary" demo >.caracal/demo.log 2>&1 &
pids+=($!)

echo
echo "Caracal is up. UI and API: http://$http_addr/"
echo "OTLP gRPC: ${CARACAL_OTLP_GRPC_ADDR:-127.0.0.1:4317}   OTLP HTTP: http://${CARACAL_OTLP_HTTP_ADDR:-127.0.0.1:4318}/v1/traces"
echo "Press Ctrl-C to stop."
wait "${pids[0]}"
