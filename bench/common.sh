# bench/common.sh: what the bench scripts share (sourced by bench/run.sh and bench/evloop.sh,
# from the repository root, with WORK set): the tool check, stopping what they started at exit,
# a free port, and the private PostgreSQL with the bench database.

# Exit with the missing one unless every tool (a command or an executable path) is there.
# $1 names the caller.
bench_need() {
    local who=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || [ -x "$tool" ] || { echo "$who: missing $tool" >&2; exit 2; }
    done
}

# Processes to stop at exit (append their PIDs), and the private PostgreSQL with them.
pids=()
bench_cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    scripts/pg.sh stop "$WORK/pg" >/dev/null 2>&1
}
trap bench_cleanup EXIT

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
