# Helpers shared by scripts/bench.sh and scripts/bench/profile.sh. Source, don't run.
#
# Expects: REPO (repository root), WORK (a temp dir, world-readable so pgbouncer can run as
# the postgres user), PGHOST_DIRECT, PGPORT_DIRECT, PGUSER_DIRECT, BENCH_DB.

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Installs what the benchmark needs when it is missing (Debian/Ubuntu, as root).
ensure_tools() {
    local missing=()
    command -v pgbench >/dev/null || missing+=(postgresql-client)
    command -v psql >/dev/null || missing+=(postgresql-client)
    command -v pgbouncer >/dev/null && [ -x "$(command -v pgbouncer)" ] || {
        [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
    }
    if [ "${#missing[@]}" -gt 0 ]; then
        [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; install them (apt-get install -y ${missing[*]})"
        command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get"
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    PGBOUNCER_BIN=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
    [ -x "$PGBOUNCER_BIN" ] || die "pgbouncer not found after install"
}

# Any socket (listening or connected) on the port: a port held as the local end of a connection
# cannot be bound either.
# One benchmark or profile at a time per machine: they share the database (which bench.sh
# re-initialises) and the CPUs. Waits for a running one to finish.
bench_lock() {
    command -v flock >/dev/null || return 0
    exec 9>/tmp/gatehouse-bench.lock
    if ! flock -n 9; then
        log "another scripts/bench.sh or profile.sh is running; waiting for it"
        flock 9
    fi
}

port_in_use() { ss -Htan "sport = :$1" 2>/dev/null | grep -q .; }

# Prints a free TCP port on 127.0.0.1 (not one handed out earlier in this run), below the
# kernel's ephemeral range (ip_local_port_range, 32768+ by default) so no outgoing connection
# can take it between the check and the bind.
TAKEN_PORTS=" "
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        case "$TAKEN_PORTS" in *" $p "*) continue ;; esac
        if ! port_in_use "$p"; then
            TAKEN_PORTS="$TAKEN_PORTS$p "
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

wait_port() { # port timeout_s
    local deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# start_gateway NAME FSYNC(always|periodic|never) [BINARY] [WORKERS] [EXTRA_FILE] [AUDIT_KEYS]
# -> sets GW_PID_<NAME>,
# GW_PORT_<NAME>, GW_KEY_<NAME>. BINARY defaults to this checkout's release build.
start_gateway() {
    local name=$1 fsync=$2 bin=${3:-$REPO/target/release/gatehouse} workers=${4:-} policy=${5:-} audit_extra=${6:-} dir="$WORK/$1" port
    port=$(free_port)
    mkdir -p "$dir"
    cat >"$dir/gatehouse.yaml" <<EOF
# Written by scripts/bench.sh
data_dir: ./data
log: { level: info, format: text }
admin: { listen: 127.0.0.1:0, admin_groups: [gatehouse-admins] }
audit: { fsync: $fsync${audit_extra:+, $audit_extra} }
postgres: { listen: 127.0.0.1:$port, require_tls: non_loopback${workers:+, workers: $workers} }
connections:
  bench:
    protocol: postgres
    upstream:
      host: $PGHOST_DIRECT
      port: $PGPORT_DIRECT
      database: $BENCH_DB
      user: $PGUSER_DIRECT
      tls: { mode: disable }
    allow:
      groups: [gatehouse-admins]
EOF
    if [ -n "$policy" ]; then cat "$policy" >>"$dir/gatehouse.yaml"; fi
    # 9>&-: the benchmark lock (bench_lock) must not outlive this script in a child.
    "$bin" serve --config "$dir/gatehouse.yaml" >"$dir/gatehouse.log" 2>&1 9>&- &
    local pid=$!
    local deadline=$((SECONDS + 30))
    until [ -s "$dir/data/admin.key" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$dir/gatehouse.log" >&2; die "gateway $name exited"; }
        [ $SECONDS -lt $deadline ] || { cat "$dir/gatehouse.log" >&2; die "gateway $name did not start"; }
        sleep 0.1
    done
    printf -v "GW_PID_$name" '%s' "$pid"
    printf -v "GW_PORT_$name" '%s' "$port"
    printf -v "GW_KEY_$name" '%s' "$(tr -d '\r\n' <"$dir/data/admin.key")"
    STARTED_PIDS="$STARTED_PIDS $pid"
    log "gateway $name (fsync $fsync) pid $pid on 127.0.0.1:$port"
}

# start_pgbouncer -> sets PGB_PID, PGB_PORT. Session pooling, trust auth, plaintext both ways.
start_pgbouncer() {
    local dir="$WORK/pgbouncer"
    PGB_PORT=$(free_port)
    mkdir -p "$dir"
    cat >"$dir/pgbouncer.ini" <<EOF
; Written by scripts/bench.sh
[databases]
$BENCH_DB = host=$PGHOST_DIRECT port=$PGPORT_DIRECT dbname=$BENCH_DB user=$PGUSER_DIRECT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 20
server_tls_sslmode = disable
client_tls_sslmode = disable
ignore_startup_parameters = extra_float_digits
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
    printf '"%s" ""\n' "$PGUSER_DIRECT" >"$dir/userlist.txt"
    local run=()
    if [ "$(id -u)" = 0 ]; then
        # PgBouncer refuses to run as root.
        chown -R postgres: "$dir"
        run=(runuser -u postgres --)
    fi
    "${run[@]}" "$PGBOUNCER_BIN" -d "$dir/pgbouncer.ini" 9>&- || { cat "$dir/pgbouncer.log" >&2; die "pgbouncer did not start"; }
    local deadline=$((SECONDS + 15))
    until [ -s "$dir/pgbouncer.pid" ] && (exec 3<>"/dev/tcp/127.0.0.1/$PGB_PORT") 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { cat "$dir/pgbouncer.log" >&2; die "pgbouncer did not start"; }
        sleep 0.1
    done
    PGB_PID=$(cat "$dir/pgbouncer.pid")
    STARTED_PIDS="$STARTED_PIDS $PGB_PID"
    log "pgbouncer $($PGBOUNCER_BIN --version | sed -n 1,1p) pid $PGB_PID on 127.0.0.1:$PGB_PORT (session pooling)"
}

stop_started() {
    local pid
    for pid in $STARTED_PIDS; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $STARTED_PIDS; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    STARTED_PIDS=""
}

# utime+stime of one process in clock ticks (0 if gone).
proc_ticks() {
    [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || { echo 0; return; }
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# Busy and total jiffies of the whole host (all CPUs).
host_ticks() { awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t - $5 - $6, t}' /proc/stat; }

# One line "pid ticks" per process that is not part of the benchmark: everything except
# pgbench, pgbouncer and the pids given as arguments. PostgreSQL backends serving the benchmark
# are removed later (foreign_ticks_from), since other people's tests use the same server.
foreign_snapshot() {
    local exclude=" $* "
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v ex="$exclude" '{
        pid = $1; s = $0
        comm = s; sub(/^[^(]*\(/, "", comm); sub(/\) [A-Za-z] .*$/, "", comm)
        sub(/^.*\) /, "", s); split(s, f, " ")
        if (comm == "pgbench" || comm == "pgbouncer") next
        if (index(ex, " " pid " ")) next
        print pid, f[12] + f[13]
    }'
}

# Samples foreign_snapshot once a second while process $1 lives; appends to file $2.
# The first snapshot is tagged 0, later ones 1.
foreign_sampler() {
    local watch=$1 out=$2; shift 2
    foreign_snapshot "$@" | sed 's/^/0 /' >"$out"
    while kill -0 "$watch" 2>/dev/null; do
        sleep 1
        foreign_snapshot "$@" | sed 's/^/1 /' >>"$out"
    done
}

# Pids of the PostgreSQL backends connected to database $1 (the benchmark's own sessions).
bench_backends() {
    psql -X -q -At -h "$PGHOST_DIRECT" -p "$PGPORT_DIRECT" -U "$PGUSER_DIRECT" -d postgres \
        -c "select pid from pg_stat_activity where datname = '$1' and pid <> pg_backend_pid()" 2>/dev/null || true
}

# CPU ticks used by foreign processes over a sampler file ($1): per pid, newest minus the
# first snapshot (or minus 0 for processes that appeared during the run), leaving out the pids
# listed in file $2 (the benchmark's backends). Processes that exit between two samples lose
# up to a second of CPU, so this is a lower bound.
foreign_ticks_from() {
    awk -v skipfile="${2:-/dev/null}" '
         BEGIN { while ((getline line < skipfile) > 0) skip[line + 0] = 1 }
         ($2 in skip) { next }
         { if ($1 == 0) base[$2] = $3; else last[$2] = $3 }
         END { for (p in last) { d = last[p] - ((p in base) ? base[p] : 0); if (d > 0) s += d }; print s + 0 }' "$1"
}
