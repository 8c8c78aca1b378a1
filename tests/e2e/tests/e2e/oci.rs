//! Plugins by reference through a real OCI registry (the distribution server on loopback): the
//! ServiceNow agent pushed as a plugin artifact and started from `source = "oci://...@sha256:..."`,
//! a second plugin deployed by digest through the admin API, tampered blobs and unknown digests
//! refused, and a registry outage that the local blob cache rides out, across a restart too.

use delegate_app::Host;
use delegate_config::Config;
use delegate_devstack::{DevStack, DevStackOptions, idp_defaults as ids, seed};
use delegate_e2e::registry::Registry;
use delegate_e2e::*;
use delegate_oci::{OciSettings, Reference, RegistryClient, Target};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const ADMIN_TOKEN: &str = "admin-token-for-oci-tests-0123456789abcdef";

fn scratch_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "delegate-e2e-oci-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What `delegate plugin push` does: the component and its plugin.toml as an artifact.
pub(crate) async fn push(
    registry: &Registry,
    repository: &str,
    component: &[u8],
    plugin_toml: &str,
) -> Reference {
    let settings = OciSettings { plain_http: [registry.host()].into(), ..OciSettings::default() };
    let pusher = RegistryClient::new(client(), settings, None);
    let target = Target::parse(&format!("oci://{}/{repository}:latest", registry.host())).unwrap();
    pusher.push(&target, component, plugin_toml).await.unwrap()
}

/// The config's operator rules for the ServiceNow agent, as a manifest requests them.
fn manifest_rules(config: &str) -> String {
    let start = config.find("[[plugin.egress.rules]]").unwrap();
    // The operator picks the credential; a manifest only asks for the destination.
    config[start..]
        .lines()
        .filter(|l| !l.starts_with("credential"))
        .map(
            |l| {
                if l == "[[plugin.egress.rules]]" {
                    "[[egress.rules]]\n".to_owned()
                } else {
                    format!("{l}\n")
                }
            },
        )
        .collect()
}

/// Pushes `component` (a build of the ServiceNow agent) as the `servicenow-agent` plugin at
/// `version`, its manifest asking for the egress rules `stack`'s config grants the agent;
/// returns the reference pinned to its manifest digest.
pub(crate) async fn push_servicenow_agent(
    registry: &Registry,
    stack: &DevStack,
    component: &[u8],
    version: &str,
) -> Reference {
    let generated = stack.delegate_config(
        "127.0.0.1:0".parse().unwrap(),
        Path::new(delegate_artifacts::SERVICENOW_AGENT),
        "audit.jsonl",
    );
    let plugin_toml = format!(
        "name = \"servicenow-agent\"\nversion = {version:?}\ndigest = {:?}\n\n{}",
        sha256_digest(component),
        manifest_rules(&generated)
    );
    push(registry, "plugins/servicenow-agent", component, &plugin_toml).await
}

/// `toml` (a devstack config) serving the ServiceNow agent from `reference` in the plain-HTTP
/// `registry` instead of from its component file.
pub(crate) fn agent_from_registry(toml: &str, registry: &Registry, reference: &Reference) -> String {
    let component = format!("component = {:?}\n", delegate_artifacts::SERVICENOW_AGENT);
    assert!(toml.contains(&component), "the devstack config changed shape");
    toml.replace(&component, &format!("source = \"{reference}\"\n"))
        + &format!("\n[oci]\nplain_http = [\"{}\"]\n", registry.host())
}

fn echo_manifest(version: &str, bytes: &[u8]) -> String {
    format!(
        "name = \"echo\"\nversion = {version:?}\ndigest = {:?}\n\n[settings]\ntag = {version:?}\n",
        sha256_digest(bytes)
    )
}

struct Setup {
    registry: Registry,
    stack: DevStack,
    dir: PathBuf,
    /// The host config, serving the ServiceNow agent from `agent`.
    toml: String,
    agent: Reference,
    agent_digest: String,
}

async fn setup() -> Setup {
    let dir = scratch_dir();
    let registry = Registry::start(&dir.join("registry")).await;
    let stack = DevStack::start(&DevStackOptions::ephemeral(&dir)).await.unwrap();
    let component_path = Path::new(delegate_artifacts::SERVICENOW_AGENT);
    let generated = stack.delegate_config(
        "127.0.0.1:0".parse().unwrap(),
        component_path,
        &dir.join("audit.jsonl").display().to_string(),
    );
    let component = std::fs::read(component_path).unwrap();
    let agent_digest = sha256_digest(&component);
    let agent = push_servicenow_agent(&registry, &stack, &component, "1.0.0").await;
    let toml = agent_from_registry(&generated, &registry, &agent)
        .replace("name = \"servicenow-agent\"\n", "name = \"servicenow-agent\"\ndefault = true\n")
        .replace(
            "[server]\n",
            &format!("[engine]\ncache_dir = {:?}\n\n[server]\n", dir.join("cache").display().to_string()),
        )
        + "\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"DELEGATE_OCI_TEST_ADMIN_TOKEN\"\n\n\
           [[plugin]]\nname = \"echo\"\n";
    assert!(toml.contains(&format!("source = \"{agent}\"")), "{toml}");
    Setup { registry, stack, dir, toml, agent, agent_digest }
}

impl Setup {
    async fn host(&self, toml: &str) -> Result<Host, delegate_app::StartError> {
        let token_file = self.dir.join("admin-token");
        std::fs::write(&token_file, ADMIN_TOKEN).unwrap();
        let toml = toml.replace(
            "token_env = \"DELEGATE_OCI_TEST_ADMIN_TOKEN\"",
            &format!("token_file = {:?}", token_file.display().to_string()),
        );
        let config = Config::from_toml(&toml, &self.dir).unwrap();
        Host::start_with(&config, None, delegate_devstack::aws_credentials()).await
    }

    async fn jane(&self, host: &Host) -> Seen {
        let token = self.stack.token_a(ids::JANE, Duration::from_secs(900)).unwrap();
        let resp = client()
            .post(format!("http://{}/invocations", host.addr))
            .bearer_auth(token.expose())
            .json(&json!({ "prompt": "Show me 5 incidents assigned to me" }))
            .send()
            .await
            .unwrap();
        collect(resp).await
    }

    async fn assert_jane_served(&self, host: &Host) {
        let seen = self.jane(host).await;
        assert_eq!(seen.status, 200, "{seen:?}");
        let mut expected: Vec<&str> = seed::JANE_INCIDENTS.iter().map(|i| i.number).collect();
        expected.sort_unstable();
        for number in expected {
            assert!(seen.text.contains(number), "{number} missing from {}", seen.text);
        }
        assert_eq!(host.plugin().unwrap().digest(), self.agent_digest);
    }
}

async fn admin(
    host: &Host,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = client()
        .request(method, format!("http://{}{path}", host.admin_addr.unwrap()))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

async fn deploy(host: &Host, name: &str, reference: &str) -> (u16, serde_json::Value) {
    admin(host, reqwest::Method::PUT, &format!("/admin/plugins/{name}"), Some(json!({ "oci": reference })))
        .await
}

async fn active(host: &Host, name: &str) -> serde_json::Value {
    let (status, list) = admin(host, reqwest::Method::GET, "/admin/plugins", None).await;
    assert_eq!(status, 200, "{list}");
    list["plugins"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["active"].clone()
}

/// The `tag` the echo plugin answers with (its manifest's `tag` setting: the version).
async fn echo_tag(host: &Host, token: &str) -> (u16, String) {
    let resp = client()
        .post(format!("http://{}/invocations", host.addr))
        .bearer_auth(token)
        .header("accept", "application/json")
        .header("x-delegate-plugin", "echo")
        .json(&json!({ "prompt": "hello" }))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let result: serde_json::Value =
        body["result"].as_str().and_then(|r| serde_json::from_str(r).ok()).unwrap_or_default();
    (status, result["tag"].as_str().unwrap_or("").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_deployed_by_digest_verified_and_served_from_cache_while_the_registry_is_down() {
    let mut s = setup().await;

    // Start-up pulls the ServiceNow agent by digest; Jane's invocation runs as usual.
    let host = s.host(&s.toml).await.unwrap();
    s.assert_jane_served(&host).await;
    let agent = active(&host, "servicenow-agent").await;
    assert_eq!(agent["digest"], s.agent_digest.as_str());
    // The admin list names the reference a version was pulled from (here: the config's).
    assert_eq!(agent["source"], s.agent.to_string(), "{agent}");
    let token = s.stack.token_a(ids::JANE, Duration::from_secs(900)).unwrap().expose().to_owned();

    // The admin API deploys by reference too.
    let echo = std::fs::read(delegate_artifacts::ECHO).unwrap();
    let v1 = rebuilt(&echo, "oci-v1");
    let echo_v1 = push(&s.registry, "plugins/echo", &v1, &echo_manifest("1.0.0", &v1)).await;
    let (status, body) = deploy(&host, "echo", &echo_v1.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"]["version"], "1.0.0", "{body}");
    assert_eq!(body["active"]["source"], echo_v1.to_string(), "{body}");
    assert_eq!(active(&host, "echo").await["source"], echo_v1.to_string());
    assert_eq!(echo_tag(&host, &token).await, (200, "1.0.0".to_owned()));

    // A tampered component layer is refused before it is compiled or cached.
    let v2 = rebuilt(&echo, "oci-v2");
    let echo_v2 = push(&s.registry, "plugins/echo", &v2, &echo_manifest("2.0.0", &v2)).await;
    let blob = s.registry.blob_file(&sha256_digest(&v2));
    let mut bytes = std::fs::read(&blob).unwrap();
    assert_eq!(bytes, v2);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&blob, &bytes).unwrap();
    let (status, body) = deploy(&host, "echo", &echo_v2.to_string()).await;
    assert_eq!((status, body["error_type"].as_str()), (422, Some("artifact_digest_mismatch")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("component layer"), "{body}");
    assert_eq!(echo_tag(&host, &token).await, (200, "1.0.0".to_owned()), "the active version keeps serving");

    // A tampered manifest (the bytes the pinned digest names) is refused too.
    let v3 = rebuilt(&echo, "oci-v3");
    let echo_v3 = push(&s.registry, "plugins/echo", &v3, &echo_manifest("3.0.0", &v3)).await;
    let manifest_blob = s.registry.blob_file(echo_v3.digest.as_str());
    let text = std::fs::read_to_string(&manifest_blob).unwrap();
    assert!(text.contains("plugin.wasm"), "{text}");
    std::fs::write(&manifest_blob, text.replace("plugin.wasm", "plugin.wasn")).unwrap();
    let (status, body) = deploy(&host, "echo", &echo_v3.to_string()).await;
    assert_eq!((status, body["error_type"].as_str()), (422, Some("artifact_digest_mismatch")), "{body}");
    assert!(body["error"].as_str().unwrap().starts_with("manifest does not match its digest"), "{body}");

    // An unknown digest and a tag fail clearly, at the admin API and at start-up.
    let unknown = format!("oci://{}/plugins/echo@{}", s.registry.host(), sha256_digest(b"never pushed"));
    let (status, body) = deploy(&host, "echo", &unknown).await;
    assert_eq!((status, body["error_type"].as_str()), (404, Some("artifact_not_found")), "{body}");
    let (status, body) =
        deploy(&host, "echo", &format!("oci://{}/plugins/echo:latest", s.registry.host())).await;
    assert_eq!((status, body["error_type"].as_str()), (400, Some("invalid_reference")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("digest only"), "{body}");
    let unknown_agent =
        s.toml.replace(&s.agent.to_string(), &unknown.replace("plugins/echo", "plugins/servicenow-agent"));
    let e = s.host(&unknown_agent).await.err().expect("an unknown digest must not start");
    assert!(
        e.message.starts_with("plugin servicenow-agent: manifest ") && e.message.contains("not found"),
        "{}",
        e.message
    );

    // Registry down: what is active keeps serving, a cached digest redeploys, an uncached one
    // fails as unavailable (not as "not found").
    s.registry.stop();
    s.assert_jane_served(&host).await;
    let (status, body) = deploy(&host, "echo", &echo_v1.to_string()).await;
    assert_eq!((status, body["unchanged"].as_bool()), (200, Some(true)), "{body}");
    let v4 = rebuilt(&echo, "oci-v4");
    s.registry.start_again().await;
    let echo_v4 = push(&s.registry, "plugins/echo", &v4, &echo_manifest("4.0.0", &v4)).await;
    s.registry.stop();
    let (status, body) = deploy(&host, "echo", &echo_v4.to_string()).await;
    assert_eq!((status, body["error_type"].as_str()), (502, Some("registry_unavailable")), "{body}");

    // A restart with the registry still down starts from the blob cache, and loads the
    // precompiled artifact instead of compiling.
    host.shutdown(Duration::from_secs(5)).await.unwrap();
    let host = s.host(&s.toml).await.unwrap();
    s.assert_jane_served(&host).await;
    let agent = active(&host, "servicenow-agent").await;
    assert_eq!(
        (agent["digest"].as_str(), agent["from_cache"].as_bool()),
        (Some(s.agent_digest.as_str()), Some(true)),
        "{agent}"
    );
    let (status, body) = deploy(&host, "echo", &echo_v1.to_string()).await;
    assert_eq!((status, body["active"]["version"].as_str()), (200, Some("1.0.0")), "{body}");

    // A corrupted cache entry is not used: with the registry down the pull fails instead.
    let cached = s.dir.join("cache/oci").join(sha256_digest(&v1).strip_prefix("sha256:").unwrap());
    let mut bytes = std::fs::read(&cached).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&cached, &bytes).unwrap();
    let (status, body) = admin(&host, reqwest::Method::DELETE, "/admin/plugins/echo", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = deploy(&host, "echo", &echo_v1.to_string()).await;
    assert_eq!((status, body["error_type"].as_str()), (502, Some("registry_unavailable")), "{body}");
    assert!(!cached.exists(), "the corrupted entry is removed");
    host.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_needs_credentials_is_pulled_from_with_a_secret_reference() {
    use delegate_e2e::registry::{PASSWORD, USERNAME};
    let dir = scratch_dir();
    let registry = Registry::start_with_credentials(&dir.join("registry")).await;
    let host = registry.host();
    let plain = || OciSettings { plain_http: [host.clone()].into(), ..OciSettings::default() };
    let echo = rebuilt(&std::fs::read(delegate_artifacts::ECHO).unwrap(), "oci-auth");
    let plugin_toml = echo_manifest("1.0.0", &echo).replace("name = \"echo\"", "name = \"servicenow-agent\"");
    let target = Target::parse(&format!("oci://{host}/plugins/private")).unwrap();

    // Anonymous and wrong credentials are refused by the registry, and said so.
    let e =
        RegistryClient::new(client(), plain(), None).push(&target, &echo, &plugin_toml).await.unwrap_err();
    assert_eq!(e.code(), "registry_unauthorized", "{e}");
    let mut settings = plain();
    let basic = |password: &str| delegate_oci::Credentials::Basic {
        username: USERNAME.into(),
        password: delegate_secret::Secret::new(password),
    };
    settings.credentials.insert(host.clone(), basic("not-the-password"));
    let e = RegistryClient::new(client(), settings.clone(), None)
        .push(&target, &echo, &plugin_toml)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "registry_unauthorized", "{e}");
    settings.credentials.insert(host.clone(), basic(PASSWORD));
    let reference =
        RegistryClient::new(client(), settings, None).push(&target, &echo, &plugin_toml).await.unwrap();

    // The host pulls with the password from a file reference.
    let stack = DevStack::start(&DevStackOptions::ephemeral(&dir)).await.unwrap();
    let component = Path::new(delegate_artifacts::ECHO);
    let password_file = dir.join("registry-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let base = stack
        .delegate_config(
            "127.0.0.1:0".parse().unwrap(),
            component,
            &dir.join("audit.jsonl").display().to_string(),
        )
        .replace(
            &format!("component = {:?}\n", component.display().to_string()),
            &format!("source = \"{reference}\"\n"),
        )
        + &format!("\n[oci]\nplain_http = [\"{host}\"]\n");
    let with_password = |file: &Path| {
        format!(
            "{base}\n[oci.registries.\"{host}\"]\nusername = \"{USERNAME}\"\npassword = {{ file = {:?} }}\n",
            file.display().to_string()
        )
    };
    let start = |toml: String| {
        let dir = dir.clone();
        async move {
            let config = Config::from_toml(&toml, &dir).unwrap();
            Host::start_with(&config, None, delegate_devstack::aws_credentials()).await
        }
    };
    let e = start(base.clone()).await.err().expect("no credentials: the pull is refused");
    assert!(e.message.contains("refused access"), "{}", e.message);
    let wrong = dir.join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let e = start(with_password(&wrong)).await.err().expect("wrong credentials: the pull is refused");
    assert!(e.message.contains("refused access") && !e.message.contains("not-the-password"), "{}", e.message);

    let served = start(with_password(&password_file)).await.unwrap();
    assert_eq!(served.plugin().unwrap().digest(), sha256_digest(&echo));
    let token = stack.token_a(ids::JANE, Duration::from_secs(900)).unwrap();
    let resp = client()
        .post(format!("http://{}/invocations", served.addr))
        .bearer_auth(token.expose())
        .header("accept", "application/json")
        .json(&json!({ "prompt": "hello" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let result: serde_json::Value = serde_json::from_str(body["result"].as_str().unwrap()).unwrap();
    assert_eq!(result["tag"], "1.0.0", "{body}");
    served.shutdown(Duration::from_secs(5)).await.unwrap();
}
