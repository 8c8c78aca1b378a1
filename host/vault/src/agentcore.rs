//! The `agentcore_identity` credential provider: Token B from AWS Bedrock AgentCore Identity.
//!
//! Inside AgentCore Runtime the container does not hold the credential provider's client
//! secret; AgentCore Identity does. For each request the runtime passes a workload access
//! token (WAT, header `WorkloadAccessToken`) bound to the workload and the verified user, and
//! the container trades it for the user's downstream token with `GetResourceOauth2Token`
//! (`POST /identities/oauth2/token`, SigV4 with the execution role), naming the credential
//! provider (the article's `EntraIdServiceNow`), the egress rule's scopes and
//! `oauth2Flow=ON_BEHALF_OF_TOKEN_EXCHANGE` (protocols.md §3.3). AgentCore then performs the
//! On-Behalf-Of exchange at Entra with the provider's client credentials.
//!
//! The WAT is a credential: held as a [`Secret`] on the caller, sent only in this request's
//! body, never logged or put into an error (AWS error *messages* are dropped; only the
//! exception name and request id are kept), and scrubbed from downstream responses by the
//! egress gateway.
//!
//! Caching: the answer carries no lifetime, so a token is cached only when it is a JWT whose
//! `exp` can be read (read, not verified: it only shortens how long delegate keeps it), and
//! never past the caller's own expiry. The cache key includes a digest of the WAT besides the
//! caller's identity: delegate cannot check that a WAT belongs to the JWT it came with, so a
//! token obtained with one WAT is only ever served to requests presenting the same WAT.

use crate::config::{InvalidSetting, endpoint, invalid};
use crate::error::VaultError;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_bedrockagentcore::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockagentcore::operation::get_resource_oauth2_token::GetResourceOauth2TokenError;
use aws_sdk_bedrockagentcore::types::Oauth2FlowType;
use delegate_secret::Secret;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::OnceCell;

/// A validated `agentcore_identity` provider.
#[derive(Clone, Debug)]
pub(crate) struct AgentCoreProvider {
    /// `resourceCredentialProviderName`.
    pub(crate) credential_provider: String,
    /// AWS region (else the aws-config chain's).
    pub(crate) region: Option<String>,
    /// Data-plane endpoint override (VPC endpoint, devstack).
    pub(crate) endpoint_url: Option<String>,
}

/// Validates `[vault.providers.<name>]` of kind `agentcore_identity`.
pub(crate) fn validate(
    at: &str,
    c: crate::config::AgentCoreIdentityConfig,
) -> Result<AgentCoreProvider, InvalidSetting> {
    let name = c.credential_provider;
    if name.is_empty()
        || name.len() > 128
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            format!("{at}.credential_provider"),
            "AgentCore credential provider names are 1-128 characters of letters, digits, `-` and `_`",
        ));
    }
    if let Some(r) = &c.region
        && (r.is_empty() || !r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
    {
        return Err(invalid(format!("{at}.region"), "must look like us-east-1"));
    }
    let endpoint_url = match c.endpoint_url {
        Some(raw) => {
            let url = endpoint(&format!("{at}.endpoint_url"), &raw)?;
            if url.query().is_some() {
                return Err(invalid(format!("{at}.endpoint_url"), "must not have a query"));
            }
            Some(raw.trim_end_matches('/').to_owned())
        }
        None => None,
    };
    Ok(AgentCoreProvider { credential_provider: name, region: c.region, endpoint_url })
}

/// How `agentcore_identity` providers reach AWS: the same credentials as the Bedrock model
/// client, and the operator's CA bundle.
#[derive(Clone, Debug, Default)]
pub struct AgentCoreAws {
    /// Fixed keys (the devstack, tests); `None`: the aws-config default chain (inside
    /// AgentCore Runtime, the execution role).
    pub static_keys: Option<StaticAwsKeys>,
    /// PEM CA certificates trusted for the data-plane endpoint besides the system roots
    /// (`outbound.ca_files`); empty: system roots only.
    pub extra_ca_pem: Vec<u8>,
}

/// Fixed AWS keys.
#[derive(Clone, Debug)]
pub struct StaticAwsKeys {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Session token of temporary credentials.
    pub session_token: Option<Secret>,
}

/// Where the SDK configuration comes from.
#[derive(Debug)]
enum Base {
    Sdk(Box<aws_config::SdkConfig>),
    Access(AgentCoreAws),
}

/// The SDK clients, one per provider, built on first use (loading aws-config is async and
/// may probe the credential chain; a vault without AgentCore providers never does).
#[derive(Debug, Default)]
pub(crate) struct AgentCoreClients {
    base: std::sync::OnceLock<Base>,
    clients: BTreeMap<String, OnceCell<aws_sdk_bedrockagentcore::Client>>,
}

impl AgentCoreClients {
    pub(crate) fn new(providers: &BTreeMap<String, AgentCoreProvider>) -> Self {
        Self {
            base: std::sync::OnceLock::new(),
            clients: providers.keys().map(|k| (k.clone(), OnceCell::new())).collect(),
        }
    }

    /// Uses `sdk` (credentials, region, HTTP client) instead of the aws-config default chain.
    pub(crate) fn set_base(&self, sdk: aws_config::SdkConfig) {
        let _ = self.base.set(Base::Sdk(Box::new(sdk)));
    }

    /// Uses `access` on top of the aws-config default chain. Only the first call counts.
    pub(crate) fn set_access(&self, access: AgentCoreAws) {
        let _ = self.base.set(Base::Access(access));
    }

    async fn load(&self, name: &str, region: Option<&str>) -> Result<aws_config::SdkConfig, VaultError> {
        let access = match self.base.get() {
            Some(Base::Sdk(sdk)) => return Ok((**sdk).clone()),
            Some(Base::Access(access)) => access.clone(),
            None => AgentCoreAws::default(),
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        // A configured region is given to the loader itself: otherwise its default region chain
        // runs first (environment, profile, then IMDS over the network, which outside EC2 costs a
        // timeout at the first token request).
        if let Some(region) = region {
            loader = loader.region(aws_sdk_bedrockagentcore::config::Region::new(region.to_owned()));
        }
        if let Some(k) = &access.static_keys {
            loader = loader.credentials_provider(aws_sdk_bedrockagentcore::config::Credentials::new(
                k.access_key_id.clone(),
                k.secret_access_key.expose().to_owned(),
                k.session_token.as_ref().map(|t| t.expose().to_owned()),
                None,
                "delegate-static",
            ));
        }
        if !access.extra_ca_pem.is_empty() {
            use aws_smithy_http_client::tls;
            let bad = || VaultError::InvalidResponse {
                provider: name.to_owned(),
                detail: "the outbound CA bundle cannot be used for the AgentCore Identity client",
            };
            // System roots stay trusted (the public endpoint); the bundle adds the operator's.
            let trust = tls::TrustStore::default().with_pem_certificate(access.extra_ca_pem.clone());
            let ctx = tls::TlsContext::builder().with_trust_store(trust).build().map_err(|_| bad())?;
            let http = aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
                .tls_context(ctx)
                .build_https();
            loader = loader.http_client(http);
        }
        Ok(loader.load().await)
    }

    async fn client(
        &self,
        name: &str,
        provider: &AgentCoreProvider,
        attempts: u32,
        attempt_timeout: Duration,
        backoff: Duration,
    ) -> Result<&aws_sdk_bedrockagentcore::Client, VaultError> {
        let cell = self
            .clients
            .get(name)
            .ok_or_else(|| VaultError::UnknownProvider { provider: name.to_owned() })?;
        cell.get_or_try_init(|| async {
            let sdk = self.load(name, provider.region.as_deref()).await?;
            let mut conf = aws_sdk_bedrockagentcore::config::Builder::from(&sdk)
                .retry_config(
                    RetryConfig::standard()
                        .with_max_attempts(attempts)
                        .with_initial_backoff(backoff.max(Duration::from_millis(1))),
                )
                .timeout_config(TimeoutConfig::builder().operation_attempt_timeout(attempt_timeout).build());
            if let Some(region) = &provider.region {
                conf = conf.region(aws_sdk_bedrockagentcore::config::Region::new(region.clone()));
            }
            if let Some(url) = &provider.endpoint_url {
                conf = conf.endpoint_url(url.clone());
            }
            let conf = conf.build();
            if conf.region().is_none() {
                return Err(VaultError::InvalidResponse {
                    provider: name.to_owned(),
                    detail: "no AWS region: set the provider's region or AWS_REGION",
                });
            }
            Ok(aws_sdk_bedrockagentcore::Client::from_conf(conf))
        })
        .await
    }
}

/// A token from AgentCore Identity, with the lifetime read from it when it is a JWT.
pub(crate) struct Obtained {
    pub(crate) token: Secret,
    pub(crate) expires_in: Option<u64>,
}

/// `GetResourceOauth2Token` with the On-Behalf-Of flow.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn request_token(
    clients: &AgentCoreClients,
    settings: &crate::config::VaultSettings,
    name: &str,
    provider: &AgentCoreProvider,
    wat: &Secret,
    scopes: &[String],
    now: u64,
) -> Result<Obtained, VaultError> {
    let client = clients
        .client(name, provider, settings.attempts, settings.attempt_timeout, settings.retry_backoff)
        .await?;
    let send = client
        .get_resource_oauth2_token()
        .workload_identity_token(wat.expose())
        .resource_credential_provider_name(&provider.credential_provider)
        .set_scopes(Some(scopes.to_vec()))
        .oauth2_flow(Oauth2FlowType::OnBehalfOfTokenExchange)
        .send();
    // The SDK bounds each attempt; this bounds them all together (attempts × timeout plus
    // backoff), so a hung endpoint cannot hold the invocation past the vault's own budget.
    let overall = settings.attempt_timeout * settings.attempts
        + settings.retry_backoff * (1 << settings.attempts.min(8));
    let out = match tokio::time::timeout(overall, send).await {
        Err(_) => return Err(unavailable(name, settings.attempts, "timeout".into())),
        Ok(Err(e)) => return Err(map_error(name, settings.attempts, &e)),
        Ok(Ok(out)) => out,
    };
    let Some(token) = out.access_token.filter(|t| !t.is_empty()) else {
        return Err(VaultError::InvalidResponse {
            provider: name.to_owned(),
            detail: if out.authorization_url.is_some() {
                "AgentCore Identity asked for user consent (authorizationUrl); the provider must use the on-behalf-of flow"
            } else {
                "AgentCore Identity returned no accessToken"
            },
        });
    };
    let token = Secret::new(token);
    let expires_in = jwt_exp(&token).and_then(|exp| exp.checked_sub(now)).filter(|s| *s > 0);
    Ok(Obtained { token, expires_in })
}

/// The `exp` of a JWT, read without verifying it (it can only shorten caching).
fn jwt_exp(token: &Secret) -> Option<u64> {
    use base64::Engine;
    let mut parts = token.expose().split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    #[derive(serde::Deserialize)]
    struct Exp {
        exp: u64,
    }
    serde_json::from_slice::<Exp>(&bytes).ok().map(|e| e.exp)
}

fn unavailable(name: &str, attempts: u32, cause: String) -> VaultError {
    VaultError::Unavailable { provider: name.to_owned(), attempts, cause }
}

/// AWS errors to vault errors: the exception *name* and request id only (AWS messages can
/// echo request members).
fn map_error(
    name: &str,
    attempts: u32,
    e: &SdkError<GetResourceOauth2TokenError, aws_sdk_bedrockagentcore::config::http::HttpResponse>,
) -> VaultError {
    let refused = |error: &'static str, meta: &dyn ProvideErrorMetadata| VaultError::AgentCoreRefused {
        provider: name.to_owned(),
        error,
        request_id: meta
            .meta()
            .extra("aws_request_id")
            .filter(|id| id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            .map(str::to_owned),
    };
    match e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            match err {
                GetResourceOauth2TokenError::UnauthorizedException(_) => {
                    refused("UnauthorizedException", err)
                }
                GetResourceOauth2TokenError::AccessDeniedException(_) => {
                    refused("AccessDeniedException", err)
                }
                GetResourceOauth2TokenError::ResourceNotFoundException(_) => {
                    refused("ResourceNotFoundException", err)
                }
                GetResourceOauth2TokenError::ValidationException(_) => refused("ValidationException", err),
                GetResourceOauth2TokenError::ThrottlingException(_) => {
                    unavailable(name, attempts, "ThrottlingException".into())
                }
                GetResourceOauth2TokenError::InternalServerException(_) => {
                    unavailable(name, attempts, "InternalServerException".into())
                }
                _ => match err.code() {
                    // SigV4 refusals (bad or unknown keys, clock skew): the execution role's
                    // problem, not the user's.
                    Some(
                        "UnrecognizedClientException"
                        | "InvalidSignatureException"
                        | "IncompleteSignatureException"
                        | "MissingAuthenticationTokenException"
                        | "ExpiredTokenException",
                    ) => refused("AccessDeniedException", err),
                    _ => unavailable(name, attempts, format!("HTTP {}", se.raw().status().as_u16())),
                },
            }
        }
        SdkError::TimeoutError(_) => unavailable(name, attempts, "timeout".into()),
        SdkError::DispatchFailure(_) => unavailable(name, attempts, "connection failed".into()),
        SdkError::ResponseError(_) => VaultError::InvalidResponse {
            provider: name.to_owned(),
            detail: "AgentCore Identity sent an unreadable response",
        },
        SdkError::ConstructionFailure(_) => VaultError::InvalidResponse {
            provider: name.to_owned(),
            detail: "the AgentCore Identity request could not be built (credentials or region)",
        },
        _ => unavailable(name, attempts, "request failed".into()),
    }
}

/// The part of the cache key that ties an entry to one workload access token: 32 hex digits
/// of its SHA-256 (not reversible, and never shown to anyone).
pub(crate) fn wat_digest(wat: &Secret) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(wat.expose().as_bytes()).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[path = "agentcore_tests.rs"]
mod tests;
