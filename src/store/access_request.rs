//! Access requests (a clinician asks the care team for a basis on a
//! patient; a prescriber on the team approves or denies) and emergency
//! access (break the glass: a time-boxed grant, the team told at once).
//! What the request may become: pending, then approved or denied, once.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::db::models::{User, new_id};
use crate::db::schema::{access_requests, emergency_grants, organizations, users};
use crate::db::{DbConnection, Tx};
use crate::domain::access::{Basis, TeamRole};
use crate::domain::role::Role;
use crate::error::ApiError;
use crate::notify::events::{Event, EventKind, emit};
use crate::notify::inapp::{NotificationKind, Subject, notify};
use crate::store::access::{load_relations, resolve};
use crate::store::care_team::{add_member, referent};
use crate::store::patient;

text_enum! {
    /// Where an access request stands.
    AccessRequestStatus {
        Pending => "pending",
        Approved => "approved",
        Denied => "denied",
    }
}

/// Stores `caller`'s request for access to the patient and tells the
/// referent; returns its id. 404 for no such patient; 409 naming `id` when
/// the caller is on the team already or has a request pending.
pub fn request(
    conn: &mut Tx<'_>,
    caller: &AuthUser,
    patient_id: &str,
    reason: &str,
    public_url: &str,
    now: DateTime<Utc>,
) -> Result<String, ApiError> {
    if !patient::exists(conn, patient_id)? {
        return Err(ApiError::NotFound("no such patient".into()));
    }
    if let Some((Basis::Team, _)) = resolve(conn, caller, patient_id, now)? {
        return Err(ApiError::conflict(
            "id",
            "you are already on this patient's care team",
        ));
    }
    let pending: Option<String> = access_requests::table
        .filter(access_requests::patient_id.eq(patient_id))
        .filter(access_requests::requester_id.eq(&caller.id))
        .filter(access_requests::status.eq(AccessRequestStatus::Pending.as_str()))
        .select(access_requests::id)
        .first(conn.conn())
        .optional()?;
    if pending.is_some() {
        return Err(ApiError::conflict(
            "id",
            "you already have a pending request for this patient",
        ));
    }
    let now = now.naive_utc();
    let id = new_id();
    diesel::insert_into(access_requests::table)
        .values((
            access_requests::id.eq(&id),
            access_requests::patient_id.eq(patient_id),
            access_requests::requester_id.eq(&caller.id),
            access_requests::reason.eq(reason),
            access_requests::status.eq(AccessRequestStatus::Pending.as_str()),
            access_requests::created_at.eq(now),
        ))
        .execute(conn.conn())?;
    if let Some(referent) = referent(conn, patient_id)? {
        let subject = Subject {
            resource_type: "access_request",
            resource_id: &id,
            patient_id: Some(patient_id),
        };
        notify(
            conn,
            &referent,
            NotificationKind::AccessRequest,
            &subject,
            public_url,
            now,
        )?;
    }
    emit_request_event(
        conn,
        EventKind::AccessRequestCreated,
        &id,
        patient_id,
        None,
        now,
    )?;
    Ok(id)
}

/// Approves (the requester joins the team) or denies the pending request
/// `id` on the patient, tells the requester; returns the decider's basis
/// on the patient. 409 naming `id` when already decided, or when the
/// patient's consent does not cover the requester's organisation (the
/// request stays pending).
pub fn decide(
    conn: &mut Tx<'_>,
    caller: &AuthUser,
    id: &str,
    patient_id: &str,
    approve: bool,
    public_url: &str,
    now: DateTime<Utc>,
) -> Result<Option<Basis>, ApiError> {
    let naive = now.naive_utc();
    let (requester_id, status): (String, String) = access_requests::table
        .find(id)
        .select((access_requests::requester_id, access_requests::status))
        .first(conn.conn())?;
    if status != AccessRequestStatus::Pending.as_str() {
        return Err(ApiError::conflict(
            "id",
            format!("this request was already {status}"),
        ));
    }
    let relations = load_relations(conn, patient_id, &caller.id, naive)?
        .ok_or_else(|| ApiError::NotFound("no such patient".into()))?;
    let basis = resolve(conn, caller, patient_id, now)?.map(|(b, _)| b);
    if approve {
        let requester = User::find(conn, &requester_id)?
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("requester vanished")))?;
        // Membership without consent would grant nothing: say so, and
        // leave the request pending until consent is recorded.
        if !relations.sharing_allowed_with(requester.organization_id.as_deref()) {
            return Err(ApiError::conflict(
                "id",
                "the patient's consent to sharing does not cover the requester's \
                 organisation: record the patient's consent first",
            ));
        }
        if !relations.members.iter().any(|m| m.user_id == requester.id) {
            add_member(
                conn,
                patient_id,
                &relations,
                &requester,
                TeamRole::Member,
                &caller.id,
                naive,
            )?;
        }
    }
    let new_status = if approve {
        AccessRequestStatus::Approved
    } else {
        AccessRequestStatus::Denied
    };
    diesel::update(access_requests::table.find(id))
        .set((
            access_requests::status.eq(new_status.as_str()),
            access_requests::decided_by.eq(&caller.id),
            access_requests::decided_at.eq(naive),
        ))
        .execute(conn.conn())?;
    let kind = if approve {
        NotificationKind::AccessRequestApproved
    } else {
        NotificationKind::AccessRequestDenied
    };
    let subject = Subject {
        resource_type: "access_request",
        resource_id: id,
        patient_id: Some(patient_id),
    };
    notify(conn, &requester_id, kind, &subject, public_url, naive)?;
    let event = if approve {
        EventKind::AccessRequestApproved
    } else {
        EventKind::AccessRequestDenied
    };
    emit_request_event(conn, event, id, patient_id, Some(&requester_id), naive)?;
    Ok(basis)
}

/// Grants `user_id` emergency access to the patient until `now + ttl` and
/// tells the rest of the team; returns the grant's id and end. 404 for no
/// such patient.
pub fn grant_emergency(
    conn: &mut Tx<'_>,
    user_id: &str,
    patient_id: &str,
    reason: &str,
    ttl: Duration,
    public_url: &str,
    now: NaiveDateTime,
) -> Result<(String, NaiveDateTime), ApiError> {
    let relations = load_relations(conn, patient_id, user_id, now)?
        .ok_or_else(|| ApiError::NotFound("no such patient".into()))?;
    let id = new_id();
    let expires_at = now + ttl;
    diesel::insert_into(emergency_grants::table)
        .values((
            emergency_grants::id.eq(&id),
            emergency_grants::patient_id.eq(patient_id),
            emergency_grants::user_id.eq(user_id),
            emergency_grants::reason.eq(reason),
            emergency_grants::granted_at.eq(now),
            emergency_grants::expires_at.eq(expires_at),
        ))
        .execute(conn.conn())?;
    let subject = Subject {
        resource_type: "emergency_access",
        resource_id: &id,
        patient_id: Some(patient_id),
    };
    for member in relations.members.iter().filter(|m| m.user_id != user_id) {
        notify(
            conn,
            &member.user_id,
            NotificationKind::EmergencyAccess,
            &subject,
            public_url,
            now,
        )?;
    }
    let event = Event {
        kind: EventKind::EmergencyAccessGranted,
        patient_id: Some(patient_id),
        refs: &[("emergency_access_id", id.as_str())],
    };
    let team: Vec<&str> = relations
        .members
        .iter()
        .map(|m| m.user_id.as_str())
        .collect();
    emit(conn, &team, &event, now)?;
    Ok((id, expires_at))
}

/// An access request as listed, with its requester.
#[derive(Debug, Queryable)]
pub struct ListedRequest {
    pub id: String,
    pub patient_id: String,
    pub reason: String,
    pub status: AccessRequestStatus,
    pub decided_by: Option<String>,
    pub decided_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub requester_id: String,
    pub requester_name: String,
    pub requester_role: Role,
    pub organization_name: Option<String>,
}

/// The access requests on a patient, or the one with this id (or both
/// narrowings), newest first.
pub fn listed(
    conn: &mut DbConnection,
    patient_id: Option<&str>,
    id: Option<&str>,
) -> QueryResult<Vec<ListedRequest>> {
    let mut query = access_requests::table
        .inner_join(users::table.on(users::id.eq(access_requests::requester_id)))
        .left_join(organizations::table.on(organizations::id.nullable().eq(users::organization_id)))
        .select((
            access_requests::id,
            access_requests::patient_id,
            access_requests::reason,
            access_requests::status,
            access_requests::decided_by,
            access_requests::decided_at,
            access_requests::created_at,
            users::id,
            users::full_name,
            users::role,
            organizations::name.nullable(),
        ))
        .order(access_requests::id.desc())
        .into_boxed();
    if let Some(patient_id) = patient_id {
        query = query.filter(access_requests::patient_id.eq(patient_id.to_owned()));
    }
    if let Some(id) = id {
        query = query.filter(access_requests::id.eq(id.to_owned()));
    }
    query.load(conn)
}

/// The patient an access request is about, if there is such a request.
pub fn patient_of(conn: &mut DbConnection, id: &str) -> QueryResult<Option<String>> {
    access_requests::table
        .find(id)
        .select(access_requests::patient_id)
        .first(conn)
        .optional()
}

/// The prescribers on the patient's care team now (who may decide a request).
fn team_prescribers(conn: &mut DbConnection, patient_id: &str) -> QueryResult<Vec<String>> {
    use crate::db::schema::care_team_members as ctm;
    let prescribers: Vec<&str> = Role::ALL
        .iter()
        .filter(|r| r.is_prescriber())
        .map(|r| r.as_str())
        .collect();
    ctm::table
        .inner_join(users::table.on(users::id.eq(ctm::user_id)))
        .filter(ctm::patient_id.eq(patient_id))
        .filter(ctm::until.is_null())
        .filter(users::role.eq_any(prescribers))
        .select(ctm::user_id)
        .load(conn)
}

/// Records a live event about access request `id`: for the team's
/// prescribers about the patient (delivered while they have a basis), and
/// for the requester, when given, without the patient (their own request,
/// which they see without a basis, as its notification).
fn emit_request_event(
    conn: &mut Tx<'_>,
    kind: EventKind,
    id: &str,
    patient_id: &str,
    requester_id: Option<&str>,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let refs = [("access_request_id", id)];
    let team = Event {
        kind,
        patient_id: Some(patient_id),
        refs: &refs,
    };
    let prescribers = team_prescribers(conn, patient_id)?;
    emit(conn, &prescribers, &team, now)?;
    if let Some(requester) = requester_id {
        let own = Event {
            kind,
            patient_id: None,
            refs: &refs,
        };
        emit(conn, &[requester], &own, now)?;
    }
    Ok(())
}
