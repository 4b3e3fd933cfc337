//! Sensitive-data detection and masking, independent of any protocol.
//!
//! * [`scan`] finds values in text: payment card numbers (Luhn and BIN/length rules), US SSNs,
//!   IBANs (mod-97), email addresses, phone numbers, AWS access key ids, JWTs, PEM private
//!   keys, and custom regular expressions. Detection works on bytes of any ASCII-compatible
//!   encoding (UTF-8 and every client encoding the gateway accepts).
//! * [`Strategy`] says how a found value is replaced. Every strategy but `null` keeps the
//!   value's length, so a masked row keeps its message lengths and can be masked as it streams.
//! * [`Masker`] puts the two together and counts what it masked, by kind.

mod kind;
mod masker;
pub mod scan;
mod strategy;
mod validate;

pub use kind::{Counts, Kind};
pub use masker::{Masked, Masker, MaskerError, Pattern};
pub use strategy::{HashKey, Strategy};
