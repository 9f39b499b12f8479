//! Request extractors whose errors are problem+json naming the field.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};

/// A JSON body. Syntax errors are 400; a wrong or missing field is 422 naming it.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = body.await.map_err(|err| {
                if err.as_response_error().status_code().as_u16() == 413 {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::malformed("body", "the request body could not be read")
                }
            })?;
            parse_json(&bytes).map(Json)
        })
    }
}

/// Parses a JSON document into `T`, naming the offending field on error.
///
/// Every request body of the API is an object: serde would also build a
/// struct from an array of its fields in order (`[null, null]` for one whose
/// fields are all optional), which no client means, so anything else is
/// refused here.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(ApiError::malformed("body", "a JSON body is required")),
        Some(b'{') => {}
        Some(_) => return Err(ApiError::malformed("body", "a JSON object is required")),
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = strip_position(&inner.to_string());
        match inner.classify() {
            serde_json::error::Category::Data => {
                ApiError::Validation(vec![field_error(&path, &message)])
            }
            _ => ApiError::malformed("body", format!("not valid JSON: {message}")),
        }
    })?;
    de.end()
        .map_err(|_| ApiError::malformed("body", "trailing characters after the JSON value"))?;
    Ok(value)
}

/// Query parameters. A parameter of the wrong form is 400 naming it.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let pairs = form_urlencoded::parse(req.query_string().as_bytes());
        let de = serde_urlencoded::Deserializer::new(pairs);
        let result = serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|err| {
                let path = err.path().to_string();
                let message = err.into_inner().to_string();
                let e = field_error(&path, &message);
                ApiError::malformed(e.field, e.message)
            });
        std::future::ready(result)
    }
}

/// The years a time in a query may name. Wider values parse (chrono takes
/// years from -262143 to 262142) but overflow date arithmetic and the
/// databases' own ranges; no one asks about them.
pub const QUERY_YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// `deserialize_with` for an optional RFC 3339 time in a query: refuses
/// years outside [`QUERY_YEARS`], so that handlers can do arithmetic on it
/// and bind it to either database without overflow. Use with `#[serde(default)]`.
pub fn query_time<'de, D>(de: D) -> Result<Option<chrono::DateTime<chrono::Utc>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use chrono::Datelike;
    let value: Option<chrono::DateTime<chrono::Utc>> = serde::Deserialize::deserialize(de)?;
    match value {
        Some(t) if !QUERY_YEARS.contains(&t.year()) => Err(serde::de::Error::custom(format!(
            "the year must be between {} and {}",
            QUERY_YEARS.start(),
            QUERY_YEARS.end()
        ))),
        other => Ok(other),
    }
}

/// Parses an id from the path; a malformed one is 400 naming the parameter.
pub fn path_id(raw: &str, name: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(raw)
        .map(|id| id.to_string())
        .map_err(|_| ApiError::malformed(name, "not a valid id (UUID)"))
}

/// Makes a field error from a serde path and message; for a missing field
/// the path is the parent, so the field's name is appended.
fn field_error(path: &str, message: &str) -> FieldError {
    let parent = if path == "." { "" } else { path };
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    let field = match named {
        Some(name) if parent.is_empty() => name.to_owned(),
        Some(name) if parent == name || parent.ends_with(&format!(".{name}")) => parent.to_owned(),
        Some(name) => format!("{parent}.{name}"),
        None if parent.is_empty() => "body".to_owned(),
        None => parent.to_owned(),
    };
    FieldError::new(field, message)
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Line {
        dose_mg: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Plan {
        name: String,
        lines: Vec<Line>,
    }

    fn field_of(body: &str) -> String {
        match parse_json::<Plan>(body.as_bytes()) {
            Err(ApiError::Validation(errors)) => errors[0].field.clone(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn names_the_field() {
        assert_eq!(field_of(r#"{"lines": []}"#), "name");
        assert_eq!(field_of(r#"{"name": 3, "lines": []}"#), "name");
        assert_eq!(
            field_of(r#"{"name": "x", "lines": [{"dose_mg": 1}, {"dose_mg": -1}]}"#),
            "lines[1].dose_mg"
        );
        assert_eq!(
            field_of(r#"{"name": "x", "lines": [{"dose": 1}]}"#),
            "lines[0].dose"
        );
        assert_eq!(
            field_of(r#"{"name": "x", "lines": [], "extra": 1}"#),
            "extra"
        );
    }

    #[test]
    fn syntax_is_malformed() {
        assert!(matches!(
            parse_json::<Plan>(b"{"),
            Err(ApiError::BadRequest { .. })
        ));
        assert!(matches!(
            parse_json::<Plan>(b""),
            Err(ApiError::BadRequest { .. })
        ));
        assert!(matches!(
            parse_json::<Plan>(br#"{"name":"x","lines":[]} junk"#),
            Err(ApiError::BadRequest { .. })
        ));
        // serde would build the struct from an array of its fields.
        assert!(matches!(
            parse_json::<Plan>(br#" ["x", []]"#),
            Err(ApiError::BadRequest { .. })
        ));
    }
}
