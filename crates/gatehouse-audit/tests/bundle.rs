//! The examiner's bundle: made from a signed log, checked with nothing but the archive and the
//! public key, and refused when anything in it was changed — even by someone who rebuilds the
//! archive and recomputes every hash they can without the signing key.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{fast, log_path, statement};
use gatehouse_audit::bundle::{self, BundleError, Manifest, Selection};
use gatehouse_audit::checkpoint::{CheckpointOptions, CheckpointState};
use gatehouse_audit::proof::{self, InclusionProof};
use gatehouse_audit::record::{self, HashHex};
use gatehouse_audit::{AuditLog, Event, EventKind, Options, Outcome, VerifyOptions};
use gatehouse_tlog::{Signer, Verifier};
use time::OffsetDateTime;

const ORIGIN: &str = "gatehouse.test/audit";
const POLICY_A: &str = "aaaa000000000000000000000000000000000000000000000000000000000000";
const POLICY_B: &str = "bbbb000000000000000000000000000000000000000000000000000000000000";

struct Site {
    tmp: tempfile::TempDir,
    signer: Arc<Signer>,
}

/// Second `i` of the test's events: a day ahead, so the checkpoint records the writer stamps
/// with the real clock fall before the selected ranges, as they would not in a live log; the
/// ranges must still keep them, being contiguous.
fn second(i: u64) -> OffsetDateTime {
    static BASE: std::sync::OnceLock<OffsetDateTime> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| OffsetDateTime::now_utc() + time::Duration::days(1))
        + time::Duration::seconds(i as i64)
}

fn policy_loaded(sha256: &str, i: u64) -> Event {
    let mut e = Event::now(EventKind::PolicyLoaded, Outcome::success());
    e.time = second(i);
    e.what.detail = Some(serde_json::json!({"sha256": sha256, "rules": 3, "trigger": "start"}));
    e
}

/// Statement `i` decided under `policy`.
fn decided(i: u64, policy: &str) -> Event {
    let mut e = statement(i);
    e.time = second(i);
    e.what.detail = Some(serde_json::json!({"decision": "allow", "policy": policy}));
    e
}

impl Site {
    /// A log of: policy A loaded, statements 1..=39 under A, policy B loaded (at second 40),
    /// statements 41..=100 under B; a checkpoint every 10 records and at stop.
    fn new() -> Site {
        let site = Site {
            tmp: tempfile::tempdir().unwrap(),
            signer: Arc::new(Signer::from_seed(ORIGIN, &[9u8; 32]).unwrap()),
        };
        let log = AuditLog::open(&site.audit(), site.options()).unwrap();
        log.append(policy_loaded(POLICY_A, 0)).unwrap();
        for i in 1..=100 {
            let event = match i {
                40 => policy_loaded(POLICY_B, 40),
                i if i < 40 => decided(i, POLICY_A),
                i => decided(i, POLICY_B),
            };
            log.append(event).unwrap();
            if i % 10 == 0 {
                log.checkpoint_blocking().unwrap();
            }
        }
        log.close().unwrap();
        site
    }

    fn audit(&self) -> PathBuf {
        self.tmp.path().join("audit")
    }

    fn options(&self) -> Options {
        Options {
            checkpoints: Some(CheckpointOptions {
                origin: ORIGIN.into(),
                signer: Arc::clone(&self.signer),
                state_path: self.tmp.path().join("checkpoint.json"),
                interval: Duration::from_secs(3600),
                every: 1_000_000,
            }),
            ..fast()
        }
    }

    fn verify_options(&self) -> VerifyOptions {
        let path = self.tmp.path().join("checkpoint.json");
        let state = CheckpointState::load(&path).unwrap().unwrap();
        VerifyOptions {
            verifier: Some(self.verifier()),
            state: Some((path, state)),
        }
    }

    fn verifier(&self) -> Verifier {
        self.signer.verifier()
    }

    fn bundle(&self, selection: Selection) -> Result<(Manifest, PathBuf), BundleError> {
        let out = self.tmp.path().join("bundle.tar");
        let manifest = bundle::make(
            &log_path(&self.audit()),
            &self.verify_options(),
            &selection,
            &out,
        )?;
        Ok((manifest, out))
    }
}

fn at(i: u64) -> Option<OffsetDateTime> {
    Some(second(i))
}

/// The entries of a tar file, in order.
fn entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_str().unwrap().to_owned();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

fn write_entries(path: &Path, entries: &[(String, Vec<u8>)]) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, name, bytes.as_slice())
            .unwrap();
    }
    builder.finish().unwrap();
}

fn entry<'a>(entries: &'a mut [(String, Vec<u8>)], name: &str) -> &'a mut Vec<u8> {
    &mut entries.iter_mut().find(|(n, _)| n == name).unwrap().1
}

/// The bundle at `path` with `change` applied to its entries, as a new file.
fn altered(path: &Path, change: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) -> PathBuf {
    let mut all = entries(path);
    change(&mut all);
    let out = path.with_extension("altered.tar");
    write_entries(&out, &all);
    out
}

/// Re-numbers and re-chains `events` from `first_seq`, linking to `prev`: what someone with
/// the records but not the key can produce.
fn rechain(first_seq: u64, prev: &str, events: &[Event]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut prev = HashHex::parse(prev.as_bytes()).unwrap();
    for (i, event) in events.iter().enumerate() {
        prev = record::encode(&mut buf, first_seq + i as u64, &prev, event).unwrap();
    }
    buf
}

fn records(bytes: &[u8]) -> Vec<Event> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| record::decode(l).unwrap().event)
        .collect()
}

fn statement_text(e: &Event) -> Option<&str> {
    e.what.statement.as_deref()
}

#[test]
fn a_bundle_of_a_time_range_is_proven_with_only_the_key() {
    let site = Site::new();
    let (manifest, path) = site
        .bundle(Selection {
            since: at(20),
            until: at(60),
        })
        .unwrap();
    let s = &manifest.summary;
    let all = entries(&path);
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "README.md",
            "manifest.json",
            "public-key.txt",
            "checkpoint.txt",
            "proofs/first.json",
            "proofs/last.json",
            // Policy A was loaded before the range and decides statements in it.
            &format!("proofs/policy-{}.json", 1),
            "records.jsonl",
            "records.csv",
        ]
    );

    // The range runs from statement 20 to statement 59, with the checkpoint records and the
    // policy change between them, and nothing else.
    let events = records(entry(&mut all.clone(), "records.jsonl"));
    assert_eq!(
        statement_text(&events[0]),
        Some("SELECT * FROM accounts WHERE id = 20")
    );
    assert_eq!(
        statement_text(events.last().unwrap()),
        Some("SELECT * FROM accounts WHERE id = 59")
    );
    let statements = events
        .iter()
        .filter(|e| e.kind == EventKind::Statement)
        .count();
    assert_eq!(statements, 39, "20..=59 without 40, the policy change");
    assert_eq!(s.records, events.len() as u64);
    assert_eq!(s.last_seq - s.first_seq + 1, s.records);
    assert_eq!(
        s.checkpoints, 4,
        "checkpoints signed after 20, 30, 40 and 50"
    );
    assert_eq!(s.kinds["policy.loaded"], 1);
    assert_eq!(s.principals.len(), 5);
    let policies: Vec<(&str, u64)> = s
        .policies
        .iter()
        .map(|p| (p.sha256.as_str(), p.statements))
        .collect();
    assert_eq!(policies, [(POLICY_A, 20), (POLICY_B, 19)]);

    // The examiner's machine: only the file and the key.
    let examiner = tempfile::tempdir().unwrap();
    let copy = examiner.path().join("evidence.tar");
    std::fs::copy(&path, &copy).unwrap();
    let verified = bundle::check(&copy, &site.verifier(), &[]).unwrap();
    assert_eq!(verified.manifest, manifest);
    assert_eq!(verified.policies_loaded_before, [(1, POLICY_A.to_owned())]);

    // Each proof file stands alone, too.
    let first: InclusionProof =
        serde_json::from_slice(entry(&mut all.clone(), "proofs/first.json")).unwrap();
    let proven = proof::check(&first, &site.verifier()).unwrap();
    assert_eq!(proven.record.seq, s.first_seq);
    assert_eq!(proven.checkpoint.size, manifest.tree.size);

    // The README names the range and maps the requirements.
    let readme = String::from_utf8(entry(&mut all.clone(), "README.md").clone()).unwrap();
    assert!(readme.contains(&format!("seq {} to {}", s.first_seq, s.last_seq)));
    for requirement in [
        "10.2.1.1", "10.2.1.2", "10.2.1.3", "10.2.1.4", "10.2.1.5", "10.2.1.6", "10.2.1.7",
        "10.2.2", "10.3", "10.5", "FFIEC",
    ] {
        assert!(readme.contains(requirement), "README maps {requirement}");
    }
    // The CSV is the same records, one row per statement.
    let csv = String::from_utf8(entry(&mut all.clone(), "records.csv").clone()).unwrap();
    assert!(csv.contains("SELECT * FROM accounts WHERE id = 20"));
    assert!(!csv.contains("SELECT * FROM accounts WHERE id = 19"));
}

#[test]
fn without_until_the_bundle_ends_at_the_latest_checkpoint() {
    let site = Site::new();
    let (manifest, path) = site.bundle(Selection::default()).unwrap();
    assert_eq!(manifest.summary.first_seq, 1);
    assert_eq!(manifest.summary.last_seq, manifest.tree.size);
    bundle::check(&path, &site.verifier(), &[]).unwrap();
}

#[test]
fn a_range_the_latest_checkpoint_does_not_cover_is_refused() {
    let site = Site::new();
    // A record written after the final checkpoint of the last run: not yet signed.
    let log = AuditLog::open(
        &site.audit(),
        Options {
            checkpoints: None,
            ..site.options()
        },
    )
    .unwrap();
    let mut late = statement(500);
    late.time = second(500);
    log.append(late).unwrap();
    log.close().unwrap();
    let options = VerifyOptions {
        verifier: Some(site.verifier()),
        state: None,
    };
    let out = site.tmp.path().join("b.tar");
    let err = bundle::make(
        &log_path(&site.audit()),
        &options,
        &Selection {
            since: at(400),
            until: at(600),
        },
        &out,
    )
    .unwrap_err();
    assert!(matches!(err, BundleError::NotCovered { .. }), "{err}");
    assert!(!out.exists(), "no partial bundle is left behind");
    let err = bundle::make(
        &log_path(&site.audit()),
        &options,
        &Selection {
            since: at(1000),
            until: at(2000),
        },
        &out,
    )
    .unwrap_err();
    assert!(matches!(err, BundleError::Empty), "{err}");
}

#[test]
fn a_bundle_from_a_log_that_does_not_verify_is_refused() {
    let site = Site::new();
    let path = log_path(&site.audit());
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("id = 33", "id = 34", 1)).unwrap();
    let err = site.bundle(Selection::default()).unwrap_err();
    assert!(matches!(err, BundleError::LogNotIntact(_)), "{err}");
}

#[test]
fn every_alteration_of_a_bundle_is_refused_and_named() {
    let site = Site::new();
    let (manifest, path) = site
        .bundle(Selection {
            since: at(20),
            until: at(60),
        })
        .unwrap();
    let s = manifest.summary.clone();
    let key = site.verifier();
    let refused = |altered: &Path| bundle::check(altered, &key, &[]).unwrap_err().to_string();

    // A record's text changed in place: its own hash no longer holds.
    let why = refused(&altered(&path, |all| {
        let r = entry(all, "records.jsonl");
        let text = String::from_utf8(r.clone())
            .unwrap()
            .replacen("id = 33", "id = 34", 1);
        *r = text.into_bytes();
    }));
    assert!(why.contains("not intact"), "{why}");

    // A record changed and the whole run re-hashed and re-chained: not the signed tree.
    let why = refused(&altered(&path, |all| {
        let mut events = records(entry(all, "records.jsonl"));
        events[5].outcome.status = gatehouse_audit::Status::Failure;
        *entry(all, "records.jsonl") = rechain(s.first_seq, &s.first_prev, &events);
    }));
    assert!(why.contains("not the log's records"), "{why}");

    // A record deleted from the middle: a gap in seq.
    let why = refused(&altered(&path, |all| {
        let text = String::from_utf8(entry(all, "records.jsonl").clone()).unwrap();
        let kept: Vec<&str> = text.lines().filter(|l| !l.contains("id = 33\"")).collect();
        *entry(all, "records.jsonl") = format!("{}\n", kept.join("\n")).into_bytes();
    }));
    assert!(why.contains("missing or out of order"), "{why}");

    // A record deleted and the rest renumbered and re-chained (one after the range's last
    // checkpoint record, whose size would otherwise give it away): the range proof shows the
    // records are not the log's.
    let why = refused(&altered(&path, |all| {
        let mut events = records(entry(all, "records.jsonl"));
        events.retain(|e| statement_text(e) != Some("SELECT * FROM accounts WHERE id = 58"));
        *entry(all, "records.jsonl") = rechain(s.first_seq, &s.first_prev, &events);
    }));
    assert!(why.contains("not the log's records"), "{why}");

    // The last record dropped, so the range looks shorter.
    let why = refused(&altered(&path, |all| {
        let text = String::from_utf8(entry(all, "records.jsonl").clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        *entry(all, "records.jsonl") =
            format!("{}\n", lines[..lines.len() - 1].join("\n")).into_bytes();
    }));
    assert!(why.contains("not the log's records"), "{why}");

    // The summary says something the records do not.
    let why = refused(&altered(&path, |all| {
        let mut m: Manifest = serde_json::from_slice(entry(all, "manifest.json")).unwrap();
        m.summary.failures = 0;
        m.summary.principals.retain(|p| p != "user-3");
        *entry(all, "manifest.json") = serde_json::to_vec(&m).unwrap();
    }));
    assert!(why.contains("principals"), "{why}");

    // The CSV edited (a reading aid, but it must still be the records').
    let why = refused(&altered(&path, |all| {
        let csv = String::from_utf8(entry(all, "records.csv").clone()).unwrap();
        *entry(all, "records.csv") = csv.replacen("id = 33", "id = 34", 1).into_bytes();
    }));
    assert!(why.contains("records.csv"), "{why}");

    // The README reworded.
    let why = refused(&altered(&path, |all| {
        entry(all, "README.md").extend_from_slice(b"\nAll records are fine.\n");
    }));
    assert!(why.contains("README.md"), "{why}");

    // A file slipped in beside the verified ones.
    let why = refused(&altered(&path, |all| {
        all.push(("notes.txt".into(), b"unverified".to_vec()));
    }));
    assert!(why.contains("not part of a bundle"), "{why}");

    // A proof removed.
    let why = refused(&altered(&path, |all| {
        all.retain(|(n, _)| n != "proofs/last.json");
    }));
    assert!(why.contains("proofs/last.json is missing"), "{why}");

    // The checkpoint replaced by one signed with another key.
    let other = Signer::from_seed(ORIGIN, &[1u8; 32]).unwrap();
    let why = refused(&altered(&path, |all| {
        let note = String::from_utf8(entry(all, "checkpoint.txt").clone()).unwrap();
        let body = gatehouse_tlog::SignedNote::parse(&note)
            .unwrap()
            .body()
            .to_owned();
        *entry(all, "checkpoint.txt") = other.sign(&body).unwrap().to_text().into_bytes();
    }));
    assert!(why.contains("not signed by"), "{why}");

    // The whole bundle checked with another key (the examiner's key is not the log's).
    let why = bundle::check(&path, &other.verifier(), &[])
        .unwrap_err()
        .to_string();
    assert!(why.contains("public-key.txt"), "{why}");

    // Not a tar file at all.
    let junk = site.tmp.path().join("junk.tar");
    std::fs::write(&junk, b"not an archive").unwrap();
    assert!(bundle::check(&junk, &key, &[]).is_err());
}
