//! What the pharmacist's page shows for a day (pure): the OMT and the
//! analgesic lines of the plan in force then, the earliest end among them
//! (re-check the plan by then), days left, the destabilisation watch.
//! `store::care_plan::analgesic_page` loads what it needs;
//! `api::care_plans::get_analgesic_plan` shows it.

use chrono::NaiveDate;

use crate::domain::plan::{AnalgesicLine, PlanContent, PlanStatus, TemporaryAdjustment};
use crate::domain::watch::{TIGHT_COWS, TIGHT_PAIN};

/// The OMT dose in force.
#[derive(Debug, Clone, Copy)]
pub struct OmtDose<'a> {
    pub daily_dose_mg: f64,
    pub doses_per_day: u8,
    /// The temporary adjustment in force, if any.
    pub adjustment: Option<&'a TemporaryAdjustment>,
}

impl OmtDose<'_> {
    /// The end of the temporary adjustment in force.
    pub fn until(&self) -> Option<NaiveDate> {
        self.adjustment.and_then(|a| a.end)
    }
}

/// The destabilisation watch on the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch {
    /// The last day of the tightened watch (7 days after a temporary OMT change ended).
    pub tightened_until: Option<NaiveDate>,
    /// Pain that alerts: at this score once when tightened, twice in 24 h otherwise.
    pub pain_threshold: i32,
    /// COWS score that alerts.
    pub cows_threshold: i32,
}

/// What is in force on one day.
#[derive(Debug)]
pub struct InForce<'a> {
    pub day: NaiveDate,
    /// `None`: no OMT, or the plan is not active.
    pub omt: Option<OmtDose<'a>>,
    /// Empty unless the plan is active.
    pub lines: Vec<&'a AnalgesicLine>,
    /// The earliest end among what is in force.
    pub valid_until: Option<NaiveDate>,
    pub watch: Watch,
}

impl<'a> InForce<'a> {
    /// Reads `content` on `day`.
    pub fn of(content: &'a PlanContent, day: NaiveDate) -> Self {
        let active = content.status == PlanStatus::Active;
        let lines: Vec<&AnalgesicLine> = content
            .analgesics
            .iter()
            .filter(|l| active && l.active_on(day))
            .collect();
        let omt = content.omt_on(day).filter(|_| active).map(
            |(daily_dose_mg, doses_per_day, adjustment)| OmtDose {
                daily_dose_mg,
                doses_per_day,
                adjustment,
            },
        );
        let valid_until = omt
            .and_then(|o| o.until())
            .into_iter()
            .chain(lines.iter().filter_map(|l| l.end))
            .min();
        let tightened_until = content.tightened_watch_until(day);
        let tightened = tightened_until.is_some();
        Self {
            day,
            omt,
            lines,
            valid_until,
            watch: Watch {
                tightened_until,
                pain_threshold: if tightened { TIGHT_PAIN } else { 7 },
                cows_threshold: if tightened { TIGHT_COWS } else { 13 },
            },
        }
    }

    /// Days from the day to `end` (0: it ends that day).
    pub fn days_to(&self, end: Option<NaiveDate>) -> Option<i64> {
        end.map(|e| (e - self.day).num_days())
    }

    /// The prescribers the page names: the OMT's (when in force) and each line's.
    pub fn prescribers(&self, content: &'a PlanContent) -> Vec<&'a str> {
        let mut named = Vec::new();
        if self.omt.is_some() {
            named.extend(content.omt.prescriber_id.as_deref());
        }
        named.extend(self.lines.iter().filter_map(|l| l.prescriber_id.as_deref()));
        named
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::plan::{Omt, OmtMedication, Route};

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn line(drug: &str, start: &str, end: Option<&str>, prescriber: &str) -> AnalgesicLine {
        AnalgesicLine {
            drug: drug.into(),
            dose_mg: 1000.0,
            route: Route::Oral,
            times_per_day: Some(4),
            interval_h: None,
            max_daily_mg: None,
            as_needed: false,
            start: day(start),
            end: end.map(day),
            prescriber_id: Some(prescriber.into()),
            note: None,
        }
    }

    /// Methadone 60 mg, 80 mg from 24 Nov to 1 Dec; three lines, one over.
    fn plan() -> PlanContent {
        PlanContent {
            status: PlanStatus::Active,
            omt: Omt {
                medication: OmtMedication::Methadone,
                daily_dose_mg: Some(60.0),
                doses_per_day: Some(1),
                dispensing_pharmacy_id: None,
                prescriber_id: Some("omt-gp".into()),
                temporary_adjustment: Some(TemporaryAdjustment {
                    daily_dose_mg: 80.0,
                    doses_per_day: 2,
                    start: day("2026-11-24"),
                    end: Some(day("2026-12-01")),
                    reason: "post-operative pain".into(),
                }),
            },
            analgesics: vec![
                line("paracetamol", "2026-11-24", Some("2026-11-28"), "a"),
                line("ibuprofen", "2026-11-20", Some("2026-11-22"), "b"),
                line("morphine", "2026-11-25", None, "c"),
            ],
            pain_goal: None,
            non_drug_measures: None,
            review_date: None,
        }
    }

    #[test]
    fn during_the_adjustment() {
        let p = plan();
        let f = InForce::of(&p, day("2026-11-26"));
        let omt = f.omt.expect("OMT in force");
        assert_eq!((omt.daily_dose_mg, omt.doses_per_day), (80.0, 2));
        assert_eq!(omt.until(), Some(day("2026-12-01")));
        let drugs: Vec<&str> = f.lines.iter().map(|l| l.drug.as_str()).collect();
        assert_eq!(drugs, ["paracetamol", "morphine"]);
        // The earliest end: paracetamol's, before the adjustment's.
        assert_eq!(f.valid_until, Some(day("2026-11-28")));
        assert_eq!(f.days_to(Some(day("2026-11-28"))), Some(2));
        assert_eq!(f.days_to(Some(day("2026-11-26"))), Some(0));
        assert_eq!(f.prescribers(&p), ["omt-gp", "a", "c"]);
        assert_eq!(
            f.watch,
            Watch {
                tightened_until: None,
                pain_threshold: 7,
                cows_threshold: 13
            }
        );
    }

    #[test]
    fn after_the_adjustment_the_watch_tightens_for_seven_days() {
        let p = plan();
        let f = InForce::of(&p, day("2026-12-02"));
        let omt = f.omt.expect("OMT in force");
        assert_eq!((omt.daily_dose_mg, omt.adjustment.is_none()), (60.0, true));
        assert_eq!(f.valid_until, None);
        assert_eq!(f.watch.tightened_until, Some(day("2026-12-08")));
        assert_eq!((f.watch.pain_threshold, f.watch.cows_threshold), (6, 9));
        let f = InForce::of(&p, day("2026-12-09"));
        assert_eq!(f.watch.tightened_until, None);
    }

    #[test]
    fn a_plan_not_active_shows_nothing_in_force() {
        let mut p = plan();
        p.status = PlanStatus::OnHold;
        let f = InForce::of(&p, day("2026-11-26"));
        assert!(f.omt.is_none() && f.lines.is_empty() && f.valid_until.is_none());
        assert!(f.prescribers(&p).is_empty());
    }
}
