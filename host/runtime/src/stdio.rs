//! The guest's stdout and stderr: captured, size-capped, forwarded line by line to `tracing`.
//!
//! Nothing is inherited from the host process. Writing past the cap traps the guest with
//! `log_limit`, so a log flood cannot fill the host's disk or memory.

use crate::limits::LogLimitExceeded;
use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Longest line forwarded as one log event; longer lines are split.
const MAX_LINE: usize = 4096;

struct Shared {
    used: u64,
    limit: u64,
    pending: Vec<u8>,
}

/// One invocation's log pipe (stdout and stderr share the budget).
#[derive(Clone)]
pub(crate) struct LogPipe {
    shared: Arc<Mutex<Shared>>,
    stream: &'static str,
    plugin: Arc<str>,
    invocation_id: Arc<str>,
}

impl LogPipe {
    /// A pair (stdout, stderr) sharing one budget of `limit` bytes.
    pub(crate) fn pair(limit: u64, plugin: Arc<str>, invocation_id: Arc<str>) -> (Self, Self) {
        let shared = Arc::new(Mutex::new(Shared { used: 0, limit, pending: Vec::new() }));
        let out = Self { shared, stream: "stdout", plugin, invocation_id };
        let mut err = out.clone();
        err.stream = "stderr";
        (out, err)
    }

    fn emit_line(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        tracing::info!(
            target: "delegate::plugin_log",
            plugin = %self.plugin,
            invocation_id = %self.invocation_id,
            stream = self.stream,
            "{}",
            text.trim_end_matches('\r')
        );
    }

    fn append(&self, bytes: &[u8]) -> Result<(), LogLimitExceeded> {
        let mut lines = Vec::new();
        {
            let mut s = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if s.used + bytes.len() as u64 > s.limit {
                return Err(LogLimitExceeded(s.limit));
            }
            s.used += bytes.len() as u64;
            for &b in bytes {
                if b == b'\n' || s.pending.len() >= MAX_LINE {
                    lines.push(std::mem::take(&mut s.pending));
                    if b == b'\n' {
                        continue;
                    }
                }
                s.pending.push(b);
            }
        }
        for line in lines {
            self.emit_line(&line);
        }
        Ok(())
    }

    /// Forwards a last unterminated line, if any.
    pub(crate) fn flush_pending(&self) {
        let rest = {
            let mut s = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::take(&mut s.pending)
        };
        if !rest.is_empty() {
            self.emit_line(&rest);
        }
    }

    fn remaining(&self) -> u64 {
        let s = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.limit.saturating_sub(s.used)
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes).map_err(|e| StreamError::Trap(wasmtime::Error::new(e)))
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        match self.remaining() {
            // Refuse with the limit error rather than `Closed`, so the outcome is `log_limit`.
            0 => Err(StreamError::Trap(wasmtime::Error::new(LogLimitExceeded(
                self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).limit,
            )))),
            n => Ok(usize::try_from(n.min(64 * 1024)).unwrap_or(64 * 1024)),
        }
    }
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(
            self.append(buf)
                .map(|()| buf.len())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::QuotaExceeded, e)),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
