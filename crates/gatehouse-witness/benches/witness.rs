//! What a witness spends per checkpoint, and what the gateway's client spends to prove one.
//! Run: cargo bench -p gatehouse-witness.
//!
//! * `witness/cosign again`: the same tree resubmitted — parse, the log's signature checked,
//!   cosigned; nothing written (the case anyone can replay).
//! * `witness/cosign a grown tree`: a new size with its consistency proof, the state synced to
//!   disk before answering (bound by the file system's sync).
//! * `client/proof from frontier, 10k new leaves`: the consistency proof the client sends.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gatehouse_tlog::tree::root;
use gatehouse_tlog::{
    consistency_proof_from_frontier, leaf_hash, Checkpoint, Cosigner, Frontier, Hash, Signer,
};
use gatehouse_witness::request::AddCheckpoint;
use gatehouse_witness::{Init, Witness};
use std::hint::black_box;

const ORIGIN: &str = "bench.example/log";

fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
}

fn note(signer: &Signer, all: &[Hash], size: u64) -> String {
    Checkpoint {
        origin: ORIGIN.into(),
        size,
        root: root(all, size).unwrap(),
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

fn witness(c: &mut Criterion) {
    let signer = Signer::from_seed(ORIGIN, &[1u8; 32]).unwrap();
    let all = leaves(200_000);
    let dir = tempfile::tempdir().unwrap();
    let w = Witness::open(
        Cosigner::from_seed("bench.example/witness", &[2u8; 32]).unwrap(),
        vec![signer.verifier()],
        &dir.path().join("state.json"),
        Init::CreateIfMissing,
    )
    .unwrap();
    assert_eq!(
        w.add_checkpoint(&body(0, Vec::new(), note(&signer, &all, 1000)), 1)
            .status(),
        200
    );
    let mut group = c.benchmark_group("witness");
    group.throughput(Throughput::Elements(1));
    let again = body(1000, Vec::new(), note(&signer, &all, 1000));
    group.bench_function("cosign again", |b| {
        b.iter(|| black_box(w.add_checkpoint(&again, 2).status()))
    });
    // Grow by 10 records per request; prepared ahead so only the witness is timed.
    let mut frontier = Frontier::from_leaves(&all, 1000).unwrap();
    let mut requests = Vec::new();
    while frontier.size() + 10 <= all.len() as u64 {
        let old = frontier.size();
        let tail = &all[old as usize..old as usize + 10];
        let proof = consistency_proof_from_frontier(&frontier, tail).unwrap();
        for leaf in tail {
            frontier.append(*leaf).unwrap();
        }
        let signed = Checkpoint {
            origin: ORIGIN.into(),
            size: frontier.size(),
            root: frontier.root(),
            extensions: Vec::new(),
        }
        .sign(&signer)
        .unwrap()
        .to_text();
        requests.push(body(old, proof, signed));
    }
    let mut next = 0usize;
    group.sample_size(20);
    group.bench_function("cosign a grown tree", |b| {
        b.iter(|| {
            let status = w
                .add_checkpoint(&requests[next % requests.len()], 3)
                .status();
            next += 1;
            black_box(status)
        })
    });
    group.finish();
}

fn client(c: &mut Criterion) {
    let all = leaves(1 << 20);
    let old = Frontier::from_leaves(&all, 1_000_003).unwrap();
    let tail = &all[1_000_003..1_010_003];
    let mut group = c.benchmark_group("client");
    group.throughput(Throughput::Elements(tail.len() as u64));
    group.bench_function("proof from frontier, 10k new leaves", |b| {
        b.iter(|| black_box(consistency_proof_from_frontier(&old, tail).unwrap().len()))
    });
    group.finish();
}

criterion_group!(benches, witness, client);
criterion_main!(benches);
