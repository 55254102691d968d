//! Web push: browser notifications, the fourth channel. A contact's `web_push` field holds the
//! browser's `PushSubscription` JSON (one object or a list); each send is encrypted for each
//! subscription per RFC 8291 (`aes128gcm`), signed with the application server's VAPID key per
//! RFC 8292, and POSTed to the subscription's endpoint (the browser vendor's push service).
//!
//! The push service's answer decides the outcome, per subscription:
//! - 2xx: sent (the `Location` header, when given, is the message id);
//! - 404 / 410: the subscription has expired (the user revoked it, the browser dropped it). It
//!   is reported in [`WebPushReport::expired`] so the caller can remove it from the contact;
//!   a send whose subscriptions all expired fails permanently ([`WebPushError::Expired`]);
//! - 408 / 429 / 5xx, or no answer (network error, timeout): transient, retry later;
//! - any other status (400, 401, 403, 413, ...): permanent, with the status and a fixed
//!   reason (the service's answer is never copied into errors or logs);
//! - an endpoint the outbound rule refuses (not `https://`, a loopback, private, link-local
//!   or other internal address, a host outside `RELANCE_PUSH_ALLOWED_HOSTS`): permanent,
//!   nothing connected (see [`crate::outbound`]).
//!
//! A send with several subscriptions is sent when at least one of them was; otherwise a
//! transient failure wins over a permanent one (so a retry happens), and expiry comes last.
//!
//! The VAPID private key is the raw 32-byte P-256 scalar in base64url (what
//! `npx web-push generate-vapid-keys` prints as "Private Key"), or a PEM key (SEC1
//! `EC PRIVATE KEY` or PKCS#8 `PRIVATE KEY`, as `openssl ecparam -name prime256v1 -genkey`
//! writes). The browser subscribes with the matching public key,
//! [`WebPushSender::vapid_public_key`], as its `applicationServerKey`.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use relance_core::engine::{Recipient, Send};
use serde_json::{Map, Value, json};
use web_push_native::Auth;

use crate::bridge::Bridge;
use crate::config::ConfigError;
use crate::outbound::{self, OutboundPolicy};

/// The TTL when `RELANCE_WEB_PUSH_TTL` is not set: one day. A marketing notification that
/// waited longer for the browser to come online is better dropped by the push service.
pub const DEFAULT_TTL_SECONDS: u32 = 86_400;
/// The longest TTL push services keep a message (four weeks).
pub const MAX_TTL_SECONDS: u32 = 2_419_200;
/// The largest notification payload (JSON bytes) that fits the 4096-byte encrypted record
/// push services accept: 4096 less the 86-byte `aes128gcm` header, the padding delimiter and
/// the 16-byte tag.
pub const MAX_PAYLOAD_BYTES: usize = 3_993;
/// How long one push request may take before it counts as a transient failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a VAPID token is valid (RFC 8292 allows at most 24 hours).
const VAPID_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// How urgent a notification is (RFC 8030 `Urgency`), which battery-saving devices honour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// `very-low`: only when on power and Wi-Fi.
    VeryLow,
    /// `low`: on power or Wi-Fi.
    Low,
    /// `normal`: the push service's default.
    Normal,
    /// `high`: even on low battery.
    High,
}

impl Urgency {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::VeryLow => "very-low",
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }

    /// `very-low`, `low`, `normal` or `high` (case-insensitive, `_` for `-`).
    pub fn parse(text: &str) -> Option<Urgency> {
        match text.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "very-low" => Some(Urgency::VeryLow),
            "low" => Some(Urgency::Low),
            "normal" => Some(Urgency::Normal),
            "high" => Some(Urgency::High),
            _ => None,
        }
    }
}

/// The web push settings.
#[derive(Clone, PartialEq, Eq)]
pub struct WebPushConfig {
    /// The VAPID private key: base64url of the raw 32-byte P-256 scalar (as
    /// `web-push generate-vapid-keys` prints it), or a PEM key (SEC1 or PKCS#8).
    pub vapid_private_key: String,
    /// Who runs the application server, for the push services: `mailto:...` or `https://...`.
    pub vapid_subject: String,
    /// How long the push service keeps a message for an offline browser, in seconds.
    pub ttl_seconds: u32,
    /// The `Urgency` header, when set.
    pub urgency: Option<Urgency>,
    /// Accept `http://` endpoints. Real push services are all `https://`; an `http://`
    /// endpoint is only for local tests and emulators, so it is refused unless this is set.
    pub allow_http: bool,
    /// Accept loopback endpoints (a stub push service on 127.0.0.1): local tests only,
    /// `RELANCE_OUTBOUND_ALLOW_LOOPBACK`. Private and link-local addresses stay refused.
    pub allow_loopback: bool,
    /// When not empty, the only push service hosts called (`RELANCE_PUSH_ALLOWED_HOSTS`).
    pub allowed_hosts: Vec<String>,
}

impl fmt::Debug for WebPushConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebPushConfig")
            .field("vapid_private_key", &"<redacted>")
            .field("vapid_subject", &self.vapid_subject)
            .field("ttl_seconds", &self.ttl_seconds)
            .field("urgency", &self.urgency)
            .field("allow_http", &self.allow_http)
            .field("allow_loopback", &self.allow_loopback)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

const KEY_VAR: &str = "RELANCE_VAPID_PRIVATE_KEY";
const SUBJECT_VAR: &str = "RELANCE_VAPID_SUBJECT";
const TTL_VAR: &str = "RELANCE_WEB_PUSH_TTL";
const URGENCY_VAR: &str = "RELANCE_WEB_PUSH_URGENCY";
const ALLOW_HTTP_VAR: &str = "RELANCE_WEB_PUSH_ALLOW_HTTP";

impl WebPushConfig {
    /// Settings with this key and subject, the default TTL, no `Urgency`, `https://` only.
    pub fn new(vapid_private_key: impl Into<String>, vapid_subject: impl Into<String>) -> Self {
        WebPushConfig {
            vapid_private_key: vapid_private_key.into(),
            vapid_subject: vapid_subject.into(),
            ttl_seconds: DEFAULT_TTL_SECONDS,
            urgency: None,
            allow_http: false,
            allow_loopback: false,
            allowed_hosts: Vec::new(),
        }
    }

    /// From `RELANCE_VAPID_PRIVATE_KEY` and `RELANCE_VAPID_SUBJECT` (both required, and
    /// checked here), `RELANCE_WEB_PUSH_TTL` (seconds, default one day, at most four weeks),
    /// `RELANCE_WEB_PUSH_URGENCY` (`very-low`, `low`, `normal`, `high`; unset by default) and
    /// `RELANCE_WEB_PUSH_ALLOW_HTTP` and `RELANCE_OUTBOUND_ALLOW_LOOPBACK` (`true` for local
    /// tests only; refused in a Lambda function) and `RELANCE_PUSH_ALLOWED_HOSTS`.
    pub fn from_env() -> Result<WebPushConfig, ConfigError> {
        WebPushConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`WebPushConfig::from_env`], with the VAPID private key given (the web push
    /// function reads it from Secrets Manager at start: [`crate::secrets::from_env`]).
    pub fn from_env_with_key(key: String) -> Result<WebPushConfig, ConfigError> {
        WebPushConfig::from_lookup(|name| {
            if name == KEY_VAR {
                Some(key.clone())
            } else {
                std::env::var(name).ok()
            }
        })
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<WebPushConfig, ConfigError> {
        let opt = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let missing = |name: &'static str| ConfigError {
            name,
            why: "not set".into(),
        };
        let key = opt(KEY_VAR).ok_or_else(|| missing(KEY_VAR))?;
        parse_vapid_private_key(&key).map_err(|why| ConfigError { name: KEY_VAR, why })?;
        let subject = opt(SUBJECT_VAR).ok_or_else(|| missing(SUBJECT_VAR))?;
        check_subject(&subject).map_err(|why| ConfigError {
            name: SUBJECT_VAR,
            why,
        })?;
        let ttl_seconds = match opt(TTL_VAR) {
            None => DEFAULT_TTL_SECONDS,
            Some(v) => v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|t| *t <= MAX_TTL_SECONDS)
                .ok_or_else(|| ConfigError {
                    name: TTL_VAR,
                    why: format!("\"{v}\" is not a number of seconds from 0 to {MAX_TTL_SECONDS}"),
                })?,
        };
        let urgency = match opt(URGENCY_VAR) {
            None => None,
            Some(v) => Some(Urgency::parse(&v).ok_or_else(|| ConfigError {
                name: URGENCY_VAR,
                why: format!("\"{v}\" is not one of very-low, low, normal, high"),
            })?),
        };
        let allow_http = match opt(ALLOW_HTTP_VAR).map(|v| v.trim().to_ascii_lowercase()) {
            None => false,
            Some(v) if ["1", "true", "yes"].contains(&v.as_str()) => true,
            Some(v) if ["0", "false", "no"].contains(&v.as_str()) => false,
            Some(v) => {
                return Err(ConfigError {
                    name: ALLOW_HTTP_VAR,
                    why: format!("\"{v}\" is not true or false"),
                });
            }
        };
        let policy =
            OutboundPolicy::from_lookup(&get, allow_http, outbound::PUSH_ALLOWED_HOSTS_VAR)?;
        Ok(WebPushConfig {
            vapid_private_key: key,
            vapid_subject: subject.trim().to_string(),
            ttl_seconds,
            urgency,
            allow_http,
            allow_loopback: policy.allow_loopback,
            allowed_hosts: policy.allowed_hosts,
        })
    }
}

/// RFC 8292: the subject is a `mailto:` or an `https:` URI.
fn check_subject(subject: &str) -> Result<(), String> {
    let s = subject.trim();
    let ok = (s.starts_with("mailto:") && s.len() > "mailto:".len() && s.contains('@'))
        || (s.starts_with("https://") && s.len() > "https://".len());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{s}\" is neither a mailto: address nor an https:// URL"
        ))
    }
}

/// Decodes base64url, with or without padding; standard base64 (`+`, `/`) is accepted too.
fn decode_b64(text: &str) -> Result<Vec<u8>, String> {
    let cleaned: String = text
        .trim()
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    URL_SAFE_NO_PAD
        .decode(cleaned.as_bytes())
        .map_err(|e| format!("not base64url ({e})"))
}

/// Reads a VAPID private key: base64url of the raw 32-byte scalar, or PEM (SEC1 or PKCS#8;
/// `\n` escapes stand for line breaks, for environments that cannot hold them). The error
/// never quotes the key.
pub fn parse_vapid_private_key(text: &str) -> Result<p256::SecretKey, String> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        use p256::pkcs8::DecodePrivateKey;
        let pem = text.replace("\\n", "\n");
        return p256::SecretKey::from_sec1_pem(&pem)
            .or_else(|_| p256::SecretKey::from_pkcs8_pem(&pem))
            .map_err(|_| "not a P-256 private key in SEC1 or PKCS#8 PEM".to_string());
    }
    let bytes = decode_b64(text)?;
    if bytes.len() != 32 {
        return Err(format!(
            "{} bytes once decoded; a raw P-256 private key is 32 bytes (base64url) or PEM",
            bytes.len()
        ));
    }
    p256::SecretKey::from_slice(&bytes).map_err(|_| "not a valid P-256 private key".to_string())
}

/// A new VAPID key pair, `(private, public)`, both base64url without padding: the private
/// key for `RELANCE_VAPID_PRIVATE_KEY`, the public one (65-byte uncompressed point) for the
/// browser's `applicationServerKey`.
pub fn generate_vapid_keys() -> (String, String) {
    let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let public = secret.public_key().to_encoded_point(false);
    (
        URL_SAFE_NO_PAD.encode(secret.to_bytes()),
        URL_SAFE_NO_PAD.encode(public.as_bytes()),
    )
}

/// One browser subscription, checked.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The push service URL this subscription receives on.
    pub endpoint: String,
    uri: Uri,
    p256dh: p256::PublicKey,
    auth: Auth,
}

/// Reads the `index`th stored subscription (`{"endpoint", "keys": {"p256dh", "auth"}}`).
/// The error names the field: `web_push[0].keys.p256dh: not base64url (...)`.
pub fn parse_subscription(
    index: usize,
    value: &Value,
    allow_http: bool,
) -> Result<Subscription, String> {
    let at = |field: &str, why: String| format!("web_push[{index}]{field}: {why}");
    let object = value
        .as_object()
        .ok_or_else(|| at("", "not a subscription object".into()))?;
    let endpoint = match object.get("endpoint") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(_) => return Err(at(".endpoint", "not a URL string".into())),
        None => return Err(at(".endpoint", "missing".into())),
    };
    let uri: Uri = endpoint
        .parse()
        .map_err(|e| at(".endpoint", format!("not a URL ({e})")))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_http => {}
        Some("http") => {
            return Err(at(
                ".endpoint",
                "http:// is refused (push services use https://; RELANCE_WEB_PUSH_ALLOW_HTTP=true allows it for local tests)".into(),
            ));
        }
        _ => return Err(at(".endpoint", "not an https:// URL".into())),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(at(".endpoint", "no host".into()));
    }
    let keys = match object.get("keys") {
        Some(Value::Object(keys)) => keys,
        Some(_) => return Err(at(".keys", "not an object".into())),
        None => return Err(at(".keys", "missing".into())),
    };
    let key = |name: &str| match keys.get(name) {
        Some(Value::String(s)) => decode_b64(s).map_err(|why| at(&format!(".keys.{name}"), why)),
        Some(_) => Err(at(&format!(".keys.{name}"), "not a string".into())),
        None => Err(at(&format!(".keys.{name}"), "missing".into())),
    };
    let p256dh_bytes = key("p256dh")?;
    let p256dh = p256::PublicKey::from_sec1_bytes(&p256dh_bytes).map_err(|_| {
        at(
            ".keys.p256dh",
            format!(
                "{} bytes that are not a P-256 public key (65-byte uncompressed point expected)",
                p256dh_bytes.len()
            ),
        )
    })?;
    let auth_bytes = key("auth")?;
    let auth: [u8; 16] = auth_bytes.as_slice().try_into().map_err(|_| {
        at(
            ".keys.auth",
            format!("{} bytes; the auth secret is 16", auth_bytes.len()),
        )
    })?;
    Ok(Subscription {
        endpoint,
        uri,
        p256dh,
        auth: Auth::from(auth),
    })
}

/// The notification a service worker receives (`event.data.json()`):
/// `{"title", "body", "url"?, "icon"?, "data": {"relance_contact", "relance_step",
/// "relance_key", ...}}`. `data` is the message's own data, if any, merged under the Relance
/// keys; its `url` (where a click goes) and `icon` are also lifted to the top level.
pub fn notification_payload(send: &Send, data: Option<&Map<String, Value>>) -> Value {
    let mut merged = data.cloned().unwrap_or_default();
    merged.insert("relance_contact".into(), json!(send.contact));
    merged.insert("relance_step".into(), json!(send.step));
    merged.insert("relance_key".into(), json!(send.idempotency_key));
    let mut payload = Map::new();
    payload.insert(
        "title".into(),
        json!(send.content.title.clone().unwrap_or_default()),
    );
    payload.insert(
        "body".into(),
        json!(
            send.content
                .body
                .clone()
                .or(send.content.text.clone())
                .unwrap_or_default()
        ),
    );
    for lifted in ["url", "icon"] {
        if let Some(v @ Value::String(_)) = merged.get(lifted) {
            payload.insert(lifted.into(), v.clone());
        }
    }
    payload.insert("data".into(), Value::Object(merged));
    Value::Object(payload)
}

/// Why a web push send failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebPushError {
    /// Every subscription has expired (404/410): remove them from the contact; do not retry.
    #[error("every web push subscription has expired: {}", endpoints.join(", "))]
    Expired {
        /// The expired subscriptions' endpoints.
        endpoints: Vec<String>,
    },
    /// Retrying will not help (malformed subscription, refused request, oversized payload).
    #[error("permanent: {0}")]
    Permanent(String),
    /// Retry later (throttling, a push service error, a network error).
    #[error("transient: {0}")]
    Transient(String),
}

impl WebPushError {
    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, WebPushError::Transient(_))
    }
}

/// What happened to one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushStatus {
    /// Accepted by the push service; its `Location` header (the message's URL), if any.
    Sent {
        /// The message id.
        message_id: Option<String>,
    },
    /// The subscription is gone (404 or 410): remove it.
    Expired {
        /// The HTTP status.
        status: u16,
    },
    /// Refused for good: a malformed subscription, or a 4xx other than 404/408/410/429.
    Permanent(String),
    /// Failed for now: 408, 429, 5xx, or a network error or timeout.
    Transient(String),
}

/// One subscription's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushResult {
    /// Its position in the contact's `web_push` list.
    pub index: usize,
    /// Its endpoint, when the subscription had a readable one.
    pub endpoint: Option<String>,
    /// What happened.
    pub status: PushStatus,
}

/// The outcome of one send, per subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebPushReport {
    /// One entry per subscription, in order.
    pub results: Vec<PushResult>,
}

impl WebPushReport {
    /// The endpoints of the subscriptions that have expired (to remove from the contact),
    /// whatever the outcome of the send.
    pub fn expired(&self) -> Vec<&str> {
        self.results
            .iter()
            .filter(|r| matches!(r.status, PushStatus::Expired { .. }))
            .filter_map(|r| r.endpoint.as_deref())
            .collect()
    }

    /// How many subscriptions received the notification.
    pub fn sent(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r.status, PushStatus::Sent { .. }))
            .count()
    }

    /// The send's outcome: the message ids (the `Location`s, comma-separated; possibly empty)
    /// when at least one subscription received it; otherwise a transient error if any
    /// subscription failed for now, a permanent one if any was refused or malformed, and
    /// [`WebPushError::Expired`] when all had expired.
    pub fn outcome(&self) -> Result<String, WebPushError> {
        if self.sent() > 0 {
            let ids: Vec<&str> = self
                .results
                .iter()
                .filter_map(|r| match &r.status {
                    PushStatus::Sent { message_id } => message_id.as_deref(),
                    _ => None,
                })
                .collect();
            return Ok(ids.join(","));
        }
        let reasons = |transient: bool| {
            self.results
                .iter()
                .filter_map(|r| match (&r.status, transient) {
                    (PushStatus::Transient(why), true) | (PushStatus::Permanent(why), false) => {
                        Some(why.as_str())
                    }
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let transient = reasons(true);
        if !transient.is_empty() {
            return Err(WebPushError::Transient(transient.join("; ")));
        }
        let permanent = reasons(false);
        if !permanent.is_empty() {
            return Err(WebPushError::Permanent(permanent.join("; ")));
        }
        let expired = self.expired();
        if expired.is_empty() {
            return Err(WebPushError::Permanent(
                "the contact has no web push subscription".into(),
            ));
        }
        Err(WebPushError::Expired {
            endpoints: expired.into_iter().map(str::to_string).collect(),
        })
    }

    /// A report where every subscription failed the same way.
    fn all(subscriptions: &[Value], status: impl Fn(usize) -> PushStatus) -> WebPushReport {
        WebPushReport {
            results: subscriptions
                .iter()
                .enumerate()
                .map(|(index, v)| PushResult {
                    index,
                    endpoint: v["endpoint"].as_str().map(str::to_string),
                    status: status(index),
                })
                .collect(),
        }
    }
}

pub(crate) type HttpClient = Client<HttpsConnector<outbound::GuardedConnector>, Full<Bytes>>;

/// Sends web push notifications: encrypts, signs and POSTs to each subscription.
#[derive(Clone)]
pub struct WebPushSender {
    key: SigningKey,
    public_key: String,
    subject: String,
    ttl_seconds: u32,
    urgency: Option<Urgency>,
    allow_http: bool,
    policy: OutboundPolicy,
    timeout: Duration,
    client: HttpClient,
}

impl fmt::Debug for WebPushSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebPushSender")
            .field("public_key", &self.public_key)
            .field("subject", &self.subject)
            .field("ttl_seconds", &self.ttl_seconds)
            .field("urgency", &self.urgency)
            .field("allow_http", &self.allow_http)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl WebPushSender {
    /// A sender with these settings (the key and subject are checked; the error names the
    /// environment variable they come from). HTTPS uses the system's root certificates;
    /// where none can be loaded, `https://` sends fail (transiently) and a warning is logged.
    pub fn new(config: WebPushConfig) -> Result<WebPushSender, ConfigError> {
        let secret = parse_vapid_private_key(&config.vapid_private_key)
            .map_err(|why| ConfigError { name: KEY_VAR, why })?;
        check_subject(&config.vapid_subject).map_err(|why| ConfigError {
            name: SUBJECT_VAR,
            why,
        })?;
        if config.ttl_seconds > MAX_TTL_SECONDS {
            return Err(ConfigError {
                name: TTL_VAR,
                why: format!("{} is over {MAX_TTL_SECONDS} seconds", config.ttl_seconds),
            });
        }
        let policy = OutboundPolicy {
            allow_http: config.allow_http,
            allow_loopback: config.allow_loopback,
            allowed_hosts: config.allowed_hosts.clone(),
        };
        let key = SigningKey::from(&secret);
        let public_key =
            URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes());
        Ok(WebPushSender {
            key,
            public_key,
            subject: config.vapid_subject.trim().to_string(),
            ttl_seconds: config.ttl_seconds,
            urgency: config.urgency,
            allow_http: config.allow_http,
            client: http_client(&policy),
            policy,
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// The VAPID public key (base64url, 65-byte uncompressed point): the browser's
    /// `applicationServerKey` in `pushManager.subscribe`.
    pub fn vapid_public_key(&self) -> &str {
        &self.public_key
    }

    /// Sends `send` (whose recipient must be [`Recipient::WebPush`]) to each of its
    /// subscriptions, with the message's `data` (click `url`, `icon`, ...) if any; the VAPID
    /// signature expires a while after `now`. Never fails as a whole: see
    /// [`WebPushReport::outcome`] and [`WebPushReport::expired`].
    pub async fn deliver(
        &self,
        send: &Send,
        data: Option<&Map<String, Value>>,
        now: DateTime<Utc>,
    ) -> WebPushReport {
        let Recipient::WebPush(subscriptions) = &send.to else {
            return WebPushReport {
                results: vec![PushResult {
                    index: 0,
                    endpoint: None,
                    status: PushStatus::Permanent(
                        "not a web push recipient (web_push subscriptions expected)".into(),
                    ),
                }],
            };
        };
        let payload = notification_payload(send, data).to_string();
        self.push(subscriptions, payload.as_bytes(), now).await
    }

    /// [`WebPushSender::deliver`] from synchronous code, on the bridge's runtime.
    pub fn deliver_blocking(
        &self,
        bridge: &Bridge,
        send: &Send,
        data: Option<&Map<String, Value>>,
        now: DateTime<Utc>,
    ) -> WebPushReport {
        bridge.block(self.deliver(send, data, now))
    }

    /// Sends `payload` (at most [`MAX_PAYLOAD_BYTES`]) to each subscription, in order, signed
    /// at `now`.
    pub async fn push(
        &self,
        subscriptions: &[Value],
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> WebPushReport {
        if payload.len() > MAX_PAYLOAD_BYTES {
            let why = format!(
                "the notification is {} bytes; web push carries at most {MAX_PAYLOAD_BYTES}",
                payload.len()
            );
            return WebPushReport::all(subscriptions, |_| PushStatus::Permanent(why.clone()));
        }
        let mut results = Vec::with_capacity(subscriptions.len());
        for (index, value) in subscriptions.iter().enumerate() {
            let checked = parse_subscription(index, value, self.allow_http).and_then(|sub| {
                // The outbound rule, before anything is encrypted, signed or connected.
                match self.policy.check_url(&sub.uri) {
                    Ok(()) => Ok(sub),
                    Err(refused) => Err(format!("web_push[{index}].endpoint: {refused}")),
                }
            });
            let result = match checked {
                Ok(subscription) => PushResult {
                    index,
                    status: self.push_one(index, &subscription, payload, now).await,
                    endpoint: Some(subscription.endpoint),
                },
                Err(why) => PushResult {
                    index,
                    endpoint: value["endpoint"].as_str().map(str::to_string),
                    status: PushStatus::Permanent(why),
                },
            };
            if let PushStatus::Transient(why) | PushStatus::Permanent(why) = &result.status {
                tracing::warn!(index, error = %why, "web push not delivered");
            }
            results.push(result);
        }
        WebPushReport { results }
    }

    async fn push_one(
        &self,
        index: usize,
        sub: &Subscription,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> PushStatus {
        let at = |why: String| format!("web_push[{index}]: {why}");
        let body = match web_push_native::encrypt(payload.to_vec(), &sub.p256dh, &sub.auth) {
            Ok(body) => body,
            Err(e) => return PushStatus::Permanent(at(format!("encryption failed: {e}"))),
        };
        let authorization = match self.vapid_header(&sub.uri, now) {
            Ok(h) => h,
            Err(why) => return PushStatus::Permanent(at(why)),
        };
        let mut request = Request::post(sub.uri.clone())
            .header("TTL", self.ttl_seconds)
            .header(header::CONTENT_ENCODING, "aes128gcm")
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::AUTHORIZATION, authorization);
        if let Some(urgency) = self.urgency {
            request = request.header("Urgency", urgency.as_str());
        }
        let request = match request.body(Full::new(Bytes::from(body))) {
            Ok(r) => r,
            Err(e) => return PushStatus::Permanent(at(format!("bad request: {e}"))),
        };
        let response = match tokio::time::timeout(self.timeout, self.client.request(request)).await
        {
            Err(_) => {
                return PushStatus::Transient(at(format!(
                    "no answer from the push service within {:?}",
                    self.timeout
                )));
            }
            // A name that resolves only to refused addresses, or a peer that is one: for good.
            Ok(Err(e)) => {
                return match outbound::refusal_in(&e) {
                    Some(refused) => PushStatus::Permanent(at(refused.to_string())),
                    None => PushStatus::Transient(at(error_chain(&e))),
                };
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let header_text = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        if status.is_success() {
            return PushStatus::Sent {
                message_id: header_text(header::LOCATION.as_str()),
            };
        }
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return PushStatus::Expired {
                status: status.as_u16(),
            };
        }
        let retry_after = header_text(header::RETRY_AFTER.as_str());
        // The body is never read into the error: it is whatever the endpoint chose to say,
        // and errors end up in logs and the journal. The status and a fixed reason only.
        let mut why = format!(
            "the push service answered {status} ({})",
            refusal_reason(status)
        );
        if let Some(after) = retry_after.filter(|a| a.len() <= 40 && a.is_ascii()) {
            why.push_str(&format!(" (retry after {after})"));
        }
        let transient = status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error();
        if transient {
            PushStatus::Transient(at(why))
        } else {
            PushStatus::Permanent(at(why))
        }
    }

    /// `vapid t=<JWT>, k=<public key>` for the endpoint's origin (RFC 8292), expiring
    /// [`VAPID_LIFETIME`] after `now`.
    fn vapid_header(&self, endpoint: &Uri, now: DateTime<Utc>) -> Result<String, String> {
        let audience = origin(endpoint).ok_or("the endpoint has no origin")?;
        let now = u64::try_from(now.timestamp()).map_err(|_| "the clock is before 1970")?;
        let exp = Duration::from_secs(now) + VAPID_LIFETIME;
        let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = json!({"aud": audience, "exp": exp.as_secs(), "sub": self.subject});
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let signature: Signature = self.key.sign(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(signature.to_bytes());
        Ok(format!(
            "vapid t={signing_input}.{signature}, k={}",
            self.public_key
        ))
    }
}

/// The endpoint's origin, `scheme://host[:port]`, the port only when not the default.
fn origin(uri: &Uri) -> Option<String> {
    let scheme = uri.scheme_str()?;
    let host = uri.host()?.to_ascii_lowercase();
    Some(match (scheme, uri.port_u16()) {
        ("https", Some(443)) | ("http", Some(80)) | (_, None) => format!("{scheme}://{host}"),
        (_, Some(port)) => format!("{scheme}://{host}:{port}"),
    })
}

/// An error and its causes, one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A fixed explanation of a push service's refusal, by status.
fn refusal_reason(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "malformed request",
        401 | 403 => "the VAPID authorization was refused",
        408 | 504 => "the push service timed out",
        413 => "the notification is too large",
        429 => "throttled",
        500..=599 => "push service error",
        _ => "refused",
    }
}

/// HTTP/1.1 over rustls (aws-lc-rs, the system's roots) or plain HTTP, on TCP connections
/// that obey the outbound rule.
pub(crate) fn http_client(policy: &OutboundPolicy) -> HttpClient {
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider.clone())
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no system root certificates: https:// web push endpoints and webhooks will fail");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("aws-lc-rs supports the default TLS versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        });
    let connector = tls
        .https_or_http()
        .enable_http1()
        .wrap_connector(policy.connector());
    Client::builder(TokioExecutor::new()).build(connector)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, State};
    use axum::http::HeaderMap;
    use axum::response::IntoResponse;
    use p256::ecdsa::VerifyingKey;
    use p256::ecdsa::signature::Verifier;
    use relance_core::render::Rendered;
    use relance_core::scenario::Channel;

    use super::*;

    /// One request the fake push service received.
    #[derive(Debug, Clone)]
    struct Received {
        path: String,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    /// A fake push service: `POST /{id}` answers the status set for `id` (201 by default)
    /// and records the request.
    #[derive(Debug, Clone, Default)]
    struct PushService {
        received: Arc<Mutex<Vec<Received>>>,
        answers: Arc<Mutex<HashMap<String, (u16, String)>>>,
    }

    impl PushService {
        /// Serves on an ephemeral port; the base URL.
        async fn start(&self) -> String {
            async fn handle(
                State(service): State<PushService>,
                Path(id): Path<String>,
                headers: HeaderMap,
                body: axum::body::Bytes,
            ) -> axum::response::Response {
                service
                    .received
                    .lock()
                    .expect("received lock")
                    .push(Received {
                        path: format!("/push/{id}"),
                        headers,
                        body: body.to_vec(),
                    });
                let answer = service
                    .answers
                    .lock()
                    .expect("answers lock")
                    .get(&id)
                    .cloned();
                match answer {
                    Some((status, body)) => (
                        StatusCode::from_u16(status).expect("a status code"),
                        [(header::RETRY_AFTER, "30")],
                        body,
                    )
                        .into_response(),
                    None => (
                        StatusCode::CREATED,
                        [(header::LOCATION, format!("/messages/{id}-1"))],
                    )
                        .into_response(),
                }
            }
            let router = axum::Router::new()
                .route("/push/{id}", axum::routing::post(handle))
                .with_state(self.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind the fake push service");
            let address = listener.local_addr().expect("its address");
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .await
                    .expect("the fake push service");
            });
            format!("http://{address}")
        }

        fn answer(&self, id: &str, status: u16, body: &str) {
            self.answers
                .lock()
                .expect("answers lock")
                .insert(id.into(), (status, body.into()));
        }

        fn received(&self) -> Vec<Received> {
            self.received.lock().expect("received lock").clone()
        }
    }

    /// A browser's subscription: its JSON and the keys to read what it receives.
    struct Browser {
        secret: p256::SecretKey,
        auth: [u8; 16],
    }

    impl Browser {
        fn new(seed: u8) -> Browser {
            Browser {
                secret: p256::SecretKey::from_slice(&[seed; 32]).expect("a valid scalar"),
                auth: [seed.wrapping_add(100); 16],
            }
        }

        fn subscription(&self, endpoint: &str) -> Value {
            let public = self.secret.public_key().to_encoded_point(false);
            json!({
                "endpoint": endpoint,
                "expirationTime": null,
                "keys": {
                    "p256dh": URL_SAFE_NO_PAD.encode(public.as_bytes()),
                    "auth": URL_SAFE_NO_PAD.encode(self.auth),
                }
            })
        }

        fn decrypt(&self, body: &[u8]) -> Value {
            let plain =
                web_push_native::decrypt(body.to_vec(), &self.secret, &Auth::from(self.auth))
                    .expect("the body decrypts with the subscription's keys");
            serde_json::from_slice(&plain).expect("the notification is JSON")
        }
    }

    const SUBJECT: &str = "mailto:ops@example.com";

    fn sender() -> WebPushSender {
        let (private, _) = generate_vapid_keys();
        let mut config = WebPushConfig::new(private, SUBJECT);
        config.ttl_seconds = 3600;
        config.urgency = Some(Urgency::High);
        // The fake push service listens on loopback over http: the test-only escape hatches.
        config.allow_http = true;
        config.allow_loopback = true;
        WebPushSender::new(config).expect("a valid configuration")
    }

    fn send_to(subscriptions: Vec<Value>) -> Send {
        Send {
            enrollment: "welcome:c1:1".into(),
            contact: "c1".into(),
            step: "nudge".into(),
            message: "nudge".into(),
            channel: Channel::WebPush,
            communication_type: "web_push".into(),
            to: Recipient::WebPush(subscriptions),
            content: Rendered {
                title: Some("Bonjour Chloé".into()),
                body: Some("Your cart misses you".into()),
                ..Rendered::default()
            },
            idempotency_key: "welcome:c1:1:nudge".into(),
        }
    }

    fn decode_json(part: &str) -> Value {
        let bytes = URL_SAFE_NO_PAD.decode(part).expect("a base64url JWT part");
        serde_json::from_slice(&bytes).expect("a JSON JWT part")
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn delivers_an_encrypted_notification_signed_with_vapid() {
        let service = PushService::default();
        let base = service.start().await;
        let browser = Browser::new(7);
        let endpoint = format!("{base}/push/abc");
        let sender = sender();
        let send = send_to(vec![browser.subscription(&endpoint)]);
        let mut data = Map::new();
        data.insert("url".into(), json!("https://shop.example.com/cart"));
        data.insert("campaign".into(), json!("spring"));

        let report = sender.deliver(&send, Some(&data), Utc::now()).await;

        assert_eq!(
            report.outcome(),
            Ok("/messages/abc-1".to_string()),
            "{report:?}"
        );
        assert!(report.expired().is_empty());
        let received = service.received();
        assert_eq!(received.len(), 1);
        let request = &received[0];
        assert_eq!(request.path, "/push/abc");
        let h = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        assert_eq!(h("content-encoding").as_deref(), Some("aes128gcm"));
        assert_eq!(
            h("content-type").as_deref(),
            Some("application/octet-stream")
        );
        assert_eq!(h("ttl").as_deref(), Some("3600"));
        assert_eq!(h("urgency").as_deref(), Some("high"));

        // Authorization: vapid t=<JWT>, k=<public key>
        let authorization = h("authorization").expect("an Authorization header");
        let rest = authorization
            .strip_prefix("vapid t=")
            .expect("the vapid scheme");
        let (token, k) = rest.split_once(", k=").expect("t= and k=");
        assert_eq!(k, sender.vapid_public_key());
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "{token}");
        assert_eq!(decode_json(parts[0])["alg"], "ES256");
        let claims = decode_json(parts[1]);
        assert_eq!(
            claims["aud"],
            json!(base),
            "the audience is the endpoint's origin"
        );
        assert_eq!(claims["sub"], SUBJECT);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let exp = claims["exp"].as_u64().expect("a numeric exp");
        assert!(exp > now && exp <= now + 24 * 3600, "exp {exp}, now {now}");
        let key_bytes = URL_SAFE_NO_PAD.decode(k).expect("k is base64url");
        assert_eq!(key_bytes.len(), 65);
        let verifying = VerifyingKey::from_sec1_bytes(&key_bytes).expect("k is a P-256 key");
        let signature = Signature::from_slice(
            &URL_SAFE_NO_PAD
                .decode(parts[2])
                .expect("the signature is base64url"),
        )
        .expect("a 64-byte ES256 signature");
        verifying
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("the JWT is signed with the VAPID key");

        // The body: aes128gcm for the subscription's keys, the notification inside.
        let notification = browser.decrypt(&request.body);
        assert_eq!(notification["title"], "Bonjour Chloé");
        assert_eq!(notification["body"], "Your cart misses you");
        assert_eq!(notification["url"], "https://shop.example.com/cart");
        assert_eq!(notification["data"]["relance_key"], "welcome:c1:1:nudge");
        assert_eq!(notification["data"]["relance_contact"], "c1");
        assert_eq!(notification["data"]["relance_step"], "nudge");
        assert_eq!(notification["data"]["campaign"], "spring");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_gone_subscription_is_reported_expired_and_not_retried() {
        let service = PushService::default();
        let base = service.start().await;
        service.answer("gone", 410, "push subscription has unsubscribed or expired");
        service.answer("missing", 404, "");
        let gone = format!("{base}/push/gone");
        let missing = format!("{base}/push/missing");
        let send = send_to(vec![
            Browser::new(3).subscription(&gone),
            Browser::new(4).subscription(&missing),
        ]);

        let report = sender().deliver(&send, None, Utc::now()).await;

        assert_eq!(report.expired(), vec![gone.as_str(), missing.as_str()]);
        let error = report.outcome().expect_err("nothing was sent");
        assert_eq!(
            error,
            WebPushError::Expired {
                endpoints: vec![gone.clone(), missing.clone()]
            }
        );
        assert!(!error.is_transient());
        assert_eq!(
            report.results[0].status,
            PushStatus::Expired { status: 410 }
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn one_live_subscription_is_enough_and_the_expired_one_is_reported() {
        let service = PushService::default();
        let base = service.start().await;
        service.answer("old", 410, "");
        let old = format!("{base}/push/old");
        let new = format!("{base}/push/new");
        let send = send_to(vec![
            Browser::new(5).subscription(&old),
            Browser::new(6).subscription(&new),
        ]);

        let report = sender().deliver(&send, None, Utc::now()).await;

        assert_eq!(report.outcome(), Ok("/messages/new-1".to_string()));
        assert_eq!(report.sent(), 1);
        assert_eq!(report.expired(), vec![old.as_str()]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn server_errors_and_throttling_are_transient() {
        let service = PushService::default();
        let base = service.start().await;
        service.answer("busy", 500, "internal error");
        service.answer("slow", 429, "too many requests");
        for (id, status) in [("busy", "500"), ("slow", "429")] {
            let send = send_to(vec![
                Browser::new(8).subscription(&format!("{base}/push/{id}")),
            ]);
            let report = sender().deliver(&send, None, Utc::now()).await;
            let error = report.outcome().expect_err("not sent");
            assert!(error.is_transient(), "{error}");
            let text = error.to_string();
            assert!(
                text.contains(status) && text.contains("retry after 30"),
                "{text}"
            );
            assert!(report.expired().is_empty());
        }
        // A transient failure beside an expired subscription: retry, and still report it.
        service.answer("gone", 410, "");
        let send = send_to(vec![
            Browser::new(8).subscription(&format!("{base}/push/gone")),
            Browser::new(9).subscription(&format!("{base}/push/busy")),
        ]);
        let report = sender().deliver(&send, None, Utc::now()).await;
        assert!(report.outcome().expect_err("not sent").is_transient());
        assert_eq!(report.expired().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_unreachable_push_service_is_transient() {
        // A port bound but not listening: connections are refused, and no other test's
        // server can be given it meanwhile (a listener bound then dropped freed its port for
        // a test running beside, whose server then answered this request).
        let reserved = tokio::net::TcpSocket::new_v4().expect("socket");
        reserved
            .bind("127.0.0.1:0".parse().expect("an address"))
            .expect("bind");
        let address = reserved.local_addr().expect("its address");
        let send = send_to(vec![
            Browser::new(2).subscription(&format!("http://{address}/push/x")),
        ]);
        let report = sender().deliver(&send, None, Utc::now()).await;
        let error = report.outcome().expect_err("nothing listens");
        assert!(error.is_transient(), "{error}");
        drop(reserved);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn refusals_are_permanent_with_the_status_and_a_fixed_reason() {
        let service = PushService::default();
        let base = service.start().await;
        service.answer("forbidden", 403, "invalid JWT\n  provided");
        service.answer("large", 413, "payload too large");
        service.answer("bad", 400, "");
        for (id, expected) in [
            (
                "forbidden",
                "403 Forbidden (the VAPID authorization was refused)",
            ),
            (
                "large",
                "413 Payload Too Large (the notification is too large)",
            ),
            ("bad", "400 Bad Request (malformed request)"),
        ] {
            let send = send_to(vec![
                Browser::new(9).subscription(&format!("{base}/push/{id}")),
            ]);
            let report = sender().deliver(&send, None, Utc::now()).await;
            match report.outcome() {
                Err(WebPushError::Permanent(why)) => {
                    assert!(why.starts_with("web_push[0]: "), "{why}");
                    assert!(why.contains(expected), "{why}");
                    // The service's answer is not copied (issue 11, finding 6).
                    assert!(
                        !why.contains("JWT") && !why.contains("payload too"),
                        "{why}"
                    );
                }
                other => panic!("{id}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_subscriptions_are_permanent_and_name_the_field() {
        let good = Browser::new(1).subscription("https://push.example.com/send/1");
        let with = |path: &[&str], value: Value| {
            let mut v = good.clone();
            let mut at = &mut v;
            for p in &path[..path.len() - 1] {
                at = &mut at[*p];
            }
            let last = path[path.len() - 1];
            if value.is_null() {
                at.as_object_mut().expect("an object").remove(last);
            } else {
                at[last] = value;
            }
            v
        };
        let cases = [
            (
                json!("https://push.example.com/x"),
                "web_push[0]: not a subscription object",
            ),
            (
                with(&["endpoint"], Value::Null),
                "web_push[0].endpoint: missing",
            ),
            (
                with(&["endpoint"], json!(12)),
                "web_push[0].endpoint: not a URL string",
            ),
            (
                with(&["endpoint"], json!("ftp://x/y")),
                "web_push[0].endpoint: not an https:// URL",
            ),
            (
                with(&["endpoint"], json!("http://push.example.com/x")),
                "web_push[0].endpoint: http:// is refused",
            ),
            (with(&["keys"], Value::Null), "web_push[0].keys: missing"),
            (
                with(&["keys"], json!("k")),
                "web_push[0].keys: not an object",
            ),
            (
                with(&["keys", "p256dh"], Value::Null),
                "web_push[0].keys.p256dh: missing",
            ),
            (
                with(&["keys", "p256dh"], json!("@@not base64@@")),
                "web_push[0].keys.p256dh: not base64url",
            ),
            (
                with(&["keys", "p256dh"], json!("AAAA")),
                "web_push[0].keys.p256dh: 3 bytes that are not a P-256 public key",
            ),
            (
                with(&["keys", "auth"], json!(["x"])),
                "web_push[0].keys.auth: not a string",
            ),
            (
                with(&["keys", "auth"], json!("AAAA")),
                "web_push[0].keys.auth: 3 bytes; the auth secret is 16",
            ),
        ];
        for (value, expected) in cases {
            let error = parse_subscription(0, &value, false).expect_err(expected);
            assert!(error.starts_with(expected), "{error} / {expected}");
        }
        let parsed = parse_subscription(0, &good, false).expect("a good subscription");
        assert_eq!(parsed.endpoint, "https://push.example.com/send/1");
        // Standard base64 with padding, as some stores keep it, reads the same.
        let mut padded = good.clone();
        let auth = URL_SAFE_NO_PAD.encode([0xfb_u8; 16]);
        padded["keys"]["auth"] = json!(format!("{}==", auth.replace('-', "+").replace('_', "/")));
        parse_subscription(0, &padded, false).expect("padded standard base64 is accepted");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_malformed_subscription_fails_the_send_permanently_without_a_request() {
        let service = PushService::default();
        let base = service.start().await;
        let mut broken = Browser::new(1).subscription(&format!("{base}/push/x"));
        broken["keys"]["p256dh"] = json!("%%%");
        let report = sender()
            .deliver(&send_to(vec![broken]), None, Utc::now())
            .await;
        match report.outcome() {
            Err(WebPushError::Permanent(why)) => {
                assert!(why.starts_with("web_push[0].keys.p256dh: "), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert!(service.received().is_empty());
        // Not a web push recipient at all.
        let mut email = send_to(Vec::new());
        email.to = Recipient::Email("c@example.com".into());
        let outcome = sender().deliver(&email, None, Utc::now()).await.outcome();
        assert!(
            matches!(outcome, Err(WebPushError::Permanent(_))),
            "{outcome:?}"
        );
        // No subscription.
        let outcome = sender()
            .deliver(&send_to(Vec::new()), None, Utc::now())
            .await
            .outcome();
        assert!(
            matches!(outcome, Err(WebPushError::Permanent(_))),
            "{outcome:?}"
        );
    }

    #[test]
    fn an_oversized_notification_is_permanent() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let bridge = Bridge::new(runtime.handle().clone());
        let mut send = send_to(vec![
            Browser::new(1).subscription("https://push.example.com/1"),
        ]);
        send.content.body = Some("x".repeat(MAX_PAYLOAD_BYTES));
        let outcome = sender()
            .deliver_blocking(&bridge, &send, None, Utc::now())
            .outcome();
        match outcome {
            Err(WebPushError::Permanent(why)) => assert!(why.contains("at most 3993"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn delivers_from_synchronous_code_through_the_bridge() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let service = PushService::default();
        let base = runtime.block_on(service.start());
        let bridge = Bridge::new(runtime.handle().clone());
        let browser = Browser::new(11);
        let send = send_to(vec![browser.subscription(&format!("{base}/push/sync"))]);
        let report = sender().deliver_blocking(&bridge, &send, None, Utc::now());
        assert_eq!(report.outcome(), Ok("/messages/sync-1".to_string()));
        let received = service.received();
        assert_eq!(
            browser.decrypt(&received[0].body)["body"],
            "Your cart misses you"
        );
    }

    #[test]
    fn the_notification_payload_carries_the_relance_keys_and_the_click_url() {
        let send = send_to(Vec::new());
        assert_eq!(
            notification_payload(&send, None),
            json!({
                "title": "Bonjour Chloé",
                "body": "Your cart misses you",
                "data": {"relance_contact": "c1", "relance_step": "nudge", "relance_key": "welcome:c1:1:nudge"}
            })
        );
        let mut data = Map::new();
        data.insert("url".into(), json!("/offers"));
        data.insert("relance_key".into(), json!("spoofed"));
        let payload = notification_payload(&send, Some(&data));
        assert_eq!(payload["url"], "/offers");
        assert_eq!(payload["data"]["url"], "/offers");
        assert_eq!(payload["data"]["relance_key"], "welcome:c1:1:nudge");
    }

    #[test]
    fn the_vapid_key_reads_as_base64url_or_pem() {
        let (private, public) = generate_vapid_keys();
        let from_b64 = parse_vapid_private_key(&private).expect("base64url");
        assert_eq!(
            URL_SAFE_NO_PAD.encode(from_b64.public_key().to_encoded_point(false).as_bytes()),
            public
        );
        let pem = from_b64
            .to_sec1_pem(p256::pkcs8::LineEnding::LF)
            .expect("a SEC1 PEM");
        let from_pem = parse_vapid_private_key(&pem).expect("SEC1 PEM");
        assert_eq!(from_pem, from_b64);
        let escaped = pem.replace('\n', "\\n");
        assert_eq!(
            parse_vapid_private_key(&escaped).expect("escaped PEM"),
            from_b64
        );
        let sender =
            WebPushSender::new(WebPushConfig::new(pem.to_string(), SUBJECT)).expect("a PEM key");
        assert_eq!(sender.vapid_public_key(), public);
        assert!(
            parse_vapid_private_key("AAAA")
                .expect_err("too short")
                .contains("3 bytes")
        );
        assert!(
            parse_vapid_private_key(
                "-----BEGIN EC PRIVATE KEY-----\nnope\n-----END EC PRIVATE KEY-----"
            )
            .is_err()
        );
        let debug = format!("{:?}", WebPushConfig::new(private.clone(), SUBJECT));
        assert!(!debug.contains(&private), "the key is not printed: {debug}");
    }

    #[test]
    fn the_configuration_comes_from_the_environment_and_names_the_bad_variable() {
        let (private, _) = generate_vapid_keys();
        let env = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            WebPushConfig::from_lookup(|name| map.get(name).cloned())
        };
        let config = env(&[
            (KEY_VAR, &private),
            (SUBJECT_VAR, "https://example.com/contact"),
        ])
        .expect("the two required variables");
        assert_eq!(config.ttl_seconds, DEFAULT_TTL_SECONDS);
        assert_eq!(config.urgency, None);
        assert!(!config.allow_http);
        let config = env(&[
            (KEY_VAR, &private),
            (SUBJECT_VAR, SUBJECT),
            (TTL_VAR, "600"),
            (URGENCY_VAR, "very_low"),
            (ALLOW_HTTP_VAR, "true"),
        ])
        .expect("every variable");
        assert_eq!(
            (config.ttl_seconds, config.urgency, config.allow_http),
            (600, Some(Urgency::VeryLow), true)
        );

        let name = |pairs: &[(&str, &str)]| env(pairs).expect_err("invalid").name;
        assert_eq!(name(&[(SUBJECT_VAR, SUBJECT)]), "RELANCE_VAPID_PRIVATE_KEY");
        assert_eq!(
            name(&[(KEY_VAR, "c2hvcnQ"), (SUBJECT_VAR, SUBJECT)]),
            "RELANCE_VAPID_PRIVATE_KEY"
        );
        assert_eq!(name(&[(KEY_VAR, &private)]), "RELANCE_VAPID_SUBJECT");
        assert_eq!(
            name(&[(KEY_VAR, &private), (SUBJECT_VAR, "ops@example.com")]),
            "RELANCE_VAPID_SUBJECT"
        );
        assert_eq!(
            name(&[
                (KEY_VAR, &private),
                (SUBJECT_VAR, SUBJECT),
                (TTL_VAR, "soon")
            ]),
            "RELANCE_WEB_PUSH_TTL"
        );
        assert_eq!(
            name(&[
                (KEY_VAR, &private),
                (SUBJECT_VAR, SUBJECT),
                (TTL_VAR, "9999999")
            ]),
            "RELANCE_WEB_PUSH_TTL"
        );
        assert_eq!(
            name(&[
                (KEY_VAR, &private),
                (SUBJECT_VAR, SUBJECT),
                (URGENCY_VAR, "asap")
            ]),
            "RELANCE_WEB_PUSH_URGENCY"
        );
        assert_eq!(
            name(&[
                (KEY_VAR, &private),
                (SUBJECT_VAR, SUBJECT),
                (ALLOW_HTTP_VAR, "maybe")
            ]),
            "RELANCE_WEB_PUSH_ALLOW_HTTP"
        );
    }

    #[test]
    fn the_vapid_audience_is_the_endpoint_origin() {
        let o = |u: &str| origin(&u.parse::<Uri>().expect("a URI"));
        assert_eq!(
            o("https://fcm.googleapis.com/fcm/send/abc").as_deref(),
            Some("https://fcm.googleapis.com")
        );
        assert_eq!(
            o("https://Push.Example.com:443/x").as_deref(),
            Some("https://push.example.com")
        );
        assert_eq!(
            o("https://push.example.com:8443/x").as_deref(),
            Some("https://push.example.com:8443")
        );
        assert_eq!(
            o("http://127.0.0.1:3000/x").as_deref(),
            Some("http://127.0.0.1:3000")
        );
    }

    // Issue 11, finding 6: the outbound rule (DESIGN §8).

    /// A sender as deployed: https only, no internal address.
    fn strict_sender(allowed_hosts: &[&str]) -> WebPushSender {
        let (private, _) = generate_vapid_keys();
        let mut config = WebPushConfig::new(private, SUBJECT);
        config.allowed_hosts = allowed_hosts.iter().map(|h| h.to_string()).collect();
        WebPushSender::new(config).expect("a valid configuration")
    }

    /// Whether anything connected to the listener (a connection completes in the kernel's
    /// backlog whether or not it is accepted, so this needs no waiting).
    fn was_connected(listener: &std::net::TcpListener) -> bool {
        listener.set_nonblocking(true).expect("non-blocking");
        listener.accept().is_ok()
    }

    fn refused_for_good(report: &WebPushReport) -> String {
        match report.outcome() {
            Err(WebPushError::Permanent(why)) => {
                assert!(why.contains("refused"), "{why}");
                why
            }
            other => panic!("not a permanent refusal: {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn hostile_internal_endpoints_are_refused_without_a_connection() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = v4.local_addr().expect("its address").port();
        // IPv6 loopback may be missing in a container: then the URL alone is checked.
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();
        let v6_port = v6
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or(443, |a| a.port());
        let sender = strict_sender(&[]);
        for (endpoint, why) in [
            (format!("https://127.0.0.1:{port}/admin"), "loopback"),
            ("https://169.254.169.254/latest".to_string(), "link-local"),
            ("http://example.com/push/1".to_string(), "http://"),
            (format!("https://[::1]:{v6_port}/"), "loopback"),
            (format!("https://[::ffff:127.0.0.1]:{port}/"), "loopback"),
            (format!("https://10.1.2.3:{port}/"), "private"),
            // A name that resolves to loopback: refused on the resolved address.
            (format!("https://localhost:{port}/admin"), "loopback"),
        ] {
            let send = send_to(vec![Browser::new(3).subscription(&endpoint)]);
            let report = sender.deliver(&send, None, Utc::now()).await;
            let reason = refused_for_good(&report);
            assert!(reason.contains(why), "{endpoint}: {reason}");
        }
        assert!(!was_connected(&v4), "a refused endpoint was connected to");
        if let Some(v6) = &v6 {
            assert!(!was_connected(v6), "a refused endpoint was connected to");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn hostile_loopback_escape_hatch_reaches_loopback_only() {
        // The tests' own escape hatch lets the stub push service on 127.0.0.1 be reached,
        // but never the metadata service or a private network.
        let service = PushService::default();
        let base = service.start().await;
        let sender = sender();
        let ok = sender
            .deliver(
                &send_to(vec![
                    Browser::new(4).subscription(&format!("{base}/push/ok")),
                ]),
                None,
                Utc::now(),
            )
            .await;
        assert_eq!(ok.sent(), 1, "{ok:?}");
        for endpoint in ["http://169.254.169.254/latest", "https://192.168.0.1/x"] {
            let report = sender
                .deliver(
                    &send_to(vec![Browser::new(4).subscription(endpoint)]),
                    None,
                    Utc::now(),
                )
                .await;
            refused_for_good(&report);
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn hostile_push_service_outside_the_allowlist_is_refused() {
        let sender = strict_sender(&["fcm.googleapis.com", ".push.apple.com"]);
        let send = send_to(vec![
            Browser::new(5).subscription("https://push.attacker.example/x"),
        ]);
        let reason = refused_for_good(&sender.deliver(&send, None, Utc::now()).await);
        assert!(reason.contains("not among the allowed hosts"), "{reason}");
    }
}
