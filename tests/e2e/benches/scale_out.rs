//! Two replicas vs one, with and without the shared Redis vault
//! (`cargo bench -p delegate-e2e --bench scale_out [-- --total 600 --concurrency 16]`).
//!
//! Everything runs in this process on one two-worker Tokio runtime: the devstack (IdP,
//! ServiceNow, Bedrock with its planner), the replicas (each a full `Host` with its own
//! vault) and the load clients; `redis-server` (the OS package) is a child process on a unix
//! socket. On a 2-core machine two replicas cannot add CPU, so the point is the number of
//! On-Behalf-Of exchanges the fleet makes and what the shared vault costs per invocation.
//!
//! Per set-up:
//! 1. cold burst: the IdP answers each exchange after 200 ms (a busy Entra); 5 users × 20
//!    concurrent invocations, spread round-robin over the replicas, all with empty caches;
//!    reports the OBO exchanges the IdP saw (ideal: 5, one per user);
//! 2. steady: `--total` invocations at `--concurrency`, users and replicas round-robin, all
//!    tokens cached; reports invocations/s, p50/p99 (client to last byte) and new exchanges.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::panic,
    missing_docs
)]

use base64::Engine as _;
use delegate_app::Host;
use delegate_config::Config;
use delegate_devstack::{DevStack, DevStackOptions, idp_defaults as ids};
use delegate_e2e::redis::RedisServer;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const OBO_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const USERS: [&str; 5] = [
    ids::JANE,
    ids::HR_ANALYST,
    "ravi.patel@company.com",
    "maria.garcia@company.com",
    "tom.baker@company.com",
];

struct Setup {
    name: &'static str,
    replicas: usize,
    redis: bool,
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map_or(default, |v| v.parse().unwrap())
}

async fn start(setup: &Setup, dir: &Path, redis: Option<&RedisServer>) -> (DevStack, Vec<Host>) {
    let stack = DevStack::start(&DevStackOptions::ephemeral(dir)).await.unwrap();
    let key = dir.join("vault.key");
    std::fs::write(&key, base64::engine::general_purpose::STANDARD.encode([7u8; 32])).unwrap();
    let mut hosts = Vec::new();
    for _ in 0..setup.replicas {
        let mut toml = stack
            .delegate_config(
                "127.0.0.1:0".parse().unwrap(),
                Path::new(delegate_artifacts::SERVICENOW_AGENT),
                &dir.join("audit.jsonl").display().to_string(),
            )
            .replace("[server]\n", "[server]\nmax_concurrency = 256\n");
        toml.push_str(&format!("\n[engine]\ncache_dir = {:?}\n", dir.join("compiled").display().to_string()));
        if let Some(redis) = redis {
            toml.push_str(&format!(
                "\n[vault.cache]\nbackend = \"redis\"\n\n[vault.cache.redis]\nurl = {:?}\nkey = {{ file = {:?} }}\n",
                redis.url(),
                key.display().to_string()
            ));
        }
        let config = Config::from_toml(&toml, dir).unwrap();
        hosts.push(Host::start_with(&config, None, delegate_devstack::aws_credentials()).await.unwrap());
    }
    (stack, hosts)
}

/// One invocation; `true` if it succeeded.
async fn invoke(client: &reqwest::Client, url: &str, token: &str) -> bool {
    let resp = client
        .post(format!("{url}/invocations"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "prompt": "Show me 5 incidents assigned to me" }))
        .send()
        .await
        .unwrap();
    let ok = resp.status().is_success();
    let body = resp.text().await.unwrap_or_default();
    ok && !body.contains("\"error_type\"")
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let total = arg("--total", 600);
    let concurrency = arg("--concurrency", 16);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let setups = [
        Setup { name: "1 replica, in-memory cache", replicas: 1, redis: false },
        Setup { name: "1 replica, Redis cache", replicas: 1, redis: true },
        Setup { name: "2 replicas, in-memory caches (not shared)", replicas: 2, redis: false },
        Setup { name: "2 replicas, shared Redis cache", replicas: 2, redis: true },
    ];
    println!(
        "total {total} steady invocations per set-up at concurrency {concurrency}; cold burst 5 users x 20"
    );
    println!(
        "| set-up | cold burst OBO exchanges | cold burst wall ms | steady inv/s | p50 ms | p99 ms | steady OBO exchanges | failed |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (n, setup) in setups.iter().enumerate() {
        rt.block_on(async {
            let dir = std::env::temp_dir().join(format!("dlg-bench-scale-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let redis = setup.redis.then(RedisServer::start);
            let (stack, hosts) = start(setup, &dir, redis.as_ref()).await;
            let urls: Vec<String> = hosts.iter().map(|h| format!("http://{}", h.addr)).collect();
            let client = reqwest::Client::builder().no_proxy().tcp_nodelay(true).build().unwrap();
            let tokens: Vec<String> = USERS
                .iter()
                .map(|u| stack.token_a(u, Duration::from_secs(900)).unwrap().expose().to_owned())
                .collect();
            let idp = stack.idp.idp();

            idp.set_token_fault(delegate_devstack_idp::TokenFault::Slow(Duration::from_millis(200)));
            let started = Instant::now();
            let burst = futures::future::join_all((0..100).map(|i| {
                let (client, url, token) =
                    (&client, &urls[i % urls.len()], &tokens[(i / urls.len()) % tokens.len()]);
                async move { invoke(client, url, token).await }
            }))
            .await;
            let burst_ms = started.elapsed().as_secs_f64() * 1e3;
            let mut failed = burst.iter().filter(|ok| !**ok).count();
            let cold_obo = idp.grant_calls(OBO_GRANT);
            idp.set_token_fault(delegate_devstack_idp::TokenFault::None);

            let next = Arc::new(AtomicUsize::new(0));
            let started = Instant::now();
            let workers = (0..concurrency).map(|_| {
                let (client, urls, tokens, next) = (&client, &urls, &tokens, Arc::clone(&next));
                async move {
                    let mut samples = Vec::new();
                    let mut failed = 0;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            break;
                        }
                        let t = Instant::now();
                        if !invoke(client, &urls[i % urls.len()], &tokens[(i / urls.len()) % tokens.len()])
                            .await
                        {
                            failed += 1;
                        }
                        samples.push(t.elapsed());
                    }
                    (samples, failed)
                }
            });
            let results = futures::future::join_all(workers).await;
            let wall = started.elapsed();
            let mut samples: Vec<Duration> = results.iter().flat_map(|(s, _)| s.iter().copied()).collect();
            failed += results.iter().map(|(_, f)| f).sum::<usize>();
            samples.sort();
            let steady_obo = idp.grant_calls(OBO_GRANT) - cold_obo;
            println!(
                "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {} |",
                setup.name,
                cold_obo,
                burst_ms,
                samples.len() as f64 / wall.as_secs_f64(),
                pct(&samples, 0.50).as_secs_f64() * 1e3,
                pct(&samples, 0.99).as_secs_f64() * 1e3,
                steady_obo,
                failed,
            );
            for host in hosts {
                let _ = host.shutdown(Duration::from_secs(5)).await;
            }
            drop(stack);
            drop(redis);
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
}
