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

pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A small tmpfs mounted on a temporary directory, unmounted on drop.
pub struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    pub fn mount(bytes: u64) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs");
        SmallFs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
