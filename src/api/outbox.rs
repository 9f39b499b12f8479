//! The email outbox as administrators see it: what waits, what failed and why.

use actix_web::web;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::Query;
use super::{Page, page_limit};
use crate::auth::AuthUser;
use crate::error::{ApiError, Problem};
use crate::notify::outbox;
use crate::state::AppState;

/// Delivery state of an outbox row.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutboxStatus {
    Pending,
    Sent,
}

/// An outbox row, without its body.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxItem {
    pub id: String,
    pub to_address: String,
    pub subject: String,
    pub status: OutboxStatus,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// Filters of the outbox list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxFilter {
    pub status: Option<OutboxStatus>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/email-outbox", tag = "operations",
    params(OutboxFilter),
    responses(
        (status = 200, body = Page<OutboxItem>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Lists outbox rows, oldest first (administrators).
pub async fn list_outbox(
    state: web::Data<AppState>,
    caller: AuthUser,
    Query(filter): Query<OutboxFilter>,
) -> Result<web::Json<Page<OutboxItem>>, ApiError> {
    caller.require_admin()?;
    let limit = page_limit(filter.limit)?;
    let page = state
        .db
        .read(move |conn| {
            let status = filter.status.map(|status| match status {
                OutboxStatus::Pending => outbox::PENDING,
                OutboxStatus::Sent => outbox::SENT,
            });
            let rows = outbox::page(conn, status, filter.cursor.as_deref(), limit + 1)?;
            Ok(Page::from_rows(rows, limit, |r| r.id.clone()))
        })
        .await?;
    Ok(web::Json(page.map(|row| OutboxItem {
        status: if row.status == outbox::SENT {
            OutboxStatus::Sent
        } else {
            OutboxStatus::Pending
        },
        id: row.id,
        to_address: row.to_address,
        subject: row.subject,
        attempts: row.attempts,
        next_attempt_at: row.next_attempt_at.and_utc(),
        last_error: row.last_error,
        created_at: row.created_at.and_utc(),
        sent_at: row.sent_at.map(|t| t.and_utc()),
    })))
}
