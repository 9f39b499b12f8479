//! JSON number helpers for request bodies.
//!
//! JSON has one number type: `13.0` is an integer for JSON Schema (and so for
//! the OpenAPI document), while serde refuses it for `i32` or `u8`. These
//! `deserialize_with` helpers accept any integral number and refuse the rest.

use serde::de::Error;
use serde::{Deserialize, Deserializer};

fn convert<T: TryFrom<i64>, E: Error>(n: &serde_json::Number) -> Result<T, E> {
    let whole = n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
            .map(|f| f as i64)
    });
    let whole = whole.ok_or_else(|| E::custom("expected a whole number"))?;
    T::try_from(whole).map_err(|_| E::custom(format!("{whole} is out of range")))
}

/// An integer, also written `4.0`.
pub fn integer<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
    convert(&serde_json::Number::deserialize(d)?)
}

/// An optional integer, also written `4.0`; use with `#[serde(default)]`.
pub fn opt_integer<'de, D: Deserializer<'de>, T: TryFrom<i64>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Option::<serde_json::Number>::deserialize(d)?
        .as_ref()
        .map(convert)
        .transpose()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct S {
        #[serde(deserialize_with = "super::integer")]
        a: u8,
        #[serde(default, deserialize_with = "super::opt_integer")]
        b: Option<i32>,
    }

    #[test]
    fn integral_numbers_in_any_spelling() {
        let s: S = serde_json::from_str(r#"{"a": 4.0, "b": -3}"#).unwrap();
        assert_eq!((s.a, s.b), (4, Some(-3)));
        let s: S = serde_json::from_str(r#"{"a": 4, "b": null}"#).unwrap();
        assert_eq!(s.b, None);
        let s: S = serde_json::from_str(r#"{"a": 4}"#).unwrap();
        assert_eq!(s.b, None);
        assert!(serde_json::from_str::<S>(r#"{"a": 4.5}"#).is_err());
        assert!(serde_json::from_str::<S>(r#"{"a": 300}"#).is_err());
        assert!(serde_json::from_str::<S>(r#"{"a": "4"}"#).is_err());
    }
}
