//! What the access rule needs from the database: a patient's relations
//! (team, consent, open consultations, the caller's emergency grants) loaded
//! in one statement, and the basis they give a user now. The rule itself is
//! the pure [`crate::domain::access::basis`].

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text, Timestamp};

use crate::auth::AuthUser;
use crate::db::models::User;
use crate::db::{DbConnection, Fixed, Stamp};
use crate::domain::access::{self, Basis, Caller, ConsentStatus, Member, Relations, TeamRole};

/// One row of [`RELATIONS_SQL`]: `kind` says which relation it carries.
#[derive(QueryableByName)]
struct RelationRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Nullable<Text>)]
    a: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    b: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    c: Option<String>,
    #[diesel(sql_type = Nullable<Timestamp>)]
    t: Option<NaiveDateTime>,
}

/// Everything the access rule needs, in one statement (one round trip):
/// - `p`: the patient exists; `a` = the latest consent decision, `t` = the
///   latest expiry of the caller's live emergency grants;
/// - `m`: an active team member; `a` = user, `b` = organisation, `c` = team role;
/// - `x`: a centre (`a`) with an open consultation about the patient whose
///   basis has not lapsed (`basis_until`, consultations.basis_max_days after
///   submission); once per consultation: no DISTINCT, which would cost a
///   temporary b-tree.
///
/// `{p}` is bound to the patient, `{c}` to the caller, `{n}` to now. The
/// statuses are those of [`is_open`](crate::domain::workflow::ConsultationStatus::is_open) (unit-tested).
const RELATIONS_SQL: &str = "\
    SELECT 'p' AS kind, \
        (SELECT s.status FROM consents s WHERE s.patient_id = {p} \
          ORDER BY s.recorded_at DESC, s.id DESC LIMIT 1) AS a, \
        CAST(NULL AS TEXT) AS b, CAST(NULL AS TEXT) AS c, \
        (SELECT MAX(g.expires_at) FROM emergency_grants g \
          WHERE g.patient_id = {p} AND g.user_id = {c} AND g.expires_at > {n}) AS t \
    FROM patients WHERE id = {p} \
    UNION ALL \
    SELECT 'm', m.user_id, u.organization_id, m.team_role, CAST(NULL AS TIMESTAMP) \
    FROM care_team_members m JOIN users u ON u.id = m.user_id \
    WHERE m.patient_id = {p} AND m.until IS NULL \
    UNION ALL \
    SELECT 'x', k.centre_id, CAST(NULL AS TEXT), CAST(NULL AS TEXT), \
        CAST(NULL AS TIMESTAMP) \
    FROM consultations k WHERE k.patient_id = {p} \
      AND k.status IN ('submitted', 'accepted', 'answered') AND k.basis_until > {n}";

crate::statement_key!(
    /// [`RELATIONS_SQL`]'s key in diesel's statement cache: prepared once per
    /// connection, found without rendering its text.
    RelationsKey
);

/// Loads what the access rule needs about one patient, for one caller, in
/// one statement. `None` when the patient does not exist.
pub fn load_relations(
    conn: &mut DbConnection,
    patient_id: &str,
    caller_id: &str,
    now: NaiveDateTime,
) -> QueryResult<Option<Relations>> {
    let rows: Vec<RelationRow> = crate::per_backend!(conn, |c| Fixed::new(RELATIONS_SQL)
        .keyed::<RelationsKey>()
        .bind_as::<Text, _>("p", patient_id)
        .bind_as::<Text, _>("c", caller_id)
        .bind_as::<Timestamp, _>("n", Stamp(now))
        .load(c))?;
    let mut relations: Option<Relations> = None;
    let mut members = Vec::new();
    let mut consultation_centres = Vec::new();
    for row in rows {
        match (row.kind.as_str(), row.a) {
            ("p", consent) => {
                relations = Some(Relations {
                    members: Vec::new(),
                    consent: consent.as_deref().and_then(ConsentStatus::parse),
                    consultation_centres: Vec::new(),
                    emergency_until: row.t.map(|t| t.and_utc()),
                });
            }
            ("m", Some(user_id)) => members.push(Member {
                user_id,
                organization_id: row.b,
                team_role: row
                    .c
                    .as_deref()
                    .and_then(TeamRole::parse)
                    .unwrap_or(TeamRole::Member),
            }),
            ("x", Some(centre)) => consultation_centres.push(centre),
            _ => {}
        }
    }
    Ok(relations.map(|r| Relations {
        members,
        consultation_centres,
        ..r
    }))
}

/// The caller's basis on a patient, or `None` (also when it does not exist).
pub fn resolve(
    conn: &mut DbConnection,
    caller: &AuthUser,
    patient_id: &str,
    now: chrono::DateTime<Utc>,
) -> QueryResult<Option<(Basis, Relations)>> {
    let Some(relations) = load_relations(conn, patient_id, &caller.id, now.naive_utc())? else {
        return Ok(None);
    };
    let who = Caller {
        user_id: &caller.id,
        role: caller.role,
        organization_id: caller.organization_id.as_deref(),
    };
    Ok(access::basis(who, &relations, now).map(|b| (b, relations)))
}

/// The basis of the user `user_id` (not the caller: someone a record names
/// or a message reaches) on a patient now, with the user; `None` when they
/// have none, are inactive or unknown.
pub fn basis_of(
    conn: &mut DbConnection,
    patient_id: &str,
    user_id: &str,
    now: chrono::DateTime<Utc>,
) -> QueryResult<Option<(User, Basis)>> {
    let Some(user) = User::find(conn, user_id)?.filter(|u| u.active) else {
        return Ok(None);
    };
    let role = user.role;
    let Some(relations) = load_relations(conn, patient_id, user_id, now.naive_utc())? else {
        return Ok(None);
    };
    let who = Caller {
        user_id,
        role,
        organization_id: user.organization_id.as_deref(),
    };
    Ok(access::basis(who, &relations, now).map(|basis| (user, basis)))
}

/// The user `user_id` if they may be named on the patient's records (a plan
/// line's prescriber, a handover's addressee): an active prescriber with a
/// team basis on the patient now (§5: every person a record names has a basis).
pub fn named_prescriber(
    conn: &mut DbConnection,
    patient_id: &str,
    user_id: &str,
    now: chrono::DateTime<Utc>,
) -> QueryResult<Option<User>> {
    Ok(basis_of(conn, patient_id, user_id, now)?
        .filter(|(user, basis)| *basis == Basis::Team && user.role.is_prescriber())
        .map(|(user, _)| user))
}

/// [`named_prescriber`] with the patient's relations already loaded (for
/// the request's caller, in the same request): no second look-up of them.
pub fn named_prescriber_among(
    conn: &mut DbConnection,
    relations: &Relations,
    user_id: &str,
    now: chrono::DateTime<Utc>,
) -> QueryResult<Option<User>> {
    let Some(user) = User::find(conn, user_id)?.filter(|u| u.active) else {
        return Ok(None);
    };
    let who = Caller {
        user_id,
        role: user.role,
        organization_id: user.organization_id.as_deref(),
    };
    // The emergency grant in `relations` is the caller's, not this user's;
    // a team basis does not depend on it, so it is left out.
    let theirs = Relations {
        emergency_until: None,
        ..relations.clone()
    };
    let team = access::basis(who, &theirs, now) == Some(Basis::Team);
    Ok((team && user.role.is_prescriber()).then_some(user))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::workflow::ConsultationStatus;

    #[test]
    fn relations_query_names_exactly_the_open_statuses() {
        for status in ConsultationStatus::ALL {
            let quoted = format!("'{}'", status.as_str());
            assert_eq!(
                RELATIONS_SQL.contains(&quoted),
                status.is_open(),
                "{quoted} in RELATIONS_SQL"
            );
        }
    }

    #[test]
    fn relations_query_has_only_known_parameters() {
        let markers: Vec<&str> = RELATIONS_SQL
            .match_indices('{')
            .map(|(at, _)| &RELATIONS_SQL[at..at + 3])
            .collect();
        assert!(markers.iter().all(|m| ["{p}", "{c}", "{n}"].contains(m)));
        assert_eq!(markers.iter().filter(|m| **m == "{n}").count(), 2);
    }
}
