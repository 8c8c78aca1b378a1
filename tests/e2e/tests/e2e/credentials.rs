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
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || LogWriter(Arc::clone(&sink)))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_reaches_the_plugin_the_logs_or_the_audit() {
    let logs = captured_logs();
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

    let dir = std::env::temp_dir().join(format!("delegate-e2e-cred-{}", std::process::id()));
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
    let host = Host::start_with(&config, None, delegate_devstack::aws_credentials()).await.unwrap();
    let token_a = stack
        .idp
        .idp()
        .mint_access_token(
            ids::JANE,
            ids::AGENT_APP_ID,
            ids::AGENT_APP_ID,
            &[ids::AGENT_SCOPE],
            Duration::from_secs(900),
        )
        .unwrap();
    let resp = client()
        .post(format!("http://{}/invocations", host.addr))
        .bearer_auth(token_a.expose())
        .json(&json!({
            "url": format!("http://localhost:{port}/reflect"),
            "redirect": format!("http://localhost:{port}/reflect/redirect"),
        }))
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
