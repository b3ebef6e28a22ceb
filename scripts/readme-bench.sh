#!/bin/bash
# readme-bench.sh: copy the headline of bench/results/latest.md (command, machine, the targets
# table, the load-test verdict and the concurrency table) into README.md between the
# "bench:begin" and "bench:end" markers. Run after `make bench`; the README shows what the last
# run measured, never a hand-edited number.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC=$ROOT/bench/results/latest.md
README=$ROOT/README.md
[ -f "$SRC" ] || { echo "readme-bench: no $SRC; run make bench" >&2; exit 1; }
grep -q '^<!-- bench:begin -->$' "$README" || { echo "readme-bench: no markers in README" >&2; exit 1; }
# The results file up to (not including) "What the design choices buy", minus its title.
body=$(awk '/^What the design choices buy/ { exit } NR > 2 { print }' "$SRC")
stamp=$(sed -n '1s/^# bulkhead benchmark, //p' "$SRC")
tmp=$(mktemp)
awk -v stamp="$stamp" -v body="$body" '
    /^<!-- bench:begin -->$/ { print; print ""; print "The latest run (" stamp "), copied from `bench/results/latest.md` by"; print "`scripts/readme-bench.sh`; that file also has what each optimisation bought."; print ""; print body; print ""; skip = 1; next }
    /^<!-- bench:end -->$/ { skip = 0 }
    !skip { print }' "$README" >"$tmp"
mv "$tmp" "$README"
echo "README.md: benchmark table from $stamp"
