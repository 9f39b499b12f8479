//! One API error type, rendered as RFC 9457 `application/problem+json`.

use actix_web::body::{BoxBody, EitherBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid field in a request.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `email` or `analgesics[1].end`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time; never carries stored patient data.
    pub detail: String,
    /// The invalid fields, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The safety-rule warnings, when rules blocked the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub warnings: Option<serde_json::Value>,
}

/// Everything a handler can answer with besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request is malformed: {detail}")]
    BadRequest {
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    #[error("blocked by safety rules")]
    Blocked(serde_json::Value),
    #[error("authentication required: {0}")]
    Unauthorized(&'static str),
    /// A 401 that names the field to supply (a second factor's `otp`).
    #[error("authentication required: {detail}")]
    UnauthorizedField {
        field: &'static str,
        detail: &'static str,
    },
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {detail}")]
    Conflict {
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("gone: {0}")]
    Gone(String),
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("precondition required: {0}")]
    PreconditionRequired(String),
    #[error("too many requests")]
    TooManyRequests { retry_after_s: u64 },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Every password-hashing slot is taken (a 503 with `Retry-After`).
    #[error("busy")]
    Busy { retry_after_s: u64 },
    /// The database writer's queue is full (a 503 with `Retry-After`):
    /// nothing of the request was done.
    #[error("overloaded")]
    Overloaded { retry_after_s: u64 },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
    /// Not a failure: the stored answer to an `Idempotency-Key` seen before.
    /// An error so that the transaction that found it rolls back.
    #[error("replayed")]
    Replay { status: u16, body: String },
}

impl ApiError {
    /// A 500 whose cause goes to the log, not to the client.
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    /// A 422 for one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// A 400 for one malformed part of the request.
    pub fn malformed(field: impl Into<String>, message: impl Into<String>) -> Self {
        let error = FieldError::new(field, message);
        Self::BadRequest {
            detail: format!("`{}`: {}", error.field, error.message),
            errors: vec![error],
        }
    }

    /// A 409 naming the field in conflict.
    pub fn conflict(field: impl Into<String>, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self::Conflict {
            errors: vec![FieldError::new(field, detail.clone())],
            detail,
        }
    }

    fn slug_and_title(&self) -> (&'static str, &'static str) {
        match self {
            Self::BadRequest { .. } => ("malformed-request", "Malformed request"),
            Self::Validation(_) => ("validation", "Invalid input"),
            Self::Blocked(_) => ("blocked-by-safety-rules", "Blocked by safety rules"),
            Self::Unauthorized(_) | Self::UnauthorizedField { .. } => {
                ("unauthorized", "Authentication required")
            }
            Self::Forbidden(_) => ("forbidden", "Not allowed"),
            Self::NotFound(_) => ("not-found", "Not found"),
            Self::Conflict { .. } => ("conflict", "Conflict"),
            Self::Gone(_) => ("gone", "Gone"),
            Self::PreconditionFailed(_) => ("stale", "Precondition failed"),
            Self::PayloadTooLarge => ("payload-too-large", "Payload too large"),
            Self::PreconditionRequired(_) => ("precondition-required", "Precondition required"),
            Self::TooManyRequests { .. } => ("throttled", "Too many requests"),
            Self::Unavailable(_) => ("unavailable", "Service unavailable"),
            Self::Busy { .. } => ("busy", "Service busy"),
            Self::Overloaded { .. } => ("overloaded", "Service overloaded"),
            Self::Internal(_) | Self::Replay { .. } => ("internal", "Internal error"),
        }
    }

    fn problem(&self) -> Problem {
        let (slug, title) = self.slug_and_title();
        let (detail, errors) = match self {
            Self::BadRequest { detail, errors } | Self::Conflict { detail, errors } => {
                (detail.clone(), errors.clone())
            }
            Self::Validation(errors) => {
                let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
                (
                    format!("invalid field(s): {}", fields.join(", ")),
                    errors.clone(),
                )
            }
            Self::Blocked(_) => (
                "blocking safety warnings must be acknowledged with a justification (acknowledged_warnings)".to_owned(),
                vec![FieldError::new("acknowledged_warnings", "blocking warnings are not acknowledged")],
            ),
            Self::Unauthorized(why) => ((*why).to_owned(), vec![]),
            Self::UnauthorizedField { field, detail } => (
                (*detail).to_owned(),
                vec![FieldError::new(*field, *detail)],
            ),
            Self::Forbidden(d)
            | Self::NotFound(d)
            | Self::Gone(d)
            | Self::PreconditionFailed(d)
            | Self::PreconditionRequired(d)
            | Self::Unavailable(d) => (d.clone(), vec![]),
            Self::PayloadTooLarge => ("the request body is too large".to_owned(), vec![]),
            Self::TooManyRequests { retry_after_s } => (
                format!("too many attempts; retry in {retry_after_s} s"),
                vec![],
            ),
            Self::Busy { retry_after_s } => (
                format!("too many sign-ins at once; retry in {retry_after_s} s"),
                vec![],
            ),
            Self::Overloaded { retry_after_s } => (
                format!(
                    "too many writes are waiting for the database; nothing was done, retry in {retry_after_s} s"
                ),
                vec![],
            ),
            Self::Internal(_) | Self::Replay { .. } => (
                "an internal error occurred; it has been logged".to_owned(),
                vec![],
            ),
        };
        Problem {
            kind: format!("/problems/{slug}"),
            title: title.to_owned(),
            status: self.status_code().as_u16(),
            detail,
            errors,
            warnings: match self {
                Self::Blocked(warnings) => Some(warnings.clone()),
                _ => None,
            },
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(err: diesel::result::Error) -> Self {
        Self::internal(err)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Validation(_) | Self::Blocked(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized(_) | Self::UnauthorizedField { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Gone(_) => StatusCode::GONE,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::PreconditionRequired(_) => StatusCode::PRECONDITION_REQUIRED,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::Busy { .. } | Self::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Replay { status, .. } => StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Replay { status, body } = self {
            return respond(*status, body.clone(), true);
        }
        if let Self::Internal(cause) = self {
            // The chain may name tables or constraints, never request bodies.
            tracing::error!(error = format!("{cause:#}"), "internal error");
        }
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        match self {
            Self::Unauthorized(_) | Self::UnauthorizedField { .. } => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            Self::TooManyRequests { retry_after_s }
            | Self::Busy { retry_after_s }
            | Self::Overloaded { retry_after_s } => {
                response.insert_header((header::RETRY_AFTER, retry_after_s.to_string()));
            }
            _ => {}
        }
        response.body(serde_json::to_string(&self.problem()).unwrap_or_default())
    }
}

/// Renders error responses that did not come from [`ApiError`] (unknown
/// route, wrong method, actix's own extractor errors) as problem+json.
pub fn render_foreign_error<B>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = res
        .response()
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::NotFound("no such resource".into()),
        StatusCode::METHOD_NOT_ALLOWED => {
            return Ok(ErrorHandlerResponse::Response(replace_body(
                res,
                status,
                "Method not allowed",
                "method-not-allowed",
                "this resource does not accept that method",
            )));
        }
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::BAD_REQUEST => ApiError::BadRequest {
            detail: "the request is malformed".into(),
            errors: vec![],
        },
        s if s.is_server_error() => ApiError::internal(anyhow::anyhow!("{s} from the framework")),
        s => {
            let title = s.canonical_reason().unwrap_or("Error");
            return Ok(ErrorHandlerResponse::Response(replace_body(
                res,
                s,
                title,
                "http-error",
                title,
            )));
        }
    };
    let (req, _) = res.into_parts();
    let response = error.error_response().map_into_boxed_body();
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, response).map_into_right_body(),
    ))
}

fn replace_body<B>(
    res: ServiceResponse<B>,
    status: StatusCode,
    title: &str,
    slug: &str,
    detail: &str,
) -> ServiceResponse<EitherBody<B, BoxBody>> {
    let problem = Problem {
        kind: format!("/problems/{slug}"),
        title: title.to_owned(),
        status: status.as_u16(),
        detail: detail.to_owned(),
        errors: vec![],
        warnings: None,
    };
    let (req, old) = res.into_parts();
    let mut response = HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)))
        .body(serde_json::to_string(&problem).unwrap_or_default());
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    ServiceResponse::new(req, response).map_into_right_body()
}

/// An answer given (or given again) from its stored status and JSON body.
pub fn respond(status: u16, body: String, replayed: bool) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    response.content_type("application/json");
    if replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    response.body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_problem_names_fields() {
        let err = ApiError::Validation(vec![FieldError::new("email", "not an address")]);
        let problem = err.problem();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.errors[0].field, "email");
        assert!(problem.detail.contains("email"));
    }

    #[test]
    fn internal_problem_hides_cause() {
        let err = ApiError::internal(anyhow::anyhow!("secret table detail"));
        let problem = err.problem();
        assert_eq!(problem.status, 500);
        assert!(!problem.detail.contains("secret"));
    }
}
