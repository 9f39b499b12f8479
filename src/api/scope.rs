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
use diesel::prelude::*;

use super::extract::path_id;
use crate::audit::{self, AuditRecord, Outcome};
use crate::auth::AuthUser;
use crate::db::DbConnection;
use crate::db::schema::{
    care_team_members, consents, consultations, emergency_grants, patients, users,
};
use crate::domain::access::{
    self, Basis, Caller, ConsentStatus, Member, Permission, Relations, TeamRole,
};
use crate::domain::workflow::ConsultationStatus;
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

/// Loads what the access rule needs about one patient, for one caller.
/// `None` when the patient does not exist.
pub fn load_relations(
    conn: &mut DbConnection,
    patient_id: &str,
    caller_id: &str,
    now: NaiveDateTime,
) -> QueryResult<Option<Relations>> {
    let exists: Option<String> = patients::table
        .find(patient_id)
        .select(patients::id)
        .first(conn)
        .optional()?;
    if exists.is_none() {
        return Ok(None);
    }
    let members = care_team_members::table
        .inner_join(users::table)
        .filter(care_team_members::patient_id.eq(patient_id))
        .filter(care_team_members::until.is_null())
        .select((
            care_team_members::user_id,
            users::organization_id,
            care_team_members::team_role,
        ))
        .load::<(String, Option<String>, String)>(conn)?
        .into_iter()
        .map(|(user_id, organization_id, role)| Member {
            user_id,
            organization_id,
            team_role: TeamRole::parse(&role).unwrap_or(TeamRole::Member),
        })
        .collect();
    let consent = consents::table
        .filter(consents::patient_id.eq(patient_id))
        .order((consents::recorded_at.desc(), consents::id.desc()))
        .select(consents::status)
        .first::<String>(conn)
        .optional()?
        .and_then(|s| ConsentStatus::parse(&s));
    let emergency_until = emergency_grants::table
        .filter(emergency_grants::patient_id.eq(patient_id))
        .filter(emergency_grants::user_id.eq(caller_id))
        .filter(emergency_grants::expires_at.gt(now))
        .select(diesel::dsl::max(emergency_grants::expires_at))
        .first::<Option<NaiveDateTime>>(conn)?
        .map(|t| t.and_utc());
    let open: Vec<&str> = ConsultationStatus::ALL
        .iter()
        .filter(|s| s.is_open())
        .map(|s| s.as_str())
        .collect();
    let consultation_centres = consultations::table
        .filter(consultations::patient_id.eq(patient_id))
        .filter(consultations::status.eq_any(open))
        .select(consultations::centre_id)
        .distinct()
        .load::<String>(conn)?;
    Ok(Some(Relations {
        members,
        consent,
        consultation_centres,
        emergency_until,
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
