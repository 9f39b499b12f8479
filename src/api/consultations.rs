//! Consultation requests to addiction and pain centres: due times by
//! priority, a state machine, escalation when late, and response metrics.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use diesel::QueryResult;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Json, Query, path_id};
use super::idempotency::IdempotencyKey;
use super::scope::{Linked, LinkedAccess, Read, RequestInfo, authorize};
use super::{Page, page_limit};
use crate::audit::{self, Outcome};
use crate::auth::AuthUser;
use crate::db::DbConnection;
use crate::db::models::Organization;
use crate::domain::access::{Basis, Permission};
use crate::domain::messaging::SubjectType;
use crate::domain::messaging::fingerprint;
use crate::domain::metrics::response_metrics;
use crate::domain::plan::{Acknowledgement, PlanContent};
use crate::domain::role::Role;
use crate::domain::rules::{self, Warning};
use crate::domain::text::{self, Flavour};
use crate::domain::workflow::ConsultationStatus;
use crate::error::{ApiError, FieldError, Problem};
use crate::state::AppState;
use crate::store::access::resolve;
use crate::store::care_plan::prepare;
use crate::store::consultation::{
    self, ConsultationOutcome, ConsultationRow, Move, Priority, ProposalPlan, Request, times,
};
use crate::store::idempotency;
use crate::store::messaging::thread_of;
use crate::store::user;

/// A request for advice.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConsultation {
    /// An addiction centre or a pain centre.
    #[schema(format = Uuid)]
    pub centre_id: String,
    /// Optional; the requester needs a basis on the patient.
    #[schema(format = Uuid)]
    pub patient_id: Option<String>,
    pub priority: Priority,
    #[schema(min_length = 1, max_length = 10000, pattern = "\\S")]
    pub question: String,
}

/// The centre's answer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    #[schema(min_length = 1, max_length = 20000, pattern = "\\S")]
    pub answer: String,
    /// A plan the requester may apply (patient consultations only).
    pub proposed_plan: Option<PlanContent>,
}

/// Why the centre declines.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decline {
    #[schema(min_length = 1, max_length = 5000, pattern = "\\S")]
    pub reason: String,
}

/// How the requester closes an answered consultation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Close {
    pub outcome: ConsultationOutcome,
    /// Whether the advice avoided a referral (a measure of the network).
    pub referral_avoided: bool,
}

/// Applying the centre's proposal to the care plan.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyProposal {
    /// The care-plan version the requester looked at; 412 if it changed since.
    #[serde(default, deserialize_with = "crate::domain::json::opt_integer")]
    pub expected_plan_version: Option<i32>,
    #[serde(default)]
    pub acknowledged_warnings: Vec<Acknowledgement>,
}

/// A party to a consultation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Party {
    pub id: String,
    pub name: String,
}

/// A consultation as its requester and the centre's specialists see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsultationView {
    pub id: String,
    /// The conversation about this consultation (its parties take part).
    pub thread_id: Option<String>,
    pub requester: Party,
    pub centre: Party,
    pub patient_id: Option<String>,
    pub priority: Priority,
    pub question: String,
    pub status: ConsultationStatus,
    pub due_at: DateTime<Utc>,
    /// Past due and still waiting for the centre.
    pub overdue: bool,
    pub created_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    pub answer: Option<String>,
    pub proposed_plan: Option<PlanContent>,
    /// The safety rules on the proposed plan.
    pub proposed_plan_warnings: Vec<Warning>,
    pub declined_at: Option<DateTime<Utc>>,
    pub decline_reason: Option<String>,
    pub closed_at: Option<DateTime<Utc>>,
    pub outcome: Option<ConsultationOutcome>,
    pub referral_avoided: Option<bool>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub escalated_at: Option<DateTime<Utc>>,
    /// The care-plan version created by applying the proposal.
    pub applied_plan_version: Option<i32>,
}

impl Linked for ConsultationRow {
    const RESOURCE: &'static str = "consultation";

    fn load(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Self>> {
        ConsultationRow::find(conn, id)
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn patient_id(&self) -> Option<&str> {
        self.patient_id.as_deref()
    }

    /// Its requester and the specialists of the addressed centre.
    fn is_party(&self, _: &mut DbConnection, caller: &AuthUser) -> QueryResult<bool> {
        Ok(self.requester_id == caller.id || self.at_centre(caller))
    }
}

/// A party to the consultation `{id}` with a basis on its patient (if any) now.
pub type ConsultationAccess = LinkedAccess<ConsultationRow, Read>;

fn utc(t: Option<NaiveDateTime>) -> Option<DateTime<Utc>> {
    t.map(|t| t.and_utc())
}

fn view(
    conn: &mut DbConnection,
    row: ConsultationRow,
    now: NaiveDateTime,
) -> Result<ConsultationView, ApiError> {
    let requester = user::full_name(conn, &row.requester_id)?;
    let centre = Organization::find(conn, &row.centre_id)?.map_or_else(String::new, |o| o.name);
    let proposal = row.proposal().cloned();
    let status = row.status;
    let thread_id = thread_of(conn, SubjectType::Consultation, &row.id)?;
    Ok(ConsultationView {
        thread_id,
        overdue: status.awaits_answer() && row.due_at <= now,
        proposed_plan_warnings: proposal.as_ref().map(rules::check).unwrap_or_default(),
        proposed_plan: proposal,
        status,
        requester: Party {
            id: row.requester_id,
            name: requester,
        },
        centre: Party {
            id: row.centre_id,
            name: centre,
        },
        priority: row.priority,
        outcome: row.outcome,
        due_at: row.due_at.and_utc(),
        created_at: row.created_at.and_utc(),
        accepted_at: utc(row.accepted_at),
        answered_at: utc(row.answered_at),
        declined_at: utc(row.declined_at),
        closed_at: utc(row.closed_at),
        cancelled_at: utc(row.cancelled_at),
        escalated_at: utc(row.escalated_at),
        id: row.id,
        patient_id: row.patient_id,
        question: row.question,
        answer: row.answer,
        decline_reason: row.decline_reason,
        referral_avoided: row.referral_avoided,
        applied_plan_version: row.applied_plan_version,
    })
}

fn required_text(raw: &str, field: &str, max: usize) -> Result<String, ApiError> {
    text::required(raw, field, Flavour::Free, max).map_err(|e| ApiError::Validation(vec![e]))
}

/// The audit record of a request on `row` by `caller` with the basis resolved.
fn record(
    info: &RequestInfo,
    caller: &AuthUser,
    row: &ConsultationRow,
    basis: Option<Basis>,
) -> audit::AuditRecord {
    info.record(
        caller,
        "consultation",
        Some(&row.id),
        row.patient_id.as_deref(),
        basis,
        Outcome::Allowed,
    )
}

#[utoipa::path(post, path = "/api/v1/consultations", tag = "consultations",
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Up to 255 visible ASCII characters, kept 24 h per user: the same key with the same body answers as the first time and creates nothing more; another body with the same key is 422")),
    request_body = NewConsultation,
    responses(
        (status = 201, description = "Submitted; the centre is notified", body = ConsultationView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Clinicians only", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No basis on the patient", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Asks an addiction or pain centre for advice (any clinician).
pub async fn create_consultation(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    key: IdempotencyKey,
    Json(body): Json<NewConsultation>,
) -> Result<HttpResponse, ApiError> {
    caller.require_clinician()?;
    let request = serde_json::to_string(&body).map_err(ApiError::internal)?;
    let question = required_text(&body.question, "question", text::QUESTION_MAX)?;
    let centre_id = uuid::Uuid::parse_str(&body.centre_id)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::invalid("centre_id", "not a valid id (UUID)"))?;
    let patient_id = body
        .patient_id
        .as_deref()
        .map(|p| {
            uuid::Uuid::parse_str(p)
                .map(|u| u.to_string())
                .map_err(|_| ApiError::invalid("patient_id", "not a valid id (UUID)"))
        })
        .transpose()?;
    if caller.organization_id.as_deref() == Some(centre_id.as_str()) {
        return Err(ApiError::invalid(
            "centre_id",
            "your own centre: a consultation asks another centre",
        ));
    }
    // Attaching a patient takes a team basis (not an emergency grant, not a
    // consultation), and the centre must be one the patient's consent covers:
    // otherwise the consultation would open the patient to it regardless.
    let basis = match &patient_id {
        Some(patient) => {
            let (basis, relations) =
                authorize(&state, &caller, patient, Permission::Refer, &info, false).await?;
            if !relations.sharing_allowed_with(Some(&centre_id)) {
                return Err(ApiError::invalid(
                    "patient_id",
                    "the patient's consent to sharing does not cover this centre",
                ));
            }
            Some(basis)
        }
        None => None,
    };
    let now = state.clock.now_naive();
    let basis_until = patient_id
        .as_ref()
        .map(|_| now + Duration::days(i64::from(state.settings.consultations.basis_max_days)));
    let hours = match body.priority {
        Priority::Urgent => state.settings.consultations.urgent_due_h,
        Priority::Routine => state.settings.consultations.routine_due_h,
    };
    let public_url = state.settings.server.public_url.clone();
    let view = state
        .db
        .write(move |conn| {
            let submitted = Request {
                requester_id: &caller.id,
                centre_id: &centre_id,
                patient_id: patient_id.as_deref(),
                priority: body.priority,
                question,
                due_at: now + Duration::hours(i64::from(hours)),
                basis_until,
            };
            let row = consultation::submit(conn, submitted, &public_url, now)?;
            audit::append(conn, &[record(&info, &caller, &row, basis)], now)?;
            let view = view(conn, row, now)?;
            if let Some(key) = &key.0 {
                let response = serde_json::to_string(&view).map_err(ApiError::internal)?;
                let print = fingerprint("create_consultation", "", &request);
                idempotency::claim_creation(conn, &caller.id, key, &print, &response, now)?;
            }
            Ok(view)
        })
        .await?;
    state.outbox.wake();
    Ok(HttpResponse::Created().json(view))
}

pub use crate::store::consultation::ConsultationBox;

/// Filters of the consultation lists.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsultationFilter {
    /// `sent` (mine) or `received` (my centre's); specialists default to `received`.
    pub r#box: Option<ConsultationBox>,
    pub status: Option<ConsultationStatus>,
    /// `true`: only those past due and still waiting for the centre.
    pub overdue: Option<bool>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/consultations", tag = "consultations",
    params(ConsultationFilter),
    responses(
        (status = 200, description = "Newest first", body = Page<ConsultationView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// The caller's consultations, sent or received by their centre.
pub async fn list_consultations(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    Query(filter): Query<ConsultationFilter>,
) -> Result<web::Json<Page<ConsultationView>>, ApiError> {
    let limit = page_limit(filter.limit)?;
    let clock = state.clock.now();
    let now = clock.naive_utc();
    let who = caller.clone();
    let page = state
        .db
        .read(move |conn| {
            let rows = consultation::listed(
                conn,
                &who,
                filter
                    .r#box
                    .unwrap_or(ConsultationBox::default_for(who.role)),
                filter.status,
                (filter.overdue == Some(true)).then_some(now),
                filter.cursor.as_deref(),
                limit + 1,
            )?;
            let rows = Page::from_rows(rows, limit, |r| r.id.clone());
            let mut items = Vec::with_capacity(rows.items.len());
            let mut records = Vec::new();
            for row in rows.items {
                if let Some(patient_id) = &row.patient_id {
                    // Being its party is not enough: a basis on the patient, now.
                    let Some((basis, _)) = resolve(conn, &who, patient_id, clock)? else {
                        continue;
                    };
                    records.push(record(&info, &who, &row, Some(basis)));
                }
                items.push(view(conn, row, now)?);
            }
            Ok((
                Page {
                    items,
                    next_cursor: rows.next_cursor,
                },
                records,
            ))
        })
        .await?;
    let (page, records) = page;
    state.audit.record_all(records).await?;
    Ok(web::Json(page))
}

#[utoipa::path(get, path = "/api/v1/consultations/{id}", tag = "consultations",
    params(("id" = uuid::Uuid, Path, description = "Consultation id")),
    responses(
        (status = 200, body = ConsultationView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown, neither its requester nor at its centre, or no basis on its patient now", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// One consultation.
pub async fn get_consultation(
    state: web::Data<AppState>,
    access: ConsultationAccess,
) -> Result<web::Json<ConsultationView>, ApiError> {
    let row = access.object;
    let now = state.clock.now_naive();
    Ok(web::Json(
        state.db.read(move |conn| view(conn, row, now)).await?,
    ))
}

async fn transition(
    state: &AppState,
    access: ConsultationAccess,
    step: Move,
) -> Result<ConsultationView, ApiError> {
    let action = step.action();
    if action.by_centre() && !access.object.at_centre(&access.caller) {
        return Err(access
            .forbid(state, "only the centre's specialists do this")
            .await);
    }
    if !action.by_centre() && access.object.requester_id != access.caller.id {
        return Err(access.forbid(state, "only the requester does this").await);
    }
    let record = access.audit();
    let (row, caller) = (access.object, access.caller);
    if matches!(
        step,
        Move::Answer {
            proposal: Some(_),
            ..
        }
    ) && row.patient_id.is_none()
    {
        return Err(ApiError::invalid(
            "proposed_plan",
            "only a consultation about a patient can carry a plan",
        ));
    }
    let now = state.clock.now_naive();
    let public_url = state.settings.server.public_url.clone();
    let id = row.id;
    state
        .db
        .write(move |conn| {
            let row = consultation::apply_move(conn, &id, step, &caller.id, &public_url, now)?;
            audit::append(conn, &[record], now)?;
            view(conn, row, now)
        })
        .await
}

macro_rules! consultation_route {
    ($name:ident, $path:literal, $doc:literal, $status_doc:literal, $body:ty, |$b:ident| $step:expr) => {
        #[utoipa::path(post, path = $path, tag = "consultations",
            params(("id" = uuid::Uuid, Path, description = "Consultation id")),
            request_body = $body,
            responses(
                (status = 200, description = $status_doc, body = ConsultationView),
                (status = 400, body = Problem, content_type = "application/problem+json"),
                (status = 401, body = Problem, content_type = "application/problem+json"),
                (status = 403, body = Problem, content_type = "application/problem+json"),
                (status = 404, body = Problem, content_type = "application/problem+json"),
                (status = 409, description = "Not allowed from the current status", body = Problem, content_type = "application/problem+json"),
                (status = 422, body = Problem, content_type = "application/problem+json"),
            ),
            security(("bearer" = [])))]
        #[doc = $doc]
        pub async fn $name(
            state: web::Data<AppState>,
            access: ConsultationAccess,
            Json($b): Json<$body>,
        ) -> Result<web::Json<ConsultationView>, ApiError> {
            let step = $step;
            let view = transition(&state, access, step).await?;
            state.outbox.wake();
            Ok(web::Json(view))
        }
    };
}

/// An empty body (`{}`) for moves that carry nothing.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

consultation_route!(
    accept_consultation,
    "/api/v1/consultations/{id}/accept",
    "Accepts a consultation (the centre's specialists).",
    "Accepted",
    Empty,
    |_b| Move::Accept
);
consultation_route!(
    answer_consultation,
    "/api/v1/consultations/{id}/answer",
    "Answers, optionally with a proposed plan (the centre's specialists).",
    "Answered; the requester is notified",
    Answer,
    |b| {
        let answer = required_text(&b.answer, "answer", text::ANSWER_MAX)?;
        let proposal = match b.proposed_plan {
            Some(plan) => {
                let errors: Vec<FieldError> = plan
                    .validate()
                    .into_iter()
                    .map(|mut e| {
                        e.field = format!("proposed_plan.{}", e.field);
                        e
                    })
                    .collect();
                if !errors.is_empty() {
                    return Err(ApiError::Validation(errors));
                }
                Some(plan)
            }
            None => None,
        };
        Move::Answer { answer, proposal }
    }
);
consultation_route!(
    decline_consultation,
    "/api/v1/consultations/{id}/decline",
    "Declines with a reason (the centre's specialists).",
    "Declined; the requester is notified",
    Decline,
    |b| Move::Decline {
        reason: required_text(&b.reason, "reason", text::DECLINE_REASON_MAX)?
    }
);
consultation_route!(
    close_consultation,
    "/api/v1/consultations/{id}/close",
    "Closes an answered consultation with its outcome (the requester).",
    "Closed",
    Close,
    |b| Move::Close {
        outcome: b.outcome,
        referral_avoided: b.referral_avoided
    }
);
consultation_route!(
    cancel_consultation,
    "/api/v1/consultations/{id}/cancel",
    "Cancels a consultation not yet answered (the requester).",
    "Cancelled",
    Empty,
    |_b| Move::Cancel
);

#[utoipa::path(post, path = "/api/v1/consultations/{id}/apply-proposal", tag = "consultations",
    params(("id" = uuid::Uuid, Path, description = "Consultation id")),
    request_body = ApplyProposal,
    responses(
        (status = 200, description = "A new care-plan version whose source is the consultation", body = ConsultationView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The requester, a prescriber on the team", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No proposal, or already applied", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The care plan changed since `expected_plan_version`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Blocked by unacknowledged safety warnings", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Applies the centre's proposed plan as a new care-plan version (the requester, prescriber on the team).
pub async fn apply_proposal(
    state: web::Data<AppState>,
    access: ConsultationAccess,
    Json(body): Json<ApplyProposal>,
) -> Result<web::Json<ConsultationView>, ApiError> {
    if access.object.requester_id != access.caller.id {
        return Err(access
            .forbid(&state, "only the requester applies the proposal")
            .await);
    }
    let LinkedAccess {
        object: row,
        caller,
        info,
        ..
    } = access;
    let (Some(patient_id), Some(proposal)) = (row.patient_id.clone(), row.proposal().cloned())
    else {
        return Err(ApiError::conflict(
            "id",
            "this consultation carries no proposed plan",
        ));
    };
    if row.applied_plan_version.is_some() {
        return Err(ApiError::conflict(
            "id",
            "the proposal has already been applied",
        ));
    }
    let (basis, _) = authorize(
        &state,
        &caller,
        &patient_id,
        Permission::WritePlan,
        &info,
        false,
    )
    .await?;
    let summary = "Proposal of the consultation applied".to_owned();
    let facts = super::clinical::patient_facts(&state, &patient_id).await?;
    let (content, warnings) = prepare(
        proposal,
        &summary,
        &body.acknowledged_warnings,
        &caller.id,
        facts.as_ref(),
    )?;
    let now = state.clock.now_naive();
    let view = state
        .db
        .write(move |conn| {
            let plan = ProposalPlan {
                patient_id: &patient_id,
                content: &content,
                warnings: &warnings,
                acknowledged: &body.acknowledged_warnings,
                summary: &summary,
                expected_version: body.expected_plan_version,
            };
            let row = consultation::apply_proposal(conn, &row.id, plan, &caller.id, now)?;
            audit::append(conn, &[record(&info, &caller, &row, Some(basis))], now)?;
            view(conn, row, now)
        })
        .await?;
    Ok(web::Json(view))
}

/// The reporting window.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsWindow {
    /// RFC 3339, years 1 to 9999; consultations created from then (default: 30 days before `to`).
    #[serde(default, deserialize_with = "crate::api::extract::query_time")]
    pub from: Option<DateTime<Utc>>,
    /// RFC 3339, years 1 to 9999; consultations created before then (default: now).
    #[serde(default, deserialize_with = "crate::api::extract::query_time")]
    pub to: Option<DateTime<Utc>>,
}

/// How quickly a centre answers.
#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct Metrics {
    pub centre_id: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Consultations received in the window.
    pub count: usize,
    pub answered: usize,
    /// Hours from request to answer, over answered consultations.
    pub median_response_hours: Option<f64>,
    pub p90_response_hours: Option<f64>,
    /// Share of all consultations answered within their due time.
    pub answered_within_due_share: Option<f64>,
    /// Share of closed consultations whose advice avoided a referral.
    pub referral_avoided_share: Option<f64>,
}

#[utoipa::path(get, path = "/api/v1/organizations/{id}/consultation-metrics", tag = "consultations",
    params(("id" = uuid::Uuid, Path, description = "Centre id"), MetricsWindow),
    responses(
        (status = 200, body = Metrics),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Members of the organisation and administrators", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Response-time metrics of a centre (its members, administrators).
pub async fn consultation_metrics(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    Query(window): Query<MetricsWindow>,
) -> Result<web::Json<Metrics>, ApiError> {
    let centre_id = path_id(&id, "id")?;
    if caller.role != Role::Admin && caller.organization_id.as_deref() != Some(centre_id.as_str()) {
        return Err(ApiError::Forbidden(
            "members of the organisation and administrators only".into(),
        ));
    }
    let now = state.clock.now();
    let to = window.to.unwrap_or(now);
    let from = match window.from {
        Some(from) => from,
        // Checked: `to` may be at the very start of the years accepted.
        None => to
            .checked_sub_signed(Duration::days(30))
            .ok_or_else(|| ApiError::malformed("to", "too early for a 30-day window"))?,
    };
    if from >= to {
        return Err(ApiError::malformed("from", "must be before `to`"));
    }
    let centre = centre_id.clone();
    let rows = state
        .db
        .read(move |conn| {
            if Organization::find(conn, &centre)?.is_none() {
                return Err(ApiError::NotFound("no such organisation".into()));
            }
            Ok(times(conn, &centre, from.naive_utc(), to.naive_utc())?)
        })
        .await?;
    let m = response_metrics(&rows);
    Ok(web::Json(Metrics {
        centre_id,
        from,
        to,
        count: m.count,
        answered: m.answered,
        median_response_hours: m.median_response_hours,
        p90_response_hours: m.p90_response_hours,
        answered_within_due_share: m.answered_within_due_share,
        referral_avoided_share: m.referral_avoided_share,
    }))
}
