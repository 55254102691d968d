//! The built-in scenario templates (`relance new --template NAME`): the example scenarios,
//! compiled into the binary. Instantiating one writes a new file; the template never changes.

/// (name, what it is, text).
pub const TEMPLATES: [(&str, &str, &str); 9] = [
    (
        "welcome-series",
        "welcome email on sign-up, reminder, SMS to non-openers",
        include_str!("../../examples/welcome-series.yaml"),
    ),
    (
        "birthday",
        "daily check, a message on the contact's birthday",
        include_str!("../../examples/birthday.yaml"),
    ),
    (
        "abandoned-cart",
        "push and email after a cart is left alone, stop on purchase",
        include_str!("../../examples/abandoned-cart.yaml"),
    ),
    (
        "re-engagement",
        "weekly win-back of contacts gone quiet",
        include_str!("../../examples/re-engagement.yaml"),
    ),
    (
        "review-follow-up",
        "ask for a review after delivery, thank the reviewers",
        include_str!("../../examples/review-follow-up.yaml"),
    ),
    (
        "lead-nurturing",
        "fixed-date campaign scoring leads and handing them to sales",
        include_str!("../../examples/lead-nurturing.yaml"),
    ),
    (
        "multichannel-reaction",
        "email and push, reminder to non-openers, thanks on purchase",
        include_str!("../../examples/multichannel-reaction.yaml"),
    ),
    (
        "ab-subject-test",
        "two subject lines, the one opened most then sent to everyone",
        include_str!("../../examples/subject-test.yaml"),
    ),
    (
        "re-engagement-holdout",
        "win-back emails measured against a 10% holdout on purchases",
        include_str!("../../examples/re-engagement-holdout.yaml"),
    ),
];

/// A template's text with its top-level `id` (and `name`, when given) replaced.
pub fn instantiate(text: &str, id: &str, name: Option<&str>) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut id_done, mut name_done) = (false, false);
    for line in text.split_inclusive('\n') {
        if !id_done && line.starts_with("id:") {
            out.push_str(&format!("id: {id}\n"));
            id_done = true;
        } else if !name_done && line.starts_with("name:") && name.is_some() {
            out.push_str(&format!(
                "name: {}\n",
                serde_json::to_string(name.unwrap_or_default()).unwrap_or_default()
            ));
            name_done = true;
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use relance_core::{Format, validate};

    #[test]
    fn every_template_instantiates_into_a_valid_scenario_with_the_new_id() {
        for (name, _, text) in TEMPLATES {
            let new = instantiate(text, "my-copy", Some("My copy"));
            let report = validate::check_text(&new, Format::Yaml);
            assert_eq!(report.errors(), 0, "{name}: {:?}", report.problems);
            let s = report.scenario.unwrap_or_else(|| panic!("{name}"));
            assert_eq!(
                (s.id.as_str(), s.name.as_str()),
                ("my-copy", "My copy"),
                "{name}"
            );
        }
    }
}
