#!/usr/bin/env bash
# run.sh: `make run`. Serves build/bulkhead in the foreground on API_PORT (default 8080).
#
# Without DATABASE_URL (in the environment or in .env) it starts a private PostgreSQL 15 cluster
# in .run/pg (git-ignored) on PG_PORT (default 5433), applies init-db.sql and points the server
# at it. Ctrl-C (or SIGTERM) stops the server gracefully, then that cluster. With DATABASE_URL
# set it uses that database and starts no PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BULKHEAD_BIN:-build/bulkhead}

dotenv_has() { [ -f .env ] && grep -Eq "^[[:space:]]*(export[[:space:]]+)?$1=" .env; }

started_pg=""
if [ -z "${DATABASE_URL:-}" ] && ! dotenv_has DATABASE_URL; then
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
status=0
while kill -0 "$pid" 2>/dev/null; do
    wait "$pid" || status=$?
done
exit "$status"
