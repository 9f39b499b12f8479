//! The care-plan version store: immutable numbered versions behind a
//! compare-and-swap pointer, the checks a version's references must pass,
//! and the preparation (validation, default prescribers, safety rules) every
//! write goes through, whether a GP's edit, a reconciled handover or an
//! applied consultation proposal.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Nullable, Text, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::json::Json;
use crate::db::models::{Organization, new_id};
use crate::db::schema::{care_plan_versions, care_plans, users};
use crate::db::{DbConnection, Fixed, Stamp, Tx};
use crate::domain::access::Relations;
use crate::domain::clinical::Facts;
use crate::domain::plan::{
    Acknowledgement, OmtMedication, PlanContent, PlanStatus, validate_acknowledgements,
};
use crate::domain::role::OrgKind;
use crate::domain::rules::{self, Warning};
use crate::domain::text::{self, Flavour};
use crate::domain::versioning::check_base;
use crate::error::{ApiError, FieldError};
use crate::notify::events::{Event, EventKind, emit};
use crate::store::access::{named_prescriber, named_prescriber_among};
use crate::store::messaging::{patient_audience, patient_audience_among};

/// Where a version came from, besides a direct edit.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanSource {
    /// `handover` or `consultation`.
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

/// A person named on a plan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PersonRef {
    pub id: String,
    pub full_name: String,
    pub phone: Option<String>,
}

/// A stored version row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = care_plan_versions)]
pub struct PlanVersionRow {
    pub id: String,
    pub patient_id: String,
    pub version: i32,
    pub status: PlanStatus,
    pub content: Json<PlanContent>,
    pub warnings: Json<Vec<Warning>>,
    pub acknowledged: Json<Vec<Acknowledgement>>,
    pub change_summary: String,
    pub source_type: Option<String>,
    pub source_id: Option<String>,
    pub author_id: String,
    pub created_at: NaiveDateTime,
}

impl PlanVersionRow {
    pub fn source(&self) -> Option<PlanSource> {
        Some(PlanSource {
            kind: self.source_type.clone()?,
            id: self.source_id.clone()?,
        })
    }
}

pub fn person(conn: &mut DbConnection, id: &str) -> QueryResult<PersonRef> {
    let (full_name, phone): (String, Option<String>) = crate::per_backend!(conn, |c| users::table
        .find(id)
        .select((users::full_name, users::phone))
        .first(c))?;
    Ok(PersonRef {
        id: id.to_owned(),
        full_name,
        phone,
    })
}

/// The people named by `ids`, by id; each once (the author is often the
/// prescriber too), each by primary key (a statement prepared once).
pub fn people(
    conn: &mut DbConnection,
    ids: &[&str],
) -> QueryResult<std::collections::HashMap<String, PersonRef>> {
    let mut found = std::collections::HashMap::with_capacity(ids.len());
    for id in ids {
        if !found.contains_key(*id) {
            found.insert((*id).to_owned(), person(conn, id)?);
        }
    }
    Ok(found)
}

/// One of the [`people`] loaded for a page; every stored reference names a user.
pub fn named_person(
    people: &std::collections::HashMap<String, PersonRef>,
    id: &str,
) -> Result<PersonRef, ApiError> {
    people
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a plan names an unknown user")))
}

/// The current version's number, if the patient has a plan.
pub fn current_version(conn: &mut DbConnection, patient_id: &str) -> QueryResult<Option<i32>> {
    care_plans::table
        .find(patient_id)
        .select(care_plans::current_version)
        .first(conn)
        .optional()
}

/// The current version's row, found through the plan's pointer in one
/// statement, if the patient has a plan.
pub fn current_version_row(
    conn: &mut DbConnection,
    patient_id: &str,
) -> QueryResult<Option<PlanVersionRow>> {
    crate::per_backend!(conn, |c| care_plan_versions::table
        .filter(care_plan_versions::patient_id.eq(patient_id))
        .filter(
            care_plan_versions::version.nullable().eq(care_plans::table
                .find(patient_id)
                .select(care_plans::current_version)
                .single_value()),
        )
        .select(PlanVersionRow::as_select())
        .first(c)
        .optional())
}

/// One version row.
pub fn version_row(
    conn: &mut DbConnection,
    patient_id: &str,
    version: i32,
) -> QueryResult<Option<PlanVersionRow>> {
    care_plan_versions::table
        .filter(care_plan_versions::patient_id.eq(patient_id))
        .filter(care_plan_versions::version.eq(version))
        .select(PlanVersionRow::as_select())
        .first(conn)
        .optional()
}

/// Up to `rows` of the patient's versions after version `after`, oldest
/// first, each with its author.
pub fn versions_after(
    conn: &mut DbConnection,
    patient_id: &str,
    after: i32,
    rows: i64,
) -> QueryResult<Vec<(PlanVersionRow, PersonRef)>> {
    let rows: Vec<(PlanVersionRow, String, Option<String>)> = care_plan_versions::table
        .inner_join(users::table)
        .filter(care_plan_versions::patient_id.eq(patient_id))
        .filter(care_plan_versions::version.gt(after))
        .order(care_plan_versions::version)
        .limit(rows)
        .select((PlanVersionRow::as_select(), users::full_name, users::phone))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(row, full_name, phone)| {
            let author = PersonRef {
                id: row.author_id.clone(),
                full_name,
                phone,
            };
            (row, author)
        })
        .collect())
}

/// Checks a plan's references against the database: the pharmacy, and the
/// prescribers, each an active prescriber with a team basis on the patient
/// now (§5: every person a record names has a basis). Fields are named under
/// `prefix` (`""` for a plan, `"proposed_plan."` for a proposal).
pub fn check_references(
    conn: &mut DbConnection,
    patient_id: &str,
    content: &PlanContent,
    now: NaiveDateTime,
    prefix: &str,
) -> Result<(), ApiError> {
    check_references_among(conn, patient_id, None, content, now, prefix)
}

/// [`check_references`], with the patient's relations when the request has
/// already loaded them (`None`: looked up for each prescriber).
pub fn check_references_among(
    conn: &mut DbConnection,
    patient_id: &str,
    relations: Option<&Relations>,
    content: &PlanContent,
    now: NaiveDateTime,
    prefix: &str,
) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if let Some(pharmacy) = &content.omt.dispensing_pharmacy_id {
        let kind = Organization::find(conn, pharmacy)?.map(|o| o.kind);
        if kind != Some(OrgKind::Pharmacy) {
            errors.push(FieldError::new(
                format!("{prefix}omt.dispensing_pharmacy_id"),
                "not a pharmacy of the network",
            ));
        }
    }
    let prescribers = std::iter::once(("omt.prescriber_id".to_owned(), &content.omt.prescriber_id))
        .chain(
            content
                .analgesics
                .iter()
                .enumerate()
                .map(|(i, l)| (format!("analgesics[{i}].prescriber_id"), &l.prescriber_id)),
        );
    let mut checked = std::collections::HashMap::new();
    for (field, id) in prescribers {
        let Some(id) = id else { continue };
        let ok = match checked.get(id) {
            Some(ok) => *ok,
            None => {
                let named = match relations {
                    Some(relations) => named_prescriber_among(conn, relations, id, now.and_utc())?,
                    None => named_prescriber(conn, patient_id, id, now.and_utc())?,
                };
                let ok = named.is_some();
                checked.insert(id.clone(), ok);
                ok
            }
        };
        if !ok {
            errors.push(FieldError::new(
                format!("{prefix}{field}"),
                "not an active prescriber with a team basis on this patient (on the care \
                 team, and the patient's consent covers their organisation)",
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Validates content (shape, acknowledgements, summary), fills in the
/// author as default prescriber, and runs the rules (with the patient's
/// clinical context as it stands today, `facts`): 422 when invalid or
/// when a blocking warning is not acknowledged.
pub fn prepare(
    mut content: PlanContent,
    change_summary: &str,
    acknowledged: &[Acknowledgement],
    author_id: &str,
    facts: Option<&Facts>,
) -> Result<(PlanContent, Vec<Warning>), ApiError> {
    let mut errors = content.validate();
    errors.extend(validate_acknowledgements(acknowledged));
    if let Err(e) = text::required(
        change_summary,
        "change_summary",
        Flavour::Free,
        text::CHANGE_SUMMARY_MAX,
    ) {
        errors.push(e);
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if content.omt.medication != OmtMedication::None && content.omt.prescriber_id.is_none() {
        content.omt.prescriber_id = Some(author_id.to_owned());
    }
    for line in &mut content.analgesics {
        line.prescriber_id
            .get_or_insert_with(|| author_id.to_owned());
    }
    let warnings = rules::check_with(&content, facts);
    let codes: Vec<&str> = acknowledged.iter().map(|a| a.code.as_str()).collect();
    let blocking = rules::unacknowledged_blocking(&warnings, &codes);
    if !blocking.is_empty() {
        let blocking = serde_json::to_value(blocking).map_err(ApiError::internal)?;
        return Err(ApiError::Blocked(blocking));
    }
    Ok((content, warnings))
}

/// A version to store.
pub struct NewVersion<'a> {
    pub patient_id: &'a str,
    pub content: &'a PlanContent,
    pub warnings: &'a [Warning],
    pub acknowledged: &'a [Acknowledgement],
    pub change_summary: &'a str,
    pub source: Option<PlanSource>,
    pub author_id: &'a str,
}

/// Stores the edit of a prescriber who read version `expected` (`None`:
/// they saw no plan): 428/412 when that is not the current one (see
/// [`check_base`]), else [`store_version`].
///
/// `relations`: the patient's, as the request's access check loaded them
/// (the prescribers it names and the event's audience are taken from them
/// instead of being looked up again).
pub fn write_version(
    conn: &mut Tx<'_>,
    new: NewVersion<'_>,
    relations: &Relations,
    expected: Option<i32>,
    now: NaiveDateTime,
) -> Result<PlanVersionRow, ApiError> {
    let next = match expected {
        // The compare-and-swap alone, with no read of the current version
        // first; only when it fails does the current version say why.
        Some(version) => match swap_version(conn, new.patient_id, expected, now) {
            Err(ApiError::PreconditionFailed(stale)) => {
                let current = current_version(conn, new.patient_id)?;
                check_base(current, Some(version), "care plan")?;
                return Err(ApiError::PreconditionFailed(stale));
            }
            next => next?,
        },
        None => {
            let current = current_version(conn, new.patient_id)?;
            check_base(current, None, "care plan")?;
            swap_version(conn, new.patient_id, None, now)?
        }
    };
    // After the swap, so a stale base is told first (as before); a wrong
    // reference rolls the swap back with the write's savepoint.
    check_references_among(conn, new.patient_id, Some(relations), new.content, now, "")?;
    insert_version(conn, new, Some(relations), next, now)
}

/// Stores the next version if the current one is still `expected` (None: no
/// plan yet); otherwise 412. Run inside the write's transaction.
pub fn store_version(
    conn: &mut Tx<'_>,
    new: NewVersion<'_>,
    expected: Option<i32>,
    now: NaiveDateTime,
) -> Result<PlanVersionRow, ApiError> {
    store_version_among(conn, new, None, expected, now)
}

/// [`store_version`], with the patient's relations when the request has
/// already loaded them.
fn store_version_among(
    conn: &mut Tx<'_>,
    new: NewVersion<'_>,
    relations: Option<&Relations>,
    expected: Option<i32>,
    now: NaiveDateTime,
) -> Result<PlanVersionRow, ApiError> {
    check_references_among(conn, new.patient_id, relations, new.content, now, "")?;
    let next = swap_version(conn, new.patient_id, expected, now)?;
    insert_version(conn, new, relations, next, now)
}

/// Moves the plan's current version from `expected` to the next (None: no
/// plan yet, the first) and returns it; 412 if another write moved it first.
fn swap_version(
    conn: &mut DbConnection,
    patient_id: &str,
    expected: Option<i32>,
    now: NaiveDateTime,
) -> Result<i32, ApiError> {
    let stale = || {
        ApiError::PreconditionFailed(
            "the care plan has changed since you read it; reload it".into(),
        )
    };
    match expected {
        Some(version) => {
            // The compare-and-swap: of racing writers on one version, one wins.
            let swapped = crate::per_backend!(conn, |c| {
                Fixed::new(
                    "UPDATE care_plans SET current_version = {}, updated_at = {} \
                     WHERE patient_id = {} AND current_version = {}",
                )
                .bind::<Integer, _>(version + 1)
                .bind::<Timestamp, _>(Stamp(now))
                .bind::<Text, _>(patient_id)
                .bind::<Integer, _>(version)
                .execute(c)
            })?;
            if swapped != 1 {
                return Err(stale());
            }
            Ok(version + 1)
        }
        None => {
            diesel::insert_into(care_plans::table)
                .values((
                    care_plans::patient_id.eq(patient_id),
                    care_plans::current_version.eq(1),
                    care_plans::updated_at.eq(now),
                ))
                .execute(conn)
                .map_err(|e| {
                    if crate::db::is_unique_violation(&e) {
                        stale()
                    } else {
                        e.into()
                    }
                })?;
            Ok(1)
        }
    }
}

/// Stores version `next` (its plan row already moved to it) and emits
/// `care_plan.version_created` to the patient's audience.
fn insert_version(
    conn: &mut Tx<'_>,
    new: NewVersion<'_>,
    relations: Option<&Relations>,
    next: i32,
    now: NaiveDateTime,
) -> Result<PlanVersionRow, ApiError> {
    let row = PlanVersionRow {
        id: new_id(),
        patient_id: new.patient_id.to_owned(),
        version: next,
        status: new.content.status,
        content: Json::new(new.content.clone()),
        warnings: Json::new(new.warnings.to_vec()),
        acknowledged: Json::new(new.acknowledged.to_vec()),
        change_summary: new.change_summary.trim().to_owned(),
        source_type: new.source.as_ref().map(|s| s.kind.clone()),
        source_id: new.source.map(|s| s.id),
        author_id: new.author_id.to_owned(),
        created_at: now,
    };
    crate::per_backend!(conn.conn(), |c| {
        Fixed::new(
            "INSERT INTO care_plan_versions (id, patient_id, version, status, content, \
                 warnings, acknowledged, change_summary, source_type, source_id, author_id, \
                 created_at) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
        )
        .bind::<Text, _>(&row.id)
        .bind::<Text, _>(&row.patient_id)
        .bind::<Integer, _>(row.version)
        .bind::<Text, _>(row.status)
        .bind::<Text, _>(&row.content)
        .bind::<Text, _>(&row.warnings)
        .bind::<Text, _>(&row.acknowledged)
        .bind::<Text, _>(&row.change_summary)
        .bind::<Nullable<Text>, _>(row.source_type.as_deref())
        .bind::<Nullable<Text>, _>(row.source_id.as_deref())
        .bind::<Text, _>(&row.author_id)
        .bind::<Timestamp, _>(Stamp(row.created_at))
        .execute(c)
    })?;
    let version = next.to_string();
    let event = Event {
        kind: EventKind::CarePlanVersionCreated,
        patient_id: Some(new.patient_id),
        refs: &[("version", version.as_str())],
    };
    let audience = match relations {
        Some(relations) => patient_audience_among(conn, new.patient_id, relations, now)?,
        None => patient_audience(conn, new.patient_id, now)?,
    };
    emit(conn, &audience, &event, now)?;
    Ok(row)
}
