//! Raw config → domain types, with one-line errors that name the key.

use crate::raw::{RawAdmin, RawConfig, RawLimits, RawTelemetry};
use crate::{
    AdminSettings, AdminTokenSource, Config, EngineSettings, LimitRequest, Limits, PluginSettings,
    PluginSource, ServerSettings,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a config file was refused. `Display` is one line that names the file and key.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {message}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The file is not valid TOML or does not have the expected shape.
    #[error("{}{line}:{column}: {message}", file_prefix(file.as_deref()))]
    Parse {
        /// The file, when known.
        file: Option<PathBuf>,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{}{key}: {message}", file_prefix(file.as_deref()))]
    Invalid {
        /// The file, when known.
        file: Option<PathBuf>,
        /// Dotted key, e.g. `limits.cpu_ms` or `plugin[0].name`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn file_prefix(file: Option<&Path>) -> String {
    file.map(|f| format!("{}:", f.display())).unwrap_or_default()
}

impl ConfigError {
    pub(crate) fn parse(text: &str, err: &toml::de::Error) -> Self {
        let (line, column) = err.span().map_or((1, 1), |span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, str::len) + 1;
            (line, column)
        });
        // toml's message can span lines (it quotes the source); keep the first.
        let message = err.message().lines().next().unwrap_or("invalid TOML").trim().to_owned();
        Self::Parse { file: None, line, column, message }
    }

    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { file: None, key: key.into(), message: message.into() }
    }

    /// The same error, attributed to `path`.
    #[must_use]
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            Self::Parse { line, column, message, .. } => {
                Self::Parse { file: Some(path.to_owned()), line, column, message }
            }
            Self::Invalid { key, message, .. } => Self::Invalid { file: Some(path.to_owned()), key, message },
            read @ Self::Read { .. } => read,
        }
    }

    /// The dotted key the error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

pub(crate) fn ranged(
    key: &str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(ConfigError::invalid(key, format!("must be between {min} and {max}, got {v}")));
    }
    Ok(v)
}

/// One `[limits]` key: its range and how it maps onto [`Limits`], in the file's units.
pub(crate) struct LimitKey {
    /// The key, e.g. `cpu_ms`.
    pub name: &'static str,
    pub min: u64,
    pub max: u64,
    /// The value a request (file or manifest) gives, if any.
    pub requested: fn(&LimitRequest) -> Option<u64>,
    /// The value of `Limits` in the key's unit.
    pub get: fn(&Limits) -> u64,
    /// Sets `Limits` from a value in the key's unit (already range-checked).
    pub set: fn(&mut Limits, u64),
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn small(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Every `[limits]` key, in file order.
pub(crate) const LIMIT_KEYS: &[LimitKey] = &[
    LimitKey {
        name: "memory_mib",
        min: 1,
        max: 4096,
        requested: |r| r.memory_mib,
        get: |l| l.memory_bytes >> 20,
        set: |l, v| l.memory_bytes = v << 20,
    },
    LimitKey {
        name: "table_elements",
        min: 1,
        max: 10_000_000,
        requested: |r| r.table_elements,
        get: |l| l.table_elements,
        set: |l, v| l.table_elements = v,
    },
    LimitKey {
        name: "cpu_ms",
        min: 1,
        max: 3_600_000,
        requested: |r| r.cpu_ms,
        get: |l| ms(l.cpu),
        set: |l, v| l.cpu = Duration::from_millis(v),
    },
    LimitKey {
        name: "wall_clock_ms",
        min: 1,
        max: 3_600_000,
        requested: |r| r.wall_clock_ms,
        get: |l| ms(l.wall_clock),
        set: |l, v| l.wall_clock = Duration::from_millis(v),
    },
    LimitKey {
        name: "output_kib",
        min: 1,
        max: 10 << 20,
        requested: |r| r.output_kib,
        get: |l| l.output_bytes >> 10,
        set: |l, v| l.output_bytes = v << 10,
    },
    LimitKey {
        name: "log_kib",
        min: 1,
        max: 1 << 20,
        requested: |r| r.log_kib,
        get: |l| l.log_bytes >> 10,
        set: |l, v| l.log_bytes = v << 10,
    },
    LimitKey {
        name: "model_calls",
        min: 0,
        max: 10_000,
        requested: |r| r.model_calls,
        get: |l| u64::from(l.model_calls),
        set: |l, v| l.model_calls = small(v),
    },
    LimitKey {
        name: "model_tokens",
        min: 0,
        max: 100_000_000,
        requested: |r| r.model_tokens,
        get: |l| l.model_tokens,
        set: |l, v| l.model_tokens = v,
    },
    LimitKey {
        name: "egress_requests",
        min: 0,
        max: 100_000,
        requested: |r| r.egress_requests,
        get: |l| u64::from(l.egress_requests),
        set: |l, v| l.egress_requests = small(v),
    },
    LimitKey {
        name: "egress_request_kib",
        min: 0,
        max: 1 << 20,
        requested: |r| r.egress_request_kib,
        get: |l| l.egress_request_bytes >> 10,
        set: |l, v| l.egress_request_bytes = v << 10,
    },
    LimitKey {
        name: "egress_response_kib",
        min: 0,
        max: 4 << 20,
        requested: |r| r.egress_response_kib,
        get: |l| l.egress_response_bytes >> 10,
        set: |l, v| l.egress_response_bytes = v << 10,
    },
    LimitKey {
        name: "egress_timeout_ms",
        min: 1,
        max: 600_000,
        requested: |r| r.egress_timeout_ms,
        get: |l| ms(l.egress_request_timeout),
        set: |l, v| l.egress_request_timeout = Duration::from_millis(v),
    },
];

/// `base` with the values `request` gives, each range-checked under `{prefix}{key}`.
pub(crate) fn limits(prefix: &str, request: &LimitRequest, base: &Limits) -> Result<Limits, ConfigError> {
    let mut out = *base;
    for k in LIMIT_KEYS {
        let v = ranged(&format!("{prefix}{}", k.name), (k.requested)(request), (k.get)(base), k.min, k.max)?;
        (k.set)(&mut out, v);
    }
    Ok(out)
}

impl From<&RawLimits> for LimitRequest {
    fn from(r: &RawLimits) -> Self {
        Self {
            memory_mib: r.memory_mib,
            table_elements: r.table_elements,
            cpu_ms: r.cpu_ms,
            wall_clock_ms: r.wall_clock_ms,
            output_kib: r.output_kib,
            log_kib: r.log_kib,
            model_calls: r.model_calls,
            model_tokens: r.model_tokens,
            egress_requests: r.egress_requests,
            egress_request_kib: r.egress_request_kib,
            egress_response_kib: r.egress_response_kib,
            egress_timeout_ms: r.egress_timeout_ms,
        }
    }
}

pub(crate) fn plugin_name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Setting names are 1-256 characters.
pub(crate) fn check_settings(key: &str, settings: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for k in settings.keys() {
        if k.is_empty() || k.len() > 256 {
            return Err(ConfigError::invalid(key, format!("setting names are 1-256 characters, got {k:?}")));
        }
    }
    Ok(())
}

fn admin(raw: RawAdmin, base: &Path, server: &ServerSettings) -> Result<AdminSettings, ConfigError> {
    let listen_text = raw.listen.as_deref().unwrap_or("127.0.0.1:9901");
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        ConfigError::invalid("admin.listen", format!("not an address like 127.0.0.1:9901: {listen_text:?}"))
    })?;
    if !listen.ip().is_loopback() && !raw.allow_remote {
        return Err(ConfigError::invalid(
            "admin.listen",
            format!("{listen} is not a loopback address; set allow_remote = true to expose the admin API"),
        ));
    }
    let overlaps = listen.port() != 0
        && listen.port() == server.listen.port()
        && (listen.ip() == server.listen.ip()
            || listen.ip().is_unspecified()
            || server.listen.ip().is_unspecified());
    if overlaps {
        return Err(ConfigError::invalid(
            "admin.listen",
            format!("{listen} overlaps server.listen ({}); the admin API needs its own port", server.listen),
        ));
    }
    let token = match (raw.token_file, raw.token_env) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid("admin", "set one of token_file and token_env, not both"));
        }
        (None, None) => {
            return Err(ConfigError::invalid(
                "admin",
                "the admin bearer token is required: set token_file or token_env",
            ));
        }
        (Some(file), None) if file.trim().is_empty() => {
            return Err(ConfigError::invalid("admin.token_file", "must not be empty"));
        }
        (Some(file), None) => AdminTokenSource::File(base.join(file)),
        (None, Some(name)) if name.is_empty() || name.contains(['=', '\0']) => {
            return Err(ConfigError::invalid(
                "admin.token_env",
                format!("not an environment variable name: {name:?}"),
            ));
        }
        (None, Some(name)) => AdminTokenSource::Env(name),
    };
    let max_component_mib = ranged("admin.max_component_mib", raw.max_component_mib, 64, 1, 1024)?;
    Ok(AdminSettings {
        listen,
        token,
        allow_remote: raw.allow_remote,
        max_component_bytes: usize::try_from(max_component_mib << 20).unwrap_or(usize::MAX),
    })
}

pub(crate) fn validate(raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
    let listen_text = raw.server.listen.as_deref().unwrap_or("0.0.0.0:8080");
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        ConfigError::invalid("server.listen", format!("not an address like 0.0.0.0:8080: {listen_text:?}"))
    })?;
    let max_concurrency = ranged("server.max_concurrency", raw.server.max_concurrency, 32, 1, 4096)?;
    let server = ServerSettings {
        listen,
        max_concurrency: usize::try_from(max_concurrency).unwrap_or(4096),
        max_body_bytes: usize::try_from(
            ranged("server.max_body_kib", raw.server.max_body_kib, 1024, 1, 100 * 1024)? << 10,
        )
        .unwrap_or(usize::MAX),
        retry_after_seconds: u32::try_from(ranged(
            "server.retry_after_seconds",
            raw.server.retry_after_seconds,
            1,
            1,
            3600,
        )?)
        .unwrap_or(1),
        shutdown_grace: Duration::from_secs(ranged(
            "server.shutdown_grace_seconds",
            raw.server.shutdown_grace_seconds,
            30,
            0,
            3600,
        )?),
        inbound: match raw.server.inbound.as_deref() {
            None | Some("standalone") => crate::InboundMode::Standalone,
            Some("agentcore") => crate::InboundMode::AgentCore,
            Some("agentcore_workload_token") => crate::InboundMode::AgentCoreWorkloadToken,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "server.inbound",
                    format!(
                        "must be \"standalone\", \"agentcore\" or \"agentcore_workload_token\", got {other:?}"
                    ),
                ));
            }
        },
        worker_threads: match raw.server.worker_threads {
            None => None,
            Some(n) => {
                Some(usize::try_from(ranged("server.worker_threads", Some(n), 1, 1, 1024)?).unwrap_or(1))
            }
        },
    };
    let engine = EngineSettings {
        epoch_tick: Duration::from_millis(ranged(
            "engine.epoch_tick_ms",
            raw.engine.epoch_tick_ms,
            10,
            1,
            1000,
        )?),
        pool_instances: u32::try_from(ranged(
            "engine.pool_instances",
            raw.engine.pool_instances,
            max_concurrency,
            max_concurrency,
            10_000,
        )?)
        .unwrap_or(10_000),
        cache_dir: match raw.engine.cache_dir.as_deref() {
            None => None,
            Some(d) if d.trim().is_empty() => {
                return Err(ConfigError::invalid("engine.cache_dir", "must not be empty"));
            }
            Some(d) => Some(base.join(d)),
        },
        perf_map: raw.engine.perf_map.unwrap_or(false),
    };
    let defaults = limits("limits.", &LimitRequest::from(&raw.limits), &Limits::default())?;

    if raw.plugins.is_empty() {
        return Err(ConfigError::invalid("plugin", "at least one [[plugin]] is required"));
    }
    let mut plugins = Vec::with_capacity(raw.plugins.len());
    for (i, p) in raw.plugins.iter().enumerate() {
        let key = |name: &str| format!("plugin[{i}].{name}");
        if !plugin_name_ok(&p.name) {
            return Err(ConfigError::invalid(
                key("name"),
                format!("must be 1-64 of [a-z0-9-], got {:?}", p.name),
            ));
        }
        if plugins.iter().any(|q: &PluginSettings| q.name == p.name) {
            return Err(ConfigError::invalid(key("name"), format!("duplicate plugin name {:?}", p.name)));
        }
        let file = |what: &str, path: &str| {
            let path = base.join(path);
            if path.is_file() {
                Ok(path)
            } else {
                Err(ConfigError::invalid(key(what), format!("no such file: {}", path.display())))
            }
        };
        let source = match (&p.component, &p.manifest, &p.source) {
            (Some(_), Some(_), _) => {
                return Err(ConfigError::invalid(
                    key("manifest"),
                    "set either component or manifest, not both",
                ));
            }
            (Some(_), None, Some(_)) | (None, Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    key("source"),
                    "set one of component, manifest or source, not several",
                ));
            }
            (Some(c), None, None) => Some(PluginSource::Component(file("component", c)?)),
            (None, Some(m), None) => Some(PluginSource::Manifest(file("manifest", m)?)),
            (None, None, Some(s)) => Some(PluginSource::Oci(
                delegate_oci::Reference::parse(s)
                    .map_err(|e| ConfigError::invalid(key("source"), e.to_string()))?,
            )),
            (None, None, None) => None,
        };
        check_settings(&key("settings"), &p.settings)?;
        if let Some(id) = &p.model_id {
            delegate_model::validate_model_id(id)
                .map_err(|e| ConfigError::invalid(key("model_id"), e.message))?;
        }
        for (j, id) in p.model_ids.iter().enumerate() {
            delegate_model::validate_model_id(id)
                .map_err(|e| ConfigError::invalid(key(&format!("model_ids[{j}]")), e.message))?;
        }
        plugins.push(PluginSettings {
            name: p.name.clone(),
            source,
            default: p.default,
            limits: limits(&format!("plugin[{i}].limits."), &LimitRequest::from(&p.limits), &defaults)?,
            settings: p.settings.clone(),
            model_id: p.model_id.clone(),
            model_ids: p.model_ids.clone(),
            egress: p
                .egress
                .clone()
                .validate()
                .map_err(|e| ConfigError::invalid(format!("plugin[{i}].egress.{}", e.key), e.message))?,
        });
    }
    match plugins.iter().filter(|p| p.default).count() {
        0 if plugins.len() == 1 => plugins[0].default = true,
        0 => {
            return Err(ConfigError::invalid(
                "plugin",
                "several plugins: mark exactly one with default = true",
            ));
        }
        1 => {}
        _ => return Err(ConfigError::invalid("plugin", "only one plugin may have default = true")),
    }
    if let Some(i) = plugins.iter().position(|p| p.default && p.source.is_none()) {
        return Err(ConfigError::invalid(
            format!("plugin[{i}]"),
            "the default plugin needs component, manifest or source (only other plugins may be empty slots)",
        ));
    }
    let model = match raw.model {
        Some(m) => {
            Some(m.validate().map_err(|e| ConfigError::invalid(format!("model.{}", e.key), e.message))?)
        }
        None => None,
    };
    let auth = raw
        .auth
        .ok_or_else(|| {
            ConfigError::invalid(
                "auth",
                "an [auth] section is required: delegate never serves unverified callers",
            )
        })?
        .validate()
        .map_err(|e| ConfigError::invalid(format!("auth.{}", e.key), e.message))?;
    let mut ca_files = Vec::with_capacity(raw.outbound.ca_files.len());
    for (i, f) in raw.outbound.ca_files.iter().enumerate() {
        let path = base.join(f);
        if !path.is_file() {
            return Err(ConfigError::invalid(
                format!("outbound.ca_files[{i}]"),
                format!("no such file: {}", path.display()),
            ));
        }
        ca_files.push(path);
    }
    let outbound = delegate_outbound::OutboundConfig {
        extra_ca_pem_files: ca_files,
        connect_timeout: Duration::from_millis(ranged(
            "outbound.connect_timeout_ms",
            raw.outbound.connect_timeout_ms,
            5_000,
            1,
            120_000,
        )?),
        request_timeout: Duration::from_millis(ranged(
            "outbound.request_timeout_ms",
            raw.outbound.request_timeout_ms,
            30_000,
            1,
            600_000,
        )?),
    };
    let vault =
        raw.vault.validate().map_err(|e| ConfigError::invalid(format!("vault.{}", e.key), e.message))?;
    // The hop counter: with a hop key the egress gateway signs it on marked hops (so the
    // outbound depth check counts this host); an On-Behalf-Of hop has no other count.
    let vault = if auth.hop_key().is_some() {
        vault.with_hop_counter()
    } else if let Some(name) = vault.obo_providers_marking_hops().next() {
        return Err(ConfigError::invalid(
            format!("vault.providers.{name}.max_chain_depth"),
            "an entra_obo hop is counted only by the signed hop counter (On-Behalf-Of tokens record no chain); set [auth] hop_key, shared with the next agent host",
        ));
    } else {
        vault
    };
    // Callers known only by a workload access token can use nothing else; a mode that admits
    // them with no provider to use them is a mistake, not a default.
    if server.inbound == crate::InboundMode::AgentCoreWorkloadToken
        && !vault.provider_names().any(|n| vault.is_agentcore_identity(n))
    {
        return Err(ConfigError::invalid(
            "server.inbound",
            "\"agentcore_workload_token\" needs at least one [vault.providers.*] of kind \"agentcore_identity\"",
        ));
    }
    // An agentcore_identity provider works only with the workload access token AgentCore
    // Runtime passes, which `standalone` never reads: every request would be refused.
    if server.inbound == crate::InboundMode::Standalone
        && let Some(name) = vault.provider_names().find(|n| vault.is_agentcore_identity(n))
    {
        return Err(ConfigError::invalid(
            "server.inbound",
            format!(
                "provider {name:?} is of kind \"agentcore_identity\", which needs inbound = \"agentcore\" or \"agentcore_workload_token\" (\"standalone\" never reads the workload access token it uses)"
            ),
        ));
    }
    for (i, p) in plugins.iter().enumerate() {
        for provider in p.egress.credential_providers() {
            if !vault.provider_names().any(|n| n == provider) {
                return Err(ConfigError::invalid(
                    format!("plugin[{i}].egress"),
                    format!(
                        "a rule uses credential provider {provider:?}, which [vault.providers] does not define"
                    ),
                ));
            }
        }
    }
    let audit = match raw.audit.sink.as_deref() {
        None | Some("stdout") => crate::AuditTarget::Stdout,
        Some("") => return Err(ConfigError::invalid("audit.sink", "\"stdout\" or a file path")),
        Some(path) => crate::AuditTarget::File(base.join(path)),
    };
    let admin = raw.admin.map(|a| admin(a, base, &server)).transpose()?;
    let oci =
        raw.oci.validate(base).map_err(|e| ConfigError::invalid(format!("oci.{}", e.key), e.message))?;
    let telemetry = raw.telemetry.map(telemetry).transpose()?;
    Ok(Config { server, engine, plugins, model, auth, outbound, vault, audit, admin, oci, telemetry })
}

/// `[telemetry]`: the endpoint must be an OTLP/HTTP URL a span may be sent to in the clear only
/// on loopback (spans name users and hosts), unless the operator says otherwise.
fn telemetry(raw: RawTelemetry) -> Result<crate::TelemetrySettings, ConfigError> {
    let key = "telemetry.otlp_endpoint";
    let text = raw.otlp_endpoint.ok_or_else(|| {
        ConfigError::invalid(key, "required in [telemetry], e.g. \"http://127.0.0.1:4318/v1/traces\"")
    })?;
    let url = url::Url::parse(&text).map_err(|e| ConfigError::invalid(key, format!("not a URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::invalid(
            key,
            "must not carry user info (credentials are never config literals)",
        ));
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(ConfigError::invalid(key, "needs a host")),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback || raw.allow_plain_http => {}
        "http" => {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "plain http to a non-loopback host ({}); use https or set allow_plain_http = true",
                    url.host_str().unwrap_or("")
                ),
            ));
        }
        other => return Err(ConfigError::invalid(key, format!("must be http or https, got {other:?}"))),
    }
    let service_name = raw.service_name.unwrap_or_else(|| "delegate".to_owned());
    if service_name.is_empty() || service_name.len() > 256 || service_name.chars().any(char::is_control) {
        return Err(ConfigError::invalid("telemetry.service_name", "1-256 printable characters"));
    }
    let sample_ratio = raw.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        return Err(ConfigError::invalid(
            "telemetry.sample_ratio",
            format!("must be between 0.0 and 1.0, got {sample_ratio}"),
        ));
    }
    Ok(crate::TelemetrySettings {
        otlp_endpoint: url.to_string(),
        service_name,
        sample_ratio,
        export_timeout: Duration::from_millis(ranged(
            "telemetry.export_timeout_ms",
            raw.export_timeout_ms,
            10_000,
            1,
            120_000,
        )?),
        batch_interval: Duration::from_millis(ranged(
            "telemetry.batch_interval_ms",
            raw.batch_interval_ms,
            5_000,
            10,
            600_000,
        )?),
        queue_spans: usize::try_from(ranged("telemetry.queue_spans", raw.queue_spans, 2048, 1, 1 << 20)?)
            .unwrap_or(2048),
        allow_plain_http: raw.allow_plain_http,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate::{AdminSettings, AdminTokenSource, Config, ConfigError, PluginSource};
    use std::path::Path;

    fn base() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    fn err(text: &str) -> String {
        Config::from_toml(&format!("{text}\n{AUTH}"), base()).unwrap_err().to_string()
    }

    const AUTH: &str = "[auth]\ndiscovery_url = \"https://login.example.com/t/v2.0/.well-known/openid-configuration\"\nallowed_audiences = [\"api\"]\nallowed_clients = [\"app\"]\n";
    const PLUGIN: &str = "[[plugin]]\nname = \"echo\"\ncomponent = \"Cargo.toml\"\n";

    #[test]
    fn inbound_modes_parse_and_agentcore_identity_providers_need_an_agentcore_mode() {
        use crate::InboundMode;
        let parse = |server: &str, vault: &str| {
            Config::from_toml(&format!("[server]\n{server}\n{vault}\n{AUTH}{PLUGIN}"), base())
        };
        assert_eq!(parse("", "").unwrap().server.inbound, InboundMode::Standalone);
        assert_eq!(parse("inbound = \"standalone\"", "").unwrap().server.inbound, InboundMode::Standalone);
        assert_eq!(parse("inbound = \"agentcore\"", "").unwrap().server.inbound, InboundMode::AgentCore);
        let e = parse("inbound = \"jwt\"", "").unwrap_err().to_string();
        assert!(e.contains("server.inbound"), "{e}");
        // Opting into callers known only by a workload access token needs a provider they can use.
        let e = parse("inbound = \"agentcore_workload_token\"", "").unwrap_err().to_string();
        assert!(e.contains("server.inbound") && e.contains("agentcore_identity"), "{e}");
        let agentcore = "[vault.providers.sn]\nkind = \"agentcore_identity\"\ncredential_provider = \"EntraIdServiceNow\"";
        let c = parse("inbound = \"agentcore_workload_token\"", agentcore).unwrap();
        assert_eq!(c.server.inbound, InboundMode::AgentCoreWorkloadToken);
        assert_eq!(
            parse("inbound = \"agentcore\"", agentcore).unwrap().server.inbound,
            InboundMode::AgentCore
        );
        // ...and that provider needs a mode that reads the workload access token.
        for standalone in ["", "inbound = \"standalone\""] {
            let e = parse(standalone, agentcore).unwrap_err();
            assert_eq!(e.key(), Some("server.inbound"), "{e}");
            let e = e.to_string();
            assert!(e.contains("\"sn\"") && e.contains("agentcore_identity") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn worker_threads_default_to_one_per_core_and_are_bounded() {
        let parse = |server: &str| Config::from_toml(&format!("[server]\n{server}\n{AUTH}{PLUGIN}"), base());
        assert_eq!(parse("").unwrap().server.worker_threads, None);
        assert_eq!(parse("worker_threads = 1").unwrap().server.worker_threads, Some(1));
        assert_eq!(parse("worker_threads = 1024").unwrap().server.worker_threads, Some(1024));
        for bad in ["worker_threads = 0", "worker_threads = 1025"] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.key(), Some("server.worker_threads"), "{e}");
        }
        // A wrong type is a parse error that points at the line and column.
        let e = parse("worker_threads = \"2\"").unwrap_err().to_string();
        assert!(e.starts_with("2:18:") && e.contains("invalid type"), "{e}");
    }

    #[test]
    fn the_hop_key_is_checked_at_start_and_an_obo_hop_needs_it() {
        let dir = std::env::temp_dir().join(format!("delegate-config-hop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let good = key("good.key", "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=\n");
        let short = key("short.key", "q83vASNFZ4mrze8BI0VniQ==\n");
        let empty = key("empty.key", "\n");
        let obo = "[vault.providers.agent-b]\nkind = \"entra_obo\"\ntoken_endpoint = \"https://login.example.com/t/oauth2/v2.0/token\"\nclient_id = \"app\"\nclient_secret = { file = \"Cargo.toml\" }\nmax_chain_depth = 2\n";
        let parse = |auth_extra: &str, vault: &str| {
            Config::from_toml(&format!("{PLUGIN}{vault}{AUTH}{auth_extra}"), base())
        };
        let c = parse(&format!("hop_key = {{ file = {good:?} }}\n"), obo).unwrap();
        assert!(c.auth.hop_key().is_some());
        assert!(parse("", "").unwrap().auth.hop_key().is_none());
        // A short or empty key: one line naming the key, never its value.
        for (path, why) in [(&short, "decodes to 16 bytes"), (&empty, "empty")] {
            let e = parse(&format!("hop_key = {{ file = {path:?} }}\n"), "").unwrap_err();
            assert_eq!(e.key(), Some("auth.hop_key"), "{e}");
            let text = e.to_string();
            assert!(text.contains(why) && !text.contains('\n') && !text.contains("q83v"), "{text}");
        }
        // An On-Behalf-Of hop marked with max_chain_depth is counted only by the hop counter.
        let e = parse("", obo).unwrap_err();
        assert_eq!(e.key(), Some("vault.providers.agent-b.max_chain_depth"), "{e}");
        assert!(e.to_string().contains("hop_key"), "{e}");
        // hop_required_from needs the key.
        let e = parse("hop_required_from = [\"app\"]\n", "").unwrap_err();
        assert_eq!(e.key(), Some("auth.hop_required_from[0]"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn minimal_config_gets_safe_defaults() {
        let c = Config::from_toml(&format!("{PLUGIN}{AUTH}"), base()).unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.server.max_concurrency, 32);
        assert!(c.plugins[0].default);
        assert_eq!(c.plugins[0].limits.memory_bytes, 64 << 20);
        assert_eq!(c.default_plugin().name, "echo");
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let e = err(&format!("[server]\nlisten = \"127.0.0.1:1\"\nmax_conncurrency = 3\n{PLUGIN}"));
        assert!(e.starts_with("3:1: unknown field `max_conncurrency`"), "{e}");
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let e = Config::from_toml(&format!("[limits]\ncpu_ms = 0\n{PLUGIN}{AUTH}"), base()).unwrap_err();
        assert_eq!(e.key(), Some("limits.cpu_ms"));
        let e = err(&format!("{PLUGIN}[plugin.limits]\nmemory_mib = 100000\n"));
        assert_eq!(e, "plugin[0].limits.memory_mib: must be between 1 and 4096, got 100000");
        let e = err(&format!("[server]\nlisten = \"localhost\"\n{PLUGIN}"));
        assert!(e.starts_with("server.listen:"), "{e}");
    }

    #[test]
    fn plugin_rules() {
        assert_eq!(err(""), "plugin: at least one [[plugin]] is required");
        assert!(
            err("[[plugin]]\nname = \"Bad Name\"\ncomponent = \"Cargo.toml\"\n")
                .starts_with("plugin[0].name")
        );
        assert!(
            err("[[plugin]]\nname = \"x\"\ncomponent = \"missing.wasm\"\n")
                .starts_with("plugin[0].component: no such file")
        );
        let two = format!("{PLUGIN}[[plugin]]\nname = \"b\"\ncomponent = \"Cargo.toml\"\n");
        assert!(err(&two).contains("mark exactly one"));
        let dup = format!("{PLUGIN}{PLUGIN}");
        assert!(err(&dup).contains("duplicate plugin name"));
    }

    #[test]
    fn plugin_limits_inherit_file_defaults() {
        let c = Config::from_toml(
            &format!("[limits]\ncpu_ms = 700\nlog_kib = 8\n{AUTH}{PLUGIN}[plugin.limits]\nlog_kib = 16\n"),
            base(),
        )
        .unwrap();
        assert_eq!(c.plugins[0].limits.cpu.as_millis(), 700);
        assert_eq!(c.plugins[0].limits.log_bytes, 16 << 10);
    }

    #[test]
    fn auth_is_required_and_validated() {
        let e = Config::from_toml(PLUGIN, base()).unwrap_err();
        assert_eq!(e.key(), Some("auth"));
        let e = Config::from_toml(
            &format!("{PLUGIN}[auth]\ndiscovery_url = \"http://x/.well-known/openid-configuration\"\nallowed_audiences = [\"a\"]\nallowed_clients = [\"b\"]\n"),
            base(),
        )
        .unwrap_err();
        assert!(e.key().unwrap().starts_with("auth."), "{e}");
    }

    #[test]
    fn model_section_is_validated_with_its_key() {
        let e = err(&format!("{PLUGIN}[model]\nregion = \"us-east-1\"\nmodel_idd = \"x\"\n"));
        assert!(e.contains("unknown field `model_idd`"), "{e}");
    }

    #[test]
    fn plugin_sources() {
        let c = Config::from_toml(&format!("{PLUGIN}{AUTH}"), base()).unwrap();
        assert_eq!(c.plugins[0].source, Some(PluginSource::Component(base().join("Cargo.toml"))));
        let m = Config::from_toml(
            &format!("[[plugin]]\nname = \"a\"\nmanifest = \"Cargo.toml\"\n{AUTH}"),
            base(),
        )
        .unwrap();
        assert_eq!(m.plugins[0].source, Some(PluginSource::Manifest(base().join("Cargo.toml"))));
        assert_eq!(
            err("[[plugin]]\nname = \"a\"\ncomponent = \"Cargo.toml\"\nmanifest = \"Cargo.toml\"\n"),
            "plugin[0].manifest: set either component or manifest, not both"
        );
        assert!(
            err("[[plugin]]\nname = \"a\"\nmanifest = \"missing.toml\"\n")
                .starts_with("plugin[0].manifest: no such file")
        );
        // the only plugin is the default, so it needs a source
        assert!(err("[[plugin]]\nname = \"a\"\n").starts_with("plugin[0]: the default plugin needs"));
        let e = err(&format!("[[plugin]]\nname = \"slot\"\ndefault = true\n{PLUGIN}"));
        assert!(e.starts_with("plugin[0]: the default plugin needs"), "{e}");
        // a non-default plugin without a source is an empty slot
        let c = Config::from_toml(
            &format!("[[plugin]]\nname = \"slot\"\n{PLUGIN}default = true\n{AUTH}"),
            base(),
        )
        .unwrap();
        assert_eq!(c.plugins[0].source, None);
        assert_eq!(c.default_plugin().name, "echo");
    }

    #[test]
    fn plugin_sources_by_oci_digest() {
        let hex = "ab".repeat(32);
        let c = Config::from_toml(
            &format!(
                "[[plugin]]\nname = \"a\"\nsource = \"oci://127.0.0.1:5000/p/a@sha256:{hex}\"\n{AUTH}\n\
                 [oci]\nplain_http = [\"127.0.0.1:5000\"]\n"
            ),
            base(),
        )
        .unwrap();
        let want = format!("oci://127.0.0.1:5000/p/a@sha256:{hex}");
        let source = &c.plugins[0].source;
        assert!(matches!(source, Some(PluginSource::Oci(r)) if r.to_string() == want), "{source:?}");
        assert!(c.oci.plain_http.contains("127.0.0.1:5000"));
        // tags are refused: digest only
        let e = err("[[plugin]]\nname = \"a\"\nsource = \"oci://r.io/p/a:latest\"\n");
        assert!(e.starts_with("plugin[0].source: invalid OCI reference") && e.contains("digest only"), "{e}");
        let e = err(&format!(
            "[[plugin]]\nname = \"a\"\ncomponent = \"Cargo.toml\"\nsource = \"oci://r.io/p@sha256:{hex}\"\n"
        ));
        assert_eq!(e, "plugin[0].source: set one of component, manifest or source, not several");
        let e = err(&format!("{PLUGIN}[oci]\nplain_http = [\"registry.example.com\"]\n"));
        assert!(e.starts_with("oci.plain_http[0]: "), "{e}");
    }

    #[test]
    fn model_ids_are_validated() {
        let c = Config::from_toml(&format!("{PLUGIN}model_ids = [\"a\", \"b\"]\n{AUTH}"), base()).unwrap();
        assert_eq!(c.plugins[0].model_ids, ["a", "b"]);
        assert!(
            Config::from_toml(&format!("{PLUGIN}{AUTH}"), base()).unwrap().plugins[0].model_ids.is_empty()
        );
        let e = err(&format!("{PLUGIN}model_ids = [\"a\", \"\"]\n"));
        assert!(e.starts_with("plugin[0].model_ids[1]:"), "{e}");
    }

    #[test]
    fn engine_cache_dir() {
        let c = Config::from_toml(&format!("{PLUGIN}{AUTH}"), base()).unwrap();
        assert_eq!(c.engine.cache_dir, None);
        let c =
            Config::from_toml(&format!("[engine]\ncache_dir = \"cache\"\n{PLUGIN}{AUTH}"), base()).unwrap();
        assert_eq!(c.engine.cache_dir, Some(base().join("cache")));
        assert!(err(&format!("[engine]\ncache_dir = \"\"\n{PLUGIN}")).starts_with("engine.cache_dir:"));
    }

    #[test]
    fn engine_perf_map_is_off_unless_asked_for() {
        let c = Config::from_toml(&format!("{PLUGIN}{AUTH}"), base()).unwrap();
        assert!(!c.engine.perf_map);
        let c = Config::from_toml(&format!("[engine]\nperf_map = true\n{PLUGIN}{AUTH}"), base()).unwrap();
        assert!(c.engine.perf_map);
        let e = err(&format!("[engine]\nperf_map = \"yes\"\n{PLUGIN}"));
        assert!(e.contains("invalid type") && e.contains("bool"), "{e}");
    }

    fn admin(section: &str) -> Result<Option<AdminSettings>, ConfigError> {
        Config::from_toml(&format!("{PLUGIN}{AUTH}{section}"), base()).map(|c| c.admin)
    }

    #[test]
    fn admin_section() {
        assert_eq!(admin("").unwrap(), None);
        let a = admin("[admin]\ntoken_env = \"DELEGATE_ADMIN_TOKEN\"\n").unwrap().unwrap();
        assert_eq!(
            a,
            AdminSettings {
                listen: "127.0.0.1:9901".parse().unwrap(),
                token: AdminTokenSource::Env("DELEGATE_ADMIN_TOKEN".into()),
                allow_remote: false,
                max_component_bytes: 64 << 20,
            }
        );
        let a = admin(
            "[admin]\nlisten = \"[::1]:7000\"\ntoken_file = \"admin.token\"\nmax_component_mib = 1024\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.token, AdminTokenSource::File(base().join("admin.token")));
        assert_eq!(a.listen.port(), 7000);
        assert_eq!(a.max_component_bytes, 1024 << 20);

        let key = |s: &str| admin(s).unwrap_err().key().map(str::to_owned);
        // non-loopback only with allow_remote
        let remote = "[admin]\nlisten = \"0.0.0.0:9901\"\ntoken_env = \"T\"\n";
        let e = admin(remote).unwrap_err().to_string();
        assert!(e.starts_with("admin.listen: 0.0.0.0:9901 is not a loopback address"), "{e}");
        let a = admin(&format!("{remote}allow_remote = true\n")).unwrap().unwrap();
        assert!(a.allow_remote);
        assert_eq!(
            key("[admin]\nlisten = \"10.0.0.1:1\"\ntoken_env = \"T\"\n").as_deref(),
            Some("admin.listen")
        );
        assert_eq!(
            key("[admin]\nlisten = \"localhost:1\"\ntoken_env = \"T\"\n").as_deref(),
            Some("admin.listen")
        );
        // the public listener's port (0.0.0.0:8080 by default) is not the admin one
        let e = admin("[admin]\nlisten = \"127.0.0.1:8080\"\ntoken_env = \"T\"\n").unwrap_err().to_string();
        assert!(e.contains("overlaps server.listen"), "{e}");
        // exactly one token source, never empty
        assert_eq!(key("[admin]\n").as_deref(), Some("admin"));
        assert_eq!(key("[admin]\ntoken_env = \"T\"\ntoken_file = \"f\"\n").as_deref(), Some("admin"));
        assert_eq!(key("[admin]\ntoken_env = \"\"\n").as_deref(), Some("admin.token_env"));
        assert_eq!(key("[admin]\ntoken_env = \"A=B\"\n").as_deref(), Some("admin.token_env"));
        assert_eq!(key("[admin]\ntoken_file = \" \"\n").as_deref(), Some("admin.token_file"));
        // size range
        assert_eq!(
            key("[admin]\ntoken_env = \"T\"\nmax_component_mib = 0\n").as_deref(),
            Some("admin.max_component_mib")
        );
        assert_eq!(
            key("[admin]\ntoken_env = \"T\"\nmax_component_mib = 1025\n").as_deref(),
            Some("admin.max_component_mib")
        );
        let e = admin("[admin]\ntoken_env = \"T\"\ntoken = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `token`"), "{e}");
    }

    fn telemetry(section: &str) -> Result<Option<crate::TelemetrySettings>, ConfigError> {
        Config::from_toml(&format!("{AUTH}{PLUGIN}{section}"), base()).map(|c| c.telemetry)
    }

    #[test]
    fn telemetry_is_off_by_default_and_validated() {
        assert_eq!(telemetry("").unwrap(), None);
        let t =
            telemetry("[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\n").unwrap().unwrap();
        assert_eq!(t.otlp_endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(t.service_name, "delegate");
        assert!((t.sample_ratio - 1.0).abs() < f64::EPSILON);
        assert_eq!(t.export_timeout, std::time::Duration::from_secs(10));
        assert_eq!(t.batch_interval, std::time::Duration::from_secs(5));
        assert_eq!(t.queue_spans, 2048);
        for ok in [
            "https://collector.example.com/v1/traces",
            "http://localhost:4318/v1/traces",
            "http://[::1]:4318/",
        ] {
            assert!(telemetry(&format!("[telemetry]\notlp_endpoint = {ok:?}\n")).is_ok(), "{ok}");
        }
        let remote = "[telemetry]\notlp_endpoint = \"http://collector.example.com:4318/v1/traces\"\n";
        let e = telemetry(remote).unwrap_err().to_string();
        assert!(e.contains("telemetry.otlp_endpoint") && e.contains("allow_plain_http"), "{e}");
        assert!(telemetry(&format!("{remote}allow_plain_http = true\n")).is_ok());
        let cases = [
            ("[telemetry]\n", "telemetry.otlp_endpoint"),
            ("[telemetry]\notlp_endpoint = \"grpc://127.0.0.1:4317\"\n", "telemetry.otlp_endpoint"),
            ("[telemetry]\notlp_endpoint = \"not a url\"\n", "telemetry.otlp_endpoint"),
            (
                "[telemetry]\notlp_endpoint = \"https://u:p@collector.example.com/\"\n",
                "telemetry.otlp_endpoint",
            ),
            (
                "[telemetry]\notlp_endpoint = \"https://c.example.com/\"\nsample_ratio = 1.5\n",
                "telemetry.sample_ratio",
            ),
            (
                "[telemetry]\notlp_endpoint = \"https://c.example.com/\"\nservice_name = \"\"\n",
                "telemetry.service_name",
            ),
            (
                "[telemetry]\notlp_endpoint = \"https://c.example.com/\"\nqueue_spans = 0\n",
                "telemetry.queue_spans",
            ),
            (
                "[telemetry]\notlp_endpoint = \"https://c.example.com/\"\nexport_timeout_ms = 0\n",
                "telemetry.export_timeout_ms",
            ),
        ];
        for (section, key) in cases {
            let e = telemetry(section).unwrap_err();
            assert_eq!(e.key(), Some(key), "{section}: {e}");
        }
    }

    #[test]
    fn file_errors_name_the_file() {
        let e = Config::load(Path::new("/nonexistent/delegate.toml")).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(e.to_string().contains("/nonexistent/delegate.toml"));
    }
}

/// `docs/config.md` lists exactly the keys the parser accepts: each table is compared with the
/// field list serde reports for an unknown key in that section.
#[cfg(test)]
mod docs_drift {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::collections::{BTreeMap, BTreeSet};

    /// Section id in the docs → TOML that puts an unknown key (or variant) in that section.
    const PROBES: &[(&str, &str)] = &[
        ("root", "zz = 1"),
        ("server", "[server]\nzz = 1"),
        ("engine", "[engine]\nzz = 1"),
        ("limits", "[limits]\nzz = 1"),
        ("plugin", "[[plugin]]\nzz = 1"),
        ("plugin.egress", "[[plugin]]\n[plugin.egress]\nzz = 1"),
        ("plugin.egress.rules", "[[plugin]]\n[[plugin.egress.rules]]\nzz = 1"),
        ("model", "[model]\nzz = 1"),
        ("auth", "[auth]\nzz = 1"),
        ("auth.claim_rules", "[auth]\n[[auth.claim_rules]]\nzz = 1"),
        ("outbound", "[outbound]\nzz = 1"),
        ("vault", "[vault]\nzz = 1"),
        ("vault.cache", "[vault.cache]\nzz = 1"),
        ("vault.cache.redis", "[vault.cache.redis]\nzz = 1"),
        ("vault.providers.kind", "[vault.providers.a]\nkind = \"zz\""),
        ("vault.providers.entra_obo", "[vault.providers.a]\nkind = \"entra_obo\"\nzz = 1"),
        ("vault.providers.token_exchange", "[vault.providers.a]\nkind = \"token_exchange\"\nzz = 1"),
        ("vault.providers.agentcore_identity", "[vault.providers.a]\nkind = \"agentcore_identity\"\nzz = 1"),
        ("secret_ref", "[vault.providers.a]\nkind = \"entra_obo\"\nclient_secret = { zz = 1 }"),
        ("certificate", "[vault.providers.a]\nkind = \"entra_obo\"\nclient_certificate = { zz = 1 }"),
        ("audit", "[audit]\nzz = 1"),
        ("admin", "[admin]\nzz = 1"),
        ("oci", "[oci]\nzz = 1"),
        ("oci.registries", "[oci.registries.a]\nzz = 1"),
        ("telemetry", "[telemetry]\nzz = 1"),
    ];

    /// Section id in docs/plugins.md → manifest TOML that puts an unknown key in that section.
    const MANIFEST_PROBES: &[(&str, &str)] = &[
        ("manifest", "zz = 1"),
        ("manifest.limits", "[limits]\nzz = 1"),
        ("manifest.egress", "[egress]\nzz = 1"),
        ("manifest.egress.rules", "[[egress.rules]]\nzz = 1"),
    ];

    /// The backticked names in serde's "expected ..." list.
    fn accepted(probe: &str, err: &str) -> BTreeSet<String> {
        let expected = err.split_once("expected").unwrap_or_else(|| panic!("{probe:?}: {err}")).1;
        expected.split('`').skip(1).step_by(2).map(str::to_owned).collect()
    }

    /// Section id → the first backticked word of each table row after `<!-- keys: id -->`.
    fn documented(doc: &str) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in doc.lines() {
            if let Some(id) = line.strip_prefix("<!-- keys: ").and_then(|l| l.strip_suffix(" -->")) {
                current = Some(id.to_owned());
                out.entry(id.to_owned()).or_default();
            } else if let (Some(id), Some(row)) = (&current, line.strip_prefix("| `")) {
                let key = row.split('`').next().unwrap();
                out.get_mut(id).unwrap().insert(key.to_owned());
            } else if !line.starts_with('|') && !line.trim().is_empty() {
                current = None;
            }
        }
        out
    }

    /// Every probed section is documented exactly, and every documented section is probed.
    fn check(name: &str, doc: &str, probes: &[(&str, &str)], parse: impl Fn(&str) -> String) {
        let docs = documented(doc);
        for (id, probe) in probes {
            let accepted = accepted(probe, &parse(probe));
            let listed = docs.get(*id).unwrap_or_else(|| panic!("{name} has no `<!-- keys: {id} -->` table"));
            assert_eq!(listed, &accepted, "{name} section {id} differs from the parser");
        }
        let probed: BTreeSet<&str> = probes.iter().map(|(id, _)| *id).collect();
        for id in docs.keys() {
            assert!(probed.contains(id.as_str()), "{name} section {id} is not checked");
        }
    }

    fn base() -> &'static std::path::Path {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn docs_config_md_lists_every_key() {
        check("docs/config.md", include_str!("../../../docs/config.md"), PROBES, |probe| {
            crate::Config::from_toml(probe, base()).unwrap_err().to_string()
        });
    }

    #[test]
    fn docs_plugins_md_lists_every_manifest_key() {
        check("docs/plugins.md", include_str!("../../../docs/plugins.md"), MANIFEST_PROBES, |probe| {
            crate::Manifest::from_toml(probe, base()).unwrap_err().to_string()
        });
    }
}
