//! Per-request egress overhead on loopback (criterion): the policy decision, scrubbing, and the
//! whole `EgressGateway::send` (policy, cached Token B injected, response scrubbed, audit line
//! to a file) against the same request sent with plain reqwest. The overhead is the difference
//! of the last two medians; goal ≤ 50 µs.
//!
//! `cargo bench -p delegate-egress --bench egress` (`--profile production` for the figures in
//! BENCHMARKS.md).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use delegate_auth::VerifiedCallerBuilder;
use delegate_egress::{
    AuditContext, AuditSink, EgressBudget, EgressConfig, EgressGateway, EgressLimits, InvocationEgress,
    Scrubber,
};
use delegate_secret::Secret;
use delegate_vault::{TokenVault, VaultConfig};
use http_body_util::BodyExt;
use std::sync::Arc;

fn egress(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (gateway, client, inv, policy, url, dir) = rt.block_on(async {
        let body = format!("{{\"result\":[{}]}}", "{\"number\":\"INC0010001\",\"short_description\":\"printer\"},".repeat(40));
        let app = axum::Router::new()
            .route(
                "/token",
                axum::routing::post(|| async {
                    axum::Json(serde_json::json!({"token_type":"Bearer","expires_in":3600,"access_token":"eyJ0eXAi.token-b.sig"}))
                }),
            )
            .route("/api/now/table/incident", axum::routing::get(move || std::future::ready(body.clone())));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let dir = std::env::temp_dir().join(format!("egress-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret"), "bench-client-secret").unwrap();
        let vault: VaultConfig = toml::from_str(&format!(
            "[providers.sn]\nkind = \"entra_obo\"\ntoken_endpoint = \"http://127.0.0.1:{port}/token\"\nclient_id = \"c\"\nclient_secret = {{ file = \"{}\" }}",
            dir.join("secret").display()
        ))
        .unwrap();
        let client = delegate_outbound::build_client(&delegate_outbound::OutboundConfig::default()).unwrap();
        let vault = Arc::new(TokenVault::new(vault.validate().unwrap(), client.clone()));
        let sink = Arc::new(AuditSink::file(&dir.join("audit.jsonl")).unwrap());
        let gateway = EgressGateway::new(vault, client.clone(), sink);
        let rules: EgressConfig = toml::from_str(&format!(
            "[[rules]]\nmethods = [\"GET\"]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\nallow_ip_literal = true\npath_prefix = \"/api/now/table\"\ncredential = {{ provider = \"sn\", scopes = [\"api://sn/.default\"] }}"
        ))
        .unwrap();
        let policy = Arc::new(rules.validate().unwrap());
        let inv = InvocationEgress {
            policy: policy.clone(),
            caller: Arc::new(VerifiedCallerBuilder::new("oid").scopes(&["s"]).token("eyJ0eXAi.token-a.sig").build()),
            audit: AuditContext {
                invocation_id: "i".into(),
                trace: None,
                caller_subject: "oid".into(),
                caller_username: None,
                plugin: "p".into(),
                plugin_digest: "sha256:0".into(),
                plugin_version: "1.0.0".into(),
            },
            budget: Arc::new(EgressBudget::new(EgressLimits { max_requests: u32::MAX, max_response_bytes: u64::MAX, ..EgressLimits::default() })),
        };
        let url = format!("http://127.0.0.1:{port}/api/now/table/incident?sysparm_limit=40");
        (gateway, client, inv, policy, url, dir)
    });
    let request = || {
        http::Request::builder().uri(&url).header("accept", "application/json").body(Bytes::new()).unwrap()
    };

    let uri: http::Uri = url.parse().unwrap();
    c.bench_function("egress policy decide", |b| {
        b.iter(|| std::hint::black_box(policy.decide(&http::Method::GET, std::hint::black_box(&uri))));
    });

    // A 3 KiB body in 1 KiB chunks, three secrets to find.
    let (a, b, s) = (
        Secret::new("eyJ0eXAi.token-a.sig"),
        Secret::new("eyJ0eXAi.token-b.sig"),
        Secret::new("bench-client-secret"),
    );
    let data = vec![b'x'; 3072];
    c.bench_function("egress scrub 3 KiB (3 secrets)", |bench| {
        bench.iter(|| {
            let mut scrubber = Scrubber::new(&[&a, &b, &s]);
            for chunk in data.chunks(1024) {
                std::hint::black_box(scrubber.push(chunk));
            }
            std::hint::black_box(scrubber.finish())
        });
    });

    // Both paths warm (connections, cached token) before either is measured.
    rt.block_on(async {
        for _ in 0..200 {
            gateway.send(&inv, request()).await.unwrap().into_body().collect().await.unwrap();
            client
                .get(&url)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
        }
    });
    let mut group = c.benchmark_group("egress GET on loopback");
    group.bench_function("plain reqwest", |b| {
        b.to_async(&rt).iter(|| async {
            client
                .get(&url)
                .header("accept", "application/json")
                .header("authorization", "Bearer eyJ0eXAi.token-b.sig")
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        });
    });
    group.bench_function("EgressGateway::send (cached token, scrub, audit to file)", |b| {
        b.to_async(&rt).iter(|| async {
            gateway.send(&inv, request()).await.unwrap().into_body().collect().await.unwrap()
        });
    });
    group.finish();
    std::fs::remove_dir_all(&dir).unwrap();
}

criterion_group!(benches, egress);
criterion_main!(benches);
