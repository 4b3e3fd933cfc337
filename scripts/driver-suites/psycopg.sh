#!/usr/bin/env bash
# Runs psycopg 3's own test suite twice with the same options, once directly against
# PostgreSQL and once through the gateway, and prints what fails only through the gateway.
#
#   scripts/driver-suites/psycopg.sh PSYCOPG_SRC [PYTEST_ARGS...]
#   PSYCOPG_SRC=/tmp/psycopg-src scripts/driver-suites/psycopg.sh [PYTEST_ARGS...]
#
# PSYCOPG_SRC is a psycopg source tree (with psycopg/, psycopg_pool/ and tests/) or a bare git
# directory of the psycopg repository (its HEAD is extracted). The machines this project runs
# on reach package registries only, so the source is not cloned here: it comes from a snapshot
# of github.com/psycopg/psycopg fetched outside the repository (and it is never copied into it).
#
# What it does:
#   1. a venv with the fetched psycopg and psycopg_pool installed editable (pure Python, the
#      system libpq) and the test requirements from PyPI (pytest, pytest-timeout, anyio, pproxy);
#   2. the database $PSYCOPG_DB on the server at $PGHOST:$PGPORT (user $PGUSER, trust auth);
#   3. a gateway (GATEHOUSE_BIN, or `cargo build -p gatehouse` copied once into the work dir so
#      a concurrent rebuild cannot change it mid-run) with one connection $PSYCOPG_DB to it;
#   4. pytest twice (single worker, fixed order, per-test timeout, junit XML), then a
#      comparison of the two XML reports.
#
# PYTEST_ARGS (the arguments after PSYCOPG_SRC, or all of them when PSYCOPG_SRC is set in the
# environment) replace the default test selection: e.g.
#   scripts/driver-suites/psycopg.sh /tmp/psycopg-src tests/test_copy.py tests/test_notify.py
# Default selection: all of tests/ except the markers `mypy` (runs mypy, no database, slow) and
# `proxy` (starts pproxy on random ports). The whole selection takes about 20 minutes per run
# on two cores. Which tests run also depends on the system libpq (Debian 12's libpq 15 skips
# the libpq >= 17 tests, e.g. the new cancel API) and on the server (prepared transactions
# need max_prepared_transactions > 0, else the TPC tests skip). Timing tests (markers `timing`,
# `slow`) can flake under load in either run; rerun one alone before blaming the gateway.
#
# Environment (all optional):
#   GATEHOUSE_BIN     gateway binary to use            default: cargo build -p gatehouse
#   WORK_DIR          venv, gateway config/logs, reports  default: a new /tmp/gatehouse-psycopg.*
#   PSYCOPG_VENV      venv to create or reuse          default: $WORK_DIR/venv
#   PYTHON            interpreter for the venv         default: python3.11, else python3
#   PGHOST PGPORT PGUSER  the direct server            default: 127.0.0.1 5432 postgres
#   PSYCOPG_DB        test database (created if missing)  default: psycopg_test
#   GH_PG_PORT GH_ADMIN_PORT  gateway listen ports     default: 18432 18481
#   TEST_TIMEOUT      per-test timeout in seconds      default: 60
#   PYTEST_MARK       -m expression                    default: "not mypy and not proxy"
#   RUNS              which runs: "direct gateway", "direct" or "gateway"
#                     default: both, or "gateway" when DIRECT_XML is set
#   DIRECT_XML        junit XML of an earlier direct run (same selection and options) to
#                     compare the gateway run against instead of running directly again;
#                     copied to $WORK_DIR/direct.xml. Valid only while the server is unchanged.
#   GH_AUDIT_FSYNC    audit.fsync of the gateway: always, periodic or never
#                     default: always (the gateway's default); timing tests such as
#                     test_grow and test_stats_usage can flake with it on a busy disk
#
# Output: the pass/fail/error/skip counts side by side, then the tests failing only through
# the gateway, those failing only directly, and other outcome changes (e.g. skipped directly
# because the direct DSN has no password, passed through the gateway). Reports, logs and the gateway's data dir (its
# audit log is data/audit/audit.log) stay in WORK_DIR. Exit status: 0 when nothing fails only
# through the gateway, 1 when something does, 2 on a setup error. No process is left running.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
log() { printf '[psycopg-suite %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 2; }

if [ -z "${PSYCOPG_SRC:-}" ] && [ $# -gt 0 ]; then
    PSYCOPG_SRC=$1
    shift
fi
[ -n "$PSYCOPG_SRC" ] || die "usage: $0 PSYCOPG_SRC [PYTEST_ARGS...] (or set PSYCOPG_SRC)"
[ -e "$PSYCOPG_SRC" ] || die "$PSYCOPG_SRC does not exist"
PSYCOPG_SRC=$(cd "$PSYCOPG_SRC" && pwd)

WORK_DIR=${WORK_DIR:-$(mktemp -d /tmp/gatehouse-psycopg.XXXXXX)}
mkdir -p "$WORK_DIR"
WORK_DIR=$(cd "$WORK_DIR" && pwd)
case "$WORK_DIR/" in "$REPO"/*) die "WORK_DIR must be outside the repository" ;; esac
PSYCOPG_VENV=${PSYCOPG_VENV:-$WORK_DIR/venv}
PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
PGUSER=${PGUSER:-postgres}
PSYCOPG_DB=${PSYCOPG_DB:-psycopg_test}
GH_PG_PORT=${GH_PG_PORT:-18432}
GH_ADMIN_PORT=${GH_ADMIN_PORT:-18481}
TEST_TIMEOUT=${TEST_TIMEOUT:-60}
PYTEST_MARK=${PYTEST_MARK:-not mypy and not proxy}
DIRECT_XML=${DIRECT_XML:-}
GH_AUDIT_FSYNC=${GH_AUDIT_FSYNC:-}
if [ -n "$DIRECT_XML" ]; then
    [ -f "$DIRECT_XML" ] || die "DIRECT_XML $DIRECT_XML does not exist"
    RUNS=${RUNS:-gateway}
    case " $RUNS " in *" direct "*) die "DIRECT_XML replaces the direct run: set RUNS=gateway" ;; esac
fi
RUNS=${RUNS:-direct gateway}
case "$GH_AUDIT_FSYNC" in ""|always|periodic|never) ;; *) die "GH_AUDIT_FSYNC must be always, periodic or never" ;; esac

GATEWAY_PID=
PYTEST_PID=
cleanup() {
    if [ -n "$PYTEST_PID" ] && kill -0 "$PYTEST_PID" 2>/dev/null; then
        kill "$PYTEST_PID" 2>/dev/null || true
        wait "$PYTEST_PID" 2>/dev/null || true
    fi
    if [ -n "$GATEWAY_PID" ] && kill -0 "$GATEWAY_PID" 2>/dev/null; then
        kill "$GATEWAY_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$GATEWAY_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$GATEWAY_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. psycopg source ---------------------------------------------------------------------
SRC=$PSYCOPG_SRC
if [ ! -d "$SRC/tests" ] && git --git-dir="$SRC" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    SRC=$WORK_DIR/psycopg-src
    if [ ! -d "$SRC/tests" ]; then
        log "extracting HEAD of $PSYCOPG_SRC into $SRC"
        mkdir -p "$SRC"
        git --git-dir="$PSYCOPG_SRC" archive HEAD | tar -x -C "$SRC"
    fi
fi
for d in psycopg psycopg_pool tests; do
    [ -d "$SRC/$d" ] || die "$SRC has no $d/: not a psycopg source tree"
done
case "$SRC/" in "$REPO"/*) die "the psycopg source must be outside the repository" ;; esac

# --- 2. system packages and the venv -------------------------------------------------------
missing=()
command -v psql >/dev/null || missing+=(postgresql-client)
ldconfig -p 2>/dev/null | grep -q 'libpq\.so\.5 ' || missing+=(libpq5)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; install them with apt-get"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x "$PSYCOPG_VENV/bin/pytest" ]; then
    log "creating the venv $PSYCOPG_VENV"
    "$PYTHON" -m venv "$PSYCOPG_VENV"
    "$PSYCOPG_VENV/bin/pip" install -q --upgrade pip
    "$PSYCOPG_VENV/bin/pip" install -q "anyio>=4.0" "pytest>=6.2.5" "pytest-timeout>=2" "pproxy>=2.7"
fi
# Compat mode puts the projects on sys.path: the default finder of an editable install loses
# to the namespace package that pytest sees in the source root.
"$PSYCOPG_VENV/bin/pip" install -q --config-settings editable_mode=compat \
    -e "$SRC/psycopg" -e "$SRC/psycopg_pool" >/dev/null 2>&1 \
    || "$PSYCOPG_VENV/bin/pip" install -q --config-settings editable_mode=compat \
        -e "$SRC/psycopg" -e "$SRC/psycopg_pool"
"$PSYCOPG_VENV/bin/python" - "$SRC" <<'EOF' || die "psycopg does not import from the source tree"
import sys, psycopg
assert psycopg.__file__.startswith(sys.argv[1]), psycopg.__file__
print(f"psycopg {psycopg.__version__}, libpq {psycopg.pq.version()}, impl {psycopg.pq.__impl__}",
      file=sys.stderr)
EOF

# --- 3. database and gateway ---------------------------------------------------------------
psql_direct() { psql -X -q -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d postgres "$@"; }
psql_direct -Atc 'select 1' >/dev/null || die "cannot reach PostgreSQL at $PGHOST:$PGPORT as $PGUSER"
if [ "$(psql_direct -Atc "select count(*) from pg_database where datname = '$PSYCOPG_DB'")" = 0 ]; then
    log "creating database $PSYCOPG_DB"
    psql_direct -c "CREATE DATABASE \"$PSYCOPG_DB\""
fi

port_in_use() { ss -Htln "sport = :$1" 2>/dev/null | grep -q .; }
GW_DIR=$WORK_DIR/gateway
case " $RUNS " in
*" gateway "*)
    if [ -z "${GATEHOUSE_BIN:-}" ]; then
        log "building the gateway (cargo build -p gatehouse)"
        (cd "$REPO" && cargo build -q -p gatehouse)
        GATEHOUSE_BIN=$REPO/target/debug/gatehouse
    fi
    [ -x "$GATEHOUSE_BIN" ] || die "no gateway binary at $GATEHOUSE_BIN"
    mkdir -p "$GW_DIR"
    cp "$GATEHOUSE_BIN" "$GW_DIR/gatehouse"
    for p in "$GH_PG_PORT" "$GH_ADMIN_PORT"; do
        ! port_in_use "$p" || die "port $p is in use (set GH_PG_PORT / GH_ADMIN_PORT)"
    done
    cat >"$GW_DIR/gatehouse.yaml" <<EOF
# Written by scripts/driver-suites/psycopg.sh
data_dir: ./data
log: { level: info, format: text }
admin: { listen: 127.0.0.1:$GH_ADMIN_PORT, admin_groups: [gatehouse-admins] }
postgres:
  listen: 127.0.0.1:$GH_PG_PORT
audit: { fsync: ${GH_AUDIT_FSYNC:-always} }
connections:
  $PSYCOPG_DB:
    protocol: postgres
    upstream: { host: $PGHOST, port: $PGPORT, database: $PSYCOPG_DB, user: $PGUSER, tls: { mode: disable } }
    allow: { groups: [gatehouse-admins] }
EOF
    "$GW_DIR/gatehouse" config check --config "$GW_DIR/gatehouse.yaml" >/dev/null
    "$GW_DIR/gatehouse" serve --config "$GW_DIR/gatehouse.yaml" >"$GW_DIR/gatehouse.log" 2>&1 &
    GATEWAY_PID=$!
    deadline=$((SECONDS + 30))
    until [ -s "$GW_DIR/data/admin.key" ] && (exec 3<>"/dev/tcp/127.0.0.1/$GH_PG_PORT") 2>/dev/null; do
        kill -0 "$GATEWAY_PID" 2>/dev/null || { cat "$GW_DIR/gatehouse.log" >&2; die "the gateway exited"; }
        [ $SECONDS -lt $deadline ] || { cat "$GW_DIR/gatehouse.log" >&2; die "the gateway did not start"; }
        sleep 0.2
    done
    GW_KEY=$(tr -d '\r\n' <"$GW_DIR/data/admin.key")
    log "gateway pid $GATEWAY_PID on 127.0.0.1:$GH_PG_PORT, logs in $GW_DIR"
    ;;
esac

# --- 4. the two runs -----------------------------------------------------------------------
if [ $# -gt 0 ]; then SELECTION=("$@"); else SELECTION=(tests); fi
run_suite() { # name dsn
    local name=$1 dsn=$2 started=$SECONDS rc=0
    log "run '$name': pytest ${SELECTION[*]} (output in $WORK_DIR/$name.out)"
    # Run from the source root (its pyproject.toml holds psycopg's pytest settings); a cache
    # dir per run, as psycopg's conftest keeps a crash marker in the cache.
    rm -rf "$WORK_DIR/cache-$name" "$WORK_DIR/$name.xml"
    (cd "$SRC" && exec "$PSYCOPG_VENV/bin/pytest" -p no:randomly \
        -o cache_dir="$WORK_DIR/cache-$name" --timeout="$TEST_TIMEOUT" \
        -m "$PYTEST_MARK" -v -rfE --junitxml="$WORK_DIR/$name.xml" \
        --test-dsn "$dsn" "${SELECTION[@]}") >"$WORK_DIR/$name.out" 2>&1 </dev/null &
    PYTEST_PID=$!
    wait "$PYTEST_PID" || rc=$?
    PYTEST_PID=
    log "run '$name' finished in $((SECONDS - started))s (pytest exit $rc): $(tail -n 1 "$WORK_DIR/$name.out")"
}
case " $RUNS " in *" direct "*)
    run_suite direct "host=$PGHOST port=$PGPORT dbname=$PSYCOPG_DB user=$PGUSER sslmode=disable" ;;
esac
case " $RUNS " in *" gateway "*)
    run_suite gateway "host=127.0.0.1 port=$GH_PG_PORT dbname=$PSYCOPG_DB user=tester password=$GW_KEY sslmode=disable"
    cleanup
    GATEWAY_PID= ;;
esac

# --- 5. comparison -------------------------------------------------------------------------
if [ -n "$DIRECT_XML" ] && [ "$(cd "$(dirname "$DIRECT_XML")" && pwd)/$(basename "$DIRECT_XML")" != "$WORK_DIR/direct.xml" ]; then
    log "comparing against the earlier direct run $DIRECT_XML"
    cp "$DIRECT_XML" "$WORK_DIR/direct.xml"
fi
[ -f "$WORK_DIR/direct.xml" ] && [ -f "$WORK_DIR/gateway.xml" ] || {
    log "only one run: no comparison (reports in $WORK_DIR)"
    exit 0
}
rc=0
"$PSYCOPG_VENV/bin/python" - "$WORK_DIR/direct.xml" "$WORK_DIR/gateway.xml" <<'EOF' || rc=$?
import sys
import xml.etree.ElementTree as ET

RANK = {"passed": 0, "skipped": 1, "xfailed": 1, "error": 2, "failed": 3}

def outcomes(path):
    """test id -> (outcome, first line of its message); a setup/teardown error counts."""
    result = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        tid = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, message = "passed", ""
        for child in case:
            kind = {"failure": "failed", "error": "error", "skipped": "skipped"}.get(child.tag)
            if kind is None:
                continue
            if kind == "skipped" and (child.get("type") or "").endswith("xfail"):
                kind = "xfailed"
            if RANK[kind] >= RANK[outcome]:
                outcome = kind
                message = (child.get("message") or child.text or "").strip().splitlines()
                message = message[0][:160] if message else ""
        old = result.get(tid)
        if old is None or RANK[outcome] > RANK[old[0]]:
            result[tid] = (outcome, message)
    return result

direct, gateway = outcomes(sys.argv[1]), outcomes(sys.argv[2])
bad = ("failed", "error")

def counts(res):
    c = dict.fromkeys(["passed", "failed", "error", "skipped", "xfailed"], 0)
    for outcome, _ in res.values():
        c[outcome] += 1
    return c

cd, cg = counts(direct), counts(gateway)
print()
print(f"{'':10}{'direct':>10}{'gateway':>10}")
for k in ["passed", "failed", "error", "skipped", "xfailed"]:
    print(f"{k:10}{cd[k]:>10}{cg[k]:>10}")
print(f"{'total':10}{len(direct):>10}{len(gateway):>10}")

only_gw = sorted(t for t, (o, _) in gateway.items() if o in bad and direct.get(t, ("passed",))[0] not in bad)
only_direct = sorted(t for t, (o, _) in direct.items() if o in bad and gateway.get(t, ("passed",))[0] not in bad)
missing = sorted(set(direct) ^ set(gateway))

print(f"\nfailing only through the gateway: {len(only_gw)}")
for t in only_gw:
    o, msg = gateway[t]
    print(f"  {o:6} {t}\n         {msg}")
print(f"\nfailing only directly: {len(only_direct)}")
for t in only_direct:
    o, msg = direct[t]
    print(f"  {o:6} {t}\n         {msg}")
changed = sorted(t for t in set(direct) & set(gateway)
                 if direct[t][0] != gateway[t][0] and t not in only_gw and t not in only_direct
                 and not (direct[t][0] in bad and gateway[t][0] in bad))
if changed:
    print(f"\nother outcome changes (direct -> gateway): {len(changed)}")
    for t in changed:
        print(f"  {direct[t][0]} -> {gateway[t][0]}  {t}")
        print(f"         {direct[t][1] or gateway[t][1]}")
if missing:
    print(f"\nin one report only: {len(missing)}")
    for t in missing:
        print(f"  {t}")
sys.exit(1 if only_gw else 0)
EOF
log "reports, logs and the gateway's data dir: $WORK_DIR"
exit "$rc"
