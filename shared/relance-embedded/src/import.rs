//! Contacts from a file: CSV with a header row (dots in a header reach into objects:
//! `subscriptions.newsletter`) or JSON lines. Every row is kept or rejected with its line
//! number and reason; nothing is dropped silently.

use relance_core::Contact;
use serde::Serialize;
use serde_json::{Map, Value};

/// A rejected row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// 1-based line number in the file.
    pub line: u64,
    /// Why.
    pub reason: String,
}

/// The syntax of a contacts file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactsFormat {
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    JsonLines,
}

impl ContactsFormat {
    /// CSV for `.csv` files, JSON lines otherwise.
    pub fn from_path(path: &str) -> Self {
        if path.to_ascii_lowercase().ends_with(".csv") {
            ContactsFormat::Csv
        } else {
            ContactsFormat::JsonLines
        }
    }
}

/// Parses a contacts file: the contacts (with their line) and the rejected rows.
pub fn parse_contacts(text: &str, format: ContactsFormat) -> (Vec<(u64, Contact)>, Vec<Rejected>) {
    match format {
        ContactsFormat::JsonLines => parse_json_lines(text),
        ContactsFormat::Csv => parse_csv(text),
    }
}

fn parse_json_lines(text: &str) -> (Vec<(u64, Contact)>, Vec<Rejected>) {
    let (mut ok, mut rejected) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        let line_no = n as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(v) => match Contact::from_json(v) {
                Ok(c) => ok.push((line_no, c)),
                Err(e) => rejected.push(Rejected {
                    line: line_no,
                    reason: e.to_string(),
                }),
            },
            Err(e) => rejected.push(Rejected {
                line: line_no,
                reason: format!("not JSON: {e}"),
            }),
        }
    }
    (ok, rejected)
}

fn parse_csv(text: &str) -> (Vec<(u64, Contact)>, Vec<Rejected>) {
    let (mut ok, mut rejected) = (Vec::new(), Vec::new());
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            rejected.push(Rejected {
                line: 1,
                reason: format!("header row: {e}"),
            });
            return (ok, rejected);
        }
    };
    if !headers.iter().any(|h| h == "id") {
        rejected.push(Rejected {
            line: 1,
            reason: "the header row has no \"id\" column".into(),
        });
        return (ok, rejected);
    }
    for row in reader.records() {
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                rejected.push(Rejected {
                    line,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let line = row.position().map_or(0, |p| p.line());
        let mut fields = Map::new();
        for (h, cell) in headers.iter().zip(row.iter()) {
            if !cell.is_empty() {
                fields.insert(h.to_string(), Value::String(cell.to_string()));
            }
        }
        if !fields.contains_key("id") {
            rejected.push(Rejected {
                line,
                reason: "empty \"id\"".into(),
            });
            continue;
        };
        let nested: Vec<(String, Value)> = fields
            .iter()
            .filter(|(k, _)| k.contains('.'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        fields.retain(|k, _| !k.contains('.'));
        let mut contact = match Contact::from_json(Value::Object(fields)) {
            Ok(c) => c,
            Err(e) => {
                rejected.push(Rejected {
                    line,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        for (k, v) in nested {
            contact.set_field(&k, v);
        }
        ok.push((line, contact));
    }
    (ok, rejected)
}

/// The counts of an import, as printed and as the API returns them.
pub fn report(results: &[crate::runtime::ImportedContact], rejected: &[Rejected]) -> Value {
    use relance_core::ports::ContactChange;
    let count = |c: ContactChange| results.iter().filter(|r| r.change == c).count();
    serde_json::json!({
        "added": count(ContactChange::Added),
        "modified": count(ContactChange::Modified),
        "unchanged": count(ContactChange::Unchanged),
        // Consent values ignored because an opt-out or a suppression stands (DESIGN §4).
        "consent_kept": results.iter().map(|r| r.consent_kept).sum::<usize>(),
        "rejected": rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_become_contacts_and_bad_rows_say_why() {
        let text = "id,email,groups,subscriptions.newsletter\nc1,c1@x.io,vip;beta,false\n,nobody@x.io,,\nc3,c3@x.io\n";
        let (ok, rejected) = parse_contacts(text, ContactsFormat::Csv);
        assert_eq!(ok.len(), 1);
        assert_eq!(
            ok[0].1.names("groups").collect::<Vec<_>>(),
            vec!["vip", "beta"]
        );
        assert_eq!(ok[0].1.subscription("newsletter"), Some(false));
        assert_eq!(
            rejected.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert!(rejected[0].reason.contains("id"));
    }

    #[test]
    fn json_lines_report_their_line() {
        let (ok, rejected) = parse_contacts(
            "{\"id\": \"a\"}\n\nnot json\n{\"email\": \"x\"}\n",
            ContactsFormat::JsonLines,
        );
        assert_eq!(ok.len(), 1);
        assert_eq!(
            rejected.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![3, 4]
        );
    }
}
