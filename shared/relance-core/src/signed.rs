//! Signed tokens, the form of the links Relance puts in messages (one-click unsubscribe, open
//! and click tracking): `payload.signature`, both base64url without padding, the payload a
//! claim's JSON and the signature its HMAC-SHA256, checked in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Sha256;

/// Why a token did not sign or verify; each kind of link names these in its own error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFault {
    /// Not two base64url parts joined by a dot, or not the claim's JSON.
    Malformed,
    /// The signature does not match: forged or altered.
    BadSignature,
    /// No signing key.
    NoSecret,
}

/// HMAC-SHA256 keyed with `secret` over `payload` (an empty key is refused).
pub fn hmac(secret: &[u8], payload: &[u8]) -> Result<Hmac<Sha256>, TokenFault> {
    if secret.is_empty() {
        return Err(TokenFault::NoSecret);
    }
    let mut m = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| TokenFault::NoSecret)?;
    m.update(payload);
    Ok(m)
}

/// `claim` signed with `secret`.
pub fn sign<T: Serialize>(claim: &T, secret: &[u8]) -> Result<String, TokenFault> {
    let payload = serde_json::to_vec(claim).map_err(|_| TokenFault::Malformed)?;
    let signature = hmac(secret, &payload)?.finalize().into_bytes();
    Ok(format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// The claim of `token`, once its signature is checked (in constant time) against `secret`.
pub fn verify<T: DeserializeOwned>(token: &str, secret: &[u8]) -> Result<T, TokenFault> {
    let (payload, signature) = token.trim().split_once('.').ok_or(TokenFault::Malformed)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenFault::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenFault::Malformed)?;
    hmac(secret, &payload)?
        .verify_slice(&signature)
        .map_err(|_| TokenFault::BadSignature)?;
    serde_json::from_slice(&payload).map_err(|_| TokenFault::Malformed)
}
