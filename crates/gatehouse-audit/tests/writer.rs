//! The writer: concurrency, group commit, reopening, crash recovery, failing closed.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{fast, lines, log_path, statement, write_log};
use gatehouse_audit::{verify_file, AuditError, AuditLog, Event, EventKind, Options, Outcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_dense_verified_and_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), Options::default()).unwrap();
    const TASKS: u64 = 64;
    const PER_TASK: u64 = 50;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                log.record(statement(t * PER_TASK + i)).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let stats = log.stats();
    log.shutdown().await.unwrap();

    let total = TASKS * PER_TASK;
    let report = verify_file(log_path(dir.path())).unwrap();
    assert_eq!(report.records, total);
    assert_eq!((report.first_seq, report.last_seq), (Some(1), Some(total)));
    assert_eq!(stats.events_written, total);
    assert_eq!(stats.durable_seq, total);
    // Group commit: concurrent appenders share fsyncs (by a wide margin on a real disk; the
    // bound is loose so a disk with near-free fsync cannot make the test flaky).
    eprintln!("{} events per fsync", total as f64 / stats.syncs as f64);
    assert!(stats.syncs < total, "group commit should batch: {stats:?}");
    // Every event is in the file exactly once.
    let mut rows: Vec<u64> = lines(&log_path(dir.path()))
        .iter()
        .map(|l| {
            gatehouse_audit::record::parse(&l[..l.len() - 1])
                .unwrap()
                .event
                .outcome
                .rows
                .unwrap()
        })
        .collect();
    rows.sort_unstable();
    assert_eq!(rows, (0..total).collect::<Vec<_>>());
}

#[tokio::test]
async fn tickets_are_seqs_and_durable_waits_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), Options::default()).unwrap();
    let tickets: Vec<_> = (1..=100)
        .map(|i| log.append(statement(i)).unwrap())
        .collect();
    assert_eq!(
        tickets.iter().map(|t| t.seq()).collect::<Vec<_>>(),
        (1..=100).collect::<Vec<_>>()
    );
    assert!(tickets.windows(2).all(|w| w[0] < w[1]));
    // Waiting for the last ticket means all earlier ones are durable too.
    log.durable(tickets[99]).await.unwrap();
    assert!(log.stats().durable_seq >= 100);
    for t in &tickets {
        log.durable(*t).await.unwrap();
    }
    log.shutdown().await.unwrap();
}

#[test]
fn reopen_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 5);
    let log = AuditLog::open(dir.path(), Options::default()).unwrap();
    assert_eq!(log.recovered_partial(), None);
    assert_eq!(log.stats().durable_seq, 5);
    let ticket = log.append(statement(6)).unwrap();
    assert_eq!(ticket.seq(), 6);
    log.record_blocking(statement(7)).unwrap();
    log.close().unwrap();
    let report = verify_file(log_path(dir.path())).unwrap();
    assert_eq!((report.records, report.last_seq), (7, Some(7)));
}

#[test]
fn creates_private_dir_and_file() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data/audit");
    let log = AuditLog::open(&dir, Options::default()).unwrap();
    log.record_blocking(statement(1)).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(log.path()), 0o600);
    log.close().unwrap();
}

#[test]
fn unfinished_last_line_is_moved_aside_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 3);
    let good = std::fs::read(&path).unwrap();
    let torn = lines(&path)[2][..40].to_vec(); // a crash 40 bytes into a record
    let mut bytes = good.clone();
    bytes.extend_from_slice(&torn);
    std::fs::write(&path, &bytes).unwrap();
    assert!(verify_file(&path).is_err());

    let log = AuditLog::open(dir.path(), fast()).unwrap();
    let aside = log.recovered_partial().expect("recovery reported");
    assert!(aside
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("audit.log.partial-"));
    assert_eq!(std::fs::read(&aside).unwrap(), torn);
    assert_eq!(
        std::fs::metadata(&aside).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        good,
        "log cut back to its last record"
    );

    let ticket = log.append(statement(4)).unwrap();
    assert_eq!(ticket.seq(), 4);
    log.close().unwrap();
    assert_eq!(verify_file(&path).unwrap().records, 4);
}

#[test]
fn a_log_that_is_only_an_unfinished_line_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(log_path(dir.path()), b"{\"seq\":1,\"prev\":\"00").unwrap();
    let log = AuditLog::open(dir.path(), fast()).unwrap();
    assert!(log.recovered_partial().is_some());
    assert_eq!(log.append(statement(1)).unwrap().seq(), 1);
    log.close().unwrap();
    assert_eq!(verify_file(log_path(dir.path())).unwrap().records, 1);
}

#[test]
fn a_corrupt_last_record_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 3);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 0x01; // inside the last record's hash
    std::fs::write(&path, &bytes).unwrap();
    match AuditLog::open(dir.path(), fast()) {
        Err(AuditError::Corrupt { offset, reason, .. }) => {
            let last_start = (n - lines(&path)[2].len()) as u64;
            assert_eq!(offset, last_start);
            assert!(reason.contains("hash"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Garbage that is not a record at all.
    std::fs::write(&path, b"hello\n").unwrap();
    assert!(matches!(
        AuditLog::open(dir.path(), fast()),
        Err(AuditError::Corrupt { .. })
    ));
}

/// Writes that fail (here: the log is `/dev/full`, every write gets ENOSPC) fail closed: the
/// append that could not be written is refused, and so is every later one.
#[tokio::test]
async fn failed_writes_fail_closed() {
    if !std::path::Path::new("/dev/full").exists() {
        eprintln!("skipped: no /dev/full");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/full", log_path(dir.path())).unwrap();
    let log = AuditLog::open(dir.path(), Options::default()).unwrap();

    let err = log.append(statement(1)).unwrap_err();
    assert!(
        matches!(err, AuditError::Unavailable(ref why) if why.contains("write")),
        "{err}"
    );
    // Every later call fails too; nothing is ever reported durable.
    assert!(matches!(
        log.append(statement(2)),
        Err(AuditError::Unavailable(_))
    ));
    assert!(matches!(
        log.record(statement(3)).await,
        Err(AuditError::Unavailable(_))
    ));
    assert!(matches!(
        log.record_blocking(statement(4)),
        Err(AuditError::Unavailable(_))
    ));
    assert!(matches!(
        log.shutdown().await,
        Err(AuditError::Unavailable(_))
    ));
    assert!(log.failure().is_some());
    assert_eq!(log.stats().events_written, 0);
    assert_eq!(log.stats().durable_seq, 0);
    assert!(log.stats().refused >= 3);
}

/// A full file system: appends are refused while it is full; once space is back the log takes
/// records again, first an `audit.gap` saying when it failed and how many records it refused,
/// and the chain stays intact. Uses a real (tmpfs) file system of 256 KiB, so needs root.
#[test]
fn a_full_disk_fails_closed_and_recovers_with_a_gap_record() {
    if !common::is_root() {
        eprintln!("skipped: mounting a small file system needs root");
        return;
    }
    let mount = common::SmallFs::mount(256 * 1024);
    let dir = mount.path().join("audit");
    let log = AuditLog::open(
        &dir,
        Options {
            retry_interval: std::time::Duration::from_millis(100),
            low_space_bytes: 0,
            ..Options::default()
        },
    )
    .unwrap();
    log.record_blocking(statement(1)).unwrap();
    let filler = mount.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 512 * 1024]); // fills it; the error is expected
    let mut refused = 0;
    for i in 2..10_000 {
        match log.record_blocking(statement(i)) {
            Ok(()) => {}
            Err(AuditError::Unavailable(_)) => {
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(refused, 3, "the full file system refused appends");
    assert!(log.failure().is_some());
    let written_before = verify_file(log_path(&dir)).unwrap().records;

    std::fs::remove_file(&filler).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    log.record_blocking(statement(99_999)).unwrap();
    assert!(log.failure().is_none());
    log.close().unwrap();

    let report = verify_file(log_path(&dir)).unwrap();
    assert_eq!(
        report.records,
        written_before + 2,
        "the gap record, then the event"
    );
    let stored = lines(&log_path(&dir));
    let gap = gatehouse_audit::record::parse(
        &stored[stored.len() - 2][..stored[stored.len() - 2].len() - 1],
    )
    .unwrap();
    assert_eq!(gap.event.kind, EventKind::AuditGap);
    let detail = gap.event.what.detail.unwrap();
    assert_eq!(detail["refused_records"], 3);
    assert!(detail["reason"].as_str().unwrap().contains("No space left"));
}

/// Many tasks waiting when the log fails all get an error (none hangs, none gets success).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_waiters_are_released_with_errors() {
    if !std::path::Path::new("/dev/full").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/full", log_path(dir.path())).unwrap();
    let log = AuditLog::open(dir.path(), Options::default()).unwrap();
    let mut handles = Vec::new();
    for i in 0..32 {
        let log = log.clone();
        handles.push(tokio::spawn(async move { log.record(statement(i)).await }));
    }
    for h in handles {
        let result = tokio::time::timeout(std::time::Duration::from_secs(10), h).await;
        assert!(
            matches!(result, Ok(Ok(Err(AuditError::Unavailable(_))))),
            "{result:?}"
        );
    }
}

#[tokio::test]
async fn closed_log_refuses_events() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), Options::default()).unwrap();
    let other = log.clone();
    let t = log.append(statement(1)).unwrap();
    log.shutdown().await.unwrap();
    other.durable(t).await.unwrap(); // written before the shutdown completed
    assert!(matches!(
        other.append(statement(2)),
        Err(AuditError::Closed)
    ));
    assert_eq!(verify_file(log_path(dir.path())).unwrap().records, 1);
}

#[test]
fn unrepresentable_events_are_rejected_without_harm() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), fast()).unwrap();
    let mut bad = Event::now(EventKind::GatewayStart, Outcome::success());
    bad.time = time::macros::datetime!(-0001-01-01 00:00:00 UTC);
    assert!(matches!(log.append(bad), Err(AuditError::InvalidEvent(_))));
    let mut huge = statement(1);
    huge.what.statement = Some("x".repeat(17 * 1024 * 1024));
    assert!(matches!(log.append(huge), Err(AuditError::InvalidEvent(_))));
    log.record_blocking(statement(1)).unwrap();
    log.close().unwrap();
    assert_eq!(verify_file(log_path(dir.path())).unwrap().records, 1);
}

#[test]
fn is_clone_send_sync() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<AuditLog>();
}

/// Dropping every handle without `shutdown` still lets the writer drain what was queued.
#[test]
fn dropping_the_last_handle_drains_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), fast()).unwrap();
    for i in 0..100 {
        log.append(statement(i)).unwrap();
    }
    drop(log);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(report) = verify_file(log_path(dir.path())) {
            if report.records == 100 {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "queue was not drained"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Periodic mode reports records durable once written, and syncs them within the interval
/// even when no further event arrives.
#[tokio::test]
async fn periodic_mode_syncs_within_the_interval() {
    use gatehouse_audit::{AuditLog, Event, EventKind, FsyncMode, Options, Outcome};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        fsync: FsyncMode::Periodic(Duration::from_millis(50)),
        ..Options::default()
    };
    let log = AuditLog::open(dir.path(), options).unwrap();
    let started = Instant::now();
    for _ in 0..20 {
        log.record(Event::now(EventKind::Statement, Outcome::success()))
            .await
            .unwrap();
    }
    // Twenty records written without waiting for twenty syncs.
    assert!(
        log.stats().syncs < 20,
        "synced every record: {:?}",
        log.stats()
    );
    let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    assert_eq!(
        text.lines().count(),
        20,
        "records are in the file before record() returns"
    );
    let deadline = started + Duration::from_secs(5);
    while log.stats().syncs == 0 {
        assert!(Instant::now() < deadline, "no sync within the interval");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    log.shutdown().await.unwrap();
    gatehouse_audit::verify_file(dir.path().join("audit.log")).unwrap();
}

/// With fsync always, a record nobody waits for costs no sync of its own: it rides along with
/// the next one somebody waits for, or is synced within the lazy interval.
#[tokio::test]
async fn records_nobody_waits_for_ride_along_or_sync_lazily() {
    use gatehouse_audit::{AuditLog, Options};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), Options::default()).unwrap();
    for round in 0..20 {
        // A statement (waited for), then its result (not waited for).
        log.record(statement(2 * round)).await.unwrap();
        log.append(statement(2 * round + 1)).unwrap();
    }
    let syncs = log.stats().syncs;
    assert!(
        syncs <= 21,
        "one sync per waited-for record, not per record: {syncs}"
    );
    // The last result is synced lazily, without anyone asking.
    let last = log.append(statement(999)).unwrap();
    let started = Instant::now();
    while log.check_durable(last).is_none() {
        assert!(started.elapsed() < Duration::from_secs(2), "never synced");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    log.shutdown().await.unwrap();
    verify_file(log_path(dir.path())).unwrap();
}
