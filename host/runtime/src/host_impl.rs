//! Host implementations of the `delegate:agent` interfaces.

use crate::bindings::{caller, model, output, types};
use crate::limits::{CallerGone, OutputLimitExceeded};
use crate::state::StoreState;
use crate::InvocationEvent;

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
        self.events
            .send(InvocationEvent::Text(text))
            .await
            .map_err(|_| wasmtime::Error::new(CallerGone))
    }
}

impl model::Host for StoreState {
    async fn converse(&mut self, _req: model::Request) -> wasmtime::Result<Result<model::Response, model::Error>> {
        Ok(Err(unavailable()))
    }

    async fn converse_stream(
        &mut self,
        _req: model::Request,
    ) -> wasmtime::Result<Result<model::Response, model::Error>> {
        Ok(Err(unavailable()))
    }
}

fn unavailable() -> model::Error {
    model::Error {
        kind: model::ErrorKind::Unavailable,
        message: "no model provider is configured for this plugin".into(),
        retryable: false,
    }
}
