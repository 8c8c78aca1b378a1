#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use delegate_devstack_idp::defaults::*;
use delegate_devstack_idp::{IdpConfig, IdpServer};
use serde_json::{Value, json};

const AKID: &str = "AKIDDEVSTACK";

struct Fixture {
    idp: IdpServer,
    identity: AgentCoreIdentity,
    url: String,
    http: reqwest::Client,
}

async fn fixture() -> Fixture {
    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(idp.ca_pem().as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10))
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
    config.leeway_seconds = 0;
    config.providers.insert(
        "machine".into(),
        CredentialProvider {
            token_endpoint: idp.idp().token_endpoint(TENANT_ID),
            client_id: AGENT_APP_ID.into(),
            client_secret: Secret::new(AGENT_APP_SECRET),
            on_behalf_of: false,
        },
    );
    let identity = AgentCoreIdentity::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = identity.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Fixture { idp, identity, url, http: reqwest::Client::new() }
}

fn jane_token(f: &Fixture) -> Secret {
    f.idp
        .idp()
        .mint_access_token(JANE, AGENT_APP_ID, AGENT_APP_ID, &[AGENT_SCOPE], Duration::from_secs(600))
        .unwrap()
}

fn sigv4(akid: &str) -> (String, &'static str) {
    (
        format!(
            "AWS4-HMAC-SHA256 Credential={akid}/20261204/us-east-1/bedrock-agentcore/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, Signature={}",
            "0a".repeat(32)
        ),
        "20261204T200000Z",
    )
}

async fn post(
    f: &Fixture,
    path: &str,
    auth: Option<(String, &str)>,
    body: &Value,
) -> (u16, Option<String>, Value) {
    let mut req = f.http.post(format!("{}{path}", f.url)).json(body);
    if let Some((authz, date)) = auth {
        req = req.header("authorization", authz).header("x-amz-date", date);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let kind = resp.headers().get("x-amzn-errortype").map(|v| v.to_str().unwrap().to_owned());
    (status, kind, resp.json().await.unwrap())
}

async fn mint_wat(f: &Fixture, user_token: &Secret) -> String {
    let (status, kind, body) = post(
        f,
        "/identities/GetWorkloadAccessTokenForJWT",
        None,
        &json!({"workloadName": ARTICLE_WORKLOAD, "userToken": user_token.expose()}),
    )
    .await;
    assert_eq!((status, kind), (200, None), "{body}");
    body["workloadAccessToken"].as_str().unwrap().to_owned()
}

fn token_request(wat: &str) -> Value {
    json!({
        "workloadIdentityToken": wat,
        "resourceCredentialProviderName": ARTICLE_PROVIDER,
        "scopes": [format!("api://{CONNECTOR_APP_ID}/{CONNECTOR_SCOPE}")],
        "oauth2Flow": ON_BEHALF_OF,
    })
}

fn claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
        .unwrap()
}

#[tokio::test]
async fn jane_gets_an_on_behalf_of_token_for_servicenow() {
    let f = fixture().await;
    let user = jane_token(&f);
    let wat = mint_wat(&f, &user).await;
    assert!(!wat.contains(user.expose()), "the workload access token is opaque");
    let (status, kind, body) =
        post(&f, "/identities/oauth2/token", Some(sigv4(AKID)), &token_request(&wat)).await;
    assert_eq!((status, kind), (200, None), "{body}");
    let token = body["accessToken"].as_str().unwrap();
    let c = claims(token);
    assert_eq!(c["aud"], CONNECTOR_APP_ID);
    assert_eq!(c["oid"], JANE_OID);
    assert_eq!(f.idp.idp().obo_calls(), 1);
    let counters = f.identity.counters();
    assert_eq!(counters.workload_tokens_issued, 1);
    assert_eq!(counters.resource_token_calls, 1);
    assert_eq!(counters.obo_exchanges, 1);
    assert_eq!(counters.rejected, 0);
}

#[tokio::test]
async fn workload_access_tokens_are_bound_to_their_user() {
    let f = fixture().await;
    let jane = mint_wat(&f, &jane_token(&f)).await;
    let hannah_token = f
        .idp
        .idp()
        .mint_access_token(HR_ANALYST, AGENT_APP_ID, AGENT_APP_ID, &[AGENT_SCOPE], Duration::from_secs(600))
        .unwrap();
    let hannah = mint_wat(&f, &hannah_token).await;
    assert_ne!(jane, hannah);
    let (_, _, a) = post(&f, "/identities/oauth2/token", Some(sigv4(AKID)), &token_request(&jane)).await;
    let (_, _, b) = post(&f, "/identities/oauth2/token", Some(sigv4(AKID)), &token_request(&hannah)).await;
    assert_eq!(claims(a["accessToken"].as_str().unwrap())["oid"], JANE_OID);
    assert_ne!(claims(b["accessToken"].as_str().unwrap())["oid"], JANE_OID);
}

#[tokio::test]
async fn invalid_user_tokens_get_no_workload_access_token() {
    let f = fixture().await;
    let good = jane_token(&f);
    // Tampered signature.
    let mut bad = good.expose().to_owned();
    let last = bad.pop().unwrap();
    bad.push(if last == 'A' { 'B' } else { 'A' });
    // Expired.
    let mut expired = f
        .idp
        .idp()
        .access_token_claims(&delegate_devstack_idp::TokenSpec {
            tenant: TENANT_ID.into(),
            user: Some(JANE.into()),
            client_id: AGENT_APP_ID.into(),
            audience: AGENT_APP_ID.into(),
            scopes: vec![AGENT_SCOPE.into()],
            roles: Vec::new(),
            version: delegate_devstack_idp::TokenVersion::V2,
            lifetime: Duration::from_secs(600),
            client_authenticated: false,
        })
        .unwrap();
    expired.insert("exp".into(), json!(now() - 120));
    let expired = f.idp.idp().sign_claims(&expired).unwrap();
    for token in [bad.as_str(), expired.expose(), "not-a-jwt"] {
        let (status, kind, body) = post(
            &f,
            "/identities/GetWorkloadAccessTokenForJWT",
            None,
            &json!({"workloadName": ARTICLE_WORKLOAD, "userToken": token}),
        )
        .await;
        assert_eq!((status, kind.as_deref()), (401, Some("UnauthorizedException")), "{body}");
        assert!(!body.to_string().contains(token));
    }
    let (status, kind, _) =
        post(&f, "/identities/GetWorkloadAccessTokenForJWT", None, &json!({"userToken": good.expose()}))
            .await;
    assert_eq!((status, kind.as_deref()), (400, Some("ValidationException")));
    assert_eq!(f.identity.counters().workload_tokens_issued, 0);
}

#[tokio::test]
async fn resource_token_requests_are_validated_like_aws() {
    let f = fixture().await;
    let wat = mint_wat(&f, &jane_token(&f)).await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"resourceCredentialProviderName": ARTICLE_PROVIDER, "scopes": [], "oauth2Flow": ON_BEHALF_OF}),
            400,
            "ValidationException",
        ),
        (
            json!({"workloadIdentityToken": wat, "resourceCredentialProviderName": "bad name!", "scopes": [], "oauth2Flow": ON_BEHALF_OF}),
            400,
            "ValidationException",
        ),
        (
            json!({"workloadIdentityToken": wat, "resourceCredentialProviderName": "x".repeat(129), "scopes": [], "oauth2Flow": ON_BEHALF_OF}),
            400,
            "ValidationException",
        ),
        (
            json!({"workloadIdentityToken": wat, "resourceCredentialProviderName": ARTICLE_PROVIDER, "oauth2Flow": ON_BEHALF_OF}),
            400,
            "ValidationException",
        ),
        (
            json!({"workloadIdentityToken": wat, "resourceCredentialProviderName": ARTICLE_PROVIDER, "scopes": []}),
            400,
            "ValidationException",
        ),
        (
            json!({"workloadIdentityToken": wat, "resourceCredentialProviderName": ARTICLE_PROVIDER, "scopes": [], "oauth2Flow": "IMPLICIT"}),
            400,
            "ValidationException",
        ),
        (
            json!({"workloadIdentityToken": "x".repeat(131_073), "resourceCredentialProviderName": ARTICLE_PROVIDER, "scopes": [], "oauth2Flow": ON_BEHALF_OF}),
            400,
            "ValidationException",
        ),
        // A delegated provider refuses the machine and 3-legged flows.
        (
            json!({"workloadIdentityToken": wat, "resourceCredentialProviderName": ARTICLE_PROVIDER, "scopes": [], "oauth2Flow": "M2M"}),
            400,
            "ValidationException",
        ),
        (
            json!({"workloadIdentityToken": wat, "resourceCredentialProviderName": ARTICLE_PROVIDER, "scopes": [], "oauth2Flow": "USER_FEDERATION"}),
            400,
            "ValidationException",
        ),
        (
            json!({"workloadIdentityToken": wat, "resourceCredentialProviderName": "machine", "scopes": [], "oauth2Flow": ON_BEHALF_OF}),
            400,
            "ValidationException",
        ),
        (
            json!({"workloadIdentityToken": wat, "resourceCredentialProviderName": "NoSuchProvider", "scopes": [], "oauth2Flow": ON_BEHALF_OF}),
            404,
            "ResourceNotFoundException",
        ),
        (
            json!({"workloadIdentityToken": "wat-unknown", "resourceCredentialProviderName": ARTICLE_PROVIDER, "scopes": [], "oauth2Flow": ON_BEHALF_OF}),
            403,
            "AccessDeniedException",
        ),
    ];
    for (body, want_status, want_kind) in cases {
        let (status, kind, answer) = post(&f, "/identities/oauth2/token", Some(sigv4(AKID)), &body).await;
        assert_eq!((status, kind.as_deref()), (want_status, Some(want_kind)), "{body} -> {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(!answer.to_string().contains(&wat), "no workload access token in errors");
    }
    let m2m = json!({"workloadIdentityToken": wat, "resourceCredentialProviderName": ARTICLE_PROVIDER, "scopes": [], "oauth2Flow": "M2M"});
    let (_, _, answer) = post(&f, "/identities/oauth2/token", Some(sigv4(AKID)), &m2m).await;
    assert!(answer["message"].as_str().unwrap().contains("ON_BEHALF_OF_TOKEN_EXCHANGE"), "{answer}");
    assert_eq!(f.identity.counters().obo_exchanges, 0);
}

#[tokio::test]
async fn resource_token_requests_need_a_sigv4_shaped_signature() {
    let f = fixture().await;
    let wat = mint_wat(&f, &jane_token(&f)).await;
    let body = token_request(&wat);
    let (status, kind, _) = post(&f, "/identities/oauth2/token", None, &body).await;
    assert_eq!((status, kind.as_deref()), (403, Some("MissingAuthenticationTokenException")));
    let bad_shapes = [
        ("Bearer abc".to_owned(), "20261204T200000Z"),
        (sigv4(AKID).0.replace("bedrock-agentcore", "s3"), "20261204T200000Z"),
        (sigv4(AKID).0.replace("Signature=0a", "Signature=zz"), "20261204T200000Z"),
        (sigv4(AKID).0.replace("content-type;host;x-amz-date", "host"), "20261204T200000Z"),
        (sigv4(AKID).0, "20250101T000000Z"),
    ];
    for auth in bad_shapes {
        let (status, kind, answer) = post(&f, "/identities/oauth2/token", Some(auth.clone()), &body).await;
        assert_eq!(
            (status, kind.as_deref()),
            (403, Some("IncompleteSignatureException")),
            "{auth:?} {answer}"
        );
    }
    let (status, kind, _) = post(&f, "/identities/oauth2/token", Some(sigv4("AKIDOTHER")), &body).await;
    assert_eq!((status, kind.as_deref()), (403, Some("UnrecognizedClientException")));
    assert_eq!(f.identity.counters().obo_exchanges, 0);
    let (status, _, _) = post(&f, "/identities/oauth2/token", Some(sigv4(AKID)), &body).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn revoked_workload_access_tokens_are_refused() {
    let f = fixture().await;
    let wat = mint_wat(&f, &jane_token(&f)).await;
    f.identity.revoke_all();
    let (status, kind, _) =
        post(&f, "/identities/oauth2/token", Some(sigv4(AKID)), &token_request(&wat)).await;
    assert_eq!((status, kind.as_deref()), (403, Some("AccessDeniedException")));
}

#[tokio::test]
async fn idp_refusals_become_aws_errors_without_detail() {
    let f = fixture().await;
    let wat = mint_wat(&f, &jane_token(&f)).await;
    let mut body = token_request(&wat);
    body["scopes"] = json!(["api://no-such-resource/.default"]);
    let (status, kind, answer) = post(&f, "/identities/oauth2/token", Some(sigv4(AKID)), &body).await;
    assert!(status == 400 || status == 403, "{status} {answer}");
    assert!(kind.is_some());
    assert!(answer["message"].as_str().unwrap().contains("token exchange failed"), "{answer}");
    assert!(!answer.to_string().contains(AGENT_APP_SECRET));
}

#[tokio::test]
async fn injected_resource_token_faults_answer_as_aws_would() {
    let f = fixture().await;
    let wat = mint_wat(&f, &jane_token(&f)).await;
    let request = token_request(&wat);
    let ask = || post(&f, "/identities/oauth2/token", Some(sigv4(AKID)), &request);
    f.identity.set_resource_token_fault(ResourceTokenFault::Throttling);
    let (status, kind, _) = ask().await;
    assert_eq!((status, kind.as_deref()), (429, Some("ThrottlingException")));
    f.identity.set_resource_token_fault(ResourceTokenFault::NoAccessToken);
    assert_eq!(ask().await, (200, None, json!({})));
    f.identity.set_resource_token_fault(ResourceTokenFault::ConsentNeeded);
    let (status, _, body) = ask().await;
    assert_eq!(status, 200);
    assert!(body["authorizationUrl"].as_str().unwrap().starts_with("https://"), "{body}");
    assert!(body["sessionUri"].as_str().unwrap().starts_with("urn:ietf:params:oauth:request_uri:"));
    assert!(body.get("accessToken").is_none());
    assert_eq!(f.identity.counters().obo_exchanges, 0, "no fault exchanges");
    f.identity.set_resource_token_fault(ResourceTokenFault::None);
    let (status, _, body) = ask().await;
    assert_eq!(status, 200);
    assert!(body["accessToken"].as_str().unwrap().starts_with("eyJ"));
}
