//! Token vault: downstream tokens for verified callers, without a credential reaching a plugin.
//!
//! [`TokenVault::token_for`] turns a [`delegate_auth::VerifiedCaller`] (Token A) into Token B for
//! a named provider and scopes:
//! - `entra_obo`: Microsoft Entra On-Behalf-Of (`jwt-bearer` grant, `assertion` = Token A,
//!   `requested_token_use=on_behalf_of`);
//! - `token_exchange`: RFC 8693 (`subject_token` = Token A);
//! - `client_credentials`: a machine token, for rules that name such a provider explicitly;
//! - `agentcore_identity`: AWS Bedrock AgentCore Identity's `GetResourceOauth2Token` with the
//!   workload access token AgentCore Runtime passed ([`delegate_auth::VerifiedCaller::workload_access_token`]),
//!   On-Behalf-Of flow (see `agentcore.rs`).
//!
//! Tokens are cached per (issuer, tenant, subject, provider, sorted scopes) until `expires_in`
//! minus a skew, never past Token A's own expiry; the cache is bounded; concurrent misses for
//! one key make a single IdP call. [`VaultCache`] admits a shared store for several replicas:
//! [`RedisCache`] keeps sealed tokens ([`seal`]) in Redis and takes a cross-replica lock on a
//! miss, so the fleet makes one exchange per key, falling back to a local exchange when Redis
//! fails.
//! IdP errors keep their OAuth/AADSTS codes and map to caller-facing statuses in
//! [`VaultError::status`], [`VaultError::code`] and [`VaultError::www_authenticate`].

mod agentcore;
mod cache;
mod config;
mod error;
mod idp;
mod redis_cache;
pub mod seal;
mod vault;

#[cfg(test)]
mod tests;

pub use agentcore::{AgentCoreAws, StaticAwsKeys};
pub use cache::{CacheKey, CachedToken, HeldLock, LockAttempt, MemoryCache, SharedLock, VaultCache};
pub use config::AgentCoreIdentityConfig;
pub use config::{
    CacheBackend, CacheConfig, CertificateConfig, ClientConfig, EntraOboConfig, InvalidSetting,
    ProviderConfig, SecretRef, TokenExchangeConfig, VaultConfig, VaultSettings,
};
pub use config::{RedisConfig, RedisSettings};
pub use error::{IdpError, VaultError};
pub use redis_cache::{RedisCache, SharedCacheStats};
pub use vault::{CacheStatus, IssuedToken, TokenVault};
