//! HTTP routes: discovery (v1, v2), JWKS, home-realm lookup, token endpoint.

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::exchange::fault_error;
use crate::token::{EntraError, TokenForm, dispatch_grant};
use crate::{Idp, JWT_BEARER_GRANT, Outage, TOKEN_EXCHANGE_GRANT, TokenFault};

pub(crate) fn router(idp: Idp) -> Router {
    Router::new()
        .route("/common/userrealm/{user}", get(user_realm))
        .route("/{tenant}/v2.0/.well-known/openid-configuration", get(discovery_v2))
        .route("/{tenant}/.well-known/openid-configuration", get(discovery_v1))
        .route("/{tenant}/discovery/v2.0/keys", get(jwks_v2))
        .route("/{tenant}/discovery/keys", get(jwks_v1))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .with_state(idp)
}

/// The `{tenant}` path segment resolved: a concrete tenant id, or the multi-tenant template.
enum TenantRef {
    Id(String),
    Common(String),
}

fn resolve(idp: &Idp, segment: &str) -> Result<TenantRef, EntraError> {
    match segment {
        "common" | "organizations" | "consumers" => Ok(TenantRef::Common(segment.to_owned())),
        other => idp
            .tenant(other)
            .map(|t| TenantRef::Id(t.id.clone()))
            .ok_or_else(|| EntraError::unknown_tenant(other)),
    }
}

/// Applies the configured outage. `None` means: serve normally.
async fn outage(idp: &Idp) -> Option<Response> {
    match idp.outage() {
        Outage::None => None,
        Outage::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            Some(
                EntraError::new(
                    status,
                    "temporarily_unavailable",
                    90033,
                    "A transient error has occurred. Please try again.".into(),
                )
                .into_response(),
            )
        }
        Outage::Hang => std::future::pending().await,
    }
}

fn discovery_document(idp: &Idp, segment: &str, v2: bool) -> Result<serde_json::Value, EntraError> {
    let base = idp.base_url();
    // Entra names the resolved tenant id in endpoints (a domain segment becomes the GUID) and
    // keeps `common`/`organizations` as given, with the `{tenantid}` template as issuer.
    let (path_tenant, issuer_tenant) = match resolve(idp, segment)? {
        TenantRef::Id(id) => (id.clone(), id),
        TenantRef::Common(name) => (name, "{tenantid}".to_owned()),
    };
    let t = &path_tenant;
    let doc = if v2 {
        json!({
            "token_endpoint": format!("{base}/{t}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{base}/{t}/discovery/v2.0/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": idp.issuer(&issuer_tenant),
            "request_uri_parameter_supported": false,
            "userinfo_endpoint": format!("{base}/oidc/userinfo"),
            "authorization_endpoint": format!("{base}/{t}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{base}/{t}/oauth2/v2.0/devicecode"),
            "http_logout_supported": true,
            "frontchannel_logout_supported": true,
            "end_session_endpoint": format!("{base}/{t}/oauth2/v2.0/logout"),
            "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
            "kerberos_endpoint": format!("{base}/{t}/kerberos"),
            "tenant_region_scope": "NA",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        })
    } else {
        json!({
            "token_endpoint": format!("{base}/{t}/oauth2/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{base}/{t}/discovery/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
            "scopes_supported": ["openid"],
            "issuer": idp.issuer_v1(&issuer_tenant),
            "microsoft_multi_refresh_token": true,
            "authorization_endpoint": format!("{base}/{t}/oauth2/authorize"),
            "device_authorization_endpoint": format!("{base}/{t}/oauth2/devicecode"),
            "http_logout_supported": true,
            "frontchannel_logout_supported": true,
            "end_session_endpoint": format!("{base}/{t}/oauth2/logout"),
            "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "amr", "nonce", "email", "given_name", "family_name", "nickname"],
            "check_session_iframe": format!("{base}/{t}/oauth2/checksession"),
            "userinfo_endpoint": format!("{base}/{t}/openid/userinfo"),
            "kerberos_endpoint": format!("{base}/{t}/kerberos"),
            "tenant_region_scope": "NA",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        })
    };
    Ok(doc)
}

async fn discovery(idp: &Idp, segment: &str, headers: &HeaderMap, v2: bool) -> Response {
    idp.count_discovery();
    if let Some(down) = outage(idp).await {
        return down;
    }
    match discovery_document(idp, segment, v2) {
        Ok(doc) => {
            let mut response = axum::Json(doc).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=86400, private"));
            response
        }
        Err(e) => e.with_correlation(headers).into_response(),
    }
}

async fn discovery_v2(State(idp): State<Idp>, Path(tenant): Path<String>, headers: HeaderMap) -> Response {
    discovery(&idp, &tenant, &headers, true).await
}

async fn discovery_v1(State(idp): State<Idp>, Path(tenant): Path<String>, headers: HeaderMap) -> Response {
    discovery(&idp, &tenant, &headers, false).await
}

async fn jwks(idp: &Idp, segment: &str, headers: &HeaderMap, v2: bool) -> Response {
    idp.count_jwks();
    if let Some(down) = outage(idp).await {
        return down;
    }
    let issuer_tenant = match resolve(idp, segment) {
        Ok(TenantRef::Id(id)) => id,
        Ok(TenantRef::Common(_)) => "{tenantid}".to_owned(),
        Err(e) => return e.with_correlation(headers).into_response(),
    };
    // v2 key documents carry each key's `issuer` (the template for `common`); v1 ones do not.
    let issuer = v2.then(|| idp.issuer(&issuer_tenant));
    let mut response = axum::Json(idp.jwks_json(issuer.as_deref())).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("max-age={}, private", idp.jwks_max_age())) {
        response.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    response
}

async fn jwks_v2(State(idp): State<Idp>, Path(tenant): Path<String>, headers: HeaderMap) -> Response {
    jwks(&idp, &tenant, &headers, true).await
}

async fn jwks_v1(State(idp): State<Idp>, Path(tenant): Path<String>, headers: HeaderMap) -> Response {
    jwks(&idp, &tenant, &headers, false).await
}

/// MSAL asks this before a password sign-in: "Managed" means the password goes to the token
/// endpoint (not to a federated WS-Trust IdP).
async fn user_realm(State(idp): State<Idp>, Path(user): Path<String>) -> Response {
    let domain = user.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    let body = match idp.tenant(domain) {
        Some(t) => json!({
            "ver": "1.0",
            "account_type": "Managed",
            "domain_name": t.domain,
            "cloud_instance_name": "microsoftonline.com",
            "cloud_audience_urn": "urn:federation:MicrosoftOnline",
        }),
        None => json!({
            "ver": "1.0",
            "account_type": "Unknown",
            "cloud_instance_name": "microsoftonline.com",
        }),
    };
    axum::Json(body).into_response()
}

async fn token(
    State(idp): State<Idp>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let Ok(Form(pairs)) = form else {
        idp.count_token("");
        return EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.".into(),
        )
        .with_correlation(&headers)
        .into_response();
    };
    let form = TokenForm::new(pairs);
    let grant_type = match form.get("grant_type") {
        Ok(g) => g.unwrap_or_default().to_owned(),
        Err(e) => return e.with_correlation(&headers).into_response(),
    };
    // Counted before anything can fail, so tests see every request that reached the IdP.
    idp.count_token(&grant_type);
    if matches!(grant_type.as_str(), JWT_BEARER_GRANT | TOKEN_EXCHANGE_GRANT) {
        match idp.take_token_fault() {
            TokenFault::None => {}
            TokenFault::Slow(delay) => tokio::time::sleep(delay).await,
            TokenFault::Hang => std::future::pending::<()>().await,
            fault => {
                if let Some(e) = fault_error(&fault) {
                    return e.with_correlation(&headers).into_response();
                }
            }
        }
    }
    match dispatch_grant(&idp, &tenant, &headers, &form) {
        Ok(issued) => issued.into_response(),
        Err(e) => e.with_correlation(&headers).into_response(),
    }
}
