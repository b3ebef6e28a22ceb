#!/bin/bash
# layers.sh: src/ is in folders by layer, and includes run one way: down (or within a folder).
# Every `#include "x.h"` in src/ is an edge from the including file's folder to x.h's folder;
# an edge to a higher folder fails the check, unless it is listed in KNOWN below (with the work
# that removes it). Also fails on a module name used twice (objects are named by module alone),
# a file in a folder not listed in LAYERS, or an include of a header that src/ does not hold.
# Prints the folder-to-folder include counts, then one summary line; exits 1 on a violation.
# Run by scripts/test.sh (release pass); `scripts/layers.sh` alone needs no build.
set -u
cd "$(dirname "$0")/.." || exit 2

# Lowest first. "." is src/ itself: the commands and the composition root (main, server, config,
# tenantcli), which may include anything.
LAYERS=(lib http admission db tenants ops api .)

# Back edges known and left on purpose: "file header  why". An entry no longer seen is reported,
# so the list shrinks with the code.
KNOWN=()

declare -A rank=() where=() known=() seen=()
for i in "${!LAYERS[@]}"; do rank[${LAYERS[$i]}]=$i; done
for k in "${KNOWN[@]}"; do
    read -r f h _ <<<"$k"
    known["$f $h"]=1
done

bad=0
fail() {
    echo "layers: $*"
    bad=1
}

folder() { # path under src/ -> its folder name ("." for src/ itself)
    local d=${1#src/}
    case "$d" in
    */*) echo "${d%%/*}" ;;
    *) echo . ;;
    esac
}

# Where each module lives; a name twice is an error (objects are build/obj/<module>.o).
mapfile -t files < <(find src -name '*.[ch]' | sort)
for f in "${files[@]}"; do
    d=$(folder "$f")
    [ -n "${rank[$d]:-}" ] || fail "$f: folder $d is not a layer (LAYERS in $0)"
    b=$(basename "$f")
    if [ -n "${where[$b]:-}" ]; then
        fail "$f: $b is also ${where[$b]} (module names are unique across folders)"
    fi
    where[$b]=$f
done

declare -A count=()
edges=0
nknown=0
for f in "${files[@]}"; do
    from=$(folder "$f")
    while read -r h; do
        [ -n "$h" ] || continue
        to_path=${where[$h]:-}
        if [ -z "$to_path" ]; then
            fail "$f includes \"$h\", which is not in src/"
            continue
        fi
        to=$(folder "$to_path")
        edges=$((edges + 1))
        count["$from $to"]=$((${count["$from $to"]:-0} + 1))
        [ "$from" = "$to" ] && continue
        if [ "${rank[$from]:-0}" -lt "${rank[$to]:-0}" ]; then
            if [ -n "${known["$f $h"]:-}" ]; then
                seen["$f $h"]=1
                nknown=$((nknown + 1))
            else
                fail "$f ($from) includes $to_path ($to): a lower layer may not include a higher one"
            fi
        fi
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
done

# The graph by folder: rows include columns.
printf '%-10s' "includes"
for to in "${LAYERS[@]}"; do printf '%10s' "$to"; done
echo
for from in "${LAYERS[@]}"; do
    printf '%-10s' "$from"
    for to in "${LAYERS[@]}"; do
        n=${count["$from $to"]:-0}
        if [ "$n" -eq 0 ]; then printf '%10s' .; else printf '%10s' "$n"; fi
    done
    echo
done
for k in "${KNOWN[@]}"; do
    read -r f h _ <<<"$k"
    [ -n "${seen["$f $h"]:-}" ] || echo "layers: known back edge $f -> $h is gone: remove it from KNOWN"
done

if [ "$bad" -ne 0 ]; then
    echo "layers FAIL: an include runs up (see above)"
    exit 1
fi
echo "ok: ${#files[@]} files, $edges includes, $nknown known back edges"
