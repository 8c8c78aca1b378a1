//! Hostile plugins that attack through the host's own interfaces — outbound HTTP, the model,
//! and the WIT boundary — end with a clear code within their limit, while another user's
//! invocation on the same server finishes normally and the server keeps serving.
//!
//! Every server here runs the hostile component with egress to one loopback endpoint the test
//! controls (so what reached the network is counted on the far side) and, where needed, a fake
//! model provider that counts the calls it is given.

#![allow(clippy::print_stderr)] // figures are reported, not asserted

use axum::body::Body;
use axum::extract::{Query, State};
use delegate_config::Limits;
use delegate_e2e::*;
use delegate_model::{
    ContentBlock, ConverseRequest, ConverseResponse, Message, ModelFuture, ModelProvider, RequestLimits,
    Role, StopReason, Usage,
};
use futures::StreamExt;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const WALL: Duration = Duration::from_secs(3);
/// Scheduling slack on a busy 2-core machine, on top of a limit.
const SLACK: Duration = Duration::from_secs(3);
const REQUESTS: u32 = 8;
const REQUEST_BYTES: u64 = 64 << 10;
const RESPONSE_BYTES: u64 = 64 << 10;
const EGRESS_TIMEOUT: Duration = Duration::from_millis(500);
const MODEL_CALLS: u32 = 3;

fn io_limits() -> Limits {
    Limits {
        memory_bytes: 32 << 20,
        table_elements: 10_000,
        cpu: Duration::from_millis(500),
        wall_clock: WALL,
        output_bytes: 256 << 10,
        log_bytes: 16 << 10,
        model_calls: MODEL_CALLS,
        model_tokens: 100_000,
        egress_requests: REQUESTS,
        egress_request_bytes: REQUEST_BYTES,
        egress_response_bytes: RESPONSE_BYTES,
        egress_request_timeout: EGRESS_TIMEOUT,
    }
}

// ---------------------------------------------------------------------------------------------
// The loopback endpoint: counts what actually reached it.

#[derive(Default)]
struct Counts {
    /// Requests that reached a handler.
    hits: AtomicU32,
    /// Request body bytes received (POST /post).
    body_bytes: AtomicU64,
    /// Response body bytes handed to the HTTP stack (GET /big, /slow).
    sent: AtomicU64,
    /// Streaming response bodies that ended because the client went away.
    dropped: AtomicU32,
    /// Streaming response bodies that ended normally.
    completed: AtomicU32,
}

struct Counted {
    seen: Arc<Counts>,
    done: bool,
}

impl Counted {
    fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let which = if self.done { &self.seen.completed } else { &self.seen.dropped };
        which.fetch_add(1, Ordering::SeqCst);
    }
}

struct Loopback {
    port: u16,
    seen: Arc<Counts>,
}

impl Loopback {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// `GET /small`: 2 bytes. `POST /post`: reads and counts the body. `GET /big?total=N`: streams
/// N bytes in 16 KiB chunks. `GET /slow`: 1 KiB, then nothing, forever.
async fn loopback() -> Loopback {
    type S = State<Arc<Counts>>;
    async fn small(State(seen): S) -> &'static str {
        seen.hits.fetch_add(1, Ordering::SeqCst);
        "ok"
    }
    async fn post(State(seen): S, body: Body) -> String {
        seen.hits.fetch_add(1, Ordering::SeqCst);
        let mut data = body.into_data_stream();
        while let Some(Ok(chunk)) = data.next().await {
            seen.body_bytes.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
        "received".into()
    }
    async fn big(State(seen): S, Query(q): Query<HashMap<String, u64>>) -> Body {
        seen.hits.fetch_add(1, Ordering::SeqCst);
        let total = q.get("total").copied().unwrap_or(64 << 20);
        let guard = Counted { seen: Arc::clone(&seen), done: false };
        let chunk = bytes::Bytes::from(vec![b'B'; 16 << 10]);
        let stream = futures::stream::unfold((0u64, guard), move |(at, guard)| {
            let chunk = chunk.clone();
            async move {
                if at >= total {
                    guard.finish();
                    return None;
                }
                let n = chunk.len().min(usize::try_from(total - at).unwrap());
                guard.seen.sent.fetch_add(n as u64, Ordering::SeqCst);
                Some((Ok::<_, std::io::Error>(chunk.slice(..n)), (at + n as u64, guard)))
            }
        });
        Body::from_stream(stream)
    }
    async fn slow(State(seen): S) -> Body {
        seen.hits.fetch_add(1, Ordering::SeqCst);
        let guard = Counted { seen: Arc::clone(&seen), done: false };
        let stream = futures::stream::unfold((true, guard), |(first, guard)| async move {
            if first {
                guard.seen.sent.fetch_add(1024, Ordering::SeqCst);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'S'; 1024])), (false, guard)))
            } else {
                std::future::pending::<()>().await;
                None
            }
        });
        Body::from_stream(stream)
    }
    let seen = Arc::new(Counts::default());
    let app = axum::Router::new()
        .route("/small", axum::routing::get(small))
        .route("/post", axum::routing::post(post))
        .route("/big", axum::routing::get(big))
        .route("/slow", axum::routing::get(slow))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(delegate_devstack_tls::serve_http(listener, app, std::future::pending()));
    Loopback { port, seen }
}

// ---------------------------------------------------------------------------------------------
// A fake model provider that counts calls.

struct FakeModel {
    calls: AtomicU32,
    /// Bytes of text in each answer.
    answer_bytes: usize,
    /// Tokens each call reports.
    tokens: u32,
}

impl FakeModel {
    fn new(answer_bytes: usize, tokens: u32) -> Arc<Self> {
        Arc::new(Self { calls: AtomicU32::new(0), answer_bytes, tokens })
    }

    fn answer(&self) -> Result<ConverseResponse, delegate_model::ModelError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(ConverseResponse {
            message: Message {
                role: Role::Assistant,
                content: vec![ContentBlock::Text("m".repeat(self.answer_bytes))],
            },
            stop_reason: StopReason::EndTurn,
            usage: Usage {
                input_tokens: self.tokens / 2,
                output_tokens: self.tokens / 2,
                total_tokens: self.tokens,
            },
            latency_ms: None,
        })
    }
}

impl ModelProvider for FakeModel {
    fn converse<'a>(&'a self, _model_id: &'a str, _req: &'a ConverseRequest) -> ModelFuture<'a> {
        Box::pin(async move { self.answer() })
    }

    fn converse_stream<'a>(
        &'a self,
        _model_id: &'a str,
        _req: &'a ConverseRequest,
        text: &'a tokio::sync::mpsc::Sender<String>,
    ) -> ModelFuture<'a> {
        Box::pin(async move {
            // Two small deltas reach the caller; the (possibly large) message is assembled.
            let _ = text.send("d".into()).await;
            let _ = text.send("d".into()).await;
            self.answer()
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The server: the production runtime, gateway and server crates, wired as host/app does.

struct IoServer {
    url: String,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for IoServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn io_server(limits: Limits, loopback: &Loopback, model: Option<Arc<FakeModel>>) -> IoServer {
    let runtime = delegate_runtime::Runtime::new(&delegate_runtime::RuntimeOptions {
        epoch_tick: Duration::from_millis(10),
        pool_instances: 10,
        max_memory_bytes: limits.memory_bytes,
        max_table_elements: limits.table_elements,
        guest_debug: false,
        cache_dir: None,
        perf_map: false,
    })
    .unwrap();
    let bytes = std::fs::read(delegate_artifacts::HOSTILE).unwrap();
    let model = model.map(|m| ModelAccess {
        provider: m as Arc<dyn ModelProvider>,
        model_id: "fake-model".into(),
        request_limits: RequestLimits::default(),
    });
    let client = delegate_outbound::build_client(&delegate_outbound::OutboundConfig::default()).unwrap();
    let vault = Arc::new(delegate_vault::TokenVault::new(
        delegate_vault::VaultConfig::default().validate().unwrap(),
        client.clone(),
    ));
    let policy = delegate_egress::EgressConfig {
        rules: vec![delegate_egress::RuleConfig {
            methods: vec!["GET".into(), "POST".into()],
            scheme: Some("http".into()),
            host: "127.0.0.1".into(),
            port: Some(loopback.port),
            path_prefix: Some("/".into()),
            credential: None,
            allow_ip_literal: true,
        }],
    }
    .validate()
    .unwrap();
    let plugin = runtime
        .load_plugin_bytes("hostile", &bytes, limits, &std::collections::BTreeMap::new(), model)
        .unwrap()
        .with_egress(delegate_runtime::EgressAccess {
            gateway: delegate_egress::EgressGateway::new(
                vault,
                client,
                Arc::new(delegate_egress::AuditSink::Discard),
            ),
            policy: Arc::new(policy),
            limits: delegate_egress::EgressLimits {
                max_requests: limits.egress_requests,
                max_request_bytes: limits.egress_request_bytes,
                max_response_bytes: limits.egress_response_bytes,
                request_timeout: limits.egress_request_timeout,
            },
        });
    let state = delegate_server::AppState::new(
        delegate_runtime::PluginRegistry::single(plugin),
        Arc::new(TestAuthorizer),
        delegate_server::ServerOptions {
            max_body_bytes: 64 << 10,
            max_concurrency: 8,
            retry_after_seconds: 2,
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(delegate_server::serve(listener, delegate_server::router(state), async move {
        let _ = rx.await;
    }));
    IoServer { url, shutdown: Some(tx) }
}

/// Runs `payload` as mallory while jane runs `ok` on the same server; checks mallory's code
/// and the bound, that jane's invocation and a later one succeed and the server is healthy.
/// Returns what mallory saw.
async fn contained_io(
    server: &IoServer,
    payload: serde_json::Value,
    expected: &str,
    bound: Duration,
) -> Seen {
    let ok = json!({"mode": "ok"});
    let started = Instant::now();
    let (bad, good) =
        tokio::join!(invoke(&server.url, "mallory", &payload), invoke(&server.url, "jane", &ok));
    let elapsed = started.elapsed();
    assert_eq!(bad.error_type.as_deref(), Some(expected), "{payload}: {bad:?}");
    assert!(elapsed < bound, "{payload} took {elapsed:?}, bound {bound:?}");
    assert_eq!(good.result.as_deref(), Some("ok"), "jane, next to {payload}: {good:?}");
    assert_eq!(ping(&server.url).await["status"], "Healthy");
    let after = invoke(&server.url, "jane", &json!({"mode": "ok"})).await;
    assert_eq!(after.result.as_deref(), Some("ok"), "after {payload}: {after:?}");
    bad
}

fn message(seen: &Seen) -> String {
    seen.error.as_ref().and_then(|e| e["error"].as_str()).unwrap_or("").to_owned()
}

/// Waits (bounded) until `f` holds; the condition is about the far side of a connection the
/// host has just closed, which the loopback server notices asynchronously.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "{what} did not happen within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Thousands of outbound requests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_flood_stops_at_the_egress_request_cap() {
    let lb = loopback().await;
    // Thousands of host calls in one invocation: more CPU and wall clock than the other tests
    // so that a loaded machine does not turn this into a CPU-limit test.
    let limits = Limits { cpu: Duration::from_secs(3), wall_clock: Duration::from_secs(20), ..io_limits() };
    let server = io_server(limits, &lb, None).await;
    // The guest sees `HTTP-request-denied` on request cap + 1 (the same error as a policy
    // denial) and gives up: its own error ends the invocation.
    let bad = contained_io(
        &server,
        json!({"mode": "flood", "url": lb.url("/small"), "count": 5000}),
        "plugin_error",
        WALL + SLACK,
    )
    .await;
    assert_eq!(bad.status, 422);
    assert_eq!(
        message(&bad),
        format!("egress_refused after {REQUESTS} requests: request denied by the host's egress policy")
    );
    assert_eq!(lb.seen.hits.load(Ordering::SeqCst), REQUESTS);

    // A guest that ignores the refusals and tries all 5000: each extra one is refused by the
    // host without touching the network, so the loop ends quickly and only the cap got out.
    let seen = invoke(
        &server.url,
        "mallory",
        &json!({"mode": "flood", "url": lb.url("/small"), "count": 5000, "keep_going": true}),
    )
    .await;
    let report: serde_json::Value =
        serde_json::from_str(seen.result.as_deref().unwrap_or_else(|| panic!("{seen:?}"))).unwrap();
    assert_eq!(report["ok"], REQUESTS);
    assert_eq!(report["failed"], 5000 - REQUESTS);
    assert_eq!(report["first_error"], "request denied by the host's egress policy");
    assert_eq!(lb.seen.hits.load(Ordering::SeqCst), 2 * REQUESTS);
}

// ---------------------------------------------------------------------------------------------
// 2. Huge request and response bodies.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_body_is_refused_before_anything_is_sent() {
    let lb = loopback().await;
    let server = io_server(io_limits(), &lb, None).await;
    // Control: a body within the budget arrives whole (the mode always reports as an error).
    let seen =
        invoke(&server.url, "mallory", &json!({"mode": "big-request", "url": lb.url("/post"), "kib": 16}))
            .await;
    assert!(message(&seen).ends_with("response: status 200"), "{seen:?}");
    assert_eq!(lb.seen.body_bytes.load(Ordering::SeqCst), 16 << 10);
    assert_eq!(lb.seen.hits.load(Ordering::SeqCst), 1);

    // 1 MiB against a 64 KiB budget: the host stops collecting at the cap and never sends.
    let bad = contained_io(
        &server,
        json!({"mode": "big-request", "url": lb.url("/post"), "kib": 1024}),
        "plugin_error",
        WALL + SLACK,
    )
    .await;
    let msg = message(&bad);
    assert!(msg.ends_with("response: ErrorCode::HttpRequestBodySize(None)"), "{msg}");
    assert_eq!(lb.seen.hits.load(Ordering::SeqCst), 1, "the oversized request reached the endpoint");
    assert_eq!(lb.seen.body_bytes.load(Ordering::SeqCst), 16 << 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_response_body_is_cut_at_the_budget() {
    let lb = loopback().await;
    let server = io_server(io_limits(), &lb, None).await;
    // Control: a body within the budget is read whole.
    let seen =
        invoke(&server.url, "mallory", &json!({"mode": "big-response", "url": lb.url("/big?total=32768")}))
            .await;
    assert_eq!(seen.result.as_deref(), Some("32768"), "{seen:?}");
    assert_eq!(lb.seen.completed.load(Ordering::SeqCst), 1);

    // 64 MiB offered against a 64 KiB budget (each invocation has a fresh budget).
    let total: u64 = 64 << 20;
    let bad = contained_io(
        &server,
        json!({"mode": "big-response", "url": lb.url(&format!("/big?total={total}"))}),
        "plugin_error",
        WALL + SLACK,
    )
    .await;
    let msg = message(&bad);
    let rest = msg.strip_prefix("egress_refused response cut after ").unwrap_or_else(|| panic!("{msg}"));
    let (n, code) = rest.split_once(" bytes: ").unwrap();
    assert_eq!(code, "HTTP response body size exceeds limit", "{msg}");
    let n: u64 = n.parse().unwrap();
    assert!(n <= RESPONSE_BYTES, "the guest read {n} bytes, budget {RESPONSE_BYTES}");
    // The host dropped the downstream response instead of draining it.
    eventually("the endpoint noticing the dropped response", || lb.seen.dropped.load(Ordering::SeqCst) == 1)
        .await;
    let sent = lb.seen.sent.load(Ordering::SeqCst) - 32768;
    assert!(sent < total, "the whole {total} bytes were pulled from the endpoint");
    eprintln!("big response: guest read {n} bytes; endpoint handed {sent} of {total} bytes to its socket");
}

// ---------------------------------------------------------------------------------------------
// 3. Slowloris: a request body that never ends.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_finished_request_body_is_bounded_by_the_wall_clock() {
    let lb = loopback().await;
    let server = io_server(io_limits(), &lb, None).await;
    // egress_timeout_ms (500 ms) counts from the send, which needs the whole body: the guest
    // that never finishes its body is stopped by the wall clock (3 s).
    contained_io(&server, json!({"mode": "slowloris", "url": lb.url("/post")}), "timeout", WALL + SLACK)
        .await;
    assert_eq!(lb.seen.hits.load(Ordering::SeqCst), 0, "a partial body was forwarded");
    assert_eq!(lb.seen.body_bytes.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------------
// 4. A response body held open without reading it.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_response_body_times_out_and_the_next_request_works() {
    let lb = loopback().await;
    let server = io_server(io_limits(), &lb, None).await;
    // Held past egress_timeout_ms but within the wall clock: the read afterwards fails with the
    // request timeout, and a new request in the same invocation still works.
    let payload =
        json!({"mode": "hold-body", "url": lb.url("/slow"), "wait_ms": 1500, "again": lb.url("/small")});
    let seen = invoke(&server.url, "mallory", &payload).await;
    let report: serde_json::Value = serde_json::from_str(seen.result.as_deref().expect("report")).unwrap();
    assert_eq!(report["read_error"], "HTTP response timeout", "{report}");
    assert!(report["read"].as_u64().unwrap() <= 1024, "{report}");
    assert_eq!(report["again_status"], 200, "{report}");
    eventually("the timed-out response being released", || lb.seen.dropped.load(Ordering::SeqCst) == 1).await;

    // Held forever: the wall clock ends the invocation and the connection is released.
    let bad = contained_io(
        &server,
        json!({"mode": "hold-body", "url": lb.url("/slow"), "wait_ms": 3_600_000}),
        "timeout",
        WALL + SLACK,
    )
    .await;
    assert_eq!(bad.status, 504);
    eventually("the held response being released", || lb.seen.dropped.load(Ordering::SeqCst) == 2).await;
    let hits = lb.seen.hits.load(Ordering::SeqCst);
    let seen =
        invoke(&server.url, "jane", &json!({"mode": "flood", "url": lb.url("/small"), "count": 2})).await;
    assert_eq!(seen.result.as_deref(), Some(r#"{"failed":0,"first_error":null,"ok":2}"#), "{seen:?}");
    assert_eq!(lb.seen.hits.load(Ordering::SeqCst), hits + 2);
}

// ---------------------------------------------------------------------------------------------
// 5. Unbounded model calls.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_flood_stops_at_the_call_budget() {
    let lb = loopback().await;
    for stream in [false, true] {
        let model = FakeModel::new(16, 10);
        let server = io_server(io_limits(), &lb, Some(Arc::clone(&model))).await;
        let bad = contained_io(
            &server,
            json!({"mode": "model-flood", "stream": stream}),
            "plugin_error",
            WALL + SLACK,
        )
        .await;
        assert_eq!(
            message(&bad),
            format!(
                "budget_exceeded: call {}: model call budget of {MODEL_CALLS} calls used up",
                MODEL_CALLS + 1
            ),
            "stream {stream}"
        );
        assert_eq!(model.calls.load(Ordering::SeqCst), MODEL_CALLS, "stream {stream}");
        if stream {
            // The deltas of the calls that were allowed reached the caller.
            assert_eq!(bad.text, "dd".repeat(MODEL_CALLS as usize));
        }
    }
    // The token budget: 40 tokens a call against 100 allows three calls (the third crosses the
    // line and is still answered), the fourth is refused before it reaches the provider.
    let model = FakeModel::new(16, 40);
    let limits = Limits { model_calls: 100, model_tokens: 100, ..io_limits() };
    let server = io_server(limits, &lb, Some(Arc::clone(&model))).await;
    let bad = contained_io(&server, json!({"mode": "model-flood"}), "plugin_error", WALL + SLACK).await;
    assert_eq!(message(&bad), "budget_exceeded: call 4: model token budget of 100 used up (120 tokens)");
    assert_eq!(model.calls.load(Ordering::SeqCst), 3);
}

// ---------------------------------------------------------------------------------------------
// 6. Giant strings across the WIT boundary.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giant_strings_hit_a_limit_or_are_truncated() {
    let lb = loopback().await;
    // Room for one 64 MiB string in the guest, so it really crosses the boundary.
    let limits = Limits { memory_bytes: 160 << 20, cpu: Duration::from_secs(2), ..io_limits() };
    let server = io_server(limits, &lb, None).await;
    contained_io(&server, json!({"mode": "emit-giant", "mib": 64}), "output_limit", WALL + SLACK).await;
    let bad =
        contained_io(&server, json!({"mode": "error-giant", "mib": 64}), "plugin_error", WALL + SLACK).await;
    let msg = message(&bad);
    assert!(msg.len() <= 2048 + '…'.len_utf8(), "a {} byte message reached the caller", msg.len());
    assert!(msg.starts_with("eeee") && msg.ends_with('…'), "{}", &msg[msg.len().saturating_sub(16)..]);
    // With the usual 32 MiB the string cannot even be built.
    let small = io_server(io_limits(), &lb, None).await;
    contained_io(&small, json!({"mode": "emit-giant", "mib": 64}), "memory_limit", WALL + SLACK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_utf8_trap_cleanly() {
    let lb = loopback().await;
    let server = io_server(io_limits(), &lb, None).await;
    let bad = contained_io(&server, json!({"mode": "emit-invalid-utf8"}), "plugin_trap", WALL + SLACK).await;
    assert!(bad.text.is_empty(), "invalid text reached the caller: {:?}", bad.text);
    // The canonical ABI's string lift refuses the bytes: a trap, not a host panic.
    assert_eq!(message(&bad), "the plugin failed: invalid utf-8 sequence of 1 bytes from index 4");
}

// ---------------------------------------------------------------------------------------------
// 7. Traps with host work in flight.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_with_a_request_body_in_flight() {
    let lb = loopback().await;
    let server = io_server(io_limits(), &lb, None).await;
    let bad = contained_io(
        &server,
        json!({"mode": "trap-mid-request", "url": lb.url("/post")}),
        "plugin_trap",
        WALL + SLACK,
    )
    .await;
    assert!(message(&bad).contains("unreachable"), "{bad:?}");
    assert_eq!(lb.seen.hits.load(Ordering::SeqCst), 0, "the half-written request was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_with_a_response_body_streaming_in() {
    let lb = loopback().await;
    let server = io_server(io_limits(), &lb, None).await;
    contained_io(
        &server,
        json!({"mode": "trap-mid-response", "url": lb.url("/slow")}),
        "plugin_trap",
        WALL + SLACK,
    )
    .await;
    assert_eq!(lb.seen.hits.load(Ordering::SeqCst), 1);
    eventually("the streaming response being released", || lb.seen.dropped.load(Ordering::SeqCst) == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_while_the_host_returns_a_model_answer() {
    let lb = loopback().await;
    for stream in [false, true] {
        // 8 MiB answer, 28 of 32 MiB already taken: the host's cabi_realloc call into the guest
        // (to place the answer) needs memory the guest may not have.
        let model = FakeModel::new(8 << 20, 10);
        let server = io_server(io_limits(), &lb, Some(Arc::clone(&model))).await;
        contained_io(
            &server,
            json!({"mode": "squeeze-then-model", "fill_mib": 28, "stream": stream}),
            "memory_limit",
            WALL + SLACK,
        )
        .await;
        assert_eq!(model.calls.load(Ordering::SeqCst), 1);
    }
}

/// The result string is the invocation's last output, what the caller receives after the
/// emitted text; `output_bytes` bounds it too (it once did not: only `output.emit` and model
/// stream deltas were counted, and a 64 MiB result reached the caller with status 200).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giant_result_is_bounded_by_the_output_limit() {
    let lb = loopback().await;
    let limits = Limits { memory_bytes: 160 << 20, cpu: Duration::from_secs(2), ..io_limits() };
    let server = io_server(limits, &lb, None).await;
    let ok = json!({"mode": "ok"});
    let payload = json!({"mode": "result-giant", "mib": 64});
    let (bad, good) =
        tokio::join!(invoke(&server.url, "mallory", &payload), invoke(&server.url, "jane", &ok));
    assert_eq!(good.result.as_deref(), Some("ok"));
    let received = bad.result.as_ref().map_or(0, String::len) + bad.text.len();
    assert_eq!(
        (bad.error_type.as_deref(), received),
        (Some("output_limit"), 0),
        "(error_type, result bytes the caller received) for a 64 MiB result with output_bytes = 256 KiB \
         (HTTP status {})",
        bad.status
    );
}
