//! Reading the audit trail: a patient's (its prescribers, administrators) or all of it (administrators).

use actix_web::web;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Query, path_id};
use super::scope::{RequestInfo, authorize};
use super::{Page, page_limit};
use crate::audit::{self, AuditEvent, Outcome};
use crate::auth::AuthUser;
use crate::domain::access::{Basis, Permission};
use crate::domain::role::Role;
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use crate::store::patient;

/// One audited access.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventView {
    pub seq: i64,
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor_id: Option<String>,
    pub actor_role: Option<String>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub patient_id: Option<String>,
    pub basis: Option<String>,
    /// `allowed` or `denied`.
    pub outcome: String,
    pub request_id: Option<String>,
    pub hash: String,
}

impl From<AuditEvent> for AuditEventView {
    fn from(e: AuditEvent) -> Self {
        Self {
            seq: e.seq,
            id: e.id,
            at: e.at.and_utc(),
            actor_id: e.actor_id,
            actor_role: e.actor_role,
            action: e.action,
            resource_type: e.resource_type,
            resource_id: e.resource_id,
            patient_id: e.patient_id,
            basis: e.basis,
            outcome: e.outcome,
            request_id: e.request_id,
            hash: e.hash,
        }
    }
}

text_enum! {
    /// Whether an audited access was let through (filter of the audit trail).
    OutcomeFilter {
        Allowed => "allowed",
        Denied => "denied",
    }
}

/// Filters of the audit trail; the cursor is a `seq`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    #[param(format = Uuid)]
    pub actor_id: Option<String>,
    #[param(format = Uuid)]
    pub patient_id: Option<String>,
    pub outcome: Option<OutcomeFilter>,
    /// From this time (RFC 3339, years 1 to 9999).
    #[serde(default, deserialize_with = "crate::api::extract::query_time")]
    pub from: Option<DateTime<Utc>>,
    /// Before this time (RFC 3339, years 1 to 9999).
    #[serde(default, deserialize_with = "crate::api::extract::query_time")]
    pub to: Option<DateTime<Utc>>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    pub cursor: Option<i64>,
}

async fn load(
    state: &AppState,
    filter: AuditFilter,
    patient: Option<String>,
) -> Result<Page<AuditEventView>, ApiError> {
    let limit = page_limit(filter.limit)?;
    let outcome = filter.outcome.map(|o| match o {
        OutcomeFilter::Allowed => Outcome::Allowed,
        OutcomeFilter::Denied => Outcome::Denied,
    });
    let actor = filter
        .actor_id
        .as_deref()
        .map(|a| path_id(a, "actor_id"))
        .transpose()?;
    // Checked even where the path names the patient: a malformed filter is an error.
    let filtered = filter
        .patient_id
        .as_deref()
        .map(|p| path_id(p, "patient_id"))
        .transpose()?;
    let patient = patient.or(filtered);
    let trail = audit::TrailFilter {
        actor_id: actor,
        patient_id: patient,
        outcome,
        from: filter.from.map(|t| t.naive_utc()),
        to: filter.to.map(|t| t.naive_utc()),
        after: filter.cursor,
    };
    let page = state
        .db
        .read(move |conn| {
            let rows = audit::trail(conn, trail, limit + 1)?;
            Ok(Page::from_rows(rows, limit, |e| e.seq.to_string()))
        })
        .await?;
    Ok(page.map(AuditEventView::from))
}

#[utoipa::path(get, path = "/api/v1/patients/{id}/audit-events", tag = "audit",
    params(("id" = uuid::Uuid, Path, description = "Patient id"), AuditFilter),
    responses(
        (status = 200, description = "Oldest first", body = Page<AuditEventView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Who accessed a patient's data (prescribers on the team, administrators).
pub async fn list_patient_audit_events(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    id: web::Path<String>,
    Query(filter): Query<AuditFilter>,
) -> Result<web::Json<Page<AuditEventView>>, ApiError> {
    let patient_id = path_id(&id, "id")?;
    if caller.role == Role::Admin {
        let exists = {
            let patient_id = patient_id.clone();
            state
                .db
                .read(move |conn| Ok(patient::exists(conn, &patient_id)?))
                .await?
        };
        let outcome = if exists {
            Outcome::Allowed
        } else {
            Outcome::Denied
        };
        let record = info.record(
            &caller,
            "audit_events",
            None,
            exists.then_some(&patient_id).map(String::as_str),
            Some(Basis::Admin),
            outcome,
        );
        state.audit.record(record).await?;
        if !exists {
            return Err(ApiError::NotFound("no such patient".into()));
        }
    } else {
        authorize(
            &state,
            &caller,
            &patient_id,
            Permission::ReadAudit,
            &info,
            true,
        )
        .await?;
    }
    Ok(web::Json(load(&state, filter, Some(patient_id)).await?))
}

#[utoipa::path(get, path = "/api/v1/audit-events", tag = "audit",
    params(AuditFilter),
    responses(
        (status = 200, description = "Oldest first", body = Page<AuditEventView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// The whole audit trail, filtered (administrators).
pub async fn list_audit_events(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    Query(filter): Query<AuditFilter>,
) -> Result<web::Json<Page<AuditEventView>>, ApiError> {
    caller.require_admin()?;
    state
        .audit
        .record(info.record(
            &caller,
            "audit_events",
            None,
            None,
            Some(Basis::Admin),
            Outcome::Allowed,
        ))
        .await?;
    Ok(web::Json(load(&state, filter, None).await?))
}
