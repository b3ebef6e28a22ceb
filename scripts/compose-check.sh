#!/bin/bash
# compose-check.sh: the deployment file must be valid for Docker Compose (no engine runs here):
# without a profile, with each profile it declares, and with all of them at once. Prints what
# docker-compose said, then the profiles checked as the last line; exits 1 when any check failed.
# Run by scripts/test.sh (release pass).
set -u
cd "$(dirname "$0")/.." || exit 2
f=docker-compose.yml
ok=1
all=()
profiles=$(docker-compose -f "$f" config --profiles) || ok=0
docker-compose -f "$f" config -q || ok=0
for p in $profiles; do
    docker-compose -f "$f" --profile "$p" config -q || ok=0
    all+=(--profile "$p")
done
docker-compose -f "$f" "${all[@]}" config -q || ok=0
[ -n "$profiles" ] || { echo "no profiles declared in $f"; ok=0; }
echo "$profiles" | paste -sd, -
[ "$ok" = 1 ]
