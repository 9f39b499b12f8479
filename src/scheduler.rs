//! The in-process scheduler: each tick reminds about overdue handovers,
//! escalates overdue consultations, sends the day's digests and forgets
//! expired idempotency keys, sign-in failures, live events past their retention
//! and lapsed event-stream leases. Safe with several instances on one database:
//! a digest is claimed by inserting its `(user, day)` row in the transaction
//! that queues the email, and on PostgreSQL the users to digest are claimed
//! with `FOR UPDATE SKIP LOCKED`, so instances share the work without waiting.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use tokio::sync::watch;

use crate::auth::AuthUser;
use crate::auth::throttle;
use crate::clock::Clock;
use crate::config::{AuthSettings, SchedulerSettings};
use crate::db::models::User;
use crate::db::schema::{digest_runs, users};
use crate::db::{Backend, Db, DbConnection};
use crate::domain::messaging::digest_day;
use crate::domain::role::NotificationPreference;
use crate::error::ApiError;
use crate::notify::events;
use crate::notify::outbox::{self, OutboxSignal};
use crate::notify::templates::Email;
use crate::state::AppState;
use crate::store::consultation::escalate_overdue;
use crate::store::handover::remind_overdue;
use crate::store::idempotency;
use crate::store::messaging::inbox_counts;
use crate::store::reminder::remind_ending;

/// Users claimed per transaction.
const BATCH: i64 = 50;

/// What one tick did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    /// Digests claimed for the day (sent or, with nothing waiting, skipped).
    pub digests_claimed: usize,
    /// Digest emails queued.
    pub digests_queued: usize,
    /// Idempotency keys forgotten.
    pub keys_purged: usize,
    /// Sign-in failure rows older than every throttling window, deleted.
    pub login_failures_purged: usize,
    /// Overdue handovers whose GP was reminded (and sender told).
    pub handovers_reminded: usize,
    /// Overdue consultations escalated to their centre.
    pub consultations_escalated: usize,
    /// Day-before notifications of a temporary OMT change's or an opioid line's end.
    pub ends_reminded: usize,
    /// Live events older than `events.retention_h`, and expired stream
    /// tickets, deleted.
    pub events_purged: usize,
    /// PostgreSQL: event-stream leases that lapsed (an instance that died
    /// without releasing them), deleted.
    pub leases_purged: usize,
}

/// The scheduler of one instance.
#[derive(Clone)]
pub struct Scheduler {
    db: Db,
    clock: Arc<dyn Clock>,
    settings: SchedulerSettings,
    time_zone: chrono_tz::Tz,
    auth: AuthSettings,
    public_url: String,
    outbox: OutboxSignal,
    metrics: Arc<crate::metrics::Metrics>,
    event_retention: chrono::Duration,
}

impl Scheduler {
    /// A scheduler over the application's database, clock and outbox.
    pub fn new(state: &AppState) -> Self {
        Self {
            db: state.db.clone(),
            clock: state.clock.clone(),
            settings: state.settings.scheduler.clone(),
            time_zone: state.settings.time_zone(),
            auth: state.settings.auth.clone(),
            public_url: state.settings.server.public_url.clone(),
            outbox: state.outbox.clone(),
            metrics: state.metrics.clone(),
            event_retention: chrono::Duration::hours(i64::from(state.settings.events.retention_h)),
        }
    }

    /// Ticks every `scheduler.tick_ms` until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let every = Duration::from_millis(self.settings.tick_ms);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let started = std::time::Instant::now();
            let outcome = match self.tick().await {
                Ok(_) => "ok",
                Err(err) => {
                    tracing::warn!(error = %err, "scheduler: tick failed");
                    "error"
                }
            };
            self.metrics
                .scheduler_duration
                .observe(started.elapsed().as_secs_f64());
            self.metrics
                .scheduler_ticks
                .with_label_values(&[outcome])
                .inc();
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::info!("scheduler stopped");
    }

    /// Does what is due now (tests call it to step the scheduler).
    pub async fn tick(&self) -> Result<TickReport, ApiError> {
        let now = self.clock.now();
        let mut report = TickReport {
            keys_purged: self
                .db
                .write(move |conn| Ok(idempotency::purge(conn, now.naive_utc())?))
                .await?,
            ..TickReport::default()
        };
        let before = (now - self.event_retention).naive_utc();
        report.events_purged = self
            .db
            .write(move |conn| {
                Ok(events::purge(conn, before)? + events::purge_tickets(conn, now.naive_utc())?)
            })
            .await?;
        // Outside the writer's batches, as every lease statement is
        // (`Db::write_apart`); SQLite writes no lease.
        if self.db.backend() == Backend::Postgres {
            report.leases_purged = self
                .db
                .write_apart(move |conn| Ok(events::purge_lapsed_leases(conn, now.naive_utc())?))
                .await?;
        }
        let auth = self.auth.clone();
        report.login_failures_purged = self
            .db
            .write(move |conn| {
                let purged = throttle::purge(conn, &auth, now.naive_utc())?;
                // Expired OIDC flows and one-time codes go with them.
                crate::auth::oidc::purge(conn, now.naive_utc())?;
                Ok(purged)
            })
            .await?;
        // Reminders and escalations: each row is claimed once (SKIP LOCKED on
        // PostgreSQL) and marked in the transaction that queues its emails.
        let (url, naive) = (self.public_url.clone(), now.naive_utc());
        report.handovers_reminded = self
            .db
            .write(move |conn| remind_overdue(conn, &url, naive))
            .await?;
        let url = self.public_url.clone();
        report.consultations_escalated = self
            .db
            .write(move |conn| escalate_overdue(conn, &url, naive))
            .await?;
        if report.handovers_reminded + report.consultations_escalated > 0 {
            tracing::info!(
                handovers = report.handovers_reminded,
                consultations = report.consultations_escalated,
                "scheduler: overdue items escalated"
            );
            self.outbox.wake();
        }
        // The day before a temporary change ends: the plans in batches.
        let today = now.with_timezone(&self.time_zone).date_naive();
        let mut after: Option<String> = None;
        loop {
            let url = self.public_url.clone();
            let from = after.clone();
            let (sent, last) = self
                .db
                .write(move |conn| remind_ending(conn, today, from.as_deref(), &url, naive))
                .await?;
            report.ends_reminded += sent;
            match last {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        if report.ends_reminded > 0 {
            tracing::info!(
                notified = report.ends_reminded,
                "scheduler: ends of temporary changes reminded"
            );
            self.outbox.wake();
        }
        let day = digest_day(now, self.settings.digest_hour, self.time_zone);
        loop {
            let public_url = self.public_url.clone();
            let (claimed, queued) = self
                .db
                .write(move |conn| send_digests(conn, day, now, &public_url))
                .await?;
            report.digests_claimed += claimed;
            report.digests_queued += queued;
            if i64::try_from(claimed).unwrap_or(0) < BATCH {
                break;
            }
        }
        if report.digests_queued > 0 {
            tracing::info!(digests = report.digests_queued, %day, "scheduler: digests queued");
            self.outbox.wake();
        }
        Ok(report)
    }
}

/// Claims up to one batch of users due a digest for `day` and queues their
/// emails, in one transaction; returns (claimed, queued).
fn send_digests(
    conn: &mut DbConnection,
    day: NaiveDate,
    now: DateTime<Utc>,
    public_url: &str,
) -> Result<(usize, usize), ApiError> {
    let naive = now.naive_utc();
    let done_today = digest_runs::table
        .filter(digest_runs::day.eq(day))
        .select(digest_runs::user_id);
    let due = users::table
        .filter(users::active.eq(true))
        .filter(users::notification_preference.eq(NotificationPreference::DailyDigest.as_str()))
        .filter(diesel::dsl::not(users::id.eq_any(done_today)))
        .order(users::id)
        .select(users::id)
        .limit(BATCH);
    let ids: Vec<String> = match conn {
        // Users another instance is digesting are skipped, not waited for.
        DbConnection::Postgres(pg) => due.for_update().skip_locked().load(pg)?,
        DbConnection::Sqlite(lite) => due.load(lite)?,
    };
    let (mut claimed, mut queued) = (0, 0);
    for id in ids {
        let claim = diesel::insert_into(digest_runs::table)
            .values((
                digest_runs::user_id.eq(&id),
                digest_runs::day.eq(day),
                digest_runs::created_at.eq(naive),
            ))
            .on_conflict_do_nothing();
        let inserted = match conn {
            DbConnection::Postgres(pg) => claim.execute(pg)?,
            DbConnection::Sqlite(lite) => claim.execute(lite)?,
        };
        if inserted == 0 {
            continue;
        }
        claimed += 1;
        let Some(user) = User::find(conn, &id)? else {
            continue;
        };
        let role = user.role;
        let caller = AuthUser {
            id: user.id.clone(),
            role,
            organization_id: user.organization_id.clone(),
        };
        let counts = inbox_counts(conn, &caller, now)?;
        // Nothing waiting: the day is done without an email.
        if counts.is_empty() {
            continue;
        }
        let email = Email::Digest {
            counts,
            link: format!("{public_url}/inbox"),
        };
        let email_id = outbox::queue(conn, &user.email, &email, naive)?;
        diesel::update(digest_runs::table.find((&id, day)))
            .set(digest_runs::email_id.eq(email_id))
            .execute(conn)?;
        queued += 1;
    }
    Ok((claimed, queued))
}
