//! One-click unsubscribe links and open and click tracking from the environment, shared by
//! `relance run` and `relance dev run` (so neither command module depends on the other).

use anyhow::Result;
use relance_core::tracking::{self, TrackingLinks};
use relance_core::unsubscribe;

/// One-click unsubscribe links from `RELANCE_UNSUBSCRIBE_SECRET` (required to turn them on),
/// `RELANCE_UNSUBSCRIBE_URL` (default: this API's `/unsubscribe`) and
/// `RELANCE_UNSUBSCRIBE_MAILTO`.
/// A key shorter than 32 bytes is refused (the links' HMAC has the hash's strength).
pub fn unsubscribe_links(
    default_url: &str,
) -> Result<Option<relance_core::unsubscribe::UnsubscribeLinks>> {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
    let Some(secret) = var("RELANCE_UNSUBSCRIBE_SECRET") else {
        return Ok(None);
    };
    relance_core::unsubscribe::check_secret(secret.as_bytes())
        .map_err(|why| anyhow::anyhow!("RELANCE_UNSUBSCRIBE_SECRET: {why}"))?;
    Ok(Some(relance_core::unsubscribe::UnsubscribeLinks {
        secret: secret.into_bytes(),
        base_url: var("RELANCE_UNSUBSCRIBE_URL").unwrap_or_else(|| default_url.to_string()),
        mailto: var("RELANCE_UNSUBSCRIBE_MAILTO"),
    }))
}

/// Open and click tracking for `relance run` (the API serves the pixel and the redirects),
/// from `RELANCE_PUBLIC_URL` (the server's public base URL; default `listen_default` when a
/// tracking key is set) and `RELANCE_TRACKING_SECRET` (at least 32 bytes), or a key derived
/// from `RELANCE_UNSUBSCRIBE_SECRET` when only that one is set and the public URL is given.
/// None (tracking off) without a key. The base URL must be https unless its host is
/// `localhost` or a loopback address: tracked links would otherwise send readers, in clear,
/// to an address they may not reach.
pub fn tracking_links(listen_default: &str) -> Result<Option<TrackingLinks>> {
    tracking_links_from(
        |n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()),
        listen_default,
    )
}

/// [`tracking_links`] over any source of settings (tests give a map).
fn tracking_links_from(
    var: impl Fn(&str) -> Option<String>,
    listen_default: &str,
) -> Result<Option<TrackingLinks>> {
    let public = var("RELANCE_PUBLIC_URL").map(|u| u.trim().to_string());
    let secret = match (
        var("RELANCE_TRACKING_SECRET"),
        var("RELANCE_UNSUBSCRIBE_SECRET"),
    ) {
        (Some(own), _) => {
            unsubscribe::check_secret(own.as_bytes()).map_err(|why| {
                anyhow::anyhow!(
                    "RELANCE_TRACKING_SECRET: {}",
                    why.replace("unsubscribe key", "tracking key")
                )
            })?;
            own.into_bytes()
        }
        // Without a public URL, tracked links would point at the listen address: tracking
        // stays off rather than rewrite every link to a place readers may not reach.
        (None, Some(unsub)) if public.is_some() => {
            unsubscribe::check_secret(unsub.as_bytes())
                .map_err(|why| anyhow::anyhow!("RELANCE_UNSUBSCRIBE_SECRET: {why}"))?;
            tracking::derive_secret(unsub.as_bytes())
                .ok_or_else(|| anyhow::anyhow!("RELANCE_UNSUBSCRIBE_SECRET is empty"))?
        }
        _ => {
            if public.is_some() {
                tracing::warn!(
                    "RELANCE_PUBLIC_URL is set but neither RELANCE_TRACKING_SECRET nor RELANCE_UNSUBSCRIBE_SECRET is: open and click tracking is off"
                );
            }
            return Ok(None);
        }
    };
    let (setting, base_url) = match public {
        Some(url) => ("RELANCE_PUBLIC_URL", url),
        None => ("the listen address", listen_default.trim().to_string()),
    };
    check_public_url(&base_url).map_err(|why| {
        anyhow::anyhow!(
            "{setting} ({base_url}) {why}; set RELANCE_PUBLIC_URL to this server's public https URL (open and click tracking links point there)"
        )
    })?;
    Ok(Some(TrackingLinks {
        base_url: base_url.trim_end_matches('/').to_string(),
        secret,
    }))
}

/// The host (and port) of a URL: `https://user@host:8443/x?y` → `host:8443`.
pub fn authority_of(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (!host.is_empty()).then_some(host)
}

/// An https URL, or http to `localhost` or a loopback address.
fn check_public_url(url: &str) -> std::result::Result<(), String> {
    let lower = url.to_ascii_lowercase();
    let Some(authority) = authority_of(&lower) else {
        return Err("is not an absolute URL with a host".into());
    };
    if lower.starts_with("https://") {
        return Ok(());
    }
    if !lower.starts_with("http://") {
        return Err("must start with https://".into());
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    if relance_core::net::is_loopback_host(host) {
        Ok(())
    } else {
        Err(
            "must be an https URL (http is accepted for localhost and loopback addresses only)"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn links(vars: &[(&str, &str)]) -> Result<Option<TrackingLinks>> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tracking_links_from(|n| map.get(n).cloned(), "http://127.0.0.1:8787")
    }

    #[test]
    fn tracking_is_off_without_a_key() {
        assert!(links(&[]).is_ok_and(|l| l.is_none()));
        assert!(
            links(&[("RELANCE_PUBLIC_URL", "https://r.example.com")]).is_ok_and(|l| l.is_none())
        );
        // The unsubscribe key alone does not turn tracking on without a public URL.
        assert!(links(&[("RELANCE_UNSUBSCRIBE_SECRET", KEY)]).is_ok_and(|l| l.is_none()));
    }

    #[test]
    fn the_own_key_wins_and_the_unsubscribe_key_is_derived_from() {
        let own = links(&[
            ("RELANCE_PUBLIC_URL", "https://r.example.com/"),
            ("RELANCE_TRACKING_SECRET", KEY),
            (
                "RELANCE_UNSUBSCRIBE_SECRET",
                "another key of thirty-two bytes!",
            ),
        ])
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("off"));
        assert_eq!(own.base_url, "https://r.example.com");
        assert_eq!(own.secret, KEY.as_bytes());
        let derived = links(&[
            ("RELANCE_PUBLIC_URL", "https://r.example.com"),
            ("RELANCE_UNSUBSCRIBE_SECRET", KEY),
        ])
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("off"));
        assert_eq!(
            Some(derived.secret),
            tracking::derive_secret(KEY.as_bytes())
        );
        // An own key without a public URL: the listen address (loopback here).
        let local = links(&[("RELANCE_TRACKING_SECRET", KEY)])
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("off"));
        assert_eq!(local.base_url, "http://127.0.0.1:8787");
    }

    #[test]
    fn hostile_short_keys_and_plain_http_urls_are_refused() {
        let short = links(&[("RELANCE_TRACKING_SECRET", "short")]);
        assert!(
            short
                .as_ref()
                .is_err_and(|e| e.to_string().contains("RELANCE_TRACKING_SECRET")
                    && e.to_string().contains("tracking key is 5 bytes")),
            "{short:?}"
        );
        let http = links(&[
            ("RELANCE_PUBLIC_URL", "http://r.example.com"),
            ("RELANCE_TRACKING_SECRET", KEY),
        ]);
        assert!(
            http.as_ref()
                .is_err_and(|e| e.to_string().contains("RELANCE_PUBLIC_URL")
                    && e.to_string().contains("https")),
            "{http:?}"
        );
        for bad in ["r.example.com", "ftp://r.example.com", "https://"] {
            let r = links(&[
                ("RELANCE_PUBLIC_URL", bad),
                ("RELANCE_TRACKING_SECRET", KEY),
            ]);
            assert!(r.is_err(), "{bad}");
        }
        for ok in [
            "http://localhost:8787",
            "http://127.0.0.1",
            "http://[::1]:8787",
            "HTTPS://R.example.com",
        ] {
            let r = links(&[("RELANCE_PUBLIC_URL", ok), ("RELANCE_TRACKING_SECRET", KEY)]);
            assert!(r.is_ok_and(|l| l.is_some()), "{ok}");
        }
    }

    #[test]
    fn authorities_drop_the_user_and_the_path() {
        assert_eq!(
            authority_of("https://u:p@r.example.com:8443/x?y"),
            Some("r.example.com:8443")
        );
        assert_eq!(authority_of("no scheme"), None);
    }
}
