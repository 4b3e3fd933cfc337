//! PostgreSQL protocol adapter.
//!
//! Accepts PostgreSQL clients, authenticates them through the core with the credential they
//! send as password, connects to the connection's upstream with the credential the gateway
//! holds, and relays the session through the core's pipeline. The database name the client
//! asks for selects the connection.

mod cancel;
pub mod codec;
pub mod encoding;
mod estimate;
mod flow;
mod framer;
mod mask;
mod names;
mod params;
mod record;
mod relay;
pub mod replay;
pub mod settings;
mod startup;
mod stream;
pub mod tls;

pub use relay::{Initial, RelayLimits};
pub use startup::RequireTls;

use crate::cancel::{CancelRegistry, CancelTarget};
use crate::codec::{sqlstate, Severity};
use crate::startup::{HandshakeError, Startup};
use crate::stream::PgStream;
use bytes::BytesMut;
use gatehouse_core::audit::{Event, EventKind, Outcome, What, Who};
use gatehouse_core::{ConnectRequest, Denied, EndCause, Gate, Protocol, Target};
use gatehouse_serve::{Adapter, Refusal, Slot};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::Instrument;

/// Listener settings.
#[derive(Clone)]
pub struct PgConfig {
    /// Server certificate for clients' SSLRequest; without it SSLRequest is declined.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub require_tls: RequireTls,
    /// Limit for everything before the session starts (startup, password, authentication,
    /// upstream connection).
    pub handshake_timeout: Duration,
    pub limits: RelayLimits,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            tls: None,
            require_tls: RequireTls::NonLoopback,
            handshake_timeout: Duration::from_secs(10),
            limits: RelayLimits {
                max_message: 16 * 1024 * 1024,
                idle_timeout: None,
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("connection {connection}: {source}")]
    UpstreamTls {
        connection: String,
        source: tls::TlsSetupError,
    },
}

/// A client past its startup packet and password, not yet authenticated.
struct Greeted {
    client: PgStream,
    /// The startup parameters to forward (checked against the allow-list).
    params: Vec<(String, String)>,
    user: String,
    connection: String,
    credential: String,
}

/// The PostgreSQL listener's shared state.
pub struct PgGateway {
    gate: Gate,
    /// Turns true when the gateway stops: open sessions end themselves, audited.
    shutdown: tokio::sync::watch::Receiver<bool>,
    config: PgConfig,
    cancels: CancelRegistry,
    /// Client TLS settings per connection, built once.
    upstream_tls: HashMap<String, Option<Arc<rustls::ClientConfig>>>,
}

impl PgGateway {
    pub fn new(
        gate: Gate,
        config: PgConfig,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Arc<Self>, SetupError> {
        let mut upstream_tls = HashMap::new();
        for (name, protocol, settings) in gate.setup() {
            if protocol != Protocol::Postgres {
                continue;
            }
            let tls = tls::client_config(&settings).map_err(|source| SetupError::UpstreamTls {
                connection: name.clone(),
                source,
            })?;
            upstream_tls.insert(name, tls);
        }
        Ok(Arc::new(PgGateway {
            gate,
            shutdown,
            config,
            cancels: CancelRegistry::default(),
            upstream_tls,
        }))
    }

    async fn handle(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr, slot: Slot) {
        // Phase 1, bounded by the handshake timeout: startup packet and password. Nothing has
        // been authenticated yet, so an abandoned handshake leaves no session behind.
        let greeted =
            tokio::time::timeout(self.config.handshake_timeout, self.greet(tcp, peer)).await;
        let mut greeted = match greeted {
            Ok(Ok(Some(greeted))) => greeted,
            Ok(Ok(None)) => return,
            Err(_) => {
                return self
                    .gate
                    .protocol_error(Protocol::Postgres, peer, "handshake timed out")
                    .await
            }
            Ok(Err(HandshakeError::ClosedEarly)) => {
                return self
                    .gate
                    .protocol_error(Protocol::Postgres, peer, "closed before startup")
                    .await
            }
            Ok(Err(e)) => {
                return self
                    .gate
                    .protocol_error(Protocol::Postgres, peer, &e.to_string())
                    .await
            }
        };
        drop(slot);
        // Phase 2: authenticate and open the session. Each authenticator bounds its own I/O;
        // no outer timeout may cut an opened, audited session short.
        let detail = params::record(&greeted.params);
        let request = ConnectRequest {
            protocol: Protocol::Postgres,
            connection: &greeted.connection,
            credential: &greeted.credential,
            claimed_user: Some(&greeted.user),
            source: peer,
            detail: Some(&detail),
        };
        let session = match self.gate.open(request).await {
            Ok(session) => session,
            Err(denied) => {
                let code = match denied {
                    Denied::BadCredential(_) => sqlstate::INVALID_PASSWORD,
                    Denied::NotPermitted => sqlstate::INVALID_AUTHORIZATION,
                    Denied::Unavailable(_) => sqlstate::CANNOT_CONNECT_NOW,
                };
                let text = denied.client_message(&greeted.connection);
                startup::send_error(&mut greeted.client, Severity::Fatal, code, &text).await;
                return;
            }
        };
        greeted.credential.clear();
        // Phase 3: the upstream and the relay, ending the session exactly once.
        let span = session.span();
        self.run_session(greeted, session).instrument(span).await
    }

    async fn run_session(&self, greeted: Greeted, session: gatehouse_core::Session) {
        let Greeted {
            mut client, params, ..
        } = greeted;
        let Target::Postgres(target) = &session.connection().target;
        let tls = self
            .upstream_tls
            .get(&session.connection().name)
            .cloned()
            .flatten();
        let upstream = match upstream::connect(
            target,
            tls.as_ref(),
            &params,
            self.config.handshake_timeout,
        )
        .await
        {
            Ok(upstream) => upstream,
            Err(e) => {
                tracing::warn!(error = %e, "upstream connection failed");
                let (code, text) = match e {
                    upstream::UpstreamError::StartupTooLarge(_) => (
                        sqlstate::PROTOCOL_VIOLATION,
                        "startup parameters too large once the target's user and database are substituted".to_owned(),
                    ),
                    _ => (
                        sqlstate::SQLCLIENT_UNABLE,
                        format!("could not connect to the target of connection \"{}\"", session.connection().name),
                    ),
                };
                startup::send_error(&mut client, Severity::Fatal, code, &text).await;
                let cause = EndCause::UpstreamConnectFailed(e.to_string());
                let detail = serde_json::json!({ "upstream_error": e.to_string() });
                session.end(&cause, Some(detail)).await;
                return;
            }
        };
        // The settings the server reports decide how the gateway reads the client's text.
        let initial = match params::initial(&upstream.startup_messages, target.allow_fastpath) {
            Ok(initial) => initial,
            Err(reason) => {
                startup::send_error(
                    &mut client,
                    Severity::Fatal,
                    sqlstate::CANT_CHANGE_RUNTIME_PARAM,
                    &reason,
                )
                .await;
                session
                    .end(&EndCause::UnsafeSessionState(reason), None)
                    .await;
                return;
            }
        };
        let interrupt = Arc::new(tokio::sync::Notify::new());
        let cancel_guard = self.cancels.register(CancelTarget {
            session: session.id().to_owned(),
            connection: session.connection().name.clone(),
            host: target.host.clone(),
            port: target.port,
            tls: target.tls.clone(),
            tls_config: tls.clone(),
            upstream_key: upstream.key.unwrap_or_default(),
            interrupt: interrupt.clone(),
        });
        tracing::info!("session started");
        let mut greeting = BytesMut::new();
        codec::auth_ok(&mut greeting);
        greeting.extend_from_slice(&upstream.startup_messages);
        codec::backend_key_data(&mut greeting, cancel_guard.key.0, cancel_guard.key.1);
        codec::ready_for_query(&mut greeting, b'I');
        if client.write_all(&greeting).await.is_err() {
            session.end(&EndCause::ClientClosed, None).await;
            return;
        }
        let cause = relay::run(
            &session,
            client,
            upstream.stream,
            self.config.limits,
            initial,
            relay::Hooks {
                interrupt,
                estimator: Some(Arc::new(estimate::Estimator {
                    target: target.clone(),
                    tls: tls.clone(),
                    params: params.clone(),
                    timeout: self.config.handshake_timeout,
                })),
            },
            self.shutdown.clone(),
        )
        .await;
        tracing::info!(reason = %cause, "session ended");
        drop(cancel_guard);
        if let EndCause::ClientProtocol(reason) = &cause {
            session.protocol_error(reason).await;
        }
        session.end(&cause, None).await;
    }

    /// The startup sequence up to the password; `None` when the connection was a cancel
    /// request (handled here).
    async fn greet(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Result<Option<Greeted>, HandshakeError> {
        let startup =
            startup::read_startup(tcp, peer, self.config.tls.as_ref(), self.config.require_tls)
                .await?;
        let (mut client, params) = match startup {
            Startup::Cancel { pid, secret } => {
                self.cancel(peer, (pid, secret)).await;
                return Ok(None);
            }
            Startup::Session { stream, params } => (stream, params),
        };
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if param("replication").is_some_and(|v| v != "false" && v != "0" && v != "off") {
            let text = "replication connections are not supported through the gateway";
            return Err(startup::fatal(&mut client, sqlstate::FEATURE_NOT_SUPPORTED, text).await);
        }
        let Some(user) = param("user").map(str::to_owned) else {
            return Err(startup::fatal(
                &mut client,
                sqlstate::INVALID_AUTHORIZATION,
                "no user name in startup packet",
            )
            .await);
        };
        // As in PostgreSQL, the database defaults to the user name.
        let connection = param("database")
            .filter(|d| !d.is_empty())
            .unwrap_or(&user)
            .to_owned();
        let params = match params::forwarded(&params) {
            Ok(params) => params,
            Err(reason) => {
                return Err(
                    startup::fatal(&mut client, sqlstate::INSUFFICIENT_PRIVILEGE, &reason).await,
                )
            }
        };
        let credential = startup::read_password(&mut client).await?;
        Ok(Some(Greeted {
            client,
            params,
            user,
            connection,
            credential,
        }))
    }

    /// Forwards a cancel request with the upstream's key. Like PostgreSQL, never answers.
    async fn cancel(&self, peer: SocketAddr, key: (i32, i32)) {
        let who = Who {
            source: Some(peer.to_string()),
            method: Some("cancel_key".to_owned()),
            ..Who::default()
        };
        let Some(found) = self.cancels.lookup(key) else {
            let mut event = Event::now(EventKind::Cancel, Outcome::failure("unknown cancel key"));
            event.who = who;
            event.what = What {
                protocol: Some("postgres".to_owned()),
                ..What::default()
            };
            let _ = self.gate.record(event).await;
            return;
        };
        // A statement held for approval ends its hold; a running one is cancelled by the server.
        found.interrupt.notify_waiters();
        let result = upstream::cancel(&found, found.upstream_key).await;
        let outcome = match &result {
            Ok(()) => Outcome::success(),
            Err(e) => Outcome::failure(e.to_string()),
        };
        let mut event = Event::now(EventKind::Cancel, outcome);
        event.session = Some(found.session);
        event.who = who;
        event.what = What {
            connection: Some(found.connection),
            protocol: Some("postgres".to_owned()),
            ..What::default()
        };
        let _ = self.gate.record(event).await;
    }
}

mod upstream;

impl Adapter for PgGateway {
    fn protocol(&self) -> Protocol {
        Protocol::Postgres
    }

    fn serve(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        slot: Slot,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.handle(tcp, peer, slot))
    }

    fn refuse(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        why: Refusal,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let reason = match why {
                Refusal::TooManyFromSource => {
                    let mut out = BytesMut::new();
                    codec::error_response(
                        &mut out,
                        Severity::Fatal,
                        sqlstate::TOO_MANY_CONNECTIONS,
                        "too many connections from this address are still authenticating; try again shortly",
                    );
                    let mut tcp = tcp;
                    let _ = tcp.write_all(&out).await;
                    "too many handshakes from this source"
                }
                Refusal::Silent => "sent nothing within the first-packet timeout",
            };
            self.gate
                .protocol_error(Protocol::Postgres, peer, reason)
                .await;
        })
    }
}
