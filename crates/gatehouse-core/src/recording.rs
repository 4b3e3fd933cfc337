//! What the core records of a session beside the audit log: each statement as audited, its
//! result, and (from the adapter) every message the client was shown, in a
//! [`gatehouse_record`] file whose hash goes into `session.end`.

use gatehouse_audit::Event;
use gatehouse_record::{FrameKind, Header, Key, Recorder, RecorderLimits};
use std::path::PathBuf;

/// Where and how sessions are recorded.
#[derive(Debug, Clone)]
pub struct Recordings {
    pub dir: PathBuf,
    pub limits: RecorderLimits,
    /// Rows (and COPY lines) kept per statement; the rest are counted.
    pub rows_per_statement: u64,
    pub key: Option<Key>,
}

impl Recordings {
    pub(crate) fn open(
        &self,
        session: &str,
        protocol: &str,
        connection: &str,
        started: &str,
    ) -> Result<Recorder, gatehouse_record::RecordingError> {
        let header = Header {
            version: 1,
            session: session.to_owned(),
            protocol: protocol.to_owned(),
            connection: connection.to_owned(),
            started: started.to_owned(),
            encryption: None,
        };
        Recorder::create(&self.dir, &header, self.key.as_ref(), self.limits)
    }
}

/// The statement frame: the statement as its audit record has it (masked, capped), and how
/// it was decided. Built before the record is appended; written with its `seq` after.
pub(crate) fn statement_frame(event: &Event) -> serde_json::Map<String, serde_json::Value> {
    let mut frame = serde_json::Map::new();
    if let Some(text) = &event.what.statement {
        frame.insert("text".into(), text.as_str().into());
    }
    if let Some(serde_json::Value::Object(detail)) = &event.what.detail {
        for key in [
            "step",
            "decision",
            "rule",
            "portal",
            "prepared",
            "statement_truncated",
            "statement_tail",
            "approval",
        ] {
            if let Some(value) = detail.get(key) {
                frame.insert(key.into(), value.clone());
            }
        }
    }
    if event.outcome.status == gatehouse_audit::Status::Failure {
        if let Some(reason) = &event.outcome.reason {
            frame.insert("refused".into(), reason.as_str().into());
        }
    }
    frame
}

pub(crate) fn write_statement(
    recorder: &Recorder,
    seq: u64,
    mut frame: serde_json::Map<String, serde_json::Value>,
) {
    frame.insert("seq".into(), seq.into());
    recorder.json(FrameKind::Statement, &serde_json::Value::Object(frame));
}
