//! A tiny migration runner (sqlx's `migrate!` needs the macros feature, which we avoid).
//!
//! Each migration runs in its own transaction whose first statement records the version;
//! a concurrent opener that loses the race hits the primary key, rolls back and skips it.

use sqlx::SqlitePool;
use time::OffsetDateTime;

use crate::codec::time_to_db;
use crate::queries::{APPLIED_VERSIONS, RECORD_MIGRATION};
use crate::schema::{latest_version, CREATE_MIGRATIONS_TABLE, MIGRATIONS};
use crate::StoreError;

/// Brings the schema up to [`latest_version`]; returns the versions it applied.
pub(crate) async fn migrate(pool: &SqlitePool) -> Result<Vec<i64>, StoreError> {
    sqlx::query(CREATE_MIGRATIONS_TABLE).execute(pool).await?;
    let applied: Vec<i64> = sqlx::query_scalar(APPLIED_VERSIONS).fetch_all(pool).await?;
    if let Some(&found) = applied.iter().max() {
        if found > latest_version() {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: latest_version(),
            });
        }
    }
    let mut done = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let mut tx = pool.begin().await?;
        let recorded = sqlx::query(RECORD_MIGRATION)
            .bind(m.version)
            .bind(time_to_db(OffsetDateTime::now_utc())?)
            .execute(&mut *tx)
            .await;
        match recorded {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                tx.rollback().await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        for statement in m.statements {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        done.push(m.version);
    }
    Ok(done)
}
