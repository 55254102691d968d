//! Open and click tracking for senders without a provider that reports them (`relance run`):
//! the signed open pixel and click redirects, and the rewriting of an email's HTML to use them.
//! Pure: the embedded API serves the URLs, the delivery worker calls [`TrackingLinks::instrument`].
//!
//! A token is `payload.signature` (base64url, no padding), the payload the claim's JSON and the
//! signature its HMAC-SHA256, checked in constant time, as for unsubscribe links: nobody can
//! forge an open, edit a click's target (no open redirect), or enumerate other contacts' links.

use hmac::Mac as _;
use serde::{Deserialize, Serialize};

use crate::engine::Send;
use crate::scenario::Channel;
use crate::signed::{self, TokenFault};

/// Which tracking URL a token belongs to (a pixel token never opens a redirect, and back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrackKind {
    /// The open pixel.
    #[serde(rename = "o")]
    Open,
    /// A click redirect.
    #[serde(rename = "c")]
    Click,
}

/// What a tracking token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingClaim {
    /// Open or click.
    #[serde(rename = "k")]
    pub kind: TrackKind,
    /// The contact id.
    #[serde(rename = "c")]
    pub contact: String,
    /// The scenario of the send.
    #[serde(rename = "s")]
    pub scenario: String,
    /// The send step.
    #[serde(rename = "p")]
    pub step: String,
    /// For clicks: the link's own URL (where the redirect goes; what `link:` conditions match).
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// For clicks: the link's tags from `ses:tags` (what `link_attribute:` conditions match).
    #[serde(rename = "g", default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// Why a tracking token was refused. The HTTP routes answer every case the same (404), so
/// a caller never learns which part failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackingError {
    /// Not two base64url parts joined by a dot, or not a claim's JSON.
    #[error("malformed tracking token")]
    Malformed,
    /// The signature does not match: forged or altered.
    #[error("the tracking token's signature does not match")]
    BadSignature,
    /// A valid token of the other kind (an open token on the click route, or back), or a
    /// click without an http(s) target.
    #[error("the tracking token is not for this route")]
    WrongKind,
    /// No signing key configured.
    #[error("no tracking key is configured")]
    NoSecret,
}

impl From<TokenFault> for TrackingError {
    fn from(fault: TokenFault) -> TrackingError {
        match fault {
            TokenFault::Malformed => TrackingError::Malformed,
            TokenFault::BadSignature => TrackingError::BadSignature,
            TokenFault::NoSecret => TrackingError::NoSecret,
        }
    }
}

impl TrackingClaim {
    /// `payload.signature`, both base64url without padding.
    pub fn sign(&self, secret: &[u8]) -> Result<String, TrackingError> {
        Ok(signed::sign(self, secret)?)
    }

    /// Checks the signature (in constant time), then reads the claim.
    pub fn verify(token: &str, secret: &[u8]) -> Result<TrackingClaim, TrackingError> {
        Ok(signed::verify(token, secret)?)
    }
}

/// The label the tracking key is derived under from the unsubscribe key, when no key of its
/// own is configured: the two kinds of token then never share a key.
pub const DERIVATION_LABEL: &[u8] = b"relance tracking v1";

/// The tracking key derived from the unsubscribe key: HMAC-SHA256(unsubscribe key,
/// [`DERIVATION_LABEL`]). None for an empty key.
pub fn derive_secret(unsubscribe_secret: &[u8]) -> Option<Vec<u8>> {
    let m = signed::hmac(unsubscribe_secret, DERIVATION_LABEL).ok()?;
    Some(m.finalize().into_bytes().to_vec())
}

/// A transparent 1x1 GIF (the open pixel's body).
pub const PIXEL_GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// Where tracking URLs point and how they are signed (`relance run` reads them from
/// `RELANCE_PUBLIC_URL` and `RELANCE_TRACKING_SECRET`).
#[derive(Clone, PartialEq, Eq)]
pub struct TrackingLinks {
    /// The public base URL of `relance run` (no trailing slash needed).
    pub base_url: String,
    /// The HMAC key.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for TrackingLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackingLinks")
            .field("base_url", &self.base_url)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// A link of an email found by [`anchors`]: where its `href` value sits and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The byte range of the `href` value in the HTML, quotes included.
    pub value: std::ops::Range<usize>,
    /// The `href` value with its character references decoded and its ends trimmed.
    pub href: String,
    /// The tags of an `ses:tags="name:value;..."` attribute, as SES reports them: each
    /// `name:value`, then `name`.
    pub tags: Vec<String>,
    /// The link carries `ses:no-track`.
    pub no_track: bool,
}

impl TrackingLinks {
    fn base(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }

    /// `{base}/t/o/{token}`: the open pixel of one send.
    pub fn open_url(
        &self,
        contact: &str,
        scenario: &str,
        step: &str,
    ) -> Result<String, TrackingError> {
        let claim = TrackingClaim {
            kind: TrackKind::Open,
            contact: contact.to_string(),
            scenario: scenario.to_string(),
            step: step.to_string(),
            url: None,
            tags: Vec::new(),
        };
        Ok(format!("{}/t/o/{}", self.base(), claim.sign(&self.secret)?))
    }

    /// `{base}/t/c/{token}`: the redirect to `url` for one send's link.
    pub fn click_url(
        &self,
        contact: &str,
        scenario: &str,
        step: &str,
        url: &str,
        tags: &[String],
    ) -> Result<String, TrackingError> {
        let claim = TrackingClaim {
            kind: TrackKind::Click,
            contact: contact.to_string(),
            scenario: scenario.to_string(),
            step: step.to_string(),
            url: Some(url.to_string()),
            tags: tags.to_vec(),
        };
        Ok(format!("{}/t/c/{}", self.base(), claim.sign(&self.secret)?))
    }

    /// Reads the token of a request to the route of `kind`: a claim of that kind, signed with
    /// this key (a click's target is an http(s) URL).
    pub fn verify(&self, kind: TrackKind, token: &str) -> Result<TrackingClaim, TrackingError> {
        let claim = TrackingClaim::verify(token, &self.secret)?;
        if claim.kind != kind {
            return Err(TrackingError::WrongKind);
        }
        if kind == TrackKind::Click && !claim.url.as_deref().is_some_and(is_web_url) {
            return Err(TrackingError::WrongKind);
        }
        Ok(claim)
    }

    /// The HTML of an email send with its links turned into signed redirects and the open
    /// pixel added; None when the send is not an email, has no HTML, or its message says
    /// `track: false`.
    pub fn instrument(&self, scenario: &str, send: &Send) -> Option<String> {
        if send.channel != Channel::Email || send.content.no_tracking {
            return None;
        }
        let html = send.content.html.as_deref()?;
        self.instrument_html(html, &send.contact, scenario, &send.step)
            .ok()
    }

    /// [`TrackingLinks::instrument`] on bare HTML: every `<a href="http(s)://...">` (but
    /// `ses:no-track` links, unsubscribe links and links already to this server) becomes
    /// `{base}/t/c/{token}`, and the pixel goes before `</body>` (or at the end).
    pub fn instrument_html(
        &self,
        html: &str,
        contact: &str,
        scenario: &str,
        step: &str,
    ) -> Result<String, TrackingError> {
        let own = format!("{}/t/", self.base());
        let mut out = String::with_capacity(html.len() + 512);
        let mut copied = 0;
        for a in anchors(html) {
            if a.no_track
                || !is_web_url(&a.href)
                || is_unsubscribe(&a.href)
                || a.href.starts_with(&own)
            {
                continue;
            }
            let link = self.click_url(contact, scenario, step, &a.href, &a.tags)?;
            out.push_str(&html[copied..a.value.start]);
            out.push('"');
            out.push_str(&escape_attribute(&link));
            out.push('"');
            copied = a.value.end;
        }
        out.push_str(&html[copied..]);
        let pixel = format!(
            "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">",
            escape_attribute(&self.open_url(contact, scenario, step)?)
        );
        match rfind_ignore_case(&out, "</body") {
            Some(at) => out.insert_str(at, &pixel),
            None => out.push_str(&pixel),
        }
        Ok(out)
    }
}

/// True for an `http://` or `https://` URL (any case).
pub fn is_web_url(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Unsubscribe links stay as written: a redirect would hide them from mail clients and
/// spam filters that look for them, and they record their own engagement.
fn is_unsubscribe(url: &str) -> bool {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.to_ascii_lowercase().contains("unsubscribe")
}

/// The URL as a `Location` header value: bytes outside visible ASCII (non-ASCII letters,
/// spaces, controls) percent-encoded, so that any signed target can be redirected to.
pub fn location(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for b in url.bytes() {
        if b.is_ascii_graphic() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Escapes text for a double-quoted HTML attribute.
fn escape_attribute(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

fn rfind_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    let h = haystack.as_bytes();
    let n = needle.as_bytes();
    if n.len() > h.len() {
        return None;
    }
    (0..=h.len() - n.len())
        .rev()
        .find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// Decodes the character references of an attribute value: the named ones links use
/// (`&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;`, `&nbsp;`) and every numeric one; anything
/// else stays as written.
pub fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        // A reference is short: look for its `;` within a few characters.
        let end = rest
            .char_indices()
            .take(12)
            .find(|(_, c)| *c == ';')
            .map(|(i, _)| i);
        let decoded = end.and_then(|end| {
            let name = &rest[1..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => {
                    let n = name.strip_prefix('#')?;
                    let code = match n.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => n.parse::<u32>().ok()?,
                    };
                    char::from_u32(code)
                }
            }?;
            Some((c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn tags_of(value: &str) -> Vec<String> {
    let mut tags = Vec::new();
    for pair in value.split(';') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        match pair.split_once(':') {
            Some((name, v)) => {
                let (name, v) = (name.trim(), v.trim());
                tags.push(format!("{name}:{v}"));
                tags.push(name.to_string());
            }
            None => tags.push(pair.to_string()),
        }
    }
    tags
}

/// The `<a ...>` start tags of an HTML text, in order, with their first `href` (a small
/// scanner of the tag syntax: quoted, unquoted and bare attributes, any case). A tag left
/// open by a missing quote or `>` ends the scan: nothing after it is taken for a link.
pub fn anchors(html: &str) -> Vec<Anchor> {
    let b = html.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let Some(lt) = b[i..].iter().position(|&c| c == b'<').map(|p| p + i) else {
            break;
        };
        let is_a = b.get(lt + 1).is_some_and(|c| c.eq_ignore_ascii_case(&b'a'))
            && b.get(lt + 2)
                .is_none_or(|c| c.is_ascii_whitespace() || *c == b'>' || *c == b'/');
        if !is_a {
            i = lt + 1;
            continue;
        }
        match start_tag(html, lt + 2) {
            Some((anchor, end)) => {
                if let Some(a) = anchor {
                    found.push(a);
                }
                i = end;
            }
            None => break,
        }
    }
    found
}

/// Reads the attributes of a start tag from `from` to its `>`: the anchor (when it has an
/// `href`) and where the tag ends; None when the tag is not closed.
fn start_tag(html: &str, from: usize) -> Option<(Option<Anchor>, usize)> {
    let b = html.as_bytes();
    let mut j = from;
    let mut href: Option<(std::ops::Range<usize>, String)> = None;
    let mut tags = Vec::new();
    let mut no_track = false;
    loop {
        while j < b.len() && (b[j].is_ascii_whitespace() || b[j] == b'/') {
            j += 1;
        }
        if j >= b.len() {
            return None;
        }
        if b[j] == b'>' {
            j += 1;
            break;
        }
        let name_start = j;
        while j < b.len() && !b[j].is_ascii_whitespace() && !matches!(b[j], b'=' | b'>' | b'/') {
            j += 1;
        }
        let name = html[name_start..j].to_ascii_lowercase();
        if name.is_empty() {
            // A stray `=`: skip it, so that the scan always moves on.
            j += 1;
            continue;
        }
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        let mut value: Option<(std::ops::Range<usize>, &str)> = None;
        if b.get(j) == Some(&b'=') {
            j += 1;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            match b.get(j) {
                Some(&q) if q == b'"' || q == b'\'' => {
                    let close = b[j + 1..].iter().position(|&c| c == q)? + j + 1;
                    value = Some((j..close + 1, &html[j + 1..close]));
                    j = close + 1;
                }
                Some(_) => {
                    let start = j;
                    while j < b.len() && !b[j].is_ascii_whitespace() && b[j] != b'>' {
                        j += 1;
                    }
                    value = Some((start..j, &html[start..j]));
                }
                None => return None,
            }
        }
        match name.as_str() {
            "href" if href.is_none() => {
                if let Some((range, text)) = value {
                    href = Some((range, decode_entities(text).trim().to_string()));
                }
            }
            "ses:tags" => {
                if let Some((_, text)) = value {
                    tags = tags_of(&decode_entities(text));
                }
            }
            "ses:no-track" => no_track = true,
            _ => {}
        }
    }
    let anchor = href.map(|(value, href)| Anchor {
        value,
        href,
        tags,
        no_track,
    });
    Some((anchor, j))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::Rendered;
    use proptest::prelude::*;

    fn links() -> TrackingLinks {
        TrackingLinks {
            base_url: "https://t.example.com/".into(),
            secret: b"a tracking key of thirty-two bytes!!".to_vec(),
        }
    }

    fn send(html: Option<&str>, channel: Channel, no_tracking: bool) -> Send {
        Send {
            enrollment: "e1".into(),
            contact: "ana".into(),
            step: "first".into(),
            message: "m".into(),
            channel,
            communication_type: "newsletter".into(),
            to: crate::engine::Recipient::Email("ana@example.org".into()),
            content: Rendered {
                subject: Some("Hi".into()),
                html: html.map(str::to_string),
                no_tracking,
                ..Rendered::default()
            },
            idempotency_key: "e1:first".into(),
        }
    }

    /// The click claims of an instrumented HTML, in order.
    fn clicks(l: &TrackingLinks, html: &str) -> Vec<TrackingClaim> {
        anchors(html)
            .iter()
            .filter_map(|a| a.href.strip_prefix("https://t.example.com/t/c/"))
            .map(|t| {
                l.verify(TrackKind::Click, t)
                    .unwrap_or_else(|e| panic!("{t}: {e}"))
            })
            .collect()
    }

    #[test]
    fn links_become_signed_redirects_and_the_pixel_goes_before_body_end() {
        let l = links();
        let html = "<html><body><p>Hi</p>\
            <a href=\"https://shop.example/p?a=1&amp;b=2\" ses:tags=\"cta:hero; pos:top\">Buy</a>\
            <A HREF='http://example.org/x'>x</A>\
            <a href=https://bare.example/y class=z>y</a>\
            <a href=\"mailto:me@example.org\">mail</a><a href=\"tel:+33612345678\">call</a>\
            <a href=\"#top\">top</a><a name=\"anchor\">no href</a>\
            <a href=\"https://u.example/unsubscribe?token=abc\">unsubscribe</a>\
            <a ses:no-track href=\"https://private.example/\">private</a>\
            </BODY></html>";
        let out = l
            .instrument_html(html, "ana", "welcome", "first")
            .unwrap_or_else(|e| panic!("{e}"));
        let claims = clicks(&l, &out);
        let urls: Vec<_> = claims
            .iter()
            .map(|c| c.url.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(
            urls,
            [
                "https://shop.example/p?a=1&b=2",
                "http://example.org/x",
                "https://bare.example/y"
            ]
        );
        assert_eq!(claims[0].tags, ["cta:hero", "cta", "pos:top", "pos"]);
        assert!(claims[1].tags.is_empty());
        assert!(claims.iter().all(|c| c.contact == "ana"
            && c.scenario == "welcome"
            && c.step == "first"
            && c.kind == TrackKind::Click));
        for kept in [
            "href=\"mailto:me@example.org\"",
            "href=\"tel:+33612345678\"",
            "href=\"#top\"",
            "href=\"https://u.example/unsubscribe?token=abc\"",
            "href=\"https://private.example/\"",
            " class=z>y</a>",
        ] {
            assert!(out.contains(kept), "{kept} in {out}");
        }
        let pixel = out
            .find("<img src=\"https://t.example.com/t/o/")
            .unwrap_or(usize::MAX);
        let body_end = out.find("</BODY>").unwrap_or(0);
        assert!(pixel < body_end, "{out}");
        assert!(out.contains("width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">"));
        let token = out[pixel..]
            .trim_start_matches("<img src=\"https://t.example.com/t/o/")
            .split('"')
            .next()
            .unwrap_or("");
        let open = l
            .verify(TrackKind::Open, token)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((open.contact.as_str(), open.url), ("ana", None));
    }

    #[test]
    fn encoded_hrefs_are_decoded_and_the_pixel_ends_a_fragment() {
        let l = links();
        // minijinja's HTML escaping writes `/` as `&#x2f;`.
        let out = l
            .instrument_html(
                "<a href=\" https:&#x2f;&#x2f;x.example&#47;a?q=&quot;1&quot; \">x</a>",
                "c",
                "s",
                "p",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            clicks(&l, &out)[0].url.as_deref(),
            Some("https://x.example/a?q=\"1\"")
        );
        assert!(out.ends_with("style=\"display:none\">"), "{out}");
    }

    #[test]
    fn only_email_html_with_tracking_on_is_instrumented() {
        let l = links();
        let html = "<p><a href=\"https://x.example/\">x</a></p>";
        let out = l.instrument("s", &send(Some(html), Channel::Email, false));
        assert!(out.is_some_and(|h| h.contains("/t/c/") && h.contains("/t/o/")));
        assert_eq!(
            l.instrument("s", &send(Some(html), Channel::Email, true)),
            None
        );
        assert_eq!(l.instrument("s", &send(None, Channel::Email, false)), None);
        assert_eq!(
            l.instrument("s", &send(Some(html), Channel::Sms, false)),
            None
        );
        let no_key = TrackingLinks {
            base_url: "https://t.example.com".into(),
            secret: Vec::new(),
        };
        assert_eq!(
            no_key.instrument("s", &send(Some(html), Channel::Email, false)),
            None
        );
    }

    #[test]
    fn hostile_tampered_forged_and_cross_kind_tokens_are_refused() {
        let l = links();
        let click = l
            .click_url("ana", "s", "p", "https://good.example/", &[])
            .unwrap_or_default();
        let token = click.rsplit('/').next().unwrap_or_default().to_string();
        assert!(l.verify(TrackKind::Click, &token).is_ok());
        // An evil target with the good signature.
        let evil = TrackingClaim {
            kind: TrackKind::Click,
            contact: "ana".into(),
            scenario: "s".into(),
            step: "p".into(),
            url: Some("https://evil.example/".into()),
            tags: vec![],
        }
        .sign(b"guess")
        .unwrap_or_default();
        let forged = format!(
            "{}.{}",
            evil.split('.').next().unwrap_or_default(),
            token.split('.').nth(1).unwrap_or_default()
        );
        assert_eq!(
            l.verify(TrackKind::Click, &forged),
            Err(TrackingError::BadSignature)
        );
        // One character changed anywhere.
        let mut flipped = token.clone().into_bytes();
        flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap_or_default();
        assert!(l.verify(TrackKind::Click, &flipped).is_err());
        assert_eq!(
            l.verify(TrackKind::Open, &token),
            Err(TrackingError::WrongKind)
        );
        let other_key = TrackingLinks {
            secret: b"another key".to_vec(),
            ..links()
        };
        assert_eq!(
            other_key.verify(TrackKind::Click, &token),
            Err(TrackingError::BadSignature)
        );
        for bad in ["", "abc", "a.b", "!!.??", "."] {
            assert!(l.verify(TrackKind::Open, bad).is_err(), "{bad}");
        }
        // An unsubscribe token signed with the same key is not a tracking claim.
        let unsub = crate::unsubscribe::UnsubscribeClaim {
            contact: "ana".into(),
            communication_type: "news".into(),
            scenario: "s".into(),
            step: "p".into(),
        }
        .sign(&l.secret)
        .unwrap_or_default();
        assert_eq!(
            l.verify(TrackKind::Open, &unsub),
            Err(TrackingError::Malformed)
        );
    }

    #[test]
    fn the_derived_key_differs_from_the_unsubscribe_key() {
        let k = derive_secret(b"an unsubscribe key").unwrap_or_default();
        assert_eq!(k.len(), 32);
        assert_ne!(k, b"an unsubscribe key".to_vec());
        assert_eq!(derive_secret(b"an unsubscribe key"), Some(k));
        assert_eq!(derive_secret(b""), None);
    }

    #[test]
    fn locations_are_header_safe_and_debug_hides_the_key() {
        assert_eq!(
            location("https://x.example/é a?b=c"),
            "https://x.example/%C3%A9%20a?b=c"
        );
        let shown = format!("{:?}", links());
        assert!(
            shown.contains("<hidden>") && !shown.contains("thirty-two"),
            "{shown}"
        );
    }

    #[test]
    fn hostile_unclosed_tags_end_the_scan() {
        assert!(anchors("<a href=\"https://x.example/").is_empty());
        assert!(anchors("<a href='https://x.example/' ").is_empty());
        assert_eq!(anchors("<a / href=https://x.example/>").len(), 1);
        assert_eq!(anchors("<a = href=https://x.example/>").len(), 1);
        assert!(anchors("<abbr href=\"https://x.example/\">").is_empty());
        assert_eq!(
            decode_entities("&amp;&bogus;&#xZZ;&#1114112;&"),
            "&&bogus;&#xZZ;&#1114112;&"
        );
    }

    fn url_strategy() -> impl Strategy<Value = String> {
        (
            prop_oneof![Just("http"), Just("https"), Just("HTTPS")],
            "[a-z]{1,8}",
            "[a-zA-Z0-9/_.~-]{0,12}",
            proptest::option::of("[a-z]{1,3}=[a-z0-9]{0,3}(&[a-z]{1,3}=['\"<>éa-z]{0,3}){0,3}"),
        )
            .prop_map(|(scheme, host, path, query)| {
                let q = query.map(|q| format!("?{q}")).unwrap_or_default();
                format!("{scheme}://{host}.example/{path}{q}")
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn arbitrary_html_never_panics(html in "(<a|<A|href|=|\"|'|>|&amp;|&#|;| |https://x|é|<|/|[a-z])*") {
            let l = links();
            let out = l.instrument_html(&html, "c", "s", "p");
            prop_assert!(out.is_ok());
            let _ = anchors(&html);
        }

        #[test]
        fn any_altered_character_is_refused(
            at in any::<proptest::sample::Index>(),
            with in "[A-Za-z0-9_.-]",
        ) {
            let l = links();
            let url = l
                .click_url("ana", "s", "p", "https://good.example/?a=1", &["cta".into()])
                .unwrap_or_default();
            let token = url.rsplit('/').next().unwrap_or_default().to_string();
            let i = at.index(token.len());
            let mut altered = token.clone();
            altered.replace_range(i..i + 1, &with);
            prop_assume!(altered != token);
            prop_assert!(l.verify(TrackKind::Click, &altered).is_err(), "{}", altered);
        }

        #[test]
        fn arbitrary_text_never_panics(html in "\\PC*") {
            prop_assert!(links().instrument_html(&html, "c", "s", "p").is_ok());
        }

        #[test]
        fn every_rewritten_link_verifies_back_to_its_url(
            parts in proptest::collection::vec((url_strategy(), "[a-zA-Z <>é]{0,10}", any::<bool>()), 0..6)
        ) {
            let l = links();
            let mut html = String::from("<body>");
            for (url, text, single) in &parts {
                let href = escape_attribute(url);
                if *single {
                    html.push_str(&format!("<a class='c' href='{href}'>{}</a>", escape_attribute(text)));
                } else {
                    html.push_str(&format!("<a href=\"{href}\" ses:tags=\"k:v\">{}</a>", escape_attribute(text)));
                }
            }
            html.push_str("</body>");
            let out = l.instrument_html(&html, "c", "s", "p").unwrap_or_default();
            let got: Vec<String> = clicks(&l, &out).into_iter().filter_map(|c| c.url).collect();
            let want: Vec<String> = parts.iter().map(|(u, _, _)| u.clone()).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(anchors(&out).len(), parts.len());
        }
    }
}
