//! FHIR R4 (4.0.1): Relais's records as FHIR resources, and a hospital's
//! discharge Bundle as a handover ([`discharge`]). Pure mapping over the
//! rows `store` reads, no I/O: the HTTP side is `api::fhir`.
//!
//! Identifier and code systems, as published:
//! - INS (NIR): `urn:oid:1.2.250.1.213.1.4.8`, type `INS-NIR` of FR Core's
//!   `https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203` (FR Core
//!   profile `fr-core-patient-ins`,
//!   <https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins>).
//! - RPPS: `urn:oid:1.2.250.1.71.4.2.1` (ANS; FR Core practitioner
//!   `idNatPs` slice), type `RPPS` of the same FR Core code system.
//! - Pain: LOINC `72514-3` "Pain severity - 0-10 verbal numeric rating
//!   [Score] - Reported" (<https://loinc.org/72514-3>).
//! - Drugs: WHO ATC, `http://www.whocc.no/atc` (the system URI FHIR R4
//!   lists for ATC, <http://hl7.org/fhir/R4/terminologies-systems.html>).
//! - Routes: SNOMED CT (`http://snomed.info/sct`), the codes of FHIR R4's
//!   example value set `route-codes`.
//! - The sedation score (0–4) and the COWS total (0–48) have no LOINC code
//!   we could verify: they carry a Relais code ([`RELAIS_OBSERVATION`]) and
//!   their name as text, rather than a LOINC code that might be wrong.

pub mod discharge;

use std::collections::HashMap;

use chrono::{NaiveDate, NaiveDateTime};
use serde_json::{Value, json};

use crate::db::models::{Organization, Patient, User};
use crate::domain::access::{ConsentStatus, TeamRole};
use crate::domain::drugs;
use crate::domain::patient::Sex;
use crate::domain::plan::{AnalgesicLine, Omt, PlanContent, PlanStatus, Route};
use crate::domain::workflow::ConsultationStatus;
use crate::store::care_plan::PlanVersionRow;
use crate::store::consultation::ConsultationRow;
use crate::store::fhir::{AuditRow, ConsentRow, ObservationRow, PatientRecord, TeamRow};
use crate::store::messaging::Message;

/// The FHIR version served.
pub const FHIR_VERSION: &str = "4.0.1";
/// The media type of every FHIR body.
pub const FHIR_JSON: &str = "application/fhir+json";

/// INS-NIR (ANS; FR Core `fr-core-patient-ins`).
pub const INS_SYSTEM: &str = "urn:oid:1.2.250.1.213.1.4.8";
/// RPPS (ANS; FR Core practitioner `idNatPs`).
pub const RPPS_SYSTEM: &str = "urn:oid:1.2.250.1.71.4.2.1";
/// FR Core's identifier types (codes `INS-NIR`, `RPPS`).
pub const FR_CORE_IDENTIFIER_TYPE: &str =
    "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203";
/// LOINC.
pub const LOINC: &str = "http://loinc.org";
/// LOINC 72514-3: pain severity 0–10, reported.
pub const LOINC_PAIN: &str = "72514-3";
/// LOINC 18842-5: discharge summary (the document's type).
pub const LOINC_DISCHARGE_SUMMARY: &str = "18842-5";
/// LOINC 8648-8: hospital course (the summary's section).
pub const LOINC_HOSPITAL_COURSE: &str = "8648-8";
/// LOINC 18776-5: plan of care note (the follow-up's section).
pub const LOINC_PLAN_OF_CARE: &str = "18776-5";
/// WHO ATC.
pub const ATC_SYSTEM: &str = "http://www.whocc.no/atc";
/// SNOMED CT.
pub const SNOMED: &str = "http://snomed.info/sct";
/// UCUM.
pub const UCUM: &str = "http://unitsofmeasure.org";
/// FHIR's course-of-therapy codes: `continuous` marks the OMT, `acute` a line.
pub const COURSE_OF_THERAPY: &str =
    "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy";
/// Relais's own codes, where no published system has one.
pub const RELAIS_OBSERVATION: &str = "https://relais.example/fhir/CodeSystem/observation";
/// Relais's drug catalogue codes (`GET /api/v1/drugs`).
pub const RELAIS_DRUG: &str = "https://relais.example/fhir/CodeSystem/drug";
/// Relais's roles and team roles.
pub const RELAIS_ROLE: &str = "https://relais.example/fhir/CodeSystem/role";
/// Relais's organisation kinds.
pub const RELAIS_ORG_KIND: &str = "https://relais.example/fhir/CodeSystem/organization-kind";
/// Relais's plan activities that are not medication (review, non-drug measures).
pub const RELAIS_ACTIVITY: &str = "https://relais.example/fhir/CodeSystem/plan-activity";
/// Relais's consultation statuses, as `Task.businessStatus` (plus `overdue`).
pub const RELAIS_CONSULTATION_STATUS: &str =
    "https://relais.example/fhir/CodeSystem/consultation-status";
/// The kinds of `Task.output` a consultation carries.
pub const RELAIS_TASK_OUTPUT: &str = "https://relais.example/fhir/CodeSystem/task-output";

/// FHIR `instant` of a stored UTC time.
pub fn instant(at: NaiveDateTime) -> String {
    at.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn date(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

fn reference(kind: &str, id: &str) -> Value {
    json!({ "reference": format!("{kind}/{id}") })
}

fn coding(system: &str, code: &str, display: Option<&str>) -> Value {
    let mut c = json!({"system": system, "code": code});
    if let Some(d) = display {
        c["display"] = json!(d);
    }
    c
}

/// The INS as FR Core's INS-NIR identifier.
fn ins_identifier(ins: &str) -> Value {
    json!({
        "use": "official",
        "type": {"coding": [coding(FR_CORE_IDENTIFIER_TYPE, "INS-NIR", Some("NIR définitif"))]},
        "system": INS_SYSTEM,
        "value": ins,
    })
}

/// A patient (FR Core: the INS as identifier when recorded).
pub fn patient(p: &Patient) -> Value {
    let mut r = json!({
        "resourceType": "Patient",
        "id": p.id,
        "meta": {"lastUpdated": instant(p.updated_at)},
        "active": true,
        "name": [{"use": "official", "family": p.family_name, "given": [p.given_names]}],
        "gender": match p.sex {
            Sex::Female => "female",
            Sex::Male => "male",
            Sex::Other => "other",
            Sex::Unknown => "unknown",
        },
        "birthDate": date(p.birth_date),
    });
    if let Some(ins) = &p.ins {
        r["identifier"] = json!([ins_identifier(ins)]);
    }
    if let Some(phone) = &p.phone {
        r["telecom"] = json!([{"system": "phone", "value": phone}]);
    }
    r
}

/// A user as a practitioner (the RPPS as identifier when recorded).
pub fn practitioner(u: &User) -> Value {
    let mut r = json!({
        "resourceType": "Practitioner",
        "id": u.id,
        "meta": {"lastUpdated": instant(u.updated_at)},
        "active": u.active,
        "name": [{"text": u.full_name}],
    });
    if let Some(rpps) = &u.rpps {
        r["identifier"] = json!([{
            "use": "official",
            "type": {"coding": [coding(FR_CORE_IDENTIFIER_TYPE, "RPPS", Some("N° RPPS"))]},
            "system": RPPS_SYSTEM,
            "value": rpps,
        }]);
    }
    let mut telecom = vec![json!({"system": "email", "value": u.email, "use": "work"})];
    if let Some(phone) = &u.phone {
        telecom.push(json!({"system": "phone", "value": phone, "use": "work"}));
    }
    r["telecom"] = json!(telecom);
    r
}

/// A user's role at their organisation.
pub fn practitioner_role(u: &User) -> Value {
    let mut r = json!({
        "resourceType": "PractitionerRole",
        "id": u.id,
        "active": u.active,
        "practitioner": reference("Practitioner", &u.id),
        "code": [{"coding": [coding(RELAIS_ROLE, u.role.as_str(), None)], "text": u.role.as_str()}],
    });
    if let Some(org) = &u.organization_id {
        r["organization"] = reference("Organization", org);
    }
    r
}

/// An organisation of the network.
pub fn organization(o: &Organization) -> Value {
    let mut r = json!({
        "resourceType": "Organization",
        "id": o.id,
        "active": true,
        "name": o.name,
        "type": [{"coding": [coding(RELAIS_ORG_KIND, o.kind.as_str(), None)], "text": o.kind.as_str()}],
    });
    let mut telecom = Vec::new();
    if let Some(email) = &o.email {
        telecom.push(json!({"system": "email", "value": email}));
    }
    if let Some(phone) = &o.phone {
        telecom.push(json!({"system": "phone", "value": phone}));
    }
    if !telecom.is_empty() {
        r["telecom"] = json!(telecom);
    }
    r
}

/// The patient's care team (one per patient: its id is the patient's),
/// ended memberships included with their period.
pub fn care_team(patient_id: &str, team: &[TeamRow], users: &HashMap<String, User>) -> Value {
    let participants: Vec<Value> = team
        .iter()
        .map(|m| {
            let role = m.team_role;
            let mut p = json!({
                "role": [{"coding": [coding(RELAIS_ROLE, role.as_str(), None)], "text": role.as_str()}],
                "member": reference("Practitioner", &m.user_id),
                "period": {"start": instant(m.since)},
            });
            if let Some(until) = m.until {
                p["period"]["end"] = json!(instant(until));
            }
            if let Some(org) = users.get(&m.user_id).and_then(|u| u.organization_id.as_deref()) {
                p["onBehalfOf"] = reference("Organization", org);
            }
            p
        })
        .collect();
    let mut r = json!({
        "resourceType": "CareTeam",
        "id": patient_id,
        "status": "active",
        "name": "Care team",
        "subject": reference("Patient", patient_id),
    });
    let referent_org = team
        .iter()
        .find(|m| m.until.is_none() && m.team_role == TeamRole::Referent)
        .and_then(|m| users.get(&m.user_id))
        .and_then(|u| u.organization_id.as_deref());
    if let Some(org) = referent_org {
        r["managingOrganization"] = json!([reference("Organization", org)]);
    }
    if !participants.is_empty() {
        r["participant"] = json!(participants);
    }
    r
}

/// The consent decisions, oldest first: the latest as recorded, earlier
/// ones `inactive` (superseded).
pub fn consents(patient_id: &str, rows: &[ConsentRow]) -> Vec<Value> {
    let last = rows.len().saturating_sub(1);
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let status = row.status;
            let (fhir_status, provision) = match status {
                ConsentStatus::Granted => ("active", "permit"),
                ConsentStatus::Refused => ("rejected", "deny"),
                ConsentStatus::Withdrawn => ("inactive", "deny"),
            };
            json!({
                "resourceType": "Consent",
                "id": row.id,
                "status": if i == last { fhir_status } else { "inactive" },
                "scope": {"coding": [coding("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy", Some("Privacy Consent"))]},
                "category": [{"coding": [coding(LOINC, "59284-0", Some("Patient Consent"))]}],
                "patient": reference("Patient", patient_id),
                "dateTime": instant(row.recorded_at),
                "performer": [reference("Practitioner", &row.recorded_by)],
                "policyRule": {"text": "Code de la santé publique, L1110-4: sharing beyond one care team"},
                "provision": {"type": provision},
            })
        })
        .collect()
}

/// FHIR's plan status.
fn plan_status(status: PlanStatus) -> &'static str {
    match status {
        PlanStatus::Draft => "draft",
        PlanStatus::Active => "active",
        PlanStatus::OnHold => "on-hold",
        PlanStatus::Completed => "completed",
        PlanStatus::Revoked => "revoked",
    }
}

/// Relais's plan status from FHIR's.
pub fn plan_status_of(fhir: &str) -> Option<PlanStatus> {
    Some(match fhir {
        "draft" => PlanStatus::Draft,
        "active" => PlanStatus::Active,
        "on-hold" => PlanStatus::OnHold,
        "completed" => PlanStatus::Completed,
        "revoked" => PlanStatus::Revoked,
        _ => return None,
    })
}

/// The id of a plan version's MedicationRequest: the OMT (`line = None`)
/// or a line (its index). FHIR ids allow `[A-Za-z0-9.-]{1,64}`: a UUID, a
/// dot, the version, a dot, `omt` or the index.
pub fn medication_request_id(patient_id: &str, version: i32, line: Option<usize>) -> String {
    match line {
        None => format!("{patient_id}.{version}.omt"),
        Some(i) => format!("{patient_id}.{version}.{i}"),
    }
}

/// Which MedicationRequest an id names: (patient, version, line).
pub fn parse_medication_request_id(id: &str) -> Option<(String, i32, Option<usize>)> {
    let mut parts = id.rsplitn(3, '.');
    let which = parts.next()?;
    let version = parts.next()?.parse().ok()?;
    let patient = uuid::Uuid::parse_str(parts.next()?).ok()?.to_string();
    let line = match which {
        "omt" => None,
        i => Some(i.parse().ok()?),
    };
    Some((patient, version, line))
}

/// SNOMED CT route codes (FHIR R4 example value set `route-codes`).
pub fn route_code(route: Route) -> (&'static str, &'static str) {
    match route {
        Route::Oral => ("26643006", "Oral route"),
        Route::Sublingual => ("37839007", "Sublingual route"),
        Route::Intravenous => ("47625008", "Intravenous route"),
        Route::Intramuscular => ("78421000", "Intramuscular route"),
        Route::Subcutaneous => ("34206005", "Subcutaneous route"),
        Route::Transdermal => ("45890007", "Transdermal route"),
        Route::Rectal => ("37161004", "Rectal route"),
        Route::Intranasal => ("46713006", "Nasal route"),
    }
}

/// The route a SNOMED CT code names.
pub fn route_of(code: &str) -> Option<Route> {
    Route::ALL
        .iter()
        .copied()
        .find(|r| route_code(*r).0 == code)
}

fn mg(value: f64) -> Value {
    json!({"value": value, "unit": "mg", "system": UCUM, "code": "mg"})
}

fn medication(code: &str) -> Value {
    match drugs::find(code) {
        Some(d) => json!({
            "coding": [coding(ATC_SYSTEM, d.atc, Some(d.name)), coding(RELAIS_DRUG, d.code, Some(d.name))],
            "text": d.name,
        }),
        None => json!({"coding": [coding(RELAIS_DRUG, code, None)], "text": code}),
    }
}

fn route(route: Route) -> Value {
    let (code, display) = route_code(route);
    json!({"coding": [coding(SNOMED, code, Some(display))], "text": route.as_str()})
}

fn course(code: &str) -> Value {
    json!({"coding": [coding(COURSE_OF_THERAPY, code, None)]})
}

/// The OMT's dosages: the usual one (`sequence` 1; `maxDosePerPeriod` keeps
/// the exact daily total) and the temporary adjustment as a second dosage
/// bounded by its period (`sequence` 2), its reason as text.
fn omt_dosages(omt: &Omt, daily: f64, per_day: u8) -> Vec<Value> {
    let medication = omt.medication.drug_code().and_then(drugs::find);
    let usual_route = medication.map(|d| d.route).unwrap_or(Route::Oral);
    let dosage = |daily: f64, per_day: u8| {
        json!({
            "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}},
            "route": route(usual_route),
            "doseAndRate": [{"doseQuantity": mg(daily / f64::from(per_day.max(1)))}],
            "maxDosePerPeriod": {"numerator": mg(daily), "denominator": {"value": 1, "unit": "d", "system": UCUM, "code": "d"}},
        })
    };
    let mut out = vec![dosage(daily, per_day)];
    out[0]["sequence"] = json!(1);
    if let Some(adj) = &omt.temporary_adjustment {
        let mut d = dosage(adj.daily_dose_mg, adj.doses_per_day);
        d["sequence"] = json!(2);
        d["text"] = json!(adj.reason);
        let mut bounds = json!({"start": date(adj.start)});
        if let Some(end) = adj.end {
            bounds["end"] = json!(date(end));
        }
        d["timing"]["repeat"]["boundsPeriod"] = bounds;
        out.push(d);
    }
    out
}

fn line_dosage(line: &AnalgesicLine) -> Value {
    let repeat = match (line.times_per_day, line.interval_h) {
        (Some(times), _) => json!({"frequency": times, "period": 1, "periodUnit": "d"}),
        (None, Some(hours)) => json!({"frequency": 1, "period": hours, "periodUnit": "h"}),
        (None, None) => json!({"frequency": 1, "period": 1, "periodUnit": "d"}),
    };
    let mut d = json!({
        "sequence": 1,
        "timing": {"repeat": repeat},
        "asNeededBoolean": line.as_needed,
        "route": route(line.route),
        "doseAndRate": [{"doseQuantity": mg(line.dose_mg)}],
    });
    let mut bounds = json!({"start": date(line.start)});
    if let Some(end) = line.end {
        bounds["end"] = json!(date(end));
    }
    d["timing"]["repeat"]["boundsPeriod"] = bounds;
    if let Some(max) = line.max_daily_mg {
        d["maxDosePerPeriod"] = json!({"numerator": mg(max), "denominator": {"value": 1, "unit": "d", "system": UCUM, "code": "d"}});
    }
    d
}

/// Where a version stands for its MedicationRequests: `current` is whether
/// it is the plan in force, `today` the network's today.
#[derive(Debug, Clone, Copy)]
pub struct PlanMoment {
    pub current: bool,
    pub today: NaiveDate,
}

fn request_status(plan: PlanStatus, moment: PlanMoment, end: Option<NaiveDate>) -> &'static str {
    if !moment.current {
        // A superseded version's prescriptions no longer apply.
        return "stopped";
    }
    match plan {
        PlanStatus::Draft => "draft",
        PlanStatus::OnHold => "on-hold",
        PlanStatus::Completed => "completed",
        PlanStatus::Revoked => "stopped",
        PlanStatus::Active if end.is_some_and(|end| end < moment.today) => "completed",
        PlanStatus::Active => "active",
    }
}

/// The MedicationRequests of a plan version: the OMT's first (unless it is
/// `none`), then one per analgesic line, in order.
pub fn medication_requests(
    row: &PlanVersionRow,
    content: &PlanContent,
    moment: PlanMoment,
) -> Vec<Value> {
    let pid = &row.patient_id;
    let author = &row.author_id;
    let mut out = Vec::new();
    let base = |id: String, status: &str, requester: &str| {
        json!({
            "resourceType": "MedicationRequest",
            "id": id,
            "meta": {"versionId": row.version.to_string(), "lastUpdated": instant(row.created_at)},
            "status": status,
            "intent": "order",
            "subject": reference("Patient", pid),
            "authoredOn": instant(row.created_at),
            "requester": reference("Practitioner", requester),
            "basedOn": [reference("CarePlan", pid)],
        })
    };
    let omt = &content.omt;
    if let (Some(code), Some(daily), Some(per_day)) = (
        omt.medication.drug_code(),
        omt.daily_dose_mg,
        omt.doses_per_day,
    ) {
        let mut r = base(
            medication_request_id(pid, row.version, None),
            request_status(content.status, moment, None),
            omt.prescriber_id.as_deref().unwrap_or(author),
        );
        r["medicationCodeableConcept"] = medication(code);
        r["courseOfTherapyType"] = course("continuous");
        r["dosageInstruction"] = json!(omt_dosages(omt, daily, per_day));
        if let Some(pharmacy) = &omt.dispensing_pharmacy_id {
            r["dispenseRequest"] = json!({"performer": reference("Organization", pharmacy)});
        }
        out.push(r);
    }
    for (i, line) in content.analgesics.iter().enumerate() {
        let mut r = base(
            medication_request_id(pid, row.version, Some(i)),
            request_status(content.status, moment, line.end),
            line.prescriber_id.as_deref().unwrap_or(author),
        );
        r["medicationCodeableConcept"] = medication(&line.drug);
        r["courseOfTherapyType"] = course("acute");
        r["dosageInstruction"] = json!([line_dosage(line)]);
        let mut validity = json!({"start": date(line.start)});
        if let Some(end) = line.end {
            validity["end"] = json!(date(end));
        }
        r["dispenseRequest"] = json!({"validityPeriod": validity});
        if let Some(note) = line.note.as_deref().filter(|n| !n.trim().is_empty()) {
            r["note"] = json!([{"text": note}]);
        }
        out.push(r);
    }
    out
}

/// The care plan (its id is the patient's; `meta.versionId` is the plan
/// version), the pain goal as a contained `Goal`, activities referencing
/// the version's MedicationRequests, the non-drug measures and the review.
pub fn care_plan(row: &PlanVersionRow, content: &PlanContent) -> Value {
    let pid = &row.patient_id;
    let mut activities: Vec<Value> = Vec::new();
    if content.omt.medication.drug_code().is_some() {
        activities.push(json!({"reference": reference("MedicationRequest", &medication_request_id(pid, row.version, None))}));
    }
    for i in 0..content.analgesics.len() {
        activities.push(json!({"reference": reference("MedicationRequest", &medication_request_id(pid, row.version, Some(i)))}));
    }
    if let Some(measures) = content.non_drug_measures.as_deref() {
        activities.push(json!({"detail": {
            "code": {"coding": [coding(RELAIS_ACTIVITY, "non-drug-measures", Some("Non-drug measures"))]},
            "status": "in-progress",
            "description": measures,
        }}));
    }
    if let Some(review) = content.review_date {
        activities.push(json!({"detail": {
            "kind": "Appointment",
            "code": {"coding": [coding(RELAIS_ACTIVITY, "review", Some("Plan review"))]},
            "status": "scheduled",
            "scheduledPeriod": {"start": date(review)},
        }}));
    }
    let mut r = json!({
        "resourceType": "CarePlan",
        "id": pid,
        "meta": {"versionId": row.version.to_string(), "lastUpdated": instant(row.created_at)},
        "status": plan_status(content.status),
        "intent": "plan",
        "title": "Analgesic plan",
        "description": row.change_summary,
        "subject": reference("Patient", pid),
        "created": instant(row.created_at),
        "author": reference("Practitioner", &row.author_id),
        "careTeam": [reference("CareTeam", pid)],
    });
    if let Some(goal) = content.pain_goal.as_deref() {
        r["contained"] = json!([{
            "resourceType": "Goal",
            "id": "pain-goal",
            "lifecycleStatus": "active",
            "description": {"text": goal},
            "subject": reference("Patient", pid),
        }]);
        r["goal"] = json!([{"reference": "#pain-goal"}]);
    }
    if !activities.is_empty() {
        r["activity"] = json!(activities);
    }
    if r["description"]
        .as_str()
        .is_some_and(|d| d.trim().is_empty())
    {
        r.as_object_mut().map(|o| o.remove("description"));
    }
    r
}

/// Each measure of an observation row as its own Observation: pain
/// (LOINC 72514-3), sedation, COWS (Relais codes), dose dispensed.
pub fn observations(patient_id: &str, row: &ObservationRow) -> Vec<Value> {
    let mut out = Vec::new();
    let base = |suffix: &str, code: Value| {
        let mut o = json!({
            "resourceType": "Observation",
            "id": format!("{}.{suffix}", row.id),
            "status": "final",
            "category": [{"coding": [coding("http://terminology.hl7.org/CodeSystem/observation-category", "survey", Some("Survey"))]}],
            "code": code,
            "subject": reference("Patient", patient_id),
            "effectiveDateTime": instant(row.recorded_at),
            "issued": instant(row.recorded_at),
            "performer": [reference("Practitioner", &row.author_id)],
        });
        if let Some(note) = row.note.as_deref().filter(|n| !n.trim().is_empty()) {
            o["note"] = json!([{"text": note}]);
        }
        o
    };
    if let Some(score) = row.pain_score {
        let mut o = base(
            "pain",
            json!({
                "coding": [coding(LOINC, LOINC_PAIN, Some("Pain severity - 0-10 verbal numeric rating [Score] - Reported"))],
                "text": "Pain 0-10",
            }),
        );
        o["valueInteger"] = json!(score);
        out.push(o);
    }
    if let Some(score) = row.sedation_score {
        let mut o = base(
            "sedation",
            json!({"coding": [coding(RELAIS_OBSERVATION, "sedation", Some("Sedation score 0-4"))], "text": "Sedation 0-4"}),
        );
        o["valueInteger"] = json!(score);
        out.push(o);
    }
    if let Some(score) = row.cows_score {
        let mut o = base(
            "cows",
            json!({"coding": [coding(RELAIS_OBSERVATION, "cows", Some("Clinical Opiate Withdrawal Scale total 0-48"))], "text": "COWS 0-48"}),
        );
        o["valueInteger"] = json!(score);
        out.push(o);
    }
    if let Some(dose) = row.dose_dispensed_mg {
        let mut o = base(
            "dispensed",
            json!({"coding": [coding(RELAIS_OBSERVATION, "dose-dispensed", Some("Dose dispensed"))], "text": "Dose dispensed"}),
        );
        o["category"] = json!([{"coding": [coding("http://terminology.hl7.org/CodeSystem/observation-category", "therapy", Some("Therapy"))]}]);
        o["valueQuantity"] = mg(dose);
        out.push(o);
    }
    out
}

/// A message of the patient's thread.
pub fn communication(patient_id: &str, m: &Message) -> Value {
    thread_communication(Some(patient_id), None, m)
}

/// A message of a thread: about `patient_id` (if any), part of the
/// consultation `part_of` (`ServiceRequest/<id>`) for a consultation's thread.
pub fn thread_communication(patient_id: Option<&str>, part_of: Option<&str>, m: &Message) -> Value {
    let mut r = json!({
        "resourceType": "Communication",
        "id": m.id,
        "status": "completed",
        "sent": instant(m.created_at),
        "sender": reference("Practitioner", &m.author_id),
        "payload": [{"contentString": m.body}],
    });
    if let Some(patient_id) = patient_id {
        r["subject"] = reference("Patient", patient_id);
    }
    if let Some(consultation) = part_of {
        r["partOf"] = json!([reference("ServiceRequest", consultation)]);
    }
    r
}

/// When a consultation last changed (its newest timestamp).
fn consultation_changed(row: &ConsultationRow) -> NaiveDateTime {
    [
        row.accepted_at,
        row.answered_at,
        row.declined_at,
        row.closed_at,
        row.cancelled_at,
        row.escalated_at,
    ]
    .into_iter()
    .flatten()
    .fold(row.created_at, NaiveDateTime::max)
}

/// The subject of a consultation: its patient, or a display-only
/// reference when it names none (advice about no one in particular).
fn consultation_subject(row: &ConsultationRow) -> Value {
    match &row.patient_id {
        Some(p) => reference("Patient", p),
        None => json!({"display": "No patient named"}),
    }
}

/// A consultation as the GP's request (`ServiceRequest`, same id as its
/// `Task`): `active` while open (submitted, accepted, answered),
/// `completed` once the requester closed it, `revoked` when declined by the
/// centre or cancelled by the requester (the request no longer stands).
pub fn service_request(row: &ConsultationRow) -> Value {
    let status = match row.status {
        ConsultationStatus::Submitted
        | ConsultationStatus::Accepted
        | ConsultationStatus::Answered => "active",
        ConsultationStatus::Closed => "completed",
        ConsultationStatus::Declined | ConsultationStatus::Cancelled => "revoked",
    };
    json!({
        "resourceType": "ServiceRequest",
        "id": row.id,
        "meta": {"lastUpdated": instant(consultation_changed(row))},
        "status": status,
        "intent": "order",
        "priority": row.priority.as_str(),
        "code": {"text": "Advice from an addiction or pain centre"},
        "subject": consultation_subject(row),
        "authoredOn": instant(row.created_at),
        "requester": reference("Practitioner", &row.requester_id),
        "performer": [reference("Organization", &row.centre_id)],
        "note": [{"text": row.question}],
    })
}

/// The proposed plan of an answer as a contained CarePlan (`#proposal`,
/// intent `proposal`, status `draft`): one activity per medication, ATC
/// coded, with its daily amount.
fn proposal_care_plan(row: &ConsultationRow, plan: &PlanContent) -> Value {
    let mut activities = Vec::new();
    if let (Some(code), Some(daily)) = (plan.omt.medication.drug_code(), plan.omt.daily_dose_mg) {
        activities.push(json!({"detail": {
            "kind": "MedicationRequest",
            "status": "not-started",
            "productCodeableConcept": medication(code),
            "dailyAmount": mg(daily),
            "description": "Opioid maintenance treatment",
        }}));
    }
    for line in &plan.analgesics {
        let mut detail = json!({
            "kind": "MedicationRequest",
            "status": "not-started",
            "productCodeableConcept": medication(&line.drug),
            "quantity": mg(line.dose_mg),
            "description": if line.as_needed { "Analgesic, as needed" } else { "Analgesic" },
        });
        if let Some(max) = line.max_daily_mg {
            detail["dailyAmount"] = mg(max);
        }
        activities.push(json!({"detail": detail}));
    }
    let mut r = json!({
        "resourceType": "CarePlan",
        "id": "proposal",
        "status": "draft",
        "intent": "proposal",
        "title": "Proposed analgesic plan",
        "subject": consultation_subject(row),
    });
    if let Some(goal) = plan.pain_goal.as_deref() {
        r["description"] = json!(format!("Pain goal: {goal}"));
    }
    if !activities.is_empty() {
        r["activity"] = json!(activities);
    }
    r
}

fn task_output(code: &str, display: &str, value: (&str, Value)) -> Value {
    let mut o = json!({"type": {"coding": [coding(RELAIS_TASK_OUTPUT, code, Some(display))], "text": display}});
    o[value.0] = value.1;
    o
}

/// A consultation's lifecycle as a `Task` (same id as its ServiceRequest,
/// which it is `basedOn` and `focus`es). FHIR R4 Task.status, per Relais
/// status: submitted → `requested`; accepted → `accepted` (the centre
/// agreed, no answer yet); answered → `completed` (the centre's work is
/// done); closed → `completed` too (the requester closed it); declined →
/// `rejected` (the decline reason as `statusReason`); cancelled →
/// `cancelled`. `businessStatus` keeps the Relais status, and says
/// `overdue` instead while the centre has not answered past `due_at` (the
/// due time is `restriction.period.end`). Once answered, `output` carries
/// the answer and the proposed plan (a contained CarePlan `#proposal`), and
/// the plan version made by applying it (`CarePlan/<patient id>`).
pub fn task(row: &ConsultationRow, now: NaiveDateTime) -> Value {
    let status = match row.status {
        ConsultationStatus::Submitted => "requested",
        ConsultationStatus::Accepted => "accepted",
        ConsultationStatus::Answered | ConsultationStatus::Closed => "completed",
        ConsultationStatus::Declined => "rejected",
        ConsultationStatus::Cancelled => "cancelled",
    };
    let overdue = row.status.awaits_answer() && row.due_at <= now;
    let business = if overdue {
        "overdue"
    } else {
        row.status.as_str()
    };
    let owner = match &row.accepted_by {
        Some(specialist) => reference("Practitioner", specialist),
        None => reference("Organization", &row.centre_id),
    };
    let mut r = json!({
        "resourceType": "Task",
        "id": row.id,
        "meta": {"lastUpdated": instant(consultation_changed(row))},
        "basedOn": [reference("ServiceRequest", &row.id)],
        "status": status,
        "businessStatus": {"coding": [coding(RELAIS_CONSULTATION_STATUS, business, None)], "text": business},
        "intent": "order",
        "priority": row.priority.as_str(),
        "focus": reference("ServiceRequest", &row.id),
        "authoredOn": instant(row.created_at),
        "lastModified": instant(consultation_changed(row)),
        "requester": reference("Practitioner", &row.requester_id),
        "owner": owner,
        "restriction": {"period": {"end": instant(row.due_at)}},
    });
    if let Some(patient) = &row.patient_id {
        r["for"] = reference("Patient", patient);
    }
    if let Some(start) = row.accepted_at.or(row.answered_at) {
        let mut period = json!({"start": instant(start)});
        let end = row
            .answered_at
            .or(row.declined_at)
            .or(row.cancelled_at)
            .or(row.closed_at);
        if let Some(end) = end {
            period["end"] = json!(instant(end));
        }
        r["executionPeriod"] = period;
    }
    if let Some(reason) = row.decline_reason.as_deref() {
        r["statusReason"] = json!({"text": reason});
    }
    let mut output = Vec::new();
    if let Some(answer) = row.answer.as_deref() {
        output.push(task_output(
            "answer",
            "Answer",
            ("valueString", json!(answer)),
        ));
    }
    if let Some(plan) = row.proposal() {
        r["contained"] = json!([proposal_care_plan(row, plan)]);
        output.push(task_output(
            "proposed-plan",
            "Proposed plan",
            ("valueReference", json!({"reference": "#proposal"})),
        ));
    }
    if let (Some(version), Some(patient)) = (row.applied_plan_version, &row.patient_id) {
        let mut applied = reference("CarePlan", patient);
        applied["display"] = json!(format!("Care plan version {version}"));
        output.push(task_output(
            "applied-plan",
            "Applied plan version",
            ("valueReference", applied),
        ));
    }
    if !output.is_empty() {
        r["output"] = json!(output);
    }
    r
}

/// One row of the patient's audit trail (DICOM/FHIR audit codes).
pub fn audit_event(patient_id: &str, row: &AuditRow) -> Value {
    let method = row.action.split(' ').next().unwrap_or_default();
    let action = match method {
        "GET" => "R",
        "POST" => "C",
        "PUT" | "PATCH" => "U",
        "DELETE" => "D",
        _ => "E",
    };
    let mut agent = json!({"requestor": true});
    match &row.actor_id {
        Some(actor) => agent["who"] = reference("Practitioner", actor),
        None => agent["who"] = json!({"display": "system"}),
    }
    if let Some(role) = &row.actor_role {
        agent["role"] = json!([{"coding": [coding(RELAIS_ROLE, role, None)]}]);
    }
    let mut entity = json!({"what": reference("Patient", patient_id)});
    entity["description"] = json!(
        format!(
            "{} {}",
            row.resource_type,
            row.resource_id.as_deref().unwrap_or("")
        )
        .trim()
        .to_owned()
    );
    json!({
        "resourceType": "AuditEvent",
        "id": row.id,
        "type": coding("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", Some("RESTful Operation")),
        "action": action,
        "recorded": instant(row.at),
        "outcome": if row.outcome == "allowed" { "0" } else { "4" },
        "outcomeDesc": row.outcome,
        "agent": [agent],
        "source": {"observer": {"display": "Relais"}},
        "entity": [entity],
    })
}

/// One entry of a search Bundle.
pub fn entry(base: &str, resource: Value, mode: &str) -> Value {
    let kind = resource["resourceType"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let id = resource["id"].as_str().unwrap_or_default().to_owned();
    json!({
        "fullUrl": format!("{base}/{kind}/{id}"),
        "resource": resource,
        "search": {"mode": mode},
    })
}

/// A `searchset` Bundle of `resources` (matches), `self` being the request.
pub fn searchset(base: &str, self_url: &str, resources: Vec<Value>, now: NaiveDateTime) -> Value {
    let total = resources.len();
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|r| entry(base, r, "match"))
        .collect();
    let mut b = json!({
        "resourceType": "Bundle",
        "id": crate::db::models::new_id(),
        "meta": {"lastUpdated": instant(now)},
        "type": "searchset",
        "total": total,
        "link": [{"relation": "self", "url": self_url}],
    });
    if !entries.is_empty() {
        b["entry"] = json!(entries);
    }
    b
}

/// Everything about the patient as resources, the Patient first, then the
/// people and organisations it names, the care team, consents, the current
/// plan and its MedicationRequests, observations, the consultations the
/// caller is a party to (ServiceRequest and Task each) and messages: the
/// first page of `$everything` (the record carries that page's
/// observations and messages only; the API pages the rest).
pub fn everything(
    record: &PatientRecord,
    consultations: &[ConsultationRow],
    today: NaiveDate,
    now: NaiveDateTime,
) -> Vec<Value> {
    let pid = &record.patient.id;
    let mut out = vec![patient(&record.patient)];
    let mut users: Vec<&User> = record.users.values().collect();
    users.sort_by(|a, b| a.id.cmp(&b.id));
    for u in &users {
        out.push(practitioner(u));
        out.push(practitioner_role(u));
    }
    let mut orgs: Vec<&Organization> = record.organizations.values().collect();
    orgs.sort_by(|a, b| a.id.cmp(&b.id));
    out.extend(orgs.into_iter().map(organization));
    out.push(care_team(pid, &record.team, &record.users));
    out.extend(consents(pid, &record.consents));
    if let Some(row) = &record.plan {
        let content = &row.content;
        out.push(care_plan(row, content));
        out.extend(medication_requests(
            row,
            content,
            PlanMoment {
                current: true,
                today,
            },
        ));
    }
    for o in &record.observations {
        out.extend(observations(pid, o));
    }
    for c in consultations {
        out.push(service_request(c));
        out.push(task(c, now));
    }
    out.extend(record.messages.iter().map(|m| communication(pid, m)));
    out
}

/// An OperationOutcome with one issue per `(expression, message)`, or one
/// without expression when there is none.
pub fn operation_outcome(code: &str, diagnostics: &str, fields: &[(String, String)]) -> Value {
    let issues: Vec<Value> = if fields.is_empty() {
        vec![json!({"severity": "error", "code": code, "diagnostics": diagnostics})]
    } else {
        fields
            .iter()
            .map(|(field, message)| {
                json!({"severity": "error", "code": code, "diagnostics": message, "expression": [field]})
            })
            .collect()
    };
    json!({"resourceType": "OperationOutcome", "issue": issues})
}

/// The OperationOutcome issue type of an HTTP error status.
pub fn issue_code(status: u16) -> &'static str {
    match status {
        400 => "structure",
        401 => "login",
        403 => "forbidden",
        404 => "not-found",
        405 => "not-supported",
        409 | 412 => "conflict",
        413 => "too-costly",
        422 => "invalid",
        428 => "required",
        429 => "throttled",
        503 => "transient",
        _ => "exception",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medication_request_ids_round_trip_and_fit_fhir() {
        let pid = uuid::Uuid::now_v7().to_string();
        for line in [None, Some(0), Some(17)] {
            let id = medication_request_id(&pid, 50, line);
            assert!(id.len() <= 64);
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            );
            assert_eq!(
                parse_medication_request_id(&id),
                Some((pid.clone(), 50, line))
            );
        }
        assert_eq!(parse_medication_request_id("nope.1.omt"), None);
        assert_eq!(parse_medication_request_id(&format!("{pid}.x.omt")), None);
    }

    #[test]
    fn every_route_has_a_distinct_snomed_code() {
        for r in Route::ALL {
            assert_eq!(route_of(route_code(*r).0), Some(*r));
        }
    }

    #[test]
    fn outcome_names_each_field() {
        let o = operation_outcome("invalid", "bad", &[("Bundle.entry[1]".into(), "x".into())]);
        assert_eq!(o["issue"][0]["expression"][0], "Bundle.entry[1]");
        assert_eq!(issue_code(404), "not-found");
    }
}
