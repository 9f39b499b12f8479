//! The OpenAPI document, built from the handlers' annotations.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::{
    access, audit_events, auth, care_plans, care_team, clinical, consultations, dispensations,
    events, fhir, handovers, health, inbox, interventions, me, mfa, notifications, observations,
    oidc, organizations, outbox, patients, threads, users, web_auth,
};

/// The API description served at `/api/v1/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Relais API", description = "Coordination of care around patients on opioid maintenance treatment in acute pain."),
    paths(
        health::live, health::ready, document,
        auth::login, auth::refresh, auth::logout, auth::accept_invitation,
        oidc::start, oidc::callback, oidc::exchange_token, web_auth::list_oidc_providers,
        me::get_me, me::update_me, me::change_password,
        mfa::begin_totp, mfa::confirm_totp, mfa::remove_totp,
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
        clinical::get_clinical_context, clinical::put_clinical_context,
        interventions::create_intervention, interventions::list_interventions,
        interventions::accept_intervention, interventions::refuse_intervention,
        interventions::intervention_metrics,
        dispensations::create_dispensation, dispensations::list_dispensations,
        handovers::create_handover, handovers::list_handovers, handovers::get_handover,
        handovers::acknowledge_handover, handovers::reconcile_handover,
        consultations::create_consultation, consultations::list_consultations, consultations::get_consultation,
        consultations::accept_consultation, consultations::answer_consultation, consultations::decline_consultation,
        consultations::close_consultation, consultations::cancel_consultation, consultations::apply_proposal,
        consultations::consultation_metrics,
        threads::list_threads, threads::list_messages, threads::post_message,
        threads::mark_thread_read, inbox::get_inbox,
        fhir::metadata, fhir::search_patients, fhir::read_patient, fhir::patient_everything,
        fhir::read_practitioner, fhir::read_practitioner_role, fhir::read_organization,
        fhir::search_care_teams, fhir::search_care_plans, fhir::read_care_plan,
        fhir::search_medication_requests, fhir::read_medication_request, fhir::search_consents,
        fhir::search_observations, fhir::search_communications, fhir::search_audit_events,
        fhir::post_bundle, fhir::read_care_team, fhir::read_consent, fhir::read_observation,
        fhir::read_audit_event, fhir::read_communication, fhir::search_service_requests,
        fhir::search_tasks, fhir::read_service_request, fhir::read_task,
        events::stream_events, events::create_stream_ticket,
    ),
    // Enums used only in query strings: utoipa does not collect them from `IntoParams`.
    components(schemas(
        audit_events::OutcomeFilter, consultations::ConsultationBox, handovers::HandoverBox,
        observations::ObservationKind,
    )),
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
    let json = JSON.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        refine(&mut doc);
        doc.to_string()
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .body(json.as_str())
}

/// The query parameters each operation documents, by (lower-case method,
/// path as registered): what [`super::hardening::known_query_parameters`]
/// accepts. `None` for an operation the document does not have. The table
/// is generated from the document and checked in ([`super::query_params`]),
/// so that no request has to build the document.
pub fn query_parameters(method: &str, path: &str) -> Option<&'static [&'static str]> {
    let table = super::query_params::QUERY_PARAMETERS;
    table
        .binary_search_by(|(p, m, _)| (*p, *m).cmp(&(path, method)))
        .ok()
        .map(|i| table[i].2)
}

/// Operations any client may call without a bearer token.
pub const PUBLIC_OPERATIONS: &[(&str, &str)] = &[
    ("get", "/api/v1/health/live"),
    ("get", "/api/v1/health/ready"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/refresh"),
    ("post", "/api/v1/auth/logout"),
    ("post", "/api/v1/auth/invitations/accept"),
    ("get", "/fhir/r4/metadata"),
    ("get", "/api/v1/auth/oidc/{provider}/start"),
    ("get", "/api/v1/auth/oidc/{provider}/callback"),
    ("post", "/api/v1/auth/oidc/token"),
    ("get", "/api/v1/auth/oidc/providers"),
];

/// Operations that never reach the database (and so never answer 503).
const WITHOUT_DATABASE: &[(&str, &str)] = &[
    ("get", "/api/v1/health/live"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/fhir/r4/metadata"),
];

fn problem_response(path: &str, description: &str) -> serde_json::Value {
    // The FHIR façade answers its errors as OperationOutcomes (`api::fhir::operation_outcomes`).
    if path.starts_with(super::fhir::FHIR_BASE) {
        return serde_json::json!({
            "description": description,
            "content": {crate::fhir::FHIR_JSON: {
                "schema": {"$ref": "#/components/schemas/OperationOutcome"}}},
        });
    }
    serde_json::json!({
        "description": description,
        "content": {"application/problem+json": {
            "schema": {"$ref": "#/components/schemas/Problem"}}},
    })
}

/// Adds what every operation shares and no handler annotation should have
/// to repeat: who may call it (`security: []` for the public ones), 400 for
/// a malformed request or an unknown query parameter, 401 behind the bearer
/// token, 429 from the `/auth` throttles, 503 when the database (or the
/// bounded password hashing) cannot take the request now.
fn common_answers(path: &str, method: &str, op: &mut serde_json::Value) {
    use serde_json::json;
    let public = PUBLIC_OPERATIONS.contains(&(method, path));
    if public {
        op["security"] = json!([]);
    }
    let responses = &mut op["responses"];
    if responses.get("400").is_none() {
        responses["400"] = problem_response(
            path,
            "Malformed request, or a query parameter this operation does not take (named in `errors`)",
        );
    }
    if !public && responses.get("401").is_none() {
        responses["401"] = problem_response(path, "No valid access token");
    }
    let retry_after = json!({"Retry-After": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 0}}});
    if path.starts_with("/api/v1/auth/") {
        if responses.get("429").is_none() {
            responses["429"] = problem_response(
                path,
                "Too many requests from this address or for this account",
            );
        }
        responses["429"]["headers"] = retry_after;
    }
    if !WITHOUT_DATABASE.contains(&(method, path)) && responses.get("503").is_none() {
        responses["503"] = problem_response(
            path,
            "The database (or the password hashing) cannot take the request now; retry later",
        );
    }
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
                // No badge fetched from an outside validator (the page's CSP
                // would refuse it anyway).
                .validator_url("none")
                .persist_authorization(true)
                .try_it_out_enabled(true),
        ),
    );
}

/// Which text rule each text property of a request follows (see
/// [`crate::domain::text`]): the document states it as a pattern, so that a
/// generated client refuses what the server would.
pub const NAMES: &[(&str, &str)] = &[
    ("CreatePatient", "family_name"),
    ("CreatePatient", "given_names"),
    ("UpdatePatient", "family_name"),
    ("UpdatePatient", "given_names"),
    ("CreateOrganization", "name"),
    ("CreateUser", "full_name"),
    ("UpdateUser", "full_name"),
    ("UpdateMe", "full_name"),
];

/// Required free text (something left once trimmed).
pub const REQUIRED_FREE_TEXT: &[(&str, &str)] = &[
    ("NewHandover", "summary"),
    ("NewConsultation", "question"),
    ("Answer", "answer"),
    ("Decline", "reason"),
    ("NewMessage", "body"),
    ("PlanWrite", "change_summary"),
    ("TemporaryAdjustment", "reason"),
];

/// Required free text of at least ten characters once trimmed.
pub const REASONS: &[(&str, &str)] = &[
    ("ReasonBody", "reason"),
    ("Acknowledgement", "justification"),
];

/// Optional free text (empty means none).
pub const OPTIONAL_FREE_TEXT: &[(&str, &str)] = &[
    ("NewHandover", "follow_up"),
    ("Reconcile", "comment"),
    ("RecordConsent", "note"),
    ("NewObservation", "note"),
    ("AnalgesicLine", "note"),
    ("PlanContent", "pain_goal"),
    ("PlanContent", "non_drug_measures"),
    ("PlanWrite", "pain_goal"),
    ("PlanWrite", "non_drug_measures"),
];

fn text_patterns(schemas: &mut serde_json::Value) {
    use crate::domain::text;
    let reason = {
        // Ten characters from the first to the last that is not white space.
        let refused = text::free_refused_class();
        format!("^[^{refused}]*[^\\s{refused}][^{refused}]{{8,}}[^\\s{refused}][^{refused}]*$")
    };
    let rules = [
        (NAMES, text::name_pattern()),
        (REQUIRED_FREE_TEXT, text::free_text_pattern()),
        (REASONS, reason),
        (OPTIONAL_FREE_TEXT, text::optional_free_text_pattern()),
    ];
    for (fields, pattern) in rules {
        for (schema, property) in fields {
            let slot = &mut schemas[*schema]["properties"][*property];
            // A table naming a property the document lacks is a bug (the
            // OpenAPI test checks that every entry names a string).
            if slot.is_object() {
                slot["pattern"] = serde_json::json!(pattern);
            }
        }
    }
}

/// White space as Rust's `str::trim` sees it (Unicode `White_Space`), as a
/// regular-expression class; `\s` differs between regex dialects.
const WS: &str = r"[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";

/// Adds to the generated document the rules utoipa's attributes cannot
/// express, so that a request valid against the document passes the
/// handler's checks too.
fn refine(doc: &mut serde_json::Value) {
    use serde_json::json;
    // A query string or a header cannot carry JSON `null`: an optional
    // parameter is absent, not null.
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, operation) in paths.iter_mut() {
            let Some(operation) = operation.as_object_mut() else {
                continue;
            };
            for (method, op) in operation.iter_mut() {
                common_answers(path, method, op);
                // OpenAPI requires a description on every response.
                // Any body over `server.max_body_bytes` is refused before the handler runs.
                if op.get("requestBody").is_some() {
                    op["responses"]["413"] =
                        problem_response(path, "The body is larger than the server accepts");
                }
                let responses = op.get_mut("responses").and_then(|r| r.as_object_mut());
                for (status, response) in responses.into_iter().flatten() {
                    if response.get("description").is_none_or(|d| d == "") {
                        let reason = status
                            .parse::<u16>()
                            .ok()
                            .and_then(|s| actix_web::http::StatusCode::from_u16(s).ok())
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or("Response");
                        response["description"] = json!(reason);
                    }
                }
                let params = op.get_mut("parameters").and_then(|p| p.as_array_mut());
                for param in params.into_iter().flatten() {
                    if let Some(types) = param["schema"]["type"].as_array() {
                        let kept: Vec<_> = types.iter().filter(|t| *t != "null").cloned().collect();
                        param["schema"]["type"] = match kept.as_slice() {
                            [one] => one.clone(),
                            _ => json!(kept),
                        };
                    }
                }
            }
        }
    }
    refresh_cookie_option(doc);
    let schemas = &mut doc["components"]["schemas"];
    text_patterns(schemas);
    // A plan change's sides are whatever changed: a number, a line, a schedule.
    for side in ["before", "after"] {
        schemas["Change"]["properties"][side] =
            json!({"description": "The value before (or after) the change; null when absent"});
    }
    // Phone numbers in requests (`parse_phone`): 6 to 20 digits and + . - ( ) or
    // spaces, at most 30 characters; surrounding white space is trimmed and an
    // empty string means none.
    for schema in schemas
        .as_object_mut()
        .into_iter()
        .flat_map(|s| s.values_mut())
    {
        if schema["additionalProperties"] == json!(false)
            && schema["properties"]["phone"].is_object()
        {
            let phone = &mut schema["properties"]["phone"];
            phone["maxLength"] = json!(30);
            phone["pattern"] = json!(format!("^{WS}*([ +.()-]*([0-9][ +.()-]*){{6,20}})?{WS}*$"));
        }
    }
    // An observation carries at least one measure.
    schemas["NewObservation"]["anyOf"] = json!([
        {"required": ["pain_score"], "properties": {"pain_score": {"type": "integer"}}},
        {"required": ["sedation_score"], "properties": {"sedation_score": {"type": "integer"}}},
        {"required": ["cows_score"], "properties": {"cows_score": {"type": "integer"}}},
        {"required": ["dose_dispensed_mg"], "properties": {"dose_dispensed_mg": {"type": "number"}}},
    ]);
    // A drug is a code of the built-in catalogue; a line gives its
    // frequency one way, not both.
    let codes: Vec<&str> = crate::domain::drugs::CATALOGUE
        .iter()
        .map(|d| d.code)
        .collect();
    let line = &mut schemas["AnalgesicLine"];
    line["properties"]["drug"]["enum"] = json!(codes);
    line["anyOf"] = json!([
        {"required": ["times_per_day"],
         "properties": {"times_per_day": {"type": "integer"}, "interval_h": {"type": "null"}}},
        {"required": ["interval_h"],
         "properties": {"interval_h": {"type": "integer"}, "times_per_day": {"type": "null"}}},
    ]);
    // An OMT has a dose and a schedule; `none` has nothing to adjust.
    schemas["Omt"]["anyOf"] = json!([
        {"properties": {"medication": {"const": "none"}, "temporary_adjustment": {"type": "null"}}},
        {"required": ["daily_dose_mg", "doses_per_day"],
         "properties": {
            "medication": {"enum": ["methadone", "buprenorphine", "buprenorphine_naloxone"]},
            "daily_dose_mg": {"type": "number"},
            "doses_per_day": {"type": "integer"}}},
    ]);
    // `accept` takes the proposal as it is, `amend` brings the plan, `reject` says why.
    schemas["Reconcile"]["anyOf"] = json!([
        {"properties": {"decision": {"const": "accept"}, "plan": {"type": "null"}}},
        {"required": ["plan"],
         "properties": {"decision": {"const": "amend"}, "plan": {"type": "object"}}},
        {"required": ["comment"],
         "properties": {"decision": {"const": "reject"}, "plan": {"type": "null"},
                        "comment": {"type": "string", "pattern": "\\S"}}},
    ]);
}

/// Documents the browser option of the sign-in routes (`api::web_auth`):
/// the header that moves the refresh token into an `HttpOnly` cookie.
fn refresh_cookie_option(doc: &mut serde_json::Value) {
    use super::web_auth::{COOKIE_PATH, MODE_COOKIE, MODE_HEADER, REFRESH_COOKIE};
    use serde_json::json;
    let routes = [
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/oidc/token",
        "/api/v1/auth/invitations/accept",
    ];
    // Logout honours the same header (an empty body then revokes the
    // cookie's session and clears it); it is described, not listed as a
    // parameter, so that the document keeps its body required for clients
    // that send the token.
    let logout = &mut doc["paths"]["/api/v1/auth/logout"]["post"];
    if logout.is_object() {
        let text = logout["description"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        logout["description"] = json!(format!(
            "{text}\n\nBrowsers: with the header `{MODE_HEADER}: {MODE_COOKIE}` and an empty body, \
             the session of the `{REFRESH_COOKIE}` cookie is revoked and the cookie cleared."
        ));
    }
    for path in routes {
        let op = &mut doc["paths"][path]["post"];
        if !op.is_object() {
            continue;
        }
        let param = json!({
            "name": MODE_HEADER,
            "in": "header",
            "required": false,
            "description": format!(
                "`{MODE_COOKIE}`: for browsers. A 200 answer sets the refresh token as the cookie \
                 `{REFRESH_COOKIE}` (HttpOnly, SameSite=Strict, Path={COOKIE_PATH}, Secure unless the \
                 server's public URL is plain HTTP on loopback) instead of `refresh_token` in the body. \
                 On /auth/refresh and /auth/logout an empty body then uses that cookie (the header is \
                 required to use it: it is the CSRF guard); logout and a refused refresh clear it."
            ),
            "schema": {"type": "string", "enum": [MODE_COOKIE]},
        });
        match op["parameters"].as_array_mut() {
            Some(params) => params.push(param),
            None => op["parameters"] = json!([param]),
        }
        // With the header, refresh takes an empty body.
        if path.ends_with("/refresh")
            && let Some(body) = op.get_mut("requestBody")
        {
            body["required"] = json!(false);
        }
        if let Some(ok) = op["responses"].get_mut("200") {
            ok["headers"]["Set-Cookie"] = json!({
                "description": format!("With `{MODE_HEADER}: {MODE_COOKIE}`: the refresh token cookie; the body then has no `refresh_token`"),
                "schema": {"type": "string"},
            });
        }
    }
}
