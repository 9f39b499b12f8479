//! The caller's TOTP second factor: enrol, confirm, remove.
//!
//! Every code checked here counts against the same limits as a password
//! (`auth::throttle`, per account and address): a stolen access token must
//! not become an unthrottled oracle for the six digits.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::authn::EnrollingUser;
use super::extract::Json;
use super::scope::RequestInfo;
use crate::audit::{self, Outcome};
use crate::auth::AuthUser;
use crate::auth::mfa;
use crate::auth::session;
use crate::auth::throttle::{self, LoginKey};
use crate::db::models::User;
use crate::domain::access::Basis;
use crate::error::{ApiError, Problem};
use crate::state::AppState;

/// A new secret to load into an authenticator app.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnrolment {
    /// The shared secret, base32 (RFC 4648, no padding).
    pub secret: String,
    /// `otpauth://totp/…` for a QR code (SHA-1, 6 digits, 30 s).
    pub otpauth_uri: String,
}

/// A code from the authenticator (or, to remove the factor, a recovery code).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCode {
    #[schema(max_length = 64)]
    pub code: String,
}

/// The recovery codes, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryCodes {
    /// Ten single-use codes; each may stand in for a TOTP code once.
    pub recovery_codes: Vec<String>,
}

fn record(
    info: &RequestInfo,
    caller: &AuthUser,
    detail: &str,
    outcome: Outcome,
) -> audit::AuditRecord {
    info.record(
        caller,
        "mfa_totp",
        Some(detail),
        None,
        Some(Basis::OwnAccount),
        outcome,
    )
}

async fn load_user(state: &AppState, id: String) -> Result<User, ApiError> {
    state
        .db
        .read(move |conn| User::find(conn, &id)?.ok_or(ApiError::Unauthorized("no such account")))
        .await
}

fn check_code_length(code: &str) -> Result<(), ApiError> {
    if code.chars().count() > mfa::MAX_CODE_LEN {
        return Err(ApiError::invalid(
            "code",
            format!("at most {} characters", mfa::MAX_CODE_LEN),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/me/mfa/totp", tag = "accounts",
    responses(
        (status = 201, description = "A new secret; the factor is live once confirmed", body = TotpEnrolment),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A confirmed factor exists: remove it first", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Starts enrolling a TOTP second factor (also with an enrol-only token).
pub async fn begin_totp(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: EnrollingUser,
) -> Result<HttpResponse, ApiError> {
    let info = RequestInfo::of(&req);
    let user = load_user(&state, caller.user.id.clone()).await?;
    let secret = mfa::new_secret();
    let otpauth_uri = mfa::otpauth_uri(&secret, &user.email)?;
    let now = state.clock.now_naive();
    let stored = secret.clone();
    state
        .db
        .write(move |conn| {
            mfa::begin(conn, &user.id, &stored, now)?;
            audit::append(
                conn,
                &[record(&info, &caller.user, "begin", Outcome::Allowed)],
                now,
            )
        })
        .await?;
    Ok(HttpResponse::Created().json(TotpEnrolment {
        secret,
        otpauth_uri,
    }))
}

/// Counts one code attempt before it is checked; returns its reservation.
async fn reserve(
    state: &AppState,
    req: &HttpRequest,
    user: &User,
) -> Result<(LoginKey, String), ApiError> {
    let key = LoginKey::new(&user.email, state.client_addr(req));
    let now = state.clock.now_naive();
    let settings = state.settings.auth.clone();
    let (k, id) = (key.clone(), user.id.clone());
    let attempt = state
        .db
        .write(move |conn| throttle::reserve(conn, &settings, &k, Some(&id), now))
        .await?;
    Ok((key, attempt))
}

#[utoipa::path(post, path = "/api/v1/me/mfa/totp/confirm", tag = "accounts",
    request_body = TotpCode,
    responses(
        (status = 200, description = "The factor is live: password sign-ins now need a code. An enrol-only session becomes a full one", body = RecoveryCodes),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No enrolment to confirm", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Wrong or already used code", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong codes or passwords; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Confirms the enrolment with a first code; returns ten recovery codes.
pub async fn confirm_totp(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: EnrollingUser,
    Json(body): Json<TotpCode>,
) -> Result<web::Json<RecoveryCodes>, ApiError> {
    check_code_length(&body.code)?;
    let info = RequestInfo::of(&req);
    let user = load_user(&state, caller.user.id.clone()).await?;
    let (key, attempt) = reserve(&state, &req, &user).await?;
    let now = state.clock.now_naive();
    let sid = caller.sid.clone();
    let codes = state
        .db
        .write(
            move |conn| match mfa::confirm(conn, &user.id, &body.code, now)? {
                Some(codes) => {
                    throttle::succeeded(conn, &key, &attempt)?;
                    session::lift_enrol_only(conn, &sid)?;
                    audit::append(
                        conn,
                        &[record(&info, &caller.user, "confirm", Outcome::Allowed)],
                        now,
                    )?;
                    Ok(Ok(codes))
                }
                None => {
                    audit::append(
                        conn,
                        &[record(
                            &info,
                            &caller.user,
                            "confirm:wrong_code",
                            Outcome::Denied,
                        )],
                        now,
                    )?;
                    Ok(Err(ApiError::invalid("code", "wrong or already used code")))
                }
            },
        )
        .await??;
    // Committed: the session's limit must not outlive this request in the cache.
    state.users.forget_session(&caller.sid);
    Ok(web::Json(RecoveryCodes {
        recovery_codes: codes,
    }))
}

#[utoipa::path(delete, path = "/api/v1/me/mfa/totp", tag = "accounts",
    request_body = TotpCode,
    responses(
        (status = 204, description = "Removed, with its recovery codes"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No second factor enrolled", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Wrong or already used code", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong codes or passwords; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Removes the caller's second factor, proven by a current or recovery code.
pub async fn remove_totp(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: AuthUser,
    Json(body): Json<TotpCode>,
) -> Result<HttpResponse, ApiError> {
    check_code_length(&body.code)?;
    let info = RequestInfo::of(&req);
    let user = load_user(&state, caller.id.clone()).await?;
    {
        let id = user.id.clone();
        if !state
            .db
            .read(move |conn| Ok(mfa::enrolled(conn, &id)?))
            .await?
        {
            return Err(ApiError::NotFound("no second factor is enrolled".into()));
        }
    }
    let (key, attempt) = reserve(&state, &req, &user).await?;
    let now = state.clock.now_naive();
    state
        .db
        .write(move |conn| {
            if !mfa::verify(conn, &user.id, &body.code, now)? {
                audit::append(
                    conn,
                    &[record(&info, &caller, "remove:wrong_code", Outcome::Denied)],
                    now,
                )?;
                return Ok(Err(ApiError::invalid("code", "wrong or already used code")));
            }
            throttle::succeeded(conn, &key, &attempt)?;
            mfa::remove(conn, &user.id)?;
            audit::append(
                conn,
                &[record(&info, &caller, "remove", Outcome::Allowed)],
                now,
            )?;
            Ok(Ok(()))
        })
        .await??;
    Ok(HttpResponse::NoContent().finish())
}
