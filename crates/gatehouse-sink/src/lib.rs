//! SIEM streaming of the audit log, at least once, from a durable cursor.
//!
//! Each sink is one task that tails the log file ([`source`]), checks every record's hash and
//! its place in the chain, batches records, sends them to a receiver and, once the receiver
//! has them, saves its cursor (`<state dir>/sink-<name>.cursor`). After a restart or a lost
//! connection it sends again from the cursor, so a receiver may see a record twice — always
//! with the same `seq` and `hash`, which is what it de-duplicates on. The audit writer never
//! waits for a sink; a sink that falls behind writes one `sink.lagging` event.
//!
//! * Receivers: syslog (RFC 5424, octet-counted, TCP or TLS; [`syslog`]) and Splunk HEC
//!   (JSON batches, optional indexer acknowledgement; [`hec`]).
//! * Pure parts, tested on their own: [`syslog`], [`hec`], [`backoff`], [`alarm`], [`cursor`].
//! * API: [`Sink::spawn`] → [`SinkHandle`] ([`SinkHandle::status`], [`SinkHandle::shutdown`]).
//!
//! Operators' documentation: `docs/siem.md`.

pub mod alarm;
pub mod backoff;
pub mod config;
pub mod cursor;
mod error;
pub mod hec;
mod runner;
pub mod source;
mod status;
pub mod syslog;
mod transport;

pub use config::{
    AlarmConfig, BackoffConfig, BatchConfig, Facility, HecConfig, Secret, SinkConfig, SyslogConfig,
    Target, TlsConfig,
};
pub use cursor::{Cursor, CursorMismatch};
pub use error::SinkError;
pub use runner::{Sink, SinkHandle};
pub use source::{Source, SourceError, SourceRecord};
pub use status::{SinkState, SinkStatus, StatusCell};
pub use transport::{client_tls, http_client, DeliveryError};
