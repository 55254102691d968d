//! Pinpoint journey import (DESIGN §9): each fixture of `tests/fixtures/pinpoint/` imports
//! into a scenario that validates, mapped as the design says; what cannot be written
//! faithfully is a located error; every field left out is a warning at its path.

use std::path::PathBuf;

use relance_core::pinpoint::{ImportError, Imported, import};
use relance_core::scenario::STEP_KEYS;
use relance_core::validate::check_text;
use relance_core::{Format, Problem};
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/pinpoint")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn imported(text: &str) -> Imported {
    import(text).unwrap_or_else(|e| panic!("{e}"))
}

fn listing(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Imports a journey that must be accepted, and checks the YAML it writes with the
/// validator: no error (warnings allowed).
fn accepted(text: &str) -> (Imported, Value) {
    let i = imported(text);
    assert!(!i.refused(), "refused:\n{}", listing(&i.problems));
    let yaml = i.to_yaml();
    let report = check_text(&yaml, Format::Yaml);
    assert_eq!(
        report.errors(),
        0,
        "{yaml}\nvalidation:\n{}",
        listing(&report.problems)
    );
    let scenario = i.scenario.clone();
    (i, scenario)
}

fn has(problems: &[Problem], error: bool, path: &str, words: &str) -> bool {
    problems
        .iter()
        .any(|p| p.is_error() == error && p.path == path && p.message.contains(words))
}

fn step<'a>(s: &'a Value, id: &str) -> &'a Value {
    s["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|st| st["id"] == id))
        .unwrap_or_else(|| panic!("no step {id} in {s:#}"))
}

/// A bare JourneyResponse around these activities, starting at `start`.
fn journey(start: &str, activities: Value) -> String {
    json!({
        "Name": "Test journey",
        "StartActivity": start,
        "StartCondition": {"SegmentStartCondition": {"SegmentId": "seg-1"}},
        "Limits": {"EndpointReentryCap": 0},
        "Activities": activities,
    })
    .to_string()
}

#[test]
fn welcome_series_sends_waits_and_ends() {
    let (i, s) = accepted(&fixture("welcome-series.json"));
    assert_eq!(s["id"], "welcome-series-new-subscribers");
    assert_eq!(s["name"], "Welcome series (new subscribers)");
    assert_eq!(s["timezone"], "Etc/GMT+5", "UTC-05 is Etc/GMT+5");
    assert_eq!(
        s["launch"],
        json!({"type": "fixed_dates", "dates": ["2026-12-01T14:00:00.000Z"]})
    );
    assert_eq!(
        s["audience"],
        json!({"groups": ["1b7a3c5e9d2f4a6b8c0d2e4f6a8b0c2d"]})
    );
    assert_eq!(s["once_per"], "P100Y", "EndpointReentryCap 1: one entry");
    let ids: Vec<&str> = s["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|st| st["id"].as_str())
        .collect();
    assert_eq!(ids, ["welcomeemail", "wait2days", "tipsemail", "end"]);
    assert_eq!(step(&s, "welcomeemail")["send"], "welcomeemail");
    assert_eq!(step(&s, "welcomeemail")["description"], "Day 0: welcome");
    assert_eq!(step(&s, "wait2days")["delay"], json!({"after": "P2D"}));
    assert_eq!(step(&s, "wait2days")["next"], "tipsemail");
    assert_eq!(step(&s, "tipsemail")["next"], "end");
    assert_eq!(step(&s, "end")["end"], "success");
    assert_eq!(
        s["messages"]["welcomeemail"],
        json!({"channel": "email", "template": "Welcome_New_Subscribers", "from": "welcome@example.com"})
    );
    let names: Vec<&str> = i.templates.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["Welcome_New_Subscribers", "Getting_Started_Tips"]);
    assert_eq!(i.templates[0].version.as_deref(), Some("2"));
    // The segment, the rate and the template version are reported, located.
    let p = &i.problems;
    assert!(
        has(
            p,
            false,
            "StartCondition.SegmentStartCondition.SegmentId",
            "audience group"
        ),
        "{}",
        listing(p)
    );
    assert!(
        has(p, false, "Limits.MessagesPerSecond", "not imported"),
        "{}",
        listing(p)
    );
    assert!(
        has(
            p,
            false,
            "Activities.WelcomeEmail.EMAIL.TemplateVersion",
            "versions"
        ),
        "{}",
        listing(p)
    );
    // The file says where it came from, the templates to create and every note.
    let yaml = i.to_yaml();
    assert!(
        yaml.contains("# Id: 0f6c8d2a3b4e4f6a8c9d0e1f2a3b4c5d"),
        "{yaml}"
    );
    assert!(
        yaml.contains("#   - email template \"Getting_Started_Tips\""),
        "{yaml}"
    );
    assert!(
        yaml.contains("#   - warning: Limits.MessagesPerSecond"),
        "{yaml}"
    );
}

#[test]
fn opened_split_checks_the_open_after_its_evaluation_wait() {
    let (i, s) = accepted(&fixture("opened-split.json"));
    let split = step(&s, "didtheyopen");
    assert_eq!(split["delay"], json!({"after": "P1D"}));
    assert_eq!(split["if"], json!({"opened": "offeremail"}));
    assert_eq!(split["then"], "thanksemail");
    assert_eq!(split["else"], "remindersms");
    assert_eq!(s.get("once_per"), None, "EndpointReentryCap 0: unlimited");
    let sms = &s["messages"]["remindersms"];
    assert_eq!(sms["channel"], "sms");
    assert_eq!(sms["sms_type"], "promotional");
    assert!(
        sms["text"]
            .as_str()
            .is_some_and(|t| t.contains("Winter_Offer_Sms")),
        "{sms}"
    );
    let p = &i.problems;
    assert!(
        has(
            p,
            false,
            "Activities.ReminderSms.SMS.TemplateName",
            "placeholder"
        ),
        "{}",
        listing(p)
    );
    assert!(
        has(
            p,
            false,
            "Activities.ReminderSms.SMS.MessageConfig.OriginationNumber",
            "End User Messaging"
        ),
        "{}",
        listing(p)
    );
}

#[test]
fn message_event_spellings_all_map_to_engagement() {
    for (event, key) in [
        ("EMAIL_OPEN", "opened"),
        ("_email.open", "opened"),
        ("EMAIL_CLICKED", "clicked"),
        ("_email.click", "clicked"),
        ("EMAIL_DELIVERED", "delivered"),
    ] {
        let text = journey(
            "Mail",
            json!({
                "Mail": {"EMAIL": {"TemplateName": "T", "NextActivity": "Check"}},
                "Check": {"ConditionalSplit": {
                    "Condition": {"Conditions": [{"EventCondition": {
                        "MessageActivity": "Mail",
                        "Dimensions": {"EventType": {"DimensionType": "INCLUSIVE", "Values": [event]}}
                    }}]},
                    "EvaluationWaitTime": {"WaitUntil": "2026-12-24T10:00:00Z"},
                    "TrueActivity": "Mail2"
                }},
                "Mail2": {"EMAIL": {"TemplateName": "T2"}}
            }),
        );
        let (_, s) = accepted(&text);
        let check = step(&s, "check");
        assert_eq!(check["if"], json!({key: "mail"}), "{event}");
        assert_eq!(check["delay"], json!({"until": "2026-12-24T10:00:00Z"}));
        assert_eq!(
            check["else"], "end",
            "a missing FalseActivity is the journey's end"
        );
    }
}

#[test]
fn multi_condition_becomes_branches_over_fields_and_groups() {
    let (i, s) = accepted(&fixture("multi-condition.json"));
    let b = step(&s, "byplan");
    assert_eq!(
        b["branches"],
        json!([
            {"when": {"field": "plan", "op": "in", "value": ["pro", "team"]}, "next": "proemail"},
            {"when": {"in_groups": ["vip-customers"]}, "next": "vipemail"},
        ])
    );
    assert_eq!(b["otherwise"], "standardemail");
    assert_eq!(s["timezone"], "Etc/GMT-1", "UTC+01 is Etc/GMT-1");
    assert_eq!(
        s["launch"],
        json!({"type": "manual"}),
        "no start time: launched by hand"
    );
    assert!(
        has(
            &i.problems,
            false,
            "Activities.ByPlan.MultiCondition.Branches[1].Condition.SegmentCondition.SegmentId",
            "in_groups"
        ),
        "{}",
        listing(&i.problems)
    );
}

#[test]
fn a_starting_holdout_is_the_scenario_holdout_and_random_split_a_split() {
    let (_, s) = accepted(&fixture("random-holdout.json"));
    assert_eq!(s["holdout"], json!({"percent": 10}));
    let first = &s["steps"][0];
    assert_eq!(first["id"], "abtest", "the holdout is not a step");
    assert_eq!(
        first["split"],
        json!([{"percent": 50, "next": "shortemail"}, {"percent": 50, "next": "longemail"}])
    );
}

#[test]
fn a_holdout_inside_the_journey_is_a_split_to_a_neutral_end() {
    let text = journey(
        "Mail",
        json!({
            "Mail": {"EMAIL": {"TemplateName": "T", "NextActivity": "Hold"}},
            "Hold": {"Holdout": {"Percentage": 20, "NextActivity": "Mail2"}},
            "Mail2": {"EMAIL": {"TemplateName": "T2"}}
        }),
    );
    let (i, s) = accepted(&text);
    assert_eq!(s.get("holdout"), None);
    assert_eq!(
        step(&s, "hold")["split"],
        json!([{"percent": 20, "next": "hold-held-out"}, {"percent": 80, "next": "mail2"}])
    );
    assert_eq!(step(&s, "hold-held-out")["end"], "neutral");
    assert!(
        has(
            &i.problems,
            false,
            "Activities.Hold.Holdout",
            "becomes a split"
        ),
        "{}",
        listing(&i.problems)
    );
}

#[test]
fn event_started_journey_keeps_its_limits_and_quiet_time() {
    let (i, s) = accepted(&fixture("event-started.json"));
    assert_eq!(
        s["launch"],
        json!({"type": "trigger", "event": "purchase", "where": {"all": [
            {"field": "store", "op": "in", "value": ["web", "app"]},
            {"field": "amount", "op": "ge", "value": 20.0},
        ]}})
    );
    assert_eq!(s.get("audience"), None);
    assert_eq!(s["once_per"], "P7D");
    assert_eq!(s["frequency_cap"], json!({"max": 2, "per": "P1D"}));
    assert_eq!(s["quiet_hours"], json!({"from": "21:00", "to": "08:00"}));
    assert_eq!(s["messages"]["reviewpush"]["channel"], "push");
    let p = &i.problems;
    assert!(
        has(p, false, "Limits.EndpointReentryCap", "no equivalent"),
        "{}",
        listing(p)
    );
    assert!(
        has(
            p,
            false,
            "Activities.ReviewPush.PUSH.MessageConfig.TimeToLive",
            "not imported"
        ),
        "{}",
        listing(p)
    );
    assert!(
        has(p, false, "Schedule.StartTime", "activated"),
        "{}",
        listing(p)
    );
}

#[test]
fn limits_without_equivalent_are_warned_and_local_time_kept() {
    let mut j: Value = serde_json::from_str(&journey(
        "Mail",
        json!({"Mail": {"EMAIL": {"TemplateName": "T"}}}),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    j["Limits"] = json!({"DailyCap": 3, "TimeframeCap": {"Cap": 5, "Days": 7}, "TotalCap": 9, "EndpointReentryCap": 0});
    j["LocalTime"] = json!(true);
    j["QuietTime"] = json!({"Start": "22:00", "End": "07:00"});
    j["Schedule"] = json!({"Timezone": "UTC+05:30"});
    let (i, s) = accepted(&j.to_string());
    assert_eq!(s["frequency_cap"], json!({"max": 3, "per": "P1D"}));
    assert_eq!(s["local_time"], true);
    assert_eq!(s["timezone"], "Asia/Kolkata");
    let p = &i.problems;
    assert!(
        has(p, false, "Limits.TimeframeCap", "DailyCap is kept"),
        "{}",
        listing(p)
    );
    assert!(
        has(p, false, "Limits.TotalCap", "no equivalent"),
        "{}",
        listing(p)
    );
    assert!(
        has(p, false, "WaitForQuietTime", "holds them"),
        "{}",
        listing(p)
    );
    assert!(
        has(p, false, "Schedule.Timezone", "Asia/Kolkata"),
        "{}",
        listing(p)
    );
    // A timeframe cap alone is the frequency cap.
    j["Limits"] = json!({"TimeframeCap": {"Cap": 5, "Days": 7}, "EndpointReentryCap": 0});
    let (_, s) = accepted(&j.to_string());
    assert_eq!(s["frequency_cap"], json!({"max": 5, "per": "P7D"}));
}

#[test]
fn custom_activities_call_out_or_say_the_step_is_missing() {
    let i = imported(&fixture("custom-lambda.json"));
    let sync = step(&i.scenario, "synccrm");
    assert_eq!(
        sync["invoke"],
        json!({"function": "arn:aws:lambda:us-east-1:123456789012:function:crm-sync"})
    );
    assert_eq!(sync["next"], "confirmemail");
    assert!(has(
        &i.problems,
        false,
        "Activities.SyncCrm.CUSTOM.EndpointTypes",
        "once per contact"
    ));
    if STEP_KEYS.contains(&"invoke") {
        assert!(!i.refused(), "{}", listing(&i.problems));
    } else {
        assert!(
            has(
                &i.problems,
                true,
                "Activities.SyncCrm.CUSTOM",
                "need the webhook or invoke step"
            ),
            "{}",
            listing(&i.problems)
        );
    }
    let by_name = journey("Fn", json!({"Fn": {"CUSTOM": {"DeliveryUri": "crm-sync"}}}));
    let i = imported(&by_name);
    assert_eq!(
        step(&i.scenario, "fn")["invoke"],
        json!({"function": "crm-sync"})
    );
    assert!(
        has(
            &i.problems,
            false,
            "Activities.Fn.CUSTOM.DeliveryUri",
            "write its ARN"
        ),
        "{}",
        listing(&i.problems)
    );
    let web = journey(
        "Hook",
        json!({"Hook": {"CUSTOM": {"DeliveryUri": "https://crm.example.com/pinpoint", "MessageConfig": {"Data": "{\"a\":1}"}}}}),
    );
    let i = imported(&web);
    assert_eq!(
        step(&i.scenario, "hook")["webhook"],
        json!({"url": "https://crm.example.com/pinpoint", "body": "{\"a\":1}"})
    );
}

#[test]
fn a_contact_center_activity_is_a_located_refusal() {
    let i = imported(&fixture("contact-center.json"));
    assert!(i.refused());
    let errors: Vec<&Problem> = i.problems.iter().filter(|p| p.is_error()).collect();
    assert_eq!(errors.len(), 1, "{}", listing(&i.problems));
    assert_eq!(errors[0].path, "Activities.CallThem.ContactCenter");
    assert!(errors[0].message.contains("no equivalent"), "{}", errors[0]);
    // The activities after it are still read (and the Connect settings reported).
    assert_eq!(step(&i.scenario, "followup")["send"], "followup");
    assert!(has(
        &i.problems,
        false,
        "JourneyChannelSettings",
        "Amazon Connect"
    ));
}

#[test]
fn what_cannot_be_written_faithfully_is_refused_with_its_path() {
    let mut j: Value = serde_json::from_str(&journey(
        "Check",
        json!({
            "Check": {"MultiCondition": {"Branches": [
                {"Condition": {"segmentDimensions": {"Location": {"Country": {"Values": ["FR"]}}}}, "NextActivity": "Gone"},
            ], "DefaultActivity": "Mail"}},
            "Mail": {"EMAIL": {"TemplateName": "T", "NextActivity": "Mail"}},
            "Orphan": {"EMAIL": {"TemplateName": "O"}},
            "Check_2": {"Wait": {"WaitTime": {"WaitFor": "P1X"}}}
        }),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    j["Schedule"] = json!({"Timezone": "Mars/Olympus"});
    j["Frobnicate"] = json!(true);
    let i = imported(&j.to_string());
    let p = &i.problems;
    assert!(i.refused());
    assert!(
        has(
            p,
            true,
            "Activities.Check.MultiCondition.Branches[0].Condition.segmentDimensions.Location",
            "no equivalent"
        ),
        "{}",
        listing(p)
    );
    assert!(
        has(
            p,
            true,
            "Activities.Check.MultiCondition.Branches[0].NextActivity",
            "\"Gone\" names no activity"
        ),
        "{}",
        listing(p)
    );
    assert!(
        has(p, true, "Schedule.Timezone", "Mars/Olympus"),
        "{}",
        listing(p)
    );
    assert!(
        has(
            p,
            false,
            "Activities.Orphan",
            "no path from the StartActivity"
        ),
        "{}",
        listing(p)
    );
    assert!(
        has(p, false, "Frobnicate", "not imported"),
        "{}",
        listing(p)
    );
    // Two keys that make one step id.
    let j = journey(
        "A_b",
        json!({"A_b": {"EMAIL": {"TemplateName": "T", "NextActivity": "A.b"}}, "A.b": {"EMAIL": {"TemplateName": "U"}}}),
    );
    let i = imported(&j);
    assert!(
        i.problems
            .iter()
            .any(|p| p.is_error() && p.message.contains("both become step \"a-b\"")),
        "{}",
        listing(&i.problems)
    );
}

#[test]
fn event_starts_refuse_what_a_trigger_cannot_say() {
    let j = json!({
        "JourneyResponse": {
            "Name": "Big spenders",
            "StartActivity": "Mail",
            "StartCondition": {"EventStartCondition": {"EventFilter": {"FilterType": "ENDPOINT", "Dimensions": {
                "EventType": {"DimensionType": "INCLUSIVE", "Values": ["purchase", "renewal"]},
                "Metrics": {"amount": {"ComparisonOperator": "GREATER_THAN_OR_EQUAL", "Value": 100.0}}
            }}}},
            "Activities": {"Mail": {"EMAIL": {"TemplateName": "T"}}}
        }
    });
    let i = imported(&j.to_string());
    let p = &i.problems;
    let values = "StartCondition.EventStartCondition.EventFilter.Dimensions.EventType.Values";
    assert!(has(p, true, values, "one event"), "{}", listing(p));
    let launch = &i.scenario["launch"];
    assert_eq!(launch["event"], "purchase");
    if relance_core::scenario::LAUNCH_KEYS.contains(&"where") {
        assert_eq!(
            launch["where"],
            json!({"field": "amount", "op": "ge", "value": 100.0})
        );
    } else {
        assert!(
            has(
                p,
                true,
                "StartCondition.EventStartCondition.EventFilter.Dimensions",
                "`where`"
            ),
            "{}",
            listing(p)
        );
    }
}

#[test]
fn wrapped_and_bare_journeys_import_alike_and_other_json_is_refused() {
    let wrapped = fixture("opened-split.json");
    let v: Value = serde_json::from_str(&wrapped).unwrap_or_else(|e| panic!("{e}"));
    let bare = v["JourneyResponse"].to_string();
    assert_eq!(imported(&wrapped).scenario, imported(&bare).scenario);
    assert!(matches!(
        import("{\"Name\": 1"),
        Err(ImportError::Syntax(_))
    ));
    assert!(matches!(
        import("{\"Item\": []}"),
        Err(ImportError::NotAJourney)
    ));
    assert!(matches!(import("[1, 2]"), Err(ImportError::NotAJourney)));
}

/// Every value of every fixture, replaced in turn by a value of another shape: the import
/// reports or refuses, and never panics; what it accepts, it writes as YAML.
#[test]
fn hostile_journeys_never_panic() {
    fn paths(v: &Value, at: Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(at.clone());
        match v {
            Value::Object(m) => m.iter().for_each(|(k, c)| {
                let mut p = at.clone();
                p.push(k.clone());
                paths(c, p, out)
            }),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, c)| {
                let mut p = at.clone();
                p.push(i.to_string());
                paths(c, p, out)
            }),
            _ => {}
        }
    }
    fn at<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
        path.iter().try_fold(v, |v, k| match v {
            Value::Object(m) => m.get_mut(k),
            Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        })
    }
    let replacements = [
        Value::Null,
        json!(-1),
        json!(1e300),
        json!(33.333),
        json!("é\u{0}"),
        json!("UTC+"),
        json!([]),
        json!({}),
        json!(["x", 1]),
        json!({"EMAIL": {"TemplateName": "T"}}),
    ];
    let mut imports = 0;
    for name in [
        "welcome-series.json",
        "opened-split.json",
        "multi-condition.json",
        "random-holdout.json",
        "custom-lambda.json",
        "event-started.json",
        "contact-center.json",
    ] {
        let original: Value =
            serde_json::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{e}"));
        let mut all = Vec::new();
        paths(&original, Vec::new(), &mut all);
        for path in all.iter().skip(1) {
            for r in &replacements {
                let mut v = original.clone();
                if let Some(slot) = at(&mut v, path) {
                    *slot = r.clone();
                }
                if let Ok(i) = import(&v.to_string()) {
                    let yaml = i.to_yaml();
                    assert!(!yaml.is_empty(), "{name} {path:?}");
                    // The validator reads whatever was written without panicking either.
                    let _ = check_text(&yaml, Format::Yaml);
                }
                imports += 1;
            }
        }
    }
    assert!(imports > 1000, "{imports}");
}
