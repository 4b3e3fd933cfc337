//! First classification of SQL text: read, write, ddl or other.
//!
//! The parser is `sqlparser` with the PostgreSQL dialect. Text it cannot parse (vendor syntax,
//! a truncated statement) falls back to its first keyword and is flagged `parsed: false`, so a
//! later policy can treat it as unclassifiable and fail closed.

use serde::Serialize;
use sqlparser::ast::{CopySource, Query, SetExpr, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// What a statement does, ordered from least to most consequential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementKind {
    /// Reads data only (SELECT, SHOW, COPY ... TO, EXPLAIN without ANALYZE).
    Read,
    /// Session and transaction control and everything not listed elsewhere (SET, BEGIN, VACUUM).
    Other,
    /// Changes rows (INSERT, UPDATE, DELETE, MERGE, COPY ... FROM, TRUNCATE).
    Write,
    /// Changes schema or privileges (CREATE, ALTER, DROP, GRANT, REVOKE).
    Ddl,
}

impl StatementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::Read => "read",
            StatementKind::Other => "other",
            StatementKind::Write => "write",
            StatementKind::Ddl => "ddl",
        }
    }
}

/// The classification of one piece of SQL text, which may hold several statements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classification {
    /// The most consequential kind among the statements (`Other` for empty text).
    pub kind: StatementKind,
    /// How many statements the text holds (0 for empty text).
    pub statements: usize,
    /// Whether the parser understood the text; `false` means the kind came from keywords.
    pub parsed: bool,
}

/// Classifies SQL text, remembering the classification of recent statement shapes (see
/// [`crate::shape`]) so statements that differ only in literals are parsed once. One per
/// session: no locking.
pub struct Classifier {
    cache: std::collections::HashMap<String, Classification>,
    capacity: usize,
}

impl Classifier {
    pub fn new(capacity: usize) -> Self {
        Classifier {
            cache: std::collections::HashMap::new(),
            capacity,
        }
    }

    pub fn classify(&mut self, sql: &str) -> Classification {
        let Some(shape) = crate::shape::shape(sql) else {
            return classify(sql);
        };
        if let Some(hit) = self.cache.get(&shape) {
            return hit.clone();
        }
        let classification = classify(sql);
        if self.cache.len() >= self.capacity {
            // Workloads repeat a few shapes; starting over is simpler than LRU and bounded.
            self.cache.clear();
        }
        self.cache.insert(shape, classification.clone());
        classification
    }
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::new(512)
    }
}

/// Classifies SQL text. Never panics, whatever the input.
pub fn classify(sql: &str) -> Classification {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(statements) => Classification {
            kind: statements
                .iter()
                .map(statement_kind)
                .max()
                .unwrap_or(StatementKind::Other),
            statements: statements.len(),
            parsed: true,
        },
        Err(_) => classify_by_keywords(sql),
    }
}

fn statement_kind(statement: &Statement) -> StatementKind {
    use StatementKind::*;
    match statement {
        Statement::Query(query) => query_kind(query),
        Statement::Insert(_)
        | Statement::Update { .. }
        | Statement::Delete(_)
        | Statement::Merge { .. }
        | Statement::Truncate { .. } => Write,
        Statement::Copy { source, to, .. } => match (source, to) {
            (CopySource::Query(_), _) => Read,
            (CopySource::Table { .. }, true) => Read,
            (CopySource::Table { .. }, false) => Write,
        },
        Statement::CopyIntoSnowflake { .. } => Write,
        Statement::Explain {
            analyze, statement, ..
        } => {
            // EXPLAIN ANALYZE executes its statement.
            if *analyze {
                statement_kind(statement)
            } else {
                Read
            }
        }
        Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowCreate { .. } => Read,
        Statement::Fetch { .. } => Read,
        Statement::Declare { stmts } => stmts
            .iter()
            .map(|d| match &d.for_query {
                Some(q) => query_kind(q),
                None => Read,
            })
            .max()
            .unwrap_or(Read),
        Statement::Execute { .. } | Statement::Call(_) => Write,
        s if is_ddl(s) => Ddl,
        _ => Other,
    }
}

fn is_ddl(statement: &Statement) -> bool {
    let text = statement_keyword(statement);
    matches!(
        text.as_str(),
        "CREATE" | "ALTER" | "DROP" | "GRANT" | "REVOKE" | "COMMENT" | "RENAME"
    )
}

/// The first keyword of a parsed statement, from its canonical rendering.
fn statement_keyword(statement: &Statement) -> String {
    statement
        .to_string()
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase()
}

fn query_kind(query: &Query) -> StatementKind {
    let ctes = query
        .with
        .as_ref()
        .map(|with| {
            with.cte_tables
                .iter()
                .map(|cte| query_kind(&cte.query))
                .max()
        })
        .unwrap_or_default()
        .unwrap_or(StatementKind::Read);
    ctes.max(set_expr_kind(&query.body))
}

fn set_expr_kind(body: &SetExpr) -> StatementKind {
    match body {
        SetExpr::Select(select) => {
            if select.into.is_some() {
                StatementKind::Write
            } else {
                StatementKind::Read
            }
        }
        SetExpr::Query(query) => query_kind(query),
        SetExpr::SetOperation { left, right, .. } => set_expr_kind(left).max(set_expr_kind(right)),
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
            StatementKind::Write
        }
        SetExpr::Values(_) | SetExpr::Table(_) => StatementKind::Read,
    }
}

/// Keyword fallback for text the parser rejects: split on `;` outside quotes is not attempted
/// here; the first keyword of the text decides.
fn classify_by_keywords(sql: &str) -> Classification {
    let first = first_keyword(sql);
    let kind = match first.as_str() {
        "SELECT" | "WITH" | "SHOW" | "TABLE" | "VALUES" | "FETCH" | "EXPLAIN" => {
            StatementKind::Read
        }
        "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "COPY" | "TRUNCATE" | "CALL" | "DO"
        | "EXECUTE" => StatementKind::Write,
        "CREATE" | "ALTER" | "DROP" | "GRANT" | "REVOKE" | "COMMENT" | "REINDEX" | "CLUSTER"
        | "SECURITY" | "IMPORT" => StatementKind::Ddl,
        _ => StatementKind::Other,
    };
    // A WITH or EXPLAIN we could not parse may hide a write: do not call it a read.
    let kind = if matches!(first.as_str(), "WITH" | "EXPLAIN") {
        StatementKind::Other
    } else {
        kind
    };
    Classification {
        kind,
        statements: usize::from(!first.is_empty()),
        parsed: false,
    }
}

/// The first SQL keyword, skipping whitespace, `--` line comments and `/* */` block comments
/// (nested, as PostgreSQL allows).
fn first_keyword(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' | b'(' | b';' => i += 1,
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                while i < bytes.len() {
                    if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            _ => break,
        }
    }
    let rest = &sql[i..];
    let end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    rest[..end].to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use StatementKind::*;

    #[test]
    fn classifies_statements() {
        let table: &[(&str, StatementKind)] = &[
            ("SELECT 1", Read),
            ("select * from t where a = $1", Read),
            ("SHOW search_path", Read),
            ("TABLE accounts", Read),
            ("VALUES (1), (2)", Read),
            ("EXPLAIN DELETE FROM t", Read),
            ("EXPLAIN ANALYZE DELETE FROM t", Write),
            ("INSERT INTO t VALUES (1)", Write),
            ("UPDATE t SET a = 1", Write),
            ("DELETE FROM t", Write),
            ("TRUNCATE t", Write),
            ("COPY t FROM STDIN", Write),
            ("COPY t TO STDOUT", Read),
            ("COPY (SELECT 1) TO STDOUT", Read),
            ("SELECT * INTO t2 FROM t", Write),
            (
                "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                Write,
            ),
            ("WITH r AS (SELECT 1) SELECT * FROM r", Read),
            ("SELECT 1 UNION SELECT 2", Read),
            ("CREATE TABLE t (a int)", Ddl),
            ("ALTER TABLE t ADD COLUMN b int", Ddl),
            ("DROP TABLE t", Ddl),
            ("CREATE INDEX i ON t (a)", Ddl),
            ("GRANT SELECT ON t TO bob", Ddl),
            ("REVOKE SELECT ON t FROM bob", Ddl),
            ("BEGIN", Other),
            ("COMMIT", Other),
            ("SET search_path = public", Other),
            ("", Other),
        ];
        for (sql, want) in table {
            assert_eq!(classify(sql).kind, *want, "{sql}");
        }
    }

    #[test]
    fn multi_statement_takes_the_most_consequential() {
        let c = classify("SELECT 1; DROP TABLE t; SELECT 2");
        assert_eq!(c.kind, Ddl);
        assert_eq!(c.statements, 3);
        assert!(c.parsed);
    }

    #[test]
    fn unparsable_text_falls_back_to_keywords() {
        let table: &[(&str, StatementKind)] = &[
            ("/* hi */ -- x\n DELETE FROM t WHERE ???", Write),
            ("SELECT FROM WHERE ((", Read),
            ("CREATE FOOBAR thing", Ddl),
            ("/* /* nested */ */ DROP SOMETHING weird", Ddl),
            ("WITH broken AS (", Other),
            ("gibberish words", Other),
        ];
        for (sql, want) in table {
            let c = classify(sql);
            assert!(!c.parsed, "{sql} should not parse");
            assert_eq!(c.kind, *want, "{sql}");
        }
    }

    #[test]
    fn cached_classification_matches_a_fresh_one() {
        let mut classifier = Classifier::new(4);
        let texts = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 2",
            "DELETE FROM t WHERE a = 'x'",
            "DELETE FROM t WHERE a = 'y'",
            "SELECT 'a'; DROP TABLE t",
            "SELECT 'b'",
            "CREATE TABLE t (a int)",
            "SELECT $1",
            "SELECT 'a\\'; DROP TABLE t; --'",
        ];
        for _ in 0..3 {
            for sql in texts {
                assert_eq!(classifier.classify(sql), classify(sql), "{sql}");
            }
        }
    }

    #[test]
    fn hostile_input_does_not_panic() {
        let deep = "(".repeat(100_000);
        let _ = classify(&format!("SELECT {deep}"));
        let _ = classify("/* unterminated");
        let _ = classify("'unterminated");
        let _ = classify("\u{0}\u{ffff}é");
        let _ = classify(&"SELECT 1;".repeat(1000));
    }
}
