//! The OpenAPI document, built from the handlers' annotations.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{auth, health, me, organizations, outbox, users};

/// The API description served at `/api/v1/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Relais API", description = "Coordination of care around patients on opioid maintenance treatment in acute pain."),
    paths(
        health::live, health::ready, document,
        auth::login, auth::refresh, auth::logout, auth::accept_invitation,
        me::get_me, me::update_me, me::change_password,
        organizations::create_organization, organizations::list_organizations,
        users::create_user, users::list_users, users::update_user,
        outbox::list_outbox,
    ),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("JWT".into());
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "This document")))]
/// The OpenAPI document.
pub async fn document() -> HttpResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let json = JSON.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_default());
    HttpResponse::Ok()
        .content_type("application/json")
        .body(json.as_str())
}
