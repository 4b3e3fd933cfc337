//! Protocol-neutral serving: what every protocol listener needs and none should write again.
//!
//! * One listening socket, bound normally (a port in use fails the start; no other process can
//!   share it), and an acceptor thread that hands connections round-robin to worker threads,
//!   each a single-threaded runtime: a session's sockets and wake-ups stay on one thread.
//! * Handshake slots: at most `max_handshakes` connections may be unauthenticated at once, and
//!   at most `per_source` from one address, so one client cannot take every slot. A connection
//!   over its source's share is closed at once (the adapter words the refusal); when all slots
//!   are taken, new connections wait in the kernel's backlog, holding no memory of ours.
//! * A first-packet timeout: a connection that sends nothing is closed after a short time, so
//!   idle sockets do not hold slots for the whole handshake timeout.
//! * Drain: at shutdown, accepting stops and the workers wait (up to a grace period) for every
//!   connection to end, so each session's end is recorded before the gateway stops.
//!
//! An adapter implements [`Adapter`]: it gets each connection with its [`Slot`], and releases
//! the slot once the client has authenticated.

mod slots;

pub use slots::{Reserved, Slot, Slots};

use gatehouse_core::Protocol;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// Why the framework turned a connection away before the adapter served it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source address already holds its share of handshake slots.
    TooManyFromSource,
    /// It sent nothing within the first-packet timeout.
    Silent,
}

/// A protocol's side of serving.
pub trait Adapter: Send + Sync + 'static {
    fn protocol(&self) -> Protocol;

    /// Serves one connection. `slot` counts it as unauthenticated until dropped: drop it once
    /// the client has authenticated.
    fn serve(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        slot: Slot,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;

    /// Tells a connection it is turned away (in the protocol's words, best effort) and records
    /// it; the framework closes it afterwards.
    fn refuse(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        why: Refusal,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Handshake bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_handshakes: usize,
    pub per_source: usize,
    pub first_packet_timeout: Duration,
}

/// A started listener: its address and its threads (they end once shutdown has been served).
pub struct Listening {
    pub addr: SocketAddr,
    pub threads: Vec<JoinHandle<()>>,
}

/// Binds `addr` and starts the acceptor and `workers` serving threads for `adapter`. Must be
/// called inside a Tokio runtime (the socket is created there, then handed over).
pub fn spawn<A: Adapter>(
    adapter: Arc<A>,
    addr: SocketAddr,
    workers: usize,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) -> std::io::Result<Listening> {
    let listener = bind(addr)?;
    let bound = listener.local_addr()?;
    let active = Arc::new(watch::Sender::new(0usize));
    let mut threads = Vec::with_capacity(workers + 1);
    let mut handles = Vec::with_capacity(workers);
    let name = adapter.protocol().as_str();
    for i in 0..workers.max(1) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        handles.push(runtime.handle().clone());
        let (active, shutdown) = (active.clone(), shutdown.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("gatehouse-{name}-{i}"))
                .spawn(move || runtime.block_on(drain(shutdown, active, grace)))?,
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let slots = Slots::new(limits.max_handshakes, limits.per_source);
    threads.push(
        std::thread::Builder::new()
            .name(format!("gatehouse-{name}-accept"))
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            let acceptor = Acceptor {
                                adapter,
                                slots,
                                limits,
                                workers: handles,
                                active: active.clone(),
                            };
                            acceptor.run(listener, shutdown.clone()).await;
                        }
                        Err(e) => tracing::error!(error = %e, "cannot listen"),
                    }
                    drain(shutdown, active, grace).await;
                })
            })?,
    );
    Ok(Listening {
        addr: bound,
        threads,
    })
}

/// After shutdown: waits (up to `grace`) until every connection has ended.
async fn drain(
    mut shutdown: watch::Receiver<bool>,
    active: Arc<watch::Sender<usize>>,
    grace: Duration,
) {
    let _ = shutdown.wait_for(|stop| *stop).await;
    let mut active = active.subscribe();
    let _ = tokio::time::timeout(grace, active.wait_for(|n| *n == 0)).await;
}

struct Acceptor<A> {
    adapter: Arc<A>,
    slots: Slots,
    limits: Limits,
    workers: Vec<tokio::runtime::Handle>,
    active: Arc<watch::Sender<usize>>,
}

impl<A: Adapter> Acceptor<A> {
    async fn run(self, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        let mut next = 0usize;
        loop {
            // A connection is only accepted with a slot free: a flood of connections that never
            // authenticate waits in the kernel's backlog, not in our memory.
            let accepted = tokio::select! {
                accepted = async {
                    let reserved = self.slots.reserve().await;
                    (listener.accept().await, reserved)
                } => accepted,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let ((tcp, peer), reserved) = match accepted {
                (Ok(accepted), Some(reserved)) => (accepted, reserved),
                (Ok(_), None) => return,
                (Err(e), _) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            // Counted from here, so a connection on its way to a worker holds off the drain.
            let guard = ActiveGuard::new(self.active.clone());
            let slot = self.slots.take(reserved, peer.ip());
            let Ok(std) = tcp.into_std() else {
                continue;
            };
            let worker = &self.workers[next % self.workers.len()];
            next = next.wrapping_add(1);
            let adapter = self.adapter.clone();
            let first_packet = self.limits.first_packet_timeout;
            // Deregistered here and registered again with the worker's own reactor.
            worker.spawn(async move {
                let _guard = guard;
                let Ok(tcp) = TcpStream::from_std(std) else {
                    return;
                };
                let Some(slot) = slot else {
                    adapter.refuse(tcp, peer, Refusal::TooManyFromSource).await;
                    return;
                };
                match tokio::time::timeout(first_packet, tcp.readable()).await {
                    Ok(Ok(())) => adapter.serve(tcp, peer, slot).await,
                    Ok(Err(_)) => {}
                    Err(_) => adapter.refuse(tcp, peer, Refusal::Silent).await,
                }
            });
        }
    }
}

/// Counts a connection as active until dropped, even if its task panics.
struct ActiveGuard(Arc<watch::Sender<usize>>);

impl ActiveGuard {
    fn new(active: Arc<watch::Sender<usize>>) -> Self {
        active.send_modify(|n| *n += 1);
        ActiveGuard(active)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
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
