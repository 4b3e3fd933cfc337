//! Approval notifications: every transition the broker makes is posted to the configured
//! webhooks, a Slack-compatible incoming webhook (`{"text": …}`) or a Standard Webhooks
//! endpoint (a JSON event signed with HMAC-SHA256: `webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64>` over `id.timestamp.body`). Failed deliveries are retried
//! with exponential backoff; the audit log, not the webhook, is the record.

use crate::config::{WebhookConfig, WebhookFormat};
use base64::Engine as _;
use gatehouse_core::approvals::{ApprovalRequest, Notice};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Attempts per delivery, and the first and longest wait between them.
const ATTEMPTS: u32 = 6;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Notices waiting to be sent; beyond this they are dropped (and logged).
pub const QUEUE: usize = 1024;

/// The Standard Webhooks signature of `body`: `v1,` and the base64 HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` under `key`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // An HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

fn requester(request: &ApprovalRequest) -> String {
    let mut out = String::new();
    for actor in request.requester.actors.iter().rev() {
        out.push_str(actor);
        out.push_str(" for ");
    }
    out.push_str(&request.requester.principal);
    out
}

/// The body for one webhook.
fn body(hook: &WebhookConfig, notice: &Notice) -> serde_json::Value {
    let r = &notice.request;
    match hook.format {
        WebhookFormat::Standard => serde_json::json!({
            "type": notice.kind,
            "timestamp": time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            "data": r,
        }),
        WebhookFormat::Slack => {
            let statement: String = r.statement.chars().take(500).collect();
            let what = match notice.kind {
                "approval.requested" => format!(
                    "Approval needed ({} of {}): `{}` wants to run on *{}*",
                    r.required,
                    if r.approver_groups.is_empty() {
                        "admins".to_owned()
                    } else {
                        r.approver_groups.join(", ")
                    },
                    requester(r),
                    r.connection
                ),
                "approval.approved" => format!(
                    "Approved ({}/{}) by {}",
                    r.approvals.len(),
                    r.required,
                    r.approvals.last().map_or("?", |v| v.by.as_str())
                ),
                "approval.denied" => format!(
                    "Denied by {}: {}",
                    r.denial.as_ref().map_or("?", |d| d.by.as_str()),
                    r.denial
                        .as_ref()
                        .and_then(|d| d.comment.as_deref())
                        .unwrap_or("")
                ),
                other => other.trim_start_matches("approval.").to_owned(),
            };
            let estimate = r.effect["estimated_rows"]
                .as_f64()
                .map(|n| format!(" (planner's estimate: {n} rows)"))
                .unwrap_or_default();
            serde_json::json!({
                "text": format!(
                    "{what}\n```{statement}```{estimate}\nRule {}: {}\n`gatehouse approvals approve {}` · `gatehouse approvals deny {} --reason …`",
                    r.rule, r.reason, r.id, r.id
                ),
            })
        }
    }
}

/// Sends every notice to every webhook that wants its kind, until the queue closes.
pub async fn deliver(hooks: Vec<WebhookConfig>, mut notices: mpsc::Receiver<Notice>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "webhooks disabled: cannot build an HTTP client");
            return;
        }
    };
    let hooks: Vec<Arc<WebhookConfig>> = hooks.into_iter().map(Arc::new).collect();
    while let Some(notice) = notices.recv().await {
        for hook in &hooks {
            if !hook.events.iter().any(|e| e == notice.kind) {
                continue;
            }
            let (hook, client) = (hook.clone(), client.clone());
            let body = body(&hook, &notice);
            let id = format!("msg_{}_{}", notice.request.id, notice.kind);
            tokio::spawn(async move { send_with_retries(&client, &hook, &id, &body).await });
        }
    }
}

async fn send_with_retries(
    client: &reqwest::Client,
    hook: &WebhookConfig,
    id: &str,
    body: &serde_json::Value,
) {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let mut request = client
            .post(&hook.url)
            .header("content-type", "application/json");
        if let (WebhookFormat::Standard, Some(secret)) = (hook.format, &hook.secret) {
            let key = hex::decode(secret.expose()).unwrap_or_default();
            // Each attempt is signed afresh: receivers reject old timestamps.
            let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
            request = request
                .header("webhook-id", id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", sign(&key, id, timestamp, &bytes));
        }
        match request.body(bytes.clone()).send().await {
            Ok(response) if response.status().is_success() => {
                tracing::debug!(webhook = %hook.name, id, attempt, "webhook delivered");
                return;
            }
            Ok(response) => {
                tracing::warn!(webhook = %hook.name, id, attempt, status = %response.status(), "webhook refused; retrying");
            }
            Err(err) => {
                // The URL may hold a token (Slack's do): never log it.
                tracing::warn!(webhook = %hook.name, id, attempt, error = %err.without_url(), "webhook failed; retrying");
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
    tracing::error!(webhook = %hook.name, id, "webhook not delivered after {ATTEMPTS} attempts");
}

#[cfg(test)]
mod tests {
    use super::sign;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example in the Standard Webhooks specification.
        let key = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .unwrap();
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
