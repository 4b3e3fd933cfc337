//! The one timestamp format of the log: RFC 3339, UTC, always nine fractional digits.
//!
//! Fixed width keeps records canonical (one instant, one spelling) and lets stored times sort
//! as plain strings. `time`'s own RFC 3339 serialiser trims trailing zeros and keeps the
//! offset, so it is not used for writing; reading accepts any RFC 3339 timestamp.

use std::fmt;

use serde::{Deserializer, Serializer};
use time::{OffsetDateTime, UtcOffset};

/// An instant displayed as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
///
/// Display fails (`fmt::Error`) for instants outside years 0000–9999, which RFC 3339 cannot
/// express; [`check_time`] reports that as an error before anything is written.
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339Nanos(pub OffsetDateTime);

impl fmt::Display for Rfc3339Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = format(self.0).ok_or(fmt::Error)?;
        f.write_str(as_str(&bytes))
    }
}

/// Length of `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const LEN: usize = 30;

/// The timestamp's bytes, or `None` outside years 0000–9999. Written digit by digit: this runs
/// for every audit record, and `core::fmt` costs several times more.
fn format(t: OffsetDateTime) -> Option<[u8; LEN]> {
    let t = t.checked_to_offset(UtcOffset::UTC)?;
    let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
    let mut out = *b"0000-00-00T00:00:00.000000000Z";
    digits(&mut out[0..4], year);
    digits(&mut out[5..7], u32::from(u8::from(t.month())));
    digits(&mut out[8..10], u32::from(t.day()));
    digits(&mut out[11..13], u32::from(t.hour()));
    digits(&mut out[14..16], u32::from(t.minute()));
    digits(&mut out[17..19], u32::from(t.second()));
    digits(&mut out[20..29], t.nanosecond());
    Some(out)
}

/// Writes `value` right-aligned, zero-padded, into `out` (which is pre-filled with zeros).
fn digits(out: &mut [u8], mut value: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn as_str(bytes: &[u8; LEN]) -> &str {
    // Only ASCII digits and separators are ever written.
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// Checks that `t` can be written as an RFC 3339 UTC timestamp.
pub fn check_time(t: OffsetDateTime) -> Result<(), String> {
    match t.checked_to_offset(UtcOffset::UTC) {
        Some(utc) if (0..=9999).contains(&utc.year()) => Ok(()),
        _ => Err(format!(
            "time {t} is outside the years 0000-9999 that RFC 3339 can express"
        )),
    }
}

/// `serde(with = ...)` adapter used by [`crate::Event::time`].
pub mod rfc3339_nanos {
    use super::*;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        check_time(*t).map_err(serde::ser::Error::custom)?;
        match format(*t) {
            Some(bytes) => s.serialize_str(as_str(&bytes)),
            None => Err(serde::ser::Error::custom(
                "time outside the years 0000-9999",
            )),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        time::serde::rfc3339::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn fixed_width_utc() {
        let cases = [
            (
                datetime!(2024-03-05 07:08:09 UTC),
                "2024-03-05T07:08:09.000000000Z",
            ),
            (
                datetime!(2024-03-05 07:08:09.5 UTC),
                "2024-03-05T07:08:09.500000000Z",
            ),
            (
                datetime!(2024-03-05 07:08:09.123456789 UTC),
                "2024-03-05T07:08:09.123456789Z",
            ),
            (
                datetime!(2024-03-05 01:00:00 +02:00),
                "2024-03-04T23:00:00.000000000Z",
            ),
            (
                datetime!(0000-01-01 00:00:00 UTC),
                "0000-01-01T00:00:00.000000000Z",
            ),
        ];
        for (t, want) in cases {
            assert_eq!(Rfc3339Nanos(t).to_string(), want);
            assert!(check_time(t).is_ok());
        }
    }

    #[test]
    fn out_of_range_years_are_rejected() {
        // The second one is year 10000 once converted to UTC.
        for t in [
            datetime!(-0001-12-31 23:00:00 UTC),
            datetime!(9999-12-31 23:00:00 -02:00),
        ] {
            assert!(check_time(t).is_err());
            let mut s = String::new();
            assert!(fmt::write(&mut s, format_args!("{}", Rfc3339Nanos(t))).is_err());
        }
    }

    #[test]
    fn hand_formatting_matches_core_fmt() {
        // Spread over the whole representable range, odd nanoseconds included.
        let start = datetime!(0000-01-01 00:00:00 UTC).unix_timestamp();
        let end = datetime!(9999-12-31 23:59:59 UTC).unix_timestamp();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = start + (x % (end - start) as u64) as i64;
            let t = OffsetDateTime::from_unix_timestamp(secs)
                .unwrap()
                .replace_nanosecond((x % 1_000_000_000) as u32)
                .unwrap();
            let oracle = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.nanosecond()
            );
            assert_eq!(Rfc3339Nanos(t).to_string(), oracle);
        }
    }
}
