//! Foundation benchmarks (criterion; `cargo bench -p delegate-e2e --bench foundation`,
//! `--profile production` for the figures in BENCHMARKS.md).
//!
//! 1. instantiate-per-invocation: fresh Store + WasiCtx + instance from the InstancePre
//!    (pooling allocator), dropped again — the fixed cost every invocation pays;
//! 2. a whole invocation through the runtime (instantiate + call + events), no HTTP;
//! 3. one model call across the WIT boundary (guest request lowered, mapped to the provider's
//!    types, an instant in-memory provider, the answer mapped back and lifted into the guest):
//!    per iteration, an invocation making 200 calls and one making none, the difference
//!    divided by 200;
//! 4. a full `POST /invocations` on loopback (JSON answer mode), client to last byte; the
//!    server on its own runtime and threads, as a separate process would be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use delegate_auth::VerifiedCallerBuilder;
use delegate_config::Limits;
use delegate_e2e::{ServerSpec, TestServer};
use delegate_model::{
    ContentBlock, ConverseRequest, ConverseResponse, Message, ModelFuture, ModelProvider, Role, StopReason,
    Usage,
};
use delegate_runtime::{InvocationEvent, InvocationRequest, Runtime, RuntimeOptions};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Answers every call at once with a short text: the provider's own time is ~0.
struct InstantModel;

impl InstantModel {
    fn answer() -> Result<ConverseResponse, delegate_model::ModelError> {
        Ok(ConverseResponse {
            message: Message { role: Role::Assistant, content: vec![ContentBlock::Text("ok".into())] },
            stop_reason: StopReason::EndTurn,
            usage: Usage { input_tokens: 1, output_tokens: 1, total_tokens: 2 },
            latency_ms: None,
        })
    }
}

impl ModelProvider for InstantModel {
    fn converse<'a>(&'a self, _model_id: &'a str, _req: &'a ConverseRequest) -> ModelFuture<'a> {
        Box::pin(async { Self::answer() })
    }

    fn converse_stream<'a>(
        &'a self,
        _model_id: &'a str,
        _req: &'a ConverseRequest,
        _text: &'a tokio::sync::mpsc::Sender<String>,
    ) -> ModelFuture<'a> {
        Box::pin(async { Self::answer() })
    }
}

fn foundation(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let runtime = Runtime::new(&RuntimeOptions {
        epoch_tick: Duration::from_millis(10),
        pool_instances: 16,
        max_memory_bytes: 64 << 20,
        max_table_elements: 20_000,
        guest_debug: false,
        cache_dir: None,
        perf_map: false,
    })
    .unwrap();
    let echo = std::fs::read(delegate_artifacts::ECHO).unwrap();
    let t = Instant::now();
    let plugin = runtime.load_plugin_bytes("echo", &echo, Limits::default(), &BTreeMap::new(), None).unwrap();
    println!("compile + instantiate_pre (echo, {} bytes): {:?}", echo.len(), t.elapsed());
    let caller = VerifiedCallerBuilder::new("bench-user").build();

    c.bench_function("instantiate per invocation (echo)", |b| {
        b.to_async(&rt).iter(|| async { plugin.instantiate_only(&caller).await.unwrap() });
    });

    let next_id = AtomicU64::new(0);
    c.bench_function("whole invocation via runtime (echo \"hi\")", |b| {
        b.to_async(&rt).iter(|| {
            let mut inv = plugin.invoke(InvocationRequest {
                caller: caller.clone(),
                invocation_id: format!("bench-{}", next_id.fetch_add(1, Ordering::Relaxed)),
                session_id: None,
                payload: r#"{"prompt":"hi"}"#.into(),
                guard: None,
            });
            async move {
                while let Some(ev) = inv.next().await {
                    if let InvocationEvent::Finished(r) = ev {
                        r.unwrap();
                    }
                }
            }
        });
    });

    // ---- one model call across the WIT boundary
    let hostile = std::fs::read(delegate_artifacts::HOSTILE).unwrap();
    let limits = Limits { model_calls: 10_000, model_tokens: 10_000_000, ..Limits::default() };
    let model = delegate_runtime::ModelAccess {
        provider: Arc::new(InstantModel),
        model_id: "instant".into(),
        request_limits: delegate_model::RequestLimits::default(),
    };
    let plugin =
        runtime.load_plugin_bytes("hostile", &hostile, limits, &BTreeMap::new(), Some(model)).unwrap();
    let run = |count: u64| {
        let mut inv = plugin.invoke(InvocationRequest {
            caller: caller.clone(),
            invocation_id: format!("model-{}", next_id.fetch_add(1, Ordering::Relaxed)),
            session_id: None,
            payload: format!(r#"{{"mode":"model-flood","count":{count}}}"#),
            guard: None,
        });
        async move {
            let t = Instant::now();
            while let Some(ev) = inv.next().await {
                if let InvocationEvent::Finished(r) = ev {
                    assert_eq!(r.unwrap().result, count.to_string());
                }
            }
            t.elapsed()
        }
    };
    let mut group = c.benchmark_group("model call across WIT");
    group.sample_size(30);
    group.bench_function("instant provider, per call (200 calls minus 0, / 200)", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let run = &run;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (with, without) = (run(200).await, run(0).await);
                    total += with.saturating_sub(without) / 200;
                }
                total
            }
        });
    });
    group.finish();
    drop(plugin);
    drop(rt);

    // The server gets its own runtime on its own threads, as a separate process would; the
    // client runs on this (current-thread) one.
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let server = TestServer::start(ServerSpec::new(delegate_artifacts::ECHO)).await;
            url_tx.send(server.url.clone()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let url = format!("{}/invocations", url_rx.recv().unwrap());
    let client_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let http = reqwest::Client::builder().no_proxy().tcp_nodelay(true).build().unwrap();
    c.bench_function("POST /invocations on loopback (json)", |b| {
        b.to_async(&client_rt).iter(|| async {
            let resp = http
                .post(&url)
                .bearer_auth("test:bench")
                .header("accept", "application/json")
                .body(r#"{"prompt":"hi"}"#)
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success());
            resp.bytes().await.unwrap()
        });
    });
}

criterion_group!(benches, foundation);
criterion_main!(benches);
