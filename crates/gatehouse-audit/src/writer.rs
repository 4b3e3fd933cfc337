//! The writer: one OS thread owns the log file and commits events in groups.
//!
//! Callers push events onto a queue (a mutex-guarded `VecDeque`, cheap and callable from async
//! code) and get a [`Ticket`]. The thread takes everything queued, turns it into records in one
//! reused buffer, writes that with one `write`, then `fdatasync`s once: under load one sync
//! covers many events (group commit). It then publishes the highest durable ticket on a
//! `watch` channel that [`AuditLog::durable`] waits on.
//!
//! With `FsyncMode::Periodic` or `Never` there is no hand-off at all: the appending caller
//! encodes and writes its own record under the queue lock (a write to the page cache, a few
//! microseconds), and a syncer thread `fdatasync`s a clone of the descriptor on the interval,
//! so writers never wait for a sync. This keeps two thread wake-ups off every statement.
//!
//! Fail closed: once a write or sync fails, or the thread dies, the log is poisoned. Nothing
//! pending is reported durable and every later call fails with [`AuditError::Unavailable`].

use std::collections::VecDeque;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::mem;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

use tokio::sync::watch;

use crate::blocking::block_on;
use crate::error::AuditError;
use crate::event::Event;
use crate::record::{self, HashHex};
use crate::tail::{self, Continuation};

/// Name of the log file inside the log directory.
pub const LOG_FILE_NAME: &str = "audit.log";

/// When the writer syncs the file to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncMode {
    /// `fdatasync` after every batch, before any event in it is reported durable. The default.
    #[default]
    Always,
    /// Events are reported durable once written to the file (they survive a crash of the
    /// gateway process), and the file is synced at most this long after each write. A power
    /// loss or kernel crash can lose at most this window. Like PostgreSQL's
    /// `synchronous_commit = off`; for latency-sensitive deployments that accept that window.
    Periodic(std::time::Duration),
    /// Never sync (except once at shutdown): "durable" then only means "handed to the kernel".
    /// NOT DURABLE across a power loss or kernel crash; for tests and benchmarks only.
    Never,
}

/// Writer settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub fsync: FsyncMode,
    /// Most events written (and synced) as one batch.
    pub max_batch: usize,
    /// Most events waiting for the writer; beyond it `append` fails with
    /// [`AuditError::QueueFull`] rather than let memory grow without bound.
    pub max_pending: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fsync: FsyncMode::Always,
            max_batch: 4096,
            max_pending: 256 * 1024,
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
    /// The `seq` the event's record has (or will have) in the log.
    pub fn seq(self) -> u64 {
        self.0
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events written to the file by this writer.
    pub events_written: u64,
    /// `write` calls (one per batch).
    pub batches: u64,
    /// `fdatasync` calls.
    pub syncs: u64,
    pub bytes_written: u64,
    /// Highest `seq` reported durable (including records that were in the file at open).
    pub durable_seq: u64,
}

/// Handle to an open audit log. Cheap to clone; all clones share one writer thread.
///
/// Dropping the last handle lets the thread drain the queue and exit on its own; call
/// [`AuditLog::shutdown`] (or [`AuditLog::close`]) to wait until everything is on disk.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    path: PathBuf,
    recovered: Option<PathBuf>,
    max_pending: usize,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// State shared by the handles and the writer thread.
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer when it sleeps on an empty queue.
    wake: Condvar,
    progress: watch::Sender<Progress>,
    events_written: AtomicU64,
    batches: AtomicU64,
    syncs: AtomicU64,
    bytes_written: AtomicU64,
    /// Write-through mode: records written since the last sync.
    dirty: std::sync::atomic::AtomicBool,
}

struct Queue {
    pending: VecDeque<Event>,
    /// `seq` (and ticket) of the next appended event.
    next_seq: u64,
    state: State,
    /// The writer is waiting on `wake`; lets `append` skip the notify syscall otherwise.
    writer_idle: bool,
    /// Write-through mode (`Periodic`, `Never`): appenders write records themselves.
    inline: Option<InlineSink>,
}

/// The file and chain state, owned by the queue in write-through mode.
struct InlineSink {
    file: File,
    cont: Continuation,
    buf: Vec<u8>,
}

enum State {
    Open,
    Closing,
    Failed(Arc<str>),
}

/// What the writer publishes after each batch.
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

        let durable = cont.next_seq - 1;
        let (progress, _) = watch::channel(Progress {
            durable,
            failure: None,
            finished: false,
        });
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                pending: VecDeque::new(),
                next_seq: cont.next_seq,
                state: State::Open,
                writer_idle: false,
                inline: None,
            }),
            wake: Condvar::new(),
            progress,
            events_written: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            dirty: std::sync::atomic::AtomicBool::new(false),
        });
        let recovered = cont.recovered.clone();
        let thread = match options.fsync {
            FsyncMode::Always => {
                let writer = Writer {
                    shared: Arc::clone(&shared),
                    file,
                    path: path.clone(),
                    fsync: options.fsync,
                    max_batch: options.max_batch.max(1),
                    cont,
                    last_sync: std::time::Instant::now(),
                    unsynced: false,
                };
                thread::Builder::new()
                    .name("gatehouse-audit".into())
                    .spawn(move || writer.run())
            }
            FsyncMode::Periodic(_) | FsyncMode::Never => {
                let interval = match options.fsync {
                    FsyncMode::Periodic(interval) => Some(interval),
                    _ => None,
                };
                let sync_file = file.try_clone().map_err(|e| AuditError::io(&path, e))?;
                lock(&shared.queue).inline = Some(InlineSink {
                    file,
                    cont,
                    buf: Vec::with_capacity(4096),
                });
                let syncer = Syncer {
                    shared: Arc::clone(&shared),
                    file: sync_file,
                    path: path.clone(),
                    interval,
                };
                thread::Builder::new()
                    .name("gatehouse-audit-sync".into())
                    .spawn(move || syncer.run())
            }
        }
        .map_err(|e| AuditError::io(&path, e))?;
        Ok(AuditLog {
            inner: Arc::new(Inner {
                shared,
                path,
                recovered,
                max_pending: options.max_pending.max(1),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Queues an event and returns at once. The event is not durable until
    /// [`AuditLog::durable`] says so.
    pub fn append(&self, event: Event) -> Result<Ticket, AuditError> {
        record::check_event(&event).map_err(|e| AuditError::InvalidEvent(e.to_string()))?;
        let shared = &self.inner.shared;
        let mut q = lock(&shared.queue);
        match &q.state {
            State::Open => {}
            State::Closing => return Err(AuditError::Closed),
            State::Failed(why) => return Err(AuditError::Unavailable(why.to_string())),
        }
        if q.pending.len() >= self.inner.max_pending {
            return Err(AuditError::QueueFull(q.pending.len()));
        }
        let ticket = Ticket(q.next_seq);
        if let Some(sink) = q.inline.as_mut() {
            return self.write_through(q_written(sink, ticket, &event), ticket, q);
        }
        q.next_seq += 1;
        q.pending.push_back(event);
        let wake = mem::replace(&mut q.writer_idle, false);
        drop(q);
        if wake {
            shared.wake.notify_one();
        }
        Ok(ticket)
    }

    /// Finishes a write-through append: on success the record is in the file and reported
    /// durable; on failure the log is poisoned (fail closed).
    fn write_through(
        &self,
        written: Result<usize, String>,
        ticket: Ticket,
        mut q: MutexGuard<'_, Queue>,
    ) -> Result<Ticket, AuditError> {
        let shared = &self.inner.shared;
        match written {
            Ok(bytes) => {
                q.next_seq += 1;
                drop(q);
                shared.events_written.fetch_add(1, Ordering::Relaxed);
                shared.batches.fetch_add(1, Ordering::Relaxed);
                shared
                    .bytes_written
                    .fetch_add(bytes as u64, Ordering::Relaxed);
                shared.dirty.store(true, Ordering::Release);
                // Appends publish in any order; durability only moves forward.
                shared
                    .progress
                    .send_modify(|p| p.durable = p.durable.max(ticket.0));
                Ok(ticket)
            }
            Err(why) => {
                drop(q);
                poison(shared, why.clone());
                Err(AuditError::Unavailable(why))
            }
        }
    }

    /// Resolves once the ticket's event (and every earlier one) is on stable storage, or fails
    /// if the log failed first. The ticket must come from this log (or a clone of it).
    pub async fn durable(&self, ticket: Ticket) -> Result<(), AuditError> {
        let mut rx = self.inner.shared.progress.subscribe();
        let progress = rx
            .wait_for(|p| p.durable >= ticket.0 || p.failure.is_some() || p.finished)
            .await
            .map(|p| p.clone())
            .map_err(|_| AuditError::Unavailable("audit writer is gone".into()))?;
        settle(&progress, ticket)
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

    /// Stops taking events, writes and syncs everything queued, and waits for the writer to
    /// exit. Affects every clone. Fails if anything queued could not be made durable.
    pub async fn shutdown(&self) -> Result<(), AuditError> {
        let shared = &self.inner.shared;
        {
            let mut q = lock(&shared.queue);
            if let State::Open = q.state {
                q.state = State::Closing;
            }
        }
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
        // The writer has published `finished`, so this only waits for it to return.
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

    /// Counters since open.
    pub fn stats(&self) -> Stats {
        let s = &self.inner.shared;
        Stats {
            events_written: s.events_written.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            syncs: s.syncs.load(Ordering::Relaxed),
            bytes_written: s.bytes_written.load(Ordering::Relaxed),
            durable_seq: s.progress.borrow().durable,
        }
    }

    /// `Some(reason)` once the log is poisoned.
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

/// Turns the published progress into the answer for one ticket.
fn settle(progress: &Progress, ticket: Ticket) -> Result<(), AuditError> {
    if progress.durable >= ticket.0 {
        Ok(())
    } else if let Some(why) = &progress.failure {
        Err(AuditError::Unavailable(why.to_string()))
    } else {
        Err(AuditError::Unavailable(format!(
            "event {} was never written",
            ticket.0
        )))
    }
}

impl Drop for Inner {
    /// The last handle is gone: let the writer drain and exit (without waiting for it).
    fn drop(&mut self) {
        let mut q = lock(&self.shared.queue);
        if let State::Open = q.state {
            q.state = State::Closing;
        }
        drop(q);
        self.shared.wake.notify_one();
    }
}

/// Encodes and writes one record in write-through mode; the byte count written.
fn q_written(sink: &mut InlineSink, ticket: Ticket, event: &Event) -> Result<usize, String> {
    sink.buf.clear();
    let hash = record::encode(&mut sink.buf, ticket.0, &sink.cont.prev, event)
        .map_err(|e| format!("cannot encode event {}: {e}", ticket.0))?;
    if let Err(e) = sink.file.write_all(&sink.buf) {
        // Cut a partial record so the file ends at the last complete one.
        let _ = sink.file.set_len(sink.cont.len);
        return Err(format!("write to the audit log failed: {e}"));
    }
    sink.cont.prev = hash;
    sink.cont.next_seq += 1;
    sink.cont.len += sink.buf.len() as u64;
    if sink.buf.capacity() > 1024 * 1024 {
        sink.buf = Vec::with_capacity(4096);
    }
    Ok(sink.buf.len())
}

/// Write-through mode's thread: syncs the file on the interval (or only at close for `Never`)
/// through its own descriptor, so appenders never wait for a sync.
struct Syncer {
    shared: Arc<Shared>,
    file: File,
    path: PathBuf,
    interval: Option<std::time::Duration>,
}

impl Syncer {
    fn run(self) {
        let mut guard = DeathGuard {
            shared: Arc::clone(&self.shared),
            armed: true,
        };
        let tick = self
            .interval
            .unwrap_or(std::time::Duration::from_millis(200));
        loop {
            let closing = {
                let q = lock(&self.shared.queue);
                match q.state {
                    State::Open => {
                        let (q, _) = self
                            .shared
                            .wake
                            .wait_timeout(q, tick)
                            .unwrap_or_else(PoisonError::into_inner);
                        matches!(q.state, State::Closing)
                    }
                    State::Closing => true,
                    State::Failed(_) => {
                        guard.armed = false;
                        return;
                    }
                }
            };
            // The final sync at close is not counted, as in group-commit mode.
            if self.interval.is_some()
                && !closing
                && self.shared.dirty.swap(false, Ordering::AcqRel)
            {
                if let Err(e) = self.file.sync_data() {
                    poison(
                        &self.shared,
                        format!("sync of {} failed: {e}", self.path.display()),
                    );
                    guard.armed = false;
                    return;
                }
                self.shared.syncs.fetch_add(1, Ordering::Relaxed);
            }
            if closing {
                // Appends stop at Closing, so everything written is now synced.
                final_sync(&self.shared, &self.file, &self.path);
                guard.armed = false;
                return;
            }
        }
    }
}

/// The last sync at close: on success the log is finished, otherwise poisoned.
fn final_sync(shared: &Shared, file: &File, path: &Path) {
    match file.sync_data() {
        Ok(()) => shared.progress.send_modify(|p| p.finished = true),
        Err(e) => poison(shared, format!("sync of {} failed: {e}", path.display())),
    }
}

/// Marks the log failed and releases every waiter.
fn poison(shared: &Shared, why: String) {
    tracing::error!(error = %why, "audit log failed; refusing further events");
    let why: Arc<str> = why.into();
    let dropped = {
        let mut q = lock(&shared.queue);
        q.state = State::Failed(Arc::clone(&why));
        mem::take(&mut q.pending)
    };
    drop(dropped);
    shared.progress.send_modify(|p| p.failure = Some(why));
}

/// Poisons the log if the writer thread unwinds without finishing.
struct DeathGuard {
    shared: Arc<Shared>,
    armed: bool,
}

impl Drop for DeathGuard {
    fn drop(&mut self) {
        if self.armed {
            poison(&self.shared, "audit writer thread died".into());
        }
    }
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    file: File,
    path: PathBuf,
    fsync: FsyncMode,
    max_batch: usize,
    cont: Continuation,
    /// Periodic mode: when the file was last synced, and whether writes are waiting for it.
    last_sync: std::time::Instant,
    unsynced: bool,
}

impl Writer {
    fn run(mut self) {
        let mut guard = DeathGuard {
            shared: Arc::clone(&self.shared),
            armed: true,
        };
        let mut batch = VecDeque::new();
        let mut buf = Vec::with_capacity(256 * 1024);
        loop {
            match self.take_batch(&mut batch) {
                Ok(true) => {}
                Ok(false) => break,
                Err(why) => {
                    poison(&self.shared, why);
                    guard.armed = false;
                    return;
                }
            }
            if let Err(why) = self.commit(&mut batch, &mut buf) {
                poison(&self.shared, why);
                guard.armed = false;
                return;
            }
        }
        if let State::Failed(_) = lock(&self.shared.queue).state {
            guard.armed = false;
            return;
        }
        // Closing and drained. A last sync matters only for FsyncMode::Never, but is cheap.
        final_sync(&self.shared, &self.file, &self.path);
        guard.armed = false;
    }

    /// Waits for events and moves up to `max_batch` of them into `batch`. Returns false when
    /// the log is closing (or failed) and nothing is left to write.
    fn take_batch(&mut self, batch: &mut VecDeque<Event>) -> Result<bool, String> {
        let shared = Arc::clone(&self.shared);
        let mut q = lock(&shared.queue);
        while q.pending.is_empty() {
            match q.state {
                State::Open => {
                    q.writer_idle = true;
                    match self.sync_due_in() {
                        None => q = shared.wake.wait(q).unwrap_or_else(PoisonError::into_inner),
                        Some(wait) if !wait.is_zero() => {
                            q = shared
                                .wake
                                .wait_timeout(q, wait)
                                .unwrap_or_else(PoisonError::into_inner)
                                .0;
                        }
                        Some(_) => {
                            // Idle with unsynced writes: sync now, without holding the queue.
                            drop(q);
                            self.sync()?;
                            q = lock(&shared.queue);
                        }
                    }
                }
                State::Closing | State::Failed(_) => return Ok(false),
            }
        }
        q.writer_idle = false;
        if q.pending.len() <= self.max_batch {
            // Swap buffers: the queue keeps the (empty) capacity of the previous batch.
            mem::swap(&mut q.pending, batch);
        } else {
            batch.extend(q.pending.drain(..self.max_batch));
        }
        Ok(true)
    }

    /// Periodic mode with unsynced writes: how long until the sync is due.
    fn sync_due_in(&self) -> Option<std::time::Duration> {
        match self.fsync {
            FsyncMode::Periodic(interval) if self.unsynced => {
                Some(interval.saturating_sub(self.last_sync.elapsed()))
            }
            _ => None,
        }
    }

    fn sync(&mut self) -> Result<(), String> {
        self.file
            .sync_data()
            .map_err(|e| format!("sync of {} failed: {e}", self.path.display()))?;
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        self.last_sync = std::time::Instant::now();
        self.unsynced = false;
        Ok(())
    }

    /// Encodes, writes and syncs one batch, then publishes it as durable.
    fn commit(&mut self, batch: &mut VecDeque<Event>, buf: &mut Vec<u8>) -> Result<(), String> {
        buf.clear();
        let count = batch.len() as u64;
        for event in batch.drain(..) {
            let seq = self.cont.next_seq;
            let hash: HashHex = record::encode(buf, seq, &self.cont.prev, &event)
                .map_err(|e| format!("cannot encode event {seq}: {e}"))?;
            self.cont.prev = hash;
            self.cont.next_seq += 1;
        }
        let synced = self.file.write_all(buf).and_then(|()| match self.fsync {
            FsyncMode::Always => self.file.sync_data(),
            FsyncMode::Periodic(_) | FsyncMode::Never => Ok(()),
        });
        if let Err(e) = synced {
            // Best effort: cut what may have reached the file so the log ends at the last record
            // reported durable. Whatever remains is dealt with at the next open.
            let _ = self.file.set_len(self.cont.len);
            return Err(format!("write to {} failed: {e}", self.path.display()));
        }
        self.cont.len += buf.len() as u64;
        let s = &self.shared;
        s.events_written.fetch_add(count, Ordering::Relaxed);
        s.batches.fetch_add(1, Ordering::Relaxed);
        match self.fsync {
            FsyncMode::Always => {
                s.syncs.fetch_add(1, Ordering::Relaxed);
            }
            FsyncMode::Periodic(_) => self.unsynced = true,
            FsyncMode::Never => {}
        }
        s.bytes_written
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        let durable = self.cont.next_seq - 1;
        s.progress.send_modify(|p| p.durable = durable);
        if let Some(due) = self.sync_due_in() {
            if due.is_zero() {
                self.sync()?;
            }
        }
        // Do not keep a huge buffer around after one outsized batch.
        if buf.capacity() > 64 * 1024 * 1024 {
            *buf = Vec::with_capacity(256 * 1024);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Outcome};

    #[test]
    fn a_dying_writer_poisons_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), Options::default()).unwrap();
        let shared = Arc::clone(&log.inner.shared);
        // Simulate the writer thread panicking: its guard runs during unwinding.
        let died = thread::spawn(move || {
            let _guard = DeathGuard {
                shared,
                armed: true,
            };
            panic!("simulated writer bug");
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
    fn settle_reports_durable_tickets_even_after_a_failure() {
        let p = Progress {
            durable: 5,
            failure: Some("disk gone".into()),
            finished: false,
        };
        assert!(settle(&p, Ticket(5)).is_ok());
        assert!(matches!(
            settle(&p, Ticket(6)),
            Err(AuditError::Unavailable(_))
        ));
    }
}
