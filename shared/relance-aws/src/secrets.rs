//! Secrets at start (DESIGN §8): a function reads each of its secrets once per cold start,
//! before serving, from Secrets Manager by the ARN in `<NAME>_ARN` (what the SAM template
//! sets), so no secret sits in a Lambda environment. `<NAME>` itself, the plain value, is the
//! embedded and `relance dev` path only.

use aws_sdk_secretsmanager::Client;

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Secrets Manager refused or failed (access denied, no such secret, unreachable).
    #[error("{var}: cannot read the secret {arn} from Secrets Manager: {why}")]
    Fetch {
        /// The environment variable holding the ARN.
        var: String,
        /// The secret's ARN.
        arn: String,
        /// What Secrets Manager said.
        why: String,
    },
    /// The secret holds neither a non-empty string nor binary.
    #[error("{var}: the secret {arn} is empty")]
    Empty {
        /// The environment variable holding the ARN.
        var: String,
        /// The secret's ARN.
        arn: String,
    },
    /// The value is not one the setting takes (an unsubscribe key under 32 bytes).
    #[error("{var}: {why}")]
    Invalid {
        /// The setting.
        var: String,
        /// What is wrong.
        why: String,
    },
    /// A binary secret that is not UTF-8 (the keys are text: base64url or a passphrase).
    #[error("{var}: the secret {arn} is binary, not text")]
    NotText {
        /// The environment variable holding the ARN.
        var: String,
        /// The secret's ARN.
        arn: String,
    },
}

/// The secret `name` (`RELANCE_UNSUBSCRIBE_SECRET`): from Secrets Manager when
/// `<name>_ARN` is set (a non-empty value), else the plain `<name>` from the environment
/// (embedded and dev mode), else none. With both set, the ARN wins and the plain value is
/// ignored (and said so), so a deployment never trusts a value left in its environment.
pub async fn from_env(client: &Client, name: &str) -> Result<Option<String>, SecretError> {
    from_lookup(client, name, |n| std::env::var(n).ok()).await
}

/// As [`from_env`], with the settings read by `get` (tests, other hosts).
pub async fn from_lookup(
    client: &Client,
    name: &str,
    get: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, SecretError> {
    let var = |n: &str| get(n).filter(|v| !v.trim().is_empty());
    let arn_var = format!("{name}_ARN");
    match var(&arn_var) {
        Some(arn) => {
            if var(name).is_some() {
                tracing::warn!(
                    "{name} is ignored: the secret is read from Secrets Manager ({arn_var})"
                );
            }
            read(client, &arn_var, arn.trim()).await.map(Some)
        }
        None => Ok(var(name)),
    }
}

/// The unsubscribe links' HMAC key (`RELANCE_UNSUBSCRIBE_SECRET[_ARN]`, as [`from_env`]),
/// refused when shorter than [`relance_core::unsubscribe::MIN_SECRET_BYTES`]; none leaves
/// one-click links off.
pub async fn unsubscribe_key(client: &Client) -> Result<Option<Vec<u8>>, SecretError> {
    unsubscribe_key_from(client, |n| std::env::var(n).ok()).await
}

/// As [`unsubscribe_key`], with the settings read by `get`.
pub async fn unsubscribe_key_from(
    client: &Client,
    get: impl Fn(&str) -> Option<String>,
) -> Result<Option<Vec<u8>>, SecretError> {
    const NAME: &str = "RELANCE_UNSUBSCRIBE_SECRET";
    let Some(key) = from_lookup(client, NAME, get).await? else {
        return Ok(None);
    };
    relance_core::unsubscribe::check_secret(key.as_bytes()).map_err(|why| {
        SecretError::Invalid {
            var: NAME.to_string(),
            why,
        }
    })?;
    Ok(Some(key.into_bytes()))
}

/// One `GetSecretValue` for the secret `arn` (`var` names where the ARN came from, for the
/// errors): its string, or its binary as UTF-8 text.
pub async fn read(client: &Client, var: &str, arn: &str) -> Result<String, SecretError> {
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| SecretError::Fetch {
            var: var.to_string(),
            arn: arn.to_string(),
            why: aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
        })?;
    let text = match (out.secret_string, out.secret_binary) {
        (Some(s), _) => s,
        (None, Some(b)) => String::from_utf8(b.into_inner()).map_err(|_| SecretError::NotText {
            var: var.to_string(),
            arn: arn.to_string(),
        })?,
        (None, None) => String::new(),
    };
    if text.trim().is_empty() {
        return Err(SecretError::Empty {
            var: var.to_string(),
            arn: arn.to_string(),
        });
    }
    Ok(text)
}

/// The list of webhook secrets' ARNs the template hands the webhook sender (comma-separated):
/// each secret's webhook name is the last `/` segment of its Secrets Manager name
/// (`relance/webhook/crm` is the scenario's `secret: crm`).
pub const WEBHOOK_SECRET_ARNS_VAR: &str = "RELANCE_WEBHOOK_SECRET_ARNS";

/// The webhook signing secrets, once at start, by the variable their name maps to
/// ([`relance_core::webhook::secret_var`]): each `RELANCE_WEBHOOK_SECRET_<NAME>_ARN` (or, in
/// dev, the plain `RELANCE_WEBHOOK_SECRET_<NAME>`) as [`from_env`] reads it, and every ARN of
/// [`WEBHOOK_SECRET_ARNS_VAR`] named after the secret.
pub async fn webhook_secrets(
    client: &Client,
) -> Result<std::collections::BTreeMap<String, Vec<u8>>, SecretError> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    webhook_secrets_from(client, &vars).await
}

/// As [`webhook_secrets`], over the environment `vars`.
pub async fn webhook_secrets_from(
    client: &Client,
    vars: &[(String, String)],
) -> Result<std::collections::BTreeMap<String, Vec<u8>>, SecretError> {
    use relance_core::webhook::{SECRET_VAR_PREFIX, secret_var};
    let get = |n: &str| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut out = std::collections::BTreeMap::new();
    let names: std::collections::BTreeSet<String> = vars
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with(SECRET_VAR_PREFIX) && *k != WEBHOOK_SECRET_ARNS_VAR)
        .map(|k| k.strip_suffix("_ARN").unwrap_or(k).to_string())
        .collect();
    for name in names {
        if let Some(value) = from_lookup(client, &name, get).await? {
            out.insert(name, value.into_bytes());
        }
    }
    let list = get(WEBHOOK_SECRET_ARNS_VAR).unwrap_or_default();
    for arn in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let out_secret = client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| SecretError::Fetch {
                var: WEBHOOK_SECRET_ARNS_VAR.to_string(),
                arn: arn.to_string(),
                why: aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
            })?;
        let name = out_secret
            .name
            .as_deref()
            .and_then(|n| n.rsplit('/').next())
            .unwrap_or_default()
            .to_string();
        let value = match (out_secret.secret_string, out_secret.secret_binary) {
            (Some(s), _) => s.into_bytes(),
            (None, Some(b)) => b.into_inner(),
            (None, None) => Vec::new(),
        };
        if name.is_empty() || value.is_empty() {
            return Err(SecretError::Empty {
                var: WEBHOOK_SECRET_ARNS_VAR.to_string(),
                arn: arn.to_string(),
            });
        }
        // An explicit `_ARN` variable for the same name wins.
        out.entry(secret_var(&name)).or_insert(value);
    }
    Ok(out)
}
