//! The gateway's witness client against a real witness over HTTP on loopback: every checkpoint
//! of a real audit log is cosigned and the cosignature kept in the log; a witness that is down,
//! or that holds a size the log was cut below, is recorded as such; a witness's own answers do
//! not keep an idle log checkpointing.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_audit::checkpoint::CheckpointOptions;
use gatehouse_audit::event::{Event, EventKind, Outcome};
use gatehouse_audit::{AuditLog, FsyncMode, Options};
use gatehouse_tlog::{Cosigner, SignedNote, Signer};
use gatehouse_witness::{client, server, Init, Witness, WitnessTarget, WitnessedDetail};
use serde_json::Value;
use tokio::sync::watch;

const ORIGIN: &str = "bank.example/gatehouse";

fn log_key() -> Signer {
    Signer::from_seed(ORIGIN, &[11u8; 32]).unwrap()
}

fn cosigner() -> Cosigner {
    Cosigner::from_seed("witness.example/w1", &[22u8; 32]).unwrap()
}

fn open_log(dir: &Path) -> AuditLog {
    let options = Options {
        fsync: FsyncMode::Never,
        low_space_bytes: 0,
        checkpoints: Some(CheckpointOptions {
            origin: ORIGIN.into(),
            signer: Arc::new(log_key()),
            state_path: dir.join("checkpoint.json"),
            // Long: the test asks for each checkpoint, or counts the ones that happen alone.
            interval: Duration::from_millis(300),
            every: 1_000_000,
        }),
        ..Options::default()
    };
    AuditLog::open(&dir.join("audit"), options).unwrap()
}

/// Serves a witness on a free loopback port until the returned sender is dropped.
async fn serve_witness(state: &Path) -> (String, tokio::task::JoinHandle<()>) {
    let witness = Arc::new(
        Witness::open(
            cosigner(),
            vec![log_key().verifier()],
            state,
            Init::CreateIfMissing,
        )
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, server::router(witness))
            .await
            .unwrap();
    });
    (url, task)
}

fn target(url: &str) -> WitnessTarget {
    WitnessTarget {
        url: url.to_owned(),
        key: cosigner().verifier(),
        timeout: Duration::from_secs(2),
        ca_file: None,
    }
}

fn records(log: &AuditLog) -> Vec<Value> {
    std::fs::read_to_string(log.path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of_kind(log: &AuditLog, kind: &str) -> Vec<Value> {
    records(log)
        .into_iter()
        .filter(|r| r["kind"] == kind)
        .collect()
}

async fn wait_for(log: &AuditLog, kind: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = of_kind(log, kind);
        if found.len() >= count {
            return found;
        }
        assert!(Instant::now() < deadline, "no {count} {kind} records");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn stop_clients(stop: watch::Sender<bool>, clients: client::Clients) {
    let _ = stop.send(true);
    for t in clients.tasks {
        t.await.unwrap();
    }
}

fn append(log: &AuditLog, n: usize) {
    for _ in 0..n {
        log.append(Event::now(EventKind::AdminRequest, Outcome::success()))
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_checkpoint_is_cosigned_and_the_cosignature_is_kept_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _server) = serve_witness(&dir.path().join("witness.json")).await;
    let log = open_log(dir.path());
    let (stop, stopped) = watch::channel(false);
    let clients = client::spawn(log.clone(), vec![target(&url)], stopped).unwrap();

    for round in 1..=3usize {
        append(&log, 50 * round);
        let checkpoint = log.checkpoint().await.unwrap();
        // A periodic checkpoint may land beside the one asked for; each is cosigned.
        let deadline = Instant::now() + Duration::from_secs(20);
        let detail: WitnessedDetail = loop {
            let found = of_kind(&log, "audit.witnessed")
                .into_iter()
                .find(|w| w["what"]["detail"]["size"] == checkpoint.size);
            if let Some(w) = found {
                break serde_json::from_value(w["what"]["detail"].clone()).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "size {} not cosigned",
                checkpoint.size
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        assert_eq!(detail.size, checkpoint.size);
        assert_eq!(detail.root, checkpoint.root);
        assert_eq!(detail.witness, cosigner().verifier().to_string());
        // The kept line, appended to the log's own checkpoint, verifies under the witness key.
        let note =
            SignedNote::parse(format!("{}{}\n", checkpoint.note, detail.cosignature)).unwrap();
        let cosigned = cosigner().verifier().verify(&note).unwrap();
        assert_eq!(cosigned.timestamp, detail.timestamp);
    }
    assert!(of_kind(&log, "audit.witness_failed").is_empty());
    let status = clients.status[0].snapshot();
    assert!(status.ok && status.failures == 0, "{status:?}");
    assert_eq!(status.name, "witness.example/w1");
    assert_eq!(status.cosigned_size, log.latest_checkpoint().unwrap().size);

    // Idle: the witness's answers alone do not call for more checkpoints.
    let before = of_kind(&log, "audit.checkpoint").len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(of_kind(&log, "audit.checkpoint").len(), before);

    stop_clients(stop, clients).await;
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_that_is_down_is_recorded_and_catches_up_with_one_proof_later() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let log = open_log(dir.path());
    let (stop, stopped) = watch::channel(false);
    let clients = client::spawn(log.clone(), vec![target(&dead)], stopped).unwrap();
    append(&log, 20);
    let checkpoint = log.checkpoint().await.unwrap();
    let failed = wait_for(&log, "audit.witness_failed", 1).await;
    let failure = &failed[0];
    assert_eq!(failure["outcome"]["status"], "failure");
    assert_eq!(failure["what"]["detail"]["size"], checkpoint.size);
    assert!(
        failure["outcome"]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot reach the witness"),
        "{failure}"
    );
    let status = clients.status[0].snapshot();
    assert!(!status.ok && status.failures >= 1, "{status:?}");
    stop_clients(stop, clients).await;

    // The witness comes up; a restarted client learns its size (0) and submits the latest.
    let (url, _server) = serve_witness(&dir.path().join("witness.json")).await;
    let (stop, stopped) = watch::channel(false);
    let clients = client::spawn(log.clone(), vec![target(&url)], stopped).unwrap();
    append(&log, 5);
    let latest = log.checkpoint().await.unwrap();
    // It submits the latest checkpoint it finds (from nothing), and each one after by a
    // proof; the one the test asked for ends up cosigned, and nothing fails any more.
    let deadline = Instant::now() + Duration::from_secs(20);
    let sizes = loop {
        let sizes: Vec<u64> = of_kind(&log, "audit.witnessed")
            .iter()
            .map(|w| w["what"]["detail"]["size"].as_u64().unwrap())
            .collect();
        if sizes.contains(&latest.size) {
            break sizes;
        }
        assert!(Instant::now() < deadline, "{sizes:?}, not {}", latest.size);
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(sizes.iter().all(|s| *s > checkpoint.size), "{sizes:?}");
    assert_eq!(of_kind(&log, "audit.witness_failed").len(), 1);
    stop_clients(stop, clients).await;
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_below_what_the_witness_cosigned_is_named_as_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("witness.json");
    let (url, _server) = serve_witness(&state).await;
    let log = open_log(dir.path());
    let (stop, stopped) = watch::channel(false);
    let clients = client::spawn(log.clone(), vec![target(&url)], stopped).unwrap();
    append(&log, 100);
    let big = log.checkpoint().await.unwrap();
    wait_for(&log, "audit.witnessed", 1).await;
    stop_clients(stop, clients).await;
    log.shutdown().await.unwrap();

    // An insider replaces the log and its kept checkpoint with a shorter history, signed with
    // the real key (they hold the host): the gateway alone could not tell.
    let other = tempfile::tempdir().unwrap();
    let forged = open_log(other.path());
    append(&forged, 10);
    forged.checkpoint().await.unwrap();
    let (stop, stopped) = watch::channel(false);
    let clients = client::spawn(forged.clone(), vec![target(&url)], stopped).unwrap();
    let failed = wait_for(&forged, "audit.witness_failed", 1).await;
    let reason = failed[0]["outcome"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("the witness cosigned size {}", big.size))
            && reason.contains("cut or rolled back"),
        "{reason}"
    );
    assert!(of_kind(&forged, "audit.witnessed").is_empty());
    stop_clients(stop, clients).await;
    forged.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_that_lost_its_state_is_named_not_trusted_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("witness.json");
    let log = open_log(dir.path());
    {
        let (url, server) = serve_witness(&state).await;
        let (stop, stopped) = watch::channel(false);
        let clients = client::spawn(log.clone(), vec![target(&url)], stopped).unwrap();
        append(&log, 30);
        log.checkpoint().await.unwrap();
        wait_for(&log, "audit.witnessed", 1).await;
        stop_clients(stop, clients).await;
        server.abort();
        let _ = server.await;
    }
    // The witness's state is gone and it is started as new: it would accept anything now.
    std::fs::remove_file(&state).unwrap();
    let (url, _server) = serve_witness(&state).await;
    let (stop, stopped) = watch::channel(false);
    let clients = client::spawn(log.clone(), vec![target(&url)], stopped).unwrap();
    append(&log, 5);
    log.checkpoint().await.unwrap();
    let failed = wait_for(&log, "audit.witness_failed", 1).await;
    let reason = failed[0]["outcome"]["reason"].as_str().unwrap();
    assert!(reason.contains("lost or rolled back its state"), "{reason}");
    assert_eq!(of_kind(&log, "audit.witnessed").len(), 1);
    stop_clients(stop, clients).await;
    log.shutdown().await.unwrap();
}
