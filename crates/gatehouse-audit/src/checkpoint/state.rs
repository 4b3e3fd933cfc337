//! The latest checkpoint, kept outside the audit directory so that cutting or rewriting the
//! log (and its checkpoint records) is still noticed.

use std::path::{Path, PathBuf};

use gatehouse_tlog::{Checkpoint, Frontier, Hash, Verifier};
use serde::{Deserialize, Serialize};

use crate::record::HashHex;

/// The state file's contents (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointState {
    /// The signed note; `size` and `root` below repeat what it signs.
    pub note: String,
    pub size: u64,
    /// Hex.
    pub root: String,
    /// The `hash` of record `size` (64 zeros for an empty tree).
    pub head: String,
    /// Byte offset in the log just after record `size`.
    pub offset: u64,
    /// The tree's frontier at `size` (hex), to continue without rehashing the whole log.
    pub frontier: Vec<String>,
    /// `seq` of the `audit.checkpoint` record that carries this checkpoint.
    pub record_seq: u64,
    /// Written at a clean stop: the log should end with record `record_seq`.
    #[serde(rename = "final")]
    pub is_final: bool,
}

/// Why the state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a checkpoint state file: {why}", path.display())]
    Malformed { path: PathBuf, why: String },
    #[error("the checkpoint in {} is not signed by key {key}: {why}", path.display())]
    BadSignature {
        path: PathBuf,
        key: String,
        why: String,
    },
}

/// A state file that passed its checks.
#[derive(Debug, Clone)]
pub struct Verified {
    pub state: CheckpointState,
    pub checkpoint: Checkpoint,
    pub frontier: Frontier,
    pub head: HashHex,
}

impl CheckpointState {
    /// Reads the state file; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, StateError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Malformed {
                path: path.to_path_buf(),
                why: e.to_string(),
            })
    }

    /// Checks the signature and that the fields agree with what it signs and with each other.
    pub fn verify(&self, path: &Path, verifier: &Verifier) -> Result<Verified, StateError> {
        let malformed = |why: String| StateError::Malformed {
            path: path.to_path_buf(),
            why,
        };
        let checkpoint =
            Checkpoint::open(&self.note, verifier).map_err(|e| StateError::BadSignature {
                path: path.to_path_buf(),
                key: verifier.to_string(),
                why: e.to_string(),
            })?;
        if checkpoint.size != self.size || hex::encode(checkpoint.root) != self.root {
            return Err(malformed(
                "size or root differs from the signed note".into(),
            ));
        }
        let nodes = self
            .frontier
            .iter()
            .map(|h| parse_hash(h).ok_or_else(|| malformed("frontier is not hex".into())))
            .collect::<Result<Vec<Hash>, _>>()?;
        let frontier =
            Frontier::from_parts(self.size, nodes).map_err(|e| malformed(e.to_string()))?;
        if frontier.root() != checkpoint.root {
            return Err(malformed(
                "the frontier does not hash to the signed root".into(),
            ));
        }
        let head = HashHex::parse(self.head.as_bytes())
            .ok_or_else(|| malformed("head is not 64 lowercase hex".into()))?;
        if self.size == 0 && self.offset != 0 {
            return Err(malformed("an empty tree ends at offset 0".into()));
        }
        Ok(Verified {
            state: self.clone(),
            checkpoint,
            frontier,
            head,
        })
    }

    /// Writes the file atomically and durably: a temporary file, synced, renamed over the old
    /// one, and the directory synced.
    pub fn store(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("tmp");
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| StateError::Malformed {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        bytes.push(b'\n');
        crate::durable_file::replace(path, &tmp, &bytes).map_err(io)
    }
}

pub(crate) fn parse_hash(text: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}
