//! Connecting to the upstream PostgreSQL server with the credential the gateway holds.

use crate::codec;
use crate::framer::{FrameError, Framer, Piece};
use crate::stream::PgStream;
use bytes::{Buf, BytesMut};
use gatehouse_core::{PostgresTarget, UpstreamAuth, UpstreamTls, UpstreamTlsMode};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the client must not learn: these errors go to the audit log and the gateway's log;
/// the client only hears that the target could not be reached. None contains the password.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("timed out connecting to the upstream server")]
    Timeout,
    #[error("the upstream server does not accept TLS, and the connection requires it")]
    TlsRefused,
    #[error("TLS handshake with the upstream server failed: {0}")]
    Tls(String),
    #[error("the upstream server refused the connection: {code} {message}")]
    Rejected { code: String, message: String },
    #[error("the upstream server asked for a password and the connection has none configured")]
    NoPassword,
    #[error("the upstream server asked for an unsupported authentication method ({0})")]
    UnsupportedAuth(String),
    #[error("the upstream server asked for the password by {0}, which the connection does not allow (upstream.auth); the password was not sent")]
    AuthRefused(&'static str),
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    #[error("the startup packet for the upstream would be {0} bytes, over PostgreSQL's limit")]
    StartupTooLarge(usize),
}

impl From<FrameError> for UpstreamError {
    fn from(e: FrameError) -> Self {
        UpstreamError::Protocol(e.to_string())
    }
}

impl From<std::io::Error> for UpstreamError {
    fn from(e: std::io::Error) -> Self {
        UpstreamError::Protocol(e.to_string())
    }
}

/// An authenticated upstream connection, ready for queries.
pub struct Upstream {
    pub stream: PgStream,
    /// ParameterStatus and NoticeResponse messages from the server's startup, to replay to the
    /// client verbatim.
    pub startup_messages: BytesMut,
    /// The server's cancel key.
    pub key: Option<(i32, i32)>,
}

/// Opens a (possibly TLS) connection to `host:port`, without the startup message.
pub async fn open(
    host: &str,
    port: u16,
    settings: &UpstreamTls,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<PgStream, UpstreamError> {
    let addr = format!("{host}:{port}");
    let tcp = TcpStream::connect(&addr)
        .await
        .map_err(|e| UpstreamError::Connect(addr, e))?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(PgStream::Plain(tcp));
    };
    let mut tcp = tcp;
    let mut buf = BytesMut::new();
    frontend::ssl_request(&mut buf);
    tcp.write_all(&buf).await?;
    let answer = tcp.read_u8().await?;
    match answer {
        b'S' => {
            let name = settings
                .server_name
                .clone()
                .unwrap_or_else(|| host.to_owned());
            let name = ServerName::try_from(name).map_err(|e| UpstreamError::Tls(e.to_string()))?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| UpstreamError::Tls(e.to_string()))?;
            Ok(PgStream::ClientTls(Box::new(stream)))
        }
        b'N' if settings.mode == UpstreamTlsMode::Prefer => Ok(PgStream::Plain(tcp)),
        b'N' => Err(UpstreamError::TlsRefused),
        other => Err(UpstreamError::Protocol(format!(
            "unexpected answer {other:#x} to SSLRequest"
        ))),
    }
}

/// Connects, authenticates as the target's user, and reads up to the first ReadyForQuery.
pub async fn connect(
    target: &PostgresTarget,
    tls: Option<&Arc<rustls::ClientConfig>>,
    client_params: &[(String, String)],
    timeout: Duration,
) -> Result<Upstream, UpstreamError> {
    tokio::time::timeout(timeout, connect_inner(target, tls, client_params))
        .await
        .map_err(|_| UpstreamError::Timeout)?
}

async fn connect_inner(
    target: &PostgresTarget,
    tls: Option<&Arc<rustls::ClientConfig>>,
    client_params: &[(String, String)],
) -> Result<Upstream, UpstreamError> {
    let mut stream = open(&target.host, target.port, &target.tls, tls).await?;
    let mut out = BytesMut::new();
    let params = [
        ("user", target.user.as_str()),
        ("database", target.database.as_str()),
    ]
    .into_iter()
    .chain(client_params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    frontend::startup_message(params, &mut out)?;
    if out.len() > codec::MAX_STARTUP_PACKET {
        return Err(UpstreamError::StartupTooLarge(out.len()));
    }
    stream.write_all(&out).await?;

    let mut framer = Framer::new(stream, 1024 * 1024, |_| false);
    let mut scram: Option<ScramSha256> = None;
    let mut startup_messages = BytesMut::new();
    let mut key = None;
    loop {
        let Some(Piece::Whole { tag, raw }) = framer.next().await? else {
            return Err(UpstreamError::Protocol(
                "connection closed during startup".into(),
            ));
        };
        let mut body = &raw[5..];
        match tag {
            b'R' => {
                if body.len() < 4 {
                    return Err(UpstreamError::Protocol(
                        "short authentication message".into(),
                    ));
                }
                let code = body.get_i32();
                out.clear();
                let password = || {
                    target
                        .password
                        .as_ref()
                        .map(|p| p.expose())
                        .ok_or(UpstreamError::NoPassword)
                };
                let allowed = |method: UpstreamAuth| {
                    if target.auth_methods.contains(&method) {
                        Ok(())
                    } else {
                        Err(UpstreamError::AuthRefused(method.as_str()))
                    }
                };
                match code {
                    0 => continue,
                    3 => {
                        allowed(UpstreamAuth::Password)?;
                        frontend::password_message(password()?.as_bytes(), &mut out)?
                    }
                    5 => {
                        allowed(UpstreamAuth::Md5)?;
                        let salt: [u8; 4] = body
                            .get(..4)
                            .and_then(|s| s.try_into().ok())
                            .ok_or_else(|| UpstreamError::Protocol("short md5 salt".into()))?;
                        let hash = postgres_protocol::authentication::md5_hash(
                            target.user.as_bytes(),
                            password()?.as_bytes(),
                            salt,
                        );
                        frontend::password_message(hash.as_bytes(), &mut out)?;
                    }
                    10 => {
                        allowed(UpstreamAuth::ScramSha256)?;
                        let offered = sasl_mechanisms(body);
                        // Channel binding ties the exchange to this TLS connection: a server
                        // in the middle cannot relay it to the real one.
                        let binding = framer
                            .get_ref()
                            .peer_certificate()
                            .and_then(|der| crate::tls::end_point_hash(&der));
                        let (mechanism, binding) = match binding {
                            Some(hash) if offered.iter().any(|m| m == "SCRAM-SHA-256-PLUS") => (
                                "SCRAM-SHA-256-PLUS",
                                ChannelBinding::tls_server_end_point(hash),
                            ),
                            // TLS but the server does not offer binding: say so (`y`), so a
                            // downgrade by a server in the middle is detected by the real one.
                            Some(_) => ("SCRAM-SHA-256", ChannelBinding::unrequested()),
                            None => ("SCRAM-SHA-256", ChannelBinding::unsupported()),
                        };
                        if !offered.iter().any(|m| m == mechanism) {
                            return Err(UpstreamError::UnsupportedAuth(offered.join(", ")));
                        }
                        let client = ScramSha256::new(password()?.as_bytes(), binding);
                        frontend::sasl_initial_response(mechanism, client.message(), &mut out)?;
                        scram = Some(client);
                    }
                    11 => {
                        let client = scram.as_mut().ok_or_else(|| {
                            UpstreamError::Protocol("unexpected SASL continue".into())
                        })?;
                        client
                            .update(body)
                            .map_err(|e| UpstreamError::Protocol(format!("SCRAM: {e}")))?;
                        frontend::sasl_response(client.message(), &mut out)?;
                    }
                    12 => {
                        let mut client = scram.take().ok_or_else(|| {
                            UpstreamError::Protocol("unexpected SASL final".into())
                        })?;
                        // Verifies the server's signature: the server proved it knows the password too.
                        client
                            .finish(body)
                            .map_err(|e| UpstreamError::Protocol(format!("SCRAM: {e}")))?;
                        continue;
                    }
                    other => return Err(UpstreamError::UnsupportedAuth(format!("code {other}"))),
                }
                framer.get_mut().write_all(&out).await?;
            }
            b'E' => {
                let (code, message) = codec::error_fields(body);
                return Err(UpstreamError::Rejected { code, message });
            }
            b'K' => {
                if body.len() >= 8 {
                    key = Some((body.get_i32(), body.get_i32()));
                }
            }
            b'S' | b'N' => startup_messages.extend_from_slice(&raw),
            b'Z' => break,
            b'v' => {} // NegotiateProtocolVersion: we asked for 3.0 only.
            other => {
                return Err(UpstreamError::Protocol(format!(
                    "unexpected message {:?} during startup",
                    char::from(other)
                )))
            }
        }
    }
    Ok(Upstream {
        stream: into_stream(framer)?,
        startup_messages,
        key,
    })
}

fn into_stream(framer: Framer<PgStream>) -> Result<PgStream, UpstreamError> {
    let (stream, leftover) = framer.into_parts();
    if !leftover.is_empty() {
        return Err(UpstreamError::Protocol(
            "data after ReadyForQuery during startup".into(),
        ));
    }
    Ok(stream)
}

fn sasl_mechanisms(body: &[u8]) -> Vec<String> {
    body.split(|&b| b == 0)
        .filter(|m| !m.is_empty())
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect()
}

/// Sends a CancelRequest with the upstream's own key over a new connection.
pub async fn cancel(
    route: &crate::cancel::CancelTarget,
    key: (i32, i32),
) -> Result<(), UpstreamError> {
    let open = open(
        &route.host,
        route.port,
        &route.tls,
        route.tls_config.as_ref(),
    );
    let mut stream = tokio::time::timeout(Duration::from_secs(10), open)
        .await
        .map_err(|_| UpstreamError::Timeout)??;
    let mut out = BytesMut::new();
    frontend::cancel_request(key.0, key.1, &mut out);
    stream.write_all(&out).await?;
    stream.flush().await?;
    // The server closes the connection without answering.
    let mut sink = [0u8; 1];
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut sink)).await;
    Ok(())
}
