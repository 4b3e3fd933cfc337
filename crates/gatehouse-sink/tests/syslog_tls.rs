//! Syslog over TLS against a small tokio-rustls receiver with a CA made by rcgen. (rsyslog's
//! TLS needs a GnuTLS setup of its own; the framing and message format are what the rsyslog
//! test checks, this one checks TLS: trust, server name, reconnects.)

mod support;

use std::time::Duration;

use gatehouse_sink::{BackoffConfig, BatchConfig, Sink, SinkConfig, SyslogConfig, TlsConfig};
use support::*;

fn config(name: &str, port: u16, ca_file: &std::path::Path, server_name: &str) -> SinkConfig {
    SinkConfig {
        batch: BatchConfig {
            max_records: 100,
            max_bytes: 256 * 1024,
            max_wait: Duration::from_millis(20),
        },
        backoff: BackoffConfig {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        poll_interval: Duration::from_millis(20),
        hostname: Some("gw-test".into()),
        ..SinkConfig::syslog(
            name,
            SyslogConfig {
                tls: Some(TlsConfig {
                    ca_file: Some(ca_file.to_path_buf()),
                    server_name: Some(server_name.into()),
                }),
                confirm_window: Duration::from_millis(300),
                connect_timeout: Duration::from_secs(2),
                ..SyslogConfig::new(format!("127.0.0.1:{port}"))
            },
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_syslog_delivers_everything_across_reconnects() {
    const RECORDS: u64 = 2_000;
    let tmp = tempfile::tempdir().unwrap();
    let pki = tls_pki();
    let ca_file = tmp.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    // The receiver drops every connection after 300 messages: the sink must notice, and
    // send again whatever the closed connection may not have delivered.
    let receiver = TlsReceiver::start(pki.server_config.clone(), 300).await;
    let log = open_log(&tmp.path().join("audit"));
    let writer = write_paced(log.clone(), RECORDS, 1_000);
    let sink = Sink::spawn(
        config("tls", receiver.addr.port(), &ca_file, "localhost"),
        log.path(),
        tmp.path().join("state"),
        log.clone(),
    )
    .unwrap();
    tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    let status = wait_caught_up(&sink, &log, Duration::from_secs(60)).await;
    sink.shutdown().await.unwrap();
    log.shutdown().await.unwrap();

    let (arrivals, connections) = {
        let s = receiver.state.lock().unwrap();
        let arrivals: Vec<Arrival> = s
            .messages
            .iter()
            .map(|m| {
                let a = arrival_from_line(&m.msg);
                let r = gatehouse_audit::record::decode(&m.msg).unwrap();
                assert_eq!(m.params["seq"], a.seq.to_string());
                assert_eq!(m.params["hash"], a.hash);
                assert_eq!(m.sd_id, "gatehouse@32473");
                assert_eq!(m.msgid, r.event.kind.as_str());
                assert_eq!(m.app_name, "gatehouse");
                assert_eq!(m.hostname, "gw-test");
                assert_eq!(m.pri, expected_pri(r.event.kind, r.event.outcome.status));
                assert_eq!(m.timestamp.len(), "2026-01-01T00:00:00.000000Z".len());
                a
            })
            .collect();
        (arrivals, s.connections)
    };
    let delivery = check_delivery(&log_hashes(log.path()), &arrivals);
    assert!(
        connections >= 2,
        "reconnected after the receiver closed: {connections}"
    );
    assert!(status.rewinds >= 1, "{status:?}");
    eprintln!(
        "tls: {} records, {connections} connections, {} messages received, {} duplicates, {} rewinds",
        delivery.records, delivery.arrivals, delivery.duplicates, status.rewinds
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_syslog_refuses_an_unexpected_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tls_pki();
    let ca_file = tmp.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let other_ca = tmp.path().join("other-ca.pem");
    std::fs::write(&other_ca, tls_pki().ca_pem).unwrap();
    let receiver = TlsReceiver::start(pki.server_config.clone(), 0).await;
    let log = open_log(&tmp.path().join("audit"));
    write_now(&log, 10);

    for (name, ca, server_name) in [
        ("wrong-name", &ca_file, "siem.example"),
        ("wrong-ca", &other_ca, "localhost"),
    ] {
        let sink = Sink::spawn(
            config(name, receiver.addr.port(), ca, server_name),
            log.path(),
            tmp.path().join("state"),
            log.clone(),
        )
        .unwrap();
        let status = wait_status(&sink, Duration::from_secs(10), "a TLS failure", |s| {
            s.failures >= 2
        })
        .await;
        let error = status.last_error.clone().unwrap_or_default();
        assert!(error.contains("TLS"), "{error}");
        assert!(!status.connected && status.acked_seq == 0, "{status:?}");
        sink.shutdown().await.unwrap();
        eprintln!("{name}: {error}");
    }
    assert!(receiver.state.lock().unwrap().messages.is_empty());
    log.shutdown().await.unwrap();
}
