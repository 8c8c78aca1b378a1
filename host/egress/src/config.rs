//! Operator egress configuration: the raw TOML/JSON shape, validated into an [`EgressPolicy`].
//!
//! Parsing and validation are separate steps (raw → validated): the raw structs mirror the
//! file and reject unknown keys, so a typo fails at start-up; [`EgressConfig::validate`] then
//! turns them into rules that cannot hold an invalid combination.

use crate::policy::{CredentialRef, EgressPolicy, EgressRule};
use crate::url::{HostName, normalize_prefix, parse_host};
use serde::Deserialize;

/// The egress rules granted to one plugin by the operator.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct EgressConfig {
    /// Rules in order; the first rule that matches a request decides its credential.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// One egress rule as written by the operator.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RuleConfig {
    /// Allowed HTTP methods (e.g. `["GET", "PATCH"]`); at least one.
    pub methods: Vec<String>,
    /// `https` (default) or `http`; plain HTTP only when the rule says so explicitly.
    #[serde(default)]
    pub scheme: Option<String>,
    /// Host name (IDN allowed, compared in punycode) or, with `allow_ip_literal`, an IP literal.
    pub host: String,
    /// Port; defaults to 443 for https and 80 for http.
    #[serde(default)]
    pub port: Option<u16>,
    /// Path prefix the request path must equal or continue at a `/` boundary; default `/`.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The credential injected into matching requests; default none.
    #[serde(default)]
    pub credential: Option<CredentialConfig>,
    /// Whether the host may be an IP literal; off by default because IP literals bypass
    /// the name-based review operators do of egress rules.
    #[serde(default)]
    pub allow_ip_literal: bool,
}

/// `credential = "none"` or `credential = { provider = "...", scopes = [...] }`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum CredentialConfig {
    /// A keyword; only `"none"` is valid.
    Keyword(String),
    /// A named vault provider and the scopes to request from it.
    Provider(ProviderCredentialConfig),
}

/// The provider form of [`CredentialConfig`].
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ProviderCredentialConfig {
    /// Name of a provider in the vault configuration.
    pub provider: String,
    /// Scopes to request (one downstream resource), e.g. `["api://servicenow/.default"]`.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A configuration value that failed validation: which key, and why (never a secret value).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid egress setting `{key}`: {message}")]
pub struct InvalidSetting {
    /// Dotted path of the offending key, e.g. `rules[2].host`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl InvalidSetting {
    fn new(key: String, message: impl Into<String>) -> Self {
        Self { key, message: message.into() }
    }
}

impl EgressConfig {
    /// Validates every rule into an [`EgressPolicy`]. An empty rule list is valid and denies
    /// every request.
    pub fn validate(self) -> Result<EgressPolicy, InvalidSetting> {
        let rules = self
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| rule.validate(&format!("rules[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EgressPolicy::new(rules))
    }
}

impl RuleConfig {
    fn validate(self, at: &str) -> Result<EgressRule, InvalidSetting> {
        let key = |k: &str| format!("{at}.{k}");
        if self.methods.is_empty() {
            return Err(InvalidSetting::new(key("methods"), "at least one method is required"));
        }
        let mut methods = Vec::with_capacity(self.methods.len());
        for m in &self.methods {
            let upper = m.to_ascii_uppercase();
            let method = http::Method::from_bytes(upper.as_bytes())
                .map_err(|_| InvalidSetting::new(key("methods"), format!("`{m}` is not an HTTP method")))?;
            if method == http::Method::CONNECT || method == http::Method::TRACE {
                return Err(InvalidSetting::new(
                    key("methods"),
                    format!("`{upper}` is never allowed for egress"),
                ));
            }
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        let https = match self.scheme.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("https") => true,
            Some("http") => false,
            Some(other) => {
                return Err(InvalidSetting::new(key("scheme"), format!("`{other}` is not http or https")));
            }
        };
        let host = parse_host(&self.host).map_err(|why| InvalidSetting::new(key("host"), why))?;
        if matches!(host, HostName::Ip(_)) && !self.allow_ip_literal {
            return Err(InvalidSetting::new(
                key("host"),
                "an IP literal host needs `allow_ip_literal = true`",
            ));
        }
        let port = match self.port {
            Some(0) => return Err(InvalidSetting::new(key("port"), "port 0 is not a port")),
            Some(p) => p,
            None if https => 443,
            None => 80,
        };
        let path_prefix = match self.path_prefix.as_deref() {
            None => "/".to_owned(),
            Some(p) => normalize_prefix(p).map_err(|why| InvalidSetting::new(key("path_prefix"), why))?,
        };
        let credential = match self.credential {
            None => None,
            Some(CredentialConfig::Keyword(k)) if k == "none" => None,
            Some(CredentialConfig::Keyword(k)) => {
                return Err(InvalidSetting::new(
                    key("credential"),
                    format!("`{k}` is not `none` or a `{{ provider, scopes }}` table"),
                ));
            }
            Some(CredentialConfig::Provider(p)) => {
                if p.provider.trim().is_empty() {
                    return Err(InvalidSetting::new(key("credential.provider"), "must not be empty"));
                }
                if p.scopes.iter().any(|s| s.is_empty() || s.contains(char::is_whitespace)) {
                    return Err(InvalidSetting::new(
                        key("credential.scopes"),
                        "each scope must be one non-empty word",
                    ));
                }
                let mut scopes = p.scopes;
                scopes.sort();
                scopes.dedup();
                Some(CredentialRef { provider: p.provider, scopes })
            }
        };
        Ok(EgressRule {
            methods,
            https,
            host,
            port,
            path_prefix,
            credential,
            allow_ip_literal: self.allow_ip_literal,
        })
    }
}
