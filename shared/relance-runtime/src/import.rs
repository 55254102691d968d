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
    // The line of the last record read, taken or refused: the one an unclosed quote swallowed
    // the rest of the file into.
    let mut last_line = 0;
    for row in reader.byte_records() {
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                last_line = line;
                rejected.push(Rejected {
                    line,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let line = row.position().map_or(0, |p| p.line());
        last_line = line;
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
        // Dotted columns (`subscriptions.news`) nest before the row is read, so the contact's
        // checks see them with the rest (a consent value that is not one is refused).
        let dotted: Vec<String> = fields.keys().filter(|k| k.contains('.')).cloned().collect();
        for key in dotted {
            if let Some(v) = fields.shift_remove(&key) {
                relance_core::contact::set_path(&mut fields, &key, v);
            }
        }
        let contact = match Contact::from_json(Value::Object(fields)) {
            Ok(c) => c,
            Err(e) => {
                rejected.push(Rejected {
                    line,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        ok.push((line, contact));
    }
    // A quoted field still open at the end of the file: the reader took every line after its
    // quote as part of it, so the last row would carry the rest of the file in one value
    // and the rows in it would be lost without a word. That row is refused instead.
    if let Some(opened) = unclosed_quote_line(bytes) {
        let why = format!(
            "a quoted field opened on line {opened} is never closed: every line after it would be part of one value (close the quote, or double a quote inside a quoted field)"
        );
        if ok.last().is_some_and(|(line, _)| *line == last_line) {
            ok.pop();
            rejected.push(Rejected {
                line: last_line,
                reason: why,
            });
        } else if let Some(refused) = rejected.iter_mut().rev().find(|r| r.line == last_line) {
            // Refused already (its length, say): the reason says what swallowed the rest.
            refused.reason = format!("{}; {why}", refused.reason);
        }
    }
    (ok, rejected)
}

/// The line where a quoted field opens and is still open at the end of `bytes`, as the CSV
/// reader reads it: a quote opens a field only at its start (after a comma or a line break),
/// and inside one a doubled quote is a quote.
fn unclosed_quote_line(bytes: &[u8]) -> Option<u64> {
    let (mut line, mut opened_at) = (1u64, None);
    let mut at_field_start = true;
    let mut in_quotes = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_quotes {
            if b == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    in_quotes = false;
                }
            }
        } else if b == b'"' && at_field_start {
            in_quotes = true;
            opened_at = Some(line);
        }
        if b == b'\n' {
            line += 1;
        }
        at_field_start = !in_quotes && matches!(b, b',' | b'\n' | b'\r');
        i += 1;
    }
    if in_quotes { opened_at } else { None }
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
    use serde_json::json;

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

    /// Asserts that a refused row's reason says `what`.
    fn assert_says(refused: &Rejected, what: &str) {
        assert!(refused.reason.contains(what), "{}", refused.reason);
    }

    /// A stray opening quote would swallow every later row into one value: the row is refused
    /// with the line of the quote, and the rows before it stay. Quoted fields that close,
    /// across lines and with doubled quotes, are not touched.
    #[test]
    fn hostile_unclosed_quote_refuses_its_row_not_the_rest_silently() {
        let (ok, rejected) = parse_contacts(
            "id,email,city\nq0,q0@x.org,Lyon\nq1,q1@x.org,\"Lyon\nq2,q2@x.org,Paris\nq3,q3@x.org,Nice\n",
            ContactsFormat::Csv,
        );
        assert_eq!(ok.iter().map(|(_, c)| c.id()).collect::<Vec<_>>(), ["q0"]);
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(rejected[0].line, 3);
        assert_says(&rejected[0], "opened on line 3 is never closed");
        // A swallowing row refused for its length: the row before it stays, the reason says why.
        let (ok, rejected) = parse_contacts(
            "id,city,email\na,Lyon,a@x.org\nb,\"Lyon,b@x.org\nc,Paris,c@x.org\n",
            ContactsFormat::Csv,
        );
        assert_eq!(ok.iter().map(|(_, c)| c.id()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_says(&rejected[0], "opened on line 3 is never closed");
        let (ok, rejected) = parse_contacts(
            "id,note\na,\"two\nlines, \"\"quoted\"\"\"\nb,x\"y\n",
            ContactsFormat::Csv,
        );
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(ok.len(), 2);
        assert_eq!(
            ok[0].1.field("note"),
            Some(&json!("two\nlines, \"quoted\""))
        );
    }

    /// A CSV's `subscriptions.<type>` column is read as consent: "0" is an opt-out, and a
    /// value that is not a consent value refuses the row (as "no record" it would count as
    /// subscribed).
    #[test]
    fn hostile_consent_columns_are_checked() {
        let (ok, rejected) = parse_contacts(
            "id,subscriptions.news\na,0\nb,off\nc,maybe\nd,\n",
            ContactsFormat::Csv,
        );
        let ids: Vec<&str> = ok.iter().map(|(_, c)| c.id()).collect();
        assert_eq!(ids, ["a", "b", "d"]);
        assert_eq!(ok[0].1.subscription("news"), Some(false));
        assert_eq!(ok[1].1.subscription("news"), Some(false));
        assert_eq!(ok[2].1.subscription("news"), None);
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].line, 4);
        assert_says(
            &rejected[0],
            "\"subscriptions.news\": \"maybe\" is not a consent value",
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
