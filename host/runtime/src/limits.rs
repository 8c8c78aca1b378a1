//! Per-invocation limits: memory and tables (a `ResourceLimiter`), CPU time of guest code only
//! (call hooks + the epoch callback), output and log bytes.
//!
//! Each limit breach is its own error type, raised as a trap, so the invocation's outcome can be
//! classified by downcasting instead of by parsing messages.

use delegate_config::Limits;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The guest went past its CPU time.
#[derive(Debug, thiserror::Error)]
#[error("plugin used more than its CPU time limit of {0:?}")]
pub(crate) struct CpuLimitExceeded(pub Duration);

/// The guest tried to grow memory or a table past its limit.
#[derive(Debug, thiserror::Error)]
#[error("plugin tried to grow {what} to {requested} (limit {limit})")]
pub(crate) struct MemoryLimitExceeded {
    pub what: &'static str,
    pub requested: usize,
    pub limit: u64,
}

/// The guest emitted more text than allowed.
#[derive(Debug, thiserror::Error)]
#[error("plugin emitted more than {0} bytes of output")]
pub(crate) struct OutputLimitExceeded(pub u64);

/// The guest wrote more to stdout/stderr than allowed.
#[derive(Debug, thiserror::Error)]
#[error("plugin wrote more than {0} bytes to its log")]
pub(crate) struct LogLimitExceeded(pub u64);

/// The caller went away; there is nobody to stream to.
#[derive(Debug, thiserror::Error)]
#[error("the caller disconnected")]
pub(crate) struct CallerGone;

/// Memory and table limits for one store.
pub(crate) struct Limiter {
    memory_bytes: u64,
    table_elements: u64,
}

impl Limiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self { memory_bytes: limits.memory_bytes, table_elements: limits.table_elements }
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_bytes {
            // An error (not `Ok(false)`) so the guest cannot mistake a limit for a transient
            // allocation failure, and the outcome is classified as `memory_limit`.
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                what: "linear memory",
                requested: desired,
                limit: self.memory_bytes,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.table_elements {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                what: "a table",
                requested: desired,
                limit: self.table_elements,
            }));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        16
    }
}

const NOT_RUNNING: u64 = u64::MAX;

/// Measures time spent executing guest code.
///
/// Epochs keep ticking while the guest waits on the host (a model call, an HTTP request, a
/// clock), so the epoch count alone would charge waiting as CPU. Instead a slice opens whenever
/// control enters wasm (call, return from a host function, resume after a yield) and closes
/// whenever it leaves (host call, return, epoch yield); only open slices count.
pub(crate) struct CpuMeter {
    base: Instant,
    used: Duration,
    limit: Duration,
    /// Nanoseconds since `base` at which the current slice opened, or `NOT_RUNNING`. Shared
    /// with the yield future, which reopens the slice when the executor resumes the guest.
    slice_start: Arc<AtomicU64>,
}

impl CpuMeter {
    pub(crate) fn new(limit: Duration) -> Self {
        Self {
            base: Instant::now(),
            used: Duration::ZERO,
            limit,
            slice_start: Arc::new(AtomicU64::new(NOT_RUNNING)),
        }
    }

    fn now(base: Instant) -> u64 {
        u64::try_from(base.elapsed().as_nanos()).unwrap_or(NOT_RUNNING - 1)
    }

    pub(crate) fn enter_guest(&self) {
        self.slice_start.store(Self::now(self.base), Ordering::Relaxed);
    }

    pub(crate) fn leave_guest(&mut self) {
        let start = self.slice_start.swap(NOT_RUNNING, Ordering::Relaxed);
        if start != NOT_RUNNING {
            let now = Self::now(self.base);
            self.used += Duration::from_nanos(now.saturating_sub(start));
        }
    }

    /// Guest CPU time so far (closed slices only).
    pub(crate) fn used(&self) -> Duration {
        self.used
    }

    /// Called at each epoch deadline while the guest runs: charge the slice, trap past the
    /// limit, else yield to the executor and reopen the slice when resumed.
    pub(crate) fn on_epoch(&mut self) -> wasmtime::Result<wasmtime::UpdateDeadline> {
        self.leave_guest();
        if self.used > self.limit {
            return Err(wasmtime::Error::new(CpuLimitExceeded(self.limit)));
        }
        let slice = Arc::clone(&self.slice_start);
        let base = self.base;
        Ok(wasmtime::UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                tokio::task::yield_now().await;
                slice.store(Self::now(base), Ordering::Relaxed);
            }),
        ))
    }
}
