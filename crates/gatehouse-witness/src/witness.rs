//! The witness: for each log it knows, the latest checkpoint it cosigned, advanced only by a
//! checkpoint signed by the log and proven consistent with it.
//!
//! The check of the old size and the update of the kept state happen under one lock, and the
//! state is on disk before the cosignature is returned (the spec's rule: a witness that
//! answered must never roll back, not even across a crash).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use gatehouse_tlog::{verify_consistency, Checkpoint, Cosigner, SignedNote, Verifier};
use serde::{Deserialize, Serialize};

use crate::request::{AddCheckpoint, RequestError};

/// What the witness keeps for one log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seen {
    pub size: u64,
    /// Hex.
    pub root: String,
    /// When it was cosigned (POSIX seconds).
    pub time: u64,
}

/// The state file (JSON): origin → latest cosigned checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    logs: BTreeMap<String, Seen>,
}

/// The answer to one `add-checkpoint` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200: the cosignature lines.
    Cosigned(String),
    /// 400: the request is malformed, or its old size is beyond the checkpoint's.
    BadRequest(String),
    /// 403: no signature by a key trusted for the origin verifies.
    Forbidden,
    /// 404: the origin is not a log this witness is configured for.
    UnknownOrigin,
    /// 409 with the witness's size: the log's idea of what was cosigned is out of date.
    WrongOldSize(u64),
    /// 409: same size as cosigned before, another root (a fork).
    RootMismatch,
    /// 422: the consistency proof does not hold (a fork or a rewritten log).
    Inconsistent(String),
    /// 500: the state could not be kept, so nothing was cosigned.
    Unavailable(String),
}

impl Answer {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Answer::Cosigned(_) => 200,
            Answer::BadRequest(_) => 400,
            Answer::Forbidden => 403,
            Answer::UnknownOrigin => 404,
            Answer::WrongOldSize(_) | Answer::RootMismatch => 409,
            Answer::Inconsistent(_) => 422,
            Answer::Unavailable(_) => 500,
        }
    }
}

/// Why a witness could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("cannot read the witness state {}: {why}", path.display())]
    State { path: PathBuf, why: String },
    #[error("the witness state {} does not exist: a witness that forgot what it cosigned would cosign a rolled-back log; restore it, or start with --init for a new witness", path.display())]
    Missing { path: PathBuf },
    #[error("the witness state {} is in use by another witness process", path.display())]
    Locked { path: PathBuf },
}

/// Whether a missing state file may be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// The state must exist (the normal start).
    Existing,
    /// A new witness: create an empty state if there is none.
    CreateIfMissing,
}

/// A witness for a fixed set of logs.
pub struct Witness {
    /// Held for the witness's life: one process per state file.
    _lock: std::fs::File,
    cosigner: Cosigner,
    /// Origin → keys trusted to sign its checkpoints. A log's key name is its origin.
    logs: HashMap<String, Vec<Verifier>>,
    state_path: PathBuf,
    state: Mutex<State>,
}

impl Witness {
    /// A witness that cosigns with `cosigner` for logs signed by `logs`, keeping what it
    /// cosigned in `state_path` (read now if it exists).
    pub fn open(
        cosigner: Cosigner,
        logs: Vec<Verifier>,
        state_path: &Path,
        init: Init,
    ) -> Result<Self, WitnessError> {
        let failed = |e: std::io::Error| WitnessError::State {
            path: state_path.to_path_buf(),
            why: e.to_string(),
        };
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(sibling(state_path, ".lock"))
            .map_err(failed)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(WitnessError::Locked {
                    path: state_path.to_path_buf(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(failed(e)),
        }
        let state = match std::fs::read(state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| WitnessError::State {
                path: state_path.to_path_buf(),
                why: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match init {
                Init::CreateIfMissing => State::default(),
                Init::Existing => {
                    return Err(WitnessError::Missing {
                        path: state_path.to_path_buf(),
                    })
                }
            },
            Err(e) => return Err(failed(e)),
        };
        let mut by_origin: HashMap<String, Vec<Verifier>> = HashMap::new();
        for key in logs {
            by_origin
                .entry(key.name().to_owned())
                .or_default()
                .push(key);
        }
        let witness = Self {
            _lock: lock,
            cosigner,
            logs: by_origin,
            state_path: state_path.to_path_buf(),
            state: Mutex::new(state),
        };
        // A new witness writes its (empty) state now, so the next start finds it.
        if init == Init::CreateIfMissing && !state_path.exists() {
            witness
                .store(&witness.lock().clone())
                .map_err(|why| WitnessError::State {
                    path: state_path.to_path_buf(),
                    why,
                })?;
        }
        Ok(witness)
    }

    /// The witness's public key.
    pub fn verifier(&self) -> gatehouse_tlog::CosignatureVerifier {
        self.cosigner.verifier()
    }

    /// What the witness last cosigned for `origin`.
    pub fn seen(&self, origin: &str) -> Option<Seen> {
        self.lock().logs.get(origin).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Handles one request body at time `now` (POSIX seconds).
    pub fn add_checkpoint(&self, body: &[u8], now: u64) -> Answer {
        let request = match AddCheckpoint::parse(body) {
            Ok(r) => r,
            Err(e) => return Answer::BadRequest(e.to_string()),
        };
        let note = match SignedNote::parse(&request.checkpoint) {
            Ok(n) => n,
            Err(e) => return Answer::BadRequest(format!("checkpoint: {e}")),
        };
        let checkpoint = match Checkpoint::parse(note.body()) {
            Ok(c) => c,
            Err(e) => return Answer::BadRequest(format!("checkpoint: {e}")),
        };
        let Some(keys) = self.logs.get(&checkpoint.origin) else {
            return Answer::UnknownOrigin;
        };
        if !keys.iter().any(|key| note.verify(key).is_ok()) {
            return Answer::Forbidden;
        }
        if request.old_size > checkpoint.size {
            return Answer::BadRequest(format!(
                "old size {} is beyond the checkpoint's size {}",
                request.old_size, checkpoint.size
            ));
        }
        // Nothing to prove from an empty tree, or between equal sizes: a proof must be empty.
        if (request.old_size == 0 || request.old_size == checkpoint.size)
            && !request.proof.is_empty()
        {
            return Answer::BadRequest(RequestError::ProofLine(1).to_string());
        }
        let mut state = self.lock();
        let current = state.logs.get(&checkpoint.origin);
        let current_size = current.map_or(0, |s| s.size);
        if request.old_size != current_size {
            return Answer::WrongOldSize(current_size);
        }
        let new_root = hex::encode(checkpoint.root);
        if let Some(seen) = current {
            if request.old_size == checkpoint.size {
                if seen.root != new_root {
                    return Answer::RootMismatch;
                }
            } else {
                let Some(old_root) = parse_root(&seen.root) else {
                    return Answer::Unavailable("the kept root is not hex".into());
                };
                if let Err(e) = verify_consistency(
                    seen.size,
                    checkpoint.size,
                    &old_root,
                    &checkpoint.root,
                    &request.proof,
                ) {
                    return Answer::Inconsistent(e.to_string());
                }
            }
        }
        let line = match self.cosigner.cosign(note.body(), now) {
            Ok(line) => line.to_line(),
            Err(e) => return Answer::Unavailable(format!("cannot cosign: {e}")),
        };
        // The same tree again: cosigned afresh, but nothing new to keep (and no fsync for
        // anyone who replays the public latest checkpoint).
        if current.is_some_and(|seen| seen.size == checkpoint.size && seen.root == new_root) {
            return Answer::Cosigned(line);
        }
        let mut next = state.clone();
        next.logs.insert(
            checkpoint.origin.clone(),
            Seen {
                size: checkpoint.size,
                root: new_root,
                time: now,
            },
        );
        if let Err(e) = self.store(&next) {
            return Answer::Unavailable(e);
        }
        *state = next;
        Answer::Cosigned(line)
    }

    fn store(&self, state: &State) -> Result<(), String> {
        let mut bytes = serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        let tmp = sibling(&self.state_path, ".tmp");
        gatehouse_audit::durable_file::replace(&self.state_path, &tmp, &bytes)
            .map_err(|e| format!("cannot keep the witness state: {e}"))
    }
}

/// `path` with `suffix` added to its file name (`state.json` → `state.json.tmp`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn parse_root(text: &str) -> Option<gatehouse_tlog::Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}
