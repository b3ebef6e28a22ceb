# bench/common.sh: what the bench scripts share (sourced by bench/run.sh and bench/evloop.sh,
# from the repository root, with WORK set): a free port, and the private PostgreSQL with the
# bench database.

# A random port nobody listens on (other test servers may share this machine).
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768-)
        [ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] && { echo "$p"; return; }
    done
}

# Start the private PostgreSQL in $WORK/pg (pg.sh creates "bulkhead" and applies init-db.sql:
# schema and rows); sets DB (its URL) and PG_PORT, or exits with the reason. $1 names the caller.
bench_pg_start() {
    DB=""
    for _ in 1 2 3; do
        PG_PORT=$(free_port)
        DB=$(scripts/pg.sh start "$WORK/pg" "$PG_PORT" 2>"$WORK/pg-start.log") && break
        DB=""
    done
    [ -n "$DB" ] || { cat "$WORK/pg-start.log" >&2; echo "$1: PostgreSQL did not start" >&2; exit 1; }
}
