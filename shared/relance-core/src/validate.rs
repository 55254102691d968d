//! Validation: every problem of a scenario in one pass, each located by path, step id and
//! (best effort) line, in a plain sentence. A scenario is activated only when no error is left.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::condition::{Condition, EngagementClause};
use crate::problem::{Problem, Severity};
use crate::render::Templates;
use crate::scenario::{
    self, Action, Channel, EndKind, Format, Launch, MAX_GOALS, Scenario, StepKind,
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
    let doc = match scenario::parse_document(text, format) {
        Ok(doc) => doc,
        Err(p) => {
            return Report {
                scenario: None,
                problems: vec![p],
            };
        }
    };
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
    problems.extend(check_meaning(&loaded.scenario, !loaded.broken_steps));
    locate_lines(text, &loaded.scenario, &mut problems);
    problems.sort_by_key(|p| p.severity);
    let clean = !problems.iter().any(Problem::is_error);
    Report {
        scenario: clean.then_some(loaded.scenario),
        problems,
    }
}

/// Parses a scenario that must have no error (warnings are returned alongside).
pub fn parse(text: &str, format: Format) -> Result<(Scenario, Vec<Problem>), Vec<Problem>> {
    let report = check_text(text, format);
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
    let mut out = Vec::new();
    if s.steps.is_empty() {
        out.push(Problem::error(
            "steps",
            "a scenario needs at least one step",
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
                    format!("duplicate step id, already used by steps[{first}]"),
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
                    Problem::error(step_path(i, &field), format!("unknown step \"{target}\""))
                        .in_step(&step.id),
                ),
            }
        }
        match &step.kind {
            StepKind::Send { message, .. } => {
                used_messages.insert(message.as_str());
                if !s.messages.contains_key(message) {
                    let known = if s.messages.is_empty() {
                        "the scenario has no messages".to_string()
                    } else {
                        format!(
                            "known messages: {}",
                            s.messages.keys().cloned().collect::<Vec<_>>().join(", ")
                        )
                    };
                    out.push(
                        Problem::error(
                            step_path(i, "send"),
                            format!("unknown message \"{message}\" ({known})"),
                        )
                        .in_step(&step.id),
                    );
                }
            }
            StepKind::End {
                end: EndKind::Goal(g),
            } if !goal_ids.contains(g.as_str()) => {
                out.push(
                    Problem::error(step_path(i, "end"), format!("unknown end \"{g}\": use success, failure, abandon, neutral or a goal id"))
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
        {
            out.push(
                Problem::warning(step_path(i, "delay.after"), "a zero delay does not wait")
                    .in_step(&step.id),
            );
        }
    }
    check_messages(s, &used_messages, &mut out);
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
                        "{}: {} is a post-send condition; an audience is chosen before any send",
                        e.kind.as_str(),
                        e.step
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
                out.push(Problem::error(
                    format!("exit_when[{k}]"),
                    format!(
                        "{}: \"{}\" does not name a send step",
                        e.kind.as_str(),
                        e.step
                    ),
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
            format!("at most {MAX_GOALS} goals, found {}", s.goals.len()),
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
    }
}

fn check_messages(s: &Scenario, used: &HashSet<&str>, out: &mut Vec<Problem>) {
    let (_, template_problems) = Templates::compile(&s.messages);
    out.extend(template_problems);
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
        if !used.contains(id.as_str()) {
            out.push(Problem::warning(path, "no step sends this message"));
        }
    }
}

fn check_launch(s: &Scenario, out: &mut Vec<Problem>) {
    if let Launch::FixedDates(dates) = &s.launch {
        let mut seen = HashSet::new();
        for (i, d) in dates.iter().enumerate() {
            if !seen.insert(d.resolve(s.timezone)) {
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
        if !reachable[i] {
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
    let mut ends_reachable = vec![false; n];
    let mut stack: Vec<usize> = (0..n)
        .filter(|&i| matches!(s.steps[i].kind, StepKind::End { .. }))
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
    for (i, step) in s.steps.iter().enumerate() {
        let dangling = step
            .kind
            .targets()
            .iter()
            .any(|(_, t)| t.is_empty() || !index.contains_key(t));
        if reachable[i] && !ends_reachable[i] && !dangling {
            out.push(
                Problem::error(step_path(i, ""), "no path from this step reaches an end")
                    .in_step(&step.id),
            );
        }
    }
    // Loops that can spin without a delay or a wait: cycles among steps that never hold.
    let holds = |i: usize| {
        let st = &s.steps[i];
        matches!(st.kind, StepKind::WaitFor { .. }) || st.delay.as_ref().is_some_and(|d| d.holds())
    };
    for cycle in cycles_without(edges, &holds) {
        let names: Vec<&str> = cycle.iter().map(|&i| s.steps[i].id.as_str()).collect();
        let first = cycle[0];
        out.push(
            Problem::error(
                step_path(first, ""),
                format!("loop without a delay or a wait: {} → {}; add a delay or a wait_for to one of these steps", names.join(" → "), names[0]),
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
    let label = format!("{}: {}", e.kind.as_str(), e.step);
    let Some(&sender) = index.get(e.step.as_str()) else {
        out.push(
            Problem::error(
                step_path(at, field),
                format!("{label}: unknown step \"{}\"", e.step),
            )
            .in_step(here),
        );
        return;
    };
    if !matches!(s.steps[sender].kind, StepKind::Send { .. }) {
        out.push(
            Problem::error(
                step_path(at, field),
                format!("{label}: \"{}\" is not a send step", e.step),
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
                    "{label}: this step does not follow a send of step \"{}\"",
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
                format!("{label}: some paths reach this step without sending \"{}\"; the condition is false on them", e.step),
            )
            .in_step(here),
        );
    }
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

/// Best effort: the line where each step's `id` is written, so problems point into the file.
fn locate_lines(text: &str, s: &Scenario, problems: &mut [Problem]) {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    let mut found: HashMap<&str, usize> = HashMap::new();
    for step in &s.steps {
        if step.id.is_empty() {
            continue;
        }
        let forms = [
            format!("id: {}", step.id),
            format!("id: \"{}\"", step.id),
            format!("id: '{}'", step.id),
            format!("\"id\": \"{}\"", step.id),
        ];
        let hit = (from..lines.len()).find(|&l| {
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
            found.insert(&step.id, l + 1);
            from = l + 1;
        }
    }
    for p in problems.iter_mut() {
        if p.line.is_none()
            && let Some(line) = p.step.as_deref().and_then(|s| found.get(s))
        {
            p.line = Some(*line);
        }
    }
}

/// The counts of a report, for a summary line.
pub fn summary(problems: &[Problem]) -> (usize, usize) {
    let errors = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    (errors, problems.len() - errors)
}
