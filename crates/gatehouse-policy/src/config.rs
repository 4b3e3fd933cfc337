//! Rules as written in the configuration (`policy:` and each connection's `rules:`), and
//! their resolution into a [`RuleSet`]. Unknown keys are refused; every problem is reported
//! through [`Checks`] with its key path, so the server can name the file and line.

use crate::masking::MaskRule;
use crate::rules::{Action, ApprovalSpec, Matcher, Mode, Rule, RuleSet, TimeWindow, Unseen};
use std::time::Duration;

const DEFAULT_HOLD: Duration = Duration::from_secs(120);
const DEFAULT_VALID_FOR: Duration = Duration::from_secs(3600);
use gatehouse_config::{Checks, ConfigDuration};
use gatehouse_inspect::sql::StatementKind;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The `policy:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// What a statement no rule decides gets: `allow` (the default) or `block`.
    pub default: Option<RawAction>,
    pub approvals: Option<RawApprovalDefaults>,
    pub rules: Option<Vec<RawRule>>,
    pub masking: Option<RawMasking>,
}

/// The `policy.masking` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMasking {
    /// The key of the `hash` strategy: a secret reference.
    pub hash_key: Option<String>,
    pub rules: Option<Vec<RawMaskRule>>,
}

/// One masking rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaskRule {
    pub name: String,
    /// Who and where (subjects, groups, claims, actors, delegated, connections, grant, time).
    #[serde(rename = "match")]
    pub matcher: Option<RawMatch>,
    /// Groups that see values unmasked.
    pub exempt: Option<Vec<String>>,
    /// `default`, or a map of detector to strategy.
    pub detectors: Option<RawDetectors>,
    pub patterns: Option<Vec<RawPattern>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawDetectors {
    Named(String),
    Each(BTreeMap<String, String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPattern {
    pub name: String,
    pub regex: String,
    pub strategy: Option<String>,
}

/// Defaults for every `approve` rule.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApprovalDefaults {
    /// How long a held statement waits for a decision (default 2m).
    pub hold: Option<ConfigDuration>,
    /// How long a request can be approved, and an approval used, after it is made (default 1h).
    pub valid_for: Option<ConfigDuration>,
}

/// Who approves statements an `approve` rule holds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApproval {
    /// Distinct approvers needed (default 1).
    pub required: Option<u32>,
    /// Groups approvers come from (default: the admin groups).
    pub approvers: Option<Vec<String>>,
    pub hold: Option<ConfigDuration>,
    pub valid_for: Option<ConfigDuration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawAction {
    Allow,
    Block,
    Approve,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawMode {
    Enforce,
    Observe,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    pub action: RawAction,
    /// What the caller is told (and the record says) when the rule blocks or holds.
    pub reason: Option<String>,
    pub mode: Option<RawMode>,
    /// What to do with a statement whose effect the gateway cannot see (it does not parse, a
    /// `DO` block, a prepared statement it could not follow): `block` (default) or `approve`.
    pub unseen: Option<RawAction>,
    pub approval: Option<RawApproval>,
    #[serde(rename = "match")]
    pub matcher: Option<RawMatch>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub subjects: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub claims: Option<BTreeMap<String, OneOrMany>>,
    pub actors: Option<Vec<String>>,
    pub delegated: Option<bool>,
    pub connections: Option<Vec<String>>,
    pub grant: Option<bool>,
    pub kinds: Option<Vec<StatementKindName>>,
    pub statements: Option<Vec<String>>,
    pub tables: Option<Vec<String>>,
    pub tables_read: Option<Vec<String>>,
    pub tables_written: Option<Vec<String>>,
    pub functions: Option<Vec<String>>,
    pub unqualified_write: Option<bool>,
    pub copy_program: Option<bool>,
    pub dynamic: Option<bool>,
    pub time: Option<RawTime>,
    /// A CEL condition (see docs/policy.md).
    pub when: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementKindName {
    Read,
    Other,
    Write,
    Ddl,
    Unknown,
}

impl From<StatementKindName> for StatementKind {
    fn from(k: StatementKindName) -> Self {
        match k {
            StatementKindName::Read => StatementKind::Read,
            StatementKindName::Other => StatementKind::Other,
            StatementKindName::Write => StatementKind::Write,
            StatementKindName::Ddl => StatementKind::Ddl,
            StatementKindName::Unknown => StatementKind::Unknown,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTime {
    /// Days of the week (`mon` … `sun`); all days when absent.
    pub days: Option<Vec<String>>,
    /// `HH:MM`, UTC, inclusive.
    pub from: Option<String>,
    /// `HH:MM`, UTC, exclusive; a window may wrap midnight (`22:00` to `06:00`).
    pub to: Option<String>,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Resolves the global rules and each connection's rules (connection rules are evaluated
/// first, then the global ones). Paths are reported from the top of the file, sequence
/// indexes as `[n]`.
pub fn resolve(
    checks: &mut dyn Checks,
    global: Option<RawPolicy>,
    connections: Vec<(String, Vec<RawRule>)>,
) -> RuleSet {
    let mut global = global.unwrap_or_default();
    let defaults = global.approvals.take().unwrap_or_default();
    let defaults = (
        defaults.hold.map_or(DEFAULT_HOLD, |d| d.0),
        defaults.valid_for.map_or(DEFAULT_VALID_FOR, |d| d.0),
    );
    let default = match global.default {
        None | Some(RawAction::Allow) => Action::Allow,
        Some(RawAction::Block) => Action::Block,
        Some(RawAction::Approve) => {
            checks.error(
                &["policy", "default"],
                "approve is not available as the default; use allow or block",
            );
            Action::Block
        }
    };
    let mut names = std::collections::HashSet::new();
    let mut resolve_list = |checks: &mut dyn Checks, at: &[&str], raw: Vec<RawRule>| {
        raw.into_iter()
            .enumerate()
            .filter_map(|(i, rule)| {
                let index = format!("[{i}]");
                let path: Vec<&str> = at.iter().copied().chain([index.as_str()]).collect();
                if !names.insert(rule.name.clone()) {
                    let name_path: Vec<&str> = path.iter().copied().chain(["name"]).collect();
                    checks.error(
                        &name_path,
                        &format!("rule name {:?} is used twice; names must be unique, since records name the rule", rule.name),
                    );
                }
                resolve_rule(checks, &path, rule, defaults)
            })
            .collect::<Vec<_>>()
    };
    let mut by_connection = BTreeMap::new();
    for (name, raw) in connections {
        let rules = resolve_list(checks, &["connections", &name, "rules"], raw);
        by_connection.insert(name, rules);
    }
    let rules = resolve_list(
        checks,
        &["policy", "rules"],
        global.rules.unwrap_or_default(),
    );
    let masking = global
        .masking
        .map(|m| resolve_masking(checks, m))
        .unwrap_or_default();
    RuleSet::with_masking(default, rules, by_connection, masking)
}

fn resolve_masking(checks: &mut dyn Checks, raw: RawMasking) -> Vec<MaskRule> {
    use gatehouse_mask::{HashKey, Kind, Masker, Pattern, Strategy};
    let key = match &raw.hash_key {
        Some(reference) => {
            let at = ["policy", "masking", "hash_key"];
            match checks.secret(&at, reference) {
                // An empty value stands in where secrets are not read (offline tools).
                Some(k) if !k.is_empty() && k.len() < 16 => {
                    checks.error(&at, "the hash key must be at least 16 bytes: a short key makes hashed values guessable");
                    None
                }
                k => k.map(|k| HashKey::new(k.into_bytes())),
            }
        }
        None => None,
    };
    let mut names = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (i, rule) in raw.rules.unwrap_or_default().into_iter().enumerate() {
        let index = format!("[{i}]");
        let at = ["policy", "masking", "rules", index.as_str()];
        let here = |k: &'static str| -> Vec<&str> { at.iter().copied().chain([k]).collect() };
        let mut ok = true;
        if rule.name.trim().is_empty() || !names.insert(rule.name.clone()) {
            checks.error(
                &here("name"),
                "a masking rule needs a name of its own: records name it",
            );
            ok = false;
        }
        let strategy =
            |checks: &mut dyn Checks, path: &[&str], name: &str| match Strategy::from_name(name) {
                Some(Strategy::Hash) if key.is_none() => {
                    checks.error(path, "the hash strategy needs policy.masking.hash_key");
                    None
                }
                Some(s) => Some(s),
                None => {
                    checks.error(
                        path,
                        &format!("{name:?} is not a strategy: use partial, full, hash or null"),
                    );
                    None
                }
            };
        let mut kinds = Vec::new();
        let mut detectors = Vec::new();
        match rule.detectors {
            None => {}
            Some(RawDetectors::Named(name)) if name == "default" => {
                for (kind, s) in crate::masking::default_detectors() {
                    kinds.push((kind, s));
                    detectors.push((kind.name().to_owned(), s.name().to_owned()));
                }
            }
            Some(RawDetectors::Named(name)) => {
                checks.error(
                    &here("detectors"),
                    &format!("{name:?}: write default, or a map of detector to strategy"),
                );
                ok = false;
            }
            Some(RawDetectors::Each(map)) => {
                for (name, s) in map {
                    let path: Vec<&str> = here("detectors")
                        .into_iter()
                        .chain([name.as_str()])
                        .collect();
                    let Some(kind) = Kind::from_name(&name) else {
                        checks.error(&path, "not a detector: card, ssn, iban, email, phone, aws_key, jwt or pem_key");
                        ok = false;
                        continue;
                    };
                    match strategy(checks, &path, &s) {
                        Some(s) => {
                            kinds.push((kind, s));
                            detectors.push((name, s.name().to_owned()));
                        }
                        None => ok = false,
                    }
                }
            }
        }
        let mut patterns = Vec::new();
        for (j, p) in rule.patterns.unwrap_or_default().into_iter().enumerate() {
            let index = format!("[{j}]");
            let path: Vec<&str> = here("patterns")
                .into_iter()
                .chain([index.as_str(), "strategy"])
                .collect();
            let s = strategy(checks, &path, p.strategy.as_deref().unwrap_or("full"));
            match s {
                Some(s) => patterns.push(Pattern {
                    name: p.name,
                    regex: p.regex,
                    strategy: s,
                }),
                None => ok = false,
            }
        }
        if kinds.is_empty() && patterns.is_empty() {
            checks.error(
                &here("detectors"),
                "a masking rule needs detectors or patterns",
            );
            ok = false;
        }
        let masker = match Masker::new(
            kinds,
            &patterns,
            key.clone().unwrap_or_else(|| HashKey::new(Vec::new())),
        ) {
            Ok(m) => Some(m),
            Err(e) => {
                checks.error(&here("patterns"), &e.to_string());
                None
            }
        };
        let mut m = rule.matcher.unwrap_or_default();
        let caller = caller_matcher(&mut m);
        let statement_level = m.kinds.is_some()
            || m.statements.is_some()
            || m.tables.is_some()
            || m.tables_read.is_some()
            || m.tables_written.is_some()
            || m.functions.is_some()
            || m.unqualified_write.is_some()
            || m.copy_program.is_some()
            || m.dynamic.is_some()
            || m.when.is_some();
        if statement_level {
            checks.error(&here("match"), "masking rules match who and where (subjects, groups, claims, actors, delegated, connections, grant, time), not statements");
            ok = false;
        }
        let time = match m.time {
            Some(t) => {
                let window = resolve_time(checks, &[&at[..], &["match", "time"]].concat(), t);
                ok &= window.is_some();
                window
            }
            None => None,
        };
        let matcher = Matcher { time, ..caller };
        if let (true, Some(masker)) = (ok, masker) {
            out.push(MaskRule {
                name: rule.name,
                matcher,
                exempt: rule.exempt.unwrap_or_default(),
                detectors,
                patterns: patterns
                    .into_iter()
                    .map(|p| (p.name, p.regex, p.strategy.name().to_owned()))
                    .collect(),
                masker: std::sync::Arc::new(masker),
            });
        }
    }
    out
}

fn resolve_rule(
    checks: &mut dyn Checks,
    at: &[&str],
    raw: RawRule,
    defaults: (Duration, Duration),
) -> Option<Rule> {
    let here = |key: &'static str| -> Vec<&str> { at.iter().copied().chain([key]).collect() };
    let mut ok = true;
    if raw.name.trim().is_empty() {
        checks.error(&here("name"), "a rule needs a name");
        ok = false;
    }
    let action = match raw.action {
        RawAction::Allow => Action::Allow,
        RawAction::Block => Action::Block,
        RawAction::Approve => Action::Approve,
    };
    let unseen = match raw.unseen {
        None | Some(RawAction::Block) => Unseen::Block,
        Some(RawAction::Approve) => Unseen::Approve,
        Some(RawAction::Allow) => {
            checks.error(
                &here("unseen"),
                "a statement the gateway cannot see fails closed: use block (the default)",
            );
            ok = false;
            Unseen::Block
        }
    };
    if action != Action::Allow && raw.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        checks.error(
            &here("reason"),
            "a rule that blocks or holds needs a reason: the caller, the approvers and the record see it",
        );
        ok = false;
    }
    let holds = action == Action::Approve || unseen == Unseen::Approve;
    let approval = match (holds, raw.approval) {
        (false, Some(_)) => {
            checks.error(
                &here("approval"),
                "only a rule with action: approve (or unseen: approve) holds statements for approval",
            );
            ok = false;
            None
        }
        (false, None) => None,
        (true, raw) => {
            let raw = raw.unwrap_or_default();
            let required = raw.required.unwrap_or(1);
            if !(1..=10).contains(&required) {
                checks.error(
                    &[at, &["approval", "required"]].concat(),
                    "between 1 and 10 approvers",
                );
                ok = false;
            }
            let hold = raw.hold.map_or(defaults.0, |d| d.0);
            let valid = raw.valid_for.map_or(defaults.1, |d| d.0);
            if hold.is_zero() || hold > Duration::from_secs(3600) {
                checks.error(
                    &[at, &["approval", "hold"]].concat(),
                    "a hold is between 1s and 1h: the client waits that long",
                );
                ok = false;
            }
            if valid > Duration::from_secs(7 * 24 * 3600) {
                checks.error(
                    &[at, &["approval", "valid_for"]].concat(),
                    "at most 7d: an approval is for a task at hand",
                );
                ok = false;
            }
            if valid < hold {
                checks.error(
                    &[at, &["approval", "valid_for"]].concat(),
                    "valid_for must be at least the hold time",
                );
                ok = false;
            }
            Some(ApprovalSpec {
                required: required.clamp(1, 10),
                approvers: raw.approvers.unwrap_or_default(),
                hold_secs: hold.as_secs().max(1),
                valid_secs: valid.as_secs().max(1),
            })
        }
    };
    let mut m = raw.matcher.unwrap_or_default();
    let caller = caller_matcher(&mut m);
    let mut statements = Vec::new();
    for (i, s) in m.statements.unwrap_or_default().into_iter().enumerate() {
        let words: Vec<String> = s.split_whitespace().map(str::to_ascii_uppercase).collect();
        if words.is_empty()
            || words
                .iter()
                .any(|w| !w.bytes().all(|b| b.is_ascii_alphabetic()))
        {
            let index = format!("[{i}]");
            let path: Vec<&str> = at
                .iter()
                .copied()
                .chain(["match", "statements", &index])
                .collect();
            checks.error(
                &path,
                &format!("{s:?} is not a statement type: write its command words, such as DROP, DROP TABLE, TRUNCATE or ALTER TABLE"),
            );
            ok = false;
            continue;
        }
        statements.push(words.join(" "));
    }
    let time = match m.time {
        Some(t) => match resolve_time(checks, &[at, &["match", "time"]].concat(), t) {
            Some(window) => Some(window),
            None => {
                ok = false;
                None
            }
        },
        None => None,
    };
    let when = match m.when {
        Some(source) => match crate::condition::Condition::compile(&source) {
            Ok(condition) => Some(condition),
            Err(why) => {
                checks.error(
                    &[at, &["match", "when"]].concat(),
                    &format!("not a valid CEL expression: {why}"),
                );
                ok = false;
                None
            }
        },
        None => None,
    };
    let matcher = Matcher {
        kinds: m
            .kinds
            .unwrap_or_default()
            .into_iter()
            .map(StatementKind::from)
            .collect(),
        statements,
        tables: m.tables.unwrap_or_default(),
        tables_read: m.tables_read.unwrap_or_default(),
        tables_written: m.tables_written.unwrap_or_default(),
        functions: m.functions.unwrap_or_default(),
        unqualified_write: m.unqualified_write,
        copy_program: m.copy_program,
        dynamic: m.dynamic,
        time,
        when,
        ..caller
    };
    ok.then(|| Rule {
        name: raw.name,
        action,
        reason: raw.reason.unwrap_or_default(),
        mode: match raw.mode {
            Some(RawMode::Observe) => Mode::Observe,
            _ => Mode::Enforce,
        },
        unseen,
        approval,
        matcher,
    })
}

/// The parts of a `match` about who and where (taken out of `m`).
fn caller_matcher(m: &mut RawMatch) -> Matcher {
    Matcher {
        subjects: m.subjects.take().unwrap_or_default(),
        groups: m.groups.take().unwrap_or_default(),
        claims: m
            .claims
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_vec()))
            .collect(),
        actors: m.actors.take().unwrap_or_default(),
        delegated: m.delegated,
        connections: m.connections.take().unwrap_or_default(),
        grant: m.grant,
        ..Matcher::default()
    }
}

fn resolve_time(checks: &mut dyn Checks, at: &[&str], raw: RawTime) -> Option<TimeWindow> {
    let here = |key: &'static str| -> Vec<&str> { at.iter().copied().chain([key]).collect() };
    let mut days = [false; 7];
    let mut ok = true;
    match raw.days {
        None => days = [true; 7],
        Some(list) => {
            for d in list {
                match DAYS.iter().position(|x| x.eq_ignore_ascii_case(d.trim())) {
                    Some(i) => days[i] = true,
                    None => {
                        checks.error(
                            &here("days"),
                            &format!("{d:?} is not a day: use mon, tue, wed, thu, fri, sat, sun"),
                        );
                        ok = false;
                    }
                }
            }
        }
    }
    let mut minute = |key: &'static str, value: Option<String>, default: u16| match value {
        None => Some(default),
        Some(v) => match parse_hhmm(&v) {
            Some(m) => Some(m),
            None => {
                checks.error(&here(key), &format!("{v:?} is not a time: use HH:MM (UTC)"));
                None
            }
        },
    };
    let from = minute("from", raw.from, 0);
    let to = minute("to", raw.to, 24 * 60);
    match (ok, from, to) {
        (true, Some(from), Some(to)) => Some(TimeWindow { days, from, to }),
        _ => None,
    }
}

fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 || h == 24 && m == 0).then_some(h * 60 + m)
}

/// The rules of a whole config file (its `policy:` and each connection's `rules:`; every other
/// key is ignored), for tools and tests that need the rules without the gateway. Errors are
/// `key.path: message`.
pub fn from_yaml(text: &str) -> Result<RuleSet, Vec<String>> {
    #[derive(Deserialize)]
    struct File {
        policy: Option<RawPolicy>,
        #[serde(default)]
        connections: BTreeMap<String, Conn>,
    }
    #[derive(Deserialize)]
    struct Conn {
        rules: Option<Vec<RawRule>>,
    }
    #[derive(Default)]
    struct Collect(Vec<String>);
    impl Checks for Collect {
        fn error(&mut self, path: &[&str], message: &str) {
            self.0.push(format!("{}: {message}", path.join(".")));
        }
        fn warn(&mut self, _: &[&str], _: &str) {}
        fn existing_file(&mut self, _: &[&str], file: &std::path::Path) -> std::path::PathBuf {
            file.to_path_buf()
        }
    }
    let file: File = serde_norway::from_str(text).map_err(|e| vec![e.to_string()])?;
    let connections = file
        .connections
        .into_iter()
        .filter_map(|(name, c)| c.rules.map(|rules| (name, rules)))
        .collect();
    let mut checks = Collect::default();
    let rules = resolve(&mut checks, file.policy, connections);
    if checks.0.is_empty() {
        Ok(rules)
    } else {
        Err(checks.0)
    }
}
