//! Verification latency of a valid token with a warm JWKS cache.
//!
//! `cargo bench -p delegate-auth --bench verify` (release build). Prints p50/p99/max over
//! N sequential `Authorizer::authorize` calls against the HTTPS devstack IdP; after the
//! warm-up no call touches the network.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::time::{Duration, Instant};

use delegate_auth::{AuthConfig, Authorizer};
use delegate_devstack_idp::defaults::{AGENT_APP_ID, AGENT_SCOPE, JANE, TENANT_ID};
use delegate_devstack_idp::{IdpConfig, IdpServer};

const ITERATIONS: usize = 20_000;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let server = IdpServer::start(IdpConfig::default()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("delegate-auth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, server.ca_pem()).unwrap();
    let client = delegate_outbound::build_client(&delegate_outbound::OutboundConfig {
        extra_ca_pem_files: vec![ca],
        ..Default::default()
    })
    .unwrap();
    let mut config =
        AuthConfig::new(&server.idp().discovery_url(TENANT_ID), &[AGENT_APP_ID], &[AGENT_APP_ID]);
    config.required_scopes = vec![AGENT_SCOPE.into()];
    let authorizer = Authorizer::new(config.validate().unwrap(), client);
    authorizer.warm_up().await.unwrap();
    let token = server
        .idp()
        .mint_access_token(JANE, AGENT_APP_ID, AGENT_APP_ID, &[AGENT_SCOPE], Duration::from_secs(3600))
        .unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, format!("Bearer {}", token.expose()).parse().unwrap());
    for _ in 0..1000 {
        authorizer.authorize(&headers).await.unwrap();
    }
    let mut samples = Vec::with_capacity(ITERATIONS);
    for _ in 0..ITERATIONS {
        let started = Instant::now();
        let caller = authorizer.authorize(&headers).await.unwrap();
        samples.push(started.elapsed());
        std::hint::black_box(caller);
    }
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "authorize (valid RS256 Entra v2 token, warm JWKS), {ITERATIONS} iterations: p50 {:?}  p99 {:?}  max {:?}",
        pct(0.50),
        pct(0.99),
        samples[samples.len() - 1]
    );
    assert_eq!(server.idp().counters().jwks, 1, "the benchmark must not fetch keys");
    let _ = std::fs::remove_dir_all(&dir);
}
