//! OMT-aware safety rules: pure functions over a plan and the catalogue.
//! Each warning has a stable code, a severity, a message, its source, and the
//! analgesic lines concerned (indices into `analgesics`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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

/// Runs every rule on a plan; known drugs only (unknown codes fail validation first).
pub fn check(plan: &PlanContent) -> Vec<Warning> {
    let mut out = Vec::new();
    let medication = plan.omt.medication;
    let on_omt = medication != OmtMedication::None;
    let is_weak = |d: &Drug| d.is(DrugClass::WeakOpioid);
    let is_full_agonist = |d: &Drug| d.is(DrugClass::WeakOpioid) || d.is(DrugClass::StrongOpioid);
    let is_depressant = |d: &Drug| {
        d.is(DrugClass::Benzodiazepine) || d.is(DrugClass::Gabapentinoid) || d.is(DrugClass::ZDrug)
    };

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
}
