#!/usr/bin/env bash
# Where does the gateway's time go for pgbench -S at -c 1?
#
#   scripts/bench/profile.sh                 # needs the database scripts/bench.sh initialises
#
# Runs, each against a fresh release gateway (audit fsync $PROFILE_FSYNC, default always):
#   1. plain pgbench -S -c 1                     -> baseline TPS
#   2. perf stat on the gateway                  -> CPU time, instructions, context switches per txn
#   3. strace -c -w -f on the gateway            -> syscalls per txn and their wall time
#   4. perf record --call-graph dwarf            -> top symbols (self), by category
#   5. valgrind --tool=callgrind (PROFILE_CALLGRIND=1, default 1) for a window of
#      PROFILE_CALLGRIND_SECONDS -> instruction counts per txn for parse/JSON/hash/etc.
#   6. the same CPU, instruction and syscall counts for PgBouncer (session pooling), for scale
# Environment: PROFILE_STEPS ("1 2 3 4 5 6"), PROFILE_SECONDS (10), PROFILE_FSYNC (always|never), PROFILE_OUT (dir),
#   PROFILE_CALLGRIND (1), PROFILE_CALLGRIND_SECONDS (20), BENCH_DB, BENCH_NO_BUILD.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=scripts/bench/lib.sh
. "$REPO/scripts/bench/lib.sh"

SECS=${PROFILE_SECONDS:-10}
FSYNC=${PROFILE_FSYNC:-always}
BENCH_DB=${BENCH_DB:-gatehouse_bench}
PGHOST_DIRECT=${PGHOST:-127.0.0.1}
PGPORT_DIRECT=${PGPORT:-5432}
PGUSER_DIRECT=${PGUSER:-postgres}
STEPS=" ${PROFILE_STEPS:-1 2 3 4 5 6} "
step() { case "$STEPS" in *" $1 "*) return 0 ;; esac; return 1; }
OUT=${PROFILE_OUT:-$REPO/target/bench/profile-$FSYNC-$(date +%Y%m%d-%H%M%S)}
STARTED_PIDS=""
export PGSSLMODE=disable
unset PGPASSWORD PGDATABASE PGSERVICE

for tool in perf strace pgbench; do command -v $tool >/dev/null || die "$tool is required (apt-get install linux-perf strace postgresql-client)"; done
bench_lock
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/gatehouse-profile.XXXXXX)
chmod 755 "$WORK"
trap 'stop_started; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    (cd "$REPO" && cargo build --release -p gatehouse --quiet)
fi
psql -X -h "$PGHOST_DIRECT" -p "$PGPORT_DIRECT" -U "$PGUSER_DIRECT" -d "$BENCH_DB" -Atc "select count(*) from pgbench_branches" >/dev/null 2>&1 \
    || die "database $BENCH_DB is not initialised: run scripts/bench.sh first (or pgbench -i -s 10 $BENCH_DB)"

fresh_gateway() {
    stop_started
    rm -rf "$WORK/gw"
    start_gateway gw "$FSYNC"
    GW=$GW_PID_gw
}
bench() { # args... -> pgbench output on stdout
    PGPASSWORD=$GW_KEY_gw pgbench -n -S -M simple -c 1 -j 1 "$@" -h 127.0.0.1 -p "$GW_PORT_gw" -U bench bench 2>&1
}
txns_of() { awk '/number of transactions actually processed/{split($NF, a, "/"); print a[1]; exit}' "$1"; }

echo "loadavg at start: $(cat /proc/loadavg)" | tee "$OUT/load.txt"

# 1. baseline
if step 1; then
fresh_gateway
bench -T "$SECS" >"$OUT/1-baseline.txt"
log "baseline: $(grep -E '^tps' "$OUT/1-baseline.txt")"
fi

# 2. perf stat. Two passes: software events only (CPU time and context switches per txn), then
#    user and kernel instruction counts. In a VM, counting hardware events makes every context
#    switch trap to the hypervisor (MSR save/restore), which inflates the second pass's CPU time
#    about 3x: take CPU time from pass a, instruction counts from pass b.
pstat() { # name events
    fresh_gateway
    local t0 t1
    t0=$(proc_ticks "$GW")
    perf stat -e "$2" -p "$GW" -o "$OUT/2$1-perf-stat.txt" -- sleep "$((SECS + 1))" &
    local ps=$!
    sleep 0.3
    bench -T "$SECS" >"$OUT/2$1-pgbench.txt"
    wait "$ps" || true
    t1=$(proc_ticks "$GW")
    local n
    n=$(txns_of "$OUT/2$1-pgbench.txt")
    {
        echo "pass $1 ($2): $n transactions, $(grep -E '^tps' "$OUT/2$1-pgbench.txt")"
        awk -v n="$n" -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" '
            BEGIN { printf "  gateway CPU from /proc: %.1f us/txn\n", d / hz * 1e6 / n }
            /task-clock/ { gsub(",", "", $1); printf "  task-clock: %.1f us/txn\n", $1 * 1000 / n }
            /context-switches/ { gsub(",", "", $1); printf "  context switches: %.2f /txn\n", $1 / n }
            /cpu-migrations/ { gsub(",", "", $1); printf "  cpu migrations: %.2f /txn\n", $1 / n }
            /instructions|cycles/ { gsub(",", "", $1); printf "  %s: %.0f /txn\n", $2, $1 / n }
        ' "$OUT/2$1-perf-stat.txt"
    } | tee -a "$OUT/2-per-txn.txt"
}
if step 2; then
: >"$OUT/2-per-txn.txt"
pstat a task-clock,context-switches,cpu-migrations,page-faults
pstat b task-clock,context-switches,instructions:u,instructions:k,cycles:u
fi

# 3. strace: syscall counts and wall time per call
if step 3; then
fresh_gateway
strace -c -w -f -p "$GW" -o "$OUT/3-strace-c.txt" &
SPID=$!
sleep 0.5
bench -T "$SECS" >"$OUT/3-pgbench.txt"
kill -INT "$SPID"; wait "$SPID" || true
N=$(txns_of "$OUT/3-pgbench.txt")
{
    echo "transactions under strace: $N ($(grep -E '^tps' "$OUT/3-pgbench.txt"))"
    echo "calls/txn  usecs/call  syscall"
    awk -v n="$N" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {
        calls = $4; name = $NF; printf "%9.2f  %10s  %s\n", calls / n, $3, name
    }' "$OUT/3-strace-c.txt" | sort -rn | sed -n 1,15p
} | tee "$OUT/3-syscalls-per-txn.txt"
fi

# 4. perf record (on-CPU samples with DWARF call graphs; cpu-clock, not cycles, for the reason above)
if step 4; then
fresh_gateway
perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$GW" -o "$WORK/perf.data" -- sleep "$SECS" 2>"$OUT/4-perf-record.log" &
PPID_REC=$!
sleep 0.3
bench -T "$((SECS - 1))" >"$OUT/4-pgbench.txt"
wait "$PPID_REC" || true
perf report -i "$WORK/perf.data" --no-children --sort dso,symbol --stdio --percent-limit 0.7 -g none 2>/dev/null \
    | grep -v '^$' | sed -n 1,70p >"$OUT/4-perf-self.txt"
perf report -i "$WORK/perf.data" --children --sort symbol --stdio --percent-limit 0.2 -g none 2>/dev/null \
    | grep -v '^$' >"$WORK/children.txt"
sed -n 1,150p "$WORK/children.txt" >"$OUT/4-perf-children.txt"
# Inclusive share of samples for the places the time is expected to go. Patterns are matched
# against demangled names; the first match (the largest) is shown.
{
    echo "inclusive % of gateway on-CPU samples (perf, cpu-clock)"
    while IFS='|' read -r label pattern; do
        line=$(grep -E "$pattern" "$WORK/children.txt" | sed -n 1p) || true
        printf '  %-42s %s\n' "$label" "$(if [ -n "$line" ]; then awk '{print $1}' <<<"$line"; else echo "<0.2%"; fi)"
    done <<'PATTERNS'
audit writer thread (all)|gatehouse_audit::writer::.*open::\{closure_env#2\}|gatehouse_audit::writer::Writer::run
audit record encode (JSON+hash)|gatehouse_audit::record::encode
  sha256|sha2::sha256::compress256
  serde_json serialise Event|Serialize for gatehouse_audit::event::Event
  timestamp formatting|gatehouse_audit::timefmt
fdatasync syscall|__x64_sys_fdatasync
audit write syscall|ksys_write|__x64_sys_write
relay task (tokio, all)|gatehouse_postgres::relay::run
session.record (event build, metrics)|gatehouse_core::gate::Session::record
SQL classification|gatehouse_core::command::Command::sql|gatehouse_inspect::sql::
sendto (both sockets)|__x64_sys_sendto
recvfrom (both sockets)|__x64_sys_recvfrom
futex (wakeups and waits)|__x64_sys_futex
epoll_wait|__x64_sys_epoll_wait
scheduler: __schedule (context switches)|\] __schedule 
tokio park/unpark|tokio::runtime::scheduler::multi_thread::park|park_internal
malloc/free (self+callees)|\] (malloc|free|_int_free|_int_malloc|cfree|realloc) 
PATTERNS
} | tee "$OUT/4-perf-summary.txt"
perf report -i "$WORK/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v '^$' | sed -n 1,25p >"$OUT/4-perf-dso.txt"
perf report -i "$WORK/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null | grep -v '^$' | sed -n 1,20p >"$OUT/4-perf-threads.txt"
log "perf: $OUT/4-perf-self.txt, 4-perf-children.txt, 4-perf-threads.txt"
fi

# 5. callgrind (instruction counts per transaction, every thread of the gateway). Collection is
#    (instrumentation) switched on only after the client has connected and warmed up, for PROFILE_CALLGRIND_SECONDS;
#    transactions in the window are counted from the audit log.
if step 5 && [ "${PROFILE_CALLGRIND:-1}" = 1 ] && command -v valgrind >/dev/null; then
    WIN=${PROFILE_CALLGRIND_SECONDS:-20}
    stop_started
    rm -rf "$WORK/gw"
    start_gateway gw "$FSYNC"   # writes config, data dir and admin.key
    stop_started
    dir="$WORK/gw"
    AUDIT="$dir/data/audit/audit.log"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.out" \
        "$REPO/target/release/gatehouse" serve --config "$dir/gatehouse.yaml" >"$dir/valgrind.log" 2>&1 9>&- &
    VG=$!
    STARTED_PIDS="$VG"
    wait_port "$GW_PORT_gw" 180 || die "gateway under valgrind did not start"
    bench -T "$((WIN + 15))" >"$OUT/5-pgbench.txt" &
    BP=$!
    sleep 8
    a=$(wc -l <"$AUDIT")
    callgrind_control -i on "$VG" >/dev/null
    sleep "$WIN"
    callgrind_control -i off "$VG" >/dev/null
    b=$(wc -l <"$AUDIT")
    wait "$BP" || true
    kill -TERM "$VG"; wait "$VG" || true
    STARTED_PIDS=""
    N=$((b - a))
    echo "transactions in the collection window: $N" >"$OUT/5-callgrind-txns.txt"
    callgrind_annotate --inclusive=yes "$WORK/callgrind.out" 2>/dev/null | sed -n 1,120p >"$OUT/5-callgrind-inclusive.txt"
    callgrind_annotate "$WORK/callgrind.out" 2>/dev/null | sed -n 1,80p >"$OUT/5-callgrind-self.txt"
    cp "$WORK/callgrind.out" "$OUT/callgrind.out"
    log "callgrind ($N txns): $OUT/5-callgrind-*.txt"
fi
# 6. PgBouncer for reference: CPU, context switches, instructions and syscalls per txn.
if step 6; then
    ensure_tools
    stop_started
    start_pgbouncer
    pgb() { pgbench -n -S -M simple -c 1 -j 1 -T "$SECS" -h 127.0.0.1 -p "$PGB_PORT" -U "$PGUSER_DIRECT" "$BENCH_DB" 2>&1; }
    {
        for ev in task-clock,context-switches instructions:u,instructions:k; do
            t0=$(proc_ticks "$PGB_PID")
            perf stat -e "$ev" -p "$PGB_PID" -o "$WORK/pgb-stat.txt" -- sleep "$((SECS + 1))" &
            ps=$!
            sleep 0.3
            pgb >"$WORK/pgb.txt"
            wait "$ps" || true
            t1=$(proc_ticks "$PGB_PID")
            n=$(txns_of "$WORK/pgb.txt")
            echo "pgbouncer pass ($ev): $n transactions, $(grep -E '^tps' "$WORK/pgb.txt")"
            awk -v n="$n" -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" '
                BEGIN { printf "  pgbouncer CPU from /proc: %.1f us/txn\n", d / hz * 1e6 / n }
                /task-clock/ { gsub(",", "", $1); printf "  task-clock: %.1f us/txn\n", $1 * 1000 / n }
                /context-switches/ { gsub(",", "", $1); printf "  context switches: %.2f /txn\n", $1 / n }
                /instructions/ { gsub(",", "", $1); printf "  %s: %.0f /txn\n", $2, $1 / n }
            ' "$WORK/pgb-stat.txt"
        done
        strace -c -w -f -p "$PGB_PID" -o "$WORK/pgb-strace.txt" 2>/dev/null &
        sp=$!
        sleep 0.5
        pgb >"$WORK/pgb.txt"
        kill -INT "$sp"; wait "$sp" || true
        n=$(txns_of "$WORK/pgb.txt")
        echo "pgbouncer syscalls under strace ($n transactions): calls/txn usecs/call syscall"
        awk -v n="$n" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {
            printf "%9.2f  %10s  %s\n", $4 / n, $3, $NF }' "$WORK/pgb-strace.txt" | sort -rn | sed -n 1,6p
    } | tee "$OUT/6-pgbouncer.txt"
    stop_started
fi
echo "loadavg at end: $(cat /proc/loadavg)" | tee -a "$OUT/load.txt"
log "profile written to $OUT"
