//! A small care network for the access tests: one user per role and situation.

use actix_web::http::Method;
use serde_json::{Value, json};

use crate::helpers::{Session, TestApp};

/// A valid INS with a random NIR.
pub fn random_ins() -> String {
    let n = uuid::Uuid::now_v7().as_u128();
    let nir = format!("{}{:012}", 1 + (n % 2), (n / 7) % 1_000_000_000_000);
    format!("{nir}{:02}", relais::domain::ins::key_of(&nir).unwrap())
}

/// Users of the network.
pub struct Network {
    pub admin: Session,
    pub gp_practice: String,
    /// The referent GP of every patient the fixture makes.
    pub gp: Session,
    /// Another GP of the same practice (not on teams at first).
    pub gp2: Session,
    /// A hospital doctor: other organisation, on the team.
    pub hospital: Session,
    /// A pharmacist: other organisation, on the team.
    pub pharmacist: Session,
    /// A nurse who breaks the glass.
    pub nurse: Session,
    /// A pain specialist with no relation to the patients.
    pub specialist: Session,
    pub pain_centre: String,
    /// An addiction-centre specialist (not one of the matrix's callers).
    pub addiction: Session,
    pub addiction_centre: String,
    /// The pharmacist's pharmacy.
    pub pharmacy: String,
}

impl Network {
    /// Creates the organisations and onboards one user each.
    pub async fn new(app: &TestApp) -> Self {
        let admin = app.admin().await;
        let gp_practice = app
            .create_org(&admin, "Cabinet du Port", "gp_practice")
            .await;
        let hospital_org = app.create_org(&admin, "CHU", "hospital").await;
        let pharmacy = app.create_org(&admin, "Pharmacie", "pharmacy").await;
        let nursing = app
            .create_org(&admin, "Soins infirmiers", "nursing_service")
            .await;
        let pain_centre = app
            .create_org(&admin, "Centre douleur", "pain_centre")
            .await;
        let addiction_centre = app.create_org(&admin, "CSAPA", "addiction_centre").await;
        Self {
            gp: app
                .onboard(&admin, "gp@relais.test", "gp", &gp_practice)
                .await,
            gp2: app
                .onboard(&admin, "gp2@relais.test", "gp", &gp_practice)
                .await,
            hospital: app
                .onboard(
                    &admin,
                    "hospital@relais.test",
                    "hospital_doctor",
                    &hospital_org,
                )
                .await,
            pharmacist: app
                .onboard(&admin, "pharmacist@relais.test", "pharmacist", &pharmacy)
                .await,
            nurse: app
                .onboard(&admin, "nurse@relais.test", "nurse", &nursing)
                .await,
            specialist: app
                .onboard(&admin, "pain@relais.test", "specialist", &pain_centre)
                .await,
            addiction: app
                .onboard(&admin, "csapa@relais.test", "specialist", &addiction_centre)
                .await,
            admin,
            gp_practice,
            pain_centre,
            addiction_centre,
            pharmacy,
        }
    }
}

/// The body of a new patient.
pub fn patient_body(ins: Option<&str>) -> Value {
    json!({
        "ins": ins,
        "family_name": "Le Gall",
        "given_names": "Maïwenn",
        "birth_date": "1984-12-07",
        "sex": "female",
        "phone": "06 12 34 56 78"
    })
}

/// Creates a patient as `by`; returns its id.
pub async fn create_patient(app: &TestApp, by: &Session, ins: Option<&str>) -> String {
    let resp = app
        .post("/api/v1/patients", &by.token, patient_body(ins))
        .await
        .expect(201);
    resp.body["id"].as_str().unwrap().to_owned()
}

/// Records a consent decision as `by`.
pub async fn set_consent(app: &TestApp, by: &Session, patient: &str, status: &str) {
    app.request(
        actix_web::http::Method::PUT,
        &format!("/api/v1/patients/{patient}/consent"),
        Some(&by.token),
        Some(&json!({"status": status})),
    )
    .await
    .expect(200);
}

/// Adds `user` to the team as `by`.
pub async fn add_member(app: &TestApp, by: &Session, patient: &str, user: &Session) {
    app.post(
        &format!("/api/v1/patients/{patient}/care-team"),
        &by.token,
        json!({"user_id": user.id}),
    )
    .await
    .expect(201);
}

/// The plan of DESIGN §12: methadone with a week of split, higher dose after knee surgery.
pub fn design_plan(pharmacy: Option<&str>) -> Value {
    json!({
        "status": "active",
        "omt": {
            "medication": "methadone",
            "daily_dose_mg": 60,
            "doses_per_day": 1,
            "dispensing_pharmacy_id": pharmacy,
            "temporary_adjustment": {
                "daily_dose_mg": 80, "doses_per_day": 2,
                "start": "2026-11-24", "end": "2026-12-01",
                "reason": "post-operative pain"
            }
        },
        "analgesics": [
            {"drug": "paracetamol", "dose_mg": 1000, "times_per_day": 4, "max_daily_mg": 4000,
             "as_needed": false, "start": "2026-11-24", "end": "2026-12-01", "note": ""},
            {"drug": "morphine", "dose_mg": 10, "times_per_day": 4, "max_daily_mg": 40,
             "as_needed": true, "start": "2026-11-24", "end": "2026-11-27", "note": "after surgery"}
        ],
        "pain_goal": "pain below 4/10 at rest",
        "non_drug_measures": "ice, physiotherapy",
        "review_date": "2026-12-01",
        "change_summary": "acute pain after knee surgery"
    })
}

/// A patient of the GP with the hospital doctor on the team and a first plan
/// (methadone 60 mg once a day, paracetamol).
pub async fn patient_with_plan(app: &TestApp, net: &Network) -> String {
    let patient = create_patient(app, &net.gp, None).await;
    set_consent(app, &net.gp, &patient, "granted").await;
    add_member(app, &net.gp, &patient, &net.hospital).await;
    let mut plan = design_plan(None);
    plan["omt"]["temporary_adjustment"] = Value::Null;
    plan["analgesics"] = json!([plan["analgesics"][0].clone()]);
    app.request(
        Method::PUT,
        &format!("/api/v1/patients/{patient}/care-plan"),
        Some(&net.gp.token),
        Some(&plan),
    )
    .await
    .expect(201);
    patient
}

/// The hospital's proposal: methadone up to 80 mg and morphine for three days.
pub fn proposal() -> Value {
    let mut plan = design_plan(None);
    plan["omt"]["daily_dose_mg"] = json!(80);
    plan["omt"]["temporary_adjustment"] = Value::Null;
    plan.as_object_mut().unwrap().remove("change_summary");
    plan
}

/// A minimal discharge document Bundle for the patient with this INS:
/// methadone 60 mg once a day and paracetamol, ATC-coded.
pub fn discharge_bundle(ins: &str) -> Value {
    let mg = |v: f64| json!({"value": v, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"});
    json!({
        "resourceType": "Bundle",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{}", uuid::Uuid::now_v7())},
        "type": "document",
        "timestamp": "2026-11-24T10:00:00Z",
        "entry": [
            {"fullUrl": "urn:uuid:0b4f3c57-0000-4000-8000-000000000001", "resource": {
                "resourceType": "Composition", "status": "final",
                "type": {"coding": [{"system": "http://loinc.org", "code": "18842-5"}]},
                "subject": {"reference": "urn:uuid:0b4f3c57-0000-4000-8000-000000000002"},
                "date": "2026-11-24T10:00:00Z",
                "author": [{"display": "Service d'orthopédie"}],
                "title": "Compte rendu de sortie",
                "section": [{"title": "Séjour", "text": {"status": "generated",
                    "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Prothèse de genou, suites simples.</div>"}}]
            }},
            {"fullUrl": "urn:uuid:0b4f3c57-0000-4000-8000-000000000002", "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": ins}]
            }},
            {"fullUrl": "urn:uuid:0b4f3c57-0000-4000-8000-000000000003", "resource": {
                "resourceType": "MedicationRequest", "status": "active", "intent": "order",
                "subject": {"reference": "urn:uuid:0b4f3c57-0000-4000-8000-000000000002"},
                "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc", "code": "N07BC02"}]},
                "courseOfTherapyType": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy", "code": "continuous"}]},
                "dosageInstruction": [{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                    "doseAndRate": [{"doseQuantity": mg(60.0)}]}]
            }},
            {"fullUrl": "urn:uuid:0b4f3c57-0000-4000-8000-000000000004", "resource": {
                "resourceType": "MedicationRequest", "status": "active", "intent": "order",
                "subject": {"reference": "urn:uuid:0b4f3c57-0000-4000-8000-000000000002"},
                "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc", "code": "N02BE01"}]},
                "dosageInstruction": [{"timing": {"repeat": {"frequency": 4, "period": 1, "periodUnit": "d",
                        "boundsPeriod": {"start": "2026-11-24", "end": "2026-12-01"}}},
                    "doseAndRate": [{"doseQuantity": mg(1000.0)}]}]
            }}
        ]
    })
}

/// The id of the patient's thread, as `by` lists it.
pub async fn patient_thread(app: &TestApp, by: &Session, patient: &str) -> String {
    let list = app.get("/api/v1/threads", &by.token).await.expect(200);
    list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["subject"]["type"] == "patient" && t["subject"]["id"] == patient)
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .expect("the patient's thread")
}

/// What the audit rows of [`audit_outcomes`] are about.
pub enum AuditOn<'a> {
    Patient(&'a str),
    Resource(&'a str),
}

/// The outcomes of the audit rows by `actor` for `action` (a route
/// pattern, e.g. `GET /threads/{id}/messages`) about `on`, oldest first.
pub async fn audit_outcomes(
    app: &TestApp,
    actor: &str,
    action: &str,
    on: AuditOn<'_>,
) -> Vec<String> {
    use diesel::prelude::*;
    use relais::db::schema::audit_events;
    let (actor, action) = (actor.to_owned(), action.to_owned());
    let on = match on {
        AuditOn::Patient(p) => (Some(p.to_owned()), None),
        AuditOn::Resource(r) => (None, Some(r.to_owned())),
    };
    app.state
        .db
        .read(move |conn| {
            let mut query = audit_events::table
                .filter(audit_events::actor_id.eq(actor))
                .filter(audit_events::action.eq(action))
                .into_boxed();
            if let Some(patient) = on.0.clone() {
                query = query.filter(audit_events::patient_id.eq(patient));
            }
            if let Some(resource) = on.1.clone() {
                query = query.filter(audit_events::resource_id.eq(resource));
            }
            Ok(query
                .order(audit_events::seq)
                .select(audit_events::outcome)
                .load(conn)?)
        })
        .await
        .unwrap()
}
