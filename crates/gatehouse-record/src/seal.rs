//! Sealing chunks at rest with XChaCha20-Poly1305.
//!
//! The key is derived from the configured secret (any secret of at least 16 bytes), so an
//! operator can use a file of random bytes or a passphrase-like value alike. Each file has a
//! random 16-byte nonce prefix; a chunk's nonce appends its index, and its index is also
//! authenticated, so chunks cannot be reordered, dropped from the middle or moved between
//! files without failing to open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

pub(crate) const ALG: &str = "xchacha20poly1305";
const MIN_SECRET: usize = 16;

/// A recording key. Never printed: `Debug` shows its id only.
#[derive(Clone)]
pub struct Key {
    cipher: XChaCha20Poly1305,
    id: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the recording key must be at least {MIN_SECRET} bytes")]
    TooShort,
}

impl Key {
    pub fn from_secret(secret: &[u8]) -> Result<Key, KeyError> {
        if secret.len() < MIN_SECRET {
            return Err(KeyError::TooShort);
        }
        let mut derive = Sha256::new();
        derive.update(b"gatehouse recording key v1\0");
        derive.update(secret);
        let key = derive.finalize();
        let id = hex::encode(&Sha256::digest(key)[..8]);
        Ok(Key {
            cipher: XChaCha20Poly1305::new(&key),
            id,
        })
    }

    /// Names the key in headers and errors.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn seal(&self, prefix: &[u8; 16], index: u64, plain: &[u8]) -> Vec<u8> {
        let (nonce, aad) = nonce_and_aad(prefix, index);
        // Encryption with a valid key and nonce fails only past the cipher's length limit
        // (256 GiB), far above a chunk's size.
        self.cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .unwrap_or_default()
    }

    pub(crate) fn open(&self, prefix: &[u8; 16], index: u64, sealed: &[u8]) -> Option<Vec<u8>> {
        let (nonce, aad) = nonce_and_aad(prefix, index);
        self.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .ok()
    }
}

fn nonce_and_aad(prefix: &[u8; 16], index: u64) -> (XNonce, [u8; 16]) {
    let mut nonce = [0u8; 24];
    nonce[..16].copy_from_slice(prefix);
    nonce[16..].copy_from_slice(&index.to_be_bytes());
    let mut aad = [0u8; 16];
    aad[..8].copy_from_slice(b"GHREC01\0");
    aad[8..].copy_from_slice(&index.to_be_bytes());
    (XNonce::from(nonce), aad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_chunks_open_only_with_their_key_index_and_file() {
        let key = Key::from_secret(b"0123456789abcdef").unwrap();
        let other = Key::from_secret(b"0123456789abcdeg").unwrap();
        assert_ne!(key.id(), other.id());
        let prefix = [7u8; 16];
        let sealed = key.seal(&prefix, 3, b"frames");
        assert!(!sealed.windows(6).any(|w| w == b"frames"));
        assert_eq!(
            key.open(&prefix, 3, &sealed).as_deref(),
            Some(&b"frames"[..])
        );
        assert!(key.open(&prefix, 4, &sealed).is_none());
        assert!(key.open(&[8u8; 16], 3, &sealed).is_none());
        assert!(other.open(&prefix, 3, &sealed).is_none());
        let mut flipped = sealed.clone();
        flipped[0] ^= 1;
        assert!(key.open(&prefix, 3, &flipped).is_none());
        assert_eq!(Key::from_secret(b"short").unwrap_err(), KeyError::TooShort);
        assert!(!format!("{key:?}").contains("0123"));
    }
}
