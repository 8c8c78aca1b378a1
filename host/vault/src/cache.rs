//! The token cache: a trait so the store can be shared later, and the bounded in-memory store.
//!
//! # A shared store (Redis) for several replicas
//!
//! [`VaultCache`] is async and object-safe so a networked store can implement it. Such an
//! implementation should:
//! - derive its storage key from [`CacheKey`]'s parts with a collision-free encoding (e.g. a
//!   SHA-256 over the length-prefixed issuer, tenant, subject, provider and scopes), so keys
//!   reveal no user identity to whoever can list the store;
//! - encrypt values at rest (the value is a bearer token) with a key held by the replicas,
//!   and set the store's own TTL to [`CachedToken::fresh_until`] so expiry holds even if a
//!   replica dies;
//! - treat store errors as misses (fail towards asking the IdP, never towards a stale token).
//!
//! Single-flight is per replica; a shared store may also offer a [`SharedLock`] (Redis:
//! `SET NX PX`), which the vault takes on a miss so that one replica of the fleet asks the IdP
//! while the others wait for its token, boundedly ([`crate::RedisCache`]).

use async_trait::async_trait;
use delegate_secret::Secret;
use std::collections::HashMap;
use std::sync::Mutex;

/// What a token is cached under: who (issuer, tenant, subject), for what (provider, scopes).
///
/// Scopes are sorted and de-duplicated, so `["b", "a"]` and `["a", "b", "a"]` share an entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    issuer: String,
    tenant: String,
    subject: String,
    provider: String,
    scopes: Vec<String>,
}

impl CacheKey {
    /// Builds a key; `scopes` are normalised (sorted, de-duplicated).
    pub fn new(issuer: &str, tenant: Option<&str>, subject: &str, provider: &str, scopes: &[String]) -> Self {
        let mut scopes = scopes.to_vec();
        scopes.sort_unstable();
        scopes.dedup();
        Self {
            issuer: issuer.to_owned(),
            tenant: tenant.unwrap_or("").to_owned(),
            subject: subject.to_owned(),
            provider: provider.to_owned(),
            scopes,
        }
    }

    /// The caller's issuer (empty for machine tokens).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The caller's tenant (empty when the token has none, and for machine tokens).
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The caller's subject (empty for machine tokens).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The provider name.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Sorted, de-duplicated scopes.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }
}

/// A cached token.
#[derive(Clone, Debug)]
pub struct CachedToken {
    /// The token.
    pub token: Secret,
    /// When the token itself expires (Unix seconds, as the IdP said).
    pub expires_at: u64,
    /// Until when it may be served from the cache (Unix seconds): `expires_at` minus the
    /// skew, and never past the caller's own token expiry.
    pub fresh_until: u64,
}

/// A token store. See the module docs for what a shared implementation must do.
#[async_trait]
pub trait VaultCache: Send + Sync + 'static {
    /// The entry for `key` if it is still fresh at `now` (Unix seconds).
    async fn get(&self, key: &CacheKey, now: u64) -> Option<CachedToken>;
    /// Stores (or replaces) the entry for `key`.
    async fn put(&self, key: CacheKey, token: CachedToken, now: u64);
    /// Removes the entry for `key` (the downstream said 401 to it).
    async fn evict(&self, key: &CacheKey);
    /// A cross-replica lock for one key's exchange, if the store has one (the in-memory
    /// store does not: the vault's per-replica single-flight is all it needs).
    fn shared_lock(&self) -> Option<&dyn SharedLock> {
        None
    }
}

/// Proof of holding a [`SharedLock`] for a key: a random value only the holder knows, so a
/// release never deletes a lock that expired and was taken by another replica meanwhile.
#[derive(Debug)]
pub struct HeldLock(pub(crate) String);

/// The answer to [`SharedLock::acquire`].
#[derive(Debug)]
pub enum LockAttempt {
    /// This replica exchanges; it must [`SharedLock::release`] afterwards.
    Acquired(HeldLock),
    /// Another replica is exchanging: [`SharedLock::wait`] for its token.
    Held,
    /// The store did not answer: exchange locally (fail safe: an extra IdP call).
    Unavailable,
}

/// A lock around one key's IdP exchange, shared by every replica using the store.
#[async_trait]
pub trait SharedLock: Send + Sync {
    /// Tries to take the lock for `key` (never blocks beyond the store's operation timeout).
    async fn acquire(&self, key: &CacheKey) -> LockAttempt;
    /// Releases a lock taken by [`SharedLock::acquire`] if it is still this replica's.
    async fn release(&self, key: &CacheKey, lock: HeldLock);
    /// Waits, boundedly, for the holder's token to appear under `key`; `None` if the bound
    /// passes, the holder gave up, or the store fails (the caller then exchanges itself).
    async fn wait(&self, key: &CacheKey, now: u64) -> Option<CachedToken>;
}

/// The in-memory store: a bounded map. When full, expired entries are dropped first, then the
/// entry closest to expiry (the least valuable one to keep).
#[derive(Debug)]
pub struct MemoryCache {
    capacity: usize,
    entries: Mutex<HashMap<CacheKey, CachedToken>>,
}

impl MemoryCache {
    /// A store holding at most `capacity` tokens (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), entries: Mutex::new(HashMap::new()) }
    }

    /// Number of entries (fresh or not yet purged).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, CachedToken>> {
        // A panic while holding the lock cannot leave the map half-updated (each operation is
        // one HashMap call), so a poisoned lock is still a consistent map.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl VaultCache for MemoryCache {
    async fn get(&self, key: &CacheKey, now: u64) -> Option<CachedToken> {
        self.lock().get(key).filter(|t| t.fresh_until > now).cloned()
    }

    async fn put(&self, key: CacheKey, token: CachedToken, now: u64) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, t| t.fresh_until > now);
            if entries.len() >= self.capacity {
                let victim = entries.iter().min_by_key(|(_, t)| t.fresh_until).map(|(k, _)| k.clone());
                if let Some(victim) = victim {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(key, token);
    }

    async fn evict(&self, key: &CacheKey) {
        self.lock().remove(key);
    }
}
