//! Typed errors for OIDC configuration, token rejection and key fetching.
//!
//! Every `Display` text here ends up in the audit log; none of it contains the token.

use gatehouse_core::AuthError;

/// Why a token was not accepted. The text is the audited rejection reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token too large")]
    TooLarge,
    #[error("malformed token")]
    Malformed,
    /// The header's `alg` (sanitised, truncated) is not on the allow-list.
    #[error("algorithm not allowed: {0}")]
    AlgorithmNotAllowed(String),
    #[error("unsupported critical header")]
    CriticalHeader,
    #[error("untrusted issuer")]
    UntrustedIssuer,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("token has no key id and several keys match")]
    AmbiguousKey,
    #[error("signing key does not match algorithm")]
    KeyMismatch,
    #[error("unusable signing key")]
    UnusableKey,
    #[error("invalid signature")]
    InvalidSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("audience not accepted")]
    Audience,
    #[error("missing claim: {0}")]
    MissingClaim(String),
    #[error("malformed claim: {0}")]
    MalformedClaim(String),
    #[error("delegation chain too deep")]
    ChainTooDeep,
}

/// Why the issuer's discovery document or keys could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: {reason}")]
    Request { url: String, reason: String },
    #[error("GET {url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: response larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("GET {url}: invalid JSON: {reason}")]
    Json { url: String, reason: String },
    #[error("discovery document names issuer {found:?}, expected {expected:?}")]
    IssuerMismatch { expected: String, found: String },
    #[error("jwks_uri {url:?} is not an https URL")]
    InsecureJwksUri { url: String },
    /// A fetch failed within the refetch cooldown; not retried yet.
    #[error("key fetch failed recently, not retrying yet: {0}")]
    Backoff(String),
}

/// An OIDC authentication failure: the token is bad, or we could not decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error(transparent)]
    Rejected(#[from] TokenError),
    #[error(transparent)]
    Unavailable(#[from] FetchError),
}

impl From<OidcError> for AuthError {
    fn from(e: OidcError) -> Self {
        match e {
            OidcError::Rejected(e) => AuthError::Rejected(e.to_string()),
            OidcError::Unavailable(e) => AuthError::Unavailable(e.to_string()),
        }
    }
}

/// A configured issuer that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("no OIDC issuers configured")]
    NoIssuers,
    #[error("issuer {issuer:?}: {reason}")]
    InvalidIssuer { issuer: String, reason: String },
    #[error("issuer {0:?} uses plain http; only https is allowed (http only for loopback)")]
    InsecureIssuer(String),
    #[error("issuer {0:?} is configured twice")]
    DuplicateIssuer(String),
    #[error("issuer {0:?}: at least one audience is required")]
    NoAudience(String),
    #[error("issuer {0:?}: at least one algorithm is required")]
    NoAlgorithms(String),
    #[error("issuer {issuer:?}: algorithm {alg} is not allowed (RS256, ES256, EdDSA only)")]
    AlgorithmNotAllowed { issuer: String, alg: String },
    #[error("issuer {issuer:?}: {field} must not be empty")]
    EmptyClaimName { issuer: String, field: &'static str },
    #[error("issuer {issuer:?}: extra CA: {reason}")]
    ExtraCa { issuer: String, reason: String },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("HTTP client setup: {0}")]
    HttpClient(String),
}
