//! Contacts (one flat JSON object with reserved keys) and what a contact did: activity
//! events, engagement with sends, and the sends themselves, as the engine sees them.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A contact: `id` plus reserved keys (email, phone, timezone, birthday, groups, tags,
/// personas, subscriptions, suppressed, push, web_push) and any other attribute.
///
/// The fields and the id are shared between clones (copied on the first write to a clone):
/// a store hands out a copy of the contact for every input, and the engine keeps one per
/// transition, so a clone must cost no more than a pointer.
#[derive(Clone, PartialEq)]
pub struct Contact(Arc<Inner>);

/// What a contact holds (behind one shared pointer: one count to touch per clone).
#[derive(Clone, PartialEq, Eq)]
struct Inner {
    fields: Map<String, Value>,
    id: String,
}

impl Contact {
    fn new(fields: Map<String, Value>, id: String) -> Contact {
        Contact(Arc::new(Inner { fields, id }))
    }

    /// The fields to write, copied first if another clone shares them.
    fn fields_mut(&mut self) -> &mut Map<String, Value> {
        &mut Arc::make_mut(&mut self.0).fields
    }
}

impl std::fmt::Debug for Contact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contact")
            .field("fields", &self.0.fields)
            .field("id", &self.0.id)
            .finish()
    }
}

/// Serialized as its fields (the id is one of them).
impl Serialize for Contact {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.fields.serialize(s)
    }
}

/// Why a JSON object is not a contact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContactError {
    /// Not a JSON object.
    #[error("a contact must be a JSON object")]
    NotAnObject,
    /// No usable id.
    #[error("a contact needs an \"id\" (a non-empty string or a number)")]
    MissingId,
    /// A reserved key with the wrong shape.
    #[error("\"{key}\" {why}")]
    Reserved {
        key: &'static str,
        why: &'static str,
    },
    /// A communication type's consent that is not a consent value.
    #[error(
        "\"subscriptions.{kind}\": {value} is not a consent value (one of {})",
        crate::consent::CONSENT_VALUES
    )]
    Consent { kind: String, value: String },
}

/// The reserved keys other than `id`, in the order their checks run: when several are wrong,
/// the first of them is the error.
const RESERVED: [&str; 8] = [
    "groups",
    "tags",
    "personas",
    "suppressed",
    "subscriptions",
    "push",
    "email",
    "phone",
];

/// What reading a contact does with its email and phone.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Addresses {
    /// Checked and normalised (input).
    Check,
    /// Taken as stored.
    AsTheyAre,
}

/// Serde reads what Relance wrote (pending effects, stored transitions): as stored, so a
/// contact written before addresses were checked still reads. Input goes through
/// [`Contact::from_json`].
impl<'de> Deserialize<'de> for Contact {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Contact::from_stored(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl Contact {
    /// Builds a contact from a JSON object, checking the id and the reserved keys' shapes.
    pub fn from_json(value: Value) -> Result<Contact, ContactError> {
        let Value::Object(fields) = value else {
            return Err(ContactError::NotAnObject);
        };
        Contact::from_fields(fields, Addresses::Check)
    }

    /// A contact as a store wrote it: the same as [`Contact::from_json`] except that its
    /// email and phone are taken as they are, so a contact stored before addresses were
    /// checked still reads (the sender skips or fails an address it cannot use).
    pub fn from_stored(value: Value) -> Result<Contact, ContactError> {
        let Value::Object(fields) = value else {
            return Err(ContactError::NotAnObject);
        };
        Contact::from_fields(fields, Addresses::AsTheyAre)
    }

    /// The checks of [`Contact::from_json`] in one pass over the fields, each reserved key
    /// matched by its name where a lookup each cost a hash each (a fifth of reading a stored
    /// contact). Values change in place, so the fields keep their order; when several are
    /// wrong, the error is the one the checks meet first in their order (the id, the lists,
    /// the objects, the addresses), as when they ran one after the other.
    fn from_fields(
        mut fields: Map<String, Value>,
        addresses: Addresses,
    ) -> Result<Contact, ContactError> {
        let mut id = None;
        // The first wrong reserved key in the checks' order: (its place in RESERVED, why).
        let mut first: Option<(usize, &'static str)> = None;
        for (key, value) in fields.iter_mut() {
            if key == "id" {
                match value {
                    Value::String(s) if !s.trim().is_empty() => id = Some(s.clone()),
                    Value::Number(n) => {
                        let text = n.to_string();
                        *value = Value::String(text.clone());
                        id = Some(text);
                    }
                    _ => {}
                }
                continue;
            }
            let Some(rank) = RESERVED.iter().position(|k| k == key) else {
                continue;
            };
            let wrong = match (RESERVED[rank], &mut *value) {
                ("groups" | "tags" | "personas" | "suppressed", v) => match v {
                    Value::Null | Value::Array(_) => None,
                    Value::String(s) => {
                        // CSV imports write lists as "a;b" or "a,b".
                        let list = s.split([';', ',']).map(str::trim).filter(|p| !p.is_empty());
                        *v = Value::Array(list.map(|p| Value::String(p.to_string())).collect());
                        None
                    }
                    _ => Some("must be a list of names"),
                },
                ("subscriptions" | "push", Value::Null | Value::Object(_)) => None,
                ("subscriptions" | "push", _) => Some("must be an object"),
                (key, v) if addresses == Addresses::Check => check_address(key, v).err(),
                _ => None,
            };
            if let Some(why) = wrong
                && first.is_none_or(|(r, _)| rank < r)
            {
                first = Some((rank, why));
            }
        }
        let Some(id) = id else {
            return Err(ContactError::MissingId);
        };
        if let Some((rank, why)) = first {
            return Err(ContactError::Reserved {
                key: RESERVED[rank],
                why,
            });
        }
        if addresses == Addresses::Check {
            Contact::check_consent_values(&fields)?;
            Contact::check_timezone(&fields)?;
        }
        Ok(Contact::new(fields, id))
    }

    /// Input's `timezone` names a time zone (or is empty): one that does not (`Mars/Base`)
    /// was taken and the scenario's zone used instead, without a word.
    fn check_timezone(fields: &Map<String, Value>) -> Result<(), ContactError> {
        let wrong = match fields.get("timezone") {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => {
                !s.trim().is_empty() && s.trim().parse::<chrono_tz::Tz>().is_err()
            }
            Some(_) => true,
        };
        if wrong {
            return Err(ContactError::Reserved {
                key: "timezone",
                why: "is not a time zone: an IANA name, in its case, such as Europe/Paris or America/New_York",
            });
        }
        Ok(())
    }

    /// A contact with only an id.
    pub fn bare(id: &str) -> Contact {
        let mut fields = Map::new();
        fields.insert("id".into(), Value::String(id.to_string()));
        Contact::new(fields, id.to_string())
    }

    /// The contact's id.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// All fields, `id` included.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.0.fields
    }

    /// A field by name; dots reach into nested objects (`address.city`).
    pub fn field(&self, path: &str) -> Option<&Value> {
        if let Some(v) = self.0.fields.get(path) {
            return Some(v);
        }
        let mut parts = path.split('.');
        let mut cur = self.0.fields.get(parts.next()?)?;
        for p in parts {
            cur = cur.as_object()?.get(p)?;
        }
        Some(cur)
    }

    /// Sets a field (dots create nested objects); `id` cannot be changed.
    pub fn set_field(&mut self, path: &str, value: Value) {
        if path == "id" {
            return;
        }
        set_path(self.fields_mut(), path, value);
    }

    /// Merges the top-level keys of `changes` into the contact (a profile update).
    pub fn merge(&mut self, changes: &Map<String, Value>) {
        if changes.keys().all(|k| k == "id") {
            return;
        }
        let fields = self.fields_mut();
        for (k, v) in changes {
            if k != "id" {
                fields.insert(k.clone(), v.clone());
            }
        }
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.0
            .fields
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// The email address, if any.
    pub fn email(&self) -> Option<&str> {
        self.text("email")
    }

    /// The phone number, if any.
    pub fn phone(&self) -> Option<&str> {
        self.text("phone")
    }

    /// The contact's own time zone, when it names a valid one.
    pub fn timezone(&self) -> Option<Tz> {
        self.text("timezone").and_then(|s| s.trim().parse().ok())
    }

    /// Names in a list field (groups, tags, personas).
    pub fn names<'a>(&'a self, key: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .fields
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    }

    /// The push endpoints: (platform, endpoint) for android and apple.
    pub fn push_endpoints(&self) -> Vec<(&str, &str)> {
        let Some(push) = self.0.fields.get("push").and_then(Value::as_object) else {
            return Vec::new();
        };
        ["android", "apple"]
            .into_iter()
            .filter_map(|p| {
                push.get(p)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(|e| (p, e))
            })
            .collect()
    }

    /// The web push subscriptions stored on the contact (`web_push`: one object or a list).
    pub fn web_push_subscriptions(&self) -> Vec<&Value> {
        match self.0.fields.get("web_push") {
            Some(Value::Array(list)) => list.iter().filter(|v| v.is_object()).collect(),
            Some(v @ Value::Object(_)) => vec![v],
            _ => Vec::new(),
        }
    }

    /// True when the address (email or phone) is on the contact's `suppressed` list: a hard
    /// bounce, a complaint or an SMS opt-out put it there; nothing is sent to it again.
    pub fn is_suppressed(&self, address: &str) -> bool {
        self.names("suppressed")
            .any(|a| a.eq_ignore_ascii_case(address))
    }

    /// Replaces the contact's fields (its id stays: an `id` field is set back to it).
    pub fn replace_fields(&mut self, mut fields: Map<String, Value>) {
        fields.insert("id".into(), Value::String(self.id().to_string()));
        *self.fields_mut() = fields;
    }

    /// The recorded consent for a communication type: `Some(true)` subscribed,
    /// `Some(false)` unsubscribed, `None` no record. Every form input may carry reads (`0`,
    /// `"off"`, ...); a stored value that is none of them (an older build wrote input as it
    /// came; input refuses those now) reads as no record, as it always did: reading it as an
    /// opt-out would write opt-outs into the trail that the person never made.
    pub fn subscription(&self, kind: &str) -> Option<bool> {
        let v = self.0.fields.get("subscriptions")?.as_object()?.get(kind)?;
        crate::consent::parse_subscription(v)
    }

    /// The first consent value of `subscriptions` (or of a `subscriptions.<type>` key) that
    /// is neither a consent value nor "no record": input must say opt-in or opt-out.
    fn check_consent_values(fields: &Map<String, Value>) -> Result<(), ContactError> {
        let wrong = |kind: &str, v: &Value| {
            (!crate::consent::is_no_record(v) && crate::consent::parse_subscription(v).is_none())
                .then(|| ContactError::Consent {
                    kind: kind.to_string(),
                    value: v.to_string(),
                })
        };
        for (key, value) in fields {
            let found = if key == "subscriptions" {
                value
                    .as_object()
                    .and_then(|subs| subs.iter().find_map(|(kind, v)| wrong(kind, v)))
            } else if let Some(kind) = key.strip_prefix("subscriptions.") {
                wrong(kind, value)
            } else {
                None
            };
            if let Some(e) = found {
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Sets `path` in `fields`, dots creating nested objects (a value in the way is replaced):
/// what [`Contact::set_field`] does, for fields not yet read into a contact (an import row's
/// dotted columns, checked with the rest).
pub fn set_path(fields: &mut Map<String, Value>, path: &str, value: Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap_or(path);
    let mut cur = fields;
    for p in parts {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else { return };
        cur = next;
    }
    cur.insert(last.to_string(), value);
}

/// An activity or contact event (`purchase`, `page.visited`, `contact.updated`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityEvent {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Its name.
    pub name: String,
    /// Its other properties (`url` for page.visited, ...).
    #[serde(default)]
    pub properties: Map<String, Value>,
}

/// What a contact did with a send.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EngagementKind {
    /// The channel accepted delivery.
    Delivered,
    /// The message was opened.
    Opened,
    /// A link was clicked.
    Clicked,
    /// The message bounced.
    Bounced,
    /// The contact marked it as spam.
    Complained,
    /// The contact unsubscribed from it.
    Unsubscribed,
}

impl EngagementKind {
    /// All kinds, in the order events files name them.
    pub const ALL: [EngagementKind; 6] = [
        EngagementKind::Delivered,
        EngagementKind::Opened,
        EngagementKind::Clicked,
        EngagementKind::Bounced,
        EngagementKind::Complained,
        EngagementKind::Unsubscribed,
    ];

    /// Whether this kind of engagement can change the contact's consent (an unsubscribe, a
    /// complaint, a hard bounce): the others never read the contact for it.
    pub fn may_change_consent(self) -> bool {
        matches!(
            self,
            EngagementKind::Bounced | EngagementKind::Complained | EngagementKind::Unsubscribed
        )
    }

    /// The key used in files and conditions.
    pub fn as_str(self) -> &'static str {
        match self {
            EngagementKind::Delivered => "delivered",
            EngagementKind::Opened => "opened",
            EngagementKind::Clicked => "clicked",
            EngagementKind::Bounced => "bounced",
            EngagementKind::Complained => "complained",
            EngagementKind::Unsubscribed => "unsubscribed",
        }
    }
}

/// One engagement record, keyed by the step whose send it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Engagement {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The send step.
    pub step: String,
    /// What happened.
    pub kind: EngagementKind,
    /// For clicks: the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// For clicks: the link's tags (`link_attribute` in conditions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_tags: Vec<String>,
}

/// A send already made to the contact by this scenario (for frequency caps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMark {
    /// When it was sent.
    pub at: DateTime<Utc>,
}

/// Which parts of a [`History`] a scenario's engine reads, so a store reads only those
/// (see [`crate::Engine::history_needs`]): most scenarios read one part or none, and each
/// part is a query per contact and step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryNeeds {
    /// [`History::events`]: a condition on an activity event (`event:`).
    pub events: bool,
    /// [`History::engagement`]: a post-send condition (`opened:`, `clicked:`, ...).
    pub engagement: bool,
    /// [`History::sends`]: the scenario's own frequency cap.
    pub sends: bool,
}

impl HistoryNeeds {
    /// Every part (tests, and callers that show the whole history).
    pub const ALL: HistoryNeeds = HistoryNeeds {
        events: true,
        engagement: true,
        sends: true,
    };
}

/// What the engine knows of a contact's past, oldest first: activity events, engagement with
/// this scenario's sends and the scenario's earlier sends.
///
/// # Contract
/// The caller appends an input's own event or engagement before handing it to the engine,
/// and appends a [`SendMark`] for every send effect it applies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Activity and contact events.
    pub events: Vec<ActivityEvent>,
    /// Engagement records.
    pub engagement: Vec<Engagement>,
    /// Sends of this scenario to the contact.
    pub sends: Vec<SendMark>,
    /// Sends of every scenario to the contact, for the policy's frequency cap: filled only
    /// when the engine's policy has one (see [`crate::Engine::needs_contact_sends`]).
    pub contact_sends: Vec<SendMark>,
    /// The winners found so far among this scenario's variant send steps (step → message):
    /// filled only for a scenario with a winner rule (see
    /// [`crate::Engine::winner_steps`]).
    pub winners: BTreeMap<String, String>,
    /// Every scenario's opens and clicks of the contact, oldest first, for `at: best` delays:
    /// filled only when the scenario has one (see
    /// [`crate::Engine::needs_contact_engagement`]).
    pub contact_engagement: Vec<Engagement>,
}

/// Checks the contact's `email` and `phone` where it is written (see [`crate::address`]):
/// the email is kept trimmed, the phone in E.164 form; empty or null means none. Profile
/// updates carried by events are checked with it too.
pub fn check_addresses(fields: &mut Map<String, Value>) -> Result<(), ContactError> {
    for key in ["email", "phone"] {
        if let Some(value) = fields.get_mut(key) {
            check_address(key, value).map_err(|why| ContactError::Reserved { key, why })?;
        }
    }
    Ok(())
}

/// Checks one address field and writes its normalised form in place; an absent, null or
/// blank one is left as it is.
fn check_address(key: &str, value: &mut Value) -> Result<(), &'static str> {
    let check: fn(&str) -> Result<String, &'static str> = if key == "email" {
        crate::address::email
    } else {
        crate::address::phone
    };
    match value {
        Value::Null => Ok(()),
        Value::String(s) if s.trim().is_empty() => Ok(()),
        Value::String(s) => {
            *s = check(s)?;
            Ok(())
        }
        _ => Err("must be text"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The checks as they were written before the one-pass reading, one lookup each: the
    /// reference the property test holds the one pass to.
    fn checked_one_by_one(value: Value, stored: bool) -> Result<Contact, ContactError> {
        let Value::Object(mut fields) = value else {
            return Err(ContactError::NotAnObject);
        };
        let kept: Vec<(&str, Value)> = if stored {
            ["email", "phone"]
                .into_iter()
                .filter_map(|k| fields.get_mut(k).map(|v| (k, std::mem::take(v))))
                .collect()
        } else {
            Vec::new()
        };
        let id = match fields.get("id") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(ContactError::MissingId),
        };
        fields.insert("id".into(), Value::String(id.clone()));
        for key in ["groups", "tags", "personas", "suppressed"] {
            match fields.get(key) {
                None | Some(Value::Null | Value::Array(_)) => {}
                Some(Value::String(s)) => {
                    let list = s.split([';', ',']).map(str::trim).filter(|p| !p.is_empty());
                    let list = list.map(|p| Value::String(p.to_string())).collect();
                    fields.insert(key.to_string(), Value::Array(list));
                }
                Some(_) => {
                    return Err(ContactError::Reserved {
                        key: match key {
                            "groups" => "groups",
                            "tags" => "tags",
                            "suppressed" => "suppressed",
                            _ => "personas",
                        },
                        why: "must be a list of names",
                    });
                }
            }
        }
        for key in ["subscriptions", "push"] {
            if !matches!(fields.get(key), None | Some(Value::Null | Value::Object(_))) {
                return Err(ContactError::Reserved {
                    key: if key == "push" {
                        "push"
                    } else {
                        "subscriptions"
                    },
                    why: "must be an object",
                });
            }
        }
        for (key, check) in [
            (
                "email",
                crate::address::email as fn(&str) -> Result<String, &'static str>,
            ),
            ("phone", crate::address::phone),
        ] {
            let normalised = match fields.get(key) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) if s.trim().is_empty() => continue,
                Some(Value::String(s)) => {
                    check(s).map_err(|why| ContactError::Reserved { key, why })?
                }
                Some(_) => {
                    return Err(ContactError::Reserved {
                        key,
                        why: "must be text",
                    });
                }
            };
            fields.insert(key.to_string(), Value::String(normalised));
        }
        for (k, v) in kept {
            fields.insert(k.to_string(), v);
        }
        if !stored {
            Contact::check_consent_values(&fields)?;
            Contact::check_timezone(&fields)?;
        }
        Ok(Contact::new(fields, id))
    }

    fn any_field() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Value::Null),
            Just(json!([])),
            Just(json!(["a"])),
            Just(json!({})),
            Just(json!(12)),
            Just(json!(true)),
            Just(json!("")),
            Just(json!("  ")),
            Just(json!("a; b,,c")),
            Just(json!("Ana@Example.org ")),
            Just(json!("not an email")),
            Just(json!("+33 6 12 34 56 78")),
            Just(json!("0612345678")),
        ]
    }

    proptest::proptest! {
        /// Reading in one pass gives what the checks one by one gave: the same contact with
        /// its fields in the same order, or the same error, for input and stored contacts.
        #[test]
        fn one_pass_is_the_checks_one_by_one(
            fields in proptest::collection::vec(
                (proptest::sample::select(vec!["id", "groups", "tags", "personas", "suppressed", "subscriptions", "push", "email", "phone", "name"]), any_field()),
                0..8,
            ),
            stored in proptest::bool::ANY,
        ) {
            let mut map = Map::new();
            for (k, v) in fields {
                map.insert(k.to_string(), v);
            }
            let value = Value::Object(map);
            let ours = if stored { Contact::from_stored(value.clone()) } else { Contact::from_json(value.clone()) };
            let reference = checked_one_by_one(value, stored);
            proptest::prop_assert_eq!(
                ours.as_ref().map(|c| c.fields().iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>()),
                reference.as_ref().map(|c| c.fields().iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>())
            );
            proptest::prop_assert_eq!(ours.map(|c| c.id().to_string()), reference.map(|c| c.id().to_string()));
        }
    }

    #[test]
    fn ids_are_required_and_numbers_become_strings() {
        assert_eq!(
            Contact::from_json(json!({"email": "x"})),
            Err(ContactError::MissingId)
        );
        assert_eq!(
            Contact::from_json(json!([])),
            Err(ContactError::NotAnObject)
        );
        assert_eq!(
            Contact::from_json(json!({"id": 42})).map(|c| c.id().to_string()),
            Ok("42".to_string())
        );
    }

    /// Input says opt-in or opt-out for each communication type, in any of the forms other
    /// systems export; anything else is refused with the type and the value, because "no
    /// record" counts as subscribed. A stored value that is not one reads as unsubscribed.
    #[test]
    fn consent_values_are_read_in_every_form_and_others_are_refused() {
        for (value, want) in [
            (json!(false), Some(false)),
            (json!(0), Some(false)),
            (json!("0"), Some(false)),
            (json!("off"), Some(false)),
            (json!("N"), Some(false)),
            (json!("opt-out"), Some(false)),
            (json!(" Unsubscribed "), Some(false)),
            (json!(1), Some(true)),
            (json!("yes"), Some(true)),
            (json!("Opt-In"), Some(true)),
            (json!(null), None),
            (json!(""), None),
        ] {
            let c =
                Contact::from_json(json!({"id": "a", "subscriptions": {"news": value.clone()}}))
                    .unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(c.subscription("news"), want, "{value}");
        }
        for value in [json!("maybe"), json!(2), json!({"x": 1}), json!([false])] {
            let refused =
                Contact::from_json(json!({"id": "a", "subscriptions": {"news": value.clone()}}));
            let Err(e) = refused else {
                panic!("{value} was accepted")
            };
            assert!(
                e.to_string().starts_with(&format!(
                    "\"subscriptions.news\": {value} is not a consent value"
                )),
                "{e}"
            );
            // The dotted form is held to the same rule.
            assert!(Contact::from_json(json!({"id": "a", "subscriptions.news": value})).is_err());
        }
        // A time zone that is not one is refused too (the scenario's was used without a word).
        let zone = Contact::from_json(json!({"id": "a", "timezone": "Mars/Base"}));
        assert_eq!(
            zone.err().map(|e| e.to_string()),
            Some("\"timezone\" is not a time zone: an IANA name, in its case, such as Europe/Paris or America/New_York".into())
        );
        assert!(Contact::from_json(json!({"id": "a", "timezone": "Europe/Paris"})).is_ok());
        assert!(Contact::from_json(json!({"id": "a", "timezone": ""})).is_ok());
        // Stored by an older build as it came: read as no record, as it always was (reading
        // it as an opt-out would put opt-outs nobody made into the trail); "0" stored so reads
        // as the opt-out it meant.
        let stored = Contact::from_stored(
            json!({"id": "a", "subscriptions": {"news": "pending", "sms": "0"}}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stored.subscription("news"), None);
        assert_eq!(stored.subscription("sms"), Some(false));
    }

    #[test]
    fn dotted_fields_reach_nested_objects() {
        let mut c = Contact::from_json(json!({"id": "a", "address": {"city": "Lyon"}, "a.b": 1}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.field("address.city"), Some(&json!("Lyon")));
        assert_eq!(c.field("a.b"), Some(&json!(1)));
        assert_eq!(c.field("address.zip"), None);
        c.set_field("address.zip", json!("69001"));
        assert_eq!(c.field("address.zip"), Some(&json!("69001")));
        c.set_field("id", json!("other"));
        assert_eq!(c.id(), "a");
    }

    #[test]
    fn csv_lists_and_reserved_shapes() {
        let c = Contact::from_json(json!({"id": "a", "groups": "vip; beta"}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.names("groups").collect::<Vec<_>>(), vec!["vip", "beta"]);
        assert!(Contact::from_json(json!({"id": "a", "push": "x"})).is_err());
        let c = Contact::from_json(json!({"id": "a", "subscriptions": {"newsletter": "unsubscribed", "offers": true}, "push": {"apple": "arn"}}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.subscription("newsletter"), Some(false));
        assert_eq!(c.subscription("offers"), Some(true));
        assert_eq!(c.subscription("other"), None);
        assert_eq!(c.push_endpoints(), vec![("apple", "arn")]);
    }

    #[test]
    fn hostile_bad_addresses_are_refused_naming_the_key() {
        let refused = |v: Value| match Contact::from_json(v) {
            Err(ContactError::Reserved { key, .. }) => key,
            other => panic!("accepted or wrong error: {other:?}"),
        };
        assert_eq!(
            refused(json!({"id": "a", "email": "a@example.com\r\nBcc: victim@example.com"})),
            "email"
        );
        assert_eq!(refused(json!({"id": "a", "email": "nobody"})), "email");
        assert_eq!(
            refused(json!({"id": "a", "email": ["a@example.com"]})),
            "email"
        );
        assert_eq!(refused(json!({"id": "a", "phone": "0612345678"})), "phone");
        assert_eq!(
            refused(json!({"id": "a", "phone": 33612345678_u64})),
            "phone"
        );
        // Absent, null and empty mean no address.
        for v in [json!(null), json!(""), json!("  ")] {
            assert!(Contact::from_json(json!({"id": "a", "email": v, "phone": v})).is_ok());
        }
        let c = Contact::from_json(
            json!({"id": "a", "email": " a@example.com", "phone": "+33 6 12 34 56 78"}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.email(), Some("a@example.com"));
        assert_eq!(c.phone(), Some("+33612345678"));
    }

    #[test]
    fn stored_contacts_read_whatever_their_address() {
        // Written before addresses were checked: still readable, as written.
        let c = Contact::from_stored(json!({"id": "a", "email": "nobody", "tags": "x;y"}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.email(), Some("nobody"));
        assert_eq!(c.names("tags").count(), 2);
        let keys: Vec<&String> = c.fields().keys().collect();
        assert_eq!(keys, ["id", "email", "tags"]);
    }
}
