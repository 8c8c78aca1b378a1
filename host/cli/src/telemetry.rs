//! Optional OTLP trace export (`[telemetry]`, docs/observability.md#traces): the host's
//! `tracing` spans, through `tracing-opentelemetry`, batched on the tokio runtime and sent as
//! OTLP/HTTP protobuf with the workspace's reqwest client (the `[outbound]` trust roots).
//!
//! Export is best effort and never on a request's path: a finished span is put on a bounded
//! queue (dropped, and counted, when it is full), one task sends batches, and a failed export
//! loses its batch; losses are reported in at most one `warn` line a minute.
//!
//! The collector sees the same trace id as the audit records: the `invocation` span's
//! `trace_id` field (the inbound `traceparent`'s, or the one the host started) becomes the
//! OpenTelemetry trace id of that span (see [`InboundTraceIds`]).

use crate::Failure;
use delegate_config::TelemetrySettings;
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor,
};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// Spans sent in one export request at most.
const MAX_BATCH: usize = 512;
/// Export losses are reported at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The running exporter: the provider (kept alive so its tracer keeps working) and the way to
/// flush what is queued.
pub(crate) struct Telemetry {
    provider: SdkTracerProvider,
    flush: mpsc::Sender<oneshot::Sender<()>>,
    counters: Arc<Counters>,
}

/// Spans lost, for the warn line and the shutdown summary.
#[derive(Debug, Default)]
struct Counters {
    /// Dropped because the queue was full (or the exporter had stopped).
    dropped: AtomicU64,
    /// Lost because their export request failed or timed out.
    failed: AtomicU64,
    /// Delivered to the collector.
    exported: AtomicU64,
}

/// Builds the exporter for `settings` and the two layers that feed it; the export task is
/// spawned on `runtime`. The layers go into the subscriber next to the fmt layer.
pub(crate) fn start<S>(
    settings: &TelemetrySettings,
    outbound: &delegate_outbound::OutboundConfig,
    runtime: &tokio::runtime::Handle,
) -> Result<(Telemetry, impl Layer<S> + Send + Sync + 'static), Failure>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let client = delegate_outbound::build_client(outbound)
        .map_err(|e| Failure::usage(format!("telemetry: outbound client: {e}")))?;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(settings.otlp_endpoint.clone())
        .with_timeout(settings.export_timeout)
        .with_http_client(client)
        .build()
        .map_err(|e| Failure::usage(format!("config error: telemetry.otlp_endpoint: {e}")))?;
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    // The processor below bypasses the provider's resource hand-off; the exporter gets it here.
    exporter.set_resource(&resource);

    let counters = Arc::new(Counters::default());
    let (spans_tx, spans_rx) = mpsc::channel(settings.queue_spans);
    let (flush_tx, flush_rx) = mpsc::channel(1);
    runtime.spawn(export_loop(
        exporter,
        spans_rx,
        flush_rx,
        settings.batch_interval,
        settings.export_timeout,
        Arc::clone(&counters),
    ));
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sample_ratio))))
        .with_id_generator(InboundTraceIds::default())
        .with_span_processor(QueueProcessor { spans: spans_tx, counters: Arc::clone(&counters) })
        .build();
    let tracer = provider.tracer("delegate");
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false);
    // Order matters: `TraceIdHint` runs its `on_enter` before the OpenTelemetry layer's, which
    // is where the OpenTelemetry span is started and asks the id generator for its trace id.
    Ok((Telemetry { provider, flush: flush_tx, counters }, TraceIdHint.and_then(otel)))
}

impl Telemetry {
    /// Sends every span queued so far, waiting at most `timeout` (graceful shutdown).
    pub(crate) async fn shutdown(self, timeout: Duration) {
        let (done_tx, done_rx) = oneshot::channel();
        let flushed = match self.flush.send(done_tx).await {
            Ok(()) => tokio::time::timeout(timeout, done_rx).await.is_ok_and(|r| r.is_ok()),
            Err(_) => false,
        };
        let c = &self.counters;
        tracing::info!(
            flushed,
            exported = c.exported.load(Ordering::Relaxed),
            dropped = c.dropped.load(Ordering::Relaxed),
            failed = c.failed.load(Ordering::Relaxed),
            "trace export stopped"
        );
        // Our processor holds no state of its own to flush; this only stops the provider.
        let _ = self.provider.shutdown();
    }
}

/// A span processor that only queues: `on_end` runs on the thread that closed the span (a
/// request's), so it must never wait or do I/O.
#[derive(Debug)]
struct QueueProcessor {
    spans: mpsc::Sender<SpanData>,
    counters: Arc<Counters>,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        // Flushing is async ([`Telemetry::shutdown`]); nothing blocks a request thread.
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The export task: a batch goes out when it is full, when the interval passes, on a flush
/// request, and when every sender is gone.
async fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    mut spans: mpsc::Receiver<SpanData>,
    mut flush: mpsc::Receiver<oneshot::Sender<()>>,
    interval: Duration,
    timeout: Duration,
    counters: Arc<Counters>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = LossReport::default();
    loop {
        tokio::select! {
            span = spans.recv() => match span {
                Some(span) => {
                    batch.push(span);
                    if batch.len() >= MAX_BATCH {
                        export(&exporter, &mut batch, timeout, &counters, &mut report).await;
                    }
                }
                None => {
                    export(&exporter, &mut batch, timeout, &counters, &mut report).await;
                    return;
                }
            },
            _ = tick.tick() => export(&exporter, &mut batch, timeout, &counters, &mut report).await,
            Some(done) = flush.recv() => {
                while let Ok(span) = spans.try_recv() {
                    batch.push(span);
                    if batch.len() >= MAX_BATCH {
                        export(&exporter, &mut batch, timeout, &counters, &mut report).await;
                    }
                }
                export(&exporter, &mut batch, timeout, &counters, &mut report).await;
                let _ = done.send(());
            }
        }
    }
}

/// When the last warn line was written and the losses it reported.
#[derive(Default)]
struct LossReport {
    last: Option<Instant>,
    dropped: u64,
    failed: u64,
}

async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: &mut Vec<SpanData>,
    timeout: Duration,
    counters: &Counters,
    report: &mut LossReport,
) {
    let error = if batch.is_empty() {
        None
    } else {
        let n = batch.len() as u64;
        let spans = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH));
        match tokio::time::timeout(timeout, opentelemetry_sdk::trace::SpanExporter::export(exporter, spans))
            .await
        {
            Ok(Ok(())) => {
                counters.exported.fetch_add(n, Ordering::Relaxed);
                None
            }
            Ok(Err(e)) => {
                counters.failed.fetch_add(n, Ordering::Relaxed);
                Some(e.to_string())
            }
            Err(_) => {
                counters.failed.fetch_add(n, Ordering::Relaxed);
                Some(format!("no answer within {} ms", timeout.as_millis()))
            }
        }
    };
    let dropped = counters.dropped.load(Ordering::Relaxed);
    let failed = counters.failed.load(Ordering::Relaxed);
    let lost = dropped > report.dropped || failed > report.failed;
    if lost && report.last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
        // This task runs outside every span, so this line is logged but never exported itself.
        let reason: String = error.as_deref().unwrap_or("queue full").chars().take(200).collect();
        tracing::warn!(
            dropped_since_last = dropped - report.dropped,
            failed_since_last = failed - report.failed,
            dropped_total = dropped,
            failed_total = failed,
            "trace export is losing spans: {reason}"
        );
        *report = LossReport { last: Some(Instant::now()), dropped, failed };
    }
}

thread_local! {
    /// The trace id the next root OpenTelemetry span started on this thread should take.
    static NEXT_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// Trace ids from the spans' own `trace_id` fields (set by [`TraceIdHint`]), random otherwise.
#[derive(Debug, Default)]
struct InboundTraceIds(RandomIdGenerator);

impl IdGenerator for InboundTraceIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE_ID.with(Cell::take).unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

/// The `trace_id` of a span, kept until the span is first entered.
struct PendingTraceId(TraceId);

/// Reads a span's `trace_id` field (32 hex digits) when it is created and offers it to the id
/// generator when the span is first entered, which is when the OpenTelemetry layer starts the
/// OpenTelemetry span. Cleared on exit, so a hint never reaches an unrelated span.
struct TraceIdHint;

impl<S> Layer<S> for TraceIdHint
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut visitor = TraceIdField(None);
        attrs.record(&mut visitor);
        if let (Some(trace_id), Some(span)) = (visitor.0, ctx.span(id)) {
            span.extensions_mut().insert(PendingTraceId(trace_id));
        }
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let pending = span.extensions_mut().remove::<PendingTraceId>();
        if let Some(PendingTraceId(trace_id)) = pending {
            NEXT_TRACE_ID.with(|c| c.set(Some(trace_id)));
        }
    }

    fn on_exit(&self, _id: &tracing::span::Id, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        NEXT_TRACE_ID.with(|c| c.set(None));
    }
}

/// Visitor for the `trace_id` field.
struct TraceIdField(Option<TraceId>);

impl TraceIdField {
    fn take(&mut self, field: &Field, value: &str) {
        if field.name() == "trace_id" && value.len() == 32 {
            self.0 = TraceId::from_hex(value).ok().filter(|t| *t != TraceId::INVALID);
        }
    }
}

impl Visit for TraceIdField {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.take(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "trace_id" {
            self.take(field, &format!("{value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// The span's `trace_id` field becomes the OpenTelemetry trace id of that span only.
    #[test]
    fn a_spans_trace_id_field_becomes_its_opentelemetry_trace_id() {
        #[derive(Debug, Clone, Default)]
        struct Collect(Arc<std::sync::Mutex<Vec<SpanData>>>);
        impl SpanProcessor for Collect {
            fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}
            fn on_end(&self, span: SpanData) {
                self.0.lock().unwrap().push(span);
            }
            fn force_flush(&self) -> OTelSdkResult {
                Ok(())
            }
            fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
                Ok(())
            }
        }
        let collect = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_id_generator(InboundTraceIds::default())
            .with_span_processor(collect.clone())
            .build();
        let layer = TraceIdHint.and_then(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
        let subscriber = tracing_subscriber::registry().with(layer);
        let wanted = "4bf92f3577b34da6a3ce929d0e0e4736";
        tracing::subscriber::with_default(subscriber, || {
            let s = tracing::info_span!("invocation", trace_id = %wanted);
            s.in_scope(|| {
                let _child = tracing::info_span!("model_call").entered();
            });
            drop(s);
            let _other = tracing::info_span!("unrelated").entered();
        });
        let spans = collect.0.lock().unwrap().clone();
        let by_name = |n: &str| spans.iter().find(|s| s.name == n).expect(n).span_context.trace_id();
        assert_eq!(by_name("invocation"), TraceId::from_hex(wanted).unwrap());
        assert_eq!(by_name("model_call"), TraceId::from_hex(wanted).unwrap(), "children share the trace");
        assert_ne!(by_name("unrelated"), TraceId::from_hex(wanted).unwrap(), "the hint leaked");
    }

    /// A full queue drops (and counts) instead of waiting; unsampled spans are not queued.
    #[test]
    fn a_full_queue_drops_and_counts() {
        let (spans, mut rx) = mpsc::channel(1);
        let counters = Arc::new(Counters::default());
        let processor = QueueProcessor { spans, counters: Arc::clone(&counters) };
        let provider = SdkTracerProvider::builder().build();
        let span = |sampled: bool| {
            use opentelemetry::trace::{Span as _, Tracer as _};
            let tracer = provider.tracer("t");
            let mut s = tracer.start("s");
            s.end();
            let cx = s.span_context().clone();
            let flags = if sampled {
                opentelemetry::trace::TraceFlags::SAMPLED
            } else {
                opentelemetry::trace::TraceFlags::default()
            };
            SpanData {
                span_context: opentelemetry::trace::SpanContext::new(
                    cx.trace_id(),
                    cx.span_id(),
                    flags,
                    false,
                    opentelemetry::trace::TraceState::default(),
                ),
                parent_span_id: SpanId::INVALID,
                parent_span_is_remote: false,
                span_kind: opentelemetry::trace::SpanKind::Internal,
                name: "s".into(),
                start_time: std::time::SystemTime::now(),
                end_time: std::time::SystemTime::now(),
                attributes: Vec::new(),
                dropped_attributes_count: 0,
                events: opentelemetry_sdk::trace::SpanEvents::default(),
                links: opentelemetry_sdk::trace::SpanLinks::default(),
                status: opentelemetry::trace::Status::Unset,
                instrumentation_scope: opentelemetry::InstrumentationScope::default(),
            }
        };
        processor.on_end(span(false));
        processor.on_end(span(true));
        processor.on_end(span(true));
        processor.on_end(span(true));
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 2);
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err(), "the unsampled span was queued");
    }
}
