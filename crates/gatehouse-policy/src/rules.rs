//! Rules and their evaluation. Pure: a caller, a connection and analysed statements in, a
//! [`Verdict`] out.
//!
//! Order decides: a connection's own rules first, then the global ones; per statement, the
//! first enforcing rule that matches decides it, and observing rules that match on the way
//! are noted ("would block") without acting. A text of several statements gets the strictest
//! of their decisions. A statement whose effect cannot be seen (it did not parse, a `DO`
//! block, a prepared statement the gateway could not follow) matches a rule that needs to see
//! it as *unseen*: a block or approval rule then applies its `unseen` action, an allow rule
//! does not apply (nothing is allowed unseen).

use crate::condition::{self, Condition};
use crate::glob;
use crate::masking::{MaskRule, MaskVerdict};
use gatehouse_inspect::analyze::StatementInfo;
use gatehouse_inspect::sql::StatementKind;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use time::OffsetDateTime;

/// What a rule does with a statement it matches. Ordered from least to most restrictive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Approve,
    Block,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Approve => "approve",
            Action::Block => "block",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    /// Matches are recorded ("would block") and nothing else happens.
    Observe,
}

/// What a block or approval rule does with a statement it cannot see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unseen {
    Block,
    Approve,
}

/// Days (Monday first) and minutes of the day, UTC; `from > to` wraps midnight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimeWindow {
    pub days: [bool; 7],
    pub from: u16,
    pub to: u16,
}

impl TimeWindow {
    fn contains(&self, now: OffsetDateTime) -> bool {
        let day = usize::from(now.weekday().number_days_from_monday());
        let minute = u16::from(now.hour()) * 60 + u16::from(now.minute());
        let in_hours = if self.from <= self.to {
            self.from <= minute && minute < self.to
        } else {
            minute >= self.from || minute < self.to
        };
        self.days[day] && in_hours
    }
}

/// What a rule matches. Every field set must match (lists match when any entry does); an
/// empty rule matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Matcher {
    /// The caller's principal (`key:<name>`, `<issuer>#<sub>`) or bare subject.
    pub subjects: Vec<String>,
    pub groups: Vec<String>,
    /// Token claims (a CI repository, branch, environment): any listed value.
    pub claims: BTreeMap<String, Vec<String>>,
    /// Anyone in the caller's actor chain (an agent acting for someone).
    pub actors: Vec<String>,
    /// `true`: only callers acting for someone else; `false`: only direct callers.
    pub delegated: Option<bool>,
    pub connections: Vec<String>,
    /// `true`: only callers holding a time-bound access grant to the connection.
    pub grant: Option<bool>,
    pub kinds: Vec<StatementKind>,
    /// Command words, matched from the start of each command the statement runs (`DROP`
    /// matches `DROP TABLE`).
    pub statements: Vec<String>,
    pub tables: Vec<String>,
    pub tables_read: Vec<String>,
    pub tables_written: Vec<String>,
    pub functions: Vec<String>,
    pub unqualified_write: Option<bool>,
    pub copy_program: Option<bool>,
    /// `true`: statements whose effect cannot be seen (a `DO` block, dynamic SQL).
    pub dynamic: Option<bool>,
    pub time: Option<TimeWindow>,
    /// A CEL condition over the caller and the statement (see [`crate::condition`]).
    pub when: Option<Condition>,
}

/// Who must approve a held statement, and for how long it waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalSpec {
    /// How many distinct approvers (at least 1); one denial is final.
    pub required: u32,
    /// Groups an approver must be in (any of them); empty: the gateway's admin groups.
    pub approvers: Vec<String>,
    /// How long the statement is held waiting, in seconds.
    pub hold_secs: u64,
    /// How long the request can still be approved, and an approval used, in seconds.
    pub valid_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    pub reason: String,
    pub mode: Mode,
    pub unseen: Unseen,
    /// For `approve` rules (and `unseen: approve`).
    pub approval: Option<ApprovalSpec>,
    #[serde(rename = "match")]
    pub matcher: Matcher,
}

/// Who is asking, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// `key:<name>` or `<issuer>#<sub>`.
    pub principal: &'a str,
    pub subject: &'a str,
    pub groups: &'a [String],
    /// Actor subjects, nearest first.
    pub actors: &'a [&'a str],
    pub claims: &'a BTreeMap<String, serde_json::Value>,
    /// Whether the caller holds an approved, unexpired access grant to the connection.
    pub granted: bool,
}

/// One decision request: a caller on a connection running some statements.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub caller: Caller<'a>,
    pub connection: &'a str,
    pub statements: &'a [StatementInfo],
    /// Why the text as a whole cannot be seen (it did not parse, it is not known); the
    /// statements are then not consulted.
    pub unseen: Option<&'a str>,
    pub now: OffsetDateTime,
}

/// A rule in observe mode that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observation {
    pub rule: String,
    pub would: Action,
}

/// The policy's answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    /// The rule that decided (`None`: the default).
    pub rule: Option<String>,
    /// What the caller is told when blocked or held.
    pub reason: String,
    /// Whether the deciding rule matched a statement it could not see.
    pub unseen: bool,
    /// Who must approve, when the action is `Approve`.
    pub approval: Option<ApprovalSpec>,
    pub observed: Vec<Observation>,
    /// What masking applies to the caller's results.
    pub masking: MaskVerdict,
}

/// A validated set of rules with its identity (the SHA-256 of its canonical form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    default: Action,
    rules: Vec<Rule>,
    by_connection: BTreeMap<String, Vec<Rule>>,
    masking: Vec<MaskRule>,
    hash: Arc<str>,
}

#[derive(Serialize)]
struct Canonical<'a> {
    default: Action,
    rules: &'a [Rule],
    connections: &'a BTreeMap<String, Vec<Rule>>,
    #[serde(skip_serializing_if = "<[MaskRule]>::is_empty")]
    masking: &'a [MaskRule],
}

enum Match {
    Yes,
    No,
    /// The statement's effect cannot be seen and the rule needs to see it.
    Unseen,
}

impl RuleSet {
    pub fn new(
        default: Action,
        rules: Vec<Rule>,
        by_connection: BTreeMap<String, Vec<Rule>>,
    ) -> Self {
        RuleSet::with_masking(default, rules, by_connection, Vec::new())
    }

    /// Rules and masking rules (see [`crate::masking`]).
    pub fn with_masking(
        default: Action,
        rules: Vec<Rule>,
        by_connection: BTreeMap<String, Vec<Rule>>,
        masking: Vec<MaskRule>,
    ) -> Self {
        let canonical = Canonical {
            default,
            rules: &rules,
            connections: &by_connection,
            masking: &masking,
        };
        let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
        let hash = hex::encode(Sha256::digest(&bytes)).into();
        RuleSet {
            default,
            rules,
            by_connection,
            masking,
            hash,
        }
    }

    /// The masking rules.
    pub fn masking(&self) -> &[MaskRule] {
        &self.masking
    }

    /// What masking applies to a caller on a connection (no statement needed).
    pub fn masking_for(&self, request: &Request<'_>) -> MaskVerdict {
        crate::masking::choose(&self.masking, request)
    }

    /// No rules, everything allowed.
    pub fn allow_all() -> Self {
        RuleSet::new(Action::Allow, Vec::new(), BTreeMap::new())
    }

    /// SHA-256 (hex) of the rules' canonical form: names the policy in every record.
    pub fn hash(&self) -> &Arc<str> {
        &self.hash
    }

    /// How many rules, global and per connection.
    pub fn len(&self) -> usize {
        self.rules.len() + self.by_connection.values().map(Vec::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn decide(&self, request: &Request<'_>) -> Verdict {
        let mut verdict = Verdict {
            action: Action::Allow,
            rule: None,
            reason: String::new(),
            unseen: false,
            approval: None,
            observed: Vec::new(),
            masking: crate::masking::choose(&self.masking, request),
        };
        let whole;
        let statements = match request.unseen {
            Some(why) => {
                whole = [StatementInfo::opaque(
                    "UNKNOWN",
                    StatementKind::Unknown,
                    why,
                )];
                &whole[..]
            }
            None => request.statements,
        };
        let rules: Vec<&Rule> = self
            .by_connection
            .get(request.connection)
            .into_iter()
            .flatten()
            .chain(&self.rules)
            .filter(|r| r.matcher.applies(request))
            .collect();
        let mut decided = false;
        for statement in statements {
            let one = self.decide_one(request, &rules, statement, &mut verdict.observed);
            if !decided || one.action > verdict.action {
                decided = true;
                verdict.action = one.action;
                verdict.rule = one.rule;
                verdict.reason = one.reason;
                verdict.unseen = one.unseen;
                verdict.approval = one.approval;
            }
        }
        // No statements at all (an empty query): nothing runs, so nothing is refused.
        verdict
    }

    fn decide_one(
        &self,
        request: &Request<'_>,
        rules: &[&Rule],
        statement: &StatementInfo,
        observed: &mut Vec<Observation>,
    ) -> Verdict {
        // Built once per statement, and only for rules with a condition.
        let context = std::cell::OnceCell::new();
        for (i, rule) in rules.iter().enumerate() {
            let (action, mut unseen) = match rule.matcher.matches(statement) {
                Match::No => continue,
                Match::Yes => (rule.action, false),
                Match::Unseen if rule.action == Action::Allow => continue,
                Match::Unseen => match rule.unseen {
                    Unseen::Block => (Action::Block, true),
                    Unseen::Approve => (Action::Approve, true),
                },
            };
            if let Some(when) = &rule.matcher.when {
                let context = context.get_or_init(|| condition::context(request, statement));
                match when.holds(context) {
                    Ok(true) => {}
                    // What the statement does is hidden: the condition cannot rule it out.
                    Ok(false)
                        if statement.opaque.is_some()
                            && when.reads_statement()
                            && rule.action != Action::Allow =>
                    {
                        unseen = true
                    }
                    Ok(false) => continue,
                    // A condition that cannot be evaluated never allows; a rule that blocks
                    // or holds applies, as for a statement it cannot see.
                    Err(_) if rule.action == Action::Allow => continue,
                    Err(_) => unseen = true,
                }
            }
            if rule.mode == Mode::Observe {
                let observation = Observation {
                    rule: rule.name.clone(),
                    would: action,
                };
                if !observed.contains(&observation) {
                    observed.push(observation);
                }
                continue;
            }
            if unseen && action == Action::Block {
                // Blocked either way; a later rule that blocks what it can see (`dynamic`,
                // a function) names the reason better than one that could not see.
                let seen = rules[i + 1..].iter().find(|r| {
                    r.mode == Mode::Enforce
                        && r.action == Action::Block
                        && matches!(r.matcher.matches(statement), Match::Yes)
                });
                if let Some(seen) = seen {
                    return Verdict {
                        action,
                        rule: Some(seen.name.clone()),
                        reason: seen.reason.clone(),
                        unseen: false,
                        approval: None,
                        observed: Vec::new(),
                        masking: MaskVerdict::None,
                    };
                }
            }
            let mut reason = rule.reason.clone();
            if unseen {
                let why = statement
                    .opaque
                    .as_deref()
                    .unwrap_or("it cannot be analysed");
                reason =
                    format!("{reason} (the gateway cannot see what this statement does: {why})");
            }
            return Verdict {
                action,
                rule: Some(rule.name.clone()),
                reason,
                unseen,
                approval: (action == Action::Approve)
                    .then(|| rule.approval.clone())
                    .flatten(),
                observed: Vec::new(),
                masking: MaskVerdict::None,
            };
        }
        Verdict {
            action: self.default,
            rule: None,
            reason: match self.default {
                Action::Allow => String::new(),
                _ => "no rule allows this statement (policy default: block)".into(),
            },
            unseen: false,
            approval: None,
            observed: Vec::new(),
            masking: MaskVerdict::None,
        }
    }
}

fn any_glob(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| glob::matches(p, name))
}

/// A relation or function pattern against a name as written. A pattern without a schema
/// matches the name in any schema; a pattern with one also matches the unqualified name by
/// its last part, since the session's `search_path` may resolve it to that schema (so
/// `payments.*` matches every unqualified name: the gateway does not know the search path).
fn name_matches(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| {
        if glob::matches(p, name) {
            return true;
        }
        let bare = |s: &str| s.rsplit('.').next().unwrap_or(s).to_owned();
        let (p_bare, n_bare) = (bare(p), bare(name));
        match (p.contains('.'), name.contains('.')) {
            // `accounts` matches `any_schema.accounts`.
            (false, true) => glob::matches(p, &n_bare),
            // `public.accounts` matches unqualified `accounts`.
            (true, false) => glob::matches(&p_bare, name),
            _ => false,
        }
    })
}

impl Matcher {
    /// The parts about who, where and when.
    pub(crate) fn applies(&self, request: &Request<'_>) -> bool {
        let caller = &request.caller;
        (self.subjects.is_empty()
            || self
                .subjects
                .iter()
                .any(|p| glob::matches(p, caller.principal) || glob::matches(p, caller.subject)))
            && (self.groups.is_empty() || caller.groups.iter().any(|g| any_glob(&self.groups, g)))
            && self.claims.iter().all(|(key, wanted)| {
                claim(caller.claims, key)
                    .is_some_and(|values| values.iter().any(|v| any_glob(wanted, v)))
            })
            && (self.actors.is_empty() || caller.actors.iter().any(|a| any_glob(&self.actors, a)))
            && self
                .delegated
                .is_none_or(|delegated| delegated != caller.actors.is_empty())
            && (self.connections.is_empty() || any_glob(&self.connections, request.connection))
            && self.grant.is_none_or(|wanted| wanted == caller.granted)
            && self.time.as_ref().is_none_or(|t| t.contains(request.now))
    }

    fn looks_at_statements(&self) -> bool {
        !self.kinds.is_empty()
            || !self.statements.is_empty()
            || !self.tables.is_empty()
            || !self.tables_read.is_empty()
            || !self.tables_written.is_empty()
            || !self.functions.is_empty()
            || self.unqualified_write.is_some()
            || self.copy_program.is_some()
            || self.dynamic.is_some()
    }

    fn matches(&self, s: &StatementInfo) -> Match {
        if !self.looks_at_statements() {
            return Match::Yes;
        }
        let opaque = s.opaque.is_some();
        let tables = |patterns: &[String], names: &[&[String]]| {
            patterns.is_empty()
                || names
                    .iter()
                    .flat_map(|list| list.iter())
                    .any(|n| name_matches(patterns, n))
        };
        let visible = (self.kinds.is_empty() || self.kinds.contains(&s.kind))
            && (self.statements.is_empty()
                || s.runs
                    .iter()
                    .any(|tag| self.statements.iter().any(|w| starts_with_words(tag, w))))
            && tables(&self.tables, &[&s.tables_read, &s.tables_written])
            && tables(&self.tables_read, &[&s.tables_read])
            && tables(&self.tables_written, &[&s.tables_written])
            && (self.functions.is_empty()
                || s.functions.iter().any(|f| name_matches(&self.functions, f)))
            && self
                .unqualified_write
                .is_none_or(|want| want == s.unqualified_write)
            && self.copy_program.is_none_or(|want| want == s.copy_program)
            && self.dynamic.is_none_or(|want| want == opaque);
        if visible {
            Match::Yes
        } else if opaque && self.dynamic != Some(false) {
            Match::Unseen
        } else {
            Match::No
        }
    }
}

/// `DROP TABLE` starts with the words `DROP` and `DROP TABLE`, not `DRO`.
fn starts_with_words(tag: &str, words: &str) -> bool {
    tag.strip_prefix(words)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
}

/// A claim's values as strings: a string, each string of an array, a number or bool as
/// written. A dotted key reaches into objects (`github.repository`).
fn claim(claims: &BTreeMap<String, serde_json::Value>, key: &str) -> Option<Vec<String>> {
    let mut parts = key.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    let scalar = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match value {
        serde_json::Value::Array(items) => Some(items.iter().filter_map(scalar).collect()),
        v => scalar(v).map(|s| vec![s]),
    }
}
