//! What a sink reports about itself, for `/metrics` and operators.

use std::sync::{Arc, Mutex, PoisonError};

/// Whether the sink is still working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SinkState {
    /// Delivering, or waiting to retry.
    #[default]
    Running,
    /// Shut down on request.
    Stopped,
    /// Stopped by an error that retrying cannot fix (see `last_error`): a cursor that does
    /// not match the log, a record that does not verify, an unusable state directory.
    Failed,
}

impl SinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkState::Running => "running",
            SinkState::Stopped => "stopped",
            SinkState::Failed => "failed",
        }
    }
}

/// A snapshot of one sink.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkStatus {
    pub name: String,
    /// `syslog` or `hec`.
    pub kind: &'static str,
    /// `seq` of the last record the receiver acknowledged (0: none yet).
    pub acked_seq: u64,
    /// `seq` of the last durable record in the log.
    pub log_seq: u64,
    /// `log_seq - acked_seq`.
    pub lag_records: u64,
    /// Age of the oldest record read but not yet acknowledged, in seconds (0 when none).
    pub lag_seconds: f64,
    /// The last delivery or read error (cleared by the next success); never holds secrets.
    pub last_error: Option<String>,
    /// Whether the last attempt to reach the receiver succeeded.
    pub connected: bool,
    /// The sink reported `sink.lagging` and not yet `sink.recovered`.
    pub lagging: bool,
    pub state: SinkState,
    /// Records acknowledged since start (a record sent twice counts twice).
    pub delivered_records: u64,
    /// Batches acknowledged since start.
    pub delivered_batches: u64,
    /// Failed delivery attempts since start.
    pub failures: u64,
    /// Times the sink went back to its cursor to send records again (lost connection).
    pub rewinds: u64,
}

/// Shared, always-readable status of one sink. Cheap to read: one short lock.
#[derive(Debug, Default)]
pub struct StatusCell(Mutex<SinkStatus>);

impl StatusCell {
    pub fn new(status: SinkStatus) -> Arc<StatusCell> {
        Arc::new(StatusCell(Mutex::new(status)))
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> SinkStatus {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut SinkStatus)) {
        let mut status = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut status);
        status.lag_records = status.log_seq.saturating_sub(status.acked_seq);
    }
}
