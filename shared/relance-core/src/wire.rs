//! The JSON that applications send to Relance: the body of the embedded HTTP API and the
//! EventBridge `detail` (with the `detail-type` named on each type) in the AWS mode.
//! One set of types, so both modes accept exactly the same shapes.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::contact::EngagementKind;

/// `detail-type: relance.contact` — create or update a contact (a flat object with `id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactDetail {
    /// What happened; absent means created or updated, whichever applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ContactAction>,
    /// The contact's fields (merged into the stored contact).
    pub contact: Map<String, Value>,
    /// When it happened (default: when received), within 1970-01-01..9999-12-31.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::instant::deserialize_opt"
    )]
    pub at: Option<DateTime<Utc>>,
}

/// The contact events scenarios can be triggered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContactAction {
    /// `contact.created`.
    Created,
    /// `contact.updated`.
    Updated,
    /// `contact.subscribed`.
    Subscribed,
    /// `contact.unsubscribed`.
    Unsubscribed,
}

impl ContactAction {
    /// The event name scenarios trigger on.
    pub fn event_name(self) -> &'static str {
        match self {
            ContactAction::Created => "contact.created",
            ContactAction::Updated => "contact.updated",
            ContactAction::Subscribed => "contact.subscribed",
            ContactAction::Unsubscribed => "contact.unsubscribed",
        }
    }
}

/// `detail-type: relance.activity` — something the contact did (`purchase`, `page.visited`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivityDetail {
    /// The contact id.
    pub contact: String,
    /// The event name.
    pub event: String,
    /// Its properties (`url` for page.visited, ...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub properties: Map<String, Value>,
    /// When it happened (default: when received), within 1970-01-01..9999-12-31.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::instant::deserialize_opt"
    )]
    pub at: Option<DateTime<Utc>>,
    /// The caller's key for this event: a repeat with the same key changes nothing. Without
    /// it, an event that gives `at` is keyed by its content; one without `at` is not deduplicated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `detail-type: relance.engagement` — delivery, open, click, bounce, complaint, unsubscribe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EngagementDetail {
    /// The contact id.
    pub contact: String,
    /// The scenario whose send it concerns.
    pub scenario: String,
    /// The send step.
    pub step: String,
    /// What happened.
    pub kind: EngagementKind,
    /// For clicks: the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// For clicks: the link's tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_tags: Vec<String>,
    /// When it happened (default: when received), within 1970-01-01..9999-12-31.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::instant::deserialize_opt"
    )]
    pub at: Option<DateTime<Utc>>,
    /// The caller's key for this reaction: a repeat with the same key changes nothing.
    /// Without it, a reaction that gives `at` is keyed by its content; one without `at` is
    /// not deduplicated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `detail-type: relance.launch` (the `LaunchScenario` command) — launch a scenario for some
/// contacts, or for its audience when `contacts` is absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LaunchDetail {
    /// The scenario id.
    pub scenario: String,
    /// These contacts only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<String>>,
}

/// The longest idempotency key a caller may give.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

/// The key an input is recorded once under: the caller's (checked), or a digest of the content
/// when the caller gave `at`; `Ok(None)` when neither (no deduplication).
fn input_key(
    kind: &str,
    given: Option<&str>,
    at: Option<DateTime<Utc>>,
    content: &[&str],
) -> Result<Option<String>, WireError> {
    if let Some(k) = given {
        if k.trim().is_empty() || k.len() > MAX_IDEMPOTENCY_KEY {
            return Err(WireError {
                field: "idempotency_key".into(),
                message: format!("must be 1 to {MAX_IDEMPOTENCY_KEY} bytes of text"),
            });
        }
        return Ok(Some(format!("{kind}#key#{k}")));
    }
    let Some(at) = at else {
        return Ok(None);
    };
    let mut h = Sha256::new();
    for part in content.iter().copied().chain([at.to_rfc3339().as_str()]) {
        // Length-prefixed, so that no two different contents hash the same way.
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Some(format!("{kind}#{hex}")))
}

impl ActivityDetail {
    /// The key this event is recorded once under (see [`ActivityDetail::idempotency_key`]).
    pub fn dedup_key(&self) -> Result<Option<String>, WireError> {
        let props = serde_json::to_string(&self.properties).unwrap_or_default();
        input_key(
            "activity",
            self.idempotency_key.as_deref(),
            self.at,
            &[&self.contact, &self.event, &props],
        )
    }
}

impl EngagementDetail {
    /// The key this reaction is recorded once under (see
    /// [`EngagementDetail::idempotency_key`]).
    pub fn dedup_key(&self) -> Result<Option<String>, WireError> {
        let tags = self.link_tags.join("\n");
        input_key(
            "engagement",
            self.idempotency_key.as_deref(),
            self.at,
            &[
                &self.contact,
                &self.scenario,
                &self.step,
                self.kind.as_str(),
                self.url.as_deref().unwrap_or(""),
                &tags,
            ],
        )
    }
}

/// The JSON Schemas of the details applications send, by `detail-type` (generated from the
/// types above, so the documentation cannot drift from what is accepted).
pub fn detail_schemas() -> serde_json::Value {
    serde_json::json!({
        "relance.contact": schemars::schema_for!(ContactDetail),
        "relance.activity": schemars::schema_for!(ActivityDetail),
        "relance.engagement": schemars::schema_for!(EngagementDetail),
        "relance.launch": schemars::schema_for!(LaunchDetail),
        "relance.consent": schemars::schema_for!(crate::consent::ConsentRequest),
    })
}

/// A body that does not decode, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{field}: {message}")]
pub struct WireError {
    /// The JSON path of the field (`contact.id`, `kind`), or `body`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Decodes JSON bytes into a wire type, naming the field at fault.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    // Every wire type is an object: serde would also read one from an array of its fields in
    // order (`["u1", "purchase"]` as an event), which no client means to send.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(WireError {
            field: "body".into(),
            message: "a JSON object is expected, not an array".into(),
        });
    }
    // A body that reads is read once, without tracking the path (which costs at every field:
    // 4% of the HTTP workers' time at 20,000 events/s); only one that fails is read again,
    // the path tracked, to name the field. Same bytes, same value: the tracking only watches.
    if let Ok(value) = serde_json::from_slice::<T>(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        // Broken JSON is the body's fault, wherever the parser was (its path may be `?`);
        // the line and column say where.
        if e.inner().is_syntax() || e.inner().is_eof() {
            return WireError {
                field: "body".into(),
                message: e.inner().to_string(),
            };
        }
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        // serde reports a missing field at its parent; name the field itself.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => name.to_string(),
            (parent, Some(name)) => format!("{parent}.{name}"),
            (".", None) => "body".to_string(),
            (p, None) => p.to_string(),
        };
        WireError {
            field,
            message: message.replace('`', "\""),
        }
    })?;
    de.end().map_err(|e| WireError {
        field: "body".into(),
        message: e.to_string(),
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detail_schemas_say_what_is_required() {
        let s = detail_schemas();
        assert_eq!(
            s["relance.activity"]["required"],
            serde_json::json!(["contact", "event"])
        );
        assert_eq!(
            s["relance.engagement"]["required"],
            serde_json::json!(["contact", "scenario", "step", "kind"])
        );
        assert_eq!(
            s["relance.launch"]["required"],
            serde_json::json!(["scenario"])
        );
        assert_eq!(
            s["relance.contact"]["required"],
            serde_json::json!(["contact"])
        );
    }

    #[test]
    fn decodes_and_names_the_bad_field() {
        let ok: ActivityDetail =
            decode(br#"{"contact": "c1", "event": "purchase", "properties": {"amount": 3}}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.event, "purchase");
        let e = decode::<EngagementDetail>(
            br#"{"contact": "c1", "scenario": "s", "step": "a", "kind": "read"}"#,
        )
        .err();
        assert_eq!(e.map(|e| e.field), Some("kind".to_string()));
        // An array of the fields in order is not an object.
        let e = decode::<ActivityDetail>(br#" ["c1", "purchase"]"#).err();
        assert_eq!(
            e.map(|e| (e.field, e.message)),
            Some((
                "body".to_string(),
                "a JSON object is expected, not an array".to_string()
            ))
        );
        let e = decode::<ActivityDetail>(br#"{"contact": "c1"}"#).err();
        assert_eq!(e.map(|e| e.field), Some("event".to_string()));
        let e = decode::<LaunchDetail>(br#"{"scenario": "s", "contacts": [1]}"#).err();
        assert_eq!(e.map(|e| e.field), Some("contacts[0]".to_string()));
        for broken in [
            &b"{"[..],
            b"{\"scenario\": \"s\"",
            b"{\"scenario\": ",
            b"{\"scenario\": \"s\", \"contacts\": [\"a\",]}",
            b"not json",
        ] {
            let e = decode::<LaunchDetail>(broken).err();
            assert_eq!(e.map(|e| e.field), Some("body".to_string()));
        }
    }
}
