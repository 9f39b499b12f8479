//! Live updates: the events a user's stream (`GET /api/v1/events`) carries.
//!
//! **Rows are the truth.** Every event is a row per recipient, written by
//! [`emit`] in the transaction of the change it reports: a rolled-back write
//! leaves none, a committed one loses none. A row holds a type, ids and a
//! time, never a name, a drug or free text ([`emit`] refuses any reference
//! that is not an id or a number): the client fetches the object through the
//! REST API, so the one door stays the only door.
//!
//! **Ids in commit order.** A stream resumes from its `Last-Event-ID` by
//! reading the rows after it, which is lossless only if no row with a lower
//! id can still commit once a higher one is visible. On SQLite one writer
//! holds the database at a time, so ids are taken in commit order anyway.
//! On PostgreSQL a sequence alone gives no such promise (two instances'
//! transactions commit in either order), so the ids are taken while the
//! transaction holds the audit chain's head row, which its audit rows lock
//! anyway before it commits and which it holds until then: the ids of two
//! transactions that emit are taken one transaction after the other. The
//! database writer's batches lock the head as their first statement
//! (`db::chain::lock_head`); [`emit`] only stages the rows on the write's
//! `Tx`, and the batch inserts all of them in one statement after its jobs,
//! head held (`db::Staged::store`); only the writer makes a `Tx`, so there
//! is no other way to store an event. The alternative,
//! polling with a grace window for gaps, loses an event whose transaction
//! outlives the window; this one costs holding a lock every write batch
//! takes a little earlier in the batch.
//!
//! **Wake-ups, not payloads.** The [`Hub`] of each instance reads the rows
//! after the last one it saw when woken: on SQLite by a commit of this
//! instance that stored events ([`Db::commit_signal`]), on PostgreSQL by the
//! `NOTIFY` on [`EVENTS_CHANNEL`] that each committed batch with events
//! sends (one per batch, this instance's own included) heard by [`spawn_listener`],
//! and once a second in any case (a lost connection loses no event, only
//! time). It hands each row to the streams of its recipient through a
//! bounded buffer per stream; a stream whose buffer is full is dropped (its
//! client is told `stream.reset` and resumes from its last id), so the
//! slowest client never slows the others.
//!
//! **One limit for all instances.** The hub counts its own streams per
//! user; on PostgreSQL each stream also holds a lease row
//! ([`acquire_lease`]) so that `events.max_streams_per_user` holds across
//! instances. The lease is taken in a transaction of its own, outside the
//! writer's batches ([`Db::write_apart`]), under a per-user advisory lock;
//! [`Hub::run_leases`] refreshes all of the instance's leases in one
//! statement per heartbeat (not one per stream), deletes the leases of
//! streams that ended, and all of its own at shutdown; a dead instance's
//! leases lapse after three heartbeats (no longer counted), and the
//! scheduler deletes the lapsed ones ([`purge_lapsed_leases`]). On SQLite one instance owns the
//! database: the hub's count is the limit.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::db::schema::{event_horizon, event_stream_leases, event_tickets, events};
use crate::db::{Backend, ConnectionManager, Db, DbConnection, StagedEvent, Tx};
use crate::error::ApiError;

pub use crate::db::writer::EVENTS_CHANNEL;

/// The version of the events' format, sent in every event as `v`.
pub const FORMAT_VERSION: u32 = 1;

/// How many rows the hub (or a resuming stream) reads at a time.
pub const PAGE: i64 = 500;

/// How often the hub reads in any case, woken or not.
const FALLBACK_POLL: Duration = Duration::from_secs(1);

macro_rules! event_kinds {
    ($($variant:ident => $text:literal),+ $(,)?) => {
        /// What an event reports.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
        pub enum EventKind { $(#[serde(rename = $text)] $variant),+ }

        impl EventKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant),+];

            /// The SSE `event:` name (and the stored form).
            pub fn as_str(self) -> &'static str {
                match self { $(EventKind::$variant => $text),+ }
            }

            /// Parses the stored form.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(EventKind::$variant),)+ _ => None }
            }
        }
    };
}

event_kinds! {
    MessageCreated => "message.created",
    ThreadRead => "thread.read",
    NotificationCreated => "notification.created",
    HandoverSent => "handover.sent",
    HandoverAcknowledged => "handover.acknowledged",
    HandoverReconciled => "handover.reconciled",
    HandoverRejected => "handover.rejected",
    ConsultationSubmitted => "consultation.submitted",
    ConsultationAccepted => "consultation.accepted",
    ConsultationAnswered => "consultation.answered",
    ConsultationDeclined => "consultation.declined",
    ConsultationClosed => "consultation.closed",
    ConsultationCancelled => "consultation.cancelled",
    ConsultationOverdue => "consultation.overdue",
    CarePlanVersionCreated => "care_plan.version_created",
    ObservationAlert => "observation.alert",
    AccessRequestCreated => "access_request.created",
    AccessRequestApproved => "access_request.approved",
    AccessRequestDenied => "access_request.denied",
    EmergencyAccessGranted => "emergency_access.granted",
    // Sent by the stream itself, never stored:
    StreamReady => "stream.ready",
    StreamReset => "stream.reset",
    AuthExpired => "auth.expired",
}

/// One change to tell its recipients about.
pub struct Event<'a> {
    pub kind: EventKind,
    /// The patient it is about: delivered only to a recipient with a basis
    /// on that patient at delivery time.
    pub patient_id: Option<&'a str>,
    /// What changed, by id (`("thread_id", …)`, `("version", "3")`): names
    /// chosen in code, values ids (UUIDs) or numbers only.
    pub refs: &'a [(&'static str, &'a str)],
}

/// True for the values a reference may carry: a UUID or a number.
fn is_id(value: &str) -> bool {
    uuid::Uuid::parse_str(value).is_ok()
        || (!value.is_empty() && value.len() <= 19 && value.bytes().all(|b| b.is_ascii_digit()))
}

/// Stages `event` for each of `recipients` (duplicates once) on the
/// caller's write: the writer inserts the rows with its batch's others,
/// just before the commit, and drops them if the write rolls back
/// ([`Tx::stage_events`]). Refuses (500, a bug) a reference that is not an id.
pub fn emit<S: AsRef<str>>(
    tx: &mut Tx<'_>,
    recipients: &[S],
    event: &Event<'_>,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let mut users: Vec<&str> = recipients.iter().map(AsRef::as_ref).collect();
    users.sort_unstable();
    users.dedup();
    if users.is_empty() {
        return Ok(());
    }
    let mut data = serde_json::Map::new();
    for (name, value) in event.refs {
        if !is_id(value) {
            return Err(ApiError::internal(anyhow::anyhow!(
                "event {}: reference {name} is not an id",
                event.kind.as_str()
            )));
        }
        data.insert((*name).to_owned(), serde_json::Value::from(*value));
    }
    if let Some(patient) = event.patient_id
        && !is_id(patient)
    {
        return Err(ApiError::internal(anyhow::anyhow!("event patient id")));
    }
    let data = serde_json::Value::Object(data).to_string();
    tx.stage_events(users.into_iter().map(|user| StagedEvent {
        user_id: user.to_owned(),
        kind: event.kind.as_str(),
        patient_id: event.patient_id.map(str::to_owned),
        data: data.clone(),
        created_at: now,
    }));
    Ok(())
}

/// A stored event.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = events)]
pub struct EventRow {
    pub id: i64,
    pub user_id: String,
    pub kind: String,
    pub patient_id: Option<String>,
    pub data: String,
    pub created_at: NaiveDateTime,
}

impl EventRow {
    /// The JSON the stream sends as the event's `data`.
    pub fn payload(&self) -> serde_json::Value {
        let mut object = match serde_json::from_str(&self.data) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        object.insert("id".into(), self.id.into());
        object.insert("type".into(), self.kind.clone().into());
        object.insert(
            "at".into(),
            self.created_at
                .and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        object.insert("v".into(), FORMAT_VERSION.into());
        if let Some(patient) = &self.patient_id {
            object.insert("patient_id".into(), patient.clone().into());
        }
        serde_json::Value::Object(object)
    }
}

/// Every user's rows after `after`, oldest first (the hub's read).
pub fn rows_after(conn: &mut DbConnection, after: i64, limit: i64) -> QueryResult<Vec<EventRow>> {
    crate::per_backend!(conn, |c| events::table
        .filter(events::id.gt(after))
        .order(events::id)
        .limit(limit)
        .select(EventRow::as_select())
        .load(c))
}

/// One user's rows after `after`, oldest first (a resuming stream's read).
pub fn rows_of_user_after(
    conn: &mut DbConnection,
    user_id: &str,
    after: i64,
    limit: i64,
) -> QueryResult<Vec<EventRow>> {
    crate::per_backend!(conn, |c| events::table
        .filter(events::user_id.eq(user_id))
        .filter(events::id.gt(after))
        .order(events::id)
        .limit(limit)
        .select(EventRow::as_select())
        .load(c))
}

/// Where the stream of events stands: the highest id committed (0: none
/// yet) and the highest id the retention purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub head: i64,
    pub purged_through: i64,
}

/// The current [`Position`].
pub fn position(conn: &mut DbConnection) -> QueryResult<Position> {
    let head: Option<i64> = events::table
        .select(diesel::dsl::max(events::id))
        .first(conn)?;
    let purged_through = event_horizon::table
        .find(1)
        .select(event_horizon::purged_through)
        .first(conn)?;
    Ok(Position {
        head: head.unwrap_or(0).max(purged_through),
        purged_through,
    })
}

/// Removes the events created before `before` (retention); returns how many.
pub fn purge(conn: &mut DbConnection, before: NaiveDateTime) -> QueryResult<usize> {
    let newest: Option<i64> = events::table
        .filter(events::created_at.lt(before))
        .select(diesel::dsl::max(events::id))
        .first(conn)?;
    let Some(newest) = newest else {
        return Ok(0);
    };
    // Through the newest old row: ids are in commit order, so every row
    // below it is at least as old, except rows of a slower transaction
    // stamped a little later, which the next purge takes.
    let removed = diesel::delete(events::table.filter(events::id.le(newest))).execute(conn)?;
    diesel::update(
        event_horizon::table
            .find(1)
            .filter(event_horizon::purged_through.lt(newest)),
    )
    .set(event_horizon::purged_through.eq(newest))
    .execute(conn)?;
    Ok(removed)
}

/// How long a stream ticket may wait to be used.
pub const TICKET_TTL_S: i64 = 30;

/// What a stream ticket stands for: the session and token it was made with.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = event_tickets)]
pub struct Ticket {
    pub user_id: String,
    pub session_id: String,
    pub token_version: i32,
    /// When the access token that asked for the ticket expires: the stream
    /// ends then, as it would with the token itself.
    pub token_expires_at: NaiveDateTime,
}

/// Stores a single-use ticket for `ticket`'s session by the hash of its
/// secret (the secret itself is never stored).
pub fn create_ticket(
    conn: &mut DbConnection,
    hash: &str,
    ticket: &Ticket,
    now: NaiveDateTime,
) -> QueryResult<()> {
    diesel::insert_into(event_tickets::table)
        .values((
            event_tickets::ticket_hash.eq(hash),
            event_tickets::user_id.eq(&ticket.user_id),
            event_tickets::session_id.eq(&ticket.session_id),
            event_tickets::token_version.eq(ticket.token_version),
            event_tickets::token_expires_at.eq(ticket.token_expires_at),
            event_tickets::expires_at.eq(now + chrono::Duration::seconds(TICKET_TTL_S)),
        ))
        .execute(conn)?;
    Ok(())
}

/// Uses up a ticket: what it stands for if it exists and has not expired;
/// either way it is gone afterwards.
pub fn redeem_ticket(
    conn: &mut DbConnection,
    hash: &str,
    now: NaiveDateTime,
) -> QueryResult<Option<Ticket>> {
    let found: Option<(Ticket, NaiveDateTime)> = event_tickets::table
        .find(hash)
        .select((Ticket::as_select(), event_tickets::expires_at))
        .first(conn)
        .optional()?;
    // Whoever deletes the row owns the ticket (two instances may race).
    let deleted = diesel::delete(event_tickets::table.find(hash)).execute(conn)?;
    Ok(found
        .filter(|(_, expires_at)| *expires_at > now && deleted == 1)
        .map(|(ticket, _)| ticket))
}

/// Deletes expired tickets; returns how many.
pub fn purge_tickets(conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<usize> {
    diesel::delete(event_tickets::table.filter(event_tickets::expires_at.le(now))).execute(conn)
}

/// PostgreSQL: takes lease `lease` for one more stream of `user_id` unless
/// `max` of theirs are live on all instances together; says whether it
/// did. Run in a transaction of its own ([`Db::write_apart`]): the per-user
/// lock it takes first is held until that transaction ends, so two
/// instances opening streams of one user count one after the other.
pub fn acquire_lease(
    conn: &mut DbConnection,
    lease: &Lease<'_>,
    now: NaiveDateTime,
    max: usize,
) -> QueryResult<bool> {
    let DbConnection::Postgres(pg) = conn else {
        return Ok(true);
    };
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind::<diesel::sql_types::Text, _>(format!("relais.event_streams:{}", lease.user_id))
        .execute(pg)?;
    diesel::delete(
        event_stream_leases::table
            .filter(event_stream_leases::user_id.eq(lease.user_id))
            .filter(event_stream_leases::expires_at.le(now)),
    )
    .execute(pg)?;
    let live: i64 = event_stream_leases::table
        .filter(event_stream_leases::user_id.eq(lease.user_id))
        .count()
        .get_result(pg)?;
    if live >= i64::try_from(max).unwrap_or(i64::MAX) {
        return Ok(false);
    }
    diesel::insert_into(event_stream_leases::table)
        .values((
            event_stream_leases::id.eq(lease.id),
            event_stream_leases::user_id.eq(lease.user_id),
            event_stream_leases::instance.eq(lease.instance),
            event_stream_leases::expires_at.eq(lease.expires_at),
        ))
        .execute(pg)?;
    Ok(true)
}

/// One stream's lease, as [`acquire_lease`] stores it.
pub struct Lease<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub instance: &'a str,
    pub expires_at: NaiveDateTime,
}

/// Pushes the expiry of every lease of `instance` to `expires_at`; returns
/// how many were kept alive. A dead instance's leases are left to lapse:
/// [`acquire_lease`] ignores (and deletes) a user's lapsed leases, and the
/// scheduler purges the rest ([`purge_lapsed_leases`]).
pub fn refresh_leases(
    conn: &mut DbConnection,
    instance: &str,
    expires_at: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(event_stream_leases::table.filter(event_stream_leases::instance.eq(instance)))
        .set(event_stream_leases::expires_at.eq(expires_at))
        .execute(conn)
}

/// Deletes the leases that lapsed by `now` (those of an instance that
/// died without releasing them), whoever their user; returns how many.
/// The scheduler's purge (PostgreSQL: on SQLite no lease is written).
pub fn purge_lapsed_leases(conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<usize> {
    diesel::delete(event_stream_leases::table.filter(event_stream_leases::expires_at.le(now)))
        .execute(conn)
}

/// Deletes the leases of streams that ended.
pub fn release_leases(conn: &mut DbConnection, ids: &[String]) -> QueryResult<usize> {
    diesel::delete(event_stream_leases::table.filter(event_stream_leases::id.eq_any(ids)))
        .execute(conn)
}

/// Deletes every lease of `instance` (its shutdown).
pub fn release_instance(conn: &mut DbConnection, instance: &str) -> QueryResult<usize> {
    diesel::delete(event_stream_leases::table.filter(event_stream_leases::instance.eq(instance)))
        .execute(conn)
}

/// Why a stream was told to start over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResetReason {
    /// The `Last-Event-ID` is older than the retention (`events.retention_h`):
    /// events may have been removed; refetch what you show.
    Retention,
    /// The `Last-Event-ID` names no position of this server.
    UnknownPosition,
    /// The client read too slowly and was dropped; reconnecting with the
    /// last id received replays what was missed.
    TooFarBehind,
}

/// A stream's place in the hub: its buffer.
struct Slot {
    id: u64,
    inbox: Arc<Mutex<Inbox>>,
}

/// One stream's buffer of rows from the hub: at most `events.buffer`.
/// Written here rather than taken from `tokio::sync::mpsc`, whose bounded
/// channel allocates a block of 32 slots and three cache-padded fields
/// when it is made: ≈ 0.8 KiB for every idle stream, against ≈ 0.1 KiB for
/// this (an empty `VecDeque` allocates nothing; BENCHMARKS.md, "Live event
/// stream: memory").
#[derive(Default)]
struct Inbox {
    rows: VecDeque<Arc<EventRow>>,
    /// The stream's task, to wake when a row comes or the inbox ends.
    waker: Option<Waker>,
    /// No more rows will come (the hub dropped the stream or closed).
    ended: bool,
    /// The hub dropped the stream because its buffer was full.
    lagged: bool,
}

fn lock_inbox(inbox: &Mutex<Inbox>) -> std::sync::MutexGuard<'_, Inbox> {
    inbox.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ends `inbox` (`lagged`: for being too far behind) and wakes its stream.
fn end_inbox(inbox: &Mutex<Inbox>, lagged: bool) {
    let mut guard = lock_inbox(inbox);
    guard.ended = true;
    guard.lagged |= lagged;
    let waker = guard.waker.take();
    drop(guard);
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// The in-process fan-out of one instance (see the module doc).
pub struct Hub {
    db: Db,
    streams: Mutex<HashMap<String, Vec<Slot>>>,
    next_slot: AtomicU64,
    max_per_user: usize,
    buffer: usize,
    closed: AtomicBool,
    wake: Arc<Notify>,
    /// PostgreSQL: the leases that make `max_per_user` hold across instances.
    leases: Option<LeaseBook>,
}

/// This instance's stream leases (PostgreSQL; see [`acquire_lease`]).
struct LeaseBook {
    /// This process's name in `event_stream_leases.instance` (new at each start).
    instance: String,
    /// How often the instance pushes its leases' expiry forward (`events.heartbeat_s`).
    refresh: Duration,
    /// How long a lease lives without a refresh: three refreshes.
    ttl: chrono::Duration,
    /// Leases of streams that ended, to delete (bounded by the streams open:
    /// each stream adds its own once).
    released: Mutex<Vec<String>>,
    wake: Notify,
}

/// A user already holds `events.max_streams_per_user` streams (here, or on
/// PostgreSQL on all instances together).
#[derive(Debug)]
pub struct TooManyStreams;

/// One stream's subscription: the rows for its user, from the moment it was
/// made. Dropping it leaves the hub.
pub struct Subscription {
    hub: Weak<Hub>,
    user_id: String,
    slot: u64,
    inbox: Arc<Mutex<Inbox>>,
    /// PostgreSQL: its lease, released when it is dropped.
    lease: Option<String>,
}

impl Subscription {
    /// The next row for the stream, oldest first; `None` once the hub has
    /// dropped the stream (see [`Subscription::lagged`]) or closed, after
    /// the rows it holds.
    pub fn poll_row(&self, cx: &mut Context<'_>) -> Poll<Option<Arc<EventRow>>> {
        let mut inbox = lock_inbox(&self.inbox);
        if let Some(row) = inbox.rows.pop_front() {
            if inbox.rows.is_empty() && inbox.rows.capacity() > 8 {
                // A burst's room is not kept by an idle stream.
                inbox.rows = VecDeque::new();
            }
            return Poll::Ready(Some(row));
        }
        if inbox.ended {
            return Poll::Ready(None);
        }
        if !inbox
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            inbox.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Whether the hub dropped this stream because its buffer was full.
    pub fn lagged(&self) -> bool {
        lock_inbox(&self.inbox).lagged
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.leave(&self.user_id, self.slot);
            if let (Some(lease), Some(book)) = (self.lease.take(), &hub.leases) {
                book.released
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(lease);
                book.wake.notify_one();
            }
        }
    }
}

impl Hub {
    /// A hub over `db`, woken by its commits; on PostgreSQL its streams
    /// hold leases refreshed every `heartbeat` (see [`Hub::run_leases`]).
    pub fn new(db: Db, max_per_user: usize, buffer: usize, heartbeat: Duration) -> Arc<Self> {
        let wake = db.commit_signal();
        let leases = (db.backend() == Backend::Postgres).then(|| LeaseBook {
            instance: uuid::Uuid::now_v7().to_string(),
            refresh: heartbeat,
            ttl: chrono::Duration::from_std(heartbeat * 3).unwrap_or(chrono::Duration::seconds(45)),
            released: Mutex::new(Vec::new()),
            wake: Notify::new(),
        });
        Arc::new(Self {
            db,
            streams: Mutex::new(HashMap::new()),
            next_slot: AtomicU64::new(1),
            max_per_user,
            buffer,
            closed: AtomicBool::new(false),
            wake,
            leases,
        })
    }

    /// PostgreSQL: takes a lease for `subscription` among all instances'
    /// streams of its user; `TooManyStreams` if they hold the maximum
    /// already. SQLite: nothing to do (one instance owns the database, and
    /// [`Hub::subscribe`] counts its streams).
    pub async fn lease(
        &self,
        subscription: &mut Subscription,
        now: NaiveDateTime,
    ) -> Result<Result<(), TooManyStreams>, ApiError> {
        let Some(book) = &self.leases else {
            return Ok(Ok(()));
        };
        let id = uuid::Uuid::now_v7().to_string();
        let (lease_id, user, instance, max) = (
            id.clone(),
            subscription.user_id.clone(),
            book.instance.clone(),
            self.max_per_user,
        );
        let expires_at = now + book.ttl;
        let taken = self
            .db
            .write_apart(move |conn| {
                let lease = Lease {
                    id: &lease_id,
                    user_id: &user,
                    instance: &instance,
                    expires_at,
                };
                Ok(acquire_lease(conn, &lease, now, max)?)
            })
            .await?;
        if !taken {
            return Ok(Err(TooManyStreams));
        }
        subscription.lease = Some(id);
        Ok(Ok(()))
    }

    /// PostgreSQL: keeps this instance's leases alive (one statement every
    /// `events.heartbeat_s`), deletes those of streams that ended as they
    /// end, and all of this instance's at shutdown. Returns at once on
    /// SQLite.
    pub async fn run_leases(
        self: Arc<Self>,
        clock: Arc<dyn crate::clock::Clock>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let Some(book) = &self.leases else {
            return;
        };
        let mut next = tokio::time::Instant::now() + book.refresh;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    next = tokio::time::Instant::now() + book.refresh;
                    let instance = book.instance.clone();
                    let until = clock.now_naive() + book.ttl;
                    if let Err(err) = self
                        .db
                        .write_apart(move |conn| Ok(refresh_leases(conn, &instance, until)?))
                        .await
                    {
                        tracing::warn!(error = %err, "events: refreshing stream leases failed");
                    }
                }
                _ = book.wake.notified() => {}
                _ = shutdown.changed() => break,
            }
            let ended =
                std::mem::take(&mut *book.released.lock().unwrap_or_else(|e| e.into_inner()));
            if !ended.is_empty()
                && let Err(err) = self
                    .db
                    .write_apart(move |conn| Ok(release_leases(conn, &ended)?))
                    .await
            {
                // They lapse by themselves within `ttl`.
                tracing::warn!(error = %err, "events: releasing stream leases failed");
            }
        }
        let instance = book.instance.clone();
        if let Err(err) = self
            .db
            .write_apart(move |conn| Ok(release_instance(conn, &instance)?))
            .await
        {
            tracing::warn!(error = %err, "events: releasing this instance's leases failed");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Slot>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the hub to read now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// How many streams are open on this instance.
    pub fn open_streams(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Joins the hub for `user_id`'s rows.
    pub fn subscribe(self: &Arc<Self>, user_id: &str) -> Result<Subscription, TooManyStreams> {
        let mut streams = self.lock();
        let slots = streams.entry(user_id.to_owned()).or_default();
        if slots.len() >= self.max_per_user || self.closed.load(Ordering::SeqCst) {
            return Err(TooManyStreams);
        }
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let id = self.next_slot.fetch_add(1, Ordering::Relaxed);
        slots.push(Slot {
            id,
            inbox: inbox.clone(),
        });
        Ok(Subscription {
            hub: Arc::downgrade(self),
            user_id: user_id.to_owned(),
            slot: id,
            inbox,
            lease: None,
        })
    }

    fn leave(&self, user_id: &str, slot: u64) {
        let mut streams = self.lock();
        if let Some(slots) = streams.get_mut(user_id) {
            slots.retain(|s| s.id != slot);
            if slots.is_empty() {
                streams.remove(user_id);
            }
        }
    }

    /// Ends every stream (shutdown): each closes as its buffer empties.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for (_, slots) in self.lock().drain() {
            for slot in slots {
                end_inbox(&slot.inbox, false);
            }
        }
    }

    /// Hands rows to their recipients' streams; a full buffer drops its stream.
    fn deliver(&self, rows: Vec<EventRow>) {
        let mut streams = self.lock();
        for row in rows {
            let Some(slots) = streams.get_mut(&row.user_id) else {
                continue;
            };
            let row = Arc::new(row);
            slots.retain(|slot| {
                let mut inbox = lock_inbox(&slot.inbox);
                if inbox.rows.len() >= self.buffer {
                    drop(inbox);
                    end_inbox(&slot.inbox, true);
                    return false;
                }
                inbox.rows.push_back(row.clone());
                let waker = inbox.waker.take();
                drop(inbox);
                if let Some(waker) = waker {
                    waker.wake();
                }
                true
            });
            if slots.is_empty() {
                streams.remove(&row.user_id);
            }
        }
    }

    /// Reads and delivers new rows until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut last = loop {
            match self.db.read(|conn| Ok(position(conn)?)).await {
                Ok(p) => break p.head,
                Err(err) => {
                    tracing::warn!(error = %err, "events: cannot read the position");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        };
        loop {
            if *shutdown.borrow() {
                break;
            }
            loop {
                let rows = match self
                    .db
                    .read(move |conn| Ok(rows_after(conn, last, PAGE)?))
                    .await
                {
                    Ok(rows) => rows,
                    Err(err) => {
                        tracing::warn!(error = %err, "events: reading new events failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        break;
                    }
                };
                let full = rows.len() as i64 == PAGE;
                if let Some(row) = rows.last() {
                    last = row.id;
                }
                self.deliver(rows);
                if !full {
                    break;
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(FALLBACK_POLL) => {}
                _ = shutdown.changed() => {}
            }
        }
        self.close();
    }
}

/// How often the listener looks for notifications.
const LISTEN_POLL: Duration = Duration::from_millis(5);
/// How often an idle listener checks that its connection still answers.
const LISTEN_HEARTBEAT: Duration = Duration::from_secs(1);

/// PostgreSQL: listens on [`EVENTS_CHANNEL`] on a connection of its own
/// (a thread, as `auth::revocations` does) and wakes the hub for each
/// notification, and once after each (re)connection, for what was
/// committed while it was not listening. Set `stop` and join to end it.
pub fn spawn_listener(
    manager: ConnectionManager,
    hub: &Arc<Hub>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let hub = Arc::downgrade(hub);
    std::thread::Builder::new()
        .name("relais-events".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) && hub.strong_count() > 0 {
                listen(&manager, &hub, &stop);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
}

fn listen(manager: &ConnectionManager, hub: &Weak<Hub>, stop: &AtomicBool) {
    let Ok(DbConnection::Postgres(mut pg)) = manager.establish() else {
        return;
    };
    if pg
        .batch_execute(&format!("LISTEN {EVENTS_CHANNEL}"))
        .is_err()
    {
        return;
    }
    match hub.upgrade() {
        Some(hub) => hub.wake(),
        None => return,
    }
    let mut alive_at = std::time::Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let mut heard = false;
        for notification in pg.notifications_iter() {
            match notification {
                Ok(_) => heard = true,
                Err(_) => return,
            }
        }
        if alive_at.elapsed() >= LISTEN_HEARTBEAT {
            if pg.batch_execute("SELECT 1").is_err() {
                tracing::warn!("events listener lost its connection; reconnecting");
                return;
            }
            alive_at = std::time::Instant::now();
        }
        let Some(hub) = hub.upgrade() else {
            return;
        };
        if heard {
            hub.wake();
        }
        drop(hub);
        std::thread::sleep(LISTEN_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_must_be_ids() {
        assert!(is_id("0190b7a2-7c1e-7f00-8000-000000000000"));
        assert!(is_id("12"));
        assert!(!is_id(""));
        assert!(!is_id("Dupont"));
        assert!(!is_id("12 mg"));
        assert!(!is_id("12345678901234567890"));
    }

    #[test]
    fn kinds_round_trip_and_serialise_as_their_name() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(*kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::from(kind.as_str())
            );
        }
    }
}
