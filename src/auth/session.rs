//! Sessions: a refresh-token family per sign-in, rotated on every refresh.

use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;

use super::tokens::{JwtKeys, hash_token, random_token};
use crate::db::DbConnection;
use crate::db::models::{RefreshToken, User, new_id};
use crate::db::schema::refresh_tokens;
use crate::error::ApiError;

/// An access token and the refresh token that renews it.
#[derive(Debug)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: String,
}

/// Issues a token pair; `family` continues a rotation chain, `None` starts one.
pub fn issue(
    conn: &mut DbConnection,
    jwt: &JwtKeys,
    user: &User,
    family: Option<&str>,
    refresh_ttl_s: u64,
    now: NaiveDateTime,
) -> Result<Issued, ApiError> {
    let refresh_token = random_token();
    let ttl = Duration::seconds(i64::try_from(refresh_ttl_s).unwrap_or(i64::MAX / 1000));
    let row = RefreshToken {
        id: new_id(),
        user_id: user.id.clone(),
        family_id: family.map_or_else(new_id, str::to_owned),
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
        access_token: jwt.issue(user)?,
        expires_in: jwt.ttl_s(),
        refresh_token,
    })
}

/// What presenting a refresh token led to.
pub enum Rotation {
    /// The token was good: here is its user and family, to issue the next pair.
    Rotated { user: Box<User>, family_id: String },
    /// The token had been used already: its whole family is now revoked.
    ReuseDetected,
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
        return Ok(Rotation::ReuseDetected);
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

/// Revokes the family of a refresh token (sign-out); unknown tokens are ignored.
pub fn logout(
    conn: &mut DbConnection,
    presented: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let family: Option<String> = refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(hash_token(presented)))
        .select(refresh_tokens::family_id)
        .first(conn)
        .optional()?;
    if let Some(family) = family {
        revoke_family(conn, &family, now)?;
    }
    Ok(())
}

fn revoke_family(conn: &mut DbConnection, family: &str, now: NaiveDateTime) -> QueryResult<usize> {
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::family_id.eq(family))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(now))
    .execute(conn)
}
