//! Reading a PostgreSQL session's recording back as events a person can follow: the
//! statements, the tables of rows, command tags, errors and notices, with their times. Pure:
//! the admin API and the CLI both use it.

use gatehouse_core::record::{Frame, FrameKind};
use serde_json::{json, Value};

/// One frame as a replay event: `{"at_ms", "type", ...}`.
pub fn event(frame: &Frame) -> Value {
    let at_ms = frame.at_micros as f64 / 1000.0;
    let mut event = match frame.kind {
        FrameKind::Wire => wire(&frame.payload),
        kind => {
            let mut body = frame
                .json()
                .unwrap_or_else(|| json!({ "unreadable": true }));
            if !body.is_object() {
                body = json!({ "value": body });
            }
            body["type"] = kind.as_str().into();
            body
        }
    };
    event["at_ms"] = at_ms.into();
    event
}

/// One backend message (tag, length, body).
fn wire(message: &[u8]) -> Value {
    let (Some(&tag), Some(body)) = (message.first(), message.get(5..)) else {
        return json!({ "type": "unreadable" });
    };
    match tag {
        b'T' => columns(body).map_or_else(
            || json!({ "type": "unreadable", "message": "T" }),
            |names| json!({ "type": "columns", "names": names }),
        ),
        b'D' => row(body).map_or_else(
            || json!({ "type": "unreadable", "message": "D" }),
            |values| json!({ "type": "row", "values": values }),
        ),
        b'C' => json!({ "type": "complete", "tag": cstr(body).0 }),
        b'I' => json!({ "type": "complete", "tag": "" }),
        b'E' | b'N' => {
            let mut event = fields(body);
            event["type"] = if tag == b'E' { "error" } else { "notice" }.into();
            event
        }
        b'A' => {
            let pid = body
                .get(..4)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            let (channel, rest) = cstr(body.get(4..).unwrap_or_default());
            let (payload, _) = cstr(rest);
            json!({ "type": "notification", "pid": pid, "channel": channel, "payload": payload })
        }
        b'd' => json!({ "type": "copy", "data": text(body) }),
        b'H' => json!({ "type": "copy_out" }),
        b'G' => json!({ "type": "copy_in" }),
        b'S' => {
            let (name, rest) = cstr(body);
            let (value, _) = cstr(rest);
            json!({ "type": "parameter", "name": name, "value": value })
        }
        b'Z' => json!({
            "type": "ready",
            "status": body.first().map(|b| char::from(*b).to_string()),
        }),
        other => json!({ "type": "protocol", "message": char::from(other).to_string() }),
    }
}

fn cstr(buf: &[u8]) -> (String, &[u8]) {
    match buf.iter().position(|&b| b == 0) {
        Some(end) => (text(&buf[..end]), &buf[end + 1..]),
        None => (text(buf), &[]),
    }
}

/// A value as text: UTF-8 as is; anything else (a binary-format value) as `\x` hex, the way
/// PostgreSQL shows bytea.
fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => format!("\\x{}", hex::encode(bytes)),
    }
}

fn i16_at(buf: &[u8], at: usize) -> Option<i16> {
    buf.get(at..at + 2)
        .map(|b| i16::from_be_bytes([b[0], b[1]]))
}

fn columns(body: &[u8]) -> Option<Vec<String>> {
    let count = usize::try_from(i16_at(body, 0)?).ok()?;
    let mut rest = body.get(2..)?;
    let mut names = Vec::with_capacity(count.min(1600));
    for _ in 0..count {
        let end = rest.iter().position(|&b| b == 0)?;
        names.push(text(&rest[..end]));
        rest = rest.get(end + 1 + 18..)?;
    }
    Some(names)
}

fn row(body: &[u8]) -> Option<Vec<Option<String>>> {
    let count = usize::try_from(i16_at(body, 0)?).ok()?;
    let mut rest = body.get(2..)?;
    let mut values = Vec::with_capacity(count.min(1600));
    for _ in 0..count {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = rest.get(4..)?;
        if len < 0 {
            values.push(None);
            continue;
        }
        let len = usize::try_from(len).ok()?;
        values.push(Some(text(rest.get(..len)?)));
        rest = rest.get(len..)?;
    }
    Some(values)
}

fn fields(mut body: &[u8]) -> Value {
    let mut event = json!({});
    while let [field, rest @ ..] = body {
        if *field == 0 {
            break;
        }
        let (value, rest) = cstr(rest);
        let key = match field {
            b'V' => "severity",
            b'S' if event.get("severity").is_none() => "severity",
            b'C' => "code",
            b'M' => "message",
            b'D' => "detail",
            b'H' => "hint",
            b'P' => "position",
            b'W' => "where",
            _ => {
                body = rest;
                continue;
            }
        };
        event[key] = value.into();
        body = rest;
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = bytes::BytesMut::new();
        crate::codec::message_with(&mut m, tag, |out| out.extend_from_slice(body));
        m.to_vec()
    }

    fn wire_frame(tag: u8, body: &[u8]) -> Frame {
        Frame {
            kind: FrameKind::Wire,
            at_micros: 1500,
            payload: message(tag, body),
        }
    }

    #[test]
    fn backend_messages_read_as_events() {
        let mut t = vec![0, 2];
        for name in ["id", "card"] {
            t.extend_from_slice(name.as_bytes());
            t.push(0);
            t.extend_from_slice(&[0; 18]);
        }
        let e = event(&wire_frame(b'T', &t));
        assert_eq!(e["names"], json!(["id", "card"]));
        assert_eq!(e["at_ms"], 1.5);

        let mut d = vec![0, 2, 0, 0, 0, 1, b'7'];
        d.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(event(&wire_frame(b'D', &d))["values"], json!(["7", null]));
        assert_eq!(
            event(&wire_frame(b'D', &[0, 1, 0, 0, 0, 2, 0xff, 0]))["values"],
            json!(["\\xff00"])
        );
        assert_eq!(event(&wire_frame(b'C', b"SELECT 1\0"))["tag"], "SELECT 1");
        let e = event(&wire_frame(
            b'E',
            b"SERROR\0VERROR\0C23505\0Mduplicate key\0DKey (card)=(****)\0\0",
        ));
        assert_eq!(e["type"], "error");
        assert_eq!(e["code"], "23505");
        assert_eq!(e["detail"], "Key (card)=(****)");
        let e = event(&wire_frame(b'A', b"\0\0\0\x07chan\0hello\0"));
        assert_eq!(
            (e["channel"].as_str(), e["payload"].as_str()),
            (Some("chan"), Some("hello"))
        );
    }

    #[test]
    fn malformed_messages_never_panic() {
        for tag in [b'T', b'D', b'C', b'E', b'A', b'S', b'Z', b'd'] {
            for body in [
                &b""[..],
                b"\x7f\xff",
                b"\0\x05abc",
                b"\0\x01\xff\xff\xff\xfe",
            ] {
                let _ = event(&wire_frame(tag, body));
            }
        }
        let short = Frame {
            kind: FrameKind::Wire,
            at_micros: 0,
            payload: vec![b'D', 0],
        };
        assert_eq!(event(&short)["type"], "unreadable");
    }
}
