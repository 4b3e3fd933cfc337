//! What a statement may do to the session's state that changes how the gateway must read what
//! follows: start a COPY from the client, change prepared statements, change how text is
//! lexed (client encoding, `standard_conforming_strings`), end a transaction.
//!
//! A deliberately coarse, case-insensitive scan for words anywhere in the text, string
//! literals and dollar-quoted bodies included (`DO $$ ... set_config('client_encoding', ...)`
//! must count). It only ever errs towards "may": the relay then waits for the server's answer
//! before it reads on, which costs a round trip and nothing else. Text it cannot see through
//! (`U&` escapes) counts as changing everything.

/// Session effects a statement text may have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effects {
    /// May start `COPY ... FROM STDIN` (the server then reads COPY data from the client).
    pub copy_in: bool,
    /// May create or drop prepared statements in SQL (`PREPARE`, `DEALLOCATE`, `DISCARD`).
    pub prepared: bool,
    /// May change the client encoding or string lexing (`SET`, `set_config`, `RESET`).
    pub lexing: bool,
    /// May end a transaction (reverting `SET LOCAL` and settings set inside it).
    pub transaction_end: bool,
}

impl Effects {
    /// Everything at once: for text the gateway does not know.
    pub const ANY: Effects = Effects {
        copy_in: true,
        prepared: true,
        lexing: true,
        transaction_end: true,
    };
}

/// The effects `sql` may have.
pub fn effects(sql: &str) -> Effects {
    let b = sql.as_bytes();
    let mut e = Effects::default();
    let (mut copy, mut stdin) = (false, false);
    let mut after_set = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_alphanumeric() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let word = &b[start..i];
            if (word == b"u" || word == b"U") && b.get(i) == Some(&b'&') {
                return Effects::ANY;
            }
            if word.len() > 27 {
                continue;
            }
            let mut lower = [0u8; 27];
            for (l, w) in lower.iter_mut().zip(word) {
                *l = w.to_ascii_lowercase();
            }
            let word = &lower[..word.len()];
            let was_after_set = std::mem::replace(&mut after_set, word == b"set");
            match word {
                b"copy" => copy = true,
                b"stdin" => stdin = true,
                b"prepare" | b"deallocate" => e.prepared = true,
                b"discard" => {
                    e.prepared = true;
                    e.lexing = true;
                }
                // `SET NAMES x` is `SET client_encoding TO x`; `names` alone is often a column.
                b"names" if was_after_set => e.lexing = true,
                b"client_encoding" | b"standard_conforming_strings" | b"set_config" | b"reset" => {
                    e.lexing = true
                }
                b"commit" | b"end" | b"rollback" | b"abort" => e.transaction_end = true,
                _ => {}
            }
        } else {
            i += 1;
        }
    }
    e.copy_in = copy && stdin;
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_words_wherever_they_are() {
        assert_eq!(
            effects("SELECT abalance FROM pgbench_accounts WHERE aid = 1"),
            Effects::default()
        );
        assert!(effects("copy t from STDIN").copy_in);
        assert!(!effects("COPY t TO STDOUT").copy_in);
        assert!(effects("/* x */ PREPARE p AS SELECT 1").prepared);
        assert!(effects("DEALLOCATE ALL").prepared);
        assert!(effects("set client_encoding to 'LATIN1'").lexing);
        assert!(effects("SET NAMES 'SJIS'").lexing);
        assert!(effects("select set_config('client_encoding', 'SJIS', false)").lexing);
        assert!(
            effects("DO $$ BEGIN PERFORM pg_catalog.SET_CONFIG('x', 'y', false); END $$").lexing
        );
        assert!(effects("SET standard_conforming_strings = off").lexing);
        assert!(effects("RESET ALL").lexing);
        let discard = effects("DISCARD ALL");
        assert!(discard.prepared && discard.lexing);
        assert!(effects("COMMIT").transaction_end);
        assert!(effects("end").transaction_end);
        assert!(effects("ROLLBACK TO SAVEPOINT a").transaction_end);
        assert_eq!(
            effects("SET U&\"\\0063lient_encoding\" TO 'SJIS'"),
            Effects::ANY
        );
        assert!(
            !effects("SELECT appended FROM t").transaction_end,
            "whole words only"
        );
        assert!(
            !effects("SELECT names FROM users").lexing,
            "a column called names"
        );
        assert!(effects("set  names 'LATIN1'").lexing);
    }
}
