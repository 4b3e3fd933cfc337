//! Signed checkpoints in the formats the transparency ecosystem already reads.
//!
//! * [`Checkpoint`]: the C2SP `tlog-checkpoint` note body (origin, size, root, extensions).
//! * [`SignedNote`], [`Signer`], [`Verifier`]: C2SP `signed-note` with Ed25519 (signature
//!   type `0x01`), compatible with `golang.org/x/mod/sumdb/note`, including its verifier-key
//!   text (`<name>+<key id hex>+<base64(0x01 || public key)>`) and signer-key text.
//!
//! * [`Cosigner`], [`CosignatureVerifier`]: C2SP `tlog-cosignature` v1 (type `0x04`), the
//!   timestamped cosignatures witnesses add to a checkpoint.
//!
//! Parsing is strict: anything this module would not itself produce, apart from signatures by
//! keys it does not know, is rejected with a typed error. A note body may not contain empty
//! lines here even though `signed-note` v1 allows them, because a checkpoint body never has
//! one and an ambiguous split between body and signatures is a needless risk.

mod checkpoint;
mod cosignature;
mod error;
mod key;
mod signed;
mod text;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use cosignature::{
    cosigned_message, cosigner_key_id, CosignatureVerifier, Cosigned, Cosigner, ALG_COSIGNATURE_V1,
};
pub use error::NoteError;
pub use key::{key_id, KeyId, Signer, Verifier, ALG_ED25519};
pub use signed::{NoteSignature, SignedNote, MAX_SIGNATURES};
pub use text::is_valid_key_name;
