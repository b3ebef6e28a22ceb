# bench/common.sh: what the bench scripts share (sourced by bench/run.sh, bench/evloop.sh and
# bench/tenants.sh, from the repository root, with WORK set): the tool check, one scheduling
# group for everything they start, stopping it at exit, a free port, and the private PostgreSQL
# with the bench database.

# Exit with the missing one unless every tool (a command or an executable path) is there.
# $1 names the caller.
bench_need() {
    local who=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || [ -x "$tool" ] || { echo "$who: missing $tool" >&2; exit 2; }
    done
}

# Processes to stop at exit (append their PIDs), and the private PostgreSQL with them.
pids=()
bench_cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    scripts/pg.sh stop "$WORK/pg" >/dev/null 2>&1
    if [ -n "$BENCH_CG" ]; then
        echo $$ >"$(dirname "$BENCH_CG")/cgroup.procs" 2>/dev/null
        rmdir "$BENCH_CG" 2>/dev/null || echo "bench: could not remove $BENCH_CG (a process left in it?)" >&2
    fi
}
trap bench_cleanup EXIT

# One scheduling group for the server, PostgreSQL and the load generators (BENCH_SCHED says
# which). With the kernel's autogroups on (kernel.sched_autogroup_enabled=1, the default of most
# distributions) a process in the root cpu cgroup is scheduled as a group per session, and
# PostgreSQL gives every backend a session of its own (setsid): on this 2-CPU machine a backend
# then waited up to 260 ms for a CPU now and then while the rest ran, and with it every read
# pipelined on its connection, which made the c=64 tail of issue 33 (bench/optimisations.md,
# "The tail at c=64: the cause"). In a container or any cpu cgroup of its own, where a
# deployment's PostgreSQL runs, autogroups do not apply; so the bench moves itself (and so all
# it starts) into a cpu cgroup of its own when it may (root, cgroup v1's cpu hierarchy or v2's
# root with the cpu controller), and removes it at exit. BENCH_CGROUP=off leaves it where it is.
BENCH_CG=""
BENCH_SCHED=""
bench_sched_group() {
    local v1=/sys/fs/cgroup/cpu v1path v2path
    if [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null)" != 1 ]; then
        BENCH_SCHED="kernel autogroups off"
        return
    fi
    v1path=$(awk -F: '$2 ~ /(^|,)cpu(,|$)/ { print $3; exit }' /proc/self/cgroup)
    v2path=$(awk -F: '$1 == 0 { print $3; exit }' /proc/self/cgroup)
    if [ -n "$v1path" ] && [ "$v1path" != / ]; then
        BENCH_SCHED="in cpu cgroup $v1path (autogroups do not apply)"
        return
    fi
    if [ -z "$v1path" ] && [ "$v2path" != / ]; then
        # cgroup v2 below the root: a cgroup of its own for the scheduler only with the cpu controller
        if grep -qw cpu "/sys/fs/cgroup$v2path/cgroup.controllers" 2>/dev/null; then
            BENCH_SCHED="in cpu cgroup $v2path (autogroups do not apply)"
        else
            BENCH_SCHED="autogroups on, in cgroup $v2path without the cpu controller: each PostgreSQL backend may be a scheduling group of its own"
            echo "bench: $BENCH_SCHED" >&2
        fi
        return
    fi
    if [ "${BENCH_CGROUP:-auto}" = off ]; then
        BENCH_SCHED="autogroups on, BENCH_CGROUP=off: each PostgreSQL backend is a scheduling group of its own"
        return
    fi
    if [ -n "$v1path" ] && [ -w "$v1" ]; then
        BENCH_CG=$v1/bulkhead-bench.$$
    elif [ -z "$v1path" ] && grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; then
        BENCH_CG=/sys/fs/cgroup/bulkhead-bench.$$
    fi
    if [ -n "$BENCH_CG" ] && mkdir "$BENCH_CG" 2>/dev/null; then
        if echo $$ >"$BENCH_CG/cgroup.procs" 2>/dev/null; then
            BENCH_SCHED="one cpu cgroup for the server, PostgreSQL and the load generators (autogroups do not apply)"
            return
        fi
        rmdir "$BENCH_CG" 2>/dev/null
    fi
    BENCH_CG=""
    BENCH_SCHED="autogroups on and no cpu cgroup could be made: each PostgreSQL backend is a scheduling group of its own (stalls of 100-260 ms in the tail)"
    echo "bench: $BENCH_SCHED" >&2
}
bench_sched_group

# A random port nobody listens on (other test servers may share this machine).
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768-)
        [ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] && { echo "$p"; return; }
    done
}

# Start the private PostgreSQL in $WORK/pg (pg.sh creates "bulkhead" and applies init-db.sql:
# schema and rows); sets DB (its URL) and PG_PORT, or exits with the reason. $1 names the caller.
bench_pg_start() {
    DB=""
    for _ in 1 2 3; do
        PG_PORT=$(free_port)
        DB=$(scripts/pg.sh start "$WORK/pg" "$PG_PORT" 2>"$WORK/pg-start.log") && break
        DB=""
    done
    [ -n "$DB" ] || { cat "$WORK/pg-start.log" >&2; echo "$1: PostgreSQL did not start" >&2; exit 1; }
}

# median [FORMAT]: the median of the numbers on stdin, one per line (0 when none); the mean of
# the middle two, printed with FORMAT (%.3f), when their count is even.
median() {
    sort -n | awk -v f="${1:-%.3f}" '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else printf f "\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
