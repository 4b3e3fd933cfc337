//! The `add-checkpoint` request body (C2SP `tlog-witness`): an `old <size>` line, up to 63
//! base64 consistency-proof hashes, an empty line, then the signed checkpoint.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use gatehouse_tlog::Hash;

/// The most proof lines the protocol allows (a proof between two sizes below 2^64 is shorter).
pub const MAX_PROOF_LINES: usize = 63;

/// The largest request body a witness reads: 63 proof lines, and a checkpoint with many
/// signatures and extension lines, fit comfortably.
pub const MAX_BODY: usize = 64 * 1024;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size of the previous checkpoint the log believes this witness cosigned.
    pub old_size: u64,
    /// A consistency proof from `old_size` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, as sent.
    pub checkpoint: String,
}

/// Why a request body is not an `add-checkpoint` request (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the body is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("the body is not UTF-8")]
    NotUtf8,
    #[error("the first line is not `old <size>` in decimal without leading zeros")]
    OldSize,
    #[error("proof line {0} is not one base64 SHA-256 hash")]
    ProofLine(usize),
    #[error("more than {MAX_PROOF_LINES} proof lines")]
    TooManyProofLines,
    #[error("no empty line before the checkpoint")]
    NoCheckpoint,
}

impl AddCheckpoint {
    /// Parses a request body strictly.
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        if body.len() > MAX_BODY {
            return Err(RequestError::TooLarge);
        }
        let text = std::str::from_utf8(body).map_err(|_| RequestError::NotUtf8)?;
        let (first, mut rest) = text.split_once('\n').ok_or(RequestError::OldSize)?;
        let old_size = parse_old(first).ok_or(RequestError::OldSize)?;
        let mut proof = Vec::new();
        loop {
            let (line, after) = rest.split_once('\n').ok_or(RequestError::NoCheckpoint)?;
            rest = after;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(RequestError::TooManyProofLines);
            }
            let hash = decode_hash(line).ok_or(RequestError::ProofLine(proof.len() + 1))?;
            proof.push(hash);
        }
        Ok(Self {
            old_size,
            proof,
            checkpoint: rest.to_owned(),
        })
    }

    /// The body to send.
    pub fn to_body(&self) -> String {
        let mut out = String::with_capacity(16 + 45 * self.proof.len() + self.checkpoint.len());
        out.push_str("old ");
        out.push_str(&self.old_size.to_string());
        out.push('\n');
        for hash in &self.proof {
            BASE64.encode_string(hash, &mut out);
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }
}

/// `old <decimal>`, no sign, no leading zeros (but `0` itself).
fn parse_old(line: &str) -> Option<u64> {
    let digits = line.strip_prefix("old ")?;
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

fn decode_hash(line: &str) -> Option<Hash> {
    let bytes = BASE64.decode(line).ok()?;
    bytes.try_into().ok()
}

/// The body of a 409 answer to a wrong old size: the witness's size and a newline.
pub fn size_body(size: u64) -> String {
    format!("{size}\n")
}

/// Reads a 409 body back; `None` if it is not one decimal line.
pub fn parse_size_body(body: &str) -> Option<u64> {
    let digits = body.strip_suffix('\n')?;
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

/// The content type of a 409 size answer.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

#[cfg(test)]
mod tests {
    use super::*;

    const NOTE: &str = "example.com/log\n3\nAAAA\n\n\u{2014} example.com/log abc=\n";

    #[test]
    fn a_request_round_trips() {
        let request = AddCheckpoint {
            old_size: 20_852_014,
            proof: vec![[1u8; 32], [2u8; 32]],
            checkpoint: NOTE.to_owned(),
        };
        let body = request.to_body();
        assert!(body.starts_with("old 20852014\n"));
        assert_eq!(AddCheckpoint::parse(body.as_bytes()).unwrap(), request);
        let empty = AddCheckpoint {
            old_size: 0,
            proof: Vec::new(),
            checkpoint: NOTE.to_owned(),
        };
        assert!(empty.to_body().starts_with("old 0\n\n"));
        assert_eq!(
            AddCheckpoint::parse(empty.to_body().as_bytes()).unwrap(),
            empty
        );
    }

    #[test]
    fn odd_old_lines_are_refused() {
        for first in [
            "old 01",
            "old -1",
            "old +1",
            "old ",
            "old",
            "OLD 1",
            "old 1 ",
            " old 1",
            "old 1.0",
            "old 18446744073709551616",
            "old ١",
        ] {
            let body = format!("{first}\n\n{NOTE}");
            assert_eq!(
                AddCheckpoint::parse(body.as_bytes()),
                Err(RequestError::OldSize),
                "{first:?}"
            );
        }
    }

    #[test]
    fn proofs_are_bounded_and_each_line_is_one_hash() {
        let line = BASE64.encode([7u8; 32]);
        let too_many = format!("old 1\n{}\n{NOTE}", format!("{line}\n").repeat(64));
        assert_eq!(
            AddCheckpoint::parse(too_many.as_bytes()),
            Err(RequestError::TooManyProofLines)
        );
        let short = format!("old 1\n{}\n\n{NOTE}", BASE64.encode([7u8; 31]));
        assert_eq!(
            AddCheckpoint::parse(short.as_bytes()),
            Err(RequestError::ProofLine(1))
        );
        let padded = format!("old 1\n {line}\n\n{NOTE}");
        assert_eq!(
            AddCheckpoint::parse(padded.as_bytes()),
            Err(RequestError::ProofLine(1))
        );
        assert_eq!(
            AddCheckpoint::parse(format!("old 1\n{line}\n").as_bytes()),
            Err(RequestError::NoCheckpoint)
        );
        assert_eq!(
            AddCheckpoint::parse(&vec![b'a'; MAX_BODY + 1]),
            Err(RequestError::TooLarge)
        );
        assert_eq!(
            AddCheckpoint::parse(b"old 1\n\n\xff"),
            Err(RequestError::NotUtf8)
        );
    }

    #[test]
    fn size_answers_are_strict() {
        assert_eq!(parse_size_body(&size_body(42)), Some(42));
        assert_eq!(parse_size_body("0\n"), Some(0));
        for bad in ["42", "042\n", "\n", "4 2\n", "-1\n"] {
            assert_eq!(parse_size_body(bad), None, "{bad:?}");
        }
    }
}
