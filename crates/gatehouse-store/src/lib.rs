//! Gateway state: service-account API keys and the session index.
//!
//! Callers hold an `Arc<dyn Store>`; [`SqliteStore`] is the default backend. The schema
//! ([`schema::MIGRATIONS`]) and every statement ([`queries`]) use SQL common to SQLite and
//! PostgreSQL so a shared PostgreSQL backend can reuse them unchanged (bar `$n` placeholders).
//!
//! Encoding: times are integer unix nanoseconds (UTC), string lists are JSON array text.

mod codec;
mod error;
mod migrate;
pub mod queries;
mod records;
pub mod schema;
mod sqlite;

use async_trait::async_trait;
use time::OffsetDateTime;

pub use error::StoreError;
pub use records::{ApiKeyRecord, NewApiKey, NewSession, SessionRecord};
pub use sqlite::SqliteStore;

/// Persistent gateway state. Implementations are cheap to share (`Arc<dyn Store>`).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores a new key. A key with the same name (or hash) → [`StoreError::Conflict`].
    async fn insert_key(&self, key: NewApiKey) -> Result<(), StoreError>;

    /// The key with this hash, revoked or not: the caller refuses revoked keys (and can
    /// audit the attempt).
    async fn key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// All keys, revoked included, ordered by name.
    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Marks the key revoked at `at` and returns it; `None` if no key has this name.
    /// Revoking an already revoked key keeps the first `revoked_at`.
    async fn revoke_key(
        &self,
        name: &str,
        at: OffsetDateTime,
    ) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Number of keys ever created, revoked included (zero means a fresh store, which is
    /// what triggers the bootstrap admin key; revoking every key must not re-trigger it).
    async fn count_keys(&self) -> Result<u64, StoreError>;

    /// Records a session start. A duplicate id → [`StoreError::Conflict`].
    async fn insert_session(&self, session: NewSession) -> Result<(), StoreError>;

    /// Records a session end; `false` if no open session has this id (unknown, or already
    /// finished — the first finish wins).
    async fn finish_session(
        &self,
        id: &str,
        ended_at: OffsetDateTime,
        statements: u64,
        reason: &str,
    ) -> Result<bool, StoreError>;

    /// One session by id.
    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// The `limit` most recently started sessions, newest first.
    async fn list_sessions(&self, limit: u32) -> Result<Vec<SessionRecord>, StoreError>;

    /// Inserts or replaces an approval request (kept as JSON, with its state and creation
    /// time in unix nanoseconds).
    async fn save_approval(
        &self,
        id: &str,
        state: &str,
        created_at: OffsetDateTime,
        body_json: &str,
    ) -> Result<(), StoreError>;

    /// The JSON of one request.
    async fn approval(&self, id: &str) -> Result<Option<String>, StoreError>;

    /// The JSON of every request that is pending or approved, oldest first.
    async fn open_approvals(&self) -> Result<Vec<String>, StoreError>;

    /// The JSON of the `limit` newest requests, optionally only those in `state`.
    async fn list_approvals(
        &self,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;
}
