//! Sign-in, token refresh, sign-out and invitation acceptance.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::Json;
use super::users::UserView;
use crate::auth::password;
use crate::auth::session::{self, Family, Rotation};
use crate::auth::throttle::{self, LoginKey};
use crate::auth::tokens::hash_token;
use crate::db::DbConnection;
use crate::db::models::{Invitation, User};
use crate::db::schema::{invitations, users};
use crate::error::{ApiError, FieldError, Problem};
use crate::state::AppState;

/// Email and password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(max_length = 254)]
    pub email: String,
    #[schema(max_length = 1024)]
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

/// The longest email a sign-in looks up (RFC 5321's path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// Refuses oversized sign-in inputs before anything is looked up or hashed.
fn check_login_lengths(email: &str, password: &str) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if email.chars().count() > MAX_EMAIL_LEN {
        errors.push(FieldError::new(
            "email",
            format!("at most {MAX_EMAIL_LEN} characters"),
        ));
    }
    if password.chars().count() > password::MAX_LEN {
        errors.push(FieldError::new(
            "password",
            format!("at most {} characters", password::MAX_LEN),
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, body = TokenPair),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong email or password", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Email longer than 254 or password longer than 1024 characters", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failures for this account from this address (or from everywhere), or too many requests from this address; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many sign-ins being checked at once; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ))]
/// Signs in with email and password.
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    Json(body): Json<LoginRequest>,
) -> Result<web::Json<TokenPair>, ApiError> {
    let client = state.client_addr(&req);
    state.ip_limiter.check(client)?;
    check_login_lengths(&body.email, &body.password)?;
    let email = body.email.trim().to_lowercase();
    let key = LoginKey::new(&email, client);
    let now = state.clock.now_naive();
    let settings = state.settings.auth.clone();
    // A first, read-only check: an attempt already over a limit does not
    // queue for a hashing slot.
    let (user, expected) = {
        let (settings, key) = (settings.clone(), key.clone());
        state
            .db
            .read(move |conn| {
                let user = User::find_by_email(conn, &email)?;
                let id = user.as_ref().map(|u| u.id.as_str());
                throttle::check(conn, &settings, &key, id, now)?;
                let expected = throttle::known_address(conn, &settings, &key, id, now)?;
                Ok((user, expected))
            })
            .await?
    };
    // The slot first: a 503 costs the account no attempt. A sign-in from
    // an address the account used before is not turned away by a full queue.
    let slot = state.hasher.slot_for(expected).await?;
    // The authority: counted before verification, atomically (`throttle`).
    let attempt = {
        let (key, user_id) = (key.clone(), user.as_ref().map(|u| u.id.clone()));
        state
            .db
            .write(move |conn| throttle::reserve(conn, &settings, &key, user_id.as_deref(), now))
            .await?
    };
    let phc = user.as_ref().and_then(|u| u.password_hash.clone());
    let matches = slot.verify(body.password, phc).await?;
    let user = match user {
        Some(user) if matches && user.active => user,
        // The reserved attempt stays as the failure.
        _ => return Err(ApiError::Unauthorized("wrong email or password")),
    };
    let jwt = state.jwt.clone();
    let ttl = state.settings.auth.refresh_token_ttl_s;
    let pair = state
        .db
        .write(move |conn| {
            throttle::succeeded(conn, &key, &attempt)?;
            let family = Family::New {
                client_addr: Some(&key.client_addr),
            };
            let issued = session::issue(conn, &jwt, &user, family, ttl, now)?;
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
        (status = 401, description = "Unknown, expired, revoked or reused token (reuse revokes the whole session, its access tokens included)", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this address; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ))]
/// Rotates a refresh token.
pub async fn refresh(
    state: web::Data<AppState>,
    req: HttpRequest,
    Json(body): Json<RefreshRequest>,
) -> Result<web::Json<TokenPair>, ApiError> {
    state.ip_limiter.check(state.client_addr(&req))?;
    let now = state.clock.now_naive();
    let jwt = state.jwt.clone();
    let ttl = state.settings.auth.refresh_token_ttl_s;
    let outcome = state
        .db
        .write(
            move |conn| match session::rotate(conn, &body.refresh_token, now)? {
                Rotation::Rotated { user, family_id } => {
                    let family = Family::Continue(&family_id);
                    let issued = session::issue(conn, &jwt, &user, family, ttl, now)?;
                    Ok(Ok(TokenPair::new(issued, *user)))
                }
                // Committed: the session stays revoked.
                Rotation::ReuseDetected { family_id } => Ok(Err(family_id)),
            },
        )
        .await?;
    match outcome {
        Ok(pair) => Ok(web::Json(pair)),
        Err(family_id) => {
            state.users.forget_session(&family_id);
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
        (status = 204, description = "The session is revoked, its access tokens included (also answered for unknown tokens)"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
/// Signs out: revokes the refresh token's session.
pub async fn logout(
    state: web::Data<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    // Not counted by the per-address limit: signing out must always work,
    // and it gives an attacker nothing (a 256-bit token to guess).
    let now = state.clock.now_naive();
    let revoked = state
        .db
        .write(move |conn| session::logout(conn, &body.refresh_token, now))
        .await?;
    if let Some(sid) = revoked {
        state.users.forget_session(&sid);
    }
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
        (status = 429, description = "Too many requests from this address; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many passwords being hashed at once; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ))]
/// Sets the password of an invited account, once, and signs in.
pub async fn accept_invitation(
    state: web::Data<AppState>,
    req: HttpRequest,
    Json(body): Json<AcceptInvitation>,
) -> Result<web::Json<TokenPair>, ApiError> {
    let client = state.client_addr(&req);
    state.ip_limiter.check(client)?;
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
    let phc = state.hasher.hash(body.password).await?;
    let client_addr = client.map(|ip| crate::net::limit_key(ip).to_string());
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
                .execute(&mut **conn)?;
            diesel::update(users::table.find(&user.id))
                .set((users::password_hash.eq(phc), users::updated_at.eq(now)))
                .execute(&mut **conn)?;
            let user = User::find(conn, &user.id)?
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("user vanished")))?;
            let family = Family::New {
                client_addr: client_addr.as_deref(),
            };
            let issued = session::issue(conn, &jwt, &user, family, ttl, now)?;
            Ok(TokenPair::new(issued, user))
        })
        .await?;
    Ok(web::Json(pair))
}
