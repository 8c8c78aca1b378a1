//! Builds the policy components (authorizer, model provider) from validated config.

use crate::StartError as Failure;
use delegate_config::{Config, PluginSettings};
use delegate_runtime::ModelAccess;
use std::sync::Arc;

/// The model access for `plugin`, if a `[model]` section is configured.
pub(crate) async fn model_access(
    config: &Config,
    plugin: &PluginSettings,
    credentials: delegate_model::AwsCredentials,
) -> Result<Option<ModelAccess>, Failure> {
    let Some(settings) = &config.model else { return Ok(None) };
    let model_id = plugin.model_id.clone().unwrap_or_else(|| settings.model_id.clone());
    let provider = delegate_model::BedrockProvider::connect(settings.clone(), credentials)
        .await
        .map_err(|e| Failure::usage(format!("model: {e}")))?;
    Ok(Some(ModelAccess {
        provider: Arc::new(provider),
        model_id,
        request_limits: delegate_model::RequestLimits::default(),
    }))
}

/// The inbound JWT authorizer, with its background JWKS refresh started.
pub(crate) async fn authorizer(config: &Config) -> Result<Arc<dyn delegate_server::Authorize>, Failure> {
    let client = delegate_outbound::build_client(&config.outbound)
        .map_err(|e| Failure::usage(format!("outbound: {e}")))?;
    let authorizer = delegate_auth::Authorizer::new(config.auth.clone(), client);
    // The task lives as long as the process; dropping the handle does not stop it.
    drop(authorizer.spawn_refresh());
    Ok(Arc::new(authorizer))
}

/// The egress path for `plugin`: the token vault, the pooled outbound client, the audit sink
/// and the plugin's rules and caps. Plugins without rules still get it, so their denied
/// requests are audited.
pub(crate) fn egress_access(
    config: &Config,
    plugin: &PluginSettings,
    sink: Arc<delegate_egress::AuditSink>,
) -> Result<delegate_runtime::EgressAccess, Failure> {
    let client = delegate_outbound::build_client(&config.outbound)
        .map_err(|e| Failure::usage(format!("outbound: {e}")))?;
    let vault = Arc::new(delegate_vault::TokenVault::new(config.vault.clone(), client.clone()));
    Ok(delegate_runtime::EgressAccess {
        gateway: delegate_egress::EgressGateway::new(vault, client, sink),
        policy: Arc::new(plugin.egress.clone()),
        limits: egress_limits(&plugin.limits),
    })
}

/// The egress caps of a plugin's limits.
pub(crate) fn egress_limits(limits: &delegate_config::Limits) -> delegate_egress::EgressLimits {
    delegate_egress::EgressLimits {
        max_requests: limits.egress_requests,
        max_request_bytes: limits.egress_request_bytes,
        max_response_bytes: limits.egress_response_bytes,
        request_timeout: limits.egress_request_timeout,
    }
}

/// The configured audit sink.
pub(crate) fn audit_sink(config: &Config) -> Result<Arc<delegate_egress::AuditSink>, Failure> {
    match &config.audit {
        delegate_config::AuditTarget::Stdout => Ok(Arc::new(delegate_egress::AuditSink::Stdout)),
        delegate_config::AuditTarget::File(path) => delegate_egress::AuditSink::file(path)
            .map(Arc::new)
            .map_err(|e| Failure::usage(format!("audit.sink {}: {e}", path.display()))),
    }
}
