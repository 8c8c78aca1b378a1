//! The production path (aws-sdk-bedrockruntime inside [`BedrockProvider`]) against the devstack
//! Bedrock endpoint on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use delegate_devstack_bedrock::{
    BedrockStub, BedrockStubConfig, Faults, StreamException, StreamFault, StubError,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::*;
use crate::budget::ModelBudget;
use crate::config::ModelConfig;
use crate::provider::call_model;
use crate::types::*;
use crate::validate::RequestLimits;

const MODEL: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
/// Guard against hangs only; never a timing assertion.
const HANG_GUARD: Duration = Duration::from_secs(30);

struct Env {
    faults: Faults,
    url: String,
}

async fn start(config: BedrockStubConfig) -> Env {
    let stub = BedrockStub::new(config);
    let faults = stub.faults();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(delegate_devstack_tls::serve_http(listener, stub.router(), std::future::pending()));
    Env { faults, url }
}

fn test_config(url: &str) -> ModelConfig {
    ModelConfig {
        region: Some("us-east-1".into()),
        endpoint_url: Some(url.into()),
        allow_http: true,
        model_id: MODEL.into(),
        initial_backoff_ms: Some(1),
        max_backoff_ms: Some(5),
        ..Default::default()
    }
}

fn static_credentials() -> AwsCredentials {
    AwsCredentials::Static {
        access_key_id: "AKIDDEVSTACK".into(),
        secret_access_key: Secret::new("devstack-secret-key"),
        session_token: None,
    }
}

async fn provider_with(config: ModelConfig) -> BedrockProvider {
    BedrockProvider::connect(config.validate().unwrap(), static_credentials()).await.unwrap()
}

async fn provider(env: &Env) -> BedrockProvider {
    provider_with(test_config(&env.url)).await
}

fn schema(props: &Value) -> String {
    json!({"type":"object","properties":props}).to_string()
}

fn snow_tools() -> ToolConfig {
    ToolConfig {
        tools: vec![
            ToolSpec {
                name: "query_incidents".into(),
                description: "Search for incidents in ServiceNow.".into(),
                input_schema: schema(
                    &json!({"query":{"type":"string"},"limit":{"type":"integer"},"fields":{"type":"string"}}),
                ),
            },
            ToolSpec {
                name: "get_incident".into(),
                description: "Get details of a specific incident by number.".into(),
                input_schema: schema(&json!({"number":{"type":"string"}})),
            },
            ToolSpec {
                name: "update_incident".into(),
                description: "Update an existing incident.".into(),
                input_schema: schema(&json!({"sys_id":{"type":"string"},"updates":{"type":"object"}})),
            },
        ],
        tool_choice: Some(ToolChoice::Auto),
    }
}

fn ask(text: &str) -> ConverseRequest {
    ConverseRequest {
        system: vec!["You are a ServiceNow assistant. Be concise.".into()],
        messages: vec![Message::user_text(text)],
        tool_config: Some(snow_tools()),
        inference_config: Some(InferenceConfig {
            max_tokens: Some(1024),
            temperature: Some(0.2),
            top_p: None,
            stop_sequences: vec![],
        }),
    }
}

const INCIDENTS: &str = r#"{"result":[
 {"number":"INC0012345","short_description":"VPN connection dropping","priority":{"display_value":"2 - High","value":"2"},"state":"In Progress"},
 {"number":"INC0012389","short_description":"Outlook calendar sync failure","priority":"3","state":"New"}]}"#;

/// Appends the model's tool-use turn and the tool results to `req`.
fn answer_tools(req: &mut ConverseRequest, resp: &ConverseResponse, result: &str, status: ToolResultStatus) {
    req.messages.push(resp.message.clone());
    let results = resp
        .message
        .tool_uses()
        .map(|u| {
            ContentBlock::ToolResult(ToolResult {
                tool_use_id: u.tool_use_id.clone(),
                status,
                content: vec![ToolResultContent::Json(result.into())],
            })
        })
        .collect();
    req.messages.push(Message { role: Role::User, content: results });
}

fn only_tool_use(resp: &ConverseResponse) -> (&str, Value) {
    let uses: Vec<&ToolUse> = resp.message.tool_uses().collect();
    assert_eq!(uses.len(), 1, "{resp:?}");
    (uses[0].name.as_str(), serde_json::from_str(&uses[0].input).unwrap())
}

fn expected_query_input() -> Value {
    json!({"query":"assigned_to=javascript:gs.getUserID()^ORDERBYnumber","limit":5,
           "fields":"number,short_description,priority,state,assigned_to"})
}

#[tokio::test]
async fn converse_tool_loop_round_trip() {
    // known_models makes the stub check that the SDK's percent-encoded `:` decodes to the id.
    let env = start(BedrockStubConfig { known_models: Some(vec![MODEL.into()]), ..Default::default() }).await;
    let p = provider(&env).await;
    let mut req = ask("Show me 5 incidents assigned to me");
    let first = p.converse(MODEL, &req).await.unwrap();
    assert_eq!(first.stop_reason, StopReason::ToolUse);
    assert_eq!(first.message.role, Role::Assistant);
    assert_eq!(only_tool_use(&first), ("query_incidents", expected_query_input()));
    assert!(first.usage.input_tokens > 0 && first.usage.output_tokens > 0);
    assert_eq!(first.usage.total_tokens, first.usage.input_tokens + first.usage.output_tokens);
    assert!(first.latency_ms.is_some());

    answer_tools(&mut req, &first, INCIDENTS, ToolResultStatus::Success);
    let second = p.converse(MODEL, &req).await.unwrap();
    assert_eq!(second.stop_reason, StopReason::EndTurn);
    let text = second.message.text();
    assert!(text.contains("| Incident | Description | Priority | State |"), "{text}");
    assert!(text.contains("| INC0012345 | VPN connection dropping | 2 - High | In Progress |"), "{text}");
    assert!(text.contains("| INC0012389 | Outlook calendar sync failure | 3 | New |"), "{text}");

    // An unknown model id is a typed not-found error.
    let e = p.converse("anthropic.nope-v1:0", &req).await.unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::NotFound);
    assert!(!e.retryable);
}

#[tokio::test]
async fn converse_stream_round_trip_with_tools() {
    let env = start(BedrockStubConfig::default()).await;
    let p = provider(&env).await;
    let (tx, mut rx) = mpsc::channel(256);
    let mut req = ask("Show me 5 incidents assigned to me");
    let first = p.converse_stream(MODEL, &req, &tx).await.unwrap();
    assert_eq!(first.stop_reason, StopReason::ToolUse);
    // Tool input arrived split mid-token over several deltas and was reassembled.
    assert_eq!(only_tool_use(&first), ("query_incidents", expected_query_input()));
    let mut lead_in = String::new();
    while let Ok(d) = rx.try_recv() {
        lead_in.push_str(&d);
    }
    assert_eq!(lead_in, first.message.text());

    answer_tools(&mut req, &first, INCIDENTS, ToolResultStatus::Success);
    let second = p.converse_stream(MODEL, &req, &tx).await.unwrap();
    let mut deltas = Vec::new();
    while let Ok(d) = rx.try_recv() {
        deltas.push(d);
    }
    assert!(deltas.len() >= 4, "the answer should arrive in several deltas: {deltas:?}");
    assert_eq!(deltas.concat(), second.message.text());
    assert!(
        second.message.text().contains("| INC0012345 | VPN connection dropping | 2 - High | In Progress |")
    );
    assert_eq!(second.stop_reason, StopReason::EndTurn);
    assert!(second.usage.output_tokens > 0);
    assert_eq!(env.faults.calls(), 2);
}

#[tokio::test]
async fn update_flow_and_tool_error_are_relayed() {
    let env = start(BedrockStubConfig::default()).await;
    let p = provider(&env).await;
    let mut req = ask("Set INC0012345 urgency to 1");
    let r = p.converse(MODEL, &req).await.unwrap();
    assert_eq!(only_tool_use(&r), ("get_incident", json!({"number":"INC0012345"})));
    answer_tools(
        &mut req,
        &r,
        r#"{"result":[{"sys_id":"9d385017c611228701d22104cc95c371","number":"INC0012345"}]}"#,
        ToolResultStatus::Success,
    );
    let r = p.converse(MODEL, &req).await.unwrap();
    assert_eq!(
        only_tool_use(&r),
        ("update_incident", json!({"sys_id":"9d385017c611228701d22104cc95c371","updates":{"urgency":"1"}}))
    );
    answer_tools(
        &mut req,
        &r,
        r#"{"error":{"message":"Operation Failed","detail":"ACL restricts the record update"},"status":"failure"}"#,
        ToolResultStatus::Error,
    );
    let r = p.converse(MODEL, &req).await.unwrap();
    assert!(
        r.message.text().contains("Operation Failed (ACL restricts the record update)"),
        "{}",
        r.message.text()
    );
}

#[tokio::test]
async fn first_delta_reaches_the_caller_before_the_stream_finishes() {
    let env = start(BedrockStubConfig::default()).await;
    let p = provider(&env).await;
    let mut req = ask("list my incidents");
    let first = p.converse(MODEL, &req).await.unwrap();
    answer_tools(&mut req, &first, INCIDENTS, ToolResultStatus::Success);

    // The stub sends one delta and then holds the rest of the stream until resumed.
    env.faults.pause_after_deltas(1);
    let (tx, mut rx) = mpsc::channel(256);
    let call = tokio::spawn(async move { p.converse_stream(MODEL, &req, &tx).await });
    let d1 = tokio::time::timeout(HANG_GUARD, rx.recv()).await.unwrap().unwrap();
    assert!(!d1.is_empty());
    assert!(!call.is_finished(), "the call must still be waiting for the held-back stream");
    assert!(rx.try_recv().is_err(), "only the first delta can have been sent");
    env.faults.resume();
    let resp = tokio::time::timeout(HANG_GUARD, call).await.unwrap().unwrap().unwrap();
    let mut all = d1;
    while let Some(d) = rx.recv().await {
        all.push_str(&d);
    }
    assert_eq!(all, resp.message.text());
}

/// (stub error, expected kind, retried by the SDK)
const ERROR_TABLE: [(StubError, ModelErrorKind, bool); 10] = [
    (StubError::Validation, ModelErrorKind::Validation, false),
    (StubError::AccessDenied, ModelErrorKind::AccessDenied, false),
    (StubError::ResourceNotFound, ModelErrorKind::NotFound, false),
    (StubError::ModelTimeout, ModelErrorKind::ModelTimeout, false),
    (StubError::ModelError, ModelErrorKind::ModelError, false),
    (StubError::ModelStreamError, ModelErrorKind::StreamError, false),
    (StubError::Throttling, ModelErrorKind::Throttled, true),
    (StubError::ModelNotReady, ModelErrorKind::ModelNotReady, true),
    (StubError::InternalServer, ModelErrorKind::Internal, true),
    (StubError::ServiceUnavailable, ModelErrorKind::ServiceUnavailable, true),
];

#[tokio::test]
async fn every_bedrock_error_is_surfaced_with_its_kind_and_bounded_retries() {
    let env = start(BedrockStubConfig::default()).await;
    let p = provider(&env).await; // max_attempts = 3
    let req = ask("list my incidents");
    let (tx, _rx) = mpsc::channel(256);
    assert_eq!(StubError::ALL.len(), ERROR_TABLE.len());
    for (stub_error, kind, retried) in ERROR_TABLE {
        for streaming in [false, true] {
            env.faults.reset();
            env.faults.fail_next(10, stub_error);
            let e = if streaming {
                p.converse_stream(MODEL, &req, &tx).await
            } else {
                p.converse(MODEL, &req).await
            }
            .unwrap_err();
            assert_eq!(e.kind, kind, "{stub_error:?} streaming={streaming}: {e:?}");
            assert_eq!(e.retryable, kind.default_retryable(), "{stub_error:?}");
            assert!(e.message.starts_with("Bedrock: "), "{e:?}");
            let expected_calls = if retried { 3 } else { 1 };
            assert_eq!(env.faults.calls(), expected_calls, "{stub_error:?} streaming={streaming}");
        }
    }
}

#[tokio::test]
async fn throttling_is_retried_and_recovers() {
    let env = start(BedrockStubConfig::default()).await;
    let p = provider(&env).await;
    let req = ask("list my incidents");
    env.faults.throttle(2);
    let r = p.converse(MODEL, &req).await.unwrap();
    assert_eq!(r.stop_reason, StopReason::ToolUse);
    assert_eq!(env.faults.calls(), 3, "two throttled attempts, then success");

    env.faults.reset();
    env.faults.throttle(2);
    let (tx, _rx) = mpsc::channel(256);
    p.converse_stream(MODEL, &req, &tx).await.unwrap();
    assert_eq!(env.faults.calls(), 3);

    // With one attempt configured nothing is retried.
    env.faults.reset();
    env.faults.throttle(1);
    let single = provider_with(ModelConfig { max_attempts: Some(1), ..test_config(&env.url) }).await;
    assert_eq!(single.converse(MODEL, &req).await.unwrap_err().kind, ModelErrorKind::Throttled);
    assert_eq!(env.faults.calls(), 1);
}

async fn answered_conversation(p: &BedrockProvider) -> ConverseRequest {
    let mut req = ask("list my incidents");
    let first = p.converse(MODEL, &req).await.unwrap();
    answer_tools(&mut req, &first, INCIDENTS, ToolResultStatus::Success);
    req
}

#[tokio::test]
async fn mid_stream_failure_after_text_is_a_typed_stream_error() {
    let env = start(BedrockStubConfig::default()).await;
    let p = provider(&env).await;
    let req = answered_conversation(&p).await;
    for fault in [
        StreamFault::Exception { after_deltas: 2, exception: StreamException::Throttling },
        StreamFault::Exception { after_deltas: 2, exception: StreamException::ModelStreamError },
        StreamFault::MalformedFrame { after_deltas: 2 },
    ] {
        env.faults.reset();
        env.faults.stream_fault(1, fault);
        let (tx, mut rx) = mpsc::channel(256);
        let e =
            tokio::time::timeout(HANG_GUARD, p.converse_stream(MODEL, &req, &tx)).await.unwrap().unwrap_err();
        assert_eq!(e.kind, ModelErrorKind::StreamError, "{fault:?}: {e:?}");
        drop(tx);
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, 2, "exactly the deltas before the failure were forwarded");
        assert_eq!(env.faults.calls(), 1, "no restart once text reached the caller ({fault:?})");
    }
}

#[tokio::test]
async fn mid_stream_failure_before_text_is_restarted_boundedly() {
    let env = start(BedrockStubConfig::default()).await;
    let p = provider(&env).await; // max_stream_restarts = 1
    let req = answered_conversation(&p).await;
    env.faults.reset();
    env.faults.stream_fault(
        1,
        StreamFault::Exception { after_deltas: 0, exception: StreamException::ServiceUnavailable },
    );
    let (tx, mut rx) = mpsc::channel(256);
    let r = tokio::time::timeout(HANG_GUARD, p.converse_stream(MODEL, &req, &tx)).await.unwrap().unwrap();
    assert_eq!(env.faults.calls(), 2, "one failed stream, one restart");
    drop(tx);
    let mut text = String::new();
    while let Some(d) = rx.recv().await {
        text.push_str(&d);
    }
    assert_eq!(text, r.message.text(), "no partial output from the failed attempt");

    // Failing every time: one restart, then the original kind (nothing reached the caller).
    env.faults.reset();
    env.faults.stream_fault(5, StreamFault::MalformedFrame { after_deltas: 0 });
    let (tx, _rx) = mpsc::channel(256);
    let e = tokio::time::timeout(HANG_GUARD, p.converse_stream(MODEL, &req, &tx)).await.unwrap().unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::StreamError);
    assert_eq!(env.faults.calls(), 2);

    // A restart is sent without SDK retries: a throttled restart is not retried again, so
    // the two retry layers add up instead of multiplying.
    env.faults.reset();
    env.faults.stream_fault(
        1,
        StreamFault::Exception { after_deltas: 0, exception: StreamException::InternalServer },
    );
    env.faults.pass_next(1);
    env.faults.fail_next(5, StubError::Throttling);
    let (tx, _rx) = mpsc::channel(256);
    let e = p.converse_stream(MODEL, &req, &tx).await.unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::Throttled);
    assert_eq!(env.faults.calls(), 2);
}

#[tokio::test]
async fn oversized_responses_are_refused() {
    let env = start(BedrockStubConfig::default()).await;
    let p = provider_with(ModelConfig { max_response_bytes: Some(4096), ..test_config(&env.url) }).await;
    let req = ask("hello");
    env.faults.oversize_next(10_000);
    let e = p.converse(MODEL, &req).await.unwrap_err();
    assert_eq!((e.kind, e.retryable), (ModelErrorKind::ModelError, false));
    env.faults.oversize_next(10_000);
    let (tx, _rx) = mpsc::channel(256);
    let e = p.converse_stream(MODEL, &req, &tx).await.unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::StreamError, "text was already forwarded: {e:?}");
    assert!(e.message.contains("exceeds"), "{e:?}");
    assert!(p.converse(MODEL, &req).await.is_ok(), "the next normal response fits");
}

#[tokio::test]
async fn budget_stops_a_looping_guest_and_validation_runs_first() {
    let env = start(BedrockStubConfig::default()).await;
    let p = provider(&env).await;
    let limits = RequestLimits::default();
    let req = ask("list my incidents");

    let budget = ModelBudget::new(3, 1_000_000);
    let mut outcome = Ok(());
    for _ in 0..10 {
        if let Err(e) = call_model(&p, MODEL, &req, &limits, &budget, None).await {
            outcome = Err(e);
            break;
        }
    }
    assert_eq!(outcome.unwrap_err().kind, ModelErrorKind::BudgetExceeded);
    assert_eq!(env.faults.calls(), 3);
    assert_eq!(budget.used().calls, 3);
    assert!(budget.used().tokens() > 0);

    // Token budget: the first call's usage exhausts it, the second is refused.
    env.faults.reset();
    let budget = ModelBudget::new(100, 10);
    let (tx, _rx) = mpsc::channel(256);
    call_model(&p, MODEL, &req, &limits, &budget, Some(&tx)).await.unwrap();
    let e = call_model(&p, MODEL, &req, &limits, &budget, Some(&tx)).await.unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::BudgetExceeded);
    assert_eq!(env.faults.calls(), 1);

    // An invalid request never reaches the endpoint and costs no budget.
    env.faults.reset();
    let budget = ModelBudget::new(1, 1_000_000);
    let mut bad = ask("x");
    bad.tool_config.as_mut().unwrap().tools[0].name = "bad name".into();
    assert_eq!(
        call_model(&p, MODEL, &bad, &limits, &budget, None).await.unwrap_err().kind,
        ModelErrorKind::Validation
    );
    assert_eq!(env.faults.calls(), 0);
    assert_eq!(budget.used().calls, 0);
}

#[tokio::test]
async fn stub_rejects_requests_bedrock_would_reject() {
    // Region mismatch in the SigV4 scope → the stub's InvalidSignatureException → access-denied.
    let env = start(BedrockStubConfig { region: Some("eu-west-1".into()), ..Default::default() }).await;
    let p = provider(&env).await;
    let e = p.converse(MODEL, &ask("hi")).await.unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::AccessDenied, "{e:?}");
    assert!(e.message.contains("region"), "{e:?}");

    // Conversation rules are enforced by the endpoint too (sent without host validation).
    let env = start(BedrockStubConfig::default()).await;
    let p = provider(&env).await;
    let bad = ConverseRequest {
        messages: vec![Message { role: Role::Assistant, content: vec![ContentBlock::Text("x".into())] }],
        ..Default::default()
    };
    let e = p.converse(MODEL, &bad).await.unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::Validation);
    assert!(e.message.contains("start with a user message"), "{e:?}");
}

#[tokio::test]
async fn https_endpoint_with_extra_ca_bundle() {
    let ca = delegate_devstack_tls::DevCa::generate().unwrap();
    let stub = BedrockStub::new(BedrockStubConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let server_config = ca.server_config(&["127.0.0.1"]).unwrap();
    tokio::spawn(delegate_devstack_tls::serve_https(
        listener,
        stub.router(),
        server_config,
        std::future::pending(),
    ));
    let pem_path = std::env::temp_dir().join(format!("delegate-model-ca-{}.pem", std::process::id()));
    ca.write_ca_pem(&pem_path).unwrap();

    let config = |ca_bundle| ModelConfig {
        endpoint_url: Some(url.clone()),
        allow_http: false,
        ca_bundle,
        ..test_config(&url)
    };
    let p = provider_with(config(Some(pem_path.clone()))).await;
    let r = p.converse(MODEL, &ask("list my incidents")).await.unwrap();
    assert_eq!(r.stop_reason, StopReason::ToolUse);

    // Without the bundle the devstack certificate is not trusted: fail closed.
    let p = provider_with(config(None)).await;
    let e = p.converse(MODEL, &ask("list my incidents")).await.unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::ServiceUnavailable, "{e:?}");

    // A bundle that is not PEM is refused at start, not at first use.
    std::fs::write(&pem_path, "not a certificate").unwrap();
    let err =
        BedrockProvider::connect(config(Some(pem_path.clone())).validate().unwrap(), static_credentials())
            .await
            .unwrap_err();
    assert!(matches!(err, ProviderSetupError::CaBundleInvalid { .. }), "{err}");
    let _ = std::fs::remove_file(&pem_path);
}

#[test]
fn json_documents_survive_the_sdk_and_the_wire() {
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (env, p) = rt.block_on(async {
        let env = start(BedrockStubConfig::default()).await;
        let p = provider(&env).await;
        (env, p)
    });
    let echo = ToolConfig {
        tools: vec![ToolSpec {
            name: "echo".into(),
            description: "Echo".into(),
            input_schema: r#"{"type":"object"}"#.into(),
        }],
        tool_choice: None,
    };
    let objects = crate::document::tests::arb_json().prop_map(|v| json!({ "v": v }));
    let mut runner = TestRunner::new(Config { cases: 32, ..Config::default() });
    runner
        .run(&objects, |input| {
            let req = ConverseRequest {
                messages: vec![Message::user_text(format!("echo json: {input}"))],
                tool_config: Some(echo.clone()),
                ..Default::default()
            };
            let (tx, _rx) = mpsc::channel(64);
            let (a, b) = rt.block_on(async {
                (p.converse(MODEL, &req).await.unwrap(), p.converse_stream(MODEL, &req, &tx).await.unwrap())
            });
            for r in [a, b] {
                let got: Value = serde_json::from_str(&r.message.tool_uses().next().unwrap().input).unwrap();
                proptest::prop_assert_eq!(&got, &input);
            }
            Ok(())
        })
        .unwrap();
    assert!(env.faults.calls() >= 64);
}

#[tokio::test]
async fn credentials_never_show_in_debug_output_or_errors() {
    let c = static_credentials();
    let shown = format!("{c:?}");
    assert!(!shown.contains("devstack-secret-key"), "{shown}");
    let env = start(BedrockStubConfig::default()).await;
    let p = provider(&env).await;
    let shown = format!("{p:?}");
    assert!(shown.contains("AKIDDEVSTACK") || shown.len() > 100, "the Debug output should be real: {shown}");
    assert!(!shown.contains("devstack-secret-key"), "{shown}");
    env.faults.fail_next(1, StubError::AccessDenied);
    let e = p.converse(MODEL, &ask("hi")).await.unwrap_err();
    assert!(!format!("{e:?} {e}").contains("devstack-secret-key"));
}

use proptest::strategy::Strategy;

#[tokio::test]
async fn a_stalled_stream_ends_with_a_typed_error_not_a_hang() {
    let env = start(BedrockStubConfig::default()).await;
    let p = provider_with(ModelConfig { stream_idle_timeout_ms: Some(300), ..test_config(&env.url) }).await;
    let req = answered_conversation(&p).await;
    // Stalls after one delta: text reached the caller, so a stream-error, no restart.
    env.faults.reset();
    env.faults.pause_after_deltas(1);
    let (tx, _rx) = mpsc::channel(256);
    let e = tokio::time::timeout(HANG_GUARD, p.converse_stream(MODEL, &req, &tx)).await.unwrap().unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::StreamError, "{e:?}");
    assert!(e.message.contains("stalled"), "{e:?}");
    assert_eq!(env.faults.calls(), 1);
    // Stalls before any delta: restarted once, then the timeout itself is reported.
    env.faults.reset();
    env.faults.pause_after_deltas(0);
    let e = tokio::time::timeout(HANG_GUARD, p.converse_stream(MODEL, &req, &tx)).await.unwrap().unwrap_err();
    env.faults.resume();
    assert_eq!(e.kind, ModelErrorKind::ModelTimeout, "{e:?}");
    assert_eq!(env.faults.calls(), 2);
}

#[tokio::test]
async fn the_attempt_timeout_does_not_cut_a_long_stream() {
    // 100 ms per delta, 8+ deltas: the stream lasts far longer than the 250 ms attempt timeout,
    // which must only bound the wait for the response to start.
    let env =
        start(BedrockStubConfig { delta_delay: Duration::from_millis(100), ..Default::default() }).await;
    let p = provider_with(ModelConfig { attempt_timeout_ms: Some(250), ..test_config(&env.url) }).await;
    let req = answered_conversation(&p).await;
    let (tx, _rx) = mpsc::channel(256);
    let r = p.converse_stream(MODEL, &req, &tx).await.unwrap();
    assert!(r.message.text().contains("INC0012345"));
}

#[tokio::test]
async fn slow_endpoints_hit_the_attempt_and_request_timeouts() {
    let env = start(BedrockStubConfig::default()).await;
    let req = ask("list my incidents");
    env.faults.set_delay(Duration::from_secs(5));
    // Attempt timeout: each attempt is cut, the SDK retries within max_attempts, then gives up.
    let p = provider_with(ModelConfig {
        attempt_timeout_ms: Some(100),
        max_attempts: Some(2),
        ..test_config(&env.url)
    })
    .await;
    let e = tokio::time::timeout(HANG_GUARD, p.converse(MODEL, &req)).await.unwrap().unwrap_err();
    assert_eq!((e.kind, e.retryable), (ModelErrorKind::ModelTimeout, true), "{e:?}");
    assert_eq!(env.faults.calls(), 2);
    // Whole-call deadline, streaming included.
    env.faults.reset();
    env.faults.set_delay(Duration::from_secs(5));
    let p = provider_with(ModelConfig { request_timeout_ms: Some(200), ..test_config(&env.url) }).await;
    let (tx, _rx) = mpsc::channel(8);
    let e = tokio::time::timeout(HANG_GUARD, p.converse_stream(MODEL, &req, &tx)).await.unwrap().unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::ModelTimeout, "{e:?}");
    assert_eq!(env.faults.calls(), 1);
}

mod assembler {
    use super::*;
    use aws_sdk_bedrockruntime::types::{
        ContentBlockDeltaEvent, ContentBlockStartEvent, ContentBlockStopEvent, ConverseStreamMetadataEvent,
        ConverseStreamOutput as Ev, MessageStopEvent, TokenUsage, ToolUseBlockDelta, ToolUseBlockStart,
    };

    fn text(i: i32, t: &str) -> Ev {
        Ev::ContentBlockDelta(
            ContentBlockDeltaEvent::builder()
                .content_block_index(i)
                .delta(bt::ContentBlockDelta::Text(t.into()))
                .build()
                .unwrap(),
        )
    }
    fn start(i: i32, id: &str, name: &str) -> Ev {
        let s = ToolUseBlockStart::builder().tool_use_id(id).name(name).build().unwrap();
        Ev::ContentBlockStart(
            ContentBlockStartEvent::builder()
                .content_block_index(i)
                .start(bt::ContentBlockStart::ToolUse(s))
                .build()
                .unwrap(),
        )
    }
    fn input(i: i32, frag: &str) -> Ev {
        let d = ToolUseBlockDelta::builder().input(frag).build().unwrap();
        Ev::ContentBlockDelta(
            ContentBlockDeltaEvent::builder()
                .content_block_index(i)
                .delta(bt::ContentBlockDelta::ToolUse(d))
                .build()
                .unwrap(),
        )
    }
    fn stop(i: i32) -> Ev {
        Ev::ContentBlockStop(ContentBlockStopEvent::builder().content_block_index(i).build().unwrap())
    }
    fn message_stop(r: &str) -> Ev {
        Ev::MessageStop(MessageStopEvent::builder().stop_reason(bt::StopReason::from(r)).build().unwrap())
    }

    fn run(events: &[Ev]) -> Result<(Vec<String>, ConverseResponse), ModelError> {
        let mut a = StreamAssembler::new(1 << 20);
        let mut forwarded = Vec::new();
        for e in events {
            if let Some(d) = a.push(e)? {
                forwarded.push(d);
            }
        }
        a.finish().map(|r| (forwarded, r))
    }

    #[test]
    fn text_without_start_tool_input_split_and_empty_input() {
        let usage = TokenUsage::builder().input_tokens(7).output_tokens(5).total_tokens(12).build().unwrap();
        let (forwarded, r) = run(&[
            text(0, "Let me "),
            text(0, "look."),
            stop(0),
            start(1, "t1", "query_incidents"),
            input(1, r#"{"qu"#),
            input(1, r#"ery":"a=b","li"#),
            input(1, r#"mit":5}"#),
            stop(1),
            start(2, "t2", "get_incident"),
            stop(2),
            message_stop("tool_use"),
            Ev::Metadata(ConverseStreamMetadataEvent::builder().usage(usage).build()),
        ])
        .unwrap();
        assert_eq!(forwarded, ["Let me ", "look."]);
        assert_eq!(r.stop_reason, StopReason::ToolUse);
        assert_eq!(r.usage, Usage { input_tokens: 7, output_tokens: 5, total_tokens: 12 });
        let uses: Vec<&ToolUse> = r.message.tool_uses().collect();
        assert_eq!(uses[0].input, r#"{"limit":5,"query":"a=b"}"#);
        assert_eq!((uses[1].tool_use_id.as_str(), uses[1].input.as_str()), ("t2", "{}"));
        assert_eq!(r.message.text(), "Let me look.");
    }

    #[test]
    fn broken_streams_are_errors() {
        let e = run(&[text(0, "x"), stop(0)]).unwrap_err();
        assert_eq!(e.kind, ModelErrorKind::StreamError, "no messageStop");
        let e =
            run(&[start(0, "t", "n"), input(0, "{\"a\":"), stop(0), message_stop("tool_use")]).unwrap_err();
        assert_eq!((e.kind, e.retryable), (ModelErrorKind::ModelError, false), "tool input is not JSON");
        let e = run(&[input(0, "{}")]).unwrap_err();
        assert_eq!(e.kind, ModelErrorKind::StreamError, "tool delta without start");
        let e = run(&[start(0, "t", "n"), input(0, "{}"), message_stop("tool_use")]).unwrap_err();
        assert_eq!(e.kind, ModelErrorKind::StreamError, "tool block never closed");
        let (_, r) = run(&[text(0, "x"), stop(0), message_stop("some_new_reason")]).unwrap();
        assert_eq!(r.stop_reason, StopReason::Other("some_new_reason".into()));
    }
}
