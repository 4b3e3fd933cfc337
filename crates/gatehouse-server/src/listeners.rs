//! Thread-per-core serving for the PostgreSQL listener.
//!
//! Each worker thread runs a single-threaded runtime with its own listening socket on the
//! shared port (`SO_REUSEPORT`); the kernel spreads new connections across them. A session's
//! sockets, relay and wake-ups then all live on one thread: no work stealing, no cross-thread
//! wake-ups on the statement path. Everything the sessions share (the gate, the audit log,
//! the cancel registry) is thread-safe.

use anyhow::Context;
use gatehouse_postgres::PgGateway;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::net::TcpSocket;

/// Binds `workers` sockets to `addr` (all to the same port, also when `addr` asks for port 0)
/// and starts a serving thread for each. Returns the bound address and the threads, which end
/// once the gateway's shutdown has been served.
pub fn spawn_postgres(
    gateway: Arc<PgGateway>,
    addr: SocketAddr,
    workers: usize,
    grace: Duration,
) -> anyhow::Result<(SocketAddr, Vec<JoinHandle<()>>)> {
    let mut sockets = Vec::with_capacity(workers);
    let mut bound = addr;
    for _ in 0..workers.max(1) {
        let socket = reuse_port_socket(bound)
            .with_context(|| format!("binding the PostgreSQL listener on {bound}"))?;
        bound = socket.local_addr()?;
        sockets.push(socket);
    }
    let mut threads = Vec::with_capacity(sockets.len());
    for (i, socket) in sockets.into_iter().enumerate() {
        let gateway = gateway.clone();
        let thread = std::thread::Builder::new()
            .name(format!("gatehouse-pg-{i}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        return tracing::error!(error = %e, "cannot start a PostgreSQL worker")
                    }
                };
                runtime.block_on(async move {
                    match socket.listen(1024) {
                        Ok(listener) => gateway.serve(listener, grace).await,
                        Err(e) => tracing::error!(error = %e, "cannot listen"),
                    }
                });
            })?;
        threads.push(thread);
    }
    Ok((bound, threads))
}

fn reuse_port_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    Ok(socket)
}
