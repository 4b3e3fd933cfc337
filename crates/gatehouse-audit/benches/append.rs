//! Writer micro benchmark (no benchmark framework): ns per event and events per fsync.
//!
//! ```text
//! cargo bench -p gatehouse-audit --bench append
//! GATEHOUSE_BENCH_DIR=/mnt/disk GATEHOUSE_BENCH_SECS=5 cargo bench -p gatehouse-audit --bench append
//! ```
//!
//! * `record`: N tokio tasks each loop on `record(event).await` (append + wait until durable),
//!   the shape of the statement path of the proxy. Reports wall time per event across all
//!   tasks, events per batch and per fsync.
//! * `append burst`: one thread appends as fast as it can, then waits for the last ticket:
//!   the caller-side cost of `append` plus the writer's encode/hash/write throughput.
//!
//! The log goes to a fresh directory under `GATEHOUSE_BENCH_DIR` (default: the system temp
//! dir); fsync numbers are only meaningful on the disk the gateway will use.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gatehouse_audit::{AuditLog, Event, EventKind, FsyncMode, Options, Outcome};

fn event(i: u64) -> Event {
    let mut e = Event::now(EventKind::Statement, Outcome::success());
    e.session = Some("7f3a9c2e-session".into());
    e.who.subject = Some("alice@example.com".into());
    e.who.groups = vec!["dba".into(), "payments".into()];
    e.who.method = Some("oidc".into());
    e.who.source = Some("10.1.2.3:54321".into());
    e.what.connection = Some("ledger-prod".into());
    e.what.protocol = Some("postgres".into());
    e.what.statement = Some(format!(
        "SELECT id, amount FROM payments WHERE account_id = {i}"
    ));
    e.what.classification = Some("read".into());
    e.outcome.rows = Some(12);
    e.outcome.duration_ns = Some(350_000);
    e
}

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("GATEHOUSE_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(PathBuf::from(base)),
        None => tempfile::tempdir(),
    }
    .expect("create a benchmark directory")
}

fn seconds() -> Duration {
    let secs = std::env::var("GATEHOUSE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok());
    Duration::from_secs_f64(secs.unwrap_or(2.0))
}

fn options(fsync: FsyncMode) -> Options {
    Options {
        fsync,
        ..Options::default()
    }
}

fn record_concurrently(rt: &tokio::runtime::Runtime, fsync: FsyncMode, tasks: u64) {
    let dir = bench_dir();
    let log = AuditLog::open(dir.path(), options(fsync)).expect("open");
    let budget = seconds();
    let start = Instant::now();
    rt.block_on(async {
        let deadline = start + budget;
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut i = t << 32;
                    while Instant::now() < deadline {
                        log.record(event(i)).await.expect("record");
                        i += 1;
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("task");
        }
    });
    let elapsed = start.elapsed();
    let stats = log.stats();
    log.close().expect("close");
    let n = stats.events_written.max(1);
    println!(
        "record        {:<6} {:>4} tasks {:>9} events {:>9.0} ns/event {:>9.0} events/s \
         {:>7.1} events/batch {:>7} per fsync",
        format!("{fsync:?}"),
        tasks,
        stats.events_written,
        elapsed.as_nanos() as f64 / n as f64,
        n as f64 / elapsed.as_secs_f64(),
        n as f64 / stats.batches.max(1) as f64,
        if stats.syncs == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}", n as f64 / stats.syncs as f64)
        },
    );
}

fn append_burst(fsync: FsyncMode, count: u64) {
    let dir = bench_dir();
    let log = AuditLog::open(dir.path(), options(fsync)).expect("open");
    // Build the events first so only `append` is timed on the caller side.
    let events: Vec<Event> = (0..count).map(event).collect();
    let start = Instant::now();
    let mut last = None;
    for e in events {
        last = Some(log.append(e).expect("append"));
    }
    let appended = start.elapsed();
    if let Some(t) = last {
        log.durable_blocking(t).expect("durable");
    }
    let done = start.elapsed();
    let stats = log.stats();
    log.close().expect("close");
    println!(
        "append burst  {:<6} {count:>9} events: append {:>6.0} ns/event (caller), \
         writer done after {:>6.0} ns/event, {:.0} events/batch, {} fsyncs",
        format!("{fsync:?}"),
        appended.as_nanos() as f64 / count as f64,
        done.as_nanos() as f64 / count as f64,
        stats.events_written as f64 / stats.batches.max(1) as f64,
        stats.syncs,
    );
}

fn main() {
    let threads = std::thread::available_parallelism()
        .map_or(4, |n| n.get())
        .max(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "gatehouse-audit append benchmark: {threads} runtime threads, {:?} per run",
        seconds()
    );
    for fsync in [FsyncMode::Always, FsyncMode::Never] {
        for tasks in [1, 16, 256] {
            record_concurrently(&rt, fsync, tasks);
        }
    }
    for fsync in [FsyncMode::Always, FsyncMode::Never] {
        append_burst(fsync, 500_000);
    }
}
