//! Throughput of the hot paths a log and its clients run: appending leaf hashes to the
//! incremental tree (and reading the root), and verifying inclusion and consistency proofs.
//! Run: cargo bench -p gatehouse-tlog.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gatehouse_tlog::tree::{consistency_proof, inclusion_proof, root};
use gatehouse_tlog::{
    leaf_hash, verify_consistency, verify_inclusion, Checkpoint, Frontier, Hash, Signer,
};
use std::hint::black_box;

fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
}

fn append(c: &mut Criterion) {
    const N: u64 = 10_000;
    let input = leaves(N);
    let mut group = c.benchmark_group("frontier");
    group.throughput(Throughput::Elements(N));
    group.bench_function("append 10k leaves", |b| {
        b.iter(|| {
            let mut f = Frontier::new();
            for leaf in &input {
                let _ = f.append(*leaf);
            }
            black_box(f.size())
        })
    });
    group.throughput(Throughput::Elements(1));
    let full = Frontier::from_leaves(&input, N).unwrap();
    group.bench_function("root at 10k", |b| b.iter(|| black_box(full.root())));
    // Worst case: a tree of 2^40 - 1 leaves, where one append merges all 40 frontier nodes.
    let worst = Frontier::from_parts((1 << 40) - 1, vec![[1u8; 32]; 40]).unwrap();
    group.bench_function("append worst case (40 merges)", |b| {
        b.iter_batched(
            || worst.clone(),
            |mut f| black_box(f.append([2u8; 32])),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn verify(c: &mut Criterion) {
    const N: u64 = 1 << 20;
    let all = leaves(N);
    let size = N - 3; // not a power of two, so proofs have both inner and border nodes
    let tree_root = root(&all, size).unwrap();
    let indices: Vec<u64> = (0..64).map(|i| (i * 16_411) % size).collect();
    let proofs: Vec<Vec<Hash>> = indices
        .iter()
        .map(|&i| inclusion_proof(&all, i, size).unwrap())
        .collect();
    let old = 700_001;
    let old_root = root(&all, old).unwrap();
    let cproof = consistency_proof(&all, old, size).unwrap();

    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(indices.len() as u64));
    group.bench_function("inclusion, 64 proofs in a 2^20 tree", |b| {
        b.iter(|| {
            for (index, proof) in indices.iter().zip(&proofs) {
                let leaf = &all[*index as usize];
                let ok = verify_inclusion(leaf, *index, size, proof, &tree_root);
                debug_assert!(ok.is_ok());
                black_box(ok).ok();
            }
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("consistency 700001 -> 2^20-3", |b| {
        b.iter(|| {
            black_box(verify_consistency(
                old, size, &old_root, &tree_root, &cproof,
            ))
            .ok()
        })
    });
    group.finish();
}

fn checkpoint(c: &mut Criterion) {
    let signer = Signer::from_seed("example.com/log", &[5u8; 32]).unwrap();
    let verifier = signer.verifier();
    let checkpoint = Checkpoint {
        origin: "example.com/log".into(),
        size: 1 << 20,
        root: leaf_hash(b"root"),
        extensions: vec![],
    };
    let text = checkpoint.sign(&signer).unwrap().to_text();
    let mut group = c.benchmark_group("checkpoint");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign", |b| {
        b.iter(|| black_box(checkpoint.sign(&signer)).ok())
    });
    group.bench_function("open (parse + verify)", |b| {
        b.iter(|| black_box(Checkpoint::open(&text, &verifier)).ok())
    });
    group.finish();
}

criterion_group!(benches, append, verify, checkpoint);
criterion_main!(benches);
