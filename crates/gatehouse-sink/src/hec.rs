//! Splunk HTTP Event Collector bodies and answers. Pure code.
//!
//! A batch is one POST whose body is the events' JSON objects one after another:
//!
//! ```text
//! {"time":1772368496.123456789,"host":"gw-1","source":"gatehouse","sourcetype":"gatehouse:audit","event":{record},"fields":{"seq":42}}
//! ```
//!
//! `event` is the record's line exactly as stored (it is JSON), so its hash can be checked at
//! the receiver. With indexer acknowledgement the answer carries an `ackId`, and
//! `POST <ack path>?channel=<channel>` with `{"acks":[id]}` answers `{"acks":{"<id>":true}}`
//! once the batch is indexed.

use std::io::Write as _;

use serde::Deserialize;
use time::OffsetDateTime;

use crate::source::SourceRecord;

/// The fields every event of a sink shares.
#[derive(Debug, Clone)]
pub struct Meta {
    pub host: String,
    pub source: String,
    pub sourcetype: String,
    pub index: Option<String>,
}

/// Seconds since the Unix epoch with nine fractional digits, e.g. `1772368496.123456789`.
pub fn epoch_seconds(time: OffsetDateTime) -> String {
    let nanos = time.unix_timestamp_nanos();
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    format!("{secs}.{frac:09}")
}

/// Appends one event object for a record.
pub fn event(out: &mut Vec<u8>, meta: &Meta, record: &SourceRecord) {
    let string = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let _ = write!(
        out,
        "{{\"time\":{},\"host\":{},\"source\":{},\"sourcetype\":{},",
        epoch_seconds(record.time),
        string(&meta.host),
        string(&meta.source),
        string(&meta.sourcetype),
    );
    if let Some(index) = &meta.index {
        let _ = write!(out, "\"index\":{},", string(index));
    }
    out.extend_from_slice(b"\"event\":");
    out.extend_from_slice(&record.line);
    let _ = write!(out, ",\"fields\":{{\"seq\":{}}}}}", record.seq);
}

/// The body for a batch.
pub fn body(meta: &Meta, records: &[SourceRecord]) -> Vec<u8> {
    let size = records.iter().map(|r| r.line.len() + 200).sum();
    let mut out = Vec::with_capacity(size);
    for record in records {
        event(&mut out, meta, record);
    }
    out
}

/// What the event endpoint said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Taken (2xx, `code` 0 or no body we understand).
    Done,
    /// Taken, to be confirmed with this acknowledgement id.
    Ack(u64),
}

/// Why the event endpoint did not take a batch. Every one is retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("HTTP {status}{}", describe(code, text))]
    Status {
        status: u16,
        code: Option<i64>,
        text: Option<String>,
    },
    #[error("HTTP {status} with HEC code {code}{}", describe(&None, text))]
    Code {
        status: u16,
        code: i64,
        text: Option<String>,
    },
}

fn describe(code: &Option<i64>, text: &Option<String>) -> String {
    let mut out = String::new();
    if let Some(code) = code {
        out.push_str(&format!(" (HEC code {code})"));
    }
    if let Some(text) = text {
        let short: String = text.chars().take(200).collect();
        out.push_str(&format!(": {short}"));
    }
    out
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default, rename = "ackId")]
    ack_id: Option<u64>,
}

/// Interprets the event endpoint's answer.
pub fn parse_answer(status: u16, body: &[u8]) -> Result<Accepted, Refused> {
    let answer: Option<Answer> = serde_json::from_slice(body).ok();
    let (code, text, ack_id) = match answer {
        Some(a) => (a.code, a.text, a.ack_id),
        None => (None, None, None),
    };
    if !(200..300).contains(&status) {
        return Err(Refused::Status { status, code, text });
    }
    match code {
        Some(code) if code != 0 => Err(Refused::Code { status, code, text }),
        _ => Ok(ack_id.map_or(Accepted::Done, Accepted::Ack)),
    }
}

/// The acknowledgement query body for one id.
pub fn ack_query(id: u64) -> Vec<u8> {
    format!("{{\"acks\":[{id}]}}").into_bytes()
}

#[derive(Deserialize)]
struct AckAnswer {
    acks: std::collections::HashMap<String, bool>,
}

/// Whether the acknowledgement endpoint's answer says `id` is indexed.
pub fn parse_ack(body: &[u8], id: u64) -> Result<bool, String> {
    let answer: AckAnswer =
        serde_json::from_slice(body).map_err(|e| format!("unexpected acknowledgement: {e}"))?;
    Ok(answer.acks.get(&id.to_string()).copied().unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_audit::event::{EventKind, Status};
    use gatehouse_audit::record::HashHex;
    use time::macros::datetime;

    fn record(seq: u64) -> SourceRecord {
        SourceRecord {
            seq,
            hash: HashHex::parse(&[b'a'; 64]).unwrap(),
            offset: 0,
            kind: EventKind::Statement,
            status: Status::Success,
            time: datetime!(2026-03-01 12:34:56.000000789 UTC),
            line: format!("{{\"seq\":{seq},\"kind\":\"statement\"}}").into_bytes(),
        }
    }

    fn meta(index: Option<&str>) -> Meta {
        Meta {
            host: "gw \"1\"".into(),
            source: "gatehouse".into(),
            sourcetype: "gatehouse:audit".into(),
            index: index.map(Into::into),
        }
    }

    #[test]
    fn body_is_concatenated_events() {
        let body = body(&meta(None), &[record(1), record(2)]);
        let text = String::from_utf8(body.clone()).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"time":1772368496.000000789,"host":"gw \"1\"","source":"gatehouse","sourcetype":"gatehouse:audit","event":{"seq":1,"kind":"statement"},"fields":{"seq":1}}"#,
                r#"{"time":1772368496.000000789,"host":"gw \"1\"","source":"gatehouse","sourcetype":"gatehouse:audit","event":{"seq":2,"kind":"statement"},"fields":{"seq":2}}"#
            )
        );
        let events: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&body)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1]["fields"]["seq"], 2);
        assert_eq!(events[1]["event"]["seq"], 2);

        let mut one = Vec::new();
        event(&mut one, &meta(Some("audit")), &record(3));
        let v: serde_json::Value = serde_json::from_slice(&one).unwrap();
        assert_eq!(v["index"], "audit");
    }

    #[test]
    fn epoch_seconds_before_and_after_1970() {
        assert_eq!(
            epoch_seconds(datetime!(1970-01-01 00:00:01.5 UTC)),
            "1.500000000"
        );
        assert_eq!(
            epoch_seconds(datetime!(1969-12-31 23:59:59.75 UTC)),
            "-1.750000000"
        );
    }

    #[test]
    fn answers() {
        assert_eq!(
            parse_answer(200, br#"{"text":"Success","code":0}"#),
            Ok(Accepted::Done)
        );
        assert_eq!(parse_answer(204, b""), Ok(Accepted::Done));
        assert_eq!(
            parse_answer(200, br#"{"text":"Success","code":0,"ackId":7}"#),
            Ok(Accepted::Ack(7))
        );
        assert!(matches!(
            parse_answer(200, br#"{"text":"Invalid token","code":4}"#),
            Err(Refused::Code { code: 4, .. })
        ));
        let err = parse_answer(503, br#"{"text":"Server is busy","code":9}"#).unwrap_err();
        assert_eq!(err.to_string(), "HTTP 503 (HEC code 9): Server is busy");
        assert_eq!(
            parse_answer(503, b"<html>").unwrap_err().to_string(),
            "HTTP 503"
        );
    }

    #[test]
    fn acks() {
        assert_eq!(ack_query(7), br#"{"acks":[7]}"#);
        assert_eq!(parse_ack(br#"{"acks":{"7":true}}"#, 7), Ok(true));
        assert_eq!(parse_ack(br#"{"acks":{"7":false}}"#, 7), Ok(false));
        assert_eq!(parse_ack(br#"{"acks":{}}"#, 7), Ok(false));
        assert!(parse_ack(b"nope", 7).is_err());
    }
}
