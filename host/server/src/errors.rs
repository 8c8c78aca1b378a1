//! The one place where every failure becomes an HTTP status, a stable `code` and a safe message.
//!
//! Responses never carry internal detail that would help an attacker (token parse errors,
//! paths, stack traces); that goes to the log. Tokens go nowhere.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use delegate_runtime::InvocationError;

/// Every failure a caller can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// No or unusable bearer token (RFC 6750 `invalid_token`).
    Unauthenticated,
    /// Valid token, but the client, its scopes or claims are not allowed.
    Forbidden {
        /// Whether RFC 6750's `insufficient_scope` applies.
        insufficient_scope: bool,
    },
    /// Tokens cannot be verified right now (no signing keys loaded yet).
    AuthUnavailable,
    /// A valid token whose delegation chain is longer than `auth.max_chain_depth` (too many
    /// agents in a row, or a loop such as A → B → A).
    ChainTooDeep {
        /// Actors in the token's chain.
        depth: usize,
        /// The configured limit.
        max: usize,
    },
    /// A valid token with a signed hop counter header that is malformed, does not verify, or
    /// is missing where `auth.hop_required_from` requires it.
    InvalidHop,
    /// The session id header is malformed.
    InvalidSessionId,
    /// The body is larger than `server.max_body_kib`.
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is not UTF-8.
    InvalidEncoding,
    /// The body is not JSON.
    InvalidJson,
    /// The body could not be read.
    BodyRead,
    /// No such route.
    NotFound,
    /// Route exists, method does not.
    MethodNotAllowed,
    /// Every invocation slot is busy.
    Busy {
        /// Seconds for `Retry-After`.
        retry_after: u32,
    },
    /// The server is shutting down and takes no new invocations.
    ShuttingDown,
    /// The plugin-selection header is malformed.
    InvalidPluginName,
    /// The request names a plugin that is not configured or has no version deployed.
    PluginNotFound,
    /// The invocation failed.
    Invocation(InvocationError),
}

impl ApiError {
    /// HTTP status, stable code and safe message.
    pub fn parts(&self) -> (StatusCode, &str, String) {
        match self {
            Self::Unauthenticated => {
                (StatusCode::UNAUTHORIZED, "invalid_token", "missing or invalid bearer token".into())
            }
            Self::Forbidden { insufficient_scope: true } => (
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                "the token does not grant access to this resource".into(),
            ),
            Self::Forbidden { insufficient_scope: false } => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "the token does not grant access to this resource".into(),
            ),
            Self::AuthUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                "authorization is temporarily unavailable".into(),
            ),
            Self::ChainTooDeep { depth, max } => (
                StatusCode::FORBIDDEN,
                "chain_depth_exceeded",
                format!(
                    "the delegation chain is {depth} agents deep; this runtime accepts at most {max} (a loop between agents?)"
                ),
            ),
            Self::InvalidHop => (
                StatusCode::UNAUTHORIZED,
                "invalid_hop",
                "the hop counter header (X-Amzn-Bedrock-AgentCore-Runtime-Custom-Delegate-Hop) is missing or does not verify for this token; agent hosts that call each other need the same auth.hop_key".into(),
            ),
            Self::InvalidSessionId => (
                StatusCode::BAD_REQUEST,
                "invalid_session_id",
                "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id must be 33-256 visible ASCII characters".into(),
            ),
            Self::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than {limit} bytes"),
            ),
            Self::InvalidEncoding => {
                (StatusCode::BAD_REQUEST, "invalid_encoding", "the request body is not UTF-8".into())
            }
            Self::InvalidJson => {
                (StatusCode::BAD_REQUEST, "invalid_json", "the request body is not valid JSON".into())
            }
            Self::BodyRead => {
                (StatusCode::BAD_REQUEST, "body_read", "the request body could not be read".into())
            }
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; use POST /invocations or GET /ping".into(),
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route".into(),
            ),
            Self::Busy { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "busy", "all invocation slots are busy; retry later".into())
            }
            Self::ShuttingDown => {
                (StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down".into())
            }
            Self::InvalidPluginName => (
                StatusCode::BAD_REQUEST,
                "invalid_plugin_name",
                "X-Delegate-Plugin must be one plugin name of 1-64 characters [a-z0-9-]".into(),
            ),
            Self::PluginNotFound => (
                StatusCode::NOT_FOUND,
                "plugin_not_found",
                "no such plugin is deployed on this runtime".into(),
            ),
            Self::Invocation(e) => (invocation_status(e), e.code(), e.to_string()),
        }
    }
}

/// Status for a failed invocation (used before streaming starts; mid-stream the status is
/// already 200 and the code travels in the final event).
fn invocation_status(e: &InvocationError) -> StatusCode {
    match e {
        InvocationError::Credential { status, .. } => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
        }
        InvocationError::Model { status, .. } => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
        }
        InvocationError::PluginError { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        InvocationError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        InvocationError::Capacity => StatusCode::SERVICE_UNAVAILABLE,
        InvocationError::CallerGone => StatusCode::BAD_REQUEST,
        InvocationError::CpuLimit
        | InvocationError::MemoryLimit
        | InvocationError::OutputLimit
        | InvocationError::LogLimit
        | InvocationError::StackOverflow
        | InvocationError::PluginTrap(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The JSON error body shared by plain responses and the final SSE error event:
/// `error` (safe message) and `error_type` (stable code), as the bedrock-agentcore SDK does.
pub fn error_body(code: &str, message: &str, request_id: Option<&str>) -> serde_json::Value {
    let mut body = serde_json::json!({ "error": message, "error_type": code });
    if let Some(id) = request_id {
        body["request_id"] = id.into();
    }
    body
}

/// The JSON error body for `error`: [`error_body`], plus `plugin_error_code` — the plugin's
/// own code — when the plugin returned an error. The plugin's code never replaces
/// `error_type`, so a plugin cannot pass itself off as a host error such as `invalid_token`.
pub fn body_for(error: &ApiError, request_id: Option<&str>) -> serde_json::Value {
    let (_, code, message) = error.parts();
    let mut body = error_body(code, &message, request_id);
    if let ApiError::Invocation(InvocationError::PluginError { code, .. }) = error {
        body["plugin_error_code"] = code.as_str().into();
    }
    body
}

/// An [`ApiError`] with the request id it answers.
pub struct ErrorResponse {
    /// The error.
    pub error: ApiError,
    /// The request id, echoed in the body.
    pub request_id: Option<String>,
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        let (status, _, _) = self.error.parts();
        let body = body_for(&self.error, self.request_id.as_deref());
        let mut resp = (status, axum::Json(body)).into_response();
        let headers = resp.headers_mut();
        match &self.error {
            ApiError::Unauthenticated | ApiError::InvalidHop => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            ApiError::Forbidden { insufficient_scope: true, .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"insufficient_scope\""),
                );
            }
            ApiError::Invocation(InvocationError::Credential {
                www_authenticate: Some(challenge), ..
            }) => {
                if let Ok(v) = HeaderValue::from_str(challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ApiError::Busy { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            ApiError::ShuttingDown
            | ApiError::AuthUnavailable
            | ApiError::Invocation(InvocationError::Model { status: 503, .. }) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        ErrorResponse { error: self, request_id: None }.into_response()
    }
}

/// Every failure an admin API caller can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminError {
    /// Missing or wrong admin token.
    Unauthenticated,
    /// No such route.
    NotFound,
    /// Route exists, method does not.
    MethodNotAllowed,
    /// The request body is malformed.
    BadRequest(String),
    /// A deploy was refused; the active version keeps serving.
    Refused(crate::admin::DeployRefusal),
    /// Rollback or remove cannot be done.
    Registry(delegate_runtime::RegistryError),
}

impl AdminError {
    /// HTTP status, stable code and message. Admin callers are the operator: messages
    /// carry the detail needed to fix a deploy (never a secret: none is involved).
    pub fn parts(&self) -> (StatusCode, &'static str, String) {
        use crate::admin::DeployRefusal as D;
        use delegate_runtime::RegistryError as R;
        match self {
            Self::Unauthenticated => {
                (StatusCode::UNAUTHORIZED, "unauthenticated", "missing or wrong admin token".into())
            }
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found", "no such admin route".into()),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route".into(),
            ),
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.clone()),
            Self::Refused(r) => {
                let (status, code) = match r {
                    D::UnknownPlugin(_) => (StatusCode::NOT_FOUND, "plugin_not_found"),
                    D::InvalidManifest(_) => (StatusCode::BAD_REQUEST, "invalid_manifest"),
                    D::NameMismatch { .. } => (StatusCode::BAD_REQUEST, "name_mismatch"),
                    D::DigestMismatch { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "digest_mismatch"),
                    D::NotGranted(_) => (StatusCode::FORBIDDEN, "not_granted"),
                    D::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "component_too_large"),
                    D::NotAComponent => (StatusCode::UNPROCESSABLE_ENTITY, "not_a_component"),
                    D::Compile(_) => (StatusCode::UNPROCESSABLE_ENTITY, "compile_error"),
                    D::World(_) => (StatusCode::UNPROCESSABLE_ENTITY, "world_mismatch"),
                    D::NotInstantiable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "not_instantiable"),
                    D::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "deploy_failed"),
                    D::InvalidReference(_) => (StatusCode::BAD_REQUEST, "invalid_reference"),
                    D::ArtifactNotFound(_) => (StatusCode::NOT_FOUND, "artifact_not_found"),
                    D::RegistryUnavailable(_) => (StatusCode::BAD_GATEWAY, "registry_unavailable"),
                    D::ArtifactTampered(_) => (StatusCode::UNPROCESSABLE_ENTITY, "artifact_digest_mismatch"),
                    D::InvalidArtifact(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_artifact"),
                };
                (status, code, r.to_string())
            }
            Self::Registry(e) => {
                let (status, code) = match e {
                    R::UnknownPlugin(_) => (StatusCode::NOT_FOUND, "plugin_not_found"),
                    R::NoPreviousVersion(_) => (StatusCode::CONFLICT, "no_previous_version"),
                    R::NotDeployed(_) => (StatusCode::CONFLICT, "not_deployed"),
                    R::DefaultPlugin(_) => (StatusCode::CONFLICT, "default_plugin"),
                };
                (status, code, e.to_string())
            }
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let mut resp = (status, axum::Json(error_body(code, &message, None))).into_response();
        if self == Self::Unauthenticated {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"delegate-admin\""),
            );
        }
        resp
    }
}
