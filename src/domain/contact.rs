//! Email addresses and phone numbers as they are accepted from users
//! (names and other text: [`super::text`]).

/// Normalises an email address (trimmed, lower-cased) and checks its form.
pub fn parse_email(text: &str) -> Result<String, &'static str> {
    let email = text.trim().to_lowercase();
    if email.len() > 254 {
        return Err("an email address has at most 254 characters");
    }
    match email.parse::<lettre::Address>() {
        Ok(address) if address.domain().contains('.') => Ok(email),
        _ => Err("not a valid email address"),
    }
}

/// Checks a phone number: digits with optional `+`, spaces, dots, dashes, brackets.
pub fn parse_phone(text: &str) -> Result<String, &'static str> {
    // The limit counts what was sent, as the OpenAPI `maxLength` does.
    if text.chars().count() > 30 {
        return Err("a phone number has 6 to 20 digits and only + . - ( ) or spaces");
    }
    let phone = text.trim();
    let digits = phone.bytes().filter(u8::is_ascii_digit).count();
    let allowed = phone
        .chars()
        .all(|c| c.is_ascii_digit() || " +.-()".contains(c));
    if !allowed || !(6..=20).contains(&digits) || phone.len() > 30 {
        return Err("a phone number has 6 to 20 digits and only + . - ( ) or spaces");
    }
    Ok(phone.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            parse_email("  Dr.Who@Example.ORG ").unwrap(),
            "dr.who@example.org"
        );
        assert!(parse_email("nobody").is_err());
        assert!(parse_email("a@b").is_err());
        assert!(parse_email("a b@c.org").is_err());
    }

    #[test]
    fn phones() {
        assert!(parse_phone("+33 2 99 00 00 00").is_ok());
        assert!(parse_phone("02.99.00.00.00").is_ok());
        assert!(parse_phone("call me").is_err());
        assert!(parse_phone("12").is_err());
    }
}
