//! Devstack identity provider: Entra ID-compatible discovery, JWKS and token endpoint.
//!
//! A protocol-faithful stand-in for Microsoft Entra ID, so that delegate (and independent
//! client libraries such as MSAL) can be tested end to end on one machine:
//!
//! - per tenant (GUID, verified domain, or `common`/`organizations`):
//!   `GET /{tenant}/v2.0/.well-known/openid-configuration` (issuer
//!   `{base}/{tid}/v2.0`), `GET /{tenant}/.well-known/openid-configuration` (v1, issuer
//!   `https://sts.windows.net/{tid}/` exactly as Entra), `GET /{tenant}/discovery/v2.0/keys`,
//!   `GET /{tenant}/discovery/keys`, `POST /{tenant}/oauth2/v2.0/token`;
//! - `GET /common/userrealm/{user}` (MSAL's home-realm lookup before a password sign-in);
//! - token grants `password`, `client_credentials`, Entra On-Behalf-Of ([`JWT_BEARER_GRANT`]
//!   with `requested_token_use=on_behalf_of`) and RFC 8693 token exchange
//!   ([`TOKEN_EXCHANGE_GRANT`]); Entra-shaped v1/v2 access tokens and v2 id tokens,
//!   Entra-shaped JSON errors (AADSTS codes, `error_codes`, `trace_id`, string `claims`, ...)
//!   with Entra's HTTP statuses;
//! - RS256 keys generated at start, with a rotation hook ([`Idp::rotate_add_key`],
//!   [`Idp::retire_key`]), call counters, outage injection for discovery/JWKS
//!   ([`Idp::set_outage`]) and fault injection for the exchange grants
//!   ([`Idp::set_token_fault`]) for tests.
//!
//! The grant dispatch lives in `token.rs` (`dispatch_grant`); the two exchange grants and the
//! assertion (Token A) validation live in `exchange.rs`.
//!
//! [`IdpServer::start`] runs it over HTTPS on an ephemeral loopback port with a fresh dev CA.

mod client_cert;
mod config;
mod corpus;
mod exchange;
mod keys;
mod server;
mod time;
mod token;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use delegate_secret::Secret;
use jsonwebtoken::Algorithm;

pub use config::{
    AppConfig, AppRoleAssignment, ConsentConfig, IdpConfig, TenantConfig, UserConfig, defaults, is_guid,
};
pub use corpus::{AttackCase, CorpusTarget, Expected, attack_corpus};
pub use token::{TokenSpec, TokenVersion};

use keys::{KeyRing, SigningKey};

/// Why the IdP could not be built or a test helper could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    /// The directory configuration is invalid.
    #[error("invalid IdP configuration: {0}")]
    Config(String),
    /// Key generation or signing failed.
    #[error("signing key error: {0}")]
    Key(String),
    /// A helper named a user, app or tenant that is not in the directory.
    #[error("not in the directory: {0}")]
    NotFound(String),
    /// The TLS certificate for the server could not be made.
    #[error(transparent)]
    Tls(#[from] delegate_devstack_tls::TlsError),
    /// Binding the listener failed.
    #[error("IdP listener: {0}")]
    Io(#[from] std::io::Error),
}

/// How discovery and JWKS behave, for "IdP down" tests. The token endpoint is not affected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Outage {
    /// Normal service.
    #[default]
    None,
    /// Discovery and JWKS answer with this HTTP status and an Entra-shaped error body.
    Status(u16),
    /// Discovery and JWKS accept the request and never answer (exercises client timeouts).
    Hang,
}

/// `grant_type` of Entra On-Behalf-Of (RFC 7523 §2.1 plus `requested_token_use=on_behalf_of`).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// `grant_type` of RFC 8693 token exchange.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 token type of an access token (`subject_token_type`, `issued_token_type`).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 8693 token type of a JWT.
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// A failure the token endpoint injects into the exchange grants (On-Behalf-Of and RFC 8693
/// token exchange), to test how a client copes with a slow, broken or demanding IdP. Other
/// grants (password, client credentials) are never affected, so tests can still sign users in.
///
/// A fault replaces the normal answer (except [`TokenFault::Slow`], which only delays it) and is
/// applied before the request is validated; the request is still counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TokenFault {
    /// Normal service.
    #[default]
    None,
    /// Answer normally after this delay (exercises client timeouts and single-flight).
    Slow(Duration),
    /// Answer with this status (500-599; anything else becomes 503) and an Entra-shaped
    /// `temporarily_unavailable` (503, 504) or `server_error` body, AADSTS90033.
    Status5xx(u16),
    /// Answer 400 `invalid_grant`, `suberror: consent_required`, AADSTS65001, as Entra does when
    /// nobody consented to the middle tier calling the downstream API.
    ConsentRequired,
    /// Answer 400 `interaction_required`, AADSTS50079 (MFA / Conditional Access), with this
    /// claims challenge (JSON object text, e.g. `{"access_token":{"polids":{...}}}`) in the
    /// string-encoded `claims` member.
    InteractionRequired {
        /// The claims challenge, as JSON text.
        claims: String,
    },
    /// Accept the request and never answer.
    Hang,
}

/// The active fault and how many more exchange requests it applies to (`None`: until changed).
#[derive(Debug, Default)]
struct FaultState {
    fault: TokenFault,
    remaining: Option<u32>,
}

/// Request counters, for asserting how often a client really called the IdP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdpCounters {
    /// Discovery document requests (v1 and v2).
    pub discovery: u64,
    /// JWKS requests (v1 and v2).
    pub jwks: u64,
    /// Token endpoint requests by `grant_type` value as sent (missing: `""`).
    pub token_requests: BTreeMap<String, u64>,
}

struct Inner {
    config: IdpConfig,
    keys: RwLock<KeyRing>,
    outage: Mutex<Outage>,
    jwks_max_age: AtomicU64,
    discovery_calls: AtomicU64,
    jwks_calls: AtomicU64,
    token_calls: Mutex<BTreeMap<String, u64>>,
    token_fault: Mutex<FaultState>,
    faults_applied: AtomicU64,
}

/// The identity provider. Cheap to clone; all clones share keys, counters and settings.
#[derive(Clone)]
pub struct Idp(Arc<Inner>);

impl std::fmt::Debug for Idp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idp").field("base_url", &self.0.config.base_url).finish_non_exhaustive()
    }
}

impl Idp {
    /// Builds the IdP from a validated directory and generates its first signing key.
    pub fn new(config: IdpConfig) -> Result<Idp, IdpError> {
        let base_url = config.base_url.clone();
        let config = config.with_base_url(&base_url);
        config.validate()?;
        let first = SigningKey::generate()?;
        Ok(Idp(Arc::new(Inner {
            jwks_max_age: AtomicU64::new(config.jwks_max_age_seconds),
            config,
            keys: RwLock::new(KeyRing { keys: vec![first] }),
            outage: Mutex::new(Outage::None),
            discovery_calls: AtomicU64::new(0),
            jwks_calls: AtomicU64::new(0),
            token_calls: Mutex::new(BTreeMap::new()),
            token_fault: Mutex::new(FaultState::default()),
            faults_applied: AtomicU64::new(0),
        })))
    }

    /// The axum router serving every endpoint (serve it over HTTPS, see [`IdpServer`]).
    pub fn router(&self) -> axum::Router {
        server::router(self.clone())
    }

    /// The directory this IdP serves.
    pub fn config(&self) -> &IdpConfig {
        &self.0.config
    }

    /// The origin every URL is built from.
    pub fn base_url(&self) -> &str {
        &self.0.config.base_url
    }

    /// v2 issuer of `tenant` (id): `{base}/{tid}/v2.0`. Pass `{tenantid}` for the template.
    pub fn issuer(&self, tenant: &str) -> String {
        format!("{}/{tenant}/v2.0", self.base_url())
    }

    /// v1 issuer of `tenant` (id), exactly Entra's: `https://sts.windows.net/{tid}/`.
    pub fn issuer_v1(&self, tenant: &str) -> String {
        format!("https://sts.windows.net/{tenant}/")
    }

    /// v2 discovery URL of `tenant` (id, domain, `common` or `organizations`).
    pub fn discovery_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/v2.0/.well-known/openid-configuration", self.base_url())
    }

    /// v1 discovery URL of `tenant`.
    pub fn discovery_url_v1(&self, tenant: &str) -> String {
        format!("{}/{tenant}/.well-known/openid-configuration", self.base_url())
    }

    /// v2 token endpoint of `tenant`.
    pub fn token_endpoint(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.base_url())
    }

    /// v2 JWKS URL of `tenant`.
    pub fn jwks_uri(&self, tenant: &str) -> String {
        format!("{}/{tenant}/discovery/v2.0/keys", self.base_url())
    }

    /// `kid` of the key that signs new tokens.
    pub fn current_kid(&self) -> String {
        self.keys().current().map(|k| k.kid.clone()).unwrap_or_default()
    }

    /// `kid`s currently published in the JWKS, oldest first.
    pub fn published_kids(&self) -> Vec<String> {
        self.keys().published().map(|k| k.kid.clone()).collect()
    }

    /// Rotation, step 1: generates a key, publishes it and makes it the signing key.
    /// Returns its `kid`.
    pub fn rotate_add_key(&self) -> Result<String, IdpError> {
        let key = SigningKey::generate()?;
        let kid = key.kid.clone();
        self.keys_mut().keys.push(key);
        Ok(kid)
    }

    /// Rotation, step 2: stops publishing `kid` and never signs with it again (the newest live
    /// key signs). Returns whether the key existed and was live. The last live key can be
    /// retired too; then minting fails until [`Idp::rotate_add_key`] is called.
    pub fn retire_key(&self, kid: &str) -> bool {
        let mut ring = self.keys_mut();
        match ring.keys.iter_mut().find(|k| k.kid == kid && !k.retired) {
            Some(key) => {
                key.retired = true;
                true
            }
            None => false,
        }
    }

    /// Makes discovery and JWKS fail (or recover with [`Outage::None`]).
    pub fn set_outage(&self, outage: Outage) {
        *self.0.outage.lock().unwrap_or_else(PoisonError::into_inner) = outage;
    }

    /// Sets the JWKS `Cache-Control: max-age` (seconds) served from now on.
    pub fn set_jwks_max_age(&self, seconds: u64) {
        self.0.jwks_max_age.store(seconds, Ordering::Relaxed);
    }

    /// A snapshot of the request counters.
    pub fn counters(&self) -> IdpCounters {
        IdpCounters {
            discovery: self.0.discovery_calls.load(Ordering::Relaxed),
            jwks: self.0.jwks_calls.load(Ordering::Relaxed),
            token_requests: self.0.token_calls.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        }
    }

    /// Token endpoint requests with this `grant_type` so far.
    pub fn grant_calls(&self, grant_type: &str) -> u64 {
        self.counters().token_requests.get(grant_type).copied().unwrap_or(0)
    }

    /// On-Behalf-Of requests so far ([`JWT_BEARER_GRANT`]), whatever their outcome (also those
    /// answered by a fault or rejected).
    pub fn obo_calls(&self) -> u64 {
        self.grant_calls(JWT_BEARER_GRANT)
    }

    /// RFC 8693 token-exchange requests so far, whatever their outcome.
    pub fn token_exchange_calls(&self) -> u64 {
        self.grant_calls(TOKEN_EXCHANGE_GRANT)
    }

    /// Applies `fault` to every On-Behalf-Of and token-exchange request from now on, until
    /// changed ([`TokenFault::None`] restores normal service).
    pub fn set_token_fault(&self, fault: TokenFault) {
        *self.fault_state() = FaultState { fault, remaining: None };
    }

    /// Applies `fault` to the next `times` On-Behalf-Of / token-exchange requests only (e.g. one
    /// 503 then success, to test a retry); normal service resumes afterwards.
    pub fn set_token_fault_times(&self, fault: TokenFault, times: u32) {
        *self.fault_state() = FaultState { fault, remaining: Some(times) };
    }

    /// How many requests a fault has been applied to so far (all faults, since start).
    pub fn token_faults_applied(&self) -> u64 {
        self.0.faults_applied.load(Ordering::Relaxed)
    }

    /// Mints a delegated access token for `user` (username), as the token endpoint would for
    /// `client` asking for `scopes` (bare scope names) of the resource `audience` (client id or
    /// Application ID URI); the token version follows the resource app's setting (v2 if the
    /// audience is not a registered app). Consent is not checked: this is a test helper.
    pub fn mint_access_token(
        &self,
        user: &str,
        client: &str,
        audience: &str,
        scopes: &[&str],
        lifetime: Duration,
    ) -> Result<Secret, IdpError> {
        let u = self.find_user(user)?;
        let spec = TokenSpec {
            tenant: self.user_tenant(u).to_owned(),
            user: Some(u.username.clone()),
            client_id: client.to_owned(),
            audience: audience.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            roles: Vec::new(),
            version: self.resource_version(audience),
            lifetime,
            client_authenticated: false,
        };
        self.sign_claims(&self.access_token_claims(&spec)?)
    }

    /// Mints an app-only (client-credentials) access token for `client` with `roles`.
    pub fn mint_app_token(
        &self,
        client: &str,
        audience: &str,
        roles: &[&str],
        lifetime: Duration,
    ) -> Result<Secret, IdpError> {
        let spec = TokenSpec {
            tenant: self.home_tenant().id.clone(),
            user: None,
            client_id: client.to_owned(),
            audience: audience.to_owned(),
            scopes: Vec::new(),
            roles: roles.iter().map(|s| (*s).to_owned()).collect(),
            version: self.resource_version(audience),
            lifetime,
            client_authenticated: true,
        };
        self.sign_claims(&self.access_token_claims(&spec)?)
    }

    /// The claims of an Entra-shaped access token for `spec` (edit them to build odd tokens).
    pub fn access_token_claims(
        &self,
        spec: &TokenSpec,
    ) -> Result<serde_json::Map<String, serde_json::Value>, IdpError> {
        token::access_token_claims(self, spec)
    }

    /// Signs `claims` with the current key and Entra's header (`typ`, `alg` RS256, `kid`, and
    /// `x5t` for v1 tokens).
    pub fn sign_claims(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Secret, IdpError> {
        let kid = self.current_kid();
        let mut header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": kid});
        if claims.get("ver").and_then(|v| v.as_str()) == Some("1.0")
            && let Some(h) = header.as_object_mut()
        {
            h.insert("x5t".into(), kid.clone().into());
        }
        let payload = serde_json::to_vec(claims).map_err(|e| IdpError::Key(e.to_string()))?;
        let header = serde_json::to_vec(&header).map_err(|e| IdpError::Key(e.to_string()))?;
        self.sign_jws(&header, &payload, &kid, Algorithm::RS256).map(Secret::new)
    }

    /// Low-level: a JWS compact token over exactly these header and payload bytes, signed with
    /// key `kid` (live or retired) using `alg` (an RSA algorithm). For attack tokens whose
    /// header or payload a serializer would not produce (duplicate keys, odd parameters).
    pub fn sign_jws(
        &self,
        header: &[u8],
        payload: &[u8],
        kid: &str,
        alg: Algorithm,
    ) -> Result<String, IdpError> {
        let input = keys::signing_input(header, payload);
        let ring = self.keys();
        let key = ring.get(kid).ok_or_else(|| IdpError::NotFound(format!("key {kid}")))?;
        let signature = key.sign(input.as_bytes(), alg)?;
        Ok(format!("{input}.{signature}"))
    }

    /// SPKI PEM of key `kid`'s public half (public information).
    pub fn public_key_pem(&self, kid: &str) -> Option<String> {
        self.keys().get(kid).map(|k| k.public_pem.clone())
    }

    /// `n` and `e` (base64url) of key `kid`.
    pub fn public_key_components(&self, kid: &str) -> Option<(String, String)> {
        self.keys().get(kid).map(|k| (k.n.clone(), k.e.clone()))
    }

    // ---- internals shared by the modules ----

    fn keys(&self) -> std::sync::RwLockReadGuard<'_, KeyRing> {
        self.0.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn keys_mut(&self) -> std::sync::RwLockWriteGuard<'_, KeyRing> {
        self.0.keys.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn home_tenant(&self) -> &TenantConfig {
        // `validate` guarantees at least one tenant.
        &self.0.config.tenants[0]
    }

    pub(crate) fn tenant(&self, id_or_domain: &str) -> Option<&TenantConfig> {
        self.0
            .config
            .tenants
            .iter()
            .find(|t| t.id.eq_ignore_ascii_case(id_or_domain) || t.domain.eq_ignore_ascii_case(id_or_domain))
    }

    pub(crate) fn user_tenant<'a>(&'a self, user: &'a UserConfig) -> &'a str {
        user.tenant.as_deref().unwrap_or(&self.home_tenant().id)
    }

    pub(crate) fn find_user(&self, username: &str) -> Result<&UserConfig, IdpError> {
        self.0
            .config
            .users
            .iter()
            .find(|u| u.username.eq_ignore_ascii_case(username))
            .ok_or_else(|| IdpError::NotFound(format!("user {username}")))
    }

    pub(crate) fn app(&self, client_id: &str) -> Option<&AppConfig> {
        self.0.config.apps.iter().find(|a| a.client_id.eq_ignore_ascii_case(client_id))
    }

    /// The app registration a resource identifier (client id, `api://...` URI) names.
    pub(crate) fn resource_app(&self, identifier: &str) -> Option<&AppConfig> {
        let id = identifier.trim_end_matches('/');
        self.0.config.apps.iter().find(|a| {
            a.client_id.eq_ignore_ascii_case(id)
                || a.identifier_uris.iter().any(|u| u.trim_end_matches('/') == id)
        })
    }

    fn resource_version(&self, audience: &str) -> TokenVersion {
        match self.resource_app(audience).map(|a| a.access_token_version) {
            Some(1) => TokenVersion::V1,
            _ => TokenVersion::V2,
        }
    }

    pub(crate) fn outage(&self) -> Outage {
        *self.0.outage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn count_discovery(&self) {
        self.0.discovery_calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_jwks(&self) {
        self.0.jwks_calls.fetch_add(1, Ordering::Relaxed);
    }

    fn fault_state(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.0.token_fault.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fault to apply to this exchange request, consuming one use of a counted fault.
    pub(crate) fn take_token_fault(&self) -> TokenFault {
        let mut state = self.fault_state();
        let fault = match (&state.fault, state.remaining) {
            (TokenFault::None, _) | (_, Some(0)) => TokenFault::None,
            (fault, remaining) => {
                let fault = fault.clone();
                state.remaining = remaining.map(|n| n - 1);
                fault
            }
        };
        if fault != TokenFault::None {
            self.0.faults_applied.fetch_add(1, Ordering::Relaxed);
        }
        fault
    }

    pub(crate) fn find_user_by_oid(&self, oid: &str) -> Option<&UserConfig> {
        self.0.config.users.iter().find(|u| u.oid.eq_ignore_ascii_case(oid))
    }

    /// `n` and `e` of `kid` if it is published (live): the only keys assertions may be signed
    /// with, like Entra, which validates against its current key set.
    pub(crate) fn live_key_components(&self, kid: &str) -> Option<(String, String)> {
        self.keys().published().find(|k| k.kid == kid).map(|k| (k.n.clone(), k.e.clone()))
    }

    pub(crate) fn count_token(&self, grant_type: &str) {
        *self
            .0
            .token_calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(grant_type.to_owned())
            .or_default() += 1;
    }

    pub(crate) fn jwks_max_age(&self) -> u64 {
        self.0.jwks_max_age.load(Ordering::Relaxed)
    }

    pub(crate) fn jwks_json(&self, issuer: Option<&str>) -> serde_json::Value {
        let keys: Vec<_> = self.keys().published().map(|k| k.jwk_json(issuer)).collect();
        serde_json::json!({ "keys": keys })
    }
}

/// A random base64url token id (Entra's `uti`, 22 characters).
pub(crate) fn random_id() -> String {
    URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
}

/// The IdP served over HTTPS on `127.0.0.1:<ephemeral>` with a fresh dev CA.
///
/// Dropping it stops the server.
#[derive(Debug)]
pub struct IdpServer {
    idp: Idp,
    ca_pem: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl IdpServer {
    /// Binds `127.0.0.1:0`, generates the CA and server certificate, and starts serving
    /// `config` (its `base_url` is replaced by the real `https://127.0.0.1:<port>`).
    pub async fn start(config: IdpConfig) -> Result<IdpServer, IdpError> {
        Self::start_on(config, std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Like [`IdpServer::start`], on a chosen loopback address. MSAL for Python looks up the
    /// home realm (`/common/userrealm/...`) on port 443 of the authority's host whatever port
    /// the authority names, so clients that sign users in with MSAL's password flow need the
    /// IdP on `127.0.0.1:443`.
    pub async fn start_on(config: IdpConfig, addr: std::net::SocketAddr) -> Result<IdpServer, IdpError> {
        let ca = delegate_devstack_tls::DevCa::generate()?;
        Self::start_with_ca(config, addr, &ca).await
    }

    /// Like [`IdpServer::start_on`], with a server certificate from `ca`, so that several
    /// devstack services (IdP, ServiceNow, Bedrock) can share one CA and clients need one file.
    pub async fn start_with_ca(
        config: IdpConfig,
        addr: std::net::SocketAddr,
        ca: &delegate_devstack_tls::DevCa,
    ) -> Result<IdpServer, IdpError> {
        Self::start_with_faults(config, addr, ca, None).await
    }

    /// Like [`IdpServer::start_with_ca`], with every request (discovery, JWKS, token endpoint)
    /// going through `faults` when given (see [`delegate_devstack_tls::FaultSwitch`]).
    pub async fn start_with_faults(
        config: IdpConfig,
        addr: std::net::SocketAddr,
        ca: &delegate_devstack_tls::DevCa,
        faults: Option<delegate_devstack_tls::FaultSwitch>,
    ) -> Result<IdpServer, IdpError> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let base_url = match local.port() {
            443 => format!("https://{}", local.ip()),
            port => format!("https://{}:{port}", local.ip()),
        };
        let idp = Idp::new(config.with_base_url(&base_url))?;
        let tls = ca.server_config(&["127.0.0.1", "localhost"])?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = idp.router();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            let served = match faults {
                Some(faults) => {
                    delegate_devstack_tls::serve_https_with_faults(listener, router, tls, shutdown, faults)
                        .await
                }
                None => delegate_devstack_tls::serve_https(listener, router, tls, shutdown).await,
            };
            if let Err(error) = served {
                tracing::warn!(%error, "devstack IdP server stopped");
            }
        });
        Ok(IdpServer { idp, ca_pem: ca.ca_pem(), stop: Some(stop) })
    }

    /// The IdP (keys, counters, outage switch, minting helpers).
    pub fn idp(&self) -> &Idp {
        &self.idp
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        self.idp.base_url()
    }

    /// The CA certificate (PEM) clients must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
}

impl Drop for IdpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests;
