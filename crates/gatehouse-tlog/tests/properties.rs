//! Exhaustive small-tree properties: for every n ≤ 64 and every m, generated proofs verify,
//! every root computation agrees with the RFC's recursive definition, and any single-bit
//! change to a proof, a root, a leaf or an index (the leaf index, or the old size of a
//! consistency proof) makes verification fail.
//!
//! The *new* tree size is deliberately not in that list: a proof only binds the sizes through
//! the roots (RFC 9162 hashes no sizes), so e.g. the proof of leaf 0 in a tree of 5 also
//! "verifies" leaf 0 in a tree of 7 against the size-5 root. Binding size to root is the
//! signed checkpoint's job, which is why callers take both from one verified checkpoint.

use gatehouse_tlog::proof::{
    consistency_proof_len, inclusion_proof_len, root_from_inclusion_proof,
};
use gatehouse_tlog::tree::{consistency_proof, inclusion_proof, root, subtree_root};
use gatehouse_tlog::{
    empty_root, leaf_hash, node_hash, verify_consistency, verify_inclusion, Frontier, Hash,
};

const MAX: u64 = 64;

/// MTH exactly as RFC 9162 §2.1.1 writes it.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

fn leaves() -> Vec<Hash> {
    (0..MAX)
        .map(|i| leaf_hash(format!("entry {i}").as_bytes()))
        .collect()
}

fn flip(hash: &Hash, bit: usize) -> Hash {
    let mut out = *hash;
    out[bit / 8] ^= 1 << (bit % 8);
    out
}

/// A sample of bit positions (all 256 for every proof would take minutes in debug builds
/// without telling us more: the hash input changes either way).
const BITS: [usize; 6] = [0, 7, 8, 100, 248, 255];

#[test]
fn roots_agree_everywhere() {
    let all = leaves();
    let mut frontier = Frontier::new();
    for n in 0..=MAX {
        let expected = mth(&all[..n as usize]);
        assert_eq!(frontier.root(), expected, "frontier {n}");
        assert_eq!(root(&all, n).unwrap(), expected, "range {n}");
        assert_eq!(
            Frontier::from_leaves(&all, n).unwrap().root(),
            expected,
            "from_leaves {n}"
        );
        assert_eq!(subtree_root(&all, 0, n).unwrap(), expected);
        if n < MAX {
            frontier.append(all[n as usize]).unwrap();
        }
    }
}

#[test]
fn inclusion_proofs_verify_and_tampering_fails() {
    let all = leaves();
    for n in 1..=MAX {
        let root = mth(&all[..n as usize]);
        for m in 0..n {
            let leaf = all[m as usize];
            let proof = inclusion_proof(&all, m, n).unwrap();
            assert_eq!(Some(proof.len()), inclusion_proof_len(m, n));
            assert_eq!(
                verify_inclusion(&leaf, m, n, &proof, &root),
                Ok(()),
                "{m} in {n}"
            );
            assert_eq!(root_from_inclusion_proof(&leaf, m, n, &proof), Ok(root));

            for bit in BITS {
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i] = flip(&bad[i], bit);
                    assert!(verify_inclusion(&leaf, m, n, &bad, &root).is_err());
                }
                assert!(verify_inclusion(&leaf, m, n, &proof, &flip(&root, bit)).is_err());
                assert!(verify_inclusion(&flip(&leaf, bit), m, n, &proof, &root).is_err());
            }
            for bit in 0..64 {
                let other = m ^ (1 << bit);
                // Another index is only "wrong" if it names another leaf; it cannot.
                assert!(
                    verify_inclusion(&leaf, other, n, &proof, &root).is_err(),
                    "index {m}^bit{bit} in {n}"
                );
            }
            // One hash too many or too few.
            let mut longer = proof.clone();
            longer.push(root);
            assert!(verify_inclusion(&leaf, m, n, &longer, &root).is_err());
            if !proof.is_empty() {
                assert!(verify_inclusion(&leaf, m, n, &proof[1..], &root).is_err());
                assert!(verify_inclusion(&leaf, m, n, &proof[..proof.len() - 1], &root).is_err());
            }
        }
    }
}

#[test]
fn consistency_proofs_verify_and_tampering_fails() {
    let all = leaves();
    for n in 0..=MAX {
        let new_root = mth(&all[..n as usize]);
        for m in 0..=n {
            let old_root = mth(&all[..m as usize]);
            let proof = consistency_proof(&all, m, n).unwrap();
            assert_eq!(Some(proof.len()), consistency_proof_len(m, n));
            assert_eq!(
                verify_consistency(m, n, &old_root, &new_root, &proof),
                Ok(()),
                "{m} -> {n}"
            );

            for bit in BITS {
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i] = flip(&bad[i], bit);
                    assert!(
                        verify_consistency(m, n, &old_root, &new_root, &bad).is_err(),
                        "{m} -> {n}: proof[{i}] bit {bit}"
                    );
                }
                assert!(
                    verify_consistency(m, n, &flip(&old_root, bit), &new_root, &proof).is_err()
                );
                // The empty tree is a prefix of every tree, so with m = 0 any new root goes.
                if m > 0 {
                    assert!(
                        verify_consistency(m, n, &old_root, &flip(&new_root, bit), &proof).is_err()
                    );
                }
            }
            for bit in 0..64 {
                let other_old = m ^ (1 << bit);
                assert!(
                    verify_consistency(other_old, n, &old_root, &new_root, &proof).is_err(),
                    "old size {m}^bit{bit} -> {n}"
                );
            }
            let mut longer = proof.clone();
            longer.push(new_root);
            assert!(verify_consistency(m, n, &old_root, &new_root, &longer).is_err());
            if !proof.is_empty() {
                assert!(verify_consistency(m, n, &old_root, &new_root, &proof[1..]).is_err());
                assert!(verify_consistency(m, n, &old_root, &new_root, &[]).is_err());
            }
        }
    }
}

/// A proof for one pair of sizes never verifies another pair's roots.
#[test]
fn proofs_do_not_transfer_between_trees() {
    let all = leaves();
    let roots: Vec<Hash> = (0..=16).map(|n| mth(&all[..n])).collect();
    for n in 1..=16u64 {
        for m in 1..n {
            let proof = consistency_proof(&all, m, n).unwrap();
            for m2 in 1..=16u64 {
                for n2 in m2..=16u64 {
                    if (m2, n2) == (m, n) {
                        continue;
                    }
                    assert!(
                        verify_consistency(
                            m2,
                            n2,
                            &roots[m2 as usize],
                            &roots[n2 as usize],
                            &proof
                        )
                        .is_err(),
                        "proof {m}->{n} verified {m2}->{n2}"
                    );
                }
            }
        }
    }
}

/// Documents why the tree size must come from the same signed checkpoint as the root.
#[test]
fn sizes_are_bound_by_roots_not_by_proofs() {
    let all = leaves();
    let root5 = mth(&all[..5]);
    let proof = inclusion_proof(&all, 0, 5).unwrap();
    assert_eq!(verify_inclusion(&all[0], 0, 7, &proof, &root5), Ok(()));
    // With the real size-7 root it fails, as it must.
    let root7 = mth(&all[..7]);
    assert!(verify_inclusion(&all[0], 0, 7, &proof, &root7).is_err());
}
