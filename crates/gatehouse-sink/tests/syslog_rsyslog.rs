//! Syslog delivery to a real rsyslogd (imtcp, octet-counted RFC 5424) through an outage: the
//! receiver is killed while the gateway writes, the sink is restarted during the outage (a
//! gateway restart, resuming from its cursor), and the receiver comes back. Every record must
//! arrive, first arrivals in order, duplicates only as exact copies.

mod support;

use std::time::{Duration, Instant};

use gatehouse_audit::EventKind;
use gatehouse_sink::{AlarmConfig, BackoffConfig, BatchConfig, Sink, SinkConfig, SyslogConfig};
use support::*;

const PER_SEC: u64 = 2_000;

fn config(port: u16) -> SinkConfig {
    SinkConfig {
        batch: BatchConfig {
            max_records: 200,
            max_bytes: 256 * 1024,
            max_wait: Duration::from_millis(50),
        },
        backoff: BackoffConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
        },
        alarm: AlarmConfig {
            lag_records: 2_000,
            after: Duration::from_secs(600),
        },
        poll_interval: Duration::from_millis(20),
        hostname: Some("gw-test".into()),
        ..SinkConfig::syslog(
            "rsyslog",
            SyslogConfig {
                confirm_window: Duration::from_millis(1_000),
                connect_timeout: Duration::from_secs(2),
                ..SyslogConfig::new(format!("127.0.0.1:{port}"))
            },
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_outage_loses_nothing() {
    let Some(binary) = rsyslogd() else {
        eprintln!("SKIPPED: rsyslogd is not installed (scripts/test.sh installs Debian's rsyslog)");
        return;
    };
    let outage = outage();
    let records = records_for(outage, PER_SEC);
    let tmp = tempfile::tempdir().unwrap();
    let audit_dir = tmp.path().join("audit");
    let state_dir = tmp.path().join("state");
    let mut rsyslog = Rsyslog::start(binary, &tmp.path().join("rsyslog"), free_port());
    let log = open_log(&audit_dir);
    let config = config(rsyslog.port);

    let sink = Sink::spawn(config.clone(), log.path(), &state_dir, log.clone()).unwrap();
    let writer = write_paced(log.clone(), records, PER_SEC);
    let started = Instant::now();

    // Running normally for a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = sink.status();
    assert!(before.acked_seq > 0 && before.connected, "{before:?}");

    // The receiver dies; half-way through the outage the gateway restarts its sink.
    rsyslog.kill();
    let down_at = Instant::now();
    tokio::time::sleep(outage / 2).await;
    let at_stop = sink.status();
    sink.shutdown().await.unwrap();
    let sink = Sink::spawn(config.clone(), log.path(), &state_dir, log.clone()).unwrap();
    let resumed = wait_status(&sink, Duration::from_secs(5), "resumed cursor", |s| {
        s.acked_seq > 0
    })
    .await;
    assert!(
        resumed.acked_seq <= at_stop.acked_seq,
        "{resumed:?} vs {at_stop:?}"
    );
    tokio::time::sleep(outage.saturating_sub(down_at.elapsed())).await;
    let during = sink.status();
    assert!(!during.connected, "{during:?}");
    assert!(during.lag_records > 0, "{during:?}");
    rsyslog.restart();
    let outage_secs = down_at.elapsed().as_secs_f64();

    let written = tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    // The sink's own sink.lagging (and perhaps sink.recovered) records are in the log too.
    assert!(written > records, "{written}");
    let status = wait_caught_up(&sink, &log, Duration::from_secs(60)).await;
    sink.shutdown().await.unwrap();
    log.shutdown().await.unwrap();

    let expected = log_hashes(log.path());
    // rsyslog writes asynchronously: wait (bounded) for the last record to show up.
    let deadline = Instant::now() + Duration::from_secs(15);
    let arrivals = loop {
        let messages = rsyslog.messages();
        let arrivals: Vec<Arrival> = messages
            .iter()
            .map(|(pri, msgid, sd, msg)| {
                let a = arrival_from_line(msg);
                let r = gatehouse_audit::record::decode(msg).unwrap();
                assert_eq!(*pri, expected_pri(r.event.kind, r.event.outcome.status));
                assert_eq!(msgid, r.event.kind.as_str());
                assert_eq!(
                    sd,
                    &format!("[gatehouse@32473 seq=\"{}\" hash=\"{}\"]", a.seq, a.hash)
                );
                a
            })
            .collect();
        let have: std::collections::HashSet<u64> = arrivals.iter().map(|a| a.seq).collect();
        if expected.keys().all(|s| have.contains(s)) || Instant::now() > deadline {
            break arrivals;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let delivery = check_delivery(&expected, &arrivals);
    assert_eq!(count_kind(log.path(), EventKind::SinkLagging), 1);
    assert_eq!(count_kind(log.path(), EventKind::SinkRecovered), 1);
    eprintln!(
        "rsyslog: {} records ({} written at {}/s), outage {:.1} s with a sink restart, {} messages received, {} duplicates, {} rewinds after the restart, {:.1} s in all",
        delivery.records,
        records,
        PER_SEC,
        outage_secs,
        delivery.arrivals,
        delivery.duplicates,
        status.rewinds,
        started.elapsed().as_secs_f64()
    );
}
