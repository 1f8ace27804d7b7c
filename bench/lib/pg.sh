# shellcheck shell=bash
# A throwaway PostgreSQL for benchmarks and fault tests, on a free loopback
# port in a temporary directory, as scripts/test.sh starts one. Source it,
# then:
#
#   pg_start DIR      # initdb + start; sets PG_URL, PG_PORT, PG_DIR
#   pg_pid            # the postmaster's PID (from postmaster.pid)
#   pg_stop           # fast shutdown, by PID
#   pg_restart        # stop then start on the same port and data
#   pg_createdb NAME  # a fresh database; prints its URL
#
# Installs the server with apt-get when its binaries are missing. Runs the
# server as the postgres user when started as root (initdb refuses root).

pg__find_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    return 1
}

pg_start() {
    PG_DIR="$1"
    if ! PG_BIN=$(pg__find_bin); then
        echo "PostgreSQL server not found; installing it with apt-get" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        PG_BIN=$(pg__find_bin)
    fi
    PG_AS=()
    mkdir -p "$PG_DIR"
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir "$PG_DIR" postgres
        chown postgres "$PG_DIR"
        PG_AS=(runuser -u postgres --)
    fi
    PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >"$PG_DIR/initdb.log" 2>&1 \
        || { cat "$PG_DIR/initdb.log" >&2; return 1; }
    pg__run
    PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
}

pg__run() {
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c max_connections=300 -c fsync=on" start >/dev/null \
        || { tail -n 30 "$PG_DIR/server.log" >&2; return 1; }
}

pg_pid() {
    [ -f "$PG_DIR/data/postmaster.pid" ] && head -n 1 "$PG_DIR/data/postmaster.pid"
}

pg_stop() {
    local pid
    pid=$(pg_pid) || return 0
    [ -n "$pid" ] || return 0
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}

pg_restart() {
    pg_stop
    pg__run
}

pg_createdb() {
    "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE $1" >/dev/null
    echo "postgres://postgres@127.0.0.1:$PG_PORT/$1"
}
