//! Fault injection through the whole chain (issue 9): for each dependency (IdP discovery and
//! JWKS, the IdP token endpoint, Bedrock, ServiceNow) and each fault (down, slow, 5xx, 429 with
//! `Retry-After`, reset mid-body, malformed JSON, wrong content type), what the caller of
//! `/invocations` sees, within a bound derived from the configured timeouts.
//!
//! One mechanism: every devstack service serves through a `FaultSwitch`
//! (`host/devstack/tls/src/fault.rs`), flipped here at run time. The host is the real one,
//! started from the generated `delegate.toml` with small timeouts (`tuned`). The matrix is
//! documented in docs/deploy.md, "Failure behaviour".

use delegate_app::Host;
use delegate_config::Config;
use delegate_devstack::{
    DevStack, DevStackOptions, Fault, FaultFilter, FaultSwitch, idp_defaults as ids, seed,
};
use delegate_e2e::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

// The configured timeouts (see `tuned`); every bound below is derived from them.
const AUTH_FETCH: Duration = Duration::from_millis(1000);
const IDP_ATTEMPTS: u32 = 2;
const IDP_ATTEMPT: Duration = Duration::from_millis(800);
const IDP_BACKOFF: Duration = Duration::from_millis(50);
const MODEL_ATTEMPTS: u32 = 2;
const MODEL_ATTEMPT: Duration = Duration::from_millis(1000);
const MODEL_REQUEST: Duration = Duration::from_millis(4000);
const MODEL_BACKOFF_MAX: Duration = Duration::from_millis(200);
const EGRESS: Duration = Duration::from_millis(1000);
/// "Slow" is longer than every timeout above.
const SLOW: Duration = Duration::from_secs(3);
/// Everything that is not waiting on a fault: two model calls, the plugin, the host, on a
/// loaded 2-core machine in a debug build.
const WORK: Duration = Duration::from_millis(2500);

const PROMPT_LIST: &str = "Show me 5 incidents assigned to me";

fn scratch_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "delegate-e2e-faults-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One compiled-artifact cache for the module, so that each host after the first starts fast.
fn cache_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("delegate-e2e-faults-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        dir
    })
}

/// The devstack's `delegate.toml` with small timeouts, so every fault resolves in seconds.
fn tuned(stack: &DevStack, dir: &Path) -> String {
    let audit = dir.join("audit.jsonl");
    let toml = stack.delegate_config(
        "127.0.0.1:0".parse().unwrap(),
        Path::new(delegate_artifacts::SERVICENOW_AGENT),
        &audit.display().to_string(),
    );
    let replace = |toml: String, table: &str, keys: String| {
        assert!(toml.contains(table), "{table} not in the generated config");
        toml.replacen(table, &format!("{table}{keys}"), 1)
    };
    let ms = |d: Duration| d.as_millis();
    let toml = replace(toml, "[server]\n", "max_concurrency = 16\n".into());
    let toml = replace(toml, "[outbound]\n", "connect_timeout_ms = 1000\nrequest_timeout_ms = 5000\n".into());
    let toml = replace(toml, "[auth]\n", format!("fetch_timeout_ms = {}\n", ms(AUTH_FETCH)));
    let toml = replace(
        toml,
        "[model]\n",
        format!(
            "request_timeout_ms = {}\nattempt_timeout_ms = {}\nstream_idle_timeout_ms = 1000\n\
             connect_timeout_ms = 1000\nmax_attempts = {MODEL_ATTEMPTS}\ninitial_backoff_ms = 50\n\
             max_backoff_ms = {}\n",
            ms(MODEL_REQUEST),
            ms(MODEL_ATTEMPT),
            ms(MODEL_BACKOFF_MAX)
        ),
    );
    let extra = format!(
        "[vault.cache]\nidp_attempts = {IDP_ATTEMPTS}\nidp_timeout_ms = {}\nretry_backoff_ms = {}\n\n\
         [limits]\negress_timeout_ms = {}\nwall_clock_ms = 20000\n\n[engine]\ncache_dir = {:?}\n\n",
        ms(IDP_ATTEMPT),
        ms(IDP_BACKOFF),
        ms(EGRESS),
        cache_dir().display().to_string(),
    );
    toml.replacen("[audit]\n", &format!("{extra}[audit]\n"), 1)
}

struct Chain {
    stack: DevStack,
    host: Host,
    dir: PathBuf,
}

async fn stack() -> (DevStack, PathBuf) {
    let dir = scratch_dir();
    let stack = DevStack::start(&DevStackOptions::ephemeral(&dir)).await.unwrap();
    (stack, dir)
}

async fn host(stack: &DevStack, dir: &Path) -> Host {
    let config = Config::from_toml(&tuned(stack, dir), dir).unwrap();
    Host::start_with(&config, None, delegate_devstack::aws_credentials()).await.unwrap()
}

async fn chain() -> Chain {
    let (stack, dir) = stack().await;
    let host = host(&stack, &dir).await;
    Chain { stack, host, dir }
}

fn token_a(stack: &DevStack, user: &str) -> String {
    stack.token_a(user, Duration::from_secs(900)).unwrap().expose().to_owned()
}

/// One invocation as an AgentCore client makes it (SSE), timed.
async fn ask(stack: &DevStack, host: &Host, user: &str, prompt: &str) -> (Seen, Duration) {
    let started = Instant::now();
    let resp = client()
        .post(format!("http://{}/invocations", host.addr))
        .bearer_auth(token_a(stack, user))
        .json(&json!({ "prompt": prompt }))
        .send()
        .await
        .unwrap();
    let seen = collect(resp).await;
    (seen, started.elapsed())
}

impl Chain {
    async fn ask(&self, user: &str, prompt: &str) -> (Seen, Duration) {
        ask(&self.stack, &self.host, user, prompt).await
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// What the caller must see.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A plain JSON answer before any plugin code ran: this status and `error_type`.
    Rejected(u16, &'static str),
    /// The event stream ends with this `error_type`.
    Failed(&'static str),
    /// The plugin gave up before its stream started because the model failed: the model's
    /// status and `model_*` code (the plugin's own code stays in `plugin_error_code`).
    ModelFailed(u16, &'static str),
    /// The invocation succeeds and its text contains this (for ServiceNow failures: the
    /// agent's plain explanation, which the model relays).
    Answer(&'static str),
    /// The invocation succeeds and every tool call succeeded.
    ToolsOk,
}

struct Row {
    fault: &'static str,
    filter: FaultFilter,
    set: Fault,
    times: Option<u32>,
    expect: Expect,
    /// No answer may take longer than this.
    bound: Duration,
}

fn row(fault: &'static str, set: Fault, times: Option<u32>, expect: Expect, bound: Duration) -> Row {
    Row { fault, filter: FaultFilter::default(), set, times, expect, bound }
}

fn plugin_code(seen: &Seen) -> Option<&str> {
    seen.error.as_ref().and_then(|e| e["plugin_error_code"].as_str())
}

fn tool_errors(seen: &Seen) -> Option<u64> {
    let summary: serde_json::Value = serde_json::from_str(seen.result.as_deref()?).ok()?;
    summary["tool_errors"].as_u64()
}

fn outcome(seen: &Seen) -> String {
    if let Some(code) = plugin_code(seen) {
        return format!("HTTP {} plugin_error ({code})", seen.status);
    }
    match (&seen.error_type, seen.status) {
        (Some(code), 200) => format!("stream error_type {code}"),
        (Some(code), status) => format!("HTTP {status} {code}"),
        (None, status) => {
            let text: String = seen.text.chars().take(160).collect();
            format!("HTTP {status} answer {text:?}")
        }
    }
}

fn matches(expect: Expect, seen: &Seen) -> bool {
    match expect {
        Expect::Rejected(status, code) => seen.status == status && seen.error_type.as_deref() == Some(code),
        Expect::Failed(code) => seen.status == 200 && seen.error_type.as_deref() == Some(code),
        Expect::ModelFailed(status, code) => {
            seen.status == status && seen.error_type.as_deref() == Some(code)
        }
        Expect::Answer(text) => seen.status == 200 && seen.error_type.is_none() && seen.text.contains(text),
        Expect::ToolsOk => seen.status == 200 && seen.error_type.is_none() && tool_errors(seen) == Some(0),
    }
}

/// Checks one measured row; returns its line for the report, or the mismatch.
fn judge(dep: &str, row: &Row, seen: &Seen, elapsed: Duration) -> Result<String, String> {
    let line = format!(
        "{dep:<10} {:<22} expected {:<55} got {} in {} ms (bound {} ms)",
        row.fault,
        format!("{:?}", row.expect),
        outcome(seen),
        elapsed.as_millis(),
        row.bound.as_millis()
    );
    if matches(row.expect, seen) && elapsed <= row.bound { Ok(line) } else { Err(line) }
}

/// Prints the measured matrix (shown with `--nocapture`), then fails on any row off it.
#[allow(clippy::print_stderr)]
fn report(lines: &[Result<String, String>]) {
    let mut failed = Vec::new();
    for line in lines {
        match line {
            Ok(l) => eprintln!("  ok   {l}"),
            Err(l) => {
                eprintln!("  FAIL {l}");
                failed.push(l.clone());
            }
        }
    }
    assert!(failed.is_empty(), "rows off the matrix:\n{}", failed.join("\n"));
}

/// Polls (bounded) until `user` gets a normal answer again.
async fn recovers(stack: &DevStack, host: &Host, user: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (seen, _) = ask(stack, host, user, PROMPT_LIST).await;
        if matches(Expect::ToolsOk, &seen) && (user != ids::JANE || seen.text.contains("INC0012345")) {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "no recovery within {within:?}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn entra_error(status: u16, retry_after: Option<&str>) -> Fault {
    let mut headers = vec![("content-type".to_owned(), "application/json; charset=utf-8".to_owned())];
    headers.extend(retry_after.map(|s| ("retry-after".to_owned(), s.to_owned())));
    Fault::Status {
        status,
        headers,
        body: json!({
            "error": "temporarily_unavailable",
            "error_description": "AADSTS90033: A transient error has occurred. Please try again.",
            "error_codes": [90033],
        })
        .to_string(),
    }
}

fn aws_error(status: u16, name: &str, retry_after: Option<&str>) -> Fault {
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (
            "x-amzn-errortype".to_owned(),
            format!("{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
        ),
    ];
    headers.extend(retry_after.map(|s| ("retry-after".to_owned(), s.to_owned())));
    Fault::Status { status, headers, body: json!({ "message": format!("{name} (injected)") }).to_string() }
}

fn servicenow_error(status: u16, retry_after: Option<&str>) -> Fault {
    let mut headers = vec![("content-type".to_owned(), "application/json;charset=UTF-8".to_owned())];
    headers.extend(retry_after.map(|s| ("retry-after".to_owned(), s.to_owned())));
    let message = if status == 429 { "Rate limit exceeded" } else { "Service Unavailable" };
    Fault::Status {
        status,
        headers,
        body: json!({"error": {"message": message, "detail": "injected"}, "status": "failure"}).to_string(),
    }
}

async fn arm(switch: &FaultSwitch, row: &Row) {
    switch.set_for(row.filter.clone(), row.set.clone(), row.times);
    switch.settled().await;
}

async fn disarm(switch: &FaultSwitch) {
    switch.clear();
    switch.settled().await;
}

/// IdP discovery and JWKS, on a host that has no keys yet (a cold start during an IdP
/// incident): every fault is a 503 `auth_unavailable` (with `Retry-After`) within the fetch
/// timeout, no plugin code runs, and the host recovers by itself once the IdP does. With keys
/// loaded, an IdP outage changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_discovery_and_jwks_faults() {
    let (stack, dir) = stack().await;
    let switch = &stack.faults.idp;
    let unavailable = Expect::Rejected(503, "auth_unavailable");
    let bound = AUTH_FETCH + WORK;
    let get = |r: Row| Row { filter: FaultFilter::method("GET"), ..r };
    let rows = [
        get(row("down", Fault::Refuse, None, unavailable, bound)),
        get(row("5xx", entra_error(503, None), None, unavailable, bound)),
        get(row("429 Retry-After", entra_error(429, Some("1")), None, unavailable, bound)),
        get(row("reset mid-body", Fault::ResetAfter(40), None, unavailable, bound)),
        get(row("malformed JSON", Fault::MalformedJson, None, unavailable, bound)),
        // The documents are JSON whatever the header says; accepting them is harmless.
        get(row("wrong content type", Fault::WrongContentType, None, Expect::Answer("INC0012345"), WORK * 2)),
    ];
    let mut lines = Vec::new();
    for row in &rows {
        arm(switch, row).await;
        let host = host(&stack, &dir).await;
        let (seen, elapsed) = ask(&stack, &host, ids::JANE, PROMPT_LIST).await;
        let mut line = judge("idp-keys", row, &seen, elapsed);
        if matches!(row.expect, Expect::Rejected(..)) {
            let plugin_ran = stack.bedrock.calls() > 0;
            disarm(switch).await;
            // Request-driven reloads are spaced by one second; the host needs nothing else.
            let took =
                recovers(&stack, &host, ids::JANE, AUTH_FETCH + Duration::from_secs(1) + WORK * 2).await;
            line = line.map(|l| format!("{l}; recovered in {} ms", took.as_millis()));
            assert!(!plugin_ran, "{}: the plugin ran without a verified caller", row.fault);
        } else {
            disarm(switch).await;
        }
        lines.push(line);
        stack.bedrock.reset();
        let _ = host.shutdown(Duration::from_secs(1)).await;
    }
    // Keys loaded: the IdP going down (or slow) does not affect verification.
    let host = host(&stack, &dir).await;
    recovers(&stack, &host, ids::JANE, WORK * 2).await;
    for (name, set) in [("down, keys loaded", Fault::Refuse), ("slow, keys loaded", Fault::Delay(SLOW))] {
        let warm = get(row(name, set, None, Expect::Answer("INC0012345"), WORK));
        arm(switch, &warm).await;
        let (seen, elapsed) = ask(&stack, &host, ids::JANE, PROMPT_LIST).await;
        lines.push(judge("idp-keys", &warm, &seen, elapsed));
        disarm(switch).await;
    }
    report(&lines);
}

/// The token endpoint (On-Behalf-Of for ServiceNow), on a host whose keys are loaded. Each
/// row uses a user with no cached Token B (failed exchanges are not cached, so the failing
/// rows can share one). Transient failures are retried `idp_attempts` times; what remains
/// reaches the caller as the vault's code in the stream's final event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_token_endpoint_faults() {
    let chain = chain().await;
    let switch = &chain.stack.faults.idp;
    recovers(&chain.stack, &chain.host, ids::JANE, WORK * 2).await;
    let unavailable = Expect::Failed("credential_provider_unavailable");
    let ok = Expect::ToolsOk;
    let exhausted = IDP_ATTEMPT * IDP_ATTEMPTS + IDP_BACKOFF * 2 + WORK;
    let retried = IDP_BACKOFF * 2 + WORK;
    let token = |r: Row| Row { filter: FaultFilter::method("POST").path("/oauth2/v2.0/token"), ..r };
    let failing = "tom.baker@company.com";
    let rows = [
        (failing, token(row("down", Fault::Refuse, None, unavailable, exhausted))),
        (failing, token(row("slow", Fault::Delay(SLOW), None, unavailable, exhausted))),
        (failing, token(row("5xx", entra_error(503, None), None, unavailable, exhausted))),
        ("ravi.patel@company.com", token(row("5xx once", entra_error(503, None), Some(1), ok, retried))),
        (failing, token(row("429 Retry-After", entra_error(429, Some("1")), None, unavailable, exhausted))),
        (
            "maria.garcia@company.com",
            token(row("429 once", entra_error(429, Some("1")), Some(1), ok, retried)),
        ),
        (failing, token(row("reset mid-body", Fault::ResetAfter(30), None, unavailable, exhausted))),
        ("audrey.kim@company.com", token(row("reset once", Fault::ResetAfter(30), Some(1), ok, retried))),
        (
            failing,
            token(row(
                "malformed JSON",
                Fault::MalformedJson,
                None,
                Expect::Failed("credential_provider_invalid_response"),
                WORK,
            )),
        ),
        ("it.admin@company.com", token(row("wrong content type", Fault::WrongContentType, None, ok, WORK))),
    ];
    let mut lines = Vec::new();
    for (user, row) in &rows {
        arm(switch, row).await;
        let (seen, elapsed) = chain.ask(user, PROMPT_LIST).await;
        lines.push(judge("idp-token", row, &seen, elapsed));
        disarm(switch).await;
    }
    // The failing user is served normally once the IdP is.
    recovers(&chain.stack, &chain.host, failing, WORK * 2).await;
    report(&lines);
}

/// Bedrock (ConverseStream). Throttling, 5xx and broken streams are retried by the provider
/// (`max_attempts`, `max_stream_restarts`) before any text reached the caller; what remains
/// ends the stream with the model's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_faults() {
    let chain = chain().await;
    let switch = &chain.stack.faults.bedrock;
    recovers(&chain.stack, &chain.host, ids::JANE, WORK * 2).await;
    let ok = Expect::Answer("INC0012345");
    let exhausted = MODEL_REQUEST + WORK;
    let retried = MODEL_BACKOFF_MAX * 2 + WORK;
    let model = |r: Row| Row { filter: FaultFilter::method("POST").path("/model/"), ..r };
    let throttled = aws_error(429, "ThrottlingException", Some("1"));
    let unavailable = aws_error(503, "ServiceUnavailableException", None);
    let failed = Expect::ModelFailed;
    let rows = [
        model(row("down", Fault::Refuse, None, failed(503, "model_service_unavailable"), exhausted)),
        model(row("slow", Fault::Delay(SLOW), None, failed(504, "model_timeout"), exhausted)),
        model(row("5xx", unavailable.clone(), None, failed(503, "model_service_unavailable"), exhausted)),
        model(row("5xx once", unavailable, Some(1), ok, retried)),
        model(row("429 Retry-After", throttled.clone(), None, failed(503, "model_throttled"), exhausted)),
        model(row("429 once", throttled, Some(1), ok, retried)),
        // The SDK reports a response cut short as a dispatch failure ("could not reach").
        model(row(
            "reset mid-body",
            Fault::ResetAfter(200),
            None,
            failed(503, "model_service_unavailable"),
            exhausted,
        )),
        model(row("reset once", Fault::ResetAfter(200), Some(1), ok, retried)),
        model(row(
            "malformed JSON",
            Fault::MalformedJson,
            None,
            failed(424, "model_stream_error"),
            exhausted,
        )),
        // Event-stream frames carry their own CRCs; the SDK does not look at the header.
        model(row("wrong content type", Fault::WrongContentType, None, ok, WORK)),
    ];
    let mut lines = Vec::new();
    for row in &rows {
        arm(switch, row).await;
        let (seen, elapsed) = chain.ask(ids::JANE, PROMPT_LIST).await;
        lines.push(judge("bedrock", row, &seen, elapsed));
        disarm(switch).await;
    }
    recovers(&chain.stack, &chain.host, ids::JANE, WORK * 2).await;
    report(&lines);
}

/// ServiceNow reads. A failed Table API call is a tool error, not an invocation failure: the
/// agent tells the model what happened and the caller gets that explanation (outcome `ok`,
/// `tool_errors` in the summary); the audit line records the status or the transport cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_read_faults() {
    let chain = chain().await;
    let switch = &chain.stack.faults.servicenow;
    recovers(&chain.stack, &chain.host, ids::JANE, WORK * 2).await;
    let unreachable = Expect::Answer("could not reach ServiceNow");
    let table = |r: Row| Row { filter: FaultFilter::method("GET").path("/api/now/table/incident"), ..r };
    let bound = EGRESS + WORK;
    let rows = [
        (table(row("down", Fault::Refuse, None, unreachable, bound)), None, Some("upstream_unreachable")),
        (table(row("slow", Fault::Delay(SLOW), None, unreachable, bound)), None, Some("upstream_timeout")),
        (
            table(row(
                "5xx",
                servicenow_error(503, None),
                None,
                Expect::Answer("ServiceNow returned HTTP 503"),
                bound,
            )),
            Some(503),
            None,
        ),
        (
            table(row(
                "429 Retry-After",
                servicenow_error(429, Some("7")),
                None,
                Expect::Answer("retry in 7 seconds"),
                bound,
            )),
            Some(429),
            None,
        ),
        (
            table(row("reset mid-body", Fault::ResetAfter(40), None, unreachable, bound)),
            Some(200),
            Some("upstream_failed"),
        ),
        (
            table(row(
                "malformed JSON",
                Fault::MalformedJson,
                None,
                Expect::Answer("not Table API JSON"),
                bound,
            )),
            Some(200),
            None,
        ),
        (
            table(row(
                "wrong content type",
                Fault::WrongContentType,
                None,
                Expect::Answer("INC0012345"),
                bound,
            )),
            Some(200),
            None,
        ),
    ];
    let mut lines = Vec::new();
    for (row, status, reason) in &rows {
        arm(switch, row).await;
        let before = chain.audit_lines().len();
        let (seen, elapsed) = chain.ask(ids::JANE, PROMPT_LIST).await;
        let mut line = judge("servicenow", row, &seen, elapsed);
        // The gateway does not retry; the audit says what happened to the request.
        let audit = chain.audit_lines();
        let egress: Vec<_> = audit[before..].iter().filter(|l| l["kind"] != "invocation").collect();
        let first = egress.first().map(|l| (l["status"].as_u64(), l["reason"].as_str().map(str::to_owned)));
        let want = (status.map(|s: u16| u64::from(s)), reason.map(str::to_owned));
        if first.as_ref() != Some(&want) {
            line = Err(format!("{} / audit {first:?}, expected {want:?}", line.unwrap_or_else(|e| e)));
        }
        lines.push(line);
        disarm(switch).await;
    }
    recovers(&chain.stack, &chain.host, ids::JANE, WORK * 2).await;
    report(&lines);
}

/// The urgency values ServiceNow's `sys_audit` recorded for INC0012345, in order.
fn urgency_changes(stack: &DevStack) -> Vec<String> {
    let records = stack.servicenow.audit_records(seed::INC0012345.sys_id).unwrap();
    records.iter().filter(|r| r.field == "urgency").map(|r| r.new_value.clone()).collect()
}

/// ServiceNow writes (`update_incident` → PATCH). Neither the gateway (it retries only a 401,
/// which ServiceNow answers before writing) nor the agent retries a PATCH, so a fault never
/// duplicates a write; a write that ServiceNow refused (5xx, 429) did not happen; a write whose
/// answer was lost (reset mid-body, timeout) happened exactly once, and asking again with the
/// same value adds no `sys_audit` entry (unchanged values are not changes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_write_faults() {
    let chain = chain().await;
    let switch = &chain.stack.faults.servicenow;
    recovers(&chain.stack, &chain.host, ids::JANE, WORK * 2).await;
    let patch = FaultFilter::method("PATCH").path(seed::INC0012345.sys_id);
    let bound = EGRESS + WORK;
    let mut lines = Vec::new();
    let patches = |chain: &Chain| chain.audit_lines().iter().filter(|l| l["method"] == "PATCH").count();

    // Refused before the write: nothing recorded.
    for (name, fault, text) in [
        ("5xx", servicenow_error(503, None), "ServiceNow returned HTTP 503"),
        ("429 Retry-After", servicenow_error(429, Some("7")), "retry in 7 seconds"),
    ] {
        let row = Row { filter: patch.clone(), ..row(name, fault, None, Expect::Answer(text), bound) };
        let (before, sent) = (urgency_changes(&chain.stack), patches(&chain));
        arm(switch, &row).await;
        let (seen, elapsed) = chain.ask(ids::JANE, "Set INC0012345 urgency to 2").await;
        disarm(switch).await;
        let mut line = judge("sn-write", &row, &seen, elapsed);
        let after = urgency_changes(&chain.stack);
        if after != before || patches(&chain) > sent + 1 {
            line = Err(format!(
                "{name}: sys_audit {before:?} -> {after:?}, {} PATCH lines",
                patches(&chain) - sent
            ));
        }
        lines.push(line);
    }

    // The answer is lost after the write: exactly one sys_audit entry, no retry by anyone.
    let sent = patches(&chain);
    let reset = Row {
        filter: patch.clone(),
        ..row(
            "reset mid-body",
            Fault::ResetAfter(40),
            Some(1),
            Expect::Answer("ServiceNow did not confirm the update"),
            bound,
        )
    };
    arm(switch, &reset).await;
    let (seen, elapsed) = chain.ask(ids::JANE, "Set INC0012345 urgency to 1").await;
    disarm(switch).await;
    lines.push(judge("sn-write", &reset, &seen, elapsed));
    assert_eq!(patches(&chain), sent + 1, "the PATCH was sent more than once");
    assert_eq!(urgency_changes(&chain.stack).last().map(String::as_str), Some("1"));
    let count = urgency_changes(&chain.stack).len();
    // The user asks again: the same value again is no change, so no second entry.
    let (again, _) = chain.ask(ids::JANE, "Set INC0012345 urgency to 1").await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(urgency_changes(&chain.stack).len(), count, "a repeated PATCH was audited twice");

    // Slow: the caller hears "timed out" within the egress timeout; ServiceNow still commits
    // the write when it gets to it (once).
    let slow = Row {
        filter: patch.clone(),
        ..row(
            "slow",
            Fault::Delay(SLOW),
            Some(1),
            Expect::Answer("ServiceNow did not confirm the update"),
            bound,
        )
    };
    arm(switch, &slow).await;
    let (seen, elapsed) = chain.ask(ids::JANE, "Set INC0012345 urgency to 3").await;
    lines.push(judge("sn-write", &slow, &seen, elapsed));
    let deadline = Instant::now() + SLOW + WORK;
    while urgency_changes(&chain.stack).last().map(String::as_str) != Some("3") {
        assert!(
            Instant::now() < deadline,
            "the slow PATCH never committed: {:?}",
            urgency_changes(&chain.stack)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(urgency_changes(&chain.stack).len(), count + 1);
    disarm(switch).await;
    report(&lines);
}

/// A PATCH whose response was lost after ServiceNow committed it is reported as "the update
/// may have been applied: check the record", not as "could not reach ServiceNow" (it once
/// was: false, and an invitation to a blind retry of a different value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_lost_write_answer_says_the_write_may_have_happened() {
    let chain = chain().await;
    recovers(&chain.stack, &chain.host, ids::JANE, WORK * 2).await;
    chain.stack.faults.servicenow.set_for(
        FaultFilter::method("PATCH").path(seed::INC0012345.sys_id),
        Fault::ResetAfter(40),
        Some(1),
    );
    let (seen, _) = chain.ask(ids::JANE, "Set INC0012345 urgency to 1").await;
    assert_eq!(urgency_changes(&chain.stack).last().map(String::as_str), Some("1"));
    assert!(!seen.text.contains("could not reach ServiceNow"), "{}", seen.text);
    assert!(seen.text.contains("may have been applied"), "{}", seen.text);
}

/// A host that starts while the IdP's discovery or JWKS answers too slowly says "authorization
/// unavailable, retry" (503 `auth_unavailable`, `Retry-After`), as it does when the IdP is down
/// or failing — not 401 `invalid_token`, which would send the user to sign in again for
/// nothing (it once did).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_keys_slow_at_cold_start_is_auth_unavailable() {
    let (stack, dir) = stack().await;
    stack.faults.idp.set_for(FaultFilter::method("GET"), Fault::Delay(SLOW), None);
    let host = host(&stack, &dir).await;
    let (seen, elapsed) = ask(&stack, &host, ids::JANE, PROMPT_LIST).await;
    assert_eq!((seen.status, seen.error_type.as_deref()), (503, Some("auth_unavailable")), "{seen:?}");
    assert!(elapsed <= AUTH_FETCH + WORK, "{elapsed:?}");
}

/// A model outage is the model's failure, not the caller's: before the stream starts it
/// answers a 5xx (503 unavailable/throttled with `Retry-After`, 504 timeout) so that clients
/// and AgentCore retry it (it once answered 422 `plugin_error`, "do not retry").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_outage_answers_a_retryable_status() {
    let chain = chain().await;
    recovers(&chain.stack, &chain.host, ids::JANE, WORK * 2).await;
    let switch = &chain.stack.faults.bedrock;
    for (fault, status) in [
        (aws_error(429, "ThrottlingException", Some("1")), 503),
        (Fault::Delay(SLOW), 504),
        (Fault::Refuse, 503),
    ] {
        switch.set(fault);
        switch.settled().await;
        let (seen, _) = chain.ask(ids::JANE, PROMPT_LIST).await;
        disarm(switch).await;
        assert_eq!(seen.status, status, "{seen:?}");
        assert!(seen.error_type.as_deref().is_some_and(|c| c.starts_with("model_")), "{seen:?}");
    }
}
