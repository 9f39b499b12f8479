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
use crate::domain::access::{
    self, Basis, Caller, ConsentStatus, Member, Permission, Relations, TeamRole,
};
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
/// - `x`: a centre (`a`) with an open consultation about the patient (once
///   per consultation: no DISTINCT, which would cost a temporary b-tree).
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
      AND k.status IN ('submitted', 'accepted', 'answered')";

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

/// What the audit trail needs to know of the request being served.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// `METHOD /route/{pattern}` without the API prefix.
    pub action: String,
    pub request_id: Option<String>,
    /// The client's address, after trusted proxies (`net::client_addr`).
    pub client_ip: Option<String>,
}

impl RequestInfo {
    /// Reads the action, request id and client address off a request.
    pub fn of(req: &HttpRequest) -> Self {
        let pattern = req.match_pattern().unwrap_or_else(|| req.path().to_owned());
        let client_ip = req
            .app_data::<web::Data<AppState>>()
            .and_then(|state| state.client_addr(req))
            .map(|ip| ip.to_string());
        Self {
            client_ip,
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
            client_ip: self.client_ip.clone(),
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
/// (a read's allowed row too, when `audit_allowed`).
pub async fn authorize(
    state: &AppState,
    caller: &AuthUser,
    patient_id: &str,
    permission: Permission,
    info: &RequestInfo,
    audit_allowed: bool,
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
    let deny = |basis: Option<Basis>| {
        info.record(
            caller,
            "patient",
            Some(patient_id),
            known,
            basis,
            Outcome::Denied,
        )
    };
    match (basis, relations) {
        (None, _) | (_, None) => {
            state.audit.record(deny(None)).await?;
            Err(ApiError::NotFound("no such patient".into()))
        }
        (Some(basis), Some(_)) if !access::allows(basis, caller.role, permission) => {
            state.audit.record(deny(Some(basis))).await?;
            Err(ApiError::Forbidden(format!(
                "your access to this patient ({basis}) does not allow this"
            )))
        }
        (Some(basis), Some(relations)) => {
            if audit_allowed {
                state
                    .audit
                    .record(info.record(
                        caller,
                        "patient",
                        Some(patient_id),
                        Some(patient_id),
                        Some(basis),
                        Outcome::Allowed,
                    ))
                    .await?;
            }
            Ok((basis, relations))
        }
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
        assert_eq!(markers.iter().filter(|m| **m == "{n}").count(), 1);
    }
}
