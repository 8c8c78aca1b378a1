//! The load bench's side-by-side baseline, the article's Python agent
//! (`host/cli/benches/python-stack/main.py`: Strands, BedrockModel, BedrockAgentCoreApp under
//! uvicorn), does the same work as delegate's agent against the same devstack: Jane sees
//! exactly her five incidents, never the HR or Security ones; a call without a valid Token A
//! (no token, another audience, no `access_as_user` scope) is refused before the agent runs;
//! Token B is exchanged once and then reused. Without this the bench's Python figures could
//! come from an agent that does less (the article's listing reads one page and shows Jane four
//! incidents) or nothing at all.
//!
//! Where the interpreter comes from: `DELEGATE_PYTHON_STACK=<venv>/bin/python` (set by
//! `.ci/run` after `make python-stack`); without it, `target/python-stack-venv/bin/python`.
//! When the variable is set the interpreter must exist (the test fails, never skips); when it
//! is not set and the venv is missing, the test passes after printing that it skipped.
#![allow(clippy::print_stderr)] // the skip note is reported, not asserted

use crate::jane::numbers_in;
use delegate_devstack::{DevStack, DevStackOptions, idp_defaults as ids, seed};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Names the Python interpreter of the venv with the pinned requirements.
const ENV: &str = "DELEGATE_PYTHON_STACK";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The interpreter, or `None` (after saying why) when the venv is not there and not required.
fn interpreter() -> Option<PathBuf> {
    let (python, required) = match std::env::var_os(ENV).filter(|v| !v.is_empty()) {
        Some(p) => (workspace().join(p), true),
        None => (workspace().join("target/python-stack-venv/bin/python"), false),
    };
    if !python.is_file() {
        assert!(!required, "{ENV} names {}, which does not exist: run `make python-stack`", python.display());
        eprintln!(
            "skipped: the Python agent's venv is missing ({}); run `make python-stack` \
             (CI sets {ENV} and fails instead of skipping)",
            python.display()
        );
        return None;
    }
    Some(python)
}

/// Kills the agent when the test ends, passed or not. The test runs uvicorn with one worker,
/// which serves in the started process itself, so nothing outlives the kill.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Jane's request with `token`; (status, the streamed text).
async fn ask(http: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = http.post(url).json(&serde_json::json!({"prompt": "Show me 5 incidents assigned to me"}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    let text = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    (status, if status == 200 { text } else { body })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_baseline_shows_jane_her_five_incidents_and_refuses_a_missing_token() {
    let Some(python) = interpreter() else { return };
    let dir = std::env::temp_dir().join(format!("delegate-e2e-python-stack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let options = DevStackOptions { delta_delay: Duration::ZERO, ..DevStackOptions::ephemeral(&dir) };
    let stack = DevStack::start(&options).await.unwrap();
    stack.bedrock.set_delay(Duration::ZERO);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = dir.join("python.log");
    let out = std::fs::File::create(&log).unwrap();
    let app_dir = workspace().join("host/cli/benches/python-stack");
    let mut cmd = stack.python_agent_command(&python, &app_dir, 1, port);
    let child = cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap();
    let mut agent = Agent(child);
    let http = delegate_e2e::client();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/ping")).send().await
            && let Ok(v) = r.json::<serde_json::Value>().await
            && v["status"] == "Healthy"
        {
            break;
        }
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        assert!(agent.0.try_wait().unwrap().is_none(), "the Python agent exited:\n{}", log_text());
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the Python agent is not healthy:\n{}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("{base}/invocations");

    // No Token A, and one for another audience: refused before the agent runs.
    let exchanges = || stack.idp.idp().grant_calls("urn:ietf:params:oauth:grant-type:jwt-bearer");
    let (status, _) = ask(&http, &url, None).await;
    assert_eq!(status, 401);
    let idp = stack.idp.idp();
    let ten_minutes = Duration::from_secs(600);
    let (jane, agent_app) = (ids::JANE, ids::AGENT_APP_ID);
    let other_audience =
        idp.mint_access_token(jane, agent_app, ids::CONNECTOR_APP_ID, &[ids::AGENT_SCOPE], ten_minutes);
    let other_scope = idp.mint_access_token(jane, agent_app, agent_app, &["User.Read"], ten_minutes);
    for wrong in [other_audience.unwrap(), other_scope.unwrap()] {
        let (status, _) = ask(&http, &url, Some(wrong.expose())).await;
        assert_eq!(status, 401);
    }
    assert_eq!(exchanges(), 0, "no exchange for a refused call");

    // Jane, twice: exactly her five, never the restricted rows; one OBO exchange.
    let token = stack.token_a(ids::JANE, Duration::from_secs(600)).unwrap();
    for _ in 0..2 {
        let (status, text) = ask(&http, &url, Some(token.expose())).await;
        assert_eq!(status, 200, "{text}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        let mut expected: Vec<String> = seed::JANE_INCIDENTS.iter().map(|i| i.number.to_owned()).collect();
        expected.sort();
        assert_eq!(numbers_in(&text), expected, "{text}");
        for hidden in [seed::HR_INCIDENT.number, seed::SECURITY_INCIDENT.number] {
            assert!(!text.contains(hidden), "{text}");
        }
    }
    assert_eq!(exchanges(), 1, "Token B is reused for the same Token A");
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
