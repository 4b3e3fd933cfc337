//! Submitting the gateway's own checkpoints to witnesses, and keeping their cosignatures in the
//! audit log.
//!
//! One task per witness waits for each new checkpoint, proves it consistent with the last one
//! that witness cosigned, and records the answer: `audit.witnessed` with the cosignature line,
//! or `audit.witness_failed` with why. Nothing here is on the data path; a witness that is down
//! or slow only delays its own records.
//!
//! Only the frontier at the witness's size is kept in memory; the proof is made from it and
//! the records since, read from the log (and checked) at submission. After a restart, or when a
//! witness answers with a size we do not hold, the frontier at that size is rebuilt by reading
//! the log from the start once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatehouse_audit::checkpoint::{
    advance, each_of_kind, read_leaves, CheckpointState, TreePosition,
};
use gatehouse_audit::event::{Event, EventKind, Outcome, What};
use gatehouse_audit::AuditLog;
use gatehouse_tlog::{consistency_proof_from_frontier, CosignatureVerifier, SignedNote};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::request::{parse_size_body, AddCheckpoint, SIZE_CONTENT_TYPE};

/// One configured witness (`audit.witnesses` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessTarget {
    /// The submission prefix: requests go to `<url>/add-checkpoint`.
    pub url: String,
    /// The witness's cosigning key (vkey type `0x04`); its name names the witness.
    pub key: CosignatureVerifier,
    /// Per request.
    pub timeout: Duration,
    /// CA certificates for an `https://` witness (default: the system's).
    pub ca_file: Option<PathBuf>,
}

/// What an `audit.witnessed` record's detail holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessedDetail {
    /// The witness's vkey.
    pub witness: String,
    /// The checkpoint cosigned: its size and root (hex).
    pub size: u64,
    pub root: String,
    /// The cosignature line, to append to the checkpoint's note.
    pub cosignature: String,
    /// When the witness says it cosigned (POSIX seconds).
    pub timestamp: u64,
}

/// What `/metrics` shows of one witness.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WitnessStatus {
    /// The witness's name (from its key).
    pub name: String,
    /// The size of the latest checkpoint it cosigned for this log (0: none yet).
    pub cosigned_size: u64,
    /// When, by the witness's clock (POSIX seconds; 0: none yet).
    pub cosigned_at: u64,
    /// Submissions that ended in `audit.witness_failed`.
    pub failures: u64,
    /// Whether the latest submission was cosigned.
    pub ok: bool,
}

/// A witness's status, shared with the admin API.
#[derive(Debug, Default)]
pub struct StatusCell(std::sync::Mutex<WitnessStatus>);

impl StatusCell {
    /// A copy of the current status.
    pub fn snapshot(&self) -> WitnessStatus {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut WitnessStatus)) {
        f(&mut self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

/// The running witness clients.
pub struct Clients {
    /// End when the shutdown flag turns true or the log stops checkpointing.
    pub tasks: Vec<JoinHandle<()>>,
    pub status: Vec<Arc<StatusCell>>,
}

/// Attempts per checkpoint before its failure is recorded (connection errors and size
/// corrections only; a refusal is recorded at once).
const ATTEMPTS: u32 = 3;

/// A failure like the last one recorded (same HTTP status, or unreachable again) is recorded
/// again only after this long; the ones in between are counted into the next record.
const REPEAT_EVERY: Duration = Duration::from_secs(3600);

/// Starts one task per witness; they end when `shutdown` turns true or the log stops.
pub fn spawn(
    log: AuditLog,
    targets: Vec<WitnessTarget>,
    shutdown: watch::Receiver<bool>,
) -> Result<Clients, String> {
    let mut tasks = Vec::new();
    let mut cells = Vec::new();
    for target in targets {
        let client = gatehouse_sink::http_client(target.ca_file.as_deref(), target.timeout)
            .map_err(|e| format!("witness {}: {e}", target.key.name()))?;
        let status = Arc::new(StatusCell::default());
        status.update(|s| s.name = target.key.name().to_owned());
        cells.push(Arc::clone(&status));
        let submitter = Submitter {
            log: log.clone(),
            path: log.path().to_path_buf(),
            target,
            client,
            held: None,
            floor: None,
            last_failure: None,
            repeated: 0,
            status,
        };
        let span = tracing::info_span!("witness", witness = %submitter.target.key.name());
        tasks.push(tokio::spawn(tracing::Instrument::instrument(
            submitter.run(shutdown.clone()),
            span,
        )));
    }
    Ok(Clients {
        tasks,
        status: cells,
    })
}

struct Submitter {
    log: AuditLog,
    path: PathBuf,
    target: WitnessTarget,
    client: reqwest::Client,
    /// The tree at the size this witness last cosigned, if we know it.
    held: Option<TreePosition>,
    /// The largest size this witness cosigned for this log, by the log's own records (read
    /// once at start): a witness answering with less has lost or rolled back its state.
    floor: Option<u64>,
    /// The last failure recorded (its status) and when; failures like it are counted.
    last_failure: Option<(Option<u16>, std::time::Instant)>,
    repeated: u64,
    status: Arc<StatusCell>,
}

/// Why one submission did not end in a cosignature.
struct Failed {
    status: Option<u16>,
    reason: String,
    /// Worth another attempt (the witness was unreachable, or corrected our old size).
    retry: bool,
}

impl Failed {
    fn final_(status: Option<u16>, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            retry: false,
        }
    }
}

impl Submitter {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        self.floor = Some(self.cosigned_before().await);
        let mut after = 0u64;
        let mut next = self.log.latest_checkpoint();
        loop {
            let checkpoint = match next.take() {
                Some(c) => c,
                None => tokio::select! {
                    c = self.log.next_checkpoint(after) => match c {
                        Some(c) => c,
                        None => return,
                    },
                    _ = shutdown.wait_for(|s| *s) => return,
                },
            };
            after = checkpoint.record_seq;
            tokio::select! {
                () = self.submit(&checkpoint) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// The largest size this witness's key cosigned according to the log's `audit.witnessed`
    /// records (0 when there are none, or the log cannot be read).
    async fn cosigned_before(&self) -> u64 {
        let (path, key) = (self.path.clone(), self.target.key.to_string());
        let scan = tokio::task::spawn_blocking(move || {
            let mut floor = 0u64;
            each_of_kind(&path, &[EventKind::AuditWitnessed], |rec| {
                let detail = rec.event.what.detail.as_ref();
                if detail
                    .and_then(|d| d.get("witness"))
                    .and_then(|w| w.as_str())
                    == Some(&key)
                {
                    if let Some(size) = detail.and_then(|d| d.get("size")).and_then(|s| s.as_u64())
                    {
                        floor = floor.max(size);
                    }
                }
            })
            .map(|()| floor)
        })
        .await;
        match scan {
            Ok(Ok(floor)) => floor,
            Ok(Err(why)) => {
                tracing::warn!(error = %why, "could not read what the witness cosigned before");
                0
            }
            Err(_) => 0,
        }
    }

    /// Tries to have the witness cosign `checkpoint`, and records the outcome.
    async fn submit(&mut self, checkpoint: &CheckpointState) {
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            match self.try_once(checkpoint).await {
                Ok(detail) => break Ok(detail),
                Err(failed) if failed.retry && attempt < ATTEMPTS => {
                    if failed.status.is_none() {
                        tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                    }
                }
                Err(failed) => break Err(failed),
            }
        };
        let event = match outcome {
            Ok(detail) => {
                tracing::debug!(size = detail.size, "checkpoint cosigned");
                self.floor = Some(self.floor.unwrap_or(0).max(detail.size));
                self.last_failure = None;
                self.repeated = 0;
                self.status.update(|s| {
                    s.cosigned_size = detail.size;
                    s.cosigned_at = detail.timestamp;
                    s.ok = true;
                });
                let mut event = Event::now(EventKind::AuditWitnessed, Outcome::success());
                event.what = What {
                    resource: Some(self.target.key.name().to_owned()),
                    detail: serde_json::to_value(&detail).ok(),
                    ..What::default()
                };
                event
            }
            Err(failed) => {
                tracing::warn!(size = checkpoint.size, reason = %failed.reason, "witness did not cosign");
                self.status.update(|s| {
                    s.failures += 1;
                    s.ok = false;
                });
                let now = std::time::Instant::now();
                let like_last = self.last_failure.is_some_and(|(status, at)| {
                    status == failed.status && now.duration_since(at) < REPEAT_EVERY
                });
                if like_last {
                    self.repeated += 1;
                    return;
                }
                let repeated = std::mem::take(&mut self.repeated);
                self.last_failure = Some((failed.status, now));
                let mut event = Event::now(
                    EventKind::AuditWitnessFailed,
                    Outcome::failure(&failed.reason),
                );
                event.what = What {
                    resource: Some(self.target.key.name().to_owned()),
                    detail: Some(serde_json::json!({
                        "witness": self.target.key.to_string(),
                        "url": self.target.url,
                        "size": checkpoint.size,
                        "root": checkpoint.root,
                        "status": failed.status,
                        "repeated_since_last_record": repeated,
                    })),
                    ..What::default()
                };
                event
            }
        };
        if let Err(e) = self.log.append(event) {
            tracing::warn!(error = %e, "could not record the witness's answer");
        }
    }

    async fn try_once(&mut self, checkpoint: &CheckpointState) -> Result<WitnessedDetail, Failed> {
        let (old_size, proof) = self.proof_to(checkpoint).await?;
        let request = AddCheckpoint {
            old_size,
            proof,
            checkpoint: checkpoint.note.clone(),
        };
        let url = format!("{}/add-checkpoint", self.target.url.trim_end_matches('/'));
        let response = self
            .client
            .post(&url)
            .body(request.to_body())
            .send()
            .await
            .map_err(|e| Failed {
                status: None,
                reason: format!("cannot reach the witness: {}", without_url(&e)),
                retry: true,
            })?;
        let status = response.status().as_u16();
        let is_size = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(SIZE_CONTENT_TYPE));
        let body = read_bounded(response).await.map_err(|e| Failed {
            status: Some(status),
            reason: format!("cannot read the witness's answer: {e}"),
            retry: true,
        })?;
        match status {
            200 => self.accept(checkpoint, &body),
            409 if is_size => {
                let size = parse_size_body(&body).ok_or_else(|| {
                    Failed::final_(Some(409), "the witness's size answer is malformed")
                })?;
                if size > checkpoint.size {
                    return Err(Failed::final_(
                        Some(409),
                        format!(
                            "the witness cosigned size {size}, beyond this checkpoint's {}: \
                             the log was cut or rolled back since",
                            checkpoint.size
                        ),
                    ));
                }
                let floor = self.floor.unwrap_or(0);
                if size < floor {
                    return Err(Failed::final_(
                        Some(409),
                        format!(
                            "the witness says it holds size {size}, but it cosigned size {floor} \
                             of this log before: it lost or rolled back its state"
                        ),
                    ));
                }
                self.held = Some(self.position_at(size, checkpoint).await?);
                Err(Failed {
                    status: Some(409),
                    reason: format!("the witness holds size {size}, not {old_size}"),
                    retry: true,
                })
            }
            _ => Err(Failed::final_(
                Some(status),
                format!("the witness refused: {}", first_line(&body)),
            )),
        }
    }

    /// The old size to send and the consistency proof from it to `checkpoint`.
    async fn proof_to(
        &mut self,
        checkpoint: &CheckpointState,
    ) -> Result<(u64, Vec<gatehouse_tlog::Hash>), Failed> {
        let floor = self.floor.unwrap_or(0);
        if self.held.is_none() && floor > 0 {
            if floor > checkpoint.size {
                return Err(Failed::final_(
                    None,
                    format!(
                        "the log's records say the witness cosigned size {floor}, beyond this \
                         checkpoint's {}: the log was cut or rolled back since",
                        checkpoint.size
                    ),
                ));
            }
            // Start from what it cosigned before, never from nothing: a witness that lost its
            // state then answers with a smaller size, which is recorded as such.
            self.held = Some(self.position_at(floor, checkpoint).await?);
        }
        let Some(held) = self.held.clone() else {
            // Ask: the witness answers with its size if it has one.
            return Ok((0, Vec::new()));
        };
        if held.size() == 0 || held.size() == checkpoint.size {
            return Ok((held.size(), Vec::new()));
        }
        if held.size() > checkpoint.size {
            return Err(Failed::final_(
                None,
                format!(
                    "the witness cosigned size {}, beyond this checkpoint's {}",
                    held.size(),
                    checkpoint.size
                ),
            ));
        }
        let path = self.path.clone();
        let to = checkpoint.size;
        let root = checkpoint.root.clone();
        let read = tokio::task::spawn_blocking(move || {
            let (leaves, end) = read_leaves(&path, &held, to)?;
            if hex::encode(end.frontier.root()) != root {
                return Err(format!(
                    "the log's records 1..{to} do not hash to the checkpoint's root"
                ));
            }
            let proof = consistency_proof_from_frontier(&held.frontier, &leaves)
                .map_err(|e| e.to_string())?;
            Ok((held.size(), proof))
        })
        .await
        .map_err(|e| Failed::final_(None, e.to_string()))?;
        read.map_err(|why| Failed::final_(None, format!("cannot make the proof: {why}")))
    }

    /// The tree at `size`: the checkpoint's own when it is that size, else read from the
    /// start of the log (keeping only the frontier).
    async fn position_at(
        &self,
        size: u64,
        checkpoint: &CheckpointState,
    ) -> Result<TreePosition, Failed> {
        if size == checkpoint.size {
            return TreePosition::of(checkpoint).map_err(|e| Failed::final_(None, e));
        }
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || advance(&path, &TreePosition::start(), size))
            .await
            .map_err(|e| Failed::final_(None, e.to_string()))?
            .map_err(|why| Failed::final_(None, format!("cannot read the log: {why}")))
    }

    /// Checks the cosignature lines against our checkpoint and the witness's key.
    fn accept(
        &mut self,
        checkpoint: &CheckpointState,
        body: &str,
    ) -> Result<WitnessedDetail, Failed> {
        let bad = |why: String| Failed::final_(Some(200), why);
        let mut text = checkpoint.note.clone();
        text.push_str(body);
        let note = SignedNote::parse(&text)
            .map_err(|e| bad(format!("the witness's answer is not signature lines: {e}")))?;
        let cosigned = self
            .target
            .key
            .verify(&note)
            .map_err(|e| bad(format!("no valid cosignature by the configured key: {e}")))?;
        let line = note
            .signatures()
            .iter()
            .filter(|s| {
                s.name() == self.target.key.name() && s.key_id() == self.target.key.key_id()
            })
            .find(|s| {
                self.target
                    .key
                    .verify_signature(note.body(), s)
                    .is_ok_and(|c| c.timestamp == cosigned.timestamp)
            })
            .map(|s| s.to_line())
            .ok_or_else(|| bad("the cosignature vanished".into()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if cosigned.timestamp > now + 600 {
            return Err(bad(format!(
                "the cosignature is dated {} s in the future",
                cosigned.timestamp - now
            )));
        }
        self.held = Some(TreePosition::of(checkpoint).map_err(|e| Failed::final_(None, e))?);
        Ok(WitnessedDetail {
            witness: self.target.key.to_string(),
            size: checkpoint.size,
            root: checkpoint.root.clone(),
            cosignature: line.trim_end().to_owned(),
            timestamp: cosigned.timestamp,
        })
    }
}

/// A witness's answer, at most 64 KiB of it.
async fn read_bounded(mut response: reqwest::Response) -> Result<String, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| without_url(&e))? {
        if body.len() + chunk.len() > 64 * 1024 {
            return Err("longer than 64 KiB".into());
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "not UTF-8".into())
}

/// The first line of a refusal, short and printable, for the record.
fn first_line(body: &str) -> String {
    let line = body.lines().next().unwrap_or("").trim();
    let mut out: String = line.chars().filter(|c| !c.is_control()).take(200).collect();
    if out.is_empty() {
        out.push_str("(no reason given)");
    }
    out
}

/// reqwest errors name the URL; the record already does.
fn without_url(e: &reqwest::Error) -> String {
    let mut e = e.to_string();
    if let Some(i) = e.find(" for url (") {
        e.truncate(i);
    }
    e
}
