//! The JSON Schema of scenario files (`relance schema`), for editors to validate and complete
//! them. It is generated from the loader's own types ([`crate::scenario::ScenarioFile`] and
//! the types it reads each part as), so the format is described once, where it is read.

use serde_json::Value;

/// The JSON Schema of scenario files.
pub fn scenario_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(crate::scenario::ScenarioFile))
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{LAUNCH_KEYS, MESSAGE_KEYS, STEP_KEYS, TOP_KEYS};

    fn keys(schema: &Value, def: Option<&str>) -> Vec<String> {
        let node = match def {
            Some(d) => &schema["$defs"][d],
            None => schema,
        };
        let mut k: Vec<String> = node["properties"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    }

    fn sorted(list: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn the_schema_lists_exactly_the_keys_the_loader_reads() {
        let s = scenario_schema();
        assert_eq!(keys(&s, None), sorted(&TOP_KEYS));
        assert_eq!(keys(&s, Some("Step")), sorted(&STEP_KEYS));
        // The launch is inlined where the file has it.
        assert_eq!(keys(&s["properties"]["launch"], None), sorted(&LAUNCH_KEYS));
        assert_eq!(keys(&s, Some("Message")), sorted(&MESSAGE_KEYS));
        assert_eq!(s["required"], serde_json::json!(["id", "launch", "steps"]));
        for node in [
            &s,
            &s["$defs"]["Step"],
            &s["properties"]["launch"],
            &s["$defs"]["Message"],
        ] {
            assert_eq!(node["additionalProperties"], Value::Bool(false));
        }
        assert_eq!(s["$defs"]["Step"]["required"], serde_json::json!(["id"]));
    }

    /// Where `value` breaks `schema`, if it does: the subset of JSON Schema the generated
    /// schema uses (`$ref`, type, enum, const, properties, required, additionalProperties,
    /// items, anyOf, oneOf, minimum, maximum; patterns are not checked).
    fn violation(root: &Value, schema: &Value, value: &Value, at: &str) -> Option<String> {
        let Some(s) = schema.as_object() else {
            return (schema == &Value::Bool(false)).then(|| format!("{at}: not allowed"));
        };
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let def = r.trim_start_matches("#/$defs/");
            if let Some(v) = violation(root, &root["$defs"][def], value, at) {
                return Some(v);
            }
        }
        if let Some(t) = s.get("type") {
            let types: Vec<&str> = match t {
                Value::String(one) => vec![one.as_str()],
                Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            let fits = |t: &str| match t {
                "null" => value.is_null(),
                "boolean" => value.is_boolean(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "array" => value.is_array(),
                "object" => value.is_object(),
                _ => false,
            };
            if !types.iter().any(|t| fits(t)) {
                return Some(format!("{at}: not {types:?}"));
            }
        }
        if let Some(e) = s.get("enum").and_then(Value::as_array)
            && !e.contains(value)
        {
            return Some(format!("{at}: not one of {e:?}"));
        }
        if let Some(c) = s.get("const")
            && c != value
        {
            return Some(format!("{at}: not {c}"));
        }
        if let Some(n) = value.as_f64() {
            if s.get("minimum")
                .and_then(Value::as_f64)
                .is_some_and(|m| n < m)
            {
                return Some(format!("{at}: below the minimum"));
            }
            if s.get("maximum")
                .and_then(Value::as_f64)
                .is_some_and(|m| n > m)
            {
                return Some(format!("{at}: above the maximum"));
            }
        }
        if let Some(alts) = s.get("anyOf").and_then(Value::as_array)
            && alts.iter().all(|a| violation(root, a, value, at).is_some())
        {
            return Some(format!("{at}: matches no anyOf"));
        }
        if let Some(alts) = s.get("oneOf").and_then(Value::as_array) {
            let n = alts
                .iter()
                .filter(|a| violation(root, a, value, at).is_none())
                .count();
            if n != 1 {
                return Some(format!("{at}: matches {n} of oneOf"));
            }
        }
        if let Some(obj) = value.as_object() {
            let props = s.get("properties").and_then(Value::as_object);
            for req in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(k) = req.as_str()
                    && !obj.contains_key(k)
                {
                    return Some(format!("{at}: missing {k}"));
                }
            }
            for (k, v) in obj {
                let sub = props
                    .and_then(|p| p.get(k))
                    .or(s.get("additionalProperties"));
                if let Some(sub) = sub
                    && let Some(e) = violation(root, sub, v, &format!("{at}.{k}"))
                {
                    return Some(e);
                }
            }
        }
        if let (Some(items), Some(list)) = (s.get("items"), value.as_array()) {
            for (i, v) in list.iter().enumerate() {
                if let Some(e) = violation(root, items, v, &format!("{at}[{i}]")) {
                    return Some(e);
                }
            }
        }
        None
    }

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_example_validates_against_the_schema() {
        let schema = scenario_schema();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{e}")) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
                let doc = yaml(&text);
                assert_eq!(
                    violation(&schema, &schema, &doc, "$"),
                    None,
                    "{}",
                    path.display()
                );
                seen += 1;
            }
        }
        assert!(seen >= 9, "only {seen} examples");
    }

    #[test]
    fn the_schema_refuses_what_the_loader_refuses() {
        let schema = scenario_schema();
        let base = "id: x\nlaunch: {type: manual}\nsteps:\n  - {id: a, end: success}\n";
        assert_eq!(violation(&schema, &schema, &yaml(base), "$"), None);
        for (bad, why) in [
            ("id: x\nsteps: []\n", "missing launch"),
            (&format!("{base}lauch: 1\n"), "$.lauch: not allowed"),
            (
                "id: x\nlaunch: {type: sometimes}\nsteps: []\n",
                "$.launch.type",
            ),
            (
                "id: x\nlaunch: {type: trigger, event: cart.abandoned, inactivity_minutes: 5}\nsteps: []\n",
                "below the minimum",
            ),
            (
                "id: x\nlaunch: {type: manual}\nsteps:\n  - {end: success}\n",
                "missing id",
            ),
            (
                "id: x\nlaunch: {type: manual}\nsteps:\n  - {id: a, sned: m}\n",
                "$.steps[0].sned",
            ),
            (
                "id: x\nlaunch: {type: manual}\nconsent: sometimes\nsteps: []\n",
                "$.consent",
            ),
            (
                "id: x\nlaunch: {type: manual}\nsteps:\n  - {id: a, if: {tag: vip, extra: 1}, then: a, else: a}\n",
                "$.steps[0].if",
            ),
            (
                "id: x\nlaunch: {type: manual}\nsteps:\n  - {id: a, action: {tag: {add: [x]}, group: {add: [y]}}, next: a}\n",
                "$.steps[0].action",
            ),
            (
                "id: x\nlaunch: {type: manual}\nmessages:\n  m: {channel: fax}\nsteps: []\n",
                "$.messages.m.channel",
            ),
        ] {
            let got = violation(&schema, &schema, &yaml(bad), "$");
            assert!(
                got.as_ref().is_some_and(|g| g.contains(why)),
                "{bad}: {got:?}"
            );
        }
    }
}
