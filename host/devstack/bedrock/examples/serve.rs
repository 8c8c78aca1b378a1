//! Runs the devstack Bedrock endpoint standalone (plain HTTP, loopback), for clients in other
//! languages such as `tests/interop/boto3_bedrock.py`.
//!
//! `cargo run -p delegate-devstack-bedrock --example serve -- [ADDR]` (default 127.0.0.1:0)
//! prints `listening http://ADDR` on the first line of stdout.
//!
//! Besides the Bedrock routes it serves `POST /_devstack/faults` (this example only, never the
//! library router) taking JSON such as `{"reset":true}`, `{"throttle":2}`,
//! `{"stream_exception":{"after_deltas":2,"exception":"throttlingException"}}`,
//! `{"malformed_frame_after":1}`, so a foreign client can be driven through every failure.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Write;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use delegate_devstack_bedrock::{BedrockStub, BedrockStubConfig, Faults, StreamException, StreamFault};
use serde_json::Value;

async fn set_faults(State(faults): State<Faults>, Json(v): Json<Value>) -> StatusCode {
    if v.get("reset").and_then(Value::as_bool) == Some(true) {
        faults.reset();
    }
    if let Some(n) = v.get("throttle").and_then(Value::as_u64) {
        faults.throttle(n as usize);
    }
    if let Some(k) = v.get("malformed_frame_after").and_then(Value::as_u64) {
        faults.stream_fault(1, StreamFault::MalformedFrame { after_deltas: k as usize });
    }
    if let Some(e) = v.get("stream_exception") {
        let after = e.get("after_deltas").and_then(Value::as_u64).unwrap_or(0) as usize;
        let exception = match e.get("exception").and_then(Value::as_str).unwrap_or_default() {
            "throttlingException" => StreamException::Throttling,
            "modelStreamErrorException" => StreamException::ModelStreamError,
            "internalServerException" => StreamException::InternalServer,
            "serviceUnavailableException" => StreamException::ServiceUnavailable,
            "validationException" => StreamException::Validation,
            _ => return StatusCode::BAD_REQUEST,
        };
        faults.stream_fault(1, StreamFault::Exception { after_deltas: after, exception });
    }
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let stub = BedrockStub::new(BedrockStubConfig::default());
    let admin = axum::Router::new().route("/_devstack/faults", post(set_faults)).with_state(stub.faults());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!("listening http://{}", listener.local_addr().unwrap());
    std::io::stdout().flush().unwrap();
    delegate_devstack_tls::serve_http(listener, stub.router().merge(admin), std::future::pending())
        .await
        .unwrap();
}
