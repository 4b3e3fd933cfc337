//! The relay between an authenticated client and its upstream: two loops, one per direction,
//! each forwarding messages as they arrive. The client loop turns requests into ops and asks
//! the core for a verdict; the upstream loop matches responses to ops, records each finished
//! statement, and never lets the client see an outcome before its audit record is durable.

use crate::codec::{self, sqlstate, Severity};
use crate::framer::{FrameError, Framer, Piece};
use crate::stream::PgStream;
use crate::tracker::{Event, Names, Op, ResponseTracker};
use bytes::BytesMut;
use gatehouse_core::audit::{AuditError, Ticket};
use gatehouse_core::{
    Classifier, Command, CommandError, CommandOutcome, Session, StatementKind, Verdict,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

/// Output is written once this much is pending, or when the input runs dry.
const FLUSH_AT: usize = 64 * 1024;
/// Ops in flight before the client loop waits for responses (bounds memory for pipelining).
const MAX_OPS_IN_FLIGHT: usize = 16 * 1024;
/// Largest message from the upstream that is not row or COPY data.
const MAX_UPSTREAM_MESSAGE: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    /// Largest client message (a query text, a Bind with its parameters).
    pub max_message: usize,
    /// Close the session after this long without client input while nothing is running.
    pub idle_timeout: Option<Duration>,
}

/// Why a relay ended.
#[derive(Debug, thiserror::Error)]
pub enum End {
    #[error("client terminated the session")]
    ClientTerminated,
    #[error("client disconnected")]
    ClientClosed,
    #[error("upstream closed the connection")]
    UpstreamClosed,
    #[error("idle timeout")]
    IdleTimeout,
    #[error("gateway shutting down")]
    Shutdown,
    #[error("client protocol error: {0}")]
    ClientProtocol(String),
    #[error("upstream protocol error: {0}")]
    UpstreamProtocol(String),
    #[error("client i/o: {0}")]
    ClientIo(std::io::Error),
    #[error("upstream i/o: {0}")]
    UpstreamIo(std::io::Error),
    #[error("audit log unavailable: {0}")]
    Audit(AuditError),
}

/// When the session last did anything, for the idle timeout: client input and upstream output
/// both count, so idleness is measured from the end of the last statement.
struct Activity {
    base: Instant,
    last_nanos: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            base: Instant::now(),
            last_nanos: std::sync::atomic::AtomicU64::new(0),
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
pub async fn run(
    session: &Session,
    client: PgStream,
    upstream: PgStream,
    limits: RelayLimits,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> End {
    let (client_r, mut client_w) = tokio::io::split(client);
    let (upstream_r, mut upstream_w) = tokio::io::split(upstream);
    let mut client_in = Framer::new(client_r, limits.max_message, |tag| tag == b'd');
    let mut upstream_in = Framer::new(upstream_r, MAX_UPSTREAM_MESSAGE, |tag| {
        matches!(tag, b'D' | b'd')
    });
    let (ops_tx, mut ops_rx) = mpsc::channel(MAX_OPS_IN_FLIGHT);
    let mut tracker = ResponseTracker::default();
    let in_flight = AtomicUsize::new(0);
    let activity = Activity::new();

    let end = {
        let requests = client_loop(
            session,
            &mut client_in,
            &mut upstream_w,
            ops_tx,
            &in_flight,
            &activity,
        );
        let responses = upstream_loop(
            session,
            &mut upstream_in,
            &mut client_w,
            &mut ops_rx,
            &mut tracker,
            &in_flight,
            &activity,
        );
        let idle = idle_watch(limits.idle_timeout, &in_flight, &activity);
        tokio::select! {
            end = requests => end,
            end = responses => end,
            end = idle => end,
            _ = shutdown.wait_for(|stop| *stop) => End::Shutdown,
        }
    };

    match &end {
        End::IdleTimeout => {
            send_error(
                &mut client_w,
                Severity::Fatal,
                sqlstate::IDLE_SESSION_TIMEOUT,
                "terminating connection due to idle timeout",
            )
            .await
        }
        End::Audit(_) => {
            send_error(
                &mut client_w,
                Severity::Fatal,
                sqlstate::CANNOT_CONNECT_NOW,
                "the gateway's audit log is unavailable; the session is closed",
            )
            .await
        }
        End::Shutdown => {
            send_error(
                &mut client_w,
                Severity::Fatal,
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection because the gateway is shutting down",
            )
            .await
        }
        End::ClientProtocol(reason) => {
            send_error(
                &mut client_w,
                Severity::Fatal,
                sqlstate::PROTOCOL_VIOLATION,
                reason,
            )
            .await
        }
        _ => {}
    }
    let _ = upstream_w.shutdown().await;
    let _ = client_w.shutdown().await;

    // Statements sent upstream whose outcome never reached the client are recorded too.
    while let Ok(op) = ops_rx.try_recv() {
        tracker.push(op);
    }
    for (command, started) in tracker.drain_unfinished() {
        let outcome = CommandOutcome {
            error: Some(CommandError {
                code: String::new(),
                message: format!("session ended before the statement completed ({end})"),
            }),
            rows: 0,
            duration: started.elapsed(),
        };
        if let Ok(ticket) = session.record(&command, &outcome) {
            let _ = session.durable(ticket).await;
        }
    }
    end
}

async fn send_error<W: AsyncWrite + Unpin>(w: &mut W, severity: Severity, code: &str, text: &str) {
    let mut out = BytesMut::new();
    codec::error_response(&mut out, severity, code, text);
    let _ = w.write_all(&out).await;
    let _ = w.flush().await;
}

async fn client_loop(
    session: &Session,
    client: &mut Framer<ReadHalf<PgStream>>,
    upstream: &mut WriteHalf<PgStream>,
    ops: mpsc::Sender<Op>,
    in_flight: &AtomicUsize,
    activity: &Activity,
) -> End {
    let mut names = Names::default();
    let mut classifier = Classifier::default();
    let mut out = BytesMut::with_capacity(FLUSH_AT);
    // After a blocked Parse/Bind/Execute, the client's messages up to Sync are dropped, as the
    // server itself would after an error.
    let mut skipping = false;
    loop {
        let piece = if client.has_buffered_piece() {
            client.next().await
        } else {
            if let Err(e) = write_out(upstream, &mut out).await {
                return End::UpstreamIo(e);
            }
            let piece = client.next().await;
            activity.touch();
            piece
        };
        let (tag, raw) = match piece {
            Ok(None) => return End::ClientClosed,
            Ok(Some(Piece::Whole { tag, raw })) => (tag, raw),
            Ok(Some(Piece::Head { raw, .. } | Piece::Chunk(raw))) => {
                out.extend_from_slice(&raw);
                continue;
            }
            Err(FrameError::Io(e)) => return End::ClientIo(e),
            Err(e) => return End::ClientProtocol(e.to_string()),
        };
        let body = &raw[5..];
        // Only extended-protocol messages are skipped, as the server itself does.
        if skipping && matches!(tag, b'P' | b'B' | b'E' | b'D' | b'C' | b'H' | b'F') {
            continue;
        }
        let started = Instant::now();
        let op = match tag {
            b'Q' => {
                let Ok((text, _)) = codec::read_cstr(body, "query") else {
                    return End::ClientProtocol("malformed Query message".into());
                };
                let command = Arc::new(Command::sql_cached(text, &mut classifier));
                match session.decide(&command) {
                    Verdict::Allow => Some(Op::Query { command, started }),
                    Verdict::Block { rule, reason } => {
                        if let Err(e) = refuse(session, &ops, &command, &rule, &reason, true).await
                        {
                            return e;
                        }
                        continue;
                    }
                }
            }
            b'P' => {
                let parsed = codec::read_cstr(body, "parse")
                    .and_then(|(name, rest)| Ok((name, codec::read_cstr(rest, "parse")?.0)));
                let Ok((name, text)) = parsed else {
                    return End::ClientProtocol("malformed Parse message".into());
                };
                let command = Arc::new(Command::sql_cached(text, &mut classifier));
                match session.decide(&command) {
                    Verdict::Allow => {
                        names.parsed(name, command.clone());
                        Some(Op::Parse { command, started })
                    }
                    Verdict::Block { rule, reason } => {
                        if let Err(e) = refuse(session, &ops, &command, &rule, &reason, false).await
                        {
                            return e;
                        }
                        skipping = true;
                        continue;
                    }
                }
            }
            b'B' => {
                let bound = codec::read_cstr(body, "bind")
                    .and_then(|(portal, rest)| Ok((portal, codec::read_cstr(rest, "bind")?.0)));
                let Ok((portal, statement)) = bound else {
                    return End::ClientProtocol("malformed Bind message".into());
                };
                Some(Op::Bind {
                    command: names.bound(portal, statement),
                    started,
                })
            }
            b'E' => {
                let Ok((portal, _)) = codec::read_cstr(body, "execute") else {
                    return End::ClientProtocol("malformed Execute message".into());
                };
                Some(Op::Execute {
                    command: names.portal(portal),
                    started,
                })
            }
            b'D' => Some(Op::Describe),
            b'C' => {
                let closed = body
                    .split_first()
                    .map(|(kind, rest)| (*kind, codec::read_cstr(rest, "close")));
                let Some((kind, Ok((name, _)))) = closed else {
                    return End::ClientProtocol("malformed Close message".into());
                };
                names.closed(kind, name);
                Some(Op::Close)
            }
            b'S' => {
                if skipping {
                    skipping = false;
                    // The Sync is answered by the gateway: the upstream never saw the batch.
                    if send_op(
                        &ops,
                        in_flight,
                        Op::Reply {
                            bytes: BytesMut::new().freeze(),
                            ready: true,
                        },
                    )
                    .await
                    .is_err()
                    {
                        return End::UpstreamClosed;
                    }
                    continue;
                }
                Some(Op::Sync)
            }
            b'F' => {
                // Fastpath calls can run any function: audited like a statement, never silently.
                let oid = body
                    .get(..4)
                    .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                let command = Arc::new(Command::unparsed(
                    format!("/* fastpath function call */ oid {oid}"),
                    StatementKind::Write,
                ));
                Some(Op::FunctionCall { command, started })
            }
            b'H' | b'd' | b'c' | b'f' => None,
            b'X' => {
                out.extend_from_slice(&raw);
                let _ = write_out(upstream, &mut out).await;
                return End::ClientTerminated;
            }
            other => {
                return End::ClientProtocol(format!(
                    "unexpected message type {:?}",
                    char::from(other)
                ))
            }
        };
        if let Some(op) = op {
            // The op is queued before its message goes upstream, so the response side always
            // finds it.
            if send_op(&ops, in_flight, op).await.is_err() {
                return End::UpstreamClosed;
            }
        }
        out.extend_from_slice(&raw);
        if out.len() >= FLUSH_AT {
            if let Err(e) = write_out(upstream, &mut out).await {
                return End::UpstreamIo(e);
            }
        }
    }
}

async fn send_op(ops: &mpsc::Sender<Op>, in_flight: &AtomicUsize, op: Op) -> Result<(), ()> {
    in_flight.fetch_add(1, Ordering::Relaxed);
    ops.send(op).await.map_err(|_| ())
}

/// Records a blocked command and queues the error the client will see in its place.
async fn refuse(
    session: &Session,
    ops: &mpsc::Sender<Op>,
    command: &Command,
    rule: &str,
    reason: &str,
    ready: bool,
) -> Result<(), End> {
    session
        .record_blocked(command, rule, reason)
        .await
        .map_err(End::Audit)?;
    let mut bytes = BytesMut::new();
    let text = format!("blocked by rule \"{rule}\": {reason}");
    codec::error_response(
        &mut bytes,
        Severity::Error,
        sqlstate::INSUFFICIENT_PRIVILEGE,
        &text,
    );
    ops.send(Op::Reply {
        bytes: bytes.freeze(),
        ready,
    })
    .await
    .map_err(|_| End::UpstreamClosed)
}

/// Ends the session once it has been idle for the limit: no client input, no upstream
/// output, and nothing running. One timer per idle window, none per read.
async fn idle_watch(limit: Option<Duration>, in_flight: &AtomicUsize, activity: &Activity) -> End {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    loop {
        let idle = activity.idle_for();
        if idle >= limit && in_flight.load(Ordering::Relaxed) == 0 {
            return End::IdleTimeout;
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

async fn write_out<W: AsyncWrite + Unpin>(w: &mut W, out: &mut BytesMut) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    w.write_all(out).await?;
    w.flush().await?;
    out.clear();
    Ok(())
}

async fn upstream_loop(
    session: &Session,
    upstream: &mut Framer<ReadHalf<PgStream>>,
    client: &mut WriteHalf<PgStream>,
    ops: &mut mpsc::Receiver<Op>,
    tracker: &mut ResponseTracker,
    in_flight: &AtomicUsize,
    activity: &Activity,
) -> End {
    let mut out = BytesMut::with_capacity(FLUSH_AT);
    // The newest audit record whose outcome sits in `out`: it must be durable before `out` is
    // written.
    let mut barrier: Option<Ticket> = None;
    let mut ops_open = true;
    loop {
        while let Ok(op) = ops.try_recv() {
            tracker.push(op);
        }
        while let Some((bytes, ready)) = tracker.take_reply() {
            in_flight.fetch_sub(1, Ordering::Relaxed);
            out.extend_from_slice(&bytes);
            if ready {
                codec::ready_for_query(&mut out, tracker.status);
            }
        }
        let piece = if upstream.has_buffered_piece() {
            upstream.next().await
        } else {
            if let Err(end) = flush_to_client(session, client, &mut out, &mut barrier).await {
                return end;
            }
            activity.touch();
            tokio::select! {
                biased;
                piece = upstream.next() => piece,
                op = ops.recv(), if ops_open => {
                    match op {
                        Some(op) => tracker.push(op),
                        None => ops_open = false,
                    }
                    continue;
                }
            }
        };
        match piece {
            Ok(None) => {
                let _ = flush_to_client(session, client, &mut out, &mut barrier).await;
                return End::UpstreamClosed;
            }
            Ok(Some(Piece::Whole { tag, raw })) => {
                // The op for this response was queued before its request went upstream, so it
                // is in the channel now even if the select above woke for the upstream first.
                while let Ok(op) = ops.try_recv() {
                    tracker.push(op);
                }
                let before = tracker.pending();
                let event = tracker.on_message(tag, &raw[5..]);
                let finished = before - tracker.pending();
                if finished > 0 {
                    // Idleness starts when the last op finishes, never before it.
                    activity.touch();
                    in_flight.fetch_sub(finished, Ordering::Relaxed);
                }
                if let Event::Completed(done) = event {
                    match session.record(&done.command, &done.outcome) {
                        Ok(ticket) => barrier = Some(ticket),
                        Err(e) => return End::Audit(e),
                    }
                }
                out.extend_from_slice(&raw);
            }
            Ok(Some(Piece::Head { tag, raw })) => {
                while let Ok(op) = ops.try_recv() {
                    tracker.push(op);
                }
                tracker.on_message(tag, &[]);
                out.extend_from_slice(&raw);
            }
            Ok(Some(Piece::Chunk(raw))) => out.extend_from_slice(&raw),
            Err(FrameError::Io(e)) => return End::UpstreamIo(e),
            Err(e) => return End::UpstreamProtocol(e.to_string()),
        }
        if out.len() >= FLUSH_AT {
            if let Err(end) = flush_to_client(session, client, &mut out, &mut barrier).await {
                return end;
            }
        }
    }
}

/// Writes pending output to the client, first waiting for the audit records it depends on.
async fn flush_to_client(
    session: &Session,
    client: &mut WriteHalf<PgStream>,
    out: &mut BytesMut,
    barrier: &mut Option<Ticket>,
) -> Result<(), End> {
    if let Some(ticket) = barrier.take() {
        session.durable(ticket).await.map_err(End::Audit)?;
    }
    write_out(client, out).await.map_err(End::ClientIo)
}
