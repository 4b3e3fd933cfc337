//! In-process relay tests: the relay between a raw-protocol client and a scripted upstream
//! over in-memory sockets, with the audit records in memory. The scripted upstream is a small
//! stand-in for PostgreSQL's message handling (named statements, skip-to-Sync after an
//! error, COPY FROM STDIN that ignores Sync and Flush); the real-server suite in
//! `crates/gatehouse/tests/e2e` checks the same behaviours against PostgreSQL itself.

use super::{run, Initial, RelayLimits};
use crate::codec;
use crate::encoding::ClientEncoding;
use bytes::{BufMut, BytesMut};
use gatehouse_core::audit::{Event, EventKind, Status};
use gatehouse_core::{
    Access, AuthError, AuthMethod, Authenticator, ConnectRequest, Connection, Connections,
    EndCause, Gate, GateParts, Identity, MemorySink, Metrics, PostgresTarget, Protocol, Session,
    SessionIndex, SessionInfo, Target, UpstreamAuth, UpstreamTls, UpstreamTlsMode,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

struct StaticAuth;

#[async_trait::async_trait]
impl Authenticator for StaticAuth {
    async fn authenticate(&self, _: &str) -> Result<Identity, AuthError> {
        Ok(Identity {
            subject: "key:tester".into(),
            issuer: None,
            actors: vec![],
            groups: vec![],
            method: AuthMethod::ApiKey,
            expires_at: None,
            claims: Default::default(),
        })
    }
}

struct NoIndex;

#[async_trait::async_trait]
impl SessionIndex for NoIndex {
    async fn started(&self, _: &SessionInfo) {}
    async fn ended(&self, _: &str, _: u64, _: &str) {}
}

async fn open_session(sink: &MemorySink) -> Session {
    let connection = Connection {
        name: "main".into(),
        access: Access {
            any_authenticated: true,
            grants: None,
            ..Access::default()
        },
        target: Target::Postgres(PostgresTarget {
            host: "127.0.0.1".into(),
            port: 1,
            database: "db".into(),
            user: "u".into(),
            password: None,
            tls: UpstreamTls {
                mode: UpstreamTlsMode::Disable,
                ca_file: None,
                server_name: None,
            },
            auth_methods: vec![UpstreamAuth::ScramSha256],
            allow_fastpath: false,
        }),
    };
    let gate = Gate::new(GateParts::new(
        Arc::new(StaticAuth),
        Connections::new([connection]),
        Arc::new(sink.clone()),
        Arc::new(Metrics::new()),
        Arc::new(NoIndex),
    ));
    gate.open(ConnectRequest {
        protocol: Protocol::Postgres,
        connection: "main",
        credential: "k",
        claimed_user: None,
        source: "127.0.0.1:5000".parse().unwrap(),
        detail: None,
    })
    .await
    .unwrap()
}

/// What the scripted server answers to one statement's text.
#[derive(Clone)]
enum Answer {
    Rows(u64),
    Command(&'static str),
    Error(&'static str, &'static str),
    /// COPY FROM STDIN: read data until CopyDone, answer `COPY <rows>`.
    CopyIn,
    /// Wait, then answer.
    After(Duration, Box<Answer>),
    /// Report a setting after answering (as PostgreSQL does at the next ReadyForQuery).
    Sets(&'static str, &'static str, Box<Answer>),
    /// Answer, then send a ReadyForQuery nobody asked for.
    Twice(Box<Answer>),
}

type Script = Arc<dyn Fn(&str) -> Answer + Send + Sync>;
/// Every message the scripted server received, in order (tag, body).
type Received = Arc<Mutex<Vec<(u8, Vec<u8>)>>>;

/// A small stand-in for PostgreSQL's message loop.
struct Scripted {
    script: Script,
    statements: HashMap<Vec<u8>, String>,
    portals: HashMap<Vec<u8>, String>,
    skipping: bool,
    pending_settings: Vec<(&'static str, &'static str)>,
    /// Every message the server received, in order (tag, body).
    received: Received,
}

fn msg(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}

fn cstr(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(s.as_bytes());
    b.push(0);
}

async fn read_msg(s: &mut DuplexStream) -> Option<(u8, Vec<u8>)> {
    let tag = s.read_u8().await.ok()?;
    let len = s.read_i32().await.ok()? as usize;
    let mut body = vec![0; len - 4];
    s.read_exact(&mut body).await.ok()?;
    Some((tag, body))
}

impl Scripted {
    fn new(script: Script) -> (Self, Received) {
        let received = Arc::new(Mutex::new(Vec::new()));
        (
            Scripted {
                script,
                statements: HashMap::new(),
                portals: HashMap::new(),
                skipping: false,
                pending_settings: Vec::new(),
                received: received.clone(),
            },
            received,
        )
    }

    async fn serve(mut self, mut s: DuplexStream) {
        while let Some((tag, body)) = read_msg(&mut s).await {
            self.received.lock().unwrap().push((tag, body.clone()));
            let mut out = BytesMut::new();
            if self.skipping && tag != b'S' {
                continue;
            }
            match tag {
                b'Q' => {
                    let text = String::from_utf8_lossy(&body[..body.len() - 1]).into_owned();
                    let answer = raised(&text).unwrap_or_else(|| (self.script)(&text));
                    if !self.answer(&mut s, &mut out, answer).await {
                        return;
                    }
                    // A simple query's error does not skip (only the extended protocol does).
                    self.skipping = false;
                    self.ready(&mut out, b'I');
                }
                b'P' => {
                    let (name, query) = codec::parse_message(&body).unwrap();
                    if !name.is_empty() && self.statements.contains_key(name) {
                        self.error(&mut out, "42P05", "prepared statement already exists");
                    } else {
                        self.statements
                            .insert(name.to_vec(), String::from_utf8_lossy(query).into_owned());
                        msg(&mut out, b'1', b"");
                    }
                }
                b'B' => {
                    let (portal, statement) = codec::bind_names(&body).unwrap();
                    match self.statements.get(statement) {
                        Some(text) => {
                            self.portals.insert(portal.to_vec(), text.clone());
                            msg(&mut out, b'2', b"");
                        }
                        None => self.error(&mut out, "26000", "prepared statement does not exist"),
                    }
                }
                b'E' => {
                    let portal = codec::execute_portal(&body).unwrap();
                    let text = self.portals.get(portal).cloned().unwrap_or_default();
                    let answer = raised(&text).unwrap_or_else(|| (self.script)(&text));
                    if !self.answer(&mut s, &mut out, answer).await {
                        return;
                    }
                }
                b'D' => msg(&mut out, b'n', b""),
                b'C' => {
                    let (kind, name) = codec::target(&body, "Close").unwrap();
                    if kind == b'S' {
                        self.statements.remove(name);
                    } else {
                        self.portals.remove(name);
                    }
                    msg(&mut out, b'3', b"");
                }
                b'S' => {
                    self.skipping = false;
                    self.ready(&mut out, b'I');
                }
                b'H' | b'd' | b'c' | b'f' => {}
                b'X' => return,
                _ => {}
            }
            if s.write_all(&out).await.is_err() {
                return;
            }
        }
    }

    fn ready(&mut self, out: &mut BytesMut, status: u8) {
        for (name, value) in self.pending_settings.drain(..) {
            let mut b = Vec::new();
            cstr(&mut b, name);
            cstr(&mut b, value);
            msg(out, b'S', &b);
        }
        msg(out, b'Z', &[status]);
    }

    fn error(&mut self, out: &mut BytesMut, code: &str, text: &str) {
        let mut b = Vec::new();
        b.push(b'S');
        cstr(&mut b, "ERROR");
        b.push(b'C');
        cstr(&mut b, code);
        b.push(b'M');
        cstr(&mut b, text);
        b.push(0);
        msg(out, b'E', &b);
        self.skipping = true;
    }

    /// Writes one statement's answer; false when the client went away.
    async fn answer(&mut self, s: &mut DuplexStream, out: &mut BytesMut, answer: Answer) -> bool {
        match answer {
            Answer::Rows(n) => {
                for i in 0..n {
                    let mut b = Vec::new();
                    b.extend_from_slice(&1i16.to_be_bytes());
                    let v = i.to_string();
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v.as_bytes());
                    msg(out, b'D', &b);
                }
                msg(out, b'C', format!("SELECT {n}\0").as_bytes());
            }
            Answer::Command(tag) => msg(out, b'C', format!("{tag}\0").as_bytes()),
            Answer::Error(code, text) => self.error(out, code, text),
            Answer::Twice(then) => {
                let ok = Box::pin(self.answer(s, out, *then)).await;
                // An answer nobody asked for.
                msg(out, b'Z', b"I");
                return ok;
            }
            Answer::After(delay, then) => {
                if s.write_all(out).await.is_err() {
                    return false;
                }
                out.clear();
                tokio::time::sleep(delay).await;
                return Box::pin(self.answer(s, out, *then)).await;
            }
            Answer::Sets(name, value, then) => {
                self.pending_settings.push((name, value));
                return Box::pin(self.answer(s, out, *then)).await;
            }
            Answer::CopyIn => {
                msg(out, b'G', &[0, 0, 0]);
                if s.write_all(out).await.is_err() {
                    return false;
                }
                out.clear();
                let mut rows = 0;
                loop {
                    let Some((tag, body)) = read_msg(s).await else {
                        return false;
                    };
                    self.received.lock().unwrap().push((tag, body));
                    match tag {
                        b'd' => rows += 1,
                        b'c' => break,
                        // Ignored during COPY, as PostgreSQL does.
                        b'S' | b'H' => {}
                        _ => {
                            self.error(out, "08P01", "unexpected message during COPY");
                            return true;
                        }
                    }
                }
                msg(out, b'C', format!("COPY {rows}\0").as_bytes());
            }
        }
        true
    }
}

/// The error a gateway-made `DO ... RAISE EXCEPTION USING ERRCODE = 'x', MESSAGE = 'y'` raises.
fn raised(text: &str) -> Option<Answer> {
    if !text.starts_with("DO $gatehouse") {
        return None;
    }
    let code = text.split("ERRCODE = '").nth(1)?.split('\'').next()?;
    let message = text.split("MESSAGE = '").nth(1)?.split("'; END").next()?;
    Some(Answer::Error(
        Box::leak(code.to_owned().into_boxed_str()),
        Box::leak(message.replace("''", "'").into_boxed_str()),
    ))
}

/// A raw-protocol client.
struct Client {
    s: DuplexStream,
}

impl Client {
    async fn send(&mut self, bytes: BytesMut) {
        self.s.write_all(&bytes).await.unwrap();
    }

    /// Reads messages until a ReadyForQuery; returns them (tag, body).
    async fn until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut got = Vec::new();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), read_msg(&mut self.s))
                .await
                .expect("no ReadyForQuery within 10 s")
                .expect("connection closed before ReadyForQuery");
            let done = m.0 == b'Z';
            got.push(m);
            if done {
                return got;
            }
        }
    }

    /// Reads until the connection closes.
    async fn rest(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut got = Vec::new();
        while let Ok(Some(m)) =
            tokio::time::timeout(Duration::from_secs(10), read_msg(&mut self.s)).await
        {
            got.push(m);
        }
        got
    }
}

fn query(text: &str) -> BytesMut {
    let mut out = BytesMut::new();
    codec::query(&mut out, text);
    out
}

fn parse(name: &str, text: &str) -> BytesMut {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, text);
    b.extend_from_slice(&0i16.to_be_bytes());
    let mut out = BytesMut::new();
    msg(&mut out, b'P', &b);
    out
}

fn bind(portal: &str, statement: &str) -> BytesMut {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    cstr(&mut b, statement);
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut out = BytesMut::new();
    msg(&mut out, b'B', &b);
    out
}

fn execute(portal: &str) -> BytesMut {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    b.extend_from_slice(&0i32.to_be_bytes());
    let mut out = BytesMut::new();
    msg(&mut out, b'E', &b);
    out
}

fn simple(tag: u8) -> BytesMut {
    let mut out = BytesMut::new();
    msg(&mut out, tag, b"");
    out
}

fn copy_data(data: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    msg(&mut out, b'd', data);
    out
}

struct Harness {
    client: Client,
    sink: MemorySink,
    received: Received,
    relay: tokio::task::JoinHandle<EndCause>,
}

fn limits() -> RelayLimits {
    RelayLimits {
        max_message: 1024 * 1024,
        idle_timeout: None,
    }
}

async fn start(script: impl Fn(&str) -> Answer + Send + Sync + 'static) -> Harness {
    start_with(script, ClientEncoding::Utf8).await
}

async fn start_with(
    script: impl Fn(&str) -> Answer + Send + Sync + 'static,
    encoding: ClientEncoding,
) -> Harness {
    let sink = MemorySink::new();
    let session = open_session(&sink).await;
    let (client_near, client_far) = tokio::io::duplex(1 << 20);
    let (up_near, up_far) = tokio::io::duplex(1 << 20);
    let (server, received) = Scripted::new(Arc::new(script));
    tokio::spawn(server.serve(up_far));
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let relay = tokio::spawn(async move {
        let _keep = _stop_tx;
        let cause = run(
            &session,
            client_near,
            up_near,
            limits(),
            Initial {
                encoding,
                allow_fastpath: false,
            },
            super::Hooks {
                interrupt: std::sync::Arc::new(tokio::sync::Notify::new()),
                estimator: None,
            },
            stop,
        )
        .await;
        session.end(&cause, None).await;
        cause
    });
    Harness {
        client: Client { s: client_far },
        sink,
        received,
        relay,
    }
}

/// Statement records (admissions) and their results, joined: (text, status, rows, detail).
fn statements(sink: &MemorySink) -> Vec<(String, Status, Option<u64>, serde_json::Value)> {
    let events = sink.events();
    let results: HashMap<u64, &Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::StatementResult)
        .filter_map(|e| e.refers.map(|r| (r, e)))
        .collect();
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == EventKind::Statement)
        .map(|(i, e)| {
            let seq = i as u64 + 1;
            let (status, rows) = match (e.outcome.status, results.get(&seq)) {
                (Status::Pending, Some(r)) => (r.outcome.status, r.outcome.rows),
                (status, _) => (status, e.outcome.rows),
            };
            (
                e.what.statement.clone().unwrap_or_default(),
                status,
                rows,
                e.what.detail.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn script_rows(text: &str) -> Answer {
    if text.starts_with("COPY") {
        Answer::CopyIn
    } else if text.starts_with("SELECT") {
        Answer::Rows(1)
    } else if let Some(rest) = text.strip_prefix("FAIL") {
        let _ = rest;
        Answer::Error("42000", "failed on purpose")
    } else {
        Answer::Command("UPDATE 1")
    }
}

#[tokio::test]
async fn a_refused_reparse_is_not_taken_as_the_new_text() {
    let mut h = start(script_rows).await;
    let mut batch = parse("s1", "SELECT 1");
    batch.extend(simple(b'S'));
    h.client.send(batch).await;
    h.client.until_ready().await;
    // Re-Parse of s1 with other text: the server refuses it; the Execute runs the old text.
    let mut batch = parse("s1", "UPDATE accounts SET balance = 0");
    batch.extend(simple(b'S'));
    batch.extend(bind("", "s1"));
    batch.extend(execute(""));
    batch.extend(simple(b'S'));
    h.client.send(batch).await;
    let first = h.client.until_ready().await;
    assert!(
        first.iter().any(|(t, _)| *t == b'E'),
        "the server refused the re-Parse"
    );
    h.client.until_ready().await;
    let executed: Vec<_> = statements(&h.sink)
        .into_iter()
        .filter(|s| s.3["step"] == "execute")
        .collect();
    assert_eq!(executed.len(), 1);
    assert_eq!(executed[0].0, "SELECT 1");
    assert_eq!(executed[0].1, Status::Success);
}

#[tokio::test]
async fn sync_and_flush_during_copy_do_not_shift_outcomes() {
    let mut h = start(script_rows).await;
    h.client.send(query("COPY t FROM STDIN")).await;
    let mut data = copy_data(b"1\n");
    data.extend(simple(b'S'));
    data.extend(simple(b'H'));
    data.extend(copy_data(b"2\n"));
    data.extend(simple(b'c'));
    h.client.send(data).await;
    let copy = h.client.until_ready().await;
    assert!(copy
        .iter()
        .any(|(t, b)| *t == b'C' && b.starts_with(b"COPY 2")));
    h.client.send(query("SELECT 1")).await;
    let select = h.client.until_ready().await;
    assert!(select.iter().any(|(t, _)| *t == b'D'));
    h.client.send(query("UPDATE t SET a = 1")).await;
    h.client.until_ready().await;
    let recorded = statements(&h.sink);
    let shown: Vec<(&str, Status, Option<u64>)> = recorded
        .iter()
        .map(|(t, s, r, _)| (t.as_str(), *s, *r))
        .collect();
    assert_eq!(
        shown,
        vec![
            ("COPY t FROM STDIN", Status::Success, Some(2)),
            ("SELECT 1", Status::Success, Some(1)),
            ("UPDATE t SET a = 1", Status::Success, Some(1)),
        ]
    );
    // The server never saw the Sync or Flush sent during COPY, and only data inside it.
    let received = h.received.lock().unwrap().clone();
    assert!(
        !received.iter().any(|(t, _)| *t == b'S' || *t == b'H'),
        "{received:?}"
    );
}

#[tokio::test]
async fn a_response_that_matches_no_request_ends_the_session() {
    let mut h = start(|text: &str| {
        if text.contains("odd") {
            Answer::Twice(Box::new(Answer::Command("SELECT 0")))
        } else {
            Answer::Command("UPDATE 1")
        }
    })
    .await;
    let mut batch = query("SELECT odd");
    batch.extend(query("UPDATE t SET a = 1"));
    h.client.send(batch).await;
    let rest = h.client.rest().await;
    let fatal = rest
        .iter()
        .rev()
        .find(|(t, _)| *t == b'E')
        .expect("a FATAL error");
    assert_eq!(codec::error_fields(&fatal.1).0, "08006");
    assert!(matches!(
        h.relay.await.unwrap(),
        EndCause::UpstreamProtocol(_)
    ));
    // The extra answer was never taken as the UPDATE's.
    let recorded = statements(&h.sink);
    let update = recorded.iter().find(|s| s.0.starts_with("UPDATE")).unwrap();
    assert_ne!(update.1, Status::Success, "{recorded:?}");
}

#[tokio::test]
async fn once_the_log_refuses_records_nothing_more_reaches_the_server() {
    let mut h = start(script_rows).await;
    h.client.send(query("SELECT 1")).await;
    h.client.until_ready().await;
    let before = h.received.lock().unwrap().len();
    h.sink.fail("disk full");
    let mut batch = parse("", "INSERT INTO t VALUES (1)");
    batch.extend(bind("", ""));
    batch.extend(execute(""));
    batch.extend(simple(b'S'));
    batch.extend(query("INSERT INTO t VALUES (2)"));
    h.client.send(batch).await;
    let rest = h.client.rest().await;
    let fatal = rest.iter().find(|(t, _)| *t == b'E').expect("an error");
    assert_eq!(codec::error_fields(&fatal.1).0, "57P03");
    assert_eq!(
        h.received.lock().unwrap().len(),
        before,
        "nothing reached the server"
    );
    assert!(matches!(
        h.relay.await.unwrap(),
        EndCause::AuditUnavailable(_)
    ));
}

#[tokio::test]
async fn an_interrupted_statement_is_recorded_unknown_with_what_was_relayed() {
    let mut h = start(|text: &str| {
        if text.starts_with("SELECT big") {
            Answer::After(Duration::from_secs(30), Box::new(Answer::Rows(1)))
        } else {
            Answer::Command("UPDATE 1")
        }
    })
    .await;
    h.client.send(query("SELECT big")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(h.client);
    let _ = h.relay.await.unwrap();
    let recorded = statements(&h.sink);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].1, Status::Unknown, "{recorded:?}");
}

#[tokio::test]
async fn pipelined_durations_are_measured_from_each_statements_turn() {
    let mut h = start(|_| {
        Answer::After(
            Duration::from_millis(40),
            Box::new(Answer::Command("UPDATE 1")),
        )
    })
    .await;
    let mut batch = parse("s", "UPDATE t SET a = a + 1");
    for _ in 0..10 {
        batch.extend(bind("", "s"));
        batch.extend(execute(""));
    }
    batch.extend(simple(b'S'));
    h.client.send(batch).await;
    h.client.until_ready().await;
    let results: Vec<u64> = h
        .sink
        .events()
        .iter()
        .filter(|e| e.kind == EventKind::StatementResult)
        .map(|e| e.outcome.duration_ns.unwrap())
        .collect();
    assert_eq!(results.len(), 10);
    for d in &results {
        let ms = d / 1_000_000;
        assert!(
            (30..200).contains(&ms),
            "each took about 40 ms, not cumulatively: {results:?}"
        );
    }
}

#[tokio::test]
async fn long_statements_keep_head_tail_length_and_hash() {
    let mut h = start(script_rows).await;
    let text = format!("SELECT 1 /* {} */; UPDATE t SET a = 1", "x".repeat(100_000));
    h.client.send(query(&text)).await;
    h.client.until_ready().await;
    let recorded = statements(&h.sink);
    let detail = &recorded[0].3;
    assert_eq!(detail["statement_bytes"], text.len());
    assert!(detail["statement_tail"]
        .as_str()
        .unwrap()
        .ends_with("UPDATE t SET a = 1"));
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
    assert_eq!(detail["statement_sha256"], sha);
    assert!(recorded[0].0.starts_with("SELECT 1 /*"));
}

#[tokio::test]
async fn a_query_over_the_limit_is_refused_and_the_session_goes_on() {
    let mut h = start(script_rows).await;
    let text = format!("SELECT '{}'", "y".repeat(2 * 1024 * 1024));
    h.client.send(query(&text)).await;
    let answer = h.client.until_ready().await;
    let error = answer.iter().find(|(t, _)| *t == b'E').expect("an error");
    assert_eq!(codec::error_fields(&error.1).0, "54000");
    h.client.send(query("SELECT 1")).await;
    h.client.until_ready().await;
    let recorded = statements(&h.sink);
    assert_eq!(recorded[0].1, Status::Failure);
    assert_eq!(recorded[0].3["message_bytes"], text.len() + 1);
    assert_eq!(recorded[1].0, "SELECT 1");
}

#[tokio::test]
async fn fastpath_is_refused_unless_enabled() {
    let mut h = start(script_rows).await;
    let mut b = Vec::new();
    b.extend_from_slice(&1234u32.to_be_bytes());
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&1u16.to_be_bytes());
    b.extend_from_slice(&2i32.to_be_bytes());
    b.extend_from_slice(b"hi");
    b.extend_from_slice(&0u16.to_be_bytes());
    let mut out = BytesMut::new();
    msg(&mut out, b'F', &b);
    h.client.send(out).await;
    let answer = h.client.until_ready().await;
    assert!(answer.iter().any(|(t, _)| *t == b'E'));
    let recorded = statements(&h.sink);
    assert_eq!(recorded[0].1, Status::Failure);
    assert_eq!(recorded[0].3["arguments"][0]["bytes"], 2);
    assert!(!h.received.lock().unwrap().iter().any(|(t, _)| *t == b'F'));
}

#[tokio::test]
async fn text_is_read_in_the_reported_client_encoding() {
    let mut h = start_with(script_rows, ClientEncoding::from_name("LATIN9").unwrap()).await;
    let mut out = BytesMut::new();
    msg(&mut out, b'Q', b"SELECT '\xa4'\0");
    h.client.send(out).await;
    h.client.until_ready().await;
    let recorded = statements(&h.sink);
    assert_eq!(recorded[0].0, "SELECT '€'");
    assert_eq!(recorded[0].3["client_encoding"], "LATIN9");
}

/// An upstream that reports client_encoding SJIS for a SET of it, and runs anything else.
fn switches_to_sjis(text: &str) -> Answer {
    if text.contains("client_encoding") {
        Answer::Sets("client_encoding", "SJIS", Box::new(Answer::Command("SET")))
    } else {
        Answer::Command("UPDATE 1")
    }
}

#[tokio::test]
async fn switching_to_an_unsafe_encoding_ends_the_session_before_anything_else_runs() {
    let mut h = start(switches_to_sjis).await;
    let mut batch = query("SET client_encoding TO 'SJIS'");
    batch.extend(query("UPDATE t SET a = 1"));
    h.client.send(batch).await;
    let rest = h.client.rest().await;
    let fatal = rest.iter().rev().find(|(t, _)| *t == b'E').unwrap();
    assert_eq!(codec::error_fields(&fatal.1).0, "55P02");
    assert!(matches!(
        h.relay.await.unwrap(),
        EndCause::UnsafeSessionState(_)
    ));
    let received = h.received.lock().unwrap().clone();
    assert_eq!(
        received.len(),
        1,
        "the UPDATE never reached the server: {received:?}"
    );
}

#[tokio::test]
async fn an_error_in_a_batch_records_the_skipped_executes_as_not_run() {
    let mut h = start(script_rows).await;
    let mut batch = parse("a", "SELECT 1");
    batch.extend(bind("", "a"));
    batch.extend(execute(""));
    batch.extend(parse("b", "FAIL now"));
    batch.extend(bind("", "b"));
    batch.extend(execute(""));
    batch.extend(simple(b'S'));
    h.client.send(batch).await;
    h.client.until_ready().await;
    let recorded = statements(&h.sink);
    let shown: Vec<(&str, Status)> = recorded
        .iter()
        .map(|(t, s, _, _)| (t.as_str(), *s))
        .collect();
    assert_eq!(
        shown,
        vec![("SELECT 1", Status::Success), ("FAIL now", Status::Failure)]
    );
}

#[tokio::test]
async fn nothing_follows_an_encoding_change_in_the_same_extended_batch() {
    let mut h = start(switches_to_sjis).await;
    let mut batch = parse("", "SET client_encoding TO 'SJIS'");
    batch.extend(bind("", ""));
    batch.extend(execute(""));
    batch.extend(parse("", "UPDATE t SET a = 1"));
    batch.extend(bind("", ""));
    batch.extend(execute(""));
    batch.extend(simple(b'S'));
    h.client.send(batch).await;
    let rest = h.client.rest().await;
    assert!(rest.iter().any(|(t, _)| *t == b'E'));
    assert!(matches!(
        h.relay.await.unwrap(),
        EndCause::UnsafeSessionState(_)
    ));
    let received = h.received.lock().unwrap().clone();
    let updates = received
        .iter()
        .filter(|(t, b)| *t == b'P' && String::from_utf8_lossy(b).contains("UPDATE"))
        .count();
    assert_eq!(
        updates, 0,
        "the UPDATE never reached the server: {received:?}"
    );
    let refused: Vec<_> = statements(&h.sink)
        .into_iter()
        .filter(|s| s.1 == Status::Failure)
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "the statement after the change is refused and recorded"
    );
}

#[tokio::test]
async fn statements_sent_before_terminate_are_answered_and_recorded() {
    let mut h = start(|_| {
        Answer::After(
            Duration::from_millis(300),
            Box::new(Answer::Command("INSERT 0 1")),
        )
    })
    .await;
    let mut batch = query("INSERT INTO t VALUES (1)");
    batch.extend(simple(b'X'));
    h.client.send(batch).await;
    let rest = h.client.rest().await;
    assert!(
        rest.iter()
            .any(|(t, b)| *t == b'C' && b.starts_with(b"INSERT")),
        "the answer still reaches the client: {rest:?}"
    );
    assert_eq!(h.relay.await.unwrap(), EndCause::ClientTerminated);
    let recorded = statements(&h.sink);
    assert_eq!(recorded[0].1, Status::Success, "{recorded:?}");
}
