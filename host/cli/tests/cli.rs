//! The `delegate` binary as a person runs it: exit codes, one-line errors, plugin checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, missing_docs)]

use std::process::{Command, Output};

fn delegate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_delegate")).args(args).env("DELEGATE_LOG", "warn").output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_temp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("delegate-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("delegate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const AUTH: &str = r#"
[auth]
discovery_url = "https://127.0.0.1:1/t/v2.0/.well-known/openid-configuration"
allowed_audiences = ["api"]
allowed_clients = ["app"]
"#;

#[test]
fn version_is_printed() {
    let o = delegate(&["--version"]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("delegate {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_config_is_one_line_naming_the_key_and_exit_2() {
    let plugin = delegate_artifacts::ECHO;
    let cases = [
        (
            "typo",
            format!("[server]\nlisten = \"127.0.0.1:0\"\nmax_conncurrency = 2\n{AUTH}"),
            "unknown field `max_conncurrency`",
        ),
        (
            "range",
            format!("[limits]\ncpu_ms = 0\n{AUTH}[[plugin]]\nname = \"echo\"\ncomponent = \"{plugin}\"\n"),
            "limits.cpu_ms: must be between",
        ),
        (
            "noauth",
            format!("[[plugin]]\nname = \"echo\"\ncomponent = \"{plugin}\"\n"),
            "auth: an [auth] section is required",
        ),
        (
            "missing",
            format!("{AUTH}[[plugin]]\nname = \"echo\"\ncomponent = \"/nope.wasm\"\n"),
            "plugin[0].component: no such file",
        ),
    ];
    for (name, text, expected) in cases {
        let path = write_temp(name, &text);
        for args in [["serve", "--config"], ["config", "check"]] {
            let o = delegate(&[args[0], args[1], path.to_str().unwrap()]);
            assert_eq!(o.status.code(), Some(2), "{name}: {}", stderr(&o));
            let err = stderr(&o);
            assert_eq!(err.lines().count(), 1, "{name}: not one line: {err}");
            assert!(err.contains(expected), "{name}: {err}");
            assert!(err.contains(path.to_str().unwrap()), "{name}: file not named: {err}");
        }
    }
    let o = delegate(&["serve", "--config", "/does/not/exist.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read config file /does/not/exist.toml"));
}

#[test]
fn good_config_check_prints_what_it_resolved() {
    let plugin = delegate_artifacts::ECHO;
    let path = write_temp("good", &format!("{AUTH}[[plugin]]\nname = \"echo\"\ncomponent = \"{plugin}\"\n"));
    let o = delegate(&["config", "check", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("name: \"echo\""), "{out}");
    assert!(out.contains("max_concurrency: 32"), "{out}");
}

#[test]
fn plugin_check_lists_imports_and_exports() {
    let o = delegate(&["plugin", "check", delegate_artifacts::ECHO]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("fits delegate:agent@0.1.0"), "{out}");
    assert!(out.contains("digest:  sha256:"), "{out}");
    assert!(out.contains("delegate:agent/output@0.1.0"), "{out}");
    assert!(out.lines().any(|l| l.trim() == "invoke"), "{out}");
}

#[test]
fn plugin_check_refuses_what_is_not_a_plugin() {
    // Not wasm at all.
    let o = delegate(&["plugin", "check", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a wasm component"), "{}", stderr(&o));
    // A core module, not a component.
    let dir = std::env::temp_dir().join(format!("delegate-cli-{}-core", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let o = delegate(&["plugin", "check", core.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    // Missing file: usage error.
    let o = delegate(&["plugin", "check", "/nope.wasm"]);
    assert_eq!(o.status.code(), Some(2));
}

/// A `delegate serve` child with the real authorizer against a devstack IdP (kept alive with
/// it), serving `plugin` from `component`; `server` and `tables` add TOML to `[server]` and
/// after it. Returns once `/ping` answers, with Jane's Token A.
struct Served {
    _idp: delegate_devstack_idp::IdpServer,
    child: std::process::Child,
    base: String,
    token: String,
}

async fn serve_plugin(
    tag: &str,
    plugin: &str,
    component: &str,
    server: &str,
    tables: &str,
    log: &str,
) -> Served {
    use delegate_devstack_idp::{IdpConfig, IdpServer, defaults};
    use std::time::Duration;
    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("delegate-cli-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), idp.ca_pem()).unwrap();
    let port = free_port();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n{server}{tables}[outbound]\nca_files = [\"ca.pem\"]\n[auth]\ndiscovery_url = \"{}\"\nallowed_audiences = [\"{app}\"]\nallowed_clients = [\"{app}\"]\nrequired_scopes = [\"{scope}\"]\n[[plugin]]\nname = \"{plugin}\"\ncomponent = \"{component}\"\n",
        idp.idp().discovery_url(defaults::TENANT_ID),
        app = defaults::AGENT_APP_ID,
        scope = defaults::AGENT_SCOPE,
    );
    let path = dir.join("delegate.toml");
    std::fs::write(&path, config).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_delegate"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .env("DELEGATE_LOG", log)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..200 {
        if http.get(format!("{base}/ping")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "delegate serve did not come up");
    let token = idp
        .idp()
        .mint_access_token(
            defaults::JANE,
            defaults::AGENT_APP_ID,
            defaults::AGENT_APP_ID,
            &[defaults::AGENT_SCOPE],
            Duration::from_secs(600),
        )
        .unwrap()
        .expose()
        .to_owned();
    Served { _idp: idp, child, base, token }
}

/// `delegate serve` with the real authorizer against the devstack IdP; SIGTERM while an
/// invocation streams: the invocation finishes, the process exits 0.
#[test]
fn serve_finishes_in_flight_invocations_on_sigterm() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let Served { _idp, mut child, base, token } =
            serve_plugin("sigterm", "echo", delegate_artifacts::ECHO, "", "", "warn").await;
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut resp = http
            .post(format!("{base}/invocations"))
            .bearer_auth(&token)
            .body(r#"{"prompt":"drain me gently","chunk_size":5,"pause_ms":250}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let first = resp.chunk().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("drain"));
        let killed =
            std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(killed.success());
        let mut rest = Vec::new();
        while let Some(chunk) = resp.chunk().await.unwrap() {
            rest.extend_from_slice(&chunk);
        }
        let rest = String::from_utf8_lossy(&rest);
        assert!(rest.contains("\"status\":\"success\""), "stream cut short: {rest}");
        let status = child.wait().unwrap();
        assert!(status.success(), "exit status {status}");
    });
}

/// Resident memory of a process in KiB (`VmRSS` or `VmHWM` from `/proc/<pid>/status`).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `delegate serve` running the hostile plugin: after a barrage of memory, output and table
/// bombs (60 invocations, 4 at a time), the process's resident memory is back within 48 MiB of
/// what it was after warm-up: pool slots are released, nothing a bomb allocated stays around.
#[test]
fn serve_memory_returns_to_baseline_after_a_hostile_barrage() {
    use std::time::Duration;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let Served { _idp, mut child, base, token } = serve_plugin(
            "rss",
            "hostile",
            delegate_artifacts::HOSTILE,
            "max_concurrency = 4\n",
            "[limits]\nmemory_mib = 32\ntable_elements = 10000\ncpu_ms = 500\nwall_clock_ms = 5000\noutput_kib = 256\n",
            "error",
        )
        .await;
        let pid = child.id();
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
        // One invocation; returns the whole response body (JSON or SSE).
        let run = |mode: &'static str| {
            let (http, url, token) = (http.clone(), format!("{base}/invocations"), token.clone());
            async move {
                let resp = http
                    .post(url)
                    .bearer_auth(token)
                    .body(format!("{{\"mode\":\"{mode}\"}}"))
                    .send()
                    .await
                    .unwrap();
                resp.text().await.unwrap()
            }
        };
        for _ in 0..5 {
            assert!(run("ok").await.contains("\"result\":\"ok\""));
        }
        let baseline = proc_kib(pid, "VmRSS:");
        for (mode, code) in [("memory", "memory_limit"), ("output", "output_limit"), ("table", "memory_limit")] {
            for _ in 0..5 {
                let mut batch = tokio::task::JoinSet::new();
                for _ in 0..4 {
                    batch.spawn(run(mode));
                }
                while let Some(body) = batch.join_next().await {
                    let body = body.unwrap();
                    let tail = &body[body.len().saturating_sub(300)..];
                    assert!(body.contains(&format!("\"error_type\":\"{code}\"")), "{mode}: {tail}");
                }
            }
        }
        let peak = proc_kib(pid, "VmHWM:");
        for _ in 0..5 {
            assert!(run("ok").await.contains("\"result\":\"ok\""));
        }
        let after = proc_kib(pid, "VmRSS:");
        eprintln!(
            "delegate serve RSS: baseline {} MiB, peak {} MiB, after the barrage {} MiB (growth {} KiB)",
            baseline / 1024,
            peak / 1024,
            after / 1024,
            after.saturating_sub(baseline)
        );
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let status = child.wait().unwrap();
        assert!(after <= baseline + 48 * 1024, "RSS grew from {baseline} KiB to {after} KiB");
        assert!(status.success(), "exit status {status}");
    });
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The demo as a person runs it: `delegate demo`, then `delegate invoke --user jane...`.
#[test]
fn demo_then_invoke_shows_jane_her_five_incidents() {
    use std::time::{Duration, Instant};
    let (host, idp, sn, br, admin) = (free_port(), free_port(), free_port(), free_port(), free_port());
    // Its own demo directory (CA, config, admin token), so a demo someone runs by hand, or
    // another test's, cannot swap the files under this one.
    let dir = std::env::temp_dir().join(format!("delegate-cli-{}-demo", std::process::id()));
    let delegate = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_delegate"))
            .args(args)
            .env("DELEGATE_LOG", "warn")
            .env("DELEGATE_DEMO_DIR", &dir)
            .output()
            .unwrap()
    };
    let started = Instant::now();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_delegate"))
        .env("DELEGATE_DEMO_DIR", &dir)
        .args(["demo", "--listen", &format!("127.0.0.1:{host}")])
        .args(["--idp-listen", &format!("127.0.0.1:{idp}")])
        .args(["--servicenow-listen", &format!("127.0.0.1:{sn}")])
        .args(["--bedrock-listen", &format!("127.0.0.1:{br}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .env("DELEGATE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut healthy = None;
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", host)) {
            use std::io::{Read, Write};
            s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            if answer.contains("\"Healthy\"") {
                healthy = Some(started.elapsed());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let healthy = healthy.expect("the demo never answered /ping");
    // Reported, not asserted (timing goals are measured, not tested): the issue's goal is 5 s.
    eprintln!("demo healthy after {healthy:?}");
    let url = format!("http://127.0.0.1:{host}");
    let idp_url = format!("https://127.0.0.1:{idp}");
    let o = delegate(&[
        "invoke",
        "--url",
        &url,
        "--idp",
        &idp_url,
        "--user",
        "jane.smith@company.com",
        "Show me 5 incidents assigned to me",
    ]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", stderr(&o));
    for number in ["INC0012345", "INC0012389", "INC0012401", "INC0012455", "INC0012478"] {
        assert!(out.contains(number), "{number} missing: {out}");
    }
    for hidden in ["INC0012350", "INC0012399"] {
        assert!(!out.contains(hidden), "{hidden} shown: {out}");
    }
    let o = delegate(&["invoke", "--url", &url, "no token"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).trim(), "delegate: HTTP 401 invalid_token: missing or invalid bearer token");

    // The operator's side: list, deploy a new version of the agent, roll it back.
    let token_file = dir.join("admin-token").display().to_string();
    let admin_url = format!("http://127.0.0.1:{admin}");
    let admin_args = ["--admin-url", admin_url.as_str(), "--token-file", token_file.as_str()];
    let o = delegate(&[&["plugin", "list"][..], &admin_args].concat());
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", stderr(&o));
    let version = env!("CARGO_PKG_VERSION");
    assert!(out.contains("servicenow-agent") && out.contains(&format!("{version} (sha256:")), "{out}");
    let manifest = std::fs::read_to_string(dir.join("servicenow-agent.toml")).unwrap();
    let next = dir.join("servicenow-agent-next.toml");
    std::fs::write(&next, manifest.replace(&format!("version = \"{version}\""), "version = \"9.9.9\""))
        .unwrap();
    let next = next.display().to_string();
    let o = delegate(
        &[&["plugin", "deploy", "--name", "servicenow-agent", next.as_str()][..], &admin_args].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("9.9.9"), "{}", String::from_utf8_lossy(&o.stdout));
    let o = delegate(&[
        "invoke",
        "--url",
        &url,
        "--idp",
        &idp_url,
        "--user",
        "jane.smith@company.com",
        "Show me 5 incidents assigned to me",
    ]);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("INC0012478"),
        "{}",
        stderr(&o)
    );
    let o = delegate(&[&["plugin", "rollback", "servicenow-agent"][..], &admin_args].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("{version} (sha256:")));
    let o = delegate(&["plugin", "list", "--admin-url", &admin_url]);
    assert_eq!(o.status.code(), Some(2), "no token: {}", stderr(&o));
    let wrong = dir.join("wrong-token");
    std::fs::write(&wrong, "not-the-admin-token").unwrap();
    let o = delegate(&[
        "plugin",
        "list",
        "--admin-url",
        &admin_url,
        "--token-file",
        &wrong.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("HTTP 401"), "{}", stderr(&o));
    let _ = std::process::Command::new("kill").args(["-INT", &demo.id().to_string()]).status();
    let status = demo.wait().unwrap();
    assert!(status.success(), "demo exit {status}");
}

/// No Docker engine runs in CI, so the Dockerfile is kept correct by checking what matters:
/// multi-stage, a locked `production` (release + LTO) build with the wasm target, a non-root runtime stage that
/// exposes 8080 and runs `delegate serve`.
#[test]
fn dockerfile_is_multi_stage_non_root_and_listens_on_8080() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Dockerfile")).unwrap();
    let lines: Vec<&str> =
        text.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    let stages: Vec<usize> =
        lines.iter().enumerate().filter(|(_, l)| l.starts_with("FROM ")).map(|(i, _)| i).collect();
    assert!(stages.len() >= 2, "not multi-stage");
    let build = &lines[stages[0]..stages[1]];
    let runtime = &lines[*stages.last().unwrap()..];
    assert!(build.iter().any(|l| l.contains("rustup target add wasm32-wasip2")));
    assert!(build.iter().any(|l| l.contains("cargo build --profile production --locked -p delegate")));
    let user = runtime.iter().find(|l| l.starts_with("USER ")).expect("runtime stage sets no USER");
    let name = user.trim_start_matches("USER ").split(':').next().unwrap();
    assert!(name != "root" && name != "0", "runtime stage runs as {name}");
    assert!(runtime.contains(&"EXPOSE 8080"));
    assert!(runtime.iter().any(|l| l.starts_with("ENTRYPOINT") && l.contains("delegate")));
    assert!(runtime.iter().any(|l| l.starts_with("CMD") && l.contains("\"serve\"")));
    // The image's default listener is the config default, which must stay AgentCore's.
    let config = delegate_config::Config::from_toml(
        &format!(
            "[auth]\ndiscovery_url = \"https://idp.example/t/v2.0/.well-known/openid-configuration\"\nallowed_audiences = [\"a\"]\nallowed_clients = [\"c\"]\n[[plugin]]\nname = \"p\"\ncomponent = \"{}\"\n",
            delegate_artifacts::ECHO
        ),
        std::path::Path::new("/"),
    )
    .unwrap();
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
    let ignore =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target"), "the build context would include target/");
}

/// `ENTRYPOINT` and `CMD` of the Dockerfile's runtime stage, in exec (JSON) form.
fn image_command() -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Dockerfile")).unwrap();
    let last = |directive: &str| -> Vec<String> {
        let line = text
            .lines()
            .map(str::trim)
            .rfind(|l| l.starts_with(&format!("{directive} ")))
            .unwrap_or_else(|| panic!("the Dockerfile has no {directive}"));
        let json = line[directive.len()..].trim();
        serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("{directive} is not in exec (JSON) form: {json}: {e}"))
    };
    (last("ENTRYPOINT"), last("CMD"))
}

/// Whether a socket listens on all IPv4 or IPv6 interfaces at `port` (Linux `/proc/net`).
fn listens_on_all_interfaces(port: u16) -> bool {
    let hex = format!(":{port:04X}");
    [("/proc/net/tcp", "00000000"), ("/proc/net/tcp6", "00000000000000000000000000000000")].iter().any(
        |(file, any)| {
            std::fs::read_to_string(file).unwrap_or_default().lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3 && cols[1] == format!("{any}{hex}") && cols[3] == "0A"
            })
        },
    )
}

/// No Docker engine runs here or in CI, so the image is smoke-tested by running the built
/// binary exactly as the image would (the Dockerfile's ENTRYPOINT + CMD, parsed, so a change
/// there changes what runs here), with the config path the CMD names swapped for a temporary
/// file. The config listens on all interfaces as the AgentCore contract requires (a free port
/// instead of 8080); the test checks the socket is bound to 0.0.0.0, then `/ping` and an
/// invocation with a real Token A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_entrypoint_serves_ping_and_an_invocation_on_all_interfaces() {
    use delegate_devstack_idp::{IdpConfig, IdpServer, defaults};
    use std::time::{Duration, Instant};
    let (entrypoint, cmd) = image_command();
    assert_eq!(entrypoint, ["/usr/local/bin/delegate"], "the image runs something else");
    let at = cmd.iter().position(|a| a == "--config").expect("CMD passes no --config");
    let image_config = &cmd[at + 1];
    assert!(image_config.starts_with('/'), "CMD's config path {image_config} is not absolute");
    assert_eq!(cmd[0], "serve");

    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("delegate-cli-{}-image", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), idp.ca_pem()).unwrap();
    let port = free_port();
    let config = dir.join("delegate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"0.0.0.0:{port}\"\n[outbound]\nca_files = [\"ca.pem\"]\n[auth]\ndiscovery_url = \"{}\"\nallowed_audiences = [\"{app}\"]\nallowed_clients = [\"{app}\"]\nrequired_scopes = [\"{scope}\"]\n[[plugin]]\nname = \"echo\"\ncomponent = \"{}\"\n",
            idp.idp().discovery_url(defaults::TENANT_ID),
            delegate_artifacts::ECHO,
            app = defaults::AGENT_APP_ID,
            scope = defaults::AGENT_SCOPE,
        ),
    )
    .unwrap();
    let mut args: Vec<String> = entrypoint[1..].iter().chain(cmd.iter()).cloned().collect();
    let config_arg = entrypoint.len() - 1 + at + 1;
    args[config_arg] = config.display().to_string();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_delegate"))
        .args(&args)
        .env("DELEGATE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let mut ping = None;
    while started.elapsed() < Duration::from_secs(60) && ping.is_none() {
        if let Ok(resp) = http.get(format!("{base}/ping")).send().await {
            ping = Some((resp.status().as_u16(), resp.json::<serde_json::Value>().await.unwrap()));
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (status, body) = ping.expect("the image's command never answered /ping");
    assert_eq!(status, 200);
    assert_eq!(body["status"], "Healthy", "{body}");
    assert!(listens_on_all_interfaces(port), "not listening on 0.0.0.0:{port}");
    let token = idp
        .idp()
        .mint_access_token(
            defaults::JANE,
            defaults::AGENT_APP_ID,
            defaults::AGENT_APP_ID,
            &[defaults::AGENT_SCOPE],
            Duration::from_secs(600),
        )
        .unwrap();
    let resp = http
        .post(format!("{base}/invocations"))
        .bearer_auth(token.expose())
        .header("accept", "application/json")
        .body(r#"{"prompt":"hi from the image"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(answer["response"], "hi from the image", "{answer}");
    let resp = http.post(format!("{base}/invocations")).body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "SIGTERM exit {exit}");
}

/// `delegate demo --agentcore` as a person runs it: Jane's question through the AgentCore
/// front door stand-in (HTTPS, the devstack CA), Token B from the AgentCore Identity stand-in;
/// no token gets the front door's 401 with its `WWW-Authenticate` challenge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_agentcore_answers_jane_through_the_front_door() {
    use std::time::{Duration, Instant};
    let ports: Vec<u16> = (0..7).map(|_| free_port()).collect();
    let [host, idp, sn, br, admin, front, identity] = ports[..] else { unreachable!() };
    // Its own demo directory: the other demo test writes the default one.
    let dir = std::env::temp_dir().join(format!("delegate-cli-{}-demo-agentcore", std::process::id()));
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_delegate"))
        .args(["demo", "--agentcore", "--listen", &addr(host), "--idp-listen", &addr(idp)])
        .args([
            "--servicenow-listen",
            &addr(sn),
            "--bedrock-listen",
            &addr(br),
            "--admin-listen",
            &addr(admin),
        ])
        .args(["--front-door-listen", &addr(front), "--identity-listen", &addr(identity)])
        .env("DELEGATE_LOG", "warn")
        .env("DELEGATE_DEMO_DIR", &dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let arn = delegate_devstack::agentcore::RUNTIME_ARN.replace(':', "%3A").replace('/', "%2F");
    let url = format!("https://localhost:{front}/runtimes/{arn}/invocations?qualifier=DEFAULT");
    let started = Instant::now();
    let mut http = None;
    // Up when the front door answers a tokenless call (its CA file exists by then).
    while started.elapsed() < Duration::from_secs(60) && http.is_none() {
        if let Ok(pem) = std::fs::read(dir.join("devstack-ca.pem")) {
            let client = reqwest::Client::builder()
                .no_proxy()
                .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            if let Ok(resp) = client.post(&url).body("{}").send().await {
                assert_eq!(resp.status(), 401);
                assert_eq!(resp.headers()["x-amzn-errortype"], "UnauthorizedException");
                let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
                assert!(
                    challenge.starts_with("Bearer resource_metadata=\"https://localhost:"),
                    "{challenge}"
                );
                http = Some(client);
                continue;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let http = http.expect("the demo's front door never answered");
    let o = Command::new(env!("CARGO_BIN_EXE_delegate"))
        .args(["token", "--user", "jane.smith@company.com", "--idp", &format!("https://127.0.0.1:{idp}")])
        .env("DELEGATE_DEMO_DIR", &dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let token = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    let resp = http
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"prompt":"Show me 5 incidents assigned to me"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    for number in ["INC0012345", "INC0012389", "INC0012401", "INC0012455", "INC0012478"] {
        assert!(text.contains(number), "{number} missing: {text}");
    }
    for hidden in ["INC0012350", "INC0012399"] {
        assert!(!text.contains(hidden), "{hidden} shown");
    }
    // The container's config is the article's: an agentcore_identity provider, no secret.
    let config = std::fs::read_to_string(dir.join("delegate.toml")).unwrap();
    assert!(config.contains("kind = \"agentcore_identity\"") && config.contains("inbound = \"agentcore\""));
    let _ = std::process::Command::new("kill").args(["-INT", &demo.id().to_string()]).status();
    let status = demo.wait().unwrap();
    assert!(status.success(), "demo exit {status}");
}

/// `delegate demo --chain` as a person runs it: Jane asks host A (the dispatcher), which hands
/// the question to host B (the ServiceNow agent) with a token exchanged for B; she gets her
/// five incidents, and both hosts' audit logs name her under one trace id.
#[test]
fn demo_chain_answers_jane_through_two_hosts() {
    use std::time::{Duration, Instant};
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let [a, b, idp, sn, br, admin] = ports[..] else { unreachable!() };
    let dir = std::env::temp_dir().join(format!("delegate-cli-{}-demo-chain", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_delegate"))
        .args(["demo", "--chain", "--listen", &addr(a), "--chain-b-listen", &addr(b)])
        .args(["--idp-listen", &addr(idp), "--servicenow-listen", &addr(sn), "--bedrock-listen", &addr(br)])
        .args(["--admin-listen", &addr(admin)])
        .env("DELEGATE_LOG", "warn")
        .env("DELEGATE_DEMO_DIR", &dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let healthy = |port: u16| {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            answer.contains("\"Healthy\"")
        })
    };
    while !(healthy(a) && healthy(b)) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the chain demo never answered /ping on both hosts"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = Command::new(env!("CARGO_BIN_EXE_delegate"))
        .args(["invoke", "--url", &format!("http://{}", addr(a)), "--idp", &format!("https://{}", addr(idp))])
        .args(["--user", "jane.smith@company.com", "Show me 5 incidents assigned to me"])
        .env("DELEGATE_LOG", "warn")
        .env("DELEGATE_DEMO_DIR", &dir)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", stderr(&o));
    for number in ["INC0012345", "INC0012389", "INC0012401", "INC0012455", "INC0012478"] {
        assert!(out.contains(number), "{number} missing: {out}");
    }
    for hidden in ["INC0012350", "INC0012399"] {
        assert!(!out.contains(hidden), "{hidden} shown: {out}");
    }
    let _ = std::process::Command::new("kill").args(["-INT", &demo.id().to_string()]).status();
    let status = demo.wait().unwrap();
    assert!(status.success(), "demo exit {status}");
    // Both hosts' invocation records name Jane, and share one trace id.
    let invocation = |file: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let records: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let invocations: Vec<_> = records.into_iter().filter(|r| r["kind"] == "invocation").collect();
        assert_eq!(invocations.len(), 1, "{file}: {text}");
        invocations.into_iter().next().unwrap()
    };
    let (inv_a, inv_b) = (invocation("audit-a.jsonl"), invocation("audit-b.jsonl"));
    assert_eq!(inv_a["caller_username"], "jane.smith@company.com", "{inv_a}");
    assert_eq!(inv_b["caller_username"], "jane.smith@company.com", "{inv_b}");
    assert!(inv_a["trace_id"].as_str().is_some_and(|t| t.len() == 32), "{inv_a}");
    assert_eq!(inv_a["trace_id"], inv_b["trace_id"]);
    assert!(inv_b["chain_depth"].as_u64() > inv_a["chain_depth"].as_u64(), "{inv_a} {inv_b}");
}
/// A real OCI registry for the push test: the CNCF distribution server (Debian package
/// `docker-registry`, as in tests/e2e/src/registry.rs), plain HTTP on a free loopback port,
/// storage under `dir`. Killed on drop.
struct TestRegistry {
    child: std::process::Child,
    host: String,
}

impl TestRegistry {
    fn start(dir: &std::path::Path) -> Self {
        use std::time::{Duration, Instant};
        let binary =
            std::env::var_os("DELEGATE_DOCKER_REGISTRY").unwrap_or_else(|| "/usr/bin/docker-registry".into());
        std::fs::create_dir_all(dir.join("storage")).unwrap();
        // The port is free now; if another process takes it first, the registry exits and we
        // try another.
        for _ in 0..5 {
            let host = format!("127.0.0.1:{}", free_port());
            let config = dir.join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
                    dir.join("storage").display()
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.join("registry.log")).unwrap();
            let child = Command::new(&binary)
                .arg("serve")
                .arg(&config)
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {binary:?} (apt-get install docker-registry): {e}"));
            let mut registry = Self { child, host };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if registry.child.try_wait().unwrap().is_some() {
                    break;
                }
                let up = std::net::TcpStream::connect(&registry.host).is_ok_and(|mut s| {
                    use std::io::{Read, Write};
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let request =
                        format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", registry.host);
                    let mut answer = String::new();
                    s.write_all(request.as_bytes()).is_ok()
                        && s.read_to_string(&mut answer).is_ok()
                        && answer.starts_with("HTTP/1.1 200")
                });
                if up {
                    return registry;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("docker-registry did not start (see {}/registry.log)", dir.display());
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release workflow as an operator runs it: `delegate plugin push` the echo component
/// with its plugin.toml to a real registry, `delegate plugin deploy --oci` the digest
/// reference it printed to a running `delegate serve`, and `delegate plugin list` shows the
/// new version and the reference it came from; the new version answers invocations.
#[test]
fn plugin_push_then_deploy_by_oci_reference() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("delegate-cli-{}-oci-push", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let registry = TestRegistry::start(&dir.join("registry"));
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_delegate"))
            .args(args)
            .env("DELEGATE_LOG", "warn")
            // Reproducible pushes: the same inputs push the same digest.
            .env("SOURCE_DATE_EPOCH", "1764806400")
            .env_remove("DELEGATE_REGISTRY_USERNAME")
            .env_remove("DELEGATE_REGISTRY_PASSWORD")
            .output()
            .unwrap()
    };
    let stdout = |o: &Output| String::from_utf8_lossy(&o.stdout).into_owned();

    // Push: the component and its manifest, by tag; the CLI prints the digest reference.
    let echo = std::fs::read(delegate_artifacts::ECHO).unwrap();
    let manifest = dir.join("echo.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"echo\"\nversion = \"2.0.0\"\ndigest = \"{}\"\ncomponent = {:?}\n\n[settings]\ntag = \"2.0.0\"\n",
            delegate_oci::Digest::of(&echo),
            delegate_artifacts::ECHO
        ),
    )
    .unwrap();
    let target = format!("oci://{}/plugins/echo:2.0.0", registry.host);
    let manifest_arg = manifest.display().to_string();
    let o = run(&["plugin", "push", &manifest_arg, &target]);
    assert_eq!(o.status.code(), Some(1), "plain HTTP needs --plain-http: {}", stdout(&o));
    // Credential files follow the config's reference rules; errors name the flag, not the content.
    let empty = dir.join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let o = run(&[
        "plugin",
        "push",
        &manifest_arg,
        &target,
        "--plain-http",
        "--token-file",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert_eq!(stderr(&o).trim(), "delegate: --token-file: the referenced secret is empty");
    let o = run(&["plugin", "push", &manifest_arg, &target, "--plain-http"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reference = stdout(&o).trim().to_owned();
    let digest = reference
        .strip_prefix(&format!("oci://{}/plugins/echo@sha256:", registry.host))
        .unwrap_or_else(|| panic!("not a digest reference: {reference:?}"));
    assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()), "{reference}");
    // With SOURCE_DATE_EPOCH, pushing the same inputs again gives the same reference.
    let o = run(&["plugin", "push", &manifest_arg, &target, "--plain-http"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), reference);

    // Serve the echo plugin from its local file, with an admin listener that may pull from
    // this registry.
    let admin = free_port();
    let token_file = std::env::temp_dir()
        .join(format!("delegate-cli-{}-oci-serve", std::process::id()))
        .join("admin-token");
    std::fs::create_dir_all(token_file.parent().unwrap()).unwrap();
    std::fs::write(&token_file, "oci-push-test-admin-token-0123456789\n").unwrap();
    let tables = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken_file = \"admin-token\"\n[oci]\nplain_http = [\"{}\"]\n",
        registry.host
    );
    let Served { _idp, mut child, base, token } =
        rt.block_on(serve_plugin("oci-serve", "echo", delegate_artifacts::ECHO, "", &tables, "warn"));
    let admin_url = format!("http://127.0.0.1:{admin}");
    let token_arg = token_file.display().to_string();
    let admin_args = ["--admin-url", admin_url.as_str(), "--token-file", token_arg.as_str()];

    // A tag is refused by the CLI before anything is sent (deploys are by digest only).
    let o = run(&[&["plugin", "deploy", "--name", "echo", "--oci", &target][..], &admin_args].concat());
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stderr(&o).contains("digest"), "{}", stderr(&o));

    let o = run(&[&["plugin", "deploy", "--name", "echo", "--oci", &reference][..], &admin_args].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("echo: 2.0.0 (sha256:"), "{}", stdout(&o));
    let o = run(&[&["plugin", "list"][..], &admin_args].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let list = stdout(&o);
    let row = list.lines().find(|l| l.starts_with("echo ")).unwrap_or_else(|| panic!("no echo row: {list}"));
    assert!(row.contains("2.0.0 (sha256:") && row.ends_with(&reference), "{list}");

    // The deployed version serves: the echo plugin answers with its manifest's `tag`.
    let answer = rt.block_on(async {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let resp = http
            .post(format!("{base}/invocations"))
            .bearer_auth(&token)
            .header("x-delegate-plugin", "echo")
            .body(r#"{"prompt":"hello"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    });
    assert!(answer.contains(r#"\"tag\":\"2.0.0\""#), "{answer}");
    let _ = child.kill();
    let _ = child.wait();
    drop(registry);
}
