//! Builds the policy components (authorizer, model provider) from validated config.

use crate::StartError as Failure;
use delegate_config::Config;
use std::sync::Arc;

/// The model provider, if a `[model]` section is configured (shared by every plugin; each
/// gets its own model id).
pub(crate) async fn model_provider(
    config: &Config,
    credentials: delegate_model::AwsCredentials,
) -> Result<Option<Arc<dyn delegate_model::ModelProvider>>, Failure> {
    let Some(settings) = &config.model else { return Ok(None) };
    let provider = delegate_model::BedrockProvider::connect(settings.clone(), credentials)
        .await
        .map_err(|e| Failure::usage(format!("model: {e}")))?;
    Ok(Some(Arc::new(provider)))
}

/// The inbound JWT authorizer, with its background JWKS refresh started.
pub(crate) async fn authorizer(config: &Config) -> Result<Arc<dyn delegate_server::Authorize>, Failure> {
    let client = delegate_outbound::build_client(&config.outbound)
        .map_err(|e| Failure::usage(format!("outbound: {e}")))?;
    let authorizer = delegate_auth::Authorizer::new(config.auth.clone(), client);
    // The task lives as long as the process; dropping the handle does not stop it.
    drop(authorizer.spawn_refresh());
    // `server.inbound`: whether AgentCore Runtime's workload access token is used, and
    // whether it alone may stand for the caller (docs/agentcore.md).
    // A workload access token with no `agentcore_identity` provider to use it is ignored, not
    // parsed: without one, `agentcore` behaves as `standalone`.
    let uses_wat = config.vault.provider_names().any(|n| config.vault.is_agentcore_identity(n));
    let mode = match config.server.inbound {
        delegate_config::InboundMode::AgentCore if !uses_wat => delegate_config::InboundMode::Standalone,
        mode => mode,
    };
    Ok(Arc::new(delegate_server::InboundAuthorizer::new(Arc::new(authorizer), mode)))
}

/// The egress path shared by every plugin: the token vault, the pooled outbound client and
/// the audit sink. Each plugin version adds its own rules and caps.
pub(crate) fn egress_gateway(
    config: &Config,
    aws: &delegate_model::AwsCredentials,
    sink: Arc<delegate_egress::AuditSink>,
    metrics: &Arc<delegate_metrics::Metrics>,
) -> Result<delegate_egress::EgressGateway, Failure> {
    let client = delegate_outbound::build_client(&config.outbound)
        .map_err(|e| Failure::usage(format!("outbound: {e}")))?;
    let vault = match config.vault.redis() {
        None => delegate_vault::TokenVault::new(config.vault.clone(), client.clone()),
        Some(redis) => {
            // Connects lazily: Redis being down at start is a miss like any other, not a
            // start failure (the fleet must come up even while its cache does not).
            let cache = delegate_vault::RedisCache::new(redis, Some(Arc::clone(metrics)))
                .map_err(|e| Failure::usage(e.to_string()))?;
            tracing::info!(url = redis.url(), "token vault: tokens shared with the other replicas in Redis");
            delegate_vault::TokenVault::with_cache(config.vault.clone(), client.clone(), Arc::new(cache))
        }
    };
    let vault = Arc::new(vault);
    if config.vault.provider_names().any(|n| config.vault.is_agentcore_identity(n)) {
        vault.set_agentcore_aws(agentcore_aws(config, aws)?);
    }
    let gateway = delegate_egress::EgressGateway::new(vault, client, sink);
    // `auth.hop_key`: the signed hop counter on rules whose provider marks the hop.
    Ok(match config.auth.hop_key() {
        Some(key) => gateway.with_hop_key(key.clone()),
        None => gateway,
    })
}

/// How `agentcore_identity` providers reach AWS: the model client's credentials, and the
/// operator's CA bundle (`outbound.ca_files`) on top of the system roots.
fn agentcore_aws(
    config: &Config,
    aws: &delegate_model::AwsCredentials,
) -> Result<delegate_vault::AgentCoreAws, Failure> {
    let static_keys = match aws {
        delegate_model::AwsCredentials::DefaultChain => None,
        delegate_model::AwsCredentials::Static { access_key_id, secret_access_key, session_token } => {
            Some(delegate_vault::StaticAwsKeys {
                access_key_id: access_key_id.clone(),
                secret_access_key: secret_access_key.clone(),
                session_token: session_token.clone(),
            })
        }
    };
    let mut extra_ca_pem = Vec::new();
    for path in &config.outbound.extra_ca_pem_files {
        let pem = std::fs::read(path)
            .map_err(|e| Failure::usage(format!("outbound.ca_files {}: {e}", path.display())))?;
        extra_ca_pem.extend_from_slice(&pem);
        extra_ca_pem.push(b'\n');
    }
    Ok(delegate_vault::AgentCoreAws { static_keys, extra_ca_pem })
}

/// The OCI registry client for `oci://` plugin sources and admin deploys: the outbound client
/// (operator CA bundle, timeouts), and the blob cache under `engine.cache_dir` (`oci/`) when
/// there is one, so pulled digests survive a registry outage and a restart.
pub(crate) fn oci_client(config: &Config) -> Result<delegate_oci::RegistryClient, Failure> {
    let http = delegate_outbound::build_client(&config.outbound)
        .map_err(|e| Failure::usage(format!("outbound: {e}")))?;
    let cache = match &config.engine.cache_dir {
        Some(dir) => {
            Some(delegate_oci::BlobCache::open(&dir.join("oci")).map_err(|e| Failure::usage(e.to_string()))?)
        }
        None => None,
    };
    // A pulled component is held to the admin API's limit (64 MiB without an admin API).
    let max_component = config.admin.as_ref().map_or(64 << 20, |a| a.max_component_bytes);
    Ok(delegate_oci::RegistryClient::new(http, config.oci.clone(), cache)
        .with_max_component_bytes(u64::try_from(max_component).unwrap_or(u64::MAX)))
}

/// The admin bearer token, read from its file or environment variable.
pub(crate) fn admin_token(
    admin: &delegate_config::AdminSettings,
) -> Result<delegate_secret::Secret, Failure> {
    let value = match &admin.token {
        delegate_config::AdminTokenSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| Failure::usage(format!("admin.token_file {}: {e}", path.display())))?,
        delegate_config::AdminTokenSource::Env(name) => std::env::var(name).map_err(|_| {
            Failure::usage(format!("admin.token_env: the environment variable {name} is not set"))
        })?,
    };
    let token = delegate_secret::Secret::new(value.trim());
    // A short token could be guessed over a loopback connection in reasonable time.
    if token.len() < 32 {
        return Err(Failure::usage("the admin token must be at least 32 characters"));
    }
    Ok(token)
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
