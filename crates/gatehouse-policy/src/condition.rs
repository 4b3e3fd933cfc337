//! Conditions in CEL (the Common Expression Language, via the `cel` crate), for what lists
//! cannot say: `claims.environment == "production" && statement.tables_written.exists(t,
//! t.startsWith("payments."))`. Compiled when the policy loads (a bad expression is a config
//! error with its key), evaluated per statement against:
//!
//! | variable | type |
//! | --- | --- |
//! | `subject`, `principal`, `connection` | string |
//! | `groups`, `actors` | list of strings (actors nearest first) |
//! | `delegated`, `granted` | bool |
//! | `claims` | map: the token's claims (empty for an API key) |
//! | `statement` | map: `tag`, `kind`, `runs`, `tables_read`, `tables_written`, `functions`, `unqualified_write`, `copy_program`, `opaque` (a reason or null), `executes` |
//! | `hour`, `minute`, `weekday` | int, UTC (`weekday` 0 is Monday) |

use crate::rules::Request;
use cel::objects::Value;
use cel::{Context, Program};
use gatehouse_inspect::analyze::StatementInfo;
use serde::{Serialize, Serializer};
use std::sync::Arc;

/// A compiled CEL condition. Equal, and hashed into the policy, by its source.
#[derive(Clone)]
pub struct Condition {
    source: String,
    program: Arc<Program>,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Condition({:?})", self.source)
    }
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Condition {}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl Condition {
    /// Compiles `source`; the error says where it does not parse.
    pub fn compile(source: &str) -> Result<Self, String> {
        // The parser is generated code; a panic in it counts as an expression that does not
        // compile.
        let compiled = std::panic::catch_unwind(|| Program::compile(source))
            .map_err(|_| "the expression could not be parsed".to_owned())?;
        let program = compiled.map_err(|e| e.to_string())?;
        Ok(Condition {
            source: source.to_owned(),
            program: Arc::new(program),
        })
    }

    /// Whether the condition looks at the statement (and so cannot rule out one it cannot see).
    pub fn reads_statement(&self) -> bool {
        self.program.references().has_variable("statement")
    }

    /// Evaluates to a bool; anything else (an error, a missing key, another type) is an error.
    pub fn holds(&self, context: &Context<'_, '_>) -> Result<bool, String> {
        match self.program.execute(context) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("the condition gave {other:?}, not a bool")),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn strings(items: impl IntoIterator<Item = impl AsRef<str>>) -> Value {
    Value::List(Arc::new(
        items
            .into_iter()
            .map(|s| Value::String(Arc::new(s.as_ref().to_owned())))
            .collect(),
    ))
}

fn string(s: &str) -> Value {
    Value::String(Arc::new(s.to_owned()))
}

/// The variables a condition sees for one statement of `request`.
pub fn context(request: &Request<'_>, statement: &StatementInfo) -> Context<'static, 'static> {
    let caller = &request.caller;
    let mut context = Context::default();
    context.add_variable_from_value("subject", string(caller.subject));
    context.add_variable_from_value("principal", string(caller.principal));
    context.add_variable_from_value("connection", string(request.connection));
    context.add_variable_from_value("groups", strings(caller.groups));
    context.add_variable_from_value("actors", strings(caller.actors));
    context.add_variable_from_value("delegated", Value::Bool(!caller.actors.is_empty()));
    context.add_variable_from_value("granted", Value::Bool(caller.granted));
    let claims = cel::to_value(caller.claims).unwrap_or(Value::Null);
    context.add_variable_from_value("claims", claims);
    let statement = cel::to_value(statement).unwrap_or(Value::Null);
    context.add_variable_from_value("statement", statement);
    let now = request.now;
    context.add_variable_from_value("hour", Value::Int(now.hour().into()));
    context.add_variable_from_value("minute", Value::Int(now.minute().into()));
    context.add_variable_from_value(
        "weekday",
        Value::Int(now.weekday().number_days_from_monday().into()),
    );
    context
}
