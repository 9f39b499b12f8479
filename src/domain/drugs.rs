//! The built-in drug catalogue: what the safety rules know of each drug.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::plan::Route;

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
    /// WHO ATC code of the substance (system `http://www.whocc.no/atc`), so
    /// that a hospital's coded prescription maps to the catalogue entry.
    /// Where the WHO lists a substance under more than one code, the one of
    /// its use here: methadone and buprenorphine under N07BC (opioid
    /// dependence), codeine alone under R05DA04 (the only single-substance
    /// code the WHO gives it).
    pub atc: &'static str,
    /// The usual route of the forms used in this network (a line may say otherwise).
    pub route: Route,
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
    ($code:literal, $name:literal, [$($class:ident),+], $level:expr, $max:expr, $atc:literal, $route:ident) => {
        Drug {
            code: $code,
            name: $name,
            class: first!($($class),+),
            classes: &[$(C::$class),+],
            who_level: $level,
            max_daily_mg: $max,
            atc: $atc,
            route: Route::$route,
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
        Some(4000.0),
        "N02BE01",
        Oral
    ),
    drug!(
        "ibuprofen",
        "ibuprofen",
        [Nsaid],
        Some(1),
        Some(2400.0),
        "M01AE01",
        Oral
    ),
    drug!(
        "ketoprofen",
        "ketoprofen",
        [Nsaid],
        Some(1),
        Some(300.0),
        "M01AE03",
        Oral
    ),
    drug!(
        "naproxen",
        "naproxen",
        [Nsaid],
        Some(1),
        Some(1100.0),
        "M01AE02",
        Oral
    ),
    drug!(
        "diclofenac",
        "diclofenac",
        [Nsaid],
        Some(1),
        Some(150.0),
        "M01AB05",
        Oral
    ),
    drug!(
        "nefopam",
        "nefopam",
        [NonOpioidAnalgesic],
        Some(1),
        Some(120.0),
        "N02BG06",
        Oral
    ),
    drug!(
        "codeine",
        "codeine",
        [WeakOpioid],
        Some(2),
        Some(240.0),
        "R05DA04",
        Oral
    ),
    drug!(
        "dihydrocodeine",
        "dihydrocodeine",
        [WeakOpioid],
        Some(2),
        Some(240.0),
        "N02AA08",
        Oral
    ),
    drug!(
        "tramadol",
        "tramadol",
        [WeakOpioid],
        Some(2),
        Some(400.0),
        "N02AX02",
        Oral
    ),
    drug!(
        "tapentadol",
        "tapentadol",
        [StrongOpioid],
        Some(3),
        Some(500.0),
        "N02AX06",
        Oral
    ),
    drug!(
        "morphine",
        "morphine",
        [StrongOpioid],
        Some(3),
        None,
        "N02AA01",
        Oral
    ),
    drug!(
        "oxycodone",
        "oxycodone",
        [StrongOpioid],
        Some(3),
        None,
        "N02AA05",
        Oral
    ),
    drug!(
        "hydromorphone",
        "hydromorphone",
        [StrongOpioid],
        Some(3),
        None,
        "N02AA03",
        Oral
    ),
    drug!(
        "fentanyl",
        "fentanyl",
        [StrongOpioid],
        Some(3),
        None,
        "N02AB03",
        Transdermal
    ),
    drug!(
        "methadone",
        "methadone",
        [StrongOpioid, QtProlonging],
        Some(3),
        None,
        "N07BC02",
        Oral
    ),
    drug!(
        "buprenorphine",
        "buprenorphine",
        [PartialAgonist],
        Some(3),
        Some(24.0),
        "N07BC01",
        Sublingual
    ),
    drug!(
        "buprenorphine_naloxone",
        "buprenorphine + naloxone",
        [PartialAgonist],
        Some(3),
        Some(24.0),
        "N07BC51",
        Sublingual
    ),
    drug!(
        "naltrexone",
        "naltrexone",
        [OpioidAntagonist],
        None,
        Some(50.0),
        "N07BB04",
        Oral
    ),
    drug!(
        "nalmefene",
        "nalmefene",
        [OpioidAntagonist],
        None,
        Some(18.0),
        "N07BB05",
        Oral
    ),
    drug!(
        "naloxone",
        "naloxone",
        [OpioidAntagonist],
        None,
        None,
        "V03AB15",
        Intranasal
    ),
    drug!(
        "diazepam",
        "diazepam",
        [Benzodiazepine],
        None,
        Some(40.0),
        "N05BA01",
        Oral
    ),
    drug!(
        "oxazepam",
        "oxazepam",
        [Benzodiazepine],
        None,
        Some(150.0),
        "N05BA04",
        Oral
    ),
    drug!(
        "alprazolam",
        "alprazolam",
        [Benzodiazepine],
        None,
        Some(4.0),
        "N05BA12",
        Oral
    ),
    drug!(
        "clonazepam",
        "clonazepam",
        [Benzodiazepine],
        None,
        Some(8.0),
        "N03AE01",
        Oral
    ),
    drug!(
        "zolpidem",
        "zolpidem",
        [ZDrug],
        None,
        Some(10.0),
        "N05CF02",
        Oral
    ),
    drug!(
        "zopiclone",
        "zopiclone",
        [ZDrug],
        None,
        Some(7.5),
        "N05CF01",
        Oral
    ),
    drug!(
        "pregabalin",
        "pregabalin",
        [Gabapentinoid],
        None,
        Some(600.0),
        "N03AX16",
        Oral
    ),
    drug!(
        "gabapentin",
        "gabapentin",
        [Gabapentinoid],
        None,
        Some(3600.0),
        "N03AX12",
        Oral
    ),
    drug!(
        "amitriptyline",
        "amitriptyline",
        [Tca, QtProlonging],
        None,
        Some(150.0),
        "N06AA09",
        Oral
    ),
    drug!(
        "duloxetine",
        "duloxetine",
        [Snri],
        None,
        Some(120.0),
        "N06AX21",
        Oral
    ),
    drug!(
        "venlafaxine",
        "venlafaxine",
        [Snri],
        None,
        Some(375.0),
        "N06AX16",
        Oral
    ),
    drug!(
        "sertraline",
        "sertraline",
        [Ssri],
        None,
        Some(200.0),
        "N06AB06",
        Oral
    ),
    drug!(
        "fluoxetine",
        "fluoxetine",
        [Ssri],
        None,
        Some(60.0),
        "N06AB03",
        Oral
    ),
    drug!(
        "paroxetine",
        "paroxetine",
        [Ssri],
        None,
        Some(50.0),
        "N06AB05",
        Oral
    ),
    drug!(
        "citalopram",
        "citalopram",
        [Ssri, QtProlonging],
        None,
        Some(40.0),
        "N06AB04",
        Oral
    ),
    drug!(
        "escitalopram",
        "escitalopram",
        [Ssri, QtProlonging],
        None,
        Some(20.0),
        "N06AB10",
        Oral
    ),
    drug!(
        "hydroxyzine",
        "hydroxyzine",
        [Other, QtProlonging],
        None,
        Some(100.0),
        "N05BB01",
        Oral
    ),
    drug!(
        "domperidone",
        "domperidone",
        [Other, QtProlonging],
        None,
        Some(30.0),
        "A03FA03",
        Oral
    ),
    drug!(
        "ketamine",
        "ketamine",
        [Other],
        None,
        None,
        "N01AX03",
        Intravenous
    ),
];

/// The catalogue entry for `code`.
pub fn find(code: &str) -> Option<&'static Drug> {
    CATALOGUE.iter().find(|d| d.code == code)
}

/// The catalogue entry with the ATC code `atc` (codes are unique in the catalogue).
pub fn find_by_atc(atc: &str) -> Option<&'static Drug> {
    CATALOGUE.iter().find(|d| d.atc == atc)
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
    fn atc_codes_are_well_formed_unique_and_found_back() {
        let mut atcs: Vec<&str> = CATALOGUE.iter().map(|d| d.atc).collect();
        for atc in &atcs {
            // Level 5 of the ATC: letter, two digits, two letters, two digits.
            let b = atc.as_bytes();
            let shape = b.len() == 7
                && b[0].is_ascii_uppercase()
                && b[1..3].iter().all(u8::is_ascii_digit)
                && b[3..5].iter().all(u8::is_ascii_uppercase)
                && b[5..7].iter().all(u8::is_ascii_digit);
            assert!(shape, "{atc} is not an ATC substance code");
        }
        atcs.sort_unstable();
        let before = atcs.len();
        atcs.dedup();
        assert_eq!(atcs.len(), before, "duplicate ATC codes");
        for drug in CATALOGUE {
            assert_eq!(find_by_atc(drug.atc).map(|d| d.code), Some(drug.code));
        }
        assert_eq!(find("methadone").unwrap().atc, "N07BC02");
        assert_eq!(find("paracetamol").unwrap().atc, "N02BE01");
        assert_eq!(find("buprenorphine").unwrap().route, Route::Sublingual);
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
