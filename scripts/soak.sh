#!/bin/bash
# soak.sh: `make soak`. Runs the server under mixed load on every tier for SOAK_SECONDS
# (default 600) with periodic faults (connection kills, bad input, a PostgreSQL stop/start and a
# crash restart), then reports errors by tier, acknowledged writes, and the server's RSS growth,
# descriptors and threads (tests/soak/soak.c). Standalone: it starts its own PostgreSQL
# (scripts/pg.sh) and its own server. Exit status 0 when every check passed; the report is also
# kept in build/soak-work/report.txt.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
export BH_ROOT=$ROOT
export SOAK_SECONDS=${SOAK_SECONDS:-600}
export BULKHEAD_BIN=${BULKHEAD_BIN:-$BUILD/bulkhead}
WORK=$ROOT/build/soak-work
for bin in "$BULKHEAD_BIN" "$BUILD/tests/soak/soak"; do
    [ -x "$bin" ] || { echo "soak.sh: $bin is missing (run: make soak)" >&2; exit 2; }
done

[ -f "$WORK/pg/data/postmaster.pid" ] && scripts/pg.sh stop "$WORK/pg" >/dev/null 2>&1
rm -rf "$WORK"
mkdir -p "$WORK"
chmod 755 "$WORK"
export BH_TEST_WORK=$WORK

stop_pg() { scripts/pg.sh stop "$WORK/pg" >/dev/null 2>&1; }
trap stop_pg EXIT

started=""
for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768-)
    if scripts/pg.sh start "$WORK/pg" "$port" >"$WORK/pg-start.log" 2>&1; then
        started=$port
        break
    fi
done
[ -n "$started" ] || { cat "$WORK/pg-start.log" >&2; echo "soak.sh: PostgreSQL did not start" >&2; exit 1; }

echo "== soak: $SOAK_SECONDS s against $BULKHEAD_BIN, PostgreSQL on port $started"
SOAK_PG_DIR=$WORK/pg SOAK_PG_PORT=$started "$BUILD/tests/soak/soak" | tee "$WORK/report.txt"
exit "${PIPESTATUS[0]}"
