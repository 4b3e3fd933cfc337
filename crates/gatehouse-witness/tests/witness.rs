//! The witness's rules, driven with real trees, real signatures and a real state file: it
//! cosigns only checkpoints signed by the log and proven consistent with the last one it
//! cosigned, never rolls back, and keeps its state before it answers.

use std::sync::{Arc, Barrier};

use gatehouse_tlog::tree::consistency_proof;
use gatehouse_tlog::{leaf_hash, Checkpoint, Cosigner, Hash, SignedNote, Signer};
use gatehouse_witness::request::AddCheckpoint;
use gatehouse_witness::{Answer, Init, Witness, WitnessError};

const ORIGIN: &str = "bank.example/gatehouse";

fn log_key() -> Signer {
    Signer::from_seed(ORIGIN, &[11u8; 32]).unwrap()
}

fn cosigner() -> Cosigner {
    Cosigner::from_seed("witness.example/w1", &[22u8; 32]).unwrap()
}

fn leaves(n: usize, salt: u8) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&[salt, (i % 256) as u8, (i / 256) as u8]))
        .collect()
}

fn note(signer: &Signer, leaves: &[Hash], size: u64) -> String {
    Checkpoint {
        origin: signer.name().to_owned(),
        size,
        root: gatehouse_tlog::tree::root(leaves, size).unwrap(),
        extensions: Vec::new(),
    }
    .sign(signer)
    .unwrap()
    .to_text()
}

fn body(old: u64, proof: Vec<Hash>, checkpoint: String) -> Vec<u8> {
    AddCheckpoint {
        old_size: old,
        proof,
        checkpoint,
    }
    .to_body()
    .into_bytes()
}

/// Asks the witness to move from `old` to `new` over `leaves`, with an honest proof.
fn grow(witness: &Witness, leaves: &[Hash], old: u64, new: u64) -> Answer {
    let proof = consistency_proof(leaves, old, new).unwrap();
    witness.add_checkpoint(
        &body(old, proof, note(&log_key(), leaves, new)),
        1_000 + new,
    )
}

fn open(dir: &tempfile::TempDir) -> Witness {
    Witness::open(
        cosigner(),
        vec![log_key().verifier()],
        &dir.path().join("witness.json"),
        Init::CreateIfMissing,
    )
    .unwrap()
}

fn cosignature_verifies(answer: &Answer, checkpoint: &str) -> u64 {
    let Answer::Cosigned(lines) = answer else {
        panic!("not cosigned: {answer:?}");
    };
    assert!(lines.starts_with("\u{2014} witness.example/w1 "), "{lines}");
    let note = SignedNote::parse(format!("{checkpoint}{lines}")).unwrap();
    cosigner().verifier().verify(&note).unwrap().timestamp
}

#[test]
fn a_growing_log_is_cosigned_at_each_size_and_the_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let all = leaves(300, 1);
    let witness = open(&dir);
    let first = note(&log_key(), &all, 5);
    let answer = witness.add_checkpoint(&body(0, Vec::new(), first.clone()), 77);
    assert_eq!(cosignature_verifies(&answer, &first), 77);
    for (old, new) in [(5, 6), (6, 64), (64, 65), (65, 300)] {
        let answer = grow(&witness, &all, old, new);
        assert_eq!(answer.status(), 200, "{old}->{new}: {answer:?}");
    }
    // The same checkpoint again is cosigned again (a fresh timestamp).
    assert_eq!(grow(&witness, &all, 300, 300).status(), 200);
    drop(witness);

    let again = Witness::open(
        cosigner(),
        vec![log_key().verifier()],
        &dir.path().join("witness.json"),
        Init::Existing,
    )
    .unwrap();
    assert_eq!(again.seen(ORIGIN).unwrap().size, 300);
    assert_eq!(grow(&again, &all, 65, 300), Answer::WrongOldSize(300));
    // One process per state file: a second one is refused while the first runs.
    let second = Witness::open(
        cosigner(),
        vec![log_key().verifier()],
        &dir.path().join("witness.json"),
        Init::Existing,
    );
    assert!(matches!(second, Err(WitnessError::Locked { .. })));
}

#[test]
fn a_witness_whose_state_is_gone_does_not_start_afresh_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let all = leaves(10, 1);
    let witness = open(&dir);
    assert_eq!(grow(&witness, &all, 0, 10).status(), 200);
    drop(witness);
    std::fs::remove_file(dir.path().join("witness.json")).unwrap();
    // Starting fresh would cosign a rolled-back log: refused, with why.
    let refused = Witness::open(
        cosigner(),
        vec![log_key().verifier()],
        &dir.path().join("witness.json"),
        Init::Existing,
    );
    let Err(e) = refused else {
        panic!("started without its state")
    };
    assert!(matches!(e, WitnessError::Missing { .. }));
    assert!(e.to_string().contains("--init"), "{e}");
}

#[test]
fn a_rewritten_or_forked_log_is_refused_even_with_the_logs_own_signature() {
    let dir = tempfile::tempdir().unwrap();
    let honest = leaves(100, 1);
    let witness = open(&dir);
    assert_eq!(grow(&witness, &honest, 0, 40).status(), 200);

    // Record 17 rewritten, the rest recomputed, signed with the real key, proof from the
    // rewritten tree: the proof cannot reach the root the witness holds.
    let mut forked = honest.clone();
    forked[16] = leaf_hash(b"rewritten");
    match grow(&witness, &forked, 40, 60) {
        Answer::Inconsistent(why) => assert!(!why.is_empty()),
        other => panic!("{other:?}"),
    }
    // Same size, another root: a fork.
    assert_eq!(grow(&witness, &forked, 40, 40), Answer::RootMismatch);
    // A cut log: its checkpoint is smaller than what was cosigned.
    let cut = witness.add_checkpoint(&body(40, Vec::new(), note(&log_key(), &honest, 30)), 1);
    assert_eq!(cut.status(), 400);
    // A log claiming the witness never saw it.
    assert_eq!(
        witness.add_checkpoint(&body(0, Vec::new(), note(&log_key(), &honest, 50)), 1),
        Answer::WrongOldSize(40)
    );
    // None of that moved the witness.
    assert_eq!(witness.seen(ORIGIN).unwrap().size, 40);
    assert_eq!(grow(&witness, &honest, 40, 100).status(), 200);
}

#[test]
fn only_known_logs_signed_by_their_keys_are_cosigned() {
    let dir = tempfile::tempdir().unwrap();
    let all = leaves(10, 1);
    let witness = open(&dir);
    let stranger = Signer::from_seed("other.example/log", &[3u8; 32]).unwrap();
    assert_eq!(
        witness.add_checkpoint(&body(0, Vec::new(), note(&stranger, &all, 5)), 1),
        Answer::UnknownOrigin
    );
    // The right origin name with another key.
    let impostor = Signer::from_seed(ORIGIN, &[4u8; 32]).unwrap();
    assert_eq!(
        witness.add_checkpoint(&body(0, Vec::new(), note(&impostor, &all, 5)), 1),
        Answer::Forbidden
    );
    // A genuine checkpoint whose body was edited after signing.
    let edited = note(&log_key(), &all, 5).replacen("\n5\n", "\n9\n", 1);
    assert_eq!(
        witness.add_checkpoint(&body(0, Vec::new(), edited), 1),
        Answer::Forbidden
    );
    assert!(witness.seen(ORIGIN).is_none());
}

#[test]
fn malformed_requests_get_400_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let all = leaves(10, 1);
    let witness = open(&dir);
    let good = note(&log_key(), &all, 5);
    for bad in [
        b"".to_vec(),
        b"old 0\n".to_vec(),
        b"old x\n\n".to_vec(),
        format!("old 0\n\n{}", good.trim_end()).into_bytes(),
        format!("old 6\n\n{good}").into_bytes(),
        body(0, vec![[0u8; 32]], good.clone()),
        b"old 0\n\nnot a note\n".to_vec(),
        vec![0xff; 100],
    ] {
        let answer = witness.add_checkpoint(&bad, 1);
        assert_eq!(
            answer.status(),
            400,
            "{:?}: {answer:?}",
            String::from_utf8_lossy(&bad)
        );
    }
    assert!(witness.seen(ORIGIN).is_none());
    assert_eq!(
        witness
            .add_checkpoint(&body(0, Vec::new(), good), 1)
            .status(),
        200
    );
}

#[test]
fn a_cosignature_is_never_given_for_state_that_was_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let all = leaves(10, 1);
    let volume = dir.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    let witness = Witness::open(
        cosigner(),
        vec![log_key().verifier()],
        &volume.join("witness.json"),
        Init::CreateIfMissing,
    )
    .unwrap();
    // The state's volume goes away: nothing can be kept, so nothing is cosigned.
    std::fs::remove_dir_all(&volume).unwrap();
    let answer = witness.add_checkpoint(&body(0, Vec::new(), note(&log_key(), &all, 5)), 1);
    assert!(matches!(answer, Answer::Unavailable(_)), "{answer:?}");
    assert!(witness.seen(ORIGIN).is_none());
    std::fs::create_dir(&volume).unwrap();
    assert_eq!(
        witness
            .add_checkpoint(&body(0, Vec::new(), note(&log_key(), &all, 5)), 1)
            .status(),
        200
    );
}

#[test]
fn racing_submissions_from_the_same_size_advance_the_witness_once() {
    let dir = tempfile::tempdir().unwrap();
    let all = Arc::new(leaves(200, 1));
    let witness = Arc::new(open(&dir));
    assert_eq!(grow(&witness, &all, 0, 10).status(), 200);
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8u64)
        .map(|i| {
            let (witness, all, barrier) = (witness.clone(), all.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                grow(&witness, &all, 10, 100 + i * 10)
            })
        })
        .collect();
    let answers: Vec<Answer> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let won: Vec<&Answer> = answers.iter().filter(|a| a.status() == 200).collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    let size = witness.seen(ORIGIN).unwrap().size;
    for a in &answers {
        if a.status() != 200 {
            assert_eq!(*a, Answer::WrongOldSize(size));
        }
    }
}
