//! C2SP `tlog-cosignature` v1 (Ed25519): a witness's timestamped statement that a checkpoint is
//! the largest consistent tree it has seen for that log.
//!
//! A cosignature is an ordinary note signature line, so it rides along with the log's own
//! signature in one note. What differs is the key ID (type byte `0x04`) and the signed message:
//!
//! ```text
//! cosignature/v1
//! time <POSIX seconds>
//! <the checkpoint body>
//! ```
//!
//! and the signature bytes, `timestamp (u64, big-endian) || Ed25519 signature`.

use super::error::NoteError;
use super::key::{check_key_id, key_text, parse_key_text, strong_public_key, KeyId};
use super::signed::{NoteSignature, SignedNote};
use super::text::{check_body, check_key_name};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;
use zeroize::Zeroizing;

/// The key type byte of an Ed25519 cosigner (`cosignature/v1`).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// Timestamps above this are refused (the spec's bound, `2^63 - 1`).
const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// `SHA-256(name || 0x0A || 0x04 || public key)[:4]`.
pub fn cosigner_key_id(name: &str, public_key: &[u8; 32]) -> KeyId {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_COSIGNATURE_V1]);
    h.update(public_key);
    let digest = h.finalize();
    KeyId([digest[0], digest[1], digest[2], digest[3]])
}

/// The bytes a cosigner signs for `body` at `timestamp`.
pub fn cosigned_message(body: &str, timestamp: u64) -> Vec<u8> {
    let mut message = Vec::with_capacity(body.len() + 40);
    message.extend_from_slice(b"cosignature/v1\ntime ");
    message.extend_from_slice(timestamp.to_string().as_bytes());
    message.push(b'\n');
    message.extend_from_slice(body.as_bytes());
    message
}

/// A verified cosignature: who, and when they say they saw the checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cosigned {
    /// The cosigner's name.
    pub name: String,
    /// POSIX seconds from the cosignature.
    pub timestamp: u64,
}

/// Checks cosignatures by one witness key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    key_id: KeyId,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    /// A verifier for `public_key` under `name`.
    pub fn new(name: &str, public_key: &[u8; 32]) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let key = strong_public_key(public_key)?;
        Ok(Self {
            name: name.to_owned(),
            key_id: cosigner_key_id(name, public_key),
            key,
        })
    }

    /// Parses vkey text with key type `0x04`: `<name>+<key id>+<base64(0x04 || key)>`.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let (name, written, public_key) =
            parse_key_text(vkey, ALG_COSIGNATURE_V1, NoteError::MalformedVerifierKey)?;
        let verifier = Self::new(name, &public_key)?;
        check_key_id(written, verifier.key_id)?;
        Ok(verifier)
    }

    /// The witness's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID its cosignatures start with.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Checks one signature line against the note body it was made for.
    pub fn verify_signature(
        &self,
        body: &str,
        signature: &NoteSignature,
    ) -> Result<Cosigned, NoteError> {
        let not_ours = NoteError::NotSignedByKey {
            name: self.name.clone(),
            key_id: self.key_id,
        };
        if signature.name() != self.name || signature.key_id() != self.key_id {
            return Err(not_ours);
        }
        let invalid = NoteError::InvalidSignature {
            name: self.name.clone(),
            key_id: self.key_id,
        };
        let bytes = signature.signature();
        if bytes.len() != 8 + 64 {
            return Err(invalid);
        }
        let mut stamp = [0u8; 8];
        stamp.copy_from_slice(&bytes[..8]);
        let timestamp = u64::from_be_bytes(stamp);
        if timestamp > MAX_TIMESTAMP {
            return Err(invalid);
        }
        let Ok(sig) = Signature::from_slice(&bytes[8..]) else {
            return Err(invalid);
        };
        self.key
            .verify_strict(&cosigned_message(body, timestamp), &sig)
            .map_err(|_| invalid)?;
        Ok(Cosigned {
            name: self.name.clone(),
            timestamp,
        })
    }

    /// Finds and checks this witness's cosignature in `note`. Every line that carries this
    /// witness's name and key ID must verify; the latest timestamp is returned.
    pub fn verify(&self, note: &SignedNote) -> Result<Cosigned, NoteError> {
        let mut best: Option<Cosigned> = None;
        for signature in note
            .signatures()
            .iter()
            .filter(|s| s.name() == self.name && s.key_id() == self.key_id)
        {
            let cosigned = self.verify_signature(note.body(), signature)?;
            if best
                .as_ref()
                .is_none_or(|b| cosigned.timestamp > b.timestamp)
            {
                best = Some(cosigned);
            }
        }
        best.ok_or(NoteError::NotSignedByKey {
            name: self.name.clone(),
            key_id: self.key_id,
        })
    }
}

impl fmt::Display for CosignatureVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&key_text(
            &self.name,
            self.key_id,
            ALG_COSIGNATURE_V1,
            self.key.as_bytes(),
        ))
    }
}

/// A witness's signing key. Wiped from memory on drop, never printed.
#[derive(Clone)]
pub struct Cosigner {
    name: String,
    key_id: KeyId,
    key: SigningKey,
}

impl Cosigner {
    /// A cosigner from a 32-byte Ed25519 seed and the witness's name.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let key = SigningKey::from_bytes(seed);
        Ok(Self {
            name: name.to_owned(),
            key_id: cosigner_key_id(name, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<key id>+<base64(0x04 || seed)>`.
    pub fn from_skey(skey: &str) -> Result<Self, NoteError> {
        let malformed = NoteError::MalformedSignerKey;
        let rest = skey
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(malformed("missing PRIVATE+KEY+ prefix"))?;
        let (name, written, seed) = parse_key_text(rest, ALG_COSIGNATURE_V1, malformed)?;
        let cosigner = Self::from_seed(name, &seed)?;
        check_key_id(written, cosigner.key_id)?;
        Ok(cosigner)
    }

    /// The text [`Cosigner::from_skey`] reads; the secret, for a protected file only.
    pub fn to_skey(&self) -> Zeroizing<String> {
        let text = key_text(
            &self.name,
            self.key_id,
            ALG_COSIGNATURE_V1,
            self.key.as_bytes(),
        );
        Zeroizing::new(format!("PRIVATE+KEY+{}", text.as_str()))
    }

    /// The witness's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching verifier, to hand out as vkey text.
    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The cosignature line for `body` at `timestamp` (POSIX seconds).
    pub fn cosign(&self, body: &str, timestamp: u64) -> Result<NoteSignature, NoteError> {
        check_body(body)?;
        if timestamp > MAX_TIMESTAMP {
            return Err(NoteError::MalformedSignatureLine { line: 1 });
        }
        let signature = self.key.sign(&cosigned_message(body, timestamp));
        let mut bytes = Vec::with_capacity(72);
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&signature.to_bytes());
        Ok(NoteSignature::from_checked_parts(
            self.name.clone(),
            self.key_id,
            bytes,
        ))
    }
}

impl fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cosigner")
            .field("name", &self.name)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::{Checkpoint, Signer};

    fn checkpoint_note() -> SignedNote {
        let log = Signer::from_seed("example.com/log", &[1u8; 32]).unwrap();
        Checkpoint {
            origin: "example.com/log".into(),
            size: 5,
            root: [9u8; 32],
            extensions: Vec::new(),
        }
        .sign(&log)
        .unwrap()
    }

    fn with_line(note: &SignedNote, line: &NoteSignature) -> SignedNote {
        let mut text = note.to_text();
        text.push_str(&line.to_line());
        SignedNote::parse(text).unwrap()
    }

    #[test]
    fn a_cosignature_verifies_beside_the_logs_own_signature() {
        let witness = Cosigner::from_seed("witness.example/w1", &[2u8; 32]).unwrap();
        let note = checkpoint_note();
        let line = witness.cosign(note.body(), 1_679_315_147).unwrap();
        let cosigned = with_line(&note, &line);
        let got = witness.verifier().verify(&cosigned).unwrap();
        assert_eq!(got.timestamp, 1_679_315_147);
        assert_eq!(got.name, "witness.example/w1");
        // The log's verifier ignores the cosignature and still accepts its own.
        let log = Signer::from_seed("example.com/log", &[1u8; 32]).unwrap();
        cosigned.verify(&log.verifier()).unwrap();
    }

    #[test]
    fn the_timestamp_and_body_are_both_signed() {
        let witness = Cosigner::from_seed("w", &[2u8; 32]).unwrap();
        let note = checkpoint_note();
        let line = witness.cosign(note.body(), 100).unwrap();
        let mut bytes = line.signature().to_vec();
        bytes[7] ^= 1; // another timestamp
        let moved = NoteSignature::from_checked_parts("w".into(), line.key_id(), bytes);
        assert!(matches!(
            witness.verifier().verify_signature(note.body(), &moved),
            Err(NoteError::InvalidSignature { .. })
        ));
        let other_body = note.body().replace("\n5\n", "\n6\n");
        assert!(witness
            .verifier()
            .verify_signature(&other_body, &line)
            .is_err());
    }

    #[test]
    fn a_log_signature_is_not_a_cosignature_and_other_witnesses_do_not_count() {
        let note = checkpoint_note();
        let w1 = Cosigner::from_seed("w1", &[2u8; 32]).unwrap();
        let w2 = Cosigner::from_seed("w2", &[3u8; 32]).unwrap();
        assert!(matches!(
            w1.verifier().verify(&note),
            Err(NoteError::NotSignedByKey { .. })
        ));
        let by_w2 = with_line(&note, &w2.cosign(note.body(), 1).unwrap());
        assert!(w1.verifier().verify(&by_w2).is_err());
        // The same seed under the log's key type gives another key ID: no confusion.
        let same_seed = Signer::from_seed("w1", &[2u8; 32]).unwrap();
        assert_ne!(same_seed.key_id(), w1.verifier().key_id());
    }

    #[test]
    fn keys_round_trip_and_the_type_byte_is_checked() {
        let witness = Cosigner::from_seed("witness.example/w1", &[4u8; 32]).unwrap();
        let vkey = witness.verifier().to_string();
        assert_eq!(
            CosignatureVerifier::parse(&vkey).unwrap(),
            witness.verifier()
        );
        let again = Cosigner::from_skey(&witness.to_skey()).unwrap();
        assert_eq!(again.verifier(), witness.verifier());
        // A log key (type 0x01) is not a cosigner key.
        let log_vkey = Signer::from_seed("w", &[4u8; 32])
            .unwrap()
            .verifier()
            .to_string();
        assert_eq!(
            CosignatureVerifier::parse(&log_vkey),
            Err(NoteError::UnknownAlgorithm(0x01))
        );
        assert!(!format!("{witness:?}").contains("[4, 4"));
    }
}
