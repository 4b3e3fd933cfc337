//! The default backend: one SQLite file under the data directory.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use time::OffsetDateTime;

use crate::codec::{
    count_from_db, count_to_db, list_from_db, list_to_db, opt_time_from_db, time_from_db,
    time_to_db,
};
use crate::{migrate, queries as q};
use crate::{ApiKeyRecord, NewApiKey, NewSession, SessionRecord, Store, StoreError};

/// How long a writer waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// WAL allows concurrent readers; writes still serialise on the file lock.
const MAX_CONNECTIONS: u32 = 4;

/// [`Store`] on a SQLite file (WAL mode, `synchronous=FULL` so a committed revocation
/// survives power loss).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    /// A new file is created with mode 0600 and missing parent directories with 0700.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        prepare_file(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = connect_retrying_busy(options).await?;
        Self::migrated(pool).await
    }

    /// A private in-memory database, for tests of code that needs a [`Store`].
    pub async fn in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        // Each connection would get its own empty database, and a recycled connection would
        // lose it: keep exactly one, forever.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Self::migrated(pool).await
    }

    async fn migrated(pool: SqlitePool) -> Result<Self, StoreError> {
        migrate::migrate(&pool).await?;
        Ok(Self { pool })
    }

    /// Waits for open connections to finish and closes them (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Connects, retrying while SQLite reports "database is locked". Switching a fresh file to
/// WAL needs an exclusive lock and SQLite fails that at once, without the busy handler,
/// when another process is opening the same new file.
async fn connect_retrying_busy(options: SqliteConnectOptions) -> Result<SqlitePool, StoreError> {
    const PAUSE: Duration = Duration::from_millis(20);
    let mut waited = Duration::ZERO;
    loop {
        let result = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options.clone())
            .await;
        match result {
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("5") => {
                if waited >= BUSY_TIMEOUT {
                    return Err(sqlx::Error::Database(e).into());
                }
                tokio::time::sleep(PAUSE).await;
                waited += PAUSE;
            }
            other => return Ok(other?),
        }
    }
}

/// Creates the parent directory (0700) and an empty database file (0600) so SQLite never
/// creates them with the process umask; SQLite gives its -wal/-shm files the same mode.
fn prepare_file(path: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut dir = std::fs::DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
        dir.create(parent).map_err(io)?;
    }
    let mut file = std::fs::OpenOptions::new();
    file.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    file.open(path).map(drop).map_err(io)
}

fn key_from_row(row: &SqliteRow) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        name: row.try_get("name")?,
        groups: list_from_db(row.try_get("groups_json")?)?,
        key_hash: row.try_get("key_hash")?,
        prefix: row.try_get("prefix")?,
        created_at: time_from_db(row.try_get("created_at")?)?,
        revoked_at: opt_time_from_db(row.try_get("revoked_at")?)?,
    })
}

fn session_from_row(row: &SqliteRow) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: row.try_get("id")?,
        protocol: row.try_get("protocol")?,
        connection: row.try_get("connection_name")?,
        subject: row.try_get("subject")?,
        actors: list_from_db(row.try_get("actors_json")?)?,
        source: row.try_get("source")?,
        started_at: time_from_db(row.try_get("started_at")?)?,
        ended_at: opt_time_from_db(row.try_get("ended_at")?)?,
        statements: count_from_db(row.try_get("statements")?)?,
        end_reason: row.try_get("end_reason")?,
    })
}

/// Hashes are compared as text, so one spelling only: 64 lowercase hex digits.
fn check_key_hash(hash: &str) -> Result<(), StoreError> {
    let ok = hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(
            "key_hash must be 64 lowercase hex digits".into(),
        ))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_key(&self, key: NewApiKey) -> Result<(), StoreError> {
        if key.name.is_empty() {
            return Err(StoreError::Invalid("API key name must not be empty".into()));
        }
        check_key_hash(&key.key_hash)?;
        sqlx::query(q::INSERT_KEY)
            .bind(&key.name)
            .bind(list_to_db(&key.groups)?)
            .bind(&key.key_hash)
            .bind(&key.prefix)
            .bind(time_to_db(key.created_at)?)
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::from_insert(e, || format!("API key {:?}", key.name)))?;
        Ok(())
    }

    async fn key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(q::KEY_BY_HASH)
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(q::LIST_KEYS).fetch_all(&self.pool).await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_key(
        &self,
        name: &str,
        at: OffsetDateTime,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(q::REVOKE_KEY)
            .bind(time_to_db(at)?)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn count_keys(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(q::COUNT_KEYS)
            .fetch_one(&self.pool)
            .await?;
        count_from_db(n)
    }

    async fn insert_session(&self, session: NewSession) -> Result<(), StoreError> {
        sqlx::query(q::INSERT_SESSION)
            .bind(&session.id)
            .bind(&session.protocol)
            .bind(&session.connection)
            .bind(&session.subject)
            .bind(list_to_db(&session.actors)?)
            .bind(&session.source)
            .bind(time_to_db(session.started_at)?)
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::from_insert(e, || format!("session {:?}", session.id)))?;
        Ok(())
    }

    async fn finish_session(
        &self,
        id: &str,
        ended_at: OffsetDateTime,
        statements: u64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(q::FINISH_SESSION)
            .bind(time_to_db(ended_at)?)
            .bind(count_to_db(statements)?)
            .bind(reason)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(q::SESSION_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn list_sessions(&self, limit: u32) -> Result<Vec<SessionRecord>, StoreError> {
        let rows = sqlx::query(q::LIST_SESSIONS)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(session_from_row).collect()
    }

    async fn save_approval(
        &self,
        id: &str,
        state: &str,
        created_at: OffsetDateTime,
        body_json: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(q::SAVE_APPROVAL)
            .bind(id)
            .bind(state)
            .bind(time_to_db(created_at)?)
            .bind(body_json)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn approval(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(q::APPROVAL_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn open_approvals(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(q::OPEN_APPROVALS)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn list_approvals(
        &self,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let rows = match state {
            Some(state) => {
                sqlx::query_scalar(q::LIST_APPROVALS_IN_STATE)
                    .bind(state)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query_scalar(q::LIST_APPROVALS)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(rows)
    }
}
