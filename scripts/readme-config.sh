#!/bin/sh
# readme-config.sh: refresh the tables in README.md that the binary prints from its own
# declarative tables, each between its two marker comments: the configuration tables
# (`bulkhead config --markdown`) and the error codes (`bulkhead errors --markdown`).
# tests/integration/test_docs.c fails when README.md and the binary disagree.
#
#   scripts/readme-config.sh [BINARY]        (default build/bulkhead)
set -eu
cd "$(dirname "$0")/.."
bin=${1:-build/bulkhead}

# replace_block BEGIN-MARKER-PREFIX END-MARKER FILE-WITH-CONTENT
replace_block() {
    awk -v begin="$1" -v end="$2" -v content="$3" '
    index($0, begin) == 1 { print; while ((getline line < content) > 0) print line; skip = 1; next }
    index($0, end) == 1 { skip = 0 }
    !skip { print }' README.md >README.md.new
    mv README.md.new README.md
}

tables=$(mktemp)
"$bin" config --markdown >"$tables"
replace_block '<!-- config tables: generated' '<!-- end of config tables -->' "$tables"
"$bin" errors --markdown >"$tables"
replace_block '<!-- error codes: generated' '<!-- end of error codes -->' "$tables"
rm -f "$tables"
