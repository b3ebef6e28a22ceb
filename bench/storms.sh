# bench/storms.sh: the isolation rows measured against a sink (sourced by bench/run.sh, which
# provides free_port, wrk_run, median, ratio, mark, pids, the server at $URL and $WORK).
#
# A storm is aimed once at a sink (nginx with two workers answering 503 at once) and once at
# bulkhead's free tier, and enterprise (wrk -t1 -c4, the seed's read) is measured beside each,
# in one run. The sink figure is what the storm itself costs the shared CPUs (its load
# generator, its connections); enterprise beside bulkhead / beside the sink is what bulkhead
# loses on its own: 1.0 is the physical limit. Interleaved BENCH_RUNS times; medians of the
# per-run ratios.
#
# Storms (issue 16): a fixed 2,000 req/s of one tenant (hey -c50 -q40, all 429); one tenant in
# a closed loop at full speed (wrk -c50, all 429); slow queries from a fresh tenant per request
# (wrk -c100, delay_ms=1000: 10 run, 20 wait, the rest refused at once and retried at once).
# And (issue 15) cheap reads from a fresh tenant per request at full speed (wrk -c50): every
# one inside its own rate limit, so only priority over the shared capacity protects enterprise.
# Then (issue 31) the light load that follows a storm, against a server that saw none.

sink_start() {
    SINK_PORT=$(free_port)
    mkdir -p "$WORK/sink"
    cat >"$WORK/sink/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $WORK/sink/nginx.pid;
error_log $WORK/sink/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$SINK_PORT;
        location / { return 503 '{"error":"sink"}'; }
    }
}
CONF
    /usr/sbin/nginx -c "$WORK/sink/nginx.conf" -p "$WORK/sink" &
    SINK=$!
    pids+=("$SINK")
    SURL=http://127.0.0.1:$SINK_PORT
    for _ in $(seq 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$SURL/")" = 503 ] && return 0
        sleep 0.1
    done
    echo "bench: the sink (nginx) did not start (see $WORK/sink/error.log)" >&2
    return 1
}

# Lua for wrk: a fresh tenant id per request (each inside its own rate limit); tier free unless
# given.
storm_lua() { # file path_and_query [tier]
    cat >"$1" <<LUA
local n = 0
request = function()
    n = n + 1
    return wrk.format("GET", "$2", { ["X-Tenant-Tier"] = "${3:-free}",
        ["X-Tenant-Id"] = "f" .. n .. "-" .. math.random(1000000000) })
end
LUA
}

# Lua for wrk: paced requests of one tier, each connection waiting an exponential time of mean
# $3 ms between its requests (Poisson arrivals: light and jittery), tenants cycling over $4 ids.
# The seed is fixed: both servers compared get the same waits, so the ratio measures the
# server, not the draw (with a fresh seed, 800 requests in 10 s vary by ~3.5 % between runs).
light_lua() { # file tier mean_ms tenants path_and_query
    cat >"$1" <<LUA
local n = 0
math.randomseed(31)
delay = function() return -$3 * math.log(1 - math.random()) end
request = function()
    n = n + 1
    return wrk.format("GET", "$5", { ["X-Tenant-Tier"] = "$2",
        ["X-Tenant-Id"] = "$2-" .. LIGHT_TAG .. "-" .. (n % $4) })
end
init = function(args) LIGHT_TAG = args[1] or "x" end
LUA
}

# light_measure base tag: the light mixed load for DUR s (enterprise ~30 req/s on 2 connections,
# free ~80 req/s over 160 tenants, each far inside its 100/min, on 8 connections); prints free's
# 2xx per second.
light_measure() {
    local base=$1 tag=$2
    wrk -t1 -c2 -d"${DUR}s" -s "$WORK/light-ent.lua" "$base" -- "$tag" >/dev/null 2>&1 &
    local ent=$!
    wrk -t1 -c8 -d"${DUR}s" -s "$WORK/light-free.lua" "$base" -- "$tag" 2>&1 |
        awk -v d="$DUR" '/ requests in / { n = $1 } /Non-2xx/ { bad = $NF }
            END { printf "%.1f\n", (n - bad) / d }'
    wait "$ent"
}

# storm_run name base_url seconds tag: one storm in the background; sets STORM_PID.
storm_run() {
    local name=$1 base=$2 secs=$3 tag=$4
    case "$name" in
    fixed429)
        hey -z "${secs}s" -c 50 -q 40 -H "X-Tenant-Tier: free" -H "X-Tenant-Id: fixed-$tag" \
            "$base/api/data" >/dev/null 2>&1 &
        ;;
    loop429)
        wrk -t1 -c50 -d"${secs}s" -H "X-Tenant-Tier: free" -H "X-Tenant-Id: loop-$tag" \
            "$base/api/data" >/dev/null 2>&1 &
        ;;
    slowfresh)
        wrk -t1 -c100 -d"${secs}s" -s "$WORK/slowfresh.lua" "$base" >/dev/null 2>&1 &
        ;;
    cheapfresh)
        wrk -t1 -c50 -d"${secs}s" -s "$WORK/cheapfresh.lua" "$base" >"$WORK/cheapfresh-$tag.out" 2>&1 &
        ;;
    esac
    STORM_PID=$!
}

# Enterprise beside nothing: "rps p99_ms".
ent_measure() {
    wrk_run_t1 4 "$URL/api/data?limit=10" "X-Tenant-Tier: enterprise" "X-Tenant-Id: ent" |
        awk '{ print $1, $3 }'
}

# Wait until free has nothing in flight or queued on bulkhead (bounded: 30 s), so that one
# storm's leftovers do not run into the next measurement.
free_drained() {
    local i
    for i in $(seq 300); do
        curl -fs "$URL/metrics/bulkheads" | grep -o '"free":{.*' | sed 's/},"pro":{.*//' |
            grep -q '"threadPool":{"active":0,"queued":0' && return 0
        sleep 0.1
    done
    return 1
}

section_storms() {
    sink_start || return 1
    storm_lua "$WORK/slowfresh.lua" "/api/data?delay_ms=1000"
    storm_lua "$WORK/cheapfresh.lua" "/api/data"
    storm_lua "$WORK/entfresh.lua" "/api/data" enterprise
    : >"$WORK/storm_rows"
    local run s
    for run in $(seq "$RUNS"); do
        read -r alone_rps alone_p99 < <(ent_measure)
        for s in fixed429 loop429 slowfresh cheapfresh; do
            storm_run "$s" "$SURL" $((DUR + 2)) "sink$run"
            sleep 1
            read -r sink_rps sink_p99 < <(ent_measure)
            wait "$STORM_PID"
            storm_run "$s" "$URL" $((DUR + 2)) "bh$run"
            sleep 1
            read -r bh_rps bh_p99 < <(ent_measure)
            wait "$STORM_PID"
            free_drained
            echo "$s $alone_rps $alone_p99 $sink_rps $sink_p99 $bh_rps $bh_p99" >>"$WORK/storm_rows"
        done
        # Capacity is not wasted: free alone vs enterprise alone, the same load (c50, the same
        # read, a fresh tenant per request on both: one enterprise tenant would ride a
        # pipelined lane, a different load from free's).
        wrk -t1 -c50 -d"${DUR}s" -s "$WORK/entfresh.lua" "$URL" 2>&1 |
            awk '/^Requests\/sec:/ { r = $2 } END { printf "ent50 %.0f\n", r }' >>"$WORK/storm_alone"
        free_drained
        wrk -t1 -c50 -d"${DUR}s" -s "$WORK/cheapfresh.lua" "$URL" 2>&1 |
            awk '/^Requests\/sec:/ { r = $2 } /Non-2xx/ { bad = $NF }
                 END { printf "free50 %.0f %d\n", r, bad }' >>"$WORK/storm_alone"
        free_drained
    done
    storms_fleet
    kill -TERM "$SINK" 2>/dev/null
    wait "$SINK" 2>/dev/null
    storms_recovery
}

# Across instances (issue 28): the cheap-read storm on a second instance B of the same database,
# enterprise (wrk -c4) on A; the same storm on the sink is the reference, in the same run. B
# never serves enterprise: only the fleet view (src/ops/fleet.c) tells it to give way.
storms_fleet() {
    side_server fleetb ACCESS_LOG=false
    local b=$SIDE_URL b_pid=$SIDE_PID run
    : >"$WORK/fleet_rows"
    for run in $(seq "$RUNS"); do
        storm_run cheapfresh "$SURL" $((DUR + 2)) "fsink$run"
        sleep 1
        read -r sink_rps sink_p99 < <(ent_measure)
        wait "$STORM_PID"
        storm_run cheapfresh "$b" $((DUR + 2)) "fb$run"
        sleep 1
        read -r b_rps b_p99 < <(ent_measure)
        wait "$STORM_PID"
        sleep 1
        # Work-conserving: with no enterprise traffic anywhere (A idle, and B no longer sees
        # enterprise active in the fleet), free's storm on B against the same load sent to B's
        # enterprise tier.
        fleet_quiet "$b"
        local b_ent b_free
        b_ent=$(wrk -t1 -c50 -d"${DUR}s" -s "$WORK/entfresh.lua" "$b" 2>&1 |
            awk '/^Requests\/sec:/ { r = $2 } END { printf "%.0f", r }')
        fleet_quiet "$b"
        b_free=$(wrk -t1 -c50 -d"${DUR}s" -s "$WORK/cheapfresh.lua" "$b" 2>&1 |
            awk '/^Requests\/sec:/ { r = $2 } END { printf "%.0f", r }')
        echo "$sink_rps $sink_p99 $b_rps $b_p99 $b_ent $b_free" >>"$WORK/fleet_rows"
    done
    kill -TERM "$b_pid" 2>/dev/null
    wait "$b_pid" 2>/dev/null
}

# Wait (bounded: 10 s) until instance base no longer sees enterprise active elsewhere in the
# fleet (its enterprise capacity.fleetActive is false): A's last enterprise request has aged out
# of the fleet view.
fleet_quiet() { # base
    local i
    for i in $(seq 100); do
        curl -fs "$1/metrics/bulkheads" | sed 's/.*"enterprise":{//' |
            grep -o '"fleetActive":[a-z]*' | head -1 | grep -q false && return 0
        sleep 0.1
    done
    return 1
}

# After a storm (issue 31): the busy-free storm beside enterprise (wrk -c4) on bulkhead for DUR
# s, then at once the light mixed load; the same light load on a second server that never saw
# a storm is the reference. A controller that keeps shedding free after the storm, on a machine
# that is nearly idle, shows here.
storms_recovery() {
    light_lua "$WORK/light-ent.lua" enterprise 66 1 "/api/data?limit=10"
    light_lua "$WORK/light-free.lua" free 100 160 "/api/data"
    side_server nostorm ACCESS_LOG=true
    local calm=$SIDE_URL calm_pid=$SIDE_PID run after ref
    : >"$WORK/recovery_rows"
    for run in $(seq "$RUNS"); do
        storm_run cheapfresh "$URL" "$DUR" "rec$run"
        wrk -t1 -c4 -d"${DUR}s" -H "X-Tenant-Tier: enterprise" -H "X-Tenant-Id: ent" \
            "$URL/api/data?limit=10" >/dev/null 2>&1
        wait "$STORM_PID"
        after=$(light_measure "$URL" "a$run")
        ref=$(light_measure "$calm" "c$run")
        echo "$after $ref" >>"$WORK/recovery_rows"
        free_drained
    done
    kill -TERM "$calm_pid" 2>/dev/null
    wait "$calm_pid" 2>/dev/null
}

# storm_stat name column -> median of that column (2 alone rps, 3 alone p99, 4 sink rps, ...)
storm_stat() { awk -v n="$1" -v c="$2" '$1 == n { print $c }' "$WORK/storm_rows" | median; }
storm_ratio() { awk -v n="$1" '$1 == n { print ($4 > 0 ? $6 / $4 : 0) }' "$WORK/storm_rows" | median; }
# storm_ratio_spread name -> "min-max" of the per-run ratios behind storm_ratio.
storm_ratio_spread() {
    awk -v n="$1" '$1 == n { printf "%.2f\n", ($4 > 0 ? $6 / $4 : 0) }' "$WORK/storm_rows" | spread
}
storm_p99_ratio() { awk -v n="$1" '$1 == n { print ($3 > 0 ? $7 / $3 : 0) }' "$WORK/storm_rows" | median; }

storms_rows() {
    local s label
    for s in fixed429 loop429 slowfresh cheapfresh; do
        case $s in
        fixed429) label="storm: one free tenant at a fixed 2,000 req/s (hey -c50 -q40), all 429" ;;
        loop429) label="storm: one free tenant in a closed loop at full speed (wrk -c50), all 429" ;;
        slowfresh) label="storm: slow queries (1 s), a fresh free tenant per request, retried at once (wrk -c100)" ;;
        cheapfresh) label="storm: cheap reads, a fresh free tenant per request, at full speed (wrk -c50)" ;;
        esac
        local r
        r=$(printf '%.2f' "$(storm_ratio "$s")")
        echo "| $label: enterprise (wrk -c4) beside it, bulkhead vs sink | $(storm_stat "$s" 6) req/s (p99 $(storm_stat "$s" 7) ms) | $(storm_stat "$s" 4) req/s beside the sink (alone $(storm_stat "$s" 2)) | $r (runs $(storm_ratio_spread "$s")) | >= 0.9: $(mark "$r" 0.9) |"
    done
    echo "| ... enterprise p99 beside the cheap-read storm on bulkhead / alone | $(storm_stat cheapfresh 7) ms | $(storm_stat cheapfresh 3) ms | $(printf '%.2f' "$(storm_p99_ratio cheapfresh)") | reported |"
    local fs fb fr
    fs=$(cut -d' ' -f1 "$WORK/fleet_rows" | median)
    fb=$(cut -d' ' -f3 "$WORK/fleet_rows" | median)
    fr=$(printf '%.2f' "$(awk '{ print ($1 > 0 ? $3 / $1 : 0) }' "$WORK/fleet_rows" | median)")
    echo "| fleet: the cheap-read storm on instance B (same database), enterprise (wrk -c4) on instance A, vs the same storm on the sink | $fb req/s (p99 $(cut -d' ' -f4 "$WORK/fleet_rows" | median) ms) | $fs req/s beside the sink (p99 $(cut -d' ' -f2 "$WORK/fleet_rows" | median) ms) | $fr | >= 0.9: $(mark "$fr" 0.9) |"
    local we wf wr
    we=$(cut -d' ' -f5 "$WORK/fleet_rows" | median)
    wf=$(cut -d' ' -f6 "$WORK/fleet_rows" | median)
    wr=$(printf '%.2f' "$(awk '{ print ($5 > 0 ? $6 / $5 : 0) }' "$WORK/fleet_rows" | median)")
    echo "| fleet, work-conserving: the cheap-read storm alone on instance B's free tier (no enterprise traffic anywhere), vs the same load sent to B's enterprise tier | $wf req/s | $we req/s | $wr | >= 0.7: $(mark "$wr" 0.7) |"
    local ra rr0 rrr
    ra=$(cut -d' ' -f1 "$WORK/recovery_rows" | median)
    rr0=$(cut -d' ' -f2 "$WORK/recovery_rows" | median)
    rrr=$(awk '{ print ($2 > 0 ? $1 / $2 : 0) }' "$WORK/recovery_rows" | median)
    rrr=$(printf '%.2f' "$rrr")
    echo "| after a storm: free's 2xx/s under light mixed load (enterprise 30 req/s, free 80 req/s over 160 tenants) right after the cheap-read storm, vs the same load on a server that saw no storm | $ra req/s | $rr0 req/s | $rrr | >= 0.95: $(mark "$rrr" 0.95) |"
    local e50 f50
    e50=$(awk '$1 == "ent50" { print $2 }' "$WORK/storm_alone" | median)
    f50=$(awk '$1 == "free50" { print $2 }' "$WORK/storm_alone" | median)
    local rr
    rr=$(ratio "$f50" "$e50")
    echo "| capacity not wasted: free alone vs enterprise alone, the same load (cheap reads, a fresh tenant per request, c50) | $f50 req/s | $e50 req/s | $rr | >= 0.7: $(mark "$rr" 0.7) |"
}
