#!/usr/bin/env bash
# A private PostgreSQL cluster for Conductor's tests: initdb into a temporary folder as the
# `postgres` system user (the server refuses to run as root), a private port and socket
# folder, trust authentication for local connections only.
#
#   source .ci/postgres.sh          starts a cluster and exports CONDUCTOR_TEST_POSTGRES
#                                   (what `.ci/run` does; the cluster stops when the shell exits)
#   bash .ci/postgres.sh start DIR PORT   starts a cluster in DIR; prints its URL
#   bash .ci/postgres.sh stop DIR         stops it (the tests' restart case uses these two)
#
# Installs Debian's `postgresql` package when no server is on the machine.

conductor_pg_bin() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
        echo "installing PostgreSQL from Debian's packages" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null
        bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    fi
    echo "$bin"
}

# Runs a server binary as the `postgres` user when we are root (initdb and postgres refuse
# root), as ourselves otherwise.
conductor_pg_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

conductor_pg_start() {
    local dir=$1 port=$2 bin
    bin=$(conductor_pg_bin) || return 1
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        conductor_pg_as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust \
            --no-sync -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; return 1; }
    fi
    # Tuned for tests, not for durability of the test data: no fsync. Enough connections for
    # the parallel tests, their schedulers and workers.
    conductor_pg_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400 -c shared_buffers=128MB" \
        start >/dev/null || { cat "$dir/server.log" >&2; return 1; }
    echo "postgres://postgres@127.0.0.1:$port/postgres"
}

conductor_pg_stop() {
    local dir=$1 bin
    bin=$(conductor_pg_bin) || return 1
    conductor_pg_as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case "${1:-}" in
        start) conductor_pg_start "$2" "$3" ;;
        stop) conductor_pg_stop "$2" ;;
        bin) conductor_pg_bin ;;
        *) echo "usage: $0 start DIR PORT | stop DIR | bin" >&2; exit 2 ;;
    esac
else
    # Sourced: one cluster for the whole test run, stopped when the calling shell exits.
    CONDUCTOR_PG_DIR=$(mktemp -d /tmp/conductor-pg.XXXXXX)
    CONDUCTOR_PG_PORT=${CONDUCTOR_PG_PORT:-55432}
    # Another cluster (another checkout's CI) may hold the port: take the next free one.
    while (echo >"/dev/tcp/127.0.0.1/$CONDUCTOR_PG_PORT") 2>/dev/null; do
        CONDUCTOR_PG_PORT=$((CONDUCTOR_PG_PORT + 1))
    done
    CONDUCTOR_TEST_POSTGRES=$(conductor_pg_start "$CONDUCTOR_PG_DIR" "$CONDUCTOR_PG_PORT")
    export CONDUCTOR_TEST_POSTGRES CONDUCTOR_PG_DIR
    trap 'conductor_pg_stop "$CONDUCTOR_PG_DIR"; rm -rf "$CONDUCTOR_PG_DIR"' EXIT
    echo "PostgreSQL test cluster: $CONDUCTOR_TEST_POSTGRES ($CONDUCTOR_PG_DIR)"
fi
