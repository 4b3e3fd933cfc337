//! The witness's cosigning key: read from its file, or created there (mode 0600) on first use.

use std::path::Path;

use anyhow::Context as _;
use gatehouse_audit::durable_file::{create_secret, read_secret};
use gatehouse_tlog::Cosigner;
use rand::RngCore as _;
use zeroize::Zeroizing;

/// Reads the key. Errors name the file, never its contents.
pub fn load(path: &Path) -> anyhow::Result<Cosigner> {
    let text =
        read_secret(path).with_context(|| format!("reading the witness key {}", path.display()))?;
    Cosigner::from_skey(text.trim_end())
        .map_err(|e| anyhow::anyhow!("{} is not a witness key: {e}", path.display()))
}

/// Loads the key, or creates one named `name` when the file does not exist; the flag says
/// whether it was created.
pub fn load_or_create(path: &Path, name: &str) -> anyhow::Result<(Cosigner, bool)> {
    if path.exists() {
        let cosigner = load(path)?;
        if cosigner.name() != name {
            anyhow::bail!(
                "the witness key {} is named {:?}, not {name:?}",
                path.display(),
                cosigner.name()
            );
        }
        return Ok((cosigner, false));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(&mut seed[..]);
    let cosigner = Cosigner::from_seed(name, &seed)
        .map_err(|e| anyhow::anyhow!("cannot make a witness key named {name:?}: {e}"))?;
    let mut text = cosigner.to_skey();
    text.push('\n');
    create_secret(path, text.as_bytes())
        .with_context(|| format!("creating the witness key {}", path.display()))?;
    Ok((cosigner, true))
}
