//! Validation: every problem of a scenario in one pass, each located by path, step id and
//! (best effort) line, in a plain sentence. A scenario is activated only when no error is left.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::condition::{Condition, EngagementClause};
use crate::problem::{Problem, Severity};
use crate::render::Templates;
use crate::scenario::{
    self, Action, Channel, EndKind, Format, Launch, MAX_GOALS, MAX_STEPS, Scenario, StepKind,
};

/// The outcome of validating a scenario file.
#[derive(Debug)]
pub struct Report {
    /// The scenario, when it read and has no error.
    pub scenario: Option<Scenario>,
    /// Every problem found, errors first, in file order.
    pub problems: Vec<Problem>,
}

impl Report {
    /// The number of errors.
    pub fn errors(&self) -> usize {
        self.problems.iter().filter(|p| p.is_error()).count()
    }
}

/// Reads and validates a scenario file's text.
pub fn check_text(text: &str, format: Format) -> Report {
    check_text_with_messages(text, format, None)
}

/// Like [`check_text`], the send steps also finding the messages of a shared message store
/// that the scenario does not define itself (lines are still those of `text`).
pub fn check_text_with_messages(
    text: &str,
    format: Format,
    shared: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Report {
    match scenario::parse_document(text, format) {
        Ok(doc) => check_document(text, doc, shared, |_| {}),
        Err(p) => Report {
            scenario: None,
            problems: vec![p],
        },
    }
}

/// The checks of [`check_text_with_messages`] on `text`'s document, already read, each
/// problem passed through `adjust` before the report decides whether the scenario is clean.
fn check_document(
    text: &str,
    mut doc: serde_json::Value,
    shared: Option<&serde_json::Map<String, serde_json::Value>>,
    adjust: impl Fn(&mut Problem),
) -> Report {
    if let Some(shared) = shared {
        scenario::merge_shared_messages(&mut doc, shared);
    }
    let loaded = match scenario::from_value(&doc) {
        Ok(l) => l,
        Err(p) => {
            return Report {
                scenario: None,
                problems: vec![p],
            };
        }
    };
    let mut problems = loaded.problems;
    problems.extend(meaning(
        &loaded.scenario,
        !loaded.broken_steps,
        &loaded.unread_messages,
    ));
    problems.iter_mut().for_each(adjust);
    problems.sort_by_key(|p| p.severity);
    let omitted = cap_problems(&mut problems);
    locate_lines(text, &loaded.scenario, &mut problems);
    problems.extend(omitted);
    let clean = !problems.iter().any(Problem::is_error);
    Report {
        scenario: clean.then_some(loaded.scenario),
        problems,
    }
}

/// The most problems a report lists: past it, one last problem counts the others.
pub const MAX_PROBLEMS: usize = 1000;

/// Keeps the first [`MAX_PROBLEMS`] (errors come first) and returns the problem that counts
/// the rest, if any: a huge file gets a readable report, built in linear time.
fn cap_problems(problems: &mut Vec<Problem>) -> Option<Problem> {
    if problems.len() <= MAX_PROBLEMS {
        return None;
    }
    let rest = problems.split_off(MAX_PROBLEMS);
    let errors = rest.iter().filter(|p| p.is_error()).count();
    let message = format!(
        "{} more problems not listed ({errors} errors, {} warnings); fix those above and \
         validate again",
        rest.len(),
        rest.len() - errors
    );
    Some(if errors > 0 {
        Problem::error("", message)
    } else {
        Problem::warning("", message)
    })
}

/// Parses a scenario that must have no error (warnings are returned alongside).
pub fn parse(text: &str, format: Format) -> Result<(Scenario, Vec<Problem>), Vec<Problem>> {
    let report = check_text(text, format);
    match report.scenario {
        Some(s) => Ok((s, report.problems)),
        None => Err(report.problems),
    }
}

/// [`parse`] for a version a store kept: its document read as the build that stored it read
/// it, a key written twice keeping its last value, and a template reading a name no send
/// provides a warning (input refuses both since; a version stored before must still run its
/// enrollments).
pub fn parse_stored(text: &str, format: Format) -> Result<(Scenario, Vec<Problem>), Vec<Problem>> {
    // Checks added since a version was stored do not stop it from running its enrollments:
    // a template reading a name no send provides failed only its own sends before.
    let report = match scenario::parse_stored_document(text, format) {
        Ok(doc) => check_document(text, doc, None, |p| {
            if p.message.contains(crate::render::UNKNOWN_NAME) {
                p.severity = crate::Severity::Warning;
            }
        }),
        Err(p) => return Err(vec![p]),
    };
    match report.scenario {
        Some(s) => Ok((s, report.problems)),
        None => Err(report.problems),
    }
}

fn step_path(i: usize, field: &str) -> String {
    if field.is_empty() {
        format!("steps[{i}]")
    } else {
        format!("steps[{i}].{field}")
    }
}

/// The meaning checks on a scenario that read: references, graph, conditions, limits.
/// `graph` is false when some step did not read, so reachability would be guesswork.
pub fn check_meaning(s: &Scenario, graph: bool) -> Vec<Problem> {
    meaning(s, graph, &BTreeSet::new())
}

/// [`check_meaning`], knowing which declared messages did not read (already reported).
fn meaning(s: &Scenario, graph: bool, unread_messages: &BTreeSet<String>) -> Vec<Problem> {
    let mut out = Vec::new();
    if s.steps.is_empty() {
        out.push(Problem::error(
            "steps",
            "a scenario needs at least one step",
        ));
        return out;
    }
    if s.steps.len() > MAX_STEPS {
        out.push(Problem::error(
            "steps",
            format!(
                "a scenario has at most {MAX_STEPS} steps, found {}",
                s.steps.len()
            ),
        ));
        return out;
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, step) in s.steps.iter().enumerate() {
        if step.id.is_empty() {
            continue;
        }
        if let Some(first) = index.get(step.id.as_str()) {
            out.push(
                Problem::error(
                    step_path(i, "id"),
                    format!(
                        "duplicate step id \"{}\": steps[{first}] already has it; step ids must be unique",
                        step.id
                    ),
                )
                .in_step(&step.id),
            );
        } else {
            index.insert(&step.id, i);
        }
    }
    let goal_ids: HashSet<&str> = s.goals.iter().map(|g| g.id.as_str()).collect();
    check_goals(s, &mut out);

    // Edges, references and per-step checks.
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); s.steps.len()];
    let mut used_messages = HashSet::new();
    for (i, step) in s.steps.iter().enumerate() {
        for (field, target) in step.kind.targets() {
            if target.is_empty() {
                continue;
            }
            match index.get(target) {
                Some(&j) => edges[i].push(j),
                None => out.push(
                    Problem::error(
                        step_path(i, &field),
                        format!(
                            "unknown step \"{target}\": no step has this id{}",
                            did_you_mean(target, index.keys().copied())
                        ),
                    )
                    .in_step(&step.id),
                ),
            }
        }
        match &step.kind {
            StepKind::Send {
                message,
                variants,
                winner,
                ..
            } => {
                let named: Vec<(String, &String)> = if variants.is_empty() {
                    vec![("send".to_string(), message)]
                } else {
                    variants
                        .iter()
                        .enumerate()
                        .map(|(k, v)| (format!("send.variants[{k}].message"), &v.message))
                        .collect()
                };
                for (field, message) in &named {
                    let message = *message;
                    used_messages.insert(message.as_str());
                    if !s.messages.contains_key(message) && !unread_messages.contains(message) {
                        let known = if s.messages.is_empty() {
                            "the scenario has no messages".to_string()
                        } else {
                            // A few names, not every one: the file may declare thousands.
                            let shown: Vec<&str> =
                                s.messages.keys().take(20).map(String::as_str).collect();
                            let more = s.messages.len().saturating_sub(shown.len());
                            let more = if more > 0 {
                                format!(" and {more} more")
                            } else {
                                String::new()
                            };
                            format!("known messages: {}{more}", shown.join(", "))
                        };
                        out.push(
                            Problem::error(
                                step_path(i, field),
                                format!(
                                    "unknown message \"{message}\" ({known}){}",
                                    did_you_mean(message, s.messages.keys().map(String::as_str))
                                ),
                            )
                            .in_step(&step.id),
                        );
                    }
                }
                // Variants compete on one channel: the first known message sets it.
                let mut first: Option<(&str, Channel)> = None;
                for (field, message) in &named {
                    let Some(m) = s.messages.get(*message) else {
                        continue;
                    };
                    match first {
                        None => first = Some((message.as_str(), m.channel)),
                        Some((name, channel)) if channel != m.channel => out.push(
                            Problem::error(
                                step_path(i, field),
                                format!(
                                    "variants share a channel, but \"{message}\" is {} and \"{name}\" is {}",
                                    m.channel.as_str(),
                                    channel.as_str()
                                ),
                            )
                            .in_step(&step.id),
                        ),
                        Some(_) => {}
                    }
                }
                if let Some(w) = winner {
                    let path = step_path(i, "send.winner.metric");
                    match w.metric.as_str() {
                        "converted" if s.conversion.is_none() => out.push(
                            Problem::error(
                                path,
                                "a converted winner needs the scenario's conversion: {event, within}",
                            )
                            .in_step(&step.id),
                        ),
                        "clicked" => {
                            for (field, message) in &named {
                                if s.messages.get(*message).is_some_and(|m| !m.has_links()) {
                                    out.push(
                                        Problem::error(
                                            step_path(i, field),
                                            format!("a clicked winner needs links, but \"{message}\" has none"),
                                        )
                                        .in_step(&step.id),
                                    );
                                }
                            }
                        }
                        "opened" => {
                            if let Some((_, Channel::Sms)) = first {
                                out.push(
                                    Problem::error(
                                        path,
                                        "an opened winner cannot be measured on SMS (no opens are reported): use clicked or converted",
                                    )
                                    .in_step(&step.id),
                                );
                            }
                        }
                        _ => {}
                    }
                }
            }
            StepKind::End {
                end: EndKind::Goal(g),
            } if !goal_ids.contains(g.as_str()) => {
                let declared = if s.goals.is_empty() {
                    "the scenario declares no goals".to_string()
                } else {
                    let ids: Vec<&str> = s.goals.iter().map(|g| g.id.as_str()).collect();
                    format!("declared goals: {}", ids.join(", "))
                };
                out.push(
                    Problem::error(
                        step_path(i, "end"),
                        format!(
                            "unknown end \"{g}\": use success, failure, abandon, neutral or the id of a goal ({declared}){}",
                            did_you_mean(g, goal_ids.iter().copied())
                        ),
                    )
                    .in_step(&step.id),
                );
            }
            StepKind::WaitFor {
                timeout, condition, ..
            } => {
                if timeout.is_zero() {
                    out.push(
                        Problem::error(
                            step_path(i, "wait_for.timeout"),
                            "a wait_for needs a timeout longer than zero",
                        )
                        .in_step(&step.id),
                    );
                }
                if !condition.mentions_events() {
                    out.push(
                        Problem::warning(step_path(i, "wait_for"), "waits on the profile only: it resumes when the contact changes, not on an event")
                            .in_step(&step.id),
                    );
                }
            }
            StepKind::Action { action, .. } => {
                check_action(action, &step_path(i, "action"), &step.id, &mut out)
            }
            _ => {}
        }
        if let Some(d) = &step.delay
            && d.after.as_ref().is_some_and(|a| a.is_zero())
            && d.at.is_none()
            && !d.is_best()
        {
            out.push(
                Problem::warning(step_path(i, "delay.after"), "a zero delay does not wait")
                    .in_step(&step.id),
            );
        }
    }
    check_messages(s, &used_messages, graph, &mut out);
    check_launch(s, &mut out);
    if let Some(once) = &s.once_per
        && once.is_zero()
    {
        out.push(Problem::error(
            "once_per",
            "once_per must be longer than zero (leave it out for no window)",
        ));
    }
    if let Some(cap) = &s.frequency_cap {
        if cap.max == 0 {
            out.push(Problem::error(
                "frequency_cap.max",
                "max must be at least 1",
            ));
        }
        if cap.per.is_zero() {
            out.push(Problem::error(
                "frequency_cap.per",
                "per must be longer than zero",
            ));
        }
    }
    if let Some(q) = &s.quiet_hours
        && q.from == q.to
    {
        out.push(Problem::error(
            "quiet_hours",
            "from and to are equal: the quiet period is empty",
        ));
    }
    if let Some(criteria) = &s.audience.criteria {
        criteria.walk(&mut |c| {
            if let Condition::Engagement(e) = c {
                out.push(Problem::error(
                    "audience.criteria",
                    format!(
                        "{} is a post-send condition, but an audience is chosen before any send",
                        clause_label(e)
                    ),
                ));
            }
        });
    }
    for (k, c) in s.exit_when.iter().enumerate() {
        c.walk(&mut |c| {
            if let Condition::Engagement(e) = c
                && !matches!(
                    index.get(e.step.as_str()).map(|&j| &s.steps[j].kind),
                    Some(StepKind::Send { .. })
                )
            {
                let what = if index.contains_key(e.step.as_str()) {
                    format!("\"{}\" is not a send step", e.step)
                } else {
                    format!("it names an unknown step \"{}\"", e.step)
                };
                out.push(Problem::error(
                    format!("exit_when[{k}]"),
                    format!("{} is a post-send condition, but {what}", clause_label(e)),
                ));
            }
        });
    }
    if graph {
        check_graph(s, &edges, &index, &mut out);
    }
    out
}

fn check_goals(s: &Scenario, out: &mut Vec<Problem>) {
    if s.goals.len() > MAX_GOALS {
        out.push(Problem::error(
            "goals",
            format!(
                "a scenario has at most {MAX_GOALS} goals, found {}",
                s.goals.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    for (i, g) in s.goals.iter().enumerate() {
        if !seen.insert(g.id.as_str()) {
            out.push(Problem::error(
                format!("goals[{i}].id"),
                format!("duplicate goal id \"{}\"", g.id),
            ));
        }
        if ["success", "failure", "abandon", "neutral"].contains(&g.id.as_str()) {
            out.push(Problem::error(
                format!("goals[{i}].id"),
                format!("\"{}\" is a built-in end; give the goal another id", g.id),
            ));
        }
        if matches!(g.kind, EndKind::Goal(_)) {
            out.push(Problem::error(
                format!("goals[{i}].kind"),
                "kind must be success, failure, abandon or neutral",
            ));
        }
    }
}

fn check_action(action: &Action, path: &str, step: &str, out: &mut Vec<Problem>) {
    let mut err = |field: &str, msg: &str| {
        out.push(Problem::error(format!("{path}.{field}"), msg).in_step(step))
    };
    match action {
        Action::Tag(change) | Action::Group(change) => {
            if change.add.is_empty() && change.remove.is_empty() {
                err(action.name(), "name something to add or remove");
            }
        }
        Action::UpdateProfile(u) => {
            if u.field.trim().is_empty() || u.field == "id" {
                err("update_profile.field", "name the field to set (any but id)");
            }
            match (&u.value, &u.expression) {
                (Some(_), Some(_)) | (None, None) => {
                    err("update_profile", "give either a value or an expression")
                }
                (None, Some(e)) => {
                    let (t, _) = Templates::compile(&BTreeMap::new());
                    if let Err(why) = t.check_expression(e) {
                        err(
                            "update_profile.expression",
                            &format!("expression does not compile: {why}"),
                        );
                    }
                }
                _ => {}
            }
        }
        Action::Export(e) => {
            if e.bucket.trim().is_empty() {
                err("export.bucket", "name the bucket");
            }
            if e.key.trim().is_empty() {
                err("export.key", "name the key");
            }
        }
        Action::Task(t) => {
            if t.title.trim().is_empty() {
                err("task.title", "a task needs a title");
            }
        }
        Action::Event(e) => {
            if e.name.trim().is_empty() {
                err("event.name", "an event needs a name");
            }
        }
        Action::CreateLead(_) => {}
        Action::Webhook(w) => check_webhook(w, path, step, out),
        Action::Invoke(i) => {
            // The step is written `invoke:`, not `action: {invoke: ...}`.
            let base = path
                .strip_suffix(".action")
                .map_or_else(|| path.to_string(), |b| format!("{b}.invoke"));
            if let Err(why) = crate::invoke::check_function(&i.function) {
                out.push(Problem::error(format!("{base}.function"), why).in_step(step));
            }
            if i.contact.is_some() {
                out.push(
                    Problem::error(
                        format!("{base}.contact"),
                        "the event carries the contact by itself: remove `contact`",
                    )
                    .in_step(step),
                );
            }
        }
    }
}

/// A webhook step's problems, located under `steps[i].webhook`.
fn check_webhook(
    w: &crate::webhook::Webhook,
    action_path: &str,
    step: &str,
    out: &mut Vec<Problem>,
) {
    // The step is written `webhook:`, not `action: {webhook: ...}`.
    let base = action_path
        .strip_suffix(".action")
        .map_or_else(|| action_path.to_string(), |b| format!("{b}.webhook"));
    for (field, msg) in crate::webhook::check(w) {
        out.push(Problem::error(format!("{base}.{field}"), msg).in_step(step));
    }
    if let Some(body) = &w.body {
        let (t, _) = Templates::compile(&BTreeMap::new());
        if let Err(why) = t.check_text(body) {
            out.push(Problem::error(format!("{base}.body"), why).in_step(step));
        }
    }
}

/// `all_steps_read` is false when some step did not read: a message may then be sent by it.
fn check_messages(
    s: &Scenario,
    used: &HashSet<&str>,
    all_steps_read: bool,
    out: &mut Vec<Problem>,
) {
    out.extend(Templates::check(&s.messages));
    for (id, m) in &s.messages {
        let path = format!("messages.{id}");
        let has = |o: &Option<String>| o.as_ref().is_some_and(|t| !t.trim().is_empty());
        let missing = match m.channel {
            Channel::Email if m.template.is_none() && !has(&m.subject) => {
                Some("an email needs a subject (or an SES template)")
            }
            Channel::Email if m.template.is_none() && !has(&m.html) && !has(&m.text) => {
                Some("an email needs html or text (or an SES template)")
            }
            Channel::Sms if !has(&m.text) && !has(&m.body) => Some("an SMS needs text"),
            Channel::Push | Channel::WebPush if !has(&m.title) && !has(&m.body) => {
                Some("a push needs a title or a body")
            }
            _ => None,
        };
        if let Some(why) = missing {
            out.push(Problem::error(path.clone(), why));
        }
        let stray: Vec<&str> = match m.channel {
            Channel::Email => [
                ("title", &m.title),
                ("body", &m.body),
                ("sms_type", &m.sms_type),
            ]
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .collect(),
            Channel::Sms => [
                ("subject", &m.subject),
                ("html", &m.html),
                ("title", &m.title),
            ]
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .collect(),
            Channel::Push | Channel::WebPush => [
                ("subject", &m.subject),
                ("html", &m.html),
                ("sms_type", &m.sms_type),
            ]
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .collect(),
        };
        for key in stray {
            out.push(Problem::warning(
                format!("{path}.{key}"),
                format!(
                    "ignored: {key} does not apply to {} messages",
                    m.channel.as_str()
                ),
            ));
        }
        if let Some(t) = &m.sms_type
            && !["transactional", "promotional"].contains(&t.as_str())
        {
            out.push(Problem::error(
                format!("{path}.sms_type"),
                "sms_type is transactional or promotional",
            ));
        }
        if m.track.is_some() && m.channel != Channel::Email {
            out.push(Problem::error(
                format!("{path}.track"),
                format!(
                    "track applies to email only (the open pixel and click redirects); {} messages are never tracked by Relance: remove it",
                    m.channel.as_str()
                ),
            ));
        }
        if all_steps_read && !used.contains(id.as_str()) {
            out.push(Problem::warning(path, "no step sends this message"));
        }
    }
}

fn check_launch(s: &Scenario, out: &mut Vec<Problem>) {
    if let Launch::FixedDates(dates) = &s.launch {
        let mut seen = HashSet::new();
        for (i, d) in dates.iter().enumerate() {
            // The store keeps instants up to the end of 9999 (UTC): a later date could never
            // be scheduled (activating failed then, naming no date).
            let at = d.resolve(s.timezone);
            if at > crate::instant::max() {
                out.push(Problem::error(
                    format!("launch.dates[{i}]"),
                    format!(
                        "this date is {} in UTC, after 9999-12-31T23:59:59Z, the last instant Relance keeps",
                        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                ));
            }
            if !seen.insert(at) {
                out.push(Problem::warning(
                    format!("launch.dates[{i}]"),
                    "this date is listed twice; it runs once",
                ));
            }
        }
    }
}

fn check_graph(
    s: &Scenario,
    edges: &[Vec<usize>],
    index: &HashMap<&str, usize>,
    out: &mut Vec<Problem>,
) {
    let n = s.steps.len();
    let reachable = reach_from(0, edges, None);
    for (i, step) in s.steps.iter().enumerate() {
        // A second step with the same id cannot be named (already reported as a duplicate).
        let duplicate = index.get(step.id.as_str()).is_some_and(|&first| first != i);
        if !reachable[i] && !duplicate {
            out.push(
                Problem::error(
                    step_path(i, ""),
                    "unreachable: no path from the first step leads here",
                )
                .in_step(&step.id),
            );
        }
    }
    // Steps from which some end can be reached.
    let mut reverse: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, targets) in edges.iter().enumerate() {
        for &j in targets {
            reverse[j].push(i);
        }
    }
    // A step with a missing or unknown target is already reported; count it as reaching an
    // end so that the steps before it are not reported a second time.
    let dangling = |i: usize| {
        s.steps[i]
            .kind
            .targets()
            .iter()
            .any(|(_, t)| t.is_empty() || !index.contains_key(t))
    };
    let mut ends_reachable = vec![false; n];
    let mut stack: Vec<usize> = (0..n)
        .filter(|&i| matches!(s.steps[i].kind, StepKind::End { .. }) || dangling(i))
        .collect();
    for &i in &stack {
        ends_reachable[i] = true;
    }
    while let Some(i) = stack.pop() {
        for &p in &reverse[i] {
            if !ends_reachable[p] {
                ends_reachable[p] = true;
                stack.push(p);
            }
        }
    }
    // Report where contacts get in a region with no way out: the first step, or a step
    // entered from a step that can still reach an end.
    let stuck = |i: usize| reachable[i] && !ends_reachable[i];
    for (i, step) in s.steps.iter().enumerate() {
        let entry = i == 0 || reverse[i].iter().any(|&p| reachable[p] && !stuck(p));
        if stuck(i) && entry {
            let region = reach_from(i, edges, None);
            let onward: Vec<String> = (0..n)
                .filter(|&j| region[j] && j != i)
                .map(|j| format!("\"{}\"", s.steps[j].id))
                .collect();
            let via = if onward.is_empty() {
                String::new()
            } else {
                format!(" (it can only go on to {})", onward.join(", "))
            };
            out.push(
                Problem::error(
                    step_path(i, ""),
                    format!("never reaches an end: no path from this step leads to an end step{via}; add an end step or a way out (a branch without end keeps contacts forever)"),
                )
                .in_step(&step.id),
            );
        }
    }
    // Loops that can spin without a delay or a wait: cycles among steps that never hold.
    let holds = |i: usize| {
        let st = &s.steps[i];
        matches!(st.kind, StepKind::WaitFor { .. }) || st.delay.as_ref().is_some_and(|d| d.holds())
    };
    for component in cycles_without(edges, &holds) {
        let cycle = cycle_in(&component, edges);
        let names: Vec<&str> = cycle.iter().map(|&i| s.steps[i].id.as_str()).collect();
        let first = cycle[0];
        out.push(
            Problem::error(
                step_path(first, ""),
                format!(
                    "loop (cycle) without a delay or a wait: {} → {} would repeat at once, forever (a loop without a delay never lets time pass); add a delay or a wait_for to one of these steps",
                    names.join(" → "),
                    names[0]
                ),
            )
            .in_step(&s.steps[first].id),
        );
    }
    // Post-send conditions must follow a send of the step they name.
    for (i, step) in s.steps.iter().enumerate() {
        for (field, cond) in step.kind.conditions() {
            cond.walk(&mut |c| {
                if let Condition::Engagement(e) = c {
                    check_post_send(s, edges, index, i, &field, e, out);
                }
            });
        }
    }
}

fn check_post_send(
    s: &Scenario,
    edges: &[Vec<usize>],
    index: &HashMap<&str, usize>,
    at: usize,
    field: &str,
    e: &EngagementClause,
    out: &mut Vec<Problem>,
) {
    let here = &s.steps[at].id;
    let label = clause_label(e);
    let Some(&sender) = index.get(e.step.as_str()) else {
        out.push(
            Problem::error(
                step_path(at, field),
                format!(
                    "{label} is a post-send condition on an unknown step \"{}\"{}",
                    e.step,
                    did_you_mean(&e.step, index.keys().copied())
                ),
            )
            .in_step(here),
        );
        return;
    };
    if !matches!(s.steps[sender].kind, StepKind::Send { .. }) {
        out.push(
            Problem::error(
                step_path(at, field),
                format!(
                    "{label} is a post-send condition, but \"{}\" is not a send step; name the step that sends the message",
                    e.step
                ),
            )
            .in_step(here),
        );
        return;
    }
    // The sender must come before: some path sender →+ here.
    let mut after_sender = reach_from(sender, edges, None);
    after_sender[sender] = edges[sender]
        .iter()
        .any(|&j| reach_from(j, edges, None)[sender]);
    if !after_sender[at] {
        out.push(
            Problem::error(
                step_path(at, field),
                format!(
                    "{label} is a post-send condition not after a send: this step does not follow the send step \"{}\" on any path",
                    e.step
                ),
            )
            .in_step(here),
        );
        return;
    }
    // On every path? Remove the sender and see whether `here` is still reachable.
    if sender != 0 && reach_from(0, edges, Some(sender))[at] {
        out.push(
            Problem::warning(
                step_path(at, field),
                format!(
                    "{label} is a post-send condition, but some paths reach this step without going through the send step \"{}\"; on them it is false",
                    e.step
                ),
            )
            .in_step(here),
        );
    }
}

/// `{opened: first}`, as the file writes it.
fn clause_label(e: &EngagementClause) -> String {
    format!("{{{}: {}}}", e.kind.as_str(), e.step)
}

/// `; did you mean "x"?` when a candidate is close to `word`, else nothing.
fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    scenario::suggest(word, candidates)
        .map(|s| format!("; did you mean \"{s}\"?"))
        .unwrap_or_default()
}

/// One cycle through the first step of a strongly connected component, in edge order.
fn cycle_in(component: &[usize], edges: &[Vec<usize>]) -> Vec<usize> {
    let start = component[0];
    let inside: HashSet<usize> = component.iter().copied().collect();
    // Breadth-first from `start` inside the component, until an edge leads back to it.
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut seen: HashSet<usize> = HashSet::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &edges[v] {
            if w == start {
                let mut path = vec![v];
                let mut at = v;
                while let Some(&p) = parent.get(&at) {
                    path.push(p);
                    at = p;
                }
                path.reverse();
                return path;
            }
            if inside.contains(&w) && seen.insert(w) {
                parent.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    component.to_vec()
}

fn reach_from(start: usize, edges: &[Vec<usize>], without: Option<usize>) -> Vec<bool> {
    let mut seen = vec![false; edges.len()];
    if Some(start) == without {
        return seen;
    }
    let mut stack = vec![start];
    seen[start] = true;
    while let Some(i) = stack.pop() {
        for &j in &edges[i] {
            if !seen[j] && Some(j) != without {
                seen[j] = true;
                stack.push(j);
            }
        }
    }
    seen
}

/// Strongly connected components of the steps that never hold, that contain a cycle.
fn cycles_without(edges: &[Vec<usize>], holds: &dyn Fn(usize) -> bool) -> Vec<Vec<usize>> {
    struct Tarjan<'a> {
        edges: &'a [Vec<usize>],
        keep: Vec<bool>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.edges[v] {
                if !self.keep[w] {
                    continue;
                }
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    _ => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                let self_loop = comp.len() == 1 && self.edges[v].contains(&v);
                if comp.len() > 1 || self_loop {
                    comp.sort_unstable();
                    self.out.push(comp);
                }
            }
        }
    }
    let n = edges.len();
    let mut t = Tarjan {
        edges,
        keep: (0..n).map(|i| !holds(i)).collect(),
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if t.keep[v] && t.index[v].is_none() {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}

/// The keys each line writes, indexed once: `key` → the lines that write it, in file order.
/// Locating a problem is then a lookup, so validation stays linear in the file's size.
struct LineIndex<'t> {
    lines: Vec<&'t str>,
    keys: HashMap<&'t str, Vec<usize>>,
    /// For each line, the first later non-blank line indented no deeper (its block's end).
    block_end: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    fn new(text: &'t str) -> Self {
        let lines: Vec<&str> = text.lines().collect();
        let mut keys: HashMap<&str, Vec<usize>> = HashMap::new();
        for (l, line) in lines.iter().enumerate() {
            for key in keys_in(line) {
                let at = keys.entry(key).or_default();
                if at.last() != Some(&l) {
                    at.push(l);
                }
            }
        }
        // One pass from the bottom with a stack of (indent, line) of the lines below.
        let indent = |l: &str| l.len() - l.trim_start().len();
        let mut block_end = vec![lines.len(); lines.len()];
        let mut below: Vec<(usize, usize)> = Vec::new();
        for l in (0..lines.len()).rev() {
            // A blank line ends no block and holds no key: it is never a block's top.
            if lines[l].trim().is_empty() {
                continue;
            }
            let own = indent(lines[l]);
            while below.last().is_some_and(|&(i, _)| i > own) {
                below.pop();
            }
            if let Some(&(_, next)) = below.last() {
                block_end[l] = next;
            }
            below.push((own, l));
        }
        LineIndex {
            lines,
            keys,
            block_end,
        }
    }

    /// The first line in `from..to` that writes `key`.
    fn find(&self, key: &str, from: usize, to: usize) -> Option<usize> {
        let at = self.keys.get(key)?;
        let i = at.partition_point(|&l| l < from);
        at.get(i).copied().filter(|&l| l < to)
    }

    fn indent(&self, l: usize) -> usize {
        self.lines[l].len() - self.lines[l].trim_start().len()
    }
}

/// The mapping keys a line writes (`key:`, `"key":`, several in a flow mapping), each
/// confirmed by [`has_key`].
fn keys_in(line: &str) -> Vec<&str> {
    let code = line.split(" #").next().unwrap_or(line);
    let mut out = Vec::new();
    for (pos, _) in code.match_indices(':') {
        let head = code[..pos].trim_end();
        let key = match head.chars().next_back() {
            Some(q @ ('"' | '\'')) => {
                let inner = &head[..head.len() - 1];
                inner.rfind(q).map(|open| &inner[open + 1..])
            }
            Some(_) => {
                let start = head
                    .rfind([' ', '\t', '{', ',', '[', '"', '\''])
                    .map_or(0, |i| i + 1);
                Some(&head[start..])
            }
            None => None,
        };
        if let Some(key) = key.filter(|k| !k.is_empty())
            && has_key(code, key)
        {
            out.push(key);
        }
    }
    out
}

/// Best effort: the line of the key each problem is about, searched inside its step (from the
/// line where the step's `id` is written) or under its top-level key, so problems point into
/// the file. Falls back to the step's `id` line. Lines are indexed once (see [`LineIndex`]).
fn locate_lines(text: &str, s: &Scenario, problems: &mut [Problem]) {
    let index = LineIndex::new(text);
    let lines = &index.lines;
    let mut from = 0;
    // The line of each step's `id`, by step index (ids may be duplicated).
    let mut step_lines: Vec<Option<usize>> = vec![None; s.steps.len()];
    let id_lines: &[usize] = index.keys.get("id").map_or(&[], Vec::as_slice);
    for (i, step) in s.steps.iter().enumerate() {
        if step.id.is_empty() {
            continue;
        }
        let forms = [
            format!("id: {}", step.id),
            format!("id: \"{}\"", step.id),
            format!("id: '{}'", step.id),
            format!("\"id\": \"{}\"", step.id),
        ];
        let first = id_lines.partition_point(|&l| l < from);
        let hit = id_lines[first..].iter().copied().find(|&l| {
            forms.iter().any(|f| {
                lines[l].match_indices(f.as_str()).any(|(pos, _)| {
                    let after = lines[l][pos + f.len()..].chars().next();
                    let before = lines[l][..pos].chars().next_back();
                    !after.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_')
                        && !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                })
            })
        });
        if let Some(l) = hit {
            step_lines[i] = Some(l);
            from = l + 1;
        }
    }
    let starts: Vec<usize> = step_lines.iter().flatten().copied().collect();
    let by_id: HashMap<&str, usize> = s
        .steps
        .iter()
        .enumerate()
        .rev()
        .map(|(i, st)| (st.id.as_str(), i))
        .collect();
    let step_index = |p: &Problem| -> Option<usize> {
        p.path
            .strip_prefix("steps[")
            .and_then(|rest| rest.split(']').next())
            .and_then(|i| i.parse().ok())
            .or_else(|| by_id.get(p.step.as_deref()?).copied())
    };
    // The top line of each top-level key, found once.
    let mut tops: HashMap<String, Option<usize>> = HashMap::new();
    for p in problems.iter_mut() {
        if p.line.is_some() {
            continue;
        }
        let keys: Vec<&str> = p
            .path
            .split('.')
            .map(|seg| seg.split('[').next().unwrap_or(seg))
            .filter(|k| !k.is_empty())
            .collect();
        if let Some(start) = step_index(p).and_then(|i| step_lines.get(i).copied().flatten()) {
            let next = starts.partition_point(|&l| l <= start);
            let end = starts.get(next).copied().unwrap_or(lines.len());
            // `steps[2].delay.after`: the key after the step's index.
            let key = keys
                .get(1..)
                .and_then(|rest| rest.last())
                .filter(|_| !p.path.ends_with(']'));
            let line = key.and_then(|k| index.find(k, start, end)).unwrap_or(start);
            p.line = Some(line + 1);
        } else if let Some(first) = keys.first()
            && p.step.is_none()
        {
            let top = *tops.entry((*first).to_string()).or_insert_with(|| {
                index
                    .keys
                    .get(first)?
                    .iter()
                    .copied()
                    .min_by_key(|&l| (index.indent(l), l))
            });
            let Some(top) = top else {
                continue;
            };
            let block_end = index.block_end[top];
            let line = keys
                .last()
                .filter(|_| keys.len() > 1)
                .and_then(|k| index.find(k, top, block_end))
                .unwrap_or(top);
            p.line = Some(line + 1);
        }
    }
}

/// True when `line` writes the mapping key `key` (`key:` or `"key":`), not part of a longer word.
fn has_key(line: &str, key: &str) -> bool {
    let code = line.split(" #").next().unwrap_or(line);
    code.match_indices(key).any(|(pos, _)| {
        let before = code[..pos].chars().next_back();
        let rest = &code[pos + key.len()..];
        let word_start = !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-');
        let quoted = matches!(before, Some('"' | '\''));
        let closes = if quoted {
            rest.strip_prefix(['"', '\'']).unwrap_or("x")
        } else {
            rest
        };
        word_start && closes.trim_start().starts_with(':')
    })
}

/// The counts of a report, for a summary line.
pub fn summary(problems: &[Problem]) -> (usize, usize) {
    let errors = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    (errors, problems.len() - errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(messages: &str) -> String {
        format!(
            "id: t\ntimezone: UTC\nlaunch: {{type: manual}}\nmessages:\n{messages}steps:\n  - {{id: first, send: m, next: done}}\n  - {{id: done, end: success}}\n"
        )
    }

    #[test]
    fn track_is_for_email_only() {
        let email = check_text(
            &scenario("  m: {channel: email, subject: Hi, html: \"<p>x</p>\", track: false}\n"),
            Format::Yaml,
        );
        assert_eq!(email.errors(), 0, "{:?}", email.problems);
        let no_tracking = email.scenario.as_ref().map(|s| s.messages["m"].track);
        assert_eq!(no_tracking, Some(Some(false)));

        let sms = check_text(
            &scenario("  m: {channel: sms, text: Hi, track: false}\n"),
            Format::Yaml,
        );
        let problem = sms.problems.iter().find(|p| p.path == "messages.m.track");
        assert!(
            problem.is_some_and(|p| p.is_error() && p.message.contains("email only")),
            "{:?}",
            sms.problems
        );

        let typo = check_text(
            &scenario("  m: {channel: email, subject: Hi, text: x, track: nope}\n"),
            Format::Yaml,
        );
        assert!(typo.errors() > 0, "{:?}", typo.problems);
    }
}
