//! HEC delivery against a local HEC-style HTTP receiver written for the test (axum). It is a
//! mock: no Splunk can run here. It speaks the protocol's parts the sink uses: the token
//! header, concatenated JSON events, `{"code":0}` answers, 503 when busy, and indexer
//! acknowledgement (`ackId` + the ack endpoint, indexed from the second question on).

mod support;

use std::time::{Duration, Instant};

use gatehouse_audit::EventKind;
use gatehouse_sink::{
    AlarmConfig, BackoffConfig, BatchConfig, HecConfig, Secret, Sink, SinkConfig, SinkError,
    SinkState,
};
use support::*;

const PER_SEC: u64 = 2_000;
const TOKEN: &str = "9c1b7f2e-5d4a-4e11-8a3c-hec-test-token";

fn config(url: &str, acks: bool) -> SinkConfig {
    let name = if acks { "hec-acks" } else { "hec" };
    SinkConfig {
        batch: BatchConfig {
            max_records: 250,
            max_bytes: 512 * 1024,
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
        ..SinkConfig::hec(
            name,
            HecConfig {
                channel: acks.then(|| "0aa4b0b5-c3a8-4f5e-9d7e-6a1f64b7a2c1".to_owned()),
                ack_poll_interval: Duration::from_millis(20),
                ack_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(2),
                ..HecConfig::new(url, Secret::new(TOKEN))
            },
        )
    }
}

async fn hec_outage(acks: bool) {
    let outage = outage();
    let records = records_for(outage, PER_SEC);
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("state");
    let receiver = HecReceiver::start(TOKEN, acks).await;
    let log = open_log(&tmp.path().join("audit"));
    let config = config(&receiver.url(), acks);

    let sink = Sink::spawn(config.clone(), log.path(), &state_dir, log.clone()).unwrap();
    let writer = write_paced(log.clone(), records, PER_SEC);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = sink.status();
    assert!(before.acked_seq > 0 && before.connected, "{before:?}");

    // With acknowledgements, the receiver first takes batches and never acknowledges them
    // (an indexer that lost them): the sink must send them again.
    if acks {
        receiver.set_lose_acks(true);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        receiver.set_lose_acks(false);
    }
    // The receiver answers 503; half-way through, the gateway restarts its sink.
    receiver.set_outage(true);
    let down_at = Instant::now();
    tokio::time::sleep(outage / 2).await;
    let at_stop = sink.status();
    sink.shutdown().await.unwrap();
    let sink = Sink::spawn(config.clone(), log.path(), &state_dir, log.clone()).unwrap();
    let resumed = wait_status(&sink, Duration::from_secs(5), "resumed cursor", |s| {
        s.acked_seq > 0
    })
    .await;
    assert_eq!(
        resumed.acked_seq, at_stop.acked_seq,
        "resumes from the saved cursor"
    );
    tokio::time::sleep(outage.saturating_sub(down_at.elapsed())).await;
    let during = wait_status(&sink, Duration::from_secs(5), "a failure", |s| {
        s.failures > 0
    })
    .await;
    assert!(!during.connected, "{during:?}");
    assert!(
        during
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("503")),
        "{during:?}"
    );
    receiver.set_outage(false);
    let outage_secs = down_at.elapsed().as_secs_f64();

    let written = tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    assert!(written > records, "{written}");
    wait_caught_up(&sink, &log, Duration::from_secs(60)).await;
    sink.shutdown().await.unwrap();
    log.shutdown().await.unwrap();

    let expected = log_hashes(log.path());
    let delivery = check_delivery(&expected, &receiver.arrivals());
    assert_eq!(count_kind(log.path(), EventKind::SinkLagging), 1);
    assert_eq!(count_kind(log.path(), EventKind::SinkRecovered), 1);
    let (requests, refused, acks_lost) = {
        let s = receiver.state.lock().unwrap();
        (s.requests, s.refused, s.acks_lost)
    };
    if acks {
        assert!(
            acks_lost > 0 && delivery.duplicates > 0,
            "unacknowledged batches were sent again"
        );
    }
    eprintln!(
        "hec (acks: {acks}): {} records, outage {outage_secs:.1} s with a sink restart, {requests} requests ({refused} refused with 503, {acks_lost} taken but never acknowledged), {} events received, {} duplicates, {:.1} s in all",
        delivery.records,
        delivery.arrivals,
        delivery.duplicates,
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hec_outage_loses_nothing() {
    hec_outage(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hec_outage_with_acknowledgements_loses_nothing() {
    hec_outage(true).await;
}

/// A cursor that no longer matches the log (the log was replaced, or cut short) stops the
/// sink with a typed error, and nothing is sent from the wrong place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_that_no_longer_matches_stops_the_sink() {
    for (replacement, what) in [(300u64, "rewritten"), (100, "shorter")] {
        let tmp = tempfile::tempdir().unwrap();
        let audit_dir = tmp.path().join("audit");
        let state_dir = tmp.path().join("state");
        let receiver = HecReceiver::start(TOKEN, false).await;
        let config = config(&receiver.url(), false);

        let log = open_log(&audit_dir);
        write_now(&log, 200);
        let sink = Sink::spawn(config.clone(), log.path(), &state_dir, log.clone()).unwrap();
        wait_caught_up(&sink, &log, Duration::from_secs(20)).await;
        sink.shutdown().await.unwrap();
        log.shutdown().await.unwrap();
        let delivered = receiver.arrivals().len();
        assert_eq!(delivered, 200);

        // Another log in its place: same record sizes, so seq 200 starts at the same offset
        // in the longer one, with another hash (its chain differs).
        std::fs::remove_dir_all(&audit_dir).unwrap();
        let log = open_log(&audit_dir);
        write_now(&log, replacement);
        let sink = Sink::spawn(config.clone(), log.path(), &state_dir, log.clone()).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), sink.wait())
            .await
            .expect("the sink stops by itself")
            .unwrap_err();
        let mismatch = err.cursor_mismatch().unwrap_or_else(|| panic!("{err}"));
        match what {
            "rewritten" => assert!(
                matches!(
                    mismatch,
                    gatehouse_sink::CursorMismatch::WrongRecord {
                        expected_seq: 200,
                        found_seq: 200,
                        ..
                    }
                ),
                "{mismatch:?}"
            ),
            _ => assert!(
                matches!(
                    mismatch,
                    gatehouse_sink::CursorMismatch::PastEnd { seq: 200, .. }
                ),
                "{mismatch:?}"
            ),
        }
        assert!(err.to_string().contains("cursor names seq 200"), "{err}");
        assert_eq!(
            receiver.arrivals().len(),
            delivered,
            "nothing sent from the {what} log"
        );
        log.shutdown().await.unwrap();
        eprintln!("{what} log: {err}");
    }
}

/// A record that does not verify stops the sink after the good ones before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_stops_the_sink() {
    let tmp = tempfile::tempdir().unwrap();
    let receiver = HecReceiver::start(TOKEN, false).await;
    let log = open_log(&tmp.path().join("audit"));
    write_now(&log, 300);
    // Flip one byte inside record 150.
    let bytes = std::fs::read(log.path()).unwrap();
    let start: usize = bytes
        .split_inclusive(|&b| b == b'\n')
        .take(149)
        .map(<[u8]>::len)
        .sum();
    let at = start + 40;
    {
        use std::os::unix::fs::FileExt as _;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(log.path())
            .unwrap();
        f.write_all_at(&[bytes[at] ^ 0x01], at as u64).unwrap();
    }
    let sink = Sink::spawn(
        config(&receiver.url(), false),
        log.path(),
        tmp.path().join("state"),
        log.clone(),
    )
    .unwrap();
    let status_cell = sink.status_cell();
    let err = tokio::time::timeout(Duration::from_secs(10), sink.wait())
        .await
        .expect("the sink stops by itself")
        .unwrap_err();
    assert!(
        matches!(&err, SinkError::Source { source: gatehouse_sink::SourceError::BadRecord { offset, .. }, .. } if *offset == start as u64),
        "{err}"
    );
    let seqs: Vec<u64> = receiver.arrivals().iter().map(|a| a.seq).collect();
    assert_eq!(seqs, (1..150).collect::<Vec<_>>());
    let status = status_cell.snapshot();
    assert_eq!(status.state, SinkState::Failed);
    assert_eq!(status.acked_seq, 149);
    assert!(status
        .last_error
        .is_some_and(|e| e.contains("does not verify")));
    log.shutdown().await.unwrap();
}

/// The token never shows in Debug or Display output, errors, or the status — not even when
/// the receiver echoes it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_shows() {
    let tmp = tempfile::tempdir().unwrap();
    let receiver = HecReceiver::start(TOKEN, false).await;
    receiver.state.lock().unwrap().echo_auth = true;
    let log = open_log(&tmp.path().join("audit"));
    write_now(&log, 10);
    let config = config(&receiver.url(), false);
    let mut texts = vec![format!("{config:?}"), format!("{config:#?}")];
    let sink = Sink::spawn(config, log.path(), tmp.path().join("state"), log.clone()).unwrap();
    let status = wait_status(&sink, Duration::from_secs(10), "a refusal", |s| {
        s.failures >= 2
    })
    .await;
    let error = status.last_error.clone().unwrap();
    assert!(error.contains("401"), "{error}");
    assert!(
        error.contains("***"),
        "the echoed token is replaced: {error}"
    );
    texts.extend([error, format!("{status:?}"), format!("{sink:?}")]);
    sink.shutdown().await.unwrap();

    // An unreachable receiver and a configuration error.
    let port = free_port();
    let unreachable = config_for(&format!("http://127.0.0.1:{port}"));
    let sink = Sink::spawn(
        unreachable,
        log.path(),
        tmp.path().join("state2"),
        log.clone(),
    )
    .unwrap();
    let status = wait_status(&sink, Duration::from_secs(10), "a failure", |s| {
        s.failures > 0
    })
    .await;
    texts.push(format!("{status:?}"));
    sink.shutdown().await.unwrap();
    let mut bad = config_for("not a url");
    if let gatehouse_sink::Target::Hec(h) = &mut bad.target {
        h.token = Secret::new(format!("{TOKEN}\n"));
        h.url = "http://127.0.0.1:1".into();
    }
    let err = Sink::spawn(bad, log.path(), tmp.path().join("state3"), log.clone()).unwrap_err();
    texts.extend([err.to_string(), format!("{err:?}")]);

    for text in &texts {
        assert!(!text.contains(TOKEN), "token leaked: {text}");
    }
    // The receiver did see it (the sink sends it, only to the receiver).
    assert!(receiver.state.lock().unwrap().refused >= 2);
    log.shutdown().await.unwrap();
}

fn config_for(url: &str) -> SinkConfig {
    config(url, false)
}
