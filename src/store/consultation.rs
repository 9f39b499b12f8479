//! Consultations to addiction and pain centres as stored: the row, submitting
//! one (thread, the centre told), the state machine's moves with their
//! writes and notifications, applying a proposal as a plan version, and the
//! escalation of overdue ones.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::db::json::Json;
use crate::db::models::{Organization, new_id};
use crate::db::schema::{consultations, users};
use crate::db::{DbConnection, Tx};
use crate::domain::messaging::SubjectType;
use crate::domain::metrics::ConsultationTimes;
use crate::domain::plan::{Acknowledgement, PlanContent};
use crate::domain::role::{OrgKind, Role};
use crate::domain::rules::Warning;
use crate::domain::workflow::{ConsultationAction, ConsultationStatus, consultation_transition};
use crate::error::ApiError;
use crate::notify::events::{Event, EventKind, emit};
use crate::notify::inapp::{NotificationKind, Subject, notify};
use crate::notify::outbox;
use crate::notify::templates::{Email, ItemKind};
use crate::store::care_plan::{
    NewVersion, PlanSource, check_references, current_version, store_version,
};
use crate::store::messaging::create_thread;

text_enum! {
    /// How soon an answer is needed.
    Priority {
        Routine => "routine",
        Urgent => "urgent",
    }
}

text_enum! {
    /// How a consultation ended, for the requester.
    ConsultationOutcome {
        Resolved => "resolved",
        ReferralNeeded => "referral_needed",
        NoLongerNeeded => "no_longer_needed",
    }
}

/// A stored consultation.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = consultations)]
pub struct ConsultationRow {
    pub id: String,
    pub requester_id: String,
    pub centre_id: String,
    pub patient_id: Option<String>,
    pub priority: Priority,
    pub question: String,
    pub status: ConsultationStatus,
    pub due_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
    pub accepted_at: Option<NaiveDateTime>,
    pub accepted_by: Option<String>,
    pub answered_at: Option<NaiveDateTime>,
    pub answered_by: Option<String>,
    pub answer: Option<String>,
    pub proposed_plan: Option<Json<PlanContent>>,
    pub declined_at: Option<NaiveDateTime>,
    pub decline_reason: Option<String>,
    pub closed_at: Option<NaiveDateTime>,
    pub outcome: Option<ConsultationOutcome>,
    pub referral_avoided: Option<bool>,
    pub cancelled_at: Option<NaiveDateTime>,
    pub escalated_at: Option<NaiveDateTime>,
    pub applied_plan_version: Option<i32>,
    /// When the consultation stops opening its patient to the centre.
    pub basis_until: Option<NaiveDateTime>,
}

text_enum! {
    /// Which side of consultations to list.
    ConsultationBox {
        Sent => "sent",
        Received => "received",
    }
}

impl ConsultationBox {
    /// What a user lists when they name no side: a specialist what their
    /// centre received, anyone else what they sent.
    pub fn default_for(role: Role) -> Self {
        if role == Role::Specialist {
            ConsultationBox::Received
        } else {
            ConsultationBox::Sent
        }
    }
}

/// Up to `rows` consultations the caller sent or their centre received,
/// newest first, before `before` (an id): of one status or any, and only
/// those past due at `overdue_at` and still waiting for the centre when it
/// is given. Not yet narrowed to the patients the caller has a basis on.
pub fn listed(
    conn: &mut DbConnection,
    caller: &AuthUser,
    side: ConsultationBox,
    status: Option<ConsultationStatus>,
    overdue_at: Option<NaiveDateTime>,
    before: Option<&str>,
    rows: i64,
) -> QueryResult<Vec<ConsultationRow>> {
    let mut query = consultations::table
        .select(ConsultationRow::as_select())
        .order(consultations::id.desc())
        .limit(rows)
        .into_boxed();
    query = match side {
        ConsultationBox::Sent => query.filter(consultations::requester_id.eq(caller.id.clone())),
        ConsultationBox::Received => match (&caller.organization_id, caller.role) {
            (Some(org), Role::Specialist) => query.filter(consultations::centre_id.eq(org.clone())),
            // Only a centre's specialists receive consultations.
            _ => query.filter(consultations::id.is_null()),
        },
    };
    if let Some(status) = status {
        query = query.filter(consultations::status.eq(status.as_str()));
    }
    if let Some(now) = overdue_at {
        let waiting: Vec<&str> = ConsultationStatus::ALL
            .iter()
            .filter(|s| s.awaits_answer())
            .map(|s| s.as_str())
            .collect();
        query = query
            .filter(consultations::status.eq_any(waiting))
            .filter(consultations::due_at.le(now));
    }
    if let Some(before) = before {
        query = query.filter(consultations::id.lt(before));
    }
    query.load(conn)
}

impl ConsultationRow {
    /// The consultation with this id, if any. Callers check access.
    pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Self>> {
        consultations::table
            .find(id)
            .select(Self::as_select())
            .first(conn)
            .optional()
    }

    pub fn proposal(&self) -> Option<&PlanContent> {
        self.proposed_plan.as_ref().map(Json::get)
    }

    /// Whether `caller` is a specialist of the addressed centre.
    pub fn at_centre(&self, caller: &AuthUser) -> bool {
        caller.role == Role::Specialist
            && caller.organization_id.as_deref() == Some(self.centre_id.as_str())
    }
}

/// The active specialists of a centre.
pub fn specialists_of(conn: &mut DbConnection, centre_id: &str) -> QueryResult<Vec<String>> {
    users::table
        .filter(users::organization_id.eq(centre_id))
        .filter(users::role.eq(Role::Specialist.as_str()))
        .filter(users::active.eq(true))
        .select(users::id)
        .load(conn)
}

/// Records a live event about consultation `row` for its parties: the
/// requester and the centre's specialists (delivered while they have a
/// basis on its patient, if it has one).
pub fn emit_event(
    conn: &mut Tx<'_>,
    row: &ConsultationRow,
    kind: EventKind,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let mut parties = specialists_of(conn, &row.centre_id)?;
    parties.push(row.requester_id.clone());
    let event = Event {
        kind,
        patient_id: row.patient_id.as_deref(),
        refs: &[("consultation_id", row.id.as_str())],
    };
    emit(conn, &parties, &event, now)
}

/// Tells the centre: each specialist in the app (and by email per preference),
/// and the centre's shared address by email.
pub fn tell_centre(
    conn: &mut Tx<'_>,
    row: &ConsultationRow,
    kind: NotificationKind,
    email: ItemKind,
    public_url: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let subject = Subject {
        resource_type: "consultation",
        resource_id: &row.id,
        patient_id: row.patient_id.as_deref(),
    };
    for specialist in specialists_of(conn, &row.centre_id)? {
        notify(conn, &specialist, kind, &subject, public_url, now)?;
    }
    if let Some(address) = Organization::find(conn, &row.centre_id)?.and_then(|o| o.email) {
        let email = Email::NewItem {
            what: email,
            link: format!("{public_url}/consultations/{}", row.id),
        };
        outbox::queue(conn, &address, &email, now)?;
    }
    Ok(())
}

/// What a move carries besides the new status.
#[derive(Clone)]
pub enum Move {
    Accept,
    Answer {
        answer: String,
        proposal: Option<PlanContent>,
    },
    Decline {
        reason: String,
    },
    Close {
        outcome: ConsultationOutcome,
        referral_avoided: bool,
    },
    Cancel,
}

impl Move {
    pub fn action(&self) -> ConsultationAction {
        match self {
            Move::Accept => ConsultationAction::Accept,
            Move::Answer { .. } => ConsultationAction::Answer,
            Move::Decline { .. } => ConsultationAction::Decline,
            Move::Close { .. } => ConsultationAction::Close,
            Move::Cancel => ConsultationAction::Cancel,
        }
    }
}

/// Overdue consultations: the centre (address and specialists) is emailed and
/// the requester notified, once. Claimed with `SKIP LOCKED` on PostgreSQL.
pub fn escalate_overdue(
    conn: &mut Tx<'_>,
    public_url: &str,
    now: NaiveDateTime,
) -> Result<usize, ApiError> {
    let waiting: Vec<&str> = ConsultationStatus::ALL
        .iter()
        .filter(|s| s.awaits_answer())
        .map(|s| s.as_str())
        .collect();
    let due = consultations::table
        .filter(consultations::status.eq_any(waiting))
        .filter(consultations::due_at.le(now))
        .filter(consultations::escalated_at.is_null())
        .select(consultations::id)
        .limit(100);
    let ids: Vec<String> = match conn.conn() {
        DbConnection::Postgres(pg) => due.for_update().skip_locked().load(pg)?,
        DbConnection::Sqlite(lite) => due.load(lite)?,
    };
    let rows: Vec<ConsultationRow> = consultations::table
        .filter(consultations::id.eq_any(&ids))
        .select(ConsultationRow::as_select())
        .load(conn.conn())?;
    for row in &rows {
        diesel::update(consultations::table.find(&row.id))
            .set(consultations::escalated_at.eq(now))
            .execute(conn.conn())?;
        tell_centre(
            conn,
            row,
            NotificationKind::ConsultationOverdue,
            ItemKind::ConsultationOverdue,
            public_url,
            now,
        )?;
        let subject = Subject {
            resource_type: "consultation",
            resource_id: &row.id,
            patient_id: row.patient_id.as_deref(),
        };
        notify(
            conn,
            &row.requester_id,
            NotificationKind::ConsultationOverdue,
            &subject,
            public_url,
            now,
        )?;
        emit_event(conn, row, EventKind::ConsultationOverdue, now)?;
    }
    Ok(rows.len())
}

/// A consultation to submit, validated for shape and access by the caller.
pub struct Request<'a> {
    pub requester_id: &'a str,
    pub centre_id: &'a str,
    pub patient_id: Option<&'a str>,
    pub priority: Priority,
    pub question: String,
    pub due_at: NaiveDateTime,
    /// When it stops opening its patient to the centre (with a patient only).
    pub basis_until: Option<NaiveDateTime>,
}

/// Submits a consultation in the caller's transaction: the centre must be an
/// addiction or pain centre (422); makes its thread and tells the centre.
pub fn submit(
    conn: &mut Tx<'_>,
    request: Request<'_>,
    public_url: &str,
    now: NaiveDateTime,
) -> Result<ConsultationRow, ApiError> {
    let kind = Organization::find(conn, request.centre_id)?.map(|o| o.kind);
    if !matches!(kind, Some(OrgKind::AddictionCentre | OrgKind::PainCentre)) {
        return Err(ApiError::invalid(
            "centre_id",
            "not an addiction or pain centre of the network",
        ));
    }
    let row = ConsultationRow {
        id: new_id(),
        requester_id: request.requester_id.to_owned(),
        centre_id: request.centre_id.to_owned(),
        patient_id: request.patient_id.map(str::to_owned),
        priority: request.priority,
        question: request.question,
        status: ConsultationStatus::Submitted,
        due_at: request.due_at,
        created_at: now,
        accepted_at: None,
        accepted_by: None,
        answered_at: None,
        answered_by: None,
        answer: None,
        proposed_plan: None,
        declined_at: None,
        decline_reason: None,
        closed_at: None,
        outcome: None,
        referral_avoided: None,
        cancelled_at: None,
        escalated_at: None,
        applied_plan_version: None,
        basis_until: request.basis_until,
    };
    diesel::insert_into(consultations::table)
        .values(&row)
        .execute(conn.conn())?;
    create_thread(
        conn,
        SubjectType::Consultation,
        &row.id,
        row.patient_id.as_deref(),
        now,
    )?;
    tell_centre(
        conn,
        &row,
        NotificationKind::ConsultationReceived,
        ItemKind::ConsultationReceived,
        public_url,
        now,
    )?;
    emit_event(conn, &row, EventKind::ConsultationSubmitted, now)?;
    Ok(row)
}

/// Applies a move of the state machine in the caller's transaction (409 for
/// an illegal one) with its writes and notifications; `author_id` is who
/// moves. A proposal's prescribers must have a team basis (422). Returns the
/// consultation afterwards.
pub fn apply_move(
    conn: &mut Tx<'_>,
    id: &str,
    step: Move,
    author_id: &str,
    public_url: &str,
    now: NaiveDateTime,
) -> Result<ConsultationRow, ApiError> {
    let row = ConsultationRow::find(conn, id)?
        .ok_or_else(|| ApiError::NotFound("no such consultation".into()))?;
    let next = consultation_transition(row.status, step.action())
        .map_err(|m| ApiError::conflict("status", m))?;
    let target = consultations::table.find(&row.id);
    diesel::update(target)
        .set(consultations::status.eq(next))
        .execute(conn.conn())?;
    let event = match step {
        Move::Accept => EventKind::ConsultationAccepted,
        Move::Answer { .. } => EventKind::ConsultationAnswered,
        Move::Decline { .. } => EventKind::ConsultationDeclined,
        Move::Close { .. } => EventKind::ConsultationClosed,
        Move::Cancel => EventKind::ConsultationCancelled,
    };
    let subject = Subject {
        resource_type: "consultation",
        resource_id: &row.id,
        patient_id: row.patient_id.as_deref(),
    };
    match step {
        Move::Accept => {
            diesel::update(target)
                .set((
                    consultations::accepted_at.eq(now),
                    consultations::accepted_by.eq(author_id),
                ))
                .execute(conn.conn())?;
        }
        Move::Answer { answer, proposal } => {
            if let (Some(plan), Some(patient)) = (&proposal, &row.patient_id) {
                check_references(conn, patient, plan, now, "proposed_plan.")?;
            }
            diesel::update(target)
                .set((
                    consultations::accepted_at.eq(row.accepted_at.unwrap_or(now)),
                    consultations::accepted_by.eq(row
                        .accepted_by
                        .clone()
                        .unwrap_or_else(|| author_id.to_owned())),
                    consultations::answered_at.eq(now),
                    consultations::answered_by.eq(author_id),
                    consultations::answer.eq(answer),
                    consultations::proposed_plan.eq(proposal.map(Json::new)),
                ))
                .execute(conn.conn())?;
            notify(
                conn,
                &row.requester_id,
                NotificationKind::ConsultationAnswered,
                &subject,
                public_url,
                now,
            )?;
        }
        Move::Decline { reason } => {
            diesel::update(target)
                .set((
                    consultations::declined_at.eq(now),
                    consultations::decline_reason.eq(reason),
                ))
                .execute(conn.conn())?;
            notify(
                conn,
                &row.requester_id,
                NotificationKind::ConsultationDeclined,
                &subject,
                public_url,
                now,
            )?;
        }
        Move::Close {
            outcome,
            referral_avoided,
        } => {
            diesel::update(target)
                .set((
                    consultations::closed_at.eq(now),
                    consultations::outcome.eq(outcome),
                    consultations::referral_avoided.eq(referral_avoided),
                ))
                .execute(conn.conn())?;
        }
        Move::Cancel => {
            diesel::update(target)
                .set(consultations::cancelled_at.eq(now))
                .execute(conn.conn())?;
        }
    }
    emit_event(conn, &row, event, now)?;
    ConsultationRow::find(conn, id)?
        .ok_or_else(|| ApiError::NotFound("no such consultation".into()))
}

/// The plan version a proposal becomes, prepared by the caller.
pub struct ProposalPlan<'a> {
    pub patient_id: &'a str,
    pub content: &'a PlanContent,
    pub warnings: &'a [Warning],
    pub acknowledged: &'a [Acknowledgement],
    pub summary: &'a str,
    /// The care-plan version the requester looked at; 412 if it changed since.
    pub expected_version: Option<i32>,
}

/// Applies the proposal of consultation `id` as the next plan version, once
/// (409 the second time), in the caller's transaction.
pub fn apply_proposal(
    conn: &mut Tx<'_>,
    id: &str,
    plan: ProposalPlan<'_>,
    author_id: &str,
    now: NaiveDateTime,
) -> Result<ConsultationRow, ApiError> {
    let current = current_version(conn, plan.patient_id)?;
    if plan.expected_version.is_some_and(|v| Some(v) != current) {
        return Err(ApiError::PreconditionFailed(format!(
            "the care plan is at version {}; review the proposal again",
            current.unwrap_or(0)
        )));
    }
    // Re-checked under the write lock: applied once only.
    let applied = diesel::update(
        consultations::table
            .find(id)
            .filter(consultations::applied_plan_version.is_null()),
    )
    .set(consultations::applied_plan_version.eq(current.unwrap_or(0) + 1))
    .execute(conn.conn())?;
    if applied != 1 {
        return Err(ApiError::conflict(
            "id",
            "the proposal has already been applied",
        ));
    }
    store_version(
        conn,
        NewVersion {
            patient_id: plan.patient_id,
            content: plan.content,
            warnings: plan.warnings,
            acknowledged: plan.acknowledged,
            change_summary: plan.summary,
            source: Some(PlanSource {
                kind: "consultation".into(),
                id: id.to_owned(),
            }),
            author_id,
        },
        current,
        now,
    )?;
    ConsultationRow::find(conn, id)?
        .ok_or_else(|| ApiError::NotFound("no such consultation".into()))
}

/// The times of the consultations `centre` received in `[from, to)`.
pub fn times(
    conn: &mut DbConnection,
    centre: &str,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> QueryResult<Vec<ConsultationTimes>> {
    let rows = consultations::table
        .filter(consultations::centre_id.eq(centre))
        .filter(consultations::created_at.ge(from))
        .filter(consultations::created_at.lt(to))
        .select((
            consultations::created_at,
            consultations::due_at,
            consultations::answered_at,
            consultations::referral_avoided,
        ))
        .load::<(
            NaiveDateTime,
            NaiveDateTime,
            Option<NaiveDateTime>,
            Option<bool>,
        )>(conn)?;
    Ok(rows
        .into_iter()
        .map(
            |(created_at, due_at, answered_at, referral_avoided)| ConsultationTimes {
                created_at,
                due_at,
                answered_at,
                referral_avoided,
            },
        )
        .collect())
}
