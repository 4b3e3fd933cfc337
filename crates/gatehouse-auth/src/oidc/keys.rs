//! One issuer's signing keys: discovery, JWKS fetch, and an in-memory cache.
//!
//! Keys are fetched lazily (or by `warm_up`). A token naming an unknown `kid` triggers a
//! refetch, at most once per cooldown: callers that arrive while a fetch is running wait for it
//! and share its result, so a burst of forged `kid`s cannot turn into a burst of requests to the
//! IdP. Keys older than [`MAX_KEY_AGE`] are refreshed on next use, so a key the IdP withdrew
//! stops being trusted; if that refresh fails the old keys stay in use.

use super::error::{FetchError, OidcError, TokenError};
use super::fetch;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Cached keys older than this are refetched on next use.
pub const MAX_KEY_AGE: Duration = Duration::from_secs(3600);
/// RSA keys below 2048 bits are ignored.
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// What kind of public key a JWK holds, as far as verification cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    Ed25519,
}

impl KeyKind {
    fn of(jwk: &Jwk) -> Option<KeyKind> {
        match &jwk.algorithm {
            AlgorithmParameters::RSA(p) => {
                // base64url: 4 chars per 3 bytes.
                let bytes = p.n.trim_end_matches('=').len() * 3 / 4;
                (bytes >= MIN_RSA_MODULUS_BYTES).then_some(KeyKind::Rsa)
            }
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                Some(KeyKind::P256)
            }
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Some(KeyKind::Ed25519)
            }
            // Symmetric keys never verify anything here; other curves are unsupported.
            _ => None,
        }
    }

    fn algorithm(self) -> (Algorithm, KeyAlgorithm) {
        match self {
            KeyKind::Rsa => (Algorithm::RS256, KeyAlgorithm::RS256),
            KeyKind::P256 => (Algorithm::ES256, KeyAlgorithm::ES256),
            KeyKind::Ed25519 => (Algorithm::EdDSA, KeyAlgorithm::EdDSA),
        }
    }
}

/// A usable public key from the issuer's JWKS.
pub(crate) struct SigningKey {
    kid: Option<String>,
    kind: KeyKind,
    declared_alg: Option<KeyAlgorithm>,
    usage: Option<PublicKeyUse>,
    ops: Option<Vec<KeyOperations>>,
    pub(crate) key: DecodingKey,
}

impl SigningKey {
    fn from_jwk(jwk: &Jwk) -> Option<SigningKey> {
        let kind = KeyKind::of(jwk)?;
        let key = DecodingKey::from_jwk(jwk).ok()?;
        Some(SigningKey {
            kid: jwk.common.key_id.clone(),
            kind,
            declared_alg: jwk.common.key_algorithm,
            usage: jwk.common.public_key_use.clone(),
            ops: jwk.common.key_operations.clone(),
            key,
        })
    }

    /// Whether this key may verify a signature made with `alg`: key type, curve, declared
    /// `alg`, `use` and `key_ops` must all agree.
    fn fits(&self, alg: Algorithm) -> bool {
        let (kind_alg, key_alg) = self.kind.algorithm();
        kind_alg == alg
            && self.declared_alg.is_none_or(|a| a == key_alg)
            && self
                .usage
                .as_ref()
                .is_none_or(|u| *u == PublicKeyUse::Signature)
            && self
                .ops
                .as_ref()
                .is_none_or(|ops| ops.contains(&KeyOperations::Verify))
    }
}

/// The result of looking a key up in one snapshot of the cache.
enum Selection {
    Found(Arc<SigningKey>),
    NotFound,
    Rejected(TokenError),
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Arc<SigningKey>>,
    fetched_at: Option<Instant>,
}

impl KeySet {
    fn parse(jwks: Jwks) -> KeySet {
        let mut keys = Vec::new();
        for raw in jwks.keys {
            // One key we cannot use must not make the others unusable.
            match serde_json::from_value::<Jwk>(raw) {
                Ok(jwk) => match SigningKey::from_jwk(&jwk) {
                    Some(key) => keys.push(Arc::new(key)),
                    None => tracing::debug!(kid = ?jwk.common.key_id, "skipping unusable JWK"),
                },
                Err(e) => tracing::debug!(error = %e, "skipping unparsable JWK"),
            }
        }
        KeySet {
            keys,
            fetched_at: Some(Instant::now()),
        }
    }

    fn is_stale(&self) -> bool {
        self.fetched_at.is_none_or(|at| at.elapsed() > MAX_KEY_AGE)
    }

    fn select(&self, kid: Option<&str>, alg: Algorithm) -> Selection {
        match kid {
            Some(kid) => {
                let mut named = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid));
                let Some(first) = named.next() else {
                    return Selection::NotFound;
                };
                match std::iter::once(first).chain(named).find(|k| k.fits(alg)) {
                    Some(k) => Selection::Found(k.clone()),
                    None => Selection::Rejected(TokenError::KeyMismatch),
                }
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(k), None) => Selection::Found(k.clone()),
                    (Some(_), Some(_)) => Selection::Rejected(TokenError::AmbiguousKey),
                    (None, _) => Selection::NotFound,
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_error: Option<FetchError>,
}

/// The key cache of one issuer.
pub(crate) struct KeyCache {
    issuer: String,
    /// Whether `jwks_uri` may be plain http (only when the issuer itself is a loopback http URL).
    allow_http: bool,
    http: reqwest::Client,
    cooldown: Duration,
    keys: RwLock<Arc<KeySet>>,
    /// Held for the duration of a fetch: concurrent callers queue here and share its result.
    fetch: tokio::sync::Mutex<FetchState>,
}

impl KeyCache {
    pub(crate) fn new(
        issuer: String,
        allow_http: bool,
        http: reqwest::Client,
        cooldown: Duration,
    ) -> Self {
        KeyCache {
            issuer,
            allow_http,
            http,
            cooldown,
            keys: RwLock::new(Arc::new(KeySet::default())),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
        }
    }

    fn snapshot(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, set: KeySet) {
        let set = Arc::new(set);
        match self.keys.write() {
            Ok(mut guard) => *guard = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }

    /// The key to verify a token signed with `alg` under `kid`.
    pub(crate) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<SigningKey>, OidcError> {
        let set = self.snapshot();
        match (set.is_stale(), set.select(kid, alg)) {
            (false, selection) => {
                if let Some(result) = settled(selection) {
                    return result;
                }
            }
            (true, Selection::Found(key)) => {
                // Old but usable: one caller refreshes; the others carry on meanwhile.
                let Ok(mut state) = self.fetch.try_lock() else {
                    return Ok(key);
                };
                return self.lookup_locked(&mut state, kid, alg).await;
            }
            (true, _) => {}
        }
        let mut state = self.fetch.lock().await;
        self.lookup_locked(&mut state, kid, alg).await
    }

    /// The lookup once we hold the fetch lock: refetch unless cooling down, then select.
    async fn lookup_locked(
        &self,
        state: &mut FetchState,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<SigningKey>, OidcError> {
        // Someone else may have fetched while we waited for the lock.
        let set = self.snapshot();
        if !set.is_stale() {
            if let Some(result) = settled(set.select(kid, alg)) {
                return result;
            }
        }
        let cooling = state
            .last_attempt
            .is_some_and(|at| at.elapsed() < self.cooldown);
        if !cooling {
            if let Err(e) = self.refetch(state).await {
                // Keys we already had stay usable while the IdP is unreachable.
                return match set.select(kid, alg) {
                    Selection::Found(k) => Ok(k),
                    _ => Err(e.into()),
                };
            }
        }

        match self.snapshot().select(kid, alg) {
            Selection::Found(k) => Ok(k),
            Selection::Rejected(e) => Err(e.into()),
            Selection::NotFound => match &state.last_error {
                Some(e) => Err(FetchError::Backoff(e.to_string()).into()),
                None => Err(TokenError::UnknownKey.into()),
            },
        }
    }

    /// Fetches the keys now, whatever the cooldown; for start-up prefetching.
    pub(crate) async fn refresh(&self) -> Result<usize, FetchError> {
        let mut state = self.fetch.lock().await;
        self.refetch(&mut state).await?;
        Ok(self.snapshot().keys.len())
    }

    async fn refetch(&self, state: &mut FetchState) -> Result<(), FetchError> {
        state.last_attempt = Some(Instant::now());
        match self.fetch_keys().await {
            Ok(set) => {
                tracing::info!(issuer = %self.issuer, keys = set.keys.len(), "fetched signing keys");
                state.last_error = None;
                self.replace(set);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(issuer = %self.issuer, error = %e, "could not fetch signing keys");
                state.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    async fn fetch_keys(&self) -> Result<KeySet, FetchError> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = fetch::get_json(&self.http, &discovery_url).await?;
        if discovery.issuer != self.issuer {
            return Err(FetchError::IssuerMismatch {
                expected: self.issuer.clone(),
                found: discovery.issuer,
            });
        }
        let secure = discovery.jwks_uri.starts_with("https://");
        let loopback_http = self.allow_http && discovery.jwks_uri.starts_with("http://");
        if !secure && !loopback_http {
            return Err(FetchError::InsecureJwksUri {
                url: discovery.jwks_uri,
            });
        }
        let jwks: Jwks = fetch::get_json(&self.http, &discovery.jwks_uri).await?;
        Ok(KeySet::parse(jwks))
    }
}

/// A selection that needs no fetch: found, or definitively rejected.
fn settled(selection: Selection) -> Option<Result<Arc<SigningKey>, OidcError>> {
    match selection {
        Selection::Found(k) => Some(Ok(k)),
        Selection::Rejected(e) => Some(Err(e.into())),
        Selection::NotFound => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(keys: serde_json::Value) -> KeySet {
        KeySet::parse(serde_json::from_value(json!({ "keys": keys })).unwrap())
    }

    fn rsa(kid: &str, extra: serde_json::Value) -> serde_json::Value {
        let n = "A".repeat(344); // 258 bytes
        let mut v = json!({"kty": "RSA", "kid": kid, "n": n, "e": "AQAB"});
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            v.extend(extra.clone());
        }
        v
    }

    fn ed(kid: &str) -> serde_json::Value {
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
               "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})
    }

    fn found(s: Selection) -> Option<String> {
        match s {
            Selection::Found(k) => Some(k.kid.clone().unwrap_or_default()),
            _ => None,
        }
    }

    #[test]
    fn skips_unusable_keys() {
        let s = set(json!([
            rsa("good", json!({})),
            {"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
            {"kty": "weird"},
            ed("ed"),
        ]));
        let kids: Vec<_> = s.keys.iter().filter_map(|k| k.kid.clone()).collect();
        assert_eq!(kids, ["good", "ed"]);
    }

    #[test]
    fn selection_checks_alg_use_and_ops() {
        let s = set(json!([
            rsa("sig", json!({"use": "sig", "alg": "RS256"})),
            rsa("enc", json!({"use": "enc"})),
            rsa("ps", json!({"alg": "PS256"})),
            rsa("noverify", json!({"key_ops": ["encrypt"]})),
            ed("ed"),
        ]));
        assert_eq!(
            found(s.select(Some("sig"), Algorithm::RS256)),
            Some("sig".into())
        );
        for kid in ["enc", "ps", "noverify", "ed"] {
            assert!(
                matches!(
                    s.select(Some(kid), Algorithm::RS256),
                    Selection::Rejected(TokenError::KeyMismatch)
                ),
                "{kid}"
            );
        }
        assert!(matches!(
            s.select(Some("nope"), Algorithm::RS256),
            Selection::NotFound
        ));
        assert_eq!(found(s.select(None, Algorithm::EdDSA)), Some("ed".into()));
        assert!(matches!(
            s.select(None, Algorithm::ES256),
            Selection::NotFound
        ));
    }

    #[test]
    fn no_kid_with_several_fitting_keys_is_ambiguous() {
        let s = set(json!([rsa("a", json!({})), rsa("b", json!({}))]));
        assert!(matches!(
            s.select(None, Algorithm::RS256),
            Selection::Rejected(TokenError::AmbiguousKey)
        ));
    }
}
