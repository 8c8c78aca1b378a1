//! The exchange grants: Entra On-Behalf-Of (`jwt-bearer` + `requested_token_use=on_behalf_of`)
//! and RFC 8693 token exchange, the validation of the inbound user token (Token A) they share,
//! and the error bodies of the test faults.
//!
//! Both grants turn a user's access token addressed to the requesting client into a token for
//! one downstream resource (Token B) that keeps the user's identity (`oid`, `tid`, `name`,
//! `preferred_username`; `sub` pairwise for the new audience, as Entra does), carries the granted
//! delegated scopes and never outlives the inbound token.
//!
//! Assertions and subject tokens are held in [`Secret`]s and never appear in an error text.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use delegate_secret::Secret;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::token::{
    Client, EntraError, Issued, ScopeRequest, TokenForm, access_token_claims, authenticate_client,
    grant_scopes, id_token_claims, internal, mark_client_acr, parse_scopes, require_secret,
};
use crate::{
    ACCESS_TOKEN_TYPE, AppConfig, Idp, JWT_TOKEN_TYPE, TenantConfig, TokenFault, TokenSpec, TokenVersion,
    UserConfig, random_id, time,
};

/// `aud` as a JWT may carry it.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn values(&self) -> Vec<&str> {
        match self {
            Audience::One(a) => vec![a.as_str()],
            Audience::Many(all) => all.iter().map(String::as_str).collect(),
        }
    }
}

/// The claims of an inbound token that the exchange grants look at. A typed struct (not a
/// `Value`) so that a duplicated claim is a parse error rather than "last one wins".
#[derive(Deserialize)]
struct Inbound {
    iss: String,
    aud: Audience,
    exp: u64,
    nbf: Option<u64>,
    tid: String,
    oid: Option<String>,
    sub: Option<String>,
    scp: Option<String>,
    idtyp: Option<String>,
    act: Option<Value>,
    azp: Option<String>,
    appid: Option<String>,
}

fn malformed() -> EntraError {
    EntraError::bad_request("invalid_request", 50027, "JWT token is invalid or malformed.")
}

fn bad_signature(reason: &str) -> EntraError {
    EntraError::bad_request(
        "invalid_grant",
        50013,
        format!("Assertion failed signature validation. [Reason - {reason}]"),
    )
}

/// Validates a token as Entra validates an OBO assertion: a JWS signed RS256 with a key of the
/// current (published) set, issued by this IdP for a known tenant (the endpoint's, unless it is
/// `common`/`organizations`), and inside its validity window. No leeway: a client must not
/// present a token at or after its `exp` (what a cache capped at Token A's `exp` relies on).
fn verify(idp: &Idp, token: &str, tenant: Option<&TenantConfig>) -> Result<Inbound, EntraError> {
    if token.split('.').count() != 3 {
        return Err(malformed());
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| malformed())?;
    if header.alg != Algorithm::RS256 {
        return Err(bad_signature("The token is not signed with the expected algorithm."));
    }
    // The kid comes from the untrusted header and is only used as a lookup key.
    let Some((n, e)) = header.kid.as_deref().and_then(|kid| idp.live_key_components(kid)) else {
        return Err(bad_signature("The key was not found."));
    };
    let key =
        DecodingKey::from_rsa_components(&n, &e).map_err(|_| bad_signature("The key was not found."))?;
    // Only the signature here; issuer, audience and times are checked below with Entra's codes.
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Inbound>(token, &key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => {
                bad_signature("The provided signature value did not match the expected signature value.")
            }
            _ => malformed(),
        })?
        .claims;
    let issuer_tenant = idp.tenant(&claims.tid).filter(|t| t.id.eq_ignore_ascii_case(&claims.tid));
    let issuer_ok =
        issuer_tenant.is_some_and(|t| claims.iss == idp.issuer(&t.id) || claims.iss == idp.issuer_v1(&t.id));
    let tenant_ok = tenant.is_none_or(|t| t.id.eq_ignore_ascii_case(&claims.tid));
    if !issuer_ok || !tenant_ok {
        return Err(bad_signature("The token issuer is not valid for this tenant."));
    }
    let now = time::now();
    if claims.exp <= now || claims.nbf.is_some_and(|nbf| nbf > now) {
        return Err(EntraError::bad_request(
            "invalid_grant",
            500133,
            format!(
                "Assertion is not within its valid time range. Ensure that the access token is not expired before using it for user assertion, or request a new token. Current time: {}, expiry time of assertion {}.",
                time::entra_iso_time(now),
                time::entra_iso_time(claims.exp)
            ),
        ));
    }
    Ok(claims)
}

/// The assertion must be addressed to the client presenting it: its client id or one of its
/// Application ID URIs (Entra's AADSTS500131).
fn check_audience(claims: &Inbound, client: &AppConfig) -> Result<(), EntraError> {
    let audiences = claims.aud.values();
    let ok = audiences.iter().any(|aud| {
        aud.eq_ignore_ascii_case(&client.client_id)
            || client.identifier_uris.iter().any(|u| u.trim_end_matches('/') == aud.trim_end_matches('/'))
    });
    if ok {
        return Ok(());
    }
    Err(EntraError::bad_request(
        "invalid_grant",
        500131,
        format!(
            "Assertion audience does not match the Client app presenting the assertion. The audience in the assertion was '{}' and the expected audience is '{}' or one of the Application Id URIs of this application.",
            audiences.join(" "),
            client.client_id
        ),
    ))
}

/// The directory user a delegated token is for. App-only tokens cannot be exchanged
/// (AADSTS7000114, as Entra answers a daemon's token used as an OBO assertion).
fn delegated_user<'a>(
    idp: &'a Idp,
    claims: &Inbound,
    client: &AppConfig,
) -> Result<&'a UserConfig, EntraError> {
    let app_only =
        claims.idtyp.as_deref() == Some("app") || claims.scp.as_deref().is_none_or(|s| s.trim().is_empty());
    if app_only {
        return Err(EntraError::bad_request(
            "unauthorized_client",
            7000114,
            format!(
                "Application '{}'({}) is not allowed to make application on-behalf-of calls.",
                client.client_id, client.name
            ),
        ));
    }
    claims
        .oid
        .as_deref()
        .and_then(|oid| idp.find_user_by_oid(oid))
        .filter(|u| idp.user_tenant(u).eq_ignore_ascii_case(&claims.tid))
        .ok_or_else(|| {
            EntraError::bad_request(
                "invalid_grant",
                50034,
                format!(
                    "The user account does not exist in the {} directory. To sign into this application, the account must be added to the directory.",
                    claims.tid
                ),
            )
        })
}

/// Token B for `user`, and its `expires_in`.
struct Minted {
    access_token: Secret,
    expires_in: u64,
}

fn mint_for_user(
    idp: &Idp,
    client: &Client<'_>,
    user: &UserConfig,
    inbound: &Inbound,
    request: &ScopeRequest<'_>,
    granted: &[String],
    act: Option<Value>,
) -> Result<Minted, EntraError> {
    let (tenant, not_after) = (inbound.tid.as_str(), inbound.exp);
    let version =
        if request.resource.access_token_version == 1 { TokenVersion::V1 } else { TokenVersion::V2 };
    let now = time::now();
    let lifetime = idp.config().token_lifetime_seconds.min(not_after.saturating_sub(now));
    let spec = TokenSpec {
        tenant: tenant.to_owned(),
        user: Some(user.username.clone()),
        client_id: client.app.client_id.clone(),
        // v2 tokens always name the resource's client id (what ServiceNow checks); v1 tokens
        // name the resource as the client asked for it.
        audience: match version {
            TokenVersion::V2 => request.resource.client_id.clone(),
            TokenVersion::V1 => request.resource_identifier.clone(),
        },
        scopes: granted.to_vec(),
        roles: Vec::new(),
        version,
        lifetime: Duration::from_secs(lifetime),
        client_authenticated: client.authenticated,
    };
    let mut claims: Map<String, Value> = access_token_claims(idp, &spec).map_err(internal)?;
    // `access_token_claims` reads the clock again; clamp so Token B can never outlive Token A.
    let iat = claims.get("iat").and_then(Value::as_u64).unwrap_or(now);
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(not_after).min(not_after);
    claims.insert("exp".into(), exp.into());
    if let Some(act) = act {
        claims.insert("act".into(), act);
    }
    mark_client_acr(&mut claims, client);
    let access_token = idp.sign_claims(&claims).map_err(internal)?;
    Ok(Minted { access_token, expires_in: exp.saturating_sub(iat) })
}

/// An opaque refresh token (for `offline_access`), shaped like Entra's. The devstack IdP has no
/// refresh grant, so it cannot be redeemed; clients only need to receive and cache one.
fn refresh_token() -> Secret {
    Secret::new(format!("0.ARoA{}{}", random_id(), random_id()))
}

/// The response `scope`: granted resource scopes, plus the OIDC scopes asked for.
fn scope_out(request: &ScopeRequest<'_>, granted: &[String]) -> String {
    let mut out: Vec<String> = granted
        .iter()
        .map(|s| format!("{}/{s}", request.resource_identifier.trim_end_matches('/')))
        .collect();
    out.extend(request.oidc.iter().map(|s| (*s).to_owned()));
    out.join(" ")
}

fn wants(request: &ScopeRequest<'_>, oidc_scope: &str) -> bool {
    request.oidc.iter().any(|s| s.eq_ignore_ascii_case(oidc_scope))
}

/// Entra On-Behalf-Of: a confidential client redeems the user's token addressed to it
/// (`assertion`) for a token to one downstream resource (`scope`).
pub(crate) fn on_behalf_of_grant(
    idp: &Idp,
    tenant: Option<&TenantConfig>,
    tenant_segment: &str,
    headers: &HeaderMap,
    form: &TokenForm,
) -> Result<Issued, EntraError> {
    match form.get("requested_token_use")? {
        Some("on_behalf_of") => {}
        None => return Err(EntraError::missing("requested_token_use")),
        // A plain RFC 7523 authorization grant (assertion addressed to the token endpoint) is
        // not something Entra offers; do not echo the value (it is caller-controlled text).
        Some(_) => {
            return Err(EntraError::bad_request(
                "invalid_request",
                9002313,
                "Invalid request. Request is malformed or invalid: 'requested_token_use' must be 'on_behalf_of'.",
            ));
        }
    }
    let client = authenticate_client(idp, form, headers, tenant_segment)?;
    // Public clients hold no credential and cannot act as a middle tier (AADSTS7000218).
    require_secret(&client)?;
    let assertion = Secret::new(form.require("assertion")?);
    let scope = form.require("scope")?;
    let claims = verify(idp, assertion.expose(), tenant)?;
    check_audience(&claims, client.app)?;
    let user = delegated_user(idp, &claims, client.app)?;
    let request = parse_scopes(idp, scope, &claims.tid)?;
    let granted = grant_scopes(idp, client.app, &request)?;
    let minted = mint_for_user(idp, &client, user, &claims, &request, &granted, None)?;
    let id_token = if wants(&request, "openid") {
        Some(
            idp.sign_claims(&id_token_claims(idp, user, &claims.tid, &client.app.client_id))
                .map_err(internal)?,
        )
    } else {
        None
    };
    let client_info = (form.get("client_info")? == Some("1")).then(|| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({"uid": user.oid, "utid": claims.tid}).to_string())
    });
    Ok(Issued {
        scope: scope_out(&request, &granted),
        access_token: minted.access_token,
        id_token,
        client_info,
        expires_in: minted.expires_in,
        refresh_token: wants(&request, "offline_access").then(refresh_token),
        issued_token_type: None,
    })
}

fn is_token_type(t: &str) -> bool {
    t == ACCESS_TOKEN_TYPE || t == JWT_TOKEN_TYPE
}

/// RFC 8693 §2.2.2: a subject or actor token that is not acceptable is `invalid_request`
/// (the AADSTS code and text still say why).
fn as_invalid_request(e: EntraError) -> EntraError {
    e.relabel("invalid_request")
}

/// The `scope` to parse for a token exchange and the resource named by `audience`/`resource`,
/// if any. Bare scope names are relative to that resource; no scope means `.default`.
fn exchange_scope<'a>(
    idp: &'a Idp,
    form: &TokenForm,
    tenant: &str,
) -> Result<(String, Option<&'a AppConfig>), EntraError> {
    let mut target: Option<(&str, &AppConfig)> = None;
    for name in form.all("audience").into_iter().chain(form.all("resource")) {
        let app = idp.resource_app(name).ok_or_else(|| {
            EntraError::bad_request(
                "invalid_target",
                500011,
                format!("The resource principal named {name} was not found in the tenant named {tenant}."),
            )
        })?;
        match target {
            Some((_, existing)) if existing.client_id != app.client_id => {
                return Err(EntraError::bad_request(
                    "invalid_target",
                    28000,
                    "The audience and resource parameters name more than one resource; a token is issued for one.",
                ));
            }
            Some(_) => {}
            None => target = Some((name, app)),
        }
    }
    let scope = form.get("scope")?;
    match (target, scope) {
        (None, None) => Err(EntraError::bad_request(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope', 'audience' or 'resource'.",
        )),
        (None, Some(scope)) => Ok((scope.to_owned(), None)),
        (Some((name, app)), scope) => {
            let base = name.trim_end_matches('/');
            let items: Vec<String> = scope
                .unwrap_or(".default")
                .split_ascii_whitespace()
                .map(|item| {
                    let qualified = item.contains('/')
                        || crate::token::OIDC_SCOPES.iter().any(|s| s.eq_ignore_ascii_case(item));
                    if qualified { item.to_owned() } else { format!("{base}/{item}") }
                })
                .collect();
            let items = if items.iter().all(|i| !i.contains('/')) {
                // Only OIDC scopes: the resource's default scope is implied.
                [vec![format!("{base}/.default")], items].concat()
            } else {
                items
            };
            Ok((items.join(" "), Some(app)))
        }
    }
}

/// The `act` claim: the actor token's subject as the current actor, with the subject token's
/// own `act` (earlier actors) nested inside, as RFC 8693 §4.1 describes. The actor's client
/// id (its `azp`/`appid`) is recorded as `client_id` (RFC 8693 §4.3), so a chain names the
/// agent apps that acted.
fn act_claim(actor: &Inbound, prior: Option<&Value>) -> Value {
    let mut act = Map::new();
    let sub = actor.sub.clone().or_else(|| actor.oid.clone()).unwrap_or_default();
    act.insert("sub".into(), sub.into());
    if let Some(client_id) = actor.azp.as_ref().or(actor.appid.as_ref()) {
        act.insert("client_id".into(), client_id.clone().into());
    }
    if let Some(prior) = prior {
        act.insert("act".into(), prior.clone());
    }
    Value::Object(act)
}

/// RFC 8693 token exchange with the same policy as On-Behalf-Of: the subject token must be a
/// user's access token addressed to the requesting (confidential) client.
pub(crate) fn token_exchange_grant(
    idp: &Idp,
    tenant: Option<&TenantConfig>,
    tenant_segment: &str,
    headers: &HeaderMap,
    form: &TokenForm,
) -> Result<Issued, EntraError> {
    let client = authenticate_client(idp, form, headers, tenant_segment)?;
    require_secret(&client)?;
    let subject = Secret::new(form.require("subject_token")?);
    if !is_token_type(form.require("subject_token_type")?) {
        return Err(EntraError::bad_request(
            "invalid_request",
            9002313,
            format!(
                "Invalid request. The subject_token_type is not supported; use '{ACCESS_TOKEN_TYPE}' or '{JWT_TOKEN_TYPE}'."
            ),
        ));
    }
    let actor = form.get("actor_token")?.map(Secret::new);
    match (&actor, form.get("actor_token_type")?) {
        (Some(_), None) => return Err(EntraError::missing("actor_token_type")),
        (None, Some(_)) => {
            return Err(EntraError::bad_request(
                "invalid_request",
                9002313,
                "Invalid request. 'actor_token_type' must not be sent without 'actor_token'.",
            ));
        }
        (Some(_), Some(t)) if !is_token_type(t) => {
            return Err(EntraError::bad_request(
                "invalid_request",
                9002313,
                format!(
                    "Invalid request. The actor_token_type is not supported; use '{ACCESS_TOKEN_TYPE}' or '{JWT_TOKEN_TYPE}'."
                ),
            ));
        }
        _ => {}
    }
    let issued_token_type = match form.get("requested_token_type")? {
        None => ACCESS_TOKEN_TYPE,
        Some(t) if t == ACCESS_TOKEN_TYPE => ACCESS_TOKEN_TYPE,
        Some(t) if t == JWT_TOKEN_TYPE => JWT_TOKEN_TYPE,
        Some(_) => {
            return Err(EntraError::bad_request(
                "invalid_request",
                9002313,
                format!(
                    "Invalid request. The requested_token_type is not supported; use '{ACCESS_TOKEN_TYPE}' or '{JWT_TOKEN_TYPE}'."
                ),
            ));
        }
    };
    let claims = verify(idp, subject.expose(), tenant).map_err(as_invalid_request)?;
    check_audience(&claims, client.app).map_err(as_invalid_request)?;
    let user = delegated_user(idp, &claims, client.app).map_err(as_invalid_request)?;
    let act = match &actor {
        Some(actor) => {
            let actor = verify(idp, actor.expose(), tenant).map_err(as_invalid_request)?;
            // The actor is the requesting client itself (AgentCore's M2M actor token): a
            // client cannot name another app's token as the actor of its exchange.
            let actor_client = actor.azp.as_deref().or(actor.appid.as_deref());
            if !actor_client.is_some_and(|c| c.eq_ignore_ascii_case(&client.app.client_id)) {
                return Err(EntraError::bad_request(
                    "invalid_request",
                    9002313,
                    "Invalid request. The actor_token was not issued to the client presenting it.",
                ));
            }
            Some(act_claim(&actor, claims.act.as_ref()))
        }
        None => claims.act.clone(),
    };
    let (scope, audience_app) = exchange_scope(idp, form, &claims.tid)?;
    let request = parse_scopes(idp, &scope, &claims.tid).map_err(|e| {
        // An unknown resource in `scope` is a target the server will not issue for.
        if e.error() == "invalid_resource" { e.relabel("invalid_target") } else { e }
    })?;
    if let Some(app) = audience_app
        && app.client_id != request.resource.client_id
    {
        return Err(EntraError::bad_request(
            "invalid_target",
            28000,
            "The scope names another resource than the audience or resource parameter.",
        ));
    }
    let granted = grant_scopes(idp, client.app, &request)?;
    let minted = mint_for_user(idp, &client, user, &claims, &request, &granted, act)?;
    Ok(Issued {
        scope: scope_out(&request, &granted),
        access_token: minted.access_token,
        id_token: None,
        client_info: None,
        expires_in: minted.expires_in,
        refresh_token: wants(&request, "offline_access").then(refresh_token),
        issued_token_type: Some(issued_token_type),
    })
}

/// The error answer of a fault that replaces the normal answer (`None` for those that do not).
pub(crate) fn fault_error(fault: &TokenFault) -> Option<EntraError> {
    match fault {
        TokenFault::None | TokenFault::Slow(_) | TokenFault::Hang => None,
        TokenFault::Status5xx(code) => {
            let status = StatusCode::from_u16(*code)
                .ok()
                .filter(StatusCode::is_server_error)
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let error = match status.as_u16() {
                503 | 504 => "temporarily_unavailable",
                _ => "server_error",
            };
            Some(EntraError::new(
                status,
                error,
                90033,
                "A transient error has occurred. Please try again.".into(),
            ))
        }
        TokenFault::ConsentRequired => {
            let mut e = EntraError::bad_request(
                "invalid_grant",
                65001,
                "The user or administrator has not consented to use the application. Send an interactive authorization request for this user and resource.",
            );
            e.suberror = Some("consent_required");
            Some(e)
        }
        TokenFault::InteractionRequired { claims } => {
            let mut e = EntraError::bad_request(
                "interaction_required",
                50079,
                "Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multi-factor authentication to access the resource.",
            );
            e.claims = Some(claims.clone());
            Some(e)
        }
    }
}
