//! `delegate serve`: the production entry point.

use crate::Failure;
use delegate_app::Host;
use delegate_config::Config;
use std::path::Path;

pub(crate) fn run(config_path: &Path, log_format: &str) -> Result<(), Failure> {
    let config = Config::load(config_path).map_err(|e| Failure::usage(format!("config error: {e}")))?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.server.worker_threads {
        builder.worker_threads(threads);
    }
    let rt = builder
        .enable_all()
        .thread_name("delegate")
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the async runtime: {e}")))?;
    // Logging starts once `[telemetry]` is known, so OTLP export sees the first span too.
    let telemetry = match &config.telemetry {
        Some(settings) => {
            let (telemetry, layer) =
                crate::telemetry::start::<crate::LogRegistry>(settings, &config.outbound, rt.handle())?;
            crate::init_logging(log_format, Some(Box::new(layer)));
            tracing::info!(endpoint = %settings.otlp_endpoint, "exporting traces over OTLP/HTTP");
            Some(telemetry)
        }
        None => {
            crate::init_logging(log_format, None);
            None
        }
    };
    tracing::info!(worker_threads = rt.metrics().num_workers(), "async runtime started");
    rt.block_on(async {
        let host = Host::start(&config, None).await.map_err(Failure::from)?;
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight invocations");
        host.shutdown(config.server.shutdown_grace).await.map_err(Failure::from)?;
        // The last invocations' spans are queued by now; send them before exiting.
        if let Some(telemetry) = telemetry {
            telemetry.shutdown(settings_timeout(&config)).await;
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// How long the final trace flush may take: one export request's limit.
fn settings_timeout(config: &Config) -> std::time::Duration {
    config.telemetry.as_ref().map_or(std::time::Duration::ZERO, |t| t.export_timeout)
}

impl From<delegate_app::StartError> for Failure {
    fn from(e: delegate_app::StartError) -> Self {
        if e.usage { Failure::usage(e.message) } else { Failure::failed(e.message) }
    }
}

/// SIGTERM (container stop) or SIGINT (Ctrl-C).
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
