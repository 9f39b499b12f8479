//! The patient's clinical context (liver, kidney, QTc, weight, pregnancy,
//! breastfeeding, alcohol, respiratory disease, allergies) and what the
//! safety rules may believe of it today: a measure older than its validity
//! counts as unknown. Pure: no I/O.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::drugs::{self, DrugClass};
use super::patient::Sex;
use crate::error::FieldError;

text_enum! {
    /// How impaired the liver is (Child-Pugh in spirit: mild A, moderate B, severe C).
    HepaticImpairment {
        None => "none",
        Mild => "mild",
        Moderate => "moderate",
        Severe => "severe",
    }
}

text_enum! {
    /// A chronic respiratory disease the rules reason about.
    RespiratoryDisease {
        Copd => "copd",
        SleepApnoea => "sleep_apnoea",
        Asthma => "asthma",
    }
}

/// A measured value and the day it was measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Measure {
    pub value: f64,
    /// `YYYY-MM-DD`, not after today.
    pub measured_on: NaiveDate,
}

/// A recorded allergy: to one drug of the catalogue, or to a class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Allergy {
    /// A code of the catalogue (`GET /drugs`); give this or `class`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drug: Option<String>,
    /// A drug class; give this or `drug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<DrugClass>,
}

impl Allergy {
    /// Whether a drug of the catalogue matches this allergy.
    pub fn matches(&self, drug: &drugs::Drug) -> bool {
        self.drug.as_deref() == Some(drug.code) || self.class.is_some_and(|c| drug.is(c))
    }
}

/// The most allergies one context holds.
pub const ALLERGIES_MAX: usize = 50;
/// A measured eGFR counts for 90 days.
pub const EGFR_VALID_DAYS: i64 = 90;
/// A measured QTc counts for 365 days.
pub const QTC_VALID_DAYS: i64 = 365;
/// A measured weight counts for 180 days.
pub const WEIGHT_VALID_DAYS: i64 = 180;
/// A pregnancy lapses 42 weeks after the recorded term's start.
pub const PREGNANCY_LAPSE_WEEKS: i64 = 42;

/// The clinical context as recorded: every field optional (`null` or absent
/// is unknown).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClinicalContext {
    #[serde(default)]
    pub hepatic_impairment: Option<HepaticImpairment>,
    /// mL/min/1.73 m², 0 to 250; counts for 90 days.
    #[serde(default)]
    pub egfr: Option<Measure>,
    /// Corrected QT interval in ms, 250 to 800; counts for 365 days.
    #[serde(default)]
    pub qtc_ms: Option<Measure>,
    /// kg, above 0 up to 400; counts for 180 days.
    #[serde(default)]
    pub weight_kg: Option<Measure>,
    /// Weeks of amenorrhoea on `measured_on`, 0 to 44; the term advances with the
    /// calendar and lapses 42 weeks after its start.
    #[serde(default)]
    pub pregnancy_weeks: Option<Measure>,
    #[serde(default)]
    pub breastfeeding: Option<bool>,
    #[serde(default)]
    pub alcohol_use_disorder: Option<bool>,
    /// An empty list: none known.
    #[serde(default)]
    pub respiratory_disease: Option<Vec<RespiratoryDisease>>,
    /// At most 50; an empty list: no known allergy.
    #[serde(default)]
    #[schema(max_items = 50)]
    pub allergies: Option<Vec<Allergy>>,
}

fn measure(
    m: Option<&Measure>,
    field: &str,
    (min, max): (f64, f64),
    today: NaiveDate,
    errors: &mut Vec<FieldError>,
) {
    let Some(m) = m else { return };
    if !m.value.is_finite() || m.value < min || m.value > max {
        errors.push(FieldError::new(
            format!("{field}.value"),
            format!("{min} to {max}"),
        ));
    }
    if m.measured_on > today {
        errors.push(FieldError::new(
            format!("{field}.measured_on"),
            "must not be in the future",
        ));
    }
    if m.measured_on.year() < 1900 {
        errors.push(FieldError::new(
            format!("{field}.measured_on"),
            "not a plausible date",
        ));
    }
}

impl ClinicalContext {
    /// Checks ranges, dates (none after `today`) and allergies; each error names its path
    /// under `prefix` (`""` or `"clinical_context."`).
    pub fn validate(&self, today: NaiveDate, prefix: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let at = |f: &str| format!("{prefix}{f}");
        measure(
            self.egfr.as_ref(),
            &at("egfr"),
            (0.0, 250.0),
            today,
            &mut errors,
        );
        measure(
            self.qtc_ms.as_ref(),
            &at("qtc_ms"),
            (250.0, 800.0),
            today,
            &mut errors,
        );
        measure(
            self.weight_kg.as_ref(),
            &at("weight_kg"),
            (0.5, 400.0),
            today,
            &mut errors,
        );
        measure(
            self.pregnancy_weeks.as_ref(),
            &at("pregnancy_weeks"),
            (0.0, 44.0),
            today,
            &mut errors,
        );
        if let Some(list) = &self.respiratory_disease {
            let mut seen = Vec::new();
            for (i, d) in list.iter().enumerate() {
                if seen.contains(d) {
                    errors.push(FieldError::new(
                        at(&format!("respiratory_disease[{i}]")),
                        "listed twice",
                    ));
                }
                seen.push(*d);
            }
        }
        if let Some(list) = &self.allergies {
            if list.len() > ALLERGIES_MAX {
                errors.push(FieldError::new(
                    at("allergies"),
                    format!("at most {ALLERGIES_MAX}"),
                ));
            }
            for (i, a) in list.iter().enumerate().take(ALLERGIES_MAX) {
                match (&a.drug, a.class) {
                    (Some(code), None) if drugs::find(code).is_none() => {
                        errors.push(FieldError::new(
                            at(&format!("allergies[{i}].drug")),
                            "not in the drug catalogue (GET /api/v1/drugs)",
                        ))
                    }
                    (Some(_), None) | (None, Some(_)) => {}
                    _ => errors.push(FieldError::new(
                        at(&format!("allergies[{i}].drug")),
                        "give drug or class, not both",
                    )),
                }
            }
        }
        errors
    }

    /// What the rules may believe on `today` of a patient born on `birth_date`
    /// (unknown for an inline context with no patient) of sex `sex`.
    pub fn facts(
        &self,
        today: NaiveDate,
        birth_date: Option<NaiveDate>,
        sex: Option<Sex>,
    ) -> Facts {
        let mut stale = Vec::new();
        let mut valid = |m: Option<&Measure>, days: i64, name: &'static str| {
            let m = m?;
            let age = (today - m.measured_on).num_days();
            if (0..=days).contains(&age) {
                Some(m.value)
            } else {
                stale.push(name);
                None
            }
        };
        let egfr = valid(self.egfr.as_ref(), EGFR_VALID_DAYS, "egfr");
        let qtc_ms = valid(self.qtc_ms.as_ref(), QTC_VALID_DAYS, "qtc_ms");
        let weight_kg = valid(self.weight_kg.as_ref(), WEIGHT_VALID_DAYS, "weight_kg");
        let pregnancy_weeks = self.pregnancy_weeks.and_then(|m| {
            let elapsed = (today - m.measured_on).num_days();
            let weeks_now = m.value + elapsed as f64 / 7.0;
            if elapsed >= 0 && weeks_now < PREGNANCY_LAPSE_WEEKS as f64 {
                Some(weeks_now)
            } else {
                stale.push("pregnancy_weeks");
                None
            }
        });
        Facts {
            age_years: birth_date.map(|b| age_on(b, today)),
            sex,
            hepatic_impairment: self.hepatic_impairment,
            egfr,
            qtc_ms,
            weight_kg,
            pregnancy_weeks,
            breastfeeding: self.breastfeeding,
            alcohol_use_disorder: self.alcohol_use_disorder,
            respiratory_disease: self.respiratory_disease.clone(),
            allergies: self.allergies.clone(),
            stale,
        }
    }
}

/// Full years from `birth` to `day`.
pub fn age_on(birth: NaiveDate, day: NaiveDate) -> i32 {
    let mut years = day.year() - birth.year();
    if (day.month(), day.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    years
}

/// The context as the rules see it on one day: stale measures are `None`,
/// the pregnancy term is today's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub age_years: Option<i32>,
    pub sex: Option<Sex>,
    pub hepatic_impairment: Option<HepaticImpairment>,
    pub egfr: Option<f64>,
    pub qtc_ms: Option<f64>,
    pub weight_kg: Option<f64>,
    /// Weeks of amenorrhoea today.
    pub pregnancy_weeks: Option<f64>,
    pub breastfeeding: Option<bool>,
    pub alcohol_use_disorder: Option<bool>,
    pub respiratory_disease: Option<Vec<RespiratoryDisease>>,
    pub allergies: Option<Vec<Allergy>>,
    /// Measures recorded but too old to count (their field names).
    pub stale: Vec<&'static str>,
}

impl Facts {
    /// Whether the patient may be pregnant or breastfeeding, as far as sex and age tell.
    pub fn could_bear_children(&self) -> bool {
        self.sex != Some(Sex::Male) && self.age_years.is_none_or(|a| (10..=55).contains(&a))
    }
}

/// Who recorded a value of the context, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    pub recorded_by: String,
    pub recorded_at: NaiveDateTime,
}

/// Per known field of a context, who recorded its current value.
pub type Provenance = BTreeMap<String, Recorded>;

/// The fields of a context as JSON values, the known ones only.
fn known_fields(c: &ClinicalContext) -> BTreeMap<String, serde_json::Value> {
    match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(map)) => {
            map.into_iter().filter(|(_, v)| !v.is_null()).collect()
        }
        _ => BTreeMap::new(),
    }
}

/// The provenance of `next`: a value unchanged since `previous` keeps its
/// recorder; a new or changed one is `by`'s, `at`.
pub fn provenance(
    previous: Option<(&ClinicalContext, &Provenance)>,
    next: &ClinicalContext,
    by: &str,
    at: NaiveDateTime,
) -> Provenance {
    let before = previous.map(|(c, p)| (known_fields(c), p));
    known_fields(next)
        .into_iter()
        .map(|(field, value)| {
            let kept = before.as_ref().and_then(|(old, p)| {
                (old.get(&field) == Some(&value))
                    .then(|| p.get(&field).cloned())
                    .flatten()
            });
            let recorded = kept.unwrap_or_else(|| Recorded {
                recorded_by: by.to_owned(),
                recorded_at: at,
            });
            (field, recorded)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn m(value: f64, on: &str) -> Option<Measure> {
        Some(Measure {
            value,
            measured_on: day(on),
        })
    }

    #[test]
    fn measures_count_until_their_validity_ends() {
        let today = day("2026-12-01");
        // (field, days old, still valid)
        let cases = [
            ("egfr", 90, true),
            ("egfr", 91, false),
            ("qtc_ms", 365, true),
            ("qtc_ms", 366, false),
            ("weight_kg", 180, true),
            ("weight_kg", 181, false),
        ];
        for (field, days, valid) in cases {
            let on = (today - chrono::Duration::days(days)).to_string();
            let mut c = ClinicalContext::default();
            match field {
                "egfr" => c.egfr = m(25.0, &on),
                "qtc_ms" => c.qtc_ms = m(470.0, &on),
                _ => c.weight_kg = m(48.0, &on),
            }
            let f = c.facts(today, None, None);
            let got = match field {
                "egfr" => f.egfr,
                "qtc_ms" => f.qtc_ms,
                _ => f.weight_kg,
            };
            assert_eq!(got.is_some(), valid, "{field} {days} days old");
            assert_eq!(f.stale.contains(&field), !valid, "{field} {days}");
        }
    }

    #[test]
    fn the_pregnancy_term_advances_and_lapses() {
        let c = ClinicalContext {
            pregnancy_weeks: m(20.0, "2026-11-01"),
            ..Default::default()
        };
        let weeks = |today: &str| c.facts(day(today), None, None).pregnancy_weeks;
        assert_eq!(weeks("2026-11-01"), Some(20.0));
        assert_eq!(weeks("2026-11-29"), Some(24.0));
        // Start 2026-06-14; 42 weeks later is 2027-04-04.
        assert!(weeks("2027-04-03").is_some_and(|w| w < 42.0));
        assert_eq!(weeks("2027-04-04"), None);
    }

    #[test]
    fn age_from_the_birth_date() {
        assert_eq!(age_on(day("1951-12-02"), day("2026-12-01")), 74);
        assert_eq!(age_on(day("1951-12-01"), day("2026-12-01")), 75);
    }

    #[test]
    fn validation_names_fields() {
        let today = day("2026-12-01");
        let c = ClinicalContext {
            egfr: m(-1.0, "2026-11-20"),
            qtc_ms: m(470.0, "2026-12-02"),
            respiratory_disease: Some(vec![RespiratoryDisease::Copd, RespiratoryDisease::Copd]),
            allergies: Some(vec![
                Allergy {
                    drug: Some("unobtainium".into()),
                    class: None,
                },
                Allergy {
                    drug: None,
                    class: None,
                },
                Allergy {
                    drug: None,
                    class: Some(DrugClass::Nsaid),
                },
            ]),
            ..Default::default()
        };
        let fields: Vec<String> = c.validate(today, "").into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "egfr.value",
                "qtc_ms.measured_on",
                "respiratory_disease[1]",
                "allergies[0].drug",
                "allergies[1].drug"
            ]
        );
        assert!(ClinicalContext::default().validate(today, "").is_empty());
    }

    #[test]
    fn provenance_keeps_the_recorder_of_unchanged_values() {
        let t1 = day("2026-11-20").and_hms_opt(9, 0, 0).unwrap();
        let t2 = day("2026-11-21").and_hms_opt(9, 0, 0).unwrap();
        let first = ClinicalContext {
            egfr: m(25.0, "2026-11-20"),
            breastfeeding: Some(false),
            ..Default::default()
        };
        let p1 = provenance(None, &first, "gp", t1);
        assert_eq!(p1.len(), 2);
        let mut second = first.clone();
        second.egfr = m(40.0, "2026-11-21");
        second.alcohol_use_disorder = Some(true);
        let p2 = provenance(Some((&first, &p1)), &second, "hospital", t2);
        assert_eq!(p2["breastfeeding"].recorded_by, "gp");
        assert_eq!(p2["egfr"].recorded_by, "hospital");
        assert_eq!(p2["alcohol_use_disorder"].recorded_at, t2);
        assert_eq!(p2.len(), 3);
    }
}
