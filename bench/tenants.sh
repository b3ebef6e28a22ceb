#!/usr/bin/env bash
# bench/tenants.sh: issue 29's rows (per-tenant accounting and database-time budgets), on their
# own: `flock -o /work/.machine.lock bench/tenants.sh`. Every figure is a ratio of two
# measurements taken side by side, interleaved BENCH_RUNS times; each row is the median of the
# per-run ratios.
#
#   1. The accounting's cost on /api/data (enterprise, wrk -c16): a server with
#      TENANT_ACCOUNTING=true against one with it off, same database, alternated on, off, off,
#      on, ... (two measurements per run, the order swapped every run so that a drift of the
#      machine's speed does not favour one side).
#   2. Budgets: a cheap tenant of free (hey, a fixed BENCH_CHEAP_RPS of cheap reads: a tenant
#      that stays well inside the budget) beside an expensive one of the same tier (wrk -c12,
#      200 ms statements: alone it holds all five of free's connections, about 5 s of database
#      time a second) with free's db_time_ms_per_min set, against the cheap tenant alone; and,
#      for reference, the same beside it with no budget. The cheap tenant is measured only once
#      the expensive one is in debt (refused db_time_exhausted, read from /metrics/tenants):
#      the row measures what a budget is for, the cheap tenant served while the expensive one
#      is held to its budget, not the minute it takes to spend it.
#
# The accounting's cost is read as the server's CPU per request (from /proc), which the
# machine's noise moves far less than throughput; throughput is reported beside it.
#
# The budget servers run with the tarpit (the default): a client that ignores Retry-After is
# held, not answered at wire speed. Settings: BENCH_DURATION (s per measurement, 5), BENCH_RUNS
# (2), BENCH_BUDGET_MS (free's db_time_ms_per_min, 20000), BENCH_CHEAP_RPS (1500). Writes
# bench/results/tenants-<date>.md.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DUR=${BENCH_DURATION:-5}
RUNS=${BENCH_RUNS:-2}
BUDGET_MS=${BENCH_BUDGET_MS:-20000}
CHEAP_RPS=${BENCH_CHEAP_RPS:-1500}
WORK=$ROOT/build/bench-tenants
RESULTS=$ROOT/bench/results
BIN=$ROOT/build/bulkhead
. "$ROOT/bench/common.sh"
rm -rf "$WORK"
mkdir -p "$WORK" "$RESULTS"
chmod 755 "$WORK"
bench_need tenants wrk hey curl jq "$BIN"
bench_pg_start tenants

mark() { awk -v v="$1" -v t="$2" -v dir="${3:-ge}" 'BEGIN { ok = dir == "ge" ? v >= t : v <= t; print ok ? "met" : "**missed**" }'; }

# wrk -> "rps non2xx"
rps() { # threads conc seconds url headers...
    local t=$1 c=$2 d=$3 url=$4 h=()
    shift 4
    for x in "$@"; do h+=(-H "$x"); done
    wrk -t"$t" -c"$c" -d"${d}s" "${h[@]}" "$url" 2>&1 |
        awk '/Non-2xx/ { bad = $NF } /^Requests\/sec:/ { rps = $2 } END { printf "%.0f %d\n", rps, bad }'
}

# Start a server; its URL in SURL. name, then NAME=value settings.
serve() {
    local name=$1 port
    shift
    port=$(free_port)
    (cd "$WORK" && exec env DATABASE_URL="$DB" API_PORT="$port" API_BIND=127.0.0.1 \
        CAPACITY_CONTROL=false ACCESS_LOG=false "$@" "$BIN" >"$WORK/server-$name.log" 2>&1) &
    pids+=("$!")
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
    curl -fs "http://127.0.0.1:$port/health" >/dev/null ||
        { echo "tenants: server $name did not start (see $WORK/server-$name.log)" >&2; exit 1; }
    SURL="http://127.0.0.1:$port"
}

# free as built in, its rate limit lifted, with a budget (0: none).
tiers() { # budget_ms
    awk -v b="$1" '
        /^  "free": \{/ { infree = 1 }
        /^  \},?$/ { infree = 0 }
        infree && /"rate_limit":/ { sub(/[0-9]+/, "1000000"); sub(/$/, "\n    \"db_time_ms_per_min\": " b ",") }
        { print }' "$ROOT/config/tiers.json"
}

# 1. The accounting's cost.
serve off TENANT_ACCOUNTING=false TARPIT=false
OFF=$SURL
OFF_PID=${pids[-1]}
serve on TENANT_ACCOUNTING=true TARPIT=false
ON=$SURL
ON_PID=${pids[-1]}
# cpu_us PID: the process's CPU time so far (user + system, us).
cpu_us() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.0f\n", ($12 + $13) * 1000000 / hz }' "/proc/$1/stat"; }
# measure URL PID: "req/s us_per_request" of one wrk run (the server's CPU over the run).
measure() {
    local c0 c1 r
    c0=$(cpu_us "$2")
    read -r r _ < <(rps 2 16 "$DUR" "$1/api/data?limit=10" "$ENT")
    c1=$(cpu_us "$2")
    awk -v r="$r" -v c="$((c1 - c0))" -v d="$DUR" 'BEGIN { printf "%d %.2f\n", r, (r > 0 ? c / (r * d) : 0) }'
}
ENT="X-Tenant-Tier: enterprise"
rps 2 16 2 "$ON/api/data?limit=10" "$ENT" >/dev/null # warm-up: connections, caches
rps 2 16 2 "$OFF/api/data?limit=10" "$ENT" >/dev/null
: >"$WORK/cost"
for run in $(seq "$RUNS"); do
    if [ $((run % 2)) = 1 ]; then
        read -r a ac < <(measure "$ON" "$ON_PID")
        read -r b bc < <(measure "$OFF" "$OFF_PID")
    else
        read -r b bc < <(measure "$OFF" "$OFF_PID")
        read -r a ac < <(measure "$ON" "$ON_PID")
    fi
    echo "$a $b $ac $bc" >>"$WORK/cost"
done
COST_ON=$(awk '{ print $1 }' "$WORK/cost" | median)
COST_OFF=$(awk '{ print $2 }' "$WORK/cost" | median)
COST_R=$(awk '{ print ($2 > 0 ? $1 / $2 : 0) }' "$WORK/cost" | median)
CPU_ON=$(awk '{ print $3 }' "$WORK/cost" | median)
CPU_OFF=$(awk '{ print $4 }' "$WORK/cost" | median)
CPU_R=$(awk '{ print ($3 > 0 ? $4 / $3 : 0) }' "$WORK/cost" | median)
bench_cleanup_servers() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; pids=(); }
bench_cleanup_servers

# 2. Budgets: a cheap tenant beside an expensive one.
tiers "$BUDGET_MS" >"$WORK/tiers-budget.json"
tiers 0 >"$WORK/tiers-none.json"
serve budget TIERS_FILE="$WORK/tiers-budget.json"
BUD=$SURL
serve none TIERS_FILE="$WORK/tiers-none.json"
NONE=$SURL
FREE="X-Tenant-Tier: free"
# cheap URL: "2xx/s non2xx p99_ms" at a fixed CHEAP_RPS (hey: three workers, -q per worker).
cheap() {
    hey -c 3 -q $((CHEAP_RPS / 3)) -z "${DUR}s" -t 10 -H "$FREE" -H "X-Tenant-Id: cheap-one" \
        "$1/api/data" 2>&1 | awk -v d="$DUR" '
        /^  99% in / { p99 = $3 * 1000 }
        /^  \[[0-9]+\]/ { gsub(/[][]/, "", $1); if ($1 == 200) ok = $2; else bad += $2 }
        /^Error distribution:/ { e = 1; next }
        e && /^  \[[0-9]+\]/ { gsub(/[][]/, "", $1); bad += $1 }
        END { printf "%.0f %d %.2f\n", ok / d, bad, p99 }'
}
# heavy URL: the expensive tenant, in the background (its PID in HP) until heavy_stop.
heavy() {
    wrk -t1 -c12 -d600s -H "$FREE" -H "X-Tenant-Id: heavy-one" "$1/api/data?delay_ms=200" \
        >/dev/null 2>&1 &
    HP=$!
}
heavy_stop() { kill -TERM "$HP" 2>/dev/null; wait "$HP" 2>/dev/null; }
# field URL TENANT NAME: one number of a tenant of free from /metrics/tenants (0 if absent).
field() {
    curl -fs "$1/metrics/tenants?tier=free&limit=10" | jq -r --arg t "$2" --arg f "$3" \
        '[.tiers.free.tenants[] | select(.tenant == $t) | .[$f]] | first // 0'
}
# in_debt URL: wait (30 s at most) until the expensive tenant has been refused at least once.
in_debt() {
    local r0 i
    r0=$(field "$1" heavy-one refused)
    for i in $(seq 300); do
        [ "$(field "$1" heavy-one refused)" -gt "$r0" ] && return 0
        sleep 0.1
    done
    echo "tenants: the expensive tenant was never refused on the budget server (30 s)" >&2
    return 1
}
: >"$WORK/budget"
rps 1 4 2 "$BUD/api/data" "$FREE" "X-Tenant-Id: warm" >/dev/null # warm-up: connections
rps 1 4 2 "$NONE/api/data" "$FREE" "X-Tenant-Id: warm" >/dev/null
for run in $(seq "$RUNS"); do
    read -r alone _ alone_p99 < <(cheap "$BUD")
    heavy "$BUD"
    in_debt "$BUD"
    read -r beside bad beside_p99 < <(cheap "$BUD")
    hr=$(field "$BUD" heavy-one refused)
    heavy_stop
    heavy "$NONE"
    sleep 2 # its twelve statements under way on all five connections
    read -r nobudget _ none_p99 < <(cheap "$NONE")
    heavy_stop
    echo "$alone $beside $bad $nobudget $alone_p99 $beside_p99 $none_p99 $hr" >>"$WORK/budget"
done
# What each used in the last minute, as the budget server counted it.
curl -fs "$BUD/metrics/tenants?tier=free&limit=5" >"$WORK/who.json"
bench_cleanup_servers
B_ALONE=$(awk '{ print $1 }' "$WORK/budget" | median)
B_BESIDE=$(awk '{ print $2 }' "$WORK/budget" | median)
B_BAD=$(awk '{ print $3 }' "$WORK/budget" | sort -n | tail -1)
B_NONE=$(awk '{ print $4 }' "$WORK/budget" | median)
B_R=$(awk '{ print ($1 > 0 ? $2 / $1 : 0) }' "$WORK/budget" | median)
N_R=$(awk '{ print ($1 > 0 ? $4 / $1 : 0) }' "$WORK/budget" | median)
P_ALONE=$(awk '{ print $5 }' "$WORK/budget" | median)
P_BESIDE=$(awk '{ print $6 }' "$WORK/budget" | median)
P_NONE=$(awk '{ print $7 }' "$WORK/budget" | median)
H_REF=$(awk '{ print $8 }' "$WORK/budget" | sort -n | tail -1)

STAMP=$(date -u +%Y-%m-%dT%H%MZ)
OUT=$RESULTS/tenants-$STAMP.md
{
    echo "# bulkhead: per-tenant accounting and budgets, $STAMP"
    echo
    echo "Command: \`bench/tenants.sh\` (BENCH_DURATION=$DUR, BENCH_RUNS=$RUNS, medians of per-run ratios, interleaved)."
    echo
    echo "| measurement | bulkhead | reference | ratio | target |"
    echo "|---|---|---|---|---|"
    echo "| accounting's cost: /api/data enterprise c=16, server CPU per request, TENANT_ACCOUNTING=false / true | $CPU_ON us with it | $CPU_OFF us without | $(printf '%.2f' "$CPU_R") | reported (the judged row: instructions, bench/acctcost.sh) |"
    echo "| ... throughput, on / off (the machine's noise shows here more than the accounting) | $COST_ON req/s | $COST_OFF req/s | $(printf '%.2f' "$COST_R") | reported |"
    echo "| budgets: cheap tenant of free ($CHEAP_RPS req/s offered) beside an expensive one in debt (c12, 200 ms statements), db_time_ms_per_min=$BUDGET_MS, vs alone: 2xx/s, p99 | $B_BESIDE req/s (non-2xx $B_BAD), p99 $P_BESIDE ms | $B_ALONE req/s, p99 $P_ALONE ms | $(printf '%.2f' "$B_R") | >= 0.9: $(mark "$B_R" 0.9) |"
    echo "| ... the same beside it with no budget (reference) | $B_NONE req/s, p99 $P_NONE ms | $B_ALONE req/s, p99 $P_ALONE ms | $(printf '%.2f' "$N_R") | reported |"
    echo "| ... the expensive tenant with the budget: refused db_time_exhausted by the end (/metrics/tenants) | $H_REF | | | reported |"
    echo
    echo "Each run: req/s accounting on, off; server CPU per request (us) on, off:"
    echo
    sed 's/^/    /' "$WORK/cost"
    echo
    echo "Each run: cheap 2xx/s alone, beside with budget, its non-2xx, beside without budget; cheap p99 ms alone, with budget, without; the expensive tenant's refusals so far:"
    echo
    sed 's/^/    /' "$WORK/budget"
    echo
    echo "The budget server's /metrics/tenants?tier=free at the end:"
    echo
    echo '```'
    cat "$WORK/who.json"
    echo
    echo '```'
} >"$OUT"
cat "$OUT"
echo
echo "written to $OUT"
