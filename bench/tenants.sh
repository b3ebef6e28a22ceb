#!/usr/bin/env bash
# bench/tenants.sh: issue 29's rows (per-tenant accounting and database-time budgets), on their
# own: `flock -o /work/.machine.lock bench/tenants.sh`. Every figure is a ratio of two
# measurements taken side by side, interleaved BENCH_RUNS times; each row is the median of the
# per-run ratios.
#
#   1. The accounting's cost on /api/data (enterprise, wrk -c16): a server with
#      TENANT_ACCOUNTING=true against one with it off, same database, run one after the other.
#   2. Budgets: a cheap tenant of free (wrk -c3, cheap reads) beside an expensive one of the
#      same tier (wrk -c12, 200 ms statements) with free's db_time_ms_per_min set, against the
#      cheap tenant alone; and, for reference, beside it with no budget.
#
# The budget servers run with the tarpit (the default): a client that ignores Retry-After is
# held, not answered at wire speed. Settings: BENCH_DURATION (s per measurement, 5), BENCH_RUNS
# (2), BENCH_BUDGET_MS (free's db_time_ms_per_min, 60000: one connection's time). Writes
# bench/results/tenants-<date>.md.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DUR=${BENCH_DURATION:-5}
RUNS=${BENCH_RUNS:-2}
BUDGET_MS=${BENCH_BUDGET_MS:-60000}
WORK=$ROOT/build/bench-tenants
RESULTS=$ROOT/bench/results
BIN=$ROOT/build/bulkhead
. "$ROOT/bench/common.sh"
rm -rf "$WORK"
mkdir -p "$WORK" "$RESULTS"
chmod 755 "$WORK"
bench_need tenants wrk curl "$BIN"
bench_pg_start tenants

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
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
serve on TENANT_ACCOUNTING=true TARPIT=false
ON=$SURL
serve off TENANT_ACCOUNTING=false TARPIT=false
OFF=$SURL
ENT="X-Tenant-Tier: enterprise"
rps 2 16 2 "$ON/api/data?limit=10" "$ENT" >/dev/null # warm-up: connections, caches
rps 2 16 2 "$OFF/api/data?limit=10" "$ENT" >/dev/null
: >"$WORK/cost"
for run in $(seq "$RUNS"); do
    read -r a _ < <(rps 2 16 "$DUR" "$ON/api/data?limit=10" "$ENT")
    read -r b _ < <(rps 2 16 "$DUR" "$OFF/api/data?limit=10" "$ENT")
    echo "$a $b" >>"$WORK/cost"
done
COST_ON=$(awk '{ print $1 }' "$WORK/cost" | median)
COST_OFF=$(awk '{ print $2 }' "$WORK/cost" | median)
COST_R=$(awk '{ print ($2 > 0 ? $1 / $2 : 0) }' "$WORK/cost" | median)
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
cheap() { rps 1 3 "$DUR" "$1/api/data" "$FREE" "X-Tenant-Id: cheap-one"; }
heavy() { rps 1 12 "$((DUR + 2))" "$1/api/data?delay_ms=200" "$FREE" "X-Tenant-Id: heavy-one"; }
rps 1 12 2 "$BUD/api/data?delay_ms=200" "$FREE" "X-Tenant-Id: warm" >/dev/null
rps 1 12 2 "$NONE/api/data?delay_ms=200" "$FREE" "X-Tenant-Id: warm" >/dev/null
: >"$WORK/budget"
for run in $(seq "$RUNS"); do
    read -r alone _ < <(cheap "$BUD")
    heavy "$BUD" >"$WORK/heavy-b-$run" &
    hp=$!
    sleep 1
    read -r beside bad < <(cheap "$BUD")
    wait "$hp"
    heavy "$NONE" >"$WORK/heavy-n-$run" &
    hp=$!
    sleep 1
    read -r nobudget _ < <(cheap "$NONE")
    wait "$hp"
    read -r hb hbad <"$WORK/heavy-b-$run"
    read -r hn _ <"$WORK/heavy-n-$run"
    echo "$alone $beside $bad $nobudget $hb $hbad $hn" >>"$WORK/budget"
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
H_B=$(awk '{ print $5 }' "$WORK/budget" | median)
H_BAD=$(awk '{ print $6 }' "$WORK/budget" | median)
H_N=$(awk '{ print $7 }' "$WORK/budget" | median)

STAMP=$(date -u +%Y-%m-%dT%H%MZ)
OUT=$RESULTS/tenants-$STAMP.md
{
    echo "# bulkhead: per-tenant accounting and budgets, $STAMP"
    echo
    echo "Command: \`bench/tenants.sh\` (BENCH_DURATION=$DUR, BENCH_RUNS=$RUNS, medians of per-run ratios, interleaved)."
    echo
    echo "| measurement | bulkhead | reference | ratio | target |"
    echo "|---|---|---|---|---|"
    echo "| accounting's cost: /api/data enterprise c=16, TENANT_ACCOUNTING=true vs false | $COST_ON req/s | $COST_OFF req/s | $(printf '%.2f' "$COST_R") | >= 0.95: $(mark "$COST_R" 0.95) |"
    echo "| budgets: cheap tenant of free (c3) beside an expensive one (c12, 200 ms statements), db_time_ms_per_min=$BUDGET_MS, vs alone | $B_BESIDE req/s (non-2xx $B_BAD) | $B_ALONE req/s | $(printf '%.2f' "$B_R") | >= 0.9: $(mark "$B_R" 0.9) |"
    echo "| ... the same beside it with no budget (reference) | $B_NONE req/s | $B_ALONE req/s | $(printf '%.2f' "$N_R") | reported |"
    echo "| ... the expensive tenant: served + refused with the budget / without | $H_B req/s ($H_BAD refused) | $H_N req/s | | reported |"
    echo
    echo "Each run (req/s): accounting on, off:"
    echo
    sed 's/^/    /' "$WORK/cost"
    echo
    echo "Each run (req/s): cheap alone, beside with budget, its non-2xx, beside without budget, expensive with budget, its non-2xx, expensive without:"
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
