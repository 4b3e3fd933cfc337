//! The key that signs audit checkpoints: loaded from its file, or created there on first start.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use gatehouse_audit::checkpoint::CheckpointOptions;
use gatehouse_tlog::{Signer, Verifier};
use rand::RngCore as _;
use zeroize::Zeroizing;

use crate::config::CheckpointConfig;

/// Reads the signing key. Errors name the file, never its contents.
pub fn load(path: &Path) -> anyhow::Result<Signer> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the checkpoint signing key {}", path.display()))?,
    );
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "the checkpoint signing key {} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
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
    if let Some(dir) = path.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(&mut seed[..]);
    let signer = Signer::from_seed(name, &seed)
        .map_err(|e| anyhow::anyhow!("cannot make a signing key named {name:?}: {e}"))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating the checkpoint signing key {}", path.display()))?;
    let mut text = signer.to_skey();
    text.push('\n');
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).ok();
    }
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
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("readable by others"), "{err}");
        assert!(!err.contains("PRIVATE"), "{err}");
    }
}
