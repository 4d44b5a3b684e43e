#!/usr/bin/env bash
# Build the web UI into ui/dist (served by the query service).
#
#   scripts/build-ui.sh [--force]
#
# Installs ui/'s npm packages (npm ci from package-lock.json) and runs the Vite build.
# Does nothing when ui/dist/index.html is newer than every file in ui/src, ui/index.html,
# ui/package.json and ui/package-lock.json, unless --force is given.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd -P)"
UI_DIR="$REPO_ROOT/ui"
OUTPUT="$UI_DIR/dist/index.html"

log() { printf 'build-ui.sh: %s\n' "$*"; }

force=0
case "${1:-}" in
  --force) force=1 ;;
  '') ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

# Up to date when the output exists and no input is newer than it.
if [[ $force -eq 0 && -f "$OUTPUT" ]]; then
  inputs=("$UI_DIR/src" "$UI_DIR/index.html" "$UI_DIR/package.json" "$UI_DIR/package-lock.json"
          "$UI_DIR/vite.config.ts" "$UI_DIR/tsconfig.json")
  existing=()
  for input in "${inputs[@]}"; do
    [[ -e "$input" ]] && existing+=("$input")
  done
  newer="$(find "${existing[@]}" -newer "$OUTPUT" -print -quit)"
  if [[ -z "$newer" ]]; then
    log "ui/dist is up to date"
    exit 0
  fi
  log "rebuilding: $newer changed"
fi

command -v npm >/dev/null || { log "npm not found; install Node.js 20+"; exit 1; }
cd "$UI_DIR"
if [[ -f package-lock.json ]]; then
  npm ci --no-audit --no-fund
else
  npm install --no-audit --no-fund
fi
npm run build
log "built ui/dist"
