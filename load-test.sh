#!/usr/bin/env bash
# load-test.sh: proof of isolation. Measures the enterprise tier alone, then while the free tier
# is (1) flooded far above its rate limit, (2) saturated with slow queries beyond its threads,
# connections and queue, (3) hit by a failure storm that opens its breaker; and (4) checks
# fairness inside free: a noisy tenant's slow queries, from 12 and from 48 clients, do not
# slow down quiet tenants of the same tier; (5) closed-loop storms on free, clients that retry at
# once whatever Retry-After says (one tenant at full speed, all 429; slow queries from a fresh
# tenant per request); (6) a busy free tier: cheap reads from a fresh tenant per request at full
# speed, each inside its own rate limit, so only priority over the shared capacity protects
# enterprise.
# Prints one table per scenario and a verdict; exit status 0 on PASS, 1 on FAIL, 2 when a tool
# or the server is missing.
#
#   ./load-test.sh                                  # against make run (http://localhost:8080)
#   BASE_URL=http://api:8080 ./load-test.sh         # inside the compose stack
#
# Settings (environment):
#   BASE_URL       server to test                     (http://localhost:8080)
#   DURATION       seconds per measurement            (10)
#   ENT_RATE       enterprise requests/s offered      (auto: ENT_FRACTION of what enterprise
#                  served alone, measured at the start of this run)
#   ENT_FRACTION   the fraction offered when ENT_RATE is auto                 (0.5)
#   CALIB_S        seconds of the calibration (closed loop, wrk -c16)        (5)
#   FLOOD_RATE     free flood requests/s              (2000)
#   MIN_RATIO      enterprise throughput kept, vs baseline            (0.90)
#   P99_FACTOR     enterprise p99 allowed, x baseline p99             (5)
#   P99_FLOOR_MS   ...or this many ms, whichever is larger            (25)
#   QUIET_CLIENTS  quiet tenants in scenario 4, 2 req/s each          (5)
# Enterprise load is open-loop at a fixed rate (hey -q), so "keeps its throughput" means it still
# gets every request it asks for, on time; a closed loop at full speed would instead measure
# how the load generators share this machine's CPUs.
# The rate offered is calibrated on this run: a machine that serves enterprise alone at less
# than the rate offered makes enterprise overload its own queue, and a FAIL would then measure
# the calibration, not the isolation. So, unless ENT_RATE is given, enterprise alone is first
# measured in a closed loop and offered ENT_FRACTION of it; if even the baseline (enterprise
# alone, open loop) does not get what it is offered without errors, the rate is halved and the
# baseline measured again (twice at most), and the output says so.
set -u

# ---- the verdict's arithmetic (pure functions; LOAD_TEST_LIB=1 sources only these) ----

# offer_rate capacity fraction -> the rate to offer: capacity x fraction, at least 50 req/s.
offer_rate() {
    awk -v c="$1" -v f="$2" 'BEGIN { r = int(c * f); if (r < 50) r = 50; print r }'
}

# baseline_ok offered rps bad -> exit 0 when enterprise alone got what it was offered: no
# error and at least 90 % of the rate (hey's own pacing loses a few percent).
baseline_ok() {
    awk -v o="$1" -v r="$2" -v bad="$3" 'BEGIN { exit !(bad == 0 && r >= 0.9 * o) }'
}

# verdict rps p99 bad base_rps base_p99 min_ratio p99_factor p99_floor_ms ->
# "PASS|FAIL ratio=... p99=...ms (limit ...ms) errors=N"
verdict() {
    awk -v r="$1" -v p="$2" -v bad="$3" -v br="$4" -v bp="$5" -v minr="$6" -v f="$7" \
        -v fl="$8" 'BEGIN {
        ratio = br > 0 ? r / br : 0
        lim = bp * f; if (lim < fl) lim = fl
        ok = ratio >= minr && bad == 0 && p <= lim
        printf "%s ratio=%.3f p99=%.2fms (limit %.2fms) errors=%d", ok ? "PASS" : "FAIL", ratio, p, lim, bad
    }'
}

if [ -n "${LOAD_TEST_LIB:-}" ]; then
    return 0 2>/dev/null || exit 0
fi

BASE_URL=${BASE_URL:-http://localhost:8080}
DURATION=${DURATION:-10}
ENT_RATE=${ENT_RATE:-auto}
ENT_FRACTION=${ENT_FRACTION:-0.5}
CALIB_S=${CALIB_S:-5}
FLOOD_RATE=${FLOOD_RATE:-2000}
MIN_RATIO=${MIN_RATIO:-0.90}
P99_FACTOR=${P99_FACTOR:-5}
P99_FLOOR_MS=${P99_FLOOR_MS:-25}
RUN=${RUN_ID:-$(date +%s)}  # fresh tenant ids per run: rate limits are per tenant per minute

missing=()
for tool in hey wrk curl awk; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "load-test.sh: missing tools: ${missing[*]}" >&2
    echo "install them with: apt-get install -y ${missing[*]}   (or: make bench, which installs them)" >&2
    exit 2
fi
if ! curl -fsS -m 5 "$BASE_URL/health" >/dev/null; then
    echo "load-test.sh: $BASE_URL/health does not answer 200; start the server (make run)" >&2
    exit 2
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# hey at a fixed total rate: workers x per-worker rate.
hey_rate() { # out rate duration url headers...
    local out=$1 rate=$2 dur=$3 url=$4
    shift 4
    local c=$(((rate + 49) / 50))
    [ "$c" -lt 1 ] && c=1
    local q=$(((rate + c - 1) / c))
    local h=()
    for x in "$@"; do h+=(-H "$x"); done
    hey -z "${dur}s" -c "$c" -q "$q" -disable-keepalive=false "${h[@]}" "$url" >"$out" 2>&1
}

# hey with a fixed number of requests at a concurrency (closed loop).
hey_n() { # out n concurrency url headers...
    local out=$1 n=$2 c=$3 url=$4
    shift 4
    local h=()
    for x in "$@"; do h+=(-H "$x"); done
    hey -n "$n" -c "$c" -t 60 "${h[@]}" "$url" >"$out" 2>&1
}

# Fields of a hey report: rps p50_ms p99_ms total n2xx n429 n503 n5xx_other errors
hey_fields() {
    awk '
    /Requests\/sec:/ { rps = $2 }
    / 50% in / { p50 = $3 * 1000 }
    / 99% in / { p99 = $3 * 1000 }
    /Slowest:/ { slowest = $2 * 1000 }
    /^  \[[0-9]+\]/ {
        code = substr($1, 2, 3) + 0; n = $2 + 0
        if (code >= 200 && code < 300) ok += n
        else if (code == 429) rl += n
        else if (code == 503) su += n
        else other += n
        total += n
    }
    /^Error distribution:/ { inerr = 1; next }
    inerr && /^  \[[0-9]+\]/ { errs += substr($1, 2) + 0 }
    END {
        if (p99 == 0) p99 = slowest  # hey omits the 99th percentile below 100 requests
        printf "%.1f %.2f %.2f %d %d %d %d %d %d\n", rps, p50, p99, total, ok, rl, su, other, errs
    }' "$1"
}

row() { # label file
    read -r rps p50 p99 total ok rl su other errs < <(hey_fields "$2")
    printf '  %-22s %9s %9s %9s %7s %7s %7s %7s %7s %7s\n' "$1" "$rps" "$p50" "$p99" "$total" \
        "$ok" "$rl" "$su" "$other" "$errs"
}

header() {
    echo
    echo "== $1"
    printf '  %-22s %9s %9s %9s %7s %7s %7s %7s %7s %7s\n' "tier" "req/s" "p50 ms" "p99 ms" \
        "total" "2xx" "429" "503" "other" "errors"
}

ENT_URL="$BASE_URL/api/data?limit=10"
ENT_H=("X-Tenant-Tier: enterprise" "X-Tenant-Id: ent-$RUN")

# judge name enterprise-report: compares with the baseline.
judge() {
    local name=$1 file=$2
    read -r rps p50 p99 total ok rl su other errs < <(hey_fields "$file")
    local bad=$((total - ok + errs))
    local verdict
    verdict=$(verdict "$rps" "$p99" "$bad" "$BASE_RPS" "$BASE_P99" "$MIN_RATIO" "$P99_FACTOR" \
        "$P99_FLOOR_MS")
    echo "  verdict: enterprise throughput ${verdict#* }  -> ${verdict%% *}"
    verdicts+=("$name: $verdict")
    [ "${verdict%% *}" = PASS ] || failed=1
}

verdicts=()
failed=0

# 0. Calibration and baseline.
if [ "$ENT_RATE" = auto ]; then
    CAPACITY=$(wrk -t1 -c16 -d"${CALIB_S}s" -H "X-Tenant-Tier: enterprise" \
        -H "X-Tenant-Id: calib-$RUN" "$ENT_URL" 2>&1 |
        awk '/^Requests\/sec:/ { printf "%.0f", $2 }')
    ENT_RATE=$(offer_rate "${CAPACITY:-0}" "$ENT_FRACTION")
    CALIBRATION="enterprise offered $ENT_RATE req/s: $ENT_FRACTION of the ${CAPACITY:-0} req/s it served alone just now (closed loop, wrk -c16, $CALIB_S s)"
else
    CALIBRATION="enterprise offered $ENT_RATE req/s (ENT_RATE, as given)"
fi
echo "bulkhead load test against $BASE_URL: $DURATION s per phase"
echo "calibration: $CALIBRATION"

for attempt in 1 2 3; do
    hey_rate "$TMP/base" "$ENT_RATE" "$DURATION" "$ENT_URL" "${ENT_H[@]}"
    read -r BASE_RPS _ BASE_P99 BASE_TOTAL BASE_OK _ _ _ BASE_ERRS < <(hey_fields "$TMP/base")
    baseline_ok "$ENT_RATE" "$BASE_RPS" $((BASE_TOTAL - BASE_OK + BASE_ERRS)) && break
    [ "$attempt" = 3 ] && break
    echo "calibration: enterprise alone did not get the $ENT_RATE req/s offered without errors" \
        "($BASE_RPS req/s, $((BASE_TOTAL - BASE_OK + BASE_ERRS)) errors): offered $((ENT_RATE / 2)) instead"
    ENT_RATE=$((ENT_RATE / 2))
done
echo "enterprise offered $ENT_RATE req/s in every phase"
if ! baseline_ok "$ENT_RATE" "$BASE_RPS" $((BASE_TOTAL - BASE_OK + BASE_ERRS)); then
    verdicts+=("baseline: FAIL enterprise alone got $BASE_RPS of the $ENT_RATE req/s offered, $((BASE_TOTAL - BASE_OK + BASE_ERRS)) errors: this machine cannot serve the rate, the scenarios below measure nothing")
    failed=1
fi
header "baseline: enterprise alone"
row "enterprise" "$TMP/base"

# 1. Flood: free far above its limit (one tenant at FLOOD_RATE: almost all 429).
hey_rate "$TMP/f1" "$FLOOD_RATE" "$DURATION" "$BASE_URL/api/data?limit=10" \
    "X-Tenant-Tier: free" "X-Tenant-Id: flood-$RUN" &
p1=$!
hey_rate "$TMP/e1" "$ENT_RATE" "$DURATION" "$ENT_URL" "${ENT_H[@]}"
wait "$p1"
header "scenario 1: free flooded at $FLOOD_RATE req/s (rate limit 100/min per tenant)"
row "enterprise" "$TMP/e1"
row "free (flood)" "$TMP/f1"
judge "flood" "$TMP/e1"

# 2. Slow-query saturation: 6 free tenants x 10 concurrent 2 s queries = 60 in flight, beyond
#    free's 10 threads, 5 connections and 20 queue slots (each tenant stays under 100/min).
pids=()
for t in 1 2 3 4 5 6; do
    hey_n "$TMP/s2-$t" 40 10 "$BASE_URL/api/data?delay_ms=2000" "X-Tenant-Tier: free" \
        "X-Tenant-Id: slow$t-$RUN" &
    pids+=($!)
done
hey_rate "$TMP/e2" "$ENT_RATE" "$DURATION" "$ENT_URL" "${ENT_H[@]}"
wait "${pids[@]}"
cat "$TMP"/s2-* >"$TMP/s2"
header "scenario 2: free saturated with slow queries (60 concurrent x 2 s)"
row "enterprise" "$TMP/e2"
for t in 1 2 3 4 5 6; do row "free (slow tenant $t)" "$TMP/s2-$t"; done
judge "saturation" "$TMP/e2"

# 3. Failure storm: force_error on free until its breaker opens, and on.
hey_rate "$TMP/f3" 300 "$DURATION" "$BASE_URL/api/data?force_error=true" \
    "X-Tenant-Tier: free" "X-Tenant-Id: storm-$RUN" &
p3=$!
hey_rate "$TMP/e3" "$ENT_RATE" "$DURATION" "$ENT_URL" "${ENT_H[@]}"
wait "$p3"
header "scenario 3: failure storm on free (force_error=true, 300 req/s)"
row "enterprise" "$TMP/e3"
row "free (storm)" "$TMP/f3"
judge "failure storm" "$TMP/e3"

# 4. Fairness inside free (issue 13's scenario, within the built-in rate limits): a noisy tenant
#    sends 1 s queries from 12 and then 48 clients; quiet tenants (QUIET_CLIENTS clients, each
#    its own tenant, 2 req/s each, well inside 100/min) send cheap reads alone and beside it.
#    PASS when every quiet request succeeds, the quiet tenants keep >= MIN_RATIO of their
#    throughput and their p99 stays within 3x alone (floor P99_FLOOR_MS: a few dozen samples).
QUIET_CLIENTS=${QUIET_CLIENTS:-5}
# quiet_phase out tag: QUIET_CLIENTS open-loop clients for DURATION s; prints
# "rps p50_ms p99_ms total ok".
quiet_phase() {
    local out=$1 tag=$2 k pids=()
    for k in $(seq "$QUIET_CLIENTS"); do
        hey -z "${DURATION}s" -c 1 -q 2 -o csv -H "X-Tenant-Tier: free" \
            -H "X-Tenant-Id: quiet$k-$tag-$RUN" "$BASE_URL/api/data?limit=5" >"$out.$k" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}"
    cat "$out".* | awk -F, -v dur="$DURATION" '
        $7 ~ /^[0-9]+$/ { n++; t[n] = $1 * 1000; if ($7 >= 200 && $7 < 300) ok++ }
        END {
            if (n == 0) { print "0 0 0 0 0"; exit }
            # insertion sort is fine for a few hundred samples
            for (i = 2; i <= n; i++) { v = t[i]; j = i - 1; while (j > 0 && t[j] > v) { t[j + 1] = t[j]; j-- } t[j + 1] = v }
            p50 = t[int((n + 1) * 0.5)]; i99 = int(n * 0.99 + 0.5); if (i99 < 1) i99 = 1; if (i99 > n) i99 = n
            printf "%.1f %.2f %.2f %d %d\n", n / dur, p50, t[i99], n, ok
        }' >"$out"
}
qrow() { # label file
    read -r rps p50 p99 total ok <"$2"
    printf '  %-22s %9s %9s %9s %7s %7s\n' "$1" "$rps" "$p50" "$p99" "$total" "$ok"
}
# Scenario 3 left free's breaker open: wait until a request of free succeeds again (its
# half-open trial closes it), bounded by 30 s.
for _ in $(seq 60); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "X-Tenant-Tier: free" \
        -H "X-Tenant-Id: probe-$RUN" "$BASE_URL/api/data?limit=1")" = 200 ] && break
    sleep 0.5
done
quiet_phase "$TMP/q0" alone
header "scenario 4: fairness inside free (noisy tenant, 1 s queries, vs $QUIET_CLIENTS quiet tenants)"
qrow "quiet alone" "$TMP/q0"
read -r q0rps _ q0p99 _ <"$TMP/q0"
for nc in 12 48; do
    hey -z "$((DURATION + 2))s" -c "$nc" -t 60 -H "X-Tenant-Tier: free" -H "X-Tenant-Id: noisy$nc-$RUN" \
        "$BASE_URL/api/data?delay_ms=1000" >"$TMP/a4-$nc" 2>&1 &
    p4=$!
    sleep 1
    quiet_phase "$TMP/q$nc" "beside$nc"
    wait "$p4"
    qrow "quiet beside noisy c$nc" "$TMP/q$nc"
    row "noisy c$nc" "$TMP/a4-$nc"
    read -r qrps _ qp99 qtotal qok <"$TMP/q$nc"
    fair=$(awk -v a="$q0rps" -v b="$qrps" -v ap="$q0p99" -v bp="$qp99" -v t="$qtotal" -v ok="$qok" \
        -v minr="$MIN_RATIO" -v fl="$P99_FLOOR_MS" 'BEGIN {
        r = a > 0 ? b / a : 0; lim = ap * 3; if (lim < fl) lim = fl
        pass = t > 0 && ok == t && r >= minr && bp <= lim
        printf "%s noisy c%d: quiet all 2xx %d/%d, throughput ratio=%.3f, p99 %.2fms vs %.2fms alone (limit %.2fms)",
            pass ? "PASS" : "FAIL", '"$nc"', ok, t, r, bp, ap, lim }')
    echo "  verdict: ${fair#* }  -> ${fair%% *}"
    verdicts+=("fairness: $fair")
    [ "${fair%% *}" = PASS ] || failed=1
done

# 5 and 6 run closed loops at full speed (wrk): what a client that ignores Retry-After does.
# wrk's Lua gives each request a fresh tenant id (each inside its own rate limit).
fresh_lua() { # file path_and_query
    cat >"$1" <<LUA
local n = 0
request = function()
    n = n + 1
    return wrk.format("GET", "$2", { ["X-Tenant-Tier"] = "free",
        ["X-Tenant-Id"] = "fresh-$RUN-" .. n .. "-" .. math.random(1000000000) })
end
LUA
}
# wrk_storm out seconds connections args...: one closed-loop storm; prints nothing.
wrk_storm() {
    local out=$1 secs=$2 c=$3
    shift 3
    wrk -t1 -c"$c" -d"${secs}s" -T 10s "$@" >"$out" 2>&1
}
storm_row() { # label wrk-output
    awk -v l="$1" '/^Requests\/sec:/ { r = $2 } /Non-2xx/ { bad = $NF } /requests in/ { n = $1 }
        END { printf "  %-22s %9s %9s %9s %7s %7s  (wrk: 2xx = total - non-2xx)\n", l, r, "-", "-", n, n - bad }' "$2"
}
fresh_lua "$TMP/slow.lua" "/api/data?delay_ms=1000"
fresh_lua "$TMP/cheap.lua" "/api/data"
n=5
for storm in loop429 slowfresh cheapfresh; do
    case $storm in
    loop429)
        wrk_storm "$TMP/w-$storm" $((DURATION + 2)) 50 -H "X-Tenant-Tier: free" \
            -H "X-Tenant-Id: loop-$RUN" "$BASE_URL/api/data?limit=10" &
        title="scenario $n: closed-loop storm, one free tenant at full speed (wrk -c50, all 429)" ;;
    slowfresh)
        wrk_storm "$TMP/w-$storm" $((DURATION + 2)) 100 -s "$TMP/slow.lua" "$BASE_URL" &
        title="scenario $n: closed-loop storm, 1 s queries from a fresh free tenant each (wrk -c100)" ;;
    cheapfresh)
        n=6
        wrk_storm "$TMP/w-$storm" $((DURATION + 2)) 50 -s "$TMP/cheap.lua" "$BASE_URL" &
        title="scenario $n: busy free, cheap reads from a fresh tenant each at full speed (wrk -c50)" ;;
    esac
    ps=$!
    sleep 1
    hey_rate "$TMP/e-$storm" "$ENT_RATE" "$DURATION" "$ENT_URL" "${ENT_H[@]}"
    wait "$ps"
    header "$title"
    row "enterprise" "$TMP/e-$storm"
    storm_row "free (storm)" "$TMP/w-$storm"
    judge "$storm" "$TMP/e-$storm"
    # Let the storm's held and queued requests drain before the next one.
    for _ in $(seq 100); do
        curl -fsS -m 5 "$BASE_URL/metrics/bulkheads" | grep -o '"free":{.*' | sed 's/},"pro":{.*//' |
            grep -q '"threadPool":{"active":0,"queued":0' && break
        sleep 0.1
    done
done

echo
echo "== /metrics/bulkheads after the run"
metrics=$(curl -fsS -m 5 "$BASE_URL/metrics/bulkheads")
if command -v python3 >/dev/null 2>&1; then
    echo "$metrics" | python3 -m json.tool
else
    echo "$metrics"
fi
echo
echo "breaker states:"
for tier in $(echo "$metrics" | grep -o '"[a-z0-9_-]*":{"connectionPool"' | cut -d'"' -f2); do
    state=$(echo "$metrics" | sed -e "s/.*\"$tier\":{//" | grep -o '"circuitBreaker":{"state":"[A-Z_]*"' | head -1 | cut -d'"' -f6)
    printf '  %-12s %s\n' "$tier" "$state"
done

echo
echo "== verdict"
for v in "${verdicts[@]}"; do echo "  $v"; done
if [ "$failed" -eq 0 ]; then
    echo "PASS: enterprise ($ENT_RATE req/s offered) kept >= ${MIN_RATIO} of its throughput with no errors and p99 within ${P99_FACTOR}x (floor ${P99_FLOOR_MS} ms) in every scenario"
    exit 0
fi
echo "FAIL: see the verdicts above"
exit 1
