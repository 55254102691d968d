//! Email addresses and phone numbers as contacts carry them: a syntax check when a contact is
//! written (API, import, events), so that an address that cannot be delivered — or one that
//! would smuggle a header into a message (`a@b.io\r\nBcc: …`) — is refused where it enters,
//! with the field it came in, rather than failing at send time.
//!
//! The email check is deliberately practical, not RFC 5322's full grammar: one `@`, a local
//! part and a domain with a dot, no whitespace, no control characters and none of the
//! characters that delimit addresses in a header (`<>,;:"()[]\`). Quoted local parts and
//! address literals (`user@[192.0.2.1]`) are refused: no mailbox provider hands them out, and
//! they are what header-injection attempts look like. Phones are E.164 after the usual
//! punctuation is removed: `+`, then 8 to 15 digits, the first not 0.

/// The longest email address SMTP carries (RFC 5321: 254 in a path).
const MAX_EMAIL: usize = 254;
/// The longest local part (RFC 5321).
const MAX_LOCAL: usize = 64;
/// The longest domain label (RFC 1035).
const MAX_LABEL: usize = 63;

/// Characters that delimit or quote addresses in a header: never part of a plain address.
const DELIMITERS: &[char] = &['<', '>', ',', ';', ':', '"', '(', ')', '[', ']', '\\'];

/// The address, with surrounding whitespace trimmed, when it is a plausible email address;
/// otherwise why not.
pub fn email(text: &str) -> Result<String, &'static str> {
    let address = text.trim();
    if address.chars().any(char::is_control) {
        return Err("contains a control character (a line break, a tab, ...)");
    }
    if address.chars().any(char::is_whitespace) {
        return Err("contains whitespace");
    }
    if address.chars().any(|c| DELIMITERS.contains(&c)) {
        return Err("contains one of < > , ; : \" ( ) [ ] \\ (one plain address expected)");
    }
    if address.len() > MAX_EMAIL {
        return Err("is longer than 254 bytes");
    }
    let mut parts = address.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("must contain exactly one @");
    };
    if local.is_empty() || local.len() > MAX_LOCAL {
        return Err("needs a local part (before the @) of 1 to 64 bytes");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err("has a local part with a misplaced dot");
    }
    if !domain.contains('.') {
        return Err("needs a domain with a dot after the @");
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL {
            return Err("has an empty or over-long domain label");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("has a domain label starting or ending with -");
        }
        // Letters (any script: internationalised domains), digits and hyphens only.
        if !label.chars().all(|c| c.is_alphanumeric() || c == '-') {
            return Err("has a character a domain name cannot hold");
        }
    }
    Ok(address.to_string())
}

/// The number in E.164 form (`+33612345678`) when it is one once spaces, dots, hyphens and
/// parentheses are removed (a leading `00` counts as `+`); otherwise why not.
pub fn phone(text: &str) -> Result<String, &'static str> {
    if text.chars().any(char::is_control) {
        return Err("contains a control character (a line break, a tab, ...)");
    }
    let compact: String = text
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')' | '\u{a0}'))
        .collect();
    let digits = match (compact.strip_prefix('+'), compact.strip_prefix("00")) {
        (Some(rest), _) | (None, Some(rest)) => rest,
        (None, None) => return Err("must start with + and the country code (E.164)"),
    };
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err("may hold only digits after the + (E.164)");
    }
    if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
        return Err("must be + and 8 to 15 digits, the first not 0 (E.164)");
    }
    Ok(format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_addresses_pass_trimmed() {
        for ok in [
            "ana@example.com",
            "first.last+tag@sub.example.co.uk",
            "o'brien@example.ie",
            "josé@exemple.fr",
            "a@münchen.de",
        ] {
            assert_eq!(email(ok), Ok(ok.to_string()), "{ok}");
        }
        assert_eq!(email("  ana@example.com "), Ok("ana@example.com".into()));
    }

    #[test]
    fn hostile_header_smuggling_addresses_are_refused() {
        for bad in [
            "ana@example.com\r\nBcc: victim@example.com",
            "ana@example.com\nBcc: victim@example.com",
            "ana@example.com, victim@example.com",
            "Ana <ana@example.com>",
            "\"a b\"@example.com",
            "user@[192.0.2.1]",
            "ana@exa mple.com",
            "ana\u{0}@example.com",
        ] {
            assert!(email(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn malformed_addresses_say_why() {
        assert_eq!(email("x"), Err("must contain exactly one @"));
        assert_eq!(email("a@b@example.com"), Err("must contain exactly one @"));
        assert_eq!(
            email("ana@localhost"),
            Err("needs a domain with a dot after the @")
        );
        assert!(email("@example.com").is_err());
        assert!(email("ana@.example.com").is_err());
        assert!(email("ana@-x.example.com").is_err());
        assert!(email("a..b@example.com").is_err());
        assert!(email(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn phones_are_normalised_to_e164() {
        assert_eq!(phone("+33 6 12 34 56 78"), Ok("+33612345678".into()));
        assert_eq!(phone("+1 (555) 010-0199"), Ok("+15550100199".into()));
        assert_eq!(phone("0044 7700 900005"), Ok("+447700900005".into()));
        assert_eq!(phone("+33612345678"), Ok("+33612345678".into()));
    }

    #[test]
    fn hostile_malformed_phones_are_refused() {
        for bad in [
            "06 12 34 56 78",
            "+33 6 12 34 56 78\r\nX: y",
            "+33abc",
            "+0123456789",
            "+1234567",
            "+1234567890123456",
            "",
        ] {
            assert!(phone(bad).is_err(), "{bad:?} accepted");
        }
    }
}
