//! The caller's in-app notifications.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Query, path_id};
use super::{Page, page_limit};
use crate::auth::AuthUser;
use crate::error::{ApiError, Problem};
use crate::notify::inapp::NotificationKind;
use crate::state::AppState;
use crate::store::notification::{self, visible};

/// A notification: what happened and where to look; no clinical content.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    pub id: String,
    pub kind: NotificationKind,
    pub resource_type: String,
    pub resource_id: String,
    pub patient_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

/// Filters of the notification list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationFilter {
    /// `true`: unread ones only.
    pub unread: Option<bool>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications",
    params(NotificationFilter),
    responses(
        (status = 200, description = "Newest first", body = Page<NotificationView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// The caller's notifications.
pub async fn list_notifications(
    state: web::Data<AppState>,
    caller: AuthUser,
    Query(filter): Query<NotificationFilter>,
) -> Result<web::Json<Page<NotificationView>>, ApiError> {
    let limit = page_limit(filter.limit)?;
    let now = state.clock.now();
    let page = state
        .db
        .read(move |conn| {
            let rows = notification::newest(
                conn,
                &caller.id,
                filter.unread == Some(true),
                filter.cursor.as_deref(),
                limit + 1,
            )?;
            let rows = Page::from_rows(rows, limit, |r| r.0.clone());
            let mut items = Vec::with_capacity(rows.items.len());
            for row in rows.items {
                if visible(conn, &caller, row.1, row.4.as_deref(), now)? {
                    items.push(row);
                }
            }
            Ok(Page {
                items,
                next_cursor: rows.next_cursor,
            })
        })
        .await?;
    Ok(web::Json(page.map(
        |(id, kind, resource_type, resource_id, patient_id, created_at, read_at)| {
            NotificationView {
                id,
                kind,
                resource_type,
                resource_id,
                patient_id,
                created_at: created_at.and_utc(),
                read_at: read_at.map(|t| t.and_utc()),
            }
        },
    )))
}

#[utoipa::path(post, path = "/api/v1/notifications/{id}/read", tag = "notifications",
    params(("id" = uuid::Uuid, Path, description = "Notification id")),
    responses(
        (status = 204, description = "Marked read (again is harmless)"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not one of the caller's notifications", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Marks one of the caller's notifications read.
pub async fn read_notification(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id, "id")?;
    let now = state.clock.now();
    state
        .db
        .write(move |conn| notification::mark_read(conn, &caller, &id, now))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
