//! Detectors and strategies together: finds values, replaces them in place, counts them.

use crate::scan::{self, Finding, KindSet};
use crate::strategy::{self, HashKey, Strategy};
use crate::{Counts, Kind};
use regex::bytes::{Regex, RegexSet};

/// A custom pattern: a name (for configuration and the audit record), a regular expression
/// (the `regex` crate's syntax) and how its matches are replaced.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub name: String,
    pub regex: String,
    pub strategy: Strategy,
}

#[derive(Debug, thiserror::Error)]
pub enum MaskerError {
    #[error("pattern {name:?}: {error}")]
    Pattern { name: String, error: String },
    #[error("pattern {0:?} is defined twice")]
    DuplicatePattern(String),
    #[error("more than {} patterns", u16::MAX)]
    TooManyPatterns,
}

/// What masking did to a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Masked {
    Unchanged,
    /// Values in it were replaced in place.
    Changed,
    /// A value under the `null` strategy was found: the whole field should be NULL. (The text
    /// has been masked in place as with `full`, for places that have no NULL.)
    Null,
}

/// Largest compiled size of the custom patterns.
const PATTERN_SIZE_LIMIT: usize = 8 << 20;

#[derive(Debug, Clone)]
pub struct Masker {
    kinds: KindSet,
    strategies: [Strategy; 8],
    patterns: Vec<(String, Regex, Strategy)>,
    set: Option<RegexSet>,
    key: HashKey,
}

impl Masker {
    /// A masker for the given built-in kinds (each with its strategy) and custom patterns.
    pub fn new(
        kinds: impl IntoIterator<Item = (Kind, Strategy)>,
        patterns: &[Pattern],
        key: HashKey,
    ) -> Result<Masker, MaskerError> {
        let mut kind_set = KindSet::default();
        let mut strategies = [Strategy::Partial; 8];
        for (kind, strategy) in kinds {
            if let Some(slot) = Kind::BUILT_IN.iter().position(|k| *k == kind) {
                kind_set.insert(kind);
                strategies[slot] = strategy;
            }
        }
        if patterns.len() > usize::from(u16::MAX) {
            return Err(MaskerError::TooManyPatterns);
        }
        let mut compiled = Vec::with_capacity(patterns.len());
        for p in patterns {
            if compiled.iter().any(|(name, _, _)| name == &p.name) {
                return Err(MaskerError::DuplicatePattern(p.name.clone()));
            }
            let regex = regex::bytes::RegexBuilder::new(&p.regex)
                .size_limit(PATTERN_SIZE_LIMIT)
                .build()
                .map_err(|e| MaskerError::Pattern {
                    name: p.name.clone(),
                    error: e.to_string(),
                })?;
            compiled.push((p.name.clone(), regex, p.strategy));
        }
        let set = if patterns.is_empty() {
            None
        } else {
            Some(
                regex::bytes::RegexSetBuilder::new(patterns.iter().map(|p| &p.regex))
                    .size_limit(PATTERN_SIZE_LIMIT)
                    .build()
                    .map_err(|e| MaskerError::Pattern {
                        name: "(all patterns together)".into(),
                        error: e.to_string(),
                    })?,
            )
        };
        Ok(Masker {
            kinds: kind_set,
            strategies,
            patterns: compiled,
            set,
            key,
        })
    }

    /// Every default detector, each with `strategy`.
    pub fn all(strategy: Strategy, key: HashKey) -> Masker {
        let kinds = Kind::BUILT_IN.map(|k| (k, strategy));
        Masker::new(kinds, &[], key).unwrap_or_else(|_| unreachable!("no patterns to compile"))
    }

    /// Whether this masker looks for anything at all.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty() && self.patterns.is_empty()
    }

    /// The name of a kind as configured (a custom pattern's own name).
    pub fn kind_name(&self, kind: Kind) -> &str {
        match kind {
            Kind::Custom(i) => self
                .patterns
                .get(usize::from(i))
                .map_or("custom", |(name, _, _)| name.as_str()),
            kind => kind.name(),
        }
    }

    /// The values in `text`, sorted and not overlapping.
    pub fn find(&self, text: &[u8], out: &mut Vec<Finding>) {
        out.clear();
        scan::scan(text, self.kinds, out);
        if let Some(set) = &self.set {
            for index in set.matches(text).iter() {
                let (_, regex, _) = &self.patterns[index];
                let kind = Kind::Custom(u16::try_from(index).unwrap_or(u16::MAX));
                out.extend(
                    regex
                        .find_iter(text)
                        .filter(|m| !m.is_empty())
                        .map(|m| Finding {
                            kind,
                            start: m.start(),
                            end: m.end(),
                        }),
                );
            }
        }
        scan::merge(out);
    }

    fn strategy(&self, kind: Kind) -> Strategy {
        match kind {
            Kind::Custom(i) => self
                .patterns
                .get(usize::from(i))
                .map_or(Strategy::Full, |(_, _, s)| *s),
            kind => Kind::BUILT_IN
                .iter()
                .position(|k| *k == kind)
                .map_or(Strategy::Full, |slot| self.strategies[slot]),
        }
    }

    /// Masks every value found in `text`, in place, and counts them. `scratch` is reused
    /// between calls to save allocations.
    pub fn mask_in_place(
        &self,
        text: &mut [u8],
        scratch: &mut Vec<Finding>,
        counts: &mut Counts,
    ) -> Masked {
        self.find(text, scratch);
        self.apply(text, scratch, counts)
    }

    /// Masks the given findings of `text` (from [`Masker::find`]), in place, and counts them.
    pub fn apply(&self, text: &mut [u8], findings: &[Finding], counts: &mut Counts) -> Masked {
        if findings.is_empty() {
            return Masked::Unchanged;
        }
        let mut result = Masked::Changed;
        let mut canonical = Vec::new();
        let mut value = Vec::new();
        for f in findings {
            let strategy = self.strategy(f.kind);
            if strategy == Strategy::Null {
                result = Masked::Null;
            }
            canonical.clear();
            canonical_form(f.kind, &text[f.start..f.end], &mut canonical);
            value.clear();
            value.extend_from_slice(&text[f.start..f.end]);
            strategy::replace(
                strategy,
                &value,
                &canonical,
                &self.key,
                &mut text[f.start..f.end],
            );
            counts.add(f.kind, 1);
        }
        result
    }

    /// Masks a copy of `text` (for text the gateway keeps: statement text, error messages).
    pub fn mask_copy(&self, text: &[u8], counts: &mut Counts) -> Option<Vec<u8>> {
        let mut scratch = Vec::new();
        self.find(text, &mut scratch);
        if scratch.is_empty() {
            return None;
        }
        let mut copy = text.to_vec();
        self.mask_in_place(&mut copy, &mut scratch, counts);
        Some(copy)
    }
}

/// The form a value is hashed in, so that layouts of one value hash alike.
fn canonical_form(kind: Kind, value: &[u8], out: &mut Vec<u8>) {
    match kind {
        Kind::Card | Kind::Ssn | Kind::Phone => {
            out.extend(value.iter().filter(|b| b.is_ascii_digit()));
        }
        Kind::Iban => out.extend(value.iter().filter(|b| b.is_ascii_alphanumeric())),
        Kind::Email => out.extend(value.iter().map(u8::to_ascii_lowercase)),
        _ => out.extend_from_slice(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> HashKey {
        HashKey::new(b"test key".to_vec())
    }

    fn masked(m: &Masker, text: &str) -> (String, Masked, Counts) {
        let mut bytes = text.as_bytes().to_vec();
        let mut counts = Counts::default();
        let r = m.mask_in_place(&mut bytes, &mut Vec::new(), &mut counts);
        (String::from_utf8(bytes).unwrap(), r, counts)
    }

    #[test]
    fn partial_keeps_the_shape_and_the_last_four() {
        let m = Masker::all(Strategy::Partial, key());
        let (out, r, counts) = masked(&m, "pay 5555-5555-5555-4444 or 123-45-6789");
        assert_eq!(out, "pay ****-****-****-4444 or ***-**-6789");
        assert_eq!(r, Masked::Changed);
        assert_eq!((counts.get(Kind::Card), counts.get(Kind::Ssn)), (1, 1));
    }

    #[test]
    fn hash_is_stable_across_layouts_and_keeps_the_length() {
        let m = Masker::all(Strategy::Hash, key());
        let (a, _, _) = masked(&m, "4111 1111 1111 1111");
        let (b, _, _) = masked(&m, "4111-1111-1111-1111");
        assert_eq!(a.len(), 19);
        assert_eq!(a, b);
        assert!(!a.contains("1111"));
        let other = Masker::all(Strategy::Hash, HashKey::new(b"another".to_vec()));
        assert_ne!(masked(&other, "4111 1111 1111 1111").0, a);
    }

    #[test]
    fn null_and_custom_patterns() {
        let m = Masker::new(
            [(Kind::Ssn, Strategy::Null)],
            &[Pattern {
                name: "employee".into(),
                regex: r"EMP-\d{6}".into(),
                strategy: Strategy::Full,
            }],
            key(),
        )
        .unwrap();
        let (out, r, counts) = masked(&m, "EMP-123456 has 123-45-6789");
        assert_eq!(out, "********** has ***********");
        assert_eq!(r, Masked::Null);
        assert_eq!(counts.get(Kind::Custom(0)), 1);
        assert_eq!(m.kind_name(Kind::Custom(0)), "employee");
        assert!(Masker::new(
            [],
            &[Pattern {
                name: "bad".into(),
                regex: "(".into(),
                strategy: Strategy::Full
            }],
            key()
        )
        .is_err());
    }
}
