//! Range proofs: leaves `start..end` of a tree of `size` leaves, shown to sit at exactly those
//! positions of the tree a root commits to.
//!
//! The proof is the root of every maximal subtree (in RFC 9162's split) that lies wholly
//! outside the range, left to right. The verifier walks the same splits, takes those roots for
//! the subtrees outside and hashes the range's own leaves for the rest, and must arrive at the
//! signed root with every proof hash used. That is O(log size) hashes for any range, so a
//! bundle of a day's records carries one small proof instead of one inclusion proof per record,
//! and proves too that no record of the range was left out or added.

use crate::hash::{node_hash, Hash};
use crate::tree::{subtree_root, LeafSource, TreeError};
use crate::Frontier;
use thiserror::Error;

/// Why a range proof does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RangeError {
    /// The range is empty or does not fit in the tree.
    #[error("range {start}..{end} is not a non-empty part of a tree of size {size}")]
    InvalidRange {
        /// First leaf index of the range.
        start: u64,
        /// One past the last leaf index.
        end: u64,
        /// The tree size.
        size: u64,
    },
    /// The number of leaves given differs from the range's length.
    #[error("{given} leaves given for a range of {expected}")]
    WrongLeafCount {
        /// The range's length.
        expected: u64,
        /// How many leaves were given.
        given: u64,
    },
    /// Too few or too many proof hashes for this range and size.
    #[error("the proof has the wrong number of hashes for this range")]
    WrongProofLength,
    /// The root computed from the range and the proof is not the expected root.
    #[error("the range and proof lead to a different root")]
    RootMismatch,
}

/// Where a subtree `[lo, hi)` lies relative to the range `[start, end)`.
enum Place {
    Outside,
    Inside,
    Straddles(u64),
}

fn place(lo: u64, hi: u64, start: u64, end: u64) -> Place {
    if hi <= start || lo >= end {
        Place::Outside
    } else if lo >= start && hi <= end {
        Place::Inside
    } else {
        // A straddling subtree holds leaves both in and out of the range, so at least two.
        Place::Straddles(lo + split_point(hi - lo))
    }
}

/// The largest power of two strictly less than `n` (`n` ≥ 2): RFC 9162's split.
fn split_point(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The proof that leaves `start..end` are at those positions in the tree of the first `size`
/// leaves of `leaves`.
pub fn range_proof<S: LeafSource + ?Sized>(
    leaves: &S,
    start: u64,
    end: u64,
    size: u64,
) -> Result<Vec<Hash>, TreeError> {
    if start >= end || end > size {
        return Err(TreeError::InvalidRange { start, end });
    }
    if size > leaves.size() {
        return Err(TreeError::SizeOutOfRange {
            size,
            available: leaves.size(),
        });
    }
    let mut out = Vec::new();
    collect(leaves, 0, size, start, end, &mut out)?;
    Ok(out)
}

fn collect<S: LeafSource + ?Sized>(
    leaves: &S,
    lo: u64,
    hi: u64,
    start: u64,
    end: u64,
    out: &mut Vec<Hash>,
) -> Result<(), TreeError> {
    match place(lo, hi, start, end) {
        Place::Outside => out.push(subtree_root(leaves, lo, hi)?),
        Place::Inside => {}
        Place::Straddles(mid) => {
            collect(leaves, lo, mid, start, end, out)?;
            collect(leaves, mid, hi, start, end, out)?;
        }
    }
    Ok(())
}

/// The root of the tree of `size` leaves whose leaves `start..start + range.len()` are `range`,
/// given the proof; compare it with a signed root (or use [`verify_range`]).
pub fn root_from_range(
    start: u64,
    range: &[Hash],
    size: u64,
    proof: &[Hash],
) -> Result<Hash, RangeError> {
    let len = range.len() as u64;
    let end = start.checked_add(len).ok_or(RangeError::InvalidRange {
        start,
        end: u64::MAX,
        size,
    })?;
    if len == 0 || end > size {
        return Err(RangeError::InvalidRange { start, end, size });
    }
    let mut hashes = proof.iter();
    let root = rebuild(0, size, start, end, range, &mut hashes)?;
    if hashes.next().is_some() {
        return Err(RangeError::WrongProofLength);
    }
    Ok(root)
}

/// Checks that `range` are the leaves `start..` of the tree whose root is `root`.
pub fn verify_range(
    start: u64,
    range: &[Hash],
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), RangeError> {
    if root_from_range(start, range, size, proof)? == *root {
        Ok(())
    } else {
        Err(RangeError::RootMismatch)
    }
}

/// Recursion depth is bounded by 64 (each level halves a u64 range), whatever the input.
fn rebuild<'a>(
    lo: u64,
    hi: u64,
    start: u64,
    end: u64,
    range: &[Hash],
    proof: &mut impl Iterator<Item = &'a Hash>,
) -> Result<Hash, RangeError> {
    match place(lo, hi, start, end) {
        Place::Outside => proof.next().copied().ok_or(RangeError::WrongProofLength),
        Place::Inside => {
            let mut frontier = Frontier::new();
            // In range by construction: start <= lo < hi <= end = start + range.len().
            for leaf in &range[(lo - start) as usize..(hi - start) as usize] {
                frontier
                    .append(*leaf)
                    .map_err(|_| RangeError::WrongProofLength)?;
            }
            Ok(frontier.root())
        }
        Place::Straddles(mid) => {
            let left = rebuild(lo, mid, start, end, range, proof)?;
            let right = rebuild(mid, hi, start, end, range, proof)?;
            Ok(node_hash(&left, &right))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use crate::tree::root;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn every_range_of_small_trees_proves_and_nothing_else_does() {
        for size in 1..=33u64 {
            let all = leaves(size);
            let signed = root(&all, size).unwrap();
            for start in 0..size {
                for end in start + 1..=size {
                    let proof = range_proof(&all, start, end, size).unwrap();
                    let part = &all[start as usize..end as usize];
                    verify_range(start, part, size, &proof, &signed).unwrap();
                    // The same leaves claimed one position later do not verify.
                    if end < size {
                        assert!(verify_range(start + 1, part, size, &proof, &signed).is_err());
                    }
                    // A leaf left out, or one changed, does not verify.
                    if part.len() > 1 {
                        let shorter = &part[..part.len() - 1];
                        assert!(verify_range(start, shorter, size, &proof, &signed).is_err());
                    }
                    let mut changed = part.to_vec();
                    changed[0][0] ^= 1;
                    assert_eq!(
                        verify_range(start, &changed, size, &proof, &signed),
                        Err(RangeError::RootMismatch)
                    );
                    // A proof with a hash too many or too few is refused by length.
                    let mut longer = proof.clone();
                    longer.push(signed);
                    assert!(verify_range(start, part, size, &longer, &signed).is_err());
                    if let Some((_, fewer)) = proof.split_last() {
                        assert!(verify_range(start, part, size, fewer, &signed).is_err());
                    }
                }
            }
        }
    }

    #[test]
    fn the_proof_stays_logarithmic() {
        let size = 1_000_003u64;
        let all = leaves(size);
        let proof = range_proof(&all, 123_456, 654_321, size).unwrap();
        assert!(proof.len() <= 2 * 64, "{} hashes", proof.len());
        let signed = root(&all, size).unwrap();
        verify_range(123_456, &all[123_456..654_321], size, &proof, &signed).unwrap();
    }

    #[test]
    fn hostile_shapes_are_errors_not_panics() {
        let one = [leaf_hash(b"x")];
        assert!(root_from_range(u64::MAX, &one, u64::MAX, &[]).is_err());
        assert!(root_from_range(5, &one, 5, &[]).is_err());
        assert!(root_from_range(0, &[], 5, &[]).is_err());
        assert!(root_from_range(0, &one, u64::MAX, &[]).is_err());
        assert!(range_proof(&leaves(4), 2, 2, 4).is_err());
        assert!(range_proof(&leaves(4), 0, 5, 5).is_err());
    }
}
