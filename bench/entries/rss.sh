#!/usr/bin/env bash
# Resident memory of `lanyard dev` with N registration entries loaded
# (issue 3: 100,000 entries under 256 MiB). Loopback only; every process
# started here is stopped by PID.
#
#   bench/entries/rss.sh [COUNT]     # default 100000
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
COUNT="${1:-100000}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/lanyard-rss.XXXXXX")"
PID=""
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
log() { echo "[rss] $*" >&2; }

(cd "$ROOT" && cargo build --release --quiet -p lanyard-cli && cargo build --release --quiet -p lanyard-server --example load_entries)
LANYARD="${CARGO_TARGET_DIR:-$ROOT/target}/release/lanyard"
LOADER="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/load_entries"

start() {
    rm -f "$TMP/dev.json"
    LANYARD_LOG=warn "$LANYARD" --data-dir "$TMP" dev --listen 127.0.0.1:0 >/dev/null 2>"$TMP/dev.log" &
    PID=$!
    for _ in $(seq 1 600); do
        [ -f "$TMP/dev.json" ] && grep -q "\"pid\": $PID" "$TMP/dev.json" && return 0
        kill -0 "$PID" 2>/dev/null || { cat "$TMP/dev.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "lanyard dev did not start" >&2; exit 1
}
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
stop() { kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }

start; BASE=$(rss_mib "$PID"); stop
log "empty server: $BASE MiB; loading $COUNT entries"
"$LOADER" "sqlite://$TMP/lanyard.db" "$COUNT" dev
start
ISSUER=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['issuer'])" "$TMP/dev.json")
# Touch the index through the API once so everything is faulted in.
"$LANYARD" --data-dir "$TMP" --output json entry show bulk000042 >/dev/null
LOADED=$(rss_mib "$PID")
stop
echo "lanyard dev RSS: $BASE MiB empty, $LOADED MiB with $COUNT entries ($ISSUER)"
