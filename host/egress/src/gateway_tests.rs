#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::*;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use delegate_auth::VerifiedCallerBuilder;
use delegate_secret::Secret;
use delegate_vault::{TokenVault, VaultConfig};
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const TOKEN_A: &str = "eyJhbGciOiJSUzI1NiJ9.token-a-of-jane.sig";
const CLIENT_SECRET: &str = "client-secret~value.123";

struct Fake {
    idp_calls: AtomicUsize,
    idp_error: Mutex<Option<&'static str>>,
    api_calls: AtomicUsize,
    /// Answer 401 to this many API calls first.
    api_unauthorized: AtomicUsize,
    seen_authorization: Mutex<Vec<String>>,
    seen_headers: Mutex<Vec<HeaderMap>>,
}

async fn token(axum::extract::State(f): axum::extract::State<Arc<Fake>>) -> Response {
    let n = f.idp_calls.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(body) = *f.idp_error.lock().unwrap() {
        return (StatusCode::BAD_REQUEST, [("content-type", "application/json")], body).into_response();
    }
    axum::Json(
        serde_json::json!({"token_type":"Bearer","expires_in":3600,"access_token":format!("token-b-{n}")}),
    )
    .into_response()
}

/// An API that reflects every request header back, in its body and in response headers, as
/// a hostile or careless downstream would.
async fn echo(axum::extract::State(f): axum::extract::State<Arc<Fake>>, headers: HeaderMap) -> Response {
    f.api_calls.fetch_add(1, Ordering::SeqCst);
    let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    f.seen_authorization.lock().unwrap().push(auth.clone());
    f.seen_headers.lock().unwrap().push(headers);
    let unauthorized =
        f.api_unauthorized.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let status = if unauthorized { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    let body = format!(
        "{{\"result\":[],\"echo\":\"{auth}\",\"a\":\"{TOKEN_A}\",\"s\":\"{CLIENT_SECRET}\",\"pad\":\"{}\"}}",
        "x".repeat(100)
    );
    (
        status,
        [
            ("x-echo-authorization", auth.clone()),
            ("www-authenticate", format!("Bearer realm=\"{auth}\"")),
            ("set-cookie", "glide_user_session=abc; HttpOnly".to_owned()),
        ],
        body,
    )
        .into_response()
}

struct Setup {
    fake: Arc<Fake>,
    gateway: EgressGateway,
    port: u16,
    audit_path: std::path::PathBuf,
}

async fn setup(tag: &str) -> Setup {
    setup_with(tag, "").await
}

/// [`setup`] with more vault providers (`{port}` in `extra_vault` is the fake's port).
async fn setup_with(tag: &str, extra_vault: &str) -> Setup {
    let fake = Arc::new(Fake {
        idp_calls: AtomicUsize::new(0),
        idp_error: Mutex::new(None),
        api_calls: AtomicUsize::new(0),
        api_unauthorized: AtomicUsize::new(0),
        seen_authorization: Mutex::new(Vec::new()),
        seen_headers: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new()
        .route("/token", axum::routing::post(token))
        .route("/api/now/table/{table}", axum::routing::any(echo))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = std::env::temp_dir().join(format!("egress-gw-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    let vault: VaultConfig = toml::from_str(&format!(
        "[providers.sn]\nkind = \"entra_obo\"\ntoken_endpoint = \"http://127.0.0.1:{port}/token\"\nclient_id = \"c\"\nclient_secret = {{ file = \"{}\" }}\n{}\n[cache]\nretry_backoff_ms = 1",
        secret.display(),
        extra_vault.replace("{port}", &port.to_string()).replace("{secret}", &secret.display().to_string()),
    ))
    .unwrap();
    let client = delegate_outbound::build_client(&delegate_outbound::OutboundConfig::default()).unwrap();
    let vault = Arc::new(TokenVault::new(vault.validate().unwrap(), client.clone()));
    let audit_path = dir.join("audit.jsonl");
    let sink = Arc::new(AuditSink::file(&audit_path).unwrap());
    Setup { fake, gateway: EgressGateway::new(vault, client, sink), port, audit_path }
}

fn invocation(port: u16, limits: EgressLimits) -> InvocationEgress {
    let rules: EgressConfig = toml::from_str(&format!(
        "[[rules]]\nmethods = [\"GET\", \"POST\"]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\nallow_ip_literal = true\npath_prefix = \"/api/now/table\"\ncredential = {{ provider = \"sn\", scopes = [\"api://sn/.default\"] }}"
    ))
    .unwrap();
    InvocationEgress {
        policy: Arc::new(rules.validate().unwrap()),
        caller: Arc::new(
            VerifiedCallerBuilder::new("oid-jane")
                .username("jane@contoso.example")
                .scopes(&["access_as_user"])
                .token(TOKEN_A)
                .build(),
        ),
        audit: AuditContext {
            invocation_id: "inv-1".into(),
            trace: None,
            caller_subject: "oid-jane".into(),
            caller_username: Some("jane@contoso.example".into()),
            plugin: "servicenow-agent".into(),
            plugin_digest: "sha256:00".into(),
            plugin_version: "1.0.0".into(),
        },
        budget: Arc::new(EgressBudget::new(limits)),
    }
}

fn get(url: &str) -> http::Request<Bytes> {
    http::Request::builder()
        .method("GET")
        .uri(url)
        .header("accept", "application/json")
        .body(Bytes::new())
        .unwrap()
}

fn audit_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    for secret in [TOKEN_A, CLIENT_SECRET, "token-b-"] {
        assert!(!text.contains(secret), "audit log contains {secret}: {text}");
    }
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn injects_token_b_and_scrubs_every_echo() {
    let s = setup("echo").await;
    let inv = invocation(s.port, EgressLimits::default());
    let url = format!("http://127.0.0.1:{}/api/now/table/incident?sysparm_query=caller%3D{TOKEN_A}", s.port);
    let response = s.gateway.send(&inv, get(&url)).await.unwrap();
    assert_eq!(response.status(), 200);
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let body = String::from_utf8(body.to_vec()).unwrap();
    let headers = format!("{:?}", parts.headers);
    for secret in [TOKEN_A, CLIENT_SECRET, "token-b-1"] {
        assert!(!body.contains(secret), "body leaks {secret}: {body}");
        assert!(!headers.contains(secret), "headers leak {secret}: {headers}");
    }
    assert!(body.contains("\"echo\":\"Bearer [redacted]\""), "{body}");
    assert_eq!(parts.headers["x-echo-authorization"], "Bearer [redacted]");
    assert!(!parts.headers.contains_key("set-cookie"));
    // The downstream got Token B, the guest's other headers, and no guest Host spelling.
    assert_eq!(*s.fake.seen_authorization.lock().unwrap(), ["Bearer token-b-1"]);
    assert_eq!(s.fake.seen_headers.lock().unwrap()[0]["accept"], "application/json");
    assert_eq!(inv.budget.requests(), 1);
    assert!(inv.budget.response_bytes() > 100);

    let lines = audit_lines(&s.audit_path);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["decision"], "allowed");
    assert_eq!(lines[0]["cache"], "miss");
    assert_eq!(lines[0]["provider"], "sn");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["path"], "/api/now/table/incident");
    assert_eq!(lines[0]["response_bytes"].as_u64().unwrap(), inv.budget.response_bytes());

    // A second request is a cache hit.
    let response = s.gateway.send(&inv, get(&url)).await.unwrap();
    drop(response.into_body().collect().await.unwrap());
    assert_eq!(audit_lines(&s.audit_path)[1]["cache"], "hit");
    assert_eq!(s.fake.idp_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn downstream_401_evicts_and_retries_once() {
    let s = setup("401").await;
    let inv = invocation(s.port, EgressLimits::default());
    let url = format!("http://127.0.0.1:{}/api/now/table/incident", s.port);
    drop(s.gateway.send(&inv, get(&url)).await.unwrap());
    s.fake.api_unauthorized.store(1, Ordering::SeqCst);
    let response = s.gateway.send(&inv, get(&url)).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    assert_eq!(
        *s.fake.seen_authorization.lock().unwrap(),
        ["Bearer token-b-1", "Bearer token-b-1", "Bearer token-b-2"]
    );
    assert_eq!(s.fake.idp_calls.load(Ordering::SeqCst), 2);
    // Only once: a downstream that keeps saying 401 gets its 401 to the guest.
    s.fake.api_unauthorized.store(5, Ordering::SeqCst);
    let response = s.gateway.send(&inv, get(&url)).await.unwrap();
    assert_eq!(response.status(), 401);
    drop(response);
    assert_eq!(s.fake.api_calls.load(Ordering::SeqCst), 5);
    assert_eq!(s.fake.idp_calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn denials_budget_and_vault_errors_are_audited_and_nothing_is_sent() {
    let s = setup("deny").await;
    let limits = EgressLimits { max_requests: 2, max_response_bytes: 100, ..EgressLimits::default() };
    let inv = invocation(s.port, limits);
    let base = format!("http://127.0.0.1:{}", s.port);

    // Policy denial: path outside the prefix; guest-set Authorization.
    let err = s.gateway.send(&inv, get(&format!("{base}/api/now/table-x/incident"))).await.unwrap_err();
    assert!(matches!(err, EgressError::Denied(DenyReason::NoMatchingRule)), "{err:?}");
    let mut smuggle = get(&format!("{base}/api/now/table/incident"));
    smuggle.headers_mut().insert("authorization", "Bearer mine".parse().unwrap());
    let err = s.gateway.send(&inv, smuggle).await.unwrap_err();
    assert_eq!(err.code(), "forbidden_header");
    assert_eq!(s.fake.api_calls.load(Ordering::SeqCst), 0);
    assert_eq!(inv.budget.requests(), 0, "denied requests do not use the budget");

    // Response larger than the byte cap: the body fails.
    let response = s.gateway.send(&inv, get(&format!("{base}/api/now/table/incident"))).await.unwrap();
    let err = response.into_body().collect().await.unwrap_err();
    assert!(matches!(err, EgressBodyError::Budget(BudgetExceeded::ResponseBytes(100))), "{err:?}");

    // The vault refuses (consent): the request is not sent, the error keeps its status.
    *s.fake.idp_error.lock().unwrap() =
        Some(r#"{"error":"invalid_grant","error_codes":[65001],"suberror":"consent_required"}"#);
    let other = InvocationEgress {
        caller: Arc::new(VerifiedCallerBuilder::new("oid-fred").scopes(&["x"]).token("token-a-fred").build()),
        ..inv.clone()
    };
    let err = s.gateway.send(&other, get(&format!("{base}/api/now/table/incident"))).await.unwrap_err();
    let EgressError::Credential(v) = &err else { panic!("{err:?}") };
    assert_eq!((v.status(), v.code()), (403, "consent_required"));

    // Request cap (2 used: the oversized response and the consent failure).
    let err = s.gateway.send(&inv, get(&format!("{base}/api/now/table/incident"))).await.unwrap_err();
    assert!(matches!(err, EgressError::Budget(BudgetExceeded::Requests(2))), "{err:?}");
    assert_eq!(s.fake.api_calls.load(Ordering::SeqCst), 1);

    let lines = audit_lines(&s.audit_path);
    let reasons: Vec<&str> = lines.iter().map(|l| l["reason"].as_str().unwrap_or("")).collect();
    assert_eq!(
        reasons,
        ["no_matching_rule", "forbidden_header", "response_bytes_limit", "consent_required", "request_limit"]
    );
    assert_eq!(lines[0]["decision"], "denied");
    assert_eq!(lines[3]["decision"], "denied");
}

/// The runtime boxes `send` into a `Send` future and the body into a `Send` body.
#[test]
fn send_future_and_body_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let _ = |g: EgressGateway, inv: InvocationEgress, r: http::Request<Bytes>| {
        let f = async move { g.send(&inv, r).await };
        assert_send(&f);
        f
    };
    fn body_is_send<T: Send + 'static>() {}
    body_is_send::<EgressBody>();
    body_is_send::<EgressError>();
}

#[tokio::test]
async fn the_host_sets_traceparent_and_drops_the_guests_trace_headers() {
    let s = setup("trace").await;
    let mut inv = invocation(s.port, EgressLimits::default());
    let trace = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    inv.audit.trace = Some(trace);
    let url = format!("http://127.0.0.1:{}/api/now/table/incident", s.port);
    let forged = http::Request::builder()
        .method("GET")
        .uri(&url)
        .header("traceparent", "00-11111111111111111111111111111111-2222222222222222-01")
        .header("tracestate", "guest=forged")
        .body(Bytes::new())
        .unwrap();
    for request in [get(&url), forged] {
        let response = s.gateway.send(&inv, request).await.unwrap();
        drop(response.into_body().collect().await.unwrap());
    }
    let seen = s.fake.seen_headers.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let mut spans = Vec::new();
    for headers in &seen {
        assert_eq!(headers.get_all("traceparent").iter().count(), 1, "{headers:?}");
        assert!(!headers.contains_key("tracestate"), "{headers:?}");
        let sent = TraceContext::parse(headers["traceparent"].to_str().unwrap()).unwrap();
        assert_eq!(sent.trace_id(), trace.trace_id(), "same trace");
        assert_ne!(sent.span_id(), trace.span_id(), "a child span, not the inbound one");
        spans.push(sent.span_id());
    }
    assert_ne!(spans[0], spans[1], "one span per outbound request");
    for line in audit_lines(&s.audit_path) {
        assert_eq!(line["trace_id"], trace.trace_id());
    }
}

#[tokio::test]
async fn the_host_sets_the_hop_counter_on_marked_rules_only_and_the_guest_cannot_touch_it() {
    // `agent` marks the hop (its tokens go to another agent host); `sn` is an API.
    let s = setup_with(
        "hop",
        "[providers.agent]\nkind = \"entra_obo\"\ntoken_endpoint = \"http://127.0.0.1:{port}/token\"\nclient_id = \"c\"\nclient_secret = { file = \"{secret}\" }\nmax_chain_depth = 4\n",
    )
    .await;
    let key =
        delegate_auth::HopKey::from_base64(&Secret::new("q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k="))
            .unwrap();
    let rules: EgressConfig = toml::from_str(&format!(
        "[[rules]]\nmethods = [\"GET\"]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\nallow_ip_literal = true\npath_prefix = \"/api/now/table/incident\"\ncredential = {{ provider = \"sn\", scopes = [\"api://sn/.default\"] }}\n\
         [[rules]]\nmethods = [\"GET\"]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\nallow_ip_literal = true\npath_prefix = \"/api/now/table/agent\"\ncredential = {{ provider = \"agent\", scopes = [\"api://agent/.default\"] }}",
        port = s.port
    ))
    .unwrap();
    let mut inv = invocation(s.port, EgressLimits::default());
    inv.policy = Arc::new(rules.validate().unwrap());
    // The caller is one agent deep (by a verified hop counter): the next host is told 2.
    inv.caller = Arc::new(
        VerifiedCallerBuilder::new("oid-jane")
            .scopes(&["access_as_user"])
            .token(TOKEN_A)
            .hop_depth(1)
            .build(),
    );
    let request = |path: &str, forged: &[&str]| {
        let mut b = http::Request::builder().method("GET").uri(format!("http://127.0.0.1:{}{path}", s.port));
        for value in forged {
            b = b.header(delegate_auth::HOP_HEADER, *value);
        }
        b.body(Bytes::new()).unwrap()
    };
    let send = |gateway: &EgressGateway, request: http::Request<Bytes>| {
        let (gateway, inv) = (gateway.clone(), inv.clone());
        async move {
            let response = Box::pin(gateway.send(&inv, request)).await.unwrap();
            drop(response.into_body().collect().await.unwrap());
        }
    };
    let signing = s.gateway.clone().with_hop_key(key.clone());
    let seen = || s.fake.seen_headers.lock().unwrap().clone();
    let expected = |headers: &HeaderMap, depth: usize| {
        let bearer = headers["authorization"].to_str().unwrap().strip_prefix("Bearer ").unwrap().to_owned();
        assert!(bearer.starts_with("token-b-"), "{bearer}");
        key.header_value(depth, &Secret::new(bearer))
    };

    // A marked rule: exactly one header, the host's, whatever the guest wrote.
    send(&signing, request("/api/now/table/agent", &[])).await;
    send(&signing, request("/api/now/table/agent", &["0.forged", "9.forged"])).await;
    // An unmarked rule: none, and the guest's is dropped.
    send(&signing, request("/api/now/table/incident", &["1.forged"])).await;
    send(&signing, request("/api/now/table/incident", &[])).await;
    // A gateway without a hop key sends none, even on a marked rule.
    send(&s.gateway, request("/api/now/table/agent", &["1.forged"])).await;
    let headers = seen();
    assert_eq!(headers.len(), 5);
    for h in &headers[..2] {
        let values: Vec<_> = h.get_all(delegate_auth::HOP_HEADER).iter().collect();
        assert_eq!(values.len(), 1, "{h:?}");
        assert_eq!(values[0], expected(h, 2), "depth 2, bound to the token sent");
        assert!(values[0].to_str().unwrap().starts_with("2."));
    }
    for h in &headers[2..] {
        assert!(!h.contains_key(delegate_auth::HOP_HEADER), "{h:?}");
    }

    // A 401 retry sends a fresh token with a counter bound to that token.
    s.fake.api_unauthorized.store(1, Ordering::SeqCst);
    send(&signing, request("/api/now/table/agent", &[])).await;
    let headers = seen();
    let (first, retry) = (&headers[5], &headers[6]);
    assert_ne!(first["authorization"], retry["authorization"]);
    assert_eq!(first[delegate_auth::HOP_HEADER], expected(first, 2));
    assert_eq!(retry[delegate_auth::HOP_HEADER], expected(retry, 2));
    assert_ne!(first[delegate_auth::HOP_HEADER], retry[delegate_auth::HOP_HEADER]);
    // Never in the audit.
    let audit = std::fs::read_to_string(&s.audit_path).unwrap();
    assert!(!audit.contains(retry[delegate_auth::HOP_HEADER].to_str().unwrap()));
}

/// An HTTP/1.1 server that answers the first request of its first connection with keep-alive,
/// then reads the second request on that connection and closes it without an answer (a
/// keep-alive connection closed just as the client reused it); every later connection is
/// answered normally. Returns its port and the count of requests it read.
async fn closes_a_reused_connection() -> (u16, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn read_head(s: &mut tokio::net::TcpStream) -> bool {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return false,
            }
        }
        // The test sends bodies only with POST, and then a short one with Content-Length.
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        if let Some(len) = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            let mut body = vec![0u8; len];
            return s.read_exact(&mut body).await.is_ok();
        }
        true
    }
    const OK: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n{\"result\":[]}";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            let is_first = std::mem::take(&mut first);
            tokio::spawn(async move {
                while read_head(&mut s).await {
                    let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                    if is_first && n == 2 {
                        return; // dropped: closed without an answer
                    }
                    if s.write_all(OK).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, requests)
}

#[tokio::test]
async fn a_safe_request_on_a_connection_closed_under_it_is_sent_once_more_and_an_unsafe_one_is_not() {
    let s = setup("reused-conn").await;
    // GET: the second request meets the closed connection and is repeated on a new one.
    let (port, requests) = closes_a_reused_connection().await;
    let inv = invocation(port, EgressLimits::default());
    let url = format!("http://127.0.0.1:{port}/api/now/table/incident");
    for _ in 0..2 {
        let r = s.gateway.send(&inv, get(&url)).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(&r.into_body().collect().await.unwrap().to_bytes()[..], b"{\"result\":[]}");
    }
    assert_eq!(requests.load(Ordering::SeqCst), 3, "the closed request, then once more");
    assert_eq!(inv.budget.requests(), 2, "a repeat is not another request of the plugin");

    // POST: not safe to repeat (it may have been applied), so the failure reaches the plugin.
    let (port, requests) = closes_a_reused_connection().await;
    let inv = invocation(port, EgressLimits::default());
    let url = format!("http://127.0.0.1:{port}/api/now/table/incident");
    let post = || {
        http::Request::builder()
            .method("POST")
            .uri(&url)
            .header("content-type", "application/json")
            .body(Bytes::from_static(b"{}"))
            .unwrap()
    };
    assert_eq!(s.gateway.send(&inv, post()).await.unwrap().status(), 200);
    let e = s.gateway.send(&inv, post()).await.unwrap_err();
    assert!(matches!(e, EgressError::Upstream("upstream_failed")), "{e:?}");
    assert_eq!(requests.load(Ordering::SeqCst), 2, "no repeat of a POST");
    let audit = audit_lines(&s.audit_path);
    assert!(audit.iter().any(|r| r["reason"] == "upstream_failed"), "{audit:?}");
}
