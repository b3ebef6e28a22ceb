#!/usr/bin/env bash
# bench/acctcost.sh: what per-tenant accounting (TENANT_ACCOUNTING) costs on /api/data, counted
# in instructions rather than timed: `flock -o /work/.machine.lock bench/acctcost.sh`.
#
# Timing cannot resolve 5 % on this shared 2-CPU machine: two 5 s runs of the same server differ
# by 10-30 % in throughput and by 15-40 % in CPU per request (bench/tenants.sh's row, kept as a
# report). Instructions do not depend on the machine's other load, and this VM has no hardware
# counters (perf: instructions <not supported>), so the server runs under valgrind's callgrind:
# after a warm-up its counters are zeroed, BENCH_ACCT_N requests are sent one at a time (hey -c1:
# no batching in the event loop, so each request costs the same path), the counters are dumped
# and divided by the requests; an idle window as long as the load's is counted the same way and
# subtracted (timers, the janitor). Accounting on and off, interleaved BENCH_RUNS times, medians.
# A tenant per request (BENCH_ACCT_TENANTS=fresh) or one tenant (one) for the accounting's table;
# both by default. Writes bench/results/acctcost-<date>.md.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
N=${BENCH_ACCT_N:-2000}
RUNS=${BENCH_RUNS:-2}
WORK=$ROOT/build/bench-acctcost
RESULTS=$ROOT/bench/results
BIN=$ROOT/build/bulkhead
. "$ROOT/bench/common.sh"
rm -rf "$WORK"
mkdir -p "$WORK" "$RESULTS"
chmod 755 "$WORK"
bench_need acctcost valgrind callgrind_control hey curl "$BIN"
bench_pg_start acctcost


# serve name NAME=value...: a server under callgrind; its URL in SURL, its PID in SPID.
serve() {
    local name=$1 port
    shift
    port=$(free_port)
    (cd "$WORK" && exec env DATABASE_URL="$DB" API_PORT="$port" API_BIND=127.0.0.1 \
        CAPACITY_CONTROL=false ACCESS_LOG=false TARPIT=false FLEET=false "$@" \
        valgrind --tool=callgrind --callgrind-out-file="$WORK/cg-$name.%p" "$BIN" \
        >"$WORK/server-$name.log" 2>&1) &
    SPID=$!
    pids+=("$SPID")
    for _ in $(seq 600); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
    curl -fs "http://127.0.0.1:$port/health" >/dev/null ||
        { echo "acctcost: server $name did not start (see $WORK/server-$name.log)" >&2; exit 1; }
    SURL="http://127.0.0.1:$port"
}

# ir PID: zero the counters, run the rest of the command line, dump; print the instructions.
ir() {
    local pid=$1 f
    shift
    callgrind_control -z "$pid" >/dev/null
    "$@" >/dev/null 2>&1
    callgrind_control -d "$pid" >/dev/null
    f=$(ls -t "$WORK"/cg-*."$pid".* 2>/dev/null | head -1)
    awk '/^(summary|totals):/ { print $2; exit }' "$f"
}

# load URL MODE: N requests of /api/data as enterprise, one at a time; MODE one or fresh.
load() {
    if [ "$2" = one ]; then
        hey -n "$N" -c 1 -t 30 -H "X-Tenant-Tier: enterprise" -H "X-Tenant-Id: acme" "$1/api/data?limit=10"
    else
        # a fresh tenant per request: hey sends one header set, so one curl with a group per request.
        local i
        for i in $(seq "$N"); do
            printf 'url = "%s/api/data?limit=10"\nheader = "X-Tenant-Tier: enterprise"\nheader = "X-Tenant-Id: t%s-%s"\noutput = "/dev/null"\nsilent\nnext\n' "$1" "$RANDOM" "$i"
        done >"$WORK/fresh.cfg"
        curl -K "$WORK/fresh.cfg"
    fi
}

serve on TENANT_ACCOUNTING=true
ON=$SURL ON_PID=$SPID
serve off TENANT_ACCOUNTING=false
OFF=$SURL OFF_PID=$SPID
for u in "$ON" "$OFF"; do hey -n 200 -c 1 -H "X-Tenant-Tier: enterprise" "$u/api/data?limit=10" >/dev/null; done

: >"$WORK/rows"
for run in $(seq "$RUNS"); do
    for mode in one fresh; do
        for side in on off; do
            if [ "$side" = on ]; then url=$ON pid=$ON_PID; else url=$OFF pid=$OFF_PID; fi
            t0=$(date +%s.%N)
            busy=$(ir "$pid" load "$url" "$mode")
            t1=$(date +%s.%N)
            idle=$(ir "$pid" sleep "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')")
            echo "$run $mode $side $busy $idle" >>"$WORK/rows"
        done
    done
done
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done

per() { # mode side -> median instructions per request
    awk -v m="$1" -v s="$2" -v n="$N" '$2 == m && $3 == s { printf "%.0f\n", ($4 - $5) / n }' "$WORK/rows" | median '%.0f'
}
STAMP=$(date -u +%Y-%m-%dT%H%MZ)
OUT=$RESULTS/acctcost-$STAMP.md
{
    echo "# bulkhead: the per-tenant accounting's cost in instructions, $STAMP"
    echo
    echo "Command: \`bench/acctcost.sh\` (callgrind; $N requests of /api/data?limit=10 as enterprise, one at a time, per measurement; $RUNS interleaved runs, medians; an idle window of the same length subtracted)."
    echo
    echo "| tenants | instructions per request, accounting on | off | on / off | target |"
    echo "|---|---|---|---|---|"
    for mode in one fresh; do
        a=$(per "$mode" on)
        b=$(per "$mode" off)
        r=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')
        ok=$(awk -v r="$r" 'BEGIN { print (r <= 1.05 ? "met" : "**missed**") }')
        label=$([ "$mode" = one ] && echo "one tenant" || echo "a fresh tenant per request")
        echo "| $label | $a | $b | $r | <= 1.05: $ok |"
    done
    echo
    echo "Each measurement: run, tenants, accounting, instructions under load, instructions in the idle window:"
    echo
    sed 's/^/    /' "$WORK/rows"
} >"$OUT"
cat "$OUT"
echo
echo "written to $OUT"
