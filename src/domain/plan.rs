//! The care plan's clinical content, and its validation (pure, no I/O).

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::drugs;
use super::text::{self, Flavour};
use crate::error::FieldError;

text_enum! {
    /// Where a plan stands.
    PlanStatus {
        Draft => "draft",
        Active => "active",
        OnHold => "on_hold",
        Completed => "completed",
        Revoked => "revoked",
    }
}

text_enum! {
    /// The maintenance treatment.
    OmtMedication {
        Methadone => "methadone",
        Buprenorphine => "buprenorphine",
        BuprenorphineNaloxone => "buprenorphine_naloxone",
        None => "none",
    }
}

impl OmtMedication {
    /// The catalogue code of the medication, if any.
    pub fn drug_code(self) -> Option<&'static str> {
        match self {
            Self::Methadone => Some("methadone"),
            Self::Buprenorphine => Some("buprenorphine"),
            Self::BuprenorphineNaloxone => Some("buprenorphine_naloxone"),
            Self::None => Option::None,
        }
    }

    /// Buprenorphine with or without naloxone.
    pub fn is_buprenorphine(self) -> bool {
        matches!(self, Self::Buprenorphine | Self::BuprenorphineNaloxone)
    }
}

text_enum! {
    /// How a drug is given.
    Route {
        Oral => "oral",
        Sublingual => "sublingual",
        Intravenous => "intravenous",
        Intramuscular => "intramuscular",
        Subcutaneous => "subcutaneous",
        Transdermal => "transdermal",
        Rectal => "rectal",
        Intranasal => "intranasal",
    }
}

/// A time-limited change of the OMT (e.g. a split or higher dose for pain).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemporaryAdjustment {
    #[schema(exclusive_minimum = 0, maximum = 100000)]
    pub daily_dose_mg: f64,
    #[schema(minimum = 1, maximum = 4)]
    #[serde(deserialize_with = "crate::domain::json::integer")]
    pub doses_per_day: u8,
    pub start: NaiveDate,
    /// Required in practice: a temporary change without an end is blocked by the rules.
    pub end: Option<NaiveDate>,
    #[schema(min_length = 1, max_length = 500, pattern = "\\S")]
    pub reason: String,
}

/// The opioid maintenance treatment section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Omt {
    pub medication: OmtMedication,
    /// Required unless the medication is `none`.
    #[schema(exclusive_minimum = 0, maximum = 100000)]
    pub daily_dose_mg: Option<f64>,
    /// 1 to 4; required unless the medication is `none`.
    #[schema(minimum = 1, maximum = 4)]
    #[serde(default, deserialize_with = "crate::domain::json::opt_integer")]
    pub doses_per_day: Option<u8>,
    /// A pharmacy of the network.
    #[schema(format = Uuid)]
    pub dispensing_pharmacy_id: Option<String>,
    /// A prescriber; the author when omitted.
    #[schema(format = Uuid)]
    pub prescriber_id: Option<String>,
    pub temporary_adjustment: Option<TemporaryAdjustment>,
}

/// One analgesic (or co-prescribed) line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalgesicLine {
    /// A code of the catalogue (`GET /drugs`).
    pub drug: String,
    #[schema(exclusive_minimum = 0, maximum = 100000)]
    pub dose_mg: f64,
    #[serde(default = "default_route")]
    pub route: Route,
    /// 1 to 24; give this or `interval_h`.
    #[schema(minimum = 1, maximum = 24)]
    #[serde(default, deserialize_with = "crate::domain::json::opt_integer")]
    pub times_per_day: Option<u8>,
    /// Hours between doses, 1 to 24; give this or `times_per_day`.
    #[schema(minimum = 1, maximum = 24)]
    #[serde(default, deserialize_with = "crate::domain::json::opt_integer")]
    pub interval_h: Option<u8>,
    #[schema(exclusive_minimum = 0, maximum = 100000)]
    pub max_daily_mg: Option<f64>,
    #[serde(default)]
    pub as_needed: bool,
    pub start: NaiveDate,
    /// Required for opioids (the rules block an opioid line without an end).
    pub end: Option<NaiveDate>,
    /// A prescriber; the author when omitted.
    #[schema(format = Uuid)]
    pub prescriber_id: Option<String>,
    #[schema(max_length = 1000)]
    pub note: Option<String>,
}

fn default_route() -> Route {
    Route::Oral
}

impl AnalgesicLine {
    /// How many doses a day at most.
    pub fn doses_per_day(&self) -> u32 {
        match (self.times_per_day, self.interval_h) {
            (Some(times), _) => u32::from(times),
            (None, Some(hours)) if hours > 0 => 24 / u32::from(hours),
            _ => 1,
        }
    }

    /// The most this line lets the patient take in a day, in mg.
    pub fn daily_max_mg(&self) -> f64 {
        self.max_daily_mg
            .unwrap_or(self.dose_mg * f64::from(self.doses_per_day()))
    }

    /// Whether the line is in force on `day`.
    pub fn active_on(&self, day: NaiveDate) -> bool {
        self.start <= day && self.end.is_none_or(|end| day <= end)
    }
}

/// The clinical content of a plan version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanContent {
    pub status: PlanStatus,
    pub omt: Omt,
    #[serde(default)]
    pub analgesics: Vec<AnalgesicLine>,
    #[schema(max_length = 1000)]
    pub pain_goal: Option<String>,
    #[schema(max_length = 2000)]
    pub non_drug_measures: Option<String>,
    pub review_date: Option<NaiveDate>,
}

/// A warning acknowledged by the author, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Acknowledgement {
    pub code: String,
    #[schema(
        min_length = 10,
        max_length = 1000,
        pattern = "^\\s*\\S[\\s\\S]{8,}\\S\\s*$"
    )]
    pub justification: String,
}

fn positive(value: f64, field: &str, errors: &mut Vec<FieldError>) {
    if !value.is_finite() || value <= 0.0 || value > 100_000.0 {
        errors.push(FieldError::new(field, "must be a positive number of mg"));
    }
}

/// Checks optional free text of the plan. The plan keeps it as written (its
/// versions and diffs show what the author typed); only the rules apply.
fn free_text(value: Option<&str>, field: &str, max: usize, errors: &mut Vec<FieldError>) {
    if let Err(e) = text::optional(value, field, Flavour::Free, max) {
        errors.push(e);
    }
}

fn uuid_field(value: Option<&str>, field: &str, errors: &mut Vec<FieldError>) {
    if value.is_some_and(|v| uuid::Uuid::parse_str(v).is_err()) {
        errors.push(FieldError::new(field, "not a valid id (UUID)"));
    }
}

impl PlanContent {
    /// Checks everything that does not need the database; each error names its path.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let omt = &self.omt;
        uuid_field(
            omt.dispensing_pharmacy_id.as_deref(),
            "omt.dispensing_pharmacy_id",
            &mut errors,
        );
        uuid_field(
            omt.prescriber_id.as_deref(),
            "omt.prescriber_id",
            &mut errors,
        );
        // Values given are checked even where they are not needed (`none`).
        let treated = omt.medication != OmtMedication::None;
        match omt.daily_dose_mg {
            Some(dose) => positive(dose, "omt.daily_dose_mg", &mut errors),
            None if treated => {
                errors.push(FieldError::new("omt.daily_dose_mg", "required for an OMT"))
            }
            None => {}
        }
        match omt.doses_per_day {
            Some(1..=4) => {}
            Some(_) => errors.push(FieldError::new("omt.doses_per_day", "1 to 4")),
            None if treated => {
                errors.push(FieldError::new("omt.doses_per_day", "required for an OMT"))
            }
            None => {}
        }
        if !treated && omt.temporary_adjustment.is_some() {
            errors.push(FieldError::new(
                "omt.temporary_adjustment",
                "there is no OMT to adjust",
            ));
        }
        if let Some(adj) = &omt.temporary_adjustment {
            positive(
                adj.daily_dose_mg,
                "omt.temporary_adjustment.daily_dose_mg",
                &mut errors,
            );
            if !(1..=4).contains(&adj.doses_per_day) {
                errors.push(FieldError::new(
                    "omt.temporary_adjustment.doses_per_day",
                    "1 to 4",
                ));
            }
            if adj.end.is_some_and(|end| end < adj.start) {
                errors.push(FieldError::new(
                    "omt.temporary_adjustment.end",
                    "must not be before start",
                ));
            }
            if let Err(e) = text::required(
                &adj.reason,
                "omt.temporary_adjustment.reason",
                Flavour::Free,
                text::ADJUSTMENT_REASON_MAX,
            ) {
                errors.push(e);
            }
        }
        for (i, line) in self.analgesics.iter().enumerate() {
            let at = |field: &str| format!("analgesics[{i}].{field}");
            if drugs::find(&line.drug).is_none() {
                errors.push(FieldError::new(
                    at("drug"),
                    "not in the drug catalogue (GET /api/v1/drugs)",
                ));
            }
            positive(line.dose_mg, &at("dose_mg"), &mut errors);
            uuid_field(
                line.prescriber_id.as_deref(),
                &at("prescriber_id"),
                &mut errors,
            );
            match (line.times_per_day, line.interval_h) {
                (Some(_), Some(_)) => errors.push(FieldError::new(
                    at("interval_h"),
                    "give times_per_day or interval_h, not both",
                )),
                (None, None) => errors.push(FieldError::new(
                    at("times_per_day"),
                    "give times_per_day or interval_h",
                )),
                (Some(t), None) if !(1..=24).contains(&t) => {
                    errors.push(FieldError::new(at("times_per_day"), "1 to 24"))
                }
                (None, Some(h)) if !(1..=24).contains(&h) => {
                    errors.push(FieldError::new(at("interval_h"), "1 to 24"))
                }
                _ => {}
            }
            if let Some(max) = line.max_daily_mg {
                positive(max, &at("max_daily_mg"), &mut errors);
                if max < line.dose_mg {
                    errors.push(FieldError::new(
                        at("max_daily_mg"),
                        "must not be below one dose",
                    ));
                }
            }
            if line.end.is_some_and(|end| end < line.start) {
                errors.push(FieldError::new(at("end"), "must not be before start"));
            }
            free_text(
                line.note.as_deref(),
                &at("note"),
                text::LINE_NOTE_MAX,
                &mut errors,
            );
        }
        free_text(
            self.pain_goal.as_deref(),
            "pain_goal",
            text::PAIN_GOAL_MAX,
            &mut errors,
        );
        free_text(
            self.non_drug_measures.as_deref(),
            "non_drug_measures",
            text::NON_DRUG_MEASURES_MAX,
            &mut errors,
        );
        errors
    }

    /// The OMT dose and schedule in force on `day` (the temporary adjustment while it runs).
    pub fn omt_on(&self, day: NaiveDate) -> Option<(f64, u8, Option<&TemporaryAdjustment>)> {
        let omt = &self.omt;
        if omt.medication == OmtMedication::None {
            return None;
        }
        if let Some(adj) = &omt.temporary_adjustment
            && adj.start <= day
            && adj.end.is_none_or(|end| day <= end)
        {
            return Some((adj.daily_dose_mg, adj.doses_per_day, Some(adj)));
        }
        Some((
            omt.daily_dose_mg.unwrap_or(0.0),
            omt.doses_per_day.unwrap_or(1),
            None,
        ))
    }
}

/// Days after a temporary OMT change ends during which the destabilisation
/// watch is tightened.
pub const TIGHTENED_WATCH_DAYS: i64 = 7;

impl PlanContent {
    /// The last day of the tightened destabilisation watch, when `day` falls
    /// in the 7 days after a temporary OMT change ended.
    pub fn tightened_watch_until(&self, day: NaiveDate) -> Option<NaiveDate> {
        let end = self.omt.temporary_adjustment.as_ref()?.end?;
        let until = end + chrono::Duration::days(TIGHTENED_WATCH_DAYS);
        (self.omt.medication != OmtMedication::None && end < day && day <= until).then_some(until)
    }
}

/// Checks acknowledgements: a justification of at least 10 characters each.
pub fn validate_acknowledgements(acks: &[Acknowledgement]) -> Vec<FieldError> {
    acks.iter()
        .enumerate()
        .filter_map(|(i, a)| {
            text::required_at_least(
                &a.justification,
                &format!("acknowledged_warnings[{i}].justification"),
                Flavour::Free,
                text::JUSTIFICATION_MIN,
                text::JUSTIFICATION_MAX,
            )
            .err()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn line(drug: &str) -> AnalgesicLine {
        AnalgesicLine {
            drug: drug.into(),
            dose_mg: 1000.0,
            route: Route::Oral,
            times_per_day: Some(4),
            interval_h: None,
            max_daily_mg: None,
            as_needed: false,
            start: day("2026-11-24"),
            end: Some(day("2026-12-01")),
            prescriber_id: None,
            note: None,
        }
    }

    fn plan() -> PlanContent {
        PlanContent {
            status: PlanStatus::Active,
            omt: Omt {
                medication: OmtMedication::Methadone,
                daily_dose_mg: Some(60.0),
                doses_per_day: Some(1),
                dispensing_pharmacy_id: None,
                prescriber_id: None,
                temporary_adjustment: Some(TemporaryAdjustment {
                    daily_dose_mg: 80.0,
                    doses_per_day: 2,
                    start: day("2026-11-24"),
                    end: Some(day("2026-12-01")),
                    reason: "post-operative pain".into(),
                }),
            },
            analgesics: vec![line("paracetamol")],
            pain_goal: None,
            non_drug_measures: None,
            review_date: None,
        }
    }

    fn fields(p: &PlanContent) -> Vec<String> {
        p.validate().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_sound_plan_passes() {
        assert!(plan().validate().is_empty());
    }

    #[test]
    fn each_error_names_its_path() {
        let mut p = plan();
        p.analgesics.push(line("unobtainium"));
        p.analgesics[0].end = Some(day("2026-11-01"));
        p.analgesics[1].dose_mg = -5.0;
        assert_eq!(
            fields(&p),
            [
                "analgesics[0].end",
                "analgesics[1].drug",
                "analgesics[1].dose_mg"
            ]
        );

        let mut p = plan();
        p.omt.doses_per_day = Some(5);
        p.omt.daily_dose_mg = None;
        assert_eq!(fields(&p), ["omt.daily_dose_mg", "omt.doses_per_day"]);

        let mut p = plan();
        p.analgesics[0].times_per_day = Some(25);
        assert_eq!(fields(&p), ["analgesics[0].times_per_day"]);
        p.analgesics[0].times_per_day = None;
        assert_eq!(fields(&p), ["analgesics[0].times_per_day"]);
        p.analgesics[0].interval_h = Some(6);
        assert!(fields(&p).is_empty());

        let mut p = plan();
        if let Some(adj) = p.omt.temporary_adjustment.as_mut() {
            adj.end = Some(day("2026-11-01"));
            adj.reason = " ".into();
        }
        assert_eq!(
            fields(&p),
            [
                "omt.temporary_adjustment.end",
                "omt.temporary_adjustment.reason"
            ]
        );
    }

    #[test]
    fn omt_in_force_before_during_after_the_adjustment() {
        let p = plan();
        assert_eq!(
            p.omt_on(day("2026-11-23")).map(|o| (o.0, o.1)),
            Some((60.0, 1))
        );
        assert_eq!(
            p.omt_on(day("2026-11-24")).map(|o| (o.0, o.1)),
            Some((80.0, 2))
        );
        assert_eq!(
            p.omt_on(day("2026-12-01")).map(|o| (o.0, o.1)),
            Some((80.0, 2))
        );
        assert_eq!(
            p.omt_on(day("2026-12-02")).map(|o| (o.0, o.1)),
            Some((60.0, 1))
        );
    }

    #[test]
    fn the_watch_is_tightened_for_seven_days_after_the_change_ends() {
        let p = plan();
        // The adjustment ends on 2026-12-01.
        for (today, until) in [
            ("2026-12-01", None),
            ("2026-12-02", Some(day("2026-12-08"))),
            ("2026-12-08", Some(day("2026-12-08"))),
            ("2026-12-09", None),
        ] {
            assert_eq!(p.tightened_watch_until(day(today)), until, "{today}");
        }
        let mut none = plan();
        none.omt.temporary_adjustment = None;
        assert_eq!(none.tightened_watch_until(day("2026-12-02")), None);
    }

    #[test]
    fn daily_maximum_of_a_line() {
        let mut l = line("paracetamol");
        assert_eq!(l.daily_max_mg(), 4000.0);
        l.times_per_day = None;
        l.interval_h = Some(8);
        assert_eq!(l.daily_max_mg(), 3000.0);
        l.max_daily_mg = Some(2000.0);
        assert_eq!(l.daily_max_mg(), 2000.0);
    }

    #[test]
    fn acknowledgements_need_a_justification() {
        let acks = [
            Acknowledgement {
                code: "a".into(),
                justification: "too short".into(),
            },
            Acknowledgement {
                code: "b".into(),
                justification: "discussed with the pain centre".into(),
            },
        ];
        let errors = validate_acknowledgements(&acks);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "acknowledged_warnings[0].justification");
    }
}
