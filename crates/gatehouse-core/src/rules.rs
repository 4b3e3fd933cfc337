//! The configured guardrails as the core's [`Policy`]: maps the session's identity, its
//! connection and the analysed statement onto a [`gatehouse_policy::Request`], and the
//! policy's verdict back onto a [`Ruling`]. The rule set can be replaced while sessions run
//! (a reload); each decision uses the set current when it is made and names its hash.

use crate::policy::{
    Decision, MaskVerdict, PendingApproval, Policy, Refusal, ResponsePlan, Ruling,
    StatementContext, Step,
};
use gatehouse_policy::{Action, Caller, Request, RuleSet};
use std::sync::{Arc, RwLock};

/// SQLSTATE insufficient_privilege: what PostgreSQL itself answers a forbidden statement.
pub const BLOCKED: &str = "42501";

/// Guardrail rules, replaceable at run time.
pub struct RulePolicy {
    current: RwLock<Arc<RuleSet>>,
    generation: std::sync::atomic::AtomicU64,
}

impl RulePolicy {
    pub fn new(rules: RuleSet) -> Self {
        RulePolicy {
            current: RwLock::new(Arc::new(rules)),
            generation: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// The rule set decisions are made with now.
    pub fn current(&self) -> Arc<RuleSet> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Makes `rules` the rule set for every decision from now on.
    pub fn replace(&self, rules: RuleSet) {
        let rules = Arc::new(rules);
        match self.current.write() {
            Ok(mut guard) => *guard = rules,
            Err(poisoned) => *poisoned.into_inner() = rules,
        }
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }
}

impl Policy for RulePolicy {
    fn decide(&self, statement: &StatementContext<'_>) -> Ruling {
        let rules = self.current();
        let identity = statement.identity;
        let command = statement.command;
        let unseen = if let Step::FunctionCall { .. } = statement.step {
            Some("a direct function call (fastpath) names only a function's object id")
        } else if !command.known {
            Some("the gateway does not know the statement's text")
        } else if !command.classification.parsed && command.classification.statements > 0 {
            Some("PostgreSQL's grammar could not parse it")
        } else {
            None
        };
        let verdict = with_request(
            identity,
            &statement.connection.name,
            statement.granted,
            &command.classification.detail,
            unseen,
            |request| rules.decide(request),
        );
        let decision = match verdict.action {
            Action::Allow => Decision::Allow {
                plan: ResponsePlan {
                    masking: verdict.masking.clone(),
                },
            },
            Action::Block => Decision::Block(Refusal {
                rule: verdict.rule.clone().unwrap_or_else(|| "default".into()),
                reason: verdict.reason,
                code: BLOCKED,
            }),
            Action::Approve => match verdict.approval.clone() {
                Some(spec) => Decision::Hold(PendingApproval {
                    rule: verdict.rule.clone().unwrap_or_else(|| "default".into()),
                    reason: verdict.reason,
                    spec,
                }),
                // The configuration gives every approve rule its approvers; should one come
                // without, it fails closed.
                None => Decision::Block(Refusal {
                    rule: verdict.rule.clone().unwrap_or_else(|| "default".into()),
                    reason: format!(
                        "{} (approval required, and no approvers are set)",
                        verdict.reason
                    ),
                    code: BLOCKED,
                }),
            },
        };
        Ruling {
            decision,
            policy: Some(rules.hash().clone()),
            observed: verdict
                .observed
                .into_iter()
                .map(|o| (o.rule, o.would.as_str()))
                .collect(),
            unseen: verdict.unseen,
            masking: verdict.masking,
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn masking(
        &self,
        identity: &crate::Identity,
        connection: &crate::Connection,
        granted: bool,
    ) -> MaskVerdict {
        let rules = self.current();
        if rules.masking().is_empty() {
            return MaskVerdict::None;
        }
        with_request(identity, &connection.name, granted, &[], None, |request| {
            rules.masking_for(request)
        })
    }
}

/// The policy's view of a caller on a connection, with the statements to decide.
fn with_request<R>(
    identity: &crate::Identity,
    connection: &str,
    granted: bool,
    statements: &[gatehouse_inspect::analyze::StatementInfo],
    unseen: Option<&str>,
    f: impl FnOnce(&Request<'_>) -> R,
) -> R {
    let principal = identity.principal();
    let actors: Vec<&str> = identity.actors.iter().map(|a| a.subject.as_str()).collect();
    f(&Request {
        caller: Caller {
            principal: &principal,
            subject: &identity.subject,
            groups: &identity.groups,
            actors: &actors,
            claims: &identity.claims,
            granted,
        },
        connection,
        statements,
        unseen,
        now: time::OffsetDateTime::now_utc(),
    })
}
