#!/usr/bin/env bash
# bench/run.sh: `make bench`. Every figure is a ratio measured side by side in the same run,
# because these machines are shared and noisy: bulkhead against pgbench running the same query,
# against a bare libmicrohttpd responder of the same shape (build/bench/minimal), and against
# itself without the noisy neighbour. Each pair is measured RUNS times, interleaved, and the
# median is kept. Results go to stdout and to bench/results/<date>.md (and latest.md).
#
# Settings: BENCH_DURATION (s per measurement, 10), BENCH_RUNS (3), BENCH_CONC (32, warm-up),
# BENCH_DATA_CONC (the data rows' concurrencies, "16 64"), BENCH_LAT_THREADS (wrk threads of the
# data rows and the scaling table, 1),
# BENCH_CGROUP (auto: one cpu cgroup for all it starts, see bench/common.sh; off),
# BENCH_SECTIONS (default "data health isolation storms fairness scaling choices shared costq
# tenants conns"; costq: the fair queue by requests vs by cost, bench/fairness.sh; tenants: issue
# 29's rows, bench/tenants.sh run as it is and its rows copied; conns: the HTTP layer side by
# side, bench/conns.sh). A run of only some
# sections writes bench/results/partial-<date>.md and leaves latest.md and the README alone.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DUR=${BENCH_DURATION:-10}
RUNS=${BENCH_RUNS:-3}
CONC=${BENCH_CONC:-32}
WORK=$ROOT/build/bench-work
RESULTS=$ROOT/bench/results
BIN=$ROOT/build/bulkhead
MINIMAL=$ROOT/build/bench/minimal
PGBIN=/usr/lib/postgresql/15/bin
SECTIONS=${BENCH_SECTIONS:-data health isolation storms fairness scaling choices shared costq tenants conns}
ALL_SECTIONS="data health isolation storms fairness scaling choices shared costq tenants conns"
has() { case " $SECTIONS " in *" $1 "*) return 0 ;; esac; return 1; }
. "$ROOT/bench/common.sh"
. "$ROOT/bench/fairness.sh"
. "$ROOT/bench/storms.sh"
. "$ROOT/bench/shared.sh"
. "$ROOT/bench/conns.sh"
mkdir -p "$RESULTS"
rm -rf "$WORK"
mkdir -p "$WORK"
chmod 755 "$WORK"

bench_need bench wrk hey "$PGBIN/pgbench" "$BIN" "$MINIMAL"

bench_pg_start bench
API_PORT=$(free_port)
MIN_PORT=$(free_port)
(cd "$WORK" && DATABASE_URL=$DB API_PORT=$API_PORT API_BIND=127.0.0.1 exec "$BIN" >"$WORK/server.log" 2>&1) &
SRV=$!
pids+=("$SRV")
"$MINIMAL" "$MIN_PORT" &
pids+=($!)
URL=http://127.0.0.1:$API_PORT
MURL=http://127.0.0.1:$MIN_PORT
for _ in $(seq 100); do curl -fs "$URL/health" >/dev/null && curl -fs "$MURL/health" >/dev/null && break; sleep 0.1; done

rss_mb() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# wrk -> "rps p50_ms p99_ms non2xx"
wrk_run() { # conc url headers...
    local c=$1 url=$2
    shift 2
    local h=() t=${WRK_THREADS:-2}
    for x in "$@"; do h+=(-H "$x"); done
    [ "$c" -lt 2 ] && t=1
    wrk -t"$t" -c"$c" -d"${DUR}s" --latency "${h[@]}" "$url" 2>&1 | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
    /Non-2xx/ { bad = $NF } /^Requests\/sec:/ { rps = $2 }
    END { printf "%.0f %.3f %.3f %d\n", rps, p50, p99, bad }'
}

pgbench_run() { # conc -> tps
    "$PGBIN/pgbench" -n -M prepared -c "$1" -j 2 -T "$DUR" -f "$WORK/query.sql" \
        "$DB" 2>&1 | awk '/^tps = / { printf "%.0f\n", $3 }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
mark() { awk -v v="$1" -v t="$2" -v dir="${3:-ge}" 'BEGIN { ok = dir == "ge" ? v >= t : v <= t; print ok ? "met" : "**missed**" }'; }

# The statement /api/data prepares for enterprise, page of 10 (see src/api/api.c).
cat >"$WORK/query.sql" <<'SQL'
SELECT coalesce(json_agg(r ORDER BY r.id), '[]')::text, max(r.id), count(*) FROM (SELECT id, tier, tenant, payload, created_at FROM tenant_data WHERE tier = 'enterprise' AND id > 0 ORDER BY id LIMIT 10) r;
SQL

ENT=("X-Tenant-Tier: enterprise")
echo "bench: $RUNS interleaved runs of $DUR s; concurrency $CONC" >&2
RSS_IDLE=$(rss_mb "$SRV")
# Warm up: open the pools' connections and fault in both servers before measuring.
DUR_SAVE=$DUR
DUR=3
wrk_run "$CONC" "$URL/api/data?limit=10" "${ENT[@]}" >/dev/null
wrk_run 64 "$URL/health" >/dev/null
wrk_run 64 "$MURL/health" >/dev/null
pgbench_run "$CONC" >/dev/null
DUR=$DUR_SAVE

# wrk with the tail: "rps p50_ms p99_ms p99.9_ms non2xx" (wrk's --latency stops at p99; its Lua
# done() reads any percentile of the same histogram). One wrk thread (BENCH_LAT_THREADS): with
# two, the load generator's second thread competes with the server and PostgreSQL for these two
# CPUs and the tail measured is mostly its own (bench/optimisations.md, "The tail at c=64":
# the same server, c=64, p99 14.8-25.6 ms with wrk -t2 against 4.6-6.5 ms with -t1, the same
# throughput, the server's own p99 2-8.5 ms in both).
cat >"$WORK/tail.lua" <<'LUA'
done = function(summary, latency, requests)
    io.write(string.format("TAIL %.3f %.3f %.3f\n", latency:percentile(50) / 1000.0,
        latency:percentile(99) / 1000.0, latency:percentile(99.9) / 1000.0))
end
LUA
wrk_lat() { # conc url headers...
    local c=$1 url=$2
    shift 2
    local h=() t=${BENCH_LAT_THREADS:-1}
    for x in "$@"; do h+=(-H "$x"); done
    [ "$c" -lt 2 ] && t=1
    wrk -t"$t" -c"$c" -d"${DUR}s" -T 10s -s "$WORK/tail.lua" "${h[@]}" "$url" 2>&1 | awk '
    /^TAIL / { p50 = $2; p99 = $3; p999 = $4 }
    /Non-2xx/ { bad = $NF } /^Requests\/sec:/ { rps = $2 }
    END { printf "%.0f %.3f %.3f %.3f %d\n", rps, p50, p99, p999, bad }'
}
# spread: "min-max" of stdin's numbers (the runs behind a median).
spread() { sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%s-%s", lo, hi }'; }

# wrk_run with one thread, as a single client process would be.
wrk_run_t1() { WRK_THREADS=1 wrk_run "$@"; }

# CPU time (user + system, in seconds) the process has used so far.
cpu_s() { awk '{ printf "%.2f\n", ($14 + $15) / '"$(getconf CLK_TCK)"' }' "/proc/$1/stat"; }

# 1. /api/data vs pgbench, same query, same concurrency, same database, at each of DATA_CONCS.
# Beside throughput, what each side costs: the server's CPU time over the requests it served,
# and pgbench's own CPU time (its client: libpq, the protocol) over its transactions.
# One line per run in data-<c>:
# "rps p50 p99 non2xx server_us_per_req pg_tps pg_client_us_per_tx p99.9"
data_pair() { # conc
    local c=$1 c0 c1 rps p50 p99 p999 bad pgt t
    c0=$(cpu_s "$SRV")
    read -r rps p50 p99 p999 bad < <(wrk_lat "$c" "$URL/api/data?limit=10" "${ENT[@]}")
    c1=$(cpu_s "$SRV")
    t=$({ TIMEFORMAT='%U %S'; time pgbench_run "$c" >"$WORK/pg_one"; } 2>&1)
    pgt=$(cat "$WORK/pg_one")
    awk -v rps="$rps" -v p50="$p50" -v p99="$p99" -v bad="$bad" -v c0="$c0" -v c1="$c1" \
        -v d="$DUR" -v pgt="${pgt:-0}" -v t="$t" -v p999="$p999" 'BEGIN { split(t, u, " ");
        cpu = rps > 0 ? (c1 - c0) * 1e6 / (rps * d) : 0
        pgcpu = pgt > 0 ? (u[1] + u[2]) * 1e6 / (pgt * d) : 0
        printf "%s %s %s %s %.0f %s %.0f %s\n", rps, p50, p99, bad, cpu, pgt, pgcpu, p999 }' >>"$WORK/data-$c"
}
DATA_CONCS=${BENCH_DATA_CONC:-16 64}
DATA_ROWS=""
DATA_RPS=0 PG_TPS=0
for c in $DATA_CONCS; do : >"$WORK/data-$c"; done
has data && for _ in $(seq "$RUNS"); do
    for c in $DATA_CONCS; do data_pair "$c"; done
done
has data && for c in $DATA_CONCS; do
    col() { cut -d' ' -f"$1" "$WORK/data-$c" | median; }
    rps=$(col 1) p50=$(col 2) p99=$(col 3) p999=$(col 8) bad=$(cut -d' ' -f4 "$WORK/data-$c" | sort -n | tail -1)
    cpu=$(col 5) pgt=$(col 6) pgcpu=$(col 7)
    r=$(ratio "$rps" "$pgt")
    DATA_ROWS+="| /api/data enterprise (page of 10) vs pgbench, same query prepared, c=$c | $rps req/s (non-2xx $bad) | $pgt tps | $r | >= 0.7: $(mark "$r" 0.7) |"$'\n'
    DATA_ROWS+="| ... latency p50 / p99 / p99.9 (wrk), c=$c; p99 over the runs $(cut -d' ' -f3 "$WORK/data-$c" | spread) ms | $p50 / $p99 / $p999 ms | | | p99 <= 10 ms: $(mark "$p99" 10 le) |"$'\n'
    DATA_ROWS+="| ... server CPU per request (utime + stime over requests), c=$c | $cpu us | $pgcpu us (pgbench's client per transaction) | | <= 50 us: $(mark "$cpu" 50 le) |"$'\n'
    # The first concurrency's figures feed the other sections (isolation's enterprise rate).
    if [ "$DATA_RPS" = 0 ]; then DATA_RPS=${rps%.*} PG_TPS=$pgt DATA_C1=$c; fi
done
DATA_C1=${DATA_C1:-$CONC}

# 2. /health and 3. the 429 path vs the bare responder; the cost of the access log is /health
# against a second server with ACCESS_LOG=false (it only answers /health, so its pools stay
# closed).
# side_server name SETTING=value: one more server on the bench database with that setting;
# sets SIDE_PID and SIDE_URL once it answers /health (its log: server-<name>.log).
side_server() {
    local port
    port=$(free_port)
    (cd "$WORK" && exec env DATABASE_URL="$DB" API_PORT="$port" API_BIND=127.0.0.1 "$2" \
        "$BIN" >"$WORK/server-$1.log" 2>&1) &
    SIDE_PID=$!
    pids+=("$SIDE_PID")
    SIDE_URL=http://127.0.0.1:$port
    for _ in $(seq 100); do curl -fs "$SIDE_URL/health" >/dev/null && break; sleep 0.1; done
}
side_server nolog ACCESS_LOG=false
NOLOG=$SIDE_PID
NURL=$SIDE_URL
# ... and with a sampled access log: one success in a hundred gets a line.
side_server sampled ACCESS_LOG_SAMPLE=0.01
SAMPLED=$SIDE_PID
SAMPLED_URL=$SIDE_URL
# The 429 row measures what a refusal costs, so it runs on a third server with TARPIT=false:
# with the tarpit (the default), wrk's closed loop of retries sent at once is held until its
# Retry-After (src/admission/tarpit.c), which the row beside it reports.
side_server notarpit TARPIT=false
NOTARPIT=$SIDE_PID
TURL=$SIDE_URL
DUR_SAVE=$DUR
DUR=3
wrk_run 64 "$NURL/health" >/dev/null
wrk_run 64 "$SAMPLED_URL/health" >/dev/null
DUR=$DUR_SAVE
: >"$WORK/h_ours" >"$WORK/h_min" >"$WORK/r_ours" >"$WORK/r_min" >"$WORK/h_nolog" >"$WORK/r_held"
: >"$WORK/h_sampled"
has health && for _ in $(seq "$RUNS"); do
    wrk_run 64 "$URL/health" >>"$WORK/h_ours"
    wrk_run 64 "$MURL/health" >>"$WORK/h_min"
    wrk_run 64 "$NURL/health" >>"$WORK/h_nolog"
    wrk_run 64 "$SAMPLED_URL/health" >>"$WORK/h_sampled"
    wrk_run 64 "$TURL/api/data" "X-Tenant-Tier: free" "X-Tenant-Id: bench-429" >>"$WORK/r_ours"
    wrk_run 64 "$URL/api/data" "X-Tenant-Tier: free" "X-Tenant-Id: bench-429" >>"$WORK/r_held"
    wrk_run 64 "$MURL/api/data" >>"$WORK/r_min"
done
H_OURS=$(cut -d' ' -f1 "$WORK/h_ours" | median)
H_MIN=$(cut -d' ' -f1 "$WORK/h_min" | median)
R_OURS=$(cut -d' ' -f1 "$WORK/r_ours" | median)
R_MIN=$(cut -d' ' -f1 "$WORK/r_min" | median)
H_NOLOG=$(cut -d' ' -f1 "$WORK/h_nolog" | median)
H_SAMPLED=$(cut -d' ' -f1 "$WORK/h_sampled" | median)
R_HELD=$(cut -d' ' -f1 "$WORK/r_held" | median)
kill -TERM "$NOLOG" "$NOTARPIT" "$SAMPLED" 2>/dev/null
wait "$NOLOG" "$NOTARPIT" "$SAMPLED" 2>/dev/null

# 4. Isolation: load-test.sh, which offers enterprise half of what it measures enterprise
# alone can serve at the start of its own run (its calibration line says how much).
MAXRSS_FILE=$WORK/maxrss
echo 0 >"$MAXRSS_FILE"
(
    m=0
    while kill -0 "$SRV" 2>/dev/null && [ ! -f "$WORK/stop-rss" ]; do
        r=$(rss_mb "$SRV")
        awk -v a="$r" -v b="$m" 'BEGIN { exit !(a > b) }' && m=$r && echo "$m" >"$MAXRSS_FILE"
        sleep 0.2
    done
) &
RSS_SAMPLER=$!
LT_STATUS=2
: >"$WORK/load-test.out"
if has isolation; then
    BASE_URL=$URL DURATION=$DUR ./load-test.sh >"$WORK/load-test.out" 2>&1
    LT_STATUS=$?
fi
touch "$WORK/stop-rss"
wait "$RSS_SAMPLER"
RSS_LOAD=$(cat "$MAXRSS_FILE")
ratio_of() { grep "^  $1: " "$WORK/load-test.out" | grep -o 'ratio=[0-9.]*' | cut -d= -f2; }
ENT_RATE=$(sed -n 's/^enterprise offered \([0-9]*\) req\/s in every phase$/\1/p' "$WORK/load-test.out")
CALIBRATION=$(sed -n 's/^calibration: //p' "$WORK/load-test.out" | paste -sd ';' | sed 's/;/; /g')
ISO_FLOOD=$(ratio_of flood)
ISO_SAT=$(ratio_of saturation)
ISO_STORM=$(ratio_of "failure storm")
FAIR=$(grep "^  fairness: " "$WORK/load-test.out" | sed 's/^  fairness: //' | paste -sd ';' | sed 's/;/; /g')

# 5. Concurrency scaling on /api/data (enterprise).
SCALE=""
has scaling && for c in 1 16 64 256 1024; do
    read -r rps p50 p99 p999 bad < <(wrk_lat "$c" "$URL/api/data?limit=10" "${ENT[@]}")
    SCALE+="| $c | $rps | $p50 | $p99 | $p999 | $bad | $(rss_mb "$SRV") |"$'\n'
done

# 6. What the optimisations buy, measured the same way.
H_CLOSE=0 PG_SIMPLE=0
if has choices; then
    #    keep-alive: /health with a new connection per request.
    read -r H_CLOSE _ < <(wrk_run 64 "$URL/health" "Connection: close")
    #    prepared statements: pgbench simple protocol vs prepared, same query.
    PG_SIMPLE=$("$PGBIN/pgbench" -n -M simple -c "$DATA_C1" -j 2 -T "$DUR" -f "$WORK/query.sql" "$DB" 2>&1 | awk '/^tps = / { printf "%.0f\n", $3 }')
fi

# 7. Storms against a sink (bench/storms.sh), 8. fairness inside a tier (bench/fairness.sh).
has storms && section_storms
has fairness && section_fairness
has shared && section_shared # 9. the shared rate limit (bench/shared.sh)
has costq && section_costq   # 10. the fair queue by requests vs by cost (bench/fairness.sh)
# 11. Issue 29's rows (accounting's cost, budgets): bench/tenants.sh with this run's settings, on
# its own PostgreSQL; its table rows are copied below.
# The accounting's cost is judged in instructions (bench/acctcost.sh, callgrind): timing cannot
# resolve 5 % here; the timed row stays as a report.
section_tenants() {
    BENCH_DURATION=$DUR BENCH_RUNS=$RUNS "$ROOT/bench/tenants.sh" >"$WORK/tenants.out" 2>&1 ||
        echo "bench: bench/tenants.sh failed (see $WORK/tenants.out)" >&2
    BENCH_RUNS=$RUNS "$ROOT/bench/acctcost.sh" >"$WORK/acctcost.out" 2>&1 ||
        echo "bench: bench/acctcost.sh failed (see $WORK/acctcost.out)" >&2
}
tenants_rows() {
    grep -E '^\| (one tenant|a fresh tenant per request) \|' "$WORK/acctcost.out" |
        awk -F'|' '{ for (i = 2; i <= 6; i++) gsub(/^ +| +$/, "", $i); printf "| accounting'"'"'s cost in instructions per /api/data request (callgrind), %s, on / off | %s | %s | %s | %s |\n", $2, $3, $4, $5, $6 }'
    grep -E '^\| (accounting|budgets|\.\.\. (the|throughput))' "$WORK/tenants.out"
}
has tenants && section_tenants
has conns && section_conns   # 12. the HTTP layer side by side (bench/conns.sh)

H_R=$(ratio "$H_OURS" "$H_MIN")
R_R=$(ratio "$R_OURS" "$R_MIN")

STAMP=$(date -u +%Y-%m-%dT%H%MZ)
OUT=$RESULTS/$STAMP.md
[ "$SECTIONS" = "$ALL_SECTIONS" ] || OUT=$RESULTS/partial-$STAMP.md
{
    echo "# bulkhead benchmark, $STAMP"
    echo
    echo "Command: \`make bench\` (BENCH_DURATION=$DUR, BENCH_RUNS=$RUNS, medians of interleaved runs)."
    echo
    echo "Machine: $(nproc) CPUs ($(lscpu 2>/dev/null | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }')),"
    echo "$(free -g | awk '/Mem:/ { print $2 " GiB RAM" }'), Linux $(uname -r); PostgreSQL $("$PGBIN/postgres" --version | awk '{ print $3 }'),"
    echo "libmicrohttpd $(dpkg-query -W -f='${Version}' libmicrohttpd12 2>/dev/null), wrk $(dpkg-query -W -f='${Version}' wrk 2>/dev/null), hey $(dpkg-query -W -f='${Version}' hey 2>/dev/null)."
    echo "The load generators, PostgreSQL and the server share these CPUs; scheduling: $BENCH_SCHED."
    echo
    echo "| measurement | bulkhead | reference | ratio | target |"
    echo "|---|---|---|---|---|"
    printf '%s' "$DATA_ROWS"
    echo "| GET /health vs bare libmicrohttpd responder, c=64 | $H_OURS req/s | $H_MIN req/s | $H_R | >= 0.8: $(mark "$H_R" 0.8) |"
    echo "| 429 path (free tenant over its limit, TARPIT=false) vs bare responder's 429, c=64 | $R_OURS req/s | $R_MIN req/s | $R_R | >= 0.8: $(mark "$R_R" 0.8) |"
    echo "| ... the same closed loop with the tarpit (default): early retries held until their Retry-After | $R_HELD req/s | | | reported |"
    echo "| isolation: enterprise at ${ENT_RATE:-?} req/s while free is flooded at 2000 req/s | | | ${ISO_FLOOD:-?} | >= 0.9: $(mark "${ISO_FLOOD:-0}" 0.9) |"
    echo "| isolation: ... while free is saturated with slow queries | | | ${ISO_SAT:-?} | >= 0.9: $(mark "${ISO_SAT:-0}" 0.9) |"
    echo "| isolation: ... during a failure storm on free | | | ${ISO_STORM:-?} | >= 0.9: $(mark "${ISO_STORM:-0}" 0.9) |"
    echo "| server RSS idle / peak under load-test.sh | $RSS_IDLE MB / $RSS_LOAD MB | | | <= 64 MB: $(mark "$RSS_LOAD" 64 le) |"
    has storms && storms_rows
    has fairness && fairness_rows
    has shared && shared_rows
    has costq && costq_rows
    has tenants && tenants_rows
    echo
    has conns && { conns_table; echo; }
    echo "load-test.sh verdict: $([ "$LT_STATUS" -eq 0 ] && echo PASS || echo FAIL); fairness inside free: $FAIR"
    echo
    echo "load-test.sh calibration: ${CALIBRATION:-not run}"
    echo
    echo "Concurrency scaling, /api/data enterprise:"
    echo
    echo "| connections | req/s | p50 ms | p99 ms | p99.9 ms | non-2xx | RSS MB |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s' "$SCALE"
    echo
    echo "What the design choices buy (same run):"
    echo
    echo "| choice | with | without | gain |"
    echo "|---|---|---|---|"
    echo "| keep-alive honoured (reply queued on a later call), /health c=64 | $H_OURS req/s | $H_CLOSE req/s (Connection: close) | $(ratio "$H_OURS" "$H_CLOSE")x |"
    echo "| access log off (ACCESS_LOG=false), /health c=64 | $H_NOLOG req/s | $H_OURS req/s (one JSON line per request) | $(ratio "$H_NOLOG" "$H_OURS")x |"
    echo "| access log sampled (ACCESS_LOG_SAMPLE=0.01: refusals, errors, slow requests and 1 % of successes), /health c=64 | $H_SAMPLED req/s | $H_OURS req/s (ACCESS_LOG_SAMPLE=1) | $(ratio "$H_SAMPLED" "$H_OURS")x |"
    echo "| prepared statements (pgbench, same query, c=$DATA_C1) | $PG_TPS tps | $PG_SIMPLE tps (simple protocol) | $(ratio "$PG_TPS" "$PG_SIMPLE")x |"
    echo
    cat "$ROOT/bench/optimisations.md"
} >"$OUT"
cat "$OUT"
echo
echo "written to $OUT"
if [ "$SECTIONS" = "$ALL_SECTIONS" ]; then
    cp "$OUT" "$RESULTS/latest.md"
    scripts/readme-bench.sh
fi
