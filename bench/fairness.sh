# bench/fairness.sh: the fairness rows of `make bench` (sourced by bench/run.sh, which provides
# free_port, wrk_run, median, ratio and the work folder).
#
# A second server runs free as built in but with its rate limit lifted, so only the bulkheads
# act (issue 13's setup). A quiet tenant (wrk -c3, cheap reads) is measured alone and beside a
# noisy tenant of the same tier sending 200 ms queries at concurrency 12 and 48, interleaved
# BENCH_RUNS times; each row is the median of the per-run ratios, with their spread. Each
# "beside" run is bracketed by two "alone" runs and compared with their mean, so that a drift
# of the shared machine's speed during the run does not read as unfairness (a single "alone"
# before it let the row swing 0.78-0.92 between runs of the same tree). Before every "alone" run the
# bench waits until free has no active tenant left (the noisy one's linger is over), so alone
# means alone. Last, what the newcomers' reserve costs a busy tenant alone: the noisy tenant's
# throughput with free's reserve against the same with tenant_reserve_pct 0 (live reload).
#
# section_costq (BENCH_SECTIONS "costq", issue 29 item 4): the queue's two orders side by side
# on one server, switched by live reload of free's fair_queue_cost: three cheap tenants (wrk
# -c3 each, cheap reads) and an expensive one (wrk -c12, 200 ms statements) of free, all at
# once in closed loops; each class's throughput (the cheap: summed) and p99 (the cheap: the
# worst of the three) under "requests" (0) and "cost" (1), interleaved BENCH_RUNS times,
# medians. BENCH_COSTQ_SHARE sets free's tenant_share_pct for it (an experiment: 100 turns the
# share off, so that only the order protects the cheap tenants).

fair_tiers() { # reserve_pct [fair_queue_cost [share_pct]] -> the built-in table, free's rate limit lifted
    awk -v r="$1" -v c="${2:-0}" -v sh="${3:-}" '
        /^  "free": \{/ { infree = 1 }
        /^  \},?$/ { infree = 0 }
        infree && /"fair_queue_cost":/ { next }
        infree && /"rate_limit":/ { sub(/[0-9]+/, "1000000"); sub(/$/, "\n    \"fair_queue_cost\": " c ",") }
        infree && /"tenant_reserve_pct":/ { sub(/[0-9]+/, r) }
        infree && sh != "" && /"tenant_share_pct":/ { sub(/[0-9]+/, sh) }
        { print }' "$ROOT/config/tiers.json"
}

# free's fairness.<key> from /metrics/bulkheads (free is the first tier of the table).
fair_metric() { # key
    curl -fs "$FURL/metrics/bulkheads" | grep -o '"free":{.*' | grep -o "\"$1\":[0-9]*" | head -1 |
        cut -d: -f2
}

# wait until free has n active tenants (bounded: 30 s).
fair_wait_active() { # n
    local i
    for i in $(seq 300); do
        [ "$(fair_metric activeTenants)" = "$1" ] && return 0
        sleep 0.1
    done
    echo "bench: free never had $1 active tenants" >&2
    return 1
}

fair_quiet() { wrk_run_t1 3 "$FURL/api/data" "X-Tenant-Tier: free" "X-Tenant-Id: quiet-one"; }

fair_noisy() { # concurrency seconds
    wrk -t1 -c"$1" -d"$2"s -H "X-Tenant-Tier: free" -H "X-Tenant-Id: noisy-one" \
        "$FURL/api/data?delay_ms=200" 2>&1 | awk '/^Requests\/sec:/ { printf "%.1f\n", $2 }'
}

section_fairness() {
    fair_tiers 10 >"$WORK/tiers-fair.json"
    local port
    port=$(free_port)
    (cd "$WORK" && DATABASE_URL=$DB API_PORT=$port API_BIND=127.0.0.1 TIERS_FILE=$WORK/tiers-fair.json \
        exec "$BIN" >"$WORK/server-fair.log" 2>&1) &
    FSRV=$!
    pids+=("$FSRV")
    FURL=http://127.0.0.1:$port
    for _ in $(seq 100); do curl -fs "$FURL/health" >/dev/null && break; sleep 0.1; done
    curl -fs "$FURL/health" >/dev/null ||
        { echo "bench: the fairness server did not start (see $WORK/server-fair.log)" >&2; return 1; }
    # Warm up: open every connection of free (connections are opened on first need and kept).
    fair_noisy 12 3 >/dev/null
    DUR_SAVE=$DUR
    DUR=3
    fair_quiet >/dev/null
    DUR=$DUR_SAVE
    : >"$WORK/fair_rows"
    for run in $(seq "$RUNS"); do
        for nc in 12 48; do
            fair_wait_active 0 || return 1
            read -r a_rps _ a_p99 _ < <(fair_quiet)
            fair_noisy "$nc" $((DUR + 2)) >"$WORK/noisy-$nc-$run" &
            local np=$!
            sleep 1
            read -r b_rps _ b_p99 b_bad < <(fair_quiet)
            wait "$np"
            fair_wait_active 0 || return 1
            read -r a2_rps _ a2_p99 _ < <(fair_quiet)
            a_rps=$(awk -v x="$a_rps" -v y="$a2_rps" 'BEGIN { printf "%.0f", (x + y) / 2 }')
            a_p99=$(awk -v x="$a_p99" -v y="$a2_p99" 'BEGIN { printf "%.2f", (x + y) / 2 }')
            echo "$nc $a_rps $a_p99 $b_rps $b_p99 $b_bad" >>"$WORK/fair_rows"
        done
        # The reserve's cost to a busy tenant alone: with it, then without (live reload).
        fair_wait_active 0 || return 1
        fair_noisy 12 "$DUR" >>"$WORK/fair_cost_with"
        fair_tiers 0 >"$WORK/tiers-fair.json"
        kill -HUP "$FSRV"
        for _ in $(seq 100); do
            [ "$(fair_metric workerReserve)" = 0 ] && break
            sleep 0.1
        done
        fair_wait_active 0 || return 1
        fair_noisy 12 "$DUR" >>"$WORK/fair_cost_without"
        fair_tiers 10 >"$WORK/tiers-fair.json"
        kill -HUP "$FSRV"
        for _ in $(seq 100); do
            [ "$(fair_metric workerReserve)" = 1 ] && break
            sleep 0.1
        done
    done
    kill -TERM "$FSRV" 2>/dev/null
    wait "$FSRV" 2>/dev/null
    local nc
    for nc in 12 48; do
        local rows
        rows=$(awk -v n="$nc" '$1 == n' "$WORK/fair_rows")
        eval "FAIR_A_RPS_$nc=$(echo "$rows" | awk '{ print $2 }' | median)"
        eval "FAIR_B_RPS_$nc=$(echo "$rows" | awk '{ print $4 }' | median)"
        eval "FAIR_A_P99_$nc=$(echo "$rows" | awk '{ print $3 }' | median)"
        eval "FAIR_B_P99_$nc=$(echo "$rows" | awk '{ print $5 }' | median)"
        eval "FAIR_B_BAD_$nc=$(echo "$rows" | awk '{ print $6 }' | sort -n | tail -1)"
        eval "FAIR_THR_$nc=$(echo "$rows" | awk '{ print ($2 > 0 ? $4 / $2 : 0) }' | median)"
        eval "FAIR_LAT_$nc=$(echo "$rows" | awk '{ print ($3 > 0 ? $5 / $3 : 0) }' | median)"
        eval "FAIR_THR_SPREAD_$nc=$(echo "$rows" | awk '{ printf "%.2f\n", ($2 > 0 ? $4 / $2 : 0) }' | spread)"
    done
    FAIR_COST_WITH=$(median <"$WORK/fair_cost_with")
    FAIR_COST_WITHOUT=$(median <"$WORK/fair_cost_without")
}

fairness_rows() {
    local nc
    for nc in 12 48; do
        local thr lat spr
        eval "thr=\$FAIR_THR_$nc lat=\$FAIR_LAT_$nc spr=\$FAIR_THR_SPREAD_$nc"
        eval "echo \"| fairness: quiet tenant (wrk -c3, cheap reads) beside a noisy one of free (wrk -c$nc, 200 ms queries) vs alone (the mean of the runs just before and after): throughput | \$FAIR_B_RPS_$nc req/s (non-2xx \$FAIR_B_BAD_$nc) | \$FAIR_A_RPS_$nc req/s | $(printf '%.2f' "$thr") (runs $spr) | >= 0.9: $(mark "$thr" 0.9) |\""
        eval "echo \"| ... and its p99 | \$FAIR_B_P99_$nc ms | \$FAIR_A_P99_$nc ms | $(printf '%.2f' "$lat") | <= 3: $(mark "$lat" 3 le) |\""
    done
    echo "| the reserve's cost: a busy tenant alone (c12, 200 ms queries) with free's reserve vs none | $FAIR_COST_WITH req/s | $FAIR_COST_WITHOUT req/s | $(ratio "$FAIR_COST_WITH" "$FAIR_COST_WITHOUT") | reported |"
}

# Start the fairness server on $WORK/tiers-fair.json (FSRV, FURL).
fair_serve() {
    local port
    port=$(free_port)
    (cd "$WORK" && DATABASE_URL=$DB API_PORT=$port API_BIND=127.0.0.1 TIERS_FILE=$WORK/tiers-fair.json \
        exec "$BIN" >"$WORK/server-fair.log" 2>&1) &
    FSRV=$!
    pids+=("$FSRV")
    FURL=http://127.0.0.1:$port
    for _ in $(seq 100); do curl -fs "$FURL/health" >/dev/null && break; sleep 0.1; done
    curl -fs "$FURL/health" >/dev/null ||
        { echo "bench: the fairness server did not start (see $WORK/server-fair.log)" >&2; return 1; }
}

# wrk with latency for one tenant of free -> "rps p99_ms non2xx" in file out.
costq_wrk() { # out conc seconds tenant path
    wrk -t1 -c"$2" -d"$3"s --latency -H "X-Tenant-Tier: free" -H "X-Tenant-Id: $4" "$FURL$5" 2>&1 |
        awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /^ +99%/ { p99 = ms($2) } /Non-2xx/ { bad = $NF } /^Requests\/sec:/ { rps = $2 }
        END { printf "%.0f %.3f %d\n", rps, p99, bad }' >"$1"
}

# One measurement with free's order set to cost (0: requests, 1: cost): appends
# "cost cheap_rps cheap_p99 cheap_bad heavy_rps heavy_p99 heavy_bad" to $WORK/costq_rows.
costq_once() { # cost
    fair_tiers 10 "$1" "${BENCH_COSTQ_SHARE:-}" >"$WORK/tiers-fair.json"
    kill -HUP "$FSRV"
    for _ in $(seq 100); do
        [ "$(fair_metric queueByCost)" = "$1" ] && break
        sleep 0.1
    done
    [ "$(fair_metric queueByCost)" = "$1" ] || { echo "bench: free's fair_queue_cost never became $1" >&2; return 1; }
    fair_wait_active 0 || return 1
    costq_wrk "$WORK/cq-heavy" 12 $((DUR + 2)) costq-heavy "/api/data?delay_ms=200" &
    local hp=$! cp=() i
    sleep 1
    for i in 1 2 3; do
        costq_wrk "$WORK/cq-cheap-$i" 3 "$DUR" "costq-cheap-$i" /api/data &
        cp+=($!)
    done
    wait "${cp[@]}" "$hp"
    local cheap heavy
    cheap=$(cat "$WORK"/cq-cheap-[123] | awk '{ rps += $1; if ($2 > p99) p99 = $2; bad += $3 } END { printf "%d %.3f %d", rps, p99, bad }')
    heavy=$(cat "$WORK/cq-heavy")
    echo "$1 $cheap $heavy" >>"$WORK/costq_rows"
}

section_costq() {
    fair_tiers 10 0 "${BENCH_COSTQ_SHARE:-}" >"$WORK/tiers-fair.json"
    fair_serve || return 1
    # Warm up: open every connection of free.
    costq_wrk "$WORK/cq-warm" 12 3 costq-warm "/api/data?delay_ms=200"
    : >"$WORK/costq_rows"
    local run
    for run in $(seq "$RUNS"); do
        # Which order goes first alternates, so neither always follows the other's tail.
        if [ $((run % 2)) = 1 ]; then
            costq_once 0 && costq_once 1 || return 1
        else
            costq_once 1 && costq_once 0 || return 1
        fi
    done
    kill -TERM "$FSRV" 2>/dev/null
    wait "$FSRV" 2>/dev/null
    local c col name
    for c in 0 1; do
        col=2
        for name in CHEAP_RPS CHEAP_P99 CHEAP_BAD HEAVY_RPS HEAVY_P99 HEAVY_BAD; do
            eval "COSTQ_${name}_$c=$(awk -v c="$c" -v k="$col" '$1 == c { print $k }' "$WORK/costq_rows" | median)"
            col=$((col + 1))
        done
    done
}

costq_rows() {
    local c label
    for c in 0 1; do
        label=$([ "$c" = 0 ] && echo "requests (round-robin, fair_queue_cost 0)" || echo "cost (least recent database time first, fair_queue_cost 1)")
        [ -n "${BENCH_COSTQ_SHARE:-}" ] && label+=", free's tenant_share_pct $BENCH_COSTQ_SHARE"
        eval "echo \"| fair queue by $label: three cheap tenants of free (wrk -c3 each, cheap reads) beside an expensive one (wrk -c12, 200 ms statements): the cheap, summed / worst p99 | \$COSTQ_CHEAP_RPS_$c req/s (non-2xx \$COSTQ_CHEAP_BAD_$c), p99 \$COSTQ_CHEAP_P99_$c ms | | | reported |\""
        eval "echo \"| ... the expensive one | \$COSTQ_HEAVY_RPS_$c req/s (non-2xx \$COSTQ_HEAVY_BAD_$c), p99 \$COSTQ_HEAVY_P99_$c ms | | | reported |\""
    done
}
