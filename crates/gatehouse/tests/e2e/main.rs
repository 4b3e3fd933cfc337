//! End-to-end tests: real PostgreSQL, real clients, the real `gatehouse` binary.

mod approvals;
mod audit_bundle;
mod audit_cli;
mod availability;
mod bad_input;
mod checkpoints;
mod durability;
mod fidelity;
mod guardrails;
mod harness;
mod identity;
mod lifecycle;
mod masking;
mod memory;
mod proto;
mod protocol;
mod recording;
mod siem;
mod smoke;
mod upstream_auth;
mod witness;
