//! AgentCore Identity data plane stand-in: workload access tokens and `GetResourceOauth2Token`
//! with the On-Behalf-Of flow, against the devstack IdP.
//!
//! Wire-faithful to the AWS restJson1 API (protocols.md §3.3), so `aws-sdk-bedrockagentcore`
//! talks to it unchanged:
//! - `POST /identities/GetWorkloadAccessTokenForJWT` `{"workloadName","userToken"}` →
//!   `{"workloadAccessToken"}`. The user JWT is verified against the IdP's JWKS (signature,
//!   `iss`, `exp`); the answer is an opaque random handle bound to the workload and to that
//!   user token, valid until the user token expires (at most [`IdentityConfig::wat_lifetime`]).
//!   The AgentCore Runtime front door calls this after its customJWTAuthorizer accepted a
//!   caller. (The real API is SigV4-signed by the Runtime service; here a signature header is
//!   checked for shape when present, so the front door need not hold AWS keys.)
//! - `POST /identities/oauth2/token` (`GetResourceOauth2Token`, SigV4): resolves the workload
//!   access token to the user token and performs the Entra On-Behalf-Of exchange at the IdP's
//!   token endpoint with the credential provider's client credentials; answers
//!   `{"accessToken"}`.
//!
//! Errors are AWS JSON errors: `{"message":…}` with the name in `x-amzn-ErrorType`
//! (`ValidationException` 400, `AccessDeniedException` 403, `ResourceNotFoundException` 404,
//! `UnauthorizedException` 401, `InternalServerException` 500). No message ever contains a
//! token, a secret or a workload access token.
//!
//! Answers the article's setup never produces (throttling, a 200 without `accessToken`, a
//! consent URL) are injected with [`AgentCoreIdentity::set_resource_token_fault`].
//!
//! The SigV4 check is of the header's *shape* (algorithm, `Credential=` scope with
//! `…/bedrock-agentcore/aws4_request`, `SignedHeaders=`, a hex `Signature=`, `x-amz-date`) and
//! of the access key id when one is configured; the signature itself is not recomputed.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use delegate_secret::Secret;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `oauth2Flow` for the On-Behalf-Of token exchange.
pub const ON_BEHALF_OF: &str = "ON_BEHALF_OF_TOKEN_EXCHANGE";
/// The article's credential provider name.
pub const ARTICLE_PROVIDER: &str = "EntraIdServiceNow";
/// The article's workload identity name (the agent runtime's name).
pub const ARTICLE_WORKLOAD: &str = "servicenow_agent";
/// Longest `workloadIdentityToken` the API accepts.
const MAX_WAT_CHARS: usize = 131_072;
/// Longest user token accepted by `GetWorkloadAccessTokenForJWT`.
const MAX_USER_TOKEN_CHARS: usize = 131_072;
/// Largest JWKS document fetched.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Workload access tokens kept at once; expired ones are purged first.
const MAX_LIVE_WATS: usize = 100_000;
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// One OAuth2 credential provider (`CreateOauth2CredentialProvider` with the Microsoft vendor
/// and an On-Behalf-Of token exchange config).
#[derive(Clone)]
pub struct CredentialProvider {
    /// The IdP token endpoint the exchange is made at.
    pub token_endpoint: String,
    /// The provider's client id at the IdP (the article's agent app).
    pub client_id: String,
    /// The provider's client secret.
    pub client_secret: Secret,
    /// Whether the provider is configured for the On-Behalf-Of exchange (the article's
    /// setup). A delegated provider refuses `M2M` and `USER_FEDERATION`.
    pub on_behalf_of: bool,
}

impl std::fmt::Debug for CredentialProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialProvider")
            .field("token_endpoint", &self.token_endpoint)
            .field("client_id", &self.client_id)
            .field("on_behalf_of", &self.on_behalf_of)
            .finish_non_exhaustive()
    }
}

/// Configuration of the stand-in.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// The issuer user tokens must carry (the devstack IdP's v2.0 issuer for the tenant).
    pub issuer: String,
    /// The IdP's JWKS URL.
    pub jwks_uri: String,
    /// Client for the JWKS and token endpoint (trusts the devstack CA).
    pub client: reqwest::Client,
    /// Credential providers by name.
    pub providers: BTreeMap<String, CredentialProvider>,
    /// Workload identities that may get workload access tokens (empty: any name).
    pub workloads: Vec<String>,
    /// The AWS access key id callers must sign with (`None`: any well-formed one).
    pub access_key_id: Option<String>,
    /// Upper bound of a workload access token's life (it never outlives the user token).
    pub wat_lifetime: Duration,
    /// Clock-skew leeway for the user token's `exp`, in seconds.
    pub leeway_seconds: u64,
}

impl IdentityConfig {
    /// The article's setup against the devstack IdP: provider `EntraIdServiceNow` exchanging
    /// On-Behalf-Of with the agent app's credentials at `token_endpoint`.
    pub fn article(
        issuer: String,
        jwks_uri: String,
        token_endpoint: String,
        client_id: &str,
        client_secret: Secret,
        client: reqwest::Client,
    ) -> Self {
        let mut providers = BTreeMap::new();
        providers.insert(
            ARTICLE_PROVIDER.to_owned(),
            CredentialProvider {
                token_endpoint,
                client_id: client_id.to_owned(),
                client_secret,
                on_behalf_of: true,
            },
        );
        Self {
            issuer,
            jwks_uri,
            client,
            providers,
            workloads: Vec::new(),
            access_key_id: None,
            wat_lifetime: Duration::from_secs(900),
            leeway_seconds: 60,
        }
    }
}

/// Call counters, for tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityCounters {
    /// `GetWorkloadAccessTokenForJWT` calls (any outcome).
    pub workload_token_calls: u64,
    /// Workload access tokens issued.
    pub workload_tokens_issued: u64,
    /// `GetResourceOauth2Token` calls (any outcome).
    pub resource_token_calls: u64,
    /// On-Behalf-Of exchanges made at the IdP.
    pub obo_exchanges: u64,
    /// Requests refused (any error answer).
    pub rejected: u64,
}

#[derive(Default)]
struct Counters {
    workload_token_calls: AtomicU64,
    workload_tokens_issued: AtomicU64,
    resource_token_calls: AtomicU64,
    obo_exchanges: AtomicU64,
    rejected: AtomicU64,
}

/// An answer `GetResourceOauth2Token` gives instead of the normal one, to test how a client
/// copes with what the article's setup does not produce. Throttling comes right after the
/// SigV4 check; the 200 answers replace the exchange of an otherwise valid request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResourceTokenFault {
    /// Normal service.
    #[default]
    None,
    /// 429 `ThrottlingException` (the account's request rate is exceeded).
    Throttling,
    /// 200 with an empty object: no `accessToken`.
    NoAccessToken,
    /// 200 with `authorizationUrl`, `sessionUri` and `sessionStatus` and no `accessToken`: what
    /// AgentCore Identity answers when the user has to consent first (a provider set up for
    /// user federation rather than On-Behalf-Of).
    ConsentNeeded,
}

/// What a workload access token stands for.
struct Binding {
    workload: String,
    user_token: Secret,
    expires_at: u64,
}

struct Inner {
    config: IdentityConfig,
    counters: Counters,
    wats: Mutex<HashMap<String, Binding>>,
    jwks: tokio::sync::Mutex<Option<JwkSet>>,
    fault: Mutex<ResourceTokenFault>,
}

/// The running stand-in: a router plus its counters.
#[derive(Clone)]
pub struct AgentCoreIdentity(Arc<Inner>);

impl std::fmt::Debug for AgentCoreIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCoreIdentity").field("providers", &self.0.config.providers.keys()).finish()
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// An AWS JSON error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl AwsError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, message: message.into() }
    }
    fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationException", message)
    }
    fn access_denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "AccessDeniedException", message)
    }
    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UnauthorizedException", message)
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
    }
    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerException", message)
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(serde_json::json!({ "message": self.message }))).into_response();
        resp.headers_mut().insert("x-amzn-errortype", HeaderValue::from_static(self.kind));
        resp
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WorkloadTokenRequest {
    workload_name: Option<String>,
    user_token: Option<String>,
}

/// The `GetResourceOauth2Token` input (restJson1 names; unknown members are ignored, as
/// AWS services do).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceTokenRequest {
    workload_identity_token: Option<String>,
    resource_credential_provider_name: Option<String>,
    scopes: Option<Vec<String>>,
    oauth2_flow: Option<String>,
    #[serde(default)]
    force_authentication: Option<bool>,
    #[serde(default)]
    session_uri: Option<String>,
}

impl AgentCoreIdentity {
    /// A stand-in with `config`.
    pub fn new(config: IdentityConfig) -> Self {
        Self(Arc::new(Inner {
            config,
            counters: Counters::default(),
            wats: Mutex::new(HashMap::new()),
            jwks: tokio::sync::Mutex::new(None),
            fault: Mutex::new(ResourceTokenFault::None),
        }))
    }

    /// The two routes.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/identities/GetWorkloadAccessTokenForJWT", post(workload_token))
            .route("/identities/oauth2/token", post(resource_token))
            .fallback(|| async {
                AwsError::new(StatusCode::NOT_FOUND, "UnknownOperationException", "unknown operation")
            })
            .with_state(self.clone())
    }

    /// Current counters.
    pub fn counters(&self) -> IdentityCounters {
        let c = &self.0.counters;
        IdentityCounters {
            workload_token_calls: c.workload_token_calls.load(Ordering::Relaxed),
            workload_tokens_issued: c.workload_tokens_issued.load(Ordering::Relaxed),
            resource_token_calls: c.resource_token_calls.load(Ordering::Relaxed),
            obo_exchanges: c.obo_exchanges.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
        }
    }

    /// Mints a workload access token directly (tests, and a front door in the same process):
    /// the same checks as `GetWorkloadAccessTokenForJWT`.
    pub async fn workload_access_token(
        &self,
        workload: &str,
        user_token: &Secret,
    ) -> Result<Secret, AwsError> {
        self.0.counters.workload_token_calls.fetch_add(1, Ordering::Relaxed);
        let result = self.mint(workload, user_token).await;
        if result.is_err() {
            self.0.counters.rejected.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Forgets every workload access token (simulates expiry or revocation).
    pub fn revoke_all(&self) {
        self.lock_wats().clear();
    }

    /// Answers every `GetResourceOauth2Token` from now on with `fault`, until changed
    /// ([`ResourceTokenFault::None`] restores normal service).
    pub fn set_resource_token_fault(&self, fault: ResourceTokenFault) {
        *self.0.fault.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = fault;
    }

    fn fault(&self) -> ResourceTokenFault {
        *self.0.fault.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_wats(&self) -> std::sync::MutexGuard<'_, HashMap<String, Binding>> {
        // Each operation is one map call: a poisoned lock still holds a consistent map.
        self.0.wats.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn mint(&self, workload: &str, user_token: &Secret) -> Result<Secret, AwsError> {
        let config = &self.0.config;
        if workload.is_empty()
            || workload.len() > 255
            || !workload.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(AwsError::validation("workloadName must match [A-Za-z0-9_.-]+ (1-255 characters)"));
        }
        if !config.workloads.is_empty() && !config.workloads.iter().any(|w| w == workload) {
            return Err(AwsError::not_found(format!("workload identity {workload} does not exist")));
        }
        if user_token.is_empty() || user_token.len() > MAX_USER_TOKEN_CHARS {
            return Err(AwsError::validation("userToken must be 1-131072 characters"));
        }
        let exp = self.verify_user_token(user_token).await?;
        let now = now();
        let expires_at = exp.min(now.saturating_add(config.wat_lifetime.as_secs()));
        let handle = random_handle();
        let mut wats = self.lock_wats();
        if wats.len() >= MAX_LIVE_WATS {
            wats.retain(|_, b| b.expires_at > now);
            if wats.len() >= MAX_LIVE_WATS {
                return Err(AwsError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "ThrottlingException",
                    "too many live workload access tokens",
                ));
            }
        }
        wats.insert(
            handle.expose().to_owned(),
            Binding { workload: workload.to_owned(), user_token: user_token.clone(), expires_at },
        );
        drop(wats);
        self.0.counters.workload_tokens_issued.fetch_add(1, Ordering::Relaxed);
        Ok(handle)
    }

    /// Verifies the user JWT (RS256, the IdP's keys, `iss`, `exp`) and returns its `exp`.
    async fn verify_user_token(&self, token: &Secret) -> Result<u64, AwsError> {
        let config = &self.0.config;
        let invalid = || AwsError::unauthorized("the user token is invalid");
        let header = jsonwebtoken::decode_header(token.expose()).map_err(|_| invalid())?;
        if header.alg != Algorithm::RS256
            || header.jku.is_some()
            || header.jwk.is_some()
            || header.x5u.is_some()
        {
            return Err(invalid());
        }
        let kid = header.kid.ok_or_else(invalid)?;
        let key = self.key(&kid).await?.ok_or_else(invalid)?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&config.issuer]);
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = config.leeway_seconds;
        #[derive(Deserialize)]
        struct Claims {
            exp: u64,
        }
        let data =
            jsonwebtoken::decode::<Claims>(token.expose(), &key, &validation).map_err(|_| invalid())?;
        Ok(data.claims.exp)
    }

    /// The signing key `kid` from the IdP's JWKS, refetched when the kid is unknown.
    async fn key(&self, kid: &str) -> Result<Option<DecodingKey>, AwsError> {
        let mut cache = self.0.jwks.lock().await;
        let mut jwk = cache.as_ref().and_then(|set| set.find(kid)).cloned();
        if jwk.is_none() {
            let set = self.fetch_jwks().await?;
            jwk = set.find(kid).cloned();
            *cache = Some(set);
        }
        drop(cache);
        let Some(jwk) = jwk else { return Ok(None) };
        if !matches!(jwk.algorithm, AlgorithmParameters::RSA(_)) {
            return Ok(None);
        }
        Ok(DecodingKey::from_jwk(&jwk).ok())
    }

    async fn fetch_jwks(&self) -> Result<JwkSet, AwsError> {
        let unavailable = || AwsError::internal("the identity provider's keys could not be fetched");
        let resp =
            self.0.config.client.get(&self.0.config.jwks_uri).send().await.map_err(|_| unavailable())?;
        if !resp.status().is_success() {
            return Err(unavailable());
        }
        let body = resp.bytes().await.map_err(|_| unavailable())?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(unavailable());
        }
        serde_json::from_slice(&body).map_err(|_| unavailable())
    }

    /// The `GetResourceOauth2Token` answer body.
    async fn resource_token(
        &self,
        headers: &HeaderMap,
        req: ResourceTokenRequest,
    ) -> Result<serde_json::Value, AwsError> {
        check_sigv4(headers, self.0.config.access_key_id.as_deref())?;
        let fault = self.fault();
        if fault == ResourceTokenFault::Throttling {
            return Err(AwsError::new(StatusCode::TOO_MANY_REQUESTS, "ThrottlingException", "Rate exceeded"));
        }
        let wat = req
            .workload_identity_token
            .ok_or_else(|| AwsError::validation("workloadIdentityToken is required"))?;
        let wat = Secret::new(wat);
        if wat.is_empty() || wat.len() > MAX_WAT_CHARS {
            return Err(AwsError::validation("workloadIdentityToken must be 1-131072 characters"));
        }
        let name = req
            .resource_credential_provider_name
            .ok_or_else(|| AwsError::validation("resourceCredentialProviderName is required"))?;
        if name.is_empty()
            || name.len() > 128
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(AwsError::validation(
                "resourceCredentialProviderName must match [a-zA-Z0-9\\-_]+ (1-128 characters)",
            ));
        }
        let scopes = req.scopes.ok_or_else(|| AwsError::validation("scopes is required"))?;
        if scopes.len() > 100 || scopes.iter().any(|s| s.is_empty() || s.len() > 128) {
            return Err(AwsError::validation("scopes must hold at most 100 scopes of 1-128 characters"));
        }
        let flow = req.oauth2_flow.ok_or_else(|| AwsError::validation("oauth2Flow is required"))?;
        if !["M2M", "USER_FEDERATION", ON_BEHALF_OF].contains(&flow.as_str()) {
            return Err(AwsError::validation(
                "oauth2Flow must be one of M2M, USER_FEDERATION, ON_BEHALF_OF_TOKEN_EXCHANGE",
            ));
        }
        let provider = self
            .0
            .config
            .providers
            .get(&name)
            .ok_or_else(|| AwsError::not_found(format!("credential provider {name} does not exist")))?;
        if provider.on_behalf_of && flow != ON_BEHALF_OF {
            return Err(AwsError::validation(format!(
                "credential provider {name} is configured for ON_BEHALF_OF_TOKEN_EXCHANGE; oauth2Flow {flow} is not supported for it"
            )));
        }
        if !provider.on_behalf_of && flow != "M2M" {
            return Err(AwsError::validation(format!(
                "credential provider {name} has no on-behalf-of token exchange configuration; only M2M is supported"
            )));
        }
        if req.session_uri.is_some() || req.force_authentication == Some(true) {
            return Err(AwsError::validation(
                "sessionUri and forceAuthentication apply to USER_FEDERATION only",
            ));
        }
        let user_token = {
            let wats = self.lock_wats();
            let binding = wats
                .get(wat.expose())
                .ok_or_else(|| AwsError::access_denied("the workload access token is invalid or expired"))?;
            if binding.expires_at <= now() {
                return Err(AwsError::unauthorized("the workload access token has expired"));
            }
            tracing::debug!(target: "devstack::agentcore", workload = %binding.workload, provider = %name, "resource token request");
            binding.user_token.clone()
        };
        match fault {
            ResourceTokenFault::NoAccessToken => return Ok(serde_json::json!({})),
            ResourceTokenFault::ConsentNeeded => {
                let session = random_handle();
                let session = session.expose().trim_start_matches("wat-");
                return Ok(serde_json::json!({
                    "authorizationUrl": format!("https://bedrock-agentcore.us-east-1.amazonaws.com/identities/oauth2/authorize?request_uri=urn%3Aietf%3Aparams%3Aoauth%3Arequest_uri%3A{session}"),
                    "sessionUri": format!("urn:ietf:params:oauth:request_uri:{session}"),
                    "sessionStatus": "IN_PROGRESS",
                }));
            }
            ResourceTokenFault::None | ResourceTokenFault::Throttling => {}
        }
        let token = self.obo(provider, &user_token, &scopes).await?;
        Ok(serde_json::json!({ "accessToken": token.expose() }))
    }

    /// The Entra On-Behalf-Of exchange at the IdP.
    async fn obo(
        &self,
        provider: &CredentialProvider,
        user_token: &Secret,
        scopes: &[String],
    ) -> Result<Secret, AwsError> {
        self.0.counters.obo_exchanges.fetch_add(1, Ordering::Relaxed);
        let scope = scopes.join(" ");
        let form = [
            ("grant_type", JWT_BEARER),
            ("client_id", provider.client_id.as_str()),
            ("client_secret", provider.client_secret.expose()),
            ("assertion", user_token.expose()),
            ("scope", scope.as_str()),
            ("requested_token_use", "on_behalf_of"),
        ];
        let resp =
            self.0.config.client.post(&provider.token_endpoint).form(&form).send().await.map_err(|_| {
                AwsError::internal("the credential provider's token endpoint could not be reached")
            })?;
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|_| AwsError::internal("the credential provider's token endpoint sent no JSON"))?;
        if status.is_success() {
            return match body.get("access_token").and_then(serde_json::Value::as_str) {
                Some(t) if !t.is_empty() => Ok(Secret::new(t)),
                _ => Err(AwsError::internal("the credential provider's token endpoint sent no access_token")),
            };
        }
        // Only the OAuth error code and the AADSTS numbers, never the description (it can
        // quote request parameters).
        let error = body.get("error").and_then(serde_json::Value::as_str).unwrap_or("unknown_error");
        let error = if error.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            error
        } else {
            "unknown_error"
        };
        let codes: Vec<String> = body
            .get("error_codes")
            .and_then(serde_json::Value::as_array)
            .map(|a| a.iter().filter_map(serde_json::Value::as_u64).map(|c| format!("AADSTS{c}")).collect())
            .unwrap_or_default();
        let message = format!(
            "the credential provider's token exchange failed: {error}{}{}",
            if codes.is_empty() { "" } else { " " },
            codes.join(",")
        );
        Err(match error {
            "invalid_client" | "unauthorized_client" | "invalid_scope" | "invalid_resource" => {
                AwsError::validation(message)
            }
            "temporarily_unavailable" | "server_error" | "unknown_error" => AwsError::internal(message),
            _ => AwsError::access_denied(message),
        })
    }
}

/// A fresh workload access token: 32 random bytes, base64url, with a recognisable prefix.
fn random_handle() -> Secret {
    use base64::Engine;
    use rand::RngCore;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    Secret::new(format!("wat-{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)))
}

/// Checks the SigV4 `Authorization` header's shape, and its access key id when `expected` is
/// set. Missing → `UnauthorizedException`-like `MissingAuthenticationTokenException` is what
/// AWS sends (403); a malformed one → `IncompleteSignatureException` (403).
pub fn check_sigv4(headers: &HeaderMap, expected: Option<&str>) -> Result<(), AwsError> {
    let missing = || {
        AwsError::new(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        )
    };
    let incomplete = |what: &str| {
        AwsError::new(
            StatusCode::FORBIDDEN,
            "IncompleteSignatureException",
            format!("the request signature is incomplete: {what}"),
        )
    };
    let value = headers.get(http::header::AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| incomplete("Authorization is not ASCII"))?;
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| incomplete("algorithm must be AWS4-HMAC-SHA256"))?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let credential = credential.ok_or_else(|| incomplete("no Credential"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    // AKID/date/region/service/aws4_request
    if scope.len() != 5 || scope[0].is_empty() || scope[1].len() != 8 || scope[4] != "aws4_request" {
        return Err(incomplete("Credential must be <key>/<date>/<region>/<service>/aws4_request"));
    }
    if scope[3] != "bedrock-agentcore" {
        return Err(incomplete("the credential scope names another service"));
    }
    let signed_headers = signed_headers.ok_or_else(|| incomplete("no SignedHeaders"))?;
    if !signed_headers.split(';').any(|h| h == "host")
        || !signed_headers.split(';').any(|h| h == "x-amz-date")
    {
        return Err(incomplete("SignedHeaders must include host and x-amz-date"));
    }
    let signature = signature.ok_or_else(|| incomplete("no Signature"))?;
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(incomplete("Signature must be 64 hex digits"));
    }
    let date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| incomplete("no x-amz-date header"))?;
    if date.len() != 16 || !date.starts_with(scope[1]) {
        return Err(incomplete("x-amz-date must be YYYYMMDDTHHMMSSZ on the credential's date"));
    }
    if let Some(expected) = expected
        && scope[0] != expected
    {
        return Err(AwsError::new(
            StatusCode::FORBIDDEN,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    Ok(())
}

async fn workload_token(
    State(identity): State<AgentCoreIdentity>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let result = async {
        if headers.contains_key(http::header::AUTHORIZATION) {
            check_sigv4(&headers, identity.0.config.access_key_id.as_deref())?;
        }
        let req: WorkloadTokenRequest = serde_json::from_slice(&body)
            .map_err(|_| AwsError::validation("the request body is not valid JSON"))?;
        let workload = req.workload_name.ok_or_else(|| AwsError::validation("workloadName is required"))?;
        let user = Secret::new(req.user_token.ok_or_else(|| AwsError::validation("userToken is required"))?);
        identity.workload_access_token(&workload, &user).await
    }
    .await;
    match result {
        Ok(wat) => Json(serde_json::json!({ "workloadAccessToken": wat.expose() })).into_response(),
        Err(e) => {
            // Counted in workload_access_token() when it got that far; parsing errors here.
            e.into_response()
        }
    }
}

async fn resource_token(
    State(identity): State<AgentCoreIdentity>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    identity.0.counters.resource_token_calls.fetch_add(1, Ordering::Relaxed);
    let result = async {
        let req: ResourceTokenRequest = serde_json::from_slice(&body)
            .map_err(|_| AwsError::validation("the request body is not valid JSON"))?;
        identity.resource_token(&headers, req).await
    }
    .await;
    match result {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => {
            identity.0.counters.rejected.fetch_add(1, Ordering::Relaxed);
            e.into_response()
        }
    }
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
