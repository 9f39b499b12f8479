//! OMT-aware safety rules: pure functions over a plan and the catalogue.
//! Each warning has a stable code, a severity, a message, its source, and the
//! analgesic lines concerned (indices into `analgesics`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::clinical::{Facts, HepaticImpairment, RespiratoryDisease};
use super::drugs::{self, Drug, DrugClass};
use super::plan::{OmtMedication, PlanContent};

text_enum! {
    /// How much a warning weighs: `blocking` stops the write unless acknowledged.
    Severity {
        Info => "info",
        Warning => "warning",
        Blocking => "blocking",
    }
}

/// One finding of the rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Warning {
    /// Stable identifier, e.g. `omt.methadone_weak_opioid`.
    pub code: String,
    pub severity: Severity,
    pub message: String,
    /// The guideline or label the rule rests on.
    pub source: String,
    /// Indices of the analgesic lines concerned.
    pub lines: Vec<usize>,
    /// For an `info` about an unknown value: the clinical-context fields
    /// (or `age`) that would change the verdict if known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

const ASAM: &str =
    "ASAM National Practice Guideline for the Treatment of Opioid Use Disorder, 2020 update";
const ANSM_CNS: &str =
    "ANSM; FDA boxed warning (2016): opioids with benzodiazepines or other CNS depressants";
const LABEL_TRAMADOL: &str = "Tramadol product label (SmPC 4.5); ANSM";
const LABEL_METHADONE_QT: &str = "Methadone product label (SmPC 4.4, 4.5): QT prolongation; ANSM";
const LABEL_ANTAGONIST: &str =
    "Naltrexone and nalmefene product labels (SmPC 4.3): contraindicated with opioids";
const LABEL_PARACETAMOL: &str = "Paracetamol product label (SmPC 4.2): at most 4 g a day; ANSM";
const RELAIS_POLICY: &str =
    "Relais network policy: temporary means dated (opioid lines and OMT changes need an end date)";
const LABEL_MAX: &str = "Product label (SmPC 4.2): usual maximum daily dose";

fn warning(
    code: &str,
    severity: Severity,
    message: &str,
    source: &str,
    lines: Vec<usize>,
) -> Warning {
    Warning {
        code: code.into(),
        severity,
        message: message.into(),
        source: source.into(),
        lines,
        missing: Vec::new(),
    }
}

/// The lines whose drug satisfies `pred`.
fn lines_where(plan: &PlanContent, pred: impl Fn(&Drug) -> bool) -> Vec<usize> {
    plan.analgesics
        .iter()
        .enumerate()
        .filter(|(_, l)| drugs::find(&l.drug).is_some_and(&pred))
        .map(|(i, _)| i)
        .collect()
}

/// Benzodiazepines, Z-drugs and gabapentinoids.
fn is_depressant(d: &Drug) -> bool {
    d.is(DrugClass::Benzodiazepine) || d.is(DrugClass::Gabapentinoid) || d.is(DrugClass::ZDrug)
}

/// Runs every rule on a plan; known drugs only (unknown codes fail validation first).
pub fn check(plan: &PlanContent) -> Vec<Warning> {
    let mut out = Vec::new();
    let medication = plan.omt.medication;
    let on_omt = medication != OmtMedication::None;
    let is_weak = |d: &Drug| d.is(DrugClass::WeakOpioid);
    let is_full_agonist = |d: &Drug| d.is(DrugClass::WeakOpioid) || d.is(DrugClass::StrongOpioid);

    if medication == OmtMedication::Methadone {
        let weak = lines_where(plan, is_weak);
        if !weak.is_empty() {
            out.push(warning(
                "omt.methadone_weak_opioid",
                Severity::Warning,
                "Weak opioids (codeine, dihydrocodeine, tramadol) are not recommended with methadone: they add little analgesia at these opioid-tolerance levels.",
                ASAM,
                weak,
            ));
        }
        let qt = lines_where(plan, |d| d.is(DrugClass::QtProlonging));
        if !qt.is_empty() {
            out.push(warning(
                "omt.methadone_qt",
                Severity::Warning,
                "Methadone prolongs the QT interval; this drug does too. Consider an ECG and an alternative.",
                LABEL_METHADONE_QT,
                qt,
            ));
        }
    }

    if medication.is_buprenorphine() {
        let full = lines_where(plan, is_full_agonist);
        if !full.is_empty() {
            out.push(warning(
                "omt.buprenorphine_full_agonist",
                Severity::Warning,
                "Buprenorphine competes with full opioid agonists at the receptor; evidence on safety and efficacy of the combination is limited. Consider a split buprenorphine dose or specialist advice.",
                ASAM,
                full,
            ));
        }
    }

    let opioid_lines = lines_where(plan, Drug::is_opioid);
    let depressants = lines_where(plan, is_depressant);
    if (on_omt || !opioid_lines.is_empty()) && !depressants.is_empty() {
        out.push(warning(
            "opioid.cns_depressant",
            Severity::Warning,
            "Opioids with benzodiazepines, Z-drugs or gabapentinoids raise the risk of respiratory depression and overdose.",
            ANSM_CNS,
            depressants,
        ));
    }

    let tramadol = lines_where(plan, |d| d.code == "tramadol");
    let serotonergic = lines_where(plan, |d| {
        d.is(DrugClass::Ssri) || d.is(DrugClass::Snri) || d.is(DrugClass::Tca)
    });
    if !tramadol.is_empty() && !serotonergic.is_empty() {
        let mut lines = [tramadol, serotonergic].concat();
        lines.sort_unstable();
        out.push(warning(
            "tramadol.serotonergic",
            Severity::Warning,
            "Tramadol with an SSRI, SNRI or tricyclic antidepressant risks serotonin syndrome and seizures.",
            LABEL_TRAMADOL,
            lines,
        ));
    }

    if on_omt {
        let antagonists = lines_where(plan, |d| d.code == "naltrexone" || d.code == "nalmefene");
        if !antagonists.is_empty() {
            out.push(warning(
                "omt.antagonist",
                Severity::Blocking,
                "Naltrexone or nalmefene with an opioid maintenance treatment precipitates withdrawal.",
                LABEL_ANTAGONIST,
                antagonists,
            ));
        }
    }

    let paracetamol = lines_where(plan, |d| d.code == "paracetamol");
    let total: f64 = paracetamol
        .iter()
        .map(|&i| plan.analgesics[i].daily_max_mg())
        .sum();
    if total > 4000.0 {
        out.push(warning(
            "paracetamol.daily_total",
            Severity::Blocking,
            &format!("The paracetamol lines allow {total:.0} mg a day; the maximum is 4000 mg."),
            LABEL_PARACETAMOL,
            paracetamol,
        ));
    }

    let undated: Vec<usize> = opioid_lines
        .iter()
        .copied()
        .filter(|&i| plan.analgesics[i].end.is_none())
        .collect();
    if !undated.is_empty() {
        out.push(warning(
            "omt.opioid_without_end_date",
            Severity::Blocking,
            "An opioid analgesic line needs an end date.",
            RELAIS_POLICY,
            undated,
        ));
    }
    if plan
        .omt
        .temporary_adjustment
        .as_ref()
        .is_some_and(|a| a.end.is_none())
    {
        out.push(warning(
            "omt.temporary_change_without_end_date",
            Severity::Blocking,
            "A temporary OMT change needs an end date.",
            RELAIS_POLICY,
            vec![],
        ));
    }

    let split = plan.omt.doses_per_day.is_some_and(|n| n > 1)
        || plan
            .omt
            .temporary_adjustment
            .as_ref()
            .is_some_and(|a| a.doses_per_day > 1);
    if on_omt && split {
        out.push(warning(
            "omt.split_dose",
            Severity::Info,
            "The OMT is split into several doses a day (supported for pain by ASAM): tell the dispensing pharmacy.",
            ASAM,
            vec![],
        ));
    }

    let above: Vec<usize> = plan
        .analgesics
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            drugs::find(&l.drug)
                .and_then(|d| d.max_daily_mg)
                .is_some_and(|max| l.daily_max_mg() > max)
        })
        .map(|(i, _)| i)
        .collect();
    if !above.is_empty() {
        out.push(warning(
            "dose.above_usual_max",
            Severity::Warning,
            "A line allows more than the usual maximum daily dose of its drug.",
            LABEL_MAX,
            above,
        ));
    }
    out
}

const ANSM_PARACETAMOL_RISK: &str = "ANSM (2019): paracetamol at most 3 g a day with hepatic impairment, chronic alcohol use or a weight under 50 kg; paracetamol product label (SmPC 4.2)";
const LABEL_NSAID_PREGNANCY: &str = "NSAID product labels (SmPC 4.3, 4.6); ANSM: every NSAID is contraindicated from 24 weeks of amenorrhoea";
const LABEL_NSAID_RENAL: &str = "NSAID product labels (SmPC 4.3, 4.4): contraindicated in severe renal failure, caution below 60 mL/min; ANSM";
const LABEL_NSAID_ELDERLY: &str = "NSAID product labels (SmPC 4.4): elderly patients (renal, gastrointestinal and cardiac risk); ANSM";
const LABEL_METHADONE_QTC: &str = "Methadone product label (SmPC 4.4): QT prolongation, ECG monitoring at high doses; ANSM; ASAM 2020";
const EMA_BREASTFEEDING: &str = "EMA PRAC (2013) codeine; tramadol product label (SmPC 4.6): ultra-rapid CYP2D6 metabolism, opioid toxicity in the breastfed infant; ANSM";
const ANSM_RESPIRATORY: &str = "ANSM; opioid product labels (SmPC 4.4): respiratory depression with CNS depressants in COPD and sleep apnoea";
const LABEL_HEPATIC_OMT: &str = "Buprenorphine product label (SmPC 4.3): severe hepatic impairment contraindicated; methadone product label (SmPC 4.4): hepatic impairment; EMA";
const LABEL_ALLERGY: &str =
    "Product labels (SmPC 4.3): hypersensitivity to the active substance or its class";
const RELAIS_CONTEXT: &str =
    "Relais network policy: the rules see the patient through the clinical context";

fn unknown(
    code: &str,
    message: &str,
    source: &str,
    lines: Vec<usize>,
    missing: &[&str],
) -> Warning {
    Warning {
        missing: missing.iter().map(|m| (*m).to_owned()).collect(),
        ..warning(code, Severity::Info, message, source, lines)
    }
}

/// Paracetamol allowed per day above which the risk factors matter, in mg.
pub const PARACETAMOL_RISK_MG: f64 = 3000.0;
/// Weight under which paracetamol is capped at 3 g, in kg.
pub const LOW_WEIGHT_KG: f64 = 50.0;
/// Methadone per day above which a QTc is expected, in mg.
pub const METHADONE_ECG_MG: f64 = 100.0;

/// Runs the plan's rules and those that need the patient: `facts` is the
/// clinical context as it stands today, or `None` when none is recorded
/// (one `info` says so).
pub fn check_with(plan: &PlanContent, facts: Option<&Facts>) -> Vec<Warning> {
    let mut out = check(plan);
    match facts {
        Some(f) => out.extend(context_rules(plan, f)),
        None => out.push(warning(
            "context.none",
            Severity::Info,
            "No clinical context is recorded for this patient: the rules about liver, kidney, QTc, weight, pregnancy, breastfeeding, respiratory disease and allergies did not run.",
            RELAIS_CONTEXT,
            vec![],
        )),
    }
    out
}

/// The rules that need the patient's clinical context.
pub fn context_rules(plan: &PlanContent, f: &Facts) -> Vec<Warning> {
    let mut out = Vec::new();
    let medication = plan.omt.medication;
    let on_omt = medication != OmtMedication::None;

    // Paracetamol above 3 g a day.
    let paracetamol = lines_where(plan, |d| d.code == "paracetamol");
    let total: f64 = paracetamol
        .iter()
        .map(|&i| plan.analgesics[i].daily_max_mg())
        .sum();
    if total > PARACETAMOL_RISK_MG {
        let hepatic = f
            .hepatic_impairment
            .is_some_and(|h| h != HepaticImpairment::None);
        let alcohol = f.alcohol_use_disorder == Some(true);
        let light = f.weight_kg.is_some_and(|w| w < LOW_WEIGHT_KG);
        if hepatic || alcohol || light {
            let why = [
                (hepatic, "hepatic impairment"),
                (alcohol, "alcohol use disorder"),
                (light, "weight under 50 kg"),
            ]
            .iter()
            .filter(|(yes, _)| *yes)
            .map(|(_, w)| *w)
            .collect::<Vec<_>>()
            .join(", ");
            out.push(warning(
                "paracetamol.risk_factor_above_3g",
                Severity::Blocking,
                &format!("The paracetamol lines allow {total:.0} mg a day; with {why} the maximum is 3000 mg."),
                ANSM_PARACETAMOL_RISK,
                paracetamol.clone(),
            ));
        } else {
            let missing: Vec<&str> = [
                (f.hepatic_impairment.is_none(), "hepatic_impairment"),
                (f.alcohol_use_disorder.is_none(), "alcohol_use_disorder"),
                (f.weight_kg.is_none(), "weight_kg"),
            ]
            .iter()
            .filter(|(m, _)| *m)
            .map(|(_, n)| *n)
            .collect();
            if !missing.is_empty() {
                out.push(unknown(
                    "paracetamol.risk_factor_unknown",
                    &format!("More than 3 g of paracetamol a day: unknown {} (each would cap it at 3 g).", missing.join(", ")),
                    ANSM_PARACETAMOL_RISK,
                    paracetamol.clone(),
                    &missing,
                ));
            }
        }
    }

    // NSAIDs: pregnancy, kidney, age.
    let nsaids = lines_where(plan, |d| d.is(DrugClass::Nsaid));
    if !nsaids.is_empty() {
        let mut missing = Vec::new();
        match f.pregnancy_weeks {
            Some(w) if w >= 24.0 => out.push(warning(
                "nsaid.pregnancy_24_weeks",
                Severity::Blocking,
                "NSAIDs are contraindicated from 24 weeks of pregnancy (fetal renal and cardiac toxicity).",
                LABEL_NSAID_PREGNANCY,
                nsaids.clone(),
            )),
            Some(_) => {}
            None if f.could_bear_children() => missing.push("pregnancy_weeks"),
            None => {}
        }
        match f.egfr {
            Some(e) if e < 30.0 => out.push(warning(
                "nsaid.egfr_below_30",
                Severity::Blocking,
                &format!("eGFR {e:.0} mL/min: NSAIDs are contraindicated in severe renal failure."),
                LABEL_NSAID_RENAL,
                nsaids.clone(),
            )),
            Some(e) if e < 60.0 => out.push(warning(
                "nsaid.egfr_30_59",
                Severity::Warning,
                &format!("eGFR {e:.0} mL/min: an NSAID may worsen renal function; shortest course, monitor."),
                LABEL_NSAID_RENAL,
                nsaids.clone(),
            )),
            Some(_) => {}
            None => missing.push("egfr"),
        }
        match f.age_years {
            Some(a) if a >= 75 => out.push(warning(
                "nsaid.age_75",
                Severity::Warning,
                "From age 75 NSAIDs carry a higher renal, gastrointestinal and cardiac risk.",
                LABEL_NSAID_ELDERLY,
                nsaids.clone(),
            )),
            Some(_) => {}
            None => missing.push("age"),
        }
        if !missing.is_empty() {
            out.push(unknown(
                "nsaid.context_unknown",
                &format!(
                    "An NSAID is planned: unknown {} (each may block or warn).",
                    missing.join(", ")
                ),
                LABEL_NSAID_RENAL,
                nsaids.clone(),
                &missing,
            ));
        }
    }

    // Methadone and the QT interval.
    let methadone_lines = lines_where(plan, |d| d.code == "methadone");
    if medication == OmtMedication::Methadone || !methadone_lines.is_empty() {
        let omt_mg = if medication == OmtMedication::Methadone {
            let usual = plan.omt.daily_dose_mg.unwrap_or(0.0);
            let temporary = plan
                .omt
                .temporary_adjustment
                .as_ref()
                .map_or(0.0, |a| a.daily_dose_mg);
            usual.max(temporary)
        } else {
            0.0
        };
        let mg = omt_mg
            + methadone_lines
                .iter()
                .map(|&i| plan.analgesics[i].daily_max_mg())
                .sum::<f64>();
        match f.qtc_ms {
            Some(q) if q >= 500.0 => out.push(warning(
                "methadone.qtc_500",
                Severity::Blocking,
                &format!("QTc {q:.0} ms: methadone risks torsades de pointes at 500 ms and above."),
                LABEL_METHADONE_QTC,
                methadone_lines.clone(),
            )),
            Some(q) if q >= 450.0 => out.push(warning(
                "methadone.qtc_450_499",
                Severity::Warning,
                &format!("QTc {q:.0} ms: prolonged; methadone lengthens it further. ECG follow-up, no other QT-prolonging drug."),
                LABEL_METHADONE_QTC,
                methadone_lines.clone(),
            )),
            Some(_) => {}
            None if mg > METHADONE_ECG_MG => out.push(Warning {
                missing: vec!["qtc_ms".into()],
                ..warning(
                    "methadone.high_dose_without_qtc",
                    Severity::Warning,
                    &format!("Methadone {mg:.0} mg a day with no QTc measured within 365 days: get an ECG."),
                    LABEL_METHADONE_QTC,
                    methadone_lines.clone(),
                )
            }),
            None => out.push(unknown(
                "methadone.qtc_unknown",
                "Methadone with no QTc measured within 365 days (450 ms warns, 500 ms blocks).",
                LABEL_METHADONE_QTC,
                methadone_lines.clone(),
                &["qtc_ms"],
            )),
        }
    }

    // Codeine or tramadol while breastfeeding.
    let cyp2d6 = lines_where(plan, |d| d.code == "codeine" || d.code == "tramadol");
    if !cyp2d6.is_empty() {
        match f.breastfeeding {
            Some(true) => out.push(warning(
                "breastfeeding.codeine_tramadol",
                Severity::Blocking,
                "Codeine and tramadol are contraindicated while breastfeeding (opioid toxicity in the infant).",
                EMA_BREASTFEEDING,
                cyp2d6,
            )),
            Some(false) => {}
            None if f.could_bear_children() => out.push(unknown(
                "breastfeeding.unknown",
                "Codeine or tramadol is planned and breastfeeding is unknown (it would block).",
                EMA_BREASTFEEDING,
                cyp2d6,
                &["breastfeeding"],
            )),
            None => {}
        }
    }

    // An opioid with a CNS depressant in chronic respiratory disease.
    let opioid_lines = lines_where(plan, Drug::is_opioid);
    let depressants = lines_where(plan, is_depressant);
    if (on_omt || !opioid_lines.is_empty()) && !depressants.is_empty() {
        let mut lines = [opioid_lines, depressants].concat();
        lines.sort_unstable();
        match &f.respiratory_disease {
            Some(list)
                if list
                    .iter()
                    .any(|d| matches!(d, RespiratoryDisease::Copd | RespiratoryDisease::SleepApnoea)) =>
            {
                out.push(warning(
                    "opioid.cns_depressant_respiratory",
                    Severity::Warning,
                    "An opioid with a CNS depressant in a patient with COPD or sleep apnoea: high risk of respiratory depression, whatever the dose.",
                    ANSM_RESPIRATORY,
                    lines,
                ));
            }
            Some(_) => {}
            None => out.push(unknown(
                "opioid.respiratory_disease_unknown",
                "An opioid with a CNS depressant: respiratory disease unknown (COPD or sleep apnoea would warn).",
                ANSM_RESPIRATORY,
                lines,
                &["respiratory_disease"],
            )),
        }
    }

    // The OMT and the liver.
    if on_omt {
        match f.hepatic_impairment {
            Some(HepaticImpairment::Severe) if medication.is_buprenorphine() => {
                out.push(warning(
                    "buprenorphine.hepatic_severe",
                    Severity::Blocking,
                    "Buprenorphine is contraindicated in severe hepatic impairment.",
                    LABEL_HEPATIC_OMT,
                    vec![],
                ))
            }
            Some(HepaticImpairment::Severe) => out.push(warning(
                "methadone.hepatic_severe",
                Severity::Warning,
                "Methadone in severe hepatic impairment: slower elimination, titrate carefully and watch for sedation.",
                LABEL_HEPATIC_OMT,
                vec![],
            )),
            Some(_) => {}
            None => out.push(unknown(
                "omt.hepatic_impairment_unknown",
                "Hepatic function unknown (severe impairment blocks buprenorphine, warns for methadone).",
                LABEL_HEPATIC_OMT,
                vec![],
                &["hepatic_impairment"],
            )),
        }
    }

    // Recorded allergies.
    if !plan.analgesics.is_empty() {
        match &f.allergies {
            Some(allergies) => {
                let hit = lines_where(plan, |d| allergies.iter().any(|a| a.matches(d)));
                if !hit.is_empty() {
                    out.push(warning(
                        "allergy.recorded",
                        Severity::Blocking,
                        "A line's drug or class matches an allergy recorded for this patient.",
                        LABEL_ALLERGY,
                        hit,
                    ));
                }
            }
            None => out.push(unknown(
                "allergy.unknown",
                "Allergies unknown: record them (an empty list if none) so the lines can be checked.",
                LABEL_ALLERGY,
                vec![],
                &["allergies"],
            )),
        }
    }
    out
}

/// The blocking warnings not acknowledged by `acknowledged` codes.
pub fn unacknowledged_blocking<'a>(
    warnings: &'a [Warning],
    acknowledged: &[&str],
) -> Vec<&'a Warning> {
    warnings
        .iter()
        .filter(|w| w.severity == Severity::Blocking && !acknowledged.contains(&w.code.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::plan::{AnalgesicLine, Omt, Route, TemporaryAdjustment};
    use chrono::NaiveDate;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn line(drug: &str, dose: f64, times: u8) -> AnalgesicLine {
        AnalgesicLine {
            drug: drug.into(),
            dose_mg: dose,
            route: Route::Oral,
            times_per_day: Some(times),
            interval_h: None,
            max_daily_mg: None,
            as_needed: false,
            start: day("2026-11-24"),
            end: Some(day("2026-11-30")),
            prescriber_id: None,
            note: None,
        }
    }

    fn plan(medication: OmtMedication, lines: Vec<AnalgesicLine>) -> PlanContent {
        PlanContent {
            status: crate::domain::plan::PlanStatus::Active,
            omt: Omt {
                medication,
                daily_dose_mg: (medication != OmtMedication::None).then_some(60.0),
                doses_per_day: (medication != OmtMedication::None).then_some(1),
                dispensing_pharmacy_id: None,
                prescriber_id: None,
                temporary_adjustment: None,
            },
            analgesics: lines,
            pain_goal: None,
            non_drug_measures: None,
            review_date: None,
        }
    }

    fn codes(p: &PlanContent) -> Vec<String> {
        let mut c: Vec<String> = check(p).into_iter().map(|w| w.code).collect();
        c.sort();
        c
    }

    use OmtMedication::{Buprenorphine, BuprenorphineNaloxone, Methadone, None as NoOmt};

    #[test]
    fn pairs_that_must_warn_and_pairs_that_must_not() {
        // (OMT, drugs, expected codes)
        let table: &[(OmtMedication, &[&str], &[&str])] = &[
            (Methadone, &["paracetamol"], &[]),
            (Methadone, &["ibuprofen"], &[]),
            (Methadone, &["codeine"], &["omt.methadone_weak_opioid"]),
            (
                Methadone,
                &["dihydrocodeine"],
                &["omt.methadone_weak_opioid"],
            ),
            (Methadone, &["tramadol"], &["omt.methadone_weak_opioid"]),
            (
                Buprenorphine,
                &["tramadol"],
                &["omt.buprenorphine_full_agonist"],
            ),
            (Methadone, &["morphine"], &[]),
            (
                Buprenorphine,
                &["morphine"],
                &["omt.buprenorphine_full_agonist"],
            ),
            (
                BuprenorphineNaloxone,
                &["oxycodone"],
                &["omt.buprenorphine_full_agonist"],
            ),
            (Buprenorphine, &["paracetamol", "nefopam"], &[]),
            (Methadone, &["diazepam"], &["opioid.cns_depressant"]),
            (Buprenorphine, &["pregabalin"], &["opioid.cns_depressant"]),
            (NoOmt, &["morphine", "zolpidem"], &["opioid.cns_depressant"]),
            (NoOmt, &["paracetamol", "diazepam"], &[]),
            (
                NoOmt,
                &["tramadol", "sertraline"],
                &["tramadol.serotonergic"],
            ),
            (
                NoOmt,
                &["tramadol", "duloxetine"],
                &["tramadol.serotonergic"],
            ),
            (
                NoOmt,
                &["tramadol", "amitriptyline"],
                &["tramadol.serotonergic"],
            ),
            (NoOmt, &["morphine", "sertraline"], &[]),
            (Methadone, &["citalopram"], &["omt.methadone_qt"]),
            (Methadone, &["escitalopram"], &["omt.methadone_qt"]),
            (Methadone, &["hydroxyzine"], &["omt.methadone_qt"]),
            (Methadone, &["domperidone"], &["omt.methadone_qt"]),
            (Buprenorphine, &["citalopram"], &[]),
            (Methadone, &["sertraline"], &[]),
            (Methadone, &["naltrexone"], &["omt.antagonist"]),
            (Buprenorphine, &["nalmefene"], &["omt.antagonist"]),
            (Methadone, &["naloxone"], &[]),
            (NoOmt, &["naltrexone"], &[]),
        ];
        for (omt, drugs, expected) in table {
            let p = plan(*omt, drugs.iter().map(|d| line(d, 1.0, 2)).collect());
            let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(codes(&p), want, "{omt:?} + {drugs:?}");
        }
    }

    #[test]
    fn warnings_name_their_lines_and_sources() {
        let p = plan(
            Methadone,
            vec![line("paracetamol", 1000.0, 4), line("tramadol", 50.0, 4)],
        );
        let w = check(&p);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].lines, [1]);
        assert_eq!(w[0].severity, Severity::Warning);
        assert!(w[0].source.contains("ASAM"));
        for warning in check(&plan(
            Methadone,
            vec![line("naltrexone", 50.0, 1), line("morphine", 10.0, 4)],
        )) {
            assert!(!warning.source.is_empty() && !warning.message.is_empty());
        }
    }

    #[test]
    fn paracetamol_over_four_grams_is_blocking() {
        let ok = plan(NoOmt, vec![line("paracetamol", 1000.0, 4)]);
        assert!(codes(&ok).is_empty());
        let over = plan(
            NoOmt,
            vec![
                line("paracetamol", 1000.0, 4),
                line("paracetamol", 500.0, 2),
            ],
        );
        let w = check(&over);
        let para = w
            .iter()
            .find(|w| w.code == "paracetamol.daily_total")
            .unwrap();
        assert_eq!(para.severity, Severity::Blocking);
        assert_eq!(para.lines, [0, 1]);
        let mut capped = plan(NoOmt, vec![line("paracetamol", 1000.0, 6)]);
        capped.analgesics[0].max_daily_mg = Some(3000.0);
        assert!(codes(&capped).is_empty(), "max_daily_mg caps the day");
    }

    #[test]
    fn undated_opioids_and_temporary_changes_are_blocking() {
        let mut p = plan(
            Methadone,
            vec![line("paracetamol", 1000.0, 3), line("morphine", 10.0, 4)],
        );
        p.analgesics[0].end = None;
        p.analgesics[1].end = None;
        let w = check(&p);
        let undated = w
            .iter()
            .find(|w| w.code == "omt.opioid_without_end_date")
            .unwrap();
        assert_eq!(undated.lines, [1], "paracetamol may run without an end");
        assert_eq!(undated.severity, Severity::Blocking);

        let mut p = plan(Methadone, vec![]);
        p.omt.temporary_adjustment = Some(TemporaryAdjustment {
            daily_dose_mg: 80.0,
            doses_per_day: 2,
            start: day("2026-11-24"),
            end: None,
            reason: "pain".into(),
        });
        assert_eq!(
            codes(&p),
            ["omt.split_dose", "omt.temporary_change_without_end_date"]
        );
    }

    #[test]
    fn split_dose_is_information() {
        let mut p = plan(Methadone, vec![]);
        p.omt.doses_per_day = Some(2);
        let w = check(&p);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].code, "omt.split_dose");
        assert_eq!(w[0].severity, Severity::Info);
    }

    #[test]
    fn doses_above_the_usual_maximum_warn() {
        let p = plan(NoOmt, vec![line("ibuprofen", 800.0, 4)]);
        assert_eq!(codes(&p), ["dose.above_usual_max"]);
        let p = plan(NoOmt, vec![line("morphine", 100.0, 6)]);
        assert!(codes(&p).is_empty(), "no ceiling for morphine");
    }

    #[test]
    fn acknowledgement_lifts_only_its_code() {
        let mut p = plan(
            Methadone,
            vec![line("naltrexone", 50.0, 1), line("morphine", 10.0, 4)],
        );
        p.analgesics[1].end = None;
        let w = check(&p);
        assert_eq!(unacknowledged_blocking(&w, &[]).len(), 2);
        let left = unacknowledged_blocking(&w, &["omt.antagonist"]);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].code, "omt.opioid_without_end_date");
    }

    // Table rows are tuples by design: one line per case.
    #[allow(clippy::type_complexity)]
    mod context {
        use super::*;
        use crate::domain::clinical::{
            Allergy, ClinicalContext, Facts, HepaticImpairment as H, Measure,
            RespiratoryDisease as R,
        };
        use crate::domain::patient::Sex;

        /// The codes and severities a table row expects.
        type Codes = Vec<(String, Severity)>;

        /// Everything known and harmless: a 40-year-old man, normal values.
        fn known() -> Facts {
            Facts {
                age_years: Some(40),
                sex: Some(Sex::Male),
                hepatic_impairment: Some(H::None),
                egfr: Some(90.0),
                qtc_ms: Some(420.0),
                weight_kg: Some(70.0),
                pregnancy_weeks: None,
                breastfeeding: Some(false),
                alcohol_use_disorder: Some(false),
                respiratory_disease: Some(vec![]),
                allergies: Some(vec![]),
                stale: vec![],
            }
        }

        fn ctx_codes(p: &PlanContent, f: &Facts) -> Codes {
            let mut c: Codes = context_rules(p, f)
                .into_iter()
                .map(|w| (w.code, w.severity))
                .collect();
            c.sort_by(|a, b| a.0.cmp(&b.0));
            c
        }

        fn one(code: &str, sev: Severity) -> Codes {
            vec![(code.to_owned(), sev)]
        }

        #[test]
        fn paracetamol_above_3g_with_a_risk_factor() {
            use Severity::*;
            // (mg a day, facts change, expected)
            type Change = fn(&mut Facts);
            let none: Change = |_| {};
            let hepatic: Change = |f| f.hepatic_impairment = Some(H::Mild);
            let alcohol: Change = |f| f.alcohol_use_disorder = Some(true);
            let light: Change = |f| f.weight_kg = Some(49.9);
            let fifty: Change = |f| f.weight_kg = Some(50.0);
            let no_weight: Change = |f| f.weight_kg = None;
            let table: &[(f64, Change, Codes)] = &[
                (2900.0, hepatic, vec![]),
                (3000.0, hepatic, vec![]),
                (
                    3100.0,
                    hepatic,
                    one("paracetamol.risk_factor_above_3g", Blocking),
                ),
                (
                    3100.0,
                    alcohol,
                    one("paracetamol.risk_factor_above_3g", Blocking),
                ),
                (
                    3100.0,
                    light,
                    one("paracetamol.risk_factor_above_3g", Blocking),
                ),
                (3100.0, fifty, vec![]),
                (3100.0, none, vec![]),
                (
                    3100.0,
                    no_weight,
                    one("paracetamol.risk_factor_unknown", Info),
                ),
                (3000.0, no_weight, vec![]),
            ];
            for (mg, change, want) in table {
                let mut l = line("paracetamol", 1000.0, 4);
                l.max_daily_mg = Some(*mg);
                let p = plan(NoOmt, vec![l]);
                let mut f = known();
                change(&mut f);
                assert_eq!(&ctx_codes(&p, &f), want, "{mg} mg, {f:?}");
            }
            let mut f = known();
            f.weight_kg = None;
            f.alcohol_use_disorder = None;
            let p = plan(NoOmt, vec![line("paracetamol", 1000.0, 4)]);
            let w = context_rules(&p, &f);
            assert_eq!(w[0].missing, ["alcohol_use_disorder", "weight_kg"]);
            assert_eq!(w[0].lines, [0]);
        }

        #[test]
        fn nsaids_and_pregnancy_kidney_age() {
            use Severity::*;
            let woman = |f: &mut Facts| {
                f.sex = Some(Sex::Female);
                f.breastfeeding = Some(false);
            };
            // (eGFR, pregnancy weeks, age, expected)
            let table: &[(Option<f64>, Option<f64>, i32, Codes)] = &[
                (
                    Some(29.0),
                    Some(0.0),
                    40,
                    one("nsaid.egfr_below_30", Blocking),
                ),
                (Some(30.0), Some(0.0), 40, one("nsaid.egfr_30_59", Warning)),
                (Some(59.0), Some(0.0), 40, one("nsaid.egfr_30_59", Warning)),
                (Some(60.0), Some(0.0), 40, vec![]),
                (Some(90.0), Some(23.0), 40, vec![]),
                (Some(90.0), Some(23.9), 40, vec![]),
                (
                    Some(90.0),
                    Some(24.0),
                    40,
                    one("nsaid.pregnancy_24_weeks", Blocking),
                ),
                (Some(90.0), Some(0.0), 74, vec![]),
                (Some(90.0), None, 75, vec![("nsaid.age_75".into(), Warning)]),
                (None, Some(0.0), 40, one("nsaid.context_unknown", Info)),
                (None, None, 40, one("nsaid.context_unknown", Info)),
            ];
            for (egfr, weeks, age, want) in table {
                let p = plan(NoOmt, vec![line("ibuprofen", 400.0, 3)]);
                let mut f = known();
                woman(&mut f);
                f.egfr = *egfr;
                f.pregnancy_weeks = *weeks;
                f.age_years = Some(*age);
                assert_eq!(
                    &ctx_codes(&p, &f),
                    want,
                    "eGFR {egfr:?}, {weeks:?} weeks, {age} y"
                );
            }
            // Pregnancy unknown matters for a woman of 40, not for a man, nor at 75.
            let p = plan(NoOmt, vec![line("ibuprofen", 400.0, 3)]);
            let mut f = known();
            woman(&mut f);
            let w = context_rules(&p, &f);
            assert_eq!(w[0].code, "nsaid.context_unknown");
            assert_eq!(w[0].missing, ["pregnancy_weeks"]);
            assert!(context_rules(&p, &known()).is_empty());
            f.age_years = None;
            assert_eq!(context_rules(&p, &f)[0].missing, ["pregnancy_weeks", "age"]);
        }

        #[test]
        fn methadone_and_the_qtc() {
            use Severity::*;
            // (QTc, OMT mg, expected)
            let table: &[(Option<f64>, f64, Codes)] = &[
                (Some(449.0), 60.0, vec![]),
                (Some(450.0), 60.0, one("methadone.qtc_450_499", Warning)),
                (Some(499.0), 60.0, one("methadone.qtc_450_499", Warning)),
                (Some(500.0), 60.0, one("methadone.qtc_500", Blocking)),
                (None, 100.0, one("methadone.qtc_unknown", Info)),
                (None, 101.0, one("methadone.high_dose_without_qtc", Warning)),
                (Some(420.0), 140.0, vec![]),
            ];
            for (qtc, mg, want) in table {
                let mut p = plan(Methadone, vec![]);
                p.omt.daily_dose_mg = Some(*mg);
                let mut f = known();
                f.qtc_ms = *qtc;
                assert_eq!(&ctx_codes(&p, &f), want, "QTc {qtc:?}, {mg} mg");
            }
            // A temporary rise above 100 mg counts.
            let mut p = plan(Methadone, vec![]);
            p.omt.temporary_adjustment = Some(TemporaryAdjustment {
                daily_dose_mg: 120.0,
                doses_per_day: 2,
                start: day("2026-11-24"),
                end: Some(day("2026-11-30")),
                reason: "pain".into(),
            });
            let mut f = known();
            f.qtc_ms = None;
            assert_eq!(
                ctx_codes(&p, &f),
                one("methadone.high_dose_without_qtc", Warning)
            );
            // Buprenorphine: no QTc rule.
            assert!(context_rules(&plan(Buprenorphine, vec![]), &f).is_empty());
        }

        #[test]
        fn codeine_and_tramadol_while_breastfeeding() {
            use Severity::*;
            for drug in ["codeine", "tramadol"] {
                let p = plan(NoOmt, vec![line(drug, 50.0, 3)]);
                let mut f = known();
                f.sex = Some(Sex::Female);
                f.pregnancy_weeks = Some(0.0);
                f.breastfeeding = Some(true);
                assert_eq!(
                    ctx_codes(&p, &f),
                    one("breastfeeding.codeine_tramadol", Blocking)
                );
                f.breastfeeding = Some(false);
                assert!(ctx_codes(&p, &f).is_empty());
                f.breastfeeding = None;
                assert_eq!(ctx_codes(&p, &f), one("breastfeeding.unknown", Info));
                f.sex = Some(Sex::Male);
                assert!(ctx_codes(&p, &f).is_empty(), "a man does not breastfeed");
            }
            let mut f = known();
            f.breastfeeding = Some(true);
            assert!(ctx_codes(&plan(NoOmt, vec![line("morphine", 10.0, 4)]), &f).is_empty());
        }

        #[test]
        fn opioid_depressant_and_respiratory_disease() {
            use Severity::*;
            let cases: &[(OmtMedication, &[&str], Option<Vec<R>>, Codes)] = &[
                (
                    Methadone,
                    &["diazepam"],
                    Some(vec![R::Copd]),
                    one("opioid.cns_depressant_respiratory", Warning),
                ),
                (
                    NoOmt,
                    &["morphine", "pregabalin"],
                    Some(vec![R::SleepApnoea]),
                    one("opioid.cns_depressant_respiratory", Warning),
                ),
                (
                    NoOmt,
                    &["morphine", "zolpidem"],
                    Some(vec![R::Asthma]),
                    vec![],
                ),
                (
                    NoOmt,
                    &["morphine", "zolpidem"],
                    None,
                    one("opioid.respiratory_disease_unknown", Info),
                ),
                (
                    NoOmt,
                    &["paracetamol", "diazepam"],
                    Some(vec![R::Copd]),
                    vec![],
                ),
                (NoOmt, &["morphine"], Some(vec![R::Copd]), vec![]),
            ];
            for (omt, drugs, resp, want) in cases {
                let mut p = plan(*omt, drugs.iter().map(|d| line(d, 0.5, 1)).collect());
                if *omt != NoOmt {
                    p.omt.daily_dose_mg = Some(30.0);
                }
                let mut f = known();
                f.respiratory_disease = resp.clone();
                assert_eq!(&ctx_codes(&p, &f), want, "{omt:?} {drugs:?} {resp:?}");
            }
            // Whatever the dose: the smallest one warns too.
            let p = plan(
                NoOmt,
                vec![line("morphine", 0.1, 1), line("oxazepam", 0.1, 1)],
            );
            let mut f = known();
            f.respiratory_disease = Some(vec![R::Copd]);
            assert_eq!(context_rules(&p, &f)[0].lines, [0, 1]);
        }

        #[test]
        fn the_omt_and_the_liver() {
            use Severity::*;
            let table: &[(OmtMedication, Option<H>, Codes)] = &[
                (
                    Buprenorphine,
                    Some(H::Severe),
                    one("buprenorphine.hepatic_severe", Blocking),
                ),
                (
                    BuprenorphineNaloxone,
                    Some(H::Severe),
                    one("buprenorphine.hepatic_severe", Blocking),
                ),
                (Buprenorphine, Some(H::Moderate), vec![]),
                (
                    Methadone,
                    Some(H::Severe),
                    one("methadone.hepatic_severe", Warning),
                ),
                (Methadone, Some(H::Mild), vec![]),
                (
                    Buprenorphine,
                    None,
                    one("omt.hepatic_impairment_unknown", Info),
                ),
                (NoOmt, Some(H::Severe), vec![]),
            ];
            for (omt, hepatic, want) in table {
                let mut f = known();
                f.hepatic_impairment = *hepatic;
                assert_eq!(
                    &ctx_codes(&plan(*omt, vec![]), &f),
                    want,
                    "{omt:?} {hepatic:?}"
                );
            }
        }

        #[test]
        fn recorded_allergies_block_their_lines() {
            use Severity::*;
            let p = plan(
                NoOmt,
                vec![line("paracetamol", 500.0, 2), line("ketoprofen", 50.0, 2)],
            );
            let allergy = |drug: Option<&str>, class: Option<DrugClass>| Allergy {
                drug: drug.map(str::to_owned),
                class,
            };
            let table: &[(Option<Vec<Allergy>>, Codes, Vec<usize>)] = &[
                (
                    Some(vec![allergy(Some("ketoprofen"), None)]),
                    one("allergy.recorded", Blocking),
                    vec![1],
                ),
                (
                    Some(vec![allergy(None, Some(DrugClass::Nsaid))]),
                    one("allergy.recorded", Blocking),
                    vec![1],
                ),
                (Some(vec![allergy(Some("ibuprofen"), None)]), vec![], vec![]),
                (Some(vec![]), vec![], vec![]),
                (None, one("allergy.unknown", Info), vec![]),
            ];
            for (allergies, want, lines) in table {
                let mut f = known();
                f.allergies = allergies.clone();
                assert_eq!(&ctx_codes(&p, &f), want, "{allergies:?}");
                if let Some(w) = context_rules(&p, &f).first() {
                    assert_eq!(&w.lines, lines);
                }
            }
        }

        #[test]
        fn stale_measures_count_as_unknown() {
            let today = day("2026-12-01");
            let m = |value, on: &str| {
                Some(Measure {
                    value,
                    measured_on: day(on),
                })
            };
            let stored = ClinicalContext {
                hepatic_impairment: Some(H::None),
                egfr: m(25.0, "2026-09-01"),      // 91 days old
                qtc_ms: m(520.0, "2025-11-30"),   // 366 days old
                weight_kg: m(45.0, "2026-06-03"), // 181 days old
                breastfeeding: Some(false),
                alcohol_use_disorder: Some(false),
                respiratory_disease: Some(vec![]),
                allergies: Some(vec![]),
                ..Default::default()
            };
            let f = stored.facts(today, Some(day("1970-01-01")), Some(Sex::Male));
            let mut p = plan(
                Methadone,
                vec![line("paracetamol", 1000.0, 4), line("ibuprofen", 400.0, 3)],
            );
            p.omt.daily_dose_mg = Some(60.0);
            let got = ctx_codes(&p, &f);
            let names: Vec<&str> = got.iter().map(|(c, _)| c.as_str()).collect();
            assert_eq!(
                names,
                [
                    "methadone.qtc_unknown",
                    "nsaid.context_unknown",
                    "paracetamol.risk_factor_unknown"
                ]
            );
            // The same values measured a day later are in force.
            let fresh = ClinicalContext {
                egfr: m(25.0, "2026-09-02"),
                qtc_ms: m(520.0, "2025-12-01"),
                weight_kg: m(45.0, "2026-06-04"),
                ..stored
            };
            let f = fresh.facts(today, Some(day("1970-01-01")), Some(Sex::Male));
            let got = ctx_codes(&p, &f);
            let names: Vec<&str> = got.iter().map(|(c, _)| c.as_str()).collect();
            assert_eq!(
                names,
                [
                    "methadone.qtc_500",
                    "nsaid.egfr_below_30",
                    "paracetamol.risk_factor_above_3g"
                ]
            );
        }

        #[test]
        fn no_context_at_all_says_so() {
            let p = plan(Methadone, vec![]);
            let w = check_with(&p, None);
            assert_eq!(w.last().map(|w| w.code.as_str()), Some("context.none"));
            assert!(
                check_with(&p, Some(&known()))
                    .iter()
                    .all(|w| w.code != "context.none")
            );
        }

        #[test]
        fn every_context_warning_has_a_source_and_infos_name_what_is_missing() {
            let p = plan(
                Methadone,
                vec![
                    line("paracetamol", 1000.0, 4),
                    line("ibuprofen", 400.0, 3),
                    line("tramadol", 50.0, 3),
                    line("diazepam", 5.0, 1),
                ],
            );
            let w = context_rules(&p, &Facts::default());
            assert!(w.len() >= 6, "{w:?}");
            for w in w {
                assert!(!w.source.is_empty() && !w.message.is_empty());
                if w.severity == Severity::Info {
                    assert!(!w.missing.is_empty(), "{} names nothing", w.code);
                }
            }
        }
    }
}
