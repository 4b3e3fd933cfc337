//! Test support: a private rsyslogd, a HEC-style receiver, a TLS syslog receiver, a paced
//! audit writer and the delivery check. Everything listens on 127.0.0.1 only, and every wait
//! is bounded.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse_audit::event::Status;
use gatehouse_audit::{record, AuditLog, Event, EventKind, Outcome, What};
use gatehouse_sink::{SinkHandle, SinkStatus};

/// How long the receiver stays down in the outage tests, in seconds:
/// `GATEHOUSE_SINK_OUTAGE_SECS` (default 60, a minute under load; 0.5 to 120).
pub fn outage() -> Duration {
    let secs = std::env::var("GATEHOUSE_SINK_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(60.0)
        .clamp(0.5, 120.0);
    Duration::from_secs_f64(secs)
}

/// How many records an outage test writes at `per_sec`: enough to keep writing through two
/// seconds before the outage, the outage itself and three seconds after it.
pub fn records_for(outage: Duration, per_sec: u64) -> u64 {
    ((outage.as_secs_f64() + 5.0) * per_sec as f64) as u64
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

// ---------------------------------------------------------------------------------------------
// The audit log side.

/// The `i`th test event: a mix of kinds and outcomes, with characters that need escaping in
/// JSON and in syslog structured data.
pub fn event(i: u64) -> Event {
    let (kind, outcome) = match i % 5 {
        0 => (EventKind::AuthFailure, Outcome::failure("bad key")),
        1 => (EventKind::Statement, Outcome::pending()),
        2 => (EventKind::StatementResult, Outcome::success()),
        3 => (
            EventKind::Statement,
            Outcome::failure("blocked by rule \"no-drop\""),
        ),
        _ => (EventKind::SessionStart, Outcome::success()),
    };
    let mut e = Event::now(kind, outcome);
    e.session = Some(format!("s-{:08}", i / 10));
    e.what = What {
        connection: Some("prod-db".into()),
        statement: Some(format!(
            "SELECT \"a]b\", '\\x', 'caf\u{e9}' FROM t WHERE id = {i:08}"
        )),
        ..What::default()
    };
    e
}

/// Opens a log with the default (always fsync) settings.
pub fn open_log(dir: &Path) -> AuditLog {
    AuditLog::open(dir, gatehouse_audit::Options::default()).expect("open audit log")
}

/// Appends `n` events at `per_sec` on a thread of its own, like the gateway's data path.
pub fn write_paced(log: AuditLog, n: u64, per_sec: u64) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut last = 0;
        for i in 0..n {
            let due = start + Duration::from_secs_f64(i as f64 / per_sec as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            last = log.append(event(i)).expect("append").seq();
        }
        last
    })
}

/// Appends `n` events as fast as possible and waits until they are durable.
pub fn write_now(log: &AuditLog, n: u64) -> u64 {
    let mut last = None;
    for i in 0..n {
        last = Some(log.append(event(i)).expect("append"));
    }
    if let Some(t) = last {
        log.durable_blocking(t).expect("durable");
    }
    last.map_or(0, |t| t.seq())
}

/// `seq → hash` of every record in the log, checked.
pub fn log_hashes(path: &Path) -> BTreeMap<u64, String> {
    let bytes = std::fs::read(path).expect("read log");
    let mut out = BTreeMap::new();
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let r = record::decode(line).expect("log record verifies");
        out.insert(r.seq, r.hash.to_string());
    }
    out
}

/// How many records of a kind the log holds.
pub fn count_kind(path: &Path, kind: EventKind) -> usize {
    let bytes = std::fs::read(path).expect("read log");
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter(|l| record::decode(l).is_ok_and(|r| r.event.kind == kind))
        .count()
}

/// One record as a receiver got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub seq: u64,
    pub hash: String,
}

/// Checks a record's line as received: it must verify on its own (so it arrived byte-exact).
pub fn arrival_from_line(line: &[u8]) -> Arrival {
    let r = record::decode(line).unwrap_or_else(|e| {
        panic!(
            "received a record that does not verify ({e}): {}",
            String::from_utf8_lossy(line)
        )
    });
    Arrival {
        seq: r.seq,
        hash: r.hash.to_string(),
    }
}

/// What the delivery check found.
#[derive(Debug)]
pub struct Delivery {
    pub records: u64,
    pub arrivals: usize,
    pub duplicates: usize,
}

/// Every `seq` of the log arrived; first arrivals are in order; a duplicate has the same
/// `seq` and `hash` as the record in the log.
pub fn check_delivery(log: &BTreeMap<u64, String>, arrivals: &[Arrival]) -> Delivery {
    let mut seen = HashSet::new();
    let mut next = 1u64;
    for a in arrivals {
        let expected = log
            .get(&a.seq)
            .unwrap_or_else(|| panic!("seq {} arrived but is not in the log", a.seq));
        assert_eq!(&a.hash, expected, "seq {} arrived with another hash", a.seq);
        if seen.insert(a.seq) {
            assert_eq!(a.seq, next, "first arrivals out of order");
            next += 1;
        }
    }
    let last = log.keys().next_back().copied().unwrap_or(0);
    assert_eq!(
        next - 1,
        last,
        "records {}..={last} never arrived",
        next.min(last)
    );
    assert_eq!(seen.len() as u64, log.len() as u64);
    Delivery {
        records: last,
        arrivals: arrivals.len(),
        duplicates: arrivals.len() - seen.len(),
    }
}

/// Waits (bounded) until the sink has acknowledged everything durable in the log and is not
/// lagging; returns its status.
pub async fn wait_caught_up(sink: &SinkHandle, log: &AuditLog, limit: Duration) -> SinkStatus {
    let deadline = Instant::now() + limit;
    let mut stable_since: Option<Instant> = None;
    loop {
        let status = sink.status();
        let durable = log.stats().durable_seq;
        let caught_up = status.acked_seq == durable && !status.lagging && durable > 0;
        if caught_up {
            let since = *stable_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_millis(500) {
                return status;
            }
        } else {
            stable_since = None;
        }
        assert!(
            Instant::now() < deadline,
            "sink did not catch up within {limit:?}: {status:?}, log at {durable}"
        );
        assert!(!sink.is_finished(), "sink stopped: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) for a condition on the sink's status.
pub async fn wait_status(
    sink: &SinkHandle,
    limit: Duration,
    what: &str,
    f: impl Fn(&SinkStatus) -> bool,
) -> SinkStatus {
    let deadline = Instant::now() + limit;
    loop {
        let status = sink.status();
        if f(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// rsyslog.

/// The rsyslogd binary, if installed (`scripts/test.sh` installs Debian's `rsyslog`).
pub fn rsyslogd() -> Option<PathBuf> {
    let mut candidates = vec![
        PathBuf::from("/usr/sbin/rsyslogd"),
        PathBuf::from("/sbin/rsyslogd"),
    ];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|p| p.join("rsyslogd")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// A private rsyslogd on a loopback port: imtcp in, one file out with
/// `PRI|MSGID|STRUCTURED-DATA|MSG` per message. Killed on drop.
pub struct Rsyslog {
    binary: PathBuf,
    dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    starts: u32,
}

impl Rsyslog {
    pub fn start(binary: PathBuf, dir: &Path, port: u16) -> Rsyslog {
        std::fs::create_dir_all(dir.join("work")).expect("rsyslog dir");
        let conf = format!(
            r#"global(maxMessageSize="256k" workDirectory="{work}")
module(load="imtcp")
template(name="fields" type="string" string="%pri%|%msgid%|%structured-data%|%msg%\n")
ruleset(name="in") {{
  action(type="omfile" file="{out}" template="fields")
}}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="in")
"#,
            work = dir.join("work").display(),
            out = dir.join("out.log").display(),
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).expect("rsyslog conf");
        let mut r = Rsyslog {
            binary,
            dir: dir.to_path_buf(),
            port,
            child: None,
            starts: 0,
        };
        r.launch();
        r
    }

    fn launch(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("rsyslogd.pid"));
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("rsyslogd-{}.stderr", self.starts)))
            .expect("rsyslog stderr");
        let child = Command::new(&self.binary)
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rsyslogd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                let stderr = std::fs::read_to_string(
                    self.dir.join(format!("rsyslogd-{}.stderr", self.starts)),
                )
                .unwrap_or_default();
                panic!("rsyslogd exited with {status}: {stderr}");
            }
            assert!(Instant::now() < deadline, "rsyslogd did not listen in 15 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills rsyslogd (SIGKILL: whatever it had not written is lost).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Messages written so far: `(pri, msgid, structured data, msg)`.
    pub fn messages(&self) -> Vec<(u8, String, String, Vec<u8>)> {
        let bytes = std::fs::read(self.dir.join("out.log")).unwrap_or_default();
        let mut out = Vec::new();
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let mut parts = line.splitn(4, |&b| b == b'|');
            let (Some(pri), Some(msgid), Some(sd), Some(msg)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                panic!(
                    "rsyslog wrote an unexpected line: {}",
                    String::from_utf8_lossy(line)
                );
            };
            let pri = std::str::from_utf8(pri)
                .ok()
                .and_then(|p| p.parse().ok())
                .expect("numeric PRI");
            out.push((
                pri,
                String::from_utf8_lossy(msgid).into_owned(),
                String::from_utf8_lossy(sd).into_owned(),
                msg.to_vec(),
            ));
        }
        out
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 5424 parsing, for the TLS receiver.

/// A parsed RFC 5424 message.
#[derive(Debug)]
pub struct Message {
    pub pri: u8,
    pub timestamp: String,
    pub hostname: String,
    pub app_name: String,
    pub msgid: String,
    /// Parameters of the structured-data element, unescaped.
    pub params: HashMap<String, String>,
    pub sd_id: String,
    pub msg: Vec<u8>,
}

pub fn parse_5424(bytes: &[u8]) -> Message {
    let text = std::str::from_utf8(bytes).expect("UTF-8 message");
    let rest = text.strip_prefix('<').expect("PRI");
    let (pri, rest) = rest.split_once('>').expect("PRI end");
    let rest = rest.strip_prefix("1 ").expect("VERSION 1");
    let mut fields = rest.splitn(6, ' ');
    let mut next = || fields.next().expect("header field").to_owned();
    let (timestamp, hostname, app_name, _procid, msgid) = (next(), next(), next(), next(), next());
    let sd = next();
    let sd = sd.strip_prefix('[').expect("one SD element");
    let (sd_id, mut rest) = sd.split_once(' ').expect("SD-ID");
    let mut params = HashMap::new();
    loop {
        if let Some(after) = rest.strip_prefix("] ") {
            rest = after;
            break;
        }
        let (name, after) = rest.split_once("=\"").expect("PARAM-NAME");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("PARAM-VALUE end") {
                (_, '\\') => value.push(chars.next().expect("escaped char").1),
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        params.insert(name.trim_start().to_owned(), value);
        rest = &after[end + 1..];
    }
    Message {
        pri: pri.parse().expect("PRI number"),
        timestamp,
        hostname,
        app_name,
        msgid,
        params,
        sd_id: sd_id.to_owned(),
        msg: rest.as_bytes().to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------
// A HEC-style receiver (a mock: no Splunk can run here).

#[derive(Default)]
pub struct HecState {
    pub token: String,
    /// Answer 503 to everything.
    pub outage: bool,
    /// Offer indexer acknowledgement (needs the channel header).
    pub acks: bool,
    /// Echo the Authorization header in a 401 (to test that the sink never repeats it).
    pub echo_auth: bool,
    /// Take events but never acknowledge them (an indexer that lost them).
    pub lose_acks: bool,
    pub arrivals: Vec<Arrival>,
    pub requests: u64,
    pub refused: u64,
    next_ack: u64,
    /// ackId → times asked; indexed from the second question on.
    pending_acks: HashMap<u64, u32>,
    /// ackIds given out while `lose_acks` was on: never indexed.
    lost_acks: HashSet<u64>,
    pub acks_lost: u64,
}

pub struct HecReceiver {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<HecState>>,
    task: tokio::task::JoinHandle<()>,
}

impl HecReceiver {
    pub async fn start(token: &str, acks: bool) -> HecReceiver {
        use axum::routing::post;
        let state = Arc::new(Mutex::new(HecState {
            token: token.to_owned(),
            acks,
            ..HecState::default()
        }));
        let app = axum::Router::new()
            .route("/services/collector/event", post(hec_event))
            .route("/services/collector/ack", post(hec_ack))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind HEC");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HecReceiver { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_outage(&self, on: bool) {
        self.state.lock().unwrap().outage = on;
    }

    pub fn set_lose_acks(&self, on: bool) {
        self.state.lock().unwrap().lose_acks = on;
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.state.lock().unwrap().arrivals.clone()
    }
}

impl Drop for HecReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Answer = (axum::http::StatusCode, axum::Json<serde_json::Value>);

fn answer(status: u16, body: serde_json::Value) -> Answer {
    (
        axum::http::StatusCode::from_u16(status).expect("status"),
        axum::Json(body),
    )
}

#[derive(serde::Deserialize)]
struct HecIn<'a> {
    time: f64,
    host: String,
    source: String,
    sourcetype: String,
    #[serde(borrow)]
    event: &'a serde_json::value::RawValue,
    fields: HecFields,
}

#[derive(serde::Deserialize)]
struct HecFields {
    seq: u64,
}

async fn hec_event(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<HecState>>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    let mut s = state.lock().unwrap();
    s.requests += 1;
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Splunk {}", s.token) || s.echo_auth {
        s.refused += 1;
        return answer(
            401,
            serde_json::json!({"text": format!("Invalid authorization {auth}"), "code": 3}),
        );
    }
    if s.outage {
        s.refused += 1;
        return answer(
            503,
            serde_json::json!({"text": "Server is busy", "code": 9}),
        );
    }
    let channel = headers.get("x-splunk-request-channel").is_some();
    if s.acks && !channel {
        return answer(
            400,
            serde_json::json!({"text": "Data channel is missing", "code": 10}),
        );
    }
    let mut batch = Vec::new();
    for item in serde_json::Deserializer::from_slice(&body).into_iter::<HecIn<'_>>() {
        let Ok(item) = item else {
            return answer(
                400,
                serde_json::json!({"text": "Invalid data format", "code": 6}),
            );
        };
        let arrival = arrival_from_line(item.event.get().as_bytes());
        assert_eq!(
            item.fields.seq, arrival.seq,
            "fields.seq is the record's seq"
        );
        assert!(item.time > 1.0e9, "time is epoch seconds");
        assert_eq!(item.source, "gatehouse");
        assert_eq!(item.sourcetype, "gatehouse:audit");
        assert!(!item.host.is_empty());
        batch.push(arrival);
    }
    s.arrivals.extend(batch);
    if s.acks {
        s.next_ack += 1;
        let id = s.next_ack;
        s.pending_acks.insert(id, 0);
        if s.lose_acks {
            s.lost_acks.insert(id);
            s.acks_lost += 1;
        }
        answer(
            200,
            serde_json::json!({"text": "Success", "code": 0, "ackId": id}),
        )
    } else {
        answer(200, serde_json::json!({"text": "Success", "code": 0}))
    }
}

#[derive(serde::Deserialize)]
struct AckIn {
    acks: Vec<u64>,
}

async fn hec_ack(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<HecState>>>,
    body: axum::body::Bytes,
) -> Answer {
    let mut s = state.lock().unwrap();
    if s.outage {
        return answer(
            503,
            serde_json::json!({"text": "Server is busy", "code": 9}),
        );
    }
    let Ok(query) = serde_json::from_slice::<AckIn>(&body) else {
        return answer(
            400,
            serde_json::json!({"text": "Invalid data format", "code": 6}),
        );
    };
    let mut acks = serde_json::Map::new();
    for id in query.acks {
        let lost = s.lost_acks.contains(&id);
        let indexed = match s.pending_acks.get_mut(&id) {
            Some(_) if lost => false,
            Some(asked) => {
                *asked += 1;
                *asked >= 2
            }
            None => false,
        };
        acks.insert(id.to_string(), serde_json::Value::Bool(indexed));
    }
    answer(200, serde_json::json!({ "acks": acks }))
}

// ---------------------------------------------------------------------------------------------
// A TLS syslog receiver (tokio-rustls; rsyslog's TLS would need a GnuTLS setup).

pub struct TlsPki {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

/// A CA and a server certificate for `localhost` signed by it.
pub fn tls_pki() -> TlsPki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "gatehouse test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA cert");
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("server cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server TLS config");
    TlsPki {
        ca_pem: ca.pem(),
        server_config: Arc::new(server_config),
    }
}

/// What the TLS receiver got.
#[derive(Default)]
pub struct TlsState {
    pub messages: Vec<Message>,
    pub connections: u32,
    pub handshake_failures: u32,
    /// Close each connection after this many messages (0: never).
    pub close_after: usize,
}

pub struct TlsReceiver {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<TlsState>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsReceiver {
    pub async fn start(config: Arc<rustls::ServerConfig>, close_after: usize) -> TlsReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind TLS");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(TlsState {
            close_after,
            ..TlsState::default()
        }));
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            // Bounded: the test drops the receiver (aborting this task) when it is done.
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(tls) => {
                            state.lock().unwrap().connections += 1;
                            read_frames(tls, state).await;
                        }
                        Err(_) => state.lock().unwrap().handshake_failures += 1,
                    }
                });
            }
        });
        TlsReceiver { addr, state, task }
    }
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads octet-counted frames (`<len> <msg>`) until the peer closes, or `close_after`.
async fn read_frames(mut stream: impl tokio::io::AsyncRead + Unpin, state: Arc<Mutex<TlsState>>) {
    use tokio::io::AsyncReadExt as _;
    let close_after = state.lock().unwrap().close_after;
    let mut taken = 0usize;
    loop {
        let mut len = 0usize;
        loop {
            let Ok(b) = stream.read_u8().await else {
                return;
            };
            match b {
                b'0'..=b'9' => len = len * 10 + usize::from(b - b'0'),
                b' ' => break,
                other => panic!("bad frame length byte {other}"),
            }
            assert!(len <= 32 * 1024 * 1024, "frame too long");
        }
        let mut msg = vec![0u8; len];
        if stream.read_exact(&mut msg).await.is_err() {
            return;
        }
        state.lock().unwrap().messages.push(parse_5424(&msg));
        taken += 1;
        if close_after > 0 && taken >= close_after {
            return;
        }
    }
}

/// The PRI a record should carry with facility `authpriv`.
pub fn expected_pri(kind: EventKind, status: Status) -> u8 {
    gatehouse_sink::syslog::pri(
        gatehouse_sink::Facility::AuthPriv,
        gatehouse_sink::syslog::severity(kind, status),
    )
}
