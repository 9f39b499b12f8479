//! Discharge handovers as stored: the row, sending one (addressee checks,
//! thread, notification), the addressee's decision with the plan version it
//! creates, and the reminder when one waits too long.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::json::Json;
use crate::db::models::new_id;
use crate::db::schema::handovers;
use crate::db::{DbConnection, Tx};
use crate::domain::messaging::SubjectType;
use crate::domain::plan::{Acknowledgement, PlanContent};
use crate::domain::role::Role;
use crate::domain::rules::Warning;
use crate::domain::workflow::{HandoverAction, HandoverStatus, handover_transition};
use crate::error::ApiError;
use crate::notify::events::{Event, EventKind, emit};
use crate::notify::inapp::{NotificationKind, Subject, notify};
use crate::store::access::named_prescriber;
use crate::store::care_plan::{
    NewVersion, PlanSource, check_references, current_version, store_version,
};
use crate::store::messaging::create_thread;

text_enum! {
    /// The GP's decision on a handover.
    Decision {
        Accept => "accept",
        Amend => "amend",
        Reject => "reject",
    }
}

text_enum! {
    /// Which side of handovers to list.
    HandoverBox {
        Inbox => "inbox",
        Outbox => "outbox",
    }
}

/// A stored handover.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = handovers)]
pub struct HandoverRow {
    pub id: String,
    pub patient_id: String,
    pub from_user_id: String,
    pub to_user_id: String,
    pub summary: String,
    pub discharge_date: NaiveDate,
    pub follow_up: Option<String>,
    pub proposed_plan: Json<PlanContent>,
    pub base_plan_version: Option<i32>,
    pub status: HandoverStatus,
    pub due_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
    pub acknowledged_at: Option<NaiveDateTime>,
    pub reconciled_at: Option<NaiveDateTime>,
    pub decision: Option<Decision>,
    pub comment: Option<String>,
    pub resulting_plan_version: Option<i32>,
    pub reminded_at: Option<NaiveDateTime>,
}

impl HandoverRow {
    /// The handover with this id, if any. Callers check access.
    pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Self>> {
        handovers::table
            .find(id)
            .select(Self::as_select())
            .first(conn)
            .optional()
    }
}

/// Up to `rows` handovers to (`Inbox`) or from (`Outbox`) the user, newest
/// first, before `before` (an id), of one status or any; not yet narrowed
/// to the patients the user has a basis on.
pub fn listed(
    conn: &mut DbConnection,
    user_id: &str,
    side: HandoverBox,
    status: Option<HandoverStatus>,
    before: Option<&str>,
    rows: i64,
) -> QueryResult<Vec<HandoverRow>> {
    let mut query = handovers::table
        .select(HandoverRow::as_select())
        .order(handovers::id.desc())
        .limit(rows)
        .into_boxed();
    query = match side {
        HandoverBox::Inbox => query.filter(handovers::to_user_id.eq(user_id)),
        HandoverBox::Outbox => query.filter(handovers::from_user_id.eq(user_id)),
    };
    if let Some(status) = status {
        query = query.filter(handovers::status.eq(status.as_str()));
    }
    if let Some(before) = before {
        query = query.filter(handovers::id.lt(before));
    }
    query.load(conn)
}

/// A handover to send, already validated for shape.
pub struct Outgoing<'a> {
    pub patient_id: &'a str,
    pub from_user_id: &'a str,
    pub to_user_id: &'a str,
    pub summary: String,
    pub discharge_date: NaiveDate,
    pub follow_up: Option<String>,
    pub proposed_plan: &'a PlanContent,
    pub due_at: NaiveDateTime,
}

/// Sends a handover in the caller's transaction: the addressee must be an
/// active GP with a team basis on the patient and the proposal's prescribers
/// likewise (422 otherwise); makes its thread and notifies the GP.
pub fn send(
    conn: &mut Tx<'_>,
    out: Outgoing<'_>,
    public_url: &str,
    now: NaiveDateTime,
) -> Result<HandoverRow, ApiError> {
    let gp = named_prescriber(conn, out.patient_id, out.to_user_id, now.and_utc())?
        .filter(|u| u.role == Role::Gp);
    if gp.is_none() {
        return Err(ApiError::invalid(
            "to_user_id",
            "not an active GP with a team basis on this patient (on the care team, \
             and the patient's consent covers their organisation)",
        ));
    }
    check_references(
        conn,
        out.patient_id,
        out.proposed_plan,
        now,
        "proposed_plan.",
    )?;
    let row = HandoverRow {
        id: new_id(),
        patient_id: out.patient_id.to_owned(),
        from_user_id: out.from_user_id.to_owned(),
        to_user_id: out.to_user_id.to_owned(),
        summary: out.summary,
        discharge_date: out.discharge_date,
        follow_up: out.follow_up,
        proposed_plan: Json::new(out.proposed_plan.clone()),
        base_plan_version: current_version(conn, out.patient_id)?,
        status: HandoverStatus::Sent,
        due_at: out.due_at,
        created_at: now,
        acknowledged_at: None,
        reconciled_at: None,
        decision: None,
        comment: None,
        resulting_plan_version: None,
        reminded_at: None,
    };
    diesel::insert_into(handovers::table)
        .values(&row)
        .execute(conn.conn())?;
    create_thread(
        conn,
        SubjectType::Handover,
        &row.id,
        Some(&row.patient_id),
        now,
    )?;
    let subject = Subject {
        resource_type: "handover",
        resource_id: &row.id,
        patient_id: Some(&row.patient_id),
    };
    notify(
        conn,
        out.to_user_id,
        NotificationKind::HandoverReceived,
        &subject,
        public_url,
        now,
    )?;
    emit_event(conn, &row, EventKind::HandoverSent, now)?;
    Ok(row)
}

/// Records a live event about handover `row` for its sender and addressee.
fn emit_event(
    conn: &mut Tx<'_>,
    row: &HandoverRow,
    kind: EventKind,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let event = Event {
        kind,
        patient_id: Some(&row.patient_id),
        refs: &[("handover_id", row.id.as_str())],
    };
    emit(conn, &[&row.from_user_id, &row.to_user_id], &event, now)
}

/// The care-plan version a reconciliation writes, prepared by the caller
/// (see [`crate::store::care_plan::prepare`]).
#[derive(Clone)]
pub struct NewPlan {
    pub content: PlanContent,
    pub warnings: Vec<Warning>,
    pub acknowledged: Vec<Acknowledgement>,
    pub summary: String,
    /// The care-plan version the GP looked at; 412 if it changed since.
    pub expected_version: Option<i32>,
}

/// The addressee's move on a handover.
#[derive(Clone)]
pub struct Move {
    pub action: HandoverAction,
    pub decision: Option<Decision>,
    pub comment: Option<String>,
    pub plan: Option<NewPlan>,
}

/// Applies a move of the state machine in the caller's transaction (409 for
/// an illegal one): a reconciliation stores its plan version (412 when the
/// plan moved on) and tells the sender. Returns the handover afterwards.
pub fn decide(
    conn: &mut Tx<'_>,
    id: &str,
    step: Move,
    author_id: &str,
    public_url: &str,
    now: NaiveDateTime,
) -> Result<HandoverRow, ApiError> {
    let row = HandoverRow::find(conn, id)?
        .ok_or_else(|| ApiError::NotFound("no such handover".into()))?;
    let next = handover_transition(row.status, step.action)
        .map_err(|m| ApiError::conflict("status", m))?;
    let mut resulting = None;
    if let Some(plan) = &step.plan {
        let current = current_version(conn, &row.patient_id)?;
        if plan.expected_version.is_some_and(|v| Some(v) != current) {
            return Err(ApiError::PreconditionFailed(format!(
                "the care plan is at version {}, not {}; review the diff again",
                current.unwrap_or(0),
                plan.expected_version.unwrap_or(0)
            )));
        }
        let version = store_version(
            conn,
            NewVersion {
                patient_id: &row.patient_id,
                content: &plan.content,
                warnings: &plan.warnings,
                acknowledged: &plan.acknowledged,
                change_summary: &plan.summary,
                source: Some(PlanSource {
                    kind: "handover".into(),
                    id: row.id.clone(),
                }),
                author_id,
            },
            current,
            now,
        )?;
        resulting = Some(version.version);
    }
    let target = handovers::table.find(&row.id);
    diesel::update(target)
        .set((
            handovers::status.eq(next),
            handovers::acknowledged_at.eq(row.acknowledged_at.unwrap_or(now)),
        ))
        .execute(conn.conn())?;
    if step.action != HandoverAction::Acknowledge {
        diesel::update(target)
            .set((
                handovers::reconciled_at.eq(now),
                handovers::decision.eq(step.decision),
                handovers::comment.eq(&step.comment),
                handovers::resulting_plan_version.eq(resulting),
            ))
            .execute(conn.conn())?;
        let kind = if next == HandoverStatus::Rejected {
            NotificationKind::HandoverRejected
        } else {
            NotificationKind::HandoverReconciled
        };
        let subject = Subject {
            resource_type: "handover",
            resource_id: &row.id,
            patient_id: Some(&row.patient_id),
        };
        notify(conn, &row.from_user_id, kind, &subject, public_url, now)?;
    }
    let event = match next {
        HandoverStatus::Acknowledged => EventKind::HandoverAcknowledged,
        HandoverStatus::Rejected => EventKind::HandoverRejected,
        _ => EventKind::HandoverReconciled,
    };
    emit_event(conn, &row, event, now)?;
    HandoverRow::find(conn, &row.id)?.ok_or_else(|| ApiError::NotFound("no such handover".into()))
}
/// Handovers not acknowledged in time: the GP is reminded and the sender told,
/// once. Claimed with `SKIP LOCKED` on PostgreSQL. Returns how many.
pub fn remind_overdue(
    conn: &mut Tx<'_>,
    public_url: &str,
    now: NaiveDateTime,
) -> Result<usize, ApiError> {
    let due = handovers::table
        .filter(handovers::status.eq(HandoverStatus::Sent))
        .filter(handovers::due_at.le(now))
        .filter(handovers::reminded_at.is_null())
        .select((
            handovers::id,
            handovers::patient_id,
            handovers::from_user_id,
            handovers::to_user_id,
        ))
        .limit(100);
    let rows: Vec<(String, String, String, String)> = match conn.conn() {
        DbConnection::Postgres(pg) => due.for_update().skip_locked().load(pg)?,
        DbConnection::Sqlite(lite) => due.load(lite)?,
    };
    for (id, patient_id, from, to) in &rows {
        diesel::update(handovers::table.find(id))
            .set(handovers::reminded_at.eq(now))
            .execute(conn.conn())?;
        let subject = Subject {
            resource_type: "handover",
            resource_id: id,
            patient_id: Some(patient_id),
        };
        notify(
            conn,
            to,
            NotificationKind::HandoverOverdue,
            &subject,
            public_url,
            now,
        )?;
        notify(
            conn,
            from,
            NotificationKind::HandoverOverdue,
            &subject,
            public_url,
            now,
        )?;
    }
    Ok(rows.len())
}
