//! Matches upstream responses to the client messages that asked for them.
//!
//! The client side turns each message that will get a response into an [`Op`] (in wire order);
//! the upstream side feeds every response message to [`ResponseTracker::on_message`], which
//! says when a statement finished and how. Pure: no I/O, table-tested.

use crate::codec;
use bytes::Bytes;
use gatehouse_core::{Command, CommandError, CommandOutcome};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// Most named prepared statements and portals remembered per session; beyond that the oldest
/// names are forgotten and later uses are recorded with the statement text unknown.
const MAX_NAMES: usize = 10_000;

/// A client message awaiting its response, in the order sent upstream.
#[derive(Debug)]
pub enum Op {
    /// Simple query: ends at ReadyForQuery; may hold several statements.
    Query {
        command: Arc<Command>,
        started: Instant,
    },
    Parse {
        command: Arc<Command>,
        started: Instant,
    },
    Bind {
        command: Option<Arc<Command>>,
        started: Instant,
    },
    Describe,
    Execute {
        command: Option<Arc<Command>>,
        started: Instant,
    },
    Close,
    Sync,
    /// A fastpath function call: ends at ReadyForQuery.
    FunctionCall {
        command: Arc<Command>,
        started: Instant,
    },
    /// A response the gateway makes itself (a blocked statement's error), followed by a
    /// ReadyForQuery when `ready`.
    Reply {
        bytes: Bytes,
        ready: bool,
    },
}

/// A statement that finished upstream, ready to be audited.
#[derive(Debug, PartialEq, Eq)]
pub struct Completed {
    pub command: Arc<Command>,
    pub outcome: CommandOutcome,
}

/// Names the client gave its prepared statements and portals, to know what an Execute runs.
#[derive(Default)]
pub struct Names {
    statements: HashMap<String, Arc<Command>>,
    portals: HashMap<String, Arc<Command>>,
}

impl Names {
    pub fn parsed(&mut self, name: &str, command: Arc<Command>) {
        bounded_insert(&mut self.statements, name, command);
    }

    pub fn bound(&mut self, portal: &str, statement: &str) -> Option<Arc<Command>> {
        let command = self.statements.get(statement).cloned();
        match &command {
            Some(c) => bounded_insert(&mut self.portals, portal, c.clone()),
            None => {
                self.portals.remove(portal);
            }
        }
        command
    }

    pub fn portal(&self, portal: &str) -> Option<Arc<Command>> {
        self.portals.get(portal).cloned()
    }

    pub fn closed(&mut self, kind: u8, name: &str) {
        match kind {
            b'S' => {
                self.statements.remove(name);
            }
            _ => {
                self.portals.remove(name);
            }
        }
    }
}

fn bounded_insert(map: &mut HashMap<String, Arc<Command>>, name: &str, command: Arc<Command>) {
    if map.len() >= MAX_NAMES && !map.contains_key(name) {
        // Arbitrary eviction is enough: this only bounds memory for abusive clients.
        if let Some(victim) = map.keys().next().cloned() {
            map.remove(&victim);
        }
    }
    map.insert(name.to_owned(), command);
}

/// What the relay should do with an upstream message, besides forwarding it.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    None,
    Completed(Completed),
    /// ReadyForQuery with this transaction status (`I`, `T`, `E`).
    Ready(u8),
}

pub struct ResponseTracker {
    ops: VecDeque<Op>,
    /// After an error in the extended protocol the server skips to the next Sync.
    skipping: bool,
    /// Rows reported by CommandComplete tags for the op at the head.
    rows: u64,
    /// DataRows since the last CommandComplete (a suspended portal reports only these).
    data_rows: u64,
    error: Option<CommandError>,
    /// Transaction status of the last ReadyForQuery (`I`, `T` or `E`).
    pub status: u8,
}

impl Default for ResponseTracker {
    fn default() -> Self {
        ResponseTracker {
            ops: VecDeque::new(),
            skipping: false,
            rows: 0,
            data_rows: 0,
            error: None,
            status: b'I',
        }
    }
}

impl ResponseTracker {
    pub fn push(&mut self, op: Op) {
        self.ops.push_back(op);
    }

    pub fn pending(&self) -> usize {
        self.ops.len()
    }

    /// Takes a gateway reply now at the head of the queue: everything before it has been
    /// answered, so it can be written.
    pub fn take_reply(&mut self) -> Option<(Bytes, bool)> {
        if matches!(self.ops.front(), Some(Op::Reply { .. })) {
            if let Some(Op::Reply { bytes, ready }) = self.ops.pop_front() {
                return Some((bytes, ready));
            }
        }
        None
    }

    /// Statements still waiting for their outcome (the session is ending).
    pub fn drain_unfinished(&mut self) -> Vec<(Arc<Command>, Instant)> {
        self.ops
            .drain(..)
            .filter_map(|op| match op {
                Op::Query { command, started }
                | Op::Parse { command, started }
                | Op::FunctionCall { command, started } => Some((command, started)),
                Op::Execute {
                    command: Some(command),
                    started,
                } => Some((command, started)),
                _ => None,
            })
            .collect()
    }

    /// Feeds one upstream message (its tag, and its body without the header).
    pub fn on_message(&mut self, tag: u8, body: &[u8]) -> Event {
        if self.skipping {
            // Ops the server skipped after an error get no response of their own.
            while matches!(self.ops.front(), Some(op) if !matches!(op, Op::Sync)) {
                self.ops.pop_front();
            }
        }
        match tag {
            b'Z' => {
                let status = body.first().copied().unwrap_or(b'I');
                self.status = status;
                self.skipping = false;
                let event = match self.ops.front() {
                    Some(Op::Query { .. } | Op::Sync | Op::FunctionCall { .. }) => {
                        match self.ops.pop_front() {
                            Some(
                                Op::Query { command, started }
                                | Op::FunctionCall { command, started },
                            ) => Some(self.finish(command, started)),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                self.reset();
                event.map_or(Event::Ready(status), Event::Completed)
            }
            b'1' | b'2' | b'3' => {
                if matches!(
                    self.ops.front(),
                    Some(Op::Parse { .. } | Op::Bind { .. } | Op::Close)
                ) {
                    self.ops.pop_front();
                }
                Event::None
            }
            b'T' | b'n' => {
                if matches!(self.ops.front(), Some(Op::Describe)) {
                    self.ops.pop_front();
                }
                Event::None
            }
            b'D' => {
                self.data_rows += 1;
                Event::None
            }
            b'C' | b'I' | b's' => {
                let tagged = if tag == b'C' {
                    codec::command_rows(body)
                } else {
                    0
                };
                match self.ops.front() {
                    Some(Op::Execute { .. }) => {
                        self.rows = if tag == b's' { self.data_rows } else { tagged };
                        match self.ops.pop_front() {
                            Some(Op::Execute { command, started }) => {
                                Event::Completed(self.finish_unknown(command, started))
                            }
                            _ => Event::None,
                        }
                    }
                    Some(Op::Query { .. }) => {
                        // The statements of one simple query add up.
                        self.rows += tagged;
                        self.data_rows = 0;
                        Event::None
                    }
                    _ => Event::None,
                }
            }
            b'E' => {
                let (code, message) = codec::error_fields(body);
                let error = CommandError { code, message };
                match self.ops.front() {
                    Some(Op::Query { .. } | Op::FunctionCall { .. }) => {
                        self.error.get_or_insert(error);
                        Event::None
                    }
                    Some(
                        Op::Parse { .. }
                        | Op::Bind { .. }
                        | Op::Execute { .. }
                        | Op::Describe
                        | Op::Close,
                    ) => {
                        self.skipping = true;
                        self.error = Some(error);
                        let completed = match self.ops.pop_front() {
                            Some(Op::Parse { command, started }) => {
                                Some(self.finish(command, started))
                            }
                            Some(
                                Op::Bind { command, started } | Op::Execute { command, started },
                            ) => Some(self.finish_unknown(command, started)),
                            _ => None,
                        };
                        self.reset();
                        completed.map_or(Event::None, Event::Completed)
                    }
                    _ => Event::None,
                }
            }
            _ => Event::None,
        }
    }

    fn finish_unknown(&mut self, command: Option<Arc<Command>>, started: Instant) -> Completed {
        let command = command
            .unwrap_or_else(|| Arc::new(Command::sql("/* statement unknown to the gateway */")));
        self.finish(command, started)
    }

    fn finish(&mut self, command: Arc<Command>, started: Instant) -> Completed {
        let completed = Completed {
            command,
            outcome: CommandOutcome {
                error: self.error.take(),
                rows: self.rows,
                duration: started.elapsed(),
            },
        };
        self.reset();
        completed
    }

    fn reset(&mut self) {
        self.rows = 0;
        self.data_rows = 0;
        self.error = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(sql: &str) -> Arc<Command> {
        Arc::new(Command::sql(sql))
    }

    fn now() -> Instant {
        Instant::now()
    }

    fn completed(event: Event) -> Completed {
        match event {
            Event::Completed(c) => c,
            other => panic!("expected a completed statement, got {other:?}"),
        }
    }

    #[test]
    fn simple_query_with_several_statements_is_one_record() {
        let mut t = ResponseTracker::default();
        t.push(Op::Query {
            command: cmd("INSERT INTO t VALUES (1); SELECT * FROM t"),
            started: now(),
        });
        assert_eq!(t.on_message(b'C', b"INSERT 0 1\0"), Event::None);
        assert_eq!(t.on_message(b'T', b""), Event::None);
        t.on_message(b'D', b"");
        t.on_message(b'D', b"");
        assert_eq!(t.on_message(b'C', b"SELECT 2\0"), Event::None);
        let c = completed(t.on_message(b'Z', b"I"));
        assert_eq!(c.outcome.rows, 3);
        assert!(c.outcome.error.is_none());
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn simple_query_error_is_recorded() {
        let mut t = ResponseTracker::default();
        t.push(Op::Query {
            command: cmd("SELECT 1/0"),
            started: now(),
        });
        t.on_message(b'E', b"SERROR\0C22012\0Mdivision by zero\0\0");
        let c = completed(t.on_message(b'Z', b"I"));
        let err = c.outcome.error.unwrap();
        assert_eq!(
            (err.code.as_str(), err.message.as_str()),
            ("22012", "division by zero")
        );
    }

    #[test]
    fn extended_pipeline_records_each_execute() {
        let mut names = Names::default();
        let mut t = ResponseTracker::default();
        let select = cmd("SELECT $1");
        names.parsed("s1", select.clone());
        t.push(Op::Parse {
            command: select.clone(),
            started: now(),
        });
        for _ in 0..2 {
            let bound = names.bound("", "s1");
            t.push(Op::Bind {
                command: bound.clone(),
                started: now(),
            });
            t.push(Op::Execute {
                command: names.portal(""),
                started: now(),
            });
        }
        t.push(Op::Sync);
        assert_eq!(t.on_message(b'1', b""), Event::None);
        for _ in 0..2 {
            assert_eq!(t.on_message(b'2', b""), Event::None);
            t.on_message(b'D', b"");
            let c = completed(t.on_message(b'C', b"SELECT 1\0"));
            assert_eq!(c.command.text.as_ref(), "SELECT $1");
            assert_eq!(c.outcome.rows, 1);
        }
        assert_eq!(t.on_message(b'Z', b"I"), Event::Ready(b'I'));
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn error_in_pipeline_skips_to_sync() {
        let mut t = ResponseTracker::default();
        t.push(Op::Parse {
            command: cmd("SELEC 1"),
            started: now(),
        });
        t.push(Op::Bind {
            command: None,
            started: now(),
        });
        t.push(Op::Execute {
            command: None,
            started: now(),
        });
        t.push(Op::Sync);
        t.push(Op::Parse {
            command: cmd("SELECT 2"),
            started: now(),
        });
        t.push(Op::Sync);
        let c = completed(t.on_message(b'E', b"SERROR\0C42601\0Msyntax error\0\0"));
        assert_eq!(c.command.text.as_ref(), "SELEC 1");
        assert_eq!(c.outcome.error.unwrap().code, "42601");
        // Bind and Execute were skipped by the server: the next response is the Sync's.
        assert_eq!(t.on_message(b'Z', b"I"), Event::Ready(b'I'));
        assert_eq!(t.on_message(b'1', b""), Event::None);
        assert_eq!(t.on_message(b'Z', b"I"), Event::Ready(b'I'));
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn suspended_portal_reports_rows_sent() {
        let mut t = ResponseTracker::default();
        t.push(Op::Execute {
            command: Some(cmd("SELECT * FROM big")),
            started: now(),
        });
        for _ in 0..5 {
            t.on_message(b'D', b"");
        }
        assert_eq!(completed(t.on_message(b's', b"")).outcome.rows, 5);
    }

    #[test]
    fn describe_and_close_are_matched() {
        let mut t = ResponseTracker::default();
        t.push(Op::Describe);
        t.push(Op::Close);
        t.push(Op::Sync);
        t.on_message(b't', b"");
        t.on_message(b'T', b"");
        t.on_message(b'3', b"");
        assert_eq!(t.on_message(b'Z', b"T"), Event::Ready(b'T'));
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn replies_wait_for_earlier_responses() {
        let mut t = ResponseTracker::default();
        t.push(Op::Query {
            command: cmd("SELECT 1"),
            started: now(),
        });
        t.push(Op::Reply {
            bytes: Bytes::from_static(b"x"),
            ready: true,
        });
        assert!(t.take_reply().is_none());
        t.on_message(b'C', b"SELECT 1\0");
        completed(t.on_message(b'Z', b"T"));
        assert_eq!(t.take_reply(), Some((Bytes::from_static(b"x"), true)));
        assert_eq!(t.status, b'T');
    }

    #[test]
    fn unsolicited_messages_are_harmless() {
        let mut t = ResponseTracker::default();
        for tag in [b'N', b'A', b'S', b'C', b'E', b'D', b'1', b'T'] {
            assert_eq!(t.on_message(tag, b"garbage"), Event::None);
        }
        assert_eq!(t.on_message(b'Z', b""), Event::Ready(b'I'));
    }
}
