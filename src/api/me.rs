//! The signed-in user's own account.

use actix_web::{HttpRequest, web};
use chrono::NaiveDateTime;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::TokenPair;
use super::extract::Json;
use super::scope::RequestInfo;
use super::users::{UserView, optional_phone};
use crate::audit::{self, Outcome};
use crate::auth::password::Slot;
use crate::auth::session::{self, Family};
use crate::auth::throttle::{self, LoginKey};
use crate::auth::tokens::JwtKeys;
use crate::auth::{AuthUser, password};
use crate::db::Tx;
use crate::db::models::User;
use crate::domain::access::Basis;
use crate::domain::role::NotificationPreference;
use crate::domain::text::{self, Flavour};
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use crate::store::user;

/// Changes a user may make to their own account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMe {
    #[schema(min_length = 1, max_length = 200)]
    pub full_name: Option<String>,
    /// An empty string clears it.
    pub phone: Option<String>,
    pub notification_preference: Option<NotificationPreference>,
}

/// The current password and the new one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub current_password: String,
    #[schema(min_length = 12, max_length = 1024)]
    pub new_password: String,
}

async fn load_me(state: &AppState, id: String) -> Result<User, ApiError> {
    state
        .db
        .read(move |conn| User::find(conn, &id)?.ok_or(ApiError::Unauthorized("no such account")))
        .await
}

#[utoipa::path(get, path = "/api/v1/me", tag = "accounts",
    responses(
        (status = 200, body = UserView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// The caller's account.
pub async fn get_me(
    state: web::Data<AppState>,
    caller: AuthUser,
) -> Result<web::Json<UserView>, ApiError> {
    Ok(web::Json(load_me(&state, caller.id).await?.into()))
}

#[utoipa::path(patch, path = "/api/v1/me", tag = "accounts",
    request_body = UpdateMe,
    responses(
        (status = 200, body = UserView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Updates the caller's name, phone or notification preference.
pub async fn update_me(
    state: web::Data<AppState>,
    info: RequestInfo,
    caller: AuthUser,
    Json(body): Json<UpdateMe>,
) -> Result<web::Json<UserView>, ApiError> {
    let mut errors = Vec::new();
    let full_name = match body
        .full_name
        .as_deref()
        .map(|n| text::required(n, "full_name", Flavour::Name, text::PERSON_NAME_MAX))
    {
        Some(Ok(name)) => Some(name),
        Some(Err(e)) => {
            errors.push(e);
            None
        }
        None => None,
    };
    let phone = body
        .phone
        .as_deref()
        .map(|raw| optional_phone(Some(raw), &mut errors));
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let now = state.clock.now_naive();
    let id = caller.id.clone();
    let user = state
        .db
        .write(move |conn| {
            let record = info.record(
                &caller,
                "account",
                Some(&caller.id),
                None,
                Some(Basis::OwnAccount),
                Outcome::Allowed,
            );
            audit::append(conn, &[record], now)?;
            let changes = user::ProfileChanges {
                full_name,
                phone,
                notification_preference: body.notification_preference,
                ..Default::default()
            };
            user::update_profile(conn, &id, changes, now)?
                .ok_or(ApiError::Unauthorized("no such account"))
        })
        .await?;
    Ok(web::Json(user.into()))
}

#[utoipa::path(post, path = "/api/v1/me/password", tag = "accounts",
    request_body = ChangePassword,
    responses(
        (status = 200, description = "Changed. Every other session and access token is revoked; here is a new pair", body = TokenPair),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "New password too short, or current password wrong", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong current passwords; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many passwords being checked at once; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Changes the caller's password.
pub async fn change_password(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: AuthUser,
    Json(body): Json<ChangePassword>,
) -> Result<web::Json<TokenPair>, ApiError> {
    password::check_new(&body.new_password, "new_password")?;
    if body.current_password.chars().count() > password::MAX_LEN {
        return Err(ApiError::invalid(
            "current_password",
            format!("at most {} characters", password::MAX_LEN),
        ));
    }
    let now = state.clock.now_naive();
    let me = load_me(&state, caller.id.clone()).await?;
    // The same limits as sign-in: a stolen access token must not become an
    // unthrottled oracle for the password.
    let key = LoginKey::new(&me.email, state.client_addr(&req));
    let (slot, attempt) = password_attempt(&state, &key, &me.id, now).await?;
    let current = me.password_hash.clone().unwrap_or_default();
    let ChangePassword {
        current_password,
        new_password,
    } = body;
    let phc = slot
        .verify_then_hash(current_password, current, new_password)
        .await?;
    let info = RequestInfo::of(&req);
    let record = |outcome, detail: &str| {
        info.record(
            &caller,
            "password",
            Some(detail),
            None,
            Some(Basis::OwnAccount),
            outcome,
        )
    };
    let Some(phc) = phc else {
        // The reserved attempt stays as the failure.
        state
            .audit
            .record(record(Outcome::Denied, "wrong_current_password"))
            .await?;
        return Err(ApiError::invalid(
            "current_password",
            "does not match your password",
        ));
    };
    let jwt = state.jwt.clone();
    let ttl = state.settings.auth.refresh_token_ttl_s;
    let me_id = me.id.clone();
    let changed = record(Outcome::Allowed, "changed");
    let pair = state
        .db
        .write(move |conn| {
            audit::append(conn, &[changed], now)?;
            throttle::succeeded(conn, &key, &attempt)?;
            user::change_password(conn, &me.id, &phc, now)?;
            new_session(conn, &jwt, &me.id, &key, ttl, now)
        })
        .await?;
    // Committed: the old tokens must stop working now, cache or not.
    state.users.forget_user(&me_id);
    Ok(web::Json(pair))
}

/// The limits of sign-in on a password change (a stolen access token must
/// not become an unthrottled oracle for the password): checked before
/// queueing for a hashing slot, then the attempt reserved, counted before
/// verification. The slot and the reserved attempt.
async fn password_attempt(
    state: &AppState,
    key: &LoginKey,
    user_id: &str,
    now: NaiveDateTime,
) -> Result<(Slot, String), ApiError> {
    let settings = state.settings.auth.clone();
    {
        let (settings, key, id) = (settings.clone(), key.clone(), user_id.to_owned());
        state
            .db
            .read(move |conn| throttle::check(conn, &settings, &key, Some(&id), now))
            .await
            .inspect_err(|e| state.count_login_throttle(e))?;
    }
    let slot = state.hasher.slot().await?;
    let (key, id) = (key.clone(), user_id.to_owned());
    let attempt = state
        .db
        .write(move |conn| throttle::reserve(conn, &settings, &key, Some(&id), now))
        .await
        .inspect_err(|e| state.count_login_throttle(e))?;
    Ok((slot, attempt))
}

/// A new session for the account whose password just changed, in the
/// change's transaction (its other sessions end with it).
fn new_session(
    tx: &mut Tx<'_>,
    jwt: &JwtKeys,
    user_id: &str,
    key: &LoginKey,
    ttl: u64,
    now: NaiveDateTime,
) -> Result<TokenPair, ApiError> {
    let user = User::find(tx, user_id)?.ok_or(ApiError::Unauthorized("no such account"))?;
    let family = Family::New {
        client_addr: Some(&key.client_addr),
    };
    let issued = session::issue(tx, jwt, &user, family, ttl, now)?;
    Ok(TokenPair::new(issued, user))
}
