//! The audit trail: append-only rows in one SHA-256 hash chain.
//!
//! Writes append their row in their own transaction ([`append`]). Reads and
//! denials go through the [`AuditWriter`] to the database writer, which
//! commits their rows with its next batch and answers each request once its
//! row is stored.
//!
//! The chain proves that no stored row was changed or removed from its
//! middle; [`anchor`] keeps signed checkpoints of its head outside the
//! database, so that rows removed from its end are seen too.

pub mod anchor;

use std::cell::RefCell;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::db::schema::{audit_events, audit_head};
use crate::db::{Db, DbConnection};
use crate::domain::access::Basis;
use crate::error::ApiError;

/// Whether the access was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Denied,
}

impl Outcome {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
        }
    }
}

/// One event to audit, before it joins the chain.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub actor_id: Option<String>,
    pub actor_role: Option<String>,
    /// Method and route pattern, e.g. `GET /patients/{id}`.
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub patient_id: Option<String>,
    pub basis: Option<Basis>,
    pub outcome: Outcome,
    pub request_id: Option<String>,
    /// The client's address (after trusted proxies), when known.
    pub client_ip: Option<String>,
}

/// A stored audit row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_events)]
pub struct AuditEvent {
    pub seq: i64,
    pub id: String,
    pub at: NaiveDateTime,
    pub actor_id: Option<String>,
    pub actor_role: Option<String>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub patient_id: Option<String>,
    pub basis: Option<String>,
    pub outcome: String,
    pub request_id: Option<String>,
    pub prev_hash: String,
    pub hash: String,
    pub client_ip: Option<String>,
}

/// The chain's last row: its seq and hash (what `audit_head` holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: String,
}

/// The hash of a row: SHA-256 over the previous hash and every other field.
/// `client_ip` came later: it is hashed as a last field only when present,
/// so rows without it (all the older ones) hash exactly as before.
pub fn row_hash(event: &AuditEvent) -> String {
    const SEP: &[u8] = b"\x1f";
    const NONE: &str = "\u{0}";
    let at = DateTime::<Utc>::from_naive_utc_and_offset(event.at, Utc)
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let seq = event.seq.to_string();
    let fields: [&str; 13] = [
        &event.prev_hash,
        &seq,
        &event.id,
        &at,
        event.actor_id.as_deref().unwrap_or(NONE),
        event.actor_role.as_deref().unwrap_or(NONE),
        &event.action,
        &event.resource_type,
        event.resource_id.as_deref().unwrap_or(NONE),
        event.patient_id.as_deref().unwrap_or(NONE),
        event.basis.as_deref().unwrap_or(NONE),
        &event.outcome,
        event.request_id.as_deref().unwrap_or(NONE),
    ];
    let mut hasher = Sha256::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            hasher.update(SEP);
        }
        hasher.update(field.as_bytes());
    }
    if let Some(ip) = &event.client_ip {
        hasher.update(SEP);
        hasher.update(ip.as_bytes());
    }
    hex::encode(hasher.finalize())
}

thread_local! {
    /// Records appended by the writes of the batch the database writer is
    /// running on this thread (see [`Deferral`]).
    static DEFERRED: RefCell<Option<Vec<(AuditRecord, NaiveDateTime)>>> =
        const { RefCell::new(None) };
}

/// The database writer's batch: while it lasts, [`append`] on this thread
/// collects records instead of writing them, and [`Deferral::finish`]
/// chains them all at once, in the batch's transaction, before it commits.
/// A write whose savepoint rolls back drops its records
/// ([`Deferral::rewind`]), so a row is in the chain exactly when the write it
/// audits is stored, as when each write appended its own. One batch then
/// locks and updates the chain's head once, not once per write.
pub struct Deferral(());

impl Deferral {
    /// Starts collecting on this thread.
    pub fn begin() -> Self {
        DEFERRED.with(|d| *d.borrow_mut() = Some(Vec::new()));
        Self(())
    }

    /// How many records are collected so far (a mark to rewind to).
    pub fn mark(&self) -> usize {
        DEFERRED.with(|d| d.borrow().as_ref().map_or(0, Vec::len))
    }

    /// Drops the records collected after `mark` (their write rolled back).
    pub fn rewind(&self, mark: usize) {
        DEFERRED.with(|d| {
            if let Some(records) = d.borrow_mut().as_mut() {
                records.truncate(mark);
            }
        });
    }

    /// Appends everything collected, in order, in `conn`'s transaction;
    /// returns the chain's new head (`None` when nothing was collected).
    pub fn finish(self, conn: &mut DbConnection) -> Result<Option<ChainHead>, ApiError> {
        let records = DEFERRED.with(|d| d.borrow_mut().take()).unwrap_or_default();
        write_chain(conn, &records)
    }
}

impl Drop for Deferral {
    fn drop(&mut self) {
        // A batch that failed or panicked leaves nothing behind.
        DEFERRED.with(|d| d.borrow_mut().take());
    }
}

/// Adds records to the batch the database writer is running on this
/// thread; gives them back when there is none.
pub fn defer(records: Vec<AuditRecord>, now: NaiveDateTime) -> Result<(), Vec<AuditRecord>> {
    DEFERRED.with(|d| match d.borrow_mut().as_mut() {
        Some(batch) => {
            batch.extend(records.into_iter().map(|r| (r, now)));
            Ok(())
        }
        None => Err(records),
    })
}

/// Appends records to the chain in the caller's transaction (inside a
/// database writer's batch: when the batch commits, see [`Deferral`]).
pub fn append(
    conn: &mut DbConnection,
    records: &[AuditRecord],
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    if records.is_empty() {
        return Ok(());
    }
    let deferred = DEFERRED.with(|d| match d.borrow_mut().as_mut() {
        Some(batch) => {
            batch.extend(records.iter().map(|r| (r.clone(), now)));
            true
        }
        None => false,
    });
    if deferred {
        return Ok(());
    }
    let stamped: Vec<(AuditRecord, NaiveDateTime)> =
        records.iter().map(|r| (r.clone(), now)).collect();
    write_chain(conn, &stamped).map(|_| ())
}

/// Chains and stores records, each with its time; returns the new head.
fn write_chain(
    conn: &mut DbConnection,
    records: &[(AuditRecord, NaiveDateTime)],
) -> Result<Option<ChainHead>, ApiError> {
    if records.is_empty() {
        return Ok(None);
    }
    let head = audit_head::table
        .find(1)
        .select((audit_head::seq, audit_head::hash));
    // The head row is the chain's lock: appends from other transactions (and
    // other instances) wait here, so the chain never forks.
    let (mut seq, mut prev): (i64, String) = match conn {
        DbConnection::Postgres(pg) => head.for_update().first(pg)?,
        DbConnection::Sqlite(lite) => head.first(lite)?,
    };
    let mut rows = Vec::with_capacity(records.len());
    for (record, at) in records {
        seq += 1;
        let mut event = AuditEvent {
            seq,
            id: uuid::Uuid::now_v7().to_string(),
            at: *at,
            actor_id: record.actor_id.clone(),
            actor_role: record.actor_role.clone(),
            action: record.action.clone(),
            resource_type: record.resource_type.clone(),
            resource_id: record.resource_id.clone(),
            patient_id: record.patient_id.clone(),
            basis: record.basis.map(|b| b.as_str().to_owned()),
            outcome: record.outcome.as_str().to_owned(),
            request_id: record.request_id.clone(),
            prev_hash: prev,
            hash: String::new(),
            client_ip: record.client_ip.clone(),
        };
        event.hash = row_hash(&event);
        prev = event.hash.clone();
        rows.push(event);
    }
    match conn {
        // One round trip per chunk (under the bound-parameter limit).
        DbConnection::Postgres(pg) => {
            for chunk in rows.chunks(500) {
                diesel::insert_into(audit_events::table)
                    .values(chunk)
                    .execute(pg)?;
            }
        }
        // No round trips to save: a one-row insert is prepared once per
        // connection, where a statement for n rows would be prepared anew
        // for every batch size.
        DbConnection::Sqlite(lite) => {
            for row in &rows {
                diesel::insert_into(audit_events::table)
                    .values(row)
                    .execute(lite)?;
            }
        }
    }
    // The head only moves forward, onto a stored row (a trigger checks it:
    // migration audit_anchor).
    diesel::update(audit_head::table.find(1))
        .set((audit_head::seq.eq(seq), audit_head::hash.eq(&prev)))
        .execute(conn)?;
    Ok(Some(ChainHead { seq, hash: prev }))
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
}
