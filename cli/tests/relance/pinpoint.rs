//! `relance import pinpoint` end to end: each journey of `tests/fixtures/pinpoint/` is
//! imported, validated and simulated, and every contact takes the path a Pinpoint user
//! expects from the journey (written here from the journey's semantics); refusals exit 1
//! with located problems and write nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use relance_core::experiment::bucket;
use serde_json::Value;

fn fixture(name: &str) -> String {
    format!(
        "{}/../tests/fixtures/pinpoint/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("relance-pinpoint-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
    p.to_string_lossy().into_owned()
}

fn relance(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relance"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Imports a fixture into `dir/scenario.yaml` (exit 0) and validates it (exit 0).
fn import(d: &Path, journey: &str) -> String {
    let out = d.join("scenario.yaml").to_string_lossy().into_owned();
    let o = relance(&["import", "pinpoint", &fixture(journey), "--out", &out]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = relance(&["validate", &out]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    out
}

/// `relance simulate` of the scenario: its records.
fn simulate(scenario: &str, contacts: &str, events: Option<&str>, until: &str) -> Vec<Value> {
    let mut args = vec![
        "simulate",
        scenario,
        "--contacts",
        contacts,
        "--start",
        "2026-12-01T09:00:00Z",
        "--until",
        until,
    ];
    if let Some(e) = events {
        args.extend(["--events", e]);
    }
    let o = relance(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// Each contact's path: `sent M@at`, `branched N`, `ended E`, `skipped R`, `held_out`.
fn paths(records: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in records {
        let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
        let line = match s("kind").as_str() {
            "sent" => format!("sent {}@{}", s("message"), s("at")),
            "branched" => format!("branched {}", s("next")),
            "ended" => format!("ended {}", s("end")),
            "skipped" => format!("skipped {}@{}", s("reason"), s("at")),
            "held_out" => "held_out".into(),
            "assigned" => format!("assigned {}", s("branch")),
            _ => continue,
        };
        out.entry(s("contact")).or_default().push(line);
    }
    out
}

fn path_of<'a>(p: &'a BTreeMap<String, Vec<String>>, contact: &str) -> Vec<&'a str> {
    p.get(contact)
        .map(|v| v.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn welcome_series_sends_on_its_start_date_then_two_days_later_to_the_segment_only() {
    let d = dir("welcome");
    let s = import(&d, "welcome-series.json");
    let c = write(
        &d,
        "c.jsonl",
        "{\"id\": \"ana\", \"email\": \"ana@example.com\", \"groups\": [\"1b7a3c5e9d2f4a6b8c0d2e4f6a8b0c2d\"]}\n\
         {\"id\": \"bob\", \"email\": \"bob@example.com\"}\n",
    );
    let p = paths(&simulate(&s, &c, None, "P5D"));
    // The journey starts at its StartTime (14:00Z) for the segment's members.
    assert_eq!(
        path_of(&p, "ana"),
        [
            "sent welcomeemail@2026-12-01T14:00:00Z",
            "sent tipsemail@2026-12-03T14:00:00Z",
            "ended success"
        ]
    );
    assert_eq!(
        path_of(&p, "bob"),
        ["skipped audience@2026-12-01T14:00:00Z"]
    );
}

#[test]
fn opened_split_thanks_who_opened_and_texts_who_did_not_after_a_day() {
    let d = dir("opened");
    let s = import(&d, "opened-split.json");
    let c = write(
        &d,
        "c.jsonl",
        "{\"id\": \"ana\", \"email\": \"ana@example.com\", \"phone\": \"+33612345678\", \"groups\": [\"winter-audience\"]}\n\
         {\"id\": \"bob\", \"email\": \"bob@example.com\", \"phone\": \"+33612345679\", \"groups\": [\"winter-audience\"]}\n",
    );
    let e = write(
        &d,
        "e.jsonl",
        "{\"at\": \"2026-12-01T15:00:00Z\", \"contact\": \"ana\", \"opened\": \"offeremail\"}\n",
    );
    let p = paths(&simulate(&s, &c, Some(&e), "P3D"));
    assert_eq!(
        path_of(&p, "ana"),
        [
            "sent offeremail@2026-12-01T09:00:00Z",
            "branched thanksemail",
            "sent thanksemail@2026-12-02T09:00:00Z",
            "ended success"
        ]
    );
    assert_eq!(
        path_of(&p, "bob"),
        [
            "sent offeremail@2026-12-01T09:00:00Z",
            "branched remindersms",
            "sent remindersms@2026-12-02T09:00:00Z",
            "ended success"
        ]
    );
}

#[test]
fn multi_condition_sends_each_contact_its_first_matching_branch() {
    let d = dir("multi");
    let s = import(&d, "multi-condition.json");
    let c = write(
        &d,
        "c.jsonl",
        "{\"id\": \"pro\", \"email\": \"p@example.com\", \"plan\": \"team\", \"groups\": [\"renewals-due\", \"vip-customers\"]}\n\
         {\"id\": \"vip\", \"email\": \"v@example.com\", \"plan\": \"basic\", \"groups\": [\"renewals-due\", \"vip-customers\"]}\n\
         {\"id\": \"std\", \"email\": \"s@example.com\", \"plan\": \"basic\", \"groups\": [\"renewals-due\"]}\n",
    );
    let p = paths(&simulate(&s, &c, None, "P1D"));
    for (contact, message) in [
        ("pro", "proemail"),
        ("vip", "vipemail"),
        ("std", "standardemail"),
    ] {
        assert_eq!(
            path_of(&p, contact),
            [
                format!("branched {message}").as_str(),
                &format!("sent {message}@2026-12-01T09:00:00Z"),
                "ended success"
            ],
            "{contact}"
        );
    }
}

#[test]
fn random_split_with_holdout_holds_out_and_splits_by_the_bucket_formula() {
    let d = dir("random");
    let s = import(&d, "random-holdout.json");
    let ids: Vec<String> = (0..40).map(|i| format!("u{i}")).collect();
    let contacts: String = ids
        .iter()
        .map(|id| format!("{{\"id\": \"{id}\", \"email\": \"{id}@example.com\", \"groups\": [\"launch-list\"]}}\n"))
        .collect();
    let c = write(&d, "c.jsonl", &contacts);
    let p = paths(&simulate(&s, &c, None, "P1D"));
    let (mut held, mut short, mut long) = (0, 0, 0);
    for id in &ids {
        // 10% held out (DESIGN §3.1), the rest 50/50 on the split step `abtest`.
        let expected: Vec<String> = if bucket("product-launch-a-b", "holdout", id) < 1000 {
            held += 1;
            vec!["held_out".into(), "ended held_out".into()]
        } else {
            let m = if bucket("product-launch-a-b", "abtest", id) < 5000 {
                short += 1;
                "shortemail"
            } else {
                long += 1;
                "longemail"
            };
            vec![
                format!("assigned {m}"),
                format!("sent {m}@2026-12-01T09:00:00Z"),
                "ended success".into(),
            ]
        };
        assert_eq!(p.get(id).cloned().unwrap_or_default(), expected, "{id}");
    }
    assert!(held > 0 && short > 0 && long > 0, "{held} {short} {long}");
}

#[test]
fn event_started_journey_enters_on_matching_purchases_with_quiet_time_and_reentry_interval() {
    let d = dir("event");
    let s = import(&d, "event-started.json");
    let c = write(
        &d,
        "c.jsonl",
        "{\"id\": \"ana\", \"email\": \"ana@example.com\", \"push\": {\"android\": \"arn:aws:sns:us-east-1:123456789012:endpoint/GCM/shop/1\"}}\n\
         {\"id\": \"bob\", \"email\": \"bob@example.com\", \"push\": {\"android\": \"arn:aws:sns:us-east-1:123456789012:endpoint/GCM/shop/2\"}}\n",
    );
    let e = write(
        &d,
        "e.jsonl",
        // The journey starts on purchases of 20 or more in the web or app store.
        "{\"at\": \"2026-12-01T08:00:00Z\", \"contact\": \"bob\", \"event\": \"purchase\", \"store\": \"web\", \"amount\": 12}\n\
         {\"at\": \"2026-12-01T08:30:00Z\", \"contact\": \"bob\", \"event\": \"purchase\", \"store\": \"pos\", \"amount\": 80}\n\
         {\"at\": \"2026-12-01T10:00:00Z\", \"contact\": \"ana\", \"event\": \"purchase\", \"store\": \"web\", \"amount\": 35.5}\n\
         {\"at\": \"2026-12-01T21:30:00Z\", \"contact\": \"bob\", \"event\": \"purchase\", \"store\": \"app\", \"amount\": 20}\n\
         {\"at\": \"2026-12-02T10:00:00Z\", \"contact\": \"ana\", \"event\": \"purchase\", \"store\": \"web\", \"amount\": 40}\n\
         {\"at\": \"2026-12-06T10:00:00Z\", \"contact\": \"ana\", \"event\": \"purchase\", \"store\": \"app\", \"amount\": 40}\n\
         {\"at\": \"2026-12-09T10:00:00Z\", \"contact\": \"ana\", \"event\": \"purchase\", \"store\": \"app\", \"amount\": 40}\n",
    );
    let p = paths(&simulate(&s, &c, Some(&e), "P10D"));
    assert_eq!(
        path_of(&p, "ana"),
        [
            "sent thankyou@2026-12-01T10:00:00Z",
            // Still inside the journey: not entered twice.
            "skipped already_running@2026-12-02T10:00:00Z",
            "sent reviewpush@2026-12-04T10:00:00Z",
            "ended success",
            // EndpointReentryInterval P7D from the first entry.
            "skipped once_per@2026-12-06T10:00:00Z",
            "sent thankyou@2026-12-09T10:00:00Z",
        ]
    );
    // Bob's small web purchase and his in-store one do not start the journey; his app
    // purchase at 22:30 (UTC+01) is inside the 21:00-08:00 quiet time: held until 08:00 (07:00Z).
    assert_eq!(
        path_of(&p, "bob"),
        [
            "sent thankyou@2026-12-02T07:00:00Z",
            "sent reviewpush@2026-12-05T07:00:00Z",
            "ended success"
        ]
    );
}

#[test]
fn import_prints_the_scenario_and_its_warnings_apart() {
    let o = relance(&["import", "pinpoint", &fixture("opened-split.json")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stdout.starts_with("# Imported from Amazon Pinpoint"),
        "{stdout}"
    );
    assert!(
        stdout.contains("id: winter-offer-opened-or-not"),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning: Activities.ReminderSms.SMS.TemplateName"),
        "{stderr}"
    );
    assert!(
        stderr.contains("templates to create:") && stderr.contains("\"Winter_Offer\""),
        "{stderr}"
    );
}

#[test]
fn refused_journeys_exit_1_with_located_problems_and_write_nothing() {
    let d = dir("refused");
    let out = d.join("out.yaml");
    let o = relance(&[
        "import",
        "pinpoint",
        &fixture("contact-center.json"),
        "--out",
        &out.to_string_lossy(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("error: Activities.CallThem.ContactCenter: a contact-center activity"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());
    let o = relance(&["import", "pinpoint", &fixture("custom-lambda.json")]);
    // A CUSTOM Lambda activity is not refused: it becomes an invoke step.
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Not a journey at all: exit 2, naming the file.
    let f = write(&d, "list.json", "{\"JourneysResponse\": {\"Item\": []}}");
    let o = relance(&["import", "pinpoint", &f]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("not a Pinpoint journey"), "{}", text(&o));
}

#[test]
fn custom_lambda_journey_invokes_the_function_then_emails_the_segment() {
    let d = dir("custom");
    let s = import(&d, "custom-lambda.json");
    let yaml = std::fs::read_to_string(&s).unwrap_or_default();
    assert!(
        yaml.contains("arn:aws:lambda:us-east-1:123456789012:function:crm-sync"),
        "{yaml}"
    );
    let c = write(
        &d,
        "c.jsonl",
        "{\"id\": \"ana\", \"email\": \"ana@example.com\", \"groups\": [\"crm-contacts\"]}\n\
         {\"id\": \"bob\", \"email\": \"bob@example.com\"}\n",
    );
    let records = simulate(&s, &c, None, "P1D");
    // The segment's member: the CUSTOM activity's invoke (journaled, not called), then the
    // email, then the end; the others are outside the audience.
    let invoked: Vec<&Value> = records
        .iter()
        .filter(|r| r["contact"] == "ana" && r["kind"] == "action")
        .collect();
    assert_eq!(invoked.len(), 1, "{records:#?}");
    assert_eq!(invoked[0]["step"], "synccrm", "{records:#?}");
    let p = paths(&records);
    let ana = path_of(&p, "ana");
    assert!(
        ana.len() == 2 && ana[0].starts_with("sent confirmemail@") && ana[1] == "ended success",
        "{ana:?}"
    );
    assert!(path_of(&p, "bob")[0].starts_with("skipped audience@"));
}
