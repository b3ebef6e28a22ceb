#!/bin/sh
# readme-config.sh: refresh the configuration tables in README.md from the binary's own tables
# (`bulkhead config --markdown`), between the two marker comments. tests/integration/test_docs.c
# fails when README.md and the binary disagree.
#
#   scripts/readme-config.sh [BINARY]        (default build/bulkhead)
set -eu
cd "$(dirname "$0")/.."
bin=${1:-build/bulkhead}
tables=$(mktemp)
"$bin" config --markdown >"$tables"
awk -v tables="$tables" '
/^<!-- config tables: generated/ { print; while ((getline line < tables) > 0) print line; skip = 1; next }
/^<!-- end of config tables -->/ { skip = 0 }
!skip { print }' README.md >README.md.new
mv README.md.new README.md
rm -f "$tables"
