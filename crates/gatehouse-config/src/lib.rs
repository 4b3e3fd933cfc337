//! What every configuration section shares: value types that check themselves while the
//! file is read (so their errors carry a line and key for free), and the [`Checks`] through
//! which a section reports problems that span values. The server owns the file; each
//! protocol adapter owns its section and resolves it through these.

mod values;

pub use values::{parse_duration, parse_size, ConfigDuration, ConfigSize, DurationError};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// How a section reports problems while it is resolved. Paths are key paths from the top of
/// the file (`["postgres", "tls", "cert_file"]`); the server turns them into `file:line: key`.
pub trait Checks {
    /// A problem that makes the configuration invalid.
    fn error(&mut self, path: &[&str], message: &str);
    /// A valid but risky setting.
    fn warn(&mut self, path: &[&str], message: &str);
    /// `file` resolved against the config file's directory; an error if it does not exist.
    fn existing_file(&mut self, path: &[&str], file: &Path) -> PathBuf;
    /// A secret reference (`${env:NAME}`, `${file:PATH}`) read; `None` after reporting why.
    /// Where secrets cannot be read (offline tools), an empty value stands in.
    fn secret(&mut self, path: &[&str], reference: &str) -> Option<String> {
        let _ = reference;
        self.error(path, "secrets cannot be read here");
        None
    }
}

/// A listen address: a literal `IP:PORT` (host names are refused: binding must not
/// depend on DNS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub SocketAddr);

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Listen;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP:PORT address such as 127.0.0.1:15432 or [::1]:15432")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Listen, E> {
                v.parse().map(Listen).map_err(|_| {
                    E::custom(format_args!(
                        "invalid listen address {v:?}: expected IP:PORT such as \
                         127.0.0.1:15432 or [::1]:15432"
                    ))
                })
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// A certificate and its key, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTlsFiles {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// A certificate chain and its private key (PEM), both existing files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Resolves `cert_file` and `key_file` under the key path `at`: both or neither.
pub fn tls_files(checks: &mut dyn Checks, at: &[&str], raw: RawTlsFiles) -> Option<TlsFiles> {
    match (raw.cert_file, raw.key_file) {
        (Some(cert), Some(key)) => {
            let cert_path: Vec<&str> = at.iter().copied().chain(["cert_file"]).collect();
            let key_path: Vec<&str> = at.iter().copied().chain(["key_file"]).collect();
            Some(TlsFiles {
                cert_file: checks.existing_file(&cert_path, &cert),
                key_file: checks.existing_file(&key_path, &key),
            })
        }
        (None, None) => {
            checks.error(at, "set cert_file and key_file, or remove tls");
            None
        }
        (Some(_), None) => {
            checks.error(at, "cert_file is set but key_file is missing: set both");
            None
        }
        (None, Some(_)) => {
            checks.error(at, "key_file is set but cert_file is missing: set both");
            None
        }
    }
}
