//! Verification cost of a valid token with a warm JWKS cache (criterion).
//!
//! `cargo bench -p delegate-auth --bench verify` (`--profile production` for the figures in
//! BENCHMARKS.md). One `Authorizer::authorize` per iteration against the HTTPS devstack IdP:
//! bearer parsing, RS256 signature, issuer/audience/client/scope rules; after the warm-up no
//! call touches the network (checked: the IdP serves its JWKS once).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use delegate_auth::{AuthConfig, Authorizer};
use delegate_devstack_idp::defaults::{AGENT_APP_ID, AGENT_SCOPE, JANE, TENANT_ID};
use delegate_devstack_idp::{IdpConfig, IdpServer};

fn authorize(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let server = rt.block_on(IdpServer::start(IdpConfig::default())).unwrap();
    let dir = std::env::temp_dir().join(format!("delegate-auth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, server.ca_pem()).unwrap();
    let client = delegate_outbound::build_client(&delegate_outbound::OutboundConfig {
        extra_ca_pem_files: vec![ca],
        ..Default::default()
    })
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let mut config =
        AuthConfig::new(&server.idp().discovery_url(TENANT_ID), &[AGENT_APP_ID], &[AGENT_APP_ID]);
    config.required_scopes = vec![AGENT_SCOPE.into()];
    let authorizer = Authorizer::new(config.validate().unwrap(), client);
    rt.block_on(authorizer.warm_up()).unwrap();
    let token = server
        .idp()
        .mint_access_token(JANE, AGENT_APP_ID, AGENT_APP_ID, &[AGENT_SCOPE], Duration::from_secs(3600))
        .unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, format!("Bearer {}", token.expose()).parse().unwrap());

    c.bench_function("authorize (valid RS256 Entra v2 token, warm JWKS)", |b| {
        b.to_async(&rt)
            .iter(|| async { std::hint::black_box(authorizer.authorize(&headers).await.unwrap()) });
    });
    assert_eq!(server.idp().counters().jwks, 1, "the benchmark must not fetch keys");
}

criterion_group!(benches, authorize);
criterion_main!(benches);
