//! `delegate serve`: the production entry point.

use crate::Failure;
use delegate_config::Config;
use delegate_runtime::{Runtime, RuntimeOptions};
use delegate_server::{AppState, ServerOptions};
use std::path::Path;
use std::sync::Arc;

pub(crate) fn run(config_path: &Path) -> Result<(), Failure> {
    let config = Config::load(config_path).map_err(|e| Failure::usage(format!("config error: {e}")))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("delegate")
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(serve(config))
}

async fn serve(config: Config) -> Result<(), Failure> {
    let runtime =
        Runtime::new(&RuntimeOptions::new(&config.engine, &config.plugins)).map_err(Failure::failed)?;
    let settings = config.default_plugin();
    let model = crate::wiring::model_access(&config, settings).await?;
    let sink = crate::wiring::audit_sink(&config)?;
    let egress = crate::wiring::egress_access(&config, settings, sink)?;
    let plugin = runtime
        .load_plugin(settings, model)
        .map_err(|e| Failure::usage(format!("plugin {}: {e}", settings.name)))?
        .with_egress(egress);
    let authorizer = crate::wiring::authorizer(&config).await?;
    let state = AppState::new(plugin, authorizer, ServerOptions::from_settings(&config.server));
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| Failure::usage(format!("cannot listen on {}: {e}", config.server.listen)))?;
    tracing::info!(listen = %config.server.listen, plugin = %settings.name, "delegate is serving");
    let router = delegate_server::router(Arc::clone(&state));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(delegate_server::serve(listener, router, async move {
        let _ = rx.await;
    }));
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight invocations");
    state.start_draining();
    let _ = tx.send(());
    match tokio::time::timeout(config.server.shutdown_grace, server).await {
        Ok(Ok(Ok(()))) => {
            tracing::info!("stopped");
            Ok(())
        }
        Ok(Ok(Err(e))) => Err(Failure::failed(format!("server error: {e}"))),
        Ok(Err(e)) => Err(Failure::failed(format!("server task failed: {e}"))),
        Err(_) => {
            tracing::warn!(grace = ?config.server.shutdown_grace, "in-flight invocations did not finish in time");
            Ok(())
        }
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
