//! Session recordings on the server side: the core's recording settings from the
//! configuration, replay (each recording checked against the hash its `session.end` holds),
//! and retention (pruning audited before any file is deleted).

use crate::config::{Config, RecordingConfig};
use gatehouse_audit::{AuditLog, Event, EventKind, Outcome, What};
use gatehouse_core::record::{
    file_sha256, Header, Key, ReadError, Reader, RecorderLimits, FILE_EXTENSION,
};
use gatehouse_core::Recordings;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Pruning runs this often (and at start).
pub(crate) const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Most recordings named in one `recording.pruned` record.
const PRUNE_BATCH: usize = 500;

pub(crate) fn key(config: &RecordingConfig) -> anyhow::Result<Option<Key>> {
    config
        .encryption_key
        .as_ref()
        .map(|secret| {
            Key::from_secret(secret.expose().as_bytes())
                .map_err(|e| anyhow::anyhow!("recording.encryption_key: {e}"))
        })
        .transpose()
}

/// The core's settings, or `None` when recording is off.
pub(crate) fn settings(config: &Config) -> anyhow::Result<Option<Arc<Recordings>>> {
    let r = &config.recording;
    if !r.enabled {
        return Ok(None);
    }
    Ok(Some(Arc::new(Recordings {
        dir: r.dir.clone(),
        limits: RecorderLimits {
            max_bytes: r.max_session_bytes,
            ..RecorderLimits::default()
        },
        rows_per_statement: r.rows_per_statement,
        key: key(r)?,
    })))
}

/// How a recording compares with its audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrity {
    /// The file's SHA-256 is the one `session.end` (at `seq`) holds.
    Verified { seq: u64 },
    /// The log has no `session.end` for it yet: the session is open, or the gateway stopped
    /// before it ended.
    Unaudited,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no recording of session {0:?}")]
    NotFound(String),
    #[error("the recording of session {session} does not match its audit record (seq {seq}): the file's SHA-256 is {actual}, the log holds {audited}")]
    Altered {
        session: String,
        seq: u64,
        audited: String,
        actual: String,
    },
    #[error("{0}")]
    Unreadable(String),
}

/// A recording read back: its header, its events, and how it checked out.
pub struct Replay {
    pub header: Header,
    pub integrity: Integrity,
    pub sha256: String,
    pub events: Vec<serde_json::Value>,
}

/// Session ids are made by the gateway from these characters only; anything else never names
/// a file.
fn is_session_id(session: &str) -> bool {
    !session.is_empty()
        && session
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The recording a session left when the gateway stopped without ending it: its file as it is
/// now (the last chunk may be cut short), for that session's `session.end`. `None` when the
/// session was not recorded; a file that cannot be read is named with the error.
pub(crate) fn left_by_crash(dir: &Path, session: &str) -> Option<serde_json::Value> {
    if !is_session_id(session) {
        return None;
    }
    let name = format!("{session}.{FILE_EXTENSION}");
    let path = dir.join(&name);
    let bytes = match std::fs::metadata(&path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(serde_json::json!({ "file": name, "error": e.to_string() })),
    };
    Some(match file_sha256(&path) {
        Ok(sha256) => serde_json::json!({
            "file": name,
            "sha256": sha256,
            "bytes": bytes,
            "unfinished": true,
        }),
        Err(e) => serde_json::json!({ "file": name, "error": e.to_string() }),
    })
}

/// Reads a session's recording for replay. A file that differs from what the audit log
/// vouches for is refused, not shown.
pub fn load(
    dir: &Path,
    audit_log: &Path,
    session: &str,
    key: Option<&Key>,
) -> Result<Replay, ReplayError> {
    if !is_session_id(session) {
        return Err(ReplayError::NotFound(session.to_owned()));
    }
    let path = dir.join(format!("{session}.{FILE_EXTENSION}"));
    let sha256 = match file_sha256(&path) {
        Ok(hash) => hash,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ReplayError::NotFound(session.to_owned()))
        }
        Err(e) => return Err(ReplayError::Unreadable(e.to_string())),
    };
    let audited = gatehouse_audit::recordings::recording_of(audit_log, session)
        .map_err(|e| ReplayError::Unreadable(format!("reading the audit log: {e}")))?;
    let integrity = match audited {
        Some(a) if a.sha256 == sha256 => Integrity::Verified { seq: a.seq },
        Some(a) => {
            return Err(ReplayError::Altered {
                session: session.to_owned(),
                seq: a.seq,
                audited: a.sha256,
                actual: sha256,
            })
        }
        None => Integrity::Unaudited,
    };
    let file = std::fs::File::open(&path).map_err(|e| ReplayError::Unreadable(e.to_string()))?;
    let mut reader = Reader::new(std::io::BufReader::new(file), key)
        .map_err(|e| ReplayError::Unreadable(e.to_string()))?;
    let mut events = Vec::new();
    loop {
        match reader.next_frame() {
            Ok(Some(frame)) => events.push(gatehouse_postgres::replay::event(&frame)),
            Ok(None) => break,
            // An open session's last chunk may be mid-write, and a session a crash ended may
            // have lost its last one (its audited hash is of the file as the crash left it):
            // what came before stands.
            Err(e) if integrity == Integrity::Unaudited || matches!(e, ReadError::Truncated(_)) => {
                events.push(serde_json::json!({ "type": "unreadable", "reason": e.to_string() }));
                break;
            }
            Err(e) => return Err(ReplayError::Unreadable(e.to_string())),
        }
    }
    Ok(Replay {
        header: reader.header().clone(),
        integrity,
        sha256,
        events,
    })
}

/// Deletes recordings last written before `retention` ago, except open sessions'. Each batch
/// is recorded (durably) before its files are deleted: nothing disappears unrecorded.
pub async fn prune(
    dir: &Path,
    retention: Duration,
    audit: &AuditLog,
    open: &[String],
) -> anyhow::Result<usize> {
    let Some(cutoff) = SystemTime::now().checked_sub(retention) else {
        return Ok(0);
    };
    let old = {
        let dir = dir.to_path_buf();
        let open = open.to_vec();
        tokio::task::spawn_blocking(move || expired(&dir, cutoff, &open)).await??
    };
    let mut pruned = 0;
    for batch in old.chunks(PRUNE_BATCH) {
        let entries: Vec<serde_json::Value> = batch
            .iter()
            .map(|(_, session, sha256, bytes)| {
                serde_json::json!({ "session": session, "sha256": sha256, "bytes": bytes })
            })
            .collect();
        let mut event = Event::now(EventKind::RecordingPruned, Outcome::success());
        event.what = What {
            detail: Some(serde_json::json!({
                "retention_secs": retention.as_secs(),
                "recordings": entries,
            })),
            ..What::default()
        };
        audit.record(event).await?;
        for (path, ..) in batch {
            match std::fs::remove_file(path) {
                Ok(()) => pruned += 1,
                Err(e) => {
                    tracing::warn!(error = %e, file = %path.display(), "could not prune recording")
                }
            }
        }
    }
    Ok(pruned)
}

type Expired = (PathBuf, String, String, u64);

fn expired(dir: &Path, cutoff: SystemTime, open: &[String]) -> std::io::Result<Vec<Expired>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut old = Vec::new();
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let Some(session) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(&format!(".{FILE_EXTENSION}")))
        else {
            continue;
        };
        if open.iter().any(|o| o == session) {
            continue;
        }
        let meta = entry.metadata()?;
        if !meta.is_file() || meta.modified()? >= cutoff {
            continue;
        }
        old.push((
            path.clone(),
            session.to_owned(),
            file_sha256(&path)?,
            meta.len(),
        ));
    }
    old.sort();
    Ok(old)
}
