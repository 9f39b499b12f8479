//! The OpenAPI document describes exactly the registered routes.

use std::collections::BTreeSet;

use actix_web::http::Method;
use relais::api::ROUTES;

#[actix_web::test]
async fn document_lists_every_route_and_nothing_else() {
    let app = crate::helpers::spawn_app().await;
    let doc = app
        .request(Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .expect(200);
    let mut documented = BTreeSet::new();
    for (path, item) in doc.body["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let registered: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(documented, registered);
    assert!(doc.body["components"]["securitySchemes"]["bearer"].is_object());
}

#[actix_web::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = crate::helpers::spawn_app().await;
    let page = app
        .request(Method::GET, "/docs/", None, None)
        .await
        .expect(200);
    assert!(page.content_type().starts_with("text/html"));
    assert!(page.body.as_str().unwrap().contains("swagger-ui"));
    // The page's settings point at the API's own document.
    let init = app
        .request(Method::GET, "/docs/swagger-initializer.js", None, None)
        .await
        .expect(200);
    assert!(init.body.as_str().unwrap().contains("/api/v1/openapi.json"));
    // Every asset is in the binary: no CDN link in the page.
    assert!(!page.body.as_str().unwrap().contains("https://"));
    // `/docs` itself leads to the page.
    let redirect = app.raw(Method::GET, "/docs", &[], Vec::new()).await;
    assert!(
        redirect.status == 308 || redirect.status == 200,
        "status {}",
        redirect.status
    );
    // The docs are not API routes: not in the document, not in ROUTES.
    assert!(ROUTES.iter().all(|(_, path)| !path.starts_with("/docs")));
}

#[actix_web::test]
async fn document_types_ids_and_describes_every_answer() {
    let app = crate::helpers::spawn_app().await;
    let doc = app
        .request(Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .expect(200)
        .body;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let at = format!("{method} {path}");
            if op.get("requestBody").is_some() {
                assert!(op["responses"]["413"].is_object(), "{at}: no 413");
            }
            for (status, response) in op["responses"].as_object().unwrap() {
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty()),
                    "{at} {status}: no description"
                );
            }
            for param in op["parameters"].as_array().into_iter().flatten() {
                let name = param["name"].as_str().unwrap();
                // A query string or header cannot carry JSON null.
                assert!(
                    !param["schema"]["type"].is_array(),
                    "{at} {name}: {}",
                    param["schema"]
                );
                if param["in"] == "path"
                    && (path == "/fhir/r4/MedicationRequest/{id}"
                        || path == "/fhir/r4/Observation/{id}")
                {
                    // `<patient id>.<version>.omt|<line>`, `<id>.<measure>`: a pattern, not a UUID.
                    assert!(param["schema"]["pattern"].is_string(), "{at} {name}");
                } else if param["in"] == "path" && name != "n" && name != "provider" {
                    // Ids are UUIDs; `n` is a version number, `provider` a configured name.
                    assert_eq!(param["schema"]["format"], "uuid", "{at} {name}");
                }
            }
        }
    }
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["AnalgesicLine"]["properties"]["drug"]["enum"].is_array());
    assert!(schemas["NewObservation"]["anyOf"].is_array());
}

#[actix_web::test]
async fn public_operations_say_so_and_every_other_answer_is_documented() {
    let app = crate::helpers::spawn_app().await;
    let doc = app
        .request(Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .expect(200)
        .body;
    let public: BTreeSet<(&str, &str)> = relais::api::openapi::PUBLIC_OPERATIONS
        .iter()
        .copied()
        .collect();
    // Health, the document, and what a client calls before it has a token.
    for expected in [
        ("get", "/api/v1/health/live"),
        ("get", "/api/v1/health/ready"),
        ("get", "/api/v1/openapi.json"),
        ("post", "/api/v1/auth/login"),
        ("post", "/api/v1/auth/refresh"),
        ("post", "/api/v1/auth/invitations/accept"),
    ] {
        assert!(public.contains(&expected), "{expected:?}");
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let at = format!("{method} {path}");
            let responses = &op["responses"];
            assert!(responses["400"].is_object(), "{at}: no 400");
            if public.contains(&(method.as_str(), path.as_str())) {
                assert_eq!(op["security"], serde_json::json!([]), "{at}");
            } else {
                assert_eq!(
                    op["security"],
                    serde_json::json!([{"bearer": []}]),
                    "{at}: not behind the bearer token"
                );
                assert!(responses["401"].is_object(), "{at}: no 401");
            }
            if path.starts_with("/api/v1/auth/") {
                assert!(responses["429"].is_object(), "{at}: no 429");
                assert!(responses["429"]["headers"]["Retry-After"].is_object());
            }
            // These three never reach the database.
            if ![
                "/api/v1/health/live",
                "/api/v1/openapi.json",
                "/fhir/r4/metadata",
            ]
            .contains(&path.as_str())
            {
                assert!(responses["503"].is_object(), "{at}: no 503");
            }
        }
    }
}

#[actix_web::test]
async fn text_limits_and_rules_are_the_documents() {
    use relais::api::openapi::{NAMES, OPTIONAL_FREE_TEXT, REASONS, REQUIRED_FREE_TEXT};
    use relais::domain::text::*;
    let app = crate::helpers::spawn_app().await;
    let doc = app
        .request(Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .expect(200)
        .body;
    let schemas = &doc["components"]["schemas"];
    // Each constant, and every `maxLength` it backs.
    let limits: &[(&str, &str, usize)] = &[
        ("CreateUser", "full_name", PERSON_NAME_MAX),
        ("UpdateUser", "full_name", PERSON_NAME_MAX),
        ("UpdateMe", "full_name", PERSON_NAME_MAX),
        ("CreateOrganization", "name", ORGANIZATION_NAME_MAX),
        ("CreatePatient", "family_name", FAMILY_NAME_MAX),
        ("UpdatePatient", "family_name", FAMILY_NAME_MAX),
        ("CreatePatient", "given_names", GIVEN_NAMES_MAX),
        ("UpdatePatient", "given_names", GIVEN_NAMES_MAX),
        ("NewHandover", "summary", SUMMARY_MAX),
        ("NewHandover", "follow_up", FOLLOW_UP_MAX),
        ("Reconcile", "comment", COMMENT_MAX),
        ("NewConsultation", "question", QUESTION_MAX),
        ("Answer", "answer", ANSWER_MAX),
        ("Decline", "reason", DECLINE_REASON_MAX),
        ("NewMessage", "body", MESSAGE_MAX),
        ("RecordConsent", "note", CONSENT_NOTE_MAX),
        ("ReasonBody", "reason", ACCESS_REASON_MAX),
        ("NewObservation", "note", OBSERVATION_NOTE_MAX),
        ("PlanWrite", "change_summary", CHANGE_SUMMARY_MAX),
        ("TemporaryAdjustment", "reason", ADJUSTMENT_REASON_MAX),
        ("AnalgesicLine", "note", LINE_NOTE_MAX),
        ("PlanContent", "pain_goal", PAIN_GOAL_MAX),
        ("PlanWrite", "pain_goal", PAIN_GOAL_MAX),
        ("PlanContent", "non_drug_measures", NON_DRUG_MEASURES_MAX),
        ("PlanWrite", "non_drug_measures", NON_DRUG_MEASURES_MAX),
        ("Acknowledgement", "justification", JUSTIFICATION_MAX),
    ];
    for (schema, property, max) in limits {
        assert_eq!(
            schemas[schema]["properties"][property]["maxLength"],
            serde_json::json!(max),
            "{schema}.{property}"
        );
    }
    for (schema, property) in [
        ("ReasonBody", "reason"),
        ("Acknowledgement", "justification"),
    ] {
        assert_eq!(
            schemas[schema]["properties"][property]["minLength"],
            serde_json::json!(ACCESS_REASON_MIN.max(JUSTIFICATION_MIN)),
            "{schema}.{property}"
        );
    }
    // Every text property with a rule has it as a pattern, and every table
    // entry names a real property; every limited text has a rule.
    let ruled: BTreeSet<(&str, &str)> = NAMES
        .iter()
        .chain(REQUIRED_FREE_TEXT)
        .chain(REASONS)
        .chain(OPTIONAL_FREE_TEXT)
        .copied()
        .collect();
    for (schema, property) in &ruled {
        let pattern = schemas[schema]["properties"][property]["pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("{schema}.{property}: no pattern"));
        assert!(pattern.contains("\\x00-"), "{schema}.{property}: {pattern}");
    }
    for (schema, property, _) in limits {
        assert!(
            ruled.contains(&(*schema, *property)),
            "{schema}.{property}: no rule"
        );
    }
    assert!(
        schemas["CreateOrganization"]["properties"]["name"]["pattern"]
            .as_str()
            .unwrap()
            .contains("\\u202a-\\u202e")
    );
}

/// The query-parameter table the server checks requests against
/// (`src/api/query_params.rs`, checked in so that no request builds the
/// document) is exactly the document's: rebuilt here from `ApiDoc::openapi()`,
/// compared as text. On a difference the test fails with the new text (and
/// writes it in place with `RELAIS_WRITE_QUERY_PARAMS=1`).
#[test]
fn query_parameter_table_is_the_documents() {
    use relais::api::openapi::ApiDoc;
    use utoipa::OpenApi;
    use utoipa::openapi::RefOr;
    use utoipa::openapi::path::{Operation, ParameterIn};

    let mut rows = Vec::new();
    for (path, item) in ApiDoc::openapi().paths.paths {
        let operations: [(&str, Option<Operation>); 8] = [
            ("get", item.get),
            ("put", item.put),
            ("post", item.post),
            ("delete", item.delete),
            ("options", item.options),
            ("head", item.head),
            ("patch", item.patch),
            ("trace", item.trace),
        ];
        for (method, op) in operations {
            let Some(op) = op else { continue };
            let names: Vec<String> = op
                .parameters
                .into_iter()
                .flatten()
                .filter_map(|p| match p {
                    RefOr::T(p) if p.parameter_in == ParameterIn::Query => Some(p.name),
                    _ => None,
                })
                .collect();
            rows.push((path.clone(), method.to_owned(), names));
        }
    }
    rows.sort();
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/query_params.rs");
    let current = std::fs::read_to_string(file).expect("src/api/query_params.rs");
    let head = current
        .split_inclusive('\n')
        .take_while(|line| !line.starts_with("pub const QUERY_PARAMETERS"))
        .collect::<String>();
    let mut expected = head;
    expected.push_str("pub const QUERY_PARAMETERS: &[(&str, &str, &[&str])] = &[\n");
    for (path, method, names) in &rows {
        let names = names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        expected.push_str(&format!("    ({path:?}, {method:?}, &[{names}]),\n"));
    }
    expected.push_str("];\n");
    if current != expected {
        if std::env::var_os("RELAIS_WRITE_QUERY_PARAMS").is_some() {
            std::fs::write(file, &expected).expect("write src/api/query_params.rs");
        }
        panic!(
            "src/api/query_params.rs differs from the OpenAPI document; run this test with \
             RELAIS_WRITE_QUERY_PARAMS=1 or replace it by:\n{expected}"
        );
    }
    // Sorted, unique: the server's binary search relies on it.
    let table = relais::api::query_params::QUERY_PARAMETERS;
    assert!(
        table
            .windows(2)
            .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1))
    );
}
