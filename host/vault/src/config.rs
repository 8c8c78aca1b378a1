//! Vault configuration: credential providers by name, client secrets by reference only.
//!
//! The raw structs mirror the operator's TOML and reject unknown keys; [`VaultConfig::validate`]
//! resolves secret references (environment variable or file) into [`Secret`]s and checks the
//! token endpoints, so a running vault never holds an invalid provider.

use base64::Engine;
pub use delegate_secret::SecretRef;
use delegate_secret::{Secret, SecretRefError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The `[vault]` section.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct VaultConfig {
    /// Providers by name; egress rules refer to these names.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Cache and retry tuning; every field has a default.
    #[serde(default)]
    pub cache: CacheConfig,
}

/// Cache and IdP-call tuning.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct CacheConfig {
    /// Maximum cached tokens (default 10 000).
    #[serde(default)]
    pub capacity: Option<usize>,
    /// Seconds subtracted from `expires_in`, so a token is never used right at its expiry
    /// (default 60).
    #[serde(default)]
    pub expiry_skew_seconds: Option<u64>,
    /// Attempts per token request when the IdP times out or answers 5xx/429 (default 3).
    #[serde(default)]
    pub idp_attempts: Option<u32>,
    /// Time limit per attempt, in milliseconds (default 10 000).
    #[serde(default)]
    pub idp_timeout_ms: Option<u64>,
    /// Backoff before the first retry, doubled for each further one, in milliseconds
    /// (default 200).
    #[serde(default)]
    pub retry_backoff_ms: Option<u64>,
    /// Where tokens are cached: `memory` (default, per replica) or `redis` (shared by every
    /// replica, configured in `redis`).
    #[serde(default)]
    pub backend: Option<CacheBackend>,
    /// The shared store, for `backend = "redis"`.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
}

/// The token cache's store.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CacheBackend {
    /// A bounded map in this process.
    #[default]
    Memory,
    /// Redis, shared by the replicas: sealed values, keyed-hash names, a cross-replica lock.
    Redis,
}

/// The `[vault.cache.redis]` section.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RedisConfig {
    /// `redis://host:port/db`, `rediss://…` (TLS) or `unix:///path/redis.sock`; without
    /// credentials (those go in `username` and `password`).
    pub url: String,
    /// The 256-bit vault key (base64), by reference: seals values and keys their names.
    pub key: SecretRef,
    /// The key before a rotation, by reference: entries it sealed are still read.
    #[serde(default)]
    pub previous_key: Option<SecretRef>,
    /// ACL user name (default: Redis's `default` user).
    #[serde(default)]
    pub username: Option<String>,
    /// The Redis password, by reference.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// Time limit per Redis operation, in milliseconds (default 150).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Lifetime of the cross-replica exchange lock, in milliseconds (default 5000).
    #[serde(default)]
    pub lock_ttl_ms: Option<u64>,
    /// How long a replica waits for another's exchange before exchanging itself, in
    /// milliseconds (default 2000).
    #[serde(default)]
    pub lock_wait_ms: Option<u64>,
    /// Allow plain `redis://` to a host that is not loopback (default false: tokens, even
    /// sealed, and the password would cross the network in clear).
    #[serde(default)]
    pub allow_plaintext: Option<bool>,
    /// PEM file of the CA that signed the server's certificate, for `rediss://`, instead of
    /// the platform roots (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// One credential provider.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderConfig {
    /// Microsoft Entra On-Behalf-Of (`jwt-bearer` grant with `requested_token_use=on_behalf_of`).
    EntraObo(EntraOboConfig),
    /// RFC 8693 token exchange.
    TokenExchange(TokenExchangeConfig),
    /// OAuth client credentials: a machine token, not the user's; only for rules that name
    /// this provider explicitly.
    ClientCredentials(ClientConfig),
    /// AWS Bedrock AgentCore Identity (`GetResourceOauth2Token`, On-Behalf-Of flow) with the
    /// workload access token AgentCore Runtime passes in; for a container inside AgentCore
    /// Runtime. See [`AgentCoreIdentityConfig`].
    AgentcoreIdentity(AgentCoreIdentityConfig),
}

/// `kind = "agentcore_identity"`: AgentCore Identity holds the client credentials; delegate
/// holds none, only AWS credentials of its execution role (aws-config default chain).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct AgentCoreIdentityConfig {
    /// The OAuth2 credential provider's name in AgentCore Identity
    /// (`resourceCredentialProviderName`, e.g. the article's `EntraIdServiceNow`).
    pub credential_provider: String,
    /// AWS region of the AgentCore Identity data plane (default: the aws-config chain,
    /// e.g. `AWS_REGION`, which AgentCore Runtime sets).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint override (VPC endpoint, devstack); https, or http on loopback only.
    #[serde(default)]
    pub endpoint_url: Option<String>,
}

/// Token endpoint and client authentication.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ClientConfig {
    /// The token endpoint, e.g. `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`.
    pub token_endpoint: String,
    /// delegate's client (application) id at the IdP.
    pub client_id: String,
    /// The client secret, by reference (this or `client_certificate`).
    #[serde(default)]
    pub client_secret: Option<SecretRef>,
    /// A certificate credential (this or `client_secret`): delegate authenticates with a
    /// signed `client_assertion` JWT (RFC 7523 §2.2) instead of a shared secret.
    #[serde(default)]
    pub client_certificate: Option<CertificateConfig>,
}

/// `kind = "entra_obo"`: token endpoint and client authentication, and for a provider whose
/// tokens go to another agent host, its chain-depth limit.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct EntraOboConfig {
    /// The token endpoint, e.g. `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`.
    pub token_endpoint: String,
    /// delegate's client (application) id at the IdP.
    pub client_id: String,
    /// The client secret, by reference (this or `client_certificate`).
    #[serde(default)]
    pub client_secret: Option<SecretRef>,
    /// A certificate credential (this or `client_secret`).
    #[serde(default)]
    pub client_certificate: Option<CertificateConfig>,
    /// Marks the hop: this provider's tokens go to another agent host. On-Behalf-Of tokens
    /// record no chain (`act`), so the egress gateway sends the signed hop counter (this
    /// host's chain depth + 1; needs `auth.hop_key`) with them, and the exchange is refused
    /// (403 `chain_depth_exceeded`) when that depth would exceed this limit. Set it to the
    /// next host's `auth.max_chain_depth`. Unset: no hop counter, no check.
    #[serde(default)]
    pub max_chain_depth: Option<usize>,
}

/// A certificate credential registered with the IdP.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct CertificateConfig {
    /// The PEM private key (RSA ≥ 2048 bits, or EC P-256), by reference.
    pub private_key: SecretRef,
    /// The PEM certificate whose SHA-256 thumbprint identifies the key (`x5t#S256`).
    pub certificate: PathBuf,
}

/// RFC 8693 provider settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct TokenExchangeConfig {
    /// The token endpoint.
    pub token_endpoint: String,
    /// delegate's client id.
    pub client_id: String,
    /// The client secret, by reference (this or `client_certificate`).
    #[serde(default)]
    pub client_secret: Option<SecretRef>,
    /// A certificate credential (this or `client_secret`).
    #[serde(default)]
    pub client_certificate: Option<CertificateConfig>,
    /// `subject_token_type` (default `urn:ietf:params:oauth:token-type:access_token`).
    #[serde(default)]
    pub subject_token_type: Option<String>,
    /// `requested_token_type`, if the IdP needs one.
    #[serde(default)]
    pub requested_token_type: Option<String>,
    /// `audience`: logical name of the target service.
    #[serde(default)]
    pub audience: Option<String>,
    /// `resource`: absolute URI of the target service.
    #[serde(default)]
    pub resource: Option<String>,
    /// Send an `actor_token` (RFC 8693 §2.1, AgentCore's `actorTokenContent = M2M`): a
    /// client-credentials token of this provider's own client for these scopes, obtained and
    /// cached by the host (never the guest). The IdP then records delegate as the current
    /// actor in the issued token's `act` claim, nesting earlier actors, so the next agent
    /// host can count the chain. Unset: no actor token.
    #[serde(default)]
    pub actor_token_scopes: Option<Vec<String>>,
    /// Marks the hop to another agent host: refuse the exchange (403 `chain_depth_exceeded`)
    /// when the next host would count a longer chain than this (the caller's chain depth,
    /// plus this host when it sends an actor token or, with `auth.hop_key`, the signed hop
    /// counter, which the egress gateway then adds to these tokens). Set it to that host's
    /// `auth.max_chain_depth` to fail early, before calling it. Unset: no check, no counter.
    #[serde(default)]
    pub max_chain_depth: Option<usize>,
}

/// A configuration value that failed validation: which key, and why (never a secret value).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid vault setting `{key}`: {message}")]
pub struct InvalidSetting {
    /// Dotted path of the offending key, e.g. `providers.servicenow.client_secret`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

/// The shared reference rules name the key the same way; `?` turns their error into ours.
impl From<SecretRefError> for InvalidSetting {
    fn from(e: SecretRefError) -> Self {
        invalid(e.key, e.message)
    }
}

pub(crate) fn invalid(key: String, message: impl Into<String>) -> InvalidSetting {
    InvalidSetting { key, message: message.into() }
}

/// The RFC 8693 access-token type URI.
pub(crate) const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// How a provider obtains a token.
#[derive(Clone, Debug)]
pub(crate) enum Grant {
    EntraObo {
        /// Set: the tokens go to another agent host (the hop is marked).
        max_chain_depth: Option<usize>,
    },
    TokenExchange {
        subject_token_type: String,
        requested_token_type: Option<String>,
        audience: Option<String>,
        resource: Option<String>,
        /// Scopes of the actor token (client credentials of the same client), if one is sent.
        actor_scopes: Option<Vec<String>>,
        max_chain_depth: Option<usize>,
    },
    ClientCredentials,
}

/// How delegate authenticates itself to the token endpoint.
#[derive(Clone)]
pub(crate) enum ClientAuth {
    /// `client_secret` in the form body.
    Secret(Secret),
    /// A `client_assertion` JWT signed with the certificate's key.
    Certificate(Arc<CertificateKey>),
}

/// A loaded certificate credential. The key zeroizes itself on drop.
pub(crate) struct CertificateKey {
    pub(crate) key: jsonwebtoken::EncodingKey,
    pub(crate) algorithm: jsonwebtoken::Algorithm,
    /// base64url SHA-256 of the certificate's DER.
    pub(crate) x5t_s256: String,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret([redacted])"),
            Self::Certificate(c) => write!(f, "Certificate({:?}, x5t#S256={})", c.algorithm, c.x5t_s256),
        }
    }
}

/// A validated provider.
#[derive(Clone, Debug)]
pub(crate) struct Provider {
    pub(crate) grant: Grant,
    pub(crate) token_endpoint: url::Url,
    pub(crate) client_id: String,
    pub(crate) client_auth: ClientAuth,
}

/// Validated vault settings, ready for [`crate::TokenVault::new`].
#[derive(Clone, Debug)]
pub struct VaultSettings {
    pub(crate) providers: BTreeMap<String, Provider>,
    /// `agentcore_identity` providers (names disjoint from `providers`).
    pub(crate) agentcore: BTreeMap<String, crate::agentcore::AgentCoreProvider>,
    pub(crate) capacity: usize,
    pub(crate) skew_seconds: u64,
    pub(crate) attempts: u32,
    pub(crate) attempt_timeout: Duration,
    pub(crate) retry_backoff: Duration,
    pub(crate) redis: Option<RedisSettings>,
    /// Whether this host sends the signed hop counter on marked hops (`auth.hop_key` is set).
    pub(crate) hop_counter: bool,
}

/// A validated `[vault.cache.redis]`: the connection target, its credentials and the vault
/// keys resolved, the timings checked.
#[derive(Clone)]
pub struct RedisSettings {
    /// The URL without credentials (safe to log).
    pub(crate) url: String,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Secret>,
    pub(crate) key: zeroize::Zeroizing<[u8; crate::seal::KEY_LEN]>,
    pub(crate) previous_key: Option<zeroize::Zeroizing<[u8; crate::seal::KEY_LEN]>>,
    pub(crate) timeout: Duration,
    pub(crate) lock_ttl: Duration,
    pub(crate) lock_wait: Duration,
    /// Capacity of the in-memory copy served while Redis is unavailable (`cache.capacity`).
    pub(crate) local_capacity: usize,
    /// The `ca_file` contents (PEM certificates), checked at start.
    pub(crate) ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("previous_key", &self.previous_key.is_some())
            .field("timeout", &self.timeout)
            .field("lock_ttl", &self.lock_ttl)
            .field("lock_wait", &self.lock_wait)
            .finish_non_exhaustive()
    }
}

impl RedisSettings {
    /// The store's URL (without credentials).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl VaultSettings {
    /// Names of the configured providers.
    pub fn provider_names(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().chain(self.agentcore.keys()).map(String::as_str)
    }

    /// Whether provider `name` is of kind `agentcore_identity` (it needs the workload access
    /// token AgentCore Runtime passes, and is the only kind that works without a JWT verified
    /// by delegate).
    pub fn is_agentcore_identity(&self, name: &str) -> bool {
        self.agentcore.contains_key(name)
    }

    /// The shared store, when `backend = "redis"`.
    pub fn redis(&self) -> Option<&RedisSettings> {
        self.redis.as_ref()
    }

    /// Providers of kind `entra_obo` that mark the hop (`max_chain_depth`): their depth
    /// protection is the signed hop counter, so they need `auth.hop_key`.
    pub fn obo_providers_marking_hops(&self) -> impl Iterator<Item = &str> {
        self.providers
            .iter()
            .filter(|(_, p)| matches!(p.grant, Grant::EntraObo { max_chain_depth: Some(_) }))
            .map(|(name, _)| name.as_str())
    }

    /// Tells the vault that the egress gateway sends the signed hop counter on marked hops
    /// (`auth.hop_key` is set), so the next host counts this host: the outbound depth check
    /// adds one for every marked provider.
    #[must_use]
    pub fn with_hop_counter(mut self) -> Self {
        self.hop_counter = true;
        self
    }
}

impl VaultConfig {
    /// Resolves secret references and checks every provider.
    pub fn validate(self) -> Result<VaultSettings, InvalidSetting> {
        let mut providers = BTreeMap::new();
        let mut agentcore = BTreeMap::new();
        for (name, config) in self.providers {
            let at = format!("providers.{name}");
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(invalid(at, "provider names use letters, digits, `-` and `_` only"));
            }
            let provider = match config {
                ProviderConfig::AgentcoreIdentity(c) => {
                    agentcore.insert(name, crate::agentcore::validate(&at, c)?);
                    continue;
                }
                ProviderConfig::EntraObo(c) => {
                    let grant = Grant::EntraObo { max_chain_depth: c.max_chain_depth };
                    let c = ClientConfig {
                        token_endpoint: c.token_endpoint,
                        client_id: c.client_id,
                        client_secret: c.client_secret,
                        client_certificate: c.client_certificate,
                    };
                    client(&at, c, grant)?
                }
                ProviderConfig::ClientCredentials(c) => client(&at, c, Grant::ClientCredentials)?,
                ProviderConfig::TokenExchange(t) => {
                    let grant = Grant::TokenExchange {
                        subject_token_type: t.subject_token_type.unwrap_or_else(|| ACCESS_TOKEN_TYPE.into()),
                        requested_token_type: t.requested_token_type,
                        audience: t.audience,
                        resource: t.resource,
                        actor_scopes: match t.actor_token_scopes {
                            Some(scopes)
                                if scopes.is_empty() || scopes.iter().any(|s| s.trim().is_empty()) =>
                            {
                                return Err(invalid(
                                    format!("{at}.actor_token_scopes"),
                                    "list at least one non-empty scope (or leave the key out for no actor token)",
                                ));
                            }
                            other => other,
                        },
                        max_chain_depth: t.max_chain_depth,
                    };
                    let c = ClientConfig {
                        token_endpoint: t.token_endpoint,
                        client_id: t.client_id,
                        client_secret: t.client_secret,
                        client_certificate: t.client_certificate,
                    };
                    client(&at, c, grant)?
                }
            };
            providers.insert(name, provider);
        }
        let c = self.cache;
        let capacity = c.capacity.unwrap_or(10_000);
        if capacity == 0 {
            return Err(invalid("cache.capacity".into(), "must be at least 1"));
        }
        let attempts = c.idp_attempts.unwrap_or(3);
        if !(1..=10).contains(&attempts) {
            return Err(invalid("cache.idp_attempts".into(), "must be between 1 and 10"));
        }
        let timeout_ms = c.idp_timeout_ms.unwrap_or(10_000);
        if timeout_ms == 0 {
            return Err(invalid("cache.idp_timeout_ms".into(), "must be greater than zero"));
        }
        let redis = match (c.backend.unwrap_or_default(), c.redis) {
            (CacheBackend::Memory, None) => None,
            (CacheBackend::Memory, Some(_)) => {
                return Err(invalid("cache.redis".into(), "is set, but `cache.backend` is not \"redis\""));
            }
            (CacheBackend::Redis, None) => {
                return Err(invalid(
                    "cache.redis".into(),
                    "`backend = \"redis\"` needs a [vault.cache.redis] section",
                ));
            }
            (CacheBackend::Redis, Some(r)) => Some(r.validate(capacity)?),
        };
        Ok(VaultSettings {
            providers,
            agentcore,
            capacity,
            skew_seconds: c.expiry_skew_seconds.unwrap_or(60),
            attempts,
            attempt_timeout: Duration::from_millis(timeout_ms),
            retry_backoff: Duration::from_millis(c.retry_backoff_ms.unwrap_or(200)),
            redis,
            hop_counter: false,
        })
    }
}

impl RedisConfig {
    fn validate(self, local_capacity: usize) -> Result<RedisSettings, InvalidSetting> {
        let at = |k: &str| format!("cache.redis.{k}");
        let url = redis_url(&at("url"), &self.url, self.allow_plaintext.unwrap_or(false))?;
        let vault_key = |r: &SecretRef, k: &str| {
            let secret = r.resolve(&at(k))?;
            crate::seal::decode_key(&secret).map_err(|e| invalid(at(k), e.to_string()))
        };
        let key = vault_key(&self.key, "key")?;
        let previous_key = self.previous_key.as_ref().map(|r| vault_key(r, "previous_key")).transpose()?;
        if previous_key.as_ref().is_some_and(|p| **p == *key) {
            return Err(invalid(at("previous_key"), "is the same as `key`"));
        }
        if self.username.as_deref().is_some_and(|u| u.trim().is_empty() || u.contains(char::is_whitespace)) {
            return Err(invalid(at("username"), "must be a non-empty name without spaces"));
        }
        let password = self.password.as_ref().map(|r| r.resolve(&at("password"))).transpose()?;
        let ms = |v: Option<u64>, default: u64, k: &str, max: u64| {
            let v = v.unwrap_or(default);
            if v == 0 || v > max {
                return Err(invalid(at(k), format!("must be between 1 and {max}")));
            }
            Ok(Duration::from_millis(v))
        };
        let timeout = ms(self.timeout_ms, 150, "timeout_ms", 5_000)?;
        let lock_ttl = ms(self.lock_ttl_ms, 5_000, "lock_ttl_ms", 120_000)?;
        let lock_wait = ms(self.lock_wait_ms, 2_000, "lock_wait_ms", 60_000)?;
        let ca_pem = match &self.ca_file {
            None => None,
            Some(_) if !url.starts_with("rediss://") => {
                return Err(invalid(at("ca_file"), "is for rediss:// (TLS) only"));
            }
            Some(path) => Some(read_ca_file(&at("ca_file"), path)?),
        };
        Ok(RedisSettings {
            url,
            username: self.username,
            password,
            key,
            previous_key,
            timeout,
            lock_ttl,
            lock_wait,
            local_capacity,
            ca_pem,
        })
    }
}

/// Reads a PEM bundle and checks it holds at least one certificate (so a wrong path or a
/// key file fails at start, not at the first TLS handshake).
fn read_ca_file(key: &str, path: &std::path::Path) -> Result<Vec<u8>, InvalidSetting> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(path)
        .map_err(|e| invalid(key.into(), format!("cannot read {}: {}", path.display(), e.kind())))?;
    let certs = CertificateDer::pem_slice_iter(&pem).filter(Result::is_ok).count();
    if certs == 0 {
        return Err(invalid(key.into(), format!("{} holds no PEM certificate", path.display())));
    }
    Ok(pem)
}

/// Redis URLs: no credentials in them (a URL gets logged), and plain TCP only to loopback
/// unless the operator opts in; unix sockets are local by construction.
fn redis_url(key: &str, raw: &str, allow_plaintext: bool) -> Result<String, InvalidSetting> {
    let url = url::Url::parse(raw).map_err(|e| invalid(key.into(), format!("not a URL ({e})")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(key.into(), "must not contain credentials; use `username` and `password`"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(key.into(), "must not have a query or fragment"));
    }
    match url.scheme() {
        "unix" | "redis+unix" => {
            if url.path().is_empty() || url.path() == "/" {
                return Err(invalid(
                    key.into(),
                    "needs the socket's path, e.g. unix:///run/redis/redis.sock",
                ));
            }
        }
        "rediss" => {
            if url.host().is_none() {
                return Err(invalid(key.into(), "has no host"));
            }
        }
        "redis" => {
            let loopback = match url.host() {
                // `redis` is not a special scheme: the URL parser leaves an IPv4 host as text.
                Some(url::Host::Domain(d)) => {
                    d == "localhost" || d.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
                }
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => return Err(invalid(key.into(), "has no host")),
            };
            if !loopback && !allow_plaintext {
                return Err(invalid(
                    key.into(),
                    "plain redis:// is only for loopback; use rediss:// (TLS) or set `allow_plaintext = true`",
                ));
            }
        }
        _ => return Err(invalid(key.into(), "must be redis://, rediss:// or unix://")),
    }
    Ok(raw.to_owned())
}

fn client(at: &str, c: ClientConfig, grant: Grant) -> Result<Provider, InvalidSetting> {
    let token_endpoint = endpoint(&format!("{at}.token_endpoint"), &c.token_endpoint)?;
    if c.client_id.trim().is_empty() {
        return Err(invalid(format!("{at}.client_id"), "must not be empty"));
    }
    let client_auth = match (c.client_secret, c.client_certificate) {
        (Some(secret), None) => ClientAuth::Secret(secret.resolve(&format!("{at}.client_secret"))?),
        (None, Some(cert)) => {
            ClientAuth::Certificate(Arc::new(load_certificate(&format!("{at}.client_certificate"), &cert)?))
        }
        _ => return Err(invalid(at.into(), "give exactly one of `client_secret` or `client_certificate`")),
    };
    Ok(Provider { grant, token_endpoint, client_id: c.client_id, client_auth })
}

fn load_certificate(at: &str, c: &CertificateConfig) -> Result<CertificateKey, InvalidSetting> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use sha2::Digest;
    let key_pem = c.private_key.resolve(&format!("{at}.private_key"))?;
    let (key, algorithm) = if let Ok(k) = jsonwebtoken::EncodingKey::from_rsa_pem(key_pem.expose().as_bytes())
    {
        (k, jsonwebtoken::Algorithm::RS256)
    } else if let Ok(k) = jsonwebtoken::EncodingKey::from_ec_pem(key_pem.expose().as_bytes()) {
        (k, jsonwebtoken::Algorithm::ES256)
    } else {
        return Err(invalid(format!("{at}.private_key"), "not a PEM RSA or EC P-256 private key"));
    };
    let cert = CertificateDer::from_pem_file(&c.certificate).map_err(|e| {
        invalid(
            format!("{at}.certificate"),
            format!("cannot read a PEM certificate from {}: {e}", c.certificate.display()),
        )
    })?;
    let x5t_s256 =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(cert.as_ref()));
    Ok(CertificateKey { key, algorithm, x5t_s256 })
}

/// Token endpoints must be https, except on loopback (the devstack, tests): a client secret
/// and the user's token travel in the request body.
pub(crate) fn endpoint(key: &str, raw: &str) -> Result<url::Url, InvalidSetting> {
    let url = url::Url::parse(raw).map_err(|e| invalid(key.into(), format!("not a URL ({e})")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(key.into(), "must not contain credentials"));
    }
    if url.fragment().is_some() {
        return Err(invalid(key.into(), "must not have a fragment"));
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(invalid(key.into(), "has no host")),
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(invalid(key.into(), "must be https (plain http only on loopback)")),
    }
}
