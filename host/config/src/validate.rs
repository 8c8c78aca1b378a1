//! Raw config → domain types, with one-line errors that name the key.

use crate::raw::{RawConfig, RawLimits};
use crate::{Config, EngineSettings, Limits, PluginSettings, ServerSettings};
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

fn ranged(key: &str, value: Option<u64>, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(ConfigError::invalid(key, format!("must be between {min} and {max}, got {v}")));
    }
    Ok(v)
}

fn limits(prefix: &str, raw: &RawLimits, base: &Limits) -> Result<Limits, ConfigError> {
    let k = |name: &str| format!("{prefix}{name}");
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Ok(Limits {
        memory_bytes: ranged(&k("memory_mib"), raw.memory_mib, base.memory_bytes >> 20, 1, 4096)? << 20,
        table_elements: ranged(&k("table_elements"), raw.table_elements, base.table_elements, 1, 10_000_000)?,
        cpu: Duration::from_millis(ranged(&k("cpu_ms"), raw.cpu_ms, ms(base.cpu), 1, 3_600_000)?),
        wall_clock: Duration::from_millis(ranged(
            &k("wall_clock_ms"),
            raw.wall_clock_ms,
            ms(base.wall_clock),
            1,
            3_600_000,
        )?),
        output_bytes: ranged(&k("output_kib"), raw.output_kib, base.output_bytes >> 10, 1, 10 << 20)? << 10,
        log_bytes: ranged(&k("log_kib"), raw.log_kib, base.log_bytes >> 10, 1, 1 << 20)? << 10,
        model_calls: u32::try_from(ranged(
            &k("model_calls"),
            raw.model_calls,
            u64::from(base.model_calls),
            0,
            10_000,
        )?)
        .unwrap_or(10_000),
        model_tokens: ranged(&k("model_tokens"), raw.model_tokens, base.model_tokens, 0, 100_000_000)?,
        egress_requests: u32::try_from(ranged(
            &k("egress_requests"),
            raw.egress_requests,
            u64::from(base.egress_requests),
            0,
            100_000,
        )?)
        .unwrap_or(100_000),
        egress_request_bytes: ranged(
            &k("egress_request_kib"),
            raw.egress_request_kib,
            base.egress_request_bytes >> 10,
            0,
            1 << 20,
        )? << 10,
        egress_response_bytes: ranged(
            &k("egress_response_kib"),
            raw.egress_response_kib,
            base.egress_response_bytes >> 10,
            0,
            4 << 20,
        )? << 10,
        egress_request_timeout: Duration::from_millis(ranged(
            &k("egress_timeout_ms"),
            raw.egress_timeout_ms,
            ms(base.egress_request_timeout),
            1,
            600_000,
        )?),
    })
}

fn plugin_name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
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
    };
    let defaults = limits("limits.", &raw.limits, &Limits::default())?;

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
        let component = base.join(&p.component);
        if !component.is_file() {
            return Err(ConfigError::invalid(
                key("component"),
                format!("no such file: {}", component.display()),
            ));
        }
        for k in p.settings.keys() {
            if k.is_empty() || k.len() > 256 {
                return Err(ConfigError::invalid(
                    key("settings"),
                    format!("setting names are 1-256 characters, got {k:?}"),
                ));
            }
        }
        if let Some(id) = &p.model_id {
            delegate_model::validate_model_id(id)
                .map_err(|e| ConfigError::invalid(key("model_id"), e.message))?;
        }
        plugins.push(PluginSettings {
            name: p.name.clone(),
            component,
            default: p.default,
            limits: limits(&format!("plugin[{i}].limits."), &p.limits, &defaults)?,
            settings: p.settings.clone(),
            model_id: p.model_id.clone(),
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
    Ok(Config { server, engine, plugins, model, auth, outbound, vault, audit })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate::{Config, ConfigError};
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
        ("vault.providers.kind", "[vault.providers.a]\nkind = \"zz\""),
        ("vault.providers.entra_obo", "[vault.providers.a]\nkind = \"entra_obo\"\nzz = 1"),
        ("vault.providers.token_exchange", "[vault.providers.a]\nkind = \"token_exchange\"\nzz = 1"),
        ("secret_ref", "[vault.providers.a]\nkind = \"entra_obo\"\nclient_secret = { zz = 1 }"),
        ("certificate", "[vault.providers.a]\nkind = \"entra_obo\"\nclient_certificate = { zz = 1 }"),
        ("audit", "[audit]\nzz = 1"),
    ];

    /// The backticked names in serde's "expected ..." list.
    fn accepted(probe: &str) -> BTreeSet<String> {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let err = crate::Config::from_toml(probe, base).unwrap_err().to_string();
        let expected = err.split_once("expected").unwrap_or_else(|| panic!("{probe:?}: {err}")).1;
        expected.split('`').skip(1).step_by(2).map(str::to_owned).collect()
    }

    /// Section id → the first backticked word of each table row after `<!-- keys: id -->`.
    fn documented() -> BTreeMap<String, BTreeSet<String>> {
        let doc = include_str!("../../../docs/config.md");
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

    #[test]
    fn docs_config_md_lists_every_key() {
        let docs = documented();
        for (id, probe) in PROBES {
            let accepted = accepted(probe);
            let listed =
                docs.get(*id).unwrap_or_else(|| panic!("docs/config.md has no `<!-- keys: {id} -->` table"));
            assert_eq!(listed, &accepted, "docs/config.md section {id} differs from the parser");
        }
        let probed: BTreeSet<&str> = PROBES.iter().map(|(id, _)| *id).collect();
        for id in docs.keys() {
            assert!(probed.contains(id.as_str()), "docs/config.md section {id} is not checked");
        }
    }
}
