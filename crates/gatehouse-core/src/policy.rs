//! The policy step: who may run what. Pure: a decision from the identity, the connection and
//! the statement in its context.

use crate::command::Command;
use crate::connection::Connection;
use crate::identity::Identity;
pub use gatehouse_policy::masking::MaskVerdict;
use std::sync::Arc;

/// Where in its protocol a statement is being decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// A simple query (possibly several statements), run as it arrives.
    Query,
    /// A statement prepared (named, or the unnamed one); it runs at a later Execute.
    Prepare { name: &'a str },
    /// A portal run: the statement's text is what was prepared under `statement`, if known.
    Execute {
        portal: &'a str,
        statement: Option<&'a str>,
    },
    /// A server function called directly by its object id (PostgreSQL fastpath).
    FunctionCall { oid: u32 },
}

impl Step<'_> {
    pub fn as_str(&self) -> &'static str {
        match self {
            Step::Query => "query",
            Step::Prepare { .. } => "prepare",
            Step::Execute { .. } => "execute",
            Step::FunctionCall { .. } => "function_call",
        }
    }
}

/// The server's transaction state, as last reported by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transaction {
    Idle,
    InBlock,
    Failed,
}

/// Everything a policy sees about one statement.
#[derive(Debug, Clone, Copy)]
pub struct StatementContext<'a> {
    pub identity: &'a Identity,
    pub connection: &'a Connection,
    pub command: &'a Command,
    pub step: Step<'a>,
    pub transaction: Transaction,
    /// Whether the caller holds an approved, unexpired access grant to the connection.
    pub granted: bool,
}

/// What the response to an allowed statement goes through on its way to the client: the
/// masking that applies to the caller (detectors over every text value it returns).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponsePlan {
    pub masking: MaskVerdict,
}

/// A statement refused by a rule; the caller sees the rule and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: String,
    pub reason: String,
    /// The protocol-neutral error code (a SQLSTATE for SQL protocols).
    pub code: &'static str,
}

/// A statement held until people approve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingApproval {
    pub rule: String,
    pub reason: String,
    pub spec: gatehouse_policy::ApprovalSpec,
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    Allow { plan: ResponsePlan },
    Block(Refusal),
    Hold(PendingApproval),
}

/// A decision with what the record says about how it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruling {
    pub decision: Decision,
    /// The SHA-256 of the rules that decided (`None` for the built-in allow-all policy).
    pub policy: Option<Arc<str>>,
    /// Rules in observe mode that matched, with what they would have done.
    pub observed: Vec<(String, &'static str)>,
    /// Whether the deciding rule matched a statement whose effect it could not see.
    pub unseen: bool,
    /// The masking that applies to the caller: what they are shown, what the record keeps.
    pub masking: MaskVerdict,
}

impl Ruling {
    pub fn allow() -> Self {
        Ruling {
            decision: Decision::Allow {
                plan: ResponsePlan::default(),
            },
            policy: None,
            observed: Vec::new(),
            unseen: false,
            masking: MaskVerdict::None,
        }
    }
}

/// Decides statements. Called on the statement path: must not block.
pub trait Policy: Send + Sync {
    fn decide(&self, statement: &StatementContext<'_>) -> Ruling;

    /// The masking that applies to a caller on a connection now (for what the server sends
    /// outside any statement: notifications, notices, reported settings).
    fn masking(&self, identity: &Identity, connection: &Connection, granted: bool) -> MaskVerdict {
        let _ = (identity, connection, granted);
        MaskVerdict::None
    }

    /// Changes whenever the rules are replaced (a reload), so that what was chosen under the
    /// old ones can be chosen again.
    fn generation(&self) -> u64 {
        0
    }
}

/// Allows everything: the policy until rules are configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Policy for AllowAll {
    fn decide(&self, _: &StatementContext<'_>) -> Ruling {
        Ruling::allow()
    }
}
