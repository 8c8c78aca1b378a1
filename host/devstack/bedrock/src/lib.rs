//! Devstack Bedrock endpoint: Converse and ConverseStream with a deterministic planner.
//!
//! [`BedrockStub`] is an axum [`Router`] speaking the Bedrock Runtime wire protocol closely
//! enough that the real AWS SDKs (Rust, boto3) are its clients: `POST /model/{modelId}/converse`
//! (JSON) and `POST /model/{modelId}/converse-stream` (`application/vnd.amazon.eventstream`
//! frames written with `aws-smithy-eventstream`, unwrapped payloads with `p` padding, text
//! blocks without `contentBlockStart`, tool input split mid-token). Requests must carry a
//! SigV4 `Authorization` header scoped to service `bedrock`; malformed conversations get
//! Bedrock's `ValidationException`. The [`planner`] decides what the "model" says.
//!
//! [`Faults`] (from [`BedrockStub::faults`]) switches failures on for tests.
//!
//! Serve the router with `delegate_devstack_tls::serve_https` / `serve_http` (or any server
//! that sets `TCP_NODELAY`): stream frames are small writes, and with Nagle's algorithm on,
//! each one after the first waits for the client's delayed ACK (measured: ConverseStream p50
//! 44 ms instead of about 1 ms with plain `axum::serve`).

pub mod planner;
pub mod wire;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::planner::{OfferedTool, Plan, PlannedBlock};
use crate::wire::{WireError, check_sigv4, corrupt, event_frame, exception_frame, validate_converse_body};

/// Stub settings.
#[derive(Debug, Clone)]
pub struct BedrockStubConfig {
    /// Pause before each stream delta (default 0), for streaming tests and demos.
    pub delta_delay: Duration,
    /// If set, the SigV4 credential scope must name this region.
    pub region: Option<String>,
    /// If set, only these model ids exist; others get `ResourceNotFoundException`.
    pub known_models: Option<Vec<String>>,
    /// Largest request body accepted (default 8 MiB).
    pub max_body_bytes: usize,
}

impl Default for BedrockStubConfig {
    fn default() -> Self {
        Self {
            delta_delay: Duration::ZERO,
            region: None,
            known_models: None,
            max_body_bytes: 8 * 1024 * 1024,
        }
    }
}

/// An error Bedrock can answer before the stream starts (status + `x-amzn-ErrorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StubError {
    /// 400 `ValidationException`.
    Validation,
    /// 403 `AccessDeniedException`.
    AccessDenied,
    /// 404 `ResourceNotFoundException`.
    ResourceNotFound,
    /// 408 `ModelTimeoutException`.
    ModelTimeout,
    /// 424 `ModelErrorException`.
    ModelError,
    /// 424 `ModelStreamErrorException`.
    ModelStreamError,
    /// 429 `ThrottlingException`.
    Throttling,
    /// 429 `ModelNotReadyException`.
    ModelNotReady,
    /// 500 `InternalServerException`.
    InternalServer,
    /// 503 `ServiceUnavailableException`.
    ServiceUnavailable,
}

impl StubError {
    /// Every case, for tests that walk them all.
    pub const ALL: [StubError; 10] = [
        Self::Validation,
        Self::AccessDenied,
        Self::ResourceNotFound,
        Self::ModelTimeout,
        Self::ModelError,
        Self::ModelStreamError,
        Self::Throttling,
        Self::ModelNotReady,
        Self::InternalServer,
        Self::ServiceUnavailable,
    ];

    /// HTTP status and error name.
    pub fn wire(self) -> (u16, &'static str) {
        match self {
            Self::Validation => (400, "ValidationException"),
            Self::AccessDenied => (403, "AccessDeniedException"),
            Self::ResourceNotFound => (404, "ResourceNotFoundException"),
            Self::ModelTimeout => (408, "ModelTimeoutException"),
            Self::ModelError => (424, "ModelErrorException"),
            Self::ModelStreamError => (424, "ModelStreamErrorException"),
            Self::Throttling => (429, "ThrottlingException"),
            Self::ModelNotReady => (429, "ModelNotReadyException"),
            Self::InternalServer => (500, "InternalServerException"),
            Self::ServiceUnavailable => (503, "ServiceUnavailableException"),
        }
    }
}

/// An exception Bedrock can send inside an open stream (the five stream members).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamException {
    /// `throttlingException`.
    Throttling,
    /// `modelStreamErrorException`.
    ModelStreamError,
    /// `internalServerException`.
    InternalServer,
    /// `serviceUnavailableException`.
    ServiceUnavailable,
    /// `validationException`.
    Validation,
}

impl StreamException {
    /// The `:exception-type` header value (the union member name).
    pub fn member(self) -> &'static str {
        match self {
            Self::Throttling => "throttlingException",
            Self::ModelStreamError => "modelStreamErrorException",
            Self::InternalServer => "internalServerException",
            Self::ServiceUnavailable => "serviceUnavailableException",
            Self::Validation => "validationException",
        }
    }
}

/// How the next streams break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFault {
    /// An exception frame after `after_deltas` delta events, then the end of the stream.
    Exception {
        /// Deltas sent before the failure.
        after_deltas: usize,
        /// Which exception.
        exception: StreamException,
    },
    /// A frame with a broken CRC after `after_deltas` delta events, then the end of the stream.
    MalformedFrame {
        /// Deltas sent before the failure.
        after_deltas: usize,
    },
}

/// Handler timings kept for benchmarks (the first this many calls after a reset).
const MAX_HANDLER_TIMES: usize = 100_000;

#[derive(Debug, Default)]
struct FaultState {
    /// Per-request admission outcomes, in order; `None` admits normally.
    errors: VecDeque<Option<StubError>>,
    stream_faults: VecDeque<StreamFault>,
    delay: Duration,
    oversize: Option<usize>,
    calls: u64,
    handler_times: Vec<Duration>,
}

/// Shared handle to the stub's fault switches and counters. Cloning shares the state.
#[derive(Debug, Clone)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
    /// `Some(k)`: streams stop after `k` delta events until [`Faults::resume`].
    gate: Arc<watch::Sender<Option<usize>>>,
}

impl Faults {
    fn new() -> Self {
        Self { state: Arc::default(), gate: Arc::new(watch::channel(None).0) }
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        // A panicking test thread must not wedge the stub for the others.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next `n` requests get 429 `ThrottlingException`, then requests succeed again.
    pub fn throttle(&self, n: usize) {
        self.fail_next(n, StubError::Throttling);
    }

    /// The next `n` requests get `error` (before any stream starts).
    pub fn fail_next(&self, n: usize, error: StubError) {
        self.lock().errors.extend(std::iter::repeat_n(Some(error), n));
    }

    /// The next `n` requests are admitted normally: queue errors behind them with
    /// [`Faults::fail_next`] to fail a later request (e.g. a client's restart).
    pub fn pass_next(&self, n: usize) {
        self.lock().errors.extend(std::iter::repeat_n(None, n));
    }

    /// Every request waits `delay` before it is answered.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// The next `n` streams break as `fault` says.
    pub fn stream_fault(&self, n: usize, fault: StreamFault) {
        self.lock().stream_faults.extend(std::iter::repeat_n(fault, n));
    }

    /// The next response carries `bytes` extra bytes of text.
    pub fn oversize_next(&self, bytes: usize) {
        self.lock().oversize = Some(bytes);
    }

    /// Streams hold back everything after their first `deltas` delta events until [`Faults::resume`].
    pub fn pause_after_deltas(&self, deltas: usize) {
        self.gate.send_replace(Some(deltas));
    }

    /// Lets held streams continue.
    pub fn resume(&self) {
        self.gate.send_replace(None);
    }

    /// Model requests that reached the stub (refused ones included).
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// Time the stub spent per successful Converse call, from request to response (for
    /// benchmarks that subtract the endpoint's own time); the first 100 000 after a reset.
    pub fn handler_times(&self) -> Vec<Duration> {
        self.lock().handler_times.clone()
    }

    /// Clears every switch and counter.
    pub fn reset(&self) {
        *self.lock() = FaultState::default();
        self.resume();
    }
}

/// The Bedrock-compatible endpoint.
#[derive(Debug, Clone)]
pub struct BedrockStub {
    config: Arc<BedrockStubConfig>,
    faults: Faults,
}

impl BedrockStub {
    /// A stub with `config`.
    pub fn new(config: BedrockStubConfig) -> Self {
        Self { config: Arc::new(config), faults: Faults::new() }
    }

    /// The fault switches and counters (shared with every router made from this stub).
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// The axum router: `POST /model/{modelId}/converse` and `/model/{modelId}/converse-stream`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/model/{model_id}/converse", post(converse))
            .route("/model/{model_id}/converse-stream", post(converse_stream))
            .layer(DefaultBodyLimit::max(self.config.max_body_bytes))
            .with_state(self.clone())
    }
}

fn error_response(e: &WireError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp =
        (status, [(header::CONTENT_TYPE, "application/json")], json!({ "message": e.message }).to_string())
            .into_response();
    // Bedrock appends a namespace after ':' (which the SDKs strip); send it so clients must cope.
    if let Ok(v) =
        HeaderValue::from_str(&format!("{}:http://internal.amazon.com/coral/com.amazon.bedrock/", e.name))
    {
        resp.headers_mut().insert("x-amzn-errortype", v);
    }
    resp
}

fn stub_error(e: StubError) -> WireError {
    let (status, name) = e.wire();
    let message = match e {
        StubError::Throttling => "Too many requests, please wait before trying again.",
        StubError::ModelNotReady => "Model is not ready for inference. Wait and try your request again.",
        StubError::ModelTimeout => "Model has timed out in processing the request. Try your request again.",
        StubError::AccessDenied => "You don't have access to the model with the specified model ID.",
        StubError::ResourceNotFound => "The provided model identifier is invalid.",
        StubError::Validation => "The request is invalid (injected by the devstack).",
        StubError::ModelError => "The model failed to process the request (injected by the devstack).",
        StubError::ModelStreamError => "The model stream failed (injected by the devstack).",
        StubError::InternalServer => "The server encountered an internal error (injected by the devstack).",
        StubError::ServiceUnavailable => "The service is unavailable. Try again later.",
    };
    WireError { status, name, message: message.into() }
}

/// What every request goes through before the planner: counting, delay, SigV4, injected
/// errors, model id, body checks. Returns the body and the plan.
struct Admitted {
    plan: Plan,
    input_tokens: u32,
    oversize: Option<usize>,
}

async fn admit(
    stub: &BedrockStub,
    model_id: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Admitted, WireError> {
    let (delay, injected, oversize) = {
        let mut st = stub.faults.lock();
        st.calls += 1;
        (st.delay, st.errors.pop_front().flatten(), st.oversize.take())
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    check_sigv4(headers, stub.config.region.as_deref())?;
    if let Some(e) = injected {
        return Err(stub_error(e));
    }
    if model_id.is_empty() {
        return Err(WireError {
            status: 400,
            name: "ValidationException",
            message: "The provided model identifier is invalid.".into(),
        });
    }
    if let Some(known) = &stub.config.known_models
        && !known.iter().any(|m| m == model_id)
    {
        return Err(stub_error(StubError::ResourceNotFound));
    }
    // About a token per 4 bytes of the request as sent.
    let input_tokens = u32::try_from(body.len() / 4 + 1).unwrap_or(u32::MAX);
    let body: Value = serde_json::from_slice(body).map_err(|_| WireError {
        status: 400,
        name: "ValidationException",
        message: "Malformed input request, please reformat your input and try again.".into(),
    })?;
    validate_converse_body(&body)?;
    let messages = body.get("messages").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let tools = OfferedTool::from_tool_config(body.get("toolConfig"));
    let plan = planner::plan(messages, &tools);
    Ok(Admitted { plan, input_tokens, oversize })
}

fn output_tokens(plan: &Plan, extra: usize) -> u32 {
    let bytes: usize = plan
        .blocks
        .iter()
        .map(|b| match b {
            PlannedBlock::Text(parts) => parts.iter().map(String::len).sum(),
            PlannedBlock::ToolUse { input, .. } => input.to_string().len(),
        })
        .sum::<usize>()
        + extra;
    u32::try_from(bytes / 4 + 1).unwrap_or(u32::MAX)
}

fn usage(input: u32, output: u32) -> Value {
    json!({"inputTokens": input, "outputTokens": output, "totalTokens": input.saturating_add(output)})
}

fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

async fn converse(
    State(stub): State<BedrockStub>,
    Path(model_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let start = Instant::now();
    let a = match admit(&stub, &model_id, &headers, &body).await {
        Ok(a) => a,
        Err(e) => return error_response(&e),
    };
    let mut content = Vec::new();
    for b in &a.plan.blocks {
        match b {
            PlannedBlock::Text(parts) => {
                let text = parts.concat();
                if !text.is_empty() {
                    content.push(json!({ "text": text }));
                }
            }
            PlannedBlock::ToolUse { tool_use_id, name, input } => {
                content.push(json!({"toolUse": {"toolUseId": tool_use_id, "name": name, "input": input}}));
            }
        }
    }
    let extra = a.oversize.unwrap_or(0);
    if extra > 0 {
        content.push(json!({ "text": "x".repeat(extra) }));
    }
    let out = json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": a.plan.stop_reason,
        "usage": usage(a.input_tokens, output_tokens(&a.plan, extra)),
        "metrics": {"latencyMs": elapsed_ms(start)},
    })
    .to_string();
    {
        let mut st = stub.faults.lock();
        // Bounded: a long-running `delegate demo` must not grow without limit.
        if st.handler_times.len() < MAX_HANDLER_TIMES {
            st.handler_times.push(start.elapsed());
        }
    }
    ([(header::CONTENT_TYPE, "application/json")], out).into_response()
}

/// One frame of a planned stream; `delta` marks contentBlockDelta events (what faults count).
struct Frame {
    bytes: Bytes,
    delta: bool,
}

/// Splits tool input JSON into fragments of 7 bytes (on char boundaries), so keys, strings and
/// numbers are cut mid-token as Bedrock does.
fn split_mid_token(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in s.chars() {
        cur.push(c);
        if cur.len() >= 7 {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn stream_frames(plan: &Plan, input_tokens: u32, extra: usize, start: Instant) -> Vec<Frame> {
    let ev = |t: &str, p: Value, delta: bool| Frame { bytes: event_frame(t, p), delta };
    let mut frames = vec![ev("messageStart", json!({"role": "assistant"}), false)];
    let mut index = 0u32;
    for b in &plan.blocks {
        match b {
            PlannedBlock::Text(parts) => {
                let parts: Vec<&String> = parts.iter().filter(|p| !p.is_empty()).collect();
                if parts.is_empty() {
                    continue;
                }
                // Text blocks start directly with a delta: no contentBlockStart.
                for p in parts {
                    frames.push(ev(
                        "contentBlockDelta",
                        json!({"contentBlockIndex": index, "delta": {"text": p}}),
                        true,
                    ));
                }
                frames.push(ev("contentBlockStop", json!({"contentBlockIndex": index}), false));
                index += 1;
            }
            PlannedBlock::ToolUse { tool_use_id, name, input } => {
                frames.push(ev(
                    "contentBlockStart",
                    json!({"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": tool_use_id, "name": name}}}),
                    false,
                ));
                let text = input.to_string();
                // An empty input is sent as no delta at all (the client must assume `{}`).
                if text != "{}" {
                    for frag in split_mid_token(&text) {
                        frames.push(ev(
                            "contentBlockDelta",
                            json!({"contentBlockIndex": index, "delta": {"toolUse": {"input": frag}}}),
                            true,
                        ));
                    }
                }
                frames.push(ev("contentBlockStop", json!({"contentBlockIndex": index}), false));
                index += 1;
            }
        }
    }
    if extra > 0 {
        let chunk = "x".repeat(1024);
        let mut left = extra;
        while left > 0 {
            let n = left.min(1024);
            frames.push(ev(
                "contentBlockDelta",
                json!({"contentBlockIndex": index, "delta": {"text": &chunk[..n]}}),
                true,
            ));
            left -= n;
        }
        frames.push(ev("contentBlockStop", json!({"contentBlockIndex": index}), false));
    }
    frames.push(ev("messageStop", json!({"stopReason": plan.stop_reason}), false));
    frames.push(ev(
        "metadata",
        json!({"usage": usage(input_tokens, output_tokens(plan, extra)), "metrics": {"latencyMs": elapsed_ms(start)}}),
        false,
    ));
    frames
}

async fn converse_stream(
    State(stub): State<BedrockStub>,
    Path(model_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let start = Instant::now();
    let a = match admit(&stub, &model_id, &headers, &body).await {
        Ok(a) => a,
        Err(e) => return error_response(&e),
    };
    let fault = stub.faults.lock().stream_faults.pop_front();
    let frames = stream_frames(&a.plan, a.input_tokens, a.oversize.unwrap_or(0), start);
    let delay = stub.config.delta_delay;
    let mut gate = stub.faults.gate.subscribe();
    if delay.is_zero() && fault.is_none() && gate.borrow().is_none() {
        // Nothing to pace, inject or hold: the frames are written as soon as the connection
        // takes them (still one event-stream message per chunk), without a producer task and
        // a channel hop per frame, so a load test spends its CPU on the host under test.
        let body = futures::stream::iter(frames.into_iter().map(|f| Ok::<_, Infallible>(f.bytes)));
        return ([(header::CONTENT_TYPE, "application/vnd.amazon.eventstream")], Body::from_stream(body))
            .into_response();
    }
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        let mut deltas = 0usize;
        for f in frames {
            if f.delta {
                let failure = match fault {
                    Some(StreamFault::Exception { after_deltas, exception }) if after_deltas == deltas => {
                        Some(exception_frame(
                            exception.member(),
                            "The stream failed (injected by the devstack).",
                        ))
                    }
                    Some(StreamFault::MalformedFrame { after_deltas }) if after_deltas == deltas => {
                        Some(corrupt(&f.bytes))
                    }
                    _ => None,
                };
                if let Some(bad) = failure {
                    let _ = tx.send(bad).await;
                    return;
                }
                // Hold here while a test keeps the gate closed at this many deltas.
                if gate.wait_for(|g| g.is_none_or(|k| deltas < k)).await.is_err() {
                    return;
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                deltas += 1;
            }
            if tx.send(f.bytes).await.is_err() {
                return; // the client went away
            }
        }
    });
    let body =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx)) },
        );
    ([(header::CONTENT_TYPE, "application/vnd.amazon.eventstream")], Body::from_stream(body)).into_response()
}
