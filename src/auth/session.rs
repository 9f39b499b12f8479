//! Sessions: one per sign-in (a `sessions` row, whose id is also the
//! refresh-token family's), rotated on every refresh.
//!
//! Access tokens carry their session's id (`sid`), and the extractor reads
//! the session with the user ([`lookup`]), so a revoked session's access
//! tokens fail at once: sign-out, refresh-token reuse, password change and
//! deactivation all revoke it.

use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;

use super::tokens::{JwtKeys, hash_token, random_token};
use crate::db::DbConnection;
use crate::db::models::{RefreshToken, User, new_id};
use crate::db::schema::{refresh_tokens, sessions, users};
use crate::error::ApiError;

/// Opens a session for `user_id` signed in from `client_addr` (its
/// address group); returns its id.
pub fn open(
    conn: &mut DbConnection,
    user_id: &str,
    client_addr: Option<&str>,
    enrol_only: bool,
    now: NaiveDateTime,
) -> QueryResult<String> {
    let id = new_id();
    diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(&id),
            sessions::user_id.eq(user_id),
            sessions::client_addr.eq(client_addr),
            sessions::created_at.eq(now),
            sessions::mfa_enrol_only.eq(enrol_only),
        ))
        .execute(conn)?;
    Ok(id)
}

/// What an access token's check needs: its session's state and its user's.
#[derive(Debug, Clone, Queryable)]
pub struct SessionUser {
    pub user_id: String,
    pub revoked_at: Option<NaiveDateTime>,
    pub token_version: i32,
    pub active: bool,
    pub role: String,
    pub organization_id: Option<String>,
    /// The session may only enrol a second factor (`auth.require_mfa_roles`).
    pub mfa_enrol_only: bool,
}

/// The session `sid` and its user, in one statement (primary keys only).
pub fn lookup(conn: &mut DbConnection, sid: &str) -> QueryResult<Option<SessionUser>> {
    crate::per_backend!(conn, |c| sessions::table
        .inner_join(users::table)
        .filter(sessions::id.eq(sid))
        .select((
            sessions::user_id,
            sessions::revoked_at,
            users::token_version,
            users::active,
            users::role,
            users::organization_id,
            sessions::mfa_enrol_only,
        ))
        .first::<SessionUser>(c)
        .optional())
}

/// An access token and the refresh token that renews it.
#[derive(Debug)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: String,
}

/// How a token pair is issued: in a new session (a sign-in, from an
/// address group) or in an existing one (a refresh).
pub enum Family<'a> {
    New {
        client_addr: Option<&'a str>,
    },
    /// A sign-in whose tokens may only enrol a second factor.
    EnrolOnly {
        client_addr: Option<&'a str>,
    },
    Continue(&'a str),
}

/// Issues a token pair, in a new session or continuing `family`'s.
pub fn issue(
    conn: &mut DbConnection,
    jwt: &JwtKeys,
    user: &User,
    family: Family<'_>,
    refresh_ttl_s: u64,
    now: NaiveDateTime,
) -> Result<Issued, ApiError> {
    let refresh_token = random_token();
    let ttl = Duration::seconds(i64::try_from(refresh_ttl_s).unwrap_or(i64::MAX / 1000));
    let family_id = match family {
        Family::New { client_addr } => open(conn, &user.id, client_addr, false, now)?,
        Family::EnrolOnly { client_addr } => open(conn, &user.id, client_addr, true, now)?,
        Family::Continue(id) => id.to_owned(),
    };
    let row = RefreshToken {
        id: new_id(),
        user_id: user.id.clone(),
        family_id: family_id.clone(),
        token_hash: hash_token(&refresh_token),
        issued_at: now,
        expires_at: now + ttl,
        used_at: None,
        revoked_at: None,
    };
    diesel::insert_into(refresh_tokens::table)
        .values(&row)
        .execute(conn)?;
    Ok(Issued {
        access_token: jwt.issue(user, &family_id)?,
        expires_in: jwt.ttl_s(),
        refresh_token,
    })
}

/// What presenting a refresh token led to.
pub enum Rotation {
    /// The token was good: here is its user and family, to issue the next pair.
    Rotated { user: Box<User>, family_id: String },
    /// The token had been used already: its whole family (session) is now revoked.
    ReuseDetected { family_id: String, user_id: String },
}

/// Marks a refresh token used, or revokes its family when it was used before.
/// Run in a transaction that commits even on `ReuseDetected`.
pub fn rotate(
    conn: &mut DbConnection,
    presented: &str,
    now: NaiveDateTime,
) -> Result<Rotation, ApiError> {
    const INVALID: ApiError = ApiError::Unauthorized("invalid or expired refresh token");
    let row: RefreshToken = refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(hash_token(presented)))
        .select(RefreshToken::as_select())
        .first(conn)
        .optional()?
        .ok_or(INVALID)?;
    if row.revoked_at.is_some() {
        return Err(INVALID);
    }
    // The conditional update makes two racing refreshes count as one reuse.
    let claimed = row.used_at.is_none()
        && diesel::update(
            refresh_tokens::table
                .find(&row.id)
                .filter(refresh_tokens::used_at.is_null()),
        )
        .set(refresh_tokens::used_at.eq(now))
        .execute(conn)?
            == 1;
    if !claimed {
        revoke_family(conn, &row.family_id, now)?;
        return Ok(Rotation::ReuseDetected {
            family_id: row.family_id,
            user_id: row.user_id,
        });
    }
    if row.expires_at <= now {
        return Err(INVALID);
    }
    let user = User::find(conn, &row.user_id)?
        .filter(|u| u.active)
        .ok_or(INVALID)?;
    Ok(Rotation::Rotated {
        user: Box::new(user),
        family_id: row.family_id,
    })
}

/// Revokes the session of a refresh token (sign-out) and returns its id
/// and user; unknown tokens are ignored.
pub fn logout(
    conn: &mut DbConnection,
    presented: &str,
    now: NaiveDateTime,
) -> Result<Option<(String, String)>, ApiError> {
    let found: Option<(String, String)> = refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(hash_token(presented)))
        .select((refresh_tokens::family_id, refresh_tokens::user_id))
        .first(conn)
        .optional()?;
    if let Some((family, _)) = &found {
        revoke_family(conn, family, now)?;
    }
    Ok(found)
}

/// Whether session `sid` may only enrol a second factor.
pub fn is_enrol_only(conn: &mut DbConnection, sid: &str) -> QueryResult<bool> {
    sessions::table
        .find(sid)
        .select(sessions::mfa_enrol_only)
        .first(conn)
        .optional()
        .map(|v| v.unwrap_or(false))
}

/// Revokes a session: its refresh tokens, and (through `sid`) its access tokens.
fn revoke_family(conn: &mut DbConnection, family: &str, now: NaiveDateTime) -> QueryResult<()> {
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::family_id.eq(family))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(now))
    .execute(conn)?;
    diesel::update(
        sessions::table
            .find(family)
            .filter(sessions::revoked_at.is_null()),
    )
    .set(sessions::revoked_at.eq(now))
    .execute(conn)?;
    crate::db::announce_revocation(conn, &format!("session:{family}"))
}

/// Lifts a session's enrol-only limit (its user has just enrolled a second
/// factor); returns whether it was limited.
pub fn lift_enrol_only(conn: &mut DbConnection, sid: &str) -> QueryResult<bool> {
    diesel::update(
        sessions::table
            .find(sid)
            .filter(sessions::mfa_enrol_only.eq(true)),
    )
    .set(sessions::mfa_enrol_only.eq(false))
    .execute(conn)
    .map(|n| n == 1)
}
