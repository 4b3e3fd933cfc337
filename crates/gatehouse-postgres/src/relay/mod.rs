//! The relay between an authenticated client and its upstream: two loops, one per direction,
//! around one op queue and model of the server ([`Flow`]).
//!
//! * The client loop ([`client`]) reads client messages, turns statements into protocol-neutral
//!   commands, has the core admit them (the `statement` record is written then), queues an op
//!   for every message that will be answered, and forwards — through the gated writer, which
//!   waits for the records. Where the meaning of the next message depends on the server's
//!   answer to an earlier one (a COPY may have started, prepared names or the encoding may have
//!   changed), it waits for that answer, reading the client into a bounded buffer meanwhile.
//! * The upstream loop ([`upstream`]) matches every server message to the op it answers,
//!   records each finished statement's result, checks the session settings the server reports,
//!   and relays to the client.
//!
//! When the relay ends, statements still in flight are recorded with an unknown outcome.

mod client;
mod upstream;

use crate::codec::{self, sqlstate, Severity};
use crate::encoding::ClientEncoding;
use crate::flow::Flow;
use crate::framer::Framer;
use bytes::BytesMut;
use gatehouse_core::{EndCause, Gated, Session};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

/// Output is written once this much is pending, or when the input runs dry.
const FLUSH_AT: usize = 64 * 1024;
/// Ops in flight before the client loop waits for responses (bounds memory for pipelining).
const MAX_OPS_IN_FLIGHT: usize = 16 * 1024;
/// Largest message from the upstream that is not streamed (row data, COPY data, errors and
/// notices are streamed at any size).
const MAX_UPSTREAM_MESSAGE: usize = 16 * 1024 * 1024;
/// Client bytes read ahead while the client loop waits for the server.
const MAX_BUFFERED_INPUT: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    /// Largest client message that is not streamed (a query text, a Parse); larger ones are
    /// refused with an error and the session goes on.
    pub max_message: usize,
    /// Close the session after this long without client input while nothing is running.
    pub idle_timeout: Option<Duration>,
}

/// What the relay starts from: the session settings the server reported at startup.
#[derive(Debug, Clone, Copy)]
pub struct Initial {
    pub encoding: ClientEncoding,
    /// Whether the connection may call functions directly (fastpath).
    pub allow_fastpath: bool,
}

/// What the session offers the relay beyond its sockets.
pub struct Hooks {
    /// Woken by a cancel request for this session: it ends a hold for approval.
    pub interrupt: Arc<Notify>,
    /// Asks the server for a held write's row estimate, for the approvers.
    pub estimator: Option<Arc<crate::estimate::Estimator>>,
}

/// State both loops share. Locked briefly per message, never across an await.
pub(crate) struct Shared {
    flow: Mutex<Flow>,
    /// Wakes the client loop when the server answered something.
    answered: Notify,
    activity: Activity,
    /// A cancel request for this session: ends a hold for approval.
    interrupt: Arc<Notify>,
    estimator: Option<Arc<crate::estimate::Estimator>>,
    /// A statement is held for approval: the session is not idle.
    holding: AtomicBool,
}

impl Shared {
    fn flow(&self) -> MutexGuard<'_, Flow> {
        self.flow.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// When the session last did anything, for the idle timeout: client input and upstream output
/// both count, so idleness is measured from the end of the last statement.
struct Activity {
    base: Instant,
    last_nanos: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            base: Instant::now(),
            last_nanos: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_nanos.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        self.base.elapsed().saturating_sub(Duration::from_nanos(
            self.last_nanos.load(Ordering::Relaxed),
        ))
    }
}

/// Runs the session until either side ends it; then records statements left unfinished.
pub async fn run<C, U>(
    session: &Session,
    client: C,
    upstream: U,
    limits: RelayLimits,
    initial: Initial,
    hooks: Hooks,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> EndCause
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (client_r, client_w) = tokio::io::split(client);
    let (upstream_r, upstream_w) = tokio::io::split(upstream);
    let mut client_in = Framer::new(client_r, limits.max_message, |tag| {
        matches!(tag, b'd' | b'B')
    })
    .with_oversized_head(|tag| matches!(tag, b'Q' | b'P'));
    let mut upstream_in = Framer::new(upstream_r, MAX_UPSTREAM_MESSAGE, |tag| {
        matches!(tag, b'D' | b'd' | b'E' | b'N')
    });
    let mut client_w = session.client_writer(client_w);
    let mut upstream_w = session.upstream_writer(upstream_w);
    let mut flow = Flow::new(initial.encoding);
    flow.masking_generation = session.policy_generation();
    flow.masking = session.masking();
    let shared = Shared {
        flow: Mutex::new(flow),
        answered: Notify::new(),
        activity: Activity::new(),
        interrupt: hooks.interrupt,
        estimator: hooks.estimator,
        holding: AtomicBool::new(false),
    };
    let mut stop = session.stop_signal();

    let cause = {
        let requests = client::run(
            session,
            &shared,
            &mut client_in,
            &mut upstream_w,
            limits,
            initial,
        );
        let responses = upstream::run(session, &shared, &mut upstream_in, &mut client_w);
        let idle = idle_watch(limits.idle_timeout, &shared);
        let stopped = stop.wait();
        tokio::pin!(requests, responses, idle, stopped);
        // After the client's Terminate the server still answers what was sent before it,
        // then closes: those answers are relayed and recorded, as they would be directly.
        let mut terminated = false;
        loop {
            tokio::select! {
                cause = &mut requests, if !terminated => {
                    if cause == EndCause::ClientTerminated {
                        terminated = true;
                        continue;
                    }
                    break cause;
                }
                cause = &mut responses => {
                    break if terminated && cause == EndCause::UpstreamClosed {
                        EndCause::ClientTerminated
                    } else {
                        cause
                    };
                }
                cause = &mut idle, if !terminated => break cause,
                cause = &mut stopped => break cause,
                _ = shutdown.wait_for(|stop| *stop) => break EndCause::Shutdown,
            }
        }
    };

    if let Some((code, text)) = farewell(&cause) {
        let mut out = BytesMut::new();
        codec::error_response(&mut out, Severity::Fatal, code, &text);
        let _ = client_w.write_unconditional(&out).await;
    }
    let _ = upstream_w.shutdown().await;
    let _ = client_w.shutdown().await;

    // Statements sent upstream whose outcome never reached the client are recorded too.
    let unfinished = shared.flow().drain(&cause.to_string());
    let mut last = None;
    for done in unfinished {
        match session.complete(done.id, &done.result) {
            Ok(ticket) => last = Some(ticket),
            Err(e) => {
                tracing::error!(error = %e, "could not record an unfinished statement");
                break;
            }
        }
    }
    if let Some(ticket) = last {
        let mut gated = session.client_writer(tokio::io::sink());
        gated.hold(ticket);
        let _ = gated.clear().await;
    }
    cause
}

/// The FATAL error the client gets when the gateway ends the session, if any.
fn farewell(cause: &EndCause) -> Option<(&'static str, String)> {
    let (code, text) = match cause {
        EndCause::IdleTimeout => (
            sqlstate::IDLE_SESSION_TIMEOUT,
            "terminating connection due to idle timeout".to_owned(),
        ),
        EndCause::AuditUnavailable(_) => (
            sqlstate::CANNOT_CONNECT_NOW,
            "the gateway's audit log is unavailable; the session is closed".to_owned(),
        ),
        EndCause::RecordingUnavailable(_) => (
            sqlstate::CANNOT_CONNECT_NOW,
            "the gateway cannot record this session; the session is closed".to_owned(),
        ),
        EndCause::Shutdown => (
            sqlstate::ADMIN_SHUTDOWN,
            "terminating connection because the gateway is shutting down".to_owned(),
        ),
        EndCause::Killed { .. } => (
            sqlstate::ADMIN_SHUTDOWN,
            "terminating connection: the session was ended by a gateway operator".to_owned(),
        ),
        EndCause::CredentialRevoked => (
            sqlstate::INVALID_AUTHORIZATION,
            "terminating connection: the credential of this session was revoked".to_owned(),
        ),
        EndCause::CredentialExpired => (
            sqlstate::INVALID_AUTHORIZATION,
            "terminating connection: the credential of this session expired".to_owned(),
        ),
        EndCause::GrantExpired => (
            sqlstate::INVALID_AUTHORIZATION,
            "terminating connection: the time-bound access grant of this session ended".to_owned(),
        ),
        EndCause::GrantRevoked => (
            sqlstate::INVALID_AUTHORIZATION,
            "terminating connection: the time-bound access grant of this session was revoked"
                .to_owned(),
        ),
        EndCause::ClientProtocol(reason) => (sqlstate::PROTOCOL_VIOLATION, reason.clone()),
        EndCause::UnsafeSessionState(reason) => {
            (sqlstate::CANT_CHANGE_RUNTIME_PARAM, reason.clone())
        }
        EndCause::UpstreamProtocol(_) => (
            sqlstate::CONNECTION_FAILURE,
            "the gateway lost track of the server's responses; the session is closed".to_owned(),
        ),
        _ => return None,
    };
    Some((code, text))
}

/// Ends the session once it has been idle for the limit: no client input, no upstream
/// output, nothing running and nothing held for approval. One timer per idle window, none per read.
async fn idle_watch(limit: Option<Duration>, shared: &Shared) -> EndCause {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    loop {
        let idle = shared.activity.idle_for();
        if idle >= limit
            && shared.flow().in_flight() == 0
            && !shared.holding.load(Ordering::Relaxed)
        {
            return EndCause::IdleTimeout;
        }
        // While a statement runs, look again at a modest pace; otherwise at the deadline.
        let wait = if idle >= limit {
            Duration::from_millis(50).min(limit)
        } else {
            limit - idle
        };
        tokio::time::sleep(wait).await;
    }
}

/// Writes pending output through a gated writer.
async fn write_out<W: AsyncWrite + Unpin>(
    w: &mut Gated<W>,
    out: &mut BytesMut,
) -> Result<(), gatehouse_core::GatedError> {
    if out.is_empty() {
        return Ok(());
    }
    w.write_all(out).await?;
    out.clear();
    Ok(())
}

/// The end cause for a failed gated write.
fn gated_end(e: gatehouse_core::GatedError, upstream: bool) -> EndCause {
    match e {
        gatehouse_core::GatedError::Audit(e) => EndCause::AuditUnavailable(e.to_string()),
        gatehouse_core::GatedError::Io(e) if upstream => EndCause::UpstreamIo(e.to_string()),
        gatehouse_core::GatedError::Io(e) => EndCause::ClientIo(e.to_string()),
    }
}

#[cfg(test)]
mod tests;
