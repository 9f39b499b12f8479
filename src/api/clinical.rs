//! The patient's clinical context: versioned like the plan (`ETag` is the
//! version, `If-Match` names the one edited), written by prescribers on the
//! team, read on any basis; each value with who recorded it and when.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::Json;
use super::scope::{PatientAccess, Read, WritePlan};
use super::versioned;
use crate::domain::clinical::{ClinicalContext, Facts};
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use crate::store::care_plan::{PersonRef, named_person, people};
use crate::store::clinical::{self, ContextRow};

/// Who recorded a value, and when (the day it was stated, for values with no measure date).
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordedBy {
    pub recorded_by: PersonRef,
    pub recorded_at: DateTime<Utc>,
}

/// One version of a patient's clinical context.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClinicalContextView {
    pub patient_id: String,
    pub version: i32,
    /// The values as recorded (stale measures included; the rules treat them as unknown).
    pub context: ClinicalContext,
    /// Per known field of `context`, who recorded its current value and when.
    pub recorded: BTreeMap<String, RecordedBy>,
    /// Measures too old to count for the rules today (field names).
    pub stale: Vec<String>,
    pub author: PersonRef,
    pub created_at: DateTime<Utc>,
}

fn view(
    conn: &mut crate::db::DbConnection,
    row: ContextRow,
    today: chrono::NaiveDate,
) -> Result<ClinicalContextView, ApiError> {
    let context = row.context()?;
    let provenance = row.provenance()?;
    let mut ids: Vec<&str> = vec![&row.author_id];
    ids.extend(provenance.values().map(|r| r.recorded_by.as_str()));
    let named = people(conn, &ids)?;
    let mut recorded = BTreeMap::new();
    for (field, r) in &provenance {
        recorded.insert(
            field.clone(),
            RecordedBy {
                recorded_by: named_person(&named, &r.recorded_by)?,
                recorded_at: r.recorded_at.and_utc(),
            },
        );
    }
    let stale = context
        .facts(today, None, None)
        .stale
        .into_iter()
        .map(str::to_owned)
        .collect();
    Ok(ClinicalContextView {
        author: named_person(&named, &row.author_id)?,
        patient_id: row.patient_id,
        version: row.version,
        context,
        recorded,
        stale,
        created_at: row.created_at.and_utc(),
    })
}

/// What the rules may believe of the patient today (`None`: no context recorded).
pub async fn patient_facts(state: &AppState, patient_id: &str) -> Result<Option<Facts>, ApiError> {
    let today = state.clock.today(state.settings.time_zone());
    let id = patient_id.to_owned();
    state
        .db
        .read(move |conn| clinical::facts_for(conn, &id, today))
        .await
}

#[utoipa::path(get, path = "/api/v1/patients/{id}/clinical-context", tag = "clinical context",
    params(("id" = uuid::Uuid, Path, description = "Patient id")),
    responses(
        (status = 200, description = "The current version; `ETag` is its number", body = ClinicalContextView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No basis on the patient, or no context recorded yet", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// The patient's clinical context (any basis).
pub async fn get_clinical_context(
    state: web::Data<AppState>,
    access: PatientAccess<Read>,
) -> Result<HttpResponse, ApiError> {
    let id = access.patient_id;
    let today = state.clock.today(state.settings.time_zone());
    let view = state
        .db
        .read(move |conn| {
            let row = clinical::current(conn, &id)?.ok_or_else(|| {
                ApiError::NotFound("no clinical context is recorded for this patient".into())
            })?;
            view(conn, row, today)
        })
        .await?;
    let version = view.version;
    Ok(versioned::current(&view, version))
}

#[utoipa::path(put, path = "/api/v1/patients/{id}/clinical-context", tag = "clinical context",
    params(
        ("id" = uuid::Uuid, Path, description = "Patient id"),
        ("If-Match" = Option<String>, Header, pattern = "^(W/)?\"?[1-9][0-9]{0,8}\"?$", description = "ETag of the version this edit is based on; required once a context exists"),
    ),
    request_body = ClinicalContext,
    responses(
        (status = 200, description = "A new version (ETag: its number)", body = ClinicalContextView),
        (status = 201, description = "The first version", body = ClinicalContextView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Prescribers on the team only", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The context changed since the If-Match version", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 428, description = "If-Match missing while a context exists", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Records a new version of the clinical context (prescribers on the team).
pub async fn put_clinical_context(
    state: web::Data<AppState>,
    req: HttpRequest,
    access: PatientAccess<WritePlan>,
    Json(body): Json<ClinicalContext>,
) -> Result<HttpResponse, ApiError> {
    let expected = versioned::if_match(&req)?;
    let today = state.clock.today(state.settings.time_zone());
    let errors = body.validate(today, "");
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let now = state.clock.now_naive();
    let view = state
        .db
        .write(move |conn| {
            let row = clinical::store(
                conn,
                &access.patient_id,
                &body,
                expected,
                &access.caller.id,
                now,
            )?;
            access.append_audit(conn, "clinical_context", Some(&row.id), now)?;
            view(conn, row, today)
        })
        .await?;
    let version = view.version;
    Ok(versioned::written(&view, version))
}
