//! Cache-hit cost of `TokenVault::token_for` over the shared Redis cache
//! (`cargo bench -p delegate-vault --bench redis_hit`): one `GET` on a unix socket to a local
//! `redis-server` (the OS package, started here) plus opening the AES-256-GCM value, against
//! the in-memory hit of `cache_hit`. Also the sealing primitives alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::panic, missing_docs)]

use base64::Engine as _;
use delegate_auth::VerifiedCallerBuilder;
use delegate_vault::{CacheKey, CacheStatus, CachedToken, RedisCache, TokenVault, VaultConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ITERATIONS: usize = 20_000;

fn report(name: &str, mut samples: Vec<u128>) {
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "{name}, {} calls: p50 {} ns, p99 {} ns, max {} ns",
        samples.len(),
        pct(0.50),
        pct(0.99),
        samples[samples.len() - 1]
    );
}

fn main() {
    let dir = std::env::temp_dir().join(format!("vault-bench-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("s");
    let mut server = std::process::Command::new("redis-server")
        .args(["--port", "0", "--unixsocket"])
        .arg(&socket)
        .args(["--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("redis-server: {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(|| async {
                axum::Json(serde_json::json!({"token_type":"Bearer","expires_in":3600,"access_token":"token-b-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let secret = dir.join("secret");
        std::fs::write(&secret, "bench-secret").unwrap();
        let key = dir.join("key");
        std::fs::write(&key, base64::engine::general_purpose::STANDARD.encode([7u8; 32])).unwrap();
        let config: VaultConfig = toml::from_str(&format!(
            "[providers.sn]\nkind = \"entra_obo\"\ntoken_endpoint = \"{url}\"\nclient_id = \"c\"\nclient_secret = {{ file = \"{}\" }}\n[cache]\nbackend = \"redis\"\n[cache.redis]\nurl = \"unix://{}\"\nkey = {{ file = \"{}\" }}\n",
            secret.display(),
            socket.display(),
            key.display()
        ))
        .unwrap();
        let settings = config.validate().unwrap();
        let cache = Arc::new(RedisCache::new(settings.redis().unwrap(), None).unwrap());
        let client = delegate_outbound::build_client(&delegate_outbound::OutboundConfig::default()).unwrap();
        let vault = TokenVault::with_cache(settings, client, cache.clone());
        let caller = VerifiedCallerBuilder::new("6f1c7c4e-8d5a-4b8e-9f3a-2c1d0e9b7a65")
            .tenant("72f988bf-86f1-41af-91ab-2d7cd011db47")
            .scopes(&["access_as_user"])
            .token("token-a")
            .build();
        let scopes = vec!["api://servicenow-app/.default".to_owned()];
        assert_eq!(vault.token_for(&caller, "sn", &scopes).await.unwrap().cache, CacheStatus::Miss);
        let mut samples = Vec::with_capacity(ITERATIONS);
        for _ in 0..ITERATIONS {
            let start = Instant::now();
            let t = vault.token_for(&caller, "sn", &scopes).await.unwrap();
            samples.push(start.elapsed().as_nanos());
            assert_eq!(t.cache, CacheStatus::Hit);
        }
        report("vault cache hit (token_for, Redis on a unix socket, ~900-byte token)", samples);
        // 16 concurrent lookups over the one multiplexed connection.
        let started = Instant::now();
        let per_task = ITERATIONS / 16;
        let vault = Arc::new(vault);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (vault, caller, scopes) = (Arc::clone(&vault), caller.clone(), scopes.clone());
            tasks.spawn(async move {
                for _ in 0..per_task {
                    vault.token_for(&caller, "sn", &scopes).await.unwrap();
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let took = started.elapsed();
        println!(
            "vault cache hit, 16 concurrent, {} calls: {:.0} lookups/s on one connection",
            per_task * 16,
            (per_task * 16) as f64 / took.as_secs_f64()
        );
        assert_eq!(cache.stats().errors, 0);
    });

    let sealer = delegate_vault::seal::Sealer::new(&[7u8; 32], None);
    let k = CacheKey::new(
        "https://login.microsoftonline.com/t/v2.0",
        Some("t"),
        "s",
        "sn",
        &["api://x/.default".into()],
    );
    let token =
        CachedToken { token: delegate_secret::Secret::new("x".repeat(900)), expires_at: 10, fresh_until: 5 };
    let mut names = Vec::new();
    let mut seals = Vec::new();
    let mut opens = Vec::new();
    for _ in 0..ITERATIONS {
        let t = Instant::now();
        let name = sealer.name(&k);
        names.push(t.elapsed().as_nanos());
        let t = Instant::now();
        let sealed = sealer.seal(&name, &token).unwrap();
        seals.push(t.elapsed().as_nanos());
        let t = Instant::now();
        sealer.open(&name, &sealed).unwrap();
        opens.push(t.elapsed().as_nanos());
    }
    report("storage name (HMAC-SHA256 of the key)", names);
    report("seal (AES-256-GCM, 900-byte token)", seals);
    report("open (AES-256-GCM, 900-byte token)", opens);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
