//! `Idempotency-Key` on writes: per user, kept 24 h. The same key with the
//! same request gets the first answer again (status and body) and changes
//! nothing; with another request it is refused (422 naming the header).

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};

use crate::domain::messaging::parse_idempotency_key;
use crate::error::ApiError;

/// The header's name, as named in errors.
pub use crate::store::idempotency::HEADER;

/// The request's `Idempotency-Key`, if it has one; a malformed one is 400.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub Option<String>);

impl FromRequest for IdempotencyKey {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let mut values = req.headers().get_all(HEADER);
        let result = match (values.next(), values.next()) {
            (None, _) => Ok(Self(None)),
            (Some(_), Some(_)) => Err(ApiError::malformed(HEADER, "give it once")),
            (Some(value), None) => parse_idempotency_key(value.as_bytes())
                .map(|key| Self(Some(key)))
                .map_err(|message| ApiError::malformed(HEADER, message)),
        };
        std::future::ready(result)
    }
}
