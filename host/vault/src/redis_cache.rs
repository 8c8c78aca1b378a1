//! [`RedisCache`]: the token cache shared by several replicas, in Redis.
//!
//! What Redis holds, per cached token (see [`crate::seal`]):
//! - `delegate:v1:token:<hmac>` → the sealed token, with `PX` set to the time left until the
//!   token's `fresh_until`, so Redis drops it when no replica may serve it any more (also when
//!   every replica is gone);
//! - `delegate:v1:lock:<hmac>` → a random value, `NX PX lock_ttl`, while one replica exchanges
//!   for that key.
//!
//! Failure is always a miss, never an error to the caller: every operation has a time limit
//! (`timeout_ms`), and a failed or timed-out operation, or a value that does not open, makes
//! the vault ask the IdP itself. After a failure, operations are skipped for one second
//! (then one probes), so a Redis that hangs costs one `timeout_ms` now and then, not one per
//! operation. A Redis outage therefore costs extra IdP calls and little latency, never a
//! failed request, a stale token or a token in clear.

use crate::cache::{CacheKey, CachedToken, HeldLock, LockAttempt, MemoryCache, SharedLock, VaultCache};
use crate::config::{InvalidSetting, RedisSettings};
use crate::seal::Sealer;
use async_trait::async_trait;
use delegate_metrics::{Metrics, SharedCacheEvent};
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const TOKEN_PREFIX: &str = "delegate:v1:token:";
const LOCK_PREFIX: &str = "delegate:v1:lock:";

/// Deletes the lock only if it still holds this replica's value (it may have expired and been
/// taken by another replica meanwhile).
const RELEASE_SCRIPT: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// First and largest pause between polls while another replica exchanges.
const POLL_FIRST: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(100);

/// After a failed operation, how long operations go straight to the fallback before one
/// probes Redis again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Counts of [`SharedCacheEvent`]s since start (also exported to Prometheus when a
/// [`Metrics`] is attached): for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SharedCacheStats {
    /// Fresh tokens found.
    pub hits: u64,
    /// Lookups that found nothing fresh.
    pub misses: u64,
    /// Failed or timed-out Redis operations.
    pub errors: u64,
    /// Stored values that did not open.
    pub undecryptable: u64,
    /// Exchange locks taken by this replica.
    pub locks_won: u64,
    /// Waits for another replica's exchange.
    pub locks_waited: u64,
    /// Waits that passed their bound.
    pub locks_timed_out: u64,
    /// Exchanges made without the lock (Redis down, wait bound passed, holder gave up).
    pub fallback_exchanges: u64,
    /// Tokens served from the replica's in-memory copy while Redis was unavailable.
    pub local_hits: u64,
}

#[derive(Default)]
struct Counters([AtomicU64; 9]);

fn slot(event: SharedCacheEvent) -> usize {
    match event {
        SharedCacheEvent::Hit => 0,
        SharedCacheEvent::Miss => 1,
        SharedCacheEvent::Error => 2,
        SharedCacheEvent::Undecryptable => 3,
        SharedCacheEvent::LockWon => 4,
        SharedCacheEvent::LockWaited => 5,
        SharedCacheEvent::LockTimedOut => 6,
        SharedCacheEvent::FallbackExchange => 7,
        SharedCacheEvent::LocalHit => 8,
    }
}

/// The shared token cache. Cheap to share; one multiplexed connection, re-established in the
/// background after a failure.
pub struct RedisCache {
    conn: ConnectionManager,
    sealer: Sealer,
    timeout: Duration,
    lock_ttl: Duration,
    lock_wait: Duration,
    counters: Counters,
    metrics: Option<Arc<Metrics>>,
    /// The tokens this replica obtained or read, served only while Redis is unavailable, so
    /// an outage makes each replica a standalone one (one exchange per key per replica), not
    /// one exchange per request.
    local: MemoryCache,
    /// 0 while Redis answers; after a failure, the time (ms since `epoch`, plus one) until
    /// which operations are not attempted: a Redis that hangs costs one `timeout` per
    /// [`RETRY_AFTER`], not one per operation. When it passes, one operation probes.
    down_until: AtomicU64,
    epoch: std::time::Instant,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

/// A Redis operation that failed, timed out, or answered something unexpected (never logged
/// with a value: the variants carry no data).
enum OpError {
    Timeout,
    Redis(redis::ErrorKind),
    /// Not attempted: Redis failed less than [`RETRY_AFTER`] ago.
    Skipped,
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("timeout"),
            Self::Redis(kind) => write!(f, "{kind:?}"),
            Self::Skipped => f.write_str("skipped while unavailable"),
        }
    }
}

impl RedisCache {
    /// Connects lazily to the store in `settings` (the first operation dials; a store that is
    /// down at start is a miss like any other, not a start failure). Counts events in
    /// `metrics` too, if given. Must be called inside a Tokio runtime.
    pub fn new(settings: &RedisSettings, metrics: Option<Arc<Metrics>>) -> Result<Self, InvalidSetting> {
        let bad = |e: redis::RedisError| InvalidSetting {
            key: "cache.redis.url".into(),
            // The URL holds no credentials (validated), and the error kind names no value.
            message: format!("not usable by the Redis client ({:?})", e.kind()),
        };
        let info = redis::IntoConnectionInfo::into_connection_info(settings.url.as_str()).map_err(bad)?;
        let mut redis_settings = info.redis_settings().clone();
        if let Some(user) = &settings.username {
            redis_settings = redis_settings.set_username(user);
        }
        if let Some(password) = &settings.password {
            // The client keeps its own copy for reconnects (a plain string inside the crate).
            redis_settings = redis_settings.set_password(password.expose());
        }
        let info = info.set_redis_settings(redis_settings);
        let client = match &settings.ca_pem {
            None => redis::Client::open(info),
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) },
            ),
        }
        .map_err(bad)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(bad)?;
        Ok(Self {
            conn,
            sealer: Sealer::new(&settings.key, settings.previous_key.as_deref()),
            timeout: settings.timeout,
            lock_ttl: settings.lock_ttl,
            lock_wait: settings.lock_wait,
            counters: Counters::default(),
            metrics,
            local: MemoryCache::new(settings.local_capacity),
            down_until: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        })
    }

    /// Event counts since start.
    pub fn stats(&self) -> SharedCacheStats {
        let c = |e| self.counters.0[slot(e)].load(Ordering::Relaxed);
        SharedCacheStats {
            hits: c(SharedCacheEvent::Hit),
            misses: c(SharedCacheEvent::Miss),
            errors: c(SharedCacheEvent::Error),
            undecryptable: c(SharedCacheEvent::Undecryptable),
            locks_won: c(SharedCacheEvent::LockWon),
            locks_waited: c(SharedCacheEvent::LockWaited),
            locks_timed_out: c(SharedCacheEvent::LockTimedOut),
            fallback_exchanges: c(SharedCacheEvent::FallbackExchange),
            local_hits: c(SharedCacheEvent::LocalHit),
        }
    }

    fn count(&self, event: SharedCacheEvent) {
        self.counters.0[slot(event)].fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.record_shared_cache(event);
        }
    }

    /// Runs one command (or pipeline) under the operation time limit; failures are counted
    /// and logged by kind only.
    async fn run<T: redis::FromRedisValue>(&self, what: &'static str, op: Op<'_>) -> Result<T, OpError> {
        let now = millis(self.epoch.elapsed()) + 1;
        let until = self.down_until.load(Ordering::Relaxed);
        // Within the retry window, or another operation just took the probe: skip.
        if until != 0
            && (now < until
                || self
                    .down_until
                    .compare_exchange(until, now + millis(RETRY_AFTER), Ordering::Relaxed, Ordering::Relaxed)
                    .is_err())
        {
            self.count(SharedCacheEvent::Error);
            return Err(OpError::Skipped);
        }
        let mut conn = self.conn.clone();
        let fut = async move {
            match op {
                Op::Cmd(cmd) => cmd.query_async::<T>(&mut conn).await,
                Op::Pipe(pipe) => pipe.query_async::<T>(&mut conn).await,
            }
        };
        let result = match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => Err(OpError::Timeout),
            Ok(Err(e)) => Err(OpError::Redis(e.kind())),
            Ok(Ok(v)) => Ok(v),
        };
        match &result {
            Err(e) => {
                self.count(SharedCacheEvent::Error);
                let now = millis(self.epoch.elapsed()) + 1;
                if self.down_until.swap(now + millis(RETRY_AFTER), Ordering::Relaxed) != 0 {
                    tracing::debug!(target: "delegate::vault", operation = what, error = %e, "shared token cache still unavailable");
                } else {
                    tracing::warn!(target: "delegate::vault", operation = what, error = %e, "shared token cache unavailable; lookups are misses and exchanges local until it answers again");
                }
            }
            Ok(_) => {
                if self.down_until.swap(0, Ordering::Relaxed) != 0 {
                    tracing::info!(target: "delegate::vault", "shared token cache answers again");
                }
            }
        }
        result
    }

    /// Opens a stored value, counting one that does not open (a miss for the caller).
    fn open(&self, name: &str, bytes: &[u8], previous: bool, now: u64) -> Option<CachedToken> {
        let opened =
            if previous { self.sealer.open_previous(name, bytes) } else { self.sealer.open(name, bytes) };
        match opened {
            Ok(t) if t.fresh_until > now => Some(t),
            Ok(_) => None,
            Err(e) => {
                self.count(SharedCacheEvent::Undecryptable);
                tracing::warn!(target: "delegate::vault", error = %e, "a shared cache entry did not open; treating as a miss");
                None
            }
        }
    }

    async fn get_named(&self, name: &str, previous: bool, now: u64) -> Result<Option<CachedToken>, OpError> {
        let bytes: Option<Vec<u8>> = self.run("get", Op::Cmd(redis::cmd("GET").arg(token_key(name)))).await?;
        Ok(bytes.and_then(|b| self.open(name, &b, previous, now)))
    }
}

/// What [`RedisCache::run`] sends.
enum Op<'a> {
    Cmd(&'a mut redis::Cmd),
    Pipe(&'a mut redis::Pipeline),
}

fn token_key(name: &str) -> String {
    format!("{TOKEN_PREFIX}{name}")
}

fn lock_key(name: &str) -> String {
    format!("{LOCK_PREFIX}{name}")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl VaultCache for RedisCache {
    async fn get(&self, key: &CacheKey, now: u64) -> Option<CachedToken> {
        let name = self.sealer.name(key);
        let mut found = self.get_named(&name, false, now).await;
        if matches!(found, Ok(None)) {
            // During a key rotation, entries sealed by replicas still on the old key.
            if let Some(old) = self.sealer.previous_name(key) {
                found = self.get_named(&old, true, now).await;
            }
        }
        match found {
            Ok(Some(token)) => {
                self.count(SharedCacheEvent::Hit);
                self.local.put(key.clone(), token.clone(), now).await;
                Some(token)
            }
            Ok(None) => {
                self.count(SharedCacheEvent::Miss);
                None
            }
            // Redis is unavailable: what this replica has seen, under the same freshness rule.
            Err(_) => {
                let token = self.local.get(key, now).await;
                if token.is_some() {
                    self.count(SharedCacheEvent::LocalHit);
                }
                token
            }
        }
    }

    async fn put(&self, key: CacheKey, token: CachedToken, now: u64) {
        let ttl_ms = token.fresh_until.saturating_sub(now).saturating_mul(1000);
        if ttl_ms == 0 {
            return;
        }
        self.local.put(key.clone(), token.clone(), now).await;
        let name = self.sealer.name(&key);
        let Some(sealed) = self.sealer.seal(&name, &token) else {
            tracing::warn!(target: "delegate::vault", "no randomness for a nonce; token not shared");
            return;
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(token_key(&name)).arg(sealed).arg("PX").arg(ttl_ms);
        let _: Result<(), _> = self.run("set", Op::Cmd(&mut cmd)).await;
    }

    async fn evict(&self, key: &CacheKey) {
        self.local.evict(key).await;
        let mut cmd = redis::cmd("DEL");
        cmd.arg(token_key(&self.sealer.name(key)));
        if let Some(old) = self.sealer.previous_name(key) {
            cmd.arg(token_key(&old));
        }
        let _: Result<(), _> = self.run("del", Op::Cmd(&mut cmd)).await;
    }

    fn shared_lock(&self) -> Option<&dyn SharedLock> {
        Some(self)
    }
}

#[async_trait]
impl SharedLock for RedisCache {
    async fn acquire(&self, key: &CacheKey) -> LockAttempt {
        let value = uuid::Uuid::new_v4().simple().to_string();
        let mut cmd = redis::cmd("SET");
        cmd.arg(lock_key(&self.sealer.name(key))).arg(&value).arg("NX").arg("PX").arg(millis(self.lock_ttl));
        match self.run::<Option<String>>("lock", Op::Cmd(&mut cmd)).await {
            Ok(Some(_)) => {
                self.count(SharedCacheEvent::LockWon);
                LockAttempt::Acquired(HeldLock(value))
            }
            Ok(None) => LockAttempt::Held,
            Err(_) => {
                self.count(SharedCacheEvent::FallbackExchange);
                LockAttempt::Unavailable
            }
        }
    }

    async fn release(&self, key: &CacheKey, lock: HeldLock) {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RELEASE_SCRIPT).arg(1).arg(lock_key(&self.sealer.name(key))).arg(lock.0);
        // If this fails the lock expires by itself after `lock_ttl`.
        let _: Result<i64, _> = self.run("unlock", Op::Cmd(&mut cmd)).await;
    }

    async fn wait(&self, key: &CacheKey, now: u64) -> Option<CachedToken> {
        self.count(SharedCacheEvent::LockWaited);
        let name = self.sealer.name(key);
        let deadline = tokio::time::Instant::now() + self.lock_wait;
        let mut pause = POLL_FIRST;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                self.count(SharedCacheEvent::LockTimedOut);
                break;
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(POLL_MAX);
            // EXISTS before GET: the holder writes the token before it deletes the lock, so a
            // lock seen gone means a GET after it sees the token, if there is one.
            let mut pipe = redis::pipe();
            pipe.cmd("EXISTS").arg(lock_key(&name)).cmd("GET").arg(token_key(&name));
            let Ok((locked, value)) = self.run::<(bool, Option<Vec<u8>>)>("poll", Op::Pipe(&mut pipe)).await
            else {
                break;
            };
            if let Some(bytes) = value {
                if let Some(token) = self.open(&name, &bytes, false, now) {
                    self.count(SharedCacheEvent::Hit);
                    self.local.put(key.clone(), token.clone(), now).await;
                    return Some(token);
                }
                break;
            }
            if !locked {
                // The holder finished without sharing a token (its exchange failed, or it was
                // cancelled and the lock expired): exchange here.
                break;
            }
        }
        self.count(SharedCacheEvent::FallbackExchange);
        None
    }
}

#[cfg(test)]
#[path = "redis_cache_tests.rs"]
mod tests;
