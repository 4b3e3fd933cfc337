//! Session recordings.
//!
//! A recording is one append-only file per session under the data directory: a header, then
//! chunks of frames (a statement, its result, each message the client was shown, after
//! masking). The writer hashes every byte as it goes; the SHA-256 goes into the session's
//! `session.end` audit record, so the audit chain covers the recording. Chunks may be sealed
//! with XChaCha20-Poly1305. The format is documented in `docs/recording.md`.

#![forbid(unsafe_code)]

mod format;
mod reader;
mod seal;
mod writer;

pub use format::{Frame, FrameKind, Header, FILE_EXTENSION, MAGIC};
pub use reader::{file_sha256, ReadError, Reader};
pub use seal::{Key, KeyError};
pub use writer::{Recorder, RecorderLimits, RecordingError, Summary, FLUSH_EVERY, MIN_MAX_BYTES};
