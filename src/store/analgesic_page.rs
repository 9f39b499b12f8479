//! What the pharmacist's page (`GET /patients/{id}/analgesic-plan`) reads:
//! the current plan version, the patient, the people and the pharmacy the
//! plan names for the day, the latest dispensation of each drug. What is
//! in force that day is `domain::in_force`, pure.
//!
//! Two statements, each its own snapshot (`Db::read_autocommit`, on both
//! backends):
//! 1. [`HEAD_SQL`]: the patient's names and the current version's number,
//!    id, author and time, through the plan's pointer, with the patient's
//!    latest dispensations;
//! 2. [`names_sql!`]: the people the version names (its author, the
//!    prescribers in force) and the OMT's pharmacy, which only the
//!    version's content tells.
//!
//! The version's content (the plan itself, JSON) is read and parsed only
//! when the [`PlanCache`] does not hold that version: a version is never
//! changed once written (`store::care_plan` only inserts them; the pointer
//! `care_plans.current_version` is what moves), so `(patient, version)`
//! and the row's id, read from the database on every request by statement
//! 1, say whether the cached content is the current version's.
//!
//! No common snapshot is needed: the version's content is an immutable row
//! found by the id statement 1 read, and the names (people, pharmacy) are
//! whatever is current when statement 2 runs, as they would be a moment
//! later. A version written between the two statements is shown by the
//! next page.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Date, Double, Integer, Nullable, Text, Timestamp};

use crate::db::schema::care_plan_versions;
use crate::db::{DbConnection, Fixed};
use crate::domain::in_force::InForce;
use crate::domain::plan::{AnalgesicLine, PlanContent};
use crate::error::ApiError;
use crate::store::byte_bound::{Bounded, Weighed, bounded};
use crate::store::care_plan::PersonRef;
use crate::store::dispensation::DispensationRow;

/// The patient as the page names them.
pub struct PatientNames {
    pub id: String,
    pub given_names: String,
    pub family_name: String,
    pub birth_date: NaiveDate,
}

/// The current version, as the page shows it.
pub struct PageVersion {
    pub version: i32,
    pub author_id: String,
    pub created_at: NaiveDateTime,
    /// The plan (shared with the cache when it holds it).
    pub content: Arc<PlanContent>,
}

/// An organisation the page names: the OMT's dispensing pharmacy.
pub struct PharmacyRef {
    pub id: String,
    pub name: String,
    pub phone: Option<String>,
}

/// Everything the page shows, loaded.
pub struct Sources {
    pub patient: PatientNames,
    pub version: PageVersion,
    /// The version's author and the prescribers in force, by id.
    pub people: HashMap<String, PersonRef>,
    /// The OMT's dispensing pharmacy, when an OMT is in force.
    pub pharmacy: Option<PharmacyRef>,
    /// The latest dispensation of each drug, by drug code.
    pub dispensed: HashMap<String, DispensationRow>,
}

/// Loads the page's sources for `day`; 404 when the patient has no plan.
pub fn load(
    conn: &mut DbConnection,
    cache: &PlanCache,
    patient_id: &str,
    day: NaiveDate,
) -> Result<Sources, ApiError> {
    let (head, dispensed) =
        head(conn, patient_id)?.ok_or_else(|| ApiError::NotFound("no such patient".into()))?;
    let (Some(version_id), Some(version), Some(author_id), Some(created_at)) = (
        head.version_id,
        head.version,
        head.author_id,
        head.created_at,
    ) else {
        return Err(ApiError::NotFound(
            "this patient has no care plan yet".into(),
        ));
    };
    let content = match cache.get(patient_id, version, &version_id) {
        Some(content) => content,
        None => {
            let text = crate::per_backend!(conn, |c| care_plan_versions::table
                .find(&version_id)
                .select(care_plan_versions::content)
                .first::<String>(c))?;
            let content: PlanContent = serde_json::from_str(&text).map_err(|e| {
                ApiError::internal(anyhow::anyhow!("a stored plan version does not parse: {e}"))
            })?;
            cache.insert(patient_id, version, version_id, content, text.len())
        }
    };
    let in_force = InForce::of(&content, day);
    let mut named: Vec<&str> = vec![&author_id];
    named.extend(in_force.prescribers(&content));
    let pharmacy_id = match (&in_force.omt, &content.omt.dispensing_pharmacy_id) {
        (Some(_), Some(id)) => Some(id.as_str()),
        _ => None,
    };
    let (people, pharmacy) = names(conn, &named, pharmacy_id)?;
    Ok(Sources {
        patient: PatientNames {
            id: patient_id.to_owned(),
            given_names: head.given_names,
            family_name: head.family_name,
            birth_date: head.birth_date,
        },
        version: PageVersion {
            version,
            author_id,
            created_at,
            content,
        },
        people,
        pharmacy,
        dispensed,
    })
}

/// The patient and the plan's current version, through the pointer, once
/// per dispensation among the patient's latest 200 (once with null
/// dispensation columns when there is none), in no particular order (`{p}`:
/// the patient). No row: no such patient; null version columns: no plan
/// yet. The latest 200 are read along the index `dispensations_latest`,
/// backwards: nothing is sorted (an outer `ORDER BY` cost SQLite two
/// temporary b-trees per page); [`head`] finds each drug's latest itself.
const HEAD_SQL: &str = "\
    SELECT p.given_names, p.family_name, p.birth_date, \
        v.id AS version_id, v.version, v.author_id, v.created_at, \
        d.id AS d_id, d.line_index, d.drug, d.dose_mg, d.days_supply, d.dispensed_on, \
        d.early_refill, d.author_id AS d_author_id, d.created_at AS d_created_at \
    FROM patients p \
    LEFT JOIN care_plans c ON c.patient_id = p.id \
    LEFT JOIN care_plan_versions v \
        ON v.patient_id = c.patient_id AND v.version = c.current_version \
    LEFT JOIN (SELECT * FROM dispensations WHERE patient_id = {p} \
        ORDER BY dispensed_on DESC, id DESC LIMIT 200) d ON 1 = 1 \
    WHERE p.id = {p}";

#[derive(QueryableByName)]
struct HeadRow {
    #[diesel(sql_type = Text)]
    given_names: String,
    #[diesel(sql_type = Text)]
    family_name: String,
    #[diesel(sql_type = Date)]
    birth_date: NaiveDate,
    #[diesel(sql_type = Nullable<Text>)]
    version_id: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    version: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    author_id: Option<String>,
    #[diesel(sql_type = Nullable<Timestamp>)]
    created_at: Option<NaiveDateTime>,
    #[diesel(sql_type = Nullable<Text>)]
    d_id: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    line_index: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    drug: Option<String>,
    #[diesel(sql_type = Nullable<Double>)]
    dose_mg: Option<f64>,
    #[diesel(sql_type = Nullable<Integer>)]
    days_supply: Option<i32>,
    #[diesel(sql_type = Nullable<Date>)]
    dispensed_on: Option<NaiveDate>,
    #[diesel(sql_type = Nullable<Bool>)]
    early_refill: Option<bool>,
    #[diesel(sql_type = Nullable<Text>)]
    d_author_id: Option<String>,
    #[diesel(sql_type = Nullable<Timestamp>)]
    d_created_at: Option<NaiveDateTime>,
}

impl HeadRow {
    /// The dispensation this row carries, if any.
    fn dispensation(&mut self, patient_id: &str) -> Option<DispensationRow> {
        Some(DispensationRow {
            id: self.d_id.take()?,
            patient_id: patient_id.to_owned(),
            line_index: self.line_index,
            drug: self.drug.take()?,
            dose_mg: self.dose_mg?,
            days_supply: self.days_supply?,
            dispensed_on: self.dispensed_on?,
            early_refill: self.early_refill?,
            author_id: self.d_author_id.take()?,
            created_at: self.d_created_at?,
        })
    }
}

/// The head (see [`HEAD_SQL`]) and the latest dispensation of each drug.
fn head(
    conn: &mut DbConnection,
    patient_id: &str,
) -> QueryResult<Option<(HeadRow, HashMap<String, DispensationRow>)>> {
    let rows: Vec<HeadRow> = crate::per_backend!(conn, |c| Fixed::new(HEAD_SQL)
        .keyed::<HeadKey>()
        .bind_as::<Text, _>("p", patient_id)
        .load(c))?;
    let mut rows = rows.into_iter();
    let Some(mut first) = rows.next() else {
        return Ok(None);
    };
    // Each drug's latest: the greatest (day, id), whatever the rows' order.
    let mut latest: HashMap<String, DispensationRow> = HashMap::new();
    let mut keep = |found: Option<DispensationRow>| {
        let Some(d) = found else { return };
        match latest.get_mut(&d.drug) {
            Some(kept) if (kept.dispensed_on, &kept.id) >= (d.dispensed_on, &d.id) => {}
            Some(kept) => *kept = d,
            None => {
                latest.insert(d.drug.clone(), d);
            }
        }
    };
    keep(first.dispensation(patient_id));
    for mut row in rows {
        keep(row.dispensation(patient_id));
    }
    Ok(Some((first, latest)))
}

/// The people named by `{i}` (a JSON array of user ids) and the
/// organisation `{o}` (null: none), in one statement: `kind` is `u` or `o`.
/// `$each` is the backend's table function over the JSON array `{i}`, named
/// `j` with a column `value`, joined (see `store::thread_page`: not `IN`).
macro_rules! names_sql {
    ($each:literal) => {
        concat!(
            "SELECT 'u' AS kind, u.id, u.full_name AS name, u.phone FROM ",
            $each,
            " users u ON u.id = j.value UNION ALL \
             SELECT 'o', o.id, o.name, o.phone FROM organizations o WHERE o.id = {o}"
        )
    };
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Nullable<Text>)]
    phone: Option<String>,
}

type Names = (HashMap<String, PersonRef>, Option<PharmacyRef>);

/// The people `ids` (each once) and the organisation `pharmacy`.
fn names(conn: &mut DbConnection, ids: &[&str], pharmacy: Option<&str>) -> QueryResult<Names> {
    let mut unique: Vec<&str> = Vec::with_capacity(ids.len());
    for id in ids {
        if !unique.contains(id) {
            unique.push(id);
        }
    }
    let ids = serde_json::to_string(&unique)
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    let sql = match conn {
        DbConnection::Postgres(_) => {
            names_sql!("jsonb_array_elements_text(CAST({i} AS jsonb)) AS j(value) JOIN")
        }
        DbConnection::Sqlite(_) => names_sql!("json_each({i}) AS j CROSS JOIN"),
    };
    let rows: Vec<NameRow> = crate::per_backend!(conn, |c| Fixed::new(sql)
        .keyed::<NamesKey>()
        .bind_as::<Text, _>("i", &ids)
        .bind_as::<Nullable<Text>, _>("o", pharmacy)
        .load(c))?;
    let mut people = HashMap::with_capacity(unique.len());
    let mut organisation = None;
    for row in rows {
        if row.kind == "o" {
            organisation = Some(PharmacyRef {
                id: row.id,
                name: row.name,
                phone: row.phone,
            });
        } else {
            people.insert(
                row.id.clone(),
                PersonRef {
                    id: row.id,
                    full_name: row.name,
                    phone: row.phone,
                },
            );
        }
    }
    Ok((people, organisation))
}

crate::statement_key!(
    /// [`HEAD_SQL`]'s key in diesel's statement cache.
    HeadKey
);
crate::statement_key!(
    /// The key of [`names_sql!`]'s statement (one text per backend).
    NamesKey
);

/// Parsed plan versions by `(patient, version)`, checked against the
/// version's row id, bounded in entries and in bytes (an estimate: the
/// stored JSON's length plus the parsed structures' fixed sizes). In
/// memory only, never logged; each entry is one patient's version, looked
/// up only with the patient id the request's basis was resolved on.
pub struct PlanCache {
    versions: Option<Bounded<(String, i32), Cached>>,
    max_entries: usize,
    hits: prometheus::IntCounter,
    misses: prometheus::IntCounter,
}

struct Cached {
    id: String,
    content: Arc<PlanContent>,
    bytes: u64,
}

impl Weighed for Cached {
    fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl PlanCache {
    /// A cache of at most `max_entries` versions and about `max_bytes`
    /// (either 0: no cache, every page parses its version).
    pub fn new(max_entries: usize, max_bytes: u64) -> Self {
        Self {
            versions: bounded(max_entries, max_bytes),
            max_entries,
            hits: prometheus::IntCounter::new(
                "relais_plan_cache_hits_total",
                "Pharmacist's pages whose plan version was found parsed in memory",
            )
            .expect("valid counter options"),
            misses: prometheus::IntCounter::new(
                "relais_plan_cache_misses_total",
                "Pharmacist's pages that read and parsed their plan version",
            )
            .expect("valid counter options"),
        }
    }

    /// The content of `patient`'s version `version` if held and its row is `id`.
    fn get(&self, patient: &str, version: i32, id: &str) -> Option<Arc<PlanContent>> {
        let found = self
            .versions
            .as_ref()?
            .get(&(patient.to_owned(), version))
            .filter(|c| c.id == id)
            .map(|c| c.content.clone());
        match found {
            Some(_) => self.hits.inc(),
            None => self.misses.inc(),
        }
        found
    }

    /// Keeps `content` (whose JSON was `json_len` bytes) and hands it back.
    fn insert(
        &self,
        patient: &str,
        version: i32,
        id: String,
        content: PlanContent,
        json_len: usize,
    ) -> Arc<PlanContent> {
        let content = Arc::new(content);
        let Some(versions) = &self.versions else {
            self.misses.inc();
            return content;
        };
        let bytes = (json_len
            + id.len()
            + patient.len()
            + std::mem::size_of::<Cached>()
            + std::mem::size_of::<PlanContent>()
            + content.analgesics.len() * std::mem::size_of::<AnalgesicLine>())
            as u64;
        versions.insert(
            (patient.to_owned(), version),
            Arc::new(Cached {
                id,
                content: content.clone(),
                bytes,
            }),
        );
        content
    }

    /// Versions held now.
    pub fn len(&self) -> usize {
        self.versions.as_ref().map_or(0, |v| v.len())
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries bound.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Pages served from it, and pages that parsed their version.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits.get(), self.misses.get())
    }

    /// Its metrics, for the application's registry.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![Box::new(self.hits.clone()), Box::new(self.misses.clone())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(lines: usize) -> (PlanContent, usize) {
        let line = serde_json::json!({"drug": "paracetamol", "dose_mg": 1000.0,
            "times_per_day": 3, "start": "2026-11-01"});
        let text = serde_json::json!({"status": "active",
            "omt": {"medication": "none", "daily_dose_mg": null, "dispensing_pharmacy_id": null,
                    "prescriber_id": null, "temporary_adjustment": null},
            "analgesics": vec![line; lines], "pain_goal": null, "non_drug_measures": null,
            "review_date": null})
        .to_string();
        (serde_json::from_str(&text).expect("a plan"), text.len())
    }

    #[test]
    fn the_cache_keeps_at_most_its_entries_bound() {
        let cache = PlanCache::new(16, 1 << 30);
        for i in 0..200 {
            let (content, len) = plan(1);
            cache.insert(&format!("patient-{i}"), 1, format!("v{i}"), content, len);
            assert!(cache.len() <= 16, "{} entries after {i}", cache.len());
        }
        assert!(!cache.is_empty());
    }

    #[test]
    fn the_cache_keeps_at_most_its_bytes_bound() {
        let (content, len) = plan(20);
        let one = len as u64 + std::mem::size_of::<PlanContent>() as u64;
        let bound = one * 8;
        let cache = PlanCache::new(10_000, bound);
        for i in 0..200 {
            cache.insert(
                &format!("patient-{i}"),
                1,
                format!("v{i}"),
                content.clone(),
                len,
            );
        }
        assert!(
            cache.len() <= 8,
            "{} entries of about {one} bytes",
            cache.len()
        );
        let held: u64 = cache.versions.as_ref().unwrap().weight();
        assert!(held <= bound, "{held} > {bound}");
    }

    #[test]
    fn a_version_is_found_only_with_its_patient_number_and_row() {
        let cache = PlanCache::new(16, 1 << 20);
        let (content, len) = plan(2);
        cache.insert("a", 3, "row-3".into(), content, len);
        assert!(cache.get("a", 3, "row-3").is_some());
        assert!(cache.get("b", 3, "row-3").is_none(), "another patient");
        assert!(cache.get("a", 4, "row-3").is_none(), "another version");
        assert!(
            cache.get("a", 3, "row-x").is_none(),
            "another row (a restored database)"
        );
        assert_eq!(cache.counts(), (1, 3));
        let off = PlanCache::new(0, 1 << 20);
        let (content, len) = plan(2);
        off.insert("a", 3, "row-3".into(), content, len);
        assert!(off.get("a", 3, "row-3").is_none());
        assert!(off.is_empty());
    }
}
