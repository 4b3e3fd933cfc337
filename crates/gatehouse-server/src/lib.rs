//! Gatehouse server wiring: configuration, state, authentication, the audit log, the protocol
//! listeners and the admin API, assembled into one running gateway.

pub mod admin;
mod approval_store;
mod bootstrap;
pub mod config;
mod index;
mod notify;
pub mod recordings;
mod reload;
mod run;
pub mod signing;
mod wiring;

pub use run::{serve, with_checkpoints as checkpoint_options, Running};
