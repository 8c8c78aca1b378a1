#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity,
    clippy::semicolon_if_nothing_returned
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use delegate_devstack_idp::defaults::*;
use delegate_devstack_idp::{
    CorpusTarget, Expected, IdpConfig, IdpServer, Outage, TokenSpec, TokenVersion, attack_corpus,
};
use http::{HeaderMap, HeaderValue};

use crate::{AuthConfig, AuthError, AuthFailure, Authorizer};

struct TempDir(PathBuf);
impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("delegate-auth-{}-{}", std::process::id(), uuid_like()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
fn uuid_like() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    u128::from(N.fetch_add(1, Ordering::Relaxed))
}

struct Fixture {
    server: IdpServer,
    _dir: TempDir,
    client: reqwest::Client,
}

impl Fixture {
    async fn start() -> Fixture {
        Self::start_with(IdpConfig::default()).await
    }

    async fn start_with(config: IdpConfig) -> Fixture {
        let server = IdpServer::start(config).await.unwrap();
        let dir = TempDir::new();
        let ca = dir.0.join("ca.pem");
        std::fs::write(&ca, server.ca_pem()).unwrap();
        let client = delegate_outbound::build_client(&delegate_outbound::OutboundConfig {
            extra_ca_pem_files: vec![ca],
            ..Default::default()
        })
        .unwrap();
        Fixture { server, _dir: dir, client }
    }

    fn idp(&self) -> &delegate_devstack_idp::Idp {
        self.server.idp()
    }

    /// The article's authorizer: v2 discovery of the home tenant, Token A for the agent app.
    fn config(&self) -> AuthConfig {
        let mut c = AuthConfig::new(&self.idp().discovery_url(TENANT_ID), &[AGENT_APP_ID], &[AGENT_APP_ID]);
        c.required_scopes = vec![AGENT_SCOPE.into()];
        c
    }

    fn authorizer(&self, config: AuthConfig) -> Authorizer {
        Authorizer::new(config.validate().unwrap(), self.client.clone())
    }

    fn jane_token(&self) -> String {
        self.idp()
            .mint_access_token(JANE, AGENT_APP_ID, AGENT_APP_ID, &[AGENT_SCOPE], Duration::from_secs(3600))
            .unwrap()
            .expose()
            .to_owned()
    }
}

fn bearer(token: &str) -> HeaderMap {
    headers(&[format!("Bearer {token}")])
}

fn headers(values: &[String]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(http::header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn outcome(result: &Result<crate::VerifiedCaller, AuthError>) -> Expected {
    match result {
        Ok(_) => Expected::Accepted,
        Err(e) => match e.status_class() {
            AuthFailure::Unauthenticated => Expected::Unauthenticated,
            AuthFailure::Forbidden => Expected::Forbidden,
            AuthFailure::Unavailable => panic!("keys unavailable: {e}"),
        },
    }
}

#[tokio::test]
async fn attack_corpus_gets_exactly_the_expected_outcomes() {
    let f = Fixture::start().await;
    let authorizer = f.authorizer(f.config());
    authorizer.warm_up().await.unwrap();
    let corpus = attack_corpus(f.idp(), &CorpusTarget::default()).unwrap();
    assert!(corpus.len() >= 35);
    let mut failures = Vec::new();
    for case in &corpus {
        let started = Instant::now();
        let result = authorizer.authorize(&headers(&case.authorization)).await;
        let got = outcome(&result);
        if got != case.expected {
            failures.push(format!(
                "{}: expected {:?}, got {got:?} ({:?})",
                case.name,
                case.expected,
                result.as_ref().err().map(AuthError::code)
            ));
        }
        assert!(started.elapsed() < Duration::from_secs(6), "{} hung", case.name);
        if let Err(e) = &result {
            let www = e.www_authenticate().unwrap();
            match case.expected {
                Expected::Unauthenticated => assert_eq!(www, r#"Bearer error="invalid_token""#),
                Expected::Forbidden => assert_eq!(www, r#"Bearer error="insufficient_scope""#),
                Expected::Accepted => {}
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Three unknown-kid cases, one rate-limited refresh (plus the warm-up fetch).
    assert_eq!(f.idp().counters().jwks, 2);
}

#[tokio::test]
async fn verified_caller_carries_claims_and_the_token_as_a_secret() {
    let f = Fixture::start().await;
    let authorizer = f.authorizer(f.config());
    let token = f.jane_token();
    let caller = authorizer.authorize(&bearer(&token)).await.unwrap();
    assert_eq!(caller.subject(), JANE_OID);
    assert_eq!(caller.username(), Some(JANE));
    assert_eq!(caller.display_name(), Some("Jane Smith"));
    assert_eq!(caller.tenant(), Some(TENANT_ID));
    assert_eq!(caller.client_id(), AGENT_APP_ID);
    assert_eq!(caller.scopes(), [AGENT_SCOPE.to_owned()]);
    assert_eq!(caller.issuer(), f.idp().issuer(TENANT_ID));
    assert!(caller.expires_at() > 0);
    assert_eq!(caller.token().expose(), token);
    assert!(!format!("{caller:?}").contains(&token[..20]));
    // Lazy start: the first request did discovery + JWKS, later ones use the cache.
    authorizer.authorize(&bearer(&token)).await.unwrap();
    let counters = f.idp().counters();
    assert_eq!((counters.discovery, counters.jwks), (1, 1));
}

#[tokio::test]
async fn rotated_key_is_accepted_after_one_single_flight_refresh() {
    let f = Fixture::start().await;
    let authorizer = f.authorizer(f.config());
    authorizer.authorize(&bearer(&f.jane_token())).await.unwrap();
    assert_eq!(f.idp().counters().jwks, 1);

    let old = f.idp().current_kid();
    let new = f.idp().rotate_add_key().unwrap();
    let token = f.jane_token();
    assert_eq!(jsonwebtoken::decode_header(&token).unwrap().kid.unwrap(), new);
    // Many concurrent requests with the new kid: exactly one JWKS fetch.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let a = authorizer.clone();
        let t = token.clone();
        tasks.push(tokio::spawn(async move { a.authorize(&bearer(&t)).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(f.idp().counters().jwks, 2);

    // The old key is retired at the IdP but still cached: tokens signed with it verify until
    // the next refresh (Entra keeps old keys published for a while for this reason).
    assert!(f.idp().retire_key(&old));
    // A second unknown kid within the rate-limit interval does not fetch again.
    let ghost = f.idp().rotate_add_key().unwrap();
    let ghost_token = f.jane_token();
    f.idp().retire_key(&ghost);
    let err = authorizer.authorize(&bearer(&ghost_token)).await.unwrap_err();
    assert_eq!(err, AuthError::UnknownKey);
    assert_eq!(f.idp().counters().jwks, 2);
}

#[tokio::test]
async fn idp_down_cached_keys_still_verify_and_unknown_kid_fails_within_the_timeout() {
    let f = Fixture::start().await;
    let mut config = f.config();
    config.fetch_timeout_ms = 500;
    let authorizer = f.authorizer(config);
    let token = f.jane_token();
    authorizer.authorize(&bearer(&token)).await.unwrap();

    f.idp().set_outage(Outage::Status(503));
    authorizer.authorize(&bearer(&token)).await.unwrap();
    // A refresh that fails keeps the last good key set.
    assert!(authorizer.warm_up().await.is_err());
    authorizer.authorize(&bearer(&token)).await.unwrap();

    f.idp().set_outage(Outage::Hang);
    f.idp().rotate_add_key().unwrap();
    let unknown = f.jane_token();
    let started = Instant::now();
    let err = authorizer.authorize(&bearer(&unknown)).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.status_class(), AuthFailure::Unauthenticated);
    assert_eq!(err, AuthError::UnknownKey);
    assert!(elapsed >= Duration::from_millis(450) && elapsed < Duration::from_millis(2500), "{elapsed:?}");
    // Cached keys still work while the IdP hangs.
    authorizer.authorize(&bearer(&token)).await.unwrap();
}

#[tokio::test]
async fn server_starts_while_the_idp_is_down_and_recovers() {
    let f = Fixture::start().await;
    f.idp().set_outage(Outage::Status(503));
    let mut config = f.config();
    config.fetch_timeout_ms = 500;
    let authorizer = f.authorizer(config);
    let token = f.jane_token();
    let err = authorizer.authorize(&bearer(&token)).await.unwrap_err();
    assert_eq!(err, AuthError::KeysUnavailable);
    assert_eq!(err.status_class(), AuthFailure::Unavailable);
    assert!(!authorizer.is_ready());
    // Attempts are spaced: an immediate retry does not call the IdP again.
    let before = f.idp().counters().discovery;
    assert_eq!(authorizer.authorize(&bearer(&token)).await.unwrap_err(), AuthError::KeysUnavailable);
    assert_eq!(f.idp().counters().discovery, before);

    f.idp().set_outage(Outage::None);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match authorizer.authorize(&bearer(&token)).await {
            Ok(_) => break,
            Err(AuthError::KeysUnavailable) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(authorizer.is_ready());
}

#[tokio::test]
async fn background_refresh_follows_cache_control_and_picks_up_new_keys() {
    let f = Fixture::start().await;
    f.idp().set_jwks_max_age(1);
    let mut config = f.config();
    config.jwks_refresh_min_seconds = 1;
    let authorizer = f.authorizer(config);
    let task = authorizer.spawn_refresh();
    let wait_for_jwks = |n: u64| {
        let idp = f.idp().clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            while idp.counters().jwks < n {
                assert!(Instant::now() < deadline, "no background refresh");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for_jwks(1).await;
    assert!(authorizer.is_ready());
    let new = f.idp().rotate_add_key().unwrap();
    let seen = f.idp().counters().jwks;
    wait_for_jwks(seen + 1).await;
    // The new key arrived through the background refresh: with the IdP now failing, an
    // unknown-kid fetch could not have provided it.
    f.idp().set_outage(Outage::Status(500));
    let token = f.jane_token();
    assert_eq!(jsonwebtoken::decode_header(&token).unwrap().kid.unwrap(), new);
    authorizer.authorize(&bearer(&token)).await.unwrap();
    drop(authorizer);
    // The task ends after the last authorizer clone is gone (at its next wake-up).
    tokio::time::timeout(Duration::from_secs(15), task).await.unwrap().unwrap();
}

#[tokio::test]
async fn v1_and_v2_tokens_are_both_verified_when_configured() {
    let mut dir = IdpConfig::default();
    // The agent API accepts v1 tokens: aud is the App ID URI, iss sts.windows.net.
    dir.apps[0].access_token_version = 1;
    let f = Fixture::start_with(dir).await;
    let idp = f.idp();
    let v1 = idp
        .mint_access_token(
            JANE,
            AGENT_APP_ID,
            &format!("api://{AGENT_APP_ID}"),
            &[AGENT_SCOPE],
            Duration::from_secs(600),
        )
        .unwrap();
    let v2_spec = TokenSpec {
        tenant: TENANT_ID.into(),
        user: Some(JANE.into()),
        client_id: AGENT_APP_ID.into(),
        audience: AGENT_APP_ID.into(),
        scopes: vec![AGENT_SCOPE.into()],
        roles: vec![],
        version: TokenVersion::V2,
        lifetime: Duration::from_secs(600),
        client_authenticated: true,
    };
    let v2 = idp.sign_claims(&idp.access_token_claims(&v2_spec).unwrap()).unwrap();

    let mut config = f.config();
    config.allowed_audiences = vec![AGENT_APP_ID.into(), format!("api://{AGENT_APP_ID}")];
    let v2_only = f.authorizer(config.clone());
    assert_eq!(v2_only.authorize(&bearer(v1.expose())).await.unwrap_err(), AuthError::Issuer);
    v2_only.authorize(&bearer(v2.expose())).await.unwrap();

    config.additional_discovery_urls = vec![idp.discovery_url_v1(TENANT_ID)];
    let both = f.authorizer(config);
    let caller = both.authorize(&bearer(v1.expose())).await.unwrap();
    assert_eq!(caller.issuer(), format!("https://sts.windows.net/{TENANT_ID}/"));
    assert_eq!(caller.username(), Some(JANE)); // from upn
    assert_eq!(caller.client_id(), AGENT_APP_ID); // from appid
    both.authorize(&bearer(v2.expose())).await.unwrap();
}

#[tokio::test]
async fn multi_tenant_issuer_accepts_only_allowed_tenants() {
    let f = Fixture::start().await;
    let idp = f.idp();
    let token_for = |user: &str| {
        idp.mint_access_token(user, AGENT_APP_ID, AGENT_APP_ID, &[AGENT_SCOPE], Duration::from_secs(600))
            .unwrap()
    };
    let mut config = f.config();
    config.discovery_url = idp.discovery_url("organizations");
    assert_eq!(config.clone().validate().unwrap_err().key, "allowed_tenants");
    config.allowed_tenants = vec![TENANT_ID.into()];
    let authorizer = f.authorizer(config.clone());
    let home = authorizer.authorize(&bearer(token_for(JANE).expose())).await.unwrap();
    assert_eq!(home.tenant(), Some(TENANT_ID));
    let other = token_for(OTHER_TENANT_USER);
    assert_eq!(authorizer.authorize(&bearer(other.expose())).await.unwrap_err(), AuthError::Tenant);
    config.allowed_tenants.push(OTHER_TENANT_ID.into());
    let both = f.authorizer(config);
    let caller = both.authorize(&bearer(other.expose())).await.unwrap();
    assert_eq!(caller.tenant(), Some(OTHER_TENANT_ID));
    assert_eq!(caller.issuer(), idp.issuer(OTHER_TENANT_ID));
}

#[tokio::test]
async fn claim_rules_and_role_scopes() {
    let f = Fixture::start().await;
    let mut config = f.config();
    config.claim_rules = vec![crate::ClaimRule {
        claim: "tid".into(),
        equals: Some(TENANT_ID.into()),
        contains: None,
        contains_any: None,
    }];
    f.authorizer(config.clone()).authorize(&bearer(&f.jane_token())).await.unwrap();
    config.claim_rules.push(crate::ClaimRule {
        claim: "scp".into(),
        equals: None,
        contains: None,
        contains_any: Some(vec!["Admin.All".into(), "Other".into()]),
    });
    let err = f.authorizer(config).authorize(&bearer(&f.jane_token())).await.unwrap_err();
    assert_eq!(err, AuthError::ClaimRule("scp".into()));
    assert_eq!(err.status_class(), AuthFailure::Forbidden);

    // App-only token: the required "scope" can be an app role.
    let mut config = f.config();
    config.required_scopes = vec!["Agent.Invoke".into()];
    let app = f
        .idp()
        .mint_app_token(AGENT_APP_ID, AGENT_APP_ID, &["Agent.Invoke"], Duration::from_secs(60))
        .unwrap();
    let caller = f.authorizer(config).authorize(&bearer(app.expose())).await.unwrap();
    assert_eq!(caller.roles(), ["Agent.Invoke".to_owned()]);
    assert!(caller.username().is_none());
}

#[test]
fn invalid_settings_name_their_key() {
    let ok = || {
        AuthConfig::new(
            "https://login.example/t/v2.0/.well-known/openid-configuration",
            &["aud"],
            &["client"],
        )
    };
    ok().validate().unwrap();
    let cases: Vec<(Box<dyn Fn(&mut AuthConfig)>, &str)> = vec![
        (
            Box::new(|c| c.discovery_url = "http://login.example/.well-known/openid-configuration".into()),
            "discovery_url",
        ),
        (Box::new(|c| c.discovery_url = "https://login.example/keys".into()), "discovery_url"),
        (
            Box::new(|c| {
                c.discovery_url = "https://user:pw@login.example/.well-known/openid-configuration".into()
            }),
            "discovery_url",
        ),
        (Box::new(|c| c.additional_discovery_urls = vec!["nope".into()]), "additional_discovery_urls[0]"),
        (Box::new(|c| c.allowed_audiences.clear()), "allowed_audiences"),
        (Box::new(|c| c.allowed_audiences.push(" ".into())), "allowed_audiences[1]"),
        (Box::new(|c| c.allowed_clients.clear()), "allowed_clients"),
        (Box::new(|c| c.required_scopes = vec!["a b".into()]), "required_scopes[0]"),
        (Box::new(|c| c.allowed_tenants = vec!["contoso".into()]), "allowed_tenants[0]"),
        (Box::new(|c| c.leeway_seconds = 301), "leeway_seconds"),
        (Box::new(|c| c.algorithms = vec![]), "algorithms"),
        (Box::new(|c| c.algorithms = vec!["HS256".into()]), "algorithms[0]"),
        (Box::new(|c| c.algorithms = vec!["RS256".into(), "none".into()]), "algorithms[1]"),
        (Box::new(|c| c.algorithms = vec!["EdDSA".into()]), "algorithms[0]"),
        (
            Box::new(|c| {
                c.claim_rules = vec![crate::ClaimRule {
                    claim: "preferred_username".into(),
                    equals: Some("x".into()),
                    contains: None,
                    contains_any: None,
                }]
            }),
            "claim_rules[0].claim",
        ),
        (
            Box::new(|c| {
                c.claim_rules = vec![crate::ClaimRule {
                    claim: "tid".into(),
                    equals: Some("x".into()),
                    contains: Some("y".into()),
                    contains_any: None,
                }]
            }),
            "claim_rules[0].claim",
        ),
        (Box::new(|c| c.jwks_refresh_min_seconds = 0), "jwks_refresh_min_seconds"),
        (Box::new(|c| c.jwks_refresh_max_seconds = 10), "jwks_refresh_max_seconds"),
        (Box::new(|c| c.fetch_timeout_ms = 0), "fetch_timeout_ms"),
        (Box::new(|c| c.max_token_bytes = 10 * 1024 * 1024), "max_token_bytes"),
        (
            Box::new(|c| {
                c.discovery_url = "https://login.example/common/v2.0/.well-known/openid-configuration".into()
            }),
            "allowed_tenants",
        ),
    ];
    for (edit, key) in cases {
        let mut c = ok();
        edit(&mut c);
        let err = c.validate().unwrap_err();
        assert_eq!(err.key, key, "{err}");
        assert!(err.to_string().starts_with(&format!("auth.{key}: ")));
    }
}

#[test]
fn toml_uses_snake_case_keys_and_rejects_unknown_ones() {
    let config: AuthConfig = toml::from_str(
        r#"
        discovery_url = "https://login.example/t/v2.0/.well-known/openid-configuration"
        allowed_audiences = ["a"]
        allowed_clients = ["c"]
        required_scopes = ["access_as_user"]
        leeway_seconds = 30
        algorithms = ["RS256", "PS256"]
        [[claim_rules]]
        claim = "tid"
        equals = "t"
        "#,
    )
    .unwrap();
    let settings = config.validate().unwrap();
    assert_eq!(settings.leeway, 30);
    assert_eq!(settings.algorithms.len(), 2);
    let typo = toml::from_str::<AuthConfig>(
        r#"
        discovery_url = "https://x/.well-known/openid-configuration"
        allowed_audience = ["a"]
        allowed_clients = ["c"]
        "#,
    );
    assert!(typo.unwrap_err().to_string().contains("allowed_audience"));
}

#[test]
fn jwks_parsing_keeps_only_safe_signature_keys() {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let big_n = b64(&[0xC5; 256]);
    let small_n = b64(&[0xC5; 128]);
    let jwks = serde_json::json!({"keys": [
        {"kty": "RSA", "kid": "good", "n": big_n, "e": "AQAB"},
        {"kty": "RSA", "kid": "small", "n": small_n, "e": "AQAB"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": big_n, "e": "AQAB"},
        {"kty": "oct", "kid": "hmac", "k": b64(b"secret")},
        {"kty": "RSA", "kid": "dup", "n": big_n, "e": "AQAB"},
        {"kty": "RSA", "kid": "dup", "n": big_n, "e": "AQAB"},
        {"kty": "RSA", "n": big_n, "e": "AQAB"},
        {"kty": "RSA", "kid": "hs-alg", "alg": "HS256", "n": big_n, "e": "AQAB"},
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32])},
    ]});
    let body = serde_json::to_vec(&jwks).unwrap();
    let keys = crate::keys::parse_jwks(&body, &[jsonwebtoken::Algorithm::RS256]).unwrap();
    let mut kids: Vec<_> = keys.keys().cloned().collect();
    kids.sort();
    // EC is dropped too: no configured algorithm can use it.
    assert_eq!(kids, ["good"]);
    let keys =
        crate::keys::parse_jwks(&body, &[jsonwebtoken::Algorithm::RS256, jsonwebtoken::Algorithm::ES256])
            .unwrap();
    assert!(keys.contains_key("ec"));
    assert!(!keys["good"].permits(jsonwebtoken::Algorithm::ES256));
    assert!(!keys["ec"].permits(jsonwebtoken::Algorithm::RS256));
    assert!(crate::keys::parse_jwks(br#"{"keys":[]}"#, &[jsonwebtoken::Algorithm::RS256]).is_err());
}

#[test]
fn cache_control_max_age() {
    use crate::keys::parse_max_age;
    assert_eq!(parse_max_age("max-age=86400, private"), Some(Duration::from_secs(86400)));
    assert_eq!(parse_max_age("private, Max-Age=5"), Some(Duration::from_secs(5)));
    assert_eq!(parse_max_age("no-store"), Some(Duration::ZERO));
    assert_eq!(parse_max_age("private"), None);
    assert_eq!(parse_max_age("max-age=abc"), None);
}

#[test]
fn public_messages_do_not_tell_which_check_failed() {
    let unauth = [
        AuthError::MissingToken,
        AuthError::Signature,
        AuthError::Expired,
        AuthError::Issuer,
        AuthError::UnknownKey,
        AuthError::HeaderParameter("jku"),
    ];
    for e in &unauth {
        assert_eq!(e.status_class(), AuthFailure::Unauthenticated);
        assert_eq!(e.public_message(), unauth[0].public_message());
    }
    assert_eq!(AuthError::Scope.public_message(), AuthError::Client.public_message());
    assert_eq!(AuthError::KeysUnavailable.www_authenticate(), None);
}

#[tokio::test]
async fn ps256_is_accepted_only_when_opted_in() {
    let f = Fixture::start().await;
    let idp = f.idp();
    let kid = idp.current_kid();
    let spec = TokenSpec {
        tenant: TENANT_ID.into(),
        user: Some(JANE.into()),
        client_id: AGENT_APP_ID.into(),
        audience: AGENT_APP_ID.into(),
        scopes: vec![AGENT_SCOPE.into()],
        roles: vec![],
        version: TokenVersion::V2,
        lifetime: Duration::from_secs(600),
        client_authenticated: true,
    };
    let payload = serde_json::to_vec(&idp.access_token_claims(&spec).unwrap()).unwrap();
    let header = serde_json::to_vec(&serde_json::json!({"typ": "JWT", "alg": "PS256", "kid": kid})).unwrap();
    let token = idp.sign_jws(&header, &payload, &kid, jsonwebtoken::Algorithm::PS256).unwrap();

    let rs_only = f.authorizer(f.config());
    assert_eq!(rs_only.authorize(&bearer(&token)).await.unwrap_err(), AuthError::Algorithm);
    let mut config = f.config();
    config.algorithms = vec!["RS256".into(), "PS256".into()];
    f.authorizer(config).authorize(&bearer(&token)).await.unwrap();
}

#[tokio::test]
async fn a_hanging_issuer_does_not_block_the_others() {
    let f = Fixture::start().await;
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            held.push(listener.accept().await.unwrap());
        }
    });
    let mut config = f.config();
    config.fetch_timeout_ms = 1000;
    let real = std::mem::replace(
        &mut config.discovery_url,
        format!("https://127.0.0.1:{port}/t/v2.0/.well-known/openid-configuration"),
    );
    config.additional_discovery_urls = vec![real];
    let authorizer = f.authorizer(config);
    let token = f.jane_token();
    authorizer.authorize(&bearer(&token)).await.unwrap();
    // Now the real issuer is loaded: no waiting on the hanging one at all.
    let started = Instant::now();
    authorizer.authorize(&bearer(&token)).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    hold.abort();
}

/// Fuzzing the front end (proptest, bounded for CI): arbitrary `Authorization` values and
/// one-character mutations of a valid token are refused as unauthenticated — never accepted,
/// never a panic, never "unavailable" — and the real token still passes afterwards.
#[test]
fn fuzzed_authorization_values_and_mutated_tokens_are_refused() {
    use base64::Engine as _;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (f, authorizer, token) = rt.block_on(async {
        let f = Fixture::start().await;
        let a = f.authorizer(f.config());
        a.warm_up().await.unwrap();
        let t = f.jane_token();
        (f, a, t)
    });
    let refused = |value: String| -> Result<(), TestCaseError> {
        let Ok(v) = HeaderValue::from_str(&value) else { return Ok(()) };
        let mut h = HeaderMap::new();
        h.append(http::header::AUTHORIZATION, v);
        let result = rt.block_on(authorizer.authorize(&h));
        prop_assert_eq!(outcome(&result), Expected::Unauthenticated, "{:?}", value);
        Ok(())
    };
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400);
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config.clone());
    // Arbitrary printable values, and ones shaped like `Bearer a.b.c`.
    #[allow(clippy::redundant_closure)] // `refused` is used again below; passing it would move it
    runner.run(&"[ -~]{0,400}", |v| refused(v)).unwrap();
    runner
        .run(
            &("(?i:bearer) ", "[A-Za-z0-9_-]{0,80}", "[A-Za-z0-9_.-]{0,80}", "[A-Za-z0-9_=-]{0,80}"),
            |(s, a, b, c)| refused(format!("{s}{a}.{b}.{c}")),
        )
        .unwrap();
    // One character of the real token replaced: refused, unless base64url's unused trailing
    // bits make the new text decode to the very same bytes (then it is the same token).
    let decoded = |t: &str| -> Vec<Vec<u8>> {
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        t.split('.').map(|s| lenient.decode(s).unwrap_or_default()).collect()
    };
    let alphabet: Vec<char> = ('A'..='Z').chain('a'..='z').chain('0'..='9').chain(['-', '_', '.']).collect();
    let mut runner = TestRunner::new(config);
    runner
        .run(&(0..token.len(), 0..alphabet.len()), |(i, c)| {
            let mut mutated: Vec<char> = token.chars().collect();
            if mutated[i] == alphabet[c] {
                return Ok(());
            }
            mutated[i] = alphabet[c];
            let mutated: String = mutated.into_iter().collect();
            if mutated.split('.').count() == 3 && decoded(&mutated) == decoded(&token) {
                return Ok(());
            }
            refused(format!("Bearer {mutated}"))
        })
        .unwrap();
    let ok = rt.block_on(authorizer.authorize(&bearer(&token)));
    assert_eq!(outcome(&ok), Expected::Accepted);
    drop(f);
}

/// Jane's token with `act` set to `act` (signed by the IdP, so only the chain is odd).
fn token_with_act(f: &Fixture, act: serde_json::Value) -> String {
    let spec = delegate_devstack_idp::TokenSpec {
        tenant: TENANT_ID.into(),
        user: Some(JANE.into()),
        client_id: AGENT_APP_ID.into(),
        audience: AGENT_APP_ID.into(),
        scopes: vec![AGENT_SCOPE.into()],
        roles: Vec::new(),
        version: delegate_devstack_idp::TokenVersion::V2,
        lifetime: Duration::from_secs(600),
        client_authenticated: true,
    };
    let mut claims = f.idp().access_token_claims(&spec).unwrap();
    claims.insert("act".into(), act);
    f.idp().sign_claims(&claims).unwrap().expose().to_owned()
}

/// `depth` nested actors, outermost `actor-0`.
fn nested_act(depth: usize) -> serde_json::Value {
    let mut act: Option<serde_json::Value> = None;
    for i in (0..depth).rev() {
        let mut o = serde_json::json!({"sub": format!("actor-{i}"), "client_id": format!("client-{i}")});
        if let Some(inner) = act {
            o["act"] = inner;
        }
        act = Some(o);
    }
    act.unwrap_or(serde_json::Value::Null)
}

#[tokio::test]
async fn delegation_chain_is_exposed_and_bounded_by_max_chain_depth() {
    let f = Fixture::start().await;
    let mut config = f.config();
    config.max_chain_depth = 2;
    let authorizer = f.authorizer(config);

    // A user's own token: no chain.
    let caller = authorizer.authorize(&bearer(&f.jane_token())).await.unwrap();
    assert_eq!(caller.chain_depth(), 0);
    assert!(caller.actors().is_empty());

    // Two actors: accepted, outermost (current) actor first.
    let caller = authorizer.authorize(&bearer(&token_with_act(&f, nested_act(2)))).await.unwrap();
    assert_eq!(caller.chain_depth(), 2);
    let subjects: Vec<&str> = caller.actors().iter().map(crate::Actor::subject).collect();
    assert_eq!(subjects, ["actor-0", "actor-1"]);
    assert_eq!(caller.actors()[1].client_id(), Some("client-1"));
    assert_eq!(caller.subject(), JANE_OID, "the user stays the subject");

    // Three: one hop too many, refused as 403 with its own code.
    let err = authorizer.authorize(&bearer(&token_with_act(&f, nested_act(3)))).await.unwrap_err();
    assert_eq!(err, AuthError::ChainTooDeep { depth: 3, max: 2 });
    assert_eq!(err.status_class(), AuthFailure::Forbidden);
    assert_eq!(err.code(), "chain_depth_exceeded");

    // Far deeper than any limit: refused as malformed without walking it all.
    let err = authorizer.authorize(&bearer(&token_with_act(&f, nested_act(40)))).await.unwrap_err();
    assert_eq!(err, AuthError::Claim("act"));

    // max_chain_depth = 0 accepts only tokens without `act`.
    let mut config = f.config();
    config.max_chain_depth = 0;
    let strict = f.authorizer(config);
    strict.authorize(&bearer(&f.jane_token())).await.unwrap();
    let err = strict.authorize(&bearer(&token_with_act(&f, nested_act(1)))).await.unwrap_err();
    assert_eq!(err, AuthError::ChainTooDeep { depth: 1, max: 0 });
}

#[tokio::test]
async fn malformed_act_claims_are_refused() {
    let f = Fixture::start().await;
    let authorizer = f.authorizer(f.config());
    let malformed = [
        serde_json::json!("agent-a"),
        serde_json::json!(["agent-a"]),
        serde_json::json!({}),
        serde_json::json!({"sub": ""}),
        serde_json::json!({"sub": 7}),
        serde_json::json!({"sub": "a".repeat(300)}),
        serde_json::json!({"sub": "agent-a", "client_id": 3}),
        serde_json::json!({"sub": "agent-a", "act": "agent-b"}),
        serde_json::json!({"sub": "agent-a", "act": {"client_id": "b"}}),
        serde_json::json!({"sub": "agent-a", "act": null}),
    ];
    for act in malformed {
        let err = authorizer.authorize(&bearer(&token_with_act(&f, act.clone()))).await.unwrap_err();
        assert_eq!(err, AuthError::Claim("act"), "{act}");
        assert_eq!(err.status_class(), AuthFailure::Unauthenticated);
    }
}

#[test]
fn max_chain_depth_is_bounded() {
    let mut c = AuthConfig::new(
        "https://login.microsoftonline.com/7f3c2a91-4d5e-4b8a-9c1d-2e6f0a8b3c4d/v2.0/.well-known/openid-configuration",
        &["a"],
        &["b"],
    );
    assert_eq!(c.clone().validate().unwrap().max_chain_depth(), 4);
    c.max_chain_depth = 17;
    assert_eq!(c.clone().validate().unwrap_err().key, "max_chain_depth");
    c.max_chain_depth = 16;
    assert_eq!(c.validate().unwrap().max_chain_depth(), 16);
}

// ---- The signed hop counter -------------------------------------------------------------

const HOP_KEY_B64: &str = "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k="; // 32 bytes
const OTHER_HOP_KEY_B64: &str = "7wEjRWeJq83vASNFZ4mrze8BI0VniavN7wEjRWeJq80="; // 32 bytes

/// A file holding `text` (a hop key), in a directory removed when the value drops.
fn key_file(text: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new();
    let path = dir.0.join("hop.key");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn hop_key(b64: &str) -> crate::HopKey {
    crate::HopKey::from_base64(&delegate_secret::Secret::new(b64)).unwrap()
}

/// `Authorization: Bearer <token>` plus the hop header values given.
fn bearer_with_hop(token: &str, hops: &[HeaderValue]) -> HeaderMap {
    let mut h = bearer(token);
    for v in hops {
        h.append(crate::HOP_HEADER, v.clone());
    }
    h
}

fn hop_value(key: &crate::HopKey, depth: usize, token: &str) -> HeaderValue {
    key.header_value(depth, &delegate_secret::Secret::new(token))
}

fn hop_config(f: &Fixture, path: &std::path::Path) -> AuthConfig {
    let mut c = f.config();
    c.max_chain_depth = 2;
    c.hop_key = Some(delegate_secret::SecretRef { env: None, file: Some(path.to_owned()) });
    c
}

#[tokio::test]
async fn a_valid_hop_counter_sets_the_chain_depth() {
    let f = Fixture::start().await;
    let (_dir, path) = key_file(&format!("{HOP_KEY_B64}\n"));
    let authorizer = f.authorizer(hop_config(&f, &path));
    let key = hop_key(HOP_KEY_B64);
    let jane = f.jane_token();

    // Absent: depth 0 (a user's own call).
    let caller = authorizer.authorize(&bearer(&jane)).await.unwrap();
    assert_eq!((caller.chain_depth(), caller.hop_depth()), (0, 0));
    // Valid: its depth, although the token has no `act`.
    for depth in [0, 1, 2] {
        let caller =
            authorizer.authorize(&bearer_with_hop(&jane, &[hop_value(&key, depth, &jane)])).await.unwrap();
        assert_eq!((caller.chain_depth(), caller.hop_depth()), (depth, depth));
        assert!(caller.actors().is_empty());
    }
    // Over the limit: refused as a chain too deep, like an `act` chain.
    let err = authorizer.authorize(&bearer_with_hop(&jane, &[hop_value(&key, 3, &jane)])).await.unwrap_err();
    assert_eq!(err, AuthError::ChainTooDeep { depth: 3, max: 2 });
    // The effective depth is the larger of the two counts.
    let one_actor = token_with_act(&f, nested_act(1));
    let caller =
        authorizer.authorize(&bearer_with_hop(&one_actor, &[hop_value(&key, 2, &one_actor)])).await.unwrap();
    assert_eq!((caller.chain_depth(), caller.actors().len(), caller.hop_depth()), (2, 1, 2));
    let two_actors = token_with_act(&f, nested_act(2));
    let caller = authorizer
        .authorize(&bearer_with_hop(&two_actors, &[hop_value(&key, 1, &two_actors)]))
        .await
        .unwrap();
    assert_eq!(caller.chain_depth(), 2);
    let err = authorizer
        .authorize(&bearer_with_hop(&two_actors, &[hop_value(&key, 3, &two_actors)]))
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::ChainTooDeep { depth: 3, max: 2 });
}

#[tokio::test]
async fn a_hop_counter_that_does_not_verify_is_refused_never_trusted() {
    let f = Fixture::start().await;
    let (_dir, path) = key_file(HOP_KEY_B64);
    let authorizer = f.authorizer(hop_config(&f, &path));
    let key = hop_key(HOP_KEY_B64);
    let jane = f.jane_token();
    let other_token = token_with_act(&f, nested_act(1));
    let valid = hop_value(&key, 1, &jane).to_str().unwrap().to_owned();
    let mac = valid.split_once('.').unwrap().1.to_owned();
    let v = |s: &str| HeaderValue::from_str(s).unwrap();
    let flipped = if mac.starts_with('A') { 'B' } else { 'A' };

    let cases: Vec<(&str, Vec<HeaderValue>, &str)> = vec![
        ("another key", vec![hop_value(&hop_key(OTHER_HOP_KEY_B64), 1, &jane)], "does not verify"),
        ("another token's counter", vec![hop_value(&key, 1, &other_token)], "does not verify"),
        ("tampered depth (lower)", vec![v(&format!("0.{mac}"))], "does not verify"),
        ("tampered depth (higher)", vec![v(&format!("2.{mac}"))], "does not verify"),
        ("tampered mac", vec![v(&format!("1.{flipped}{}", &mac[1..]))], "does not verify"),
        ("empty", vec![v("")], "is malformed"),
        ("depth only", vec![v("1")], "is malformed"),
        ("no mac", vec![v("1.")], "is malformed"),
        ("no depth", vec![v(&format!(".{mac}"))], "is malformed"),
        ("leading zero", vec![v(&format!("01.{mac}"))], "is malformed"),
        ("negative", vec![v(&format!("-1.{mac}"))], "is malformed"),
        ("signed", vec![v(&format!("+1.{mac}"))], "is malformed"),
        ("three digits", vec![v(&format!("100.{}", &mac[..42]))], "is malformed"),
        ("three digits and a full mac", vec![v(&format!("100.{mac}"))], "is too large"),
        ("not base64url", vec![v(&format!("1.{}+", &mac[..42]))], "is malformed"),
        ("short mac", vec![v(&format!("1.{}", &mac[..40]))], "is malformed"),
        ("extra field", vec![v(&format!("1.{}.x", &mac[..40]))], "is malformed"),
        ("spaces", vec![v(&format!(" 1.{mac}"))], "is malformed"),
        (
            "not ASCII",
            vec![HeaderValue::from_bytes(format!("1.{}\u{e9}", &mac[..41]).as_bytes()).unwrap()],
            "is malformed",
        ),
        ("oversized", vec![v(&format!("1.{mac}{}", "A".repeat(4000)))], "is too large"),
        ("repeated", vec![v(&valid), v(&valid)], "is repeated"),
    ];
    for (name, values, why) in cases {
        let err = authorizer.authorize(&bearer_with_hop(&jane, &values)).await.unwrap_err();
        assert_eq!(err, AuthError::InvalidHop(why), "{name}");
        assert_eq!(err.status_class(), AuthFailure::Unauthenticated, "{name}");
        assert_eq!(err.code(), "invalid_hop", "{name}");
        assert_eq!(err.www_authenticate(), Some(r#"Bearer error="invalid_token""#), "{name}");
        // The error names the header's problem, never its content.
        assert!(!err.to_string().contains(&mac[..8]), "{name}: {err}");
    }
    // The valid value itself passes (the cases fail for their own reason).
    authorizer.authorize(&bearer_with_hop(&jane, &[v(&valid)])).await.unwrap();
    // A bad token is refused for the token, before the header is looked at.
    let err = authorizer.authorize(&bearer_with_hop("not.a.token", &[v("junk")])).await.unwrap_err();
    assert_eq!(err, AuthError::MalformedToken);
}

#[tokio::test]
async fn without_a_hop_key_the_header_is_ignored() {
    let f = Fixture::start().await;
    let mut config = f.config();
    config.max_chain_depth = 1;
    let authorizer = f.authorizer(config);
    let jane = f.jane_token();
    for value in [hop_value(&hop_key(HOP_KEY_B64), 5, &jane), HeaderValue::from_static("junk")] {
        let caller = authorizer.authorize(&bearer_with_hop(&jane, &[value])).await.unwrap();
        assert_eq!((caller.chain_depth(), caller.hop_depth()), (0, 0));
    }
}

#[tokio::test]
async fn hop_required_from_refuses_a_listed_client_without_a_hop_counter() {
    let f = Fixture::start().await;
    let (_dir, path) = key_file(HOP_KEY_B64);
    let key = hop_key(HOP_KEY_B64);
    let jane = f.jane_token(); // client AGENT_APP_ID

    // The token's client is listed: the header is required.
    let mut config = hop_config(&f, &path);
    config.hop_required_from = vec![AGENT_APP_ID.into()];
    let strict = f.authorizer(config);
    let err = strict.authorize(&bearer(&jane)).await.unwrap_err();
    assert_eq!(err, AuthError::InvalidHop("is missing"));
    assert_eq!((err.status_class(), err.code()), (AuthFailure::Unauthenticated, "invalid_hop"));
    let caller = strict.authorize(&bearer_with_hop(&jane, &[hop_value(&key, 1, &jane)])).await.unwrap();
    assert_eq!(caller.chain_depth(), 1);
    // A header present but invalid is refused as such, listed or not.
    let other = hop_value(&hop_key(OTHER_HOP_KEY_B64), 1, &jane);
    assert_eq!(
        strict.authorize(&bearer_with_hop(&jane, &[other])).await.unwrap_err(),
        AuthError::InvalidHop("does not verify")
    );

    // Another client is listed: this one may come without a header.
    let mut config = hop_config(&f, &path);
    config.allowed_clients.push("agent-b-client".into());
    config.hop_required_from = vec!["agent-b-client".into()];
    let lenient = f.authorizer(config);
    assert_eq!(lenient.authorize(&bearer(&jane)).await.unwrap().chain_depth(), 0);
}

/// Rotating the hop key across hosts (docs/chains.md): a host with `hop_key_previous`
/// accepts counters signed with either key, signs with `hop_key` only, and still refuses a
/// third key and a malformed header.
#[tokio::test]
async fn during_a_rotation_counters_signed_with_either_key_verify() {
    let f = Fixture::start().await;
    let (_new_dir, new_path) = key_file(OTHER_HOP_KEY_B64);
    let (_old_dir, old_path) = key_file(HOP_KEY_B64);
    let mut config = hop_config(&f, &new_path);
    config.hop_key_previous = Some(delegate_secret::SecretRef { env: None, file: Some(old_path) });
    let settings = config.clone().validate().unwrap();
    let authorizer = f.authorizer(config);
    let jane = f.jane_token();
    for (b64, depth) in [(HOP_KEY_B64, 1), (OTHER_HOP_KEY_B64, 2)] {
        let caller = authorizer
            .authorize(&bearer_with_hop(&jane, &[hop_value(&hop_key(b64), depth, &jane)]))
            .await
            .unwrap();
        assert_eq!(caller.hop_depth(), depth, "signed with {b64}");
    }
    // The key this host signs with is the new one, never the previous.
    let signed = hop_value(settings.hop_key().unwrap(), 1, &jane);
    assert_eq!(signed, hop_value(&hop_key(OTHER_HOP_KEY_B64), 1, &jane));
    // A third key still does not verify; a malformed header is not retried with the old key.
    let third = hop_key("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
    assert_eq!(
        authorizer.authorize(&bearer_with_hop(&jane, &[hop_value(&third, 1, &jane)])).await.unwrap_err(),
        AuthError::InvalidHop("does not verify")
    );
    assert_eq!(
        authorizer.authorize(&bearer_with_hop(&jane, &[HeaderValue::from_static("01.x")])).await.unwrap_err(),
        AuthError::InvalidHop("is malformed")
    );
    // Without the previous key, the old key's counters are refused again.
    let after = f.authorizer(hop_config(&f, &new_path));
    let old = hop_value(&hop_key(HOP_KEY_B64), 1, &jane);
    assert_eq!(
        after.authorize(&bearer_with_hop(&jane, &[old])).await.unwrap_err(),
        AuthError::InvalidHop("does not verify")
    );
}

#[test]
fn hop_key_previous_needs_hop_key_and_must_differ_from_it() {
    let (_dir, path) = key_file(HOP_KEY_B64);
    let (_dir2, same) = key_file(&format!("{HOP_KEY_B64}\n"));
    let mut c = AuthConfig::new(
        "https://login.microsoftonline.com/7f3c2a91-4d5e-4b8a-9c1d-2e6f0a8b3c4d/v2.0/.well-known/openid-configuration",
        &["a"],
        &["b"],
    );
    c.hop_key_previous = Some(delegate_secret::SecretRef { env: None, file: Some(path) });
    let e = c.clone().validate().unwrap_err();
    assert_eq!(e.key, "hop_key_previous");
    assert!(e.to_string().contains("needs hop_key"), "{e}");
    c.hop_key = Some(delegate_secret::SecretRef { env: None, file: Some(same) });
    let e = c.validate().unwrap_err();
    assert_eq!(e.key, "hop_key_previous");
    assert!(e.to_string().contains("same key"), "{e}");
    assert!(!e.to_string().contains(HOP_KEY_B64), "{e}");
}

#[test]
fn hop_settings_are_validated() {
    let base = || {
        AuthConfig::new(
            "https://login.microsoftonline.com/7f3c2a91-4d5e-4b8a-9c1d-2e6f0a8b3c4d/v2.0/.well-known/openid-configuration",
            &["a"],
            &["b"],
        )
    };
    let with_key = |text: &str| {
        let (dir, path) = key_file(text);
        let mut c = base();
        c.hop_key = Some(delegate_secret::SecretRef { env: None, file: Some(path) });
        let result = c.validate();
        drop(dir);
        result
    };
    assert!(with_key(HOP_KEY_B64).unwrap().hop_key().is_some());
    assert!(with_key(&format!("  {HOP_KEY_B64}  \n")).is_ok(), "surrounding whitespace is trimmed");
    assert!(base().validate().unwrap().hop_key().is_none());
    // 31 bytes, not base64, empty: refused at start, naming the key, never showing it.
    let short = "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZw==";
    for (text, why) in
        [(short, "decodes to 31 bytes"), ("not base64!", "not base64"), ("", "empty"), ("\n", "empty")]
    {
        let e = with_key(text).unwrap_err();
        assert_eq!(e.key, "hop_key", "{text:?}");
        assert!(e.message.contains(why), "{text:?}: {e}");
        assert!(text.trim().is_empty() || !e.to_string().contains(text.trim()), "{e}");
    }
    // By environment variable; a missing one names the `.env` part.
    let mut c = base();
    c.hop_key =
        Some(delegate_secret::SecretRef { env: Some("DELEGATE_TEST_HOP_KEY_UNSET_42".into()), file: None });
    assert_eq!(c.validate().unwrap_err().key, "hop_key.env");
    // hop_required_from needs the key, and clients this host accepts.
    let mut c = base();
    c.hop_required_from = vec!["b".into()];
    assert_eq!(c.validate().unwrap_err().key, "hop_required_from[0]");
    let (_dir, path) = key_file(HOP_KEY_B64);
    let mut c = base();
    c.hop_key = Some(delegate_secret::SecretRef { env: None, file: Some(path) });
    c.hop_required_from = vec!["b".into(), "zz".into()];
    let e = c.clone().validate().unwrap_err();
    assert_eq!(e.key, "hop_required_from[1]");
    assert!(e.message.contains("allowed_clients"), "{e}");
    c.hop_required_from.pop();
    assert!(c.validate().is_ok());
}

#[test]
fn hop_key_debug_shows_no_key_material() {
    let key = hop_key(HOP_KEY_B64);
    assert_eq!(format!("{key:?}"), "HopKey(..)");
    let value = hop_value(&key, 1, "token");
    assert!(value.is_sensitive());
    assert!(format!("{value:?}").contains("Sensitive"), "{value:?}");
}
