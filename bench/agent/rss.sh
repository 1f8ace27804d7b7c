#!/usr/bin/env bash
# Memory per cached identity in the node agent (issues 4 and 10): starts
# `lanyard dev` (server + built-in agent, one process) to read its settled
# VmRSS, stops it, writes COUNT entries `unix:uid:N` for the dev node
# straight into its store (`svidload store-entries`: creating them one by one
# through the admin API slows to ~8/s as the store grows), starts it again,
# waits until the agent has signed an X.509-SVID for every one, and reports
# VmRSS before and after and the bytes per cached identity. Loopback only;
# stopped by PID on exit.
#
#   bench/agent/rss.sh [COUNT]     # default 10000
#
# The figure is the whole process (server and agent share it under `lanyard
# dev`), so it is an upper bound for the agent: the server's entry index
# grows by COUNT entries too (bench/entries/rss.sh measures that part alone).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
COUNT="${1:-10000}"
case "$COUNT" in ''|*[!0-9]*) echo "rss.sh: COUNT must be a whole number" >&2; exit 2 ;; esac
TMP="$(mktemp -d "${TMPDIR:-/tmp}/lanyard-agent-rss.XXXXXX")"
PID=""
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
log() { echo "[agent-rss] $*" >&2; }

if [ "${NO_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release --quiet -p lanyard-cli -p svidload)
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
LANYARD="$TARGET_DIR/release/lanyard"
DRIVER="$TARGET_DIR/release/svidload"

start() {
    rm -f "$TMP/dev.json"
    # info level: the agent logs "workload SVIDs signed" with total N after each sync that signed.
    LANYARD_LOG=info "$LANYARD" --data-dir "$TMP" --log-format json dev --listen 127.0.0.1:0 >/dev/null 2>"$TMP/dev.log" &
    PID=$!
    for _ in $(seq 1 300); do
        [ -s "$TMP/dev.json" ] && grep -q "\"pid\": $PID" "$TMP/dev.json" && return 0
        kill -0 "$PID" 2>/dev/null || { cat "$TMP/dev.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "lanyard dev did not start" >&2; exit 1
}
stop() { kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
start
sleep 2  # a few idle syncs, so the baseline is the settled process
BASE=$(rss_kib "$PID")
stop
log "idle: $BASE KiB; writing $COUNT entries into the store"
"$DRIVER" store-entries --store "sqlite://$TMP/lanyard.db" --count "$COUNT" --first-uid 100000 >&2
start
t0=$(date +%s)
total=0
while [ "$total" -lt "$COUNT" ]; do
    total=$(grep -o '"total":[0-9]*' "$TMP/dev.log" | cut -d: -f2 | sort -n | tail -1)
    total=${total:-0}
    [ $(( $(date +%s) - t0 )) -lt 600 ] || { log "only $total of $COUNT identities after 600 s"; exit 1; }
    kill -0 "$PID" 2>/dev/null || { tail -20 "$TMP/dev.log" >&2; exit 1; }
    sleep 0.5
done
sleep 3  # settle: the last batch's buffers freed, a few idle syncs
AFTER=$(rss_kib "$PID")
python3 - "$BASE" "$AFTER" "$COUNT" "$total" <<'EOF'
import json, sys
base, after, count, total = map(int, sys.argv[1:])
print(json.dumps({"entries": count, "cached_identities": total, "rss_before_mib": round(base / 1024, 1),
                  "rss_after_mib": round(after / 1024, 1),
                  "bytes_per_identity": round((after - base) * 1024 / count)}))
EOF
