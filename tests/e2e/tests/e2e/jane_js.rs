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
//! others wait, then load the compiled code.

#![allow(clippy::print_stderr)] // the skip note and the start-up time are reported, not asserted

use delegate_app::Host;
use delegate_config::Config;
use delegate_devstack::{DevStack, DevStackOptions, idp_defaults as ids, seed};
use delegate_e2e::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const OBO_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ENV: &str = "DELEGATE_JS_GUEST";

/// The JS component's path, or `None` (with a note) when `DELEGATE_JS_GUEST` is not set.
fn component() -> Option<PathBuf> {
    let Some(path) = std::env::var_os(ENV).filter(|p| !p.is_empty()) else {
        eprintln!("note: {ENV} is not set; skipping (build with `make js-guest`, see docs/plugins.md)");
        return None;
    };
    let path = PathBuf::from(path);
    assert!(path.is_file(), "{ENV}={} does not exist; run `make js-guest`", path.display());
    Some(path)
}

struct Chain {
    stack: DevStack,
    host: Host,
    url: String,
    audit: PathBuf,
}

fn scratch_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "delegate-e2e-jane-js-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One compiled-code cache for every test of the module, next to the component (so a later run
/// of the same build loads it instead of compiling again); private to this user, as the cache
/// demands.
fn cache_dir(component: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = component.parent().unwrap_or(Path::new(".")).join("wasmtime-cache");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// Serialises host starts, so the component is compiled once and then loaded from the cache.
static START: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn chain(component: &Path) -> Chain {
    let dir = scratch_dir();
    let stack = DevStack::start(&DevStackOptions::ephemeral(&dir)).await.unwrap();
    let audit = dir.join("audit.jsonl");
    let mut toml = stack
        .delegate_config("127.0.0.1:0".parse().unwrap(), component, &audit.display().to_string())
        .replace("[server]\n", "[server]\nmax_concurrency = 64\n");
    toml.push_str(&format!("\n[engine]\ncache_dir = {:?}\n", cache_dir(component).display().to_string()));
    let config = Config::from_toml(&toml, &dir).unwrap();
    let host = {
        let _first_compiles = START.lock().await;
        let started = Instant::now();
        let host = Host::start_with(&config, None, delegate_devstack::aws_credentials()).await.unwrap();
        eprintln!("jane_js: host with the JS agent started in {:?}", started.elapsed());
        host
    };
    let url = format!("http://{}", host.addr);
    Chain { stack, host, url, audit }
}

impl Chain {
    fn token_a(&self, user: &str) -> String {
        self.stack
            .idp
            .idp()
            .mint_access_token(
                user,
                ids::AGENT_APP_ID,
                ids::AGENT_APP_ID,
                &[ids::AGENT_SCOPE],
                Duration::from_secs(900),
            )
            .unwrap()
            .expose()
            .to_owned()
    }

    async fn ask(&self, user: &str, prompt: &str) -> Seen {
        let resp = client()
            .post(format!("{}/invocations", self.url))
            .bearer_auth(self.token_a(user))
            .json(&json!({ "prompt": prompt }))
            .send()
            .await
            .unwrap();
        collect(resp).await
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn numbers_in(text: &str) -> Vec<String> {
    let mut found: Vec<String> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() == 10 && w.starts_with("INC") && w[3..].bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_jane_sees_exactly_her_five_incidents() {
    let Some(component) = component() else { return };
    let chain = chain(&component).await;
    let seen = chain.ask(ids::JANE, "Show me 5 incidents assigned to me").await;
    assert_eq!(seen.status, 200, "{seen:?}");
    let mut expected: Vec<String> = seed::JANE_INCIDENTS.iter().map(|i| i.number.to_owned()).collect();
    expected.sort();
    assert_eq!(numbers_in(&seen.text), expected, "{}", seen.text);
    assert!(seen.text.contains("VPN connection dropping"), "{}", seen.text);
    for hidden in [seed::HR_INCIDENT.number, seed::SECURITY_INCIDENT.number] {
        assert!(!seen.text.contains(hidden));
        assert!(!seen.result.as_deref().unwrap_or("").contains(hidden));
    }
    // The same summary as the Rust agent's.
    let summary: serde_json::Value = serde_json::from_str(seen.result.as_deref().unwrap()).unwrap();
    assert_eq!(summary["cycles"], 2, "{summary}");
    assert_eq!(summary["tool_calls"], 1, "{summary}");
    assert_eq!(summary["tool_errors"], 0, "{summary}");
    assert_eq!(summary["stop_reason"], "end_turn", "{summary}");
    let (invocations, audit): (Vec<_>, Vec<_>) =
        chain.audit_lines().into_iter().partition(|l| l["kind"] == "invocation");
    assert!(!audit.is_empty());
    assert_eq!(invocations.len(), 1, "{invocations:?}");
    let inv = &invocations[0];
    assert_eq!(inv["outcome"], "ok");
    assert_eq!(inv["caller_username"], ids::JANE);
    assert_eq!(inv["plugin_digest"], chain.host.plugin().unwrap().digest());
    assert_eq!(inv["model_calls"], 2);
    assert!(inv["input_tokens"].as_u64().unwrap() > 0 && inv["output_tokens"].as_u64().unwrap() > 0);
    assert_eq!(inv["egress_requests"].as_u64().unwrap(), audit.len() as u64);
    for line in &audit {
        assert_eq!(line["caller_username"], ids::JANE);
        assert_eq!(line["provider"], "servicenow");
        assert_eq!(line["decision"], "allowed");
        assert_eq!(line["status"], 200);
    }
    assert_eq!(audit[0]["cache"], "miss");
    assert_eq!(chain.stack.idp.idp().grant_calls(OBO_GRANT), 1);
    let token_a = chain.token_a(ids::JANE);
    let signature = token_a.rsplit('.').next().unwrap().to_owned();
    let audit_text = std::fs::read_to_string(&chain.audit).unwrap();
    for haystack in [&seen.text, seen.result.as_deref().unwrap_or(""), &audit_text] {
        assert!(!haystack.contains(&signature));
        assert!(!haystack.contains("eyJ"), "something JWT-like leaked: {haystack}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_asking_for_hr_incidents_does_not_get_jane_past_the_acl() {
    let Some(component) = component() else { return };
    let chain = chain(&component).await;
    let jane = chain.ask(ids::JANE, "Show me 10 incidents assigned to me with category=hr").await;
    assert_eq!(jane.status, 200, "{jane:?}");
    assert!(!jane.text.contains(seed::HR_INCIDENT.number), "{}", jane.text);
    let jane_all = chain.ask(ids::JANE, "List 50 incidents with category=hr").await;
    assert!(numbers_in(&jane_all.text).is_empty(), "{}", jane_all.text);
    let hr = chain.ask(ids::HR_ANALYST, "List 10 incidents with category=hr").await;
    assert!(hr.text.contains(seed::HR_INCIDENT.number), "{}", hr.text);
    assert_eq!(chain.stack.idp.idp().grant_calls(OBO_GRANT), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_jane_updates_her_incident_as_herself_and_is_refused_on_another() {
    let Some(component) = component() else { return };
    let chain = chain(&component).await;
    let seen = chain.ask(ids::JANE, "Set INC0012345 urgency to 1").await;
    assert_eq!(seen.status, 200, "{seen:?}");
    let records = chain.stack.servicenow.audit_records(seed::INC0012345.sys_id).unwrap();
    let urgency: Vec<_> = records.iter().filter(|r| r.field == "urgency").collect();
    assert_eq!(urgency.len(), 1, "{records:?}");
    assert_eq!(urgency[0].new_value, "1");
    assert_eq!(urgency[0].user, ids::JANE);
    let refused =
        chain.ask(ids::JANE, &format!("Set {} urgency to 1", seed::READ_ONLY_FOR_JANE.number)).await;
    assert!(refused.text.to_lowercase().contains("access denied"), "{}", refused.text);
    assert!(chain.stack.servicenow.audit_records(seed::READ_ONLY_FOR_JANE.sys_id).unwrap().is_empty());
    let patches: Vec<_> = chain.audit_lines().into_iter().filter(|l| l["method"] == "PATCH").collect();
    let outcomes: Vec<_> = chain
        .audit_lines()
        .into_iter()
        .filter(|l| l["kind"] == "invocation")
        .map(|l| l["outcome"].clone())
        .collect();
    assert_eq!(outcomes, [json!("ok"), json!("ok")]);
    assert_eq!(patches.len(), 2);
    assert!(patches.iter().any(|l| l["status"] == 403));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_concurrent_invocations_of_one_user_share_one_obo_exchange() {
    let Some(component) = component() else { return };
    let chain = chain(&component).await;
    let asks = (0..50).map(|_| chain.ask(ids::JANE, "Show me 5 incidents assigned to me"));
    let all = futures::future::join_all(asks).await;
    for seen in &all {
        assert_eq!(seen.status, 200, "{seen:?}");
        assert_eq!(numbers_in(&seen.text).len(), 5, "{}", seen.text);
    }
    assert_eq!(chain.stack.idp.idp().grant_calls(OBO_GRANT), 1);
    let _ = chain.host.shutdown(Duration::from_secs(5)).await;
}

/// Each IdP failure of the On-Behalf-Of exchange reaches the client as its own status and code,
/// whatever the JS agent makes of its refused request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_idp_errors_surface_with_their_status_and_code() {
    use delegate_devstack_idp::TokenFault;
    let Some(component) = component() else { return };
    let chain = chain(&component).await;
    let idp = chain.stack.idp.idp();
    let cases: Vec<(TokenFault, u16, &str)> = vec![
        (TokenFault::ConsentRequired, 403, "consent_required"),
        (
            TokenFault::InteractionRequired {
                claims: r#"{"access_token":{"polids":{"essential":true}}}"#.into(),
            },
            401,
            "interaction_required",
        ),
        (TokenFault::Status5xx(503), 503, "credential_provider_unavailable"),
    ];
    for (fault, status, code) in cases {
        idp.set_token_fault(fault);
        let user = ["ravi.patel@company.com", "maria.garcia@company.com", "tom.baker@company.com"]
            [usize::from(status % 3)];
        let seen = chain.ask(user, "Show me 5 incidents assigned to me").await;
        assert_eq!(seen.status, 200, "{code}: {seen:?}");
        assert_eq!(seen.error_type.as_deref(), Some(code), "{seen:?}");
        // The refused request reached the agent as wasi:http's HTTP-request-denied, which it
        // told the model in the Rust agent's words.
        assert!(seen.text.contains("egress policy does not allow this request"), "{}", seen.text);
        let resp = client()
            .post(format!("{}/invocations", chain.url))
            .bearer_auth(chain.token_a(user))
            .header("accept", "application/json")
            .json(&json!({"prompt": "Show me 5 incidents assigned to me"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{code}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error_type"], code);
    }
    idp.set_token_fault(TokenFault::None);
    let ok = chain.ask(ids::JANE, "Show me 5 incidents assigned to me").await;
    assert_eq!(ok.status, 200);
}

/// What the agent tells the model when the host's egress policy refuses a request, and how an
/// unknown tool and a bad payload end: the plugin's own codes, like the Rust agent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_errors_read_like_the_rust_agents() {
    let Some(component) = component() else { return };
    let chain = chain(&component).await;
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
