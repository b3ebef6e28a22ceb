#!/usr/bin/env bash
# bench/evloop.sh: issue 17's measurement. bulkhead's GET /api/data (enterprise, page of 10),
# the event-loop probe build/bench/evloop (the same statement, bench/evloop.c) and pgbench
# running that statement prepared, side by side on one private PostgreSQL, interleaved: at each
# concurrency, RUNS rounds of (bulkhead, each probe variant, pgbench). For each: req/s,
# the server's CPU per request (utime + stime of its process over the requests it served) and
# pgbench's client CPU per transaction. Prints the medians as a markdown table.
#
# Run it alone on the machine: flock -o /work/.machine.lock bench/evloop.sh
# Settings: EVLOOP_DURATION (s per measurement, 10), EVLOOP_RUNS (3), EVLOOP_CONC ("16 64"),
# EVLOOP_VARIANTS: the probes to run, each THREADSxCONNS (connections per thread) or
# THREADSxCONNSpDEPTH (libpq pipeline mode, up to DEPTH statements per connection); default "2x8".
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DUR=${EVLOOP_DURATION:-10}
RUNS=${EVLOOP_RUNS:-3}
CONCS=${EVLOOP_CONC:-16 64}
VARIANTS=${EVLOOP_VARIANTS:-2x8}
WORK=$ROOT/build/evloop-work
BIN=$ROOT/build/bulkhead
PROBE=$ROOT/build/bench/evloop
PGBIN=/usr/lib/postgresql/15/bin
. "$ROOT/bench/common.sh"
rm -rf "$WORK"
mkdir -p "$WORK"
chmod 755 "$WORK"

bench_need evloop.sh wrk "$PGBIN/pgbench" "$BIN" "$PROBE"

# The database as bench/run.sh makes it.
bench_pg_start evloop.sh

API_PORT=$(free_port)
(cd "$WORK" && DATABASE_URL=$DB API_PORT=$API_PORT API_BIND=127.0.0.1 exec "$BIN" >"$WORK/server.log" 2>&1) &
SRV=$!
pids+=("$SRV")
URL=http://127.0.0.1:$API_PORT
declare -A PID_OF URL_OF
PID_OF[bulkhead]=$SRV
URL_OF[bulkhead]=$URL
NAMES=bulkhead
for v in $VARIANTS; do
    [[ $v =~ ^([0-9]+)x([0-9]+)(p([0-9]+))?$ ]] || { echo "evloop.sh: bad variant $v" >&2; exit 2; }
    port=$(free_port)
    "$PROBE" -p "${BASH_REMATCH[4]:-1}" "$port" "$DB" "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" \
        2>"$WORK/log-ev$v.txt" &
    pids+=($!)
    PID_OF[ev$v]=$!
    URL_OF[ev$v]=http://127.0.0.1:$port
    NAMES+=" ev$v"
done
up() { curl -fs "$1/health" >/dev/null; }
for name in $NAMES; do
    for _ in $(seq 100); do up "${URL_OF[$name]}" && break; sleep 0.1; done
    up "${URL_OF[$name]}" || { echo "evloop.sh: $name does not answer" >&2; exit 1; }
done
EURL=${URL_OF[ev${VARIANTS%% *}]}

cat >"$WORK/query.sql" <<'SQL'
SELECT coalesce(json_agg(r ORDER BY r.id), '[]')::text, max(r.id), count(*) FROM (SELECT id, tier, tenant, payload, created_at FROM tenant_data WHERE tier = 'enterprise' AND id > 0 ORDER BY id LIMIT 10) r;
SQL

# The two servers must send the same body (their heads are kept in WORK/head-*).
curl -fs -D "$WORK/head-bulkhead" -H "X-Tenant-Tier: enterprise" "$URL/api/data?limit=10" >"$WORK/body-bulkhead"
curl -fs -D "$WORK/head-evloop" "$EURL/api/data" >"$WORK/body-evloop"
cmp -s "$WORK/body-bulkhead" "$WORK/body-evloop" \
    || echo "evloop.sh: warning: the bodies differ ($(wc -c <"$WORK/body-bulkhead") vs $(wc -c <"$WORK/body-evloop") bytes)" >&2

CLK=$(getconf CLK_TCK)
cpu_s() { awk -v clk="$CLK" '{ printf "%.2f\n", ($14 + $15) / clk }' "/proc/$1/stat"; }

# wrk -> "requests non2xx"
wrk_run() { # conc url headers...
    local c=$1 url=$2
    shift 2
    local h=()
    for x in "$@"; do h+=(-H "$x"); done
    wrk -t2 -c"$c" -d"${DUR}s" "${h[@]}" "$url" 2>&1 | awk '
        / requests in / { n = $1 } /Non-2xx/ { bad = $NF } /Socket errors/ { err = 1 }
        END { printf "%d %d\n", n, bad + err }'
}

# One server's measurement: appends "rps us_cpu_per_req non2xx" to WORK/<name>-<conc>.
measure() { # name pid conc url headers...
    local name=$1 pid=$2 c=$3 c0 c1 n bad
    shift 3
    c0=$(cpu_s "$pid")
    read -r n bad < <(wrk_run "$c" "$@")
    c1=$(cpu_s "$pid")
    awk -v n="$n" -v d="$DUR" -v c0="$c0" -v c1="$c1" -v bad="$bad" 'BEGIN {
        printf "%.0f %.1f %d\n", n / d, (n > 0 ? (c1 - c0) * 1e6 / n : 0), bad }' >>"$WORK/$name-$c"
}

# pgbench: appends "tps us_client_cpu_per_tx" to WORK/pgbench-<conc>.
pgbench_measure() { # conc
    local c=$1 t tps
    t=$({ TIMEFORMAT='%U %S'; time "$PGBIN/pgbench" -n -M prepared -c "$c" -j 2 -T "$DUR" \
        -f "$WORK/query.sql" "$DB" >"$WORK/pg_one" 2>&1; } 2>&1)
    tps=$(awk '/^tps = / { printf "%.0f\n", $3 }' "$WORK/pg_one")
    awk -v tps="${tps:-0}" -v t="$t" -v d="$DUR" 'BEGIN { split(t, u, " ");
        printf "%d %.1f\n", tps, (tps > 0 ? (u[1] + u[2]) * 1e6 / (tps * d) : 0) }' >>"$WORK/pgbench-$c"
}

one_round() { # conc
    local c=$1
    measure bulkhead "$SRV" "$c" "$URL/api/data?limit=10" "X-Tenant-Tier: enterprise"
    for name in $NAMES; do
        [ "$name" = bulkhead ] || measure "$name" "${PID_OF[$name]}" "$c" "${URL_OF[$name]}/api/data"
    done
    pgbench_measure "$c"
}

col() { cut -d' ' -f"$2" "$WORK/$1" | median '%.6g'; }

# Warm up: the pools' connections, the caches, every process faulted in.
DUR_SAVE=$DUR
DUR=3
for c in $CONCS; do one_round "$c"; done
for name in $NAMES pgbench; do rm -f "$WORK/$name"-*; done
DUR=$DUR_SAVE

echo "evloop.sh: $RUNS interleaved rounds of $DUR s at concurrency $CONCS" >&2
for r in $(seq "$RUNS"); do
    for c in $CONCS; do one_round "$c"; done
    echo "evloop.sh: round $r done" >&2
done

label() {
    case $1 in
    bulkhead) echo "bulkhead /api/data?limit=10 (enterprise)" ;;
    *p*) echo "$1" | sed -E 's/^ev([0-9]+)x([0-9]+)p([0-9]+)$/probe, \1 threads x \2 connections, pipeline depth \3/' ;;
    *) echo "$1" | sed -E 's/^ev([0-9]+)x([0-9]+)$/probe, \1 threads x \2 connections/' ;;
    esac
}
echo
echo "Medians of $RUNS interleaved runs of $DUR s; $(nproc) CPUs shared by wrk (2 threads), PostgreSQL and the server."
echo
echo "| c | server | req/s | ratio to pgbench (of medians / median of each round's) | server CPU per request | non-2xx (max) | pgbench tps | pgbench client CPU per tx |"
echo "|---|---|---|---|---|---|---|---|"
for c in $CONCS; do
    pgt=$(col "pgbench-$c" 1)
    pgcpu=$(col "pgbench-$c" 2)
    for name in $NAMES; do
        rps=$(col "$name-$c" 1)
        cpu=$(col "$name-$c" 2)
        bad=$(cut -d' ' -f3 "$WORK/$name-$c" | sort -n | tail -1)
        ratio=$(awk -v a="$rps" -v b="$pgt" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
        # The noise moves both sides of a round together: the paired ratio is the steadier one.
        paired=$(paste -d' ' "$WORK/$name-$c" "$WORK/pgbench-$c" | awk '{ print ($4 > 0 ? $1 / $4 : 0) }' \
            | median '%.6g' | awk '{ printf "%.2f", $1 }')
        echo "| $c | $(label "$name") | $rps | $ratio / $paired | $cpu us | $bad | $pgt | $pgcpu us |"
    done
done
echo
echo "Every run (req/s, us CPU per request, non-2xx; pgbench: tps, us client CPU per tx):"
for c in $CONCS; do
    for name in $NAMES pgbench; do
        echo "  c=$c $name: $(paste -sd ';' "$WORK/$name-$c" | sed 's/;/; /g')"
    done
done
