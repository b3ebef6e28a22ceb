#!/bin/bash
# test.sh: the whole test suite, as `make test` runs it (`make check`: the release pass alone).
# Ends with one line "N passed, N failed".
#
# Passes, each counted test by test (cmocka's TAP output):
#   1. release build: unit tests, integration tests (real binary, real PostgreSQL/Redis/nginx/
#      Chromium), deployment checks (docker-compose config), the layering of src/
#      (scripts/layers.sh);
#   2. AddressSanitizer + UndefinedBehaviorSanitizer build: unit and integration tests again;
#      any sanitizer report in a test or in a server log fails the run;
#   3. ThreadSanitizer build: the concurrent modules' unit tests (pools, queues, event loops,
#      limiter, breaker, tier set, api over real HTTP), then the server itself under ThreadSanitizer through the
#      integration tests that drive reload and the hot path (TSAN_INTEGRATION);
#   4. fuzz smoke: every libFuzzer target for FUZZ_SMOKE_SECONDS (default 10) each.
# Select passes with BH_PASSES="release asan tsan fuzz" (all by default); narrow tests with
# BH_TESTS="<substring of a test binary name> ..." (any of them).
#
# How it runs: the release build first; then the test binaries of every pass run as jobs, up to
# BH_JOBS at once (default: twice the CPUs; most of a test's time is spent waiting on servers
# and timers), longest first, while the sanitizer and fuzz builds go on beside them. Each job has
# its own work folder (BH_TEST_WORK) and its own database names (BH_TEST_DB_PREFIX) in the one
# shared PostgreSQL cluster, so jobs never see each other's files, servers or databases. Results
# are printed as jobs end. A job's expected length comes from build/test-times (the last run
# here) or, on a fresh clone, from the table below.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export BH_ROOT=$ROOT
PASSES=${BH_PASSES:-release asan tsan fuzz}
FILTER=${BH_TESTS:-}
NCPU=$(nproc 2>/dev/null || echo 2)
JOBS=${BH_JOBS:-$((2 * NCPU))}
MAKE_JOBS=${BH_MAKE_JOBS:-$NCPU}
ASAN_SKIP="test_kube test_deploy test_deploy_compose" # integration tests the ASan pass leaves to the release pass
WORK=$ROOT/build/test-work
LOGS=$ROOT/build/test-logs
TIMES=$ROOT/build/test-times
ARTIFACTS=$ROOT/build/test-artifacts
rm -rf "$WORK" "$LOGS"
mkdir -p "$WORK" "$LOGS" "$ARTIFACTS"
chmod 755 "$WORK"
export BH_TEST_ARTIFACTS=$ARTIFACTS
T0=$(date +%s)

# The test is selected by BH_TESTS (space-separated substrings; empty selects all).
selected() { # name
    [ -z "$FILTER" ] && return 0
    local f
    for f in $FILTER; do [[ "$1" == *"$f"* ]] && return 0; done
    return 1
}

passed=0
failed=0
failures=()

note_fail() {
    failed=$((failed + 1))
    failures+=("$1")
    echo "not ok - $1"
}

# ---- expected lengths ----------------------------------------------------------------------

# Seconds each slow job took on the 2-CPU machine (jobs not listed: a few seconds). Only the
# order matters: the longest start first, so the run does not end waiting on one long job.
declare -A EXPECT=(
    [release/test_redis_auth]=52 [release/test_fairness]=50 [release/test_redis]=48
    [release/test_reload]=47 [release/test_dashboard]=40 [release/test_faults]=13
    [release/test_faults_conns]=22 [release/test_deploy]=17 [release/test_deploy_compose]=15
    [release/test_scaleout]=24 [release/test_faults_resources]=24 [release/test_storms]=19
    [release/unit-test_dbpool]=5 [release/unit-test_dbpool_share]=4
    [release/unit-test_dbpool_health]=4 [release/unit-test_dbpool_event]=2 [release/unit-test_dbconn_stmt]=2
    [release/test_breaker]=16 [release/test_tenancy]=10
    [release/test_ratelimit]=10 [release/test_observability]=10 [release/test_core]=10
    [release/test_observability_logs]=9 [release/test_breaker_deadline]=5
    [release/compose]=5
    [asan/test_redis_auth]=57 [asan/test_fairness]=53 [asan/test_reload]=48 [asan/test_redis]=47
    [asan/unit-test_dbpool]=11 [asan/unit-test_dbpool_share]=8
    [asan/unit-test_dbpool_health]=8 [asan/unit-test_dbpool_event]=7 [asan/unit-test_dbconn_stmt]=7
    [asan/test_faults]=17 [asan/test_faults_conns]=29 [asan/test_dashboard]=31
    [asan/test_faults_resources]=28 [asan/test_storms]=25 [asan/test_scaleout]=23
    [asan/test_breaker]=19 [asan/test_breaker_deadline]=15 [asan/test_observability_logs]=12
    [asan/test_tenancy]=14 [asan/test_admin]=14 [asan/test_deploy]=13
    [asan/test_core]=12 [asan/test_budget]=11
    [tsan/test_redis]=53 [tsan/test_reload]=46 [tsan/unit-test_dbpool]=18 [tsan/unit-test_dbpool_share]=8
    [tsan/unit-test_dbpool_health]=8 [tsan/unit-test_dbpool_event]=4 [tsan/unit-test_dbconn_stmt]=8
    [tsan/test_dashboard]=34
    [tsan/test_breaker]=24 [tsan/test_breaker_deadline]=14 [tsan/test_observability_logs]=16
    [tsan/test_tenancy]=17 [tsan/test_core]=13
)
if [ -f "$TIMES" ]; then
    while read -r key secs; do [ -n "$key" ] && EXPECT[$key]=$secs; done <"$TIMES"
fi
: >"$TIMES.new"

# ---- the shared PostgreSQL cluster -----------------------------------------------------------

start_shared_pg() {
    local tmpl=$WORK/pg-template
    mkdir -p "$tmpl"
    chown postgres:postgres "$tmpl" 2>/dev/null || true
    if ! runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D "$tmpl/data" -U postgres -A trust \
        -E UTF8 --no-sync >"$LOGS/initdb.log" 2>&1; then
        cat "$LOGS/initdb.log"
        return 1
    fi
    export BH_TEST_PG_TEMPLATE=$tmpl/data
    SHARED_PG=$WORK/pg-shared
    mkdir -p "$SHARED_PG"
    cp -a "$tmpl/data" "$SHARED_PG/data"
    # A random high port; try again if it is taken. Jobs running at once each open pools of
    # their own: room for them (a private cluster keeps pg.sh's default).
    for _ in 1 2 3 4 5; do
        BH_TEST_PG_PORT=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768-)
        export BH_TEST_PG_PORT
        if PG_FSYNC=off PG_MAX_CONNECTIONS=$((300 * JOBS)) \
            scripts/pg.sh start "$SHARED_PG" "$BH_TEST_PG_PORT" >"$LOGS/pg-shared.log" 2>&1; then
            # Tests copy their databases from a template nobody connects to (unit tests use
            # "bulkhead" itself, and CREATE DATABASE refuses a template in use).
            export BH_TEST_DB_TEMPLATE=bh_template
            /usr/lib/postgresql/15/bin/psql -h 127.0.0.1 -p "$BH_TEST_PG_PORT" -U postgres -qAt \
                -c "CREATE DATABASE bh_template TEMPLATE bulkhead" postgres >>"$LOGS/pg-shared.log" 2>&1
            return
        fi
    done
    cat "$LOGS/pg-shared.log"
    return 1
}

stop_shared_pg() {
    # Jobs still running (an interrupted run): their process groups.
    for pid in "${!JOB_OF[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
    [ -n "${SHARED_PG:-}" ] && scripts/pg.sh stop "$SHARED_PG" >/dev/null 2>&1
    # Private clusters a crashed test left behind.
    find "$WORK" -maxdepth 3 -name postmaster.pid 2>/dev/null | while read -r f; do
        scripts/pg.sh stop "$(dirname "$(dirname "$f")")" >/dev/null 2>&1
    done
}
declare -A JOB_OF=() # pid -> job spec
trap stop_shared_pg EXIT

# ---- builds --------------------------------------------------------------------------------

build_dir() { # pass
    case "$1" in release) echo build ;; asan) echo build/asan ;; tsan) echo build/tsan ;; esac
}
build_san() { # pass
    case "$1" in asan) echo address,undefined ;; tsan) echo thread ;; *) echo "" ;; esac
}

# Build one pass (in the background for all but the first): its log and an exit status file.
build_pass() { # pass
    local pass=$1
    if [ "$pass" = fuzz ]; then
        make --no-print-directory -j"$MAKE_JOBS" fuzz-build >"$LOGS/build-$pass.log" 2>&1
    else
        make --no-print-directory -j"$MAKE_JOBS" BUILD="$(build_dir "$pass")" SAN="$(build_san "$pass")" \
            test-build >"$LOGS/build-$pass.log" 2>&1
    fi
}

# ---- jobs ----------------------------------------------------------------------------------

# A job is "pass|kind|name|binary": kind tap (a cmocka binary), script (a check script: its exit
# status, its last line printed), fuzz.
queue=()

enqueue() { # spec
    queue+=("$1")
}

# A test binary's job name: unit and integration tests may share a name (test_breaker), so an
# integration test's name is its own and a unit test's starts with "unit-".
job_name() { # binary
    case "$1" in
    */tests/unit/*) echo "unit-$(basename "$1")" ;;
    *) basename "$1" ;;
    esac
}

# The tests a pass runs, once its build is done.
enqueue_pass() { # pass
    local pass=$1 b bin name
    b=$(build_dir "$pass")
    case "$pass" in
    release | asan)
        for bin in "$b"/tests/unit/test_* "$b"/tests/integration/test_*; do
            [ -x "$bin" ] || continue
            name=$(basename "$bin")
            # Checks of the deployment files (compose, image, manifests): what they run of the
            # binary is start-up with each setting, which every other test runs under ASan; in the
            # ASan pass they were 49 job-seconds of the same file checks again.
            [ "$pass" = asan ] && case " $ASAN_SKIP " in *" $name "*) continue ;; esac
            selected "$name" && enqueue "$pass|tap|$(job_name "$bin")|$bin"
        done
        if [ "$pass" = release ] && selected compose && [ -f docker-compose.yml ]; then
            enqueue "release|script|compose|scripts/compose-check.sh"
        fi
        # The layering of src/: no include runs from a lower folder to a higher one.
        if [ "$pass" = release ] && selected layers; then
            enqueue "release|script|layers|scripts/layers.sh"
        fi
        ;;
    tsan)
        for name in fairq fairq_share fairq_take fairq_cost workpool workpool_stop workpool_share workpool_resize workpool_event dbpool dbpool_share dbpool_health dbpool_event dbconn_stmt dbwaitq dbidle dbopen dbconn dbpipe auth evloop evloop_timers share ratelimit tarpit breaker rlredis rlsync \
            log tierset janitor conn api api_tarpit report history tenantstat dbbudget capctl capctl_gate capctl_fleet fleet; do
            bin=$b/tests/unit/test_$name
            selected "test_$name" && [ -x "$bin" ] && enqueue "tsan|tap|$(job_name "$bin")|$bin"
        done
        # A report in a server's log fails the run (the scan at the end).
        for name in ${TSAN_INTEGRATION:-test_core test_reload test_ratelimit test_breaker \
            test_breaker_deadline test_observability test_observability_logs test_tenancy test_redis \
            test_dashboard test_dashboard_fleet test_tenants \
            test_slowclients test_pipelining}; do
            bin=$b/tests/integration/$name
            selected "$name" && [ -x "$bin" ] && enqueue "tsan|tap|$(job_name "$bin")|$bin"
        done
        ;;
    fuzz)
        for f in tests/fuzz/fuzz_*.c; do
            name=$(basename "$f" .c)
            enqueue "fuzz|fuzz|$name|"
        done
        ;;
    esac
}

# Each job's environment: the binary under test, the sanitizers' options, its own folders.
job_env() { # pass
    case "$1" in
    release) echo "BULKHEAD_BIN=build/bulkhead" ;;
    asan)
        echo "BULKHEAD_BIN=build/asan/bulkhead"
        echo "ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1:log_exe_name=0"
        echo "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1"
        echo "LSAN_OPTIONS=suppressions=$ROOT/tests/lsan.supp:print_suppressions=0"
        ;;
    tsan)
        echo "BULKHEAD_BIN=build/tsan/bulkhead"
        echo "TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$ROOT/tests/tsan.supp"
        ;;
    esac
}

# Start a job in the background, in its own process group (so an interrupted run can end it
# whole). Its output goes to its log; its exit status to the log's .rc.
launch() { # spec
    local spec=$1 pass kind name bin
    IFS='|' read -r pass kind name bin <<<"$spec"
    local log=$LOGS/$pass-$name.log work=$WORK/$pass-$name
    mkdir -p "$work"
    chmod 755 "$work"
    local envs=()
    mapfile -t envs < <(job_env "$pass")
    case "$kind" in
    tap)
        setsid -w env "${envs[@]}" BH_TEST_WORK="$work" BH_TEST_DB_PREFIX="${pass}_" \
            CMOCKA_MESSAGE_OUTPUT=TAP \
            bash -c 'timeout "${BH_TEST_TIMEOUT:-900}" "$1" >"$2" 2>&1; echo $? >"$2.rc"' _ \
            "$bin" "$log" &
        ;;
    script)
        setsid -w bash -c '"$2" >"$1" 2>&1; echo $? >"$1.rc"' _ "$log" "$bin" &
        ;;
    fuzz)
        setsid -w env FUZZ_NO_BUILD=1 FUZZ_TARGETS="$name" \
            bash -c 'scripts/fuzz.sh "$2" >"$1" 2>&1; echo $? >"$1.rc"' _ "$log" \
            "${FUZZ_SMOKE_SECONDS:-10}" &
        ;;
    esac
    JOB_OF[$!]="$spec"
    JOB_T0[$!]=$(date +%s)
}
declare -A JOB_T0=()

# Count a finished job's results (cmocka's TAP, or the fuzz and check scripts' lines).
collect() { # spec seconds
    local spec=$1 secs=$2 pass kind name bin
    IFS='|' read -r pass kind name bin <<<"$spec"
    local log=$LOGS/$pass-$name.log rc
    rc=$(cat "$log.rc" 2>/dev/null || echo 255)
    echo "$pass/$name $secs" >>"$TIMES.new"
    case "$kind" in
    tap)
        local ok nok
        ok=$(grep -cE '^ok [0-9]+' "$log")
        nok=$(grep -cE '^not ok [0-9]+' "$log")
        passed=$((passed + ok))
        grep -E '^not ok [0-9]+' "$log" | while read -r line; do echo "$pass/$name: $line"; done
        if [ "$nok" -gt 0 ]; then
            failed=$((failed + nok))
            while IFS= read -r -d '' entry; do failures+=("$pass/$name: $entry"); done \
                < <(tap_failures "$log")
        fi
        if [ "$rc" -ne 0 ] && [ "$nok" -eq 0 ]; then
            note_fail "$pass/$name: exited with status $rc without a failed test (crash, timeout or sanitizer report?), see $log"
        fi
        if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: ThreadSanitizer' "$log"; then
            note_fail "$pass/$name: sanitizer report in $log
$(san_excerpt "$log")"
        fi
        printf '  %-8s %-34s %3d ok %3d failed %4ds\n' "$pass" "$name" "$ok" "$nok" "$secs"
        ;;
    script)
        if [ "$rc" -eq 0 ]; then
            passed=$((passed + 1))
            printf '  %-8s %-34s %3d ok %3d failed %4ds\n' "$pass" \
                "$name ($(tail -1 "$log"))" 1 0 "$secs"
        else
            note_fail "$name ($bin): $(tail -3 "$log")"
        fi
        ;;
    fuzz)
        if grep -q '^fuzz ok' "$log"; then
            passed=$((passed + 1))
            grep '^fuzz ok' "$log"
        else
            note_fail "$(grep -m1 '^fuzz FAIL' "$log" || echo "fuzz $name: no result, see $log")"
        fi
        ;;
    esac
}

# The first sanitizer report of a log, shortened so that a CI log that keeps only the summary
# still shows it: its lines up to its summary, the first five frames of each stack.
san_excerpt() { # log
    awk '/WARNING: ThreadSanitizer|ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:/ { on = 1 }
         !on || /^ *$/ { next }
         /^ *#[0-9]+ / { n = $1; sub("#", "", n); if (n + 0 < 5) print "      " substr($0, 1, 200); next }
         { print "      " substr($0, 1, 300) }
         /SUMMARY:/ { exit }' "$1" | head -40
}

# Each failed test of a TAP log, NUL-terminated: its "not ok" line, cmocka's message and
# location after it, and the last two diagnostic lines the test printed before it, so that a CI
# log that shows only the summary still says what failed and with which numbers.
tap_failures() { # log
    awk '/^(not )?ok [0-9]+/ { if (cur != "") printf "%s%c", cur, 0; cur = "" }
         /^ok [0-9]+/ { d1 = d2 = ""; next }
         /^not ok [0-9]+/ { cur = $0; if (d1 != "") cur = cur "\n      " d1;
                            if (d2 != "") cur = cur "\n      " d2; d1 = d2 = ""; after = 2; next }
         /^# (not )?ok / { next }
         /^# / && cur != "" && after > 0 { cur = cur "\n      " $0; after--; next }
         /^# / { d1 = d2; d2 = substr($0, 1, 400) }
         END { if (cur != "") printf "%s%c", cur, 0 }' "$1"
}

# The pending job expected to take longest, removed from the queue into POPPED; false when the
# queue is empty.
pop_longest() {
    local i best=-1 bestw=-1 w pass kind name bin
    for i in "${!queue[@]}"; do
        IFS='|' read -r pass kind name bin <<<"${queue[$i]}"
        w=${EXPECT[$pass/$name]:-3}
        [ "$kind" = fuzz ] && w=${FUZZ_SMOKE_SECONDS:-10}
        if [ "$w" -gt "$bestw" ]; then
            best=$i
            bestw=$w
        fi
    done
    [ "$best" -ge 0 ] || return 1
    POPPED=${queue[$best]}
    unset 'queue[best]'
    queue=("${queue[@]}")
}

# ---- the run -------------------------------------------------------------------------------

echo "== bulkhead test suite: passes: $PASSES; $JOBS jobs at once"
start_shared_pg || note_fail "could not start the shared PostgreSQL cluster"

# Builds: the first pass in the foreground, the others one after the other in the background
# (each pass's tests start as soon as its build is done).
builds=()
for pass in $PASSES; do
    case "$pass" in
    release | asan | tsan | fuzz) builds+=("$pass") ;;
    *) note_fail "unknown pass $pass" ;;
    esac
done
BUILDER_PID=
BUILDER_PASS=
start_next_build() {
    BUILDER_PID=
    [ ${#builds[@]} -gt 0 ] || return 0
    BUILDER_PASS=${builds[0]}
    builds=("${builds[@]:1}")
    echo "-- building $BUILDER_PASS"
    build_pass "$BUILDER_PASS" &
    BUILDER_PID=$!
}
build_done() { # status
    if [ "$1" -eq 0 ]; then
        enqueue_pass "$BUILDER_PASS"
    else
        tail -40 "$LOGS/build-$BUILDER_PASS.log"
        note_fail "build of pass $BUILDER_PASS failed (see $LOGS/build-$BUILDER_PASS.log)"
    fi
}
start_next_build
if [ -n "$BUILDER_PID" ]; then
    wait "$BUILDER_PID"
    build_done $?
    start_next_build
fi

while [ ${#queue[@]} -gt 0 ] || [ ${#JOB_OF[@]} -gt 0 ] || [ -n "$BUILDER_PID" ]; do
    while [ ${#JOB_OF[@]} -lt "$JOBS" ] && pop_longest; do
        launch "$POPPED"
    done
    done_pid=
    wait -n -p done_pid
    status=$?
    [ -n "$done_pid" ] || continue
    if [ "$done_pid" = "$BUILDER_PID" ]; then
        build_done "$status"
        start_next_build
    elif [ -n "${JOB_OF[$done_pid]:-}" ]; then
        collect "${JOB_OF[$done_pid]}" $(($(date +%s) - JOB_T0[$done_pid]))
        unset 'JOB_OF[$done_pid]' 'JOB_T0[$done_pid]'
    fi
done
mv "$TIMES.new" "$TIMES"

# Server logs: any sanitizer report from a server process is a failure too.
while IFS= read -r f; do
    if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: ThreadSanitizer' "$f"; then
        cp "$f" "$LOGS/"
        note_fail "sanitizer report in server log $f (copied to $LOGS)
$(san_excerpt "$f")"
    fi
done < <(find "$WORK" -name 'server-*.log' 2>/dev/null)

if [ "$failed" -gt 0 ]; then
    echo "-- failures:"
    for f in "${failures[@]}"; do echo "   $f"; done
fi
echo "-- $(($(date +%s) - T0)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
