//! Errors of the writer ([`crate::AuditLog`]).

use std::io;
use std::path::PathBuf;

/// Why the audit log did not take (or cannot promise) a record. Callers fail closed on any of
/// these: an action whose record is not durable must not proceed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A write or sync failed, or the writer thread died. Permanent for this [`crate::AuditLog`]:
    /// nothing pending was made durable and nothing more will be accepted.
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    /// The log was shut down.
    #[error("audit log is closed")]
    Closed,
    /// Too many events are waiting for the disk.
    #[error("audit log is overloaded: {0} events waiting to be written")]
    QueueFull(usize),
    /// The event cannot be stored (for instance a time outside years 0000-9999, or a record
    /// over the size limit). Nothing was written.
    #[error("audit event rejected: {0}")]
    InvalidEvent(String),
    /// Opening or recovering the log file failed.
    #[error("audit log {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// The existing log's last record is not a valid record; the log will not be extended.
    #[error("audit log {} is corrupt at byte {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The log disagrees with the checkpoint the gateway signed before (kept in `state`): it
    /// was cut or rewritten. The log will not be extended until an operator acknowledges it.
    #[error("the audit log disagrees with its last signed checkpoint ({}): {reason}", state.display())]
    Inconsistent { state: PathBuf, reason: String },
}

impl AuditError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        AuditError::Io {
            path: path.into(),
            source,
        }
    }
}
