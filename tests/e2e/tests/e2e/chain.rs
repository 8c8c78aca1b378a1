//! Multi-hop agent chains as the user (issue 14): Jane → host A (the dispatcher plugin) →
//! host B (the ServiceNow agent) → ServiceNow, two real hosts in this process, each with the
//! `delegate.toml` the devstack helpers write, against the devstack IdP, ServiceNow sandbox and
//! Bedrock endpoint.
//!
//! - the user stays Jane at every hop: both hosts' audits, ServiceNow's ACLs and `sys_audit`;
//! - the token B of hop 2 carries the chain: `azp` Agent B, `act` = Agent B, nesting Agent A;
//! - one trace id (the caller's `traceparent`) in both hosts' audit records;
//! - B's stream reaches Jane while B's model is still generating;
//! - a loop A → B → A is refused by the chain-depth limit, with its own error code;
//! - Entra On-Behalf-Of works for the hop too, without an `act` chain; with a shared hop key
//!   the hosts count it by the signed hop counter, and the same loop is refused.

use delegate_app::Host;
use delegate_config::Config;
use delegate_devstack::{ChainExchange, ChainHost, DevStack, DevStackOptions, idp_defaults as ids, seed};
use delegate_e2e::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The trace Jane's client starts (W3C Trace Context §3.2's example).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Compiled components shared by every host of this module (atomic entries).
fn cache_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("delegate-e2e-chain-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Started {
    host: Host,
    audit: PathBuf,
}

impl Started {
    fn url(&self) -> String {
        format!("http://{}", self.host.addr)
    }

    fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// (invocation records, request records).
    fn audit_split(&self) -> (Vec<Value>, Vec<Value>) {
        self.audit_lines().into_iter().partition(|l| l["kind"] == "invocation")
    }
}

fn chain_host(
    dir: &Path,
    name: &str,
    max_chain_depth: usize,
    exchange: ChainExchange,
    hop_key: bool,
) -> ChainHost {
    ChainHost {
        listen: "127.0.0.1:0".parse().unwrap(),
        audit: dir.join(format!("audit-{name}.jsonl")).display().to_string(),
        max_chain_depth,
        exchange,
        hop_key,
    }
}

async fn start(toml: &str, dir: &Path, host: &ChainHost) -> Started {
    let toml = format!("{toml}\n[engine]\ncache_dir = {:?}\n", cache_dir().display().to_string());
    let config = Config::from_toml(&toml, dir).unwrap();
    let started = Host::start_with(&config, None, delegate_devstack::aws_credentials()).await.unwrap();
    Started { host: started, audit: PathBuf::from(&host.audit) }
}

/// The devstack and hosts A (dispatcher) and B (ServiceNow agent).
struct TwoHosts {
    stack: DevStack,
    a: Started,
    b: Started,
}

async fn two_hosts(exchange: ChainExchange, hop_key: bool) -> TwoHosts {
    let dir = crate::jane::scratch_dir();
    let stack = DevStack::start(&DevStackOptions::ephemeral(&dir)).await.unwrap();
    let hb = chain_host(&dir, "b", 1, exchange, hop_key);
    let toml_b =
        stack.chain_host_b_config(&hb, Path::new(delegate_artifacts::SERVICENOW_AGENT), None).unwrap();
    let b = start(&toml_b, &dir, &hb).await;
    let ha = chain_host(&dir, "a", 1, exchange, hop_key);
    let toml_a = stack
        .chain_host_a_config(&ha, Path::new(delegate_artifacts::DISPATCHER), b.host.addr, None, false)
        .unwrap();
    let a = start(&toml_a, &dir, &ha).await;
    TwoHosts { stack, a, b }
}

fn jane_token(stack: &DevStack) -> String {
    stack.token_a(ids::JANE, Duration::from_secs(900)).unwrap().expose().to_owned()
}

async fn ask(url: &str, token: &str, prompt: &str) -> reqwest::Response {
    client()
        .post(format!("{url}/invocations"))
        .bearer_auth(token)
        .header("traceparent", TRACEPARENT)
        .json(&json!({ "prompt": prompt }))
        .send()
        .await
        .unwrap()
}

fn jane_incidents() -> Vec<String> {
    let mut expected: Vec<String> = seed::JANE_INCIDENTS.iter().map(|i| i.number.to_owned()).collect();
    expected.sort();
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jane_through_two_agents_gets_her_five_incidents_as_herself() {
    let hosts = two_hosts(ChainExchange::TokenExchange, false).await;
    let token = jane_token(&hosts.stack);
    let seen = collect(ask(&hosts.a.url(), &token, "Show me 5 incidents assigned to me").await).await;
    assert_eq!(seen.status, 200, "{seen:?}");
    assert_eq!(crate::jane::numbers_in(&seen.text), jane_incidents(), "{}", seen.text);
    for hidden in [seed::HR_INCIDENT.number, seed::SECURITY_INCIDENT.number] {
        assert!(!seen.text.contains(hidden), "{}", seen.text);
    }
    // A's result is the dispatcher's: B's chunks relayed, B's own summary inside.
    let result: Value = serde_json::from_str(seen.result.as_deref().unwrap()).unwrap();
    assert!(result["relayed_chunks"].as_u64().unwrap() >= 2, "{result}");
    assert_eq!(result["downstream"]["plugin"].as_str().unwrap().split('@').next(), Some("servicenow-agent"));
    assert_eq!(result["downstream"]["result"]["tool_calls"], 1, "{result}");
    assert_eq!(result["downstream"]["result"]["tool_errors"], 0, "{result}");

    // What ServiceNow saw: Jane, through a token Agent B obtained, with the chain B ← A.
    let seen_tokens = hosts.stack.servicenow.seen_tokens();
    assert!(!seen_tokens.is_empty());
    for t in &seen_tokens {
        assert_eq!(t.user, ids::JANE);
        assert_eq!(t.client_id.as_deref(), Some(ids::AGENT_B_APP_ID));
        assert_eq!(
            t.act,
            Some(json!({"sub": ids::AGENT_B_OBJECT_ID, "client_id": ids::AGENT_B_APP_ID,
                "act": {"sub": ids::AGENT_OBJECT_ID, "client_id": ids::AGENT_APP_ID}}))
        );
    }
    // Two exchanges (A → B, B → ServiceNow), each with its host's own actor token.
    assert_eq!(hosts.stack.idp.idp().token_exchange_calls(), 2);

    // Host A's audit: Jane invoked the dispatcher, which called B with the agent-b token.
    let (inv_a, req_a) = hosts.a.audit_split();
    assert_eq!(inv_a.len(), 1, "{inv_a:?}");
    assert_eq!(inv_a[0]["caller_username"], ids::JANE);
    assert_eq!(inv_a[0]["outcome"], "ok");
    assert_eq!(inv_a[0]["chain_depth"], 0);
    assert_eq!(req_a.len(), 1, "{req_a:?}");
    assert_eq!(req_a[0]["caller_username"], ids::JANE);
    assert_eq!(req_a[0]["provider"], "agent-b");
    assert_eq!(req_a[0]["path"], "/invocations");
    assert_eq!(req_a[0]["status"], 200);
    // Host B's audit: Jane again (one agent deep), and B's ServiceNow calls.
    let (inv_b, req_b) = hosts.b.audit_split();
    assert_eq!(inv_b.len(), 1, "{inv_b:?}");
    assert_eq!(inv_b[0]["caller_username"], ids::JANE);
    assert_eq!(inv_b[0]["outcome"], "ok");
    assert_eq!(inv_b[0]["chain_depth"], 1);
    assert!(!req_b.is_empty());
    for line in &req_b {
        assert_eq!(line["caller_username"], ids::JANE);
        assert_eq!(line["provider"], "servicenow");
    }
    // One trace id ties it together: Jane's, in every record of both hosts.
    for line in inv_a.iter().chain(&req_a).chain(&inv_b).chain(&req_b) {
        assert_eq!(line["trace_id"], TRACE_ID, "{line}");
    }
    // B's invocation id is the one A's dispatcher reported (B answered A's request).
    assert_eq!(result["downstream"]["invocation_id"], inv_b[0]["invocation_id"]);

    // A write through the chain lands in sys_audit as Jane.
    let seen = collect(ask(&hosts.a.url(), &token, "Set INC0012345 urgency to 1").await).await;
    assert_eq!(seen.status, 200, "{seen:?}");
    let records = hosts.stack.servicenow.audit_records(seed::INC0012345.sys_id).unwrap();
    let urgency: Vec<_> = records.iter().filter(|r| r.field == "urgency").collect();
    assert_eq!(urgency.len(), 1, "{records:?}");
    assert_eq!(urgency[0].user, ids::JANE);
    // Tokens are cached per user and hop: no further exchange for the second question.
    assert_eq!(hosts.stack.idp.idp().token_exchange_calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_from_b_reach_jane_while_b_is_still_streaming() {
    let hosts = two_hosts(ChainExchange::TokenExchange, false).await;
    // B's model stream sends one delta, then holds the rest until we resume it: B's stream
    // cannot have ended when Jane reads her first chunk.
    hosts.stack.bedrock.pause_after_deltas(1);
    let resp = ask(&hosts.a.url(), &jane_token(&hosts.stack), "What can you do?").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut sse = SseReader::open(resp).await;
    let first = tokio::time::timeout(Duration::from_secs(30), sse.next())
        .await
        .expect("B's first chunk was held back until B's stream ended");
    assert!(first.unwrap().as_str().is_some_and(|t| !t.is_empty()));
    // Neither invocation has ended (each host writes its invocation record at the end): B's
    // model is paused mid-stream and A is still relaying.
    assert!(hosts.b.audit_split().0.is_empty(), "B finished before Jane's first chunk");
    assert!(hosts.a.audit_split().0.is_empty(), "A finished before Jane's first chunk");
    hosts.stack.bedrock.resume();
    let rest = sse.rest().await;
    assert!(rest.iter().filter(|e| e.is_string()).count() >= 1, "{rest:?}");
    let last = rest.last().unwrap();
    assert_eq!(last["status"], "success", "{last}");
    let result: Value = serde_json::from_str(last["result"].as_str().unwrap()).unwrap();
    assert!(result["relayed_chunks"].as_u64().unwrap() >= 2, "{result}");
    assert_eq!(result["downstream"]["result"]["cycles"], 1, "{result}");
}

/// Host A (dispatcher → B), host B (ServiceNow agent, and a dispatcher calling "A" back),
/// and a second host of Agent A that B calls back (same app and config, accepting Agent B's
/// calls), so that B can call "A" without knowing a port in advance.
struct LoopHosts {
    stack: DevStack,
    a: Started,
    b: Started,
    a_back: Started,
}

async fn loop_hosts(exchange: ChainExchange, hop_key: bool) -> LoopHosts {
    let dir = crate::jane::scratch_dir();
    let stack = DevStack::start(&DevStackOptions::ephemeral(&dir)).await.unwrap();
    let dispatcher = Path::new(delegate_artifacts::DISPATCHER);
    let h_back = chain_host(&dir, "a-back", 1, exchange, hop_key);
    let b_probe = "127.0.0.1:9".parse().unwrap(); // never called: depth is refused first
    let a_back =
        start(&stack.chain_host_a_config(&h_back, dispatcher, b_probe, None, true).unwrap(), &dir, &h_back)
            .await;
    let hb = chain_host(&dir, "b", 1, exchange, hop_key);
    let toml_b = stack
        .chain_host_b_config(
            &hb,
            Path::new(delegate_artifacts::SERVICENOW_AGENT),
            Some((dispatcher, a_back.host.addr)),
        )
        .unwrap();
    let b = start(&toml_b, &dir, &hb).await;
    let ha = chain_host(&dir, "a", 1, exchange, hop_key);
    let toml_a = stack.chain_host_a_config(&ha, dispatcher, b.host.addr, Some("dispatcher"), false).unwrap();
    let a = start(&toml_a, &dir, &ha).await;
    LoopHosts { stack, a, b, a_back }
}

/// Jane → A (depth 0) → B (depth 1, allowed) → A (depth 2 > 1): refused at the second A
/// before any plugin code ran, and the refusal's code travels back through both dispatchers.
async fn assert_the_loop_is_refused(hosts: &LoopHosts) {
    let seen =
        collect(ask(&hosts.a.url(), &jane_token(&hosts.stack), "Show me 5 incidents assigned to me").await)
            .await;
    assert_eq!(seen.status, 422, "{seen:?}");
    assert_eq!(seen.error_type.as_deref(), Some("plugin_error"), "{seen:?}");
    let error = seen.error.unwrap();
    assert_eq!(error["plugin_error_code"], "chain_depth_exceeded", "{error}");
    // The second A refused before any plugin code ran: no invocation, no egress there.
    assert!(hosts.a_back.audit_lines().is_empty(), "{:?}", hosts.a_back.audit_lines());
    // A counted Jane's own call; B's dispatcher, one agent deep, called A (and was refused);
    // nothing reached ServiceNow.
    let (inv_a, _) = hosts.a.audit_split();
    assert_eq!(inv_a[0]["chain_depth"], 0);
    let (inv_b, req_b) = hosts.b.audit_split();
    assert_eq!(inv_b.len(), 1);
    assert_eq!(inv_b[0]["chain_depth"], 1);
    assert_eq!(inv_b[0]["plugin"], "dispatcher");
    assert_eq!(req_b.len(), 1, "{req_b:?}");
    assert_eq!(req_b[0]["provider"], "agent-a");
    assert_eq!(req_b[0]["status"], 403);
    assert_eq!(hosts.stack.servicenow.request_count(), 0);
}

/// One agent deep passes the inbound check of `host` (it accepts Agent B's tokens) and the
/// plugin runs, but the host refuses the next hop early: its own hop would make the chain 2
/// deep, over the agent-b provider's limit, so nothing is sent to B.
async fn assert_the_next_hop_is_refused_early(host: &Started, seen: Seen) {
    assert_eq!(seen.status, 403, "{seen:?}");
    assert_eq!(seen.error_type.as_deref(), Some("chain_depth_exceeded"), "{seen:?}");
    let (inv, req) = host.audit_split();
    assert_eq!(inv.len(), 1, "{inv:?}");
    assert_eq!(inv[0]["chain_depth"], 1);
    assert_eq!(inv[0]["outcome"], "chain_depth_exceeded");
    assert_eq!(req.len(), 1, "{req:?}");
    assert_eq!(req[0]["decision"], "denied");
    assert_eq!(req[0]["reason"], "chain_depth_exceeded");
}

async fn assert_403_chain_depth(resp: reqwest::Response, depth: usize) {
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error_type"], "chain_depth_exceeded", "{body}");
    assert!(body["error"].as_str().unwrap().contains(&format!("{depth} agents deep")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_a_to_b_to_a_is_refused_by_the_chain_depth_limit() {
    let hosts = loop_hosts(ChainExchange::TokenExchange, false).await;
    assert_the_loop_is_refused(&hosts).await;

    // The same refusal, seen directly: a token two agents deep gets 403 with its own code.
    let resp = ask(&hosts.a_back.url(), &deep_token(&hosts.stack, 2), "hello").await;
    assert_403_chain_depth(resp, 2).await;
    let seen = collect(ask(&hosts.a_back.url(), &deep_token(&hosts.stack, 1), "hello").await).await;
    assert_the_next_hop_is_refused_early(&hosts.a_back, seen).await;
}

/// The devstack's hop key, as the chain hosts read it.
fn devstack_hop_key(stack: &DevStack) -> delegate_auth::HopKey {
    let text = std::fs::read_to_string(stack.hop_key_path().unwrap()).unwrap();
    delegate_auth::HopKey::from_base64(&delegate_secret::Secret::new(text)).unwrap()
}

/// [`ask`] with a hop counter header.
async fn ask_with_hop(
    url: &str,
    token: &str,
    hop: Option<reqwest::header::HeaderValue>,
) -> reqwest::Response {
    let mut request = client()
        .post(format!("{url}/invocations"))
        .bearer_auth(token)
        .header("traceparent", TRACEPARENT)
        .json(&json!({ "prompt": "hello" }));
    if let Some(hop) = hop {
        request = request.header(delegate_auth::HOP_HEADER, hop);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_behalf_of_loop_a_to_b_to_a_is_refused_by_the_signed_hop_counter() {
    // On-Behalf-Of at every hop: no token carries `act`; the hosts share a hop key.
    let hosts = loop_hosts(ChainExchange::OnBehalfOf, true).await;
    assert_the_loop_is_refused(&hosts).await;
    assert_eq!(hosts.stack.idp.idp().token_exchange_calls(), 0, "only On-Behalf-Of");
    assert!(hosts.stack.idp.idp().obo_calls() >= 2);

    // Seen directly, with Agent B's token for Agent A (no `act`) and a counter we sign with
    // the shared key, as host B's gateway would.
    let key = devstack_hop_key(&hosts.stack);
    let from_b = deep_token(&hosts.stack, 0);
    let url = hosts.a_back.url();
    let hop = |depth, token: &str| Some(key.header_value(depth, &delegate_secret::Secret::new(token)));
    // Two agents deep by the counter: 403, as for an `act` chain.
    assert_403_chain_depth(ask_with_hop(&url, &from_b, hop(2, &from_b)).await, 2).await;
    // Agent B's call without a counter (hop_required_from), with one bound to another token,
    // or with the depth rewritten: 401 invalid_hop, never trusted, and no plugin code ran.
    let other = deep_token(&hosts.stack, 1);
    let valid = key.header_value(2, &delegate_secret::Secret::new(from_b.as_str()));
    let lowered = format!("1.{}", valid.to_str().unwrap().split_once('.').unwrap().1);
    for hop in [None, hop(1, &other), Some(lowered.parse().unwrap())] {
        let resp = ask_with_hop(&url, &from_b, hop).await;
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()["www-authenticate"], r#"Bearer error="invalid_token""#);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error_type"], "invalid_hop", "{body}");
        assert!(!body.to_string().contains(&lowered[2..12]), "{body}");
    }
    assert!(hosts.a_back.audit_lines().is_empty(), "{:?}", hosts.a_back.audit_lines());
    // One deep by the counter: runs, and the next hop is refused early by the caller's
    // effective depth (1 + this host > the agent-b provider's limit of 1).
    let seen = collect(ask_with_hop(&url, &from_b, hop(1, &from_b)).await).await;
    assert_the_next_hop_is_refused_early(&hosts.a_back, seen).await;
}

/// Jane's token for Agent A as Agent B would present it, with `depth` nested actors.
fn deep_token(stack: &DevStack, depth: usize) -> String {
    let idp = stack.idp.idp();
    let spec = delegate_devstack_idp::TokenSpec {
        tenant: ids::TENANT_ID.into(),
        user: Some(ids::JANE.into()),
        client_id: ids::AGENT_B_APP_ID.into(),
        audience: ids::AGENT_APP_ID.into(),
        scopes: vec![ids::AGENT_SCOPE.into()],
        roles: Vec::new(),
        version: delegate_devstack_idp::TokenVersion::V2,
        lifetime: Duration::from_secs(600),
        client_authenticated: true,
    };
    let mut claims = idp.access_token_claims(&spec).unwrap();
    let mut act: Option<Value> = None;
    for i in 0..depth {
        let (sub, client) = if i % 2 == 0 {
            (ids::AGENT_OBJECT_ID, ids::AGENT_APP_ID)
        } else {
            (ids::AGENT_B_OBJECT_ID, ids::AGENT_B_APP_ID)
        };
        let mut o = json!({"sub": sub, "client_id": client});
        if let Some(inner) = act {
            o["act"] = inner;
        }
        act = Some(o);
    }
    if let Some(act) = act {
        claims.insert("act".into(), act);
    }
    idp.sign_claims(&claims).unwrap().expose().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_behalf_of_hop_works_without_an_act_chain() {
    let hosts = two_hosts(ChainExchange::OnBehalfOf, false).await;
    let seen =
        collect(ask(&hosts.a.url(), &jane_token(&hosts.stack), "Show me 5 incidents assigned to me").await)
            .await;
    assert_eq!(seen.status, 200, "{seen:?}");
    assert_eq!(crate::jane::numbers_in(&seen.text), jane_incidents(), "{}", seen.text);
    // ServiceNow saw Jane through Agent B's token, and no chain: On-Behalf-Of does not record
    // one, and without a hop key B counted depth 0 (docs/chains.md).
    let seen_tokens = hosts.stack.servicenow.seen_tokens();
    assert!(!seen_tokens.is_empty());
    for t in &seen_tokens {
        assert_eq!(t.user, ids::JANE);
        assert_eq!(t.client_id.as_deref(), Some(ids::AGENT_B_APP_ID));
        assert_eq!(t.act, None);
    }
    assert_eq!(hosts.stack.idp.idp().obo_calls(), 2);
    assert_eq!(hosts.stack.idp.idp().token_exchange_calls(), 0);
    let (inv_b, _) = hosts.b.audit_split();
    assert_eq!(inv_b[0]["caller_username"], ids::JANE);
    assert_eq!(inv_b[0]["chain_depth"], 0);
    assert_eq!(inv_b[0]["trace_id"], TRACE_ID);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_hop_key_an_on_behalf_of_chain_is_counted_and_jane_gets_her_incidents() {
    let hosts = two_hosts(ChainExchange::OnBehalfOf, true).await;
    let seen =
        collect(ask(&hosts.a.url(), &jane_token(&hosts.stack), "Show me 5 incidents assigned to me").await)
            .await;
    assert_eq!(seen.status, 200, "{seen:?}");
    assert_eq!(crate::jane::numbers_in(&seen.text), jane_incidents(), "{}", seen.text);
    for t in &hosts.stack.servicenow.seen_tokens() {
        assert_eq!(t.user, ids::JANE);
        assert_eq!(t.client_id.as_deref(), Some(ids::AGENT_B_APP_ID));
        assert_eq!(t.act, None, "On-Behalf-Of records no chain");
    }
    assert_eq!(hosts.stack.idp.idp().obo_calls(), 2);
    assert_eq!(hosts.stack.idp.idp().token_exchange_calls(), 0);
    // The hop counter carried the depth: A counted Jane's own call, B one agent before it.
    let (inv_a, req_a) = hosts.a.audit_split();
    assert_eq!(inv_a[0]["chain_depth"], 0);
    assert_eq!(req_a[0]["provider"], "agent-b");
    assert_eq!(req_a[0]["status"], 200);
    let (inv_b, req_b) = hosts.b.audit_split();
    assert_eq!(inv_b[0]["caller_username"], ids::JANE);
    assert_eq!(inv_b[0]["outcome"], "ok");
    assert_eq!(inv_b[0]["chain_depth"], 1);
    assert_eq!(inv_b[0]["trace_id"], TRACE_ID);
    for line in &req_b {
        assert_eq!(line["provider"], "servicenow");
    }
}
