//! The INS (Identifiant National de Santé): a 13-character NIR and a 2-digit key.

use std::fmt;

/// A valid INS: 13-character NIR (digits, with `2A`/`2B` for Corsica in
/// the department) followed by its key, 97 − (NIR mod 97).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ins(String);

/// Why a text is not an INS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsError {
    Length,
    Characters,
    Key,
}

impl fmt::Display for InsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InsError::Length => "an INS has 15 characters: the 13-character NIR and a 2-digit key",
            InsError::Characters => {
                "an INS has only digits (with 2A or 2B for a Corsican department)"
            }
            InsError::Key => "the INS key does not match its NIR",
        })
    }
}

/// The NIR as a number, Corsica's 2A and 2B counted as 19 and 18.
fn nir_value(nir: &str) -> Option<u64> {
    let numeric = match &nir[5..7] {
        "2A" | "2a" => format!("{}19{}", &nir[..5], &nir[7..]),
        "2B" | "2b" => format!("{}18{}", &nir[..5], &nir[7..]),
        _ => nir.to_owned(),
    };
    if numeric.bytes().all(|b| b.is_ascii_digit()) {
        numeric.parse().ok()
    } else {
        None
    }
}

/// The key of a 13-character NIR.
pub fn key_of(nir: &str) -> Option<u8> {
    if nir.len() != 13 || !nir.is_ascii() {
        return None;
    }
    let value = nir_value(nir)?;
    u8::try_from(97 - value % 97).ok()
}

impl Ins {
    /// Parses an INS; spaces are ignored and Corsican letters upper-cased.
    pub fn parse(text: &str) -> Result<Self, InsError> {
        let compact: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_uppercase();
        if compact.chars().count() != 15 {
            return Err(InsError::Length);
        }
        if !compact.is_ascii() {
            return Err(InsError::Characters);
        }
        let (nir, key) = compact.split_at(13);
        let expected = key_of(nir).ok_or(InsError::Characters)?;
        if !key.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InsError::Characters);
        }
        if key.parse::<u8>().ok() != Some(expected) {
            return Err(InsError::Key);
        }
        Ok(Self(compact))
    }

    /// The 15 characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with_key(nir: &str) -> String {
        format!("{nir}{:02}", key_of(nir).unwrap())
    }

    #[test]
    fn known_values() {
        // 1 84 12 76 451 089 : key 46 (97 - 1841276451089 mod 97).
        assert_eq!(key_of("1841276451089"), Some(46));
        assert!(Ins::parse("184127645108946").is_ok());
        assert!(Ins::parse("1 84 12 76 451 089 46").is_ok());
        assert_eq!(Ins::parse("184127645108947"), Err(InsError::Key));
        assert_eq!(Ins::parse("18412764510894"), Err(InsError::Length));
        assert_eq!(Ins::parse("18412764510894X"), Err(InsError::Characters));
    }

    #[test]
    fn corsica_counts_as_19_and_18() {
        let a = "184122A451089";
        let b = "184122B451089";
        assert_eq!(key_of(a), key_of("1841219451089"));
        assert_eq!(key_of(b), key_of("1841218451089"));
        assert!(Ins::parse(&with_key(a)).is_ok());
        assert!(Ins::parse(&with_key(b).to_lowercase()).is_ok());
        assert_eq!(Ins::parse("184122C45108900"), Err(InsError::Characters));
    }

    proptest! {
        #[test]
        fn valid_keys_are_accepted(nir in "[12][0-9]{12}") {
            prop_assert!(Ins::parse(&with_key(&nir)).is_ok());
        }

        #[test]
        fn any_single_digit_change_is_rejected(nir in "[12][0-9]{12}", pos in 0usize..15, delta in 1u8..10) {
            let mut bytes = with_key(&nir).into_bytes();
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(Ins::parse(&changed).is_err(), "{} accepted", changed);
        }
    }
}
