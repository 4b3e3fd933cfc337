//! The session index kept in the state store (a derived view; the audit log is the record).

use gatehouse_core::{SessionIndex, SessionInfo};
use gatehouse_store::{NewSession, Store};
use std::sync::Arc;

pub struct StoreIndex(pub Arc<dyn Store>);

#[async_trait::async_trait]
impl SessionIndex for StoreIndex {
    async fn started(&self, s: &SessionInfo) {
        let session = NewSession {
            id: s.id.clone(),
            protocol: s.protocol.as_str().to_owned(),
            connection: s.connection.clone(),
            subject: s.subject.clone(),
            actors: s.actors.clone(),
            source: s.source.to_string(),
            started_at: s.started_at,
        };
        if let Err(e) = self.0.insert_session(session).await {
            tracing::warn!(error = %e, session = %s.id, "session index: insert failed");
        }
    }

    async fn ended(&self, id: &str, statements: u64, reason: &str) {
        let now = time::OffsetDateTime::now_utc();
        if let Err(e) = self.0.finish_session(id, now, statements, reason).await {
            tracing::warn!(error = %e, session = %id, "session index: finish failed");
        }
    }
}
