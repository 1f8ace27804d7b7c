#!/usr/bin/env bash
# End to end against `lanyard dev`: two processes of this Unix user talk mTLS
# with SVIDs from the built-in agent's Workload API, and the server's SVID is
# rotated (entry update -> the agent signs a new key) while the client's
# long-lived connection stays open. Exits non-zero on any failure.
#
#   cargo build -p lanyard-cli -p lanyard-spiffe-tls --example mtls_pair
#   crates/lanyard-spiffe-tls/examples/dev_pair.sh [TARGET_DIR]
#
# Every process it starts is stopped by PID on exit; everything listens on
# 127.0.0.1 only.
set -euo pipefail

target=${1:-${CARGO_TARGET_DIR:-target}}/debug
lanyard=$target/lanyard
pair=$target/examples/mtls_pair
for bin in "$lanyard" "$pair"; do
    [[ -x $bin ]] || { echo "missing $bin; build it first (see the header)" >&2; exit 2; }
done

work=$(cd "$(mktemp -d)" && pwd -P)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# Polls until FILE has a line matching PATTERN (at most 30 s).
wait_for() {
    local file=$1 pattern=$2
    for _ in $(seq 300); do
        grep -q -- "$pattern" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timed out waiting for $pattern in $file" >&2
    cat "$file" >&2 || true
    return 1
}

"$lanyard" dev --data-dir "$work/dev" --listen 127.0.0.1:0 >"$work/dev.log" 2>&1 &
pids+=($!)
wait_for "$work/dev.log" "Stop with Ctrl-C"
socket=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["workload_socket"])' "$work/dev/dev.json")
export SPIFFE_ENDPOINT_SOCKET=unix:$socket

# Both processes run as this uid, and entries must differ in selectors, so
# each side runs its own copy of the example and is told apart by
# unix:path (the agent reads the caller's executable from the kernel).
mkdir "$work/bin"
cp "$pair" "$work/bin/pair-server"
cp "$pair" "$work/bin/pair-client"
uid=$(id -u)
lan() { "$lanyard" --data-dir "$work/dev" --output json "$@"; }
server_selectors=(--selector "unix:uid:$uid" --selector "unix:path:$work/bin/pair-server")
server_entry=$(lan entry create --spiffe-id spiffe://example.org/demo/server --tenant dev \
    "${server_selectors[@]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
lan entry create --spiffe-id spiffe://example.org/demo/client --tenant dev \
    --selector "unix:uid:$uid" --selector "unix:path:$work/bin/pair-client" >/dev/null

"$work/bin/pair-server" --output json --spiffe-id spiffe://example.org/demo/server server \
    --listen 127.0.0.1:0 --allow spiffe://example.org/demo/client >"$work/server.log" 2>&1 &
pids+=($!)
wait_for "$work/server.log" '"event":"listening"'
addr=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    v = json.loads(l)
    if v.get("event") == "listening": print(v["addr"])' "$work/server.log")

"$work/bin/pair-client" --output json --spiffe-id spiffe://example.org/demo/client client --connect "$addr" \
    --allow spiffe://example.org/demo/server --rounds 40 --interval 250ms --reconnect-every 2 \
    >"$work/client.log" 2>&1 &
client=$!
pids+=("$client")
wait_for "$work/client.log" '"conn":"fresh"'

# Rotate: a changed entry makes the agent sign a new key for it.
lan entry update "$server_entry" --spiffe-id spiffe://example.org/demo/server --tenant dev \
    "${server_selectors[@]}" --dns-name rotated.demo.example.org >/dev/null
wait "$client"

python3 - "$work/client.log" "$work/server.log" <<'EOF'
import json, sys
client = [json.loads(l) for l in open(sys.argv[1])]
server = [json.loads(l) for l in open(sys.argv[2])]
conns = [e for e in client if e.get("event") == "connected"]
echoes = [e for e in client if e.get("event") == "echo"]
assert conns and all(c["peer"] == "spiffe://example.org/demo/server" for c in conns), conns
long_serial = conns[0]["peer_serial"]
fresh_serials = [c["peer_serial"] for c in conns if c["conn"] == "fresh"]
assert fresh_serials[0] == long_serial, "first fresh connection should see the original SVID"
assert fresh_serials[-1] != long_serial, "no fresh connection saw the rotated SVID"
assert len(echoes) == 40, f"the long-lived connection stopped after {len(echoes)} rounds"
accepted = [e for e in server if e.get("event") == "accepted"]
assert accepted and all(a["peer"] == "spiffe://example.org/demo/client" for a in accepted), accepted
print(f"ok: {len(conns)} handshakes, server serial {long_serial[:8]}.. -> {fresh_serials[-1][:8]}.., "
      f"long-lived connection echoed {len(echoes)} rounds through the rotation")
EOF
