//! `delegate invoke`: send a prompt to `/invocations` and render the answer as it streams.

use crate::Failure;
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Awaits `fut`, showing a spinner on stderr meanwhile when `enabled` (stderr is a terminal
/// and nothing has been printed yet).
#[allow(clippy::print_stderr)]
async fn with_spinner<F: Future>(enabled: bool, fut: F) -> F::Output {
    if !enabled {
        return fut.await;
    }
    let mut fut = std::pin::pin!(fut);
    let mut tick = tokio::time::interval(Duration::from_millis(120));
    for frame in ['|', '/', '-', '\\'].into_iter().cycle() {
        tokio::select! {
            out = &mut fut => {
                eprint!("\r\x1b[2K");
                return out;
            }
            _ = tick.tick() => eprint!("\r{frame} waiting for the agent..."),
        }
    }
    fut.await
}

/// What to send.
pub(crate) struct InvokeOptions {
    pub url: String,
    pub token: Option<String>,
    pub user: Option<String>,
    pub idp: String,
    pub session: Option<String>,
    pub json: bool,
    pub prompt: String,
}

pub(crate) fn run(options: &InvokeOptions) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(invoke(options))
}

fn one_line(status: u16, body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => format!(
            "HTTP {status} {}: {}",
            v["error_type"].as_str().unwrap_or("error"),
            v["error"].as_str().unwrap_or("(no message)")
        ),
        Err(_) => format!("HTTP {status}"),
    }
}

#[allow(clippy::print_stdout)]
async fn invoke(options: &InvokeOptions) -> Result<(), Failure> {
    let token = match (&options.token, &options.user) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(user)) => Some(
            crate::demo::fetch_token(user, &options.idp, None, delegate_devstack::idp_defaults::TENANT_ID)
                .await?,
        ),
        (None, None) => None,
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| Failure::failed(format!("http client: {e}")))?;
    let url = format!("{}/invocations", options.url.trim_end_matches('/'));
    let mut req = client
        .post(&url)
        .header("content-type", "application/json")
        .body(serde_json::json!({ "prompt": options.prompt }).to_string());
    if let Some(t) = &token {
        req = req.bearer_auth(t);
    }
    if let Some(s) = &options.session {
        req = req.header("x-amzn-bedrock-agentcore-runtime-session-id", s);
    }
    if options.json {
        req = req.header("accept", "application/json");
    }
    let mut waiting = std::io::stderr().is_terminal();
    let mut resp = with_spinner(waiting, req.send())
        .await
        .map_err(|e| Failure::failed(format!("cannot reach {url}: {e}")))?;
    let status = resp.status().as_u16();
    if status != 200 {
        let body = resp.bytes().await.unwrap_or_default();
        return Err(Failure::failed(one_line(status, &body)));
    }
    let mut out = std::io::stdout();
    if options.json {
        let body = resp.bytes().await.map_err(|e| Failure::failed(format!("reading the answer: {e}")))?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| Failure::failed(format!("answer is not JSON: {e}")))?;
        println!("{}", v["response"].as_str().unwrap_or(""));
        return Ok(());
    }
    let mut buf = String::new();
    loop {
        let chunk = with_spinner(waiting, resp.chunk())
            .await
            .map_err(|e| Failure::failed(format!("stream broke: {e}")))?;
        let Some(chunk) = chunk else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let data: Vec<&str> = event.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            if data.is_empty() {
                continue;
            }
            match serde_json::from_str::<serde_json::Value>(&data.join("\n")) {
                Ok(serde_json::Value::String(text)) => {
                    waiting = false;
                    print!("{text}");
                    let _ = out.flush();
                }
                Ok(v) if v.get("error_type").is_some() => {
                    println!();
                    return Err(Failure::failed(format!(
                        "{}: {}",
                        v["error_type"].as_str().unwrap_or("error"),
                        v["error"].as_str().unwrap_or("")
                    )));
                }
                Ok(_) => {
                    println!();
                    return Ok(());
                }
                Err(_) => return Err(Failure::failed("the stream carried an event that is not JSON")),
            }
        }
    }
    Err(Failure::failed("the stream ended without a final event"))
}
