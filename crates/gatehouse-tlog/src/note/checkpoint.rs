//! The C2SP `tlog-checkpoint` note body: what a log commits to at one tree size.
//!
//! ```text
//! <origin>\n
//! <tree size, decimal>\n
//! <root hash, base64>\n
//! [<extension line>\n ...]
//! ```

use super::error::NoteError;
use super::key::{Signer, Verifier};
use super::signed::SignedNote;
use crate::hash::Hash;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use thiserror::Error;

/// Why a checkpoint could not be read, written or opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckpointError {
    /// The body does not end in a newline.
    #[error("checkpoint body does not end in a newline")]
    NotNewlineTerminated,
    /// Fewer than the three mandatory lines.
    #[error("checkpoint body has fewer than three lines")]
    TooFewLines,
    /// An empty line (origin and extension lines must be non-empty).
    #[error("checkpoint line {line} is empty")]
    EmptyLine {
        /// 1-based line number.
        line: usize,
    },
    /// A newline or other control character inside a line.
    #[error("checkpoint line {line} contains a control character")]
    ControlCharacter {
        /// 1-based line number.
        line: usize,
    },
    /// The size line is not decimal digits without leading zeros, or overflows 64 bits.
    #[error("tree size is not a canonical decimal number")]
    InvalidSize,
    /// The root line is not the canonical base64 of 32 bytes.
    #[error("root hash is not canonical base64 of 32 bytes")]
    InvalidRootHash,
    /// The signed note around the body is malformed or not signed by the expected key.
    #[error(transparent)]
    Note(#[from] NoteError),
}

/// A log's commitment to its tree at `size` leaves.
///
/// The origin identifies the log; callers must compare it with the origin they expect, since
/// a valid signature by the right key on another log's checkpoint is still the wrong log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, conventionally a schema-less URL (`example.com/log`).
    pub origin: String,
    /// Number of leaves in the tree.
    pub size: u64,
    /// `MTH` of those leaves.
    pub root: Hash,
    /// Opaque extra lines (discouraged by the spec, as monitors cannot audit them).
    pub extensions: Vec<String>,
}

fn check_line(text: &str, line: usize) -> Result<(), CheckpointError> {
    if text.is_empty() {
        return Err(CheckpointError::EmptyLine { line });
    }
    if text.bytes().any(|b| b < 0x20) {
        return Err(CheckpointError::ControlCharacter { line });
    }
    Ok(())
}

fn parse_size(text: &str) -> Result<u64, CheckpointError> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !canonical {
        return Err(CheckpointError::InvalidSize);
    }
    text.parse().map_err(|_| CheckpointError::InvalidSize)
}

fn parse_root(text: &str) -> Result<Hash, CheckpointError> {
    let decoded = BASE64
        .decode(text)
        .map_err(|_| CheckpointError::InvalidRootHash)?;
    let root: Hash = decoded
        .try_into()
        .map_err(|_| CheckpointError::InvalidRootHash)?;
    // The engine already refuses non-canonical padding bits; this keeps parse and to_body
    // exact inverses whatever the engine's settings.
    if BASE64.encode(root) != text {
        return Err(CheckpointError::InvalidRootHash);
    }
    Ok(root)
}

impl Checkpoint {
    /// The note body, each line ending in a newline. Fails if the origin or an extension is
    /// empty or contains a newline or control character, as the result would not parse.
    pub fn to_body(&self) -> Result<String, CheckpointError> {
        check_line(&self.origin, 1)?;
        for (i, extension) in self.extensions.iter().enumerate() {
            check_line(extension, i + 4)?;
        }
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        );
        for extension in &self.extensions {
            body.push_str(extension);
            body.push('\n');
        }
        Ok(body)
    }

    /// Parses a body exactly as [`Checkpoint::to_body`] writes it; nothing else is accepted.
    pub fn parse(body: &str) -> Result<Self, CheckpointError> {
        let lines = body
            .strip_suffix('\n')
            .ok_or(CheckpointError::NotNewlineTerminated)?;
        let lines: Vec<&str> = lines.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            check_line(line, i + 1)?;
        }
        let [origin, size, root, extensions @ ..] = lines.as_slice() else {
            return Err(CheckpointError::TooFewLines);
        };
        Ok(Self {
            origin: (*origin).to_owned(),
            size: parse_size(size)?,
            root: parse_root(root)?,
            extensions: extensions.iter().map(|e| (*e).to_owned()).collect(),
        })
    }

    /// Signs the body with `signer`. The spec recommends the key name equal the origin.
    pub fn sign(&self, signer: &Signer) -> Result<SignedNote, CheckpointError> {
        Ok(signer.sign(&self.to_body()?)?)
    }

    /// Parses signed checkpoint text, checks `verifier`'s signature on it, and returns the
    /// checkpoint. The caller still has to check the origin (see [`Checkpoint`]).
    pub fn open(text: impl AsRef<[u8]>, verifier: &Verifier) -> Result<Self, CheckpointError> {
        let note = SignedNote::parse(text)?;
        note.verify(verifier)?;
        Self::parse(note.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            origin: "example.com/behind-the-sofa".into(),
            size: 20852163,
            root: BASE64
                .decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
                .unwrap()
                .try_into()
                .unwrap(),
            extensions: vec![],
        }
    }

    #[test]
    fn spec_example_body_round_trips() {
        let body =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        assert_eq!(Checkpoint::parse(body), Ok(sample()));
        assert_eq!(sample().to_body().unwrap(), body);
    }

    #[test]
    fn sizes_must_be_canonical() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        for bad in [
            "",
            "00",
            "01",
            "+1",
            "-1",
            " 1",
            "1 ",
            "18446744073709551616",
            "1e3",
            "١",
        ] {
            assert_eq!(
                parse_size(bad),
                Err(CheckpointError::InvalidSize),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn roots_must_be_canonical_base64_of_32_bytes() {
        let good = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=";
        assert!(parse_root(good).is_ok());
        for bad in [
            "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=", // non-zero padding bits
            "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I",  // no padding
            "CsUYapGGPo4dkMgIAUqom_Xajj7h2fB2MPA3j2jxq2I=", // URL alphabet
            "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxqw==", // 31 bytes
            "",
        ] {
            assert_eq!(
                parse_root(bad),
                Err(CheckpointError::InvalidRootHash),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_lines_are_refused_both_ways() {
        let mut c = sample();
        c.origin = String::new();
        assert_eq!(c.to_body(), Err(CheckpointError::EmptyLine { line: 1 }));
        c.origin = "a\nb".into();
        assert_eq!(
            c.to_body(),
            Err(CheckpointError::ControlCharacter { line: 1 })
        );
        let mut c = sample();
        c.extensions = vec!["ok".into(), String::new()];
        assert_eq!(c.to_body(), Err(CheckpointError::EmptyLine { line: 5 }));

        assert_eq!(
            Checkpoint::parse(""),
            Err(CheckpointError::NotNewlineTerminated)
        );
        assert_eq!(
            Checkpoint::parse("a\n1\n"),
            Err(CheckpointError::TooFewLines)
        );
        assert_eq!(
            Checkpoint::parse("a\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"),
            Err(CheckpointError::EmptyLine { line: 4 })
        );
        assert_eq!(
            Checkpoint::parse("a\r\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"),
            Err(CheckpointError::ControlCharacter { line: 1 })
        );
    }
}
