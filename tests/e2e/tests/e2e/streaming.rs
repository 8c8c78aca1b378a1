//! Streaming over SSE and the JSON answer mode.

use delegate_e2e::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_chunks_arrive_while_the_plugin_is_still_running() {
    // One slot: while the invocation runs, /ping must say HealthyBusy.
    let mut spec = ServerSpec::new(delegate_artifacts::ECHO);
    spec.max_concurrency = 1;
    let server = TestServer::start(spec).await;
    assert_eq!(ping(&server.url).await["status"], "Healthy");

    let resp = client()
        .post(format!("{}/invocations", server.url))
        .bearer_auth("test:jane")
        .json(&json!({"prompt": "hello streaming world", "chunk_size": 6, "pause_ms": 400}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert!(resp.headers()["x-delegate-plugin"].to_str().unwrap().starts_with("test-plugin@sha256:"));
    let mut sse = SseReader::open(resp).await;
    let first = sse.next().await.unwrap();
    assert_eq!(first, json!("hello "));
    // The first chunk is in our hands and the plugin has not finished: its slot is still held.
    assert_eq!(ping(&server.url).await["status"], "HealthyBusy");
    let rest = sse.rest().await;
    let texts: Vec<&str> = rest.iter().filter_map(|e| e.as_str()).collect();
    assert_eq!(texts, ["stream", "ing wo", "rld"]);
    let last = rest.last().unwrap();
    assert_eq!(last["status"], "success");
    let result: serde_json::Value = serde_json::from_str(last["result"].as_str().unwrap()).unwrap();
    assert_eq!(result["chunks"], 4);
    assert_eq!(result["caller"], "jane");
    // The slot is released when the invocation ends, and the status flips back.
    let mut status = ping(&server.url).await;
    for _ in 0..100 {
        if status["status"] == "Healthy" {
            break;
        }
        tokio::task::yield_now().await;
        status = ping(&server.url).await;
    }
    assert_eq!(status["status"], "Healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_sent_without_pauses_arrive_whole_and_in_order_with_the_final_event() {
    // 200 one-character chunks with no pause: the SSE writer merges whatever is queued into one
    // event, so the events may be fewer, but their text must be the prompt exactly, and a
    // `Finished` event met while merging must still come, last.
    let server = TestServer::start(ServerSpec::new(delegate_artifacts::ECHO)).await;
    let prompt: String = (0..200u8).map(|i| char::from(b'a' + i % 26)).collect();
    for _ in 0..5 {
        let resp = client()
            .post(format!("{}/invocations", server.url))
            .bearer_auth("test:jane")
            .json(&json!({"prompt": prompt, "chunk_size": 1, "pause_ms": 0}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let events = SseReader::open(resp).await.rest().await;
        let (last, texts) = events.split_last().unwrap();
        let text: String = texts.iter().map(|e| e.as_str().expect("only text before the end")).collect();
        assert_eq!(text, prompt);
        assert_eq!(last["status"], "success");
        let result: serde_json::Value = serde_json::from_str(last["result"].as_str().unwrap()).unwrap();
        assert_eq!(result["chunks"], 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_answer_when_the_client_asks_for_it() {
    let server = TestServer::start(ServerSpec::new(delegate_artifacts::ECHO)).await;
    let resp = client()
        .post(format!("{}/invocations", server.url))
        .bearer_auth("test:jane")
        .header("accept", "application/json")
        .json(&json!({"prompt": "all at once", "chunk_size": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["response"], "all at once");
    assert_eq!(body["status"], "success");
    assert!(body["invocation_id"].as_str().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_errors_keep_their_code_and_message() {
    let server = TestServer::start(ServerSpec::new(delegate_artifacts::ECHO)).await;
    let seen = invoke(&server.url, "jane", &json!({"no_prompt": true})).await;
    assert_eq!(seen.status, 422);
    assert_eq!(seen.error_type.as_deref(), Some("plugin_error"));
    let error = seen.error.unwrap();
    assert_eq!(error["error"], "payload needs a string `prompt`");
    // The plugin's own code travels next to the host's `plugin_error`, never instead of it.
    assert_eq!(error["plugin_error_code"], "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_honoured_or_generated() {
    let server = TestServer::start(ServerSpec::new(delegate_artifacts::ECHO)).await;
    let rid = "req-0123456789abcdef";
    let resp = client()
        .post(format!("{}/invocations", server.url))
        .bearer_auth("test:jane")
        .header("x-amzn-bedrock-agentcore-runtime-request-id", rid)
        .json(&json!({"prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-amzn-bedrock-agentcore-runtime-request-id"], rid);
    assert_eq!(resp.headers()["x-delegate-invocation-id"], rid);
    let resp = client()
        .post(format!("{}/invocations", server.url))
        .bearer_auth("test:jane")
        .json(&json!({"prompt": "x"}))
        .send()
        .await
        .unwrap();
    let generated = resp.headers()["x-amzn-bedrock-agentcore-runtime-request-id"].to_str().unwrap();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_id_reaches_the_plugin_caller() {
    let server = TestServer::start(ServerSpec::new(delegate_artifacts::PROBE_SANDBOX)).await;
    let session = "s".repeat(40);
    let resp = client()
        .post(format!("{}/invocations", server.url))
        .bearer_auth("test:jane")
        .header("x-amzn-bedrock-agentcore-runtime-session-id", &session)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let seen = collect(resp).await;
    let report: serde_json::Value = serde_json::from_str(&seen.result.unwrap()).unwrap();
    assert_eq!(report["caller"]["session_id"], session);
    assert_eq!(report["caller"]["subject"], "jane");
}
