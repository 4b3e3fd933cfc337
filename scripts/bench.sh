#!/usr/bin/env bash
# Gatehouse PostgreSQL throughput/latency benchmark: pgbench -S against
#   direct            the PostgreSQL server itself (127.0.0.1:5432, trust auth)
#   gateway           gatehouse (release build), audit fsync always (the default)
#   gateway_periodic  gatehouse with audit fsync periodic (written before the outcome, synced
#                     within audit.fsync_interval, default 10ms)
#   gateway_nofsync   gatehouse with audit fsync never (durability cost shown separately)
#   gateway_periodic_1w  fsync periodic with postgres.workers: 1 (not in the default set; for
#                     comparing one worker thread with one per CPU)
#   gateway_policy, gateway_periodic_policy  fsync always / periodic with the global policy of
#                     examples/bank-baseline.yaml (20 rules) on (not in the default set)
#   gateway_masking, gateway_periodic_masking  fsync always / periodic with masking on: every
#                     default detector over every value (not in the default set)
#   gateway_norecord, gateway_periodic_norecord  fsync always / periodic with session
#                     recording off (recording is on by default; not in the default set)
#   gateway_nockpt, gateway_periodic_nockpt  fsync always / periodic with signed audit
#                     checkpoints off (on by default; not in the default set)
#   pgbouncer         PgBouncer, session pooling, in front of the same database
# at -c 1 (-j 1) and -c 8 (-j 2), in interleaved rounds, reporting medians.
#
# One command:   scripts/bench.sh
# Quick run:     BENCH_SECONDS=5 BENCH_ROUNDS=1 scripts/bench.sh
#
# Environment (all optional):
#   BENCH_SECONDS   duration of each pgbench run (-T)               default 30
#   BENCH_ROUNDS    rounds; each round runs every target once       default 3
#   BENCH_CLIENTS   client counts                                   default "1 8"
#   BENCH_TARGETS   subset/order of targets                         default all five
#   BENCH_SCALE     pgbench -i scale                                default 10
#   BENCH_DB        database (created, and re-initialised)          default gatehouse_bench
#   BENCH_REINIT    0 = keep an existing initialised database      default 1
#   BENCH_OUT       results directory        default target/bench/<timestamp>
#   BENCH_KEEP      1 = keep the temp dir (configs, logs, audit log) default 0
#   BENCH_NO_BUILD  1 = skip cargo build                            default 0
#   BENCH_BASELINE_BIN  another gatehouse binary (e.g. an earlier commit's release build);
#                   adds the targets baseline (fsync always) and baseline_periodic, so a
#                   change is measured against what it changes in the same run
#   PGHOST/PGPORT/PGUSER  the direct server                         default 127.0.0.1/5432/postgres
#
# Output: $BENCH_OUT/runs.tsv (one row per pgbench run), summary.tsv (medians), summary.md
# (the tables printed at the end), machine.txt (host, load, what else was running).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/bench/lib.sh
. "$REPO/scripts/bench/lib.sh"

SECS=${BENCH_SECONDS:-30}
ROUNDS=${BENCH_ROUNDS:-3}
CLIENTS=${BENCH_CLIENTS:-"1 8"}
TARGETS=${BENCH_TARGETS:-"direct gateway gateway_periodic gateway_nofsync pgbouncer${BENCH_BASELINE_BIN:+ baseline baseline_periodic}"}
SCALE=${BENCH_SCALE:-10}
BENCH_DB=${BENCH_DB:-gatehouse_bench}
PGHOST_DIRECT=${PGHOST:-127.0.0.1}
PGPORT_DIRECT=${PGPORT:-5432}
PGUSER_DIRECT=${PGUSER:-postgres}
OUT=${BENCH_OUT:-$REPO/target/bench/$(date +%Y%m%d-%H%M%S)}
CLK_TCK=$(getconf CLK_TCK)
STARTED_PIDS=""

# Plaintext everywhere: the server has ssl=on, and libpq's default "prefer" would give the
# direct target TLS while the proxies talk plaintext upstream.
export PGSSLMODE=disable
unset PGPASSWORD PGDATABASE PGSERVICE

bench_lock
ensure_tools
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/gatehouse-bench.XXXXXX)
# The bank baseline's global rules (20), for the *_policy targets.
POLICY_FILE="$WORK/policy.yaml"
sed -n '/^policy:/,$p' "$REPO/examples/bank-baseline.yaml" >"$POLICY_FILE"
# Every default detector on every value, for the *_masking targets.
MASK_FILE="$WORK/masking.yaml"
printf 'policy:\n  masking:\n    rules:\n      - name: pii\n        detectors: default\n' >"$MASK_FILE"
# Session recording off, for the *_norecord targets.
NORECORD_FILE="$WORK/norecord.yaml"
printf 'recording:\n  enabled: false\n' >"$NORECORD_FILE"
chmod 755 "$WORK"
cleanup() {
    stop_started
    if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    log "cargo build --release -p gatehouse"
    (cd "$REPO" && cargo build --release -p gatehouse --quiet)
fi
[ -x "$REPO/target/release/gatehouse" ] || die "target/release/gatehouse missing"

direct_psql() { psql -X -q -h "$PGHOST_DIRECT" -p "$PGPORT_DIRECT" -U "$PGUSER_DIRECT" "$@"; }

# --- database ------------------------------------------------------------------------------
direct_psql -d postgres -Atc "select 1" >/dev/null || die "cannot reach PostgreSQL at $PGHOST_DIRECT:$PGPORT_DIRECT as $PGUSER_DIRECT"
if [ -z "$(direct_psql -d postgres -Atc "select 1 from pg_database where datname = '$BENCH_DB'")" ]; then
    log "creating database $BENCH_DB"
    direct_psql -d postgres -c "create database $BENCH_DB" >/dev/null
    BENCH_REINIT=1
fi
have_scale=$(direct_psql -d "$BENCH_DB" -Atc "select count(*) from pgbench_branches" 2>/dev/null || echo 0)
if [ "${BENCH_REINIT:-1}" = 1 ] || [ "$have_scale" != "$SCALE" ]; then
    log "pgbench -i -s $SCALE $BENCH_DB"
    pgbench -i -q -s "$SCALE" -h "$PGHOST_DIRECT" -p "$PGPORT_DIRECT" -U "$PGUSER_DIRECT" "$BENCH_DB" >"$OUT/pgbench-init.log" 2>&1 \
        || { cat "$OUT/pgbench-init.log" >&2; die "pgbench -i failed"; }
fi

# --- targets ------------------------------------------------------------------------------
for t in $TARGETS; do
    case $t in
        direct) ;;
        gateway) start_gateway gateway always ;;
        gateway_periodic) start_gateway gateway_periodic periodic ;;
        gateway_nofsync) start_gateway gateway_nofsync never ;;
        gateway_periodic_1w) start_gateway gateway_periodic_1w periodic "$REPO/target/release/gatehouse" 1 ;;
        gateway_policy) start_gateway gateway_policy always "$REPO/target/release/gatehouse" "" "$POLICY_FILE" ;;
        gateway_periodic_policy) start_gateway gateway_periodic_policy periodic "$REPO/target/release/gatehouse" "" "$POLICY_FILE" ;;
        gateway_masking) start_gateway gateway_masking always "$REPO/target/release/gatehouse" "" "$MASK_FILE" ;;
        gateway_periodic_masking) start_gateway gateway_periodic_masking periodic "$REPO/target/release/gatehouse" "" "$MASK_FILE" ;;
        gateway_norecord) start_gateway gateway_norecord always "$REPO/target/release/gatehouse" "" "$NORECORD_FILE" ;;
        gateway_periodic_norecord) start_gateway gateway_periodic_norecord periodic "$REPO/target/release/gatehouse" "" "$NORECORD_FILE" ;;
        gateway_nockpt) start_gateway gateway_nockpt always "$REPO/target/release/gatehouse" "" "" "checkpoints: { enabled: false }" ;;
        gateway_periodic_nockpt) start_gateway gateway_periodic_nockpt periodic "$REPO/target/release/gatehouse" "" "" "checkpoints: { enabled: false }" ;;
        pgbouncer) start_pgbouncer ;;
        baseline) start_gateway baseline always "${BENCH_BASELINE_BIN:?baseline needs BENCH_BASELINE_BIN}" ;;
        baseline_periodic) start_gateway baseline_periodic periodic "${BENCH_BASELINE_BIN:?baseline needs BENCH_BASELINE_BIN}" ;;
        *) die "unknown target $t" ;;
    esac
done

# target_conn TARGET -> connection arguments; target_password TARGET; proxy_pid TARGET -> the
# proxy's pid (or empty). Every gateway-like target NAME has GW_PORT_NAME, GW_KEY_NAME and
# GW_PID_NAME, set by start_gateway.
gw_var() { local v="GW_$1_$2"; echo "${!v:-}"; }
target_conn() {
    case $1 in
        direct) echo "-h $PGHOST_DIRECT -p $PGPORT_DIRECT -U $PGUSER_DIRECT $BENCH_DB" ;;
        pgbouncer) echo "-h 127.0.0.1 -p $PGB_PORT -U $PGUSER_DIRECT $BENCH_DB" ;;
        *) echo "-h 127.0.0.1 -p $(gw_var PORT "$1") -U bench bench" ;;
    esac
}
target_password() {
    case $1 in
        direct | pgbouncer) echo "" ;;
        *) gw_var KEY "$1" ;;
    esac
}
proxy_pid() {
    case $1 in
        direct) echo "" ;;
        pgbouncer) echo "$PGB_PID" ;;
        *) gw_var PID "$1" ;;
    esac
}

# --- machine -------------------------------------------------------------------------------
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm); $(nproc) CPUs; $(awk '/MemTotal/{printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo)"
    echo "cpu: $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
    echo "postgres: $(direct_psql -d postgres -Atc 'select version()')"
    echo "pgbench: $(pgbench --version)"
    echo "pgbouncer: $($PGBOUNCER_BIN --version | sed -n 1,1p)"
    echo "gatehouse: HEAD $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo '?') ($(cd "$REPO" && git status --porcelain --untracked-files=no 2>/dev/null | grep -c . || true) modified tracked files); binary built $(date -u -r "$REPO/target/release/gatehouse" +%Y-%m-%dT%H:%M:%SZ)"
    echo "settings: seconds=$SECS rounds=$ROUNDS clients='$CLIENTS' scale=$SCALE targets='$TARGETS'"
    # What one durable audit append costs on this disk: 580-byte O_DSYNC writes (the size of a
    # pgbench -S audit record) on the file system that holds the gateways' audit logs.
    dsync=$(dd if=/dev/zero of="$WORK/dsync-probe" bs=580 count=2000 oflag=dsync 2>&1 | awk '/copied/{print $(NF-3)}')
    rm -f "$WORK/dsync-probe"
    echo "disk: 580-byte O_DSYNC appends in $WORK ($(df --output=source,fstype "$WORK" | tail -1 | tr -s ' ')): $(awk -v s="$dsync" 'BEGIN{printf "%.0f", s / 2000 * 1e6}') us each"
    echo "loadavg at start: $(cat /proc/loadavg)"
    echo "top processes at start:"
    ps -eo pcpu,pid,etime,comm --sort=-pcpu | sed -n 1,12p | sed 's/^/  /'
} >"$OUT/machine.txt"

# --- runs ----------------------------------------------------------------------------------
printf 'round\ttarget\tclients\tthreads\tseconds\ttps\tpgbench_lat_ms\ttxns\tmean_us\tp50_us\tp99_us\tproxy_cpu_us_per_txn\tload1\thost_busy_pct\tforeign_cpu_pct\tfailed\n' >"$OUT/runs.tsv"

# run_one ROUND TARGET CLIENTS SECONDS [record]
run_one() {
    local round=$1 t=$2 c=$3 secs=$4 record=${5:-record}
    local j=$((c < 2 ? c : 2)) dir="$WORK/runs/r$round-$t-c$c" ppid
    ppid=$(proxy_pid "$t")
    mkdir -p "$dir"
    local load1 p0 p1 h0 h1 rc=0
    load1=$(cut -d' ' -f1 /proc/loadavg)
    p0=$(proc_ticks "$ppid")
    read -r hb0 ht0 < <(host_ticks)
    # shellcheck disable=SC2046
    PGPASSWORD=$(target_password "$t") pgbench -n -S -M simple -c "$c" -j "$j" -T "$secs" \
        $( [ "$record" = record ] && echo "-l --log-prefix=$dir/tx" ) \
        $(target_conn "$t") >"$dir/pgbench.out" 2>&1 &
    local bpid=$!
    foreign_sampler "$bpid" "$dir/foreign.txt" $STARTED_PIDS $$ &
    local spid=$!
    # The PostgreSQL backends serving this run (pgbouncer's pooled ones included), so that
    # other people's use of the same server can be told apart from ours.
    { sleep 1.5; bench_backends "$BENCH_DB" >"$dir/backends.txt"; } &
    local qpid=$!
    wait "$bpid" || rc=$?
    wait "$spid" || true
    wait "$qpid" || true
    p1=$(proc_ticks "$ppid")
    read -r hb1 ht1 < <(host_ticks)
    [ "$record" = record ] || return 0

    local tps lat failed txns stats
    tps=$(awk '/^tps = /{print $3; exit}' "$dir/pgbench.out")
    lat=$(awk '/^latency average = /{print $4; exit}' "$dir/pgbench.out")
    failed=$(awk '/number of failed transactions/{print $5; exit}' "$dir/pgbench.out")
    if [ $rc -ne 0 ] || [ -z "$tps" ]; then
        log "pgbench against $t failed (rc $rc):"; cat "$dir/pgbench.out" >&2
        tps=0; lat=NaN; failed=${failed:-all}
    fi
    # Column 3 of pgbench's per-transaction log is the transaction's latency in microseconds.
    stats=$(cat "$dir"/tx.* 2>/dev/null | awk '{print $3}' | sort -n | awk '
        { v[NR] = $1; s += $1 }
        END {
            if (NR == 0) { print 0, "NaN", "NaN", "NaN"; exit }
            i50 = int(NR * 0.50); if (i50 < NR * 0.50) i50++; if (i50 < 1) i50 = 1
            i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++; if (i99 < 1) i99 = 1
            printf "%d %.1f %d %d\n", NR, s / NR, v[i50], v[i99]
        }')
    read -r txns mean p50 p99 <<<"$stats"
    local proxy_cpu=NaN
    if [ -n "$ppid" ] && [ "$txns" -gt 0 ]; then
        proxy_cpu=$(awk -v d=$((p1 - p0)) -v hz="$CLK_TCK" -v n="$txns" 'BEGIN{printf "%.1f", d / hz * 1e6 / n}')
    fi
    local busy foreign
    busy=$(awk -v b=$((hb1 - hb0)) -v t=$((ht1 - ht0)) 'BEGIN{printf "%.0f", t ? 100 * b / t : 0}')
    foreign=$(awk -v d="$(foreign_ticks_from "$dir/foreign.txt" "$dir/backends.txt")" -v hz="$CLK_TCK" -v s="$secs" -v n="$(nproc)" \
        'BEGIN{printf "%.0f", 100 * d / hz / s / n}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$round" "$t" "$c" "$j" "$secs" "$tps" "$lat" "$txns" "$mean" "$p50" "$p99" "$proxy_cpu" \
        "$load1" "$busy" "$foreign" "${failed:-0}" >>"$OUT/runs.tsv"
    log "r$round $t -c $c: tps $tps, p50 ${p50}us, p99 ${p99}us, mean ${mean}us, proxy cpu ${proxy_cpu}us/txn, load $load1, host busy ${busy}%, other ${foreign}%"
    rm -f "$dir"/tx.*
}

read -ra TARGET_LIST <<<"$TARGETS"
log "warm-up (3s per target)"
for t in "${TARGET_LIST[@]}"; do run_one 0 "$t" 2 3 warmup; done

total=$((ROUNDS * $(wc -w <<<"$CLIENTS") * ${#TARGET_LIST[@]}))
log "measuring: $total runs of ${SECS}s (~$((total * (SECS + 2) / 60)) min)"
for round in $(seq 1 "$ROUNDS"); do
    # Rotate the target order every round so no target always runs first or last.
    n=${#TARGET_LIST[@]}
    order=()
    for i in $(seq 0 $((n - 1))); do order+=("${TARGET_LIST[$(((i + round - 1) % n))]}"); done
    for c in $CLIENTS; do
        for t in "${order[@]}"; do run_one "$round" "$t" "$c" "$SECS"; done
    done
done

{
    echo "loadavg at end: $(cat /proc/loadavg)"
    echo "top processes at end:"
    ps -eo pcpu,pid,etime,comm --sort=-pcpu | sed -n 1,12p | sed 's/^/  /'
    for t in "${TARGET_LIST[@]}"; do
        if [ -f "$WORK/$t/data/audit/audit.log" ]; then
            echo "$t audit log: $(wc -l <"$WORK/$t/data/audit/audit.log") records, $(du -h "$WORK/$t/data/audit/audit.log" | cut -f1)"
        fi
    done
} >>"$OUT/machine.txt"
for t in "${TARGET_LIST[@]}"; do
    if [ -f "$WORK/$t/gatehouse.log" ]; then cp "$WORK/$t/gatehouse.log" "$OUT/$t.log"; fi
done

# --- summary -------------------------------------------------------------------------------
# mawk has crashed in this step ("double free"); gawk, where installed, has not.
"$(command -v gawk || command -v awk)" -f "$REPO/scripts/bench/summarize.awk" -v out_tsv="$OUT/summary.tsv" "$OUT/runs.tsv" >"$OUT/summary.md"
cat "$OUT/summary.md"
echo
echo "machine: $(sed -n 2p "$OUT/machine.txt")"
echo "results: $OUT"
