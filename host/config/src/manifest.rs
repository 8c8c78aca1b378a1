//! Plugin manifests and the grant.
//!
//! A plugin version arrives with a manifest (`plugin.toml`): its name, version and digest, and
//! what it *asks* for: limits, setting defaults, a model and egress destinations. The operator's
//! `[[plugin]]` entry stays the authority: [`PluginSettings::grant`] checks every request
//! against it and refuses anything wider, so a plugin can never widen its own rights.
//!
//! Parsing follows the config file: [`crate::raw::RawManifest`] mirrors the file (unknown keys
//! are errors), then validation produces a [`Manifest`]; errors are [`ConfigError`]s naming the
//! dotted key (`limits.cpu_ms`, `egress.rules[0].host`).

use crate::raw::RawManifest;
use crate::validate::{LIMIT_KEYS, check_settings, limits, plugin_name_ok, ranged};
use crate::{ConfigError, Limits, PluginSettings};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Limits a manifest requests, in the file's units (`memory_mib`, `cpu_ms`, ...). `None` means
/// "the operator's value"; a value is a request the operator's `[plugin.limits]` must allow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitRequest {
    /// Linear memory, MiB.
    pub memory_mib: Option<u64>,
    /// Elements per table.
    pub table_elements: Option<u64>,
    /// Guest CPU time, milliseconds.
    pub cpu_ms: Option<u64>,
    /// Whole invocation, milliseconds.
    pub wall_clock_ms: Option<u64>,
    /// Text sent to the caller, KiB.
    pub output_kib: Option<u64>,
    /// stdout + stderr, KiB.
    pub log_kib: Option<u64>,
    /// Model calls.
    pub model_calls: Option<u64>,
    /// Model tokens (input + output).
    pub model_tokens: Option<u64>,
    /// Outbound HTTP requests.
    pub egress_requests: Option<u64>,
    /// Outbound request bodies, summed, KiB.
    pub egress_request_kib: Option<u64>,
    /// Outbound response bodies, summed, KiB.
    pub egress_response_kib: Option<u64>,
    /// Per outbound request, milliseconds.
    pub egress_timeout_ms: Option<u64>,
}

/// A validated plugin manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The plugin's name (1-64 of `[a-z0-9-]`); must equal the operator's `[[plugin]].name`.
    pub name: String,
    /// The plugin's version: 1-64 of `[0-9A-Za-z.+_-]`, starting with a letter or digit.
    pub version: String,
    /// One line for people (at most 256 characters, no control characters).
    pub description: Option<String>,
    /// The component file, resolved against the manifest's directory. Tools read it; the admin
    /// API receives the bytes instead. Not checked for existence here.
    pub component: Option<PathBuf>,
    /// `sha256:` and 64 lower-case hex digits: the digest of the component bytes.
    pub digest: String,
    /// The model the plugin asks for; must be in the operator's allow-list.
    pub model_id: Option<String>,
    /// Requested limits; each must be at most the operator's.
    pub limits: LimitRequest,
    /// Setting defaults for `wasi:config/store`; the operator's `[plugin.settings]` override them.
    pub settings: BTreeMap<String, String>,
    /// The destinations the plugin needs (no credentials: those are the operator's choice).
    pub egress: delegate_egress::EgressPolicy,
}

/// What one plugin version is allowed, once its [`Manifest`] has been checked against the
/// operator's [`PluginSettings`] (see [`PluginSettings::grant`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The manifest's version.
    pub version: String,
    /// The manifest's digest (`sha256:<hex>`); the component bytes must match it.
    pub digest: String,
    /// The effective limits: the manifest's request where it gives one, else the operator's.
    pub limits: Limits,
    /// The manifest's setting defaults with the operator's settings on top.
    pub settings: BTreeMap<String, String>,
    /// The model: the manifest's choice, else the operator's `model_id`; `None` means
    /// `[model].model_id`.
    pub model_id: Option<String>,
    /// The operator's policy narrowed to the manifest's rules; credentials are the operator's.
    pub egress: delegate_egress::EgressPolicy,
}

impl Manifest {
    /// Reads and validates a manifest file; a relative `component` is resolved against the
    /// file's directory. Errors name the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.to_owned(), message: e.to_string() })?;
        let base = path.parent().map_or_else(|| PathBuf::from("."), Path::to_owned);
        Self::from_toml(&text, &base).map_err(|e| e.in_file(path))
    }

    /// Parses and validates manifest text; `base` is the directory a relative `component` is
    /// resolved against.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ConfigError::parse(text, &e))?;
        validate(raw, base)
    }
}

fn required(key: &str, value: Option<String>) -> Result<String, ConfigError> {
    value.ok_or_else(|| ConfigError::invalid(key, "is required"))
}

fn version_ok(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'_' | b'-'))
}

/// `sha256:` + 64 hex digits, in either case; returned in lower case.
fn normalise_digest(d: &str) -> Option<String> {
    let (algorithm, hex) = d.split_once(':')?;
    if !algorithm.eq_ignore_ascii_case("sha256")
        || hex.len() != 64
        || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    Some(format!("sha256:{}", hex.to_ascii_lowercase()))
}

fn validate(raw: RawManifest, base: &Path) -> Result<Manifest, ConfigError> {
    let name = required("name", raw.name)?;
    if !plugin_name_ok(&name) {
        return Err(ConfigError::invalid("name", format!("must be 1-64 of [a-z0-9-], got {name:?}")));
    }
    let version = required("version", raw.version)?;
    if !version_ok(&version) {
        return Err(ConfigError::invalid(
            "version",
            format!("must be 1-64 of [0-9A-Za-z.+_-] starting with a letter or digit, got {version:?}"),
        ));
    }
    if let Some(d) = &raw.description {
        if d.chars().count() > 256 {
            return Err(ConfigError::invalid("description", "must be at most 256 characters"));
        }
        if d.chars().any(char::is_control) {
            return Err(ConfigError::invalid("description", "must not contain control characters"));
        }
    }
    let component = match raw.component.as_deref() {
        None => None,
        Some(c) if c.trim().is_empty() => return Err(ConfigError::invalid("component", "must not be empty")),
        Some(c) => Some(base.join(c)),
    };
    let digest_text = required("digest", raw.digest)?;
    let digest = normalise_digest(&digest_text).ok_or_else(|| {
        ConfigError::invalid("digest", format!("must be sha256: and 64 hex digits, got {digest_text:?}"))
    })?;
    if let Some(id) = &raw.model_id {
        delegate_model::validate_model_id(id).map_err(|e| ConfigError::invalid("model_id", e.message))?;
    }
    let limit_request = LimitRequest::from(&raw.limits);
    limits("limits.", &limit_request, &Limits::default())?;
    check_settings("settings", &raw.settings)?;
    if let Some(i) = raw.egress.rules.iter().position(|r| r.credential.is_some()) {
        return Err(ConfigError::invalid(
            format!("egress.rules[{i}].credential"),
            "not allowed in a manifest: credentials are chosen by the operator",
        ));
    }
    let egress =
        raw.egress.validate().map_err(|e| ConfigError::invalid(format!("egress.{}", e.key), e.message))?;
    Ok(Manifest {
        name,
        version,
        description: raw.description,
        component,
        digest,
        model_id: raw.model_id,
        limits: limit_request,
        settings: raw.settings,
        egress,
    })
}

impl PluginSettings {
    /// Checks `manifest` against this operator entry and returns what the plugin version may
    /// have. Refused (with the manifest's key) when the manifest is for another plugin, asks
    /// for a limit above this entry's (`limits.cpu_ms: the manifest asks for 5000, the operator
    /// grants at most 2000`), for a model outside `model_ids` ∪ {this entry's model, else
    /// `default_model_id`}, or for an egress rule no operator rule covers (`egress.rules[i]`).
    ///
    /// `default_model_id` is `[model].model_id`, if there is a `[model]` section.
    pub fn grant(&self, manifest: &Manifest, default_model_id: Option<&str>) -> Result<Grant, ConfigError> {
        if manifest.name != self.name {
            return Err(ConfigError::invalid(
                "name",
                format!(
                    "the manifest is for plugin {:?}, the operator's plugin is {:?}",
                    manifest.name, self.name
                ),
            ));
        }
        let mut effective = self.limits;
        for k in LIMIT_KEYS {
            let Some(asked) = (k.requested)(&manifest.limits) else { continue };
            let key = format!("limits.{}", k.name);
            ranged(&key, Some(asked), 0, k.min, k.max)?;
            let granted = (k.get)(&self.limits);
            if asked > granted {
                return Err(ConfigError::invalid(
                    key,
                    format!("the manifest asks for {asked}, the operator grants at most {granted}"),
                ));
            }
            (k.set)(&mut effective, asked);
        }
        let mut settings = manifest.settings.clone();
        settings.extend(self.settings.iter().map(|(k, v)| (k.clone(), v.clone())));
        let operator_model = self.model_id.as_deref().or(default_model_id);
        let model_id = match &manifest.model_id {
            None => self.model_id.clone(),
            Some(id) if operator_model == Some(id.as_str()) || self.model_ids.contains(id) => {
                Some(id.clone())
            }
            Some(id) => {
                let mut allowed: Vec<&str> = operator_model.into_iter().collect();
                allowed
                    .extend(self.model_ids.iter().map(String::as_str).filter(|m| Some(*m) != operator_model));
                let allowed = if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") };
                return Err(ConfigError::invalid(
                    "model_id",
                    format!("the manifest asks for {id:?}, the operator allows: {allowed}"),
                ));
            }
        };
        let egress = self.egress.narrowed(&manifest.egress).map_err(|e| {
            ConfigError::invalid(format!("egress.rules[{}]", e.rule_index), e.reason.to_string())
        })?;
        Ok(Grant {
            version: manifest.version.clone(),
            digest: manifest.digest.clone(),
            limits: effective,
            settings,
            model_id,
            egress,
        })
    }
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
