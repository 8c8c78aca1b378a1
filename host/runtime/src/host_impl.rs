//! Host implementations of the `delegate:agent` interfaces.

use crate::bindings::{caller, model, output, types};
use crate::limits::{CallerGone, OutputLimitExceeded};
use crate::state::StoreState;
use crate::{InvocationEvent, model_map};

impl types::Host for StoreState {}

impl caller::Host for StoreState {
    async fn identity(&mut self) -> wasmtime::Result<caller::Principal> {
        Ok(self.principal.clone())
    }
}

impl output::Host for StoreState {
    async fn emit(&mut self, text: String) -> wasmtime::Result<()> {
        let len = text.len() as u64;
        if self.output_used + len > self.output_limit {
            return Err(wasmtime::Error::new(OutputLimitExceeded(self.output_limit)));
        }
        self.output_used += len;
        if text.is_empty() {
            return Ok(());
        }
        // Bounded channel: a slow caller slows the plugin down instead of growing memory.
        self.events.send(InvocationEvent::Text(text)).await.map_err(|_| wasmtime::Error::new(CallerGone))
    }
}

impl model::Host for StoreState {
    #[tracing::instrument(level = "debug", name = "model_call", skip_all)]
    async fn converse(
        &mut self,
        req: model::Request,
    ) -> wasmtime::Result<Result<model::Response, model::Error>> {
        let Some(access) = self.model.clone() else { return Ok(Err(unavailable())) };
        let started = std::time::Instant::now();
        let req = model_map::request(req);
        let result = delegate_model::call_model(
            access.provider.as_ref(),
            &access.model_id,
            &req,
            &access.request_limits,
            &self.budget,
            None,
        )
        .await;
        self.record_model_call(started, &result);
        Ok(result.map(model_map::response).map_err(model_map::error))
    }

    #[tracing::instrument(level = "debug", name = "model_call_stream", skip_all)]
    async fn converse_stream(
        &mut self,
        req: model::Request,
    ) -> wasmtime::Result<Result<model::Response, model::Error>> {
        let Some(access) = self.model.clone() else { return Ok(Err(unavailable())) };
        let started = std::time::Instant::now();
        let req = model_map::request(req);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
        let budget = &self.budget;
        let call = async move {
            let r = delegate_model::call_model(
                access.provider.as_ref(),
                &access.model_id,
                &req,
                &access.request_limits,
                budget,
                Some(&tx),
            )
            .await;
            drop(tx);
            r
        };
        // Deltas go straight to the caller's stream, counted against the output limit, while
        // the provider assembles the whole message for the plugin.
        let events = self.events.clone();
        let limit = self.output_limit;
        let mut used = self.output_used;
        let forward = async {
            let mut failure: Option<wasmtime::Error> = None;
            // One event per delta: the SSE writer merges what is already queued
            // (delegate_server's `sse_answer`), so the caller's socket sees no more writes.
            while let Some(text) = rx.recv().await {
                if failure.is_some() {
                    continue; // drain, so the provider never blocks on a full channel
                }
                let len = text.len() as u64;
                if used + len > limit {
                    failure = Some(wasmtime::Error::new(OutputLimitExceeded(limit)));
                    continue;
                }
                used += len;
                if events.send(InvocationEvent::Text(text)).await.is_err() {
                    failure = Some(wasmtime::Error::new(CallerGone));
                }
            }
            failure
        };
        let (result, failure) = tokio::join!(call, forward);
        self.record_model_call(started, &result);
        self.output_used = used;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(result.map(model_map::response).map_err(model_map::error))
    }
}

impl StoreState {
    fn record_model_call<T>(
        &mut self,
        started: std::time::Instant,
        result: &Result<T, delegate_model::ModelError>,
    ) {
        if let Some(m) = &self.metrics {
            m.record_phase(delegate_metrics::Phase::ModelCall, started.elapsed());
        }
        self.model_failure = result.as_ref().err().cloned();
    }
}

fn unavailable() -> model::Error {
    model::Error {
        kind: model::ErrorKind::Unavailable,
        message: "no model provider is configured for this plugin".into(),
        retryable: false,
    }
}
