//! Approval requests kept in the state store, for the core's broker.

use gatehouse_core::approvals::{ApprovalRequest, ApprovalState, ApprovalStore};
use gatehouse_store::Store;
use std::sync::Arc;

pub struct StoreApprovals(pub Arc<dyn Store>);

fn decode(rows: Vec<String>) -> Result<Vec<ApprovalRequest>, String> {
    rows.iter()
        .map(|row| {
            serde_json::from_str(row)
                .map_err(|e| format!("a stored approval request does not read back: {e}"))
        })
        .collect()
}

#[async_trait::async_trait]
impl ApprovalStore for StoreApprovals {
    async fn save(&self, request: &ApprovalRequest) -> Result<(), String> {
        let body = serde_json::to_string(request).map_err(|e| e.to_string())?;
        self.0
            .save_approval(
                &request.id,
                request.state.as_str(),
                request.created_at,
                &body,
            )
            .await
            .map_err(|e| e.to_string())
    }

    async fn get(&self, id: &str) -> Result<Option<ApprovalRequest>, String> {
        let row = self.0.approval(id).await.map_err(|e| e.to_string())?;
        Ok(decode(row.into_iter().collect())?.pop())
    }

    async fn open(&self) -> Result<Vec<ApprovalRequest>, String> {
        decode(self.0.open_approvals().await.map_err(|e| e.to_string())?)
    }

    async fn list(
        &self,
        state: Option<ApprovalState>,
        limit: u32,
    ) -> Result<Vec<ApprovalRequest>, String> {
        decode(
            self.0
                .list_approvals(state.map(ApprovalState::as_str), limit)
                .await
                .map_err(|e| e.to_string())?,
        )
    }
}
