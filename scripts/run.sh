#!/usr/bin/env bash
# run.sh: `make run`. Serves build/bulkhead in the foreground on API_PORT (default 8080).
#
# Without DATABASE_URL (in the environment or in .env) it starts a private PostgreSQL 15 cluster
# in .run/pg (git-ignored) on PG_PORT (default 5433), applies init-db.sql and points the server
# at it. Ctrl-C (or SIGTERM) stops the server gracefully, then that cluster. With DATABASE_URL
# set it uses that database and starts no PostgreSQL. An empty value counts as unset, so
# `cp .env.example .env` (whose DATABASE_URL= is empty) still gets the private cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BULKHEAD_BIN:-build/bulkhead}

# The server's own loader decides whether DATABASE_URL is set (environment, then .env), so this
# script and the server cannot disagree; a broken .env or value is reported here, before any
# PostgreSQL starts. An empty value prints as "DATABASE_URL=" followed by blanks.
effective=$("$BIN" config --effective) || exit 1

started_pg=""
if ! grep -q '^DATABASE_URL=[^[:space:]]' <<<"$effective"; then
    PG_PORT=${PG_PORT:-5433}
    echo "make run: starting a private PostgreSQL in .run/pg on 127.0.0.1:$PG_PORT" >&2
    DATABASE_URL=$(scripts/pg.sh start .run/pg "$PG_PORT")
    export DATABASE_URL
    started_pg=.run/pg
fi

stop_pg() {
    if [ -n "$started_pg" ]; then
        echo "make run: stopping the private PostgreSQL" >&2
        scripts/pg.sh stop "$started_pg" || true
    fi
}
trap stop_pg EXIT

"$BIN" &
pid=$!
# Ctrl-C reaches the whole foreground group; forward SIGTERM too, and wait for a clean exit.
trap 'kill -TERM "$pid" 2>/dev/null || true' INT TERM
# A trapped signal interrupts `wait` (status 128+signal), so wait until the server is gone and
# then take its own exit status, which bash keeps for a finished background job.
while kill -0 "$pid" 2>/dev/null; do
    wait "$pid" || true
done
status=0
wait "$pid" || status=$?
exit "$status"
