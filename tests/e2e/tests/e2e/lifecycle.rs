//! Plugin lifecycle through the real host and its admin API: versions deployed, rolled back
//! and removed at run time, under load, with every bad deploy refused while the active
//! version keeps serving.

use delegate_app::Host;
use delegate_config::Config;
use delegate_devstack::{DevStack, DevStackOptions, idp_defaults as ids};
use delegate_e2e::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub(crate) const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789abcdef";

pub(crate) struct Fleet {
    pub(crate) stack: DevStack,
    _host: Host,
    pub(crate) url: String,
    pub(crate) admin: String,
    dir: PathBuf,
    pub(crate) audit: PathBuf,
}

fn scratch_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "delegate-e2e-lifecycle-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The Jane setup plus an admin listener and a second plugin slot, `echo`, whose operator
/// grant allows GET on one ServiceNow path and at most 2 s of CPU.
pub(crate) async fn fleet(extra_engine: &str) -> Fleet {
    let dir = scratch_dir();
    let stack = DevStack::start(&DevStackOptions::ephemeral(&dir)).await.unwrap();
    let audit = dir.join("audit.jsonl");
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    let sn_port = stack.servicenow_url.rsplit(':').next().unwrap().to_owned();
    let toml = stack
        .delegate_config(
            "127.0.0.1:0".parse().unwrap(),
            Path::new(delegate_artifacts::SERVICENOW_AGENT),
            &audit.display().to_string(),
        )
        .replace("[server]\n", &format!("[engine]\n{extra_engine}\n\n[server]\nmax_concurrency = 64\n"))
        .replace("name = \"servicenow-agent\"\n", "name = \"servicenow-agent\"\ndefault = true\n")
        + &format!(
            r#"
[admin]
listen = "127.0.0.1:0"
token_file = {token_file:?}
max_component_mib = 1

[[plugin]]
name = "echo"
limits = {{ cpu_ms = 2000 }}

[[plugin.egress.rules]]
methods = ["GET"]
host = "localhost"
port = {sn_port}
path_prefix = "/api/now/table/incident"
"#,
            token_file = token_file.display().to_string(),
        );
    let config = Config::from_toml(&toml, &dir).unwrap();
    let host = Host::start_with(&config, None, delegate_devstack::aws_credentials()).await.unwrap();
    let url = format!("http://{}", host.addr);
    let admin = format!("http://{}", host.admin_addr.unwrap());
    Fleet { stack, _host: host, url, admin, dir, audit }
}

/// The echo component under another digest (a new build of the same code).
fn echo_build(label: &str) -> Vec<u8> {
    rebuilt(&std::fs::read(delegate_artifacts::ECHO).unwrap(), label)
}

fn manifest(name: &str, version: &str, bytes: &[u8], extra: &str) -> String {
    format!(
        "name = {name:?}\nversion = {version:?}\ndigest = {:?}\n{extra}\n[settings]\ntag = {version:?}\n",
        sha256_digest(bytes)
    )
}

impl Fleet {
    pub(crate) fn token_a(&self, user: &str) -> String {
        self.stack.token_a(user, Duration::from_secs(900)).unwrap().expose().to_owned()
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = client().request(method, format!("{}{path}", self.admin)).bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    async fn deploy(&self, name: &str, manifest: &str, component: &[u8]) -> (u16, serde_json::Value) {
        use base64::Engine as _;
        let body = json!({
            "manifest": manifest,
            "component": base64::engine::general_purpose::STANDARD.encode(component),
        });
        self.admin(reqwest::Method::PUT, &format!("/admin/plugins/{name}"), Some(body)).await
    }

    async fn active(&self, name: &str) -> serde_json::Value {
        let (status, list) = self.admin(reqwest::Method::GET, "/admin/plugins", None).await;
        assert_eq!(status, 200, "{list}");
        list["plugins"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["active"].clone()
    }

    /// One JSON-mode invocation of `plugin`: (status, version header, digest from the plugin
    /// header, the echo result's `tag`).
    async fn echo(&self, token: &str, plugin: Option<&str>) -> Answer {
        let mut req = client()
            .post(format!("{}/invocations", self.url))
            .bearer_auth(token)
            .header("accept", "application/json")
            .json(&json!({ "prompt": "hello" }));
        if let Some(p) = plugin {
            req = req.header("x-delegate-plugin", p);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let version = header("x-delegate-plugin-version");
        let digest =
            header("x-delegate-plugin").split_once('@').map(|(_, d)| d.to_owned()).unwrap_or_default();
        let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        let result: serde_json::Value = body["result"]
            .as_str()
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or(serde_json::Value::Null);
        Answer { status, version, digest, tag: result["tag"].as_str().unwrap_or("").to_owned(), body }
    }
}

#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    version: String,
    digest: String,
    tag: String,
    body: serde_json::Value,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_and_two_rollbacks_under_load_drop_nothing() {
    let fleet = Arc::new(fleet("").await);
    let v1 = echo_build("v1");
    let v2 = echo_build("v2");
    let (s, r) = fleet.deploy("echo", &manifest("echo", "1.0.0", &v1, ""), &v1).await;
    assert_eq!(s, 200, "{r}");
    let versions = [("1.0.0", sha256_digest(&v1)), ("2.0.0", sha256_digest(&v2))];

    // 32 clients, each sending invocations back to back for the whole run.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let token = fleet.token_a(ids::JANE);
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (fleet, stop, token) = (Arc::clone(&fleet), Arc::clone(&stop), token.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let answer = fleet.echo(&token, Some("echo")).await;
                seen.push((sent, Instant::now(), answer));
            }
            seen
        }));
    }

    // Admin operations, each recorded as (sent, returned, version it activates).
    let mut ops: Vec<(Instant, Instant, &str)> = Vec::new();
    let pause = Duration::from_millis(2_500);
    tokio::time::sleep(pause).await;
    let sent = Instant::now();
    let (s, r) = fleet.deploy("echo", &manifest("echo", "2.0.0", &v2, ""), &v2).await;
    ops.push((sent, Instant::now(), "2.0.0"));
    assert_eq!((s, r["active"]["version"].as_str()), (200, Some("2.0.0")), "{r}");
    for to in ["1.0.0", "2.0.0"] {
        tokio::time::sleep(pause).await;
        let sent = Instant::now();
        let (s, r) = fleet.admin(reqwest::Method::POST, "/admin/plugins/echo/rollback", None).await;
        ops.push((sent, Instant::now(), to));
        assert_eq!((s, r["active"]["version"].as_str()), (200, Some(to)), "{r}");
    }
    tokio::time::sleep(pause).await;
    stop.store(true, Ordering::Relaxed);

    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await.unwrap());
    }
    let failed: Vec<_> = all.iter().filter(|(_, _, a)| a.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failed.len(),
        all.len(),
        failed.first()
    );
    for (sent, done, a) in &all {
        // Exactly one version: the version header, the digest and the settings the guest saw
        // all belong to the same deployment.
        let (_, d) = versions.iter().find(|(v, _)| *v == a.version).unwrap_or_else(|| panic!("{a:?}"));
        assert_eq!((&a.digest, a.tag.as_str()), (d, a.version.as_str()), "{a:?}");
        // The switch is visible as soon as the admin call returns: a request sent after
        // operation k returned and answered before operation k+1 was sent sees k's version.
        for (k, (_, returned, version)) in ops.iter().enumerate() {
            let next_sent = ops.get(k + 1).map(|o| o.0);
            if sent > returned && next_sent.is_none_or(|n| *done < n) {
                assert_eq!(a.version, *version, "request sent after op {k} returned");
            }
        }
        // And a request answered before the first operation was sent saw 1.0.0.
        if *done < ops[0].0 {
            assert_eq!(a.version, "1.0.0");
        }
    }
    let per_version = |v: &str| all.iter().filter(|(_, _, a)| a.version == v).count();
    assert!(per_version("1.0.0") > 0 && per_version("2.0.0") > 0);
    let swaps: Vec<_> = ops.iter().map(|(s, r, v)| format!("{v}: {:?}", *r - *s)).collect();
    #[allow(clippy::print_stderr)]
    let () = eprintln!("lifecycle under load: {} requests, 0 failed; admin call times {swaps:?}", all.len());

    // The audit record of each invocation names the version that served it.
    let lines = std::fs::read_to_string(&fleet.audit).unwrap_or_default();
    let versions_audited: std::collections::BTreeSet<String> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["plugin"] == "echo" && v["kind"] == "invocation")
        .map(|v| v["plugin_version"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(versions_audited, ["1.0.0".to_owned(), "2.0.0".to_owned()].into());
}

/// A component whose only content is an import delegate does not provide.
fn component_importing_unknown_interface() -> Vec<u8> {
    use wasm_encoder::{
        Component, ComponentImportSection, ComponentTypeRef, ComponentTypeSection, InstanceType,
    };
    let mut c = Component::new();
    let mut types = ComponentTypeSection::new();
    types.instance(&InstanceType::new());
    c.section(&types);
    let mut imports = ComponentImportSection::new();
    imports.import("acme:secrets/vault@1.0.0", ComponentTypeRef::Instance(0));
    c.section(&imports);
    c.finish()
}

/// A component that embeds a core module which does not validate (a function declared to
/// return an i32 that returns nothing).
fn component_that_does_not_compile() -> Vec<u8> {
    use wasm_encoder::{CodeSection, Function, FunctionSection, Module, ModuleSection, TypeSection, ValType};
    let mut m = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I32]);
    m.section(&types);
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    m.section(&funcs);
    let mut code = CodeSection::new();
    let mut f = Function::new([]);
    f.instructions().end();
    code.function(&f);
    m.section(&code);
    let mut c = wasm_encoder::Component::new();
    c.section(&ModuleSection(&m));
    c.finish()
}

/// (what, target plugin, manifest, component, expected status, expected code)
type Case<'a> = (&'a str, &'a str, String, Vec<u8>, u16, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deploys_are_refused_and_the_active_version_keeps_serving() {
    let fleet = fleet("").await;
    let v1 = echo_build("v1");
    let (s, r) = fleet.deploy("echo", &manifest("echo", "1.0.0", &v1, ""), &v1).await;
    assert_eq!(s, 200, "{r}");
    let token = fleet.token_a(ids::JANE);
    let v2 = echo_build("v2");
    let empty_component = wasm_encoder::Component::new().finish();
    let core_module = wasm_encoder::Module::new().finish();
    let wrong_world = component_importing_unknown_interface();
    let broken = component_that_does_not_compile();
    let mut too_large = v2.clone();
    too_large.resize((1 << 20) + 1, 0);
    let granted_rule = format!(
        "[[egress.rules]]\nmethods = [\"GET\"]\nhost = \"localhost\"\nport = {}\npath_prefix = \"/api/now/table/incident/x\"\n",
        fleet.stack.servicenow_url.rsplit(':').next().unwrap()
    );
    // (what, target name, manifest, component, status, code)
    let cases: Vec<Case<'_>> = vec![
        ("digest mismatch", "echo", manifest("echo", "2.0.0", &v1, ""), v2.clone(), 422, "digest_mismatch"),
        (
            "core module",
            "echo",
            manifest("echo", "2.0.0", &core_module, ""),
            core_module.clone(),
            422,
            "not_a_component",
        ),
        (
            "random bytes",
            "echo",
            manifest("echo", "2.0.0", b"not wasm", ""),
            b"not wasm".to_vec(),
            422,
            "not_a_component",
        ),
        (
            "unknown import",
            "echo",
            manifest("echo", "2.0.0", &wrong_world, ""),
            wrong_world.clone(),
            422,
            "world_mismatch",
        ),
        (
            "no invoke export",
            "echo",
            manifest("echo", "2.0.0", &empty_component, ""),
            empty_component.clone(),
            422,
            "world_mismatch",
        ),
        (
            "does not compile",
            "echo",
            manifest("echo", "2.0.0", &broken, ""),
            broken.clone(),
            422,
            "compile_error",
        ),
        (
            "too large",
            "echo",
            manifest("echo", "2.0.0", &too_large, ""),
            too_large.clone(),
            413,
            "component_too_large",
        ),
        (
            "unknown manifest key",
            "echo",
            manifest("echo", "2.0.0", &v2, "colour = \"red\"\n"),
            v2.clone(),
            400,
            "invalid_manifest",
        ),
        (
            "manifest for another plugin",
            "echo",
            manifest("servicenow-agent", "2.0.0", &v2, ""),
            v2.clone(),
            400,
            "name_mismatch",
        ),
        (
            "more CPU than granted",
            "echo",
            manifest("echo", "2.0.0", &v2, "[limits]\ncpu_ms = 5000\n"),
            v2.clone(),
            403,
            "not_granted",
        ),
        (
            "egress not granted",
            "echo",
            manifest("echo", "2.0.0", &v2, "[[egress.rules]]\nmethods = [\"GET\"]\nhost = \"example.com\"\n"),
            v2.clone(),
            403,
            "not_granted",
        ),
        // Asking for less memory than the component's initial memory: it compiles and fits
        // the world, but no invocation could ever start.
        (
            "cannot be instantiated",
            "echo",
            manifest("echo", "2.0.0", &v2, "[limits]\nmemory_mib = 1\n"),
            v2.clone(),
            422,
            "not_instantiable",
        ),
        (
            "unconfigured plugin",
            "stranger",
            manifest("stranger", "2.0.0", &v2, ""),
            v2.clone(),
            404,
            "plugin_not_found",
        ),
    ];
    for (what, target, manifest, component, status, code) in cases {
        let (s, r) = fleet.deploy(target, &manifest, &component).await;
        assert_eq!((s, r["error_type"].as_str()), (status, Some(code)), "{what}: {r}");
        assert!(r["error"].as_str().is_some_and(|m| !m.is_empty()), "{what}: a clear message: {r}");
        let active = fleet.active("echo").await;
        assert_eq!(active["version"], "1.0.0", "{what}: the active version is unchanged");
        let a = fleet.echo(&token, Some("echo")).await;
        assert_eq!((a.status, a.version.as_str(), a.tag.as_str()), (200, "1.0.0", "1.0.0"), "{what}: {a:?}");
    }
    // A malformed body is refused too.
    let (s, r) =
        fleet.admin(reqwest::Method::PUT, "/admin/plugins/echo", Some(json!({"manifest": "x"}))).await;
    assert_eq!(s, 400, "{r}");
    let (s, r) = fleet
        .admin(
            reqwest::Method::PUT,
            "/admin/plugins/echo",
            Some(json!({"manifest": "x", "component": "%%%"})),
        )
        .await;
    assert_eq!((s, r["error_type"].as_str()), (400, Some("bad_request")), "{r}");
    // A manifest within the grant is accepted: the narrower path and less CPU.
    let ok = manifest("echo", "2.0.0", &v2, &format!("[limits]\ncpu_ms = 500\n\n{granted_rule}"));
    let (s, r) = fleet.deploy("echo", &ok, &v2).await;
    assert_eq!((s, r["active"]["version"].as_str()), (200, Some("2.0.0")), "{r}");
    // Deploying the active version again changes nothing (the previous version stays 1.0.0).
    let (s, r) = fleet.deploy("echo", &ok, &v2).await;
    assert_eq!((s, r["unchanged"].as_bool()), (200, Some(true)), "{r}");
    let (_, list) = fleet.admin(reqwest::Method::GET, "/admin/plugins", None).await;
    let echo = list["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "echo").unwrap().clone();
    assert_eq!(
        (echo["active"]["version"].as_str(), echo["previous"]["version"].as_str()),
        (Some("2.0.0"), Some("1.0.0"))
    );
    drop(fleet.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_its_token_and_is_not_on_the_public_listener() {
    let fleet = fleet("").await;
    let c = client();
    for (what, auth) in [
        ("no token", None),
        ("wrong token", Some(format!("Bearer {ADMIN_TOKEN}x"))),
        ("prefix of the token", Some(format!("Bearer {}", &ADMIN_TOKEN[..10]))),
        ("wrong scheme", Some(format!("Basic {ADMIN_TOKEN}"))),
        ("a user's Token A", Some(format!("Bearer {}", fleet.token_a(ids::JANE)))),
    ] {
        for (method, path) in [
            (reqwest::Method::GET, "/admin/plugins"),
            (reqwest::Method::POST, "/admin/plugins/echo/rollback"),
            (reqwest::Method::DELETE, "/admin/plugins/echo"),
            (reqwest::Method::PUT, "/admin/plugins/echo"),
            (reqwest::Method::GET, "/no-such-route"),
        ] {
            let mut req = c.request(method.clone(), format!("{}{path}", fleet.admin));
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 401, "{what} {method} {path}");
            assert!(resp.headers().contains_key("www-authenticate"), "{what} {method} {path}");
        }
    }
    // The public listener does not serve the admin API, with or without the token.
    for auth in [None, Some(format!("Bearer {ADMIN_TOKEN}"))] {
        let mut req = c.get(format!("{}/admin/plugins", fleet.url));
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        assert_eq!(req.send().await.unwrap().status().as_u16(), 404);
    }
    let (s, _) = fleet.admin(reqwest::Method::GET, "/admin/plugins", None).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_served_side_by_side_and_selected_by_header() {
    let fleet = fleet("").await;
    let token = fleet.token_a(ids::JANE);
    // The echo slot is empty until something is deployed to it.
    let a = fleet.echo(&token, Some("echo")).await;
    assert_eq!((a.status, a.body["error_type"].as_str()), (404, Some("plugin_not_found")), "{a:?}");
    let v1 = echo_build("v1");
    assert_eq!(fleet.deploy("echo", &manifest("echo", "1.0.0", &v1, ""), &v1).await.0, 200);

    let a = fleet.echo(&token, Some("echo")).await;
    assert_eq!((a.status, a.version.as_str(), a.digest.clone()), (200, "1.0.0", sha256_digest(&v1)), "{a:?}");
    // The AgentCore-forwardable header selects the same way.
    let resp = client()
        .post(format!("{}/invocations", fleet.url))
        .bearer_auth(&token)
        .header("accept", "application/json")
        .header("x-amzn-bedrock-agentcore-runtime-custom-delegate-plugin", "echo")
        .json(&json!({ "prompt": "hi" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-delegate-plugin-version"], "1.0.0");
    // Without a header the default plugin answers (the ServiceNow agent, configured without
    // a manifest).
    let resp = client()
        .post(format!("{}/invocations", fleet.url))
        .bearer_auth(&token)
        .json(&json!({ "prompt": "Show me 5 incidents assigned to me" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-delegate-plugin-version"], delegate_app::UNVERSIONED);
    assert!(resp.headers()["x-delegate-plugin"].to_str().unwrap().starts_with("servicenow-agent@sha256:"));
    let seen = collect(resp).await;
    assert_eq!(seen.status, 200);
    assert!(seen.text.contains("INC"), "{seen:?}");

    for (value, status, code) in [
        ("stranger", 404, "plugin_not_found"),
        ("Echo", 400, "invalid_plugin_name"),
        ("echo,servicenow-agent", 400, "invalid_plugin_name"),
    ] {
        let a = fleet.echo(&token, Some(value)).await;
        assert_eq!((a.status, a.body["error_type"].as_str()), (status, Some(code)), "{value}");
    }
    // Two different names in the two headers are refused.
    let resp = client()
        .post(format!("{}/invocations", fleet.url))
        .bearer_auth(&token)
        .header("x-delegate-plugin", "echo")
        .header("x-amzn-bedrock-agentcore-runtime-custom-delegate-plugin", "servicenow-agent")
        .json(&json!({ "prompt": "hi" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // Authorization still comes first: an unauthenticated request naming a plugin is a 401.
    assert_eq!(fleet.echo("not-a-token", Some("stranger")).await.status, 401);

    // Rollback needs a previous version; the default plugin cannot be removed; echo can.
    let (s, r) = fleet.admin(reqwest::Method::POST, "/admin/plugins/echo/rollback", None).await;
    assert_eq!((s, r["error_type"].as_str()), (409, Some("no_previous_version")), "{r}");
    let (s, r) = fleet.admin(reqwest::Method::DELETE, "/admin/plugins/servicenow-agent", None).await;
    assert_eq!((s, r["error_type"].as_str()), (409, Some("default_plugin")), "{r}");
    let (s, r) = fleet.admin(reqwest::Method::DELETE, "/admin/plugins/echo", None).await;
    assert_eq!((s, r["removed"]["version"].as_str()), (200, Some("1.0.0")), "{r}");
    assert_eq!(fleet.echo(&token, Some("echo")).await.status, 404);
    let (s, r) = fleet.admin(reqwest::Method::DELETE, "/admin/plugins/echo", None).await;
    assert_eq!((s, r["error_type"].as_str()), (409, Some("not_deployed")), "{r}");
    let (s, _) = fleet.admin(reqwest::Method::POST, "/admin/plugins/stranger/rollback", None).await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_versions_are_cached_on_disk_and_a_corrupt_entry_is_recompiled() {
    let cache = scratch_dir().join("cache");
    let fleet = fleet(&format!("cache_dir = {:?}", cache.display().to_string())).await;
    let token = fleet.token_a(ids::JANE);
    let (v1, v2) = (echo_build("v1"), echo_build("v2"));
    let m1 = manifest("echo", "1.0.0", &v1, "");
    let (_, r) = fleet.deploy("echo", &m1, &v1).await;
    assert_eq!(r["active"]["from_cache"], false, "{r}");
    // An upload has no OCI reference to show.
    assert!(r["active"]["source"].is_null(), "{r}");
    let (_, r) = fleet.deploy("echo", &manifest("echo", "2.0.0", &v2, ""), &v2).await;
    assert_eq!(r["active"]["from_cache"], false, "{r}");
    // v1 again: compiled before, so loaded from the cache (and it runs).
    let (_, r) = fleet.deploy("echo", &m1, &v1).await;
    assert_eq!(r["active"]["from_cache"], true, "{r}");
    assert_eq!(fleet.echo(&token, Some("echo")).await.tag, "1.0.0");
    // Corrupt every entry: the next deploy of v2 must miss, recompile, and still run.
    let mut entries = 0;
    for entry in std::fs::read_dir(&cache).unwrap() {
        let path = entry.unwrap().path();
        // Precompiled artifacts only: the directory also holds the OCI blob cache (`oci/`).
        if path.extension().is_none_or(|e| e != "cwasm") {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        entries += 1;
    }
    assert!(entries >= 3, "one entry per compiled component (two echo builds and the ServiceNow agent)");
    let (_, r) = fleet.deploy("echo", &manifest("echo", "2.0.0", &v2, ""), &v2).await;
    assert_eq!(r["active"]["from_cache"], false, "{r}");
    assert_eq!(fleet.echo(&token, Some("echo")).await.tag, "2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_directory_other_users_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let cache = scratch_dir().join("open-cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let dir = scratch_dir();
    let stack = DevStack::start(&DevStackOptions::ephemeral(&dir)).await.unwrap();
    let toml = stack
        .delegate_config("127.0.0.1:0".parse().unwrap(), Path::new(delegate_artifacts::ECHO), "stdout")
        .replace(
            "[server]\n",
            &format!("[engine]\ncache_dir = {:?}\n\n[server]\n", cache.display().to_string()),
        );
    let config = Config::from_toml(&toml, &dir).unwrap();
    let err = Host::start_with(&config, None, delegate_devstack::aws_credentials()).await.err().unwrap();
    assert!(err.message.contains("writable by other users"), "{}", err.message);
}
