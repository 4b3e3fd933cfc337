//! Proof verification, step for step as RFC 9162 §2.1.3.2 and §2.1.4.2.
//!
//! The RFC's loops already reject a proof of the wrong length; the length is checked first
//! anyway (with the closed forms used by transparency-dev) so the caller learns *why* a proof
//! failed. Every input is treated as hostile: any size, index or proof length gives a typed
//! error, never a panic, and the work done is bounded by the proof length.

use crate::hash::{empty_root, node_hash, Hash};
use thiserror::Error;

/// Why a proof did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProofError {
    /// Inclusion asked for a leaf at or past the tree size (this covers every index in an
    /// empty tree).
    #[error("leaf index {index} is out of range for tree size {size}")]
    IndexOutOfRange {
        /// The leaf index given.
        index: u64,
        /// The tree size given.
        size: u64,
    },
    /// Consistency asked from a larger tree to a smaller one.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    SizesOutOfOrder {
        /// The earlier tree's size.
        old_size: u64,
        /// The later tree's size.
        new_size: u64,
    },
    /// The proof has the wrong number of hashes for these sizes.
    #[error("proof has {actual} hashes; these sizes need {expected}")]
    WrongProofLength {
        /// What the sizes require.
        expected: usize,
        /// What was given.
        actual: usize,
    },
    /// The root computed from an inclusion proof is not the expected root.
    #[error("inclusion proof leads to a different root")]
    RootMismatch,
    /// The proof does not lead back to the old tree's root (for an old size of 0: the old
    /// root is not the empty-tree root).
    #[error("consistency proof does not match the old root")]
    OldRootMismatch,
    /// The proof does not lead to the new tree's root (for equal sizes: the roots differ).
    #[error("consistency proof does not match the new root")]
    NewRootMismatch,
}

/// Number of bits needed to write `x` (0 for 0).
fn bit_len(x: u64) -> u32 {
    64 - x.leading_zeros()
}

/// How many hashes `PATH(index, D[0:size])` has: those below the point where the leaf's path
/// and the tree's right edge part (`inner`), plus one per left sibling above it (`border`).
///
/// `None` when `index` is not in the tree.
pub fn inclusion_proof_len(index: u64, size: u64) -> Option<usize> {
    if index >= size {
        return None;
    }
    let (inner, border) = decompose(index, size);
    Some((inner + border) as usize)
}

/// `(inner, border)` as in transparency-dev's `decompInclProof`; needs `index < size`.
fn decompose(index: u64, size: u64) -> (u32, u32) {
    let inner = bit_len(index ^ (size - 1));
    // `inner` can be 64, where a plain `>>` would overflow.
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner, border)
}

/// How many hashes `PROOF(old_size, D[0:new_size])` has.
///
/// `None` when `old_size > new_size`; 0 when there is nothing to prove.
pub fn consistency_proof_len(old_size: u64, new_size: u64) -> Option<usize> {
    if old_size > new_size {
        return None;
    }
    if old_size == 0 || old_size == new_size {
        return Some(0);
    }
    let (inner, border) = decompose(old_size - 1, new_size);
    // The lowest `shift` levels are inside the old tree's last perfect subtree, which the
    // verifier reconstructs from the first proof hash (or already has, as the old root).
    let shift = old_size.trailing_zeros();
    let seed = u32::from(!old_size.is_power_of_two());
    Some((seed + inner.saturating_sub(shift) + border) as usize)
}

/// Recomputes the root that `proof` links `leaf` to (RFC 9162 §2.1.3.2 steps 1–4).
///
/// Only meaningful when compared with a trusted root; prefer [`verify_inclusion`].
pub fn root_from_inclusion_proof(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    // Step 1.
    let Some(expected) = inclusion_proof_len(index, size) else {
        return Err(ProofError::IndexOutOfRange { index, size });
    };
    if proof.len() != expected {
        return Err(ProofError::WrongProofLength {
            expected,
            actual: proof.len(),
        });
    }
    // Steps 2 and 3.
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = *leaf;
    // Step 4.
    for p in proof {
        if s_n == 0 {
            return Err(ProofError::WrongProofLength {
                expected,
                actual: proof.len(),
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 5, first half.
    if s_n != 0 {
        return Err(ProofError::WrongProofLength {
            expected,
            actual: proof.len(),
        });
    }
    Ok(r)
}

/// Checks that `leaf` (a leaf hash, not the raw entry) is at `index` in the tree of `size`
/// leaves whose root is `root` (RFC 9162 §2.1.3.2).
///
/// Take `size` and `root` from the same verified checkpoint: the proof itself does not bind
/// the size (a proof for one size can verify under another size with the first size's root).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion_proof(leaf, index, size, proof)?;
    // Step 5, second half.
    if computed != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `old_size` leaves with root `old_root` is a prefix of the tree of
/// `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2).
///
/// The RFC only covers `0 < old_size < new_size`. For the rest this follows transparency-dev
/// and Sigsum: equal sizes need an empty proof and equal roots; an old size of 0 needs an empty
/// proof and `old_root` equal to the empty-tree root, since the empty tree is a prefix of every
/// tree.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    let Some(expected) = consistency_proof_len(old_size, new_size) else {
        return Err(ProofError::SizesOutOfOrder { old_size, new_size });
    };
    let wrong_length = ProofError::WrongProofLength {
        expected,
        actual: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    if old_size == 0 {
        return if *old_root == empty_root() {
            Ok(())
        } else {
            Err(ProofError::OldRootMismatch)
        };
    }
    if old_size == new_size {
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::NewRootMismatch)
        };
    }
    // Steps 1 and 2: when the old tree is a perfect subtree its root is the first node, so
    // the proof leaves it out and the verifier puts it back.
    let (seed, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (first, rest),
            None => return Err(wrong_length),
        }
    };
    // Step 3.
    let mut f_n = old_size - 1;
    let mut s_n = new_size - 1;
    // Step 4.
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 5.
    let mut f_r = *seed;
    let mut s_r = *seed;
    // Step 6.
    for c in rest {
        if s_n == 0 {
            return Err(wrong_length);
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 7.
    if s_n != 0 {
        return Err(wrong_length);
    }
    if f_r != *old_root {
        return Err(ProofError::OldRootMismatch);
    }
    if s_r != *new_root {
        return Err(ProofError::NewRootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_for_known_shapes() {
        assert_eq!(inclusion_proof_len(0, 1), Some(0));
        assert_eq!(inclusion_proof_len(0, 8), Some(3));
        assert_eq!(inclusion_proof_len(5, 8), Some(3));
        assert_eq!(inclusion_proof_len(2, 3), Some(1));
        assert_eq!(inclusion_proof_len(1, 5), Some(3));
        assert_eq!(inclusion_proof_len(5, 5), None);
        assert_eq!(inclusion_proof_len(0, 0), None);
        assert_eq!(consistency_proof_len(1, 8), Some(3));
        assert_eq!(consistency_proof_len(6, 8), Some(3));
        assert_eq!(consistency_proof_len(2, 5), Some(2));
        assert_eq!(consistency_proof_len(6, 7), Some(3));
        assert_eq!(consistency_proof_len(4, 8), Some(1));
        assert_eq!(consistency_proof_len(3, 3), Some(0));
        assert_eq!(consistency_proof_len(0, 3), Some(0));
        assert_eq!(consistency_proof_len(4, 3), None);
    }

    #[test]
    fn extreme_sizes_do_not_panic() {
        let h = [0u8; 32];
        let big = vec![h; 130];
        for &(index, size) in &[
            (u64::MAX, u64::MAX),
            (u64::MAX - 1, u64::MAX),
            (0, u64::MAX),
            (1 << 63, u64::MAX),
            ((1 << 63) - 1, 1 << 63),
            (0, 0),
            (u64::MAX, 0),
        ] {
            for len in [0, 1, 63, 64, 65, 130] {
                let _ = verify_inclusion(&h, index, size, &big[..len], &h);
            }
        }
        for &(m, n) in &[
            (u64::MAX, u64::MAX),
            (u64::MAX - 1, u64::MAX),
            (1, u64::MAX),
            (1 << 63, u64::MAX),
            ((1 << 63) + 1, u64::MAX),
            (u64::MAX, 0),
            (0, u64::MAX),
        ] {
            for len in [0, 1, 63, 64, 65, 127, 128, 130] {
                let _ = verify_consistency(m, n, &h, &h, &big[..len]);
            }
        }
    }
}
