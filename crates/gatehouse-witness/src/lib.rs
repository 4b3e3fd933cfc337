//! Witnesses for the audit log's checkpoints (C2SP `tlog-witness`, `tlog-cosignature`).
//!
//! * [`request`]: the `add-checkpoint` body, parsed strictly (pure).
//! * [`Witness`]: a witness's rules — checkpoint signed by a known log, old size equal to what
//!   it cosigned, a consistency proof that holds — and its state, kept durably before it answers.
//! * [`server::router`]: the HTTP route, for `gatehouse witness serve`.
//! * [`client`]: the gateway's side: submit each checkpoint, record each cosignature.
//!
//! Two gateways can witness each other: each runs a witness configured with the other's log key.

#![forbid(unsafe_code)]

pub mod client;
pub mod keyfile;
pub mod request;
pub mod server;
mod witness;

pub use client::{Clients, StatusCell, WitnessStatus, WitnessTarget, WitnessedDetail};
pub use witness::{Answer, Init, Seen, Witness, WitnessError};
