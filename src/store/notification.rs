//! The in-app notifications a user reads: who may still see one (the one
//! door), marking one read. Raising them is `notify::inapp::notify`, in the
//! transaction of the change they tell of.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use crate::auth::AuthUser;
use crate::db::DbConnection;
use crate::db::schema::notifications;
use crate::error::ApiError;
use crate::notify::inapp::NotificationKind;
use crate::store::access::resolve;

/// Whether the caller may see a notification of theirs now: one about a
/// patient needs a basis on the patient (the one door), except the decision
/// on the caller's own access request, which they asked for without one.
pub fn visible(
    conn: &mut DbConnection,
    caller: &AuthUser,
    kind: NotificationKind,
    patient_id: Option<&str>,
    now: DateTime<Utc>,
) -> QueryResult<bool> {
    let Some(patient_id) = patient_id else {
        return Ok(true);
    };
    if matches!(
        kind,
        NotificationKind::AccessRequestApproved | NotificationKind::AccessRequestDenied
    ) {
        return Ok(true);
    }
    Ok(resolve(conn, caller, patient_id, now)?.is_some())
}

/// A notification as listed: id, kind, resource type and id, patient,
/// created at, read at.
pub type NotificationRow = (
    String,
    NotificationKind,
    String,
    String,
    Option<String>,
    NaiveDateTime,
    Option<NaiveDateTime>,
);

/// Up to `rows` of the user's notifications, newest first, before `before`
/// (an id), unread ones only or all; not yet narrowed by [`visible`].
pub fn newest(
    conn: &mut DbConnection,
    user_id: &str,
    unread_only: bool,
    before: Option<&str>,
    rows: i64,
) -> QueryResult<Vec<NotificationRow>> {
    let mut query = notifications::table
        .filter(notifications::user_id.eq(user_id))
        .order(notifications::id.desc())
        .limit(rows)
        .select((
            notifications::id,
            notifications::kind,
            notifications::resource_type,
            notifications::resource_id,
            notifications::patient_id,
            notifications::created_at,
            notifications::read_at,
        ))
        .into_boxed();
    if unread_only {
        query = query.filter(notifications::read_at.is_null());
    }
    if let Some(before) = before {
        query = query.filter(notifications::id.lt(before));
    }
    query.load(conn)
}

/// Marks one of the caller's notifications read (again is harmless); 404
/// when it is not theirs or they may no longer see it.
pub fn mark_read(
    conn: &mut DbConnection,
    caller: &AuthUser,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let mine = notifications::table
        .find(id)
        .filter(notifications::user_id.eq(&caller.id));
    let found: Option<(NotificationKind, Option<String>, Option<NaiveDateTime>)> = mine
        .select((
            notifications::kind,
            notifications::patient_id,
            notifications::read_at,
        ))
        .first(conn)
        .optional()?;
    match found {
        Some((kind, patient, read_at)) if visible(conn, caller, kind, patient.as_deref(), now)? => {
            if read_at.is_none() {
                diesel::update(mine)
                    .set(notifications::read_at.eq(now.naive_utc()))
                    .execute(conn)?;
            }
            Ok(())
        }
        _ => Err(ApiError::NotFound("no such notification".into())),
    }
}
