//! Builds the policy components (authorizer, model provider) from validated config.

use crate::Failure;
use delegate_config::{Config, PluginSettings};
use delegate_runtime::ModelAccess;
use std::sync::Arc;

/// The model access for `plugin`, if a `[model]` section is configured.
pub(crate) async fn model_access(
    config: &Config,
    plugin: &PluginSettings,
) -> Result<Option<ModelAccess>, Failure> {
    let Some(settings) = &config.model else { return Ok(None) };
    let model_id = plugin.model_id.clone().unwrap_or_else(|| settings.model_id.clone());
    let provider = delegate_model::BedrockProvider::connect(
        settings.clone(),
        delegate_model::AwsCredentials::DefaultChain,
    )
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
