//! One-click unsubscribe (RFC 8058): the signed token behind a `List-Unsubscribe` link. The
//! token names the contact, the communication type and the send it came with, and carries an
//! HMAC-SHA256 over them, so nobody can unsubscribe someone else by editing a link.

use serde::{Deserialize, Serialize};

use crate::signed::{self, TokenFault};

/// What an unsubscribe token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsubscribeClaim {
    /// The contact id.
    #[serde(rename = "c")]
    pub contact: String,
    /// The communication type to unsubscribe from.
    #[serde(rename = "t")]
    pub communication_type: String,
    /// The scenario of the send.
    #[serde(rename = "s")]
    pub scenario: String,
    /// The send step.
    #[serde(rename = "p")]
    pub step: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not two base64url parts joined by a dot, or not the claim's JSON.
    #[error("malformed unsubscribe token")]
    Malformed,
    /// The signature does not match: forged or altered.
    #[error("the unsubscribe token's signature does not match")]
    BadSignature,
    /// No signing secret configured.
    #[error("no unsubscribe secret is configured")]
    NoSecret,
}

impl From<TokenFault> for TokenError {
    fn from(fault: TokenFault) -> TokenError {
        match fault {
            TokenFault::Malformed => TokenError::Malformed,
            TokenFault::BadSignature => TokenError::BadSignature,
            TokenFault::NoSecret => TokenError::NoSecret,
        }
    }
}

impl UnsubscribeClaim {
    /// `payload.signature`, both base64url without padding.
    pub fn sign(&self, secret: &[u8]) -> Result<String, TokenError> {
        Ok(signed::sign(self, secret)?)
    }

    /// Checks the signature (in constant time) and reads the claim.
    pub fn verify(token: &str, secret: &[u8]) -> Result<UnsubscribeClaim, TokenError> {
        Ok(signed::verify(token, secret)?)
    }

    /// The one-click link: `base` (the unsubscribe endpoint) with `?token=` appended.
    pub fn link(&self, base: &str, secret: &[u8]) -> Result<String, TokenError> {
        let sep = if base.contains('?') { '&' } else { '?' };
        Ok(format!("{base}{sep}token={}", self.sign(secret)?))
    }
}

/// Where one-click links point and how they are signed (the adapters read it from
/// `RELANCE_UNSUBSCRIBE_URL`, `RELANCE_UNSUBSCRIBE_SECRET` and `RELANCE_UNSUBSCRIBE_MAILTO`).
#[derive(Clone, PartialEq, Eq)]
pub struct UnsubscribeLinks {
    /// The public unsubscribe endpoint (the embedded API's `/unsubscribe`, or the
    /// unsubscribe function's URL).
    pub base_url: String,
    /// The HMAC key.
    pub secret: Vec<u8>,
    /// An address for mail clients that only do `mailto:` unsubscribes.
    pub mailto: Option<String>,
}

impl std::fmt::Debug for UnsubscribeLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsubscribeLinks")
            .field("base_url", &self.base_url)
            .field("secret", &"<hidden>")
            .field("mailto", &self.mailto)
            .finish()
    }
}

impl UnsubscribeLinks {
    /// The headers for an email send of `scenario`; none for other channels.
    pub fn headers_for(&self, scenario: &str, send: &crate::engine::Send) -> Vec<(String, String)> {
        if send.channel != crate::scenario::Channel::Email {
            return Vec::new();
        }
        let claim = UnsubscribeClaim {
            contact: send.contact.clone(),
            communication_type: send.communication_type.clone(),
            scenario: scenario.to_string(),
            step: send.step.clone(),
        };
        match claim.link(&self.base_url, &self.secret) {
            Ok(link) => list_unsubscribe_headers(&link, self.mailto.as_deref()),
            Err(_) => Vec::new(),
        }
    }
}

/// Checks the token of a request to the unsubscribe endpoint (the embedded API's, or the
/// unsubscribe function's): the claim, or the HTTP status and why — 400 when missing or
/// damaged, 403 when forged, 404 when links are not configured.
pub fn check_request(
    token: Option<&str>,
    secret: Option<&[u8]>,
) -> Result<UnsubscribeClaim, (u16, &'static str)> {
    let secret = secret.ok_or((404, "one-click unsubscribe is not configured"))?;
    let token = token.ok_or((400, "the link has no token"))?;
    UnsubscribeClaim::verify(token, secret).map_err(|e| match e {
        TokenError::BadSignature => (403, "this unsubscribe link is not valid"),
        TokenError::Malformed => (400, "this unsubscribe link is damaged"),
        TokenError::NoSecret => (404, "one-click unsubscribe is not configured"),
    })
}

/// The shortest unsubscribe key accepted (bytes): the links are HMAC-SHA256 tokens that live
/// for years in inboxes, so the key has the hash's strength (RFC 2104 §3).
pub const MIN_SECRET_BYTES: usize = 32;

/// Checks an unsubscribe key: at least [`MIN_SECRET_BYTES`] bytes (the error says why, for
/// the caller to prefix with the setting it came from). Every host refuses a shorter one at
/// start.
pub fn check_secret(secret: &[u8]) -> Result<(), String> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the unsubscribe key is {} bytes; it must be at least {MIN_SECRET_BYTES} (generate one with `openssl rand -base64 48`)",
            secret.len()
        ));
    }
    Ok(())
}

/// The endpoint's small HTML page: a message, and for a GET the one-click form that POSTs
/// the token back (RFC 8058: a GET, which link scanners do, never unsubscribes by itself).
pub fn page_html(text: &str, form_token: Option<&str>) -> String {
    let escape = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let form = form_token
        .map(|t| {
            format!(
                "<form method=\"post\" action=\"?token={}\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\"><button>Unsubscribe</button></form>",
                escape(t)
            )
        })
        .unwrap_or_default();
    format!(
        "<!doctype html><meta charset=\"utf-8\"><title>Unsubscribe</title><p>{}</p>{form}",
        escape(text)
    )
}

/// The confirmation question a GET shows.
pub fn confirm_text(claim: &UnsubscribeClaim) -> String {
    format!("Stop receiving \"{}\" messages?", claim.communication_type)
}

/// What a POST answers once done.
pub fn done_text(communication_type: &str) -> String {
    format!("You are unsubscribed from \"{communication_type}\" messages.")
}

/// The RFC 8058 headers of an email: `List-Unsubscribe` (the HTTPS link, and a mailto when
/// one is configured) and `List-Unsubscribe-Post`.
pub fn list_unsubscribe_headers(link: &str, mailto: Option<&str>) -> Vec<(String, String)> {
    let mut value = format!("<{link}>");
    if let Some(m) = mailto {
        value.push_str(&format!(", <mailto:{m}?subject=unsubscribe>"));
    }
    vec![
        ("List-Unsubscribe".to_string(), value),
        (
            "List-Unsubscribe-Post".to_string(),
            "List-Unsubscribe=One-Click".to_string(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> UnsubscribeClaim {
        UnsubscribeClaim {
            contact: "c-42".into(),
            communication_type: "newsletter".into(),
            scenario: "welcome".into(),
            step: "first".into(),
        }
    }

    #[test]
    fn a_signed_token_verifies_and_reads_back() {
        let token = claim().sign(b"secret").unwrap_or_default();
        assert_eq!(UnsubscribeClaim::verify(&token, b"secret"), Ok(claim()));
        let link = claim()
            .link("https://u.example.com/unsubscribe", b"secret")
            .unwrap_or_default();
        assert!(link.starts_with("https://u.example.com/unsubscribe?token="));
    }

    #[test]
    fn forged_altered_and_malformed_tokens_are_refused() {
        let token = claim().sign(b"secret").unwrap_or_default();
        assert_eq!(
            UnsubscribeClaim::verify(&token, b"other secret"),
            Err(TokenError::BadSignature)
        );
        // Someone else's id with the original signature.
        let mut other = claim();
        other.contact = "c-43".into();
        let forged_payload = other.sign(b"guess").unwrap_or_default();
        let (payload, _) = forged_payload.split_once('.').unwrap_or_default();
        let (_, signature) = token.split_once('.').unwrap_or_default();
        assert_eq!(
            UnsubscribeClaim::verify(&format!("{payload}.{signature}"), b"secret"),
            Err(TokenError::BadSignature)
        );
        for bad in ["", "abc", "a.b", "!!.??"] {
            assert!(UnsubscribeClaim::verify(bad, b"secret").is_err(), "{bad}");
        }
        assert_eq!(claim().sign(b""), Err(TokenError::NoSecret));
    }

    #[test]
    fn hostile_short_unsubscribe_key_is_refused() {
        let refused = check_secret(b"secret");
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("6 bytes") && e.contains("at least 32")),
            "{refused:?}"
        );
        assert!(check_secret(&[b'x'; MIN_SECRET_BYTES - 1]).is_err());
        assert_eq!(check_secret(&[b'x'; MIN_SECRET_BYTES]), Ok(()));
    }

    #[test]
    fn headers_follow_rfc_8058() {
        let h = list_unsubscribe_headers("https://u/x?token=t", Some("unsub@example.com"));
        assert_eq!(
            h[0].1,
            "<https://u/x?token=t>, <mailto:unsub@example.com?subject=unsubscribe>"
        );
        assert_eq!(h[1].1, "List-Unsubscribe=One-Click");
    }
}
