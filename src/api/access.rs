//! Getting access to a patient: requests to the team, and break-glass emergency access.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Duration, Utc};
use diesel::QueryResult;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{Json, path_id};
use super::scope::{ManageTeam, PatientAccess, RequestInfo, authorize};
use crate::audit::{self, Outcome};
use crate::auth::AuthUser;
use crate::db::DbConnection;
use crate::domain::access::{Basis, Permission};
use crate::domain::role::Role;
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use crate::store::access_request;
pub use crate::store::access_request::AccessRequestStatus;

/// Who asks.
#[derive(Debug, Serialize, ToSchema)]
pub struct Requester {
    pub id: String,
    pub full_name: String,
    pub role: Role,
    pub organization_name: Option<String>,
}

/// An access request.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessRequestView {
    pub id: String,
    pub patient_id: String,
    pub requester: Requester,
    pub reason: String,
    pub status: AccessRequestStatus,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Why the caller needs access (10 to 1000 characters).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    #[schema(
        min_length = 10,
        max_length = 1000,
        pattern = "^\\s*\\S[\\s\\S]{8,}\\S\\s*$"
    )]
    pub reason: String,
}

/// When an emergency access ends.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmergencyAccessView {
    pub id: String,
    pub patient_id: String,
    pub expires_at: DateTime<Utc>,
}

fn reason(raw: &str) -> Result<String, ApiError> {
    use crate::domain::text::{self, Flavour};
    text::required_at_least(
        raw,
        "reason",
        Flavour::Free,
        text::ACCESS_REASON_MIN,
        text::ACCESS_REASON_MAX,
    )
    .map_err(|e| ApiError::Validation(vec![e]))
}

fn requests(
    conn: &mut DbConnection,
    patient_id: Option<&str>,
    id: Option<&str>,
) -> QueryResult<Vec<AccessRequestView>> {
    Ok(access_request::listed(conn, patient_id, id)?
        .into_iter()
        .map(|r| AccessRequestView {
            id: r.id,
            patient_id: r.patient_id,
            reason: r.reason,
            status: r.status,
            decided_by: r.decided_by,
            decided_at: r.decided_at.map(|t| t.and_utc()),
            created_at: r.created_at.and_utc(),
            requester: Requester {
                id: r.requester_id,
                full_name: r.requester_name,
                role: r.requester_role,
                organization_name: r.organization_name,
            },
        })
        .collect())
}

#[utoipa::path(post, path = "/api/v1/patients/{id}/access-requests", tag = "access",
    params(("id" = uuid::Uuid, Path, description = "Patient id, from the INS lookup")),
    request_body = ReasonBody,
    responses(
        (status = 201, description = "Sent; the referent is notified", body = AccessRequestView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Clinicians only", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already on the team, or a request is pending", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Asks the care team for access to a patient.
pub async fn create_access_request(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    id: web::Path<String>,
    Json(body): Json<ReasonBody>,
) -> Result<HttpResponse, ApiError> {
    caller.require_clinician()?;
    let patient_id = path_id(&id, "id")?;
    let reason = reason(&body.reason)?;
    let now = state.clock.now();
    let public_url = state.settings.server.public_url.clone();
    let view = state
        .db
        .write(move |conn| {
            let id =
                access_request::request(conn, &caller, &patient_id, &reason, &public_url, now)?;
            let now = now.naive_utc();
            let record = info.record(
                &caller,
                "access_request",
                Some(&id),
                Some(&patient_id),
                None,
                Outcome::Allowed,
            );
            audit::append(conn, &[record], now)?;
            requests(conn, None, Some(&id))?
                .pop()
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("request vanished")))
        })
        .await?;
    state.outbox.wake();
    Ok(HttpResponse::Created().json(view))
}

#[utoipa::path(get, path = "/api/v1/patients/{id}/access-requests", tag = "access",
    params(("id" = uuid::Uuid, Path, description = "Patient id"), super::PageQuery),
    responses(
        (status = 200, description = "Newest first", body = super::Page<AccessRequestView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// The access requests on a patient (prescribers on the team).
pub async fn list_access_requests(
    state: web::Data<AppState>,
    access: PatientAccess<ManageTeam>,
    crate::api::extract::Query(page): crate::api::extract::Query<super::PageQuery>,
) -> Result<web::Json<super::Page<AccessRequestView>>, ApiError> {
    let id = access.patient_id;
    let list = state
        .db
        .read(move |conn| Ok(requests(conn, Some(&id), None)?))
        .await?;
    Ok(web::Json(super::Page::of_list(list, &page, |r| {
        r.id.clone()
    })?))
}

async fn decide(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    id: &str,
    approve: bool,
) -> Result<web::Json<AccessRequestView>, ApiError> {
    let id = path_id(id, "id")?;
    let patient_id = {
        let id = id.clone();
        state
            .db
            .read(move |conn| Ok(access_request::patient_of(conn, &id)?))
            .await?
            .ok_or_else(|| ApiError::NotFound("no such access request".into()))?
    };
    // Deciding needs the same right as managing the team; no basis reads as 404.
    authorize(
        &state,
        &caller,
        &patient_id,
        Permission::ManageTeam,
        &info,
        false,
    )
    .await?;
    let now = state.clock.now();
    let public_url = state.settings.server.public_url.clone();
    let view = state
        .db
        .write(move |conn| {
            let naive = now.naive_utc();
            let basis =
                access_request::decide(conn, &caller, &id, &patient_id, approve, &public_url, now)?;
            let record = info.record(
                &caller,
                "access_request",
                Some(&id),
                Some(&patient_id),
                basis,
                Outcome::Allowed,
            );
            audit::append(conn, &[record], naive)?;
            requests(conn, None, Some(&id))?
                .pop()
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("request vanished")))
        })
        .await?;
    state.outbox.wake();
    Ok(web::Json(view))
}

#[utoipa::path(post, path = "/api/v1/access-requests/{id}/approve", tag = "access",
    params(("id" = uuid::Uuid, Path, description = "Access request id")),
    responses(
        (status = 200, description = "Approved: the requester joins the team and is notified", body = AccessRequestView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already decided, or no consent to share with the requester's organisation", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Approves an access request (prescribers on the team).
pub async fn approve_access_request(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    id: web::Path<String>,
) -> Result<web::Json<AccessRequestView>, ApiError> {
    decide(state, caller, info, &id, true).await
}

#[utoipa::path(post, path = "/api/v1/access-requests/{id}/deny", tag = "access",
    params(("id" = uuid::Uuid, Path, description = "Access request id")),
    responses(
        (status = 200, description = "Denied; the requester is notified", body = AccessRequestView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Denies an access request (prescribers on the team).
pub async fn deny_access_request(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    id: web::Path<String>,
) -> Result<web::Json<AccessRequestView>, ApiError> {
    decide(state, caller, info, &id, false).await
}

#[utoipa::path(post, path = "/api/v1/patients/{id}/emergency-access", tag = "access",
    params(("id" = uuid::Uuid, Path, description = "Patient id")),
    request_body = ReasonBody,
    responses(
        (status = 201, description = "Granted at once for auth.emergency_access_ttl_s; the referent and team are notified", body = EmergencyAccessView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Clinicians only", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Breaks the glass: time-boxed read access (and observations) for an emergency, audited.
pub async fn emergency_access(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    id: web::Path<String>,
    Json(body): Json<ReasonBody>,
) -> Result<HttpResponse, ApiError> {
    caller.require_clinician()?;
    let patient_id = path_id(&id, "id")?;
    let reason = reason(&body.reason)?;
    let now = state.clock.now_naive();
    let ttl = Duration::seconds(
        i64::try_from(state.settings.auth.emergency_access_ttl_s).unwrap_or(43_200),
    );
    let public_url = state.settings.server.public_url.clone();
    let view = state
        .db
        .write(move |conn| {
            let (id, expires_at) = access_request::grant_emergency(
                conn,
                &caller.id,
                &patient_id,
                &reason,
                ttl,
                &public_url,
                now,
            )?;
            let record = info.record(
                &caller,
                "emergency_access",
                Some(&id),
                Some(&patient_id),
                Some(Basis::Emergency),
                Outcome::Allowed,
            );
            audit::append(conn, &[record], now)?;
            tracing::warn!(grant_id = %id, "emergency access granted");
            Ok(EmergencyAccessView {
                id,
                patient_id,
                expires_at: expires_at.and_utc(),
            })
        })
        .await?;
    state.outbox.wake();
    Ok(HttpResponse::Created().json(view))
}
