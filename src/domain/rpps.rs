//! RPPS numbers: the French national identifier of health professionals.

/// An RPPS number: 11 digits whose last is a Luhn check digit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rpps(String);

impl Rpps {
    /// Parses an RPPS number, checking its length and Luhn key.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let text = text.trim();
        if text.len() != 11 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err("an RPPS number has exactly 11 digits");
        }
        if !luhn_valid(text) {
            return Err("the RPPS check digit (Luhn) does not match");
        }
        Ok(Self(text.to_owned()))
    }

    /// The 11 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The Luhn checksum over a string of ASCII digits.
pub fn luhn_valid(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Appends the Luhn digit that makes `body` valid.
    fn with_key(body: &str) -> String {
        (0..10)
            .map(|k| format!("{body}{k}"))
            .find(|s| luhn_valid(s))
            .unwrap()
    }

    #[test]
    fn known_numbers() {
        // The textbook Luhn example happens to have 11 digits.
        assert!(Rpps::parse("79927398713").is_ok());
        assert!(Rpps::parse("79927398710").is_err());
        let valid = with_key("1000345678");
        assert!(Rpps::parse(&valid).is_ok());
        assert!(Rpps::parse("1234").is_err());
        assert!(Rpps::parse("1000345678a").is_err());
    }

    proptest! {
        #[test]
        fn one_changed_digit_is_caught(body in "[0-9]{10}", pos in 0usize..11, delta in 1u8..10) {
            let valid = with_key(&body);
            prop_assert!(Rpps::parse(&valid).is_ok());
            let mut bytes = valid.into_bytes();
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(Rpps::parse(&changed).is_err());
        }
    }
}
