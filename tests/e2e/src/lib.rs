//! Shared harness for delegate's end-to-end tests: a real server on a loopback port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

pub mod redis;
pub mod registry;

use delegate_auth::{VerifiedCaller, VerifiedCallerBuilder};
use delegate_config::Limits;
pub use delegate_runtime::ModelAccess;
use delegate_runtime::{Runtime, RuntimeOptions};
use delegate_server::{AppState, AuthFuture, AuthRejection, Authorize, ServerOptions};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Accepts `Authorization: Bearer test:<subject>`; a stand-in for the JWT authorizer so the
/// runtime and server can be tested on their own.
pub struct TestAuthorizer;

impl Authorize for TestAuthorizer {
    fn authorize<'a>(&'a self, headers: &'a http::HeaderMap) -> AuthFuture<'a> {
        Box::pin(async move {
            let value = headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .ok_or(AuthRejection::Unauthenticated { reason: "missing_token" })?;
            let subject = value
                .strip_prefix("Bearer test:")
                .filter(|s| !s.is_empty())
                .ok_or(AuthRejection::Unauthenticated { reason: "malformed" })?;
            if subject == "forbidden" {
                return Err(AuthRejection::Forbidden { reason: "scope", insufficient_scope: true });
            }
            Ok::<VerifiedCaller, _>(
                VerifiedCallerBuilder::new(subject).username(&format!("{subject}@test")).build(),
            )
        })
    }
}

/// How to start a test server.
#[derive(Clone)]
pub struct ServerSpec {
    pub component: &'static str,
    pub limits: Limits,
    pub max_concurrency: usize,
    pub max_body_bytes: usize,
    pub settings: BTreeMap<String, String>,
    pub model: Option<delegate_runtime::ModelAccess>,
    /// The authorizer; `None` uses [`TestAuthorizer`].
    pub authorizer: Option<Arc<dyn Authorize>>,
}

impl ServerSpec {
    pub fn new(component: &'static str) -> Self {
        Self {
            component,
            limits: Limits::default(),
            max_concurrency: 8,
            max_body_bytes: 64 * 1024,
            settings: BTreeMap::new(),
            model: None,
            authorizer: None,
        }
    }
}

/// A running server; shuts down when dropped.
pub struct TestServer {
    pub url: String,
    pub state: Arc<AppState>,
    pub plugin: delegate_runtime::Plugin,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(spec: ServerSpec) -> Self {
        let runtime = Runtime::new(&RuntimeOptions {
            epoch_tick: Duration::from_millis(10),
            pool_instances: u32::try_from(spec.max_concurrency).unwrap() + 2,
            max_memory_bytes: spec.limits.memory_bytes,
            max_table_elements: spec.limits.table_elements,
            guest_debug: false,
            cache_dir: None,
            perf_map: false,
        })
        .unwrap();
        let bytes = std::fs::read(spec.component).unwrap();
        let plugin = runtime
            .load_plugin_bytes("test-plugin", &bytes, spec.limits, &spec.settings, spec.model.clone())
            .unwrap();
        let state = AppState::new(
            delegate_runtime::PluginRegistry::single(plugin.clone()),
            spec.authorizer.clone().unwrap_or_else(|| Arc::new(TestAuthorizer)),
            ServerOptions {
                max_body_bytes: spec.max_body_bytes,
                max_concurrency: spec.max_concurrency,
                retry_after_seconds: 2,
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let router = delegate_server::router(Arc::clone(&state));
        let task = tokio::spawn(delegate_server::serve(listener, router, async move {
            let _ = rx.await;
        }));
        // The runtime must outlive the server; the plugin keeps the engine alive.
        drop(runtime);
        Self { url, state, plugin, shutdown: Some(tx), task: Some(task) }
    }

    /// Begins a graceful shutdown.
    pub fn shutdown(&mut self) {
        self.state.start_draining();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A real JWT authorizer for the devstack IdP's article setup (Token A for the agent app).
pub fn devstack_authorizer(idp: &delegate_devstack_idp::IdpServer) -> Arc<dyn Authorize> {
    use delegate_devstack_idp::defaults;
    let settings = delegate_auth::AuthConfig {
        required_scopes: vec![defaults::AGENT_SCOPE.into()],
        fetch_timeout_ms: 2_000,
        ..delegate_auth::AuthConfig::new(
            &idp.idp().discovery_url(defaults::TENANT_ID),
            &[defaults::AGENT_APP_ID],
            &[defaults::AGENT_APP_ID],
        )
    }
    .validate()
    .unwrap();
    let dir =
        std::env::temp_dir().join(format!("delegate-e2e-ca-{}-{}", std::process::id(), idp.url().len()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join(format!("{}.pem", idp.url().rsplit(':').next().unwrap()));
    std::fs::write(&ca, idp.ca_pem()).unwrap();
    let client = delegate_outbound::build_client(&delegate_outbound::OutboundConfig {
        extra_ca_pem_files: vec![ca],
        ..Default::default()
    })
    .unwrap();
    Arc::new(delegate_auth::Authorizer::new(settings, client))
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().unwrap()
}

/// An SSE response read event by event.
pub struct SseReader {
    pub status: u16,
    pub headers: http::HeaderMap,
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl SseReader {
    pub async fn open(resp: reqwest::Response) -> Self {
        Self {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            stream: resp.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    /// The next event's `data` parsed as JSON; `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<serde_json::Value> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let data: Vec<&str> = raw.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                return Some(serde_json::from_str(&data.join("\n")).unwrap());
            }
            let chunk = self.stream.next().await?.unwrap();
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    pub async fn rest(&mut self) -> Vec<serde_json::Value> {
        let mut all = Vec::new();
        while let Some(e) = self.next().await {
            all.push(e);
        }
        all
    }
}

/// Outcome of an invocation as the client saw it: streamed text, then the final event
/// or the error (from a plain error response or a final SSE error event).
#[derive(Debug)]
pub struct Seen {
    pub status: u16,
    pub text: String,
    pub result: Option<String>,
    pub error_type: Option<String>,
    pub error: Option<serde_json::Value>,
}

pub async fn invoke(url: &str, subject: &str, payload: &serde_json::Value) -> Seen {
    let resp = client()
        .post(format!("{url}/invocations"))
        .bearer_auth(format!("test:{subject}"))
        .json(payload)
        .send()
        .await
        .unwrap();
    collect(resp).await
}

pub async fn collect(resp: reqwest::Response) -> Seen {
    let status = resp.status().as_u16();
    let is_sse = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    if !is_sse {
        let body: serde_json::Value = resp.json().await.unwrap();
        return Seen {
            status,
            text: body.get("response").and_then(|v| v.as_str()).unwrap_or("").to_owned(),
            result: body.get("result").and_then(|v| v.as_str()).map(str::to_owned),
            error_type: body.get("error_type").and_then(|v| v.as_str()).map(str::to_owned),
            error: body.get("error").map(|_| body.clone()),
        };
    }
    let mut sse = SseReader::open(resp).await;
    let mut seen = Seen { status, text: String::new(), result: None, error_type: None, error: None };
    while let Some(ev) = sse.next().await {
        match ev {
            serde_json::Value::String(s) => seen.text.push_str(&s),
            obj => {
                if let Some(r) = obj.get("result").and_then(|v| v.as_str()) {
                    seen.result = Some(r.to_owned());
                }
                if let Some(t) = obj.get("error_type").and_then(|v| v.as_str()) {
                    seen.error_type = Some(t.to_owned());
                    seen.error = Some(obj.clone());
                }
            }
        }
    }
    seen
}

pub async fn ping(url: &str) -> serde_json::Value {
    client().get(format!("{url}/ping")).send().await.unwrap().json().await.unwrap()
}

/// `bytes` (a component) with a custom section appended: the same code under another digest,
/// as a new build of a plugin would be.
pub fn rebuilt(bytes: &[u8], label: &str) -> Vec<u8> {
    use wasm_encoder::Encode;
    let section = wasm_encoder::CustomSection {
        name: std::borrow::Cow::Borrowed("delegate-test-build"),
        data: std::borrow::Cow::Borrowed(label.as_bytes()),
    };
    let mut out = bytes.to_vec();
    // `encode` writes the section's size and contents; the id (0, custom) comes first.
    out.push(0);
    section.encode(&mut out);
    out
}

/// `sha256:<hex>` of `bytes`, as manifests pin components.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().fold(String::from("sha256:"), |mut s, b| {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
        s
    })
}
