#!/bin/bash
# test.sh: the whole test suite, as `make test` runs it. Ends with one line "N passed, N failed".
#
# Passes, each counted test by test (cmocka's TAP output):
#   1. release build: unit tests, integration tests (real binary, real PostgreSQL/Redis/nginx/
#      Chromium), deployment checks (docker-compose config);
#   2. AddressSanitizer + UndefinedBehaviorSanitizer build: unit and integration tests again;
#      any sanitizer report in a test or in a server log fails the run;
#   3. ThreadSanitizer build: the concurrent modules' unit tests (pools, queues, event loops,
#      limiter, breaker, tier set, api over real HTTP), then the server itself under ThreadSanitizer through the
#      integration tests that drive reload and the hot path (TSAN_INTEGRATION);
#   4. fuzz smoke: every libFuzzer target for FUZZ_SMOKE_SECONDS (default 10) each.
# Select passes with BH_PASSES="release asan tsan fuzz" (all by default); narrow tests with
# BH_TESTS="<substring of a test binary name> ..." (any of them).
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export BH_ROOT=$ROOT
PASSES=${BH_PASSES:-release asan tsan fuzz}
FILTER=${BH_TESTS:-}

# The test is selected by BH_TESTS (space-separated substrings; empty selects all).
selected() { # name
    [ -z "$FILTER" ] && return 0
    local f
    for f in $FILTER; do [[ "$1" == *"$f"* ]] && return 0; done
    return 1
}
JOBS=${BH_JOBS:-2}
WORK=$ROOT/build/test-work
LOGS=$ROOT/build/test-logs
rm -rf "$WORK" "$LOGS"
mkdir -p "$WORK" "$LOGS"
chmod 755 "$WORK"
export BH_TEST_WORK=$WORK
ARTIFACTS=$ROOT/build/test-artifacts
mkdir -p "$ARTIFACTS"
export BH_TEST_ARTIFACTS=$ARTIFACTS

passed=0
failed=0
failures=()

note_fail() {
    failed=$((failed + 1))
    failures+=("$1")
    echo "not ok - $1"
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

# Run one cmocka binary with TAP output; count its results.
run_tap() { # pass name binary
    local pass=$1 name=$2 bin=$3
    local log="$LOGS/$pass-$name.log"
    CMOCKA_MESSAGE_OUTPUT=TAP timeout "${BH_TEST_TIMEOUT:-900}" "$bin" >"$log" 2>&1
    local rc=$?
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
        note_fail "$pass/$name: exited with status $rc without a failed test (crash or sanitizer report?), see $log"
    fi
    if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: ThreadSanitizer' "$log"; then
        note_fail "$pass/$name: sanitizer report in $log"
    fi
    printf '  %-8s %-34s %3d ok %3d failed\n' "$pass" "$name" "$ok" "$nok"
}

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
    # A random high port; try again if it is taken.
    for _ in 1 2 3 4 5; do
        BH_TEST_PG_PORT=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768-)
        export BH_TEST_PG_PORT
        PG_FSYNC=off scripts/pg.sh start "$SHARED_PG" "$BH_TEST_PG_PORT" >"$LOGS/pg-shared.log" 2>&1 && return 0
    done
    cat "$LOGS/pg-shared.log"
    return 1
}

stop_shared_pg() {
    [ -n "${SHARED_PG:-}" ] && scripts/pg.sh stop "$SHARED_PG" >/dev/null 2>&1
    # Private clusters a crashed test left behind.
    for d in "$WORK"/pg-*; do
        [ -f "$d/data/postmaster.pid" ] && scripts/pg.sh stop "$d" >/dev/null 2>&1
    done
}
trap stop_shared_pg EXIT

run_suite() { # pass builddir kinds...
    local pass=$1 build=$2
    shift 2
    for kind in "$@"; do
        for bin in "$build"/tests/"$kind"/test_*; do
            [ -x "$bin" ] || continue
            local name
            name=$(basename "$bin")
            selected "$name" || continue
            run_tap "$pass" "$name" "$bin"
        done
    done
}

build() { # builddir san
    local out
    if ! out=$(make --no-print-directory -j"$JOBS" BUILD="$1" SAN="$2" test-build 2>&1); then
        echo "$out" | tail -40
        note_fail "build $1 (SAN=$2) failed"
        return 1
    fi
}

echo "== bulkhead test suite: passes: $PASSES"
start_shared_pg || { note_fail "could not start the shared PostgreSQL cluster"; }

for pass in $PASSES; do
    case "$pass" in
    release)
        echo "-- release build"
        build build "" || continue
        export BULKHEAD_BIN=build/bulkhead
        run_suite release build unit integration
        # Deployment files must be valid for Docker Compose (no engine runs here): without a
        # profile, with each profile the file declares, and with all of them at once.
        for f in docker-compose.yml; do
            if [ -f "$f" ]; then
                ok=1
                all=""
                : >"$LOGS/compose.log"
                profiles=$(docker-compose -f "$f" config --profiles 2>>"$LOGS/compose.log") || ok=0
                docker-compose -f "$f" config -q >>"$LOGS/compose.log" 2>&1 || ok=0
                for p in $profiles; do
                    docker-compose -f "$f" --profile "$p" config -q >>"$LOGS/compose.log" 2>&1 || ok=0
                    all="$all --profile $p"
                done
                # shellcheck disable=SC2086
                docker-compose -f "$f" $all config -q >>"$LOGS/compose.log" 2>&1 || ok=0
                if [ "$ok" = 1 ] && [ -n "$profiles" ]; then
                    passed=$((passed + 1))
                    printf '  %-8s %-34s %3d ok %3d failed\n' release \
                        "docker-compose config ($(echo $profiles | tr ' ' ','))" 1 0
                else
                    note_fail "docker-compose config: $(tail -3 "$LOGS/compose.log")"
                fi
            fi
        done
        ;;
    asan)
        echo "-- AddressSanitizer + UndefinedBehaviorSanitizer build"
        build build/asan address,undefined || continue
        export BULKHEAD_BIN=build/asan/bulkhead
        export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1:log_exe_name=0
        export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
        export LSAN_OPTIONS=suppressions=$ROOT/tests/lsan.supp:print_suppressions=0
        run_suite asan build/asan unit integration
        unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS
        ;;
    tsan)
        echo "-- ThreadSanitizer build (concurrent modules, then the server under load and reload)"
        build build/tsan thread || continue
        export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
        for m in fairq workpool dbpool evloop share ratelimit breaker rlredis log tierset janitor \
            api report history capctl; do
            bin=build/tsan/tests/unit/test_$m
            selected "test_$m" || continue
            [ -x "$bin" ] && run_tap tsan "test_$m" "$bin"
        done
        # A report in a server's log fails the run (the scan at the end).
        export BULKHEAD_BIN=build/tsan/bulkhead
        for t in ${TSAN_INTEGRATION:-test_core test_reload test_ratelimit test_breaker test_observability \
            test_tenancy test_redis test_dashboard}; do
            bin=build/tsan/tests/integration/$t
            selected "$t" || continue
            [ -x "$bin" ] && run_tap tsan "$t" "$bin"
        done
        unset TSAN_OPTIONS
        ;;
    fuzz)
        echo "-- fuzz smoke (${FUZZ_SMOKE_SECONDS:-10} s per target)"
        if out=$(scripts/fuzz.sh "${FUZZ_SMOKE_SECONDS:-10}" 2>&1); then
            n=$(echo "$out" | grep -c '^fuzz ok')
            passed=$((passed + n))
            echo "$out" | grep '^fuzz'
        else
            echo "$out" | tail -30
            n=$(echo "$out" | grep -c '^fuzz ok')
            passed=$((passed + n))
            while read -r line; do note_fail "$line"; done < <(echo "$out" | grep '^fuzz FAIL')
            [ "$(echo "$out" | grep -c '^fuzz FAIL')" -eq 0 ] && note_fail "fuzz: scripts/fuzz.sh failed"
        fi
        ;;
    *)
        note_fail "unknown pass $pass"
        ;;
    esac
done

# Server logs: any sanitizer report from a server process is a failure too.
for f in "$WORK"/server-*.log; do
    [ -f "$f" ] || continue
    if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: ThreadSanitizer' "$f"; then
        cp "$f" "$LOGS/"
        note_fail "sanitizer report in server log $(basename "$f") (copied to $LOGS)"
    fi
done

if [ "$failed" -gt 0 ]; then
    echo "-- failures:"
    for f in "${failures[@]}"; do echo "   $f"; done
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
