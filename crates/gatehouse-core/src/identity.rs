//! Who the caller is, as established by an authenticator.

use gatehouse_audit::{ActorRef, Who};
use std::fmt;
use std::net::SocketAddr;

/// How the credential was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ApiKey,
    Oidc,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Oidc => "oidc",
        }
    }
}

/// An authenticated caller with its whole delegation chain.
///
/// `subject` is on whose behalf the request is made; `actors` are the parties acting for it,
/// nearest first (RFC 8693 `act`, nested). An API key's subject is `key:<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub issuer: Option<String>,
    pub actors: Vec<ActorRef>,
    pub groups: Vec<String>,
    pub method: AuthMethod,
    /// When the credential stops being valid (a token's `exp`); open sessions end then.
    pub expires_at: Option<time::OffsetDateTime>,
    /// The verified token's claims, for rules that match on them (a CI repository, branch,
    /// environment); empty for an API key.
    pub claims: std::collections::BTreeMap<String, serde_json::Value>,
}

impl Identity {
    pub fn in_any_group(&self, groups: &[String]) -> bool {
        self.groups.iter().any(|g| groups.contains(g))
    }

    /// The subject qualified by how it was established, unique across methods and issuers:
    /// `key:<name>` for an API key, `<issuer>#<sub>` for an OIDC token (the form Kubernetes
    /// uses). A token whose `sub` is `key:x` is `https://idp#key:x`, never the API key `x`.
    pub fn principal(&self) -> String {
        match self.method {
            AuthMethod::ApiKey => self.subject.clone(),
            AuthMethod::Oidc => format!(
                "{}#{}",
                self.issuer.as_deref().unwrap_or_default(),
                self.subject
            ),
        }
    }

    /// The API key's name, for an identity established by one.
    pub fn api_key_name(&self) -> Option<&str> {
        match self.method {
            AuthMethod::ApiKey => self.subject.strip_prefix("key:"),
            AuthMethod::Oidc => None,
        }
    }

    /// The audit view of this identity, from the given source address.
    pub fn who(&self, source: Option<SocketAddr>, claimed_user: Option<&str>) -> Who {
        Who {
            subject: Some(self.subject.clone()),
            issuer: self.issuer.clone(),
            actors: self.actors.clone(),
            groups: self.groups.clone(),
            method: Some(self.method.as_str().to_owned()),
            source: source.map(|s| s.to_string()),
            claimed_user: claimed_user.map(str::to_owned),
        }
    }
}

impl fmt::Display for Identity {
    /// `agent-7 for alice` — the chain, outermost actor first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for actor in self.actors.iter().rev() {
            write!(f, "{} for ", actor.subject)?;
        }
        f.write_str(&self.subject)
    }
}

/// Why a credential was not accepted. The text is safe to audit and to log: it never contains
/// the credential itself. Callers show clients only a generic message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The credential is wrong, expired, revoked, malformed or not for us.
    #[error("{0}")]
    Rejected(String),
    /// The authenticator could not decide (identity provider or store unreachable): fail closed.
    #[error("authentication unavailable: {0}")]
    Unavailable(String),
}

/// Turns a presented credential (API key or bearer token) into an [`Identity`].
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync {
    async fn authenticate(&self, credential: &str) -> Result<Identity, AuthError>;
}
