//! The token endpoint: grant dispatch, client authentication, scope parsing, token claims and
//! Entra-shaped errors.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use delegate_secret::Secret;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::{
    AppConfig, Idp, IdpError, JWT_BEARER_GRANT, TOKEN_EXCHANGE_GRANT, TenantConfig, UserConfig, random_id,
    time,
};

/// Which Entra access-token format to produce (chosen by the resource app in real Entra).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenVersion {
    /// v1.0: `iss` `https://sts.windows.net/{tid}/`, `appid`, `upn`, `aud` as requested.
    V1,
    /// v2.0: `iss` `{base}/{tid}/v2.0`, `azp`, `preferred_username`, `aud` = client id GUID.
    V2,
}

/// Everything that decides an access token's claims.
#[derive(Clone, Debug)]
pub struct TokenSpec {
    /// Tenant id (`tid`).
    pub tenant: String,
    /// Username for a delegated token; `None` for an app-only token.
    pub user: Option<String>,
    /// The client the token is issued to (`azp` / `appid`).
    pub client_id: String,
    /// `aud`.
    pub audience: String,
    /// Delegated scope names (`scp`).
    pub scopes: Vec<String>,
    /// App roles (`roles`).
    pub roles: Vec<String>,
    /// Token format.
    pub version: TokenVersion,
    /// `exp - iat`.
    pub lifetime: Duration,
    /// Whether the client authenticated with a secret (`azpacr`/`appidacr` "1", else "0").
    pub client_authenticated: bool,
}

/// Entra's `sub`: pairwise per (user, app), stable, opaque.
fn pairwise_sub(oid: &str, app: &str) -> String {
    let digest = Sha256::digest(format!("{oid}|{app}").as_bytes());
    URL_SAFE_NO_PAD.encode(digest)
}

pub(crate) fn access_token_claims(idp: &Idp, spec: &TokenSpec) -> Result<Map<String, Value>, IdpError> {
    let now = time::now();
    let exp = now.saturating_add(spec.lifetime.as_secs());
    let user = match &spec.user {
        Some(name) => Some(idp.find_user(name)?),
        None => None,
    };
    let acr = if spec.client_authenticated { "1" } else { "0" };
    let resource_app_id = idp
        .resource_app(&spec.audience)
        .map(|a| a.client_id.clone())
        .unwrap_or_else(|| spec.audience.clone());
    let mut c = Map::new();
    let v2 = spec.version == TokenVersion::V2;
    c.insert("aud".into(), spec.audience.clone().into());
    c.insert("iss".into(), if v2 { idp.issuer(&spec.tenant) } else { idp.issuer_v1(&spec.tenant) }.into());
    c.insert("iat".into(), now.into());
    c.insert("nbf".into(), now.into());
    c.insert("exp".into(), exp.into());
    if v2 {
        c.insert("azp".into(), spec.client_id.clone().into());
        c.insert("azpacr".into(), acr.into());
    } else {
        c.insert("appid".into(), spec.client_id.clone().into());
        c.insert("appidacr".into(), acr.into());
    }
    match user {
        Some(u) => {
            if !v2 {
                c.insert("amr".into(), json!(["pwd"]));
            }
            c.insert("name".into(), u.display_name.clone().into());
            c.insert("oid".into(), u.oid.clone().into());
            if v2 {
                c.insert("preferred_username".into(), u.username.clone().into());
            } else {
                c.insert("upn".into(), u.username.clone().into());
                c.insert("unique_name".into(), u.username.clone().into());
            }
            c.insert("scp".into(), spec.scopes.join(" ").into());
            c.insert("sub".into(), pairwise_sub(&u.oid, &resource_app_id).into());
        }
        None => {
            let oid = idp
                .app(&spec.client_id)
                .map(|a| a.object_id.clone())
                .unwrap_or_else(|| spec.client_id.clone());
            c.insert("oid".into(), oid.clone().into());
            c.insert("sub".into(), oid.into());
            c.insert("idtyp".into(), "app".into());
        }
    }
    if !spec.roles.is_empty() {
        c.insert("roles".into(), json!(spec.roles));
    }
    c.insert("tid".into(), spec.tenant.clone().into());
    c.insert("uti".into(), random_id().into());
    c.insert("ver".into(), if v2 { "2.0" } else { "1.0" }.into());
    Ok(c)
}

pub(crate) fn id_token_claims(
    idp: &Idp,
    user: &UserConfig,
    tenant: &str,
    client: &str,
) -> Map<String, Value> {
    let now = time::now();
    let exp = now.saturating_add(idp.config().token_lifetime_seconds);
    let mut c = Map::new();
    c.insert("aud".into(), client.into());
    c.insert("iss".into(), idp.issuer(tenant).into());
    c.insert("iat".into(), now.into());
    c.insert("nbf".into(), now.into());
    c.insert("exp".into(), exp.into());
    c.insert("name".into(), user.display_name.clone().into());
    c.insert("oid".into(), user.oid.clone().into());
    c.insert("preferred_username".into(), user.username.clone().into());
    c.insert("sub".into(), pairwise_sub(&user.oid, client).into());
    c.insert("tid".into(), tenant.into());
    c.insert("uti".into(), random_id().into());
    c.insert("ver".into(), "2.0".into());
    c
}

// ---------------------------------------------------------------- errors

/// An error answer in Entra's shape. Descriptions never contain a token, secret or assertion
/// (only ids, scope names and times), so the value is safe to log.
#[derive(Debug)]
pub(crate) struct EntraError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: String,
    pub(crate) suberror: Option<&'static str>,
    /// A claims challenge (JSON object text), sent string-encoded as Entra does.
    pub(crate) claims: Option<String>,
    correlation_id: Option<String>,
}

impl EntraError {
    pub(crate) fn new(status: StatusCode, error: &'static str, code: u32, description: String) -> Self {
        Self { status, error, code, description, suberror: None, claims: None, correlation_id: None }
    }

    /// The OAuth `error` value (for tests and for re-labelling, e.g. RFC 8693 `invalid_request`).
    pub(crate) fn error(&self) -> &'static str {
        self.error
    }

    /// The same error with another OAuth `error` value (the AADSTS code and text stay).
    pub(crate) fn relabel(mut self, error: &'static str) -> Self {
        self.error = error;
        self
    }

    pub(crate) fn bad_request(error: &'static str, code: u32, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, code, description.into())
    }

    pub(crate) fn missing(parameter: &str) -> Self {
        Self::bad_request(
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{parameter}'."),
        )
    }

    pub(crate) fn invalid_client(code: u32, description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", code, description.into())
    }

    pub(crate) fn unknown_tenant(tenant: &str) -> Self {
        Self::bad_request(
            "invalid_tenant",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        )
    }

    pub(crate) fn with_correlation(mut self, headers: &HeaderMap) -> Self {
        self.correlation_id = headers
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 64)
            .map(str::to_owned);
        self
    }
}

impl IntoResponse for EntraError {
    fn into_response(self) -> Response {
        let now = time::now();
        let timestamp = time::entra_timestamp(now);
        let trace_id = uuid::Uuid::new_v4().to_string();
        let correlation_id = self.correlation_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut body = json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
                self.code, self.description
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        if let Some(map) = body.as_object_mut() {
            if let Some(sub) = self.suberror {
                map.insert("suberror".into(), sub.into());
            }
            if let Some(claims) = self.claims {
                map.insert("claims".into(), claims.into());
            }
        }
        let mut response = (self.status, Json(body)).into_response();
        no_store(response.headers_mut());
        if let Ok(v) = HeaderValue::from_str(&correlation_id) {
            response.headers_mut().insert("client-request-id", v);
        }
        response
    }
}

fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store, no-cache"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

// ---------------------------------------------------------------- request parsing

/// The form body, keeping every occurrence so duplicates can be refused.
pub(crate) struct TokenForm(Vec<(String, String)>);

impl TokenForm {
    pub(crate) fn new(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    /// The single value of `name`; a repeated parameter is an error, as in Entra.
    pub(crate) fn get(&self, name: &str) -> Result<Option<&str>, EntraError> {
        let mut values = self.0.iter().filter(|(k, _)| k == name);
        let first = values.next().map(|(_, v)| v.as_str());
        if values.next().is_some() {
            return Err(EntraError::bad_request(
                "invalid_request",
                90015,
                format!("Requested query string is too long or the parameter '{name}' is duplicated."),
            ));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }

    pub(crate) fn require(&self, name: &str) -> Result<&str, EntraError> {
        self.get(name)?.ok_or_else(|| EntraError::missing(name))
    }

    /// Every non-empty value of a repeatable parameter (RFC 8693 `audience`, `resource`).
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.as_str()).collect()
    }
}

/// Scopes that are not a resource's: they shape the response, not the access token.
pub(crate) const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "offline_access", "email"];

/// A parsed `scope` parameter: OIDC scopes plus the scopes of exactly one resource.
pub(crate) struct ScopeRequest<'a> {
    pub(crate) oidc: Vec<&'a str>,
    pub(crate) resource: &'a AppConfig,
    /// The resource identifier as the client wrote it (v1 `aud`).
    pub(crate) resource_identifier: String,
    /// Bare scope names, or `[".default"]`.
    pub(crate) names: Vec<String>,
}

pub(crate) fn parse_scopes<'a>(
    idp: &'a Idp,
    scope: &'a str,
    tenant: &str,
) -> Result<ScopeRequest<'a>, EntraError> {
    let mut oidc = Vec::new();
    let mut resource: Option<(String, &AppConfig)> = None;
    let mut names: Vec<String> = Vec::new();
    for item in scope.split_ascii_whitespace() {
        if OIDC_SCOPES.iter().any(|s| s.eq_ignore_ascii_case(item)) {
            if !oidc.contains(&item) {
                oidc.push(item);
            }
            continue;
        }
        // `api://id/name`, `https://host/name`, `{guid}/name`, `{resource}/.default`.
        let Some((identifier, name)) = item.rsplit_once('/').filter(|(r, n)| !r.is_empty() && !n.is_empty())
        else {
            // A bare name means a Microsoft Graph scope in Entra; there is no Graph here.
            return Err(EntraError::bad_request(
                "invalid_scope",
                70011,
                format!(
                    "The provided value for the input parameter 'scope' is not valid. The scope {item} is not valid."
                ),
            ));
        };
        let app = idp.resource_app(identifier).ok_or_else(|| {
            EntraError::bad_request(
                "invalid_resource",
                500011,
                format!(
                    "The resource principal named {identifier} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
                ),
            )
        })?;
        match &resource {
            Some((_, existing)) if existing.client_id != app.client_id => {
                return Err(EntraError::bad_request(
                    "invalid_scope",
                    28000,
                    "Provided value for the input parameter scope is not valid because it contains more than one resource.",
                ));
            }
            Some(_) => {}
            None => resource = Some((identifier.to_owned(), app)),
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    let Some((resource_identifier, resource)) = resource else {
        return Err(EntraError::bad_request(
            "invalid_scope",
            70011,
            "The provided value for the input parameter 'scope' is not valid. No resource scope was requested.",
        ));
    };
    if names.iter().any(|n| n == ".default") && names.len() > 1 {
        return Err(EntraError::bad_request(
            "invalid_scope",
            70011,
            "The provided value for the input parameter 'scope' is not valid. '.default' cannot be combined with other scopes of the resource.",
        ));
    }
    Ok(ScopeRequest { oidc, resource, resource_identifier, names })
}

/// How the client proved who it is.
pub(crate) struct Client<'a> {
    pub(crate) app: &'a AppConfig,
    pub(crate) authenticated: bool,
    /// Authenticated with a certificate (`client_assertion`): `azpacr`/`appidacr` "2".
    pub(crate) certificate: bool,
}

/// Marks a token issued to a certificate-authenticated client as Entra does (`azpacr` or
/// `appidacr` "2"; `access_token_claims` only knows "0" and "1").
pub(crate) fn mark_client_acr(claims: &mut Map<String, Value>, client: &Client<'_>) {
    if client.certificate {
        for name in ["azpacr", "appidacr"] {
            if claims.contains_key(name) {
                claims.insert(name.into(), "2".into());
            }
        }
    }
}

pub(crate) fn authenticate_client<'a>(
    idp: &'a Idp,
    form: &TokenForm,
    headers: &HeaderMap,
    tenant: &str,
) -> Result<Client<'a>, EntraError> {
    // client_secret_basic (RFC 6749 §2.3.1) or client_secret_post.
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| pair.split_once(':').map(|(id, secret)| (id.to_owned(), Secret::new(secret))));
    let form_id = form.get("client_id")?;
    let form_secret = form.get("client_secret")?.map(Secret::new);
    let (client_id, secret) = match (basic, form_id) {
        (Some((id, _)), Some(f)) if id != f => {
            return Err(EntraError::bad_request(
                "invalid_request",
                90014,
                "The client_id in the Authorization header does not match the one in the request body.",
            ));
        }
        (Some((id, secret)), _) => (id, Some(secret)),
        (None, Some(id)) => (id.to_owned(), form_secret),
        (None, None) => return Err(EntraError::missing("client_id")),
    };
    let client_assertion = form.get("client_assertion")?;
    let app = idp.app(&client_id).ok_or_else(|| {
        EntraError::bad_request(
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
            ),
        )
    })?;
    if let Some(assertion) = client_assertion {
        if secret.is_some() {
            return Err(EntraError::bad_request(
                "invalid_request",
                9002313,
                "Invalid request. Send one client credential: 'client_secret' or 'client_assertion', not both.",
            ));
        }
        match form.get("client_assertion_type")? {
            Some(crate::client_cert::CLIENT_ASSERTION_TYPE) => {}
            None => return Err(EntraError::missing("client_assertion_type")),
            Some(_) => {
                return Err(EntraError::bad_request(
                    "invalid_request",
                    9002313,
                    format!(
                        "Invalid request. 'client_assertion_type' must be '{}'.",
                        crate::client_cert::CLIENT_ASSERTION_TYPE
                    ),
                ));
            }
        }
        // The assertion's audience: this token endpoint (as called, or by tenant id) or the
        // tenant's issuer.
        let mut audiences = vec![idp.token_endpoint(tenant)];
        if let Some(t) = idp.tenant(tenant) {
            audiences.extend([idp.token_endpoint(&t.id), idp.token_endpoint(&t.domain), idp.issuer(&t.id)]);
        }
        crate::client_cert::verify_client_assertion(app, assertion, &audiences)?;
        return Ok(Client { app, authenticated: true, certificate: true });
    }
    match (secret, &app.client_secret) {
        (Some(given), Some(expected)) if expected.matches(given.expose()) => {
            Ok(Client { app, authenticated: true, certificate: false })
        }
        (Some(_), _) => Err(EntraError::invalid_client(
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
        )),
        (None, _) => Ok(Client { app, authenticated: false, certificate: false }),
    }
}

pub(crate) fn require_secret(client: &Client<'_>) -> Result<(), EntraError> {
    if client.authenticated {
        Ok(())
    } else {
        Err(EntraError::invalid_client(
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ))
    }
}

// ---------------------------------------------------------------- grants

/// What a successful grant returns.
pub(crate) struct Issued {
    pub(crate) scope: String,
    pub(crate) access_token: Secret,
    pub(crate) id_token: Option<Secret>,
    pub(crate) client_info: Option<String>,
    pub(crate) expires_in: u64,
    /// Only when `offline_access` was granted (the devstack IdP cannot redeem it).
    pub(crate) refresh_token: Option<Secret>,
    /// RFC 8693 answers carry `issued_token_type` (and no Entra `ext_expires_in`).
    pub(crate) issued_token_type: Option<&'static str>,
}

impl IntoResponse for Issued {
    fn into_response(self) -> Response {
        let mut body = json!({
            "token_type": "Bearer",
            "scope": self.scope,
            "expires_in": self.expires_in,
            "access_token": self.access_token.expose(),
        });
        if let Some(map) = body.as_object_mut() {
            match self.issued_token_type {
                Some(t) => map.insert("issued_token_type".into(), t.into()),
                None => map.insert("ext_expires_in".into(), self.expires_in.into()),
            };
            if let Some(rt) = &self.refresh_token {
                map.insert("refresh_token".into(), rt.expose().into());
            }
            if let Some(id) = &self.id_token {
                map.insert("id_token".into(), id.expose().into());
            }
            if let Some(ci) = self.client_info {
                map.insert("client_info".into(), ci.into());
            }
        }
        let mut response = (StatusCode::OK, Json(body)).into_response();
        no_store(response.headers_mut());
        response
    }
}

/// The grant dispatch: one arm per `grant_type`. The caller has counted the request (see
/// `server::token`) and applied any test fault.
pub(crate) fn dispatch_grant(
    idp: &Idp,
    tenant_segment: &str,
    headers: &HeaderMap,
    form: &TokenForm,
) -> Result<Issued, EntraError> {
    let grant_type = form.get("grant_type")?.unwrap_or_default();
    // Entra accepts a tenant id, a verified domain, or `common`/`organizations` (the tenant
    // then comes from the user).
    let tenant = match tenant_segment {
        "common" | "organizations" => None,
        other => Some(idp.tenant(other).ok_or_else(|| EntraError::unknown_tenant(other))?),
    };
    match grant_type {
        "" => Err(EntraError::missing("grant_type")),
        "password" => password_grant(idp, tenant, tenant_segment, headers, form),
        "client_credentials" => client_credentials_grant(idp, tenant, tenant_segment, headers, form),
        JWT_BEARER_GRANT => crate::exchange::on_behalf_of_grant(idp, tenant, tenant_segment, headers, form),
        TOKEN_EXCHANGE_GRANT => {
            crate::exchange::token_exchange_grant(idp, tenant, tenant_segment, headers, form)
        }
        "refresh_token"
        | "authorization_code"
        | "urn:ietf:params:oauth:grant-type:device_code"
        | "implicit" => Err(unsupported(grant_type)),
        other => Err(unsupported(other)),
    }
}

fn unsupported(grant_type: &str) -> EntraError {
    EntraError::bad_request(
        "unsupported_grant_type",
        70003,
        format!("The app requested an unsupported grant type '{grant_type}'."),
    )
}

fn password_grant(
    idp: &Idp,
    tenant: Option<&TenantConfig>,
    tenant_segment: &str,
    headers: &HeaderMap,
    form: &TokenForm,
) -> Result<Issued, EntraError> {
    let client = authenticate_client(idp, form, headers, tenant_segment)?;
    if !client.authenticated && !client.app.public_client {
        require_secret(&client)?;
    }
    let username = form.require("username")?;
    let password = Secret::new(form.require("password")?);
    let scope = form.require("scope")?;
    let user = idp.find_user(username).ok().filter(|u| match tenant {
        Some(t) => idp.user_tenant(u) == t.id,
        None => true,
    });
    let Some(user) = user else {
        let directory = tenant.map_or(tenant_segment, |t| t.id.as_str());
        return Err(EntraError::bad_request(
            "invalid_grant",
            50034,
            format!(
                "The user account {{EmailHidden}} does not exist in the {directory} directory. To sign into this application, the account must be added to the directory."
            ),
        ));
    };
    if !user.password.matches(password.expose()) {
        return Err(EntraError::bad_request(
            "invalid_grant",
            50126,
            "Error validating credentials due to invalid username or password.",
        ));
    }
    let tenant_id = idp.user_tenant(user).to_owned();
    let request = parse_scopes(idp, scope, &tenant_id)?;
    let granted = grant_scopes(idp, client.app, &request)?;
    let version =
        if request.resource.access_token_version == 1 { TokenVersion::V1 } else { TokenVersion::V2 };
    let lifetime = Duration::from_secs(idp.config().token_lifetime_seconds);
    let spec = TokenSpec {
        tenant: tenant_id.clone(),
        user: Some(user.username.clone()),
        client_id: client.app.client_id.clone(),
        audience: match version {
            TokenVersion::V2 => request.resource.client_id.clone(),
            TokenVersion::V1 => request.resource_identifier.clone(),
        },
        scopes: granted.clone(),
        roles: Vec::new(),
        version,
        lifetime,
        client_authenticated: client.authenticated,
    };
    let mut claims = access_token_claims(idp, &spec).map_err(internal)?;
    mark_client_acr(&mut claims, &client);
    let access_token = idp.sign_claims(&claims).map_err(internal)?;
    let wants_id_token = request.oidc.iter().any(|s| s.eq_ignore_ascii_case("openid"));
    let id_token = if wants_id_token {
        Some(
            idp.sign_claims(&id_token_claims(idp, user, &tenant_id, &client.app.client_id))
                .map_err(internal)?,
        )
    } else {
        None
    };
    let client_info = (form.get("client_info")? == Some("1"))
        .then(|| URL_SAFE_NO_PAD.encode(json!({"uid": user.oid, "utid": tenant_id}).to_string()));
    let mut scope_out: Vec<String> =
        granted.iter().map(|s| format!("{}/{s}", request.resource_identifier)).collect();
    // No refresh tokens are issued (no refresh grant yet), so `offline_access` is not echoed.
    scope_out.extend(
        request.oidc.iter().filter(|s| !s.eq_ignore_ascii_case("offline_access")).map(|s| (*s).to_owned()),
    );
    Ok(Issued {
        scope: scope_out.join(" "),
        access_token,
        id_token,
        client_info,
        expires_in: lifetime.as_secs(),
        refresh_token: None,
        issued_token_type: None,
    })
}

/// The delegated scopes `client` gets for `request`: the named scopes, which the resource must
/// expose (else AADSTS70011), or for `.default` every consented scope; all of them need admin
/// consent for the client (else AADSTS65001 `consent_required`).
pub(crate) fn grant_scopes(
    idp: &Idp,
    client: &AppConfig,
    request: &ScopeRequest<'_>,
) -> Result<Vec<String>, EntraError> {
    let consented: Vec<String> = idp
        .config()
        .consents
        .iter()
        .filter(|c| {
            c.client_id.eq_ignore_ascii_case(&client.client_id)
                && c.resource.eq_ignore_ascii_case(&request.resource.client_id)
        })
        .flat_map(|c| c.scopes.iter().cloned())
        .collect();
    let granted: Vec<String> = if request.names == [".default"] {
        consented.clone()
    } else {
        for name in &request.names {
            if !request.resource.scopes.iter().any(|s| s == name) {
                return Err(EntraError::bad_request(
                    "invalid_scope",
                    70011,
                    format!(
                        "The provided value for the input parameter 'scope' is not valid. The scope '{}/{name}' does not exist on the resource.",
                        request.resource_identifier
                    ),
                ));
            }
        }
        request.names.clone()
    };
    if granted.is_empty() || granted.iter().any(|s| !consented.contains(s)) {
        let mut e = EntraError::bad_request(
            "invalid_grant",
            65001,
            format!(
                "The user or administrator has not consented to use the application with ID '{}' named '{}'. Send an interactive authorization request for this user and resource.",
                client.client_id, client.name
            ),
        );
        e.suberror = Some("consent_required");
        return Err(e);
    }
    Ok(granted)
}

fn client_credentials_grant(
    idp: &Idp,
    tenant: Option<&TenantConfig>,
    tenant_segment: &str,
    headers: &HeaderMap,
    form: &TokenForm,
) -> Result<Issued, EntraError> {
    let client = authenticate_client(idp, form, headers, tenant_segment)?;
    require_secret(&client)?;
    let Some(tenant) = tenant else {
        return Err(EntraError::bad_request(
            "invalid_request",
            700016,
            format!(
                "The client credentials grant needs a tenant-specific endpoint, not '/{tenant_segment}'."
            ),
        ));
    };
    let scope = form.require("scope")?;
    let request = parse_scopes(idp, scope, &tenant.id)?;
    if request.names != [".default"] || !request.oidc.is_empty() {
        return Err(EntraError::bad_request(
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        ));
    }
    let roles: Vec<String> = idp
        .config()
        .app_role_assignments
        .iter()
        .filter(|a| {
            a.client_id.eq_ignore_ascii_case(&client.app.client_id)
                && a.resource.eq_ignore_ascii_case(&request.resource.client_id)
        })
        .flat_map(|a| a.roles.iter().cloned())
        .collect();
    let version =
        if request.resource.access_token_version == 1 { TokenVersion::V1 } else { TokenVersion::V2 };
    let lifetime = Duration::from_secs(idp.config().token_lifetime_seconds);
    let spec = TokenSpec {
        tenant: tenant.id.clone(),
        user: None,
        client_id: client.app.client_id.clone(),
        audience: match version {
            TokenVersion::V2 => request.resource.client_id.clone(),
            TokenVersion::V1 => request.resource_identifier.clone(),
        },
        scopes: Vec::new(),
        roles,
        version,
        lifetime,
        client_authenticated: true,
    };
    let mut claims = access_token_claims(idp, &spec).map_err(internal)?;
    mark_client_acr(&mut claims, &client);
    let access_token = idp.sign_claims(&claims).map_err(internal)?;
    Ok(Issued {
        scope: format!("{}/.default", request.resource_identifier),
        access_token,
        id_token: None,
        client_info: None,
        expires_in: lifetime.as_secs(),
        refresh_token: None,
        issued_token_type: None,
    })
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(internal)`
pub(crate) fn internal(error: IdpError) -> EntraError {
    tracing::error!(%error, "devstack IdP could not issue a token");
    EntraError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "temporarily_unavailable",
        90033,
        "A transient error has occurred. Please try again.".into(),
    )
}
