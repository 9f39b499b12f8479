//! The FHIR R4 façade: reads behind the same door and audit, searches that
//! reveal nothing without a basis, OperationOutcome errors, and discharge
//! Bundles that become handovers (the round trip has an empty diff).

use std::collections::BTreeSet;

use actix_web::http::Method;
use diesel::prelude::*;
use relais::api::ROUTES;
use relais::api::fhir::CAPABILITIES;
use relais::db::schema::audit_events;
use serde_json::{Value, json};

use crate::fixtures::{
    Network, add_member, create_patient, design_plan, discharge_bundle, random_ins, set_consent,
};
use crate::helpers::{TestApp, spawn_app};

const INS: &str = "urn:oid:1.2.250.1.213.1.4.8";

async fn audit_rows(app: &TestApp, action: &str, outcome: &str) -> i64 {
    let (action, outcome) = (action.to_owned(), outcome.to_owned());
    app.state
        .db
        .read(move |conn| {
            Ok(audit_events::table
                .filter(audit_events::action.eq(action))
                .filter(audit_events::outcome.eq(outcome))
                .count()
                .get_result::<i64>(conn)?)
        })
        .await
        .unwrap()
}

fn resources<'a>(bundle: &'a Value, kind: &str) -> Vec<&'a Value> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == kind)
        .collect()
}

/// A patient of the GP with INS, consent, the hospital doctor and the
/// pharmacist on the team, and the design plan (pharmacy named).
async fn patient_with_design_plan(
    app: &TestApp,
    net: &Network,
    pharmacy: &str,
) -> (String, String) {
    let ins = random_ins();
    let patient = create_patient(app, &net.gp, Some(&ins)).await;
    set_consent(app, &net.gp, &patient, "granted").await;
    add_member(app, &net.gp, &patient, &net.hospital).await;
    add_member(app, &net.gp, &patient, &net.pharmacist).await;
    app.request(
        Method::PUT,
        &format!("/api/v1/patients/{patient}/care-plan"),
        Some(&net.gp.token),
        Some(&design_plan(Some(pharmacy))),
    )
    .await
    .expect(201);
    (patient, ins)
}

async fn pharmacy_of(app: &TestApp, net: &Network) -> String {
    let orgs = app
        .get("/api/v1/organizations?kind=pharmacy", &net.gp.token)
        .await
        .expect(200)
        .body;
    orgs["items"][0]["id"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn metadata_is_public_and_lists_exactly_what_is_served() {
    let app = spawn_app().await;
    let resp = app
        .request(Method::GET, "/fhir/r4/metadata", None, None)
        .await
        .expect(200);
    assert_eq!(resp.content_type(), "application/fhir+json");
    let cs = &resp.body;
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    let mut stated = BTreeSet::new();
    for r in cs["rest"][0]["resource"].as_array().unwrap() {
        let kind = r["type"].as_str().unwrap().to_owned();
        for i in r["interaction"].as_array().unwrap() {
            stated.insert((kind.clone(), i["code"].as_str().unwrap().to_owned()));
        }
        for o in r["operation"].as_array().into_iter().flatten() {
            stated.insert((kind.clone(), format!("${}", o["name"].as_str().unwrap())));
        }
    }
    // What the routes serve, read off the route table.
    let mut served = BTreeSet::new();
    for (method, path) in ROUTES {
        let Some(rest) = path.strip_prefix("/fhir/r4/") else {
            continue;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let interaction = match (*method, parts.as_slice()) {
            ("get", ["metadata"]) => continue,
            ("get", [_]) => "search-type".to_owned(),
            ("get", [_, "{id}"]) => "read".to_owned(),
            ("get", [_, "{id}", op]) => (*op).to_owned(),
            ("post", [_]) => "create".to_owned(),
            other => panic!("unexpected FHIR route {other:?}"),
        };
        served.insert((parts[0].to_owned(), interaction));
    }
    assert_eq!(stated, served);
    // Search parameters are stated too, and the table is what the statement says.
    assert_eq!(
        CAPABILITIES.len(),
        cs["rest"][0]["resource"].as_array().unwrap().len()
    );
}

#[actix_web::test]
async fn errors_on_fhir_routes_are_operation_outcomes() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let unknown = uuid::Uuid::now_v7();
    let cases: Vec<(Method, String, Option<&str>, u16, &str)> = vec![
        (
            Method::GET,
            format!("/fhir/r4/Patient/{unknown}"),
            None,
            401,
            "login",
        ),
        (
            Method::GET,
            format!("/fhir/r4/Patient/{unknown}"),
            Some(&net.gp.token),
            404,
            "not-found",
        ),
        (
            Method::GET,
            "/fhir/r4/Patient/not-a-uuid".into(),
            Some(&net.gp.token),
            400,
            "structure",
        ),
        (
            Method::GET,
            "/fhir/r4/Nothing".into(),
            Some(&net.gp.token),
            404,
            "not-found",
        ),
        (
            Method::DELETE,
            format!("/fhir/r4/Patient/{unknown}"),
            Some(&net.gp.token),
            405,
            "not-supported",
        ),
        (
            Method::GET,
            format!("/fhir/r4/CarePlan?patient={unknown}&foo=1"),
            Some(&net.gp.token),
            400,
            "structure",
        ),
        (
            Method::GET,
            "/fhir/r4/MedicationRequest/abc".into(),
            Some(&net.gp.token),
            400,
            "structure",
        ),
        (
            Method::GET,
            "/fhir/r4/Patient?identifier=123".into(),
            Some(&net.gp.token),
            400,
            "structure",
        ),
        (
            Method::POST,
            "/fhir/r4/Bundle".into(),
            Some(&net.gp.token),
            403,
            "forbidden",
        ),
    ];
    for (method, path, token, status, code) in cases {
        let body = (method == Method::POST).then(|| json!({}));
        let resp = app
            .request(method.clone(), &path, token, body.as_ref())
            .await;
        assert_eq!(resp.status, status, "{method} {path}: {}", resp.body);
        assert_eq!(
            resp.content_type(),
            "application/fhir+json",
            "{method} {path}"
        );
        assert_eq!(resp.body["resourceType"], "OperationOutcome", "{path}");
        assert_eq!(resp.body["issue"][0]["severity"], "error");
        assert_eq!(resp.body["issue"][0]["code"], code, "{path}: {}", resp.body);
        if status == 401 {
            assert!(resp.headers.get("www-authenticate").is_some());
        }
    }
    // A parameter error names the parameter.
    let resp = app
        .get(
            &format!("/fhir/r4/CarePlan?patient={unknown}&foo=1"),
            &net.gp.token,
        )
        .await;
    assert_eq!(resp.body["issue"][0]["expression"][0], "foo");
    // The REST API keeps problem+json.
    let resp = app
        .get(&format!("/api/v1/patients/{unknown}"), &net.gp.token)
        .await;
    assert_eq!(resp.content_type(), "application/problem+json");
}

#[actix_web::test]
async fn patients_are_read_and_found_by_ins_only_with_a_basis_and_audited() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let ins = random_ins();
    let patient = create_patient(&app, &net.gp, Some(&ins)).await;
    let read = app
        .get(&format!("/fhir/r4/Patient/{patient}"), &net.gp.token)
        .await
        .expect(200);
    assert_eq!(read.content_type(), "application/fhir+json");
    assert_eq!(read.body["identifier"][0]["system"], INS);
    assert_eq!(read.body["identifier"][0]["value"], ins.as_str());
    assert_eq!(
        read.body["identifier"][0]["type"]["coding"][0]["code"],
        "INS-NIR"
    );
    assert_eq!(read.body["name"][0]["family"], "Le Gall");
    assert!(audit_rows(&app, "GET /fhir/r4/Patient/{id}", "allowed").await >= 1);

    let search = format!("/fhir/r4/Patient?identifier={INS}%7C{ins}");
    let found = app.get(&search, &net.gp.token).await.expect(200).body;
    assert_eq!(found["type"], "searchset");
    assert_eq!(found["total"], 1);
    assert_eq!(found["entry"][0]["resource"]["id"], patient.as_str());
    let denied_before = audit_rows(&app, "GET /fhir/r4/Patient", "denied").await;
    let nothing = app
        .get(&search, &net.specialist.token)
        .await
        .expect(200)
        .body;
    assert_eq!(nothing["total"], 0);
    assert!(nothing.get("entry").is_none());
    assert_eq!(
        audit_rows(&app, "GET /fhir/r4/Patient", "denied").await,
        denied_before + 1
    );
    // Another identifier system is not searchable.
    app.get(
        "/fhir/r4/Patient?identifier=urn:oid:1.2.250.1.71.4.2.1%7C10000000001",
        &net.gp.token,
    )
    .await
    .expect(400);
}

#[actix_web::test]
async fn everything_carries_the_plan_observations_and_messages_as_fhir() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let pharmacy = pharmacy_of(&app, &net).await;
    let (patient, _) = patient_with_design_plan(&app, &net, &pharmacy).await;
    app.post(
        &format!("/api/v1/patients/{patient}/observations"),
        &net.pharmacist.token,
        json!({"pain_score": 5, "sedation_score": 1}),
    )
    .await
    .expect(201);
    let thread = app
        .get(&format!("/api/v1/patients/{patient}"), &net.gp.token)
        .await
        .body["thread_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post(
        &format!("/api/v1/threads/{thread}/messages"),
        &net.gp.token,
        json!({"body": "Le patient passe demain."}),
    )
    .await
    .expect(201);

    let path = format!("/fhir/r4/Patient/{patient}/$everything");
    let before = audit_rows(&app, "GET /fhir/r4/Patient/{id}/$everything", "allowed").await;
    let all = app.get(&path, &net.pharmacist.token).await.expect(200).body;
    assert_eq!(
        audit_rows(&app, "GET /fhir/r4/Patient/{id}/$everything", "allowed").await,
        before + 1
    );
    assert_eq!(all["resourceType"], "Bundle");
    assert_eq!(all["entry"][0]["resource"]["resourceType"], "Patient");
    assert!(
        all["entry"][0]["fullUrl"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/fhir/r4/Patient/{patient}"))
    );
    let plan = resources(&all, "CarePlan");
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0]["meta"]["versionId"], "1");
    assert_eq!(plan[0]["status"], "active");
    assert_eq!(
        plan[0]["contained"][0]["description"]["text"],
        "pain below 4/10 at rest"
    );
    let requests = resources(&all, "MedicationRequest");
    assert_eq!(requests.len(), 3, "OMT and two lines");
    let atc = |r: &Value| {
        r["medicationCodeableConcept"]["coding"][0]["code"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(atc(requests[0]), "N07BC02");
    assert_eq!(
        requests[0]["dosageInstruction"].as_array().unwrap().len(),
        2,
        "usual and temporary"
    );
    assert_eq!(
        requests[0]["dosageInstruction"][1]["timing"]["repeat"]["boundsPeriod"]["end"],
        "2026-12-01"
    );
    assert_eq!(
        requests[0]["dispenseRequest"]["performer"]["reference"],
        format!("Organization/{pharmacy}")
    );
    assert_eq!(atc(requests[1]), "N02BE01");
    assert_eq!(atc(requests[2]), "N02AA01");
    assert_eq!(requests[2]["dosageInstruction"][0]["asNeededBoolean"], true);
    // Every activity of the plan resolves to a MedicationRequest of the Bundle.
    let ids: BTreeSet<String> = requests
        .iter()
        .map(|r| format!("MedicationRequest/{}", r["id"].as_str().unwrap()))
        .collect();
    let referenced: BTreeSet<String> = plan[0]["activity"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["reference"]["reference"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids, referenced);
    let observations = resources(&all, "Observation");
    let pain = observations
        .iter()
        .find(|o| o["code"]["coding"][0]["code"] == "72514-3")
        .unwrap();
    assert_eq!(pain["code"]["coding"][0]["system"], "http://loinc.org");
    assert_eq!(pain["valueInteger"], 5);
    assert_eq!(observations.len(), 2);
    let messages = resources(&all, "Communication");
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0]["payload"][0]["contentString"],
        "Le patient passe demain."
    );
    assert_eq!(resources(&all, "CareTeam").len(), 1);
    assert_eq!(resources(&all, "Consent")[0]["status"], "active");
    // Every reference to a Practitioner or Organization resolves inside the Bundle.
    let text = all.to_string();
    for kind in ["Practitioner", "Organization"] {
        let present: BTreeSet<String> = resources(&all, kind)
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        let needle = format!("\"{kind}/");
        for (at, _) in text.match_indices(&needle) {
            let id = &text[at + needle.len()..at + needle.len() + 36];
            assert!(present.contains(id), "{kind}/{id} not in the Bundle");
        }
    }
    // The same reads one by one.
    let plan_read = app
        .get(
            &format!("/fhir/r4/CarePlan/{patient}"),
            &net.pharmacist.token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(plan_read, *plan[0]);
    let mr = requests[0]["id"].as_str().unwrap();
    let one = app
        .get(
            &format!("/fhir/r4/MedicationRequest/{mr}"),
            &net.pharmacist.token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(one, *requests[0]);
    let active = app
        .get(
            &format!("/fhir/r4/MedicationRequest?patient=Patient/{patient}&status=active"),
            &net.pharmacist.token,
        )
        .await
        .expect(200)
        .body;
    let expected_active = requests.iter().filter(|r| r["status"] == "active").count();
    assert_eq!(active["total"], expected_active);
    // Without a basis: empty searches, 404 reads.
    let none = app
        .get(
            &format!("/fhir/r4/CarePlan?patient={patient}"),
            &net.specialist.token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(none["total"], 0);
    app.get(&path, &net.specialist.token).await.expect(404);
    // The trail, for prescribers on the team only.
    let trail = app
        .get(
            &format!("/fhir/r4/AuditEvent?patient={patient}"),
            &net.gp.token,
        )
        .await
        .expect(200)
        .body;
    assert!(trail["total"].as_u64().unwrap() > 0);
    assert_eq!(trail["entry"][0]["resource"]["resourceType"], "AuditEvent");
    app.get(
        &format!("/fhir/r4/AuditEvent?patient={patient}"),
        &net.pharmacist.token,
    )
    .await
    .expect(403);
}

#[actix_web::test]
async fn a_plan_exported_as_a_discharge_bundle_comes_back_with_an_empty_diff() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let pharmacy = pharmacy_of(&app, &net).await;
    let (patient, _) = patient_with_design_plan(&app, &net, &pharmacy).await;
    let all = app
        .get(
            &format!("/fhir/r4/Patient/{patient}/$everything"),
            &net.hospital.token,
        )
        .await
        .expect(200)
        .body;
    // The hospital's document: its Composition first, then the patient, the
    // plan and its prescriptions exactly as Relais exported them.
    let mut entries = vec![
        json!({"fullUrl": "urn:uuid:7d1c0c4e-0000-4000-8000-000000000001", "resource": {
            "resourceType": "Composition", "status": "final",
            "type": {"coding": [{"system": "http://loinc.org", "code": "18842-5"}]},
            "subject": {"reference": format!("Patient/{patient}")},
            "date": "2026-11-24T10:00:00Z",
            "author": [{"reference": format!("Practitioner/{}", net.hospital.id)}],
            "title": "Discharge summary",
            "section": [
                {"title": "Course", "code": {"coding": [{"system": "http://loinc.org", "code": "8648-8"}]},
                 "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Knee replacement &amp; rehab</div>"}},
                {"title": "Follow-up", "code": {"coding": [{"system": "http://loinc.org", "code": "18776-5"}]},
                 "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">GP in 7 days</div>"}}
            ]
        }}),
    ];
    for e in all["entry"].as_array().unwrap() {
        if ["Patient", "CarePlan", "MedicationRequest"]
            .contains(&e["resource"]["resourceType"].as_str().unwrap())
        {
            entries.push(json!({"fullUrl": e["fullUrl"], "resource": e["resource"]}));
        }
    }
    let bundle = json!({"resourceType": "Bundle", "type": "document",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:7d1c0c4e-0000-4000-8000-0000000000ff"},
        "timestamp": "2026-11-24T10:00:00Z", "entry": entries});
    let sent = app
        .post("/fhir/r4/Bundle", &net.hospital.token, bundle)
        .await
        .expect(201);
    assert_eq!(sent.content_type(), "application/fhir+json");
    let location = sent.header_value("location");
    let handover = app.get(&location, &net.gp.token).await.expect(200).body;
    assert_eq!(handover["diff"], json!([]), "{handover}");
    assert_eq!(
        handover["to_user_id"],
        net.gp.id.as_str(),
        "the referent by default"
    );
    assert_eq!(handover["from_user_id"], net.hospital.id.as_str());
    assert_eq!(handover["summary"], "Knee replacement & rehab");
    assert_eq!(handover["follow_up"], "GP in 7 days");
    assert_eq!(
        handover["proposed_plan"]["omt"]["dispensing_pharmacy_id"],
        pharmacy.as_str()
    );
    assert!(audit_rows(&app, "POST /fhir/r4/Bundle", "allowed").await >= 1);
}

#[actix_web::test]
async fn a_bundle_that_cannot_be_mapped_is_refused_naming_entry_and_element_and_creates_nothing() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let ins = random_ins();
    let patient = create_patient(&app, &net.gp, Some(&ins)).await;
    set_consent(&app, &net.gp, &patient, "granted").await;
    add_member(&app, &net.gp, &patient, &net.hospital).await;

    let outbox = || async {
        app.get("/api/v1/handovers?box=outbox", &net.hospital.token)
            .await
            .expect(200)
            .body["items"]
            .as_array()
            .unwrap()
            .len()
    };
    let mut bad = discharge_bundle(&ins);
    bad["entry"][3]["resource"]["medicationCodeableConcept"]["coding"][0]["code"] =
        json!("Z99ZZ99");
    bad["entry"][2]["resource"]["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] =
        json!({"value": 60});
    let refused = app
        .post("/fhir/r4/Bundle", &net.hospital.token, bad)
        .await
        .expect(422)
        .body;
    assert_eq!(refused["resourceType"], "OperationOutcome");
    let expressions: Vec<&str> = refused["issue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["expression"][0].as_str().unwrap())
        .collect();
    assert!(
        expressions.contains(&"Bundle.entry[3].resource.medicationCodeableConcept.coding[0].code"),
        "{refused}"
    );
    assert!(
        expressions.contains(
            &"Bundle.entry[2].resource.dosageInstruction[0].doseAndRate[0].doseQuantity.unit"
        ),
        "{refused}"
    );
    // A prescriber named by an RPPS no active user has: the requester is named.
    let mut stranger = discharge_bundle(&ins);
    let practitioner = "urn:uuid:0b4f3c57-0000-4000-8000-0000000000ff";
    stranger["entry"].as_array_mut().unwrap().push(json!({
        "fullUrl": practitioner,
        "resource": {"resourceType": "Practitioner",
            "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "10999999999"}]},
    }));
    stranger["entry"][2]["resource"]["requester"] = json!({"reference": practitioner});
    let refused = app
        .post("/fhir/r4/Bundle", &net.hospital.token, stranger)
        .await
        .expect(422)
        .body;
    let issue = refused["issue"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["expression"][0] == "Bundle.entry[2].resource.requester")
        .unwrap_or_else(|| panic!("{refused}"));
    assert!(
        issue["diagnostics"].as_str().unwrap().contains("RPPS"),
        "{refused}"
    );
    // A patient not found (or without a basis: the same answer).
    let unknown = app
        .post(
            "/fhir/r4/Bundle",
            &net.hospital.token,
            discharge_bundle(&random_ins()),
        )
        .await
        .expect(422)
        .body;
    assert_eq!(
        unknown["issue"][0]["expression"][0],
        "Bundle.entry[1].resource.identifier"
    );
    // An addressee who is no GP of the patient is refused, as through REST.
    let wrong = app
        .post(
            &format!("/fhir/r4/Bundle?to={}", net.pharmacist.id),
            &net.hospital.token,
            discharge_bundle(&ins),
        )
        .await
        .expect(422)
        .body;
    assert_eq!(wrong["issue"][0]["expression"][0], "to");
    assert_eq!(outbox().await, 0, "nothing was created");
    // The good one goes through, to the referent.
    let ok = app
        .post(
            "/fhir/r4/Bundle",
            &net.hospital.token,
            discharge_bundle(&ins),
        )
        .await
        .expect(201);
    let handover = app
        .get(&ok.header_value("location"), &net.gp.token)
        .await
        .expect(200)
        .body;
    assert_eq!(handover["proposed_plan"]["omt"]["daily_dose_mg"], 60.0);
    assert_eq!(
        handover["proposed_plan"]["analgesics"][0]["drug"],
        "paracetamol"
    );
    assert_eq!(handover["summary"], "Prothèse de genou, suites simples.");
    assert_eq!(outbox().await, 1);
    // Only hospital doctors.
    app.post("/fhir/r4/Bundle", &net.gp.token, discharge_bundle(&ins))
        .await
        .expect(403);
}

async fn consult(app: &TestApp, net: &Network, centre: &str, patient: &str) -> String {
    let body = app
        .post(
            "/api/v1/consultations",
            &net.gp.token,
            json!({"centre_id": centre, "patient_id": patient, "priority": "urgent", "question": "Quel palier pour la douleur ?"}),
        )
        .await
        .expect(201)
        .body;
    body["id"].as_str().unwrap().to_owned()
}

fn business(task: &Value) -> &str {
    task["businessStatus"]["coding"][0]["code"]
        .as_str()
        .unwrap()
}

#[actix_web::test]
async fn consultations_are_service_requests_and_tasks_through_their_lifecycle() {
    let app = spawn_app().await;
    let mut net = Network::new(&app).await;
    let pharmacy = pharmacy_of(&app, &net).await;
    let (patient, _) = patient_with_design_plan(&app, &net, &pharmacy).await;
    let answered = consult(&app, &net, &net.addiction_centre, &patient).await;
    let declined = consult(&app, &net, &net.addiction_centre, &patient).await;
    let cancelled = consult(&app, &net, &net.addiction_centre, &patient).await;
    let waiting = consult(&app, &net, &net.addiction_centre, &patient).await;

    // Submitted: the request stands, the task is requested and not yet overdue.
    let task = app
        .get(&format!("/fhir/r4/Task/{answered}"), &net.gp.token)
        .await
        .expect(200)
        .body;
    assert_eq!(task["status"], "requested");
    assert_eq!(business(&task), "submitted");
    assert_eq!(task["for"]["reference"], format!("Patient/{patient}"));
    assert_eq!(
        task["focus"]["reference"],
        format!("ServiceRequest/{answered}")
    );
    assert_eq!(
        task["owner"]["reference"],
        format!("Organization/{}", net.addiction_centre)
    );
    assert!(task.get("output").is_none());
    let request = app
        .get(
            &format!("/fhir/r4/ServiceRequest/{answered}"),
            &net.gp.token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(request["status"], "active");
    assert_eq!(request["intent"], "order");
    assert_eq!(request["priority"], "urgent");
    assert_eq!(
        request["requester"]["reference"],
        format!("Practitioner/{}", net.gp.id)
    );
    assert_eq!(
        request["performer"][0]["reference"],
        format!("Organization/{}", net.addiction_centre)
    );
    assert_eq!(request["note"][0]["text"], "Quel palier pour la douleur ?");

    // Accepted, then answered with a plan: completed, the answer and the
    // proposal (contained, ATC-coded) as output.
    let accept = format!("/api/v1/consultations/{answered}/accept");
    app.post(&accept, &net.addiction.token, json!({}))
        .await
        .expect(200);
    let task = app
        .get(&format!("/fhir/r4/Task/{answered}"), &net.addiction.token)
        .await
        .expect(200)
        .body;
    assert_eq!(task["status"], "accepted");
    assert_eq!(
        task["owner"]["reference"],
        format!("Practitioner/{}", net.addiction.id)
    );
    assert!(task["executionPeriod"]["start"].is_string());
    let mut proposed = design_plan(Some(&pharmacy));
    proposed.as_object_mut().unwrap().remove("change_summary");
    app.post(
        &format!("/api/v1/consultations/{answered}/answer"),
        &net.addiction.token,
        json!({"answer": "Voir le plan proposé", "proposed_plan": proposed}),
    )
    .await
    .expect(200);
    let task = app
        .get(&format!("/fhir/r4/Task/{answered}"), &net.gp.token)
        .await
        .expect(200)
        .body;
    assert_eq!(task["status"], "completed");
    assert_eq!(business(&task), "answered");
    assert_eq!(task["output"][0]["valueString"], "Voir le plan proposé");
    assert_eq!(
        task["output"][1]["valueReference"]["reference"],
        "#proposal"
    );
    let contained = &task["contained"][0];
    assert_eq!(contained["resourceType"], "CarePlan");
    assert_eq!(contained["id"], "proposal");
    assert_eq!(contained["intent"], "proposal");
    let atc: Vec<&str> = contained["activity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a["detail"]["productCodeableConcept"]["coding"][0]["code"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        atc.len(),
        1 + proposed["analgesics"].as_array().unwrap().len()
    );
    assert_eq!(atc[0], "N07BC02", "methadone's ATC code");
    let close = format!("/api/v1/consultations/{answered}/close");
    app.post(
        &close,
        &net.gp.token,
        json!({"outcome": "resolved", "referral_avoided": true}),
    )
    .await
    .expect(200);
    let task = app
        .get(&format!("/fhir/r4/Task/{answered}"), &net.gp.token)
        .await
        .expect(200)
        .body;
    assert_eq!(
        (task["status"].as_str(), business(&task)),
        (Some("completed"), "closed")
    );
    let request = app
        .get(
            &format!("/fhir/r4/ServiceRequest/{answered}"),
            &net.gp.token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(request["status"], "completed");
    // Declined and cancelled.
    app.post(
        &format!("/api/v1/consultations/{declined}/decline"),
        &net.addiction.token,
        json!({"reason": "Hors champ du CSAPA"}),
    )
    .await
    .expect(200);
    app.post(
        &format!("/api/v1/consultations/{cancelled}/cancel"),
        &net.gp.token,
        json!({}),
    )
    .await
    .expect(200);
    let task = app
        .get(&format!("/fhir/r4/Task/{declined}"), &net.gp.token)
        .await
        .expect(200)
        .body;
    assert_eq!(task["status"], "rejected");
    assert_eq!(task["statusReason"]["text"], "Hors champ du CSAPA");
    let request = app
        .get(
            &format!("/fhir/r4/ServiceRequest/{declined}"),
            &net.gp.token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(request["status"], "revoked");
    let task = app
        .get(&format!("/fhir/r4/Task/{cancelled}"), &net.gp.token)
        .await
        .expect(200)
        .body;
    assert_eq!(task["status"], "cancelled");

    // A stranger to the consultation (no basis, not at the centre) gets 404, audited.
    let denied = audit_rows(&app, "GET /fhir/r4/Task/{id}", "denied").await;
    app.get(&format!("/fhir/r4/Task/{waiting}"), &net.specialist.token)
        .await
        .expect(404);
    app.get(
        &format!("/fhir/r4/ServiceRequest/{waiting}"),
        &net.pharmacist.token,
    )
    .await
    .expect(404);
    assert!(audit_rows(&app, "GET /fhir/r4/Task/{id}", "denied").await > denied);

    // Past its due time and unanswered: overdue.
    app.clock.advance(chrono::Duration::hours(5));
    net.gp = app.login("gp@relais.test", crate::helpers::PASSWORD).await;
    let task = app
        .get(&format!("/fhir/r4/Task/{waiting}"), &net.gp.token)
        .await
        .expect(200)
        .body;
    assert_eq!(
        (task["status"].as_str(), business(&task)),
        (Some("requested"), "overdue")
    );
    assert!(task["restriction"]["period"]["end"].is_string());

    // Searches by patient: the requester sees all four; the pharmacist on
    // the team (no party) none; the addiction specialist (open basis
    // through `waiting`) the centre's.
    for kind in ["ServiceRequest", "Task"] {
        let path = format!("/fhir/r4/{kind}?patient=Patient/{patient}");
        let bundle = app.get(&path, &net.gp.token).await.expect(200).body;
        assert_eq!(bundle["total"], 4, "{bundle}");
        assert_eq!(resources(&bundle, kind).len(), 4);
        let bundle = app.get(&path, &net.pharmacist.token).await.expect(200).body;
        assert_eq!(bundle["total"], 0, "{bundle}");
    }
    let allowed = audit_rows(&app, "GET /fhir/r4/Task", "allowed").await;
    let addiction = app
        .login("csapa@relais.test", crate::helpers::PASSWORD)
        .await;
    let bundle = app
        .get(
            &format!("/fhir/r4/Task?patient={patient}"),
            &addiction.token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(bundle["total"], 4, "{bundle}");
    assert!(audit_rows(&app, "GET /fhir/r4/Task", "allowed").await > allowed);

    // By focus: the one consultation, for a party with a basis only.
    for focus in [format!("ServiceRequest/{answered}"), answered.clone()] {
        let bundle = app
            .get(&format!("/fhir/r4/Task?focus={focus}"), &net.gp.token)
            .await
            .expect(200)
            .body;
        let tasks = resources(&bundle, "Task");
        assert_eq!(tasks.len(), 1, "{bundle}");
        assert_eq!(tasks[0]["id"], json!(answered));
        assert_eq!(
            tasks[0]["focus"]["reference"],
            format!("ServiceRequest/{answered}")
        );
    }
    let denied = audit_rows(&app, "GET /fhir/r4/Task", "denied").await;
    let bundle = app
        .get(
            &format!("/fhir/r4/Task?focus=ServiceRequest/{answered}"),
            &net.pharmacist.token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(bundle["total"], 0, "not a party: {bundle}");
    assert!(audit_rows(&app, "GET /fhir/r4/Task", "denied").await > denied);
    for (query, param) in [
        (format!("focus={answered}&patient={patient}"), "patient"),
        ("focus=Task/1".to_owned(), "focus"),
        (String::new(), "patient"),
    ] {
        let resp = app
            .get(&format!("/fhir/r4/Task?{query}"), &net.gp.token)
            .await
            .expect(400);
        assert_eq!(resp.body["issue"][0]["expression"][0], param, "{query}");
    }

    // $everything carries them, and the centre they name.
    let all = app
        .get(
            &format!("/fhir/r4/Patient/{patient}/$everything"),
            &net.gp.token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(resources(&all, "ServiceRequest").len(), 4);
    assert_eq!(resources(&all, "Task").len(), 4);
    assert!(
        resources(&all, "Organization")
            .iter()
            .any(|o| o["id"] == json!(net.addiction_centre)),
        "the centre is in the Bundle"
    );
    let all = app
        .get(
            &format!("/fhir/r4/Patient/{patient}/$everything"),
            &net.pharmacist.token,
        )
        .await
        .expect(200)
        .body;
    assert!(resources(&all, "Task").is_empty(), "not a party");
}

#[actix_web::test]
async fn communications_are_paged_by_patient_and_by_consultation() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let pharmacy = pharmacy_of(&app, &net).await;
    let (patient, _) = patient_with_design_plan(&app, &net, &pharmacy).await;
    let consultation = consult(&app, &net, &net.addiction_centre, &patient).await;
    let thread = app
        .get(
            &format!("/api/v1/consultations/{consultation}"),
            &net.gp.token,
        )
        .await
        .expect(200)
        .body["thread_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut sent = Vec::new();
    for i in 0..5 {
        let by = if i % 2 == 0 { &net.gp } else { &net.addiction };
        let body = app
            .post(
                &format!("/api/v1/threads/{thread}/messages"),
                &by.token,
                json!({"body": format!("message {i}")}),
            )
            .await
            .expect(201)
            .body;
        sent.push(body["id"].as_str().unwrap().to_owned());
    }
    // Two at a time, following `next`, oldest first.
    let mut url = format!("/fhir/r4/Communication?part-of=ServiceRequest/{consultation}&_count=2");
    let mut seen = Vec::new();
    for _ in 0..5 {
        let bundle = app.get(&url, &net.gp.token).await.expect(200).body;
        for c in resources(&bundle, "Communication") {
            assert_eq!(
                c["partOf"][0]["reference"],
                format!("ServiceRequest/{consultation}")
            );
            assert_eq!(c["subject"]["reference"], format!("Patient/{patient}"));
            seen.push(c["id"].as_str().unwrap().to_owned());
        }
        let next = bundle["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_owned());
        match next {
            Some(next) => {
                assert!(bundle.get("total").is_none(), "a page's size is no total");
                url = next
                    .split_once("/fhir/r4/")
                    .map(|(_, rest)| format!("/fhir/r4/{rest}"))
                    .unwrap();
            }
            None => break,
        }
    }
    assert_eq!(seen, sent);
    // One message by id carries its consultation.
    let one = app
        .get(
            &format!("/fhir/r4/Communication/{}", sent[1]),
            &net.gp.token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        one["partOf"][0]["reference"],
        format!("ServiceRequest/{consultation}")
    );
    // No party to the consultation: nothing, though on the team; by id, 404.
    let bundle = app
        .get(
            &format!("/fhir/r4/Communication?part-of={consultation}"),
            &net.pharmacist.token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(bundle["total"], 0, "{bundle}");
    app.get(
        &format!("/fhir/r4/Communication/{}", sent[0]),
        &net.pharmacist.token,
    )
    .await
    .expect(404);
    // The patient's own thread stays apart.
    let bundle = app
        .get(
            &format!("/fhir/r4/Communication?patient={patient}"),
            &net.pharmacist.token,
        )
        .await
        .expect(200)
        .body;
    assert!(
        resources(&bundle, "Communication")
            .iter()
            .all(|c| c.get("partOf").is_none())
    );
    // Bounds and the parameters' rules, each error naming its parameter.
    for (query, param) in [
        (format!("patient={patient}&_count=0"), "_count"),
        (format!("patient={patient}&_count=1001"), "_count"),
        (format!("patient={patient}&_cursor=x"), "_cursor"),
        ("_count=2".to_owned(), "patient"),
        (
            format!("patient={patient}&part-of={consultation}"),
            "patient",
        ),
        ("part-of=Task/1".to_owned(), "part-of"),
    ] {
        let resp = app
            .get(&format!("/fhir/r4/Communication?{query}"), &net.gp.token)
            .await
            .expect(400);
        assert_eq!(resp.body["resourceType"], "OperationOutcome", "{query}");
        assert_eq!(
            resp.body["issue"][0]["expression"][0], param,
            "{query}: {}",
            resp.body
        );
    }
}

#[actix_web::test]
async fn every_listed_type_is_read_by_id_behind_the_door() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let pharmacy = pharmacy_of(&app, &net).await;
    let (patient, _) = patient_with_design_plan(&app, &net, &pharmacy).await;
    app.post(
        &format!("/api/v1/patients/{patient}/observations"),
        &net.pharmacist.token,
        json!({"pain_score": 6, "cows_score": 3}),
    )
    .await
    .expect(201);
    let all = app
        .get(
            &format!("/fhir/r4/Patient/{patient}/$everything"),
            &net.gp.token,
        )
        .await
        .expect(200)
        .body;
    let trail = app
        .get(
            &format!("/fhir/r4/AuditEvent?patient={patient}"),
            &net.gp.token,
        )
        .await
        .expect(200)
        .body;
    // Each resource of $everything (and the trail) reads back the same by id.
    let mut checked = BTreeSet::new();
    for r in all["entry"]
        .as_array()
        .unwrap()
        .iter()
        .chain(trail["entry"].as_array().unwrap())
        .map(|e| &e["resource"])
    {
        let kind = r["resourceType"].as_str().unwrap();
        let path = format!("/fhir/r4/{kind}/{}", r["id"].as_str().unwrap());
        let read = app.get(&path, &net.gp.token).await.expect(200).body;
        assert_eq!(&read, r, "{path}");
        checked.insert(kind.to_owned());
    }
    for kind in [
        "CareTeam",
        "Consent",
        "Observation",
        "AuditEvent",
        "CarePlan",
        "MedicationRequest",
    ] {
        assert!(checked.contains(kind), "{kind} read back");
    }
    // Every type the CapabilityStatement says it reads has a route that does.
    let readable: BTreeSet<&str> = CAPABILITIES
        .iter()
        .filter(|(_, interactions, _)| interactions.contains(&"read"))
        .map(|(kind, _, _)| *kind)
        .collect();
    for kind in &readable {
        let route = format!("/fhir/r4/{kind}/{{id}}");
        assert!(ROUTES.contains(&("get", route.as_str())), "{route}");
    }
    // No basis: 404 (not 403), as the REST reads; a weaker basis on the
    // trail: 403. Malformed ids: 400 naming `id`.
    let consent = resources(&all, "Consent")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let observation = resources(&all, "Observation")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let event = trail["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        format!("/fhir/r4/Consent/{consent}"),
        format!("/fhir/r4/Observation/{observation}"),
        format!("/fhir/r4/CareTeam/{patient}"),
        format!("/fhir/r4/AuditEvent/{event}"),
        format!("/fhir/r4/Consent/{}", uuid::Uuid::now_v7()),
        format!("/fhir/r4/Observation/{}.pain", uuid::Uuid::now_v7()),
    ] {
        let resp = app.get(&path, &net.specialist.token).await.expect(404);
        assert_eq!(resp.body["issue"][0]["code"], "not-found", "{path}");
    }
    app.get(
        &format!("/fhir/r4/AuditEvent/{event}"),
        &net.pharmacist.token,
    )
    .await
    .expect(403);
    for path in [
        "/fhir/r4/Observation/abc".to_owned(),
        format!("/fhir/r4/Observation/{}.weight", uuid::Uuid::now_v7()),
        "/fhir/r4/Consent/abc".to_owned(),
    ] {
        let resp = app.get(&path, &net.gp.token).await.expect(400);
        assert_eq!(resp.body["issue"][0]["expression"][0], "id", "{path}");
    }
}

/// The local path of a Bundle's `next` link, if any.
fn next_link(bundle: &Value) -> Option<String> {
    bundle["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .map(|l| {
            let url = l["url"].as_str().unwrap();
            url.split_once("/fhir/r4/")
                .map(|(_, rest)| format!("/fhir/r4/{rest}"))
                .unwrap()
        })
}

fn keys(bundle: &Value) -> Vec<(String, String)> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["resource"]["resourceType"].as_str().unwrap().to_owned(),
                e["resource"]["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[actix_web::test]
async fn everything_is_paged_each_resource_once_each_page_behind_the_basis() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let pharmacy = pharmacy_of(&app, &net).await;
    let (patient, _) = patient_with_design_plan(&app, &net, &pharmacy).await;
    for score in [2, 6] {
        app.post(
            &format!("/api/v1/patients/{patient}/observations"),
            &net.pharmacist.token,
            json!({"pain_score": score}),
        )
        .await
        .expect(201);
    }
    let thread = app
        .get(&format!("/api/v1/patients/{patient}"), &net.gp.token)
        .await
        .body["thread_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut sent = Vec::new();
    for i in 0..5 {
        let body = app
            .post(
                &format!("/api/v1/threads/{thread}/messages"),
                &net.gp.token,
                json!({"body": format!("message {i}")}),
            )
            .await
            .expect(201)
            .body;
        sent.push(body["id"].as_str().unwrap().to_owned());
    }
    let path = format!("/fhir/r4/Patient/{patient}/$everything");
    // One page by default: the whole record, its total.
    let whole = app.get(&path, &net.hospital.token).await.expect(200).body;
    assert!(next_link(&whole).is_none(), "{whole}");
    let all = keys(&whole);
    assert_eq!(whole["total"], all.len());
    assert_eq!(resources(&whole, "Communication").len(), 5);
    assert_eq!(resources(&whole, "Observation").len(), 2);

    // Two observation records or messages a page, following `next`.
    let mut url = format!("{path}?_count=2");
    let mut walked = Vec::new();
    let mut pages = 0;
    while pages < 10 {
        let page = app.get(&url, &net.hospital.token).await.expect(200).body;
        pages += 1;
        let streamed =
            resources(&page, "Communication").len() + resources(&page, "Observation").len();
        assert!(streamed <= 2, "page {pages}: {page}");
        if pages > 1 {
            assert_eq!(
                streamed,
                keys(&page).len(),
                "only the first page carries the rest"
            );
        }
        walked.extend(keys(&page));
        match next_link(&page) {
            Some(next) => {
                assert!(page.get("total").is_none(), "a page's size is no total");
                url = next;
            }
            None => break,
        }
    }
    // 2 observations, then 5 messages: 4 pages.
    assert_eq!(pages, 4, "{walked:?}");
    let unique: BTreeSet<_> = walked.iter().cloned().collect();
    assert_eq!(unique.len(), walked.len(), "each resource exactly once");
    assert_eq!(unique, all.iter().cloned().collect::<BTreeSet<_>>());
    let messages: Vec<&String> = walked
        .iter()
        .filter(|(kind, _)| kind == "Communication")
        .map(|(_, id)| id)
        .collect();
    assert_eq!(messages, sent.iter().collect::<Vec<_>>(), "oldest first");

    // A caller whose basis ends between pages: 404 on the next one.
    let first = app
        .get(&format!("{path}?_count=3"), &net.hospital.token)
        .await
        .expect(200)
        .body;
    let next = next_link(&first).expect("a next page");
    app.get(&next, &net.hospital.token).await.expect(200);
    app.request(
        Method::DELETE,
        &format!("/api/v1/patients/{patient}/care-team/{}", net.hospital.id),
        Some(&net.gp.token),
        None,
    )
    .await
    .expect(204);
    let gone = app.get(&next, &net.hospital.token).await.expect(404).body;
    assert_eq!(gone["resourceType"], "OperationOutcome");
    // The link grants nothing by itself: it serves whoever has a basis now.
    app.get(&next, &net.gp.token).await.expect(200);

    // Bad paging parameters: 400 naming them, nothing served.
    for (query, param) in [
        ("_count=0", "_count"),
        ("_count=1001", "_count"),
        ("_count=two", "_count"),
        ("_cursor=x", "_cursor"),
        ("_cursor=m.not-an-id", "_cursor"),
        ("_cursor=q", "_cursor"),
    ] {
        let resp = app
            .get(&format!("{path}?{query}"), &net.gp.token)
            .await
            .expect(400);
        assert_eq!(resp.body["resourceType"], "OperationOutcome", "{query}");
        assert_eq!(
            resp.body["issue"][0]["expression"][0], param,
            "{query}: {}",
            resp.body
        );
    }
}

#[actix_web::test]
async fn observations_are_paged_each_record_once_behind_the_basis() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let pharmacy = pharmacy_of(&app, &net).await;
    let (patient, _) = patient_with_design_plan(&app, &net, &pharmacy).await;
    let mut recorded = Vec::new();
    for score in [2, 3, 4, 5, 6] {
        let body = app
            .post(
                &format!("/api/v1/patients/{patient}/observations"),
                &net.pharmacist.token,
                json!({"pain_score": score}),
            )
            .await
            .expect(201)
            .body;
        recorded.push(format!("{}.pain", body["id"].as_str().unwrap()));
    }
    // Two records a page, following `next`: each exactly once, in entry order.
    let mut url = format!("/fhir/r4/Observation?patient=Patient/{patient}&_count=2");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= 5, "the pages do not end");
        let bundle = app.get(&url, &net.gp.token).await.expect(200).body;
        let page: Vec<String> = resources(&bundle, "Observation")
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect();
        assert!(page.len() <= 2, "{page:?}");
        seen.extend(page);
        let next = bundle["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_owned());
        match next {
            Some(next) => {
                assert!(bundle.get("total").is_none(), "a page's size is no total");
                url = next
                    .split_once("/fhir/r4/")
                    .map(|(_, rest)| format!("/fhir/r4/{rest}"))
                    .unwrap();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "entry (id) order");
    recorded.sort();
    assert_eq!(seen, recorded);
    // Without a basis: an empty set, whatever the page.
    let bundle = app
        .get(
            &format!("/fhir/r4/Observation?patient={patient}&_count=2"),
            &net.specialist.token,
        )
        .await
        .expect(200)
        .body;
    assert!(resources(&bundle, "Observation").is_empty());
    // Bad paging parameters are named.
    for (query, field) in [
        ("_count=0", "_count"),
        ("_count=1001", "_count"),
        ("_cursor=x", "_cursor"),
    ] {
        let res = app
            .get(
                &format!("/fhir/r4/Observation?patient={patient}&{query}"),
                &net.gp.token,
            )
            .await
            .expect(400);
        assert_eq!(res.body["resourceType"], "OperationOutcome");
        assert!(
            res.body.to_string().contains(field),
            "{query}: {}",
            res.body
        );
    }
}
