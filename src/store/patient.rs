//! Patients as stored: registration (the patient, its referent and its
//! thread in one write), identity corrections, consent decisions.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use crate::auth::AuthUser;
use crate::db::models::{Patient, new_id};
use crate::db::schema::{
    care_team_members, consents, emergency_grants, organizations, patients, users,
};
use crate::db::{DbConnection, is_unique_violation};
use crate::domain::access::{Basis, ConsentStatus, TeamRole};
use crate::domain::ins::Ins;
use crate::domain::messaging::SubjectType;
use crate::domain::patient::Sex;
use crate::error::ApiError;
use crate::store::access::resolve;
use crate::store::care_team::referent;
use crate::store::messaging::{create_thread, threads_of};
use crate::store::{contains_pattern, lower};

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

/// What a patient list (`GET /patients`) is narrowed to.
pub struct PatientSearch {
    /// Part of a name, or a whole INS (trimmed; empty is no filter).
    pub q: Option<String>,
    /// Patients whose id is after this one.
    pub cursor: Option<String>,
    /// Rows to load (a page's limit plus one, to know whether another follows).
    pub rows: i64,
}

/// The patients `user_id` may have a basis on (active team memberships and
/// unexpired emergency grants), by id, narrowed by `search`: candidates only,
/// [`visible_patients`] applies the access rule.
pub fn candidates(
    conn: &mut DbConnection,
    user_id: &str,
    now: NaiveDateTime,
    search: PatientSearch,
) -> QueryResult<Vec<Patient>> {
    let on_team = care_team_members::table
        .filter(care_team_members::user_id.eq(user_id.to_owned()))
        .filter(care_team_members::until.is_null())
        .select(care_team_members::patient_id);
    let in_emergency = emergency_grants::table
        .filter(emergency_grants::user_id.eq(user_id.to_owned()))
        .filter(emergency_grants::expires_at.gt(now))
        .select(emergency_grants::patient_id);
    let mut query = patients::table
        .filter(
            patients::id
                .eq_any(on_team)
                .or(patients::id.eq_any(in_emergency)),
        )
        .select(Patient::as_select())
        .order(patients::id)
        .limit(search.rows)
        .into_boxed();
    if let Some(q) = search.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        if let Ok(ins) = Ins::parse(q) {
            query = query.filter(patients::ins.eq(ins.as_str().to_owned()));
        } else {
            let pattern = contains_pattern(q);
            query = query.filter(
                lower(patients::family_name)
                    .like(pattern.clone())
                    .escape('\\')
                    .or(lower(patients::given_names).like(pattern).escape('\\')),
            );
        }
    }
    if let Some(cursor) = search.cursor {
        query = query.filter(patients::id.gt(cursor));
    }
    query.load(conn)
}

/// A listed patient and what its reader's access rests on.
pub struct VisiblePatient {
    pub patient: Patient,
    pub consent: Option<ConsentStatus>,
    pub basis: Basis,
    pub thread_id: String,
}

/// Of `candidates` (in order), those `caller` has a basis on now, with the
/// basis, the consent in force and the patient's thread. Membership alone
/// is not enough: the consent rule decides.
pub fn visible_patients(
    conn: &mut DbConnection,
    caller: &AuthUser,
    now: DateTime<Utc>,
    candidates: Vec<Patient>,
) -> Result<Vec<VisiblePatient>, ApiError> {
    let ids: Vec<String> = candidates.iter().map(|p| p.id.clone()).collect();
    let mut thread_ids: HashMap<String, String> = threads_of(conn, SubjectType::Patient, &ids)?
        .into_iter()
        .collect();
    let mut visible = Vec::with_capacity(candidates.len());
    for patient in candidates {
        if let Some((basis, relations)) = resolve(conn, caller, &patient.id, now)? {
            let thread_id = thread_ids.remove(&patient.id).ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!("a patient without its thread"))
            })?;
            visible.push(VisiblePatient {
                patient,
                consent: relations.consent,
                basis,
                thread_id,
            });
        }
    }
    Ok(visible)
}

/// The id of the patient holding `ins`, if any.
pub fn find_by_ins(conn: &mut DbConnection, ins: &Ins) -> QueryResult<Option<String>> {
    patients::table
        .filter(patients::ins.eq(ins.as_str()))
        .select(patients::id)
        .first(conn)
        .optional()
}

/// Whom to ask for access to a patient.
pub struct Referent {
    pub full_name: String,
    pub organization: Option<String>,
    /// Theirs, else their organisation's.
    pub phone: Option<String>,
}

/// Whether a patient with this id exists.
pub fn exists(conn: &mut DbConnection, patient_id: &str) -> QueryResult<bool> {
    Ok(patients::table
        .find(patient_id)
        .select(patients::id)
        .first::<String>(conn)
        .optional()?
        .is_some())
}

/// The patient's active referent, if any.
pub fn referent_contact(
    conn: &mut DbConnection,
    patient_id: &str,
) -> QueryResult<Option<Referent>> {
    let Some(user_id) = referent(conn, patient_id)? else {
        return Ok(None);
    };
    Ok(users::table
        .left_join(organizations::table)
        .filter(users::id.eq(user_id))
        .select((
            users::full_name,
            organizations::name.nullable(),
            users::phone,
            organizations::phone.nullable(),
        ))
        .first::<(String, Option<String>, Option<String>, Option<String>)>(conn)
        .optional()?
        .map(|(full_name, organization, phone, org_phone)| Referent {
            full_name,
            organization,
            phone: phone.or(org_phone),
        }))
}

/// A recorded consent decision: status, note, recorded by (user id), at.
pub type ConsentRow = (ConsentStatus, Option<String>, String, NaiveDateTime);

/// The consent decisions on a patient, latest first (a stored status this
/// build does not know is left out, as before).
pub fn consent_history(conn: &mut DbConnection, patient_id: &str) -> QueryResult<Vec<ConsentRow>> {
    let rows: Vec<(String, Option<String>, String, NaiveDateTime)> = consents::table
        .filter(consents::patient_id.eq(patient_id))
        .order((consents::recorded_at.desc(), consents::id.desc()))
        .select((
            consents::status,
            consents::note,
            consents::recorded_by,
            consents::recorded_at,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(status, note, by, at)| Some((ConsentStatus::parse(&status)?, note, by, at)))
        .collect())
}
