# Turns runs.tsv (one row per pgbench run) into medians per target and client count.
# Prints markdown on stdout; writes the medians as TSV to the file named by -v out_tsv=FILE.
#
#   awk -f scripts/bench/summarize.awk -v out_tsv=summary.tsv runs.tsv

function median(key, col,    n, i, j, tmp, a) {
    n = cnt[key]
    for (i = 1; i <= n; i++) a[i] = val[key, col, i]
    for (i = 2; i <= n; i++) {            # insertion sort; n is small
        tmp = a[i]
        for (j = i - 1; j >= 1 && a[j] + 0 > tmp + 0; j--) a[j + 1] = a[j]
        a[j + 1] = tmp
    }
    if (n == 0) return "NaN"
    if (a[1] == "NaN") return "NaN"
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function fmt(x, d) { return (x == "NaN" || x == "") ? "n/a" : sprintf("%." d "f", x) }
function ratio(a, b) { return (a == "NaN" || b == "NaN" || b + 0 == 0) ? "n/a" : sprintf("%.2f", a / b) }
function diff(a, b) { return (a == "NaN" || b == "NaN") ? "n/a" : sprintf("%+d", a - b) }

BEGIN { FS = "\t"; OFS = "\t" }
NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
{
    key = $col["target"] SUBSEP $col["clients"]
    if (!(key in cnt)) {
        cnt[key] = 0
        if (!($col["target"] in seen_t)) { seen_t[$col["target"]] = 1; targets[++nt] = $col["target"] }
        if (!($col["clients"] in seen_c)) { seen_c[$col["clients"]] = 1; clients[++nc] = $col["clients"] }
    }
    n = ++cnt[key]
    split("tps mean_us p50_us p99_us proxy_cpu_us_per_txn load1 host_busy_pct foreign_cpu_pct", names, " ")
    for (i in names) val[key, names[i], n] = $col[names[i]]
    if ($col["failed"] != "0") failed[key] = 1
    secs = $col["seconds"]
}
END {
    split("tps mean_us p50_us p99_us proxy_cpu_us_per_txn load1 host_busy_pct foreign_cpu_pct", names, " ")
    print "target", "clients", "runs", "tps", "mean_us", "p50_us", "p99_us", "proxy_cpu_us_per_txn", "load1", "host_busy_pct", "foreign_cpu_pct" > out_tsv
    for (ci = 1; ci <= nc; ci++) for (ti = 1; ti <= nt; ti++) {
        key = targets[ti] SUBSEP clients[ci]
        if (!(key in cnt)) continue
        line = targets[ti] OFS clients[ci] OFS cnt[key]
        for (k = 1; k <= 8; k++) { m[key, names[k]] = median(key, names[k]); line = line OFS m[key, names[k]] }
        print line > out_tsv
    }

    printf "pgbench -S (select-only, simple protocol), %s s per run, medians of the runs per cell.\n\n", secs
    print "| target | clients | runs | TPS | mean latency (µs) | p50 (µs) | p99 (µs) | proxy CPU (µs/txn) | load1 | other CPU % |"
    print "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for (ci = 1; ci <= nc; ci++) for (ti = 1; ti <= nt; ti++) {
        key = targets[ti] SUBSEP clients[ci]
        if (!(key in cnt)) continue
        printf "| %s%s | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", targets[ti], (key in failed) ? " (errors!)" : "",
            clients[ci], cnt[key], fmt(m[key, "tps"], 0), fmt(m[key, "mean_us"], 0), fmt(m[key, "p50_us"], 0),
            fmt(m[key, "p99_us"], 0), fmt(m[key, "proxy_cpu_us_per_txn"], 1), fmt(m[key, "load1"], 2),
            fmt(m[key, "foreign_cpu_pct"], 0)
    }
    print ""
    print "\"other CPU %\": CPU used during the run by everything except pgbench, the proxies and the PostgreSQL"
    print "backends serving the benchmark, as a share of all CPUs: other people's builds, tests and queries (a lower"
    print "bound: processes that exit between 1 s samples are partly missed). load1 is sampled at the start of the run."
    print ""
    print "| target | clients | TPS / direct | TPS / pgbouncer | added p50 vs direct (µs) | added p50 vs pgbouncer (µs) | added mean vs direct (µs) |"
    print "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    for (ci = 1; ci <= nc; ci++) for (ti = 1; ti <= nt; ti++) {
        t = targets[ti]; c = clients[ci]
        if (t == "direct" || !((t SUBSEP c) in cnt)) continue
        k = t SUBSEP c; d = "direct" SUBSEP c; b = "pgbouncer" SUBSEP c
        printf "| %s | %s | %s | %s | %s | %s | %s |\n", t, c,
            ratio(m[k, "tps"], m[d, "tps"]), (t == "pgbouncer") ? "1" : ratio(m[k, "tps"], m[b, "tps"]),
            diff(m[k, "p50_us"], m[d, "p50_us"]), (t == "pgbouncer") ? "0" : diff(m[k, "p50_us"], m[b, "p50_us"]),
            diff(m[k, "mean_us"], m[d, "mean_us"])
    }
    print ""
    print "Targets (from the issue): fsync periodic: TPS >= 0.9x PgBouncer at -c 8 and added p50 <= +35 µs over direct at -c 1;"
    print "fsync always (the default): TPS >= 0.75x PgBouncer at -c 8."
    for (ti = 1; ti <= nt; ti++) {
        gt = targets[ti]
        if (gt != "gateway" && gt != "gateway_periodic") continue
        label = gt == "gateway" ? "gateway (fsync always, the default)" : "gateway (fsync periodic)"
        want = gt == "gateway" ? 0.75 : 0.9
        g8 = m[gt SUBSEP 8, "tps"]; b8 = m["pgbouncer" SUBSEP 8, "tps"]
        g1 = m[gt SUBSEP 1, "p50_us"]; d1 = m["direct" SUBSEP 1, "p50_us"]
        if (g8 != "" && b8 != "" && g8 != "NaN" && b8 != "NaN")
            printf "- %s, TPS >= %.2fx PgBouncer at -c 8: %s (%.0f vs %.0f, ratio %s)\n", label, want, (g8 + 0 >= want * b8) ? "MET" : "NOT MET", g8, b8, ratio(g8, b8)
        if (gt == "gateway_periodic" && g1 != "" && d1 != "" && g1 != "NaN" && d1 != "NaN")
            printf "- %s, added p50 at -c 1 <= +35 µs: %s (%+d µs)\n", label, (g1 - d1 <= 35) ? "MET" : "NOT MET", g1 - d1
    }
}
