//! OpenID Connect sign-in (see `auth::oidc`): start at a provider, come
//! back to the callback, hand a one-time code to the client's redirect URI,
//! exchange it for the usual token pair.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::auth::{SignIn, TokenPair, auth_event, open_session};
use super::extract::{Json, Query};
use super::scope::RequestInfo;
use crate::audit::{self, Outcome};
use crate::auth::oidc::{self, Failure, Flow, Provider};
use crate::auth::tokens::{hash_token, random_token};
use crate::config::MAX_REDIRECT_LEN;
use crate::db::models::User;
use crate::error::{ApiError, Problem};
use crate::state::AppState;

/// The longest client `state` carried through a sign-in.
pub const MAX_CLIENT_STATE_LEN: usize = 512;
/// The longest token (invitation, one-time code) read from a request.
const MAX_TOKEN_LEN: usize = 256;

/// Where the sign-in returns, and what to carry.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StartQuery {
    /// One of `auth.oidc.allowed_redirects`, exactly.
    #[param(max_length = 2000)]
    pub redirect_uri: String,
    /// Opaque to Relais: handed back with the code (CSRF protection of the client).
    #[param(max_length = 512)]
    pub state: Option<String>,
    /// An invitation token: the sign-in accepts it (instead of a password).
    #[param(max_length = 256)]
    pub invitation: Option<String>,
}

/// What the provider sends back.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    /// The provider's refusal (`access_denied`, …).
    pub error: Option<String>,
    /// Not read: its text is the provider's, and may echo input.
    pub error_description: Option<String>,
    pub error_uri: Option<String>,
    /// RFC 9207: the issuer of the answer, checked when present.
    pub iss: Option<String>,
    /// Keycloak's session state (not used).
    pub session_state: Option<String>,
}

/// The one-time code from the redirect.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcCode {
    #[schema(max_length = 256)]
    pub code: String,
}

fn provider<'a>(state: &'a AppState, name: &str) -> Result<&'a Provider, ApiError> {
    state
        .oidc
        .get(name)
        .ok_or_else(|| ApiError::NotFound("no such sign-in provider".into()))
}

fn callback_url(state: &AppState, name: &str) -> String {
    format!(
        "{}{}/auth/oidc/{name}/callback",
        state.settings.server.public_url,
        super::BASE
    )
}

fn too_long(field: &str, value: Option<&str>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(v) if v.len() > max => Err(ApiError::malformed(
            field,
            format!("at most {max} characters"),
        )),
        _ => Ok(()),
    }
}

fn provider_unavailable(err: &oidc::OidcError, name: &str) -> ApiError {
    tracing::warn!(provider = name, error = %err.message, "OIDC provider unavailable");
    ApiError::Unavailable("the sign-in provider cannot be reached; retry later".into())
}

#[utoipa::path(get, path = "/api/v1/auth/oidc/{provider}/start", tag = "auth",
    params(("provider" = String, Path, description = "A name under `auth.oidc`"), StartQuery),
    responses(
        (status = 302, description = "To the provider's authorization endpoint (state, nonce and PKCE challenge; held server-side for `auth.oidc.flow_ttl_s`)"),
        (status = 400, description = "A parameter too long", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such provider", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`redirect_uri` is not one of `auth.oidc.allowed_redirects`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this address; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The provider cannot be reached, or too many sign-ins are in progress", body = Problem, content_type = "application/problem+json"),
    ))]
/// Begins an OpenID Connect sign-in.
pub async fn start(
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
    Query(query): Query<StartQuery>,
) -> Result<HttpResponse, ApiError> {
    state.check_ip(state.client_addr(&req))?;
    let name = name.into_inner();
    let provider = provider(&state, &name)?;
    too_long("redirect_uri", Some(&query.redirect_uri), MAX_REDIRECT_LEN)?;
    too_long("state", query.state.as_deref(), MAX_CLIENT_STATE_LEN)?;
    too_long("invitation", query.invitation.as_deref(), MAX_TOKEN_LEN)?;
    if !state
        .settings
        .auth
        .oidc
        .allowed_redirects
        .contains(&query.redirect_uri)
    {
        return Err(ApiError::invalid(
            "redirect_uri",
            "not one of the redirect URIs this server allows (auth.oidc.allowed_redirects)",
        ));
    }
    let meta = provider
        .metadata()
        .await
        .map_err(|e| provider_unavailable(&e, &name))?;
    let (flow_state, nonce, verifier) = (random_token(), random_token(), random_token());
    let now = state.clock.now_naive();
    let ttl = i64::try_from(state.settings.auth.oidc.flow_ttl_s).unwrap_or(300);
    let flow = Flow {
        provider: name.clone(),
        nonce: nonce.clone(),
        pkce_verifier: verifier.clone(),
        redirect_uri: query.redirect_uri,
        client_state: query.state,
        invitation_hash: query.invitation.as_deref().map(hash_token),
        expires_at: now + chrono::Duration::seconds(ttl),
    };
    {
        let flow_state = flow_state.clone();
        state
            .db
            .write(move |conn| oidc::store_flow(conn, &flow_state, &flow, now))
            .await?;
    }
    let location = provider.authorize_url(
        &meta,
        &callback_url(&state, &name),
        &flow_state,
        &nonce,
        &verifier,
    );
    Ok(HttpResponse::Found()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

/// `uri` with `pairs` added to its query.
fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{}", query.finish())
}

fn back_to_client(flow: &Flow, pairs: &[(&str, &str)]) -> HttpResponse {
    let mut pairs = pairs.to_vec();
    if let Some(s) = &flow.client_state {
        pairs.push(("state", s));
    }
    HttpResponse::Found()
        .insert_header((header::LOCATION, with_query(&flow.redirect_uri, &pairs)))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

#[utoipa::path(get, path = "/api/v1/auth/oidc/{provider}/callback", tag = "auth",
    params(("provider" = String, Path, description = "A name under `auth.oidc`"), CallbackQuery),
    responses(
        (status = 302, description = "To the sign-in's `redirect_uri` with `code` (one-time, one minute; exchange it at `POST /auth/oidc/token`) or `error` (`provider_error`, `invalid_id_token`, `wrong_acr`, `unknown_subject`, `account_deactivated`, `invitation_unusable`, `identity_mismatch`), and the client's `state`"),
        (status = 400, description = "`state` missing, unknown, expired or already used (a replay)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such provider", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this address; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ))]
/// Where the provider returns the browser: checks the sign-in and hands a
/// one-time code back to the client.
pub async fn callback(
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
    Query(query): Query<CallbackQuery>,
) -> Result<HttpResponse, ApiError> {
    state.check_ip(state.client_addr(&req))?;
    let name = name.into_inner();
    let provider = provider(&state, &name)?;
    let info = RequestInfo::of(&req);
    let method = format!("oidc:{name}");
    let now = state.clock.now_naive();
    let Some(flow_state) = query
        .state
        .filter(|s| !s.is_empty() && s.len() <= MAX_TOKEN_LEN)
    else {
        return Err(ApiError::malformed("state", "required"));
    };
    let flow = {
        let flow_state = flow_state.clone();
        state
            .db
            .write(move |conn| Ok(oidc::take_flow(conn, &flow_state, now)?))
            .await?
    };
    let Some(flow) = flow.filter(|f| f.provider == name) else {
        let record = auth_event(
            &info,
            None,
            "sign_in",
            &format!("{method}:unknown_state"),
            Outcome::Denied,
        );
        state.audit.record(record).await?;
        return Err(ApiError::malformed(
            "state",
            "unknown, expired or already used sign-in; start again",
        ));
    };
    let fail = async |failure: Failure, user: Option<User>| -> Result<HttpResponse, ApiError> {
        let detail = format!("{method}:{}", failure.code());
        let record = auth_event(&info, user.as_ref(), "sign_in", &detail, Outcome::Denied);
        state.audit.record(record).await?;
        Ok(back_to_client(&flow, &[("error", failure.code())]))
    };
    let Some(code) = answered_code(
        provider,
        query.error.is_some(),
        query.iss.as_deref(),
        query.code,
    ) else {
        return fail(Failure::Provider, None).await;
    };
    let identity = match provider
        .finish(
            &callback_url(&state, &name),
            &code,
            &flow.pkce_verifier,
            &flow.nonce,
        )
        .await
    {
        Ok(identity) => identity,
        Err(err) => {
            tracing::warn!(provider = %name, error = %err.message, "OIDC sign-in refused");
            return fail(err.failure, None).await;
        }
    };
    let (provider_name, invitation) = (name.clone(), flow.invitation_hash.clone());
    let mapped = state
        .db
        .write(move |conn| {
            // The account of the identity, and a one-time code for the client.
            let mapped =
                oidc::map_identity(conn, &provider_name, &identity, invitation.as_deref(), now)?;
            Ok(match mapped {
                Ok(user) => Ok((oidc::issue_code(conn, &user.id, &provider_name, now)?, user)),
                Err(failure) => Err(failure),
            })
        })
        .await?;
    match mapped {
        Ok((code, user)) => {
            let record = auth_event(
                &info,
                Some(&user),
                "sign_in",
                &format!("{method}:identity_verified"),
                Outcome::Allowed,
            );
            state.audit.record(record).await?;
            Ok(back_to_client(&flow, &[("code", &code)]))
        }
        Err((failure, user)) => fail(failure, user).await,
    }
}

/// The authorization code of the provider's answer; none when it refused,
/// named another issuer (RFC 9207: a mix-up attack) or sent no usable code.
fn answered_code(
    provider: &Provider,
    refused: bool,
    iss: Option<&str>,
    code: Option<String>,
) -> Option<String> {
    if refused || iss.is_some_and(|iss| !provider.is_issuer(iss)) {
        return None;
    }
    code.filter(|c| !c.is_empty() && c.len() <= 4096)
}

#[utoipa::path(post, path = "/api/v1/auth/oidc/token", tag = "auth",
    request_body = OidcCode,
    responses(
        (status = 200, description = "Signed in", body = TokenPair),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unknown, expired or already used code (`errors: [{field: \"code\"}]`), or the account was deactivated meanwhile", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this address; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ))]
/// Exchanges an OIDC sign-in's one-time code for a token pair.
pub async fn exchange_token(
    state: web::Data<AppState>,
    req: HttpRequest,
    Json(body): Json<OidcCode>,
) -> Result<web::Json<TokenPair>, ApiError> {
    let client = state.client_addr(&req);
    state.check_ip(client)?;
    if body.code.len() > MAX_TOKEN_LEN {
        return Err(ApiError::invalid(
            "code",
            format!("at most {MAX_TOKEN_LEN} characters"),
        ));
    }
    let info = RequestInfo::of(&req);
    let now = state.clock.now_naive();
    let client_addr = client.map(|ip| crate::net::limit_key(ip).to_string());
    let jwt = state.jwt.clone();
    let ttl = state.settings.auth.refresh_token_ttl_s;
    let pair = state
        .db
        .write(move |conn| {
            let taken = oidc::take_code(conn, &body.code, now)?;
            let found = match &taken {
                Some((user_id, _)) => User::find(conn, user_id)?.filter(|u| u.active),
                None => None,
            };
            let (Some((_, provider)), Some(user)) = (taken, found) else {
                let record =
                    auth_event(&info, None, "sign_in", "oidc:invalid_code", Outcome::Denied);
                audit::append(conn, &[record], now)?;
                return Ok(Err(ApiError::UnauthorizedField {
                    field: "code",
                    detail: "unknown, expired or already used sign-in code",
                }));
            };
            let sign_in = SignIn {
                info: &info,
                client_addr: client_addr.as_deref(),
                enrol_only: false,
                detail: &format!("oidc:{provider}"),
            };
            Ok(Ok(open_session(conn, &jwt, user, sign_in, ttl, now)?))
        })
        .await??;
    Ok(web::Json(pair))
}
