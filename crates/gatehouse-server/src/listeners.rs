//! Thread-per-core serving for the PostgreSQL listener.
//!
//! One listening socket is bound normally (so a port already in use fails the start, and no
//! other process can share it). An acceptor thread takes connections and hands them in turn to
//! worker threads, each running a single-threaded runtime: a session's sockets, relay and
//! wake-ups then all live on one thread (no work stealing, no cross-thread wake-ups on the
//! statement path), and sessions are spread evenly. Everything sessions share (the gate, the
//! audit log, the cancel registry) is thread-safe.

use anyhow::Context;
use gatehouse_postgres::PgGateway;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};

/// Binds `addr` and starts the acceptor and `workers` serving threads. Must be called inside a
/// Tokio runtime (the socket is created there, then handed over). Returns the bound address
/// and the threads, which end once the gateway's shutdown has been served.
pub fn spawn_postgres(
    gateway: Arc<PgGateway>,
    addr: SocketAddr,
    workers: usize,
    grace: Duration,
) -> anyhow::Result<(SocketAddr, Vec<JoinHandle<()>>)> {
    let listener =
        bind(addr).with_context(|| format!("binding the PostgreSQL listener on {addr}"))?;
    let bound = listener.local_addr()?;
    let mut threads = Vec::with_capacity(workers + 1);
    let mut handles = Vec::with_capacity(workers);
    for i in 0..workers.max(1) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        handles.push(runtime.handle().clone());
        let gateway = gateway.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("gatehouse-pg-{i}"))
                .spawn(move || runtime.block_on(gateway.drain(grace)))?,
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    threads.push(
        std::thread::Builder::new()
            .name("gatehouse-pg-accept".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => gateway.serve_dispatching(listener, handles, grace).await,
                        Err(e) => tracing::error!(error = %e, "cannot listen"),
                    }
                })
            })?,
    );
    Ok((bound, threads))
}

/// A non-blocking listening socket with a deep backlog.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // SO_REUSEADDR only allows rebinding over TIME_WAIT; it never lets two listeners share.
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    // Registered with the calling runtime only long enough to be handed to the acceptor.
    socket.listen(1024)?.into_std()
}
