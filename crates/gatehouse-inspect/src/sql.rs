//! Classification of SQL text: what each statement does, from PostgreSQL's own grammar.
//!
//! The parser is `pg_query` (libpg_query: the server's parser compiled as a library), so the
//! gateway reads statements as the server does. Text it cannot parse (a truncated statement,
//! syntax of a newer server) is split into statements by a lexer that knows PostgreSQL's
//! quoting and comments, each classified by its first keyword, and flagged `parsed: false`, so
//! a policy can treat it as unclassifiable and fail closed. Unparsed text is never `read`: a
//! statement the parser could not see may do anything its keywords do not show.

use crate::analyze::{self, StatementInfo};
use serde::Serialize;
use std::sync::Arc;

/// What a statement does, ordered from least to most consequential.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementKind {
    /// Reads data only (SELECT, SHOW, COPY ... TO, EXPLAIN without ANALYZE).
    #[default]
    Read,
    /// Session and transaction control and everything not listed elsewhere (SET, BEGIN, VACUUM).
    Other,
    /// Changes rows (INSERT, UPDATE, DELETE, MERGE, COPY ... FROM, TRUNCATE, DO, CALL).
    Write,
    /// Changes schema or privileges (CREATE, ALTER, DROP, GRANT, REVOKE).
    Ddl,
    /// The gateway does not know the statement's text (an Execute of a prepared statement it
    /// could not follow): it may do anything.
    Unknown,
}

impl StatementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::Read => "read",
            StatementKind::Other => "other",
            StatementKind::Write => "write",
            StatementKind::Ddl => "ddl",
            StatementKind::Unknown => "unknown",
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
    /// Each statement, analysed (empty when the text did not parse).
    #[serde(skip)]
    pub detail: Arc<[StatementInfo]>,
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

/// Parses `sql` with PostgreSQL's grammar; `None` when it does not parse. Never panics: a
/// panic in the parser's bindings counts as text that did not parse.
fn parse(sql: &str) -> Option<pg_query::protobuf::ParseResult> {
    std::panic::catch_unwind(|| pg_query::parse(sql, pg_query::ParserOptions::DEFAULT))
        .ok()?
        .ok()
        .map(|result| result.protobuf)
}

/// Classifies SQL text. Never panics, whatever the input.
pub fn classify(sql: &str) -> Classification {
    match parse(sql) {
        Some(parsed) => {
            let detail = analyze::analyze(&parsed, sql);
            Classification {
                kind: detail
                    .iter()
                    .map(|s| s.kind)
                    .max()
                    .unwrap_or(StatementKind::Other),
                statements: detail.len(),
                parsed: true,
                detail: detail.into(),
            }
        }
        None => classify_by_keywords(sql),
    }
}

/// The statements `sql` prepares in SQL (`PREPARE name AS ...`), in order: the name as the
/// server folds it and the original text of the whole `PREPARE` statement. `None` when the text
/// does not parse.
pub fn prepared(sql: &str) -> Option<Vec<(String, String)>> {
    let parsed = parse(sql)?;
    Some(
        analyze::analyze(&parsed, sql)
            .into_iter()
            .filter_map(|s| {
                let text = sql.get(s.span.0..s.span.1)?.trim().to_owned();
                s.prepares.map(|name| (name, text))
            })
            .collect(),
    )
}

/// The names `DEALLOCATE` statements in `sql` drop, in order (`None` for `DEALLOCATE ALL`),
/// as the server folds them; `None` when the text does not parse.
pub fn deallocated(sql: &str) -> Option<Vec<Option<String>>> {
    let parsed = parse(sql)?;
    Some(
        analyze::analyze(&parsed, sql)
            .into_iter()
            .filter_map(|s| s.deallocates)
            .collect(),
    )
}

/// Keyword fallback for text the parser rejects: every statement (split by [`split`]) is
/// classified by its first keyword; the text is at least `other`, never `read`.
fn classify_by_keywords(sql: &str) -> Classification {
    let mut kind = StatementKind::Other;
    let mut statements = 0;
    for piece in split(sql) {
        let first = first_keyword(piece);
        if first.is_empty() {
            continue;
        }
        statements += 1;
        let piece_kind = match first.as_str() {
            "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "COPY" | "TRUNCATE" | "CALL" | "DO"
            | "EXECUTE" => StatementKind::Write,
            "CREATE" | "ALTER" | "DROP" | "GRANT" | "REVOKE" | "COMMENT" | "REINDEX"
            | "CLUSTER" | "SECURITY" | "IMPORT" => StatementKind::Ddl,
            // A read we could not parse may hide a write (a CTE, a function call).
            _ => StatementKind::Other,
        };
        kind = kind.max(piece_kind);
    }
    Classification {
        kind,
        statements,
        parsed: false,
        detail: Arc::from([]),
    }
}

/// Splits SQL text at the semicolons that end statements, as PostgreSQL's lexer would: not
/// inside quotes (`'...'` with `''`, `E'...'` with backslash escapes, `"..."`), dollar quotes
/// (`$tag$...$tag$`), `--` comments or nested `/* */` comments. Unterminated quoting runs to
/// the end of the text. Assumes `standard_conforming_strings = on`.
pub fn split(sql: &str) -> Vec<&str> {
    let b = sql.as_bytes();
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut paren = 0usize;
    while i < b.len() {
        match b[i] {
            b';' if paren == 0 => {
                pieces.push(&sql[start..i]);
                start = i + 1;
                i += 1;
            }
            b'(' => {
                paren += 1;
                i += 1;
            }
            b')' => {
                paren = paren.saturating_sub(1);
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_block_comment(b, i),
            b'\'' => {
                let escapes = i > 0
                    && matches!(b[i - 1], b'e' | b'E')
                    && (i == 1 || !is_ident_byte(b[i - 2]));
                i = skip_quoted(b, i, b'\'', escapes);
            }
            b'"' => i = skip_quoted(b, i, b'"', false),
            b'$' if i == 0 || !is_ident_byte(b[i - 1]) => match dollar_tag(b, i) {
                Some(tag_len) => {
                    let tag = &b[i..i + tag_len];
                    let body = i + tag_len;
                    i = find(b, body, tag).map_or(b.len(), |end| end + tag_len);
                }
                None => i += 1,
            },
            _ => i += 1,
        }
    }
    pieces.push(&sql[start..]);
    pieces
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// The end of a quoted string or identifier starting at `b[i]`; a doubled quote continues it.
fn skip_quoted(b: &[u8], mut i: usize, quote: u8, backslash_escapes: bool) -> usize {
    i += 1;
    while i < b.len() {
        if backslash_escapes && b[i] == b'\\' {
            i += 2;
        } else if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// The end of a nested block comment starting at `b[i]`.
fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// The length of a dollar-quote tag (`$$` or `$name$`) starting at `b[i]`.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() && b[j] != b'$' {
        let c = b[j];
        let ok =
            c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 || (j > i + 1 && c.is_ascii_digit());
        if !ok {
            return None;
        }
        j += 1;
    }
    (j < b.len()).then_some(j + 1 - i)
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
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
            ("SELECT FROM WHERE ((", Other),
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
    fn unparsed_text_is_never_read_and_every_statement_counts() {
        let table: &[(&str, StatementKind, usize)] = &[
            ("SELECT 1 ??; UPDATE t SET a = 1; CHECKPOINT", Write, 3),
            ("SELECT 1 ??; DROP TABLE t", Ddl, 2),
            ("SELECT 'a;b' ??; SELECT $$;$$", Other, 2),
            ("SELECT ?? ; /* ; */ DELETE FROM t", Write, 2),
            ("SELECT E'\\';' ??; UPDATE t SET a = 2", Write, 2),
            ("SELECT \"a;\" ??; TRUNCATE t", Write, 2),
            (
                "SELECT $tag$ ; $x$ ; $tag$ ??; DO $$ BEGIN END $$",
                Write,
                2,
            ),
            ("SELECT ?? -- ; DROP TABLE t", Other, 1),
        ];
        for (sql, want, count) in table {
            let c = classify(sql);
            assert!(!c.parsed, "{sql} should not parse");
            assert_eq!((c.kind, c.statements), (*want, *count), "{sql}");
        }
    }

    #[test]
    fn follows_sql_deallocate() {
        assert_eq!(
            deallocated("DEALLOCATE Foo; deallocate prepare \"Bar\"; DEALLOCATE ALL"),
            Some(vec![Some("foo".into()), Some("Bar".into()), None])
        );
        assert_eq!(
            deallocated("DEALLOCATE /* x */ foo"),
            Some(vec![Some("foo".into())])
        );
        assert_eq!(deallocated("DEALLOCATE ??"), None);
        assert_eq!(deallocated("SELECT 1"), Some(vec![]));
    }

    #[test]
    fn follows_sql_prepare() {
        assert_eq!(
            prepared("PREPARE Foo AS UPDATE t SET a = 1; PREPARE \"Bar\" (int) AS SELECT $1"),
            Some(vec![
                ("foo".into(), "PREPARE Foo AS UPDATE t SET a = 1".into()),
                ("Bar".into(), "PREPARE \"Bar\" (int) AS SELECT $1".into()),
            ])
        );
        assert_eq!(prepared("SELECT 1"), Some(vec![]));
        assert_eq!(prepared("PREPARE p AS SELEC"), None);
    }

    #[test]
    fn split_follows_postgres_quoting() {
        assert_eq!(split("a; b"), vec!["a", " b"]);
        assert_eq!(split("a ';' b; c"), vec!["a ';' b", " c"]);
        assert_eq!(split("E'\\'' ; x"), vec!["E'\\'' ", " x"]);
        assert_eq!(split("'\\'; x"), vec!["'\\'", " x"]);
        assert_eq!(split("'it''s'; x"), vec!["'it''s'", " x"]);
        assert_eq!(split("$a$ ; $a$; x"), vec!["$a$ ; $a$", " x"]);
        assert_eq!(split("x$a$ ; y"), vec!["x$a$ ", " y"]);
        assert_eq!(
            split("/* /* ; */ ; */ x; y"),
            vec!["/* /* ; */ ; */ x", " y"]
        );
        assert_eq!(
            split("CREATE RULE r AS ON INSERT TO t DO (SELECT 1; SELECT 2); x"),
            vec![
                "CREATE RULE r AS ON INSERT TO t DO (SELECT 1; SELECT 2)",
                " x"
            ]
        );
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
