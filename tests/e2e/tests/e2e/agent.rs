//! The ServiceNow agent plugin on the real model path: the production Bedrock provider
//! (aws-sdk-bedrockruntime) against the devstack Bedrock endpoint and its planner, model text
//! streamed to the caller by the host while the model is still generating.
//!
//! Egress is deny-by-default until the token vault lands, so ServiceNow calls are refused and
//! the agent must say so; Jane's full scenario joins when credential injection does.

use delegate_devstack_bedrock::{BedrockStub, BedrockStubConfig, Faults};
use delegate_e2e::*;
use delegate_model::{AwsCredentials, BedrockProvider, ModelConfig, RequestLimits};
use delegate_secret::Secret;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const MODEL: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";

async fn agent_server() -> (TestServer, Faults) {
    let stub = BedrockStub::new(BedrockStubConfig::default());
    let faults = stub.faults();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(delegate_devstack_tls::serve_http(listener, stub.router(), std::future::pending()));
    let settings = ModelConfig {
        region: Some("us-east-1".into()),
        endpoint_url: Some(url),
        allow_http: true,
        model_id: MODEL.into(),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let provider = BedrockProvider::connect(
        settings,
        AwsCredentials::Static {
            access_key_id: "AKIDDEVSTACK".into(),
            secret_access_key: Secret::new("devstack-secret-key"),
            session_token: None,
        },
    )
    .await
    .unwrap();
    let mut spec = ServerSpec::new(delegate_artifacts::SERVICENOW_AGENT);
    spec.settings.insert("servicenow_url".into(), "https://company.service-now.test".into());
    spec.model = Some(ModelAccess {
        provider: Arc::new(provider),
        model_id: MODEL.into(),
        request_limits: RequestLimits::default(),
    });
    (TestServer::start(spec).await, faults)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_model_delta_reaches_the_client_before_the_model_finishes() {
    let (server, faults) = agent_server().await;
    // The endpoint sends one delta, then holds the rest of the stream back.
    faults.pause_after_deltas(1);
    let resp = client()
        .post(format!("{}/invocations", server.url))
        .bearer_auth("test:jane")
        .json(&json!({"prompt": "What can you do?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut sse = SseReader::open(resp).await;
    let first = tokio::time::timeout(Duration::from_secs(20), sse.next())
        .await
        .expect("the first delta was held back until the model stream finished");
    assert!(first.unwrap().as_str().is_some_and(|t| !t.is_empty()));
    faults.resume();
    let rest = sse.rest().await;
    let text: String = rest.iter().filter_map(|e| e.as_str()).collect();
    assert!(!text.is_empty());
    let last = rest.last().unwrap();
    assert_eq!(last["status"], "success", "{last}");
    let summary: serde_json::Value = serde_json::from_str(last["result"].as_str().unwrap()).unwrap();
    assert_eq!(summary["cycles"], 1);
    assert_eq!(summary["tool_calls"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_egress_is_explained_by_the_agent_not_hidden() {
    let (server, faults) = agent_server().await;
    let seen = invoke(&server.url, "jane", &json!({"prompt": "Show me 5 incidents assigned to me"})).await;
    assert_eq!(seen.status, 200, "{seen:?}");
    assert!(seen.text.contains("egress policy"), "{}", seen.text);
    let summary: serde_json::Value = serde_json::from_str(seen.result.as_deref().unwrap()).unwrap();
    assert!(summary["tool_calls"].as_u64().unwrap() >= 1, "{summary}");
    assert!(summary["tool_errors"].as_u64().unwrap() >= 1, "{summary}");
    // Two model calls: the tool-use turn and the final answer.
    assert_eq!(faults.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_unavailable_without_a_provider() {
    let mut spec = ServerSpec::new(delegate_artifacts::SERVICENOW_AGENT);
    spec.settings.insert("servicenow_url".into(), "https://company.service-now.test".into());
    let server = TestServer::start(spec).await;
    let seen = invoke(&server.url, "jane", &json!({"prompt": "Show me 5 incidents assigned to me"})).await;
    assert_eq!(seen.error_type.as_deref(), Some("plugin_error"), "{seen:?}");
    assert!(seen.error.unwrap()["error"].as_str().unwrap().contains("model"));
}
