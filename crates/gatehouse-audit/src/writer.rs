//! The writer: appenders write their own records; one thread makes them durable.
//!
//! An append encodes its record and writes it to the file under one lock (a write to the page
//! cache, a few microseconds), so the record's `seq` is only ever given to a record that is in
//! the file: there is no queue to lose, and no hand-off to another thread per event. What
//! differs between the modes is when a written record counts as durable:
//!
//! * [`FsyncMode::Always`]: a record counts as durable once an `fdatasync` that covers it has
//!   returned. A sync thread syncs when somebody waits for a record ([`AuditLog::durable`]): it
//!   notes the highest `seq` written, `fdatasync`s, and publishes that `seq` as durable. Every
//!   record written while one sync runs is covered by the next (group commit). Records nobody
//!   waits for (a statement's result) ride along with the next sync, or are synced after
//!   `Options::lazy_sync` at the latest, so they never cost a sync of their own.
//! * [`FsyncMode::Periodic`]: a record is durable once written; the sync thread syncs within
//!   the interval.
//! * [`FsyncMode::Never`]: durable once written; synced only at close.
//!
//! Fail closed: a failed write or sync marks the log failed and every waiter and later append
//! gets [`AuditError::Unavailable`]. A failed *write* (no space, quota) leaves the file ending
//! at its last complete record; appends then retry at most once per `retry_interval`, and the
//! first that succeeds writes an `audit.gap` record saying when and why records were refused,
//! before the record that asked. A failed *sync* is not retried: after a failed `fdatasync` the
//! kernel may have dropped the unsynced pages, so nothing after the last good sync can be
//! vouched for until an operator restarts the gateway.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::watch;

use gatehouse_tlog::Frontier;

use crate::blocking::block_on;
use crate::checkpoint::{self, CheckpointOptions, CheckpointState, Resumption, MAX_GAP};
use crate::error::AuditError;
use crate::event::{Event, EventKind, Outcome, What};
use crate::record;
use crate::tail::{self, Continuation};

/// Name of the log file inside the log directory.
pub const LOG_FILE_NAME: &str = "audit.log";

/// When the writer syncs the file to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncMode {
    /// A record is reported durable only after an `fdatasync` that covers it. The default.
    #[default]
    Always,
    /// Records are reported durable once written to the file (they survive a crash of the
    /// gateway process), and the file is synced at most this long after each write. A power
    /// loss or kernel crash can lose at most this window. Like PostgreSQL's
    /// `synchronous_commit = off`; for latency-sensitive deployments that accept that window.
    Periodic(Duration),
    /// Never sync (except once at shutdown): "durable" then only means "handed to the kernel".
    /// NOT DURABLE across a power loss or kernel crash; for tests and benchmarks only.
    Never,
}

/// Writer settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub fsync: FsyncMode,
    /// Below this much free space on the log's file system, the log records an
    /// `audit.disk_low` event and logs a warning (once per crossing). 0 turns the check off.
    pub low_space_bytes: u64,
    /// How often the free space is checked.
    pub space_check_interval: Duration,
    /// After a failed write, the shortest time between attempts to write again.
    pub retry_interval: Duration,
    /// With [`FsyncMode::Always`], the longest a record nobody waits for stays unsynced.
    pub lazy_sync: Duration,
    /// Signed checkpoints of the log's Merkle tree (see [`crate::checkpoint`]).
    pub checkpoints: Option<CheckpointOptions>,
    /// Open a log that disagrees with its last signed checkpoint, rebuilding the tree from the
    /// records as they are. Only for the operator's audited acknowledgement.
    pub acknowledge_inconsistency: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fsync: FsyncMode::Always,
            low_space_bytes: 1024 * 1024 * 1024,
            space_check_interval: Duration::from_secs(5),
            retry_interval: Duration::from_secs(1),
            lazy_sync: Duration::from_millis(10),
            checkpoints: None,
            acknowledge_inconsistency: false,
        }
    }
}

/// A claim on one appended event, to wait on with [`AuditLog::durable`].
///
/// Tickets are ordered like the events: when ticket `t` is durable, so is every event appended
/// before it. The value is the record's `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

impl Ticket {
    /// A ticket for the record with this `seq` (for other sinks that number their records).
    pub fn new(seq: u64) -> Self {
        Ticket(seq)
    }

    /// The `seq` the event's record has in the log.
    pub fn seq(self) -> u64 {
        self.0
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events written to the file by this writer.
    pub events_written: u64,
    /// `write` calls (one per record).
    pub batches: u64,
    /// `fdatasync` calls (the final one at close not counted).
    pub syncs: u64,
    pub bytes_written: u64,
    /// Highest `seq` reported durable (including records that were in the file at open).
    pub durable_seq: u64,
    /// Free bytes on the log's file system at the last check (0 before the first).
    pub available_bytes: u64,
    /// Appends refused because the log was failed.
    pub refused: u64,
    /// Times the log took records again after a failed write.
    pub recoveries: u64,
    /// Checkpoints signed and written by this writer.
    pub checkpoints: u64,
}

/// Handle to an open audit log. Cheap to clone; all clones share one file and sync thread.
///
/// Dropping the last handle lets the sync thread make everything durable and exit on its own;
/// call [`AuditLog::shutdown`] (or [`AuditLog::close`]) to wait until everything is on disk.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    path: PathBuf,
    recovered: Option<PathBuf>,
    resumption: Option<Resumption>,
    thread: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
}

/// State shared by the handles and the sync thread.
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the sync thread.
    wake: Condvar,
    /// Wakes the checkpoint thread.
    checkpoint_wake: Condvar,
    progress: watch::Sender<Progress>,
    /// Checkpoint requests answered, and the latest checkpoint (or why it failed).
    checkpointed: watch::Sender<Checkpointed>,
    mode: FsyncMode,
    options: Options,
    dir: PathBuf,
    path: PathBuf,
    events_written: AtomicU64,
    syncs: AtomicU64,
    bytes_written: AtomicU64,
    available: AtomicU64,
    refused: AtomicU64,
    recoveries: AtomicU64,
    checkpoints: AtomicU64,
}

struct Queue {
    state: State,
    file: File,
    cont: Continuation,
    buf: Vec<u8>,
    /// Highest `seq` in the file.
    written: u64,
    /// The sync thread waits on `wake`; lets a waiter skip the notify otherwise.
    syncer_idle: bool,
    /// The highest `seq` somebody waits to see durable.
    demand: u64,
    /// An `audit.disk_low` record was written and space has not come back since.
    low_space: bool,
    /// No more appends: the log is shutting down (or every handle was dropped).
    closing: bool,
    /// The Merkle tree over every record in the file, when checkpoints are on.
    tree: Option<Frontier>,
    ck: CheckpointControl,
}

/// What the checkpoint thread is asked to do (under the queue lock).
#[derive(Debug, Default)]
struct CheckpointControl {
    /// A write of this `seq` wakes the checkpoint thread (enough records since the last).
    due_seq: u64,
    /// On-demand requests made, and answered.
    requested: u64,
    answered: u64,
    /// `seq` of the last checkpoint record: records after it are not yet covered.
    last_record_seq: u64,
    /// Records after the last checkpoint up to here are only witnesses' cosignatures of it:
    /// they wait for the next checkpoint rather than call for one (else an idle log would
    /// checkpoint and be witnessed every interval, forever).
    quiet_upto: u64,
    /// Write a final checkpoint and stop.
    finish: bool,
}

/// What the checkpoint thread publishes.
#[derive(Debug, Clone, Default)]
struct Checkpointed {
    answered: u64,
    latest: Option<CheckpointState>,
    error: Option<Arc<str>>,
    finished: bool,
}

enum State {
    Open,
    Failed(Failure),
}

struct Failure {
    why: Arc<str>,
    /// A failed write can be retried; a failed sync cannot.
    retry: bool,
    since: OffsetDateTime,
    last_try: Instant,
    refused: u64,
}

/// What the log publishes for waiters.
#[derive(Debug, Clone)]
struct Progress {
    durable: u64,
    failure: Option<Arc<str>>,
    finished: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections never leave the data half-updated, so a panic elsewhere while holding
    // the lock does not make it unusable (and the death guard must still get in).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AuditLog {
    /// Opens (creating if needed) `<dir>/audit.log` and continues its chain.
    ///
    /// The directory is created with mode 0700 and the file with 0600. An unfinished last line
    /// (a crash mid-write) is moved to `audit.log.partial-<unix nanos>` and reported by
    /// [`AuditLog::recovered_partial`]; a last record that does not verify fails the open.
    pub fn open(dir: &Path, options: Options) -> Result<AuditLog, AuditError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| AuditError::io(dir, e))?;
        let path = dir.join(LOG_FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| AuditError::io(&path, e))?;
        let cont = tail::continue_log(dir, &path, &file)?;
        tail::sync_dir(dir)?;
        let resumed = match &options.checkpoints {
            Some(ck) => Some(checkpoint::resume::resume(
                &path,
                &file,
                &cont,
                ck,
                options.acknowledge_inconsistency,
            )?),
            None => None,
        };
        let mut latest = None;
        let mut last_record_seq = 0;
        if let (Some(resumed), Some(ck)) = (&resumed, &options.checkpoints) {
            if let Some(state) = &resumed.state {
                last_record_seq = state.record_seq;
                let mut state = state.clone();
                if state.is_final {
                    // Records are about to follow the final checkpoint.
                    state.is_final = false;
                    state
                        .store(&ck.state_path)
                        .map_err(|e| AuditError::Unavailable(e.to_string()))?;
                }
                latest = Some(state);
            }
        }
        let every = options
            .checkpoints
            .as_ref()
            .map_or(u64::MAX, |ck| ck.every.max(1));

        let written = cont.next_seq - 1;
        let (progress, _) = watch::channel(Progress {
            durable: written,
            failure: None,
            finished: false,
        });
        let sync_file = file.try_clone().map_err(|e| AuditError::io(&path, e))?;
        let recovered = cont.recovered.clone();
        let (checkpointed, _) = watch::channel(Checkpointed {
            latest,
            ..Checkpointed::default()
        });
        let resumption = resumed.as_ref().map(|r| r.how.clone());
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                state: State::Open,
                file,
                cont,
                buf: Vec::with_capacity(4096),
                written,
                syncer_idle: false,
                demand: 0,
                low_space: false,
                closing: false,
                tree: resumed.map(|r| r.tree),
                ck: CheckpointControl {
                    due_seq: last_record_seq.saturating_add(every).max(1),
                    last_record_seq,
                    ..CheckpointControl::default()
                },
            }),
            wake: Condvar::new(),
            checkpoint_wake: Condvar::new(),
            progress,
            checkpointed,
            mode: options.fsync,
            options: options.clone(),
            dir: dir.to_path_buf(),
            path: path.clone(),
            events_written: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            available: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
        });
        let syncer = Syncer {
            shared: Arc::clone(&shared),
            file: sync_file,
            synced: written,
            last_space_check: None,
        };
        let thread = thread::Builder::new()
            .name("gatehouse-audit".into())
            .spawn(move || syncer.run())
            .map_err(|e| AuditError::io(&path, e))?;
        let checkpointer = match options.checkpoints {
            Some(ck) => {
                let checkpointer = Checkpointer {
                    shared: Arc::clone(&shared),
                    options: ck,
                };
                Some(
                    thread::Builder::new()
                        .name("gatehouse-checkpoint".into())
                        .spawn(move || checkpointer.run())
                        .map_err(|e| AuditError::io(&path, e))?,
                )
            }
            None => None,
        };
        Ok(AuditLog {
            inner: Arc::new(Inner {
                shared,
                path,
                recovered,
                resumption,
                thread: Mutex::new(Some(thread)),
                checkpointer: Mutex::new(checkpointer),
            }),
        })
    }

    /// Writes an event's record to the file and returns its ticket. The record is not durable
    /// until [`AuditLog::durable`] says so.
    pub fn append(&self, event: Event) -> Result<Ticket, AuditError> {
        self.inner.shared.append(&event)
    }

    /// True (or the failure) when the ticket is already durable, without waiting; `None` when
    /// it is not yet.
    pub fn check_durable(&self, ticket: Ticket) -> Option<Result<(), AuditError>> {
        let progress = self.inner.shared.progress.borrow();
        settled(&progress, ticket)
    }

    /// Resolves once the ticket's event (and every earlier one) is on stable storage, or fails
    /// if the log failed first. The ticket must come from this log (or a clone of it).
    pub async fn durable(&self, ticket: Ticket) -> Result<(), AuditError> {
        self.inner.shared.durable(ticket).await
    }

    /// [`AuditLog::checkpoint`] for synchronous code.
    pub fn checkpoint_blocking(&self) -> Result<CheckpointState, AuditError> {
        block_on(self.checkpoint())
    }

    /// [`AuditLog::durable`] for synchronous code: blocks the calling thread.
    pub fn durable_blocking(&self, ticket: Ticket) -> Result<(), AuditError> {
        block_on(self.durable(ticket))
    }

    /// Appends an event and waits until it is durable.
    pub async fn record(&self, event: Event) -> Result<(), AuditError> {
        let ticket = self.append(event)?;
        self.durable(ticket).await
    }

    /// [`AuditLog::record`] for synchronous code (the CLI): blocks the calling thread.
    pub fn record_blocking(&self, event: Event) -> Result<(), AuditError> {
        let ticket = self.append(event)?;
        self.durable_blocking(ticket)
    }

    /// Stops taking events, syncs everything written, and waits for the sync thread to exit.
    /// Affects every clone. Fails if anything written could not be made durable.
    pub async fn shutdown(&self) -> Result<(), AuditError> {
        let shared = &self.inner.shared;
        let checkpointer = lock(&self.inner.checkpointer).take();
        if let Some(handle) = checkpointer {
            lock(&shared.queue).ck.finish = true;
            shared.checkpoint_wake.notify_one();
            let mut rx = shared.checkpointed.subscribe();
            let done = rx.wait_for(|c| c.finished).await.map(|c| c.clone());
            let _ = handle.join();
            if let Ok(Checkpointed {
                error: Some(why), ..
            }) = done
            {
                tracing::error!(error = %why, "the final audit checkpoint was not written");
            }
        }
        lock(&shared.queue).closing = true;
        shared.wake.notify_one();
        let mut rx = shared.progress.subscribe();
        let progress = rx
            .wait_for(|p| p.finished || p.failure.is_some())
            .await
            .map(|p| p.clone())
            .map_err(|_| AuditError::Unavailable("audit writer is gone".into()))?;
        if let Some(why) = progress.failure {
            return Err(AuditError::Unavailable(why.to_string()));
        }
        let handle = lock(&self.inner.thread).take();
        if let Some(handle) = handle {
            handle
                .join()
                .map_err(|_| AuditError::Unavailable("audit writer panicked".into()))?;
        }
        Ok(())
    }

    /// [`AuditLog::shutdown`] for synchronous code.
    pub fn close(&self) -> Result<(), AuditError> {
        block_on(self.shutdown())
    }

    /// Where an unfinished last line found at open was moved, if there was one. The caller
    /// should audit this (for example in the `gateway.start` event's detail).
    pub fn recovered_partial(&self) -> Option<PathBuf> {
        self.inner.recovered.clone()
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How the Merkle tree was rebuilt at open (`None` without checkpoints). The caller should
    /// audit it (in the `gateway.start` event's detail).
    pub fn resumption(&self) -> Option<Resumption> {
        self.inner.resumption.clone()
    }

    /// The latest signed checkpoint (kept outside the log), if there is one yet.
    pub fn latest_checkpoint(&self) -> Option<CheckpointState> {
        self.inner.shared.checkpointed.borrow().latest.clone()
    }

    /// Whether this log signs checkpoints.
    pub fn signs_checkpoints(&self) -> bool {
        lock(&self.inner.checkpointer).is_some()
    }

    /// Waits for a kept checkpoint carried by a record after `after_record_seq` and returns
    /// it; `None` once the log stops checkpointing (shut down, or checkpoints off).
    pub async fn next_checkpoint(&self, after_record_seq: u64) -> Option<CheckpointState> {
        let mut rx = self.inner.shared.checkpointed.subscribe();
        let newer = |c: &Checkpointed| {
            c.latest
                .as_ref()
                .is_some_and(|l| l.record_seq > after_record_seq)
        };
        let seen = rx
            .wait_for(|c| c.finished || newer(c))
            .await
            .ok()
            .map(|c| c.clone())?;
        if newer(&seen) && !seen.finished {
            seen.latest
        } else {
            None
        }
    }

    /// Signs a checkpoint of everything written so far (if anything was written since the
    /// last one), and returns the latest checkpoint once it is durable.
    pub async fn checkpoint(&self) -> Result<CheckpointState, AuditError> {
        let shared = &self.inner.shared;
        if lock(&self.inner.checkpointer).is_none() {
            return Err(AuditError::Unavailable("checkpoints are off".into()));
        }
        let mut rx = shared.checkpointed.subscribe();
        let wanted = {
            let mut q = lock(&shared.queue);
            q.ck.requested += 1;
            q.ck.requested
        };
        shared.checkpoint_wake.notify_one();
        let done = rx
            .wait_for(|c| c.answered >= wanted || c.finished)
            .await
            .map(|c| c.clone())
            .map_err(|_| AuditError::Unavailable("checkpoint thread is gone".into()))?;
        if let Some(why) = done.error {
            return Err(AuditError::Unavailable(why.to_string()));
        }
        done.latest
            .ok_or_else(|| AuditError::Unavailable("no checkpoint was written".into()))
    }

    /// Counters since open.
    pub fn stats(&self) -> Stats {
        let s = &self.inner.shared;
        let events = s.events_written.load(Ordering::Relaxed);
        Stats {
            events_written: events,
            batches: events,
            syncs: s.syncs.load(Ordering::Relaxed),
            bytes_written: s.bytes_written.load(Ordering::Relaxed),
            durable_seq: s.progress.borrow().durable,
            available_bytes: s.available.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            recoveries: s.recoveries.load(Ordering::Relaxed),
            checkpoints: s.checkpoints.load(Ordering::Relaxed),
        }
    }

    /// `Some(reason)` while the log refuses records.
    pub fn failure(&self) -> Option<String> {
        self.inner
            .shared
            .progress
            .borrow()
            .failure
            .as_ref()
            .map(|f| f.to_string())
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.inner.path)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The answer for one ticket, once there is one.
fn settled(progress: &Progress, ticket: Ticket) -> Option<Result<(), AuditError>> {
    if progress.durable >= ticket.0 {
        Some(Ok(()))
    } else if let Some(why) = &progress.failure {
        Some(Err(AuditError::Unavailable(why.to_string())))
    } else if progress.finished {
        Some(Err(AuditError::Unavailable(format!(
            "event {} was never made durable",
            ticket.0
        ))))
    } else {
        None
    }
}

impl Shared {
    /// See [`AuditLog::durable`].
    async fn durable(&self, ticket: Ticket) -> Result<(), AuditError> {
        if let Some(done) = settled(&self.progress.borrow(), ticket) {
            return done;
        }
        let shared = self;
        // Subscribed before asking, so the sync that answers cannot be missed.
        let mut rx = shared.progress.subscribe();
        {
            let mut q = lock(&shared.queue);
            if ticket.0 > q.demand {
                q.demand = ticket.0;
                if std::mem::replace(&mut q.syncer_idle, false) {
                    shared.wake.notify_one();
                }
            }
        }
        let progress = rx
            .wait_for(|p| settled(p, ticket).is_some())
            .await
            .map(|p| p.clone())
            .map_err(|_| AuditError::Unavailable("audit writer is gone".into()))?;
        settled(&progress, ticket).unwrap_or_else(|| {
            Err(AuditError::Unavailable(format!(
                "event {} was never made durable",
                ticket.0
            )))
        })
    }

    fn append(&self, event: &Event) -> Result<Ticket, AuditError> {
        record::check_event(event).map_err(|e| AuditError::InvalidEvent(e.to_string()))?;
        let mut q = lock(&self.queue);
        if q.closing {
            return Err(AuditError::Closed);
        }
        if let State::Failed(failure) = &q.state {
            let due = failure.retry && failure.last_try.elapsed() >= self.options.retry_interval;
            if !due || !self.try_recover(&mut q) {
                self.refused.fetch_add(1, Ordering::Relaxed);
                let why = match &mut q.state {
                    State::Failed(failure) => {
                        failure.refused += 1;
                        failure.why.to_string()
                    }
                    State::Open => "audit log failed".to_owned(),
                };
                return Err(AuditError::Unavailable(why));
            }
        }
        self.write(&mut q, event)
    }

    /// Encodes and writes one record; on failure the log is marked failed (fail closed).
    fn write(&self, q: &mut Queue, event: &Event) -> Result<Ticket, AuditError> {
        let seq = q.cont.next_seq;
        q.buf.clear();
        let hash = record::encode(&mut q.buf, seq, &q.cont.prev, event)
            .map_err(|e| AuditError::InvalidEvent(e.to_string()))?;
        if let Err(e) = q.file.write_all(&q.buf) {
            // Cut a partial record so the file ends at the last complete one.
            let _ = q.file.set_len(q.cont.len);
            let why = format!("write to {} failed: {e}", self.path.display());
            self.fail(q, why.clone(), true);
            // This record is the first one refused.
            if let State::Failed(failure) = &mut q.state {
                failure.refused += 1;
            }
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(AuditError::Unavailable(why));
        }
        let bytes = q.buf.len() as u64;
        if let Some(tree) = &mut q.tree {
            // Cannot be full: a log holds fewer than u64::MAX records.
            let _ = tree.append(checkpoint::leaf_of(&hash));
            // Only cosignatures: a witness's refusal may be evidence of a fork or a cut, so it
            // is covered by a checkpoint of its own (the client records a repeated refusal at
            // most once an hour, so this cannot loop).
            let answers_a_checkpoint = event.kind == EventKind::AuditWitnessed;
            if answers_a_checkpoint && q.written <= q.ck.last_record_seq.max(q.ck.quiet_upto) {
                q.ck.quiet_upto = seq;
            }
            if seq >= q.ck.due_seq {
                q.ck.due_seq = u64::MAX;
                self.checkpoint_wake.notify_one();
            }
        }
        q.cont.prev = hash;
        q.cont.next_seq += 1;
        q.cont.len += bytes;
        q.written = seq;
        if q.buf.capacity() > 1024 * 1024 {
            q.buf = Vec::with_capacity(4096);
        }
        self.events_written.fetch_add(1, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        match self.mode {
            // Synced when somebody waits for it (see `AuditLog::durable`), or lazily.
            FsyncMode::Always => {}
            // Durable once written; published under the lock, so it only moves forward.
            FsyncMode::Periodic(_) | FsyncMode::Never => {
                self.progress
                    .send_modify(|p| p.durable = p.durable.max(seq));
            }
        }
        Ok(Ticket(seq))
    }

    /// Marks the log failed and releases every waiter with the reason.
    fn fail(&self, q: &mut Queue, why: String, retry: bool) {
        tracing::error!(error = %why, "audit log failed; refusing further events");
        let why: Arc<str> = why.into();
        let (since, refused) = match &q.state {
            State::Failed(f) => (f.since, f.refused),
            _ => (OffsetDateTime::now_utc(), 0),
        };
        q.state = State::Failed(Failure {
            why: Arc::clone(&why),
            retry,
            since,
            last_try: Instant::now(),
            refused,
        });
        self.progress.send_modify(|p| p.failure = Some(why));
    }

    /// After a failed write: tries to write the `audit.gap` record. On success the log is open
    /// again.
    fn try_recover(&self, q: &mut Queue) -> bool {
        let State::Failed(failure) = &mut q.state else {
            return true;
        };
        failure.last_try = Instant::now();
        let mut gap = Event::now(EventKind::AuditGap, Outcome::success());
        gap.what = What {
            resource: Some(self.path.display().to_string()),
            detail: Some(serde_json::json!({
                "failed_at": crate::timefmt::Rfc3339Nanos(failure.since).to_string(),
                "reason": failure.why.to_string(),
                "refused_records": failure.refused,
            })),
            ..What::default()
        };
        let previous = std::mem::replace(&mut q.state, State::Open);
        match self.write(q, &gap) {
            Ok(_) => {
                tracing::warn!("audit log takes records again after a failure (audit.gap written)");
                self.recoveries.fetch_add(1, Ordering::Relaxed);
                self.progress.send_modify(|p| p.failure = None);
                true
            }
            Err(_) => {
                // `write` marked it failed again; keep the original start and count.
                if let (State::Failed(now), State::Failed(before)) = (&mut q.state, previous) {
                    now.since = before.since;
                    now.refused = before.refused;
                }
                false
            }
        }
    }
}

impl Drop for Inner {
    /// The last handle is gone: let the sync thread finish (without waiting for it).
    fn drop(&mut self) {
        lock(&self.shared.queue).closing = true;
        self.shared.wake.notify_one();
        self.shared.checkpoint_wake.notify_one();
    }
}

/// The sync thread's state.
struct Syncer {
    shared: Arc<Shared>,
    /// A clone of the log's descriptor, so syncs never hold the appenders' lock.
    file: File,
    synced: u64,
    last_space_check: Option<Instant>,
}

/// What the sync thread does next.
enum Step {
    Sync(u64),
    Close(u64),
    Stop,
}

impl Syncer {
    fn run(mut self) {
        let mut guard = DeathGuard {
            shared: Arc::clone(&self.shared),
            armed: true,
        };
        loop {
            self.check_space();
            match self.next_step() {
                Step::Sync(target) => {
                    if !self.sync(target) {
                        break;
                    }
                }
                Step::Close(target) => {
                    if self.sync(target) {
                        self.shared.progress.send_modify(|p| p.finished = true);
                    }
                    break;
                }
                Step::Stop => break,
            }
        }
        guard.armed = false;
    }

    /// Waits until there is something to sync (per the mode) or the log is closing.
    fn next_step(&mut self) -> Step {
        let shared = Arc::clone(&self.shared);
        let lazy = shared.options.lazy_sync.max(Duration::from_millis(1));
        let mut q = lock(&shared.queue);
        let mut unsynced_since: Option<Instant> = None;
        loop {
            if q.closing {
                return Step::Close(q.written);
            }
            match &q.state {
                // A failed write may still leave earlier records to make durable; a failed
                // sync leaves nothing that can be vouched for.
                State::Failed(f) if !f.retry => return Step::Stop,
                _ => {}
            }
            let unsynced = q.written > self.synced;
            let wait = match shared.mode {
                FsyncMode::Always => {
                    if unsynced && q.demand > self.synced {
                        return Step::Sync(q.written);
                    }
                    // Appends do not wake this thread (that would cost every result a
                    // wake-up); it looks again every `lazy` interval instead.
                    if unsynced {
                        let since = *unsynced_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= lazy {
                            return Step::Sync(q.written);
                        }
                        lazy - since.elapsed()
                    } else {
                        lazy
                    }
                }
                // Appends do not wake this thread; each tick syncs what was written.
                FsyncMode::Periodic(interval) => {
                    if unsynced && unsynced_since.is_some_and(|t| t.elapsed() >= interval) {
                        return Step::Sync(q.written);
                    }
                    if unsynced {
                        unsynced_since.get_or_insert_with(Instant::now);
                    }
                    interval.max(Duration::from_millis(1))
                }
                FsyncMode::Never => shared.options.space_check_interval,
            };
            q.syncer_idle = true;
            q = shared
                .wake
                .wait_timeout(q, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            q.syncer_idle = false;
            drop(q);
            self.check_space();
            q = lock(&shared.queue);
        }
    }

    /// Syncs everything up to `target`; false when the sync failed (the log is then failed).
    fn sync(&mut self, target: u64) -> bool {
        if target <= self.synced {
            return true;
        }
        if let Err(e) = self.file.sync_data() {
            let why = format!("sync of {} failed: {e}", self.shared.path.display());
            let mut q = lock(&self.shared.queue);
            self.shared.fail(&mut q, why, false);
            return false;
        }
        self.synced = target;
        if self.shared.mode != FsyncMode::Never {
            self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        }
        if self.shared.mode == FsyncMode::Always {
            self.shared
                .progress
                .send_modify(|p| p.durable = p.durable.max(target));
        }
        true
    }

    /// Records (once per crossing) that the file system is nearly full.
    fn check_space(&mut self) {
        let options = &self.shared.options;
        if self
            .last_space_check
            .is_some_and(|t| t.elapsed() < options.space_check_interval)
        {
            return;
        }
        self.last_space_check = Some(Instant::now());
        let Ok(stat) = rustix::fs::statvfs(&self.shared.dir) else {
            return;
        };
        let available = stat.f_bavail.saturating_mul(stat.f_frsize);
        self.shared.available.store(available, Ordering::Relaxed);
        if options.low_space_bytes == 0 {
            return;
        }
        let low = available < options.low_space_bytes;
        let was_low = lock(&self.shared.queue).low_space;
        if low && !was_low {
            tracing::warn!(
                available_bytes = available,
                threshold = options.low_space_bytes,
                "the audit log's file system is nearly full; statements will be refused when it is"
            );
            let mut event = Event::now(EventKind::AuditDiskLow, Outcome::success());
            event.what = What {
                resource: Some(self.shared.dir.display().to_string()),
                detail: Some(serde_json::json!({
                    "available_bytes": available,
                    "threshold_bytes": options.low_space_bytes,
                })),
                ..What::default()
            };
            if self.shared.append(&event).is_ok() {
                lock(&self.shared.queue).low_space = true;
            }
        } else if !low && was_low && available > options.low_space_bytes.saturating_mul(2) {
            lock(&self.shared.queue).low_space = false;
        }
    }
}

/// The checkpoint thread: signs the tree off the appenders' path (they only hash a leaf).
struct Checkpointer {
    shared: Arc<Shared>,
    options: CheckpointOptions,
}

/// The tree as it stood at one size, taken under the queue lock.
struct Snapshot {
    size: u64,
    root: gatehouse_tlog::Hash,
    nodes: Vec<gatehouse_tlog::Hash>,
    head: record::HashHex,
    offset: u64,
}

impl Checkpointer {
    fn run(self) {
        let shared = Arc::clone(&self.shared);
        let interval = self.options.interval.max(Duration::from_millis(10));
        let mut last = Instant::now();
        let mut q = lock(&shared.queue);
        loop {
            if q.ck.finish {
                drop(q);
                let result = self.checkpoint(true);
                self.publish(None, result, true);
                return;
            }
            if q.closing {
                drop(q);
                self.publish(None, Err("the log closed".into()), true);
                return;
            }
            let uncovered = q.written > q.ck.last_record_seq;
            let pending = q.written > q.ck.last_record_seq.max(q.ck.quiet_upto);
            let requested = q.ck.requested > q.ck.answered;
            let due = pending && (q.ck.due_seq == u64::MAX || last.elapsed() >= interval);
            if requested || due {
                let answering = q.ck.requested;
                drop(q);
                let result = if uncovered {
                    self.checkpoint(false)
                } else {
                    Ok(())
                };
                last = Instant::now();
                q = lock(&shared.queue);
                q.ck.answered = q.ck.answered.max(answering);
                drop(q);
                self.publish(Some(answering), result, false);
                q = lock(&shared.queue);
                continue;
            }
            let wait = interval
                .saturating_sub(last.elapsed())
                .max(Duration::from_millis(1));
            q = shared
                .checkpoint_wake
                .wait_timeout(q, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn publish(&self, answered: Option<u64>, result: Result<(), String>, finished: bool) {
        if let Err(why) = &result {
            tracing::error!(error = %why, "audit checkpoint failed");
        }
        self.shared.checkpointed.send_modify(|c| {
            if let Some(answered) = answered {
                c.answered = c.answered.max(answered);
            }
            c.error = result.err().map(Arc::from);
            c.finished |= finished;
        });
    }

    /// Signs the tree as it stands, appends the checkpoint record, waits until it is durable
    /// and then keeps it in the state file.
    fn checkpoint(&self, is_final: bool) -> Result<(), String> {
        let shared = &self.shared;
        let snapshot = {
            let q = lock(&shared.queue);
            if let State::Failed(f) = &q.state {
                return Err(format!("the log is failed: {}", f.why));
            }
            let Some(tree) = &q.tree else {
                return Err("checkpoints are off".into());
            };
            Snapshot {
                size: q.written,
                root: tree.root(),
                nodes: tree.nodes().to_vec(),
                head: q.cont.prev,
                offset: q.cont.len,
            }
        };
        let signed = checkpoint::sign(&self.options, snapshot.size, snapshot.root)?;
        let event = checkpoint::event(&signed);
        record::check_event(&event).map_err(|e| e.to_string())?;
        let ticket = {
            let mut q = lock(&shared.queue);
            if q.written - snapshot.size > MAX_GAP {
                // Verifiers keep only MAX_GAP recent roots; the next one will be nearer.
                q.ck.due_seq = q.written;
                return Err(format!(
                    "{} records were appended while the checkpoint was signed; skipped",
                    q.written - snapshot.size
                ));
            }
            if q.closing {
                return Err("the log closed".into());
            }
            if let State::Failed(f) = &q.state {
                return Err(format!("the log is failed: {}", f.why));
            }
            let ticket = shared.write(&mut q, &event).map_err(|e| e.to_string())?;
            q.ck.last_record_seq = ticket.seq();
            q.ck.due_seq = ticket.seq().saturating_add(self.options.every.max(1));
            ticket
        };
        block_on(shared.durable(ticket)).map_err(|e| e.to_string())?;
        let state = CheckpointState {
            note: signed.note,
            size: snapshot.size,
            root: hex::encode(snapshot.root),
            head: snapshot.head.to_string(),
            offset: snapshot.offset,
            frontier: snapshot.nodes.iter().map(hex::encode).collect(),
            record_seq: ticket.seq(),
            is_final,
        };
        state
            .store(&self.options.state_path)
            .map_err(|e| e.to_string())?;
        shared.checkpoints.fetch_add(1, Ordering::Relaxed);
        shared.checkpointed.send_modify(|c| c.latest = Some(state));
        Ok(())
    }
}

/// Marks the log failed if the sync thread unwinds without finishing.
struct DeathGuard {
    shared: Arc<Shared>,
    armed: bool,
}

impl Drop for DeathGuard {
    fn drop(&mut self) {
        if self.armed {
            let mut q = lock(&self.shared.queue);
            self.shared
                .fail(&mut q, "audit sync thread died".into(), false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dying_sync_thread_fails_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), Options::default()).unwrap();
        let shared = Arc::clone(&log.inner.shared);
        // Simulate the sync thread panicking: its guard runs during unwinding.
        let died = thread::spawn(move || {
            let _guard = DeathGuard {
                shared,
                armed: true,
            };
            panic!("simulated sync bug");
        })
        .join();
        assert!(died.is_err());
        let err = log
            .append(Event::now(EventKind::Cancel, Outcome::success()))
            .unwrap_err();
        assert!(
            matches!(err, AuditError::Unavailable(ref why) if why.contains("died")),
            "{err}"
        );
        assert!(log.failure().is_some());
        assert!(matches!(
            log.durable_blocking(Ticket(1)),
            Err(AuditError::Unavailable(_))
        ));
    }

    #[test]
    fn settled_reports_durable_tickets_even_after_a_failure() {
        let p = Progress {
            durable: 5,
            failure: Some("disk gone".into()),
            finished: false,
        };
        assert!(matches!(settled(&p, Ticket(5)), Some(Ok(()))));
        assert!(matches!(
            settled(&p, Ticket(6)),
            Some(Err(AuditError::Unavailable(_)))
        ));
        let open = Progress {
            durable: 5,
            failure: None,
            finished: false,
        };
        assert!(settled(&open, Ticket(6)).is_none());
    }
}
