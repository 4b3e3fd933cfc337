//! Where the pipeline's audit records go: the file log in production, memory in tests.

use gatehouse_audit::{AuditError, AuditLog, Event, Ticket};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

/// A future that resolves once a ticket is durable (or the sink failed).
pub type Durability<'a> = Pin<Box<dyn Future<Output = Result<(), AuditError>> + Send + 'a>>;

/// An append-only record sink with tickets that become durable in order.
pub trait AuditSink: Send + Sync {
    /// Takes a record; the ticket is durable once [`AuditSink::durable`] says so.
    fn append(&self, event: Event) -> Result<Ticket, AuditError>;
    /// `Some` when the answer is known without waiting.
    fn check_durable(&self, ticket: Ticket) -> Option<Result<(), AuditError>>;
    /// Waits until the ticket (and every earlier one) is durable.
    fn durable(&self, ticket: Ticket) -> Durability<'_>;
    /// `Some(reason)` while the sink refuses records: nothing may proceed that needs one.
    fn failure(&self) -> Option<String>;
}

impl AuditSink for AuditLog {
    fn append(&self, event: Event) -> Result<Ticket, AuditError> {
        AuditLog::append(self, event)
    }

    fn check_durable(&self, ticket: Ticket) -> Option<Result<(), AuditError>> {
        AuditLog::check_durable(self, ticket)
    }

    fn durable(&self, ticket: Ticket) -> Durability<'_> {
        Box::pin(AuditLog::durable(self, ticket))
    }

    fn failure(&self) -> Option<String> {
        AuditLog::failure(self)
    }
}

/// Waits for a ticket, without allocating when it is already durable.
pub async fn wait_durable(sink: &dyn AuditSink, ticket: Ticket) -> Result<(), AuditError> {
    match sink.check_durable(ticket) {
        Some(done) => done,
        None => sink.durable(ticket).await,
    }
}

/// Appends and waits until durable.
pub async fn record(sink: &dyn AuditSink, event: Event) -> Result<(), AuditError> {
    let ticket = sink.append(event)?;
    wait_durable(sink, ticket).await
}

/// An in-memory sink for tests: records are kept in order, durable at once, and the sink can
/// be made to fail (and recover) at any point.
#[derive(Clone, Default)]
pub struct MemorySink {
    inner: Arc<Mutex<Memory>>,
}

#[derive(Default)]
struct Memory {
    events: Vec<Event>,
    failure: Option<String>,
}

impl MemorySink {
    pub fn new() -> Self {
        MemorySink::default()
    }

    /// Every record taken so far, in order (the first has seq 1).
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// From now on every append is refused with `reason` (until [`MemorySink::recover`]).
    pub fn fail(&self, reason: &str) {
        self.lock().failure = Some(reason.to_owned());
    }

    pub fn recover(&self) {
        self.lock().failure = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl AuditSink for MemorySink {
    fn append(&self, event: Event) -> Result<Ticket, AuditError> {
        let mut memory = self.lock();
        if let Some(why) = &memory.failure {
            return Err(AuditError::Unavailable(why.clone()));
        }
        memory.events.push(event);
        Ok(Ticket::new(memory.events.len() as u64))
    }

    fn check_durable(&self, ticket: Ticket) -> Option<Result<(), AuditError>> {
        let memory = self.lock();
        if ticket.seq() <= memory.events.len() as u64 {
            Some(Ok(()))
        } else {
            Some(Err(AuditError::Unavailable("no such record".into())))
        }
    }

    fn durable(&self, ticket: Ticket) -> Durability<'_> {
        let done = self.check_durable(ticket).unwrap_or(Ok(()));
        Box::pin(async move { done })
    }

    fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }
}
