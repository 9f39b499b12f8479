//! OpenID Connect relying party: the authorization-code flow with PKCE for
//! the providers configured under `auth.oidc.<name>` (Pro Santé Connect, a
//! hospital's IdP).
//!
//! Written on `jsonwebtoken` (already the access tokens' crate) and `awc`
//! (already the demo's client) rather than the `openidconnect` crate:
//! `openidconnect` 4.1 brings reqwest, hyper and quinn (a second HTTP stack
//! beside actix's), a second generation of the RustCrypto crates (digest
//! 0.11, p256 0.14, ed25519-dalek 3, beside jsonwebtoken's) and
//! serde_with/schemars: about 80 more crates to build on a loaded machine.
//! What Relais needs of it is small and fully checked here: discovery, the
//! JWKS with keys picked by `kid` (fetched again when an unknown one
//! appears: rotation), the ID token's signature (RS256/ES256 only), `iss`,
//! `aud` (and `azp` when there are several), `exp`, `iat`, `nonce`, and
//! `acr` when required; PKCE S256.
//!
//! A sign-in's state, nonce and PKCE verifier are held in the database
//! (`oidc_flows`), so that any instance can finish a flow another began;
//! they last `auth.oidc.flow_ttl_s`, are used once (deleted on use) and
//! are bounded in number ([`MAX_PENDING_FLOWS`]). The one-time code handed
//! back to the client lives a minute and is used once too.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::tokens::hash_token;
use crate::config::{OidcProvider, OidcSettings};
use crate::db::DbConnection;
use crate::db::models::{Invitation, User};
use crate::db::schema::{invitations, oidc_codes, oidc_flows, oidc_subjects, users};
use crate::domain::rpps::Rpps;
use crate::error::ApiError;

/// Sign-ins begun and not finished, over all providers: beyond, new ones
/// are refused (503) until some finish or expire. ~500 bytes a row.
pub const MAX_PENDING_FLOWS: i64 = 10_000;
/// How long the one-time code handed back to the client is good for.
pub const CODE_TTL_S: i64 = 60;
/// The largest document read from a provider.
const MAX_BODY: usize = 512 * 1024;
/// Discovery documents are read again after this long.
const METADATA_TTL: StdDuration = StdDuration::from_secs(3600);
/// Key sets are read again after this long, or on an unknown `kid` (at
/// most once per [`KEYS_MIN_REFRESH`]).
const KEYS_TTL: StdDuration = StdDuration::from_secs(3600);
const KEYS_MIN_REFRESH: StdDuration = StdDuration::from_secs(5);
/// The longest a provider is waited for.
const HTTP_TIMEOUT: StdDuration = StdDuration::from_secs(10);
/// Clock skew allowed on the ID token's `exp` and `iat`.
const LEEWAY_S: u64 = 60;

/// Why a sign-in at a provider did not give an account: the code sent back
/// to the client (`?error=`) and written in the audit row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The provider refused or failed (its own `error`, or a bad answer).
    Provider,
    /// The ID token (or userinfo) did not pass a check.
    InvalidToken,
    /// The ID token's `acr` is not one `required_acr` accepts.
    WrongAcr,
    /// No active account has this subject or RPPS.
    UnknownSubject,
    /// The account was deactivated.
    Deactivated,
    /// The invitation was unknown, used or expired.
    InvitationUnusable,
    /// The provider's RPPS differs from the invited account's, or the
    /// subject is linked to another account.
    IdentityMismatch,
}

impl Failure {
    /// The code, in the redirect and the audit row.
    pub fn code(self) -> &'static str {
        match self {
            Self::Provider => "provider_error",
            Self::InvalidToken => "invalid_id_token",
            Self::WrongAcr => "wrong_acr",
            Self::UnknownSubject => "unknown_subject",
            Self::Deactivated => "account_deactivated",
            Self::InvitationUnusable => "invitation_unusable",
            Self::IdentityMismatch => "identity_mismatch",
        }
    }
}

/// What a provider publishes at `/.well-known/openid-configuration`.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
}

/// One configured provider, with what was read of it.
pub struct Provider {
    pub name: String,
    pub config: OidcProvider,
    metadata: Mutex<Option<(Instant, Arc<Metadata>)>>,
    keys: Mutex<Option<(Instant, Arc<Vec<Jwk>>)>>,
}

/// Every configured provider, by name.
pub struct Providers {
    by_name: BTreeMap<String, Provider>,
}

impl Providers {
    /// The providers of `settings` (nothing is fetched until used).
    pub fn new(settings: &OidcSettings) -> Self {
        let by_name = settings
            .providers
            .iter()
            .map(|(name, config)| {
                (
                    name.clone(),
                    Provider {
                        name: name.clone(),
                        config: config.clone(),
                        metadata: Mutex::new(None),
                        keys: Mutex::new(None),
                    },
                )
            })
            .collect();
        Self { by_name }
    }

    /// The provider called `name`.
    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.by_name.get(name)
    }
}

/// A failure talking to or checking a provider; the message is for the
/// log (it names no user and carries no token).
#[derive(Debug)]
pub struct OidcError {
    pub failure: Failure,
    pub message: String,
}

fn provider_error(message: impl Into<String>) -> OidcError {
    OidcError {
        failure: Failure::Provider,
        message: message.into(),
    }
}

fn token_error(message: impl Into<String>) -> OidcError {
    OidcError {
        failure: Failure::InvalidToken,
        message: message.into(),
    }
}

fn client() -> awc::Client {
    awc::Client::builder().timeout(HTTP_TIMEOUT).finish()
}

/// Sends a request and reads a successful answer's body (bounded).
async fn fetch(
    req: awc::ClientRequest,
    form: Option<&[(&str, &str)]>,
) -> Result<(String, Vec<u8>), OidcError> {
    let url = req.get_uri().to_string();
    let sent = match form {
        Some(form) => req.send_form(&form).await,
        None => req.send().await,
    };
    let mut resp = sent.map_err(|e| provider_error(format!("{url}: {e}")))?;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp
        .body()
        .limit(MAX_BODY)
        .await
        .map_err(|e| provider_error(format!("{url}: {e}")))?;
    if !status.is_success() {
        // The provider's error code only: its description may echo input.
        let code = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        return Err(provider_error(format!("{url}: HTTP {status} {code}")));
    }
    Ok((content_type, body.to_vec()))
}

fn parse_json<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, OidcError> {
    serde_json::from_slice(body).map_err(|e| provider_error(format!("{what}: {e}")))
}

/// The SHA-256 challenge of a PKCE verifier (RFC 7636 S256).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The key that verifies a token signed with `alg` under `kid`: by `kid`
/// when the token names one, else the one signing key for `alg`.
fn select_key<'a>(keys: &'a [Jwk], kid: Option<&str>, alg: Algorithm) -> Option<&'a Jwk> {
    let fits = |jwk: &&Jwk| {
        let for_signing = !matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        );
        let alg_ok = jwk
            .common
            .key_algorithm
            .is_none_or(|a| a.to_string() == format!("{alg:?}"));
        for_signing && alg_ok
    };
    match kid {
        Some(kid) => keys
            .iter()
            .filter(fits)
            .find(|jwk| jwk.common.key_id.as_deref() == Some(kid)),
        None => {
            let mut candidates = keys.iter().filter(fits).filter(|jwk| {
                matches!(
                    (&jwk.algorithm, alg),
                    (
                        jsonwebtoken::jwk::AlgorithmParameters::RSA(_),
                        Algorithm::RS256
                    ) | (
                        jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_),
                        Algorithm::ES256
                    )
                )
            });
            let first = candidates.next();
            // Several candidates and no kid: ambiguous, refuse.
            if candidates.next().is_some() {
                None
            } else {
                first
            }
        }
    }
}

/// The keys of a JWKS document, skipping those this crate cannot read
/// (an unknown key type must not hide the others).
fn parse_keys(body: &[u8]) -> Result<Vec<Jwk>, OidcError> {
    #[derive(Deserialize)]
    struct Raw {
        keys: Vec<Value>,
    }
    let raw: Raw = parse_json("jwks", body)?;
    Ok(raw
        .keys
        .into_iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
        .collect())
}

/// A token endpoint's answer.
#[derive(Debug, Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    access_token: Option<String>,
}

/// What a checked sign-in at a provider proved.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The provider's `sub`.
    pub subject: String,
    /// The RPPS in the configured claim, when there is one.
    pub rpps: Option<Rpps>,
}

/// Reads an RPPS from a claim's value: 11 digits, or a national id `8` +
/// RPPS (Pro Santé Connect's `SubjectNameID` for RPPS-registered
/// professionals). Anything else (an ADELI-based id, a test id) is no RPPS.
pub fn rpps_of(value: &Value) -> Option<Rpps> {
    let text = value.as_str()?.trim();
    let digits = match text.len() {
        12 => text.strip_prefix('8')?,
        11 => text,
        _ => return None,
    };
    Rpps::parse(digits).ok()
}

impl Provider {
    fn issuer(&self) -> &str {
        self.config.issuer.trim_end_matches('/')
    }

    /// Whether `iss` names this provider.
    pub fn is_issuer(&self, iss: &str) -> bool {
        iss.trim_end_matches('/') == self.issuer()
    }

    /// The discovery document (cached; its `issuer` must be the configured one).
    pub async fn metadata(&self) -> Result<Arc<Metadata>, OidcError> {
        if let Some((at, meta)) = self
            .metadata
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && at.elapsed() < METADATA_TTL
        {
            return Ok(meta.clone());
        }
        let url = match &self.config.discovery_url {
            Some(url) => url.clone(),
            None => format!("{}/.well-known/openid-configuration", self.issuer()),
        };
        let (_, body) = fetch(client().get(&url), None).await?;
        let meta: Metadata = parse_json("discovery", &body)?;
        if meta.issuer.trim_end_matches('/') != self.issuer() {
            return Err(provider_error(format!(
                "discovery names issuer {} instead of {}",
                meta.issuer,
                self.issuer()
            )));
        }
        let meta = Arc::new(meta);
        *self.metadata.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), meta.clone()));
        Ok(meta)
    }

    async fn fetch_keys(&self, meta: &Metadata) -> Result<Arc<Vec<Jwk>>, OidcError> {
        let (_, body) = fetch(client().get(&meta.jwks_uri), None).await?;
        let keys = Arc::new(parse_keys(&body)?);
        *self.keys.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), keys.clone()));
        Ok(keys)
    }

    /// The key for a token's header: from the cached set, or the set read
    /// again when the `kid` is unknown (the provider rotated its keys).
    async fn key_for(
        &self,
        meta: &Metadata,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, OidcError> {
        let cached = self.keys.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let keys = match cached {
            Some((at, keys)) if at.elapsed() < KEYS_TTL => {
                if select_key(&keys, kid, alg).is_some() || at.elapsed() < KEYS_MIN_REFRESH {
                    keys
                } else {
                    self.fetch_keys(meta).await?
                }
            }
            _ => self.fetch_keys(meta).await?,
        };
        let jwk =
            select_key(&keys, kid, alg).ok_or_else(|| token_error("no key for the token's kid"))?;
        DecodingKey::from_jwk(jwk).map_err(|e| token_error(format!("unusable key: {e}")))
    }

    /// Checks a signed JWT from this provider (RS256 or ES256 only) and
    /// returns its claims; `audience` is checked when given.
    async fn verify_jwt(
        &self,
        meta: &Metadata,
        token: &str,
        audience: Option<&str>,
    ) -> Result<Map<String, Value>, OidcError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| token_error(format!("header: {e}")))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(token_error(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let key = self
            .key_for(meta, header.kid.as_deref(), header.alg)
            .await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[meta.issuer.as_str()]);
        validation.leeway = LEEWAY_S;
        match audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
            }
            None => {
                validation.validate_aud = false;
                validation.validate_exp = false;
                validation.set_required_spec_claims(&["iss", "sub"]);
            }
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| token_error(format!("{e}")))?;
        Ok(data.claims)
    }

    /// Where to send the browser: the provider's authorization endpoint
    /// with the flow's state, nonce and PKCE challenge.
    pub fn authorize_url(
        &self,
        meta: &Metadata,
        callback: &str,
        state: &str,
        nonce: &str,
        verifier: &str,
    ) -> String {
        let mut scopes = vec!["openid".to_owned()];
        scopes.extend(
            self.config
                .scopes
                .iter()
                .filter(|s| *s != "openid")
                .cloned(),
        );
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", callback)
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &pkce_challenge(verifier))
            .append_pair("code_challenge_method", "S256");
        if !self.config.required_acr.is_empty() {
            query.append_pair("acr_values", &self.config.required_acr.join(" "));
        }
        let sep = if meta.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}{}", meta.authorization_endpoint, query.finish())
    }

    /// Exchanges the provider's code, checks the ID token (and reads the
    /// userinfo when the RPPS claim is not in it) and says who signed in.
    pub async fn finish(
        &self,
        callback: &str,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<Identity, OidcError> {
        let meta = self.metadata().await?;
        // RFC 6749 §2.3.1: the client id and secret are form-encoded first.
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let req = client()
            .post(&meta.token_endpoint)
            .insert_header(("accept", "application/json"))
            .basic_auth(
                encode(&self.config.client_id),
                encode(&self.config.client_secret),
            );
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", callback),
            ("code_verifier", verifier),
        ];
        let (_, body) = fetch(req, Some(&form)).await?;
        let tokens: TokenResponse = parse_json("token response", &body)?;
        let id_token = tokens
            .id_token
            .ok_or_else(|| token_error("no id_token in the token response"))?;
        let claims = self
            .verify_jwt(&meta, &id_token, Some(&self.config.client_id))
            .await?;
        self.check_claims(&claims, nonce)?;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .ok_or_else(|| token_error("no usable sub"))?
            .to_owned();
        let mut rpps = None;
        if let Some(claim) = &self.config.subject_claim {
            rpps = claims.get(claim).and_then(rpps_of);
            if rpps.is_none()
                && let (Some(endpoint), Some(access)) =
                    (&meta.userinfo_endpoint, &tokens.access_token)
            {
                let info = self.userinfo(&meta, endpoint, access).await?;
                if info.get("sub").and_then(Value::as_str) != Some(subject.as_str()) {
                    return Err(token_error("userinfo is about another subject"));
                }
                rpps = info.get(claim).and_then(rpps_of);
            }
        }
        Ok(Identity { subject, rpps })
    }

    /// `nonce`, `azp` and `acr`, beyond what the JWT checks did.
    fn check_claims(&self, claims: &Map<String, Value>, nonce: &str) -> Result<(), OidcError> {
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(token_error("nonce does not match the sign-in's"));
        }
        if let Some(Value::Array(aud)) = claims.get("aud")
            && aud.len() > 1
            && claims.get("azp").and_then(Value::as_str) != Some(self.config.client_id.as_str())
        {
            return Err(token_error("several audiences and azp is not this client"));
        }
        if !self.config.required_acr.is_empty() {
            let acr = claims.get("acr").and_then(Value::as_str).unwrap_or("");
            if !self.config.required_acr.iter().any(|a| a == acr) {
                return Err(OidcError {
                    failure: Failure::WrongAcr,
                    message: format!("acr {acr:?} is not required_acr"),
                });
            }
        }
        Ok(())
    }

    /// The userinfo claims: JSON, or a JWT signed by the provider.
    async fn userinfo(
        &self,
        meta: &Metadata,
        endpoint: &str,
        access_token: &str,
    ) -> Result<Map<String, Value>, OidcError> {
        let req = client().get(endpoint).bearer_auth(access_token);
        let (content_type, body) = fetch(req, None).await?;
        if content_type.starts_with("application/jwt") {
            let jwt =
                String::from_utf8(body).map_err(|_| token_error("userinfo JWT is not text"))?;
            self.verify_jwt(meta, jwt.trim(), None).await
        } else {
            parse_json("userinfo", &body)
        }
    }
}

/// A sign-in begun at a provider, as stored.
#[derive(Debug, Clone, Queryable)]
pub struct Flow {
    pub provider: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub redirect_uri: String,
    pub client_state: Option<String>,
    pub invitation_hash: Option<String>,
    pub expires_at: NaiveDateTime,
}

/// Stores a begun sign-in under its state (hashed); 503 when too many are pending.
pub fn store_flow(
    conn: &mut DbConnection,
    state: &str,
    flow: &Flow,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    purge(conn, now)?;
    let pending: i64 = oidc_flows::table.count().get_result(conn)?;
    if pending >= MAX_PENDING_FLOWS {
        return Err(ApiError::Unavailable(
            "too many sign-ins in progress; retry in a few minutes".into(),
        ));
    }
    diesel::insert_into(oidc_flows::table)
        .values((
            oidc_flows::state_hash.eq(hash_token(state)),
            oidc_flows::provider.eq(&flow.provider),
            oidc_flows::nonce.eq(&flow.nonce),
            oidc_flows::pkce_verifier.eq(&flow.pkce_verifier),
            oidc_flows::redirect_uri.eq(&flow.redirect_uri),
            oidc_flows::client_state.eq(&flow.client_state),
            oidc_flows::invitation_hash.eq(&flow.invitation_hash),
            oidc_flows::expires_at.eq(flow.expires_at),
        ))
        .execute(conn)?;
    Ok(())
}

/// Takes the sign-in begun under `state`, once: `None` when unknown, used
/// or expired. The delete decides, so two racing callbacks get one flow.
pub fn take_flow(
    conn: &mut DbConnection,
    state: &str,
    now: NaiveDateTime,
) -> QueryResult<Option<Flow>> {
    let hash = hash_token(state);
    let flow: Option<Flow> = oidc_flows::table
        .find(&hash)
        .select((
            oidc_flows::provider,
            oidc_flows::nonce,
            oidc_flows::pkce_verifier,
            oidc_flows::redirect_uri,
            oidc_flows::client_state,
            oidc_flows::invitation_hash,
            oidc_flows::expires_at,
        ))
        .first(conn)
        .optional()?;
    let taken = diesel::delete(oidc_flows::table.find(&hash)).execute(conn)? == 1;
    Ok(flow.filter(|f| taken && f.expires_at > now))
}

/// Deletes expired flows and codes (also the scheduler's job).
pub fn purge(conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<usize> {
    let flows =
        diesel::delete(oidc_flows::table.filter(oidc_flows::expires_at.le(now))).execute(conn)?;
    let codes =
        diesel::delete(oidc_codes::table.filter(oidc_codes::expires_at.le(now))).execute(conn)?;
    Ok(flows + codes)
}

/// A one-time code for `user_id`, stored hashed.
pub fn issue_code(
    conn: &mut DbConnection,
    user_id: &str,
    provider: &str,
    now: NaiveDateTime,
) -> QueryResult<String> {
    let code = super::tokens::random_token();
    diesel::insert_into(oidc_codes::table)
        .values((
            oidc_codes::code_hash.eq(hash_token(&code)),
            oidc_codes::user_id.eq(user_id),
            oidc_codes::provider.eq(provider),
            oidc_codes::expires_at.eq(now + Duration::seconds(CODE_TTL_S)),
        ))
        .execute(conn)?;
    Ok(code)
}

/// Spends a one-time code: its user and provider, or `None` when unknown,
/// used or expired.
pub fn take_code(
    conn: &mut DbConnection,
    code: &str,
    now: NaiveDateTime,
) -> QueryResult<Option<(String, String)>> {
    let hash = hash_token(code);
    let row: Option<(String, String, NaiveDateTime)> = oidc_codes::table
        .find(&hash)
        .select((
            oidc_codes::user_id,
            oidc_codes::provider,
            oidc_codes::expires_at,
        ))
        .first(conn)
        .optional()?;
    let taken = diesel::delete(oidc_codes::table.find(&hash)).execute(conn)? == 1;
    Ok(row
        .filter(|(_, _, expires)| taken && *expires > now)
        .map(|(user, provider, _)| (user, provider)))
}

fn linked_user(
    conn: &mut DbConnection,
    provider: &str,
    subject: &str,
) -> QueryResult<Option<String>> {
    oidc_subjects::table
        .find((provider, subject))
        .select(oidc_subjects::user_id)
        .first(conn)
        .optional()
}

fn link(
    conn: &mut DbConnection,
    provider: &str,
    subject: &str,
    user_id: &str,
    now: NaiveDateTime,
) -> QueryResult<()> {
    if linked_user(conn, provider, subject)?.is_none() {
        diesel::insert_into(oidc_subjects::table)
            .values((
                oidc_subjects::provider.eq(provider),
                oidc_subjects::subject.eq(subject),
                oidc_subjects::user_id.eq(user_id),
                oidc_subjects::created_at.eq(now),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// The account a provider's identity signs in to, never a new one: the
/// invited account when the sign-in accepts an invitation, else the one
/// its subject is linked to, else the one with its RPPS. The subject is
/// linked to the account, and the account's pending invitations are
/// accepted (an OIDC sign-in stands in for setting a password).
pub fn map_identity(
    conn: &mut DbConnection,
    provider: &str,
    identity: &Identity,
    invitation_hash: Option<&str>,
    now: NaiveDateTime,
) -> Result<Result<User, (Failure, Option<User>)>, ApiError> {
    let linked = linked_user(conn, provider, &identity.subject)?;
    let user = if let Some(hash) = invitation_hash {
        let invitation: Option<Invitation> = invitations::table
            .filter(invitations::token_hash.eq(hash))
            .select(Invitation::as_select())
            .first(conn)
            .optional()?;
        let Some(invitation) = invitation.filter(|i| i.accepted_at.is_none() && i.expires_at > now)
        else {
            return Ok(Err((Failure::InvitationUnusable, None)));
        };
        let Some(user) = User::find(conn, &invitation.user_id)? else {
            return Ok(Err((Failure::InvitationUnusable, None)));
        };
        let rpps_differs = matches!(
            (&user.rpps, &identity.rpps),
            (Some(mine), Some(theirs)) if mine != theirs.as_str()
        );
        if rpps_differs || linked.as_ref().is_some_and(|id| *id != user.id) {
            return Ok(Err((Failure::IdentityMismatch, Some(user))));
        }
        user
    } else {
        let by_link = match &linked {
            Some(id) => User::find(conn, id)?,
            None => None,
        };
        let user = match (by_link, &identity.rpps) {
            (Some(user), _) => Some(user),
            (None, Some(rpps)) => {
                let id: Option<String> = users::table
                    .filter(users::rpps.eq(rpps.as_str()))
                    .select(users::id)
                    .first(conn)
                    .optional()?;
                match id {
                    Some(id) => User::find(conn, &id)?,
                    None => None,
                }
            }
            (None, None) => None,
        };
        let Some(user) = user else {
            return Ok(Err((Failure::UnknownSubject, None)));
        };
        user
    };
    if !user.active {
        return Ok(Err((Failure::Deactivated, Some(user))));
    }
    link(conn, provider, &identity.subject, &user.id, now)?;
    diesel::update(invitations::table.filter(invitations::user_id.eq(&user.id)))
        .filter(invitations::accepted_at.is_null())
        .set(invitations::accepted_at.eq(now))
        .execute(conn)?;
    Ok(Ok(user))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_pkce_challenge_is_rfc_7636s() {
        // RFC 7636 Appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn rpps_is_read_plain_or_as_a_national_id() {
        let rpps = "10003456786";
        assert!(Rpps::parse(rpps).is_ok());
        assert_eq!(rpps_of(&json!(rpps)).unwrap().as_str(), rpps);
        assert_eq!(rpps_of(&json!(format!("8{rpps}"))).unwrap().as_str(), rpps);
        assert!(rpps_of(&json!(format!("0{rpps}"))).is_none());
        assert!(rpps_of(&json!("ANS20231122132732")).is_none());
        assert!(rpps_of(&json!("10003456787")).is_none());
        assert!(rpps_of(&json!(10003456786u64)).is_none());
    }

    fn jwk(value: Value) -> Jwk {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn keys_are_picked_by_kid_and_algorithm() {
        let rsa = |kid: &str| {
            jwk(
                json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": "sXch", "e": "AQAB"}),
            )
        };
        let ec = jwk(
            json!({"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}),
        );
        let keys = vec![rsa("old"), rsa("new"), ec];
        let pick = |kid, alg| select_key(&keys, kid, alg).and_then(|k| k.common.key_id.clone());
        assert_eq!(pick(Some("new"), Algorithm::RS256).as_deref(), Some("new"));
        assert_eq!(
            pick(Some("ec-1"), Algorithm::ES256).as_deref(),
            Some("ec-1")
        );
        // A kid with another algorithm's key is refused.
        assert_eq!(pick(Some("old"), Algorithm::ES256), None);
        // A rotated-away kid is not found (the set is then fetched again).
        assert_eq!(pick(Some("gone"), Algorithm::RS256), None);
        // No kid: only when one key fits.
        assert_eq!(pick(None, Algorithm::ES256).as_deref(), Some("ec-1"));
        assert_eq!(pick(None, Algorithm::RS256), None);
    }

    #[test]
    fn unknown_key_types_do_not_hide_the_others() {
        let body = json!({"keys": [
            {"kty": "weird", "kid": "x"},
            {"kty": "RSA", "kid": "r", "n": "sXch", "e": "AQAB"}
        ]});
        let keys = parse_keys(body.to_string().as_bytes()).unwrap();
        assert!(select_key(&keys, Some("r"), Algorithm::RS256).is_some());
    }
}
