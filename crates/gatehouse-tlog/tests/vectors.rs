//! Known answers from the Certificate Transparency test suite (as kept in
//! transparency-dev/merkle `proof/verify_test.go`): the 8-leaf tree, its root at every size,
//! and its published inclusion and consistency proofs. Agreeing with these is what makes our
//! checkpoints checkable by anyone else's RFC 6962 code.

use gatehouse_tlog::proof::{consistency_proof_len, inclusion_proof_len};
use gatehouse_tlog::tree::{consistency_proof, inclusion_proof, root};
use gatehouse_tlog::{
    empty_root, leaf_hash, verify_consistency, verify_inclusion, Frontier, Hash, ProofError,
};

mod common;
use common::ct_leaf_hashes as leaf_hashes;

/// Roots for sizes 0..=8.
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (leaf index, tree size, proof), 0-based indices (the Go suite writes them 1-based).
const INCLUSION: [(u64, u64, &[&str]); 5] = [
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (old size, new size, proof).
const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn h(text: &str) -> Hash {
    hex::decode(text).unwrap().try_into().unwrap()
}

fn hashes(list: &[&str]) -> Vec<Hash> {
    list.iter().map(|s| h(s)).collect()
}

#[test]
fn roots_at_every_size() {
    let leaves = leaf_hashes();
    assert_eq!(empty_root(), h(ROOTS[0]));
    let mut frontier = Frontier::new();
    assert_eq!(frontier.root(), h(ROOTS[0]));
    for size in 1..=8u64 {
        frontier.append(leaves[size as usize - 1]).unwrap();
        assert_eq!(
            frontier.root(),
            h(ROOTS[size as usize]),
            "frontier, size {size}"
        );
        assert_eq!(
            root(&leaves, size).unwrap(),
            h(ROOTS[size as usize]),
            "range, size {size}"
        );
    }
    assert_eq!(root(&leaves, 0).unwrap(), h(ROOTS[0]));
}

#[test]
fn published_inclusion_proofs_are_generated_and_verify() {
    let leaves = leaf_hashes();
    for (index, size, proof) in INCLUSION {
        let proof = hashes(proof);
        assert_eq!(inclusion_proof_len(index, size), Some(proof.len()));
        assert_eq!(
            inclusion_proof(&leaves, index, size).unwrap(),
            proof,
            "generate {index} in {size}"
        );
        let root = h(ROOTS[size as usize]);
        assert_eq!(
            verify_inclusion(&leaves[index as usize], index, size, &proof, &root),
            Ok(()),
            "verify {index} in {size}"
        );
    }
}

#[test]
fn published_consistency_proofs_are_generated_and_verify() {
    let leaves = leaf_hashes();
    for (old, new, proof) in CONSISTENCY {
        let proof = hashes(proof);
        assert_eq!(consistency_proof_len(old, new), Some(proof.len()));
        assert_eq!(
            consistency_proof(&leaves, old, new).unwrap(),
            proof,
            "generate {old} -> {new}"
        );
        assert_eq!(
            verify_consistency(
                old,
                new,
                &h(ROOTS[old as usize]),
                &h(ROOTS[new as usize]),
                &proof
            ),
            Ok(()),
            "verify {old} -> {new}"
        );
    }
}

/// The corruptions transparency-dev checks for every published inclusion proof.
#[test]
fn corrupted_inclusion_probes_fail() {
    let leaves = leaf_hashes();
    let some_hash = h("abacaba000000000000000000000000000000000000000000060061e00123456");
    for (index, size, proof) in INCLUSION.iter().skip(1).copied() {
        let proof = hashes(proof);
        let root = h(ROOTS[size as usize]);
        let leaf = leaves[index as usize];
        let mut probes: Vec<(u64, u64, Hash, Hash, Vec<Hash>)> = vec![
            (index.wrapping_sub(1), size, root, leaf, proof.clone()),
            (index + 1, size, root, leaf, proof.clone()),
            (index ^ 2, size, root, leaf, proof.clone()),
            (index, size * 2, root, leaf, proof.clone()),
            (index, size / 2, root, leaf, proof.clone()),
            (index, size, root, leaf_hash(b"WrongLeaf"), proof.clone()),
            (index, size, empty_root(), leaf, proof.clone()),
            (index, size, some_hash, leaf, proof.clone()),
            (
                index,
                size,
                root,
                leaf,
                [proof.clone(), vec![root]].concat(),
            ),
            (
                index,
                size,
                root,
                leaf,
                [vec![root], proof.clone()].concat(),
            ),
            (index, size, root, leaf, proof[..proof.len() - 1].to_vec()),
        ];
        if proof.len() > 1 {
            let mut inserted = vec![proof[0], some_hash];
            inserted.extend_from_slice(&proof[1..]);
            probes.push((index, size, root, leaf, inserted));
        }
        for i in 0..proof.len() {
            let mut wrong = proof.clone();
            wrong[i][0] ^= 8;
            probes.push((index, size, root, leaf, wrong));
        }
        for (i, (index, size, root, leaf, proof)) in probes.iter().enumerate() {
            assert!(
                verify_inclusion(leaf, *index, *size, proof, root).is_err(),
                "probe {i} verified"
            );
        }
    }
}

/// The corruptions transparency-dev checks for every published consistency proof.
#[test]
fn corrupted_consistency_probes_fail() {
    for (old, new, proof) in CONSISTENCY.iter().skip(1).copied() {
        let proof = hashes(proof);
        let (r1, r2) = (h(ROOTS[old as usize]), h(ROOTS[new as usize]));
        let wrong_root = leaf_hash(b"WrongRoot");
        let mut probes: Vec<(u64, u64, Hash, Hash, Vec<Hash>)> = vec![
            (old - 1, new, r1, r2, proof.clone()),
            (old + 1, new, r1, r2, proof.clone()),
            (old ^ 2, new, r1, r2, proof.clone()),
            (old, new * 2, r1, r2, proof.clone()),
            (old, new / 2, r1, r2, proof.clone()),
            (old, new, wrong_root, r2, proof.clone()),
            (old, new, r1, wrong_root, proof.clone()),
            (old, new, r2, r1, proof.clone()),
            (old, new, r1, r2, vec![]),
            (old, new, r1, r2, [proof.clone(), vec![r1]].concat()),
            (old, new, r1, r2, [proof.clone(), vec![r2]].concat()),
            (old, new, r1, r2, [vec![r1], proof.clone()].concat()),
            (old, new, r1, r2, [vec![r2], proof.clone()].concat()),
            (old, new, r1, r2, [vec![proof[0]], proof.clone()].concat()),
            (old, new, r1, r2, proof[..proof.len() - 1].to_vec()),
        ];
        for i in 0..proof.len() {
            let mut wrong = proof.clone();
            wrong[i][0] ^= 16;
            probes.push((old, new, r1, r2, wrong));
        }
        for (i, (old, new, r1, r2, proof)) in probes.iter().enumerate() {
            assert!(
                verify_consistency(*old, *new, r1, r2, proof).is_err(),
                "probe {i} ({old} -> {new}) verified"
            );
        }
    }
}

/// The trivial cases from transparency-dev's `TestVerifyConsistency`, with the one deliberate
/// difference that an old size of 0 must come with the empty-tree root.
#[test]
fn trivial_consistency_cases() {
    let (a, b) = (leaf_hash(b"don't care 1"), leaf_hash(b"don't care 2"));
    let e = empty_root();
    assert_eq!(verify_consistency(0, 0, &e, &e, &[]), Ok(()));
    assert_eq!(verify_consistency(0, 1, &e, &b, &[]), Ok(()));
    assert_eq!(verify_consistency(1, 1, &b, &b, &[]), Ok(()));
    assert_eq!(
        verify_consistency(0, 1, &a, &b, &[]),
        Err(ProofError::OldRootMismatch)
    );
    assert_eq!(
        verify_consistency(1, 1, &a, &b, &[]),
        Err(ProofError::NewRootMismatch)
    );
    assert_eq!(
        verify_consistency(1, 0, &a, &b, &[]),
        Err(ProofError::SizesOutOfOrder {
            old_size: 1,
            new_size: 0
        })
    );
    assert_eq!(
        verify_consistency(2, 1, &a, &b, &[]),
        Err(ProofError::SizesOutOfOrder {
            old_size: 2,
            new_size: 1
        })
    );
    assert_eq!(
        verify_consistency(1, 2, &a, &b, &[]),
        Err(ProofError::WrongProofLength {
            expected: 1,
            actual: 0
        })
    );
    for (m, n) in [(0, 0), (0, 1), (1, 1)] {
        assert_eq!(
            verify_consistency(m, n, &e, &e, &[e]),
            Err(ProofError::WrongProofLength {
                expected: 0,
                actual: 1
            })
        );
    }
}

#[test]
fn inclusion_edge_cases() {
    let leaf = leaf_hash(b"data");
    // A one-leaf tree's root is its leaf and the proof is empty.
    assert_eq!(verify_inclusion(&leaf, 0, 1, &[], &leaf), Ok(()));
    assert_eq!(
        verify_inclusion(&leaf, 0, 1, &[], &empty_root()),
        Err(ProofError::RootMismatch)
    );
    for (index, size) in [(0, 0), (1, 0), (1, 1), (2, 1), (u64::MAX, 3)] {
        assert_eq!(
            verify_inclusion(&leaf, index, size, &[], &leaf),
            Err(ProofError::IndexOutOfRange { index, size })
        );
    }
    assert_eq!(
        verify_inclusion(&leaf, 0, 2, &[], &leaf),
        Err(ProofError::WrongProofLength {
            expected: 1,
            actual: 0
        })
    );
}
