//! The TOTP second factor (RFC 6238: HMAC-SHA-1, 6 digits, 30 s steps,
//! one step of skew either side) and its single-use recovery codes.
//!
//! A code is accepted once: the factor keeps the time step of the last code
//! it accepted and takes only later ones (a conditional update, so two
//! racing requests cannot both pass). Recovery codes carry 80 random bits
//! and are stored as their SHA-256: with that much entropy a slow hash buys
//! nothing, and checking one costs no hashing slot.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use rand::RngCore;
use sha2::{Digest, Sha256};
use totp_rs::{Builder, Secret, Totp};

use crate::db::DbConnection;
use crate::db::models::new_id;
use crate::db::schema::{recovery_codes, totp_factors};
use crate::error::ApiError;

/// The issuer shown by authenticator apps.
pub const ISSUER: &str = "Relais";
/// Recovery codes handed out at each confirmation.
pub const RECOVERY_CODES: usize = 10;
/// The longest `otp` or `code` a request may carry (a recovery code with
/// separators is 19 characters).
pub const MAX_CODE_LEN: usize = 64;
/// The length of a recovery code without separators (base32, 5 bits each).
const RECOVERY_LEN: usize = 16;

/// What an `otp` field holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Otp {
    /// Six digits from the authenticator.
    Totp(String),
    /// A recovery code, normalised (lowercase, no separators).
    Recovery(String),
}

impl Otp {
    /// Reads a code as typed (spaces and dashes ignored); `None` when it
    /// can be neither.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() > MAX_CODE_LEN {
            return None;
        }
        let compact: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect::<String>()
            .to_ascii_lowercase();
        if compact.len() == 6 && compact.bytes().all(|b| b.is_ascii_digit()) {
            Some(Self::Totp(compact))
        } else if compact.len() == RECOVERY_LEN
            && compact
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        {
            Some(Self::Recovery(compact))
        } else {
            None
        }
    }
}

/// 160 random bits (RFC 4226's recommended secret length), base32.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    Secret::from(bytes.to_vec()).to_base32()
}

fn totp(secret_b32: &str, account: &str) -> Result<Totp, ApiError> {
    let secret = Secret::try_from_base32(secret_b32)
        .map_err(|_| ApiError::internal(anyhow::anyhow!("stored TOTP secret is not base32")))?;
    // An account name may not hold ':' (the otpauth label's separator).
    let account = account.replace(':', "_");
    Builder::new()
        .with_secret(secret)
        .with_issuer(Some(ISSUER))
        .with_account_name(account)
        .build()
        .map_err(|e| ApiError::internal(anyhow::anyhow!("TOTP parameters: {e}")))
}

/// The `otpauth://` URI an authenticator app reads (as a QR code).
pub fn otpauth_uri(secret_b32: &str, account: &str) -> Result<String, ApiError> {
    totp(secret_b32, account)?
        .to_url()
        .map_err(|e| ApiError::internal(anyhow::anyhow!("otpauth URI: {e}")))
}

/// The time step a code is valid for at `unix_s`, if it is (±1 step).
pub fn step_of(secret_b32: &str, code: &str, unix_s: u64) -> Result<Option<i64>, ApiError> {
    let step = totp(secret_b32, "x")?.check(code, unix_s);
    Ok(step.and_then(|s| i64::try_from(s).ok()))
}

/// The current code for a secret (tests and the demo only need it).
pub fn code_at(secret_b32: &str, unix_s: u64) -> Result<String, ApiError> {
    Ok(totp(secret_b32, "x")?.generate(unix_s).to_string())
}

/// Ten fresh recovery codes, as shown to the user (`abcd-efgh-ijkl-mnop`).
pub fn new_recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; RECOVERY_LEN];
            rand::rng().fill_bytes(&mut bytes);
            let chars: Vec<char> = bytes
                .iter()
                .map(|b| ALPHABET[usize::from(b & 31)] as char)
                .collect();
            chars
                .chunks(4)
                .map(|c| c.iter().collect::<String>())
                .collect::<Vec<_>>()
                .join("-")
        })
        .collect()
}

fn hash_recovery(normalised: &str) -> String {
    hex::encode(Sha256::digest(normalised.as_bytes()))
}

/// A user's TOTP factor as stored.
#[derive(Debug, Clone, Queryable)]
pub struct Factor {
    pub secret: String,
    pub confirmed_at: Option<NaiveDateTime>,
    pub last_step: Option<i64>,
}

/// The user's factor, confirmed or not.
pub fn load(conn: &mut DbConnection, user_id: &str) -> QueryResult<Option<Factor>> {
    totp_factors::table
        .find(user_id)
        .select((
            totp_factors::secret,
            totp_factors::confirmed_at,
            totp_factors::last_step,
        ))
        .first(conn)
        .optional()
}

/// Whether the user has a confirmed factor (password sign-ins need a code).
pub fn enrolled(conn: &mut DbConnection, user_id: &str) -> QueryResult<bool> {
    Ok(load(conn, user_id)?.is_some_and(|f| f.confirmed_at.is_some()))
}

/// Starts (or restarts) an enrolment with a new secret; 409 when a
/// confirmed factor exists (remove it first, with a code).
pub fn begin(
    conn: &mut DbConnection,
    user_id: &str,
    secret_b32: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    if enrolled(conn, user_id)? {
        return Err(ApiError::Conflict {
            detail: "a second factor is already enrolled; remove it first (DELETE /me/mfa/totp)"
                .into(),
            errors: Vec::new(),
        });
    }
    diesel::delete(totp_factors::table.find(user_id)).execute(conn)?;
    diesel::insert_into(totp_factors::table)
        .values((
            totp_factors::user_id.eq(user_id),
            totp_factors::secret.eq(secret_b32),
            totp_factors::created_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// Accepts a TOTP code once: true when it is valid now and later than the
/// last accepted one (which it then becomes).
fn accept_totp(
    conn: &mut DbConnection,
    user_id: &str,
    factor: &Factor,
    code: &str,
    now: NaiveDateTime,
) -> Result<bool, ApiError> {
    let unix = u64::try_from(now.and_utc().timestamp()).unwrap_or(0);
    let Some(step) = step_of(&factor.secret, code, unix)? else {
        return Ok(false);
    };
    let claimed = diesel::update(
        totp_factors::table.find(user_id).filter(
            totp_factors::last_step
                .is_null()
                .or(totp_factors::last_step.lt(step)),
        ),
    )
    .set(totp_factors::last_step.eq(step))
    .execute(conn)?;
    Ok(claimed == 1)
}

/// Spends a recovery code: true when it was one of the user's, unused.
fn spend_recovery(
    conn: &mut DbConnection,
    user_id: &str,
    normalised: &str,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let spent = diesel::update(
        recovery_codes::table
            .filter(recovery_codes::user_id.eq(user_id))
            .filter(recovery_codes::code_hash.eq(hash_recovery(normalised)))
            .filter(recovery_codes::used_at.is_null()),
    )
    .set(recovery_codes::used_at.eq(now))
    .execute(conn)?;
    Ok(spent == 1)
}

/// Checks a second-factor code (a current TOTP code or a recovery code)
/// against the user's confirmed factor, spending it. False when the user
/// has none, or the code is wrong or already used.
pub fn verify(
    conn: &mut DbConnection,
    user_id: &str,
    otp: &str,
    now: NaiveDateTime,
) -> Result<bool, ApiError> {
    let Some(factor) = load(conn, user_id)?.filter(|f| f.confirmed_at.is_some()) else {
        return Ok(false);
    };
    match Otp::parse(otp) {
        Some(Otp::Totp(code)) => accept_totp(conn, user_id, &factor, &code, now),
        Some(Otp::Recovery(code)) => Ok(spend_recovery(conn, user_id, &code, now)?),
        None => Ok(false),
    }
}

/// Confirms an enrolment with a first code: the factor is live and ten new
/// recovery codes replace any older ones (returned, never stored in clear).
/// `None` when the code is wrong; 409 when there is nothing to confirm.
pub fn confirm(
    conn: &mut DbConnection,
    user_id: &str,
    code: &str,
    now: NaiveDateTime,
) -> Result<Option<Vec<String>>, ApiError> {
    let factor = load(conn, user_id)?;
    let Some(factor) = factor.filter(|f| f.confirmed_at.is_none()) else {
        return Err(ApiError::conflict(
            "code",
            "no enrolment to confirm: start one with POST /me/mfa/totp",
        ));
    };
    let Some(Otp::Totp(code)) = Otp::parse(code) else {
        return Ok(None);
    };
    if !accept_totp(conn, user_id, &factor, &code, now)? {
        return Ok(None);
    }
    diesel::update(totp_factors::table.find(user_id))
        .set(totp_factors::confirmed_at.eq(now))
        .execute(conn)?;
    diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user_id)))
        .execute(conn)?;
    let codes = new_recovery_codes();
    for shown in &codes {
        let normalised = shown.replace('-', "");
        diesel::insert_into(recovery_codes::table)
            .values((
                recovery_codes::id.eq(new_id()),
                recovery_codes::user_id.eq(user_id),
                recovery_codes::code_hash.eq(hash_recovery(&normalised)),
                recovery_codes::created_at.eq(now),
            ))
            .execute(conn)?;
    }
    Ok(Some(codes))
}

/// Removes the user's factor and recovery codes.
pub fn remove(conn: &mut DbConnection, user_id: &str) -> QueryResult<()> {
    diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user_id)))
        .execute(conn)?;
    diesel::delete(totp_factors::table.find(user_id)).execute(conn)?;
    Ok(())
}

/// Recovery codes not yet used.
pub fn recovery_left(conn: &mut DbConnection, user_id: &str) -> QueryResult<i64> {
    recovery_codes::table
        .filter(recovery_codes::user_id.eq(user_id))
        .filter(recovery_codes::used_at.is_null())
        .count()
        .get_result(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_told_apart() {
        assert_eq!(Otp::parse(" 123 456 "), Some(Otp::Totp("123456".into())));
        assert_eq!(
            Otp::parse("ABCD-efgh-2345-6723"),
            Some(Otp::Recovery("abcdefgh23456723".into()))
        );
        assert_eq!(Otp::parse("12345"), None);
        assert_eq!(Otp::parse("abcd-efgh-1111-0000"), None);
        assert_eq!(Otp::parse(&"1".repeat(100)), None);
    }

    #[test]
    fn recovery_codes_parse_as_recovery_codes() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        for code in &codes {
            assert!(matches!(Otp::parse(code), Some(Otp::Recovery(_))), "{code}");
        }
        let distinct: std::collections::BTreeSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), RECOVERY_CODES);
    }

    /// RFC 6238 Appendix B, SHA-1, truncated to 6 digits.
    #[test]
    fn matches_the_rfc_test_vectors() {
        let secret = Secret::from(b"12345678901234567890".to_vec()).to_base32();
        for (t, expected) in [
            (59u64, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(code_at(&secret, t).unwrap(), expected, "t={t}");
            assert!(step_of(&secret, expected, t).unwrap().is_some());
        }
        assert_eq!(step_of(&secret, "287082", 59 + 90).unwrap(), None);
    }

    #[test]
    fn the_uri_names_the_issuer_and_carries_the_secret() {
        let secret = new_secret();
        let uri = otpauth_uri(&secret, "gp@relais.test").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/Relais:gp%40relais.test?"),
            "{uri}"
        );
        assert!(uri.contains(&format!("secret={secret}")), "{uri}");
        assert!(uri.contains("issuer=Relais"), "{uri}");
    }
}
