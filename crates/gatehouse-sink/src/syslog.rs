//! RFC 5424 messages with RFC 6587 octet-counting framing. Pure code.
//!
//! ```text
//! <len> <PRI>1 TIMESTAMP HOSTNAME gatehouse - MSGID [gatehouse@32473 seq="N" hash="…"] {record JSON}
//! ```
//!
//! * PRI = facility × 8 + severity ([`severity`]).
//! * TIMESTAMP is the record's time in UTC with microseconds (RFC 5424 allows at most six
//!   fractional digits; the record itself, in MSG, keeps the nanoseconds).
//! * PROCID is `-`; MSGID is the record's kind (`statement`, `auth.failure`, ...).
//! * MSG is the record's line exactly as stored in the log, so a receiver can check its hash.
//!   It is sent without a BOM (RFC 5424 `MSG-ANY`): the line is UTF-8 JSON.

use gatehouse_audit::event::{EventKind, Status};
use time::OffsetDateTime;

use crate::config::Facility;
use crate::source::SourceRecord;

/// The header fields that are the same for every message of a sink.
#[derive(Debug, Clone)]
pub struct Header {
    pub facility: Facility,
    pub hostname: String,
    pub app_name: String,
    pub sd_id: String,
}

impl Header {
    /// Builds a header, making each field valid for its place (printable ASCII without spaces,
    /// within RFC 5424's lengths; `-` when empty).
    pub fn new(facility: Facility, hostname: &str, app_name: &str, sd_id: &str) -> Header {
        Header {
            facility,
            hostname: header_field(hostname, 255),
            app_name: header_field(app_name, 48),
            sd_id: sd_name(sd_id),
        }
    }
}

/// RFC 5424 severities used by the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Warning = 4,
    Notice = 5,
    Informational = 6,
}

/// The severity of a record: `warning` for failures and for kinds that report trouble,
/// `notice` for changes to who may do what, `informational` for everything else.
pub fn severity(kind: EventKind, status: Status) -> Severity {
    use EventKind::*;
    if status == Status::Failure {
        return Severity::Warning;
    }
    match kind {
        AuthFailure | AuthFailureSummary | ProtocolError | GatewayUncleanStop | AuditGap
        | AuditDiskLow | PolicyRejected | SinkLagging => Severity::Warning,
        ConfigLoaded | KeyCreated | KeyRevoked | BootstrapKey | SessionKill | PolicyLoaded
        | ApprovalRequested | ApprovalApproved | ApprovalDenied | ApprovalExecuted
        | RecordingPruned | RecordingReplayed | GatewayStart | GatewayStop | SinkRecovered => {
            Severity::Notice
        }
        _ => Severity::Informational,
    }
}

/// `<PRI>`'s number.
pub fn pri(facility: Facility, severity: Severity) -> u8 {
    facility.code() * 8 + severity as u8
}

/// RFC 3339 in UTC with six fractional digits, as RFC 5424 `TIMESTAMP` requires.
pub fn timestamp(time: OffsetDateTime) -> String {
    let t = time.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Appends `value` escaped for a PARAM-VALUE: `"`, `\` and `]` get a backslash.
pub fn escape_param_value(out: &mut Vec<u8>, value: &str) {
    for &b in value.as_bytes() {
        if matches!(b, b'"' | b'\\' | b']') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// Appends one RFC 5424 message (no framing) for a record.
pub fn message(out: &mut Vec<u8>, header: &Header, record: &SourceRecord) {
    use std::io::Write as _;
    let severity = severity(record.kind, record.status);
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "<{}>1 {} {} {} - {} [{}",
        pri(header.facility, severity),
        timestamp(record.time),
        header.hostname,
        header.app_name,
        header_field(record.kind.as_str(), 32),
        header.sd_id,
    );
    out.extend_from_slice(b" seq=\"");
    escape_param_value(out, &record.seq.to_string());
    out.extend_from_slice(b"\" hash=\"");
    escape_param_value(out, record.hash.as_str());
    out.extend_from_slice(b"\"] ");
    out.extend_from_slice(&record.line);
}

/// Appends one octet-counted frame: `<length> <message>`.
pub fn frame(out: &mut Vec<u8>, header: &Header, record: &SourceRecord) {
    let mut msg = Vec::with_capacity(record.line.len() + 256);
    message(&mut msg, header, record);
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(&msg);
}

/// PRINTUSASCII (33..=126), at most `max` bytes, `-` when nothing is left.
fn header_field(value: &str, max: usize) -> String {
    let cleaned: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if cleaned.is_empty() {
        "-".into()
    } else {
        cleaned
    }
}

/// An SD-NAME: printable ASCII except `=`, space, `]` and `"`, at most 32 bytes.
fn sd_name(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"'))
        .take(32)
        .collect();
    if cleaned.is_empty() {
        "gatehouse@32473".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_audit::record::HashHex;
    use time::macros::datetime;

    fn record() -> SourceRecord {
        SourceRecord {
            seq: 42,
            hash: HashHex::parse(&[b'a'; 64]).unwrap(),
            offset: 0,
            kind: EventKind::AuthFailure,
            status: Status::Failure,
            time: datetime!(2026-03-01 12:34:56.123456789 UTC),
            line: br#"{"seq":42,"kind":"auth.failure"}"#.to_vec(),
        }
    }

    #[test]
    fn frame_matches_the_rfcs() {
        let header = Header::new(Facility::AuthPriv, "gw-1", "gatehouse", "gatehouse@32473");
        let mut out = Vec::new();
        frame(&mut out, &header, &record());
        let text = String::from_utf8(out).unwrap();
        let msg = format!(
            "<84>1 2026-03-01T12:34:56.123456Z gw-1 gatehouse - auth.failure [gatehouse@32473 seq=\"42\" hash=\"{}\"] {{\"seq\":42,\"kind\":\"auth.failure\"}}",
            "a".repeat(64)
        );
        assert_eq!(text, format!("{} {msg}", msg.len()));
    }

    #[test]
    fn pri_and_severity() {
        assert_eq!(pri(Facility::Local0, Severity::Informational), 134);
        assert_eq!(pri(Facility::AuthPriv, Severity::Warning), 84);
        assert_eq!(
            severity(EventKind::Statement, Status::Failure),
            Severity::Warning
        );
        assert_eq!(
            severity(EventKind::Statement, Status::Pending),
            Severity::Informational
        );
        assert_eq!(
            severity(EventKind::AuditGap, Status::Success),
            Severity::Warning
        );
        assert_eq!(
            severity(EventKind::KeyCreated, Status::Success),
            Severity::Notice
        );
        for kind in EventKind::ALL {
            // Every kind maps to a severity and is a valid MSGID.
            let _ = severity(kind, Status::Success);
            assert_eq!(header_field(kind.as_str(), 32), kind.as_str());
        }
    }

    #[test]
    fn param_values_are_escaped() {
        let mut out = Vec::new();
        escape_param_value(&mut out, r#"a"b\c]d[e"#);
        assert_eq!(out, br#"a\"b\\c\]d[e"#);
    }

    #[test]
    fn header_fields_are_sanitised() {
        let header = Header::new(Facility::User, "my host\u{e9}", "", "bad id=\"x\"]");
        assert_eq!(header.hostname, "myhost");
        assert_eq!(header.app_name, "-");
        assert_eq!(header.sd_id, "badidx");
        assert_eq!(header_field(&"h".repeat(300), 255).len(), 255);
    }

    #[test]
    fn timestamp_has_microseconds_in_utc() {
        let t = datetime!(2026-03-01 23:00:00.000000999 -02:00);
        assert_eq!(timestamp(t), "2026-03-02T01:00:00.000000Z");
    }
}
