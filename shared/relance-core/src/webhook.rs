//! The webhook step (DESIGN §9): its definition as written, the static checks validation runs
//! on it, and the rules every runtime delivers it by — the signature, the idempotency key,
//! which answers are retried and for how long, and what `save` copies into the contact.
//!
//! The step does not wait for the answer: it queues one call per `{enrollment}:{step}` key and
//! goes on to `next`; the delivery worker of the runtime makes the call, retries it, and when a
//! 2xx answer arrives applies `save` as a contact update (which may itself trigger scenarios).
//! The HTTP client is a [`Transport`], a port like the stores: the core never does I/O.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use hmac::{Hmac, Mac};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;

pub use crate::retry::{
    FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS, RETRY_WINDOW_HOURS, backoff, dead_reason,
    next_attempt,
};

/// The signature header: `t=UNIX,v1=hex(HMAC-SHA256(secret, "{t}.{body}"))`.
pub const SIGNATURE_HEADER: &str = "Relance-Signature";
/// The idempotency key header: `{enrollment}:{step}`, the same on every attempt.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Where a secret named `orders` is read from in embedded mode: `RELANCE_WEBHOOK_SECRET_ORDERS`
/// (on AWS, Secrets Manager by the ARN in `RELANCE_WEBHOOK_SECRET_ORDERS_ARN`).
pub const SECRET_VAR_PREFIX: &str = "RELANCE_WEBHOOK_SECRET_";
/// How long one attempt may take (connect, send, answer) before it counts as a timeout.
pub const ATTEMPT_TIMEOUT_SECONDS: u64 = 10;
/// The largest answer read (for `save`); a longer one is cut there and not parsed.
pub const ANSWER_CAP: usize = 1 << 20;
/// The longest URL accepted.
const MAX_URL: usize = 2048;

/// Headers a scenario may not set: the signature and key are Relance's, the others belong to
/// the HTTP client (framing, routing).
const RESERVED_HEADERS: [&str; 8] = [
    "relance-signature",
    "idempotency-key",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
];

/// Headers that carry credentials: refused, since secrets are named, never written inline.
const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "api-key",
];

/// The HTTP method of a webhook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// POST (the default).
    #[default]
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// GET (sent without a body).
    Get,
    /// DELETE.
    Delete,
}

impl Method {
    /// The method as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Get => "GET",
            Method::Delete => "DELETE",
        }
    }

    fn is_post(&self) -> bool {
        *self == Method::Post
    }
}

/// `{url, method?, headers?, body?, secret?, save?}`: one HTTP call per contact. In a queued
/// call (the outbox), `body` holds the rendered text rather than the template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Webhook")]
pub struct Webhook {
    /// An `https://` URL (not a template).
    pub url: String,
    /// POST (default), PUT, PATCH, GET or DELETE.
    #[serde(default, skip_serializing_if = "Method::is_post")]
    pub method: Method,
    /// Extra headers (not `Relance-Signature`, `Idempotency-Key`, `Host` or framing headers).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A template over `contact` and `scenario` (minijinja, as messages); sent as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The name of the signing secret (`[A-Za-z0-9_-]`), never its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Contact field → JSON pointer into a 2xx JSON answer (`{tier: /data/tier}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub save: BTreeMap<String, String>,
}

/// The `Idempotency-Key` of a webhook step's call in an enrollment.
pub fn idempotency_key(enrollment: &str, step: &str) -> String {
    format!("{enrollment}:{step}")
}

/// The environment variable holding secret `name` in embedded mode.
pub fn secret_var(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|c| match c {
            '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    format!("{SECRET_VAR_PREFIX}{upper}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn mac(secret: &[u8], t: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length (a long one is hashed, a short one padded), so this
    // constructor has no failing case for `Hmac`.
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `Relance-Signature` value for `body` sent at `t` (Unix seconds).
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let tag = mac(secret, t, body).finalize().into_bytes();
    format!("t={t},v1={}", hex(&tag))
}

/// What a receiver checks: the header parses, `v1` matches the body (in constant time), and
/// `t` is within `tolerance_seconds` of `now` (a replayed old request is refused).
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64, tolerance_seconds: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (now - t).abs() > tolerance_seconds || v1.len() != 64 {
        return false;
    }
    let Some(tag) = (0..32)
        .map(|i| u8::from_str_radix(v1.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    mac(secret, t, body).verify_slice(&tag).is_ok()
}

/// What an answer (or its absence) means for a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: delivered.
    Done,
    /// 408, 429, 5xx, a timeout or a connection failure: try again later.
    Retry(String),
    /// Any other status, or a call the outbound rule refuses: never retried.
    Failed(String),
}

/// The verdict on an HTTP status.
pub fn classify(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Done,
        408 | 429 | 500..=599 => Verdict::Retry(format!("HTTP {status}")),
        _ => Verdict::Failed(format!("HTTP {status}")),
    }
}

/// The contact fields `save` takes from a 2xx answer, and the reason for each it could not
/// (the answer is not JSON, a pointer finds nothing). An empty `save` reads nothing.
pub fn saved_fields(
    save: &BTreeMap<String, String>,
    answer: &[u8],
) -> (Map<String, Value>, Vec<String>) {
    let mut fields = Map::new();
    let mut missing = Vec::new();
    if save.is_empty() {
        return (fields, missing);
    }
    let json: Value = match serde_json::from_slice(answer) {
        Ok(v) => v,
        Err(e) => {
            missing.push(format!("save: the answer is not JSON ({e})"));
            return (fields, missing);
        }
    };
    for (field, pointer) in save {
        match json.pointer(pointer) {
            Some(v) => {
                fields.insert(field.clone(), v.clone());
            }
            None => missing.push(format!("save.{field}: the answer has nothing at {pointer}")),
        }
    }
    (fields, missing)
}

/// One HTTP request, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The URL, as written in the scenario.
    pub url: String,
    /// Every header, the signature and the idempotency key included.
    pub headers: Vec<(String, String)>,
    /// The body (empty when the step has none).
    pub body: Vec<u8>,
}

/// An answer: its status and (at most [`ANSWER_CAP`] bytes of) its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body, for `save`; never logged.
    pub body: Vec<u8>,
}

/// A call that got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The outbound rule refused the address (permanent).
    #[error("{0}")]
    Refused(String),
    /// A timeout or a connection failure (retried).
    #[error("{0}")]
    Unreachable(String),
}

/// A future a transport returns.
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = Result<Answer, CallError>> + Send + 'a>>;

/// Sends one request; answers within [`ATTEMPT_TIMEOUT_SECONDS`] or fails.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Sends `request`.
    fn call(&self, request: Request) -> CallFuture<'_>;
}

/// The request for `call` (its body rendered) under idempotency key `key` at `t` (Unix
/// seconds), signed when `secret` is given: the scenario's headers, a JSON content type when
/// there is a body and none was given, the idempotency key and the signature.
pub fn request(call: &Webhook, key: &str, secret: Option<&[u8]>, t: i64) -> Request {
    let body = call.body.clone().unwrap_or_default().into_bytes();
    let mut headers: Vec<(String, String)> = call
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let has = |headers: &[(String, String)], name: &str| {
        headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
    };
    if call.body.is_some() && !has(&headers, "content-type") {
        headers.push(("Content-Type".into(), "application/json".into()));
    }
    if !has(&headers, "user-agent") {
        headers.push(("User-Agent".into(), "relance-webhook/1".into()));
    }
    headers.push((IDEMPOTENCY_HEADER.into(), key.to_string()));
    if let Some(secret) = secret {
        headers.push((SIGNATURE_HEADER.into(), signature(secret, t, &body)));
    }
    Request {
        method: call.method,
        url: call.url.clone(),
        headers,
        body,
    }
}

/// The verdict on a call's result.
pub fn verdict(result: &Result<Answer, CallError>) -> Verdict {
    match result {
        Ok(a) => classify(a.status),
        Err(CallError::Refused(why)) => Verdict::Failed(why.clone()),
        Err(CallError::Unreachable(why)) => Verdict::Retry(why.clone()),
    }
}

/// A problem found by a static check: the field under the webhook, and the message.
pub type Finding = (String, String);

/// Static checks on a webhook as written: each problem as `(field, message)`. The body
/// template is checked by validation with the message templates' guard.
pub fn check(w: &Webhook) -> Vec<Finding> {
    let mut errors = Vec::new();
    if let Err(e) = check_url(&w.url) {
        errors.push(("url".to_string(), e));
    }
    for (name, value) in &w.headers {
        let field = format!("headers.{name}");
        if let Err(e) = check_header(name, value) {
            errors.push((field, e));
        } else if CREDENTIAL_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            errors.push((field, format!("{name} would write a credential into the scenario file: secrets are named, not inline; sign the call with `secret:` and verify Relance-Signature in the receiver")));
        }
    }
    if w.method == Method::Get && w.body.is_some() {
        errors.push((
            "body".into(),
            "a GET webhook has no body: use POST, PUT or PATCH".into(),
        ));
    }
    if let Some(name) = &w.secret
        && (name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    {
        errors.push(("secret".into(), format!("\"{}\" is not a secret name: write the name of a secret (letters, digits, - and _, at most 64), not its value; its value is read from {SECRET_VAR_PREFIX}<NAME> (embedded) or Secrets Manager (AWS)", shorten(name))));
    }
    for (field, pointer) in &w.save {
        let path = format!("save.{field}");
        if field.trim().is_empty() || field == "id" {
            errors.push((
                path.clone(),
                "name the contact field to set (any but id)".into(),
            ));
        }
        if !pointer.is_empty() && !pointer.starts_with('/') {
            errors.push((
                path,
                format!("\"{pointer}\" is not a JSON pointer: write it like /data/tier (RFC 6901)"),
            ));
        }
    }
    errors
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 16 {
        format!("{}…", s.chars().take(8).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Checks a header name and value (a token name, no line breaks in the value, none of the
/// reserved names).
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    let token = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
    if !token {
        return Err(format!("\"{name}\" is not a header name"));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "{name} is set by Relance or the HTTP client, not by the scenario"
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err("a header value holds no line breaks or control characters".into());
    }
    Ok(())
}

/// The host of an `http(s)://` URL, without brackets, lowercase; the URL's scheme.
fn split_url(url: &str) -> Result<(String, String), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("\"{}\" is not a URL: write https://host/path", shorten(url)))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("the URL carries credentials (user:password@): sign the call with `secret:` (a secret by name) instead".into());
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("").to_string()
    } else {
        authority.split(':').next().unwrap_or("").to_string()
    };
    if let Some(port) = authority.rsplit_once(']').map_or_else(
        || authority.split_once(':').map(|(_, p)| p),
        |(_, p)| p.strip_prefix(':'),
    ) && (port.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(format!("\"{port}\" is not a port"));
    }
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    Ok((scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

/// The URL check of validation: `https://` to a host that is not a special address literal;
/// `http://` only to a loopback host (`localhost`, `127.0.0.1`, `[::1]`), which the outbound
/// rule itself refuses unless a local test turns on its escape hatches
/// (`RELANCE_OUTBOUND_ALLOW_LOOPBACK`, `RELANCE_WEBHOOK_ALLOW_HTTP`). A host name is checked
/// again on the addresses it resolves to, at each call.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL {
        return Err(format!("the URL is longer than {MAX_URL} characters"));
    }
    if url.contains("{{") || url.contains("{%") {
        return Err("the URL is not a template: write it as is (the body is the template)".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL holds whitespace".into());
    }
    let (scheme, host) = split_url(url)?;
    let loopback = match host.parse::<IpAddr>() {
        Ok(ip) => {
            if let Some(why) = crate::net::special_address(ip)
                && !ip.is_loopback()
            {
                return Err(format!(
                    "{ip} is {why}: webhooks never reach loopback, private, link-local or unique-local addresses"
                ));
            }
            ip.is_loopback()
        }
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
    };
    match scheme.as_str() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err("http:// is refused: webhooks are called over https:// only".into()),
        other => Err(format!(
            "{other}:// is refused: webhooks are called over https:// only"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Duration, Utc};

    #[test]
    fn signature_verifies_and_refuses_a_changed_body_or_an_old_stamp() {
        let sig = signature(b"k3y", 1_700_000_000, b"{\"a\":1}");
        // The same HMAC computed apart (Python's hmac, as in the README's receiver snippet).
        assert_eq!(
            sig,
            "t=1700000000,v1=fd5a70e965043f7df6309c2c3b5ff5a8ffa99b1f5175e9a311459e73c4634d4a"
        );
        assert!(verify(b"k3y", &sig, b"{\"a\":1}", 1_700_000_100, 300));
        assert!(!verify(b"k3y", &sig, b"{\"a\":2}", 1_700_000_100, 300));
        assert!(!verify(b"other", &sig, b"{\"a\":1}", 1_700_000_100, 300));
        assert!(!verify(b"k3y", &sig, b"{\"a\":1}", 1_700_001_000, 300));
        assert!(!verify(b"k3y", "t=x,v1=zz", b"", 0, 300));
    }

    #[test]
    fn answers_are_classified_as_designed() {
        assert_eq!(classify(204), Verdict::Done);
        for s in [408, 429, 500, 503, 599] {
            assert!(matches!(classify(s), Verdict::Retry(_)), "{s}");
        }
        for s in [400, 401, 404, 410, 422, 301] {
            assert_eq!(classify(s), Verdict::Failed(format!("HTTP {s}")), "{s}");
        }
    }

    #[test]
    fn backoff_doubles_to_an_hour_and_stops_after_a_day() {
        assert_eq!(backoff(1), Duration::seconds(30));
        assert_eq!(backoff(2), Duration::seconds(60));
        assert_eq!(backoff(8), Duration::seconds(3600));
        assert_eq!(backoff(u32::MAX), Duration::seconds(3600));
        let first = DateTime::<Utc>::UNIX_EPOCH;
        assert_eq!(
            next_attempt(first, 1, first),
            Some(first + Duration::seconds(30))
        );
        let late = first + Duration::hours(23) + Duration::minutes(30);
        assert_eq!(next_attempt(first, 30, late), None);
    }

    #[test]
    fn urls_are_https_to_public_hosts() {
        assert_eq!(check_url("https://hooks.example.com/x?y=1"), Ok(()));
        assert!(check_url("http://hooks.example.com/").is_err());
        assert!(check_url("ftp://hooks.example.com/").is_err());
        assert!(check_url("https://10.1.2.3/").is_err());
        assert!(check_url("https://169.254.169.254/latest").is_err());
        assert!(check_url("https://[fd00::1]:8443/").is_err());
        assert!(check_url("https://user:pw@example.com/").is_err());
        assert!(check_url("https://example.com:99999/").is_err());
        assert!(check_url("https://example.com/{{ contact.id }}").is_err());
        // Loopback is for local tests: the outbound rule refuses it without its escape hatch.
        assert_eq!(check_url("http://127.0.0.1:8080/hook"), Ok(()));
        assert_eq!(check_url("https://localhost/hook"), Ok(()));
    }

    #[test]
    fn save_reads_pointers_and_reports_what_it_cannot() {
        let save = BTreeMap::from([
            ("tier".to_string(), "/data/tier".to_string()),
            ("nope".to_string(), "/missing".to_string()),
        ]);
        let (fields, missing) = saved_fields(&save, br#"{"data":{"tier":"gold"}}"#);
        assert_eq!(fields.get("tier"), Some(&Value::from("gold")));
        assert_eq!(missing.len(), 1, "{missing:?}");
        let (fields, missing) = saved_fields(&save, b"not json");
        assert!(fields.is_empty());
        assert_eq!(missing.len(), 1);
    }

    #[test]
    fn secret_names_map_to_variables() {
        assert_eq!(
            secret_var("orders-api"),
            "RELANCE_WEBHOOK_SECRET_ORDERS_API"
        );
    }
}
