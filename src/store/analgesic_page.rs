//! What the pharmacist's page (`GET /patients/{id}/analgesic-plan`) reads:
//! the current plan version, the patient, the people and the pharmacy the
//! plan names for the day, the latest dispensation of each drug. What is
//! in force that day is `domain::in_force`, pure.

use std::collections::HashMap;

use chrono::NaiveDate;

use crate::db::DbConnection;
use crate::db::models::{Organization, Patient};
use crate::domain::in_force::InForce;
use crate::error::ApiError;
use crate::store::care_plan::{PersonRef, PlanVersionRow, current_version_row, people};
use crate::store::dispensation::{DispensationRow, latest_by_drug};

/// Everything the page shows, loaded.
pub struct Sources {
    pub patient: Patient,
    pub row: PlanVersionRow,
    /// The version's author and the prescribers in force, by id.
    pub people: HashMap<String, PersonRef>,
    /// The OMT's dispensing pharmacy, when an OMT is in force.
    pub pharmacy: Option<Organization>,
    /// The latest dispensation of each drug, by drug code.
    pub dispensed: HashMap<String, DispensationRow>,
}

/// Loads the page's sources for `day`; 404 when the patient has no plan.
pub fn load(
    conn: &mut DbConnection,
    patient_id: &str,
    day: NaiveDate,
) -> Result<Sources, ApiError> {
    let row = current_version_row(conn, patient_id)?
        .ok_or_else(|| ApiError::NotFound("this patient has no care plan yet".into()))?;
    let patient = Patient::find(conn, patient_id)?
        .ok_or_else(|| ApiError::NotFound("no such patient".into()))?;
    let content = row.content.get();
    let in_force = InForce::of(content, day);
    let mut named: Vec<&str> = vec![&row.author_id];
    named.extend(in_force.prescribers(content));
    let people = people(conn, &named)?;
    let dispensed = latest_by_drug(conn, patient_id)?;
    let pharmacy = match (&in_force.omt, &content.omt.dispensing_pharmacy_id) {
        (Some(_), Some(id)) => Organization::find(conn, id)?,
        _ => None,
    };
    Ok(Sources {
        patient,
        row,
        people,
        pharmacy,
        dispensed,
    })
}
