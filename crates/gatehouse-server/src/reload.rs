//! Policy reload: on SIGHUP and when the config file's content changes, the file is read and
//! validated again. A valid file's policy takes over (`policy.loaded`, with its SHA-256 and the
//! one it replaced); an invalid file is refused (`policy.rejected`, with its errors) and the
//! policy in effect stays. Only the policy is reloaded: other changes wait for a restart, and
//! the record says so.

use crate::config::{self, Config};
use gatehouse_audit::{AuditLog, Event, EventKind, Outcome, What};
use gatehouse_core::RulePolicy;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the config file is checked for a change.
const POLL: Duration = Duration::from_secs(1);

/// What started a load.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    Start,
    Signal,
    FileChange,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Signal => "sighup",
            Trigger::FileChange => "file_change",
        }
    }
}

/// The `policy.loaded` record for `rules` taking effect.
pub fn loaded_event(
    config: &Config,
    previous: Option<&str>,
    trigger: Trigger,
    restart_needed: bool,
) -> Event {
    let mut event = Event::now(EventKind::PolicyLoaded, Outcome::success());
    let mut detail = serde_json::json!({
        "sha256": config.policy.hash().as_ref(),
        "rules": config.policy.len(),
        "trigger": trigger.as_str(),
    });
    if let Some(map) = detail.as_object_mut() {
        let masking = config.policy.masking().len();
        if masking > 0 {
            map.insert("masking_rules".into(), masking.into());
        }
        if let Some(previous) = previous {
            map.insert("previous".into(), previous.into());
        }
        if restart_needed {
            map.insert(
                "restart_needed".into(),
                "the file changes more than the policy; those changes take effect at restart"
                    .into(),
            );
        }
    }
    event.what = What {
        resource: Some(config.source.display().to_string()),
        detail: Some(detail),
        ..What::default()
    };
    event
}

/// Watches for SIGHUP and file changes until `stop`, reloading the policy each time.
pub async fn watch(
    running: Config,
    policy: Arc<RulePolicy>,
    audit: AuditLog,
    mut stop: watch::Receiver<bool>,
) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hup) => Some(hup),
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGHUP; the policy reloads on file change only");
            None
        }
    };
    let mut seen = digest(&running.source);
    loop {
        let trigger = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => Trigger::Signal,
            () = tokio::time::sleep(POLL) => {
                let now = digest(&running.source);
                if now == seen {
                    continue;
                }
                seen = now;
                Trigger::FileChange
            }
        };
        if let Trigger::Signal = trigger {
            seen = digest(&running.source);
        }
        reload(&running, &policy, &audit, trigger).await;
    }
}

fn digest(path: &std::path::Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

async fn reload(running: &Config, policy: &RulePolicy, audit: &AuditLog, trigger: Trigger) {
    let source = running.source.clone();
    let loaded = tokio::task::spawn_blocking(move || config::load(&source)).await;
    let previous = policy.current();
    match loaded {
        Ok(Ok(mut new)) => {
            let rules = std::mem::replace(&mut new.policy, running.policy.clone());
            // Everything else as it runs: compared without the policy and the warnings.
            let restart_needed = {
                let mut a = new.clone();
                a.warnings.clear();
                let mut b = running.clone();
                b.warnings.clear();
                a != b
            };
            new.policy = rules;
            let event = loaded_event(&new, Some(previous.hash()), trigger, restart_needed);
            // Recorded first: a policy must not decide anything before its record exists.
            if let Err(err) = audit.record(event).await {
                tracing::error!(error = %err, "could not audit the policy reload; the old policy stays");
                return;
            }
            tracing::info!(sha256 = %new.policy.hash(), rules = new.policy.len(), trigger = trigger.as_str(), "policy loaded");
            policy.replace(new.policy);
        }
        Ok(Err(err)) => {
            let message = err.to_string();
            tracing::error!(error = %message, "policy reload refused; the policy in effect stays");
            let mut event = Event::now(EventKind::PolicyRejected, Outcome::failure(message));
            event.what = What {
                resource: Some(running.source.display().to_string()),
                detail: Some(serde_json::json!({
                    "in_effect": previous.hash().as_ref(),
                    "trigger": trigger.as_str(),
                })),
                ..What::default()
            };
            if let Err(err) = audit.record(event).await {
                tracing::error!(error = %err, "could not audit the refused policy reload");
            }
        }
        Err(err) => tracing::error!(error = %err, "policy reload failed"),
    }
}
