//! Protocol-neutral commands and the verdicts the core gives on them.

use gatehouse_inspect::sql::{self, Classification, Classifier, StatementKind};
use std::sync::Arc;

/// One command as an adapter saw it: its text and what inspection made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub text: Arc<str>,
    pub classification: Classification,
}

impl Command {
    /// A SQL command, classified.
    pub fn sql(text: impl Into<Arc<str>>) -> Self {
        let text = text.into();
        let classification = sql::classify(&text);
        Command {
            text,
            classification,
        }
    }

    /// A SQL command classified through a session's [`Classifier`] cache.
    pub fn sql_cached(text: impl Into<Arc<str>>, classifier: &mut Classifier) -> Self {
        let text = text.into();
        let classification = classifier.classify(&text);
        Command {
            text,
            classification,
        }
    }

    /// A command the adapter classified itself (no SQL text to parse).
    pub fn unparsed(text: impl Into<Arc<str>>, kind: StatementKind) -> Self {
        Command {
            text: text.into(),
            classification: Classification {
                kind,
                statements: 1,
                parsed: false,
            },
        }
    }

    pub fn kind(&self) -> &'static str {
        self.classification.kind.as_str()
    }
}

/// The core's decision on a command. Adapters carry it out in their protocol's own form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Block { rule: String, reason: String },
}

/// How a command ended, as the adapter observed it upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    /// `None` when the command succeeded; otherwise the protocol's error code and message.
    pub error: Option<CommandError>,
    pub rows: u64,
    pub duration: std::time::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    pub code: String,
    pub message: String,
}
