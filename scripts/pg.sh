#!/bin/sh
# pg.sh: a private PostgreSQL 15 cluster in a directory, run as the unprivileged postgres user
# (PostgreSQL refuses to run as root). Used by `make run`, the tests and the benchmarks.
#
#   scripts/pg.sh start DIR PORT   initdb if needed, start, create database "bulkhead",
#                                  apply init-db.sql; prints the DATABASE_URL
#   scripts/pg.sh stop DIR         fast shutdown
# The cluster listens on 127.0.0.1:PORT and on a socket in DIR, trusts local connections
# (it is a private development/test cluster), and logs to DIR/log. PG_FSYNC (on) and
# PG_MAX_CONNECTIONS (300) set those two server settings.
set -eu
PGBIN=/usr/lib/postgresql/15/bin
here=$(cd "$(dirname "$0")/.." && pwd)

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: pg.sh start DIR PORT | stop DIR" >&2; exit 2; }

case "$cmd" in
start)
    port=${3:?port}
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ "$(id -u)" = 0 ]; then
        chown postgres:postgres "$dir"
        # postgres must be able to reach the directory through its parents.
        d=$dir
        while [ "$d" != / ]; do chmod o+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=${PG_MAX_CONNECTIONS:-300} -c fsync=${PG_FSYNC:-on}" \
        start >/dev/null || { tail -20 "$dir/log" >&2; exit 1; }
    "$PGBIN/psql" -h "$dir" -p "$port" -U postgres -qAt -c "SELECT 1 FROM pg_database WHERE datname='bulkhead'" postgres \
        | grep -q 1 || "$PGBIN/createdb" -h "$dir" -p "$port" -U postgres bulkhead
    PGOPTIONS="-c client_min_messages=warning" "$PGBIN/psql" -h "$dir" -p "$port" -U postgres -q -v ON_ERROR_STOP=1 -f "$here/init-db.sql" bulkhead >/dev/null
    echo "postgresql://postgres@127.0.0.1:$port/bulkhead"
    ;;
stop)
    [ -f "$dir/data/postmaster.pid" ] || exit 0
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
    ;;
*)
    echo "usage: pg.sh start DIR PORT | stop DIR" >&2
    exit 2
    ;;
esac
