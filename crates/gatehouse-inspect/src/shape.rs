//! Statement shapes: SQL text with literal values taken out, used as a cache key so that
//! statements differing only in their literals (`... WHERE aid = 17` / `... = 42`) are
//! classified once.
//!
//! Safety rests on one property: two texts with the same shape differ only in the values of
//! number and plain string literals, which never change what a statement does. To keep that
//! true without re-implementing PostgreSQL's lexer, only a conservative subset of SQL gets a
//! shape at all: ASCII, no comments, no backslashes (escape strings), no dollar quoting, no
//! `U&` strings, no number glued to a word. Anything else returns `None` and is always parsed.

/// The shape of `sql`, or `None` when the text is outside the subset that can be cached.
pub fn shape(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                if !out.ends_with(' ') {
                    out.push(' ');
                }
                i += 1;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$')
                {
                    i += 1;
                }
                if b.get(i) == Some(&b'\'') {
                    // E'...', B'...', X'...', N'...': prefixed strings are not cached.
                    return None;
                }
                out.push_str(&sql[start..i]);
            }
            b'0'..=b'9' => {
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                    i += 1;
                }
                if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                    i += 1;
                    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                        i += 1;
                    }
                    if !b.get(i).is_some_and(u8::is_ascii_digit) {
                        return None;
                    }
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                if b.get(i)
                    .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_' || *c == b'$')
                {
                    return None;
                }
                out.push('\u{1}');
            }
            b'\'' => {
                // Plain string: ends at a quote not followed by another quote.
                i += 1;
                loop {
                    match b.get(i) {
                        None => return None,
                        Some(b'\\') => return None,
                        Some(b'\'') if b.get(i + 1) == Some(&b'\'') => i += 2,
                        Some(b'\'') => {
                            i += 1;
                            break;
                        }
                        Some(c) if !c.is_ascii() => return None,
                        Some(_) => i += 1,
                    }
                }
                if b.get(i) == Some(&b'\'') {
                    return None;
                }
                out.push('\u{2}');
            }
            b'"' => {
                // Quoted identifiers are structure, kept verbatim.
                let start = i;
                i += 1;
                loop {
                    match b.get(i) {
                        None => return None,
                        Some(b'"') if b.get(i + 1) == Some(&b'"') => i += 2,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(c) if !c.is_ascii() || *c == b'\\' => return None,
                        Some(_) => i += 1,
                    }
                }
                out.push_str(&sql[start..i]);
            }
            b'$' => {
                // Parameters ($1) only; dollar quoting is not cached.
                let start = i;
                i += 1;
                if !b.get(i).is_some_and(u8::is_ascii_digit) {
                    return None;
                }
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                out.push_str(&sql[start..i]);
            }
            b'-' if b.get(i + 1) == Some(&b'-') => return None,
            b'/' if b.get(i + 1) == Some(&b'*') => return None,
            b'(' | b')' | b',' | b';' | b'.' | b'=' | b'<' | b'>' | b'+' | b'-' | b'*' | b'/'
            | b'%' | b':' | b'[' | b']' | b'|' | b'^' | b'~' | b'!' | b'@' | b'#' => {
                out.push(char::from(c));
                i += 1;
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::shape;

    #[test]
    fn literals_are_taken_out() {
        assert_eq!(
            shape("SELECT abalance FROM pgbench_accounts WHERE aid = 17;"),
            shape("SELECT abalance FROM pgbench_accounts WHERE aid = 98213;")
        );
        assert_eq!(shape("SELECT 'a''b', 1.5e3"), shape("SELECT 'zz', 2"));
        assert_eq!(
            shape("select \"My Table\".x from \"My Table\""),
            Some("select \"My Table\".x from \"My Table\"".into())
        );
        assert_eq!(shape("SELECT $1, $2"), Some("SELECT $1, $2".into()));
    }

    #[test]
    fn structure_is_kept() {
        assert_ne!(shape("SELECT 1"), shape("DELETE 1"));
        assert_ne!(shape("SELECT * FROM a"), shape("SELECT * FROM b"));
        assert_ne!(shape("SELECT 'x'; DROP TABLE t"), shape("SELECT 'x'"));
    }

    #[test]
    fn anything_ambiguous_is_not_cached() {
        for sql in [
            "SELECT 'a\\' ; DROP TABLE t; --'",
            "SELECT E'x'",
            "SELECT U&'x'",
            "SELECT $$x$$",
            "SELECT $tag$x$tag$",
            "SELECT 1 -- comment",
            "SELECT /* c */ 1",
            "SELECT 0x1F",
            "SELECT 1e",
            "SELECT 'unterminated",
            "SELECT 'é'",
            "SELECT \"unterminated",
            "SELECT `x`",
            "SELECT 'a'' 'b'",
        ] {
            assert_eq!(shape(sql), None, "{sql}");
        }
    }
}
