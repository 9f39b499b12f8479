//! Organisations of the network: practices, pharmacies, hospitals, centres.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Json, Query};
use super::scope::RequestInfo;
use super::users::optional_phone;
use super::{Page, page_limit};
use crate::audit::{self, Outcome};
use crate::auth::AuthUser;
use crate::db::models::{Organization, new_id};
use crate::domain::access::Basis;
use crate::domain::contact::parse_email;
use crate::domain::role::OrgKind;
use crate::domain::text::{self, Flavour};
use crate::error::{ApiError, FieldError, Problem};
use crate::state::AppState;
use crate::store::organization;

/// An organisation as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationView {
    pub id: String,
    pub name: String,
    pub kind: OrgKind,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<Organization> for OrganizationView {
    fn from(org: Organization) -> Self {
        Self {
            kind: org.kind,
            id: org.id,
            name: org.name,
            email: org.email,
            phone: org.phone,
            created_at: org.created_at.and_utc(),
        }
    }
}

/// A new organisation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganization {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    pub kind: OrgKind,
    /// The shared address (centres receive consultation alerts there).
    #[schema(max_length = 254)]
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// Filters of the organisation list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrganizationFilter {
    pub kind: Option<OrgKind>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/organizations", tag = "accounts",
    request_body = CreateOrganization,
    responses(
        (status = 201, body = OrganizationView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Creates an organisation (administrators).
pub async fn create_organization(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    Json(body): Json<CreateOrganization>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let mut errors = Vec::new();
    let name = text::required(
        &body.name,
        "name",
        Flavour::Name,
        text::ORGANIZATION_NAME_MAX,
    )
    .map_err(|e| errors.push(e))
    .ok();
    let email = match body
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        Some(raw) => parse_email(raw)
            .map_err(|m| errors.push(FieldError::new("email", m)))
            .ok(),
        None => None,
    };
    let phone = optional_phone(body.phone.as_deref(), &mut errors);
    let Some(name) = name.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let org = Organization {
        id: new_id(),
        name,
        kind: body.kind,
        email,
        phone,
        created_at: state.clock.now_naive(),
    };
    let org = state
        .db
        .write(move |conn| {
            organization::create(conn, &org)?;
            let record = info.record(
                &caller,
                "organization",
                Some(&org.id),
                None,
                Some(Basis::Admin),
                Outcome::Allowed,
            );
            audit::append(conn, &[record], org.created_at)?;
            Ok(org)
        })
        .await?;
    Ok(HttpResponse::Created().json(OrganizationView::from(org)))
}

#[utoipa::path(get, path = "/api/v1/organizations", tag = "accounts",
    params(OrganizationFilter),
    responses(
        (status = 200, body = Page<OrganizationView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Lists organisations, optionally of one kind (any signed-in user).
pub async fn list_organizations(
    state: web::Data<AppState>,
    _caller: AuthUser,
    Query(filter): Query<OrganizationFilter>,
) -> Result<web::Json<Page<OrganizationView>>, ApiError> {
    let limit = page_limit(filter.limit)?;
    let page = state
        .db
        .read(move |conn| {
            let rows = organization::page(conn, filter.kind, filter.cursor.as_deref(), limit + 1)?;
            Ok(Page::from_rows(rows, limit, |o| o.id.clone()))
        })
        .await?;
    Ok(web::Json(page.map(OrganizationView::from)))
}
