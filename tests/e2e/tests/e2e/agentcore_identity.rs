//! delegate as the container inside AgentCore Runtime, with the ServiceNow credential coming
//! from AgentCore Identity (`agentcore_identity` provider, the article's `EntraIdServiceNow`):
//! delegate is called directly with what the runtime sends it (`Authorization` and the
//! `WorkloadAccessToken` header), the Identity stand-in performs the On-Behalf-Of exchange.
//! Also the inbound modes: the workload access token alone is accepted only when the operator
//! opted in, and `standalone` mode (which never reads it) refuses such a provider at start;
//! and the token never reaches the plugin, its memory, the logs or the audit.

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use delegate_app::Host;
use delegate_config::Config;
use delegate_devstack::{DevStack, DevStackOptions, idp_defaults as ids, seed};
use delegate_devstack_agentcore::identity::{
    ARTICLE_PROVIDER, ARTICLE_WORKLOAD, AgentCoreIdentity, IdentityConfig,
};
use delegate_e2e::*;
use delegate_secret::Secret;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The devstack, the Identity stand-in (HTTPS, devstack CA) and a delegate config whose
/// `servicenow` provider is `agentcore_identity`.
struct Setup {
    stack: DevStack,
    identity: AgentCoreIdentity,
    config: Config,
    audit: PathBuf,
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("delegate-e2e-aci-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `toml` with the `servicenow` provider replaced by an `agentcore_identity` one at
/// `identity_url`, `server.inbound = inbound` (unless `None`) and `extra` appended.
fn agentcore_config(toml: &str, identity_url: &str, inbound: Option<&str>, extra: &str) -> String {
    let mut out = Vec::new();
    let mut skipping = false;
    for line in toml.lines() {
        if line.starts_with('[') {
            skipping = line == "[vault.providers.servicenow]";
            if skipping {
                out.push(line.to_owned());
                out.push("kind = \"agentcore_identity\"".to_owned());
                out.push(format!("credential_provider = \"{ARTICLE_PROVIDER}\""));
                out.push("region = \"us-east-1\"".to_owned());
                out.push(format!("endpoint_url = \"{identity_url}\""));
                out.push(String::new());
                continue;
            }
        }
        if skipping {
            continue;
        }
        out.push(line.to_owned());
        if line == "[server]"
            && let Some(mode) = inbound
        {
            out.push(format!("inbound = \"{mode}\""));
        }
    }
    let mut text = out.join("\n");
    text.push('\n');
    text.push_str(extra);
    text
}

async fn setup(
    name: &str,
    component: &str,
    inbound: Option<&str>,
    extra: impl FnOnce(&DevStack) -> String,
) -> Setup {
    let dir = scratch(name);
    let stack = DevStack::start(&DevStackOptions::ephemeral(&dir)).await.unwrap();
    let idp = stack.idp.idp();
    let client = delegate_outbound::build_client(&delegate_outbound::OutboundConfig {
        extra_ca_pem_files: vec![stack.ca_path.clone()],
        ..Default::default()
    })
    .unwrap();
    let mut identity_config = IdentityConfig::article(
        idp.issuer(ids::TENANT_ID),
        idp.jwks_uri(ids::TENANT_ID),
        idp.token_endpoint(ids::TENANT_ID),
        ids::AGENT_APP_ID,
        Secret::new(ids::AGENT_APP_SECRET),
        client,
    );
    // delegate signs with the devstack's AWS keys (the model client's).
    identity_config.access_key_id = Some("AKIDDEVSTACK".into());
    let identity = AgentCoreIdentity::new(identity_config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let identity_url = format!("https://localhost:{}", listener.local_addr().unwrap().port());
    tokio::spawn(delegate_devstack_tls::serve_https(
        listener,
        identity.router(),
        stack.server_tls.clone(),
        std::future::pending(),
    ));
    let audit = dir.join("audit.jsonl");
    let toml = stack.delegate_config(
        "127.0.0.1:0".parse().unwrap(),
        Path::new(component),
        &audit.display().to_string(),
    );
    let toml = agentcore_config(&toml, &identity_url, inbound, &extra(&stack));
    let config = Config::from_toml(&toml, &dir).unwrap();
    Setup { stack, identity, config, audit }
}

impl Setup {
    fn token_a(&self, user: &str) -> Secret {
        self.stack.token_a(user, Duration::from_secs(900)).unwrap()
    }

    /// What AgentCore Runtime mints for the user's token after its authorizer accepted it.
    async fn wat(&self, token_a: &Secret) -> Secret {
        self.identity.workload_access_token(ARTICLE_WORKLOAD, token_a).await.unwrap()
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

async fn ask(url: &str, token_a: Option<&Secret>, wat: Option<&Secret>, payload: serde_json::Value) -> Seen {
    let mut req = client().post(format!("{url}/invocations")).json(&payload);
    if let Some(t) = token_a {
        req = req.bearer_auth(t.expose());
    }
    if let Some(w) = wat {
        req = req.header("WorkloadAccessToken", w.expose());
    }
    collect(req.send().await.unwrap()).await
}

fn prompt(text: &str) -> serde_json::Value {
    json!({ "prompt": text })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jane_gets_her_incidents_through_agentcore_identity() {
    let s = setup("jane", delegate_artifacts::SERVICENOW_AGENT, Some("agentcore"), |_| String::new()).await;
    let host = Host::start_with(&s.config, None, delegate_devstack::aws_credentials()).await.unwrap();
    let url = format!("http://{}", host.addr);
    let token_a = s.token_a(ids::JANE);
    let wat = s.wat(&token_a).await;

    let seen = ask(&url, Some(&token_a), Some(&wat), prompt("Show me 5 incidents assigned to me")).await;
    assert_eq!(seen.status, 200, "{seen:?}");
    let mut expected: Vec<String> = seed::JANE_INCIDENTS.iter().map(|i| i.number.to_owned()).collect();
    expected.sort();
    assert_eq!(crate::jane::numbers_in(&seen.text), expected, "{}", seen.text);
    for hidden in [seed::HR_INCIDENT.number, seed::SECURITY_INCIDENT.number] {
        assert!(!seen.text.contains(hidden));
    }
    // Token B came from AgentCore Identity's exchange, not from delegate's own.
    let counters = s.identity.counters();
    assert_eq!((counters.resource_token_calls, counters.obo_exchanges), (1, 1), "{counters:?}");
    assert_eq!(s.stack.idp.idp().obo_calls(), 1);

    // A write: ServiceNow's sys_audit names Jane.
    let seen = ask(&url, Some(&token_a), Some(&wat), prompt("Set INC0012345 urgency to 1")).await;
    assert_eq!(seen.status, 200, "{seen:?}");
    let records = s.stack.servicenow.audit_records(seed::INC0012345.sys_id).unwrap();
    let urgency: Vec<_> = records.iter().filter(|r| r.field == "urgency").collect();
    assert_eq!(urgency.len(), 1, "{records:?}");
    assert_eq!(urgency[0].user, ids::JANE);
    // The second invocation (same user, same WAT) was served from the cache.
    assert_eq!(s.identity.counters().resource_token_calls, 1);

    let lines = s.audit_lines();
    let egress: Vec<_> = lines.iter().filter(|l| l["kind"] != "invocation").collect();
    assert!(!egress.is_empty());
    for line in &egress {
        assert_eq!(line["caller_username"], ids::JANE, "{line}");
        assert_eq!(line["provider"], "servicenow");
        assert_eq!(line["decision"], "allowed");
    }
    let audit_text = std::fs::read_to_string(&s.audit).unwrap();
    assert!(!audit_text.contains(wat.expose()));
    let _ = host.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workload_access_token_alone_works_only_when_opted_in() {
    // agentcore: Authorization is still required.
    let s =
        setup("no-opt-in", delegate_artifacts::SERVICENOW_AGENT, Some("agentcore"), |_| String::new()).await;
    let host = Host::start_with(&s.config, None, delegate_devstack::aws_credentials()).await.unwrap();
    let url = format!("http://{}", host.addr);
    let token_a = s.token_a(ids::JANE);
    let wat = s.wat(&token_a).await;
    let seen = ask(&url, None, Some(&wat), prompt("Show me 5 incidents assigned to me")).await;
    assert_eq!((seen.status, seen.error_type.as_deref()), (401, Some("invalid_token")), "{seen:?}");
    assert_eq!(s.identity.counters().resource_token_calls, 0);
    let _ = host.shutdown(Duration::from_secs(5)).await;

    // standalone (the default) never reads the header, so an agentcore_identity provider
    // would have nothing to work with: the config is refused before anything starts.
    let toml = s.stack.delegate_config(
        "127.0.0.1:0".parse().unwrap(),
        Path::new(delegate_artifacts::SERVICENOW_AGENT),
        &s.audit.display().to_string(),
    );
    let standalone = agentcore_config(&toml, "https://localhost:1", None, "");
    let e = Config::from_toml(&standalone, &scratch("standalone")).unwrap_err().to_string();
    assert!(
        e.contains("server.inbound") && e.contains("\"servicenow\" is of kind \"agentcore_identity\""),
        "{e}"
    );

    // agentcore_workload_token: the token alone is served, for a pseudonymous caller; AgentCore
    // vouched for Jane, so ServiceNow still applies her ACLs.
    let s = setup("opt-in", delegate_artifacts::SERVICENOW_AGENT, Some("agentcore_workload_token"), |_| {
        String::new()
    })
    .await;
    let host = Host::start_with(&s.config, None, delegate_devstack::aws_credentials()).await.unwrap();
    let url = format!("http://{}", host.addr);
    let token_a = s.token_a(ids::JANE);
    let wat = s.wat(&token_a).await;
    let seen = ask(&url, None, Some(&wat), prompt("Show me 5 incidents assigned to me")).await;
    assert_eq!(seen.status, 200, "{seen:?}");
    assert_eq!(crate::jane::numbers_in(&seen.text).len(), 5, "{}", seen.text);
    let lines = s.audit_lines();
    assert!(!lines.is_empty());
    for line in &lines {
        let subject = line["caller_subject"].as_str().unwrap();
        assert!(subject.starts_with(delegate_auth::WORKLOAD_SUBJECT_PREFIX), "{line}");
        assert!(line["caller_username"].is_null(), "no claim delegate did not verify: {line}");
    }
    // A JWT that is present must verify: a bad one is not replaced by the token.
    let mut forged = token_a.expose().to_owned();
    forged.push('x');
    let forged = Secret::new(forged);
    let seen = ask(&url, Some(&forged), Some(&wat), prompt("Show me 5 incidents assigned to me")).await;
    assert_eq!(seen.status, 401, "{seen:?}");
    // Without either: 401.
    let seen = ask(&url, None, None, prompt("Show me 5 incidents assigned to me")).await;
    assert_eq!(seen.status, 401, "{seen:?}");
    let _ = host.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_known_only_by_its_workload_access_token_is_a_pseudonym_to_the_plugin() {
    let s = setup("pseudonym", delegate_artifacts::ECHO, Some("agentcore_workload_token"), |_| String::new())
        .await;
    let host = Host::start_with(&s.config, None, delegate_devstack::aws_credentials()).await.unwrap();
    let url = format!("http://{}", host.addr);
    let token_a = s.token_a(ids::JANE);
    let wat = s.wat(&token_a).await;
    let result = |seen: &Seen| -> serde_json::Value {
        serde_json::from_str(seen.result.as_deref().unwrap_or_else(|| panic!("{seen:?}"))).unwrap()
    };
    // With the JWT: the verified subject (Jane's oid).
    let seen = ask(&url, Some(&token_a), Some(&wat), prompt("hi")).await;
    assert_eq!(result(&seen)["caller"], ids::JANE_OID);
    // The token alone: a pseudonym derived from it, never a claim, never the token.
    let seen = ask(&url, None, Some(&wat), prompt("hi")).await;
    let subject = result(&seen)["caller"].as_str().unwrap().to_owned();
    assert!(subject.starts_with(delegate_auth::WORKLOAD_SUBJECT_PREFIX), "{subject}");
    assert_ne!(subject, ids::JANE_OID);
    assert!(!subject.contains(wat.expose()) && !seen.text.contains(wat.expose()));
    // Stable for one token, different for another.
    let again = ask(&url, None, Some(&wat), prompt("hi")).await;
    assert_eq!(result(&again)["caller"], subject.as_str());
    let other = s.wat(&token_a).await;
    let seen = ask(&url, None, Some(&other), prompt("hi")).await;
    assert_ne!(result(&seen)["caller"], subject.as_str());
    let _ = host.shutdown(Duration::from_secs(5)).await;
}

/// A downstream that answers with the workload access token in `leak` (set by the test, never
/// given to the plugin), in a header and in the body, as a service that had seen it might:
/// the scrubber must remove it before the plugin reads the response.
async fn leaking_server(leak: Arc<Mutex<String>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/reflect",
        axum::routing::any(move || {
            let echo = leak.lock().unwrap().clone();
            async move {
                let mut h = HeaderMap::new();
                h.insert("x-echo", echo.parse().unwrap());
                (StatusCode::OK, h, axum::Json(json!({ "echo": echo }))).into_response()
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workload_access_token_never_reaches_the_plugin_its_memory_the_logs_or_the_audit() {
    let logs = crate::credentials::captured_logs();
    let leak = Arc::new(Mutex::new(String::new()));
    let port = leaking_server(Arc::clone(&leak)).await;
    let s = setup("probe", delegate_artifacts::PROBE_CREDENTIALS, Some("agentcore"), |_| {
        format!(
            "\n[[plugin.egress.rules]]\nmethods = [\"GET\", \"POST\"]\nscheme = \"http\"\nhost = \"localhost\"\nport = {port}\npath_prefix = \"/reflect\"\ncredential = {{ provider = \"servicenow\", scopes = [\"api://{}/{}\"] }}\n",
            ids::CONNECTOR_APP_ID,
            ids::CONNECTOR_SCOPE
        )
    })
    .await;
    let token_a = s.token_a(ids::JANE);
    let wat = s.wat(&token_a).await;
    wat.expose().clone_into(&mut leak.lock().unwrap());

    // The probe served by hand, so its memory can be read after the invocation (as in
    // credentials.rs), with the production inbound and vault wiring.
    let settings = s.config.default_plugin();
    let runtime = delegate_runtime::Runtime::new(&delegate_runtime::RuntimeOptions {
        guest_debug: true,
        ..delegate_runtime::RuntimeOptions::new(&s.config.engine, &s.config.plugins)
    })
    .unwrap();
    let outbound = delegate_outbound::build_client(&s.config.outbound).unwrap();
    let vault = delegate_vault::TokenVault::new(s.config.vault.clone(), outbound.clone());
    let delegate_model::AwsCredentials::Static { access_key_id, secret_access_key, session_token } =
        delegate_devstack::aws_credentials()
    else {
        panic!("the devstack uses static AWS keys")
    };
    vault.set_agentcore_aws(delegate_vault::AgentCoreAws {
        static_keys: Some(delegate_vault::StaticAwsKeys { access_key_id, secret_access_key, session_token }),
        extra_ca_pem: std::fs::read(&s.stack.ca_path).unwrap(),
    });
    let memories: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = Arc::clone(&memories);
    let component = match &settings.source {
        Some(delegate_config::PluginSource::Component(path)) => std::fs::read(path).unwrap(),
        other => panic!("the probe config names a component, not {other:?}"),
    };
    let audit_sink = Arc::new(delegate_egress::AuditSink::file(&s.audit).unwrap());
    let plugin = runtime
        .load_plugin_bytes(&settings.name, &component, settings.limits, &settings.settings, None)
        .unwrap()
        .with_egress(delegate_runtime::EgressAccess {
            gateway: delegate_egress::EgressGateway::new(Arc::new(vault), outbound, audit_sink),
            policy: Arc::new(settings.egress.clone()),
            limits: delegate_egress::EgressLimits::default(),
        })
        .with_memory_inspector(Arc::new(move |_, bytes| sink.lock().unwrap().push(bytes.to_vec())));
    let authorizer = Arc::new(delegate_server::InboundAuthorizer::new(
        devstack_authorizer(&s.stack.idp),
        s.config.server.inbound,
    ));
    let state = delegate_server::AppState::new(
        delegate_runtime::PluginRegistry::single(plugin),
        authorizer,
        delegate_server::ServerOptions::from_settings(&s.config.server),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(delegate_server::serve(listener, delegate_server::router(state), std::future::pending()));

    let payload = json!({
        "url": format!("http://localhost:{port}/reflect"),
        "redirect": format!("http://localhost:{port}/reflect"),
    });
    let seen = ask(&url, Some(&token_a), Some(&wat), payload).await;
    let report = seen.result.clone().unwrap_or_else(|| panic!("probe failed: {:?}", seen.error_type));
    // Positive controls: the credential was obtained through AgentCore, the echo came back
    // scrubbed, and the memory scan sees what the plugin read.
    assert_eq!(s.identity.counters().obo_exchanges, 1);
    assert!(report.contains("[redacted]"), "the echoed token was not scrubbed visibly");
    let memories = memories.lock().unwrap();
    assert!(!memories.is_empty(), "no guest memory was inspected");
    let all: Vec<u8> = memories.concat();
    assert!(find(&all, b"[redacted]"));

    let audit_text = std::fs::read_to_string(&s.audit).unwrap();
    let log_text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    crate::credentials::assert_logs_hold_the_invocation(&log_text, &audit_text);
    for (what, haystack) in [
        ("plugin output", seen.text.as_bytes()),
        ("plugin result", report.as_bytes()),
        ("guest memory", all.as_slice()),
        ("audit", audit_text.as_bytes()),
        ("logs", log_text.as_bytes()),
    ] {
        assert!(!find(haystack, wat.expose().as_bytes()), "the workload access token reached the {what}");
    }
    assert!(!audit_text.is_empty());
}
