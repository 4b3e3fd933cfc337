//! Writing a recording: frames are appended to an in-memory buffer on the data path (a copy,
//! no I/O) and handed to the session's writer task in chunks through a bounded queue. The task
//! seals (when a key is set), writes and hashes them; at the end it syncs the file and returns
//! the SHA-256 of every byte, which goes into `session.end`.
//!
//! Once a write fails the recorder is failed for good: [`Recorder::flush`] and
//! [`Recorder::failure`] report it, and the adapter ends the session (fail closed, as with
//! the audit log).

use crate::format::{encode_frame, encoded_len, Encryption, FrameKind, Header, MAGIC};
use crate::seal::{Key, ALG};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Chunks handed to the writer task once the buffer holds this much.
const SPILL_AT: usize = 256 * 1024;
/// And at least this often while frames wait, so a crash loses at most this much of a
/// session's recent frames (the audit log has every statement regardless).
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Room kept under the size cap for the truncation marker and the end frame.
const RESERVE: u64 = 4 * 1024;
/// Smallest size cap accepted.
pub const MIN_MAX_BYTES: u64 = 64 * 1024;

/// Bounds of one session's recording.
#[derive(Debug, Clone, Copy)]
pub struct RecorderLimits {
    /// The most a recording keeps (header and frames); past it, a truncation marker.
    pub max_bytes: u64,
    /// Chunks waiting for the disk before the data path waits on [`Recorder::flush`].
    pub queue_chunks: usize,
}

impl Default for RecorderLimits {
    fn default() -> Self {
        RecorderLimits {
            max_bytes: 64 * 1024 * 1024,
            queue_chunks: 8,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RecordingError {
    #[error("recording unavailable: {0}")]
    Unavailable(String),
}

/// What a finished recording is, for `session.end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The file's name inside the recordings directory.
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    /// The size cap was reached.
    pub truncated: bool,
    /// Frames not kept past the cap, and their size.
    pub dropped_frames: u64,
    pub dropped_bytes: u64,
    pub encrypted: bool,
}

struct State {
    buf: Vec<u8>,
    kept: u64,
    truncated: bool,
    dropped_frames: u64,
    dropped_bytes: u64,
}

/// One session's recording.
pub struct Recorder {
    state: Arc<Mutex<State>>,
    tx: mpsc::Sender<Vec<u8>>,
    task: JoinHandle<Result<(String, u64), String>>,
    failed: Arc<Mutex<Option<String>>>,
    opened: Instant,
    limits: RecorderLimits,
    file: String,
    encrypted: bool,
}

impl Recorder {
    /// Creates `<dir>/<session>.ghrec` (mode 0600; never an existing file) and starts its
    /// writer task. Must run inside a tokio runtime.
    pub fn create(
        dir: &Path,
        header: &Header,
        key: Option<&Key>,
        limits: RecorderLimits,
    ) -> Result<Recorder, RecordingError> {
        let unavailable = |what: &str, path: &Path, e: std::io::Error| {
            RecordingError::Unavailable(format!("{what} {}: {e}", path.display()))
        };
        if !is_safe_name(&header.session) {
            return Err(RecordingError::Unavailable(
                "session id is not a safe file name".into(),
            ));
        }
        create_dir(dir).map_err(|e| unavailable("cannot create", dir, e))?;
        let file = format!("{}.{}", header.session, crate::format::FILE_EXTENSION);
        let path: PathBuf = dir.join(&file);
        let mut header = header.clone();
        let seal = key.map(|key| {
            let prefix: [u8; 16] = rand::random();
            header.encryption = Some(Encryption {
                alg: ALG.to_owned(),
                key_id: key.id().to_owned(),
                nonce_prefix: hex::encode(prefix),
            });
            (key.clone(), prefix)
        });
        let json = serde_json::to_vec(&header)
            .map_err(|e| RecordingError::Unavailable(format!("header: {e}")))?;
        let mut head = Vec::with_capacity(MAGIC.len() + 4 + json.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&u32::try_from(json.len()).unwrap_or(u32::MAX).to_be_bytes());
        head.extend_from_slice(&json);
        let mut std_file = open_new(&path).map_err(|e| unavailable("cannot create", &path, e))?;
        std_file
            .write_all(&head)
            .map_err(|e| unavailable("cannot write", &path, e))?;
        let mut hasher = Sha256::new();
        hasher.update(&head);
        let (tx, rx) = mpsc::channel(limits.queue_chunks.max(1));
        let failed = Arc::new(Mutex::new(None));
        let task = tokio::spawn(write_loop(
            tokio::fs::File::from_std(std_file),
            path,
            hasher,
            head.len() as u64,
            rx,
            seal,
            failed.clone(),
        ));
        let state = Arc::new(Mutex::new(State {
            buf: Vec::new(),
            kept: head.len() as u64,
            truncated: false,
            dropped_frames: 0,
            dropped_bytes: 0,
        }));
        tokio::spawn(flush_periodically(Arc::downgrade(&state), tx.downgrade()));
        Ok(Recorder {
            state,
            tx,
            task,
            failed,
            opened: Instant::now(),
            limits,
            encrypted: key.is_some(),
            file,
        })
    }

    /// Appends a frame (a copy; no I/O). Past the size cap the frame is counted, not kept.
    pub fn frame(&self, kind: FrameKind, payload: &[u8]) {
        let at = u64::try_from(self.opened.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let len = encoded_len(payload.len()) as u64;
        if state.truncated {
            state.dropped_frames += 1;
            state.dropped_bytes += len;
            return;
        }
        let cap = self.limits.max_bytes.max(MIN_MAX_BYTES) - RESERVE;
        if state.kept + len > cap {
            state.truncated = true;
            state.dropped_frames += 1;
            state.dropped_bytes += len;
            let marker = serde_json::json!({ "at_bytes": state.kept }).to_string();
            state.kept += encoded_len(marker.len()) as u64;
            encode_frame(&mut state.buf, FrameKind::Truncated, at, marker.as_bytes());
            return;
        }
        state.kept += len;
        encode_frame(&mut state.buf, kind, at, payload);
        if state.buf.len() >= SPILL_AT {
            // Handed over without waiting; a full queue keeps it here until the next flush.
            let chunk = std::mem::take(&mut state.buf);
            if let Err(mpsc::error::TrySendError::Full(chunk)) = self.tx.try_send(chunk) {
                state.buf = chunk;
            }
        }
    }

    /// Appends a JSON frame.
    pub fn json(&self, kind: FrameKind, value: &serde_json::Value) {
        self.frame(kind, value.to_string().as_bytes());
    }

    /// Hands what is buffered to the writer, waiting while its queue is full.
    pub async fn flush(&self) -> Result<(), RecordingError> {
        if let Some(why) = self.failure() {
            return Err(RecordingError::Unavailable(why));
        }
        let chunk = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.buf.is_empty() {
                return Ok(());
            }
            std::mem::take(&mut state.buf)
        };
        self.tx
            .send(chunk)
            .await
            .map_err(|_| RecordingError::Unavailable(self.failure().unwrap_or_default()))
    }

    /// Waits while more than a chunk is buffered (the writer is behind); an error once the
    /// recording failed. Cheap when neither: the data path calls it on every write.
    pub async fn settle(&self) -> Result<(), RecordingError> {
        let behind = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.buf.len() >= SPILL_AT
        };
        if behind {
            return self.flush().await;
        }
        if self.tx.is_closed() {
            return Err(RecordingError::Unavailable(
                self.failure()
                    .unwrap_or_else(|| "the writer stopped".into()),
            ));
        }
        Ok(())
    }

    /// Why the recording cannot be written, once a write failed.
    pub fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Writes the end frame, syncs the file and returns what it is.
    pub async fn finish(self, end: &serde_json::Value) -> Result<Summary, RecordingError> {
        let (truncated, dropped_frames, dropped_bytes) = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            (state.truncated, state.dropped_frames, state.dropped_bytes)
        };
        let mut end = end.clone();
        if let Some(map) = end.as_object_mut() {
            map.insert("dropped_frames".into(), dropped_frames.into());
            map.insert("dropped_bytes".into(), dropped_bytes.into());
        }
        {
            // The end frame always fits: room is reserved for it.
            let at = u64::try_from(self.opened.elapsed().as_micros()).unwrap_or(u64::MAX);
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            encode_frame(
                &mut state.buf,
                FrameKind::End,
                at,
                end.to_string().as_bytes(),
            );
        }
        self.flush().await?;
        let Recorder {
            tx, task, failed, ..
        } = self;
        drop(tx);
        let (sha256, bytes) = match task.await {
            Ok(Ok(done)) => done,
            Ok(Err(why)) => return Err(RecordingError::Unavailable(why)),
            Err(e) => {
                let why = failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                    .unwrap_or_else(|| e.to_string());
                return Err(RecordingError::Unavailable(why));
            }
        };
        Ok(Summary {
            file: self.file,
            sha256,
            bytes,
            truncated,
            dropped_frames,
            dropped_bytes,
            encrypted: self.encrypted,
        })
    }
}

/// Hands what is buffered to the writer every [`FLUSH_EVERY`], until the recorder is gone.
///
/// It sends under the state lock, as [`Recorder::frame`] does, so chunks reach the writer in
/// the order their frames were appended; it holds no sender between ticks, so it never keeps
/// the writer from finishing.
async fn flush_periodically(state: std::sync::Weak<Mutex<State>>, tx: mpsc::WeakSender<Vec<u8>>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick.tick().await;
    loop {
        tick.tick().await;
        let (Some(state), Some(tx)) = (state.upgrade(), tx.upgrade()) else {
            return;
        };
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.buf.is_empty() {
            continue;
        }
        let chunk = std::mem::take(&mut state.buf);
        match tx.try_send(chunk) {
            Ok(()) => {}
            // The writer is behind: the next spill or tick takes it.
            Err(mpsc::error::TrySendError::Full(chunk)) => state.buf = chunk,
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

async fn write_loop(
    mut file: tokio::fs::File,
    path: PathBuf,
    mut hasher: Sha256,
    mut bytes: u64,
    mut rx: mpsc::Receiver<Vec<u8>>,
    seal: Option<(Key, [u8; 16])>,
    failed: Arc<Mutex<Option<String>>>,
) -> Result<(String, u64), String> {
    let fail = |e: std::io::Error| {
        let why = format!("cannot write {}: {e}", path.display());
        tracing::error!(error = %why, "recording failed");
        *failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(why.clone());
        why
    };
    let mut index = 0u64;
    while let Some(plain) = rx.recv().await {
        let body = match &seal {
            Some((key, prefix)) => key.seal(prefix, index, &plain),
            None => plain,
        };
        index += 1;
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes();
        file.write_all(&len).await.map_err(fail)?;
        file.write_all(&body).await.map_err(fail)?;
        hasher.update(len);
        hasher.update(&body);
        bytes += 4 + body.len() as u64;
    }
    file.flush().await.map_err(fail)?;
    file.sync_all().await.map_err(fail)?;
    Ok((hex::encode(hasher.finalize()), bytes))
}

/// Session ids become file names: only plain characters.
fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn open_new(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}
