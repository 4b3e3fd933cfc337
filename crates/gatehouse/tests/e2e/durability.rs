//! The record survives the gateway's worst days: `kill -9` under load, a full disk. Every
//! transaction PostgreSQL committed must have its statements in the log, and the log must
//! verify.

use crate::harness::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// (tid, bid, aid, delta) of every `pgbench_history` row, counted.
fn history(cluster: &PgCluster) -> BTreeMap<(i64, i64, i64, i64), usize> {
    let mut rows = BTreeMap::new();
    for line in cluster
        .psql_admin("SELECT tid, bid, aid, delta FROM pgbench_history")
        .lines()
    {
        let v: Vec<i64> = line.split('|').map(|x| x.trim().parse().unwrap()).collect();
        *rows.entry((v[0], v[1], v[2], v[3])).or_default() += 1;
    }
    rows
}

/// (tid, bid, aid, delta) of every recorded pgbench history INSERT (simple protocol: the
/// values are in the text), counted.
fn recorded_inserts(events: &[Value]) -> BTreeMap<(i64, i64, i64, i64), usize> {
    let mut rows = BTreeMap::new();
    for e in events.iter().filter(|e| e["kind"] == "statement") {
        let Some(text) = e["what"]["statement"].as_str() else {
            continue;
        };
        let Some(values) =
            text.strip_prefix("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (")
        else {
            continue;
        };
        let v: Vec<i64> = values
            .split(',')
            .take(4)
            .map(|x| x.trim().parse().unwrap())
            .collect();
        *rows.entry((v[0], v[1], v[2], v[3])).or_default() += 1;
    }
    rows
}

/// Every committed history row has (at least as many) recorded INSERTs.
fn assert_history_recorded(cluster: &PgCluster, events: &[Value], what: &str) -> usize {
    let committed = history(cluster);
    let recorded = recorded_inserts(events);
    let missing: Vec<_> = committed
        .iter()
        .filter(|(k, n)| recorded.get(k).copied().unwrap_or(0) < **n)
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: {} committed transaction(s) without a statement record, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    committed.values().sum()
}

fn pgbench_load(gw: &Gateway, seconds: u32) -> Child {
    gw.pgbench(&[
        "-n",
        "-M",
        "simple",
        "-c",
        "4",
        "-j",
        "2",
        "-T",
        &seconds.to_string(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("pgbench")
}

#[test]
fn kill_9_during_pgbench_leaves_every_committed_transaction_recorded() {
    let (cluster, mut gw) = cluster_and_gateway();
    let init = gw.pgbench(&["-i", "-s", "1", "-q"]).output().unwrap();
    assert!(init.status.success(), "{}", text(&init.stderr));
    for run in 1..=3 {
        let mut load = pgbench_load(&gw, 30);
        // Let it commit a few hundred transactions, then kill the gateway mid-stream.
        let before = history(&cluster).values().sum::<usize>();
        let deadline = Instant::now() + Duration::from_secs(30);
        while history(&cluster).values().sum::<usize>() < before + 300 {
            assert!(
                Instant::now() < deadline,
                "run {run}: pgbench made no progress"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        gw.kill_hard();
        let _ = load.wait();
        let events = gw.audit_events();
        let committed = assert_history_recorded(&cluster, &events, &format!("run {run}"));
        eprintln!("run {run}: {committed} committed transactions, all recorded");
        gw.restart();
        gw.wait_for_event("the restart closed the killed run", |e| {
            e["kind"] == "gateway.unclean_stop"
                && e["seq"].as_u64() > events.last().and_then(|l| l["seq"].as_u64())
        });
        gw.assert_audit_verifies();
    }
    // After the last restart, pgbench's sessions are all closed in the log.
    let events = gw.audit_events();
    let started = events
        .iter()
        .filter(|e| e["kind"] == "session.start")
        .count();
    let ended = events.iter().filter(|e| e["kind"] == "session.end").count();
    assert_eq!(
        started, ended,
        "every session of the killed runs has an end record"
    );
}

#[test]
fn a_full_disk_refuses_every_statement_and_service_resumes_when_space_returns() {
    if !is_root() {
        eprintln!("skipped: mounting a small file system needs root");
        return;
    }
    let mount = SmallDisk::mount("256m");
    let audit_dir = mount.path().join("audit");
    let cluster = PgCluster::start();
    let mut gw = Gateway::builder()
        .main_connection(&cluster)
        .audit(&audit_dir, "  low_space_warning: 128MiB\n")
        .start();
    let init = gw.pgbench(&["-i", "-s", "1", "-q"]).output().unwrap();
    assert!(init.status.success(), "{}", text(&init.stderr));

    let mut load = pgbench_load(&gw, 16);
    std::thread::sleep(Duration::from_secs(2));
    // Nearly full: the gateway warns (in the log and the audit log) well before it refuses.
    let available = || -> u64 {
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(mount.path())
            .output()
            .unwrap();
        text(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let warning = mount.path().join("warning");
    // Room for a while of load; the free space is checked every 5 s.
    let leave = 96u64 << 20;
    std::fs::write(
        &warning,
        vec![0u8; (available().saturating_sub(leave)) as usize],
    )
    .unwrap();
    gw.wait_for_event("audit.disk_low", |e| e["kind"] == "audit.disk_low");
    // Full: the log can no longer take records.
    let filler = mount.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; (available() + (1 << 20)) as usize]);
    std::thread::sleep(Duration::from_secs(2));
    let refused = gw.psql_args("main", &["-c", "SELECT 'refused'"]);
    assert!(
        !refused.status.success(),
        "a new session is refused while the disk is full"
    );
    let history_while_full = history(&cluster).values().sum::<usize>();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        history(&cluster).values().sum::<usize>(),
        history_while_full,
        "nothing commits while nothing can be recorded"
    );
    let _ = load.wait();

    // Space returns: the log takes records again (after an audit.gap) and sessions work.
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&warning).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = gw.psql_args("main", &["-c", "SELECT 'back'"]);
        if out.status.success() {
            assert_eq!(text(&out.stdout).trim(), "back");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "service did not resume: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let events = gw.audit_events();
    let committed = assert_history_recorded(&cluster, &events, "disk full");
    eprintln!("disk full: {committed} committed transactions, all recorded");
    let gap = events
        .iter()
        .find(|e| e["kind"] == "audit.gap")
        .expect("an audit.gap record");
    assert!(gap["what"]["detail"]["refused_records"].as_u64().unwrap() >= 1);
    assert!(gap["what"]["detail"]["reason"]
        .as_str()
        .unwrap()
        .contains("No space left"));
    let (status, _, body) = gw.http("/healthz", None);
    assert_eq!(status, 200, "{body}");
    gw.stop();
    gw.assert_audit_verifies();
}
