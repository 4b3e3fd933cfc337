//! Building trees and proofs (RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1).
//!
//! Two shapes of use:
//!
//! * [`Frontier`] is what a log keeps while it appends: the roots of the perfect subtrees on
//!   the tree's right edge, at most 64 hashes. Appending is O(1) amortised hashing, the root
//!   is a fold over at most 64 hashes, and the frontier can be saved and restored
//!   ([`Frontier::from_parts`]) so the log never has to rehash its history on start-up.
//! * [`root`], [`subtree_root`], [`inclusion_proof`] and [`consistency_proof`] compute from
//!   stored leaf hashes (a [`LeafSource`]). They follow the RFC's recursive definitions and
//!   cost O(n) hashing for the range they cover, which is fine for an audit log's sizes and
//!   keeps them obviously correct.

use crate::hash::{empty_root, leaf_hash, node_hash, Hash};
use thiserror::Error;

/// Why a tree computation was refused. All are caller mistakes (sizes or indices that do
/// not fit the leaves given); none depend on hash values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TreeError {
    /// Asked about more leaves than the source holds.
    #[error("tree size {size} is larger than the {available} leaves available")]
    SizeOutOfRange {
        /// The size asked for.
        size: u64,
        /// How many leaves the source has.
        available: u64,
    },
    /// A leaf index at or past the tree size.
    #[error("leaf index {index} is out of range for tree size {size}")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A range whose start is after its end.
    #[error("range start {start} is after its end {end}")]
    InvalidRange {
        /// First leaf of the range.
        start: u64,
        /// One past the last leaf.
        end: u64,
    },
    /// A consistency proof from a larger tree to a smaller one.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    SizesOutOfOrder {
        /// The earlier tree's size.
        old_size: u64,
        /// The later tree's size.
        new_size: u64,
    },
    /// Frontier parts that cannot describe a tree of the stated size.
    #[error("a frontier of size {size} has {expected} nodes, not {actual}")]
    BadFrontier {
        /// The stated size.
        size: u64,
        /// `size.count_ones()`.
        expected: usize,
        /// How many nodes were given.
        actual: usize,
    },
    /// The tree already holds `u64::MAX` leaves.
    #[error("the tree is full")]
    Full,
}

/// Leaf hashes held by the caller (in memory or loaded from storage), indexed from 0.
///
/// `leaf` is only ever called with `index < size()`. An implementation backed by storage
/// should load what it needs first; keeping this infallible keeps the proof code pure.
pub trait LeafSource {
    /// How many leaves there are.
    fn size(&self) -> u64;
    /// The leaf hash (already `SHA-256(0x00 || data)`) at `index`.
    fn leaf(&self, index: u64) -> Hash;
}

impl LeafSource for [Hash] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn leaf(&self, index: u64) -> Hash {
        self[index as usize]
    }
}

impl LeafSource for Vec<Hash> {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn leaf(&self, index: u64) -> Hash {
        self[index as usize]
    }
}

impl<T: LeafSource + ?Sized> LeafSource for &T {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn leaf(&self, index: u64) -> Hash {
        (**self).leaf(index)
    }
}

/// The right edge of a Merkle tree: enough state to keep appending and to know the root.
///
/// `nodes[i]` is the root of a perfect subtree; their sizes are the set bits of `size`, from
/// the highest to the lowest, so the leaves they cover are contiguous and left to right.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a frontier saved with [`Frontier::size`] and [`Frontier::nodes`].
    ///
    /// Only the count is checkable here: that the hashes really belong to the log is what a
    /// signed checkpoint's root (compare [`Frontier::root`]) is for.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Result<Self, TreeError> {
        let expected = size.count_ones() as usize;
        if nodes.len() != expected {
            return Err(TreeError::BadFrontier {
                size,
                expected,
                actual: nodes.len(),
            });
        }
        Ok(Self { size, nodes })
    }

    /// The frontier of the first `size` leaves of `leaves`, by hashing each perfect subtree.
    pub fn from_leaves<S: LeafSource + ?Sized>(leaves: &S, size: u64) -> Result<Self, TreeError> {
        check_size(leaves, size)?;
        let mut nodes = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for bit in (0..64).rev() {
            let width = 1u64 << bit;
            if size & width != 0 {
                nodes.push(range_root(leaves, start, start + width));
                start += width;
            }
        }
        Ok(Self { size, nodes })
    }

    /// How many leaves have been appended.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect-subtree roots, left to right (what to persist, with the size).
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Appends a leaf hash and returns its index.
    ///
    /// Merges equal-sized subtrees as a binary counter carries: one merge per trailing one
    /// bit of the old size, so n appends cost fewer than 2n hashes in total.
    pub fn append(&mut self, leaf: Hash) -> Result<u64, TreeError> {
        let index = self.size;
        let new_size = index.checked_add(1).ok_or(TreeError::Full)?;
        let mut node = leaf;
        let mut carry = index;
        while carry & 1 == 1 {
            // A set bit in the size always has its node on the stack (see `from_parts`).
            let Some(left) = self.nodes.pop() else {
                break;
            };
            node = node_hash(&left, &node);
            carry >>= 1;
        }
        self.nodes.push(node);
        self.size = new_size;
        Ok(index)
    }

    /// Hashes `data` as a leaf and appends it.
    pub fn append_data(&mut self, data: &[u8]) -> Result<u64, TreeError> {
        self.append(leaf_hash(data))
    }

    /// `MTH` of everything appended so far.
    ///
    /// The RFC's tree splits at the largest power of two, which makes every left child a
    /// perfect subtree; folding the frontier from the right rebuilds exactly that shape.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return empty_root();
        };
        nodes.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

fn check_size<S: LeafSource + ?Sized>(leaves: &S, size: u64) -> Result<(), TreeError> {
    let available = leaves.size();
    if size > available {
        return Err(TreeError::SizeOutOfRange { size, available });
    }
    Ok(())
}

/// The largest power of two strictly less than `n`; `n` must be at least 2.
fn split_point(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// `MTH(D[start:end])` for a range already checked against the source; streams the leaves
/// through a frontier so memory stays at 64 hashes whatever the range.
fn range_root<S: LeafSource + ?Sized>(leaves: &S, start: u64, end: u64) -> Hash {
    let mut frontier = Frontier::new();
    for index in start..end {
        // Cannot be full: a range holds fewer than u64::MAX leaves.
        let _ = frontier.append(leaves.leaf(index));
    }
    frontier.root()
}

/// `MTH(D[0:size])`: the root of the tree made of the first `size` leaves.
pub fn root<S: LeafSource + ?Sized>(leaves: &S, size: u64) -> Result<Hash, TreeError> {
    subtree_root(leaves, 0, size)
}

/// `MTH(D[start:end])`: the root of the tree made of leaves `start..end` alone.
pub fn subtree_root<S: LeafSource + ?Sized>(
    leaves: &S,
    start: u64,
    end: u64,
) -> Result<Hash, TreeError> {
    if start > end {
        return Err(TreeError::InvalidRange { start, end });
    }
    check_size(leaves, end)?;
    Ok(range_root(leaves, start, end))
}

/// `PATH(index, D[0:size])` (RFC 9162 §2.1.3.1): the sibling hashes from the leaf up to the
/// root, nearest first.
pub fn inclusion_proof<S: LeafSource + ?Sized>(
    leaves: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, TreeError> {
    check_size(leaves, size)?;
    if index >= size {
        return Err(TreeError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::new();
    path(leaves, index, 0, size, &mut proof);
    Ok(proof)
}

/// `PATH(m, D[start:end])` with `m` relative to `start`; recursion depth is at most 64.
fn path<S: LeafSource + ?Sized>(leaves: &S, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
    let n = end - start;
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if m < k {
        path(leaves, m, start, start + k, out);
        out.push(range_root(leaves, start + k, end));
    } else {
        path(leaves, m - k, start + k, end, out);
        out.push(range_root(leaves, start, start + k));
    }
}

/// `PROOF(old_size, D[0:new_size])` (RFC 9162 §2.1.4.1): shows the tree of `old_size` leaves
/// is a prefix of the tree of `new_size` leaves.
///
/// Empty when there is nothing to prove (`old_size` 0 or equal to `new_size`), which is what
/// [`crate::proof::verify_consistency`] expects in those cases.
pub fn consistency_proof<S: LeafSource + ?Sized>(
    leaves: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, TreeError> {
    check_size(leaves, new_size)?;
    if old_size > new_size {
        return Err(TreeError::SizesOutOfOrder { old_size, new_size });
    }
    let mut proof = Vec::new();
    if old_size > 0 && old_size < new_size {
        let mut node = |start, end| Some(range_root(leaves, start, end));
        // Every node comes from the leaves, so none is ever missing.
        let _ = subproof(&mut node, old_size, 0, new_size, true, &mut proof);
    }
    Ok(proof)
}

/// `PROOF(m, D[0:m + new_leaves.len()])` where `old` is the frontier at `m`: a consistency
/// proof made without the first `m` leaves.
///
/// Every node such a proof needs below `m` is a run of `old`'s perfect subtrees (the proof
/// splits where the old tree's frontier does), and every node above `m` lies wholly within
/// the new leaves. So a log only has to keep the frontier of the last checkpoint a witness
/// accepted, and read the records since.
pub fn consistency_proof_from_frontier(
    old: &Frontier,
    new_leaves: &[Hash],
) -> Result<Vec<Hash>, TreeError> {
    let m = old.size();
    let new_size = m
        .checked_add(new_leaves.len() as u64)
        .ok_or(TreeError::Full)?;
    let mut proof = Vec::new();
    if m == 0 || new_leaves.is_empty() {
        return Ok(proof);
    }
    let mut node = |start: u64, end: u64| -> Option<Hash> {
        if start >= m {
            Some(range_root(&new_leaves, start - m, end - m))
        } else if end <= m {
            frontier_run(old, start, end)
        } else {
            None
        }
    };
    subproof(&mut node, m, 0, new_size, true, &mut proof)
        .ok_or(TreeError::InvalidRange { start: 0, end: m })?;
    Ok(proof)
}

/// `MTH(D[start:end])` for a range that is exactly a run of the frontier's perfect subtrees.
fn frontier_run(frontier: &Frontier, start: u64, end: u64) -> Option<Hash> {
    let mut offset = 0u64;
    let mut run = Vec::new();
    for (i, node) in frontier.nodes().iter().enumerate() {
        // Node i covers the i-th set bit of the size, from the highest.
        let width = 1u64 << (63 - nth_set_bit_from_top(frontier.size(), i)?);
        if offset >= start && offset + width <= end {
            run.push(*node);
        } else if offset < end && offset + width > start {
            return None; // the range cuts a perfect subtree: not a run of whole nodes
        }
        offset += width;
    }
    let mut nodes = run.iter().rev();
    let last = *nodes.next()?;
    Some(nodes.fold(last, |acc, left| node_hash(left, &acc)))
}

/// The bit position, counted from the top (0 = bit 63), of the `n`-th set bit of `x`.
fn nth_set_bit_from_top(x: u64, n: usize) -> Option<u32> {
    let mut rest = x;
    for _ in 0..n {
        rest &= !(1u64 << (63 - rest.leading_zeros()));
    }
    (rest != 0).then(|| rest.leading_zeros())
}

/// `SUBPROOF(m, D[start:end], complete)`; `complete` says whether `D[start:start+m]` is the
/// whole old tree (whose root the verifier already has) rather than a piece of it. `node`
/// gives `MTH(D[a:b])`; `None` from it aborts the proof.
fn subproof(
    node: &mut dyn FnMut(u64, u64) -> Option<Hash>,
    m: u64,
    start: u64,
    end: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Option<()> {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(node(start, end)?);
        }
        return Some(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(node, m, start, start + k, complete, out)?;
        out.push(node(start + k, end)?);
    } else {
        subproof(node, m - k, start + k, end, false, out)?;
        out.push(node(start, start + k)?);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC's definition, literally, to check the frontier and range code against.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        assert_eq!(split_point(2), 1);
        assert_eq!(split_point(3), 2);
        assert_eq!(split_point(4), 2);
        assert_eq!(split_point(5), 4);
        assert_eq!(split_point(8), 4);
        assert_eq!(split_point(9), 8);
        assert_eq!(split_point(u64::MAX), 1 << 63);
    }

    #[test]
    fn frontier_root_matches_recursive_definition() {
        let all = leaves(130);
        let mut f = Frontier::new();
        assert_eq!(f.root(), empty_root());
        for (i, leaf) in all.iter().enumerate() {
            assert_eq!(f.append(*leaf), Ok(i as u64));
            assert_eq!(f.root(), mth(&all[..=i]), "size {}", i + 1);
            assert_eq!(f.nodes().len(), f.size().count_ones() as usize);
        }
    }

    #[test]
    fn frontier_round_trips_through_parts_and_leaves() {
        let all = leaves(77);
        for n in 0..=77u64 {
            let built = Frontier::from_leaves(&all[..], n).unwrap();
            let mut appended = Frontier::new();
            for leaf in &all[..n as usize] {
                appended.append(*leaf).unwrap();
            }
            assert_eq!(built, appended);
            let restored = Frontier::from_parts(n, built.nodes().to_vec()).unwrap();
            assert_eq!(restored, built);
        }
        assert!(matches!(
            Frontier::from_parts(3, vec![[0; 32]]),
            Err(TreeError::BadFrontier {
                expected: 2,
                actual: 1,
                ..
            })
        ));
    }

    #[test]
    fn a_full_frontier_refuses_to_append() {
        let mut f = Frontier::from_parts(u64::MAX, vec![[7; 32]; 64]).unwrap();
        assert_eq!(f.append([1; 32]), Err(TreeError::Full));
        assert_eq!(f.size(), u64::MAX);
    }

    #[test]
    fn ranges_are_checked() {
        let all = leaves(4);
        assert_eq!(
            root(&all, 5),
            Err(TreeError::SizeOutOfRange {
                size: 5,
                available: 4
            })
        );
        assert_eq!(
            subtree_root(&all, 3, 2),
            Err(TreeError::InvalidRange { start: 3, end: 2 })
        );
        assert_eq!(
            inclusion_proof(&all, 4, 4),
            Err(TreeError::IndexOutOfRange { index: 4, size: 4 })
        );
        assert_eq!(
            inclusion_proof(&all, 0, 0),
            Err(TreeError::IndexOutOfRange { index: 0, size: 0 })
        );
        assert_eq!(
            consistency_proof(&all, 3, 2),
            Err(TreeError::SizesOutOfOrder {
                old_size: 3,
                new_size: 2
            })
        );
        assert_eq!(consistency_proof(&all, 0, 4), Ok(vec![]));
        assert_eq!(consistency_proof(&all, 4, 4), Ok(vec![]));
        assert_eq!(subtree_root(&all, 2, 2), Ok(empty_root()));
    }

    #[test]
    fn subtree_roots_match_recursive_definition() {
        let all = leaves(20);
        for start in 0..=20u64 {
            for end in start..=20u64 {
                assert_eq!(
                    subtree_root(&all, start, end).unwrap(),
                    mth(&all[start as usize..end as usize])
                );
            }
        }
    }

    #[test]
    fn consistency_proofs_from_a_frontier_match_the_full_tree() {
        let all = leaves(70);
        for m in 0..=70u64 {
            let old = Frontier::from_leaves(&all, m).unwrap();
            for n in m..=70u64 {
                let tail = &all[m as usize..n as usize];
                assert_eq!(
                    consistency_proof_from_frontier(&old, tail).unwrap(),
                    consistency_proof(&all, m, n).unwrap(),
                    "{m} -> {n}"
                );
            }
        }
    }
}
