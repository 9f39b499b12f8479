//! The inbox: counts of what needs the caller now.

use actix_web::web;

use crate::auth::AuthUser;
use crate::domain::messaging::InboxCounts;
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use crate::store::messaging::inbox_counts;

#[utoipa::path(get, path = "/api/v1/inbox", tag = "messaging",
    responses(
        (status = 200, description = "Counts only; handovers and consultations join with their issues", body = InboxCounts),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// What needs the caller now: unread threads and notifications.
pub async fn get_inbox(
    state: web::Data<AppState>,
    caller: AuthUser,
) -> Result<web::Json<InboxCounts>, ApiError> {
    let now = state.clock.now();
    let counts = state
        .db
        .read(move |conn| Ok(inbox_counts(conn, &caller, now)?))
        .await?;
    Ok(web::Json(counts))
}
