//! Plugin swap latency through the real admin API (`cargo bench -p delegate-e2e --bench lifecycle`).
//!
//! Each figure is one admin call on loopback, client to last byte: for a deploy that is the
//! JSON and base64 decode, sha256 of the component, the manifest and grant checks, compiling
//! (or loading from the artifact cache) and type-checking against the world, and the atomic
//! swap. After the call returns, every new invocation gets the new version.
//!
//! 1. deploy from source wasm: every build is new (a custom section changes its digest), so
//!    Cranelift runs each time;
//! 2. deploy with a precompiled artifact: alternating between two builds already in the disk
//!    cache;
//! 3. rollback: swapping the active and the previous version, both in memory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, missing_docs)]

use base64::Engine as _;
use delegate_app::Host;
use delegate_config::Config;
use delegate_devstack::{DevStack, DevStackOptions};
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-admin-token-0123456789abcdefghij";

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    println!(
        "{name:<58} n={:<4} p50={:>9.1?} p95={:>9.1?} max={:>9.1?}",
        samples.len(),
        pct(0.50),
        pct(0.95),
        samples[samples.len() - 1]
    );
}

fn body(name: &str, version: &str, component: &[u8]) -> serde_json::Value {
    let digest = delegate_e2e::sha256_digest(component);
    // No egress requested: none is needed to measure a swap.
    let manifest = format!("name = {name:?}\nversion = {version:?}\ndigest = {digest:?}\n");
    serde_json::json!({
        "manifest": manifest,
        "component": base64::engine::general_purpose::STANDARD.encode(component),
    })
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let dir = std::env::temp_dir().join(format!("delegate-bench-lifecycle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stack = DevStack::start(&DevStackOptions::ephemeral(&dir)).await.unwrap();
        let token_file = dir.join("admin-token");
        std::fs::write(&token_file, TOKEN).unwrap();
        let cache = dir.join("cache");
        let toml = stack
            .delegate_config(
                "127.0.0.1:0".parse().unwrap(),
                Path::new(delegate_artifacts::SERVICENOW_AGENT),
                "stdout",
            )
            .replace(
                "[server]\n",
                &format!("[engine]\ncache_dir = {:?}\n\n[server]\n", cache.display().to_string()),
            )
            + &format!(
                "\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = {:?}\n",
                token_file.display().to_string()
            );
        let config = Config::from_toml(&toml, &dir).unwrap();
        let host = Host::start_with(&config, None, delegate_devstack::aws_credentials()).await.unwrap();
        let admin = format!("http://{}/admin/plugins", host.admin_addr.unwrap());
        let client = reqwest::Client::builder().tcp_nodelay(true).build().unwrap();
        let put = |name: &'static str, body: serde_json::Value| {
            let (client, url) = (client.clone(), format!("{admin}/{name}"));
            async move {
                let started = Instant::now();
                let resp = client.put(url).bearer_auth(TOKEN).json(&body).send().await.unwrap();
                let status = resp.status();
                let answer: serde_json::Value = resp.json().await.unwrap();
                assert!(status.is_success(), "{answer}");
                (started.elapsed(), answer)
            }
        };

        let agent = std::fs::read(delegate_artifacts::SERVICENOW_AGENT).unwrap();
        let mut from_source = Vec::new();
        for i in 0..8 {
            let (took, answer) = put(
                "servicenow-agent",
                body("servicenow-agent", &format!("src.{i}"), &delegate_e2e::rebuilt(&agent, &i.to_string())),
            )
            .await;
            assert_eq!(answer["active"]["from_cache"], false);
            from_source.push(took);
        }
        let (a, b) = (delegate_e2e::rebuilt(&agent, "a"), delegate_e2e::rebuilt(&agent, "b"));
        put("servicenow-agent", body("servicenow-agent", "a", &a)).await;
        put("servicenow-agent", body("servicenow-agent", "b", &b)).await;
        let mut cached = Vec::new();
        for i in 0..40 {
            let (version, bytes) = if i % 2 == 0 { ("a", &a) } else { ("b", &b) };
            let (took, answer) = put("servicenow-agent", body("servicenow-agent", version, bytes)).await;
            assert_eq!(answer["active"]["from_cache"], true, "{answer}");
            cached.push(took);
        }
        let mut rollbacks = Vec::new();
        for _ in 0..200 {
            let started = Instant::now();
            let resp = client
                .post(format!("{admin}/servicenow-agent/rollback"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success());
            resp.bytes().await.unwrap();
            rollbacks.push(started.elapsed());
        }
        println!("component: servicenow-agent, {} bytes", agent.len());
        report("deploy from source wasm (compile + type-check + swap)", from_source);
        report("deploy with a precompiled artifact (cache + swap)", cached);
        report("rollback (in-memory swap)", rollbacks);
        host.shutdown(Duration::from_secs(5)).await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    });
}
