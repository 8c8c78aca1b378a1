//! The article's AgentCore deployment on loopback: Jane → AgentCore Runtime front door
//! (customJWTAuthorizer, header allow-list, workload access token minting) → delegate as the
//! container (the same `delegate.toml` and `Host::start` as `delegate serve`, with an
//! `agentcore_identity` provider for ServiceNow and `server.inbound = "agentcore"`) → AgentCore
//! Identity stand-in (`GetResourceOauth2Token`, On-Behalf-Of at the IdP) → ServiceNow.
//!
//! What is asserted is what the caller and the container would notice: statuses and AWS error
//! names from the front door, whether the container (or plugin code) saw the request at all, the
//! session id the plugin is told, and that the workload access token reaches neither the plugin
//! nor the logs nor the audit.

use delegate_app::Host;
use delegate_config::Config;
use delegate_devstack::agentcore::behind_agentcore;
use delegate_devstack::{DevStack, DevStackOptions, idp_defaults as ids, seed};
use delegate_devstack_agentcore::front_door::{FrontDoorConfig, FrontDoorServer, SESSION_ID_HEADER};
use delegate_devstack_agentcore::identity::AgentCoreIdentity;
use delegate_devstack_idp::{CorpusTarget, Expected, attack_corpus};
use delegate_e2e::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The whole chain: devstack, Identity stand-in, delegate (the container) and the front door.
struct AgentCoreChain {
    stack: DevStack,
    host: Host,
    identity: AgentCoreIdentity,
    /// Every workload access token the Identity stand-in handed to the front door.
    wats: Arc<Mutex<Vec<String>>>,
    front: FrontDoorServer,
    audit: PathBuf,
    /// Trusts the devstack CA (the front door serves HTTPS, as the real endpoint does).
    http: reqwest::Client,
}

/// Serves the Identity stand-in over HTTPS with the devstack CA, recording every workload
/// access token `GetWorkloadAccessTokenForJWT` returns (so tests can look for it elsewhere).
async fn serve_identity(stack: &DevStack, identity: &AgentCoreIdentity) -> (String, Arc<Mutex<Vec<String>>>) {
    let wats = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&wats);
    let inner = identity.router();
    let app = axum::Router::new().fallback_service(inner).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let recorded = Arc::clone(&recorded);
            async move {
                let minting = req.uri().path() == "/identities/GetWorkloadAccessTokenForJWT";
                let resp = next.run(req).await;
                if !minting || !resp.status().is_success() {
                    return resp;
                }
                let (parts, body) = resp.into_parts();
                let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                recorded.lock().unwrap().push(v["workloadAccessToken"].as_str().unwrap().to_owned());
                axum::response::Response::from_parts(parts, axum::body::Body::from(bytes))
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://localhost:{}", listener.local_addr().unwrap().port());
    tokio::spawn(delegate_devstack_tls::serve_https(
        listener,
        app,
        stack.server_tls.clone(),
        std::future::pending(),
    ));
    (url, wats)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("delegate-e2e-agentcore-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ca_client(ca: &Path) -> reqwest::Client {
    delegate_outbound::build_client(&delegate_outbound::OutboundConfig {
        extra_ca_pem_files: vec![ca.to_owned()],
        ..Default::default()
    })
    .unwrap()
}

/// The chain serving `component`; `edit` may change delegate's config, `door` the front door's.
async fn chain(
    name: &str,
    component: &str,
    edit: impl FnOnce(String) -> String,
    door: impl FnOnce(&mut FrontDoorConfig),
) -> AgentCoreChain {
    let dir = scratch(name);
    let stack = DevStack::start(&DevStackOptions::ephemeral(&dir)).await.unwrap();
    let identity = stack.agentcore_identity().unwrap();
    let (identity_url, wats) = serve_identity(&stack, &identity).await;

    let audit = dir.join("audit.jsonl");
    let toml = stack.delegate_config(
        "127.0.0.1:0".parse().unwrap(),
        Path::new(component),
        &audit.display().to_string(),
    );
    let toml = edit(behind_agentcore(&toml, &identity_url));
    assert!(toml.contains("kind = \"agentcore_identity\""), "the devstack config changed shape");
    let config = Config::from_toml(&toml, &dir).unwrap();
    let host = Host::start_with(&config, None, delegate_devstack::aws_credentials()).await.unwrap();

    // The article's authorizer as the API takes it for Entra, Authorization allow-listed so
    // delegate verifies the caller again.
    let mut config = stack.front_door_config(&format!("http://{}", host.addr), &identity_url).unwrap();
    door(&mut config);
    let front = stack.start_front_door(config, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let http = ca_client(&stack.ca_path);
    AgentCoreChain { stack, host, identity, wats, front, audit, http }
}

impl AgentCoreChain {
    fn token_a(&self, user: &str) -> String {
        self.stack.token_a(user, Duration::from_secs(900)).unwrap().expose().to_owned()
    }

    fn instances(&self) -> u64 {
        self.host.plugin().unwrap().instances_created()
    }

    fn invoke(&self) -> reqwest::RequestBuilder {
        self.http.post(&self.front.invocation_url).header("content-type", "application/json")
    }

    fn audit_text(&self) -> String {
        std::fs::read_to_string(&self.audit).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jane_through_the_front_door_sees_exactly_her_five_incidents() {
    let chain = chain("jane", delegate_artifacts::SERVICENOW_AGENT, |t| t, |_| {}).await;
    let resp = chain
        .invoke()
        .bearer_auth(chain.token_a(ids::JANE))
        .json(&json!({"prompt": "Show me 5 incidents assigned to me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let session = resp.headers()[SESSION_ID_HEADER].to_str().unwrap().to_owned();
    assert!(session.len() >= 33, "{session}");
    let seen = collect(resp).await;
    let mut expected: Vec<String> = seed::JANE_INCIDENTS.iter().map(|i| i.number.to_owned()).collect();
    expected.sort();
    assert_eq!(crate::jane::numbers_in(&seen.text), expected, "{}", seen.text);
    for hidden in [seed::HR_INCIDENT.number, seed::SECURITY_INCIDENT.number] {
        assert!(!seen.text.contains(hidden));
    }
    // The front door minted one workload access token and forwarded one request; the
    // ServiceNow call went out as Jane.
    let counters = chain.front.door.counters();
    assert_eq!((counters.workload_tokens, counters.container_requests, counters.container_errors), (1, 1, 0));
    // Token B came from AgentCore Identity (GetResourceOauth2Token with that WAT, one OBO
    // exchange at the IdP), not from delegate: it holds no client secret for ServiceNow.
    let identity = chain.identity.counters();
    assert_eq!(identity.workload_tokens_issued, 1);
    assert!(identity.resource_token_calls >= 1, "{identity:?}");
    assert_eq!(identity.obo_exchanges, 1, "{identity:?}");
    assert_eq!(chain.stack.idp.idp().obo_calls(), 1);
    let audit: Vec<serde_json::Value> =
        chain.audit_text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let egress: Vec<_> = audit.iter().filter(|l| l["kind"] != "invocation").collect();
    assert!(!egress.is_empty());
    for line in &egress {
        assert_eq!(line["caller_username"], ids::JANE);
        assert_eq!(line["decision"], "allowed");
    }
    let invocation = audit.iter().find(|l| l["kind"] == "invocation").unwrap();
    assert_eq!(invocation["outcome"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_gets_401_from_the_front_door_before_the_container_sees_anything() {
    let chain = chain("missing", delegate_artifacts::SERVICENOW_AGENT, |t| t, |_| {}).await;
    let resp = chain.invoke().json(&json!({"prompt": "Show me my incidents"})).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["x-amzn-errortype"], "UnauthorizedException");
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer resource_metadata=\""), "{challenge}");
    assert!(challenge.ends_with("/invocations/.well-known/oauth-protected-resource?qualifier=DEFAULT\""));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["message"].is_string(), "{body}");
    let counters = chain.front.door.counters();
    assert_eq!((counters.missing_token, counters.container_requests, counters.workload_tokens), (1, 0, 0));
    assert_eq!(chain.instances(), 0);
    assert_eq!(chain.identity.counters().workload_token_calls, 0);
}

/// The IdP's attack corpus (forged, expired, wrong audience, alg confusion, duplicate headers,
/// …) through the front door: nothing it refuses reaches the container, and nothing reaches
/// plugin code except the accepted controls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tokens_never_reach_plugin_code() {
    let chain = chain("corpus", delegate_artifacts::ECHO, |t| t, |_| {}).await;
    let corpus = attack_corpus(chain.stack.idp.idp(), &CorpusTarget::default()).unwrap();
    assert!(corpus.len() >= 35, "only {} cases", corpus.len());
    let mut accepted = 0;
    for case in &corpus {
        let before = (chain.instances(), chain.front.door.counters().container_requests);
        let mut req = chain.invoke().body(r#"{"prompt":"hi"}"#);
        for value in &case.authorization {
            req = req.header("authorization", value);
        }
        let sent = tokio::time::timeout(Duration::from_secs(20), req.send()).await;
        let sent = sent.unwrap_or_else(|_| panic!("{}: request hung", case.name));
        let instances = chain.instances() - before.0;
        let forwarded = chain.front.door.counters().container_requests - before.1;
        match (case.expected, sent) {
            (Expected::Accepted, Ok(resp)) => {
                assert_eq!(resp.status(), 200, "{}", case.name);
                assert_eq!(collect(resp).await.text, "hi", "{}", case.name);
                assert_eq!((instances, forwarded), (1, 1), "{}", case.name);
                accepted += 1;
            }
            (_, Ok(resp)) => {
                let status = resp.status().as_u16();
                // Refused by the front door (401; 400 for an allow-listed value over 4 KB; 431
                // for a header beyond its limit), or passed by its coarser authorizer (it checks
                // no scope) and refused by delegate, which the caller sees as the container's
                // 4xx: 424. A token the authorizer passes but AgentCore Identity will not mint a
                // workload access token for (e.g. one with a `jku` header) is the service's
                // 500, also before the container.
                assert!(matches!(status, 400 | 401 | 424 | 431 | 500), "{}: {status}", case.name);
                if status == 424 {
                    assert_eq!(resp.headers()["x-amzn-errortype"], "RuntimeClientError", "{}", case.name);
                } else {
                    assert_eq!(forwarded, 0, "{}: reached the container", case.name);
                }
                assert_eq!(instances, 0, "{}: a plugin instance was created", case.name);
            }
            (_, Err(e)) => {
                assert!(case.authorization.iter().any(|v| v.len() > 64 * 1024), "{}: {e}", case.name);
                assert_eq!((instances, forwarded), (0, 0), "{}", case.name);
            }
        }
    }
    assert!(accepted >= 2, "the corpus should contain accepted controls");
    let counters = chain.front.door.counters();
    assert!(counters.invalid_token + counters.missing_token > 20, "{counters:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_id_passes_through_to_the_plugin() {
    let chain = chain("session", delegate_artifacts::PROBE_SANDBOX, |t| t, |_| {}).await;
    let token = chain.token_a(ids::JANE);
    let session = "jane-chat-2026-12-04-0001-abcdefghijklmnop";
    let resp = chain
        .invoke()
        .bearer_auth(&token)
        .header(SESSION_ID_HEADER, session)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[SESSION_ID_HEADER], session);
    let report: serde_json::Value = serde_json::from_str(&collect(resp).await.result.unwrap()).unwrap();
    assert_eq!(report["caller"]["session_id"], session);
    assert_eq!(report["caller"]["username"], ids::JANE);
    // Without one, the id the front door made up is the one the plugin is told.
    let resp = chain.invoke().bearer_auth(&token).body("{}").send().await.unwrap();
    let generated = resp.headers()[SESSION_ID_HEADER].to_str().unwrap().to_owned();
    let report: serde_json::Value = serde_json::from_str(&collect(resp).await.result.unwrap()).unwrap();
    assert_eq!(report["caller"]["session_id"], generated.as_str());
    assert_ne!(generated, session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_errors_reach_the_caller_as_424_runtime_client_error() {
    let chain = chain("errors", delegate_artifacts::ECHO, |t| t, |_| {}).await;
    let token = chain.token_a(ids::JANE);
    // delegate answers 400 invalid_json; the caller sees the service's 424.
    let resp = chain.invoke().bearer_auth(&token).body("{not json").send().await.unwrap();
    assert_eq!(resp.status(), 424);
    assert_eq!(resp.headers()["x-amzn-errortype"], "RuntimeClientError");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("(400)"), "{body}");
    assert_eq!(chain.instances(), 0);
    // A container that is gone.
    let AgentCoreChain { host, front, http, stack, .. } = chain;
    host.shutdown(Duration::from_secs(5)).await.unwrap();
    let resp = http
        .post(&front.invocation_url)
        .bearer_auth(stack.token_a(ids::JANE, Duration::from_secs(900)).unwrap().expose())
        .body(r#"{"prompt":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 424);
    assert_eq!(resp.headers()["x-amzn-errortype"], "RuntimeClientError");
    assert_eq!(front.door.counters().container_errors, 2);
}

/// The credential probe runs behind the front door: the workload access token the container
/// received is in nothing the plugin saw or said, in no log line and in no audit record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workload_access_token_never_reaches_the_plugin_the_logs_or_the_audit() {
    let logs = crate::credentials::captured_logs();
    let chain = chain("wat", delegate_artifacts::PROBE_CREDENTIALS, |t| t, |_| {}).await;
    let token = chain.token_a(ids::JANE);
    let url = format!("{}/api/now/table/incident?sysparm_limit=1", chain.stack.servicenow_url);
    let resp = chain
        .invoke()
        .bearer_auth(&token)
        .json(&json!({ "url": url, "redirect": url }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = collect(resp).await;
    let report = seen.result.clone().expect("probe result");
    // Positive control: the probe did reach ServiceNow through the egress rule, and a workload
    // access token was minted for this request and handed to the container.
    assert!(report.contains("\"status\":200"), "the probe's request did not go through");
    let wats = chain.wats.lock().unwrap().clone();
    assert_eq!(wats.len(), 1);
    assert_eq!(chain.front.door.counters().container_requests, 1);
    let wat = &wats[0];
    assert!(wat.len() >= 32);
    // …and delegate used it: the probe's ServiceNow request got its Token B from AgentCore
    // Identity, which only a valid WAT gets.
    assert!(chain.identity.counters().obo_exchanges >= 1);
    let audit = chain.audit_text();
    assert!(!audit.is_empty());
    let log_text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    crate::credentials::assert_logs_hold_the_invocation(&log_text, &audit);
    for (what, haystack) in
        [("plugin output", &seen.text), ("plugin result", &report), ("audit", &audit), ("logs", &log_text)]
    {
        // (Never print the haystack: it might hold a token.)
        assert!(!haystack.contains(wat.as_str()), "the workload access token reached the {what}");
        assert!(!haystack.contains(&token), "Token A reached the {what}");
    }
}

/// The runtime without `Authorization` on its allow-list: the container gets only the workload
/// access token. delegate in `agentcore` mode refuses (its 401, which the caller sees as 424);
/// in the opt-in `agentcore_workload_token` mode it serves Jane with Token B from AgentCore
/// Identity, though it never saw her token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_authorization_allow_listed_only_the_workload_token_mode_serves_jane() {
    let ask = |chain: &AgentCoreChain| {
        chain
            .invoke()
            .bearer_auth(chain.token_a(ids::JANE))
            .json(&json!({"prompt": "Show me 5 incidents assigned to me"}))
            .send()
    };
    let strict = chain(
        "no-allowlist",
        delegate_artifacts::SERVICENOW_AGENT,
        |t| t,
        |c| c.request_header_allowlist.clear(),
    )
    .await;
    let resp = ask(&strict).await.unwrap();
    assert_eq!(resp.status(), 424);
    assert_eq!(resp.headers()["x-amzn-errortype"], "RuntimeClientError");
    assert!(resp.text().await.unwrap().contains("(401)"));
    assert_eq!(strict.instances(), 0);
    assert_eq!(strict.front.door.counters().container_requests, 1);

    let wat_only = chain(
        "wat-only",
        delegate_artifacts::SERVICENOW_AGENT,
        |t| t.replace("inbound = \"agentcore\"", "inbound = \"agentcore_workload_token\""),
        |c| c.request_header_allowlist.clear(),
    )
    .await;
    let resp = ask(&wat_only).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = collect(resp).await;
    let mut expected: Vec<String> = seed::JANE_INCIDENTS.iter().map(|i| i.number.to_owned()).collect();
    expected.sort();
    assert_eq!(crate::jane::numbers_in(&seen.text), expected, "{}", seen.text);
    // delegate could not name the caller: the audit has a pseudonym and no username.
    let audit = wat_only.audit_text();
    let invocation: serde_json::Value = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["kind"] == "invocation")
        .unwrap();
    assert!(invocation["caller_username"].is_null(), "{invocation}");
    assert!(
        invocation["caller_subject"].as_str().unwrap().starts_with("agentcore-workload:"),
        "{invocation}"
    );
    assert_eq!(wat_only.identity.counters().obo_exchanges, 1);
}
