//! Append-only, hash-chained audit log.

pub mod event;

pub use event::*;
