//! What a detector finds, and counts of masked values by kind.

use std::fmt;

/// A kind of sensitive value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Card,
    Ssn,
    Iban,
    Email,
    Phone,
    AwsKey,
    Jwt,
    PemKey,
    /// A custom pattern, by its index in the masker's patterns.
    Custom(u16),
}

impl Kind {
    /// The built-in kinds, in a fixed order.
    pub const BUILT_IN: [Kind; 8] = [
        Kind::Card,
        Kind::Ssn,
        Kind::Iban,
        Kind::Email,
        Kind::Phone,
        Kind::AwsKey,
        Kind::Jwt,
        Kind::PemKey,
    ];

    /// The name used in configuration and audit records (custom patterns have their own).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Card => "card",
            Kind::Ssn => "ssn",
            Kind::Iban => "iban",
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::AwsKey => "aws_key",
            Kind::Jwt => "jwt",
            Kind::PemKey => "pem_key",
            Kind::Custom(_) => "custom",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::BUILT_IN.into_iter().find(|k| k.name() == name)
    }

    fn slot(self) -> usize {
        match self {
            Kind::Card => 0,
            Kind::Ssn => 1,
            Kind::Iban => 2,
            Kind::Email => 3,
            Kind::Phone => 4,
            Kind::AwsKey => 5,
            Kind::Jwt => 6,
            Kind::PemKey => 7,
            Kind::Custom(i) => 8 + usize::from(i),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How many values of each kind were masked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    slots: Vec<u64>,
}

impl Counts {
    pub fn add(&mut self, kind: Kind, n: u64) {
        let slot = kind.slot();
        if self.slots.len() <= slot {
            self.slots.resize(slot + 1, 0);
        }
        self.slots[slot] += n;
    }

    pub fn get(&self, kind: Kind) -> u64 {
        self.slots.get(kind.slot()).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.slots.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    pub fn merge(&mut self, other: &Counts) {
        for (slot, n) in other.slots.iter().enumerate() {
            if *n > 0 {
                if self.slots.len() <= slot {
                    self.slots.resize(slot + 1, 0);
                }
                self.slots[slot] += n;
            }
        }
    }

    /// Non-zero counts, built-in kinds first, then custom patterns by index.
    pub fn iter(&self) -> impl Iterator<Item = (Kind, u64)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(slot, n)| {
                let kind = Kind::BUILT_IN
                    .get(slot)
                    .copied()
                    .unwrap_or_else(|| Kind::Custom(u16::try_from(slot - 8).unwrap_or(u16::MAX)));
                (kind, *n)
            })
    }
}
