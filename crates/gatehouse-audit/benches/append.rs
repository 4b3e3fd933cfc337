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
//! * Each is run without and with signed checkpoints (`+ckpt`: the Merkle leaf per record,
//!   a checkpoint every 10,000 records and every second), side by side.
//! * `verify`: `verify_with` over a log of 1,000,000 records with checkpoints, checking
//!   every signature: records per second; then the examiner's bundle of that log, made
//!   (`audit bundle`) and checked (`audit verify-bundle`).
//!
//! The log goes to a fresh directory under `GATEHOUSE_BENCH_DIR` (default: the system temp
//! dir); fsync numbers are only meaningful on the disk the gateway will use.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::Arc;

use gatehouse_audit::checkpoint::CheckpointOptions;
use gatehouse_audit::{AuditLog, Event, EventKind, FsyncMode, Options, Outcome, VerifyOptions};
use gatehouse_tlog::Signer;

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

fn signer() -> Arc<Signer> {
    Arc::new(Signer::from_seed("bench/gatehouse-audit", &[1u8; 32]).expect("signer"))
}

/// The writer's options; with checkpoints, the kept checkpoint goes beside the log directory.
fn options(fsync: FsyncMode, checkpoints: bool, dir: &std::path::Path) -> Options {
    Options {
        fsync,
        checkpoints: checkpoints.then(|| CheckpointOptions {
            origin: "bench/gatehouse-audit".into(),
            signer: signer(),
            state_path: dir.join("checkpoint.json"),
            interval: Duration::from_secs(1),
            every: 10_000,
        }),
        ..Options::default()
    }
}

fn label(fsync: FsyncMode, checkpoints: bool) -> String {
    format!("{fsync:?}{}", if checkpoints { "+ckpt" } else { "" })
}

fn record_concurrently(
    rt: &tokio::runtime::Runtime,
    fsync: FsyncMode,
    checkpoints: bool,
    tasks: u64,
) {
    let dir = bench_dir();
    let log = AuditLog::open(
        &dir.path().join("audit"),
        options(fsync, checkpoints, dir.path()),
    )
    .expect("open");
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
        "record        {:<11} {:>4} tasks {:>9} events {:>9.0} ns/event {:>9.0} events/s \
         {:>7.1} events/batch {:>7} per fsync {:>4} checkpoints",
        label(fsync, checkpoints),
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
        stats.checkpoints,
    );
}

fn append_burst(fsync: FsyncMode, checkpoints: bool, count: u64) {
    let dir = bench_dir();
    let log = AuditLog::open(
        &dir.path().join("audit"),
        options(fsync, checkpoints, dir.path()),
    )
    .expect("open");
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
        "append burst  {:<11} {count:>9} events: append {:>6.0} ns/event (caller), \
         writer done after {:>6.0} ns/event, {:.0} events/batch, {} fsyncs",
        label(fsync, checkpoints),
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
    if std::env::var("GATEHOUSE_BENCH_ONLY").as_deref() == Ok("verify") {
        verify(1_000_000);
        return;
    }
    for fsync in [FsyncMode::Always, FsyncMode::Never] {
        for tasks in [1, 16, 256] {
            for checkpoints in [false, true] {
                record_concurrently(&rt, fsync, checkpoints, tasks);
            }
        }
    }
    for fsync in [FsyncMode::Always, FsyncMode::Never] {
        for checkpoints in [false, true] {
            append_burst(fsync, checkpoints, 500_000);
        }
    }
    verify(1_000_000);
}

fn verify(count: u64) {
    let dir = bench_dir();
    let audit = dir.path().join("audit");
    let log = AuditLog::open(&audit, options(FsyncMode::Never, true, dir.path())).expect("open");
    for i in 0..count {
        log.append(event(i)).expect("append");
    }
    log.close().expect("close");
    let path = audit.join(gatehouse_audit::LOG_FILE_NAME);
    // GATEHOUSE_BENCH_KEEP_LOG=FILE keeps a copy, to profile verification alone.
    if let Some(keep) = std::env::var_os("GATEHOUSE_BENCH_KEEP_LOG") {
        std::fs::copy(&path, keep).expect("keep the log");
    }
    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    let opts = VerifyOptions {
        verifier: Some(signer().verifier()),
        state: None,
    };
    let mut best = Duration::MAX;
    let mut report = None;
    let rounds = std::env::var("GATEHOUSE_BENCH_VERIFY_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    for _ in 0..rounds {
        let start = Instant::now();
        report = Some(gatehouse_audit::verify_with(&path, &opts).expect("verify"));
        best = best.min(start.elapsed());
    }
    let report = report.expect("ran");
    println!(
        "verify        {} records ({:.0} MB, {} checkpoints, signatures checked): best of {rounds} \
         {:.2} s, {:.0} records/s, {:.0} MB/s",
        report.records,
        bytes as f64 / 1e6,
        report.checkpoints.count,
        best.as_secs_f64(),
        report.records as f64 / best.as_secs_f64(),
        bytes as f64 / 1e6 / best.as_secs_f64(),
    );
    bundle(&path, &opts, dir.path());
}

/// The examiner's bundle of the whole log: made (which verifies the log first) and checked.
fn bundle(log: &std::path::Path, opts: &VerifyOptions, dir: &std::path::Path) {
    use gatehouse_audit::bundle;
    let out = dir.join("bundle.tar");
    let start = Instant::now();
    let manifest = bundle::make(log, opts, &bundle::Selection::default(), &out).expect("bundle");
    let made = start.elapsed();
    let start = Instant::now();
    bundle::check(&out, &signer().verifier(), &[]).expect("verify-bundle");
    let checked = start.elapsed();
    let records = manifest.summary.records as f64;
    println!(
        "bundle        {} records: make {:.2} s ({:.0} records/s, verify included), \
         verify-bundle {:.2} s ({:.0} records/s), {} range-proof hashes",
        manifest.summary.records,
        made.as_secs_f64(),
        records / made.as_secs_f64(),
        checked.as_secs_f64(),
        records / checked.as_secs_f64(),
        manifest.tree.range_proof.len(),
    );
}
