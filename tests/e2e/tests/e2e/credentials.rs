//! A probe plugin tries everything to obtain a credential: it reads every response header and
//! body of an endpoint that reflects the request it received (the injected Token B included),
//! sets credential headers itself, follows a redirect, calls every import and dumps it all.
//! Neither Token A, nor Token B, nor the client secret may appear in what it saw, in the host's
//! logs or in the audit file.

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use delegate_app::Host;
use delegate_config::Config;
use delegate_devstack::{DevStack, DevStackOptions, idp_defaults as ids};
use delegate_e2e::*;
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Every log line of this test binary, for scanning.
pub(crate) fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        // Plain text: no colour codes between a field's name and its value.
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || LogWriter(Arc::clone(&sink)))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

/// The positive control of a log scan: `logs` (from [`captured_logs`]) holds the line that
/// ends the invocation `audit` (a JSON-lines audit file's text) records, so a scan that finds
/// no secret in them did look at this invocation's logs, not at an empty or foreign capture.
pub(crate) fn assert_logs_hold_the_invocation(logs: &str, audit: &str) {
    let record = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["kind"] == "invocation")
        .expect("the audit records the invocation");
    let id = record["invocation_id"].as_str().unwrap();
    assert!(!id.is_empty());
    assert!(
        logs.lines().any(|l| l.contains("invocation finished") && l.contains(&format!("invocation_id={id}"))),
        // (Never print the logs: they might hold a token.)
        "the captured logs hold no line of invocation {id} ({} bytes captured)",
        logs.len()
    );
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reflects the request: every header back as `x-reflect-<name>` and in the JSON body.
async fn reflect(
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    received: Arc<Mutex<Vec<String>>>,
) -> impl IntoResponse {
    if let Some(a) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        received.lock().unwrap().push(a.to_owned());
    }
    let mut out = HeaderMap::new();
    let mut body = serde_json::Map::new();
    for (name, value) in &headers {
        if let Ok(h) = axum::http::HeaderName::from_bytes(format!("x-reflect-{name}").as_bytes()) {
            out.insert(h, value.clone());
        }
        body.insert(name.to_string(), json!(value.to_str().unwrap_or("")));
    }
    body.insert("query".into(), json!(q));
    (StatusCode::OK, out, axum::Json(serde_json::Value::Object(body)))
}

/// Starts the reflecting endpoint; returns its port and the Authorization values it received.
async fn reflect_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let r = Arc::clone(&received);
    let app = axum::Router::new()
        .route("/reflect", axum::routing::any(move |h, q| reflect(h, q, Arc::clone(&r))))
        .route(
            "/reflect/redirect",
            axum::routing::get(move || async move {
                (StatusCode::FOUND, [("location", format!("http://127.0.0.1:{port}/steal"))])
            }),
        );
    tokio::spawn(delegate_devstack_tls::serve_http(listener, app, std::future::pending()));
    (port, received)
}

/// The devstack and a config serving the credential probe, with a credential-injecting rule
/// for the reflecting endpoint on `port`.
async fn probe_setup(port: u16, name: &str) -> (DevStack, Config, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("delegate-e2e-cred-{}-{name}", std::process::id()));
    let stack = DevStack::start(&DevStackOptions::ephemeral(&dir)).await.unwrap();
    let audit = dir.join("audit.jsonl");
    let mut toml = stack.delegate_config(
        "127.0.0.1:0".parse().unwrap(),
        std::path::Path::new(delegate_artifacts::PROBE_CREDENTIALS),
        &audit.display().to_string(),
    );
    toml.push_str(&format!(
        "\n[[plugin.egress.rules]]\nmethods = [\"GET\", \"POST\"]\nscheme = \"http\"\nhost = \"localhost\"\nport = {port}\npath_prefix = \"/reflect\"\ncredential = {{ provider = \"servicenow\", scopes = [\"api://{}/{}\"] }}\n",
        ids::CONNECTOR_APP_ID,
        ids::CONNECTOR_SCOPE
    ));
    let config = Config::from_toml(&toml, &dir).unwrap();
    (stack, config, audit)
}

fn token_a(stack: &DevStack) -> delegate_secret::Secret {
    stack.token_a(ids::JANE, Duration::from_secs(900)).unwrap()
}

fn probe_payload(port: u16) -> serde_json::Value {
    json!({
        "url": format!("http://localhost:{port}/reflect"),
        "redirect": format!("http://localhost:{port}/reflect/redirect"),
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_reaches_the_plugin_the_logs_or_the_audit() {
    let logs = captured_logs();
    let (port, received) = reflect_server().await;
    let (stack, config, audit) = probe_setup(port, "leak").await;
    let host = Host::start_with(&config, None, delegate_devstack::aws_credentials()).await.unwrap();
    let token_a = stack.token_a(ids::JANE, Duration::from_secs(900)).unwrap();
    let resp = client()
        .post(format!("http://{}/invocations", host.addr))
        .bearer_auth(token_a.expose())
        .json(&probe_payload(port))
        .send()
        .await
        .unwrap();
    let seen = collect(resp).await;
    let report = seen.result.clone().expect("probe result");

    // Positive control: the endpoint really got Token B, and reflected it.
    let received = received.lock().unwrap().clone();
    assert!(!received.is_empty(), "the endpoint saw no injected credential");
    let token_b = received[0].strip_prefix("Bearer ").unwrap().to_owned();
    assert!(token_b.len() > 100);
    // (Failure messages never print what the plugin saw: it might hold a token.)
    assert!(report.contains("[redacted]"), "the reflected token was not scrubbed visibly");

    let report_json: serde_json::Value = serde_json::from_str(&report).unwrap();
    let entry =
        |label: &str| report_json.as_array().unwrap().iter().find(|e| e["label"] == label).cloned().unwrap();
    assert_eq!(entry("reflect")["status"], 200);
    for header in ["authorization", "proxy-authorization", "cookie", "host"] {
        assert!(
            entry(header)["error"].as_str().unwrap().contains("header refused"),
            "{header}: {}",
            entry(header)
        );
    }
    assert!(
        entry("redirect-followed")["error"].as_str().unwrap().contains("denied"),
        "{}",
        entry("redirect-followed")
    );

    let audit_text = std::fs::read_to_string(&audit).unwrap();
    assert!(audit_text.contains("\"decision\":\"denied\""), "the followed redirect was not audited");
    let log_text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert_logs_hold_the_invocation(&log_text, &audit_text);
    let secrets = [token_a.expose().to_owned(), token_b, ids::AGENT_APP_SECRET.to_owned()];
    for secret in &secrets {
        // Whole value and the signature part on its own (a JWT's most sensitive piece).
        let tail = secret.rsplit('.').next().unwrap().to_owned();
        for (what, haystack) in [
            ("plugin output", &seen.text),
            ("plugin result", &report),
            ("audit", &audit_text),
            ("logs", &log_text),
        ] {
            assert!(!haystack.contains(secret.as_str()), "a credential reached the {what}");
            assert!(!haystack.contains(tail.as_str()), "a credential's signature reached the {what}");
        }
    }
    let _ = host.shutdown(Duration::from_secs(5)).await;
}

/// After the probe's invocation, its linear memory (read through wasmtime's guest-debug
/// inspection) holds none of the credentials, while it does hold what the plugin was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_memory_holds_no_credential_after_the_invocation() {
    let (port, received) = reflect_server().await;
    let (stack, config, _audit) = probe_setup(port, "memory").await;
    let settings = config.default_plugin();
    let runtime = delegate_runtime::Runtime::new(&delegate_runtime::RuntimeOptions {
        guest_debug: true,
        ..delegate_runtime::RuntimeOptions::new(&config.engine, &config.plugins)
    })
    .unwrap();
    let outbound = delegate_outbound::build_client(&config.outbound).unwrap();
    let vault = Arc::new(delegate_vault::TokenVault::new(config.vault.clone(), outbound.clone()));
    let memories: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = Arc::clone(&memories);
    let component = match &settings.source {
        Some(delegate_config::PluginSource::Component(path)) => std::fs::read(path).unwrap(),
        other => panic!("the credential test config names a component, not {other:?}"),
    };
    let plugin = runtime
        .load_plugin_bytes(&settings.name, &component, settings.limits, &settings.settings, None)
        .unwrap()
        .with_egress(delegate_runtime::EgressAccess {
            gateway: delegate_egress::EgressGateway::new(
                vault,
                outbound,
                Arc::new(delegate_egress::AuditSink::Discard),
            ),
            policy: Arc::new(settings.egress.clone()),
            limits: delegate_egress::EgressLimits::default(),
        })
        .with_memory_inspector(Arc::new(move |_, bytes| sink.lock().unwrap().push(bytes.to_vec())));
    let state = delegate_server::AppState::new(
        delegate_runtime::PluginRegistry::single(plugin),
        devstack_authorizer(&stack.idp),
        delegate_server::ServerOptions::from_settings(&config.server),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/invocations", listener.local_addr().unwrap());
    tokio::spawn(delegate_server::serve(listener, delegate_server::router(state), std::future::pending()));
    let token_a = token_a(&stack);
    let resp =
        client().post(&url).bearer_auth(token_a.expose()).json(&probe_payload(port)).send().await.unwrap();
    let seen = collect(resp).await;
    assert!(seen.result.is_some(), "probe failed: {:?}", seen.error_type);
    let token_b = received.lock().unwrap()[0].strip_prefix("Bearer ").unwrap().to_owned();
    let memories = memories.lock().unwrap();
    assert!(!memories.is_empty(), "no guest memory was inspected");
    let all: Vec<u8> = memories.concat();
    // Positive control: the scan sees what the plugin did receive.
    assert!(find(&all, b"x-reflect-x-probe"), "the scan cannot see response headers the plugin read");
    for (what, secret) in [
        ("Token A", token_a.expose()),
        ("Token B", token_b.as_str()),
        ("client secret", ids::AGENT_APP_SECRET),
    ] {
        assert!(!find(&all, secret.as_bytes()), "{what} is in guest memory");
        let tail = secret.rsplit('.').next().unwrap();
        assert!(!find(&all, tail.as_bytes()), "{what}'s signature is in guest memory");
    }
    // And the reflected token is in there in its scrubbed form.
    assert!(find(&all, b"[redacted]"));
}
