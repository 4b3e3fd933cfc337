//! Signed checkpoints: what an attacker who can rewrite the audit file (but not the signing
//! key, nor the checkpoint kept beside it) can and cannot get past `verify` and the writer.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{fast, lines, log_path, statement};
use gatehouse_audit::checkpoint::{
    CheckpointFault, CheckpointOptions, CheckpointState, Resumption,
};
use gatehouse_audit::record::{self, HashHex, GENESIS_PREV};
use gatehouse_audit::{
    verify_with, AuditError, AuditLog, Event, EventKind, Options, VerifyFailure, VerifyOptions,
    VerifyReason,
};
use gatehouse_tlog::{Checkpoint, Signer, Verifier};

const ORIGIN: &str = "gatehouse.test/audit";

struct Site {
    _tmp: tempfile::TempDir,
    audit: PathBuf,
    state: PathBuf,
    signer: Arc<Signer>,
}

impl Site {
    fn new() -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let audit = tmp.path().join("audit");
        let keys = tmp.path().join("signing");
        std::fs::create_dir_all(&keys).unwrap();
        Site {
            audit,
            state: keys.join("checkpoint.json"),
            signer: Arc::new(Signer::from_seed(ORIGIN, &[7u8; 32]).unwrap()),
            _tmp: tmp,
        }
    }

    fn options(&self) -> Options {
        Options {
            checkpoints: Some(CheckpointOptions {
                origin: ORIGIN.into(),
                signer: Arc::clone(&self.signer),
                state_path: self.state.clone(),
                interval: Duration::from_secs(3600),
                every: 10,
            }),
            ..fast()
        }
    }

    fn open(&self) -> Result<AuditLog, AuditError> {
        AuditLog::open(&self.audit, self.options())
    }

    /// Appends `n` statements (checkpoints every 10 records) and stops cleanly.
    fn write(&self, n: u64) {
        let log = self.open().unwrap();
        for i in 1..=n {
            log.append(statement(i)).unwrap();
            if i % 10 == 0 {
                // The count trigger wakes the checkpoint thread; let it sign before going on,
                // so that checkpoints land in the middle of the log, not only at its end.
                let before = log.stats().checkpoints;
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while log.stats().checkpoints == before && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        log.close().unwrap();
    }

    fn log(&self) -> PathBuf {
        log_path(&self.audit)
    }

    fn verifier(&self) -> Verifier {
        self.signer.verifier()
    }

    fn verify(&self) -> Result<gatehouse_audit::VerifyReport, VerifyFailure> {
        let state = CheckpointState::load(&self.state).unwrap().unwrap();
        verify_with(
            self.log(),
            &VerifyOptions {
                verifier: Some(self.verifier()),
                state: Some((self.state.clone(), state)),
            },
        )
    }

    /// Verification from the log alone (the checkpoint kept outside was lost too).
    fn verify_log_only(&self) -> Result<gatehouse_audit::VerifyReport, VerifyFailure> {
        verify_with(
            self.log(),
            &VerifyOptions {
                verifier: Some(self.verifier()),
                state: None,
            },
        )
    }
}

/// The log's events, in order.
fn events(path: &Path) -> Vec<Event> {
    lines(path)
        .iter()
        .map(|l| record::decode(&l[..l.len() - 1]).unwrap().event)
        .collect()
}

/// Writes `events` as a freshly numbered, correctly chained log: what an attacker with write
/// access to the file (but not the key) can produce.
fn write_chained(path: &Path, events: &[Event]) {
    let mut buf = Vec::new();
    let mut prev: HashHex = GENESIS_PREV;
    for (i, event) in events.iter().enumerate() {
        prev = record::encode(&mut buf, i as u64 + 1, &prev, event).unwrap();
    }
    std::fs::write(path, buf).unwrap();
}

fn checkpoint_fault(
    result: Result<gatehouse_audit::VerifyReport, VerifyFailure>,
) -> CheckpointFault {
    match result {
        Err(VerifyFailure::BadRecord {
            reason: VerifyReason::Checkpoint(fault),
            ..
        }) => fault,
        other => panic!("expected a checkpoint fault, got {other:?}"),
    }
}

fn state_failure(result: Result<gatehouse_audit::VerifyReport, VerifyFailure>) -> String {
    match result {
        Err(e @ VerifyFailure::State { .. }) => e.to_string(),
        other => panic!("expected a disagreement with the kept checkpoint, got {other:?}"),
    }
}

fn refused_at_start(site: &Site) -> String {
    match site.open() {
        Err(e @ AuditError::Inconsistent { .. }) => e.to_string(),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("the writer took a log that disagrees with its checkpoint"),
    }
}

#[test]
fn an_intact_log_verifies_with_its_checkpoints_signed_by_the_key() {
    let site = Site::new();
    site.write(45);
    let report = site.verify().unwrap();
    let cps = &report.checkpoints;
    assert!(cps.signatures_checked);
    assert!(cps.count >= 2, "checkpoints by count and at stop: {cps:?}");
    assert_eq!(cps.origin.as_deref(), Some(ORIGIN));
    let (last_seq, last_size) = cps.last.unwrap();
    assert_eq!(
        last_seq,
        report.last_seq.unwrap(),
        "the stop checkpoint is the last record"
    );
    assert_eq!(
        last_size,
        last_seq - 1,
        "and it covers everything before it"
    );
    // The kept checkpoint is the final one and says so.
    let state = CheckpointState::load(&site.state).unwrap().unwrap();
    assert!(state.is_final);
    assert_eq!(state.record_seq, last_seq);
    let opened = Checkpoint::open(&state.note, &site.verifier()).unwrap();
    assert_eq!(opened.size, last_size);
}

#[test]
fn restarts_continue_the_tree_and_every_checkpoint_stays_consistent() {
    let site = Site::new();
    for round in 0..4 {
        site.write(13 + round);
        let log = site.open().unwrap();
        assert!(
            // Only the final checkpoint record itself follows the size it signs.
            matches!(
                log.resumption(),
                Some(Resumption::FromCheckpoint { rehashed: 1, .. })
            ),
            "{:?}",
            log.resumption()
        );
        log.close().unwrap();
    }
    let report = site.verify().unwrap();
    assert!(report.checkpoints.count >= 8, "{:?}", report.checkpoints);
}

#[test]
fn a_kept_checkpoint_that_cannot_be_written_fails_that_checkpoint_only() {
    let site = Site::new();
    let log = site.open().unwrap();
    for i in 1..=3 {
        log.append(statement(i)).unwrap();
    }
    log.checkpoint_blocking().unwrap();
    // The state file's volume goes away (its directory removed).
    let keys = site.state.parent().unwrap().to_path_buf();
    std::fs::remove_dir_all(&keys).unwrap();
    log.append(statement(4)).unwrap();
    let err = log.checkpoint_blocking().unwrap_err().to_string();
    assert!(err.contains("checkpoint.json"), "{err}");
    // Records still go in: the chain and the tree do not depend on the kept copy.
    log.append(statement(5)).unwrap();
    std::fs::create_dir_all(&keys).unwrap();
    log.append(statement(6)).unwrap();
    let state = log.checkpoint_blocking().unwrap();
    // Signed over everything so far, the failed checkpoint's record included.
    assert_eq!(state.size, state.record_seq - 1);
    assert!(state.size >= 8, "{state:?}");
    log.close().unwrap();
    let report = site.verify().unwrap();
    assert!(report.checkpoints.count >= 3, "{:?}", report.checkpoints);
    // And the next start continues from the kept checkpoint.
    let again = site.open().unwrap();
    again.close().unwrap();
}

#[test]
fn a_checkpoint_on_demand_covers_what_was_written() {
    let site = Site::new();
    let log = site.open().unwrap();
    for i in 1..=3 {
        log.append(statement(i)).unwrap();
    }
    let state = log.checkpoint_blocking().unwrap();
    assert_eq!(state.size, 3);
    assert_eq!(state.record_seq, 4);
    assert!(!state.is_final);
    log.close().unwrap();
    site.verify().unwrap();
}

#[test]
fn a_cut_tail_is_detected_by_verify_and_refused_at_start() {
    let site = Site::new();
    site.write(40);
    let all = lines(&site.log());
    // Cut the last 8 records, the final checkpoint with them.
    let kept: Vec<u8> = all[..all.len() - 8].concat();
    std::fs::write(site.log(), kept).unwrap();
    // The log alone still chains and its remaining checkpoints hold...
    site.verify_log_only().unwrap();
    // ...but the checkpoint kept outside it names the loss.
    let why = state_failure(site.verify());
    assert!(why.contains("were removed"), "{why}");
    let why = refused_at_start(&site);
    assert!(why.contains("were removed"), "{why}");
}

#[test]
fn a_rewritten_suffix_with_a_recomputed_chain_is_detected() {
    let site = Site::new();
    site.write(40);
    let mut evs = events(&site.log());
    evs[24].what.statement = Some("SELECT 1".into());
    write_chained(&site.log(), &evs);
    // The chain is perfect again; the first checkpoint after the change is not.
    let fault = checkpoint_fault(site.verify_log_only());
    assert!(
        matches!(fault, CheckpointFault::RootMismatch { .. }),
        "{fault}"
    );
    refused_at_start(&site);

    // Dropping the checkpoint records that betray it leaves the one kept outside.
    let evs: Vec<Event> = evs
        .into_iter()
        .enumerate()
        .filter(|(i, e)| *i < 24 || e.kind != EventKind::AuditCheckpoint)
        .map(|(_, e)| e)
        .collect();
    write_chained(&site.log(), &evs);
    site.verify_log_only().unwrap();
    let why = state_failure(site.verify());
    assert!(
        why.contains("removed") || why.contains("rewritten"),
        "{why}"
    );
    refused_at_start(&site);
}

#[test]
fn a_forged_record_appended_with_a_correct_hash_is_detected() {
    let site = Site::new();
    site.write(20);
    let all = lines(&site.log());
    let last = record::decode(&all[all.len() - 1][..all[all.len() - 1].len() - 1]).unwrap();
    let mut buf = std::fs::read(site.log()).unwrap();
    let mut forged = statement(99);
    forged.what.statement = Some("GRANT ALL ON accounts TO mallory".into());
    record::encode(&mut buf, last.seq + 1, &last.hash, &forged).unwrap();
    std::fs::write(site.log(), buf).unwrap();
    let why = state_failure(site.verify());
    assert!(why.contains("not written by the gateway"), "{why}");
    let why = refused_at_start(&site);
    assert!(why.contains("not written by the gateway"), "{why}");
}

#[test]
fn a_reclassified_record_rechained_is_detected() {
    let site = Site::new();
    site.write(30);
    let mut evs = events(&site.log());
    evs[5].what.classification = Some("ddl".into());
    evs[5].outcome = gatehouse_audit::Outcome::failure("blocked");
    write_chained(&site.log(), &evs);
    let fault = checkpoint_fault(site.verify());
    assert!(
        matches!(fault, CheckpointFault::RootMismatch { size } if size >= 6),
        "{fault}"
    );
}

#[test]
fn a_deleted_middle_record_with_the_rest_renumbered_is_detected() {
    let site = Site::new();
    site.write(30);
    let mut evs = events(&site.log());
    evs.remove(3);
    write_chained(&site.log(), &evs);
    let fault = checkpoint_fault(site.verify());
    assert!(
        matches!(
            fault,
            CheckpointFault::Ahead {
                size: 10,
                available: 9
            }
        ),
        "the first checkpoint after the gap names it: {fault}"
    );
}

#[test]
fn a_checkpoint_signed_by_another_key_is_detected() {
    let site = Site::new();
    site.write(30);
    let mut evs = events(&site.log());
    let other = Signer::from_seed(ORIGIN, &[9u8; 32]).unwrap();
    // The last checkpoint: replacing an earlier one would also change the leaves that later
    // checkpoints sign, which they would report.
    let at = evs
        .iter()
        .rposition(|e| e.kind == EventKind::AuditCheckpoint)
        .unwrap();
    // Re-sign the very same tree with another key: only the signature is wrong.
    let detail = gatehouse_audit::checkpoint::CheckpointDetail::of(&evs[at]).unwrap();
    let note = gatehouse_tlog::SignedNote::parse(&detail.note).unwrap();
    let resigned = other.sign(note.body()).unwrap().to_text();
    let mut replaced = detail.clone();
    replaced.note = resigned;
    evs[at].what.detail = Some(serde_json::to_value(&replaced).unwrap());
    write_chained(&site.log(), &evs);
    let fault = checkpoint_fault(site.verify());
    assert!(
        matches!(fault, CheckpointFault::Signature { .. }),
        "{fault}"
    );
    // Without the key, the same log passes the structural checks: the key is what proves it.
    verify_with(site.log(), &VerifyOptions::default()).unwrap();
}

#[test]
fn a_kept_checkpoint_signed_by_another_key_is_refused() {
    let site = Site::new();
    site.write(12);
    let mut state = CheckpointState::load(&site.state).unwrap().unwrap();
    let other = Signer::from_seed(ORIGIN, &[9u8; 32]).unwrap();
    let note = gatehouse_tlog::SignedNote::parse(&state.note).unwrap();
    state.note = other.sign(note.body()).unwrap().to_text();
    state.store(&site.state).unwrap();
    let why = state_failure(site.verify());
    assert!(why.contains("not signed by key"), "{why}");
    refused_at_start(&site);
}

#[test]
fn without_the_kept_checkpoint_the_writer_rebuilds_and_checks_the_log() {
    let site = Site::new();
    site.write(25);
    std::fs::remove_file(&site.state).unwrap();
    let log = site.open().unwrap();
    assert!(
        matches!(log.resumption(), Some(Resumption::Rebuilt { records, checkpoints }) if records > 25 && checkpoints >= 2),
        "{:?}",
        log.resumption()
    );
    log.close().unwrap();
    site.verify().unwrap();

    // A rewritten log is refused even then: its own checkpoint records disagree.
    let mut evs = events(&site.log());
    evs[2].what.statement = Some("SELECT 2".into());
    write_chained(&site.log(), &evs);
    std::fs::remove_file(&site.state).unwrap();
    refused_at_start(&site);
}

#[test]
fn an_acknowledged_log_starts_again_and_verifies_from_there() {
    let site = Site::new();
    site.write(40);
    let all = lines(&site.log());
    std::fs::write(site.log(), all[..all.len() - 8].concat()).unwrap();
    refused_at_start(&site);
    let log = AuditLog::open(
        &site.audit,
        Options {
            acknowledge_inconsistency: true,
            ..site.options()
        },
    )
    .unwrap();
    assert!(matches!(
        log.resumption(),
        Some(Resumption::Acknowledged { .. })
    ));
    log.close().unwrap();
    // The new kept checkpoint covers the log as it is now.
    site.verify().unwrap();
    site.open().unwrap().close().unwrap();
}

#[test]
fn a_rewritten_log_re_signed_throughout_with_another_key_is_detected() {
    let site = Site::new();
    site.write(30);
    let mut evs = events(&site.log());
    evs[12].what.statement = Some("SELECT 'nothing to see'".into());
    // The attacker recomputes every checkpoint over the rewritten records and signs each with
    // a key of their own: chain, tree and roots are all consistent.
    let mallory = Signer::from_seed(ORIGIN, &[13u8; 32]).unwrap();
    let mut tree = gatehouse_tlog::Frontier::new();
    let mut buf = Vec::new();
    let mut prev = GENESIS_PREV;
    for (i, event) in evs.iter_mut().enumerate() {
        if event.kind == EventKind::AuditCheckpoint {
            let checkpoint = Checkpoint {
                origin: ORIGIN.into(),
                size: tree.size(),
                root: tree.root(),
                extensions: vec![],
            };
            let detail = gatehouse_audit::checkpoint::CheckpointDetail {
                size: tree.size(),
                root: hex::encode(tree.root()),
                note: checkpoint.sign(&mallory).unwrap().to_text(),
            };
            event.what.detail = Some(serde_json::to_value(detail).unwrap());
        }
        prev = record::encode(&mut buf, i as u64 + 1, &prev, event).unwrap();
        tree.append(gatehouse_audit::checkpoint::leaf_of(&prev))
            .unwrap();
    }
    std::fs::write(site.log(), buf).unwrap();
    // Structurally flawless...
    verify_with(site.log(), &VerifyOptions::default()).unwrap();
    // ...but not signed by the gateway's key.
    let fault = checkpoint_fault(site.verify_log_only());
    assert!(
        matches!(fault, CheckpointFault::Signature { .. }),
        "{fault}"
    );
    refused_at_start(&site);
}

#[test]
fn an_inclusion_proof_holds_offline_and_fails_for_an_altered_record() {
    use gatehouse_audit::proof::{self, ProofFailure};
    let site = Site::new();
    site.write(37);
    let options = VerifyOptions {
        verifier: Some(site.verifier()),
        state: None,
    };
    for seq in [1, 7, 20, 37] {
        let made = proof::prove(&site.log(), seq, &options).unwrap();
        // Through its file form, as an examiner gets it.
        let text = serde_json::to_string(&made).unwrap();
        let read: proof::InclusionProof = serde_json::from_str(&text).unwrap();
        let proven = proof::check(&read, &site.verifier()).unwrap();
        assert_eq!(proven.record.seq, seq);
        assert!(proven.checkpoint.size >= seq);
    }
    let made = proof::prove(&site.log(), 7, &options).unwrap();

    let mut altered = made.clone();
    altered.record = altered.record.replace("id = 7", "id = 8");
    assert!(matches!(
        proof::check(&altered, &site.verifier()),
        Err(ProofFailure::Record(_))
    ));

    // A record re-hashed after the change has a valid hash of its own, but is not in the tree.
    let mut rehashed = made.clone();
    let mut original = record::decode(made.record.as_bytes()).unwrap();
    original.event.what.statement = Some("SELECT 'harmless'".into());
    let mut buf = Vec::new();
    record::encode(&mut buf, original.seq, &original.prev, &original.event).unwrap();
    rehashed.record = String::from_utf8(buf[..buf.len() - 1].to_vec()).unwrap();
    assert!(matches!(
        proof::check(&rehashed, &site.verifier()),
        Err(ProofFailure::NotIncluded(_))
    ));

    let mut bent = made.clone();
    bent.proof[0] = "00".repeat(32);
    assert!(matches!(
        proof::check(&bent, &site.verifier()),
        Err(ProofFailure::NotIncluded(_))
    ));

    let other = Signer::from_seed(ORIGIN, &[9u8; 32]).unwrap().verifier();
    assert!(matches!(
        proof::check(&made, &other),
        Err(ProofFailure::Signature { .. })
    ));

    // The final checkpoint record itself is covered by no checkpoint yet.
    let last = lines(&site.log()).len() as u64;
    assert!(matches!(
        proof::prove(&site.log(), last, &options),
        Err(ProofFailure::NotCovered(_))
    ));
}

#[test]
fn a_consistency_proof_shows_an_old_checkpoint_is_a_prefix_of_the_latest() {
    use gatehouse_audit::proof::{self, ProofFailure};
    let site = Site::new();
    site.write(35);
    let options = VerifyOptions {
        verifier: Some(site.verifier()),
        state: None,
    };
    let first = events(&site.log())
        .iter()
        .find(|e| e.kind == EventKind::AuditCheckpoint)
        .map(|e| {
            gatehouse_audit::checkpoint::CheckpointDetail::of(e)
                .unwrap()
                .size
        })
        .unwrap();
    let made = proof::prove_consistency(&site.log(), first, &options).unwrap();
    let (old, new) = proof::check_consistency(&made, &site.verifier()).unwrap();
    assert_eq!(old.size, first);
    assert!(new.size > old.size);

    // Another key's checkpoints, or a bent proof, do not hold.
    let other = Signer::from_seed(ORIGIN, &[9u8; 32]).unwrap().verifier();
    assert!(matches!(
        proof::check_consistency(&made, &other),
        Err(ProofFailure::Signature { .. })
    ));
    let mut bent = made.clone();
    bent.proof[0] = "11".repeat(32);
    assert!(matches!(
        proof::check_consistency(&bent, &site.verifier()),
        Err(ProofFailure::Inconsistent(_))
    ));
    assert!(matches!(
        proof::prove_consistency(&site.log(), first + 1, &options),
        Err(ProofFailure::NoCheckpointOfSize(_))
    ));
}

#[test]
fn witnesses_cosignatures_in_the_log_are_checked_against_their_checkpoints() {
    use gatehouse_audit::checkpoint::witness_summary;
    use gatehouse_audit::{Outcome, What};
    use gatehouse_tlog::Cosigner;
    let site = Site::new();
    let log = site.open().unwrap();
    for i in 1..=3 {
        log.append(statement(i)).unwrap();
    }
    let state = log.checkpoint_blocking().unwrap();
    let body = state.note.split("\n\n").next().unwrap().to_owned() + "\n";
    let witness = Cosigner::from_seed("w.example/1", &[5u8; 32]).unwrap();
    let other = Cosigner::from_seed("w.example/2", &[6u8; 32]).unwrap();
    let witnessed = |by: &Cosigner, size: u64, root: &str, over: &str| {
        let line = by.cosign(over, 1_700_000_000).unwrap().to_line();
        let mut event = Event::now(EventKind::AuditWitnessed, Outcome::success());
        event.what = What {
            detail: Some(serde_json::json!({
                "witness": by.verifier().to_string(),
                "size": size,
                "root": root,
                "cosignature": line.trim_end(),
                "timestamp": 1_700_000_000u64,
            })),
            ..What::default()
        };
        event
    };
    // A genuine cosignature; one over another body; one naming a tree the log never signed;
    // one by a witness not given; and a failure.
    log.append(witnessed(&witness, state.size, &state.root, &body))
        .unwrap();
    let forged_body = body.replacen(&format!("\n{}\n", state.size), "\n999\n", 1);
    log.append(witnessed(&witness, state.size, &state.root, &forged_body))
        .unwrap();
    log.append(witnessed(&witness, 999, &state.root, &body))
        .unwrap();
    log.append(witnessed(&other, state.size, &state.root, &body))
        .unwrap();
    log.append(Event::now(
        EventKind::AuditWitnessFailed,
        Outcome::failure("cannot reach the witness"),
    ))
    .unwrap();
    log.close().unwrap();

    let summary = witness_summary(&site.log(), &[witness.verifier()]).unwrap();
    assert_eq!(summary.cosignatures, 4);
    assert_eq!(summary.keys[0].verified, 1);
    assert_eq!(summary.keys[0].latest, Some((state.size, 1_700_000_000)));
    assert_eq!(summary.invalid.len(), 2, "{:?}", summary.invalid);
    assert!(summary.invalid[0].2.contains("does not verify"));
    assert!(summary.invalid[1].2.contains("does not hold"));
    assert_eq!(summary.unchecked, vec![other.verifier().to_string()]);
    assert_eq!(summary.failures, 1);
    assert_eq!(
        summary.latest_failure.as_ref().map(|f| f.1.as_str()),
        Some("cannot reach the witness")
    );
}
