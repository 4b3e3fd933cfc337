//! Column encodings shared by every backend.
//!
//! Times are stored as integer unix nanoseconds (UTC) in `BIGINT` columns: exact, sortable
//! and identical on SQLite and PostgreSQL. String lists are stored as JSON array text.

use time::OffsetDateTime;

use crate::StoreError;

/// Encodes a time as unix nanoseconds; only times between 1677 and 2262 fit in an `i64`.
pub(crate) fn time_to_db(t: OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos())
        .map_err(|_| StoreError::Invalid(format!("time {t} is out of the storable range")))
}

pub(crate) fn time_from_db(nanos: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .map_err(|e| StoreError::Corrupt(format!("timestamp {nanos}: {e}")))
}

pub(crate) fn opt_time_from_db(nanos: Option<i64>) -> Result<Option<OffsetDateTime>, StoreError> {
    nanos.map(time_from_db).transpose()
}

pub(crate) fn list_to_db(items: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(items).map_err(|e| StoreError::Invalid(format!("string list: {e}")))
}

pub(crate) fn list_from_db(text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("string list: {e}")))
}

pub(crate) fn count_to_db(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Invalid(format!("count {n} is too large")))
}

pub(crate) fn count_from_db(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count {n}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn time_round_trips_exactly() {
        for t in [
            datetime!(1970-01-01 0:00 UTC),
            datetime!(2024-02-29 23:59:59.123456789 UTC),
            datetime!(2030-06-01 12:00 +02:00),
        ] {
            assert_eq!(time_from_db(time_to_db(t).unwrap()).unwrap(), t);
        }
    }

    #[test]
    fn time_out_of_range_is_invalid() {
        let t = datetime!(2300-01-01 0:00 UTC);
        assert!(matches!(time_to_db(t), Err(StoreError::Invalid(_))));
    }

    #[test]
    fn lists_round_trip() {
        let v = vec!["a".to_string(), "b \"q\"".to_string()];
        assert_eq!(list_from_db(&list_to_db(&v).unwrap()).unwrap(), v);
        assert!(matches!(list_from_db("{"), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn counts_stay_in_range() {
        assert_eq!(count_to_db(7).unwrap(), 7);
        assert!(count_to_db(u64::MAX).is_err());
        assert!(count_from_db(-1).is_err());
    }
}
