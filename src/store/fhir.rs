//! What the FHIR façade reads about a patient, as rows: the queries behind
//! `Patient/{id}/$everything` and the FHIR searches. Callers have resolved
//! the caller's basis first (`api::scope`); nothing here decides access.

use std::collections::{BTreeSet, HashMap};

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::auth::AuthUser;
use crate::db::DbConnection;
use crate::db::models::{Organization, Patient, User};
use crate::db::schema::{
    audit_events, care_team_members, consents, consultations, messages, observations,
    organizations, patients, users,
};
use crate::domain::access::{ConsentStatus, TeamRole};
use crate::domain::messaging::SubjectType;
use crate::domain::role::Role;
use crate::store::care_plan::{PlanVersionRow, current_version_row};
use crate::store::consultation::ConsultationRow;
use crate::store::messaging::{Message, Thread, threads_of};

/// One care-team membership, current or ended.
#[derive(Debug, Clone, Queryable)]
pub struct TeamRow {
    pub user_id: String,
    /// An unknown stored role is a read error, never a default.
    pub team_role: TeamRole,
    pub since: NaiveDateTime,
    pub until: Option<NaiveDateTime>,
}

/// One consent decision (the history is kept).
#[derive(Debug, Clone, Queryable)]
pub struct ConsentRow {
    pub id: String,
    pub status: ConsentStatus,
    pub recorded_by: String,
    pub recorded_at: NaiveDateTime,
}

/// One observation row (several measures may share it): the row the
/// REST routes read.
pub use crate::store::observation::ObservationRow;

/// One row of a patient's audit trail.
#[derive(Debug, Clone, Queryable)]
pub struct AuditRow {
    pub id: String,
    pub at: NaiveDateTime,
    pub actor_id: Option<String>,
    pub actor_role: Option<String>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub outcome: String,
}

/// Everything the façade shows of one patient, with the people and
/// organisations it names.
#[derive(Debug, Clone)]
pub struct PatientRecord {
    pub patient: Patient,
    pub team: Vec<TeamRow>,
    pub consents: Vec<ConsentRow>,
    pub plan: Option<PlanVersionRow>,
    pub observations: Vec<ObservationRow>,
    /// The patient's own thread, oldest first.
    pub messages: Vec<Message>,
    pub users: HashMap<String, User>,
    pub organizations: HashMap<String, Organization>,
}

/// Which parts of [`PatientRecord`] to load (a search needs one).
#[derive(Debug, Clone, Copy, Default)]
pub struct Parts {
    pub team: bool,
    pub consents: bool,
    pub plan: bool,
    pub messages: bool,
    /// The authors of the patient's observations and messages among the
    /// people named, without loading those rows (`$everything` streams
    /// them a page at a time, [`stream_page`]).
    pub authors: bool,
}

impl Parts {
    /// The first page of `$everything`: everything but the observations
    /// and messages, which are paged ([`stream_page`]), with their authors.
    pub const EVERYTHING_HEAD: Parts = Parts {
        team: true,
        consents: true,
        plan: true,
        messages: false,
        authors: true,
    };
}

/// Loads the parts of a patient's record (`None`: no such patient).
pub fn patient_record(
    conn: &mut DbConnection,
    patient_id: &str,
    parts: Parts,
) -> QueryResult<Option<PatientRecord>> {
    let Some(patient) = Patient::find(conn, patient_id)? else {
        return Ok(None);
    };
    let team: Vec<TeamRow> = if parts.team {
        care_team_members::table
            .filter(care_team_members::patient_id.eq(patient_id))
            .order((care_team_members::since, care_team_members::id))
            .select((
                care_team_members::user_id,
                care_team_members::team_role,
                care_team_members::since,
                care_team_members::until,
            ))
            .load(conn)?
    } else {
        Vec::new()
    };
    let consents: Vec<ConsentRow> = if parts.consents {
        consents::table
            .filter(consents::patient_id.eq(patient_id))
            .order((consents::recorded_at, consents::id))
            .select((
                consents::id,
                consents::status,
                consents::recorded_by,
                consents::recorded_at,
            ))
            .load(conn)?
    } else {
        Vec::new()
    };
    let plan = if parts.plan {
        current_version_row(conn, patient_id)?
    } else {
        None
    };
    let messages: Vec<Message> = if parts.messages {
        let thread = threads_of(conn, SubjectType::Patient, &[patient_id.to_owned()])?
            .pop()
            .map(|(_, thread)| thread)
            .unwrap_or_default();
        // The (thread_id, id) index, in one statement.
        crate::per_backend!(conn, |c| messages::table
            .filter(messages::thread_id.eq(&thread))
            .order(messages::id)
            .select(Message::as_select())
            .load(c))?
    } else {
        Vec::new()
    };
    let mut people: BTreeSet<String> = BTreeSet::new();
    people.insert(patient.created_by.clone());
    people.extend(team.iter().map(|m| m.user_id.clone()));
    people.extend(consents.iter().map(|c| c.recorded_by.clone()));
    people.extend(messages.iter().map(|m| m.author_id.clone()));
    if parts.authors {
        // Bounded by the network's users, whatever the number of rows.
        people.extend(
            observations::table
                .filter(observations::patient_id.eq(patient_id))
                .select(observations::author_id)
                .distinct()
                .load::<String>(conn)?,
        );
        if let Some(thread) = thread_of(conn, SubjectType::Patient, patient_id)? {
            people.extend(
                messages::table
                    .filter(messages::thread_id.eq(thread))
                    .select(messages::author_id)
                    .distinct()
                    .load::<String>(conn)?,
            );
        }
    }
    let mut pharmacies = BTreeSet::new();
    if let Some(row) = &plan {
        people.insert(row.author_id.clone());
        let content = &row.content;
        people.extend(content.omt.prescriber_id.clone());
        people.extend(
            content
                .analgesics
                .iter()
                .filter_map(|l| l.prescriber_id.clone()),
        );
        pharmacies.extend(content.omt.dispensing_pharmacy_id.clone());
    }
    let users = users_by_id(conn, &people)?;
    let mut org_ids: BTreeSet<String> = users
        .values()
        .filter_map(|u| u.organization_id.clone())
        .collect();
    org_ids.extend(pharmacies);
    let organizations = organizations_by_id(conn, &org_ids)?;
    Ok(Some(PatientRecord {
        patient,
        team,
        consents,
        plan,
        // Read a page at a time (`observation_page`, `stream_page`).
        observations: Vec::new(),
        messages,
        users,
        organizations,
    }))
}

/// The users named by `ids`, in one statement.
pub fn users_by_id(
    conn: &mut DbConnection,
    ids: &BTreeSet<String>,
) -> QueryResult<HashMap<String, User>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<User> = users::table
        .filter(users::id.eq_any(ids))
        .select(User::as_select())
        .load(conn)?;
    Ok(rows.into_iter().map(|u| (u.id.clone(), u)).collect())
}

/// The organisations named by `ids`, in one statement.
pub fn organizations_by_id(
    conn: &mut DbConnection,
    ids: &BTreeSet<String>,
) -> QueryResult<HashMap<String, Organization>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<Organization> = organizations::table
        .filter(organizations::id.eq_any(ids))
        .select(Organization::as_select())
        .load(conn)?;
    Ok(rows.into_iter().map(|o| (o.id.clone(), o)).collect())
}

/// The id of the patient with this INS, if any. Callers check access.
pub fn patient_by_ins(conn: &mut DbConnection, ins: &str) -> QueryResult<Option<String>> {
    patients::table
        .filter(patients::ins.eq(ins))
        .select(patients::id)
        .first(conn)
        .optional()
}

/// The active user with this RPPS number, if any.
pub fn user_by_rpps(conn: &mut DbConnection, rpps: &str) -> QueryResult<Option<String>> {
    users::table
        .filter(users::rpps.eq(rpps))
        .filter(users::active.eq(true))
        .select(users::id)
        .first(conn)
        .optional()
}

/// The newest `limit` rows of a patient's audit trail, newest first.
pub fn audit_trail(
    conn: &mut DbConnection,
    patient_id: &str,
    limit: i64,
) -> QueryResult<Vec<AuditRow>> {
    audit_events::table
        .filter(audit_events::patient_id.eq(patient_id))
        .order(audit_events::seq.desc())
        .limit(limit)
        .select((
            audit_events::id,
            audit_events::at,
            audit_events::actor_id,
            audit_events::actor_role,
            audit_events::action,
            audit_events::resource_type,
            audit_events::resource_id,
            audit_events::outcome,
        ))
        .load(conn)
}

/// The consultations about `patient_id` that `caller` is a party to (their
/// requester, or a specialist of the addressed centre), oldest first, at
/// most `limit`. Callers have resolved the caller's basis on the patient.
pub fn consultations_about(
    conn: &mut DbConnection,
    patient_id: &str,
    caller: &AuthUser,
    limit: i64,
) -> QueryResult<Vec<ConsultationRow>> {
    let centre = match (caller.role, caller.organization_id.as_deref()) {
        (Role::Specialist, Some(org)) => org.to_owned(),
        // No centre matches a UUID-less id: only the requester's own.
        _ => String::new(),
    };
    consultations::table
        .filter(consultations::patient_id.eq(patient_id))
        .filter(
            consultations::requester_id
                .eq(&caller.id)
                .or(consultations::centre_id.eq(centre)),
        )
        .order(consultations::id)
        .limit(limit)
        .select(ConsultationRow::as_select())
        .load(conn)
}

/// Adds to `record` the people and organisations `rows` name (requester,
/// accepting specialist, centre) that it lacks, in two statements at most.
pub fn add_named(
    conn: &mut DbConnection,
    record: &mut PatientRecord,
    rows: &[ConsultationRow],
) -> QueryResult<()> {
    let people: BTreeSet<String> = rows
        .iter()
        .flat_map(|r| [Some(&r.requester_id), r.accepted_by.as_ref()])
        .flatten()
        .filter(|id| !record.users.contains_key(*id))
        .cloned()
        .collect();
    let added = users_by_id(conn, &people)?;
    let orgs: BTreeSet<String> = rows
        .iter()
        .map(|r| r.centre_id.clone())
        .chain(added.values().filter_map(|u| u.organization_id.clone()))
        .filter(|id| !record.organizations.contains_key(id))
        .collect();
    record.users.extend(added);
    record
        .organizations
        .extend(organizations_by_id(conn, &orgs)?);
    Ok(())
}

/// The thread of a subject, if any.
pub fn thread_of(
    conn: &mut DbConnection,
    subject_type: SubjectType,
    subject_id: &str,
) -> QueryResult<Option<String>> {
    Ok(threads_of(conn, subject_type, &[subject_id.to_owned()])?
        .pop()
        .map(|(_, thread)| thread))
}

/// A page of a thread's messages, oldest first, after the message `after`
/// (exclusive) when given: at most `limit`, off the `(thread_id, id)` index.
pub fn thread_page(
    conn: &mut DbConnection,
    thread_id: &str,
    after: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<Message>> {
    let after = after.unwrap_or_default().to_owned();
    crate::per_backend!(conn, |c| messages::table
        .filter(messages::thread_id.eq(thread_id))
        .filter(messages::id.gt(&after))
        .order(messages::id)
        .limit(limit)
        .select(Message::as_select())
        .load(c))
}

/// Where a page of `$everything`'s streamed part starts: the patient's
/// observations (by id), then the messages of their thread (by id), each
/// after the given id (exclusive) when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stream {
    Observations(Option<String>),
    Messages(Option<String>),
}

/// At most `limit` of a patient's observation records in entry (id)
/// order, after `after` (exclusive) when given.
pub fn observation_page(
    conn: &mut DbConnection,
    patient_id: &str,
    after: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<ObservationRow>> {
    observations::table
        .filter(observations::patient_id.eq(patient_id))
        .filter(observations::id.gt(after.unwrap_or_default()))
        .order(observations::id)
        .limit(limit)
        .select(ObservationRow::as_select())
        .load(conn)
}

/// One page of `$everything`'s streamed part, and where the next starts.
#[derive(Debug, Default)]
pub struct StreamPage {
    pub observations: Vec<ObservationRow>,
    pub messages: Vec<Message>,
    pub next: Option<Stream>,
}

/// At most `limit` rows of a patient's observations then messages from
/// `from`, in two statements at most (three with the thread): each read
/// asks one row more than it may keep, to know whether a next page exists.
pub fn stream_page(
    conn: &mut DbConnection,
    patient_id: &str,
    from: Stream,
    limit: i64,
) -> QueryResult<StreamPage> {
    let mut page = StreamPage::default();
    let mut left = limit;
    let after_message = match from {
        Stream::Observations(after) => {
            let mut rows = observation_page(conn, patient_id, after.as_deref(), left + 1)?;
            if rows.len() as i64 > left {
                rows.truncate(left as usize);
                page.next = Some(Stream::Observations(rows.last().map(|r| r.id.clone())));
                page.observations = rows;
                return Ok(page);
            }
            left -= rows.len() as i64;
            page.observations = rows;
            None
        }
        Stream::Messages(after) => after,
    };
    let Some(thread) = thread_of(conn, SubjectType::Patient, patient_id)? else {
        return Ok(page);
    };
    let mut rows = thread_page(conn, &thread, after_message.as_deref(), left + 1)?;
    if rows.len() as i64 > left {
        rows.truncate(left as usize);
        let last = rows.last().map(|m| m.id.clone()).or(after_message);
        page.next = Some(Stream::Messages(last));
    }
    page.messages = rows;
    Ok(page)
}

/// A message and its thread. Callers check access.
pub fn message_with_thread(
    conn: &mut DbConnection,
    id: &str,
) -> QueryResult<Option<(Message, Thread)>> {
    let Some(message) = messages::table
        .find(id)
        .select(Message::as_select())
        .first(conn)
        .optional()?
    else {
        return Ok(None);
    };
    Ok(Thread::find(conn, &message.thread_id)?.map(|t| (message, t)))
}

/// The patient of a consent decision. Callers check access.
pub fn consent_patient(conn: &mut DbConnection, id: &str) -> QueryResult<Option<String>> {
    consents::table
        .find(id)
        .select(consents::patient_id)
        .first(conn)
        .optional()
}

/// An observation row and its patient. Callers check access.
pub fn observation_row(
    conn: &mut DbConnection,
    id: &str,
) -> QueryResult<Option<(String, ObservationRow)>> {
    Ok(crate::store::observation::find(conn, id)
        .optional()?
        .map(|row| (row.patient_id.clone(), row)))
}

/// One audit row by id and its patient (if any). Callers check access.
pub fn audit_row(
    conn: &mut DbConnection,
    id: &str,
) -> QueryResult<Option<(Option<String>, AuditRow)>> {
    audit_events::table
        .filter(audit_events::id.eq(id))
        .select((
            audit_events::patient_id,
            (
                audit_events::id,
                audit_events::at,
                audit_events::actor_id,
                audit_events::actor_role,
                audit_events::action,
                audit_events::resource_type,
                audit_events::resource_id,
                audit_events::outcome,
            ),
        ))
        .first(conn)
        .optional()
}
