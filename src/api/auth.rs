//! Sign-in, token refresh, sign-out and invitation acceptance.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::Json;
use super::users::UserView;
use crate::auth::password;
use crate::auth::session::{self, Rotation};
use crate::auth::tokens::hash_token;
use crate::config::AuthSettings;
use crate::db::DbConnection;
use crate::db::models::{Invitation, User, new_id};
use crate::db::schema::{invitations, login_failures, users};
use crate::error::{ApiError, Problem};
use crate::startup::AppState;

/// Email and password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

/// A refresh token to rotate or revoke.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// The invitation token from the email link, and the new password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvitation {
    pub token: String,
    #[schema(min_length = 12, max_length = 1024)]
    pub password: String,
}

/// A short-lived access token and the refresh token that renews it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Lifetime of the access token, in seconds.
    pub expires_in: u64,
    /// Single use: each refresh returns a new one.
    pub refresh_token: String,
    pub user: UserView,
}

impl TokenPair {
    pub(crate) fn new(issued: session::Issued, user: User) -> Self {
        Self {
            access_token: issued.access_token,
            token_type: "Bearer".into(),
            expires_in: issued.expires_in,
            refresh_token: issued.refresh_token,
            user: user.into(),
        }
    }
}

fn peer_ip(req: &HttpRequest) -> Option<std::net::IpAddr> {
    req.peer_addr().map(|a| a.ip())
}

/// 429 when `email` has failed too often within the window; checked before any hashing.
pub fn check_login_throttle(
    conn: &mut DbConnection,
    settings: &AuthSettings,
    email: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let window = Duration::seconds(i64::try_from(settings.login_failure_window_s).unwrap_or(900));
    let max = i64::from(settings.login_max_failures);
    let recent: Vec<NaiveDateTime> = login_failures::table
        .filter(login_failures::email.eq(email))
        .filter(login_failures::at.gt(now - window))
        .order(login_failures::at.desc())
        .select(login_failures::at)
        .limit(max)
        .load(conn)?;
    if i64::try_from(recent.len()).unwrap_or(i64::MAX) >= max {
        let oldest = recent.last().copied().unwrap_or(now);
        let wait = (oldest + window - now).num_seconds().max(1);
        return Err(ApiError::TooManyRequests {
            retry_after_s: u64::try_from(wait).unwrap_or(1),
        });
    }
    Ok(())
}

/// Records a failed password check for `email`.
pub fn record_login_failure(
    conn: &mut DbConnection,
    email: &str,
    now: NaiveDateTime,
) -> QueryResult<()> {
    diesel::insert_into(login_failures::table)
        .values((
            login_failures::id.eq(new_id()),
            login_failures::email.eq(email),
            login_failures::at.eq(now),
        ))
        .execute(conn)
        .map(drop)
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, body = TokenPair),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong email or password", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failures for this account, or requests from this address", body = Problem, content_type = "application/problem+json"),
    ))]
/// Signs in with email and password.
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    Json(body): Json<LoginRequest>,
) -> Result<web::Json<TokenPair>, ApiError> {
    state.ip_limiter.check(peer_ip(&req))?;
    let email = body.email.trim().to_lowercase();
    let now = state.clock.now_naive();
    let user = {
        let (settings, email) = (state.settings.auth.clone(), email.clone());
        state
            .db
            .read(move |conn| {
                check_login_throttle(conn, &settings, &email, now)?;
                Ok(User::find_by_email(conn, &email)?)
            })
            .await?
    };
    let phc = user
        .as_ref()
        .and_then(|u| u.password_hash.clone())
        .unwrap_or_else(|| password::dummy_hash().to_owned());
    let password = body.password;
    let matches = web::block(move || password::verify(&password, &phc))
        .await
        .map_err(ApiError::internal)?;
    let user = match user {
        Some(user) if matches && user.active && user.password_hash.is_some() => user,
        _ => {
            state
                .db
                .write(move |conn| Ok(record_login_failure(conn, &email, now)?))
                .await?;
            return Err(ApiError::Unauthorized("wrong email or password"));
        }
    };
    let jwt = state.jwt.clone();
    let ttl = state.settings.auth.refresh_token_ttl_s;
    let pair = state
        .db
        .write(move |conn| {
            diesel::delete(login_failures::table.filter(login_failures::email.eq(&email)))
                .execute(conn)?;
            let issued = session::issue(conn, &jwt, &user, None, ttl, now)?;
            Ok(TokenPair::new(issued, user))
        })
        .await?;
    Ok(web::Json(pair))
}

#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new pair; the presented refresh token is spent", body = TokenPair),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unknown, expired, revoked or reused token (reuse revokes the whole session)", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
    ))]
/// Rotates a refresh token.
pub async fn refresh(
    state: web::Data<AppState>,
    req: HttpRequest,
    Json(body): Json<RefreshRequest>,
) -> Result<web::Json<TokenPair>, ApiError> {
    state.ip_limiter.check(peer_ip(&req))?;
    let now = state.clock.now_naive();
    let jwt = state.jwt.clone();
    let ttl = state.settings.auth.refresh_token_ttl_s;
    let outcome = state
        .db
        .write(
            move |conn| match session::rotate(conn, &body.refresh_token, now)? {
                Rotation::Rotated { user, family_id } => {
                    let issued = session::issue(conn, &jwt, &user, Some(&family_id), ttl, now)?;
                    Ok(Some(TokenPair::new(issued, *user)))
                }
                // Committed: the family stays revoked.
                Rotation::ReuseDetected => Ok(None),
            },
        )
        .await?;
    match outcome {
        Some(pair) => Ok(web::Json(pair)),
        None => {
            tracing::warn!("refresh token reuse detected; session revoked");
            Err(ApiError::Unauthorized(
                "refresh token reused; the session has been revoked",
            ))
        }
    }
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "The session is revoked (also answered for unknown tokens)"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
    ))]
/// Signs out: revokes the refresh token's session.
pub async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    Json(body): Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    state.ip_limiter.check(peer_ip(&req))?;
    let now = state.clock.now_naive();
    state
        .db
        .write(move |conn| session::logout(conn, &body.refresh_token, now))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// An invitation that can still be accepted, or why not.
fn usable_invitation(
    conn: &mut DbConnection,
    token: &str,
    now: NaiveDateTime,
) -> Result<Invitation, ApiError> {
    let invitation: Invitation = invitations::table
        .filter(invitations::token_hash.eq(hash_token(token)))
        .select(Invitation::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| ApiError::NotFound("no such invitation".into()))?;
    if invitation.accepted_at.is_some() {
        return Err(ApiError::conflict(
            "token",
            "this invitation has already been used",
        ));
    }
    if invitation.expires_at <= now {
        return Err(ApiError::Gone(
            "this invitation has expired; ask an administrator for a new one".into(),
        ));
    }
    Ok(invitation)
}

#[utoipa::path(post, path = "/api/v1/auth/invitations/accept", tag = "auth",
    request_body = AcceptInvitation,
    responses(
        (status = 200, description = "Password set; signed in", body = TokenPair),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already used", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Expired, or the account was deactivated", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
    ))]
/// Sets the password of an invited account, once, and signs in.
pub async fn accept_invitation(
    state: web::Data<AppState>,
    req: HttpRequest,
    Json(body): Json<AcceptInvitation>,
) -> Result<web::Json<TokenPair>, ApiError> {
    state.ip_limiter.check(peer_ip(&req))?;
    password::check_new(&body.password, "password")?;
    let now = state.clock.now_naive();
    let token = body.token;
    // Check the token before paying for a hash.
    {
        let token = token.clone();
        state
            .db
            .read(move |conn| usable_invitation(conn, &token, now).map(drop))
            .await?;
    }
    let password = body.password;
    let phc = web::block(move || password::hash(&password))
        .await
        .map_err(ApiError::internal)??;
    let jwt = state.jwt.clone();
    let ttl = state.settings.auth.refresh_token_ttl_s;
    let pair = state
        .db
        .write(move |conn| {
            let invitation = usable_invitation(conn, &token, now)?;
            let user = User::find(conn, &invitation.user_id)?
                .filter(|u| u.active)
                .ok_or_else(|| ApiError::Gone("this account has been deactivated".into()))?;
            diesel::update(invitations::table.filter(invitations::user_id.eq(&user.id)))
                .filter(invitations::accepted_at.is_null())
                .set(invitations::accepted_at.eq(now))
                .execute(conn)?;
            diesel::update(users::table.find(&user.id))
                .set((users::password_hash.eq(phc), users::updated_at.eq(now)))
                .execute(conn)?;
            let user = User::find(conn, &user.id)?
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("user vanished")))?;
            let issued = session::issue(conn, &jwt, &user, None, ttl, now)?;
            Ok(TokenPair::new(issued, user))
        })
        .await?;
    Ok(web::Json(pair))
}
