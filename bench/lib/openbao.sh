# shellcheck shell=bash
# Starting the OpenBao peer of a benchmark, on 127.0.0.1 only.
#
#   . bench/lib/openbao.sh
#   openbao_start dev|raft BAO_BIN DIR PORT   # sets BAO_PID, BAO_ROOT_TOKEN; log in DIR/openbao.log
#
# dev:  `bao server -dev` (storage in memory, no audit device), the peer the
#       targets were set against, with a random root token.
# raft: OpenBao as it runs in production, for the "durable peer" variants:
#       raft storage on disk (bbolt, fsynced) and a file audit device.
#       Lanyard makes its audit event (and, for the broker, its lease)
#       durable before it answers; this gives OpenBao the same kind of work.
#       Initialised, unsealed and active when the function returns.
#
# DIR is created. HOME points into DIR so no token helper file lands in the
# real home. The caller stops BAO_PID (by PID) on exit. Needs curl and python3.

openbao_start() {
    local storage="$1" bao="$2" dir="$3" port="$4"
    mkdir -p "$dir"
    case "$storage" in
        dev)
            BAO_ROOT_TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
            HOME="$dir" BAO_ADDR= BAO_TOKEN= "$bao" server -dev -dev-no-store-token \
                -dev-listen-address="127.0.0.1:$port" -dev-root-token-id="$BAO_ROOT_TOKEN" \
                > "$dir/openbao.log" 2>&1 &
            BAO_PID=$!
            ;;
        raft) openbao_start_durable "$bao" "$dir" "$port" ;;
        *) echo "openbao_start: storage is dev or raft, not '$storage'" >&2; return 1 ;;
    esac
}

openbao_start_durable() {
    local bao="$1" dir="$2" port="$3" cluster_port i init key code
    cluster_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
    mkdir -p "$dir/raft"
    cat > "$dir/openbao.hcl" <<HCL
storage "raft" {
  path    = "$dir/raft"
  node_id = "bench"
}
listener "tcp" {
  address         = "127.0.0.1:$port"
  cluster_address = "127.0.0.1:$cluster_port"
  tls_disable     = true
}
api_addr      = "http://127.0.0.1:$port"
cluster_addr  = "http://127.0.0.1:$cluster_port"
disable_mlock = true
# OpenBao 2.4+ creates audit devices from the configuration only.
audit "file" "file" {
  options {
    file_path = "$dir/openbao-audit.log"
  }
}
HCL
    HOME="$dir" BAO_ADDR= BAO_TOKEN= "$bao" server -config "$dir/openbao.hcl" > "$dir/openbao.log" 2>&1 &
    BAO_PID=$!
    local url="http://127.0.0.1:$port"
    for i in $(seq 1 300); do
        kill -0 "$BAO_PID" 2>/dev/null || { echo "openbao (raft) exited during start-up (log: $dir/openbao.log)" >&2; return 1; }
        curl -s -o /dev/null --max-time 1 "$url/v1/sys/health" && break
        sleep 0.1
    done
    init="$(curl -s --max-time 30 -X PUT --data '{"secret_shares":1,"secret_threshold":1}' "$url/v1/sys/init")" \
        || { echo "openbao (raft): sys/init failed" >&2; return 1; }
    key="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["keys_base64"][0])' "$init")" \
        || { echo "openbao (raft): sys/init answered no unseal key" >&2; return 1; }
    BAO_ROOT_TOKEN="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["root_token"])' "$init")" \
        || { echo "openbao (raft): sys/init answered no root token" >&2; return 1; }
    curl -s -o /dev/null --max-time 30 -X PUT --data "{\"key\":\"$key\"}" "$url/v1/sys/unseal" \
        || { echo "openbao (raft): unseal failed" >&2; return 1; }
    # Active (200) once raft has elected this single node leader.
    for i in $(seq 1 300); do
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url/v1/sys/health" || true)"
        [ "$code" = 200 ] && break
        sleep 0.1
    done
    [ "$code" = 200 ] || { echo "openbao (raft) not active within 30 s (health $code; log: $dir/openbao.log)" >&2; return 1; }
    # The audit device is declared in the configuration: check it is on.
    code="$(curl -s -o "$dir/audit-answer" -w '%{http_code}' --max-time 10 -H "X-Vault-Token: $BAO_ROOT_TOKEN" "$url/v1/sys/audit")" || true
    grep -q '"file/"' "$dir/audit-answer" 2>/dev/null \
        || { echo "openbao (raft): no file audit device (sys/audit HTTP $code: $(head -c 500 "$dir/audit-answer"))" >&2; return 1; }
}
