//! The care team: who looks after a patient, since when, until when.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use diesel::QueryResult;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{Json, Query, path_id};
use super::scope::{ManageTeam, PatientAccess, Read};
use super::{Page, PageQuery};
use crate::auth::AuthUser;
use crate::db::DbConnection;
use crate::domain::access::{Permission, TeamRole, allows};
use crate::domain::role::Role;
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use crate::store::care_team;

/// A membership, present or past.
#[derive(Debug, Serialize, ToSchema)]
pub struct TeamMemberView {
    pub user_id: String,
    pub full_name: String,
    pub role: Role,
    pub organization_id: Option<String>,
    pub organization_name: Option<String>,
    pub phone: Option<String>,
    pub team_role: TeamRole,
    pub since: DateTime<Utc>,
    /// Set once the membership has ended.
    pub until: Option<DateTime<Utc>>,
}

/// A clinician to add to the team.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    #[schema(format = Uuid)]
    pub user_id: String,
    /// `referent` hands the referent role over; the previous referent stays a member.
    pub team_role: Option<TeamRole>,
}

fn team(conn: &mut DbConnection, patient_id: &str) -> QueryResult<Vec<TeamMemberView>> {
    Ok(care_team::members(conn, patient_id)?
        .into_iter()
        .map(|m| TeamMemberView {
            user_id: m.user_id,
            full_name: m.full_name,
            role: m.role,
            organization_id: m.organization_id,
            organization_name: m.organization_name,
            phone: m.phone,
            team_role: m.team_role,
            since: m.since.and_utc(),
            until: m.until.map(|t| t.and_utc()),
        })
        .collect())
}

#[utoipa::path(get, path = "/api/v1/patients/{id}/care-team", tag = "care team",
    params(("id" = uuid::Uuid, Path, description = "Patient id"), PageQuery),
    responses(
        (status = 200, description = "Active members first, then past ones", body = Page<TeamMemberView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// The patient's care team, with its history.
pub async fn list_care_team(
    state: web::Data<AppState>,
    access: PatientAccess<Read>,
    Query(page): Query<PageQuery>,
) -> Result<web::Json<Page<TeamMemberView>>, ApiError> {
    let id = access.patient_id;
    let members = state.db.read(move |conn| Ok(team(conn, &id)?)).await?;
    // A membership is one person over one stretch of time.
    let key = |m: &TeamMemberView| format!("{}.{}", m.user_id, m.since.timestamp_micros());
    Ok(web::Json(Page::of_list(members, &page, key)?))
}

#[utoipa::path(post, path = "/api/v1/patients/{id}/care-team", tag = "care team",
    params(("id" = uuid::Uuid, Path, description = "Patient id")),
    request_body = AddMember,
    responses(
        (status = 201, description = "Added; the new member is notified", body = Vec<TeamMemberView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already a member, or no consent to share with their organisation", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Adds a clinician to the team (prescribers on the team).
pub async fn add_care_team_member(
    state: web::Data<AppState>,
    access: PatientAccess<ManageTeam>,
    Json(body): Json<AddMember>,
) -> Result<HttpResponse, ApiError> {
    let user_id = uuid::Uuid::parse_str(&body.user_id)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::invalid("user_id", "not a valid id (UUID)"))?;
    let team_role = body.team_role.unwrap_or(TeamRole::Member);
    let now = state.clock.now_naive();
    let public_url = state.settings.server.public_url.clone();
    let members = state
        .db
        .write(move |conn| {
            let user = care_team::add(
                conn,
                &access.patient_id,
                &access.relations,
                &user_id,
                team_role,
                &access.caller.id,
                &public_url,
                now,
            )?;
            access.append_audit(conn, "care_team_member", Some(&user.id), now)?;
            Ok(team(conn, &access.patient_id)?)
        })
        .await?;
    state.outbox.wake();
    Ok(HttpResponse::Created().json(members))
}

#[utoipa::path(delete, path = "/api/v1/patients/{id}/care-team/{user_id}", tag = "care team",
    params(
        ("id" = uuid::Uuid, Path, description = "Patient id"),
        ("user_id" = uuid::Uuid, Path, description = "The member to remove (yourself to leave)"),
    ),
    responses(
        (status = 204, description = "The membership has ended (it stays in the history)"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The referent must hand the role over first", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Ends a membership: prescribers on the team remove anyone; anyone may leave.
pub async fn remove_care_team_member(
    state: web::Data<AppState>,
    access: PatientAccess<Read>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let target = path_id(&path.1, "user_id")?;
    let caller: &AuthUser = &access.caller;
    if target != caller.id && !allows(access.basis, caller.role, Permission::ManageTeam) {
        return Err(access
            .forbid(&state, "only prescribers on the team remove other members")
            .await);
    }
    let now = state.clock.now_naive();
    state
        .db
        .write(move |conn| {
            care_team::end(conn, &access.patient_id, &target, &access.caller.id, now)?;
            access.append_audit(conn, "care_team_member", Some(&target), now)?;
            Ok(())
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
