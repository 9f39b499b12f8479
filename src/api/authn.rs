//! The authenticated caller, extracted from `Authorization: Bearer`: a
//! valid token whose session is live and whose user is active with the
//! token's version (see `auth::cache` for how long an answer is trusted).

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use crate::auth::AuthUser;
use crate::auth::cache::CachedUser;
use crate::auth::session;
use crate::domain::role::Role;
use crate::error::ApiError;
use crate::state::AppState;

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// The caller of a request: a valid token of a live session whose user is
/// active with the token's version. A session limited to enrolling a second
/// factor passes only when `enrol_only_ok`.
async fn authenticate(
    state: Option<web::Data<AppState>>,
    token: Option<String>,
    enrol_only_ok: bool,
) -> Result<AuthUser, ApiError> {
    let state = state.ok_or_else(|| ApiError::internal(anyhow::anyhow!("no app state")))?;
    let token = token.ok_or(ApiError::Unauthorized("a bearer access token is required"))?;
    let claims = state.jwt.verify(&token)?;
    // A cached answer only counts when it lets the token through; a
    // mismatch is checked against the database (a newer token issued
    // elsewhere, or a revoked one, which then fails there).
    let lets_through =
        |u: &CachedUser| u.user_id == claims.sub && u.active && u.token_version == claims.ver;
    let cached = state.users.get(&claims.sid).filter(lets_through);
    let user = match cached {
        Some(user) => Some(user),
        None if claims.sid.is_empty() => None,
        None => {
            let epoch = state.users.epoch();
            let sid = claims.sid.clone();
            let found = state
                .db
                .read(move |conn| Ok(session::lookup(conn, &sid)?))
                .await?;
            match found {
                // A revoked session is never cached: its tokens fail here.
                Some(s) if s.revoked_at.is_none() => {
                    let role = Role::parse(&s.role).ok_or_else(|| {
                        ApiError::internal(anyhow::anyhow!("unknown stored role"))
                    })?;
                    let user = CachedUser {
                        user_id: s.user_id,
                        token_version: s.token_version,
                        active: s.active,
                        role,
                        organization_id: s.organization_id,
                        enrol_only: s.mfa_enrol_only,
                    };
                    state.users.put(&claims.sid, user.clone(), epoch);
                    Some(user)
                }
                _ => None,
            }
        }
    };
    let user = user
        .filter(lets_through)
        .ok_or(ApiError::Unauthorized("the access token has been revoked"))?;
    if user.enrol_only && !enrol_only_ok {
        return Err(ApiError::Forbidden(
            "your role needs a second factor: this sign-in may only enrol one \
             (POST /api/v1/me/mfa/totp, then /confirm)"
                .into(),
        ));
    }
    Ok(AuthUser {
        id: claims.sub,
        role: user.role,
        organization_id: user.organization_id,
    })
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(authenticate(state, bearer(req), false))
    }
}

/// A caller who may also hold a session limited to enrolling a second
/// factor (the `/me/mfa/totp` routes), with the session's id.
pub struct EnrollingUser {
    pub user: AuthUser,
    /// The session of the access token (its limit is lifted on enrolment).
    pub sid: String,
}

impl FromRequest for EnrollingUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer(req);
        Box::pin(async move {
            let sid = match (&state, &token) {
                (Some(state), Some(token)) => state.jwt.verify(token)?.sid,
                _ => String::new(),
            };
            let user = authenticate(state, token, true).await?;
            Ok(Self { user, sid })
        })
    }
}
