//! The HTTP API: every route registered in one place.

pub mod access;
pub mod audit_events;
pub mod auth;
pub mod authn;
pub mod care_plans;
pub mod care_team;
pub mod clinical;
pub mod consultations;
pub mod dispensations;
pub mod events;
pub mod extract;
pub mod fhir;
pub mod handovers;
pub mod hardening;
pub mod health;
pub mod idempotency;
pub mod inbox;
pub mod interventions;
pub mod me;
pub mod metrics;
pub mod mfa;
pub mod notifications;
pub mod observations;
pub mod oidc;
pub mod openapi;
pub mod organizations;
pub mod outbox;
pub mod patients;
pub mod query_params;
pub mod rfc3339;
pub mod scope;
pub mod threads;
pub mod users;
pub mod versioned;
pub mod web_auth;
pub mod web_client;

use actix_web::web;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The base path of every API route.
pub const BASE: &str = "/api/v1";

/// The pattern of a registered route, kept on its resource by `routes!`.
#[derive(Debug, Clone, Copy)]
pub struct RoutePattern(pub &'static str);

/// The pattern of the route that served `req`, once routed (`None` before,
/// or when no route matched). Read off the resource, where
/// `HttpRequest::match_pattern` would match the path against the resources
/// again, one by one (~38 k instructions for a patient's route, callgrind).
pub fn route_pattern(req: &actix_web::HttpRequest) -> Option<std::borrow::Cow<'static, str>> {
    match req.app_data::<RoutePattern>() {
        Some(pattern) => Some(std::borrow::Cow::Borrowed(pattern.0)),
        None => req.match_pattern().map(std::borrow::Cow::Owned),
    }
}

/// Declares the routes once: registers them and lists them for the tests
/// (authorisation matrix, OpenAPI coverage).
macro_rules! routes {
    ($( $scope:literal => [ $( $path:literal => { $($method:ident => $handler:path),+ $(,)? } ),* $(,)? ] ),* $(,)?) => {
        /// Registers every route: the REST API under [`BASE`], the FHIR
        /// façade under [`fhir::FHIR_BASE`].
        pub fn configure(cfg: &mut web::ServiceConfig) {
            $(
                cfg.service(
                    web::scope($scope)
                        $( .service(
                            web::resource($path)
                                .app_data(RoutePattern(concat!($scope, $path)))
                                $( .route(web::$method().to($handler)) )+
                        ) )*
                );
            )*
        }

        /// Every registered route as (method, full path). Swagger UI
        /// (`/docs`, see [`openapi::configure_docs`]) is deliberately not
        /// here: it is a page for people, not part of the API, the document
        /// or the authorisation matrix.
        pub const ROUTES: &[(&str, &str)] = &[
            $( $( $( (stringify!($method), concat!($scope, $path)), )+ )* )*
        ];
    };
}

routes! {
    "/api/v1" => [
    "/health/live" => { get => health::live },
    "/health/ready" => { get => health::ready },
    "/openapi.json" => { get => openapi::document },

    "/auth/login" => { post => auth::login },
    "/auth/refresh" => { post => auth::refresh },
    "/auth/logout" => { post => auth::logout },
    "/auth/invitations/accept" => { post => auth::accept_invitation },
    "/auth/oidc/{provider}/start" => { get => oidc::start },
    "/auth/oidc/{provider}/callback" => { get => oidc::callback },
    "/auth/oidc/token" => { post => oidc::exchange_token },
    "/auth/oidc/providers" => { get => web_auth::list_oidc_providers },

    "/me" => { get => me::get_me, patch => me::update_me },
    "/me/password" => { post => me::change_password },
    "/me/mfa/totp" => { post => mfa::begin_totp, delete => mfa::remove_totp },
    "/me/mfa/totp/confirm" => { post => mfa::confirm_totp },

    "/organizations" => { post => organizations::create_organization, get => organizations::list_organizations },
    "/users" => { post => users::create_user, get => users::list_users },
    "/users/{id}" => { patch => users::update_user },

    "/email-outbox" => { get => outbox::list_outbox },

    "/patients" => { post => patients::create_patient, get => patients::list_patients },
    "/patients/lookup" => { get => patients::lookup_patient },
    "/patients/{id}" => { get => patients::get_patient, patch => patients::update_patient },
    "/patients/{id}/consent" => { get => patients::get_consent, put => patients::put_consent },
    "/patients/{id}/care-team" => { get => care_team::list_care_team, post => care_team::add_care_team_member },
    "/patients/{id}/care-team/{user_id}" => { delete => care_team::remove_care_team_member },
    "/patients/{id}/access-requests" => { post => access::create_access_request, get => access::list_access_requests },
    "/access-requests/{id}/approve" => { post => access::approve_access_request },
    "/access-requests/{id}/deny" => { post => access::deny_access_request },
    "/patients/{id}/emergency-access" => { post => access::emergency_access },
    "/patients/{id}/audit-events" => { get => audit_events::list_patient_audit_events },
    "/audit-events" => { get => audit_events::list_audit_events },

    "/patients/{id}/care-plan" => { get => care_plans::get_care_plan, put => care_plans::put_care_plan },
    "/patients/{id}/care-plan/versions" => { get => care_plans::list_care_plan_versions },
    "/patients/{id}/care-plan/versions/{n}" => { get => care_plans::get_care_plan_version },
    "/patients/{id}/analgesic-plan" => { get => care_plans::get_analgesic_plan },
    "/patients/{id}/clinical-context" => { get => clinical::get_clinical_context, put => clinical::put_clinical_context },
    "/care-plans/check" => { post => care_plans::check_care_plan },
    "/drugs" => { get => care_plans::list_drugs },
    "/patients/{id}/dispensations" => { post => dispensations::create_dispensation, get => dispensations::list_dispensations },
    "/patients/{id}/interventions" => { post => interventions::create_intervention, get => interventions::list_interventions },
    "/interventions/{id}/accept" => { post => interventions::accept_intervention },
    "/interventions/{id}/refuse" => { post => interventions::refuse_intervention },
    "/organizations/{id}/intervention-metrics" => { get => interventions::intervention_metrics },
    "/patients/{id}/observations" => { post => observations::create_observation, get => observations::list_observations },

    "/patients/{id}/handovers" => { post => handovers::create_handover },
    "/handovers" => { get => handovers::list_handovers },
    "/handovers/{id}" => { get => handovers::get_handover },
    "/handovers/{id}/acknowledge" => { post => handovers::acknowledge_handover },
    "/handovers/{id}/reconcile" => { post => handovers::reconcile_handover },
    "/consultations" => { post => consultations::create_consultation, get => consultations::list_consultations },
    "/consultations/{id}" => { get => consultations::get_consultation },
    "/consultations/{id}/accept" => { post => consultations::accept_consultation },
    "/consultations/{id}/answer" => { post => consultations::answer_consultation },
    "/consultations/{id}/decline" => { post => consultations::decline_consultation },
    "/consultations/{id}/close" => { post => consultations::close_consultation },
    "/consultations/{id}/cancel" => { post => consultations::cancel_consultation },
    "/consultations/{id}/apply-proposal" => { post => consultations::apply_proposal },
    "/organizations/{id}/consultation-metrics" => { get => consultations::consultation_metrics },

    "/notifications" => { get => notifications::list_notifications },
    "/notifications/{id}/read" => { post => notifications::read_notification },

    "/threads" => { get => threads::list_threads },
    "/threads/{id}/messages" => { get => threads::list_messages, post => threads::post_message },
    "/threads/{id}/read" => { post => threads::mark_thread_read },
    "/inbox" => { get => inbox::get_inbox },
    "/events" => { get => events::stream_events },
    "/events/ticket" => { post => events::create_stream_ticket },
    ],
    "/fhir/r4" => [
    "/metadata" => { get => fhir::metadata },
    "/Patient" => { get => fhir::search_patients },
    "/Patient/{id}" => { get => fhir::read_patient },
    "/Patient/{id}/$everything" => { get => fhir::patient_everything },
    "/Practitioner/{id}" => { get => fhir::read_practitioner },
    "/PractitionerRole/{id}" => { get => fhir::read_practitioner_role },
    "/Organization/{id}" => { get => fhir::read_organization },
    "/CareTeam" => { get => fhir::search_care_teams },
    "/CareTeam/{id}" => { get => fhir::read_care_team },
    "/CarePlan" => { get => fhir::search_care_plans },
    "/CarePlan/{id}" => { get => fhir::read_care_plan },
    "/MedicationRequest" => { get => fhir::search_medication_requests },
    "/MedicationRequest/{id}" => { get => fhir::read_medication_request },
    "/Consent" => { get => fhir::search_consents },
    "/Consent/{id}" => { get => fhir::read_consent },
    "/ServiceRequest" => { get => fhir::search_service_requests },
    "/ServiceRequest/{id}" => { get => fhir::read_service_request },
    "/Task" => { get => fhir::search_tasks },
    "/Task/{id}" => { get => fhir::read_task },
    "/Observation" => { get => fhir::search_observations },
    "/Observation/{id}" => { get => fhir::read_observation },
    "/Communication" => { get => fhir::search_communications },
    "/Communication/{id}" => { get => fhir::read_communication },
    "/AuditEvent" => { get => fhir::search_audit_events },
    "/AuditEvent/{id}" => { get => fhir::read_audit_event },
    "/Bundle" => { post => fhir::post_bundle },
    ],
}

/// A page of a list: `next_cursor` is passed back as `?cursor=` for the next page.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// `?limit=&cursor=`, for lists with no filter of their own.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// The default and largest page sizes.
pub const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

/// Checks `?limit=`, naming it when out of range.
pub fn page_limit(limit: Option<i64>) -> Result<i64, crate::error::ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(crate::error::ApiError::malformed(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows ordered by id: the extra row
    /// only tells that there is more.
    pub fn from_rows(mut rows: Vec<T>, limit: i64, id_of: impl Fn(&T) -> String) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(id_of)
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }

    /// Pages a whole list already in its order (the short per-patient lists,
    /// read whole): the items after the one whose `key` is the cursor. The
    /// cursor is a key, not an offset, so a page never repeats an item
    /// because one was added before it. A cursor that names no item ends
    /// the list, as a cursor past the last row does for the lists paged in
    /// the database.
    pub fn of_list(
        items: Vec<T>,
        query: &PageQuery,
        key: impl Fn(&T) -> String,
    ) -> Result<Self, crate::error::ApiError> {
        let limit = page_limit(query.limit)?;
        let start = match &query.cursor {
            None => 0,
            Some(cursor) => items
                .iter()
                .position(|item| key(item) == *cursor)
                .map_or(items.len(), |at| at + 1),
        };
        let rest: Vec<T> = items.into_iter().skip(start).collect();
        Ok(Self::from_rows(rest, limit, key))
    }

    /// Converts the items, keeping the cursor.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}
