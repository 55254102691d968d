//! The SMTP delivery backend of `relance run`: email handed to a relay with `lettre` (STARTTLS
//! or implicit TLS with rustls, a pool of open connections, a shared send rate), the relay's replies
//! classed into the delivery contract's transient and permanent failures.
//!
//! Configuration (see [`SmtpSettings::from_env`]):
//! - `RELANCE_SMTP_URL`: `smtp://user:pass@host:587` (STARTTLS required),
//!   `smtps://user:pass@host:465` (implicit TLS), or `smtp://127.0.0.1:25?tls=none` (clear
//!   text, loopback hosts only: credentials and mail never cross a network in clear). User and
//!   password are percent-decoded.
//! - `RELANCE_FROM_EMAIL`: the default `From` (a message's own `from` wins). Required.
//! - `RELANCE_SMTP_CA_FILE`: an extra PEM root beside the system's (a private relay, tests).
//! - `RELANCE_SMTP_RATE`: messages per second at most, shared by all concurrent sends.
//! - `RELANCE_SMTP_POOL`: connections kept open to the relay (default 4).
//! - `RELANCE_SMTP_TIMEOUT`: seconds one message may take (default 30).

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message, MultiPart, SinglePart};
use lettre::transport::smtp;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use relance_core::delivery::{Backend, DeliverFuture, DeliveryError, Outgoing};
use relance_core::engine::Recipient;
use relance_core::net::is_loopback_host;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// The variable holding the relay's URL.
pub const URL_VAR: &str = "RELANCE_SMTP_URL";
/// The variable holding the default `From`.
pub const FROM_VAR: &str = "RELANCE_FROM_EMAIL";
/// The variable naming an extra PEM root certificate file.
pub const CA_FILE_VAR: &str = "RELANCE_SMTP_CA_FILE";
/// The variable holding the send rate (messages per second).
pub const RATE_VAR: &str = "RELANCE_SMTP_RATE";
/// The variable holding the pool size.
pub const POOL_VAR: &str = "RELANCE_SMTP_POOL";
/// The variable holding the timeout per message, in seconds.
pub const TIMEOUT_VAR: &str = "RELANCE_SMTP_TIMEOUT";

/// Connections kept open to the relay unless `RELANCE_SMTP_POOL` says otherwise.
pub const DEFAULT_POOL: u32 = 4;
/// How long one message may take unless `RELANCE_SMTP_TIMEOUT` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtp://`: plain connection upgraded with STARTTLS, which is required.
    StartTls,
    /// `smtps://`: TLS from the first byte.
    ImplicitTls,
    /// `smtp://…?tls=none`: clear text, allowed for a loopback host only.
    None,
}

/// Why the SMTP backend cannot be configured; each names the variable at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtpConfigError {
    /// A required variable is not set.
    #[error("{var} is not set (the SMTP backend needs it)")]
    Missing {
        /// The variable.
        var: &'static str,
    },
    /// A variable's value is unusable.
    #[error("{var}: {reason}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(var: &'static str, reason: impl Into<String>) -> SmtpConfigError {
    SmtpConfigError::Invalid {
        var,
        reason: reason.into(),
    }
}

/// The SMTP backend's configuration.
#[derive(Clone, PartialEq)]
pub struct SmtpSettings {
    /// The relay's host name or IP address.
    pub host: String,
    /// The relay's port.
    pub port: u16,
    /// How the connection is protected.
    pub security: SmtpSecurity,
    /// The user name and password for AUTH (PLAIN or LOGIN), if any.
    pub credentials: Option<(String, String)>,
    /// The default `From` (an address, or `Name <address>`).
    pub from: String,
    /// An extra PEM root certificate file.
    pub ca_file: Option<PathBuf>,
    /// Messages per second at most, for all concurrent sends together; `None`: no limit.
    pub rate: Option<f64>,
    /// Connections kept open to the relay.
    pub pool: u32,
    /// How long one message may take before it fails transiently.
    pub timeout: Duration,
}

// By hand so the password never reaches a log.
impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .field("from", &self.from)
            .field("ca_file", &self.ca_file)
            .field("rate", &self.rate)
            .field("pool", &self.pool)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn decode(var: &'static str, what: &str, raw: &str) -> Result<String, SmtpConfigError> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| invalid(var, format!("the {what} is not UTF-8 once percent-decoded")))
}

impl SmtpSettings {
    /// Settings from the relay's `url` (see the module) and the default `from`, with the
    /// defaults for the rest (no extra root, no rate limit, [`DEFAULT_POOL`],
    /// [`DEFAULT_TIMEOUT`]).
    pub fn parse(url: &str, from: &str) -> Result<SmtpSettings, SmtpConfigError> {
        let parsed = url::Url::parse(url.trim())
            .map_err(|e| invalid(URL_VAR, format!("not a URL ({e})")))?;
        let mut security = match parsed.scheme() {
            "smtp" => SmtpSecurity::StartTls,
            "smtps" => SmtpSecurity::ImplicitTls,
            other => {
                return Err(invalid(
                    URL_VAR,
                    format!("scheme `{other}` is neither smtp nor smtps"),
                ));
            }
        };
        let host = match parsed.host_str() {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => return Err(invalid(URL_VAR, "no host")),
        };
        if !matches!(parsed.path(), "" | "/") {
            return Err(invalid(
                URL_VAR,
                format!("unexpected path `{}`", parsed.path()),
            ));
        }
        if parsed.fragment().is_some() {
            return Err(invalid(URL_VAR, "unexpected fragment"));
        }
        for (key, value) in parsed.query_pairs() {
            match (key.as_ref(), value.as_ref(), security) {
                ("tls", "none", SmtpSecurity::StartTls) => security = SmtpSecurity::None,
                ("tls", "starttls", SmtpSecurity::StartTls) => {}
                ("tls", _, SmtpSecurity::ImplicitTls) => {
                    return Err(invalid(
                        URL_VAR,
                        "smtps:// is always implicit TLS; `tls=` applies to smtp:// only",
                    ));
                }
                ("tls", other, _) => {
                    return Err(invalid(
                        URL_VAR,
                        format!("tls=`{other}` is neither `starttls` nor `none`"),
                    ));
                }
                (other, _, _) => {
                    return Err(invalid(URL_VAR, format!("unknown parameter `{other}`")));
                }
            }
        }
        if security == SmtpSecurity::None && !is_loopback_host(&host) {
            return Err(invalid(
                URL_VAR,
                format!(
                    "tls=none is allowed for a loopback host only, not `{host}`: credentials and mail never cross a network in clear (use smtp:// with STARTTLS or smtps://)"
                ),
            ));
        }
        let port = parsed.port().unwrap_or(match security {
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::ImplicitTls => 465,
            SmtpSecurity::None => 25,
        });
        let credentials = if parsed.username().is_empty() {
            if parsed.password().is_some() {
                return Err(invalid(URL_VAR, "a password without a user name"));
            }
            None
        } else {
            let user = decode(URL_VAR, "user name", parsed.username())?;
            let password = decode(URL_VAR, "password", parsed.password().unwrap_or(""))?;
            Some((user, password))
        };
        let from = from.trim();
        if from.is_empty() {
            return Err(SmtpConfigError::Missing { var: FROM_VAR });
        }
        from.parse::<Mailbox>()
            .map_err(|e| invalid(FROM_VAR, format!("`{from}` is not an address ({e})")))?;
        Ok(SmtpSettings {
            host,
            port,
            security,
            credentials,
            from: from.to_string(),
            ca_file: None,
            rate: None,
            pool: DEFAULT_POOL,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Settings from the process environment (the variables of the module).
    pub fn from_env() -> Result<SmtpSettings, SmtpConfigError> {
        SmtpSettings::from_lookup(|var| std::env::var(var).ok())
    }

    /// Settings from the variables `lookup` gives (unset or empty: absent).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<SmtpSettings, SmtpConfigError> {
        let get = |var: &str| lookup(var).filter(|v| !v.trim().is_empty());
        let url = get(URL_VAR).ok_or(SmtpConfigError::Missing { var: URL_VAR })?;
        let from = get(FROM_VAR).ok_or(SmtpConfigError::Missing { var: FROM_VAR })?;
        let mut settings = SmtpSettings::parse(&url, &from)?;
        settings.ca_file = get(CA_FILE_VAR).map(PathBuf::from);
        if let Some(rate) = get(RATE_VAR) {
            let value: f64 = rate
                .trim()
                .parse()
                .map_err(|_| invalid(RATE_VAR, format!("`{rate}` is not a number")))?;
            if !(value.is_finite() && value > 0.0) {
                return Err(invalid(
                    RATE_VAR,
                    format!("`{rate}` is not a positive number of messages per second"),
                ));
            }
            settings.rate = Some(value);
        }
        if let Some(pool) = get(POOL_VAR) {
            settings.pool = pool
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=256).contains(n))
                .ok_or_else(|| invalid(POOL_VAR, format!("`{pool}` is not between 1 and 256")))?;
        }
        if let Some(timeout) = get(TIMEOUT_VAR) {
            let seconds = timeout
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=3600).contains(n))
                .ok_or_else(|| {
                    invalid(
                        TIMEOUT_VAR,
                        format!("`{timeout}` is not between 1 and 3600 seconds"),
                    )
                })?;
            settings.timeout = Duration::from_secs(seconds);
        }
        Ok(settings)
    }
}

/// Spaces sends `1/rate` apart, whichever task makes them: each send takes the next free slot
/// and waits for it, so concurrent sends together stay under the rate.
#[derive(Debug)]
struct Spacing {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl Spacing {
    fn new(rate: f64) -> Spacing {
        Spacing {
            interval: Duration::from_secs_f64(1.0 / rate),
            next: Mutex::new(None),
        }
    }

    /// The instant this send may start at (reserving it).
    fn reserve(&self) -> Instant {
        let now = Instant::now();
        // A panic elsewhere while holding the lock leaves a valid instant behind: keep it.
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let slot = next.map_or(now, |n| n.max(now));
        *next = Some(slot + self.interval);
        slot
    }

    async fn wait(&self) {
        tokio::time::sleep_until(self.reserve()).await;
    }
}

/// How long an open connection may sit unused before it is closed rather than reused
/// (relays drop idle clients after a minute or so; RFC 5321 asks servers to wait 5 minutes).
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// A connection used less than this long ago is reused without a NOOP first: one round trip
/// less per message when sends follow each other. A relay that closed it in that second
/// (shutting down) fails that one send transiently; it is retried.
const FRESH: Duration = Duration::from_secs(1);

/// Open, authenticated connections to the relay, reused message after message.
///
/// lettre's own pool is not used: its connections keep Nagle's algorithm on, and lettre writes
/// a message's body and its final `.` apart, so each message waited for the relay's delayed
/// ACK (40 ms on Linux: 130 messages a second through 8 connections). Connections made here
/// set `TCP_NODELAY` (lettre fixed this upstream after 0.11.23), implicit TLS included
/// ([`ImplicitTls`]).
#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl Pool {
    fn take(&self) -> Option<(AsyncSmtpConnection, Instant)> {
        // A panic elsewhere while holding the lock leaves a valid list behind: keep it.
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put(&self, conn: AsyncSmtpConnection) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((conn, Instant::now()));
    }
}

/// A TLS stream lettre talks SMTP over, for implicit TLS: lettre's own connect does the
/// handshake on a socket it keeps to itself (Nagle on), so the socket is made here.
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl fmt::Debug for ImplicitTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ImplicitTls").finish_non_exhaustive()
    }
}

impl AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

/// The certificates of the PEM file `path` (`RELANCE_SMTP_CA_FILE`): at least one.
fn read_roots(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, SmtpConfigError> {
    let pem = std::fs::read(path)
        .map_err(|e| invalid(CA_FILE_VAR, format!("cannot read {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            invalid(
                CA_FILE_VAR,
                format!("{} is not a PEM certificate file: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(invalid(
            CA_FILE_VAR,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

/// The rustls client configuration for implicit TLS: the system's roots and the extra one,
/// aws-lc-rs as everywhere else in the workspace.
fn implicit_tls_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, SmtpConfigError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    for cert in extra_roots {
        roots
            .add(cert.clone())
            .map_err(|e| invalid(CA_FILE_VAR, format!("an unusable root certificate: {e}")))?;
    }
    let config = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(URL_VAR, format!("cannot set up TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Email delivery through an SMTP relay. Cheap to share: one pool for every send.
pub struct SmtpBackend {
    settings: SmtpSettings,
    tls: Option<TlsParameters>,
    /// Implicit TLS (`smtps://`): the handshake is made here, not by lettre.
    implicit: Option<(TlsConnector, ServerName<'static>)>,
    credentials: Option<Credentials>,
    /// At most `settings.pool` connections in use at once.
    slots: Semaphore,
    pool: Pool,
    spacing: Option<Spacing>,
}

impl fmt::Debug for SmtpBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpBackend")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl SmtpBackend {
    /// The backend for `settings`: reads the extra root certificate and prepares TLS now, so
    /// a bad configuration fails at start rather than at the first send.
    pub fn new(settings: SmtpSettings) -> Result<SmtpBackend, SmtpConfigError> {
        if settings.security == SmtpSecurity::None && !is_loopback_host(&settings.host) {
            return Err(invalid(
                URL_VAR,
                format!(
                    "clear text to `{}`, which is not a loopback host: credentials and mail never cross a network in clear",
                    settings.host
                ),
            ));
        }
        if settings.pool == 0 {
            return Err(invalid(POOL_VAR, "the pool needs at least one connection"));
        }
        if let Some(rate) = settings.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(invalid(RATE_VAR, "the rate must be a positive number"));
        }
        let extra_roots = match &settings.ca_file {
            Some(path) => read_roots(path)?,
            None => Vec::new(),
        };
        let host = settings
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let implicit = match settings.security {
            SmtpSecurity::ImplicitTls => {
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| invalid(URL_VAR, format!("`{host}` is not a host name: {e}")))?;
                let config = implicit_tls_config(&extra_roots)?;
                Some((TlsConnector::from(config), name))
            }
            _ => None,
        };
        let tls = match settings.security {
            SmtpSecurity::None | SmtpSecurity::ImplicitTls => None,
            SmtpSecurity::StartTls => {
                let mut builder = TlsParameters::builder(host);
                for cert in &extra_roots {
                    let cert = Certificate::from_der(cert.to_vec()).map_err(|e| {
                        invalid(CA_FILE_VAR, format!("an unusable root certificate: {e}"))
                    })?;
                    builder = builder.add_root_certificate(cert);
                }
                Some(
                    builder
                        .build_rustls()
                        .map_err(|e| invalid(URL_VAR, format!("cannot set up TLS: {e}")))?,
                )
            }
        };
        let credentials = settings
            .credentials
            .as_ref()
            .map(|(user, password)| Credentials::new(user.clone(), password.clone()));
        let spacing = settings.rate.map(Spacing::new);
        let slots = Semaphore::new(usize::try_from(settings.pool).unwrap_or(1));
        Ok(SmtpBackend {
            settings,
            tls,
            implicit,
            credentials,
            slots,
            pool: Pool::default(),
            spacing,
        })
    }

    /// The settings it was made with.
    pub fn settings(&self) -> &SmtpSettings {
        &self.settings
    }

    /// A new connection: greeted, encrypted as configured, authenticated.
    async fn connect(&self) -> Result<AsyncSmtpConnection, DeliveryError> {
        let s = &self.settings;
        let host = s.host.trim_start_matches('[').trim_end_matches(']');
        let hello = ClientId::default();
        let unreachable = |e: std::io::Error| {
            DeliveryError::Transient(format!(
                "cannot connect to the SMTP relay {}:{}: {e}",
                s.host, s.port
            ))
        };
        let tcp = TcpStream::connect((host, s.port))
            .await
            .map_err(unreachable)?;
        tcp.set_nodelay(true).map_err(unreachable)?;
        let stream: Box<dyn AsyncTokioStream> = match &self.implicit {
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await.map_err(|e| {
                    DeliveryError::Transient(format!(
                        "TLS with the SMTP relay {}:{} failed: {e}",
                        s.host, s.port
                    ))
                })?;
                Box::new(ImplicitTls(tls))
            }
            None => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &hello)
            .await
            .map_err(|e| classify(&e))?;
        if let Some(tls) = &self.tls {
            if !conn.can_starttls() {
                return Err(DeliveryError::Transient(format!(
                    "the SMTP relay {}:{} does not offer STARTTLS, which {URL_VAR} requires (smtp://…?tls=none is for loopback relays only)",
                    s.host, s.port
                )));
            }
            conn.starttls(tls.clone(), &hello)
                .await
                .map_err(|e| classify(&e))?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(|e| classify(&e))?;
        }
        Ok(conn)
    }

    /// An idle connection still alive, or a new one.
    async fn connection(&self) -> Result<AsyncSmtpConnection, DeliveryError> {
        while let Some((mut conn, since)) = self.pool.take() {
            // NOOP tells a connection the relay closed meanwhile from a live one.
            let idle = since.elapsed();
            if idle < FRESH || (idle < IDLE_LIMIT && conn.test_connected().await) {
                return Ok(conn);
            }
            conn.abort().await;
        }
        self.connect().await
    }

    async fn attempt(&self, message: &Message) -> Result<(), DeliveryError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| DeliveryError::Transient("the SMTP backend is closing".to_string()))?;
        let mut conn = self.connection().await?;
        let result = conn.send(message.envelope(), &message.formatted()).await;
        // A refused transaction leaves the connection usable (lettre closes it when the
        // exchange broke), so it goes back for the next message.
        if !conn.has_broken() {
            self.pool.put(conn);
        }
        result.map(|_| ()).map_err(|e| classify(&e))
    }

    async fn send(&self, outgoing: &Outgoing) -> Result<String, DeliveryError> {
        let message = build_message(outgoing, &self.settings.from)?;
        if let Some(spacing) = &self.spacing {
            spacing.wait().await;
        }
        let timeout = self.settings.timeout;
        match tokio::time::timeout(timeout, self.attempt(&message)).await {
            // The relay's queue id is in its reply text; the Message-ID is what bounces and
            // replies refer to, so it is the id kept.
            Ok(Ok(())) => Ok(outgoing.message_id.clone()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(DeliveryError::Transient(format!(
                "SMTP relay {}:{} did not answer within {} s",
                self.settings.host,
                self.settings.port,
                timeout.as_secs()
            ))),
        }
    }
}

impl Backend for SmtpBackend {
    fn name(&self) -> &'static str {
        "smtp"
    }

    fn deliver<'a>(&'a self, message: &'a Outgoing) -> DeliverFuture<'a> {
        Box::pin(self.send(message))
    }
}

/// Headers the message builder sets itself: an extra header of one of these names is refused
/// rather than sent twice.
const RESERVED: [&str; 12] = [
    "from",
    "to",
    "cc",
    "bcc",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
];

fn refused(reason: impl Into<String>) -> DeliveryError {
    DeliveryError::Permanent {
        reason: reason.into(),
        hard_bounce: false,
    }
}

fn no_line_breaks(what: &str, value: &str) -> Result<(), DeliveryError> {
    if value.contains(['\r', '\n']) {
        Err(refused(format!(
            "the {what} contains a line break (header injection refused)"
        )))
    } else {
        Ok(())
    }
}

fn mailbox(what: &str, value: &str) -> Result<Mailbox, DeliveryError> {
    no_line_breaks(what, value)?;
    value
        .trim()
        .parse::<Mailbox>()
        .map_err(|e| refused(format!("the {what} `{value}` is not an address: {e}")))
}

/// The email for `outgoing`: From (the message's or `default_from`), To, Reply-To, Subject,
/// Date, its `Message-ID`, the extra headers, and the text and HTML parts (multipart/
/// alternative when both). Anything that cannot make a well-formed message (a bad address, a
/// line break in a header, an SES stored template, no body) is a permanent failure, not a
/// bounce.
pub fn build_message(outgoing: &Outgoing, default_from: &str) -> Result<Message, DeliveryError> {
    let content = &outgoing.send.content;
    let to = match &outgoing.send.to {
        Recipient::Email(address) => mailbox("recipient", address)?,
        _ => {
            return Err(refused(format!(
                "the SMTP backend sends email only, not {}",
                outgoing.send.channel.as_str()
            )));
        }
    };
    if let Some(template) = &content.template {
        return Err(refused(format!(
            "message `{}` uses the SES stored template `{template}`, which only SES can render; SMTP needs the subject and body in the message",
            outgoing.send.message
        )));
    }
    let from = mailbox("sender", content.from.as_deref().unwrap_or(default_from))?;
    let subject = content.subject.clone().unwrap_or_default();
    no_line_breaks("subject", &subject)?;
    let id = outgoing.message_id.trim();
    no_line_breaks("Message-ID", id)?;
    if !(id.starts_with('<') && id.ends_with('>') && id.contains('@') && id.is_ascii()) {
        return Err(refused(format!(
            "the Message-ID `{id}` is not of the form <id@domain>"
        )));
    }
    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .date_now()
        .message_id(Some(id.to_string()));
    if let Some(reply_to) = &content.reply_to {
        builder = builder.reply_to(mailbox("reply-to address", reply_to)?);
    }
    for (name, value) in &outgoing.headers {
        if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name.trim())) {
            return Err(refused(format!(
                "the extra header `{name}` would replace one the message sets"
            )));
        }
        no_line_breaks(&format!("header `{name}`"), value)?;
        let header = HeaderName::new_from_ascii(name.clone())
            .map_err(|_| refused(format!("`{name}` is not a header name")))?;
        builder = builder.raw_header(HeaderValue::new(header, value.clone()));
    }
    let built = match (&content.text, &content.html) {
        (Some(text), Some(html)) => builder.multipart(MultiPart::alternative_plain_html(
            text.clone(),
            html.clone(),
        )),
        (Some(text), None) => builder.singlepart(SinglePart::plain(text.clone())),
        (None, Some(html)) => builder.singlepart(SinglePart::html(html.clone())),
        (None, None) => {
            return Err(refused(format!(
                "message `{}` has neither text nor HTML",
                outgoing.send.message
            )));
        }
    };
    built.map_err(|e| refused(format!("the message cannot be built: {e}")))
}

/// Replies that say the relay refused our credentials (or wants them): the configuration's
/// fault, not the message's.
const AUTH_CODES: [u16; 4] = [530, 534, 535, 538];

/// Reply codes that, without an enhanced status, mean the address is refused (RFC 5321: 550
/// mailbox unavailable, 551 user not local, 553 mailbox name not allowed).
const ADDRESS_CODES: [u16; 3] = [550, 551, 553];

/// The RFC 3463 enhanced status at the start of a reply text (`5.1.1 no such user`).
fn enhanced_status(text: &str) -> Option<(u8, u16, u16)> {
    let word = text.split_whitespace().next()?;
    let mut parts = word.split('.');
    let class = parts.next()?.parse::<u8>().ok()?;
    let subject = parts.next()?.parse::<u16>().ok()?;
    let detail = parts.next()?.parse::<u16>().ok()?;
    (parts.next().is_none() && matches!(class, 2 | 4 | 5)).then_some((class, subject, detail))
}

/// Classes the relay's negative reply `code` with its `text`: 4xx transient; authentication
/// failures transient (fixing the password and restarting delivers within the retry window);
/// other 5xx permanent, a hard bounce when the address is refused (an enhanced status 5.1.x
/// other than the sender's 5.1.7 and 5.1.8, or without an enhanced status 550, 551 or 553).
pub fn classify_reply(code: u16, text: &str) -> DeliveryError {
    let text = text.trim();
    let reply = format!("{code} {text}");
    if (400..500).contains(&code) {
        return DeliveryError::Transient(format!("SMTP relay answered {reply}"));
    }
    if AUTH_CODES.contains(&code) {
        return DeliveryError::Transient(format!(
            "the SMTP relay refused the credentials of {URL_VAR} (configuration, not the message): {reply}"
        ));
    }
    if !(500..600).contains(&code) {
        return DeliveryError::Transient(format!("SMTP relay answered an unexpected {reply}"));
    }
    let hard_bounce = match enhanced_status(text) {
        Some((5, 1, detail)) => !matches!(detail, 7 | 8),
        Some(_) => false,
        None => ADDRESS_CODES.contains(&code),
    };
    DeliveryError::Permanent {
        reason: format!("SMTP relay answered {reply}"),
        hard_bounce,
    }
}

/// Classes a failed send: the relay's reply by [`classify_reply`]; anything else (connection,
/// TLS, timeout, a reply that does not parse) is transient.
pub fn classify(error: &smtp::Error) -> DeliveryError {
    let text = std::error::Error::source(error).map_or_else(String::new, |s| s.to_string());
    if let Some(code) = error.status() {
        let code = code.to_string().parse::<u16>().unwrap_or(0);
        return classify_reply(code, &text);
    }
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_tls() {
        "TLS failed"
    } else {
        "failed"
    };
    DeliveryError::Transient(format!("SMTP connection {what}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use relance_core::render::Rendered;
    use relance_core::scenario::Channel;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn urls_choose_the_protection_and_default_port() {
        let s = SmtpSettings::parse("smtp://me:s%40cret%3A@mail.example.com", "a@example.com")
            .expect("valid");
        assert_eq!(
            (s.host.as_str(), s.port, s.security),
            ("mail.example.com", 587, SmtpSecurity::StartTls)
        );
        assert_eq!(
            s.credentials,
            Some(("me".to_string(), "s@cret:".to_string()))
        );
        let s = SmtpSettings::parse("smtps://u%2Bx:p@mail.example.com", "a@example.com")
            .expect("valid");
        assert_eq!((s.port, s.security), (465, SmtpSecurity::ImplicitTls));
        assert_eq!(s.credentials.map(|c| c.0), Some("u+x".to_string()));
        let s = SmtpSettings::parse("smtp://127.0.0.1:2525?tls=none", "a@example.com").expect("ok");
        assert_eq!((s.port, s.security), (2525, SmtpSecurity::None));
        assert_eq!(s.credentials, None);
        let s = SmtpSettings::parse("smtp://localhost?tls=none", "a@example.com").expect("ok");
        assert_eq!(s.port, 25);
        let s = SmtpSettings::parse("smtp://[::1]:25?tls=none", "a@example.com").expect("ok");
        assert_eq!(s.security, SmtpSecurity::None);
    }

    #[test]
    fn cleartext_to_another_host_is_refused_with_the_variable_named() {
        let e = SmtpSettings::parse("smtp://u:p@mail.example.com:25?tls=none", "a@example.com")
            .expect_err("refused");
        let text = e.to_string();
        assert!(text.starts_with("RELANCE_SMTP_URL:"), "{text}");
        assert!(text.contains("loopback"), "{text}");
        let e = SmtpSettings::parse("smtp://10.0.0.1?tls=none", "a@example.com").expect_err("no");
        assert!(matches!(e, SmtpConfigError::Invalid { var: URL_VAR, .. }));
    }

    #[test]
    fn bad_urls_name_what_is_wrong() {
        for (url, needle) in [
            ("http://mail.example.com", "scheme `http`"),
            ("smtp://", "no host"),
            ("smtp://mail.example.com/path", "unexpected path"),
            ("smtp://mail.example.com?tls=maybe", "tls=`maybe`"),
            ("smtps://mail.example.com?tls=none", "smtps://"),
            ("smtp://mail.example.com?pool=3", "unknown parameter `pool`"),
            ("not a url", "not a URL"),
        ] {
            let e = SmtpSettings::parse(url, "a@example.com").expect_err(url);
            assert!(e.to_string().contains(needle), "{url}: {e}");
            assert!(e.to_string().starts_with(URL_VAR), "{url}: {e}");
        }
    }

    #[test]
    fn the_environment_gives_every_setting() {
        let vars = [
            (URL_VAR, "smtp://u:p@mail.example.com:2587"),
            (FROM_VAR, "Shop <news@shop.example>"),
            (CA_FILE_VAR, "/etc/relay-ca.pem"),
            (RATE_VAR, "12.5"),
            (POOL_VAR, "2"),
            (TIMEOUT_VAR, "10"),
        ];
        let s = SmtpSettings::from_lookup(lookup(&vars)).expect("valid");
        assert_eq!(s.port, 2587);
        assert_eq!(s.from, "Shop <news@shop.example>");
        assert_eq!(s.ca_file, Some(PathBuf::from("/etc/relay-ca.pem")));
        assert_eq!(s.rate, Some(12.5));
        assert_eq!(s.pool, 2);
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert!(
            !format!("{s:?}").contains("\"p\""),
            "the password is not logged"
        );
    }

    #[test]
    fn missing_and_bad_variables_are_named() {
        let e = SmtpSettings::from_lookup(lookup(&[(FROM_VAR, "a@example.com")])).expect_err("");
        assert_eq!(e, SmtpConfigError::Missing { var: URL_VAR });
        let e = SmtpSettings::from_lookup(lookup(&[(URL_VAR, "smtp://h")])).expect_err("");
        assert_eq!(e, SmtpConfigError::Missing { var: FROM_VAR });
        for (var, value) in [
            (RATE_VAR, "fast"),
            (RATE_VAR, "0"),
            (RATE_VAR, "-1"),
            (POOL_VAR, "0"),
            (TIMEOUT_VAR, "forever"),
            (FROM_VAR, "not an address"),
        ] {
            let mut vars = vec![(URL_VAR, "smtp://h"), (FROM_VAR, "a@example.com")];
            vars.retain(|(n, _)| *n != var);
            vars.push((var, value));
            let e = SmtpSettings::from_lookup(lookup(&vars)).expect_err(value);
            assert!(
                matches!(&e, SmtpConfigError::Invalid { var: v, .. } if *v == var),
                "{var}={value}: {e}"
            );
        }
    }

    #[test]
    fn a_backend_refuses_cleartext_settings_to_a_remote_host_and_a_bad_ca() {
        let mut s = SmtpSettings::parse("smtp://127.0.0.1?tls=none", "a@example.com").expect("ok");
        s.host = "mail.example.com".to_string();
        let e = SmtpBackend::new(s).expect_err("refused");
        assert!(e.to_string().contains("loopback"), "{e}");
        let mut s = SmtpSettings::parse("smtp://mail.example.com", "a@example.com").expect("ok");
        s.ca_file = Some(PathBuf::from("/nonexistent/relance-ca.pem"));
        let e = SmtpBackend::new(s).expect_err("refused");
        assert!(e.to_string().starts_with(CA_FILE_VAR), "{e}");
        let junk =
            std::env::temp_dir().join(format!("relance-smtp-junk-{}.pem", std::process::id()));
        std::fs::write(&junk, "not a certificate\n").expect("a scratch file");
        for url in ["smtp://mail.example.com", "smtps://mail.example.com"] {
            let mut s = SmtpSettings::parse(url, "a@example.com").expect("ok");
            s.ca_file = Some(junk.clone());
            let e = SmtpBackend::new(s).expect_err("refused");
            assert!(e.to_string().starts_with(CA_FILE_VAR), "{url}: {e}");
            assert!(e.to_string().contains("relance-smtp-junk"), "{url}: {e}");
        }
        let _ = std::fs::remove_file(&junk);
    }

    #[test]
    fn replies_are_classed() {
        let t = |code, text| classify_reply(code, text);
        assert!(
            matches!(t(451, "4.3.0 try again"), DeliveryError::Transient(r) if r.contains("451 4.3.0 try again"))
        );
        assert!(matches!(t(421, "closing"), DeliveryError::Transient(_)));
        assert!(
            matches!(t(535, "5.7.8 Authentication credentials invalid"), DeliveryError::Transient(r) if r.contains("535 5.7.8") && r.contains(URL_VAR))
        );
        let bounce = |e: DeliveryError| match e {
            DeliveryError::Permanent { hard_bounce, .. } => Some(hard_bounce),
            DeliveryError::Transient(_) => None,
        };
        assert_eq!(bounce(t(550, "5.1.1 no such user")), Some(true));
        assert_eq!(bounce(t(550, "no such user here")), Some(true));
        assert_eq!(bounce(t(551, "user not local")), Some(true));
        assert_eq!(bounce(t(553, "mailbox name not allowed")), Some(true));
        assert_eq!(bounce(t(554, "5.1.10 null MX")), Some(true));
        assert_eq!(
            bounce(t(554, "5.7.1 message refused by policy")),
            Some(false)
        );
        assert_eq!(bounce(t(550, "5.7.1 spam")), Some(false));
        assert_eq!(bounce(t(553, "5.1.8 bad sender domain")), Some(false));
        assert_eq!(bounce(t(552, "message too large")), Some(false));
        match t(554, "5.7.1 message refused by policy") {
            DeliveryError::Permanent { reason, .. } => {
                assert_eq!(
                    reason,
                    "SMTP relay answered 554 5.7.1 message refused by policy"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    fn outgoing() -> Outgoing {
        Outgoing {
            scenario: "welcome".to_string(),
            send: relance_core::engine::Send {
                enrollment: "enr-1".to_string(),
                contact: "c1".to_string(),
                step: "hello".to_string(),
                message: "hello".to_string(),
                channel: Channel::Email,
                communication_type: "marketing".to_string(),
                to: Recipient::Email("zoé@example.net".to_string()),
                content: Rendered {
                    subject: Some("Bienvenue, Zoé".to_string()),
                    html: Some("<p>Bonjour Zoé</p>".to_string()),
                    text: Some("Bonjour Zoé".to_string()),
                    reply_to: Some("help@shop.example".to_string()),
                    ..Rendered::default()
                },
                idempotency_key: "enr-1:hello".to_string(),
            },
            headers: vec![
                (
                    "List-Unsubscribe".to_string(),
                    "<https://shop.example/u/abc>".to_string(),
                ),
                (
                    "List-Unsubscribe-Post".to_string(),
                    "List-Unsubscribe=One-Click".to_string(),
                ),
            ],
            message_id: "<0123abcd@shop.example>".to_string(),
        }
    }

    fn formatted(o: &Outgoing) -> String {
        let m = build_message(o, "Shop <news@shop.example>").expect("builds");
        String::from_utf8(m.formatted()).expect("utf-8")
    }

    #[test]
    fn a_message_carries_every_header_and_both_parts() {
        let text = formatted(&outgoing());
        for needle in [
            "From: Shop <news@shop.example>\r\n",
            "To: zoé@example.net\r\n",
            "Reply-To: help@shop.example\r\n",
            "Message-ID: <0123abcd@shop.example>\r\n",
            "List-Unsubscribe: <https://shop.example/u/abc>\r\n",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            "Content-Type: multipart/alternative",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Type: text/html; charset=utf-8",
            "\r\nDate: ",
            "Subject: Bienvenue, =?utf-8?b?Wm/DqQ==?=\r\n",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
    }

    #[test]
    fn one_part_when_only_one_is_given_and_the_message_from_wins() {
        let mut o = outgoing();
        o.send.content.html = None;
        o.send.content.from = Some("other@shop.example".to_string());
        let text = formatted(&o);
        assert!(!text.contains("multipart"), "{text}");
        assert!(text.contains("Content-Type: text/plain; charset=utf-8"));
        assert!(text.contains("From: other@shop.example\r\n"));
        o.send.content.html = Some("<p>x</p>".to_string());
        o.send.content.text = None;
        let text = formatted(&o);
        assert!(!text.contains("multipart") && text.contains("Content-Type: text/html"));
    }

    fn refusal(o: &Outgoing) -> String {
        match build_message(o, "news@shop.example") {
            Err(DeliveryError::Permanent {
                reason,
                hard_bounce: false,
            }) => reason,
            other => panic!("expected a permanent refusal, got {other:?}"),
        }
    }

    #[test]
    fn malformed_messages_are_refused_for_good_but_not_as_bounces() {
        let mut o = outgoing();
        o.send.to = Recipient::Email("not an address".to_string());
        assert!(refusal(&o).contains("recipient"));
        let mut o = outgoing();
        o.send.content.subject = Some("Hi\r\nBcc: victim@example.org".to_string());
        assert!(refusal(&o).contains("header injection"));
        let mut o = outgoing();
        o.headers[0].1 = "<https://x>\r\nBcc: victim@example.org".to_string();
        assert!(refusal(&o).contains("header injection"));
        let mut o = outgoing();
        o.headers
            .push(("Bcc".to_string(), "victim@example.org".to_string()));
        assert!(refusal(&o).contains("`Bcc`"));
        let mut o = outgoing();
        o.headers.push(("Bad Name".to_string(), "x".to_string()));
        assert!(refusal(&o).contains("not a header name"));
        let mut o = outgoing();
        o.send.content.template = Some("WelcomeTpl".to_string());
        assert!(refusal(&o).contains("SES stored template `WelcomeTpl`"));
        let mut o = outgoing();
        o.send.content.text = None;
        o.send.content.html = None;
        assert!(refusal(&o).contains("neither text nor HTML"));
        let mut o = outgoing();
        o.send.content.reply_to = Some("a\nb@example.com".to_string());
        assert!(refusal(&o).contains("header injection"));
        let mut o = outgoing();
        o.message_id = "no-brackets".to_string();
        assert!(refusal(&o).contains("Message-ID"));
        let mut o = outgoing();
        o.send.to = Recipient::Phone("+33600000000".to_string());
        o.send.channel = Channel::Sms;
        assert!(refusal(&o).contains("email only"));
    }

    #[tokio::test]
    async fn the_rate_spaces_sends_across_tasks() {
        let spacing = Spacing::new(10.0);
        let a = spacing.reserve();
        let b = spacing.reserve();
        let c = spacing.reserve();
        assert_eq!(b - a, Duration::from_millis(100));
        assert_eq!(c - b, Duration::from_millis(100));
    }
}
