//! Access tokens (HS256 JWT) and opaque random tokens.

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
    ttl_s: u64,
}

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
            ttl_s,
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
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| ApiError::Unauthorized("invalid or expired access token"))
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
