//! Contacts from a file: CSV with a header row (dots in a header reach into objects:
//! `subscriptions.newsletter`) or JSON lines. Every row is kept or rejected with its line
//! number and reason; nothing is dropped silently.

use std::collections::HashMap;

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
    parse_contacts_bytes(text.as_bytes(), format)
}

/// Parses a contacts file that may not be UTF-8 throughout: a row that is not is rejected
/// with its line, the others are kept. A contact id listed twice is kept once (its first
/// row); the later rows are rejected, naming the first, since merging them silently would
/// hide which values won. A CSV file whose header names a column twice is refused whole.
pub fn parse_contacts_bytes(
    bytes: &[u8],
    format: ContactsFormat,
) -> (Vec<(u64, Contact)>, Vec<Rejected>) {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let (ok, mut rejected) = match format {
        ContactsFormat::JsonLines => parse_json_lines(bytes),
        ContactsFormat::Csv => parse_csv(bytes),
    };
    let mut first_line: HashMap<String, u64> = HashMap::new();
    let mut kept = Vec::with_capacity(ok.len());
    for (line, contact) in ok {
        match first_line.get(contact.id()) {
            Some(first) => rejected.push(Rejected {
                line,
                reason: format!(
                    "duplicate id \"{}\" (first on line {first}): one row per contact",
                    contact.id()
                ),
            }),
            None => {
                first_line.insert(contact.id().to_string(), line);
                kept.push((line, contact));
            }
        }
    }
    rejected.sort_by_key(|r| r.line);
    (kept, rejected)
}

fn not_utf8(line: u64, e: std::str::Utf8Error) -> Rejected {
    Rejected {
        line,
        reason: format!(
            "not UTF-8 text (an invalid byte after {} valid bytes): save the file as UTF-8",
            e.valid_up_to()
        ),
    }
}

fn parse_json_lines(bytes: &[u8]) -> (Vec<(u64, Contact)>, Vec<Rejected>) {
    let (mut ok, mut rejected) = (Vec::new(), Vec::new());
    for (n, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line_no = n as u64 + 1;
        let line = match std::str::from_utf8(raw) {
            Ok(l) => l,
            Err(e) => {
                rejected.push(not_utf8(line_no, e));
                continue;
            }
        };
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

fn parse_csv(bytes: &[u8]) -> (Vec<(u64, Contact)>, Vec<Rejected>) {
    let (mut ok, mut rejected) = (Vec::new(), Vec::new());
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let headers = match reader.byte_headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            rejected.push(Rejected {
                line: 1,
                reason: format!("header row: {e}"),
            });
            return (ok, rejected);
        }
    };
    let mut names: Vec<String> = Vec::with_capacity(headers.len());
    for h in headers.iter() {
        match std::str::from_utf8(h) {
            Ok(name) => names.push(name.to_string()),
            Err(e) => {
                rejected.push(not_utf8(1, e));
                return (ok, rejected);
            }
        }
    }
    for (i, name) in names.iter().enumerate() {
        if let Some(j) = names[..i].iter().position(|n| n == name) {
            rejected.push(Rejected {
                line: 1,
                reason: format!(
                    "the header row names \"{name}\" twice (columns {} and {}): which value to keep would be a guess",
                    j + 1,
                    i + 1
                ),
            });
            return (ok, rejected);
        }
    }
    if !names.iter().any(|h| h == "id") {
        rejected.push(Rejected {
            line: 1,
            reason: "the header row has no \"id\" column".into(),
        });
        return (ok, rejected);
    }
    for row in reader.byte_records() {
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
        let mut bad = None;
        for (h, cell) in names.iter().zip(row.iter()) {
            match std::str::from_utf8(cell) {
                Ok(cell) if !cell.is_empty() => {
                    fields.insert(h.to_string(), Value::String(cell.to_string()));
                }
                Ok(_) => {}
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = bad {
            rejected.push(not_utf8(line, e));
            continue;
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

    #[test]
    fn hostile_duplicate_ids_are_rejected_not_merged() {
        let text = "id,email\nd1,first@x.io\nd2,d2@x.io\nd1,second@x.io\n";
        let (ok, rejected) = parse_contacts(text, ContactsFormat::Csv);
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].1.email(), Some("first@x.io"));
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].line, 4);
        assert!(
            rejected[0].reason.contains("line 2"),
            "{}",
            rejected[0].reason
        );
        let lines = "{\"id\": \"a\"}\n{\"id\": \"a\", \"email\": \"x@y.io\"}\n";
        let (ok, rejected) = parse_contacts(lines, ContactsFormat::JsonLines);
        assert_eq!((ok.len(), rejected.len(), rejected[0].line), (1, 1, 2));
    }

    #[test]
    fn hostile_duplicate_columns_refuse_the_file() {
        let (ok, rejected) =
            parse_contacts("id,email,email\nc1,a@x.io,b@x.io\n", ContactsFormat::Csv);
        assert!(ok.is_empty());
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].line, 1);
        assert!(
            rejected[0].reason.contains("\"email\" twice"),
            "{}",
            rejected[0].reason
        );
    }

    #[test]
    fn hostile_non_utf8_rows_are_rejected_with_their_line() {
        // Latin-1 "é" (0xE9) on line 3; the other rows go through.
        let csv = b"id,name\nc1,Ana\nc2,Ren\xE9\nc3,Li\n";
        let (ok, rejected) = parse_contacts_bytes(csv, ContactsFormat::Csv);
        assert_eq!(
            ok.iter().map(|(_, c)| c.id()).collect::<Vec<_>>(),
            vec!["c1", "c3"]
        );
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].line, 3);
        assert!(
            rejected[0].reason.contains("UTF-8"),
            "{}",
            rejected[0].reason
        );
        let lines = b"{\"id\": \"a\"}\n{\"id\": \"b\xff\"}\n";
        let (ok, rejected) = parse_contacts_bytes(lines, ContactsFormat::JsonLines);
        assert_eq!((ok.len(), rejected[0].line), (1, 2));
        // A byte-order mark is not part of the first column's name.
        let (ok, rejected) = parse_contacts_bytes(b"\xEF\xBB\xBFid\nc1\n", ContactsFormat::Csv);
        assert_eq!((ok.len(), rejected.len()), (1, 0));
    }
}
