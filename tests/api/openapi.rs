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
