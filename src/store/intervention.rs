//! Pharmacist interventions: raised on a plan version (its OMT or one
//! line), addressed to that line's prescriber, answered once (accepted,
//! optionally naming the version that resolves it, or refused with a
//! comment). Each move notifies the other party in its transaction.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::models::new_id;
use crate::db::schema::{interventions, users};
use crate::db::{DbConnection, Tx};
use crate::domain::plan::OmtMedication;
use crate::domain::workflow::{
    InterventionAction, InterventionProblem, InterventionStatus, ProposedAction,
    intervention_transition,
};
use crate::error::{ApiError, FieldError};
use crate::notify::inapp::{NotificationKind, Subject, notify};
use crate::store::access::named_prescriber;
use crate::store::care_plan::version_row;
use crate::store::care_team::referent;

/// A stored intervention.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = interventions)]
pub struct InterventionRow {
    pub id: String,
    pub patient_id: String,
    pub plan_version: i32,
    /// Index of the line in that version; `None`: the OMT.
    pub line_index: Option<i32>,
    pub drug: String,
    pub problem: InterventionProblem,
    pub proposed_action: ProposedAction,
    pub note: Option<String>,
    pub author_id: String,
    pub addressee_id: String,
    pub status: InterventionStatus,
    pub created_at: NaiveDateTime,
    pub decided_at: Option<NaiveDateTime>,
    pub resolved_by_version: Option<i32>,
    pub comment: Option<String>,
}

impl InterventionRow {
    /// The intervention with this id, if any. Callers must have checked access.
    pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Self>> {
        interventions::table
            .find(id)
            .select(Self::as_select())
            .first(conn)
            .optional()
    }
}

/// What a pharmacist raises.
pub struct NewIntervention<'a> {
    pub patient_id: &'a str,
    pub plan_version: i32,
    pub line: Option<usize>,
    pub problem: InterventionProblem,
    pub proposed_action: ProposedAction,
    pub note: Option<&'a str>,
    pub author_id: &'a str,
}

/// Raises an intervention: 422 naming `plan_version` or `line` when they
/// name nothing. It goes to the prescriber of the line (or of the OMT; the
/// version's author when none is named); when that prescriber no longer has
/// a team basis, to the referent, so that it always reaches someone who may
/// change the plan.
pub fn raise(
    conn: &mut Tx<'_>,
    new: NewIntervention<'_>,
    public_url: &str,
    now: NaiveDateTime,
) -> Result<InterventionRow, ApiError> {
    let version = version_row(conn, new.patient_id, new.plan_version)?.ok_or_else(|| {
        ApiError::Validation(vec![FieldError::new(
            "plan_version",
            "no such version of this patient's care plan",
        )])
    })?;
    let content = version.content.into_inner();
    let (drug, prescriber) = match new.line {
        Some(i) => {
            let line = content.analgesics.get(i).ok_or_else(|| {
                ApiError::Validation(vec![FieldError::new(
                    "line",
                    format!(
                        "version {} has {} line(s), numbered from 0",
                        new.plan_version,
                        content.analgesics.len()
                    ),
                )])
            })?;
            (line.drug.clone(), line.prescriber_id.clone())
        }
        None => {
            let code = content.omt.medication.drug_code().ok_or_else(|| {
                ApiError::Validation(vec![FieldError::new(
                    "line",
                    "this version has no OMT: name a line",
                )])
            })?;
            debug_assert!(content.omt.medication != OmtMedication::None);
            (code.to_owned(), content.omt.prescriber_id.clone())
        }
    };
    let prescriber = prescriber.unwrap_or(version.author_id);
    let addressee = match named_prescriber(conn, new.patient_id, &prescriber, now.and_utc())? {
        Some(user) => user.id,
        None => referent(conn, new.patient_id)?.ok_or_else(|| {
            ApiError::conflict("line", "nobody on the care team can answer for this line")
        })?,
    };
    let row = InterventionRow {
        id: new_id(),
        patient_id: new.patient_id.to_owned(),
        plan_version: new.plan_version,
        line_index: new.line.and_then(|i| i32::try_from(i).ok()),
        drug,
        problem: new.problem,
        proposed_action: new.proposed_action,
        note: new.note.map(str::to_owned),
        author_id: new.author_id.to_owned(),
        addressee_id: addressee,
        status: InterventionStatus::Open,
        created_at: now,
        decided_at: None,
        resolved_by_version: None,
        comment: None,
    };
    diesel::insert_into(interventions::table)
        .values(&row)
        .execute(conn.conn())?;
    let subject = Subject {
        resource_type: "intervention",
        resource_id: &row.id,
        patient_id: Some(new.patient_id),
    };
    notify(
        conn,
        &row.addressee_id,
        NotificationKind::InterventionReceived,
        &subject,
        public_url,
        now,
    )?;
    Ok(row)
}

/// The addressee's answer.
pub struct Answer<'a> {
    pub action: InterventionAction,
    pub resolved_by_version: Option<i32>,
    pub comment: Option<&'a str>,
}

/// Accepts or refuses an open intervention (409 when it was answered
/// already; 422 when the resolving version does not follow the one it is
/// about); notifies its author.
pub fn decide(
    conn: &mut Tx<'_>,
    id: &str,
    answer: Answer<'_>,
    public_url: &str,
    now: NaiveDateTime,
) -> Result<InterventionRow, ApiError> {
    let row = InterventionRow::find(conn, id)?
        .ok_or_else(|| ApiError::NotFound("no such intervention".into()))?;
    let status = intervention_transition(row.status, answer.action)
        .map_err(|why| ApiError::conflict("id", why))?;
    if let Some(v) = answer.resolved_by_version {
        let exists = version_row(conn, &row.patient_id, v)?.is_some();
        if !exists || v <= row.plan_version {
            return Err(ApiError::Validation(vec![FieldError::new(
                "resolved_by_version",
                format!(
                    "a version of this patient's plan after version {}",
                    row.plan_version
                ),
            )]));
        }
    }
    // The status in the filter: of two racing answers, one wins.
    let updated = diesel::update(
        interventions::table
            .find(id)
            .filter(interventions::status.eq(row.status)),
    )
    .set((
        interventions::status.eq(status),
        interventions::decided_at.eq(now),
        interventions::resolved_by_version.eq(answer.resolved_by_version),
        interventions::comment.eq(answer.comment),
    ))
    .execute(conn.conn())?;
    if updated != 1 {
        return Err(ApiError::conflict(
            "id",
            "this intervention was answered meanwhile",
        ));
    }
    let subject = Subject {
        resource_type: "intervention",
        resource_id: id,
        patient_id: Some(&row.patient_id),
    };
    notify(
        conn,
        &row.author_id,
        NotificationKind::InterventionDecided,
        &subject,
        public_url,
        now,
    )?;
    InterventionRow::find(conn, id)?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("intervention vanished")))
}

/// A page of the patient's interventions, newest first (ids are UUIDv7).
pub fn list_for_patient(
    conn: &mut DbConnection,
    patient_id: &str,
    status: Option<InterventionStatus>,
    limit: i64,
    cursor: Option<&str>,
) -> QueryResult<Vec<InterventionRow>> {
    let mut query = interventions::table
        .filter(interventions::patient_id.eq(patient_id))
        .order(interventions::id.desc())
        .limit(limit + 1)
        .select(InterventionRow::as_select())
        .into_boxed();
    if let Some(status) = status {
        query = query.filter(interventions::status.eq(status));
    }
    if let Some(cursor) = cursor {
        query = query.filter(interventions::id.lt(cursor.to_owned()));
    }
    query.load(conn)
}

/// The interventions raised on one version of the plan, oldest first.
pub fn for_version(
    conn: &mut DbConnection,
    patient_id: &str,
    version: i32,
) -> QueryResult<Vec<InterventionRow>> {
    interventions::table
        .filter(interventions::patient_id.eq(patient_id))
        .filter(interventions::plan_version.eq(version))
        .order(interventions::id)
        .select(InterventionRow::as_select())
        .load(conn)
}

/// How the interventions of an organisation's pharmacists fared.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    pub open: i64,
    pub accepted: i64,
    pub refused: i64,
}

/// Counts the interventions raised by members of `organization_id`.
pub fn tally(conn: &mut DbConnection, organization_id: &str) -> QueryResult<Tally> {
    let rows: Vec<(InterventionStatus, i64)> = interventions::table
        .inner_join(users::table.on(users::id.eq(interventions::author_id)))
        .filter(users::organization_id.eq(organization_id))
        .group_by(interventions::status)
        .select((interventions::status, diesel::dsl::count_star()))
        .load(conn)?;
    let mut t = Tally::default();
    for (status, n) in rows {
        match status {
            InterventionStatus::Open => t.open = n,
            InterventionStatus::Accepted => t.accepted = n,
            InterventionStatus::Refused => t.refused = n,
        }
    }
    Ok(t)
}

/// Open interventions addressed to `user_id`, with their patient (the
/// inbox counts those whose patient the user still has a basis on).
pub fn open_for(conn: &mut DbConnection, user_id: &str) -> QueryResult<Vec<String>> {
    interventions::table
        .filter(interventions::addressee_id.eq(user_id))
        .filter(interventions::status.eq(InterventionStatus::Open))
        .select(interventions::patient_id)
        .limit(1000)
        .load(conn)
}
