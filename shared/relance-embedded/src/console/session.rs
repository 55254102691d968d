//! Console sessions: a login trades the API token for a random session id kept in an
//! HttpOnly, SameSite=Strict cookie; each session has its own CSRF token that every form
//! posts back; failed logins are rate-limited. Sessions live in memory (a restart logs
//! everyone out) and never authenticate the `/v1` API.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use base64::Engine as _;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "relance_session";
/// The pre-login cookie: the login form's CSRF token (double submit), before any session.
pub const LOGIN_COOKIE: &str = "relance_login";
/// How long a session lasts from its login.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Failed logins allowed per [`FAILURE_WINDOW`] (all clients together): past it, every
/// login is refused with 429 until the window has moved on, so the token cannot be guessed
/// at speed.
pub const MAX_FAILURES: usize = 10;
/// The window [`MAX_FAILURES`] counts in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// The most sessions kept at once; the oldest goes first (only token holders make them).
const MAX_SESSIONS: usize = 1000;

/// No randomness from the operating system.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no randomness for a console session: {0}")]
pub struct NoRandomness(String);

/// 32 random bytes from the operating system, base64url.
pub fn random_token() -> Result<String, NoRandomness> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| NoRandomness(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Equal byte strings, compared without an early exit (a CSRF token or session id is never
/// revealed byte by byte through timing).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// One logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token its forms carry.
    pub csrf: String,
    expires: Instant,
}

/// The sessions of a console, and its failed logins.
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
    failures: Mutex<VecDeque<Instant>>,
}

impl Sessions {
    /// Starts a session: its id (the cookie's value) and the session.
    pub fn open(&self) -> Result<(String, Session), NoRandomness> {
        let id = random_token()?;
        let session = Session {
            csrf: random_token()?,
            expires: Instant::now() + SESSION_LIFETIME,
        };
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        live.retain(|_, s| s.expires > now);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            live.remove(&oldest);
        }
        live.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The live session with this id.
    pub fn get(&self, id: &str) -> Option<Session> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        // A map lookup hashes the whole id: no byte-by-byte comparison to time.
        live.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    /// Ends a session (logout).
    pub fn close(&self, id: &str) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.remove(id);
    }

    /// True when a login may be tried now (fewer than [`MAX_FAILURES`] failures in the
    /// window).
    pub fn may_try(&self) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > FAILURE_WINDOW)
        {
            failures.pop_front();
        }
        failures.len() < MAX_FAILURES
    }

    /// Counts a failed login.
    pub fn failed(&self) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.push_back(Instant::now());
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// True when the browser reached the server over https (a TLS proxy in front says so with
/// `X-Forwarded-Proto` or `Forwarded`), or by a name that is not loopback: the cookie is
/// then `Secure`, so it never travels in clear. Only a loopback `Host` over plain http (the
/// default `relance run`) gets a cookie without `Secure`, which browsers would otherwise
/// refuse to send back there.
pub fn secure(headers: &HeaderMap) -> bool {
    let forwarded_https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
        || headers
            .get(header::FORWARDED)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("proto=https"));
    if forwarded_https {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    !relance_core::net::is_loopback_host(host_name(host))
}

/// `host:port` → `host`; `[::1]:8787` → `::1`.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Path=/, `Secure` when `secure`;
/// `max_age` in seconds (0 deletes it).
pub fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn sessions_open_find_and_close() {
        let sessions = Sessions::default();
        let (id, s) = sessions.open().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sessions.get(&id).map(|x| x.csrf), Some(s.csrf.clone()));
        assert!(sessions.get("not-a-session").is_none());
        sessions.close(&id);
        assert!(sessions.get(&id).is_none());
        let (other, _) = sessions.open().unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(id, other);
        assert!(id.len() >= 43 && s.csrf.len() >= 43);
    }

    #[test]
    fn failures_past_the_limit_refuse_logins() {
        let sessions = Sessions::default();
        for _ in 0..MAX_FAILURES {
            assert!(sessions.may_try());
            sessions.failed();
        }
        assert!(!sessions.may_try());
    }

    #[test]
    fn same_compares_whole_strings() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(!same("", "a"));
    }

    #[test]
    fn cookies_are_read_from_every_header() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; relance_session=xyz"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn secure_unless_loopback_over_http() {
        let with = |host: &str, proto: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(
                header::HOST,
                HeaderValue::from_str(host).unwrap_or_else(|e| panic!("{e}")),
            );
            if let Some(p) = proto {
                h.insert(
                    "x-forwarded-proto",
                    HeaderValue::from_str(p).unwrap_or_else(|e| panic!("{e}")),
                );
            }
            secure(&h)
        };
        assert!(!with("127.0.0.1:8787", None));
        assert!(!with("localhost:8787", None));
        assert!(!with("[::1]:8787", None));
        assert!(with("127.0.0.1:8787", Some("https")));
        assert!(with("relance.example.com", None));
        assert!(with("10.0.0.5:8787", None));
        let c = set_cookie(SESSION_COOKIE, "v", 60, true);
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
            "Secure",
            "Max-Age=60",
        ] {
            assert!(c.contains(part), "{c}");
        }
    }
}
