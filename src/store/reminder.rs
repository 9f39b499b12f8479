//! The day-before reminders of a temporary change's end: the end of a
//! temporary OMT adjustment, and of an opioid analgesic line, in the current
//! active plan. The referent and the pharmacists on the team (with a team
//! basis now) are notified in the app, and by a content-free email per their
//! preference. Each (patient, what ends, day) is claimed once by its row in
//! `end_reminders`, in the transaction that notifies, so several instances
//! never remind twice.

use chrono::{Duration, NaiveDate, NaiveDateTime};
use diesel::prelude::*;

use crate::db::schema::{care_plan_versions, care_plans, care_team_members, end_reminders};
use crate::db::{DbConnection, Tx};
use crate::domain::access::{Basis, TeamRole};
use crate::domain::drugs;
use crate::domain::plan::{PlanContent, PlanStatus};
use crate::domain::role::Role;
use crate::error::ApiError;
use crate::notify::inapp::{NotificationKind, Subject, notify};
use crate::store::access::basis_of;

/// Plans looked at per transaction.
pub const BATCH: i64 = 200;

/// What of `plan` ends on `tomorrow`, each as a stable subject key:
/// `omt_adjustment`, or `line:<index>:<drug>` for an opioid line.
pub fn ending_on(plan: &PlanContent, tomorrow: NaiveDate) -> Vec<String> {
    if plan.status != PlanStatus::Active {
        return Vec::new();
    }
    let mut out = Vec::new();
    if plan
        .omt
        .temporary_adjustment
        .as_ref()
        .is_some_and(|a| a.end == Some(tomorrow))
    {
        out.push("omt_adjustment".to_owned());
    }
    for (i, line) in plan.analgesics.iter().enumerate() {
        let opioid = drugs::find(&line.drug).is_some_and(drugs::Drug::is_opioid);
        if opioid && line.end == Some(tomorrow) {
            out.push(format!("line:{i}:{}", line.drug));
        }
    }
    out
}

/// Looks at up to [`BATCH`] current plans after patient `after` and sends
/// the reminders due for what ends tomorrow; returns the reminders sent and
/// the last patient looked at (`None` once every plan was seen).
pub fn remind_ending(
    conn: &mut Tx<'_>,
    today: NaiveDate,
    after: Option<&str>,
    public_url: &str,
    now: NaiveDateTime,
) -> Result<(usize, Option<String>), ApiError> {
    let tomorrow = today + Duration::days(1);
    let mut query = care_plan_versions::table
        .inner_join(
            care_plans::table.on(care_plans::patient_id
                .eq(care_plan_versions::patient_id)
                .and(care_plans::current_version.eq(care_plan_versions::version))),
        )
        .filter(care_plan_versions::status.eq(PlanStatus::Active))
        .order(care_plan_versions::patient_id)
        .limit(BATCH)
        .select((care_plan_versions::patient_id, care_plan_versions::content))
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(care_plan_versions::patient_id.gt(after.to_owned()));
    }
    let plans: Vec<(String, String)> = query.load(conn.conn())?;
    let last = (plans.len() as i64 == BATCH)
        .then(|| plans.last().map(|(p, _)| p.clone()))
        .flatten();
    let mut sent = 0;
    for (patient_id, content) in plans {
        let plan: PlanContent = serde_json::from_str(&content).map_err(ApiError::internal)?;
        for subject in ending_on(&plan, tomorrow) {
            if claim(conn, &patient_id, &subject, tomorrow, now)? {
                sent += notify_team(conn, &patient_id, public_url, now)?;
            }
        }
    }
    Ok((sent, last))
}

/// Inserts the reminder's row; false when another tick (or instance) had it.
fn claim(
    conn: &mut DbConnection,
    patient_id: &str,
    subject: &str,
    ends_on: NaiveDate,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let insert = diesel::insert_into(end_reminders::table)
        .values((
            end_reminders::patient_id.eq(patient_id),
            end_reminders::subject.eq(subject),
            end_reminders::ends_on.eq(ends_on),
            end_reminders::created_at.eq(now),
        ))
        .on_conflict_do_nothing();
    let inserted = match conn {
        DbConnection::Postgres(pg) => insert.execute(pg)?,
        DbConnection::Sqlite(lite) => insert.execute(lite)?,
    };
    Ok(inserted == 1)
}

/// Notifies the referent and the pharmacists of the team who have a team basis now.
fn notify_team(
    conn: &mut Tx<'_>,
    patient_id: &str,
    public_url: &str,
    now: NaiveDateTime,
) -> Result<usize, ApiError> {
    let members: Vec<(String, TeamRole)> = care_team_members::table
        .filter(care_team_members::patient_id.eq(patient_id))
        .filter(care_team_members::until.is_null())
        .select((care_team_members::user_id, care_team_members::team_role))
        .load::<(String, String)>(conn.conn())?
        .into_iter()
        .filter_map(|(u, r)| TeamRole::parse(&r).map(|r| (u, r)))
        .collect();
    let mut told = 0;
    for (user_id, team_role) in members {
        let Some((user, basis)) = basis_of(conn, patient_id, &user_id, now.and_utc())? else {
            continue;
        };
        let wanted = team_role == TeamRole::Referent || user.role == Role::Pharmacist;
        if !wanted || basis != Basis::Team {
            continue;
        }
        let subject = Subject {
            resource_type: "care_plan",
            resource_id: patient_id,
            patient_id: Some(patient_id),
        };
        notify(
            conn,
            &user.id,
            NotificationKind::TemporaryChangeEnding,
            &subject,
            public_url,
            now,
        )?;
        told += 1;
    }
    Ok(told)
}
