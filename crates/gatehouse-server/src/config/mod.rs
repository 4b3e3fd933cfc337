//! Gateway configuration: YAML in, a validated [`Config`] out.
//!
//! Loading happens in two steps. `raw` deserialises the file with unknown keys refused;
//! serde_norway's errors already carry a line and key path. `resolve` then applies
//! defaults, makes paths absolute against the config file's directory, reads secret
//! references and checks rules that span values; it re-finds the line of each offending
//! key with [`locate`]. Every error renders as `file:line: key.path: message`.
//! The key-by-key reference is docs/configuration.md.

mod duration;
mod error;
mod locate;
mod model;
mod raw;
mod resolve;
mod secret;
#[cfg(test)]
mod tests;

use std::env::VarError;
use std::path::Path;

pub use duration::{parse_duration, DurationError};
pub use error::{ConfigError, Issue};
pub use locate::locate;
pub use model::*;
pub use secret::{Secret, SecretRef};

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Reads and validates the config file at `path` without reading any secret it references:
/// for offline tools (`audit verify`, `audit export`) that need paths, not credentials.
pub fn load_offline(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_inner(&text, path, &|name| std::env::var(name), false)
}

/// Validates config `text` as if read from `path` (used for messages and to resolve
/// relative paths). Secret references are resolved from the process environment.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_with_env(text, path, &|name| std::env::var(name))
}

/// [`parse`] with an explicit environment lookup, so tests need not mutate the process
/// environment.
pub fn parse_with_env(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Result<String, VarError>,
) -> Result<Config, ConfigError> {
    parse_inner(text, path, env, true)
}

fn parse_inner(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Result<String, VarError>,
    read_secrets: bool,
) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig = serde_norway::from_str(text).map_err(|e| ConfigError::Invalid {
        issues: vec![Issue::from_yaml(path, &e)],
    })?;
    let source = std::path::absolute(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = source
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| source.clone());
    let mut resolver = resolve::Resolver::new(text, path, base, env);
    resolver.read_secrets = read_secrets;
    resolver.resolve(raw, source)
}
