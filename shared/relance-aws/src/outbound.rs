//! The outbound rule of DESIGN §8 for HTTP calls to addresses taken from data (web push
//! subscription endpoints today, webhook URLs next): `https://` only, and never a loopback,
//! private, link-local, unique-local, CGNAT, multicast or otherwise special address.
//!
//! The check holds on the address actually connected, not only on the URL: the HTTP client
//! is built on [`OutboundPolicy::connector`], whose resolver drops every refused address
//! before the connector sees it (so a name that resolves to `127.0.0.1`, or re-resolves to it
//! between a check and the connection — DNS rebinding — is never connected to), whose URL
//! check refuses IP literals before any socket is opened (hyper connects to a literal without
//! asking the resolver), and which checks the peer address of the connected socket once more.
//! A refusal is a [`Refused`] error somewhere in the client error's source chain
//! ([`refusal_in`]): a permanent failure, never retried.
//!
//! Escape hatches, for local tests and development only (refused where
//! `AWS_LAMBDA_FUNCTION_NAME` is set, i.e. in a deployed function): `allow_http` and
//! `allow_loopback` (loopback only: private and link-local addresses stay refused).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::ConfigError;

/// Set (`1`/`true`) to let outbound calls reach loopback addresses: local tests and
/// development only (a stub push service on 127.0.0.1). Refused in a Lambda function.
pub const ALLOW_LOOPBACK_VAR: &str = "RELANCE_OUTBOUND_ALLOW_LOOPBACK";

/// Optional allowlist of push service hosts, comma-separated: `fcm.googleapis.com` matches
/// that host and its subdomains, `.push.apple.com` only subdomains.
pub const PUSH_ALLOWED_HOSTS_VAR: &str = "RELANCE_PUSH_ALLOWED_HOSTS";

/// Set in every Lambda function's environment: where the escape hatches are refused.
const LAMBDA_VAR: &str = "AWS_LAMBDA_FUNCTION_NAME";

/// An outbound call refused by the policy; the text says why (never the response of anyone).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by the outbound policy: {0}")]
pub struct Refused(pub String);

/// What outbound calls to data-provided URLs may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    /// Accept `http://` URLs (local tests only).
    pub allow_http: bool,
    /// Accept loopback addresses (local tests only).
    pub allow_loopback: bool,
    /// When not empty, the only hosts allowed (see [`PUSH_ALLOWED_HOSTS_VAR`]), lowercase.
    pub allowed_hosts: Vec<String>,
}

pub use relance_core::net::special_address;

fn flag(get: &impl Fn(&str) -> Option<String>, name: &'static str) -> Result<bool, ConfigError> {
    match get(name).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if v.is_empty() || ["0", "false", "no"].contains(&v.as_str()) => Ok(false),
        Some(v) if ["1", "true", "yes"].contains(&v.as_str()) => Ok(true),
        Some(v) => Err(ConfigError {
            name,
            why: format!("\"{v}\" is not true or false"),
        }),
    }
}

impl OutboundPolicy {
    /// The strict policy: https only, public addresses only, any host.
    pub fn strict() -> OutboundPolicy {
        OutboundPolicy::default()
    }

    /// The policy from the environment: [`ALLOW_LOOPBACK_VAR`], the allowlist in
    /// `allowed_hosts_var`, and `allow_http` as the caller read it. The escape hatches are a
    /// configuration error in a Lambda function.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        allow_http: bool,
        allowed_hosts_var: &'static str,
    ) -> Result<OutboundPolicy, ConfigError> {
        let allow_loopback = flag(&get, ALLOW_LOOPBACK_VAR)?;
        let allowed_hosts = match get(allowed_hosts_var) {
            Some(list) => parse_hosts(&list).map_err(|why| ConfigError {
                name: allowed_hosts_var,
                why,
            })?,
            None => Vec::new(),
        };
        let policy = OutboundPolicy {
            allow_http,
            allow_loopback,
            allowed_hosts,
        };
        policy.refuse_escape_hatches_in_lambda(get(LAMBDA_VAR).is_some())?;
        Ok(policy)
    }

    /// Refuses the test-only escape hatches in a deployed function.
    pub fn refuse_escape_hatches_in_lambda(&self, in_lambda: bool) -> Result<(), ConfigError> {
        if !in_lambda {
            return Ok(());
        }
        if self.allow_loopback {
            return Err(ConfigError {
                name: ALLOW_LOOPBACK_VAR,
                why: "is for local tests only and refused in a Lambda function".into(),
            });
        }
        if self.allow_http {
            return Err(ConfigError {
                name: "RELANCE_WEB_PUSH_ALLOW_HTTP",
                why: "is for local tests only and refused in a Lambda function".into(),
            });
        }
        Ok(())
    }

    /// Whether an address may be connected to.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        let ip = match ip {
            // Judge a mapped address as the IPv4 one it is.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match special_address(ip) {
            Some(_) if self.allow_loopback && ip.is_loopback() => Ok(()),
            Some(why) => Err(Refused(format!("{ip} is {why}"))),
            None => Ok(()),
        }
    }

    /// Checks a URL before any connection: the scheme, the allowlist, and the address when
    /// the host is an IP literal. A host name is checked again on each resolved address.
    pub fn check_url(&self, uri: &Uri) -> Result<(), Refused> {
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if self.allow_http => {}
            Some(other) => {
                return Err(Refused(format!(
                    "{other}:// is refused: only https:// URLs are called"
                )));
            }
            None => return Err(Refused("the URL has no scheme".into())),
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Refused("the URL has no host".into()))?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            self.check_ip(ip)?;
        }
        let name = bare.trim_end_matches('.').to_ascii_lowercase();
        if !self.allowed_hosts.is_empty()
            && !self.allowed_hosts.iter().any(|a| host_matches(&name, a))
        {
            return Err(Refused(format!(
                "{name} is not among the allowed hosts ({})",
                self.allowed_hosts.join(", ")
            )));
        }
        Ok(())
    }

    /// The TCP connector that enforces the policy (wrap it with TLS).
    pub fn connector(&self) -> GuardedConnector {
        let policy = Arc::new(self.clone());
        let mut inner = HttpConnector::new_with_resolver(GuardedResolver {
            policy: policy.clone(),
        });
        // The TLS layer in front of it decides the scheme; this one only makes TCP.
        inner.enforce_http(false);
        GuardedConnector { inner, policy }
    }
}

/// `fcm.googleapis.com` matches it and its subdomains; `.push.apple.com` subdomains only.
fn host_matches(host: &str, allowed: &str) -> bool {
    match allowed.strip_prefix('.') {
        Some(_) => host.ends_with(allowed),
        None => host == allowed || host.ends_with(&format!(".{allowed}")),
    }
}

fn parse_hosts(list: &str) -> Result<Vec<String>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| {
            let h = h.trim_end_matches('.').to_ascii_lowercase();
            let body = h.strip_prefix('.').unwrap_or(&h);
            if body.is_empty()
                || !body
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                return Err(format!("\"{h}\" is not a host name or a .suffix"));
            }
            Ok(h)
        })
        .collect()
}

/// Whether a client error (or one of its causes) is a refusal by the policy.
pub fn refusal_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Refused>() {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// Resolves with the system resolver and keeps only the addresses the policy allows.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<OutboundPolicy>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = Vec::new();
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| match policy.check_ip(a.ip()) {
                    Ok(()) => true,
                    Err(Refused(why)) => {
                        refused.push(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = if refused.is_empty() {
                    format!("{host} does not resolve")
                } else {
                    format!(
                        "{host} resolves only to refused addresses: {}",
                        refused.join("; ")
                    )
                };
                return Err(Box::new(Refused(why)) as BoxError);
            }
            Ok(allowed.into_iter())
        })
    }
}

/// The TCP connector under TLS: refuses an IP-literal URL the policy refuses before any
/// socket is opened, resolves names through [`GuardedResolver`], and checks the connected
/// peer address once more.
#[derive(Debug, Clone)]
pub struct GuardedConnector {
    inner: HttpConnector<GuardedResolver>,
    policy: Arc<OutboundPolicy>,
}

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut inner = self.inner.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            policy.check_url(&uri)?;
            let stream = inner.call(uri).await?;
            let peer = stream.inner().peer_addr()?;
            policy.check_ip(peer.ip())?;
            Ok(stream)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(ip: &str) -> bool {
        let ip: IpAddr = ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
        OutboundPolicy::strict().check_ip(ip).is_err()
    }

    #[test]
    fn hostile_special_addresses_are_refused_in_every_form() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
        ] {
            assert!(refused(ip), "{ip} was allowed");
        }
        for ip in [
            "142.250.74.10",
            "172.32.0.1",
            "100.128.0.1",
            "2a00:1450:4007:80a::200a",
            "::ffff:142.250.74.10",
            "64:ff9b::8efa:4a0a",
        ] {
            assert!(!refused(ip), "{ip} was refused");
        }
    }

    #[test]
    fn loopback_is_allowed_only_when_asked_and_nothing_else_is() {
        let dev = OutboundPolicy {
            allow_loopback: true,
            ..OutboundPolicy::default()
        };
        for ip in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            let ip: IpAddr = ip.parse().unwrap_or_else(|e| panic!("{e}"));
            assert!(dev.check_ip(ip).is_ok(), "{ip}");
        }
        for ip in ["169.254.169.254", "10.0.0.1", "fe80::1"] {
            let ip: IpAddr = ip.parse().unwrap_or_else(|e| panic!("{e}"));
            assert!(dev.check_ip(ip).is_err(), "{ip}");
        }
    }

    #[test]
    fn urls_are_https_only_and_ip_literals_checked_before_connecting() {
        let strict = OutboundPolicy::strict();
        let check = |p: &OutboundPolicy, u: &str| {
            p.check_url(&u.parse::<Uri>().unwrap_or_else(|e| panic!("{u}: {e}")))
        };
        assert!(check(&strict, "https://fcm.googleapis.com/fcm/send/x").is_ok());
        for bad in [
            "http://example.com/x",
            "ftp://example.com/x",
            "https://127.0.0.1:8443/admin",
            "https://169.254.169.254/latest",
            "https://[::1]/",
            "https://[::ffff:7f00:1]/",
        ] {
            assert!(check(&strict, bad).is_err(), "{bad}");
        }
        let listed = OutboundPolicy {
            allowed_hosts: parse_hosts("fcm.googleapis.com, .push.apple.com,")
                .unwrap_or_else(|e| panic!("{e}")),
            ..OutboundPolicy::default()
        };
        for ok in [
            "https://fcm.googleapis.com/x",
            "https://FCM.googleapis.com./x",
            "https://web.push.apple.com/x",
        ] {
            assert!(check(&listed, ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://push.apple.com/x",
            "https://evilfcm.googleapis.com.attacker.io/x",
            "https://attacker.io/x",
            "https://notfcm.googleapis.com/x",
        ] {
            let e = check(&listed, bad).err();
            assert!(e.is_some(), "{bad}");
        }
    }

    #[test]
    fn escape_hatches_are_refused_in_a_lambda_function() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let dev = OutboundPolicy::from_lookup(
            env(&[(ALLOW_LOOPBACK_VAR, "1")]),
            false,
            PUSH_ALLOWED_HOSTS_VAR,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(dev.allow_loopback);
        let e = OutboundPolicy::from_lookup(
            env(&[(ALLOW_LOOPBACK_VAR, "1"), (LAMBDA_VAR, "relance-sender")]),
            false,
            PUSH_ALLOWED_HOSTS_VAR,
        )
        .err()
        .unwrap_or_else(|| panic!("loopback allowed in Lambda"));
        assert_eq!(e.name, ALLOW_LOOPBACK_VAR);
        let e = OutboundPolicy::from_lookup(
            env(&[(PUSH_ALLOWED_HOSTS_VAR, "fcm.googleapis.com, bad host")]),
            false,
            PUSH_ALLOWED_HOSTS_VAR,
        )
        .err()
        .unwrap_or_else(|| panic!("a bad allowlist accepted"));
        assert_eq!(e.name, PUSH_ALLOWED_HOSTS_VAR);
    }
}
