//! Resources kept as numbered versions (the care plan, the clinical
//! context): `If-Match` in, `ETag` out, 201 for the first version.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;

use crate::error::ApiError;

/// Reads `If-Match: "<version>"`; a malformed one is 400.
pub fn if_match(req: &HttpRequest) -> Result<Option<i32>, ApiError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    // Exactly what the document's pattern allows: `"3"`, `3`, `W/"3"`.
    value
        .to_str()
        .ok()
        .map(|v| v.trim())
        .map(|v| v.strip_prefix("W/").unwrap_or(v))
        .map(|v| v.strip_prefix('"').unwrap_or(v))
        .map(|v| v.strip_suffix('"').unwrap_or(v))
        .filter(|v| {
            (1..=9).contains(&v.len())
                && !v.starts_with('0')
                && v.bytes().all(|b| b.is_ascii_digit())
        })
        .and_then(|v| v.parse::<i32>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::malformed("If-Match", "expected the ETag of a version, e.g. \"3\"")
        })
}

/// Sets `ETag: "<version>"`.
pub fn with_etag(mut response: HttpResponse, version: i32) -> HttpResponse {
    if let Ok(value) = header::HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// 200 with the version as `ETag`.
pub fn current(view: &impl Serialize, version: i32) -> HttpResponse {
    with_etag(HttpResponse::Ok().json(view), version)
}

/// A version just written: 201 for the first, 200 after, `ETag` its number.
pub fn written(view: &impl Serialize, version: i32) -> HttpResponse {
    let response = if version == 1 {
        HttpResponse::Created().json(view)
    } else {
        HttpResponse::Ok().json(view)
    };
    with_etag(response, version)
}
