//! Secrets: referenced in the file, resolved at load, never printed.

use std::env::VarError;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The resolved value: the workspace-wide secret type, whose `Debug`/`Display` print
/// `[redacted]`.
pub use gatehouse_core::Secret;

/// Where a secret comes from: `${env:NAME}` or `${file:PATH}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    /// As written; relative paths resolve against the config file's directory.
    File(PathBuf),
}

/// Refusal messages never echo the value: it may be a password typed inline.
const INLINE: &str = "secrets must be references: write ${env:NAME} or ${file:PATH} \
                      instead of the value itself";
const MALFORMED: &str = "malformed secret reference: expected exactly ${env:NAME} or ${file:PATH}";
const BAD_ENV_NAME: &str =
    "malformed secret reference: environment variable names are letters, digits and _, \
     not starting with a digit";

impl SecretRef {
    /// Parses a reference; the error message is safe to show (it never contains `text`).
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let Some(inner) = text.strip_prefix("${") else {
            return Err(INLINE);
        };
        let inner = inner.strip_suffix('}').ok_or(MALFORMED)?;
        if let Some(name) = inner.strip_prefix("env:") {
            let mut chars = name.chars();
            let first_ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Ok(SecretRef::Env(name.to_string()));
            }
            return Err(BAD_ENV_NAME);
        }
        match inner.strip_prefix("file:") {
            Some(path) if !path.is_empty() && !path.contains('}') => {
                Ok(SecretRef::File(PathBuf::from(path)))
            }
            _ => Err(MALFORMED),
        }
    }

    /// Reads the secret. `env` is the environment lookup (injectable for tests); `base` is
    /// the config file's directory. Errors name the variable or file, never the value.
    pub(crate) fn resolve(
        &self,
        base: &Path,
        env: &dyn Fn(&str) -> Result<String, VarError>,
    ) -> Result<Secret, String> {
        let value = match self {
            SecretRef::Env(name) => match env(name) {
                Ok(v) => v,
                Err(VarError::NotPresent) => {
                    return Err(format!("environment variable {name} is not set"))
                }
                Err(VarError::NotUnicode(_)) => {
                    return Err(format!("environment variable {name} is not valid UTF-8"))
                }
            },
            SecretRef::File(path) => {
                let path = base.join(path);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    format!("cannot read secret file {}: {}", path.display(), e.kind())
                })?;
                text.trim_end_matches(['\n', '\r']).to_string()
            }
        };
        if value.is_empty() {
            return Err(match self {
                SecretRef::Env(name) => format!("environment variable {name} is empty"),
                SecretRef::File(path) => {
                    format!("secret file {} is empty", base.join(path).display())
                }
            });
        }
        Ok(Secret::new(value))
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret reference ${env:NAME} or ${file:PATH}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretRef, E> {
                SecretRef::parse(v).map_err(E::custom)
            }
            // serde's default messages quote the offending value; a secret must not be.
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretRef, E> {
                Err(E::custom(INLINE))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretRef, E> {
                Err(E::custom(INLINE))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretRef, E> {
                Err(E::custom(INLINE))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretRef, E> {
                Err(E::custom(INLINE))
            }
        }
        deserializer.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Result<String, VarError> {
        Err(VarError::NotPresent)
    }

    #[test]
    fn secret_never_formats_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn reference_table() {
        let cases: &[(&str, Result<SecretRef, &str>)] = &[
            ("${env:PG_PASS}", Ok(SecretRef::Env("PG_PASS".into()))),
            ("${env:_x1}", Ok(SecretRef::Env("_x1".into()))),
            (
                "${file:secrets/pg}",
                Ok(SecretRef::File("secrets/pg".into())),
            ),
            (
                "${file:/run/secrets/pg}",
                Ok(SecretRef::File("/run/secrets/pg".into())),
            ),
            ("hunter2", Err(INLINE)),
            ("", Err(INLINE)),
            ("${env:1X}", Err(BAD_ENV_NAME)),
            ("${env:}", Err(BAD_ENV_NAME)),
            ("${env:A-B}", Err(BAD_ENV_NAME)),
            ("${env:X}y", Err(MALFORMED)),
            ("${vault:x}", Err(MALFORMED)),
            ("${file:}", Err(MALFORMED)),
            ("${env:X", Err(MALFORMED)),
        ];
        for (text, want) in cases {
            assert_eq!(&SecretRef::parse(text), want, "{text:?}");
        }
    }

    #[test]
    fn env_resolution_names_variable_not_value() {
        let env = |name: &str| match name {
            "SET" => Ok("s3cret".to_string()),
            "EMPTY" => Ok(String::new()),
            _ => Err(VarError::NotPresent),
        };
        let base = Path::new("/");
        let got = SecretRef::Env("SET".into()).resolve(base, &env).unwrap();
        assert_eq!(got.expose(), "s3cret");
        assert_eq!(
            SecretRef::Env("MISSING".into()).resolve(base, &env),
            Err("environment variable MISSING is not set".into())
        );
        assert_eq!(
            SecretRef::Env("EMPTY".into()).resolve(base, &env),
            Err("environment variable EMPTY is empty".into())
        );
    }

    #[test]
    fn file_resolution_is_relative_and_trims_newlines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "p@ss word\r\n\n").unwrap();
        std::fs::write(dir.path().join("blank"), "\n").unwrap();
        let got = SecretRef::File("pw".into())
            .resolve(dir.path(), &no_env)
            .unwrap();
        assert_eq!(got.expose(), "p@ss word");
        let err = SecretRef::File("blank".into())
            .resolve(dir.path(), &no_env)
            .unwrap_err();
        assert!(err.ends_with("/blank is empty"), "{err}");
        let err = SecretRef::File("missing".into())
            .resolve(dir.path(), &no_env)
            .unwrap_err();
        assert!(err.contains("cannot read secret file"), "{err}");
        assert!(err.contains("/missing"), "{err}");
    }
}
