//! Sign-in, token refresh, sign-out and invitation acceptance.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::Json;
use super::scope::RequestInfo;
use super::users::UserView;
use crate::audit::{self, AuditRecord, Outcome};
use crate::auth::mfa::{self, Otp};
use crate::auth::password;
use crate::auth::session::{self, Family, Rotation};
use crate::auth::throttle::{self, LoginKey};
use crate::auth::tokens::JwtKeys;
use crate::db::Tx;
use crate::db::models::User;
use crate::error::{ApiError, FieldError, Problem};
use crate::state::AppState;
use crate::store::user;

/// Email and password, and the second factor when the account has one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(max_length = 254)]
    pub email: String,
    #[schema(max_length = 1024)]
    pub password: String,
    /// A current TOTP code (6 digits) or an unused recovery code; required
    /// once the account has enrolled a second factor.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub otp: Option<String>,
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
    /// True when the account's role needs a second factor it has not
    /// enrolled: these tokens may only enrol one (`POST /me/mfa/totp`).
    pub mfa_enrolment_required: bool,
    pub user: UserView,
}

impl TokenPair {
    pub(crate) fn new(issued: session::Issued, user: User) -> Self {
        Self {
            access_token: issued.access_token,
            token_type: "Bearer".into(),
            expires_in: issued.expires_in,
            refresh_token: issued.refresh_token,
            mfa_enrolment_required: false,
            user: user.into(),
        }
    }

    fn enrol_only(mut self) -> Self {
        self.mfa_enrolment_required = true;
        self
    }
}

/// How a sign-in that succeeded opens its session.
pub(crate) struct SignIn<'a> {
    pub info: &'a RequestInfo,
    pub client_addr: Option<&'a str>,
    /// The account must enrol a second factor before anything else.
    pub enrol_only: bool,
    /// The audit row's detail (`password+totp`, `oidc:psc`): never a secret.
    pub detail: &'a str,
}

/// Opens a new session for `user`, who has just proved who they are, and
/// returns its pair, after appending the sign-in's audit row. Password
/// sign-in, an accepted invitation and the OIDC code exchange end here.
pub(crate) fn open_session(
    conn: &mut Tx<'_>,
    jwt: &JwtKeys,
    user: User,
    sign_in: SignIn<'_>,
    refresh_ttl_s: u64,
    now: NaiveDateTime,
) -> Result<TokenPair, ApiError> {
    let record = auth_event(
        sign_in.info,
        Some(&user),
        "sign_in",
        sign_in.detail,
        Outcome::Allowed,
    );
    audit::append(conn, &[record], now)?;
    let client_addr = sign_in.client_addr;
    let family = if sign_in.enrol_only {
        Family::EnrolOnly { client_addr }
    } else {
        Family::New { client_addr }
    };
    let issued = session::issue(conn, jwt, &user, family, refresh_ttl_s, now)?;
    let pair = TokenPair::new(issued, user);
    Ok(if sign_in.enrol_only {
        pair.enrol_only()
    } else {
        pair
    })
}

/// The audit record of an authentication event: a sign-in, refresh or
/// sign-out, before any caller is extracted. `kind` is the resource type
/// (`sign_in`, `refresh`, `logout`); `detail` says how, or why not
/// (`password+totp`, `oidc:psc:unknown_subject`): never a secret.
pub(crate) fn auth_event(
    info: &RequestInfo,
    actor: Option<&User>,
    kind: &str,
    detail: &str,
    outcome: Outcome,
) -> AuditRecord {
    AuditRecord {
        actor_id: actor.map(|u| u.id.clone()),
        actor_role: actor.map(|u| u.role.as_str().to_owned()),
        action: info.action.clone(),
        resource_type: kind.to_owned(),
        resource_id: Some(detail.to_owned()),
        patient_id: None,
        basis: None,
        outcome,
        request_id: info.request_id.clone(),
        client_ip: info.client_ip.clone(),
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
        (status = 401, description = "Wrong email or password; or the account has a second factor and `otp` is missing, wrong or already used (`errors: [{field: \"otp\"}]`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Email longer than 254, password longer than 1024 or otp longer than 64 characters", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failures for this account from this address (or from everywhere), or too many requests from this address; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many sign-ins being checked at once; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ))]
/// Signs in with email and password (and a second factor when enrolled).
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    Json(body): Json<LoginRequest>,
) -> Result<web::Json<TokenPair>, ApiError> {
    let client = state.client_addr(&req);
    state.check_ip(client)?;
    check_login_body(&body)?;
    let info = RequestInfo::of(&req);
    let email = body.email.trim().to_lowercase();
    let key = LoginKey::new(&email, client);
    let now = state.clock.now_naive();
    let settings = state.settings.auth.clone();
    let (user, expected) = login_precheck(&state, email, &key, now).await?;
    // The slot first: a 503 costs the account no attempt. A sign-in from
    // an address the account used before is not turned away by a full queue.
    let slot = state.hasher.slot_for(expected).await?;
    // The authority: counted before verification, atomically (`throttle`).
    // The second factor is checked under the same reservation: a wrong or
    // missing code counts as a failure, like a wrong password.
    let attempt = {
        let (key, user_id) = (key.clone(), user.as_ref().map(|u| u.id.clone()));
        let settings = settings.clone();
        state
            .db
            .write(move |conn| throttle::reserve(conn, &settings, &key, user_id.as_deref(), now))
            .await
            .inspect_err(|e| state.count_login_throttle(e))?
    };
    let phc = user.as_ref().and_then(|u| u.password_hash.clone());
    let matches = slot.verify(body.password, phc).await?;
    let user = match user {
        Some(user) if matches && user.active => user,
        // The reserved attempt stays as the failure.
        other => {
            let reason = match &other {
                None => "password:unknown_account",
                Some(u) if matches && !u.active => "password:deactivated",
                Some(_) => "password:wrong_password",
            };
            let record = auth_event(&info, other.as_ref(), "sign_in", reason, Outcome::Denied);
            state.audit.record(record).await?;
            return Err(ApiError::Unauthorized("wrong email or password"));
        }
    };
    let jwt = state.jwt.clone();
    let ttl = settings.refresh_token_ttl_s;
    let needs_mfa = settings.require_mfa_roles.contains(&user.role);
    let otp = body.otp;
    let outcome = state
        .db
        .write(move |conn| {
            let enrolled = mfa::enrolled(conn, &user.id)?;
            let method = match second_factor(conn, &info, &user, enrolled, otp.as_deref(), now)? {
                Ok(method) => method,
                Err(refused) => return Ok(Err(refused)),
            };
            throttle::succeeded(conn, &key, &attempt)?;
            let limited = needs_mfa && !enrolled;
            let sign_in = SignIn {
                info: &info,
                client_addr: Some(key.client_addr.as_str()),
                enrol_only: limited,
                detail: if limited {
                    "password+enrol_only"
                } else {
                    method
                },
            };
            Ok(Ok(open_session(conn, &jwt, user, sign_in, ttl, now)?))
        })
        .await?;
    // A refused code was committed (its audit row); the attempt stays counted.
    outcome.map(web::Json)
}

/// The sign-in body's lengths (email, password, code), before any work.
fn check_login_body(body: &LoginRequest) -> Result<(), ApiError> {
    check_login_lengths(&body.email, &body.password)?;
    if body
        .otp
        .as_ref()
        .is_some_and(|o| o.chars().count() > mfa::MAX_CODE_LEN)
    {
        return Err(ApiError::invalid(
            "otp",
            format!("at most {} characters", mfa::MAX_CODE_LEN),
        ));
    }
    Ok(())
}

/// A first, read-only check: an attempt already over a limit does not
/// queue for a hashing slot. The account (if any) and whether the address
/// is one it signed in from before.
async fn login_precheck(
    state: &AppState,
    email: String,
    key: &LoginKey,
    now: NaiveDateTime,
) -> Result<(Option<User>, bool), ApiError> {
    let (settings, key) = (state.settings.auth.clone(), key.clone());
    state
        .db
        .read(move |conn| {
            let user = User::find_by_email(conn, &email)?;
            let id = user.as_ref().map(|u| u.id.as_str());
            throttle::check(conn, &settings, &key, id, now)?;
            let expected = throttle::known_address(conn, &settings, &key, id, now)?;
            Ok((user, expected))
        })
        .await
        .inspect_err(|e| state.count_login_throttle(e))
}

/// The second factor of a password sign-in, in its write: the method for
/// the audit row, or the refusal (its denial staged on `tx`, so that it is
/// committed while the sign-in is refused).
fn second_factor(
    tx: &mut Tx<'_>,
    info: &RequestInfo,
    user: &User,
    enrolled: bool,
    otp: Option<&str>,
    now: NaiveDateTime,
) -> Result<Result<&'static str, ApiError>, ApiError> {
    let otp = match (enrolled, otp) {
        (false, _) => return Ok(Ok("password")),
        (true, None) => {
            let record = auth_event(
                info,
                Some(user),
                "sign_in",
                "password:otp_missing",
                Outcome::Denied,
            );
            audit::append(tx, &[record], now)?;
            return Ok(Err(ApiError::UnauthorizedField {
                field: "otp",
                detail: "this account has a second factor: send a current code or a recovery code as otp",
            }));
        }
        (true, Some(otp)) => otp,
    };
    if !mfa::verify(tx, &user.id, otp, now)? {
        let record = auth_event(
            info,
            Some(user),
            "sign_in",
            "password:otp_wrong",
            Outcome::Denied,
        );
        audit::append(tx, &[record], now)?;
        return Ok(Err(ApiError::UnauthorizedField {
            field: "otp",
            detail: "wrong or already used code",
        }));
    }
    Ok(Ok(match Otp::parse(otp) {
        Some(Otp::Recovery(_)) => "password+recovery_code",
        _ => "password+totp",
    }))
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
    state.check_ip(state.client_addr(&req))?;
    let info = RequestInfo::of(&req);
    let now = state.clock.now_naive();
    let jwt = state.jwt.clone();
    let ttl = state.settings.auth.refresh_token_ttl_s;
    let audit_info = info.clone();
    let outcome = state
        .db
        .write(
            move |conn| match session::rotate(conn, &body.refresh_token, now)? {
                Rotation::Rotated { user, family_id } => {
                    let limited = session::is_enrol_only(conn, &family_id)?;
                    let family = Family::Continue(&family_id);
                    let issued = session::issue(conn, &jwt, &user, family, ttl, now)?;
                    let record =
                        auth_event(&info, Some(&user), "refresh", "rotated", Outcome::Allowed);
                    audit::append(conn, &[record], now)?;
                    let pair = TokenPair::new(issued, *user);
                    Ok(Ok(if limited { pair.enrol_only() } else { pair }))
                }
                // Committed: the session stays revoked.
                Rotation::ReuseDetected { family_id, user_id } => {
                    let user = User::find(conn, &user_id)?;
                    let record = auth_event(
                        &info,
                        user.as_ref(),
                        "refresh",
                        "reuse_detected",
                        Outcome::Denied,
                    );
                    audit::append(conn, &[record], now)?;
                    Ok(Err(family_id))
                }
            },
        )
        .await;
    let outcome = match outcome {
        Err(ApiError::Unauthorized(why)) => {
            let record = auth_event(
                &audit_info,
                None,
                "refresh",
                "invalid_token",
                Outcome::Denied,
            );
            state.audit.record(record).await?;
            return Err(ApiError::Unauthorized(why));
        }
        other => other?,
    };
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
    req: HttpRequest,
    Json(body): Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    // Not counted by the per-address limit: signing out must always work,
    // and it gives an attacker nothing (a 256-bit token to guess).
    let info = RequestInfo::of(&req);
    let now = state.clock.now_naive();
    let revoked = state
        .db
        .write(move |conn| {
            let revoked = session::logout(conn, &body.refresh_token, now)?;
            // An unknown token revokes nothing and leaves no row: anyone
            // may send one, and there is no one to attribute it to.
            if let Some((_, user_id)) = &revoked {
                let user = User::find(conn, user_id)?;
                let record = auth_event(
                    &info,
                    user.as_ref(),
                    "logout",
                    "session_revoked",
                    Outcome::Allowed,
                );
                audit::append(conn, &[record], now)?;
            }
            Ok(revoked.map(|(sid, _)| sid))
        })
        .await?;
    if let Some(sid) = revoked {
        state.users.forget_session(&sid);
    }
    Ok(HttpResponse::NoContent().finish())
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
    state.check_ip(client)?;
    password::check_new(&body.password, "password")?;
    let info = RequestInfo::of(&req);
    let now = state.clock.now_naive();
    let token = body.token;
    // Check the token before paying for a hash.
    {
        let token = token.clone();
        state
            .db
            .read(move |conn| user::usable_invitation(conn, &token, now).map(drop))
            .await?;
    }
    let phc = state.hasher.hash(body.password).await?;
    let client_addr = client.map(|ip| crate::net::limit_key(ip).to_string());
    let jwt = state.jwt.clone();
    let ttl = state.settings.auth.refresh_token_ttl_s;
    let needs_mfa = state.settings.auth.require_mfa_roles.clone();
    let pair = state
        .db
        .write(move |conn| {
            let invitation = user::usable_invitation(conn, &token, now)?;
            let user = User::find(conn, &invitation.user_id)?
                .filter(|u| u.active)
                .ok_or_else(|| ApiError::Gone("this account has been deactivated".into()))?;
            let user = user::accept_invitation(conn, &user.id, &phc, now)?;
            // A new account has no second factor: a role that needs one
            // starts with a session that may only enrol it.
            let limited = needs_mfa.contains(&user.role);
            let sign_in = SignIn {
                info: &info,
                client_addr: client_addr.as_deref(),
                enrol_only: limited,
                detail: if limited {
                    "invitation:password+enrol_only"
                } else {
                    "invitation:password"
                },
            };
            open_session(conn, &jwt, user, sign_in, ttl, now)
        })
        .await?;
    Ok(web::Json(pair))
}
