//! Accounts made without an invitation: the first administrator
//! (`relais create-admin`), the demo network's users, the test harness's.

use diesel::prelude::*;

use crate::auth::password;
use crate::clock::Clock;
use crate::db::models::{User, new_id};
use crate::db::schema::users;
use crate::db::{Db, is_unique_violation};
use crate::domain::contact::parse_email;
use crate::domain::role::{NotificationPreference, Role};
use crate::domain::text::{self, Flavour};
use crate::error::ApiError;

/// An account made without an invitation (administrator, demo users).
pub struct NewAccount<'a> {
    pub email: &'a str,
    pub full_name: &'a str,
    pub role: Role,
    pub organization_id: Option<String>,
    pub phone: Option<&'a str>,
}

/// Creates an active administrator with a password; returns its id.
pub async fn create_admin(
    db: &Db,
    clock: &dyn Clock,
    email: &str,
    full_name: &str,
    password: &str,
) -> anyhow::Result<String> {
    let account = NewAccount {
        email,
        full_name,
        role: Role::Admin,
        organization_id: None,
        phone: None,
    };
    create_account(db, clock, account, password).await
}

/// Creates an active account with a password (no invitation); returns its id.
pub async fn create_account(
    db: &Db,
    clock: &dyn Clock,
    account: NewAccount<'_>,
    password: &str,
) -> anyhow::Result<String> {
    let email = parse_email(account.email).map_err(|m| anyhow::anyhow!("--email: {m}"))?;
    let full_name = text::required(
        account.full_name,
        "full_name",
        Flavour::Name,
        text::PERSON_NAME_MAX,
    )
    .map_err(|e| anyhow::anyhow!("--full-name: {}", e.message))?;
    password::check_new(password, "password").map_err(|_| {
        anyhow::anyhow!(
            "the password needs at least {} characters",
            password::MIN_LEN
        )
    })?;
    let phc = password::hash(password).map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = clock.now_naive();
    let user = User {
        id: new_id(),
        email,
        full_name,
        role: account.role,
        organization_id: account.organization_id,
        rpps: None,
        phone: account.phone.map(str::to_owned),
        active: true,
        password_hash: Some(phc),
        token_version: 0,
        notification_preference: NotificationPreference::Immediate,
        created_at: now,
        updated_at: now,
    };
    let id = user.id.clone();
    db.write(move |conn| {
        diesel::insert_into(users::table)
            .values(&user)
            .execute(&mut **conn)
            .map_err(|e| {
                if is_unique_violation(&e) {
                    ApiError::conflict("email", "an account with this email exists")
                } else {
                    e.into()
                }
            })?;
        Ok(())
    })
    .await
    .map_err(|e| match e {
        ApiError::Conflict { detail, .. } => anyhow::anyhow!("--email: {detail}"),
        other => anyhow::anyhow!("{other}"),
    })?;
    Ok(id)
}
