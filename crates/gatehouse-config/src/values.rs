//! Human-readable values: durations (`500ms`, `10s`, `30m`, `2h`, `1h30m`, `0`) and sizes
//! (`16MiB`, `512KiB`, a number of bytes).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("duration {0:?} needs a unit: ms, s, m, h or d (e.g. {0}s)")]
    MissingUnit(String),
    #[error("invalid duration {0:?}: expected whole numbers with units ms, s, m, h or d, e.g. 10s, 500ms, 1h30m, 90d")]
    Invalid(String),
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Parses one or more `<integer><unit>` parts (units `ms`, `s`, `m`, `h`, `d`), or a bare `0`.
/// Fractions and signs are refused: config durations are small whole numbers.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DurationError::MissingUnit(text.to_string()));
    }
    let invalid = || DurationError::Invalid(text.to_string());
    let overflow = || DurationError::Overflow(text.to_string());
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| overflow())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        let part = n.checked_mul(unit_ms).ok_or_else(overflow)?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(overflow)?;
    }
    Ok(total)
}

/// A [`Duration`] read from a config string via [`parse_duration`]; errors keep their
/// line and key because they are raised during deserialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 10s, 500ms, 30m or 2h")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ConfigDuration, E> {
                parse_duration(v).map(ConfigDuration).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_table() {
        let ok: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("30m", Duration::from_secs(1800)),
            ("2h", Duration::from_secs(7200)),
            ("1h30m", Duration::from_secs(5400)),
            ("1m500ms", Duration::from_millis(60_500)),
            ("90d", Duration::from_secs(90 * 86_400)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(*want), "{text}");
        }
        let bad: &[(&str, DurationError)] = &[
            ("", DurationError::Empty),
            ("60", DurationError::MissingUnit("60".into())),
            ("10 s", DurationError::Invalid("10 s".into())),
            ("1.5s", DurationError::Invalid("1.5s".into())),
            ("-1s", DurationError::Invalid("-1s".into())),
            ("10w", DurationError::Invalid("10w".into())),
            ("s", DurationError::Invalid("s".into())),
            ("10S", DurationError::Invalid("10S".into())),
            (" 10s", DurationError::Invalid(" 10s".into())),
            (
                "99999999999999999999s",
                DurationError::Overflow("99999999999999999999s".into()),
            ),
            (
                "18446744073709551615h",
                DurationError::Overflow("18446744073709551615h".into()),
            ),
        ];
        for (text, want) in bad {
            assert_eq!(parse_duration(text).as_ref(), Err(want), "{text:?}");
        }
    }

    #[test]
    fn missing_unit_message_suggests_one() {
        assert_eq!(
            DurationError::MissingUnit("60".into()).to_string(),
            "duration \"60\" needs a unit: ms, s, m, h or d (e.g. 60s)"
        );
    }
}

/// Human-readable sizes: a number of bytes, or `<integer><unit>` with `KiB`, `MiB`, `GiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let invalid = || {
        format!("invalid size {text:?}: expected bytes or a whole number with KiB, MiB or GiB, e.g. 16MiB")
    };
    if digits == 0 {
        return Err(invalid());
    }
    let n: u64 = text[..digits].parse().map_err(|_| invalid())?;
    let unit = match text[digits..].trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(invalid()),
    };
    n.checked_mul(unit).ok_or_else(invalid)
}

/// A size in the config file: a YAML integer (bytes) or a string with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigSize(pub u64);

impl<'de> Deserialize<'de> for ConfigSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConfigSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 16MiB, 512KiB or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ConfigSize, E> {
                Ok(ConfigSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ConfigSize, E> {
                u64::try_from(v)
                    .map(ConfigSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ConfigSize, E> {
                parse_size(v).map(ConfigSize).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(super::parse_size("1024"), Ok(1024));
        assert_eq!(super::parse_size("2 GiB"), Ok(2 << 30));
        assert!(super::parse_size("16MB").is_err());
        assert!(super::parse_size("MiB").is_err());
        assert!(super::parse_size("99999999999999GiB").is_err());
    }
}
