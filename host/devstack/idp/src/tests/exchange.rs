//! On-Behalf-Of and RFC 8693 token exchange over real HTTPS: Token B's claims, every error path
//! (status, `error`, `error_codes`), lifetime capping, fault switches and counters.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{as_refs, assert_entra_error, client, jane_password_form, token, verify};
use crate::defaults::*;
use crate::keys::SigningKey;
use crate::{
    ACCESS_TOKEN_TYPE, IdpConfig, IdpServer, JWT_BEARER_GRANT, JWT_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT,
    TokenFault, TokenSpec, TokenVersion, time,
};

fn connector_scope() -> String {
    format!("api://{CONNECTOR_APP_ID}/{CONNECTOR_SCOPE}")
}

/// Token A for Jane, minted as the password grant would (aud = the agent app).
fn token_a(server: &IdpServer, lifetime: Duration) -> String {
    server
        .idp()
        .mint_access_token(JANE, AGENT_APP_ID, AGENT_APP_ID, &[AGENT_SCOPE], lifetime)
        .unwrap()
        .expose()
        .to_owned()
}

/// Token A's claims, to edit into odd assertions.
fn token_a_claims(server: &IdpServer) -> serde_json::Map<String, Value> {
    server
        .idp()
        .access_token_claims(&TokenSpec {
            tenant: TENANT_ID.into(),
            user: Some(JANE.into()),
            client_id: AGENT_APP_ID.into(),
            audience: AGENT_APP_ID.into(),
            scopes: vec![AGENT_SCOPE.into()],
            roles: Vec::new(),
            version: TokenVersion::V2,
            lifetime: Duration::from_secs(3600),
            client_authenticated: false,
        })
        .unwrap()
}

fn sign(server: &IdpServer, claims: &serde_json::Map<String, Value>) -> String {
    server.idp().sign_claims(claims).unwrap().expose().to_owned()
}

fn obo_form(assertion: &str, scope: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", JWT_BEARER_GRANT.into()),
        ("client_id", AGENT_APP_ID.into()),
        ("client_secret", AGENT_APP_SECRET.into()),
        ("assertion", assertion.into()),
        ("scope", scope.into()),
        ("requested_token_use", "on_behalf_of".into()),
    ]
}

fn with(form: &[(&'static str, String)], key: &'static str, value: &str) -> Vec<(&'static str, String)> {
    let mut out: Vec<_> = form.iter().filter(|(k, _)| *k != key).cloned().collect();
    out.push((key, value.into()));
    out
}

fn without(form: &[(&'static str, String)], key: &str) -> Vec<(&'static str, String)> {
    form.iter().filter(|(k, _)| *k != key).cloned().collect()
}

fn exchange_form(subject: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", TOKEN_EXCHANGE_GRANT.into()),
        ("client_id", AGENT_APP_ID.into()),
        ("client_secret", AGENT_APP_SECRET.into()),
        ("subject_token", subject.into()),
        ("subject_token_type", ACCESS_TOKEN_TYPE.into()),
        ("audience", CONNECTOR_APP_ID.into()),
        ("scope", CONNECTOR_SCOPE.into()),
    ]
}

/// `jwt` with the first signature character changed (always a change, always base64url).
fn tamper_signature(jwt: &str) -> String {
    let (input, signature) = jwt.rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { "B" } else { "A" };
    format!("{input}.{first}{}", &signature[1..])
}

fn claims_of(jwt: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode::<Value>(jwt).unwrap().claims
}

async fn post(server: &IdpServer, form: &[(&'static str, String)]) -> (u16, Value) {
    token(server, TENANT_ID, &as_refs(form)).await
}

#[tokio::test]
async fn obo_issues_token_b_that_keeps_the_user() {
    let server = IdpServer::start(IdpConfig::default()).await.unwrap();
    let idp = server.idp();
    // Token A from the real password grant, as `delegate token` gets it.
    let (status, body) =
        post(&server, &jane_password_form(&format!("api://{AGENT_APP_ID}/{AGENT_SCOPE}"))).await;
    assert_eq!(status, 200, "{body}");
    let a = body["access_token"].as_str().unwrap().to_owned();
    let a_claims = claims_of(&a);

    let (status, body) = post(&server, &obo_form(&a, &connector_scope())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], connector_scope());
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!(expires_in > 3000 && expires_in <= 3600, "{expires_in}");
    assert_eq!(body["ext_expires_in"], body["expires_in"]);
    assert!(body["refresh_token"].is_null() && body["id_token"].is_null());
    assert!(body["issued_token_type"].is_null());
    let b = body["access_token"].as_str().unwrap();
    let claims = verify(&server, b, &idp.issuer(TENANT_ID), CONNECTOR_APP_ID).await;
    assert_eq!(claims["aud"], CONNECTOR_APP_ID, "v2: the connector's client id");
    assert_eq!(claims["ver"], "2.0");
    assert_eq!(claims["scp"], CONNECTOR_SCOPE);
    assert_eq!(claims["azp"], AGENT_APP_ID);
    assert_eq!(claims["azpacr"], "1");
    for same in ["oid", "tid", "preferred_username", "name", "iss"] {
        assert_eq!(claims[same], a_claims[same], "{same}");
    }
    assert_eq!(claims["oid"], JANE_OID);
    // `sub` is pairwise: different from Token A's, stable across exchanges for this audience.
    assert_ne!(claims["sub"], a_claims["sub"]);
    assert!(claims["exp"].as_u64().unwrap() <= a_claims["exp"].as_u64().unwrap());
    assert!(claims["roles"].is_null() && claims["idtyp"].is_null() && claims["act"].is_null());

    // HTTP Basic client authentication, `.default`, and MSAL's decorated scopes: refresh and id
    // tokens come back, and `sub` is the same as before.
    let r = client(&server)
        .post(idp.token_endpoint(TENANT_DOMAIN))
        .basic_auth(AGENT_APP_ID, Some(AGENT_APP_SECRET))
        .form(&[
            ("grant_type", JWT_BEARER_GRANT),
            ("assertion", a.as_str()),
            ("scope", &format!("api://{CONNECTOR_APP_ID}/.default offline_access openid profile")),
            ("requested_token_use", "on_behalf_of"),
            ("client_info", "1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["scope"],
        format!("api://{CONNECTOR_APP_ID}/{CONNECTOR_SCOPE} offline_access openid profile")
    );
    assert!(body["refresh_token"].as_str().is_some_and(|t| t.len() > 20));
    assert!(body["client_info"].is_string());
    let again = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(again["sub"], claims["sub"]);
    assert_eq!(again["scp"], CONNECTOR_SCOPE);
    let id = verify(&server, body["id_token"].as_str().unwrap(), &idp.issuer(TENANT_ID), AGENT_APP_ID).await;
    assert_eq!(id["oid"], JANE_OID);

    // An assertion addressed to the client's Application ID URI is accepted too.
    let by_uri = idp
        .mint_access_token(
            JANE,
            AGENT_APP_ID,
            &format!("api://{AGENT_APP_ID}"),
            &[AGENT_SCOPE],
            Duration::from_secs(600),
        )
        .unwrap();
    let (status, body) = post(&server, &obo_form(by_uri.expose(), &connector_scope())).await;
    assert_eq!(status, 200, "{body}");

    assert_eq!(idp.obo_calls(), 3);
    assert_eq!(idp.grant_calls(JWT_BEARER_GRANT), 3);
    assert_eq!(idp.grant_calls("password"), 1);
}

#[tokio::test]
async fn obo_follows_the_resource_token_version() {
    let mut config = IdpConfig::default();
    config.apps[1].access_token_version = 1;
    let server = IdpServer::start(config).await.unwrap();
    let a = token_a(&server, Duration::from_secs(600));
    let (status, body) = post(&server, &obo_form(&a, &connector_scope())).await;
    assert_eq!(status, 200, "{body}");
    let claims = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(claims["ver"], "1.0");
    assert_eq!(claims["aud"], format!("api://{CONNECTOR_APP_ID}"), "v1: aud as requested");
    assert_eq!(claims["iss"], format!("https://sts.windows.net/{TENANT_ID}/"));
    assert_eq!(claims["appid"], AGENT_APP_ID);
    assert_eq!(claims["upn"], JANE);
    assert_eq!(claims["oid"], JANE_OID);
}

#[tokio::test]
async fn obo_lifetime_never_exceeds_the_assertion() {
    let server = IdpServer::start(IdpConfig::default()).await.unwrap();
    let a = token_a(&server, Duration::from_secs(120));
    let a_exp = claims_of(&a)["exp"].as_u64().unwrap();
    let (status, body) = post(&server, &obo_form(&a, &connector_scope())).await;
    assert_eq!(status, 200, "{body}");
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((115..=120).contains(&expires_in), "{expires_in}");
    let claims = claims_of(body["access_token"].as_str().unwrap());
    assert!(claims["exp"].as_u64().unwrap() <= a_exp);
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), expires_in);

    // The same for token exchange.
    let (status, body) = post(&server, &exchange_form(&a)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["expires_in"].as_u64().unwrap() <= 120);
    assert!(claims_of(body["access_token"].as_str().unwrap())["exp"].as_u64().unwrap() <= a_exp);
}

#[tokio::test]
async fn obo_errors_are_entra_shaped() {
    let server = IdpServer::start(IdpConfig::default()).await.unwrap();
    let idp = server.idp();
    let now = time::now();
    let a = token_a(&server, Duration::from_secs(600));
    let good = obo_form(&a, &connector_scope());

    let expired = sign(&server, &{
        let mut c = token_a_claims(&server);
        c.insert("iat".into(), (now - 7200).into());
        c.insert("nbf".into(), (now - 7200).into());
        c.insert("exp".into(), (now - 1).into());
        c
    });
    let not_yet = sign(&server, &{
        let mut c = token_a_claims(&server);
        c.insert("nbf".into(), (now + 600).into());
        c
    });
    let for_connector = idp
        .mint_access_token(JANE, AGENT_APP_ID, CONNECTOR_APP_ID, &[CONNECTOR_SCOPE], Duration::from_secs(600))
        .unwrap()
        .expose()
        .to_owned();
    let app_only = idp
        .mint_app_token(AGENT_APP_ID, AGENT_APP_ID, &["Agent.Invoke"], Duration::from_secs(600))
        .unwrap()
        .expose()
        .to_owned();
    let tampered = tamper_signature(&a);
    let foreign = {
        let key = SigningKey::generate().unwrap();
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": idp.current_kid()}).to_string();
        let input = crate::keys::signing_input(
            header.as_bytes(),
            serde_json::to_string(&token_a_claims(&server)).unwrap().as_bytes(),
        );
        let sig = key.sign(input.as_bytes(), jsonwebtoken::Algorithm::RS256).unwrap();
        format!("{input}.{sig}")
    };
    let retired = {
        let kid = idp.rotate_add_key().unwrap();
        let t = sign(&server, &token_a_claims(&server));
        idp.retire_key(&kid);
        t
    };
    let other_issuer = sign(&server, &{
        let mut c = token_a_claims(&server);
        c.insert("iss".into(), "https://attacker.example/v2.0".into());
        c
    });
    let unknown_user = sign(&server, &{
        let mut c = token_a_claims(&server);
        c.insert("oid".into(), "00000000-0000-4000-8000-000000000009".into());
        c
    });
    let duplicate_aud = idp
        .sign_jws(
            json!({"typ": "JWT", "alg": "RS256", "kid": idp.current_kid()}).to_string().as_bytes(),
            serde_json::to_string(&token_a_claims(&server))
                .unwrap()
                .replacen('{', &format!("{{\"aud\":\"{CONNECTOR_APP_ID}\","), 1)
                .as_bytes(),
            &idp.current_kid(),
            jsonwebtoken::Algorithm::RS256,
        )
        .unwrap();

    let cases: Vec<(&str, Vec<(&'static str, String)>, u16, &str, u64)> = vec![
        ("wrong secret", with(&good, "client_secret", "not-the-secret"), 401, "invalid_client", 7000215),
        ("public client (no secret)", without(&good, "client_secret"), 401, "invalid_client", 7000218),
        (
            "unknown client",
            with(&good, "client_id", "11111111-2222-3333-4444-555555555555"),
            400,
            "unauthorized_client",
            700016,
        ),
        ("expired assertion", obo_form(&expired, &connector_scope()), 400, "invalid_grant", 500133),
        ("assertion not yet valid", obo_form(&not_yet, &connector_scope()), 400, "invalid_grant", 500133),
        (
            "assertion for another app",
            obo_form(&for_connector, &connector_scope()),
            400,
            "invalid_grant",
            500131,
        ),
        ("tampered signature", obo_form(&tampered, &connector_scope()), 400, "invalid_grant", 50013),
        ("foreign key", obo_form(&foreign, &connector_scope()), 400, "invalid_grant", 50013),
        ("retired key", obo_form(&retired, &connector_scope()), 400, "invalid_grant", 50013),
        ("foreign issuer", obo_form(&other_issuer, &connector_scope()), 400, "invalid_grant", 50013),
        ("not a JWT", obo_form("not-a-jwt", &connector_scope()), 400, "invalid_request", 50027),
        ("duplicate aud claim", obo_form(&duplicate_aud, &connector_scope()), 400, "invalid_request", 50027),
        ("app-only assertion", obo_form(&app_only, &connector_scope()), 400, "unauthorized_client", 7000114),
        ("user not in directory", obo_form(&unknown_user, &connector_scope()), 400, "invalid_grant", 50034),
        (
            "scope not exposed",
            obo_form(&a, &format!("api://{CONNECTOR_APP_ID}/admin")),
            400,
            "invalid_scope",
            70011,
        ),
        ("bare scope", obo_form(&a, CONNECTOR_SCOPE), 400, "invalid_scope", 70011),
        ("only OIDC scopes", obo_form(&a, "openid offline_access"), 400, "invalid_scope", 70011),
        (
            "two resources",
            obo_form(&a, &format!("{} api://{AGENT_APP_ID}/{AGENT_SCOPE}", connector_scope())),
            400,
            "invalid_scope",
            28000,
        ),
        ("unknown resource", obo_form(&a, "api://nowhere/x"), 400, "invalid_resource", 500011),
        (
            "missing requested_token_use",
            without(&good, "requested_token_use"),
            400,
            "invalid_request",
            900144,
        ),
        (
            "other requested_token_use",
            with(&good, "requested_token_use", "bearer"),
            400,
            "invalid_request",
            9002313,
        ),
        ("missing assertion", without(&good, "assertion"), 400, "invalid_request", 900144),
        ("missing scope", without(&good, "scope"), 400, "invalid_request", 900144),
    ];
    let count = cases.len() as u64;
    for (name, form, status, error, code) in cases {
        let (got, body) = post(&server, &form).await;
        assert_eq!(got, status, "{name}: {body}");
        assert_entra_error(&body, error, code);
        let text = body.to_string();
        assert!(!text.contains(&a) && !text.contains("eyJ"), "{name}: no token in an error");
        assert!(!text.contains(AGENT_APP_SECRET), "{name}: no secret in an error");
    }
    // The expiry text names both times, like Entra's.
    let (_, body) = post(&server, &obo_form(&expired, &connector_scope())).await;
    let description = body["error_description"].as_str().unwrap();
    assert!(description.contains("Assertion is not within its valid time range"), "{description}");
    assert!(description.contains("expiry time of assertion"), "{description}");
    // Jane's token is for the home tenant: another tenant's endpoint refuses it.
    let (got, body) = token(&server, OTHER_TENANT_ID, &as_refs(&good)).await;
    assert_eq!(got, 400);
    assert_entra_error(&body, "invalid_grant", 50013);
    // ... and `organizations` takes the tenant from the assertion.
    let (got, body) = token(&server, "organizations", &as_refs(&good)).await;
    assert_eq!(got, 200, "{body}");
    assert_eq!(idp.obo_calls(), count + 3);
}

#[tokio::test]
async fn obo_needs_consent_for_the_downstream_api() {
    let mut config = IdpConfig::default();
    config.consents.retain(|c| c.resource != CONNECTOR_APP_ID);
    let server = IdpServer::start(config).await.unwrap();
    let a = token_a(&server, Duration::from_secs(600));
    for scope in [connector_scope(), format!("api://{CONNECTOR_APP_ID}/.default")] {
        let (status, body) = post(&server, &obo_form(&a, &scope)).await;
        assert_eq!(status, 400, "{body}");
        assert_entra_error(&body, "invalid_grant", 65001);
        assert_eq!(body["suberror"], "consent_required");
        let (status, body) = post(&server, &with(&exchange_form(&a), "scope", &scope)).await;
        assert_eq!(status, 400, "{body}");
        assert_entra_error(&body, "invalid_grant", 65001);
    }
}

#[tokio::test]
async fn token_exchange_issues_token_b_with_issued_token_type_and_act() {
    let server = IdpServer::start(IdpConfig::default()).await.unwrap();
    let idp = server.idp();
    let a = token_a(&server, Duration::from_secs(600));
    let a_claims = claims_of(&a);

    let (status, body) = post(&server, &exchange_form(&a)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN_TYPE);
    assert_eq!(body["token_type"], "Bearer");
    // Bare scope names are relative to the audience, echoed as the client named it.
    assert_eq!(body["scope"], format!("{CONNECTOR_APP_ID}/{CONNECTOR_SCOPE}"));
    assert!(body["expires_in"].as_u64().unwrap() <= 600);
    assert!(body["ext_expires_in"].is_null() && body["refresh_token"].is_null());
    let claims =
        verify(&server, body["access_token"].as_str().unwrap(), &idp.issuer(TENANT_ID), CONNECTOR_APP_ID)
            .await;
    assert_eq!(claims["scp"], CONNECTOR_SCOPE);
    assert_eq!(claims["azp"], AGENT_APP_ID);
    for same in ["oid", "tid", "preferred_username", "name"] {
        assert_eq!(claims[same], a_claims[same], "{same}");
    }
    assert!(claims["act"].is_null(), "no actor token, no act");
    // The same user and audience gets the same pairwise `sub` as On-Behalf-Of gives.
    let (_, obo) = post(&server, &obo_form(&a, &connector_scope())).await;
    assert_eq!(claims_of(obo["access_token"].as_str().unwrap())["sub"], claims["sub"]);

    // `resource` instead of `audience`, no scope (the consented default), `jwt` requested.
    let form = with(
        &without(&without(&exchange_form(&a), "audience"), "scope"),
        "resource",
        &format!("api://{CONNECTOR_APP_ID}"),
    );
    let (status, body) = post(&server, &with(&form, "requested_token_type", JWT_TOKEN_TYPE)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issued_token_type"], JWT_TOKEN_TYPE);
    assert_eq!(body["scope"], connector_scope());
    // A fully qualified scope alone names the target.
    let (status, body) =
        post(&server, &with(&without(&exchange_form(&a), "audience"), "scope", &connector_scope())).await;
    assert_eq!(status, 200, "{body}");

    // An actor token: `act.sub` is the actor's subject, `act.client_id` its client.
    let actor =
        idp.mint_app_token(AGENT_APP_ID, AGENT_APP_ID, &["Agent.Invoke"], Duration::from_secs(600)).unwrap();
    let actor_sub = claims_of(actor.expose())["sub"].clone();
    let mut form = exchange_form(&a);
    form.push(("actor_token", actor.expose().to_owned()));
    form.push(("actor_token_type", ACCESS_TOKEN_TYPE.into()));
    let (status, body) = post(&server, &form).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims_of(body["access_token"].as_str().unwrap())["act"],
        json!({"sub": actor_sub, "client_id": AGENT_APP_ID})
    );
    // A subject that was already delegated: the earlier actor nests inside the new one.
    let delegated = sign(&server, &{
        let mut c = token_a_claims(&server);
        c.insert("act".into(), json!({"sub": "earlier-actor"}));
        c
    });
    let mut form = exchange_form(&delegated);
    form.push(("actor_token", actor.expose().to_owned()));
    form.push(("actor_token_type", ACCESS_TOKEN_TYPE.into()));
    let (status, body) = post(&server, &form).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims_of(body["access_token"].as_str().unwrap())["act"],
        json!({"sub": actor_sub, "client_id": AGENT_APP_ID, "act": {"sub": "earlier-actor"}})
    );
    assert_eq!(idp.token_exchange_calls(), 5);
    assert_eq!(idp.obo_calls(), 1);
}

#[tokio::test]
async fn token_exchange_errors() {
    let server = IdpServer::start(IdpConfig::default()).await.unwrap();
    let idp = server.idp();
    let now = time::now();
    let a = token_a(&server, Duration::from_secs(600));
    let good = exchange_form(&a);
    let expired = sign(&server, &{
        let mut c = token_a_claims(&server);
        c.insert("exp".into(), (now - 1).into());
        c
    });
    let for_connector = idp
        .mint_access_token(JANE, AGENT_APP_ID, CONNECTOR_APP_ID, &[CONNECTOR_SCOPE], Duration::from_secs(600))
        .unwrap()
        .expose()
        .to_owned();
    let tampered = tamper_signature(&a);
    let mut with_actor = good.clone();
    with_actor.push(("actor_token", "garbage".into()));
    with_actor.push(("actor_token_type", ACCESS_TOKEN_TYPE.into()));

    let cases: Vec<(&str, Vec<(&'static str, String)>, u16, &str, u64)> = vec![
        ("bad subject signature", exchange_form(&tampered), 400, "invalid_request", 50013),
        ("expired subject", exchange_form(&expired), 400, "invalid_request", 500133),
        ("subject for another app", exchange_form(&for_connector), 400, "invalid_request", 500131),
        ("subject not a JWT", exchange_form("opaque"), 400, "invalid_request", 50027),
        ("bad actor token", with_actor, 400, "invalid_request", 50027),
        (
            "unsupported subject_token_type",
            with(&good, "subject_token_type", "urn:ietf:params:oauth:token-type:saml2"),
            400,
            "invalid_request",
            9002313,
        ),
        (
            "actor_token_type alone",
            with(&good, "actor_token_type", ACCESS_TOKEN_TYPE),
            400,
            "invalid_request",
            9002313,
        ),
        ("actor_token alone", with(&good, "actor_token", &a), 400, "invalid_request", 900144),
        (
            "unsupported requested_token_type",
            with(&good, "requested_token_type", "urn:ietf:params:oauth:token-type:id_token"),
            400,
            "invalid_request",
            9002313,
        ),
        ("missing subject_token", without(&good, "subject_token"), 400, "invalid_request", 900144),
        ("missing subject_token_type", without(&good, "subject_token_type"), 400, "invalid_request", 900144),
        ("unknown audience", with(&good, "audience", "api://nowhere"), 400, "invalid_target", 500011),
        (
            "audience and resource disagree",
            with(&good, "resource", &format!("api://{AGENT_APP_ID}")),
            400,
            "invalid_target",
            28000,
        ),
        (
            "scope names another resource",
            with(&good, "scope", &format!("api://{AGENT_APP_ID}/{AGENT_SCOPE}")),
            400,
            "invalid_target",
            28000,
        ),
        (
            "unknown resource in scope",
            with(&without(&good, "audience"), "scope", "api://nowhere/x"),
            400,
            "invalid_target",
            500011,
        ),
        ("no target at all", without(&without(&good, "audience"), "scope"), 400, "invalid_request", 900144),
        ("scope not exposed", with(&good, "scope", "admin"), 400, "invalid_scope", 70011),
        ("wrong secret", with(&good, "client_secret", "nope"), 401, "invalid_client", 7000215),
        ("no secret", without(&good, "client_secret"), 401, "invalid_client", 7000218),
    ];
    for (name, form, status, error, code) in cases {
        let (got, body) = post(&server, &form).await;
        assert_eq!(got, status, "{name}: {body}");
        assert_entra_error(&body, error, code);
        assert!(!body.to_string().contains("eyJ"), "{name}: no token in an error");
    }
}

#[tokio::test]
async fn token_faults_apply_to_exchange_grants_only_and_count() {
    let server = IdpServer::start(IdpConfig::default()).await.unwrap();
    let idp = server.idp();
    let a = token_a(&server, Duration::from_secs(600));
    let obo = obo_form(&a, &connector_scope());

    // One 503, then normal service.
    idp.set_token_fault_times(TokenFault::Status5xx(503), 1);
    let (status, body) = post(&server, &obo).await;
    assert_eq!(status, 503);
    assert_entra_error(&body, "temporarily_unavailable", 90033);
    let (status, _) = post(&server, &obo).await;
    assert_eq!(status, 200);

    // 500 is a server_error; a non-5xx status is coerced to 503.
    idp.set_token_fault_times(TokenFault::Status5xx(500), 1);
    let (status, body) = post(&server, &obo).await;
    assert_eq!(status, 500);
    assert_eq!(body["error"], "server_error");
    idp.set_token_fault_times(TokenFault::Status5xx(404), 1);
    assert_eq!(post(&server, &obo).await.0, 503);

    // Consent, twice, for both grants; the password grant is never faulted.
    idp.set_token_fault_times(TokenFault::ConsentRequired, 2);
    let scope = format!("api://{AGENT_APP_ID}/{AGENT_SCOPE}");
    assert_eq!(post(&server, &jane_password_form(&scope)).await.0, 200);
    let (status, body) = post(&server, &obo).await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "invalid_grant", 65001);
    assert_eq!(body["suberror"], "consent_required");
    let (status, body) = post(&server, &exchange_form(&a)).await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "invalid_grant", 65001);
    assert_eq!(post(&server, &obo).await.0, 200);

    // Interaction required with a claims challenge, until switched off.
    let challenge = r#"{"access_token":{"capolids":{"essential":true,"values":["9ab03e19-ed42-4168-b6b7-7001fb3e933a"]}}}"#;
    idp.set_token_fault(TokenFault::InteractionRequired { claims: challenge.into() });
    for _ in 0..3 {
        let (status, body) = post(&server, &obo).await;
        assert_eq!(status, 400);
        assert_entra_error(&body, "interaction_required", 50079);
        assert_eq!(body["claims"], challenge, "claims is a JSON string");
    }
    idp.set_token_fault(TokenFault::None);
    assert_eq!(post(&server, &obo).await.0, 200);

    // Slow: answered normally after the delay.
    idp.set_token_fault_times(TokenFault::Slow(Duration::from_millis(400)), 1);
    let started = Instant::now();
    assert_eq!(post(&server, &obo).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(400));

    // Hang: the client times out; the next request is served.
    idp.set_token_fault_times(TokenFault::Hang, 1);
    let impatient = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(server.ca_pem().as_bytes()).unwrap()])
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let error = impatient.post(idp.token_endpoint(TENANT_ID)).form(&as_refs(&obo)).send().await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(post(&server, &obo).await.0, 200);

    // Faults count too: every request that reached the IdP.
    assert_eq!(idp.obo_calls(), 13);
    assert_eq!(idp.token_exchange_calls(), 1);
    assert_eq!(idp.grant_calls("password"), 1);
    assert_eq!(idp.token_faults_applied(), 10);
}

#[tokio::test]
async fn concurrent_obo_requests_are_each_counted() {
    let server = IdpServer::start(IdpConfig::default()).await.unwrap();
    let a = token_a(&server, Duration::from_secs(600));
    let form = obo_form(&a, &connector_scope());
    server.idp().set_token_fault(TokenFault::Slow(Duration::from_millis(100)));
    let c = client(&server);
    let url = server.idp().token_endpoint(TENANT_ID);
    let calls = (0..20).map(|_| {
        let (c, url, form) = (c.clone(), url.clone(), form.clone());
        async move { c.post(url).form(&form).send().await.unwrap().status().as_u16() }
    });
    let statuses = futures_join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(server.idp().obo_calls(), 20);
}

/// Runs the futures concurrently on the current runtime (no extra dependency).
async fn futures_join_all<F: std::future::Future<Output = u16> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<u16> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[test]
fn fault_and_handle_debug_show_no_credentials() {
    let idp = crate::Idp::new(IdpConfig::default()).unwrap();
    idp.set_token_fault(TokenFault::InteractionRequired { claims: "{}".into() });
    assert!(!format!("{idp:?}").contains(AGENT_APP_SECRET));
    assert_eq!(idp.take_token_fault(), TokenFault::InteractionRequired { claims: "{}".into() });
    idp.set_token_fault_times(TokenFault::Hang, 0);
    assert_eq!(idp.take_token_fault(), TokenFault::None);
}
