//! Access tokens (HS256 JWT) and opaque random tokens.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::models::User;
use crate::error::ApiError;

/// The `iss` of every access token.
pub const ISSUER: &str = "relais";
/// The `aud` of every access token.
pub const AUDIENCE: &str = "relais-api";

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    pub role: String,
    /// The user's organisation id.
    pub org: Option<String>,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    /// The user's token version at issue: bumped to reject older tokens.
    pub ver: i32,
    /// The session (sign-in) the token belongs to: revoking it ends the
    /// token. Absent in tokens made before sessions existed, which then fail
    /// (their client refreshes).
    #[serde(default)]
    pub sid: String,
}

/// Signs and checks access tokens with one secret and one algorithm.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    leeway_s: u64,
    ttl_s: u64,
    /// Tokens whose signature and claims were checked, with their claims:
    /// a client sends the same token with every request of its lifetime,
    /// and checking it again (HMAC, base64, two JSON parses: ~68 k
    /// instructions, `bench/callgrind.sh`) is a tenth of a read's work.
    /// Only what [`JwtKeys::verify`] accepted goes in, keyed by the whole
    /// token (a changed byte is another key, checked in full), and its
    /// expiry is checked again on every use. Revocation is not decided
    /// here: the caller's session is checked after (`api::authn`).
    verified: quick_cache::sync::Cache<Box<str>, Arc<Claims>>,
}

/// How many checked tokens [`JwtKeys`] keeps (one per client that is
/// active within a token's lifetime; least recently used first out).
const VERIFIED_TOKENS: usize = 4096;
/// Longer tokens are checked each time, never kept: ours are ~400 bytes
/// (ids and a role), so the cache holds at most ~6 MiB whatever is sent.
const MAX_KEPT_TOKEN_BYTES: usize = 1024;

impl JwtKeys {
    /// Keys from the shared secret.
    pub fn new(secret: &[u8], ttl_s: u64, leeway_s: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = leeway_s;
        validation.validate_exp = true;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            leeway_s,
            ttl_s,
            verified: quick_cache::sync::Cache::new(VERIFIED_TOKENS),
        }
    }

    /// How long an access token lives, in seconds.
    pub fn ttl_s(&self) -> u64 {
        self.ttl_s
    }

    /// A signed access token for `user` in session `sid`.
    pub fn issue(&self, user: &User, sid: &str) -> Result<String, ApiError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: user.id.clone(),
            role: user.role.as_str().to_owned(),
            org: user.organization_id.clone(),
            iat: now,
            exp: now + self.ttl_s,
            jti: uuid::Uuid::now_v7().to_string(),
            ver: user.token_version,
            sid: sid.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)
    }

    /// The claims of a valid token; any defect is a 401.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        self.verify_at(token, jsonwebtoken::get_current_timestamp())
    }

    /// [`JwtKeys::verify`] at `now` (seconds since the epoch) for a token
    /// already checked; a new one is checked at the system's time.
    fn verify_at(&self, token: &str, now: u64) -> Result<Claims, ApiError> {
        let refused = || ApiError::Unauthorized("invalid or expired access token");
        if let Some(claims) = self.verified.get(token) {
            // As `jsonwebtoken` decides it: expired once `exp` is more
            // than the leeway in the past.
            return if claims.exp >= now.saturating_sub(self.leeway_s) {
                Ok(Claims::clone(&claims))
            } else {
                self.verified.remove(token);
                Err(refused())
            };
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| refused())?;
        if token.len() <= MAX_KEPT_TOKEN_BYTES {
            self.verified.insert(token.into(), Arc::new(claims.clone()));
        }
        Ok(claims)
    }
}

/// 256 random bits, URL-safe base64.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of an opaque token: its SHA-256, hex.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::role::Role;

    fn user() -> User {
        let now = chrono::Utc::now().naive_utc();
        User {
            id: "0190c4a2-0000-7000-8000-000000000001".into(),
            email: "gp@relais.test".into(),
            full_name: "A GP".into(),
            role: Role::Gp,
            organization_id: None,
            rpps: None,
            phone: None,
            active: true,
            password_hash: None,
            token_version: 3,
            notification_preference: crate::domain::role::NotificationPreference::Immediate,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn a_kept_token_still_expires_and_a_changed_one_is_checked_in_full() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef", 60, 5);
        let token = keys.issue(&user(), "session-1").unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let first = keys.verify_at(&token, now).unwrap();
        assert_eq!((first.ver, first.sid.as_str()), (3, "session-1"));
        assert!(
            keys.verified.get(token.as_str()).is_some(),
            "kept once checked"
        );
        let again = keys.verify_at(&token, now + 30).unwrap();
        assert_eq!(
            (again.sub, again.jti),
            (first.sub.clone(), first.jti.clone())
        );
        // Within the leeway after `exp`, then past it: refused, and dropped.
        assert!(keys.verify_at(&token, first.exp + 5).is_ok());
        assert!(keys.verify_at(&token, first.exp + 6).is_err());
        assert!(keys.verified.get(token.as_str()).is_none());

        // One byte of the signature changed: not the kept key, so checked, and refused.
        let fresh = keys.issue(&user(), "session-2").unwrap();
        keys.verify(&fresh).unwrap();
        let mut forged = fresh.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(keys.verify(&forged).is_err());
        // Signed with another secret: refused although its claims are the same.
        let other = JwtKeys::new(b"another-secret-another-secret-32", 60, 5);
        assert!(
            keys.verify(&other.issue(&user(), "session-1").unwrap())
                .is_err()
        );
    }

    #[test]
    fn an_overlong_token_is_checked_but_not_kept() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef", 60, 5);
        let mut user = user();
        user.organization_id = Some("o".repeat(MAX_KEPT_TOKEN_BYTES));
        let token = keys.issue(&user, "session-1").unwrap();
        assert!(token.len() > MAX_KEPT_TOKEN_BYTES);
        keys.verify(&token).unwrap();
        assert!(keys.verified.get(token.as_str()).is_none());
    }
}
