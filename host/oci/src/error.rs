//! Why a pull or push failed. No message ever holds a credential: registry credentials are
//! [`delegate_secret::Secret`]s and are only ever written into request headers.

/// A pull or push failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OciError {
    /// The reference does not parse (or names a tag instead of a digest).
    #[error("invalid OCI reference {reference:?}: {message}")]
    InvalidReference {
        /// The text given.
        reference: String,
        /// What is wrong.
        message: String,
    },
    /// The registry does not have the manifest or a blob (an unknown digest).
    #[error("{what} not found in {registry}")]
    NotFound {
        /// The registry.
        registry: String,
        /// `manifest <repo>@<digest>` or `blob <digest>`.
        what: String,
    },
    /// The registry could not be reached (and the artifact is not cached).
    #[error("registry {registry} is unreachable: {message}")]
    Unreachable {
        /// The registry.
        registry: String,
        /// The transport error.
        message: String,
    },
    /// The registry refused the credentials (or there are none and it needs some).
    #[error("registry {registry} refused access ({status}): check its credentials in [oci.registries]")]
    Unauthorized {
        /// The registry.
        registry: String,
        /// 401 or 403.
        status: u16,
    },
    /// The registry answered with an unexpected status.
    #[error("registry {registry} answered {status} to {what}: {message}")]
    Registry {
        /// The registry.
        registry: String,
        /// The HTTP status.
        status: u16,
        /// What was asked.
        what: String,
        /// The distribution error code(s), if the body had any.
        message: String,
    },
    /// Bytes did not hash to the digest that names them: a tampered or corrupted artifact.
    #[error("{what} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// `manifest`, `config blob`, `component layer`, `plugin manifest layer`.
        what: String,
        /// The digest that names it.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// The manifest is not a delegate plugin artifact (wrong media types, missing layers...).
    #[error("not a delegate plugin artifact: {0}")]
    InvalidArtifact(String),
    /// A manifest or blob is larger than allowed.
    #[error("{what} is larger than {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The local blob cache could not be opened or written.
    #[error("OCI blob cache: {0}")]
    Cache(String),
}

impl OciError {
    /// A stable snake_case code for the error (admin API `error_type`, metrics label).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidReference { .. } => "invalid_reference",
            Self::NotFound { .. } => "artifact_not_found",
            Self::Unreachable { .. } => "registry_unavailable",
            Self::Unauthorized { .. } => "registry_unauthorized",
            Self::Registry { .. } => "registry_error",
            Self::DigestMismatch { .. } => "artifact_digest_mismatch",
            Self::InvalidArtifact(_) => "invalid_artifact",
            Self::TooLarge { .. } => "artifact_too_large",
            Self::Cache(_) => "cache_error",
        }
    }
}
