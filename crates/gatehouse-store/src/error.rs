//! The one error type every store backend returns.

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A record with the same unique key (API key name, session id) already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// The caller passed a value the store refuses to persist.
    #[error("invalid value: {0}")]
    Invalid(String),
    /// Preparing the database file or its directory failed.
    #[error("state store {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database was migrated by a newer gatehouse; refusing to guess at its schema.
    #[error(
        "state store schema version {found} is newer than this gatehouse supports ({supported}); \
         upgrade gatehouse"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    /// A stored row could not be decoded (hand-edited or corrupted database).
    #[error("corrupt state store record: {0}")]
    Corrupt(String),
    /// The database driver failed (connection, SQL, busy timeout...).
    #[error("state store database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// Maps a unique-constraint violation to [`StoreError::Conflict`], anything else to
    /// [`StoreError::Database`]. Works for every sqlx backend.
    pub(crate) fn from_insert(err: sqlx::Error, what: impl FnOnce() -> String) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what()),
            _ => StoreError::Database(err),
        }
    }
}
