//! The client side of the connection handshake, up to the password.

use crate::codec::{
    self, sqlstate, Severity, CANCEL_REQUEST, GSSENC_REQUEST, MAX_STARTUP_PACKET, PROTOCOL_3_0,
    SSL_REQUEST,
};
use crate::stream::PgStream;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// When the gateway insists on TLS from clients (their password carries the credential).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequireTls {
    Never,
    /// Clients connecting from a loopback address may use plaintext.
    NonLoopback,
    Always,
}

/// Longest password message accepted: room for a large JWT.
const MAX_PASSWORD_MESSAGE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("closed before sending a startup packet")]
    ClosedEarly,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Malformed or unsupported input; the client has been sent a FATAL error.
    #[error("{0}")]
    Protocol(String),
}

/// A client that has completed startup.
pub enum Startup {
    Session {
        stream: PgStream,
        params: Vec<(String, String)>,
    },
    Cancel {
        pid: i32,
        secret: i32,
    },
}

/// Reads the startup sequence: SSL/GSS negotiation, then a StartupMessage or CancelRequest.
pub async fn read_startup(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<&Arc<rustls::ServerConfig>>,
    require_tls: RequireTls,
) -> Result<Startup, HandshakeError> {
    let mut stream = PgStream::Plain(tcp);
    let mut first = true;
    loop {
        let packet = match read_packet(&mut stream).await {
            Err(HandshakeError::Io(e))
                if first && e.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                return Err(HandshakeError::ClosedEarly)
            }
            Err(HandshakeError::Protocol(reason)) => {
                return Err(fatal(&mut stream, sqlstate::PROTOCOL_VIOLATION, &reason).await)
            }
            other => other?,
        };
        first = false;
        let code = i32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]);
        let body = &packet[4..];
        match code {
            SSL_REQUEST if !stream.is_tls() => match (tls, stream) {
                (Some(config), PgStream::Plain(mut tcp)) => {
                    tcp.write_all(b"S").await?;
                    let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                    let tls = acceptor.accept(tcp).await.map_err(|e| {
                        HandshakeError::Protocol(format!("TLS handshake failed: {e}"))
                    })?;
                    stream = PgStream::ServerTls(Box::new(tls));
                }
                (_, mut other) => {
                    other.write_all(b"N").await?;
                    stream = other;
                }
            },
            GSSENC_REQUEST if !stream.is_tls() => stream.write_all(b"N").await?,
            CANCEL_REQUEST if body.len() == 8 => {
                let pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                let secret = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                return Ok(Startup::Cancel { pid, secret });
            }
            version if version >> 16 == 3 => {
                let params = match codec::startup_params(body) {
                    Ok(params) => params,
                    Err(e) => {
                        return Err(fatal(
                            &mut stream,
                            sqlstate::PROTOCOL_VIOLATION,
                            &e.to_string(),
                        )
                        .await)
                    }
                };
                if needs_tls(require_tls, peer) && !stream.is_tls() {
                    return Err(fatal(
                        &mut stream,
                        sqlstate::INVALID_AUTHORIZATION,
                        "TLS is required: connect with sslmode=require",
                    )
                    .await);
                }
                // Newer minor versions and `_pq_.` options are declined, as PostgreSQL does.
                let unrecognised: Vec<String> = params
                    .iter()
                    .filter(|(k, _)| k.starts_with("_pq_."))
                    .map(|(k, _)| k.clone())
                    .collect();
                if version != PROTOCOL_3_0 || !unrecognised.is_empty() {
                    let mut out = BytesMut::new();
                    codec::negotiate_protocol_version(&mut out, 0, &unrecognised);
                    stream.write_all(&out).await?;
                }
                let params = params
                    .into_iter()
                    .filter(|(k, _)| !k.starts_with("_pq_."))
                    .collect();
                return Ok(Startup::Session { stream, params });
            }
            _ => {
                let reason = format!("unsupported startup request code {code}");
                return Err(fatal(&mut stream, sqlstate::PROTOCOL_VIOLATION, &reason).await);
            }
        }
    }
}

fn needs_tls(require: RequireTls, peer: SocketAddr) -> bool {
    match require {
        RequireTls::Never => false,
        RequireTls::Always => true,
        RequireTls::NonLoopback => !peer.ip().is_loopback(),
    }
}

/// A length-prefixed startup packet (no type byte).
async fn read_packet(stream: &mut PgStream) -> Result<Vec<u8>, HandshakeError> {
    let len = stream.read_i32().await?;
    let len = usize::try_from(len).unwrap_or(0);
    if !(8..=MAX_STARTUP_PACKET).contains(&len) {
        return Err(HandshakeError::Protocol(format!(
            "invalid startup packet length {len}"
        )));
    }
    let mut packet = vec![0; len - 4];
    stream.read_exact(&mut packet).await?;
    Ok(packet)
}

/// Asks for the password in cleartext (the channel should be TLS) and reads it.
pub async fn read_password(stream: &mut PgStream) -> Result<String, HandshakeError> {
    let mut out = BytesMut::new();
    codec::auth_cleartext_request(&mut out);
    stream.write_all(&out).await?;
    stream.flush().await?;
    let tag = stream.read_u8().await?;
    let len = stream.read_i32().await?;
    let len = usize::try_from(len).unwrap_or(0);
    if tag != b'p' || !(5..=MAX_PASSWORD_MESSAGE).contains(&len) {
        let reason = "expected a password message";
        return Err(fatal(stream, sqlstate::PROTOCOL_VIOLATION, reason).await);
    }
    let mut body = vec![0; len - 4];
    stream.read_exact(&mut body).await?;
    match codec::read_cstr(&body, "password") {
        Ok((password, _)) => Ok(password.to_owned()),
        Err(e) => Err(fatal(stream, sqlstate::PROTOCOL_VIOLATION, &e.to_string()).await),
    }
}

/// Sends a FATAL error and returns the matching handshake error.
pub async fn fatal(stream: &mut PgStream, code: &str, text: &str) -> HandshakeError {
    send_error(stream, Severity::Fatal, code, text).await;
    HandshakeError::Protocol(text.to_owned())
}

/// Best effort: the client may already be gone.
pub async fn send_error(stream: &mut PgStream, severity: Severity, code: &str, text: &str) {
    let mut out = BytesMut::new();
    codec::error_response(&mut out, severity, code, text);
    let _ = stream.write_all(&out).await;
    let _ = stream.flush().await;
}
