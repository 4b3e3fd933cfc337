//! Reading lines with a length bound, so a corrupt or hostile file cannot exhaust memory.

use std::io::{self, BufRead};

/// What [`read_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line terminated by `\n` (the `\n` is not in the buffer).
    Complete,
    /// Bytes at the end of the input with no `\n`: a write that never finished.
    Partial,
    /// The line is longer than the bound; reading stopped inside it.
    TooLong,
    /// End of input.
    Eof,
}

/// Reads the next line into `buf` (cleared first), keeping at most `max` bytes.
pub(crate) fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    buf.clear();
    loop {
        let available = match r.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(if buf.is_empty() {
                Line::Eof
            } else {
                Line::Partial
            });
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (available.len(), false),
        };
        if buf.len() + take > max {
            return Ok(Line::TooLong);
        }
        buf.extend_from_slice(&available[..take]);
        r.consume(take + usize::from(done));
        if done {
            return Ok(Line::Complete);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn all(input: &[u8], max: usize, cap: usize) -> Vec<(Line, Vec<u8>)> {
        let mut r = BufReader::with_capacity(cap, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let line = read_line(&mut r, &mut buf, max).unwrap();
            out.push((line, buf.clone()));
            if matches!(line, Line::Eof | Line::Partial | Line::TooLong) {
                return out;
            }
        }
    }

    #[test]
    fn table() {
        use Line::*;
        for cap in [1, 2, 3, 64] {
            assert_eq!(all(b"", 10, cap), vec![(Eof, vec![])]);
            assert_eq!(
                all(b"ab\ncd\n", 10, cap),
                vec![
                    (Complete, b"ab".to_vec()),
                    (Complete, b"cd".to_vec()),
                    (Eof, vec![])
                ]
            );
            assert_eq!(
                all(b"ab\n\ncd", 10, cap),
                vec![
                    (Complete, b"ab".to_vec()),
                    (Complete, vec![]),
                    (Partial, b"cd".to_vec())
                ]
            );
            assert_eq!(all(b"abc\n", 3, cap)[0], (Complete, b"abc".to_vec()));
            assert_eq!(all(b"abcd\n", 3, cap).last().unwrap().0, TooLong);
            assert_eq!(all(b"abcd", 3, cap).last().unwrap().0, TooLong);
        }
    }
}
