//! The audit trail: append-only rows in one SHA-256 hash chain.
//!
//! A write stages its rows on its transaction ([`append`] on a
//! [`Tx`]); the database writer chains them with the rest of its batch
//! just before the commit (`db::chain`). Reads and denials go through the
//! [`AuditWriter`] to the writer, which commits their rows with its next
//! batch and answers each request once its row is stored.
//!
//! The chain proves that no stored row was changed or removed from its
//! middle; [`anchor`] keeps signed checkpoints of its head outside the
//! database, so that rows removed from its end are seen too.

pub mod anchor;

use std::sync::Arc;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::clock::Clock;
pub use crate::db::chain::{AuditEvent, AuditRecord, ChainHead, Outcome, row_hash};
use crate::db::schema::{audit_events, audit_head};
use crate::db::{Db, DbConnection, Tx};
use crate::error::ApiError;

/// Adds records to the chain with the write `tx` is part of: they are
/// stored when it commits, and not at all if it rolls back.
pub fn append(
    tx: &mut Tx<'_>,
    records: &[AuditRecord],
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    tx.audit(records, now);
    Ok(())
}

/// What a reader of the trail narrows it to; all optional.
#[derive(Debug, Default, Clone)]
pub struct TrailFilter {
    pub actor_id: Option<String>,
    pub patient_id: Option<String>,
    pub outcome: Option<Outcome>,
    /// From this time on.
    pub from: Option<NaiveDateTime>,
    /// Before this time.
    pub to: Option<NaiveDateTime>,
    /// After this `seq`.
    pub after: Option<i64>,
}

/// Up to `rows` stored audit rows, oldest first, that match `filter`.
pub fn trail(
    conn: &mut DbConnection,
    filter: TrailFilter,
    rows: i64,
) -> QueryResult<Vec<AuditEvent>> {
    let mut query = audit_events::table
        .select(AuditEvent::as_select())
        .order(audit_events::seq)
        .limit(rows)
        .into_boxed();
    if let Some(actor) = filter.actor_id {
        query = query.filter(audit_events::actor_id.eq(actor));
    }
    if let Some(patient) = filter.patient_id {
        query = query.filter(audit_events::patient_id.eq(patient));
    }
    if let Some(outcome) = filter.outcome {
        query = query.filter(audit_events::outcome.eq(outcome.as_str()));
    }
    if let Some(from) = filter.from {
        query = query.filter(audit_events::at.ge(from));
    }
    if let Some(to) = filter.to {
        query = query.filter(audit_events::at.lt(to));
    }
    if let Some(after) = filter.after {
        query = query.filter(audit_events::seq.gt(after));
    }
    query.load(conn)
}

/// Audit records of their own (a read's, a denial's), sent straight to
/// the database writer, which commits them with its next batch.
#[derive(Clone)]
pub struct AuditWriter {
    db: Db,
    clock: Arc<dyn Clock>,
}

impl AuditWriter {
    pub fn new(db: Db, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    /// Stores records and returns once they are committed.
    pub async fn record_all(&self, records: Vec<AuditRecord>) -> Result<(), ApiError> {
        if records.is_empty() {
            return Ok(());
        }
        self.db.append_audit(records, self.clock.now_naive()).await
    }

    /// Stores one record and returns once it is committed.
    pub async fn record(&self, record: AuditRecord) -> Result<(), ApiError> {
        self.record_all(vec![record]).await
    }
}

/// The result of checking the chain.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every row links to the one before and the head names the last.
    Intact { rows: i64 },
    /// The first row that does not check out, and why.
    Broken { seq: i64, reason: String },
}

/// Walks the whole chain in order.
pub fn verify(conn: &mut DbConnection) -> QueryResult<Verdict> {
    verify_against(conn, &[])
}

/// Walks the whole chain in order, in one snapshot, and checks it against
/// checkpoints taken outside the database: each one's row must be in the
/// chain with the checkpoint's hash. One past the chain's end means rows
/// were removed from the end (and the head set back).
///
/// Read the checkpoints before calling this: a checkpoint is written after
/// its row commits, so any read before the snapshot names a row in it.
pub fn verify_against(
    conn: &mut DbConnection,
    checkpoints: &[anchor::Checkpoint],
) -> QueryResult<Verdict> {
    conn.transaction(|conn| {
        // One snapshot for every page and the head, so that rows committed
        // meanwhile (a live server) cannot look like a broken chain.
        if let DbConnection::Postgres(pg) = conn {
            use diesel::connection::{AnsiTransactionManager, TransactionManager};
            let outermost = AnsiTransactionManager::transaction_manager_status_mut(pg)
                .transaction_depth()?
                .is_some_and(|depth| depth.get() == 1);
            if outermost {
                diesel::connection::SimpleConnection::batch_execute(
                    pg,
                    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                )?;
            }
        }
        walk_chain(conn, checkpoints)
    })
}

fn walk_chain(conn: &mut DbConnection, checkpoints: &[anchor::Checkpoint]) -> QueryResult<Verdict> {
    const PAGE: i64 = 5000;
    let mut pending: Vec<&anchor::Checkpoint> = checkpoints.iter().collect();
    pending.sort_by_key(|c| c.seq);
    let mut next_checkpoint = 0usize;
    let mut expected_seq = 0i64;
    let mut prev = "0".repeat(64);
    loop {
        let page: Vec<AuditEvent> = audit_events::table
            .filter(audit_events::seq.gt(expected_seq))
            .order(audit_events::seq)
            .limit(PAGE)
            .select(AuditEvent::as_select())
            .load(conn)?;
        for event in &page {
            expected_seq += 1;
            if event.seq != expected_seq {
                return Ok(Verdict::Broken {
                    seq: expected_seq,
                    reason: format!("row {expected_seq} is missing (next is {})", event.seq),
                });
            }
            if event.prev_hash != prev {
                return Ok(Verdict::Broken {
                    seq: event.seq,
                    reason: "prev_hash does not match the previous row".into(),
                });
            }
            if row_hash(event) != event.hash {
                return Ok(Verdict::Broken {
                    seq: event.seq,
                    reason: "the row's content does not match its hash".into(),
                });
            }
            // Rows come in order from 1 and checkpoints name rows from 1:
            // each checkpoint is met at its row, unless it is past the end.
            while let Some(checkpoint) = pending.get(next_checkpoint)
                && checkpoint.seq == event.seq
            {
                if checkpoint.hash != event.hash {
                    return Ok(Verdict::Broken {
                        seq: event.seq,
                        reason: format!(
                            "the row's hash differs from its checkpoint of {}: \
                             the chain was rewritten up to here",
                            checkpoint.at.format("%Y-%m-%dT%H:%M:%SZ")
                        ),
                    });
                }
                next_checkpoint += 1;
            }
            prev = event.hash.clone();
        }
        if i64::try_from(page.len()).unwrap_or(0) < PAGE {
            break;
        }
    }
    let (head_seq, head_hash): (i64, String) = audit_head::table
        .find(1)
        .select((audit_head::seq, audit_head::hash))
        .first(conn)?;
    if head_seq != expected_seq || head_hash != prev {
        return Ok(Verdict::Broken {
            seq: head_seq.max(expected_seq),
            reason: format!(
                "the chain ends at row {expected_seq} but its head names row {head_seq}"
            ),
        });
    }
    if let Some(checkpoint) = pending.get(next_checkpoint) {
        return Ok(Verdict::Broken {
            seq: checkpoint.seq,
            reason: format!(
                "a checkpoint of {} names row {}, but the chain ends at row {expected_seq}: \
                 rows were removed from its end",
                checkpoint.at.format("%Y-%m-%dT%H:%M:%SZ"),
                checkpoint.seq
            ),
        });
    }
    Ok(Verdict::Intact { rows: expected_seq })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AuditEvent {
        AuditEvent {
            seq: 1,
            id: "id".into(),
            at: NaiveDateTime::parse_from_str("2026-11-25 10:00:00.123456", "%Y-%m-%d %H:%M:%S%.f")
                .unwrap(),
            actor_id: Some("u".into()),
            actor_role: Some("gp".into()),
            action: "GET /patients/{id}".into(),
            resource_type: "patient".into(),
            resource_id: Some("p".into()),
            patient_id: Some("p".into()),
            basis: Some("team".into()),
            outcome: "allowed".into(),
            request_id: None,
            prev_hash: "0".repeat(64),
            hash: String::new(),
            client_ip: None,
        }
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let base = row_hash(&event());
        type Change = Box<dyn Fn(&mut AuditEvent)>;
        let changes: Vec<Change> = vec![
            Box::new(|e| e.seq = 2),
            Box::new(|e| e.id = "other".into()),
            Box::new(|e| e.at += chrono::Duration::microseconds(1)),
            Box::new(|e| e.actor_id = None),
            Box::new(|e| e.actor_role = Some("nurse".into())),
            Box::new(|e| e.action = "PUT /patients/{id}".into()),
            Box::new(|e| e.resource_type = "care_team".into()),
            Box::new(|e| e.resource_id = Some("q".into())),
            Box::new(|e| e.patient_id = None),
            Box::new(|e| e.basis = Some("emergency".into())),
            Box::new(|e| e.outcome = "denied".into()),
            Box::new(|e| e.request_id = Some("r".into())),
            Box::new(|e| e.prev_hash = "1".repeat(64)),
            Box::new(|e| e.client_ip = Some("192.0.2.1".into())),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut e = event();
            change(&mut e);
            assert_ne!(row_hash(&e), base, "change {i} not covered");
        }
        // Field boundaries cannot be shifted to forge the same hash.
        let mut a = event();
        a.actor_id = Some("ab".into());
        a.actor_role = Some("c".into());
        let mut b = event();
        b.actor_id = Some("a".into());
        b.actor_role = Some("bc".into());
        assert_ne!(row_hash(&a), row_hash(&b));
    }

    #[test]
    fn rows_without_a_client_address_hash_as_before() {
        // Computed before `client_ip` existed: old chains still verify.
        assert_eq!(
            row_hash(&event()),
            "b197f1baec3ac17911ef00d8106bf0deddb8be5afe36e142d19290ce779ba84d"
        );
    }

    async fn migrated() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/a.db", dir.path().display());
        let db = Db::connect(&url, 2).unwrap();
        db.migrate().await.unwrap();
        (dir, db)
    }

    fn record(i: i64) -> AuditRecord {
        AuditRecord {
            actor_id: None,
            actor_role: None,
            action: "TEST".into(),
            resource_type: "t".into(),
            resource_id: Some(i.to_string()),
            patient_id: None,
            basis: None,
            outcome: Outcome::Allowed,
            request_id: None,
            client_ip: None,
        }
    }

    /// The resource ids of the audit chain, checking that it is intact.
    fn chained_ids(db: &Db) -> Vec<i64> {
        let mut conn = db.get().unwrap();
        let ids: Vec<Option<String>> = crate::db::schema::audit_events::table
            .select(crate::db::schema::audit_events::resource_id)
            .order(crate::db::schema::audit_events::seq)
            .load(&mut *conn)
            .unwrap();
        assert_eq!(
            verify(&mut conn).unwrap(),
            Verdict::Intact {
                rows: ids.len() as i64
            }
        );
        ids.iter()
            .map(|id| id.as_deref().unwrap().parse().unwrap())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn audit_records_of_their_own_commit_between_failing_writes() {
        let (_dir, db) = migrated().await;
        let jobs = (0..80i64).map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                if i % 2 == 1 {
                    // A read's record: no write of its own, no savepoint.
                    return db
                        .append_audit(vec![record(i)], chrono::Utc::now().naive_utc())
                        .await;
                }
                db.write(move |conn| {
                    append(conn, &[record(i)], chrono::Utc::now().naive_utc())?;
                    Err(ApiError::Gone(i.to_string()))
                })
                .await
            })
        });
        for (i, result) in futures_util::future::join_all(jobs)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(result.unwrap().is_ok(), i % 2 == 1, "job {i}");
        }
        let mut ids = chained_ids(&db);
        ids.sort_unstable();
        assert_eq!(ids, (0..40).map(|i| 2 * i + 1).collect::<Vec<i64>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn audit_rows_join_the_chain_with_their_write_only() {
        let (_dir, db) = migrated().await;
        let writes = (0..60i64).map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                db.write(move |conn| {
                    append(conn, &[record(i)], chrono::Utc::now().naive_utc())?;
                    if i % 2 == 0 {
                        return Err(ApiError::Gone(i.to_string()));
                    }
                    Ok(())
                })
                .await
            })
        });
        for (i, result) in futures_util::future::join_all(writes)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(result.unwrap().is_ok(), i % 2 == 1);
        }
        let ids = chained_ids(&db);
        assert_eq!(ids.len(), 30);
        assert!(ids.iter().all(|id| id % 2 == 1), "{ids:?}");
    }
}
