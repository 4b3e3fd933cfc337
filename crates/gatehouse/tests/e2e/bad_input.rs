//! Adversarial input against a real gateway in front of a real PostgreSQL: garbage, truncated
//! and oversized packets, bad lengths, startup and password abuse, unknown and malformed
//! messages after authentication, pipelining abuse and a flood of aborted handshakes.
//!
//! After every attack: the gateway process is still running and still serves `SELECT 1`, the
//! attacker received a PostgreSQL ErrorResponse (or a clean close), and the attempt is in the
//! audit log with the attacker's source address.

use crate::harness::*;
use crate::proto::*;
use serde_json::Value;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Assertions shared by the attacks.

/// The gateway is alive and serves a normal query.
fn assert_serves(gw: &mut Gateway) {
    assert!(gw.is_running(), "the gateway died:\n{}", gw.log());
    assert_eq!(gw.psql("main", "SELECT 1").trim(), "1");
}

/// The attacker got a FATAL ErrorResponse with `code` as the last message, then a close.
/// Returns the error message text.
fn assert_fatal(what: &str, msgs: &[(u8, Vec<u8>)], end: End, code: &str) -> String {
    let Some((b'E', body)) = msgs.last() else {
        panic!(
            "{what}: expected an ErrorResponse, got {:?} then {end:?}",
            msgs.iter().map(|(t, _)| char::from(*t)).collect::<String>()
        );
    };
    let fields = error_fields(body);
    assert_eq!(field(&fields, b'S'), "FATAL", "{what}: {fields:?}");
    assert_eq!(field(&fields, b'C'), code, "{what}: {fields:?}");
    assert!(
        matches!(end, End::Closed | End::Reset),
        "{what}: connection not closed after the FATAL error ({end:?})"
    );
    field(&fields, b'M')
}

/// The statement was refused with an ERROR (not FATAL) carrying `code`, then ReadyForQuery,
/// and the connection stays open. Returns the error message text.
fn assert_refused(what: &str, msgs: &[(u8, Vec<u8>)], end: End, code: &str) -> String {
    let tags: String = msgs.iter().map(|(t, _)| char::from(*t)).collect();
    assert!(
        tags.ends_with("EZ"),
        "{what}: expected ErrorResponse, ReadyForQuery; got {tags:?}"
    );
    let fields = error_fields(&msgs[msgs.len() - 2].1);
    assert_eq!(field(&fields, b'S'), "ERROR", "{what}: {fields:?}");
    assert_eq!(field(&fields, b'C'), code, "{what}: {fields:?}");
    assert_eq!(end, End::TimedOut, "{what}: the session stays open");
    field(&fields, b'M')
}

/// The refused statement from `source` is in the audit log: a `statement` record, decision
/// block, with `code`.
fn audited_refusal(gw: &Gateway, what: &str, source: &str, code: &str) -> Value {
    let event = gw.wait_for_event(&format!("{what}: refused statement from {source}"), |e| {
        e["kind"] == "statement" && e["who"]["source"] == source && e["outcome"]["code"] == code
    });
    assert_eq!(event["outcome"]["status"], "failure", "{what}: {event}");
    assert_eq!(
        event["what"]["detail"]["decision"], "block",
        "{what}: {event}"
    );
    event
}

/// The pre-session rejection of `source` is audited (protocol.error or auth.failure).
fn audited_rejection(gw: &Gateway, what: &str, source: &str) -> Value {
    let event = gw.wait_for_event(
        &format!("{what}: protocol.error/auth.failure from {source}"),
        |e| {
            matches!(e["kind"].as_str(), Some("protocol.error" | "auth.failure"))
                && e["who"]["source"] == source
        },
    );
    assert_eq!(event["outcome"]["status"], "failure", "{what}: {event}");
    assert_eq!(event["what"]["protocol"], "postgres", "{what}: {event}");
    event
}

/// The end of the session from `source` is audited with `reason_part` in its reason.
fn audited_session_end(gw: &Gateway, what: &str, source: &str, reason_part: &str) -> Value {
    let event = gw.wait_for_event(&format!("{what}: session.end from {source}"), |e| {
        e["kind"] == "session.end" && e["who"]["source"] == source
    });
    let reason = event["outcome"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(reason_part),
        "{what}: session.end reason {reason:?} lacks {reason_part:?}"
    );
    event
}

/// Connects, sends `bytes` (the gateway may close before taking them all), reads to the end.
fn attack(gw: &Gateway, bytes: &[u8]) -> (String, Vec<(u8, Vec<u8>)>, End) {
    send_and_read_to_end(connect(gw), bytes)
}

/// Same, on an authenticated session.
fn attack_session(gw: &Gateway, bytes: &[u8]) -> (String, Vec<(u8, Vec<u8>)>, End) {
    send_and_read_to_end(authenticated(gw), bytes)
}

/// Sends `bytes` on `s` and reads to the end: (the client's source address, messages, end).
fn send_and_read_to_end(mut s: TcpStream, bytes: &[u8]) -> (String, Vec<(u8, Vec<u8>)>, End) {
    let source = s.local_addr().unwrap().to_string();
    let _ = s.write_all(bytes);
    let (msgs, end) = read_until_close(&mut s);
    (source, msgs, end)
}

/// The gateway's peak resident and virtual memory (VmHWM, VmPeak) in KiB.
fn peaks(pid: u32) -> (u64, u64) {
    (proc_kib(pid, "VmHWM:"), proc_kib(pid, "VmPeak:"))
}

/// Since `before` (from `peaks`), the resident peak grew by less than 16 MiB and the virtual
/// one by less than a GiB: nothing was allocated for a claimed length.
fn assert_peaks_grew_little(what: &str, pid: u32, before: (u64, u64)) {
    let (peak_before, virt_before) = before;
    let (peak_after, virt_after) = peaks(pid);
    eprintln!(
        "{what}: VmHWM {peak_before} -> {peak_after} KiB, VmPeak {virt_before} -> {virt_after} KiB"
    );
    assert!(
        peak_after < peak_before + 16 * 1024,
        "resident peak grew to {peak_after} KiB"
    );
    assert!(
        virt_after < virt_before + 1024 * 1024,
        "virtual peak grew by a GiB or more: {virt_after} KiB"
    );
}

/// Writes `bytes` on a clone of `s` from a thread, so a stall shows as a timeout rather than a
/// hang: whether all were written within 30 s, and the writer.
fn write_behind(
    s: &TcpStream,
    bytes: Vec<u8>,
) -> (bool, std::thread::JoinHandle<std::io::Result<()>>) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let r = w.write_all(&bytes);
        let _ = done_tx.send(());
        r
    });
    let wrote_all = done_rx.recv_timeout(Duration::from_secs(30)).is_ok();
    (wrote_all, writer)
}

/// A connection `name` to `port` as the superuser without a password or TLS.
fn passwordless_connection(name: &str, port: u16) -> String {
    format!(
        "  {name}:\n    protocol: postgres\n    upstream:\n      host: 127.0.0.1\n      port: {port}\n      database: postgres\n      user: postgres\n      tls: {{ mode: disable }}\n    allow:\n      groups: [developers, gatehouse-admins]\n"
    )
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// A real TLS ClientHello, as a client doing direct TLS would send.
fn tls_client_hello() -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    assert_eq!(out[0], 0x16, "a TLS handshake record");
    out
}

// ---------------------------------------------------------------------------------------------
// Garbage before startup.

#[test]
fn garbage_instead_of_a_startup_packet_is_refused_and_audited() {
    let (_cluster, mut gw) = cluster_and_gateway();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "HTTP request line",
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8\r\n\r\n".to_vec(),
        ),
        (
            "64 KiB of random bytes",
            random_bytes(64 * 1024, 0x9e37_79b9_7f4a_7c15),
        ),
        ("TLS ClientHello without TLS configured", tls_client_hello()),
    ];
    for (what, bytes) in cases {
        let (source, msgs, end) = attack(&gw, &bytes);
        let text = assert_fatal(what, &msgs, end, "08P01");
        assert!(
            text.contains("startup packet length") || text.contains("startup request code"),
            "{what}: {text}"
        );
        let event = audited_rejection(&gw, what, &source);
        assert_eq!(event["kind"], "protocol.error", "{what}");
        assert_eq!(
            event["outcome"]["reason"],
            text.as_str(),
            "{what}: the audited reason is what the client was told"
        );
        assert_serves(&mut gw);
    }

    // A port scan: connect and close without a byte. A clean close, audited.
    let s = connect(&gw);
    let source = s.local_addr().unwrap().to_string();
    drop(s);
    let event = audited_rejection(&gw, "connect and close", &source);
    assert_eq!(event["outcome"]["reason"], "closed before startup");
    assert_serves(&mut gw);
}

// ---------------------------------------------------------------------------------------------
// Truncated and slow startup packets; the handshake timeout.

#[test]
fn truncated_startup_packets_and_the_handshake_timeout() {
    let (_cluster, mut gw) = cluster_and_gateway_with(|b| b.postgres("  handshake_timeout: 1s\n"));
    let full = startup_packet(
        V3,
        &[
            ("user", "tester"),
            ("database", "main"),
            ("application_name", "truncated"),
        ],
    );
    let mut declared_longer = full.clone();
    declared_longer[..4].copy_from_slice(&(full.len() as i32 + 100).to_be_bytes());

    // Declared length larger than sent, then the client closes: a clean close, audited.
    let mut s = connect(&gw);
    let source = s.local_addr().unwrap().to_string();
    s.write_all(&declared_longer).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let (msgs, end) = read_until_close(&mut s);
    assert!(
        msgs.is_empty() && end == End::Closed,
        "got {msgs:?} {end:?}"
    );
    let event = audited_rejection(&gw, "truncated startup then close", &source);
    assert_eq!(event["kind"], "protocol.error");
    assert_serves(&mut gw);

    // Held open past the handshake timeout: (1) mid-startup packet, (2) after a complete
    // startup without a password, (3) a slowloris sending one byte every 150 ms.
    for case in ["mid-startup", "no password", "slowloris"] {
        let mut s = connect(&gw);
        let source = s.local_addr().unwrap().to_string();
        let started = Instant::now();
        match case {
            "mid-startup" => s.write_all(&declared_longer).unwrap(),
            "no password" => {
                s.write_all(&full).unwrap();
                expect_auth_request(&mut s);
            }
            _ => {
                let writer = {
                    let mut w = s.try_clone().unwrap();
                    let bytes = full.clone();
                    std::thread::spawn(move || {
                        for b in bytes {
                            if w.write_all(&[b]).is_err() {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(150));
                        }
                    })
                };
                drop(writer);
            }
        }
        let (msgs, end) = read_until_close(&mut s);
        let took = started.elapsed();
        assert!(msgs.is_empty(), "{case}: {msgs:?}");
        assert!(
            matches!(end, End::Closed | End::Reset),
            "{case}: connection still open after {took:?} ({end:?})"
        );
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "{case}: closed after {took:?}"
        );
        let event = audited_rejection(&gw, case, &source);
        assert_eq!(event["kind"], "protocol.error");
        assert_eq!(event["outcome"]["reason"], "handshake timed out", "{case}");
        eprintln!("handshake timeout ({case}): closed after {took:?}");
        assert_serves(&mut gw);
    }
}

// ---------------------------------------------------------------------------------------------
// Length prefixes claiming 2 GiB.

#[test]
fn a_2_gib_startup_length_is_refused_without_allocating() {
    let (_cluster, mut gw) = cluster_and_gateway();
    assert_serves(&mut gw);
    let pid = gw.pid();
    let before = peaks(pid);
    let mut bytes = 0x7fff_ffffi32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&V3.to_be_bytes());
    bytes.extend(std::iter::repeat_n(b'a', 8 * MIB));
    let (source, msgs, end) = attack(&gw, &bytes);
    let text = assert_fatal("2 GiB startup length", &msgs, end, "08P01");
    assert!(text.contains("2147483647"), "{text}");
    audited_rejection(&gw, "2 GiB startup length", &source);
    assert_peaks_grew_little("2 GiB startup length", pid, before);
    assert_serves(&mut gw);
}

#[test]
fn a_2_gib_message_length_after_authentication_is_refused_without_allocating() {
    let (_cluster, mut gw) = cluster_and_gateway();
    assert_serves(&mut gw);
    let pid = gw.pid();
    let before = peaks(pid);
    let mut bytes = header(b'Q', 0x7fff_ffff);
    bytes.extend(std::iter::repeat_n(b'x', 8 * MIB));
    // Refused as soon as its head is in, recorded with its claimed size; the gateway then
    // skips what follows of it without keeping any.
    let (source, msgs, end) = attack_session(&gw, &bytes);
    let text = assert_refused("2 GiB Query", &msgs, end, "54000");
    assert!(
        text.contains("over the gateway's limit of 16777216 bytes"),
        "{text}"
    );
    let event = audited_refusal(&gw, "2 GiB Query", &source, "54000");
    assert_eq!(event["what"]["detail"]["message_bytes"], 0x7fff_ffff - 4);
    assert_peaks_grew_little("2 GiB Query length", pid, before);
    assert_serves(&mut gw);

    // CopyData outside COPY is ignored by the server; the gateway drops it as it streams in.
    let mut bytes = header(b'd', 0x7fff_ffff);
    bytes.extend(std::iter::repeat_n(b'x', 8 * MIB));
    let (_, msgs, end) = attack_session(&gw, &bytes);
    assert!(
        msgs.is_empty(),
        "2 GiB CopyData outside COPY: no answer ({msgs:?})"
    );
    assert_eq!(
        end,
        End::TimedOut,
        "2 GiB CopyData: the session is still open"
    );
    assert_peaks_grew_little("2 GiB CopyData", pid, before);
    assert_serves(&mut gw);
}

// ---------------------------------------------------------------------------------------------
// Negative and tiny lengths.

#[test]
fn negative_and_tiny_lengths_are_protocol_violations() {
    let (_cluster, mut gw) = cluster_and_gateway();
    for len in [0i32, 3, 7, -1, i32::MIN] {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&V3.to_be_bytes());
        bytes.extend_from_slice(b"user\0tester\0\0");
        let what = format!("startup length {len}");
        let (source, msgs, end) = attack(&gw, &bytes);
        let text = assert_fatal(&what, &msgs, end, "08P01");
        assert!(
            text.contains("invalid startup packet length"),
            "{what}: {text}"
        );
        audited_rejection(&gw, &what, &source);
    }
    // Length 8: a version and no parameters at all (not even the terminator).
    let (source, msgs, end) = attack(&gw, &[0, 0, 0, 8, 0, 3, 0, 0]);
    let text = assert_fatal("startup without parameters", &msgs, end, "08P01");
    assert!(text.contains("malformed startup"), "{text}");
    audited_rejection(&gw, "startup without parameters", &source);
    assert_serves(&mut gw);

    for (tag, len) in [
        (b'Q', 0i32),
        (b'Q', 3),
        (b'Q', -1),
        (b'P', 0),
        (b'B', -5),
        (b'S', 2),
        (b'X', 3),
        (b'd', -1),
        (b'd', 0),
    ] {
        let what = format!("{:?} with length {len}", char::from(tag));
        let mut bytes = header(tag, len);
        bytes.extend_from_slice(b"SELECT 1\0");
        let (source, msgs, end) = attack_session(&gw, &bytes);
        let text = assert_fatal(&what, &msgs, end, "08P01");
        assert!(
            text.contains(&format!("invalid message length {len}")),
            "{what}: {text}"
        );
        audited_session_end(&gw, &what, &source, "invalid message length");
    }
    // Length 4: a Query with an empty body (no NUL).
    let (source, msgs, end) = attack_session(&gw, &header(b'Q', 4));
    let text = assert_fatal("empty Query", &msgs, end, "08P01");
    assert!(text.contains("malformed Query"), "{text}");
    audited_session_end(&gw, "empty Query", &source, "malformed Query");
    assert_serves(&mut gw);
}

// ---------------------------------------------------------------------------------------------
// Startup parameters.

#[test]
fn startup_parameter_abuse() {
    let (_cluster, mut gw) = cluster_and_gateway();

    let (source, msgs, end) = attack(&gw, &startup_packet(V3, &[("database", "main")]));
    let text = assert_fatal("no user", &msgs, end, "28000");
    assert!(text.contains("no user name"), "{text}");
    audited_rejection(&gw, "no user", &source);

    for value in ["true", "database", "on"] {
        let what = format!("replication={value}");
        let (source, msgs, end) = attack(
            &gw,
            &startup_packet(
                V3,
                &[
                    ("user", "tester"),
                    ("database", "main"),
                    ("replication", value),
                ],
            ),
        );
        let text = assert_fatal(&what, &msgs, end, "0A000");
        assert!(text.contains("replication"), "{what}: {text}");
        audited_rejection(&gw, &what, &source);
    }

    // Protocol 2.0 (and 1.0, 4.0): an error, never a session.
    for (major, minor) in [(2, 0), (1, 0), (4, 0)] {
        let what = format!("protocol {major}.{minor}");
        let (source, msgs, end) = attack(&gw, &startup_packet((major << 16) | minor, &MAIN));
        let Some((b'E', body)) = msgs.last() else {
            panic!("{what}: no error: {msgs:?} {end:?}")
        };
        let fields = error_fields(body);
        assert!(
            matches!(field(&fields, b'C').as_str(), "08P01" | "0A000"),
            "{what}: {fields:?}"
        );
        assert!(matches!(end, End::Closed | End::Reset), "{what}");
        eprintln!("{what}: {} {}", field(&fields, b'C'), field(&fields, b'M'));
        audited_rejection(&gw, &what, &source);
    }

    // 1000 parameters (fits in 10000 bytes).
    let names: Vec<String> = (0..1000).map(|i| format!("p{i}")).collect();
    let mut params: Vec<(&str, &str)> = MAIN.to_vec();
    params.extend(names.iter().map(|n| (n.as_str(), "")));
    let packet = startup_packet(V3, &params);
    assert!(packet.len() <= 10_000, "{}", packet.len());
    let (source, msgs, end) = attack(&gw, &packet);
    let text = assert_fatal("1000 parameters", &msgs, end, "08P01");
    eprintln!("1000 parameters: {text}");
    audited_rejection(&gw, "1000 parameters", &source);

    // Non-UTF-8 parameter value.
    let mut packet = startup_packet(
        V3,
        &[
            ("user", "tester"),
            ("database", "main"),
            ("application_name", "ab"),
        ],
    );
    let at = packet.len() - 4;
    packet[at] = 0xff;
    let (source, msgs, end) = attack(&gw, &packet);
    assert_fatal("non-UTF-8 parameter", &msgs, end, "08P01");
    audited_rejection(&gw, "non-UTF-8 parameter", &source);

    // Exactly 10001 bytes: over the limit.
    let (source, msgs, end) = attack(&gw, &sized_startup(10_001));
    let text = assert_fatal("10001-byte startup", &msgs, end, "08P01");
    assert!(text.contains("10001"), "{text}");
    audited_rejection(&gw, "10001-byte startup", &source);

    // Exactly 10000 bytes is within the limit: the gateway asks for the password.
    let mut s = connect(&gw);
    s.write_all(&sized_startup(10_000)).unwrap();
    expect_auth_request(&mut s);
    drop(s);

    // A newer minor version and a `_pq_.` option are negotiated down, as PostgreSQL does.
    let mut s = connect(&gw);
    s.write_all(&startup_packet(
        (3 << 16) | 9,
        &[
            ("user", "tester"),
            ("database", "main"),
            ("_pq_.future", "1"),
        ],
    ))
    .unwrap();
    match read_message(&mut s) {
        Backend::Msg(b'v', body) => {
            assert_eq!(&body[..4], &0i32.to_be_bytes(), "newest minor version");
            assert_eq!(&body[4..8], &1i32.to_be_bytes(), "one unrecognised option");
        }
        other => panic!("expected NegotiateProtocolVersion, got {other:?}"),
    }
    expect_auth_request(&mut s);
    drop(s);
    assert_serves(&mut gw);
}

/// A startup packet of exactly `total` bytes (user `tester`, database `main`, the rest in
/// `application_name`).
fn sized_startup(total: usize) -> Vec<u8> {
    let base = startup_packet(
        V3,
        &[
            ("user", "tester"),
            ("database", "main"),
            ("application_name", ""),
        ],
    )
    .len();
    let filler = "a".repeat(total - base);
    let p = startup_packet(
        V3,
        &[
            ("user", "tester"),
            ("database", "main"),
            ("application_name", &filler),
        ],
    );
    assert_eq!(p.len(), total);
    p
}

/// PostgreSQL accepts startup packets up to 10000 bytes. The gateway substitutes the target's
/// user and database before forwarding, so a maximal client packet can outgrow that limit:
/// the client gets a clear protocol error (not a misleading "could not connect"), the session
/// ends once, as a failure, and a packet with room to spare works.
#[test]
fn a_maximal_startup_packet_gets_a_clear_error_and_a_smaller_one_works() {
    let (_cluster, gw) = cluster_and_gateway();
    let mut s = connect(&gw);
    s.write_all(&sized_startup(10_000)).unwrap();
    expect_auth_request(&mut s);
    s.write_all(&password_message(&gw.admin_key)).unwrap();
    let (msgs, _end) = read_until_ready(&mut s);
    let errors: Vec<_> = msgs
        .iter()
        .filter(|(t, _)| *t == b'E')
        .map(|(_, b)| error_fields(b))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(field(&errors[0], b'C'), "08P01", "{errors:?}");
    assert!(field(&errors[0], b'M').contains("too large"), "{errors:?}");
    let start = gw.wait_for_event("session.start", |e| e["kind"] == "session.start");
    gw.assert_session_ended_once_as_failure(&start["session"], Duration::ZERO);

    let mut s = connect(&gw);
    s.write_all(&sized_startup(9_000)).unwrap();
    expect_auth_request(&mut s);
    s.write_all(&password_message(&gw.admin_key)).unwrap();
    let (msgs, end) = read_until_ready(&mut s);
    assert!(
        matches!(msgs.last(), Some((b'Z', _))),
        "session did not start: {end:?}"
    );
    s.write_all(&query_message("SELECT 7")).unwrap();
    assert_eq!(read_query_result(&mut s), (vec!["7".to_owned()], None));
}

/// When the upstream cannot be reached, the session's end is audited once, as a failure.
#[test]

fn an_upstream_connection_failure_ends_the_session_once() {
    let dead_port = free_port();
    let (_cluster, gw) =
        cluster_and_gateway_with(|b| b.raw_connection(&passwordless_connection("dead", dead_port)));
    let out = gw.psql_args("dead", &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("could not connect to the target"),
        "{}",
        text(&out.stderr)
    );
    let start = gw.wait_for_event("session.start", |e| {
        e["kind"] == "session.start" && e["what"]["connection"] == "dead"
    });
    gw.assert_session_ended_once_as_failure(&start["session"], Duration::from_millis(500));
}

/// An upstream that accepts TCP connections and never says a word (held for 60 s).
fn silent_upstream() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Ok((s, _)) = listener.accept() {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    port
}

/// An authenticated client whose upstream never answers: the handshake timeout ends it, and
/// the session that was audited as started is audited as ended.
#[test]

fn a_silent_upstream_ends_the_audited_session() {
    let port = silent_upstream();
    let (_cluster, gw) = cluster_and_gateway_with(|b| {
        b.raw_connection(&passwordless_connection("silent", port))
            .postgres("  handshake_timeout: 1s\n")
    });
    let mut s = connect(&gw);
    s.write_all(&startup_packet(
        V3,
        &[("user", "tester"), ("database", "silent")],
    ))
    .unwrap();
    expect_auth_request(&mut s);
    s.write_all(&password_message(&gw.admin_key)).unwrap();
    let (msgs, end) = read_until_close(&mut s);
    let start = gw.wait_for_event("session.start", |e| {
        e["kind"] == "session.start" && e["what"]["connection"] == "silent"
    });
    let session = start["session"].clone();
    std::thread::sleep(Duration::from_secs(2));
    let ends = gw.session_ends(&session);
    let timeouts = gw.events_of_kind("protocol.error");
    eprintln!("silent upstream: client got {:?} then {end:?}; session.end records {}; protocol.error records {timeouts:?}", msgs.iter().map(|(t, b)| (char::from(*t), error_fields(b))).collect::<Vec<_>>(), ends.len());
    assert_eq!(
        ends.len(),
        1,
        "session {session} started but its end is not audited"
    );
    assert_eq!(ends[0]["outcome"]["status"], "failure");
    let Some((b'E', body)) = msgs.last() else {
        panic!("the authenticated client got no error: {end:?}")
    };
    assert_eq!(field(&error_fields(body), b'S'), "FATAL");
}

// ---------------------------------------------------------------------------------------------
// The password message.

#[test]
fn password_message_abuse() {
    let (_cluster, mut gw) = cluster_and_gateway();
    let startup = startup_packet(V3, &[("user", "mallory"), ("database", "main")]);
    let after_startup = |gw: &Gateway, what: &str, bytes: &[u8]| {
        let mut s = connect(gw);
        s.write_all(&startup).unwrap();
        expect_auth_request(&mut s);
        let (source, msgs, end) = send_and_read_to_end(s, bytes);
        eprintln!(
            "{what}: {:?} then {end:?}",
            msgs.last().map(|(_, b)| error_fields(b))
        );
        (source, msgs, end)
    };

    let mut oversized = header(b'p', 64 * 1024 + 100);
    oversized.extend(std::iter::repeat_n(b'k', 64 * 1024 + 96));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a Query instead of a password",
            query_message("SELECT 1"),
            "expected a password message",
        ),
        (
            "a zero byte instead of a password",
            header(0, 9),
            "expected a password message",
        ),
        (
            "oversized password message",
            oversized,
            "expected a password message",
        ),
        (
            "password without NUL",
            message(b'p', b"no-terminator"),
            "malformed password",
        ),
        (
            "empty password message",
            header(b'p', 4),
            "expected a password message",
        ),
        (
            "password length -1",
            header(b'p', -1),
            "expected a password message",
        ),
        (
            "non-UTF-8 password",
            message(b'p', b"\xff\xfe\0"),
            "malformed password",
        ),
    ];
    for (what, bytes, expected) in cases {
        let (source, msgs, end) = after_startup(&gw, what, &bytes);
        let text = assert_fatal(what, &msgs, end, "08P01");
        assert!(text.contains(expected), "{what}: {text}");
        let event = audited_rejection(&gw, what, &source);
        assert_eq!(event["kind"], "protocol.error", "{what}");
        assert_serves(&mut gw);
    }

    // Well-formed but wrong credentials, including one of the largest accepted size.
    for (what, credential) in [
        ("wrong key", "gh_not_a_real_key".to_owned()),
        ("64 KiB credential", "k".repeat(64 * 1024 - 5)),
    ] {
        let (source, msgs, end) = after_startup(&gw, what, &password_message(&credential));
        let text = assert_fatal(what, &msgs, end, "28P01");
        assert_eq!(text, "authentication failed", "{what}");
        let event = audited_rejection(&gw, what, &source);
        assert_eq!(event["kind"], "auth.failure", "{what}");
        assert_eq!(event["who"]["claimed_user"], "mallory", "{what}");
        let stored = std::fs::read_to_string(gw.audit_path()).unwrap();
        assert!(
            !stored.contains(&credential),
            "{what}: the presented credential is in the audit log"
        );
    }
    assert_serves(&mut gw);
}

// ---------------------------------------------------------------------------------------------
// After authentication: unknown and malformed messages.

#[test]
fn unknown_and_malformed_messages_after_authentication() {
    let (_cluster, mut gw) = cluster_and_gateway();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "'Z' from the client",
            message(b'Z', b"I"),
            "unexpected message type 'Z'",
        ),
        (
            "type byte 0x00",
            message(0, b"hello"),
            "unexpected message type",
        ),
        (
            "type byte 0xff",
            message(0xff, b""),
            "unexpected message type",
        ),
        (
            "a second password message",
            password_message("again"),
            "unexpected message type 'p'",
        ),
        (
            "Query without NUL",
            message(b'Q', b"SELECT 1"),
            "malformed Query",
        ),
        (
            "Parse without any NUL",
            message(b'P', b"stmt"),
            "malformed Parse",
        ),
        (
            "Parse with the query's NUL missing",
            message(b'P', b"stmt\0SELECT 1"),
            "malformed Parse",
        ),
        (
            "Bind without NUL",
            message(b'B', b"portal"),
            "malformed Bind",
        ),
        (
            "Bind with the statement's NUL missing",
            message(b'B', b"\0stmt"),
            "malformed Bind",
        ),
        (
            "Execute without NUL",
            message(b'E', b"portal"),
            "malformed Execute",
        ),
        (
            "Close without a kind",
            message(b'C', b""),
            "malformed Close",
        ),
    ];
    for (what, bytes, expected) in cases {
        let (source, msgs, end) = attack_session(&gw, &bytes);
        let text = assert_fatal(what, &msgs, end, "08P01");
        assert!(text.contains(expected), "{what}: {text}");
        audited_session_end(&gw, what, &source, expected);
        assert_serves(&mut gw);
    }
    // Text that is not valid in the session's encoding is refused as PostgreSQL refuses it
    // (22021), recorded, and never forwarded; the session goes on.
    let (source, msgs, end) = attack_session(&gw, &message(b'Q', b"SELECT '\xff'\0"));
    let text = assert_refused("Query with invalid UTF-8", &msgs, end, "22021");
    assert!(
        text.contains("invalid byte sequence for encoding \"UTF8\""),
        "{text}"
    );
    audited_refusal(&gw, "Query with invalid UTF-8", &source, "22021");
    assert_serves(&mut gw);

    // Garbage after a good statement: the good one is audited, the session ends cleanly.
    let mut s = authenticated(&gw);
    let source = s.local_addr().unwrap().to_string();
    s.write_all(&query_message("SELECT 'before the garbage'"))
        .unwrap();
    assert_eq!(
        read_query_result(&mut s).0,
        vec!["before the garbage".to_owned()]
    );
    s.write_all(&random_bytes(4096, 7)).unwrap();
    let (_, end) = read_until_close(&mut s);
    assert!(matches!(end, End::Closed | End::Reset), "{end:?}");
    gw.wait_for_event("statement before garbage", |e| {
        e["kind"] == "statement" && e["who"]["source"] == source.as_str()
    });
    audited_session_end(
        &gw,
        "garbage after a statement",
        &source,
        "client protocol error",
    );
    assert_serves(&mut gw);
}

/// Mid-session protocol violations should be audited as `protocol.error` events (like those
/// before authentication), not only as the reason of a `session.end` whose status is success.
#[test]

fn mid_session_protocol_violations_are_audited_as_protocol_errors() {
    let (_cluster, gw) = cluster_and_gateway();
    let (source, msgs, end) = attack_session(&gw, &message(b'Z', b"I"));
    assert_fatal("'Z' from the client", &msgs, end, "08P01");
    let event = gw.wait_for_event("protocol.error after auth", |e| {
        e["kind"] == "protocol.error" && e["who"]["source"] == source.as_str()
    });
    let end_event = gw.wait_for_event("session.end", |e| {
        e["kind"] == "session.end" && e["who"]["source"] == source.as_str()
    });
    assert_eq!(event["session"], end_event["session"]);
    assert_eq!(
        end_event["outcome"]["status"], "failure",
        "a session killed by a protocol violation did not end successfully: {end_event}"
    );
}

// ---------------------------------------------------------------------------------------------
// Query size limits.

#[test]
fn query_text_size_limits() {
    let (_cluster, mut gw) = cluster_and_gateway();
    let limit = 16 * MIB;
    let sql_of_body = |body_len: usize| {
        // body = text + NUL
        let filler = body_len - 1 - "SELECT length('')".len();
        format!("SELECT length('{}')", "x".repeat(filler))
    };

    // One byte over the 16 MiB limit: refused with an error, recorded, the session goes on.
    let started = Instant::now();
    let (source, msgs, end) = attack_session(&gw, &query_message(&sql_of_body(limit + 1)));
    let refusal = assert_refused("16 MiB + 1 query", &msgs, end, "54000");
    assert!(
        refusal.contains(&format!(
            "message of {} bytes is over the gateway's limit of {limit} bytes (postgres.max_message)",
            limit + 1
        )),
        "{refusal}"
    );
    let event = audited_refusal(&gw, "16 MiB + 1 query", &source, "54000");
    assert!(event["what"]["statement"]
        .as_str()
        .unwrap()
        .starts_with("SELECT length('xxx"));
    eprintln!("16 MiB + 1 query refused in {:?}", started.elapsed());
    assert_serves(&mut gw);

    // Exactly at the limit: relayed and answered.
    let mut s = authenticated(&gw);
    let started = Instant::now();
    s.write_all(&query_message(&sql_of_body(limit))).unwrap();
    let (rows, error) = read_query_result(&mut s);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        rows,
        vec![(limit - 1 - "SELECT length('')".len()).to_string()]
    );
    eprintln!("16 MiB query answered in {:?}", started.elapsed());
    drop(s);

    // 1 MiB through psql: works; the audit record keeps the first 64 KiB and says so.
    let sql = format!("SELECT length('{}')", "x".repeat(MIB));
    let file = gw.dir.path().join("big.sql");
    std::fs::write(&file, &sql).unwrap();
    let out = gw.psql_args("main", &["-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), MIB.to_string());
    let events = gw.audit_events_until(Duration::from_secs(10), |events| {
        joined_statements(events).iter().any(|e| {
            e["what"]["detail"]["statement_bytes"] == sql.len() && e["outcome"]["rows"] == 1
        })
    });
    let event = joined_statements(&events)
        .into_iter()
        .find(|e| e["what"]["detail"]["statement_bytes"] == sql.len())
        .expect("1 MiB statement recorded");
    assert_eq!(event["what"]["detail"]["statement_truncated"], true);
    assert!(sql.ends_with(event["what"]["detail"]["statement_tail"].as_str().unwrap()));
    let audited = event["what"]["statement"].as_str().unwrap();
    assert!(
        sql.starts_with(audited) && audited.len() <= 32 * 1024,
        "audited {} bytes",
        audited.len()
    );
    assert_serves(&mut gw);
}

// ---------------------------------------------------------------------------------------------
// Pipelining abuse.

#[test]
fn fifty_thousand_pipelined_syncs() {
    const SYNCS: usize = 50_000;
    let (_cluster, mut gw) = cluster_and_gateway();
    let pid = gw.pid();
    let baseline = proc_kib(pid, "VmRSS:");
    let mut s = authenticated(&gw);

    // Write every Sync before reading anything (a writer thread, so a stall shows as a timeout
    // rather than a hang).
    let bytes: Vec<u8> = std::iter::repeat_n(message(b'S', b""), SYNCS)
        .flatten()
        .collect();
    let started = Instant::now();
    let (wrote_all_first, writer) = write_behind(&s, bytes);
    eprintln!(
        "pipelined syncs: wrote {SYNCS} Syncs without reading: {wrote_all_first} ({:?})",
        started.elapsed()
    );
    let mut ready = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while ready < SYNCS {
        assert!(
            Instant::now() < deadline,
            "only {ready} ReadyForQuery after 120 s"
        );
        match read_message(&mut s) {
            Backend::Msg(b'Z', body) => {
                assert_eq!(body, b"I");
                ready += 1;
            }
            Backend::Msg(tag, body) => {
                panic!("unexpected {:?} {:?}", char::from(tag), error_fields(&body))
            }
            Backend::End(end) => panic!(
                "session ended after {ready} ReadyForQuery: {end:?}\n{}",
                gw.log()
            ),
        }
    }
    writer.join().unwrap().expect("writing the Syncs");
    let peak = proc_kib(pid, "VmHWM:");
    eprintln!("pipelined syncs: {ready} ReadyForQuery in {:?}; gateway VmRSS baseline {baseline} KiB, VmHWM {peak} KiB", started.elapsed());
    assert!(
        wrote_all_first,
        "the gateway stopped reading before 50,000 Syncs (250 kB) were in"
    );
    assert!(peak < 64 * 1024, "gateway peak RSS {peak} KiB");

    // The session still works.
    s.write_all(&query_message("SELECT 'still here'")).unwrap();
    assert_eq!(
        read_query_result(&mut s),
        (vec!["still here".to_owned()], None)
    );
    s.write_all(&message(b'X', b"")).unwrap();
    let (_, end) = read_until_close(&mut s);
    assert_eq!(end, End::Closed);
    assert_serves(&mut gw);
}

#[test]
fn twenty_thousand_pipelined_queries_are_each_answered_and_audited() {
    const QUERIES: usize = 20_000;
    let (_cluster, mut gw) = cluster_and_gateway();
    let pid = gw.pid();
    let baseline = proc_kib(pid, "VmRSS:");
    let mut s = authenticated(&gw);
    let source = s.local_addr().unwrap().to_string();
    let bytes: Vec<u8> = (0..QUERIES)
        .flat_map(|i| query_message(&format!("SELECT {i}")))
        .collect();
    let started = Instant::now();
    let (wrote_all_first, writer) = write_behind(&s, bytes);
    let wrote_after = started.elapsed();
    for i in 0..QUERIES {
        let (rows, error) = read_query_result(&mut s);
        assert!(error.is_none(), "query {i}: {error:?}");
        assert_eq!(rows, vec![i.to_string()]);
    }
    writer.join().unwrap().expect("writing the queries");
    let took = started.elapsed();
    s.write_all(&message(b'X', b"")).unwrap();
    let _ = read_until_close(&mut s);
    let peak = proc_kib(pid, "VmHWM:");
    let deadline = Instant::now() + Duration::from_secs(30);
    let audited = loop {
        let n = gw
            .audit_events()
            .iter()
            .filter(|e| e["kind"] == "statement" && e["who"]["source"] == source.as_str())
            .count();
        if n >= QUERIES || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "pipelined queries: wrote {QUERIES} before reading: {wrote_all_first} ({wrote_after:?}); all answered in {took:?}; \
         {audited} statement records; gateway VmRSS baseline {baseline} KiB, VmHWM {peak} KiB"
    );
    assert_eq!(audited, QUERIES);
    assert!(peak < 64 * 1024, "gateway peak RSS {peak} KiB");
    assert_serves(&mut gw);
}

// ---------------------------------------------------------------------------------------------
// A flood of aborted handshakes.

#[test]
fn ten_thousand_aborted_handshakes() {
    const CONNECTIONS: usize = 10_000;
    const CONCURRENCY: usize = 200;
    // All from one address: its share of handshake slots is raised to the flood's
    // concurrency here (the per-source bound has its own test).
    let (_cluster, mut gw) =
        cluster_and_gateway_with(|b| b.postgres("  max_handshakes_per_source: 256\n"));
    assert_serves(&mut gw);
    let pid = gw.pid();
    std::thread::sleep(Duration::from_secs(1));
    let baseline = proc_kib(pid, "VmRSS:");
    let hwm_before = proc_kib(pid, "VmHWM:");
    let events_before = gw.audit_events().len();

    let port = gw.pg_port;
    let partial = {
        let mut p = startup_packet(V3, &MAIN);
        p.truncate(12);
        p
    };
    let full = startup_packet(V3, &MAIN);

    // Sample the gateway's RSS while the flood runs.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut max = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                max = max.max(proc_kib(pid, "VmRSS:"));
                std::thread::sleep(Duration::from_millis(50));
            }
            max
        })
    };

    let started = Instant::now();
    let (ok, failures) = runtime().block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        fn tally(result: std::io::Result<()>, ok: &mut usize, failures: &mut Vec<String>) {
            match result {
                Ok(()) => *ok += 1,
                Err(e) => failures.push(e.to_string()),
            }
        }
        let (mut ok, mut failures) = (0usize, Vec::new());
        let limit = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        let partial = Arc::new(partial);
        let full = Arc::new(full);
        for i in 0..CONNECTIONS {
            let permit = limit.clone().acquire_owned().await.unwrap();
            let (partial, full) = (partial.clone(), full.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let attempt = async {
                    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                    if i % 2 == 0 {
                        s.write_all(&partial).await?;
                    } else {
                        s.write_all(&full).await?;
                        // Wait for the password request, then vanish.
                        let mut r = [0u8; 9];
                        s.read_exact(&mut r).await?;
                        if r[0] != b'R' {
                            return Err(std::io::Error::other("no authentication request"));
                        }
                    }
                    Ok::<_, std::io::Error>(())
                };
                tokio::time::timeout(Duration::from_secs(20), attempt)
                    .await
                    .map_err(|_| std::io::Error::other("timed out"))
                    .and_then(|r| r)
            });
            while let Some(done) = tasks.try_join_next() {
                tally(done.unwrap(), &mut ok, &mut failures);
            }
        }
        while let Some(done) = tasks.join_next().await {
            tally(done.unwrap(), &mut ok, &mut failures);
        }
        (ok, failures)
    });
    let flood_time = started.elapsed();
    assert_eq!(ok + failures.len(), CONNECTIONS);
    assert!(
        failures.len() < CONNECTIONS / 100,
        "{} attempts failed on the client side, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    assert!(
        flood_time < Duration::from_secs(180),
        "the flood took {flood_time:?}"
    );

    // The gateway still serves; memory settles back near the baseline.
    assert_serves(&mut gw);
    let peak_sampled = {
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        sampler.join().unwrap()
    };
    let hwm = proc_kib(pid, "VmHWM:");
    let settle_deadline = Instant::now() + Duration::from_secs(15);
    let mut after = proc_kib(pid, "VmRSS:");
    while after > baseline + 16 * 1024 && Instant::now() < settle_deadline {
        std::thread::sleep(Duration::from_millis(500));
        after = proc_kib(pid, "VmRSS:");
    }

    let failures = failures.len();
    eprintln!(
        "aborted handshakes: {CONNECTIONS} in {flood_time:?} ({CONCURRENCY} at a time); \
         gateway VmRSS baseline {baseline} KiB, sampled peak {peak_sampled} KiB, VmHWM {hwm_before} -> {hwm} KiB, after {after} KiB; \
         client-side failures {failures}"
    );
    assert!(
        after <= baseline + 16 * 1024,
        "RSS after the flood {after} KiB vs baseline {baseline} KiB"
    );
    assert_serves(&mut gw);

    // Every attempt is accounted for in the log, but one source cannot make the gateway write
    // a record per attempt: a few are recorded one by one, the rest counted in summaries
    // (written when their window closes, at the latest at stop).
    gw.stop();
    let events = gw.audit_events();
    let new = &events[events_before..];
    let individual = new.iter().filter(|e| e["kind"] == "protocol.error").count();
    let summaries: Vec<&Value> = new
        .iter()
        .filter(|e| e["kind"] == "auth.failure.summary")
        .collect();
    let counted: u64 = summaries
        .iter()
        .map(|e| e["what"]["detail"]["counted"].as_u64().unwrap_or(0))
        .sum();
    eprintln!(
        "records: {individual} individual, {counted} counted in {} summaries",
        summaries.len()
    );
    assert!(
        individual <= 20,
        "{individual} individual records from one source"
    );
    assert_eq!(
        individual as u64 + counted,
        CONNECTIONS as u64,
        "every aborted handshake is recorded or counted, none lost or doubled"
    );
    assert!(summaries.iter().all(|e| e["who"]["source"] == "127.0.0.1"));
    assert!(gw.assert_audit_verifies().contains("intact"));
}
