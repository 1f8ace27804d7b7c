#!/usr/bin/env bash
# Workload API load (issues 4 and 10): FetchJWTSVID from the agent's cache
# at N concurrent clients on the Unix socket of `lanyard dev` (server +
# built-in agent in one process), with an entry for this script's uid;
# then FetchX509SVID stream setup (open, first response, close) at 10
# clients; then a restart of `lanyard dev` and the time until its agent
# serves an SVID again (node resync). Targets (issue 10): p99 < 1 ms at 10
# clients, >= 30,000 calls/s at 100. See docs/BENCHMARKS.md ("Workload API
# at fleet speed (issue 10)").
#
#   bench/agent/workload.sh                        # 10 s per run at c = 1 10 100
#   bench/agent/workload.sh --concurrency "100" --duration 5
#
# Options: --duration SECS, --concurrency "1 10 100", --keep, --no-build,
# --results FILE (also append each JSON line to FILE). Each FetchJWTSVID run
# reports the agent's CPU per call and the share of the machine's CPU other
# processes took (not lanyard dev, not svidload). Binaries come from
# $CARGO_TARGET_DIR when set, else target/.
# Loopback and a Unix socket only; `lanyard dev` is stopped by PID on exit.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DURATION=10
CONCURRENCY="1 10 100"
KEEP=0
BUILD_FIRST=1
RESULTS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift ;;
        --concurrency) CONCURRENCY="$2"; shift ;;
        --keep) KEEP=1 ;;
        --no-build) BUILD_FIRST=0 ;;
        --results) RESULTS="$2"; shift ;;
        -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "workload.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
log() { echo "[workload-bench] $*" >&2; }
die() { echo "[workload-bench] ERROR: $*" >&2; exit 1; }
case "$DURATION" in ''|*[!0-9]*) die "--duration takes whole seconds" ;; esac

TMP="$(mktemp -d "${TMPDIR:-/tmp}/lanyard-workload-bench.XXXXXX")"
PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID"
        for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$PID" 2>/dev/null && kill -KILL "$PID" 2>/dev/null
        wait "$PID" 2>/dev/null || true
    fi
    if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then log "logs kept in $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$BUILD_FIRST" = 1 ]; then
    (cd "$ROOT" && timeout 5400 cargo build --release --quiet -p lanyard-cli -p svidload) || die "cargo build failed"
fi
case "${CARGO_TARGET_DIR:-}" in
    "") TARGET_DIR="$ROOT/target" ;; /*) TARGET_DIR="$CARGO_TARGET_DIR" ;; *) TARGET_DIR="$ROOT/$CARGO_TARGET_DIR" ;;
esac
LANYARD="$TARGET_DIR/release/lanyard"
DRIVER="$TARGET_DIR/release/svidload"

start_dev() {
    LANYARD_LOG=warn "$LANYARD" --data-dir "$TMP" dev --listen 127.0.0.1:0 > "$TMP/dev.out" 2> "$TMP/dev.log" &
    PID=$!
    for _ in $(seq 1 300); do
        [ -s "$TMP/dev.json" ] && grep -q "\"pid\": $PID" "$TMP/dev.json" && return 0
        kill -0 "$PID" 2>/dev/null || die "lanyard dev exited: $(tail -5 "$TMP/dev.log")"
        sleep 0.1
    done
    die "lanyard dev did not start"
}
start_dev
SOCKET="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["workload_socket"])' "$TMP/dev.json")"
"$LANYARD" --data-dir "$TMP" --output json entry create --spiffe-id spiffe://example.org/bench/workload \
    --tenant dev --selector "unix:uid:$(id -u)" > /dev/null || die "entry create failed"
# The agent syncs every second: wait until this process is served.
for i in $(seq 1 100); do
    "$LANYARD" --output json svid fetch --socket "$SOCKET" --jwt --audience bench > /dev/null 2>&1 && break
    [ "$i" = 100 ] && die "the agent never served a JWT-SVID for uid $(id -u)"
    sleep 0.2
done
log "lanyard dev pid $PID, socket $SOCKET: JWT-SVID served for uid $(id -u)"

# CPU ticks around each run: the machine's, lanyard dev's, and this script's
# waited-for children (svidload); "other" is the rest of the machine.
# shellcheck source=bench/lib/proc.sh
. "$ROOT/bench/lib/proc.sh"
cpu_ticks() { echo "$(proc_machine_ticks) $(proc_tree_ticks "$PID") $(proc_self_children_ticks)"; }
emit() { echo "$1"; [ -z "$RESULTS" ] || echo "$1" >> "$RESULTS"; }
measure() { # measure MODE CONCURRENCY [ARGS...]: one svidload run, JSON line on stdout (and in --results)
    local mode="$1" c="$2" out before after t0 t1
    shift 2
    before="$(cpu_ticks)"; t0="$(date +%s%N)"
    out="$(timeout $((DURATION + 60)) "$DRIVER" "$mode" --socket "$SOCKET" "$@" \
        --concurrency "$c" --duration "$DURATION" --warmup 1)" || die "svidload $mode c=$c failed: ${out:-no output}"
    t1="$(date +%s%N)"; after="$(cpu_ticks)"
    out="$(python3 - "$out" "$before" "$after" "$t0" "$t1" "$(getconf CLK_TCK)" "$(nproc)" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
(all0, agent0, gen0), (all1, agent1, gen1) = (map(int, a.split()) for a in sys.argv[2:4])
ns0, ns1, hz, ncpu = map(int, sys.argv[4:])
n = r["flows"] + r["errors"] + r["warmup_flows"]
r["agent_cpu_us_per_call"] = round((agent1 - agent0) / hz * 1e6 / n) if n else None
capacity = (ns1 - ns0) / 1e9 * hz * ncpu
other = max(0, (all1 - all0) - (agent1 - agent0) - (gen1 - gen0))
r["other_cpu_pct"] = round(100 * other / capacity, 1) if capacity else None
print(json.dumps(r, separators=(",", ":")))
EOF
)" || die "measuring CPU time failed"
    emit "$out"
}
for c in $CONCURRENCY; do
    measure workload-jwt "$c" --audience bench
done
measure workload-x509 10
echo "lanyard dev RSS after the runs: $(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$PID/status") MiB"

# Node resync: stop lanyard dev, start it again on the same data directory
# (stored node SVID, entries in the store) and time until its agent serves
# this uid an X.509-SVID again.
kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""
rm -f "$TMP/dev.json"
t0=$(date +%s%N)
start_dev
t1=$(date +%s%N)
for i in $(seq 1 1000); do
    "$LANYARD" --output json svid fetch --socket "$SOCKET" > /dev/null 2>&1 && break
    [ "$i" = 1000 ] && die "no SVID after the restart"
    sleep 0.01
done
t2=$(date +%s%N)
emit "{\"target\":\"lanyard-dev-restart\",\"process_up_ms\":$(( (t1 - t0) / 1000000 )),\"first_svid_after_start_ms\":$(( (t2 - t0) / 1000000 ))}"
