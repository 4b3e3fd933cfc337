//! Plain records the store reads and writes. No serde: the admin API shapes its own DTOs.

use time::OffsetDateTime;

/// A service-account API key to be stored. The secret itself is never stored, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// Unique name; the key's identity is `key:<name>`.
    pub name: String,
    pub groups: Vec<String>,
    /// Lowercase hex SHA-256 of the full key (64 characters).
    pub key_hash: String,
    /// Non-secret hint shown in listings so an operator can tell keys apart (e.g. `gh_ab12`).
    pub prefix: String,
    pub created_at: OffsetDateTime,
}

/// A stored API key, revoked or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub name: String,
    pub groups: Vec<String>,
    pub key_hash: String,
    pub prefix: String,
    pub created_at: OffsetDateTime,
    /// Set once, by the first revocation; later revocations keep it.
    pub revoked_at: Option<OffsetDateTime>,
}

impl ApiKeyRecord {
    /// A revoked key must never authenticate, but its record stays for the audit trail.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// A session as known when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// Unique id chosen by the caller (also names the recording).
    pub id: String,
    /// Protocol name, e.g. `postgres`.
    pub protocol: String,
    /// Connection name from the configuration.
    pub connection: String,
    /// Authenticated subject (`key:<name>` or the token subject).
    pub subject: String,
    /// Delegation chain: who acts on the subject's behalf, outermost first.
    pub actors: Vec<String>,
    /// Client address as text (`ip:port`).
    pub source: String,
    pub started_at: OffsetDateTime,
}

/// One row of the session index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub protocol: String,
    pub connection: String,
    pub subject: String,
    pub actors: Vec<String>,
    pub source: String,
    pub started_at: OffsetDateTime,
    /// `None` while the session is open (or if the gateway died before finishing it).
    pub ended_at: Option<OffsetDateTime>,
    pub statements: u64,
    pub end_reason: Option<String>,
}
