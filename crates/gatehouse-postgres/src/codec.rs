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
    pub const QUERY_CANCELED: &str = "57014";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const CANT_CHANGE_RUNTIME_PARAM: &str = "55P02";
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

/// Appends a message: its tag, its length, and the body `body` writes.
pub fn message_with(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    body(out);
    let len = i32::try_from(out.len() - at).unwrap_or(i32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a NUL-terminated string.
pub fn put_cstr(out: &mut BytesMut, s: &str) {
    // A NUL inside would end the field early; the gateway's own texts never contain one.
    out.put_slice(s.replace('\0', " ").as_bytes());
    out.put_u8(0);
}

/// ErrorResponse with severity, SQLSTATE and message.
pub fn error_response(out: &mut BytesMut, severity: Severity, code: &str, text: &str) {
    message_with(out, b'E', |b| {
        b.put_u8(b'S');
        put_cstr(b, severity.as_str());
        b.put_u8(b'V');
        put_cstr(b, severity.as_str());
        b.put_u8(b'C');
        put_cstr(b, code);
        b.put_u8(b'M');
        put_cstr(b, text);
        b.put_u8(0);
    });
}

pub fn auth_cleartext_request(out: &mut BytesMut) {
    message_with(out, b'R', |b| b.put_i32(3));
}

pub fn auth_ok(out: &mut BytesMut) {
    message_with(out, b'R', |b| b.put_i32(0));
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    message_with(out, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    message_with(out, b'Z', |b| b.put_u8(status));
}

/// NegotiateProtocolVersion: the newest minor version we speak and the options we ignored.
pub fn negotiate_protocol_version(out: &mut BytesMut, minor: i32, unrecognised: &[String]) {
    message_with(out, b'v', |b| {
        b.put_i32(minor);
        b.put_i32(i32::try_from(unrecognised.len()).unwrap_or(i32::MAX));
        for option in unrecognised {
            put_cstr(b, option);
        }
    });
}

/// Error from reading a message the gateway must understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

/// Reads a NUL-terminated UTF-8 string at the front of `buf`, returning it and the rest.
pub fn read_cstr<'a>(buf: &'a [u8], what: &'static str) -> Result<(&'a str, &'a [u8]), ParseError> {
    let (bytes, rest) = read_bytes(buf, what)?;
    let s = std::str::from_utf8(bytes).map_err(|_| ParseError::Malformed(what))?;
    Ok((s, rest))
}

/// Reads a NUL-terminated byte string (in the client's encoding) at the front of `buf`.
pub fn read_bytes<'a>(
    buf: &'a [u8],
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), ParseError> {
    let end = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or(ParseError::Malformed(what))?;
    Ok((&buf[..end], &buf[end + 1..]))
}

/// A Parse message's statement name and query text (parameter types are not needed).
pub fn parse_message(body: &[u8]) -> Result<(&[u8], &[u8]), ParseError> {
    let (name, rest) = read_bytes(body, "Parse")?;
    let (query, _) = read_bytes(rest, "Parse")?;
    Ok((name, query))
}

/// A Bind message's portal and statement names (from its head: they come first).
pub fn bind_names(body: &[u8]) -> Result<(&[u8], &[u8]), ParseError> {
    let (portal, rest) = read_bytes(body, "Bind")?;
    let (statement, _) = read_bytes(rest, "Bind")?;
    Ok((portal, statement))
}

/// One bound value: its bytes (`None` for NULL) and whether it is in binary format.
pub type BoundValue<'a> = (Option<&'a [u8]>, bool);

/// A Bind message's parameter values.
pub fn bind_values(body: &[u8]) -> Result<Vec<BoundValue<'_>>, ParseError> {
    let bad = || ParseError::Malformed("Bind");
    let (_, rest) = read_bytes(body, "Bind")?;
    let (_, mut rest) = read_bytes(rest, "Bind")?;
    let mut take = |n: usize| -> Result<&[u8], ParseError> {
        if rest.len() < n {
            return Err(bad());
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let i16_at = |b: &[u8]| i16::from_be_bytes([b[0], b[1]]);
    let nformats = usize::try_from(i16_at(take(2)?)).map_err(|_| bad())?;
    let mut formats = Vec::with_capacity(nformats);
    for _ in 0..nformats {
        formats.push(i16_at(take(2)?) == 1);
    }
    let nvalues = usize::try_from(i16_at(take(2)?)).map_err(|_| bad())?;
    let mut values = Vec::with_capacity(nvalues);
    for i in 0..nvalues {
        let len = take(4)?;
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        let value = match len {
            -1 => None,
            n => Some(take(usize::try_from(n).map_err(|_| bad())?)?),
        };
        let binary = match formats.len() {
            0 => false,
            1 => formats[0],
            _ => *formats.get(i).ok_or_else(bad)?,
        };
        values.push((value, binary));
    }
    Ok(values)
}

/// A Describe or Close message: `S` (statement) or `P` (portal) and the name.
pub fn target<'a>(body: &'a [u8], what: &'static str) -> Result<(u8, &'a [u8]), ParseError> {
    let (&kind, rest) = body.split_first().ok_or(ParseError::Malformed(what))?;
    if kind != b'S' && kind != b'P' {
        return Err(ParseError::Malformed(what));
    }
    Ok((kind, read_bytes(rest, what)?.0))
}

/// An Execute message's portal name.
pub fn execute_portal(body: &[u8]) -> Result<&[u8], ParseError> {
    let (portal, rest) = read_bytes(body, "Execute")?;
    if rest.len() != 4 {
        return Err(ParseError::Malformed("Execute"));
    }
    Ok(portal)
}

/// A fastpath FunctionCall: the function's OID and its arguments (`None` for NULL).
pub struct FunctionCall<'a> {
    pub oid: u32,
    pub args: Vec<Option<&'a [u8]>>,
}

pub fn function_call(body: &[u8]) -> Result<FunctionCall<'_>, ParseError> {
    let bad = ParseError::Malformed("FunctionCall");
    let mut r = Reader(body);
    let oid = r.u32().ok_or(bad.clone())?;
    let formats = r.u16().ok_or(bad.clone())?;
    for _ in 0..formats {
        r.u16().ok_or(bad.clone())?;
    }
    let nargs = r.u16().ok_or(bad.clone())?;
    let mut args = Vec::with_capacity(usize::from(nargs).min(1024));
    for _ in 0..nargs {
        let len = r.u32().ok_or(bad.clone())? as i32;
        if len < 0 {
            args.push(None);
        } else {
            args.push(Some(r.take(len as usize).ok_or(bad.clone())?));
        }
    }
    r.u16().ok_or(bad.clone())?;
    if !r.0.is_empty() {
        return Err(bad);
    }
    Ok(FunctionCall { oid, args })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// A ParameterStatus message's name and value.
pub fn parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let (name, rest) = read_cstr(body, "ParameterStatus").ok()?;
    let (value, _) = read_cstr(rest, "ParameterStatus").ok()?;
    Some((name, value))
}

/// A simple Query message.
pub fn query(out: &mut BytesMut, text: &str) {
    message_with(out, b'Q', |b| put_cstr(b, text));
}

/// Parse of the unnamed statement with no parameter types.
pub fn parse_unnamed(out: &mut BytesMut, text: &str) {
    message_with(out, b'P', |b| {
        b.put_u8(0);
        put_cstr(b, text);
        b.put_i16(0);
    });
}

/// Bind of the unnamed statement to the unnamed portal, no parameters, text results.
pub fn bind_unnamed(out: &mut BytesMut) {
    message_with(out, b'B', |b| {
        b.put_u8(0);
        b.put_u8(0);
        b.put_i16(0);
        b.put_i16(0);
        b.put_i16(0);
    });
}

/// Execute of the unnamed portal, all rows.
pub fn execute_unnamed(out: &mut BytesMut) {
    message_with(out, b'E', |b| {
        b.put_u8(0);
        b.put_i32(0);
    });
}

/// A statement that makes the server itself raise `code` with `message`, so that a refusal
/// has exactly the effect of an error on the server: the transaction is aborted if one is
/// open, and the server's own ReadyForQuery says so.
pub fn raise_statement(code: &str, message: &str) -> String {
    let quoted = message.replace('\0', " ").replace('\'', "''");
    let code: String = code.chars().filter(char::is_ascii_alphanumeric).collect();
    // A dollar-quote tag that does not occur in the body.
    let mut tag = String::from("gatehouse");
    while quoted.contains(&format!("${tag}$")) {
        tag.push('_');
    }
    format!(
        "DO ${tag}$BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = '{quoted}'; END${tag}$"
    )
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
pub fn error_fields(body: &[u8]) -> (String, String) {
    let fields = error_detail(body);
    (fields.code, fields.message)
}

/// The fields of an ErrorResponse or NoticeResponse the gateway looks at. Tolerates a body cut
/// short (the head of a large message): fields read so far are kept.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ErrorDetail {
    pub severity: String,
    pub code: String,
    pub message: String,
}

/// The raw bytes of an ErrorResponse's message field (in the session's client encoding).
pub fn error_message_bytes(mut body: &[u8]) -> Option<&[u8]> {
    while let [field, rest @ ..] = body {
        if *field == 0 {
            return None;
        }
        let (value, rest) = read_bytes(rest, "error").ok()?;
        if *field == b'M' {
            return Some(value);
        }
        body = rest;
    }
    None
}

pub fn error_detail(mut body: &[u8]) -> ErrorDetail {
    let mut out = ErrorDetail::default();
    while let [field, rest @ ..] = body {
        if *field == 0 {
            break;
        }
        let Ok((value, rest)) = read_bytes(rest, "error") else {
            break;
        };
        let value = String::from_utf8_lossy(value);
        match field {
            // Non-localized severity (V) wins over the localized one (S).
            b'V' => out.severity = value.into_owned(),
            b'S' if out.severity.is_empty() => out.severity = value.into_owned(),
            b'C' => out.code = value.into_owned(),
            b'M' => out.message = value.into_owned(),
            _ => {}
        }
        body = rest;
    }
    out
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
    fn raise_statement_quotes_any_message() {
        let sql = raise_statement("42501", "it's $gatehouse$ \\ ok");
        assert!(sql.starts_with("DO $gatehouse_$BEGIN"), "{sql}");
        assert!(sql.contains("MESSAGE = 'it''s $gatehouse$ \\ ok'"), "{sql}");
        assert!(raise_statement("42501'; x", "m").contains("ERRCODE = '42501x'"));
    }

    #[test]
    fn reads_client_messages() {
        assert_eq!(
            parse_message(b"s1\0SELECT 1\0\0\0").unwrap(),
            (&b"s1"[..], &b"SELECT 1"[..])
        );
        assert_eq!(bind_names(b"p\0s\0rest").unwrap(), (&b"p"[..], &b"s"[..]));
        assert_eq!(target(b"Sx\0", "Close").unwrap(), (b'S', &b"x"[..]));
        assert!(target(b"Qx\0", "Close").is_err());
        assert_eq!(execute_portal(b"\0\0\0\0\0").unwrap(), b"");
        assert!(execute_portal(b"\0\0").is_err());
        let call = function_call(b"\0\0\0\x07\0\0\0\x02\0\0\0\x02hi\xff\xff\xff\xff\0\0").unwrap();
        assert_eq!(call.oid, 7);
        assert_eq!(call.args, vec![Some(&b"hi"[..]), None]);
        assert!(function_call(b"\0\0\0\x07\0\0\0\x01\0\0\0\x09hi\0\0").is_err());
    }

    #[test]
    fn error_fields_tolerate_garbage() {
        assert_eq!(error_fields(b"Cxx"), (String::new(), String::new()));
        assert_eq!(error_fields(b""), (String::new(), String::new()));
    }
}
