#!/usr/bin/env bash
# Scale benchmark (issue 13): N entries and a fleet of simulated agents on
# one `lanyard server`. See docs/BENCHMARKS.md, "Scale".
#
#   bench/scale/run.sh                      # PostgreSQL, 100000 entries, 1000 agents
#   bench/scale/run.sh --store sqlite       # the same on SQLite
#   bench/scale/run.sh --quick              # 10000 entries, 100 agents, short phases
#
# Options: --entries N, --agents N, --interval SECS (agent sync), --quiet SECS,
# --duration SECS (probe phase), --store postgres|sqlite, --no-build, --keep.
# What it measures, in order: single-entry create latency on an empty store;
# `lanyard entry apply` of N entries (entries/s), and again (idempotent);
# single-entry create latency at N; server RSS; then `syncload`: attest the
# fleet, first sync, a quiet phase (unchanged syncs: bytes, CPU) and a probe
# phase (new entries timed until their agent has them). Loopback only; every
# process started here is stopped by PID on exit. Results (JSON lines) go to
# stdout, progress to stderr.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/bench/scale"
ENTRIES=100000
AGENTS=1000
INTERVAL=5
QUIET=20
DURATION=60
STORE=postgres
BUILD=1
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) ENTRIES=10000; AGENTS=100; QUIET=10; DURATION=20 ;;
        --entries) ENTRIES="$2"; shift ;;
        --agents) AGENTS="$2"; shift ;;
        --interval) INTERVAL="$2"; shift ;;
        --quiet) QUIET="$2"; shift ;;
        --duration) DURATION="$2"; shift ;;
        --store) STORE="$2"; shift ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$STORE" in postgres|sqlite) ;; *) echo "--store is postgres or sqlite" >&2; exit 2 ;; esac
log() { echo "[scale] $*" >&2; }
die() { echo "[scale] ERROR: $*" >&2; exit 1; }

TMP="$(mktemp -d "${TMPDIR:-/tmp}/lanyard-scale.XXXXXX")"
chmod 755 "$TMP" # PostgreSQL runs as its own user when started as root
source "$ROOT/bench/lib/pg.sh"
source "$ROOT/bench/lib/lanyard.sh"
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    lanyard_stop_all
    [ "$STORE" = postgres ] && pg_stop
    if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then log "logs and data kept in $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ "$BUILD" = 1 ]; then
    log "cargo build --release -p lanyard-cli -p syncload -p loadgen"
    (cd "$ROOT" && cargo build --release --quiet -p lanyard-cli -p syncload -p loadgen) || die "build failed"
fi
LANYARD="$TARGET_DIR/release/lanyard"
SYNCLOAD="$TARGET_DIR/release/syncload"
LOADGEN="$TARGET_DIR/release/loadgen"
VENV="$ROOT/bench/.venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -c 'import jwt, cryptography' 2>/dev/null \
    || timeout 900 "$VENV/bin/pip" install -q --disable-pip-version-check pyjwt cryptography \
    || die "pip install pyjwt cryptography failed"
"$PY" "$ROOT/bench/exchange/mint_tokens.py" -n 1000 "$TMP/keys" >/dev/null || die "minting tokens failed"

HTTP_PORT=$(free_port); NODE_PORT=$(free_port)
if [ "$STORE" = postgres ]; then
    log "starting PostgreSQL"
    pg_start "$TMP/pg"
    STORE_URL=$(pg_createdb lanyard_scale)
else
    STORE_URL="sqlite://$TMP/lanyard.db"
fi
lanyard_setup "$TMP/server" "$STORE_URL" "http://127.0.0.1:$HTTP_PORT"
lanyard_replica "$TMP/server" 0 "$HTTP_PORT" "$NODE_PORT"
PID="${REPLICA_PID[0]}"
BASE="http://127.0.0.1:$HTTP_PORT"
TOKEN_FILE="$TMP/server/admin-token"
L=("$LANYARD" --server "$BASE" --admin-token-file "$TOKEN_FILE")
"${L[@]}" tenant create bench >/dev/null
"${L[@]}" issuer add --name k8s --kind kubernetes --issuer https://kubernetes.default.svc.cluster.local \
    --jwks-file "$TMP/keys/jwks.json" --audience lanyard --tenant bench >/dev/null
"${L[@]}" entry create --spiffe-id spiffe://example.org/ns/bench/sa/api --tenant bench --issuer k8s \
    --selector k8s:ns:bench --selector k8s:sa:api --audience bench-api >/dev/null
exchange_p99() { # exchange_p99 TAG: 10 s of token exchange at concurrency 8
    "$LOADGEN" --flow lanyard-exchange --base "$BASE" --tokens "$TMP/keys/tokens.txt" --concurrency 8 \
        --duration 10 --warmup 1 --audience bench-api | sed "s/^{/{\"step\":\"exchange_$1\",/"
}
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
RSS_EMPTY=$(rss "$PID")

log "token exchange on an empty store"
exchange_p99 empty
log "create latency on an empty store"
python3 "$HERE/create_latency.py" "$BASE" "$TOKEN_FILE" bench 200 empty | sed 's/^/{"step":"create_empty",/; s/,{/,/'

log "generating $ENTRIES entries for $AGENTS nodes"
python3 - "$ENTRIES" "$AGENTS" "$TMP/entries.json" <<'PY'
import json, sys
n, agents, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
with open(path, "w") as f:
    json.dump([{"spiffe_id": f"spiffe://example.org/scale/w{i}",
                "parent": f"spiffe://example.org/lanyard/node/scale-{i % agents}",
                "selectors": [f"unix:uid:{i}"]} for i in range(n)], f)
PY
for round in first again; do
    t0=$(date +%s%N)
    "${L[@]}" --output json entry apply -f "$TMP/entries.json" --tenant bench > "$TMP/apply-$round.json" \
        || die "entry apply failed"
    t1=$(date +%s%N)
    python3 - "$TMP/apply-$round.json" "$t0" "$t1" "$round" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); secs = (int(sys.argv[3]) - int(sys.argv[2])) / 1e9
changed = r["create"] + r["update"] + r["delete"]
print(json.dumps({"step": f"apply_{sys.argv[4]}", "created": r["create"], "unchanged": r["unchanged"],
                  "seconds": round(secs, 2), "entries_per_sec": round((changed or r["unchanged"]) / secs)}))
PY
done
RSS_LOADED=$(rss "$PID")
log "create latency at $ENTRIES entries"
python3 "$HERE/create_latency.py" "$BASE" "$TOKEN_FILE" bench 200 loaded | sed 's/^/{"step":"create_loaded",/; s/,{/,/'
echo "{\"step\":\"rss\",\"empty_mib\":$RSS_EMPTY,\"loaded_mib\":$RSS_LOADED,\"entries\":$ENTRIES}"
log "token exchange at $ENTRIES entries"
exchange_p99 loaded

log "fleet: $AGENTS agents syncing every ${INTERVAL}s"
timeout $((QUIET + DURATION + 600)) "$SYNCLOAD" --admin "$BASE" --admin-token-file "$TOKEN_FILE" \
    --node-api "127.0.0.1:$NODE_PORT" --state-dir "$TMP/agents" --agents "$AGENTS" \
    --interval "$INTERVAL" --quiet "$QUIET" --duration "$DURATION" --server-pid "$PID" \
    | sed 's/^{/{"step":"fleet",/' || die "syncload failed"
echo "{\"step\":\"store\",\"store\":\"$STORE\",\"server_rss_end_mib\":$(rss "$PID")}"
if [ "$STORE" = postgres ]; then
    log "second replica: revocation propagation from replica 0 to replica 1"
    H1=$(free_port); N1=$(free_port)
    lanyard_replica "$TMP/server" 1 "$H1" "$N1" || die "replica 1 did not start"
    python3 "$HERE/revocation.py" "$BASE" "http://127.0.0.1:$H1" "$TOKEN_FILE" "$TMP/keys/tokens.txt" 50 bench-api \
        | sed 's/^{/{"step":"revocation_propagation",/' || die "revocation propagation failed"
fi
