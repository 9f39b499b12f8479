//! Dispensations: the pharmacist records what was handed out (the OMT or a
//! line of the current plan); an early refill alerts the referent once per
//! episode. They replace the `dose_dispensed_mg` observation, which stays
//! readable (and accepted, deprecated) so that nothing stored is lost.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{Json, Query};
use super::scope::{PatientAccess, PharmacyAct, Read};
use super::{Page, PageQuery, page_limit};
use crate::domain::drugs;
use crate::error::{ApiError, FieldError, Problem};
use crate::state::AppState;
use crate::store::dispensation::{self, DispensationRow, NewDispensation};

/// The longest supply one dispensation covers, in days.
pub const DAYS_SUPPLY_MAX: i32 = 90;

/// A dispensation to record.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDispensationBody {
    /// Index of the line in the current plan (from 0); `null` or absent: the OMT.
    #[schema(minimum = 0, maximum = 1000)]
    #[serde(default, deserialize_with = "crate::domain::json::opt_integer")]
    pub line: Option<u32>,
    /// A code of the catalogue: the line's drug (or the OMT's medication).
    pub drug: String,
    /// The daily dose dispensed, mg.
    #[schema(exclusive_minimum = 0, maximum = 100000)]
    pub dose_mg: f64,
    /// Days of treatment handed out, 1 to 90.
    #[schema(minimum = 1, maximum = 90)]
    #[serde(deserialize_with = "crate::domain::json::integer")]
    pub days_supply: i32,
    /// `YYYY-MM-DD`; today in the network's time zone when omitted; not in the future.
    pub dispensed_on: Option<NaiveDate>,
}

/// A recorded dispensation.
#[derive(Debug, Serialize, ToSchema)]
pub struct DispensationView {
    pub id: String,
    pub patient_id: String,
    /// The line of the plan it was for; `null`: the OMT.
    pub line: Option<i32>,
    pub drug: String,
    pub dose_mg: f64,
    pub days_supply: i32,
    pub dispensed_on: NaiveDate,
    /// Before 80 % of the previous supply of the same drug had elapsed.
    pub early_refill: bool,
    pub author_id: String,
    pub created_at: DateTime<Utc>,
}

impl From<DispensationRow> for DispensationView {
    fn from(r: DispensationRow) -> Self {
        Self {
            id: r.id,
            patient_id: r.patient_id,
            line: r.line_index,
            drug: r.drug,
            dose_mg: r.dose_mg,
            days_supply: r.days_supply,
            dispensed_on: r.dispensed_on,
            early_refill: r.early_refill,
            author_id: r.author_id,
            created_at: r.created_at.and_utc(),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/patients/{id}/dispensations", tag = "dispensations",
    params(("id" = uuid::Uuid, Path, description = "Patient id")),
    request_body = NewDispensationBody,
    responses(
        (status = 201, body = DispensationView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Pharmacists on the team only", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not what the current plan prescribes there, or out of range", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Records a dispensation (pharmacists on the team); an early refill alerts the referent.
pub async fn create_dispensation(
    state: web::Data<AppState>,
    access: PatientAccess<PharmacyAct>,
    Json(body): Json<NewDispensationBody>,
) -> Result<HttpResponse, ApiError> {
    let today = state.clock.today(state.settings.time_zone());
    let on = body.dispensed_on.unwrap_or(today);
    let mut errors = Vec::new();
    if drugs::find(&body.drug).is_none() {
        errors.push(FieldError::new(
            "drug",
            "not in the drug catalogue (GET /api/v1/drugs)",
        ));
    }
    if !body.dose_mg.is_finite() || body.dose_mg <= 0.0 || body.dose_mg > 100_000.0 {
        errors.push(FieldError::new("dose_mg", "a positive number of mg"));
    }
    if !(1..=DAYS_SUPPLY_MAX).contains(&body.days_supply) {
        errors.push(FieldError::new(
            "days_supply",
            format!("1 to {DAYS_SUPPLY_MAX}"),
        ));
    }
    if on > today {
        errors.push(FieldError::new("dispensed_on", "must not be in the future"));
    }
    if (today - on).num_days() > 366 {
        errors.push(FieldError::new("dispensed_on", "at most a year ago"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let now = state.clock.now_naive();
    let public_url = state.settings.server.public_url.clone();
    let view = state
        .db
        .write(move |conn| {
            let row = dispensation::record(
                conn,
                NewDispensation {
                    patient_id: &access.patient_id,
                    line: body.line.map(|l| l as usize),
                    drug: &body.drug,
                    dose_mg: body.dose_mg,
                    days_supply: body.days_supply,
                    dispensed_on: on,
                    author_id: &access.caller.id,
                },
                &public_url,
                now,
            )?;
            access.append_audit(conn, "dispensation", Some(&row.id), now)?;
            Ok(DispensationView::from(row))
        })
        .await?;
    state.outbox.wake();
    Ok(HttpResponse::Created().json(view))
}

#[utoipa::path(get, path = "/api/v1/patients/{id}/dispensations", tag = "dispensations",
    params(("id" = uuid::Uuid, Path, description = "Patient id"), PageQuery),
    responses(
        (status = 200, description = "Newest first", body = Page<DispensationView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// The patient's dispensations (any basis).
pub async fn list_dispensations(
    state: web::Data<AppState>,
    access: PatientAccess<Read>,
    Query(page): Query<PageQuery>,
) -> Result<web::Json<Page<DispensationView>>, ApiError> {
    let limit = page_limit(page.limit)?;
    let id = access.patient_id;
    let list = state
        .db
        .read(move |conn| {
            let rows = dispensation::list_for_patient(conn, &id, limit, page.cursor.as_deref())?;
            Ok(Page::from_rows(rows, limit, |r| r.id.clone()).map(DispensationView::from))
        })
        .await?;
    Ok(web::Json(list))
}
