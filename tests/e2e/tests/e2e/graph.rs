//! Microsoft Graph through the same provider model (issue 14): one invocation of the ServiceNow
//! agent reaches two downstream audiences, ServiceNow and Graph, each with its own Token B
//! obtained On-Behalf-Of the caller through its own egress rule and vault provider, and each
//! cached on its own.

use crate::jane::{AgentBuild, Chain, chain_with, numbers_in};
use delegate_devstack::{Fault, idp_defaults as ids, seed};
use serde_json::Value;

const OBO_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const GRAPH_AUD: &str = "https://graph.microsoft.com";
const BOTH: &str = "Who is my manager, and show me my incidents";

/// The audit's egress records (not the per-invocation ones), oldest first.
fn egress_lines(chain: &Chain) -> Vec<Value> {
    chain.audit_lines().into_iter().filter(|l| l["kind"] != "invocation").collect()
}

fn summary(seen: &delegate_e2e::Seen) -> Value {
    serde_json::from_str(seen.result.as_deref().expect("a result")).unwrap()
}

fn jane_incidents() -> Vec<String> {
    let mut expected: Vec<String> = seed::JANE_INCIDENTS.iter().map(|i| i.number.to_owned()).collect();
    expected.sort();
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_invocation_uses_servicenow_and_graph_with_two_cached_tokens() {
    let chain = chain_with(&AgentBuild::rust(), |t| t).await;
    let idp = chain.stack.idp.idp();

    let seen = chain.ask(ids::JANE, BOTH).await;
    assert_eq!(seen.status, 200, "{seen:?}");
    // What Jane sees comes from both systems: her manager from Graph, her incidents from
    // ServiceNow (with its ACLs: the HR and Security bait never arrives).
    assert!(
        seen.text.contains("Your manager is Priya Shah (priya.shah@company.com), IT Service Desk Manager"),
        "{}",
        seen.text
    );
    assert_eq!(numbers_in(&seen.text), jane_incidents(), "{}", seen.text);
    let s = summary(&seen);
    assert_eq!(
        (s["cycles"].as_u64(), s["tool_calls"].as_u64(), s["tool_errors"].as_u64()),
        (Some(2), Some(2), Some(0)),
        "{s}"
    );

    // Two exchanges, one per audience, each recorded in the audit with its provider.
    assert_eq!(idp.grant_calls(OBO_GRANT), 2);
    let first = egress_lines(&chain);
    let by = |lines: &[Value], provider: &str| -> Vec<Value> {
        lines.iter().filter(|l| l["provider"] == provider).cloned().collect()
    };
    let graph = by(&first, "graph");
    let snow = by(&first, "servicenow");
    assert_eq!(graph.len(), 1, "{first:?}");
    assert!(!snow.is_empty(), "{first:?}");
    assert_eq!(graph.len() + snow.len(), first.len(), "no other egress: {first:?}");
    assert_eq!(graph[0]["path"], "/v1.0/me/manager");
    assert_eq!(graph[0]["method"], "GET");
    for line in &first {
        assert_eq!(line["decision"], "allowed", "{line}");
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["caller_username"], ids::JANE, "{line}");
    }
    assert_eq!(graph[0]["cache"], "miss");
    assert_eq!(snow[0]["cache"], "miss");

    // What the stand-ins saw. Graph: a token with its own audience, for Jane's oid. ServiceNow:
    // it records only tokens it accepted, i.e. whose `aud` is the connector app (it refuses
    // Token A and Graph tokens), issued to the agent app for Jane.
    let snow_seen = chain.stack.servicenow.seen_tokens();
    assert!(!snow_seen.is_empty());
    for t in &snow_seen {
        assert_eq!(t.user, ids::JANE);
        assert_eq!(t.client_id.as_deref(), Some(ids::AGENT_APP_ID));
    }
    let tokens = chain.stack.graph.tokens_seen();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0].audience.as_deref(), Some(GRAPH_AUD));
    assert_eq!(tokens[0].oid.as_deref(), Some(ids::JANE_OID));
    assert_eq!(tokens[0].scopes.as_deref(), Some("User.Read"));
    assert_eq!(tokens[0].refused, None);

    // A second invocation hits both caches: no new exchange.
    let again = chain.ask(ids::JANE, BOTH).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(numbers_in(&again.text), jane_incidents());
    assert!(again.text.contains("Your manager is Priya Shah"), "{}", again.text);
    assert_eq!(idp.grant_calls(OBO_GRANT), 2, "a cached Token B was exchanged again");
    let second: Vec<Value> = egress_lines(&chain).split_off(first.len());
    assert!(!second.is_empty());
    assert!(by(&second, "graph").iter().all(|l| l["cache"] == "hit"), "{second:?}");
    assert!(by(&second, "servicenow").iter().all(|l| l["cache"] == "hit"), "{second:?}");
    assert_eq!(by(&second, "graph").len(), 1);

    // The Graph token is cached per (user, provider, scopes), not per tool: who_am_i reuses it.
    let me = chain.ask(ids::JANE, "Who am I?").await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(
        me.text,
        "Let me look up your profile.You are Jane Smith (jane.smith@company.com), Service Desk Analyst, IT, Building 1, Floor 3.\n"
    );
    assert_eq!(idp.grant_calls(OBO_GRANT), 2);
    let tokens = chain.stack.graph.tokens_seen();
    assert_eq!(tokens.len(), 3);
    assert!(tokens.iter().all(|t| t.audience.as_deref() == Some(GRAPH_AUD) && t.refused.is_none()));

    // No token anywhere the user or an auditor reads.
    let audit_text = std::fs::read_to_string(&chain.audit).unwrap();
    for haystack in [&seen.text, seen.result.as_deref().unwrap_or(""), &audit_text, &me.text] {
        assert!(!haystack.contains("eyJ"), "something JWT-like leaked: {haystack}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_get_their_own_graph_token_and_answer() {
    let chain = chain_with(&AgentBuild::rust(), |t| t).await;
    // Priya has no manager recorded: Graph's 404 is an answer, not a failure.
    let priya = chain.ask(ids::JANE_MANAGER, "Who is my manager?").await;
    assert_eq!(priya.status, 200, "{priya:?}");
    assert!(priya.text.contains("No manager is recorded for you in the directory."), "{}", priya.text);
    let ravi = chain.ask("ravi.patel@company.com", "Who is my manager?").await;
    assert!(ravi.text.contains("Your manager is Priya Shah"), "{}", ravi.text);
    // Two users, two Graph tokens, each for its own user.
    assert_eq!(chain.stack.idp.idp().grant_calls(OBO_GRANT), 2);
    let oids: Vec<Option<String>> = chain.stack.graph.tokens_seen().into_iter().map(|t| t.oid).collect();
    assert_eq!(
        oids,
        [Some(ids::JANE_MANAGER_OID.to_owned()), Some("181e290a-ae9a-4169-8a0c-510089ce5ef7".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_errors_are_tool_errors_the_model_sees() {
    // An operator mistake: the Graph rule attaches a ServiceNow token. Graph refuses it (401,
    // Invalid audience); the agent tells the model, the invocation itself succeeds, and the
    // incidents from the same turn are still shown.
    let graph_credential = format!(
        "credential = {{ provider = \"graph\", scopes = [\"{}\"] }}",
        format_args!("{}/{}", ids::GRAPH_RESOURCE, ids::GRAPH_USER_READ)
    );
    let chain = chain_with(&AgentBuild::rust(), |t| {
        assert!(t.contains(&graph_credential), "{t}");
        t.replace(
            &graph_credential,
            &format!(
                "credential = {{ provider = \"servicenow\", scopes = [\"api://{}/{}\"] }}",
                ids::CONNECTOR_APP_ID,
                ids::CONNECTOR_SCOPE
            ),
        )
    })
    .await;
    let seen = chain.ask(ids::JANE, BOTH).await;
    assert_eq!(seen.status, 200, "{seen:?}");
    assert_eq!(seen.error_type, None, "{seen:?}");
    assert!(
        seen.text.contains(
            "the my_manager call failed: Microsoft Graph did not accept your sign-in; sign in again \
             (Microsoft Graph: InvalidAuthenticationToken: Access token validation failure. Invalid audience.)"
        ),
        "{}",
        seen.text
    );
    assert_eq!(numbers_in(&seen.text), jane_incidents(), "{}", seen.text);
    let s = summary(&seen);
    assert_eq!(s["tool_errors"], 1, "{s}");
    let refused: Vec<Value> =
        egress_lines(&chain).into_iter().filter(|l| l["path"] == "/v1.0/me/manager").collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["status"], 401);
    // The host evicts a token its downstream answered 401 for and retries once with a fresh
    // one: Graph saw two ServiceNow-audience tokens and refused both.
    let tokens = chain.stack.graph.tokens_seen();
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    for t in &tokens {
        assert_eq!(t.audience.as_deref(), Some(ids::CONNECTOR_APP_ID));
        assert_eq!(t.refused, Some(delegate_devstack::GraphRefusal::Audience));
    }
    let invocations: Vec<Value> =
        chain.audit_lines().into_iter().filter(|l| l["kind"] == "invocation").collect();
    assert_eq!(invocations[0]["outcome"], "ok");

    // Graph unavailable (503 with Retry-After): a tool error with the retry hint.
    chain.stack.faults.graph.set(Fault::Status {
        status: 503,
        headers: vec![("retry-after".into(), "12".into())],
        body: String::new(),
    });
    let busy = chain.ask(ids::JANE, "Who am I?").await;
    assert_eq!(busy.status, 200, "{busy:?}");
    assert!(
        busy.text.contains(
            "the who_am_i call failed: Microsoft Graph is throttling requests; retry in 12 seconds"
        ),
        "{}",
        busy.text
    );
    chain.stack.faults.graph.set(Fault::Pass);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_refuses_token_a_and_servicenow_tokens() {
    let chain = chain_with(&AgentBuild::rust(), |t| t).await;
    let http = delegate_outbound::build_client(&delegate_outbound::OutboundConfig {
        extra_ca_pem_files: vec![chain.stack.ca_path.clone()],
        ..Default::default()
    })
    .unwrap();
    let me = format!("{}/v1.0/me", chain.stack.graph_url);
    let a = http.get(&me).bearer_auth(chain.token_a(ids::JANE)).send().await.unwrap();
    assert_eq!(a.status(), 401);
    assert!(
        a.headers()["www-authenticate"].to_str().unwrap().contains("00000003-0000-0000-c000-000000000000")
    );
    let body: Value = a.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    let idp = chain.stack.idp.idp();
    let snow = idp
        .mint_access_token(
            ids::JANE,
            ids::AGENT_APP_ID,
            ids::CONNECTOR_APP_ID,
            &[ids::CONNECTOR_SCOPE],
            std::time::Duration::from_secs(600),
        )
        .unwrap();
    let s = http.get(&me).bearer_auth(snow.expose()).send().await.unwrap();
    assert_eq!(s.status(), 401);
    let graph = idp
        .mint_access_token(
            ids::JANE,
            ids::AGENT_APP_ID,
            ids::GRAPH_RESOURCE,
            &[ids::GRAPH_USER_READ],
            std::time::Duration::from_secs(600),
        )
        .unwrap();
    let g = http.get(&me).bearer_auth(graph.expose()).send().await.unwrap();
    assert_eq!(g.status(), 200);
    let auds: Vec<Option<String>> = chain.stack.graph.tokens_seen().into_iter().map(|t| t.audience).collect();
    assert_eq!(
        auds,
        [
            Some(ids::AGENT_APP_ID.to_owned()),
            Some(ids::CONNECTOR_APP_ID.to_owned()),
            Some(GRAPH_AUD.to_owned())
        ]
    );
}

/// The operator's Graph rule grants `GET` below `/v1.0/me` and nothing else: a plugin (the
/// credential probe, which requests whatever URL it is given) reads the caller's own profile
/// with the Graph token attached, and is denied other users and other methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_rule_grants_only_get_below_me() {
    let probe = AgentBuild {
        component: std::path::PathBuf::from(delegate_artifacts::PROBE_CREDENTIALS),
        cache_dir: None,
        engine: "",
    };
    let chain = chain_with(&probe, |t| t).await;
    let graph = &chain.stack.graph_url;
    let resp = delegate_e2e::client()
        .post(format!("{}/invocations", chain.url))
        .bearer_auth(chain.token_a(ids::JANE))
        .json(&serde_json::json!({
            "url": format!("{graph}/v1.0/me"),
            "redirect": format!("{graph}/v1.0/users/{}", ids::JANE_MANAGER),
        }))
        .send()
        .await
        .unwrap();
    let seen = delegate_e2e::collect(resp).await;
    let report: Value = serde_json::from_str(seen.result.as_deref().expect("probe result")).unwrap();
    let entry =
        |label: &str| report.as_array().unwrap().iter().find(|e| e["label"] == label).cloned().unwrap();
    let me = entry("reflect");
    assert_eq!(me["status"], 200, "{me}");
    let profile: Value = serde_json::from_str(me["body"].as_str().unwrap()).unwrap();
    assert_eq!(profile["userPrincipalName"], ids::JANE);
    // Another user, and a POST to /me: no rule covers them.
    assert!(entry("redirect")["error"].as_str().unwrap().contains("denied"), "{}", entry("redirect"));
    assert!(entry("post")["error"].as_str().unwrap().contains("denied"), "{}", entry("post"));
    let denied: Vec<Value> = egress_lines(&chain).into_iter().filter(|l| l["decision"] == "denied").collect();
    assert!(denied.iter().any(|l| l["path"] == "/v1.0/users/priya.shah@company.com"), "{denied:?}");
    // Graph saw only Graph-audience tokens for Jane (one exchange, cached for the rest).
    let tokens = chain.stack.graph.tokens_seen();
    assert!(!tokens.is_empty());
    assert!(
        tokens
            .iter()
            .all(|t| t.audience.as_deref() == Some(GRAPH_AUD) && t.oid.as_deref() == Some(ids::JANE_OID))
    );
    assert_eq!(chain.stack.idp.idp().grant_calls(OBO_GRANT), 1);
    assert!(!seen.result.as_deref().unwrap().contains("eyJ"), "a token reached the plugin");
}
