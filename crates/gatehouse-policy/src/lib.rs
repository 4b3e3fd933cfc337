//! Guardrails: rules over who is asking, where, when and what the statement does (as
//! PostgreSQL's own grammar reads it), decided without I/O. The core asks; adapters carry the
//! answer out in their protocol.

pub mod condition;
pub mod config;
mod glob;
pub mod masking;
pub mod rules;

pub use rules::{Action, ApprovalSpec, Caller, Mode, Observation, Request, Rule, RuleSet, Verdict};
