//! Liveness and readiness probes.

use actix_web::web;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, Problem};
use crate::state::AppState;

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when answered with 200.
    pub status: String,
}

#[utoipa::path(get, path = "/api/v1/health/live", tag = "operations",
    responses((status = 200, body = Health)))]
/// The process is up.
pub async fn live() -> web::Json<Health> {
    web::Json(Health {
        status: "ok".into(),
    })
}

#[utoipa::path(get, path = "/api/v1/health/ready", tag = "operations",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "The database does not answer", body = Problem, content_type = "application/problem+json"),
    ))]
/// The process can reach its database.
pub async fn ready(state: web::Data<AppState>) -> Result<web::Json<Health>, ApiError> {
    state
        .db
        .read(|conn| {
            crate::store::ping(conn)
                .map_err(|_| ApiError::Unavailable("the database does not answer".into()))
        })
        .await
        .map_err(|_| ApiError::Unavailable("the database does not answer".into()))?;
    Ok(web::Json(Health {
        status: "ok".into(),
    }))
}
