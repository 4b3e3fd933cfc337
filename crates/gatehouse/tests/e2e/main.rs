//! End-to-end tests: real PostgreSQL, real clients, the real `gatehouse` binary.

mod harness;
mod smoke;
