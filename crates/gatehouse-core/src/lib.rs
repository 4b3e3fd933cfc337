//! Gatehouse core: identity, connections, commands, the policy step, and the session and
//! statement pipelines that every protocol adapter drives. Nothing here opens a socket.

pub mod approvals;
pub mod barrier;
pub mod command;
pub mod connection;
pub mod end;
pub mod gate;
pub mod identity;
pub mod limiter;
pub mod metrics;
pub mod policy;
pub mod recording;
mod registry;
pub mod rules;
pub mod secret;
pub mod session;
pub mod sink;

pub use barrier::{Gated, GatedError};
pub use command::Command;
pub use connection::{
    Access, Connection, Connections, PostgresTarget, Protocol, Target, UpstreamAuth, UpstreamTls,
    UpstreamTlsMode,
};
pub use end::EndCause;
pub use gate::{Caller, ConnectRequest, Denied, Gate, GateParts, SessionIndex, SessionInfo};
pub use gatehouse_audit as audit;
pub use gatehouse_audit::ActorRef;
pub use gatehouse_inspect::effects::Effects;
pub use gatehouse_inspect::sql::{Classification, Classifier, StatementKind};
pub use gatehouse_mask as mask;
pub use gatehouse_record as record;
pub use identity::{AuthError, AuthMethod, Authenticator, Identity};
pub use limiter::PreAuthLimits;
pub use metrics::Metrics;
pub use policy::{
    AllowAll, Decision, MaskVerdict, PendingApproval, Policy, Refusal, ResponsePlan, Ruling,
    StatementContext, Step, Transaction,
};
pub use recording::Recordings;
pub use rules::RulePolicy;
pub use secret::Secret;
pub use session::{
    Admission, Admitted, Binder, Hold, Refused, ResultStatus, Session, Statement, StatementId,
    StatementResult, StopSignal,
};
pub use sink::{AuditSink, MemorySink};
