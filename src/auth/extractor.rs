//! The authenticated caller: who a valid bearer token's live session names
//! (extracted from the request in `api::authn`).

use crate::domain::role::Role;
use crate::error::ApiError;

/// A signed-in, active user whose token has not been revoked.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: String,
    pub role: Role,
    pub organization_id: Option<String>,
}

impl AuthUser {
    /// 403 unless the caller is an administrator.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden("administrators only".into()))
        }
    }

    /// 403 unless the caller is a clinician.
    pub fn require_clinician(&self) -> Result<(), ApiError> {
        if self.role.is_clinician() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("clinicians only".into()))
        }
    }
}
