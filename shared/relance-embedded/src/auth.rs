//! Who may drive the HTTP API (DESIGN §8): a bearer token on every route but `/v1/health`,
//! the signed `/unsubscribe` and the signed tracking URLs (`/t/...`), the content types each
//! write takes (which closes cross-site "simple" form posts), and the `Host` names the server
//! answers to (which closes DNS rebinding). The token itself is never stored: only its SHA-256.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;
use sha2::{Digest, Sha256};

/// The setting (in the store's settings) that keeps the SHA-256 of a generated token, hex.
pub const SETTING_API_TOKEN_SHA256: &str = "api_token_sha256";

/// The shortest token accepted from `RELANCE_API_TOKEN`: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 24;

/// A token that is too short to be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("RELANCE_API_TOKEN must be at least {MIN_TOKEN_LEN} characters (it is {0})")]
pub struct WeakToken(pub usize);

/// The SHA-256 of a token, as kept.
pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Hex of a digest (how the setting stores it).
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a hex digest back; None when it is not 64 hex digits.
pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A fresh random token: `rl_` and 32 bytes from the operating system, base64url.
pub fn generate_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(format!(
        "rl_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// Checks a token given in the environment.
pub fn check_token_strength(token: &str) -> Result<(), WeakToken> {
    let len = token.chars().count();
    if len < MIN_TOKEN_LEN {
        return Err(WeakToken(len));
    }
    Ok(())
}

/// What the API checks on each request.
#[derive(Debug, Clone)]
pub struct ApiSecurity {
    token_sha256: [u8; 32],
    allowed_hosts: Vec<String>,
}

impl ApiSecurity {
    /// Requests must carry the token whose SHA-256 is `token_sha256`; `Host` must be an IP
    /// literal, `localhost`, or one of `allowed_hosts` (names, with or without a port).
    pub fn new(token_sha256: [u8; 32], allowed_hosts: Vec<String>) -> Self {
        let allowed_hosts = allowed_hosts
            .into_iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        ApiSecurity {
            token_sha256,
            allowed_hosts,
        }
    }

    /// The same, for a token given in clear (tests, `RELANCE_API_TOKEN`).
    pub fn with_token(token: &str, allowed_hosts: Vec<String>) -> Self {
        Self::new(token_sha256(token), allowed_hosts)
    }

    /// True when `token` is the API token (compared in constant time).
    pub fn accepts(&self, token: &str) -> bool {
        let given = token_sha256(token);
        // Constant time: no early exit on the first differing byte.
        given
            .iter()
            .zip(self.token_sha256.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// True when a request naming this `Host` may be answered. An IP literal or `localhost`
    /// cannot be a rebinding attack (the attacker controls a domain name, not those), so
    /// only other names must be configured.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        if host.is_empty() {
            return false;
        }
        let name = strip_port(&host);
        if name == "localhost" || name.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
            return true;
        }
        self.allowed_hosts.iter().any(|allowed| {
            *allowed == host || (strip_port(allowed) == name && !allowed.contains(':'))
        })
    }
}

/// `example.com:8787` → `example.com`; `[::1]:8787` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if let Some(end) = host.find(']') {
        return &host[..=end];
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Routes anyone may call: the health probe, the signed one-click unsubscribe (mail
/// clients post it without any token; the link's own signature protects it) and the signed
/// open pixel and click redirects (`/t/o/{token}`, `/t/c/{token}`: a forged token is a 404).
fn is_open(path: &str) -> bool {
    path == "/v1/health"
        || path == "/unsubscribe"
        || path.starts_with("/t/o/")
        || path.starts_with("/t/c/")
}

/// The content types a write to `path` takes.
/// The request's media type: its `Content-Type` without parameters, lowercased
/// (`application/json` for `Application/JSON; charset=utf-8`); none without the header.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?;
    let essence = value.to_str().unwrap_or("").split(';').next().unwrap_or("");
    Some(essence.trim().to_ascii_lowercase())
}

/// True when the request is an HTML form post (`application/x-www-form-urlencoded`).
pub(crate) fn is_form(headers: &HeaderMap) -> bool {
    media_type(headers).as_deref() == Some("application/x-www-form-urlencoded")
}

fn accepted_types(path: &str) -> &'static [&'static str] {
    match path {
        "/v1/scenarios" | "/v1/scenarios/validate" => &[
            "application/json",
            "application/yaml",
            "application/x-yaml",
            "text/yaml",
            "text/x-yaml",
        ],
        "/v1/contacts/import" => &[
            "text/csv",
            "application/json",
            "application/x-ndjson",
            "application/jsonl",
            "application/json-lines",
        ],
        _ => &["application/json"],
    }
}

fn error(status: StatusCode, message: String, field: Option<&str>) -> Response {
    let mut error = json!({"message": message});
    if let Some(f) = field {
        error["field"] = json!(f);
    }
    (status, axum::Json(json!({"error": error}))).into_response()
}

fn declares_body(headers: &HeaderMap) -> bool {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    headers.contains_key(header::TRANSFER_ENCODING) || length.is_some_and(|n| n > 0)
}

/// Checks `Host`, the token and the content type, in that order; answers 400, 401 or 415
/// with a JSON error, or hands the request on.
pub async fn guard(
    State(security): State<Arc<ApiSecurity>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    // A request without `Host` (HTTP/1.0, in-process calls) names no rebinding domain.
    if let Some(host) = headers.get(header::HOST) {
        let host = host.to_str().unwrap_or("");
        if !security.host_allowed(host) {
            tracing::warn!(
                host,
                "request for a host name this server is not configured for"
            );
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "Host \"{host}\" is not a name this server answers to: add it with --allowed-host or RELANCE_ALLOWED_HOSTS"
                ),
                Some("Host"),
            );
        }
    }
    let path = request.uri().path().to_string();
    // The console's pages check their own session cookie (and CSRF token on every form);
    // the cookie is never read here, so it cannot authenticate the API.
    if is_open(&path) || crate::console::is_console_path(&path) {
        return next.run(request).await;
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match token {
        Some(t) if security.accepts(t) => {}
        given => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                if given.is_some() {
                    "the bearer token is not this server's API token".to_string()
                } else {
                    "this route needs \"Authorization: Bearer <token>\" (the API token: RELANCE_API_TOKEN, or the one printed at first start)".to_string()
                },
                Some("Authorization"),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"relance\""),
            );
            return response;
        }
    }
    let writes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if writes {
        let accepted = accepted_types(&path);
        match media_type(headers) {
            Some(essence) => {
                if !accepted.contains(&essence.as_str()) {
                    return error(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        format!("{path} takes {}, not \"{essence}\"", accepted.join(", ")),
                        Some("Content-Type"),
                    );
                }
            }
            // A write with no body (activate, launch for the audience) needs no type.
            None if !declares_body(headers) => {}
            None => {
                return error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("{path} needs a Content-Type: {}", accepted.join(", ")),
                    Some("Content-Type"),
                );
            }
        }
    }
    next.run(request).await
}

/// Turns the plain-text rejections of the HTTP layer (a body over the limit, a malformed
/// request) into the API's JSON error shape, so every 4xx/5xx reads the same.
pub async fn json_errors(request: Request, next: Next) -> Response {
    // The console answers people, in HTML (or the HTTP layer's plain text), not JSON.
    let console = crate::console::is_console_path(request.uri().path());
    let response = next.run(request).await;
    if console {
        return response;
    }
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_text = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !is_text {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!("the body is too large ({text})"),
        _ if text.is_empty() => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string(),
        _ => text,
    };
    let mut out = error(parts.status, message, Some("body"));
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_digest() {
        let s = ApiSecurity::with_token("correct horse battery staple", vec![]);
        assert!(s.accepts("correct horse battery staple"));
        assert!(!s.accepts("correct horse battery stapl"));
        assert!(!s.accepts(""));
    }

    #[test]
    fn hex_round_trips() {
        let d = token_sha256("x");
        assert_eq!(from_hex(&to_hex(&d)), Some(d));
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn generated_tokens_differ_and_are_long() {
        let a = generate_token().unwrap_or_else(|e| panic!("{e}"));
        let b = generate_token().unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a, b);
        assert!(a.len() >= MIN_TOKEN_LEN && a.starts_with("rl_"));
        assert!(check_token_strength("short").is_err());
    }

    #[test]
    fn hosts_ip_literals_localhost_and_configured_names() {
        let s = ApiSecurity::new([0; 32], vec!["relance.example.com".into()]);
        for ok in [
            "127.0.0.1:8787",
            "localhost:8787",
            "LOCALHOST",
            "[::1]:8787",
            "10.0.0.5",
            "relance.example.com",
            "relance.example.com:443",
        ] {
            assert!(s.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8787",
            "relance.example.com.evil",
            "",
        ] {
            assert!(!s.host_allowed(bad), "{bad}");
        }
        let with_port = ApiSecurity::new([0; 32], vec!["api.example:8787".into()]);
        assert!(with_port.host_allowed("api.example:8787"));
        assert!(!with_port.host_allowed("api.example:9999"));
    }
}
