//! One database layer over SQLite (embedded) and PostgreSQL, chosen by URL.

pub mod chain;
pub mod json;
pub mod lock;
pub mod models;
pub mod prepared;
pub mod schema;
pub mod stamp;
pub mod writer;

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{self, ManageConnection, Pool, PooledConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::error::ApiError;
use chain::{AuditRecord, CommittedHead};
pub use prepared::{ByText, CacheKey, Fixed};
pub use stamp::Stamp;

/// Migrations for SQLite; the PostgreSQL folder has the same names.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
/// Migrations for PostgreSQL.
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Runs `$body` with `$c` bound to the concrete connection of either
/// backend. Hot queries use it: through [`DbConnection`] (diesel's
/// `MultiConnection`) every execution also rebuilds and re-checks the
/// query's SQL, which costs more than running a prepared statement.
#[macro_export]
macro_rules! per_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::DbConnection::Postgres($c) => $body,
            $crate::db::DbConnection::Sqlite($c) => $body,
        }
    };
}

/// A connection to either backend.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgres(PgConnection),
    Sqlite(SqliteConnection),
}

/// What the writes of a batch staged on their [`Tx`], for the writer to
/// store together just before the commit: audit records (each with its
/// time) and live-event rows. A write that fails takes its own back
/// ([`Staged::mark`], [`Staged::rollback_to`]).
#[derive(Default)]
pub struct Staged {
    audit: Vec<(AuditRecord, chrono::NaiveDateTime)>,
    events: Vec<StagedEvent>,
    /// A write's savepoint could not be rolled back or released: what the
    /// batch's transaction holds is not known, so it must not commit.
    broken: bool,
    /// PostgreSQL: the last write's savepoint is still open, its work kept
    /// (or rolled back to): the next write releases it in the same round
    /// trip as it opens its own, and the commit releases the last one
    /// (`writer::in_savepoint`).
    savepoint_open: bool,
}

/// Where a write's staging began: what [`Staged::rollback_to`] cuts back to.
#[derive(Debug, Clone, Copy)]
pub struct StagedMark {
    audit: usize,
    events: usize,
}

impl Staged {
    /// The current end, before a write runs.
    pub fn mark(&self) -> StagedMark {
        StagedMark {
            audit: self.audit.len(),
            events: self.events.len(),
        }
    }

    /// Drops what was staged since `mark` (the write rolled back).
    pub fn rollback_to(&mut self, mark: StagedMark) {
        self.audit.truncate(mark.audit);
        self.events.truncate(mark.events);
    }

    /// Marks the batch as not to be committed (see [`Staged`]'s `broken`).
    pub fn break_batch(&mut self) {
        self.broken = true;
    }

    /// Whether the batch must be rolled back whole.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Whether a write staged events.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Stores everything staged in `conn`'s transaction, which holds the
    /// audit chain's head (`head`, read with [`chain::lock_head`] as the
    /// transaction's first statement on PostgreSQL) or, on SQLite, the
    /// write lock: the events in one statement, with one `NOTIFY` if there
    /// were any (PostgreSQL; one prepared insert per row on SQLite), so
    /// their ids are taken while the head is held, in commit order
    /// (`notify::events`); then the audit rows, chained. Returns the new head.
    pub fn store(
        &self,
        conn: &mut DbConnection,
        head: Option<chain::ChainHead>,
    ) -> Result<Option<chain::ChainHead>, ApiError> {
        insert_events(conn, &self.events)?;
        match head {
            Some(head) => chain::append(conn, head, &self.audit),
            None => chain::write_chain(conn, &self.audit),
        }
    }
}

/// One live-event row, staged by `notify::events::emit` (which checked it
/// holds ids only) and inserted by the writer with the batch's others.
#[derive(Debug, Clone)]
pub struct StagedEvent {
    pub user_id: String,
    pub kind: &'static str,
    pub patient_id: Option<String>,
    /// The event's references, as a JSON object.
    pub data: String,
    pub created_at: chrono::NaiveDateTime,
}

/// Inserts `rows` into `events`: on PostgreSQL in one statement, which
/// also sends the batch's one `NOTIFY` on [`writer::EVENTS_CHANNEL`]
/// (delivered at its commit to every instance listening,
/// `notify::events::spawn_listener`); on SQLite one prepared insert per row
/// (no round trip to save; a statement for n rows would be prepared anew
/// for every n).
fn insert_events(conn: &mut DbConnection, rows: &[StagedEvent]) -> QueryResult<()> {
    use schema::events;
    match conn {
        // One statement of fixed text, prepared once per connection: the
        // columns as arrays, unnested in order (so ids follow the rows'),
        // and the wake-up in the same round trip.
        DbConnection::Postgres(pg) if !rows.is_empty() => {
            use diesel::sql_types::{Array, Nullable, Text, Timestamp};
            let column = |f: fn(&StagedEvent) -> &str| rows.iter().map(f).collect::<Vec<_>>();
            Fixed::new(
                "WITH inserted AS (INSERT INTO events (user_id, kind, patient_id, data, created_at) \
                 SELECT * FROM unnest({}::text[], {}::text[], {}::text[], {}::text[], \
                     {}::timestamp[])) \
                 SELECT pg_notify({}, '')",
            )
            .bind::<Array<Text>, _>(column(|e| &e.user_id))
            .bind::<Array<Text>, _>(column(|e| e.kind))
            .bind::<Array<Nullable<Text>>, _>(
                rows.iter()
                    .map(|e| e.patient_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind::<Array<Text>, _>(column(|e| &e.data))
            .bind::<Array<Timestamp>, _>(rows.iter().map(|e| e.created_at).collect::<Vec<_>>())
            .bind::<Text, _>(writer::EVENTS_CHANNEL)
            .execute(pg)?;
        }
        DbConnection::Postgres(_) => {}
        DbConnection::Sqlite(lite) => {
            for e in rows {
                diesel::insert_into(events::table)
                    .values((
                        events::user_id.eq(e.user_id.as_str()),
                        events::kind.eq(e.kind),
                        events::patient_id.eq(e.patient_id.as_deref()),
                        events::data.eq(e.data.as_str()),
                        events::created_at.eq(Stamp(e.created_at)),
                    ))
                    .execute(lite)?;
            }
        }
    }
    Ok(())
}

/// A write in progress ([`Db::write`]): the connection, inside the
/// transaction, and what the write stages for its batch: audit records
/// ([`Tx::audit`]) and live events ([`Tx::stage_events`]). The writer
/// stores a batch's staged rows just before it commits, in the same
/// transaction ([`Staged::store`]); a write that fails takes its rows back
/// with it, so an audit row is in the chain, and an event in `events`,
/// exactly when the write is stored.
///
/// It dereferences to the connection: queries and `store` operations that
/// need no audit take `&mut DbConnection` and are passed a `Tx` as is.
/// Only the writer makes one (a write outside it, `Db::write_apart`, gets
/// a bare connection and so can neither audit nor emit).
pub struct Tx<'a> {
    conn: &'a mut DbConnection,
    staged: &'a mut Staged,
}

impl Tx<'_> {
    /// Stages `records`, stamped `at`, for the chain.
    pub fn audit(&mut self, records: &[AuditRecord], at: chrono::NaiveDateTime) {
        self.staged
            .audit
            .extend(records.iter().map(|r| (r.clone(), at)));
    }

    /// Stages event rows for the batch's one insert.
    pub fn stage_events(&mut self, rows: impl IntoIterator<Item = StagedEvent>) {
        self.staged.events.extend(rows);
    }

    /// The connection, for diesel's generic query methods (which take the
    /// connection type itself, not something that dereferences to it).
    pub fn conn(&mut self) -> &mut DbConnection {
        self.conn
    }
}

impl Deref for Tx<'_> {
    type Target = DbConnection;
    fn deref(&self) -> &DbConnection {
        self.conn
    }
}

impl DerefMut for Tx<'_> {
    fn deref_mut(&mut self) -> &mut DbConnection {
        self.conn
    }
}

/// Which database engine a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a `database.url` names, if any.
    pub fn from_url(url: &str) -> Option<Self> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            (!path.is_empty() && !path.contains(":memory:")).then_some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// Opens connections of the backend named by the URL (r2d2 manager).
#[derive(Debug, Clone)]
pub struct ConnectionManager {
    backend: Backend,
    target: String,
}

impl ConnectionManager {
    /// The SQLite file, if that is the backend.
    pub fn sqlite_path(&self) -> Option<&Path> {
        (self.backend == Backend::Sqlite).then(|| Path::new(&self.target))
    }

    /// A manager for `url`; creates the SQLite file's folder when needed.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let backend = Backend::from_url(url)
            .ok_or_else(|| anyhow::anyhow!("database.url: unsupported scheme"))?;
        let target = match backend {
            Backend::Sqlite => {
                let path = url.trim_start_matches("sqlite://");
                if let Some(parent) = Path::new(path).parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent)?;
                }
                path.to_owned()
            }
            Backend::Postgres => url.to_owned(),
        };
        Ok(Self { backend, target })
    }

    /// Opens one connection, configured for its backend.
    pub fn establish(&self) -> Result<DbConnection, r2d2::Error> {
        match self.backend {
            Backend::Postgres => {
                let mut conn =
                    PgConnection::establish(&self.target).map_err(r2d2::Error::ConnectionError)?;
                conn.set_instrumentation(Liveness::default());
                Ok(DbConnection::Postgres(conn))
            }
            Backend::Sqlite => {
                let mut conn = SqliteConnection::establish(&self.target)
                    .map_err(r2d2::Error::ConnectionError)?;
                // `synchronous = FULL`: each commit is on disk (the WAL
                // fsynced) before any write of its batch is answered, as
                // PostgreSQL's `synchronous_commit = on` does. WAL's usual
                // NORMAL keeps the file consistent but may lose the last
                // commits to a power cut or an OS crash: writes already
                // acknowledged to a clinician, and audit rows the anchor may
                // already have checkpointed outside the database (then
                // `relais audit verify` would report a truncation).
                conn.batch_execute(
                    "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
                     PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;",
                )
                .map_err(r2d2::Error::QueryError)?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }
}

impl ManageConnection for ConnectionManager {
    type Connection = DbConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConnection, r2d2::Error> {
        self.establish()
    }

    /// Not called on checkout (the pool is built with
    /// `test_on_check_out(false)`: a `SELECT 1` before every use was a fifth
    /// of the statements of a request); [`ManageConnection::has_broken`]
    /// keeps a connection PostgreSQL closed out of the pool instead.
    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), r2d2::Error> {
        conn.batch_execute("SELECT 1")
            .map_err(r2d2::Error::QueryError)
    }

    /// Checked when a connection comes back to the pool: one PostgreSQL
    /// closed (a restart, `pg_terminate_backend`, an idle timeout) is
    /// dropped, never handed out again; so is one left inside a
    /// transaction (diesel's own check).
    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        connection_lost(conn) || diesel::r2d2::R2D2Connection::is_broken(conn)
    }
}

/// Watches a PostgreSQL connection's statements for the sign that the
/// server closed it: libpq reports the connection bad
/// (`DatabaseErrorKind::ClosedConnection`) or could not send the statement.
/// A flag set on the connection itself, read without a round trip by
/// [`connection_lost`]: diesel's own `is_broken` looks only at the
/// transaction state, and libpq's `PQstatus` is not exposed.
///
/// It also notes a statement that failed for contention: a serialization
/// failure (SQLSTATE 40001, diesel's `DatabaseErrorKind::SerializationFailure`)
/// or a deadlock (40P01), read and cleared by [`take_contention`]: the
/// writer runs such a write again ([`writer`]). Noted here, on the
/// connection, rather than read from the write's error, because a write
/// may have turned the database error into one of its own (or met it in
/// its savepoint's release).
#[derive(Debug, Default)]
struct Liveness {
    lost: bool,
    contention: bool,
}

impl diesel::connection::Instrumentation for Liveness {
    fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
        use diesel::result::{DatabaseErrorKind, Error};
        if let diesel::connection::InstrumentationEvent::FinishQuery {
            error: Some(Error::DatabaseError(kind, info)),
            ..
        } = event
        {
            match kind {
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand => {
                    self.lost = true;
                }
                DatabaseErrorKind::SerializationFailure => self.contention = true,
                DatabaseErrorKind::Unknown if is_deadlock(info.message()) => {
                    self.contention = true;
                }
                _ => {}
            }
        }
    }
}

/// Whether a PostgreSQL error's primary message is the deadlock detector's
/// (SQLSTATE 40P01). Diesel 2.3 maps 40P01 to `DatabaseErrorKind::Unknown`
/// and does not expose the SQLSTATE (`DatabaseErrorInformation` has the
/// message, details, hint, table, column, constraint and position, not the
/// code), so the message is all there is. It is the server's text in its
/// `lc_messages` language: with another language than English (e.g. a
/// server initialised in French), deadlocks are not recognised and fail
/// as before (a 500); `ALTER ROLE <relais's role> SET lc_messages = 'C'`
/// (by a superuser) makes them recognised. Serialization failures are
/// recognised by their code in every language.
fn is_deadlock(message: &str) -> bool {
    message == "deadlock detected"
}

/// Whether a statement on `conn` found that PostgreSQL had closed it (never
/// for SQLite).
pub fn connection_lost(conn: &mut DbConnection) -> bool {
    match conn {
        DbConnection::Postgres(pg) => pg
            .instrumentation()
            .downcast_ref::<Liveness>()
            .is_some_and(|l| l.lost),
        DbConnection::Sqlite(_) => false,
    }
}

/// Whether a statement on `conn` failed with a deadlock or a serialization
/// failure since the last call (PostgreSQL; never for SQLite, whose one
/// writer at a time cannot deadlock); clears the note.
pub fn take_contention(conn: &mut DbConnection) -> bool {
    match conn {
        DbConnection::Postgres(pg) => pg
            .instrumentation()
            .downcast_mut::<Liveness>()
            .is_some_and(|l| std::mem::take(&mut l.contention)),
        DbConnection::Sqlite(_) => false,
    }
}

/// The advisory lock key under which PostgreSQL migrations run (an
/// arbitrary constant; `auth::throttle` keys its locks by hashes of
/// addresses, in transaction scope).
const MIGRATION_LOCK: i64 = 0x7265_6c61_6973_6d67; // "relaismg"

/// Runs every pending migration of the connection's backend.
pub fn run_migrations(conn: &mut DbConnection) -> anyhow::Result<usize> {
    let applied = match conn {
        DbConnection::Postgres(c) => {
            // Instances started together take turns (a session-level lock,
            // released below or when the connection closes): the later ones
            // find nothing pending instead of racing on the same DDL.
            c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
            let applied = c
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|m| m.len());
            c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))?;
            applied.map_err(|e| anyhow::anyhow!("migrating PostgreSQL: {e}"))?
        }
        DbConnection::Sqlite(c) => c
            .run_pending_migrations(SQLITE_MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("migrating SQLite: {e}"))?
            .len(),
    };
    Ok(applied)
}

/// No connection could be had in time (the database is down or saturated):
/// a 503 the client may retry, not a 500; the cause goes to the log.
fn unavailable(err: r2d2::PoolError) -> ApiError {
    tracing::warn!(error = %err, "no database connection");
    ApiError::Unavailable("the database cannot take the request now; retry later".into())
}

/// The database's own metrics: the writer's queue, batches and commits,
/// the pool's waits (registered with the application's `metrics::Metrics`).
#[derive(Clone, Debug)]
pub struct DbMetrics {
    /// Writes sent to the writer and not yet taken into a batch.
    pub queue_depth: prometheus::IntGauge,
    /// Jobs per committed batch.
    pub batch_size: prometheus::Histogram,
    /// How long a batch took, from its first statement to its commit.
    pub commit_seconds: prometheus::Histogram,
    /// Batches by `outcome` (`committed`, `failed`).
    pub batches: prometheus::IntCounterVec,
    /// How long a checkout waited for a pooled connection.
    pub pool_wait_seconds: prometheus::Histogram,
    /// Checkouts that found no connection in time (answered 503).
    pub pool_timeouts: prometheus::IntCounter,
    /// Reads that found their pooled connection closed by PostgreSQL and
    /// ran again on another.
    pub lost_connections: prometheus::IntCounter,
    /// Write batches that could not start (their connection was closed)
    /// and were started again on a new connection.
    pub batch_restarts: prometheus::IntCounter,
    /// Writes refused because the writer's queue was full (answered 503).
    pub writes_refused: prometheus::IntCounter,
    /// Writes run again, alone in a new savepoint, after a deadlock or a
    /// serialization failure (PostgreSQL).
    pub job_retries: prometheus::IntCounter,
}

impl DbMetrics {
    fn new() -> Self {
        use crate::metrics::{LATENCY_BUCKETS, counters, gauge, histogram};
        Self {
            queue_depth: gauge(
                "relais_db_writer_queue_depth",
                "Writes waiting for the database writer",
            ),
            batch_size: histogram(
                "relais_db_writer_batch_size",
                "Writes committed together in one batch",
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            ),
            commit_seconds: histogram(
                "relais_db_writer_commit_seconds",
                "Time to run and commit one batch of writes",
                LATENCY_BUCKETS,
            ),
            batches: counters(
                "relais_db_writer_batches_total",
                "Batches of writes, by outcome",
                &["outcome"],
            ),
            pool_wait_seconds: histogram(
                "relais_db_pool_wait_seconds",
                "Time a checkout waited for a pooled connection",
                LATENCY_BUCKETS,
            ),
            pool_timeouts: prometheus::IntCounter::new(
                "relais_db_pool_timeouts_total",
                "Checkouts that found no pooled connection in time",
            )
            .expect("valid counter options"),
            lost_connections: prometheus::IntCounter::new(
                "relais_db_pool_lost_connections_total",
                "Reads whose pooled connection the database had closed, run again on another",
            )
            .expect("valid counter options"),
            batch_restarts: prometheus::IntCounter::new(
                "relais_db_writer_batch_restarts_total",
                "Write batches that could not start and were started again on a new connection",
            )
            .expect("valid counter options"),
            writes_refused: prometheus::IntCounter::new(
                "relais_db_writer_refused_total",
                "Writes refused because the writer's queue was full (503)",
            )
            .expect("valid counter options"),
            job_retries: prometheus::IntCounter::new(
                "relais_db_writer_job_retries_total",
                "Writes run again after a deadlock or a serialization failure",
            )
            .expect("valid counter options"),
        }
    }

    /// Every metric, for the application's registry.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.queue_depth.clone()),
            Box::new(self.batch_size.clone()),
            Box::new(self.commit_seconds.clone()),
            Box::new(self.batches.clone()),
            Box::new(self.pool_wait_seconds.clone()),
            Box::new(self.pool_timeouts.clone()),
            Box::new(self.lost_connections.clone()),
            Box::new(self.batch_restarts.clone()),
            Box::new(self.writes_refused.clone()),
            Box::new(self.job_retries.clone()),
        ]
    }
}

/// A read's turn at the pool ([`Db::slot`]): checks a connection out on the
/// blocking thread, and records the whole wait (for the turn and for the
/// checkout) as one `relais_db_pool_wait_seconds` observation.
struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    started: Instant,
    pool: Pool<ConnectionManager>,
    metrics: DbMetrics,
}

impl Slot {
    fn checkout(&self) -> Result<PooledConnection<ConnectionManager>, ApiError> {
        IN_SLOT.set(true);
        // What is left of the wait's one timeout (the turn took the rest).
        let left = CHECKOUT_TIMEOUT.saturating_sub(self.started.elapsed());
        let conn = self.pool.get_timeout(left).map_err(unavailable);
        IN_SLOT.set(false);
        self.metrics
            .pool_wait_seconds
            .observe(self.started.elapsed().as_secs_f64());
        conn
    }
}

thread_local! {
    /// Set while a [`Slot`] checks out (on its blocking thread), for
    /// [`PoolEvents`].
    static IN_SLOT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Records the pool's checkout waits (outside a [`Slot`], which records its
/// own) and timeouts.
#[derive(Debug)]
struct PoolEvents(DbMetrics);

impl r2d2::HandleEvent for PoolEvents {
    fn handle_checkout(&self, event: r2d2::event::CheckoutEvent) {
        // A slot's checkout is recorded with the wait for its turn.
        if !IN_SLOT.get() {
            self.0
                .pool_wait_seconds
                .observe(event.duration().as_secs_f64());
        }
    }

    fn handle_timeout(&self, _event: r2d2::event::TimeoutEvent) {
        self.0.pool_timeouts.inc();
    }
}

/// How many pooled connections are open, and how many of them idle.
#[derive(Debug, Clone, Copy)]
pub struct PoolState {
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

/// The connection pool for reads and the writer thread for writes.
///
/// Reads: on SQLite they run in place when a pooled connection is free (a
/// read of a local file takes microseconds; handing it to another thread
/// and back costs more than the read); on PostgreSQL on tokio's blocking
/// pool, as many at once as the pool has connections (the others wait
/// their turn as futures, not threads). Writes go to the one writer
/// thread, which group-commits them ([`writer`]).
#[derive(Clone)]
pub struct Db {
    pool: Pool<ConnectionManager>,
    backend: Backend,
    writer: writer::Writer,
    /// The audit chain's head as last committed by the writer.
    committed: Arc<CommittedHead>,
    metrics: DbMetrics,
    /// SQLite: held while this process has the file open (see [`lock`]).
    _lock: Option<Arc<lock::InstanceLock>>,
    /// Told after each committed batch that stored events, on SQLite (the
    /// live events' hub listens; on PostgreSQL the batch's `NOTIFY` wakes it).
    commits: Arc<tokio::sync::Notify>,
    /// One permit per pooled connection: a read (or [`Db::write_apart`])
    /// that goes to the blocking pool first waits here, as a future, for a
    /// connection to be likely free. Without it every concurrent request
    /// took a blocking thread of its own to wait in the pool's checkout:
    /// 93 threads at 64 connections on PostgreSQL (each with its stack and
    /// its allocator's thread heap), where 8 connections do the work.
    slots: Arc<tokio::sync::Semaphore>,
}

/// How long a read waits for a connection (a permit, then the pool's
/// checkout) before it is answered 503.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);

impl Db {
    /// Connects to `url` with `pool_size` connections.
    pub fn connect(url: &str, pool_size: u32) -> anyhow::Result<Self> {
        Self::connect_bounded(url, pool_size, writer::MAX_QUEUED)
    }

    /// [`Db::connect`], with at most `max_queued` writes waiting for the
    /// writer (past it a write is answered 503 at once).
    pub fn connect_bounded(url: &str, pool_size: u32, max_queued: usize) -> anyhow::Result<Self> {
        let manager = ConnectionManager::new(url)?;
        let backend = manager.backend;
        let lock = match manager.sqlite_path() {
            Some(path) => Some(Arc::new(lock::InstanceLock::shared(path)?)),
            None => None,
        };
        let committed = Arc::new(CommittedHead::default());
        let metrics = DbMetrics::new();
        let commits = Arc::new(tokio::sync::Notify::new());
        let writer = writer::Writer::start(
            manager.clone(),
            committed.clone(),
            metrics.clone(),
            commits.clone(),
            max_queued,
        )?;
        let pool = Pool::builder()
            .max_size(pool_size)
            .event_handler(Box::new(PoolEvents(metrics.clone())))
            .min_idle(Some(match backend {
                // Open up front, so reads in place rarely find none free.
                Backend::Sqlite => pool_size,
                // Opened on demand, by the caller's checkout: a pool that
                // tops itself up opens connections in the background, and
                // one still opening when the process exits races libpq's
                // OpenSSL against its exit handlers (a crash seen on
                // `relais demo`).
                Backend::Postgres => 0,
            }))
            .connection_timeout(CHECKOUT_TIMEOUT)
            // No `SELECT 1` before each use (see `has_broken`, and
            // `Db::read`'s retry on a connection found closed).
            .test_on_check_out(false)
            .build(manager)?;
        Ok(Self {
            pool,
            backend,
            writer,
            committed,
            metrics,
            _lock: lock,
            commits,
            slots: Arc::new(tokio::sync::Semaphore::new(pool_size as usize)),
        })
    }

    /// Waits, without a thread, for one of the pool's connections to be
    /// this task's to check out; 503 after [`CHECKOUT_TIMEOUT`]. The wait
    /// counts in `relais_db_pool_wait_seconds`, with the checkout's.
    async fn slot(&self) -> Result<Slot, ApiError> {
        let started = Instant::now();
        let permit = tokio::time::timeout(CHECKOUT_TIMEOUT, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| {
                self.metrics.pool_timeouts.inc();
                tracing::warn!("no database connection within the checkout timeout");
                ApiError::Unavailable(
                    "the database cannot take the request now; retry later".into(),
                )
            })?
            .map_err(ApiError::internal)?;
        Ok(Slot {
            _permit: permit,
            started,
            pool: self.pool.clone(),
            metrics: self.metrics.clone(),
        })
    }

    /// The database's metrics (see [`DbMetrics`]).
    pub fn metrics(&self) -> &DbMetrics {
        &self.metrics
    }

    /// The pool's connections now.
    pub fn pool_state(&self) -> PoolState {
        let state = self.pool.state();
        PoolState {
            open: state.connections,
            idle: state.idle_connections,
            max: self.pool.max_size(),
        }
    }

    /// Where the writer publishes each audit head it commits (for the
    /// audit anchor).
    pub fn committed_head(&self) -> Arc<CommittedHead> {
        self.committed.clone()
    }

    /// Told (`notify_one`: one permit, so none is missed) after each
    /// committed batch that stored events, on SQLite: the live events' hub
    /// reads new rows when it fires. On PostgreSQL the batch's `NOTIFY`,
    /// heard by every instance's listener, does it instead.
    pub fn commit_signal(&self) -> Arc<tokio::sync::Notify> {
        self.commits.clone()
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A pooled connection for blocking code (CLI, background tasks in `spawn_blocking`).
    pub fn get(&self) -> Result<PooledConnection<ConnectionManager>, ApiError> {
        self.pool.get().map_err(unavailable)
    }

    /// Runs `f` with a connection: in place on SQLite when one is free,
    /// otherwise on the blocking pool. `f` must not write (see [`Db::write`]):
    /// on PostgreSQL it runs again on another connection when the pooled
    /// one turns out to have been closed by the server.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, ApiError> + Clone + Send + 'static,
        T: Send + 'static,
    {
        self.read_as(f, true).await
    }

    /// [`Db::read`] without SQLite's read transaction: each statement of
    /// `f` is its own snapshot, as every read already is on PostgreSQL
    /// (where `read` opens no transaction either). For a read of one
    /// statement, or of statements that need no common snapshot (each
    /// reads what no other one depends on, or immutable rows). It saves
    /// SQLite's `BEGIN` and `COMMIT`, which diesel sends as text, parsed
    /// anew each time (~17 k instructions each, callgrind).
    pub async fn read_autocommit<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, ApiError> + Clone + Send + 'static,
        T: Send + 'static,
    {
        self.read_as(f, false).await
    }

    async fn read_as<T, F>(&self, f: F, snapshot: bool) -> Result<T, ApiError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, ApiError> + Clone + Send + 'static,
        T: Send + 'static,
    {
        if self.backend == Backend::Sqlite
            && let Some(mut conn) = self.pool.try_get()
        {
            let conn: &mut DbConnection = &mut conn;
            if !snapshot {
                return f(conn);
            }
            // One read transaction: one snapshot for all of `f`'s statements
            // (and SQLite checks for newer commits once, not per statement).
            return conn.transaction(f);
        }
        let slot = self.slot().await?;
        let lost = self.metrics.lost_connections.clone();
        tokio::task::spawn_blocking(move || {
            // A connection PostgreSQL closed (a restart, an idle timeout)
            // fails its first statement: it leaves the pool as it is
            // returned (`has_broken`), and since a read changed nothing it
            // runs again on another. After a restart every idle connection
            // is such a one: each is tried at most once, so within
            // `max_size + 1` tries one is a new connection. (`f` is cloned
            // for each try but the last: its captures, a few ids.)
            let mut tries = slot.pool.max_size() + 1;
            loop {
                let mut conn = slot.checkout()?;
                tries -= 1;
                if tries == 0 {
                    return f(&mut conn);
                }
                let result = f.clone()(&mut conn);
                if result.is_ok() || !connection_lost(&mut conn) {
                    return result;
                }
                lost.inc();
                tracing::warn!(
                    "a pooled database connection was closed by the server; reading again"
                );
            }
        })
        .await
        .map_err(ApiError::internal)?
    }

    /// Runs `f` in a transaction of its own on a pooled connection, outside
    /// the writer's batches: for bookkeeping that is not audited, and that
    /// must neither wait for the batches' locks nor hold a lock of its own
    /// while a batch waits for the audit head (the event streams' leases,
    /// `notify::events`, take a per-user lock: inside a batch, that lock and
    /// the audit head could be taken in either order by two instances).
    /// PostgreSQL; never for data about a patient (which the writer audits).
    pub async fn write_apart<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let slot = self.slot().await?;
        tokio::task::spawn_blocking(move || {
            let mut conn = slot.checkout()?;
            let conn: &mut DbConnection = &mut conn;
            conn.transaction(f)
        })
        .await
        .map_err(ApiError::internal)?
    }

    /// Runs `f` in one transaction: all of it or nothing. Answers once it is
    /// committed (on SQLite, with the other writes of its batch). On
    /// PostgreSQL a write that fails with a deadlock or a serialization
    /// failure runs again, alone, from scratch, up to three times in all:
    /// `f` is cloned for each try but the last (its captures: the request's
    /// parsed body and ids).
    pub async fn write<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<T, ApiError> + Clone + Send + 'static,
        T: Send + 'static,
    {
        self.writer
            .submit(f)
            .await
            .unwrap_or_else(|_| Err(writer_gone()))
    }

    /// Commits audit records of their own with the writer's next batch
    /// (see [`writer::Writer::submit_audit`]).
    pub async fn append_audit(
        &self,
        records: Vec<AuditRecord>,
        now: chrono::NaiveDateTime,
    ) -> Result<(), ApiError> {
        self.writer
            .submit_audit(records, now)
            .await
            .unwrap_or_else(|_| Err(writer_gone()))
    }

    /// The blocking form of [`Db::write`], for threads outside the async
    /// runtime (it must not be called from async code).
    pub fn write_blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<T, ApiError> + Clone + Send + 'static,
        T: Send + 'static,
    {
        self.writer
            .submit(f)
            .blocking_recv()
            .unwrap_or_else(|_| Err(writer_gone()))
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> anyhow::Result<usize> {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get()?;
            run_migrations(&mut conn)
        })
        .await?
    }
}

fn writer_gone() -> ApiError {
    ApiError::internal(anyhow::anyhow!("the database writer stopped"))
}

/// The PostgreSQL channel on which revoked sessions are announced to every
/// instance (`auth::revocations` listens on it).
pub const REVOCATIONS_CHANNEL: &str = "relais_revocations";

/// Announces, when the transaction commits, that `what` (`session:<id>` or
/// `user:<id>`) was revoked, so that every instance drops what it cached of
/// it. PostgreSQL only: instances sharing a SQLite file rely on the cache's
/// lifetime.
pub fn announce_revocation(conn: &mut DbConnection, what: &str) -> QueryResult<()> {
    if let DbConnection::Postgres(pg) = conn {
        diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<diesel::sql_types::Text, _>(REVOCATIONS_CHANNEL)
            .bind::<diesel::sql_types::Text, _>(what)
            .execute(pg)?;
    }
    Ok(())
}

/// True when a diesel error is a unique-constraint violation.
pub fn is_unique_violation(err: &diesel::result::Error) -> bool {
    matches!(
        err,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_from_url() {
        assert_eq!(
            Backend::from_url("sqlite://data/relais.db"),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("postgres://u@h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("postgresql://u@h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::from_url("sqlite://:memory:"), None);
        assert_eq!(Backend::from_url("mysql://x"), None);
        assert_eq!(Backend::from_url("data/relais.db"), None);
    }

    /// Every SQLite connection commits durably: `synchronous = FULL` (2),
    /// not WAL's usual NORMAL (1), on the pool's and on the writer's.
    #[tokio::test]
    async fn sqlite_commits_are_on_disk_before_they_are_answered() {
        #[derive(QueryableByName)]
        struct Synchronous {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            synchronous: i32,
        }
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/durable.db", dir.path().display());
        let db = Db::connect(&url, 2).unwrap();
        db.migrate().await.unwrap();
        let level = |conn: &mut DbConnection| {
            diesel::sql_query("PRAGMA synchronous")
                .get_result::<Synchronous>(conn)
                .map(|s| s.synchronous)
        };
        assert_eq!(level(&mut db.get().unwrap()).unwrap(), 2);
        let writer = db.write(move |tx| Ok(level(tx.conn())?)).await.unwrap();
        assert_eq!(writer, 2);
    }

    /// Threads of this process named `name` now.
    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim_end() == name)
            .count()
    }

    /// Reads waiting for a connection wait as futures: a burst of them
    /// takes no more blocking threads than the pool has connections (it
    /// took one thread each, all parked in the pool's checkout), and every
    /// one of them is answered once connections come back.
    #[test]
    fn reads_waiting_for_a_connection_hold_no_thread() {
        const NAME: &str = "relais-slots-t"; // unique to this test (15 bytes at most)
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(64)
            .thread_name(NAME)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/slots.db", dir.path().display());
        let db = Db::connect(&url, 2).unwrap();
        // Both connections taken: every read below must wait for one.
        let held = [db.get().unwrap(), db.get().unwrap()];
        let reads: Vec<_> = (0..24)
            .map(|_| {
                let db = db.clone();
                runtime
                    .spawn(async move { db.read(|conn| Ok(conn.batch_execute("SELECT 1")?)).await })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let waiting = threads_named(NAME);
        // The runtime's one worker, and at most one blocking thread per
        // connection (parked in the checkout until the test lets go).
        assert!(
            waiting <= 1 + 2,
            "{waiting} threads for 24 reads waiting for 2 connections"
        );
        drop(held);
        for read in reads {
            runtime.block_on(read).unwrap().unwrap();
        }
    }
}
