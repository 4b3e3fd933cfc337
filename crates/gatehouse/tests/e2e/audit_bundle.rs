//! The examiner's bundle end to end: made from a real gateway's log, unpacked with the
//! system's `tar`, proven with nothing but the file and the public key, and refused once a
//! record in it is edited and the archive rebuilt.

use crate::checkpoints::public_key;
use crate::harness::*;
use std::path::Path;
use std::process::{Command, Output};
use time::format_description::well_known::Rfc3339;

fn now() -> String {
    time::OffsetDateTime::now_utc().format(&Rfc3339).unwrap()
}

/// Runs the CLI on a machine with no configuration and no data directory.
fn examiner(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .current_dir(dir)
        .env_remove("GATEHOUSE_CONFIG")
        .output()
        .unwrap()
}

/// `gatehouse audit bundle --since S --until U --out FILE` on the gateway's host.
fn make_bundle(gateway: &Gateway, since: &str, until: &str, out: &Path) -> Output {
    gateway.cli(&[
        "audit",
        "bundle",
        "--since",
        since,
        "--until",
        until,
        "--out",
        out.to_str().unwrap(),
    ])
}

fn tar(dir: &Path, args: &[&str]) {
    let out = Command::new("tar")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar {args:?}: {}", text(&out.stderr));
}

#[test]
fn an_examiner_proves_a_range_of_records_from_the_bundle_alone() {
    let (_cluster, mut gateway) = cluster_and_gateway();
    let key = public_key(&gateway);
    gateway.psql("main", "SELECT 'before the range'");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let since = now();
    gateway.psql("main", "SELECT 'in the range, first'");
    gateway.psql("main", "SELECT 'in the range, second'");
    let until = now();
    std::thread::sleep(std::time::Duration::from_millis(20));
    gateway.psql("main", "SELECT 'after the range'");
    gateway.stop();

    let bundle = gateway.dir.path().join("evidence.tar");
    let out = make_bundle(&gateway, &since, &until, &bundle);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let desk = tempfile::tempdir().unwrap();
    let copy = desk.path().join("evidence.tar");
    std::fs::copy(&bundle, &copy).unwrap();
    let out = examiner(
        desk.path(),
        &["audit", "verify-bundle", "evidence.tar", "--pubkey", &key],
    );
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.starts_with("PROVEN: "), "{said}");
    assert!(said.contains("complete and unaltered"), "{said}");
    assert!(said.contains(&format!("is signed by {key}")), "{said}");

    // What the examiner reads: the records of the range and nothing outside it.
    let files = desk.path().join("files");
    std::fs::create_dir(&files).unwrap();
    tar(&files, &["-xf", "../evidence.tar"]);
    let records = std::fs::read_to_string(files.join("records.jsonl")).unwrap();
    assert!(records.contains("in the range, first"));
    assert!(records.contains("in the range, second"));
    assert!(!records.contains("before the range"));
    assert!(!records.contains("after the range"));
    let csv = std::fs::read_to_string(files.join("records.csv")).unwrap();
    assert!(csv.contains("in the range, second"), "{csv}");
    let readme = std::fs::read_to_string(files.join("README.md")).unwrap();
    assert!(readme.contains("10.2.1.1") && readme.contains("FFIEC"));
    assert_eq!(
        std::fs::read_to_string(files.join("public-key.txt"))
            .unwrap()
            .trim(),
        key
    );
    // Each proof file also holds on its own.
    let out = examiner(
        &files,
        &[
            "audit",
            "verify-proof",
            "proofs/last.json",
            "--pubkey",
            &key,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let names = [
        "README.md",
        "manifest.json",
        "public-key.txt",
        "checkpoint.txt",
        "proofs",
        "records.jsonl",
        "records.csv",
    ];
    let rebuild = |to: &str| {
        let mut args = vec!["-cf", to];
        args.extend(names);
        tar(&files, &args);
    };
    // Unpacked and packed again as it was, the bundle still proves what it did.
    rebuild("../repacked.tar");
    let out = examiner(
        desk.path(),
        &["audit", "verify-bundle", "repacked.tar", "--pubkey", &key],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A statement edited and the archive rebuilt: not proven.
    let edited = records.replace("in the range, first", "in the range, 1st!");
    std::fs::write(files.join("records.jsonl"), edited).unwrap();
    rebuild("../edited.tar");
    let out = examiner(
        desk.path(),
        &["audit", "verify-bundle", "edited.tar", "--pubkey", &key],
    );
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("NOT PROVEN") && said.contains("not intact"),
        "{said}"
    );
}

#[test]
fn an_admin_checkpoint_lets_a_bundle_cover_a_running_gateways_latest_records() {
    let (_cluster, gateway) = cluster_and_gateway();
    let key = public_key(&gateway);
    let since = now();
    gateway.psql("main", "SELECT 'just now'");
    let until = now();
    let bundle = gateway.dir.path().join("now.tar");
    let make = || make_bundle(&gateway, &since, &until, &bundle);
    // Nothing has signed the statement yet (checkpoints come every 10 s): refused, saying
    // how to get one now.
    let out = make();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ask for one now with `gatehouse audit checkpoint`"),
        "{}",
        text(&out.stderr)
    );

    // Only an admin may ask for a checkpoint; the refusal is audited.
    let user = gateway.create_key("auditor", &["readers"]);
    let out = gateway.cli_as(&user, &["audit", "checkpoint"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("admin"), "{}", text(&out.stderr));
    let refused = gateway.wait_for_event("admin.request", |e| {
        e["what"]["resource"]
            .as_str()
            .is_some_and(|r| r.ends_with("/audit/checkpoint"))
            && e["outcome"]["status"] == "failure"
    });
    assert_eq!(refused["who"]["subject"], "key:auditor");

    let out = gateway.cli(&["audit", "checkpoint"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("signed checkpoint of records 1.."),
        "{}",
        text(&out.stdout)
    );
    let out = make();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = examiner(
        gateway.dir.path(),
        &["audit", "verify-bundle", "now.tar", "--pubkey", &key],
    );
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.starts_with("PROVEN: "), "{said}");
    let files = gateway.dir.path().join("now");
    std::fs::create_dir(&files).unwrap();
    tar(&files, &["-xf", "../now.tar"]);
    let records = std::fs::read_to_string(files.join("records.jsonl")).unwrap();
    assert!(records.contains("just now"));
}
