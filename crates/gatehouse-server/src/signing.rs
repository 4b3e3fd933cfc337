//! The key that signs audit checkpoints: loaded from its file, or created there on first start.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use gatehouse_audit::checkpoint::CheckpointOptions;
use gatehouse_audit::durable_file::{create_secret, read_secret};
use gatehouse_tlog::{Signer, Verifier};
use rand::RngCore as _;
use zeroize::Zeroizing;

use crate::config::CheckpointConfig;

/// Reads the signing key. Errors name the file, never its contents.
pub fn load(path: &Path) -> anyhow::Result<Signer> {
    let text = read_secret(path)
        .with_context(|| format!("reading the checkpoint signing key {}", path.display()))?;
    Signer::from_skey(text.trim_end())
        .map_err(|e| anyhow::anyhow!("{} is not a checkpoint signing key: {e}", path.display()))
}

/// The public key, from the key file.
pub fn public_key(path: &Path) -> anyhow::Result<Verifier> {
    Ok(load(path)?.verifier())
}

/// Loads the key, or creates one named `name` (mode 0600, in a 0700 directory) when the file
/// does not exist. The flag says whether it was created (the caller audits that).
pub fn load_or_create(path: &Path, name: &str) -> anyhow::Result<(Signer, bool)> {
    if path.exists() {
        return Ok((load(path)?, false));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(&mut seed[..]);
    let signer = Signer::from_seed(name, &seed)
        .map_err(|e| anyhow::anyhow!("cannot make a signing key named {name:?}: {e}"))?;
    let mut text = signer.to_skey();
    text.push('\n');
    create_secret(path, text.as_bytes())
        .with_context(|| format!("creating the checkpoint signing key {}", path.display()))?;
    Ok((signer, true))
}

/// The writer's checkpoint settings.
pub fn options(config: &CheckpointConfig, signer: Signer) -> CheckpointOptions {
    CheckpointOptions {
        origin: config.origin.clone(),
        signer: Arc::new(signer),
        state_path: config.state_file.clone(),
        interval: config.interval,
        every: config.every,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_created_key_is_private_and_loads_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("audit.key");
        let (signer, created) = load_or_create(&path, "test/audit").unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, created) = load_or_create(&path, "test/audit").unwrap();
        assert!(!created);
        assert_eq!(again.verifier(), signer.verifier());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = format!("{:#}", load(&path).unwrap_err());
        assert!(err.contains("readable by others"), "{err}");
        assert!(!err.contains("PRIVATE"), "{err}");
    }
}
