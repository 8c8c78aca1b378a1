//! The AgentCore Runtime HTTP contract: `POST /invocations` and `GET /ping`.
//!
//! Per request: validate headers (session id, request id) → authorize the bearer token into a
//! [`VerifiedCaller`] (rejections end here, before any plugin code runs) → read the body
//! within its limit → take a concurrency slot → run the plugin and stream its text as
//! server-sent events (or one JSON answer if the client asks for `application/json`).
//! Every error is mapped in [`errors`].

pub mod admin;
pub mod errors;
pub mod inbound;
mod invocations;
pub mod load;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use delegate_auth::VerifiedCaller;
use delegate_runtime::PluginRegistry;
use errors::ApiError;
pub use inbound::InboundAuthorizer;
use load::Load;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Header carrying the AgentCore session id.
pub const SESSION_ID_HEADER: &str = "x-amzn-bedrock-agentcore-runtime-session-id";
/// Header carrying the AgentCore request id (honoured, or generated and echoed).
pub const REQUEST_ID_HEADER: &str = "x-amzn-bedrock-agentcore-runtime-request-id";
/// Response header: the invocation id used in logs and audit records.
pub const INVOCATION_ID_HEADER: &str = "x-delegate-invocation-id";
/// Request header: the plugin to invoke (default: the runtime's default plugin). Response
/// header: `name@sha256:…` of the plugin version that served the invocation.
pub const PLUGIN_HEADER: &str = "x-delegate-plugin";
/// Request header naming the plugin as AgentCore Runtime forwards it: only
/// `X-Amzn-Bedrock-AgentCore-Runtime-Custom-*` headers pass its allow-list.
pub const AGENTCORE_PLUGIN_HEADER: &str = "x-amzn-bedrock-agentcore-runtime-custom-delegate-plugin";
/// Response header: the version (from its manifest) of the plugin that served the invocation.
pub const PLUGIN_VERSION_HEADER: &str = "x-delegate-plugin-version";

/// A rejected bearer token, as the authorizer classifies it. `reason` names the failed check
/// for the log only; callers see one generic code per class, so a response never tells an
/// attacker which check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRejection {
    /// Missing, malformed, expired or otherwise invalid token → 401 `invalid_token`.
    Unauthenticated {
        /// The failed check (logged, not returned).
        reason: &'static str,
    },
    /// Valid token whose client, scopes or claims are not allowed → 403.
    Forbidden {
        /// The failed check (logged, not returned).
        reason: &'static str,
        /// Whether it is a missing scope (`insufficient_scope`).
        insufficient_scope: bool,
    },
    /// No signing keys could be loaded yet (IdP unreachable since start) → 503.
    Unavailable {
        /// The failed check (logged, not returned).
        reason: &'static str,
    },
    /// A valid token whose delegation chain (nested `act` claims) is longer than
    /// `auth.max_chain_depth` → 403 `chain_depth_exceeded`. Not a secret: the caller (an agent
    /// host) must learn that it is the chain, not its credentials, that was refused.
    ChainTooDeep {
        /// The chain depth counted (`act` claims or the signed hop counter).
        depth: usize,
        /// The configured limit.
        max: usize,
    },
    /// A valid token whose signed hop counter header is malformed, does not verify (another
    /// hop key, another token), or is missing from a client in `auth.hop_required_from` →
    /// 401 `invalid_hop`. Named to the caller (an agent host, after its token verified) so
    /// that a hop-key mismatch between hosts is not mistaken for a bad token.
    InvalidHop {
        /// What is wrong with the header (logged, never its content).
        reason: &'static str,
    },
}

impl Authorize for delegate_auth::Authorizer {
    fn authorize<'a>(&'a self, headers: &'a HeaderMap) -> AuthFuture<'a> {
        Box::pin(async move {
            delegate_auth::Authorizer::authorize(self, headers).await.map_err(|e| {
                match e {
                    delegate_auth::AuthError::ChainTooDeep { depth, max } => {
                        return AuthRejection::ChainTooDeep { depth, max };
                    }
                    delegate_auth::AuthError::InvalidHop(reason) => {
                        return AuthRejection::InvalidHop { reason };
                    }
                    _ => {}
                }
                let reason = e.code();
                match e.status_class() {
                    delegate_auth::AuthFailure::Unauthenticated => AuthRejection::Unauthenticated { reason },
                    delegate_auth::AuthFailure::Forbidden => AuthRejection::Forbidden {
                        reason,
                        insufficient_scope: matches!(e, delegate_auth::AuthError::Scope),
                    },
                    delegate_auth::AuthFailure::Unavailable => AuthRejection::Unavailable { reason },
                }
            })
        })
    }
}

/// Future returned by [`Authorize::authorize`].
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<VerifiedCaller, AuthRejection>> + Send + 'a>>;

/// Turns request headers into a [`VerifiedCaller`]. The only way into a plugin.
pub trait Authorize: Send + Sync + 'static {
    /// Verifies the request's credentials.
    fn authorize<'a>(&'a self, headers: &'a HeaderMap) -> AuthFuture<'a>;
}

/// Server settings the handlers need.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest accepted body in bytes.
    pub max_body_bytes: usize,
    /// Concurrent invocations.
    pub max_concurrency: usize,
    /// `Retry-After` seconds on 503.
    pub retry_after_seconds: u32,
}

impl ServerOptions {
    /// From validated config.
    pub fn from_settings(s: &delegate_config::ServerSettings) -> Self {
        Self {
            max_body_bytes: s.max_body_bytes,
            max_concurrency: s.max_concurrency,
            retry_after_seconds: s.retry_after_seconds,
        }
    }
}

/// Shared state of the HTTP handlers.
pub struct AppState {
    pub(crate) plugins: Arc<PluginRegistry>,
    pub(crate) authorizer: Arc<dyn Authorize>,
    pub(crate) load: Arc<Load>,
    pub(crate) options: ServerOptions,
    pub(crate) draining: AtomicBool,
    pub(crate) metrics: Arc<delegate_metrics::Metrics>,
}

impl AppState {
    /// State serving the plugins of `plugins`, with metrics of its own.
    pub fn new(
        plugins: Arc<PluginRegistry>,
        authorizer: Arc<dyn Authorize>,
        options: ServerOptions,
    ) -> Arc<Self> {
        Self::with_metrics(plugins, authorizer, options, delegate_metrics::Metrics::new())
    }

    /// State serving the plugins of `plugins`, recording into the process's `metrics`.
    pub fn with_metrics(
        plugins: Arc<PluginRegistry>,
        authorizer: Arc<dyn Authorize>,
        options: ServerOptions,
        metrics: Arc<delegate_metrics::Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            plugins,
            authorizer,
            load: Load::new(options.max_concurrency),
            options,
            draining: AtomicBool::new(false),
            metrics,
        })
    }

    /// Stops taking new invocations (503) while in-flight ones finish.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// The plugins served.
    pub fn plugins(&self) -> &Arc<PluginRegistry> {
        &self.plugins
    }

    /// The concurrency tracker.
    pub fn load(&self) -> &Arc<Load> {
        &self.load
    }
}

/// The router: `POST /invocations`, `GET /ping`, JSON errors for everything else.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/invocations", post(invocations::invoke))
        .route("/ping", get(ping))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}

async fn ping(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> axum::Json<serde_json::Value> {
    let (status, since) = state.load.status();
    axum::Json(serde_json::json!({ "status": status.as_str(), "time_of_last_update": since }))
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests
/// (including open SSE streams) finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Small SSE chunks must leave at once: without TCP_NODELAY, Nagle's algorithm and delayed
    // ACKs add tens of milliseconds per chunk.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
