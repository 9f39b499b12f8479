//! Sign-in for browsers: the refresh token in an `HttpOnly` cookie instead
//! of the response body, and the OpenID providers a sign-in page offers.
//!
//! A browser client keeps its access token in memory only; to survive a
//! reload it asks, with the header `X-Relais-Refresh: cookie`, that the
//! refresh token of a sign-in (`/auth/login`, `/auth/oidc/token`,
//! `/auth/invitations/accept`) or a refresh be set as the cookie
//! [`REFRESH_COOKIE`] — `HttpOnly` (no script reads it), `SameSite=Strict`,
//! `Path=/api/v1/auth` (sent nowhere else), `Secure` unless the server's
//! public URL is plain HTTP on loopback — and removed from the body.
//! `POST /auth/refresh` and `/auth/logout` with that header and no body
//! use the cookie; logout, and a refused refresh, clear it.
//!
//! The cookie is honoured only with the header: a cross-site form cannot
//! set a header, and a cross-site script cannot send one without a CORS
//! preflight this server never grants, so the header is the CSRF guard
//! (with `SameSite=Strict` behind it). Without the header nothing changes:
//! the endpoints, their sessions, rotation, reuse detection and audit rows
//! are the same code; this layer only moves the token between body and
//! cookie, which is why it is a middleware beside `auth` and not a second
//! copy of the sign-in.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{FromRequest, ResponseError, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::Query;
use super::{Page, PageQuery};
use crate::error::{ApiError, Problem};
use crate::state::AppState;

/// The cookie that carries a browser's refresh token.
pub const REFRESH_COOKIE: &str = "relais_refresh";
/// The header that asks for the cookie, and is required to use it.
pub const MODE_HEADER: &str = "x-relais-refresh";
/// Its only value.
pub const MODE_COOKIE: &str = "cookie";
/// The only path the cookie is sent to.
pub const COOKIE_PATH: &str = "/api/v1/auth";

/// Routes whose 200 answer is a token pair.
const ISSUING: &[&str] = &[
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/auth/oidc/token",
    "/api/v1/auth/invitations/accept",
];
const REFRESH: &str = "/api/v1/auth/refresh";
const LOGOUT: &str = "/api/v1/auth/logout";

/// Moves the refresh token between body and cookie for requests that ask
/// for it (see the module doc). Every other request passes untouched.
pub async fn refresh_cookie(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    // Every other request passes without a copy of its path or header.
    let concerned =
        req.method() == Method::POST && (ISSUING.contains(&req.path()) || req.path() == LOGOUT);
    let mode = req.headers().get(MODE_HEADER);
    if !concerned || mode.is_none() {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    if mode.is_some_and(|v| v.as_bytes() != MODE_COOKIE.as_bytes()) {
        // A mode this server does not know: refuse rather than guess.
        let res = ApiError::malformed(MODE_HEADER, format!("the only mode is `{MODE_COOKIE}`"))
            .error_response();
        return Ok(req.into_response(res));
    }
    let path = req.path().to_owned();
    let secure = secure_cookie(&req);
    if path == REFRESH || path == LOGOUT {
        let body = read_body(&mut req).await?;
        let body = if body.iter().all(u8::is_ascii_whitespace) {
            match cookie_value(&req) {
                Some(token) => serde_json::to_vec(&serde_json::json!({ "refresh_token": token }))
                    .map(web::Bytes::from)
                    .map_err(actix_web::error::ErrorInternalServerError)?,
                // Nothing to refresh or revoke: say so, and clear any trace.
                None if path == LOGOUT => {
                    let res = actix_web::HttpResponse::NoContent()
                        .insert_header((header::SET_COOKIE, clear_cookie(secure)))
                        .finish();
                    return Ok(req.into_response(res));
                }
                None => {
                    let mut res =
                        ApiError::Unauthorized("no session cookie: sign in again").error_response();
                    res.headers_mut().insert(
                        header::SET_COOKIE,
                        HeaderValue::from_str(&clear_cookie(secure))
                            .map_err(actix_web::error::ErrorInternalServerError)?,
                    );
                    return Ok(req.into_response(res));
                }
            }
        } else {
            body
        };
        req.set_payload(bytes_payload(body));
    }
    let ttl = req
        .app_data::<web::Data<AppState>>()
        .map_or(0, |s| s.settings.auth.refresh_token_ttl_s);
    let res = next.call(req).await?;
    let status = res.status();
    if status == StatusCode::OK && ISSUING.contains(&path.as_str()) {
        let (req, res) = res.into_parts();
        let (mut res, body) = res.into_parts();
        let bytes = actix_web::body::to_bytes(body)
            .await
            .map_err(|e| actix_web::error::ErrorInternalServerError(e.into().to_string()))?;
        let mut pair: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(actix_web::error::ErrorInternalServerError)?;
        let token = pair
            .as_object_mut()
            .and_then(|o| o.remove("refresh_token"))
            .and_then(|t| t.as_str().map(str::to_owned))
            .ok_or_else(|| actix_web::error::ErrorInternalServerError("no refresh token"))?;
        let cookie = set_cookie(&token, ttl, secure);
        res.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_str(&cookie).map_err(actix_web::error::ErrorInternalServerError)?,
        );
        res.headers_mut().remove(header::CONTENT_LENGTH);
        let body = serde_json::to_vec(&pair).map_err(actix_web::error::ErrorInternalServerError)?;
        return Ok(ServiceResponse::new(req, res.set_body(body)).map_into_boxed_body());
    }
    let ends = path == LOGOUT || (path == REFRESH && status == StatusCode::UNAUTHORIZED);
    let mut res = res.map_into_boxed_body();
    if ends {
        res.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_str(&clear_cookie(secure))
                .map_err(actix_web::error::ErrorInternalServerError)?,
        );
    }
    Ok(res)
}

/// Reads the body whole, within the server's body limit (an oversized one
/// is refused like anywhere else).
async fn read_body(req: &mut ServiceRequest) -> Result<web::Bytes, actix_web::Error> {
    let (http, payload) = req.parts_mut();
    web::Bytes::from_request(http, payload)
        .await
        .map_err(|_| ApiError::PayloadTooLarge.into())
}

fn bytes_payload(bytes: web::Bytes) -> actix_web::dev::Payload {
    actix_web::dev::Payload::from(bytes)
}

/// The refresh token the browser sent, if any.
fn cookie_value(req: &ServiceRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == REFRESH_COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty())
}

/// `Secure`, unless the server is reached over plain HTTP on loopback (a
/// developer's machine, the browser tests), where browsers would drop it.
fn secure_cookie(req: &ServiceRequest) -> bool {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return true;
    };
    let url = &state.settings.server.public_url;
    let Some(rest) = url.strip_prefix("http://") else {
        return true;
    };
    let host = rest.split('/').next().unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    !(host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()))
}

fn set_cookie(token: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{REFRESH_COOKIE}={token}; Path={COOKIE_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    )
}

fn clear_cookie(secure: bool) -> String {
    set_cookie("", 0, secure)
}

/// An OpenID provider a sign-in page may offer.
#[derive(Debug, Serialize, ToSchema)]
pub struct OidcProviderView {
    /// Its name in `/auth/oidc/{provider}/start`.
    pub name: String,
}

#[utoipa::path(get, path = "/api/v1/auth/oidc/providers", tag = "auth",
    params(PageQuery),
    responses(
        (status = 200, description = "The configured providers, by name (no secret, no address)", body = Page<OidcProviderView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ))]
/// Lists the OpenID providers configured for sign-in (public: a sign-in
/// page shows their buttons before anyone is signed in).
pub async fn list_oidc_providers(
    state: web::Data<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<web::Json<Page<OidcProviderView>>, ApiError> {
    let names: Vec<OidcProviderView> = state
        .settings
        .auth
        .oidc
        .providers
        .keys()
        .map(|name| OidcProviderView { name: name.clone() })
        .collect();
    Ok(web::Json(Page::of_list(names, &query, |p| p.name.clone())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_attributes() {
        let c = set_cookie("abc", 60, true);
        assert_eq!(
            c,
            "relais_refresh=abc; Path=/api/v1/auth; Max-Age=60; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(!set_cookie("abc", 60, false).contains("Secure"));
        assert!(clear_cookie(false).starts_with("relais_refresh=; "));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }
}
