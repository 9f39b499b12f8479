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
                if param["in"] == "path" && name != "n" {
                    assert_eq!(param["schema"]["format"], "uuid", "{at} {name}");
                }
            }
        }
    }
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["AnalgesicLine"]["properties"]["drug"]["enum"].is_array());
    assert!(schemas["NewObservation"]["anyOf"].is_array());
}
