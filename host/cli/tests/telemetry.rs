//! `[telemetry]`: `delegate serve` exporting Jane's invocation span over OTLP/HTTP to a
//! collector stand-in, with the audit record's trace id and no credential byte; nothing sent
//! without the section; a bad section is exit 2 with one line. Also `[server] worker_threads`,
//! whose effect only shows in the serving process (its start-up log line).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use delegate_devstack::{DevStack, DevStackOptions, idp_defaults as defaults};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An OTLP/HTTP collector stand-in on 127.0.0.1:0: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`; keeps every raw body.
#[derive(Clone, Default)]
struct Collector {
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Collector {
    async fn start(&self) -> String {
        use axum::routing::post;
        let bodies = Arc::clone(&self.bodies);
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let bodies = Arc::clone(&bodies);
                async move {
                    let protobuf = headers.get("content-type").is_some_and(|v| v == "application/x-protobuf");
                    if !protobuf || ExportTraceServiceRequest::decode(body.as_ref()).is_err() {
                        return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
                    }
                    bodies.lock().unwrap().push(body.to_vec());
                    // An empty ExportTraceServiceResponse: full success.
                    (axum::http::StatusCode::OK, Vec::new())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/v1/traces")
    }

    fn requests(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().unwrap().clone()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The devstack and a `delegate.toml` for the ServiceNow agent on a free port, with `extra`
/// appended; returns the stack, the config path, the host's base URL and the audit log path.
async fn devstack(tag: &str, extra: &str) -> (DevStack, PathBuf, String, PathBuf) {
    let dir = std::env::temp_dir().join(format!("delegate-telemetry-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stack = DevStack::start(&DevStackOptions::ephemeral(&dir)).await.unwrap();
    let component = dir.join("servicenow_agent.wasm");
    std::fs::write(&component, delegate_artifacts::bytes::SERVICENOW_AGENT).unwrap();
    let audit = dir.join("audit.jsonl");
    let _ = std::fs::remove_file(&audit);
    let port = free_port();
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let config = stack.delegate_config(listen, &component, &audit.display().to_string()) + extra;
    let path = dir.join("delegate.toml");
    std::fs::write(&path, config).unwrap();
    (stack, path, format!("http://127.0.0.1:{port}"), audit)
}

/// `delegate serve` (AWS keys the devstack Bedrock accepts; `env` added; JSON logs into `log`
/// if given), up once `/ping` answers.
async fn serve(config: &Path, base: &str, env: &[(&str, &str)], log: Option<&Path>) -> std::process::Child {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_delegate"));
    command.args(["serve", "--config", config.to_str().unwrap()]);
    if log.is_some() {
        command.args(["--log-format", "json"]);
    }
    command
        .env("DELEGATE_LOG", "info")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(std::process::Stdio::null())
        .stderr(log.map_or_else(std::process::Stdio::null, |p| std::fs::File::create(p).unwrap().into()));
    delegate_devstack::set_aws_env(&mut command);
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command.spawn().unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let started = Instant::now();
    while http.get(format!("{base}/ping")).send().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "delegate serve did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

/// Jane asks for her incidents within the trace `trace_id`; the answer must be a success.
async fn jane_invocation(stack: &DevStack, base: &str, trace_id: &str) -> String {
    let token = stack.token_a(defaults::JANE, Duration::from_secs(600)).unwrap();
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().unwrap();
    let resp = http
        .post(format!("{base}/invocations"))
        .bearer_auth(token.expose())
        .header("accept", "application/json")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .body(r#"{"prompt":"Show me 5 incidents assigned to me"}"#)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("INC"), "no incidents in {body}");
    token.expose().to_owned()
}

/// SIGTERM, then the exit status within a bounded wait.
fn stop(mut child: std::process::Child) -> std::process::ExitStatus {
    let killed =
        std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "delegate serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn string(v: Option<&AnyValue>) -> Option<&str> {
    match v?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| string(kv.value.as_ref()))
}

fn random_trace_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{:032x}", nanos ^ (u128::from(std::process::id()) << 96) | 1)
}

/// Jane's invocation span reaches the collector (flushed on SIGTERM: the batch interval is
/// longer than the test) with her invocation's id, plugin, outcome and the trace id of the
/// inbound `traceparent` and of the audit record; no byte of Token A, of any JWT (Token B)
/// or of the client secret is in any export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jane_invocation_span_is_exported_with_the_audit_trace_id_and_no_credential() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let extra = format!(
        "\n[telemetry]\notlp_endpoint = {endpoint:?}\nservice_name = \"delegate-test\"\nbatch_interval_ms = 600000\n"
    );
    let (stack, config, base, audit) = devstack("on", &extra).await;
    let child = serve(&config, &base, &[], None).await;
    let trace_id = random_trace_id();
    let token_a = jane_invocation(&stack, &base, &trace_id).await;
    let status = stop(child);
    assert!(status.success(), "exit status {status}");

    // The export is done before the process exits; poll briefly for the server task anyway.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut requests = collector.requests();
    while requests.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        requests = collector.requests();
    }
    assert!(!requests.is_empty(), "the collector got no export");

    let mut invocation = None;
    for body in &requests {
        let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        for resource_spans in request.resource_spans {
            let resource = resource_spans.resource.unwrap_or_default();
            assert_eq!(attr(&resource.attributes, "service.name"), Some("delegate-test"));
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                if span.name == "invocation" {
                    invocation = Some(span);
                }
            }
        }
    }
    let span = invocation.expect("no invocation span exported");
    assert_eq!(hex(&span.trace_id), trace_id, "the span's trace id is not the inbound traceparent's");
    assert_eq!(attr(&span.attributes, "plugin"), Some("servicenow-agent"));
    assert_eq!(attr(&span.attributes, "outcome"), Some("ok"));
    assert_eq!(attr(&span.attributes, "trace_id"), Some(trace_id.as_str()));
    let invocation_id = attr(&span.attributes, "invocation_id").expect("no invocation_id").to_owned();
    let finished = span.events.iter().find(|e| e.name == "invocation finished").expect("no outcome event");
    assert_eq!(attr(&finished.attributes, "outcome"), Some("ok"));

    // The audit record of the same invocation names the same trace.
    let records = std::fs::read_to_string(&audit).unwrap();
    let record = records
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["kind"] == "invocation" && r["invocation_id"] == invocation_id.as_str())
        .unwrap_or_else(|| panic!("no audit record for {invocation_id} in {records}"));
    assert_eq!(record["trace_id"], trace_id.as_str());
    assert_eq!(record["outcome"], "ok");
    // Jane's egress used a Token B: there were credential uses to leak.
    assert!(records.lines().any(|l| l.contains("\"decision\":\"allowed\"")), "no allowed egress: {records}");

    let secret = std::fs::read_to_string(&stack.secret_path).unwrap();
    let secret = secret.trim();
    assert!(secret.len() >= 8);
    for body in &requests {
        assert!(!contains(body, token_a.as_bytes()), "Token A in the export");
        assert!(!contains(body, secret.as_bytes()), "the client secret in the export");
        // Every JWT (Token A, each Token B) starts with a base64url `{"`: `eyJ`.
        assert!(!contains(body, b"eyJ"), "something JWT-shaped in the export");
        let signature = token_a.rsplit('.').next().unwrap();
        assert!(!contains(body, signature.as_bytes()), "Token A's signature in the export");
    }
}

/// Without `[telemetry]` nothing is exported, even with the OpenTelemetry environment
/// variables pointing at a collector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_section_nothing_reaches_the_collector() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let (stack, config, base, _audit) = devstack("off", "").await;
    let child = serve(
        &config,
        &base,
        &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint.as_str()), ("OTEL_TRACES_EXPORTER", "otlp")],
        None,
    )
    .await;
    jane_invocation(&stack, &base, &random_trace_id()).await;
    let status = stop(child);
    assert!(status.success(), "exit status {status}");
    // The process has exited: whatever it would have sent has been sent.
    assert!(collector.requests().is_empty(), "an export reached the collector");
}

/// `[server] worker_threads` sizes the runtime `delegate serve` runs on (3: no default on the
/// 2-core CI machine), which says so at start, and Jane is served on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_threads_size_the_serving_runtime() {
    let (stack, config, base, _audit) = devstack("threads", "").await;
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("[server]\n"), "{text}");
    std::fs::write(&config, text.replacen("[server]\n", "[server]\nworker_threads = 3\n", 1)).unwrap();
    let log = config.with_file_name("stderr.log");
    let child = serve(&config, &base, &[], Some(&log)).await;
    jane_invocation(&stack, &base, &random_trace_id()).await;
    let status = stop(child);
    assert!(status.success(), "exit status {status}");
    let text = std::fs::read_to_string(&log).unwrap();
    let started: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|l: &serde_json::Value| l["message"] == "async runtime started")
        .unwrap_or_else(|| panic!("no start-up line in {text}"));
    assert_eq!(started["worker_threads"], 3, "{started}");
}

/// A collector that cannot be reached fails no request: Jane is answered, the loss is
/// reported in one `warn` line (not one per batch), and the final summary counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_fails_no_request_and_warns_once() {
    let closed = free_port();
    let extra = format!(
        "\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:{closed}/v1/traces\"\nbatch_interval_ms = 20\nexport_timeout_ms = 2000\n"
    );
    let (stack, config, base, _audit) = devstack("down", &extra).await;
    let log = config.with_file_name("stderr.log");
    let child = serve(&config, &base, &[], Some(&log)).await;
    let token_a = jane_invocation(&stack, &base, &random_trace_id()).await;
    let warned = |text: &str| text.matches("trace export is losing spans").count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while warned(&std::fs::read_to_string(&log).unwrap()) == 0 {
        assert!(Instant::now() < deadline, "no warn line about the failed export");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A second invocation's span fails too, within the same minute: no second warn line.
    jane_invocation(&stack, &base, &random_trace_id()).await;
    let status = stop(child);
    assert!(status.success(), "exit status {status}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(warned(&text), 1, "{text}");
    let summary: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|l: &serde_json::Value| l["message"] == "trace export stopped")
        .expect("no summary line");
    assert_eq!(summary["exported"], 0, "{summary}");
    assert!(summary["failed"].as_u64().unwrap() >= 2, "both invocations' spans failed: {summary}");
    assert!(text.contains("exporting traces over OTLP/HTTP"), "{text}");
    assert!(!text.contains(token_a.as_str()) && !text.contains("eyJ"), "a token in the log");
}

/// Server CPU time (user + system) of `pid` from `/proc/<pid>/stat`, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Measurement, not a check (run by hand, BENCHMARKS.md): server CPU and wall time per Jane
/// invocation, 200 sequential invocations, without `[telemetry]` and with export to the
/// collector stand-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn measure_export_overhead() {
    const N: u32 = 200;
    let collector = Collector::default();
    let endpoint = collector.start().await;
    for (tag, extra) in [
        ("bench-off", String::new()),
        ("bench-on", format!("\n[telemetry]\notlp_endpoint = {endpoint:?}\nbatch_interval_ms = 1000\n")),
        ("bench-off2", String::new()),
        ("bench-on2", format!("\n[telemetry]\notlp_endpoint = {endpoint:?}\nbatch_interval_ms = 1000\n")),
    ] {
        let (stack, config, base, _audit) = devstack(tag, &extra).await;
        let child = serve(&config, &base, &[], None).await;
        for _ in 0..20 {
            jane_invocation(&stack, &base, &random_trace_id()).await;
        }
        let cpu = cpu_ticks(child.id());
        let started = Instant::now();
        for _ in 0..N {
            jane_invocation(&stack, &base, &random_trace_id()).await;
        }
        let wall = started.elapsed();
        let cpu = cpu_ticks(child.id()) - cpu;
        let status = stop(child);
        assert!(status.success());
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "{tag}: {N} Jane invocations, wall {:.2} ms each, server CPU {:.2} ms each",
                wall.as_secs_f64() * 1000.0 / f64::from(N),
                cpu as f64 * 10.0 / f64::from(N)
            );
        }
    }
    assert!(!collector.requests().is_empty());
}

/// A bad `[telemetry]` section stops `serve` with exit 2 and one line naming the key.
#[test]
fn bad_telemetry_config_is_exit_2_with_one_line() {
    let dir = std::env::temp_dir().join(format!("delegate-telemetry-{}-bad", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = "[auth]\ndiscovery_url = \"https://127.0.0.1:1/t/v2.0/.well-known/openid-configuration\"\nallowed_audiences = [\"api\"]\nallowed_clients = [\"app\"]\n[[plugin]]\nname = \"echo\"\ncomponent = \"delegate.toml\"\n";
    for (section, key) in [
        (
            "[telemetry]\notlp_endpoint = \"http://collector.example.com:4318/v1/traces\"\n",
            "telemetry.otlp_endpoint",
        ),
        (
            "[telemetry]\notlp_endpoint = \"https://c.example.com/v1/traces\"\nsample_ratio = 2.0\n",
            "telemetry.sample_ratio",
        ),
        ("[telemetry]\notlp_endpoint = \"https://c.example.com/v1/traces\"\nheaders = {}\n", "headers"),
    ] {
        let path = dir.join("delegate.toml");
        std::fs::write(&path, format!("{base}{section}")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_delegate"))
            .args(["serve", "--config", path.to_str().unwrap()])
            .env("DELEGATE_LOG", "warn")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{section}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{section}: {stderr}");
        assert!(stderr.contains(key), "{section}: {stderr}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
