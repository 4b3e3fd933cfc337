//! The schema, as an ordered list of migrations.
//!
//! Every statement uses only SQL that SQLite and PostgreSQL both accept (`BIGINT`, `TEXT`,
//! no autoincrement, no backend-specific types), so a PostgreSQL backend can apply the same
//! list. Never edit a released migration: append a new one.

/// One schema step, applied atomically together with its `schema_migrations` row.
#[derive(Debug)]
pub struct Migration {
    /// Strictly increasing, starting at 1.
    pub version: i64,
    pub name: &'static str,
    /// Executed one at a time (PostgreSQL prepared statements allow only one per query).
    pub statements: &'static [&'static str],
}

/// Bookkeeping table; created before anything else, outside the numbered migrations.
pub const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    applied_at BIGINT NOT NULL
)";

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "api keys and session index",
        statements: &[
            // Times are unix nanoseconds (UTC); groups/actors are JSON array text.
            "CREATE TABLE api_keys (
            name TEXT PRIMARY KEY,
            key_hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            groups_json TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            revoked_at BIGINT
        )",
            "CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            protocol TEXT NOT NULL,
            connection_name TEXT NOT NULL,
            subject TEXT NOT NULL,
            actors_json TEXT NOT NULL,
            source TEXT NOT NULL,
            started_at BIGINT NOT NULL,
            ended_at BIGINT,
            statements BIGINT NOT NULL,
            end_reason TEXT
        )",
            "CREATE INDEX sessions_started_at ON sessions (started_at)",
        ],
    },
    Migration {
        version: 2,
        name: "approval requests",
        statements: &[
            // The request as JSON (it is read whole); state and time kept as columns to filter on.
            "CREATE TABLE approvals (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            body_json TEXT NOT NULL
        )",
            "CREATE INDEX approvals_state ON approvals (state, created_at)",
        ],
    },
];

/// The schema version this build writes and understands.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strictly_increase_from_one() {
        for (expected, m) in (1..).zip(MIGRATIONS) {
            assert_eq!(m.version, expected, "migration {}", m.name);
            assert!(!m.statements.is_empty());
        }
    }

    #[test]
    fn statements_avoid_backend_specific_sql() {
        for m in MIGRATIONS {
            for s in m.statements {
                let upper = s.to_ascii_uppercase();
                for word in ["AUTOINCREMENT", "SERIAL", "WITHOUT ROWID", "DATETIME", ";"] {
                    assert!(!upper.contains(word), "{word} in migration {}", m.name);
                }
            }
        }
    }
}
