#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::*;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use delegate_auth::{VerifiedCaller, VerifiedCallerBuilder};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

const CLIENT_SECRET: &str = "s3cr3t~client.value_XYZ";
const TOKEN_A: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.token-a-jane.sig";

/// What the fake token endpoint answers.
#[derive(Clone)]
enum Mode {
    Ok {
        expires_in: u64,
    },
    /// Hold every request until the gate opens, then answer like `Ok`.
    Gated(Arc<Notify>),
    Error(u16, &'static str),
    /// Answer 503 this many times, then 200.
    FailFirst(usize),
    Hang,
}

struct Idp {
    calls: AtomicUsize,
    mode: Mutex<Mode>,
    forms: Mutex<Vec<HashMap<String, String>>>,
}

async fn token_endpoint(
    State(idp): State<Arc<Idp>>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let n = idp.calls.fetch_add(1, Ordering::SeqCst) + 1;
    idp.forms.lock().unwrap().push(form);
    let mode = idp.mode.lock().unwrap().clone();
    let ok = |expires_in: u64| {
        axum::Json(serde_json::json!({
            "token_type": "Bearer", "scope": "api://sn/.default", "expires_in": expires_in,
            "ext_expires_in": 0, "access_token": format!("token-b-{n}")
        }))
        .into_response()
    };
    match mode {
        Mode::Ok { expires_in } => ok(expires_in),
        Mode::Gated(gate) => {
            gate.notified().await;
            ok(3600)
        }
        Mode::Error(status, body) => {
            (StatusCode::from_u16(status).unwrap(), [("content-type", "application/json")], body)
                .into_response()
        }
        Mode::FailFirst(k) if n <= k => (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response(),
        Mode::FailFirst(_) => ok(3600),
        Mode::Hang => std::future::pending().await,
    }
}

async fn start_idp(mode: Mode) -> (Arc<Idp>, String) {
    let idp =
        Arc::new(Idp { calls: AtomicUsize::new(0), mode: Mutex::new(mode), forms: Mutex::new(Vec::new()) });
    let app = axum::Router::new()
        .route("/tenant/oauth2/v2.0/token", axum::routing::post(token_endpoint))
        .with_state(idp.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/tenant/oauth2/v2.0/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (idp, url)
}

fn secret_file() -> std::path::PathBuf {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vault-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("client-secret");
        std::fs::write(&path, format!("{CLIENT_SECRET}\n")).unwrap();
        path
    })
    .clone()
}

fn settings(url: &str, extra: &str) -> VaultSettings {
    let file = secret_file();
    let src = format!(
        r#"
[providers.servicenow]
kind = "entra_obo"
token_endpoint = "{url}"
client_id = "delegate-client"
client_secret = {{ file = "{file}" }}

[providers.exchange]
kind = "token_exchange"
token_endpoint = "{url}"
client_id = "delegate-client"
client_secret = {{ file = "{file}" }}
audience = "servicenow"

[providers.machine]
kind = "client_credentials"
token_endpoint = "{url}"
client_id = "delegate-client"
client_secret = {{ file = "{file}" }}

[cache]
retry_backoff_ms = 1
{timeout}
{extra}
"#,
        file = file.display(),
        timeout = if extra.contains("idp_timeout_ms") { "" } else { "idp_timeout_ms = 2000" },
    );
    let config: VaultConfig = toml::from_str(&src).unwrap();
    config.validate().unwrap()
}

async fn start_vault(mode: Mode, extra: &str) -> (Arc<Idp>, TokenVault) {
    let (idp, url) = start_idp(mode).await;
    let client = delegate_outbound::build_client(&delegate_outbound::OutboundConfig::default()).unwrap();
    (idp, TokenVault::new(settings(&url, extra), client))
}

fn jane() -> VerifiedCaller {
    VerifiedCallerBuilder::new("oid-jane").tenant("tid-1").scopes(&["access_as_user"]).token(TOKEN_A).build()
}

fn fred() -> VerifiedCaller {
    VerifiedCallerBuilder::new("oid-fred")
        .tenant("tid-1")
        .scopes(&["access_as_user"])
        .token("token-a-fred")
        .build()
}

fn scopes(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn obo_sends_the_entra_form_and_caches_per_key() {
    let (idp, vault) = start_vault(Mode::Ok { expires_in: 3600 }, "").await;
    let first = vault.token_for(&jane(), "servicenow", &scopes(&["api://sn/.default", "b"])).await.unwrap();
    assert_eq!(first.cache, CacheStatus::Miss);
    assert_eq!(first.token.expose(), "token-b-1");
    let form = idp.forms.lock().unwrap()[0].clone();
    assert_eq!(form["grant_type"], "urn:ietf:params:oauth:grant-type:jwt-bearer");
    assert_eq!(form["client_id"], "delegate-client");
    assert_eq!(form["client_secret"], CLIENT_SECRET);
    assert_eq!(form["assertion"], TOKEN_A);
    assert_eq!(form["scope"], "api://sn/.default b");
    assert_eq!(form["requested_token_use"], "on_behalf_of");
    assert_eq!(form.len(), 6);

    // Same key (scope order and duplicates do not matter): a hit with the same token.
    let second =
        vault.token_for(&jane(), "servicenow", &scopes(&["b", "api://sn/.default", "b"])).await.unwrap();
    assert_eq!(second.cache, CacheStatus::Hit);
    assert_eq!(second.token.expose(), "token-b-1");
    assert_eq!(second.expires_at, first.expires_at);
    assert_eq!(idp.calls.load(Ordering::SeqCst), 1);

    // Other scopes, other user: other keys.
    assert_eq!(
        vault.token_for(&jane(), "servicenow", &scopes(&["other"])).await.unwrap().cache,
        CacheStatus::Miss
    );
    assert_eq!(
        vault.token_for(&fred(), "servicenow", &scopes(&["api://sn/.default", "b"])).await.unwrap().cache,
        CacheStatus::Miss
    );
    assert_eq!(idp.calls.load(Ordering::SeqCst), 3);
    // The same subject in another tenant is another user.
    let other_tenant =
        VerifiedCallerBuilder::new("oid-jane").tenant("tid-2").scopes(&["x"]).token(TOKEN_A).build();
    assert_eq!(
        vault.token_for(&other_tenant, "servicenow", &scopes(&["other"])).await.unwrap().cache,
        CacheStatus::Miss
    );
    assert_eq!(idp.calls.load(Ordering::SeqCst), 4);
}

/// Waits (without a deadline assertion) until the fake IdP has seen `n` calls, then gives
/// other tasks a moment to make more calls if the code under test would.
async fn wait_for_calls(idp: &Idp, n: usize) {
    while idp.calls.load(Ordering::SeqCst) < n {
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_misses_make_one_idp_call_per_user() {
    let gate = Arc::new(Notify::new());
    let (idp, vault) = start_vault(Mode::Gated(gate.clone()), "").await;
    let vault = Arc::new(vault);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let vault = vault.clone();
        let caller = if i % 2 == 0 { jane() } else { fred() };
        tasks.push(tokio::spawn(async move {
            vault
                .token_for(&caller, "servicenow", &scopes(&["api://sn/.default"]))
                .await
                .map(|t| (caller.subject().to_owned(), t))
        }));
    }
    // Both flights are in the air and held; had single-flight failed, up to 100 calls would be.
    wait_for_calls(&idp, 2).await;
    assert_eq!(idp.calls.load(Ordering::SeqCst), 2);
    gate.notify_waiters();
    let mut tokens: HashMap<String, Vec<String>> = HashMap::new();
    for t in tasks {
        let (subject, issued) = t.await.unwrap().unwrap();
        tokens.entry(subject).or_default().push(issued.token.expose().to_owned());
    }
    assert_eq!(idp.calls.load(Ordering::SeqCst), 2);
    // Every waiter of one user got that user's single token.
    for (subject, list) in &tokens {
        assert_eq!(list.len(), 50, "{subject}");
        assert!(list.iter().all(|t| t == &list[0]), "{subject}: {list:?}");
    }
    assert_ne!(tokens["oid-jane"][0], tokens["oid-fred"][0]);
    // And the result is now cached.
    let again = vault.token_for(&jane(), "servicenow", &scopes(&["api://sn/.default"])).await.unwrap();
    assert_eq!(again.cache, CacheStatus::Hit);
    assert_eq!(idp.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn expiry_refreshes_and_evict_forces_a_new_token() {
    let (idp, mut vault) = start_vault(Mode::Ok { expires_in: 3600 }, "expiry_skew_seconds = 60").await;
    let now = Arc::new(AtomicU64::new(1_000_000));
    let clock = now.clone();
    vault.set_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
    let s = scopes(&["api://sn/.default"]);
    let t1 = vault.token_for(&jane(), "servicenow", &s).await.unwrap();
    assert_eq!((t1.cache, t1.expires_at), (CacheStatus::Miss, 1_003_600));
    now.store(1_003_539, Ordering::SeqCst);
    let t2 = vault.token_for(&jane(), "servicenow", &s).await.unwrap();
    assert_eq!((t2.cache, t2.token.expose()), (CacheStatus::Hit, "token-b-1"));
    // At expires_in minus the skew the entry is stale: a new token.
    now.store(1_003_540, Ordering::SeqCst);
    let t3 = vault.token_for(&jane(), "servicenow", &s).await.unwrap();
    assert_eq!((t3.cache, t3.token.expose()), (CacheStatus::Miss, "token-b-2"));
    // Downstream 401 → evict → the next call asks the IdP again.
    vault.evict(&jane(), "servicenow", &s).await;
    let t4 = vault.token_for(&jane(), "servicenow", &s).await.unwrap();
    assert_eq!((t4.cache, t4.token.expose()), (CacheStatus::Miss, "token-b-3"));
    assert_eq!(idp.calls.load(Ordering::SeqCst), 3);
}

#[test]
fn lifetime_is_capped_by_skew_and_caller_expiry() {
    use crate::vault::lifetime;
    // expires_in minus skew
    assert_eq!(lifetime(1000, Some(3600), 60, Some(u64::MAX)), (4600, 4540));
    // never past the caller's own token
    assert_eq!(lifetime(1000, Some(3600), 60, Some(2000)), (4600, 2000));
    // a token shorter than the skew is not cached
    assert_eq!(lifetime(1000, Some(30), 60, None), (1030, 1000));
    // no expires_in: not cached
    assert_eq!(lifetime(1000, None, 60, Some(2000)), (2000, 1000));
    // machine tokens: no caller cap
    assert_eq!(lifetime(1000, Some(3600), 0, None), (4600, 4600));
}

#[tokio::test]
async fn short_lived_tokens_are_not_cached() {
    let (idp, vault) = start_vault(Mode::Ok { expires_in: 30 }, "expiry_skew_seconds = 60").await;
    let s = scopes(&["a"]);
    assert_eq!(vault.token_for(&jane(), "servicenow", &s).await.unwrap().cache, CacheStatus::Miss);
    assert_eq!(vault.token_for(&jane(), "servicenow", &s).await.unwrap().cache, CacheStatus::Miss);
    assert_eq!(idp.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn token_exchange_and_client_credentials_forms() {
    let (idp, vault) = start_vault(Mode::Ok { expires_in: 3600 }, "").await;
    vault.token_for(&jane(), "exchange", &scopes(&["read"])).await.unwrap();
    let form = idp.forms.lock().unwrap()[0].clone();
    assert_eq!(form["grant_type"], "urn:ietf:params:oauth:grant-type:token-exchange");
    assert_eq!(form["subject_token"], TOKEN_A);
    assert_eq!(form["subject_token_type"], "urn:ietf:params:oauth:token-type:access_token");
    assert_eq!(form["audience"], "servicenow");
    assert_eq!(form["scope"], "read");
    assert_eq!(form["client_secret"], CLIENT_SECRET);
    assert!(!form.contains_key("assertion") && !form.contains_key("actor_token_type"));

    // Client credentials: no user token sent; one machine token shared by all users.
    let a = vault.token_for(&jane(), "machine", &scopes(&["api://m/.default"])).await.unwrap();
    let b = vault.token_for(&fred(), "machine", &scopes(&["api://m/.default"])).await.unwrap();
    assert_eq!((a.cache, b.cache), (CacheStatus::Miss, CacheStatus::Hit));
    let form = idp.forms.lock().unwrap()[1].clone();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["scope"], "api://m/.default");
    assert!(!form.values().any(|v| v.contains("token-a")));
    assert_eq!(idp.calls.load(Ordering::SeqCst), 2);
}

const E500133: &str = r#"{"error":"invalid_grant","error_description":"AADSTS500133: Assertion is not within its valid time range. user jane@contoso","error_codes":[500133],"timestamp":"2026-12-04 10:00:00Z","trace_id":"0c1f7a3b-1111-2222-3333-444455556666","correlation_id":"9d0e-aaaa","error_uri":"https://login.microsoftonline.com/error?code=500133"}"#;
const E65001: &str = r#"{"error":"invalid_grant","error_description":"AADSTS65001: The user or administrator has not consented","error_codes":[65001],"suberror":"consent_required","trace_id":"t-1","correlation_id":"c-1"}"#;
const E50079: &str = r#"{"error":"interaction_required","error_description":"AADSTS50079: you must enroll in MFA","error_codes":[50079],"claims":"{\"access_token\":{\"polids\":{\"essential\":true,\"values\":[\"9ab03e19-ed42-4168-b6b7-7001fb3e933a\"]}}}"}"#;
const E7000215: &str = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent is the client secret value","error_codes":[7000215]}"#;
const E70011: &str = r#"{"error":"invalid_scope","error_description":"AADSTS70011: The provided value for the input parameter 'scope' is not valid.","error_codes":[70011]}"#;
const E500131: &str = r#"{"error":"invalid_grant","error_description":"AADSTS500131: Assertion audience does not match the Client app presenting the assertion","error_codes":[500131]}"#;
const E50013: &str = r#"{"error":"invalid_grant","error_description":"AADSTS50013: Assertion failed signature validation","error_codes":[50013]}"#;
const E_TWO: &str =
    r#"{"error":"invalid_grant","error_description":"AADSTS70002 / 500133","error_codes":[70002,500133]}"#;

#[tokio::test]
async fn idp_errors_keep_their_code_and_map_to_caller_statuses() {
    let b64_claims = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .encode(r#"{"access_token":{"polids":{"essential":true,"values":["9ab03e19-ed42-4168-b6b7-7001fb3e933a"]}}}"#)
    };
    let cases: Vec<(u16, &str, u16, &str, Option<String>)> = vec![
        (
            400,
            E500133,
            401,
            "token_expired",
            Some(r#"Bearer error="invalid_token", error_description="the access token has expired""#.into()),
        ),
        (
            400,
            E_TWO,
            401,
            "token_expired",
            Some(r#"Bearer error="invalid_token", error_description="the access token has expired""#.into()),
        ),
        (400, E50013, 401, "invalid_token", Some(r#"Bearer error="invalid_token""#.into())),
        (400, E65001, 403, "consent_required", None),
        (
            400,
            E50079,
            401,
            "interaction_required",
            Some(format!(r#"Bearer error="insufficient_claims", claims="{b64_claims}""#)),
        ),
        (401, E7000215, 502, "credential_provider_misconfigured", None),
        (400, E70011, 502, "credential_provider_misconfigured", None),
        (400, E500131, 502, "credential_provider_misconfigured", None),
        (400, "<html>oops</html>", 502, "credential_provider_invalid_response", None),
    ];
    for (idp_status, body, status, code, www) in cases {
        let (idp, vault) = start_vault(Mode::Error(idp_status, body), "").await;
        let err = vault.token_for(&jane(), "servicenow", &scopes(&["api://sn/.default"])).await.unwrap_err();
        assert_eq!((err.status(), err.code(), err.www_authenticate()), (status, code, www.clone()), "{body}");
        // 4xx answers are not retried.
        assert_eq!(idp.calls.load(Ordering::SeqCst), 1, "{body}");
        // Nothing secret or free-text in the error.
        for text in [err.to_string(), format!("{err:?}")] {
            for forbidden in [
                TOKEN_A,
                CLIENT_SECRET,
                "error_description",
                "jane@contoso",
                "Invalid client secret",
                "<html>",
            ] {
                assert!(!text.contains(forbidden), "{text} contains {forbidden}");
            }
        }
        // Errors are not cached: the next call asks again.
        let _ = vault.token_for(&jane(), "servicenow", &scopes(&["api://sn/.default"])).await;
        assert_eq!(idp.calls.load(Ordering::SeqCst), 2, "{body}");
    }
    // The AADSTS code and trace id survive for the operator.
    let (_, vault) = start_vault(Mode::Error(400, E500133), "").await;
    let err = vault.token_for(&jane(), "servicenow", &scopes(&["x"])).await.unwrap_err();
    assert!(err.to_string().contains("AADSTS500133"), "{err}");
    assert!(err.to_string().contains("0c1f7a3b-1111-2222-3333-444455556666"), "{err}");
    let VaultError::CallerTokenRejected { idp, .. } = err else { panic!() };
    assert_eq!(idp.error, "invalid_grant");
}

#[tokio::test]
async fn transient_failures_are_retried_a_bounded_number_of_times() {
    let (idp, vault) = start_vault(Mode::FailFirst(2), "idp_attempts = 3").await;
    let t = vault.token_for(&jane(), "servicenow", &scopes(&["a"])).await.unwrap();
    assert_eq!(t.token.expose(), "token-b-3");
    assert_eq!(idp.calls.load(Ordering::SeqCst), 3);

    let (idp, vault) = start_vault(Mode::FailFirst(usize::MAX), "idp_attempts = 3").await;
    let err = vault.token_for(&jane(), "servicenow", &scopes(&["a"])).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (503, "credential_provider_unavailable"));
    assert_eq!(idp.calls.load(Ordering::SeqCst), 3);

    let (idp, vault) = start_vault(
        Mode::Error(500, r#"{"error":"server_error","error_codes":[90000]}"#),
        "idp_attempts = 2",
    )
    .await;
    let err = vault.token_for(&jane(), "servicenow", &scopes(&["a"])).await.unwrap_err();
    assert_eq!(err.status(), 503);
    assert_eq!(idp.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn idp_timeout_is_a_503_after_bounded_attempts() {
    let (idp, vault) = start_vault(Mode::Hang, "idp_attempts = 2\nidp_timeout_ms = 150").await;
    let err = vault.token_for(&jane(), "servicenow", &scopes(&["a"])).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (503, "credential_provider_unavailable"));
    let VaultError::Unavailable { attempts, cause, .. } = &err else { panic!("{err:?}") };
    assert_eq!((*attempts, cause.as_str()), (2, "timeout"));
    assert_eq!(idp.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn app_only_callers_and_unknown_providers_are_refused_without_an_idp_call() {
    let (idp, vault) = start_vault(Mode::Ok { expires_in: 3600 }, "").await;
    let app = VerifiedCallerBuilder::new("oid-app").token("app-token").build();
    let err = vault.token_for(&app, "servicenow", &scopes(&["a"])).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (403, "user_token_required"));
    let err = vault.token_for(&jane(), "nope", &scopes(&["a"])).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (502, "credential_provider_misconfigured"));
    assert_eq!(idp.calls.load(Ordering::SeqCst), 0);
    assert!(vault.has_provider("servicenow") && !vault.has_provider("nope"));
    assert_eq!(vault.client_secrets().map(|s| s.expose().to_owned()).collect::<Vec<_>>(), [CLIENT_SECRET; 3]);
    // Debug of the vault shows no secret.
    assert!(!format!("{vault:?}").contains(CLIENT_SECRET));
}

#[test]
fn config_resolves_secret_references_and_rejects_mistakes() {
    let file = secret_file();
    let parse = |src: &str| toml::from_str::<VaultConfig>(src);
    let ok = parse(&format!(
        "[providers.sn]\nkind = \"entra_obo\"\ntoken_endpoint = \"https://login.microsoftonline.com/t/oauth2/v2.0/token\"\nclient_id = \"c\"\nclient_secret = {{ file = \"{}\" }}",
        file.display()
    ))
    .unwrap()
    .validate()
    .unwrap();
    assert_eq!(ok.provider_names().collect::<Vec<_>>(), ["sn"]);
    // Debug never shows the resolved secret.
    assert!(!format!("{ok:?}").contains(CLIENT_SECRET));

    let invalid = |src: String| parse(&src).unwrap().validate().unwrap_err();
    let base = |endpoint: &str, secret: &str| {
        format!(
            "[providers.sn]\nkind = \"entra_obo\"\ntoken_endpoint = \"{endpoint}\"\nclient_id = \"c\"\nclient_secret = {secret}"
        )
    };
    let file_ref = format!("{{ file = \"{}\" }}", file.display());
    let e = invalid(base("http://login.example/token", &file_ref));
    assert_eq!(e.key, "providers.sn.token_endpoint");
    let e = invalid(base("https://user:pw@login.example/token", &file_ref));
    assert_eq!(e.key, "providers.sn.token_endpoint");
    let e = invalid(base("https://login.example/token", "{ env = \"DELEGATE_VAULT_TEST_SURELY_UNSET\" }"));
    assert_eq!(e.key, "providers.sn.client_secret.env");
    assert!(e.message.contains("DELEGATE_VAULT_TEST_SURELY_UNSET"));
    let e = invalid(base("https://login.example/token", "{ file = \"/nonexistent/secret\" }"));
    assert_eq!(e.key, "providers.sn.client_secret.file");
    let e = invalid(base(
        "https://login.example/token",
        &format!("{{ env = \"X\", file = \"{}\" }}", file.display()),
    ));
    assert_eq!(e.key, "providers.sn.client_secret");
    let e = invalid(base("https://login.example/token", "{}"));
    assert_eq!(e.key, "providers.sn.client_secret");
    // Loopback may be plain http (devstack, tests).
    parse(&base("http://127.0.0.1:9/token", &file_ref)).unwrap().validate().unwrap();
    // An environment variable that exists resolves (PATH is always set for cargo test).
    parse(&base("https://login.example/token", "{ env = \"PATH\" }")).unwrap().validate().unwrap();

    // Unknown keys, inline secrets and unknown kinds fail at parse time.
    assert!(parse("[providers.sn]\nkind = \"entra_obo\"\ntoken_endpoint = \"https://x/\"\nclient_id = \"c\"\nclient_secret = \"inline!\"").is_err());
    assert!(parse(&format!("{}\ntenant = \"t\"", base("https://x/", &file_ref))).is_err());
    assert!(parse("[providers.sn]\nkind = \"password\"").is_err());
    assert!(parse("[cache]\ncapacty = 1").is_err());
    assert!(parse(&base("https://x/", "{ env = \"A\", value = \"inline\" }")).is_err());
}

#[tokio::test]
async fn memory_cache_is_bounded_and_evicts_the_soonest_expiring() {
    let cache = MemoryCache::new(2);
    let key = |s: &str| CacheKey::new("iss", Some("t"), s, "p", &scopes(&["a"]));
    let token = |fresh_until: u64| CachedToken {
        token: delegate_secret::Secret::new("t"),
        expires_at: fresh_until,
        fresh_until,
    };
    cache.put(key("a"), token(500), 100).await;
    cache.put(key("b"), token(300), 100).await;
    cache.put(key("c"), token(400), 100).await;
    assert_eq!(cache.len(), 2);
    assert!(cache.get(&key("b"), 100).await.is_none(), "soonest-expiring entry evicted");
    assert!(cache.get(&key("a"), 100).await.is_some());
    assert!(cache.get(&key("c"), 100).await.is_some());
    // Expired entries go first, and are never served.
    assert!(cache.get(&key("c"), 400).await.is_none());
    cache.put(key("d"), token(900), 450).await;
    assert!(cache.get(&key("a"), 450).await.is_some());
    assert!(cache.get(&key("d"), 450).await.is_some());
    cache.evict(&key("a")).await;
    assert!(cache.get(&key("a"), 450).await.is_none());
}

#[tokio::test]
async fn certificate_credential_sends_a_signed_client_assertion() {
    use base64::Engine;
    use sha2::Digest;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["delegate".to_owned()]).unwrap().self_signed(&key).unwrap();
    let dir = std::env::temp_dir().join(format!("vault-cert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();

    let (idp, url) = start_idp(Mode::Ok { expires_in: 3600 }).await;
    let config: VaultConfig = toml::from_str(&format!(
        "[providers.cert]\nkind = \"entra_obo\"\ntoken_endpoint = \"{url}\"\nclient_id = \"delegate-client\"\nclient_certificate = {{ private_key = {{ file = \"{}\" }}, certificate = \"{}\" }}",
        dir.join("key.pem").display(),
        dir.join("cert.pem").display()
    ))
    .unwrap();
    let settings = config.validate().unwrap();
    assert!(!format!("{settings:?}").contains("PRIVATE KEY"));
    let client = delegate_outbound::build_client(&delegate_outbound::OutboundConfig::default()).unwrap();
    let vault = TokenVault::new(settings, client);
    assert_eq!(vault.client_secrets().count(), 0);
    let s = scopes(&["api://sn/.default"]);
    vault.token_for(&jane(), "cert", &s).await.unwrap();
    vault.evict(&jane(), "cert", &s).await;
    vault.token_for(&jane(), "cert", &s).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let forms = idp.forms.lock().unwrap().clone();
    let mut jtis = Vec::new();
    for form in &forms {
        assert!(!form.contains_key("client_secret"));
        assert_eq!(form["client_assertion_type"], "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
        assert_eq!(form["assertion"], TOKEN_A);
        let jwt = &form["client_assertion"];
        let header = jsonwebtoken::decode_header(jwt).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
        let thumbprint =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(cert.der()));
        assert_eq!(header.x5t_s256.as_deref(), Some(thumbprint.as_str()));
        // Signed by the certificate's key, for this token endpoint, by this client.
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&[url.as_str()]);
        validation.set_issuer(&["delegate-client"]);
        let decoding = jsonwebtoken::DecodingKey::from_ec_pem(key.public_key_pem().as_bytes()).unwrap();
        let claims = jsonwebtoken::decode::<serde_json::Value>(jwt, &decoding, &validation).unwrap().claims;
        assert_eq!(claims["sub"], "delegate-client");
        assert_eq!(claims["exp"].as_u64().unwrap() - claims["nbf"].as_u64().unwrap(), 300);
        jtis.push(claims["jti"].as_str().unwrap().to_owned());
    }
    assert_eq!(forms.len(), 2);
    assert_ne!(jtis[0], jtis[1], "each assertion is single-use");

    // Both credentials, or a key that is not a key, are configuration errors.
    let both: VaultConfig = toml::from_str(&format!(
        "[providers.x]\nkind = \"entra_obo\"\ntoken_endpoint = \"{url}\"\nclient_id = \"c\"\nclient_secret = {{ file = \"{}\" }}\nclient_certificate = {{ private_key = {{ file = \"{}\" }}, certificate = \"/nonexistent\" }}",
        secret_file().display(),
        secret_file().display()
    ))
    .unwrap();
    assert_eq!(both.validate().unwrap_err().key, "providers.x");
    let not_a_key: VaultConfig = toml::from_str(&format!(
        "[providers.x]\nkind = \"entra_obo\"\ntoken_endpoint = \"{url}\"\nclient_id = \"c\"\nclient_certificate = {{ private_key = {{ file = \"{}\" }}, certificate = \"/nonexistent\" }}",
        secret_file().display()
    ))
    .unwrap();
    let e = not_a_key.validate().unwrap_err();
    assert_eq!(e.key, "providers.x.client_certificate.private_key");
    assert!(!e.to_string().contains(CLIENT_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_and_failed_flights_do_not_linger() {
    let gate = Arc::new(Notify::new());
    let (idp, vault) = start_vault(Mode::Gated(gate.clone()), "").await;
    let vault = Arc::new(vault);
    let s = scopes(&["a"]);
    // The only waiter is cancelled while the IdP call is in flight.
    let task = tokio::spawn({
        let (vault, s) = (vault.clone(), s.clone());
        async move { vault.token_for(&jane(), "servicenow", &s).await.map(drop) }
    });
    wait_for_calls(&idp, 1).await;
    assert_eq!(vault.flights_in_progress(), 1);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(vault.flights_in_progress(), 0, "abandoned flight removed");
    // The next request starts a new flight and completes.
    *idp.mode.lock().unwrap() = Mode::Ok { expires_in: 3600 };
    let t = vault.token_for(&jane(), "servicenow", &s).await.unwrap();
    assert_eq!((t.cache, idp.calls.load(Ordering::SeqCst)), (CacheStatus::Miss, 2));
    assert_eq!(vault.flights_in_progress(), 0);
    // A failed flight is gone too, so the next request retries.
    *idp.mode.lock().unwrap() = Mode::Error(400, E65001);
    vault.token_for(&fred(), "servicenow", &s).await.unwrap_err();
    assert_eq!(vault.flights_in_progress(), 0);
    gate.notify_waiters();
}

/// A token-exchange provider to another agent host: actor token, depth limit 2.
fn hop_vault(url: &str) -> TokenVault {
    let file = secret_file();
    let src = format!(
        r#"
[providers.agent-b]
kind = "token_exchange"
token_endpoint = "{url}"
client_id = "delegate-client"
client_secret = {{ file = "{file}" }}
actor_token_scopes = ["api://delegate-client/.default"]
max_chain_depth = 2

[cache]
retry_backoff_ms = 1
"#,
        file = file.display(),
    );
    let config: VaultConfig = toml::from_str(&src).unwrap();
    let client = delegate_outbound::build_client(&delegate_outbound::OutboundConfig::default()).unwrap();
    TokenVault::new(config.validate().unwrap(), client)
}

#[tokio::test]
async fn token_exchange_sends_the_hosts_own_actor_token_and_refuses_too_deep_chains() {
    let (idp, url) = start_idp(Mode::Ok { expires_in: 3600 }).await;
    let vault = hop_vault(&url);
    let b_scope = scopes(&["api://agent-b/access_as_user"]);
    vault.token_for(&jane(), "agent-b", &b_scope).await.unwrap();
    {
        let forms = idp.forms.lock().unwrap();
        assert_eq!(forms.len(), 2, "one client-credentials request for the actor token, one exchange");
        assert_eq!(forms[0]["grant_type"], "client_credentials");
        assert_eq!(forms[0]["scope"], "api://delegate-client/.default");
        assert!(!forms[0].values().any(|v| v.contains("token-a")), "the actor token is the host's own");
        assert_eq!(forms[1]["grant_type"], "urn:ietf:params:oauth:grant-type:token-exchange");
        assert_eq!(forms[1]["subject_token"], TOKEN_A);
        assert_eq!(forms[1]["actor_token"], "token-b-1", "the client-credentials token just obtained");
        assert_eq!(forms[1]["actor_token_type"], "urn:ietf:params:oauth:token-type:access_token");
    }
    // Another user: the actor token comes from the cache, only the exchange is new.
    vault.token_for(&fred(), "agent-b", &b_scope).await.unwrap();
    {
        let forms = idp.forms.lock().unwrap();
        assert_eq!(forms.len(), 3);
        assert_eq!(forms[2]["actor_token"], "token-b-1");
    }

    // A caller one agent deep: this hop makes it 2, the limit: allowed.
    let one = VerifiedCallerBuilder::new("oid-jane")
        .tenant("tid-1")
        .scopes(&["access_as_user"])
        .token("token-a-via-one")
        .actor("agent-x", Some("client-x"))
        .build();
    vault.token_for(&one, "agent-b", &b_scope).await.unwrap();
    // Two deep: this hop would make 3, refused before any IdP call, as 403 with its own code.
    let two = VerifiedCallerBuilder::new("oid-jane")
        .tenant("tid-1")
        .scopes(&["access_as_user"])
        .token("token-a-via-two")
        .actor("agent-y", None)
        .actor("agent-x", None)
        .build();
    let calls = idp.calls.load(Ordering::SeqCst);
    let err = vault.token_for(&two, "agent-b", &b_scope).await.unwrap_err();
    assert_eq!(err, VaultError::ChainTooDeep { provider: "agent-b".into(), depth: 3, max: 2 });
    assert_eq!((err.status(), err.code()), (403, "chain_depth_exceeded"));
    assert_eq!(idp.calls.load(Ordering::SeqCst), calls, "refused without asking the IdP");
}

/// An On-Behalf-Of provider to another agent host (limit 2) and one to an API (unmarked).
fn obo_hop_vault(url: &str, hop_counter: bool) -> TokenVault {
    let file = secret_file();
    let src = format!(
        r#"
[providers.agent-b]
kind = "entra_obo"
token_endpoint = "{url}"
client_id = "delegate-client"
client_secret = {{ file = "{file}" }}
max_chain_depth = 2

[providers.servicenow]
kind = "entra_obo"
token_endpoint = "{url}"
client_id = "delegate-client"
client_secret = {{ file = "{file}" }}

[cache]
retry_backoff_ms = 1
"#,
        file = file.display(),
    );
    let config: VaultConfig = toml::from_str(&src).unwrap();
    let settings = config.validate().unwrap();
    assert_eq!(settings.obo_providers_marking_hops().collect::<Vec<_>>(), ["agent-b"]);
    let settings = if hop_counter { settings.with_hop_counter() } else { settings };
    let client = delegate_outbound::build_client(&delegate_outbound::OutboundConfig::default()).unwrap();
    TokenVault::new(settings, client)
}

fn caller_at(token: &str, hop_depth: usize, actors: usize) -> VerifiedCaller {
    let mut b = VerifiedCallerBuilder::new("oid-jane")
        .tenant("tid-1")
        .scopes(&["access_as_user"])
        .token(token)
        .hop_depth(hop_depth);
    for i in 0..actors {
        b = b.actor(&format!("agent-{i}"), None);
    }
    b.build()
}

#[tokio::test]
async fn an_on_behalf_of_hop_is_limited_by_the_callers_effective_chain_depth() {
    let (idp, url) = start_idp(Mode::Ok { expires_in: 3600 }).await;
    let vault = obo_hop_vault(&url, true);
    assert!(vault.marks_hop("agent-b"));
    assert!(!vault.marks_hop("servicenow"));
    assert!(!vault.marks_hop("unknown"));
    let b_scope = scopes(&["api://agent-b/access_as_user"]);

    // One agent deep by the hop counter: this hop makes 2, the limit: allowed.
    vault.token_for(&caller_at("token-a-hop-1", 1, 0), "agent-b", &b_scope).await.unwrap();
    let calls = idp.calls.load(Ordering::SeqCst);
    // Two deep, by the hop counter or by `act` (the larger counts): refused before the IdP.
    for caller in [caller_at("token-a-hop-2", 2, 0), caller_at("token-a-act-2", 0, 2), caller_at("t", 2, 1)] {
        let err = vault.token_for(&caller, "agent-b", &b_scope).await.unwrap_err();
        assert_eq!(err, VaultError::ChainTooDeep { provider: "agent-b".into(), depth: 3, max: 2 });
        assert_eq!((err.status(), err.code()), (403, "chain_depth_exceeded"));
    }
    assert_eq!(idp.calls.load(Ordering::SeqCst), calls, "refused without asking the IdP");
    // An unmarked provider (an API, not an agent host) does not count.
    vault.token_for(&caller_at("token-a-hop-9", 9, 0), "servicenow", &b_scope).await.unwrap();

    // Without the hop counter this host is not counted by the next one (OBO records no
    // chain): only the caller's own depth is compared.
    let (_idp, url) = start_idp(Mode::Ok { expires_in: 3600 }).await;
    let vault = obo_hop_vault(&url, false);
    vault.token_for(&caller_at("token-a-hop-2", 2, 0), "agent-b", &b_scope).await.unwrap();
    let err = vault.token_for(&caller_at("token-a-hop-3", 3, 0), "agent-b", &b_scope).await.unwrap_err();
    assert_eq!(err, VaultError::ChainTooDeep { provider: "agent-b".into(), depth: 3, max: 2 });
}

#[test]
fn empty_actor_token_scopes_are_refused() {
    let src = format!(
        "[providers.b]\nkind = \"token_exchange\"\ntoken_endpoint = \"http://127.0.0.1:1/t\"\nclient_id = \"c\"\nclient_secret = {{ file = \"{}\" }}\nactor_token_scopes = []\n",
        secret_file().display()
    );
    let config: VaultConfig = toml::from_str(&src).unwrap();
    assert_eq!(config.validate().unwrap_err().key, "providers.b.actor_token_scopes");
}
