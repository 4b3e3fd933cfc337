//! Errors from reading, writing and checking signed notes and keys.

use super::key::KeyId;
use thiserror::Error;

/// Why a note or key was rejected. Messages never include secret key material.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NoteError {
    /// A key name that is empty or contains a space, a `+` or a control character.
    #[error("key name is empty or contains a space, '+' or a control character")]
    InvalidKeyName,
    /// Verifier-key text that is not `<name>+<8 hex digits>+<base64 key>`.
    #[error("malformed verifier key: {0}")]
    MalformedVerifierKey(&'static str),
    /// Signer-key text that is not `PRIVATE+KEY+<name>+<8 hex digits>+<base64 key>`.
    #[error("malformed signer key: {0}")]
    MalformedSignerKey(&'static str),
    /// A key whose type byte is not Ed25519 (`0x01`).
    #[error("unsupported key type 0x{0:02x}")]
    UnknownAlgorithm(u8),
    /// The key ID written in a key does not match the one computed from its name and key.
    #[error("key ID {written} does not match the key (computed {computed})")]
    KeyIdMismatch {
        /// The key ID in the text.
        written: KeyId,
        /// `SHA-256(name || 0x0A || 0x01 || key)[:4]`.
        computed: KeyId,
    },
    /// A public key that is not a usable Ed25519 point (off the curve, or of small order).
    #[error("invalid Ed25519 public key")]
    InvalidPublicKey,
    /// The note is not UTF-8.
    #[error("note is not valid UTF-8")]
    NotUtf8,
    /// The note has an ASCII control character other than newline.
    #[error("note has a control character at byte {offset}")]
    ControlCharacter {
        /// Byte offset of the character.
        offset: usize,
    },
    /// No blank line followed by signature lines ending in a newline.
    #[error("note has no signature block after a blank line")]
    MissingSignatures,
    /// The body is empty.
    #[error("note body is empty")]
    EmptyBody,
    /// The body does not end in a newline.
    #[error("note body does not end in a newline")]
    BodyNotNewlineTerminated,
    /// The body contains an empty line.
    #[error("note body contains an empty line")]
    EmptyLineInBody,
    /// A signature line is not `— <name> <base64(key id || signature)>`.
    #[error("signature line {line} is malformed")]
    MalformedSignatureLine {
        /// 1-based line number within the signature block.
        line: usize,
    },
    /// More signature lines than [`super::MAX_SIGNATURES`].
    #[error("note has more than {0} signatures")]
    TooManySignatures(usize),
    /// A signature by the verifier's key (same name and key ID) that does not verify.
    #[error("invalid signature by {name}+{key_id}")]
    InvalidSignature {
        /// The key name.
        name: String,
        /// The key ID.
        key_id: KeyId,
    },
    /// No signature by the verifier's key at all.
    #[error("note has no signature by {name}+{key_id}")]
    NotSignedByKey {
        /// The key name.
        name: String,
        /// The key ID.
        key_id: KeyId,
    },
}
