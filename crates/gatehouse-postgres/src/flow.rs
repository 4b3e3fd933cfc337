//! The session's op queue and a model of the server's state, fed from both directions.
//!
//! The client side pushes an [`Op`] for every message that will get a response, in wire order,
//! before the message goes upstream. The response side feeds every server message to
//! [`Flow::on_message`], which matches it to the op at the head of the queue the way the server
//! produces it, and says what happened: a statement finished (to record), the server now reads
//! COPY data, the message belongs to no request. A message that matches no op means the
//! gateway's model no longer matches the server: the session is ended (fail closed) rather
//! than pairing outcomes with the wrong statements. Pure: no I/O, table-tested.

use crate::codec;
use crate::encoding::ClientEncoding;
use crate::names::{Names, OpSeq};
use gatehouse_core::mask::{Counts, Masker};
use gatehouse_core::{
    Command, MaskVerdict, ResultStatus, StatementId, StatementResult, Transaction,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// Why a statement the server skipped did not run.
const NOT_RUN: &str = "not run: an earlier message of the same batch failed";

/// What an op is waiting for.
#[derive(Debug)]
pub enum OpKind {
    /// A simple query (forwarded, or a refusal carried out as a server-side error).
    Query {
        statement: Option<StatementId>,
        /// Follow `PREPARE`/`DEALLOCATE`/`DISCARD` in its text by its CommandComplete tags.
        follows_names: bool,
        /// The statements its text prepares in SQL (name, text), when it could be parsed.
        prepares: Option<Vec<(Vec<u8>, Arc<Command>)>>,
        /// The names its `DEALLOCATE`s drop (`None`: all), when they could be read.
        deallocates: Option<Vec<Option<Vec<u8>>>>,
    },
    /// A Parse: the statement (and its name) to record if the server refuses it.
    Parse {
        command: Arc<Command>,
        name: Vec<u8>,
    },
    /// A Bind of this portal.
    Bind {
        portal: Vec<u8>,
    },
    Describe {
        statement: bool,
    },
    Execute {
        statement: Option<StatementId>,
        portal: Vec<u8>,
    },
    Close,
    Sync,
    FunctionCall {
        statement: Option<StatementId>,
    },
    /// A Parse or Bind the gateway added to carry out a refusal: its answer is not the
    /// client's.
    InjectedSetup,
    /// The Execute of a refusal carried out by the server: its error is the client's.
    InjectedRaise,
    /// A Sync the gateway added (to close the refusal's statement): its ReadyForQuery is not
    /// the client's.
    InjectedSync,
}

#[derive(Debug)]
pub struct Op {
    pub seq: OpSeq,
    pub batch: u64,
    pub kind: OpKind,
    /// When it became the server's current op (the head of the queue).
    turn: Option<Instant>,
    rows: u64,
    data_rows: u64,
    bytes: u64,
    error: Option<(String, String)>,
    tags: Vec<String>,
    /// A query got at least one statement's answer (CommandComplete, EmptyQueryResponse or
    /// ErrorResponse): a ReadyForQuery before that answers nothing the gateway sent.
    answered: bool,
    /// The masking its answer goes through (the session's when it was sent).
    masking: MaskVerdict,
    /// Values masked in its answer.
    masked: Counts,
}

/// A statement that finished (or never will), to record.
#[derive(Debug, PartialEq, Eq)]
pub struct Done {
    pub id: StatementId,
    pub result: StatementResult,
}

/// What the relay does with one server message.
#[derive(Debug, Default)]
pub struct Reaction {
    /// Relay it to the client (false: it answers a message the gateway added).
    pub drop: bool,
    pub done: Vec<Done>,
    /// The server now reads COPY data from the client.
    pub copy_in: bool,
    /// ReadyForQuery with this status.
    pub ready: Option<u8>,
    /// The server's responses no longer match the requests: end the session.
    pub violation: Option<String>,
    /// A Parse the server refused: recorded (after the fact; nothing ran).
    pub refused_parse: Option<RefusedParse>,
}

/// A failed Bind: its portal, SQLSTATE and message.
#[derive(Debug)]
struct BindError {
    portal: Vec<u8>,
    code: String,
    message: String,
}

/// A statement the server refused to prepare.
#[derive(Debug)]
pub struct RefusedParse {
    pub command: Arc<Command>,
    pub name: Vec<u8>,
    pub code: String,
    pub message: String,
}

/// Whether the server reads COPY data from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copy {
    No,
    /// After CopyInResponse, until the client's CopyDone/CopyFail.
    In,
}

pub struct Flow {
    ops: VecDeque<Op>,
    next_seq: OpSeq,
    /// Batch of the next client message: one more after every Sync.
    pub batch: u64,
    /// After an error in the extended protocol the server skips to the next Sync.
    skipping: bool,
    /// The batch the server is skipping, while `skipping`.
    skip_batch: u64,
    /// The error that started the skip, when a Bind failed: it is the error of the next
    /// skipped Execute of that portal (the statement the client tried to run). After a failed
    /// Parse, skipped Executes did not run (the Parse's own record carries its error).
    skip_error: Option<BindError>,
    /// Transaction status of the last ReadyForQuery.
    pub status: u8,
    pub copy: Copy,
    /// The op whose statement last entered COPY FROM STDIN.
    pub copy_op: OpSeq,
    pub names: Names,
    /// The client encoding the server last reported.
    pub encoding: ClientEncoding,
    /// The masking of the session's caller, as of the latest statement: ops take it when
    /// they are queued.
    pub masking: MaskVerdict,
    /// The policy generation `masking` was chosen under.
    pub masking_generation: u64,
}

impl Default for Flow {
    fn default() -> Self {
        Flow::new(ClientEncoding::Utf8)
    }
}

impl Flow {
    pub fn new(encoding: ClientEncoding) -> Self {
        Flow {
            ops: VecDeque::new(),
            next_seq: 1,
            batch: 0,
            skipping: false,
            skip_batch: 0,
            skip_error: None,
            status: b'I',
            copy: Copy::No,
            copy_op: 0,
            names: Names::default(),
            encoding,
            masking: MaskVerdict::None,
            masking_generation: 0,
        }
    }
}

impl Flow {
    /// The seq the next op will get (for name changes applied before it is pushed).
    pub fn next_seq(&self) -> OpSeq {
        self.next_seq
    }

    /// Queues an op for a message about to be sent upstream.
    pub fn push(&mut self, kind: OpKind) -> OpSeq {
        let seq = self.next_seq;
        self.next_seq += 1;
        let is_sync = matches!(kind, OpKind::Sync);
        let turn = self.ops.is_empty().then(Instant::now);
        self.ops.push_back(Op {
            seq,
            batch: self.batch,
            kind,
            turn,
            rows: 0,
            data_rows: 0,
            bytes: 0,
            error: None,
            tags: Vec::new(),
            answered: false,
            masking: self.masking.clone(),
            masked: Counts::default(),
        });
        if is_sync {
            self.batch += 1;
        }
        seq
    }

    /// Whether the server discards the client's next message: an extended-protocol message
    /// of the current batch failed, and the server skips everything up to the batch's Sync.
    /// Such a message is neither forwarded nor queued (it would never be answered).
    pub fn doomed(&self) -> bool {
        self.skipping && self.skip_batch == self.batch
    }

    /// The result of a statement the server skips ([`Flow::doomed`]): an Execute of the
    /// portal whose Bind failed carries that failure, any other did not run.
    pub fn doomed_result(&mut self, execute: Option<&[u8]>) -> StatementResult {
        StatementResult {
            status: self.skipped_status(execute),
            rows: 0,
            bytes: 0,
            duration: std::time::Duration::ZERO,
            masked: Vec::new(),
        }
    }

    fn skipped_status(&mut self, execute: Option<&[u8]>) -> ResultStatus {
        match self.skip_error.take() {
            Some(error) if execute == Some(&error.portal[..]) => ResultStatus::Failed {
                code: error.code,
                message: error.message,
            },
            error => {
                self.skip_error = error;
                ResultStatus::NotRun {
                    reason: NOT_RUN.to_owned(),
                }
            }
        }
    }

    /// Ops still waiting for their responses.
    pub fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Whether `op` has been answered (or was never queued).
    pub fn answered(&self, op: OpSeq) -> bool {
        self.ops.front().is_none_or(|head| head.seq > op)
    }

    pub fn transaction(&self) -> Transaction {
        match self.status {
            b'T' => Transaction::InBlock,
            b'E' => Transaction::Failed,
            _ => Transaction::Idle,
        }
    }

    /// What masks the server's next message on its way to the client: the current op's
    /// masking, or the session's for messages outside any (notifications, settings).
    pub fn shown_masker(&self) -> Option<Arc<Masker>> {
        match self.ops.front() {
            Some(op) => op.masking.shown().cloned(),
            None => self.masking.shown().cloned(),
        }
    }

    /// For a caller exempt from masking: what masks the copy the gateway keeps (the
    /// recording) of what the caller is shown unmasked.
    pub fn exempt_masker(&self) -> Option<Arc<Masker>> {
        let verdict = match self.ops.front() {
            Some(op) => &op.masking,
            None => &self.masking,
        };
        match verdict.shown() {
            Some(_) => None,
            None => verdict.kept().cloned(),
        }
    }

    /// Counts values masked in the current op's answer.
    pub fn add_masked(&mut self, counts: &Counts) {
        if let Some(head) = self.ops.front_mut() {
            head.masked.merge(counts);
        }
    }

    /// Bytes of a large message relayed for the current op (chunks of rows or COPY data).
    pub fn add_bytes(&mut self, n: usize) {
        if let Some(head) = self.ops.front_mut() {
            head.bytes += n as u64;
        }
    }

    /// Feeds one server message: its tag, its body (or the head of a large body) and the
    /// whole body's length.
    pub fn on_message(&mut self, tag: u8, body: &[u8], len: usize) -> Reaction {
        let mut r = Reaction::default();
        // Asynchronous messages may come at any time.
        if matches!(tag, b'N' | b'A' | b'S') {
            return r;
        }
        if self.skipping {
            self.skip_to_sync(&mut r);
        }
        let Some(head) = self.ops.front_mut() else {
            if tag == b'E' && codec::error_detail(body).severity == "FATAL" {
                // The server is closing the connection; the client should see why.
                return r;
            }
            r.violation = Some(format!(
                "the server sent {:?} when no request was waiting for an answer",
                char::from(tag)
            ));
            return r;
        };
        head.bytes += 5 + len as u64;
        if head.turn.is_none() {
            head.turn = Some(Instant::now());
        }
        let unexpected = |r: &mut Reaction, head: &Op| {
            r.violation = Some(format!(
                "the server sent {:?} in answer to {}",
                char::from(tag),
                head.describe()
            ));
        };
        match (&head.kind, tag) {
            (_, b'E') if codec::error_detail(body).severity == "FATAL" => {
                // Ends the connection; ops are completed as unknown when it closes.
            }
            (OpKind::Query { .. }, b'I') => head.answered = true,
            (OpKind::Query { .. }, b'T' | b'H' | b'd' | b'c') => {}
            (OpKind::Query { .. }, b'D') => head.data_rows += 1,
            (OpKind::Query { follows_names, .. }, b'C') => {
                head.answered = true;
                head.rows += codec::command_rows(body);
                if *follows_names {
                    head.tags.push(tag_text(body));
                }
            }
            (OpKind::Query { .. } | OpKind::FunctionCall { .. }, b'E') => {
                head.answered = true;
                if head.error.is_none() {
                    head.error = Some(error_of(body, self.encoding, head.masking.kept()));
                }
                self.copy = Copy::No;
            }
            (OpKind::Query { .. } | OpKind::Execute { .. }, b'G') => {
                self.copy = Copy::In;
                self.copy_op = head.seq;
                r.copy_in = true;
            }
            (
                OpKind::Query { .. }
                | OpKind::Sync
                | OpKind::FunctionCall { .. }
                | OpKind::InjectedSync,
                b'Z',
            ) => {
                if matches!(
                    head.kind,
                    OpKind::Query { .. } | OpKind::FunctionCall { .. }
                ) && !head.answered
                {
                    unexpected(&mut r, head);
                    return r;
                }
                let status = body.first().copied().unwrap_or(b'I');
                self.status = status;
                self.skipping = false;
                self.skip_error = None;
                self.copy = Copy::No;
                r.ready = Some(status);
                r.drop = matches!(head.kind, OpKind::InjectedSync);
                self.finish_head(&mut r);
                return r;
            }
            // A failure at Sync: the implicit transaction's commit failed.
            (OpKind::Sync, b'E') => {}
            (OpKind::FunctionCall { .. }, b'V') => head.answered = true,
            (OpKind::Parse { .. } | OpKind::Bind { .. } | OpKind::Close, b'1' | b'2' | b'3') => {
                let expected = match head.kind {
                    OpKind::Parse { .. } => b'1',
                    OpKind::Bind { .. } => b'2',
                    _ => b'3',
                };
                if tag != expected {
                    unexpected(&mut r, head);
                    return r;
                }
                self.finish_head(&mut r);
            }
            (OpKind::InjectedSetup, b'1' | b'2' | b'3') => {
                r.drop = true;
                self.finish_head(&mut r);
            }
            (OpKind::Describe { statement: true }, b't') => {}
            (OpKind::Describe { .. }, b'T' | b'n') => self.finish_head(&mut r),
            (OpKind::Execute { .. }, b'D') => head.data_rows += 1,
            (OpKind::Execute { .. }, b'H' | b'd' | b'c') => {}
            (OpKind::Execute { .. }, b'C' | b'I' | b's') => {
                head.rows = match tag {
                    b'C' => codec::command_rows(body),
                    b's' => head.data_rows,
                    _ => 0,
                };
                self.copy = Copy::No;
                self.finish_head(&mut r);
            }
            (
                OpKind::Parse { .. }
                | OpKind::Bind { .. }
                | OpKind::Describe { .. }
                | OpKind::Execute { .. }
                | OpKind::Close
                | OpKind::InjectedSetup
                | OpKind::InjectedRaise,
                b'E',
            ) => {
                head.error = Some(error_of(body, self.encoding, head.masking.kept()));
                if let OpKind::Parse { command, name } = &head.kind {
                    let (code, message) = error_of(body, self.encoding, head.masking.kept());
                    r.refused_parse = Some(RefusedParse {
                        command: command.clone(),
                        name: name.clone(),
                        code,
                        message,
                    });
                }
                self.copy = Copy::No;
                self.fail_head(&mut r);
            }
            _ => unexpected(&mut r, head),
        }
        r
    }

    /// The head op is answered: its name changes stand, its statement (if any) is done.
    fn finish_head(&mut self, r: &mut Reaction) {
        let Some(op) = self.ops.pop_front() else {
            return;
        };
        match &op.kind {
            OpKind::Query {
                follows_names,
                prepares,
                deallocates,
                ..
            } => {
                if *follows_names {
                    self.names.settle_query(
                        op.seq,
                        &op.tags,
                        prepares.as_deref(),
                        deallocates.as_deref(),
                    );
                }
                self.names.confirm(op.seq);
            }
            OpKind::Parse { .. } | OpKind::Bind { .. } | OpKind::Close => {
                self.names.confirm(op.seq)
            }
            _ => {}
        }
        if r.ready == Some(b'I') {
            self.names.transaction_ended(op.seq);
        }
        if let Some(done) = done(&op, None) {
            r.done.push(done);
        }
        self.next_turn();
    }

    /// The head op failed (extended protocol): it and the rest of its batch are undone, and
    /// the server skips to the Sync. The ops queued behind it up to the Sync will never be
    /// answered, so they are finished now: a wait on one of them must not outlast the error.
    fn fail_head(&mut self, r: &mut Reaction) {
        let Some(op) = self.ops.pop_front() else {
            return;
        };
        self.names.revert_batch_from(op.seq, op.batch);
        self.skipping = true;
        self.skip_batch = op.batch;
        self.skip_error = match (&op.kind, &op.error) {
            (OpKind::Bind { portal }, Some((code, message))) => Some(BindError {
                portal: portal.clone(),
                code: code.clone(),
                message: message.clone(),
            }),
            _ => None,
        };
        if let Some(done) = done(&op, None) {
            r.done.push(done);
        }
        self.skip_to_sync(r);
    }

    /// The server skips every message up to the next Sync after an error: those ops get no
    /// answer, and their statements did not run.
    fn skip_to_sync(&mut self, r: &mut Reaction) {
        while self
            .ops
            .front()
            .is_some_and(|op| !matches!(op.kind, OpKind::Sync | OpKind::InjectedSync))
        {
            if let Some(mut op) = self.ops.pop_front() {
                self.names.not_run(op.seq);
                let portal = match &op.kind {
                    OpKind::Execute { portal, .. } => Some(&portal[..]),
                    _ => None,
                };
                let not_run = match self.skipped_status(portal) {
                    ResultStatus::Failed { code, message } => {
                        op.error = Some((code, message));
                        None
                    }
                    _ => Some(NOT_RUN),
                };
                if let Some(done) = done(&op, not_run) {
                    r.done.push(done);
                }
            }
        }
        self.next_turn();
    }

    fn next_turn(&mut self) {
        if let Some(next) = self.ops.front_mut() {
            next.turn.get_or_insert_with(Instant::now);
        }
    }

    /// The session is ending: every statement still waiting gets an unknown outcome, with the
    /// rows and bytes already relayed.
    pub fn drain(&mut self, why: &str) -> Vec<Done> {
        let reason = format!("outcome unknown: {why} before the server finished answering");
        self.ops
            .drain(..)
            .filter_map(|op| {
                let id = statement_of(&op.kind)?;
                Some(Done {
                    id,
                    result: StatementResult {
                        status: ResultStatus::Unknown {
                            reason: reason.clone(),
                        },
                        rows: op.rows.max(op.data_rows),
                        bytes: op.bytes,
                        duration: op.turn.map(|t| t.elapsed()).unwrap_or_default(),
                        masked: masked_names(&op),
                    },
                })
            })
            .collect()
    }

    /// The statements in flight (their record seqs), for a record that names them.
    pub fn statements_in_flight(&self) -> Vec<u64> {
        self.ops
            .iter()
            .filter_map(|op| statement_of(&op.kind).map(StatementId::seq))
            .collect()
    }
}

impl Op {
    fn describe(&self) -> &'static str {
        match self.kind {
            OpKind::Query { .. } => "a query",
            OpKind::Parse { .. } => "a Parse",
            OpKind::Bind { .. } => "a Bind",
            OpKind::Describe { .. } => "a Describe",
            OpKind::Execute { .. } => "an Execute",
            OpKind::Close => "a Close",
            OpKind::Sync => "a Sync",
            OpKind::FunctionCall { .. } => "a function call",
            OpKind::InjectedSetup | OpKind::InjectedRaise | OpKind::InjectedSync => "a refusal",
        }
    }
}

fn statement_of(kind: &OpKind) -> Option<StatementId> {
    match kind {
        OpKind::Query { statement, .. }
        | OpKind::Execute { statement, .. }
        | OpKind::FunctionCall { statement } => *statement,
        _ => None,
    }
}

/// The finished op's statement result, if it carries a statement.
fn done(op: &Op, not_run: Option<&str>) -> Option<Done> {
    let id = statement_of(&op.kind)?;
    let status = match (not_run, &op.error) {
        (Some(reason), _) => ResultStatus::NotRun {
            reason: reason.to_owned(),
        },
        (None, Some((code, message))) => ResultStatus::Failed {
            code: code.clone(),
            message: message.clone(),
        },
        (None, None) => ResultStatus::Succeeded,
    };
    let rows = if matches!(op.kind, OpKind::Query { .. }) {
        op.rows
    } else {
        op.rows.max(if matches!(status, ResultStatus::Succeeded) {
            0
        } else {
            op.data_rows
        })
    };
    Some(Done {
        id,
        result: StatementResult {
            status,
            rows,
            bytes: op.bytes,
            duration: op.turn.map(|t| t.elapsed()).unwrap_or_default(),
            masked: masked_names(op),
        },
    })
}

/// Values masked in an op's answer, by kind name.
fn masked_names(op: &Op) -> Vec<(String, u64)> {
    let Some(masker) = op.masking.kept() else {
        return Vec::new();
    };
    op.masked
        .iter()
        .map(|(kind, n)| (masker.kind_name(kind).to_owned(), n))
        .collect()
}

/// The SQLSTATE and message of an error, its text read in the session's client encoding and
/// masked as the record's text is.
fn error_of(body: &[u8], encoding: ClientEncoding, kept: Option<&Arc<Masker>>) -> (String, String) {
    let detail = codec::error_detail(body);
    let message = codec::error_message_bytes(body)
        .and_then(|bytes| encoding.decode(bytes).map(|m| m.into_owned()))
        .unwrap_or(detail.message);
    let message = match kept.and_then(|m| m.mask_copy(message.as_bytes(), &mut Counts::default())) {
        Some(masked) => String::from_utf8_lossy(&masked).into_owned(),
        None => message,
    };
    (detail.code, message)
}

fn tag_text(body: &[u8]) -> String {
    let tag = body.strip_suffix(&[0]).unwrap_or(body);
    String::from_utf8_lossy(tag).into_owned()
}
