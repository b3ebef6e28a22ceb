#!/usr/bin/env bash
# bench/conns.sh: issue 32's measurements, the HTTP layer judged side by side in one run on this
# machine. Four servers answer GET /health with the same JSON: bulkhead, build/bench/minimal
# (bare libmicrohttpd, bulkhead's daemon flags), nginx (one worker, `return 200`) and
# build/bench/h2o-minimal (h2o's library, one event loop). For each:
#   - memory per idle keep-alive connection: RSS growth of the server (nginx: its worker) while
#     build/bench/idleconns holds CONNS_IDLE connections, one GET /health each, then idle,
#     divided by the connections (kernel socket buffers are not in RSS, for any of them);
#   - many active connections (bulkhead only): wrk -t2 -c CONNS_MANY on /api/data enterprise with
#     a 2 s timeout, requests past it counted; judged with TARPIT=false (wrk retries a 503 at
#     once: with the tarpit, as deployed, such early retries are held until their Retry-After,
#     reported beside it);
#   - CPU per request: utime + stime of the server over wrk -t1 -c64 on /health, DUR s, over
#     the requests served (median of RUNS interleaved rounds);
#   - slow clients (not minimal): idleconns -s CONNS_SLOW_EVERY_S holds CONNS_SLOW connections
#     (each count in turn: the issue's 4000, and 5000, past libmicrohttpd's default cap of 4096
#     that bulkhead had before its own HTTP layer)
#     from 127.0.0.1, each a partial head and then one byte every 5 s, reopened when closed;
#     beside them a normal client (hey -c1, a new connection per request, 100 req/s, DUR s,
#     5 s timeout): requests served, errors, p99; the same client alone first;
#   - the error bodies: status, Content-Type and the start of the body for a 20 KB and a 64 KB
#     request head and a malformed request line (curl -i).
# bulkhead runs three times: with its defaults (the slow-client row, as deployed), with
# HTTP_MAX_CONNECTIONS and HTTP_IDLE_TIMEOUT_S raised so that it can hold CONNS_IDLE idle
# connections at all, and the same with the smallest HTTP_CONNECTION_MEMORY (4096: under
# libmicrohttpd its per-connection pool; now only the longest head a buffer grows to); every idle row uses idle timeouts of 600 s (h2o's http1 request timeout,
# nginx's keepalive_timeout) so that none closes a connection while they are counted.
#
# Sourced by bench/run.sh (BENCH_SECTIONS "conns": section_conns, then conns_table), which
# provides pids, free_port, $DB, $BIN, $MINIMAL, $WORK, DUR and RUNS; or run alone, which
# starts its own PostgreSQL and writes bench/results/partial-<date>.md:
#   flock -o /work/.machine.lock bench/conns.sh
# Settings: CONNS_IDLE (10000), CONNS_MANY (10000), CONNS_SLOW ("4000 5000"), CONNS_SLOW_EVERY_S (5), BENCH_DURATION (10),
# BENCH_RUNS (3).

CONNS_IDLE=${CONNS_IDLE:-10000}
CONNS_SLOW=${CONNS_SLOW:-4000 5000}
CONNS_SLOW_EVERY_S=${CONNS_SLOW_EVERY_S:-5}
CONNS_MANY=${CONNS_MANY:-10000}
CONNS_NAMES="bulkhead minimal nginx h2o"

conns_rss_kb() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
conns_cpu_s() { awk '{ printf "%.2f\n", ($14 + $15) / '"$(getconf CLK_TCK)"' }' "/proc/$1/stat"; }
conns_median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# conns_up url: wait up to 10 s for /health.
conns_up() {
    for _ in $(seq 100); do curl -fs "$1/health" >/dev/null && return 0; sleep 0.1; done
    echo "conns: $(date -u +%T) $1 does not answer" >&2
    return 1
}

# conns_bulkhead name VAR=value...: a bulkhead on the bench database; sets CPID[name], CURL[name].
conns_bulkhead() {
    local name=$1 port
    shift
    port=$(free_port)
    (cd "$WORK" && exec env DATABASE_URL="$DB" API_PORT="$port" API_BIND=127.0.0.1 "$@" \
        "$BIN" >"$WORK/conns-$name.log" 2>&1) &
    pids+=($!)
    CPID[$name]=$!
    CURL[$name]=http://127.0.0.1:$port
}

# conns_nginx name keepalive_s: one nginx worker answering every path with /health's body.
conns_nginx() {
    local name=$1 port dir=$WORK/nginx-$1
    port=$(free_port)
    mkdir -p "$dir/tmp"
    cat >"$dir/nginx.conf" <<NGINX
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    keepalive_timeout $2;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$port backlog=1024;
        location / {
            default_type application/json;
            add_header X-Request-Id 0123abcd-1f;
            return 200 '{"status":"healthy"}';
        }
    }
}
NGINX
    nginx -p "$dir" -c "$dir/nginx.conf" 2>"$dir/stderr.log" &
    pids+=($!)
    CMASTER[$name]=$!
    CURL[$name]=http://127.0.0.1:$port
}

# The process whose RSS and CPU count: nginx's worker, the server itself otherwise.
conns_pid() {
    local name=$1 m=${CMASTER[$1]:-}
    if [ -n "$m" ]; then
        local c
        for _ in $(seq 50); do
            c=$(cat "/proc/$m/task/$m/children" 2>/dev/null | awk '{ print $1 }')
            [ -n "$c" ] && { echo "$c"; return; }
            sleep 0.1
        done
        echo "$m"
    else
        echo "${CPID[$name]}"
    fi
}

conns_start_all() {
    declare -gA CPID CURL CMASTER
    local p
    conns_bulkhead bulkhead HTTP_MAX_CONNECTIONS=$((CONNS_IDLE + 2000)) HTTP_IDLE_TIMEOUT_S=600 TARPIT=false
    conns_bulkhead bulkhead-default
    conns_bulkhead bulkhead-4k HTTP_MAX_CONNECTIONS=$((CONNS_IDLE + 2000)) HTTP_IDLE_TIMEOUT_S=600 \
        HTTP_CONNECTION_MEMORY=4096
    p=$(free_port)
    "$MINIMAL" "$p" $((CONNS_IDLE + 2000)) &
    pids+=($!)
    CPID[minimal]=$! CURL[minimal]=http://127.0.0.1:$p
    conns_nginx nginx 600
    conns_nginx nginx-default 75
    p=$(free_port)
    "$H2O_MINIMAL" "$p" 600 2>"$WORK/h2o.log" &
    pids+=($!)
    CPID[h2o]=$! CURL[h2o]=http://127.0.0.1:$p
    p=$(free_port)
    "$H2O_MINIMAL" "$p" 2>"$WORK/h2o-default.log" &
    pids+=($!)
    CPID[h2o-default]=$! CURL[h2o-default]=http://127.0.0.1:$p
    local n
    for n in "${!CURL[@]}"; do conns_up "${CURL[$n]}" || return 1; done
    for n in "${!CURL[@]}"; do CPID[$n]=$(conns_pid "$n"); done
}

# conns_wait_line file pattern seconds
conns_wait_line() {
    local i
    for i in $(seq $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}

# Memory per idle connection: "bytes_per_conn replied before_mb after_mb".
conns_idle() {
    local name=$1 url=${CURL[$1]} pid=${CPID[$1]} port r0 r1 c out=$WORK/idle-$1.out
    port=${url##*:}
    wrk -t1 -c64 -d1s "$url/health" >/dev/null 2>&1 # fault in the request path
    r0=$(conns_rss_kb "$pid")
    "$IDLECONNS" 127.0.0.1 "$port" "$CONNS_IDLE" >"$out" 2>&1 &
    c=$!
    conns_wait_line "$out" '^ready' 180
    sleep 1
    r1=$(conns_rss_kb "$pid")
    kill -TERM "$c" 2>/dev/null
    wait "$c" 2>/dev/null
    local replied
    replied=$(sed -n 's/^ready .*replied=\([0-9]*\).*/\1/p' "$out")
    awk -v a="$r0" -v b="$r1" -v n="${replied:-0}" 'BEGIN {
        printf "%.0f %d %.1f %.1f\n", (n > 0 ? (b - a) * 1024 / n : 0), n, a / 1024, b / 1024 }'
    # Let the server close what it held before the next one is measured.
    sleep 2
}

# CPU per request on /health: "us_per_req req_per_s".
conns_cpu() {
    local url=${CURL[$1]} pid=${CPID[$1]} c0 c1 out
    c0=$(conns_cpu_s "$pid")
    out=$(wrk -t1 -c64 -d"${DUR}s" "$url/health" 2>&1)
    c1=$(conns_cpu_s "$pid")
    awk -v c0="$c0" -v c1="$c1" '/ requests in / { n = $1 } /^Requests\/sec:/ { r = $2 }
        END { printf "%.1f %.0f\n", (n > 0 ? (c1 - c0) * 1e6 / n : 0), r }' <<<"$out"
}

# Many active connections on /api/data (enterprise): wrk -t2 -c CONNS_MANY, DUR s, a 2 s timeout,
# on the bulkhead that may hold them: "req_per_s non2xx connect_errors read_write_errors
# timeouts p99_ms peak_rss_mb".
conns_many() {
    local url=${CURL[$1]} pid=${CPID[$1]} out=$WORK/many-$1.out s peak=0 r d0 d1
    d0=$(conns_listen_drops)
    wrk -t2 -c"$CONNS_MANY" -d"${DUR}s" --timeout 2s --latency -H "X-Tenant-Tier: enterprise" \
        "$url/api/data?limit=10" >"$out" 2>&1 &
    s=$!
    while kill -0 "$s" 2>/dev/null; do
        r=$(conns_rss_kb "$pid")
        [ "${r:-0}" -gt "$peak" ] && peak=$r
        sleep 0.5
    done
    wait "$s" 2>/dev/null
    d1=$(conns_listen_drops)
    awk -v peak="$peak" -v drops=$((d1 - d0)) '
        /^Requests\/sec:/ { rps = $2 } /Non-2xx/ { bad = $NF }
        /Socket errors:/ { gsub(/,/, ""); conn = $4; rw = $6 + $8; to = $10 }
        /^ +99%/ { v = $2; m = 1; if (v ~ /us$/) m = 0.001; else if (v ~ /ms$/) m = 1; else if (v ~ /s$/) m = 1000
                   sub(/[a-z]+$/, "", v); p99 = v * m }
        END { printf "%.0f %d %d %d %d %.1f %.1f %d\n", rps, bad, conn, rw, to, p99, peak / 1024, drops }' "$out"
    sleep 2
}

# Handshakes the kernel dropped for a full accept queue, machine-wide so far (nstat).
conns_listen_drops() { nstat -az TcpExtListenDrops 2>/dev/null | awk '/ListenDrops/ { print $2; f = 1 } END { if (!f) print 0 }'; }

# A normal client, DUR s: "served errors p99_ms".
conns_client() {
    hey -c 1 -q 100 -z "${DUR}s" -t 5 -disable-keepalive "$1/health" 2>&1 | awk '
        /^  99% in / { p99 = $3 * 1000 }
        /^  \[200\]/ { ok = $2 }
        /^Error distribution:/ { e = 1; next }
        e && /^  \[[0-9]+\]/ { gsub(/[][]/, "", $1); bad += $1 }
        END { printf "%d %d %s\n", ok, bad, (ok > 0 ? sprintf("%.2f", p99) : "-") }'
}

# conns_slow name count: slow clients beside a normal one: "alone(served errors p99) beside(served errors p99)
# slow_opened slow_open_at_end slow_closed slow_reopened".
conns_slow() {
    local url=${CURL[$1]} port c out=$WORK/slow-$1-$2.out alone beside
    port=${url##*:}
    alone=$(conns_client "$url")
    "$IDLECONNS" -s "$CONNS_SLOW_EVERY_S" 127.0.0.1 "$port" "$2" >"$out" 2>&1 &
    c=$!
    conns_wait_line "$out" '^ready' 180
    sleep $((CONNS_SLOW_EVERY_S + 1))
    beside=$(conns_client "$url")
    kill -USR1 "$c"
    conns_wait_line "$out" '^open=' 5
    kill -TERM "$c" 2>/dev/null
    wait "$c" 2>/dev/null
    local opened open closed reopened
    opened=$(sed -n 's/^ready opened=\([0-9]*\).*/\1/p' "$out")
    open=$(sed -n 's/^open=\([0-9]*\).*/\1/p' "$out" | tail -1)
    closed=$(sed -n 's/^closed_by_server=\([0-9]*\).*/\1/p' "$out" | tail -1)
    reopened=$(sed -n 's/.*reopened=\([0-9]*\).*/\1/p' "$out" | tail -1)
    echo "$alone $beside ${opened:-0} ${open:-0} ${closed:-0} ${reopened:-0}"
    sleep 2
}

# The error answers: "status content-type body-start" for a request made with curl args, or,
# with "raw PORT LINE", for a request line curl cannot send, written to the socket as it is.
conns_error() {
    local url=$1
    shift
    if [ "$url" = raw ]; then
        timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "%s\r\nHost: bench\r\n\r\n" "$2" >&3 && timeout 3 cat <&3' _ "$1" "$2" 2>/dev/null
    else
        curl -si --max-time 5 "$@" "$url" 2>/dev/null
    fi | tr -d '\r' | awk '
        NR == 1 { st = $2 } /^$/ && !b { b = 1; next }
        !b && tolower($1) == "content-type:" { ct = $2 }
        b { body = body $0 " " }
        END { gsub(/\|/, "/", body); body = substr(body, 1, 48); if (st == "") print "no answer";
              else printf "%s %s `%s`\n", st, (ct == "" ? "(none)" : ct), body }'
}

section_conns() {
    H2O_MINIMAL=${H2O_MINIMAL:-$ROOT/build/bench/h2o-minimal}
    IDLECONNS=${IDLECONNS:-$ROOT/build/bench/idleconns}
    local n missing=""
    for n in nginx hey wrk "$H2O_MINIMAL" "$IDLECONNS"; do
        command -v "$n" >/dev/null 2>&1 || [ -x "$n" ] || missing+=" $n"
    done
    if [ -n "$missing" ]; then
        echo "conns: $(date -u +%T) missing$missing (make bench builds build/bench/*; scripts/deps.sh bench)" >&2
        CONNS_SKIPPED=$missing
        return 0
    fi
    conns_start_all || { CONNS_SKIPPED=" (a server did not start)"; return 0; }
    declare -gA C_IDLE C_CPU C_SLOW C_ERR
    echo "conns: $(date -u +%T) idle connections ($CONNS_IDLE each)" >&2
    for n in $CONNS_NAMES bulkhead-4k; do C_IDLE[$n]=$(conns_idle "$n"); done
    echo "conns: $(date -u +%T) CPU per request, $RUNS rounds of $DUR s" >&2
    local r
    for n in $CONNS_NAMES; do : >"$WORK/cpu-$n"; done
    for r in $(seq "$RUNS"); do
        for n in $CONNS_NAMES; do conns_cpu "$n" >>"$WORK/cpu-$n"; done
    done
    for n in $CONNS_NAMES; do
        C_CPU[$n]="$(cut -d' ' -f1 "$WORK/cpu-$n" | conns_median) $(cut -d' ' -f2 "$WORK/cpu-$n" | conns_median)"
    done
    echo "conns: $(date -u +%T) /api/data at c=$CONNS_MANY" >&2
    C_MANY=$(conns_many bulkhead)
    C_MANY_DEFAULT=$(conns_many bulkhead-default)
    # The error answers first, from servers that have held nothing yet.
    echo "conns: $(date -u +%T) error answers" >&2
    head -c 20000 /dev/zero | tr '\0' a | sed 's/^/X-Big: /' >"$WORK/h20k"
    head -c 65536 /dev/zero | tr '\0' a | sed 's/^/X-Big: /' >"$WORK/h64k"
    for n in bulkhead-default minimal nginx-default h2o-default; do
        C_ERR[$n:20k]=$(conns_error "${CURL[$n]}/health" -H @"$WORK/h20k")
        C_ERR[$n:64k]=$(conns_error "${CURL[$n]}/health" -H @"$WORK/h64k")
        C_ERR[$n:line]=$(conns_error raw "${CURL[$n]##*:}" 'GET /health HTTP/1.1 junk')
        C_ERR[$n:garbage]=$(conns_error raw "${CURL[$n]##*:}" 'GARBAGE')
    done
    local k
    for k in $CONNS_SLOW; do
        echo "conns: $(date -u +%T) slow clients ($k, a byte every $CONNS_SLOW_EVERY_S s)" >&2
        for n in bulkhead-default nginx-default h2o-default; do C_SLOW[$n:$k]=$(conns_slow "$n" "$k"); done
    done
    for n in "${!CPID[@]}"; do kill -TERM "${CMASTER[$n]:-${CPID[$n]}}" 2>/dev/null; done
}

conns_target() { awk -v v="$1" -v t="$2" 'BEGIN { print (v + 0 <= t ? "met" : "**missed**") }'; }

# Server CPU per /api/data request (the data section's figures, when it ran in the same run)
# beside the floors measured in the same run: the cheapest HTTP server's CPU per /health (above)
# plus pgbench's client CPU per transaction (libpq and the protocol, the data section).
conns_data_cpu_rows() {
    local c us pg http n v
    http=$(for n in minimal nginx h2o; do read -r v _ <<<"${C_CPU[$n]}"; echo "$v"; done | sort -n | head -1)
    for c in 16 64; do
        [ -s "$WORK/data-$c" ] || continue
        us=$(cut -d' ' -f5 "$WORK/data-$c" | conns_median)
        pg=$(cut -d' ' -f7 "$WORK/data-$c" | conns_median)
        echo "| server CPU per /api/data request, c=$c (the data section, utime + stime over requests) / the floor: the cheapest server's CPU per /health above + pgbench's client per transaction | $us us | floor $(awk -v a="$http" -v b="$pg" 'BEGIN { printf "%.1f", a + b }') us ($http + $pg) | | | <= 10 us: $(conns_target "$us" 10); <= the floor: $(awk -v u="$us" -v a="$http" -v b="$pg" 'BEGIN { print (u <= a + b ? "met" : "**missed**") }') |"
    done
}

# The table (markdown), after section_conns.
conns_table() {
    echo "HTTP layer, side by side (bench/conns.sh, issue 32):"
    echo
    if [ -n "${CONNS_SKIPPED:-}" ]; then
        echo "not measured: missing${CONNS_SKIPPED}"
        return
    fi
    local n b r a0 a1 f
    echo "| measurement | bulkhead | bare libmicrohttpd (bench/minimal) | nginx (one worker) | h2o library (bench/h2o-minimal) | target |"
    echo "|---|---|---|---|---|---|"
    f="| memory per idle keep-alive connection, $CONNS_IDLE connections, one GET /health each (RSS growth / connections; RSS before -> after) |"
    for n in $CONNS_NAMES; do
        read -r b r a0 a1 <<<"${C_IDLE[$n]}"
        f+=" $b B ($r replied; $a0 -> $a1 MB) |"
    done
    read -r b _ <<<"${C_IDLE[bulkhead]}"
    echo "$f bulkhead <= 2048 B: $(conns_target "$b" 2048) |"
    read -r b r a0 a1 <<<"${C_IDLE[bulkhead-4k]}"
    echo "| ... bulkhead with HTTP_CONNECTION_MEMORY=4096, the smallest it allows (the longest head; an idle connection holds no buffer) | $b B ($r replied; $a0 -> $a1 MB) | | | | reported |"
    f="| server CPU per request, GET /health, wrk -t1 -c64 (utime + stime / requests; req/s) |"
    for n in $CONNS_NAMES; do
        read -r b r <<<"${C_CPU[$n]}"
        f+=" $b us ($r req/s) |"
    done
    echo "$f reported |"
    local rps bad conn rw to p99 peak drops ok
    read -r rps bad conn rw to p99 peak drops <<<"$C_MANY"
    ok="**missed**"
    [ "$to" = 0 ] && [ "$conn" = 0 ] && [ "$rps" != 0 ] && ok=met
    echo "| /api/data enterprise at c=$CONNS_MANY (wrk -t2, ${DUR} s, 2 s timeout; refusals answered at once, TARPIT=false): req/s, non-2xx (503 bulkhead_full past the tier's 60 workers and queue of 240), connect errors, read/write errors, past 2 s, p99, peak RSS, handshakes the kernel dropped (nstat TcpExtListenDrops) | $rps req/s, non-2xx $bad, connect $conn, read/write $rw, **past 2 s $to**, p99 $p99 ms, RSS $peak MB, handshakes dropped at a full accept queue $drops | | | | none past 2 s: $ok |"
    read -r rps bad conn rw to p99 peak drops <<<"$C_MANY_DEFAULT"
    echo "| ... the same with the defaults: wrk retries each 503 at once, and the tarpit holds such early retries until their Retry-After (1 s), by design | $rps req/s, non-2xx $bad, connect $conn, read/write $rw, past 2 s $to, p99 $p99 ms, RSS $peak MB, handshakes dropped $drops | | | | reported |"
    conns_data_cpu_rows
    local alone beside held k
    for k in $CONNS_SLOW; do
        alone="| a normal client's /health alone (hey -c1, new connection per request, 100 req/s, ${DUR} s): served / errors / p99 |"
        beside="| ... beside $k slow clients from one address (a partial head, then a byte every $CONNS_SLOW_EVERY_S s) |"
        held="| ... the $k slow clients: connected / still held at the end / closed by the server / reopened |"
        for n in bulkhead-default minimal nginx-default h2o-default; do
            if [ "$n" = minimal ]; then
                alone+=" not run |" beside+=" not run |" held+=" not run |"
                continue
            fi
            # shellcheck disable=SC2086
            set -- ${C_SLOW[$n:$k]}
            alone+=" $1 / $2 / $3 ms |"
            beside+=" $4 / $5 / $6 ms |"
            held+=" $7 / $8 / $9 / ${10} |"
        done
        # shellcheck disable=SC2086
        set -- ${C_SLOW[bulkhead-default:$k]}
        ok="**missed**"
        [ "$5" = 0 ] && [ "$4" -gt 0 ] && [ "$6" != - ] && [ "$(conns_target "$6" 10)" = met ] && ok=met
        echo "$alone reported |"
        echo "$beside bulkhead served, p99 <= 10 ms: $ok |"
        echo "$held reported |"
    done
    local label
    for k in 20k 64k line garbage; do
        case $k in
        20k) label="request head of 20 KB (one 20,000-byte header; curl -i)" ;;
        64k) label="request head of 64 KB (curl -i)" ;;
        line) label="malformed request line \`GET /health HTTP/1.1 junk\` (raw socket, 3 s)" ;;
        garbage) label="not HTTP: request line \`GARBAGE\` (raw socket, 3 s)" ;;
        esac
        f="| $label: status, Content-Type, body |"
        for n in bulkhead-default minimal nginx-default h2o-default; do f+=" ${C_ERR[$n:$k]} |"; done
        echo "$f JSON |"
    done
    echo
    echo "bulkhead runs with its defaults except in the idle row and the judged c=$CONNS_MANY row (HTTP_MAX_CONNECTIONS=$((CONNS_IDLE + 2000)), HTTP_IDLE_TIMEOUT_S=600, TARPIT=false);"
    echo "the idle row's nginx has keepalive_timeout 600 and h2o a 600 s request timeout, the other rows their defaults"
    echo "(nginx: client_header_timeout 60 s, keepalive_timeout 75 s here; h2o: http1 request timeout 10 s)."
    echo "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), libh2o-evloop $(dpkg-query -W -f='${Version}' libh2o-evloop0.13 2>/dev/null),"
    echo "libmicrohttpd $(dpkg-query -W -f='${Version}' libmicrohttpd12 2>/dev/null) (bench/minimal), libhttp-parser $(dpkg-query -W -f='${Version}' libhttp-parser2.9 2>/dev/null) (bulkhead)."
}

# Run alone: its own PostgreSQL and a partial results file.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -u
    cd "$(dirname "$0")/.."
    ROOT=$(pwd)
    DUR=${BENCH_DURATION:-10}
    RUNS=${BENCH_RUNS:-3}
    WORK=$ROOT/build/conns-work
    BIN=$ROOT/build/bulkhead
    MINIMAL=$ROOT/build/bench/minimal
    . "$ROOT/bench/common.sh"
    rm -rf "$WORK"
    mkdir -p "$WORK"
    chmod 755 "$WORK"
    bench_need conns.sh "$BIN" "$MINIMAL"
    bench_pg_start conns.sh
    section_conns
    STAMP=$(date -u +%Y-%m-%dT%H%MZ)
    OUT=$ROOT/bench/results/partial-$STAMP.md
    {
        echo "# bulkhead benchmark, $STAMP"
        echo
        echo "Command: \`bench/conns.sh\` (BENCH_DURATION=$DUR, BENCH_RUNS=$RUNS, CONNS_IDLE=$CONNS_IDLE, CONNS_SLOW=\"$CONNS_SLOW\")."
        echo
        echo "Machine: $(nproc) CPUs ($(lscpu 2>/dev/null | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }')),"
        echo "$(free -g | awk '/Mem:/ { print $2 " GiB RAM" }'), Linux $(uname -r). The load generators and the servers share these CPUs."
        echo
        conns_table
    } >"$OUT"
    cat "$OUT"
    echo
    echo "written to $OUT"
fi
