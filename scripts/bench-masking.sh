#!/usr/bin/env bash
# Masking cost on a large result: about 1 GiB of mixed text (order lines, dates, digests, and
# a card number in one row in a hundred) read through
#   direct            the PostgreSQL server itself
#   gateway           gatehouse without masking
#   gateway_masking   gatehouse with every default detector on every value
# as COPY TO STDOUT and as SELECT through a cursor (psql FETCH_COUNT), in interleaved rounds.
# Reports the median seconds, the masking/plain ratio and each gateway's peak RSS (VmHWM).
#
# One command:   scripts/bench-masking.sh
# Environment:   BENCH_ROUNDS (default 3), BENCH_ROWS (default 1000000, ~1.1 KB each),
#                BENCH_DB (default gatehouse_bench_mask), BENCH_NO_BUILD=1, BENCH_OUT.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/bench/lib.sh
. "$REPO/scripts/bench/lib.sh"

ROUNDS=${BENCH_ROUNDS:-3}
ROWS=${BENCH_ROWS:-1000000}
BENCH_DB=${BENCH_DB:-gatehouse_bench_mask}
PGHOST_DIRECT=${PGHOST:-127.0.0.1}
PGPORT_DIRECT=${PGPORT:-5432}
PGUSER_DIRECT=${PGUSER:-postgres}
OUT=${BENCH_OUT:-$REPO/target/bench/masking-$(date +%Y%m%d-%H%M%S)}
STARTED_PIDS=""
export PGSSLMODE=disable
unset PGPASSWORD PGDATABASE PGSERVICE

bench_lock
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/gatehouse-bench-mask.XXXXXX)
chmod 755 "$WORK"
cleanup() { stop_started; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    log "cargo build --release -p gatehouse"
    (cd "$REPO" && cargo build --release -p gatehouse --quiet)
fi

direct_psql() { psql -X -q -h "$PGHOST_DIRECT" -p "$PGPORT_DIRECT" -U "$PGUSER_DIRECT" "$@"; }
if [ -z "$(direct_psql -d postgres -Atc "select 1 from pg_database where datname = '$BENCH_DB'")" ]; then
    direct_psql -d postgres -c "create database $BENCH_DB" >/dev/null
fi
have=$(direct_psql -d "$BENCH_DB" -Atc "select count(*) from big" 2>/dev/null || echo 0)
if [ "$have" != "$ROWS" ]; then
    log "creating $ROWS rows"
    direct_psql -d "$BENCH_DB" -c "drop table if exists big" -c "create table big (id int, note text)" \
        -c "insert into big select i, repeat(md5(i::text) || ' order ORD-' || i || ' shipped 2026-11-' \
              || (i % 28 + 1) || ' total ' || (i % 997) || '.' || (i % 100) || ' ', 18) \
              || case when i % 100 = 0 then ' paid with 4111 1111 1111 1111' else '' end \
            from generate_series(1, $ROWS) i" -c "vacuum analyze big" >/dev/null
fi
bytes=$(direct_psql -d "$BENCH_DB" -Atc "select sum(octet_length(note) + 4) from big")
log "result size: $((bytes / 1048576)) MiB"

MASK_FILE="$WORK/masking.yaml"
cat >"$MASK_FILE" <<'EOF2'
policy:
  masking:
    rules:
      - name: pii
        detectors: default
EOF2
start_gateway gateway always
start_gateway gateway_masking always "$REPO/target/release/gatehouse" "" "$MASK_FILE"

conn() {
    case $1 in
        direct) echo "-h $PGHOST_DIRECT -p $PGPORT_DIRECT -U $PGUSER_DIRECT $BENCH_DB" ;;
        *) local p="GW_PORT_$1"; echo "-h 127.0.0.1 -p ${!p} -U bench bench" ;;
    esac
}
password() { case $1 in direct) echo "" ;; *) local k="GW_KEY_$1"; echo "${!k}" ;; esac; }

printf 'round\ttarget\tshape\tseconds\tmasked_rows_seen\n' >"$OUT/runs.tsv"
run() { # round target shape
    local sql start end seen
    case $3 in
        copy) sql="COPY big TO STDOUT" ;;
        select) sql="SELECT id, note FROM big" ;;
    esac
    start=$(date +%s.%N)
    # shellcheck disable=SC2046
    seen=$(PGPASSWORD=$(password "$2") psql -X -q -At -v FETCH_COUNT=10000 -c "$sql" $(conn "$2") \
        | grep -c -F '**** **** **** 1111' || true)
    end=$(date +%s.%N)
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.2f", b - a}')" "$seen" >>"$OUT/runs.tsv"
    log "r$1 $2 $3: $(tail -1 "$OUT/runs.tsv" | cut -f4)s, masked cards seen: $seen"
}
targets=(direct gateway gateway_masking)
for round in $(seq 1 "$ROUNDS"); do
    for shape in copy select; do
        for i in 0 1 2; do run "$round" "${targets[$(((i + round) % 3))]}" "$shape"; done
    done
done

{
    echo "| shape | direct s | gateway s | gateway + masking s | masking / gateway | masking / direct |"
    echo "|---|---|---|---|---|---|"
    for shape in copy select; do
        med() { awk -F'\t' -v t="$1" -v s="$shape" '$2 == t && $3 == s {print $4}' "$OUT/runs.tsv" | sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
        d=$(med direct); g=$(med gateway); m=$(med gateway_masking)
        echo "| $shape | $d | $g | $m | $(awk -v a="$m" -v b="$g" 'BEGIN{printf "%.2f", a/b}') | $(awk -v a="$m" -v b="$d" 'BEGIN{printf "%.2f", a/b}') |"
    done
    echo
    for t in gateway gateway_masking; do
        p="GW_PID_$t"
        echo "$t peak RSS: $(awk '/VmHWM/{printf "%.1f MiB", $2/1024}' "/proc/${!p}/status")"
    done
    echo "result: $((bytes / 1048576)) MiB in $ROWS rows; rounds: $ROUNDS; host: $(nproc) CPUs"
} | tee "$OUT/summary.md"
echo "results: $OUT"
