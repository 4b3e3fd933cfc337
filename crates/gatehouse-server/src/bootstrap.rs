//! The first start: with no key in the state store, the gateway creates an admin API key and
//! writes it to `<data_dir>/admin.key` (mode 0600), so the operator can reach the admin API.

use anyhow::Context;
use gatehouse_audit::{AuditLog, Event, EventKind, Outcome, What};
use gatehouse_store::{NewApiKey, Store};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub const BOOTSTRAP_KEY_NAME: &str = "bootstrap-admin";

pub async fn ensure_admin_key(
    store: &dyn Store,
    audit: &AuditLog,
    data_dir: &Path,
    admin_group: &str,
) -> anyhow::Result<()> {
    if store.count_keys().await? > 0 {
        return Ok(());
    }
    let (key, hash) = gatehouse_auth::api_key::generate();
    let path = data_dir.join("admin.key");
    // Written to a fresh temporary file with 0600 from the start, then renamed into place.
    let tmp = data_dir.join(".admin.key.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    writeln!(file, "{key}")?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;

    store
        .insert_key(NewApiKey {
            name: BOOTSTRAP_KEY_NAME.to_owned(),
            groups: vec![admin_group.to_owned()],
            key_hash: hash,
            prefix: key.chars().take(7).collect(),
            created_at: time::OffsetDateTime::now_utc(),
        })
        .await?;
    let mut event = Event::now(EventKind::BootstrapKey, Outcome::success());
    event.what = What {
        resource: Some(path.display().to_string()),
        detail: Some(serde_json::json!({ "key": BOOTSTRAP_KEY_NAME, "groups": [admin_group] })),
        ..What::default()
    };
    audit.record(event).await?;
    tracing::warn!(path = %path.display(), "created the bootstrap admin API key");
    Ok(())
}
