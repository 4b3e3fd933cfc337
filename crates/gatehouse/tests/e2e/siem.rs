//! The audit log streamed by a running gateway to a real rsyslogd (Debian's package) and to a
//! HEC-style receiver: every record arrives, including across a receiver outage and a gateway
//! restart.

use crate::harness::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private rsyslogd on a loopback port writing each message's MSG (the record) to a file.
struct Rsyslog {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Rsyslog {
    fn start(dir: &Path) -> Rsyslog {
        let port = free_port();
        std::fs::create_dir_all(dir.join("work")).unwrap();
        let conf = format!(
            "global(maxMessageSize=\"256k\" workDirectory=\"{work}\")\n\
             module(load=\"imtcp\")\n\
             template(name=\"msg\" type=\"string\" string=\"%msg%\\n\")\n\
             ruleset(name=\"in\") {{ action(type=\"omfile\" file=\"{out}\" template=\"msg\") }}\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"in\")\n",
            work = dir.join("work").display(),
            out = dir.join("out.log").display(),
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        let mut r = Rsyslog {
            dir: dir.to_path_buf(),
            port,
            child: None,
        };
        r.launch();
        r
    }

    fn launch(&mut self) {
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rsyslogd (apt-get install rsyslog)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "rsyslogd did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.dir.join("rsyslogd.pid"));
    }

    /// The `seq`s received so far (each message is one record's JSON).
    fn seqs(&self) -> Vec<u64> {
        std::fs::read_to_string(self.dir.join("out.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
            .filter_map(|v| v["seq"].as_u64())
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Something that reports the `seq`s it received, in arrival order.
trait Receiver {
    fn seqs(&self) -> Vec<u64>;
}

impl Receiver for Rsyslog {
    fn seqs(&self) -> Vec<u64> {
        Rsyslog::seqs(self)
    }
}

/// A HEC-style receiver on a loopback port. A mock (no Splunk can run here), speaking the
/// parts the sink uses: `Authorization: Splunk <token>`, concatenated JSON events, `{"code":0}`
/// answers, and 503 while in an outage. Plain HTTP/1.1 with keep-alive, one thread per
/// connection.
struct Hec {
    port: u16,
    seqs: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    outage: std::sync::Arc<std::sync::atomic::AtomicBool>,
    bad_token: std::sync::Arc<std::sync::atomic::AtomicU64>,
    busy: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Receiver for Hec {
    fn seqs(&self) -> Vec<u64> {
        self.seqs.lock().unwrap().clone()
    }
}

impl Hec {
    fn start(token: &str) -> Hec {
        use std::sync::atomic::{AtomicBool, AtomicU64};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let hec = Hec {
            port: listener.local_addr().unwrap().port(),
            seqs: Arc::new(Mutex::new(Vec::new())),
            outage: Arc::new(AtomicBool::new(false)),
            bad_token: Arc::new(AtomicU64::new(0)),
            busy: Arc::new(AtomicU64::new(0)),
        };
        let (seqs, outage, bad) = (hec.seqs.clone(), hec.outage.clone(), hec.bad_token.clone());
        let busy = hec.busy.clone();
        let expected = format!("authorization: splunk {token}");
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (seqs, outage, bad, busy, expected) = (
                    seqs.clone(),
                    outage.clone(),
                    bad.clone(),
                    busy.clone(),
                    expected.clone(),
                );
                std::thread::spawn(move || {
                    serve_hec(conn, &seqs, &outage, [&bad, &busy], &expected)
                });
            }
        });
        hec
    }
}

fn serve_hec(
    conn: std::net::TcpStream,
    seqs: &std::sync::Mutex<Vec<u64>>,
    outage: &std::sync::atomic::AtomicBool,
    [bad_token, busy]: [&std::sync::atomic::AtomicU64; 2],
    expected: &str,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::Ordering;
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            headers.push(line.trim_end().to_ascii_lowercase());
        }
        let length: usize = headers
            .iter()
            .find_map(|h| h.strip_prefix("content-length: "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, answer) = if !headers.iter().any(|h| h == expected) {
            bad_token.fetch_add(1, Ordering::Relaxed);
            ("401 Unauthorized", r#"{"text":"Invalid token","code":4}"#)
        } else if outage.load(Ordering::Relaxed) {
            busy.fetch_add(1, Ordering::Relaxed);
            (
                "503 Service Unavailable",
                r#"{"text":"Server is busy","code":9}"#,
            )
        } else {
            let mut got = seqs.lock().unwrap();
            for event in
                serde_json::Deserializer::from_slice(&body).into_iter::<serde_json::Value>()
            {
                let event = event.unwrap();
                // The record as stored, carried whole; its seq is also a field.
                assert_eq!(event["event"]["seq"], event["fields"]["seq"]);
                got.push(event["fields"]["seq"].as_u64().unwrap());
            }
            ("200 OK", r#"{"text":"Success","code":0}"#)
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Twenty statements, a stop and a restart, five more: what happens during an outage.
fn statements_across_a_restart(gateway: &mut Gateway) {
    for i in 5..25 {
        gateway.psql("main", &format!("SELECT {i}"));
    }
    gateway.stop();
    gateway.restart();
    for i in 25..30 {
        gateway.psql("main", &format!("SELECT {i}"));
    }
}

/// The first arrival of each `seq`, asserting they came in `seq` order.
fn first_arrivals_in_order(got: &[u64]) -> Vec<u64> {
    let mut seen = BTreeSet::new();
    let firsts: Vec<u64> = got.iter().copied().filter(|s| seen.insert(*s)).collect();
    let mut sorted = firsts.clone();
    sorted.sort_unstable();
    assert_eq!(firsts, sorted, "first arrivals in seq order");
    firsts
}

fn wait_until_all_arrived(gateway: &Gateway, receiver: &impl Receiver) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let want: BTreeSet<u64> = gateway
            .audit_events()
            .iter()
            .filter_map(|e| e["seq"].as_u64())
            .collect();
        let got = receiver.seqs();
        let have: BTreeSet<u64> = got.iter().copied().collect();
        if want.is_subset(&have) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "missing at the receiver: {:?}",
            want.difference(&have).take(20).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_record_reaches_rsyslog_across_an_outage_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Rsyslog::start(dir.path());
    let sink = format!(
        "  sinks:\n    - name: soc\n      type: syslog\n      address: 127.0.0.1:{}\n      confirm_window: 200ms\n      backoff: {{ initial: 50ms, max: 500ms }}\n",
        receiver.port
    );
    let (_cluster, mut gateway) = cluster_and_gateway_with(|b| b.top(&format!("audit:\n{sink}")));
    for i in 0..5 {
        gateway.psql("main", &format!("SELECT {i}"));
    }
    wait_until_all_arrived(&gateway, &receiver);
    let (status, _, metrics) = gateway.http("/metrics", None);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("gatehouse_sink_lag_records{sink=\"soc\",type=\"syslog\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_sink_up{sink=\"soc\",type=\"syslog\"} 1"),
        "{metrics}"
    );

    // The receiver goes away; statements go on, unhindered.
    receiver.kill();
    // The gateway restarts during the outage; the sink resumes from its cursor.
    statements_across_a_restart(&mut gateway);
    receiver.launch();
    let got = wait_until_all_arrived(&gateway, &receiver);

    // Nothing lost; whatever came twice came with the same seq; first arrivals in order.
    let firsts = first_arrivals_in_order(&got);
    let log_seqs = gateway.audit_events().len() as u64;
    assert!(log_seqs > 30);
    eprintln!(
        "{log_seqs} records in the log, {} messages received ({} duplicates)",
        got.len(),
        got.len() - firsts.len()
    );
}

#[test]
fn every_record_reaches_a_hec_receiver_across_an_outage_and_a_gateway_restart() {
    const TOKEN: &str = "5f0c2a1e-e2e-hec-token-3b9d";
    let receiver = Hec::start(TOKEN);
    let sink = format!(
        "  sinks:\n    - name: splunk\n      type: hec\n      url: http://127.0.0.1:{}\n      token: ${{env:GH_TEST_HEC_TOKEN}}\n      batch: {{ max_records: 100, max_bytes: 1MiB, max_wait: 50ms }}\n      backoff: {{ initial: 50ms, max: 500ms }}\n",
        receiver.port
    );
    let (_cluster, mut gateway) = cluster_and_gateway_with(|b| {
        b.env("GH_TEST_HEC_TOKEN", TOKEN)
            .top(&format!("audit:\n{sink}"))
    });
    for i in 0..5 {
        gateway.psql("main", &format!("SELECT {i}"));
    }
    wait_until_all_arrived(&gateway, &receiver);
    let (_, _, metrics) = gateway.http("/metrics", None);
    assert!(
        metrics.contains("gatehouse_sink_up{sink=\"splunk\",type=\"hec\"} 1"),
        "{metrics}"
    );

    // The receiver answers 503; statements go on; the gateway restarts during the outage.
    receiver
        .outage
        .store(true, std::sync::atomic::Ordering::Relaxed);
    statements_across_a_restart(&mut gateway);
    assert!(
        receiver.busy.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the sink met the outage"
    );
    receiver
        .outage
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let got = wait_until_all_arrived(&gateway, &receiver);

    first_arrivals_in_order(&got);
    assert_eq!(
        receiver
            .bad_token
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "every request carried the token"
    );
    // The token is a secret: not in the gateway's output, nor in its audit log.
    assert!(!gateway.log().contains(TOKEN));
    assert!(!std::fs::read_to_string(gateway.audit_path())
        .unwrap()
        .contains(TOKEN));
}
