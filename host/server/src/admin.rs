//! The admin API: list, deploy, roll back and remove plugin versions.
//!
//! It is served on its own listener (loopback by default, see `[admin]` in the config), never
//! on the public AgentCore listener, and every request needs the operator's admin bearer
//! token, compared in constant time. Deploy decisions (manifest, digest, grants) belong to
//! the [`PluginAdmin`] implementation; this module is the HTTP mechanism around it and the
//! registry.
//!
//! | Method | Path | Does |
//! |---|---|---|
//! | `GET` | `/admin/plugins` | every configured plugin, its active and previous version |
//! | `PUT` | `/admin/plugins/{name}` | deploys `{"manifest": "<toml>", "component": "<base64 wasm>"}`, or `{"oci": "oci://registry/repo@sha256:..."}` (pulled by digest) |
//! | `POST` | `/admin/plugins/{name}/rollback` | swaps the active and the previous version |
//! | `DELETE` | `/admin/plugins/{name}` | empties a non-default plugin's slot |
//! | `GET` | `/metrics` | Prometheus metrics (OpenMetrics text) |

use crate::errors::AdminError;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use delegate_runtime::{Deployment, PluginRegistry};
use delegate_secret::Secret;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A deploy request, decoded.
#[derive(Debug)]
pub struct DeployRequest {
    /// The manifest's TOML text.
    pub manifest: String,
    /// The component bytes.
    pub component: Vec<u8>,
}

/// What a deploy did.
#[derive(Debug, Clone)]
pub struct DeployOutcome {
    /// The version now active.
    pub active: Deployment,
    /// The version it replaced (now the previous one), if any.
    pub replaced: Option<Deployment>,
    /// The same version and digest were already active: nothing changed.
    pub unchanged: bool,
}

/// Why a deploy was refused. Every case leaves the active version serving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeployRefusal {
    /// The operator's config has no plugin of that name.
    #[error("no plugin named `{0}` is configured by the operator")]
    UnknownPlugin(String),
    /// The manifest does not parse or validate.
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    /// The manifest names another plugin.
    #[error("the manifest is for plugin `{manifest}`, not `{target}`")]
    NameMismatch {
        /// Name in the URL.
        target: String,
        /// Name in the manifest.
        manifest: String,
    },
    /// The component bytes do not have the manifest's digest.
    #[error("the component's digest is {actual}, the manifest pins {expected}")]
    DigestMismatch {
        /// The manifest's digest.
        expected: String,
        /// The bytes' digest.
        actual: String,
    },
    /// The manifest asks for more than the operator grants.
    #[error("not granted: {0}")]
    NotGranted(String),
    /// The component is larger than `admin.max_component_mib`.
    #[error("the component is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The bytes are not a wasm component.
    #[error("not a wasm component (a core module or other bytes); build for wasm32-wasip2")]
    NotAComponent,
    /// The component does not validate or compile.
    #[error("the component does not compile: {0}")]
    Compile(String),
    /// The component needs imports delegate does not provide, or lacks the `invoke` export.
    #[error("the component does not fit the delegate:agent world: {0}")]
    World(String),
    /// The component compiles but cannot be instantiated within its limits or the pool's
    /// per-slot budget (too many core instances, memories or tables, too much initial memory).
    #[error("the component cannot be instantiated within its limits: {0}")]
    NotInstantiable(String),
    /// Something on the host failed (e.g. a compile thread died).
    #[error("deploy failed on the host: {0}")]
    Internal(String),
    /// The OCI reference does not parse, or names a tag instead of a digest.
    #[error("{0}")]
    InvalidReference(String),
    /// The registry has no manifest or blob of that digest.
    #[error("{0}")]
    ArtifactNotFound(String),
    /// The registry could not be reached (and the digest is not in the local cache), refused
    /// the credentials, or answered with an error.
    #[error("{0}")]
    RegistryUnavailable(String),
    /// A manifest or blob from the registry did not hash to the digest that names it.
    #[error("{0}")]
    ArtifactTampered(String),
    /// The pulled manifest is not a delegate plugin artifact (media types, layers, sizes).
    #[error("{0}")]
    InvalidArtifact(String),
}

/// Future returned by [`PluginAdmin::deploy`].
pub type DeployFuture<'a> = Pin<Box<dyn Future<Output = Result<DeployOutcome, DeployRefusal>> + Send + 'a>>;

/// Validates and activates a new plugin version: the policy side of a deploy.
pub trait PluginAdmin: Send + Sync + 'static {
    /// Checks `request` against the operator's grants for plugin `name`, compiles it and makes
    /// it the active version. Must leave the active version untouched on any refusal.
    fn deploy<'a>(&'a self, name: &'a str, request: DeployRequest) -> DeployFuture<'a>;

    /// Pulls the artifact `reference` (`oci://registry/repository@sha256:...`) and deploys it
    /// like [`PluginAdmin::deploy`]. Without an OCI client every such deploy is refused.
    fn deploy_reference<'a>(&'a self, name: &'a str, reference: &'a str) -> DeployFuture<'a> {
        let _ = name;
        Box::pin(async move {
            Err(DeployRefusal::InvalidReference(format!(
                "{reference}: this host does not pull from OCI registries"
            )))
        })
    }
}

/// Settings of the admin API.
pub struct AdminOptions {
    /// The bearer token callers must present.
    pub token: Secret,
    /// Largest component accepted by a deploy, in bytes.
    pub max_component_bytes: usize,
    /// The process's metrics, served at `GET /metrics`.
    pub metrics: Arc<delegate_metrics::Metrics>,
}

struct AdminState {
    registry: Arc<PluginRegistry>,
    deployer: Arc<dyn PluginAdmin>,
    options: AdminOptions,
}

/// The admin router (serve it on the admin listener only).
pub fn router(
    registry: Arc<PluginRegistry>,
    deployer: Arc<dyn PluginAdmin>,
    options: AdminOptions,
) -> Router {
    // Base64 grows the component by 4/3; the manifest and JSON framing get 1 MiB.
    let body_limit = options.max_component_bytes.saturating_mul(4) / 3 + (1 << 20);
    let state = Arc::new(AdminState { registry, deployer, options });
    Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/plugins", get(list))
        .route("/admin/plugins/{name}", axum::routing::put(deploy).delete(remove))
        .route("/admin/plugins/{name}/rollback", post(rollback))
        .method_not_allowed_fallback(|| async { AdminError::MethodNotAllowed })
        .fallback(|| async { AdminError::NotFound })
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), authenticate))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Refuses every request without the admin token, before routing (so unauthenticated
/// callers cannot even learn which routes exist).
async fn authenticate(
    State(state): State<Arc<AdminState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !bearer_matches(request.headers(), &state.options.token) {
        tracing::warn!(path = %request.uri().path(), "admin request refused: missing or wrong admin token");
        return AdminError::Unauthenticated.into_response();
    }
    next.run(request).await
}

fn bearer_matches(headers: &HeaderMap, token: &Secret) -> bool {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else { return false };
    let Ok(value) = value.to_str() else { return false };
    let Some((scheme, given)) = value.split_once(' ') else { return false };
    scheme.eq_ignore_ascii_case("bearer") && token.matches(given.trim())
}

fn version_json(d: &Deployment) -> serde_json::Value {
    let deployed_at = time::OffsetDateTime::from(d.deployed_at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    serde_json::json!({
        "version": d.plugin.version(),
        "digest": d.plugin.digest(),
        "deployed_at": deployed_at,
        "from_cache": d.compile.from_cache,
        "load_ms": u64::try_from(d.compile.took.as_millis()).unwrap_or(u64::MAX),
        // The `oci://…@sha256:…` reference it was pulled from; null for an upload or a file.
        "source": d.source,
    })
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    ([(header::CONTENT_TYPE, delegate_metrics::CONTENT_TYPE)], state.options.metrics.encode()).into_response()
}

async fn list(State(state): State<Arc<AdminState>>) -> Response {
    let slots = state.registry.snapshot();
    let plugins: Vec<_> = slots
        .iter()
        .map(|(name, slot)| {
            serde_json::json!({
                "name": name,
                "default": name == state.registry.default_name(),
                "active": slot.active.as_ref().map(version_json),
                "previous": slot.previous.as_ref().map(version_json),
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "plugins": plugins })).into_response()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    manifest: Option<String>,
    /// Standard base64 of the component.
    component: Option<String>,
    /// Instead of `manifest` + `component`: an `oci://...@sha256:...` reference to pull.
    oci: Option<String>,
}

async fn deploy(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    body: Result<axum::Json<DeployBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, AdminError> {
    let result = deploy_inner(&state, &name, body).await;
    if let Err(e) = &result {
        // Label values must stay bounded: count refusals for unconfigured names under `-`.
        let plugin = if state.registry.is_configured(&name) { name.as_str() } else { "-" };
        state.options.metrics.record_deploy(plugin, e.parts().1);
    }
    result
}

async fn deploy_inner(
    state: &Arc<AdminState>,
    name: &str,
    body: Result<axum::Json<DeployBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, AdminError> {
    let name = name.to_owned();
    let axum::Json(body) = body.map_err(|e| match e {
        axum::extract::rejection::JsonRejection::BytesRejection(_) => {
            AdminError::Refused(DeployRefusal::TooLarge { limit: state.options.max_component_bytes })
        }
        other => AdminError::BadRequest(other.body_text()),
    })?;
    if !state.registry.is_configured(&name) {
        return Err(AdminError::Refused(DeployRefusal::UnknownPlugin(name)));
    }
    let (manifest, component) = match (body.manifest, body.component, body.oci) {
        (Some(manifest), Some(component), None) => (manifest, component),
        (None, None, Some(reference)) => {
            let outcome = state.deployer.deploy_reference(&name, &reference).await.map_err(|refusal| {
                tracing::warn!(plugin = %name, %reference, error = %refusal, "deploy refused");
                AdminError::Refused(refusal)
            })?;
            return Ok(deployed(&name, &outcome));
        }
        _ => {
            return Err(AdminError::BadRequest(
                "give `manifest` and `component`, or `oci` (a digest reference), not both".into(),
            ));
        }
    };
    let component = base64::engine::general_purpose::STANDARD
        .decode(component.as_bytes())
        .map_err(|e| AdminError::BadRequest(format!("`component` is not standard base64: {e}")))?;
    if component.len() > state.options.max_component_bytes {
        return Err(AdminError::Refused(DeployRefusal::TooLarge {
            limit: state.options.max_component_bytes,
        }));
    }
    let outcome =
        state.deployer.deploy(&name, DeployRequest { manifest, component }).await.map_err(|refusal| {
            tracing::warn!(plugin = %name, error = %refusal, "deploy refused");
            AdminError::Refused(refusal)
        })?;
    Ok(deployed(&name, &outcome))
}

/// Logs a deploy and renders its answer.
fn deployed(name: &str, outcome: &DeployOutcome) -> Response {
    tracing::info!(
        plugin = %name,
        version = outcome.active.plugin.version(),
        digest = outcome.active.plugin.digest(),
        replaced = outcome.replaced.as_ref().map(|d| d.plugin.version()),
        source = outcome.active.source.as_deref(),
        unchanged = outcome.unchanged,
        "plugin deployed"
    );
    axum::Json(serde_json::json!({
        "name": name,
        "active": version_json(&outcome.active),
        "previous": outcome.replaced.as_ref().map(version_json),
        "unchanged": outcome.unchanged,
    }))
    .into_response()
}

async fn rollback(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Response, AdminError> {
    let done = state.registry.rollback(&name).map_err(AdminError::Registry)?;
    tracing::info!(
        plugin = %name, from = done.from.plugin.version(), to = done.to.plugin.version(),
        "plugin rolled back"
    );
    Ok(axum::Json(serde_json::json!({
        "name": name,
        "active": version_json(&done.to),
        "previous": version_json(&done.from),
    }))
    .into_response())
}

async fn remove(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Response, AdminError> {
    let removed = state.registry.remove(&name).map_err(AdminError::Registry)?;
    tracing::info!(plugin = %name, version = removed.plugin.version(), "plugin removed");
    Ok(axum::Json(serde_json::json!({ "name": name, "removed": version_json(&removed) })).into_response())
}
