//! PostgreSQL wire format: building the backend messages the gateway itself sends, and reading
//! the few fields it needs from messages it relays. Pure functions over bytes.

use bytes::{BufMut, BytesMut};

pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
pub const CANCEL_REQUEST: i32 = 80_877_102;
pub const PROTOCOL_3_0: i32 = 196_608;

/// Largest startup packet accepted, as in PostgreSQL itself.
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// SQLSTATE codes the gateway uses in its own errors.
pub mod sqlstate {
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const SQLCLIENT_UNABLE: &str = "08001";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

fn message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    body(out);
    let len = i32::try_from(out.len() - at).unwrap_or(i32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(out: &mut BytesMut, s: &str) {
    // A NUL inside would end the field early; the gateway's own texts never contain one.
    out.put_slice(s.replace('\0', " ").as_bytes());
    out.put_u8(0);
}

/// ErrorResponse with severity, SQLSTATE and message.
pub fn error_response(out: &mut BytesMut, severity: Severity, code: &str, text: &str) {
    message(out, b'E', |b| {
        b.put_u8(b'S');
        cstr(b, severity.as_str());
        b.put_u8(b'V');
        cstr(b, severity.as_str());
        b.put_u8(b'C');
        cstr(b, code);
        b.put_u8(b'M');
        cstr(b, text);
        b.put_u8(0);
    });
}

pub fn auth_cleartext_request(out: &mut BytesMut) {
    message(out, b'R', |b| b.put_i32(3));
}

pub fn auth_ok(out: &mut BytesMut) {
    message(out, b'R', |b| b.put_i32(0));
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    message(out, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    message(out, b'Z', |b| b.put_u8(status));
}

/// NegotiateProtocolVersion: the newest minor version we speak and the options we ignored.
pub fn negotiate_protocol_version(out: &mut BytesMut, minor: i32, unrecognised: &[String]) {
    message(out, b'v', |b| {
        b.put_i32(minor);
        b.put_i32(i32::try_from(unrecognised.len()).unwrap_or(i32::MAX));
        for option in unrecognised {
            cstr(b, option);
        }
    });
}

/// Error from reading a message the gateway must understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

/// Reads a NUL-terminated string at the front of `buf`, returning it and the rest.
pub fn read_cstr<'a>(buf: &'a [u8], what: &'static str) -> Result<(&'a str, &'a [u8]), ParseError> {
    let end = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or(ParseError::Malformed(what))?;
    let s = std::str::from_utf8(&buf[..end]).map_err(|_| ParseError::Malformed(what))?;
    Ok((s, &buf[end + 1..]))
}

/// The key/value parameters of a StartupMessage body (after the protocol version).
pub fn startup_params(mut body: &[u8]) -> Result<Vec<(String, String)>, ParseError> {
    let mut params = Vec::new();
    loop {
        match body {
            [0] => return Ok(params),
            [] => return Err(ParseError::Malformed("startup")),
            _ => {
                let (key, rest) = read_cstr(body, "startup")?;
                let (value, rest) = read_cstr(rest, "startup")?;
                params.push((key.to_owned(), value.to_owned()));
                body = rest;
            }
        }
        if params.len() > 64 {
            return Err(ParseError::Malformed("startup"));
        }
    }
}

/// The SQLSTATE and message of an ErrorResponse body.
pub fn error_fields(mut body: &[u8]) -> (String, String) {
    let (mut code, mut text) = (String::new(), String::new());
    while let [field, rest @ ..] = body {
        if *field == 0 {
            break;
        }
        let Ok((value, rest)) = read_cstr(rest, "error") else {
            break;
        };
        match field {
            b'C' => code = value.to_owned(),
            b'M' => text = value.to_owned(),
            _ => {}
        }
        body = rest;
    }
    (code, text)
}

/// Rows affected or returned, from a CommandComplete tag such as `INSERT 0 5` or `SELECT 3`.
pub fn command_rows(tag: &[u8]) -> u64 {
    let tag = tag.strip_suffix(&[0]).unwrap_or(tag);
    let Ok(tag) = std::str::from_utf8(tag) else {
        return 0;
    };
    let mut words = tag.split(' ');
    match words.next() {
        Some("SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "COPY" | "FETCH" | "MOVE") => {
            words.next_back().and_then(|n| n.parse().ok()).unwrap_or(0)
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_error_response() {
        let mut out = BytesMut::new();
        error_response(&mut out, Severity::Fatal, "28P01", "authentication failed");
        assert_eq!(out[0], b'E');
        let len = i32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
        assert_eq!(len, out.len() - 1);
        assert_eq!(
            error_fields(&out[5..]),
            ("28P01".into(), "authentication failed".into())
        );
    }

    #[test]
    fn parses_startup_params() {
        let body = b"user\0bob\0database\0demo\0\0";
        let params = startup_params(body).unwrap();
        assert_eq!(
            params,
            vec![
                ("user".into(), "bob".into()),
                ("database".into(), "demo".into())
            ]
        );
        assert!(startup_params(b"user\0bob").is_err());
        assert!(startup_params(b"").is_err());
        assert!(startup_params(b"user\0\xff\xfe\0\0").is_err());
        assert_eq!(startup_params(b"\0").unwrap(), vec![]);
    }

    #[test]
    fn reads_rows_from_command_tags() {
        for (tag, rows) in [
            (&b"SELECT 3\0"[..], 3),
            (b"INSERT 0 5\0", 5),
            (b"UPDATE 7\0", 7),
            (b"COPY 10\0", 10),
            (b"BEGIN\0", 0),
            (b"CREATE TABLE\0", 0),
            (b"SELECT x\0", 0),
            (b"\xff\0", 0),
        ] {
            assert_eq!(command_rows(tag), rows);
        }
    }

    #[test]
    fn error_fields_tolerate_garbage() {
        assert_eq!(error_fields(b"Cxx"), (String::new(), String::new()));
        assert_eq!(error_fields(b""), (String::new(), String::new()));
    }
}
