//! The article's scenario end to end: real host (the same `delegate.toml` and `Host::start` as
//! `delegate serve`), the ServiceNow agent plugin, and the devstack (Entra-compatible IdP with
//! On-Behalf-Of, ServiceNow sandbox enforcing its ACLs, Bedrock endpoint with its planner).
//!
//! The suite is parameterised by the agent's build: [`suite!`] expands to one `#[tokio::test]`
//! per case for an [`AgentBuild`]. This module runs it against the Rust agent; `jane_py` and
//! `jane_js` run the same cases against the Python and JavaScript agents
//! (guest/servicenow-agent-py, guest/servicenow-agent-js).

use delegate_app::Host;
use delegate_config::Config;
use delegate_devstack::{DevStack, DevStackOptions, idp_defaults as ids, seed};
use delegate_e2e::*;
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const OBO_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// One build of the ServiceNow agent: its component and what its config needs beyond the
/// devstack's defaults.
pub(crate) struct AgentBuild {
    /// Path of the component (`.wasm`).
    pub(crate) component: PathBuf,
    /// `engine.cache_dir`: a large component is compiled once for the whole suite, not once
    /// per test.
    pub(crate) cache_dir: Option<PathBuf>,
    /// More `[engine]` keys, one `key = value` per line.
    pub(crate) engine: &'static str,
}

impl AgentBuild {
    /// The Rust agent built by tests/artifacts.
    pub(crate) fn rust() -> Self {
        Self { component: PathBuf::from(delegate_artifacts::SERVICENOW_AGENT), cache_dir: None, engine: "" }
    }

    /// The same build once its compiled code is in its `cache_dir`: the first caller starts a
    /// host (Cranelift compiles the component, for a large one many seconds of both cores) while
    /// the others wait on `warm`, then every test's host loads the compiled code instead of all
    /// compiling it at once.
    pub(crate) async fn warmed(self, warm: &'static tokio::sync::OnceCell<()>) -> Self {
        warm.get_or_init(|| async {
            let chain = chain_with(&self, |t| t).await;
            let _ = chain.host.shutdown(Duration::from_secs(5)).await;
        })
        .await;
        self
    }
}

pub(crate) struct Chain {
    pub(crate) stack: DevStack,
    pub(crate) host: Host,
    pub(crate) url: String,
    pub(crate) audit: PathBuf,
}

pub(crate) fn scratch_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "delegate-e2e-jane-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The devstack and a host serving `agent` (`edit` may change the generated `delegate.toml`).
pub(crate) async fn chain_with(agent: &AgentBuild, edit: impl FnOnce(String) -> String) -> Chain {
    let dir = scratch_dir();
    let stack = DevStack::start(&DevStackOptions::ephemeral(&dir)).await.unwrap();
    let audit = dir.join("audit.jsonl");
    let mut toml = stack
        .delegate_config("127.0.0.1:0".parse().unwrap(), &agent.component, &audit.display().to_string())
        .replace("[server]\n", "[server]\nmax_concurrency = 64\n");
    if agent.cache_dir.is_some() || !agent.engine.is_empty() {
        toml.push_str("\n[engine]\n");
        if let Some(cache) = &agent.cache_dir {
            toml.push_str(&format!("cache_dir = {:?}\n", cache.display().to_string()));
        }
        toml.push_str(agent.engine);
    }
    let config = Config::from_toml(&edit(toml), &dir).unwrap();
    let host = Host::start_with(&config, None, delegate_devstack::aws_credentials()).await.unwrap();
    let url = format!("http://{}", host.addr);
    Chain { stack, host, url, audit }
}

async fn chain(agent: &AgentBuild) -> Chain {
    chain_with(agent, |t| t).await
}

impl Chain {
    pub(crate) fn token_a(&self, user: &str) -> String {
        self.stack.token_a(user, Duration::from_secs(900)).unwrap().expose().to_owned()
    }

    pub(crate) async fn ask(&self, user: &str, prompt: &str) -> Seen {
        let resp = client()
            .post(format!("{}/invocations", self.url))
            .bearer_auth(self.token_a(user))
            .json(&json!({ "prompt": prompt }))
            .send()
            .await
            .unwrap();
        collect(resp).await
    }

    pub(crate) fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

pub(crate) fn numbers_in(text: &str) -> Vec<String> {
    let mut found: Vec<String> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() == 10 && w.starts_with("INC") && w[3..].bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// One `#[tokio::test]` per Jane case, run against the [`AgentBuild`] that `$agent` evaluates
/// to (a future of an `Option`: `None` skips the test, for a build that is not there).
macro_rules! suite {
    ($agent:expr) => {
        $crate::jane::suite!(@cases $agent;
            jane_sees_exactly_her_five_incidents,
            asking_for_hr_incidents_does_not_get_jane_past_the_acl,
            jane_updates_her_incident_as_herself_and_is_refused_on_another,
            concurrent_invocations_of_one_user_share_one_obo_exchange,
            servicenow_rejects_token_a_and_accepts_token_b,
            idp_errors_surface_with_their_status_and_code,
        );
    };
    (@cases $agent:expr; $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let agent: Option<$crate::jane::AgentBuild> = $agent.await;
                if let Some(agent) = agent {
                    $crate::jane::cases::$case(&agent).await;
                }
            }
        )*
    };
}
pub(crate) use suite;

suite!(async { Some(AgentBuild::rust()) });

/// The cases, each for any build of the agent.
pub(crate) mod cases {
    use super::*;

    pub(crate) async fn jane_sees_exactly_her_five_incidents(agent: &AgentBuild) {
        let chain = chain(agent).await;
        let seen = chain.ask(ids::JANE, "Show me 5 incidents assigned to me").await;
        assert_eq!(seen.status, 200, "{seen:?}");
        let mut expected: Vec<String> = seed::JANE_INCIDENTS.iter().map(|i| i.number.to_owned()).collect();
        expected.sort();
        assert_eq!(numbers_in(&seen.text), expected, "{}", seen.text);
        assert!(seen.text.contains("VPN connection dropping"), "{}", seen.text);
        // The restricted rows never reached the plugin: not in the answer, not in the summary.
        for hidden in [seed::HR_INCIDENT.number, seed::SECURITY_INCIDENT.number] {
            assert!(!seen.text.contains(hidden));
            assert!(!seen.result.as_deref().unwrap_or("").contains(hidden));
        }
        // Every build of the agent ends with the same summary.
        let summary: serde_json::Value = serde_json::from_str(seen.result.as_deref().unwrap()).unwrap();
        assert_eq!(summary["cycles"], 2, "{summary}");
        assert_eq!(summary["tool_calls"], 1, "{summary}");
        assert_eq!(summary["tool_errors"], 0, "{summary}");
        assert_eq!(summary["stop_reason"], "end_turn", "{summary}");
        // ServiceNow saw Jane, through Token B obtained On-Behalf-Of her, and the audit says so.
        let (invocations, audit): (Vec<_>, Vec<_>) =
            chain.audit_lines().into_iter().partition(|l| l["kind"] == "invocation");
        assert!(!audit.is_empty());
        // One record for the invocation itself, with what it consumed.
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
        // No token anywhere a person or the plugin could read.
        let token_a = chain.token_a(ids::JANE);
        let signature = token_a.rsplit('.').next().unwrap().to_owned();
        let audit_text = std::fs::read_to_string(&chain.audit).unwrap();
        for haystack in [&seen.text, seen.result.as_deref().unwrap_or(""), &audit_text] {
            assert!(!haystack.contains(&signature));
            assert!(!haystack.contains("eyJ"), "something JWT-like leaked: {haystack}");
        }
    }

    pub(crate) async fn asking_for_hr_incidents_does_not_get_jane_past_the_acl(agent: &AgentBuild) {
        let chain = chain(agent).await;
        // INC0012350 is HR and (misrouted) assigned to Jane: a filter on either alone would leak it.
        let jane = chain.ask(ids::JANE, "Show me 10 incidents assigned to me with category=hr").await;
        assert_eq!(jane.status, 200, "{jane:?}");
        assert!(!jane.text.contains(seed::HR_INCIDENT.number), "{}", jane.text);
        let jane_all = chain.ask(ids::JANE, "List 50 incidents with category=hr").await;
        assert!(numbers_in(&jane_all.text).is_empty(), "{}", jane_all.text);
        let hr = chain.ask(ids::HR_ANALYST, "List 10 incidents with category=hr").await;
        assert!(hr.text.contains(seed::HR_INCIDENT.number), "{}", hr.text);
        // Two users: two On-Behalf-Of exchanges, each cached for its own user.
        assert_eq!(chain.stack.idp.idp().grant_calls(OBO_GRANT), 2);
    }

    pub(crate) async fn jane_updates_her_incident_as_herself_and_is_refused_on_another(agent: &AgentBuild) {
        let chain = chain(agent).await;
        let seen = chain.ask(ids::JANE, "Set INC0012345 urgency to 1").await;
        assert_eq!(seen.status, 200, "{seen:?}");
        let records = chain.stack.servicenow.audit_records(seed::INC0012345.sys_id).unwrap();
        let urgency: Vec<_> = records.iter().filter(|r| r.field == "urgency").collect();
        assert_eq!(urgency.len(), 1, "{records:?}");
        assert_eq!(urgency[0].new_value, "1");
        assert_eq!(urgency[0].user, ids::JANE);
        // An incident she may read but not write: ServiceNow answers 403 and the agent says so.
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

    pub(crate) async fn concurrent_invocations_of_one_user_share_one_obo_exchange(agent: &AgentBuild) {
        let chain = chain(agent).await;
        let asks = (0..50).map(|_| chain.ask(ids::JANE, "Show me 5 incidents assigned to me"));
        let all = futures::future::join_all(asks).await;
        for seen in &all {
            assert_eq!(seen.status, 200, "{seen:?}");
            assert_eq!(numbers_in(&seen.text).len(), 5, "{}", seen.text);
        }
        assert_eq!(chain.stack.idp.idp().grant_calls(OBO_GRANT), 1);
        let _ = chain.host.shutdown(Duration::from_secs(5)).await;
    }

    pub(crate) async fn servicenow_rejects_token_a_and_accepts_token_b(agent: &AgentBuild) {
        let chain = chain(agent).await;
        let http = delegate_outbound::build_client(&delegate_outbound::OutboundConfig {
            extra_ca_pem_files: vec![chain.stack.ca_path.clone()],
            ..Default::default()
        })
        .unwrap();
        let url = format!("{}/api/now/table/incident?sysparm_limit=1", chain.stack.servicenow_url);
        let a = http.get(&url).bearer_auth(chain.token_a(ids::JANE)).send().await.unwrap();
        assert_eq!(a.status(), 401);
        let token_b = chain
            .stack
            .idp
            .idp()
            .mint_access_token(
                ids::JANE,
                ids::AGENT_APP_ID,
                ids::CONNECTOR_APP_ID,
                &[ids::CONNECTOR_SCOPE],
                Duration::from_secs(600),
            )
            .unwrap();
        let b = http.get(&url).bearer_auth(token_b.expose()).send().await.unwrap();
        assert_eq!(b.status(), 200);
    }

    /// Each IdP failure of the On-Behalf-Of exchange reaches the client as its own status and
    /// code (never a 500), whatever the plugin makes of its refused request: as the HTTP status in
    /// JSON mode, as the final event's `error_type` once an event stream has started.
    pub(crate) async fn idp_errors_surface_with_their_status_and_code(agent: &AgentBuild) {
        use delegate_devstack_idp::TokenFault;
        let chain = chain(agent).await;
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
            // A different user each time: a cached Token B would hide the fault.
            let user = ["ravi.patel@company.com", "maria.garcia@company.com", "tom.baker@company.com"]
                [usize::from(status % 3)];
            let seen = chain.ask(user, "Show me 5 incidents assigned to me").await;
            assert_eq!(seen.status, 200, "{code}: {seen:?}");
            assert_eq!(seen.error_type.as_deref(), Some(code), "{seen:?}");
            // The refused request reached the agent as wasi:http's HTTP-request-denied, which
            // every build tells the model in the same words.
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
            if code == "interaction_required" {
                let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_owned();
                assert!(
                    challenge.contains("insufficient_claims") && challenge.contains("claims="),
                    "{challenge}"
                );
            }
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["error_type"], code);
        }
        idp.set_token_fault(TokenFault::None);
        let ok = chain.ask(ids::JANE, "Show me 5 incidents assigned to me").await;
        assert_eq!(ok.status, 200);
    }
}
