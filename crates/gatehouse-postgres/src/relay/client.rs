//! Client → upstream: every message decoded, every statement admitted (its record written)
//! before its bytes may leave, every answered message queued as an op first.

use super::{
    gated_end, write_out, Initial, RelayLimits, Shared, FLUSH_AT, MAX_BUFFERED_INPUT,
    MAX_OPS_IN_FLIGHT,
};
use crate::codec::{self, sqlstate};
use crate::flow::{Copy, OpKind};
use crate::framer::{FrameError, Framer, Piece};
use crate::names::{Known, Lookup, OpSeq};
use bytes::{Bytes, BytesMut};
use gatehouse_core::approvals::ApprovalState;
use gatehouse_core::{
    Admission, Classifier, Command, EndCause, Gated, Hold, Refusal, Refused, Session, Statement,
    StatementKind, Step,
};
use gatehouse_inspect::sql;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// What the next client message must wait for.
#[derive(Debug, Clone, Copy)]
enum Await {
    /// The server's answer to this op (a name it may change, a settle).
    Answered(OpSeq),
    /// Whether this op's statement started a COPY from the client (or finished without one).
    CopyState(OpSeq),
    /// Every op answered: the encoding and settings the server reports are current.
    Idle,
    /// Room in the op queue.
    Capacity,
}

/// What happens to the chunks of a large message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunks {
    Forward,
    Drop,
}

struct ClientLoop<'a, W> {
    session: &'a Session,
    shared: &'a Shared,
    upstream: &'a mut Gated<W>,
    limits: RelayLimits,
    initial: Initial,
    out: BytesMut,
    inbox: VecDeque<Piece>,
    inbox_bytes: usize,
    classifier: Classifier,
    /// A refused extended-protocol message: the client's messages up to its Sync are dropped
    /// (as the server itself would after an error) and the refusal is carried out at the Sync.
    refused: Option<Refused>,
    chunks: Chunks,
    awaiting: Option<Await>,
    /// A statement that may change lexing settings ran since the server was last idle: a
    /// transaction end may revert it, so it waits too.
    lexing_touched: bool,
    /// An extended-protocol statement that may change how text reads (the client encoding)
    /// was sent: the server reports the new settings only at the next ReadyForQuery, so no
    /// further statement may come before the Sync.
    settle_at_sync: bool,
    /// Extended-protocol messages were forwarded since the last Sync or Query: the server holds
    /// its answers until a Sync or Flush, so a wait for one sends a Flush first.
    mid_batch: bool,
    /// How the hold of the message being handled again ended, when not approved: the
    /// refusal to carry out instead of holding it again.
    hold_outcome: Option<Refusal>,
    /// Per portal, its Bind message (read only if an Execute of it is held for approval);
    /// `None` where the Bind was streamed and could not be kept whole.
    bound: std::collections::HashMap<Vec<u8>, Option<Bytes>>,
}

pub(super) async fn run<R, W>(
    session: &Session,
    shared: &Shared,
    client: &mut Framer<R>,
    upstream: &mut Gated<W>,
    limits: RelayLimits,
    initial: Initial,
) -> EndCause
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut relay = ClientLoop {
        session,
        shared,
        upstream,
        limits,
        initial,
        out: BytesMut::with_capacity(FLUSH_AT),
        inbox: VecDeque::new(),
        inbox_bytes: 0,
        classifier: Classifier::default(),
        refused: None,
        chunks: Chunks::Forward,
        awaiting: None,
        lexing_touched: false,
        settle_at_sync: false,
        mid_batch: false,
        hold_outcome: None,
        bound: std::collections::HashMap::new(),
    };
    relay.run(client).await
}

/// The result of handling one message: go on, or look at it again once `Await` holds.
enum Step2 {
    Next,
    Retry(Await),
    /// Held for approval: wait on it, then look at the message again.
    Hold(Hold),
}

impl<W: AsyncWrite + Unpin> ClientLoop<'_, W> {
    async fn run<R: AsyncRead + Unpin>(&mut self, client: &mut Framer<R>) -> EndCause {
        loop {
            if let Some(wait) = self.awaiting.take() {
                if let Err(end) = self.wait(wait, client).await {
                    return end;
                }
            }
            let piece = match self.inbox.pop_front() {
                Some(piece) => {
                    self.inbox_bytes -= piece_len(&piece);
                    piece
                }
                None => {
                    if !client.has_buffered_piece() {
                        if let Err(e) = write_out(self.upstream, &mut self.out).await {
                            return gated_end(e, true);
                        }
                    }
                    let piece = match client.next().await {
                        Ok(Some(piece)) => piece,
                        Ok(None) => return EndCause::ClientClosed,
                        Err(FrameError::Io(e)) => return EndCause::ClientIo(e.to_string()),
                        Err(e) => return EndCause::ClientProtocol(e.to_string()),
                    };
                    self.shared.activity.touch();
                    piece
                }
            };
            let handled = self.handle(&piece);
            self.hold_outcome = None;
            match handled {
                Ok(Step2::Next) => {}
                Ok(Step2::Hold(hold)) => {
                    self.inbox_bytes += piece_len(&piece);
                    self.inbox.push_front(piece);
                    if let Err(end) = self.hold(hold, client).await {
                        return end;
                    }
                }
                Ok(Step2::Retry(wait)) => {
                    if self.holds(wait) {
                        // Waiting would return at once and the message would ask again: the
                        // gateway's model cannot make progress. Fail closed, never spin.
                        return EndCause::UpstreamProtocol(format!(
                            "the gateway's model of the server's state is stuck ({wait:?})"
                        ));
                    }
                    self.inbox_bytes += piece_len(&piece);
                    self.inbox.push_front(piece);
                    self.awaiting = Some(wait);
                }
                Err(end) => {
                    if end == EndCause::ClientTerminated {
                        let _ = write_out(self.upstream, &mut self.out).await;
                    }
                    return end;
                }
            }
            if self.out.len() >= FLUSH_AT {
                if let Err(e) = write_out(self.upstream, &mut self.out).await {
                    return gated_end(e, true);
                }
            }
        }
    }

    /// Waits until `wait` holds, forwarding what is pending first and reading the client into
    /// the bounded inbox meanwhile (so a disconnect is seen).
    async fn wait<R: AsyncRead + Unpin>(
        &mut self,
        wait: Await,
        client: &mut Framer<R>,
    ) -> Result<(), EndCause> {
        if self.mid_batch && !self.holds(wait) {
            // No answer to wait for (or no flush) otherwise; a Flush changes nothing else.
            codec::message_with(&mut self.out, b'H', |_| {});
        }
        write_out(self.upstream, &mut self.out)
            .await
            .map_err(|e| gated_end(e, true))?;
        loop {
            let notified = self.shared.answered.notified();
            if self.holds(wait) {
                return Ok(());
            }
            if self.inbox_bytes >= MAX_BUFFERED_INPUT {
                notified.await;
                continue;
            }
            tokio::select! {
                () = notified => {}
                piece = client.next() => match piece {
                    Ok(Some(piece)) => {
                        self.shared.activity.touch();
                        self.inbox_bytes += piece_len(&piece);
                        self.inbox.push_back(piece);
                    }
                    Ok(None) => return Err(EndCause::ClientClosed),
                    Err(FrameError::Io(e)) => return Err(EndCause::ClientIo(e.to_string())),
                    Err(e) => return Err(EndCause::ClientProtocol(e.to_string())),
                },
            }
        }
    }

    /// Holds the message being handled until its approval request is decided, it times out,
    /// the client cancels it or leaves. Everything before it is forwarded; the client is read
    /// meanwhile into the bounded inbox; the session does not count as idle. Approved: the
    /// message is handled again and runs with its approval. Otherwise the outcome is kept in
    /// `hold_outcome`, and handling the message again refuses it with that.
    async fn hold<R: AsyncRead + Unpin>(
        &mut self,
        hold: Hold,
        client: &mut Framer<R>,
    ) -> Result<(), EndCause> {
        let mut waiting = match hold {
            Hold::Claim(id) => {
                if let Err(err) = self.session.claim_approval(&id).await {
                    self.hold_outcome = Some(Refusal {
                        rule: String::new(),
                        reason: format!(
                            "approval request {id} could not be used ({err}); the statement was not run"
                        ),
                        code: sqlstate::INSUFFICIENT_PRIVILEGE,
                    });
                }
                return Ok(());
            }
            Hold::Waiting(waiting) => waiting,
            Hold::New(mut request) => {
                self.estimate(&mut request).await;
                match self.session.request_approval(*request).await {
                    Ok(waiting) => waiting,
                    Err(err) => {
                        self.hold_outcome = Some(Refusal {
                        rule: String::new(),
                        reason: format!(
                            "this statement needs approval, and the request could not be recorded ({err}); it was not run"
                        ),
                        code: sqlstate::CANNOT_CONNECT_NOW,
                    });
                        return Ok(());
                    }
                }
            }
        };
        if self.mid_batch {
            codec::message_with(&mut self.out, b'H', |_| {});
        }
        write_out(self.upstream, &mut self.out)
            .await
            .map_err(|e| gated_end(e, true))?;
        let _holding = Holding::new(&self.shared.holding);
        let left = waiting.hold_until - time::OffsetDateTime::now_utc();
        let deadline =
            tokio::time::Instant::now() + std::time::Duration::try_from(left).unwrap_or_default();
        let id = waiting.id.clone();
        let state = loop {
            let state = *waiting.state.borrow_and_update();
            if state != ApprovalState::Pending {
                break Some(state);
            }
            let reading = self.inbox_bytes < MAX_BUFFERED_INPUT;
            tokio::select! {
                changed = waiting.state.changed() => {
                    if changed.is_err() {
                        break None;
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    self.hold_outcome = Some(Refusal {
                        rule: String::new(),
                        reason: format!(
                            "approval request {id} is still pending; it was not run. Ask an approver to run `gatehouse approvals approve {id}`, then run the same statement again"
                        ),
                        code: sqlstate::INSUFFICIENT_PRIVILEGE,
                    });
                    return Ok(());
                }
                () = self.shared.interrupt.notified() => {
                    self.session.close_approval(&id, ApprovalState::Cancelled).await;
                    self.hold_outcome = Some(Refusal {
                        rule: String::new(),
                        reason: format!("canceling statement due to user request (approval request {id} cancelled)"),
                        code: sqlstate::QUERY_CANCELED,
                    });
                    return Ok(());
                }
                piece = client.next(), if reading => match piece {
                    Ok(Some(piece)) => {
                        self.shared.activity.touch();
                        self.inbox_bytes += piece_len(&piece);
                        self.inbox.push_back(piece);
                    }
                    Ok(None) => {
                        self.session.close_approval(&id, ApprovalState::Abandoned).await;
                        return Err(EndCause::ClientClosed);
                    }
                    Err(FrameError::Io(e)) => {
                        self.session.close_approval(&id, ApprovalState::Abandoned).await;
                        return Err(EndCause::ClientIo(e.to_string()));
                    }
                    Err(e) => {
                        self.session.close_approval(&id, ApprovalState::Abandoned).await;
                        return Err(EndCause::ClientProtocol(e.to_string()));
                    }
                },
            }
        };
        let request = self.session.approval(&id).await;
        let state = state.or(request.as_ref().map(|r| r.state));
        match state {
            Some(ApprovalState::Approved | ApprovalState::Executed) => {}
            Some(ApprovalState::Denied) => {
                let (by, why) = request
                    .as_ref()
                    .and_then(|r| r.denial.as_ref())
                    .map(|d| (d.by.clone(), d.comment.clone().unwrap_or_default()))
                    .unwrap_or_default();
                self.hold_outcome = Some(Refusal {
                    rule: String::new(),
                    reason: format!("approval request {id} was denied by {by}: {why}"),
                    code: sqlstate::INSUFFICIENT_PRIVILEGE,
                });
            }
            other => {
                let state = other.map_or("closed", ApprovalState::as_str);
                self.hold_outcome = Some(Refusal {
                    rule: String::new(),
                    reason: format!("approval request {id} is {state}; the statement was not run"),
                    code: sqlstate::INSUFFICIENT_PRIVILEGE,
                });
            }
        }
        Ok(())
    }

    /// For a held write of one statement: the planner's row estimate, in the request's effect.
    async fn estimate(&self, request: &mut gatehouse_core::approvals::ApprovalRequest) {
        let Some(estimator) = &self.shared.estimator else {
            return;
        };
        // Planning evaluates immutable and stable functions: a statement that calls any is not
        // planned before someone approves it. Parameters would need their values planned in.
        let no_functions = request.effect["functions"]
            .as_array()
            .is_some_and(Vec::is_empty);
        // The real text: the request shows it masked where it holds values.
        let text = request
            .planned_text
            .clone()
            .unwrap_or_else(|| request.statement.clone());
        let one_write = request.effect["kind"] == "write"
            && request.effect["text_known"] == true
            && no_functions
            && request.effect["parameters"].is_null()
            && !text.trim_end().trim_end_matches(';').contains(';')
            && text.len() < 64 * 1024;
        if !one_write {
            return;
        }
        let estimate = estimator.rows(&text).await;
        if let serde_json::Value::Object(effect) = &mut request.effect {
            match estimate {
                Ok(rows) => {
                    effect.insert("estimated_rows".into(), rows.into());
                }
                Err(why) => {
                    effect.insert("estimate_unavailable".into(), why.into());
                }
            }
        }
    }

    fn holds(&self, wait: Await) -> bool {
        let flow = self.shared.flow();
        match wait {
            Await::Answered(op) => flow.answered(op),
            Await::CopyState(op) => flow.copy == Copy::In || flow.answered(op),
            Await::Idle => flow.in_flight() == 0,
            Await::Capacity => flow.in_flight() < MAX_OPS_IN_FLIGHT,
        }
    }

    /// Handles one piece of client input.
    fn handle(&mut self, piece: &Piece) -> Result<Step2, EndCause> {
        let (tag, raw, whole) = match piece {
            Piece::Whole { tag, raw } => (*tag, raw, true),
            Piece::Head { tag, raw, .. } => (*tag, raw, false),
            Piece::Chunk(raw) => {
                if self.chunks == Chunks::Forward {
                    self.out.extend_from_slice(raw);
                }
                return Ok(Step2::Next);
            }
            Piece::Oversized { tag, head, len } => return self.oversized(*tag, head, *len),
        };
        let body = &raw[5..];
        self.chunks = Chunks::Forward;
        let generation = self.session.policy_generation();
        let (full, copy, doomed) = {
            let mut flow = self.shared.flow();
            // A reload since the masking was chosen: the ops queued from now take the new one.
            if flow.masking_generation != generation {
                flow.masking = self.session.masking();
                flow.masking_generation = generation;
            }
            (
                flow.in_flight() >= MAX_OPS_IN_FLIGHT,
                flow.copy,
                flow.doomed(),
            )
        };
        if full && !matches!(tag, b'd' | b'c' | b'f' | b'X') {
            return Ok(Step2::Retry(Await::Capacity));
        }
        if copy == Copy::In {
            return self.in_copy(tag, raw, whole);
        }
        if doomed
            && self.refused.is_none()
            && matches!(tag, b'P' | b'B' | b'D' | b'C' | b'E' | b'H' | b'Q' | b'F')
        {
            return self.doomed(tag, body);
        }
        if self.settle_at_sync && matches!(tag, b'P' | b'B' | b'E' | b'F' | b'Q') {
            return self.unsettled(tag, body);
        }
        match tag {
            b'P' | b'B' | b'E' | b'D' | b'C' => self.mid_batch = true,
            b'S' | b'Q' | b'F' => self.mid_batch = false,
            _ => {}
        }
        match tag {
            b'Q' => self.query(body, raw),
            b'P' => self.parse(body, raw),
            b'B' => self.bind(body, raw, whole),
            b'E' => self.execute(body, raw),
            b'D' => {
                if self.refused.is_some() {
                    return Ok(Step2::Next);
                }
                let (kind, _) = codec::target(body, "Describe").map_err(protocol)?;
                self.push(OpKind::Describe {
                    statement: kind == b'S',
                });
                self.out.extend_from_slice(raw);
                Ok(Step2::Next)
            }
            b'C' => {
                if self.refused.is_some() {
                    return Ok(Step2::Next);
                }
                let (kind, name) = codec::target(body, "Close").map_err(protocol)?;
                let mut flow = self.shared.flow();
                let (seq, batch) = (flow.next_seq(), flow.batch);
                if let Err(wait) = flow.names.close(seq, batch, kind, name) {
                    return Ok(Step2::Retry(Await::Answered(wait)));
                }
                flow.push(OpKind::Close);
                drop(flow);
                self.out.extend_from_slice(raw);
                Ok(Step2::Next)
            }
            b'H' => {
                self.out.extend_from_slice(raw);
                Ok(Step2::Next)
            }
            b'S' => self.sync(raw),
            b'F' => self.function_call(body, raw),
            // COPY messages outside COPY are ignored by the server; nothing to forward.
            b'd' | b'c' | b'f' => {
                if !whole {
                    self.chunks = Chunks::Drop;
                }
                Ok(Step2::Next)
            }
            b'X' => {
                self.out.extend_from_slice(raw);
                Err(EndCause::ClientTerminated)
            }
            other => Err(EndCause::ClientProtocol(format!(
                "unexpected message type {:?}",
                char::from(other)
            ))),
        }
    }

    /// While the server reads COPY data: data goes through; Flush and Sync are ignored by the
    /// server (and not forwarded, so a COPY that failed on the server cannot turn them into
    /// answers the gateway does not expect); anything else breaks the protocol.
    fn in_copy(&mut self, tag: u8, raw: &Bytes, whole: bool) -> Result<Step2, EndCause> {
        match tag {
            b'd' => {
                self.out.extend_from_slice(raw);
                Ok(Step2::Next)
            }
            b'c' | b'f' => {
                self.out.extend_from_slice(raw);
                let mut flow = self.shared.flow();
                flow.copy = Copy::No;
                let op = flow.copy_op;
                drop(flow);
                // A query with several COPY statements may start another.
                self.awaiting = Some(Await::CopyState(op));
                if !whole {
                    self.chunks = Chunks::Forward;
                }
                Ok(Step2::Next)
            }
            b'H' | b'S' => Ok(Step2::Next),
            b'X' => {
                self.out.extend_from_slice(raw);
                Err(EndCause::ClientTerminated)
            }
            other => Err(EndCause::ClientProtocol(format!(
                "message type {:?} during COPY FROM STDIN",
                char::from(other)
            ))),
        }
    }

    /// A message the server will discard (an earlier message of this batch failed): it is
    /// not forwarded and changes no names; a statement is recorded with the result the server
    /// gives it, which is none: it did not run.
    fn doomed(&mut self, tag: u8, body: &[u8]) -> Result<Step2, EndCause> {
        let portal = match tag {
            b'E' => Some(codec::execute_portal(body).map_err(protocol)?),
            _ => None,
        };
        let shown = String::from_utf8_lossy(portal.unwrap_or_default()).into_owned();
        let (command, step) = match tag {
            b'Q' => {
                let (text, _) = codec::read_bytes(body, "Query").map_err(protocol)?;
                let command = self.command(text).unwrap_or_else(|refused| refused.0);
                (command, Step::Query)
            }
            b'E' => (
                Command::unknown(format!(
                    "/* portal \"{shown}\": skipped by the server after an earlier error in the batch */"
                )),
                Step::Execute {
                    portal: &shown,
                    statement: None,
                },
            ),
            b'F' => {
                let oid = codec::function_call(body).map_err(protocol)?.oid;
                (fastpath_command(oid), Step::FunctionCall { oid })
            }
            _ => return Ok(Step2::Next),
        };
        let statement = self.statement(&command, step);
        match self.session.admit(statement).map_err(audit)? {
            Admission::Forward(admitted) => {
                let result = self.shared.flow().doomed_result(portal);
                self.session.complete(admitted.id, &result).map_err(audit)?;
            }
            // Recorded as refused; nothing to carry out, the server shows the batch's error.
            Admission::Refuse(_) => {}
            // It would not run anyway: recorded as refused, no request is opened.
            Admission::Hold(_) => {
                let refusal = Refusal {
                    rule: String::new(),
                    reason: "needs approval, and was skipped by the server after an earlier error in the batch".into(),
                    code: sqlstate::INSUFFICIENT_PRIVILEGE,
                };
                self.session
                    .refuse(self.statement(&command, step), refusal)
                    .map_err(audit)?;
            }
        }
        Ok(Step2::Next)
    }

    fn push(&self, kind: OpKind) -> OpSeq {
        self.shared.flow().push(kind)
    }

    /// Decodes client text in the session's client encoding into a classified command;
    /// `Err` with a refusal when the bytes are not valid in it.
    fn command(&mut self, bytes: &[u8]) -> Result<Command, Box<(Command, Refusal)>> {
        let encoding = self.shared.flow().encoding;
        match encoding.decode(bytes) {
            Some(text) => {
                let mut command = Command::sql_cached(text.into_owned(), &mut self.classifier);
                command.decoded_from = encoding.label();
                Ok(command)
            }
            None => {
                let mut command = Command::unparsed(
                    String::from_utf8_lossy(bytes).into_owned(),
                    StatementKind::Unknown,
                );
                command.decoded_from = encoding.label();
                let refusal = Refusal {
                    rule: String::new(),
                    reason: format!(
                        "invalid byte sequence for encoding \"{}\"",
                        encoding.label().unwrap_or("UTF8")
                    ),
                    code: sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
                };
                Err(Box::new((command, refusal)))
            }
        }
    }

    /// `EXECUTE name` in SQL runs a prepared statement: the command is decided with what
    /// that statement runs, as far as the gateway knows its text; a name it cannot follow
    /// makes the command opaque, for rules to fail closed on.
    fn resolve_executes(&self, command: &mut Command) -> Result<Option<String>, Await> {
        if command
            .classification
            .detail
            .iter()
            .all(|s| s.executes.is_empty())
        {
            return Ok(None);
        }
        let flow = self.shared.flow();
        let mut detail = command.classification.detail.to_vec();
        // What the names run, for an approval to bind to ("!" when one is not known).
        let mut bound = String::new();
        for statement in &mut detail {
            for name in statement.executes.clone() {
                match flow.names.lookup_statement(name.as_bytes(), flow.batch) {
                    Lookup::Known(Known::Text(prepared)) if prepared.known => {
                        bound.push_str(&prepared.text);
                        bound.push('\0');
                        for inner in prepared.classification.detail.iter() {
                            statement.absorb(inner);
                        }
                        if !prepared.classification.parsed {
                            statement.opaque = Some(format!(
                                "EXECUTE {name}: the prepared statement did not parse"
                            ));
                        }
                    }
                    Lookup::Known(_) | Lookup::Missing => {
                        bound.insert(0, '!');
                        statement.opaque = Some(format!(
                            "EXECUTE {name}: a prepared statement whose text the gateway does not know"
                        ));
                    }
                    Lookup::WaitFor(op) => return Err(Await::Answered(op)),
                }
            }
        }
        command.classification.kind = detail
            .iter()
            .map(|s| s.kind)
            .max()
            .unwrap_or(command.classification.kind);
        command.classification.detail = detail.into();
        Ok(Some(bound))
    }

    fn statement<'c>(&self, command: &'c Command, step: Step<'c>) -> Statement<'c> {
        Statement {
            command,
            step,
            transaction: self.shared.flow().transaction(),
            detail: None,
            bound: None,
            binder: None,
        }
    }

    fn query(&mut self, body: &[u8], raw: &Bytes) -> Result<Step2, EndCause> {
        let (text, _) = codec::read_bytes(body, "Query").map_err(protocol)?;
        let (mut command, refusal) = match self.command(text) {
            Ok(command) => (command, None),
            Err(refused) => {
                let (command, refusal) = *refused;
                (command, Some(refusal))
            }
        };
        let bound = match self.resolve_executes(&mut command) {
            Ok(bound) => bound,
            Err(wait) => return Ok(Step2::Retry(wait)),
        };
        let effects = command.effects;
        {
            let mut flow = self.shared.flow();
            let (seq, batch) = (flow.next_seq(), flow.batch);
            if let Err(wait) = flow.names.query(seq, batch, effects.prepared) {
                return Ok(Step2::Retry(Await::Answered(wait)));
            }
        }
        let mut statement = self.statement(&command, Step::Query);
        statement.bound = bound;
        let admission = match refusal {
            Some(refusal) => self
                .session
                .refuse(statement, refusal)
                .map(Admission::Refuse),
            None => self.session.admit(statement),
        }
        .map_err(audit)?;
        match admission {
            Admission::Forward(admitted) => {
                let prepares = effects.prepared.then(|| prepared(&command)).flatten();
                let deallocates = effects
                    .prepared
                    .then(|| sql::deallocated(&command.text))
                    .flatten()
                    .map(|names| {
                        names
                            .into_iter()
                            .map(|n| n.map(String::into_bytes))
                            .collect()
                    });
                self.shared.flow().masking = admitted.plan.masking.clone();
                let seq = self.push(OpKind::Query {
                    statement: Some(admitted.id),
                    follows_names: effects.prepared,
                    prepares,
                    deallocates,
                });
                self.upstream.hold(admitted.ticket);
                self.out.extend_from_slice(raw);
                self.after_statement(seq, &command, false);
            }
            Admission::Refuse(refused) => self.refuse_query(&refused, effects.prepared),
            Admission::Hold(hold) => {
                let Some(refusal) = self.hold_outcome.take() else {
                    return Ok(Step2::Hold(hold));
                };
                let statement = self.statement(&command, Step::Query);
                let refused = self.session.refuse(statement, refusal).map_err(audit)?;
                self.refuse_query(&refused, effects.prepared);
            }
        }
        Ok(Step2::Next)
    }

    /// Carries out a refusal of a simple query (or function call) as an error the server
    /// itself raises, so the transaction state stays the server's.
    fn refuse_query(&mut self, refused: &Refused, follows_names: bool) {
        self.push(OpKind::Query {
            statement: None,
            follows_names,
            prepares: None,
            deallocates: None,
        });
        self.upstream.hold(refused.ticket);
        codec::query(
            &mut self.out,
            &codec::raise_statement(refused.refusal.code, &refused.message()),
        );
    }

    /// Waits, after a statement, for what its answer may change: a COPY that may have
    /// started, settings that change how the next text reads. A simple query's answer ends
    /// with the server's report of its settings; an Execute's comes only at the Sync, so
    /// nothing more may be sent before it.
    fn after_statement(&mut self, seq: OpSeq, command: &Command, extended: bool) {
        let effects = command.effects;
        if effects.lexing {
            self.lexing_touched = true;
        }
        let settles = effects.lexing || (effects.transaction_end && self.lexing_touched);
        if effects.copy_in {
            self.awaiting = Some(Await::CopyState(seq));
        }
        if settles {
            if extended {
                self.settle_at_sync = true;
            } else {
                self.awaiting = Some(Await::Idle);
            }
        }
    }

    /// A statement sent after one that may change the client encoding, before the Sync that
    /// makes the server report it: refused, as the gateway cannot know how it reads.
    fn unsettled(&mut self, tag: u8, body: &[u8]) -> Result<Step2, EndCause> {
        if self.refused.is_some() {
            return Ok(Step2::Next);
        }
        let shown = String::from_utf8_lossy(
            body.split(|&b| b == 0)
                .nth(usize::from(tag == b'P'))
                .unwrap_or_default(),
        )
        .into_owned();
        let command = Command::unparsed(shown, StatementKind::Unknown);
        let refusal = Refusal {
            rule: String::new(),
            reason: "a statement that may change client_encoding or standard_conforming_strings must be followed by Sync before the next statement, so the gateway can read it as the server does".to_owned(),
            code: sqlstate::FEATURE_NOT_SUPPORTED,
        };
        let statement = self.statement(&command, Step::Query);
        let refused = self.session.refuse(statement, refusal).map_err(audit)?;
        if tag == b'Q' || tag == b'F' {
            self.refuse_query(&refused, false);
        } else {
            self.refused = Some(refused);
        }
        Ok(Step2::Next)
    }

    fn parse(&mut self, body: &[u8], raw: &Bytes) -> Result<Step2, EndCause> {
        if self.refused.is_some() {
            return Ok(Step2::Next);
        }
        let (name, text) = codec::parse_message(body).map_err(protocol)?;
        let display = String::from_utf8_lossy(name).into_owned();
        let (mut command, refusal) = match self.command(text) {
            Ok(command) => (command, None),
            Err(refused) => {
                let (command, refusal) = *refused;
                (command, Some(refusal))
            }
        };
        if let Err(wait) = self.resolve_executes(&mut command) {
            return Ok(Step2::Retry(wait));
        }
        let statement = self.statement(&command, Step::Prepare { name: &display });
        let refused = match refusal {
            Some(refusal) => Some(self.session.refuse(statement, refusal).map_err(audit)?),
            None => self.session.screen(statement).map_err(audit)?,
        };
        if let Some(refused) = refused {
            self.refused = Some(refused);
            return Ok(Step2::Next);
        }
        let command = Arc::new(command);
        let mut flow = self.shared.flow();
        let (seq, batch) = (flow.next_seq(), flow.batch);
        if let Err(wait) = flow.names.parse(seq, batch, name, command.clone()) {
            return Ok(Step2::Retry(Await::Answered(wait)));
        }
        flow.push(OpKind::Parse {
            command,
            name: name.to_vec(),
        });
        drop(flow);
        self.out.extend_from_slice(raw);
        Ok(Step2::Next)
    }

    fn bind(&mut self, body: &[u8], raw: &Bytes, whole: bool) -> Result<Step2, EndCause> {
        if self.refused.is_some() {
            if !whole {
                self.chunks = Chunks::Drop;
            }
            return Ok(Step2::Next);
        }
        let (portal, statement) = codec::bind_names(body).map_err(|_| {
            EndCause::ClientProtocol("malformed Bind message (or names too long)".into())
        })?;
        let mut flow = self.shared.flow();
        let (seq, batch) = (flow.next_seq(), flow.batch);
        let known = match flow.names.lookup_statement(statement, batch) {
            Lookup::Known(known) => known,
            Lookup::Missing => Known::Unknown,
            Lookup::WaitFor(op) => return Ok(Step2::Retry(Await::Answered(op))),
        };
        if let Err(wait) = flow.names.bind(seq, batch, portal, known) {
            return Ok(Step2::Retry(Await::Answered(wait)));
        }
        flow.push(OpKind::Bind {
            portal: portal.to_vec(),
        });
        drop(flow);
        self.bound
            .insert(portal.to_vec(), whole.then(|| raw.clone()));
        self.out.extend_from_slice(raw);
        Ok(Step2::Next)
    }

    fn execute(&mut self, body: &[u8], raw: &Bytes) -> Result<Step2, EndCause> {
        if self.refused.is_some() {
            return Ok(Step2::Next);
        }
        let portal = codec::execute_portal(body).map_err(protocol)?;
        let shown = String::from_utf8_lossy(portal).into_owned();
        let looked_up = {
            let flow = self.shared.flow();
            flow.names.lookup_portal(portal, flow.batch)
        };
        let command = match looked_up {
            Lookup::Known(Known::Text(command)) => command,
            Lookup::Known(Known::Unknown) => Arc::new(Command::unknown(format!(
                "/* portal \"{shown}\": a prepared statement whose text the gateway could not follow */"
            ))),
            Lookup::Missing => Arc::new(Command::unknown(format!(
                "/* portal \"{shown}\": not bound through the gateway's view (a cursor declared in SQL, or no such portal) */"
            ))),
            Lookup::WaitFor(op) => return Ok(Step2::Retry(Await::Answered(op))),
        };
        let mut statement = self.statement(
            &command,
            Step::Execute {
                portal: &shown,
                statement: None,
            },
        );
        let bind = self.bound.get(portal).cloned();
        let read = move |masker: Option<&gatehouse_core::mask::Masker>| {
            bound_values(&bind.as_ref()?.as_ref()?[5..], masker)
        };
        match self.bound.contains_key(portal) {
            true => statement.binder = Some(&read),
            // A portal the gateway did not see bound (a cursor declared in SQL).
            false => statement.bound = Some("!unbound".into()),
        }
        match self.session.admit(statement).map_err(audit)? {
            Admission::Forward(admitted) => {
                self.shared.flow().masking = admitted.plan.masking.clone();
                let seq = self.push(OpKind::Execute {
                    statement: Some(admitted.id),
                    portal: portal.to_vec(),
                });
                self.upstream.hold(admitted.ticket);
                self.out.extend_from_slice(raw);
                self.after_statement(seq, &command, true);
            }
            Admission::Refuse(refused) => self.refused = Some(refused),
            Admission::Hold(hold) => {
                let Some(refusal) = self.hold_outcome.take() else {
                    return Ok(Step2::Hold(hold));
                };
                let statement = self.statement(
                    &command,
                    Step::Execute {
                        portal: &shown,
                        statement: None,
                    },
                );
                self.refused = Some(self.session.refuse(statement, refusal).map_err(audit)?);
            }
        }
        Ok(Step2::Next)
    }

    fn sync(&mut self, raw: &Bytes) -> Result<Step2, EndCause> {
        if std::mem::take(&mut self.settle_at_sync) {
            // The settings arrive with this Sync's ReadyForQuery: read nothing before it.
            self.awaiting = Some(Await::Idle);
        }
        let Some(refused) = self.refused.take() else {
            self.push(OpKind::Sync);
            self.out.extend_from_slice(raw);
            return Ok(Step2::Next);
        };
        // Carried out by the server, in a statement of the gateway's own that touches none of
        // the client's names: it raises the error, which aborts the batch's transaction as
        // the refused message's own error would have; closed again after the Sync.
        let name = format!("gatehouse_refusal_{:016x}", rand::random::<u64>());
        let sql = codec::raise_statement(refused.refusal.code, &refused.message());
        self.upstream.hold(refused.ticket);
        let out = &mut self.out;
        named_parse(out, &name, &sql);
        named_bind(out, &name);
        named_execute(out, &name);
        out.extend_from_slice(raw);
        named_close(out, &name);
        sync_message(out);
        let mut flow = self.shared.flow();
        flow.push(OpKind::InjectedSetup);
        flow.push(OpKind::InjectedSetup);
        flow.push(OpKind::InjectedRaise);
        flow.push(OpKind::Sync);
        flow.push(OpKind::InjectedSetup);
        flow.push(OpKind::InjectedSync);
        Ok(Step2::Next)
    }

    fn function_call(&mut self, body: &[u8], raw: &Bytes) -> Result<Step2, EndCause> {
        let call = codec::function_call(body).map_err(protocol)?;
        let args: Vec<serde_json::Value> = call
            .args
            .iter()
            .map(|arg| match arg {
                None => serde_json::json!({ "null": true }),
                Some(bytes) => serde_json::json!({
                    "bytes": bytes.len(),
                    "sha256": hex::encode(Sha256::digest(bytes)),
                }),
            })
            .collect();
        let command = fastpath_command(call.oid);
        let statement = Statement {
            command: &command,
            step: Step::FunctionCall { oid: call.oid },
            transaction: self.shared.flow().transaction(),
            detail: Some(serde_json::json!({ "arguments": args })),
            bound: None,
            binder: None,
        };
        let admission = if self.initial.allow_fastpath {
            self.session.admit(statement)
        } else {
            let refusal = Refusal {
                rule: String::new(),
                reason: format!(
                    "direct function calls (fastpath) are disabled on connection \"{}\"; set allow_fastpath on the connection to allow them",
                    self.session.connection().name
                ),
                code: sqlstate::FEATURE_NOT_SUPPORTED,
            };
            self.session.refuse(statement, refusal).map(Admission::Refuse)
        }
        .map_err(audit)?;
        match admission {
            Admission::Forward(admitted) => {
                self.shared.flow().masking = admitted.plan.masking.clone();
                self.push(OpKind::FunctionCall {
                    statement: Some(admitted.id),
                });
                self.upstream.hold(admitted.ticket);
                self.out.extend_from_slice(raw);
            }
            Admission::Refuse(refused) => self.refuse_query(&refused, false),
            Admission::Hold(hold) => {
                let Some(refusal) = self.hold_outcome.take() else {
                    return Ok(Step2::Hold(hold));
                };
                let statement = Statement {
                    command: &command,
                    step: Step::FunctionCall { oid: call.oid },
                    transaction: self.shared.flow().transaction(),
                    detail: None,
                    bound: None,
                    binder: None,
                };
                let refused = self.session.refuse(statement, refusal).map_err(audit)?;
                self.refuse_query(&refused, false);
            }
        }
        Ok(Step2::Next)
    }

    /// A message over `postgres.max_message`: refused with an error (recorded with its head),
    /// the session goes on.
    fn oversized(&mut self, tag: u8, head: &Bytes, len: usize) -> Result<Step2, EndCause> {
        let body = &head[5..];
        let text = match tag {
            b'Q' => body,
            b'P' => codec::read_bytes(body, "Parse")
                .map(|(_, rest)| rest)
                .unwrap_or_default(),
            b'F' => &[][..],
            other => {
                return Err(EndCause::ClientProtocol(format!(
                    "message of type {:?} is {len} bytes, over the {}-byte limit",
                    char::from(other),
                    self.limits.max_message
                )))
            }
        };
        let shown = String::from_utf8_lossy(text.split(|&b| b == 0).next().unwrap_or_default());
        let command = Command::unparsed(shown.into_owned(), StatementKind::Unknown);
        let refusal = Refusal {
            rule: String::new(),
            reason: format!(
                "message of {len} bytes is over the gateway's limit of {} bytes (postgres.max_message)",
                self.limits.max_message
            ),
            code: sqlstate::PROGRAM_LIMIT_EXCEEDED,
        };
        let step = if tag == b'P' {
            Step::Prepare { name: "" }
        } else {
            Step::Query
        };
        let mut statement = self.statement(&command, step);
        statement.detail =
            Some(serde_json::json!({ "message_bytes": len, "statement_complete": false }));
        if tag == b'P' && self.refused.is_some() {
            return Ok(Step2::Next);
        }
        let refused = self.session.refuse(statement, refusal).map_err(audit)?;
        if tag == b'P' {
            self.refused = Some(refused);
        } else {
            self.refuse_query(&refused, false);
        }
        Ok(Step2::Next)
    }
}

/// The statements a simple query prepares in SQL, as commands.
fn prepared(command: &Command) -> Option<Vec<(Vec<u8>, Arc<Command>)>> {
    let prepared = sql::prepared(&command.text)?;
    Some(
        prepared
            .into_iter()
            .map(|(name, text)| (name.into_bytes(), Arc::new(Command::sql(text))))
            .collect(),
    )
}

fn piece_len(piece: &Piece) -> usize {
    match piece {
        Piece::Whole { raw, .. } | Piece::Head { raw, .. } | Piece::Chunk(raw) => raw.len(),
        Piece::Oversized { head, .. } => head.len(),
    }
}

/// How a fastpath call is shown in the record: by the function's object id.
fn fastpath_command(oid: u32) -> Command {
    Command::unparsed(
        format!("/* fastpath function call */ oid {oid}"),
        StatementKind::Unknown,
    )
}

fn protocol(e: codec::ParseError) -> EndCause {
    EndCause::ClientProtocol(e.to_string())
}

fn audit(e: gatehouse_core::audit::AuditError) -> EndCause {
    EndCause::AuditUnavailable(e.to_string())
}

/// What a Bind bound, as approvers see it: a digest of the whole message as sent (values,
/// formats, names) and each value (text as written, binary as `\\x` hex; long values cut, with
/// their length). Each value is masked with `masker` first, over its bytes — a binary text
/// value's bytes are its text — so hex never carries a value masking would hide. `None` when
/// the message cannot be read.
fn bound_values(
    body: &[u8],
    masker: Option<&gatehouse_core::mask::Masker>,
) -> Option<(String, serde_json::Value)> {
    const SHOWN: usize = 256;
    let values = codec::bind_values(body).ok()?;
    let shown: Vec<serde_json::Value> = values
        .iter()
        .map(|(value, binary)| match value {
            None => serde_json::Value::Null,
            Some(bytes) => {
                let masked = masker
                    .and_then(|m| m.mask_copy(bytes, &mut gatehouse_core::mask::Counts::default()));
                let bytes: &[u8] = masked.as_deref().unwrap_or(bytes);
                let cut = &bytes[..bytes.len().min(SHOWN)];
                let text = match (binary, std::str::from_utf8(cut)) {
                    (false, Ok(text)) => text.to_owned(),
                    _ => format!("\\x{}", hex::encode(cut)),
                };
                if bytes.len() > SHOWN {
                    serde_json::json!({ "value": text, "bytes": bytes.len() })
                } else {
                    serde_json::Value::String(text)
                }
            }
        })
        .collect();
    Some((hex::encode(Sha256::digest(body)), shown.into()))
}

/// Marks the session as holding a statement while alive.
struct Holding<'a>(&'a std::sync::atomic::AtomicBool);

impl<'a> Holding<'a> {
    fn new(flag: &'a std::sync::atomic::AtomicBool) -> Self {
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
        Holding(flag)
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

fn named_parse(out: &mut BytesMut, name: &str, sql: &str) {
    codec::message_with(out, b'P', |b| {
        codec::put_cstr(b, name);
        codec::put_cstr(b, sql);
        b.extend_from_slice(&0i16.to_be_bytes());
    });
}

fn named_bind(out: &mut BytesMut, name: &str) {
    codec::message_with(out, b'B', |b| {
        codec::put_cstr(b, name);
        codec::put_cstr(b, name);
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    });
}

fn named_execute(out: &mut BytesMut, name: &str) {
    codec::message_with(out, b'E', |b| {
        codec::put_cstr(b, name);
        b.extend_from_slice(&0i32.to_be_bytes());
    });
}

fn named_close(out: &mut BytesMut, name: &str) {
    codec::message_with(out, b'C', |b| {
        b.extend_from_slice(b"S");
        codec::put_cstr(b, name);
    });
}

fn sync_message(out: &mut BytesMut) {
    codec::message_with(out, b'S', |_| {});
}
