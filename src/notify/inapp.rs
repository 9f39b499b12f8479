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
use crate::db::{DbConnection, Tx};
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
/// lookup and an insert or two per user); each gets its own live event.
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
    let rows: Vec<_> = users
        .iter()
        .zip(&ids)
        .map(|(user, id)| {
            (
                notifications::id.eq(id.as_str()),
                notifications::user_id.eq(user.id.as_str()),
                notifications::kind.eq(kind.as_str()),
                notifications::resource_type.eq(subject.resource_type),
                notifications::resource_id.eq(subject.resource_id),
                notifications::patient_id.eq(subject.patient_id),
                notifications::created_at.eq(now),
            )
        })
        .collect();
    match tx.conn() {
        DbConnection::Postgres(pg) => {
            diesel::insert_into(notifications::table)
                .values(&rows)
                .execute(pg)?;
        }
        DbConnection::Sqlite(lite) => {
            for row in &rows {
                diesel::insert_into(notifications::table)
                    .values(*row)
                    .execute(lite)?;
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
    let emails: Vec<&str> = users
        .iter()
        .filter(|u| u.notification_preference == NotificationPreference::Immediate)
        .map(|u| u.email.as_str())
        .collect();
    if !emails.is_empty() {
        let email = new_item_email(kind, subject, public_url);
        outbox::queue_all(tx, &emails, &email, now)?;
    }
    Ok(emails.len())
}
