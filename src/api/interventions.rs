//! Pharmacist interventions: a pharmacist on the team raises one on a plan
//! version (the OMT or one line); the line's prescriber accepts or refuses
//! it. Same door as everything about a patient: a party *and* a basis now.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use diesel::QueryResult;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Json, Query, path_id};
use super::scope::{Linked, LinkedAccess, PatientAccess, PharmacyAct, Read, WritePlan};
use super::{Page, page_limit};
use crate::audit;
use crate::auth::AuthUser;
use crate::db::DbConnection;
use crate::db::models::Organization;
use crate::domain::role::Role;
use crate::domain::text::{self, Flavour};
use crate::domain::workflow::{
    InterventionAction, InterventionProblem, InterventionStatus, ProposedAction,
};
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use crate::store::care_plan::{PersonRef, named_person, people};
use crate::store::intervention::{self, Answer, InterventionRow, NewIntervention};

/// The longest note or comment.
pub const INTERVENTION_TEXT_MAX: usize = 2_000;

/// A new intervention.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInterventionBody {
    /// The plan version it is about.
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "crate::domain::json::integer")]
    pub plan_version: i32,
    /// Index of the analgesic line in that version (from 0); `null` or absent: the OMT.
    #[schema(minimum = 0, maximum = 1000)]
    #[serde(default, deserialize_with = "crate::domain::json::opt_integer")]
    pub line: Option<u32>,
    pub problem: InterventionProblem,
    pub proposed_action: ProposedAction,
    #[schema(max_length = 2000)]
    pub note: Option<String>,
}

/// An intervention as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct InterventionView {
    pub id: String,
    pub patient_id: String,
    pub plan_version: i32,
    /// The line's index in that version; `null`: the OMT.
    pub line: Option<i32>,
    /// The drug of the line (or the OMT's medication) in that version.
    pub drug: String,
    pub problem: InterventionProblem,
    pub proposed_action: ProposedAction,
    pub note: Option<String>,
    pub status: InterventionStatus,
    pub author: PersonRef,
    /// The prescriber who answers it.
    pub addressee: PersonRef,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    /// The plan version that resolves it (an accepted intervention may name one).
    pub resolved_by_version: Option<i32>,
    pub comment: Option<String>,
}

/// Builds the views of `rows`, naming each person once.
pub fn views(
    conn: &mut DbConnection,
    rows: Vec<InterventionRow>,
) -> Result<Vec<InterventionView>, ApiError> {
    let ids: Vec<&str> = rows
        .iter()
        .flat_map(|r| [r.author_id.as_str(), r.addressee_id.as_str()])
        .collect();
    let named = people(conn, &ids)?;
    rows.into_iter()
        .map(|r| {
            Ok(InterventionView {
                author: named_person(&named, &r.author_id)?,
                addressee: named_person(&named, &r.addressee_id)?,
                id: r.id,
                patient_id: r.patient_id,
                plan_version: r.plan_version,
                line: r.line_index,
                drug: r.drug,
                problem: r.problem,
                proposed_action: r.proposed_action,
                note: r.note,
                status: r.status,
                created_at: r.created_at.and_utc(),
                decided_at: r.decided_at.map(|t| t.and_utc()),
                resolved_by_version: r.resolved_by_version,
                comment: r.comment,
            })
        })
        .collect()
}

fn one(conn: &mut DbConnection, row: InterventionRow) -> Result<InterventionView, ApiError> {
    views(conn, vec![row])?
        .pop()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no view")))
}

fn optional_text(value: Option<&str>, field: &str) -> Result<Option<String>, ApiError> {
    text::optional(value, field, Flavour::Free, INTERVENTION_TEXT_MAX)
        .map_err(|e| ApiError::Validation(vec![e]))
}

#[utoipa::path(post, path = "/api/v1/patients/{id}/interventions", tag = "interventions",
    params(("id" = uuid::Uuid, Path, description = "Patient id")),
    request_body = NewInterventionBody,
    responses(
        (status = 201, body = InterventionView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Pharmacists on the team only", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Nobody on the team can answer for the line", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No such version or line", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Raises an intervention on a plan version; its prescriber is notified.
pub async fn create_intervention(
    state: web::Data<AppState>,
    access: PatientAccess<PharmacyAct>,
    Json(body): Json<NewInterventionBody>,
) -> Result<HttpResponse, ApiError> {
    let note = optional_text(body.note.as_deref(), "note")?;
    if body.plan_version < 1 {
        return Err(ApiError::invalid(
            "plan_version",
            "a version number (1, 2, …)",
        ));
    }
    let now = state.clock.now_naive();
    let public_url = state.settings.server.public_url.clone();
    let view = state
        .db
        .write(move |conn| {
            let row = intervention::raise(
                conn,
                NewIntervention {
                    patient_id: &access.patient_id,
                    plan_version: body.plan_version,
                    line: body.line.map(|l| l as usize),
                    problem: body.problem,
                    proposed_action: body.proposed_action,
                    note: note.as_deref(),
                    author_id: &access.caller.id,
                },
                &public_url,
                now,
            )?;
            access.append_audit(conn, "intervention", Some(&row.id), now)?;
            one(conn, row)
        })
        .await?;
    state.outbox.wake();
    Ok(HttpResponse::Created().json(view))
}

/// Filters of the intervention list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InterventionFilter {
    pub status: Option<InterventionStatus>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/patients/{id}/interventions", tag = "interventions",
    params(("id" = uuid::Uuid, Path, description = "Patient id"), InterventionFilter),
    responses(
        (status = 200, description = "Newest first", body = Page<InterventionView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// The patient's interventions (any basis).
pub async fn list_interventions(
    state: web::Data<AppState>,
    access: PatientAccess<Read>,
    Query(filter): Query<InterventionFilter>,
) -> Result<web::Json<Page<InterventionView>>, ApiError> {
    let limit = page_limit(filter.limit)?;
    let id = access.patient_id;
    let page = state
        .db
        .read(move |conn| {
            let rows = intervention::list_for_patient(
                conn,
                &id,
                filter.status,
                limit,
                filter.cursor.as_deref(),
            )?;
            let page = Page::from_rows(rows, limit, |r| r.id.clone());
            Ok(Page {
                next_cursor: page.next_cursor,
                items: views(conn, page.items)?,
            })
        })
        .await?;
    Ok(web::Json(page))
}

impl Linked for InterventionRow {
    const RESOURCE: &'static str = "intervention";

    fn load(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Self>> {
        InterventionRow::find(conn, id)
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn patient_id(&self) -> Option<&str> {
        Some(&self.patient_id)
    }

    /// Its addressee: the prescriber who answers it.
    fn is_party(&self, _: &mut DbConnection, caller: &AuthUser) -> QueryResult<bool> {
        Ok(self.addressee_id == caller.id)
    }
}

/// Accepting an intervention.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptBody {
    /// The plan version that resolves it, if one was written.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "crate::domain::json::opt_integer")]
    pub resolved_by_version: Option<i32>,
    #[schema(max_length = 2000)]
    pub comment: Option<String>,
}

/// Refusing an intervention: why.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefuseBody {
    #[schema(min_length = 1, max_length = 2000, pattern = "\\S")]
    pub comment: String,
}

async fn answer(
    state: web::Data<AppState>,
    access: LinkedAccess<InterventionRow, WritePlan>,
    action: InterventionAction,
    resolved_by_version: Option<i32>,
    comment: Option<String>,
) -> Result<web::Json<InterventionView>, ApiError> {
    let now = state.clock.now_naive();
    let public_url = state.settings.server.public_url.clone();
    let record = access.audit();
    let id = access.object.id.clone();
    let view = state
        .db
        .write(move |conn| {
            let answer = Answer {
                action,
                resolved_by_version,
                comment: comment.as_deref(),
            };
            let row = intervention::decide(conn, &id, answer, &public_url, now)?;
            audit::append(conn, &[record], now)?;
            one(conn, row)
        })
        .await?;
    state.outbox.wake();
    Ok(web::Json(view))
}

#[utoipa::path(post, path = "/api/v1/interventions/{id}/accept", tag = "interventions",
    params(("id" = uuid::Uuid, Path, description = "Intervention id")),
    request_body = AcceptBody,
    responses(
        (status = 200, body = InterventionView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not its addressee, or no basis on the patient now", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Answered already", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Accepts an intervention (its addressee), optionally naming the version that resolves it.
pub async fn accept_intervention(
    state: web::Data<AppState>,
    access: LinkedAccess<InterventionRow, WritePlan>,
    Json(body): Json<AcceptBody>,
) -> Result<web::Json<InterventionView>, ApiError> {
    let comment = optional_text(body.comment.as_deref(), "comment")?;
    if body.resolved_by_version.is_some_and(|v| v < 1) {
        return Err(ApiError::invalid(
            "resolved_by_version",
            "a version number (1, 2, …)",
        ));
    }
    answer(
        state,
        access,
        InterventionAction::Accept,
        body.resolved_by_version,
        comment,
    )
    .await
}

#[utoipa::path(post, path = "/api/v1/interventions/{id}/refuse", tag = "interventions",
    params(("id" = uuid::Uuid, Path, description = "Intervention id")),
    request_body = RefuseBody,
    responses(
        (status = 200, body = InterventionView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not its addressee, or no basis on the patient now", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Answered already", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Refuses an intervention (its addressee), with a comment.
pub async fn refuse_intervention(
    state: web::Data<AppState>,
    access: LinkedAccess<InterventionRow, WritePlan>,
    Json(body): Json<RefuseBody>,
) -> Result<web::Json<InterventionView>, ApiError> {
    let comment = text::required(
        &body.comment,
        "comment",
        Flavour::Free,
        INTERVENTION_TEXT_MAX,
    )
    .map_err(|e| ApiError::Validation(vec![e]))?;
    answer(
        state,
        access,
        InterventionAction::Refuse,
        None,
        Some(comment),
    )
    .await
}

/// How a pharmacy's interventions fared.
#[derive(Debug, Serialize, ToSchema)]
pub struct InterventionMetrics {
    pub organization_id: String,
    pub raised: i64,
    pub open: i64,
    pub accepted: i64,
    pub refused: i64,
    /// Accepted among the answered ones; null while none is answered.
    pub acceptance_rate: Option<f64>,
}

#[utoipa::path(get, path = "/api/v1/organizations/{id}/intervention-metrics", tag = "interventions",
    params(("id" = uuid::Uuid, Path, description = "Organisation id (a pharmacy)")),
    responses(
        (status = 200, body = InterventionMetrics),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Members of the organisation and administrators", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// The acceptance rate of the interventions raised by an organisation's pharmacists (counts only).
pub async fn intervention_metrics(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
) -> Result<web::Json<InterventionMetrics>, ApiError> {
    let org = path_id(&id, "id")?;
    if caller.role != Role::Admin && caller.organization_id.as_deref() != Some(org.as_str()) {
        return Err(ApiError::Forbidden(
            "members of the organisation and administrators only".into(),
        ));
    }
    let metrics = state
        .db
        .read(move |conn| {
            if Organization::find(conn, &org)?.is_none() {
                return Err(ApiError::NotFound("no such organisation".into()));
            }
            let t = intervention::tally(conn, &org)?;
            let answered = t.accepted + t.refused;
            Ok(InterventionMetrics {
                organization_id: org,
                raised: t.open + answered,
                open: t.open,
                accepted: t.accepted,
                refused: t.refused,
                acceptance_rate: (answered > 0).then(|| t.accepted as f64 / answered as f64),
            })
        })
        .await?;
    Ok(web::Json(metrics))
}
