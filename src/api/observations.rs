//! Nurses' and pharmacists' observations, and the destabilisation watch.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Json, Query};
use super::scope::{PatientAccess, Read, RecordObservation};
use super::{Page, page_limit};
use crate::domain::text::{self, Flavour};
use crate::domain::watch::Scores;
use crate::error::{ApiError, FieldError, Problem};
use crate::state::AppState;
use crate::store::observation::{self, ObservationRow};

pub use crate::store::observation::ObservationKind;

/// A new observation: at least one measure.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewObservation {
    /// Pain, 0 (none) to 10.
    #[schema(minimum = 0, maximum = 10)]
    #[serde(default, deserialize_with = "crate::domain::json::opt_integer")]
    pub pain_score: Option<i32>,
    /// Sedation, 0 (awake) to 4 (unrousable).
    #[schema(minimum = 0, maximum = 4)]
    #[serde(default, deserialize_with = "crate::domain::json::opt_integer")]
    pub sedation_score: Option<i32>,
    /// Withdrawal, COWS 0 to 48.
    #[schema(minimum = 0, maximum = 48)]
    #[serde(default, deserialize_with = "crate::domain::json::opt_integer")]
    pub cows_score: Option<i32>,
    /// OMT dose dispensed, mg. Deprecated: record a dispensation
    /// (`POST /patients/{id}/dispensations`), which the early-refill watch reads.
    #[schema(exclusive_minimum = 0, maximum = 10000, deprecated)]
    pub dose_dispensed_mg: Option<f64>,
    #[schema(max_length = 2000)]
    pub note: Option<String>,
}

/// A recorded observation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ObservationView {
    pub id: String,
    pub patient_id: String,
    pub author_id: String,
    pub pain_score: Option<i32>,
    pub sedation_score: Option<i32>,
    pub cows_score: Option<i32>,
    pub dose_dispensed_mg: Option<f64>,
    pub note: Option<String>,
    #[serde(serialize_with = "utc")]
    #[schema(value_type = DateTime<Utc>)]
    pub recorded_at: NaiveDateTime,
}

impl From<ObservationRow> for ObservationView {
    fn from(row: ObservationRow) -> Self {
        ObservationView {
            id: row.id,
            patient_id: row.patient_id,
            author_id: row.author_id,
            pain_score: row.pain_score,
            sedation_score: row.sedation_score,
            cows_score: row.cows_score,
            dose_dispensed_mg: row.dose_dispensed_mg,
            note: row.note,
            recorded_at: row.recorded_at,
        }
    }
}

fn utc<S: serde::Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    t.and_utc().serialize(s)
}

/// Filters of the observation list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ObservationFilter {
    pub kind: Option<ObservationKind>,
    /// RFC 3339 (years 1 to 9999); only observations from then on.
    #[serde(default, deserialize_with = "crate::api::extract::query_time")]
    pub since: Option<DateTime<Utc>>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

impl NewObservation {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut range = |value: Option<i32>, field: &str, max: i32| {
            if value.is_some_and(|v| !(0..=max).contains(&v)) {
                errors.push(FieldError::new(field, format!("0 to {max}")));
            }
        };
        range(self.pain_score, "pain_score", 10);
        range(self.sedation_score, "sedation_score", 4);
        range(self.cows_score, "cows_score", 48);
        if self
            .dose_dispensed_mg
            .is_some_and(|d| !d.is_finite() || d <= 0.0 || d > 10_000.0)
        {
            errors.push(FieldError::new(
                "dose_dispensed_mg",
                "a positive number of mg",
            ));
        }
        if let Err(e) = text::optional(
            self.note.as_deref(),
            "note",
            Flavour::Free,
            text::OBSERVATION_NOTE_MAX,
        ) {
            errors.push(e);
        }
        let measures = [
            self.pain_score.is_some(),
            self.sedation_score.is_some(),
            self.cows_score.is_some(),
            self.dose_dispensed_mg.is_some(),
        ];
        if !measures.contains(&true) {
            errors.push(FieldError::new(
                "pain_score",
                "an observation needs at least one of pain_score, sedation_score, cows_score, dose_dispensed_mg",
            ));
        }
        errors
    }
}

#[utoipa::path(post, path = "/api/v1/patients/{id}/observations", tag = "observations",
    params(("id" = uuid::Uuid, Path, description = "Patient id")),
    request_body = NewObservation,
    responses(
        (status = 201, body = ObservationView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Team members and emergency grantees only", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Records an observation; crossing an alert threshold notifies the referent once per episode.
pub async fn create_observation(
    state: web::Data<AppState>,
    access: PatientAccess<RecordObservation>,
    Json(body): Json<NewObservation>,
) -> Result<HttpResponse, ApiError> {
    let errors = body.validate();
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let now = state.clock.now_naive();
    let today = state.clock.today(state.settings.time_zone());
    let public_url = state.settings.server.public_url.clone();
    let view = state
        .db
        .write(move |conn| {
            let scores = Scores {
                pain: body.pain_score,
                sedation: body.sedation_score,
                cows: body.cows_score,
            };
            let new = observation::NewObservation {
                patient_id: &access.patient_id,
                author_id: &access.caller.id,
                scores,
                dose_dispensed_mg: body.dose_dispensed_mg,
                note: body.note.as_deref(),
            };
            let id = observation::record(conn, new, &public_url, now, today)?;
            access.append_audit(conn, "observation", Some(&id), now)?;
            Ok(ObservationView::from(observation::find(conn, &id)?))
        })
        .await?;
    state.outbox.wake();
    Ok(HttpResponse::Created().json(view))
}

#[utoipa::path(get, path = "/api/v1/patients/{id}/observations", tag = "observations",
    params(("id" = uuid::Uuid, Path, description = "Patient id"), ObservationFilter),
    responses(
        (status = 200, description = "Newest first", body = Page<ObservationView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// The patient's observations.
pub async fn list_observations(
    state: web::Data<AppState>,
    access: PatientAccess<Read>,
    Query(filter): Query<ObservationFilter>,
) -> Result<web::Json<Page<ObservationView>>, ApiError> {
    let limit = page_limit(filter.limit)?;
    let id = access.patient_id;
    let page = state
        .db
        .read(move |conn| {
            let rows = observation::newest(
                conn,
                &id,
                filter.kind,
                filter.since.map(|t| t.naive_utc()),
                filter.cursor.as_deref(),
                limit + 1,
            )?;
            Ok(Page::from_rows(rows, limit, |o| o.id.clone()).map(ObservationView::from))
        })
        .await?;
    Ok(web::Json(page))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(pain: Option<i32>, sedation: Option<i32>, cows: Option<i32>) -> NewObservation {
        NewObservation {
            pain_score: pain,
            sedation_score: sedation,
            cows_score: cows,
            dose_dispensed_mg: None,
            note: None,
        }
    }

    #[test]
    fn validation_names_fields() {
        let fields = |o: NewObservation| {
            o.validate()
                .into_iter()
                .map(|e| e.field)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            fields(obs(Some(11), Some(5), Some(49))),
            ["pain_score", "sedation_score", "cows_score"]
        );
        assert_eq!(fields(obs(None, None, None)), ["pain_score"]);
        assert!(fields(obs(Some(0), None, None)).is_empty());
    }
}
