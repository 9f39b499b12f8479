//! What a proposed plan changes against the current one (pure).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::plan::{AnalgesicLine, PlanContent};

text_enum! {
    /// The kind of a difference.
    ChangeKind {
        OmtMedicationChanged => "omt_medication_changed",
        OmtDoseChanged => "omt_dose_changed",
        OmtScheduleChanged => "omt_schedule_changed",
        TemporaryAdjustmentChanged => "temporary_adjustment_changed",
        LineAdded => "line_added",
        LineRemoved => "line_removed",
        LineChanged => "line_changed",
    }
}

/// One difference between two plans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Change {
    pub kind: ChangeKind,
    #[schema(value_type = Object)]
    pub before: Value,
    #[schema(value_type = Object)]
    pub after: Value,
}

fn change(kind: ChangeKind, before: Value, after: Value) -> Change {
    Change {
        kind,
        before,
        after,
    }
}

fn line_value(line: &AnalgesicLine) -> Value {
    serde_json::to_value(line).unwrap_or(Value::Null)
}

/// Compares two lines for what matters clinically (not who typed them).
fn same_line(a: &AnalgesicLine, b: &AnalgesicLine) -> bool {
    let mut a = a.clone();
    let mut b = b.clone();
    a.prescriber_id = None;
    b.prescriber_id = None;
    // An empty note is no note (a FHIR string cannot be empty: a line
    // through a discharge Bundle comes back without it).
    for line in [&mut a, &mut b] {
        if line.note.as_deref().is_some_and(|n| n.trim().is_empty()) {
            line.note = None;
        }
    }
    a == b
}

/// The differences from `before` (none: no plan yet) to `after`.
/// Lines are paired by drug, in order among lines of the same drug.
pub fn diff(before: Option<&PlanContent>, after: &PlanContent) -> Vec<Change> {
    let mut out = Vec::new();
    let (b_omt, a_omt) = (before.map(|p| &p.omt), &after.omt);
    let b_med = b_omt.map(|o| o.medication);
    if b_med != Some(a_omt.medication) {
        out.push(change(
            ChangeKind::OmtMedicationChanged,
            json!(b_med),
            json!(a_omt.medication),
        ));
    }
    let b_dose = b_omt.and_then(|o| o.daily_dose_mg);
    if b_dose != a_omt.daily_dose_mg {
        out.push(change(
            ChangeKind::OmtDoseChanged,
            json!(b_dose),
            json!(a_omt.daily_dose_mg),
        ));
    }
    let b_schedule = b_omt.and_then(|o| o.doses_per_day);
    if b_schedule != a_omt.doses_per_day {
        out.push(change(
            ChangeKind::OmtScheduleChanged,
            json!(b_schedule),
            json!(a_omt.doses_per_day),
        ));
    }
    let b_adj = b_omt.and_then(|o| o.temporary_adjustment.as_ref());
    if b_adj != a_omt.temporary_adjustment.as_ref() {
        out.push(change(
            ChangeKind::TemporaryAdjustmentChanged,
            json!(b_adj),
            json!(a_omt.temporary_adjustment),
        ));
    }

    let before_lines: &[AnalgesicLine] = before.map_or(&[], |p| &p.analgesics);
    let mut unmatched: Vec<Option<&AnalgesicLine>> = before_lines.iter().map(Some).collect();
    for line in &after.analgesics {
        let partner = unmatched
            .iter_mut()
            .find(|slot| slot.is_some_and(|b| b.drug == line.drug))
            .and_then(Option::take);
        match partner {
            None => out.push(change(ChangeKind::LineAdded, Value::Null, line_value(line))),
            Some(old) if !same_line(old, line) => {
                out.push(change(
                    ChangeKind::LineChanged,
                    line_value(old),
                    line_value(line),
                ));
            }
            Some(_) => {}
        }
    }
    for old in unmatched.into_iter().flatten() {
        out.push(change(
            ChangeKind::LineRemoved,
            line_value(old),
            Value::Null,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::plan::{Omt, OmtMedication, PlanStatus, Route, TemporaryAdjustment};

    fn day(s: &str) -> chrono::NaiveDate {
        s.parse().unwrap()
    }

    fn line(drug: &str, dose: f64) -> AnalgesicLine {
        AnalgesicLine {
            drug: drug.into(),
            dose_mg: dose,
            route: Route::Oral,
            times_per_day: Some(4),
            interval_h: None,
            max_daily_mg: None,
            as_needed: false,
            start: day("2026-11-24"),
            end: Some(day("2026-11-30")),
            prescriber_id: None,
            note: None,
        }
    }

    fn plan(dose: f64, per_day: u8, lines: Vec<AnalgesicLine>) -> PlanContent {
        PlanContent {
            status: PlanStatus::Active,
            omt: Omt {
                medication: OmtMedication::Methadone,
                daily_dose_mg: Some(dose),
                doses_per_day: Some(per_day),
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

    fn kinds(changes: &[Change]) -> Vec<ChangeKind> {
        changes.iter().map(|c| c.kind).collect()
    }

    #[test]
    fn table() {
        use ChangeKind::*;
        let base = plan(60.0, 1, vec![line("paracetamol", 1000.0)]);
        let cases: Vec<(PlanContent, Vec<ChangeKind>)> = vec![
            (base.clone(), vec![]),
            (
                plan(80.0, 1, vec![line("paracetamol", 1000.0)]),
                vec![OmtDoseChanged],
            ),
            (
                plan(60.0, 2, vec![line("paracetamol", 1000.0)]),
                vec![OmtScheduleChanged],
            ),
            (
                plan(
                    60.0,
                    1,
                    vec![line("paracetamol", 1000.0), line("morphine", 10.0)],
                ),
                vec![LineAdded],
            ),
            (plan(60.0, 1, vec![]), vec![LineRemoved]),
            (
                plan(60.0, 1, vec![line("paracetamol", 500.0)]),
                vec![LineChanged],
            ),
            (
                plan(60.0, 1, vec![line("ibuprofen", 400.0)]),
                vec![LineAdded, LineRemoved],
            ),
            (
                plan(
                    80.0,
                    2,
                    vec![line("paracetamol", 1000.0), line("morphine", 10.0)],
                ),
                vec![OmtDoseChanged, OmtScheduleChanged, LineAdded],
            ),
        ];
        for (after, expected) in cases {
            assert_eq!(kinds(&diff(Some(&base), &after)), expected);
        }
    }

    #[test]
    fn medication_and_temporary_adjustment() {
        let base = plan(60.0, 1, vec![]);
        let mut after = base.clone();
        after.omt.medication = OmtMedication::Buprenorphine;
        after.omt.daily_dose_mg = Some(16.0);
        let changes = diff(Some(&base), &after);
        assert_eq!(
            kinds(&changes),
            [ChangeKind::OmtMedicationChanged, ChangeKind::OmtDoseChanged]
        );
        assert_eq!(changes[0].before, json!("methadone"));
        assert_eq!(changes[0].after, json!("buprenorphine"));
        assert_eq!(changes[1].before, json!(60.0));

        let mut after = base.clone();
        after.omt.temporary_adjustment = Some(TemporaryAdjustment {
            daily_dose_mg: 80.0,
            doses_per_day: 2,
            start: day("2026-11-24"),
            end: Some(day("2026-12-01")),
            reason: "pain".into(),
        });
        let changes = diff(Some(&base), &after);
        assert_eq!(kinds(&changes), [ChangeKind::TemporaryAdjustmentChanged]);
        assert!(changes[0].before.is_null());
    }

    #[test]
    fn against_no_plan_everything_is_new() {
        let after = plan(60.0, 1, vec![line("paracetamol", 1000.0)]);
        let changes = diff(None, &after);
        assert_eq!(
            kinds(&changes),
            [
                ChangeKind::OmtMedicationChanged,
                ChangeKind::OmtDoseChanged,
                ChangeKind::OmtScheduleChanged,
                ChangeKind::LineAdded
            ]
        );
    }

    #[test]
    fn the_prescriber_alone_is_no_change() {
        let base = plan(60.0, 1, vec![line("paracetamol", 1000.0)]);
        let mut after = base.clone();
        after.analgesics[0].prescriber_id = Some("someone".into());
        assert!(diff(Some(&base), &after).is_empty());
    }
}
