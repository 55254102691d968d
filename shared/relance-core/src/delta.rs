//! A contact's changes as changes, not whole values: what a transition did to the contact it
//! read, replayed later onto the contact as stored then (another writer may have changed
//! other fields, other names of a list, or opted the contact out in between).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::contact::Contact;

/// One change of a contact, at a path of object keys (a key may hold a dot: a path is a list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FieldChange {
    /// The value at `path` becomes `value` (objects on the way are made).
    Set {
        /// Object keys from the contact's top level.
        path: Vec<String>,
        /// The new value.
        value: Value,
    },
    /// The value at `path` is removed.
    Remove {
        /// Object keys from the contact's top level.
        path: Vec<String>,
    },
    /// The list of names at `path` (tags, groups, suppressed addresses) gains `add` and loses
    /// `remove`; the names another writer added or removed meanwhile stay as they are.
    Names {
        /// Object keys from the contact's top level.
        path: Vec<String>,
        /// Names added, in the order they came.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        add: Vec<String>,
        /// Names removed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        remove: Vec<String>,
    },
}

/// What changed from one version of a contact to another (never its `id`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContactDelta(pub Vec<FieldChange>);

impl ContactDelta {
    /// The changes that make `before` into `after`: objects compared key by key, lists of
    /// names (arrays of text on both sides) by the names added and removed, any other value
    /// replaced whole.
    pub fn between(before: &Contact, after: &Contact) -> ContactDelta {
        let mut changes = Vec::new();
        diff(
            before.fields(),
            after.fields(),
            &mut Vec::new(),
            &mut changes,
        );
        changes.retain(|c| c.path().first().is_some_and(|k| k != "id"));
        ContactDelta(changes)
    }

    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Applies the changes to `contact`, in order. `apply_to(between(a, b), a) == b`.
    pub fn apply_to(&self, contact: &mut Contact) {
        let mut fields = contact.fields().clone();
        for change in &self.0 {
            change.apply(&mut fields);
        }
        contact.replace_fields(fields);
    }
}

impl FieldChange {
    fn path(&self) -> &[String] {
        match self {
            FieldChange::Set { path, .. }
            | FieldChange::Remove { path }
            | FieldChange::Names { path, .. } => path,
        }
    }

    fn apply(&self, fields: &mut Map<String, Value>) {
        let Some((last, parents)) = self.path().split_last() else {
            return;
        };
        let mut at = fields;
        for key in parents {
            // A removal under a path that is gone changes nothing; a value is set under
            // objects made on the way (as `Contact::set_field` does).
            if matches!(self, FieldChange::Remove { .. }) {
                let Some(Value::Object(next)) = at.get_mut(key) else {
                    return;
                };
                at = next;
                continue;
            }
            let entry = at
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let Value::Object(next) = entry else { return };
            at = next;
        }
        match self {
            FieldChange::Set { value, .. } => {
                at.insert(last.clone(), value.clone());
            }
            FieldChange::Remove { .. } => {
                at.remove(last);
            }
            FieldChange::Names { add, remove, .. } => {
                let mut names: Vec<Value> = match at.get(last) {
                    Some(Value::Array(items)) => items.clone(),
                    _ => Vec::new(),
                };
                names.retain(|n| !n.as_str().is_some_and(|n| remove.iter().any(|r| r == n)));
                for name in add {
                    if !names.iter().any(|n| n.as_str() == Some(name)) {
                        names.push(Value::String(name.clone()));
                    }
                }
                at.insert(last.clone(), Value::Array(names));
            }
        }
    }
}

/// The names of an array whose items are all text.
fn names_of(v: &Value) -> Option<Vec<&str>> {
    v.as_array()?.iter().map(Value::as_str).collect()
}

fn diff(
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    path: &mut Vec<String>,
    out: &mut Vec<FieldChange>,
) {
    let at = |path: &Vec<String>, key: &str| {
        let mut p = path.clone();
        p.push(key.to_string());
        p
    };
    for (key, was) in before {
        if !after.contains_key(key) {
            out.push(FieldChange::Remove {
                path: at(path, key),
            });
        } else if let Some(now) = after.get(key).filter(|now| *now != was) {
            match (was, now) {
                (Value::Object(a), Value::Object(b)) => {
                    path.push(key.clone());
                    diff(a, b, path, out);
                    path.pop();
                }
                _ => out.push(names_or_whole(key, Some(was), now, at(path, key))),
            }
        }
    }
    for (key, now) in after {
        if before.contains_key(key) {
            continue;
        }
        // A new object is its keys set one by one, a new list of names its names added: what
        // another writer put there meanwhile (an object or a list the transition did not see)
        // stays beside them.
        match now {
            Value::Object(inner) if !inner.is_empty() => {
                path.push(key.clone());
                diff(&Map::new(), inner, path, out);
                path.pop();
            }
            _ => out.push(names_or_whole(key, None, now, at(path, key))),
        }
    }
}

/// The change of the value at `key` from `was` (absent: `None`) to `now`: the names added and
/// removed when both are lists of names and those make `now` from `was`, else `now` whole.
fn names_or_whole(key: &str, was: Option<&Value>, now: &Value, path: Vec<String>) -> FieldChange {
    let whole = |path| FieldChange::Set {
        path,
        value: now.clone(),
    };
    let (Some(a), Some(b)) = (was.map_or(Some(Vec::new()), names_of), names_of(now)) else {
        return whole(path);
    };
    let mut add: Vec<String> = Vec::new();
    for n in b.iter().filter(|n| !a.contains(n)) {
        if !add.iter().any(|x| x == n) {
            add.push(n.to_string());
        }
    }
    let remove: Vec<String> = a
        .iter()
        .filter(|n| !b.contains(n))
        .map(|n| n.to_string())
        .collect();
    let names = FieldChange::Names {
        path: vec![key.to_string()],
        add,
        remove,
    };
    let mut check = Map::new();
    if let Some(was) = was {
        check.insert(key.to_string(), was.clone());
    }
    names.apply(&mut check);
    match names {
        // Names when they make the new list from the old one; a list reordered or with names
        // repeated is set whole.
        FieldChange::Names { add, remove, .. } if check.get(key) == Some(now) => {
            FieldChange::Names { path, add, remove }
        }
        _ => whole(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn contact(v: Value) -> Contact {
        Contact::from_stored(v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_transitions_changes_replayed_onto_a_contact_changed_meanwhile_keep_both() {
        let read = contact(
            json!({"id": "a", "name": "A", "tags": ["vip"], "plan": {"tier": "free", "seats": 1}, "subscriptions": {"news": true}}),
        );
        // The transition: tagged, upgraded, opted out of news.
        let done = contact(
            json!({"id": "a", "name": "A", "tags": ["vip", "upgraded"], "plan": {"tier": "pro", "seats": 1}, "subscriptions": {"news": false}}),
        );
        let delta = ContactDelta::between(&read, &done);
        assert_eq!(
            delta.0,
            vec![
                FieldChange::Names {
                    path: vec!["tags".into()],
                    add: vec!["upgraded".into()],
                    remove: vec![]
                },
                FieldChange::Set {
                    path: vec!["plan".into(), "tier".into()],
                    value: json!("pro")
                },
                FieldChange::Set {
                    path: vec!["subscriptions".into(), "news".into()],
                    value: json!(false)
                },
            ]
        );
        // Meanwhile: renamed, tagged, another seat, opted out of promo.
        let mut stored = contact(
            json!({"id": "a", "name": "B", "tags": ["vip", "beta"], "plan": {"tier": "free", "seats": 2}, "subscriptions": {"news": true, "promo": false}}),
        );
        delta.apply_to(&mut stored);
        assert_eq!(
            stored.fields(),
            contact(json!({"id": "a", "name": "B", "tags": ["vip", "beta", "upgraded"], "plan": {"tier": "pro", "seats": 2}, "subscriptions": {"news": false, "promo": false}})).fields()
        );
        // The round trip through the pending effects' text.
        let text = serde_json::to_string(&delta).unwrap_or_default();
        let back: ContactDelta = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, delta);
    }

    #[test]
    fn an_object_or_a_list_the_transition_created_keeps_what_another_writer_put_there() {
        let read = contact(json!({"id": "a"}));
        let done = contact(json!({"id": "a", "subscriptions": {"offers": false}, "tags": ["new"]}));
        let delta = ContactDelta::between(&read, &done);
        let mut stored =
            contact(json!({"id": "a", "subscriptions": {"news": true}, "tags": ["beta"]}));
        delta.apply_to(&mut stored);
        assert_eq!(
            stored.fields(),
            contact(json!({"id": "a", "subscriptions": {"news": true, "offers": false}, "tags": ["beta", "new"]})).fields()
        );
    }

    #[test]
    fn removals_and_replacements_of_other_kinds_apply_whole() {
        let read =
            contact(json!({"id": "a", "gone": 1, "score": 3, "note": ["x"], "odd": ["b", "a"]}));
        let done = contact(json!({"id": "a", "score": {"n": 4}, "note": "x", "odd": ["a", "b"]}));
        let delta = ContactDelta::between(&read, &done);
        let mut stored =
            contact(json!({"id": "a", "gone": 2, "score": 5, "note": ["y"], "odd": ["c"]}));
        delta.apply_to(&mut stored);
        assert_eq!(
            stored.fields(),
            contact(json!({"id": "a", "score": {"n": 4}, "note": "x", "odd": ["a", "b"]})).fields()
        );
        // Removing under a value that is no longer an object changes nothing.
        let delta = ContactDelta(vec![FieldChange::Remove {
            path: vec!["score".into(), "n".into()],
        }]);
        let mut flat = contact(json!({"id": "a", "score": 5}));
        delta.apply_to(&mut flat);
        assert_eq!(flat.fields()["score"], json!(5));
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (0i64..5).prop_map(|n| json!(n)),
            "[a-c]{0,2}".prop_map(Value::String),
            prop::collection::vec("[a-d]", 0..4).prop_map(|v| json!(v)),
        ]
    }

    fn fields() -> impl Strategy<Value = Map<String, Value>> {
        let value = leaf().prop_recursive(2, 12, 4, |inner| {
            prop::collection::btree_map("[a-d.]{1,2}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        });
        prop::collection::btree_map("[a-e.]{1,2}", value, 0..5)
            .prop_map(|m| m.into_iter().collect())
    }

    fn with_id(mut fields: Map<String, Value>) -> Contact {
        fields.insert("id".into(), json!("a"));
        contact(Value::Object(fields))
    }

    proptest! {
        /// Replayed onto the contact it was taken from, a delta gives the other version.
        #[test]
        fn a_delta_replayed_onto_its_first_version_gives_the_second(a in fields(), b in fields()) {
            let (a, b) = (with_id(a), with_id(b));
            let mut replayed = a.clone();
            ContactDelta::between(&a, &b).apply_to(&mut replayed);
            prop_assert_eq!(replayed.fields(), b.fields());
        }

        /// Replayed onto a contact another writer changed at top-level keys the delta does not
        /// touch, both changes are in the result.
        #[test]
        fn a_delta_keeps_what_another_writer_changed_elsewhere(a in fields(), b in fields(), other in "[f-h]{1,3}", value in leaf()) {
            let (a, b) = (with_id(a), with_id(b));
            let mut stored = a.clone();
            let mut extra = stored.fields().clone();
            extra.insert(other.clone(), value.clone());
            stored.replace_fields(extra);
            ContactDelta::between(&a, &b).apply_to(&mut stored);
            let mut want = b.fields().clone();
            want.insert(other, value);
            prop_assert_eq!(stored.fields(), &want);
        }
    }
}
