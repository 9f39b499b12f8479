//! The built-in drug catalogue: what the safety rules know of each drug.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

text_enum! {
    /// Pharmacological classes the rules reason about. A drug may have several.
    DrugClass {
        NonOpioidAnalgesic => "non_opioid_analgesic",
        Nsaid => "nsaid",
        WeakOpioid => "weak_opioid",
        StrongOpioid => "strong_opioid",
        PartialAgonist => "partial_agonist",
        OpioidAntagonist => "opioid_antagonist",
        Benzodiazepine => "benzodiazepine",
        ZDrug => "z_drug",
        Gabapentinoid => "gabapentinoid",
        Ssri => "ssri",
        Snri => "snri",
        Tca => "tca",
        QtProlonging => "qt_prolonging",
        Other => "other",
    }
}

/// A catalogue entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Drug {
    /// Stable code used in care plans.
    pub code: &'static str,
    /// International non-proprietary name.
    pub name: &'static str,
    /// The main class.
    pub class: DrugClass,
    /// Every class the drug belongs to (the main one first).
    pub classes: &'static [DrugClass],
    /// WHO analgesic ladder step, for analgesics.
    pub who_level: Option<u8>,
    /// Usual adult maximum per day, in mg (none where there is no ceiling).
    pub max_daily_mg: Option<f64>,
}

impl Drug {
    /// Whether the drug belongs to `class`.
    pub fn is(&self, class: DrugClass) -> bool {
        self.classes.contains(&class)
    }

    /// Opioid agonists, full or partial (not antagonists).
    pub fn is_opioid(&self) -> bool {
        self.is(DrugClass::WeakOpioid)
            || self.is(DrugClass::StrongOpioid)
            || self.is(DrugClass::PartialAgonist)
    }
}

use DrugClass as C;

macro_rules! drug {
    ($code:literal, $name:literal, [$($class:ident),+], $level:expr, $max:expr) => {
        Drug {
            code: $code,
            name: $name,
            class: first!($($class),+),
            classes: &[$(C::$class),+],
            who_level: $level,
            max_daily_mg: $max,
        }
    };
}

macro_rules! first {
    ($head:ident $(, $rest:ident)*) => {
        C::$head
    };
}

/// The catalogue, compiled into the binary. Maxima are usual adult maxima
/// (French SmPCs); a plan above them gets a warning, not a refusal.
pub static CATALOGUE: &[Drug] = &[
    drug!(
        "paracetamol",
        "paracetamol",
        [NonOpioidAnalgesic],
        Some(1),
        Some(4000.0)
    ),
    drug!("ibuprofen", "ibuprofen", [Nsaid], Some(1), Some(2400.0)),
    drug!("ketoprofen", "ketoprofen", [Nsaid], Some(1), Some(300.0)),
    drug!("naproxen", "naproxen", [Nsaid], Some(1), Some(1100.0)),
    drug!("diclofenac", "diclofenac", [Nsaid], Some(1), Some(150.0)),
    drug!(
        "nefopam",
        "nefopam",
        [NonOpioidAnalgesic],
        Some(1),
        Some(120.0)
    ),
    drug!("codeine", "codeine", [WeakOpioid], Some(2), Some(240.0)),
    drug!(
        "dihydrocodeine",
        "dihydrocodeine",
        [WeakOpioid],
        Some(2),
        Some(240.0)
    ),
    drug!("tramadol", "tramadol", [WeakOpioid], Some(2), Some(400.0)),
    drug!(
        "tapentadol",
        "tapentadol",
        [StrongOpioid],
        Some(3),
        Some(500.0)
    ),
    drug!("morphine", "morphine", [StrongOpioid], Some(3), None),
    drug!("oxycodone", "oxycodone", [StrongOpioid], Some(3), None),
    drug!(
        "hydromorphone",
        "hydromorphone",
        [StrongOpioid],
        Some(3),
        None
    ),
    drug!("fentanyl", "fentanyl", [StrongOpioid], Some(3), None),
    drug!(
        "methadone",
        "methadone",
        [StrongOpioid, QtProlonging],
        Some(3),
        None
    ),
    drug!(
        "buprenorphine",
        "buprenorphine",
        [PartialAgonist],
        Some(3),
        Some(24.0)
    ),
    drug!(
        "buprenorphine_naloxone",
        "buprenorphine + naloxone",
        [PartialAgonist],
        Some(3),
        Some(24.0)
    ),
    drug!(
        "naltrexone",
        "naltrexone",
        [OpioidAntagonist],
        None,
        Some(50.0)
    ),
    drug!(
        "nalmefene",
        "nalmefene",
        [OpioidAntagonist],
        None,
        Some(18.0)
    ),
    drug!("naloxone", "naloxone", [OpioidAntagonist], None, None),
    drug!("diazepam", "diazepam", [Benzodiazepine], None, Some(40.0)),
    drug!("oxazepam", "oxazepam", [Benzodiazepine], None, Some(150.0)),
    drug!(
        "alprazolam",
        "alprazolam",
        [Benzodiazepine],
        None,
        Some(4.0)
    ),
    drug!(
        "clonazepam",
        "clonazepam",
        [Benzodiazepine],
        None,
        Some(8.0)
    ),
    drug!("zolpidem", "zolpidem", [ZDrug], None, Some(10.0)),
    drug!("zopiclone", "zopiclone", [ZDrug], None, Some(7.5)),
    drug!(
        "pregabalin",
        "pregabalin",
        [Gabapentinoid],
        None,
        Some(600.0)
    ),
    drug!(
        "gabapentin",
        "gabapentin",
        [Gabapentinoid],
        None,
        Some(3600.0)
    ),
    drug!(
        "amitriptyline",
        "amitriptyline",
        [Tca, QtProlonging],
        None,
        Some(150.0)
    ),
    drug!("duloxetine", "duloxetine", [Snri], None, Some(120.0)),
    drug!("venlafaxine", "venlafaxine", [Snri], None, Some(375.0)),
    drug!("sertraline", "sertraline", [Ssri], None, Some(200.0)),
    drug!("fluoxetine", "fluoxetine", [Ssri], None, Some(60.0)),
    drug!("paroxetine", "paroxetine", [Ssri], None, Some(50.0)),
    drug!(
        "citalopram",
        "citalopram",
        [Ssri, QtProlonging],
        None,
        Some(40.0)
    ),
    drug!(
        "escitalopram",
        "escitalopram",
        [Ssri, QtProlonging],
        None,
        Some(20.0)
    ),
    drug!(
        "hydroxyzine",
        "hydroxyzine",
        [Other, QtProlonging],
        None,
        Some(100.0)
    ),
    drug!(
        "domperidone",
        "domperidone",
        [Other, QtProlonging],
        None,
        Some(30.0)
    ),
    drug!("ketamine", "ketamine", [Other], None, None),
];

/// The catalogue entry for `code`.
pub fn find(code: &str) -> Option<&'static Drug> {
    CATALOGUE.iter().find(|d| d.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_the_required_drugs_are_there() {
        let mut codes: Vec<&str> = CATALOGUE.iter().map(|d| d.code).collect();
        codes.sort_unstable();
        let before = codes.len();
        codes.dedup();
        assert_eq!(codes.len(), before, "duplicate codes");
        for code in [
            "paracetamol",
            "ibuprofen",
            "ketoprofen",
            "naproxen",
            "diclofenac",
            "nefopam",
            "codeine",
            "dihydrocodeine",
            "tramadol",
            "tapentadol",
            "morphine",
            "oxycodone",
            "hydromorphone",
            "fentanyl",
            "methadone",
            "buprenorphine",
            "buprenorphine_naloxone",
            "naltrexone",
            "nalmefene",
            "naloxone",
            "diazepam",
            "oxazepam",
            "alprazolam",
            "clonazepam",
            "zolpidem",
            "zopiclone",
            "pregabalin",
            "gabapentin",
            "amitriptyline",
            "duloxetine",
            "venlafaxine",
            "sertraline",
            "fluoxetine",
            "paroxetine",
            "citalopram",
            "escitalopram",
            "hydroxyzine",
            "domperidone",
            "ketamine",
        ] {
            assert!(find(code).is_some(), "{code} missing");
        }
    }

    #[test]
    fn classes_the_rules_rely_on() {
        assert!(find("citalopram").unwrap().is(DrugClass::QtProlonging));
        assert!(find("citalopram").unwrap().is(DrugClass::Ssri));
        assert!(find("methadone").unwrap().is_opioid());
        assert!(find("buprenorphine").unwrap().is_opioid());
        assert!(!find("naloxone").unwrap().is_opioid());
        assert_eq!(find("tramadol").unwrap().who_level, Some(2));
        assert_eq!(find("morphine").unwrap().class, DrugClass::StrongOpioid);
    }
}
