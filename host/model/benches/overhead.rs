//! Host overhead per model call: the production client (BedrockProvider on
//! aws-sdk-bedrockruntime) against the devstack endpoint on loopback, minus the endpoint's own
//! handler time. Run with `cargo bench -p delegate-model --bench overhead`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, missing_docs)]

use std::time::{Duration, Instant};

use delegate_devstack_bedrock::{BedrockStub, BedrockStubConfig};
use delegate_model::{
    AwsCredentials, BedrockProvider, ConverseRequest, Message, ModelConfig, ModelProvider, ToolConfig,
    ToolSpec,
};
use delegate_secret::Secret;

// The `delegate` binary's allocator (host/cli/src/main.rs), so the bench measures what ships.
// The stub shares this process, so its side of the loopback HTTP gets it too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name:<44} n={:<5} p50={:>8.1?} p99={:>8.1?} min={:>8.1?}",
        v.len(),
        pct(&v, 0.50),
        pct(&v, 0.99),
        v[0]
    );
}

/// CPU time this thread has run, from the kernel's scheduler statistics
/// (`/proc/thread-self/schedstat`, first field, nanoseconds). Read with one `pread` on a file
/// kept open, so a reading costs one syscall (≈ 1 µs, counted in the figures, which therefore
/// err high). This is the host's own cost of a call: unlike wall time, it excludes the
/// endpoint's work on its thread and the time both threads spend waiting to be woken.
struct ThreadCpu(std::fs::File);

impl ThreadCpu {
    fn open() -> Self {
        Self(std::fs::File::open("/proc/thread-self/schedstat").expect("/proc/thread-self/schedstat"))
    }
    fn now(&self) -> Duration {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 96];
        let n = self.0.read_at(&mut buf, 0).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        Duration::from_nanos(text.split_whitespace().next().unwrap().parse().unwrap())
    }
}

fn main() {
    // The endpoint runs on its own thread and single-threaded runtime, as a separate process
    // would; the client likewise, as one invocation's model calls are sequential.
    let stub = BedrockStub::new(BedrockStubConfig::default());
    let faults = stub.faults();
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", std_listener.local_addr().unwrap());
    // The endpoint thread's own CPU time, read by the client between phases.
    let stub_cpu = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stub_cpu_w = std::sync::Arc::clone(&stub_cpu);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            // Publishes the thread's CPU time every millisecond (a reading costs ≈ 1 µs/ms).
            tokio::spawn(async move {
                let cpu = ThreadCpu::open();
                loop {
                    let ns = u64::try_from(cpu.now().as_nanos()).unwrap_or(u64::MAX);
                    stub_cpu_w.store(ns, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            // The devstack's own server (TCP_NODELAY on, as in `delegate demo`).
            delegate_devstack_tls::serve_http(listener, stub.router(), std::future::pending()).await.unwrap();
        });
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let raw_url = format!("{url}/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse");
        let settings = ModelConfig {
            region: Some("us-east-1".into()),
            endpoint_url: Some(url),
            allow_http: true,
            model_id: "us.anthropic.claude-sonnet-4-20250514-v1:0".into(),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let model = settings.model_id.clone();
        let p = BedrockProvider::connect(
            settings,
            AwsCredentials::Static {
                access_key_id: "AKIDBENCH".into(),
                secret_access_key: Secret::new("bench-secret"),
                session_token: None,
            },
        )
        .await
        .unwrap();
        let req = ConverseRequest {
            system: vec!["You are a ServiceNow assistant. Be concise.".into()],
            messages: vec![Message::user_text("Show me 5 incidents assigned to me")],
            tool_config: Some(ToolConfig {
                tools: vec![ToolSpec {
                    name: "query_incidents".into(),
                    description: "Search for incidents in ServiceNow.".into(),
                    input_schema: r#"{"type":"object","properties":{"query":{"type":"string"},"limit":{"type":"integer"},"fields":{"type":"string"}}}"#.into(),
                }],
                tool_choice: None,
            }),
            inference_config: None,
        };
        for _ in 0..200 {
            p.converse(&model, &req).await.unwrap(); // warm-up: connection pool, credentials cache
        }
        faults.reset();
        let n = 2000;
        let cpu = ThreadCpu::open();
        let mut client = Vec::with_capacity(n);
        let mut client_cpu = Vec::with_capacity(n);
        let stub_before = stub_cpu.load(std::sync::atomic::Ordering::Relaxed);
        let phase = Instant::now();
        for _ in 0..n {
            let c = cpu.now();
            let t = Instant::now();
            p.converse(&model, &req).await.unwrap();
            client.push(t.elapsed());
            client_cpu.push(cpu.now().saturating_sub(c));
        }
        let phase = phase.elapsed();
        let stub_ns = stub_cpu.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(stub_before);
        let handler = faults.handler_times();
        let overhead: Vec<Duration> = client.iter().zip(&handler).map(|(c, h)| c.saturating_sub(*h)).collect();
        report("converse: client round trip", client);
        report("converse: stub handler (endpoint's own time)", handler);
        report("converse: host overhead (client - handler)", overhead);
        report("converse: host CPU per call (client thread)", client_cpu);
        println!(
            "{:<44} mean={:>8.1?} (endpoint thread CPU over the phase / calls)",
            "converse: endpoint CPU per call",
            Duration::from_nanos(stub_ns / n as u64)
        );
        println!("{:<44} {:>8.1?} for {n} calls", "converse: phase wall time", phase);

        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let mut stream = Vec::with_capacity(n);
        let mut stream_cpu = Vec::with_capacity(n);
        for _ in 0..n {
            let c = cpu.now();
            let t = Instant::now();
            p.converse_stream(&model, &req, &tx).await.unwrap();
            stream.push(t.elapsed());
            stream_cpu.push(cpu.now().saturating_sub(c));
        }
        report("converse_stream: client round trip", stream);
        report("converse_stream: host CPU per call", stream_cpu);

        // Baseline: the same request over a bare hyper client (no SDK, no signing), so the
        // difference is what the SDK + conversions cost on top of loopback HTTP.
        use http_body_util::{BodyExt, Full};
        let raw: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let body = bytes::Bytes::from(
            serde_json::json!({
                "messages":[{"role":"user","content":[{"text":"Show me 5 incidents assigned to me"}]}],
                "system":[{"text":"You are a ServiceNow assistant. Be concise."}],
                "toolConfig":{"tools":[{"toolSpec":{"name":"query_incidents","description":"Search for incidents in ServiceNow.",
                    "inputSchema":{"json":{"type":"object","properties":{"query":{"type":"string"},"limit":{"type":"integer"},"fields":{"type":"string"}}}}}}]}
            })
            .to_string(),
        );
        let sig = "0".repeat(64);
        let raw_once = || {
            let req = http::Request::post(&raw_url)
                .header("content-type", "application/json")
                .header("x-amz-date", "20261204T000000Z")
                .header(
                    "authorization",
                    format!("AWS4-HMAC-SHA256 Credential=AKIDBENCH/20261204/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}"),
                )
                .body(Full::new(body.clone()))
                .unwrap();
            let fut = raw.request(req);
            async move {
                let resp = fut.await.unwrap();
                assert!(resp.status().is_success());
                resp.into_body().collect().await.unwrap();
            }
        };
        for _ in 0..200 {
            raw_once().await;
        }
        faults.reset();
        let mut bare = Vec::with_capacity(n);
        let mut bare_cpu = Vec::with_capacity(n);
        for _ in 0..n {
            let c = cpu.now();
            let t = Instant::now();
            raw_once().await;
            bare.push(t.elapsed());
            bare_cpu.push(cpu.now().saturating_sub(c));
        }
        let handler = faults.handler_times();
        let bare_overhead: Vec<Duration> = bare.iter().zip(&handler).map(|(c, h)| c.saturating_sub(*h)).collect();
        report("baseline bare hyper: client round trip", bare);
        report("baseline bare hyper: client - handler", bare_overhead);
        report("baseline bare hyper: client CPU per call", bare_cpu);

        // Second baseline: the same calls as a lean client built from the SDK's own parts
        // would make them. Per call it writes the request JSON from the host's types, signs it
        // with `aws-sigv4` (SigV4, payload hash, fresh signing key), sends it over the same
        // kind of hyper client, and for ConverseStream decodes the event-stream frames with
        // `aws-smithy-eventstream`, parses each event's JSON and forwards text deltas to a
        // channel as the provider does. What it lacks against the SDK (retries, credential
        // refresh, endpoint rules, error classification, assembling the full response) makes
        // it a lower bound: the gap to the SDK's figure is at most what a lean client saves.
        let identity: aws_smithy_runtime_api::client::identity::Identity =
            aws_credential_types::Credentials::new("AKIDBENCH", "bench-secret", None, None, "bench").into();
        let converse_url = raw_url.clone();
        let stream_url = raw_url.replace("/converse", "/converse-stream");
        let lean_once = |streaming: bool| {
            let body = bytes::Bytes::from(lean_body(&req));
            let url = if streaming { &stream_url } else { &converse_url };
            let params = aws_sigv4::sign::v4::SigningParams::builder()
                .identity(&identity)
                .region("us-east-1")
                .name("bedrock")
                .time(std::time::SystemTime::now())
                .settings(aws_sigv4::http_request::SigningSettings::default())
                .build()
                .unwrap()
                .into();
            let headers = [("content-type", "application/json")];
            let signable = aws_sigv4::http_request::SignableRequest::new(
                "POST",
                url,
                headers.iter().copied(),
                aws_sigv4::http_request::SignableBody::Bytes(&body),
            )
            .unwrap();
            let (instructions, _) = aws_sigv4::http_request::sign(signable, &params).unwrap().into_parts();
            let mut request = http::Request::post(url.as_str())
                .header("content-type", "application/json")
                .body(Full::new(body))
                .unwrap();
            instructions.apply_to_request_http1x(&mut request);
            let fut = raw.request(request);
            let tx = tx.clone();
            async move {
                let resp = fut.await.unwrap();
                assert!(resp.status().is_success());
                let mut body = resp.into_body();
                if !streaming {
                    let bytes = body.collect().await.unwrap().to_bytes();
                    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    assert!(v["output"]["message"].is_object());
                    return;
                }
                let mut buf = bytes::BytesMut::new();
                let mut decoder = aws_smithy_eventstream::frame::MessageFrameDecoder::new();
                let mut text = String::new();
                while let Some(frame) = body.frame().await {
                    let Ok(data) = frame.unwrap().into_data() else { continue };
                    buf.extend_from_slice(&data);
                    while let aws_smithy_eventstream::frame::DecodedFrame::Complete(msg) =
                        decoder.decode_frame(&mut buf).unwrap()
                    {
                        let event: serde_json::Value = serde_json::from_slice(msg.payload()).unwrap();
                        if let Some(delta) = event["delta"]["text"].as_str() {
                            text.push_str(delta);
                            tx.send(delta.to_owned()).await.unwrap();
                        }
                    }
                }
                assert!(!text.is_empty());
            }
        };
        for streaming in [false, true] {
            for _ in 0..200 {
                lean_once(streaming).await;
            }
            let mut lean_cpu = Vec::with_capacity(n);
            for _ in 0..n {
                let c = cpu.now();
                lean_once(streaming).await;
                lean_cpu.push(cpu.now().saturating_sub(c));
            }
            let what = if streaming { "converse_stream" } else { "converse" };
            report(&format!("lean baseline {what}: client CPU per call"), lean_cpu);
        }
    });
}

/// The Converse request body for `req`, written from the host's types (text blocks and tool
/// specs: what the bench's request holds).
fn lean_body(req: &ConverseRequest) -> Vec<u8> {
    use delegate_model::{ContentBlock, Role};
    let messages: Vec<serde_json::Value> = req
        .messages
        .iter()
        .map(|m| {
            let content: Vec<serde_json::Value> = m
                .content
                .iter()
                .filter_map(|b| match b {
                    ContentBlock::Text(t) => Some(serde_json::json!({ "text": t })),
                    _ => None,
                })
                .collect();
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            serde_json::json!({ "role": role, "content": content })
        })
        .collect();
    let system: Vec<serde_json::Value> =
        req.system.iter().map(|t| serde_json::json!({ "text": t })).collect();
    let tools: Vec<serde_json::Value> = req.tool_config.iter().flat_map(|c| &c.tools).map(|t| {
        let schema: serde_json::Value = serde_json::from_str(&t.input_schema).unwrap();
        serde_json::json!({ "toolSpec": { "name": t.name, "description": t.description, "inputSchema": { "json": schema } } })
    }).collect();
    serde_json::to_vec(
        &serde_json::json!({ "messages": messages, "system": system, "toolConfig": { "tools": tools } }),
    )
    .unwrap()
}
