//! Gateway-issued API keys for service accounts.
//!
//! A key is `gh_` followed by 32 random bytes in unpadded base64url (46 characters). Only its
//! SHA-256 is stored; the key itself is shown once, at creation.

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use gatehouse_core::{AuthError, AuthMethod, Authenticator, Identity};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use std::sync::Arc;

/// Every key starts with this, so it can be routed (and spotted by secret scanners).
pub const PREFIX: &str = "gh_";
const SECRET_BYTES: usize = 32;
/// `gh_` + base64url of 32 bytes without padding (ceil(32 * 4 / 3) = 43).
pub const KEY_LEN: usize = PREFIX.len() + 43;

/// Creates a new key. Returns `(key, hash)`: show `key` once, store only `hash`.
pub fn generate() -> (String, String) {
    let mut secret = [0u8; SECRET_BYTES];
    // ThreadRng is a CSPRNG seeded from the OS RNG (and periodically reseeded from it).
    rand::rng().fill_bytes(&mut secret);
    let key = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = hash(&key);
    (key, hash)
}

/// Lowercase hex SHA-256 of the whole key string (prefix included).
///
/// A fast hash is right here: the key carries 256 bits of randomness, so there is nothing for a
/// slow password hash (argon2, bcrypt) to protect against brute force, and lookups stay cheap.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Whether `credential` has the shape of one of our keys: prefix, exact length, base64url.
pub fn looks_like_api_key(credential: &str) -> bool {
    credential.len() == KEY_LEN
        && credential.starts_with(PREFIX)
        && credential[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the gateway knows about a stored key. Bridged from the state store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub name: String,
    pub groups: Vec<String>,
    pub revoked: bool,
}

/// Finds a key by its hash. The error text is audited: it must not contain the key (it only
/// ever sees the hash).
#[async_trait]
pub trait KeyLookup: Send + Sync {
    async fn find_by_hash(&self, hash: &str) -> Result<Option<KeyInfo>, String>;
}

#[async_trait]
impl<T: KeyLookup + ?Sized> KeyLookup for Arc<T> {
    async fn find_by_hash(&self, hash: &str) -> Result<Option<KeyInfo>, String> {
        (**self).find_by_hash(hash).await
    }
}

#[async_trait]
impl<T: KeyLookup + ?Sized> KeyLookup for Box<T> {
    async fn find_by_hash(&self, hash: &str) -> Result<Option<KeyInfo>, String> {
        (**self).find_by_hash(hash).await
    }
}

/// Authenticates API keys against a [`KeyLookup`]. Identity: subject `key:<name>`.
pub struct ApiKeyAuthenticator<L> {
    lookup: L,
}

impl<L: KeyLookup> ApiKeyAuthenticator<L> {
    pub fn new(lookup: L) -> Self {
        Self { lookup }
    }
}

#[async_trait]
impl<L: KeyLookup> Authenticator for ApiKeyAuthenticator<L> {
    async fn authenticate(&self, credential: &str) -> Result<Identity, AuthError> {
        if !looks_like_api_key(credential) {
            return Err(AuthError::Rejected("malformed API key".into()));
        }
        let info = self
            .lookup
            .find_by_hash(&hash(credential))
            .await
            .map_err(|e| AuthError::Unavailable(format!("API key lookup failed: {e}")))?
            .ok_or_else(|| AuthError::Rejected("unknown API key".into()))?;
        if info.revoked {
            return Err(AuthError::Rejected("API key revoked".into()));
        }
        Ok(Identity {
            subject: format!("key:{}", info.name),
            issuer: None,
            actors: Vec::new(),
            groups: info.groups,
            method: AuthMethod::ApiKey,
            expires_at: None,
            claims: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct MapLookup(HashMap<String, KeyInfo>);

    #[async_trait]
    impl KeyLookup for MapLookup {
        async fn find_by_hash(&self, hash: &str) -> Result<Option<KeyInfo>, String> {
            Ok(self.0.get(hash).cloned())
        }
    }

    struct Down;

    #[async_trait]
    impl KeyLookup for Down {
        async fn find_by_hash(&self, _: &str) -> Result<Option<KeyInfo>, String> {
            Err("store unreachable".into())
        }
    }

    fn info(name: &str, revoked: bool) -> KeyInfo {
        KeyInfo {
            name: name.into(),
            groups: vec!["ops".into()],
            revoked,
        }
    }

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let (key, h) = generate();
        assert_eq!(key.len(), KEY_LEN);
        assert!(looks_like_api_key(&key), "{key}");
        assert_eq!(h, hash(&key));
        assert_eq!(h.len(), 64);
        assert!(h
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let secret = URL_SAFE_NO_PAD.decode(&key[PREFIX.len()..]).unwrap();
        assert_eq!(secret.len(), SECRET_BYTES);
        assert_ne!(generate().0, key);
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn shape_check() {
        let (key, _) = generate();
        let cases: &[(&str, bool)] = &[
            (&key, true),
            (&key[..KEY_LEN - 1], false),
            ("", false),
            ("gh_", false),
            (&key.replacen("gh_", "gx_", 1), false),
            ("gh_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.", false),
            ("gh_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", true),
            ("gh_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", false),
            ("gh_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAé", false),
            ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", false),
        ];
        for (input, want) in cases {
            assert_eq!(looks_like_api_key(input), *want, "{input:?}");
        }
    }

    #[tokio::test]
    async fn authenticates_known_rejects_unknown_and_revoked() {
        let (good, good_hash) = generate();
        let (revoked, revoked_hash) = generate();
        let (unknown, _) = generate();
        let auth = ApiKeyAuthenticator::new(MapLookup(HashMap::from([
            (good_hash, info("ci", false)),
            (revoked_hash, info("old", true)),
        ])));

        let id = auth.authenticate(&good).await.unwrap();
        assert_eq!(id.subject, "key:ci");
        assert_eq!(id.groups, vec!["ops".to_string()]);
        assert_eq!(id.method, AuthMethod::ApiKey);
        assert_eq!(id.issuer, None);
        assert!(id.actors.is_empty());

        assert_eq!(
            auth.authenticate(&revoked).await,
            Err(AuthError::Rejected("API key revoked".into()))
        );
        assert_eq!(
            auth.authenticate(&unknown).await,
            Err(AuthError::Rejected("unknown API key".into()))
        );
        assert_eq!(
            auth.authenticate("gh_short").await,
            Err(AuthError::Rejected("malformed API key".into()))
        );
    }

    #[tokio::test]
    async fn lookup_failure_is_unavailable_and_does_not_leak_the_key() {
        let (key, _) = generate();
        let auth = ApiKeyAuthenticator::new(Arc::new(Down) as Arc<dyn KeyLookup>);
        match auth.authenticate(&key).await {
            Err(AuthError::Unavailable(msg)) => {
                assert!(msg.contains("store unreachable"));
                assert!(!msg.contains(&key));
            }
            other => panic!("{other:?}"),
        }
    }
}
