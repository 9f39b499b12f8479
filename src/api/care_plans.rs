//! The shared care plan: immutable numbered versions, safety rules on write,
//! optimistic concurrency with `If-Match`, and the pharmacist's page.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::dispensations::DispensationView;
use super::extract::{Json, Query};
use super::interventions::InterventionView;
use super::scope::{PatientAccess, Read, RequestInfo, WritePlan, authorize};
use super::versioned;
use super::{Page, page_limit};
use crate::auth::AuthUser;
use crate::db::DbConnection;
use crate::db::models::Patient;
use crate::domain::access::Permission;
use crate::domain::clinical::ClinicalContext;
use crate::domain::drugs::{self, CATALOGUE, Drug};
use crate::domain::in_force::InForce;
use crate::domain::plan::{
    Acknowledgement, AnalgesicLine, Omt, OmtMedication, PlanContent, PlanStatus, Route,
    validate_acknowledgements,
};
use crate::domain::rules::{self, Warning};
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use crate::store::analgesic_page::{self, Sources};
use crate::store::care_plan::{
    self as care_plan, NewVersion, PersonRef, PlanSource, PlanVersionRow, current_version_row,
    named_person, person, prepare, version_row, write_version,
};
use crate::store::intervention;

/// A plan to write: its content, why it changes, and acknowledged warnings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanWrite {
    pub status: PlanStatus,
    pub omt: Omt,
    #[serde(default)]
    pub analgesics: Vec<AnalgesicLine>,
    #[schema(max_length = 1000)]
    pub pain_goal: Option<String>,
    #[schema(max_length = 2000)]
    pub non_drug_measures: Option<String>,
    pub review_date: Option<NaiveDate>,
    #[schema(min_length = 1, max_length = 500, pattern = "\\S")]
    pub change_summary: String,
    #[serde(default)]
    pub acknowledged_warnings: Vec<Acknowledgement>,
}

impl PlanWrite {
    /// Splits the body into content, summary and acknowledgements.
    pub fn into_parts(self) -> (PlanContent, String, Vec<Acknowledgement>) {
        (
            PlanContent {
                status: self.status,
                omt: self.omt,
                analgesics: self.analgesics,
                pain_goal: self.pain_goal,
                non_drug_measures: self.non_drug_measures,
                review_date: self.review_date,
            },
            self.change_summary,
            self.acknowledged_warnings,
        )
    }
}

/// A plan to check without writing.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanCheck {
    pub status: PlanStatus,
    pub omt: Omt,
    #[serde(default)]
    pub analgesics: Vec<AnalgesicLine>,
    pub pain_goal: Option<String>,
    pub non_drug_measures: Option<String>,
    pub review_date: Option<NaiveDate>,
    pub change_summary: Option<String>,
    #[serde(default)]
    pub acknowledged_warnings: Vec<Acknowledgement>,
    /// Check against this patient's stored clinical context (and age), with a basis on them.
    #[schema(format = Uuid)]
    pub patient_id: Option<String>,
    /// Check against this context instead of a stored one (same shape as
    /// `PUT /patients/{id}/clinical-context`); age comes from `patient_id` if given.
    pub clinical_context: Option<ClinicalContext>,
}

/// What the rules say of a plan.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResult {
    pub warnings: Vec<Warning>,
    /// True when a blocking warning is not acknowledged: a write would be refused.
    pub blocked: bool,
}

/// One version of a care plan.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanVersionView {
    pub patient_id: String,
    pub version: i32,
    // The content's fields, spelled out rather than `#[serde(flatten)]`: the
    // request schema of `PlanContent` forbids other properties, so a flattened
    // copy would make this response invalid against its own document.
    pub status: PlanStatus,
    pub omt: Omt,
    pub analgesics: Vec<AnalgesicLine>,
    pub pain_goal: Option<String>,
    pub non_drug_measures: Option<String>,
    pub review_date: Option<NaiveDate>,
    pub change_summary: String,
    pub source: Option<PlanSource>,
    pub acknowledged_warnings: Vec<Acknowledgement>,
    /// Everything the rules found when this version was written.
    pub warnings: Vec<Warning>,
    /// Pharmacists' interventions raised on this version, oldest first.
    pub interventions: Vec<InterventionView>,
    pub author: PersonRef,
    pub created_at: DateTime<Utc>,
}

/// A line of the version list.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanVersionSummary {
    pub version: i32,
    pub status: PlanStatus,
    pub change_summary: String,
    pub source: Option<PlanSource>,
    pub author: PersonRef,
    pub created_at: DateTime<Utc>,
}

/// The response body of a version row.
fn version_view(
    conn: &mut DbConnection,
    row: PlanVersionRow,
    author: PersonRef,
) -> Result<PlanVersionView, ApiError> {
    let source = row.source();
    let raised = intervention::for_version(conn, &row.patient_id, row.version)?;
    let interventions = super::interventions::views(conn, raised)?;
    let content = row.content.into_inner();
    Ok(PlanVersionView {
        status: content.status,
        omt: content.omt,
        analgesics: content.analgesics,
        pain_goal: content.pain_goal,
        non_drug_measures: content.non_drug_measures,
        review_date: content.review_date,
        source,
        acknowledged_warnings: row.acknowledged.into_inner(),
        warnings: row.warnings.into_inner(),
        interventions,
        patient_id: row.patient_id,
        version: row.version,
        change_summary: row.change_summary,
        author,
        created_at: row.created_at.and_utc(),
    })
}

#[utoipa::path(get, path = "/api/v1/patients/{id}/care-plan", tag = "care plan",
    params(("id" = uuid::Uuid, Path, description = "Patient id")),
    responses(
        (status = 200, description = "The current version; `ETag` is its number", body = PlanVersionView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No basis on the patient, or no plan yet", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// The current care plan.
pub async fn get_care_plan(
    state: web::Data<AppState>,
    access: PatientAccess<Read>,
) -> Result<HttpResponse, ApiError> {
    let id = access.patient_id;
    let view = state
        .db
        .read(move |conn| {
            let row = current_version_row(conn, &id)?
                .ok_or_else(|| ApiError::NotFound("this patient has no care plan yet".into()))?;
            let author = person(conn, &row.author_id)?;
            version_view(conn, row, author)
        })
        .await?;
    let version = view.version;
    Ok(versioned::current(&view, version))
}

#[utoipa::path(put, path = "/api/v1/patients/{id}/care-plan", tag = "care plan",
    params(
        ("id" = uuid::Uuid, Path, description = "Patient id"),
        ("If-Match" = Option<String>, Header, pattern = "^(W/)?\"?[1-9][0-9]{0,8}\"?$", description = "ETag of the version this edit is based on; required once a plan exists"),
    ),
    request_body = PlanWrite,
    responses(
        (status = 200, description = "A new version (ETag: its number)", body = PlanVersionView),
        (status = 201, description = "The first version", body = PlanVersionView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Prescribers on the team only", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The plan changed since the If-Match version", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid, or blocked by unacknowledged safety warnings (listed in `warnings`)", body = Problem, content_type = "application/problem+json"),
        (status = 428, description = "If-Match missing while a plan exists", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Writes a new version of the care plan (prescribers on the team).
pub async fn put_care_plan(
    state: web::Data<AppState>,
    req: HttpRequest,
    access: PatientAccess<WritePlan>,
    Json(body): Json<PlanWrite>,
) -> Result<HttpResponse, ApiError> {
    let expected = versioned::if_match(&req)?;
    let (content, summary, acks) = body.into_parts();
    let facts = super::clinical::patient_facts(&state, &access.patient_id).await?;
    let (content, warnings) = prepare(content, &summary, &acks, &access.caller.id, facts.as_ref())?;
    let now = state.clock.now_naive();
    let view = state
        .db
        .write(move |conn| {
            let row = write_version(
                conn,
                NewVersion {
                    patient_id: &access.patient_id,
                    content: &content,
                    warnings: &warnings,
                    acknowledged: &acks,
                    change_summary: &summary,
                    source: None,
                    author_id: &access.caller.id,
                },
                &access.relations,
                expected,
                now,
            )?;
            access.append_audit(conn, "care_plan", Some(&row.id), now)?;
            let author = person(conn, &row.author_id)?;
            version_view(conn, row, author)
        })
        .await?;
    let version = view.version;
    Ok(versioned::written(&view, version))
}

/// A page of plan versions: the cursor is a version number.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionPage {
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// The previous page's `next_cursor`: versions after this one.
    #[param(pattern = "^[1-9][0-9]{0,8}$")]
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/patients/{id}/care-plan/versions", tag = "care plan",
    params(("id" = uuid::Uuid, Path, description = "Patient id"), VersionPage),
    responses(
        (status = 200, description = "Oldest first", body = Page<PlanVersionSummary>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Every version of the plan.
pub async fn list_care_plan_versions(
    state: web::Data<AppState>,
    access: PatientAccess<Read>,
    Query(page): Query<VersionPage>,
) -> Result<web::Json<Page<PlanVersionSummary>>, ApiError> {
    let limit = page_limit(page.limit)?;
    let after: i32 = match page.cursor.as_deref() {
        None => 0,
        Some(c) => c
            .parse()
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| ApiError::malformed("cursor", "not a version number"))?,
    };
    let id = access.patient_id;
    let list = state
        .db
        .read(move |conn| {
            let items: Vec<PlanVersionSummary> =
                care_plan::versions_after(conn, &id, after, limit + 1)?
                    .into_iter()
                    .map(|(row, author)| PlanVersionSummary {
                        status: row.status,
                        source: row.source(),
                        version: row.version,
                        change_summary: row.change_summary,
                        author,
                        created_at: row.created_at.and_utc(),
                    })
                    .collect();
            Ok(Page::from_rows(items, limit, |v| v.version.to_string()))
        })
        .await?;
    Ok(web::Json(list))
}

#[utoipa::path(get, path = "/api/v1/patients/{id}/care-plan/versions/{n}", tag = "care plan",
    params(("id" = uuid::Uuid, Path, description = "Patient id"), ("n" = i32, Path, minimum = 1, description = "Version number")),
    responses(
        (status = 200, body = PlanVersionView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// One version of the plan.
pub async fn get_care_plan_version(
    state: web::Data<AppState>,
    access: PatientAccess<Read>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let n: i32 = path
        .1
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::malformed("n", "a version number (1, 2, …)"))?;
    let id = access.patient_id;
    let view = state
        .db
        .read(move |conn| {
            let row = version_row(conn, &id, n)?
                .ok_or_else(|| ApiError::NotFound("no such version".into()))?;
            let author = person(conn, &row.author_id)?;
            version_view(conn, row, author)
        })
        .await?;
    Ok(versioned::current(&view, n))
}

#[utoipa::path(post, path = "/api/v1/care-plans/check", tag = "care plan",
    request_body = PlanCheck,
    responses(
        (status = 200, description = "The warnings; nothing is written", body = CheckResult),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Clinicians only", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`patient_id`: no basis on the patient", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Runs the safety rules on a plan without writing it: with `patient_id`
/// against the patient's stored clinical context, with `clinical_context`
/// against that one, with neither on the drugs alone (an `info` says so).
pub async fn check_care_plan(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    Json(body): Json<PlanCheck>,
) -> Result<web::Json<CheckResult>, ApiError> {
    caller.require_clinician()?;
    let content = PlanContent {
        status: body.status,
        omt: body.omt,
        analgesics: body.analgesics,
        pain_goal: body.pain_goal,
        non_drug_measures: body.non_drug_measures,
        review_date: body.review_date,
    };
    let today = state.clock.today(state.settings.time_zone());
    let mut errors = content.validate();
    errors.extend(validate_acknowledgements(&body.acknowledged_warnings));
    if let Some(context) = &body.clinical_context {
        errors.extend(context.validate(today, "clinical_context."));
    }
    if body
        .patient_id
        .as_deref()
        .is_some_and(|id| uuid::Uuid::parse_str(id).is_err())
    {
        errors.push(crate::error::FieldError::new(
            "patient_id",
            "not a valid id (UUID)",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let facts = match (&body.patient_id, body.clinical_context) {
        (Some(pid), inline) => {
            // The one door: the stored context and the age are the patient's.
            authorize(&state, &caller, pid, Permission::Read, &info, true).await?;
            let pid = pid.clone();
            state
                .db
                .read(move |conn| match inline {
                    Some(context) => {
                        let patient = Patient::find(conn, &pid)?;
                        Ok(Some(context.facts(
                            today,
                            patient.as_ref().map(|p| p.birth_date),
                            patient.map(|p| p.sex),
                        )))
                    }
                    None => crate::store::clinical::facts_for(conn, &pid, today),
                })
                .await?
        }
        (None, Some(context)) => Some(context.facts(today, None, None)),
        (None, None) => None,
    };
    let warnings = rules::check_with(&content, facts.as_ref());
    let codes: Vec<&str> = body
        .acknowledged_warnings
        .iter()
        .map(|a| a.code.as_str())
        .collect();
    let blocked = !rules::unacknowledged_blocking(&warnings, &codes).is_empty();
    Ok(web::Json(CheckResult { warnings, blocked }))
}

#[utoipa::path(get, path = "/api/v1/drugs", tag = "care plan",
    responses(
        (status = 200, description = "The built-in catalogue", body = Vec<Drug>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// The drug catalogue the rules use.
pub async fn list_drugs(_caller: AuthUser) -> web::Json<&'static [Drug]> {
    web::Json(CATALOGUE)
}

/// The day to show the analgesic plan for.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OnDay {
    /// `YYYY-MM-DD`; today in the network's time zone (`network.time_zone`) when omitted.
    pub on: Option<NaiveDate>,
}

/// The patient as the pharmacist's page names them.
#[derive(Debug, Serialize, ToSchema)]
pub struct PatientBrief {
    pub id: String,
    pub display_name: String,
    pub birth_date: NaiveDate,
}

/// An organisation named on the page.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationRef {
    pub id: String,
    pub name: String,
    pub phone: Option<String>,
}

/// The OMT to dispense on the day.
#[derive(Debug, Serialize, ToSchema)]
pub struct OmtInForce {
    pub medication: OmtMedication,
    pub daily_dose_mg: f64,
    pub doses_per_day: u8,
    /// True while a temporary adjustment applies.
    pub temporary: bool,
    /// The end of the temporary adjustment in force.
    pub until: Option<NaiveDate>,
    /// The usual dose and schedule, shown beside a temporary one.
    pub usual_daily_dose_mg: Option<f64>,
    pub usual_doses_per_day: Option<u8>,
    pub dispensing_pharmacy: Option<OrganizationRef>,
    pub prescriber: Option<PersonRef>,
    /// Days from the page's day to the end of the temporary adjustment (0: it ends that day).
    pub days_left: Option<i64>,
    /// The latest dispensation of the medication.
    pub last_dispensation: Option<DispensationView>,
}

/// An analgesic line in force on the day.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveLine {
    pub drug: String,
    pub drug_name: String,
    pub dose_mg: f64,
    pub route: Route,
    pub times_per_day: Option<u8>,
    pub interval_h: Option<u8>,
    pub max_daily_mg: Option<f64>,
    pub as_needed: bool,
    pub start: NaiveDate,
    pub end: Option<NaiveDate>,
    pub prescriber: Option<PersonRef>,
    /// Days from the page's day to the line's end (0: it ends that day).
    pub days_left: Option<i64>,
    /// The latest dispensation of the line's drug.
    pub last_dispensation: Option<DispensationView>,
}

/// The destabilisation watch on the page's day.
#[derive(Debug, Serialize, ToSchema)]
pub struct WatchState {
    /// True for 7 days after a temporary OMT change ended.
    pub tightened: bool,
    /// The last day of the tightened watch.
    pub until: Option<NaiveDate>,
    /// Pain that alerts the referent: at this score once when tightened, twice in 24 h otherwise.
    pub pain_threshold: i32,
    /// COWS score that alerts the referent.
    pub cows_threshold: i32,
}

/// The pharmacist's one-page current analgesic plan.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnalgesicPlan {
    pub patient: PatientBrief,
    pub on: NaiveDate,
    pub status: PlanStatus,
    pub plan_version: i32,
    /// The earliest end among what is in force: re-check the plan by then.
    pub valid_until: Option<NaiveDate>,
    /// Null when no OMT is in force (or the plan is not active).
    pub omt: Option<OmtInForce>,
    /// Empty unless the plan is active.
    pub analgesics: Vec<ActiveLine>,
    pub last_changed_at: DateTime<Utc>,
    pub last_changed_by: PersonRef,
    pub destabilisation_watch: WatchState,
}

#[utoipa::path(get, path = "/api/v1/patients/{id}/analgesic-plan", tag = "care plan",
    params(("id" = uuid::Uuid, Path, description = "Patient id"), OnDay),
    responses(
        (status = 200, body = AnalgesicPlan),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No basis on the patient, or no plan yet", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// What to dispense on a day: OMT in force, active lines with their prescribers, until when.
pub async fn get_analgesic_plan(
    state: web::Data<AppState>,
    access: PatientAccess<Read>,
    Query(query): Query<OnDay>,
) -> Result<web::Json<AnalgesicPlan>, ApiError> {
    let day = query
        .on
        .unwrap_or_else(|| state.clock.today(state.settings.time_zone()));
    let id = access.patient_id;
    let cache = state.plan_cache.clone();
    // Its statements need no common snapshot (see `analgesic_page`).
    let sources = state
        .db
        .read_autocommit(move |conn| analgesic_page::load(conn, &cache, &id, day))
        .await?;
    Ok(web::Json(analgesic_plan(sources, day)?))
}

/// The page, from what [`analgesic_page::load`] read.
fn analgesic_plan(sources: Sources, day: NaiveDate) -> Result<AnalgesicPlan, ApiError> {
    let Sources {
        patient,
        version,
        people,
        pharmacy,
        mut dispensed,
    } = sources;
    let content = &*version.content;
    let in_force = InForce::of(content, day);
    let omt = match in_force.omt {
        Some(dose) => {
            let prescriber = match &content.omt.prescriber_id {
                Some(pid) => Some(named_person(&people, pid)?),
                None => None,
            };
            Some(OmtInForce {
                medication: content.omt.medication,
                daily_dose_mg: dose.daily_dose_mg,
                doses_per_day: dose.doses_per_day,
                temporary: dose.adjustment.is_some(),
                until: dose.until(),
                usual_daily_dose_mg: dose.adjustment.and(content.omt.daily_dose_mg),
                usual_doses_per_day: dose.adjustment.and(content.omt.doses_per_day),
                dispensing_pharmacy: pharmacy.map(|o| OrganizationRef {
                    id: o.id,
                    name: o.name,
                    phone: o.phone,
                }),
                prescriber,
                days_left: in_force.days_to(dose.until()),
                last_dispensation: content
                    .omt
                    .medication
                    .drug_code()
                    .and_then(|code| dispensed.remove(code))
                    .map(DispensationView::from),
            })
        }
        None => None,
    };
    let mut analgesics = Vec::with_capacity(in_force.lines.len());
    for line in &in_force.lines {
        let prescriber = match &line.prescriber_id {
            Some(pid) => Some(named_person(&people, pid)?),
            None => None,
        };
        analgesics.push(ActiveLine {
            drug_name: drugs::find(&line.drug)
                .map_or_else(|| line.drug.clone(), |d| d.name.to_owned()),
            drug: line.drug.clone(),
            dose_mg: line.dose_mg,
            route: line.route,
            times_per_day: line.times_per_day,
            interval_h: line.interval_h,
            max_daily_mg: line.max_daily_mg,
            as_needed: line.as_needed,
            start: line.start,
            end: line.end,
            prescriber,
            days_left: in_force.days_to(line.end),
            last_dispensation: dispensed
                .get(&line.drug)
                .cloned()
                .map(DispensationView::from),
        });
    }
    Ok(AnalgesicPlan {
        patient: PatientBrief {
            id: patient.id.clone(),
            display_name: format!(
                "{} {}",
                patient.given_names,
                patient.family_name.to_uppercase()
            ),
            birth_date: patient.birth_date,
        },
        on: day,
        status: content.status,
        plan_version: version.version,
        valid_until: in_force.valid_until,
        omt,
        analgesics,
        last_changed_at: version.created_at.and_utc(),
        last_changed_by: named_person(&people, &version.author_id)?,
        destabilisation_watch: WatchState {
            tightened: in_force.watch.tightened_until.is_some(),
            until: in_force.watch.tightened_until,
            pain_threshold: in_force.watch.pain_threshold,
            cows_threshold: in_force.watch.cows_threshold,
        },
    })
}
