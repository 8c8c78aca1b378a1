#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! The `agentcore_identity` provider against the AgentCore Identity stand-in, which exchanges
//! at the devstack IdP: both on 127.0.0.1:0.

use crate::*;
use delegate_auth::{VerifiedCaller, VerifiedCallerBuilder};
use delegate_devstack_agentcore::identity::{
    ARTICLE_PROVIDER, ARTICLE_WORKLOAD, AgentCoreIdentity, IdentityConfig, ResourceTokenFault,
};
use delegate_devstack_idp::defaults::*;
use delegate_devstack_idp::{IdpConfig, IdpServer, TokenFault};
use delegate_secret::Secret;
use std::sync::Arc;
use std::time::Duration;

const AKID: &str = "AKIDAGENTCORETEST";

struct Fixture {
    idp: IdpServer,
    identity: AgentCoreIdentity,
    endpoint: String,
}

async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

/// The fixture with the stand-in's configuration edited by `edit`.
async fn fixture_with(edit: impl FnOnce(&mut IdentityConfig)) -> Fixture {
    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(idp.ca_pem().as_bytes()).unwrap()])
        .build()
        .unwrap();
    let mut config = IdentityConfig::article(
        idp.idp().issuer(TENANT_ID),
        idp.idp().jwks_uri(TENANT_ID),
        idp.idp().token_endpoint(TENANT_ID),
        AGENT_APP_ID,
        Secret::new(AGENT_APP_SECRET),
        client,
    );
    config.access_key_id = Some(AKID.into());
    edit(&mut config);
    let identity = AgentCoreIdentity::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let router = identity.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Fixture { idp, identity, endpoint }
}

async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_bedrockagentcore::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_bedrockagentcore::config::Credentials::new(
            AKID,
            "agentcore-test-secret-key",
            None,
            None,
            "test",
        ))
        .load()
        .await
}

/// A vault with `servicenow` (agentcore_identity, the article's provider), `wrong`
/// (agentcore_identity naming a provider AgentCore does not have) and `obo` (entra_obo).
async fn vault(f: &Fixture) -> TokenVault {
    let src = format!(
        r#"
[providers.servicenow]
kind = "agentcore_identity"
credential_provider = "{ARTICLE_PROVIDER}"
region = "us-east-1"
endpoint_url = "{endpoint}"

[providers.wrong]
kind = "agentcore_identity"
credential_provider = "NoSuchProvider"
endpoint_url = "{endpoint}"

[providers.obo]
kind = "entra_obo"
token_endpoint = "{token_endpoint}"
client_id = "{AGENT_APP_ID}"
client_secret = {{ env = "PATH" }}

[cache]
retry_backoff_ms = 1
idp_attempts = 2
idp_timeout_ms = 3000
"#,
        endpoint = f.endpoint,
        token_endpoint = f.idp.idp().token_endpoint(TENANT_ID),
    );
    let settings = toml::from_str::<VaultConfig>(&src).unwrap().validate().unwrap();
    let client = delegate_outbound::build_client(&delegate_outbound::OutboundConfig::default()).unwrap();
    TokenVault::new(settings, client).with_aws_config(sdk_config().await)
}

fn scopes() -> Vec<String> {
    vec![format!("api://{CONNECTOR_APP_ID}/{CONNECTOR_SCOPE}")]
}

/// Jane as the runtime presents her: her verified JWT's claims, plus the WAT the front door
/// minted for her token.
async fn jane(f: &Fixture) -> (VerifiedCaller, Secret) {
    let token = f
        .idp
        .idp()
        .mint_access_token(JANE, AGENT_APP_ID, AGENT_APP_ID, &[AGENT_SCOPE], Duration::from_secs(600))
        .unwrap();
    let wat = f.identity.workload_access_token(ARTICLE_WORKLOAD, &token).await.unwrap();
    let caller = VerifiedCallerBuilder::new(JANE_OID)
        .tenant(TENANT_ID)
        .scopes(&[AGENT_SCOPE])
        .token(token.expose())
        .build()
        .with_workload_access_token(wat.clone());
    (caller, wat)
}

fn oid_of(token: &Secret) -> String {
    use base64::Engine;
    let payload = token.expose().split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
            .unwrap();
    claims["oid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn token_obtained_through_agentcore_identity_and_cached() {
    let f = fixture().await;
    let vault = vault(&f).await;
    let (caller, _) = jane(&f).await;
    let first = vault.token_for(&caller, "servicenow", &scopes()).await.unwrap();
    assert_eq!(first.cache, CacheStatus::Miss);
    assert_eq!(oid_of(&first.token), JANE_OID, "Token B is Jane's");
    assert_eq!(f.identity.counters().obo_exchanges, 1);
    assert_eq!(f.idp.idp().obo_calls(), 1);
    let second = vault.token_for(&caller, "servicenow", &scopes()).await.unwrap();
    assert_eq!(second.cache, CacheStatus::Hit);
    assert_eq!(second.token.expose(), first.token.expose());
    assert_eq!(f.identity.counters().resource_token_calls, 1, "a hit makes no AgentCore call");
    // Evicted (a downstream 401): the next request asks AgentCore again.
    vault.evict(&caller, "servicenow", &scopes()).await;
    assert_eq!(vault.token_for(&caller, "servicenow", &scopes()).await.unwrap().cache, CacheStatus::Miss);
    assert_eq!(f.identity.counters().resource_token_calls, 2);
}

#[tokio::test]
async fn another_workload_access_token_never_gets_a_cached_token() {
    let f = fixture().await;
    let vault = vault(&f).await;
    let (caller, _) = jane(&f).await;
    vault.token_for(&caller, "servicenow", &scopes()).await.unwrap();
    // The same verified claims with another user's WAT (delegate cannot tell they disagree):
    // not served from Jane's entry.
    let hannah = f
        .idp
        .idp()
        .mint_access_token(HR_ANALYST, AGENT_APP_ID, AGENT_APP_ID, &[AGENT_SCOPE], Duration::from_secs(600))
        .unwrap();
    let other_wat = f.identity.workload_access_token(ARTICLE_WORKLOAD, &hannah).await.unwrap();
    let mixed = VerifiedCallerBuilder::new(JANE_OID)
        .tenant(TENANT_ID)
        .scopes(&[AGENT_SCOPE])
        .build()
        .with_workload_access_token(other_wat);
    let issued = vault.token_for(&mixed, "servicenow", &scopes()).await.unwrap();
    assert_eq!(issued.cache, CacheStatus::Miss);
    assert_ne!(oid_of(&issued.token), JANE_OID);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_agentcore_call() {
    let f = fixture().await;
    let vault = Arc::new(vault(&f).await);
    let (caller, _) = jane(&f).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (vault, caller) = (vault.clone(), caller.clone());
            tokio::spawn(async move { vault.token_for(&caller, "servicenow", &scopes()).await })
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap().unwrap().token.expose().to_owned());
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 1);
    assert_eq!(f.identity.counters().resource_token_calls, 1);
    assert_eq!(f.identity.counters().obo_exchanges, 1);
}

#[tokio::test]
async fn errors_are_mapped_and_never_show_the_workload_access_token() {
    let f = fixture().await;
    let vault = vault(&f).await;
    let (caller, wat) = jane(&f).await;

    // No WAT on the request (standalone mode, or called around AgentCore).
    let plain = VerifiedCallerBuilder::new(JANE_OID).scopes(&[AGENT_SCOPE]).build();
    let e = vault.token_for(&plain, "servicenow", &scopes()).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (403, "workload_token_required"));

    // AgentCore has no such credential provider: the operator's mistake.
    let e = vault.token_for(&caller, "wrong", &scopes()).await.unwrap_err();
    assert!(matches!(e, VaultError::AgentCoreRefused { error: "ResourceNotFoundException", .. }), "{e:?}");
    assert_eq!((e.status(), e.code()), (502, "credential_provider_misconfigured"));
    let mut seen = vec![e];

    // The WAT is no longer valid.
    f.identity.revoke_all();
    let e = vault.token_for(&caller, "servicenow", &scopes()).await.unwrap_err();
    assert!(matches!(e, VaultError::AgentCoreRefused { error: "AccessDeniedException", .. }), "{e:?}");
    assert_eq!((e.status(), e.code()), (403, "credential_provider_access_denied"));
    seen.push(e);

    // A caller known only by its WAT may use agentcore_identity providers only.
    let vouched = VerifiedCaller::from_workload_access_token(wat.clone(), 0);
    let e = vault.token_for(&vouched, "obo", &scopes()).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (403, "verified_caller_required"));
    seen.push(e);

    // AgentCore unreachable: bounded retries, then 503.
    let down = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        url
    };
    let src = format!(
        "[providers.sn]\nkind = \"agentcore_identity\"\ncredential_provider = \"x\"\nendpoint_url = \"{down}\"\n[cache]\nretry_backoff_ms = 1\nidp_attempts = 2\n"
    );
    let settings = toml::from_str::<VaultConfig>(&src).unwrap().validate().unwrap();
    let client = delegate_outbound::build_client(&delegate_outbound::OutboundConfig::default()).unwrap();
    let down_vault = TokenVault::new(settings, client).with_aws_config(sdk_config().await);
    let e = down_vault.token_for(&caller, "sn", &scopes()).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (503, "credential_provider_unavailable"), "{e:?}");
    seen.push(e);

    for e in &seen {
        for shown in [e.to_string(), format!("{e:?}")] {
            assert!(!shown.contains(wat.expose()), "{shown}");
        }
    }
    assert!(!format!("{caller:?}").contains(wat.expose()), "the caller's Debug redacts the WAT");
}

/// The answers the article's setup never gives, each as docs/agentcore.md's table says:
/// throttling and a failing exchange behind AgentCore are transient (retried, then 503), a
/// rejected workload access token and a 200 without `accessToken` are not (one call). None of
/// the errors shows the workload access token or Token A.
#[tokio::test]
async fn throttling_failing_exchanges_rejected_tokens_and_answers_without_a_token_are_mapped() {
    let f = fixture().await;
    // A stand-in whose workload access tokens expire the moment they are minted.
    let g = fixture_with(|c| c.wat_lifetime = Duration::ZERO).await;
    let expiring = vault(&g).await;
    let vault = vault(&f).await;
    let (caller, wat) = jane(&f).await;
    let calls = || f.identity.counters().resource_token_calls;
    let mut seen = Vec::new();

    // Throttled: retried (idp_attempts = 2), then 503.
    f.identity.set_resource_token_fault(ResourceTokenFault::Throttling);
    let before = calls();
    let e = vault.token_for(&caller, "servicenow", &scopes()).await.unwrap_err();
    assert!(matches!(&e, VaultError::Unavailable { cause, .. } if cause == "ThrottlingException"), "{e:?}");
    assert_eq!((e.status(), e.code()), (503, "credential_provider_unavailable"));
    assert_eq!(calls() - before, 2, "a throttled request is retried");
    seen.push(e);
    f.identity.set_resource_token_fault(ResourceTokenFault::None);

    // The exchange behind AgentCore fails (the IdP answers 503): InternalServerException,
    // retried, then 503.
    f.idp.idp().set_token_fault(TokenFault::Status5xx(503));
    let before = calls();
    let e = vault.token_for(&caller, "servicenow", &scopes()).await.unwrap_err();
    assert!(
        matches!(&e, VaultError::Unavailable { cause, .. } if cause == "InternalServerException"),
        "{e:?}"
    );
    assert_eq!((e.status(), e.code()), (503, "credential_provider_unavailable"));
    assert_eq!(calls() - before, 2, "an internal error is retried");
    seen.push(e);
    // Failing once only: the retry gets Jane her token.
    f.idp.idp().set_token_fault_times(TokenFault::Status5xx(503), 1);
    let before = calls();
    let issued = vault.token_for(&caller, "servicenow", &scopes()).await.unwrap();
    assert_eq!((issued.cache, oid_of(&issued.token)), (CacheStatus::Miss, JANE_OID.to_owned()));
    assert_eq!(calls() - before, 2);
    vault.evict(&caller, "servicenow", &scopes()).await;

    // 200 without `accessToken`, and 200 asking for the user's consent: not retried, 502.
    for (fault, detail) in [
        (ResourceTokenFault::NoAccessToken, "returned no accessToken"),
        (ResourceTokenFault::ConsentNeeded, "asked for user consent (authorizationUrl)"),
    ] {
        f.identity.set_resource_token_fault(fault);
        let before = calls();
        let e = vault.token_for(&caller, "servicenow", &scopes()).await.unwrap_err();
        assert!(matches!(e, VaultError::InvalidResponse { .. }), "{fault:?}: {e:?}");
        assert_eq!((e.status(), e.code()), (502, "credential_provider_invalid_response"), "{fault:?}");
        assert!(e.to_string().contains(detail), "{fault:?}: {e}");
        assert_eq!(calls() - before, 1, "{fault:?} is not retried");
        seen.push(e);
    }
    f.identity.set_resource_token_fault(ResourceTokenFault::None);
    assert_eq!(vault.token_for(&caller, "servicenow", &scopes()).await.unwrap().cache, CacheStatus::Miss);

    // A workload access token AgentCore no longer accepts (one that has expired):
    // UnauthorizedException, not retried, 401.
    let (expired_caller, expired_wat) = jane(&g).await;
    let e = expiring.token_for(&expired_caller, "servicenow", &scopes()).await.unwrap_err();
    assert!(matches!(e, VaultError::AgentCoreRefused { error: "UnauthorizedException", .. }), "{e:?}");
    assert_eq!((e.status(), e.code()), (401, "workload_token_rejected"));
    assert_eq!(
        e.www_authenticate().as_deref(),
        Some(r#"Bearer error="invalid_token", error_description="the workload access token was rejected""#)
    );
    assert_eq!(g.identity.counters().resource_token_calls, 1, "a rejected token is not retried");
    assert_eq!(g.identity.counters().obo_exchanges, 0);
    seen.push(e);

    assert_eq!(seen.len(), 5);
    for e in &seen {
        for shown in [e.to_string(), format!("{e:?}")] {
            for secret in
                [wat.expose(), expired_wat.expose(), caller.token().expose(), expired_caller.token().expose()]
            {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
    }
}

#[tokio::test]
async fn a_caller_known_only_by_its_workload_access_token() {
    let f = fixture().await;
    let vault = vault(&f).await;
    let (_, wat) = jane(&f).await;
    let vouched = VerifiedCaller::from_workload_access_token(wat.clone(), 1_000);
    assert!(!vouched.is_token_verified());
    assert!(vouched.subject().starts_with(delegate_auth::WORKLOAD_SUBJECT_PREFIX));
    assert!(!vouched.subject().contains(wat.expose()));
    assert!(vouched.token().is_empty() && vouched.username().is_none() && vouched.scopes().is_empty());
    let issued = vault.token_for(&vouched, "servicenow", &scopes()).await.unwrap();
    assert_eq!(oid_of(&issued.token), JANE_OID, "AgentCore vouched for Jane");
    // Its expiry (1 000 + 300 s, long past) caps caching: nothing is cached.
    assert_eq!(vault.token_for(&vouched, "servicenow", &scopes()).await.unwrap().cache, CacheStatus::Miss);
}

#[test]
fn agentcore_config_is_validated() {
    let bad = [
        ("credential_provider = \"bad name\"", "credential_provider"),
        ("credential_provider = \"\"", "credential_provider"),
        ("credential_provider = \"p\"\nendpoint_url = \"http://example.com\"", "endpoint_url"),
        ("credential_provider = \"p\"\nregion = \"US East\"", "region"),
    ];
    for (body, key) in bad {
        let src = format!("[providers.sn]\nkind = \"agentcore_identity\"\n{body}\n");
        let e = toml::from_str::<VaultConfig>(&src).unwrap().validate().unwrap_err();
        assert!(e.key.ends_with(key), "{body}: {e}");
    }
    let unknown =
        "[providers.sn]\nkind = \"agentcore_identity\"\ncredential_provider = \"p\"\nclient_secret = \"x\"\n";
    assert!(toml::from_str::<VaultConfig>(unknown).is_err(), "unknown keys are refused");
    let ok = "[providers.sn]\nkind = \"agentcore_identity\"\ncredential_provider = \"EntraIdServiceNow\"\n";
    let settings = toml::from_str::<VaultConfig>(ok).unwrap().validate().unwrap();
    assert!(settings.is_agentcore_identity("sn"));
    assert_eq!(settings.provider_names().collect::<Vec<_>>(), ["sn"]);
}
