//! The composition root: turns a validated [`Config`] into a running host.
//!
//! `delegate serve`, `delegate demo` and the end-to-end tests all start the host through
//! [`Host::start`], so the demo and the tests exercise exactly the production wiring.

mod wiring;

use delegate_config::Config;
use delegate_runtime::{Runtime, RuntimeOptions};
use delegate_server::{AppState, ServerOptions};
use std::net::SocketAddr;
use std::sync::Arc;

pub use delegate_runtime::Plugin;

/// Why the host could not start. `usage` errors are the operator's (bad config, port in use).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StartError {
    /// Whether it is a configuration/usage problem (exit code 2) rather than a failure.
    pub usage: bool,
    /// One line.
    pub message: String,
}

impl StartError {
    pub(crate) fn usage(message: impl std::fmt::Display) -> Self {
        Self { usage: true, message: message.to_string() }
    }

    pub(crate) fn failed(message: impl std::fmt::Display) -> Self {
        Self { usage: false, message: message.to_string() }
    }
}

/// A running host: the server task and its state.
pub struct Host {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Handler state (draining, load).
    pub state: Arc<AppState>,
    /// The plugin it serves.
    pub plugin: Plugin,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Host {
    /// Builds every component from `config` and starts serving. The default plugin's
    /// component is read from `config`, unless `component` gives its bytes (an embedded
    /// plugin).
    pub async fn start(config: &Config, component: Option<&[u8]>) -> Result<Self, StartError> {
        Self::start_with(config, component, delegate_model::AwsCredentials::DefaultChain).await
    }

    /// Like [`Host::start`], with the AWS credentials for the model provider given explicitly
    /// (the devstack's fixed keys), instead of the aws-config default chain — which would
    /// otherwise probe the instance metadata service.
    pub async fn start_with(
        config: &Config,
        component: Option<&[u8]>,
        aws_credentials: delegate_model::AwsCredentials,
    ) -> Result<Self, StartError> {
        let runtime = Runtime::new(&RuntimeOptions::new(&config.engine, &config.plugins))
            .map_err(StartError::failed)?;
        let settings = config.default_plugin();
        let model = wiring::model_access(config, settings, aws_credentials).await?;
        let sink = wiring::audit_sink(config)?;
        let egress = wiring::egress_access(config, settings, sink)?;
        let plugin = match component {
            Some(bytes) => {
                runtime.load_plugin_bytes(&settings.name, bytes, settings.limits, &settings.settings, model)
            }
            None => runtime.load_plugin(settings, model),
        }
        .map_err(|e| StartError::usage(format!("plugin {}: {e}", settings.name)))?
        .with_egress(egress);
        let authorizer = wiring::authorizer(config).await?;
        let state = AppState::new(plugin.clone(), authorizer, ServerOptions::from_settings(&config.server));
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .map_err(|e| StartError::usage(format!("cannot listen on {}: {e}", config.server.listen)))?;
        let addr = listener.local_addr().map_err(StartError::failed)?;
        tracing::info!(listen = %addr, plugin = %settings.name, digest = plugin.digest(), "delegate is serving");
        let router = delegate_server::router(Arc::clone(&state));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(delegate_server::serve(listener, router, async move {
            let _ = rx.await;
        }));
        Ok(Self { addr, state, plugin, shutdown: Some(tx), task })
    }

    /// Stops taking new invocations, lets in-flight ones finish (up to `grace`), then stops.
    pub async fn shutdown(mut self, grace: std::time::Duration) -> Result<(), StartError> {
        self.state.start_draining();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(grace, self.task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(StartError::failed(format!("server error: {e}"))),
            Ok(Err(e)) => Err(StartError::failed(format!("server task failed: {e}"))),
            Err(_) => {
                tracing::warn!(?grace, "in-flight invocations did not finish in time");
                Ok(())
            }
        }
    }
}
