# bench/shared.sh: the shared rate limit's cost (issue 28, item 6's third row), sourced by
# bench/run.sh, which provides free_port, median, ratio, mark, pids, $DB, $BIN, $URL (the
# in-memory instance) and $WORK.
#
# A second instance on the same database uses RATE_LIMIT_BACKEND=redis with a private
# redis-server. The fresh-tenant free storm (cheap reads, a new tenant per request, each
# within its own limit: wrk -c50, bench/storms.sh's cheapfresh.lua) is aimed at each instance
# in turn, BENCH_RUNS times interleaved; the row is the median of the per-run ratios of 2xx/s,
# Redis over memory. Redis's own count of the commands it ran during each Redis run gives the
# operations per second one instance costs it at that rate.

shared_start() {
    REDIS_PORT=$(free_port)
    mkdir -p "$WORK/redis"
    /usr/bin/redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$WORK/redis" --daemonize no >"$WORK/redis/redis.log" 2>&1 &
    pids+=($!)
    RS_PORT=$(free_port)
    (cd "$WORK" && DATABASE_URL=$DB API_PORT=$RS_PORT API_BIND=127.0.0.1 \
        RATE_LIMIT_BACKEND=redis REDIS_URL=redis://127.0.0.1:$REDIS_PORT \
        exec "$BIN" >"$WORK/server-redis.log" 2>&1) &
    RSRV=$!
    pids+=("$RSRV")
    RURL=http://127.0.0.1:$RS_PORT
    for _ in $(seq 100); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && curl -fs "$RURL/health" >/dev/null && return 0
        sleep 0.1
    done
    echo "bench: the Redis-backed instance did not start (see $WORK/server-redis.log)" >&2
    return 1
}

# The storm at base for DUR s: "2xx_per_s" (non-2xx taken out of wrk's rate).
shared_storm() {
    wrk -t1 -c50 -d"${DUR}s" -s "$WORK/sharedfresh.lua" "$1" 2>&1 | awk '
    / requests in / { n = $1 } /Non-2xx/ { bad = $NF } /^Requests\/sec:/ { r = $2 }
    END { printf "%.0f\n", (n > 0 ? r * (n - bad) / n : 0) }'
}

redis_cmds() { redis-cli -p "$REDIS_PORT" info stats | awk -F: '/^total_commands_processed/ { print $2 + 0 }'; }
redis_cpu_ms() { redis-cli -p "$REDIS_PORT" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ { t += $2 } END { printf "%.0f\n", t * 1000 }'; }
redis_metric() { curl -fs "$RURL/metrics" | awk -v m="$1" '$1 == m { printf "%.0f\n", $2 }'; }
HITS='bulkhead_ratelimit_backend_hits_total{result="counted"}'

# One storm at the in-memory instance: mem (2xx/s), m0 and m1 (its CPU seconds around it).
shared_mem() {
    free_drained
    m0=$(cpu_s "$SRV")
    mem=$(shared_storm "$URL")
    m1=$(cpu_s "$SRV")
}

# One storm at the Redis-backed instance: red, r0/r1 (CPU), and Redis's and the instance's
# counters around it.
shared_redis() {
    URL=$RURL free_drained
    r0=$(cpu_s "$RSRV")
    c0=$(redis_cmds) u0=$(redis_cpu_ms)
    b0=$(redis_metric bulkhead_ratelimit_backend_batches_total)
    w0=$(redis_metric bulkhead_ratelimit_backend_waits_total)
    h0=$(redis_metric "$HITS")
    red=$(shared_storm "$RURL")
    r1=$(cpu_s "$RSRV")
    c1=$(redis_cmds) u1=$(redis_cpu_ms)
    b1=$(redis_metric bulkhead_ratelimit_backend_batches_total)
    w1=$(redis_metric bulkhead_ratelimit_backend_waits_total)
    h1=$(redis_metric "$HITS")
}

# One line per run in shared_rows: "mem_2xx_s redis_2xx_s redis_cmds_s batches_s waits
# hits_s redis_cpu_ms_per_s mem_server_us_per_req redis_server_us_per_req".
section_shared() {
    shared_start || return 1
    storm_lua "$WORK/sharedfresh.lua" "/api/data"
    : >"$WORK/shared_rows"
    local d=$DUR
    DUR=3 # warm-up: both instances' pools open, Redis's script loaded
    shared_storm "$URL" >/dev/null
    shared_storm "$RURL" >/dev/null
    DUR=$d
    local run
    for run in $(seq "$RUNS"); do
        # Memory first in odd runs, Redis first in even ones: neither always follows the other.
        [ $((run % 2)) = 1 ] && shared_mem
        shared_redis
        [ $((run % 2)) = 0 ] && shared_mem
        echo "$mem $red $(((c1 - c0) / DUR)) $(((b1 - b0) / DUR)) $((w1 - w0))" \
            "$(((h1 - h0) / DUR)) $(((u1 - u0) / DUR))" \
            "$(awk -v a="$m0" -v b="$m1" -v n="$mem" -v d="$DUR" 'BEGIN { printf "%.0f", (n > 0 ? (b - a) * 1e6 / (n * d) : 0) }')" \
            "$(awk -v a="$r0" -v b="$r1" -v n="$red" -v d="$DUR" 'BEGIN { printf "%.0f", (n > 0 ? (b - a) * 1e6 / (n * d) : 0) }')" \
            >>"$WORK/shared_rows"
    done
}

shared_col() { awk -v c="$1" '{ print $c }' "$WORK/shared_rows" | median; }

shared_rows() {
    local r
    r=$(awk '{ print ($1 > 0 ? $2 / $1 : 0) }' "$WORK/shared_rows" | median)
    r=$(printf '%.2f' "$r")
    echo "| shared rate limit: the fresh-tenant free storm (wrk -c50) through RATE_LIMIT_BACKEND=redis vs memory, 2xx/s | $(shared_col 2) req/s | $(shared_col 1) req/s | $r | >= 0.9: $(mark "$r" 0.9) |"
    echo "| ... what it cost Redis: commands/s (each EVALSHA and the GET, SET and TIME it runs), batches/s (round trips), hits counted/s, Redis CPU ms per s, requests that waited | $(shared_col 3) commands/s, $(shared_col 4) batches/s, $(shared_col 6) hits/s, $(shared_col 7) ms/s CPU, $(shared_col 5) waits | | | reported |"
    echo "| ... the server's CPU per request (utime + stime over 2xx), redis vs memory | $(shared_col 9) us | $(shared_col 8) us | | reported |"
}
