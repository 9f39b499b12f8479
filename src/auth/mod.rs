//! Authentication: passwords, access tokens, refresh-token rotation, throttling.

pub mod cache;
pub mod extractor;
pub mod mfa;
pub mod oidc;
pub mod password;
pub mod revocations;
pub mod session;
pub mod throttle;
pub mod tokens;

pub use extractor::AuthUser;
