//! One task per sink: read from the cursor, batch, send, confirm, save the cursor.
//!
//! The sink only reads the log file; the audit writer never waits for it. Records are sent
//! only once they are durable in the log (`AuditLog::stats().durable_seq`), so a record the
//! SIEM has can never vanish from the log in a crash and come back with other contents.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gatehouse_audit::event::{Event, EventKind, Outcome, What};
use gatehouse_audit::AuditLog;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::alarm::{Alarm, Transition};
use crate::backoff::Backoff;
use crate::config::SinkConfig;
use crate::cursor::{self, Cursor, Saved};
use crate::error::SinkError;
use crate::source::{Source, SourceRecord};
use crate::status::{SinkState, SinkStatus, StatusCell};
use crate::transport::Transport;

/// Starts sinks.
pub struct Sink;

impl Sink {
    /// Starts a sink on the current tokio runtime.
    ///
    /// * `source_path`: the log file (`<audit dir>/audit.log`); `audit` must be the handle of
    ///   that same log: the sink reads its durable `seq` and writes its `sink.lagging` and
    ///   `sink.recovered` events there.
    /// * `state_dir`: where `sink-<name>.cursor` is kept (created if missing).
    ///
    /// Fails at once on settings that cannot work (an empty address, an unreadable CA file, a
    /// name that cannot be a file name); everything later is reported through
    /// [`SinkHandle::status`] and the task's result.
    pub fn spawn(
        config: SinkConfig,
        source_path: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
        audit: AuditLog,
    ) -> Result<SinkHandle, SinkError> {
        let source_path = source_path.into();
        let state_dir = state_dir.into();
        let name = config.name.clone();
        let invalid = |reason: String| SinkError::Config {
            name: name.clone(),
            reason,
        };
        check_name(&name).map_err(invalid)?;
        if config.batch.max_records == 0 || config.batch.max_bytes == 0 {
            return Err(invalid("batch limits must be above zero".into()));
        }
        if !same_file(&source_path, audit.path()) {
            return Err(invalid(format!(
                "the source {} is not the audit log {} (the sink needs that log's handle)",
                source_path.display(),
                audit.path().display()
            )));
        }
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| invalid(format!("state directory {}: {e}", state_dir.display())))?;
        let hostname = config.hostname.clone().unwrap_or_else(local_hostname);
        let transport = Transport::new(&config, &hostname).map_err(invalid)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| invalid("Sink::spawn must be called inside a tokio runtime".into()))?;

        let status = StatusCell::new(SinkStatus {
            name: name.clone(),
            kind: config.kind(),
            ..SinkStatus::default()
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let span = tracing::info_span!("sink", sink = %name, kind = config.kind());
        let worker = Worker {
            config,
            source_path,
            state_dir,
            audit,
            status: Arc::clone(&status),
            stop: stop_rx,
            transport,
        };
        let task = runtime.spawn(worker.run().instrument(span));
        Ok(SinkHandle {
            name,
            status,
            stop: stop_tx,
            task,
        })
    }
}

/// A running sink. Dropping it asks the sink to stop (as [`SinkHandle::shutdown`] does,
/// without waiting).
#[derive(Debug)]
pub struct SinkHandle {
    name: String,
    status: Arc<StatusCell>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), SinkError>>,
}

impl SinkHandle {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sink's current status.
    pub fn status(&self) -> SinkStatus {
        self.status.snapshot()
    }

    /// The live status, for a metrics endpoint to read whenever it renders.
    pub fn status_cell(&self) -> Arc<StatusCell> {
        Arc::clone(&self.status)
    }

    /// True once the sink has stopped (on request or by an error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the sink: the batch in flight gets its one attempt (and, for syslog, its
    /// confirmation window), the cursor is saved, and the task ends. Returns the error that
    /// stopped the sink earlier, if one did.
    pub async fn shutdown(self) -> Result<(), SinkError> {
        let _ = self.stop.send(true);
        self.join().await
    }

    /// Waits until the sink stops by itself (only an error stops it).
    pub async fn wait(self) -> Result<(), SinkError> {
        self.join().await
    }

    async fn join(self) -> Result<(), SinkError> {
        let name = self.name.clone();
        let stop = self.stop;
        let result = self.task.await.map_err(|e| SinkError::Internal {
            name,
            reason: format!("sink task ended abnormally: {e}"),
        })?;
        drop(stop);
        result
    }
}

/// Batches sent but not yet known to be delivered (syslog: inside the confirmation window).
struct Unconfirmed {
    /// The batch's last record.
    last: Cursor,
    /// Time of the batch's first record.
    oldest: OffsetDateTime,
    records: u64,
    flushed: Instant,
}

struct Worker {
    config: SinkConfig,
    source_path: PathBuf,
    state_dir: PathBuf,
    audit: AuditLog,
    status: Arc<StatusCell>,
    stop: watch::Receiver<bool>,
    transport: Transport,
}

/// Where the worker is.
struct Progress {
    acked: Cursor,
    alarm: Alarm,
    source: Option<Source>,
    pending: Vec<SourceRecord>,
    pending_bytes: usize,
    batch_since: Instant,
    /// The last read stopped at a batch limit: the batch is full.
    full: bool,
    unconfirmed: VecDeque<Unconfirmed>,
    /// The source failed after the records before the failure were read: those are delivered
    /// first, then the sink stops with this error.
    failed: Option<SinkError>,
    /// Most records that may wait for confirmation at once (syslog). Starts at one batch on
    /// every connection and doubles with every confirmation, so a receiver that keeps closing
    /// connections still lets the sink make progress instead of re-sending the same backlog.
    inflight_cap: u64,
}

impl Worker {
    async fn run(mut self) -> Result<(), SinkError> {
        let result = self.run_inner().await;
        self.transport.disconnect();
        match &result {
            Ok(()) => {
                tracing::info!("sink stopped");
                self.status.update(|s| {
                    s.state = SinkState::Stopped;
                    s.connected = false;
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "sink failed; it delivers nothing more until restarted");
                let text = e.to_string();
                self.status.update(|s| {
                    s.state = SinkState::Failed;
                    s.connected = false;
                    s.last_error = Some(text);
                });
            }
        }
        result
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    fn stop_requested(&self) -> bool {
        // A dropped handle counts as a request to stop.
        *self.stop.borrow() || self.stop.has_changed().is_err()
    }

    async fn run_inner(&mut self) -> Result<(), SinkError> {
        let saved = {
            let (dir, name) = (self.state_dir.clone(), self.name().to_owned());
            blocking(self.name(), move || cursor::load(&dir, &name))
                .await?
                .map_err(|source| SinkError::Cursor {
                    name: self.name().to_owned(),
                    source,
                })?
        };
        let saved = saved.unwrap_or(Saved {
            cursor: Cursor::START,
            lagging: false,
        });
        tracing::info!(acked_seq = saved.cursor.seq, "sink starting");
        let mut p = Progress {
            acked: saved.cursor,
            alarm: Alarm::new(self.config.alarm, saved.lagging),
            source: Some(self.open_source(saved.cursor).await?),
            pending: Vec::new(),
            pending_bytes: 0,
            batch_since: Instant::now(),
            full: false,
            unconfirmed: VecDeque::new(),
            failed: None,
            inflight_cap: self.config.batch.max_records as u64,
        };
        self.status.update(|s| {
            s.acked_seq = saved.cursor.seq;
            s.lagging = saved.lagging;
        });
        let mut backoff = Backoff::new(self.config.backoff);
        let window = self.transport.confirm_window();
        let batch = self.config.batch;

        loop {
            let stopping = self.stop_requested();
            self.confirm(&mut p, window, false).await?;
            let log_seq = self.observe(&mut p).await?;
            if stopping && p.pending.is_empty() {
                break;
            }
            if p.pending.is_empty() && p.unconfirmed.is_empty() {
                if let Some(e) = p.failed.take() {
                    return Err(e);
                }
            }

            if !stopping && !p.full && p.failed.is_none() && p.pending.len() < batch.max_records {
                self.read_more(&mut p, log_seq).await?;
            }

            let in_flight: u64 = p.unconfirmed.iter().map(|u| u.records).sum();
            let capped = !window.is_zero() && in_flight >= p.inflight_cap && !stopping;
            let due = !p.pending.is_empty()
                && !capped
                && (p.full
                    || p.pending.len() >= batch.max_records
                    || stopping
                    || p.failed.is_some()
                    || p.batch_since.elapsed() >= batch.max_wait);
            if due {
                match self.transport.send(&p.pending).await {
                    Ok(()) => {
                        backoff.reset();
                        let (first, last) = match (p.pending.first(), p.pending.last()) {
                            (Some(f), Some(l)) => (f.time, l.cursor()),
                            _ => continue,
                        };
                        tracing::debug!(
                            first_seq = p.pending.first().map_or(0, |r| r.seq),
                            last_seq = last.seq,
                            "batch sent"
                        );
                        p.unconfirmed.push_back(Unconfirmed {
                            last,
                            oldest: first,
                            records: p.pending.len() as u64,
                            flushed: Instant::now(),
                        });
                        p.pending.clear();
                        p.pending_bytes = 0;
                        p.full = false;
                        self.status.update(|s| {
                            s.connected = true;
                            s.last_error = None;
                        });
                        continue;
                    }
                    Err(e) => {
                        let attempt = backoff.attempts();
                        tracing::warn!(error = %e, attempt, "delivery failed");
                        let text = e.to_string();
                        self.status.update(|s| {
                            s.connected = false;
                            s.failures += 1;
                            s.last_error = Some(text);
                        });
                        self.transport.disconnect();
                        if !p.unconfirmed.is_empty() {
                            self.rewind(&mut p).await?;
                        }
                        if stopping {
                            break;
                        }
                        let delay = backoff.next_delay();
                        self.sleep_or_stop(delay).await;
                        continue;
                    }
                }
            }

            // Nothing to send yet: wait for new records, the batch's deadline or a confirmation.
            let mut wait = self.config.poll_interval;
            if !p.pending.is_empty() && !capped {
                wait = wait.min(batch.max_wait.saturating_sub(p.batch_since.elapsed()));
            }
            if let Some(u) = p.unconfirmed.front() {
                wait = wait.min((u.flushed + window).saturating_duration_since(Instant::now()));
            }
            self.sleep_or_stop(wait.max(Duration::from_millis(1))).await;
        }

        // Stopping: give what was sent its confirmation window, then save the cursor.
        if let Some(last) = p.unconfirmed.back() {
            let until = last.flushed + window;
            tokio::time::sleep_until(until).await;
        }
        self.confirm(&mut p, window, true).await?;
        self.save(&p).await?;
        p.failed.map_or(Ok(()), Err)
    }

    async fn open_source(&self, cursor: Cursor) -> Result<Source, SinkError> {
        let path = self.source_path.clone();
        blocking(self.name(), move || Source::open(&path, &cursor))
            .await?
            .map_err(|source| SinkError::Source {
                name: self.name().to_owned(),
                source,
            })
    }

    /// Goes back to the acknowledged cursor: everything after it is sent again.
    async fn rewind(&self, p: &mut Progress) -> Result<(), SinkError> {
        let unconfirmed: u64 = p.unconfirmed.iter().map(|u| u.records).sum();
        tracing::info!(
            acked_seq = p.acked.seq,
            unconfirmed,
            "connection lost; will send again from the cursor"
        );
        p.source = None;
        p.source = Some(self.open_source(p.acked).await?);
        p.pending.clear();
        p.pending_bytes = 0;
        p.full = false;
        p.unconfirmed.clear();
        // The new source reads up to the failure again and reports it there.
        p.failed = None;
        p.inflight_cap = self.config.batch.max_records as u64;
        self.status.update(|s| s.rewinds += 1);
        Ok(())
    }

    /// Moves the cursor past batches whose confirmation window has passed on a connection that
    /// is still up; rewinds when the connection is gone. `all`: at shutdown, after waiting.
    async fn confirm(
        &mut self,
        p: &mut Progress,
        window: Duration,
        all: bool,
    ) -> Result<(), SinkError> {
        let now = Instant::now();
        let ready = |u: &Unconfirmed| all || u.flushed + window <= now;
        if !p.unconfirmed.front().is_some_and(ready) {
            return Ok(());
        }
        if let Err(e) = self.transport.probe() {
            tracing::warn!(error = %e, "connection lost before delivery was confirmed");
            let text = e.to_string();
            self.status.update(|s| {
                s.connected = false;
                s.last_error = Some(text);
            });
            return self.rewind(p).await;
        }
        let mut records = 0;
        let mut batches = 0;
        while let Some(u) = p.unconfirmed.front() {
            if !ready(u) {
                break;
            }
            p.acked = u.last;
            records += u.records;
            batches += 1;
            p.unconfirmed.pop_front();
        }
        p.inflight_cap = p.inflight_cap.saturating_mul(2);
        self.save(p).await?;
        let acked = p.acked.seq;
        self.status.update(|s| {
            s.acked_seq = acked;
            s.delivered_records += records;
            s.delivered_batches += batches;
        });
        Ok(())
    }

    /// Updates the status and the alarm; returns the log's durable `seq`.
    async fn observe(&mut self, p: &mut Progress) -> Result<u64, SinkError> {
        let log_seq = self.audit.stats().durable_seq.max(p.acked.seq);
        let oldest = p
            .unconfirmed
            .front()
            .map(|u| u.oldest)
            .or_else(|| p.pending.first().map(|r| r.time));
        let age = oldest.map_or(Duration::ZERO, |t| {
            Duration::try_from(OffsetDateTime::now_utc() - t).unwrap_or(Duration::ZERO)
        });
        let lag = log_seq.saturating_sub(p.acked.seq);
        let transition = p.alarm.observe(lag, age);
        let lagging = p.alarm.is_lagging();
        self.status.update(|s| {
            s.log_seq = log_seq;
            s.lag_seconds = age.as_secs_f64();
            s.lagging = lagging;
        });
        if let Some(transition) = transition {
            self.report(transition, p, log_seq, lag, age);
            self.save(p).await?;
        }
        Ok(log_seq)
    }

    /// Appends `sink.lagging` or `sink.recovered` to the audit log (without waiting for it).
    fn report(&self, transition: Transition, p: &Progress, log_seq: u64, lag: u64, age: Duration) {
        let status = self.status.snapshot();
        let detail = serde_json::json!({
            "sink": self.name(),
            "type": self.config.kind(),
            "acked_seq": p.acked.seq,
            "log_seq": log_seq,
            "lag_records": lag,
            "lag_secs": age.as_secs(),
            "alarm_lag": self.config.alarm.lag_records,
            "alarm_after_secs": self.config.alarm.after.as_secs(),
            "last_error": status.last_error,
        });
        let (kind, outcome) = match transition {
            Transition::Lagging => {
                tracing::warn!(
                    lag_records = lag,
                    lag_secs = age.as_secs(),
                    "sink is lagging"
                );
                (
                    EventKind::SinkLagging,
                    Outcome::failure(format!(
                        "sink {} is {lag} records behind the audit log",
                        self.name()
                    )),
                )
            }
            Transition::Recovered => {
                tracing::info!(lag_records = lag, "sink caught up");
                (EventKind::SinkRecovered, Outcome::success())
            }
        };
        let mut event = Event::now(kind, outcome);
        event.what = What {
            resource: Some(self.name().to_owned()),
            detail: Some(detail),
            ..What::default()
        };
        if let Err(e) = self.audit.append(event) {
            tracing::warn!(error = %e, kind = kind.as_str(), "could not audit the sink's state");
        }
    }

    /// Reads what fits into the pending batch, up to the log's durable `seq`.
    async fn read_more(&self, p: &mut Progress, log_seq: u64) -> Result<(), SinkError> {
        let batch = self.config.batch;
        let records = batch.max_records - p.pending.len();
        let bytes = batch.max_bytes.saturating_sub(p.pending_bytes);
        let first_may_exceed = p.pending.is_empty();
        let Some(mut source) = p.source.take() else {
            return Ok(());
        };
        let (source, result) = blocking(self.name(), move || {
            let r = source.read(records, bytes, log_seq, first_may_exceed);
            (source, r)
        })
        .await?;
        p.source = Some(source);
        let read = match result {
            Ok(read) => read,
            Err(source) => {
                let e = SinkError::Source {
                    name: self.name().to_owned(),
                    source,
                };
                tracing::error!(error = %e, "cannot read further; delivering what was read, then stopping");
                p.failed = Some(e);
                return Ok(());
            }
        };
        if p.pending.is_empty() && !read.records.is_empty() {
            p.batch_since = Instant::now();
        }
        p.full = read.limited;
        p.pending_bytes += read.records.iter().map(|r| r.line.len()).sum::<usize>();
        p.pending.extend(read.records);
        Ok(())
    }

    async fn save(&self, p: &Progress) -> Result<(), SinkError> {
        let saved = Saved {
            cursor: p.acked,
            lagging: p.alarm.is_lagging(),
        };
        let (dir, name) = (self.state_dir.clone(), self.name().to_owned());
        blocking(self.name(), move || cursor::save(&dir, &name, &saved))
            .await?
            .map_err(|source| SinkError::Cursor {
                name: self.name().to_owned(),
                source,
            })
    }

    async fn sleep_or_stop(&mut self, duration: Duration) {
        if self.stop_requested() {
            return;
        }
        let _ = tokio::time::timeout(duration, self.stop.changed()).await;
    }
}

async fn blocking<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SinkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SinkError::Internal {
            name: name.to_owned(),
            reason: format!("blocking task failed: {e}"),
        })
}

/// A sink name becomes part of a file name and a metrics label.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "sink name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.' (not first)"
        ))
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// This machine's host name (`-`, RFC 5424's "unknown", when there is none).
fn local_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            let name = std::fs::read_to_string(p).ok()?;
            let name = name.trim();
            (!name.is_empty()).then(|| name.to_owned())
        })
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["splunk", "siem-1", "a.b_c", "X"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "../x", "a/b", ".hidden", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
