//! Where a statement's code is: the byte ranges of its keywords and unquoted identifiers, as
//! PostgreSQL's own scanner reads them. Masking what the gateway records must never cover
//! these: a value is a literal or sits in a comment, so a "value" spanning code (two comment
//! lines shaped like a PEM key around a `DROP TABLE`) is not masked, and the record shows what
//! ran.

use std::ops::Range;

/// The code ranges of `sql`, or `None` when the scanner cannot read it (an unterminated string
/// or comment: the server refuses such text too).
pub fn code_ranges(sql: &str) -> Option<Vec<Range<usize>>> {
    let scanned = pg_query::scan(sql).ok()?;
    let ident = pg_query::protobuf::Token::Ident as i32;
    let no_keyword = pg_query::protobuf::KeywordKind::NoKeyword as i32;
    let mut ranges = Vec::new();
    for t in scanned.tokens {
        let (Ok(start), Ok(end)) = (usize::try_from(t.start), usize::try_from(t.end)) else {
            continue;
        };
        let quoted = sql.as_bytes().get(start) == Some(&b'"');
        if t.keyword_kind != no_keyword || (t.token == ident && !quoted) {
            ranges.push(start..end.min(sql.len()));
        }
    }
    Some(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_and_bare_identifiers_are_code_literals_and_comments_are_not() {
        let sql = "SELECT \"4111\", pan FROM cards WHERE pan = '4111' -- note\n";
        let code: Vec<&str> = code_ranges(sql)
            .unwrap()
            .into_iter()
            .map(|r| &sql[r])
            .collect();
        assert_eq!(code, ["SELECT", "pan", "FROM", "cards", "WHERE", "pan"]);
        assert_eq!(code_ranges("SELECT 'unterminated"), None);
    }
}
