//! The file's shape, exactly; no defaults are decided here except "absent".

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub engine: RawEngine,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<RawPlugin>,
    pub model: Option<delegate_model::ModelConfig>,
    pub auth: Option<delegate_auth::AuthConfig>,
    #[serde(default)]
    pub outbound: RawOutbound,
    #[serde(default)]
    pub vault: delegate_vault::VaultConfig,
    #[serde(default)]
    pub audit: RawAudit,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub oci: delegate_oci::OciConfig,
    pub telemetry: Option<RawTelemetry>,
}

/// `[telemetry]`: optional OTLP trace export.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelemetry {
    pub otlp_endpoint: Option<String>,
    pub service_name: Option<String>,
    pub sample_ratio: Option<f64>,
    pub export_timeout_ms: Option<u64>,
    pub batch_interval_ms: Option<u64>,
    pub queue_spans: Option<u64>,
    #[serde(default)]
    pub allow_plain_http: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: Option<String>,
    pub token_file: Option<String>,
    pub token_env: Option<String>,
    #[serde(default)]
    pub allow_remote: bool,
    pub max_component_mib: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    /// `"stdout"` or a file path.
    pub sink: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutbound {
    #[serde(default)]
    pub ca_files: Vec<String>,
    pub connect_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub listen: Option<String>,
    pub max_concurrency: Option<u64>,
    pub max_body_kib: Option<u64>,
    pub retry_after_seconds: Option<u64>,
    pub shutdown_grace_seconds: Option<u64>,
    pub inbound: Option<String>,
    pub worker_threads: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEngine {
    pub epoch_tick_ms: Option<u64>,
    pub pool_instances: Option<u64>,
    pub cache_dir: Option<String>,
    pub perf_map: Option<bool>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub memory_mib: Option<u64>,
    pub table_elements: Option<u64>,
    pub cpu_ms: Option<u64>,
    pub wall_clock_ms: Option<u64>,
    pub output_kib: Option<u64>,
    pub log_kib: Option<u64>,
    pub model_calls: Option<u64>,
    pub model_tokens: Option<u64>,
    pub egress_requests: Option<u64>,
    pub egress_request_kib: Option<u64>,
    pub egress_response_kib: Option<u64>,
    pub egress_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlugin {
    pub name: String,
    pub component: Option<String>,
    pub manifest: Option<String>,
    /// `oci://registry/repository@sha256:<digest>`.
    pub source: Option<String>,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    pub model_id: Option<String>,
    #[serde(default)]
    pub model_ids: Vec<String>,
    #[serde(default)]
    pub egress: delegate_egress::EgressConfig,
}

/// A plugin manifest (`plugin.toml`), exactly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest {
    pub name: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    pub component: Option<String>,
    pub digest: Option<String>,
    pub model_id: Option<String>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    #[serde(default)]
    pub egress: delegate_egress::EgressConfig,
}
