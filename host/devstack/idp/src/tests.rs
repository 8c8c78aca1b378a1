#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::type_complexity)]

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::defaults::*;
use crate::{IdpConfig, IdpServer, Outage};

fn client(server: &IdpServer) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(server.ca_pem().as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get_json(c: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn token(server: &IdpServer, tenant: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = client(server).post(server.idp().token_endpoint(tenant)).form(form).send().await.unwrap();
    let status = r.status().as_u16();
    assert_eq!(r.headers()["cache-control"], "no-store, no-cache");
    (status, r.json().await.unwrap())
}

fn jane_password_form(scope: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", "password".into()),
        ("client_id", AGENT_APP_ID.into()),
        ("client_secret", AGENT_APP_SECRET.into()),
        ("username", JANE.into()),
        ("password", PASSWORD.into()),
        ("scope", scope.into()),
    ]
}

fn as_refs<'a>(form: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    form.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Verifies `token` against the published JWKS the way an independent client would.
async fn verify(server: &IdpServer, token: &str, issuer: &str, audience: &str) -> Value {
    let (_, jwks) = get_json(&client(server), &server.idp().jwks_uri(TENANT_ID)).await;
    let header = jsonwebtoken::decode_header(token).unwrap();
    let kid = header.kid.unwrap();
    let jwk =
        jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).expect("kid published");
    let key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap()).unwrap();
    let mut v = Validation::new(Algorithm::RS256);
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "nbf"]);
    v.validate_nbf = true;
    jsonwebtoken::decode::<Value>(token, &key, &v).unwrap().claims
}

fn assert_entra_error(body: &Value, error: &str, code: u64) {
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], serde_json::json!([code]), "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(description.starts_with(&format!("AADSTS{code}: ")), "{description}");
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[field].is_string(), "{field} in {body}");
    }
    // Entra's layout: the message, then trace, correlation and time on CRLF-separated lines.
    let tail = format!(
        "\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}",
        body["trace_id"].as_str().unwrap(),
        body["correlation_id"].as_str().unwrap(),
        body["timestamp"].as_str().unwrap()
    );
    assert!(description.ends_with(&tail), "{description:?}");
    assert_eq!(body["error_uri"], format!("https://login.microsoftonline.com/error?code={code}"));
}

#[tokio::test]
async fn discovery_documents_are_entra_shaped_and_same_origin() {
    let server = IdpServer::start(IdpConfig::default()).await.unwrap();
    let c = client(&server);
    let base = server.url();
    // By tenant id and by verified domain: both name the tenant GUID.
    for segment in [TENANT_ID, TENANT_DOMAIN] {
        let (status, doc) = get_json(&c, &server.idp().discovery_url(segment)).await;
        assert_eq!(status, 200);
        assert_eq!(doc["issuer"], format!("{base}/{TENANT_ID}/v2.0"));
        assert_eq!(doc["jwks_uri"], format!("{base}/{TENANT_ID}/discovery/v2.0/keys"));
        assert_eq!(doc["token_endpoint"], format!("{base}/{TENANT_ID}/oauth2/v2.0/token"));
        for field in [
            "authorization_endpoint",
            "response_types_supported",
            "subject_types_supported",
            "id_token_signing_alg_values_supported",
            "token_endpoint_auth_methods_supported",
            "userinfo_endpoint",
        ] {
            assert!(!doc[field].is_null(), "{field}");
        }
        for url in ["authorization_endpoint", "token_endpoint", "jwks_uri"] {
            assert!(doc[url].as_str().unwrap().starts_with(base));
        }
    }
    let (_, common) = get_json(&c, &server.idp().discovery_url("common")).await;
    assert_eq!(common["issuer"], format!("{base}/{{tenantid}}/v2.0"));
    let (_, v1) = get_json(&c, &server.idp().discovery_url_v1(TENANT_ID)).await;
    assert_eq!(v1["issuer"], format!("https://sts.windows.net/{TENANT_ID}/"));
    assert_eq!(v1["jwks_uri"], format!("{base}/{TENANT_ID}/discovery/keys"));

    let (status, err) = get_json(&c, &server.idp().discovery_url("nosuchtenant.example")).await;
    assert_eq!(status, 400);
    assert_entra_error(&err, "invalid_tenant", 90002);
    assert_eq!(server.idp().counters().discovery, 5);
}

#[tokio::test]
async fn jwks_publishes_rotation_and_cache_control() {
    let server = IdpServer::start(IdpConfig::default()).await.unwrap();
    let c = client(&server);
    let idp = server.idp();
    let url = idp.jwks_uri(TENANT_ID);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "max-age=86400, private");
    let jwks: Value = r.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(k["kty"], "RSA");
    assert_eq!(k["use"], "sig");
    assert_eq!(k["kid"], idp.current_kid().as_str());
    assert_eq!(k["x5t"], k["kid"]);
    assert_eq!(k["e"], "AQAB");
    assert!(k["x5c"][0].as_str().unwrap().len() > 500);
    assert_eq!(k["issuer"], idp.issuer(TENANT_ID));

    let first = idp.current_kid();
    let second = idp.rotate_add_key().unwrap();
    assert_eq!(idp.current_kid(), second);
    idp.set_jwks_max_age(5);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "max-age=5, private");
    let jwks: Value = r.json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);

    assert!(idp.retire_key(&first));
    assert!(!idp.retire_key(&first));
    assert_eq!(idp.published_kids(), vec![second.clone()]);
    let (_, jwks) = get_json(&c, &url).await;
    assert_eq!(jwks["keys"][0]["kid"], second.as_str());
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    // v1 key documents carry no issuer.
    let (_, v1) = get_json(&c, &format!("{}/{TENANT_ID}/discovery/keys", server.url())).await;
    assert!(v1["keys"][0]["issuer"].is_null());
    assert_eq!(idp.counters().jwks, 4);
}

#[tokio::test]
async fn password_grant_issues_entra_v2_access_and_id_tokens() {
    let server = IdpServer::start(IdpConfig::default()).await.unwrap();
    let scope = format!("offline_access api://{AGENT_APP_ID}/{AGENT_SCOPE} openid profile");
    let mut form = jane_password_form(&scope);
    form.push(("client_info", "1".into()));
    let (status, body) = token(&server, TENANT_ID, &as_refs(&form)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], format!("api://{AGENT_APP_ID}/{AGENT_SCOPE} openid profile"));
    let issuer = server.idp().issuer(TENANT_ID);
    let claims = verify(&server, body["access_token"].as_str().unwrap(), &issuer, AGENT_APP_ID).await;
    assert_eq!(claims["ver"], "2.0");
    assert_eq!(claims["azp"], AGENT_APP_ID);
    assert_eq!(claims["azpacr"], "1");
    assert_eq!(claims["scp"], AGENT_SCOPE);
    assert_eq!(claims["oid"], JANE_OID);
    assert_eq!(claims["tid"], TENANT_ID);
    assert_eq!(claims["preferred_username"], JANE);
    assert_eq!(claims["name"], "Jane Smith");
    for claim in ["sub", "uti", "iat", "nbf", "exp"] {
        assert!(!claims[claim].is_null(), "{claim}");
    }
    assert!(claims["appid"].is_null() && claims["roles"].is_null());
    let id = verify(&server, body["id_token"].as_str().unwrap(), &issuer, AGENT_APP_ID).await;
    assert_eq!(id["oid"], JANE_OID);
    assert!(body["client_info"].is_string());
    assert!(body["refresh_token"].is_null());
    assert_eq!(server.idp().grant_calls("password"), 1);

    // Public client flow (no secret): azpacr 0. `.default` gives the consented scopes.
    let (status, body) = token(
        &server,
        TENANT_DOMAIN,
        &[
            ("grant_type", "password"),
            ("client_id", AGENT_APP_ID),
            ("username", "JANE.SMITH@company.com"),
            ("password", PASSWORD),
            ("scope", &format!("api://{AGENT_APP_ID}/.default")),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let claims = verify(&server, body["access_token"].as_str().unwrap(), &issuer, AGENT_APP_ID).await;
    assert_eq!(claims["azpacr"], "0");
    assert_eq!(claims["scp"], AGENT_SCOPE);
    assert!(body["id_token"].is_null());
}

#[tokio::test]
async fn password_grant_errors_are_entra_shaped() {
    let server = IdpServer::start(IdpConfig::default()).await.unwrap();
    let scope = format!("api://{AGENT_APP_ID}/{AGENT_SCOPE}");
    let cases: Vec<(Vec<(&str, String)>, u16, &str, u64)> = vec![
        (
            jane_password_form(&scope)
                .into_iter()
                .map(|(k, v)| if k == "password" { (k, "wrong".into()) } else { (k, v) })
                .collect(),
            400,
            "invalid_grant",
            50126,
        ),
        (
            jane_password_form(&scope)
                .into_iter()
                .map(|(k, v)| if k == "username" { (k, "nobody@company.com".into()) } else { (k, v) })
                .collect(),
            400,
            "invalid_grant",
            50034,
        ),
        (
            jane_password_form(&scope)
                .into_iter()
                .map(|(k, v)| if k == "client_secret" { (k, "not-the-secret".into()) } else { (k, v) })
                .collect(),
            401,
            "invalid_client",
            7000215,
        ),
        (
            jane_password_form(&scope)
                .into_iter()
                .map(|(k, v)| {
                    if k == "client_id" { (k, "11111111-2222-3333-4444-555555555555".into()) } else { (k, v) }
                })
                .collect(),
            400,
            "unauthorized_client",
            700016,
        ),
        (jane_password_form("access_as_user"), 400, "invalid_scope", 70011),
        (jane_password_form(&format!("api://{AGENT_APP_ID}/nope")), 400, "invalid_scope", 70011),
        (jane_password_form("api://unknown-resource/x"), 400, "invalid_resource", 500011),
        (
            jane_password_form(&format!("{scope} api://{CONNECTOR_APP_ID}/{CONNECTOR_SCOPE}")),
            400,
            "invalid_scope",
            28000,
        ),
        (
            jane_password_form(&scope).into_iter().filter(|(k, _)| *k != "scope").collect(),
            400,
            "invalid_request",
            900144,
        ),
    ];
    for (form, status, error, code) in cases {
        let (got, body) = token(&server, TENANT_ID, &as_refs(&form)).await;
        assert_eq!(got, status, "{body}");
        assert_entra_error(&body, error, code);
    }
    // Jane does not exist in the other tenant.
    let (got, body) = token(&server, OTHER_TENANT_ID, &as_refs(&jane_password_form(&scope))).await;
    assert_eq!(got, 400);
    assert_entra_error(&body, "invalid_grant", 50034);
    // A duplicated parameter is refused.
    let mut form = jane_password_form(&scope);
    form.push(("scope", scope.clone()));
    let (got, body) = token(&server, TENANT_ID, &as_refs(&form)).await;
    assert_eq!(got, 400);
    assert_entra_error(&body, "invalid_request", 90015);
}

#[tokio::test]
async fn consent_is_required_for_delegated_scopes() {
    let mut config = IdpConfig::default();
    config.consents.retain(|c| c.resource != CONNECTOR_APP_ID);
    let server = IdpServer::start(config).await.unwrap();
    let (status, body) = token(
        &server,
        TENANT_ID,
        &as_refs(&jane_password_form(&format!("api://{CONNECTOR_APP_ID}/{CONNECTOR_SCOPE}"))),
    )
    .await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "invalid_grant", 65001);
    assert_eq!(body["suberror"], "consent_required");
}

#[tokio::test]
async fn client_credentials_grant_issues_app_only_tokens() {
    let server = IdpServer::start(IdpConfig::default()).await.unwrap();
    let default_scope = format!("api://{AGENT_APP_ID}/.default");
    let named_scope = format!("api://{AGENT_APP_ID}/{AGENT_SCOPE}");
    let (status, body) = token(
        &server,
        TENANT_ID,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", AGENT_APP_ID),
            ("client_secret", AGENT_APP_SECRET),
            ("scope", &default_scope),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], default_scope);
    let claims = verify(
        &server,
        body["access_token"].as_str().unwrap(),
        &server.idp().issuer(TENANT_ID),
        AGENT_APP_ID,
    )
    .await;
    assert_eq!(claims["roles"], serde_json::json!(["Agent.Invoke"]));
    assert!(claims["scp"].is_null() && claims["preferred_username"].is_null());
    assert_eq!(claims["idtyp"], "app");
    assert_eq!(claims["sub"], claims["oid"]);

    // HTTP Basic client authentication works too.
    let r = client(&server)
        .post(server.idp().token_endpoint(TENANT_ID))
        .basic_auth(AGENT_APP_ID, Some(AGENT_APP_SECRET))
        .form(&[("grant_type", "client_credentials"), ("scope", &default_scope)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let cases: Vec<(Vec<(&str, &str)>, u16, &str, u64)> = vec![
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", AGENT_APP_ID),
                ("scope", &default_scope),
            ],
            401,
            "invalid_client",
            7000218,
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", AGENT_APP_ID),
                ("client_secret", AGENT_APP_SECRET),
                ("scope", &named_scope),
            ],
            400,
            "invalid_scope",
            1002012,
        ),
    ];
    for (form, status, error, code) in cases {
        let (got, body) = token(&server, TENANT_ID, &form).await;
        assert_eq!(got, status, "{body}");
        assert_entra_error(&body, error, code);
    }
    assert_eq!(server.idp().grant_calls("client_credentials"), 4);
}

#[tokio::test]
async fn unsupported_grants_and_bad_bodies_are_entra_shaped() {
    let server = IdpServer::start(IdpConfig::default()).await.unwrap();
    for grant in ["refresh_token", "authorization_code", "magic"] {
        let (status, body) =
            token(&server, TENANT_ID, &[("grant_type", grant), ("client_id", AGENT_APP_ID)]).await;
        assert_eq!(status, 400);
        assert_entra_error(&body, "unsupported_grant_type", 70003);
        assert_eq!(server.idp().grant_calls(grant), 1);
    }
    let (status, body) = token(&server, TENANT_ID, &[("client_id", AGENT_APP_ID)]).await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "invalid_request", 900144);
    // Not a form at all.
    let r = client(&server)
        .post(server.idp().token_endpoint(TENANT_ID))
        .body("{}")
        .header("content-type", "application/json")
        .header("client-request-id", "0f0e0d0c-0000-4000-8000-000000000001")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_entra_error(&body, "invalid_request", 900144);
    assert_eq!(body["correlation_id"], "0f0e0d0c-0000-4000-8000-000000000001");
}

#[tokio::test]
async fn user_realm_answers_managed_for_known_domains() {
    let server = IdpServer::start(IdpConfig::default()).await.unwrap();
    let c = client(&server);
    let (status, realm) =
        get_json(&c, &format!("{}/common/userrealm/{JANE}?api-version=1.0", server.url())).await;
    assert_eq!(status, 200);
    assert_eq!(realm["account_type"], "Managed");
    assert_eq!(realm["domain_name"], TENANT_DOMAIN);
    let (_, unknown) =
        get_json(&c, &format!("{}/common/userrealm/x@unknown.example?api-version=1.0", server.url())).await;
    assert_eq!(unknown["account_type"], "Unknown");
}

#[tokio::test]
async fn outage_fails_or_hangs_discovery_and_jwks() {
    let server = IdpServer::start(IdpConfig::default()).await.unwrap();
    let idp = server.idp();
    idp.set_outage(Outage::Status(503));
    for url in [idp.discovery_url(TENANT_ID), idp.jwks_uri(TENANT_ID)] {
        let (status, body) = get_json(&client(&server), &url).await;
        assert_eq!(status, 503);
        assert_eq!(body["error"], "temporarily_unavailable");
    }
    idp.set_outage(Outage::Hang);
    let impatient = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(server.ca_pem().as_bytes()).unwrap()])
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let error = impatient.get(idp.jwks_uri(TENANT_ID)).send().await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    // The token endpoint is not affected.
    let scope = format!("api://{AGENT_APP_ID}/{AGENT_SCOPE}");
    let (status, _) = token(&server, TENANT_ID, &as_refs(&jane_password_form(&scope))).await;
    assert_eq!(status, 200);
    idp.set_outage(Outage::None);
    let (status, _) = get_json(&client(&server), &idp.jwks_uri(TENANT_ID)).await;
    assert_eq!(status, 200);
}

#[test]
fn toml_config_overrides_defaults_and_rejects_typos() {
    let config = IdpConfig::from_toml(
        r#"
        token_lifetime_seconds = 600
        [[users]]
        username = "x@company.com"
        password = "pw"
        display_name = "X"
        oid = "00000000-0000-4000-8000-000000000001"
        "#,
    )
    .unwrap();
    assert_eq!(config.token_lifetime_seconds, 600);
    assert_eq!(config.users.len(), 1);
    assert_eq!(config.apps.len(), IdpConfig::default().apps.len(), "apps keep their defaults");
    assert!(!format!("{config:?}").contains("devstack-agent-secret"));
    assert!(IdpConfig::from_toml("token_lifetime = 5").is_err());
    let mut bad = IdpConfig::default();
    bad.users[0].oid = "not-a-guid".into();
    assert!(crate::Idp::new(bad).is_err());
}

#[test]
fn minted_tokens_follow_the_resource_version() {
    let mut config = IdpConfig::default();
    config.apps[1].access_token_version = 1;
    let idp = crate::Idp::new(config).unwrap();
    let t = idp
        .mint_access_token(
            JANE,
            AGENT_APP_ID,
            &format!("api://{CONNECTOR_APP_ID}"),
            &[CONNECTOR_SCOPE],
            Duration::from_secs(60),
        )
        .unwrap();
    let header = jsonwebtoken::decode_header(t.expose()).unwrap();
    assert_eq!(header.x5t.as_deref(), header.kid.as_deref());
    let claims: Value = jsonwebtoken::dangerous::insecure_decode::<Value>(t.expose()).unwrap().claims;
    assert_eq!(claims["ver"], "1.0");
    assert_eq!(claims["iss"], format!("https://sts.windows.net/{TENANT_ID}/"));
    assert_eq!(claims["appid"], AGENT_APP_ID);
    assert_eq!(claims["upn"], JANE);
    assert_eq!(claims["aud"], format!("api://{CONNECTOR_APP_ID}"));
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 60);
    let corpus = crate::attack_corpus(&idp, &crate::CorpusTarget::default()).unwrap();
    assert!(corpus.len() >= 35, "{}", corpus.len());
    let mut names: Vec<_> = corpus.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), corpus.len(), "case names are unique");
    assert!(!format!("{:?}", corpus[0]).contains("eyJ"), "Debug hides tokens");
}

#[tokio::test]
async fn common_endpoint_takes_the_tenant_from_the_user() {
    let server = IdpServer::start(IdpConfig::default()).await.unwrap();
    let (status, body) = token(
        &server,
        "organizations",
        &[
            ("grant_type", "password"),
            ("client_id", AGENT_APP_ID),
            ("username", OTHER_TENANT_USER),
            ("password", PASSWORD),
            ("scope", &format!("api://{AGENT_APP_ID}/{AGENT_SCOPE}")),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let claims: Value = jsonwebtoken::dangerous::insecure_decode::<Value>(token).unwrap().claims;
    assert_eq!(claims["tid"], OTHER_TENANT_ID);
    assert_eq!(claims["iss"], server.idp().issuer(OTHER_TENANT_ID));
    // App-only tokens need a tenant-specific endpoint.
    let (status, body) = token_request_cc(&server, "common").await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "invalid_request", 700016);
}

async fn token_request_cc(server: &IdpServer, tenant: &str) -> (u16, Value) {
    token(
        server,
        tenant,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", AGENT_APP_ID),
            ("client_secret", AGENT_APP_SECRET),
            ("scope", &format!("api://{AGENT_APP_ID}/.default")),
        ],
    )
    .await
}

#[tokio::test]
async fn a_shared_ca_serves_the_idp() {
    let ca = delegate_devstack_tls::DevCa::generate().unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let server = IdpServer::start_with_ca(IdpConfig::default(), addr, &ca).await.unwrap();
    assert_eq!(server.ca_pem(), ca.ca_pem());
    let (status, _) = get_json(&client(&server), &server.idp().discovery_url(TENANT_ID)).await;
    assert_eq!(status, 200);
}

mod client_cert;
mod exchange;

/// The multi-hop chain through RFC 8693 with actor tokens: Jane's token for Agent A, exchanged
/// by A (actor: A's client-credentials token) for Agent B, exchanged again by B (actor: B) for
/// the ServiceNow connector. Each hop nests the previous actor.
#[tokio::test]
async fn token_exchange_with_actor_tokens_nests_act_claims_per_hop() {
    const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
    const AT: &str = "urn:ietf:params:oauth:token-type:access_token";
    let server = IdpServer::start(IdpConfig::default()).await.unwrap();
    let issuer = server.idp().issuer(TENANT_ID);
    let jane = server
        .idp()
        .mint_access_token(JANE, AGENT_APP_ID, AGENT_APP_ID, &[AGENT_SCOPE], Duration::from_secs(600))
        .unwrap();
    let machine = |client: &'static str, secret: &'static str| {
        let server = &server;
        async move {
            let scope = format!("api://{client}/.default");
            let (status, body) = token(
                server,
                TENANT_ID,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", client),
                    ("client_secret", secret),
                    ("scope", &scope),
                ],
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body["access_token"].as_str().unwrap().to_owned()
        }
    };
    let actor_a = machine(AGENT_APP_ID, AGENT_APP_SECRET).await;
    let scope_b = format!("api://{AGENT_B_APP_ID}/{AGENT_SCOPE}");
    let (status, body) = token(
        &server,
        TENANT_ID,
        &[
            ("grant_type", EXCHANGE),
            ("client_id", AGENT_APP_ID),
            ("client_secret", AGENT_APP_SECRET),
            ("subject_token", jane.expose()),
            ("subject_token_type", AT),
            ("actor_token", &actor_a),
            ("actor_token_type", AT),
            ("scope", &scope_b),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let for_b = body["access_token"].as_str().unwrap().to_owned();
    let claims = verify(&server, &for_b, &issuer, AGENT_B_APP_ID).await;
    assert_eq!(claims["preferred_username"], JANE);
    assert_eq!(claims["azp"], AGENT_APP_ID);
    assert_eq!(claims["act"], serde_json::json!({"sub": AGENT_OBJECT_ID, "client_id": AGENT_APP_ID}));

    let actor_b = machine(AGENT_B_APP_ID, AGENT_B_APP_SECRET).await;
    let scope_sn = format!("api://{CONNECTOR_APP_ID}/{CONNECTOR_SCOPE}");
    let hop2 = |actor: String| {
        let (server, for_b, scope_sn) = (&server, for_b.clone(), scope_sn.clone());
        async move {
            token(
                server,
                TENANT_ID,
                &[
                    ("grant_type", EXCHANGE),
                    ("client_id", AGENT_B_APP_ID),
                    ("client_secret", AGENT_B_APP_SECRET),
                    ("subject_token", &for_b),
                    ("subject_token_type", AT),
                    ("actor_token", &actor),
                    ("actor_token_type", AT),
                    ("scope", &scope_sn),
                ],
            )
            .await
        }
    };
    let (status, body) = hop2(actor_b).await;
    assert_eq!(status, 200, "{body}");
    let claims = verify(&server, body["access_token"].as_str().unwrap(), &issuer, CONNECTOR_APP_ID).await;
    assert_eq!(claims["preferred_username"], JANE);
    assert_eq!(claims["oid"], JANE_OID);
    assert_eq!(claims["azp"], AGENT_B_APP_ID);
    assert_eq!(
        claims["act"],
        serde_json::json!({"sub": AGENT_B_OBJECT_ID, "client_id": AGENT_B_APP_ID,
            "act": {"sub": AGENT_OBJECT_ID, "client_id": AGENT_APP_ID}})
    );

    // B cannot present A's machine token as its own actor.
    let (status, body) = hop2(actor_a).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_request", "{body}");
}
