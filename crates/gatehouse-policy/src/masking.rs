//! Masking rules: which callers get which detectors on what leaves the server. The first rule
//! whose match covers the caller and connection applies to every statement of theirs; a caller
//! in one of its `exempt` groups sees values unmasked (and the record says so).

use crate::rules::{Matcher, Request};
use gatehouse_mask::{Kind, Masker, Strategy};
use serde::Serialize;
use std::sync::Arc;

/// One masking rule, resolved.
#[derive(Debug, Clone, Serialize)]
pub struct MaskRule {
    pub name: String,
    pub matcher: Matcher,
    /// Groups that see values unmasked.
    pub exempt: Vec<String>,
    /// Detector kind and strategy names, as configured (for the policy's hash).
    pub detectors: Vec<(String, String)>,
    /// Custom patterns: name, regular expression, strategy.
    pub patterns: Vec<(String, String, String)>,
    #[serde(skip)]
    pub masker: Arc<Masker>,
}

impl PartialEq for MaskRule {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.matcher == other.matcher
            && self.exempt == other.exempt
            && self.detectors == other.detectors
            && self.patterns == other.patterns
    }
}

impl Eq for MaskRule {}

/// What masking applies to a caller's statements.
#[derive(Debug, Clone, Default)]
pub enum MaskVerdict {
    #[default]
    None,
    Mask {
        rule: Arc<str>,
        masker: Arc<Masker>,
    },
    /// The caller is exempt from this rule: results reach them unmasked, but what the gateway
    /// keeps (statement text, error messages) is still masked with `masker`.
    Exempt {
        rule: Arc<str>,
        masker: Arc<Masker>,
    },
}

impl MaskVerdict {
    /// What masks the caller's results.
    pub fn shown(&self) -> Option<&Arc<Masker>> {
        match self {
            MaskVerdict::Mask { masker, .. } => Some(masker),
            _ => None,
        }
    }

    /// What masks the text the gateway keeps.
    pub fn kept(&self) -> Option<&Arc<Masker>> {
        match self {
            MaskVerdict::Mask { masker, .. } | MaskVerdict::Exempt { masker, .. } => Some(masker),
            MaskVerdict::None => None,
        }
    }
}

impl PartialEq for MaskVerdict {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (MaskVerdict::None, MaskVerdict::None) => true,
            (
                MaskVerdict::Mask { rule: a, masker: x },
                MaskVerdict::Mask { rule: b, masker: y },
            ) => a == b && Arc::ptr_eq(x, y),
            (
                MaskVerdict::Exempt { rule: a, masker: x },
                MaskVerdict::Exempt { rule: b, masker: y },
            ) => a == b && Arc::ptr_eq(x, y),
            _ => false,
        }
    }
}

impl Eq for MaskVerdict {}

/// The strategy each built-in detector gets with `detectors: default`.
pub fn default_detectors() -> Vec<(Kind, Strategy)> {
    vec![
        (Kind::Card, Strategy::Partial),
        (Kind::Ssn, Strategy::Partial),
        (Kind::Iban, Strategy::Partial),
        (Kind::Email, Strategy::Partial),
        (Kind::Phone, Strategy::Partial),
        (Kind::AwsKey, Strategy::Full),
        (Kind::Jwt, Strategy::Full),
        (Kind::PemKey, Strategy::Full),
    ]
}

/// The rule that applies to the request's caller, if any.
pub fn choose(rules: &[MaskRule], request: &Request<'_>) -> MaskVerdict {
    let Some(rule) = rules.iter().find(|r| r.matcher.applies(request)) else {
        return MaskVerdict::None;
    };
    let exempt = request
        .caller
        .groups
        .iter()
        .any(|g| rule.exempt.iter().any(|e| crate::glob::matches(e, g)));
    if exempt {
        MaskVerdict::Exempt {
            rule: rule.name.as_str().into(),
            masker: rule.masker.clone(),
        }
    } else {
        MaskVerdict::Mask {
            rule: rule.name.as_str().into(),
            masker: rule.masker.clone(),
        }
    }
}
