//! Per-request egress overhead on loopback: policy decision, scrubbing, and the whole
//! `EgressGateway::send` (cached Token B) against the same request sent with plain reqwest.
//! Goal: overhead ≤ 50 µs p50. Prints p50/p99 for each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, missing_docs)]

use bytes::Bytes;
use delegate_auth::VerifiedCallerBuilder;
use delegate_egress::{
    AuditContext, AuditSink, EgressBudget, EgressConfig, EgressGateway, EgressLimits, InvocationEgress,
    Scrubber,
};
use delegate_secret::Secret;
use delegate_vault::{TokenVault, VaultConfig};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn report(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!("{name}: n={} p50 {:?} p99 {:?}", samples.len(), p(0.5), p(0.99));
    p(0.5)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
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
        let request = || http::Request::builder().uri(&url).header("accept", "application/json").body(Bytes::new()).unwrap();

        // Policy decision alone.
        let uri: http::Uri = url.parse().unwrap();
        let mut s = Vec::new();
        for _ in 0..100_000 {
            let t = Instant::now();
            std::hint::black_box(policy.decide(&http::Method::GET, std::hint::black_box(&uri)));
            s.push(t.elapsed());
        }
        report("policy decide", s);

        // Scrubbing a 3 KiB body in 1 KiB chunks with 3 secrets.
        let (a, b, c) = (Secret::new("eyJ0eXAi.token-a.sig"), Secret::new("eyJ0eXAi.token-b.sig"), Secret::new("bench-client-secret"));
        let data = vec![b'x'; 3072];
        let mut s = Vec::new();
        for _ in 0..20_000 {
            let t = Instant::now();
            let mut sc = Scrubber::new(&[&a, &b, &c]);
            for chunk in data.chunks(1024) {
                std::hint::black_box(sc.push(chunk));
            }
            std::hint::black_box(sc.finish());
            s.push(t.elapsed());
        }
        report("scrub 3 KiB (3 secrets)", s);

        // Warm up both paths (connections, cached token).
        for _ in 0..200 {
            gateway.send(&inv, request()).await.unwrap().into_body().collect().await.unwrap();
            client.get(&url).header("accept", "application/json").send().await.unwrap().bytes().await.unwrap();
        }
        let n = 3000;
        let (mut plain, mut gated) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let t = Instant::now();
            client
                .get(&url)
                .header("accept", "application/json")
                .header("authorization", "Bearer eyJ0eXAi.token-b.sig")
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            plain.push(t.elapsed());
            let t = Instant::now();
            gateway.send(&inv, request()).await.unwrap().into_body().collect().await.unwrap();
            gated.push(t.elapsed());
        }
        let p = report("plain reqwest GET (loopback)", plain);
        let g = report("EgressGateway::send GET (cached token, scrub, audit to file)", gated);
        println!("egress overhead p50: {:?}", g.saturating_sub(p));
        std::fs::remove_dir_all(&dir).unwrap();
    });
}
