//! In-app notifications, each optionally announced by a content-free email.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::events::{Event, EventKind, emit};
use super::outbox;
use super::templates::{Email, ItemKind};
use crate::db::models::{User, new_id};
use crate::db::schema::notifications;
use crate::db::{DbConnection, Fixed, Tx};
use crate::domain::role::NotificationPreference;
use crate::error::ApiError;

text_enum! {
    /// What a notification is about.
    NotificationKind {
        EmergencyAccess => "emergency_access",
        AccessRequest => "access_request",
        AccessRequestApproved => "access_request_approved",
        AccessRequestDenied => "access_request_denied",
        AddedToCareTeam => "added_to_care_team",
        ObservationAlert => "observation_alert",
        HandoverReceived => "handover_received",
        HandoverReconciled => "handover_reconciled",
        HandoverRejected => "handover_rejected",
        HandoverOverdue => "handover_overdue",
        ConsultationReceived => "consultation_received",
        ConsultationAnswered => "consultation_answered",
        ConsultationDeclined => "consultation_declined",
        ConsultationOverdue => "consultation_overdue",
        NewMessage => "new_message",
        InterventionReceived => "intervention_received",
        InterventionDecided => "intervention_decided",
        EarlyRefill => "early_refill",
        TemporaryChangeEnding => "temporary_change_ending",
    }
}

impl NotificationKind {
    fn email_kind(self) -> ItemKind {
        match self {
            Self::EmergencyAccess => ItemKind::EmergencyAccess,
            Self::AccessRequest => ItemKind::AccessRequest,
            Self::AccessRequestApproved | Self::AccessRequestDenied => {
                ItemKind::AccessRequestDecided
            }
            Self::AddedToCareTeam => ItemKind::AddedToCareTeam,
            Self::ObservationAlert => ItemKind::ObservationAlert,
            Self::HandoverReceived => ItemKind::HandoverReceived,
            Self::HandoverReconciled | Self::HandoverRejected => ItemKind::HandoverDecided,
            Self::HandoverOverdue => ItemKind::HandoverOverdue,
            Self::ConsultationReceived => ItemKind::ConsultationReceived,
            Self::ConsultationAnswered | Self::ConsultationDeclined => {
                ItemKind::ConsultationAnswered
            }
            Self::ConsultationOverdue => ItemKind::ConsultationOverdue,
            Self::NewMessage => ItemKind::NewMessage,
            Self::InterventionReceived => ItemKind::InterventionReceived,
            Self::InterventionDecided => ItemKind::InterventionDecided,
            Self::EarlyRefill => ItemKind::EarlyRefill,
            Self::TemporaryChangeEnding => ItemKind::TemporaryChangeEnding,
        }
    }
}

/// What a notification points at.
pub struct Subject<'a> {
    pub resource_type: &'a str,
    pub resource_id: &'a str,
    pub patient_id: Option<&'a str>,
}

/// The content-free email about a new item: its kind and a link that names
/// it by its id only (a thread's leads to the thread).
fn new_item_email(kind: NotificationKind, subject: &Subject<'_>, public_url: &str) -> Email {
    let link = match subject.resource_type {
        "thread" => format!("{public_url}/threads/{}", subject.resource_id),
        _ => format!("{public_url}/notifications"),
    };
    Email::NewItem {
        what: kind.email_kind(),
        link,
    }
}

/// Notifies `user_id` in the caller's transaction (with its live event);
/// queues an email when the user wants them immediately. Returns whether an email was queued.
pub fn notify(
    conn: &mut Tx<'_>,
    user_id: &str,
    kind: NotificationKind,
    subject: &Subject<'_>,
    public_url: &str,
    now: NaiveDateTime,
) -> Result<bool, ApiError> {
    let Some(user) = User::find(conn, user_id)?.filter(|u| u.active) else {
        return Ok(false);
    };
    let id = new_id();
    diesel::insert_into(notifications::table)
        .values((
            notifications::id.eq(&id),
            notifications::user_id.eq(&user.id),
            notifications::kind.eq(kind.as_str()),
            notifications::resource_type.eq(subject.resource_type),
            notifications::resource_id.eq(subject.resource_id),
            notifications::patient_id.eq(subject.patient_id),
            notifications::created_at.eq(now),
        ))
        .execute(conn.conn())?;
    // The decision on one's own access request is seen without a basis
    // (as `GET /notifications` shows it): its event names no patient.
    let own_request = matches!(
        kind,
        NotificationKind::AccessRequestApproved | NotificationKind::AccessRequestDenied
    );
    let event = Event {
        kind: EventKind::NotificationCreated,
        patient_id: subject.patient_id.filter(|_| !own_request),
        refs: &[("notification_id", id.as_str())],
    };
    emit(conn, &[&user.id], &event, now)?;
    if user.notification_preference != NotificationPreference::Immediate {
        return Ok(false);
    }
    outbox::queue(
        conn,
        &user.email,
        &new_item_email(kind, subject, public_url),
        now,
    )?;
    Ok(true)
}

/// [`notify`] for users the caller already loaded and checked active (one
/// statement for their notifications, one for their emails, instead of a
/// lookup and an insert or two per user; on PostgreSQL both in one
/// statement, [`NOTIFY_AND_QUEUE`]); each gets its own live event.
/// Returns how many emails were queued.
pub fn notify_users(
    tx: &mut Tx<'_>,
    users: &[User],
    kind: NotificationKind,
    subject: &Subject<'_>,
    public_url: &str,
    now: NaiveDateTime,
) -> Result<usize, ApiError> {
    if users.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = users.iter().map(|_| new_id()).collect();
    let emails: Vec<&str> = users
        .iter()
        .filter(|u| u.notification_preference == NotificationPreference::Immediate)
        .map(|u| u.email.as_str())
        .collect();
    let email = (!emails.is_empty()).then(|| new_item_email(kind, subject, public_url));
    match tx.conn() {
        DbConnection::Postgres(pg) => {
            use diesel::sql_types::{Array, Nullable, Text, Timestamp};
            let rendered = email.as_ref().map(Email::render);
            let (email_subject, email_body) = rendered
                .as_ref()
                .map_or(("", ""), |r| (r.subject.as_str(), r.body.as_str()));
            let user_ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
            let email_ids: Vec<String> = emails.iter().map(|_| new_id()).collect();
            Fixed::new(NOTIFY_AND_QUEUE)
                .keyed::<NotifyAndQueueKey>()
                .bind_as::<Array<Text>, _>("ids", &ids)
                .bind_as::<Array<Text>, _>("users", &user_ids)
                .bind_as::<Text, _>("kind", kind.as_str())
                .bind_as::<Text, _>("resource_type", subject.resource_type)
                .bind_as::<Text, _>("resource_id", subject.resource_id)
                .bind_as::<Nullable<Text>, _>("patient", subject.patient_id)
                .bind_as::<Timestamp, _>("at", now)
                .bind_as::<Array<Text>, _>("email_ids", &email_ids)
                .bind_as::<Array<Text>, _>("addresses", &emails)
                .bind_as::<Text, _>("subject", email_subject)
                .bind_as::<Text, _>("body", email_body)
                .bind_as::<Text, _>("pending", outbox::PENDING)
                .execute(pg)?;
        }
        DbConnection::Sqlite(lite) => {
            for (user, id) in users.iter().zip(&ids) {
                diesel::insert_into(notifications::table)
                    .values((
                        notifications::id.eq(id.as_str()),
                        notifications::user_id.eq(user.id.as_str()),
                        notifications::kind.eq(kind.as_str()),
                        notifications::resource_type.eq(subject.resource_type),
                        notifications::resource_id.eq(subject.resource_id),
                        notifications::patient_id.eq(subject.patient_id),
                        notifications::created_at.eq(now),
                    ))
                    .execute(lite)?;
            }
            if let Some(email) = &email {
                outbox::queue_all(tx, &emails, email, now)?;
            }
        }
    }
    let own_request = matches!(
        kind,
        NotificationKind::AccessRequestApproved | NotificationKind::AccessRequestDenied
    );
    for (user, id) in users.iter().zip(&ids) {
        let event = Event {
            kind: EventKind::NotificationCreated,
            patient_id: subject.patient_id.filter(|_| !own_request),
            refs: &[("notification_id", id.as_str())],
        };
        emit(tx, &[&user.id], &event, now)?;
    }
    Ok(emails.len())
}

/// [`notify_users`]' one statement on PostgreSQL: the notifications (one
/// per id of `{ids}`, for the user at the same place in `{users}`) and the
/// emails (one per address of `{addresses}`, none when it is empty), of
/// fixed text, prepared once per connection. diesel never keeps a
/// PostgreSQL `INSERT` of its own (module `db::prepared`): the two inserts
/// it replaces were parsed and planned anew for every post, in two round
/// trips, while the batch held the audit chain's head.
const NOTIFY_AND_QUEUE: &str = "WITH notified AS (INSERT INTO notifications \
     (id, user_id, kind, resource_type, resource_id, patient_id, created_at) \
     SELECT n.id, n.user_id, {kind}, {resource_type}, {resource_id}, {patient}, {at} \
     FROM unnest({ids}::text[], {users}::text[]) AS n(id, user_id)) \
     INSERT INTO email_outbox (id, to_address, subject, body, status, attempts, \
     next_attempt_at, created_at) \
     SELECT e.id, e.to_address, {subject}, {body}, {pending}, 0, {at}, {at} \
     FROM unnest({email_ids}::text[], {addresses}::text[]) AS e(id, to_address)";

crate::statement_key!(
    /// The key of [`NOTIFY_AND_QUEUE`].
    NotifyAndQueueKey
);
