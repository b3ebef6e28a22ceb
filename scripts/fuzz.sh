#!/bin/bash
# fuzz.sh: build every libFuzzer target in tests/fuzz/ and run each for SECONDS.
#
#   scripts/fuzz.sh [SECONDS]        (default 60; `make fuzz` passes FUZZ_SECONDS, test.sh 10)
#   FUZZ_TARGETS="fuzz_tiers ..."    run only these targets
#   FUZZ_NO_BUILD=1                  run what is built (scripts/test.sh builds every target first,
#                                    `make fuzz-build`, then runs them side by side)
#
# Each target is built by the Makefile (make build/fuzz/<target>: clang with libFuzzer, ASan and
# UBSan, its own source and the src/ modules it needs, the project's warnings). It runs on a
# copy of its seed corpus (build/fuzz/corpus-<target>), so the checked-in corpus under
# tests/fuzz/corpus/ never changes during a run; crashing inputs are saved in
# build/fuzz/artifacts/<target>/ (replay one with: build/fuzz/<target> FILE). Prints one line
# per target, "fuzz ok <target> (<N> runs)" or "fuzz FAIL <target>: <reason>", and exits 1 if
# any failed.
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
SECS=${1:-60}
OUT=$ROOT/build/fuzz

case "$SECS" in
'' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [SECONDS]" >&2
    exit 2
    ;;
esac

# Longest input tried; the JSON targets need room for deep nesting.
declare -A MAXLEN=([fuzz_tiers]=8192 [fuzz_payload]=8192)

mkdir -p "$OUT/logs"

# One line saying why a run failed: the invariant's or the sanitizer's first line, and where
# libFuzzer saved the input.
failure_reason() { # log
    local why art
    why=$(grep -m1 -E 'invariant violated|ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|runtime error:' "$1")
    [ -z "$why" ] && why=$(grep -v '^ *$' "$1" | tail -1)
    why=${why#"${why%%[![:space:]]*}"}
    art=$(sed -nE 's/.*Test unit written to (.*)$/\1/p' "$1" | head -1)
    echo "$why${art:+ (input saved as $art)}"
}

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:symbolize=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
unset LSAN_OPTIONS

targets=${FUZZ_TARGETS:-$(for f in tests/fuzz/fuzz_*.c; do basename "$f" .c; done)}
failed=0
for t in $targets; do
    log=$OUT/logs/$t.log
    if [ -z "${FUZZ_NO_BUILD:-}" ] &&
        ! make --no-print-directory "build/fuzz/$t" >"$OUT/logs/$t.build.log" 2>&1; then
        echo "fuzz FAIL $t: build failed: $(grep -m1 -E 'error|FUZZ_NEEDS' "$OUT/logs/$t.build.log")"
        failed=1
        continue
    fi
    corpus=$OUT/corpus-$t
    rm -rf "$corpus"
    mkdir -p "$corpus" "$OUT/artifacts/$t"
    [ -d "tests/fuzz/corpus/$t" ] && cp -a "tests/fuzz/corpus/$t/." "$corpus/"
    "$OUT/$t" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
        -max_len="${MAXLEN[$t]:-4096}" -print_final_stats=1 \
        -artifact_prefix="$OUT/artifacts/$t/" "$corpus" >"$log" 2>&1
    rc=$?
    runs=$(sed -nE 's/^Done ([0-9]+) runs in .*/\1/p' "$log" | tail -1)
    if [ "$rc" -eq 0 ] && [ -n "$runs" ]; then
        echo "fuzz ok $t ($runs runs)"
    else
        echo "fuzz FAIL $t: $(failure_reason "$log") [exit $rc, log $log]"
        failed=1
    fi
done
exit "$failed"
