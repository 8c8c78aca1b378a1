//! Why a request was not authorized.

/// The HTTP-level class of an [`AuthError`] (the server maps it; this crate knows no HTTP
/// server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// 401 with `WWW-Authenticate: Bearer error="invalid_token"`: no valid token.
    Unauthenticated,
    /// 403 with `WWW-Authenticate: Bearer error="insufficient_scope"`: a valid token whose
    /// client, scopes or claims are not allowed here.
    Forbidden,
    /// 503 with `Retry-After`: no signing keys could be loaded yet (IdP unreachable since
    /// start). Nothing is accepted meanwhile.
    Unavailable,
}

/// Why a token was refused. `Display` is for logs: it names the failed check, never token
/// content. Callers get only [`AuthError::public_message`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("no bearer token")]
    MissingToken,
    /// Several `Authorization` headers, another scheme, or a malformed value.
    #[error("malformed Authorization header")]
    MalformedHeader,
    /// The `Authorization` value exceeds `max_token_bytes`.
    #[error("token exceeds the size limit")]
    TokenTooLarge,
    /// Not a JWS compact token: segment count, base64url, JSON, or duplicate keys.
    #[error("malformed token")]
    MalformedToken,
    /// A header parameter this authorizer refuses (`jku`, `x5u`, `jwk`, `x5c`, `crit`, `b64`,
    /// `enc`, `zip`, `cty`) or an unexpected `typ`.
    #[error("token header parameter {0} is not accepted")]
    HeaderParameter(&'static str),
    /// `alg` missing, unknown, not configured, or not usable with the selected key.
    #[error("token algorithm is not accepted")]
    Algorithm,
    /// No `kid` in the header.
    #[error("token has no key id")]
    MissingKeyId,
    /// The `kid` is not in the issuer's key set (after the rate-limited refresh).
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("signature verification failed")]
    Signature,
    /// `iss` missing or not one of the configured issuers.
    #[error("token issuer is not accepted")]
    Issuer,
    /// `tid` not in `allowed_tenants`.
    #[error("token tenant is not accepted")]
    Tenant,
    /// `aud` missing or not allowed.
    #[error("token audience is not accepted")]
    Audience,
    /// `exp` (plus leeway) has passed.
    #[error("token has expired")]
    Expired,
    /// `nbf` (minus leeway) is in the future.
    #[error("token is not yet valid")]
    NotYetValid,
    /// A claim is missing where required or has the wrong type or form.
    #[error("token claim {0} is missing or invalid")]
    Claim(&'static str),
    /// The client (`azp`/`appid`/`client_id`) is missing or not in `allowed_clients`.
    #[error("client is not allowed")]
    Client,
    /// A required scope is missing.
    #[error("required scope missing")]
    Scope,
    /// A claim rule is not satisfied.
    #[error("claim rule on {0} not satisfied")]
    ClaimRule(String),
    /// No key set has been loaded yet and the IdP could not be reached.
    #[error("signing keys unavailable")]
    KeysUnavailable,
    /// The token's delegation chain (nested `act` claims) is longer than `max_chain_depth`:
    /// too many agents in a row, or a loop.
    #[error("delegation chain of {depth} actors exceeds the limit of {max}")]
    ChainTooDeep {
        /// Actors in the token's chain.
        depth: usize,
        /// The configured `max_chain_depth`.
        max: usize,
    },
    /// The signed hop counter header ([`crate::HOP_HEADER`]) is malformed, oversized,
    /// repeated, does not verify for the presented token under this host's hop key, or is
    /// missing from a client listed in `hop_required_from`. The text says which, never the
    /// header's content.
    #[error("hop counter header {}", .0)]
    InvalidHop(&'static str),
}

impl AuthError {
    /// The HTTP class: 401, 403 or 503.
    pub fn status_class(&self) -> AuthFailure {
        match self {
            AuthError::Client
            | AuthError::Scope
            | AuthError::ClaimRule(_)
            | AuthError::ChainTooDeep { .. } => AuthFailure::Forbidden,
            AuthError::KeysUnavailable => AuthFailure::Unavailable,
            _ => AuthFailure::Unauthenticated,
        }
    }

    /// A stable code naming the failed check, for logs, metrics and audit (not for the caller).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::MalformedHeader => "malformed_authorization",
            AuthError::TokenTooLarge => "token_too_large",
            AuthError::MalformedToken => "malformed_token",
            AuthError::HeaderParameter(_) => "forbidden_header_parameter",
            AuthError::Algorithm => "algorithm_not_allowed",
            AuthError::MissingKeyId => "missing_kid",
            AuthError::UnknownKey => "unknown_kid",
            AuthError::Signature => "bad_signature",
            AuthError::Issuer => "issuer_not_allowed",
            AuthError::Tenant => "tenant_not_allowed",
            AuthError::Audience => "audience_not_allowed",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::Claim(_) => "invalid_claim",
            AuthError::Client => "client_not_allowed",
            AuthError::Scope => "insufficient_scope",
            AuthError::ClaimRule(_) => "claim_rule_failed",
            AuthError::KeysUnavailable => "keys_unavailable",
            AuthError::ChainTooDeep { .. } => "chain_depth_exceeded",
            AuthError::InvalidHop(_) => "invalid_hop",
        }
    }

    /// The `WWW-Authenticate` value for the response (RFC 6750 §3); `None` for 503.
    pub fn www_authenticate(&self) -> Option<&'static str> {
        match self.status_class() {
            AuthFailure::Unauthenticated => Some(r#"Bearer error="invalid_token""#),
            AuthFailure::Forbidden => Some(r#"Bearer error="insufficient_scope""#),
            AuthFailure::Unavailable => None,
        }
    }

    /// The message safe to show the caller: the same for every failure of a class, so the
    /// response never tells an attacker which check failed.
    pub fn public_message(&self) -> &'static str {
        match self.status_class() {
            AuthFailure::Unauthenticated => "missing or invalid bearer token",
            AuthFailure::Forbidden => "the token does not grant access to this resource",
            AuthFailure::Unavailable => "authorization is temporarily unavailable",
        }
    }
}
