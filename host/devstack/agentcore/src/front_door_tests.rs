//! Front door tests: a devstack IdP for real tokens, a recording container and a recording
//! Identity endpoint, all on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use axum::routing::post;
use delegate_devstack_idp::{IdpConfig, IdpServer, TokenSpec, TokenVersion, defaults};
use std::sync::Mutex;

const ARN: &str = "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/servicenow_agent-Ab12Cd34Ef";
const WAT: &str = "wat-minted-by-identity-0123456789abcdef";

/// What the container saw, and how it answers.
#[derive(Clone, Default)]
struct Container {
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    status: Arc<Mutex<u16>>,
    /// When set, the answer is an SSE stream whose second event waits for this signal.
    gate: Arc<Mutex<Option<tokio::sync::oneshot::Receiver<()>>>>,
}

async fn container_invocations(
    State(c): State<Container>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    c.seen.lock().unwrap().push(headers);
    c.bodies.lock().unwrap().push(body.to_vec());
    let status = *c.status.lock().unwrap();
    if let Some(gate) = c.gate.lock().unwrap().take() {
        let stream = futures_stream(gate);
        return Response::builder()
            .status(200)
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    (StatusCode::from_u16(status).unwrap(), [("content-type", "application/json")], r#"{"response":"hi"}"#)
        .into_response()
}

fn futures_stream(
    gate: tokio::sync::oneshot::Receiver<()>,
) -> impl futures::Stream<Item = Result<axum::body::Bytes, std::io::Error>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        let _ = tx.send(Ok("data: \"first\"\n\n".into())).await;
        let _ = gate.await;
        let _ = tx.send(Ok("data: \"second\"\n\n".into())).await;
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn start_container() -> (String, Container) {
    let c = Container { status: Arc::new(Mutex::new(200)), ..Default::default() };
    let app = axum::Router::new().route("/invocations", post(container_invocations)).with_state(c.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(delegate_devstack_tls::serve_http(listener, app, std::future::pending()));
    (url, c)
}

/// A recording `GetWorkloadAccessTokenForJWT`: remembers the request, answers [`WAT`].
async fn start_identity() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/identities/GetWorkloadAccessTokenForJWT",
        post(move |axum::Json(v): axum::Json<Value>| async move {
            s.lock().unwrap().push(v);
            axum::Json(json!({ "workloadAccessToken": WAT }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(delegate_devstack_tls::serve_http(listener, app, std::future::pending()));
    (url, seen)
}

struct Setup {
    idp: IdpServer,
    server: FrontDoorServer,
    container: Container,
    identity_seen: Arc<Mutex<Vec<Value>>>,
    http: reqwest::Client,
}

fn idp_client(idp: &IdpServer) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(idp.ca_pem().as_bytes()).unwrap()])
        .build()
        .unwrap()
}

/// The article's authorizer (with the field names the API really has) in front of a recording
/// container; `edit` may change the config.
async fn setup(edit: impl FnOnce(&mut FrontDoorConfig)) -> Setup {
    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    let (container_url, container) = start_container().await;
    let (identity_url, identity_seen) = start_identity().await;
    let authorizer = json!({"customJWTAuthorizer": {
        "discoveryUrl": idp.idp().discovery_url(defaults::TENANT_ID),
        "allowedAudience": [defaults::AGENT_APP_ID],
    }});
    let mut config = FrontDoorConfig::from_api_json(
        ARN,
        &authorizer.to_string(),
        &["Authorization", "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant"],
        &container_url,
    )
    .unwrap();
    config.workload_identity =
        Some(WorkloadIdentity { identity_url, workload_name: "servicenow-agent-workload".into() });
    edit(&mut config);
    let door = FrontDoor::new(config, idp_client(&idp)).unwrap();
    let server = door.serve("127.0.0.1:0".parse().unwrap(), None).await.unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    Setup { idp, server, container, identity_seen, http }
}

impl Setup {
    fn token(&self) -> String {
        self.idp
            .idp()
            .mint_access_token(
                defaults::JANE,
                defaults::AGENT_APP_ID,
                defaults::AGENT_APP_ID,
                &[defaults::AGENT_SCOPE],
                Duration::from_secs(600),
            )
            .unwrap()
            .expose()
            .to_owned()
    }

    fn claims(&self) -> Map<String, Value> {
        self.idp
            .idp()
            .access_token_claims(&TokenSpec {
                tenant: defaults::TENANT_ID.into(),
                user: Some(defaults::JANE.into()),
                client_id: defaults::AGENT_APP_ID.into(),
                audience: defaults::AGENT_APP_ID.into(),
                scopes: vec![defaults::AGENT_SCOPE.into()],
                roles: Vec::new(),
                version: TokenVersion::V2,
                lifetime: Duration::from_secs(600),
                client_authenticated: false,
            })
            .unwrap()
    }

    fn sign(&self, claims: &Map<String, Value>) -> String {
        self.idp.idp().sign_claims(claims).unwrap().expose().to_owned()
    }

    fn post(&self) -> reqwest::RequestBuilder {
        self.http.post(&self.server.invocation_url).body(r#"{"prompt":"hi"}"#)
    }

    fn counters(&self) -> FrontDoorCounters {
        self.server.door.counters()
    }
}

fn error_type(resp: &reqwest::Response) -> String {
    resp.headers()["x-amzn-errortype"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn missing_token_is_401_with_resource_metadata_and_the_container_sees_nothing() {
    let s = setup(|_| {}).await;
    let resp = s.post().send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(error_type(&resp), "UnauthorizedException");
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_owned();
    let expected = format!(
        "Bearer resource_metadata=\"{}/runtimes/{}/invocations/.well-known/oauth-protected-resource?qualifier=DEFAULT\"",
        s.server.base_url,
        encode_arn(ARN)
    );
    assert_eq!(challenge, expected);
    assert!(challenge.contains("/runtimes/arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A123456789012%3Aruntime%2Fservicenow_agent-Ab12Cd34Ef/invocations/"), "{challenge}");
    let body: Value = resp.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("missing"), "{body}");
    // A non-Bearer scheme counts as missing, too.
    let resp = s.post().header("authorization", "Basic amFuZTpwdw==").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(s.counters().missing_token, 2);
    assert_eq!(s.counters().container_requests, 0);
    assert!(s.container.seen.lock().unwrap().is_empty());
    assert!(s.identity_seen.lock().unwrap().is_empty());

    // The advertised metadata document (RFC 9728) names the resource and the issuer.
    let url = challenge.split('"').nth(1).unwrap();
    let doc: Value = s.http.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["resource"], s.server.invocation_url);
    assert_eq!(doc["authorization_servers"], json!([s.idp.idp().issuer(defaults::TENANT_ID)]));
    assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
}

#[tokio::test]
async fn invalid_tokens_never_reach_the_container_401_by_default_403_when_configured() {
    for (status, forbidden) in [(401, false), (403, true)] {
        let s = setup(|c| {
            if forbidden {
                c.invalid_token_status = InvalidTokenStatus::Forbidden;
            }
        })
        .await;
        let good = s.token();
        let mut expired = s.claims();
        let now = expired["iat"].as_i64().unwrap();
        expired.insert("exp".into(), json!(now - 120));
        let mut not_yet = s.claims();
        not_yet.insert("nbf".into(), json!(now + 3600));
        let mut wrong_iss = s.claims();
        wrong_iss.insert("iss".into(), json!("https://login.example/other/v2.0"));
        let mut wrong_aud = s.claims();
        wrong_aud.insert("aud".into(), json!(defaults::CONNECTOR_APP_ID));
        let (head, rest) = good.split_once('.').unwrap();
        let (payload, sig) = rest.split_once('.').unwrap();
        let mut flipped = sig.as_bytes().to_vec();
        flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
        let bad_sig = format!("{head}.{payload}.{}", String::from_utf8(flipped).unwrap());
        let none_alg = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        let cases = [
            ("expired", s.sign(&expired)),
            ("not yet valid", s.sign(&not_yet)),
            ("wrong issuer", s.sign(&wrong_iss)),
            ("wrong audience", s.sign(&wrong_aud)),
            ("bad signature", bad_sig),
            ("alg none", none_alg),
            ("garbage", "not-a-jwt".into()),
        ];
        for (name, token) in &cases {
            let resp = s.post().bearer_auth(token).send().await.unwrap();
            assert_eq!(resp.status(), status, "{name}");
            let expected = if forbidden { "AccessDeniedException" } else { "UnauthorizedException" };
            assert_eq!(error_type(&resp), expected, "{name}");
            assert!(!resp.headers().contains_key("www-authenticate"), "{name}");
        }
        let c = s.counters();
        assert_eq!(c.invalid_token, cases.len() as u64);
        assert_eq!(c.container_requests, 0);
        assert_eq!(c.workload_tokens, 0);
        assert!(s.identity_seen.lock().unwrap().is_empty());
        // The control: the same setup lets a good token through.
        let resp = s.post().bearer_auth(&good).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(s.counters().container_requests, 1);
    }
}

#[tokio::test]
async fn allowed_clients_matches_client_id_which_entra_tokens_lack() {
    let s = setup(|c| c.authorizer.allowed_clients = vec![defaults::AGENT_APP_ID.into()]).await;
    // An Entra token names its client in azp, not client_id: refused, as AWS documents.
    let resp = s.post().bearer_auth(s.token()).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let mut claims = s.claims();
    claims.insert("client_id".into(), json!(defaults::AGENT_APP_ID));
    let resp = s.post().bearer_auth(s.sign(&claims)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    claims.insert("client_id".into(), json!("someone-else"));
    let resp = s.post().bearer_auth(s.sign(&claims)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(s.counters().container_requests, 1);
}

#[tokio::test]
async fn allowed_scopes_match_the_scope_claim_not_entras_scp() {
    let s = setup(|c| c.authorizer.allowed_scopes = vec![defaults::AGENT_SCOPE.into()]).await;
    let resp = s.post().bearer_auth(s.token()).send().await.unwrap();
    assert_eq!(resp.status(), 401, "an Entra token has scp, not scope");
    let mut claims = s.claims();
    claims.insert("scope".into(), json!(format!("openid {}", defaults::AGENT_SCOPE)));
    assert_eq!(s.post().bearer_auth(s.sign(&claims)).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn custom_claims_equals_contains_and_contains_any() {
    let claims_json = json!([
        {"inboundTokenClaimName": "tid", "inboundTokenClaimValueType": "STRING",
         "authorizingClaimMatchValue": {"claimMatchOperator": "EQUALS",
                                        "claimMatchValue": {"matchValueString": defaults::TENANT_ID}}},
        {"inboundTokenClaimName": "groups", "inboundTokenClaimValueType": "STRING_ARRAY",
         "authorizingClaimMatchValue": {"claimMatchOperator": "CONTAINS",
                                        "claimMatchValue": {"matchValueString": "agents"}}},
        {"inboundTokenClaimName": "wids", "inboundTokenClaimValueType": "STRING_ARRAY",
         "authorizingClaimMatchValue": {"claimMatchOperator": "CONTAINS_ANY",
                                        "claimMatchValue": {"matchValueStringList": ["a", "b"]}}}
    ]);
    let parsed: Vec<CustomClaim> = serde_json::from_value(claims_json).unwrap();
    let s = setup(move |c| c.authorizer.custom_claims = parsed).await;
    let mut claims = s.claims();
    claims.insert("groups".into(), json!(["staff", "agents"]));
    claims.insert("wids".into(), json!(["x", "b"]));
    assert_eq!(s.post().bearer_auth(s.sign(&claims)).send().await.unwrap().status(), 200);
    let mut bad = Vec::new();
    let mut c = claims.clone();
    c.insert("tid".into(), json!(defaults::OTHER_TENANT_ID));
    bad.push(("other tenant", c));
    let mut c = claims.clone();
    c.insert("groups".into(), json!(["staff"]));
    bad.push(("not in group", c));
    let mut c = claims.clone();
    c.insert("groups".into(), json!("agents"));
    bad.push(("string where an array is expected", c));
    let mut c = claims.clone();
    c.insert("wids".into(), json!(["x", "y"]));
    bad.push(("none of the list", c));
    let mut c = claims.clone();
    c.remove("wids");
    bad.push(("claim missing", c));
    for (name, claims) in &bad {
        assert_eq!(s.post().bearer_auth(s.sign(claims)).send().await.unwrap().status(), 401, "{name}");
    }
    assert_eq!(s.counters().container_requests, 1);
}

#[tokio::test]
async fn only_allow_listed_headers_reach_the_container_with_ids_and_the_minted_wat() {
    let s = setup(|_| {}).await;
    let token = s.token();
    let session = "a-session-id-of-the-caller-0123456789-xyz";
    let resp = s
        .post()
        .bearer_auth(&token)
        .header(SESSION_ID_HEADER, session)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("x-amzn-bedrock-agentcore-runtime-custom-tenant", "company")
        .header("x-amzn-bedrock-agentcore-runtime-custom-other", "not listed")
        .header("workloadaccesstoken", "forged-by-the-caller")
        .header("x-amz-bedrock-agentcore-identity-wat", "forged-too")
        .header(USER_ID_HEADER, "someone-else")
        .header("x-api-key", "k")
        .header("cookie", "c=1")
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[SESSION_ID_HEADER], session);
    assert_eq!(resp.text().await.unwrap(), r#"{"response":"hi"}"#);
    let seen = s.container.seen.lock().unwrap()[0].clone();
    assert_eq!(seen["authorization"], format!("Bearer {token}").as_str());
    assert_eq!(seen[SESSION_ID_HEADER], session);
    assert!(uuid::Uuid::parse_str(seen[REQUEST_ID_HEADER].to_str().unwrap()).is_ok());
    assert_eq!(seen[WORKLOAD_ACCESS_TOKEN_HEADER], WAT);
    assert_eq!(seen.get_all(WORKLOAD_ACCESS_TOKEN_HEADER).iter().count(), 1);
    assert_eq!(seen["x-amzn-bedrock-agentcore-runtime-custom-tenant"], "company");
    assert_eq!(seen["traceparent"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    assert_eq!(seen["content-type"], "application/json");
    for dropped in [
        "x-amzn-bedrock-agentcore-runtime-custom-other",
        "x-amz-bedrock-agentcore-identity-wat",
        USER_ID_HEADER,
        "x-api-key",
        "cookie",
    ] {
        assert!(!seen.contains_key(dropped), "{dropped} was forwarded");
    }
    assert_eq!(s.container.bodies.lock().unwrap()[0], br#"{"prompt":"hi"}"#);
    // The Identity endpoint got the validated token for the runtime's workload identity.
    let asked = s.identity_seen.lock().unwrap()[0].clone();
    assert_eq!(asked, json!({"workloadName": "servicenow-agent-workload", "userToken": token}));

    // Without a caller session id the front door makes one (33+ characters), the same in the
    // container's request and in the answer.
    let resp = s.post().bearer_auth(&token).send().await.unwrap();
    let answered = resp.headers()[SESSION_ID_HEADER].to_str().unwrap().to_owned();
    let seen = s.container.seen.lock().unwrap()[1].clone();
    assert!(answered.len() >= 33, "{answered}");
    assert_eq!(seen[SESSION_ID_HEADER], answered.as_str());
    // Without Authorization on the allow-list the container never sees the caller's token.
    let s = setup(|c| c.request_header_allowlist.clear()).await;
    assert_eq!(s.post().bearer_auth(s.token()).send().await.unwrap().status(), 200);
    assert!(!s.container.seen.lock().unwrap()[0].contains_key("authorization"));
}

#[tokio::test]
async fn bad_session_ids_and_oversized_allow_listed_values_are_validation_errors() {
    let s = setup(|_| {}).await;
    for bad in ["short", &"x".repeat(257), "has a space in it and is long enough ok"] {
        let resp = s.post().bearer_auth(s.token()).header(SESSION_ID_HEADER, bad).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        assert_eq!(error_type(&resp), "ValidationException");
    }
    let resp = s
        .post()
        .bearer_auth(s.token())
        .header("x-amzn-bedrock-agentcore-runtime-custom-tenant", "v".repeat(MAX_HEADER_VALUE_BYTES + 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(s.counters().container_requests, 0);
}

#[tokio::test]
async fn container_errors_become_424_runtime_client_error() {
    let s = setup(|_| {}).await;
    for status in [400u16, 401, 404, 500, 503] {
        *s.container.status.lock().unwrap() = status;
        let resp = s.post().bearer_auth(s.token()).send().await.unwrap();
        assert_eq!(resp.status(), 424, "{status}");
        assert_eq!(error_type(&resp), "RuntimeClientError");
        let body: Value = resp.json().await.unwrap();
        assert!(body["message"].as_str().unwrap().contains(&format!("({status})")), "{body}");
    }
    assert_eq!(s.counters().container_errors, 5);
    // A container that is not there at all.
    let s = setup(|c| c.container_url = "http://127.0.0.1:1".into()).await;
    let resp = s.post().bearer_auth(s.token()).send().await.unwrap();
    assert_eq!(resp.status(), 424);
    assert_eq!(error_type(&resp), "RuntimeClientError");
}

#[tokio::test]
async fn sse_streams_through_as_it_is_produced() {
    let s = setup(|_| {}).await;
    let (release, gate) = tokio::sync::oneshot::channel();
    *s.container.gate.lock().unwrap() = Some(gate);
    let resp = s.post().bearer_auth(s.token()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.bytes_stream();
    use futures::StreamExt;
    // The first event arrives while the container still holds the second back: nothing is
    // buffered on the way.
    let mut got = Vec::new();
    while !got.ends_with(b"\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("first event");
        got.extend_from_slice(&chunk.unwrap().unwrap());
    }
    assert_eq!(got, b"data: \"first\"\n\n");
    release.send(()).unwrap();
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(rest, b"data: \"second\"\n\n");
}

#[tokio::test]
async fn routing_errors_look_like_the_service() {
    let s = setup(|_| {}).await;
    let token = s.token();
    let base = &s.server.base_url;
    // A URL that stops short of /invocations.
    let resp =
        s.http.post(format!("{base}/runtimes/{}", encode_arn(ARN))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.json::<Value>().await.unwrap()["message"], "Missing Authentication Token");
    // Another runtime, another qualifier.
    let other = encode_arn("arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/other-Zz");
    let resp =
        s.http.post(format!("{base}/runtimes/{other}/invocations")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(error_type(&resp), "ResourceNotFoundException");
    let url = s.server.invocation_url.replace("DEFAULT", "canary");
    let resp = s.http.post(url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    // SigV4 against a JWT runtime.
    let resp = s
        .post()
        .header("authorization", "AWS4-HMAC-SHA256 Credential=AKID/20261204/us-east-1/bedrock-agentcore/aws4_request, SignedHeaders=host;x-amz-date, Signature=00")
        .header("x-amz-date", "20261204T000000Z")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(error_type(&resp), "AccessDeniedException");
    assert!(resp.json::<Value>().await.unwrap()["message"].as_str().unwrap().contains("mismatch"));
    assert_eq!(s.counters().container_requests, 0);
}

#[test]
fn the_control_plane_rules_are_enforced_at_config_time() {
    let authorizer = r#"{"customJWTAuthorizer":{"discoveryUrl":"https://login.example/t/v2.0/.well-known/openid-configuration","allowedAudience":["a"]}}"#;
    let build = |allow: &[&str]| {
        let config = FrontDoorConfig::from_api_json(ARN, authorizer, allow, "http://127.0.0.1:8080").unwrap();
        FrontDoor::new(config, reqwest::Client::new()).map(|_| ())
    };
    assert!(build(&["Authorization", "X-Amzn-Bedrock-AgentCore-Runtime-Custom-H1", "X-Api-Key"]).is_ok());
    for restricted in [
        "Host",
        "Content-Type",
        "Accept",
        "Cookie",
        "Connection",
        "Transfer-Encoding",
        "X-Forwarded-For",
        "Origin",
        "X-Amz-Date",
        "X-Amz-Security-Token",
        "X-Amzn-Trace-Id",
        "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id",
        "X-Amzn-Bedrock-AgentCore-Runtime-Custom-",
        "WorkloadAccessToken",
        "bad header",
    ] {
        let err = build(&[restricted]).expect_err(restricted).to_string();
        assert!(err.contains("requestHeaderAllowlist"), "{restricted}: {err}");
    }
    let dup = build(&["authorization", "Authorization"]).unwrap_err().to_string();
    assert!(dup.contains("twice"), "{dup}");
    let many: Vec<String> =
        (0..21).map(|i| format!("X-Amzn-Bedrock-AgentCore-Runtime-Custom-H{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(build(&many[..20]).is_ok());
    assert!(build(&many).unwrap_err().to_string().contains("at most 20"));

    // The article's update-agent-runtime call says allowedAudiences; the API has no such field.
    let article = r#"{"customJWTAuthorizer":{"discoveryUrl":"https://login.example/t/v2.0/.well-known/openid-configuration","allowedClients":["c"],"allowedAudiences":["api://c"]}}"#;
    let err =
        FrontDoorConfig::from_api_json(ARN, article, &[], "http://127.0.0.1:8080").unwrap_err().to_string();
    assert!(err.contains("allowedAudiences"), "{err}");

    let with = |discovery: &str, arn: &str| {
        let json = format!(r#"{{"customJWTAuthorizer":{{"discoveryUrl":"{discovery}"}}}}"#);
        let config = FrontDoorConfig::from_api_json(arn, &json, &[], "http://127.0.0.1:8080").unwrap();
        FrontDoor::new(config, reqwest::Client::new()).map(|_| ())
    };
    assert!(with("https://login.example/t/v2.0/.well-known/openid-configuration", ARN).is_ok());
    assert!(with("https://login.example/t/v2.0/keys", ARN).is_err());
    assert!(with("/.well-known/openid-configuration", ARN).is_err());
    for arn in [
        "arn:aws:bedrock-agentcore:us-east-1:12345:runtime/x",
        "arn:aws:bedrock:us-east-1:123456789012:runtime/x",
        "arn:aws:bedrock-agentcore:us-east-1:123456789012:gateway/x",
        "runtime/x",
    ] {
        assert!(with("https://l/t/.well-known/openid-configuration", arn).is_err(), "{arn}");
    }

    // Operator and value type must fit together.
    let claim = |ty: &str, op: &str, value: Value| {
        serde_json::from_value::<CustomClaim>(json!({
            "inboundTokenClaimName": "c", "inboundTokenClaimValueType": ty,
            "authorizingClaimMatchValue": {"claimMatchOperator": op, "claimMatchValue": value}}))
        .unwrap()
    };
    assert!(check_custom_claim(&claim("STRING", "EQUALS", json!({"matchValueString": "v"}))).is_ok());
    assert!(check_custom_claim(&claim("STRING", "CONTAINS", json!({"matchValueString": "v"}))).is_err());
    assert!(
        check_custom_claim(&claim("STRING_ARRAY", "CONTAINS_ANY", json!({"matchValueString": "v"}))).is_err()
    );
    assert!(
        check_custom_claim(&claim("STRING_ARRAY", "CONTAINS_ANY", json!({"matchValueStringList": []})))
            .is_err()
    );
    assert!(
        serde_json::from_value::<CustomClaim>(json!({"inboundTokenClaimName": "c",
        "inboundTokenClaimValueType": "NUMBER", "authorizingClaimMatchValue": {}}))
        .is_err()
    );
}
