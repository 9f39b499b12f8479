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
use chrono::NaiveDateTime;
use diesel::QueryResult;

use super::extract::path_id;
use crate::audit::{self, AuditRecord, Outcome};
use crate::auth::AuthUser;
use crate::db::{DbConnection, Tx};
use crate::domain::access::{self, Basis, Caller, Permission, Relations};
use crate::error::ApiError;
use crate::state::{AppState, RequestId};
use crate::store::access::load_relations;

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
    PharmacyAct => Pharmacy,
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
        let pattern = super::route_pattern(req).unwrap_or_else(|| req.path().to_owned().into());
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

// By hand: a derive would ask `N: Clone` of the marker.
impl<N: Need> Clone for PatientAccess<N> {
    fn clone(&self) -> Self {
        Self {
            patient_id: self.patient_id.clone(),
            caller: self.caller.clone(),
            basis: self.basis,
            relations: self.relations.clone(),
            info: self.info.clone(),
            _need: PhantomData,
        }
    }
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
        conn: &mut Tx<'_>,
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
        // One statement: its own snapshot, no read transaction needed.
        state
            .db
            .read_autocommit(move |conn| {
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

/// What every id-scoped extractor starts from: the signed-in caller, the
/// `{id}` of the path (400 when it is no UUID), the request as the audit
/// names it, and whether it is a read (audited before the handler runs).
pub struct Scoped {
    pub state: web::Data<AppState>,
    pub caller: AuthUser,
    pub id: String,
    pub info: RequestInfo,
    pub is_read: bool,
}

impl Scoped {
    /// Reads the parts off the request; resolves them when awaited.
    pub fn of(
        req: &HttpRequest,
        payload: &mut Payload,
    ) -> impl Future<Output = Result<Self, ApiError>> + 'static {
        let user = AuthUser::from_request(req, payload);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let raw_id = req.match_info().get("id").map(str::to_owned);
        let info = RequestInfo::of(req);
        let is_read = req.method() == Method::GET;
        async move {
            let state = state.ok_or_else(|| ApiError::internal(anyhow::anyhow!("no app state")))?;
            let caller = user.await?;
            let id = path_id(raw_id.as_deref().unwrap_or_default(), "id")?;
            Ok(Self {
                state,
                caller,
                id,
                info,
                is_read,
            })
        }
    }
}

impl<O: Linked, N: Need + 'static> FromRequest for LinkedAccess<O, N> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let scoped = Scoped::of(req, payload);
        Box::pin(async move {
            let Scoped {
                state,
                caller,
                id,
                info,
                is_read,
            } = scoped.await?;
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
        let scoped = Scoped::of(req, payload);
        Box::pin(async move {
            let Scoped {
                state,
                caller,
                id: patient_id,
                info,
                is_read,
            } = scoped.await?;
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
