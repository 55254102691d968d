//! One-click unsubscribe links from the environment, shared by `relance run` and
//! `relance dev run` (so neither command module depends on the other).

use anyhow::Result;

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
