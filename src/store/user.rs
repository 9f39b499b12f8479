//! User accounts as stored: creation with an invitation, profile changes
//! (by an administrator or the user), deactivation, passwords set by an
//! accepted invitation or changed by the user. Accounts made without an
//! invitation (first administrator, demo) are in [`super::account`].

use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;

use crate::auth::tokens::hash_token;
use crate::db::models::{Invitation, Organization, User, new_id};
use crate::db::schema::{invitations, organizations, users};
use crate::db::{DbConnection, is_unique_violation};
use crate::domain::role::{NotificationPreference, Role};
use crate::error::ApiError;
use crate::notify::outbox;
use crate::notify::templates::Email;
use crate::store::{contains_pattern, lower};

/// 409 naming `rpps` or `email`, whichever unique key the row broke.
fn conflict_on_unique(err: diesel::result::Error) -> ApiError {
    if is_unique_violation(&err) {
        let detail = err.to_string();
        if detail.contains("rpps") {
            ApiError::conflict("rpps", "another account has this RPPS number")
        } else {
            ApiError::conflict("email", "another account has this email address")
        }
    } else {
        err.into()
    }
}

/// The invitation sent with a new account.
pub struct InvitationLetter<'a> {
    /// The token, in clear (only its hash is stored).
    pub token: &'a str,
    /// The link in the email.
    pub link: &'a str,
    pub ttl_s: u64,
}

/// Stores a new account whose role fits its organisation (422 naming
/// `organization_id` otherwise), and its invitation. 409 naming `email` or
/// `rpps` when taken.
pub fn create_invited(
    conn: &mut DbConnection,
    user: &User,
    letter: InvitationLetter<'_>,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    if let Some(org_id) = &user.organization_id {
        let org = Organization::find(conn, org_id)?
            .ok_or_else(|| ApiError::invalid("organization_id", "no such organisation"))?;
        let (role, kind) = (user.role, org.kind);
        if !role.fits(kind) {
            return Err(ApiError::invalid(
                "organization_id",
                format!("a {role} works at an addiction or pain centre, not a {kind}"),
            ));
        }
    }
    diesel::insert_into(users::table)
        .values(user)
        .execute(conn)
        .map_err(conflict_on_unique)?;
    invite(conn, user, letter, now)
}

/// Stores an invitation (hashed) and queues its email, in the caller's transaction.
pub fn invite(
    conn: &mut DbConnection,
    user: &User,
    letter: InvitationLetter<'_>,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let ttl = Duration::seconds(i64::try_from(letter.ttl_s).unwrap_or(i64::MAX / 1000));
    let invitation = Invitation {
        id: new_id(),
        user_id: user.id.clone(),
        token_hash: hash_token(letter.token),
        expires_at: now + ttl,
        accepted_at: None,
        created_at: now,
    };
    diesel::insert_into(invitations::table)
        .values(&invitation)
        .execute(conn)?;
    let email = Email::Invitation {
        link: letter.link.to_owned(),
        valid_days: letter.ttl_s.div_ceil(86_400),
    };
    outbox::queue(conn, &user.email, &email, now)?;
    Ok(())
}

/// Changes to an account; `None` leaves a field as it is (`Some(None)`
/// clears an optional one).
#[derive(Debug, Default)]
pub struct ProfileChanges {
    pub full_name: Option<String>,
    pub phone: Option<Option<String>>,
    pub rpps: Option<Option<String>>,
    pub notification_preference: Option<NotificationPreference>,
    /// `Some(false)` deactivates the account and revokes its sessions.
    pub active: Option<bool>,
}

/// Applies `changes` to the account and returns it as stored; `None` when
/// there is no such account. 409 naming `rpps` when the RPPS is taken.
pub fn update_profile(
    conn: &mut DbConnection,
    id: &str,
    changes: ProfileChanges,
    now: NaiveDateTime,
) -> Result<Option<User>, ApiError> {
    let Some(user) = User::find(conn, id)? else {
        return Ok(None);
    };
    let target = users::table.find(id);
    diesel::update(target)
        .set(users::updated_at.eq(now))
        .execute(conn)?;
    if let Some(full_name) = changes.full_name {
        diesel::update(target)
            .set(users::full_name.eq(full_name))
            .execute(conn)?;
    }
    if let Some(phone) = changes.phone {
        diesel::update(target)
            .set(users::phone.eq(phone))
            .execute(conn)?;
    }
    if let Some(rpps) = changes.rpps {
        diesel::update(target)
            .set(users::rpps.eq(rpps))
            .execute(conn)
            .map_err(conflict_on_unique)?;
    }
    if let Some(pref) = changes.notification_preference {
        diesel::update(target)
            .set(users::notification_preference.eq(pref.as_str()))
            .execute(conn)?;
    }
    if let Some(active) = changes.active {
        diesel::update(target)
            .set(users::active.eq(active))
            .execute(conn)?;
        if user.active && !active {
            User::revoke_sessions(conn, id, now)?;
        }
    }
    Ok(User::find(conn, id)?)
}

/// Sets a password the user chose (its PHC string) and revokes every
/// session and access token of the account.
pub fn change_password(
    conn: &mut DbConnection,
    id: &str,
    phc: &str,
    now: NaiveDateTime,
) -> QueryResult<()> {
    diesel::update(users::table.find(id))
        .set(users::password_hash.eq(phc))
        .execute(conn)?;
    User::revoke_sessions(conn, id, now)?;
    Ok(())
}

/// Accepts the account's pending invitations with the password it chose
/// (its PHC string); returns the account as stored.
pub fn accept_invitation(
    conn: &mut DbConnection,
    user_id: &str,
    phc: &str,
    now: NaiveDateTime,
) -> Result<User, ApiError> {
    diesel::update(invitations::table.filter(invitations::user_id.eq(user_id)))
        .filter(invitations::accepted_at.is_null())
        .set(invitations::accepted_at.eq(now))
        .execute(conn)?;
    diesel::update(users::table.find(user_id))
        .set((users::password_hash.eq(phc), users::updated_at.eq(now)))
        .execute(conn)?;
    User::find(conn, user_id)?.ok_or_else(|| ApiError::internal(anyhow::anyhow!("user vanished")))
}

/// What a directory search (`GET /users`) is narrowed to.
pub struct UserSearch {
    /// Only active accounts (everyone but administrators).
    pub active_only: bool,
    /// Part of the full name (trimmed; empty is no filter).
    pub q: Option<String>,
    pub role: Option<Role>,
    pub organization_id: Option<String>,
    /// Accounts whose id is after this one.
    pub cursor: Option<String>,
    /// Rows to load (a page's limit plus one, to know whether another follows).
    pub rows: i64,
}

/// Accounts by id, each with its organisation's name, narrowed by `search`.
pub fn directory(
    conn: &mut DbConnection,
    search: UserSearch,
) -> QueryResult<Vec<(User, Option<String>)>> {
    let mut query = users::table
        .left_join(organizations::table)
        .select((User::as_select(), organizations::name.nullable()))
        .order(users::id)
        .limit(search.rows)
        .into_boxed();
    if search.active_only {
        query = query.filter(users::active.eq(true));
    }
    if let Some(q) = search.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        query = query.filter(
            lower(users::full_name)
                .like(contains_pattern(q))
                .escape('\\'),
        );
    }
    if let Some(role) = search.role {
        query = query.filter(users::role.eq(role.as_str()));
    }
    if let Some(org) = search.organization_id {
        query = query.filter(users::organization_id.eq(org));
    }
    if let Some(cursor) = search.cursor {
        query = query.filter(users::id.gt(cursor));
    }
    query.load(conn)
}

/// The user's full name (every stored reference names a user).
pub fn full_name(conn: &mut DbConnection, id: &str) -> QueryResult<String> {
    users::table.find(id).select(users::full_name).first(conn)
}

/// An invitation that can still be accepted, or why not.
pub fn usable_invitation(
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
