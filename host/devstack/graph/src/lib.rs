//! Devstack Microsoft Graph stand-in: a small, protocol-faithful slice of Graph v1.0 for the
//! tools that ask "who am I?" and "who is my manager?", authenticated the way Graph
//! authenticates a delegated Entra token.
//!
//! It stands in for `https://graph.microsoft.com` in `delegate demo` and the tests, so a second
//! downstream audience is exercised for real: the host exchanges Token A On-Behalf-Of the user
//! for a Graph token (scope `https://graph.microsoft.com/User.Read`), and the stand-in refuses
//! any token whose audience is not Graph's (Token A, a ServiceNow token), whose issuer or tenant
//! is not the configured one, or whose `scp` does not allow reading the user.
//!
//! ```no_run
//! # async fn demo(jwks: jsonwebtoken::jwk::JwkSet) -> Result<(), Box<dyn std::error::Error>> {
//! use delegate_devstack_graph::{Graph, GraphConfig, JwksSource};
//! let graph = Graph::new(GraphConfig::new(
//!     "TENANT-ID",
//!     vec!["https://sts.windows.net/TENANT-ID/".to_owned()],
//!     JwksSource::Static(jwks),
//! ))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! axum::serve(listener, graph.router()).await?;
//! # Ok(()) }
//! ```
//!
//! # Surface
//! - `GET /v1.0/me`, `GET /v1.0/me/manager`, `GET /v1.0/users/{id | userPrincipalName}`, each
//!   with `$select` (comma-separated property names, case-insensitive; an unknown one is 400
//!   `BadRequest`). Without `$select` a user has Graph's default properties (`businessPhones`,
//!   `displayName`, `givenName`, `jobTitle`, `mail`, `mobilePhone`, `officeLocation`,
//!   `preferredLanguage`, `surname`, `userPrincipalName`, `id`); `department`,
//!   `accountEnabled` and `companyName` come only when selected.
//! - Answers carry `@odata.context` (`{base}/v1.0/$metadata#users/$entity`, or
//!   `#users(p1,p2)/$entity` with `$select`); the manager is a directoryObject
//!   (`#directoryObjects/$entity`) with `"@odata.type": "#microsoft.graph.user"`.
//! - Errors use Graph's envelope `{"error":{"code","message","innerError":{"date",
//!   "request-id","client-request-id"}}}` and statuses: 401 `InvalidAuthenticationToken` (with
//!   `WWW-Authenticate: Bearer realm="", authorization_uri="…", client_id="00000003-…"`), 403
//!   `Authorization_RequestDenied`, 404 `Request_ResourceNotFound` (unknown user, or no
//!   manager), 400 `BadRequest` (unknown property or path segment, `/me` with an app-only
//!   token), 405 for other methods. Every answer has `request-id` and `client-request-id`
//!   headers (the client's, when it sent one).
//!
//! # Permissions (as Graph's delegated permissions work)
//! - `User.Read` (or any wider user/directory read scope): `/me`, `/me/manager` and
//!   `/users/{own id or UPN}`.
//! - Another user through `/users/{id}`: `User.ReadBasic.All` (only `displayName`,
//!   `givenName`, `surname`, `mail`, `userPrincipalName`, `id`) or `User.Read.All` /
//!   `Directory.Read.All` (everything); with `User.Read` alone it is 403.
//! - App-only tokens (no `scp`) need the role `User.Read.All` or `Directory.Read.All` and can
//!   use `/users/{id}` only.
//! - The user is the token's `oid`, looked up in the token's tenant; users of another tenant
//!   do not exist here.
//!
//! [`Graph::tokens_seen`] records the audience, `oid` and outcome of every token whose
//! signature verified (never the token), so tests can assert which audience reached Graph.

mod api;
mod auth;
pub mod directory;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

pub use auth::{GRAPH_AUDIENCES, JwksSource, Refusal};
/// Re-exported so callers can build a [`JwksSource::Static`] without naming the crate.
pub use jsonwebtoken::jwk::JwkSet;

use crate::auth::Verifier;

/// Microsoft Graph's application id (the `appId` of its service principal in every tenant).
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
/// Graph's resource URI: the `aud` of v1 tokens Entra issues for it.
pub const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";
/// The delegated scope the devstack agent is consented for: read the signed-in user's profile
/// (and manager).
pub const USER_READ_SCOPE: &str = "https://graph.microsoft.com/User.Read";

/// How the stand-in is set up.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// The tenant (`tid`) whose users are served.
    pub tenant: String,
    /// The exact `iss` values accepted (Graph tokens are v1: `https://sts.windows.net/{tid}/`;
    /// list the v2 issuer too to accept v2 tokens).
    pub issuers: Vec<String>,
    /// Where the IdP's signing keys come from.
    pub jwks: JwksSource,
    /// Base URL for `@odata.context` (`https://host:port`, no trailing slash); `None` derives
    /// it from the request's `Host` header with scheme `https`.
    pub base_url: Option<String>,
    /// `authorization_uri` in the `WWW-Authenticate` challenge of a 401.
    pub authorization_uri: String,
    /// Clock leeway for `exp`/`nbf`.
    pub leeway: Duration,
    /// Minimum time between two JWKS fetches triggered by unknown `kid`s.
    pub jwks_refetch_interval: Duration,
}

impl GraphConfig {
    /// A configuration with Graph's defaults: Microsoft's `authorization_uri`, 5 minutes of
    /// leeway (what Entra-protected APIs allow), a JWKS refetch at most once a second.
    pub fn new(tenant: impl Into<String>, issuers: Vec<String>, jwks: JwksSource) -> Self {
        Self {
            tenant: tenant.into(),
            issuers,
            jwks,
            base_url: None,
            authorization_uri: "https://login.microsoftonline.com/common/oauth2/authorize".to_owned(),
            leeway: Duration::from_secs(300),
            jwks_refetch_interval: Duration::from_secs(1),
        }
    }
}

/// Why the stand-in could not be created.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// The configuration is unusable.
    #[error("invalid Graph stand-in configuration: {0}")]
    Config(String),
}

/// What happened to one token that reached the stand-in with a valid signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenToken {
    /// Its `aud` (several joined by a space).
    pub audience: Option<String>,
    /// Its `oid` (the user; the app's service principal for app-only tokens).
    pub oid: Option<String>,
    /// Its `scp`.
    pub scopes: Option<String>,
    /// `None` when it was accepted, else why it was refused.
    pub refused: Option<Refusal>,
}

struct Inner {
    verifier: Verifier,
    tenant: String,
    base_url: RwLock<Option<String>>,
    authorization_uri: String,
    requests: AtomicU64,
    seen: Mutex<Vec<SeenToken>>,
}

/// The Graph stand-in: a cheap handle (clone it freely) to its verifier and records.
#[derive(Clone)]
pub struct Graph {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph").field("tenant", &self.inner.tenant).finish_non_exhaustive()
    }
}

fn normalise_base_url(url: &str) -> Result<String, GraphError> {
    let parsed = url::Url::parse(url).map_err(|e| GraphError::Config(format!("base_url {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(GraphError::Config(format!("base_url {url:?} must be an http(s) URL with a host")));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

impl Graph {
    /// A stand-in serving [`directory::USERS`] of `config.tenant`.
    pub fn new(config: GraphConfig) -> Result<Self, GraphError> {
        if config.tenant.trim().is_empty() {
            return Err(GraphError::Config("tenant is empty".into()));
        }
        if config.issuers.is_empty() || config.issuers.iter().any(|i| i.trim().is_empty()) {
            return Err(GraphError::Config("issuers must name at least one non-empty issuer".into()));
        }
        match &config.jwks {
            JwksSource::Static(set) if set.keys.is_empty() => {
                return Err(GraphError::Config("static JWKS has no keys".into()));
            }
            JwksSource::Remote { url, .. } => {
                let parsed =
                    url::Url::parse(url).map_err(|e| GraphError::Config(format!("jwks url {url:?}: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(GraphError::Config(format!("jwks url {url:?} must be http(s)")));
                }
            }
            JwksSource::Static(_) => {}
        }
        let base_url = config.base_url.as_deref().map(normalise_base_url).transpose()?;
        let verifier = Verifier::new(
            config.issuers,
            config.tenant.clone(),
            config.leeway.as_secs(),
            config.jwks_refetch_interval,
            config.jwks,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                verifier,
                tenant: config.tenant,
                base_url: RwLock::new(base_url),
                authorization_uri: config.authorization_uri,
                requests: AtomicU64::new(0),
                seen: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The `/v1.0` routes. Serve them with `axum::serve` or the devstack TLS helpers.
    pub fn router(&self) -> axum::Router {
        api::router(self.clone())
    }

    /// Sets the base URL used in `@odata.context`, e.g. once the listener's port is known.
    pub fn set_base_url(&self, base_url: Option<&str>) -> Result<(), GraphError> {
        let normalised = base_url.map(normalise_base_url).transpose()?;
        *self.inner.base_url.write().unwrap_or_else(PoisonError::into_inner) = normalised;
        Ok(())
    }

    /// How many requests arrived so far (refused ones included).
    pub fn request_count(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Every token that reached the stand-in with a valid signature, oldest first.
    pub fn tokens_seen(&self) -> Vec<SeenToken> {
        self.inner.seen.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }

    pub(crate) fn tenant(&self) -> &str {
        &self.inner.tenant
    }

    pub(crate) fn authorization_uri(&self) -> &str {
        &self.inner.authorization_uri
    }

    pub(crate) fn count_request(&self) {
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record(&self, token: SeenToken) {
        self.inner.seen.lock().unwrap_or_else(PoisonError::into_inner).push(token);
    }

    pub(crate) fn configured_base_url(&self) -> Option<String> {
        self.inner.base_url.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
