//! What the log says its witnesses did: every `audit.witnessed` record's cosignature checked
//! against the checkpoint it names and the witness keys an examiner gives, and the
//! `audit.witness_failed` records counted.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use gatehouse_tlog::{CosignatureVerifier, SignedNote};

use super::{each_of_kind, CheckpointDetail};
use crate::event::EventKind;

/// How many recent checkpoints are kept to match cosignatures against: witnesses answer within
/// seconds of a checkpoint, and this spans hours at the default cadence.
const RECENT_CHECKPOINTS: usize = 4096;

/// One witness key given, and what its cosignatures in the log showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWitnessed {
    pub key: String,
    pub verified: u64,
    /// The largest tree it cosigned: (size, the witness's timestamp).
    pub latest: Option<(u64, u64)>,
}

/// The witnesses' records in a log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WitnessSummary {
    /// `audit.witnessed` records.
    pub cosignatures: u64,
    /// Per key given.
    pub keys: Vec<KeyWitnessed>,
    /// Witness keys named in the log but not given (not checked).
    pub unchecked: Vec<String>,
    /// Cosignatures by a given key that do not verify, or name a checkpoint the log does not
    /// hold nearby: (seq, witness, why). Any of these is false evidence in the log.
    pub invalid: Vec<(u64, String, String)>,
    /// `audit.witness_failed` records, and the latest: (seq, reason).
    pub failures: u64,
    pub latest_failure: Option<(u64, String)>,
}

/// Reads the log at `path` once for its checkpoints and its witnesses' records.
pub fn witness_summary(
    path: &Path,
    keys: &[CosignatureVerifier],
) -> Result<WitnessSummary, String> {
    let mut summary = WitnessSummary {
        keys: keys
            .iter()
            .map(|k| KeyWitnessed {
                key: k.to_string(),
                verified: 0,
                latest: None,
            })
            .collect(),
        ..WitnessSummary::default()
    };
    let vkeys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let mut notes: BTreeMap<(u64, String), String> = BTreeMap::new();
    let mut order: VecDeque<(u64, String)> = VecDeque::new();
    let kinds = [
        EventKind::AuditCheckpoint,
        EventKind::AuditWitnessed,
        EventKind::AuditWitnessFailed,
    ];
    each_of_kind(path, &kinds, |rec| match rec.event.kind {
        EventKind::AuditCheckpoint => {
            if let Ok(detail) = CheckpointDetail::of(&rec.event) {
                let at = (detail.size, detail.root);
                order.push_back(at.clone());
                notes.insert(at, detail.note);
                if order.len() > RECENT_CHECKPOINTS {
                    if let Some(old) = order.pop_front() {
                        notes.remove(&old);
                    }
                }
            }
        }
        EventKind::AuditWitnessed => {
            summary.cosignatures += 1;
            let detail = rec.event.what.detail.as_ref();
            let field = |name: &str| detail.and_then(|d| d.get(name));
            let witness = field("witness").and_then(|v| v.as_str()).unwrap_or("");
            let Some(i) = vkeys.iter().position(|k| k == witness) else {
                if !summary.unchecked.iter().any(|u| u == witness) {
                    summary.unchecked.push(witness.to_owned());
                }
                return;
            };
            let size = field("size").and_then(|v| v.as_u64()).unwrap_or(0);
            let root = field("root").and_then(|v| v.as_str()).unwrap_or("");
            let line = field("cosignature").and_then(|v| v.as_str()).unwrap_or("");
            let mut invalid = |why: String| {
                summary
                    .invalid
                    .push((rec.seq, keys[i].name().to_owned(), why));
            };
            let Some(note) = notes.get(&(size, root.to_owned())) else {
                invalid(format!(
                    "it names a checkpoint of size {size} the log does not hold before it"
                ));
                return;
            };
            let cosigned = SignedNote::parse(format!("{note}{}\n", line.trim_end()))
                .map_err(|e| e.to_string())
                .and_then(|n| keys[i].verify(&n).map_err(|e| e.to_string()));
            match cosigned {
                Ok(c) => {
                    let k = &mut summary.keys[i];
                    k.verified += 1;
                    if k.latest.is_none_or(|(s, _)| size >= s) {
                        k.latest = Some((size, c.timestamp));
                    }
                }
                Err(why) => invalid(format!("the cosignature does not verify: {why}")),
            }
        }
        EventKind::AuditWitnessFailed => {
            summary.failures += 1;
            let reason = rec.event.outcome.reason.clone().unwrap_or_default();
            summary.latest_failure = Some((rec.seq, reason));
        }
        _ => {}
    })?;
    Ok(summary)
}
