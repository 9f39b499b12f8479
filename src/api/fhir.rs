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

use super::consultations::ConsultationAccess;
use super::extract::{Query, path_id};
use super::handovers::{HandoverView, handover_view};
use super::scope::{PatientAccess, Read, RequestInfo, Resource, authorize, authorize_linked};
use crate::audit::{self, Outcome};
use crate::auth::AuthUser;
use crate::db::models::{Organization, Patient, User};
use crate::domain::access::{Basis, Permission, Relations, TeamRole};
use crate::domain::ins::Ins;
use crate::domain::messaging::SubjectType;
use crate::domain::plan::PlanContent;
use crate::domain::role::Role;
use crate::domain::text::{self, Flavour};
use crate::error::{ApiError, FieldError, PROBLEM_JSON};
use crate::fhir::{self, FHIR_JSON, discharge};
use crate::state::AppState;
use crate::store::care_plan::{current_version, version_row};
use crate::store::consultation::ConsultationRow;
use crate::store::fhir::{
    Parts, Stream, add_named, audit_row, audit_trail, consent_patient, consultations_about,
    message_with_thread, observation_page, observation_row, patient_by_ins, patient_record,
    stream_page, thread_of, thread_page, user_by_rpps,
};
use crate::store::handover::{self, Outgoing};
use crate::store::messaging::party_to_subject;

/// Where the façade is served.
pub const FHIR_BASE: &str = "/fhir/r4";

/// How many audit rows `AuditEvent?patient=` returns at most (newest first).
const AUDIT_EVENTS_MAX: i64 = 200;

/// How many consultations of a patient a search or `$everything` carries
/// at most (oldest first).
const CONSULTATIONS_MAX: i64 = 500;

/// `Communication` and `Observation` searches: a page's default and
/// largest `_count`.
const COMMUNICATIONS_DEFAULT: i64 = 100;
const COMMUNICATIONS_MAX: i64 = 1000;

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
    ("CareTeam", &["read", "search-type"], &["patient"]),
    ("CarePlan", &["read", "search-type"], &["patient"]),
    (
        "MedicationRequest",
        &["read", "search-type"],
        &["patient", "status"],
    ),
    ("Consent", &["read", "search-type"], &["patient"]),
    ("ServiceRequest", &["read", "search-type"], &["patient"]),
    ("Task", &["read", "search-type"], &["patient", "focus"]),
    ("Observation", &["read", "search-type"], &["patient"]),
    (
        "Communication",
        &["read", "search-type"],
        &["patient", "part-of"],
    ),
    ("AuditEvent", &["read", "search-type"], &["patient"]),
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
                    "type": if matches!(*p, "patient" | "part-of" | "focus") { "reference" } else { "token" },
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

/// `$everything`'s paging: `_count` and the `next` link's `_cursor`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EverythingParams {
    /// Observation records and messages per page (default and largest
    /// 1000); the first page also carries the rest of the record.
    #[serde(rename = "_count", default)]
    #[param(minimum = 1, maximum = 1000)]
    pub count: Option<i64>,
    /// Where the page starts (from the `next` link; opaque).
    #[serde(rename = "_cursor", default)]
    #[param(
        pattern = "^[om](\\.[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"
    )]
    pub cursor: Option<String>,
}

/// `$everything`: the default and largest page (observation records and
/// messages). 1000 keeps the benchmark's patient (1 000 messages) to one
/// full page plus a short one, and a page within what a Communication
/// search already serves at most.
const EVERYTHING_DEFAULT: i64 = 1000;
const EVERYTHING_MAX: i64 = 1000;

/// A `_cursor`: `o` / `m` (the observations, the messages, from their
/// start) optionally followed by `.` and the id the page starts after.
fn parse_stream(raw: &str) -> Result<Stream, ApiError> {
    let bad = || ApiError::malformed("_cursor", "not a cursor of a next link");
    let (kind, after) = match raw.split_once('.') {
        Some((kind, id)) => (kind, Some(path_id(id, "_cursor").map_err(|_| bad())?)),
        None => (raw, None),
    };
    match kind {
        "o" => Ok(Stream::Observations(after)),
        "m" => Ok(Stream::Messages(after)),
        _ => Err(bad()),
    }
}

fn stream_cursor(stream: &Stream) -> String {
    let (kind, after) = match stream {
        Stream::Observations(after) => ("o", after),
        Stream::Messages(after) => ("m", after),
    };
    match after {
        Some(id) => format!("{kind}.{id}"),
        None => kind.to_owned(),
    }
}

#[utoipa::path(get, path = "/fhir/r4/Patient/{id}/$everything", tag = "fhir",
    params(("id" = uuid::Uuid, Path, description = "Patient id"), EverythingParams),
    responses(
        (status = 200, description = "A searchset, paged: the first page carries the patient, the people and organisations named, care team, consents, current care plan and its MedicationRequests, the consultations the caller is a party to (ServiceRequest + Task, at most 500); then every page up to `_count` observation records (Observations) and messages (Communications), oldest first, with a `next` link while there are more. Each page resolves the caller's basis again", body = FhirResource, content_type = "application/fhir+json"),
        (status = 400, description = "A malformed `_count` or `_cursor`", body = OperationOutcome, content_type = "application/fhir+json"),
        (status = 404, body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// Everything about a patient the caller has a basis on, a bounded page at
/// a time (R4 Patient/$everything: `_count`, paging by `next` links).
pub async fn patient_everything(
    state: web::Data<AppState>,
    req: HttpRequest,
    access: PatientAccess<Read>,
    Query(query): Query<EverythingParams>,
) -> Result<HttpResponse, ApiError> {
    let limit = match query.count {
        None => EVERYTHING_DEFAULT,
        Some(n) if (1..=EVERYTHING_MAX).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::malformed(
                "_count",
                format!("must be between 1 and {EVERYTHING_MAX}"),
            ));
        }
    };
    let from = query.cursor.as_deref().map(parse_stream).transpose()?;
    let first = from.is_none();
    let id = access.patient_id.clone();
    let caller = access.caller.clone();
    let (head, page) = state
        .db
        .read(move |conn| {
            let head = if first {
                let Some(mut record) = patient_record(conn, &id, Parts::EVERYTHING_HEAD)? else {
                    return Ok(None);
                };
                // Being a party is the extra condition of the REST reads.
                let rows = consultations_about(conn, &id, &caller, CONSULTATIONS_MAX)?;
                add_named(conn, &mut record, &rows)?;
                Some((record, rows))
            } else {
                None
            };
            let from = from.unwrap_or(Stream::Observations(None));
            Ok(Some((head, stream_page(conn, &id, from, limit)?)))
        })
        .await?
        .ok_or_else(|| ApiError::NotFound("no such patient".into()))?;
    let pid = access.patient_id.as_str();
    let resources = match head {
        Some((mut record, consultations)) => {
            record.observations = page.observations;
            record.messages = page.messages;
            let today = state.clock.today(state.settings.time_zone());
            fhir::everything(&record, &consultations, today, state.clock.now_naive())
        }
        None => page
            .observations
            .iter()
            .flat_map(|o| fhir::observations(pid, o))
            .chain(page.messages.iter().map(|m| fhir::communication(pid, m)))
            .collect(),
    };
    let mut bundle = fhir::searchset(
        &base(&state),
        &self_url(&state, &req),
        resources,
        state.clock.now_naive(),
    );
    if !first || page.next.is_some() {
        // `total` would be the page's size: a client follows `next` instead.
        bundle.as_object_mut().map(|b| b.remove("total"));
    }
    if let Some(next) = &page.next {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("_count", &limit.to_string());
        form.append_pair("_cursor", &stream_cursor(next));
        let url = format!(
            "{}/Patient/{pid}/$everything?{}",
            base(&state),
            form.finish()
        );
        if let Some(links) = bundle["link"].as_array_mut() {
            links.push(json!({"relation": "next", "url": url}));
        }
    }
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

/// `?patient=`, paged by `_count` and `_cursor`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ObservationSearch {
    /// `Patient/<id>` or `<id>`.
    #[param(
        pattern = "^(Patient/)?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub patient: String,
    /// Observation records per page, in entry order (default 100); a
    /// record is one Observation per measure it carries.
    #[serde(rename = "_count", default)]
    #[param(minimum = 1, maximum = 1000)]
    pub count: Option<i64>,
    /// The last record id of the previous page (from the `next` link).
    #[serde(rename = "_cursor", default)]
    #[param(format = Uuid)]
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/fhir/r4/Observation", tag = "fhir",
    params(ObservationSearch),
    responses(
        (status = 200, description = "A page of the patient's observations (pain, sedation, COWS, doses dispensed), in entry order, with a `next` link while there are more (empty when the caller has no basis on the patient)", body = FhirResource, content_type = "application/fhir+json"),
        (status = 400, description = "A malformed `patient`, `_count` or `_cursor`", body = OperationOutcome, content_type = "application/fhir+json"),
        (status = 403, description = "The basis does not allow this read", body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// The patient's observations, a bounded page at a time.
pub async fn search_observations(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: AuthUser,
    info: RequestInfo,
    Query(query): Query<ObservationSearch>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_count(query.count)?;
    let cursor = query
        .cursor
        .as_deref()
        .map(|c| path_id(c, "_cursor"))
        .transpose()?;
    let patient_id = patient_param(&query.patient)?;
    let mut resources = Vec::new();
    let mut next = None;
    if allowed(&state, &caller, &patient_id, Permission::Read, &info)
        .await?
        .is_some()
    {
        let pid = patient_id.clone();
        let mut page = state
            .db
            .read(move |conn| Ok(observation_page(conn, &pid, cursor.as_deref(), limit + 1)?))
            .await?;
        if page.len() > limit as usize {
            page.truncate(limit as usize);
            next = page.last().map(|o| o.id.clone());
        }
        resources = page
            .iter()
            .flat_map(|o| fhir::observations(&patient_id, o))
            .collect();
    }
    let mut bundle = fhir::searchset(
        &base(&state),
        &self_url(&state, &req),
        resources,
        state.clock.now_naive(),
    );
    if let Some(after) = next {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("patient", &query.patient);
        add_next(&state, &mut bundle, "Observation", form, limit, &after);
    }
    Ok(ok(&bundle))
}

/// A search page's `_count`: the default when absent, else 1 to the
/// largest a page may hold.
fn page_count(count: Option<i64>) -> Result<i64, ApiError> {
    match count {
        None => Ok(COMMUNICATIONS_DEFAULT),
        Some(n) if (1..=COMMUNICATIONS_MAX).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::malformed(
            "_count",
            format!("must be between 1 and {COMMUNICATIONS_MAX}"),
        )),
    }
}

/// Adds the `next` link of a paged search (`form` holds its other
/// parameters) and drops `total`, which would be the page's size: a
/// client must follow `next` instead.
fn add_next(
    state: &AppState,
    bundle: &mut Value,
    resource: &str,
    mut form: form_urlencoded::Serializer<'_, String>,
    limit: i64,
    after: &str,
) {
    bundle.as_object_mut().map(|b| b.remove("total"));
    form.append_pair("_count", &limit.to_string());
    form.append_pair("_cursor", after);
    let url = format!("{}/{resource}?{}", base(state), form.finish());
    if let Some(links) = bundle["link"].as_array_mut() {
        links.push(json!({"relation": "next", "url": url}));
    }
}

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

/// Whether `caller` may read `patient_id`'s trail, as
/// `GET /patients/{id}/audit-events` decides: administrators (the attempt
/// audited with their basis; an unknown patient denied), else prescribers
/// on the team (`Permission::ReadAudit`; a weaker basis is 403).
async fn may_read_trail(
    state: &AppState,
    caller: &AuthUser,
    patient_id: &str,
    info: &RequestInfo,
) -> Result<bool, ApiError> {
    if caller.role != Role::Admin {
        return Ok(
            allowed(state, caller, patient_id, Permission::ReadAudit, info)
                .await?
                .is_some(),
        );
    }
    let pid = patient_id.to_owned();
    let exists = state
        .db
        .read(move |conn| Ok(Patient::find(conn, &pid)?.is_some()))
        .await?;
    let record = info.record(
        caller,
        "audit_events",
        None,
        exists.then_some(patient_id),
        Some(Basis::Admin),
        if exists {
            Outcome::Allowed
        } else {
            Outcome::Denied
        },
    );
    state.audit.record(record).await?;
    Ok(exists)
}

#[utoipa::path(get, path = "/fhir/r4/AuditEvent", tag = "fhir",
    params(PatientParam),
    responses(
        (status = 200, description = "The newest 200 rows of the patient's audit trail (prescribers on the team, administrators); empty without a basis", body = FhirResource, content_type = "application/fhir+json"),
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
    if may_read_trail(&state, &caller, &patient_id, &info).await? {
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
    let (patient_id, basis, relations) = bundle_patient(&state, &caller, &info, &read).await?;
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
    let mut errors = resolve_prescribers(&state, &read, &mut plan).await?;
    let (summary, follow_up) = checked_texts(&read, &plan, &mut errors);
    let (Some(summary), true) = (summary, errors.is_empty()) else {
        return Err(ApiError::Validation(in_bundle(&read.paths, errors)));
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
        Err(ApiError::Validation(errors)) => {
            return Err(ApiError::Validation(in_bundle(&read.paths, errors)));
        }
        Err(other) => return Err(other),
    };
    state.outbox.wake();
    Ok(handover_sent(&view))
}

/// The Bundle's patient (by Relais id or INS) and the caller's basis on
/// them; one answer, naming the Patient entry, whether there is no such
/// patient or no basis (nothing tells the two apart).
async fn bundle_patient(
    state: &AppState,
    caller: &AuthUser,
    info: &RequestInfo,
    read: &discharge::Discharge,
) -> Result<(String, Basis, Relations), ApiError> {
    let not_found = || {
        ApiError::invalid(
            format!("{}.identifier", read.paths.patient),
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
    match authorize(state, caller, &patient_id, Permission::Read, info, false).await {
        Ok((basis, relations)) => Ok((patient_id, basis, relations)),
        Err(ApiError::NotFound(_)) => Err(not_found()),
        Err(other) => Err(other),
    }
}

/// Puts the users the Bundle names by RPPS into `plan` as prescribers;
/// the errors (in the Bundle's terms) of numbers no active user has.
async fn resolve_prescribers(
    state: &AppState,
    read: &discharge::Discharge,
    plan: &mut PlanContent,
) -> Result<Vec<FieldError>, ApiError> {
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
    Ok(errors)
}

/// The checks of `POST /patients/{id}/handovers` on what the Bundle says:
/// the summary and follow-up texts, the proposed plan (its errors added to
/// `errors`, named as that route names them).
fn checked_texts(
    read: &discharge::Discharge,
    plan: &PlanContent,
    errors: &mut Vec<FieldError>,
) -> (Option<String>, Option<String>) {
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
    (summary, follow_up)
}

/// `errors` named by the Bundle's entries and elements (those already in
/// the Bundle's terms as they are), each message prefixed with the field
/// of the handover it is about.
fn in_bundle(paths: &discharge::Paths, errors: Vec<FieldError>) -> Vec<FieldError> {
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
}

/// 201 with an OperationOutcome saying what was sent, `Location` naming
/// the handover.
fn handover_sent(view: &HandoverView) -> HttpResponse {
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
    response
}

/// A read by id of something unknown: audited as denied (as the REST
/// extractors audit an unknown id), answered 404.
async fn unknown(
    state: &AppState,
    caller: &AuthUser,
    info: &RequestInfo,
    kind: &str,
    id: &str,
) -> ApiError {
    let denied = info.record(caller, kind, Some(id), None, None, Outcome::Denied);
    match state.audit.record(denied).await {
        Ok(()) => ApiError::NotFound(format!("no such {kind}")),
        Err(err) => err,
    }
}

/// Reads by id of what belongs to a patient answer 404 for no basis, as
/// the REST reads do (the weaker-basis 403 stays a 403).
fn searched(result: Result<Option<Basis>, ApiError>) -> Result<Basis, ApiError> {
    result?.ok_or_else(|| ApiError::NotFound("no such resource".into()))
}

#[utoipa::path(get, path = "/fhir/r4/CareTeam/{id}", tag = "fhir",
    params(("id" = uuid::Uuid, Path, description = "The patient's id (one care team per patient)")),
    responses(
        (status = 200, description = "The patient's care team, ended memberships with their period", body = FhirResource, content_type = "application/fhir+json"),
        (status = 404, body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// A patient's care team (audited like `GET /patients/{id}/care-team`).
pub async fn read_care_team(
    state: web::Data<AppState>,
    access: PatientAccess<Read>,
) -> Result<HttpResponse, ApiError> {
    let id = access.patient_id.clone();
    let parts = Parts {
        team: true,
        ..Parts::default()
    };
    let record = state
        .db
        .read(move |conn| Ok(patient_record(conn, &id, parts)?))
        .await?
        .ok_or_else(|| ApiError::NotFound("no such patient".into()))?;
    Ok(ok(&fhir::care_team(
        &record.patient.id,
        &record.team,
        &record.users,
    )))
}

#[utoipa::path(get, path = "/fhir/r4/Consent/{id}", tag = "fhir",
    params(("id" = uuid::Uuid, Path, description = "Consent decision id")),
    responses(
        (status = 200, description = "One consent decision (`inactive` once superseded)", body = FhirResource, content_type = "application/fhir+json"),
        (status = 404, description = "Unknown, or no basis on its patient now", body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// One consent decision (audited as a read of its patient).
pub async fn read_consent(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id, "id")?;
    let wanted = id.clone();
    let Some(patient_id) = state
        .db
        .read(move |conn| Ok(consent_patient(conn, &wanted)?))
        .await?
    else {
        return Err(unknown(&state, &caller, &info, "consent", &id).await);
    };
    searched(allowed(&state, &caller, &patient_id, Permission::Read, &info).await)?;
    let parts = Parts {
        consents: true,
        ..Parts::default()
    };
    let record = state
        .db
        .read(move |conn| Ok(patient_record(conn, &patient_id, parts)?))
        .await?
        .ok_or_else(|| ApiError::NotFound("no such Consent".into()))?;
    fhir::consents(&record.patient.id, &record.consents)
        .into_iter()
        .find(|c| c["id"] == id.as_str())
        .map(|c| ok(&c))
        .ok_or_else(|| ApiError::NotFound("no such Consent".into()))
}

#[utoipa::path(get, path = "/fhir/r4/Observation/{id}", tag = "fhir",
    params(("id" = String, Path, description = "`<observation id>.pain|sedation|cows|dispensed`", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\\.(pain|sedation|cows|dispensed)$")),
    responses(
        (status = 200, description = "One measure of an observation", body = FhirResource, content_type = "application/fhir+json"),
        (status = 400, description = "Not an Observation id of Relais", body = OperationOutcome, content_type = "application/fhir+json"),
        (status = 404, description = "Unknown, or no basis on its patient now", body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// One measure of an observation (audited as a read of its patient).
pub async fn read_observation(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let malformed = || {
        ApiError::malformed(
            "id",
            "not an Observation id of Relais (<observation id>.pain|sedation|cows|dispensed)",
        )
    };
    let (row_id, measure) = id.split_once('.').ok_or_else(malformed)?;
    if !matches!(measure, "pain" | "sedation" | "cows" | "dispensed") {
        return Err(malformed());
    }
    let row_id = path_id(row_id, "id")?;
    let wanted = row_id.clone();
    let Some((patient_id, row)) = state
        .db
        .read(move |conn| Ok(observation_row(conn, &wanted)?))
        .await?
    else {
        return Err(unknown(&state, &caller, &info, "observation", &row_id).await);
    };
    searched(allowed(&state, &caller, &patient_id, Permission::Read, &info).await)?;
    let wanted = format!("{row_id}.{measure}");
    fhir::observations(&patient_id, &row)
        .into_iter()
        .find(|o| o["id"] == wanted.as_str())
        .map(|o| ok(&o))
        .ok_or_else(|| ApiError::NotFound("no such Observation".into()))
}

#[utoipa::path(get, path = "/fhir/r4/AuditEvent/{id}", tag = "fhir",
    params(("id" = uuid::Uuid, Path, description = "Audit row id")),
    responses(
        (status = 200, description = "One row of a patient's audit trail (prescribers on the team, administrators)", body = FhirResource, content_type = "application/fhir+json"),
        (status = 403, description = "The basis does not allow reading the trail", body = OperationOutcome, content_type = "application/fhir+json"),
        (status = 404, description = "Unknown, about no patient, or no basis on its patient now", body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// One row of a patient's audit trail, for those who may read the trail.
pub async fn read_audit_event(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id, "id")?;
    let wanted = id.clone();
    let found = state
        .db
        .read(move |conn| Ok(audit_row(conn, &wanted)?))
        .await?;
    // Rows about no patient are the admin's trail (`GET /audit-events`), not served here.
    let Some((Some(patient_id), row)) = found else {
        return Err(unknown(&state, &caller, &info, "audit_event", &id).await);
    };
    if !may_read_trail(&state, &caller, &patient_id, &info).await? {
        return Err(ApiError::NotFound("no such AuditEvent".into()));
    }
    Ok(ok(&fhir::audit_event(&patient_id, &row)))
}

#[utoipa::path(get, path = "/fhir/r4/Communication/{id}", tag = "fhir",
    params(("id" = uuid::Uuid, Path, description = "Message id")),
    responses(
        (status = 200, description = "One message (a consultation's carries `partOf` its ServiceRequest)", body = FhirResource, content_type = "application/fhir+json"),
        (status = 404, description = "Unknown, not a party to its thread, or no basis on its patient now", body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// One message, as `GET /threads/{id}/messages` lets its reader see it.
pub async fn read_communication(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id, "id")?;
    let (wanted, who) = (id.clone(), caller.clone());
    let found = state
        .db
        .read(move |conn| {
            let Some((message, thread)) = message_with_thread(conn, &wanted)? else {
                return Ok(None);
            };
            // As `ThreadAccess`: a patient thread takes a basis; the
            // others their parties too (with a basis when about a patient).
            let party = match thread.subject_type {
                SubjectType::Patient => thread.patient_id.is_some(),
                _ => party_to_subject(conn, &thread, &who)?,
            };
            Ok(Some((message, thread, party)))
        })
        .await?;
    let Some((message, thread, party)) = found else {
        return Err(unknown(&state, &caller, &info, "message", &id).await);
    };
    let resource = Resource {
        kind: "thread",
        id: &thread.id,
    };
    authorize_linked(
        &state,
        &caller,
        &info,
        resource,
        thread.patient_id.as_deref(),
        party,
        Permission::Read,
        true,
    )
    .await?;
    let part_of =
        (thread.subject_type == SubjectType::Consultation).then_some(thread.subject_id.as_str());
    Ok(ok(&fhir::thread_communication(
        thread.patient_id.as_deref(),
        part_of,
        &message,
    )))
}

/// `?patient=` or `?part-of=`, paged by `_count` and `_cursor`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CommunicationSearch {
    /// The patient's own thread: `Patient/<id>` or `<id>`.
    #[param(
        pattern = "^(Patient/)?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub patient: Option<String>,
    /// A consultation's thread: `ServiceRequest/<id>` or `<id>`.
    #[serde(rename = "part-of")]
    #[param(
        pattern = "^(ServiceRequest/)?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub part_of: Option<String>,
    /// Messages per page, oldest first (default 100).
    #[serde(rename = "_count", default)]
    #[param(minimum = 1, maximum = 1000)]
    pub count: Option<i64>,
    /// The last message id of the previous page (from the `next` link).
    #[serde(rename = "_cursor", default)]
    #[param(format = Uuid)]
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/fhir/r4/Communication", tag = "fhir",
    params(CommunicationSearch),
    responses(
        (status = 200, description = "A page of the thread's messages, oldest first, with a `next` link while there are more (empty without a basis, or for a consultation the caller is no party to)", body = FhirResource, content_type = "application/fhir+json"),
        (status = 400, description = "Neither or both of `patient` and `part-of`, or a malformed parameter", body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// The messages of a patient's thread (`patient`) or of a consultation's
/// (`part-of`), a bounded page at a time.
pub async fn search_communications(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: AuthUser,
    info: RequestInfo,
    Query(query): Query<CommunicationSearch>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_count(query.count)?;
    let cursor = query
        .cursor
        .as_deref()
        .map(|c| path_id(c, "_cursor"))
        .transpose()?;
    // (thread to read, its patient, the consultation it belongs to)
    let target: Option<(String, Option<String>, Option<String>)> =
        match (query.patient.as_deref(), query.part_of.as_deref()) {
            (Some(patient), None) => {
                let patient_id = patient_param(patient)?;
                match allowed(&state, &caller, &patient_id, Permission::Read, &info).await? {
                    None => None,
                    Some(_) => {
                        let pid = patient_id.clone();
                        state
                            .db
                            .read(move |conn| Ok(thread_of(conn, SubjectType::Patient, &pid)?))
                            .await?
                            .map(|thread| (thread, Some(patient_id), None))
                    }
                }
            }
            (None, Some(part_of)) => {
                let raw = part_of.strip_prefix("ServiceRequest/").unwrap_or(part_of);
                let consultation_id = path_id(raw, "part-of")?;
                consultation_thread(&state, &caller, &info, &consultation_id).await?
            }
            _ => {
                return Err(ApiError::malformed(
                    "patient",
                    "give either patient (the patient's thread) or part-of (a consultation's)",
                ));
            }
        };
    let mut resources = Vec::new();
    let mut next = None;
    if let Some((thread, patient_id, part_of)) = target {
        let mut page = state
            .db
            .read(move |conn| Ok(thread_page(conn, &thread, cursor.as_deref(), limit + 1)?))
            .await?;
        if page.len() > limit as usize {
            page.truncate(limit as usize);
            next = page.last().map(|m| m.id.clone());
        }
        resources = page
            .iter()
            .map(|m| fhir::thread_communication(patient_id.as_deref(), part_of.as_deref(), m))
            .collect();
    }
    let mut bundle = fhir::searchset(
        &base(&state),
        &self_url(&state, &req),
        resources,
        state.clock.now_naive(),
    );
    if let Some(after) = next {
        let mut form = form_urlencoded::Serializer::new(String::new());
        if let Some(p) = &query.patient {
            form.append_pair("patient", p);
        }
        if let Some(p) = &query.part_of {
            form.append_pair("part-of", p);
        }
        add_next(&state, &mut bundle, "Communication", form, limit, &after);
    }
    Ok(ok(&bundle))
}

/// The thread of a consultation the caller may read (a party with a basis
/// on its patient now, the attempt audited), with its patient; `None`
/// when unknown or out of reach: a search answers an empty set.
async fn consultation_thread(
    state: &AppState,
    caller: &AuthUser,
    info: &RequestInfo,
    consultation_id: &str,
) -> Result<Option<(String, Option<String>, Option<String>)>, ApiError> {
    Ok(reachable_consultation(state, caller, info, consultation_id)
        .await?
        .and_then(|(row, thread)| thread.map(|t| (t, row.patient_id.clone(), Some(row.id)))))
}

/// A consultation the caller may read (a party with a basis on its patient
/// now, the attempt audited), with its thread; `None` when unknown or out
/// of reach.
async fn reachable_consultation(
    state: &AppState,
    caller: &AuthUser,
    info: &RequestInfo,
    consultation_id: &str,
) -> Result<Option<(ConsultationRow, Option<String>)>, ApiError> {
    let id = consultation_id.to_owned();
    let found = state
        .db
        .read(move |conn| {
            let Some(row) = ConsultationRow::find(conn, &id)? else {
                return Ok(None);
            };
            let thread = thread_of(conn, SubjectType::Consultation, &id)?;
            Ok(Some((row, thread)))
        })
        .await?;
    let Some((row, thread)) = found else {
        let denied = info.record(
            caller,
            "consultation",
            Some(consultation_id),
            None,
            None,
            Outcome::Denied,
        );
        state.audit.record(denied).await?;
        return Ok(None);
    };
    let party = row.requester_id == caller.id || row.at_centre(caller);
    let resource = Resource {
        kind: "consultation",
        id: &row.id,
    };
    match authorize_linked(
        state,
        caller,
        info,
        resource,
        row.patient_id.as_deref(),
        party,
        Permission::Read,
        true,
    )
    .await
    {
        Ok(_) => Ok(Some((row, thread))),
        Err(ApiError::NotFound(_)) => Ok(None),
        Err(other) => Err(other),
    }
}

/// The consultations about a patient the caller is a party to, mapped by
/// `map`; empty without a basis (audited as a request on the patient).
async fn search_consultations(
    state: &AppState,
    req: &HttpRequest,
    caller: &AuthUser,
    info: &RequestInfo,
    patient: &str,
    map: impl Fn(&ConsultationRow) -> Value,
) -> Result<HttpResponse, ApiError> {
    let patient_id = patient_param(patient)?;
    let mut resources = Vec::new();
    if allowed(state, caller, &patient_id, Permission::Read, info)
        .await?
        .is_some()
    {
        let who = caller.clone();
        let rows = state
            .db
            .read(move |conn| {
                Ok(consultations_about(
                    conn,
                    &patient_id,
                    &who,
                    CONSULTATIONS_MAX,
                )?)
            })
            .await?;
        resources = rows.iter().map(map).collect();
    }
    let bundle = fhir::searchset(
        &base(state),
        &self_url(state, req),
        resources,
        state.clock.now_naive(),
    );
    Ok(ok(&bundle))
}

#[utoipa::path(get, path = "/fhir/r4/ServiceRequest", tag = "fhir",
    params(PatientParam),
    responses(
        (status = 200, description = "The consultations about the patient the caller is a party to (requester, or specialist of the centre), oldest first, at most 500; empty without a basis", body = FhirResource, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// A patient's consultations, as the GP's requests.
pub async fn search_service_requests(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: AuthUser,
    info: RequestInfo,
    Query(query): Query<PatientParam>,
) -> Result<HttpResponse, ApiError> {
    search_consultations(
        &state,
        &req,
        &caller,
        &info,
        &query.patient,
        fhir::service_request,
    )
    .await
}

/// `Task?patient=` or `Task?focus=ServiceRequest/<id>` (one of them).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskSearch {
    /// `Patient/<id>` or `<id>`: the lifecycle of each consultation about the patient.
    #[param(
        pattern = "^(Patient/)?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub patient: Option<String>,
    /// `ServiceRequest/<id>` or `<id>`: the lifecycle of that consultation.
    #[param(
        pattern = "^(ServiceRequest/)?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub focus: Option<String>,
}

#[utoipa::path(get, path = "/fhir/r4/Task", tag = "fhir",
    params(TaskSearch),
    responses(
        (status = 200, description = "The lifecycle of each consultation about the patient (`patient`), or of the one consultation (`focus`), the caller is a party to, oldest first, at most 500; empty without a basis or for a consultation the caller is no party to", body = FhirResource, content_type = "application/fhir+json"),
        (status = 400, description = "Neither or both of `patient` and `focus`, or a malformed parameter", body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// A patient's consultations, or one consultation, as Tasks (their status).
pub async fn search_tasks(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: AuthUser,
    info: RequestInfo,
    Query(query): Query<TaskSearch>,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now_naive();
    match (query.patient.as_deref(), query.focus.as_deref()) {
        (Some(patient), None) => {
            search_consultations(&state, &req, &caller, &info, patient, |row| {
                fhir::task(row, now)
            })
            .await
        }
        (None, Some(focus)) => {
            let raw = focus.strip_prefix("ServiceRequest/").unwrap_or(focus);
            let id = path_id(raw, "focus")?;
            let found = reachable_consultation(&state, &caller, &info, &id).await?;
            let resources = found.iter().map(|(row, _)| fhir::task(row, now)).collect();
            let bundle = fhir::searchset(&base(&state), &self_url(&state, &req), resources, now);
            Ok(ok(&bundle))
        }
        _ => Err(ApiError::malformed(
            "patient",
            "give either patient (a patient's consultations) or focus (one consultation)",
        )),
    }
}

#[utoipa::path(get, path = "/fhir/r4/ServiceRequest/{id}", tag = "fhir",
    params(("id" = uuid::Uuid, Path, description = "Consultation id")),
    responses(
        (status = 200, description = "The consultation as the GP's request", body = FhirResource, content_type = "application/fhir+json"),
        (status = 404, description = "Unknown, neither its requester nor at its centre, or no basis on its patient now", body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// A consultation as the request (audited like `GET /consultations/{id}`).
pub async fn read_service_request(access: ConsultationAccess) -> HttpResponse {
    ok(&fhir::service_request(&access.object))
}

#[utoipa::path(get, path = "/fhir/r4/Task/{id}", tag = "fhir",
    params(("id" = uuid::Uuid, Path, description = "Consultation id")),
    responses(
        (status = 200, description = "The consultation's lifecycle: status, overdue, the answer and proposed plan as output", body = FhirResource, content_type = "application/fhir+json"),
        (status = 404, description = "Unknown, neither its requester nor at its centre, or no basis on its patient now", body = OperationOutcome, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
/// A consultation's lifecycle (audited like `GET /consultations/{id}`).
pub async fn read_task(state: web::Data<AppState>, access: ConsultationAccess) -> HttpResponse {
    ok(&fhir::task(&access.object, state.clock.now_naive()))
}
