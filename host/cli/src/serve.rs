//! `delegate serve`: the production entry point.

use crate::Failure;
use delegate_app::Host;
use delegate_config::Config;
use std::path::Path;

pub(crate) fn run(config_path: &Path) -> Result<(), Failure> {
    let config = Config::load(config_path).map_err(|e| Failure::usage(format!("config error: {e}")))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("delegate")
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async {
        let host = Host::start(&config, None).await.map_err(Failure::from)?;
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight invocations");
        host.shutdown(config.server.shutdown_grace).await.map_err(Failure::from)?;
        tracing::info!("stopped");
        Ok(())
    })
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
