//! Pairs `statement` records with their `statement.result`s while reading a log in order.
//!
//! A forwarded statement is written with outcome `pending` before it reaches the server, and
//! its result follows (`ref` = the statement's `seq`). A statement still pending when its
//! session ends, or at the end of the log, has an unknown outcome: the gateway stopped before
//! it could see one. Memory is bounded by the statements in flight at any point of the log.

use std::collections::BTreeMap;

use crate::event::{Event, EventKind, Status};

/// Statements seen without their result yet, with something the reader keeps for each.
pub(crate) struct Pending<T> {
    open: BTreeMap<u64, (Option<String>, T)>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending {
            open: BTreeMap::new(),
        }
    }
}

/// What a record means for the pairing.
pub(crate) enum Role {
    /// A forwarded statement whose result is still to come.
    Opens,
    /// The result of the statement with this `seq`.
    Resolves(u64),
    /// The end of a session: its pending statements will never get a result.
    EndsSession,
    Other,
}

pub(crate) fn role(event: &Event) -> Role {
    role_of(event.kind, event.outcome.status, event.refers)
}

/// [`role`] from the only fields it reads.
pub(crate) fn role_of(kind: EventKind, status: Status, refers: Option<u64>) -> Role {
    match kind {
        EventKind::Statement if status == Status::Pending => Role::Opens,
        EventKind::StatementResult => match refers {
            Some(seq) => Role::Resolves(seq),
            None => Role::Other,
        },
        EventKind::SessionEnd => Role::EndsSession,
        _ => Role::Other,
    }
}

impl<T> Pending<T> {
    pub fn open(&mut self, seq: u64, session: Option<String>, value: T) {
        self.open.insert(seq, (session, value));
    }

    /// The statement `seq` got its result; `None` if it was not pending.
    pub fn resolve(&mut self, seq: u64) -> Option<T> {
        self.open.remove(&seq).map(|(_, value)| value)
    }

    /// Takes the pending statements of `session`, in `seq` order.
    pub fn end_session(&mut self, session: Option<&str>) -> Vec<(u64, T)> {
        let Some(session) = session else {
            return Vec::new();
        };
        let ended: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, (s, _))| s.as_deref() == Some(session))
            .map(|(seq, _)| *seq)
            .collect();
        ended
            .into_iter()
            .filter_map(|seq| self.open.remove(&seq).map(|(_, v)| (seq, v)))
            .collect()
    }

    /// Takes everything still pending with its session, in `seq` order.
    pub fn drain_sessions(&mut self) -> Vec<(u64, Option<String>)> {
        std::mem::take(&mut self.open)
            .into_iter()
            .map(|(seq, (session, _))| (seq, session))
            .collect()
    }

    /// Takes everything still pending, in `seq` order.
    pub fn drain(&mut self) -> Vec<(u64, T)> {
        std::mem::take(&mut self.open)
            .into_iter()
            .map(|(seq, (_, v))| (seq, v))
            .collect()
    }
}
