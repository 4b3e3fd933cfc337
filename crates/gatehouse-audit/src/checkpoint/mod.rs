//! Signed checkpoints over the log's Merkle tree (RFC 9162 hashing, C2SP `tlog-checkpoint`).
//!
//! * Leaf `i` is `SHA-256(0x00 || h)` where `h` is the 32-byte `hash` of the record with
//!   `seq = i + 1`: the record's own hash already covers every byte of it.
//! * A checkpoint is an `audit.checkpoint` record whose detail holds the tree size it signs,
//!   the root (hex) and the signed note. It signs the records before it: its size is at most
//!   its own `seq - 1`, and at least `seq - 1 - MAX_GAP` (records other sessions appended
//!   while it was being signed).
//! * The latest checkpoint is also kept outside the audit directory, in the state file beside
//!   the signing key ([`CheckpointState`]). A log cut or rewritten below it is refused at
//!   start and reported by verify, even when the checkpoint records themselves were removed.

pub mod check;
pub mod leaves;
pub(crate) mod resume;
mod state;
pub mod witnessed;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_tlog::{Checkpoint, Hash, Signer};
use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind, Outcome, What};
use crate::record::HashHex;

pub use check::{CheckpointFault, CheckpointSummary};
pub use leaves::{advance, each_of_kind, read_leaves, TreePosition};
pub use resume::Resumption;
pub(crate) use state::parse_hash;
pub use state::{CheckpointState, StateError};
pub use witnessed::{witness_summary, KeyWitnessed, WitnessSummary};

/// The most records a checkpoint record may follow the size it signs by. The writer skips a
/// checkpoint rather than write one further behind; verifiers keep this many recent roots.
pub const MAX_GAP: u64 = 65_536;

/// How the writer checkpoints.
#[derive(Clone)]
pub struct CheckpointOptions {
    /// The checkpoint origin line (the log's name); also the signing key's name.
    pub origin: String,
    pub signer: Arc<Signer>,
    /// Where the latest checkpoint is kept, outside the audit directory.
    pub state_path: PathBuf,
    /// A checkpoint at least this often while records arrive.
    pub interval: Duration,
    /// And after this many records.
    pub every: u64,
}

impl std::fmt::Debug for CheckpointOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointOptions")
            .field("origin", &self.origin)
            .field("key", &self.signer.verifier().to_string())
            .field("state_path", &self.state_path)
            .field("interval", &self.interval)
            .field("every", &self.every)
            .finish()
    }
}

/// The leaf hash of a record, from its stored `hash`.
pub fn leaf_of(hash: &HashHex) -> Hash {
    gatehouse_tlog::leaf_hash(&hash.digest())
}

/// What an `audit.checkpoint` record's detail holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointDetail {
    /// Records covered: `seq` 1 through `size`.
    pub size: u64,
    /// The tree root, hex (the note carries it in base64).
    pub root: String,
    /// The C2SP signed note.
    pub note: String,
}

impl CheckpointDetail {
    /// Reads the detail of an `audit.checkpoint` record.
    pub fn of(event: &Event) -> Result<Self, String> {
        let detail = event
            .what
            .detail
            .clone()
            .ok_or_else(|| "audit.checkpoint record has no detail".to_owned())?;
        serde_json::from_value(detail).map_err(|e| format!("audit.checkpoint detail: {e}"))
    }
}

/// A signed checkpoint as the writer makes it.
pub(crate) struct Signed {
    pub checkpoint: Checkpoint,
    pub note: String,
}

/// Signs the tree at `size` with `root`.
pub(crate) fn sign(options: &CheckpointOptions, size: u64, root: Hash) -> Result<Signed, String> {
    let checkpoint = Checkpoint {
        origin: options.origin.clone(),
        size,
        root,
        extensions: Vec::new(),
    };
    let note = checkpoint
        .sign(&options.signer)
        .map_err(|e| format!("cannot sign checkpoint: {e}"))?
        .to_text();
    Ok(Signed { checkpoint, note })
}

/// The `audit.checkpoint` event for a signed checkpoint.
pub(crate) fn event(signed: &Signed) -> Event {
    let mut event = Event::now(EventKind::AuditCheckpoint, Outcome::success());
    let detail = CheckpointDetail {
        size: signed.checkpoint.size,
        root: hex::encode(signed.checkpoint.root),
        note: signed.note.clone(),
    };
    event.what = What {
        resource: Some(signed.checkpoint.origin.clone()),
        detail: serde_json::to_value(detail).ok(),
        ..What::default()
    };
    event
}
