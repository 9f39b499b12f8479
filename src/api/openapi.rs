//! The OpenAPI document, built from the handlers' annotations.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::{
    access, audit_events, auth, care_plans, care_team, consultations, handovers, health, inbox, me,
    notifications, observations, organizations, outbox, patients, threads, users,
};

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
        patients::create_patient, patients::list_patients, patients::lookup_patient,
        patients::get_patient, patients::update_patient, patients::get_consent, patients::put_consent,
        care_team::list_care_team, care_team::add_care_team_member, care_team::remove_care_team_member,
        access::create_access_request, access::list_access_requests,
        access::approve_access_request, access::deny_access_request, access::emergency_access,
        audit_events::list_patient_audit_events, audit_events::list_audit_events,
        notifications::list_notifications, notifications::read_notification,
        care_plans::get_care_plan, care_plans::put_care_plan, care_plans::list_care_plan_versions,
        care_plans::get_care_plan_version, care_plans::get_analgesic_plan, care_plans::check_care_plan,
        care_plans::list_drugs, observations::create_observation, observations::list_observations,
        handovers::create_handover, handovers::list_handovers, handovers::get_handover,
        handovers::acknowledge_handover, handovers::reconcile_handover,
        consultations::create_consultation, consultations::list_consultations, consultations::get_consultation,
        consultations::accept_consultation, consultations::answer_consultation, consultations::decline_consultation,
        consultations::close_consultation, consultations::cancel_consultation, consultations::apply_proposal,
        consultations::consultation_metrics,
        threads::list_threads, threads::list_messages, threads::post_message,
        threads::mark_thread_read, inbox::get_inbox,
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

/// Where Swagger UI is served.
pub const DOCS_PATH: &str = "/docs";

/// Swagger UI at `/docs/`, from the assets compiled into the binary (the
/// `vendored` feature: nothing is fetched at build or run time). It reads the
/// document from `/api/v1/openapi.json`, so it registers no route of its own
/// for it. These are pages for people, not API routes: they stay out of
/// [`super::ROUTES`] and so out of the OpenAPI document and the
/// authorisation matrix.
pub fn configure_docs(cfg: &mut actix_web::web::ServiceConfig) {
    cfg.route(
        DOCS_PATH,
        actix_web::web::get().to(|| async {
            HttpResponse::PermanentRedirect()
                .insert_header((actix_web::http::header::LOCATION, "/docs/"))
                .finish()
        }),
    )
    .service(
        SwaggerUi::new("/docs/{_:.*}").config(
            Config::from("/api/v1/openapi.json")
                .persist_authorization(true)
                .try_it_out_enabled(true),
        ),
    );
}
