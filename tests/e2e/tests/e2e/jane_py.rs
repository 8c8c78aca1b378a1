//! The Jane suite (`jane.rs`) against the Python build of the ServiceNow agent
//! (guest/servicenow-agent-py, built by `make py-guest` with componentize-py), and the hostile
//! checks that apply to a Python plugin: CPU and memory limits, egress denial, no credential in
//! guest memory.
//!
//! Where the component comes from: `DELEGATE_PY_GUEST=<path>` (set by `.ci/run`); without it,
//! `target/wasm-guests/py/servicenow_agent_py.wasm`. When the variable is set the file must
//! exist (a test fails, never skips); when it is not set and the file is missing, every test
//! here passes after printing that it skipped and how to build the component.
#![allow(clippy::print_stderr)] // the skip note is reported, not asserted

use crate::jane::{AgentBuild, Chain, chain_with, numbers_in};
use delegate_devstack::{DevStack, DevStackOptions, idp_defaults as ids, seed};
use delegate_e2e::*;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Names the Python agent's component.
pub(crate) const ENV: &str = "DELEGATE_PY_GUEST";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python agent, or `None` (after saying why) when it is not built and not required.
fn py_agent() -> Option<AgentBuild> {
    let (component, required) = match std::env::var_os(ENV).filter(|v| !v.is_empty()) {
        Some(p) => (workspace().join(p), true),
        None => (workspace().join("target/wasm-guests/py/servicenow_agent_py.wasm"), false),
    };
    if !component.is_file() {
        assert!(
            !required,
            "{ENV} names {}, which does not exist: build it with `make py-guest`",
            component.display()
        );
        eprintln!(
            "skipped: the Python agent is not built ({} is missing); run `make py-guest` to build it \
             (CI sets {ENV} and fails instead of skipping)",
            component.display()
        );
        return None;
    }
    let cache_dir = component.parent().unwrap().join("compiled");
    // A componentize-py component instantiates 14 core modules; a pool slot holds 16, so the
    // default pool (= max_concurrency) fits the suite's 50 concurrent invocations.
    Some(AgentBuild { component, cache_dir: Some(cache_dir), engine: "" })
}

/// [`py_agent`], with its compiled code in the cache (≈10 s of Cranelift for 18 MB of wasm,
/// once for the module).
async fn warmed() -> Option<AgentBuild> {
    static WARM: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    Some(py_agent()?.warmed(&WARM).await)
}

crate::jane::suite!(warmed());

/// `toml` with `lines` added to the plugin's `[plugin.limits]` (the devstack config has none).
fn with_plugin_limits(toml: &str, lines: &str) -> String {
    toml.replacen("[plugin.settings]\n", &format!("[plugin.limits]\n{lines}\n\n[plugin.settings]\n"), 1)
}

/// The outcome recorded in the audit file for each invocation, in order.
fn outcomes(chain: &Chain) -> Vec<String> {
    chain
        .audit_lines()
        .into_iter()
        .filter(|l| l["kind"] == "invocation")
        .map(|l| l["outcome"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The CPU limit holds for interpreted code: the agent has no mode that spins (nothing in a
/// ServiceNow agent loops by nature), so the limit is set below what one ordinary Python
/// invocation needs (≈5 ms of guest CPU, measured) and checked every millisecond.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_limit_below_one_python_invocation_ends_it_with_cpu_limit() {
    let Some(agent) = warmed().await else { return };
    let chain = chain_with(&agent, |t| {
        with_plugin_limits(&t, "cpu_ms = 1").replacen("[engine]\n", "[engine]\nepoch_tick_ms = 1\n", 1)
    })
    .await;
    let seen = chain.ask(ids::JANE, "Show me 5 incidents assigned to me").await;
    assert_eq!(seen.error_type.as_deref(), Some("cpu_limit"), "{seen:?}");
    assert!(numbers_in(&seen.text).is_empty() || seen.result.is_none(), "{seen:?}");
    assert_eq!(outcomes(&chain), ["cpu_limit"]);
    assert_eq!(ping(&chain.url).await["status"], "Healthy");
}

/// A memory limit as a Python plugin meets it. CPython's snapshotted heap makes the component
/// declare 12.4 MiB of initial linear memory (below that, e.g. `memory_mib = 8`, the host
/// refuses to load it at start: "memory has a minimum byte size of 12976128 which exceeds the
/// limit"; not tested here, as the refusal comes after a full compile). Just above it (13 MiB)
/// Jane's request runs, but a caller's 900 KB prompt makes the interpreter grow its heap past
/// the limit: that invocation ends with `memory_limit` (the limiter refuses the growth, the
/// store is dropped), and the next one on the same host gets a fresh instance and its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_prompt_past_a_tight_memory_limit_ends_with_memory_limit() {
    let Some(agent) = warmed().await else { return };
    let chain = chain_with(&agent, |t| with_plugin_limits(&t, "memory_mib = 13")).await;
    let big = format!("Show me 5 incidents assigned to me {}", "x".repeat(900_000));
    let seen = chain.ask(ids::JANE, &big).await;
    assert_eq!(seen.error_type.as_deref(), Some("memory_limit"), "{:?}", (seen.status, &seen.error));
    let ok = chain.ask(ids::JANE, "Show me 5 incidents assigned to me").await;
    assert_eq!(numbers_in(&ok.text).len(), 5, "{ok:?}");
    assert_eq!(outcomes(&chain), ["memory_limit", "ok"]);
    assert_eq!(ping(&chain.url).await["status"], "Healthy");
}

/// Pointed at a host no egress rule allows, the request is denied before it leaves (audited as
/// denied) and the agent explains the denial to Jane instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_servicenow_url_is_explained_to_the_caller() {
    let Some(agent) = warmed().await else { return };
    let chain = chain_with(&agent, |t| {
        let line = t.lines().find(|l| l.starts_with("servicenow_url = ")).unwrap().to_owned();
        t.replacen(&line, "servicenow_url = \"https://servicenow.invalid\"", 1)
    })
    .await;
    let seen = chain.ask(ids::JANE, "Show me 5 incidents assigned to me").await;
    assert_eq!(seen.status, 200, "{seen:?}");
    assert!(seen.error_type.is_none(), "{seen:?}");
    assert!(
        seen.text.contains(
            "the host's egress policy does not allow this request \
             (GET https://servicenow.invalid/api/now/table/incident); ask the operator to allow it"
        ),
        "{}",
        seen.text
    );
    let summary: serde_json::Value = serde_json::from_str(seen.result.as_deref().unwrap()).unwrap();
    assert_eq!((summary["tool_calls"].as_u64(), summary["tool_errors"].as_u64()), (Some(1), Some(1)));
    let denied: Vec<_> = chain.audit_lines().into_iter().filter(|l| l["decision"] == "denied").collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(chain.stack.servicenow.request_count(), 0);
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// After Jane's invocation, the Python agent's linear memory (read through wasmtime's
/// guest-debug inspection, as `credentials.rs` does for the probe) holds her incidents but no
/// credential: not Token A, not the client secret, and no JWT of the devstack IdP at all. The
/// last check covers Token B, which the test never sees: every token the IdP signs with its key
/// starts with the same base64url header segment as Token A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_agent_memory_holds_no_credential_after_janes_invocation() {
    let Some(agent) = warmed().await else { return };
    let dir = crate::jane::scratch_dir();
    let stack = DevStack::start(&DevStackOptions::ephemeral(&dir)).await.unwrap();
    let toml = stack.delegate_config(
        "127.0.0.1:0".parse().unwrap(),
        &agent.component,
        &dir.join("audit.jsonl").display().to_string(),
    );
    let config = delegate_config::Config::from_toml(&toml, &dir).unwrap();
    let settings = config.default_plugin();
    let runtime = delegate_runtime::Runtime::new(&delegate_runtime::RuntimeOptions {
        guest_debug: true,
        cache_dir: agent.cache_dir.clone(),
        perf_map: false,
        ..delegate_runtime::RuntimeOptions::new(&config.engine, &config.plugins)
    })
    .unwrap();
    let model_settings = config.model.clone().unwrap();
    let model = delegate_runtime::ModelAccess {
        model_id: model_settings.model_id.clone(),
        provider: Arc::new(
            delegate_model::BedrockProvider::connect(model_settings, delegate_devstack::aws_credentials())
                .await
                .unwrap(),
        ),
        request_limits: delegate_model::RequestLimits::default(),
    };
    let outbound = delegate_outbound::build_client(&config.outbound).unwrap();
    let vault = Arc::new(delegate_vault::TokenVault::new(config.vault.clone(), outbound.clone()));
    let memories: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = Arc::clone(&memories);
    let bytes = std::fs::read(&agent.component).unwrap();
    let plugin = runtime
        .load_plugin_bytes(&settings.name, &bytes, settings.limits, &settings.settings, Some(model))
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
    let token_a = stack.token_a(ids::JANE, Duration::from_secs(900)).unwrap();
    let resp = client()
        .post(&url)
        .bearer_auth(token_a.expose())
        .json(&serde_json::json!({"prompt": "Show me 5 incidents assigned to me"}))
        .send()
        .await
        .unwrap();
    let seen = collect(resp).await;
    assert_eq!(numbers_in(&seen.text).len(), 5, "{seen:?}");
    assert_eq!(stack.idp.idp().grant_calls("urn:ietf:params:oauth:grant-type:jwt-bearer"), 1);
    let memories = memories.lock().unwrap();
    assert!(!memories.is_empty(), "no guest memory was inspected");
    let all: Vec<u8> = memories.concat();
    // Positive control: the scan sees what the plugin did receive from ServiceNow.
    assert!(find(&all, seed::INC0012345.number.as_bytes()), "the scan cannot see the plugin's data");
    assert!(find(&all, b"VPN connection dropping"), "the scan cannot see the plugin's data");
    let header = token_a.expose().split('.').next().unwrap().to_owned();
    assert!(header.len() > 20);
    for (what, secret) in [
        ("Token A", token_a.expose()),
        ("Token A's signature", token_a.expose().rsplit('.').next().unwrap()),
        ("a JWT header of the devstack IdP (Token A or Token B)", header.as_str()),
        ("the client secret", ids::AGENT_APP_SECRET),
    ] {
        assert!(!find(&all, secret.as_bytes()), "{what} is in the Python agent's memory");
    }
}
