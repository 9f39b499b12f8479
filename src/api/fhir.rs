//! The FHIR R4 façade at `/fhir/r4/` (DESIGN.md §14): reads of Relais's own
//! records as FHIR resources, behind the same door and audit as the REST
//! reads (`PatientAccess`, or [`authorize`] for a search naming a patient),
//! and discharge Bundles posted as handovers through the same
//! `store::handover::send` as `POST /patients/{id}/handovers`. The mapping
//! itself is `crate::fhir` (pure). Errors are OperationOutcomes
//! ([`operation_outcomes`] rewrites every problem+json under `/fhir/`).

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Duration;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Query, path_id};
use super::handovers::handover_view;
use super::scope::{PatientAccess, Read, RequestInfo, authorize};
use crate::audit::{self, Outcome};
use crate::auth::AuthUser;
use crate::db::models::{Organization, Patient, User};
use crate::domain::access::{Basis, Permission, TeamRole};
use crate::domain::ins::Ins;
use crate::domain::role::Role;
use crate::domain::text::{self, Flavour};
use crate::error::{ApiError, FieldError, PROBLEM_JSON};
use crate::fhir::{self, FHIR_JSON, discharge};
use crate::state::AppState;
use crate::store::care_plan::{current_version, version_row};
use crate::store::fhir::{Parts, audit_trail, patient_by_ins, patient_record, user_by_rpps};
use crate::store::handover::{self, Outgoing};

/// Where the façade is served.
pub const FHIR_BASE: &str = "/fhir/r4";

/// How many audit rows `AuditEvent?patient=` returns at most (newest first).
const AUDIT_EVENTS_MAX: i64 = 200;

/// Any FHIR resource (R4 4.0.1, JSON): `resourceType` names which.
#[derive(Debug, Serialize, ToSchema)]
pub struct FhirResource {
    #[serde(rename = "resourceType")]
    pub resource_type: String,
}

/// A FHIR OperationOutcome: how every error under `/fhir/r4` is answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationOutcome {
    /// `OperationOutcome`.
    #[serde(rename = "resourceType")]
    pub resource_type: String,
    /// One issue per problem; `expression` names the element (FHIRPath) or parameter.
    #[schema(value_type = Vec<Object>, min_items = 1)]
    pub issue: Vec<Value>,
}

fn fhir_json(status: StatusCode, value: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, FHIR_JSON))
        .body(value.to_string())
}

fn ok(value: &Value) -> HttpResponse {
    fhir_json(StatusCode::OK, value)
}

/// The absolute base of the façade (entries' `fullUrl`).
fn base(state: &AppState) -> String {
    format!(
        "{}{FHIR_BASE}",
        state.settings.server.public_url.trim_end_matches('/')
    )
}

fn self_url(state: &AppState, req: &HttpRequest) -> String {
    let query = req.query_string();
    let path = state
        .settings
        .server
        .public_url
        .trim_end_matches('/')
        .to_owned()
        + req.path();
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

/// Rewrites every problem+json answer under `/fhir/` (the handlers', the
/// extractors', the framework's 404 and 405, the unknown-parameter 400) as
/// an OperationOutcome with the same status and headers, each field error
/// an issue whose `expression` names it.
pub async fn operation_outcomes(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody, BoxBody>>, actix_web::Error> {
    let fhir = req.path().starts_with("/fhir/");
    let res = next.call(req).await?;
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !fhir || !is_problem {
        return Ok(res.map_into_left_body());
    }
    let status = res.status();
    let (req, res) = res.into_parts();
    let headers = res.headers().clone();
    let bytes = actix_web::body::to_bytes(res.into_body())
        .await
        .unwrap_or_default();
    let problem: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let detail = problem["detail"].as_str().unwrap_or("error").to_owned();
    let fields: Vec<(String, String)> = problem["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["field"].as_str()?.to_owned(),
                e["message"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let outcome = fhir::operation_outcome(fhir::issue_code(status.as_u16()), &detail, &fields);
    let mut response = fhir_json(status, &outcome);
    for (name, value) in &headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    Ok(ServiceResponse::new(req, response).map_into_right_body())
}

/// What the façade serves, per resource type: (type, interactions, search
/// parameters). The CapabilityStatement is built from it, and a test checks
/// it against the registered routes.
pub const CAPABILITIES: &[(&str, &[&str], &[&str])] = &[
    ("Patient", &["read", "search-type"], &["identifier"]),
    ("Practitioner", &["read"], &[]),
    ("PractitionerRole", &["read"], &[]),
    ("Organization", &["read"], &[]),
    ("CareTeam", &["search-type"], &["patient"]),
    ("CarePlan", &["read", "search-type"], &["patient"]),
    (
        "MedicationRequest",
        &["read", "search-type"],
        &["patient", "status"],
    ),
    ("Consent", &["search-type"], &["patient"]),
    ("Observation", &["search-type"], &["patient"]),
    ("Communication", &["search-type"], &["patient"]),
    ("AuditEvent", &["search-type"], &["patient"]),
    ("Bundle", &["create"], &[]),
];

fn capability_statement(state: &AppState) -> Value {
    let resources: Vec<Value> = CAPABILITIES
        .iter()
        .map(|(kind, interactions, params)| {
            let mut r = json!({
                "type": kind,
                "interaction": interactions.iter().map(|i| json!({"code": i})).collect::<Vec<_>>(),
            });
            if !params.is_empty() {
                r["searchParam"] = json!(params.iter().map(|p| json!({
                    "name": p,
                    "type": if *p == "patient" { "reference" } else { "token" },
                })).collect::<Vec<_>>());
            }
            if *kind == "Patient" {
                r["operation"] = json!([{"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]);
            }
            r
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-01",
        "publisher": "Relais",
        "kind": "instance",
        "software": {"name": "Relais", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Relais FHIR R4 façade", "url": base(state)},
        "fhirVersion": fhir::FHIR_VERSION,
        "format": [FHIR_JSON],
        "rest": [{
            "mode": "server",
            "security": {"description": "Authorization: Bearer <access token> from POST /api/v1/auth/login; the same basis on the patient as the REST API"},
            "resource": resources,
        }],
    })
}

#[utoipa::path(get, path = "/fhir/r4/metadata", tag = "fhir",
    responses((status = 200, description = "The CapabilityStatement: exactly what is served", body = FhirResource, content_type = "application/fhir+json")))]
/// The CapabilityStatement (public, as FHIR clients expect).
pub async fn metadata(state: web::Data<AppState>) -> HttpResponse {
    ok(&capability_statement(&state))
}

#[utoipa::path(get, path = "/fhir/r4/Patient/{id}", tag = "fhir",
    params(("id" = uuid::Uuid, Path, description = "Patient id")),
    responses(
        (status = 200, description = "The patient (FR Core: INS as identifier)", body = FhirResource, content_type = "application/fhir+json"),
        (status = 404, body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// A patient the caller has a basis on (audited like `GET /patients/{id}`).
pub async fn read_patient(
    state: web::Data<AppState>,
    access: PatientAccess<Read>,
) -> Result<HttpResponse, ApiError> {
    let id = access.patient_id.clone();
    let patient = state
        .db
        .read(move |conn| Ok(Patient::find(conn, &id)?))
        .await?
        .ok_or_else(|| ApiError::NotFound("no such patient".into()))?;
    Ok(ok(&fhir::patient(&patient)))
}

/// `?identifier=<system>|<value>`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PatientSearch {
    /// `urn:oid:1.2.250.1.213.1.4.8|<INS>` (the system may be omitted); an
    /// INS whose key is wrong is a 400.
    #[param(
        pattern = "^((urn:oid:1\\.2\\.250\\.1\\.213\\.1\\.4\\.8)?\\|)?[0-9]{5}[0-9ABab][0-9]{9}$"
    )]
    pub identifier: String,
}

/// `?patient=Patient/<id>` (or the bare id).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PatientParam {
    /// `Patient/<id>` or `<id>`.
    #[param(
        pattern = "^(Patient/)?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub patient: String,
}

/// `?patient=&status=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MedicationRequestSearch {
    /// `Patient/<id>` or `<id>`.
    #[param(
        pattern = "^(Patient/)?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub patient: String,
    /// Comma-separated statuses (`active`, `completed`, `stopped`, `draft`, `on-hold`).
    pub status: Option<String>,
}

#[utoipa::path(get, path = "/fhir/r4/Patient", tag = "fhir",
    params(PatientSearch),
    responses(
        (status = 200, description = "A searchset with the patient when the caller has a basis on them, else empty", body = FhirResource, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// Finds a patient by INS: only one the caller has a basis on (the read is audited).
pub async fn search_patients(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: AuthUser,
    info: RequestInfo,
    Query(query): Query<PatientSearch>,
) -> Result<HttpResponse, ApiError> {
    let value = match query.identifier.split_once('|') {
        Some((system, value)) if system.is_empty() || system == fhir::INS_SYSTEM => value,
        Some(_) => {
            return Err(ApiError::malformed(
                "identifier",
                format!("only the INS ({}) is searchable", fhir::INS_SYSTEM),
            ));
        }
        None => query.identifier.as_str(),
    };
    let ins = Ins::parse(value).map_err(|e| ApiError::malformed("identifier", e.to_string()))?;
    let ins = ins.as_str().to_owned();
    let found = state
        .db
        .read(move |conn| Ok(patient_by_ins(conn, &ins)?))
        .await?;
    let mut resources = Vec::new();
    if let Some(id) = found
        && allowed(&state, &caller, &id, Permission::Read, &info)
            .await?
            .is_some()
    {
        let patient = state
            .db
            .read(move |conn| Ok(Patient::find(conn, &id)?))
            .await?;
        resources.extend(patient.as_ref().map(fhir::patient));
    }
    let bundle = fhir::searchset(
        &base(&state),
        &self_url(&state, &req),
        resources,
        state.clock.now_naive(),
    );
    Ok(ok(&bundle))
}

/// The caller's basis on `patient_id` when it permits `permission` (the
/// attempt audited either way); `None` when there is none: a search
/// answers an empty set rather than revealing that the patient exists.
async fn allowed(
    state: &AppState,
    caller: &AuthUser,
    patient_id: &str,
    permission: Permission,
    info: &RequestInfo,
) -> Result<Option<Basis>, ApiError> {
    match authorize(state, caller, patient_id, permission, info, true).await {
        Ok((basis, _)) => Ok(Some(basis)),
        Err(ApiError::NotFound(_)) => Ok(None),
        Err(other) => Err(other),
    }
}

/// The patient id of a `patient` search parameter.
fn patient_param(raw: &str) -> Result<String, ApiError> {
    let id = raw.strip_prefix("Patient/").unwrap_or(raw);
    path_id(id, "patient")
}

#[utoipa::path(get, path = "/fhir/r4/Patient/{id}/$everything", tag = "fhir",
    params(("id" = uuid::Uuid, Path, description = "Patient id")),
    responses(
        (status = 200, description = "A searchset: the patient, the people and organisations named, care team, consents, current care plan and its MedicationRequests, observations, the patient's messages", body = FhirResource, content_type = "application/fhir+json"),
        (status = 404, body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// Everything about a patient the caller has a basis on.
pub async fn patient_everything(
    state: web::Data<AppState>,
    req: HttpRequest,
    access: PatientAccess<Read>,
) -> Result<HttpResponse, ApiError> {
    let id = access.patient_id.clone();
    let record = state
        .db
        .read(move |conn| Ok(patient_record(conn, &id, Parts::ALL)?))
        .await?
        .ok_or_else(|| ApiError::NotFound("no such patient".into()))?;
    let today = state.clock.today(state.settings.time_zone());
    let resources = fhir::everything(&record, today);
    let bundle = fhir::searchset(
        &base(&state),
        &self_url(&state, &req),
        resources,
        state.clock.now_naive(),
    );
    Ok(ok(&bundle))
}

async fn find_user(state: &AppState, raw: &str) -> Result<User, ApiError> {
    let id = path_id(raw, "id")?;
    state
        .db
        .read(move |conn| Ok(User::find(conn, &id)?))
        .await?
        .filter(|u| u.role != Role::Admin)
        .ok_or_else(|| ApiError::NotFound("no such practitioner".into()))
}

#[utoipa::path(get, path = "/fhir/r4/Practitioner/{id}", tag = "fhir",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "A clinician of the network (RPPS as identifier)", body = FhirResource, content_type = "application/fhir+json"),
        (status = 404, body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// A clinician of the network, as any signed-in user sees them in `GET /users`.
pub async fn read_practitioner(
    state: web::Data<AppState>,
    _caller: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(ok(&fhir::practitioner(&find_user(&state, &id).await?)))
}

#[utoipa::path(get, path = "/fhir/r4/PractitionerRole/{id}", tag = "fhir",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "The clinician's role at their organisation", body = FhirResource, content_type = "application/fhir+json"),
        (status = 404, body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// A clinician's role at their organisation.
pub async fn read_practitioner_role(
    state: web::Data<AppState>,
    _caller: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(ok(&fhir::practitioner_role(&find_user(&state, &id).await?)))
}

#[utoipa::path(get, path = "/fhir/r4/Organization/{id}", tag = "fhir",
    params(("id" = uuid::Uuid, Path, description = "Organisation id")),
    responses(
        (status = 200, description = "An organisation of the network", body = FhirResource, content_type = "application/fhir+json"),
        (status = 404, body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// An organisation of the network, as `GET /organizations` shows it.
pub async fn read_organization(
    state: web::Data<AppState>,
    _caller: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id, "id")?;
    let org = state
        .db
        .read(move |conn| Ok(Organization::find(conn, &id)?))
        .await?
        .ok_or_else(|| ApiError::NotFound("no such organization".into()))?;
    Ok(ok(&fhir::organization(&org)))
}

/// A search on one patient's record: the resources `map` makes of the
/// parts loaded, empty when the caller has no basis (audited as the REST
/// read of the same thing: a request on the patient).
#[allow(clippy::too_many_arguments)]
async fn search_record(
    state: &AppState,
    req: &HttpRequest,
    caller: &AuthUser,
    info: &RequestInfo,
    patient: &str,
    permission: Permission,
    parts: Parts,
    map: impl FnOnce(&crate::store::fhir::PatientRecord) -> Vec<Value>,
) -> Result<HttpResponse, ApiError> {
    let patient_id = patient_param(patient)?;
    let mut resources = Vec::new();
    if allowed(state, caller, &patient_id, permission, info)
        .await?
        .is_some()
    {
        let record = state
            .db
            .read(move |conn| Ok(patient_record(conn, &patient_id, parts)?))
            .await?;
        if let Some(record) = record {
            resources = map(&record);
        }
    }
    let bundle = fhir::searchset(
        &base(state),
        &self_url(state, req),
        resources,
        state.clock.now_naive(),
    );
    Ok(ok(&bundle))
}

macro_rules! search_handler {
    ($name:ident, $path:literal, $doc:literal, $permission:expr, $parts:expr, |$state:ident, $record:ident| $map:expr) => {
        #[utoipa::path(get, path = $path, tag = "fhir",
            params(PatientParam),
            responses(
                (status = 200, description = "A searchset (empty when the caller has no basis on the patient)", body = FhirResource, content_type = "application/fhir+json"),
                (status = 403, description = "The basis does not allow this read", body = OperationOutcome, content_type = "application/fhir+json"),
            ),
            security(("bearer" = [])))]
        #[doc = $doc]
        pub async fn $name(
            $state: web::Data<AppState>,
            req: HttpRequest,
            caller: AuthUser,
            info: RequestInfo,
            Query(query): Query<PatientParam>,
        ) -> Result<HttpResponse, ApiError> {
            search_record(&$state, &req, &caller, &info, &query.patient, $permission, $parts, |$record| $map).await
        }
    };
}

search_handler!(
    search_care_teams,
    "/fhir/r4/CareTeam",
    "The patient's care team.",
    Permission::Read,
    Parts {
        team: true,
        ..Parts::default()
    },
    |state, r| vec![fhir::care_team(&r.patient.id, &r.team, &r.users)]
);

search_handler!(
    search_consents,
    "/fhir/r4/Consent",
    "The patient's consent decisions (the latest in force).",
    Permission::Read,
    Parts {
        consents: true,
        ..Parts::default()
    },
    |state, r| fhir::consents(&r.patient.id, &r.consents)
);

search_handler!(
    search_observations,
    "/fhir/r4/Observation",
    "The patient's observations (pain, sedation, COWS, doses dispensed).",
    Permission::Read,
    Parts {
        observations: true,
        ..Parts::default()
    },
    |state, r| r
        .observations
        .iter()
        .flat_map(|o| fhir::observations(&r.patient.id, o))
        .collect()
);

search_handler!(
    search_communications,
    "/fhir/r4/Communication",
    "The messages of the patient's thread.",
    Permission::Read,
    Parts {
        messages: true,
        ..Parts::default()
    },
    |state, r| r
        .messages
        .iter()
        .map(|m| fhir::communication(&r.patient.id, m))
        .collect()
);

search_handler!(
    search_care_plans,
    "/fhir/r4/CarePlan",
    "The patient's current care plan.",
    Permission::Read,
    Parts {
        plan: true,
        ..Parts::default()
    },
    |state, r| r
        .plan
        .as_ref()
        .map(|row| fhir::care_plan(row, &row.content))
        .into_iter()
        .collect()
);

#[utoipa::path(get, path = "/fhir/r4/AuditEvent", tag = "fhir",
    params(PatientParam),
    responses(
        (status = 200, description = "The newest 200 rows of the patient's audit trail (prescribers on the team)", body = FhirResource, content_type = "application/fhir+json"),
        (status = 403, description = "The basis does not allow reading the trail", body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// The patient's audit trail, for those who may read it.
pub async fn search_audit_events(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: AuthUser,
    info: RequestInfo,
    Query(query): Query<PatientParam>,
) -> Result<HttpResponse, ApiError> {
    let patient_id = patient_param(&query.patient)?;
    let mut resources = Vec::new();
    if allowed(&state, &caller, &patient_id, Permission::ReadAudit, &info)
        .await?
        .is_some()
    {
        let pid = patient_id.clone();
        let rows = state
            .db
            .read(move |conn| Ok(audit_trail(conn, &pid, AUDIT_EVENTS_MAX)?))
            .await?;
        resources = rows
            .iter()
            .map(|r| fhir::audit_event(&patient_id, r))
            .collect();
    }
    let bundle = fhir::searchset(
        &base(&state),
        &self_url(&state, &req),
        resources,
        state.clock.now_naive(),
    );
    Ok(ok(&bundle))
}

#[utoipa::path(get, path = "/fhir/r4/CarePlan/{id}", tag = "fhir",
    params(("id" = uuid::Uuid, Path, description = "The patient's id (one plan per patient)")),
    responses(
        (status = 200, description = "The current plan version (`meta.versionId`), pain goal as contained Goal", body = FhirResource, content_type = "application/fhir+json"),
        (status = 404, body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// A patient's current care plan (audited like `GET /patients/{id}/care-plan`).
pub async fn read_care_plan(
    state: web::Data<AppState>,
    access: PatientAccess<Read>,
) -> Result<HttpResponse, ApiError> {
    let id = access.patient_id.clone();
    let row = state
        .db
        .read(move |conn| Ok(crate::store::care_plan::current_version_row(conn, &id)?))
        .await?
        .ok_or_else(|| ApiError::NotFound("this patient has no care plan yet".into()))?;
    Ok(ok(&fhir::care_plan(&row, &row.content)))
}

#[utoipa::path(get, path = "/fhir/r4/MedicationRequest", tag = "fhir",
    params(MedicationRequestSearch),
    responses(
        (status = 200, description = "The current plan's MedicationRequests (OMT, then each line), empty without a basis", body = FhirResource, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// The prescriptions of the patient's current plan, by status.
pub async fn search_medication_requests(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: AuthUser,
    info: RequestInfo,
    Query(query): Query<MedicationRequestSearch>,
) -> Result<HttpResponse, ApiError> {
    let statuses: Option<Vec<String>> = query
        .status
        .as_deref()
        .map(|s| s.split(',').map(|x| x.trim().to_owned()).collect());
    let today = state.clock.today(state.settings.time_zone());
    search_record(
        &state,
        &req,
        &caller,
        &info,
        &query.patient,
        Permission::Read,
        Parts {
            plan: true,
            ..Parts::default()
        },
        |r| {
            let Some(row) = &r.plan else {
                return Vec::new();
            };
            fhir::medication_requests(
                row,
                &row.content,
                fhir::PlanMoment {
                    current: true,
                    today,
                },
            )
            .into_iter()
            .filter(|m| {
                statuses
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|s| m["status"].as_str() == Some(s.as_str())))
            })
            .collect()
        },
    )
    .await
}

#[utoipa::path(get, path = "/fhir/r4/MedicationRequest/{id}", tag = "fhir",
    params(("id" = String, Path, description = "`<patient id>.<plan version>.omt` or `<patient id>.<plan version>.<line index>`", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\\.[0-9]{1,9}\\.(omt|[0-9]{1,3})$")),
    responses(
        (status = 200, description = "One prescription of a plan version (`stopped` once superseded)", body = FhirResource, content_type = "application/fhir+json"),
        (status = 400, description = "Not a MedicationRequest id of Relais", body = OperationOutcome, content_type = "application/fhir+json"),
        (status = 404, body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// One MedicationRequest of a plan version (audited as a read of the patient).
pub async fn read_medication_request(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let Some((patient_id, version, line)) = fhir::parse_medication_request_id(&id) else {
        return Err(ApiError::malformed(
            "id",
            "not a MedicationRequest id of Relais (<patient id>.<version>.omt|<line>)",
        ));
    };
    authorize(&state, &caller, &patient_id, Permission::Read, &info, true).await?;
    let pid = patient_id.clone();
    let (row, current) = state
        .db
        .read(move |conn| {
            Ok((
                version_row(conn, &pid, version)?,
                current_version(conn, &pid)?,
            ))
        })
        .await?;
    let row = row.ok_or_else(|| ApiError::NotFound("no such MedicationRequest".into()))?;
    let moment = fhir::PlanMoment {
        current: current == Some(version),
        today: state.clock.today(state.settings.time_zone()),
    };
    let wanted = fhir::medication_request_id(&patient_id, version, line);
    fhir::medication_requests(&row, &row.content, moment)
        .into_iter()
        .find(|m| m["id"] == wanted.as_str())
        .map(|m| ok(&m))
        .ok_or_else(|| ApiError::NotFound("no such MedicationRequest".into()))
}

/// `?to=<user id>`: the addressee, when not the patient's referent GP.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BundleQuery {
    /// The GP to send the handover to (default: the patient's referent).
    pub to: Option<String>,
}

#[utoipa::path(post, path = "/fhir/r4/Bundle", tag = "fhir",
    params(BundleQuery),
    request_body(content = FhirResource, content_type = "application/fhir+json",
        description = "A discharge Bundle (`document` with a discharge-summary Composition first, or `collection`): Patient (INS or Relais id), MedicationRequests (ATC-coded; the OMT as `courseOfTherapyType` continuous), optional CarePlan"),
    responses(
        (status = 201, description = "The handover was sent; `Location` names it (`/api/v1/handovers/{id}`, with its diff and warnings)", body = OperationOutcome, content_type = "application/fhir+json"),
        (status = 403, description = "Hospital doctors only", body = OperationOutcome, content_type = "application/fhir+json"),
        (status = 422, description = "Something could not be mapped: each issue names the entry and element; nothing was created", body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// A hospital's discharge Bundle, sent as a handover to the patient's GP.
pub async fn post_bundle(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    Query(query): Query<BundleQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    if caller.role != Role::HospitalDoctor {
        return Err(ApiError::Forbidden(
            "only hospital doctors send discharge handovers".into(),
        ));
    }
    let to = query.to.as_deref().map(|t| path_id(t, "to")).transpose()?;
    let bundle: Value = super::extract::parse_json(&body)?;
    let read = discharge::read(&bundle).map_err(ApiError::Validation)?;
    let paths = read.paths.clone();
    let not_found = || {
        ApiError::invalid(
            format!("{}.identifier", paths.patient),
            "no patient with this identifier that you have a basis on",
        )
    };
    let patient_id = match &read.patient {
        discharge::PatientKey::Id(id) => Some(id.clone()),
        discharge::PatientKey::Ins(ins) => {
            let ins = ins.clone();
            state
                .db
                .read(move |conn| Ok(patient_by_ins(conn, &ins)?))
                .await?
        }
    }
    .ok_or_else(not_found)?;
    let (basis, relations) =
        match authorize(&state, &caller, &patient_id, Permission::Read, &info, false).await {
            Ok(found) => found,
            Err(ApiError::NotFound(_)) => return Err(not_found()),
            Err(other) => return Err(other),
        };
    let to_user_id = match to {
        Some(to) => to,
        None => relations
            .members
            .iter()
            .find(|m| m.team_role == TeamRole::Referent)
            .map(|m| m.user_id.clone())
            .ok_or_else(|| {
                ApiError::invalid("to", "the patient has no referent: name the GP with ?to=")
            })?,
    };
    let mut plan = read.plan.clone();
    let rpps = read.rpps.clone();
    let resolved = state
        .db
        .read(move |conn| {
            let mut out = Vec::new();
            for (slot, number, path) in rpps {
                out.push((slot, user_by_rpps(conn, &number)?, path));
            }
            Ok(out)
        })
        .await?;
    let mut errors = Vec::new();
    for (slot, user, path) in resolved {
        match (slot, user) {
            (_, None) => errors.push(FieldError::new(
                path,
                "no active user of Relais has this RPPS",
            )),
            (None, Some(id)) => plan.omt.prescriber_id = Some(id),
            (Some(i), Some(id)) => {
                if let Some(line) = plan.analgesics.get_mut(i) {
                    line.prescriber_id = Some(id);
                }
            }
        }
    }
    // The checks of `POST /patients/{id}/handovers`, named in the Bundle.
    let summary = text::required(&read.summary, "summary", Flavour::Free, text::SUMMARY_MAX)
        .map_err(|e| errors.push(e))
        .ok();
    let follow_up = text::optional(
        read.follow_up.as_deref(),
        "follow_up",
        Flavour::Free,
        text::FOLLOW_UP_MAX,
    )
    .unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    errors.extend(plan.validate().into_iter().map(|mut e| {
        e.field = format!("proposed_plan.{}", e.field);
        e
    }));
    let rename = |errors: Vec<FieldError>| -> Vec<FieldError> {
        errors
            .into_iter()
            .map(|e| {
                let at = if e.field.starts_with("Bundle") {
                    e.field.clone()
                } else {
                    paths.of(&e.field)
                };
                FieldError::new(at, format!("{}: {}", e.field, e.message))
            })
            .collect()
    };
    let (Some(summary), true) = (summary, errors.is_empty()) else {
        return Err(ApiError::Validation(rename(errors)));
    };
    let now = state.clock.now_naive();
    let due = now + Duration::hours(i64::from(state.settings.handovers.acknowledge_due_h));
    let public_url = state.settings.server.public_url.clone();
    let discharge_date = read.discharge_date;
    let result = state
        .db
        .write(move |tx| {
            let out = Outgoing {
                patient_id: &patient_id,
                from_user_id: &caller.id,
                to_user_id: &to_user_id,
                summary,
                discharge_date,
                follow_up,
                proposed_plan: &plan,
                due_at: due,
            };
            let row = handover::send(tx, out, &public_url, now)?;
            let record = info.record(
                &caller,
                "handover",
                Some(&row.id),
                Some(&patient_id),
                Some(basis),
                Outcome::Allowed,
            );
            audit::append(tx, &[record], now)?;
            handover_view(tx, row, now)
        })
        .await;
    let view = match result {
        Ok(view) => view,
        Err(ApiError::Validation(errors)) => return Err(ApiError::Validation(rename(errors))),
        Err(other) => return Err(other),
    };
    state.outbox.wake();
    let location = format!("{}/handovers/{}", super::BASE, view.id);
    let outcome = json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": "information",
            "code": "informational",
            "diagnostics": format!("handover {} sent ({} change(s) against the current plan, {} warning(s)): GET {location}", view.id, view.diff.len(), view.warnings.len()),
        }],
    });
    let mut response = fhir_json(StatusCode::CREATED, &outcome);
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}
