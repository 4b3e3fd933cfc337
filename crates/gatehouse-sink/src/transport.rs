//! The network side of the sinks: a syslog connection (TCP or TLS) and a HEC client.
//!
//! Formatting lives in [`crate::syslog`] and [`crate::hec`]; this module only moves bytes and
//! interprets what comes back.

use std::fmt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::RootCertStore;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;

use crate::config::{HecConfig, Secret, SinkConfig, SyslogConfig, Target, TlsConfig};
use crate::hec::{self, Accepted, Meta, Refused};
use crate::source::SourceRecord;
use crate::syslog::{self, Header};

/// A failed delivery attempt. Always retried; never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("TLS with {address}: {reason}")]
    Tls { address: String, reason: String },
    #[error("write to {address}: {reason}")]
    Write { address: String, reason: String },
    #[error("connection to {address} was closed by the receiver")]
    Closed { address: String },
    #[error("POST {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("POST {url}: {refused}")]
    Refused { url: String, refused: Refused },
    #[error("POST {url}: acknowledgement {ack_id} not confirmed: {reason}")]
    Ack {
        url: String,
        ack_id: u64,
        reason: String,
    },
}

/// One sink's connection to its receiver.
pub(crate) enum Transport {
    Syslog(Box<SyslogTransport>),
    Hec(Box<HecTransport>),
}

impl Transport {
    /// Checks the settings and prepares TLS; connects nothing yet.
    pub(crate) fn new(config: &SinkConfig, hostname: &str) -> Result<Transport, String> {
        match &config.target {
            Target::Syslog(s) => {
                SyslogTransport::new(s, hostname).map(|t| Transport::Syslog(Box::new(t)))
            }
            Target::Hec(h) => HecTransport::new(h, hostname).map(|t| Transport::Hec(Box::new(t))),
        }
    }

    /// Sends a batch. `Ok` means written and flushed (syslog) or accepted, and acknowledged
    /// when the receiver offers acknowledgements (HEC).
    pub(crate) async fn send(&mut self, batch: &[SourceRecord]) -> Result<(), DeliveryError> {
        match self {
            Transport::Syslog(t) => t.send(batch).await,
            Transport::Hec(t) => t.send(batch).await,
        }
    }

    /// How long after a successful send a batch is taken as delivered if the connection stays
    /// up (syslog has no acknowledgements); zero when `send` already proves it.
    pub(crate) fn confirm_window(&self) -> Duration {
        match self {
            Transport::Syslog(t) => t.confirm_window,
            Transport::Hec(_) => Duration::ZERO,
        }
    }

    /// Whether the connection that carried the unconfirmed batches is still up.
    pub(crate) fn probe(&mut self) -> Result<(), DeliveryError> {
        match self {
            Transport::Syslog(t) => t.probe(),
            Transport::Hec(_) => Ok(()),
        }
    }

    /// Drops the connection (the next send reconnects).
    pub(crate) fn disconnect(&mut self) {
        if let Transport::Syslog(t) = self {
            t.conn = None;
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

struct Tls {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

pub(crate) struct SyslogTransport {
    address: String,
    tls: Option<Tls>,
    header: Header,
    conn: Option<Box<dyn Stream>>,
    connect_timeout: Duration,
    write_timeout: Duration,
    confirm_window: Duration,
    buf: Vec<u8>,
}

impl SyslogTransport {
    fn new(config: &SyslogConfig, hostname: &str) -> Result<Self, String> {
        if config.address.is_empty() {
            return Err("syslog address is empty".into());
        }
        let tls = config
            .tls
            .as_ref()
            .map(|tls| tls_connector(&config.address, tls))
            .transpose()?;
        Ok(SyslogTransport {
            address: config.address.clone(),
            tls,
            header: Header::new(config.facility, hostname, &config.app_name, &config.sd_id),
            conn: None,
            connect_timeout: config.connect_timeout,
            write_timeout: config.write_timeout,
            confirm_window: config.confirm_window,
            buf: Vec::new(),
        })
    }

    async fn connect(&mut self) -> Result<Box<dyn Stream>, DeliveryError> {
        let address = &self.address;
        let connect_err = |reason: String| DeliveryError::Connect {
            address: address.clone(),
            reason,
        };
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(address.as_str()))
            .await
            .map_err(|_| connect_err("timed out".into()))?
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tls.connector.connect(tls.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| DeliveryError::Tls {
            address: address.clone(),
            reason: "handshake timed out".into(),
        })?
        .map_err(|e| DeliveryError::Tls {
            address: address.clone(),
            reason: error_chain(&e),
        })?;
        Ok(Box::new(stream))
    }

    async fn send(&mut self, batch: &[SourceRecord]) -> Result<(), DeliveryError> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let conn = self.connect().await?;
                tracing::info!(address = %self.address, tls = self.tls.is_some(), "connected");
                conn
            }
        };
        self.buf.clear();
        for record in batch {
            syslog::frame(&mut self.buf, &self.header, record);
        }
        let write = async {
            conn.write_all(&self.buf).await?;
            conn.flush().await
        };
        let result = tokio::time::timeout(self.write_timeout, write).await;
        let write_err = |reason: String| DeliveryError::Write {
            address: self.address.clone(),
            reason,
        };
        match result {
            Ok(Ok(())) => {
                self.conn = Some(conn);
                Ok(())
            }
            Ok(Err(e)) => Err(write_err(e.to_string())),
            Err(_) => Err(write_err("timed out".into())),
        }
    }

    /// Looks at the connection without waiting: a receiver that closed or reset it shows as
    /// end of file or an error. Syslog receivers send nothing, so any bytes are discarded.
    fn probe(&mut self) -> Result<(), DeliveryError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(DeliveryError::Closed {
                address: self.address.clone(),
            });
        };
        let mut scratch = [0u8; 512];
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..64 {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *conn).poll_read(&mut cx, &mut buf) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => break,
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => {
                    self.conn = None;
                    return Err(DeliveryError::Write {
                        address: self.address.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        self.conn = None;
        Err(DeliveryError::Closed {
            address: self.address.clone(),
        })
    }
}

/// A rustls connector (ring provider) trusting the configured CAs or the system's.
fn tls_connector(address: &str, tls: &TlsConfig) -> Result<Tls, String> {
    let config = client_tls(tls.ca_file.as_deref())?;
    let name = match &tls.server_name {
        Some(name) => name.clone(),
        None => host_of(address).to_owned(),
    };
    let server_name =
        ServerName::try_from(name.clone()).map_err(|e| format!("TLS server name {name:?}: {e}"))?;
    Ok(Tls {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        server_name,
    })
}

/// A TLS client configuration (ring provider, safe protocol versions) trusting the CAs in
/// `ca_file`, or the system's; for every outbound HTTPS or TLS connection the gateway makes.
pub fn client_tls(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots(ca_file)?)
    .with_no_client_auth())
}

/// An HTTP client for a receiver the gateway sends evidence to: [`client_tls`], `timeout` for
/// connecting and for each request, no redirects (a redirect could send the records, or a
/// token, elsewhere).
pub fn http_client(
    ca_file: Option<&Path>,
    timeout: std::time::Duration,
) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(client_tls(ca_file)?)
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let mut count = 0usize;
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("CA file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("CA file {}: {e}", path.display()))?;
                count += 1;
            }
            if count == 0 {
                return Err(format!("CA file {}: no certificates", path.display()));
            }
        }
        None => {
            let loaded = rustls_native_certs::load_native_certs();
            for err in &loaded.errors {
                tracing::warn!(error = %err, "could not load some system CA certificates");
            }
            roots.add_parsable_certificates(loaded.certs);
        }
    }
    Ok(roots)
}

/// The host part of `host:port` or `[v6]:port`.
fn host_of(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((host, _)) => host,
        None => address,
    }
}

/// An error with its sources, for messages that say what actually went wrong.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(source) = next {
        let text = source.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = source.source();
    }
    out
}

/// Largest answer body read from the receiver.
const MAX_ANSWER: usize = 64 * 1024;

pub(crate) struct HecTransport {
    client: reqwest::Client,
    url: String,
    event_url: reqwest::Url,
    ack_url: Option<reqwest::Url>,
    authorization: reqwest::header::HeaderValue,
    channel: Option<reqwest::header::HeaderValue>,
    token: Secret,
    meta: Meta,
    ack_poll_interval: Duration,
    ack_timeout: Duration,
}

impl fmt::Debug for HecTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HecTransport")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl HecTransport {
    fn new(config: &HecConfig, hostname: &str) -> Result<Self, String> {
        let base = reqwest::Url::parse(&config.url).map_err(|e| format!("HEC url: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err("HEC url must be http or https".into());
        }
        if config.token.is_empty() {
            return Err("HEC token is empty".into());
        }
        let join = |path: &str| {
            base.join(path)
                .map_err(|e| format!("HEC path {path:?}: {e}"))
        };
        let event_url = join(&config.path)?;
        let ack_url = match &config.channel {
            Some(channel) => {
                let mut url = join(&config.ack_path)?;
                url.query_pairs_mut().append_pair("channel", channel);
                Some(url)
            }
            None => None,
        };
        let mut authorization =
            reqwest::header::HeaderValue::from_str(&format!("Splunk {}", config.token.expose()))
                .map_err(|_| "HEC token is not a valid header value".to_owned())?;
        authorization.set_sensitive(true);
        let channel = config
            .channel
            .as_deref()
            .map(reqwest::header::HeaderValue::from_str)
            .transpose()
            .map_err(|_| "HEC channel is not a valid header value".to_owned())?;
        let client = http_client(config.ca_file.as_deref(), config.request_timeout)?;
        Ok(HecTransport {
            client,
            url: event_url.to_string(),
            event_url,
            ack_url,
            authorization,
            channel,
            token: config.token.clone(),
            meta: Meta {
                host: hostname.to_owned(),
                source: config.source.clone(),
                sourcetype: config.sourcetype.clone(),
                index: config.index.clone(),
            },
            ack_poll_interval: config.ack_poll_interval,
            ack_timeout: config.ack_timeout,
        })
    }

    /// Replaces the token wherever it appears (a receiver could echo it in an answer).
    fn scrub(&self, text: String) -> String {
        let token = self.token.expose();
        if token.is_empty() || !text.contains(token) {
            text
        } else {
            text.replace(token, "***")
        }
    }

    fn http_err(&self, url: &reqwest::Url, e: &reqwest::Error) -> DeliveryError {
        DeliveryError::Http {
            url: url.to_string(),
            reason: self.scrub(error_chain(e)),
        }
    }

    async fn post(
        &self,
        url: &reqwest::Url,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), DeliveryError> {
        let mut request = self
            .client
            .post(url.clone())
            .header(reqwest::header::AUTHORIZATION, self.authorization.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(channel) = &self.channel {
            request = request.header("X-Splunk-Request-Channel", channel.clone());
        }
        let mut response = request.send().await.map_err(|e| self.http_err(url, &e))?;
        let status = response.status().as_u16();
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.http_err(url, &e))? {
            let room = MAX_ANSWER - answer.len();
            answer.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if answer.len() >= MAX_ANSWER {
                break;
            }
        }
        Ok((status, answer))
    }

    async fn send(&mut self, batch: &[SourceRecord]) -> Result<(), DeliveryError> {
        let body = hec::body(&self.meta, batch);
        let (status, answer) = self.post(&self.event_url, body).await?;
        match hec::parse_answer(status, &answer) {
            Ok(Accepted::Done) => Ok(()),
            Ok(Accepted::Ack(id)) => match &self.ack_url {
                Some(ack_url) => self.wait_ack(ack_url, id).await,
                // Acknowledgements are only used with a channel; without one a 2xx is success.
                None => Ok(()),
            },
            Err(refused) => Err(DeliveryError::Refused {
                url: self.url.clone(),
                refused: scrub_refused(self, refused),
            }),
        }
    }

    /// Polls the acknowledgement endpoint until `id` is indexed. Any failure (an error answer,
    /// no answer, the deadline) fails the batch, which is then sent again.
    async fn wait_ack(&self, ack_url: &reqwest::Url, id: u64) -> Result<(), DeliveryError> {
        let deadline = tokio::time::Instant::now() + self.ack_timeout;
        let ack_err = |reason: String| DeliveryError::Ack {
            url: ack_url.to_string(),
            ack_id: id,
            reason,
        };
        loop {
            tokio::time::sleep(self.ack_poll_interval).await;
            let (status, answer) = self.post(ack_url, hec::ack_query(id)).await?;
            if !(200..300).contains(&status) {
                let refused = hec::parse_answer(status, &answer)
                    .err()
                    .map_or_else(|| format!("HTTP {status}"), |r| r.to_string());
                return Err(ack_err(self.scrub(refused)));
            }
            if hec::parse_ack(&answer, id).map_err(|e| ack_err(self.scrub(e)))? {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ack_err(format!(
                    "not indexed within {:?}",
                    self.ack_timeout
                )));
            }
        }
    }
}

fn scrub_refused(t: &HecTransport, refused: Refused) -> Refused {
    match refused {
        Refused::Status { status, code, text } => Refused::Status {
            status,
            code,
            text: text.map(|s| t.scrub(s)),
        },
        Refused::Code { status, code, text } => Refused::Code {
            status,
            code,
            text: text.map(|s| t.scrub(s)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("siem.example:6514"), "siem.example");
        assert_eq!(host_of("[::1]:6514"), "::1");
        assert_eq!(host_of("127.0.0.1:601"), "127.0.0.1");
        assert_eq!(host_of("siem"), "siem");
    }

    #[test]
    fn hec_settings_are_checked() {
        let hec = |url: &str, token: &str| {
            HecTransport::new(&HecConfig::new(url, Secret::new(token)), "gw").map(|_| ())
        };
        assert!(hec("http://127.0.0.1:8088", "t").is_ok());
        assert!(hec("ftp://127.0.0.1", "t").is_err());
        assert!(hec("not a url", "t").is_err());
        assert!(hec("http://127.0.0.1:8088", "").is_err());
        assert!(hec("http://127.0.0.1:8088", "bad\ntoken").is_err());
    }
}
