//! Config errors that point at a file, a line and a key path.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem (or warning) found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The config file, as the user named it.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key path such as `connections.demo.upstream.port` (`oidc[0]` for list items);
    /// empty when the problem is the document itself.
    pub key: String,
    /// What is wrong. Never contains a secret value.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl Issue {
    /// Converts a serde_norway error, keeping its line and key path. serde_norway renders
    /// `path: message at line L column C`; the message alone is not exposed, so we take the
    /// rendering apart (falling back to the whole text as the message).
    pub(crate) fn from_yaml(file: &Path, err: &serde_norway::Error) -> Self {
        let location = err.location();
        let mut text = err.to_string();
        if let Some(loc) = &location {
            let mark = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(at) = text.find(&mark) {
                text.replace_range(at..at + mark.len(), "");
            }
        }
        let (mut key, mut message) = match text.split_once(": ") {
            Some((path, rest)) if looks_like_path(path) => (path.to_string(), rest.to_string()),
            _ => (String::new(), text),
        };
        // "unknown field `x`" is reported at the enclosing mapping: name the key itself.
        if let Some(rest) = message.strip_prefix("unknown field `") {
            if let Some((field, tail)) = rest.split_once('`') {
                key = if key.is_empty() {
                    field.to_string()
                } else {
                    format!("{key}.{field}")
                };
                message = format!("unknown key{tail}");
            }
        }
        Issue {
            file: file.to_path_buf(),
            line: location.map(|l| l.line()),
            key,
            message,
        }
    }
}

/// serde_norway paths are keys joined by `.` with `[n]` indexes: no spaces or backticks.
fn looks_like_path(s: &str) -> bool {
    !s.is_empty() && !s.contains(char::is_whitespace) && !s.contains('`')
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (or its directory could not be determined).
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration; one line per issue.
    #[error("{}", Lines(issues))]
    Invalid { issues: Vec<Issue> },
}

impl ConfigError {
    /// The individual problems (empty for [`ConfigError::Read`]).
    pub fn issues(&self) -> &[Issue] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { issues } => issues,
        }
    }
}

struct Lines<'a>(&'a [Issue]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}
