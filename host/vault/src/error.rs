//! Vault errors: the IdP's own error code kept, mapped once to a caller-facing status.
//!
//! Nothing here holds a token, a secret, or the IdP's raw response body: only the parsed
//! `error`, `error_codes`, `suberror`, trace/correlation ids (for the operator's support
//! ticket) and the `claims` challenge (which the caller needs to get a new token).

use base64::Engine;
use std::fmt;

/// The parsed, sanitised parts of an IdP error response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdpError {
    /// HTTP status the IdP answered with.
    pub http_status: u16,
    /// OAuth `error` (e.g. `invalid_grant`).
    pub error: String,
    /// Entra `error_codes` (AADSTS numbers).
    pub codes: Vec<u64>,
    /// Entra `suberror` (e.g. `consent_required`).
    pub suberror: Option<String>,
    /// Entra `trace_id`.
    pub trace_id: Option<String>,
    /// Entra `correlation_id`.
    pub correlation_id: Option<String>,
}

impl fmt::Display for IdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} error={}", self.http_status, self.error)?;
        if !self.codes.is_empty() {
            let codes: Vec<String> = self.codes.iter().map(|c| format!("AADSTS{c}")).collect();
            write!(f, " codes={}", codes.join(","))?;
        }
        if let Some(s) = &self.suberror {
            write!(f, " suberror={s}")?;
        }
        if let Some(t) = &self.trace_id {
            write!(f, " trace_id={t}")?;
        }
        if let Some(c) = &self.correlation_id {
            write!(f, " correlation_id={c}")?;
        }
        Ok(())
    }
}

impl IdpError {
    /// Whether the IdP reported this AADSTS code.
    pub fn has_code(&self, code: u64) -> bool {
        self.codes.contains(&code)
    }
}

/// Why the vault could not provide a token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// The next agent host would count a delegation chain longer than the provider's
    /// `max_chain_depth` (in the token's `act` chain or the signed hop counter): it would
    /// refuse the call (or this is a loop).
    #[error(
        "provider `{provider}`: the delegation chain would be {depth} actors deep, over the limit of {max}"
    )]
    ChainTooDeep {
        /// The provider.
        provider: String,
        /// The chain depth the next host would count.
        depth: usize,
        /// The provider's `max_chain_depth`.
        max: usize,
    },
    /// An egress rule names a provider the vault does not have (configuration bug).
    #[error("credential provider `{provider}` is not configured")]
    UnknownProvider {
        /// The requested name.
        provider: String,
    },
    /// On-Behalf-Of and token exchange need a delegated user token; the caller's is app-only.
    #[error("provider `{provider}` acts on behalf of a user, but the caller's token is app-only")]
    UserTokenRequired {
        /// The provider.
        provider: String,
    },
    /// The IdP refused the caller's token as an assertion (e.g. AADSTS500133: expired).
    #[error("provider `{provider}`: the identity provider rejected the caller's token ({idp})")]
    CallerTokenRejected {
        /// The provider.
        provider: String,
        /// The IdP's error.
        idp: Box<IdpError>,
    },
    /// The user or an admin has not consented to delegate calling the API (AADSTS65001).
    #[error("provider `{provider}`: consent required ({idp})")]
    ConsentRequired {
        /// The provider.
        provider: String,
        /// The IdP's error.
        idp: Box<IdpError>,
    },
    /// MFA / Conditional Access: the caller must get a new token satisfying `claims`.
    #[error("provider `{provider}`: interaction required ({idp})")]
    InteractionRequired {
        /// The provider.
        provider: String,
        /// The IdP's error.
        idp: Box<IdpError>,
        /// The claims challenge (a JSON object, as the IdP encoded it in a string).
        claims: Option<String>,
    },
    /// The IdP refused delegate's own request: bad client secret (`invalid_client`), bad scope,
    /// wrong audience. An operator problem.
    #[error("provider `{provider}` is misconfigured ({idp})")]
    Misconfigured {
        /// The provider.
        provider: String,
        /// The IdP's error.
        idp: Box<IdpError>,
    },
    /// The IdP did not answer usefully within the bounded retries (timeout, 5xx, 429).
    #[error("provider `{provider}` is unavailable after {attempts} attempt(s): {cause}")]
    Unavailable {
        /// The provider.
        provider: String,
        /// Attempts made.
        attempts: u32,
        /// What went wrong last (a fixed description, e.g. `timeout`, `HTTP 503`).
        cause: String,
    },
    /// The IdP answered 200 with something that is not a usable token response, or an error
    /// response that is not OAuth JSON.
    #[error("provider `{provider}` returned an invalid response: {detail}")]
    InvalidResponse {
        /// The provider.
        provider: String,
        /// What was wrong (fixed text, never the body).
        detail: &'static str,
    },
    /// An `agentcore_identity` provider was asked for a token, but the request carried no
    /// workload access token (delegate is not behind AgentCore Runtime, or the inbound mode
    /// is `standalone`).
    #[error(
        "provider `{provider}` needs the workload access token AgentCore Runtime passes, and the request has none"
    )]
    WorkloadTokenRequired {
        /// The provider.
        provider: String,
    },
    /// The caller is known only by a workload access token (inbound mode
    /// `agentcore_workload_token` without `Authorization`): providers that present the
    /// caller's own JWT, or issue machine tokens, are refused for it.
    #[error(
        "provider `{provider}` needs a caller whose JWT delegate verified; only agentcore_identity providers work with a workload access token alone"
    )]
    VerifiedCallerRequired {
        /// The provider.
        provider: String,
    },
    /// AgentCore Identity refused `GetResourceOauth2Token`. Only the exception name and the
    /// AWS request id are kept (AWS messages can echo request members).
    #[error("provider `{provider}`: AgentCore Identity refused the request ({error}{})", request_id.as_deref().map(|id| format!(", request id {id}")).unwrap_or_default())]
    AgentCoreRefused {
        /// The provider.
        provider: String,
        /// The AWS exception name: `UnauthorizedException` (the workload access token is
        /// invalid or expired), `AccessDeniedException` (IAM, or the token exchange was
        /// refused), `ResourceNotFoundException` (no such credential provider) or
        /// `ValidationException`.
        error: &'static str,
        /// `x-amzn-RequestId`, for the operator's support case.
        request_id: Option<String>,
    },
}

impl VaultError {
    /// HTTP status for the caller of `/invocations`.
    pub fn status(&self) -> u16 {
        match self {
            Self::ChainTooDeep { .. } => 403,
            Self::CallerTokenRejected { .. } | Self::InteractionRequired { .. } => 401,
            Self::ConsentRequired { .. } | Self::UserTokenRequired { .. } => 403,
            Self::UnknownProvider { .. } | Self::Misconfigured { .. } | Self::InvalidResponse { .. } => 502,
            Self::Unavailable { .. } => 503,
            Self::WorkloadTokenRequired { .. } | Self::VerifiedCallerRequired { .. } => 403,
            Self::AgentCoreRefused { error: "UnauthorizedException", .. } => 401,
            Self::AgentCoreRefused { error: "AccessDeniedException", .. } => 403,
            Self::AgentCoreRefused { .. } => 502,
        }
    }

    /// Stable error code for the caller.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ChainTooDeep { .. } => "chain_depth_exceeded",
            Self::CallerTokenRejected { idp, .. } if idp.has_code(500133) => "token_expired",
            Self::CallerTokenRejected { .. } => "invalid_token",
            Self::InteractionRequired { .. } => "interaction_required",
            Self::ConsentRequired { .. } => "consent_required",
            Self::UserTokenRequired { .. } => "user_token_required",
            Self::UnknownProvider { .. } | Self::Misconfigured { .. } => "credential_provider_misconfigured",
            Self::InvalidResponse { .. } => "credential_provider_invalid_response",
            Self::Unavailable { .. } => "credential_provider_unavailable",
            Self::WorkloadTokenRequired { .. } => "workload_token_required",
            Self::VerifiedCallerRequired { .. } => "verified_caller_required",
            Self::AgentCoreRefused { error: "UnauthorizedException", .. } => "workload_token_rejected",
            Self::AgentCoreRefused { error: "AccessDeniedException", .. } => {
                "credential_provider_access_denied"
            }
            Self::AgentCoreRefused { .. } => "credential_provider_misconfigured",
        }
    }

    /// The `WWW-Authenticate` header for 401 answers (RFC 6750 §3; for a claims challenge the
    /// form Microsoft documents for OBO middle tiers, with the claims base64-encoded).
    pub fn www_authenticate(&self) -> Option<String> {
        match self {
            Self::CallerTokenRejected { idp, .. } if idp.has_code(500133) => Some(
                r#"Bearer error="invalid_token", error_description="the access token has expired""#.into(),
            ),
            Self::CallerTokenRejected { .. } => Some(r#"Bearer error="invalid_token""#.into()),
            Self::InteractionRequired { claims: Some(claims), .. } => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(claims.as_bytes());
                Some(format!(r#"Bearer error="insufficient_claims", claims="{b64}""#))
            }
            Self::InteractionRequired { claims: None, .. } => {
                Some(r#"Bearer error="interaction_required""#.into())
            }
            // Every 401 carries a challenge (RFC 9110 §15.5.2). The rejected credential is the
            // runtime's workload access token, which the runtime mints afresh per request.
            Self::AgentCoreRefused { error: "UnauthorizedException", .. } => Some(
                r#"Bearer error="invalid_token", error_description="the workload access token was rejected""#
                    .into(),
            ),
            _ => None,
        }
    }
}
