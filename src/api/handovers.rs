//! Discharge handovers from hospital to GP: a proposed plan, its diff against
//! the current plan, and an explicit reconciliation by the GP.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use diesel::QueryResult;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Json, Query};
use super::idempotency::IdempotencyKey;
use super::scope::{Linked, LinkedAccess, PatientAccess, Read, RequestInfo, authorize};
use super::{Page, page_limit};
use crate::audit::{self, Outcome};
use crate::auth::AuthUser;
use crate::db::DbConnection;
use crate::domain::access::Permission;
use crate::domain::messaging::SubjectType;
use crate::domain::messaging::fingerprint;
use crate::domain::plan::{Acknowledgement, PlanContent};
use crate::domain::plan_diff::{Change, diff};
use crate::domain::role::Role;
use crate::domain::rules::{self, Warning};
use crate::domain::text::{self, Flavour};
use crate::domain::workflow::{HandoverAction, HandoverStatus};
use crate::error::{ApiError, FieldError, Problem};
use crate::state::AppState;
use crate::store::access::resolve;
use crate::store::care_plan::{current_version_row, prepare};
use crate::store::handover::{self, Decision, HandoverRow, Move, NewPlan, Outgoing};
use crate::store::idempotency;
use crate::store::messaging::thread_of;

/// A discharge handover to send.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewHandover {
    /// The patient's GP, on the care team.
    #[schema(format = Uuid)]
    pub to_user_id: String,
    #[schema(min_length = 1, max_length = 10000, pattern = "\\S")]
    pub summary: String,
    pub discharge_date: NaiveDate,
    #[schema(max_length = 5000)]
    pub follow_up: Option<String>,
    pub proposed_plan: PlanContent,
}

/// The GP's reconciliation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reconcile {
    pub decision: Decision,
    /// The plan as amended (required for `amend`).
    pub plan: Option<PlanContent>,
    /// Why (required for `reject`).
    #[schema(max_length = 5000)]
    pub comment: Option<String>,
    /// The care-plan version the GP looked at; 412 if it changed since.
    #[serde(default, deserialize_with = "crate::domain::json::opt_integer")]
    pub expected_plan_version: Option<i32>,
    #[serde(default)]
    pub acknowledged_warnings: Vec<Acknowledgement>,
}

/// A handover as its sender and addressee see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HandoverView {
    pub id: String,
    /// The conversation about this handover (its parties take part).
    pub thread_id: Option<String>,
    pub patient_id: String,
    pub from_user_id: String,
    pub to_user_id: String,
    pub summary: String,
    pub discharge_date: NaiveDate,
    pub follow_up: Option<String>,
    pub proposed_plan: PlanContent,
    /// What the proposal changes against the patient's current plan.
    pub diff: Vec<Change>,
    /// The safety rules on the proposal.
    pub warnings: Vec<Warning>,
    /// The current care-plan version the diff is computed against.
    pub current_plan_version: Option<i32>,
    pub status: HandoverStatus,
    pub due_at: DateTime<Utc>,
    pub overdue: bool,
    pub created_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub reconciled_at: Option<DateTime<Utc>>,
    pub decision: Option<Decision>,
    pub comment: Option<String>,
    /// The care-plan version the reconciliation created.
    pub resulting_plan_version: Option<i32>,
}

impl Linked for HandoverRow {
    const RESOURCE: &'static str = "handover";

    fn load(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Self>> {
        HandoverRow::find(conn, id)
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn patient_id(&self) -> Option<&str> {
        Some(&self.patient_id)
    }

    /// Its sender and its addressee.
    fn is_party(&self, _: &mut DbConnection, caller: &AuthUser) -> QueryResult<bool> {
        Ok(self.to_user_id == caller.id || self.from_user_id == caller.id)
    }
}

/// A party to the handover `{id}` with a basis on its patient now.
pub type HandoverAccess = LinkedAccess<HandoverRow, Read>;

/// A handover as its parties see it: its diff against the current plan and its warnings.
pub fn handover_view(
    conn: &mut DbConnection,
    row: HandoverRow,
    now: NaiveDateTime,
) -> Result<HandoverView, ApiError> {
    let proposal = row.proposed_plan.get().clone();
    let current_row = current_version_row(conn, &row.patient_id)?;
    let current = current_row.as_ref().map(|r| r.version);
    let base = current_row.map(|r| r.content.into_inner());
    let status = row.status;
    let thread_id = thread_of(conn, SubjectType::Handover, &row.id)?;
    Ok(HandoverView {
        thread_id,
        diff: diff(base.as_ref(), &proposal),
        warnings: rules::check(&proposal),
        current_plan_version: current,
        overdue: status == HandoverStatus::Sent && row.due_at <= now,
        status,
        proposed_plan: proposal,
        due_at: row.due_at.and_utc(),
        created_at: row.created_at.and_utc(),
        acknowledged_at: row.acknowledged_at.map(|t| t.and_utc()),
        reconciled_at: row.reconciled_at.map(|t| t.and_utc()),
        decision: row.decision,
        id: row.id,
        patient_id: row.patient_id,
        from_user_id: row.from_user_id,
        to_user_id: row.to_user_id,
        summary: row.summary,
        discharge_date: row.discharge_date,
        follow_up: row.follow_up,
        comment: row.comment,
        resulting_plan_version: row.resulting_plan_version,
    })
}

#[utoipa::path(post, path = "/api/v1/patients/{id}/handovers", tag = "handovers",
    params(
        ("id" = uuid::Uuid, Path, description = "Patient id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Up to 255 visible ASCII characters, kept 24 h per user: the same key with the same body answers as the first time and creates nothing more; another body with the same key is 422"),
    ),
    request_body = NewHandover,
    responses(
        (status = 201, description = "Sent; the GP is notified. Includes the diff and the warnings", body = HandoverView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Hospital doctors only", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Sends a discharge handover to the patient's GP (hospital doctors with a basis).
pub async fn create_handover(
    state: web::Data<AppState>,
    access: PatientAccess<Read>,
    key: IdempotencyKey,
    Json(body): Json<NewHandover>,
) -> Result<HttpResponse, ApiError> {
    let request = format!(
        "{}\u{1f}{}",
        access.patient_id,
        serde_json::to_string(&body).map_err(ApiError::internal)?
    );
    if access.caller.role != Role::HospitalDoctor {
        return Err(access
            .forbid(&state, "only hospital doctors send discharge handovers")
            .await);
    }
    let mut errors = Vec::new();
    let summary = text::required(&body.summary, "summary", Flavour::Free, text::SUMMARY_MAX)
        .map_err(|e| errors.push(e))
        .ok();
    let follow_up = text::optional(
        body.follow_up.as_deref(),
        "follow_up",
        Flavour::Free,
        text::FOLLOW_UP_MAX,
    )
    .unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    errors.extend(body.proposed_plan.validate().into_iter().map(|mut e| {
        e.field = format!("proposed_plan.{}", e.field);
        e
    }));
    let to_user_id = uuid::Uuid::parse_str(&body.to_user_id)
        .map(|u| u.to_string())
        .map_err(|_| errors.push(FieldError::new("to_user_id", "not a valid id (UUID)")))
        .ok();
    let (Some(summary), Some(to_user_id), true) = (summary, to_user_id, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let now = state.clock.now_naive();
    let due = now + Duration::hours(i64::from(state.settings.handovers.acknowledge_due_h));
    let public_url = state.settings.server.public_url.clone();
    let view = state
        .db
        .write(move |conn| {
            let out = Outgoing {
                patient_id: &access.patient_id,
                from_user_id: &access.caller.id,
                to_user_id: &to_user_id,
                summary,
                discharge_date: body.discharge_date,
                follow_up,
                proposed_plan: &body.proposed_plan,
                due_at: due,
            };
            let row = handover::send(conn, out, &public_url, now)?;
            access.append_audit(conn, "handover", Some(&row.id), now)?;
            let view = handover_view(conn, row, now)?;
            if let Some(key) = &key.0 {
                let response = serde_json::to_string(&view).map_err(ApiError::internal)?;
                let print = fingerprint("create_handover", "", &request);
                idempotency::claim_creation(conn, &access.caller.id, key, &print, &response, now)?;
            }
            Ok(view)
        })
        .await?;
    state.outbox.wake();
    Ok(HttpResponse::Created().json(view))
}

/// Filters of the handover lists.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HandoverFilter {
    /// `inbox` (to me, the default) or `outbox` (from me).
    pub r#box: Option<HandoverBox>,
    pub status: Option<HandoverStatus>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

pub use crate::store::handover::HandoverBox;

#[utoipa::path(get, path = "/api/v1/handovers", tag = "handovers",
    params(HandoverFilter),
    responses(
        (status = 200, description = "Newest first", body = Page<HandoverView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// The caller's handovers, received or sent, about patients they have a
/// basis on now (every one listed is audited).
pub async fn list_handovers(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    Query(filter): Query<HandoverFilter>,
) -> Result<web::Json<Page<HandoverView>>, ApiError> {
    let limit = page_limit(filter.limit)?;
    let now = state.clock.now();
    let who = caller.clone();
    let (page, bases) = state
        .db
        .read(move |conn| {
            let rows = handover::listed(
                conn,
                &who.id,
                filter.r#box.unwrap_or(HandoverBox::Inbox),
                filter.status,
                filter.cursor.as_deref(),
                limit + 1,
            )?;
            let rows = Page::from_rows(rows, limit, |r| r.id.clone());
            let mut items = Vec::with_capacity(rows.items.len());
            let mut bases = Vec::with_capacity(rows.items.len());
            for row in rows.items {
                // Being its party is not enough: a basis on the patient, now.
                let Some((basis, _)) = resolve(conn, &who, &row.patient_id, now)? else {
                    continue;
                };
                bases.push(basis);
                items.push(handover_view(conn, row, now.naive_utc())?);
            }
            Ok((
                Page {
                    items,
                    next_cursor: rows.next_cursor,
                },
                bases,
            ))
        })
        .await?;
    let records = page
        .items
        .iter()
        .zip(bases)
        .map(|(h, basis)| {
            info.record(
                &caller,
                "handover",
                Some(&h.id),
                Some(&h.patient_id),
                Some(basis),
                Outcome::Allowed,
            )
        })
        .collect();
    state.audit.record_all(records).await?;
    Ok(web::Json(page))
}

#[utoipa::path(get, path = "/api/v1/handovers/{id}", tag = "handovers",
    params(("id" = uuid::Uuid, Path, description = "Handover id")),
    responses(
        (status = 200, description = "With the diff against the current plan", body = HandoverView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown, not its sender or addressee, or no basis on its patient now", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// One handover (its sender and addressee, while they have a basis on the patient).
pub async fn get_handover(
    state: web::Data<AppState>,
    access: HandoverAccess,
) -> Result<web::Json<HandoverView>, ApiError> {
    let row = access.object;
    let now = state.clock.now_naive();
    Ok(web::Json(
        state
            .db
            .read(move |conn| handover_view(conn, row, now))
            .await?,
    ))
}

/// The reconciliation's comment, trimmed: required to reject.
fn reconcile_comment(body: &Reconcile) -> Result<Option<String>, ApiError> {
    match text::optional(
        body.comment.as_deref(),
        "comment",
        Flavour::Free,
        text::COMMENT_MAX,
    ) {
        Ok(None) if body.decision == Decision::Reject => {
            Err(ApiError::Validation(vec![FieldError::new(
                "comment", "required",
            )]))
        }
        Ok(comment) => Ok(comment),
        Err(e) => Err(ApiError::Validation(vec![e])),
    }
}

/// The plan a decision makes the new version (none for a rejection): the
/// proposal as it is to accept, the GP's own to amend.
fn reconciled_content(
    row: &HandoverRow,
    decision: Decision,
    plan: Option<PlanContent>,
) -> Result<Option<PlanContent>, ApiError> {
    match (decision, plan) {
        (Decision::Reject, None) => Ok(None),
        (Decision::Reject, Some(_)) => Err(ApiError::invalid("plan", "a rejection takes no plan")),
        (Decision::Accept, None) => Ok(Some(row.proposed_plan.get().clone())),
        (Decision::Accept, Some(_)) => Err(ApiError::invalid(
            "plan",
            "accept takes the proposal as it is; use amend to change it",
        )),
        (Decision::Amend, Some(plan)) => Ok(Some(plan)),
        (Decision::Amend, None) => Err(ApiError::invalid("plan", "required to amend")),
    }
}

/// The plan version a reconciliation writes, checked by the safety rules
/// against the patient's clinical context (its summary cut to 500 characters).
async fn new_plan(
    state: &AppState,
    patient_id: &str,
    author_id: &str,
    content: PlanContent,
    summary: String,
    acknowledged: Vec<Acknowledgement>,
    expected_version: Option<i32>,
) -> Result<NewPlan, ApiError> {
    let summary: String = summary.chars().take(500).collect();
    let facts = super::clinical::patient_facts(state, patient_id).await?;
    let (content, warnings) = prepare(content, &summary, &acknowledged, author_id, facts.as_ref())?;
    Ok(NewPlan {
        content,
        warnings,
        acknowledged,
        summary,
        expected_version,
    })
}

/// Applies a move of the state machine, as the addressee, in one transaction.
async fn decide(
    state: &AppState,
    access: HandoverAccess,
    action: HandoverAction,
    reconcile: Option<Reconcile>,
) -> Result<HandoverView, ApiError> {
    if access.object.to_user_id != access.caller.id {
        return Err(access
            .forbid(
                state,
                "only the addressee acknowledges or reconciles a handover",
            )
            .await);
    }
    let record = access.audit();
    let LinkedAccess {
        object: row,
        caller,
        info,
        ..
    } = access;
    let (caller, info) = (&caller, &info);
    let now = state.clock.now_naive();
    let public_url = state.settings.server.public_url.clone();
    let step = match reconcile {
        None => Move {
            action,
            decision: None,
            comment: None,
            plan: None,
        },
        Some(body) => {
            let comment = reconcile_comment(&body)?;
            let plan = match reconciled_content(&row, body.decision, body.plan)? {
                // A new plan version needs the right to write the plan.
                Some(content) => {
                    authorize(
                        state,
                        caller,
                        &row.patient_id,
                        Permission::WritePlan,
                        info,
                        false,
                    )
                    .await?;
                    let summary = comment
                        .clone()
                        .unwrap_or_else(|| "Discharge handover reconciled".to_owned());
                    let plan = new_plan(
                        state,
                        &row.patient_id,
                        &caller.id,
                        content,
                        summary,
                        body.acknowledged_warnings,
                        body.expected_plan_version,
                    )
                    .await?;
                    Some(plan)
                }
                None => None,
            };
            Move {
                action,
                decision: Some(body.decision),
                comment,
                plan,
            }
        }
    };
    let (id, author) = (row.id.clone(), caller.id.clone());
    state
        .db
        .write(move |conn| {
            let row = handover::decide(conn, &id, step, &author, &public_url, now)?;
            audit::append(conn, &[record], now)?;
            handover_view(conn, row, now)
        })
        .await
}

#[utoipa::path(post, path = "/api/v1/handovers/{id}/acknowledge", tag = "handovers",
    params(("id" = uuid::Uuid, Path, description = "Handover id")),
    responses(
        (status = 200, body = HandoverView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only the addressee", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already acknowledged or decided", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Acknowledges receipt of a handover (its addressee).
pub async fn acknowledge_handover(
    state: web::Data<AppState>,
    access: HandoverAccess,
) -> Result<web::Json<HandoverView>, ApiError> {
    let view = decide(&state, access, HandoverAction::Acknowledge, None).await?;
    Ok(web::Json(view))
}

#[utoipa::path(post, path = "/api/v1/handovers/{id}/reconcile", tag = "handovers",
    params(("id" = uuid::Uuid, Path, description = "Handover id")),
    request_body = Reconcile,
    responses(
        (status = 200, description = "Decided; accept and amend create a care-plan version whose source is the handover", body = HandoverView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already decided", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The care plan changed since `expected_plan_version`", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Accepts, amends or rejects a handover (its addressee).
pub async fn reconcile_handover(
    state: web::Data<AppState>,
    access: HandoverAccess,
    Json(body): Json<Reconcile>,
) -> Result<web::Json<HandoverView>, ApiError> {
    let action = if body.decision == Decision::Reject {
        HandoverAction::Reject
    } else {
        HandoverAction::Reconcile
    };
    let view = decide(&state, access, action, Some(body)).await?;
    state.outbox.wake();
    Ok(web::Json(view))
}
