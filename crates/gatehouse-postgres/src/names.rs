//! The server's prepared statements and portals, as the server will see them.
//!
//! The client loop applies each Parse, Bind and Close in wire order, *contingently*: the entry
//! depends on that message succeeding on the server, and its previous value is kept. The
//! response side then confirms or reverts each message as the server answers it: an error, or
//! the server skipping a message after an earlier error in the batch, reverts it. So the map
//! never holds a text the server did not accept (a refused re-Parse of a name, a `PREPARE` in
//! SQL that failed), and a name that cannot be followed is recorded as unknown — never as
//! another statement's text.
//!
//! Whether an entry can be relied on when an Execute is admitted: a confirmed entry, yes; an
//! entry contingent on a message of the *same* batch (no Sync between), yes too — if that
//! message fails the server skips everything up to the Sync, this Execute included. An entry
//! contingent on an earlier batch, or names a simple query may change in SQL (`PREPARE`,
//! `DEALLOCATE`, `DISCARD`) while it runs, must wait for the server's answer first.
//!
//! Names are bytes, compared as the server compares them. Pure: no I/O.

use gatehouse_core::Command;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Most prepared statements or portals followed per session; beyond that, new names are not
/// followed and are recorded as unknown (existing ones stay exact).
pub const MAX_NAMES: usize = 10_000;

/// An op's position in the session's message stream.
pub type OpSeq = u64;

/// What the gateway knows a name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    Text(Arc<Command>),
    /// The name exists on the server but its text could not be followed.
    Unknown,
}

#[derive(Debug, Clone)]
struct Entry {
    value: Known,
    /// The op whose success this entry depends on, and that op's batch; `None` once the
    /// server accepted it.
    contingent: Option<(OpSeq, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Space {
    Statement,
    Portal,
}

/// Undo information for one op's change to one name: what the name held before.
#[derive(Debug)]
struct Change {
    op: OpSeq,
    batch: u64,
    space: Space,
    name: Vec<u8>,
    previous: Option<Entry>,
}

/// The answer to "what does this name stand for on the server right now?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Known(Known),
    /// No such name (the server will report an error).
    Missing,
    /// Depends on the server's answer to this earlier op: wait for it, then look again.
    WaitFor(OpSeq),
}

#[derive(Debug, Default)]
pub struct Names {
    statements: HashMap<Vec<u8>, Entry>,
    portals: HashMap<Vec<u8>, Entry>,
    /// Changes not yet confirmed, in op order.
    changes: VecDeque<Change>,
    /// A simple query that may change prepared statements in SQL is in flight.
    unsettled_by: Option<OpSeq>,
}

impl Names {
    fn map(&mut self, space: Space) -> &mut HashMap<Vec<u8>, Entry> {
        match space {
            Space::Statement => &mut self.statements,
            Space::Portal => &mut self.portals,
        }
    }

    fn get(&self, space: Space, name: &[u8]) -> Option<&Entry> {
        match space {
            Space::Statement => self.statements.get(name),
            Space::Portal => self.portals.get(name),
        }
    }

    /// The op to wait for before `name` can be changed or read by a message of `batch`: an
    /// entry that depends on an earlier batch's answer (or unsettled SQL) is not known yet.
    fn pending_before(&self, space: Space, name: &[u8], batch: u64) -> Option<OpSeq> {
        if space == Space::Statement {
            if let Some(op) = self.unsettled_by {
                return Some(op);
            }
        }
        match self.get(space, name) {
            Some(Entry {
                contingent: Some((op, b)),
                ..
            }) if *b != batch => Some(*op),
            _ => None,
        }
    }

    fn set(&mut self, op: OpSeq, batch: u64, space: Space, name: &[u8], value: Option<Known>) {
        let map = self.map(space);
        if value.is_some() && !map.contains_key(name) && map.len() >= MAX_NAMES {
            // Not followed: a later use finds nothing and is recorded as unknown.
            return;
        }
        let entry = value.map(|value| Entry {
            value,
            contingent: Some((op, batch)),
        });
        let previous = match entry {
            Some(entry) => map.insert(name.to_vec(), entry),
            None => map.remove(name),
        };
        self.changes.push_back(Change {
            op,
            batch,
            space,
            name: name.to_vec(),
            previous,
        });
    }

    /// A Parse of `name` (empty: the unnamed statement), or the op to wait for first.
    pub fn parse(
        &mut self,
        op: OpSeq,
        batch: u64,
        name: &[u8],
        command: Arc<Command>,
    ) -> Result<(), OpSeq> {
        if !name.is_empty() {
            if let Some(wait) = self.pending_before(Space::Statement, name, batch) {
                return Err(wait);
            }
            if self.statements.contains_key(name) {
                // The server refuses a named statement that exists: nothing changes.
                return Ok(());
            }
        }
        self.set(
            op,
            batch,
            Space::Statement,
            name,
            Some(Known::Text(command)),
        );
        Ok(())
    }

    /// A Bind of `portal` to what `statement` stands for, or the op to wait for first.
    pub fn bind(
        &mut self,
        op: OpSeq,
        batch: u64,
        portal: &[u8],
        statement: Known,
    ) -> Result<(), OpSeq> {
        if !portal.is_empty() {
            if let Some(wait) = self.pending_before(Space::Portal, portal, batch) {
                return Err(wait);
            }
            if self.portals.contains_key(portal) {
                return Ok(());
            }
        }
        self.set(op, batch, Space::Portal, portal, Some(statement));
        Ok(())
    }

    /// A Close of a statement (`S`) or portal (`P`), or the op to wait for first.
    pub fn close(&mut self, op: OpSeq, batch: u64, kind: u8, name: &[u8]) -> Result<(), OpSeq> {
        let space = if kind == b'S' {
            Space::Statement
        } else {
            Space::Portal
        };
        if let Some(wait) = self.pending_before(space, name, batch) {
            return Err(wait);
        }
        if self.map(space).contains_key(name) {
            self.set(op, batch, space, name, None);
        }
        Ok(())
    }

    /// A simple query: it drops the unnamed statement and portal before it runs; when it may
    /// `PREPARE`/`DEALLOCATE`/`DISCARD`, names are unsettled until it is answered. Returns the
    /// op to wait for first when such a query is already in flight.
    pub fn query(
        &mut self,
        op: OpSeq,
        batch: u64,
        may_change_statements: bool,
    ) -> Result<(), OpSeq> {
        if let Some(wait) = self.unsettled_by {
            return Err(wait);
        }
        for space in [Space::Statement, Space::Portal] {
            if self.map(space).contains_key(&b""[..]) {
                self.set(op, batch, space, b"", None);
            }
        }
        if may_change_statements {
            self.unsettled_by = Some(op);
        }
        Ok(())
    }

    /// What statement `name` stands for, for a message of `batch`.
    pub fn lookup_statement(&self, name: &[u8], batch: u64) -> Lookup {
        self.lookup(Space::Statement, name, batch)
    }

    pub fn lookup_portal(&self, name: &[u8], batch: u64) -> Lookup {
        self.lookup(Space::Portal, name, batch)
    }

    fn lookup(&self, space: Space, name: &[u8], batch: u64) -> Lookup {
        if let Some(op) = self.pending_before(space, name, batch) {
            return Lookup::WaitFor(op);
        }
        match self.get(space, name) {
            None => Lookup::Missing,
            Some(entry) => Lookup::Known(entry.value.clone()),
        }
    }

    /// The server skipped op `op` (after an earlier error in its batch): a simple query that
    /// was to settle names in SQL never ran, so names are settled again. (Its batch's changes
    /// are undone by [`Names::revert_batch_from`].)
    pub fn not_run(&mut self, op: OpSeq) {
        if self.unsettled_by == Some(op) {
            self.unsettled_by = None;
        }
    }

    /// The server accepted every op up to `op`: their changes stand.
    pub fn confirm(&mut self, op: OpSeq) {
        while self.changes.front().is_some_and(|c| c.op <= op) {
            let Some(change) = self.changes.pop_front() else {
                break;
            };
            if let Some(entry) = self.map(change.space).get_mut(&change.name) {
                if entry.contingent.is_some_and(|(o, _)| o == change.op) {
                    entry.contingent = None;
                }
            }
        }
    }

    /// The server refused op `from` of `batch`, and skipped the rest of that batch: their
    /// changes are undone. Later batches' changes stay (they never depend on these, see
    /// [`Names::parse`]); where one changed the same name again, its own undo information is
    /// corrected instead.
    pub fn revert_batch_from(&mut self, from: OpSeq, batch: u64) {
        let mut i = self.changes.len();
        while i > 0 {
            i -= 1;
            if self.changes[i].batch == batch && self.changes[i].op >= from {
                if let Some(change) = self.changes.remove(i) {
                    self.undo(change);
                }
            }
        }
    }

    fn undo(&mut self, change: Change) {
        let later = self
            .changes
            .iter_mut()
            .find(|c| c.op > change.op && c.space == change.space && c.name == change.name);
        if let Some(later) = later {
            later.previous = change.previous;
            return;
        }
        let unnamed_statement = change.space == Space::Statement && change.name.is_empty();
        let map = self.map(change.space);
        match change.previous {
            // The unnamed statement is dropped even when its new Parse fails.
            Some(_) if unnamed_statement => {
                map.remove(&change.name);
            }
            Some(previous) => {
                map.insert(change.name, previous);
            }
            None => {
                map.remove(&change.name);
            }
        }
    }

    /// A simple query that may have changed prepared statements in SQL finished; `tags` are
    /// its CommandComplete tags in order, `prepared` the statements its text prepares (name
    /// and text, in order) when the text could be followed.
    pub fn settle_query(
        &mut self,
        op: OpSeq,
        tags: &[String],
        prepared: Option<&[(Vec<u8>, Arc<Command>)]>,
        deallocated: Option<&[Option<Vec<u8>>]>,
    ) {
        if self.unsettled_by == Some(op) {
            self.unsettled_by = None;
        }
        let mut prepares = prepared.map(|p| p.iter());
        let mut deallocates = deallocated.map(|d| d.iter());
        for tag in tags {
            match tag.as_str() {
                "PREPARE" => match prepares.as_mut().and_then(Iterator::next) {
                    Some((name, command)) => {
                        insert_confirmed(&mut self.statements, name, Known::Text(command.clone()))
                    }
                    None => self.forget_statement_texts(),
                },
                // The tag does not say which name went: the text says, when it can be read.
                "DEALLOCATE" => match deallocates.as_mut().and_then(Iterator::next) {
                    Some(Some(name)) => {
                        self.statements.remove(name);
                    }
                    _ => self.forget_statement_texts(),
                },
                "DEALLOCATE ALL" | "DISCARD ALL" => {
                    self.statements.clear();
                    self.portals.clear();
                    self.changes.clear();
                }
                _ => {}
            }
        }
    }

    /// Every statement name stays, but what it stands for is no longer known.
    fn forget_statement_texts(&mut self) {
        for entry in self.statements.values_mut() {
            entry.value = Known::Unknown;
        }
    }

    /// The transaction ended at op `upto` (ReadyForQuery idle): the server dropped every portal
    /// created up to there. Portals of later ops (the next batch, already sent) stay.
    pub fn transaction_ended(&mut self, upto: OpSeq) {
        self.portals
            .retain(|_, e| e.contingent.is_some_and(|(op, _)| op > upto));
        self.changes
            .retain(|c| c.space != Space::Portal || c.op > upto);
        for change in self.changes.iter_mut() {
            if change.space == Space::Portal
                && change
                    .previous
                    .as_ref()
                    .is_some_and(|p| p.contingent.is_none_or(|(op, _)| op <= upto))
            {
                change.previous = None;
            }
        }
    }
}

fn insert_confirmed(map: &mut HashMap<Vec<u8>, Entry>, name: &[u8], value: Known) {
    if map.contains_key(name) || map.len() < MAX_NAMES {
        map.insert(
            name.to_vec(),
            Entry {
                value,
                contingent: None,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(sql: &str) -> Arc<Command> {
        Arc::new(Command::sql(sql))
    }

    fn text(l: Lookup) -> String {
        match l {
            Lookup::Known(Known::Text(c)) => c.text.to_string(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn a_refused_reparse_keeps_the_servers_text() {
        let mut n = Names::default();
        n.parse(1, 0, b"s", cmd("SELECT 1")).unwrap();
        n.confirm(1);
        // Parse of an existing name: the server refuses it (42P05).
        n.parse(2, 1, b"s", cmd("UPDATE t SET a = 1")).unwrap();
        n.revert_batch_from(2, 1);
        assert_eq!(text(n.lookup_statement(b"s", 2)), "SELECT 1");
    }

    #[test]
    fn a_failed_parse_and_everything_skipped_after_it_are_undone() {
        let mut n = Names::default();
        n.parse(1, 0, b"a", cmd("SELECT 1")).unwrap();
        n.bind(2, 0, b"p", Known::Text(cmd("SELECT 1"))).unwrap();
        n.close(3, 0, b'S', b"a").unwrap();
        // Op 1 fails: 2 and 3 were skipped by the server.
        n.revert_batch_from(1, 0);
        assert_eq!(n.lookup_statement(b"a", 1), Lookup::Missing);
        assert_eq!(n.lookup_portal(b"p", 1), Lookup::Missing);
    }

    #[test]
    fn the_unnamed_statement_is_gone_even_when_its_parse_fails() {
        let mut n = Names::default();
        n.parse(1, 0, b"", cmd("SELECT 1")).unwrap();
        n.confirm(1);
        n.parse(2, 1, b"", cmd("SELEC bad")).unwrap();
        n.revert_batch_from(2, 1);
        assert_eq!(n.lookup_statement(b"", 2), Lookup::Missing);
    }

    #[test]
    fn a_failure_in_one_batch_leaves_the_next_batch_alone() {
        let mut n = Names::default();
        // Two pipelined batches, each preparing the unnamed statement.
        n.parse(1, 0, b"", cmd("SELECT 1")).unwrap();
        n.parse(3, 1, b"", cmd("UPDATE t SET a = 2")).unwrap();
        // Batch 0's Parse failed; batch 1's stands.
        n.revert_batch_from(1, 0);
        assert_eq!(text(n.lookup_statement(b"", 1)), "UPDATE t SET a = 2");
        // And if batch 1's fails too, nothing is left (the unnamed statement is dropped).
        n.revert_batch_from(3, 1);
        assert_eq!(n.lookup_statement(b"", 2), Lookup::Missing);
    }

    #[test]
    fn an_entry_from_an_earlier_batch_waits_for_its_answer() {
        let mut n = Names::default();
        n.parse(1, 0, b"s", cmd("SELECT 1")).unwrap();
        assert_eq!(text(n.lookup_statement(b"s", 0)), "SELECT 1", "same batch");
        assert_eq!(n.lookup_statement(b"s", 1), Lookup::WaitFor(1));
        assert_eq!(n.parse(2, 1, b"s", cmd("SELECT 2")), Err(1));
        assert_eq!(n.close(2, 1, b'S', b"s"), Err(1));
        n.confirm(1);
        assert_eq!(text(n.lookup_statement(b"s", 1)), "SELECT 1");
    }

    #[test]
    fn sql_prepare_and_deallocate_are_followed_by_their_tags() {
        let mut n = Names::default();
        n.query(1, 0, true).unwrap();
        assert_eq!(n.lookup_statement(b"p", 1), Lookup::WaitFor(1));
        assert_eq!(n.query(2, 1, false), Err(1));
        let prepared = vec![(b"p".to_vec(), cmd("PREPARE p AS DELETE FROM t"))];
        n.settle_query(1, &["PREPARE".into()], Some(&prepared), None);
        assert_eq!(
            text(n.lookup_statement(b"p", 1)),
            "PREPARE p AS DELETE FROM t"
        );
        // A second PREPARE of the same name failed: no tag, nothing changes.
        n.query(2, 1, true).unwrap();
        n.settle_query(
            2,
            &[],
            Some(&[(b"p".to_vec(), cmd("PREPARE p AS SELECT 1"))]),
            None,
        );
        assert_eq!(
            text(n.lookup_statement(b"p", 2)),
            "PREPARE p AS DELETE FROM t"
        );
        n.query(3, 2, true).unwrap();
        n.settle_query(3, &["DEALLOCATE".into()], None, None);
        assert_eq!(n.lookup_statement(b"p", 3), Lookup::Known(Known::Unknown));
        n.parse(4, 3, b"q", cmd("SELECT 2")).unwrap();
        n.confirm(4);
        n.query(5, 4, true).unwrap();
        n.settle_query(
            5,
            &["DEALLOCATE".into()],
            None,
            Some(&[Some(b"q".to_vec())]),
        );
        assert_eq!(n.lookup_statement(b"q", 5), Lookup::Missing);
        n.query(6, 5, true).unwrap();
        n.settle_query(6, &["DISCARD ALL".into()], None, None);
        assert_eq!(n.lookup_statement(b"p", 6), Lookup::Missing);
    }

    #[test]
    fn a_query_drops_the_unnamed_statement_and_portal() {
        let mut n = Names::default();
        n.parse(1, 0, b"", cmd("SELECT 1")).unwrap();
        n.bind(2, 0, b"", Known::Text(cmd("SELECT 1"))).unwrap();
        n.confirm(2);
        n.query(3, 1, false).unwrap();
        n.confirm(3);
        assert_eq!(n.lookup_statement(b"", 2), Lookup::Missing);
        assert_eq!(n.lookup_portal(b"", 2), Lookup::Missing);
    }

    #[test]
    fn portals_end_with_their_transaction_but_not_the_next_ones() {
        let mut n = Names::default();
        n.bind(1, 0, b"p", Known::Text(cmd("SELECT 1"))).unwrap();
        n.bind(4, 1, b"q", Known::Text(cmd("SELECT 2"))).unwrap();
        n.confirm(1);
        n.transaction_ended(2);
        assert_eq!(n.lookup_portal(b"p", 1), Lookup::Missing);
        assert_eq!(text(n.lookup_portal(b"q", 1)), "SELECT 2");
    }

    #[test]
    fn names_beyond_the_bound_are_not_followed() {
        let mut n = Names::default();
        for i in 0..MAX_NAMES as u64 {
            n.parse(i, 0, format!("s{i}").as_bytes(), cmd("SELECT 1"))
                .unwrap();
        }
        n.confirm(MAX_NAMES as u64);
        n.parse(99_999, 1, b"extra", cmd("UPDATE t SET a = 1"))
            .unwrap();
        assert_eq!(n.lookup_statement(b"extra", 1), Lookup::Missing);
        assert_eq!(text(n.lookup_statement(b"s0", 1)), "SELECT 1");
    }

    #[test]
    fn names_are_bytes() {
        let mut n = Names::default();
        n.parse(1, 0, b"\xff", cmd("SELECT 1")).unwrap();
        n.parse(2, 0, b"\xfe", cmd("UPDATE t SET a = 1")).unwrap();
        n.confirm(2);
        assert_eq!(text(n.lookup_statement(b"\xff", 1)), "SELECT 1");
        assert_eq!(text(n.lookup_statement(b"\xfe", 1)), "UPDATE t SET a = 1");
    }
}
