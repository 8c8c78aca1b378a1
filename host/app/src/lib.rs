//! The composition root: turns a validated [`Config`] into a running host.
//!
//! `delegate serve`, `delegate demo` and the end-to-end tests all start the host through
//! [`Host::start`], so the demo and the tests exercise exactly the production wiring.

mod deploy;
mod wiring;

use delegate_config::Config;
use delegate_runtime::{PluginRegistry, Runtime, RuntimeOptions};
use delegate_server::{AppState, ServerOptions};
use std::net::SocketAddr;
use std::sync::Arc;

pub use delegate_runtime::Plugin;
pub use deploy::{Deployer, UNVERSIONED};

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

/// A running host: the server task(s) and their state.
pub struct Host {
    /// Where the AgentCore-contract listener listens.
    pub addr: SocketAddr,
    /// Where the admin API listens, if `[admin]` is configured.
    pub admin_addr: Option<SocketAddr>,
    /// Handler state (draining, load).
    pub state: Arc<AppState>,
    /// The plugins served and their versions.
    pub registry: Arc<PluginRegistry>,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    admin_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
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
        let mut options = RuntimeOptions::new(&config.engine, &config.plugins);
        options.cache_dir.clone_from(&config.engine.cache_dir);
        let metrics = delegate_metrics::Metrics::new();
        let runtime = Runtime::new(&options).map_err(StartError::failed)?.with_metrics(Arc::clone(&metrics));
        let registry = Arc::new(
            PluginRegistry::new(config.plugins.iter().map(|p| p.name.clone()), &config.default_plugin().name)
                .map_err(StartError::usage)?,
        );
        let model = wiring::model_provider(config, aws_credentials.clone()).await?;
        let gateway =
            wiring::egress_gateway(config, &aws_credentials, wiring::audit_sink(config)?, &metrics)?
                .with_metrics(Arc::clone(&metrics));
        let oci = wiring::oci_client(config)?;
        let deployer = Arc::new(Deployer::new(
            runtime,
            Arc::clone(&registry),
            Arc::new(config.clone()),
            model,
            gateway,
            oci,
        ));
        deployer.load_configured(component).await?;
        let authorizer = wiring::authorizer(config).await?;
        let state = AppState::with_metrics(
            Arc::clone(&registry),
            authorizer,
            ServerOptions::from_settings(&config.server),
            Arc::clone(&metrics),
        );
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .map_err(|e| StartError::usage(format!("cannot listen on {}: {e}", config.server.listen)))?;
        let addr = listener.local_addr().map_err(StartError::failed)?;

        let (tx, rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let (admin_addr, admin_task) = match &config.admin {
            None => (None, None),
            Some(admin) => {
                let token = wiring::admin_token(admin)?;
                let admin_listener = tokio::net::TcpListener::bind(admin.listen).await.map_err(|e| {
                    StartError::usage(format!("admin: cannot listen on {}: {e}", admin.listen))
                })?;
                let admin_addr = admin_listener.local_addr().map_err(StartError::failed)?;
                let router = delegate_server::admin::router(
                    Arc::clone(&registry),
                    Arc::clone(&deployer) as Arc<dyn delegate_server::admin::PluginAdmin>,
                    delegate_server::admin::AdminOptions {
                        token,
                        max_component_bytes: admin.max_component_bytes,
                        metrics: Arc::clone(&metrics),
                    },
                );
                tracing::info!(listen = %admin_addr, "admin API is serving");
                let task = tokio::spawn(delegate_server::serve(admin_listener, router, stopped(rx.clone())));
                (Some(admin_addr), Some(task))
            }
        };
        let default = registry.default_plugin();
        tracing::info!(
            listen = %addr,
            plugin = %registry.default_name(),
            version = default.as_ref().map(Plugin::version),
            digest = default.as_ref().map(Plugin::digest),
            "delegate is serving"
        );
        let router = delegate_server::router(Arc::clone(&state));
        let task = tokio::spawn(delegate_server::serve(listener, router, stopped(rx)));
        Ok(Self { addr, admin_addr, state, registry, shutdown: Some(tx), task, admin_task })
    }

    /// The active version of the default plugin.
    pub fn plugin(&self) -> Option<Plugin> {
        self.registry.default_plugin()
    }

    /// Stops taking new invocations, lets in-flight ones finish (up to `grace`), then stops.
    pub async fn shutdown(mut self, grace: std::time::Duration) -> Result<(), StartError> {
        self.state.start_draining();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(admin) = self.admin_task.take() {
            // The admin API has no long-lived requests; it stops with the public listener.
            let _ = tokio::time::timeout(grace, admin).await;
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
