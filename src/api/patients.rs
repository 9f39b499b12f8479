//! Patients: creation by prescribers, scoped listing, INS lookup, consent.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use diesel::QueryResult;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Json, Query};
use super::scope::{ManageTeam, PatientAccess, Read, RequestInfo, WritePlan};
use super::users::optional_phone;
use super::{Page, page_limit};
use crate::audit::{self, Outcome};
use crate::auth::AuthUser;
use crate::db::DbConnection;
use crate::db::models::{Patient, new_id};
use crate::domain::access::{Basis, ConsentStatus};
use crate::domain::ins::Ins;
use crate::domain::text::{self, Flavour};
use crate::error::{ApiError, FieldError, Problem};
use crate::state::AppState;
use crate::store::patient::{self, PatientSearch};

pub use crate::domain::patient::Sex;

/// A patient as shown to those with a basis.
#[derive(Debug, Serialize, ToSchema)]
pub struct PatientView {
    pub id: String,
    pub ins: Option<String>,
    pub family_name: String,
    pub given_names: String,
    pub birth_date: NaiveDate,
    pub sex: Sex,
    pub phone: Option<String>,
    /// The latest consent decision (`null`: none recorded, sharing limited to the referent's organisation).
    pub consent: Option<ConsentStatus>,
    /// The caller's basis on this patient.
    pub access_basis: Basis,
    /// The patient's conversation (`/threads/{thread_id}/messages`).
    pub thread_id: String,
    pub created_at: DateTime<Utc>,
}

impl PatientView {
    fn new(
        patient: Patient,
        consent: Option<ConsentStatus>,
        basis: Basis,
        thread_id: String,
    ) -> Self {
        Self {
            thread_id,
            sex: patient.sex,
            id: patient.id,
            ins: patient.ins,
            family_name: patient.family_name,
            given_names: patient.given_names,
            birth_date: patient.birth_date,
            phone: patient.phone,
            consent,
            access_basis: basis,
            created_at: patient.created_at.and_utc(),
        }
    }
}

/// A new patient; the creator becomes referent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePatient {
    /// 13-character NIR and 2-digit key (Corsica: 2A/2B); spaces are
    /// ignored, an empty string means none.
    #[schema(pattern = "^\\s*(([0-9]\\s*){5}[0-9ABab]\\s*([0-9]\\s*){9})?$")]
    pub ins: Option<String>,
    #[schema(min_length = 1, max_length = 100)]
    pub family_name: String,
    #[schema(min_length = 1, max_length = 200)]
    pub given_names: String,
    pub birth_date: NaiveDate,
    pub sex: Sex,
    pub phone: Option<String>,
}

/// Changes to a patient's identity.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePatient {
    /// An empty string clears it; spaces are ignored.
    #[schema(pattern = "^\\s*(([0-9]\\s*){5}[0-9ABab]\\s*([0-9]\\s*){9})?$")]
    pub ins: Option<String>,
    #[schema(min_length = 1, max_length = 100)]
    pub family_name: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    pub given_names: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub sex: Option<Sex>,
    /// An empty string clears it.
    pub phone: Option<String>,
}

/// Filters of the patient list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PatientFilter {
    /// Part of a name, or a whole INS.
    pub q: Option<String>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

fn optional_ins(raw: Option<&str>, errors: &mut Vec<FieldError>) -> Option<String> {
    let raw = raw.map(str::trim).filter(|s| !s.is_empty())?;
    Ins::parse(raw)
        .map(|ins| ins.as_str().to_owned())
        .map_err(|e| errors.push(FieldError::new("ins", e.to_string())))
        .ok()
}

fn check_birth_date(date: NaiveDate, today: NaiveDate, errors: &mut Vec<FieldError>) {
    let earliest = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or(NaiveDate::MIN);
    if date > today || date < earliest {
        errors.push(FieldError::new(
            "birth_date",
            "must be between 1900-01-01 and today",
        ));
    }
}

fn name(raw: &str, field: &str, max: usize, errors: &mut Vec<FieldError>) -> Option<String> {
    text::required(raw, field, Flavour::Name, max)
        .map_err(|e| errors.push(e))
        .ok()
}

#[utoipa::path(post, path = "/api/v1/patients", tag = "patients",
    request_body = CreatePatient,
    responses(
        (status = 201, description = "Created; the caller is its referent", body = PatientView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only prescribers create patients", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The INS is already registered: use the lookup", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Registers a patient (prescribers); the creator becomes the referent.
pub async fn create_patient(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    Json(body): Json<CreatePatient>,
) -> Result<HttpResponse, ApiError> {
    if !caller.role.is_prescriber() {
        return Err(ApiError::Forbidden(
            "only prescribers register patients".into(),
        ));
    }
    let now = state.clock.now();
    let mut errors = Vec::new();
    let ins = optional_ins(body.ins.as_deref(), &mut errors);
    let family_name = name(
        &body.family_name,
        "family_name",
        text::FAMILY_NAME_MAX,
        &mut errors,
    );
    let given_names = name(
        &body.given_names,
        "given_names",
        text::GIVEN_NAMES_MAX,
        &mut errors,
    );
    let today = now.with_timezone(&state.settings.time_zone()).date_naive();
    check_birth_date(body.birth_date, today, &mut errors);
    let phone = optional_phone(body.phone.as_deref(), &mut errors);
    let (Some(family_name), Some(given_names), true) =
        (family_name, given_names, errors.is_empty())
    else {
        return Err(ApiError::Validation(errors));
    };
    let now = now.naive_utc();
    let patient = Patient {
        id: new_id(),
        ins,
        family_name,
        given_names,
        birth_date: body.birth_date,
        sex: body.sex,
        phone,
        created_by: caller.id.clone(),
        created_at: now,
        updated_at: now,
    };
    let patient = state
        .db
        .write(move |conn| {
            let thread_id = patient::register(conn, &patient, now)?;
            let record = info.record(
                &caller,
                "patient",
                Some(&patient.id),
                Some(&patient.id),
                Some(Basis::Team),
                Outcome::Allowed,
            );
            audit::append(conn, &[record], now)?;
            Ok((patient, thread_id))
        })
        .await?;
    let (patient, thread_id) = patient;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/patients/{}", patient.id)))
        .json(PatientView::new(patient, None, Basis::Team, thread_id)))
}

#[utoipa::path(get, path = "/api/v1/patients", tag = "patients",
    params(PatientFilter),
    responses(
        (status = 200, description = "Only patients the caller has a basis on", body = Page<PatientView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Lists the caller's patients (every one listed is audited).
pub async fn list_patients(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    Query(filter): Query<PatientFilter>,
) -> Result<web::Json<Page<PatientView>>, ApiError> {
    let limit = page_limit(filter.limit)?;
    let now = state.clock.now();
    let page = {
        let caller = caller.clone();
        state
            .db
            .read(move |conn| {
                let candidates = patient::candidates(
                    conn,
                    &caller.id,
                    now.naive_utc(),
                    PatientSearch {
                        q: filter.q,
                        cursor: filter.cursor,
                        rows: limit + 1,
                    },
                )?;
                let raw = Page::from_rows(candidates, limit, |p| p.id.clone());
                let items = patient::visible_patients(conn, &caller, now, raw.items)?
                    .into_iter()
                    .map(|v| PatientView::new(v.patient, v.consent, v.basis, v.thread_id))
                    .collect();
                Ok(Page {
                    items,
                    next_cursor: raw.next_cursor,
                })
            })
            .await?
    };
    let records = page
        .items
        .iter()
        .map(|p| {
            info.record(
                &caller,
                "patient",
                Some(&p.id),
                Some(&p.id),
                Some(p.access_basis),
                Outcome::Allowed,
            )
        })
        .collect();
    state.audit.record_all(records).await?;
    Ok(web::Json(page))
}

#[utoipa::path(get, path = "/api/v1/patients/{id}", tag = "patients",
    params(("id" = uuid::Uuid, Path, description = "Patient id")),
    responses(
        (status = 200, body = PatientView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown, or no basis on this patient", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// One patient.
pub async fn get_patient(
    state: web::Data<AppState>,
    access: PatientAccess<Read>,
) -> Result<web::Json<PatientView>, ApiError> {
    let id = access.patient_id.clone();
    let (patient, thread_id) = state
        .db
        .read(move |conn| {
            let patient = Patient::find(conn, &id)?
                .ok_or_else(|| ApiError::NotFound("no such patient".into()))?;
            Ok((patient, patient::thread_of(conn, &id)?))
        })
        .await?;
    Ok(web::Json(PatientView::new(
        patient,
        access.relations.consent,
        access.basis,
        thread_id,
    )))
}

#[utoipa::path(patch, path = "/api/v1/patients/{id}", tag = "patients",
    params(("id" = uuid::Uuid, Path, description = "Patient id")),
    request_body = UpdatePatient,
    responses(
        (status = 200, body = PatientView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Corrects a patient's identity (prescribers on the team).
pub async fn update_patient(
    state: web::Data<AppState>,
    access: PatientAccess<WritePlan>,
    Json(body): Json<UpdatePatient>,
) -> Result<web::Json<PatientView>, ApiError> {
    let now = state.clock.now();
    let mut errors = Vec::new();
    let ins = body
        .ins
        .as_deref()
        .map(|raw| optional_ins(Some(raw), &mut errors));
    let family_name = body
        .family_name
        .as_deref()
        .and_then(|n| name(n, "family_name", text::FAMILY_NAME_MAX, &mut errors));
    let given_names = body
        .given_names
        .as_deref()
        .and_then(|n| name(n, "given_names", text::GIVEN_NAMES_MAX, &mut errors));
    if let Some(date) = body.birth_date {
        let today = now.with_timezone(&state.settings.time_zone()).date_naive();
        check_birth_date(date, today, &mut errors);
    }
    let phone = body
        .phone
        .as_deref()
        .map(|raw| optional_phone(Some(raw), &mut errors));
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let now = now.naive_utc();
    let consent = access.relations.consent;
    let basis = access.basis;
    let patient = state
        .db
        .write(move |conn| {
            let changes = patient::IdentityChanges {
                ins,
                family_name,
                given_names,
                birth_date: body.birth_date,
                sex: body.sex,
                phone,
            };
            let row = patient::correct_identity(conn, &access.patient_id, changes, now)?;
            access.append_audit(conn, "patient", Some(&access.patient_id), now)?;
            Ok((row, patient::thread_of(conn, &access.patient_id)?))
        })
        .await?;
    let (patient, thread_id) = patient;
    Ok(web::Json(PatientView::new(
        patient, consent, basis, thread_id,
    )))
}

/// The query of an INS lookup.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LookupQuery {
    /// The patient's INS: the 13-character NIR (Corsica: 2A/2B) and its 2-digit key.
    #[param(pattern = "^\\s*([0-9]\\s*){5}[0-9ABab]\\s*([0-9]\\s*){9}$")]
    pub ins: String,
}

/// Whom to call about a patient one has no access to.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReferentContact {
    pub full_name: String,
    pub organization: Option<String>,
    /// The referent's phone, or their organisation's.
    pub phone: Option<String>,
}

/// The minimal answer of a lookup: enough to ask for access, nothing clinical.
#[derive(Debug, Serialize, ToSchema)]
pub struct LookupResult {
    pub found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referent: Option<ReferentContact>,
}

#[utoipa::path(get, path = "/api/v1/patients/lookup", tag = "patients",
    params(LookupQuery),
    responses(
        (status = 200, body = LookupResult),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Clinicians only", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a valid INS", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Finds whether a patient is registered, and whom to ask for access (audited).
pub async fn lookup_patient(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    Query(query): Query<LookupQuery>,
) -> Result<web::Json<LookupResult>, ApiError> {
    caller.require_clinician()?;
    let ins = Ins::parse(&query.ins).map_err(|e| ApiError::invalid("ins", e.to_string()))?;
    let now = state.clock.now_naive();
    let result = state
        .db
        .write(move |conn| {
            let patient_id = patient::find_by_ins(conn, &ins)?;
            let Some(patient_id) = patient_id else {
                let record = info.record(
                    &caller,
                    "patient_lookup",
                    None,
                    None,
                    None,
                    Outcome::Allowed,
                );
                audit::append(conn, &[record], now)?;
                return Ok(LookupResult {
                    found: false,
                    patient_id: None,
                    referent: None,
                });
            };
            let referent = patient::referent_contact(conn, &patient_id)?.map(|r| ReferentContact {
                full_name: r.full_name,
                organization: r.organization,
                phone: r.phone,
            });
            let record = info.record(
                &caller,
                "patient_lookup",
                Some(&patient_id),
                Some(&patient_id),
                None,
                Outcome::Allowed,
            );
            audit::append(conn, &[record], now)?;
            Ok(LookupResult {
                found: true,
                patient_id: Some(patient_id),
                referent,
            })
        })
        .await?;
    Ok(web::Json(result))
}

/// One recorded consent decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentEntry {
    pub status: ConsentStatus,
    pub note: Option<String>,
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
}

/// The current decision and its history, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentView {
    /// `null` when no decision was recorded (sharing limited to the referent's organisation).
    pub status: Option<ConsentStatus>,
    pub history: Vec<ConsentEntry>,
}

/// A consent decision to record.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordConsent {
    pub status: ConsentStatus,
    #[schema(max_length = 1000)]
    pub note: Option<String>,
}

fn consent_view(conn: &mut DbConnection, patient_id: &str) -> QueryResult<ConsentView> {
    let history: Vec<ConsentEntry> = patient::consent_history(conn, patient_id)?
        .into_iter()
        .map(|(status, note, recorded_by, at)| ConsentEntry {
            status,
            note,
            recorded_by,
            recorded_at: at.and_utc(),
        })
        .collect();
    Ok(ConsentView {
        status: history.first().map(|e| e.status),
        history,
    })
}

#[utoipa::path(get, path = "/api/v1/patients/{id}/consent", tag = "patients",
    params(("id" = uuid::Uuid, Path, description = "Patient id")),
    responses(
        (status = 200, body = ConsentView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// The patient's consent to sharing, with its history.
pub async fn get_consent(
    state: web::Data<AppState>,
    access: PatientAccess<Read>,
) -> Result<web::Json<ConsentView>, ApiError> {
    let id = access.patient_id;
    let view = state
        .db
        .read(move |conn| Ok(consent_view(conn, &id)?))
        .await?;
    Ok(web::Json(view))
}

#[utoipa::path(put, path = "/api/v1/patients/{id}/consent", tag = "patients",
    params(("id" = uuid::Uuid, Path, description = "Patient id")),
    request_body = RecordConsent,
    responses(
        (status = 200, description = "Recorded; access of other organisations follows at once", body = ConsentView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Records the patient's decision on sharing (prescribers on the team).
pub async fn put_consent(
    state: web::Data<AppState>,
    access: PatientAccess<ManageTeam>,
    Json(body): Json<RecordConsent>,
) -> Result<web::Json<ConsentView>, ApiError> {
    let note = text::optional(
        body.note.as_deref(),
        "note",
        Flavour::Free,
        text::CONSENT_NOTE_MAX,
    )
    .map_err(|e| ApiError::Validation(vec![e]))?;
    let now = state.clock.now_naive();
    let view = state
        .db
        .write(move |conn| {
            let id = patient::record_consent(
                conn,
                &access.patient_id,
                body.status,
                note.as_deref(),
                &access.caller.id,
                now,
            )?;
            access.append_audit(conn, "consent", Some(&id), now)?;
            Ok(consent_view(conn, &access.patient_id)?)
        })
        .await?;
    Ok(web::Json(view))
}
