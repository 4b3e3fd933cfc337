//! How a found value is replaced. Every strategy but `Null` writes exactly as many bytes as it
//! replaces, so lengths (and a row's message lengths) stay as they were.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

/// How a value is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Letters and digits become `*`, except the last four (at most half of them); separators
    /// stay: `****-****-****-9012`.
    Partial,
    /// Every byte becomes `*`.
    Full,
    /// Hex of an HMAC-SHA256 of the value's canonical form, as long as the value: equal values
    /// stay equal (and joinable) without being readable.
    Hash,
    /// The whole field becomes NULL (where there is no field, as `Full`).
    Null,
}

impl Strategy {
    pub fn from_name(name: &str) -> Option<Strategy> {
        Some(match name {
            "partial" => Strategy::Partial,
            "full" | "redact" => Strategy::Full,
            "hash" => Strategy::Hash,
            "null" => Strategy::Null,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Partial => "partial",
            Strategy::Full => "full",
            Strategy::Hash => "hash",
            Strategy::Null => "null",
        }
    }
}

/// The key of the `hash` strategy. Never printed.
#[derive(Clone)]
pub struct HashKey(Vec<u8>);

impl HashKey {
    pub fn new(key: impl Into<Vec<u8>>) -> HashKey {
        HashKey(key.into())
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(..)")
    }
}

/// Writes the replacement of `value` into `out` (same length). `canonical` is the form hashed:
/// a card's or phone number's digits, an IBAN without spaces, an email in lower case.
pub(crate) fn replace(
    strategy: Strategy,
    value: &[u8],
    canonical: &[u8],
    key: &HashKey,
    out: &mut [u8],
) {
    debug_assert_eq!(value.len(), out.len());
    match strategy {
        Strategy::Partial => {
            let alnum = value.iter().filter(|b| b.is_ascii_alphanumeric()).count();
            let mut keep = 4.min(alnum / 2);
            for (o, v) in out.iter_mut().zip(value).rev() {
                *o = if !v.is_ascii_alphanumeric() {
                    *v
                } else if keep > 0 {
                    keep -= 1;
                    *v
                } else {
                    b'*'
                };
            }
        }
        Strategy::Full | Strategy::Null => out.fill(b'*'),
        Strategy::Hash => {
            // One HMAC over the value; longer outputs are expanded from its digest, so the
            // cost is linear in the value's length.
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.0)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
            mac.update(canonical);
            let digest = mac.finalize().into_bytes();
            let mut written = 0;
            let mut block = 0u32;
            while written < out.len() {
                let hex = if block == 0 {
                    hex::encode(digest)
                } else {
                    use sha2::Digest;
                    let mut h = Sha256::new();
                    h.update(digest);
                    h.update(block.to_be_bytes());
                    hex::encode(h.finalize())
                };
                let n = hex.len().min(out.len() - written);
                out[written..written + n].copy_from_slice(&hex.as_bytes()[..n]);
                written += n;
                block += 1;
            }
        }
    }
}
