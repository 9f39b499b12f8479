//! Idempotency keys as stored: a creation claims its key in its own
//! transaction (a replay answers as the first time), and the scheduler
//! forgets keys after 24 h.

use actix_web::http::StatusCode;
use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConnection;
use crate::db::schema::idempotency_keys;
use crate::domain::messaging::{IDEMPOTENCY_TTL, KeyReuse, key_reuse};
use crate::error::ApiError;

/// The request header that carries the key (named in errors).
pub const HEADER: &str = "Idempotency-Key";

/// What the key says about this request.
#[derive(Debug)]
pub enum Claim {
    /// First use: go ahead (the answer is already stored, in this transaction).
    New,
    /// Seen before with the same request: answer this again.
    Replay { status: u16, body: String },
}

/// [`claim`] for a creation answered with 201 and `response`: on a replay,
/// returns [`ApiError::Replay`], which rolls the caller's transaction back so
/// that the first request's answer stands.
pub fn claim_creation(
    conn: &mut DbConnection,
    user_id: &str,
    key: &str,
    fingerprint: &str,
    response: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    match claim(
        conn,
        user_id,
        key,
        fingerprint,
        StatusCode::CREATED,
        response,
        now,
    )? {
        Claim::New => Ok(()),
        Claim::Replay { status, body } => Err(ApiError::Replay { status, body }),
    }
}

/// Claims `key` for `user_id` in the caller's transaction, storing the answer
/// that the request will give if it goes ahead. Concurrent first uses of one
/// key wait for each other on PostgreSQL and take turns on SQLite, so exactly
/// one goes ahead and the others replay it.
pub fn claim(
    conn: &mut DbConnection,
    user_id: &str,
    key: &str,
    fingerprint: &str,
    status: StatusCode,
    body: &str,
    now: NaiveDateTime,
) -> Result<Claim, ApiError> {
    // A key past its 24 h is forgotten, even before the scheduler purges it.
    diesel::delete(
        idempotency_keys::table
            .filter(idempotency_keys::user_id.eq(user_id))
            .filter(idempotency_keys::idem_key.eq(key))
            .filter(idempotency_keys::created_at.le(now - IDEMPOTENCY_TTL)),
    )
    .execute(conn)?;
    let insert = diesel::insert_into(idempotency_keys::table)
        .values((
            idempotency_keys::user_id.eq(user_id),
            idempotency_keys::idem_key.eq(key),
            idempotency_keys::fingerprint.eq(fingerprint),
            idempotency_keys::status.eq(i32::from(status.as_u16())),
            idempotency_keys::response.eq(body),
            idempotency_keys::created_at.eq(now),
        ))
        .on_conflict_do_nothing();
    let inserted = match conn {
        DbConnection::Postgres(pg) => insert.execute(pg)?,
        DbConnection::Sqlite(lite) => insert.execute(lite)?,
    };
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let (stored, status, body): (String, i32, String) = idempotency_keys::table
        .find((user_id, key))
        .select((
            idempotency_keys::fingerprint,
            idempotency_keys::status,
            idempotency_keys::response,
        ))
        .first(conn)?;
    match key_reuse(&stored, fingerprint) {
        KeyReuse::Replay => Ok(Claim::Replay {
            status: u16::try_from(status).unwrap_or(200),
            body,
        }),
        KeyReuse::Conflict => Err(ApiError::invalid(
            HEADER,
            "this key was already used for a different request in the last 24 hours; use a new key",
        )),
    }
}

/// Forgets every key older than 24 h; returns how many.
pub fn purge(conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<usize> {
    diesel::delete(
        idempotency_keys::table.filter(idempotency_keys::created_at.le(now - IDEMPOTENCY_TTL)),
    )
    .execute(conn)
}
