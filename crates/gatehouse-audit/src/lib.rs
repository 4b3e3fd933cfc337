//! Append-only, hash-chained audit log.
//!
//! * [`record`]: the stored line format and its hash chain (pure).
//! * [`AuditLog`]: the writer, one OS thread with group commit, failing closed.
//! * [`verify_file`]: offline verification of a log file.
//! * [`export`](export::export): JSONL/CSV export of a time range.
//! * [`bundle`]: the examiner's bundle of a range, provable offline with the public key.
//!
//! The format is documented for examiners in `docs/audit-events.md`.

mod blocking;
pub mod bundle;
pub mod checkpoint;
mod csv;
pub mod durable_file;
mod error;
pub mod event;
pub mod export;
mod lines;
mod pairing;
pub mod proof;
pub mod record;
pub mod recordings;
pub mod recovery;
mod scan;
mod tail;
pub mod timefmt;
pub mod verify;
mod writer;

pub use error::AuditError;
pub use event::*;
pub use export::{export, ExportError, ExportFormat, ExportSummary};
pub use recovery::{unclean_stop, OpenSession, UncleanStop};
pub use verify::{
    verify_file, verify_with, VerifyFailure, VerifyOptions, VerifyReason, VerifyReport,
};
pub use writer::{AuditLog, FsyncMode, Options, Stats, Ticket, LOG_FILE_NAME};
