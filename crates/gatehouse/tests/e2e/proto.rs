//! A minimal, blocking PostgreSQL frontend built from hand-made protocol bytes, for what client
//! libraries do not expose or refuse to send: malformed messages, cancel keys, every
//! ParameterStatus, streaming a result without holding it.

#![allow(dead_code)]

use crate::harness::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Protocol version 3.0.
pub const V3: i32 = 196_608;

/// The startup parameters of a client of the `main` connection.
pub const MAIN: [(&str, &str); 2] = [("user", "tester"), ("database", "main")];

/// `s` with a NUL terminator.
pub fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// A StartupMessage for `version` with `params` (length-prefixed, no type byte).
pub fn startup_packet(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(&cstr(k));
        body.extend_from_slice(&cstr(v));
    }
    body.push(0);
    let mut out = i32::try_from(body.len() + 4)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(&body);
    out
}

/// A regular (typed) message with a correct length.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = header(tag, i32::try_from(body.len() + 4).unwrap());
    out.extend_from_slice(body);
    out
}

/// Just a message header claiming `len` (which counts itself, as on the wire).
pub fn header(tag: u8, len: i32) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&len.to_be_bytes());
    out
}

pub fn password_message(password: &str) -> Vec<u8> {
    message(b'p', &cstr(password))
}

pub fn query_message(sql: &str) -> Vec<u8> {
    message(b'Q', &cstr(sql))
}

/// How reading from the gateway ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Orderly close (EOF between messages).
    Closed,
    /// Connection reset (the gateway closed with unread input: still a close).
    Reset,
    /// EOF in the middle of a message.
    Truncated,
    /// Nothing arrived within the read timeout: the connection is still open.
    TimedOut,
}

/// One backend message, or how the stream ended.
#[derive(Debug)]
pub enum Backend {
    Msg(u8, Vec<u8>),
    End(End),
}

fn classify(e: &std::io::Error) -> End {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => End::TimedOut,
        ErrorKind::UnexpectedEof => End::Truncated,
        _ => End::Reset,
    }
}

/// Fills `buf`; `Ok(false)` on EOF before the first byte.
pub fn read_full(s: &mut TcpStream, buf: &mut [u8]) -> Result<bool, End> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(End::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(classify(&e)),
        }
    }
    Ok(true)
}

/// Reads one backend message (bodies up to 64 MiB; larger ones are a test failure).
pub fn read_message(s: &mut TcpStream) -> Backend {
    let mut head = [0u8; 5];
    match read_full(s, &mut head) {
        Ok(true) => {}
        Ok(false) => return Backend::End(End::Closed),
        Err(end) => return Backend::End(end),
    }
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    assert!(
        (4..=64 * 1024 * 1024).contains(&len),
        "backend sent message {:?} with length {len}",
        char::from(head[0])
    );
    let mut body = vec![0u8; len as usize - 4];
    match read_full(s, &mut body) {
        Ok(true) => Backend::Msg(head[0], body),
        Ok(false) if body.is_empty() => Backend::Msg(head[0], body),
        Ok(false) => Backend::End(End::Truncated),
        Err(end) => Backend::End(end),
    }
}

/// Everything the gateway sends until it closes the connection (or the read timeout passes).
pub fn read_until_close(s: &mut TcpStream) -> (Vec<(u8, Vec<u8>)>, End) {
    let mut msgs = Vec::new();
    loop {
        match read_message(s) {
            Backend::Msg(tag, body) => msgs.push((tag, body)),
            Backend::End(end) => return (msgs, end),
        }
    }
}

/// Messages up to and including the first ReadyForQuery, or up to the end of the stream.
pub fn read_until_ready(s: &mut TcpStream) -> (Vec<(u8, Vec<u8>)>, Option<End>) {
    let mut msgs = Vec::new();
    loop {
        match read_message(s) {
            Backend::Msg(tag, body) => {
                msgs.push((tag, body));
                if tag == b'Z' {
                    return (msgs, None);
                }
            }
            Backend::End(end) => return (msgs, Some(end)),
        }
    }
}

/// The fields of an ErrorResponse body, by field code.
pub fn error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while let [code, tail @ ..] = rest {
        if *code == 0 {
            break;
        }
        let end = tail
            .iter()
            .position(|&b| b == 0)
            .expect("error field without NUL");
        out.push((*code, text(&tail[..end])));
        rest = &tail[end + 1..];
    }
    out
}

/// One field of an ErrorResponse (empty when absent).
pub fn field(fields: &[(u8, String)], code: u8) -> String {
    fields
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// The fields `code` of every ErrorResponse among `msgs`.
pub fn error_codes(msgs: &[(u8, Vec<u8>)], code: u8) -> Vec<String> {
    msgs.iter()
        .filter(|(t, _)| *t == b'E')
        .map(|(_, b)| field(&error_fields(b), code))
        .collect()
}

/// A socket to the gateway's PostgreSQL listener with generous timeouts.
pub fn connect(gw: &Gateway) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", gw.pg_port)).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.set_nodelay(true);
    s
}

/// Startup with `params` and the admin key as cleartext password: the socket and every message
/// after the password request, up to and including the first ReadyForQuery.
pub fn log_in(gw: &Gateway, params: &[(&str, &str)]) -> (TcpStream, Vec<(u8, Vec<u8>)>) {
    let mut s = connect(gw);
    s.write_all(&startup_packet(V3, params)).unwrap();
    expect_auth_request(&mut s);
    s.write_all(&password_message(&gw.admin_key)).unwrap();
    let mut msgs = Vec::new();
    loop {
        match read_message(&mut s) {
            Backend::Msg(b'Z', body) => {
                msgs.push((b'Z', body));
                return (s, msgs);
            }
            Backend::Msg(b'E', body) => panic!(
                "authentication failed: {:?}\n{}",
                error_fields(&body),
                gw.log()
            ),
            Backend::Msg(tag, body) => msgs.push((tag, body)),
            Backend::End(end) => panic!(
                "connection ended during authentication: {end:?}\n{}",
                gw.log()
            ),
        }
    }
}

/// Startup and cleartext password with the admin key on `main`, up to the first ReadyForQuery.
pub fn authenticated(gw: &Gateway) -> TcpStream {
    log_in(gw, &MAIN).0
}

/// Reads the AuthenticationCleartextPassword request.
pub fn expect_auth_request(s: &mut TcpStream) {
    match read_message(s) {
        Backend::Msg(b'R', body) => assert_eq!(
            body,
            3i32.to_be_bytes(),
            "expected a cleartext password request"
        ),
        other => panic!("expected an authentication request, got {other:?}"),
    }
}

/// Reads a simple query's response up to ReadyForQuery: (data rows' first column, error).
pub fn read_query_result(s: &mut TcpStream) -> (Vec<String>, Option<Vec<(u8, String)>>) {
    let mut rows = Vec::new();
    let mut error = None;
    loop {
        match read_message(s) {
            Backend::Msg(b'D', body) => {
                let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
                rows.push(if len < 0 {
                    "NULL".into()
                } else {
                    text(&body[6..6 + len as usize])
                });
            }
            Backend::Msg(b'E', body) => error = Some(error_fields(&body)),
            Backend::Msg(b'Z', _) => return (rows, error),
            Backend::Msg(..) => {}
            Backend::End(end) => panic!("connection ended before ReadyForQuery: {end:?}"),
        }
    }
}

/// Parse of `name` with `sql`, no parameter types.
pub fn parse_message(name: &str, sql: &[u8]) -> Vec<u8> {
    let mut body = cstr(name);
    body.extend_from_slice(sql);
    body.push(0);
    body.extend_from_slice(&0i16.to_be_bytes());
    message(b'P', &body)
}

/// Bind of `portal` to `statement` with text parameters (`None` for NULL), text results.
pub fn bind_message(portal: &str, statement: &str, params: &[Option<&[u8]>]) -> Vec<u8> {
    let mut body = cstr(portal);
    body.extend(cstr(statement));
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        match p {
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                body.extend_from_slice(v);
            }
        }
    }
    body.extend_from_slice(&0i16.to_be_bytes());
    message(b'B', &body)
}

/// Execute of `portal`, all rows.
pub fn execute_message(portal: &str) -> Vec<u8> {
    let mut body = cstr(portal);
    body.extend_from_slice(&0i32.to_be_bytes());
    message(b'E', &body)
}

pub fn sync_message() -> Vec<u8> {
    message(b'S', b"")
}

pub fn flush_message() -> Vec<u8> {
    message(b'H', b"")
}

pub fn copy_data(data: &[u8]) -> Vec<u8> {
    message(b'd', data)
}

pub fn copy_done() -> Vec<u8> {
    message(b'c', b"")
}

/// A simple query with raw bytes (in whatever client encoding the session uses).
pub fn query_bytes(sql: &[u8]) -> Vec<u8> {
    let mut body = sql.to_vec();
    body.push(0);
    message(b'Q', &body)
}

/// Reads up to and including ReadyForQuery; panics if the connection ends first.
pub fn read_ready(s: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    match read_until_ready(s) {
        (msgs, None) => msgs,
        (msgs, Some(end)) => panic!("connection ended ({end:?}) before ReadyForQuery: {msgs:?}"),
    }
}

/// The first column of each DataRow among `msgs`, as raw bytes.
pub fn first_columns(msgs: &[(u8, Vec<u8>)]) -> Vec<Vec<u8>> {
    msgs.iter()
        .filter(|(t, _)| *t == b'D')
        .map(|(_, body)| {
            let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
            if len < 0 {
                b"NULL".to_vec()
            } else {
                body[6..6 + len as usize].to_vec()
            }
        })
        .collect()
}
