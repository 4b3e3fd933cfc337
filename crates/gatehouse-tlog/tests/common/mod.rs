//! Test data shared by the test files.

use gatehouse_tlog::{leaf_hash, Hash};

/// The 8-leaf tree of the Certificate Transparency test suite (leaf data, hex).
pub const CT_LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// The leaf hashes of [`CT_LEAVES`].
pub fn ct_leaf_hashes() -> Vec<Hash> {
    CT_LEAVES
        .iter()
        .map(|l| leaf_hash(&hex::decode(l).expect("hex test data")))
        .collect()
}
