//! The email outbox: rows written with the change that causes them, sent by
//! a background task with retries; claimed with `SKIP LOCKED` on PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::{Notify, watch};

use super::templates::{Email, Rendered};
use crate::clock::Clock;
use crate::config::{EmailSettings, EmailTransport, SmtpTls};
use crate::db::models::{OutboxEmail, new_id};
use crate::db::schema::email_outbox;
use crate::db::{Db, DbConnection};
use crate::error::ApiError;

/// Waiting to be sent (or re-sent after a failure).
pub const PENDING: &str = "pending";
/// Accepted by the transport.
pub const SENT: &str = "sent";

/// How long a claimed row stays reserved for the instance sending it.
const LEASE: chrono::Duration = chrono::Duration::minutes(5);
const BATCH: i64 = 20;

/// A new row waiting to be sent to `to`.
fn pending(to: &str, rendered: &Rendered, now: NaiveDateTime) -> OutboxEmail {
    OutboxEmail {
        id: new_id(),
        to_address: to.to_owned(),
        subject: rendered.subject.clone(),
        body: rendered.body.clone(),
        status: PENDING.into(),
        attempts: 0,
        next_attempt_at: now,
        locked_until: None,
        last_error: None,
        created_at: now,
        sent_at: None,
    }
}

/// Queues an email in the caller's transaction; returns the row id.
pub fn queue(
    conn: &mut DbConnection,
    to: &str,
    email: &Email,
    now: NaiveDateTime,
) -> QueryResult<String> {
    let rendered = email.render();
    let row = pending(to, &rendered, now);
    diesel::insert_into(email_outbox::table)
        .values(&row)
        .execute(conn)?;
    Ok(row.id)
}

/// Queues one email to each of `to` in the caller's transaction: one
/// statement on PostgreSQL (one prepared insert per row on SQLite).
/// `inapp::notify_users` queues its emails on PostgreSQL itself, in the
/// statement that stores their notifications.
pub fn queue_all(
    conn: &mut DbConnection,
    to: &[&str],
    email: &Email,
    now: NaiveDateTime,
) -> QueryResult<()> {
    if to.is_empty() {
        return Ok(());
    }
    let rendered = email.render();
    let rows: Vec<OutboxEmail> = to
        .iter()
        .map(|address| pending(address, &rendered, now))
        .collect();
    match conn {
        DbConnection::Postgres(pg) => {
            diesel::insert_into(email_outbox::table)
                .values(&rows)
                .execute(pg)?;
        }
        DbConnection::Sqlite(lite) => {
            for row in &rows {
                diesel::insert_into(email_outbox::table)
                    .values(row)
                    .execute(lite)?;
            }
        }
    }
    Ok(())
}

/// Wakes the sender when something was queued, so mail does not wait for the next poll.
#[derive(Clone, Default)]
pub struct OutboxSignal(Arc<Notify>);

impl OutboxSignal {
    /// Tells the sender to look now.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
    Log,
}

impl Transport {
    fn build(settings: &EmailSettings, data_dir: &std::path::Path) -> anyhow::Result<Self> {
        Ok(match settings.transport {
            EmailTransport::Smtp => {
                let host = settings.smtp_host.as_str();
                let mut builder = match settings.smtp_tls {
                    SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
                    SmtpTls::Starttls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)?
                    }
                    SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)?,
                }
                .port(settings.smtp_port)
                .timeout(Some(Duration::from_secs(30)));
                if let (Some(user), Some(password)) =
                    (&settings.smtp_username, &settings.smtp_password)
                {
                    builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
                }
                Transport::Smtp(builder.build())
            }
            EmailTransport::File => {
                let dir = data_dir.join("outbox");
                std::fs::create_dir_all(&dir)?;
                Transport::File(AsyncFileTransport::new(dir))
            }
            EmailTransport::Log => Transport::Log,
        })
    }

    async fn send(&self, message: Message, row: &OutboxEmail) -> Result<(), String> {
        match self {
            Transport::Smtp(t) => t.send(message).await.map(drop).map_err(|e| e.to_string()),
            Transport::File(t) => t.send(message).await.map(drop).map_err(|e| e.to_string()),
            Transport::Log => {
                tracing::info!(to = %row.to_address, subject = %row.subject, "email (log transport)");
                Ok(())
            }
        }
    }
}

/// The background sender.
pub struct Sender {
    db: Db,
    clock: Arc<dyn Clock>,
    settings: EmailSettings,
    transport: Transport,
    from: Mailbox,
    signal: OutboxSignal,
}

impl Sender {
    /// A sender for the configured transport.
    pub fn new(
        db: Db,
        clock: Arc<dyn Clock>,
        settings: EmailSettings,
        data_dir: &std::path::Path,
        signal: OutboxSignal,
    ) -> anyhow::Result<Self> {
        let transport = Transport::build(&settings, data_dir)?;
        let from = settings.from.parse()?;
        Ok(Self {
            db,
            clock,
            settings,
            transport,
            from,
            signal,
        })
    }

    /// Sends due emails until `shutdown` turns true; finishes the email in hand first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let claimed = match self.claim().await {
                Ok(rows) => rows,
                Err(err) => {
                    tracing::warn!(error = %err, "outbox: claiming failed");
                    Vec::new()
                }
            };
            let full_batch = claimed.len() as i64 == BATCH;
            for row in claimed {
                self.deliver(row).await;
            }
            if full_batch {
                continue;
            }
            tokio::select! {
                _ = self.signal.0.notified() => {}
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::info!("outbox sender stopped");
    }

    async fn claim(&self) -> Result<Vec<OutboxEmail>, ApiError> {
        let now = self.clock.now_naive();
        self.db
            .write(move |conn| claim_due(conn, now, now + LEASE))
            .await
    }

    async fn deliver(&self, row: OutboxEmail) {
        let result = match self.message(&row) {
            Ok(message) => self.transport.send(message, &row).await,
            Err(err) => Err(err),
        };
        let now = self.clock.now_naive();
        let attempts = row.attempts + 1;
        let id = row.id.clone();
        let update = match result {
            Ok(()) => {
                tracing::info!(email_id = %id, attempts, "outbox: sent");
                self.db
                    .write(move |conn| {
                        diesel::update(email_outbox::table.find(&id))
                            .set((
                                email_outbox::status.eq(SENT),
                                email_outbox::attempts.eq(attempts),
                                email_outbox::sent_at.eq(now),
                                email_outbox::locked_until.eq(None::<NaiveDateTime>),
                                email_outbox::last_error.eq(None::<String>),
                            ))
                            .execute(&mut **conn)?;
                        Ok(())
                    })
                    .await
            }
            Err(error) => {
                let wait = backoff_ms(&self.settings, attempts);
                tracing::warn!(email_id = %id, attempts, retry_in_ms = wait, error = %error, "outbox: send failed");
                let next =
                    now + chrono::Duration::milliseconds(i64::try_from(wait).unwrap_or(i64::MAX));
                let error: String = error.chars().take(500).collect();
                self.db
                    .write(move |conn| {
                        diesel::update(email_outbox::table.find(&id))
                            .set((
                                email_outbox::attempts.eq(attempts),
                                email_outbox::next_attempt_at.eq(next),
                                email_outbox::locked_until.eq(None::<NaiveDateTime>),
                                email_outbox::last_error.eq(Some(error)),
                            ))
                            .execute(&mut **conn)?;
                        Ok(())
                    })
                    .await
            }
        };
        if let Err(err) = update {
            // The lease runs out and the row is tried again: at least once, never lost.
            tracing::error!(email_id = %row.id, error = %err, "outbox: recording the result failed");
        }
    }

    fn message(&self, row: &OutboxEmail) -> Result<Message, String> {
        let to: Mailbox = row
            .to_address
            .parse()
            .map_err(|e| format!("recipient: {e}"))?;
        let domain = self.from.email.domain().to_owned();
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(row.subject.clone())
            .message_id(Some(format!("<{}@{}>", row.id, domain)))
            .header(ContentType::TEXT_PLAIN)
            .body(row.body.clone())
            .map_err(|e| e.to_string())
    }
}

/// What waits in the outbox (for `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxStats {
    /// Emails not sent yet.
    pub pending: i64,
    /// Of those, the ones whose sending failed at least once.
    pub failing: i64,
    /// When the oldest of them was queued.
    pub oldest: Option<NaiveDateTime>,
}

/// Counts what waits in the outbox (one pass over the `status` index).
pub fn stats(conn: &mut DbConnection) -> QueryResult<OutboxStats> {
    let pending = email_outbox::table.filter(email_outbox::status.eq(PENDING));
    Ok(OutboxStats {
        pending: pending.count().get_result(conn)?,
        failing: pending
            .filter(email_outbox::attempts.gt(0))
            .count()
            .get_result(conn)?,
        oldest: pending
            .select(diesel::dsl::min(email_outbox::created_at))
            .get_result(conn)?,
    })
}

/// Up to `rows` outbox rows, oldest first, after `after` (an id), of one
/// status (`PENDING`, `SENT`) or any: the administrators' list.
pub fn page(
    conn: &mut DbConnection,
    status: Option<&str>,
    after: Option<&str>,
    rows: i64,
) -> QueryResult<Vec<OutboxEmail>> {
    let mut query = email_outbox::table
        .select(OutboxEmail::as_select())
        .order(email_outbox::id)
        .limit(rows)
        .into_boxed();
    if let Some(status) = status {
        query = query.filter(email_outbox::status.eq(status));
    }
    if let Some(after) = after {
        query = query.filter(email_outbox::id.gt(after));
    }
    query.load(conn)
}

/// Exponential backoff after `attempts` failures, capped.
pub fn backoff_ms(settings: &EmailSettings, attempts: i32) -> u64 {
    let exponent = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    settings
        .retry_base_ms
        .saturating_mul(1u64 << exponent)
        .min(settings.retry_max_ms)
}

/// Reserves up to one batch of due rows for this instance.
fn claim_due(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    lease_until: NaiveDateTime,
) -> Result<Vec<OutboxEmail>, ApiError> {
    let due = email_outbox::table
        .filter(email_outbox::status.eq(PENDING))
        .filter(email_outbox::next_attempt_at.le(now))
        .filter(
            email_outbox::locked_until
                .is_null()
                .or(email_outbox::locked_until.le(now)),
        )
        .order(email_outbox::next_attempt_at)
        .select(email_outbox::id)
        .limit(BATCH);
    let ids: Vec<String> = match conn {
        // Another instance's claimed rows are skipped, not waited for.
        DbConnection::Postgres(pg) => due.for_update().skip_locked().load(pg)?,
        DbConnection::Sqlite(lite) => due.load(lite)?,
    };
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    diesel::update(email_outbox::table.filter(email_outbox::id.eq_any(&ids)))
        .set(email_outbox::locked_until.eq(lease_until))
        .execute(conn)?;
    Ok(email_outbox::table
        .filter(email_outbox::id.eq_any(&ids))
        .order(email_outbox::next_attempt_at)
        .select(OutboxEmail::as_select())
        .load(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut settings = Settings::defaults().unwrap().email;
        settings.retry_base_ms = 100;
        settings.retry_max_ms = 1000;
        let waits: Vec<u64> = (1..=6).map(|a| backoff_ms(&settings, a)).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff_ms(&settings, 10_000), 1000);
    }
}
