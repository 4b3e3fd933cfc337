//! Protocol-neutral commands: what a statement says and what inspection made of it.

use gatehouse_inspect::effects::{self, Effects};
use gatehouse_inspect::sql::{self, Classification, Classifier, StatementKind};
use std::sync::Arc;

/// One command as an adapter saw it: its text and what inspection made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The statement text; when `known` is false, a description of what the gateway knows.
    pub text: Arc<str>,
    /// Whether `text` is what the server runs. False for an Execute of a prepared statement
    /// whose text the gateway could not follow: the record then says so instead of guessing.
    pub known: bool,
    pub classification: Classification,
    /// What the statement may do to the session's state (COPY, prepared statements, lexing).
    pub effects: Effects,
    /// The client encoding the text was decoded from, when it was not UTF-8.
    pub decoded_from: Option<&'static str>,
}

impl Command {
    /// A SQL command, classified.
    pub fn sql(text: impl Into<Arc<str>>) -> Self {
        let text = text.into();
        let classification = sql::classify(&text);
        Command::with(text, classification)
    }

    /// A SQL command classified through a session's [`Classifier`] cache.
    pub fn sql_cached(text: impl Into<Arc<str>>, classifier: &mut Classifier) -> Self {
        let text = text.into();
        let classification = classifier.classify(&text);
        Command::with(text, classification)
    }

    fn with(text: Arc<str>, classification: Classification) -> Self {
        Command {
            effects: effects::effects(&text),
            text,
            known: true,
            classification,
            decoded_from: None,
        }
    }

    /// A command the adapter classified itself (no SQL text to parse).
    pub fn unparsed(text: impl Into<Arc<str>>, kind: StatementKind) -> Self {
        Command {
            text: text.into(),
            known: true,
            classification: Classification {
                kind,
                statements: 1,
                parsed: false,
                detail: Arc::from([]),
            },
            effects: Effects::default(),
            decoded_from: None,
        }
    }

    /// A command whose text the gateway does not know; `what` says what it does know (for the
    /// record). It may do anything.
    pub fn unknown(what: impl Into<Arc<str>>) -> Self {
        Command {
            text: what.into(),
            known: false,
            classification: Classification {
                kind: StatementKind::Unknown,
                statements: 1,
                parsed: false,
                detail: Arc::from([]),
            },
            effects: Effects::ANY,
            decoded_from: None,
        }
    }

    pub fn kind(&self) -> &'static str {
        self.classification.kind.as_str()
    }
}
