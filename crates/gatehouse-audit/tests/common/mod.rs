//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use gatehouse_audit::{AuditLog, Event, EventKind, FsyncMode, Options, Outcome, LOG_FILE_NAME};
use time::{Duration, OffsetDateTime};

/// A statement event numbered `i`, at `base + i seconds`.
pub fn statement(i: u64) -> Event {
    let mut e = Event::now(EventKind::Statement, Outcome::success());
    e.time = base_time() + Duration::seconds(i as i64);
    e.session = Some(format!("s-{}", i % 7));
    e.who.subject = Some(format!("user-{}", i % 5));
    e.who.method = Some("api_key".into());
    e.who.source = Some("127.0.0.1:5555".into());
    e.what.connection = Some("ledger".into());
    e.what.protocol = Some("postgres".into());
    e.what.statement = Some(format!("SELECT * FROM accounts WHERE id = {i}"));
    e.what.classification = Some("read".into());
    e.outcome.rows = Some(i);
    e
}

pub fn base_time() -> OffsetDateTime {
    time::macros::datetime!(2025-06-01 12:00:00 UTC)
}

pub fn fast() -> Options {
    Options {
        fsync: FsyncMode::Never,
        ..Options::default()
    }
}

pub fn log_path(dir: &Path) -> PathBuf {
    dir.join(LOG_FILE_NAME)
}

/// A log with `n` statement events (seq 1..=n), closed. Returns its file.
pub fn write_log(dir: &Path, n: u64) -> PathBuf {
    let log = AuditLog::open(dir, fast()).unwrap();
    for i in 1..=n {
        log.append(statement(i)).unwrap();
    }
    log.close().unwrap();
    log_path(dir)
}

/// The file's lines, each with its `\n`.
pub fn lines(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}
