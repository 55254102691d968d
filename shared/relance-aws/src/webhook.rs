//! The HTTP client of webhook calls (DESIGN §9), on the outbound rule of DESIGN §8: a URL the
//! rule refuses (not `https://`, an address literal or a name resolving to loopback, private,
//! link-local or unique-local addresses) is a permanent failure, checked before and while
//! connecting; a timeout or a connection failure is retryable. The answer's body is read up to
//! [`relance_core::webhook::ANSWER_CAP`] for `save` and never logged.
//!
//! Escape hatches for local tests (refused in a Lambda function): [`ALLOW_HTTP_VAR`] and
//! `RELANCE_OUTBOUND_ALLOW_LOOPBACK`. [`ALLOWED_HOSTS_VAR`] narrows the hosts webhooks reach.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use relance_core::webhook::{
    ANSWER_CAP, ATTEMPT_TIMEOUT_SECONDS, Answer, CallError, CallFuture, Transport,
};

use crate::config::ConfigError;
use crate::outbound::{self, OutboundPolicy};
use crate::webpush::{HttpClient, error_chain, http_client};

/// Set (`1`/`true`) to let webhooks call `http://` URLs: local tests only.
pub const ALLOW_HTTP_VAR: &str = "RELANCE_WEBHOOK_ALLOW_HTTP";
/// Optional allowlist of webhook hosts, comma-separated (`hooks.example.com`, `.example.com`).
pub const ALLOWED_HOSTS_VAR: &str = "RELANCE_WEBHOOK_ALLOWED_HOSTS";

/// Makes webhook calls over HTTP/1.1 and TLS, on the outbound rule.
#[derive(Clone)]
pub struct HttpTransport {
    client: HttpClient,
    policy: OutboundPolicy,
    timeout: Duration,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport")
            .field("policy", &self.policy)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// A client on `policy`, each attempt bounded by `timeout`.
    pub fn new(policy: OutboundPolicy, timeout: Duration) -> HttpTransport {
        HttpTransport {
            client: http_client(&policy),
            policy,
            timeout,
        }
    }

    /// The client from the environment (see the module's variables).
    pub fn from_env() -> Result<HttpTransport, ConfigError> {
        HttpTransport::from_lookup(|n| std::env::var(n).ok())
    }

    /// As [`HttpTransport::from_env`], with the settings read by `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<HttpTransport, ConfigError> {
        let allow_http = match get(ALLOW_HTTP_VAR).map(|v| v.trim().to_ascii_lowercase()) {
            None => false,
            Some(v) if v.is_empty() || ["0", "false", "no"].contains(&v.as_str()) => false,
            Some(v) if ["1", "true", "yes"].contains(&v.as_str()) => true,
            Some(v) => {
                return Err(ConfigError {
                    name: ALLOW_HTTP_VAR,
                    why: format!("\"{v}\" is not true or false"),
                });
            }
        };
        let policy = OutboundPolicy::from_lookup(&get, allow_http, ALLOWED_HOSTS_VAR)?;
        Ok(HttpTransport::new(
            policy,
            Duration::from_secs(ATTEMPT_TIMEOUT_SECONDS),
        ))
    }

    async fn send(&self, request: relance_core::webhook::Request) -> Result<Answer, CallError> {
        let uri: Uri = request
            .url
            .parse()
            .map_err(|e| CallError::Refused(format!("the URL does not parse: {e}")))?;
        self.policy
            .check_url(&uri)
            .map_err(|r| CallError::Refused(r.to_string()))?;
        let mut builder = Request::builder().method(request.method.as_str()).uri(uri);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let http_request = builder
            .body(Full::new(Bytes::from(request.body)))
            .map_err(|e| CallError::Refused(format!("the request is not valid HTTP: {e}")))?;
        let call = async {
            let response =
                self.client.request(http_request).await.map_err(
                    |e| match outbound::refusal_in(&e) {
                        Some(refused) => CallError::Refused(refused.to_string()),
                        None => CallError::Unreachable(error_chain(&e)),
                    },
                )?;
            let status = response.status().as_u16();
            // A body past the cap, or one that breaks off, leaves `save` nothing to read; the
            // status stands.
            let body = Limited::new(response.into_body(), ANSWER_CAP)
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            Ok(Answer { status, body })
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Unreachable(format!(
                "no answer within {} s",
                self.timeout.as_secs()
            ))),
        }
    }
}

impl Transport for HttpTransport {
    fn call(&self, request: relance_core::webhook::Request) -> CallFuture<'_> {
        Box::pin(self.send(request))
    }
}
