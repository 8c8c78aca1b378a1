//! [`TokenVault`]: cache lookup, single-flight, IdP call, expiry rules.

use crate::cache::{CacheKey, CachedToken, HeldLock, LockAttempt, MemoryCache, VaultCache};
use crate::config::{Grant, VaultSettings};
use crate::error::VaultError;
use crate::idp;
use delegate_auth::VerifiedCaller;
use delegate_secret::Secret;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// Whether a token came from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the cache, no IdP call.
    Hit,
    /// Needed an IdP call (made by this request, or by a concurrent one it waited for).
    Miss,
}

/// A token for one downstream call.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    /// The token, for the `Authorization: Bearer` header only.
    pub token: Secret,
    /// Hit or miss, for the audit record.
    pub cache: CacheStatus,
    /// When the token expires (Unix seconds).
    pub expires_at: u64,
}

/// The result one IdP call shares with every request that waited for it.
type Flight = Arc<OnceCell<Result<CachedToken, VaultError>>>;

/// Source of "now" in Unix seconds; replaceable in tests to step over expiry.
pub(crate) type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

fn system_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Obtains downstream tokens for verified callers, from a cache or a credential provider.
///
/// Cheap to share (`Arc<TokenVault>`); all methods take `&self`.
pub struct TokenVault {
    settings: VaultSettings,
    client: reqwest::Client,
    cache: Arc<dyn VaultCache>,
    inflight: Mutex<HashMap<CacheKey, Flight>>,
    clock: Clock,
    agentcore: crate::agentcore::AgentCoreClients,
}

impl std::fmt::Debug for TokenVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVault")
            .field("providers", &self.settings.providers.keys())
            .finish_non_exhaustive()
    }
}

impl TokenVault {
    /// A vault with the bounded in-memory cache. `client` should come from
    /// `delegate_outbound::build_client` (operator CA bundle, timeouts, no redirects).
    pub fn new(settings: VaultSettings, client: reqwest::Client) -> Self {
        let cache = Arc::new(MemoryCache::new(settings.capacity));
        Self::with_cache(settings, client, cache)
    }

    /// A vault over another [`VaultCache`] (e.g. a shared store).
    pub fn with_cache(settings: VaultSettings, client: reqwest::Client, cache: Arc<dyn VaultCache>) -> Self {
        let agentcore = crate::agentcore::AgentCoreClients::new(&settings.agentcore);
        Self {
            settings,
            client,
            cache,
            inflight: Mutex::new(HashMap::new()),
            clock: Arc::new(system_now),
            agentcore,
        }
    }

    /// The AWS SDK configuration (credentials, region, HTTP client with the operator's CA
    /// bundle) for `agentcore_identity` providers, instead of the aws-config default chain
    /// loaded on first use.
    #[must_use]
    pub fn with_aws_config(self, sdk: aws_config::SdkConfig) -> Self {
        self.agentcore.set_base(sdk);
        self
    }

    /// How `agentcore_identity` providers reach AWS (the model client's credentials, the
    /// operator's CA bundle), on top of the aws-config default chain. Call before the first
    /// token request; later calls (and calls after [`TokenVault::with_aws_config`]) are
    /// ignored.
    pub fn set_agentcore_aws(&self, access: crate::agentcore::AgentCoreAws) {
        self.agentcore.set_access(access);
    }

    #[cfg(test)]
    pub(crate) fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    #[cfg(test)]
    pub(crate) fn flights_in_progress(&self) -> usize {
        self.inflight.lock().map_or(0, |m| m.len())
    }

    /// Whether a provider of this name is configured (for cross-checking egress rules).
    pub fn has_provider(&self, provider: &str) -> bool {
        self.settings.providers.contains_key(provider) || self.settings.agentcore.contains_key(provider)
    }

    /// Every client secret the vault holds, so the egress scrubber can redact them too.
    pub fn client_secrets(&self) -> impl Iterator<Item = &Secret> {
        self.settings.providers.values().filter_map(|p| match &p.client_auth {
            crate::config::ClientAuth::Secret(s) => Some(s),
            crate::config::ClientAuth::Certificate(_) => None,
        })
    }

    /// A token for `caller` at `provider` with `scopes`: from the cache when fresh, else from
    /// the provider. Concurrent misses for one key make one IdP call and share its result.
    pub async fn token_for(
        &self,
        caller: &VerifiedCaller,
        provider: &str,
        scopes: &[String],
    ) -> Result<IssuedToken, VaultError> {
        let (key, delegated) = self.key(caller, provider, scopes)?;
        if delegated && caller.scopes().is_empty() {
            // App-only tokens cannot be exchanged on behalf of a user; refuse before the IdP does.
            return Err(VaultError::UserTokenRequired { provider: provider.to_owned() });
        }
        self.check_chain_depth(caller, provider)?;
        let now = (self.clock)();
        if let Some(hit) = self.cache.get(&key, now).await {
            return Ok(IssuedToken { token: hit.token, cache: CacheStatus::Hit, expires_at: hit.expires_at });
        }
        let flight = {
            let mut inflight = self.inflight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            inflight.entry(key.clone()).or_default().clone()
        };
        // Removes the flight from the map when this request finishes or is cancelled, so a
        // finished or abandoned flight never lingers (an errored one must not be reused).
        let _guard = FlightGuard { inflight: &self.inflight, key: &key, flight: &flight };
        // If the request running the initialiser is cancelled, the next waiter runs it.
        let result =
            flight.get_or_init(|| self.fetch_shared(caller, provider, &key, delegated)).await.clone();
        result.map(|t| IssuedToken { token: t.token, cache: CacheStatus::Miss, expires_at: t.expires_at })
    }

    /// Drops the cached token for this caller, provider and scopes, so the next
    /// [`TokenVault::token_for`] asks the IdP: for a downstream 401 (revoked or rotated token),
    /// after which the request is retried once.
    pub async fn evict(&self, caller: &VerifiedCaller, provider: &str, scopes: &[String]) {
        if let Ok((key, _)) = self.key(caller, provider, scopes) {
            self.cache.evict(&key).await;
        }
    }

    /// The cache key, and whether the token is the user's (delegated) or a machine token.
    fn key(
        &self,
        caller: &VerifiedCaller,
        provider: &str,
        scopes: &[String],
    ) -> Result<(CacheKey, bool), VaultError> {
        if self.settings.agentcore.contains_key(provider) {
            let wat = caller
                .workload_access_token()
                .ok_or_else(|| VaultError::WorkloadTokenRequired { provider: provider.to_owned() })?;
            // The token AgentCore returns is the user's, so the entry is the caller's; and it
            // is tied to the workload access token too, since delegate cannot check that the
            // token and the JWT it came with name the same user (see agentcore.rs).
            let scoped = format!("{provider}@wat:{}", crate::agentcore::wat_digest(wat));
            let key = CacheKey::new(caller.issuer(), caller.tenant(), caller.subject(), &scoped, scopes);
            // An app-only JWT cannot be exchanged on behalf of a user; a caller known only by
            // its workload access token has no claims to check (AgentCore checked them).
            return Ok((key, caller.is_token_verified()));
        }
        if !caller.is_token_verified() {
            return Err(VaultError::VerifiedCallerRequired { provider: provider.to_owned() });
        }
        let p = self
            .settings
            .providers
            .get(provider)
            .ok_or_else(|| VaultError::UnknownProvider { provider: provider.to_owned() })?;
        Ok(match p.grant {
            // A client-credentials token is the same for every user: one entry for all.
            Grant::ClientCredentials => (CacheKey::new("", None, "", provider, scopes), false),
            Grant::EntraObo { .. } | Grant::TokenExchange { .. } => {
                (CacheKey::new(caller.issuer(), caller.tenant(), caller.subject(), provider, scopes), true)
            }
        })
    }

    /// [`TokenVault::fetch`], coordinated across replicas when the cache offers a
    /// [`SharedLock`]: the lock's winner exchanges and shares the token, the others wait for it
    /// (boundedly), and any store failure falls back to a local exchange.
    async fn fetch_shared(
        &self,
        caller: &VerifiedCaller,
        name: &str,
        key: &CacheKey,
        delegated: bool,
    ) -> Result<CachedToken, VaultError> {
        let Some(lock) = self.cache.shared_lock() else {
            return self.fetch(caller, name, key, delegated).await;
        };
        match lock.acquire(key).await {
            LockAttempt::Acquired(held) => {
                let guard =
                    LockRelease { cache: Arc::clone(&self.cache), key: key.clone(), held: Some(held) };
                // Another replica may have shared the token between our miss and the lock.
                let result = match self.cache.get(key, (self.clock)()).await {
                    Some(token) => Ok(token),
                    None => self.fetch(caller, name, key, delegated).await,
                };
                guard.release().await;
                result
            }
            LockAttempt::Held => match lock.wait(key, (self.clock)()).await {
                Some(token) => Ok(token),
                None => self.fetch(caller, name, key, delegated).await,
            },
            LockAttempt::Unavailable => self.fetch(caller, name, key, delegated).await,
        }
    }

    async fn fetch(
        &self,
        caller: &VerifiedCaller,
        name: &str,
        key: &CacheKey,
        delegated: bool,
    ) -> Result<CachedToken, VaultError> {
        if let Some(provider) = self.settings.agentcore.get(name) {
            return self.fetch_agentcore(caller, name, provider, key).await;
        }
        let provider = self
            .settings
            .providers
            .get(name)
            .ok_or_else(|| VaultError::UnknownProvider { provider: name.to_owned() })?;
        let actor = match &provider.grant {
            Grant::TokenExchange { actor_scopes: Some(scopes), .. } => {
                Some(self.actor_token(caller, name, provider, scopes).await?)
            }
            _ => None,
        };
        let issued = idp::request_token_with_actor(
            &self.client,
            &self.settings,
            name,
            provider,
            caller,
            key.scopes(),
            actor.as_ref(),
        )
        .await?;
        let now = (self.clock)();
        let caller_exp = delegated.then(|| caller.expires_at());
        let (expires_at, fresh_until) =
            lifetime(now, issued.expires_in, self.settings.skew_seconds, caller_exp);
        let token = CachedToken { token: issued.token, expires_at, fresh_until };
        if fresh_until > now {
            self.cache.put(key.clone(), token.clone(), now).await;
        }
        tracing::debug!(
            target: "delegate::vault",
            provider = name,
            expires_at,
            fresh_until,
            "token obtained from the identity provider"
        );
        Ok(token)
    }
}

impl TokenVault {
    /// Whether `provider` marks the hop to another agent host (it sets `max_chain_depth`):
    /// the egress gateway sends the signed hop counter with its tokens.
    pub fn marks_hop(&self, provider: &str) -> bool {
        matches!(
            self.settings.providers.get(provider).map(|p| &p.grant),
            Some(
                Grant::EntraObo { max_chain_depth: Some(_) }
                    | Grant::TokenExchange { max_chain_depth: Some(_), .. }
            )
        )
    }

    /// Refuses early when the next host would count a longer delegation chain than the
    /// provider's `max_chain_depth`: the caller's effective chain depth (its `act` chain or
    /// verified hop counter, whichever is larger), plus this host when it is recorded: by an
    /// actor token (token exchange) or by the signed hop counter (with a hop key).
    fn check_chain_depth(&self, caller: &VerifiedCaller, provider: &str) -> Result<(), VaultError> {
        let hop = self.settings.hop_counter;
        let (max, counted) = match self.settings.providers.get(provider).map(|p| &p.grant) {
            Some(Grant::TokenExchange { actor_scopes, max_chain_depth: Some(max), .. }) => {
                (*max, actor_scopes.is_some() || hop)
            }
            Some(Grant::EntraObo { max_chain_depth: Some(max) }) => (*max, hop),
            _ => return Ok(()),
        };
        let depth = caller.chain_depth() + usize::from(counted);
        if depth > max {
            return Err(VaultError::ChainTooDeep { provider: provider.to_owned(), depth, max });
        }
        Ok(())
    }

    /// The actor token of a token-exchange provider: a client-credentials token of the same
    /// client, cached like any machine token (one entry for all users, under a name no
    /// provider can have).
    async fn actor_token(
        &self,
        caller: &VerifiedCaller,
        name: &str,
        provider: &crate::config::Provider,
        scopes: &[String],
    ) -> Result<Secret, VaultError> {
        let key = CacheKey::new("", None, "", &format!("{name}#actor"), scopes);
        let now = (self.clock)();
        if let Some(hit) = self.cache.get(&key, now).await {
            return Ok(hit.token);
        }
        // The caller is not sent with a client-credentials grant; it only fills the argument.
        let machine = crate::config::Provider { grant: Grant::ClientCredentials, ..provider.clone() };
        let issued =
            idp::request_token(&self.client, &self.settings, name, &machine, caller, key.scopes()).await?;
        let (expires_at, fresh_until) = lifetime(now, issued.expires_in, self.settings.skew_seconds, None);
        let token = CachedToken { token: issued.token, expires_at, fresh_until };
        if fresh_until > now {
            self.cache.put(key, token.clone(), now).await;
        }
        Ok(token.token)
    }

    /// [`TokenVault::fetch`] for an `agentcore_identity` provider: always capped by the
    /// caller's expiry (for a caller known only by its workload access token, a short bound).
    async fn fetch_agentcore(
        &self,
        caller: &VerifiedCaller,
        name: &str,
        provider: &crate::agentcore::AgentCoreProvider,
        key: &CacheKey,
    ) -> Result<CachedToken, VaultError> {
        let wat = caller
            .workload_access_token()
            .ok_or_else(|| VaultError::WorkloadTokenRequired { provider: name.to_owned() })?;
        let now = (self.clock)();
        let obtained = crate::agentcore::request_token(
            &self.agentcore,
            &self.settings,
            name,
            provider,
            wat,
            key.scopes(),
            now,
        )
        .await?;
        let (expires_at, fresh_until) =
            lifetime(now, obtained.expires_in, self.settings.skew_seconds, Some(caller.expires_at()));
        let token = CachedToken { token: obtained.token, expires_at, fresh_until };
        if fresh_until > now {
            self.cache.put(key.clone(), token.clone(), now).await;
        }
        tracing::debug!(
            target: "delegate::vault",
            provider = name,
            expires_at,
            fresh_until,
            "token obtained from AgentCore Identity"
        );
        Ok(token)
    }
}

/// Releases a cross-replica lock when the exchange under it ends, also when the request is
/// cancelled mid-exchange (then from a spawned task), so neither this replica's next waiter
/// nor the other replicas wait out `lock_wait_ms` for an exchange nobody is making.
struct LockRelease {
    cache: Arc<dyn VaultCache>,
    key: CacheKey,
    held: Option<HeldLock>,
}

impl LockRelease {
    async fn release(mut self) {
        if let (Some(held), Some(lock)) = (self.held.take(), self.cache.shared_lock()) {
            lock.release(&self.key, held).await;
        }
    }
}

impl Drop for LockRelease {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else { return };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (cache, key) = (Arc::clone(&self.cache), self.key.clone());
            runtime.spawn(async move {
                if let Some(lock) = cache.shared_lock() {
                    lock.release(&key, held).await;
                }
            });
        }
    }
}

/// Cleans up one request's share of a flight; see [`TokenVault::token_for`].
struct FlightGuard<'a> {
    inflight: &'a Mutex<HashMap<CacheKey, Flight>>,
    key: &'a CacheKey,
    flight: &'a Flight,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut inflight = self.inflight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if inflight.get(self.key).is_some_and(|f| Arc::ptr_eq(f, self.flight)) {
            // Joiners clone the Arc under this lock, so the count cannot grow meanwhile: two
            // references (the map's and ours) mean nobody else is waiting.
            if self.flight.initialized() || Arc::strong_count(self.flight) <= 2 {
                inflight.remove(self.key);
            }
        }
    }
}

/// `(expires_at, fresh_until)` for a token issued at `now`:
/// - `expires_at` is the IdP's `expires_in` (without it: no caching, and the caller's expiry,
///   or `now` for machine tokens, stands in);
/// - `fresh_until` is `expires_in` minus the skew, and never past the caller's own token
///   (`caller_exp`, for delegated tokens): a token obtained on behalf of a user must not be
///   served after the proof of that user's authentication has expired.
pub(crate) fn lifetime(now: u64, expires_in: Option<u64>, skew: u64, caller_exp: Option<u64>) -> (u64, u64) {
    let Some(expires_in) = expires_in else {
        return (caller_exp.unwrap_or(now), now);
    };
    let expires_at = now.saturating_add(expires_in);
    let mut fresh_until = now.saturating_add(expires_in.saturating_sub(skew));
    if let Some(exp) = caller_exp {
        fresh_until = fresh_until.min(exp);
    }
    (expires_at, fresh_until)
}
