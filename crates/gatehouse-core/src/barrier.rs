//! The barrier between the audit log and the wire: output that depends on audit records leaves
//! only once they are durable.
//!
//! An adapter never holds its sockets' write halves directly: a [`Session`](crate::Session)
//! wraps them in [`Gated`] writers. Towards the upstream, a statement's message may be written
//! only after its `statement` record is durable (the adapter [`Gated::hold`]s the record's
//! ticket, then writes), and nothing at all is written once the audit log refuses records: no
//! client message reaches a server unrecorded. Towards the client, a refusal is shown only
//! after its record is durable. The one way around the barrier,
//! [`Gated::write_unconditional`], is for the gateway's own words that depend on no record (the
//! FATAL error that closes a session) and is named so that every use stands out in review.

use crate::sink::{self, AuditSink};
use gatehouse_audit::{AuditError, Ticket};
use std::sync::Arc;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Why gated output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GatedError {
    /// A record the output depends on is not durable, or the log refuses records.
    #[error("{0}")]
    Audit(AuditError),
    #[error("{0}")]
    Io(std::io::Error),
}

/// A writer whose output waits for audit records.
pub struct Gated<W> {
    writer: W,
    sink: Arc<dyn AuditSink>,
    /// The newest record the pending output depends on.
    pending: Option<Ticket>,
    /// Refuse every write once the log refuses records (the upstream side).
    stop_on_failure: bool,
}

impl<W: AsyncWrite + Unpin> Gated<W> {
    pub(crate) fn new(writer: W, sink: Arc<dyn AuditSink>, stop_on_failure: bool) -> Self {
        Gated {
            writer,
            sink,
            pending: None,
            stop_on_failure,
        }
    }

    /// The next write waits until `ticket`'s record (and every earlier one) is durable.
    pub fn hold(&mut self, ticket: Ticket) {
        self.pending = Some(self.pending.map_or(ticket, |p| p.max(ticket)));
    }

    /// Waits for the held records, then writes and flushes `buf`.
    pub async fn write_all(&mut self, buf: &[u8]) -> Result<(), GatedError> {
        self.clear().await?;
        self.writer.write_all(buf).await.map_err(GatedError::Io)?;
        self.writer.flush().await.map_err(GatedError::Io)
    }

    /// Waits until everything held is durable (and, upstream, that the log takes records).
    pub async fn clear(&mut self) -> Result<(), GatedError> {
        if let Some(ticket) = self.pending {
            sink::wait_durable(self.sink.as_ref(), ticket)
                .await
                .map_err(GatedError::Audit)?;
            self.pending = None;
        }
        if self.stop_on_failure {
            if let Some(why) = self.sink.failure() {
                return Err(GatedError::Audit(AuditError::Unavailable(why)));
            }
        }
        Ok(())
    }

    /// Writes the gateway's own message that depends on no audit record (an error that closes
    /// the session), even when the log refuses records.
    pub async fn write_unconditional(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(buf).await?;
        self.writer.flush().await
    }

    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.writer.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::MemorySink;
    use gatehouse_audit::{Event, EventKind, Outcome};

    #[tokio::test]
    async fn upstream_output_stops_once_the_log_refuses_records() {
        let sink = MemorySink::new();
        let (mut near, mut far) = tokio::io::duplex(1024);
        let mut gated = Gated::new(&mut near, Arc::new(sink.clone()), true);
        let t = sink
            .append(Event::now(EventKind::Statement, Outcome::pending()))
            .unwrap();
        gated.hold(t);
        gated.write_all(b"first").await.unwrap();
        sink.fail("disk full");
        assert!(matches!(
            gated.write_all(b"second").await,
            Err(GatedError::Audit(_))
        ));
        gated.write_unconditional(b"!").await.unwrap();
        drop(gated);
        drop(near);
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut far, &mut got)
            .await
            .unwrap();
        assert_eq!(got, b"first!");
    }

    #[tokio::test]
    async fn output_waits_for_a_record_that_is_not_durable() {
        let sink = MemorySink::new();
        let (mut near, _far) = tokio::io::duplex(1024);
        let mut gated = Gated::new(&mut near, Arc::new(sink.clone()), false);
        // A ticket the sink never issued can never be durable.
        gated.hold(Ticket::new(99));
        assert!(matches!(
            gated.write_all(b"x").await,
            Err(GatedError::Audit(_))
        ));
    }
}
