//! Authorizer configuration: the raw TOML form ([`AuthConfig`]) and its validated form
//! ([`AuthSettings`]), which cannot hold an invalid combination.

use std::str::FromStr;
use std::time::Duration;

use delegate_secret::SecretRef;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::HopKey;

/// Inbound JWT authorizer settings as written by the operator (mirrors AgentCore's
/// `customJWTAuthorizer`, see protocols.md §7.7, plus the checks Entra tokens need).
///
/// ```toml
/// discovery_url = "https://login.microsoftonline.com/<tid>/v2.0/.well-known/openid-configuration"
/// allowed_audiences = ["<delegate API client id>"]
/// allowed_clients = ["<calling app client id>"]
/// required_scopes = ["access_as_user"]
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// OpenID Connect discovery document URL (HTTPS, ending in
    /// `/.well-known/openid-configuration`). Its `issuer` is the only accepted `iss` (for Entra
    /// `common`/`organizations` documents: the `{tenantid}` template, see `allowed_tenants`).
    pub discovery_url: String,
    /// More discovery documents whose issuers are also accepted, e.g. Entra's v1 document
    /// (`https://login.microsoftonline.com/<tid>/.well-known/openid-configuration`, issuer
    /// `https://sts.windows.net/<tid>/`) next to the v2 one.
    #[serde(default)]
    pub additional_discovery_urls: Vec<String>,
    /// The token's `aud` (string or array) must contain one of these. Entra v2 tokens carry the
    /// API's client id GUID; v1 tokens the App ID URI (`api://...`) or the GUID.
    pub allowed_audiences: Vec<String>,
    /// The token's client (`azp` for Entra v2, `appid` for v1, `client_id` for Cognito-style
    /// IdPs) must be one of these. Required: an empty list would admit every app in the tenant.
    pub allowed_clients: Vec<String>,
    /// Every one of these must appear in the token's scopes (`scp`/`scope`, space-separated)
    /// or app roles (`roles`).
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Tenant ids (`tid`) accepted from a multi-tenant (`{tenantid}`) issuer; required then.
    /// With a single-tenant issuer, further restricts `tid` when set.
    #[serde(default)]
    pub allowed_tenants: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds (at most 300).
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Accepted signature algorithms: `RS256` (default), opt-in `RS384`, `RS512`, `PS256`,
    /// `PS384`, `PS512`, `ES256`, `ES384`. `none` and HMAC are never accepted.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Extra claim checks (AgentCore `customClaims`); failing one answers 403.
    #[serde(default)]
    pub claim_rules: Vec<ClaimRule>,
    /// Upper bound between background JWKS refreshes, in seconds (used when the JWKS response
    /// has no usable `Cache-Control: max-age`). Default 86400, as Microsoft suggests.
    #[serde(default = "default_refresh_max")]
    pub jwks_refresh_max_seconds: u64,
    /// Lower bound between refreshes, in seconds: caps background refreshes driven by a short
    /// `max-age` and spaces refreshes triggered by unknown `kid`s (at most one per interval).
    /// Default 300.
    #[serde(default = "default_refresh_min")]
    pub jwks_refresh_min_seconds: u64,
    /// Timeout of each discovery or JWKS fetch, in milliseconds (default 5000). A request
    /// waiting for keys never waits longer than this.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_ms: u64,
    /// Maximum token size in bytes (default 16384); larger `Authorization` values are rejected
    /// before any parsing.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Longest delegation chain accepted: how many agents have already acted for the user
    /// before this one (a user's own token is 0), the larger of the number of nested `act`
    /// claims (RFC 8693 §4.1) in the verified token and the verified hop counter (see
    /// `hop_key`). Deeper requests are refused with 403 `chain_depth_exceeded` before any
    /// plugin code runs; this is what stops a loop A → B → A. 0 accepts only a user's own
    /// calls. Default 4, at most 16.
    #[serde(default = "default_max_chain_depth")]
    pub max_chain_depth: usize,
    /// The hop key shared by agent hosts that call each other, by reference: standard base64
    /// of 32 to 1024 random bytes (`openssl rand -base64 32`). With it, this host verifies the
    /// signed hop counter header other hosts send (a chain depth for On-Behalf-Of chains,
    /// whose tokens carry no `act`) and its egress gateway signs one on rules whose provider
    /// sets `max_chain_depth`. Without it the header is ignored. Whoever holds the key can
    /// assert any depth: guard it like a signing key.
    #[serde(default)]
    pub hop_key: Option<SecretRef>,
    /// A second hop key, by reference, accepted when verifying a hop counter but never used to
    /// sign one: for rotating `hop_key` across hosts without refusing a chain mid-rollout
    /// (docs/chains.md, "Rotating the hop key"). Same form as `hop_key`, which it needs and
    /// must differ from.
    #[serde(default)]
    pub hop_key_previous: Option<SecretRef>,
    /// Clients (`azp`/`appid`/`client_id`) whose tokens must carry a valid hop counter header,
    /// else 401 `invalid_hop`: the agent hosts among `allowed_clients`, so that a call from
    /// one whose rule forgot to mark the hop is refused rather than counted as depth 0.
    /// Needs `hop_key`.
    #[serde(default)]
    pub hop_required_from: Vec<String>,
}

/// One extra claim check. Exactly one of `equals`, `contains`, `contains_any` is set.
///
/// `equals` compares a string claim; `contains`/`contains_any` look into an array claim or a
/// space-separated string claim (such as `scp`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClaimRule {
    /// Claim name, e.g. `tid`, `idtyp`, `groups`.
    pub claim: String,
    /// The claim must be this string.
    #[serde(default)]
    pub equals: Option<String>,
    /// The claim must contain this value.
    #[serde(default)]
    pub contains: Option<String>,
    /// The claim must contain at least one of these values.
    #[serde(default)]
    pub contains_any: Option<Vec<String>>,
}

fn default_leeway() -> u64 {
    60
}
fn default_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}
fn default_refresh_max() -> u64 {
    86_400
}
fn default_refresh_min() -> u64 {
    300
}
fn default_fetch_timeout() -> u64 {
    5_000
}
fn default_max_token_bytes() -> usize {
    16 * 1024
}
fn default_max_chain_depth() -> usize {
    4
}
/// Upper bound of `max_chain_depth` (also how deep `act` claims are parsed at all).
pub(crate) const MAX_CHAIN_DEPTH_LIMIT: usize = 16;

/// A configuration value that cannot be used, naming the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("auth.{key}: {message}")]
pub struct InvalidSetting {
    /// The offending key, e.g. `allowed_audiences` or `claim_rules[2].claim`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> InvalidSetting {
    InvalidSetting { key: key.into(), message: message.into() }
}

/// How a [`ClaimRule`] matches, after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ClaimMatch {
    Equals(String),
    Contains(String),
    ContainsAny(Vec<String>),
}

/// Validated authorizer settings (see [`AuthConfig`] for the meaning of each).
#[derive(Clone, Debug)]
pub struct AuthSettings {
    pub(crate) discovery_urls: Vec<reqwest::Url>,
    pub(crate) allowed_audiences: Vec<String>,
    pub(crate) allowed_clients: Vec<String>,
    pub(crate) required_scopes: Vec<String>,
    pub(crate) allowed_tenants: Vec<String>,
    pub(crate) leeway: u64,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) claim_rules: Vec<(String, ClaimMatch)>,
    pub(crate) refresh_max: Duration,
    pub(crate) refresh_min: Duration,
    pub(crate) fetch_timeout: Duration,
    pub(crate) max_token_bytes: usize,
    pub(crate) max_chain_depth: usize,
    pub(crate) hop_key: Option<HopKey>,
    pub(crate) hop_key_previous: Option<HopKey>,
    pub(crate) hop_required_from: Vec<String>,
}

impl AuthSettings {
    /// The fetch timeout (also the longest a request waits for keys).
    pub fn fetch_timeout(&self) -> Duration {
        self.fetch_timeout
    }

    /// The longest accepted delegation chain (`max_chain_depth`).
    pub fn max_chain_depth(&self) -> usize {
        self.max_chain_depth
    }

    /// The hop key (`hop_key`), for the egress gateway to sign the hop counter with.
    pub fn hop_key(&self) -> Option<&HopKey> {
        self.hop_key.as_ref()
    }
}

/// Claims that are mutable or user-controlled in Entra: never a basis for authorization
/// (protocols.md §4.1 item 13).
const MUTABLE_CLAIMS: [&str; 5] = ["preferred_username", "upn", "unique_name", "name", "email"];

impl AuthConfig {
    /// A configuration with the three required settings and defaults for the rest.
    pub fn new(discovery_url: &str, allowed_audiences: &[&str], allowed_clients: &[&str]) -> Self {
        AuthConfig {
            discovery_url: discovery_url.to_owned(),
            additional_discovery_urls: Vec::new(),
            allowed_audiences: allowed_audiences.iter().map(|s| (*s).to_owned()).collect(),
            allowed_clients: allowed_clients.iter().map(|s| (*s).to_owned()).collect(),
            required_scopes: Vec::new(),
            allowed_tenants: Vec::new(),
            leeway_seconds: default_leeway(),
            algorithms: default_algorithms(),
            claim_rules: Vec::new(),
            jwks_refresh_max_seconds: default_refresh_max(),
            jwks_refresh_min_seconds: default_refresh_min(),
            fetch_timeout_ms: default_fetch_timeout(),
            max_token_bytes: default_max_token_bytes(),
            max_chain_depth: default_max_chain_depth(),
            hop_key: None,
            hop_key_previous: None,
            hop_required_from: Vec::new(),
        }
    }

    /// Checks every setting and returns the usable form, or the first bad key.
    pub fn validate(self) -> Result<AuthSettings, InvalidSetting> {
        let mut discovery_urls = vec![parse_discovery_url("discovery_url", &self.discovery_url)?];
        for (i, u) in self.additional_discovery_urls.iter().enumerate() {
            discovery_urls.push(parse_discovery_url(&format!("additional_discovery_urls[{i}]"), u)?);
        }
        let multi_tenant = discovery_urls.iter().any(|u| {
            u.path_segments()
                .and_then(|mut s| s.next())
                .is_some_and(|t| matches!(t, "common" | "organizations" | "consumers"))
        });

        non_empty_list("allowed_audiences", &self.allowed_audiences)?;
        non_empty_list("allowed_clients", &self.allowed_clients)?;
        for (i, s) in self.required_scopes.iter().enumerate() {
            if s.is_empty() || s.contains(char::is_whitespace) {
                return Err(invalid(format!("required_scopes[{i}]"), "a scope is one non-empty word"));
            }
        }
        for (i, t) in self.allowed_tenants.iter().enumerate() {
            if !crate::token::is_guid(t) {
                return Err(invalid(format!("allowed_tenants[{i}]"), "tenant ids are GUIDs"));
            }
        }
        if multi_tenant && self.allowed_tenants.is_empty() {
            return Err(invalid(
                "allowed_tenants",
                "a multi-tenant discovery URL (common/organizations/consumers) accepts tokens from any tenant; list the allowed tenant ids",
            ));
        }
        if self.leeway_seconds > 300 {
            return Err(invalid("leeway_seconds", "at most 300 seconds"));
        }
        if self.algorithms.is_empty() {
            return Err(invalid("algorithms", "at least one algorithm is required"));
        }
        let mut algorithms = Vec::new();
        for (i, name) in self.algorithms.iter().enumerate() {
            let alg = Algorithm::from_str(name)
                .ok()
                .filter(|a| {
                    matches!(
                        a,
                        Algorithm::RS256
                            | Algorithm::RS384
                            | Algorithm::RS512
                            | Algorithm::PS256
                            | Algorithm::PS384
                            | Algorithm::PS512
                            | Algorithm::ES256
                            | Algorithm::ES384
                    )
                })
                .ok_or_else(|| {
                    invalid(
                        format!("algorithms[{i}]"),
                        format!(
                            "{name:?} is not accepted (use RS256, RS384, RS512, PS256, PS384, PS512, ES256 or ES384; never none or HMAC)"
                        ),
                    )
                })?;
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        let mut claim_rules = Vec::new();
        for (i, rule) in self.claim_rules.iter().enumerate() {
            let key = |field: &str| format!("claim_rules[{i}].{field}");
            if rule.claim.is_empty() {
                return Err(invalid(key("claim"), "claim name is empty"));
            }
            if MUTABLE_CLAIMS.contains(&rule.claim.as_str()) {
                return Err(invalid(
                    key("claim"),
                    format!(
                        "{} is mutable and user-influenced; authorize on oid, tid, roles or scp instead",
                        rule.claim
                    ),
                ));
            }
            let m = match (&rule.equals, &rule.contains, &rule.contains_any) {
                (Some(v), None, None) => ClaimMatch::Equals(v.clone()),
                (None, Some(v), None) => ClaimMatch::Contains(v.clone()),
                (None, None, Some(v)) if !v.is_empty() => ClaimMatch::ContainsAny(v.clone()),
                (None, None, Some(_)) => {
                    return Err(invalid(key("contains_any"), "list is empty"));
                }
                _ => {
                    return Err(invalid(key("claim"), "set exactly one of equals, contains, contains_any"));
                }
            };
            claim_rules.push((rule.claim.clone(), m));
        }
        if self.jwks_refresh_min_seconds == 0 {
            return Err(invalid(
                "jwks_refresh_min_seconds",
                "must be at least 1 (it rate-limits IdP fetches)",
            ));
        }
        if self.jwks_refresh_max_seconds < self.jwks_refresh_min_seconds
            || self.jwks_refresh_max_seconds > 7 * 86_400
        {
            return Err(invalid(
                "jwks_refresh_max_seconds",
                "must be between jwks_refresh_min_seconds and 604800",
            ));
        }
        if !(100..=60_000).contains(&self.fetch_timeout_ms) {
            return Err(invalid("fetch_timeout_ms", "must be between 100 and 60000"));
        }
        if !(1024..=65_536).contains(&self.max_token_bytes) {
            return Err(invalid("max_token_bytes", "must be between 1024 and 65536"));
        }
        if self.max_chain_depth > MAX_CHAIN_DEPTH_LIMIT {
            return Err(invalid("max_chain_depth", format!("must be at most {MAX_CHAIN_DEPTH_LIMIT}")));
        }
        let hop_key = match &self.hop_key {
            Some(r) => {
                let secret = r.resolve("hop_key").map_err(|e| invalid(e.key, e.message))?;
                Some((HopKey::from_base64(&secret).map_err(|e| invalid("hop_key", e.to_string()))?, secret))
            }
            None => None,
        };
        let hop_key_previous = match &self.hop_key_previous {
            Some(r) => {
                let secret = r.resolve("hop_key_previous").map_err(|e| invalid(e.key, e.message))?;
                let key =
                    HopKey::from_base64(&secret).map_err(|e| invalid("hop_key_previous", e.to_string()))?;
                match &hop_key {
                    None => {
                        return Err(invalid(
                            "hop_key_previous",
                            "needs hop_key (the key hop counters are signed with)",
                        ));
                    }
                    Some((_, current)) if current.expose().trim() == secret.expose().trim() => {
                        return Err(invalid("hop_key_previous", "is the same key as hop_key"));
                    }
                    Some(_) => Some(key),
                }
            }
            None => None,
        };
        let hop_key = hop_key.map(|(key, _)| key);
        for (i, client) in self.hop_required_from.iter().enumerate() {
            let key = format!("hop_required_from[{i}]");
            if hop_key.is_none() {
                return Err(invalid(key, "needs hop_key (the key that verifies the hop counter)"));
            }
            if !self.allowed_clients.contains(client) {
                return Err(invalid(key, format!("{client:?} is not in allowed_clients")));
            }
        }
        Ok(AuthSettings {
            discovery_urls,
            allowed_audiences: self.allowed_audiences,
            allowed_clients: self.allowed_clients,
            required_scopes: self.required_scopes,
            allowed_tenants: self.allowed_tenants.iter().map(|t| t.to_ascii_lowercase()).collect(),
            leeway: self.leeway_seconds,
            algorithms,
            claim_rules,
            refresh_max: Duration::from_secs(self.jwks_refresh_max_seconds),
            refresh_min: Duration::from_secs(self.jwks_refresh_min_seconds),
            fetch_timeout: Duration::from_millis(self.fetch_timeout_ms),
            max_token_bytes: self.max_token_bytes,
            max_chain_depth: self.max_chain_depth,
            hop_key,
            hop_key_previous,
            hop_required_from: self.hop_required_from,
        })
    }
}

fn non_empty_list(key: &str, list: &[String]) -> Result<(), InvalidSetting> {
    if list.is_empty() {
        return Err(invalid(key, "at least one value is required"));
    }
    if let Some(i) = list.iter().position(|s| s.trim().is_empty()) {
        return Err(invalid(format!("{key}[{i}]"), "empty value"));
    }
    Ok(())
}

fn parse_discovery_url(key: &str, value: &str) -> Result<reqwest::Url, InvalidSetting> {
    let url = reqwest::Url::parse(value).map_err(|e| invalid(key, format!("not a URL: {e}")))?;
    if url.scheme() != "https" {
        return Err(invalid(key, "must be an https:// URL"));
    }
    if !url.path().ends_with("/.well-known/openid-configuration") {
        return Err(invalid(key, "must end with /.well-known/openid-configuration"));
    }
    if url.query().is_some() && !url.query().is_some_and(|q| q.starts_with("appid=")) {
        return Err(invalid(key, "unexpected query string"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(key, "must not contain credentials"));
    }
    Ok(url)
}
