//! A hospital's discharge as a FHIR Bundle, both ways: [`document`] writes
//! a plan as a discharge-summary document, [`read`] maps a posted Bundle
//! (`document` or `collection`) to what a handover needs, naming the entry
//! and element (FHIRPath) of everything it cannot map. Pure: the patient,
//! the prescribers named by RPPS and the addressee are looked up by the
//! caller (`api::fhir`).

use chrono::{NaiveDate, NaiveDateTime};
use serde_json::{Value, json};

use super::*;
use crate::domain::drugs;
use crate::domain::ins::Ins;
use crate::domain::plan::{OmtMedication, TemporaryAdjustment};
use crate::error::FieldError;

/// Who the Bundle says the patient is.
#[derive(Debug, Clone, PartialEq)]
pub enum PatientKey {
    Ins(String),
    Id(String),
}

/// Who a MedicationRequest's `requester` names.
#[derive(Debug, Clone, PartialEq)]
pub enum Prescriber {
    Id(String),
    Rpps(String),
}

/// Where a plan field came from in the Bundle, to name it in errors.
#[derive(Debug, Clone, Default)]
pub struct Paths {
    pub composition: String,
    pub patient: String,
    pub omt: Option<String>,
    pub lines: Vec<String>,
    pub care_plan: Option<String>,
}

impl Paths {
    /// The Bundle path of a handover field (`summary`,
    /// `proposed_plan.analgesics[1].end`, …).
    pub fn of(&self, field: &str) -> String {
        let Some(rest) = field.strip_prefix("proposed_plan.") else {
            return match field {
                "summary" | "follow_up" => format!("{}.section", self.composition),
                "discharge_date" => format!("{}.date", self.composition),
                "to_user_id" => "to".to_owned(),
                _ => "Bundle".to_owned(),
            };
        };
        if let Some(line) = rest.strip_prefix("analgesics[")
            && let Some((index, _)) = line.split_once(']')
            && let Some(path) = index.parse::<usize>().ok().and_then(|i| self.lines.get(i))
        {
            return path.clone();
        }
        if rest.starts_with("omt")
            && let Some(path) = &self.omt
        {
            return path.clone();
        }
        self.care_plan
            .clone()
            .unwrap_or_else(|| "Bundle".to_owned())
    }
}

/// What a discharge Bundle says.
#[derive(Debug, Clone)]
pub struct Discharge {
    pub patient: PatientKey,
    pub summary: String,
    pub follow_up: Option<String>,
    pub discharge_date: NaiveDate,
    pub plan: PlanContent,
    /// Prescribers still to look up, by RPPS: (OMT or line index, RPPS, path).
    pub rpps: Vec<(Option<usize>, String, String)>,
    pub paths: Paths,
}

fn text_of_div(div: &str) -> String {
    // Narrative XHTML to text: tags dropped, the five XML entities decoded.
    let mut out = String::with_capacity(div.len());
    let mut in_tag = false;
    for c in div.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
        .trim()
        .to_owned()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn narrative(text: &str) -> Value {
    json!({"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{}</div>", escape(text))})
}

fn has_code(concept: &Value, system: &str, code: &str) -> bool {
    concept["coding"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["system"] == system && c["code"] == code)
    })
}

/// The plan version `row` as a discharge-summary document Bundle written
/// by `author`: Composition (summary and follow-up sections), Patient,
/// CarePlan, MedicationRequests.
#[allow(clippy::too_many_arguments)]
pub fn document(
    base: &str,
    patient_row: &crate::db::models::Patient,
    row: &PlanVersionRow,
    content: &PlanContent,
    author: &str,
    summary: &str,
    follow_up: Option<&str>,
    discharge_date: NaiveDate,
    now: NaiveDateTime,
) -> Value {
    let moment = PlanMoment {
        current: true,
        today: discharge_date,
    };
    let mut resources = vec![patient(patient_row), care_plan(row, content)];
    resources.extend(medication_requests(row, content, moment));
    let mut sections = vec![json!({
        "title": "Hospital course",
        "code": {"coding": [coding(LOINC, LOINC_HOSPITAL_COURSE, Some("Hospital course Narrative"))]},
        "text": narrative(summary),
    })];
    if let Some(follow_up) = follow_up {
        sections.push(json!({
            "title": "Follow-up",
            "code": {"coding": [coding(LOINC, LOINC_PLAN_OF_CARE, Some("Plan of care note"))]},
            "text": narrative(follow_up),
        }));
    }
    let mut entries = vec![json!({
        "fullUrl": format!("urn:uuid:{}", crate::db::models::new_id()),
        "resource": {
            "resourceType": "Composition",
            "status": "final",
            "type": {"coding": [coding(LOINC, LOINC_DISCHARGE_SUMMARY, Some("Discharge summary"))]},
            "subject": reference("Patient", &patient_row.id),
            "date": instant(now),
            "author": [reference("Practitioner", author)],
            "title": "Discharge summary",
            "event": [{"period": {"end": date(discharge_date)}}],
            "section": sections,
        },
    })];
    entries.extend(resources.into_iter().map(|r| {
        let kind = r["resourceType"].as_str().unwrap_or_default().to_owned();
        let id = r["id"].as_str().unwrap_or_default().to_owned();
        json!({"fullUrl": format!("{base}/{kind}/{id}"), "resource": r})
    }));
    json!({
        "resourceType": "Bundle",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{}", crate::db::models::new_id())},
        "type": "document",
        "timestamp": instant(now),
        "entry": entries,
    })
}

struct Reader<'a> {
    entries: &'a [Value],
    errors: Vec<FieldError>,
}

impl Reader<'_> {
    fn fail(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }

    /// The entry a reference names: `Type/id` against entries' ids or
    /// full URLs, or a full URL (`urn:uuid:…`).
    fn resolve(&self, reference: &str) -> Option<(usize, &Value)> {
        self.entries.iter().enumerate().find_map(|(i, e)| {
            let r = &e["resource"];
            let by_url = e["fullUrl"]
                .as_str()
                .is_some_and(|u| u == reference || u.ends_with(&format!("/{reference}")));
            let by_id = r["resourceType"]
                .as_str()
                .zip(r["id"].as_str())
                .is_some_and(|(t, id)| format!("{t}/{id}") == reference);
            (by_url || by_id).then_some((i, r))
        })
    }

    fn date(&mut self, value: &Value, path: &str, required: bool) -> Option<NaiveDate> {
        match value.as_str() {
            Some(s) => match s
                .get(..10)
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            {
                Some(d) => Some(d),
                None => {
                    self.fail(path, "not a FHIR date (YYYY-MM-DD)");
                    None
                }
            },
            None => {
                if required {
                    self.fail(path, "required");
                }
                None
            }
        }
    }

    /// A quantity in mg (`g` and `ug` converted); no unit is an error.
    fn mg(&mut self, q: &Value, path: &str) -> Option<f64> {
        let Some(value) = q["value"].as_f64() else {
            self.fail(format!("{path}.value"), "a dose needs a value");
            return None;
        };
        let unit = q["code"].as_str().or(q["unit"].as_str());
        let factor = match unit {
            Some("mg") => 1.0,
            Some("g") => 1000.0,
            Some("ug" | "µg" | "mcg") => 0.001,
            Some(other) => {
                self.fail(
                    format!("{path}.unit"),
                    format!("unit {other:?}: Relais doses are in mg (or g, ug)"),
                );
                return None;
            }
            None => {
                self.fail(format!("{path}.unit"), "a dose without unit");
                return None;
            }
        };
        Some(value * factor)
    }

    fn patient_key(&mut self, i: usize, r: &Value) -> Option<PatientKey> {
        let path = format!("Bundle.entry[{i}].resource");
        for (j, id) in r["identifier"].as_array().into_iter().flatten().enumerate() {
            if id["system"] == INS_SYSTEM {
                let value = id["value"].as_str().unwrap_or_default();
                return match Ins::parse(value) {
                    Ok(ins) => Some(PatientKey::Ins(ins.as_str().to_owned())),
                    Err(e) => {
                        self.fail(format!("{path}.identifier[{j}].value"), e.to_string());
                        None
                    }
                };
            }
        }
        if let Some(id) = r["id"].as_str()
            && let Ok(uuid) = uuid::Uuid::parse_str(id)
        {
            return Some(PatientKey::Id(uuid.to_string()));
        }
        self.fail(
            format!("{path}.identifier"),
            format!("no INS identifier ({INS_SYSTEM}) and no Relais patient id"),
        );
        None
    }

    fn prescriber(&mut self, r: &Value, path: &str) -> Option<Prescriber> {
        let reference = r["requester"]["reference"].as_str()?;
        if let Some(id) = reference.strip_prefix("Practitioner/")
            && let Ok(uuid) = uuid::Uuid::parse_str(id)
        {
            return Some(Prescriber::Id(uuid.to_string()));
        }
        let rpps = self.resolve(reference).and_then(|(_, p)| {
            p["identifier"]
                .as_array()?
                .iter()
                .find(|id| id["system"] == RPPS_SYSTEM)?["value"]
                .as_str()
                .map(str::to_owned)
        });
        match rpps {
            Some(rpps) => Some(Prescriber::Rpps(rpps)),
            None => {
                self.fail(
                    format!("{path}.requester"),
                    format!("names neither a Relais practitioner nor a Practitioner entry with an RPPS ({RPPS_SYSTEM})"),
                );
                None
            }
        }
    }

    fn drug(&mut self, r: &Value, path: &str) -> Option<&'static drugs::Drug> {
        let concept = &r["medicationCodeableConcept"];
        let codings = concept["coding"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (j, c) in codings.iter().enumerate() {
            if c["system"] == ATC_SYSTEM {
                let code = c["code"].as_str().unwrap_or_default();
                return match drugs::find_by_atc(code) {
                    Some(d) => Some(d),
                    None => {
                        self.fail(
                            format!("{path}.medicationCodeableConcept.coding[{j}].code"),
                            format!(
                                "ATC code {code:?} is not in Relais's catalogue (GET /api/v1/drugs)"
                            ),
                        );
                        None
                    }
                };
            }
        }
        if let Some(d) = codings
            .iter()
            .filter(|c| c["system"] == RELAIS_DRUG)
            .find_map(|c| c["code"].as_str().and_then(drugs::find))
        {
            return Some(d);
        }
        self.fail(
            format!("{path}.medicationCodeableConcept"),
            format!("no ATC code ({ATC_SYSTEM}) of the catalogue"),
        );
        None
    }

    /// (frequency per day or interval in hours) of a dosage's timing.
    fn schedule(&mut self, dosage: &Value, path: &str) -> Option<(Option<u8>, Option<u8>)> {
        let repeat = &dosage["timing"]["repeat"];
        let frequency = repeat["frequency"].as_u64().unwrap_or(1);
        let period = repeat["period"].as_f64().unwrap_or(1.0);
        let small = |n: f64| (1.0..=24.0).contains(&n) && n.fract() == 0.0;
        match repeat["periodUnit"].as_str() {
            Some("d") if period == 1.0 && small(frequency as f64) => {
                Some((Some(frequency as u8), None))
            }
            Some("h") if frequency == 1 && small(period) => Some((None, Some(period as u8))),
            _ => {
                self.fail(
                    format!("{path}.timing.repeat"),
                    "give frequency 1-24 per 1 d, or 1 per 1-24 h",
                );
                None
            }
        }
    }

    fn daily(&mut self, dosage: &Value, path: &str, dose: Option<f64>, per_day: u8) -> Option<f64> {
        let max = &dosage["maxDosePerPeriod"];
        if max.is_object() {
            return self.mg(
                &max["numerator"],
                &format!("{path}.maxDosePerPeriod.numerator"),
            );
        }
        dose.map(|d| d * f64::from(per_day))
    }

    fn dose(&mut self, dosage: &Value, path: &str) -> Option<f64> {
        let q = &dosage["doseAndRate"][0]["doseQuantity"];
        if !q.is_object() {
            self.fail(
                format!("{path}.doseAndRate"),
                "a dose (doseQuantity) is required",
            );
            return None;
        }
        self.mg(q, &format!("{path}.doseAndRate[0].doseQuantity"))
    }

    fn omt(&mut self, r: &Value, path: &str, drug: &drugs::Drug) -> Option<Omt> {
        let medication = match drug.code {
            "methadone" => OmtMedication::Methadone,
            "buprenorphine" => OmtMedication::Buprenorphine,
            "buprenorphine_naloxone" => OmtMedication::BuprenorphineNaloxone,
            _ => {
                self.fail(
                    format!("{path}.medicationCodeableConcept"),
                    "a continuous (maintenance) treatment must be methadone or buprenorphine",
                );
                return None;
            }
        };
        let dosages = r["dosageInstruction"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let usual = dosages
            .iter()
            .position(|d| !d["timing"]["repeat"]["boundsPeriod"].is_object());
        let Some(u) = usual else {
            self.fail(
                format!("{path}.dosageInstruction"),
                "the usual dosage (without boundsPeriod) is missing",
            );
            return None;
        };
        let upath = format!("{path}.dosageInstruction[{u}]");
        let dose = self.dose(&dosages[u], &upath);
        let (per_day, _) = self.schedule(&dosages[u], &upath)?;
        let per_day = per_day.filter(|n| *n <= 4);
        let Some(per_day) = per_day else {
            self.fail(
                format!("{upath}.timing.repeat.frequency"),
                "1 to 4 doses per day",
            );
            return None;
        };
        let daily = self.daily(&dosages[u], &upath, dose, per_day)?;
        let mut temporary = None;
        for (k, d) in dosages.iter().enumerate().filter(|(k, _)| *k != u) {
            let tpath = format!("{path}.dosageInstruction[{k}]");
            let bounds = &d["timing"]["repeat"]["boundsPeriod"];
            let start = self.date(
                &bounds["start"],
                &format!("{tpath}.timing.repeat.boundsPeriod.start"),
                true,
            );
            let end = self.date(
                &bounds["end"],
                &format!("{tpath}.timing.repeat.boundsPeriod.end"),
                false,
            );
            let tdose = self.dose(d, &tpath);
            let per = self
                .schedule(d, &tpath)
                .and_then(|(p, _)| p)
                .filter(|n| *n <= 4);
            let tdaily = per.and_then(|p| self.daily(d, &tpath, tdose, p));
            let reason = d["text"].as_str().map(str::to_owned);
            if reason.is_none() {
                self.fail(
                    format!("{tpath}.text"),
                    "a temporary adjustment needs its reason as text",
                );
            }
            if let (Some(start), Some(per), Some(daily), Some(reason)) =
                (start, per, tdaily, reason)
            {
                if temporary.is_some() {
                    self.fail(tpath, "one temporary adjustment at a time");
                    continue;
                }
                temporary = Some(TemporaryAdjustment {
                    daily_dose_mg: daily,
                    doses_per_day: per,
                    start,
                    end,
                    reason,
                });
            }
        }
        let pharmacy = r["dispenseRequest"]["performer"]["reference"]
            .as_str()
            .and_then(|p| {
                p.strip_prefix("Organization/")
                    .and_then(|id| uuid::Uuid::parse_str(id).ok())
                    .map(|u| u.to_string())
            });
        if pharmacy.is_none() && r["dispenseRequest"]["performer"].is_object() {
            self.fail(
                format!("{path}.dispenseRequest.performer"),
                "not a Relais organisation (Organization/<id>)",
            );
        }
        Some(Omt {
            medication,
            daily_dose_mg: Some(daily),
            doses_per_day: Some(per_day),
            dispensing_pharmacy_id: pharmacy,
            prescriber_id: None,
            temporary_adjustment: temporary,
        })
    }

    fn line(&mut self, r: &Value, path: &str, drug: &drugs::Drug) -> Option<AnalgesicLine> {
        let dpath = format!("{path}.dosageInstruction[0]");
        let dosage = &r["dosageInstruction"][0];
        if !dosage.is_object() {
            self.fail(format!("{path}.dosageInstruction"), "a dosage is required");
            return None;
        }
        let dose = self.dose(dosage, &dpath);
        let schedule = self.schedule(dosage, &dpath);
        let max = match &dosage["maxDosePerPeriod"] {
            m if m.is_object() => self.mg(
                &m["numerator"],
                &format!("{dpath}.maxDosePerPeriod.numerator"),
            ),
            _ => None,
        };
        let bounds = &dosage["timing"]["repeat"]["boundsPeriod"];
        let validity = &r["dispenseRequest"]["validityPeriod"];
        let (period, ppath) = if bounds.is_object() {
            (bounds, format!("{dpath}.timing.repeat.boundsPeriod"))
        } else {
            (validity, format!("{path}.dispenseRequest.validityPeriod"))
        };
        let start = self.date(&period["start"], &format!("{ppath}.start"), true);
        let end = self.date(&period["end"], &format!("{ppath}.end"), false);
        let route = match dosage["route"]["coding"].as_array() {
            None => drug.route,
            Some(codings) => match codings
                .iter()
                .find(|c| c["system"] == SNOMED)
                .and_then(|c| c["code"].as_str())
                .map(route_of)
            {
                Some(Some(route)) => route,
                _ => {
                    self.fail(
                        format!("{dpath}.route"),
                        "a route of SNOMED CT's route codes Relais knows",
                    );
                    return None;
                }
            },
        };
        let (times_per_day, interval_h) = schedule?;
        Some(AnalgesicLine {
            drug: drug.code.to_owned(),
            dose_mg: dose?,
            route,
            times_per_day,
            interval_h,
            max_daily_mg: max,
            as_needed: dosage["asNeededBoolean"].as_bool().unwrap_or(false),
            start: start?,
            end,
            prescriber_id: None,
            note: r["note"][0]["text"].as_str().map(str::to_owned),
        })
    }
}

/// Reads a discharge Bundle. Every problem is reported at once, each
/// naming its entry and element.
pub fn read(bundle: &Value) -> Result<Discharge, Vec<FieldError>> {
    let empty = Vec::new();
    let entries = bundle["entry"].as_array().unwrap_or(&empty);
    let mut rd = Reader {
        entries,
        errors: Vec::new(),
    };
    if bundle["resourceType"] != "Bundle" {
        rd.fail("Bundle.resourceType", "must be Bundle");
        return Err(rd.errors);
    }
    let kind = bundle["type"].as_str().unwrap_or_default();
    if kind != "document" && kind != "collection" {
        rd.fail("Bundle.type", "must be document or collection");
    }
    let of_type = |t: &str| -> Vec<usize> {
        entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e["resource"]["resourceType"] == t)
            .map(|(i, _)| i)
            .collect()
    };
    let compositions = of_type("Composition");
    let mut paths = Paths::default();
    let composition = match compositions.as_slice() {
        [c] if kind != "document" || *c == 0 => Some(*c),
        [_] => {
            rd.fail(
                "Bundle.entry[0]",
                "a document's first entry is its Composition",
            );
            None
        }
        _ => {
            rd.fail(
                "Bundle.entry",
                "exactly one discharge-summary Composition is required",
            );
            None
        }
    };
    let (mut summary, mut follow_up, mut discharge_date) = (None, None, None);
    if let Some(c) = composition {
        let path = format!("Bundle.entry[{c}].resource");
        paths.composition = path.clone();
        let r = &entries[c]["resource"];
        if !has_code(&r["type"], LOINC, LOINC_DISCHARGE_SUMMARY) {
            rd.fail(
                format!("{path}.type"),
                format!("not a discharge summary (LOINC {LOINC_DISCHARGE_SUMMARY})"),
            );
        }
        let mut parts = Vec::new();
        for s in r["section"].as_array().into_iter().flatten() {
            let text = s["text"]["div"]
                .as_str()
                .map(text_of_div)
                .unwrap_or_default();
            if has_code(&s["code"], LOINC, LOINC_PLAN_OF_CARE) {
                follow_up = Some(text).filter(|t| !t.is_empty());
            } else if !text.is_empty() {
                parts.push(text);
            }
        }
        if parts.is_empty()
            && let Some(div) = r["text"]["div"].as_str()
        {
            parts.push(text_of_div(div));
        }
        summary = Some(parts.join("\n\n")).filter(|s| !s.trim().is_empty());
        if summary.is_none() {
            rd.fail(
                format!("{path}.section"),
                "the summary (a section's text, or the Composition's text) is empty",
            );
        }
        let end = &r["event"][0]["period"]["end"];
        discharge_date = if end.is_string() {
            rd.date(end, &format!("{path}.event[0].period.end"), true)
        } else {
            rd.date(&r["date"], &format!("{path}.date"), true)
        };
    }
    let patient_entry = composition
        .and_then(|c| entries[c]["resource"]["subject"]["reference"].as_str())
        .and_then(|reference| rd.resolve(reference))
        .map(|(i, _)| i)
        .or_else(|| of_type("Patient").first().copied());
    let patient = match patient_entry {
        Some(i) => {
            paths.patient = format!("Bundle.entry[{i}].resource");
            rd.patient_key(i, &entries[i]["resource"])
        }
        None => {
            rd.fail("Bundle.entry", "no Patient entry");
            None
        }
    };
    let mut omt = None;
    let mut lines = Vec::new();
    let mut rpps = Vec::new();
    for i in of_type("MedicationRequest") {
        let r = &entries[i]["resource"];
        if matches!(r["status"].as_str(), Some("entered-in-error" | "cancelled")) {
            continue;
        }
        let path = format!("Bundle.entry[{i}].resource");
        let Some(drug) = rd.drug(r, &path) else {
            continue;
        };
        let prescriber = rd.prescriber(r, &path);
        let continuous = has_code(&r["courseOfTherapyType"], COURSE_OF_THERAPY, "continuous");
        if continuous {
            if omt.is_some() {
                rd.fail(
                    format!("{path}.courseOfTherapyType"),
                    "a second continuous (maintenance) treatment",
                );
                continue;
            }
            if let Some(mut o) = rd.omt(r, &path, drug) {
                match prescriber {
                    Some(Prescriber::Id(id)) => o.prescriber_id = Some(id),
                    Some(Prescriber::Rpps(n)) => rpps.push((None, n, format!("{path}.requester"))),
                    None => {}
                }
                paths.omt = Some(path);
                omt = Some(o);
            }
        } else if let Some(mut line) = rd.line(r, &path, drug) {
            match prescriber {
                Some(Prescriber::Id(id)) => line.prescriber_id = Some(id),
                Some(Prescriber::Rpps(n)) => {
                    rpps.push((Some(lines.len()), n, format!("{path}.requester")))
                }
                None => {}
            }
            paths.lines.push(path);
            lines.push(line);
        }
    }
    if omt.is_none() && rd.errors.is_empty() {
        rd.fail(
            "Bundle.entry",
            "no MedicationRequest for the maintenance treatment (courseOfTherapyType continuous): \
             Relais does not take its absence as a stop",
        );
    }
    let mut status = PlanStatus::Active;
    let (mut pain_goal, mut non_drug_measures, mut review_date) = (None, None, None);
    if let Some(&i) = of_type("CarePlan").first() {
        let path = format!("Bundle.entry[{i}].resource");
        paths.care_plan = Some(path.clone());
        let r = &entries[i]["resource"];
        match r["status"].as_str().and_then(plan_status_of) {
            Some(s) => status = s,
            None => rd.fail(format!("{path}.status"), "not a plan status Relais keeps"),
        }
        pain_goal = r["contained"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["resourceType"] == "Goal")
            .and_then(|g| g["description"]["text"].as_str())
            .map(str::to_owned);
        for (k, a) in r["activity"].as_array().into_iter().flatten().enumerate() {
            let detail = &a["detail"];
            if has_code(&detail["code"], RELAIS_ACTIVITY, "non-drug-measures") {
                non_drug_measures = detail["description"].as_str().map(str::to_owned);
            } else if has_code(&detail["code"], RELAIS_ACTIVITY, "review") {
                review_date = rd.date(
                    &detail["scheduledPeriod"]["start"],
                    &format!("{path}.activity[{k}].detail.scheduledPeriod.start"),
                    true,
                );
            }
        }
    }
    if !rd.errors.is_empty() {
        return Err(rd.errors);
    }
    match (patient, summary, discharge_date, omt) {
        (Some(patient), Some(summary), Some(discharge_date), Some(omt)) => Ok(Discharge {
            patient,
            summary,
            follow_up,
            discharge_date,
            plan: PlanContent {
                status,
                omt,
                analgesics: lines,
                pain_goal,
                non_drug_measures,
                review_date,
            },
            rpps,
            paths,
        }),
        _ => Err(vec![FieldError::new("Bundle", "incomplete discharge")]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::models::Patient;
    use crate::domain::patient::Sex;
    use crate::domain::plan::Route;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn plan() -> PlanContent {
        PlanContent {
            status: PlanStatus::Active,
            omt: Omt {
                medication: OmtMedication::Methadone,
                daily_dose_mg: Some(50.0),
                doses_per_day: Some(3),
                dispensing_pharmacy_id: Some(uuid::Uuid::now_v7().to_string()),
                prescriber_id: Some(uuid::Uuid::now_v7().to_string()),
                temporary_adjustment: Some(TemporaryAdjustment {
                    daily_dose_mg: 70.0,
                    doses_per_day: 2,
                    start: day("2026-11-24"),
                    end: Some(day("2026-12-01")),
                    reason: "post-operative <pain> & more".into(),
                }),
            },
            analgesics: vec![
                AnalgesicLine {
                    drug: "paracetamol".into(),
                    dose_mg: 1000.0,
                    route: Route::Oral,
                    times_per_day: Some(4),
                    interval_h: None,
                    max_daily_mg: Some(4000.0),
                    as_needed: false,
                    start: day("2026-11-24"),
                    end: Some(day("2026-12-01")),
                    prescriber_id: Some(uuid::Uuid::now_v7().to_string()),
                    note: None,
                },
                AnalgesicLine {
                    drug: "morphine".into(),
                    dose_mg: 10.0,
                    route: Route::Subcutaneous,
                    times_per_day: None,
                    interval_h: Some(6),
                    max_daily_mg: None,
                    as_needed: true,
                    start: day("2026-11-24"),
                    end: Some(day("2026-11-27")),
                    prescriber_id: Some(uuid::Uuid::now_v7().to_string()),
                    note: Some("after surgery".into()),
                },
            ],
            pain_goal: Some("pain below 4/10".into()),
            non_drug_measures: Some("ice".into()),
            review_date: Some(day("2026-12-01")),
        }
    }

    fn exported(content: &PlanContent) -> Value {
        let now = day("2026-11-24").and_hms_opt(10, 0, 0).unwrap();
        let p = Patient {
            id: uuid::Uuid::now_v7().to_string(),
            ins: Some("255081416802538".into()),
            family_name: "Martin".into(),
            given_names: "Léa".into(),
            birth_date: day("1955-08-14"),
            sex: Sex::Female,
            phone: None,
            created_by: "x".into(),
            created_at: now,
            updated_at: now,
        };
        let row = PlanVersionRow {
            id: "v".into(),
            patient_id: p.id.clone(),
            version: 3,
            status: content.status,
            content: crate::db::json::Json::new(content.clone()),
            warnings: crate::db::json::Json::new(Vec::new()),
            acknowledged: crate::db::json::Json::new(Vec::new()),
            change_summary: "x".into(),
            source_type: None,
            source_id: None,
            author_id: uuid::Uuid::now_v7().to_string(),
            created_at: now,
        };
        document(
            "http://relais.test/fhir/r4",
            &p,
            &row,
            content,
            &row.author_id,
            "Knee surgery; <b>stable</b>",
            Some("GP in 7 days"),
            day("2026-11-24"),
            now,
        )
    }

    #[test]
    fn a_plan_exported_and_read_back_is_the_same_plan() {
        let content = plan();
        let bundle = exported(&content);
        let read = read(&bundle).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(read.plan, content);
        assert_eq!(read.summary, "Knee surgery; <b>stable</b>");
        assert_eq!(read.follow_up.as_deref(), Some("GP in 7 days"));
        assert_eq!(read.discharge_date, day("2026-11-24"));
        assert_eq!(read.patient, PatientKey::Ins("255081416802538".into()));
    }

    #[test]
    fn what_cannot_be_mapped_is_named_by_entry_and_element() {
        let mut bundle = exported(&plan());
        // Entries: Composition, Patient, CarePlan, OMT, paracetamol, morphine.
        bundle["entry"][4]["resource"]["medicationCodeableConcept"]["coding"][0]["code"] =
            json!("Z99ZZ99");
        bundle["entry"][5]["resource"]["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]
            .as_object_mut()
            .unwrap()
            .retain(|k, _| k == "value");
        let errors = read(&bundle).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert!(
            fields.contains(&"Bundle.entry[4].resource.medicationCodeableConcept.coding[0].code"),
            "{fields:?}"
        );
        assert!(
            fields.contains(
                &"Bundle.entry[5].resource.dosageInstruction[0].doseAndRate[0].doseQuantity.unit"
            ),
            "{fields:?}"
        );
    }

    #[test]
    fn no_maintenance_treatment_is_refused_not_read_as_a_stop() {
        let mut bundle = exported(&plan());
        let entries = bundle["entry"].as_array_mut().unwrap();
        entries.remove(3);
        let errors = read(&bundle).unwrap_err();
        assert_eq!(errors[0].field, "Bundle.entry");
    }
}
