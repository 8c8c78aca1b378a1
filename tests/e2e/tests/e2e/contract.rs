//! The AgentCore HTTP contract around the plugin: auth rejections, bad input, routes,
//! concurrency and shutdown.

use delegate_e2e::*;
use serde_json::json;

async fn post(url: &str, auth: Option<&str>, body: Vec<u8>, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req =
        client().post(format!("{url}/invocations")).body(body).header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn error_type(resp: reqwest::Response) -> (u16, String, http::HeaderMap) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body: serde_json::Value = resp.json().await.unwrap();
    (status, body["error_type"].as_str().unwrap().to_owned(), headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_bad_token_is_401_and_forbidden_is_403() {
    let server = TestServer::start(ServerSpec::new(delegate_artifacts::ECHO)).await;
    let body = br#"{"prompt":"x"}"#.to_vec();
    let (s, code, h) = error_type(post(&server.url, None, body.clone(), &[]).await).await;
    assert_eq!((s, code.as_str()), (401, "invalid_token"));
    assert_eq!(h["www-authenticate"], "Bearer error=\"invalid_token\"");
    let (s, code, _) = error_type(post(&server.url, Some("Basic abc"), body.clone(), &[]).await).await;
    assert_eq!((s, code.as_str()), (401, "invalid_token"));
    let (s, code, h) = error_type(post(&server.url, Some("Bearer test:forbidden"), body, &[]).await).await;
    assert_eq!((s, code.as_str()), (403, "insufficient_scope"));
    assert_eq!(h["www-authenticate"], "Bearer error=\"insufficient_scope\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_session_ids_are_400() {
    let server = TestServer::start(ServerSpec::new(delegate_artifacts::ECHO)).await;
    let long = "a".repeat(257);
    for bad in ["short", "a b c d e f g h i j k l m n o p q r s t", long.as_str()] {
        let (s, code, _) = error_type(
            post(
                &server.url,
                Some("Bearer test:jane"),
                br#"{"prompt":"x"}"#.to_vec(),
                &[("x-amzn-bedrock-agentcore-runtime-session-id", bad)],
            )
            .await,
        )
        .await;
        assert_eq!((s, code.as_str()), (400, "invalid_session_id"), "{bad}");
    }
    let ok = "a".repeat(33);
    let resp = post(
        &server.url,
        Some("Bearer test:jane"),
        br#"{"prompt":"x"}"#.to_vec(),
        &[("x-amzn-bedrock-agentcore-runtime-session-id", &ok)],
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_non_json_and_non_utf8_bodies() {
    let server = TestServer::start(ServerSpec::new(delegate_artifacts::ECHO)).await;
    let big = format!("{{\"prompt\":\"{}\"}}", "x".repeat(70 * 1024)).into_bytes();
    let (s, code, _) = error_type(post(&server.url, Some("Bearer test:jane"), big, &[]).await).await;
    assert_eq!((s, code.as_str()), (413, "payload_too_large"));
    let (s, code, _) =
        error_type(post(&server.url, Some("Bearer test:jane"), b"not json".to_vec(), &[]).await).await;
    assert_eq!((s, code.as_str()), (400, "invalid_json"));
    let (s, code, _) =
        error_type(post(&server.url, Some("Bearer test:jane"), vec![b'"', 0xff, 0xfe, b'"'], &[]).await)
            .await;
    assert_eq!((s, code.as_str()), (400, "invalid_encoding"));
    // Authorization is checked before the body is even read.
    let (s, code, _) = error_type(post(&server.url, None, b"not json".to_vec(), &[]).await).await;
    assert_eq!((s, code.as_str()), (401, "invalid_token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods() {
    let server = TestServer::start(ServerSpec::new(delegate_artifacts::ECHO)).await;
    let (s, code, _) = error_type(client().get(format!("{}/nope", server.url)).send().await.unwrap()).await;
    assert_eq!((s, code.as_str()), (404, "not_found"));
    let (s, code, _) =
        error_type(client().get(format!("{}/invocations", server.url)).send().await.unwrap()).await;
    assert_eq!((s, code.as_str()), (405, "method_not_allowed"));
    let ping = ping(&server.url).await;
    assert_eq!(ping["status"], "Healthy");
    assert!(ping["time_of_last_update"].as_u64().unwrap() > 1_700_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_server_answers_503_and_ping_stays_responsive() {
    let mut spec = ServerSpec::new(delegate_artifacts::ECHO);
    spec.max_concurrency = 1;
    let server = TestServer::start(spec).await;
    let before = ping(&server.url).await;
    let resp = post(
        &server.url,
        Some("Bearer test:jane"),
        br#"{"prompt":"slow one","chunk_size":2,"pause_ms":300}"#.to_vec(),
        &[],
    )
    .await;
    let mut sse = SseReader::open(resp).await;
    assert_eq!(sse.next().await.unwrap(), json!("sl"));
    let busy = ping(&server.url).await;
    assert_eq!(busy["status"], "HealthyBusy");
    let (s, code, h) =
        error_type(post(&server.url, Some("Bearer test:bob"), br#"{"prompt":"x"}"#.to_vec(), &[]).await)
            .await;
    assert_eq!((s, code.as_str()), (503, "busy"));
    assert_eq!(h["retry-after"], "2");
    // A second ping while busy reports the same change time: it moves only on a change.
    assert_eq!(ping(&server.url).await["time_of_last_update"], busy["time_of_last_update"]);
    let rest = sse.rest().await;
    assert_eq!(rest.last().unwrap()["status"], "success");
    assert!(busy["time_of_last_update"].as_u64() >= before["time_of_last_update"].as_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_invocations() {
    let mut server = TestServer::start(ServerSpec::new(delegate_artifacts::ECHO)).await;
    let resp = post(
        &server.url,
        Some("Bearer test:jane"),
        br#"{"prompt":"finish me please","chunk_size":4,"pause_ms":150}"#.to_vec(),
        &[],
    )
    .await;
    let mut sse = SseReader::open(resp).await;
    assert_eq!(sse.next().await.unwrap(), json!("fini"));
    server.shutdown();
    let rest = sse.rest().await;
    let text: String = rest.iter().filter_map(|e| e.as_str()).collect();
    assert_eq!(text, "sh me please");
    assert_eq!(rest.last().unwrap()["status"], "success");
    let task = server.task.take().unwrap();
    task.await.unwrap().unwrap();
    // The listener is closed: new connections fail.
    assert!(client().get(format!("{}/ping", server.url)).send().await.is_err());
}

/// Fuzzing the request path (proptest strategies, bounded for CI): random bodies — JSON-ish,
/// truncated, binary, deep nesting, huge numbers — with random session/request/plugin headers
/// and `Accept` values. Every answer is a documented status with a JSON error body naming a
/// stable code (or a success), never a 5xx; the server stays healthy and serves a normal
/// request afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_requests_get_documented_answers() {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let server = TestServer::start(ServerSpec::new(delegate_artifacts::ECHO)).await;
    let json_ish = prop_oneof![
        Just(br#"{"prompt":"hi"}"#.to_vec()),
        Just(br#"{"prompt":"hi","chunk_size":0}"#.to_vec()),
        Just(br#"{"prompt":123}"#.to_vec()),
        Just(br#"{"prompt":"hi","chunk_size":-1}"#.to_vec()),
        Just(br#"{"prompt":"\ud800"}"#.to_vec()),
        Just(format!("{}{}", "[".repeat(2_000), "]".repeat(2_000)).into_bytes()),
        Just(b"1e999999".to_vec()),
        Just(b"".to_vec()),
        "\\PC{0,64}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..256),
        (r#"\{"prompt":"[a-z]{0,8}""#, 0..4usize).prop_map(|(s, cut)| {
            let mut b = s.into_bytes();
            b.truncate(b.len().saturating_sub(cut));
            b
        }),
    ];
    let header = proptest::option::of("[ -~]{0,300}");
    let accept = prop_oneof![
        Just(None),
        Just(Some("application/json".to_owned())),
        Just(Some("text/event-stream".to_owned())),
        Just(Some("*/*".to_owned())),
    ];
    let strategy = (json_ish, header.clone(), header.clone(), header, accept);
    let mut runner = TestRunner::deterministic();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let cases: usize = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    for _ in 0..cases {
        let (body, session, request_id, plugin, accept) = strategy.new_tree(&mut runner).unwrap().current();
        let mut req = client()
            .post(format!("{}/invocations", server.url))
            .bearer_auth("test:fuzzer")
            .header("content-type", "application/json")
            .body(body.clone());
        for (name, value) in [
            ("x-amzn-bedrock-agentcore-runtime-session-id", &session),
            ("x-amzn-bedrock-agentcore-runtime-request-id", &request_id),
            ("x-delegate-plugin", &plugin),
            ("accept", &accept),
        ] {
            if let Some(v) = value {
                req = req.header(name, v.as_str());
            }
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        *statuses.entry(status).or_default() += 1;
        assert!([200, 400, 404, 413, 422].contains(&status), "status {status} for body {body:?}");
        let is_sse = resp
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
        let text = resp.text().await.unwrap();
        if status != 200 {
            let v: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
            let code = v["error_type"].as_str().unwrap_or_else(|| panic!("no code: {text}"));
            assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{code}");
        } else if is_sse {
            // The stream ends with exactly one final event (a result or an error).
            let last = text.lines().rfind(|l| l.starts_with("data: ")).unwrap();
            assert!(last.contains("\"status\":\"success\"") || last.contains("\"error_type\""), "{text}");
        }
    }
    // The run exercised more than one answer, and the server is fine afterwards.
    assert!(statuses.len() >= 3, "{statuses:?}");
    let seen = invoke(&server.url, "jane", &json!({"prompt": "still here"})).await;
    assert_eq!((seen.status, seen.text.as_str()), (200, "still here"));
    assert_eq!(ping(&server.url).await["status"], "Healthy");
}
