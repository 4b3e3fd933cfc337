//! Signed checkpoints end to end: the key the gateway creates, `audit verify --pubkey`, an
//! inclusion proof an examiner checks with nothing but the proof and the public key, and a
//! cut log that the gateway refuses to extend until an operator acknowledges it.

use crate::harness::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;

pub(crate) fn public_key(gateway: &Gateway) -> String {
    let out = gateway.cli(&["audit", "public-key"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

fn verify_with_key(gateway: &Gateway, key: &str) -> std::process::Output {
    gateway.cli(&["audit", "verify", "--pubkey", key])
}

#[test]
fn the_gateway_signs_its_log_and_a_record_is_proven_offline() {
    let (_cluster, mut gateway) = cluster_and_gateway();
    let key = public_key(&gateway);
    assert!(
        key.contains("/gatehouse-audit+"),
        "a vkey named after the log: {key}"
    );
    let key_file = gateway.data_dir().join("signing").join("audit.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the signing key is private");
    let created = gateway.events_of_kind("audit.key_created");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["what"]["detail"]["public_key"], key.as_str());
    // The secret half is nowhere in the log or the gateway's output.
    let secret = std::fs::read_to_string(&key_file).unwrap();
    // `PRIVATE+KEY+<name>+<id>+<base64>`: base64 itself may hold '+', so take the whole field.
    let secret = secret.trim().splitn(5, '+').nth(4).unwrap().to_owned();
    assert!(
        secret.len() >= 44,
        "the whole key field: {} chars",
        secret.len()
    );
    assert!(!std::fs::read_to_string(gateway.audit_path())
        .unwrap()
        .contains(&secret));
    assert!(!gateway.log().contains(&secret));

    gateway.psql("main", "SELECT 'ledger entry 42'");
    gateway.stop();
    let out = verify_with_key(&gateway, &key);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}{}", text(&out.stderr));
    assert!(report.contains(&format!("signed by {key}")), "{report}");
    assert!(
        report.contains("matches the log"),
        "the kept checkpoint: {report}"
    );

    let statement = gateway.wait_for_statement("SELECT 'ledger entry 42'");
    let seq = statement["seq"].as_u64().unwrap().to_string();
    let proof_file = gateway.dir.path().join("proof.json");
    let out = gateway.cli(&[
        "audit",
        "prove",
        &seq,
        "--out",
        proof_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // An examiner's machine: only the proof and the key, no config, no data directory.
    let examiner = tempfile::tempdir().unwrap();
    let copy = examiner.path().join("proof.json");
    std::fs::copy(&proof_file, &copy).unwrap();
    let check = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args([
                "audit",
                "verify-proof",
                file.to_str().unwrap(),
                "--pubkey",
                &key,
            ])
            .current_dir(examiner.path())
            .env_remove("GATEHOUSE_CONFIG")
            .output()
            .unwrap()
    };
    let out = check(&copy);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(
        said.contains(&format!("proof holds: record seq {seq} (statement")),
        "{said}"
    );

    // The same proof with the statement changed does not hold.
    let mut proof: Value = serde_json::from_slice(&std::fs::read(&copy).unwrap()).unwrap();
    let record = proof["record"]
        .as_str()
        .unwrap()
        .replace("ledger entry 42", "ledger entry 43");
    proof["record"] = Value::String(record);
    std::fs::write(&copy, serde_json::to_vec(&proof).unwrap()).unwrap();
    let out = check(&copy);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("PROOF DOES NOT HOLD"),
        "{}",
        text(&out.stderr)
    );

    // A clean stop ends with the final checkpoint after `gateway.stop`; the next start
    // continues the tree from the kept checkpoint and does not take it for a crash.
    gateway.restart();
    gateway.stop();
    assert!(gateway.events_of_kind("gateway.unclean_stop").is_empty());
    let starts = gateway.events_of_kind("gateway.start");
    assert_eq!(
        starts[1]["what"]["detail"]["checkpoints"]["resumed"]["from"],
        "kept checkpoint"
    );
    let out = verify_with_key(&gateway, &key);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The first run's final checkpoint is a prefix of the second run's: proven offline.
    let first = gateway.events_of_kind("audit.checkpoint")[0]["what"]["detail"]["size"]
        .as_u64()
        .unwrap()
        .to_string();
    let consistency = gateway.dir.path().join("consistency.json");
    let out = gateway.cli(&[
        "audit",
        "prove",
        "--consistency-from",
        &first,
        "--out",
        consistency.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = check(&consistency);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains(&format!("at tree size {first} ")), "{said}");
    assert!(said.contains("is a prefix of tree size"), "{said}");
}

#[test]
fn a_cut_log_is_refused_at_start_until_an_operator_acknowledges_it() {
    let (_cluster, mut gateway) = cluster_and_gateway();
    let key = public_key(&gateway);
    for i in 0..3 {
        gateway.psql("main", &format!("SELECT {i}"));
    }
    gateway.stop();
    let log = std::fs::read_to_string(gateway.audit_path()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let kept = lines[..lines.len() - 6].join("\n") + "\n";
    std::fs::write(gateway.audit_path(), kept).unwrap();

    let out = verify_with_key(&gateway, &key);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("NOT INTACT") && said.contains("were removed"),
        "{said}"
    );

    let refused = gateway.restart_refused();
    assert!(refused.contains("REFUSING TO START"), "{refused}");
    assert!(refused.contains("gatehouse audit acknowledge"), "{refused}");

    let out = gateway.cli(&[
        "audit",
        "acknowledge",
        "--reason",
        "restored from backup, INC-7",
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let acks = gateway.events_of_kind("audit.acknowledged");
    assert_eq!(acks.len(), 1);
    let detail = &acks[0]["what"]["detail"];
    assert_eq!(detail["reason"], "restored from backup, INC-7");
    assert!(
        detail["problem"].as_str().unwrap().contains("were removed"),
        "{detail}"
    );
    assert!(detail["rejected_checkpoint"]["note"].as_str().is_some());

    gateway.restart();
    gateway.psql("main", "SELECT 'after the acknowledgement'");
    gateway.stop();
    let out = verify_with_key(&gateway, &key);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(
        said.contains("WARNING: at seq"),
        "the acknowledgement stays visible: {said}"
    );
}
