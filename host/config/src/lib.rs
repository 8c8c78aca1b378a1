//! delegate's configuration file (TOML).
//!
//! Two steps, like ripgrep's arguments: [`raw`] mirrors the file exactly (every table
//! `deny_unknown_fields`, so a typo is an error, not a silent default), then [`Config::from_toml`]
//! validates it into domain types that cannot hold an invalid value. Every error names the key
//! it is about, in one line.

mod manifest;
mod raw;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use manifest::{Grant, LimitRequest, Manifest};
pub use validate::ConfigError;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The public listener and request handling.
    pub server: ServerSettings,
    /// The wasm engine shared by all plugins.
    pub engine: EngineSettings,
    /// Plugins, in file order; exactly one is the default.
    pub plugins: Vec<PluginSettings>,
    /// The model provider, if one is configured (without it, model calls answer `unavailable`).
    pub model: Option<delegate_model::ModelSettings>,
    /// The inbound JWT authorizer. Required: delegate never runs a plugin for an unverified
    /// caller.
    pub auth: delegate_auth::AuthSettings,
    /// How outbound HTTPS clients (discovery/JWKS, token endpoints, egress) are built.
    pub outbound: delegate_outbound::OutboundConfig,
    /// Credential providers for the token vault (Token B On-Behalf-Of the user, ...).
    pub vault: delegate_vault::VaultSettings,
    /// Where audit records (one JSON line per credential use and per denial) go.
    pub audit: AuditTarget,
    /// The admin API (deploy, roll back, remove plugins), if an `[admin]` section is present.
    pub admin: Option<AdminSettings>,
    /// OCI registries plugins are pulled from: plain-HTTP (loopback) registries, credentials.
    pub oci: delegate_oci::OciSettings,
    /// OTLP trace export, if a `[telemetry]` section is present (off by default).
    pub telemetry: Option<TelemetrySettings>,
}

/// `[telemetry]`: where and how `tracing` spans are exported over OTLP/HTTP (protobuf).
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// The collector's traces URL, e.g. `http://127.0.0.1:4318/v1/traces`: `https`, or `http`
    /// to a loopback host (or anywhere with `allow_plain_http`); no user info.
    pub otlp_endpoint: String,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Share of traces exported, 0.0-1.0, decided on the trace id (so every host of a chain
    /// decides the same way for one trace).
    pub sample_ratio: f64,
    /// Time limit of one export request.
    pub export_timeout: Duration,
    /// How often queued spans are sent (sooner when a batch fills).
    pub batch_interval: Duration,
    /// Spans queued for export at most; beyond it new spans are dropped (and counted).
    pub queue_spans: usize,
    /// Whether plain `http` to a non-loopback collector was explicitly allowed.
    pub allow_plain_http: bool,
}

/// The admin API listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Address to listen on; a loopback address unless `allow_remote`.
    pub listen: SocketAddr,
    /// Where the admin bearer token comes from (read by the app at start, not by the config).
    pub token: AdminTokenSource,
    /// Whether `listen` may be a non-loopback address.
    pub allow_remote: bool,
    /// Largest component accepted by the admin API, in bytes.
    pub max_component_bytes: usize,
}

/// Where the admin API's bearer token is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTokenSource {
    /// A file (resolved against the config file's directory); a trailing newline is not part
    /// of the token.
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
}

/// Where a plugin's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// A component file (`component = "..."`), resolved against the config file's directory.
    Component(PathBuf),
    /// A plugin manifest (`manifest = "..."`, see [`Manifest`]), resolved against the config
    /// file's directory; the manifest names the component and its digest.
    Manifest(PathBuf),
    /// A plugin artifact in an OCI registry, pinned by its manifest digest (`source =
    /// "oci://registry/repository@sha256:..."`): pulled (or read from the local blob cache) at
    /// start, then checked like a manifest.
    Oci(delegate_oci::Reference),
}

/// Where audit records are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// Standard output (the default: container log collectors pick it up).
    Stdout,
    /// Appended to a file (created with mode 0600).
    File(PathBuf),
}

/// The AgentCore-contract listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Address to listen on (`0.0.0.0:8080` for AgentCore Runtime).
    pub listen: SocketAddr,
    /// Invocations served at once; beyond it `/invocations` answers 503 and `/ping` says
    /// `HealthyBusy`.
    pub max_concurrency: usize,
    /// Largest accepted request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// `Retry-After` seconds sent with a 503.
    pub retry_after_seconds: u32,
    /// How long a shutdown waits for in-flight invocations.
    pub shutdown_grace: Duration,
    /// How callers are established: who verifies them, and whether AgentCore Runtime's
    /// workload access token is used.
    pub inbound: InboundMode,
    /// Threads of the async runtime that runs everything (HTTP, guests, outbound calls);
    /// `None`: one per available core. One thread serves a single caller at a time with less
    /// CPU (no cross-thread wake-ups; BENCHMARKS.md) but uses at most one core.
    pub worker_threads: Option<usize>,
}

/// `server.inbound`: how `/invocations` establishes the caller (docs/agentcore.md, "Inbound
/// modes and what is trusted").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InboundMode {
    /// `"standalone"` (default): delegate verifies `Authorization` itself; a
    /// `WorkloadAccessToken` header is ignored (never used, never forwarded).
    #[default]
    Standalone,
    /// `"agentcore"`: behind AgentCore Runtime's customJWTAuthorizer with `Authorization`
    /// allow-listed. delegate still verifies `Authorization` (required); the workload access
    /// token, when present, is handed to `agentcore_identity` providers.
    AgentCore,
    /// `"agentcore_workload_token"` (opt-in): as `agentcore`, and a request that carries only
    /// a workload access token (no `Authorization`) is served for a caller delegate has not
    /// verified: pseudonymous, without claims, usable only with `agentcore_identity`
    /// providers. An `Authorization` header, when present, must still verify.
    AgentCoreWorkloadToken,
}

/// Engine-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSettings {
    /// Length of one epoch tick: the granularity of CPU accounting and of yielding to other
    /// tasks.
    pub epoch_tick: Duration,
    /// Pool slots for concurrently live instances (defaults to `server.max_concurrency`).
    pub pool_instances: u32,
    /// Where precompiled plugin artifacts are cached (resolved against the config file's
    /// directory); `None` compiles every component at load.
    pub cache_dir: Option<PathBuf>,
    /// Write `/tmp/perf-<pid>.map` so `perf` names the plugins' compiled functions (off by
    /// default: a profiling aid, it names plugin internals in a world-readable file).
    pub perf_map: bool,
}

/// Per-invocation limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory, in bytes, summed over the component's memories.
    pub memory_bytes: u64,
    /// Table elements per table.
    pub table_elements: u64,
    /// Time spent running guest code (time waiting on the host does not count).
    pub cpu: Duration,
    /// Total time of the invocation, waiting included.
    pub wall_clock: Duration,
    /// Bytes of text the plugin may send to the caller.
    pub output_bytes: u64,
    /// Bytes the plugin may write to stdout/stderr (captured into the host log).
    pub log_bytes: u64,
    /// Model calls per invocation.
    pub model_calls: u32,
    /// Model tokens (input + output, as reported by the provider) per invocation.
    pub model_tokens: u64,
    /// Outbound HTTP requests per invocation.
    pub egress_requests: u32,
    /// Outbound request body bytes per invocation.
    pub egress_request_bytes: u64,
    /// Outbound response body bytes per invocation.
    pub egress_response_bytes: u64,
    /// Time limit per outbound request, to the end of its response body.
    pub egress_request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            table_elements: 20_000,
            cpu: Duration::from_secs(2),
            wall_clock: Duration::from_secs(300),
            output_bytes: 1 << 20,
            log_bytes: 64 << 10,
            model_calls: 16,
            model_tokens: 200_000,
            egress_requests: 64,
            egress_request_bytes: 1 << 20,
            egress_response_bytes: 16 << 20,
            egress_request_timeout: Duration::from_secs(30),
        }
    }
}

/// One plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSettings {
    /// Name: 1-64 characters of `[a-z0-9-]`.
    pub name: String,
    /// Where the plugin's code comes from. `None` (only for a non-default plugin) is an empty
    /// slot, filled through the admin API.
    pub source: Option<PluginSource>,
    /// Whether `/invocations` uses this plugin when the request names none.
    pub default: bool,
    /// Limits for this plugin's invocations (the file's `[limits]` with this plugin's overrides).
    pub limits: Limits,
    /// Non-secret settings given to the plugin through `wasi:config/store`.
    pub settings: BTreeMap<String, String>,
    /// Model id for this plugin (overrides `model.model_id`).
    pub model_id: Option<String>,
    /// Further model ids a plugin's manifest may choose (the allow-list; the operator's own
    /// model id is always allowed). See [`PluginSettings::grant`].
    pub model_ids: Vec<String>,
    /// The operator's egress rules for this plugin (deny by default).
    pub egress: delegate_egress::EgressPolicy,
}

impl Config {
    /// Reads and validates a config file. Relative paths in it are resolved against its
    /// directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.to_owned(), message: e.to_string() })?;
        let base = path.parent().map_or_else(|| PathBuf::from("."), Path::to_owned);
        Self::from_toml(&text, &base).map_err(|e| e.in_file(path))
    }

    /// Parses and validates config text; `base` is the directory relative paths start from.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::parse(text, &e))?;
        validate::validate(raw, base)
    }

    /// The default plugin.
    pub fn default_plugin(&self) -> &PluginSettings {
        // validate() guarantees exactly one default.
        self.plugins.iter().find(|p| p.default).unwrap_or(&self.plugins[0])
    }
}

#[cfg(test)]
mod fuzz_tests;
