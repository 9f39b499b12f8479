//! Rows as stored, and the queries on them that more than one module needs.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;

use super::DbConnection;
use super::schema::{
    email_outbox, invitations, organizations, patients, refresh_tokens, sessions, users,
};
use crate::domain::patient::Sex;
use crate::domain::role::{NotificationPreference, OrgKind, Role};

/// An organisation of the network.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = organizations)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub kind: OrgKind,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub created_at: NaiveDateTime,
}

impl Organization {
    /// The organisation with this id, if any.
    pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Self>> {
        crate::per_backend!(conn, |c| organizations::table
            .find(id)
            .select(Self::as_select())
            .first(c)
            .optional())
    }
}

/// A user account.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: String,
    pub email: String,
    pub full_name: String,
    pub role: Role,
    pub organization_id: Option<String>,
    pub rpps: Option<String>,
    pub phone: Option<String>,
    pub active: bool,
    pub password_hash: Option<String>,
    pub token_version: i32,
    pub notification_preference: NotificationPreference,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl User {
    /// The user with this id, if any.
    pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Self>> {
        crate::per_backend!(conn, |c| users::table
            .find(id)
            .select(Self::as_select())
            .first(c)
            .optional())
    }

    /// The user with this (normalised) email, if any.
    pub fn find_by_email(conn: &mut DbConnection, email: &str) -> QueryResult<Option<Self>> {
        users::table
            .filter(users::email.eq(email))
            .select(Self::as_select())
            .first(conn)
            .optional()
    }

    /// Invalidates every access token issued so far and revokes every
    /// session and refresh token.
    pub fn revoke_sessions(
        conn: &mut DbConnection,
        id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::update(users::table.find(id))
            .set((
                users::token_version.eq(users::token_version + 1),
                users::updated_at.eq(now),
            ))
            .execute(conn)?;
        diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::user_id.eq(id))
                .filter(refresh_tokens::revoked_at.is_null()),
        )
        .set(refresh_tokens::revoked_at.eq(now))
        .execute(conn)?;
        diesel::update(
            sessions::table
                .filter(sessions::user_id.eq(id))
                .filter(sessions::revoked_at.is_null()),
        )
        .set(sessions::revoked_at.eq(now))
        .execute(conn)?;
        super::announce_revocation(conn, &format!("user:{id}"))
    }
}

/// An invitation to set a password (the token itself is only ever emailed).
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = invitations)]
pub struct Invitation {
    pub id: String,
    pub user_id: String,
    pub token_hash: String,
    pub expires_at: NaiveDateTime,
    pub accepted_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
}

/// A refresh token (stored as a hash), one link of a rotation family.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshToken {
    pub id: String,
    pub user_id: String,
    pub family_id: String,
    pub token_hash: String,
    pub issued_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
}

/// An email waiting in, or sent from, the outbox.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = email_outbox)]
pub struct OutboxEmail {
    pub id: String,
    pub to_address: String,
    pub subject: String,
    pub body: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub locked_until: Option<NaiveDateTime>,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub sent_at: Option<NaiveDateTime>,
}

/// A patient's identity.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = patients)]
pub struct Patient {
    pub id: String,
    pub ins: Option<String>,
    pub family_name: String,
    pub given_names: String,
    pub birth_date: NaiveDate,
    pub sex: Sex,
    pub phone: Option<String>,
    pub created_by: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl Patient {
    /// The patient with this id, if any. Callers must have checked access.
    pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Self>> {
        crate::per_backend!(conn, |c| patients::table
            .find(id)
            .select(Self::as_select())
            .first(c)
            .optional())
    }
}

/// A fresh UUIDv7 as stored text.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
