//! Observations as stored, and the destabilisation watch they feed: an
//! alert episode opens (the referent told once) when a score crosses its
//! threshold (`domain::watch`) and closes when it is back under.

use chrono::{Duration, NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::models::new_id;
use crate::db::schema::{observation_alerts, observations};
use crate::db::{DbConnection, Tx};
use crate::domain::watch::{Scores, assess};
use crate::error::ApiError;
use crate::notify::events::{Event, EventKind, emit};
use crate::notify::inapp::{NotificationKind, Subject, notify};
use crate::store::care_team::referent;
use crate::store::messaging::patient_audience;

text_enum! {
    /// Which measure an observation carries (a filter of the list).
    ObservationKind {
        Pain => "pain",
        Sedation => "sedation",
        Withdrawal => "withdrawal",
        Dispensing => "dispensing",
    }
}

/// An observation as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = observations)]
pub struct ObservationRow {
    pub id: String,
    pub patient_id: String,
    pub author_id: String,
    pub pain_score: Option<i32>,
    pub sedation_score: Option<i32>,
    pub cows_score: Option<i32>,
    pub dose_dispensed_mg: Option<f64>,
    pub note: Option<String>,
    pub recorded_at: NaiveDateTime,
}

/// The observation with this id.
pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<ObservationRow> {
    observations::table
        .find(id)
        .select(ObservationRow::as_select())
        .first(conn)
}

/// Up to `rows` of the patient's observations, newest first, before
/// `before` (an id): those carrying one measure (or any), recorded from
/// `since` on.
pub fn newest(
    conn: &mut DbConnection,
    patient_id: &str,
    kind: Option<ObservationKind>,
    since: Option<NaiveDateTime>,
    before: Option<&str>,
    rows: i64,
) -> QueryResult<Vec<ObservationRow>> {
    let mut query = observations::table
        .filter(observations::patient_id.eq(patient_id))
        .order(observations::id.desc())
        .limit(rows)
        .select(ObservationRow::as_select())
        .into_boxed();
    query = match kind {
        Some(ObservationKind::Pain) => query.filter(observations::pain_score.is_not_null()),
        Some(ObservationKind::Sedation) => query.filter(observations::sedation_score.is_not_null()),
        Some(ObservationKind::Withdrawal) => query.filter(observations::cows_score.is_not_null()),
        Some(ObservationKind::Dispensing) => {
            query.filter(observations::dose_dispensed_mg.is_not_null())
        }
        None => query,
    };
    if let Some(since) = since {
        query = query.filter(observations::recorded_at.ge(since));
    }
    if let Some(before) = before {
        query = query.filter(observations::id.lt(before));
    }
    query.load(conn)
}

/// A validated observation to record.
pub struct NewObservation<'a> {
    pub patient_id: &'a str,
    pub author_id: &'a str,
    pub scores: Scores,
    pub dose_dispensed_mg: Option<f64>,
    /// Trimmed here; blank is none.
    pub note: Option<&'a str>,
}

/// Records the observation and runs the watch; returns its id.
pub fn record(
    conn: &mut Tx<'_>,
    new: NewObservation<'_>,
    public_url: &str,
    now: NaiveDateTime,
    today: NaiveDate,
) -> Result<String, ApiError> {
    let id = new_id();
    let note = new.note.map(str::trim).filter(|n| !n.is_empty());
    diesel::insert_into(observations::table)
        .values((
            observations::id.eq(&id),
            observations::patient_id.eq(new.patient_id),
            observations::author_id.eq(new.author_id),
            observations::pain_score.eq(new.scores.pain),
            observations::sedation_score.eq(new.scores.sedation),
            observations::cows_score.eq(new.scores.cows),
            observations::dose_dispensed_mg.eq(new.dose_dispensed_mg),
            observations::note.eq(note),
            observations::recorded_at.eq(now),
        ))
        .execute(conn.conn())?;
    watch(
        conn,
        new.patient_id,
        &id,
        &new.scores,
        public_url,
        now,
        today,
    )?;
    Ok(id)
}

/// Opens or closes alert episodes; notifies the referent when one opens.
fn watch(
    conn: &mut Tx<'_>,
    patient_id: &str,
    observation_id: &str,
    observation: &Scores,
    public_url: &str,
    now: NaiveDateTime,
    today: NaiveDate,
) -> Result<(), ApiError> {
    let tightened = match crate::store::care_plan::current_version_row(conn, patient_id)? {
        Some(row) => row.content.tightened_watch_until(today).is_some(),
        None => false,
    };
    let recent_high_pain = observation.pain.is_some_and(|p| p >= 7)
        && observations::table
            .filter(observations::patient_id.eq(patient_id))
            .filter(observations::recorded_at.ge(now - Duration::hours(24)))
            .filter(observations::pain_score.ge(7))
            .count()
            .get_result::<i64>(conn.conn())?
            >= 2;
    for (kind, above) in assess(observation, recent_high_pain, tightened) {
        let open: Option<String> = observation_alerts::table
            .filter(observation_alerts::patient_id.eq(patient_id))
            .filter(observation_alerts::kind.eq(kind.as_str()))
            .filter(observation_alerts::closed_at.is_null())
            .select(observation_alerts::id)
            .first(conn.conn())
            .optional()?;
        match (above, open) {
            (true, None) => {
                let id = new_id();
                diesel::insert_into(observation_alerts::table)
                    .values((
                        observation_alerts::id.eq(&id),
                        observation_alerts::patient_id.eq(patient_id),
                        observation_alerts::kind.eq(kind.as_str()),
                        observation_alerts::opened_at.eq(now),
                    ))
                    .execute(conn.conn())?;
                if let Some(referent) = referent(conn, patient_id)? {
                    let subject = Subject {
                        resource_type: "observation_alert",
                        resource_id: &id,
                        patient_id: Some(patient_id),
                    };
                    notify(
                        conn,
                        &referent,
                        NotificationKind::ObservationAlert,
                        &subject,
                        public_url,
                        now,
                    )?;
                }
                let event = Event {
                    kind: EventKind::ObservationAlert,
                    patient_id: Some(patient_id),
                    refs: &[
                        ("alert_id", id.as_str()),
                        ("observation_id", observation_id),
                    ],
                };
                let audience = patient_audience(conn, patient_id, now)?;
                emit(conn, &audience, &event, now)?;
            }
            (false, Some(id)) => {
                diesel::update(observation_alerts::table.find(id))
                    .set(observation_alerts::closed_at.eq(now))
                    .execute(conn.conn())?;
            }
            _ => {}
        }
    }
    Ok(())
}
