//! The care team as stored: memberships with their start and end, the
//! consent rule on who may join, the referent handing the role over.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::models::{User, new_id};
use crate::db::schema::{care_team_members, organizations, users};
use crate::db::{DbConnection, Tx};
use crate::domain::access::{Relations, TeamRole};
use crate::domain::role::Role;
use crate::error::ApiError;
use crate::notify::inapp::{NotificationKind, Subject, notify};

/// The patient's current referent (the user id), if any: the one membership
/// with the referent role that has not ended. [`add_member`] ends the
/// previous referent's row when another takes the role, so there is at most
/// one. Who is told of an intervention, an access request, an alert.
pub fn referent(conn: &mut DbConnection, patient_id: &str) -> QueryResult<Option<String>> {
    care_team_members::table
        .filter(care_team_members::patient_id.eq(patient_id))
        .filter(care_team_members::until.is_null())
        .filter(care_team_members::team_role.eq(TeamRole::Referent.as_str()))
        .select(care_team_members::user_id)
        .first(conn)
        .optional()
}

/// A membership, present or past, with the member's directory entry.
#[derive(Debug, Queryable)]
pub struct Membership {
    pub user_id: String,
    pub full_name: String,
    pub role: Role,
    pub organization_id: Option<String>,
    pub organization_name: Option<String>,
    pub phone: Option<String>,
    pub team_role: TeamRole,
    pub since: NaiveDateTime,
    pub until: Option<NaiveDateTime>,
}

/// Every membership of the patient's team: the current ones first, each
/// group by start.
pub fn members(conn: &mut DbConnection, patient_id: &str) -> QueryResult<Vec<Membership>> {
    care_team_members::table
        .inner_join(users::table.left_join(organizations::table))
        .filter(care_team_members::patient_id.eq(patient_id))
        .order((
            care_team_members::until.is_not_null(),
            care_team_members::since,
            care_team_members::id,
        ))
        .select((
            users::id,
            users::full_name,
            users::role,
            users::organization_id,
            organizations::name.nullable(),
            users::phone,
            care_team_members::team_role,
            care_team_members::since,
            care_team_members::until,
        ))
        .load(conn)
}

/// Adds the user `user_id` to the team (422 naming `user_id` when there is
/// no such user; see [`add_member`]) and tells them; returns them.
#[allow(clippy::too_many_arguments)]
pub fn add(
    conn: &mut Tx<'_>,
    patient_id: &str,
    relations: &Relations,
    user_id: &str,
    team_role: TeamRole,
    added_by: &str,
    public_url: &str,
    now: NaiveDateTime,
) -> Result<User, ApiError> {
    let user =
        User::find(conn, user_id)?.ok_or_else(|| ApiError::invalid("user_id", "no such user"))?;
    add_member(conn, patient_id, relations, &user, team_role, added_by, now)?;
    let subject = Subject {
        resource_type: "patient",
        resource_id: patient_id,
        patient_id: Some(patient_id),
    };
    notify(
        conn,
        &user.id,
        NotificationKind::AddedToCareTeam,
        &subject,
        public_url,
        now,
    )?;
    Ok(user)
}

/// Adds `user` to the team in the caller's transaction, checking the consent
/// rule; used by the team route and by access-request approval.
pub fn add_member(
    conn: &mut DbConnection,
    patient_id: &str,
    relations: &Relations,
    user: &User,
    team_role: TeamRole,
    added_by: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let role = user.role;
    if !user.active || !role.is_clinician() {
        return Err(ApiError::invalid("user_id", "not an active clinician"));
    }
    let current = relations.members.iter().find(|m| m.user_id == user.id);
    match (current.map(|m| m.team_role), team_role) {
        (Some(TeamRole::Referent), _) => {
            return Err(ApiError::conflict("user_id", "already the referent"));
        }
        (Some(TeamRole::Member), TeamRole::Member) => {
            return Err(ApiError::conflict("user_id", "already on the care team"));
        }
        _ => {}
    }
    if !relations.sharing_allowed_with(user.organization_id.as_deref()) {
        return Err(ApiError::conflict(
            "user_id",
            "the patient has not consented to sharing outside the referent's organisation",
        ));
    }
    if team_role == TeamRole::Referent {
        // The previous referent stays on the team as a member.
        let previous: Vec<(String, String)> = care_team_members::table
            .filter(care_team_members::patient_id.eq(patient_id))
            .filter(care_team_members::until.is_null())
            .filter(care_team_members::team_role.eq(TeamRole::Referent.as_str()))
            .select((care_team_members::id, care_team_members::user_id))
            .load(conn)?;
        for (row_id, user_id) in previous {
            end_membership(conn, &row_id, added_by, now)?;
            insert_membership(conn, patient_id, &user_id, TeamRole::Member, added_by, now)?;
        }
        // A member promoted to referent: their member row ends here.
        if current.is_some() {
            diesel::update(
                care_team_members::table
                    .filter(care_team_members::patient_id.eq(patient_id))
                    .filter(care_team_members::user_id.eq(&user.id))
                    .filter(care_team_members::until.is_null()),
            )
            .set((
                care_team_members::until.eq(now),
                care_team_members::ended_by.eq(added_by),
            ))
            .execute(conn)?;
        }
    }
    insert_membership(conn, patient_id, &user.id, team_role, added_by, now)
}

fn insert_membership(
    conn: &mut DbConnection,
    patient_id: &str,
    user_id: &str,
    team_role: TeamRole,
    added_by: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    diesel::insert_into(care_team_members::table)
        .values((
            care_team_members::id.eq(new_id()),
            care_team_members::patient_id.eq(patient_id),
            care_team_members::user_id.eq(user_id),
            care_team_members::team_role.eq(team_role.as_str()),
            care_team_members::since.eq(now),
            care_team_members::added_by.eq(added_by),
        ))
        .execute(conn)?;
    Ok(())
}

fn end_membership(
    conn: &mut DbConnection,
    row_id: &str,
    ended_by: &str,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(care_team_members::table.find(row_id))
        .set((
            care_team_members::until.eq(now),
            care_team_members::ended_by.eq(ended_by),
        ))
        .execute(conn)
}

/// Ends `user_id`'s current membership of the team (404 when they are not
/// on it; 409 naming `user_id` for the referent, who must hand over first).
pub fn end(
    conn: &mut DbConnection,
    patient_id: &str,
    user_id: &str,
    ended_by: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let row: (String, String) = care_team_members::table
        .filter(care_team_members::patient_id.eq(patient_id))
        .filter(care_team_members::user_id.eq(user_id))
        .filter(care_team_members::until.is_null())
        .select((care_team_members::id, care_team_members::team_role))
        .first(conn)
        .optional()?
        .ok_or_else(|| ApiError::NotFound("not a member of this care team".into()))?;
    if row.1 == TeamRole::Referent.as_str() {
        return Err(ApiError::conflict(
            "user_id",
            "the referent cannot leave: hand the referent role to another member first",
        ));
    }
    end_membership(conn, &row.0, ended_by, now)?;
    Ok(())
}
