//! The only crate of delegate that knows wasm.
//!
//! One [`Runtime`] holds one wasmtime `Engine` (component model, async, pooling allocator,
//! epoch interruption driven by a ticker thread) and one `Linker` (WASI p2 with every
//! capability off, `wasi:http` through delegate's egress hooks, `wasi:config/store` for plugin
//! settings, and the `delegate:agent` interfaces). A [`Plugin`] is a compiled, type-checked
//! component with its `InstancePre`, built once. Every invocation gets a fresh `Store` and
//! instance, its own limits, and a stream of [`InvocationEvent`]s.
//!
//! A plugin can only be invoked with a [`VerifiedCaller`]: authorization happens before any
//! plugin code runs.

mod bindings;
mod cache;
mod host_impl;
mod http_hooks;
mod limits;
mod model_map;
mod registry;
mod state;
mod stdio;

pub use cache::CacheError;
pub use registry::{CompileInfo, Deployment, PluginRegistry, RegistryError, Rollback, Slot};

use bindings::{Agent, AgentPre};
use delegate_auth::VerifiedCaller;
use delegate_config::{EngineSettings, Limits, PluginSettings};
use sha2::{Digest, Sha256};
use state::StoreState;
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{CallHook, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::WasiHttpCtx;

/// Per pool slot, how much of a freed linear memory or table is reset in place (and stays
/// resident) instead of being returned to the kernel.
const KEEP_RESIDENT_BYTES: usize = 1 << 20;
/// Core wasm instances one plugin instance may have (componentize-py: 14).
const CORE_INSTANCES_PER_SLOT: u32 = 16;
/// Linear memories one plugin instance may have.
const MEMORIES_PER_SLOT: u32 = 4;
/// Tables one plugin instance may have.
const TABLES_PER_SLOT: u32 = 16;

/// Engine-wide options.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Epoch tick: granularity of CPU accounting and of yielding to other tasks.
    pub epoch_tick: Duration,
    /// Pool slots for concurrently live instances (the pool is not a queue: size it to the
    /// server's concurrency limit).
    pub pool_instances: u32,
    /// Largest linear memory any plugin may have.
    pub max_memory_bytes: u64,
    /// Largest table any plugin may have.
    pub max_table_elements: u64,
    /// Compile with guest-debug instrumentation so tests can inspect guest memory. Slower;
    /// never enable in production.
    pub guest_debug: bool,
    /// Directory of the compiled-plugin cache (`None`: compile every deploy).
    pub cache_dir: Option<std::path::PathBuf>,
    /// Register compiled plugin code in `/tmp/perf-<pid>.map` for `perf` (`engine.perf_map`).
    pub perf_map: bool,
}

impl RuntimeOptions {
    /// Options for an engine that can run every plugin in `plugins`.
    pub fn new(engine: &EngineSettings, plugins: &[PluginSettings]) -> Self {
        Self {
            epoch_tick: engine.epoch_tick,
            pool_instances: engine.pool_instances,
            max_memory_bytes: plugins.iter().map(|p| p.limits.memory_bytes).max().unwrap_or(64 << 20),
            max_table_elements: plugins.iter().map(|p| p.limits.table_elements).max().unwrap_or(20_000),
            guest_debug: false,
            cache_dir: None,
            perf_map: engine.perf_map,
        }
    }
}

/// How a plugin reaches the model: the provider, the model id the operator chose for it and
/// the request limits checked before every call. The budget comes from the plugin's limits.
#[derive(Clone)]
pub struct ModelAccess {
    /// The provider (Bedrock in production, the devstack endpoint in tests).
    pub provider: Arc<dyn delegate_model::ModelProvider>,
    /// Model id (foundation model, inference profile or ARN).
    pub model_id: String,
    /// Sizes and counts checked before any provider call.
    pub request_limits: delegate_model::RequestLimits,
}

impl std::fmt::Debug for ModelAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelAccess").field("model_id", &self.model_id).finish_non_exhaustive()
    }
}

/// How a plugin's outbound HTTP is handled: the shared gateway (vault, pooled client, audit
/// sink), the operator's rules for this plugin and its per-invocation caps.
#[derive(Clone, Debug)]
pub struct EgressAccess {
    /// The shared egress path.
    pub gateway: delegate_egress::EgressGateway,
    /// This plugin's rules.
    pub policy: Arc<delegate_egress::EgressPolicy>,
    /// Per-invocation caps.
    pub limits: delegate_egress::EgressLimits,
}

/// Called after each invocation with every linear memory of its instance (invocation id,
/// memory bytes), for security tests that scan guest memory for credentials. Only works on
/// an engine built with [`RuntimeOptions::guest_debug`]; never used in production.
pub type MemoryInspector = Arc<dyn Fn(&str, &[u8]) + Send + Sync>;

/// The engine could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the wasm engine: {0}")]
pub struct RuntimeError(String);

/// A component was refused.
#[derive(Debug, thiserror::Error)]
pub enum PluginLoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        message: String,
    },
    /// A component that does not validate or compile.
    #[error("the component does not compile: {0}")]
    Compile(String),
    /// The bytes are not a wasm component (a core module, or not wasm at all).
    #[error("not a wasm component (a core wasm module or other bytes); build with `--target wasm32-wasip2`")]
    NotAComponent,
    /// The component needs imports delegate does not provide, or lacks the `invoke` export.
    #[error("component does not fit the delegate:agent world: {0}")]
    World(String),
}

/// Imports and exports of a component, for `delegate plugin check`.
#[derive(Debug, Clone)]
pub struct ComponentReport {
    /// `sha256:<hex>` of the component bytes.
    pub digest: String,
    /// Size in bytes.
    pub size: usize,
    /// Imported interfaces and functions.
    pub imports: Vec<String>,
    /// Exported interfaces and functions.
    pub exports: Vec<String>,
}

/// The wasm engine and linker shared by every plugin. Cheap to clone (compiles can run on
/// a blocking thread with their own handle).
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<StoreState>>,
    cache: Option<cache::ArtifactCache>,
    metrics: Option<Arc<delegate_metrics::Metrics>>,
}

/// A component compiled (or loaded from the cache) and type-checked against the
/// `delegate:agent` world, not yet bound to a name, version or rights.
pub struct CompiledPlugin {
    pre: AgentPre<StoreState>,
    engine: Engine,
    metrics: Option<Arc<delegate_metrics::Metrics>>,
    digest: String,
    size: usize,
    info: CompileInfo,
}

impl CompiledPlugin {
    /// `sha256:<hex>` of the component bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether it came from the cache, and how long compiling or loading took.
    pub fn info(&self) -> CompileInfo {
        self.info
    }

    /// Binds the compiled code to its name, version and the rights the operator granted.
    pub fn into_plugin(self, spec: PluginSpec) -> Plugin {
        tracing::info!(
            plugin = %spec.name, version = %spec.version, digest = %self.digest, size = self.size,
            from_cache = self.info.from_cache,
            took_ms = u64::try_from(self.info.took.as_millis()).unwrap_or(u64::MAX),
            "plugin loaded"
        );
        Plugin {
            inner: Arc::new(PluginInner {
                name: spec.name.into(),
                version: spec.version.into(),
                digest: self.digest,
                pre: self.pre,
                limits: spec.limits,
                settings: Arc::new(spec.settings.iter().collect()),
                engine: self.engine,
                metrics: self.metrics,
                model: spec.model,
                egress: spec.egress,
                inspector: None,
                instances: AtomicU64::new(0),
            }),
        }
    }
}

/// Component bytes with their sha256, computed here (never taken from a caller: it keys the
/// compiled-code cache).
#[derive(Debug, Clone)]
pub struct ComponentBytes {
    bytes: Vec<u8>,
    sha_hex: String,
}

impl ComponentBytes {
    /// Hashes `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        let sha_hex = hex::encode(Sha256::digest(&bytes));
        Self { bytes, sha_hex }
    }

    /// `sha256:<hex>`, as manifests pin components.
    pub fn digest(&self) -> String {
        format!("sha256:{}", self.sha_hex)
    }
}

/// The name, version and granted rights a [`CompiledPlugin`] runs with.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The operator's plugin name.
    pub name: String,
    /// The version label (from the manifest).
    pub version: String,
    /// Per-invocation limits.
    pub limits: Limits,
    /// Settings given through `wasi:config/store`.
    pub settings: BTreeMap<String, String>,
    /// Model access (`None`: model calls answer `unavailable`).
    pub model: Option<ModelAccess>,
    /// Outbound HTTP (`None`: every request is denied).
    pub egress: Option<EgressAccess>,
}

impl Runtime {
    /// Builds the engine, starts its epoch ticker and links the host interfaces.
    pub fn new(options: &RuntimeOptions) -> Result<Self, RuntimeError> {
        let err = |e: wasmtime::Error| RuntimeError(format!("{e:#}"));
        let mut cfg = wasmtime::Config::new();
        cfg.wasm_component_model(true);
        cfg.epoch_interruption(true);
        cfg.guest_debug(options.guest_debug);
        if options.perf_map {
            cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let n = options.pool_instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        // Per slot: what the largest plugins we know need (a componentize-py component has 14
        // core instances; Rust plugins 3), so the pool holds `n` of them at once. A component
        // needing more is refused at deploy (see `Plugin::check_instantiable`).
        pool.total_component_instances(n)
            .max_core_instances_per_component(CORE_INSTANCES_PER_SLOT)
            .max_memories_per_component(MEMORIES_PER_SLOT)
            .max_tables_per_component(TABLES_PER_SLOT)
            .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_SLOT))
            .total_memories(n.saturating_mul(MEMORIES_PER_SLOT))
            .total_tables(n.saturating_mul(TABLES_PER_SLOT))
            .total_stacks(n)
            .max_memory_size(usize::try_from(options.max_memory_bytes).unwrap_or(usize::MAX))
            .table_elements(usize::try_from(options.max_table_elements).unwrap_or(usize::MAX))
            // A freed slot is reset to its initial image (zeroes plus data segments) before
            // reuse either way; these make the reset cheaper. With `pagemap_scan` (Linux >= 6.7)
            // only the pages the last instance dirtied are rewritten, up to the keep-resident
            // size, instead of `madvise` dropping them and the next instance faulting them in
            // again; on older kernels wasmtime falls back to `madvise`. Jane's invocation:
            // BENCHMARKS.md, Load.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(err)?;
        start_epoch_ticker(&engine, options.epoch_tick);

        let mut linker = Linker::<StoreState>::new(&engine);
        // All of WASI p2 is linked so ordinary std guests load, but every capability is off in
        // the per-invocation WasiCtx: no preopens, env, args, stdin, sockets or name lookups.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(err)?;
        wasmtime_wasi_config::add_to_linker(&mut linker, |s: &mut StoreState| WasiConfig::from(&*s.settings))
            .map_err(err)?;
        bindings::caller::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(err)?;
        bindings::model::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s).map_err(err)?;
        bindings::output::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(err)?;
        let cache = match &options.cache_dir {
            Some(dir) => {
                Some(cache::ArtifactCache::open(dir, &engine).map_err(|e| RuntimeError(e.to_string()))?)
            }
            None => None,
        };
        Ok(Self { engine, linker: Arc::new(linker), cache, metrics: None })
    }

    /// The same runtime, recording instances, phases and outcomes of every plugin it loads
    /// from now on into `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<delegate_metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn type_check(&self, component: &Component) -> Result<AgentPre<StoreState>, PluginLoadError> {
        let pre =
            self.linker.instantiate_pre(component).map_err(|e| PluginLoadError::World(format!("{e:#}")))?;
        AgentPre::new(pre).map_err(|e| PluginLoadError::World(format!("{e:#}")))
    }

    /// Compiles `bytes` (or loads their compilation from the cache) and type-checks the
    /// component against the `delegate:agent` world. CPU-heavy for a cache miss (seconds for
    /// a large component): call it from a blocking thread when a server is running.
    pub fn compile_plugin(&self, bytes: &[u8]) -> Result<CompiledPlugin, PluginLoadError> {
        self.compile_component(&ComponentBytes::new(bytes.to_vec()))
    }

    /// [`Runtime::compile_plugin`] for bytes already hashed (so a deploy that checked the
    /// digest against a manifest does not hash a large component twice).
    pub fn compile_component(&self, component: &ComponentBytes) -> Result<CompiledPlugin, PluginLoadError> {
        let started = Instant::now();
        let (bytes, sha_hex) = (component.bytes.as_slice(), component.sha_hex.as_str());
        let cached = self.cache.as_ref().and_then(|c| c.load(&self.engine, sha_hex));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(c) => c,
            None => {
                // Checked first so that a core module or random bytes get a clear error
                // instead of a parser message about component sections.
                if !is_component_binary(bytes) {
                    return Err(PluginLoadError::NotAComponent);
                }
                let c = Component::new(&self.engine, bytes)
                    .map_err(|e| PluginLoadError::Compile(format!("{e:#}")))?;
                if let Some(cache) = &self.cache {
                    cache.store(sha_hex, &c);
                }
                c
            }
        };
        let pre = self.type_check(&component)?;
        Ok(CompiledPlugin {
            pre,
            engine: self.engine.clone(),
            metrics: self.metrics.clone(),
            digest: format!("sha256:{sha_hex}"),
            size: bytes.len(),
            info: CompileInfo { from_cache, took: started.elapsed() },
        })
    }

    /// Compiles and type-checks a plugin from component bytes, with version `0.0.0` and no
    /// egress (tests, benchmarks, `delegate plugin check`).
    pub fn load_plugin_bytes(
        &self,
        name: &str,
        bytes: &[u8],
        limits: Limits,
        settings: &BTreeMap<String, String>,
        model: Option<ModelAccess>,
    ) -> Result<Plugin, PluginLoadError> {
        Ok(self.compile_plugin(bytes)?.into_plugin(PluginSpec {
            name: name.to_owned(),
            version: "0.0.0".to_owned(),
            limits,
            settings: settings.clone(),
            model,
            egress: None,
        }))
    }

    /// Checks that `bytes` is a component delegate can run and lists its imports and exports.
    pub fn inspect(&self, bytes: &[u8]) -> Result<ComponentReport, PluginLoadError> {
        if !is_component_binary(bytes) {
            return Err(PluginLoadError::NotAComponent);
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|e| PluginLoadError::Compile(format!("{e:#}")))?;
        let ty = component.component_type();
        let imports = ty.imports(&self.engine).map(|(name, _)| name.to_owned()).collect();
        let exports = ty.exports(&self.engine).map(|(name, _)| name.to_owned()).collect();
        self.type_check(&component)?;
        Ok(ComponentReport {
            digest: format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
            size: bytes.len(),
            imports,
            exports,
        })
    }
}

/// Whether `bytes` start with the header of a component (magic, then version 0x0d and layer
/// 1), as opposed to a core module (layer 0) or anything else.
fn is_component_binary(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [0x0d, 0x00, 0x01, 0x00]
}

/// Increments the engine's epoch every `tick` from a thread that ends with the engine.
fn start_epoch_ticker(engine: &Engine, tick: Duration) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new().name("delegate-epoch".into()).spawn(move || {
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(tick);
        }
    });
    if let Err(e) = spawned {
        // Without the ticker no CPU limit would fire: refuse to run rather than run unlimited.
        tracing::error!(error = %e, "cannot start the epoch ticker thread");
        std::process::abort();
    }
}

struct PluginInner {
    name: Arc<str>,
    version: Arc<str>,
    digest: String,
    pre: AgentPre<StoreState>,
    limits: Limits,
    settings: Arc<WasiConfigVariables>,
    engine: Engine,
    metrics: Option<Arc<delegate_metrics::Metrics>>,
    model: Option<ModelAccess>,
    egress: Option<EgressAccess>,
    inspector: Option<MemoryInspector>,
    /// Instances created so far (tests assert that rejected requests create none).
    instances: AtomicU64,
}

/// A loaded plugin: compiled, type-checked against the world, ready to instantiate.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.inner.name)
            .field("version", &self.inner.version)
            .field("digest", &self.inner.digest)
            .finish()
    }
}

/// One invocation's input.
pub struct InvocationRequest {
    /// The verified caller (the proof that authorization happened).
    pub caller: VerifiedCaller,
    /// Id for logs, audit and the response.
    pub invocation_id: String,
    /// The AgentCore session id, if the caller sent one (already validated).
    pub session_id: Option<String>,
    /// The request body (JSON text).
    pub payload: String,
    /// Held until the invocation has really ended (e.g. a concurrency permit).
    pub guard: Option<Box<dyn Any + Send>>,
}

/// What an invocation produces, in order: text chunks, then exactly one `Finished`.
#[derive(Debug)]
pub enum InvocationEvent {
    /// Text for the caller.
    Text(String),
    /// The end of the invocation.
    Finished(Result<InvocationOutcome, InvocationError>),
}

/// A successful invocation.
#[derive(Debug, Clone)]
pub struct InvocationOutcome {
    /// The string returned by the plugin's `invoke`.
    pub result: String,
    /// Guest CPU time.
    pub cpu: Duration,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Bytes of text emitted.
    pub output_bytes: u64,
    /// Model calls and tokens used.
    pub model_usage: delegate_model::BudgetUsage,
}

/// Why an invocation failed. [`InvocationError::code`] is the stable code clients see.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum InvocationError {
    /// Guest code ran longer than its CPU limit.
    #[error("the plugin exceeded its CPU time limit")]
    CpuLimit,
    /// The plugin tried to use more memory (or table space) than allowed.
    #[error("the plugin exceeded its memory limit")]
    MemoryLimit,
    /// The invocation took longer than its wall-clock limit.
    #[error("the invocation exceeded its time limit")]
    Timeout,
    /// The plugin emitted more text than allowed.
    #[error("the plugin exceeded its output limit")]
    OutputLimit,
    /// The plugin wrote more to its log than allowed.
    #[error("the plugin exceeded its log limit")]
    LogLimit,
    /// The plugin overflowed its stack.
    #[error("the plugin overflowed its stack")]
    StackOverflow,
    /// The plugin trapped (panicked, hit `unreachable`, misused an import...).
    #[error("the plugin failed: {0}")]
    PluginTrap(String),
    /// The plugin returned an error.
    #[error("{message}")]
    PluginError {
        /// The plugin's code (sanitised).
        code: String,
        /// The plugin's message.
        message: String,
    },
    /// No instance slot was free.
    #[error("no capacity to start the plugin")]
    Capacity,
    /// The caller disconnected before the end.
    #[error("the caller disconnected")]
    CallerGone,
    /// The plugin failed after a model call failed on the provider's side (outage,
    /// throttling, timeout, broken stream): the model's failure, not the caller's or the
    /// plugin's, so the caller gets the model's status and code (and may retry).
    #[error("the model call failed ({code}): {message}")]
    Model {
        /// HTTP status for the caller (503, 504, 502, 424).
        status: u16,
        /// Stable code, e.g. `model_throttled`.
        code: &'static str,
        /// The provider's safe message.
        message: String,
    },
    /// The user's delegated credential could not be obtained (consent missing, sign-in
    /// expired, provider misconfigured, IdP down). Status and code come from the vault.
    #[error("the delegated credential for this request could not be obtained ({code})")]
    Credential {
        /// HTTP status for the caller (401, 403, 502, 503).
        status: u16,
        /// Stable code, e.g. `consent_required`.
        code: String,
        /// `WWW-Authenticate` challenge for the caller (claims challenge), if any.
        www_authenticate: Option<String>,
    },
}

impl InvocationError {
    /// Stable, machine-readable code.
    pub fn code(&self) -> &str {
        match self {
            Self::CpuLimit => "cpu_limit",
            Self::MemoryLimit => "memory_limit",
            Self::Timeout => "timeout",
            Self::OutputLimit => "output_limit",
            Self::LogLimit => "log_limit",
            Self::StackOverflow => "stack_overflow",
            Self::PluginTrap(_) => "plugin_trap",
            Self::PluginError { .. } => "plugin_error",
            Self::Capacity => "capacity",
            Self::CallerGone => "caller_gone",
            Self::Credential { code, .. } => code,
            Self::Model { code, .. } => code,
        }
    }
}

/// A running invocation: read its events until `Finished`.
pub struct Invocation {
    events: mpsc::Receiver<InvocationEvent>,
}

impl Invocation {
    /// The next event; `None` after `Finished`.
    pub async fn next(&mut self) -> Option<InvocationEvent> {
        self.events.recv().await
    }

    /// The next event if one is already queued, without waiting: lets a streaming answer
    /// merge the text that is ready into one write instead of one per delta.
    pub fn try_next(&mut self) -> Option<InvocationEvent> {
        self.events.try_recv().ok()
    }
}

/// Events buffered between the plugin and a slow caller before `emit` waits.
const EVENT_BUFFER: usize = 32;

impl Plugin {
    /// The plugin's configured name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The version label from its manifest (`0.0.0` when it was loaded without one).
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    /// `sha256:<hex>` of the component.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// The per-invocation limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    fn rebuilt(&self, egress: Option<EgressAccess>, inspector: Option<MemoryInspector>) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(PluginInner {
                name: Arc::clone(&inner.name),
                version: Arc::clone(&inner.version),
                digest: inner.digest.clone(),
                pre: inner.pre.clone(),
                limits: inner.limits,
                settings: Arc::clone(&inner.settings),
                engine: inner.engine.clone(),
                metrics: inner.metrics.clone(),
                model: inner.model.clone(),
                egress,
                inspector,
                instances: AtomicU64::new(0),
            }),
        }
    }

    /// The same plugin with outbound HTTP through `egress` (without it, every request is denied).
    #[must_use]
    pub fn with_egress(self, egress: EgressAccess) -> Self {
        self.rebuilt(Some(egress), self.inner.inspector.clone())
    }

    /// The same plugin with a [`MemoryInspector`] run after every invocation (tests only).
    #[must_use]
    pub fn with_memory_inspector(self, inspector: MemoryInspector) -> Self {
        self.rebuilt(self.inner.egress.clone(), Some(inspector))
    }

    /// How many instances of this plugin have been created (one per invocation).
    pub fn instances_created(&self) -> u64 {
        self.inner.instances.load(Ordering::Relaxed)
    }

    /// Creates a fresh store and instance exactly as an invocation does, then drops them
    /// without calling the plugin: the per-invocation setup cost, for benchmarks.
    pub async fn instantiate_only(&self, caller: &VerifiedCaller) -> Result<(), InvocationError> {
        let (tx, _rx) = mpsc::channel(1);
        let state = new_state(
            &self.inner,
            caller,
            "bench",
            None,
            tx,
            &http_hooks::CredentialFailure::default(),
            None,
        );
        let mut store = metered_store(&self.inner, state);
        let _agent: Agent = self.inner.pre.instantiate_async(&mut store).await.map_err(|e| classify(&e))?;
        Ok(())
    }

    /// Instantiates the plugin once, without calling it and without a caller (no egress, no
    /// model): a deploy refuses a component that cannot even be instantiated within its limits
    /// and the pool's per-slot budget (too many core instances, memories or tables, an initial
    /// memory over `memory_mib`), instead of every invocation failing after it went live.
    pub async fn check_instantiable(&self) -> Result<(), InvocationError> {
        let (tx, _rx) = mpsc::channel(1);
        let principal = bindings::caller::Principal {
            subject: String::new(),
            username: None,
            display_name: None,
            tenant: None,
            client_id: String::new(),
            scopes: Vec::new(),
            roles: Vec::new(),
            session_id: None,
            invocation_id: "deploy-check".into(),
        };
        let state = state_for(&self.inner, principal, tx, &http_hooks::CredentialFailure::default(), None);
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Structure only: memory, tables and the pool's budget are enforced, CPU is not (each
        // invocation is charged its own instantiation). Yielding every tick keeps the wall-clock
        // bound below effective even if a start function spins.
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        let instantiated =
            tokio::time::timeout(self.inner.limits.wall_clock, self.inner.pre.instantiate_async(&mut store))
                .await
                .map_err(|_| InvocationError::Timeout)?;
        instantiated.map(|_: Agent| ()).map_err(|e| classify(&e))
    }

    /// Starts an invocation in its own task; the returned handle streams its events.
    /// Dropping the handle cancels the invocation. It starts a new trace; see
    /// [`Plugin::invoke_traced`] to continue the caller's.
    pub fn invoke(&self, request: InvocationRequest) -> Invocation {
        self.invoke_traced(request, delegate_egress::TraceContext::new_root())
    }

    /// [`Plugin::invoke`] within the trace `trace` (the inbound `traceparent`): its trace id
    /// is on the invocation's span and audit records, and every outbound request carries a
    /// child of it.
    pub fn invoke_traced(
        &self,
        request: InvocationRequest,
        trace: delegate_egress::TraceContext,
    ) -> Invocation {
        use tracing::Instrument;
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let inner = Arc::clone(&self.inner);
        // Every log line of the invocation (host, egress, vault, plugin log) carries these.
        let span = tracing::info_span!(
            "invocation",
            invocation_id = %request.invocation_id,
            trace_id = %trace.trace_id(),
            chain_depth = request.caller.chain_depth(),
            session_id = request.session_id.as_deref().unwrap_or(""),
            plugin = %inner.name,
            version = %inner.version,
            // Recorded when the invocation ends, so a trace backend can filter spans by it.
            outcome = tracing::field::Empty,
        );
        let task = async move {
            let InvocationRequest { caller, invocation_id, session_id, payload, guard } = request;
            let _guard = guard;
            let _in_flight = inner.metrics.as_ref().map(delegate_metrics::Metrics::in_flight);
            let started = Instant::now();
            let wall = inner.limits.wall_clock;
            let credential_failure = http_hooks::CredentialFailure::default();
            let egress = invocation_egress(&inner, &caller, &invocation_id, trace);
            let state = new_state(
                &inner,
                &caller,
                &invocation_id,
                session_id,
                tx.clone(),
                &credential_failure,
                egress.as_ref(),
            );
            let run = run(&inner, state, payload, started);
            let mut result = tokio::select! {
                r = tokio::time::timeout(wall, run) => r.unwrap_or(Err(InvocationError::Timeout)),
                () = tx.closed() => Err(InvocationError::CallerGone),
            };
            // A credential failure decides the answer: the caller must learn that consent or a
            // fresh sign-in is needed, whatever the plugin made of its denied request.
            let vault_error =
                credential_failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            if let Some(e) = vault_error {
                result = Err(InvocationError::Credential {
                    status: e.status(),
                    code: e.code().to_owned(),
                    www_authenticate: e.www_authenticate(),
                });
            }
            tracing::Span::current().record("outcome", result.as_ref().map_or_else(|e| e.code(), |_| "ok"));
            match &result {
                Ok(o) => tracing::info!(
                    plugin = %inner.name, version = %inner.version, %invocation_id, outcome = "ok",
                    cpu_us = u64::try_from(o.cpu.as_micros()).unwrap_or(u64::MAX),
                    elapsed_ms = u64::try_from(o.elapsed.as_millis()).unwrap_or(u64::MAX),
                    output_bytes = o.output_bytes, model_calls = o.model_usage.calls,
                    input_tokens = o.model_usage.input_tokens, output_tokens = o.model_usage.output_tokens,
                    "invocation finished"
                ),
                Err(e) => tracing::warn!(
                    plugin = %inner.name, version = %inner.version, %invocation_id, outcome = e.code(),
                    elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "invocation failed: {e}"
                ),
            }
            if let Some((gateway, egress)) = &egress {
                let outcome = match &result {
                    Ok(_) => "ok",
                    Err(e) => e.code(),
                };
                let mut record =
                    delegate_egress::InvocationRecord::new(&egress.audit, outcome, started.elapsed());
                if let Ok(o) = &result {
                    record.model_calls = o.model_usage.calls;
                    record.input_tokens = o.model_usage.input_tokens;
                    record.output_tokens = o.model_usage.output_tokens;
                }
                record.egress_requests = egress.budget.requests();
                record.chain_depth = caller.chain_depth();
                gateway.audit_invocation(&record);
            }
            if let Some(m) = &inner.metrics {
                let (outcome, cpu, usage) = match &result {
                    Ok(o) => ("ok", Some(o.cpu), o.model_usage),
                    Err(e) => (e.code(), None, delegate_model::BudgetUsage::default()),
                };
                m.record_invocation(&delegate_metrics::InvocationEnd {
                    plugin: &inner.name,
                    version: &inner.version,
                    outcome,
                    elapsed: started.elapsed(),
                    guest_cpu: cpu,
                    input_tokens: usage.input_tokens,
                    output_tokens: usage.output_tokens,
                });
            }
            let _ = tx.send(InvocationEvent::Finished(result)).await;
        };
        tokio::spawn(task.instrument(span));
        Invocation { events: rx }
    }
}

/// The egress context of one invocation (rules, caller, audit identity, fresh budget).
fn invocation_egress(
    inner: &PluginInner,
    caller: &VerifiedCaller,
    invocation_id: &str,
    trace: delegate_egress::TraceContext,
) -> Option<(delegate_egress::EgressGateway, delegate_egress::InvocationEgress)> {
    inner.egress.as_ref().map(|e| {
        (
            e.gateway.clone(),
            delegate_egress::InvocationEgress {
                policy: Arc::clone(&e.policy),
                caller: Arc::new(caller.clone()),
                audit: delegate_egress::AuditContext {
                    invocation_id: invocation_id.to_owned(),
                    trace: Some(trace),
                    caller_subject: caller.subject().to_owned(),
                    caller_username: caller.username().map(str::to_owned),
                    plugin: inner.name.to_string(),
                    plugin_digest: inner.digest.clone(),
                    plugin_version: inner.version.to_string(),
                },
                budget: Arc::new(delegate_egress::EgressBudget::new(e.limits)),
            },
        )
    })
}

#[allow(clippy::too_many_arguments)]
/// The claims a plugin reads through `caller.identity()`.
fn principal_of(
    caller: &VerifiedCaller,
    invocation_id: &str,
    session_id: Option<String>,
) -> bindings::caller::Principal {
    bindings::caller::Principal {
        subject: caller.subject().to_owned(),
        username: caller.username().map(str::to_owned),
        display_name: caller.display_name().map(str::to_owned),
        tenant: caller.tenant().map(str::to_owned),
        client_id: caller.client_id().to_owned(),
        scopes: caller.scopes().to_vec(),
        roles: caller.roles().to_vec(),
        session_id,
        invocation_id: invocation_id.to_owned(),
    }
}

fn new_state(
    inner: &PluginInner,
    caller: &VerifiedCaller,
    invocation_id: &str,
    session_id: Option<String>,
    events: mpsc::Sender<InvocationEvent>,
    credential_failure: &http_hooks::CredentialFailure,
    egress: Option<&(delegate_egress::EgressGateway, delegate_egress::InvocationEgress)>,
) -> StoreState {
    let principal = principal_of(caller, invocation_id, session_id);
    state_for(inner, principal, events, credential_failure, egress)
}

fn state_for(
    inner: &PluginInner,
    principal: bindings::caller::Principal,
    events: mpsc::Sender<InvocationEvent>,
    credential_failure: &http_hooks::CredentialFailure,
    egress: Option<&(delegate_egress::EgressGateway, delegate_egress::InvocationEgress)>,
) -> StoreState {
    let invocation: Arc<str> = principal.invocation_id.as_str().into();
    let logs = stdio::LogPipe::pair(inner.limits.log_bytes, Arc::clone(&inner.name), Arc::clone(&invocation));
    let mut wasi = WasiCtx::builder();
    wasi.stdout(logs.0.clone())
        .stderr(logs.1.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    StoreState {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        http: WasiHttpCtx::new(),
        hooks: http_hooks::EgressHooks {
            plugin: Arc::clone(&inner.name),
            invocation_id: Arc::clone(&invocation),
            egress: egress.cloned(),
            credential_failure: credential_failure.clone(),
        },
        settings: Arc::clone(&inner.settings),
        limiter: limits::Limiter::new(&inner.limits),
        meter: limits::CpuMeter::new(inner.limits.cpu),
        principal,
        events,
        output_used: 0,
        output_limit: inner.limits.output_bytes,
        logs,
        model: inner.model.clone(),
        budget: delegate_model::ModelBudget::new(inner.limits.model_calls, inner.limits.model_tokens),
        metrics: inner.metrics.clone(),
        model_failure: None,
    }
}

/// A store whose memory and tables are limited and whose guest CPU is metered every epoch.
fn metered_store(inner: &PluginInner, state: StoreState) -> Store<StoreState> {
    let mut store = Store::new(&inner.engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut cx| cx.data_mut().meter.on_epoch());
    store
}

async fn run(
    inner: &PluginInner,
    state: StoreState,
    payload: String,
    started: Instant,
) -> Result<InvocationOutcome, InvocationError> {
    let mut store = metered_store(inner, state);
    store.call_hook(|mut cx, hook| {
        match hook {
            CallHook::CallingWasm | CallHook::ReturningFromHost => cx.data().meter.enter_guest(),
            CallHook::CallingHost | CallHook::ReturningFromWasm => cx.data_mut().meter.leave_guest(),
        }
        Ok(())
    });
    let _instance = inner.metrics.as_ref().map(delegate_metrics::Metrics::instance);
    let called = async {
        inner.instances.fetch_add(1, Ordering::Relaxed);
        let instantiating = Instant::now();
        let agent: Agent = inner.pre.instantiate_async(&mut store).await?;
        if let Some(m) = &inner.metrics {
            m.record_phase(delegate_metrics::Phase::Instantiate, instantiating.elapsed());
        }
        agent.call_invoke(&mut store, &payload).await
    }
    .await;
    if let Some(inspect) = &inner.inspector {
        let id = store.data().principal.invocation_id.clone();
        for instance in store.debug_all_instances() {
            let mut index = 0;
            while let Some(memory) = instance.debug_memory(&mut store, index) {
                inspect(&id, memory.data(&store));
                index += 1;
            }
        }
    }
    let data = store.data();
    data.logs.0.flush_pending();
    data.logs.1.flush_pending();
    match called {
        // The result goes to the caller too (JSON answer, final SSE event): it counts against
        // the same output limit as emitted text.
        Ok(Ok(result)) if data.output_used.saturating_add(result.len() as u64) > data.output_limit => {
            Err(InvocationError::OutputLimit)
        }
        Ok(Ok(result)) => Ok(InvocationOutcome {
            cpu: data.meter.used(),
            elapsed: started.elapsed(),
            output_bytes: data.output_used + result.len() as u64,
            model_usage: data.budget.used(),
            result,
        }),
        Ok(Err(e)) => Err(data.model_failure.as_ref().and_then(model_failure).unwrap_or_else(|| {
            InvocationError::PluginError { code: sanitize_code(&e.code), message: truncate(e.message, 2048) }
        })),
        Err(e) => Err(classify(&e)),
    }
}

/// The invocation error for a plugin that failed after its last model call failed with `e`,
/// when that failure is the provider's (not the request's, the budget's or the config's
/// absence of a model).
fn model_failure(e: &delegate_model::ModelError) -> Option<InvocationError> {
    use delegate_model::ModelErrorKind as K;
    let (status, code) = match e.kind {
        K::Throttled => (503, "model_throttled"),
        K::ModelNotReady => (503, "model_not_ready"),
        K::ServiceUnavailable => (503, "model_service_unavailable"),
        K::ModelTimeout => (504, "model_timeout"),
        K::Internal => (502, "model_internal_error"),
        K::AccessDenied => (502, "model_access_denied"),
        K::NotFound => (502, "model_not_found"),
        K::ModelError => (424, "model_error"),
        K::StreamError => (424, "model_stream_error"),
        K::Unavailable | K::Validation | K::BudgetExceeded => return None,
    };
    Some(InvocationError::Model { status, code, message: truncate(e.message.clone(), 512) })
}

/// Maps a trap (or host error raised as one) to the invocation's outcome.
fn classify(e: &wasmtime::Error) -> InvocationError {
    if e.downcast_ref::<limits::CpuLimitExceeded>().is_some() {
        return InvocationError::CpuLimit;
    }
    if e.downcast_ref::<limits::MemoryLimitExceeded>().is_some() {
        return InvocationError::MemoryLimit;
    }
    if e.downcast_ref::<limits::OutputLimitExceeded>().is_some() {
        return InvocationError::OutputLimit;
    }
    if e.downcast_ref::<limits::LogLimitExceeded>().is_some() {
        return InvocationError::LogLimit;
    }
    if e.downcast_ref::<limits::CallerGone>().is_some() {
        return InvocationError::CallerGone;
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => InvocationError::StackOverflow,
        Some(Trap::Interrupt) => InvocationError::CpuLimit,
        Some(trap) => InvocationError::PluginTrap(trap.to_string()),
        None => {
            let msg = e.root_cause().to_string();
            if msg.contains("maximum concurrent limit") {
                InvocationError::Capacity
            } else {
                InvocationError::PluginTrap(truncate(msg, 512))
            }
        }
    }
}

fn sanitize_code(code: &str) -> String {
    let ok = (1..=64).contains(&code.len())
        && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok { code.to_owned() } else { "plugin_error".to_owned() }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}
