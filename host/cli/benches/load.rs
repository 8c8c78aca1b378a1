//! Bounded load on the real `delegate serve` binary: the Jane scenario
//! (`cargo bench -p delegate --bench load [-- --concurrency 1,8,32,128 --seconds 10 --max 20000]`).
//!
//! The devstack (IdP, ServiceNow sandbox, Bedrock endpoint with its planner, no delays) runs
//! in this process, on the same runtime as the load clients; the host is a child process,
//! so its CPU time and memory are read from `/proc/<pid>` and are the host's alone.
//!
//! 1. Start-up: time from spawning `delegate serve` to the first `Healthy` `/ping`, with an
//!    empty `engine.cache_dir` (Cranelift compiles the plugin) and again with the same
//!    directory (the precompiled plugin is loaded).
//! 2. For each concurrency level C: C tasks send Jane's request (`POST /invocations`, Token A
//!    for jane.smith@company.com, "Show me 5 incidents assigned to me") in a loop for a fixed
//!    time or until a total count, read the SSE stream to the end and check that it succeeded
//!    and names her five incidents. Failures are counted and the first one is printed.
//! 3. Per level: throughput, latency percentiles (client to last byte), host CPU per
//!    invocation, host RSS before / after / peak, (peak − idle) / C, and this process's CPU
//!    (devstack + clients) per invocation; per-phase means from the admin `/metrics`
//!    histograms (`delegate_phase_duration_seconds`) when the host serves them.
//!
//! Side by side (`-- --python <venv>/bin/python [--python-workers 2]`): the same levels against
//! the article's Python agent (`benches/python-stack/main.py`: Strands, BedrockModel,
//! BedrockAgentCoreApp under uvicorn with N worker processes) instead of `delegate serve`,
//! against the same devstack. CPU time and RSS are summed over the uvicorn process tree; there
//! are no phase metrics, no compiled-plugin cache, and the stream has no final status event
//! (success is HTTP 200, a complete `text/event-stream` and her five incidents in the text).
//! `make bench-python` installs the pinned requirements into a venv and runs it.
//!
//! `-- --worker-threads N` sets `server.worker_threads` on the host (default: one per core).
//!
//! `-- --perf-map` sets `engine.perf_map` on the host, so `perf record -p <host pid>` names the
//! plugin's compiled functions.
//!
//! Soak (`-- --soak [--burst 1000] [--rps 100] [--minutes 10]`): instead of the levels, a
//! burst of `--burst` concurrent SSE invocations at once (beyond `server.max_concurrency`
//! = 256 the host must answer 503 `busy`, the only error allowed), then a steady `--rps` for
//! `--minutes`, sampling the host's RSS and open file descriptors every second. Reports
//! errors other than 503, p50/p99 per minute, RSS and fd count at start, peak and end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::panic,
    missing_docs
)]

use delegate_devstack::{DevStack, DevStackOptions, idp_defaults as ids, seed};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// The bench process (devstack stand-ins and load clients, on the host's 2 cores) runs with the
// allocator the `delegate` binary ships with: with glibc's, malloc/free/memmove were ≈ 30 % of
// the bench process's CPU (perf), CPU the host under test then could not have.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The article's Python agent, the side-by-side baseline (`--python`).
const PYTHON_STACK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python-stack");
const PROMPT_BODY: &str = r#"{"prompt":"Show me 5 incidents assigned to me"}"#;
const PHASES: [&str; 5] = ["authorize", "instantiate", "model_call", "egress_call", "guest_cpu"];
const PHASE_METRIC: &str = "delegate_phase_duration_seconds";

struct Args {
    levels: Vec<usize>,
    seconds: f64,
    max_total: usize,
    soak: Option<Soak>,
    /// `--perf-map`: the host writes `/tmp/perf-<pid>.map` (`engine.perf_map`), so a `perf`
    /// profile of it names the plugin's functions.
    perf_map: bool,
    /// `--worker-threads N`: `server.worker_threads` of the host (default: unset, one per core).
    worker_threads: Option<usize>,
    /// `--python <interpreter>`: load the article's Python agent instead of `delegate serve`.
    python: Option<PathBuf>,
    /// `--python-workers N`: uvicorn worker processes for the Python agent (default: cores).
    python_workers: usize,
}

#[derive(Clone, Copy, Debug)]
struct Soak {
    burst: usize,
    rps: f64,
    minutes: f64,
}

fn parse_args() -> Args {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let mut args = Args {
        levels: vec![1, 8, 32, 128],
        seconds: 10.0,
        max_total: 20_000,
        soak: None,
        perf_map: false,
        worker_threads: None,
        python: None,
        python_workers: cores,
    };
    let number = |v: Option<String>, what: &str| -> f64 {
        v.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{what} needs a number"))
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        // `cargo bench` adds `--bench`; anything unknown is ignored.
        match a.as_str() {
            "--concurrency" => {
                let v = it.next().expect("--concurrency needs a list, e.g. 1,8,32");
                args.levels = v
                    .split(',')
                    .map(|s| s.trim().parse().expect("concurrency: a positive integer"))
                    .collect();
                assert!(args.levels.iter().all(|&c| c > 0), "concurrency must be positive");
            }
            "--seconds" => {
                args.seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds needs a number");
            }
            "--max" => {
                args.max_total = it.next().and_then(|v| v.parse().ok()).expect("--max needs a count");
            }
            "--perf-map" => args.perf_map = true,
            "--worker-threads" => args.worker_threads = Some(number(it.next(), "--worker-threads") as usize),
            "--python" => {
                args.python = Some(PathBuf::from(it.next().expect("--python needs an interpreter path")));
            }
            "--python-workers" => args.python_workers = number(it.next(), "--python-workers") as usize,
            "--soak" => {
                args.soak.get_or_insert(Soak { burst: 1000, rps: 100.0, minutes: 10.0 });
            }
            "--burst" => {
                args.soak.get_or_insert(Soak { burst: 1000, rps: 100.0, minutes: 10.0 }).burst =
                    number(it.next(), "--burst") as usize;
            }
            "--rps" => {
                args.soak.get_or_insert(Soak { burst: 1000, rps: 100.0, minutes: 10.0 }).rps =
                    number(it.next(), "--rps");
            }
            "--minutes" => {
                args.soak.get_or_insert(Soak { burst: 1000, rps: 100.0, minutes: 10.0 }).minutes =
                    number(it.next(), "--minutes");
            }
            _ => {}
        }
    }
    args
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---- /proc ---------------------------------------------------------------------------

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of `pid` ("self" for this process), in clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    try_cpu_ticks(pid).unwrap_or_else(|| panic!("no CPU times in /proc/{pid}/stat"))
}

/// [`cpu_ticks`], `None` if the process is gone.
fn try_cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// `pid` and all its descendants (uvicorn's worker processes; just `pid` for `delegate`).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        let Some(close) = stat.rfind(')') else { continue };
        if let Some(ppid) = stat[close + 1..].split_whitespace().nth(1).and_then(|v| v.parse::<u32>().ok()) {
            parent_of.push((p, ppid));
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(parent_of.iter().filter(|&&(_, pp)| pp == parent).map(|&(p, _)| p));
        i += 1;
    }
    tree
}

/// utime + stime summed over `pid`'s process tree, in clock ticks. A worker that exits
/// mid-level takes its ticks with it (none do: uvicorn keeps its workers).
fn tree_cpu_ticks(pid: u32) -> u64 {
    // The root must be there; a descendant that exited since the listing counts as nothing.
    let tree = process_tree(pid);
    cpu_ticks(&pid.to_string()) + tree[1..].iter().filter_map(|p| try_cpu_ticks(&p.to_string())).sum::<u64>()
}

/// `VmRSS` summed over `pid`'s process tree (KiB), a descendant gone since the listing as 0.
fn tree_rss_kib(pid: u32) -> u64 {
    let tree = process_tree(pid);
    status_kib(pid, "VmRSS") + tree[1..].iter().filter_map(|&p| try_status_kib(p, "VmRSS")).sum::<u64>()
}

/// A `/proc/<pid>/status` value in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, key: &str) -> u64 {
    try_status_kib(pid, key).unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// [`status_kib`], `None` if the process is gone.
fn try_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0); false if not permitted.
fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

// ---- the host as a child process -----------------------------------------------------

/// A running `delegate serve`; killed (by its pid) when dropped.
struct Served {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        // uvicorn's worker processes outlive a killed master: kill the whole tree, children
        // first (listed before the master dies and takes their parent link with it).
        let tree = process_tree(self.child.id());
        if tree.len() > 1 {
            let _ = Command::new("kill").arg("-KILL").args(tree[1..].iter().map(u32::to_string)).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// `delegate serve --config <config>`.
fn delegate_command(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_delegate"));
    cmd.args(["serve", "--config", config.to_str().unwrap()]).env("DELEGATE_LOG", "warn");
    delegate_devstack::set_aws_env(&mut cmd);
    cmd
}

/// Spawns `cmd` (the host under test) and waits for its `/ping` on `listen_port` to say
/// `Healthy`; returns it and the time from spawn to that answer.
async fn serve(
    mut cmd: Command,
    listen_port: u16,
    log: PathBuf,
    http: &reqwest::Client,
) -> (Served, Duration) {
    let out = std::fs::File::create(&log).unwrap();
    let started = Instant::now();
    let child = cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap();
    let mut served = Served { child, base: format!("http://127.0.0.1:{listen_port}"), log };
    let ping = format!("{}/ping", served.base);
    loop {
        if let Ok(resp) = http.get(&ping).send().await
            && let Ok(v) = resp.json::<serde_json::Value>().await
            && v["status"] == "Healthy"
        {
            return (served, started.elapsed());
        }
        if let Some(status) = served.child.try_wait().unwrap() {
            let log = std::fs::read_to_string(&served.log).unwrap_or_default();
            panic!("{cmd:?} exited ({status}) before it was healthy:\n{log}");
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{cmd:?} not healthy after 60 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---- one Jane invocation -------------------------------------------------------------

/// Sends Jane's request and checks the whole SSE stream: HTTP 200, `text/event-stream`, a
/// final `"status":"success"` event (when `final_event`: delegate sends one, the article's
/// Python agent does not), and her five incident numbers in the text.
async fn jane(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    expected: &[&str],
    final_event: bool,
) -> Result<(), String> {
    let resp = http
        .post(url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(PROMPT_BODY)
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.bytes().await.map_err(|e| format!("reading the stream: {e}"))?;
    let body = String::from_utf8_lossy(&body);
    if status != reqwest::StatusCode::OK {
        return Err(format!("HTTP {status}: {}", body.chars().take(300).collect::<String>()));
    }
    if !content_type.starts_with("text/event-stream") {
        return Err(format!("content type {content_type:?}"));
    }
    let mut text = String::new();
    let mut last: Option<serde_json::Value> = None;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data:") else { continue };
        let event: serde_json::Value = serde_json::from_str(data.strip_prefix(' ').unwrap_or(data))
            .map_err(|e| format!("event: {e}"))?;
        match event {
            serde_json::Value::String(s) => text.push_str(&s),
            other => last = Some(other),
        }
    }
    match &last {
        Some(v) if v["status"] == "success" => {}
        None if !final_event => {}
        other => return Err(format!("no success event; last: {other:?}")),
    }
    let missing: Vec<&str> = expected.iter().copied().filter(|n| !text.contains(n)).collect();
    if !missing.is_empty() {
        return Err(format!("missing {missing:?} in {:?}", text.chars().take(300).collect::<String>()));
    }
    Ok(())
}

struct LevelRun {
    latencies: Vec<Duration>,
    failures: u64,
    first_failure: Option<String>,
    elapsed: Duration,
}

async fn run_level(
    http: &reqwest::Client,
    url: &Arc<String>,
    token: &Arc<String>,
    concurrency: usize,
    duration: Duration,
    max_total: usize,
    final_event: bool,
) -> LevelRun {
    let expected: Arc<Vec<&'static str>> = Arc::new(seed::JANE_INCIDENTS.iter().map(|i| i.number).collect());
    let issued = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (http, url, token, expected) = (http.clone(), url.clone(), token.clone(), expected.clone());
        let (issued, failures, first_failure) = (issued.clone(), failures.clone(), first_failure.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while started.elapsed() < duration && issued.fetch_add(1, Ordering::Relaxed) < max_total {
                let t = Instant::now();
                match jane(&http, &url, &token, &expected, final_event).await {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        first_failure.lock().unwrap().get_or_insert(e);
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let first_failure = first_failure.lock().unwrap().take();
    LevelRun { latencies, failures: failures.load(Ordering::Relaxed), first_failure, elapsed }
}

/// Samples the child's `VmRSS` (summed over its process tree) every 10 ms until stopped;
/// returns the largest seen (KiB).
fn sample_rss(pid: u32) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = tokio::spawn(async move {
        let mut max = 0;
        while !flag.load(Ordering::Relaxed) {
            max = max.max(tree_rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        max.max(tree_rss_kib(pid))
    });
    (stop, handle)
}

/// Open file descriptors of `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// One soak invocation: `Ok(latency)`, `Err(None)` for an intended 503 `busy`, or
/// `Err(Some(why))` for anything else.
async fn soak_one(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    expected: &[&str],
) -> Result<Duration, Option<String>> {
    let t = Instant::now();
    match jane(http, url, token, expected, true).await {
        Ok(()) => Ok(t.elapsed()),
        Err(e) if e.starts_with("HTTP 503") && e.contains("\"busy\"") => Err(None),
        Err(e) => Err(Some(e)),
    }
}

async fn soak(_shared: &reqwest::Client, url: &Arc<String>, token: &Arc<String>, pid: u32, args: Soak) {
    // The soak's own client, dropped before the final count, so connections it keeps alive
    // are not mistaken for descriptors the host leaked.
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(120)).build().unwrap();
    let http = &client;
    let expected: Arc<Vec<&'static str>> = Arc::new(seed::JANE_INCIDENTS.iter().map(|i| i.number).collect());
    let (rss0, fd0) = (status_kib(pid, "VmRSS"), fd_count(pid));
    // Samples every second for the whole soak.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.push((status_kib(pid, "VmRSS"), fd_count(pid)));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            samples
        })
    };

    // ---- the burst
    let started = Instant::now();
    let burst: Vec<_> = (0..args.burst)
        .map(|_| {
            let (http, url, token, expected) = (http.clone(), url.clone(), token.clone(), expected.clone());
            tokio::spawn(async move { soak_one(&http, &url, &token, &expected).await })
        })
        .collect();
    let (mut ok, mut busy, mut errors, mut first_error) = (Vec::new(), 0u64, 0u64, None);
    for t in burst {
        match t.await.unwrap() {
            Ok(d) => ok.push(d),
            Err(None) => busy += 1,
            Err(Some(e)) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let burst_took = started.elapsed();
    ok.sort();
    println!();
    println!(
        "soak burst: {} concurrent SSE invocations in {:.2} s: {} ok, {busy} busy (503, intended), {errors} other errors; p50 {} ms, p99 {} ms",
        args.burst,
        burst_took.as_secs_f64(),
        ok.len(),
        ms(pct(&ok, 0.50)),
        ms(pct(&ok, 0.99))
    );
    if let Some(e) = &first_error {
        println!("  first error: {e}");
    }

    // ---- the steady rate: one invocation started every 1/rps seconds, each in its own task
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rps));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let results = Arc::new(std::sync::Mutex::new(Vec::<(u64, Result<Duration, Option<String>>)>::new()));
    let mut tasks = tokio::task::JoinSet::new();
    while started.elapsed() < total {
        tick.tick().await;
        let minute = started.elapsed().as_secs() / 60;
        let (http, url, token, expected, results) =
            (http.clone(), url.clone(), token.clone(), expected.clone(), results.clone());
        tasks.spawn(async move {
            let r = soak_one(&http, &url, &token, &expected).await;
            results.lock().unwrap().push((minute, r));
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    let results = std::mem::take(&mut *results.lock().unwrap());
    let (rss_end, fd_end) = (status_kib(pid, "VmRSS"), fd_count(pid));
    // Close the client's connections, then wait (bounded) for the host to close its side.
    drop(client);
    let mut fd_closed = fd_count(pid);
    for _ in 0..50 {
        if fd_closed <= fd0 + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        fd_closed = fd_count(pid);
    }
    let rss_closed = status_kib(pid, "VmRSS");
    let rss_peak = samples.iter().map(|s| s.0).max().unwrap_or(rss0);
    let fd_peak = samples.iter().map(|s| s.1).max().unwrap_or(fd0);
    let mut errors = 0;
    let mut busy = 0;
    let mut first_error = None;
    println!(
        "soak steady: {:.0} invocations/s for {:.1} min ({} started)",
        args.rps,
        args.minutes,
        results.len()
    );
    println!(
        "| minute | ok | busy (503) | other errors | p50 ms | p99 ms | host RSS at its end MiB | open fds |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    // Samples are one per second from the start of the burst; the steady phase starts after it.
    let burst_samples = burst_took.as_secs() as usize + 1;
    let at_minute_end =
        |m: u64| samples.get(burst_samples + (m as usize + 1) * 60 - 1).or(samples.last()).copied();
    let minutes = results.iter().map(|(m, _)| *m).max().unwrap_or(0);
    let mut all_ok = Vec::new();
    for m in 0..=minutes {
        let mut lat: Vec<Duration> = Vec::new();
        let (mut b, mut e) = (0, 0);
        for (_, r) in results.iter().filter(|(mm, _)| *mm == m) {
            match r {
                Ok(d) => lat.push(*d),
                Err(None) => b += 1,
                Err(Some(why)) => {
                    e += 1;
                    first_error.get_or_insert(why.clone());
                }
            }
        }
        lat.sort();
        let (rss, fds) = at_minute_end(m).unwrap_or((0, 0));
        println!(
            "| {m} | {} | {b} | {e} | {} | {} | {} | {fds} |",
            lat.len(),
            ms(pct(&lat, 0.50)),
            ms(pct(&lat, 0.99)),
            mib(rss)
        );
        busy += b;
        errors += e;
        all_ok.extend(lat);
    }
    all_ok.sort();
    println!(
        "steady total: {} ok, {busy} busy, {errors} other errors; p50 {} ms, p99 {} ms",
        all_ok.len(),
        ms(pct(&all_ok, 0.50)),
        ms(pct(&all_ok, 0.99))
    );
    if let Some(e) = &first_error {
        println!("  first error: {e}");
    }
    println!(
        "host RSS: start {} MiB, peak {} MiB, end {} MiB, after the client closed {} MiB",
        mib(rss0),
        mib(rss_peak),
        mib(rss_end),
        mib(rss_closed)
    );
    println!(
        "host open fds: start {fd0}, peak {fd_peak}, end {fd_end} (the client's keep-alive connections), after the client closed {fd_closed}"
    );
}

// ---- /metrics ------------------------------------------------------------------------

/// Per phase: (sum of seconds, count), summed over any other labels.
type Phases = BTreeMap<String, (f64, f64)>;

/// Parses `delegate_phase_duration_seconds_{sum,count}{phase="..."} <value>` lines of the
/// Prometheus text exposition format.
fn parse_phases(text: &str) -> Phases {
    let mut phases = Phases::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, rest) = match line.find('{') {
            Some(open) => match line[open..].find('}') {
                Some(close) => (&line[..open + close + 1], &line[open + close + 1..]),
                None => continue,
            },
            None => match line.split_once(char::is_whitespace) {
                Some((s, r)) => (s, r),
                None => continue,
            },
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let is_sum = name == format!("{PHASE_METRIC}_sum");
        if !is_sum && name != format!("{PHASE_METRIC}_count") {
            continue;
        }
        let Some(phase) = labels.split("phase=\"").nth(1).and_then(|v| v.split('"').next()) else {
            continue;
        };
        let Some(value) = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let entry = phases.entry(phase.to_owned()).or_default();
        if is_sum {
            entry.0 += value;
        } else {
            entry.1 += value;
        }
    }
    phases
}

/// `Ok(phases)`, or `Err(why)` when the host does not serve them.
async fn scrape(http: &reqwest::Client, url: &str, token: &str) -> Result<Phases, String> {
    let resp = http.get(url).bearer_auth(token).send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    if status != reqwest::StatusCode::OK {
        return Err(format!("HTTP {status}"));
    }
    let phases = parse_phases(&resp.text().await.map_err(|e| e.to_string())?);
    if phases.is_empty() {
        return Err(format!("no {PHASE_METRIC} series"));
    }
    Ok(phases)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

struct Row {
    concurrency: usize,
    run: LevelRun,
    host_cpu_ms: f64,
    bench_cpu_ms: f64,
    rss_before: u64,
    rss_after: u64,
    peak: u64,
    phases: Result<Vec<(String, f64, f64)>, String>,
}

fn main() {
    let args = parse_args();
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().unwrap();
    rt.block_on(bench(args));
}

async fn bench(args: Args) {
    let total_started = Instant::now();
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let dir = std::env::temp_dir().join(format!("delegate-bench-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Zero planner/model delays: no pause between stream deltas, none before an answer.
    let options = DevStackOptions { delta_delay: Duration::ZERO, ..DevStackOptions::ephemeral(&dir) };
    let stack = DevStack::start(&options).await.unwrap();
    stack.bedrock.set_delay(Duration::ZERO);
    let component = Path::new(delegate_artifacts::SERVICENOW_AGENT);
    let audit = dir.join("audit.jsonl").display().to_string();
    let cache = dir.join("cache").display().to_string();
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().unwrap();
    let tck = clock_ticks_per_second();

    let config_for = |port: u16, admin: Option<(u16, &Path)>| {
        let mut toml = stack
            .delegate_config(([127, 0, 0, 1], port).into(), component, &audit)
            .replace(
                "[server]\n",
                &format!(
                    "[server]\nmax_concurrency = 256\n{}",
                    args.worker_threads.map(|n| format!("worker_threads = {n}\n")).unwrap_or_default()
                ),
            )
            .replace(
                "[outbound]\n",
                &format!(
                    "[engine]\npool_instances = 256\ncache_dir = {cache:?}\nperf_map = {}\n\n[outbound]\n",
                    args.perf_map
                ),
            );
        if let Some((admin_port, token_file)) = admin {
            toml.push_str(&format!(
                "\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken_file = {:?}\n",
                token_file.display().to_string()
            ));
        }
        toml
    };

    // The Python agent sends no final status event and serves no metrics.
    let python = args.python.as_deref().map(|p| (p, args.python_workers));
    let final_event = python.is_none();
    assert!(python.is_none() || args.worker_threads.is_none(), "--worker-threads is a delegate setting");

    // ---- start-up: delegate with a cold and a warm compiled-plugin cache; Python once
    let mut startups = Vec::new();
    if let Some((interpreter, workers)) = python {
        let port = free_port();
        let cmd = stack.python_agent_command(interpreter, Path::new(PYTHON_STACK), workers, port);
        let (served, took) = serve(cmd, port, dir.join("startup-python.log"), &http).await;
        drop(served);
        startups.push(("Python agent (imports, JWKS, MSAL)", took));
    } else {
        for (i, what) in ["empty cache_dir (compile)", "same cache_dir (precompiled)"].into_iter().enumerate()
        {
            let port = free_port();
            let path = dir.join(format!("startup-{i}.toml"));
            std::fs::write(&path, config_for(port, None)).unwrap();
            let (served, took) =
                serve(delegate_command(&path), port, dir.join(format!("startup-{i}.log")), &http).await;
            drop(served);
            startups.push((what, took));
        }
    }

    // ---- the host under load
    let (port, admin_port) = (free_port(), free_port());
    let token_file = dir.join("admin-token");
    delegate_devstack::write_admin_token(&token_file).unwrap();
    let admin_token = std::fs::read_to_string(&token_file).unwrap().trim().to_owned();
    let (cmd, what) = if let Some((interpreter, workers)) = python {
        let cmd = stack.python_agent_command(interpreter, Path::new(PYTHON_STACK), workers, port);
        (cmd, "Python agent, load host")
    } else {
        let path = dir.join("delegate.toml");
        std::fs::write(&path, config_for(port, Some((admin_port, &token_file)))).unwrap();
        (delegate_command(&path), "same cache_dir, load host (admin listener on)")
    };
    let (served, took) = serve(cmd, port, dir.join("host.log"), &http).await;
    startups.push((what, took));
    let pid = served.pid();
    let url = Arc::new(format!("{}/invocations", served.base));
    let metrics_url = format!("http://127.0.0.1:{admin_port}/metrics");
    let token = Arc::new(stack.token_a(ids::JANE, Duration::from_secs(3600)).unwrap().expose().to_owned());

    // Warm-up (OBO token cached, connections open, allocator grown), then the idle RSS.
    let warm = run_level(&http, &url, &token, 4, Duration::from_secs(2), 200, final_event).await;
    assert!(
        warm.failures == 0,
        "warm-up failed: {} of {} ({:?}); host log:\n{}",
        warm.failures,
        warm.failures as usize + warm.latencies.len(),
        warm.first_failure,
        std::fs::read_to_string(&served.log).unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = tree_rss_kib(pid);
    // VmHWM is per process: with worker processes, the sampled sum is the peak.
    let hwm_resets = python.is_none() && reset_peak_rss(pid);
    if let Some(soak_args) = args.soak {
        assert!(python.is_none(), "--soak runs against delegate only");
        soak(&http, &url, &token, pid, soak_args).await;
        drop(served);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }

    let mut rows = Vec::new();
    for &c in &args.levels {
        let scrape_phases = async || match python {
            Some(_) => Err("the Python agent serves no phase metrics".to_owned()),
            None => scrape(&http, &metrics_url, &admin_token).await,
        };
        let before = scrape_phases().await;
        let rss_before = tree_rss_kib(pid);
        if hwm_resets {
            reset_peak_rss(pid);
        }
        let (host0, self0) = (tree_cpu_ticks(pid), cpu_ticks("self"));
        let (stop, sampler) = sample_rss(pid);
        let seconds = Duration::from_secs_f64(args.seconds);
        let run = run_level(&http, &url, &token, c, seconds, args.max_total, final_event).await;
        let (host1, self1) = (tree_cpu_ticks(pid), cpu_ticks("self"));
        stop.store(true, Ordering::Relaxed);
        let sampled = sampler.await.unwrap();
        let hwm = status_kib(pid, "VmHWM");
        let peak = if hwm_resets { hwm.max(sampled) } else { sampled };
        let rss_after = tree_rss_kib(pid);
        let after = scrape_phases().await;
        let n = (run.latencies.len() as u64 + run.failures).max(1) as f64;
        let per_inv = |ticks: u64| ticks as f64 / tck * 1e3 / n;
        let phases = match (before, after) {
            (Ok(b), Ok(a)) => Ok(PHASES
                .iter()
                .map(|&p| {
                    let (s0, c0) = b.get(p).copied().unwrap_or_default();
                    let (s1, c1) = a.get(p).copied().unwrap_or_default();
                    let count = c1 - c0;
                    let mean = if count > 0.0 { (s1 - s0) / count } else { f64::NAN };
                    (p.to_owned(), mean, count / n)
                })
                .collect()),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        rows.push(Row {
            concurrency: c,
            host_cpu_ms: per_inv(host1 - host0),
            bench_cpu_ms: per_inv(self1 - self0),
            rss_before,
            rss_after,
            peak,
            phases,
            run,
        });
    }
    let audit_lines = std::fs::read_to_string(&audit).map(|t| t.lines().count()).unwrap_or(0);
    let obo_calls = stack.idp.idp().grant_calls("urn:ietf:params:oauth:grant-type:jwt-bearer");
    let log = std::fs::read_to_string(&served.log).unwrap_or_default();
    drop(served);

    // ---- report
    println!();
    println!(
        "load: the Jane scenario against {} (pid {pid}), devstack in the bench process, {workers} cores",
        match python {
            Some((_, n)) => format!("the article's Python agent (uvicorn, {n} worker processes)"),
            None => match args.worker_threads {
                Some(n) => format!("`delegate serve` (server.worker_threads = {n})"),
                None => "`delegate serve`".to_owned(),
            },
        }
    );
    println!(
        "levels {:?}, {} s each or {} invocations; CLK_TCK {tck}; host log lines: {}; audit lines: {audit_lines}; OBO token requests at the IdP: {obo_calls}",
        args.levels,
        args.seconds,
        args.max_total,
        log.lines().count()
    );
    for (what, took) in &startups {
        println!("start-up to first Healthy /ping, {what:<46} {} ms", ms(*took));
    }
    println!(
        "idle host RSS after warm-up: {} MiB{}",
        mib(idle_rss),
        if hwm_resets { "" } else { " (VmHWM cannot be reset here: peak is sampled every 10 ms)" }
    );
    println!();
    println!(
        "| C | ok | failed | inv/s | p50 ms | p95 ms | p99 ms | host CPU ms/inv | bench CPU ms/inv | host RSS before MiB | after MiB | peak MiB | (peak − idle)/C KiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let ok = r.run.latencies.len();
        println!(
            "| {} | {ok} | {} | {:.0} | {} | {} | {} | {:.3} | {:.3} | {} | {} | {} | {:.0} |",
            r.concurrency,
            r.run.failures,
            ok as f64 / r.run.elapsed.as_secs_f64(),
            ms(pct(&r.run.latencies, 0.50)),
            ms(pct(&r.run.latencies, 0.95)),
            ms(pct(&r.run.latencies, 0.99)),
            r.host_cpu_ms,
            r.bench_cpu_ms,
            mib(r.rss_before),
            mib(r.rss_after),
            mib(r.peak),
            r.peak.saturating_sub(idle_rss) as f64 / r.concurrency as f64,
        );
    }
    println!();
    match rows.first().map(|r| &r.phases) {
        Some(Err(why)) => println!("phase metrics: not available ({why})"),
        Some(Ok(_)) => {
            println!(
                "host phases (mean per observation from /metrics deltas; per-invocation count in brackets):"
            );
            println!("| C | {} |", PHASES.join(" | "));
            println!("|---:|{}", "---:|".repeat(PHASES.len()));
            for r in &rows {
                let cells: Vec<String> = match &r.phases {
                    Ok(p) => {
                        p.iter().map(|(_, mean, per)| format!("{:.1} µs [{per:.2}]", mean * 1e6)).collect()
                    }
                    Err(e) => vec![format!("n/a ({e})")],
                };
                println!("| {} | {} |", r.concurrency, cells.join(" | "));
            }
        }
        None => {}
    }
    for r in &rows {
        if let Some(f) = &r.run.first_failure {
            println!("C={}: {} failures, first: {f}", r.concurrency, r.run.failures);
        }
    }
    let warnings: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).take(5).collect();
    if !warnings.is_empty() {
        println!("host log (first lines):");
        for l in warnings {
            println!("  {l}");
        }
    }
    println!("total bench time: {:.1} s", total_started.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&dir);
}
