//! Patients as stored: registration (the patient, its referent and its
//! thread in one write), identity corrections, consent decisions.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::models::{Patient, new_id};
use crate::db::schema::{care_team_members, consents, patients};
use crate::db::{DbConnection, is_unique_violation};
use crate::domain::access::{ConsentStatus, TeamRole};
use crate::domain::messaging::SubjectType;
use crate::domain::patient::Sex;
use crate::error::ApiError;
use crate::store::messaging::{create_thread, threads_of};

/// 409 naming `ins` when another patient holds it.
fn duplicate_ins(err: diesel::result::Error) -> ApiError {
    if is_unique_violation(&err) {
        ApiError::conflict(
            "ins",
            "a patient with this INS exists: find the referent with GET /api/v1/patients/lookup?ins= and request access",
        )
    } else {
        err.into()
    }
}

/// Registers `patient` with its creator as referent and makes its thread;
/// returns the thread's id. 409 naming `ins` when the INS is taken.
pub fn register(
    conn: &mut DbConnection,
    patient: &Patient,
    now: NaiveDateTime,
) -> Result<String, ApiError> {
    diesel::insert_into(patients::table)
        .values(patient)
        .execute(conn)
        .map_err(duplicate_ins)?;
    diesel::insert_into(care_team_members::table)
        .values((
            care_team_members::id.eq(new_id()),
            care_team_members::patient_id.eq(&patient.id),
            care_team_members::user_id.eq(&patient.created_by),
            care_team_members::team_role.eq(TeamRole::Referent.as_str()),
            care_team_members::since.eq(now),
            care_team_members::added_by.eq(&patient.created_by),
        ))
        .execute(conn)?;
    Ok(create_thread(
        conn,
        SubjectType::Patient,
        &patient.id,
        Some(&patient.id),
        now,
    )?)
}

/// A correction of a patient's identity; `None` leaves a field as it is
/// (`Some(None)` clears an optional one).
#[derive(Debug, Default)]
pub struct IdentityChanges {
    pub ins: Option<Option<String>>,
    pub family_name: Option<String>,
    pub given_names: Option<String>,
    pub birth_date: Option<chrono::NaiveDate>,
    pub sex: Option<Sex>,
    pub phone: Option<Option<String>>,
}

/// Applies `changes` to the patient and returns it as stored. 409 naming
/// `ins` when the new INS is taken; 404 when there is no such patient.
pub fn correct_identity(
    conn: &mut DbConnection,
    patient_id: &str,
    changes: IdentityChanges,
    now: NaiveDateTime,
) -> Result<Patient, ApiError> {
    let target = patients::table.find(patient_id);
    diesel::update(target)
        .set(patients::updated_at.eq(now))
        .execute(conn)?;
    if let Some(ins) = changes.ins {
        diesel::update(target)
            .set(patients::ins.eq(ins))
            .execute(conn)
            .map_err(duplicate_ins)?;
    }
    if let Some(v) = changes.family_name {
        diesel::update(target)
            .set(patients::family_name.eq(v))
            .execute(conn)?;
    }
    if let Some(v) = changes.given_names {
        diesel::update(target)
            .set(patients::given_names.eq(v))
            .execute(conn)?;
    }
    if let Some(v) = changes.birth_date {
        diesel::update(target)
            .set(patients::birth_date.eq(v))
            .execute(conn)?;
    }
    if let Some(v) = changes.sex {
        diesel::update(target)
            .set(patients::sex.eq(v.as_str()))
            .execute(conn)?;
    }
    if let Some(v) = changes.phone {
        diesel::update(target)
            .set(patients::phone.eq(v))
            .execute(conn)?;
    }
    Patient::find(conn, patient_id)?.ok_or_else(|| ApiError::NotFound("no such patient".into()))
}

/// The thread of a patient (made with it, so always there).
pub fn thread_of(conn: &mut DbConnection, patient_id: &str) -> Result<String, ApiError> {
    threads_of(conn, SubjectType::Patient, &[patient_id.to_owned()])?
        .pop()
        .map(|(_, thread)| thread)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a patient without its thread")))
}

/// Records a consent decision on the patient; returns its id.
pub fn record_consent(
    conn: &mut DbConnection,
    patient_id: &str,
    status: ConsentStatus,
    note: Option<&str>,
    recorded_by: &str,
    now: NaiveDateTime,
) -> QueryResult<String> {
    let id = new_id();
    diesel::insert_into(consents::table)
        .values((
            consents::id.eq(&id),
            consents::patient_id.eq(patient_id),
            consents::status.eq(status.as_str()),
            consents::note.eq(note),
            consents::recorded_by.eq(recorded_by),
            consents::recorded_at.eq(now),
        ))
        .execute(conn)?;
    Ok(id)
}
