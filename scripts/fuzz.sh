#!/bin/bash
# fuzz.sh: build every libFuzzer target in tests/fuzz/ and run each for SECONDS.
#
#   scripts/fuzz.sh [SECONDS]        (default 60; `make fuzz` passes FUZZ_SECONDS, test.sh 10)
#   FUZZ_TARGETS="fuzz_tiers ..."    run only these targets
#
# Each target is built with clang -fsanitize=fuzzer,address,undefined into build/fuzz/, from its
# own source and only the src/ files it needs, with the project's warning flags. It runs on a
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
CC=${FUZZ_CC:-clang}

case "$SECS" in
'' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [SECONDS]" >&2
    exit 2
    ;;
esac

# The src/ files each target links besides its own source.
declare -A NEEDS=(
    [fuzz_params]="params.c"
    [fuzz_dotenv]="config.c fileio.c xalloc.c"
    [fuzz_tiers]="tiers.c assets.c fileio.c xalloc.c"
    [fuzz_payload]="params.c"
    [fuzz_redisurl]="rlredis.c log.c xalloc.c config.c fileio.c"
    [fuzz_logescape]="log.c"
    [fuzz_proxies]="params.c"
)
# Longest input tried; the JSON targets need room for deep nesting.
declare -A MAXLEN=([fuzz_tiers]=8192 [fuzz_payload]=8192)

# The Makefile's warnings, read from its WARN line(s), less the ones only gcc knows.
WARN=""
# shellcheck disable=SC2013 # words, not lines
for w in $(sed -n '/^WARN :=/,/[^\\]$/p' Makefile | sed -e 's/^WARN :=//' -e 's/\\$//'); do
    case "$w" in
    -Wlogical-op | -Wduplicated-* | -Wjump-misses-init | -Wformat-signedness | -Wstringop-* | \
        -Wformat-overflow* | -Wformat-truncation* | -Wrestrict | -Wnull-dereference=*) ;;
    *) WARN="$WARN $w" ;;
    esac
done
if [[ "$WARN" != *-Werror* ]]; then
    echo "fuzz FAIL setup: could not read WARN from the Makefile"
    exit 1
fi
PKG_CFLAGS=$(pkg-config --cflags jansson hiredis 2>/dev/null)
PKG_LIBS=$(pkg-config --libs jansson hiredis 2>/dev/null)
# shellcheck disable=SC2206
CFLAGS=(-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -fno-sanitize-recover=all
    $WARN -pthread -DASSET_ROOT="\"$ROOT\"" -Isrc -Itests/fuzz $PKG_CFLAGS)
SAN_OBJ=-fsanitize=fuzzer-no-link,address,undefined
SAN_BIN=-fsanitize=fuzzer,address,undefined

mkdir -p "$OUT/obj" "$OUT/logs"

# Compile one src/ file for fuzzing, once per run (targets share it); sets OBJ.
declare -A BUILT=()
build_obj() { # file.c
    OBJ=$OUT/obj/${1%.c}.o
    if [ -z "${BUILT[$1]+x}" ]; then
        # shellcheck disable=SC2086
        "$CC" "${CFLAGS[@]}" $SAN_OBJ -c -o "$OBJ" "src/$1" || return 1
        BUILT[$1]=1
    fi
}

build_target() { # target
    local t=$1 objs=() f
    for f in ${NEEDS[$t]}; do
        build_obj "$f" || return 1
        objs+=("$OBJ")
    done
    # shellcheck disable=SC2086
    "$CC" "${CFLAGS[@]}" $SAN_BIN -o "$OUT/$t" "tests/fuzz/$t.c" "${objs[@]}" $PKG_LIBS -pthread
}

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
    if [ -z "${NEEDS[$t]+x}" ]; then
        echo "fuzz FAIL $t: no entry in scripts/fuzz.sh's NEEDS table"
        failed=1
        continue
    fi
    log=$OUT/logs/$t.log
    if ! build_target "$t" >"$OUT/logs/$t.build.log" 2>&1; then
        echo "fuzz FAIL $t: build failed: $(grep -m1 -E 'error' "$OUT/logs/$t.build.log")"
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
