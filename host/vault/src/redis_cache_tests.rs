//! [`RedisCache`] against a real `redis-server` (the OS package, on a unix socket in a temp
//! directory) and against a listener that never answers (an outage that hangs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use delegate_secret::Secret;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const KEY: [u8; 32] = [3; 32];
const OLD_KEY: [u8; 32] = [4; 32];

struct Server {
    child: Child,
    dir: PathBuf,
}

/// A server process started in an existing directory (for a restart on the same socket).
struct Restarted(Child);

impl Server {
    fn start() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dlg-vault-redis-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let Restarted(child) = Self::start_in(&dir);
        let server = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.sync().and_then(|mut c| redis::cmd("PING").query::<String>(&mut c)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn start_in(dir: &std::path::Path) -> Restarted {
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(dir.join("s"))
            .args(["--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server: {e} (apt-get install -y redis-server)"));
        Restarted(child)
    }

    fn url(&self) -> String {
        format!("unix://{}", self.dir.join("s").display())
    }

    fn sync(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url().as_str())?.get_connection()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn settings(url: &str, key: [u8; 32], previous: Option<[u8; 32]>) -> RedisSettings {
    RedisSettings {
        url: url.to_owned(),
        username: None,
        password: None,
        key: zeroize::Zeroizing::new(key),
        previous_key: previous.map(zeroize::Zeroizing::new),
        timeout: Duration::from_millis(100),
        lock_ttl: Duration::from_millis(2_000),
        lock_wait: Duration::from_millis(400),
        local_capacity: 100,
        ca_pem: None,
    }
}

fn key(subject: &str) -> CacheKey {
    CacheKey::new("https://issuer", Some("tenant"), subject, "sn", &["api://sn/.default".into()])
}

fn token(value: &str, fresh_until: u64) -> CachedToken {
    CachedToken { token: Secret::new(value), expires_at: fresh_until + 60, fresh_until }
}

#[tokio::test]
async fn put_get_evict_round_trip_with_the_token_lifetime_as_ttl() {
    let server = Server::start();
    let cache = RedisCache::new(&settings(&server.url(), KEY, None), None).unwrap();
    assert!(cache.get(&key("jane"), 1_000).await.is_none());
    cache.put(key("jane"), token("token-b", 1_300), 1_000).await;
    let hit = cache.get(&key("jane"), 1_000).await.unwrap();
    assert_eq!(hit.token.expose(), "token-b");
    assert_eq!((hit.expires_at, hit.fresh_until), (1_360, 1_300));
    // Not served past fresh_until even if Redis still has it.
    assert!(cache.get(&key("jane"), 1_300).await.is_none());
    assert!(cache.get(&key("ravi"), 1_000).await.is_none());
    let mut c = server.sync().unwrap();
    let name = token_key(&Sealer::new(&KEY, None).name(&key("jane")));
    let ttl: i64 = redis::cmd("PTTL").arg(&name).query(&mut c).unwrap();
    assert!((290_000..=300_000).contains(&ttl), "PX from fresh_until - now: {ttl}");
    cache.evict(&key("jane")).await;
    assert!(cache.get(&key("jane"), 1_000).await.is_none());
    // Expired on arrival: not written at all.
    cache.put(key("old"), token("t", 999), 1_000).await;
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 0);
    assert_eq!(
        cache.stats(),
        SharedCacheStats { hits: 1, misses: 4, ..SharedCacheStats::default() },
        "{:?}",
        cache.stats()
    );
}

#[tokio::test]
async fn the_lock_admits_one_holder_and_only_the_holder_releases_it() {
    let server = Server::start();
    let a = RedisCache::new(&settings(&server.url(), KEY, None), None).unwrap();
    let b = RedisCache::new(&settings(&server.url(), KEY, None), None).unwrap();
    let k = key("jane");
    let LockAttempt::Acquired(held) = a.acquire(&k).await else { panic!("first acquire") };
    assert!(matches!(b.acquire(&k).await, LockAttempt::Held));
    // A release with another value (a lock that expired and was re-taken) leaves it alone.
    b.release(&k, HeldLock("not-the-holder".into())).await;
    assert!(matches!(b.acquire(&k).await, LockAttempt::Held));
    a.release(&k, held).await;
    let LockAttempt::Acquired(again) = b.acquire(&k).await else { panic!("free after release") };
    b.release(&k, again).await;
    assert_eq!(a.stats().locks_won + b.stats().locks_won, 2);
}

#[tokio::test]
async fn a_waiter_gets_the_holders_token_or_gives_up_boundedly() {
    let server = Server::start();
    let holder = Arc::new(RedisCache::new(&settings(&server.url(), KEY, None), None).unwrap());
    let waiter = RedisCache::new(&settings(&server.url(), KEY, None), None).unwrap();
    let k = key("jane");

    // The holder shares its token, then releases: the waiter gets it.
    let LockAttempt::Acquired(held) = holder.acquire(&k).await else { panic!() };
    let h = Arc::clone(&holder);
    let k2 = k.clone();
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        h.put(k2.clone(), token("shared", 2_000), 1_000).await;
        h.release(&k2, held).await;
    });
    assert_eq!(waiter.wait(&k, 1_000).await.unwrap().token.expose(), "shared");
    task.await.unwrap();
    assert_eq!(waiter.stats().fallback_exchanges, 0);

    // The holder never shares: the wait ends at lock_wait_ms, counted.
    let other = key("ravi");
    let LockAttempt::Acquired(_kept) = holder.acquire(&other).await else { panic!() };
    let started = Instant::now();
    assert!(waiter.wait(&other, 1_000).await.is_none());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400) && waited < Duration::from_secs(3), "{waited:?}");
    assert_eq!(waiter.stats().locks_timed_out, 1);
    assert_eq!(waiter.stats().fallback_exchanges, 1);

    // The holder gives up (releases without a token): the waiter stops waiting at once.
    let third = key("maria");
    let LockAttempt::Acquired(held) = holder.acquire(&third).await else { panic!() };
    holder.release(&third, held).await;
    let started = Instant::now();
    assert!(waiter.wait(&third, 1_000).await.is_none());
    assert!(started.elapsed() < Duration::from_millis(400), "did not wait for the bound");
    assert_eq!(waiter.stats().locks_timed_out, 1);
    assert_eq!(waiter.stats().fallback_exchanges, 2);
}

#[tokio::test]
async fn rotation_reads_entries_of_the_previous_key_and_a_wrong_key_reads_nothing() {
    let server = Server::start();
    let old = RedisCache::new(&settings(&server.url(), OLD_KEY, None), None).unwrap();
    old.put(key("jane"), token("sealed-by-old", 2_000), 1_000).await;
    let rotated = RedisCache::new(&settings(&server.url(), KEY, Some(OLD_KEY)), None).unwrap();
    assert_eq!(rotated.get(&key("jane"), 1_000).await.unwrap().token.expose(), "sealed-by-old");
    // Another deployment's key finds no entry (names are keyed) and so opens nothing.
    let stranger = RedisCache::new(&settings(&server.url(), [9; 32], None), None).unwrap();
    assert!(stranger.get(&key("jane"), 1_000).await.is_none());
    // A value moved under another user's name does not open: a counted miss.
    let mut c = server.sync().unwrap();
    let sealer = Sealer::new(&OLD_KEY, None);
    let jane: Vec<u8> = redis::cmd("GET").arg(token_key(&sealer.name(&key("jane")))).query(&mut c).unwrap();
    let () = redis::cmd("SET").arg(token_key(&sealer.name(&key("ravi")))).arg(jane).query(&mut c).unwrap();
    assert!(old.get(&key("ravi"), 1_000).await.is_none());
    assert_eq!(old.stats().undecryptable, 1);
}

/// Redis that accepts connections and never answers: the first operation ends at
/// `timeout_ms`, the next ones are not attempted for a while; each reads as a miss or an
/// unavailable lock, so an outage costs bounded latency, not errors.
#[tokio::test]
async fn a_hanging_redis_costs_one_timeout_then_is_skipped() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let cache = RedisCache::new(&settings(&format!("redis://{addr}"), KEY, None), None).unwrap();
    let started = Instant::now();
    assert!(cache.get(&key("jane"), 1_000).await.is_none());
    let first = started.elapsed();
    assert!(first >= Duration::from_millis(100), "the first operation waits for its timeout: {first:?}");
    assert!(first < Duration::from_millis(1_000), "{first:?}");
    // Then Redis is not asked again for a while: the next operations cannot have waited for
    // a hanging server (that takes at least the 100 ms timeout).
    let started = Instant::now();
    assert!(matches!(cache.acquire(&key("jane")).await, LockAttempt::Unavailable));
    cache.put(key("jane"), token("t", 2_000), 1_000).await;
    assert!(cache.wait(&key("jane"), 1_000).await.is_none());
    let next = started.elapsed();
    assert!(next < Duration::from_millis(100), "skipped while down: {next:?}");
    let stats = cache.stats();
    assert_eq!(stats.errors, 4, "{stats:?}");
    assert_eq!(stats.fallback_exchanges, 2, "{stats:?}");
    assert_eq!(stats.hits, 0);
    hold.abort();
}

/// Nothing listening at all (connection refused): the same, faster.
#[tokio::test]
async fn a_missing_redis_is_a_miss() {
    let dir = std::env::temp_dir().join(format!("dlg-vault-none-{}", std::process::id()));
    let url = format!("unix://{}", dir.join("absent.sock").display());
    let cache = RedisCache::new(&settings(&url, KEY, None), None).unwrap();
    assert!(cache.get(&key("jane"), 1_000).await.is_none());
    assert!(matches!(cache.acquire(&key("jane")).await, LockAttempt::Unavailable));
    assert!(cache.wait(&key("jane"), 1_000).await.is_none());
    assert!(cache.stats().errors >= 3);
}

mod config {
    use crate::config::VaultConfig;
    use base64::Engine;

    fn secret_file(name: &str, contents: &str) -> String {
        let dir = std::env::temp_dir().join(format!("dlg-vault-redis-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn validate(cache: &str) -> Result<crate::VaultSettings, crate::InvalidSetting> {
        let toml = format!("[cache]\n{cache}");
        toml::from_str::<VaultConfig>(&toml).unwrap().validate()
    }

    fn redis(url: &str, extra: &str) -> String {
        let key = secret_file("key", &format!("{}\n", b64(&[5; 32])));
        format!("backend = \"redis\"\n[cache.redis]\nurl = {url:?}\nkey = {{ file = {key:?} }}\n{extra}")
    }

    fn refused(cache: &str) -> crate::InvalidSetting {
        validate(cache).map(|_| ()).unwrap_err()
    }

    #[test]
    fn valid_targets_and_defaults() {
        for url in [
            "redis://127.0.0.1:6379/0",
            "redis://localhost",
            "rediss://redis.internal:6380",
            "unix:///run/redis.sock",
        ] {
            let s = validate(&redis(url, "")).unwrap();
            let r = s.redis().unwrap();
            assert_eq!(r.url(), url);
            assert_eq!(
                (r.timeout.as_millis(), r.lock_ttl.as_millis(), r.lock_wait.as_millis()),
                (150, 5_000, 2_000)
            );
        }
        assert!(validate("").unwrap().redis().is_none(), "memory by default");
        let plain = redis("redis://10.0.0.5:6379", "allow_plaintext = true\n");
        assert!(validate(&plain).is_ok(), "an explicit opt-in");
    }

    #[test]
    fn bad_targets_are_refused_with_the_key_named() {
        let cases = [
            ("redis://10.0.0.5:6379", "cache.redis.url", "loopback"),
            ("redis://user:hunter2@127.0.0.1", "cache.redis.url", "credentials"),
            ("redis://:hunter2@127.0.0.1", "cache.redis.url", "credentials"),
            ("rediss://host#insecure", "cache.redis.url", "fragment"),
            ("http://127.0.0.1", "cache.redis.url", "redis://"),
            ("unix://", "cache.redis.url", "path"),
            ("not a url", "cache.redis.url", "URL"),
        ];
        for (url, key, why) in cases {
            let e = refused(&redis(url, ""));
            assert_eq!(e.key, key, "{url}");
            assert!(e.message.contains(why), "{url}: {}", e.message);
            assert!(!e.to_string().contains("hunter2"), "the error repeats a password: {e}");
        }
        assert_eq!(refused("backend = \"redis\"\n").key, "cache.redis");
        assert_eq!(
            refused("[cache.redis]\nurl = \"redis://127.0.0.1\"\nkey = { env = \"X\" }\n").key,
            "cache.redis"
        );
    }

    #[test]
    fn keys_and_timings_are_checked() {
        let short = secret_file("short", &b64(&[1; 16]));
        let e = refused(&format!(
            "backend = \"redis\"\n[cache.redis]\nurl = \"redis://127.0.0.1\"\nkey = {{ file = {short:?} }}\n"
        ));
        assert_eq!(e.key, "cache.redis.key");
        assert!(e.message.contains("16 bytes"), "{}", e.message);
        let same = secret_file("same", &b64(&[5; 32]));
        let e = refused(&redis("redis://127.0.0.1", &format!("previous_key = {{ file = {same:?} }}\n")));
        assert_eq!(e.key, "cache.redis.previous_key");
        let e =
            refused(&redis("redis://127.0.0.1", "password = { env = \"DELEGATE_TEST_UNSET_REDIS_PW\" }\n"));
        assert_eq!(e.key, "cache.redis.password.env");
        for (k, v) in
            [("timeout_ms", "0"), ("timeout_ms", "6000"), ("lock_ttl_ms", "0"), ("lock_wait_ms", "0")]
        {
            assert_eq!(
                refused(&redis("redis://127.0.0.1", &format!("{k} = {v}\n"))).key,
                format!("cache.redis.{k}")
            );
        }
    }

    #[test]
    fn ca_file_is_for_tls_and_must_hold_a_certificate() {
        let not_pem = secret_file("not-a-cert.pem", "hello\n");
        let e = refused(&redis("rediss://redis.internal", &format!("ca_file = {not_pem:?}\n")));
        assert_eq!(e.key, "cache.redis.ca_file");
        assert!(e.message.contains("no PEM certificate"), "{}", e.message);
        let e = refused(&redis("rediss://redis.internal", "ca_file = \"/nonexistent/ca.pem\"\n"));
        assert!(e.message.contains("cannot read"), "{}", e.message);
        let e = refused(&redis("redis://127.0.0.1", &format!("ca_file = {not_pem:?}\n")));
        assert!(e.message.contains("rediss://"), "{}", e.message);
        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem();
        let ca = secret_file("ca.pem", &ca);
        let s = validate(&redis("rediss://redis.internal", &format!("ca_file = {ca:?}\n"))).unwrap();
        assert!(s.redis().unwrap().ca_pem.is_some());
    }

    #[test]
    fn settings_debug_holds_no_secret() {
        let pw = secret_file("pw", "redis-password-value\n");
        let s = validate(&redis(
            "redis://127.0.0.1",
            &format!("username = \"delegate\"\npassword = {{ file = {pw:?} }}\n"),
        ))
        .unwrap();
        let r = s.redis().unwrap();
        assert_eq!(r.password.as_ref().unwrap().expose(), "redis-password-value");
        let debug = format!("{s:?}");
        assert!(!debug.contains("redis-password-value"), "{debug}");
        assert!(!debug.contains(&b64(&[5; 32])) && !debug.contains("[5, 5"), "{debug}");
    }
}

/// After an outage the same cache (its connection manager) reconnects by itself: a Redis
/// restart needs no replica restart.
#[tokio::test]
async fn the_cache_reconnects_after_redis_restarts() {
    let mut server = Server::start();
    let cache = RedisCache::new(&settings(&server.url(), KEY, None), None).unwrap();
    cache.put(key("jane"), token("before", 2_000), 1_000).await;
    assert!(cache.get(&key("jane"), 1_000).await.is_some());
    let _ = server.child.kill();
    let _ = server.child.wait();
    // Down: the replica's own copy serves what it had (fresh), and nothing else.
    assert_eq!(cache.get(&key("jane"), 1_000).await.unwrap().token.expose(), "before");
    assert!(cache.get(&key("jane"), 2_000).await.is_none(), "not past fresh_until");
    assert!(cache.get(&key("ravi"), 1_000).await.is_none());
    assert_eq!(cache.stats().local_hits, 1);
    assert!(cache.stats().errors >= 1);
    // The same socket path, a fresh (empty) server.
    let _ = std::fs::remove_file(server.dir.join("s"));
    let Restarted(child) = Server::start_in(&server.dir);
    server.child = child;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        cache.put(key("jane"), token("after", 2_000), 1_000).await;
        let stored: i64 = server.sync().and_then(|mut c| redis::cmd("DBSIZE").query(&mut c)).unwrap_or(0);
        if stored == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no reconnect within 10 s: {:?}", cache.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hits = cache.stats().hits;
    assert_eq!(cache.get(&key("jane"), 1_000).await.unwrap().token.expose(), "after");
    assert_eq!(cache.stats().hits, hits + 1, "served by Redis again");
}

/// An ACL user limited to what the vault needs (its own key prefix; GET, SET, DEL, EXISTS,
/// EVAL and the connection commands), with its password from a reference: the vault works;
/// with a wrong password every operation is a miss, and the error names no password.
#[tokio::test]
async fn a_least_privilege_acl_user_with_a_password_suffices() {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "dlg-vault-redis-acl-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new("redis-server")
        .args(["--port", "0", "--unixsocket"])
        .arg(dir.join("s"))
        .args(["--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir"])
        .arg(&dir)
        .args(["--user", "default", "off"])
        .args(["--user", "delegate", "on", ">acl-password-value", "~delegate:v1:*", "resetchannels"])
        .args(["+@connection", "+get", "+set", "+del", "+exists", "+eval"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("redis-server: {e}"));
    let server = Server { child, dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.dir.join("s").exists() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let with = |password: &str| {
        let mut s = settings(&server.url(), KEY, None);
        s.username = Some("delegate".into());
        s.password = Some(Secret::new(password));
        RedisCache::new(&s, None).unwrap()
    };
    let cache = with("acl-password-value");
    // The server may still be loading: retry boundedly until Redis itself serves the token.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        cache.put(key("jane"), token("acl", 2_000), 1_000).await;
        let before = cache.stats().hits;
        let got = cache.get(&key("jane"), 1_000).await;
        if cache.stats().hits > before {
            assert_eq!(got.unwrap().token.expose(), "acl");
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", cache.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let errors = cache.stats().errors;
    let LockAttempt::Acquired(held) = cache.acquire(&key("jane")).await else {
        panic!("{:?}", cache.stats())
    };
    cache.release(&key("jane"), held).await;
    cache.evict(&key("jane")).await;
    assert!(cache.get(&key("jane"), 1_000).await.is_none());
    assert_eq!(cache.stats().errors, errors, "the ACL allows every operation: {:?}", cache.stats());

    let wrong = with("not-the-password");
    assert!(wrong.get(&key("jane"), 1_000).await.is_none());
    assert!(matches!(wrong.acquire(&key("jane")).await, LockAttempt::Unavailable));
    assert!(wrong.stats().errors >= 1);
    assert!(!format!("{wrong:?}").contains("not-the-password"));
}

/// `rediss://` to a `redis-server` whose certificate a private CA signed, trusted through
/// `ca_file`; without it (platform roots only) the handshake fails and every operation is a
/// miss — never a plaintext fallback.
#[tokio::test]
async fn rediss_with_a_private_ca_from_ca_file() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "dlg-vault-redis-tls-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf =
        CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("server.key"), leaf_key.serialize_pem()).unwrap();
    // redis-server takes a TLS port number, not 0: a free one, taken just before (a small race,
    // acceptable for a test on loopback).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("redis-server")
        .args(["--port", "0", "--bind", "127.0.0.1", "--tls-port", &port.to_string()])
        .arg("--tls-cert-file")
        .arg(dir.join("server.pem"))
        .arg("--tls-key-file")
        .arg(dir.join("server.key"))
        .arg("--tls-ca-cert-file")
        .arg(dir.join("ca.pem"))
        .args(["--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("redis-server: {e}"));
    let _server = Server { child, dir: dir.clone() };
    let url = format!("rediss://localhost:{port}");
    let mut trusted = settings(&url, KEY, None);
    trusted.ca_pem = Some(std::fs::read(dir.join("ca.pem")).unwrap());
    let cache = RedisCache::new(&trusted, None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        cache.put(key("jane"), token("over-tls", 2_000), 1_000).await;
        let before = cache.stats().hits;
        let got = cache.get(&key("jane"), 1_000).await;
        if cache.stats().hits > before {
            assert_eq!(got.unwrap().token.expose(), "over-tls");
            break;
        }
        assert!(Instant::now() < deadline, "no TLS connection within 10 s: {:?}", cache.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let untrusted = RedisCache::new(&settings(&url, KEY, None), None).unwrap();
    assert!(untrusted.get(&key("jane"), 1_000).await.is_none());
    assert!(untrusted.stats().errors >= 1 && untrusted.stats().hits == 0);
}

/// A request cancelled while it holds the exchange lock (the IdP hangs, the client goes
/// away) releases the lock at once, so the next request asks the IdP itself instead of
/// waiting out `lock_wait_ms` for an exchange nobody is making.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_exchange_releases_its_lock() {
    use delegate_auth::VerifiedCallerBuilder;
    let server = Server::start();
    let calls = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&calls);
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move || {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    std::future::pending::<()>().await;
                }
                axum::Json(
                    serde_json::json!({"token_type":"Bearer","expires_in":3600,"access_token":"token-b"}),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let secret = server.dir.join("client-secret");
    std::fs::write(&secret, "secret").unwrap();
    let config: crate::VaultConfig = toml::from_str(&format!(
        "[providers.sn]\nkind = \"entra_obo\"\ntoken_endpoint = \"{url}\"\nclient_id = \"c\"\nclient_secret = {{ file = {:?} }}",
        secret.display().to_string()
    ))
    .unwrap();
    let mut redis = settings(&server.url(), KEY, None);
    // Longer than the 4 s this test allows: only a release, not expiry, lets the next one in.
    redis.lock_wait = Duration::from_secs(5);
    redis.lock_ttl = Duration::from_secs(10);
    let cache = Arc::new(RedisCache::new(&redis, None).unwrap());
    let client = delegate_outbound::build_client(&delegate_outbound::OutboundConfig::default()).unwrap();
    let vault = crate::TokenVault::with_cache(config.validate().unwrap(), client, cache.clone());
    let caller = VerifiedCallerBuilder::new("jane").scopes(&["access_as_user"]).token("token-a").build();
    let scopes = vec!["api://sn/.default".to_owned()];

    // The first request takes the lock and hangs at the IdP; it is cancelled.
    let first =
        tokio::time::timeout(Duration::from_millis(300), vault.token_for(&caller, "sn", &scopes)).await;
    assert!(first.is_err(), "the IdP hangs");
    assert_eq!(cache.stats().locks_won, 1);
    // The next request must not wait the 5 s bound for the abandoned lock.
    let started = Instant::now();
    let t = tokio::time::timeout(Duration::from_secs(4), vault.token_for(&caller, "sn", &scopes))
        .await
        .expect("waited for an abandoned lock")
        .unwrap();
    assert_eq!(t.token.expose(), "token-b");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
