//! What one store (one invocation) holds. Built fresh per invocation and dropped after it, so
//! nothing survives from one caller to the next.

use crate::InvocationEvent;
use crate::bindings::caller::Principal;
use crate::http_hooks::EgressHooks;
use crate::limits::{CpuMeter, Limiter};
use crate::stdio::LogPipe;
use std::sync::Arc;
use tokio::sync::mpsc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfigVariables;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub(crate) struct StoreState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub http: WasiHttpCtx,
    pub hooks: EgressHooks,
    pub settings: Arc<WasiConfigVariables>,
    pub limiter: Limiter,
    pub meter: CpuMeter,
    pub principal: Principal,
    pub events: mpsc::Sender<InvocationEvent>,
    pub output_used: u64,
    pub output_limit: u64,
    pub logs: (LogPipe, LogPipe),
    pub model: Option<crate::ModelAccess>,
    pub budget: delegate_model::ModelBudget,
    pub metrics: Option<Arc<delegate_metrics::Metrics>>,
    /// The last model call's failure (cleared by a successful call): if the plugin then
    /// fails, the caller is told it was the model.
    pub model_failure: Option<delegate_model::ModelError>,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}
