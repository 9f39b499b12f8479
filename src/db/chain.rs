//! The audit chain as stored: the rows, their hash, the head, and the
//! append that links new rows to it. The writer thread chains the records
//! a batch's writes staged (see [`super::Tx::audit`]) just before it
//! commits; `crate::audit` builds the records, reads and verifies the chain
//! and anchors its head outside the database.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use sha2::{Digest, Sha256};

use super::schema::{audit_events, audit_head};
use super::{DbConnection, Fixed};
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

/// Chains and stores records, each with its time, in `conn`'s
/// transaction; returns the new head. A tool writing outside the server may
/// call it directly (the head row's lock keeps the chain whole); the writer
/// thread locks the head first ([`lock_head`]) and appends with [`append`].
pub fn write_chain(
    conn: &mut DbConnection,
    records: &[(AuditRecord, NaiveDateTime)],
) -> Result<Option<ChainHead>, ApiError> {
    if records.is_empty() {
        return Ok(None);
    }
    let head = lock_head(conn)?;
    append(conn, head, records)
}

/// Reads the chain's head, locking its row on PostgreSQL until the
/// transaction ends. The head row is the chain's lock: appends from other
/// transactions (and other instances) wait here, so the chain never forks.
///
/// The writer thread takes it as the first statement of every batch on
/// PostgreSQL, before any job locks a row. Every write transaction of every
/// instance then holds the head before anything else, so no two of them can
/// wait on each other in a cycle: locking the head last (when the chain is
/// written, or when an event is emitted mid-batch) let a batch hold a
/// thread's row while waiting for the head that another instance's batch
/// held while waiting for that row — a deadlock, and a 500.
pub fn lock_head(conn: &mut DbConnection) -> QueryResult<ChainHead> {
    let head = audit_head::table
        .find(1)
        .select((audit_head::seq, audit_head::hash));
    let (seq, hash): (i64, String) = match conn {
        DbConnection::Postgres(pg) => head.for_update().first(pg)?,
        DbConnection::Sqlite(lite) => head.first(lite)?,
    };
    Ok(ChainHead { seq, hash })
}

/// Chains `records` onto `head`, which this transaction read with
/// [`lock_head`] and still holds; returns the new head.
pub fn append(
    conn: &mut DbConnection,
    head: ChainHead,
    records: &[(AuditRecord, NaiveDateTime)],
) -> Result<Option<ChainHead>, ApiError> {
    if records.is_empty() {
        return Ok(None);
    }
    let ChainHead {
        mut seq,
        hash: mut prev,
    } = head;
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
        // One statement of fixed text whatever the number of rows (each
        // column an array): parsed and planned once per connection, where
        // a multi-row VALUES list would be parsed anew for every batch.
        DbConnection::Postgres(pg) => {
            insert_rows_pg(pg, &rows)?;
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
    crate::per_backend!(conn, |c| {
        Fixed::new("UPDATE audit_head SET seq = {}, hash = {} WHERE id = 1")
            .bind::<BigInt, _>(seq)
            .bind::<Text, _>(&prev)
            .execute(c)
    })?;
    Ok(Some(ChainHead { seq, hash: prev }))
}

/// [`append`]'s insert on PostgreSQL: the rows' columns as arrays.
const PG_INSERT_ROWS: &str = "\
    INSERT INTO audit_events (seq, id, at, actor_id, actor_role, action, resource_type, \
        resource_id, patient_id, basis, outcome, request_id, prev_hash, hash, client_ip) \
    SELECT * FROM unnest({}::int8[], {}::text[], {}::timestamp[], {}::text[], {}::text[], \
        {}::text[], {}::text[], {}::text[], {}::text[], {}::text[], {}::text[], \
        {}::text[], {}::text[], {}::text[], {}::text[])";

fn insert_rows_pg(pg: &mut diesel::PgConnection, rows: &[AuditEvent]) -> QueryResult<usize> {
    use diesel::sql_types::{Array, Nullable, Timestamp};
    fn column<T>(rows: &[AuditEvent], f: impl Fn(&AuditEvent) -> T) -> Vec<T> {
        rows.iter().map(f).collect()
    }
    fn text(rows: &[AuditEvent], f: fn(&AuditEvent) -> &String) -> Vec<&str> {
        rows.iter().map(|r| f(r).as_str()).collect()
    }
    fn maybe(rows: &[AuditEvent], f: fn(&AuditEvent) -> &Option<String>) -> Vec<Option<&str>> {
        rows.iter().map(|r| f(r).as_deref()).collect()
    }
    Fixed::new(PG_INSERT_ROWS)
        .bind::<Array<BigInt>, _>(column(rows, |r| r.seq))
        .bind::<Array<Text>, _>(text(rows, |r| &r.id))
        .bind::<Array<Timestamp>, _>(column(rows, |r| r.at))
        .bind::<Array<Nullable<Text>>, _>(maybe(rows, |r| &r.actor_id))
        .bind::<Array<Nullable<Text>>, _>(maybe(rows, |r| &r.actor_role))
        .bind::<Array<Text>, _>(text(rows, |r| &r.action))
        .bind::<Array<Text>, _>(text(rows, |r| &r.resource_type))
        .bind::<Array<Nullable<Text>>, _>(maybe(rows, |r| &r.resource_id))
        .bind::<Array<Nullable<Text>>, _>(maybe(rows, |r| &r.patient_id))
        .bind::<Array<Nullable<Text>>, _>(maybe(rows, |r| &r.basis))
        .bind::<Array<Text>, _>(text(rows, |r| &r.outcome))
        .bind::<Array<Nullable<Text>>, _>(maybe(rows, |r| &r.request_id))
        .bind::<Array<Text>, _>(text(rows, |r| &r.prev_hash))
        .bind::<Array<Text>, _>(text(rows, |r| &r.hash))
        .bind::<Array<Nullable<Text>>, _>(maybe(rows, |r| &r.client_ip))
        .execute(pg)
}

/// The last head the database writer committed, for the audit anchor
/// (`audit::anchor`) to checkpoint outside the database.
#[derive(Default)]
pub struct CommittedHead {
    slot: Mutex<Slot>,
    changed: Condvar,
}

#[derive(Default)]
struct Slot {
    head: Option<ChainHead>,
    /// The anchor is asked to write what is left and stop.
    stopping: bool,
}

impl CommittedHead {
    /// Records a committed head (the writer thread, after each commit that
    /// appended rows): a store and a wake-up, nothing that waits on a disk.
    pub fn publish(&self, head: ChainHead) {
        let mut slot = self.lock();
        // Keep the furthest: on one connection heads come in order anyway.
        if slot.head.as_ref().is_none_or(|h| h.seq < head.seq) {
            slot.head = Some(head);
        }
        drop(slot);
        self.changed.notify_one();
    }

    /// The last head recorded (tests).
    pub fn latest(&self) -> Option<ChainHead> {
        self.lock().head.clone()
    }

    /// Asks the anchor to write the last head and stop (also when the
    /// writer thread ends).
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        // The slot holds plain values: a panic elsewhere cannot leave it torn.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a head past `written`, or for the stop; returns the head
    /// (if any) and whether to stop.
    pub fn wait_past(&self, written: i64) -> (Option<ChainHead>, bool) {
        let mut slot = self.lock();
        loop {
            let newer = slot.head.as_ref().filter(|h| h.seq > written).cloned();
            if newer.is_some() || slot.stopping {
                return (newer, slot.stopping);
            }
            slot = self
                .changed
                .wait(slot)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits `interval`, or less when asked to stop.
    pub fn wait_stopping(&self, interval: Duration) {
        let until = Instant::now() + interval;
        let mut slot = self.lock();
        while !slot.stopping {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            slot = self
                .changed
                .wait_timeout(slot, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}
