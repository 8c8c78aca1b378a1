//! AgentCore Runtime front door stand-in: the public endpoint
//! `https://bedrock-agentcore.{region}.amazonaws.com/runtimes/{url-encoded ARN}/invocations?qualifier=DEFAULT`
//! of a runtime configured with a `customJWTAuthorizer`, in front of one container.
//!
//! What it does, in order, for `POST …/invocations` (protocols.md §7.4, §7.6, §7.7):
//!
//! 1. route: an unknown runtime ARN or qualifier is `404 ResourceNotFoundException`; any other
//!    path is `403 MissingAuthenticationTokenException` ("Missing Authentication Token");
//! 2. inbound auth: a SigV4 `Authorization` is `403 AccessDeniedException` ("Authorization method
//!    mismatch"); no bearer token is `401 UnauthorizedException` with
//!    `WWW-Authenticate: Bearer resource_metadata="…"` (RFC 9728); a token that fails the
//!    authorizer (signature against the discovery document's `jwks_uri`, `iss`, `exp`/`nbf`,
//!    `allowedAudience`, `allowedClients`, `allowedScopes`, `customClaims`) is 401 or, if so
//!    configured, 403 (sources conflict);
//! 3. workload identity: the validated JWT is exchanged for a workload access token at the
//!    AgentCore Identity data plane (`POST /identities/GetWorkloadAccessTokenForJWT`, over HTTP,
//!    as the real service does);
//! 4. forwarding: the container's `POST /invocations` gets the body, the session id (the caller's
//!    or a generated one), a request id, `WorkloadAccessToken`, the tracing headers, the content
//!    type and accept headers, and only the allow-listed caller headers; everything else the
//!    caller sent (including a `WorkloadAccessToken` of its own) is dropped;
//! 5. answer: a 2xx/3xx container answer streams back unbuffered (SSE passes through as it is
//!    produced); a 4xx/5xx answer, or a container that cannot be reached, is
//!    `424 RuntimeClientError`.
//!
//! Nothing here logs a token: not the caller's JWT, not the workload access token.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use delegate_secret::Secret;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Session id header (caller → front door → container, and back on the response).
pub const SESSION_ID_HEADER: &str = "x-amzn-bedrock-agentcore-runtime-session-id";
/// Per-request id header the container receives.
pub const REQUEST_ID_HEADER: &str = "x-amzn-bedrock-agentcore-runtime-request-id";
/// The workload access token header the container receives.
pub const WORKLOAD_ACCESS_TOKEN_HEADER: &str = "workloadaccesstoken";
/// Prefix of the custom headers a runtime may allow-list.
pub const CUSTOM_HEADER_PREFIX: &str = "x-amzn-bedrock-agentcore-runtime-custom-";
/// The IAM-caller user id header; not a JWT-mode feature, never forwarded here.
pub const USER_ID_HEADER: &str = "x-amzn-bedrock-agentcore-runtime-user-id";
/// Tracing headers the service passes to the container without allow-listing.
pub const TRACING_HEADERS: [&str; 4] = ["traceparent", "tracestate", "baggage", "x-amzn-trace-id"];
/// Most headers a `requestHeaderAllowlist` may name.
pub const MAX_ALLOWLIST: usize = 20;
/// Largest value of an allow-listed header that is forwarded.
pub const MAX_HEADER_VALUE_BYTES: usize = 4 * 1024;
/// Largest request payload (the service's limit).
pub const MAX_PAYLOAD_BYTES: usize = 100 * 1024 * 1024;

/// Header names that can never be allow-listed (besides every `x-amz-*` and every `x-amzn-*`
/// outside [`CUSTOM_HEADER_PREFIX`]): hop-by-hop, routing, content negotiation and cookies.
const RESTRICTED: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "cookie",
    "set-cookie",
    "origin",
    "referer",
    "expect",
    "via",
    "forwarded",
    "content-length",
    "date",
    "user-agent",
    "workloadaccesstoken",
    "oauth2callbackurl",
];
const RESTRICTED_PREFIXES: &[&str] = &["content-", "accept", "x-forwarded-", "sec-", "x-amz-"];

/// `authorizerConfiguration` as the AgentCore control plane API takes it
/// (`{"customJWTAuthorizer":{…}}`); unknown fields are refused, as the API refuses them (the
/// article's `allowedAudiences` is one).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizerConfiguration {
    /// The JWT authorizer.
    #[serde(rename = "customJWTAuthorizer")]
    pub custom_jwt_authorizer: CustomJwtAuthorizer,
}

/// `CustomJWTAuthorizerConfiguration`: how the front door validates the caller's bearer token.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomJwtAuthorizer {
    /// OIDC discovery document (`…/.well-known/openid-configuration`): `issuer` and `jwks_uri`.
    pub discovery_url: String,
    /// At least one `aud` value must be one of these (when non-empty).
    #[serde(default)]
    pub allowed_audience: Vec<String>,
    /// The `client_id` claim must be one of these (when non-empty). Entra access tokens carry
    /// no `client_id` (they have `azp`/`appid`), so an Entra token never passes a non-empty list.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    /// At least one of these must be in the space-separated `scope` claim (when non-empty).
    /// Entra puts delegated scopes in `scp`, so this never matches an Entra token.
    #[serde(default)]
    pub allowed_scopes: Vec<String>,
    /// Further claim conditions; every one must hold.
    #[serde(default)]
    pub custom_claims: Vec<CustomClaim>,
}

/// One `customClaims` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomClaim {
    /// The claim's name in the token.
    pub inbound_token_claim_name: String,
    /// `STRING` or `STRING_ARRAY`.
    pub inbound_token_claim_value_type: ClaimValueType,
    /// The operator and the value(s) to match.
    pub authorizing_claim_match_value: ClaimMatch,
}

/// The type a custom claim must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClaimValueType {
    /// A JSON string.
    String,
    /// A JSON array of strings.
    StringArray,
}

/// `authorizingClaimMatchValue`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimMatch {
    /// `EQUALS` (STRING), `CONTAINS` or `CONTAINS_ANY` (STRING_ARRAY).
    pub claim_match_operator: ClaimOperator,
    /// The value(s).
    pub claim_match_value: ClaimMatchValue,
}

/// A custom claim operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClaimOperator {
    /// The string claim equals `matchValueString`.
    Equals,
    /// The array claim contains `matchValueString`.
    Contains,
    /// The array claim contains at least one of `matchValueStringList`.
    ContainsAny,
}

/// `claimMatchValue`: one of the two members.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimMatchValue {
    /// For `EQUALS` and `CONTAINS`.
    #[serde(default)]
    pub match_value_string: Option<String>,
    /// For `CONTAINS_ANY`.
    #[serde(default)]
    pub match_value_string_list: Option<Vec<String>>,
}

/// What a present but invalid token gets (protocols.md §7.6: sources conflict).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InvalidTokenStatus {
    /// `401 UnauthorizedException` (the AWS API model).
    #[default]
    Unauthorized,
    /// `403 AccessDeniedException` (an emulator and a blog report this).
    Forbidden,
}

/// Where the front door gets workload access tokens.
#[derive(Clone, Debug)]
pub struct WorkloadIdentity {
    /// Base URL of the AgentCore Identity data plane (stand-in).
    pub identity_url: String,
    /// The runtime's workload identity name (the article's `servicenow-agent-workload`).
    pub workload_name: String,
}

/// Everything the front door needs; checked by [`FrontDoor::new`].
#[derive(Clone, Debug)]
pub struct FrontDoorConfig {
    /// `arn:aws:bedrock-agentcore:{region}:{account}:runtime/{id}`.
    pub runtime_arn: String,
    /// Endpoint names the runtime has (`DEFAULT` is always there).
    pub qualifiers: Vec<String>,
    /// The inbound JWT authorizer.
    pub authorizer: CustomJwtAuthorizer,
    /// `requestHeaderConfiguration.requestHeaderAllowlist`.
    pub request_header_allowlist: Vec<String>,
    /// Base URL of the container (`http://127.0.0.1:8080`); `/invocations` is appended.
    pub container_url: String,
    /// The Identity data plane; `None` forwards no `WorkloadAccessToken` (no AWS runtime is
    /// like that, but it lets the front door stand in front of a container that needs none).
    pub workload_identity: Option<WorkloadIdentity>,
    /// What a present but invalid token gets.
    pub invalid_token_status: InvalidTokenStatus,
    /// The container's answer must start within this time (the service allows 15 minutes).
    pub container_timeout: Duration,
}

impl FrontDoorConfig {
    /// A config for `runtime_arn` with the authorizer and allow-list taken from the control
    /// plane's JSON shapes (`authorizer_json`: `{"customJWTAuthorizer":{…}}`).
    pub fn from_api_json(
        runtime_arn: &str,
        authorizer_json: &str,
        request_header_allowlist: &[&str],
        container_url: &str,
    ) -> Result<Self, FrontDoorError> {
        let parsed: AuthorizerConfiguration = serde_json::from_str(authorizer_json)
            .map_err(|e| FrontDoorError::Config(format!("authorizerConfiguration: {e}")))?;
        Ok(Self {
            runtime_arn: runtime_arn.to_owned(),
            qualifiers: vec!["DEFAULT".into()],
            authorizer: parsed.custom_jwt_authorizer,
            request_header_allowlist: request_header_allowlist.iter().map(|s| (*s).to_owned()).collect(),
            container_url: container_url.to_owned(),
            workload_identity: None,
            invalid_token_status: InvalidTokenStatus::default(),
            container_timeout: Duration::from_secs(900),
        })
    }
}

/// A configuration the service would refuse, or a server that could not start.
#[derive(Debug, thiserror::Error)]
pub enum FrontDoorError {
    /// The configuration breaks a rule of the control plane API.
    #[error("front door configuration: {0}")]
    Config(String),
    /// Binding or serving failed.
    #[error("front door listener: {0}")]
    Io(#[from] std::io::Error),
}

fn config_err(message: impl Into<String>) -> FrontDoorError {
    FrontDoorError::Config(message.into())
}

/// Why an allow-list entry is refused, or `None` when it may be forwarded.
pub fn restricted_header_reason(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if HeaderName::from_bytes(lower.as_bytes()).is_err() {
        return Some("not a valid header name");
    }
    if lower.starts_with(CUSTOM_HEADER_PREFIX) {
        return (lower.len() == CUSTOM_HEADER_PREFIX.len()).then_some("empty custom header suffix");
    }
    if lower.starts_with("x-amzn-") {
        return Some("x-amzn-* headers are reserved (only the Custom- prefix may be forwarded)");
    }
    if RESTRICTED.contains(&lower.as_str()) || RESTRICTED_PREFIXES.iter().any(|p| lower.starts_with(p)) {
        return Some("restricted header");
    }
    None
}

/// Counters of what the front door decided, for tests (the container sees nothing unless
/// `container_requests` moved).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontDoorCounters {
    /// Invocation requests the front door received on a known runtime.
    pub received: u64,
    /// Refused for a missing bearer token (401 + `WWW-Authenticate`).
    pub missing_token: u64,
    /// Refused because the token failed the authorizer.
    pub invalid_token: u64,
    /// Workload access tokens obtained from the Identity data plane.
    pub workload_tokens: u64,
    /// Requests sent to the container.
    pub container_requests: u64,
    /// Container answers of 4xx/5xx (or no answer), turned into 424.
    pub container_errors: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    missing_token: AtomicU64,
    invalid_token: AtomicU64,
    workload_tokens: AtomicU64,
    container_requests: AtomicU64,
    container_errors: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The checked configuration plus its state (key cache, counters). Cheap to clone.
#[derive(Clone)]
pub struct FrontDoor(Arc<Inner>);

struct Inner {
    config: FrontDoorConfig,
    region: String,
    /// Lower-case allow-listed names.
    allowlist: Vec<HeaderName>,
    client: reqwest::Client,
    container: reqwest::Client,
    keys: tokio::sync::Mutex<Option<KeySet>>,
    counters: Counters,
}

/// What the discovery document and JWKS gave.
struct KeySet {
    issuer: String,
    jwks_uri: String,
    keys: HashMap<String, DecodingKey>,
    fetched: Instant,
}

/// A refused request, as the service answers it (AWS JSON error shape).
struct Refusal {
    status: StatusCode,
    error_type: &'static str,
    message: String,
    www_authenticate: Option<String>,
}

impl Refusal {
    fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        Self { status, error_type, message: message.into(), www_authenticate: None }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(json!({ "message": self.message }))).into_response();
        resp.headers_mut().insert("x-amzn-errortype", HeaderValue::from_static(self.error_type));
        if let Some(v) = self.www_authenticate.and_then(|v| HeaderValue::from_str(&v).ok()) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}

impl FrontDoor {
    /// Checks `config` as the control plane would and builds the front door. `client` fetches
    /// the discovery document, the JWKS and workload access tokens (it must trust their CA).
    pub fn new(config: FrontDoorConfig, client: reqwest::Client) -> Result<Self, FrontDoorError> {
        let region = parse_runtime_arn(&config.runtime_arn)?;
        let a = &config.authorizer;
        let path = a.discovery_url.split(['?', '#']).next().unwrap_or_default();
        if path.len() <= "/.well-known/openid-configuration".len()
            || !path.ends_with("/.well-known/openid-configuration")
        {
            return Err(config_err("discoveryUrl must match ^.+/\\.well-known/openid-configuration$"));
        }
        reqwest::Url::parse(&a.discovery_url).map_err(|e| config_err(format!("discoveryUrl: {e}")))?;
        for claim in &a.custom_claims {
            check_custom_claim(claim)?;
        }
        if config.request_header_allowlist.len() > MAX_ALLOWLIST {
            return Err(config_err(format!(
                "requestHeaderAllowlist has {} entries (at most {MAX_ALLOWLIST})",
                config.request_header_allowlist.len()
            )));
        }
        let mut allowlist: Vec<HeaderName> = Vec::new();
        for name in &config.request_header_allowlist {
            if let Some(reason) = restricted_header_reason(name) {
                return Err(config_err(format!("requestHeaderAllowlist: {name:?}: {reason}")));
            }
            let parsed = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|e| config_err(format!("requestHeaderAllowlist: {name:?}: {e}")))?;
            if allowlist.contains(&parsed) {
                return Err(config_err(format!("requestHeaderAllowlist: {name:?} appears twice")));
            }
            allowlist.push(parsed);
        }
        if config.qualifiers.iter().any(|q| q.is_empty()) {
            return Err(config_err("an endpoint qualifier is empty"));
        }
        reqwest::Url::parse(&config.container_url).map_err(|e| config_err(format!("container url: {e}")))?;
        if let Some(w) = &config.workload_identity {
            reqwest::Url::parse(&w.identity_url).map_err(|e| config_err(format!("identity url: {e}")))?;
            if w.workload_name.is_empty() {
                return Err(config_err("workload identity name is empty"));
            }
        }
        // The container is reached directly (no proxy), and its answer is not decompressed or
        // buffered on the way.
        let container = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| config_err(format!("container client: {e}")))?;
        Ok(Self(Arc::new(Inner {
            config,
            region,
            allowlist,
            client,
            container,
            keys: tokio::sync::Mutex::new(None),
            counters: Counters::default(),
        })))
    }

    /// The runtime's region (from its ARN).
    pub fn region(&self) -> &str {
        &self.0.region
    }

    /// The request path of the invocation URL: `/runtimes/{url-encoded ARN}/invocations`.
    pub fn invocation_path(&self) -> String {
        format!("/runtimes/{}/invocations", encode_arn(&self.0.config.runtime_arn))
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> FrontDoorCounters {
        let c = &self.0.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FrontDoorCounters {
            received: get(&c.received),
            missing_token: get(&c.missing_token),
            invalid_token: get(&c.invalid_token),
            workload_tokens: get(&c.workload_tokens),
            container_requests: get(&c.container_requests),
            container_errors: get(&c.container_errors),
        }
    }

    /// The router, answering as `base_url` (the origin callers use, e.g.
    /// `https://localhost:8446`; it appears in `WWW-Authenticate` and the resource metadata).
    pub fn router(&self, base_url: &str) -> axum::Router {
        let state =
            Arc::new(RouteState { door: self.clone(), base_url: base_url.trim_end_matches('/').into() });
        axum::Router::new()
            .route("/runtimes/{arn}/invocations", axum::routing::post(invoke))
            .route(
                "/runtimes/{arn}/invocations/.well-known/oauth-protected-resource",
                axum::routing::get(metadata),
            )
            .fallback(missing_authentication_token)
            .with_state(state)
    }

    /// Binds `addr` and serves the front door there, over HTTPS when `tls` is given.
    pub async fn serve(
        &self,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<FrontDoorServer, FrontDoorError> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let port = listener.local_addr()?.port();
        let base_url = match tls {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://127.0.0.1:{port}"),
        };
        let router = self.router(&base_url);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        tokio::spawn(async move {
            let served = match tls {
                Some(tls) => delegate_devstack_tls::serve_https(listener, router, tls, shutdown).await,
                None => delegate_devstack_tls::serve_http(listener, router, shutdown).await,
            };
            if let Err(error) = served {
                tracing::warn!(%error, "AgentCore front door stopped");
            }
        });
        let invocation_url = format!("{base_url}{}?qualifier=DEFAULT", self.invocation_path());
        Ok(FrontDoorServer { door: self.clone(), base_url, invocation_url, _stop: stop })
    }
}

/// A running front door; stops serving when dropped.
pub struct FrontDoorServer {
    /// The front door (counters).
    pub door: FrontDoor,
    /// `https://localhost:<port>` (or `http://127.0.0.1:<port>` without TLS).
    pub base_url: String,
    /// The full invocation URL with `?qualifier=DEFAULT`.
    pub invocation_url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The region of `arn:aws:bedrock-agentcore:{region}:{12-digit account}:runtime/{id}`.
fn parse_runtime_arn(arn: &str) -> Result<String, FrontDoorError> {
    let bad = || config_err(format!("not an AgentCore runtime ARN: {arn:?}"));
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts[..] else { return Err(bad()) };
    let id = resource.strip_prefix("runtime/").ok_or_else(bad)?;
    let id_ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let region_ok = !region.is_empty()
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if prefix != "arn"
        || !partition.starts_with("aws")
        || service != "bedrock-agentcore"
        || !region_ok
        || account.len() != 12
        || !account.bytes().all(|b| b.is_ascii_digit())
        || !id_ok
    {
        return Err(bad());
    }
    Ok(region.to_owned())
}

/// Everything but RFC 3986's unreserved characters: what `urllib.parse.quote(arn, safe="")`
/// and `encodeURIComponent` escape.
const PATH_SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// The ARN percent-encoded as one path segment (`:` → `%3A`, `/` → `%2F`), as callers send it.
pub fn encode_arn(arn: &str) -> String {
    percent_encoding::utf8_percent_encode(arn, PATH_SEGMENT).to_string()
}

fn check_custom_claim(claim: &CustomClaim) -> Result<(), FrontDoorError> {
    let name = &claim.inbound_token_claim_name;
    if name.is_empty() {
        return Err(config_err("customClaims: empty inboundTokenClaimName"));
    }
    let m = &claim.authorizing_claim_match_value;
    let v = &m.claim_match_value;
    let ok = match (claim.inbound_token_claim_value_type, m.claim_match_operator) {
        (ClaimValueType::String, ClaimOperator::Equals)
        | (ClaimValueType::StringArray, ClaimOperator::Contains) => {
            v.match_value_string.is_some() && v.match_value_string_list.is_none()
        }
        (ClaimValueType::StringArray, ClaimOperator::ContainsAny) => {
            v.match_value_string.is_none()
                && v.match_value_string_list.as_ref().is_some_and(|l| !l.is_empty())
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(config_err(format!(
            "customClaims {name:?}: EQUALS takes a STRING claim and matchValueString, CONTAINS a \
             STRING_ARRAY claim and matchValueString, CONTAINS_ANY a STRING_ARRAY claim and \
             matchValueStringList"
        )))
    }
}

struct RouteState {
    door: FrontDoor,
    base_url: String,
}

#[derive(Deserialize)]
struct QualifierQuery {
    qualifier: Option<String>,
}

/// The runtime and endpoint a path names, or the 404 the service gives.
fn resolve(door: &FrontDoor, arn: &str, query: &QualifierQuery) -> Result<String, Refusal> {
    let config = &door.0.config;
    if arn != config.runtime_arn {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!("No agent runtime found for {arn}"),
        ));
    }
    let qualifier = query.qualifier.clone().unwrap_or_else(|| "DEFAULT".into());
    if qualifier != "DEFAULT" && !config.qualifiers.contains(&qualifier) {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!("No endpoint {qualifier} for agent runtime {arn}"),
        ));
    }
    Ok(qualifier)
}

async fn missing_authentication_token() -> Response {
    Refusal::new(StatusCode::FORBIDDEN, "MissingAuthenticationTokenException", "Missing Authentication Token")
        .into_response()
}

/// RFC 9728 protected resource metadata for the runtime endpoint.
async fn metadata(
    State(state): State<Arc<RouteState>>,
    Path(arn): Path<String>,
    Query(query): Query<QualifierQuery>,
) -> Response {
    let qualifier = match resolve(&state.door, &arn, &query) {
        Ok(q) => q,
        Err(refusal) => return refusal.into_response(),
    };
    let issuer = match state.door.key_set(false).await {
        Ok(keys) => keys,
        Err(refusal) => return refusal.into_response(),
    };
    let a = &state.door.0.config.authorizer;
    let mut doc = json!({
        "resource": format!("{}{}?qualifier={qualifier}", state.base_url, state.door.invocation_path()),
        "authorization_servers": [issuer],
        "bearer_methods_supported": ["header"],
    });
    if !a.allowed_scopes.is_empty()
        && let Some(o) = doc.as_object_mut()
    {
        o.insert("scopes_supported".into(), json!(a.allowed_scopes));
    }
    axum::Json(doc).into_response()
}

async fn invoke(
    State(state): State<Arc<RouteState>>,
    Path(arn): Path<String>,
    Query(query): Query<QualifierQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match invoke_inner(&state, &arn, &query, &headers, body).await {
        Ok(resp) => resp,
        Err(refusal) => refusal.into_response(),
    }
}

async fn invoke_inner(
    state: &RouteState,
    arn: &str,
    query: &QualifierQuery,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let door = &state.door;
    let qualifier = resolve(door, arn, query)?;
    let counters = &door.0.counters;
    bump(&counters.received);

    // Inbound auth. A runtime takes JWT or SigV4, not both.
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    if auth.starts_with("AWS4-HMAC-SHA256") || (auth.is_empty() && headers.contains_key("x-amz-date")) {
        bump(&counters.invalid_token);
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            "Authorization method mismatch. The agent is configured for a different authorization method \
             than what was used in your request. (OAuth or SigV4)",
        ));
    }
    // Two Authorization headers are ambiguous (which one was validated?): refused as invalid.
    if headers.get_all(header::AUTHORIZATION).iter().count() > 1 {
        bump(&counters.invalid_token);
        return Err(door.invalid_token_refusal());
    }
    let bearer = auth
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty());
    let Some(token) = bearer else {
        bump(&counters.missing_token);
        tracing::info!(decision = "missing_token", "AgentCore front door: no bearer token");
        let mut refusal = Refusal::new(
            StatusCode::UNAUTHORIZED,
            "UnauthorizedException",
            "Authorization header is missing or is not a Bearer token",
        );
        refusal.www_authenticate = Some(format!(
            "Bearer resource_metadata=\"{}{}/.well-known/oauth-protected-resource?qualifier={qualifier}\"",
            state.base_url,
            door.invocation_path()
        ));
        return Err(refusal);
    };
    if let Err(reason) = door.validate(token).await {
        bump(&counters.invalid_token);
        tracing::info!(decision = "invalid_token", reason, "AgentCore front door: token refused");
        return Err(door.invalid_token_refusal());
    }

    // Session and request ids.
    let session = match headers.get(SESSION_ID_HEADER) {
        Some(v) => {
            let s = v.to_str().unwrap_or_default();
            if !(33..=256).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "ValidationException",
                    "runtimeSessionId must be 33 to 256 visible characters",
                ));
            }
            s.to_owned()
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let request_id = uuid::Uuid::new_v4().to_string();

    let mut forward = HeaderMap::new();
    for name in
        door.0.allowlist.iter().cloned().chain(TRACING_HEADERS.iter().map(|n| HeaderName::from_static(n)))
    {
        for value in headers.get_all(&name) {
            if door.0.allowlist.contains(&name) && value.len() > MAX_HEADER_VALUE_BYTES {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "ValidationException",
                    format!("header {name} is longer than {MAX_HEADER_VALUE_BYTES} bytes"),
                ));
            }
            forward.append(name.clone(), value.clone());
        }
    }
    // InvokeAgentRuntime's own `contentType` and `accept` parameters.
    for name in [header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = headers.get(&name) {
            forward.insert(name, v.clone());
        }
    }
    if !forward.contains_key(header::CONTENT_TYPE) {
        forward.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let ids = [(SESSION_ID_HEADER, session.as_str()), (REQUEST_ID_HEADER, request_id.as_str())];
    for (name, value) in ids {
        if let Ok(v) = HeaderValue::from_str(value) {
            forward.insert(HeaderName::from_static(name), v);
        }
    }
    if let Some(workload) = &door.0.config.workload_identity {
        let wat = door.workload_access_token(workload, token).await?;
        bump(&counters.workload_tokens);
        let mut value = HeaderValue::from_str(wat.expose()).map_err(|_| {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerException",
                "bad workload access token",
            )
        })?;
        value.set_sensitive(true);
        forward.insert(HeaderName::from_static(WORKLOAD_ACCESS_TOKEN_HEADER), value);
    }

    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_PAYLOAD_BYTES as u64)
    {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "payload is larger than 100 MB",
        ));
    }
    let limited = Body::new(http_body_util::Limited::new(body, MAX_PAYLOAD_BYTES));
    let url = format!("{}/invocations", door.0.config.container_url.trim_end_matches('/'));
    bump(&counters.container_requests);
    tracing::info!(session = %session, request_id = %request_id, "AgentCore front door: forwarding to the container");
    let sent = tokio::time::timeout(
        door.0.config.container_timeout,
        door.0
            .container
            .post(&url)
            .headers(forward)
            .body(reqwest::Body::wrap_stream(limited.into_data_stream()))
            .send(),
    )
    .await;
    let resp = match sent {
        Ok(Ok(resp)) => resp,
        Ok(Err(error)) => {
            bump(&counters.container_errors);
            tracing::warn!(%error, "AgentCore front door: the container did not answer");
            return Err(runtime_client_error("The runtime did not answer"));
        }
        Err(_) => {
            bump(&counters.container_errors);
            return Err(runtime_client_error("The runtime did not answer in time"));
        }
    };
    let status = resp.status();
    if status.is_client_error() || status.is_server_error() {
        bump(&counters.container_errors);
        tracing::info!(status = status.as_u16(), "AgentCore front door: container error → 424");
        return Err(runtime_client_error(&format!(
            "Received error ({}) from runtime. Please check your CloudWatch logs for more information.",
            status.as_u16()
        )));
    }
    let mut out = Response::builder().status(status.as_u16());
    if let Some(ct) = resp.headers().get(reqwest::header::CONTENT_TYPE) {
        out = out.header(header::CONTENT_TYPE, ct.as_bytes());
    }
    out = out.header(SESSION_ID_HEADER, session.as_str()).header("x-amzn-requestid", request_id.as_str());
    // Chunks go to the caller as the container produces them.
    out.body(Body::from_stream(resp.bytes_stream())).map_err(|_| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerException",
            "could not build the answer",
        )
    })
}

fn runtime_client_error(message: &str) -> Refusal {
    Refusal::new(StatusCode::FAILED_DEPENDENCY, "RuntimeClientError", message)
}

fn internal(message: &str) -> Refusal {
    Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerException", message)
}

/// Clock skew allowed on `exp` and `nbf` (the service's value is not documented; 60 s is the
/// common default, and what the IdP's attack corpus assumes).
pub const CLOCK_SKEW_LEEWAY: Duration = Duration::from_secs(60);

/// Keys are refetched at most this often when a token names an unknown `kid`.
const KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

impl FrontDoor {
    /// The issuer, fetching discovery + JWKS first if needed (or again when `refresh` and the
    /// last fetch is older than [`KEY_REFRESH_INTERVAL`]).
    async fn key_set(&self, refresh: bool) -> Result<String, Refusal> {
        let mut guard = self.0.keys.lock().await;
        let stale = guard.as_ref().is_none_or(|k| refresh && k.fetched.elapsed() >= KEY_REFRESH_INTERVAL);
        if stale {
            let jwks_uri = guard.as_ref().map(|k| (k.issuer.clone(), k.jwks_uri.clone()));
            *guard = Some(self.fetch_keys(jwks_uri).await?);
        }
        Ok(guard.as_ref().map(|k| k.issuer.clone()).unwrap_or_default())
    }

    async fn fetch_keys(&self, known: Option<(String, String)>) -> Result<KeySet, Refusal> {
        let unavailable = |what: &str| {
            tracing::warn!(what, "AgentCore front door: cannot load the authorizer's keys");
            internal("The authorizer could not load the identity provider's keys")
        };
        let (issuer, jwks_uri) = match known {
            Some(k) => k,
            None => {
                let doc: Value = self
                    .get_json(&self.0.config.authorizer.discovery_url)
                    .await
                    .map_err(|e| unavailable(&format!("discovery: {e}")))?;
                let issuer = doc["issuer"].as_str().ok_or_else(|| unavailable("discovery has no issuer"))?;
                let jwks =
                    doc["jwks_uri"].as_str().ok_or_else(|| unavailable("discovery has no jwks_uri"))?;
                (issuer.to_owned(), jwks.to_owned())
            }
        };
        let jwks: Value = self.get_json(&jwks_uri).await.map_err(|e| unavailable(&format!("jwks: {e}")))?;
        let mut keys = HashMap::new();
        for jwk in jwks["keys"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let (Some(kid), Some("RSA"), Some(n), Some(e)) =
                (jwk["kid"].as_str(), jwk["kty"].as_str(), jwk["n"].as_str(), jwk["e"].as_str())
            else {
                continue;
            };
            if let Ok(key) = DecodingKey::from_rsa_components(n, e) {
                keys.insert(kid.to_owned(), key);
            }
        }
        Ok(KeySet { issuer, jwks_uri, keys, fetched: Instant::now() })
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let resp =
            self.0.client.get(url).timeout(Duration::from_secs(5)).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status().as_u16()));
        }
        resp.json().await.map_err(|e| e.to_string())
    }

    /// `Ok` if `token` passes the authorizer; otherwise a short reason for the log (never the
    /// token).
    async fn validate(&self, token: &str) -> Result<(), &'static str> {
        let head = jsonwebtoken::decode_header(token).map_err(|_| "malformed")?;
        if head.alg != Algorithm::RS256 {
            return Err("algorithm");
        }
        let kid = head.kid.ok_or("no kid")?;
        let (issuer, key) = {
            self.key_set(false).await.map_err(|_| "keys unavailable")?;
            let known = self.0.keys.lock().await.as_ref().is_some_and(|k| k.keys.contains_key(&kid));
            if !known {
                self.key_set(true).await.map_err(|_| "keys unavailable")?;
            }
            let guard = self.0.keys.lock().await;
            let set = guard.as_ref().ok_or("keys unavailable")?;
            (set.issuer.clone(), set.keys.get(&kid).cloned().ok_or("unknown kid")?)
        };
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[issuer]);
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.leeway = CLOCK_SKEW_LEEWAY.as_secs();
        validation.set_required_spec_claims(&["exp", "iss"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => "expired",
                ErrorKind::ImmatureSignature => "not yet valid",
                ErrorKind::InvalidIssuer => "issuer",
                ErrorKind::InvalidSignature => "signature",
                _ => "invalid",
            }
        })?;
        authorize_claims(&self.0.config.authorizer, &data.claims)
    }

    fn invalid_token_refusal(&self) -> Refusal {
        match self.0.config.invalid_token_status {
            InvalidTokenStatus::Unauthorized => {
                Refusal::new(StatusCode::UNAUTHORIZED, "UnauthorizedException", "JWT bearer token is invalid")
            }
            InvalidTokenStatus::Forbidden => {
                Refusal::new(StatusCode::FORBIDDEN, "AccessDeniedException", "JWT bearer token is invalid")
            }
        }
    }

    async fn workload_access_token(
        &self,
        workload: &WorkloadIdentity,
        token: &str,
    ) -> Result<Secret, Refusal> {
        let url = format!(
            "{}/identities/GetWorkloadAccessTokenForJWT",
            workload.identity_url.trim_end_matches('/')
        );
        let body = json!({ "workloadName": workload.workload_name, "userToken": token });
        let failed = |what: String| {
            tracing::warn!(what, "AgentCore front door: no workload access token");
            internal("Could not obtain a workload access token")
        };
        let resp = self
            .0
            .client
            .post(&url)
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await
            .map_err(|e| failed(e.without_url().to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(failed(format!("HTTP {}", status.as_u16())));
        }
        let answer: Value = resp.json().await.map_err(|e| failed(e.to_string()))?;
        answer["workloadAccessToken"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(Secret::new)
            .ok_or_else(|| failed("answer has no workloadAccessToken".into()))
    }
}

/// `allowedAudience`, `allowedClients`, `allowedScopes` and `customClaims` against verified
/// claims.
fn authorize_claims(a: &CustomJwtAuthorizer, claims: &Map<String, Value>) -> Result<(), &'static str> {
    if !a.allowed_audience.is_empty() {
        let auds: Vec<&str> = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(v)) => v.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !auds.iter().any(|aud| a.allowed_audience.iter().any(|x| x == aud)) {
            return Err("audience");
        }
    }
    if !a.allowed_clients.is_empty() {
        let client = claims.get("client_id").and_then(Value::as_str).ok_or("no client_id claim")?;
        if !a.allowed_clients.iter().any(|c| c == client) {
            return Err("client");
        }
    }
    if !a.allowed_scopes.is_empty() {
        let scopes = claims.get("scope").and_then(Value::as_str).unwrap_or("");
        if !scopes.split(' ').any(|s| a.allowed_scopes.iter().any(|x| x == s)) {
            return Err("scope");
        }
    }
    for claim in &a.custom_claims {
        if !custom_claim_holds(claim, claims.get(&claim.inbound_token_claim_name)) {
            return Err("custom claim");
        }
    }
    Ok(())
}

fn custom_claim_holds(claim: &CustomClaim, value: Option<&Value>) -> bool {
    let m = &claim.authorizing_claim_match_value;
    let wanted = m.claim_match_value.match_value_string.as_deref();
    let array = || -> Option<Vec<&str>> {
        value?.as_array()?.iter().map(Value::as_str).collect::<Option<Vec<&str>>>()
    };
    match m.claim_match_operator {
        ClaimOperator::Equals => value.and_then(Value::as_str).is_some_and(|v| Some(v) == wanted),
        ClaimOperator::Contains => array().is_some_and(|vs| vs.iter().any(|v| Some(*v) == wanted)),
        ClaimOperator::ContainsAny => {
            let list = m.claim_match_value.match_value_string_list.as_deref().unwrap_or_default();
            array().is_some_and(|vs| vs.iter().any(|v| list.iter().any(|l| l == v)))
        }
    }
}

#[cfg(test)]
#[path = "front_door_tests.rs"]
mod tests;
