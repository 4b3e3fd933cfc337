//! Every data statement, in one place, with `?` placeholders.
//!
//! Only SQL common to SQLite and PostgreSQL is used (including `RETURNING`, which SQLite has
//! since 3.35). A PostgreSQL backend runs these through [`numbered_placeholders`] to get `$n`.

macro_rules! key_columns {
    () => {
        "name, groups_json, key_hash, prefix, created_at, revoked_at"
    };
}

macro_rules! session_columns {
    () => {
        "id, protocol, connection_name, subject, actors_json, source, started_at, ended_at, \
         statements, end_reason"
    };
}

pub const APPLIED_VERSIONS: &str = "SELECT version FROM schema_migrations ORDER BY version";
pub const RECORD_MIGRATION: &str =
    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)";

pub const INSERT_KEY: &str = concat!(
    "INSERT INTO api_keys (",
    key_columns!(),
    ") VALUES (?, ?, ?, ?, ?, NULL)"
);
pub const KEY_BY_HASH: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM api_keys WHERE key_hash = ?"
);
pub const LIST_KEYS: &str = concat!("SELECT ", key_columns!(), " FROM api_keys ORDER BY name");
/// `COALESCE` keeps the first revocation time when a key is revoked again.
pub const REVOKE_KEY: &str = concat!(
    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE name = ? RETURNING ",
    key_columns!()
);
pub const COUNT_KEYS: &str = "SELECT COUNT(*) FROM api_keys";

pub const INSERT_SESSION: &str = concat!(
    "INSERT INTO sessions (",
    session_columns!(),
    ") VALUES (?, ?, ?, ?, ?, ?, ?, NULL, 0, NULL)"
);
/// Only an open session can be finished; a second finish changes nothing.
pub const FINISH_SESSION: &str =
    "UPDATE sessions SET ended_at = ?, statements = ?, end_reason = ? \
     WHERE id = ? AND ended_at IS NULL";
pub const SESSION_BY_ID: &str =
    concat!("SELECT ", session_columns!(), " FROM sessions WHERE id = ?");
pub const LIST_SESSIONS: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions ORDER BY started_at DESC, id DESC LIMIT ?"
);

/// Upsert (`ON CONFLICT ... DO UPDATE` is common to SQLite 3.24+ and PostgreSQL).
pub const SAVE_APPROVAL: &str = "INSERT INTO approvals (id, state, created_at, body_json) \
     VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
     body_json = excluded.body_json";
pub const APPROVAL_BY_ID: &str = "SELECT body_json FROM approvals WHERE id = ?";
pub const OPEN_APPROVALS: &str =
    "SELECT body_json FROM approvals WHERE state IN ('pending', 'approved') ORDER BY created_at";
pub const LIST_APPROVALS: &str =
    "SELECT body_json FROM approvals ORDER BY created_at DESC, id DESC LIMIT ?";
pub const LIST_APPROVALS_IN_STATE: &str =
    "SELECT body_json FROM approvals WHERE state = ? ORDER BY created_at DESC, id DESC LIMIT ?";

/// Rewrites `?` placeholders to PostgreSQL's `$1, $2, ...`. Our statements contain no `?`
/// inside literals, so a plain scan is exact.
pub fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(
            numbered_placeholders("UPDATE t SET a = ? WHERE b = ? AND c = ?"),
            "UPDATE t SET a = $1 WHERE b = $2 AND c = $3"
        );
        assert_eq!(numbered_placeholders(COUNT_KEYS), COUNT_KEYS);
    }

    #[test]
    fn no_statement_has_a_question_mark_in_a_literal() {
        for q in [
            INSERT_KEY,
            KEY_BY_HASH,
            LIST_KEYS,
            REVOKE_KEY,
            INSERT_SESSION,
            FINISH_SESSION,
            SESSION_BY_ID,
            LIST_SESSIONS,
            RECORD_MIGRATION,
        ] {
            assert!(!q.contains('\''), "string literal in {q}");
        }
    }
}
