//! Threads and messages in the database: a thread made with its subject,
//! who takes part, read markers, unread counts and the inbox counts.
//! Who may read a thread is decided at each request (no participant table),
//! so a change of access takes effect at once.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text, Timestamp};

use crate::auth::AuthUser;
use crate::db::models::{User, new_id};
use crate::db::schema::{
    care_team_members, consultations, emergency_grants, handovers, messages, notifications,
    patients, thread_reads, threads, users,
};
use crate::db::{DbConnection, Fixed, Stamp, Tx};
use crate::domain::access::{Basis, Relations};
use crate::domain::messaging::{self, InboxCounts, SubjectType};
use crate::domain::role::Role;
use crate::domain::workflow::{ConsultationStatus, HandoverStatus};
use crate::error::ApiError;
use crate::notify::events::{Event, EventKind, emit};
use crate::notify::inapp::{NotificationKind, Subject, notify_users};
use crate::store::access::{basis_of, resolve};

/// The backend of [`DbConnection`], for boxed queries.
pub type Backend = <DbConnection as Connection>::Backend;

diesel::define_sql_function! {
    /// SQL `COALESCE` of a nullable text and a fallback.
    fn coalesce(value: diesel::sql_types::Nullable<diesel::sql_types::Text>, fallback: diesel::sql_types::Text) -> diesel::sql_types::Text;
}

/// A thread as stored.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = threads)]
pub struct Thread {
    pub id: String,
    pub subject_type: SubjectType,
    pub subject_id: String,
    pub patient_id: Option<String>,
    pub created_at: NaiveDateTime,
    pub last_message_id: Option<String>,
    pub last_message_at: Option<NaiveDateTime>,
    pub activity_id: String,
}

impl Thread {
    /// The thread with this id, if any. Callers must check access.
    pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Self>> {
        crate::per_backend!(conn, |c| threads::table
            .find(id)
            .select(Self::as_select())
            .first(c)
            .optional())
    }
}

/// A message as stored (immutable).
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = messages)]
pub struct Message {
    pub id: String,
    pub thread_id: String,
    pub author_id: String,
    pub body: String,
    pub created_at: NaiveDateTime,
}

/// Makes the thread of a new subject, in the subject's transaction; returns its id.
pub fn create_thread(
    conn: &mut DbConnection,
    subject_type: SubjectType,
    subject_id: &str,
    patient_id: Option<&str>,
    now: NaiveDateTime,
) -> QueryResult<String> {
    let id = new_id();
    diesel::insert_into(threads::table)
        .values(Thread {
            id: id.clone(),
            subject_type,
            subject_id: subject_id.to_owned(),
            patient_id: patient_id.map(str::to_owned),
            created_at: now,
            last_message_id: None,
            last_message_at: None,
            activity_id: id.clone(),
        })
        .execute(conn)?;
    Ok(id)
}

/// The thread of each subject among `subject_ids`, as (subject id, thread id).
pub fn threads_of(
    conn: &mut DbConnection,
    subject_type: SubjectType,
    subject_ids: &[String],
) -> QueryResult<Vec<(String, String)>> {
    threads::table
        .filter(threads::subject_type.eq(subject_type.as_str()))
        .filter(threads::subject_id.eq_any(subject_ids))
        .select((threads::subject_id, threads::id))
        .load(conn)
}

/// The thread about one subject (a handover, a consultation), if any.
pub fn thread_of(
    conn: &mut DbConnection,
    subject_type: SubjectType,
    subject_id: &str,
) -> QueryResult<Option<String>> {
    threads::table
        .filter(threads::subject_type.eq(subject_type.as_str()))
        .filter(threads::subject_id.eq(subject_id))
        .select(threads::id)
        .first(conn)
        .optional()
}

/// The patients the user may have a basis on: active team memberships and
/// unexpired emergency grants (the consent rule is applied afterwards with
/// [`resolve`]). Both come off per-user indexes, so the cost follows the
/// user's own caseload, not the size of the network.
pub fn candidate_patients(
    conn: &mut DbConnection,
    user_id: &str,
    now: NaiveDateTime,
) -> QueryResult<Vec<String>> {
    let mut ids: Vec<String> = care_team_members::table
        .filter(care_team_members::user_id.eq(user_id))
        .filter(care_team_members::until.is_null())
        .select(care_team_members::patient_id)
        .load(conn)?;
    ids.extend(
        emergency_grants::table
            .filter(emergency_grants::user_id.eq(user_id))
            .filter(emergency_grants::expires_at.gt(now))
            .select(emergency_grants::patient_id)
            .load::<String>(conn)?,
    );
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// The threads of the user's candidate patients.
pub fn candidate_threads<'a>(
    conn: &mut DbConnection,
    user: &AuthUser,
    now: NaiveDateTime,
) -> QueryResult<threads::BoxedQuery<'a, Backend>> {
    let mut patient_ids = candidate_patients(conn, &user.id, now)?;
    let centre = user
        .organization_id
        .clone()
        .filter(|_| user.role == Role::Specialist);
    let open: Vec<&str> = ConsultationStatus::ALL
        .iter()
        .filter(|s| s.is_open())
        .map(|s| s.as_str())
        .collect();
    if let Some(centre) = &centre {
        // Patients of open consultations at the caller's centre (basis `consultation`).
        patient_ids.extend(
            consultations::table
                .filter(consultations::centre_id.eq(centre))
                .filter(consultations::status.eq_any(open))
                .filter(consultations::patient_id.is_not_null())
                .select(consultations::patient_id.assume_not_null())
                .load::<String>(conn)?,
        );
    }
    let mut mine = consultations::table
        .filter(consultations::requester_id.eq(user.id.clone()))
        .select(consultations::id)
        .into_boxed();
    if let Some(centre) = centre {
        mine = mine.or_filter(consultations::centre_id.eq(centre));
    }
    let consultation_ids: Vec<String> = mine.load(conn)?;
    let handover_ids: Vec<String> = handovers::table
        .filter(
            handovers::from_user_id
                .eq(&user.id)
                .or(handovers::to_user_id.eq(&user.id)),
        )
        .select(handovers::id)
        .load(conn)?;
    Ok(threads::table
        .filter(
            threads::subject_type
                .eq(SubjectType::Patient.as_str())
                .and(threads::patient_id.eq_any(patient_ids))
                .or(threads::subject_type
                    .eq(SubjectType::Consultation.as_str())
                    .and(threads::subject_id.eq_any(consultation_ids)))
                .or(threads::subject_type
                    .eq(SubjectType::Handover.as_str())
                    .and(threads::subject_id.eq_any(handover_ids))),
        )
        .into_boxed())
}

/// Whether `user` takes part in the thread of a consultation (its requester,
/// or a specialist of its centre) or of a handover (its sender or addressee).
/// Patient threads go through the access rule instead.
pub fn party_to_subject(
    conn: &mut DbConnection,
    thread: &Thread,
    user: &AuthUser,
) -> QueryResult<bool> {
    match thread.subject_type {
        SubjectType::Consultation => {
            let row: Option<(String, String)> = consultations::table
                .find(&thread.subject_id)
                .select((consultations::requester_id, consultations::centre_id))
                .first(conn)
                .optional()?;
            Ok(row.is_some_and(|(requester, centre)| {
                requester == user.id
                    || (user.role == Role::Specialist
                        && user.organization_id.as_deref() == Some(centre.as_str()))
            }))
        }
        SubjectType::Handover => {
            let row: Option<(String, String)> = handovers::table
                .find(&thread.subject_id)
                .select((handovers::from_user_id, handovers::to_user_id))
                .first(conn)
                .optional()?;
            Ok(row.is_some_and(|(from, to)| from == user.id || to == user.id))
        }
        SubjectType::Patient => Ok(false),
    }
}

/// Who takes part in a thread now (`relations`: the patient's, for patient threads).
pub fn thread_participants(
    conn: &mut DbConnection,
    thread: &Thread,
    relations: Option<&Relations>,
    now: NaiveDateTime,
) -> QueryResult<Vec<String>> {
    let mut ids = match (thread.subject_type, &thread.patient_id, relations) {
        (SubjectType::Patient, Some(patient), Some(relations)) => {
            let mut ids = patient_participants(conn, patient, relations, now)?;
            // Centres with an open consultation, as far as consent lets them in.
            let centres: Vec<String> = relations
                .consultation_centres
                .iter()
                .filter(|c| relations.sharing_allowed_with(Some(c)))
                .cloned()
                .collect();
            ids.extend(specialists_of(conn, &centres)?);
            ids
        }
        (SubjectType::Consultation, _, _) => {
            let (requester, centre): (String, String) = consultations::table
                .find(&thread.subject_id)
                .select((consultations::requester_id, consultations::centre_id))
                .first(conn)?;
            let mut ids = specialists_of(conn, std::slice::from_ref(&centre))?;
            ids.push(requester);
            ids
        }
        (SubjectType::Handover, _, _) => {
            let (from, to): (String, String) = handovers::table
                .find(&thread.subject_id)
                .select((handovers::from_user_id, handovers::to_user_id))
                .first(conn)?;
            vec![from, to]
        }
        _ => Vec::new(),
    };
    ids.sort_unstable();
    ids.dedup();
    // A consultation's or handover's parties take part while they have a
    // basis on its patient.
    if let (false, Some(patient)) = (
        thread.subject_type == SubjectType::Patient,
        &thread.patient_id,
    ) {
        let mut kept = Vec::with_capacity(ids.len());
        for id in ids {
            if basis_of(conn, patient, &id, now.and_utc())?.is_some() {
                kept.push(id);
            }
        }
        ids = kept;
    }
    Ok(ids)
}

fn specialists_of(conn: &mut DbConnection, centres: &[String]) -> QueryResult<Vec<String>> {
    if centres.is_empty() {
        return Ok(Vec::new());
    }
    users::table
        .filter(users::organization_id.eq_any(centres))
        .filter(users::role.eq(Role::Specialist.as_str()))
        .filter(users::active.eq(true))
        .select(users::id)
        .load(conn)
}

/// Keeps the threads with a message from someone else after the user's marker.
pub fn with_unread<'a>(
    query: threads::BoxedQuery<'a, Backend>,
    user_id: &str,
) -> threads::BoxedQuery<'a, Backend> {
    let marker = || {
        thread_reads::table
            .filter(thread_reads::thread_id.eq(threads::id))
            .filter(thread_reads::user_id.eq(user_id.to_owned()))
            .select(thread_reads::last_read_id.nullable())
            .single_value()
    };
    query
        // Cheap first: nothing after the marker at all.
        .filter(threads::last_message_id.gt(coalesce(marker(), "").nullable()))
        .filter(diesel::dsl::exists(
            messages::table
                .filter(messages::thread_id.eq(threads::id))
                .filter(messages::author_id.ne(user_id.to_owned()))
                .filter(messages::id.gt(coalesce(marker(), ""))),
        ))
}

/// What a thread list (`GET /threads`) is narrowed to.
pub struct ThreadQuery {
    /// Only threads with unread messages.
    pub unread_only: bool,
    /// Only the thread of this patient.
    pub patient_id: Option<String>,
    /// Threads whose activity is before this one.
    pub cursor: Option<String>,
    /// Rows to load (a page's limit plus one, to know whether another follows).
    pub rows: i64,
}

/// The threads `user` may take part in, latest activity first, narrowed by
/// `q`: candidates only, a patient thread's basis is checked by
/// [`visible_threads`].
pub fn thread_candidates(
    conn: &mut DbConnection,
    user: &AuthUser,
    now: DateTime<Utc>,
    q: ThreadQuery,
) -> QueryResult<Vec<Thread>> {
    let mut query = candidate_threads(conn, user, now.naive_utc())?;
    if q.unread_only {
        query = with_unread(query, &user.id);
    }
    if let Some(patient_id) = q.patient_id {
        query = query.filter(threads::patient_id.eq(patient_id));
    }
    if let Some(cursor) = q.cursor {
        query = query.filter(threads::activity_id.lt(cursor));
    }
    query
        .order(threads::activity_id.desc())
        .limit(q.rows)
        .select(Thread::as_select())
        .load(conn)
}

/// A listed thread and what its reader may see of it.
pub struct VisibleThread {
    pub thread: Thread,
    /// The reader's basis on the thread's patient (patient threads, and the
    /// others when the reader has one).
    pub basis: Option<Basis>,
    /// The patient's (family name, given names), only with a basis.
    pub patient_name: Option<(String, String)>,
    pub unread_count: i64,
}

/// Of `candidates` (in order), those `user` may read now, each with the
/// basis, the patient's name when a basis allows it, and the unread count.
/// A patient thread needs a basis; a consultation or handover thread was
/// selected among the user's own, and names the patient only to those who
/// may see them. Being on the team is not enough: the consent rule decides.
pub fn visible_threads(
    conn: &mut DbConnection,
    user: &AuthUser,
    now: DateTime<Utc>,
    candidates: Vec<Thread>,
) -> QueryResult<Vec<VisibleThread>> {
    let patient_ids: Vec<String> = candidates
        .iter()
        .filter_map(|t| t.patient_id.clone())
        .collect();
    let names: HashMap<String, (String, String)> = patients::table
        .filter(patients::id.eq_any(&patient_ids))
        .select((patients::id, patients::family_name, patients::given_names))
        .load::<(String, String, String)>(conn)?
        .into_iter()
        .map(|(id, family, given)| (id, (family, given)))
        .collect();
    let mut visible = Vec::with_capacity(candidates.len());
    for thread in candidates {
        let basis = match &thread.patient_id {
            Some(patient_id) => resolve(conn, user, patient_id, now)?.map(|(b, _)| b),
            None => None,
        };
        if thread.patient_id.is_some() && basis.is_none() {
            continue;
        }
        let unread_count = unread_count(conn, &thread.id, &user.id)?;
        let patient_name = match (&thread.patient_id, basis) {
            // A patient's several threads share the name: cloned, not taken.
            (Some(id), Some(_)) => names.get(id).cloned(),
            _ => None,
        };
        visible.push(VisibleThread {
            thread,
            basis,
            patient_name,
            unread_count,
        });
    }
    Ok(visible)
}

/// A message as listed: (id, thread id, author id, author's full name,
/// author's role, body, created at).
pub type MessageRow = (String, String, String, String, Role, String, Stamp);

/// Up to `rows` messages of the thread after the message id `after` (every
/// id is after ""), oldest first, with their authors. Walks the
/// (thread_id, id) index from `after`: as fast on page 1000 as on page 1;
/// one statement shape, prepared once.
pub fn message_page(
    conn: &mut DbConnection,
    thread_id: &str,
    after: &str,
    rows: i64,
) -> QueryResult<Vec<MessageRow>> {
    crate::per_backend!(conn, |c| messages::table
        .inner_join(users::table)
        .filter(messages::thread_id.eq(thread_id))
        .filter(messages::id.gt(after))
        .order(messages::id)
        .limit(rows)
        .select((
            messages::id,
            messages::thread_id,
            messages::author_id,
            users::full_name,
            users::role,
            messages::body,
            messages::created_at,
        ))
        .load(c))
}

/// The user's read marker in a thread, if they ever read it.
pub fn read_marker(
    conn: &mut DbConnection,
    thread_id: &str,
    user_id: &str,
) -> QueryResult<Option<String>> {
    thread_reads::table
        .find((thread_id, user_id))
        .select(thread_reads::last_read_id)
        .first(conn)
        .optional()
}

/// Messages from others after the user's marker (see `domain::messaging::is_unread`).
pub fn unread_count(conn: &mut DbConnection, thread_id: &str, user_id: &str) -> QueryResult<i64> {
    let marker = read_marker(conn, thread_id, user_id)?;
    let mut query = messages::table
        .filter(messages::thread_id.eq(thread_id))
        .filter(messages::author_id.ne(user_id))
        .select(diesel::dsl::count_star())
        .into_boxed();
    if let Some(marker) = marker {
        query = query.filter(messages::id.gt(marker));
    }
    query.get_result(conn)
}

/// Moves the user's marker to `up_to` unless it is already there or beyond;
/// returns the marker in force afterwards.
pub fn advance_marker(
    conn: &mut DbConnection,
    thread_id: &str,
    user_id: &str,
    up_to: &str,
    now: NaiveDateTime,
) -> QueryResult<String> {
    // Insert-if-absent on the concrete backend (no ON CONFLICT on the multi one):
    // concurrent first reads cannot collide.
    let insert = diesel::insert_into(thread_reads::table)
        .values((
            thread_reads::thread_id.eq(thread_id),
            thread_reads::user_id.eq(user_id),
            thread_reads::last_read_id.eq(up_to),
            thread_reads::updated_at.eq(now),
        ))
        .on_conflict_do_nothing();
    let inserted = match conn {
        DbConnection::Postgres(pg) => insert.execute(pg)?,
        DbConnection::Sqlite(lite) => insert.execute(lite)?,
    };
    if inserted == 0 {
        // Backwards moves are ignored: the condition keeps the later marker.
        diesel::update(
            thread_reads::table
                .filter(thread_reads::thread_id.eq(thread_id))
                .filter(thread_reads::user_id.eq(user_id))
                .filter(thread_reads::last_read_id.lt(up_to)),
        )
        .set((
            thread_reads::last_read_id.eq(up_to),
            thread_reads::updated_at.eq(now),
        ))
        .execute(conn)?;
    }
    thread_reads::table
        .find((thread_id, user_id))
        .select(thread_reads::last_read_id)
        .first(conn)
}

/// Who takes part in a patient's thread now: active team members the
/// consent rule lets in, and holders of an unexpired emergency grant.
/// (Centres with an open consultation join with the consultations issue.)
pub fn patient_participants(
    conn: &mut DbConnection,
    patient_id: &str,
    relations: &Relations,
    now: NaiveDateTime,
) -> QueryResult<Vec<String>> {
    let mut ids: Vec<String> = relations
        .members
        .iter()
        .filter(|m| relations.sharing_allowed_with(m.organization_id.as_deref()))
        .map(|m| m.user_id.clone())
        .collect();
    let emergency: Vec<String> = emergency_grants::table
        .filter(emergency_grants::patient_id.eq(patient_id))
        .filter(emergency_grants::expires_at.gt(now))
        .select(emergency_grants::user_id)
        .load(conn)?;
    ids.extend(emergency);
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Everyone with a basis on the patient now, as far as the relations tell
/// (team members the consent rule lets in, emergency grantees, specialists
/// of centres with an open consultation): who hears of a change to the
/// patient's shared record. Each still passes the access rule when an event
/// is delivered.
pub fn patient_audience(
    conn: &mut DbConnection,
    patient_id: &str,
    now: NaiveDateTime,
) -> QueryResult<Vec<String>> {
    let Some(relations) = crate::store::access::load_relations(conn, patient_id, "", now)? else {
        return Ok(Vec::new());
    };
    patient_audience_among(conn, patient_id, &relations, now)
}

/// [`patient_audience`] with the patient's relations already loaded.
pub fn patient_audience_among(
    conn: &mut DbConnection,
    patient_id: &str,
    relations: &Relations,
    now: NaiveDateTime,
) -> QueryResult<Vec<String>> {
    let mut ids = patient_participants(conn, patient_id, relations, now)?;
    let centres: Vec<String> = relations
        .consultation_centres
        .iter()
        .filter(|c| relations.sharing_allowed_with(Some(c)))
        .cloned()
        .collect();
    ids.extend(specialists_of(conn, &centres)?);
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// What needs `user` now, in counts (see [`InboxCounts`]).
pub fn inbox_counts(
    conn: &mut DbConnection,
    user: &AuthUser,
    now: DateTime<Utc>,
) -> QueryResult<InboxCounts> {
    let threads = candidate_threads(conn, user, now.naive_utc())?;
    let candidates: Vec<(SubjectType, Option<String>)> = with_unread(threads, &user.id)
        .select((threads::subject_type, threads::patient_id))
        .load(conn)?;
    let mut unread_threads = 0;
    for (subject_type, patient_id) in candidates {
        // Patient threads follow the access rule (consent); the others were
        // selected among the caller's own consultations and handovers,
        // and those about a patient need a basis on the patient too.
        let counts = match (subject_type, patient_id) {
            (_, Some(patient_id)) => resolve(conn, user, &patient_id, now)?.is_some(),
            (SubjectType::Patient, None) => false,
            _ => true,
        };
        if counts {
            unread_threads += 1;
        }
    }
    let unread_notifications = notifications::table
        .filter(notifications::user_id.eq(&user.id))
        .filter(notifications::read_at.is_null())
        .count()
        .get_result(conn)?;
    let naive = now.naive_utc();
    let to_acknowledge = handovers::table
        .filter(handovers::to_user_id.eq(&user.id))
        .filter(handovers::status.eq(HandoverStatus::Sent.as_str()));
    let handovers_to_acknowledge = to_acknowledge.count().get_result(conn)?;
    let handovers_overdue: i64 = to_acknowledge
        .filter(handovers::due_at.le(naive))
        .count()
        .get_result(conn)?;
    let waiting: Vec<&str> = ConsultationStatus::ALL
        .iter()
        .filter(|s| s.awaits_answer())
        .map(|s| s.as_str())
        .collect();
    let (consultations_to_answer, consultations_overdue) = match (&user.organization_id, user.role)
    {
        (Some(centre), Role::Specialist) => {
            let to_answer = consultations::table
                .filter(consultations::centre_id.eq(centre))
                .filter(consultations::status.eq_any(waiting));
            (
                to_answer.clone().count().get_result(conn)?,
                to_answer
                    .filter(consultations::due_at.le(naive))
                    .count()
                    .get_result::<i64>(conn)?,
            )
        }
        _ => (0, 0),
    };
    let consultations_to_close = consultations::table
        .filter(consultations::requester_id.eq(&user.id))
        .filter(consultations::status.eq(ConsultationStatus::Answered.as_str()))
        .count()
        .get_result(conn)?;
    // Addressed to the caller, and about a patient they still have a basis on.
    let mut interventions_to_answer = 0;
    for patient_id in crate::store::intervention::open_for(conn, &user.id)? {
        if resolve(conn, user, &patient_id, now)?.is_some() {
            interventions_to_answer += 1;
        }
    }
    Ok(InboxCounts {
        unread_threads,
        unread_notifications,
        handovers_to_acknowledge,
        consultations_to_answer,
        consultations_to_close,
        overdue: handovers_overdue + consultations_overdue,
        interventions_to_answer,
    })
}

/// The active users among `{others}` (a JSON array of ids) with no unread
/// `{kind}` notification on the thread `{thread}`, their accounts (every
/// column of `users`, for `User`'s `QueryableByName`) by id: one statement of
/// fixed text per backend (`$each`: its table function over the array, `j`,
/// joined: `IN (SELECT …)` built a temporary index on SQLite every time),
/// prepared once per connection, where an `IN` list of as many binds as
/// participants was prepared anew for every post.
macro_rules! to_tell_sql {
    ($each:literal) => {
        concat!(
            "SELECT u.id, u.email, u.full_name, u.role, u.organization_id, u.rpps, u.phone, \
             u.active, u.password_hash, u.token_version, u.notification_preference, \
             u.created_at, u.updated_at FROM ",
            $each,
            " users u ON u.id = j.value WHERE u.active AND NOT EXISTS (SELECT 1 FROM notifications n \
             WHERE n.user_id = u.id AND n.resource_type = 'thread' \
             AND n.resource_id = {thread} AND n.read_at IS NULL AND n.kind = {kind}) \
             ORDER BY u.id"
        )
    };
}

crate::statement_key!(
    /// The key of [`to_tell_sql!`]'s statement (one text per backend).
    ToTellKey
);

/// Notifies the participants other than the author, once per unread stretch:
/// someone with an unread `new_message` notification on the thread gets no
/// other. Returns every participant, the author included.
///
/// Who to tell is one query (active participants with no such
/// notification), their notifications and emails one insert each.
fn notify_participants(
    conn: &mut Tx<'_>,
    posted: &Posted<'_>,
    author_id: &str,
    public_url: &str,
    now: NaiveDateTime,
) -> Result<Vec<String>, ApiError> {
    let participants = thread_participants(conn, posted.thread, posted.relations, now)?;
    let others: Vec<&str> = participants
        .iter()
        .map(String::as_str)
        .filter(|u| *u != author_id)
        .collect();
    if others.is_empty() {
        return Ok(participants);
    }
    let thread_id = posted.thread.id.as_str();
    let others = serde_json::to_string(&others)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("participants as JSON: {e}")))?;
    let sql = match conn.conn() {
        DbConnection::Postgres(_) => {
            to_tell_sql!("jsonb_array_elements_text(CAST({others} AS jsonb)) AS j(value) JOIN")
        }
        DbConnection::Sqlite(_) => to_tell_sql!("json_each({others}) AS j CROSS JOIN"),
    };
    // Usually no one (they have not read the last one yet); their accounts
    // come with the answer.
    let to_tell: Vec<User> = crate::per_backend!(conn.conn(), |c| Fixed::new(sql)
        .keyed::<ToTellKey>()
        .bind_as::<Text, _>("others", &others)
        .bind_as::<Text, _>("thread", thread_id)
        .bind_as::<Text, _>("kind", NotificationKind::NewMessage.as_str())
        .load(c))?;
    let subject = Subject {
        resource_type: "thread",
        resource_id: thread_id,
        patient_id: posted.patient_id,
    };
    notify_users(
        conn,
        &to_tell,
        NotificationKind::NewMessage,
        &subject,
        public_url,
        now,
    )?;
    Ok(participants)
}

/// What a post reads as it locks its thread ([`lock_thread`]).
#[derive(QueryableByName)]
pub struct Locked {
    /// The thread's newest message id.
    #[diesel(sql_type = Nullable<Text>)]
    pub last_message_id: Option<String>,
    /// The author's name (`None`: no such account).
    #[diesel(sql_type = Nullable<Text>)]
    pub author_name: Option<String>,
}

macro_rules! lock_thread_sql {
    ($lock:literal) => {
        concat!(
            "SELECT t.last_message_id, u.full_name AS author_name FROM threads t \
             LEFT JOIN users u ON u.id = {author} WHERE t.id = {thread}",
            $lock
        )
    };
}

crate::statement_key!(
    /// The key of [`lock_thread_sql!`]'s statement (one text per backend).
    LockThreadKey
);

/// Locks the thread row until the transaction ends (PostgreSQL; SQLite
/// writers already take turns) and returns its newest message id, with
/// the author's name: one statement for both.
pub fn lock_thread(
    conn: &mut DbConnection,
    thread_id: &str,
    author_id: &str,
) -> QueryResult<Locked> {
    let sql = match conn {
        DbConnection::Postgres(_) => lock_thread_sql!(" FOR UPDATE OF t"),
        DbConnection::Sqlite(_) => lock_thread_sql!(""),
    };
    crate::per_backend!(conn, |c| Fixed::new(sql)
        .keyed::<LockThreadKey>()
        .bind_as::<Text, _>("author", author_id)
        .bind_as::<Text, _>("thread", thread_id)
        .get_result(c))
}

/// The thread a message is posted to, as the caller reached it.
pub struct Posted<'a> {
    pub thread: &'a Thread,
    /// The patient's relations (patient threads only).
    pub relations: Option<&'a Relations>,
    pub patient_id: Option<&'a str>,
}

/// Appends `message` (its id from [`lock_thread`]'s newest, so the thread
/// was locked in this transaction), moves the thread's activity, tells the
/// other participants and emits `message.created`.
pub fn post(
    conn: &mut Tx<'_>,
    posted: Posted<'_>,
    message: &Message,
    public_url: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    // The thread's activity only moves forward. On PostgreSQL the message
    // and the thread's move are one statement (one round trip: the writer
    // runs every write of every instance in turn); SQLite takes no data-
    // modifying `WITH`, and has no round trip to save.
    macro_rules! insert {
        () => {
            "INSERT INTO messages (id, thread_id, author_id, body, created_at) \
             VALUES ({id}, {thread}, {author}, {body}, {at})"
        };
    }
    macro_rules! move_activity {
        () => {
            "UPDATE threads SET last_message_id = {id}, last_message_at = {at}, \
             activity_id = {id} WHERE id = {thread} AND activity_id < {id}"
        };
    }
    let statements: &[&'static str] = match conn.conn() {
        DbConnection::Postgres(_) => &[concat!(
            "WITH inserted AS (",
            insert!(),
            ") ",
            move_activity!()
        )],
        DbConnection::Sqlite(_) => &[insert!(), move_activity!()],
    };
    for &sql in statements {
        crate::per_backend!(conn.conn(), |c| {
            Fixed::new(sql)
                .bind_as::<Text, _>("id", &message.id)
                .bind_as::<Text, _>("thread", &message.thread_id)
                .bind_as::<Text, _>("author", &message.author_id)
                .bind_as::<Text, _>("body", &message.body)
                .bind_as::<Timestamp, _>("at", Stamp(message.created_at))
                .execute(c)
        })?;
    }
    let participants = notify_participants(conn, &posted, &message.author_id, public_url, now)?;
    let event = Event {
        kind: EventKind::MessageCreated,
        patient_id: posted.patient_id,
        refs: &[
            ("thread_id", message.thread_id.as_str()),
            ("message_id", message.id.as_str()),
        ],
    };
    emit(conn, &participants, &event, now)?;
    Ok(())
}

/// Moves `user_id`'s read marker in the thread forward to `up_to` (a move
/// backwards is ignored; 422 naming `up_to` when it is not a message of
/// the thread); once caught up, the thread's notifications are read too.
/// Emits `thread.read`; returns the marker in force and the unread count.
pub fn mark_read(
    conn: &mut Tx<'_>,
    thread_id: &str,
    user_id: &str,
    patient_id: Option<&str>,
    up_to: &str,
    now: NaiveDateTime,
) -> Result<(String, i64), ApiError> {
    let in_thread: i64 = messages::table
        .filter(messages::id.eq(up_to))
        .filter(messages::thread_id.eq(thread_id))
        .count()
        .get_result(conn.conn())?;
    if in_thread == 0 {
        return Err(ApiError::invalid("up_to", "not a message of this thread"));
    }
    let before = read_marker(conn, thread_id, user_id)?;
    let marker = match messaging::advance_marker(before.as_deref(), up_to) {
        Some(_) => advance_marker(conn, thread_id, user_id, up_to, now)?,
        None => before.unwrap_or_else(|| up_to.to_owned()),
    };
    let unread = unread_count(conn, thread_id, user_id)?;
    if unread == 0 {
        // Caught up: the thread's notifications have served their purpose.
        diesel::update(
            notifications::table
                .filter(notifications::user_id.eq(user_id))
                .filter(notifications::resource_type.eq("thread"))
                .filter(notifications::resource_id.eq(thread_id))
                .filter(notifications::read_at.is_null()),
        )
        .set(notifications::read_at.eq(now))
        .execute(conn.conn())?;
    }
    let event = Event {
        kind: EventKind::ThreadRead,
        patient_id,
        refs: &[("thread_id", thread_id), ("last_read_id", marker.as_str())],
    };
    emit(conn, &[user_id], &event, now)?;
    Ok((marker, unread))
}
