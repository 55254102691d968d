//! The public acceptance cases of `tests/cases/*/`, run through the built `relance` binary with
//! the semantics of the shared checker (`shared/acceptance/check.py`), so they are checked
//! without it; and the workspace's global control group, which the shared format cannot
//! express (it has no policy input).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn cases_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cases")
}

/// An instant as check.py compares them: the offset required, whole seconds.
fn when(s: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc).timestamp())
        .map_err(|e| format!("bad timestamp {s:?}: {e}"))
}

/// Python's `==` on decoded JSON: numbers compare by value (30 equals 30.0).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Every key of `want` equal in `record` (a missing key equals null); `at` as an instant.
fn matches(record: &Value, want: &Value) -> bool {
    want.as_object().is_some_and(|want| {
        want.iter().all(|(k, v)| {
            let got = record.get(k).unwrap_or(&Value::Null);
            if k == "at" {
                match (got.as_str(), v.as_str()) {
                    (Some(g), Some(w)) => when(g).ok().is_some_and(|g| when(w) == Ok(g)),
                    _ => false,
                }
            } else {
                same(got, v)
            }
        })
    })
}

fn scenario_file(case: &Path) -> Result<PathBuf, String> {
    ["scenario.yaml", "scenario.yml", "scenario.json"]
        .iter()
        .map(|name| case.join(name))
        .find(|p| p.exists())
        .ok_or_else(|| "no scenario file".to_string())
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// What is wrong with one case; empty when it passes.
fn run_case(case: &Path) -> Result<Vec<String>, String> {
    let spec_text =
        std::fs::read_to_string(case.join("case.json")).map_err(|e| format!("case.json: {e}"))?;
    let spec: Value = serde_json::from_str(&spec_text).map_err(|e| format!("case.json: {e}"))?;
    let scenario = scenario_file(case)?;
    let relance = env!("CARGO_BIN_EXE_relance");
    if spec.get("validate").and_then(Value::as_bool) == Some(true) {
        let out = Command::new(relance)
            .arg("validate")
            .arg(&scenario)
            .output()
            .map_err(|e| e.to_string())?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut problems = Vec::new();
        if out.status.success() {
            problems.push("validate exited 0 for an invalid scenario".to_string());
        }
        for t in spec["expect_errors_mentioning"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if !said.contains(&text(t)) {
                problems.push(format!("no error mentions {t}"));
            }
        }
        return Ok(problems);
    }
    let mut cmd = Command::new(relance);
    cmd.arg("simulate")
        .arg(&scenario)
        .arg("--contacts")
        .arg(case.join("contacts.jsonl"))
        .args(["--start", &text(&spec["start"])])
        .args(["--until", &text(&spec["until"])]);
    if case.join("events.jsonl").exists() {
        cmd.arg("--events").arg(case.join("events.jsonl"));
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Ok(vec![format!(
            "simulate exited {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )]);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut records = Vec::new();
    for (n, line) in stdout.lines().enumerate() {
        if !line.trim().is_empty() {
            records.push(
                serde_json::from_str::<Value>(line)
                    .map_err(|_| format!("stdout line {} is not JSON: {line}", n + 1))?,
            );
        }
    }
    Ok(check_records(&records, &spec["expect"]))
}

/// check.py's expectations: `sends` an exact multiset (a null time matches any time), `ends`
/// once each, `not_entered`, `records` matching exactly one record, `no_records` none.
fn check_records(records: &[Value], expect: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut last = i64::MIN;
    for r in records {
        for key in ["at", "contact", "kind"] {
            if r.get(key).is_none() {
                return vec![format!("record without {key:?}: {r}")];
            }
        }
        let Ok(t) = when(&text(&r["at"])) else {
            return vec![format!("record with a bad at: {r}")];
        };
        if t < last {
            problems.push(format!("records out of time order at {r}"));
        }
        last = t;
    }
    let kind = |r: &&Value, k: &str| r["kind"] == k;
    if let Some(sends) = expect.get("sends").and_then(Value::as_array) {
        let key = |c: &Value, step: &Value| (text(c), step.as_str().map(str::to_string));
        // Timed expectations first, then the untimed ones take what is left.
        let mut timed: HashMap<(String, Option<String>, i64), i64> = HashMap::new();
        let mut any: HashMap<(String, Option<String>), i64> = HashMap::new();
        for s in sends {
            let (c, step) = key(&s[0], &s[1]);
            match s[2].as_str().filter(|a| !a.is_empty()) {
                Some(at) => match when(at) {
                    Ok(t) => *timed.entry((c, step, t)).or_default() += 1,
                    Err(e) => problems.push(e),
                },
                None => *any.entry((c, step)).or_default() += 1,
            }
        }
        let mut unmatched: HashMap<(String, Option<String>), i64> = HashMap::new();
        for r in records.iter().filter(|r| kind(r, "sent")) {
            let (c, step) = key(&r["contact"], r.get("step").unwrap_or(&Value::Null));
            let t = when(&text(&r["at"])).unwrap_or_default();
            match timed.get_mut(&(c.clone(), step.clone(), t)) {
                Some(n) if *n > 0 => *n -= 1,
                _ => *unmatched.entry((c, step)).or_default() += 1,
            }
        }
        for ((c, step, t), n) in &timed {
            if *n > 0 {
                problems.push(format!("missing send {c}/{step:?} at {t} (unix seconds)"));
            }
        }
        for (k, n) in unmatched {
            let left = any.entry(k.clone()).or_default();
            let take = n.min(*left);
            *left -= take;
            if n > take {
                problems.push(format!("unexpected send {}/{:?} x{}", k.0, k.1, n - take));
            }
        }
        for ((c, step), n) in any {
            if n > 0 {
                problems.push(format!("missing send {c}/{step:?}"));
            }
        }
    }
    for (c, end) in expect
        .get("ends")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let ends: Vec<&Value> = records
            .iter()
            .filter(|r| kind(r, "ended") && r["contact"] == **c)
            .map(|r| r.get("end").unwrap_or(&Value::Null))
            .collect();
        if ends.len() != 1 || !same(ends[0], end) {
            problems.push(format!("{c} ended {ends:?}, expected [{end}]"));
        }
    }
    for want in expect["records"].as_array().into_iter().flatten() {
        let n = records.iter().filter(|r| matches(r, want)).count();
        if n != 1 {
            problems.push(format!("{n} records match {want}, expected exactly 1"));
        }
    }
    for want in expect["no_records"].as_array().into_iter().flatten() {
        if let Some(hit) = records.iter().find(|r| matches(r, want)) {
            problems.push(format!("a record matches {want}, expected none: {hit}"));
        }
    }
    for c in expect["not_entered"].as_array().into_iter().flatten() {
        if records
            .iter()
            .any(|r| kind(&r, "entered") && r["contact"] == *c)
        {
            problems.push(format!("{c} entered but must not"));
        }
    }
    problems
}

/// Every folder of `tests/cases` passes; the report names each failing case and why.
#[test]
fn the_public_acceptance_cases_pass() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(cases_root())
        .unwrap_or_else(|e| panic!("{}: {e}", cases_root().display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "only {} cases found", cases.len());
    let mut failed = Vec::new();
    for case in &cases {
        let name = case.file_name().map(|n| n.to_string_lossy().into_owned());
        let problems = run_case(case).unwrap_or_else(|e| vec![e]);
        if !problems.is_empty() {
            failed.push(format!(
                "FAIL {}\n    {}",
                name.unwrap_or_default(),
                problems.join("\n    ")
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

/// The checker itself catches what it must: a send at another time, a missing record, a
/// record that must not be there, a second end, a value of another number.
#[test]
fn the_checker_rejects_what_check_py_rejects() {
    let records: Vec<Value> = [
        r#"{"at":"2026-12-01T09:00:00Z","contact":"a","kind":"entered"}"#,
        r#"{"at":"2026-12-01T09:00:00Z","contact":"a","kind":"sent","step":"s"}"#,
        r#"{"at":"2026-12-01T10:00:00+01:00","contact":"a","kind":"converted","value":30.0}"#,
        r#"{"at":"2026-12-01T09:00:00Z","contact":"a","kind":"ended","end":"success"}"#,
    ]
    .iter()
    .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}")))
    .collect();
    let ok: Value = serde_json::from_str(
        r#"{"sends": [["a", "s", "2026-12-01T09:00:00Z"]], "ends": {"a": "success"},
            "records": [{"contact": "a", "kind": "converted", "value": 30, "at": "2026-12-01T09:00:00Z", "step": null}],
            "no_records": [{"kind": "converted", "value": 31}], "not_entered": ["b"]}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(check_records(&records, &ok), Vec::<String>::new());
    for bad in [
        r#"{"sends": [["a", "s", "2026-12-01T09:00:01Z"]]}"#,
        r#"{"sends": [["a", "s", null], ["a", "s", null]]}"#,
        r#"{"sends": []}"#,
        r#"{"ends": {"a": "neutral"}}"#,
        r#"{"records": [{"contact": "a", "kind": "converted", "value": 31}]}"#,
        r#"{"records": [{"contact": "a", "kind": "sent", "at": "2026-12-01T09:00:01Z"}]}"#,
        r#"{"no_records": [{"contact": "a", "kind": "converted"}]}"#,
        r#"{"not_entered": ["a"]}"#,
    ] {
        let expect: Value = serde_json::from_str(bad).unwrap_or_else(|e| panic!("{e}"));
        assert!(!check_records(&records, &expect).is_empty(), "{bad} passed");
    }
}

/// The global control group's bucket, computed apart from the product: the first 8 bytes of
/// SHA-256("holdout:{seed}:{contact}") big-endian, mod 10000.
fn global_bucket(seed: &str, contact: &str) -> u64 {
    let digest = Sha256::digest(format!("holdout:{seed}:{contact}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % 10_000
}

/// `simulate --policy` with `holdout: {percent: 25, seed: "2026"}`: the members (buckets below
/// 2500) enter, are skipped `global_holdout` on the newsletter, still get the transactional
/// receipt, end, and convert; the others get both messages.
#[test]
fn the_global_control_group_is_sent_only_transactional_messages() {
    let dir = std::env::temp_dir().join(format!("relance-cases-{}-global", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let write = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap_or_else(|e| panic!("{e}"));
        p
    };
    let scenario = write(
        "s.yaml",
        "id: case-global\nname: Global control group\ntimezone: UTC\nlaunch: {type: manual}\n\
         audience: {all: true}\nconversion: {event: purchase, within: P7D}\nmessages:\n  \
         news: {channel: email, type: newsletter, subject: News, text: n}\n  \
         receipt: {channel: email, type: transactional, subject: Receipt, text: r}\nsteps:\n  \
         - {id: news, send: news, next: receipt}\n  - {id: receipt, send: receipt, next: done}\n  \
         - {id: done, end: success}\n",
    );
    let policy = write("policy.yaml", "holdout: {percent: 25, seed: \"2026\"}\n");
    let ids: Vec<String> = (1..=10).map(|n| format!("g{n}")).collect();
    let contacts: String = ids
        .iter()
        .map(|c| format!("{{\"id\": \"{c}\", \"email\": \"{c}@example.com\"}}\n"))
        .collect();
    let contacts = write("contacts.jsonl", &contacts);
    let members: Vec<&String> = ids
        .iter()
        .filter(|c| global_bucket("2026", c) < 2500)
        .collect();
    // The same group as tests/cases/bucket.py's bucket("holdout:2026:gN"): 2223, 2087, 2109.
    assert_eq!(members, ["g4", "g9", "g10"]);
    let events = write(
        "events.jsonl",
        "{\"at\": \"2026-12-02T10:00:00Z\", \"contact\": \"g4\", \"event\": \"purchase\"}\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_relance"))
        .arg("simulate")
        .arg(&scenario)
        .arg("--contacts")
        .arg(&contacts)
        .arg("--events")
        .arg(&events)
        .arg("--policy")
        .arg(&policy)
        .args(["--start", "2026-12-01T09:00:00Z", "--until", "P3D"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let at = "2026-12-01T09:00:00Z";
    let mut sends = Vec::new();
    let mut expect_records = Vec::new();
    let mut no_records = Vec::new();
    for c in &ids {
        sends.push(serde_json::json!([c, "receipt", at]));
        expect_records.push(serde_json::json!({"contact": c, "kind": "entered", "at": at}));
        if members.contains(&c) {
            expect_records.push(serde_json::json!({"contact": c, "kind": "skipped",
                "step": "news", "reason": "global_holdout", "at": at}));
        } else {
            sends.push(serde_json::json!([c, "news", at]));
            no_records.push(serde_json::json!({"contact": c, "kind": "skipped"}));
        }
    }
    // A member still converts: it is measured, only not sent to.
    expect_records.push(serde_json::json!({"contact": "g4", "kind": "converted",
        "at": "2026-12-02T10:00:00Z"}));
    let ends: serde_json::Map<String, Value> = ids
        .iter()
        .map(|c| (c.clone(), Value::from("success")))
        .collect();
    let expect = serde_json::json!({"sends": sends, "ends": ends, "records": expect_records,
        "no_records": no_records});
    let problems = check_records(&records, &expect);
    assert!(problems.is_empty(), "{problems:#?}\n{stdout}");
}
