//! Hostile plugins end with their own error code within their limit, while other invocations
//! on the same server are unaffected.

use delegate_config::Limits;
use delegate_e2e::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn hostile_limits() -> Limits {
    Limits {
        memory_bytes: 32 << 20,
        table_elements: 10_000,
        cpu: Duration::from_millis(300),
        wall_clock: Duration::from_secs(3),
        output_bytes: 256 << 10,
        log_bytes: 16 << 10,
        ..Limits::default()
    }
}

async fn hostile_server() -> TestServer {
    let mut spec = ServerSpec::new(delegate_artifacts::HOSTILE);
    spec.limits = hostile_limits();
    TestServer::start(spec).await
}

/// Runs `mode` and, at the same time, a normal invocation on a second (echo) server sharing
/// nothing but the machine; then checks both outcomes and that the hostile server is healthy.
async fn contained(mode: &str, expected: &str, bound: Duration) {
    let server = hostile_server().await;
    let echo = TestServer::start(ServerSpec::new(delegate_artifacts::ECHO)).await;
    let started = Instant::now();
    let (p_bad, p_good, p_ok) = (
        json!({"mode": mode}),
        json!({"prompt": "still fine", "chunk_size": 2, "pause_ms": 20}),
        json!({"mode": "ok"}),
    );
    let (bad, good, same_server_good) = tokio::join!(
        invoke(&server.url, "mallory", &p_bad),
        invoke(&echo.url, "jane", &p_good),
        invoke(&server.url, "jane", &p_ok),
    );
    let elapsed = started.elapsed();
    assert_eq!(bad.error_type.as_deref(), Some(expected), "mode {mode}: {bad:?}");
    assert!(elapsed < bound, "mode {mode} took {elapsed:?}, bound {bound:?}");
    assert_eq!(good.text, "still fine");
    assert_eq!(same_server_good.result.as_deref(), Some("ok"), "{same_server_good:?}");
    assert_eq!(ping(&server.url).await["status"], "Healthy");
    let after = invoke(&server.url, "jane", &json!({"mode": "ok"})).await;
    assert_eq!(after.result.as_deref(), Some("ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_hits_the_cpu_limit() {
    contained("loop", "cpu_limit", Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_hits_the_memory_limit() {
    contained("memory", "memory_limit", Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_growth_hits_the_memory_limit() {
    contained("table", "memory_limit", Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_recursion_is_a_stack_overflow() {
    contained("stack", "stack_overflow", Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_flood_hits_the_output_limit() {
    contained("output", "output_limit", Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_flood_hits_the_log_limit() {
    contained("log", "log_limit", Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_a_plugin_trap() {
    contained("trap", "plugin_trap", Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_returning_host_wait_hits_the_wall_clock() {
    // Wall clock is 3 s; the plugin waits an hour.
    contained("wait-forever", "timeout", Duration::from_secs(6)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_waiting_on_the_host_is_not_cpu_time() {
    // CPU limit 300 ms; the plugin waits 1 s on a host clock, then computes a little.
    let server = hostile_server().await;
    let seen =
        invoke(&server.url, "jane", &json!({"mode": "wait-then-compute", "wait_ms": 1000, "work": 1000}))
            .await;
    assert!(seen.result.is_some(), "waiting was charged as CPU: {seen:?}");
    // The same wait followed by a lot of computation is still stopped.
    let seen =
        invoke(&server.url, "jane", &json!({"mode": "wait-then-compute", "wait_ms": 500, "work": u64::MAX}))
            .await;
    assert_eq!(seen.error_type.as_deref(), Some("cpu_limit"), "{seen:?}");
}
