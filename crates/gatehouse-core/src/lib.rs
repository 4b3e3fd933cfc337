//! Gatehouse core: identity, connections, commands, verdicts, and the session pipeline that
//! every protocol adapter drives. Nothing here opens a socket.

pub mod command;
pub mod connection;
pub mod gate;
pub mod identity;
pub mod metrics;
pub mod secret;

pub use command::{Command, CommandError, CommandOutcome, Verdict};
pub use connection::{
    Access, Connection, Connections, PostgresTarget, Protocol, Target, UpstreamTls, UpstreamTlsMode,
};
pub use gate::{ConnectRequest, Denied, Gate, Session, SessionEnd, SessionIndex, SessionInfo};
pub use gatehouse_audit as audit;
pub use gatehouse_audit::ActorRef;
pub use gatehouse_inspect::sql::{Classification, Classifier, StatementKind};
pub use identity::{AuthError, AuthMethod, Authenticator, Identity};
pub use metrics::Metrics;
pub use secret::Secret;
