//! Unauthenticated clients cannot take the gateway away from everyone else: floods of failed
//! logins, idle sockets and slow handshakes from one address leave legitimate logins answered
//! within a second, and cannot make the audit log grow without bound.

use crate::harness::*;
use crate::proto::*;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A connection to `port` from the loopback address `from` (127.0.0.0/8 is all ours).
async fn connect_from(from: [u8; 4], port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::from(from), 0))?;
    socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
}

/// How long a legitimate login and first query take; panics if it fails.
fn timed_login(gw: &Gateway) -> Duration {
    let started = Instant::now();
    pg_try(&gw.conninfo(&gw.admin_key, "main")).expect("a legitimate login");
    started.elapsed()
}

fn assert_logins_prompt(gw: &Gateway, what: &str) {
    for _ in 0..3 {
        let took = timed_login(gw);
        eprintln!("{what}: a legitimate login took {took:?}");
        assert!(took < Duration::from_secs(1), "{what}: login took {took:?}");
    }
}

#[test]
fn a_flood_of_failed_logins_is_capped_and_counted() {
    let (_cluster, mut gw) = cluster_and_gateway();
    let log_before = std::fs::metadata(gw.audit_path()).unwrap().len();
    let port = gw.pg_port;
    let user = "u".repeat(9000);
    const ATTEMPTS: usize = 2000;
    let rt = runtime();
    let flood = rt.spawn(async move {
        let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..ATTEMPTS {
            let permit = limit.clone().acquire_owned().await.unwrap();
            let user = user.clone();
            tasks.spawn(async move {
                let _permit = permit;
                let Ok(mut s) = connect_from([127, 0, 0, 7], port).await else {
                    return;
                };
                let params = [("user", user.as_str()), ("database", "main")];
                let _ = s.write_all(&startup_packet(V3, &params)).await;
                let mut r = [0u8; 9];
                if s.read_exact(&mut r).await.is_err() || r[0] != b'R' {
                    return;
                }
                let wrong = format!("gh_{:043}", i);
                let _ = s.write_all(&password_message(&wrong)).await;
                let mut sink = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
            });
        }
        while tasks.join_next().await.is_some() {}
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_logins_prompt(&gw, "during a failed-login flood");
    rt.block_on(flood).unwrap();
    let grew = std::fs::metadata(gw.audit_path()).unwrap().len() - log_before;
    eprintln!("{ATTEMPTS} failed logins with 9 KB user names grew the audit log by {grew} bytes");
    assert!(grew < 200 * 1024, "the audit log grew by {grew} bytes");

    gw.stop();
    let events = gw.audit_events();
    let from = |e: &serde_json::Value| {
        e["who"]["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.7"))
    };
    let individual: Vec<_> = events
        .iter()
        .filter(|e| {
            matches!(e["kind"].as_str(), Some("auth.failure" | "protocol.error")) && from(e)
        })
        .collect();
    assert!(
        individual.len() <= 20,
        "{} individual records",
        individual.len()
    );
    for e in &individual {
        let claimed = e["who"]["claimed_user"].as_str().unwrap_or_default();
        assert!(
            claimed.len() <= 200,
            "a claimed user name of {} bytes recorded",
            claimed.len()
        );
    }
    let counted: u64 = events
        .iter()
        .filter(|e| e["kind"] == "auth.failure.summary" && e["who"]["source"] == "127.0.0.7")
        .map(|e| e["what"]["detail"]["counted"].as_u64().unwrap())
        .sum();
    assert_eq!(
        individual.len() as u64 + counted,
        ATTEMPTS as u64,
        "every failed attempt is recorded or counted"
    );
    gw.assert_audit_verifies();
}

#[test]
fn idle_sockets_from_one_address_do_not_starve_logins() {
    let (_cluster, gw) = cluster_and_gateway();
    let port = gw.pg_port;
    let rt = runtime();
    let idle: Vec<tokio::net::TcpStream> = rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..300 {
            if let Ok(s) = connect_from([127, 0, 0, 5], port).await {
                held.push(s);
            }
        }
        held
    });
    assert_eq!(idle.len(), 300);
    assert_logins_prompt(&gw, "with 300 idle sockets from one address");
    // The idle ones are closed after the first-packet timeout (3 s), not the handshake's.
    let closed = rt.block_on(async {
        let mut closed = 0;
        for mut s in idle {
            let mut b = [0u8; 64];
            match tokio::time::timeout(Duration::from_secs(8), s.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
                Ok(Ok(_)) => closed += 1,
                Err(_) => {}
            }
        }
        closed
    });
    assert_eq!(closed, 300, "every idle socket was closed");
    assert_logins_prompt(&gw, "after the idle sockets");
}

#[test]
fn slow_handshakes_from_one_address_do_not_starve_logins() {
    let (_cluster, gw) = cluster_and_gateway();
    let port = gw.pg_port;
    let rt = runtime();
    let slow = rt.spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..100 {
            tasks.spawn(async move {
                let Ok(mut s) = connect_from([127, 0, 0, 6], port).await else {
                    return;
                };
                // One byte of a startup packet every 200 ms: never finishing in time.
                for b in startup_packet(V3, &MAIN) {
                    if s.write_all(&[b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_logins_prompt(&gw, "with 100 slow handshakes from one address");
    slow.abort();
}

#[test]
fn the_admin_api_bounds_its_connections_and_audits_every_api_path() {
    let cluster = PgCluster::start();
    let gw = Gateway::builder()
        .main_connection(&cluster)
        .admin("  max_connections: 32\n  request_timeout: 2s\n  metrics_require_auth: true\n")
        .start();
    let pid = gw.pid();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let baseline = fds();
    let port = gw.admin_port;
    let rt = runtime();
    let idle: Vec<tokio::net::TcpStream> = rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..600 {
            if let Ok(s) = connect_from([127, 0, 0, 8], port).await {
                held.push(s);
            }
        }
        held
    });
    std::thread::sleep(Duration::from_millis(500));
    let during = fds();
    eprintln!("admin API: {} idle connections held by the client; gateway descriptors {baseline} -> {during}", idle.len());
    assert!(
        during <= baseline + 40,
        "descriptors {baseline} -> {during}"
    );
    // The data plane does not notice.
    assert_logins_prompt(&gw, "with 600 idle admin connections");
    // Idle admin connections are closed after the request timeout, and the API answers again.
    std::thread::sleep(Duration::from_secs(3));
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.http("/healthz", None).0 != 200 {
        assert!(Instant::now() < deadline, "the admin API did not recover");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(idle);

    // Unknown API paths are authenticated and audited like known ones.
    let (status, _, _) = gw.http("/api/v1/no-such-thing", None);
    assert_eq!(status, 401);
    let failure = gw.wait_for_event("auth.failure for an unknown path", |e| {
        e["kind"] == "auth.failure" && e["what"]["resource"] == "GET /api/v1/no-such-thing"
    });
    assert_eq!(failure["what"]["protocol"], "admin-api");
    let (status, _, _) = gw.http("/api/v1/no-such-thing", Some(&gw.admin_key));
    assert_eq!(status, 404);
    let request = gw.wait_for_event("admin.request for an unknown path", |e| {
        e["kind"] == "admin.request" && e["what"]["resource"] == "GET /api/v1/no-such-thing"
    });
    assert_eq!(request["outcome"]["code"], "404");
    // /metrics needs an admin's credential here.
    assert_eq!(gw.http("/metrics", None).0, 401);
    let (status, _, body) = gw.http("/metrics", Some(&gw.admin_key));
    assert_eq!(status, 200);
    assert!(body.contains("gatehouse_audit_available_bytes"), "{body}");
}
