//! Ed25519 note keys: key IDs, verifier keys and signers.

use super::error::NoteError;
use super::signed::{NoteSignature, SignedNote};
use super::text::{check_body, check_key_name};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use zeroize::Zeroizing;

/// The `signed-note` signature type byte for Ed25519.
pub const ALG_ED25519: u8 = 0x01;

/// The 4-byte key ID that starts every signature, shown as 8 lowercase hex digits.
///
/// It only picks which key to try; it is not a strong hash. The name and the full public key
/// the verifier was configured with are what make a signature trustworthy.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 4]);

impl KeyId {
    /// Parses exactly 8 lowercase hex digits, the only form notes and keys are written in.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 8 {
            return None;
        }
        let mut out = [0u8; 4];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        Some(Self(out))
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", u32::from_be_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// `SHA-256(name || 0x0A || 0x01 || public key)[:4]`, the C2SP key ID of an Ed25519 key.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> KeyId {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public_key);
    let digest = h.finalize();
    KeyId([digest[0], digest[1], digest[2], digest[3]])
}

/// Splits at the first `+`; key names cannot contain one, base64 keys can.
pub(super) fn split_plus(text: &str) -> Option<(&str, &str)> {
    text.split_once('+')
}

/// Decodes `base64(alg || 32 bytes)`, keeping the decoded bytes out of reach afterwards
/// (they are a private seed when called for a signer key).
pub(super) fn decode_typed_key(text: &str, alg: u8) -> Result<Zeroizing<[u8; 32]>, KeyTextError> {
    let decoded = Zeroizing::new(BASE64.decode(text).map_err(|_| KeyTextError::Base64)?);
    match decoded.first() {
        None => Err(KeyTextError::Length),
        Some(&first) if first == alg => {
            let key: [u8; 32] = decoded[1..].try_into().map_err(|_| KeyTextError::Length)?;
            Ok(Zeroizing::new(key))
        }
        Some(&other) => Err(KeyTextError::Algorithm(other)),
    }
}

pub(super) enum KeyTextError {
    Base64,
    Length,
    Algorithm(u8),
}

impl KeyTextError {
    /// The note error for a key of the given kind (`MalformedVerifierKey` or
    /// `MalformedSignerKey`).
    pub(super) fn into_note_error(self, malformed: fn(&'static str) -> NoteError) -> NoteError {
        match self {
            KeyTextError::Base64 => malformed("key is not canonical base64"),
            KeyTextError::Length => malformed("key is not 33 bytes"),
            KeyTextError::Algorithm(alg) => NoteError::UnknownAlgorithm(alg),
        }
    }
}

/// Parses `<name>+<8 lowercase hex>+<base64(alg || 32 bytes)>` (after any `PRIVATE+KEY+`
/// prefix, which the caller strips): the name, the written key ID and the key bytes (wiped on
/// drop: they may be a private seed). The caller recomputes the key ID and compares.
pub(super) fn parse_key_text(
    text: &str,
    alg: u8,
    malformed: fn(&'static str) -> NoteError,
) -> Result<(&str, KeyId, Zeroizing<[u8; 32]>), NoteError> {
    let (name, rest) = split_plus(text).ok_or(malformed("missing '+' after the name"))?;
    let (id_hex, key64) = split_plus(rest).ok_or(malformed("missing '+' after the key ID"))?;
    check_key_name(name)?;
    let written =
        KeyId::from_hex(id_hex).ok_or(malformed("key ID is not 8 lowercase hex digits"))?;
    let key = decode_typed_key(key64, alg).map_err(|e| e.into_note_error(malformed))?;
    Ok((name, written, key))
}

/// `<name>+<key id>+<base64(alg || key)>`, the text [`parse_key_text`] reads.
pub(super) fn key_text(name: &str, key_id: KeyId, alg: u8, key: &[u8; 32]) -> Zeroizing<String> {
    let mut typed = Zeroizing::new([0u8; 33]);
    typed[0] = alg;
    typed[1..].copy_from_slice(key);
    Zeroizing::new(format!("{name}+{key_id}+{}", BASE64.encode(&typed[..])))
}

/// An Ed25519 public key that is on the curve and not of small order (small-order keys let
/// anyone forge signatures that verify under them).
pub(super) fn strong_public_key(bytes: &[u8; 32]) -> Result<VerifyingKey, NoteError> {
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| NoteError::InvalidPublicKey)?;
    if key.is_weak() {
        return Err(NoteError::InvalidPublicKey);
    }
    Ok(key)
}

/// Fails unless the key ID written in key text is the one computed from the key.
pub(super) fn check_key_id(written: KeyId, computed: KeyId) -> Result<(), NoteError> {
    if written == computed {
        Ok(())
    } else {
        Err(NoteError::KeyIdMismatch { written, computed })
    }
}

/// Checks signatures by one Ed25519 key, known by its name and key ID.
///
/// Built from the vkey text an operator configures (`<name>+<key id>+<base64 key>`); the
/// text's key ID is recomputed and must match, so a typo cannot silently select another key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key_id: KeyId,
    key: VerifyingKey,
}

impl Verifier {
    /// A verifier for `public_key` under `name`.
    pub fn new(name: &str, public_key: &[u8; 32]) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let key = strong_public_key(public_key)?;
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, public_key),
            key,
        })
    }

    /// Parses vkey text, `<name>+<8 lowercase hex>+<base64(0x01 || public key)>`, exactly
    /// (no surrounding white space).
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let (name, written, public_key) =
            parse_key_text(vkey, ALG_ED25519, NoteError::MalformedVerifierKey)?;
        let verifier = Self::new(name, &public_key)?;
        check_key_id(written, verifier.key_id)?;
        Ok(verifier)
    }

    /// The key name signatures must carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID signatures must start with.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The vkey text that [`Verifier::parse`] reads back (also what `Display` prints).
    pub fn to_vkey(&self) -> String {
        self.to_string()
    }

    /// Whether `signature` is this key's Ed25519 signature of `message`.
    ///
    /// Uses strict verification (canonical encodings, no small-order components) so that a
    /// signature has exactly one valid encoding and cannot be malleated.
    pub(crate) fn verify_bytes(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify_strict(message, &signature).is_ok()
    }
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&key_text(
            &self.name,
            self.key_id,
            ALG_ED25519,
            self.key.as_bytes(),
        ))
    }
}

impl FromStr for Verifier {
    type Err = NoteError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Signs note bodies with one Ed25519 key under a key name.
///
/// The secret key is wiped from memory when the signer is dropped, and never printed.
#[derive(Clone)]
pub struct Signer {
    name: String,
    key_id: KeyId,
    key: SigningKey,
}

impl Signer {
    /// A signer from a 32-byte Ed25519 seed (the RFC 8032 private key) and a key name.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let key = SigningKey::from_bytes(seed);
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// Parses the signer-key text of `golang.org/x/mod/sumdb/note`:
    /// `PRIVATE+KEY+<name>+<8 lowercase hex>+<base64(0x01 || seed)>`. The key ID must match
    /// the public key derived from the seed.
    pub fn from_skey(skey: &str) -> Result<Self, NoteError> {
        let malformed = NoteError::MalformedSignerKey;
        let rest = skey
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(malformed("missing PRIVATE+KEY+ prefix"))?;
        let (name, written, seed) = parse_key_text(rest, ALG_ED25519, malformed)?;
        let signer = Self::from_seed(name, &seed)?;
        check_key_id(written, signer.key_id)?;
        Ok(signer)
    }

    /// The signer-key text [`Signer::from_skey`] reads, to store the key. Wiped on drop; it
    /// is the secret, so it must only ever be written to a protected file.
    pub fn to_skey(&self) -> Zeroizing<String> {
        let text = key_text(&self.name, self.key_id, ALG_ED25519, self.key.as_bytes());
        Zeroizing::new(format!("PRIVATE+KEY+{}", text.as_str()))
    }

    /// The key name put on signature lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID put in front of each signature.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The matching verifier, to hand out as vkey text.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs `body` (which must follow the note body rules) into a note with one signature.
    pub fn sign(&self, body: &str) -> Result<SignedNote, NoteError> {
        check_body(body)?;
        Ok(SignedNote::from_checked_parts(
            body.to_owned(),
            vec![self.signature_for(body)],
        ))
    }

    /// This key's signature line for an already-checked body.
    pub(crate) fn signature_for(&self, body: &str) -> NoteSignature {
        let signature = self.key.sign(body.as_bytes());
        NoteSignature::from_checked_parts(
            self.name.clone(),
            self.key_id,
            signature.to_bytes().to_vec(),
        )
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signer_key_text_round_trips() {
        let signer = Signer::from_seed("example.com/log", &[3u8; 32]).unwrap();
        let again = Signer::from_skey(&signer.to_skey()).unwrap();
        assert_eq!(again.verifier(), signer.verifier());
        assert_eq!(again.name(), "example.com/log");
    }

    #[test]
    fn key_id_hex_is_strict() {
        assert_eq!(
            KeyId::from_hex("c74f20a3"),
            Some(KeyId([0xc7, 0x4f, 0x20, 0xa3]))
        );
        assert_eq!(KeyId([0xc7, 0x4f, 0x20, 0xa3]).to_string(), "c74f20a3");
        assert_eq!(KeyId([0, 0, 0, 1]).to_string(), "00000001");
        for bad in [
            "C74F20A3",
            "c74f20a",
            "c74f20a30",
            "",
            "+74f20a3",
            "c74f20ag",
            "ç74f20a",
        ] {
            assert_eq!(KeyId::from_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn signer_debug_hides_the_secret() {
        let signer = Signer::from_seed("example.com/log", &[7u8; 32]).unwrap();
        let shown = format!("{signer:?}");
        assert!(shown.contains("example.com/log"));
        assert!(!shown.contains("secret"));
        assert!(!shown.contains("[7, 7"));
    }

    #[test]
    fn weak_public_keys_are_refused() {
        // The identity point: every signature "verifies" under it with the lax equation.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            Verifier::new("weak", &identity),
            Err(NoteError::InvalidPublicKey)
        );
    }
}
