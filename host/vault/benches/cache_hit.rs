//! Cache-hit cost of `TokenVault::token_for`: the price every credentialed egress request pays
//! once the token is cached. Goal: p50 ≤ 1 µs. Prints p50/p99/max over many single calls.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, missing_docs)]

use delegate_auth::VerifiedCallerBuilder;
use delegate_vault::{CacheStatus, TokenVault, VaultConfig};
use std::time::Instant;

const ITERATIONS: usize = 200_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        // A loopback token endpoint for the one miss that fills the cache.
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(|| async {
                axum::Json(serde_json::json!({"token_type":"Bearer","expires_in":3600,"access_token":"token-b"}))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

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
        assert_eq!(vault.token_for(&caller, "sn", &scopes).await.unwrap().cache, CacheStatus::Miss);

        let mut samples = Vec::with_capacity(ITERATIONS);
        for _ in 0..ITERATIONS {
            let start = Instant::now();
            let t = vault.token_for(&caller, "sn", &scopes).await.unwrap();
            let elapsed = start.elapsed();
            assert_eq!(t.cache, CacheStatus::Hit);
            samples.push(elapsed.as_nanos());
        }
        samples.sort_unstable();
        let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
        println!(
            "vault cache hit (token_for, in-memory cache), {ITERATIONS} calls: p50 {} ns, p99 {} ns, max {} ns",
            pct(0.50),
            pct(0.99),
            samples[samples.len() - 1]
        );
    });
}
