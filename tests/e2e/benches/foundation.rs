//! Foundation benchmarks (a bench binary; `cargo bench -p delegate-e2e --bench foundation`).
//!
//! 1. instantiate-per-invocation: fresh Store + WasiCtx + instance from the InstancePre
//!    (pooling allocator), dropped again — the fixed cost every invocation pays;
//! 2. a whole invocation through the runtime (instantiate + call + events), no HTTP;
//! 3. a full `POST /invocations` on loopback (JSON answer mode), client to last byte;
//! 4. one model call across the WIT boundary (guest request lowered, mapped to the provider's
//!    types, an instant in-memory provider, the answer mapped back and lifted into the guest):
//!    an invocation making 200 calls minus one making none, divided by 200.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, missing_docs)]

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

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    let mean = samples.iter().sum::<Duration>() / u32::try_from(samples.len()).unwrap();
    println!(
        "{name:<44} n={:<6} p50={:>9.1?} p95={:>9.1?} p99={:>9.1?} mean={:>9.1?}",
        samples.len(),
        pct(0.50),
        pct(0.95),
        pct(0.99),
        mean
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
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
        let plugin =
            runtime.load_plugin_bytes("echo", &echo, Limits::default(), &BTreeMap::new(), None).unwrap();
        println!("compile + instantiate_pre (echo, {} bytes): {:?}", echo.len(), t.elapsed());
        let caller = VerifiedCallerBuilder::new("bench-user").build();

        for _ in 0..1_000 {
            plugin.instantiate_only(&caller).await.unwrap();
        }
        let mut samples = Vec::with_capacity(20_000);
        for _ in 0..20_000 {
            let t = Instant::now();
            plugin.instantiate_only(&caller).await.unwrap();
            samples.push(t.elapsed());
        }
        report("instantiate per invocation (echo)", samples);

        let mut samples = Vec::with_capacity(5_000);
        for i in 0..5_500 {
            let t = Instant::now();
            let mut inv = plugin.invoke(InvocationRequest {
                caller: caller.clone(),
                invocation_id: format!("bench-{i}"),
                session_id: None,
                payload: r#"{"prompt":"hi"}"#.into(),
                guard: None,
            });
            while let Some(ev) = inv.next().await {
                if let InvocationEvent::Finished(r) = ev {
                    r.unwrap();
                }
            }
            if i >= 500 {
                samples.push(t.elapsed());
            }
        }
        report("whole invocation via runtime (echo \"hi\")", samples);

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
        let run = |count: u64, i: usize| {
            let mut inv = plugin.invoke(InvocationRequest {
                caller: caller.clone(),
                invocation_id: format!("model-{i}"),
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
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for i in 0..220 {
            let (a, b) = (run(200, i).await, run(0, i).await);
            if i >= 20 {
                with.push(a);
                without.push(b);
            }
        }
        with.sort();
        without.sort();
        let per_call: Vec<Duration> =
            with.iter().zip(&without).map(|(a, b)| a.saturating_sub(*b) / 200).collect();
        report("model call across WIT (instant provider)", per_call);
    });
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
    client_rt.block_on(async {
        let http = reqwest::Client::builder().no_proxy().tcp_nodelay(true).build().unwrap();
        let mut samples = Vec::with_capacity(5_000);
        for i in 0..5_500 {
            let t = Instant::now();
            let resp = http
                .post(&url)
                .bearer_auth("test:bench")
                .header("accept", "application/json")
                .body(r#"{"prompt":"hi"}"#)
                .send()
                .await
                .unwrap();
            let _ = resp.bytes().await.unwrap();
            if i >= 500 {
                samples.push(t.elapsed());
            }
        }
        report("POST /invocations on loopback (json)", samples);
    });
}
