//! Roots of recent tree sizes, for a reader that learns which size it needs only after more
//! leaves have gone by (a checkpoint record is written a few records after the size it signs).

use std::collections::VecDeque;

use crate::hash::Hash;
use crate::tree::{Frontier, TreeError};

/// Leaves between two kept frontiers: a root at any recent size costs at most this many
/// appends to a copy of the nearest earlier frontier.
const STRIDE: u64 = 256;

/// A [`Frontier`] that can also answer for any size in the last `window` leaves.
///
/// Keeps a frontier every [`STRIDE`] leaves and the leaves since the oldest one it keeps, so
/// appending costs one frontier append (plus a copy of the frontier every 256 leaves) and
/// memory stays at about `(window + 256) * 32` bytes, however long the log.
#[derive(Debug, Clone)]
pub struct History {
    current: Frontier,
    window: u64,
    /// The leaves from `marks[0].size()` to `current.size()`.
    leaves: VecDeque<Hash>,
    /// Frontiers at multiples of `STRIDE` (the first may be the starting frontier), oldest
    /// first; the oldest is at or before the window's start.
    marks: VecDeque<Frontier>,
}

impl History {
    /// Starts from `frontier` (the empty tree, or one rebuilt from a signed checkpoint),
    /// answering for sizes from `frontier.size()` on within the last `window` leaves.
    pub fn new(frontier: Frontier, window: u64) -> Self {
        let mut marks = VecDeque::new();
        marks.push_back(frontier.clone());
        History {
            current: frontier,
            window: window.max(STRIDE),
            leaves: VecDeque::new(),
            marks,
        }
    }

    /// The tree so far.
    pub fn frontier(&self) -> &Frontier {
        &self.current
    }

    /// Appends a leaf hash and returns its index.
    pub fn append(&mut self, leaf: Hash) -> Result<u64, TreeError> {
        let index = self.current.append(leaf)?;
        self.leaves.push_back(leaf);
        let size = self.current.size();
        if size.is_multiple_of(STRIDE) {
            self.marks.push_back(self.current.clone());
        }
        // Keep the newest mark at or before the window's start, and the leaves after it.
        let floor = size.saturating_sub(self.window);
        while self.marks.len() > 1 && self.marks[1].size() <= floor {
            let dropped = self.marks[1].size() - self.marks[0].size();
            self.marks.pop_front();
            self.leaves.drain(..dropped as usize);
        }
        Ok(index)
    }

    /// The root of the first `size` leaves, when `size` is within the window (or is the
    /// current size); `None` when it is older or in the future.
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        let current = self.current.size();
        if size == current {
            return Some(self.current.root());
        }
        if size > current || size < current.saturating_sub(self.window) {
            return None;
        }
        let mark = self.marks.iter().rev().find(|m| m.size() <= size)?;
        let first = self.marks.front()?.size();
        let mut tree = mark.clone();
        let from = (mark.size() - first) as usize;
        let to = (size - first) as usize;
        for leaf in self.leaves.range(from..to) {
            tree.append(*leaf).ok()?;
        }
        Some(tree.root())
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
    fn answers_for_every_size_in_the_window_and_none_outside() {
        let all = leaves(3000);
        let mut history = History::new(Frontier::new(), 1000);
        for leaf in &all {
            history.append(*leaf).unwrap();
        }
        for size in 2000..=3000 {
            assert_eq!(
                history.root_at(size),
                Some(root(&all, size).unwrap()),
                "size {size}"
            );
        }
        assert_eq!(history.root_at(1999), None, "older than the window");
        assert_eq!(history.root_at(3001), None, "not yet");
    }

    #[test]
    fn starts_from_a_saved_frontier() {
        let all = leaves(700);
        let base = Frontier::from_leaves(&all, 500).unwrap();
        let mut history = History::new(base, 300);
        for leaf in &all[500..] {
            history.append(*leaf).unwrap();
        }
        for size in 500..=700 {
            assert_eq!(history.root_at(size), Some(root(&all, size).unwrap()));
        }
        assert_eq!(history.root_at(499), None);
    }
}
