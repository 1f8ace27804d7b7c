#!/usr/bin/env bash
# Fault tests (issue 13): three `lanyard server` replicas on one PostgreSQL
# behind a round-robin TCP proxy, under recorded load (token exchange,
# X.509-SVID signing, broker credentials), while faults are injected; then
# the history is checked against the invariants. One command, bounded in
# time, loopback only; every process started here is stopped by its PID.
#
#   scripts/faults.sh               # the fault scenarios (about 3 minutes)
#   scripts/faults.sh --soak 600    # instead: a soak at half the measured capacity
#
# Timeline of the fault run (seconds from the start of the load):
#   an agent (`lanyard agent`, X.509-SVIDs of 60 s) is cut off from the
#   servers right after a rotation, for 40 s (longer than half a lifetime);
#   15 kill -9 of replica 1, restarted at 25; 35 PostgreSQL restarted;
#   50 replica 2's database connection hangs (frozen, sockets open) until 65;
#   the load runs for 90 s.
# Invariants checked (scripts/faults/check.py): every credential a client
# received has its audit event; `lanyard audit verify` passes and every
# signed checkpoint verifies against the log (no fork); every PostgreSQL
# role Lanyard created has a live lease, and no lease is duplicated; no
# agent's revision went back; the cut-off agent's workload kept a valid
# SVID and got a new one once the servers were back.
#
# Options: --keep (keep the temp directory), --no-build, --soak SECS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/scripts/faults"
KEEP=0
BUILD=1
SOAK=0
LOAD_SECS=90
while [ $# -gt 0 ]; do
    case "$1" in
        --keep) KEEP=1 ;;
        --no-build) BUILD=0 ;;
        --soak) SOAK="$2"; shift ;;
        -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "faults.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$SOAK" in ''|*[!0-9]*) echo "--soak takes seconds" >&2; exit 2 ;; esac
[ "$SOAK" -le 3600 ] || { echo "--soak is at most 3600 s" >&2; exit 2; }

log() { echo "[faults $(date +%T)] $*" >&2; }
die() { echo "[faults] FAILED: $*" >&2; exit 1; }

TMP="$(mktemp -d "${TMPDIR:-/tmp}/lanyard-faults.XXXXXX")"
chmod 755 "$TMP"
source "$ROOT/bench/lib/pg.sh"
source "$ROOT/bench/lib/lanyard.sh"
PIDS=()
start_bg() { # start_bg NAME CMD...: background, logged, PID remembered
    local name="$1"; shift
    "$@" > "$TMP/$name.log" 2>&1 &
    PIDS+=("$!")
    LAST_PID=$!
}
stop_pid() {
    local pid="$1"
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    lanyard_stop_all
    pg_stop
    if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then log "logs and data kept in $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ "$BUILD" = 1 ]; then
    log "cargo build --release -p lanyard-cli -p syncload"
    (cd "$ROOT" && cargo build --release --quiet -p lanyard-cli -p syncload) || die "build failed"
fi
LANYARD="$TARGET_DIR/release/lanyard"
FAULTLOAD="$TARGET_DIR/release/faultload"
SYNCLOAD="$TARGET_DIR/release/syncload"

# Python with PyJWT (subject tokens), as the exchange benchmark uses.
VENV="$ROOT/bench/.venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -c 'import jwt, cryptography' 2>/dev/null \
    || timeout 900 "$VENV/bin/pip" install -q --disable-pip-version-check pyjwt cryptography \
    || die "pip install pyjwt cryptography failed"

# --- PostgreSQL: the store and the broker's target database ---
log "starting PostgreSQL"
pg_start "$TMP/pg"
STORE_URL=$(pg_createdb lanyard)
APP_URL=$(pg_createdb appdb)
PSQL="$PG_BIN/psql"

# --- replicas behind a round-robin proxy ---
PROXY_HTTP=$(free_port); PROXY_NODE=$(free_port); HUNG_DB=$(free_port); AGENT_LINK=$(free_port)
H=(); N=()
for i in 0 1 2; do H[$i]=$(free_port); N[$i]=$(free_port); done
lanyard_setup "$TMP/srv" "$STORE_URL" "http://127.0.0.1:$PROXY_HTTP"
# Replica 2 reaches the database through a proxy that can freeze.
start_bg hungdb python3 "$HERE/tcpproxy.py" "$HUNG_DB" "127.0.0.1:$PG_PORT"; HUNG_PID=$LAST_PID
replica_env() { # replica_env N
    echo LANYARD__CA__SVID_TTL=60s LANYARD__AUDIT__CHECKPOINT_INTERVAL=5s LANYARD__AUDIT__CHECKPOINT_FILE="$TMP/checkpoints-$1.jsonl"
    [ "$1" = 2 ] && echo "LANYARD__STORE__URL=postgres://postgres@127.0.0.1:$HUNG_DB/lanyard"
    return 0
}
start_replica() {
    # shellcheck disable=SC2046
    lanyard_replica "$TMP/srv" "$1" "${H[$1]}" "${N[$1]}" $(replica_env "$1") || die "replica $1 did not start"
}
for i in 0 1 2; do start_replica "$i"; done
start_bg proxy-http python3 "$HERE/tcpproxy.py" "$PROXY_HTTP" "127.0.0.1:${H[0]},127.0.0.1:${H[1]},127.0.0.1:${H[2]}"
start_bg proxy-node python3 "$HERE/tcpproxy.py" "$PROXY_NODE" "127.0.0.1:${N[0]},127.0.0.1:${N[1]},127.0.0.1:${N[2]}"
start_bg agent-link python3 "$HERE/tcpproxy.py" "$AGENT_LINK" "127.0.0.1:${N[0]},127.0.0.1:${N[1]},127.0.0.1:${N[2]}"
AGENT_LINK_PID=$LAST_PID
sleep 0.5
BASE="http://127.0.0.1:$PROXY_HTTP"
TOKEN_FILE="$TMP/srv/admin-token"
L=("$LANYARD" --server "$BASE" --admin-token-file "$TOKEN_FILE")
log "3 replicas up (HTTP ${H[*]}, node API ${N[*]}), proxy $BASE"

# --- configuration: issuer, entries, broker ---
"$PY" "$ROOT/bench/exchange/mint_tokens.py" -n 200 "$TMP/keys" >/dev/null || die "minting tokens failed"
"${L[@]}" tenant create fault >/dev/null
"${L[@]}" issuer add --name k8s --kind kubernetes --issuer https://kubernetes.default.svc.cluster.local \
    --jwks-file "$TMP/keys/jwks.json" --audience lanyard --tenant fault >/dev/null
"${L[@]}" broker backend add postgres --name appdb --url "${APP_URL/postgres@/postgres:unused@}" >/dev/null
printf '%s\n' "CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';" > "$TMP/create.sql"
printf '%s\n' 'DROP ROLE IF EXISTS "{{name}}";' > "$TMP/revoke.sql"
"${L[@]}" broker role add appdb/ro --creation-sql "$TMP/create.sql" --revocation-sql "$TMP/revoke.sql" --ttl 2m --max-ttl 10m >/dev/null
"${L[@]}" entry create --spiffe-id spiffe://example.org/ns/bench/sa/api --tenant fault --issuer k8s \
    --selector k8s:ns:bench --selector k8s:sa:api --audience api://fault --audience "$BASE/broker" \
    --grant appdb/ro >/dev/null
"${L[@]}" entry create --spiffe-id spiffe://example.org/fault/x509 --tenant fault \
    --parent spiffe://example.org/lanyard/node/fault-load --selector unix:uid:1 >/dev/null
UID_NOW=$(id -u)
"${L[@]}" entry create --spiffe-id spiffe://example.org/fault/agent-workload --tenant fault \
    --parent spiffe://example.org/lanyard/node/fault-agent --selector "unix:uid:$UID_NOW" >/dev/null

# --- an agent whose link to the servers can be cut ---
"${L[@]}" --output json jointoken create --node-id fault-agent --ttl 10m > "$TMP/agent-join.json"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); open(sys.argv[2],"w").write(d["token"]); open(sys.argv[3],"w").write(d["trust_bundle_pem"])' \
    "$TMP/agent-join.json" "$TMP/agent-token" "$TMP/bundle.pem"
chmod 600 "$TMP/agent-token"
SOCK="$TMP/agent.sock"
cat > "$TMP/agent.toml" <<TOML
server_address = "127.0.0.1:$AGENT_LINK"
server_name = "localhost"
trust_domain = "example.org"
trust_bundle = "$TMP/bundle.pem"
join_token_file = "$TMP/agent-token"
state_dir = "$TMP/agent-state"
socket = "$SOCK"
sync_interval = "2s"
TOML
start_bg agent env LANYARD_LOG=info "$LANYARD" agent --config "$TMP/agent.toml"; AGENT_PID=$LAST_PID
svid() { # svid: "SERIAL EXPIRES_AT" of this process's X.509-SVID, or empty
    timeout 10 "$LANYARD" --output json svid fetch --socket "$SOCK" 2>/dev/null | python3 -c '
import json, sys
try:
    s = json.load(sys.stdin)["svids"][0]
    print(s["serial"], s["expires_at"])
except Exception:
    pass' 2>/dev/null || true
}
for _ in $(seq 1 150); do [ -n "$(svid | awk '{print $1}')" ] && break; sleep 0.2; done
[ -n "$(svid | awk '{print $1}')" ] || die "the agent's workload got no X.509-SVID (log: $TMP/agent.log)"
log "agent serving SVIDs"

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

if [ "$SOAK" -gt 0 ]; then
    # --- soak: capacity first (20 s closed loop), then half of it ---
    "$FAULTLOAD" --base "$BASE" --node-api "127.0.0.1:$PROXY_NODE" --admin-token-file "$TOKEN_FILE" \
        --tokens "$TMP/keys/tokens.txt" --state-dir "$TMP/load-cap" --node fault-load --duration 20 \
        --concurrency 6 --out "$TMP/capacity.jsonl" > "$TMP/capacity.json" || die "capacity run failed"
    CAP=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(v for k,v in d.items() if k.endswith("_ok"))/20)' "$TMP/capacity.json")
    RATE=$(python3 -c "print(max(1, int($CAP/2)))")
    log "capacity $CAP ops/s; soaking ${SOAK}s at $RATE ops/s"
    START_RSS="$(for i in 0 1 2; do rss "${REPLICA_PID[$i]}"; done | paste -sd' ') agent=$(rss "$AGENT_PID")"
    # 6 workers, each pausing so that together they run at RATE.
    PAUSE=$(python3 -c "print(max(0, int(6000/$RATE) - 5))")
    "$FAULTLOAD" --base "$BASE" --node-api "127.0.0.1:$PROXY_NODE" --admin-token-file "$TOKEN_FILE" \
        --tokens "$TMP/keys/tokens.txt" --state-dir "$TMP/load-soak" --node fault-load --duration "$SOAK" \
        --concurrency 6 --pause-ms "$PAUSE" --out "$TMP/soak.jsonl" > "$TMP/soak.json" || die "soak load failed"
    END_RSS="$(for i in 0 1 2; do rss "${REPLICA_PID[$i]}"; done | paste -sd' ') agent=$(rss "$AGENT_PID")"
    python3 "$HERE/check.py" soak --history "$TMP/soak.jsonl" --summary "$TMP/soak.json" \
        --rss-start "$START_RSS" --rss-end "$END_RSS" --capacity "$CAP" --rate "$RATE" || die "soak check failed"
    exit 0
fi

# --- the fault run ---
"$SYNCLOAD" --admin "$BASE" --admin-token-file "$TOKEN_FILE" --node-api "127.0.0.1:$PROXY_NODE" \
    --state-dir "$TMP/fleet" --agents 20 --prefix fault-fleet --tenant fault --interval 1 \
    --quiet 5 --duration $((LOAD_SECS - 10)) --probe-every 2 > "$TMP/fleet.json" 2> "$TMP/fleet.log" &
FLEET_PID=$!; PIDS+=("$FLEET_PID")
"$FAULTLOAD" --base "$BASE" --node-api "127.0.0.1:$PROXY_NODE" --admin-token-file "$TOKEN_FILE" \
    --tokens "$TMP/keys/tokens.txt" --state-dir "$TMP/load" --node fault-load --duration "$LOAD_SECS" \
    --concurrency 6 --out "$TMP/history.jsonl" > "$TMP/load.json" 2> "$TMP/load.log" &
LOAD_PID=$!; PIDS+=("$LOAD_PID")
T0=$(date +%s)
at() { # at SECS: wait until SECS after the load started
    local now; now=$(date +%s)
    [ $((T0 + $1)) -le "$now" ] || sleep $((T0 + $1 - now))
}
# The agent, beside the fault schedule (so that neither delays the other):
# wait for a fresh rotation, cut it off for 40 s, restore the link, and
# wait for rotation to resume. Results go to files read after the load.
agent_cut() {
    local before first_serial cur cut_serial cut_at during after=""
    before="$(svid)"; first_serial=${before%% *}
    for _ in $(seq 1 200); do
        cur="$(svid)"; [ -n "$cur" ] && [ "${cur%% *}" != "$first_serial" ] && break; sleep 0.2
    done
    cut_serial="$(svid | awk '{print $1}')"
    log "agent rotated ($cut_serial); cutting it off for 40 s"
    kill -HUP "$AGENT_LINK_PID"; cut_at=$(date +%s)
    while [ $(( $(date +%s) - cut_at )) -lt 38 ]; do sleep 0.5; done
    during="$(svid)"
    while [ $(( $(date +%s) - cut_at )) -lt 40 ]; do sleep 0.2; done
    kill -USR2 "$AGENT_LINK_PID"; log "agent link restored; its SVID during the cut: ${during:-none}"
    # Rotation must resume within a few sync intervals.
    for _ in $(seq 1 150); do
        cur="$(svid)"; [ -n "$cur" ] && [ "${cur%% *}" != "$cut_serial" ] && { after="$cur"; break; }; sleep 0.2
    done
    log "agent after the cut: ${after:-no new SVID}"
    printf '%s\n%s\n%s\n%s\n' "$cut_serial" "$cut_at" "$during" "$after" > "$TMP/agent-cut.txt"
}
agent_cut & CUT_PID=$!; PIDS+=("$CUT_PID")

at 15; log "kill -9 replica 1"; kill -KILL "${REPLICA_PID[1]}"; wait "${REPLICA_PID[1]}" 2>/dev/null || true
at 25; log "restart replica 1"; start_replica 1
at 35; log "restart PostgreSQL"; pg_restart || die "PostgreSQL did not restart"
at 50; log "freeze replica 2's database connection"; kill -USR1 "$HUNG_PID"
at 65; log "unfreeze it"; kill -USR2 "$HUNG_PID"
wait "$LOAD_PID" || die "the load driver failed (log: $TMP/load.log)"
wait "$FLEET_PID" || die "the agent fleet failed (log: $TMP/fleet.log)"
log "load done: $(cat "$TMP/load.json")"
wait "$CUT_PID" || die "the agent cut-off scenario failed (log above)"
{ read -r cut_serial; read -r CUT_AT; read -r during; read -r after; } < "$TMP/agent-cut.txt" \
    || die "the agent cut-off scenario left no result"

# --- invariants ---
for i in 0 1 2; do
    if ! kill -0 "${REPLICA_PID[$i]}" 2>/dev/null; then
        rc=0; wait "${REPLICA_PID[$i]}" 2>/dev/null || rc=$?
        die "replica $i is not running at the end (exit status $rc; log $TMP/srv/r$i.log)"
    fi
done
"${L[@]}" audit export > "$TMP/audit.jsonl" || die "audit export failed"
"${L[@]}" --output json audit verify > "$TMP/verify.json" || die "lanyard audit verify failed: $(cat "$TMP/verify.json")"
cat "$TMP"/checkpoints-*.jsonl > "$TMP/checkpoints.jsonl" 2>/dev/null || true
"${L[@]}" --output json broker lease list > "$TMP/leases.json" 2>/dev/null || true
"$PSQL" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d lanyard -At -c "SELECT id, username, state FROM leases" > "$TMP/lease-rows.txt"
"$PSQL" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -At -c "SELECT rolname FROM pg_roles WHERE rolname LIKE 'lanyard\\_%'" > "$TMP/roles.txt"
ckpt_ok=0; ckpt_bad=0
while IFS= read -r line; do
    [ -n "$line" ] || continue
    printf '%s\n' "$line" > "$TMP/one-checkpoint.jsonl"
    if "${L[@]}" audit verify --checkpoint "$TMP/one-checkpoint.jsonl" > /dev/null 2>&1; then ckpt_ok=$((ckpt_ok + 1)); else ckpt_bad=$((ckpt_bad + 1)); fi
done < "$TMP/checkpoints.jsonl"
python3 "$HERE/check.py" faults --history "$TMP/history.jsonl" --audit "$TMP/audit.jsonl" \
    --checkpoints "$TMP/checkpoints.jsonl" --checkpoints-verified "$ckpt_ok" --checkpoints-failed "$ckpt_bad" \
    --lease-rows "$TMP/lease-rows.txt" --roles "$TMP/roles.txt" --fleet "$TMP/fleet.json" \
    --agent-before "$cut_serial" --agent-during "$during" --agent-after "$after" --cut-at "$CUT_AT" \
    || die "invariants do not hold (data in $TMP)"
