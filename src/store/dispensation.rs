//! Dispensations recorded by the pharmacy, for the OMT or a line of the
//! current plan, and the `early_refill` episode: a dispensation of the same
//! drug before 80 % of the previous supply has elapsed opens one (the
//! referent is told once); an on-time one closes it.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;

use crate::db::models::new_id;
use crate::db::schema::{dispensations, observation_alerts};
use crate::db::{DbConnection, Tx};
use crate::domain::dispensing::is_early_refill;
use crate::error::{ApiError, FieldError};
use crate::notify::inapp::{NotificationKind, Subject, notify};
use crate::store::care_plan::current_version_row;
use crate::store::care_team::referent;

/// The alert kind of an early-refill episode (in `observation_alerts`).
pub const EARLY_REFILL: &str = "early_refill";

/// A stored dispensation.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = dispensations)]
pub struct DispensationRow {
    pub id: String,
    pub patient_id: String,
    /// The line of the current plan; `None`: the OMT.
    pub line_index: Option<i32>,
    pub drug: String,
    pub dose_mg: f64,
    pub days_supply: i32,
    pub dispensed_on: NaiveDate,
    pub early_refill: bool,
    pub author_id: String,
    pub created_at: NaiveDateTime,
}

/// What the pharmacist hands out.
pub struct NewDispensation<'a> {
    pub patient_id: &'a str,
    pub line: Option<usize>,
    pub drug: &'a str,
    pub dose_mg: f64,
    pub days_supply: i32,
    pub dispensed_on: NaiveDate,
    pub author_id: &'a str,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Validation(vec![FieldError::new(field, message)])
}

/// Records a dispensation of what the current plan prescribes (422 naming
/// `line` or `drug` otherwise) and runs the early-refill watch.
pub fn record(
    conn: &mut Tx<'_>,
    new: NewDispensation<'_>,
    public_url: &str,
    now: NaiveDateTime,
) -> Result<DispensationRow, ApiError> {
    let plan = current_version_row(conn, new.patient_id)?
        .ok_or_else(|| invalid("line", "this patient has no care plan to dispense from"))?
        .content
        .into_inner();
    let prescribed = match new.line {
        Some(i) => plan
            .analgesics
            .get(i)
            .map(|l| l.drug.clone())
            .ok_or_else(|| {
                invalid(
                    "line",
                    format!(
                        "the current plan has {} line(s), numbered from 0",
                        plan.analgesics.len()
                    ),
                )
            })?,
        None => plan
            .omt
            .medication
            .drug_code()
            .ok_or_else(|| invalid("line", "the current plan has no OMT: name a line"))?
            .to_owned(),
    };
    if prescribed != new.drug {
        return Err(invalid(
            "drug",
            format!("the plan prescribes {prescribed} there"),
        ));
    }
    let previous: Option<(NaiveDate, i32)> = dispensations::table
        .filter(dispensations::patient_id.eq(new.patient_id))
        .filter(dispensations::drug.eq(new.drug))
        .order((dispensations::dispensed_on.desc(), dispensations::id.desc()))
        .select((dispensations::dispensed_on, dispensations::days_supply))
        .first(conn.conn())
        .optional()?;
    let early = previous.is_some_and(|(on, days)| is_early_refill(on, days, new.dispensed_on));
    let row = DispensationRow {
        id: new_id(),
        patient_id: new.patient_id.to_owned(),
        line_index: new.line.and_then(|i| i32::try_from(i).ok()),
        drug: new.drug.to_owned(),
        dose_mg: new.dose_mg,
        days_supply: new.days_supply,
        dispensed_on: new.dispensed_on,
        early_refill: early,
        author_id: new.author_id.to_owned(),
        created_at: now,
    };
    diesel::insert_into(dispensations::table)
        .values(&row)
        .execute(conn.conn())?;
    watch(conn, new.patient_id, early, &row.id, public_url, now)?;
    Ok(row)
}

/// Opens (and tells the referent) or closes the patient's early-refill episode.
fn watch(
    conn: &mut Tx<'_>,
    patient_id: &str,
    early: bool,
    dispensation_id: &str,
    public_url: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let open: Option<String> = observation_alerts::table
        .filter(observation_alerts::patient_id.eq(patient_id))
        .filter(observation_alerts::kind.eq(EARLY_REFILL))
        .filter(observation_alerts::closed_at.is_null())
        .select(observation_alerts::id)
        .first(conn.conn())
        .optional()?;
    match (early, open) {
        (true, None) => {
            diesel::insert_into(observation_alerts::table)
                .values((
                    observation_alerts::id.eq(new_id()),
                    observation_alerts::patient_id.eq(patient_id),
                    observation_alerts::kind.eq(EARLY_REFILL),
                    observation_alerts::opened_at.eq(now),
                ))
                .execute(conn.conn())?;
            if let Some(referent) = referent(conn, patient_id)? {
                let subject = Subject {
                    resource_type: "dispensation",
                    resource_id: dispensation_id,
                    patient_id: Some(patient_id),
                };
                notify(
                    conn,
                    &referent,
                    NotificationKind::EarlyRefill,
                    &subject,
                    public_url,
                    now,
                )?;
            }
        }
        (false, Some(id)) => {
            diesel::update(observation_alerts::table.find(id))
                .set(observation_alerts::closed_at.eq(now))
                .execute(conn.conn())?;
        }
        _ => {}
    }
    Ok(())
}

/// A page of the patient's dispensations, newest first.
pub fn list_for_patient(
    conn: &mut DbConnection,
    patient_id: &str,
    limit: i64,
    cursor: Option<&str>,
) -> QueryResult<Vec<DispensationRow>> {
    let mut query = dispensations::table
        .filter(dispensations::patient_id.eq(patient_id))
        .order(dispensations::id.desc())
        .limit(limit + 1)
        .select(DispensationRow::as_select())
        .into_boxed();
    if let Some(cursor) = cursor {
        query = query.filter(dispensations::id.lt(cursor.to_owned()));
    }
    query.load(conn)
}
