# shellcheck shell=bash
# `lanyard server` replicas on one store for benchmarks and fault tests.
# Source it after setting LANYARD (the binary). Loopback only.
#
#   lanyard_setup DIR STORE_URL ISSUER_URL
#       writes DIR/kek and, per replica later, DIR/rN.toml; runs `server
#       init` once; the admin token is in DIR/admin-token
#   lanyard_replica DIR N HTTP_PORT NODE_PORT [ENV=VALUE...]
#       starts replica N in the background; its PID is in REPLICA_PID[N],
#       its log in DIR/rN.log; waits (bounded) until /readyz answers 200
#   lanyard_stop_replica N [SIGNAL]   # by PID (default TERM), then waits
#   lanyard_stop_all

declare -ga REPLICA_PID=()

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

lanyard__config() { # DIR N HTTP_PORT NODE_PORT
    local dir="$1" n="$2" http="$3" node="$4"
    cat > "$dir/r$n.toml" <<TOML
issuer = "$LANYARD_ISSUER"
[server]
listen = "127.0.0.1:$http"
insecure_plain_http = true
[store]
url = "$LANYARD_STORE"
[keys]
kek_file = "$dir/kek"
[node_api]
listen = "127.0.0.1:$node"
dns_names = ["localhost"]
TOML
}

lanyard_setup() {
    local dir="$1"
    LANYARD_STORE="$2"
    LANYARD_ISSUER="$3"
    mkdir -p "$dir"
    python3 -c 'import os,base64; print(base64.b64encode(os.urandom(32)).decode())' > "$dir/kek"
    chmod 600 "$dir/kek"
    lanyard__config "$dir" 0 "$(free_port)" "$(free_port)"
    rm -f "$dir/admin-token"
    "$LANYARD" server init --insecure-plain-http --config "$dir/r0.toml" --token-file "$dir/admin-token" \
        > "$dir/init.log" 2>&1 || { cat "$dir/init.log" >&2; return 1; }
}

lanyard_replica() {
    local dir="$1" n="$2" http="$3" node="$4"
    shift 4
    lanyard__config "$dir" "$n" "$http" "$node"
    env LANYARD_LOG="${LANYARD_LOG:-warn}" "$@" "$LANYARD" server --config "$dir/r$n.toml" >> "$dir/r$n.log" 2>&1 &
    REPLICA_PID[$n]=$!
    local i
    for i in $(seq 1 300); do
        kill -0 "${REPLICA_PID[$n]}" 2>/dev/null || { tail -n 20 "$dir/r$n.log" >&2; return 1; }
        if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$http/readyz")" = 200 ]; then
            return 0
        fi
        sleep 0.1
    done
    echo "replica $n did not get ready within 30 s (log $dir/r$n.log)" >&2
    return 1
}

lanyard_stop_replica() {
    local n="$1" sig="${2:-TERM}" pid="${REPLICA_PID[$1]:-}"
    [ -n "$pid" ] || return 0
    kill -"$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    REPLICA_PID[$n]=""
}

lanyard_stop_all() {
    local n
    for n in "${!REPLICA_PID[@]}"; do lanyard_stop_replica "$n"; done
}
