//! The Jane suite (see `jane.rs`) against the ServiceNow agent written in JavaScript
//! (guest/servicenow-agent-js, a componentize-js / StarlingMonkey component).
//!
//! The component is not built by cargo: `make js-guest` writes
//! `target/wasm-guests/js/servicenow_agent_js.wasm` (npm ci + componentize-js), and these tests
//! read its path from `DELEGATE_JS_GUEST`. Without the variable every test prints a note and
//! passes without running (the Rust workspace builds and tests without node); with it set, a
//! missing file fails.
//!
//! The component embeds a JavaScript engine (13 MB): the tests share one `engine.cache_dir`
//! (`wasmtime-cache` beside the component), and the first host to start compiles it while the
//! others wait, then load the compiled code ([`AgentBuild::warmed`]).

#![allow(clippy::print_stderr)] // the skip note is reported, not asserted

use crate::jane::{AgentBuild, chain_with};
use delegate_devstack::idp_defaults as ids;
use delegate_e2e::*;
use serde_json::json;
use std::path::{Path, PathBuf};

const ENV: &str = "DELEGATE_JS_GUEST";

/// The JS agent, or `None` (with a note) when `DELEGATE_JS_GUEST` is not set.
fn js_agent() -> Option<AgentBuild> {
    let Some(path) = std::env::var_os(ENV).filter(|p| !p.is_empty()) else {
        eprintln!("note: {ENV} is not set; skipping (build with `make js-guest`, see docs/plugins.md)");
        return None;
    };
    let component = PathBuf::from(path);
    assert!(component.is_file(), "{ENV}={} does not exist; run `make js-guest`", component.display());
    // Next to the component, so a later run of the same build loads it instead of compiling
    // again.
    let cache_dir = component.parent().unwrap_or(Path::new(".")).join("wasmtime-cache");
    Some(AgentBuild { component, cache_dir: Some(cache_dir), engine: "" })
}

/// [`js_agent`], with its compiled code in the cache (20–45 s of Cranelift, once for the module).
async fn warmed() -> Option<AgentBuild> {
    static WARM: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    Some(js_agent()?.warmed(&WARM).await)
}

crate::jane::suite!(warmed());

/// What the agent tells the model when the host's egress policy refuses a request, and how an
/// unknown tool and a bad payload end: the plugin's own codes, like the Rust agent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_read_like_the_rust_agents() {
    let Some(agent) = warmed().await else { return };
    let chain = chain_with(&agent, |t| t).await;
    let resp = client()
        .post(format!("{}/invocations", chain.url))
        .bearer_auth(chain.token_a(ids::JANE))
        .header("accept", "application/json")
        .json(&json!({"question": "no prompt"}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error_type"], "plugin_error", "{body}");
    assert_eq!(body["plugin_error_code"], "bad_request", "{body}");
    // A prompt the planner does not understand: one model call, a plain answer.
    let seen = chain.ask(ids::JANE, "What's the weather?").await;
    assert_eq!(seen.status, 200, "{seen:?}");
    assert!(seen.text.contains("not sure how to help"), "{}", seen.text);
    let summary: serde_json::Value = serde_json::from_str(seen.result.as_deref().unwrap()).unwrap();
    assert_eq!(summary["cycles"], 1, "{summary}");
}
