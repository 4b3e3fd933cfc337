//! Errors that stop a sink. Delivery failures are not among them: those are retried (see
//! [`crate::DeliveryError`] in [`crate::SinkStatus::last_error`]).

use crate::cursor::{CursorFileError, CursorMismatch};
use crate::source::SourceError;

/// Why a sink could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Settings that cannot work; reported by [`crate::Sink::spawn`].
    #[error("sink {name:?}: invalid configuration: {reason}")]
    Config { name: String, reason: String },
    /// The log cannot be read from the cursor: it does not match, a record does not verify,
    /// the file went away. Nothing more is sent until an operator looks.
    #[error("sink {name:?}: {source}")]
    Source {
        name: String,
        #[source]
        source: SourceError,
    },
    /// The cursor file cannot be read or written.
    #[error("sink {name:?}: {source}")]
    Cursor {
        name: String,
        #[source]
        source: CursorFileError,
    },
    #[error("sink {name:?}: {reason}")]
    Internal { name: String, reason: String },
}

impl SinkError {
    /// The cursor named a record the log does not have where it says.
    pub fn cursor_mismatch(&self) -> Option<&CursorMismatch> {
        match self {
            SinkError::Source { source, .. } => source.mismatch(),
            _ => None,
        }
    }
}
