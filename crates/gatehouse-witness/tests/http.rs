//! The witness's HTTP surface as any client sees it on loopback: the status codes and content
//! types the C2SP protocol names, and hostile requests refused without a crash or a change.

use std::sync::Arc;

use gatehouse_tlog::{leaf_hash, Checkpoint, Cosigner, Hash, Signer};
use gatehouse_witness::request::AddCheckpoint;
use gatehouse_witness::{server, Init, Witness};

const ORIGIN: &str = "bank.example/gatehouse";

fn log_key() -> Signer {
    Signer::from_seed(ORIGIN, &[11u8; 32]).unwrap()
}

fn note(leaves: &[Hash], size: u64) -> String {
    Checkpoint {
        origin: ORIGIN.into(),
        size,
        root: gatehouse_tlog::tree::root(leaves, size).unwrap(),
        extensions: Vec::new(),
    }
    .sign(&log_key())
    .unwrap()
    .to_text()
}

async fn serve(dir: &tempfile::TempDir) -> (String, Arc<Witness>) {
    let witness = Arc::new(
        Witness::open(
            Cosigner::from_seed("witness.example/w1", &[22u8; 32]).unwrap(),
            vec![log_key().verifier()],
            &dir.path().join("state.json"),
            Init::CreateIfMissing,
        )
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/add-checkpoint", listener.local_addr().unwrap());
    let router = server::router(Arc::clone(&witness));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, witness)
}

fn client() -> reqwest::Client {
    gatehouse_sink::http_client(None, std::time::Duration::from_secs(10)).unwrap()
}

async fn post(url: &str, body: Vec<u8>) -> (u16, String, String) {
    let response = client().post(url).body(body).send().await.unwrap();
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, kind, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_answers_as_c2sp_says() {
    let dir = tempfile::tempdir().unwrap();
    let (url, witness) = serve(&dir).await;
    let leaves: Vec<Hash> = (0..50u8).map(|i| leaf_hash(&[i])).collect();
    let first = AddCheckpoint {
        old_size: 0,
        proof: Vec::new(),
        checkpoint: note(&leaves, 20),
    };
    let (status, _, body) = post(&url, first.to_body().into_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("\u{2014} witness.example/w1 ") && body.ends_with('\n'));

    // A stale old size: 409 with the witness's size, typed as the spec says.
    let (status, kind, body) = post(&url, first.to_body().into_bytes()).await;
    assert_eq!(
        (status, kind.as_str(), body.as_str()),
        (409, "text/x.tlog.size", "20\n")
    );

    // A proof that does not hold: 422.
    let bad = AddCheckpoint {
        old_size: 20,
        proof: vec![[0u8; 32]; 3],
        checkpoint: note(&leaves, 50),
    };
    let (status, _, body) = post(&url, bad.to_body().into_bytes()).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(witness.seen(ORIGIN).unwrap().size, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (url, witness) = serve(&dir).await;
    // Over the 64 KiB bound: refused before it is parsed.
    let (status, _, _) = post(&url, vec![b'a'; 70 * 1024]).await;
    assert_eq!(status, 413);
    let (status, _, body) = post(&url, b"old 0\n\n\x00\x01\x02".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("bad request: "), "{body}");
    // Unknown routes and methods.
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let other = url.replace("/add-checkpoint", "/../state.json");
    let response = client().post(&other).body("x").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    // A thousand garbage requests in a row: still serving, still unchanged.
    for i in 0..1000u32 {
        let (status, _, _) = post(&url, format!("old {i}\nnot base64\n\n").into_bytes()).await;
        assert_eq!(status, 400);
    }
    assert!(witness.seen(ORIGIN).is_none());
    let leaves: Vec<Hash> = (0..5u8).map(|i| leaf_hash(&[i])).collect();
    let ok = AddCheckpoint {
        old_size: 0,
        proof: Vec::new(),
        checkpoint: note(&leaves, 5),
    };
    assert_eq!(post(&url, ok.to_body().into_bytes()).await.0, 200);
}
