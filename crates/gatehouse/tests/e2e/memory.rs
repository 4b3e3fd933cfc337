//! Bounded memory: gigabyte results, COPY out and COPY in stream through the gateway without
//! it holding them. The gateway under test is the debug build; its peak resident set (VmHWM)
//! must stay under 64 MiB throughout.

use crate::harness::*;
use crate::proto::{authenticated, error_fields, query_message, read_full};
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT_KIB: u64 = 64 * 1024;
const BIG_SELECT: &str = "SELECT repeat('x', 1000) FROM generate_series(1, 1000000)";

/// Samples the gateway's VmRSS every 20 ms until dropped; `stop` returns the largest sample.
struct Sampler {
    running: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let running = Arc::new(AtomicBool::new(true));
        let flag = running.clone();
        let thread = std::thread::spawn(move || {
            let mut max = 0;
            while flag.load(Ordering::Relaxed) {
                max = max.max(proc_kib(pid, "VmRSS:"));
                std::thread::sleep(Duration::from_millis(20));
            }
            max
        });
        Sampler {
            running,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.running.store(false, Ordering::Relaxed);
        self.thread.take().map(|t| t.join().unwrap()).unwrap_or(0)
    }
}

/// Runs `work` while sampling the gateway's VmRSS: its result, the largest sample and how long
/// it took.
fn sampled<T>(gw: &Gateway, work: impl FnOnce() -> T) -> (T, u64, Duration) {
    let sampler = Sampler::start(gw.pid());
    let started = Instant::now();
    let out = work();
    let took = started.elapsed();
    (out, sampler.stop(), took)
}

fn read_exactly(s: &mut TcpStream, buf: &mut [u8]) {
    match read_full(s, buf) {
        Ok(true) => {}
        Ok(false) => panic!("connection closed mid-message"),
        Err(end) => panic!("read: {end:?}"),
    }
}

/// Runs a simple query on a raw connection, discarding rows as they arrive (any size, never
/// buffering a whole message body beyond 1 MiB): (DataRow count, DataRow bytes).
fn stream_and_discard(s: &mut TcpStream, sql: &str) -> (u64, u64) {
    stream_and_discard_pausing(s, sql, None)
}

/// Same, optionally stopping to read for a while after some rows (a stalled client).
fn stream_and_discard_pausing(
    s: &mut TcpStream,
    sql: &str,
    pause: Option<(u64, Duration)>,
) -> (u64, u64) {
    s.write_all(&query_message(sql)).unwrap();
    let (mut rows, mut bytes) = (0u64, 0u64);
    let mut chunk = vec![0u8; 1024 * 1024];
    loop {
        let mut head = [0u8; 5];
        read_exactly(s, &mut head);
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        assert!(len >= 4, "bad length {len}");
        let mut left = len as usize - 4;
        let mut small = Vec::new();
        while left > 0 {
            let n = left.min(chunk.len());
            read_exactly(s, &mut chunk[..n]);
            if head[0] != b'D' && small.len() < 64 * 1024 {
                small.extend_from_slice(&chunk[..n]);
            }
            left -= n;
        }
        match head[0] {
            b'D' => {
                rows += 1;
                bytes += len as u64 - 4;
                if let Some((after, pause)) = pause {
                    if rows == after {
                        std::thread::sleep(pause);
                    }
                }
            }
            b'E' => panic!("query failed: {:?}", error_fields(&small)),
            b'Z' => return (rows, bytes),
            _ => {}
        }
    }
}

/// psql with the admin key on `main`, stopping at the first error, with `args`.
fn psql_main(gw: &Gateway, args: &[&str]) -> Command {
    let mut c = psql_command(&gw.url(&gw.admin_key, "main"));
    c.args(["-v", "ON_ERROR_STOP=1"]).args(args);
    c
}

fn report(what: &str, gw: &Gateway, baseline: u64, sampled: u64, took: Duration) -> u64 {
    let hwm = proc_kib(gw.pid(), "VmHWM:");
    eprintln!("{what}: {took:?}; gateway VmRSS baseline {baseline} KiB, sampled peak {sampled} KiB, VmHWM {hwm} KiB, now {} KiB", proc_kib(gw.pid(), "VmRSS:"));
    assert!(
        hwm < LIMIT_KIB,
        "{what}: gateway peak RSS {hwm} KiB is over {LIMIT_KIB} KiB"
    );
    hwm
}

fn warmed_up() -> (PgCluster, Gateway, u64) {
    let (cluster, gw) = cluster_and_gateway();
    assert_eq!(gw.psql("main", "SELECT 1").trim(), "1");
    let baseline = proc_kib(gw.pid(), "VmRSS:");
    (cluster, gw, baseline)
}

#[test]
fn a_1_gib_result_streams_through_in_bounded_memory() {
    let (_cluster, mut gw, baseline) = warmed_up();

    // One simple query, 1,000,000 rows of 1000 bytes, read and dropped as they come.
    let mut s = authenticated(&gw);
    let ((rows, bytes), peak, took) = sampled(&gw, || stream_and_discard(&mut s, BIG_SELECT));
    assert_eq!(rows, 1_000_000);
    assert!(bytes >= 1_000_000_000, "{bytes}");
    report(
        &format!("simple query, {bytes} bytes of rows"),
        &gw,
        baseline,
        peak,
        took,
    );
    drop(s);
    let event = gw.wait_for_statement(BIG_SELECT);
    assert_eq!(event["outcome"]["rows"], 1_000_000);

    // psql with FETCH_COUNT (a cursor, 1000 rows per FETCH), output to /dev/null.
    let (status, peak, took) = sampled(&gw, || {
        psql_main(&gw, &["-v", "FETCH_COUNT=1000", "-c", BIG_SELECT])
            .stdout(Stdio::null())
            .status()
            .unwrap()
    });
    assert!(status.success(), "psql: {status}\n{}", gw.log());
    report("psql FETCH_COUNT=1000", &gw, baseline, peak, took);

    // A stalled client: it stops reading for 3 s after 10,000 rows while the server keeps
    // producing; the gateway must push back instead of buffering.
    let mut s = authenticated(&gw);
    let ((rows, _), peak, took) = sampled(&gw, || {
        stream_and_discard_pausing(&mut s, BIG_SELECT, Some((10_000, Duration::from_secs(3))))
    });
    assert_eq!(rows, 1_000_000);
    report(
        "simple query, client stalled for 3 s",
        &gw,
        baseline,
        peak,
        took,
    );
    drop(s);

    // tokio-postgres, extended protocol: a portal fetched 10,000 rows at a time.
    let (fetched, peak, took) = sampled(&gw, || {
        current_thread_runtime().block_on(async {
            let (mut client, conn) = gw.main_client().await;
            let tx = client.transaction().await.unwrap();
            let portal = tx.bind(BIG_SELECT, &[]).await.unwrap();
            let mut fetched = 0usize;
            loop {
                let batch = tx.query_portal(&portal, 10_000).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                let last: &str = batch[batch.len() - 1].get(0);
                assert_eq!(last.len(), 1000);
                fetched += batch.len();
            }
            tx.commit().await.unwrap();
            drop(client);
            let _ = conn.await;
            fetched
        })
    });
    assert_eq!(fetched, 1_000_000);
    report(
        "tokio-postgres portal, 10,000 rows per Execute",
        &gw,
        baseline,
        peak,
        took,
    );
    assert!(gw.is_running());
}

#[test]
fn copy_to_stdout_of_1_gib_streams_through_in_bounded_memory() {
    let (_cluster, mut gw, baseline) = warmed_up();
    let sql = format!("COPY ({BIG_SELECT}) TO STDOUT");
    let (status, peak, took) = sampled(&gw, || {
        psql_main(&gw, &["-c", &sql])
            .stdout(Stdio::null())
            .status()
            .unwrap()
    });
    assert!(status.success(), "psql: {status}\n{}", gw.log());
    report("COPY TO STDOUT, ~1 GiB", &gw, baseline, peak, took);
    let event = gw.wait_for_statement(&sql);
    assert_eq!(event["outcome"]["rows"], 1_000_000);
    assert!(gw.is_running());
}

#[test]
fn copy_from_stdin_of_200_mb_streams_through_in_bounded_memory() {
    const LINES: usize = 200_000;
    let (cluster, mut gw, baseline) = warmed_up();
    cluster.psql_admin("CREATE UNLOGGED TABLE sink (t text)");
    let sql = "COPY sink FROM STDIN";
    let (out, peak, took) = sampled(&gw, || {
        let mut child = psql_main(&gw, &["-c", sql])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let mut line = vec![b'y'; 999];
            line.push(b'\n');
            let block: Vec<u8> = std::iter::repeat_n(line, 1000).flatten().collect();
            for _ in 0..LINES / 1000 {
                stdin.write_all(&block)?;
            }
            Ok::<_, std::io::Error>(())
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().expect("feeding psql");
        out
    });
    assert!(
        out.status.success(),
        "psql: {}\n{}",
        text(&out.stderr),
        gw.log()
    );
    assert_eq!(text(&out.stdout).trim(), format!("COPY {LINES}"));
    report("COPY FROM STDIN, 200 MB", &gw, baseline, peak, took);
    let event = gw.wait_for_statement(sql);
    assert_eq!(event["outcome"]["rows"], LINES);
    assert_eq!(
        gw.psql("main", "SELECT count(*), sum(length(t)) FROM sink")
            .trim(),
        format!("{LINES}|{}", LINES * 999)
    );
    cluster.psql_admin("DROP TABLE sink");
    assert!(gw.is_running());
}

#[test]
fn a_single_256_mib_row_streams_through_in_bounded_memory() {
    let (_cluster, mut gw, baseline) = warmed_up();
    let mut s = authenticated(&gw);
    let ((rows, bytes), peak, took) = sampled(&gw, || {
        stream_and_discard(&mut s, "SELECT repeat('x', 256 * 1024 * 1024)")
    });
    assert_eq!(rows, 1);
    assert!(bytes > 256 * 1024 * 1024, "{bytes}");
    report("one 256 MiB row", &gw, baseline, peak, took);
    assert!(gw.is_running());
}
