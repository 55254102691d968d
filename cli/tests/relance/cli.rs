//! The `relance` binary end to end: exit statuses, located errors, simulate's JSON lines.

use std::path::PathBuf;
use std::process::{Command, Output};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("relance-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
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

const GOOD: &str = "id: hello\nlaunch: {type: manual}\nmessages:\n  m: {channel: email, subject: \"Hi {{ contact.name }}\", text: x}\nsteps:\n  - {id: a, send: m, next: b}\n  - id: b\n    delay: {after: P1D}\n    if: {opened: a}\n    then: yes\n    else: no\n  - {id: yes, end: success}\n  - {id: no, end: neutral}\n";

#[test]
fn validate_says_no_problem_found_and_exits_0() {
    let d = dir("good");
    let f = write(&d, "s.yaml", GOOD);
    let o = relance(&["validate", &f]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("no problem found"));
}

#[test]
fn validate_lists_every_error_located_and_exits_1() {
    let d = dir("bad");
    let broken = GOOD
        .replace("then: yes", "then: ghost")
        .replace("after: P1D", "after: P1X")
        .replace("send: m", "send: nope");
    let f = write(&d, "s.yaml", &broken);
    let o = relance(&["validate", &f]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("steps[1].delay.after"), "{out}");
    assert!(out.contains("P1X"), "{out}");
    assert!(
        out.contains("steps[0].send (step \"a\")") && out.contains("unknown message \"nope\""),
        "{out}"
    );
    let o = relance(&["validate", "--json", &f]);
    let problems: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        problems.as_array().is_some_and(|a| a.len() >= 2),
        "{problems}"
    );
}

#[test]
fn syntax_errors_give_line_and_column() {
    let d = dir("syntax");
    let f = write(&d, "s.yaml", "id: x\nsteps: [\n  {id: a\n");
    let out = text(&relance(&["validate", &f]));
    assert!(
        out.contains("YAML syntax") && out.contains("line "),
        "{out}"
    );
    let f = write(&d, "s.json", "{\"id\": \"x\",\n \"steps\": [}\n");
    let out = text(&relance(&["validate", &f]));
    assert!(
        out.contains("JSON syntax") && out.contains("line 2"),
        "{out}"
    );
}

#[test]
fn simulate_prints_time_ordered_json_lines_and_a_journal() {
    let d = dir("sim");
    let f = write(&d, "s.yaml", GOOD);
    let c = write(
        &d,
        "c.jsonl",
        "{\"id\": \"x\", \"email\": \"x@example.com\", \"name\": \"X\"}\n{\"id\": \"y\", \"email\": \"y@example.com\", \"name\": \"Y\"}\n",
    );
    let e = write(
        &d,
        "e.jsonl",
        "{\"at\": \"2026-12-01T10:00:00Z\", \"contact\": \"x\", \"opened\": \"a\"}\n",
    );
    let o = relance(&[
        "simulate",
        &f,
        "--contacts",
        &c,
        "--events",
        &e,
        "--start",
        "2026-12-01T09:00:00Z",
        "--until",
        "P3D",
        "--journal",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let (report, rest) = lines.split_last().unwrap_or_else(|| panic!("no output"));
    assert_eq!(report["kind"], "report");
    let (journal, records) = rest.split_last().unwrap_or_else(|| panic!("no journal"));
    assert_eq!(journal["kind"], "journal");
    assert_eq!(journal["counts"]["ends"]["success"], 1);
    assert_eq!(journal["counts"]["ends"]["neutral"], 1);
    assert!(
        records
            .windows(2)
            .all(|w| w[0]["at"].as_str() <= w[1]["at"].as_str())
    );
    for r in records {
        assert!(
            r.get("at").is_some() && r.get("contact").is_some() && r.get("kind").is_some(),
            "{r}"
        );
    }
    let sent: Vec<_> = records.iter().filter(|r| r["kind"] == "sent").collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["channel"], "email");
    assert_eq!(sent[0]["message"], "m");
    let ends: Vec<_> = records
        .iter()
        .filter(|r| r["kind"] == "ended")
        .map(|r| (r["contact"].clone(), r["end"].clone(), r["at"].clone()))
        .collect();
    assert!(
        ends.contains(&("x".into(), "success".into(), "2026-12-02T09:00:00Z".into())),
        "{ends:?}"
    );
}

#[test]
fn bad_input_files_are_named_with_their_line() {
    let d = dir("input");
    let f = write(&d, "s.yaml", GOOD);
    let c = write(
        &d,
        "c.jsonl",
        "{\"id\": \"x\"}\n{\"email\": \"no-id@example.com\"}\nnot json\n",
    );
    let o = relance(&[
        "simulate",
        &f,
        "--contacts",
        &c,
        "--start",
        "2026-12-01T09:00:00Z",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("line 2") && out.contains("\"id\"") && out.contains("line 3"),
        "{out}"
    );
    let c = write(&d, "c2.jsonl", "{\"id\": \"x\"}\n");
    let e = write(
        &d,
        "e.jsonl",
        "{\"at\": \"yesterday\", \"contact\": \"x\", \"event\": \"purchase\"}\n",
    );
    let out = text(&relance(&[
        "simulate",
        &f,
        "--contacts",
        &c,
        "--events",
        &e,
        "--start",
        "2026-12-01T09:00:00Z",
    ]));
    assert!(out.contains("line 1") && out.contains("RFC 3339"), "{out}");
    let out = text(&relance(&[
        "simulate",
        &f,
        "--contacts",
        &c,
        "--start",
        "tomorrow",
    ]));
    assert!(out.contains("--start"), "{out}");
}

#[test]
fn simulate_refuses_an_invalid_scenario_with_its_errors() {
    let d = dir("invalid");
    let f = write(&d, "s.yaml", &GOOD.replace("then: yes", "then: ghost"));
    let c = write(&d, "c.jsonl", "{\"id\": \"x\"}\n");
    let o = relance(&[
        "simulate",
        &f,
        "--contacts",
        &c,
        "--start",
        "2026-12-01T09:00:00Z",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("unknown step \"ghost\""));
}

#[test]
fn shared_messages_and_the_policy_work_from_the_command_line() {
    let d = dir("shared");
    let scenario = write(
        &d,
        "s.yaml",
        "id: sale\nlaunch: {type: manual}\naudience: {all: true}\nsteps:\n  - {id: a, send: promo, next: b}\n  - {id: b, delay: {after: PT1H}, send: promo2, next: done}\n  - {id: done, end: success}\n",
    );
    let messages = write(
        &d,
        "messages.yaml",
        "promo: {channel: email, subject: Sale, text: Now}\npromo2: {channel: email, subject: Again, text: Now}\n",
    );
    let o = relance(&["validate", &scenario]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("promo"), "{}", text(&o));
    let o = relance(&["validate", &scenario, "--messages", &messages]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let contacts = write(
        &d,
        "c.jsonl",
        "{\"id\": \"ana\", \"email\": \"a@x.io\", \"timezone\": \"Europe/Paris\"}\n",
    );
    let policy = write(
        &d,
        "policy.yaml",
        "quiet_hours: {from: \"21:00\", to: \"08:00\"}\n",
    );
    let o = relance(&[
        "simulate",
        &scenario,
        "--contacts",
        &contacts,
        "--messages",
        &messages,
        "--policy",
        &policy,
        "--start",
        "2026-12-01T19:30:00Z",
        "--until",
        "P1D",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    // 20:30 in Paris is 21:30: the second email waits for 08:00 local.
    assert!(
        out.contains("\"reason\":\"quiet_hours\",\"until\":\"2026-12-02T07:00:00Z\""),
        "{out}"
    );
    let bad = write(&d, "bad-policy.yaml", "frequency_cap: {max: 0, per: P1D}\n");
    let o = relance(&[
        "simulate",
        &scenario,
        "--contacts",
        &contacts,
        "--messages",
        &messages,
        "--policy",
        &bad,
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o).contains("frequency_cap.max"), "{}", text(&o));
    // Stored for the runtime.
    let db = d.join("r.db").to_string_lossy().into_owned();
    let o = relance(&["policy", "set", &policy, "--db", &db]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = relance(&["policy", "show", "--db", &db]);
    assert!(text(&o).contains("quiet_hours"), "{}", text(&o));
    let o = relance(&["messages", "put", &messages, "--db", &db]);
    assert!(text(&o).contains("2 shared message(s)"), "{}", text(&o));
    let o = relance(&["scenario", "put", &scenario, "--db", &db]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = relance(&["scenario", "activate", "sale", "--db", &db]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// The split example through `relance simulate`: one JSON object per line, `assigned` with
/// `branch` = the path's `next`, `held_out` then the end `held_out`, counted in the journal.
/// The expected placements come from the formula, computed apart with Python (see the
/// example's header): u2 and u5 held out, u1 short, u3 and u4 long.
#[test]
fn simulate_prints_split_assignments_and_the_holdout() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/");
    let o = relance(&[
        "simulate",
        &format!("{root}split-test.yaml"),
        "--contacts",
        &format!("{root}contacts.jsonl"),
        "--start",
        "2026-12-01T09:00:00Z",
        "--until",
        "P7D",
        "--journal",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let of = |kind: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|r| r["kind"] == kind)
            .map(|r| {
                format!(
                    "{} {}",
                    r["contact"].as_str().unwrap_or("?"),
                    r["branch"].as_str().or(r["end"].as_str()).unwrap_or("")
                )
            })
            .collect()
    };
    assert_eq!(of("assigned"), ["u1 short", "u3 long", "u4 long"]);
    assert_eq!(of("held_out"), ["u2 ", "u5 "]);
    let assigned = lines
        .iter()
        .find(|r| r["kind"] == "assigned")
        .unwrap_or_else(|| panic!("no assigned record"));
    assert_eq!(assigned["step"], "ab");
    let (report, journal) = journal_and_report(&lines);
    assert_eq!(journal["counts"]["ends"]["held_out"], 2);
    assert_eq!(journal["counts"]["steps"]["ab"]["assigned"]["long"], 2);
    assert_eq!(journal["counts"]["steps"]["ab"]["assigned"]["short"], 1);
    assert!(
        !lines
            .iter()
            .any(|r| r["kind"] == "sent"
                && ["u2", "u5"].contains(&r["contact"].as_str().unwrap_or(""))),
        "held-out contacts are sent nothing"
    );
    // The report counts the same entries: per path, and treated against held out.
    let report = &report["report"];
    assert_eq!(report["total"]["entries"], 5, "{report}");
    assert_eq!(report["holdout"]["held_out"]["entries"], 2, "{report}");
    assert_eq!(report["holdout"]["treated"]["entries"], 3, "{report}");
    let paths = &report["steps"][0]["paths"];
    assert_eq!(paths[0]["path"], "short", "{paths}");
    assert_eq!(paths[0]["entries"], 1, "{paths}");
    assert_eq!(paths[1]["path"], "long", "{paths}");
    assert_eq!(paths[1]["entries"], 2, "{paths}");
    // u3 and u4 are sent `long-welcome`, then `tips` two days later.
    assert_eq!(paths[1]["sent"], 4, "{paths}");
}

/// The last two lines of `simulate --journal`: (report, journal), each with its `kind`.
fn journal_and_report(lines: &[serde_json::Value]) -> (&serde_json::Value, &serde_json::Value) {
    let [.., journal, report] = lines else {
        panic!("fewer than two lines: {lines:?}");
    };
    assert_eq!(journal["kind"], "journal", "{journal}");
    assert_eq!(report["kind"], "report", "{report}");
    assert_eq!(report["contact"], serde_json::Value::Null, "{report}");
    assert_eq!(report["at"], journal["at"], "{report}");
    (report, journal)
}

/// The variants example through `relance simulate`: `assigned` with `message` = the chosen
/// variant just before each `sent` of that message, counted per variant in the journal. The
/// expected variants come from the formula, computed apart with Python (see the example's
/// header): u1 to u4 subject-a, u5 subject-b.
#[test]
fn simulate_prints_variant_assignments_before_their_sends() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/");
    let o = relance(&[
        "simulate",
        &format!("{root}subject-test.yaml"),
        "--contacts",
        &format!("{root}contacts.jsonl"),
        "--start",
        "2026-12-01T09:00:00Z",
        "--until",
        "P3D",
        "--journal",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let of = |kind: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|r| r["kind"] == kind)
            .map(|r| {
                format!(
                    "{} {}",
                    r["contact"].as_str().unwrap_or("?"),
                    r["message"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    let want = [
        "u1 subject-a",
        "u2 subject-a",
        "u3 subject-a",
        "u4 subject-a",
        "u5 subject-b",
    ];
    assert_eq!(of("assigned"), want);
    assert_eq!(of("sent"), want);
    for (i, r) in lines.iter().enumerate() {
        if r["kind"] == "sent" {
            assert_eq!(lines[i - 1]["kind"], "assigned", "{r}");
            assert_eq!(lines[i - 1]["message"], r["message"], "{r}");
        }
    }
    let (_, journal) = journal_and_report(&lines);
    assert_eq!(
        journal["counts"]["steps"]["welcome"]["assigned"]["subject-a"],
        4
    );
    assert_eq!(
        journal["counts"]["steps"]["welcome"]["assigned"]["subject-b"],
        1
    );
}

/// `simulate --journal` ends with the report of the records it printed: sends and engagement
/// per variant (the `--events` openings and clicks), no holdout comparison without a holdout.
/// u1 to u4 are sent subject-a and u5 subject-b (see the variants test above).
#[test]
fn simulate_ends_with_the_report_per_variant() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/");
    let d = dir("sim-report");
    let e = write(
        &d,
        "e.jsonl",
        "{\"at\": \"2026-12-01T10:00:00Z\", \"contact\": \"u1\", \"opened\": \"welcome\"}
{\"at\": \"2026-12-01T10:05:00Z\", \"contact\": \"u1\", \"clicked\": \"welcome\", \"link\": \"https://example.org/start\"}
{\"at\": \"2026-12-01T11:00:00Z\", \"contact\": \"u1\", \"opened\": \"welcome\"}
{\"at\": \"2026-12-01T12:00:00Z\", \"contact\": \"u5\", \"opened\": \"welcome\"}
",
    );
    let o = relance(&[
        "simulate",
        &format!("{root}subject-test.yaml"),
        "--contacts",
        &format!("{root}contacts.jsonl"),
        "--events",
        &e,
        "--start",
        "2026-12-01T09:00:00Z",
        "--until",
        "P3D",
        "--journal",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let (report, _) = journal_and_report(&lines);
    assert_eq!(report["scenario"], "subject-test");
    assert_eq!(report["at"], "2026-12-04T09:00:00Z");
    let report = &report["report"];
    assert_eq!(report["scenario"], "subject-test");
    assert_eq!(report["holdout"], serde_json::Value::Null, "{report}");
    assert_eq!(report["total"]["entries"], 5, "{report}");
    assert_eq!(report["total"]["rate"], 0.0, "{report}");
    let welcome = &report["steps"][0];
    assert_eq!(welcome["step"], "welcome");
    // Distinct contacts: u1 opened twice.
    assert_eq!(
        [&welcome["sent"], &welcome["opened"], &welcome["clicked"]],
        [5, 2, 1],
        "{welcome}"
    );
    let variants = &welcome["variants"];
    let row = |i: usize, key: &str| variants[i][key].clone();
    assert_eq!(row(0, "message"), "subject-a");
    assert_eq!(
        [
            row(0, "sent"),
            row(0, "entries"),
            row(0, "opened"),
            row(0, "clicked")
        ],
        [4, 4, 1, 1],
        "{variants}"
    );
    assert_eq!(row(1, "message"), "subject-b");
    assert_eq!(
        [
            row(1, "sent"),
            row(1, "entries"),
            row(1, "opened"),
            row(1, "clicked")
        ],
        [1, 1, 1, 0],
        "{variants}"
    );
    assert_eq!(row(0, "winner"), false);
    // statsmodels.stats.proportion.proportion_confint(0, 4, alpha=0.05, method="wilson")
    // = (0.0, 0.4898908364545974)
    let high = row(0, "interval")["high"].as_f64().unwrap_or(f64::NAN);
    assert!((high - 0.4898908364545974).abs() < 1e-14, "{variants}");
    // Without --journal, neither line.
    let o = relance(&[
        "simulate",
        &format!("{root}subject-test.yaml"),
        "--contacts",
        &format!("{root}contacts.jsonl"),
        "--start",
        "2026-12-01T09:00:00Z",
        "--until",
        "P3D",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        !out.contains("\"kind\":\"report\"") && !out.contains("\"kind\":\"journal\""),
        "{out}"
    );
}
