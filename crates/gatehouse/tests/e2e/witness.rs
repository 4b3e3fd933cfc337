//! Witnesses end to end: two gateways, each witnessed by a `gatehouse witness serve` process
//! run by the other site; each log keeps its witness's cosignatures, each examiner's bundle is
//! proven witnessed with the witness's key alone; and a log that was cut and acknowledged on
//! its own host is still caught by the witness that saw it before.

use crate::checkpoints::public_key;
use crate::harness::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// A running `gatehouse witness serve`, killed on drop.
struct WitnessProcess {
    child: Child,
    log: PathBuf,
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gatehouse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .env_remove("GATEHOUSE_CONFIG")
        .output()
        .unwrap()
}

/// Creates the witness's key and returns its public key.
fn witness_key(dir: &Path, name: &str) -> String {
    let key = dir.join("witness.key");
    let out = gatehouse(&[
        "witness",
        "public-key",
        "--name",
        name,
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

fn start_witness(dir: &Path, name: &str, port: u16, log_keys: &[&str]) -> WitnessProcess {
    let log = dir.join("witness.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.args(["witness", "serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--name", name, "--key"])
        .arg(dir.join("witness.key"))
        .arg("--state")
        .arg(dir.join("witness-state.json"))
        .arg("--init")
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    for key in log_keys {
        cmd.args(["--log", key]);
    }
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "witness did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    WitnessProcess { child, log }
}

fn audit_section(origin: &str, witness_url: &str, witness_key: &str) -> String {
    format!(
        "audit:\n  checkpoints:\n    origin: {origin}\n  witnesses:\n    - url: {witness_url}\n      key: {witness_key}\n      timeout: 2s\n"
    )
}

/// Asks for a checkpoint and waits until the witness's answer about it is in the log.
fn checkpoint_and_wait(gateway: &Gateway, kind: &str) -> Value {
    let out = gateway.cli(&["audit", "checkpoint"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let latest = gateway.events_of_kind("audit.checkpoint");
    let size = latest.last().unwrap()["what"]["detail"]["size"].clone();
    gateway.wait_for_event(kind, |e| {
        e["kind"] == kind && e["what"]["detail"]["size"] == size
    })
}

/// `verify-bundle FILE --pubkey LOG [--witness-key W]`, on a machine with nothing else.
fn verify_bundle(file: &Path, log_key: &str, witness_key: Option<&str>) -> Output {
    let mut args = vec![
        "audit",
        "verify-bundle",
        file.to_str().unwrap(),
        "--pubkey",
        log_key,
    ];
    if let Some(key) = witness_key {
        args.extend(["--witness-key", key]);
    }
    gatehouse(&args)
}

fn bundle(gateway: &Gateway, name: &str) -> PathBuf {
    let path = gateway.dir.path().join(name);
    let out = gateway.cli(&["audit", "bundle", "--out", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    path
}

#[test]
fn two_sites_witness_each_other_and_each_bundle_is_proven_witnessed() {
    let cluster = PgCluster::start();
    let (wa_dir, wb_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (wa_name, wb_name) = ("site-a.example/witness", "site-b.example/witness");
    let (wa_key, wb_key) = (
        witness_key(wa_dir.path(), wa_name),
        witness_key(wb_dir.path(), wb_name),
    );
    let (wa_port, wb_port) = (free_port(), free_port());
    // Site A's gateway is witnessed by site B's witness, and the other way round.
    let mut a = Gateway::builder()
        .main_connection(&cluster)
        .top(&audit_section(
            "site-a.example/gatehouse",
            &format!("http://127.0.0.1:{wb_port}"),
            &wb_key,
        ))
        .start();
    let mut b = Gateway::builder()
        .main_connection(&cluster)
        .top(&audit_section(
            "site-b.example/gatehouse",
            &format!("http://127.0.0.1:{wa_port}"),
            &wa_key,
        ))
        .start();
    let (log_a, log_b) = (public_key(&a), public_key(&b));
    assert!(log_a.starts_with("site-a.example/gatehouse+"), "{log_a}");

    // Before its witness runs, A's checkpoint is recorded as not witnessed, with why.
    a.psql("main", "SELECT 'site a, before its witness ran'");
    let failed = checkpoint_and_wait(&a, "audit.witness_failed");
    assert!(
        failed["outcome"]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot reach the witness"),
        "{failed}"
    );

    let wa = start_witness(wa_dir.path(), wa_name, wa_port, &[&log_b]);
    let wb = start_witness(wb_dir.path(), wb_name, wb_port, &[&log_a]);
    for round in 0..2 {
        a.psql("main", &format!("SELECT 'site a, round {round}'"));
        b.psql("main", &format!("SELECT 'site b, round {round}'"));
        let at_a = checkpoint_and_wait(&a, "audit.witnessed");
        let at_b = checkpoint_and_wait(&b, "audit.witnessed");
        assert_eq!(at_a["what"]["detail"]["witness"], wb_key.as_str());
        assert_eq!(at_b["what"]["detail"]["witness"], wa_key.as_str());
    }
    // An operator sees each witness's progress in /metrics.
    let (status, _, metrics) = a.http("/metrics", None);
    assert_eq!(status, 200);
    let cosigned = metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "gatehouse_witness_cosigned_size{{witness=\"{wb_name}\"}} "
            ))
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    let size: u64 = cosigned.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(size > 0, "{cosigned}");
    assert!(
        metrics.contains(&format!("gatehouse_witness_ok{{witness=\"{wb_name}\"}} 1")),
        "{metrics}"
    );
    a.stop();
    b.stop();
    // The witness records are ordinary records: both logs still verify, and with the witness's
    // key, verify checks every cosignature the log holds.
    for (gateway, key, witness) in [(&a, &log_a, &wb_key), (&b, &log_b, &wa_key)] {
        let out = gateway.cli(&["audit", "verify", "--pubkey", key, "--witness-key", witness]);
        let said = text(&out.stdout);
        assert!(out.status.success(), "{said}{}", text(&out.stderr));
        assert!(said.contains(&format!("witness {witness}: ")), "{said}");
        assert!(said.contains("cosignature(s) verify"), "{said}");
    }
    // The other site's witness never cosigned A's log.
    let out = a.cli(&[
        "audit",
        "verify",
        "--pubkey",
        &log_a,
        "--witness-key",
        &wa_key,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("NOT WITNESSED"),
        "{}",
        text(&out.stdout)
    );
    // A's log also says its first checkpoint could not be witnessed.
    let out = a.cli(&["audit", "verify", "--pubkey", &log_a]);
    assert!(
        text(&out.stdout).contains("witness failures recorded: 1"),
        "{}",
        text(&out.stdout)
    );

    let desk = tempfile::tempdir().unwrap();
    let evidence = desk.path().join("site-a.tar");
    std::fs::copy(bundle(&a, "a.tar"), &evidence).unwrap();
    let out = verify_bundle(&evidence, &log_a, Some(&wb_key));
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.starts_with("PROVEN: "), "{said}");
    assert!(
        said.contains(&format!("Witnessed by {wb_name} at ")),
        "{said}"
    );
    assert!(
        said.contains("which the signed tree extends (proven)"),
        "{said}"
    );

    // The wrong witness's key: the bundle is proven, but not witnessed by that key.
    let out = verify_bundle(&evidence, &log_a, Some(&wa_key));
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains(&format!("NOT witnessed by {wa_key}")),
        "{}",
        text(&out.stdout)
    );
    // Without witness keys, the cosigners are named but not claimed as checked.
    let out = verify_bundle(&evidence, &log_a, None);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains(&format!(
            "Also carries cosignature lines naming {wb_name} (not checked"
        )),
        "{}",
        text(&out.stdout)
    );

    let evidence_b = desk.path().join("site-b.tar");
    std::fs::copy(bundle(&b, "b.tar"), &evidence_b).unwrap();
    let out = verify_bundle(&evidence_b, &log_b, Some(&wa_key));
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains(&format!("Witnessed by {wa_name} at ")));
    drop((wa, wb));
}

#[test]
fn a_log_cut_and_acknowledged_on_its_host_is_still_caught_by_its_witness() {
    let cluster = PgCluster::start();
    let w_dir = tempfile::tempdir().unwrap();
    let w_name = "elsewhere.example/witness";
    let w_key = witness_key(w_dir.path(), w_name);
    let port = free_port();
    let mut gateway = Gateway::builder()
        .main_connection(&cluster)
        .top(&audit_section(
            "bank.example/gatehouse",
            &format!("http://127.0.0.1:{port}"),
            &w_key,
        ))
        .start();
    let key = public_key(&gateway);
    let witness = start_witness(w_dir.path(), w_name, port, &[&key]);
    for i in 0..3 {
        gateway.psql("main", &format!("SELECT 'witnessed {i}'"));
    }
    let witnessed = checkpoint_and_wait(&gateway, "audit.witnessed");
    let seen = witnessed["what"]["detail"]["size"].as_u64().unwrap();
    gateway.stop();

    // Someone with the host cuts the log's tail and acknowledges it: the gateway accepts.
    let log = std::fs::read_to_string(gateway.audit_path()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let cut = lines.len() - 12;
    assert!(
        (cut as u64) < seen,
        "the cut must reach into what was witnessed"
    );
    std::fs::write(gateway.audit_path(), lines[..cut].join("\n") + "\n").unwrap();
    let out = gateway.cli(&["audit", "acknowledge", "--reason", "nothing to see"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    gateway.restart();
    for i in 0..20 {
        gateway.psql("main", &format!("SELECT 'after the cut {i}'"));
    }

    // The witness did not forget: the new, longer history is not an extension of the one it
    // cosigned, so it refuses (422), and the log says so.
    let out = gateway.cli(&["audit", "checkpoint"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let failed = gateway.wait_for_event("audit.witness_failed with 422 after the cut", |e| {
        e["kind"] == "audit.witness_failed" && e["what"]["detail"]["status"] == 422
    });
    let reason = failed["outcome"]["reason"].as_str().unwrap();
    assert!(reason.contains("not consistent"), "{reason}");
    let after_restart = gateway.events_of_kind("gateway.start").last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    assert!(
        gateway
            .events_of_kind("audit.witnessed")
            .iter()
            .all(|e| e["seq"].as_u64().unwrap() < after_restart),
        "a cut log was cosigned"
    );
    let said = std::fs::read_to_string(&witness.log).unwrap();
    assert!(said.contains("not consistent"), "{said}");
    drop(witness);
}
