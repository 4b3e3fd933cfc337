//! Gateway start and stop as an examiner sees them in the audit log.

use crate::harness::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn stop_ends_open_sessions_with_an_audited_end_before_the_gateway_stop() {
    let (_cluster, mut gateway) = cluster_and_gateway();
    // A session busy in a long statement when the gateway is asked to stop.
    let busy = psql_command(&gateway.url(&gateway.admin_key, "main"))
        .args(["-c", "SELECT pg_sleep(20)"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql");
    gateway.wait_for_event("the busy session started", |e| e["kind"] == "session.start");
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    gateway.stop();
    let out = busy.wait_with_output().expect("psql exit");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "stop took {:?}",
        started.elapsed()
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("shutting down"),
        "client was not told why: {stderr}"
    );

    let events = gateway.audit_events();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    let end = kinds
        .iter()
        .position(|k| *k == "session.end")
        .expect("session.end recorded");
    let stop = kinds
        .iter()
        .position(|k| *k == "gateway.stop")
        .expect("gateway.stop recorded");
    assert!(
        end < stop,
        "session end must precede the gateway stop: {kinds:?}"
    );
    assert_eq!(kinds.first(), Some(&"gateway.start"));
    // Only the final signed checkpoint follows the stop.
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["gateway.stop", "audit.checkpoint"]
    );
    let ended = &events[end];
    assert_eq!(ended["outcome"]["reason"], "gateway shutting down");
    // The statement cut short is recorded as unfinished, not lost.
    let cut = gateway
        .statements()
        .into_iter()
        .find(|e| e["what"]["statement"] == "SELECT pg_sleep(20)")
        .expect("interrupted statement recorded");
    assert_eq!(cut["outcome"]["status"], "unknown", "{cut:#}");

    gateway.assert_audit_verifies();
}

#[test]
fn a_second_gateway_on_the_same_port_refuses_to_start() {
    let (_cluster, gateway) = cluster_and_gateway();
    // Same PostgreSQL port, its own admin port and data directory.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = std::fs::read_to_string(gateway.config_path()).expect("config");
    let config = config.replace(
        &format!("127.0.0.1:{}", gateway.admin_port),
        &format!("127.0.0.1:{}", free_port()),
    );
    let path = dir.path().join("second.yaml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("GH_TEST_PW_MAIN", SUPER_PASSWORD)
        .output()
        .expect("second gateway");
    assert!(
        !out.status.success(),
        "a second gateway started on a port in use"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("binding the PostgreSQL listener"),
        "{stderr}"
    );
    // The first one still serves every connection.
    for _ in 0..20 {
        assert_eq!(gateway.psql("main", "SELECT 1").trim(), "1");
    }
}
