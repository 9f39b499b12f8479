//! The one door to patient data: [`PatientAccess`] resolves the caller's
//! basis on the patient named in the path, checks the permission the handler
//! declares in its signature, audits the attempt, and answers 404 when there
//! is no basis (existence is not revealed) or 403 when the basis is too weak.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::Method;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use chrono::{NaiveDateTime, Utc};
use diesel::backend::Backend;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Nullable, Text, Timestamp};

use super::extract::path_id;
use crate::audit::{self, AuditRecord, Outcome};
use crate::auth::AuthUser;
use crate::db::DbConnection;
use crate::db::models::User;
use crate::domain::access::{
    self, Basis, Caller, ConsentStatus, Member, Permission, Relations, TeamRole,
};
use crate::domain::role::Role;
use crate::error::ApiError;
use crate::startup::{AppState, RequestId};

/// A permission a handler needs, as a type.
pub trait Need {
    const PERMISSION: Permission;
}

macro_rules! needs {
    ($($name:ident => $permission:ident),+ $(,)?) => {$(
        #[doc = concat!("Needs `Permission::", stringify!($permission), "`.")]
        #[derive(Debug)]
        pub struct $name;
        impl Need for $name {
            const PERMISSION: Permission = Permission::$permission;
        }
    )+};
}

needs! {
    Read => Read,
    RecordObservation => RecordObservation,
    WritePlan => WritePlan,
    ManageTeam => ManageTeam,
    ReadAudit => ReadAudit,
}

/// One row of [`RelationsQuery`]: `kind` says which relation it carries.
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

/// [`RELATIONS_SQL`] with its parameters: a query with a static id, so both
/// backends prepare it once per connection (`diesel::sql_query` never caches).
struct RelationsQuery<'a> {
    patient_id: &'a str,
    caller_id: &'a str,
    now: NaiveDateTime,
}

impl QueryId for RelationsQuery<'_> {
    type QueryId = RelationsQuery<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for RelationsQuery<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl<Conn> RunQueryDsl<Conn> for RelationsQuery<'_> {}

impl<DB> QueryFragment<DB> for RelationsQuery<'_>
where
    DB: Backend + HasSqlType<Text> + HasSqlType<Timestamp>,
    str: ToSql<Text, DB>,
    NaiveDateTime: ToSql<Timestamp, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let mut rest = RELATIONS_SQL;
        while let Some(at) = rest.find('{') {
            out.push_sql(&rest[..at]);
            match &rest[at..at + 3] {
                "{p}" => out.push_bind_param::<Text, str>(self.patient_id)?,
                "{c}" => out.push_bind_param::<Text, str>(self.caller_id)?,
                _ => out.push_bind_param::<Timestamp, NaiveDateTime>(&self.now)?,
            }
            rest = &rest[at + 3..];
        }
        out.push_sql(rest);
        Ok(())
    }
}

/// Loads what the access rule needs about one patient, for one caller, in
/// one statement. `None` when the patient does not exist.
pub fn load_relations(
    conn: &mut DbConnection,
    patient_id: &str,
    caller_id: &str,
    now: NaiveDateTime,
) -> QueryResult<Option<Relations>> {
    let query = RelationsQuery {
        patient_id,
        caller_id,
        now,
    };
    let rows: Vec<RelationRow> = match conn {
        DbConnection::Postgres(pg) => query.load(pg)?,
        DbConnection::Sqlite(lite) => query.load(lite)?,
    };
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
    let Some(role) = Role::parse(&user.role) else {
        return Ok(None);
    };
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
        .filter(|(user, basis)| {
            *basis == Basis::Team && Role::parse(&user.role).is_some_and(Role::is_prescriber)
        })
        .map(|(user, _)| user))
}

/// What the audit trail needs to know of the request being served.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// `METHOD /route/{pattern}` without the API prefix.
    pub action: String,
    pub request_id: Option<String>,
}

impl RequestInfo {
    /// Reads the action and request id off a request.
    pub fn of(req: &HttpRequest) -> Self {
        let pattern = req.match_pattern().unwrap_or_else(|| req.path().to_owned());
        Self {
            action: format!(
                "{} {}",
                req.method(),
                pattern.trim_start_matches(super::BASE)
            ),
            request_id: req.extensions().get::<RequestId>().map(|r| r.0.clone()),
        }
    }

    /// An audit record of this request by `caller`.
    pub fn record(
        &self,
        caller: &AuthUser,
        resource_type: &str,
        resource_id: Option<&str>,
        patient_id: Option<&str>,
        basis: Option<Basis>,
        outcome: Outcome,
    ) -> AuditRecord {
        AuditRecord {
            actor_id: Some(caller.id.clone()),
            actor_role: Some(caller.role.as_str().to_owned()),
            action: self.action.clone(),
            resource_type: resource_type.to_owned(),
            resource_id: resource_id.map(str::to_owned),
            patient_id: patient_id.map(str::to_owned),
            basis,
            outcome,
            request_id: self.request_id.clone(),
        }
    }
}

impl FromRequest for RequestInfo {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Ok(Self::of(req)))
    }
}

/// A caller with a basis on the patient `{id}` that permits `N`.
/// Reads are audited (group commit) before the handler runs; writes append
/// their audit row in their own transaction through [`PatientAccess::audit`].
pub struct PatientAccess<N: Need> {
    pub patient_id: String,
    pub caller: AuthUser,
    pub basis: Basis,
    pub relations: Relations,
    pub info: RequestInfo,
    _need: PhantomData<N>,
}

impl<N: Need> PatientAccess<N> {
    /// The audit record of this (allowed) request, to append in the write's transaction.
    pub fn audit(&self, resource_type: &str, resource_id: Option<&str>) -> AuditRecord {
        self.info.record(
            &self.caller,
            resource_type,
            resource_id,
            Some(&self.patient_id),
            Some(self.basis),
            Outcome::Allowed,
        )
    }

    /// Audits a refusal decided in the handler (a rule finer than the
    /// permission) and returns the 403 to answer with.
    pub async fn forbid(&self, state: &AppState, message: &str) -> ApiError {
        let record = self.info.record(
            &self.caller,
            "patient",
            Some(&self.patient_id),
            Some(&self.patient_id),
            Some(self.basis),
            Outcome::Denied,
        );
        match state.audit.record(record).await {
            Ok(()) => ApiError::Forbidden(message.to_owned()),
            Err(err) => err,
        }
    }

    /// Appends this request's audit row in the caller's transaction.
    pub fn append_audit(
        &self,
        conn: &mut DbConnection,
        resource_type: &str,
        resource_id: Option<&str>,
        now: NaiveDateTime,
    ) -> Result<(), ApiError> {
        audit::append(conn, &[self.audit(resource_type, resource_id)], now)
    }
}

/// Checks `permission` on `patient_id` for `caller`, auditing the attempt
/// (a read's allowed row too, when `audit_allowed`) as a request on the patient.
pub async fn authorize(
    state: &AppState,
    caller: &AuthUser,
    patient_id: &str,
    permission: Permission,
    info: &RequestInfo,
    audit_allowed: bool,
) -> Result<(Basis, Relations), ApiError> {
    let resource = Resource {
        kind: "patient",
        id: patient_id,
    };
    authorize_as(
        state,
        caller,
        patient_id,
        permission,
        info,
        audit_allowed,
        resource,
    )
    .await
}

/// What an audit row is about: a resource type and its id.
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a> {
    pub kind: &'a str,
    pub id: &'a str,
}

/// [`authorize`], audited as a request on `resource` (which belongs to the patient).
async fn authorize_as(
    state: &AppState,
    caller: &AuthUser,
    patient_id: &str,
    permission: Permission,
    info: &RequestInfo,
    audit_allowed: bool,
    resource: Resource<'_>,
) -> Result<(Basis, Relations), ApiError> {
    let now = state.clock.now();
    let relations = {
        let (caller_id, patient_id) = (caller.id.clone(), patient_id.to_owned());
        state
            .db
            .read(move |conn| {
                Ok(load_relations(
                    conn,
                    &patient_id,
                    &caller_id,
                    now.naive_utc(),
                )?)
            })
            .await?
    };
    let who = Caller {
        user_id: &caller.id,
        role: caller.role,
        organization_id: caller.organization_id.as_deref(),
    };
    let basis = relations.as_ref().and_then(|r| access::basis(who, r, now));
    // A denial names the patient when it exists, so its trail shows who tried.
    let known = relations.is_some().then_some(patient_id);
    let record = |basis: Option<Basis>, outcome: Outcome| {
        info.record(
            caller,
            resource.kind,
            Some(resource.id),
            known,
            basis,
            outcome,
        )
    };
    match (basis, relations) {
        (None, _) | (_, None) => {
            state.audit.record(record(None, Outcome::Denied)).await?;
            Err(ApiError::NotFound(format!("no such {}", resource.kind)))
        }
        (Some(basis), Some(_)) if !access::allows(basis, caller.role, permission) => {
            state
                .audit
                .record(record(Some(basis), Outcome::Denied))
                .await?;
            Err(ApiError::Forbidden(format!(
                "your access to this patient ({basis}) does not allow this"
            )))
        }
        (Some(basis), Some(relations)) => {
            if audit_allowed {
                state
                    .audit
                    .record(record(Some(basis), Outcome::Allowed))
                    .await?;
            }
            Ok((basis, relations))
        }
    }
}

/// Something that belongs to a patient, or to none (a handover, a
/// consultation, a thread), and has parties: its sender, addressee,
/// requester, centre. Reaching it takes both: being a party, and a basis on
/// its patient now (§5, the one door).
pub trait Linked: Sized + Send + 'static {
    /// Its resource type in the audit trail and in a 404's detail.
    const RESOURCE: &'static str;
    /// The object with this id, if any.
    fn load(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Self>>;
    fn id(&self) -> &str;
    /// The patient it belongs to, if any.
    fn patient_id(&self) -> Option<&str>;
    /// Whether `caller` is one of its parties (an extra condition, never a
    /// substitute for the basis).
    fn is_party(&self, conn: &mut DbConnection, caller: &AuthUser) -> QueryResult<bool>;
}

/// The gate of a patient-linked object: 404 (audited) unless the caller is a
/// party and, when it belongs to a patient, has a basis on the patient now
/// that permits `permission` (403 when the basis is too weak). A read's
/// allowed row is audited when `audit_allowed`, with the basis resolved.
#[allow(clippy::too_many_arguments)]
pub async fn authorize_linked(
    state: &AppState,
    caller: &AuthUser,
    info: &RequestInfo,
    resource: Resource<'_>,
    patient_id: Option<&str>,
    is_party: bool,
    permission: Permission,
    audit_allowed: bool,
) -> Result<(Option<Basis>, Option<Relations>), ApiError> {
    let record = |outcome: Outcome| {
        info.record(
            caller,
            resource.kind,
            Some(resource.id),
            patient_id,
            None,
            outcome,
        )
    };
    if !is_party {
        state.audit.record(record(Outcome::Denied)).await?;
        return Err(ApiError::NotFound(format!("no such {}", resource.kind)));
    }
    let Some(patient_id) = patient_id else {
        if audit_allowed {
            state.audit.record(record(Outcome::Allowed)).await?;
        }
        return Ok((None, None));
    };
    let (basis, relations) = authorize_as(
        state,
        caller,
        patient_id,
        permission,
        info,
        audit_allowed,
        resource,
    )
    .await?;
    Ok((Some(basis), Some(relations)))
}

/// A caller who may reach the patient-linked object `{id}` with `N`: a party
/// to it with a basis on its patient now (see [`authorize_linked`]). Reads
/// are audited before the handler runs; writes append [`LinkedAccess::audit`]
/// in their transaction.
pub struct LinkedAccess<O: Linked, N: Need> {
    pub object: O,
    pub caller: AuthUser,
    /// The caller's basis on the object's patient (`None`: it has no patient).
    pub basis: Option<Basis>,
    pub relations: Option<Relations>,
    pub info: RequestInfo,
    _need: PhantomData<N>,
}

impl<O: Linked, N: Need> LinkedAccess<O, N> {
    /// The audit record of this (allowed) request on the object.
    pub fn audit(&self) -> AuditRecord {
        self.info.record(
            &self.caller,
            O::RESOURCE,
            Some(self.object.id()),
            self.object.patient_id(),
            self.basis,
            Outcome::Allowed,
        )
    }

    /// Audits a refusal decided in the handler (a rule finer than the
    /// permission, such as "only the addressee") and returns the 403.
    pub async fn forbid(&self, state: &AppState, message: &str) -> ApiError {
        let record = AuditRecord {
            outcome: Outcome::Denied,
            ..self.audit()
        };
        match state.audit.record(record).await {
            Ok(()) => ApiError::Forbidden(message.to_owned()),
            Err(err) => err,
        }
    }
}

impl<O: Linked, N: Need + 'static> FromRequest for LinkedAccess<O, N> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let user = AuthUser::from_request(req, payload);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let raw_id = req.match_info().get("id").map(str::to_owned);
        let info = RequestInfo::of(req);
        let is_read = req.method() == Method::GET;
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal(anyhow::anyhow!("no app state")))?;
            let caller = user.await?;
            let id = path_id(raw_id.as_deref().unwrap_or_default(), "id")?;
            let found = {
                let (id, who) = (id.clone(), caller.clone());
                state
                    .db
                    .read(move |conn| {
                        let Some(object) = O::load(conn, &id)? else {
                            return Ok(None);
                        };
                        let party = object.is_party(conn, &who)?;
                        Ok(Some((object, party)))
                    })
                    .await?
            };
            let Some((object, party)) = found else {
                let denied =
                    info.record(&caller, O::RESOURCE, Some(&id), None, None, Outcome::Denied);
                state.audit.record(denied).await?;
                return Err(ApiError::NotFound(format!("no such {}", O::RESOURCE)));
            };
            let resource = Resource {
                kind: O::RESOURCE,
                id: object.id(),
            };
            let (basis, relations) = authorize_linked(
                &state,
                &caller,
                &info,
                resource,
                object.patient_id(),
                party,
                N::PERMISSION,
                is_read,
            )
            .await?;
            Ok(Self {
                object,
                caller,
                basis,
                relations,
                info,
                _need: PhantomData,
            })
        })
    }
}

impl<N: Need + 'static> FromRequest for PatientAccess<N> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let user = AuthUser::from_request(req, payload);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let raw_id = req.match_info().get("id").map(str::to_owned);
        let info = RequestInfo::of(req);
        let is_read = req.method() == Method::GET;
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal(anyhow::anyhow!("no app state")))?;
            let caller = user.await?;
            let patient_id = path_id(raw_id.as_deref().unwrap_or_default(), "id")?;
            let (basis, relations) =
                authorize(&state, &caller, &patient_id, N::PERMISSION, &info, is_read).await?;
            Ok(Self {
                patient_id,
                caller,
                basis,
                relations,
                info,
                _need: PhantomData,
            })
        })
    }
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
