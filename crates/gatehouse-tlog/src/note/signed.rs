//! The C2SP `signed-note` text: a body, a blank line, then `— <name> <base64>` lines.

use super::error::NoteError;
use super::key::{KeyId, Signer, Verifier};
use super::text::{check_body, check_key_name, check_note_chars};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use std::fmt;

/// The most signature lines a note may carry. The spec asks verifiers to accept at least 16;
/// this is the Go implementation's bound, which keeps the work per note small.
pub const MAX_SIGNATURES: usize = 100;

/// Em dash (U+2014) and a space: how every signature line starts.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// One signature line: who claims to have signed, and the signature bytes.
///
/// A parsed signature is only well formed, not verified; [`SignedNote::verify`] is what checks
/// the ones by a known key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    name: String,
    key_id: KeyId,
    signature: Vec<u8>,
}

impl NoteSignature {
    pub(crate) fn from_checked_parts(name: String, key_id: KeyId, signature: Vec<u8>) -> Self {
        Self {
            name,
            key_id,
            signature,
        }
    }

    /// The key name on the line.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID (first four decoded bytes).
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The signature bytes after the key ID (64 for Ed25519; other types differ).
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// Parses one signature line (`— <name> <base64>`, with or without its newline), as a
    /// witness returns them. Well formed only; nothing is verified.
    pub fn parse(line: &str) -> Result<Self, NoteError> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        if line.contains('\n') {
            return Err(NoteError::MalformedSignatureLine { line: 1 });
        }
        Self::parse_line(line).ok_or(NoteError::MalformedSignatureLine { line: 1 })
    }

    /// The line as it is written in a note, newline included.
    pub fn to_line(&self) -> String {
        let mut out = String::with_capacity(110);
        self.write_line(&mut out);
        out
    }

    /// Parses `— <name> <base64(key id || signature)>` without the newline.
    fn parse_line(line: &str) -> Option<Self> {
        let rest = line.strip_prefix(SIGNATURE_PREFIX)?;
        let (name, b64) = rest.split_once(' ')?;
        check_key_name(name).ok()?;
        let decoded = BASE64.decode(b64).ok()?;
        // Four bytes of key ID and at least one of signature.
        if decoded.len() < 5 {
            return None;
        }
        let key_id = KeyId([decoded[0], decoded[1], decoded[2], decoded[3]]);
        Some(Self {
            name: name.to_owned(),
            key_id,
            signature: decoded[4..].to_vec(),
        })
    }

    fn write_line(&self, out: &mut String) {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(&self.signature);
        out.push_str(SIGNATURE_PREFIX);
        out.push_str(&self.name);
        out.push(' ');
        BASE64.encode_string(raw, out);
        out.push('\n');
    }

    fn is_by(&self, name: &str, key_id: KeyId) -> bool {
        self.key_id == key_id && self.name == name
    }
}

/// A note body with one or more signature lines.
///
/// Only [`SignedNote::parse`] and [`Signer::sign`] make one, and both enforce the body rules
/// (non-empty, ends in a newline, no empty line, no control characters), so every value of
/// this type is well formed and [`SignedNote::to_text`] always round-trips.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedNote {
    body: String,
    signatures: Vec<NoteSignature>,
}

impl SignedNote {
    pub(crate) fn from_checked_parts(body: String, signatures: Vec<NoteSignature>) -> Self {
        Self { body, signatures }
    }

    /// Parses note text strictly. Signatures by any key are kept if they are well formed;
    /// nothing is verified yet.
    pub fn parse(text: impl AsRef<[u8]>) -> Result<Self, NoteError> {
        let text = check_note_chars(text.as_ref())?;
        // The body ends at the last blank line; signature lines can never be blank.
        let split = text.rfind("\n\n").ok_or(NoteError::MissingSignatures)?;
        let (body, block) = (&text[..=split], &text[split + 2..]);
        if block.is_empty() {
            return Err(NoteError::MissingSignatures);
        }
        let Some(block) = block.strip_suffix('\n') else {
            return Err(NoteError::MissingSignatures);
        };
        check_body(body)?;
        let mut signatures = Vec::new();
        for (i, line) in block.split('\n').enumerate() {
            if i >= MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures(MAX_SIGNATURES));
            }
            let signature = NoteSignature::parse_line(line)
                .ok_or(NoteError::MalformedSignatureLine { line: i + 1 })?;
            signatures.push(signature);
        }
        Ok(Self {
            body: body.to_owned(),
            signatures,
        })
    }

    /// The signed text, including its final newline.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// All signature lines, in order, verified or not.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Succeeds if `verifier`'s key signed the body.
    ///
    /// Signatures by other keys (another name or another key ID) are ignored, as the spec
    /// requires, so witnesses can cosign and logs can rotate keys. Every signature that does
    /// carry the verifier's name and key ID must verify: one bad one rejects the note, since
    /// it means someone holding a colliding identity, or a corrupted copy, is in play.
    pub fn verify(&self, verifier: &Verifier) -> Result<(), NoteError> {
        let (name, key_id) = (verifier.name(), verifier.key_id());
        let mut verified = 0usize;
        for signature in self.signatures.iter().filter(|s| s.is_by(name, key_id)) {
            if !verifier.verify_bytes(self.body.as_bytes(), &signature.signature) {
                return Err(NoteError::InvalidSignature {
                    name: name.to_owned(),
                    key_id,
                });
            }
            verified += 1;
        }
        if verified == 0 {
            return Err(NoteError::NotSignedByKey {
                name: name.to_owned(),
                key_id,
            });
        }
        Ok(())
    }

    /// Adds `signer`'s signature (a cosignature), replacing any earlier one by the same key.
    /// Fails only if the note already has [`MAX_SIGNATURES`] signatures by other keys.
    pub fn add_signature(&mut self, signer: &Signer) -> Result<(), NoteError> {
        let (name, key_id) = (signer.name(), signer.key_id());
        let others = self
            .signatures
            .iter()
            .filter(|s| !s.is_by(name, key_id))
            .count();
        if others >= MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures(MAX_SIGNATURES));
        }
        self.signatures.retain(|s| !s.is_by(name, key_id));
        self.signatures.push(signer.signature_for(&self.body));
        Ok(())
    }

    /// The note as text: body, blank line, signature lines (what `Display` prints).
    pub fn to_text(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for SignedNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::with_capacity(self.body.len() + 1 + 110 * self.signatures.len());
        out.push_str(&self.body);
        out.push('\n');
        for signature in &self.signatures {
            signature.write_line(&mut out);
        }
        f.write_str(&out)
    }
}
