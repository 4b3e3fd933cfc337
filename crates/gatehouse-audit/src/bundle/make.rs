//! Making a bundle from a verified log.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use gatehouse_tlog::tree::{consistency_proof, inclusion_proof};
use gatehouse_tlog::{range_proof, Checkpoint, Hash, KeyId, NoteSignature, SignedNote, Verifier};
use time::OffsetDateTime;

use super::archive::{file_sha256, Writer};
use super::summary::{scan, Scanned};
use super::*;
use crate::checkpoint::{leaf_of, CheckpointDetail};
use crate::event::EventKind;
use crate::export::{export, ExportFormat};
use crate::lines::{self, Line};
use crate::proof::{InclusionProof, INCLUSION_FORMAT};
use crate::record::{self, MAX_LINE_LEN};
use crate::timefmt::Rfc3339Nanos;
use crate::verify::{verify_with, VerifyOptions};

/// Which records go in: from the first with a time at or after `since` up to, not including,
/// the first after it with a time at or after `until` — every record in between, so the run is
/// contiguous and its chain checkable (one whose clock stepped outside the range is kept, not
/// hidden).
#[derive(Debug, Clone, Copy, Default)]
pub struct Selection {
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
}

/// Writes the bundle of `selection` from the log at `log` to `out`; the log is verified first
/// (with `options`, which must name the key its checkpoints are signed with).
pub fn make(
    log: &Path,
    options: &VerifyOptions,
    selection: &Selection,
    out: &Path,
) -> Result<Manifest, BundleError> {
    let verifier = options.verifier.as_ref().ok_or_else(|| {
        BundleError::Malformed("no public key to check the log's checkpoints with".into())
    })?;
    verify_with(log, options).map_err(|e| BundleError::LogNotIntact(e.to_string()))?;
    let dir = tempfile::tempdir().map_err(|e| BundleError::io("a temporary directory", e))?;
    let records_path = dir.path().join(RECORDS);
    let located = locate(log, selection, verifier, &records_path)?;
    let anchor = located.anchor;
    let (first, last) = (located.first, located.last);
    let scanned = scan(&records_path, verifier)?;
    if (scanned.summary.first_seq, scanned.summary.last_seq) != (first, last) {
        return Err(BundleError::LogNotIntact(
            "the log changed while the bundle was made".into(),
        ));
    }
    let csv_path = dir.path().join(RECORDS_CSV);
    write_csv(&records_path, &csv_path)?;

    let size = anchor.size;
    let leaves = &located.leaves;
    let tree_err = |e: gatehouse_tlog::TreeError| BundleError::LogNotIntact(e.to_string());
    let range = range_proof(leaves, first - 1, last, size).map_err(tree_err)?;
    let prove = |seq: u64, line: &str| -> Result<Vec<u8>, BundleError> {
        let path = inclusion_proof(leaves, seq - 1, size).map_err(tree_err)?;
        let proof = InclusionProof {
            format: INCLUSION_FORMAT.into(),
            record: line.to_owned(),
            seq,
            tree_size: size,
            proof: path.iter().map(hex::encode).collect(),
            checkpoint: anchor.note.clone(),
        };
        serde_json::to_vec_pretty(&proof).map_err(|e| BundleError::io("a proof", e))
    };
    // Proofs of the policies the range's statements name, loaded before it.
    let named: BTreeSet<&str> = scanned
        .summary
        .policies
        .iter()
        .map(|p| p.sha256.as_str())
        .collect();
    let mut policy_proofs = Vec::new();
    for (sha256, (seq, line)) in &located.policies_before {
        if named.contains(sha256.as_str()) {
            policy_proofs.push((policy_proof_name(*seq), prove(*seq, line)?));
        }
    }

    let witnessed = located
        .witnessed
        .as_ref()
        .map(|w| witnessed_entry(w, leaves, size))
        .transpose()?;

    let created = OffsetDateTime::now_utc();
    let manifest = Manifest {
        format: FORMAT.into(),
        created: Rfc3339Nanos(created).to_string(),
        since: selection.since.map(|t| Rfc3339Nanos(t).to_string()),
        until: selection.until.map(|t| Rfc3339Nanos(t).to_string()),
        origin: anchor.origin.clone(),
        tree: Tree {
            size,
            root: anchor.root.clone(),
            range_proof: range.iter().map(hex::encode).collect(),
        },
        witnessed: witnessed.as_ref().map(|(_, w)| w.clone()),
        summary: scanned.summary.clone(),
        files: Files {
            records_jsonl_sha256: file_sha256(&records_path)?,
            records_csv_sha256: file_sha256(&csv_path)?,
            policy_proofs: policy_proofs.iter().map(|(n, _)| n.clone()).collect(),
        },
    };
    let manifest_json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| BundleError::io("the manifest", e))?;

    let mut writer = Writer::create(out, created.unix_timestamp().max(0) as u64)?;
    writer.add_bytes(README, readme::render(&manifest).as_bytes())?;
    writer.add_bytes(MANIFEST, &manifest_json)?;
    writer.add_bytes(PUBLIC_KEY, format!("{}\n", verifier.to_vkey()).as_bytes())?;
    writer.add_bytes(CHECKPOINT, anchor.note.as_bytes())?;
    if let Some((text, _)) = &witnessed {
        writer.add_bytes(WITNESSED, text.as_bytes())?;
    }
    let Scanned {
        first_line,
        last_line,
        ..
    } = &scanned;
    writer.add_bytes(FIRST_PROOF, &prove(first, first_line)?)?;
    writer.add_bytes(LAST_PROOF, &prove(last, last_line)?)?;
    for (name, bytes) in &policy_proofs {
        writer.add_bytes(name, bytes)?;
    }
    writer.add_file(RECORDS, &records_path)?;
    writer.add_file(RECORDS_CSV, &csv_path)?;
    writer.finish()?;
    Ok(manifest)
}

/// A checkpoint found in the log (the latest one is the tree every bundle record is proven in).
#[derive(Clone)]
struct Anchor {
    size: u64,
    root: String,
    note: String,
    origin: String,
}

/// What the one pass over the log finds.
struct Located {
    leaves: Vec<Hash>,
    anchor: Anchor,
    first: u64,
    last: u64,
    /// Per policy hash, its last `policy.loaded` record before the range: (seq, line).
    policies_before: BTreeMap<String, (u64, String)>,
    /// The latest checkpoint witnesses cosigned, with their cosignature lines.
    witnessed: Option<(Anchor, Vec<String>)>,
}

/// Reads the log once: its leaves, the latest checkpoint, the range's bounds and the policies
/// loaded before it, copying the range's records to `to` on the way (cut back to the range's
/// last record once that is known).
fn locate(
    log: &Path,
    selection: &Selection,
    verifier: &Verifier,
    to: &Path,
) -> Result<Located, BundleError> {
    let file = File::open(log).map_err(|e| BundleError::io(log.display(), e))?;
    let mut reader = BufReader::with_capacity(1024 * 1024, file);
    let out = File::create(to).map_err(|e| BundleError::io(to.display(), e))?;
    let mut out = BufWriter::with_capacity(1024 * 1024, out);
    let write_err = |e: std::io::Error| BundleError::io(to.display(), e);
    // The end offset in `to` of each record copied, to cut the copy back.
    let mut ends: Vec<u64> = Vec::new();
    let mut copied = 0u64;
    let mut line = Vec::new();
    let mut leaves = Vec::new();
    let mut anchor = None;
    let (mut first, mut last) = (None::<u64>, None::<u64>);
    let mut ended = false;
    let mut policies_before = BTreeMap::new();
    // Every checkpoint by (size, root), and the cosignature lines recorded for each.
    let mut checkpoints: BTreeMap<(u64, String), Anchor> = BTreeMap::new();
    let mut cosigned: BTreeMap<(u64, String), Vec<Cosignature>> = BTreeMap::new();
    let io = |e: std::io::Error| BundleError::io(log.display(), e);
    while let Line::Complete = lines::read_line(&mut reader, &mut line, MAX_LINE_LEN).map_err(io)? {
        // The log was verified just before, hashes included: parsing is enough.
        let record = record::parse(&line).map_err(|e| BundleError::LogNotIntact(e.to_string()))?;
        leaves.push(leaf_of(&record.hash));
        let event = &record.event;
        if first.is_none() && selection.since.is_none_or(|s| event.time >= s) {
            first = Some(record.seq);
        }
        if first.is_some() && !ended {
            if selection.until.is_none_or(|u| event.time < u) {
                last = Some(record.seq);
                out.write_all(&line)
                    .and_then(|()| out.write_all(b"\n"))
                    .map_err(write_err)?;
                copied += line.len() as u64 + 1;
                ends.push(copied);
            } else {
                ended = true;
            }
        }
        match event.kind {
            EventKind::PolicyLoaded if first.is_none() => {
                if let Some(sha) = event
                    .what
                    .detail
                    .as_ref()
                    .and_then(|d| d.get("sha256"))
                    .and_then(|v| v.as_str())
                {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    policies_before.insert(sha.to_owned(), (record.seq, text));
                }
            }
            EventKind::AuditCheckpoint => {
                let detail = CheckpointDetail::of(event).map_err(BundleError::LogNotIntact)?;
                let signed = Checkpoint::open(&detail.note, verifier)
                    .map_err(|e| BundleError::LogNotIntact(e.to_string()))?;
                let found = Anchor {
                    size: detail.size,
                    root: detail.root,
                    note: detail.note,
                    origin: signed.origin,
                };
                checkpoints.insert((found.size, found.root.clone()), found.clone());
                anchor = Some(found);
            }
            EventKind::AuditWitnessed => {
                if let Some((size, root, line, by)) = cosignature_of(event) {
                    // One line per witness key, the latest: a witness asked again cosigns again.
                    let lines = cosigned.entry((size, root)).or_default();
                    lines.retain(|(other, _)| *other != by);
                    lines.push((by, line));
                }
            }
            _ => {}
        }
    }
    let anchor = anchor.ok_or(BundleError::NoCheckpoint)?;
    let witnessed = cosigned
        .into_iter()
        .rev()
        .filter(|((size, _), _)| *size <= anchor.size)
        .find_map(|(key, lines)| {
            // A note carries at most MAX_SIGNATURES lines, the log's own among them.
            let lines = lines
                .into_iter()
                .map(|(_, line)| line)
                .take(gatehouse_tlog::note::MAX_SIGNATURES - 1)
                .collect();
            checkpoints.remove(&key).map(|c| (c, lines))
        });
    let (Some(first), Some(mut last)) = (first, last) else {
        return Err(BundleError::Empty);
    };
    if last > anchor.size {
        if selection.until.is_some() {
            return Err(BundleError::NotCovered {
                last,
                covered: anchor.size,
            });
        }
        last = anchor.size;
    }
    if last < first {
        return Err(BundleError::NotCovered {
            last: first,
            covered: anchor.size,
        });
    }
    let file = out.into_inner().map_err(|e| write_err(e.into_error()))?;
    let keep = ends
        .get((last - first) as usize)
        .copied()
        .ok_or_else(|| BundleError::LogNotIntact("seq does not count records".into()))?;
    file.set_len(keep).map_err(write_err)?;
    Ok(Located {
        leaves,
        anchor,
        first,
        last,
        policies_before,
        witnessed,
    })
}

/// A recorded cosignature line and the key (name, key ID) it is by.
type Cosignature = ((String, KeyId), String);

/// `(size, root, cosignature line, its key)` from an `audit.witnessed` record.
fn cosignature_of(event: &crate::event::Event) -> Option<(u64, String, String, (String, KeyId))> {
    let detail = event.what.detail.as_ref()?;
    let size = detail.get("size")?.as_u64()?;
    let root = detail.get("root")?.as_str()?.to_owned();
    let line = detail.get("cosignature")?.as_str()?.trim_end().to_owned();
    // Only well-formed lines; whether they verify is for the examiner's witness keys.
    let signature = NoteSignature::parse(&line).ok()?;
    let by = (signature.name().to_owned(), signature.key_id());
    Some((size, root, line, by))
}

/// `witnessed.txt` (the note with its cosignature lines) and the manifest's entry for it.
fn witnessed_entry(
    witnessed: &(Anchor, Vec<String>),
    leaves: &[Hash],
    size: u64,
) -> Result<(String, Witnessed), BundleError> {
    let (checkpoint, lines) = witnessed;
    let mut text = checkpoint.note.clone();
    for line in lines {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    let note = SignedNote::parse(&text)
        .map_err(|e| BundleError::LogNotIntact(format!("a recorded cosignature: {e}")))?;
    let proof = consistency_proof(leaves, checkpoint.size, size)
        .map_err(|e| BundleError::LogNotIntact(e.to_string()))?;
    let own = note.signatures().len() - lines.len();
    let cosigners = note.signatures()[own..]
        .iter()
        .map(|s| s.name().to_owned())
        .collect();
    Ok((
        text,
        Witnessed {
            size: checkpoint.size,
            root: checkpoint.root.clone(),
            consistency_proof: proof.iter().map(hex::encode).collect(),
            cosigners,
        },
    ))
}

fn write_csv(records: &Path, to: &Path) -> Result<(), BundleError> {
    let mut out = File::create(to).map_err(|e| BundleError::io(to.display(), e))?;
    export(records, None, None, ExportFormat::Csv, &mut out)
        .map_err(|e| BundleError::io(to.display(), e))?;
    Ok(())
}
