//! Accounts: administrators create and manage them; clinicians search the directory.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Json, Query, path_id};
use super::scope::RequestInfo;
use super::{Page, page_limit};
use crate::audit::{self, Outcome};
use crate::auth::AuthUser;
use crate::auth::tokens::random_token;
use crate::db::models::{User, new_id};
use crate::domain::access::Basis;
use crate::domain::contact::{parse_email, parse_phone};
use crate::domain::role::{NotificationPreference, Role};
use crate::domain::rpps::Rpps;
use crate::domain::text::{self, Flavour};
use crate::error::{ApiError, FieldError, Problem};
use crate::state::AppState;
use crate::store::user::{self, UserSearch};

/// A user as shown to themselves and to administrators.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub full_name: String,
    pub role: Role,
    pub organization_id: Option<String>,
    pub rpps: Option<String>,
    pub phone: Option<String>,
    pub active: bool,
    pub notification_preference: NotificationPreference,
    pub created_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            role: user.role,
            notification_preference: user.notification_preference,
            id: user.id,
            email: user.email,
            full_name: user.full_name,
            organization_id: user.organization_id,
            rpps: user.rpps,
            phone: user.phone,
            active: user.active,
            created_at: user.created_at.and_utc(),
        }
    }
}

/// A directory entry. Administrators also get the account fields.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserListItem {
    pub id: String,
    pub full_name: String,
    pub role: Role,
    pub organization_id: Option<String>,
    pub organization_name: Option<String>,
    pub rpps: Option<String>,
    /// Administrators only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Administrators only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Administrators only (the directory lists active users alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// A new account; the person receives an invitation email to set a password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schema(max_length = 254)]
    pub email: String,
    #[schema(min_length = 1, max_length = 200)]
    pub full_name: String,
    pub role: Role,
    /// Required for every role but `admin`.
    #[schema(format = Uuid)]
    pub organization_id: Option<String>,
    /// 11 digits with a Luhn check digit.
    #[schema(pattern = "^[0-9]{11}$")]
    pub rpps: Option<String>,
    pub phone: Option<String>,
}

/// Changes an administrator may make to an account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[schema(min_length = 1, max_length = 200)]
    pub full_name: Option<String>,
    /// An empty string clears it.
    pub phone: Option<String>,
    /// An empty string clears it.
    pub rpps: Option<String>,
    /// `false` deactivates the account and ends its sessions at once.
    pub active: Option<bool>,
}

/// Filters of the user directory.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    /// Part of the name (case-insensitive).
    pub q: Option<String>,
    pub role: Option<Role>,
    #[param(format = Uuid)]
    pub organization_id: Option<String>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Checks the optional RPPS, turning "" into none.
fn optional_rpps(raw: Option<&str>, errors: &mut Vec<FieldError>) -> Option<String> {
    let raw = raw.map(str::trim).filter(|s| !s.is_empty())?;
    Rpps::parse(raw)
        .map(|r| r.as_str().to_owned())
        .map_err(|m| errors.push(FieldError::new("rpps", m)))
        .ok()
}

/// Checks the optional phone, turning "" into none.
pub fn optional_phone(raw: Option<&str>, errors: &mut Vec<FieldError>) -> Option<String> {
    let raw = raw?;
    if raw.trim().is_empty() && raw.chars().count() <= 30 {
        return None;
    }
    parse_phone(raw)
        .map_err(|m| errors.push(FieldError::new("phone", m)))
        .ok()
}

/// Maps a unique violation on insert or update to a 409 naming the field.
#[utoipa::path(post, path = "/api/v1/users", tag = "accounts",
    request_body = CreateUser,
    responses(
        (status = 201, description = "Created; the invitation email is queued", body = UserView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email or RPPS already in use", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Creates an account (administrators) and emails an invitation.
pub async fn create_user(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    Json(body): Json<CreateUser>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let now = state.clock.now_naive();
    let user = new_user(&body, now)?;
    let token = random_token();
    let ttl = state.settings.auth.invitation_ttl_s;
    let link = format!("{}/invitations/{token}", state.settings.server.public_url);
    let user = state
        .db
        .write(move |conn| {
            let letter = user::InvitationLetter {
                token: &token,
                link: &link,
                ttl_s: ttl,
            };
            user::create_invited(conn, &user, letter, now)?;
            let record = info.record(
                &caller,
                "user",
                Some(&user.id),
                None,
                Some(Basis::Admin),
                Outcome::Allowed,
            );
            audit::append(conn, &[record], now)?;
            Ok(user)
        })
        .await?;
    state.outbox.wake();
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/users/{}", user.id)))
        .json(UserView::from(user)))
}

/// The account an administrator asks for, checked (every bad field named):
/// active, invited (no password yet), immediate notifications.
fn new_user(body: &CreateUser, now: NaiveDateTime) -> Result<User, ApiError> {
    let mut errors = Vec::new();
    let email = parse_email(&body.email)
        .map_err(|m| errors.push(FieldError::new("email", m)))
        .ok();
    let full_name = text::required(
        &body.full_name,
        "full_name",
        Flavour::Name,
        text::PERSON_NAME_MAX,
    )
    .map_err(|e| errors.push(e))
    .ok();
    let rpps = optional_rpps(body.rpps.as_deref(), &mut errors);
    let phone = optional_phone(body.phone.as_deref(), &mut errors);
    let organization_id = match (&body.organization_id, body.role) {
        (Some(raw), _) => uuid::Uuid::parse_str(raw)
            .map(|id| id.to_string())
            .map_err(|_| errors.push(FieldError::new("organization_id", "not a valid id (UUID)")))
            .ok(),
        (None, Role::Admin) => None,
        (None, _) => {
            errors.push(FieldError::new("organization_id", "required for this role"));
            None
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (Some(email), Some(full_name)) = (email, full_name) else {
        return Err(ApiError::Validation(errors));
    };
    Ok(User {
        id: new_id(),
        email,
        full_name,
        role: body.role,
        organization_id,
        rpps,
        phone,
        active: true,
        password_hash: None,
        token_version: 0,
        notification_preference: NotificationPreference::Immediate,
        created_at: now,
        updated_at: now,
    })
}

#[utoipa::path(get, path = "/api/v1/users", tag = "accounts",
    params(UserFilter),
    responses(
        (status = 200, description = "Administrators see every account; clinicians the active directory", body = Page<UserListItem>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Searches accounts.
pub async fn list_users(
    state: web::Data<AppState>,
    caller: AuthUser,
    Query(filter): Query<UserFilter>,
) -> Result<web::Json<Page<UserListItem>>, ApiError> {
    let limit = page_limit(filter.limit)?;
    let is_admin = caller.role == Role::Admin;
    let organization_id = filter
        .organization_id
        .as_deref()
        .map(|id| path_id(id, "organization_id"))
        .transpose()?;
    let page = state
        .db
        .read(move |conn| {
            let rows = user::directory(
                conn,
                UserSearch {
                    active_only: !is_admin,
                    q: filter.q,
                    role: filter.role,
                    organization_id,
                    cursor: filter.cursor,
                    rows: limit + 1,
                },
            )?;
            Ok(Page::from_rows(rows, limit, |(u, _)| u.id.clone()))
        })
        .await?;
    Ok(web::Json(page.map(|(user, organization_name)| {
        UserListItem {
            role: user.role,
            email: is_admin.then_some(user.email),
            phone: if is_admin { user.phone } else { None },
            active: is_admin.then_some(user.active),
            id: user.id,
            full_name: user.full_name,
            organization_id: user.organization_id,
            organization_name,
            rpps: user.rpps,
        }
    })))
}

#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "accounts",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    request_body = UpdateUser,
    responses(
        (status = 200, body = UserView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Updates or deactivates an account (administrators).
pub async fn update_user(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    id: web::Path<String>,
    Json(body): Json<UpdateUser>,
) -> Result<web::Json<UserView>, ApiError> {
    caller.require_admin()?;
    let id = path_id(&id, "id")?;
    let mut errors = Vec::new();
    let full_name = body
        .full_name
        .as_deref()
        .map(|n| text::required(n, "full_name", Flavour::Name, text::PERSON_NAME_MAX))
        .transpose()
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let rpps = body
        .rpps
        .as_deref()
        .map(|raw| optional_rpps(Some(raw), &mut errors));
    let phone = body
        .phone
        .as_deref()
        .map(|raw| optional_phone(Some(raw), &mut errors));
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if body.active == Some(false) && id == caller.id {
        return Err(ApiError::conflict(
            "active",
            "you cannot deactivate your own account",
        ));
    }
    let now = state.clock.now_naive();
    let user = state
        .db
        .write(move |conn| {
            let changes = user::ProfileChanges {
                full_name,
                phone,
                rpps,
                notification_preference: None,
                active: body.active,
            };
            let user = user::update_profile(conn, &id, changes, now)?
                .ok_or_else(|| ApiError::NotFound("no such user".into()))?;
            let record = info.record(
                &caller,
                "user",
                Some(&id),
                None,
                Some(Basis::Admin),
                Outcome::Allowed,
            );
            audit::append(conn, &[record], now)?;
            Ok(user)
        })
        .await?;
    // Committed: a deactivation must not outlive this request in the cache.
    state.users.forget_user(&user.id);
    Ok(web::Json(user.into()))
}
