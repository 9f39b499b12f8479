//! The clinical context store: immutable numbered versions per patient (the
//! newest is current), each value's recorder kept across versions, and what
//! the safety rules may believe of the patient today.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;

use crate::db::DbConnection;
use crate::db::models::{Patient, new_id};
use crate::db::schema::clinical_contexts;
use crate::domain::clinical::{ClinicalContext, Facts, Provenance, provenance};
use crate::domain::versioning::check_base;
use crate::error::ApiError;

/// A stored version.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = clinical_contexts)]
pub struct ContextRow {
    pub id: String,
    pub patient_id: String,
    pub version: i32,
    pub content: String,
    pub provenance: String,
    pub author_id: String,
    pub created_at: NaiveDateTime,
}

impl ContextRow {
    /// The context as recorded.
    pub fn context(&self) -> Result<ClinicalContext, ApiError> {
        serde_json::from_str(&self.content).map_err(ApiError::internal)
    }

    /// Who recorded each known value.
    pub fn provenance(&self) -> Result<Provenance, ApiError> {
        serde_json::from_str(&self.provenance).map_err(ApiError::internal)
    }
}

/// The current (newest) version, if any was recorded.
pub fn current(conn: &mut DbConnection, patient_id: &str) -> QueryResult<Option<ContextRow>> {
    clinical_contexts::table
        .filter(clinical_contexts::patient_id.eq(patient_id))
        .order(clinical_contexts::version.desc())
        .select(ContextRow::as_select())
        .first(conn)
        .optional()
}

/// Stores the next version if the current one is still `expected` (`None`:
/// none yet): 428 when a context exists and no version was named, 412 when
/// it moved on (of racing writers on one version, the unique key lets one win).
pub fn store(
    conn: &mut DbConnection,
    patient_id: &str,
    context: &ClinicalContext,
    expected: Option<i32>,
    author_id: &str,
    now: NaiveDateTime,
) -> Result<ContextRow, ApiError> {
    let previous = current(conn, patient_id)?;
    check_base(
        previous.as_ref().map(|r| r.version),
        expected,
        "clinical context",
    )?;
    let before = match &previous {
        Some(row) => Some((row.context()?, row.provenance()?)),
        None => None,
    };
    let recorded = provenance(
        before.as_ref().map(|(c, p)| (c, p)),
        context,
        author_id,
        now,
    );
    let row = ContextRow {
        id: new_id(),
        patient_id: patient_id.to_owned(),
        version: previous.map_or(1, |r| r.version + 1),
        content: serde_json::to_string(context).map_err(ApiError::internal)?,
        provenance: serde_json::to_string(&recorded).map_err(ApiError::internal)?,
        author_id: author_id.to_owned(),
        created_at: now,
    };
    diesel::insert_into(clinical_contexts::table)
        .values(&row)
        .execute(conn)
        .map_err(|e| {
            if crate::db::is_unique_violation(&e) {
                ApiError::PreconditionFailed(
                    "the clinical context has changed since you read it; reload it".into(),
                )
            } else {
                e.into()
            }
        })?;
    Ok(row)
}

/// What the rules may believe of the patient on `today`: `None` when no
/// context was ever recorded. Age and sex come from the patient's record.
pub fn facts_for(
    conn: &mut DbConnection,
    patient_id: &str,
    today: NaiveDate,
) -> Result<Option<Facts>, ApiError> {
    let Some(row) = current(conn, patient_id)? else {
        return Ok(None);
    };
    let patient = Patient::find(conn, patient_id)?;
    Ok(Some(row.context()?.facts(
        today,
        patient.as_ref().map(|p| p.birth_date),
        patient.map(|p| p.sex),
    )))
}
