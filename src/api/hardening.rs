//! What every response and every request share, whatever the route: the
//! security headers (DESIGN.md §13) and the refusal of query parameters an
//! operation does not take.
//!
//! Both are middleware rather than per-handler code so that a new route
//! cannot forget them: a handler that answers early with an error, actix's
//! own 404/405 and the Swagger UI assets all pass through here.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};

use super::BASE;
use crate::error::ApiError;
use crate::state::AppState;

/// Swagger UI's page (`/docs/`): its scripts and style sheets are files
/// served beside it, so scripts stay `'self'`. Styles need `'unsafe-inline'`
/// because the UI (React) sets `style` attributes; images include `data:`
/// for the icons its style sheet inlines. `connect-src 'self'` lets "Try it
/// out" call this API and nothing else.
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Everything else is JSON for programs: nothing in it may load or run anything.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// One year, as browsers' preload lists expect.
pub const HSTS: &str = "max-age=31536000";

/// Adds the security headers to every response. `Cache-Control: no-store`
/// goes on every API response, the FHIR façade's included: nearly all carry patient or account data,
/// and a rule with exceptions is one a new route gets wrong. The docs'
/// static assets stay cacheable.
pub async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let https = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|state| state.settings.server.public_url.starts_with("https://"));
    // Which family of paths, decided before the request moves on (no copy of the path).
    let path = req.path();
    let docs = under(path, super::openapi::DOCS_PATH);
    let csp = if docs {
        DOCS_CSP
    } else if super::web_client::is_web_path(path) {
        super::web_client::WEB_CSP
    } else {
        API_CSP
    };
    let no_store = under(path, BASE) || under(path, super::fhir::FHIR_BASE);
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    let mut set = |name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "no-referrer");
    if https {
        set(header::STRICT_TRANSPORT_SECURITY, HSTS);
    }
    set(header::CONTENT_SECURITY_POLICY, csp);
    set(header::X_FRAME_OPTIONS, "DENY");
    if no_store {
        set(header::CACHE_CONTROL, "no-store");
    }
    Ok(res)
}

/// `path` is `base` or below it (`base/…`), without building `base/`.
fn under(path: &str, base: &str) -> bool {
    path.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Refuses, with 400 naming it, a query parameter that the operation does
/// not document: a misspelt filter (`?statu=sent`) or pagination parameter
/// would otherwise be ignored silently, widening a list or looping a client
/// on its first page. The accepted names are those of the OpenAPI document,
/// so the document and this check cannot disagree. Unknown routes and
/// methods pass through to the router's own 404/405.
pub async fn known_query_parameters(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if let Some(error) = unknown_parameter(&req) {
        let response = error.error_response();
        return Ok(req.into_response(response).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

fn unknown_parameter(req: &ServiceRequest) -> Option<ApiError> {
    let query = req.query_string();
    if query.is_empty() {
        return None;
    }
    let pattern = req.match_pattern()?;
    let method = method_name(req.method())?;
    let accepted = super::openapi::query_parameters(method, &pattern)?;
    form_urlencoded::parse(query.as_bytes())
        .map(|(name, _)| name)
        .find(|name| !accepted.contains(&name.as_ref()))
        .map(|name| {
            let message = if accepted.is_empty() {
                "unknown query parameter: this operation takes none".to_owned()
            } else {
                format!(
                    "unknown query parameter: this operation takes {}",
                    accepted.join(", ")
                )
            };
            ApiError::malformed(name.into_owned(), message)
        })
}

/// The document's (lower-case) name of a method; `None` for one it cannot have.
fn method_name(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::GET => "get",
        Method::PUT => "put",
        Method::POST => "post",
        Method::DELETE => "delete",
        Method::OPTIONS => "options",
        Method::HEAD => "head",
        Method::PATCH => "patch",
        Method::TRACE => "trace",
        _ => return None,
    })
}
