//! The database's writer: one thread owns the write connection and commits
//! the transactions of concurrent requests together (group commit).
//!
//! Each [`Db::write`](super::Db::write) sends its closure here. The thread
//! takes whatever has queued up (up to [`MAX_BATCH`] jobs), opens one
//! transaction, runs each job in its own savepoint — a job that fails is
//! rolled back alone, exactly as if it had run in its own transaction — and
//! commits once. Each caller hears its result only after that commit: a
//! result is never reported for work that was not stored. If the commit
//! fails, every job of the batch fails.
//!
//! Why one writer: SQLite allows one writer at a time anyway, and rather
//! than queueing every request's thread on the file lock, the writes queue
//! here. On PostgreSQL every write appends to the audit chain, whose head
//! row is locked until commit, so the writes of all instances already take
//! turns; committing them in batches pays one WAL flush per batch instead
//! of one per write, with the lock held by one transaction at a time.
//!
//! What the writes stage on their [`Tx`] (audit records, live-event rows)
//! is stored once per batch, just before the commit, while the batch holds
//! the audit chain's head ([`Staged::store`]): the events in one statement,
//! one `NOTIFY` if there were any, the audit rows chained. The batch's
//! state lives in the [`Staged`] it passes to each job, nowhere else. After the commit the thread records
//! the chain's new head in a [`CommittedHead`], for the audit anchor to
//! checkpoint outside the database (no disk write here: see `audit::anchor`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use chrono::NaiveDateTime;
use diesel::connection::{Connection, SimpleConnection};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use tokio::sync::oneshot;

use super::chain::{self, AuditRecord, ChainHead, CommittedHead};
use super::{Backend, ConnectionManager, DbConnection, DbMetrics, Fixed, Staged, Tx};
use crate::error::ApiError;

/// The most jobs committed in one transaction. PostgreSQL keeps the first
/// 64 subtransactions (savepoints) of a transaction in shared memory; past
/// that, every other session's snapshot checks get slower.
const MAX_BATCH_SQLITE: usize = 256;
const MAX_BATCH_POSTGRES: usize = 64;

/// Runs one job in its savepoint; says whether it succeeded and how to
/// report its result once the batch's commit is known (`None`: committed;
/// `Some`: why not).
type Job = Box<dyn FnOnce(&mut DbConnection, &mut Staged) -> Completion + Send>;
type Completion = Box<dyn FnOnce(Option<&str>) + Send>;

/// The PostgreSQL channel on which a committed batch with events wakes
/// every instance's event hub (`notify::events`, which re-exports it).
pub const EVENTS_CHANNEL: &str = "relais_events";

/// The most jobs waiting for the writer. Past it a write is refused at
/// once (503 with `Retry-After`, nothing done) instead of queueing without
/// bound: at 64 jobs a batch on PostgreSQL (256 on SQLite) that is 64 (16)
/// batches of work, well over a second, and a few MiB of closures.
pub const MAX_QUEUED: usize = 4096;
/// What a refused write's client is told to wait.
const REFUSED_RETRY_AFTER_S: u64 = 1;

/// The handle requests use to reach the writer thread.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::SyncSender<Job>,
    /// Jobs sent and not yet taken off the queue (the queue depth).
    queued: prometheus::IntGauge,
    /// Writes refused because the queue was full.
    refused: prometheus::IntCounter,
    /// Writes run again after a deadlock or a serialization failure.
    retries: prometheus::IntCounter,
    /// How many times a write is tried: [`JOB_TRIES`] on PostgreSQL, once
    /// on SQLite (one writer at a time: neither can happen there).
    tries: u32,
}

impl Writer {
    /// Starts the writer thread; it stops when the last handle is dropped.
    /// Each head it commits is published to `committed`.
    pub fn start(
        manager: ConnectionManager,
        committed: Arc<CommittedHead>,
        metrics: DbMetrics,
        commits: Arc<tokio::sync::Notify>,
        max_queued: usize,
    ) -> std::io::Result<Self> {
        let queued = metrics.queue_depth.clone();
        let refused = metrics.writes_refused.clone();
        let retries = metrics.job_retries.clone();
        let sqlite = manager.backend == Backend::Sqlite;
        let (jobs, queue) = mpsc::sync_channel::<Job>(max_queued);
        let (running, stopped) = mpsc::channel::<()>();
        let checkpoints = manager.clone();
        let restart = Arc::new(AtomicBool::new(false));
        let asked = restart.clone();
        std::thread::Builder::new()
            .name("relais-db-writer".into())
            .spawn(move || {
                run(&manager, &queue, &restart, &committed, &metrics, &commits);
                // Nothing more will commit: the anchor writes the last head.
                committed.stop();
                drop(running);
            })?;
        if sqlite {
            std::thread::Builder::new()
                .name("relais-checkpoint".into())
                .spawn(move || checkpoint(&checkpoints, &stopped, &asked))?;
        }
        Ok(Self {
            jobs,
            queued,
            refused,
            retries,
            tries: if sqlite { 1 } else { JOB_TRIES },
        })
    }

    /// Sends `job` to the thread, counted in the queue depth until taken;
    /// false (and the job dropped) when the queue is full.
    fn send(&self, job: Job) -> bool {
        self.queued.inc();
        match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(mpsc::TrySendError::Full(_)) => {
                self.queued.dec();
                self.refused.inc();
                false
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {
                // The thread is gone; the dropped job's receiver reports it.
                self.queued.dec();
                true
            }
        }
    }

    /// Queues `f`; the receiver answers after the batch holding it commits.
    ///
    /// A try that fails with a deadlock or a serialization failure (noted on
    /// the connection: `db::take_contention`) is rolled back alone, with what
    /// it staged, and `f` runs again from scratch in a new savepoint of the
    /// same batch, up to [`JOB_TRIES`] tries in all, before anything is
    /// answered; each try but the last runs a clone of `f`. The batch keeps
    /// the audit chain's head meanwhile, so the write still runs in turn with
    /// every other write of every instance.
    pub fn submit<T, F>(&self, f: F) -> oneshot::Receiver<Result<T, ApiError>>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<T, ApiError> + Clone + Send + 'static,
        T: Send + 'static,
    {
        let (answer, receiver) = oneshot::channel();
        let (retries, tries) = (self.retries.clone(), self.tries);
        let job: Job = Box::new(move |conn: &mut DbConnection, staged: &mut Staged| {
            let mut tried = 1;
            let result = loop {
                // A note left by an earlier write's last try must not make
                // this one's unrelated failure look like contention.
                super::take_contention(conn);
                if tried >= tries {
                    break run_once(f, conn, staged);
                }
                let result = run_once(f.clone(), conn, staged);
                if result.is_ok() || !super::take_contention(conn) {
                    break result;
                }
                retries.inc();
                tracing::warn!(
                    tried,
                    "database writer: a write met a deadlock or a serialization failure; running it again"
                );
                tried += 1;
            };
            complete(answer, result)
        });
        // If the thread is gone the receiver reports it (its sender drops).
        if self.send(job) { receiver } else { refused() }
    }

    /// Queues audit records of their own (a read's, a denial's); the
    /// receiver answers once they are committed in the chain.
    ///
    /// Cheaper than [`Writer::submit`]: no savepoint, since the job only
    /// stages the records for the batch's chain and runs no statement.
    pub fn submit_audit(
        &self,
        records: Vec<AuditRecord>,
        now: NaiveDateTime,
    ) -> oneshot::Receiver<Result<(), ApiError>> {
        let (answer, receiver) = oneshot::channel();
        let job: Job = Box::new(move |_: &mut DbConnection, staged: &mut Staged| {
            staged.audit.extend(records.into_iter().map(|r| (r, now)));
            complete(answer, Ok(()))
        });
        if self.send(job) { receiver } else { refused() }
    }
}

/// How many times a write that meets a deadlock or a serialization failure
/// is tried in all (PostgreSQL).
pub const JOB_TRIES: u32 = 3;

/// One try of a write: in a savepoint of the batch's transaction; when it
/// fails, what it staged goes with it.
fn run_once<T, F>(f: F, conn: &mut DbConnection, staged: &mut Staged) -> Result<T, ApiError>
where
    F: FnOnce(&mut Tx<'_>) -> Result<T, ApiError>,
{
    let mark = staged.mark();
    // What an earlier write of the batch met is not this one's.
    super::take_contention(conn);
    // Nested in the batch's transaction: a savepoint.
    let mut savepoint_open = std::mem::take(&mut staged.savepoint_open);
    let outcome = in_savepoint(conn, &mut savepoint_open, |conn| {
        f(&mut Tx { conn, staged })
    });
    staged.savepoint_open = savepoint_open;
    let result = match outcome {
        Ok(result) => result,
        // The savepoint could not be closed: the write's changes may still
        // be in the transaction, so the whole batch rolls back.
        Err(err) => {
            tracing::error!(error = %err, "database writer: a write's savepoint could not be closed");
            staged.break_batch();
            Err(err.into())
        }
    };
    if result.is_err() {
        // Rolled back: so are the records and events it staged.
        staged.rollback_to(mark);
    }
    result
}

/// Runs `f` in a savepoint of the batch's transaction, rolled back to if
/// `f` fails; `Err` when the savepoint itself failed (then the batch must
/// not commit). diesel does not know of this savepoint; a transaction the
/// write opens itself is diesel's savepoint inside it.
///
/// On SQLite with statements of fixed text, prepared once per connection:
/// diesel sends its own `SAVEPOINT` and `RELEASE` as text, parsed anew for
/// every write (~17 k instructions each, callgrind).
///
/// On PostgreSQL each statement is a round trip to the server, paid by
/// every write of every instance in turn (the batch holds the audit
/// chain's head): a write that succeeded leaves its savepoint open
/// (`open`), and the next write sends that savepoint's `RELEASE` in the
/// same message as its own `SAVEPOINT` (one round trip, not two); the
/// batch's `COMMIT` releases the last one. A write that failed is rolled
/// back to its savepoint at once, before anything else runs. Whatever runs
/// after the last write (the batch's events and audit rows) runs inside
/// its open savepoint, which changes nothing: a failure there rolls the
/// whole transaction back.
fn in_savepoint<T>(
    conn: &mut DbConnection,
    open: &mut bool,
    f: impl FnOnce(&mut DbConnection) -> Result<T, ApiError>,
) -> diesel::QueryResult<Result<T, ApiError>> {
    match conn {
        DbConnection::Sqlite(lite) => {
            Fixed::new("SAVEPOINT relais_write").execute(lite)?;
        }
        DbConnection::Postgres(pg) => {
            pg.batch_execute(if *open {
                "RELEASE SAVEPOINT relais_write; SAVEPOINT relais_write"
            } else {
                "SAVEPOINT relais_write"
            })?;
            *open = true;
        }
    }
    let result = f(conn);
    match conn {
        DbConnection::Sqlite(lite) => {
            if result.is_err() {
                Fixed::new("ROLLBACK TO relais_write").execute(lite)?;
            }
            Fixed::new("RELEASE relais_write").execute(lite)?;
        }
        DbConnection::Postgres(pg) => {
            if result.is_err() {
                // Kept open, empty: the next write (or the commit) releases it.
                pg.batch_execute("ROLLBACK TO SAVEPOINT relais_write")?;
            }
        }
    }
    Ok(result)
}

/// The answer to a write the full queue refused: 503, retry shortly.
fn refused<T>() -> oneshot::Receiver<Result<T, ApiError>> {
    let (answer, receiver) = oneshot::channel();
    let _ = answer.send(Err(ApiError::Overloaded {
        retry_after_s: REFUSED_RETRY_AFTER_S,
    }));
    receiver
}

/// How to report a job's `result` once its batch's commit is known.
fn complete<T: Send + 'static>(
    answer: oneshot::Sender<Result<T, ApiError>>,
    result: Result<T, ApiError>,
) -> Completion {
    Box::new(move |commit_error: Option<&str>| {
        let result = match (commit_error, result) {
            (None, result) | (Some(_), result @ Err(_)) => result,
            (Some(why), Ok(_)) => Err(ApiError::internal(anyhow::anyhow!(
                "the transaction could not be committed: {why}"
            ))),
        };
        let _ = answer.send(result);
    })
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// A WAL this long (in 4 KiB frames) is restarted from its beginning.
const RESTART_FRAMES: i64 = 2000;

#[derive(QueryableByName)]
struct CheckpointResult {
    #[diesel(sql_type = BigInt)]
    log: i64,
}

/// Checkpoints the WAL on its own thread until the writer stops.
///
/// The writer's connection does not checkpoint on commit
/// (`wal_autocheckpoint = 0`): that checkpoint would run inside the commit
/// that crosses the threshold, and its copy and fsync would hold up every
/// request waiting on that batch. A passive checkpoint here blocks neither
/// the writer nor the readers. Under constant writes it never quite catches
/// up, so the WAL would only grow: once it is long, this thread asks the
/// writer to finish the job between two batches ([`restart_wal`]), when
/// little is left to copy.
fn checkpoint(manager: &ConnectionManager, stopped: &mpsc::Receiver<()>, restart: &AtomicBool) {
    let mut conn: Option<DbConnection> = None;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
        let mut c = match conn.take() {
            Some(c) => c,
            None => match manager.establish() {
                Ok(c) => c,
                Err(err) => {
                    tracing::warn!(error = %err, "checkpoint: cannot connect");
                    continue;
                }
            },
        };
        let result = match &mut c {
            DbConnection::Sqlite(lite) => diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)")
                .get_result::<CheckpointResult>(lite),
            DbConnection::Postgres(_) => return,
        };
        match result {
            Ok(done) => {
                if done.log >= RESTART_FRAMES {
                    restart.store(true, Ordering::Relaxed);
                }
                conn = Some(c);
            }
            Err(err) => tracing::warn!(error = %err, "checkpoint failed"),
        }
    }
}

/// Between two batches, when no write can slip in: copies the little the
/// checkpoint thread has not, so that the next commit can start the WAL
/// again from its beginning. Passive: it waits for no reader (a reader
/// still on the old frames only means the restart happens at a later try).
fn restart_wal(conn: &mut DbConnection) {
    if let Err(err) = conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE)") {
        tracing::warn!(error = %err, "checkpointing the WAL failed");
    }
}

/// Opens the writer's connection; on SQLite it leaves checkpoints to [`checkpoint`].
fn connect(manager: &ConnectionManager) -> Result<DbConnection, diesel::r2d2::Error> {
    let mut conn = manager.establish()?;
    if let DbConnection::Sqlite(lite) = &mut conn {
        lite.batch_execute("PRAGMA wal_autocheckpoint = 0")
            .map_err(diesel::r2d2::Error::QueryError)?;
    }
    Ok(conn)
}

/// Takes batches off the queue until every handle is dropped.
fn run(
    manager: &ConnectionManager,
    queue: &mpsc::Receiver<Job>,
    restart: &AtomicBool,
    committed: &CommittedHead,
    metrics: &DbMetrics,
    commits: &tokio::sync::Notify,
) {
    let mut conn: Option<DbConnection> = None;
    while let Ok(first) = queue.recv() {
        metrics.queue_depth.dec();
        let mut batch = vec![first];
        let max = match manager.backend {
            Backend::Sqlite => MAX_BATCH_SQLITE,
            Backend::Postgres => MAX_BATCH_POSTGRES,
        };
        while batch.len() < max {
            match queue.try_recv() {
                Ok(job) => {
                    metrics.queue_depth.dec();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        metrics.batch_size.observe(batch.len() as f64);
        let started = std::time::Instant::now();
        let mut attempt = 1;
        conn = loop {
            let connection = match conn.take() {
                Some(c) => c,
                None => match connect(manager) {
                    Ok(c) => c,
                    Err(err) => {
                        tracing::error!(error = %err, attempt, "database writer: cannot connect");
                        if attempt < START_ATTEMPTS {
                            attempt += 1;
                            std::thread::sleep(RETRY_PAUSE);
                            continue;
                        }
                        // Dropping the jobs drops their answer channels:
                        // each caller gets an error.
                        drop(std::mem::take(&mut batch));
                        break None;
                    }
                },
            };
            match commit_batch(connection, &mut batch, committed) {
                Ran::Done(connection, woke) => {
                    // SQLite: the hub of this process reads the new events
                    // (PostgreSQL: the batch's NOTIFY wakes every instance's).
                    if woke && manager.backend == Backend::Sqlite {
                        commits.notify_one();
                    }
                    break connection;
                }
                // No job has run: the jobs are whole, on a fresh connection
                // the batch starts again from scratch.
                Ran::NotStarted(err) if attempt < START_ATTEMPTS => {
                    tracing::warn!(error = %err, attempt, "database writer: a batch could not start; retrying");
                    metrics.batch_restarts.inc();
                    attempt += 1;
                    std::thread::sleep(RETRY_PAUSE);
                }
                Ran::NotStarted(err) => {
                    tracing::error!(error = %err, "database writer: a batch could not start");
                    drop(std::mem::take(&mut batch));
                    break None;
                }
            }
        };
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics
            .batches
            .with_label_values(&[if conn.is_some() {
                "committed"
            } else {
                "failed"
            }])
            .inc();
        if let Some(c) = conn.as_mut()
            && restart.swap(false, Ordering::Relaxed)
        {
            restart_wal(c);
        }
    }
}

/// How many times a batch that could not start (its transaction or its
/// first statement failed, before any job ran: typically a connection the
/// database closed, e.g. on a restart) is tried, each on a new connection.
const START_ATTEMPTS: u32 = 3;
/// The pause between two such tries.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// What became of a batch.
enum Ran {
    /// Every job ran and was answered; the connection, when it is still fit
    /// for the next batch, and whether the batch committed events.
    Done(Option<DbConnection>, bool),
    /// The transaction failed before any job ran: the jobs are untouched.
    NotStarted(diesel::result::Error),
}

/// Runs a batch in one transaction and answers its jobs, unless it could
/// not even start (then `batch` is left as it was).
fn commit_batch(mut conn: DbConnection, batch: &mut Vec<Job>, committed: &CommittedHead) -> Ran {
    let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
    let mut panicked = false;
    let mut started = false;
    let mut emitted = false;
    let outcome = conn.transaction::<Option<ChainHead>, diesel::result::Error, _>(|conn| {
        // SQLite: take the write lock first (see migrations: write_lock), so
        // a read-then-write job never meets SQLITE_BUSY_SNAPSHOT.
        // PostgreSQL: lock the chain's head first, before any job locks a
        // row, so that batches of several instances cannot deadlock (see
        // `chain::lock_head`).
        let head = match conn {
            DbConnection::Sqlite(lite) => {
                Fixed::new("UPDATE write_lock SET id = id WHERE 0").execute(lite)?;
                None
            }
            DbConnection::Postgres(_) => Some(chain::lock_head(conn)?),
        };
        started = true;
        let mut staged = Staged::default();
        for job in batch.drain(..) {
            match catch_unwind(AssertUnwindSafe(|| job(conn, &mut staged))) {
                Ok(done) => completions.push(done),
                Err(_) => {
                    // The panicking job's answer channel is dropped; the
                    // others must not be reported as committed.
                    panicked = true;
                    return Err(diesel::result::Error::RollbackTransaction);
                }
            }
        }
        if staged.is_broken() {
            return Err(diesel::result::Error::RollbackTransaction);
        }
        emitted = staged.has_events();
        // The events and audit rows of the batch's writes are stored here,
        // in the same transaction, while it holds the head: stored together
        // with what they report, or not at all.
        staged.store(conn, head).map_err(|err| {
            tracing::error!(error = %err, "database writer: storing the batch's events and audit rows failed");
            diesel::result::Error::RollbackTransaction
        })
    });
    if !started && let Err(err) = outcome {
        return Ran::NotStarted(err);
    }
    let error = match (&outcome, panicked) {
        (_, true) => Some("a job of the batch panicked".to_owned()),
        (Err(err), false) => {
            tracing::error!(error = %err, "database writer: a batch failed to commit");
            Some(err.to_string())
        }
        (Ok(_), false) => None,
    };
    // Only a committed head is published: a checkpoint never names a row
    // that a rollback took back.
    if let (Ok(Some(head)), None) = (outcome, &error) {
        committed.publish(head);
    }
    for done in completions {
        done(error.as_deref());
    }
    // After a panic or a failed commit the connection's transaction state is
    // not certain: the next batch starts on a fresh one.
    let fit = error.is_none();
    Ran::Done(fit.then_some(conn), fit && emitted)
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    use diesel::sql_types::BigInt;

    use crate::db::{Db, DbConnection, Fixed};
    use crate::error::ApiError;

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    fn count(db: &Db) -> i64 {
        let mut conn = db.get().unwrap();
        diesel::sql_query("SELECT COUNT(*) AS n FROM t")
            .get_result::<Count>(&mut *conn)
            .unwrap()
            .n
    }

    /// Where a test's database lives: a temporary SQLite file, or a new
    /// PostgreSQL database (dropped afterwards) when the suite runs on
    /// PostgreSQL (`RELAIS_TEST_DATABASE_URL`, README).
    enum Place {
        Sqlite(#[allow(dead_code)] tempfile::TempDir),
        Postgres { server: String, name: String },
    }

    impl Drop for Place {
        fn drop(&mut self) {
            if let Place::Postgres { server, name } = self
                && let Ok(mut admin) = diesel::PgConnection::establish(server)
            {
                let _ =
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }

    /// A migrated database with a table `t`: SQLite's, whatever the suite's.
    async fn fresh() -> (Place, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/w.db", dir.path().display());
        with_table(Place::Sqlite(dir), &url).await
    }

    /// [`fresh`] on the suite's backend: PostgreSQL when it runs there.
    async fn fresh_on_the_suites_backend() -> (Place, Db) {
        let server = std::env::var("RELAIS_TEST_DATABASE_URL").unwrap_or_default();
        if !server.starts_with("postgres") {
            return fresh().await;
        }
        let name = format!("relais_writer_{}", uuid::Uuid::now_v7().simple());
        diesel::PgConnection::establish(&server)
            .unwrap()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        with_table(Place::Postgres { server, name }, &url).await
    }

    async fn with_table(place: Place, url: &str) -> (Place, Db) {
        let db = Db::connect(url, 2).unwrap();
        db.migrate().await.unwrap();
        db.write(|conn| {
            Ok(conn.batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")?)
        })
        .await
        .unwrap();
        (place, db)
    }

    /// Inserts the row `id` into `t`, on either backend.
    fn insert_row(conn: &mut DbConnection, id: i64) -> diesel::QueryResult<()> {
        crate::per_backend!(conn, |c| Fixed::new(
            "INSERT INTO t (id, v) VALUES ({}, 'x')"
        )
        .bind::<BigInt, _>(id)
        .execute(c))
        .map(drop)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failing_write_is_rolled_back_alone_and_the_others_commit() {
        let (_db_place, db) = fresh_on_the_suites_backend().await;
        let writes = (0..200i64).map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                db.write(move |conn| {
                    insert_row(conn, i)?;
                    if i % 3 == 0 {
                        // Fails after writing: its row must not stay.
                        return Err(ApiError::Gone(format!("{i}")));
                    }
                    Ok(i)
                })
                .await
            })
        });
        let results = futures_util::future::join_all(writes).await;
        let ok = results
            .into_iter()
            .map(|r| r.unwrap())
            .enumerate()
            .map(|(i, r)| {
                let i = i as i64;
                match r {
                    Ok(v) => assert_eq!(v, i),
                    Err(ApiError::Gone(m)) => assert_eq!(m, i.to_string()),
                    Err(other) => panic!("{other:?}"),
                }
                i % 3 != 0
            })
            .filter(|ok| *ok)
            .count();
        assert_eq!(ok, 133);
        assert_eq!(count(&db), 133);
    }

    /// A write that opens a transaction of its own runs it inside its
    /// savepoint: what fails inside goes, the rest of the write stays, and
    /// the write still goes whole when it fails after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_inside_a_write_nests_in_its_savepoint() {
        let (_db_place, db) = fresh_on_the_suites_backend().await;
        let insert = insert_row;
        let writes = (0..40i64).map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                db.write(move |conn| {
                    insert(conn, i)?;
                    // Inside: the row 1000 + i, then a failure that takes it back.
                    let inner: Result<(), ApiError> = conn.transaction(|conn| {
                        insert(conn, 1000 + i)?;
                        Err(ApiError::Gone("inner".into()))
                    });
                    assert!(inner.is_err());
                    // Inside again: kept.
                    conn.transaction(|conn| insert(conn, 2000 + i))?;
                    if i % 2 == 0 {
                        return Err(ApiError::Gone("outer".into()));
                    }
                    Ok(())
                })
                .await
            })
        });
        for (i, r) in futures_util::future::join_all(writes)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(r.unwrap().is_ok(), i % 2 == 1);
        }
        let mut conn = db.get().unwrap();
        let ids: Vec<i64> = diesel::sql_query("SELECT id AS n FROM t ORDER BY id")
            .load::<Count>(&mut *conn)
            .unwrap()
            .into_iter()
            .map(|r| r.n)
            .collect();
        let odd: Vec<i64> = (0..40).filter(|i| i % 2 == 1).collect();
        let expected: Vec<i64> = odd
            .iter()
            .copied()
            .chain(odd.iter().map(|i| 2000 + i))
            .collect();
        assert_eq!(ids, expected);
    }

    /// SQLite: a write whose savepoint cannot be closed (here it released
    /// it itself, so the writer's `RELEASE` fails) leaves changes of unknown
    /// extent in the batch's transaction: the batch rolls back whole and the
    /// write is answered with an error, never stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_whose_savepoint_cannot_be_closed_fails_its_batch() {
        let (_db_place, db) = fresh().await;
        let result = db
            .write(|conn| {
                diesel::sql_query("INSERT INTO t (id, v) VALUES (7, 'x')").execute(&mut **conn)?;
                conn.batch_execute("RELEASE relais_write")?;
                Ok(())
            })
            .await;
        assert!(result.is_err(), "{result:?}");
        assert_eq!(count(&db), 0);
        // The writer goes on, on a new connection.
        db.write(|conn| {
            Ok(diesel::sql_query("INSERT INTO t (id, v) VALUES (8, 'y')").execute(&mut **conn)?)
        })
        .await
        .unwrap();
        assert_eq!(count(&db), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_past_the_queue_bound_is_refused_at_once_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/w.db", dir.path().display());
        let db = Db::connect_bounded(&url, 2, 2).unwrap();
        db.migrate().await.unwrap();
        db.write(|conn| {
            Ok(conn.batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")?)
        })
        .await
        .unwrap();
        // A write that holds the writer thread until released: the queue
        // behind it fills up and is not drained meanwhile.
        let (started, running) = std::sync::mpsc::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        // Shared: a write closure is cloned for its tries (PostgreSQL).
        let released = std::sync::Arc::new(std::sync::Mutex::new(released));
        let insert = |i: i64| {
            move |conn: &mut crate::db::Tx<'_>| -> Result<(), ApiError> {
                diesel::sql_query("INSERT INTO t (id, v) VALUES (?, 'x')")
                    .bind::<BigInt, _>(i)
                    .execute(&mut **conn)?;
                Ok(())
            }
        };
        let blocking = {
            let db = db.clone();
            tokio::spawn(async move {
                db.write(move |conn| {
                    started.send(()).unwrap();
                    released.lock().unwrap().recv().unwrap();
                    insert(1)(conn)
                })
                .await
            })
        };
        tokio::task::spawn_blocking(move || running.recv().unwrap())
            .await
            .unwrap();
        // Two fit in the queue (its bound), the third is refused.
        let queued: Vec<_> = (2..=3)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move { db.write(insert(i)).await })
            })
            .collect();
        let mut refused = None;
        for _ in 0..1000 {
            // The two spawned writes are queued once the gauge says so.
            if db.metrics().queue_depth.get() == 2 {
                refused = Some(db.write(insert(4)).await);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let refused = refused.expect("the two writes were queued");
        assert!(
            matches!(refused, Err(ApiError::Overloaded { retry_after_s: 1 })),
            "{refused:?}"
        );
        assert_eq!(db.metrics().writes_refused.get(), 1);
        release.send(()).unwrap();
        blocking.await.unwrap().unwrap();
        for write in queued {
            write.await.unwrap().unwrap();
        }
        assert_eq!(count(&db), 3, "the refused write stored nothing");
    }

    #[test]
    fn a_refused_write_is_a_503_problem_with_retry_after() {
        use actix_web::ResponseError;
        let response = ApiError::Overloaded { retry_after_s: 1 }.error_response();
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(response.headers().get("retry-after").unwrap(), "1");
        assert_eq!(
            response.headers().get("content-type").unwrap(),
            "application/problem+json"
        );
    }

    /// PostgreSQL: a batch that stored events sends one `NOTIFY` on
    /// [`EVENTS_CHANNEL`](super::EVENTS_CHANNEL), heard by every instance's
    /// listener once it commits (with its events' insert, one statement); a
    /// batch without events sends none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_with_events_wakes_the_listeners_at_its_commit() {
        let (place, db) = fresh_on_the_suites_backend().await;
        let Place::Postgres { server, name } = &place else {
            eprintln!("skipped: PostgreSQL only (RELAIS_TEST_DATABASE_URL)");
            return;
        };
        let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
        let mut listener = diesel::PgConnection::establish(&format!("{base}/{name}")).unwrap();
        listener
            .batch_execute(&format!("LISTEN {}", super::EVENTS_CHANNEL))
            .unwrap();
        let heard = |listener: &mut diesel::PgConnection, wait: std::time::Duration| {
            let until = std::time::Instant::now() + wait;
            let mut channels = Vec::new();
            while channels.is_empty() && std::time::Instant::now() < until {
                channels.extend(listener.notifications_iter().map(|n| n.unwrap().channel));
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            channels
        };
        let now = chrono::Utc::now().naive_utc();
        db.write(move |conn| {
            crate::per_backend!(conn.conn(), |c| Fixed::new(
                "INSERT INTO users (id, email, full_name, role, active, token_version, \
                 notification_preference, created_at, updated_at) \
                 VALUES ('u1', 'u1@relais.test', 'U', 'gp', TRUE, 0, 'immediate', {}, {})"
            )
            .bind::<diesel::sql_types::Timestamp, _>(now)
            .bind::<diesel::sql_types::Timestamp, _>(now)
            .execute(c))?;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(
            heard(&mut listener, std::time::Duration::from_millis(300)),
            Vec::<String>::new(),
            "a batch without events"
        );
        db.write(move |tx| {
            tx.stage_events([crate::db::StagedEvent {
                user_id: "u1".into(),
                kind: "message.created",
                patient_id: None,
                data: "{}".into(),
                created_at: now,
            }]);
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(
            heard(&mut listener, std::time::Duration::from_secs(10)),
            vec![super::EVENTS_CHANNEL.to_owned()]
        );
        let mut conn = db.get().unwrap();
        let stored = diesel::sql_query("SELECT COUNT(*) AS n FROM events")
            .get_result::<Count>(&mut *conn)
            .unwrap()
            .n;
        assert_eq!(stored, 1);
    }

    #[tokio::test]
    async fn a_panicking_write_fails_its_batch_and_the_writer_goes_on() {
        let (_db_place, db) = fresh().await;
        let panicked = db
            .write(|conn| -> Result<(), ApiError> {
                diesel::sql_query("INSERT INTO t (id, v) VALUES (1, 'x')").execute(&mut **conn)?;
                panic!("a bug in a handler")
            })
            .await;
        assert!(panicked.is_err());
        assert_eq!(count(&db), 0, "nothing of the failed batch is kept");
        db.write(|conn| {
            Ok(diesel::sql_query("INSERT INTO t (id, v) VALUES (2, 'y')").execute(&mut **conn)?)
        })
        .await
        .unwrap();
        assert_eq!(count(&db), 1);
    }
}
