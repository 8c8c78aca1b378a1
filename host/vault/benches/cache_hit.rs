//! Cache-hit cost of `TokenVault::token_for` (criterion): the price every credentialed egress
//! request pays once the token is cached. Goal: ≤ 1 µs.
//!
//! `cargo bench -p delegate-vault --bench cache_hit` (`--profile production` for the figures in
//! BENCHMARKS.md).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use delegate_auth::VerifiedCallerBuilder;
use delegate_vault::{CacheStatus, TokenVault, VaultConfig};

fn cache_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // A loopback token endpoint for the one miss that fills the cache.
    let url = rt.block_on(async {
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(|| async {
                axum::Json(
                    serde_json::json!({"token_type":"Bearer","expires_in":3600,"access_token":"token-b"}),
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    });

    let dir = std::env::temp_dir().join(format!("vault-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "bench-secret").unwrap();
    let config: VaultConfig = toml::from_str(&format!(
        "[providers.sn]\nkind = \"entra_obo\"\ntoken_endpoint = \"{url}\"\nclient_id = \"c\"\nclient_secret = {{ file = \"{}\" }}",
        secret.display()
    ))
    .unwrap();
    let client = delegate_outbound::build_client(&delegate_outbound::OutboundConfig::default()).unwrap();
    let vault = TokenVault::new(config.validate().unwrap(), client);
    std::fs::remove_dir_all(&dir).unwrap();

    // A realistic key: Entra issuer, GUID tenant/subject, one .default scope.
    let caller = VerifiedCallerBuilder::new("6f1c7c4e-8d5a-4b8e-9f3a-2c1d0e9b7a65")
        .tenant("72f988bf-86f1-41af-91ab-2d7cd011db47")
        .scopes(&["access_as_user"])
        .token("token-a")
        .build();
    let scopes = vec!["api://servicenow-app/.default".to_owned()];
    let first = rt.block_on(vault.token_for(&caller, "sn", &scopes)).unwrap();
    assert_eq!(first.cache, CacheStatus::Miss);

    c.bench_function("vault cache hit (token_for, in-memory cache)", |b| {
        b.to_async(&rt).iter(|| async {
            let token = vault.token_for(&caller, "sn", &scopes).await.unwrap();
            assert_eq!(token.cache, CacheStatus::Hit);
            std::hint::black_box(token)
        });
    });
}

criterion_group!(benches, cache_hit);
criterion_main!(benches);
