#!/usr/bin/env bash
# The floor of a FetchJWTSVID call on this machine (issue 10): the same
# tonic client (svidload workload-jwt) against `svidload noop-server`, a
# Workload API that answers a fixed 600-byte token with no attestation,
# no cache and no logging, once as plain tonic on a Unix socket and once
# behind the agent's HTTP/2 front (`--front`). Prints svidload's JSON line
# (with client_cpu_us_per_call) followed by the server's (calls,
# server_cpu_us_per_call), for each server and concurrency. Compare with
# bench/agent/workload.sh; see docs/BENCHMARKS.md ("Workload API at fleet
# speed (issue 10)").
#
#   bench/agent/floor.sh                          # 5 s per run at c = 1 10 100
#   bench/agent/floor.sh --concurrency "100" --duration 10
#
# Options: --duration SECS, --concurrency "1 10 100", --no-build.
# A Unix socket only; every server is stopped by PID.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DURATION=5
CONCURRENCY="1 10 100"
BUILD_FIRST=1
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift ;;
        --concurrency) CONCURRENCY="$2"; shift ;;
        --no-build) BUILD_FIRST=0 ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "floor.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
die() { echo "[floor-bench] ERROR: $*" >&2; exit 1; }
case "$DURATION" in ''|*[!0-9]*) die "--duration takes whole seconds" ;; esac
if [ "$BUILD_FIRST" = 1 ]; then
    (cd "$ROOT" && timeout 5400 cargo build --release --quiet -p svidload) || die "cargo build failed"
fi
DRIVER="${CARGO_TARGET_DIR:-$ROOT/target}/release/svidload"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/lanyard-floor-bench.XXXXXX")"
PID=""
cleanup() {
    trap - EXIT INT TERM
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for front in "" "--front"; do
    for c in $CONCURRENCY; do
        rm -f "$TMP/noop.sock"
        "$DRIVER" noop-server --socket "$TMP/noop.sock" $front --max-seconds $((DURATION + 60)) > "$TMP/server.json" &
        PID=$!
        for _ in $(seq 1 100); do [ -S "$TMP/noop.sock" ] && break; sleep 0.05; done
        [ -S "$TMP/noop.sock" ] || die "noop-server did not start"
        timeout $((DURATION + 60)) "$DRIVER" workload-jwt --socket "$TMP/noop.sock" --audience bench \
            --concurrency "$c" --duration "$DURATION" --warmup 1 || die "svidload c=$c failed"
        kill -TERM "$PID"; wait "$PID" || true; PID=""
        cat "$TMP/server.json"
    done
done
