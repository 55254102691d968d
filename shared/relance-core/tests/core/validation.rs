//! Validation messages: one test per rule of DESIGN §3, each asserting where the problem is
//! (path, step id, line) and what the message says, plus the example scenarios shipped in
//! `examples/` (all valid) and `examples/broken/` (all rejected, every problem located).

use std::fs;
use std::path::{Path, PathBuf};

use relance_core::validate::{Report, check_text};
use relance_core::{Format, Problem, Severity};

fn yaml(text: &str) -> Report {
    check_text(text, Format::Yaml)
}

/// Every problem, one per line, for assertion messages.
fn listing(r: &Report) -> String {
    r.problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn errors(r: &Report) -> Vec<&Problem> {
    r.problems.iter().filter(|p| p.is_error()).collect()
}

fn warnings(r: &Report) -> Vec<&Problem> {
    r.problems
        .iter()
        .filter(|p| p.severity == Severity::Warning)
        .collect()
}

/// The only error whose message contains `needle`.
fn error_with<'a>(r: &'a Report, needle: &str) -> &'a Problem {
    let found: Vec<&Problem> = errors(r)
        .into_iter()
        .filter(|p| p.message.contains(needle))
        .collect();
    match found.as_slice() {
        [one] => one,
        _ => panic!(
            "expected exactly one error mentioning {needle:?}, found {}:\n{}",
            found.len(),
            listing(r)
        ),
    }
}

fn assert_clean(r: &Report) {
    assert_eq!(r.errors(), 0, "expected no error:\n{}", listing(r));
    assert!(r.scenario.is_some(), "a clean report carries the scenario");
}

/// A valid header (manual launch, two messages) followed by `steps`.
fn with_steps(steps: &str) -> String {
    format!(
        "id: test\nname: Test\ntimezone: Europe/Paris\nlaunch: {{type: manual}}\naudience: {{all: true}}\nmessages:\n  hello: {{channel: email, subject: Hello, text: Hello}}\n  ping: {{channel: sms, text: Ping}}\nsteps:\n{steps}"
    )
}

/// A valid scenario with the given `launch` and one send and one end.
fn with_launch(launch: &str) -> String {
    format!(
        "id: test\ntimezone: Europe/Paris\nlaunch: {launch}\naudience: {{all: true}}\nmessages:\n  hello: {{channel: email, subject: Hello, text: Hello}}\nsteps:\n  - {{id: first, send: hello, next: done}}\n  - {{id: done, end: success}}\n"
    )
}

const VALID: &str = "  - {id: first, send: hello, next: check}
  - id: check
    delay: {after: P2D, at: \"09:00\"}
    if: {opened: first}
    then: sms
    else: done
  - {id: sms, send: ping, next: done}
  - {id: done, end: success}
";

#[test]
fn a_valid_scenario_has_no_problem_at_all() {
    let r = yaml(&with_steps(VALID));
    assert_clean(&r);
    assert!(r.problems.is_empty(), "{}", listing(&r));
}

// ---- references -------------------------------------------------------------------------

#[test]
fn unknown_step_reference_names_the_id_the_path_and_the_step() {
    let r = yaml(&with_steps(&VALID.replace("else: done", "else: nowhere")));
    let p = error_with(&r, "unknown step \"nowhere\"");
    assert_eq!(p.path, "steps[1].else");
    assert_eq!(p.step.as_deref(), Some("check"));
    assert_eq!(p.line, Some(15), "the line of `else:`");
}

#[test]
fn unknown_step_reference_in_then_of_the_third_step() {
    let steps = "  - {id: first, send: hello, next: wait}
  - id: wait
    delay: {after: P1D}
    next: check
  - id: check
    if: {opened: first}
    then: sms-step
    else: done
  - {id: sms, send: ping, next: done}
  - {id: done, end: success}
";
    let r = yaml(&with_steps(steps));
    let p = error_with(&r, "unknown step \"sms-step\"");
    assert_eq!(p.path, "steps[2].then");
    assert_eq!(p.step.as_deref(), Some("check"));
}

#[test]
fn unknown_message_names_the_message_and_lists_the_known_ones() {
    let r = yaml(&with_steps(&VALID.replace("send: ping", "send: pong")));
    let p = error_with(&r, "unknown message \"pong\"");
    assert_eq!(p.path, "steps[2].send");
    assert_eq!(p.step.as_deref(), Some("sms"));
    assert!(p.message.contains("hello, ping"), "{}", p.message);
}

#[test]
fn a_message_that_does_not_read_is_not_also_reported_unknown() {
    let text = with_steps(VALID).replace(
        "ping: {channel: sms, text: Ping}",
        "ping: {channel: fax, text: Ping}",
    );
    let r = yaml(&text);
    let p = error_with(&r, "fax");
    assert_eq!(p.path, "messages.ping.channel");
    assert_eq!(r.errors(), 1, "{}", listing(&r));
}

#[test]
fn duplicate_step_id_points_at_the_second_one() {
    let r = yaml(&with_steps(&VALID.replace("id: sms,", "id: first,")));
    let p = error_with(&r, "duplicate step id \"first\"");
    assert_eq!(p.path, "steps[2].id");
    assert_eq!(p.step.as_deref(), Some("first"));
    assert!(p.message.contains("steps[0]"), "{}", p.message);
}

// ---- graph ------------------------------------------------------------------------------

#[test]
fn unreachable_step_is_reported_once() {
    let steps = format!("{VALID}  - {{id: orphan, send: ping, next: done}}\n");
    let r = yaml(&with_steps(&steps));
    let p = error_with(&r, "unreachable");
    assert_eq!(p.path, "steps[4]");
    assert_eq!(p.step.as_deref(), Some("orphan"));
    assert_eq!(r.errors(), 1, "{}", listing(&r));
}

#[test]
fn a_path_that_never_reaches_an_end_is_reported_where_it_starts() {
    // `else` leads to a step that waits a day and comes back to itself, forever.
    let steps = "  - {id: first, send: hello, next: check}
  - id: check
    delay: {after: P2D}
    if: {opened: first}
    then: done
    else: again
  - id: again
    delay: {after: P1D}
    next: again
  - {id: done, end: success}
";
    let r = yaml(&with_steps(steps));
    let p = error_with(&r, "never reaches an end");
    assert_eq!(p.path, "steps[2]");
    assert_eq!(p.step.as_deref(), Some("again"));
    // A delay holds: this is not a loop without a delay.
    assert!(
        !r.problems.iter().any(|p| p.message.contains("loop")),
        "{}",
        listing(&r)
    );
    assert_eq!(r.errors(), 1, "{}", listing(&r));
}

#[test]
fn a_whole_scenario_without_end_is_reported_at_its_first_step_only() {
    let steps = "  - {id: first, send: hello, next: pause}
  - id: pause
    delay: {after: P1D}
    next: first
";
    let r = yaml(&with_steps(steps));
    let p = error_with(&r, "never reaches an end");
    assert_eq!(p.path, "steps[0]");
    assert!(p.message.contains("\"pause\""), "{}", p.message);
}

#[test]
fn steps_before_an_unknown_target_are_not_also_said_to_never_end() {
    let r = yaml(&with_steps(&VALID.replace("next: done}", "next: dnoe}")));
    assert!(
        !r.problems
            .iter()
            .any(|p| p.message.contains("never reaches an end")),
        "{}",
        listing(&r)
    );
    error_with(&r, "unknown step \"dnoe\"");
}

#[test]
fn loop_without_a_delay_is_a_cycle_error_in_edge_order() {
    let steps = "  - {id: first, send: hello, next: check}
  - id: check
    if: {clicked: first}
    then: done
    else: nudge
  - {id: nudge, send: ping, next: check}
  - {id: done, end: success}
";
    let r = yaml(&with_steps(steps));
    let p = error_with(&r, "loop");
    assert!(p.message.contains("cycle"), "{}", p.message);
    assert!(p.message.contains("check → nudge → check"), "{}", p.message);
    assert_eq!(p.path, "steps[1]");
    assert_eq!(p.step.as_deref(), Some("check"));
}

#[test]
fn a_step_looping_on_itself_without_delay_is_a_loop() {
    let steps = "  - {id: first, send: hello, next: spin}
  - id: spin
    if: {opened: first}
    then: done
    else: spin
  - {id: done, end: success}
";
    let r = yaml(&with_steps(steps));
    let p = error_with(&r, "loop (cycle)");
    assert!(p.message.contains("spin → spin"), "{}", p.message);
}

#[test]
fn a_loop_holding_a_delay_or_a_wait_is_fine() {
    let with_delay = "  - {id: first, send: hello, next: check}
  - id: check
    if: {clicked: first}
    then: done
    else: nudge
  - id: nudge
    delay: {after: P1D}
    send: ping
    next: check
  - {id: done, end: success}
";
    assert_clean(&yaml(&with_steps(with_delay)));
    let with_after_and_at = with_delay.replace("{after: P1D}", "{after: P1D, at: \"09:00\"}");
    assert_clean(&yaml(&with_steps(&with_after_and_at)));
    let with_wait = "  - {id: first, send: hello, next: wait}
  - id: wait
    wait_for: {clicked: first, timeout: P1D}
    on_event: done
    on_timeout: nudge
  - {id: nudge, send: ping, next: wait}
  - {id: done, end: success}
";
    assert_clean(&yaml(&with_steps(with_wait)));
}

#[test]
fn at_or_until_alone_does_not_break_a_loop() {
    // `at` alone runs at once when it is that time already, `until` once its date is past:
    // either would let the loop spin.
    for delay in ["{at: \"09:00\"}", "{until: \"2026-12-24T10:00\"}"] {
        let steps = format!(
            "  - {{id: first, send: hello, next: check}}
  - id: check
    if: {{clicked: first}}
    then: done
    else: nudge
  - id: nudge
    delay: {delay}
    send: ping
    next: check
  - {{id: done, end: success}}
"
        );
        let r = yaml(&with_steps(&steps));
        error_with(&r, "loop (cycle) without a delay or a wait");
    }
}

#[test]
fn a_zero_delay_does_not_break_a_loop() {
    let steps = "  - {id: first, send: hello, next: check}
  - id: check
    if: {clicked: first}
    then: done
    else: nudge
  - id: nudge
    delay: {after: PT0S}
    send: ping
    next: check
  - {id: done, end: success}
";
    let r = yaml(&with_steps(steps));
    error_with(&r, "loop (cycle) without a delay or a wait");
}

// ---- post-send conditions ----------------------------------------------------------------

#[test]
fn post_send_condition_on_a_step_that_is_not_a_send() {
    let r = yaml(&with_steps(
        &VALID.replace("if: {opened: first}", "if: {opened: check}"),
    ));
    let p = error_with(&r, "post-send condition");
    assert_eq!(p.path, "steps[1].if");
    assert_eq!(p.step.as_deref(), Some("check"));
    assert!(
        p.message.contains("\"check\" is not a send step"),
        "{}",
        p.message
    );
}

#[test]
fn post_send_condition_naming_an_unknown_step() {
    let r = yaml(&with_steps(
        &VALID.replace("if: {opened: first}", "if: {opened: frist}"),
    ));
    let p = error_with(&r, "post-send condition");
    assert!(
        p.message.contains("unknown step \"frist\""),
        "{}",
        p.message
    );
    assert!(
        p.message.contains("did you mean \"first\""),
        "{}",
        p.message
    );
}

#[test]
fn post_send_condition_not_after_its_send_is_an_error() {
    let steps = "  - id: check
    if: {opened: mail}
    then: mail
    else: done
  - {id: mail, send: hello, next: done}
  - {id: done, end: success}
";
    let r = yaml(&with_steps(steps));
    let p = error_with(&r, "post-send condition");
    assert_eq!(p.path, "steps[0].if");
    assert_eq!(p.step.as_deref(), Some("check"));
    assert!(p.message.contains("{opened: mail}"), "{}", p.message);
    assert!(p.message.contains("does not follow"), "{}", p.message);
}

#[test]
fn post_send_condition_in_a_wait_for_and_in_branches_is_checked_too() {
    let steps = "  - id: split
    branches:
      - {when: {clicked: mail}, next: mail}
    otherwise: wait
  - id: wait
    wait_for: {opened: mail, timeout: P1D}
    on_event: mail
    on_timeout: mail
  - {id: mail, send: hello, next: done}
  - {id: done, end: success}
";
    let r = yaml(&with_steps(steps));
    let paths: Vec<&str> = errors(&r)
        .iter()
        .filter(|p| p.message.contains("post-send condition"))
        .map(|p| p.path.as_str())
        .collect();
    assert_eq!(
        paths,
        ["steps[0].branches[0].when", "steps[1].wait_for"],
        "{}",
        listing(&r)
    );
}

#[test]
fn post_send_condition_on_only_some_paths_is_a_warning() {
    let steps = "  - id: split
    branches:
      - {when: {field: vip, op: eq, value: true}, next: mail}
    otherwise: check
  - {id: mail, send: hello, next: check}
  - id: check
    delay: {after: P1D}
    if: {opened: mail}
    then: done
    else: done
  - {id: done, end: success}
";
    let r = yaml(&with_steps(steps));
    assert_clean(&r);
    let w = warnings(&r);
    let p = w
        .iter()
        .find(|p| p.message.contains("post-send condition"))
        .unwrap_or_else(|| panic!("no post-send warning:\n{}", listing(&r)));
    assert_eq!(p.path, "steps[2].if");
    assert!(p.message.contains("some paths"), "{}", p.message);
}

#[test]
fn post_send_conditions_in_audience_and_exit_when() {
    let text = with_steps(VALID).replace(
        "audience: {all: true}",
        "audience: {criteria: {opened: first}}\nexit_when: [{clicked: check}]",
    );
    let r = yaml(&text);
    let a = errors(&r)
        .into_iter()
        .find(|p| p.path == "audience.criteria")
        .unwrap_or_else(|| panic!("{}", listing(&r)));
    assert!(a.message.contains("post-send condition"), "{}", a.message);
    let e = errors(&r)
        .into_iter()
        .find(|p| p.path == "exit_when[0]")
        .unwrap_or_else(|| panic!("{}", listing(&r)));
    assert!(e.message.contains("post-send condition"), "{}", e.message);
    assert!(e.message.contains("not a send step"), "{}", e.message);
}

// ---- launch limits -----------------------------------------------------------------------

/// `launch.where` (DESIGN §3): a trigger enters only on events whose properties match;
/// clauses that need the clock or the contact are refused, located.
#[test]
fn a_trigger_where_filters_on_the_event_properties() {
    let r = yaml(&with_launch(
        "{type: trigger, event: purchase, where: {all: [{field: amount, op: ge, value: 20}, {field: store, op: in, value: [web, app]}, {field: day, op: before, value: \"2026-12-24\"}]}}",
    ));
    assert_clean(&r);
    let Some(relance_core::scenario::Launch::Trigger(t)) =
        r.scenario.as_ref().map(|s| s.launch.clone())
    else {
        panic!("not a trigger: {:?}", r.scenario.map(|s| s.launch));
    };
    let props = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
    let yes = props(serde_json::json!({"amount": 35.5, "store": "web", "day": "2026-12-01"}));
    assert!(t.fires_on("purchase", &yes));
    assert!(!t.fires_on("refund", &yes), "another event");
    for no in [
        serde_json::json!({"amount": 12, "store": "web", "day": "2026-12-01"}),
        serde_json::json!({"amount": 80, "store": "pos", "day": "2026-12-01"}),
        serde_json::json!({"amount": 80, "store": "app"}),
        serde_json::json!({"amount": 80, "store": "app", "day": "2026-12-24T12:00"}),
    ] {
        assert!(!t.fires_on("purchase", &props(no.clone())), "{no}");
    }
    for (launch, needle, path) in [
        (
            "{type: manual, where: {field: a, op: eq, value: 1}}",
            "does not apply to a manual launch",
            "launch.where",
        ),
        (
            "{type: trigger, event: purchase, where: {field: at, op: within_last, value: P1D}}",
            "no within_last",
            "launch.where",
        ),
        (
            "{type: trigger, event: purchase, where: {opened: first}}",
            "apply to the event's properties",
            "launch.where",
        ),
        (
            "{type: trigger, event: cart.abandoned, inactivity_minutes: 30, where: {field: a, op: eq, value: 1}}",
            "fires on silence",
            "launch.where",
        ),
    ] {
        let r = yaml(&with_launch(launch));
        assert_eq!(error_with(&r, needle).path, path, "{launch}");
    }
}

#[test]
fn inactivity_minutes_must_be_between_10_and_720() {
    for bad in [0, 5, 9, 721, 1440] {
        let r = yaml(&with_launch(&format!(
            "{{type: trigger, event: cart.abandoned, inactivity_minutes: {bad}}}"
        )));
        let p = error_with(&r, "inactivity_minutes must be between 10 and 720");
        assert_eq!(p.path, "launch.inactivity_minutes");
        assert!(p.message.contains(&bad.to_string()), "{}", p.message);
    }
    for good in [10, 60, 720] {
        assert_clean(&yaml(&with_launch(&format!(
            "{{type: trigger, event: product.viewed, inactivity_minutes: {good}}}"
        ))));
    }
    let r = yaml(&with_launch("{type: trigger, event: cart.abandoned}"));
    assert_eq!(
        error_with(&r, "needs inactivity_minutes").path,
        "launch.inactivity_minutes"
    );
    let r = yaml(&with_launch(
        "{type: trigger, event: purchase, inactivity_minutes: 30}",
    ));
    error_with(&r, "applies to product.viewed and cart.abandoned");
}

#[test]
fn at_most_5_daily_times() {
    let six = "{type: recurring, frequency: daily, times: [\"08:00\", \"10:00\", \"12:00\", \"14:00\", \"16:00\", \"18:00\"]}";
    let r = yaml(&with_launch(six));
    let p = error_with(&r, "at most 5 times");
    assert_eq!(p.path, "launch.times");
    assert!(p.message.contains("found 6"), "{}", p.message);
    let five = six.replace(", \"18:00\"", "");
    assert_clean(&yaml(&with_launch(&five)));
    let nested = "{type: recurring, recurring: {frequency: daily, times: [\"01:00\", \"02:00\", \"03:00\", \"04:00\", \"05:00\", \"06:00\"]}}";
    assert_eq!(
        error_with(&yaml(&with_launch(nested)), "at most 5 times").path,
        "launch.recurring.times"
    );
}

#[test]
fn at_most_10_fixed_dates() {
    let dates = |n: u32| {
        (1..=n)
            .map(|m| format!("\"2026-{m:02}-01T09:00\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let r = yaml(&with_launch(&format!(
        "{{type: fixed_dates, dates: [{}]}}",
        dates(11)
    )));
    let p = error_with(&r, "at most 10 dates");
    assert_eq!(p.path, "launch.dates");
    assert!(p.message.contains("found 11"), "{}", p.message);
    assert_clean(&yaml(&with_launch(&format!(
        "{{type: fixed_dates, dates: [{}]}}",
        dates(10)
    ))));
}

#[test]
fn at_most_100_goals() {
    let goals = |n: usize| {
        (0..n)
            .map(|i| format!("  - {{id: goal-{i}, kind: success}}\n"))
            .collect::<String>()
    };
    let r = yaml(&format!("{}goals:\n{}", with_steps(VALID), goals(101)));
    let p = error_with(&r, "at most 100 goals");
    assert_eq!(p.path, "goals");
    assert!(p.message.contains("found 101"), "{}", p.message);
    assert_clean(&yaml(&format!(
        "{}goals:\n{}",
        with_steps(VALID),
        goals(100)
    )));
}

#[test]
fn unknown_custom_end() {
    let r = yaml(&with_steps(
        &VALID.replace("end: success", "end: signed-up"),
    ));
    let p = error_with(&r, "unknown end \"signed-up\"");
    assert_eq!(p.path, "steps[3].end");
    assert_eq!(p.step.as_deref(), Some("done"));
    assert!(p.message.contains("no goals"), "{}", p.message);
    let declared = format!(
        "{}goals: [{{id: signed-up, kind: success, label: Signed up}}]\n",
        with_steps(&VALID.replace("end: success", "end: signed-up"))
    );
    assert_clean(&yaml(&declared));
}

// ---- values ------------------------------------------------------------------------------

#[test]
fn bad_duration_is_located_at_the_delay_field() {
    let r = yaml(&with_steps(&format!(
        "  - id: first\n    delay: {{after: P2X}}\n    send: hello\n    next: done\n{}",
        "  - {id: done, end: success}\n"
    )));
    let p = error_with(&r, "\"P2X\"");
    assert_eq!(p.path, "steps[0].delay.after");
    assert_eq!(p.step.as_deref(), Some("first"));
    assert!(p.message.contains("ISO-8601 duration"), "{}", p.message);
    assert_eq!(p.line, Some(11), "the line of `delay:`");
    assert_eq!(r.errors(), 1, "{}", listing(&r));
}

#[test]
fn bad_durations_elsewhere() {
    let r = yaml(&with_steps(VALID).replace("audience:", "once_per: 30 days\naudience:"));
    assert_eq!(error_with(&r, "\"30 days\"").path, "once_per");
    let r = yaml(&with_steps(
        "  - {id: first, send: hello, next: wait}\n  - id: wait\n    wait_for: {opened: first, timeout: 1D}\n    on_event: done\n    on_timeout: done\n  - {id: done, end: success}\n",
    ));
    assert_eq!(error_with(&r, "\"1D\"").path, "steps[1].wait_for.timeout");
    assert_eq!(r.errors(), 1, "{}", listing(&r));
}

#[test]
fn bad_time_of_day() {
    let r = yaml(&with_launch(
        "{type: recurring, frequency: weekly, days: [mon], time: \"9h\"}",
    ));
    let p = error_with(&r, "\"9h\"");
    assert_eq!(p.path, "launch.time");
    assert!(p.message.contains("time of day"), "{}", p.message);
    let r = yaml(&with_steps(
        &VALID.replace("at: \"09:00\"", "at: \"25:00\""),
    ));
    assert_eq!(error_with(&r, "\"25:00\"").path, "steps[1].delay.at");
    let r = yaml(&with_steps(VALID).replace(
        "audience:",
        "quiet_hours: {from: \"9pm\", to: \"08:00\"}\naudience:",
    ));
    assert_eq!(error_with(&r, "\"9pm\"").path, "quiet_hours.from");
}

#[test]
fn bad_timezone() {
    let r = yaml(&with_steps(VALID).replace("Europe/Paris", "Europe/Pariss"));
    let p = error_with(&r, "\"Europe/Pariss\"");
    assert_eq!(p.path, "timezone");
    assert!(p.message.contains("IANA time zone"), "{}", p.message);
    assert_eq!(p.line, Some(3));
}

#[test]
fn bad_fixed_date() {
    let r = yaml(&with_launch(
        "{type: fixed_dates, dates: [\"2026-13-01T09:00\"]}",
    ));
    let p = error_with(&r, "\"2026-13-01T09:00\"");
    assert_eq!(p.path, "launch.dates[0]");
}

// ---- keys --------------------------------------------------------------------------------

#[test]
fn unknown_top_level_key() {
    let r = yaml(&with_steps(VALID).replace("name: Test", "name: Test\ncolour: blue"));
    let p = error_with(&r, "unknown key \"colour\"");
    assert_eq!(p.path, "colour");
    assert_eq!(p.line, Some(3));
    assert!(p.message.contains("a scenario has id"), "{}", p.message);
    assert_eq!(r.errors(), 1, "{}", listing(&r));
}

#[test]
fn unknown_key_in_a_step_does_not_hide_the_rest() {
    let text = with_steps(
        &VALID
            .replace("    then: sms\n", "    then: sms\n    thne: done\n")
            .replace("else: done", "else: nowhere"),
    );
    let r = yaml(&text);
    let p = error_with(&r, "unknown key \"thne\"");
    assert_eq!(p.path, "steps[1].thne");
    assert_eq!(p.step.as_deref(), Some("check"));
    assert!(p.message.contains("did you mean \"then\""), "{}", p.message);
    // The step still reads: its references and the graph are still checked.
    error_with(&r, "unknown step \"nowhere\"");
}

#[test]
fn unknown_keys_in_launch_messages_and_goals() {
    let r = yaml(&with_launch("{type: manual, evnet: purchase}"));
    let p = error_with(&r, "unknown key \"evnet\"");
    assert_eq!(p.path, "launch.evnet");
    assert!(
        p.message.contains("did you mean \"event\""),
        "{}",
        p.message
    );
    let r = yaml(&with_steps(VALID).replace("subject: Hello", "subjet: Hello"));
    let p = error_with(&r, "unknown key \"subjet\"");
    assert_eq!(p.path, "messages.hello.subjet");
    let r = yaml(&format!(
        "{}goals: [{{id: won, knd: success}}]\n",
        with_steps(&VALID.replace("end: success", "end: won"))
    ));
    assert_eq!(error_with(&r, "unknown key \"knd\"").path, "goals[0].knd");
    assert_eq!(r.errors(), 1, "{}", listing(&r));
}

// ---- syntax ------------------------------------------------------------------------------

#[test]
fn json_syntax_error_has_line_and_column() {
    let text = "{\"id\": \"x\",\n  \"launch\": {\"type\": \"manual\"},\n  \"steps\": [ {\"id\": \"a\" \"end\": \"success\"} ]\n}\n";
    let r = check_text(text, Format::Json);
    assert_eq!(r.problems.len(), 1, "{}", listing(&r));
    let p = &r.problems[0];
    assert!(p.is_error());
    assert!(p.message.starts_with("JSON syntax"), "{}", p.message);
    assert_eq!((p.line, p.column), (Some(3), Some(25)));
}

#[test]
fn yaml_syntax_error_has_line_and_column() {
    let text = "id: x\nlaunch: {type: manual\nsteps:\n  - id: a\n    end: success\n";
    let r = yaml(text);
    assert_eq!(r.problems.len(), 1, "{}", listing(&r));
    let p = &r.problems[0];
    assert!(p.message.starts_with("YAML syntax"), "{}", p.message);
    assert_eq!((p.line, p.column), (Some(3), Some(6)));
    let tab = yaml("id: x\nlaunch: {type: manual}\nsteps:\n  - id: a\n\tend: success\n");
    assert!(tab.problems[0].message.contains("tab"), "{}", listing(&tab));
    assert_eq!(tab.problems[0].line, Some(5));
}

#[test]
fn json_scenarios_are_checked_like_yaml_ones() {
    let text = r#"{
  "id": "json-test",
  "launch": {"type": "manual"},
  "messages": {"hello": {"channel": "email", "subject": "Hi", "text": "Hi"}},
  "steps": [
    {"id": "first", "send": "hello", "next": "gone"},
    {"id": "done", "end": "success"}
  ]
}"#;
    let r = check_text(text, Format::Json);
    let p = error_with(&r, "unknown step \"gone\"");
    assert_eq!(p.path, "steps[0].next");
    assert_eq!(p.line, Some(6));
}

// ---- everything at once -------------------------------------------------------------------

#[test]
fn several_errors_are_reported_in_one_run() {
    let text = "id: several
timezone: Mars/Olympus
launch: {type: trigger, event: cart.abandoned, inactivity_minutes: 3}
audience: {all: true}
colour: red
messages:
  hello: {channel: email, subject: Hello, text: Hello}
steps:
  - id: first
    send: helo
    next: wait
  - id: wait
    delay: {after: P1Q}
    next: check
  - id: check
    if: {opened: later}
    then: first
    else: ghost
  - id: later
    send: hello
    next: done
  - id: done
    end: vip
  - id: done
    end: success
";
    let r = yaml(text);
    let expected = [
        ("timezone", "\"Mars/Olympus\""),
        ("launch.inactivity_minutes", "between 10 and 720"),
        ("colour", "unknown key \"colour\""),
        ("steps[0].send", "unknown message \"helo\""),
        ("steps[1].delay.after", "\"P1Q\""),
        ("steps[2].else", "unknown step \"ghost\""),
        ("steps[2].if", "post-send condition"),
        ("steps[3]", "unreachable"),
        ("steps[4].end", "unknown end \"vip\""),
        ("steps[5].id", "duplicate step id \"done\""),
    ];
    for (path, needle) in expected {
        assert!(
            errors(&r)
                .iter()
                .any(|p| p.path == path && p.message.contains(needle)),
            "no error at {path} mentioning {needle}:\n{}",
            listing(&r)
        );
    }
    assert!(r.scenario.is_none());
    let line_of = |path: &str| {
        errors(&r)
            .iter()
            .find(|p| p.path == path)
            .and_then(|p| p.line)
    };
    assert_eq!(line_of("steps[4].end"), Some(23), "{}", listing(&r));
    assert_eq!(line_of("steps[5].id"), Some(24), "{}", listing(&r));
    assert_eq!(line_of("colour"), Some(5), "{}", listing(&r));
    assert!(
        errors(&r)
            .iter()
            .all(|p| !p.path.is_empty() && p.line.is_some()),
        "every error is located:\n{}",
        listing(&r)
    );
}

// ---- the shipped examples ---------------------------------------------------------------

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn files_in(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && keep(p))
        .collect();
    files.sort();
    files
}

fn check_file(path: &Path) -> Report {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    check_text(&text, Format::from_path(&path.to_string_lossy()))
}

#[test]
fn every_example_validates_without_errors() {
    let files = files_in(&examples_dir(), |p| {
        p.extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
    });
    assert!(files.len() >= 8, "examples found: {files:?}");
    for f in files {
        let r = check_file(&f);
        assert_eq!(r.errors(), 0, "{}:\n{}", f.display(), listing(&r));
    }
}

#[test]
fn every_broken_example_is_rejected_with_located_errors() {
    let files = files_in(&examples_dir().join("broken"), |_| true);
    assert!(files.len() >= 4, "broken examples found: {files:?}");
    for f in files {
        let text = fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(
            text.starts_with("# Expected errors:"),
            "{}: the first line names the expected errors",
            f.display()
        );
        let r = check_file(&f);
        assert!(r.errors() >= 1, "{}: no error", f.display());
        for p in errors(&r) {
            assert!(
                !p.path.is_empty() || p.line.is_some(),
                "{}: unlocated error {p}",
                f.display()
            );
        }
    }
}

#[test]
fn hostile_nested_range_message_is_reported_by_validate() {
    // Passed validation and then held the runner forever (issue 11, finding 3).
    let text = "id: test\nlaunch: {type: manual}\naudience: {all: true}\nmessages:\n  welcome:\n    channel: email\n    subject: Hi\n    text: \"{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}\"\nsteps:\n  - {id: first, send: welcome, next: done}\n  - {id: done, end: success}\n";
    let r = yaml(text);
    let p = error_with(&r, "range has more than 1000 items");
    assert_eq!(p.path, "messages.welcome.text");
    // Within the range cap, the same loops run out of fuel on a sample contact.
    let fuel = text.replace("100000", "1000").replace(
        "{% for j in range(1000) %}",
        "{% for j in range(1000) %}{% for k in range(1000) %}",
    );
    let fuel = fuel.replace(
        "x{% endfor %}",
        "{{ contact.nickname }}{% endfor %}{% endfor %}",
    );
    let r = yaml(&fuel);
    let p = error_with(&r, "template uses more than its fuel");
    assert_eq!(p.path, "messages.welcome.text");
    assert!(
        p.message.contains("template fuel exhausted"),
        "{}",
        p.message
    );
}

#[test]
fn hostile_unbounded_template_is_refused_by_validate() {
    let text = "id: test\nlaunch: {type: manual}\naudience: {all: true}\nmessages:\n  welcome: {channel: email, subject: Hi, text: \"{{ 'x' * 1000000000 }}\"}\nsteps:\n  - {id: first, send: welcome, next: done}\n  - {id: done, end: success}\n";
    let r = yaml(text);
    let p = error_with(&r, "at most 100 times");
    assert_eq!(p.path, "messages.welcome.text");
}

#[test]
fn hostile_forty_thousand_unused_messages_validate_with_a_capped_report() {
    // 1.9 MB: never finished before (issue 11, finding 7); now linear, at most 1,000 listed.
    let mut text = String::from(
        "id: big\nlaunch: {type: manual}\naudience: {all: true}\nmessages:\n  hello: {channel: email, subject: Hello, text: Hello}\n",
    );
    for i in 0..40_000 {
        text.push_str(&format!(
            "  unused{i}: {{channel: email, subject: Hi, text: Hello there}}\n"
        ));
    }
    text.push_str(
        "steps:\n  - {id: first, send: hello, next: done}\n  - {id: done, end: success}\n",
    );
    let r = yaml(&text);
    assert_eq!(
        r.problems.len(),
        1_001,
        "1,000 listed and one counting the rest"
    );
    assert_eq!(r.errors(), 0);
    let first = &r.problems[0];
    assert_eq!(first.path, "messages.unused0");
    assert_eq!(first.line, Some(6), "{first}");
    let last = &r.problems[1_000];
    assert_eq!(
        last.message,
        "39000 more problems not listed (0 errors, 39000 warnings); fix those above and validate again"
    );
    // Each listed problem points at its message's line (`unusedN` is written on line N + 6).
    for p in &r.problems[..1_000] {
        let n: usize = p
            .path
            .strip_prefix("messages.unused")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{p}"));
        assert_eq!(p.line, Some(n + 6), "{p}");
    }
}

/// DESIGN §3.1: a split's paths name known steps, carry percents with at most 2 decimals
/// that sum to exactly 100, and number 2 to 10; each problem is located.
#[test]
fn split_problems_are_located() {
    let steps = |split: &str| {
        with_steps(&format!(
            "  - {{id: first, send: hello, next: other}}\n  - {{id: other, send: ping, next: ab}}\n  - id: ab\n    split: {split}\n  - {{id: a, end: success}}\n  - {{id: b, end: failure}}\n"
        ))
    };
    assert_clean(&yaml(&steps(
        "[{percent: 33.33, next: a}, {percent: 66.67, next: b}]",
    )));

    let r = yaml(&steps(
        "[{percent: 50, next: a}, {percent: 50, next: ghost}]",
    ));
    let p = error_with(&r, "unknown step \"ghost\"");
    assert_eq!(p.path, "steps[2].split[1].next", "{}", listing(&r));
    assert_eq!(p.step.as_deref(), Some("ab"));

    let r = yaml(&steps("[{percent: 50, next: a}, {percent: 49.5, next: b}]"));
    let p = error_with(&r, "percents sum to 99.5, not 100");
    assert_eq!(p.path, "steps[2].split", "{}", listing(&r));

    let r = yaml(&steps(
        "[{percent: 50.005, next: a}, {percent: 49.995, next: b}]",
    ));
    let p = error_with(&r, "50.005 has more than 2 decimals");
    assert_eq!(p.path, "steps[2].split[0].percent", "{}", listing(&r));
    // An unreadable percent is not also reported as a wrong sum.
    assert!(
        errors(&r).iter().all(|p| !p.message.contains("sum to")),
        "{}",
        listing(&r)
    );

    let r = yaml(&steps("[{percent: 100, next: a}]"));
    let p = error_with(&r, "2 to 10 paths, not 1");
    assert_eq!(p.path, "steps[2].split", "{}", listing(&r));

    let r = yaml(&steps("[{percent: 100, next: a}, {percent: 0, next: b}]"));
    let p = error_with(&r, "a share above 0");
    assert_eq!(p.path, "steps[2].split[1].percent", "{}", listing(&r));

    let r = yaml(&steps(
        "[{percent: 50, next: a}, {percent: 50, next: b, weight: 3}]",
    ));
    let p = error_with(&r, "unknown key \"weight\"");
    assert_eq!(p.path, "steps[2].split[1].weight", "{}", listing(&r));

    let r = yaml(&steps("[{percent: 50}, {percent: 50, next: b}]"));
    let p = error_with(&r, "needs \"next\"");
    assert_eq!(p.path, "steps[2].split[0].next", "{}", listing(&r));
}

/// DESIGN §3.1: `holdout: {percent}` is above 0, below 100, with at most 2 decimals.
#[test]
fn holdout_problems_are_located() {
    let with_holdout = |h: &str| {
        with_steps("  - {id: first, send: hello, next: done}\n  - {id: done, end: success}\n")
            .replacen("steps:\n", &format!("holdout: {h}\nsteps:\n"), 1)
    };
    assert_clean(&yaml(&with_holdout("{percent: 12.5}")));
    for (h, needle) in [
        ("{percent: 0}", "0 is not above 0 and below 100"),
        ("{percent: 100}", "100 is not above 0 and below 100"),
        ("{percent: 9.999}", "more than 2 decimals"),
        ("{percent: ten}", "a percent is a number"),
    ] {
        let r = yaml(&with_holdout(h));
        let p = error_with(&r, needle);
        assert_eq!(p.path, "holdout.percent", "{h}: {}", listing(&r));
    }
    let r = yaml(&with_holdout("{share: 10}"));
    assert_eq!(
        error_with(&r, "unknown key \"share\"").path,
        "holdout.share",
        "{}",
        listing(&r)
    );
    assert_eq!(
        error_with(&r, "needs \"percent\"").path,
        "holdout.percent",
        "{}",
        listing(&r)
    );
    let r = yaml(&with_holdout("10"));
    assert_eq!(
        error_with(&r, "a holdout is a mapping").path,
        "holdout",
        "{}",
        listing(&r)
    );
}

/// DESIGN §3.1: a send's variants are 2 to 10 known messages of one channel whose percents
/// (at most 2 decimals) sum to exactly 100; each problem is located.
#[test]
fn variant_problems_are_located() {
    let with_variants = |send: &str| {
        with_steps(&format!(
            "  - {{id: first, send: ping, next: ab}}\n  - id: ab\n    send: {send}\n    next: done\n  - {{id: done, end: success}}\n"
        ))
        .replace(
            "  ping: {channel: sms, text: Ping}\n",
            "  ping: {channel: sms, text: Ping}\n  hello-b: {channel: email, subject: Hi, text: Hi}\n  hello-c: {channel: email, subject: Hey, text: Hey}\n",
        )
    };
    let clean = yaml(&with_variants(
        "{variants: [{message: hello, percent: 50}, {message: hello-b, percent: 25}, {message: hello-c, percent: 25}]}",
    ));
    assert_clean(&clean);
    assert!(warnings(&clean).is_empty(), "{}", listing(&clean));

    let r = yaml(&with_variants(
        "{variants: [{message: hello, percent: 50}, {message: hello-b, percent: 25}, {message: ghost, percent: 25}]}",
    ));
    let p = error_with(&r, "unknown message \"ghost\"");
    assert_eq!(
        p.path,
        "steps[1].send.variants[2].message",
        "{}",
        listing(&r)
    );
    assert_eq!(p.step.as_deref(), Some("ab"));

    let r = yaml(&with_variants(
        "{variants: [{message: hello, percent: 50}, {message: hello-b, percent: 49.5}]}",
    ));
    let p = error_with(&r, "percents sum to 99.5, not 100");
    assert_eq!(p.path, "steps[1].send.variants", "{}", listing(&r));

    let r = yaml(&with_variants(
        "{variants: [{message: hello, percent: 50.005}, {message: hello-b, percent: 49.995}]}",
    ));
    let p = error_with(&r, "50.005 has more than 2 decimals");
    assert_eq!(
        p.path,
        "steps[1].send.variants[0].percent",
        "{}",
        listing(&r)
    );
    assert!(
        errors(&r).iter().all(|p| !p.message.contains("sum to")),
        "{}",
        listing(&r)
    );

    let r = yaml(&with_variants(
        "{variants: [{message: hello, percent: 50}, {message: ping, percent: 50}]}",
    ));
    let p = error_with(&r, "variants share a channel");
    assert_eq!(
        p.path,
        "steps[1].send.variants[1].message",
        "{}",
        listing(&r)
    );
    assert!(p.message.contains("\"ping\" is sms"), "{}", p.message);

    let r = yaml(&with_variants(
        "{variants: [{message: hello, percent: 100}]}",
    ));
    let p = error_with(&r, "2 to 10 variants, not 1");
    assert_eq!(p.path, "steps[1].send.variants", "{}", listing(&r));

    let r = yaml(&with_variants(
        "{variants: [{message: hello, percent: 100}, {message: hello-b, percent: 0}]}",
    ));
    let p = error_with(&r, "a share above 0");
    assert_eq!(
        p.path,
        "steps[1].send.variants[1].percent",
        "{}",
        listing(&r)
    );

    let r = yaml(&with_variants(
        "{variants: [{message: hello, percent: 50}, {message: hello-b, percent: 50, weight: 2}]}",
    ));
    let p = error_with(&r, "unknown key \"weight\"");
    assert_eq!(
        p.path,
        "steps[1].send.variants[1].weight",
        "{}",
        listing(&r)
    );

    let r = yaml(&with_variants(
        "{variants: [{percent: 50}, {message: hello-b, percent: 50}]}",
    ));
    let p = error_with(&r, "needs \"message\"");
    assert_eq!(
        p.path,
        "steps[1].send.variants[0].message",
        "{}",
        listing(&r)
    );

    let r = yaml(&with_variants("{message: hello}"));
    assert_eq!(
        error_with(&r, "unknown key \"message\"").path,
        "steps[1].send.message",
        "{}",
        listing(&r)
    );
    assert_eq!(
        error_with(&r, "missing: variants").path,
        "steps[1].send.variants",
        "{}",
        listing(&r)
    );
}

/// A winner rule reads `{metric, after, min_sends, confidence}`, each part located when it
/// is wrong, and its metric must be measurable on the variants.
#[test]
fn winner_rules_are_checked_and_their_metric_must_be_measurable() {
    let with_winner = |winner: &str| {
        with_steps(&format!(
            "  - id: ab\n    send: {{variants: [{{message: hello, percent: 50}}, {{message: hello-b, percent: 50}}], winner: {winner}}}\n    next: done\n  - {{id: done, end: success}}\n"
        ))
        .replace(
            "  ping: {channel: sms, text: Ping}\n",
            "  ping: {channel: sms, text: Ping}\n  hello-b: {channel: email, subject: Hi, text: Hi}\n",
        )
    };
    let r = yaml(&with_winner(
        "{metric: opened, after: P1D, min_sends: 1000, confidence: 0.95}",
    ));
    assert_clean(&r);
    assert!(
        !r.problems.iter().any(|p| p.path.contains("winner")),
        "{}",
        listing(&r)
    );

    for (winner, path, needle) in [
        (
            "{metric: revenue, after: P1D, min_sends: 10, confidence: 0.95}",
            "steps[0].send.winner.metric",
            "one of opened, clicked or converted",
        ),
        (
            "{metric: clicked, after: soon, min_sends: 10, confidence: 0.95}",
            "steps[0].send.winner.after",
            "",
        ),
        (
            "{metric: clicked, after: P1D, min_sends: 0, confidence: 0.95}",
            "steps[0].send.winner.min_sends",
            "a whole number above 0",
        ),
        (
            "{metric: clicked, after: P1D, min_sends: 10, confidence: 1.5}",
            "steps[0].send.winner.confidence",
            "above 0 and below 1",
        ),
        (
            "{metric: clicked, after: P1D, min_sends: 10}",
            "steps[0].send.winner.confidence",
            "needs \"confidence\"",
        ),
        (
            "{metric: clicked, after: P1D, min_sends: 10, confidence: 0.9, peek: true}",
            "steps[0].send.winner.peek",
            "unknown key \"peek\"",
        ),
        // Measurable: a converted winner needs the scenario's conversion, a clicked one links
        // in every variant.
        (
            "{metric: converted, after: P1D, min_sends: 10, confidence: 0.9}",
            "steps[0].send.winner.metric",
            "needs the scenario's conversion",
        ),
        (
            "{metric: clicked, after: P1D, min_sends: 10, confidence: 0.9}",
            "steps[0].send.variants[0].message",
            "a clicked winner needs links, but \"hello\" has none",
        ),
    ] {
        let r = yaml(&with_winner(winner));
        let found: Vec<&Problem> = errors(&r)
            .into_iter()
            .filter(|p| p.path == path && p.message.contains(needle))
            .collect();
        assert_eq!(found.len(), 1, "{winner}: {}", listing(&r));
    }
}

/// `conversion: {event, where?, within, value?}`: every part located when it is wrong; a
/// complete one validates, and with it a converted winner.
#[test]
fn conversion_is_read_and_located() {
    let base = with_steps(
        "  - id: ab\n    send: {variants: [{message: hello, percent: 50}, {message: hello-b, percent: 50}], winner: {metric: converted, after: P1D, min_sends: 10, confidence: 0.95}}\n    next: done\n  - {id: done, end: success}\n",
    )
    .replace(
        "  ping: {channel: sms, text: Ping}\n",
        "  ping: {channel: sms, text: Ping}\n  hello-b: {channel: email, subject: Hi, text: Hi}\n",
    );
    let with = |conversion: &str| yaml(&format!("{base}conversion: {conversion}\n"));
    let r = with(
        "{event: purchase, where: {all: [{field: amount, op: ge, value: 20}]}, within: P7D, value: amount}",
    );
    assert_clean(&r);
    let c = r
        .scenario
        .as_ref()
        .and_then(|s| s.conversion.clone())
        .unwrap_or_else(|| panic!("no conversion: {}", listing(&r)));
    assert_eq!(
        (c.event.as_str(), c.value.as_deref()),
        ("purchase", Some("amount"))
    );
    for (conversion, path, needle) in [
        ("{within: P7D}", "conversion.event", "needs the \"event\""),
        ("{event: purchase}", "conversion.within", "needs a window"),
        ("{event: purchase, within: soon}", "conversion.within", ""),
        (
            "{event: purchase, within: PT0S}",
            "conversion.within",
            "longer than zero",
        ),
        (
            "{event: purchase, within: P7D, where: {tag: vip}}",
            "conversion.where",
            "event's properties",
        ),
        (
            "{event: purchase, within: P7D, value: 3}",
            "conversion.value",
            "numeric property",
        ),
        (
            "{event: purchase, within: P7D, revenue: amount}",
            "conversion.revenue",
            "unknown key",
        ),
        ("purchase", "conversion", "a mapping"),
    ] {
        let r = with(conversion);
        let found: Vec<&Problem> = errors(&r)
            .into_iter()
            .filter(|p| p.path == path && p.message.contains(needle))
            .collect();
        assert_eq!(found.len(), 1, "{conversion}: {}", listing(&r));
    }
}

/// DESIGN §3.1: `at: best` needs `default_at` (a time of day, checked as `at` is), and
/// `default_at` goes only with it; each problem is located.
#[test]
fn best_time_delay_problems_are_located() {
    let with_delay = |d: &str| VALID.replace("{after: P2D, at: \"09:00\"}", d);
    let clean = yaml(&with_steps(&with_delay(
        "{after: P1D, at: best, default_at: \"10:00\"}",
    )));
    assert_clean(&clean);
    assert!(warnings(&clean).is_empty(), "{}", listing(&clean));
    let delay = clean
        .scenario
        .as_ref()
        .and_then(|s| s.steps[1].delay.clone())
        .expect("the step keeps its delay");
    assert!(delay.is_best() && delay.at.is_none(), "{delay:?}");
    assert_eq!(
        delay.default_at.map(|t| t.to_string()).as_deref(),
        Some("10:00")
    );
    // With the contact's zone, and without `after`.
    assert_clean(&yaml(&with_steps(&with_delay(
        "{at: best, default_at: \"18:30\", local_time: true}",
    ))));

    let r = yaml(&with_steps(&with_delay("{after: P1D, at: best}")));
    let p = error_with(&r, "at: best needs default_at");
    assert_eq!(p.path, "steps[1].delay.default_at", "{}", listing(&r));
    assert_eq!(p.step.as_deref(), Some("check"));
    assert_eq!(r.errors(), 1, "{}", listing(&r));

    let r = yaml(&with_steps(&with_delay(
        "{after: P1D, at: \"09:00\", default_at: \"10:00\"}",
    )));
    let p = error_with(&r, "default_at goes only with at: best");
    assert_eq!(p.path, "steps[1].delay.default_at", "{}", listing(&r));
    assert_eq!(r.errors(), 1, "{}", listing(&r));
    let r = yaml(&with_steps(&with_delay(
        "{after: P1D, default_at: \"10:00\"}",
    )));
    assert_eq!(
        error_with(&r, "default_at goes only with at: best").path,
        "steps[1].delay.default_at",
        "{}",
        listing(&r)
    );

    let r = yaml(&with_steps(&with_delay(
        "{after: P1D, at: best, default_at: \"25:00\"}",
    )));
    let p = error_with(&r, "\"25:00\"");
    assert_eq!(p.path, "steps[1].delay.default_at", "{}", listing(&r));
    assert!(p.message.contains("time of day"), "{}", p.message);
    assert_eq!(r.errors(), 1, "{}", listing(&r));

    let r = yaml(&with_steps(&with_delay(
        "{after: P1D, at: bestest, default_at: \"10:00\"}",
    )));
    let p = error_with(&r, "\"bestest\" is not a time of day");
    assert_eq!(p.path, "steps[1].delay.at", "{}", listing(&r));
    assert!(p.message.contains("or best"), "{}", p.message);

    let r = yaml(&with_steps(&with_delay(
        "{at: best, default_at: \"10:00\", until: \"2026-12-24T10:00\"}",
    )));
    assert_eq!(
        error_with(&r, "until cannot be combined").path,
        "steps[1].delay.until",
        "{}",
        listing(&r)
    );
}

/// A winner with a part that does not read still has its metric checked: one `validate`
/// lists every problem.
#[test]
fn a_winner_with_a_bad_part_still_has_its_metric_checked() {
    let text = with_steps(
        "  - id: ab\n    send: {variants: [{message: ping, percent: 50}, {message: ping-b, percent: 50}], winner: {metric: opened, after: P1D, min_sends: 100, confidence: 1.5}}\n    next: done\n  - {id: done, end: success}\n",
    )
    .replace(
        "  ping: {channel: sms, text: Ping}\n",
        "  ping: {channel: sms, text: Ping}\n  ping-b: {channel: sms, text: Pong}\n",
    );
    let r = yaml(&text);
    let paths: Vec<&str> = errors(&r).iter().map(|p| p.path.as_str()).collect();
    assert!(
        paths.contains(&"steps[0].send.winner.confidence")
            && paths.contains(&"steps[0].send.winner.metric"),
        "{}",
        listing(&r)
    );
}

/// Flow collections nested past the YAML reader's limit are refused before it parses them:
/// its time grows with the square of the nesting (200 KB of `[` held `relance validate` and
/// the API's runner for minutes). The error names the line and column of the first bracket
/// past the limit; brackets in quoted or plain text and in comments do not count.
#[test]
fn hostile_deep_flow_nesting_is_refused_before_parsing() {
    let deep = format!(
        "id: x\nname: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let r = yaml(&deep);
    let p = error_with(&r, "collections nested deeper than 128 levels");
    assert_eq!((p.line, p.column), (Some(2), Some(135)), "{p}");
    let maps = format!(
        "id: x\nname: {}1{}\n",
        "{a: ".repeat(50_000),
        "}".repeat(50_000)
    );
    error_with(&yaml(&maps), "collections nested deeper than 128 levels");
    // Quotes after an anchor, a tag, or a colon inside brackets are quoted text: a bracket in
    // them does not close anything (the nesting was hidden that way).
    for each in ["[&x ']', ", "[!!str ']', ", "[{\"k\":\"]\"}, "] {
        let hidden = format!("a: {}1{}\n", each.repeat(5_000), "]".repeat(5_000));
        error_with(&yaml(&hidden), "collections nested deeper than 128 levels");
    }
    // Nor do a byte order mark, YAML's other line breaks, a verbatim tag holding a comma, or a
    // quote after ` - ` inside a plain text hide the brackets after them.
    for before in [
        "\u{FEFF}",
        "\u{2028}",
        "\u{85}",
        "a: !<,> ",
        "title: Offer - \"x\nb: ",
    ] {
        let hidden = format!("{before}{}{}\n", "[".repeat(5_000), "]".repeat(5_000));
        error_with(&yaml(&hidden), "collections nested deeper than 128 levels");
    }

    // Within the limit the reader parses as before (here: a scenario without steps).
    let ok = format!("id: x\nname: {}{}\n", "[".repeat(128), "]".repeat(128));
    assert!(
        !listing(&yaml(&ok)).contains("nested deeper"),
        "{}",
        listing(&yaml(&ok))
    );
    // Brackets in quoted text and comments are text, however many; in plain or block text
    // they count (the scan cannot tell them from structure there), so balanced ones (links,
    // placeholders) pass, however many.
    let texts = format!(
        "id: x # {comment}\nlaunch: {{type: manual}}\naudience: {{all: true}}\nmessages:\n  a: {{channel: email, subject: \"{quoted}\", text: 'it''s {quoted}'}}\n  b:\n    channel: email\n    subject: plain {few}\n    text: |\n      it's {balanced}\nsteps:\n  - {{id: first, send: a, next: second}}\n  - {{id: second, send: b, next: done}}\n  - {{id: done, end: success}}\n",
        comment = "[".repeat(300),
        quoted = "[{".repeat(300),
        balanced = "[see](https://x.io) {{ contact.first_name }} ".repeat(300),
        few = "[{}] {{ contact.first_name }} ".repeat(40),
    );
    let r = yaml(&texts);
    assert_eq!(r.errors(), 0, "{}", listing(&r));
}

/// A key written twice in a mapping is an error, in YAML and in JSON: read into a value, the
/// second replaced the first without a word (`audience` twice: the first audience gone).
#[test]
fn hostile_duplicate_keys_are_refused() {
    let top = "id: t\nlaunch: {type: manual}\naudience: {all: true}\naudience: {criteria: {field: vip, op: eq, value: true}}\nmessages:\n  m: {channel: email, subject: Hi, text: Hi}\nsteps:\n  - {id: a, send: m, next: b}\n  - {id: b, end: success}\n";
    error_with(&yaml(top), "duplicate key \"audience\"");
    let nested = "id: t\nlaunch: {type: manual}\naudience: {all: true}\nmessages:\n  m: {channel: email, subject: Hi, text: Hi}\nsteps:\n  - {id: a, send: m, next: b, next: c}\n  - {id: b, end: success}\n  - {id: c, end: success}\n";
    let report = yaml(nested);
    let p = error_with(&report, "duplicate key \"next\"");
    assert!(p.message.contains("steps[0]"), "{p}");
    assert_eq!(p.line, Some(7), "{p}");
    let json = check_text(r#"{"id": "t1", "id": "t2"}"#, Format::Json);
    let p = error_with(&json, "duplicate key \"id\"");
    assert_eq!(p.line, Some(1), "{p}");
    // A version a store kept from before still reads, the last value kept, so that its
    // enrollments run on.
    let (kept, _) =
        relance_core::validate::parse_stored(top, Format::Yaml).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(kept.steps.len(), 2);
    assert!(relance_core::validate::parse(top, Format::Yaml).is_err());
}

/// A fixed date past the last instant the store keeps (the end of 9999 in UTC, here through
/// the scenario's zone) is an error naming the date, not a failure at activation.
#[test]
fn hostile_fixed_date_past_9999_is_refused() {
    let text = "id: late\ntimezone: America/New_York\nlaunch: {type: fixed_dates, fixed_dates: {dates: [\"2030-01-01T09:00\", \"9999-12-31T23:59\"]}}\naudience: {all: true}\nmessages:\n  m: {channel: email, subject: Hi, text: Hi}\nsteps:\n  - {id: a, send: m, next: done}\n  - {id: done, end: success}\n";
    let r = yaml(text);
    let p = error_with(&r, "after 9999-12-31T23:59:59Z");
    assert_eq!(p.path, "launch.dates[1]");
    assert!(p.message.contains("+10000-01-01T04:59:00Z"), "{p}");
    // The same date in UTC is the last minute the store keeps: fine.
    assert_eq!(yaml(&text.replace("America/New_York", "UTC")).errors(), 0);
}

/// A template reading a name no send provides (a typo of `contact`, or `event`) failed every
/// send of its message, whatever the contact, while `validate` said nothing: now an error
/// naming it. Names the template declares, and its functions, are fine. A version stored
/// before still reads (the problem a warning), so its enrollments run on.
#[test]
fn template_names_no_send_provides_are_errors() {
    let with = |subject: &str| {
        format!(
            "id: t\nlaunch: {{type: manual}}\naudience: {{all: true}}\nmessages:\n  m: {{channel: email, subject: \"{subject}\", text: Hi}}\nsteps:\n  - {{id: a, send: m, next: done}}\n  - {{id: done, end: success}}\n"
        )
    };
    for (subject, name) in [
        ("Hi {{ contct.first_name }}", "contct"),
        ("{{ event.amount }} off", "event"),
    ] {
        let r = yaml(&with(subject));
        let p = error_with(&r, "is not a name a message can read");
        assert_eq!(p.path, "messages.m.subject", "{p}");
        assert!(p.message.contains(&format!("`{name}`")), "{p}");
        let (_, problems) = relance_core::validate::parse_stored(&with(subject), Format::Yaml)
            .unwrap_or_else(|p| panic!("a stored version still reads: {p:?}"));
        assert!(problems.iter().all(|p| !p.is_error()), "{problems:?}");
    }
    for fine in [
        "{% for i in range(2) %}{{ loop.index }}{% endfor %} {{ scenario }}",
        "{% set n = contact.first_name | default('you') %}Hi {{ n }}",
    ] {
        let r = yaml(&with(fine));
        assert_eq!(r.errors(), 0, "{fine}: {}", listing(&r));
    }
}
