//! The audit log streamed to a real rsyslogd (Debian's package) by a running gateway: every
//! record arrives, including across a receiver outage and a gateway restart.

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

fn wait_until_all_arrived(gateway: &Gateway, receiver: &Rsyslog) -> Vec<u64> {
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
    for i in 5..25 {
        gateway.psql("main", &format!("SELECT {i}"));
    }
    // The gateway restarts during the outage; the sink resumes from its cursor.
    gateway.stop();
    gateway.restart();
    for i in 25..30 {
        gateway.psql("main", &format!("SELECT {i}"));
    }
    receiver.launch();
    let got = wait_until_all_arrived(&gateway, &receiver);

    // Nothing lost; whatever came twice came with the same seq; first arrivals in order.
    let mut seen = BTreeSet::new();
    let firsts: Vec<u64> = got.iter().copied().filter(|s| seen.insert(*s)).collect();
    let mut sorted = firsts.clone();
    sorted.sort_unstable();
    assert_eq!(firsts, sorted, "first arrivals in seq order");
    let log_seqs = gateway.audit_events().len() as u64;
    assert!(log_seqs > 30);
    eprintln!(
        "{log_seqs} records in the log, {} messages received ({} duplicates)",
        got.len(),
        got.len() - firsts.len()
    );
}
