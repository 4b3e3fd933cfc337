//! What the log says about session recordings: each `session.end` of a recorded session holds
//! its file's SHA-256, so the chain covers the recording; `recording.pruned` says which were
//! deleted under the retention policy, and when.

use crate::event::EventKind;
use crate::lines::{self, Line};
use crate::record::{self, Record, MAX_LINE_LEN};
use crate::verify::VerifyReport;
use std::io::{self, BufReader};
use std::path::Path;

/// A recording as its `session.end` record names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditedRecording {
    pub session: String,
    pub file: String,
    pub sha256: String,
    /// The `seq` of the `session.end` record.
    pub seq: u64,
}

/// A recording the log says was pruned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedRecording {
    pub session: String,
    pub sha256: String,
    /// The `seq` of the `recording.pruned` record.
    pub seq: u64,
    pub time: time::OffsetDateTime,
}

pub(crate) fn audited(record: &Record) -> Option<AuditedRecording> {
    if record.event.kind != EventKind::SessionEnd {
        return None;
    }
    let recording = record.event.what.detail.as_ref()?.get("recording")?;
    Some(AuditedRecording {
        session: record.event.session.clone()?,
        file: recording.get("file")?.as_str()?.to_owned(),
        sha256: recording.get("sha256")?.as_str()?.to_owned(),
        seq: record.seq,
    })
}

pub(crate) fn collect(record: &Record, report: &mut VerifyReport) {
    if let Some(recording) = audited(record) {
        report.recordings.push(recording);
        return;
    }
    if record.event.kind != EventKind::RecordingPruned {
        return;
    }
    let Some(pruned) = record
        .event
        .what
        .detail
        .as_ref()
        .and_then(|d| d.get("recordings"))
        .and_then(|r| r.as_array())
    else {
        return;
    };
    for entry in pruned {
        if let (Some(session), Some(sha256)) = (
            entry.get("session").and_then(|s| s.as_str()),
            entry.get("sha256").and_then(|s| s.as_str()),
        ) {
            report.pruned.push(PrunedRecording {
                session: session.to_owned(),
                sha256: sha256.to_owned(),
                seq: record.seq,
                time: record.event.time,
            });
        }
    }
}

/// Finds the `session.end` naming `session`'s recording in a (possibly live) log. Each record
/// read is checked against its own hash; a partial last line (a write in progress) is skipped.
pub fn recording_of(path: &Path, session: &str) -> io::Result<Option<AuditedRecording>> {
    let file = std::fs::File::open(path)?;
    let mut reader = BufReader::with_capacity(1024 * 1024, file);
    let mut buf = Vec::new();
    let needle = format!("\"session\":{}", serde_json::Value::from(session));
    loop {
        match lines::read_line(&mut reader, &mut buf, MAX_LINE_LEN)? {
            Line::Eof | Line::Partial => return Ok(None),
            Line::TooLong => continue,
            Line::Complete => {}
        }
        // Cheap filters first: most lines are other sessions' statements.
        if !contains(&buf, b"\"session.end\"") || !contains(&buf, needle.as_bytes()) {
            continue;
        }
        if record::check_hash(&buf).is_err() {
            continue;
        }
        let Ok(record) = record::parse(&buf) else {
            continue;
        };
        if record.event.session.as_deref() == Some(session) {
            return Ok(audited(&record));
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}
