//! [`ModelError`]: a failed model call, exactly the WIT `error` record.

use serde::{Deserialize, Serialize};

/// What went wrong with a model call: exactly the cases of the WIT `error-kind` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelErrorKind {
    /// No model provider is configured for this plugin.
    Unavailable,
    /// The request is invalid (sizes, counts, tool names, conversation shape).
    Validation,
    /// The provider throttled the call (HTTP 429).
    Throttled,
    /// The model is not ready yet (HTTP 429).
    ModelNotReady,
    /// The model did not answer in time (HTTP 408).
    ModelTimeout,
    /// The model failed to process the request (HTTP 424).
    ModelError,
    /// The response stream broke after it started (HTTP 424).
    StreamError,
    /// The provider is unavailable (HTTP 503).
    ServiceUnavailable,
    /// The provider failed internally (HTTP 500).
    Internal,
    /// The host is not allowed to use this model (HTTP 403).
    AccessDenied,
    /// The configured model does not exist (HTTP 404).
    NotFound,
    /// This invocation has used up its model budget (calls or tokens).
    BudgetExceeded,
}

impl ModelErrorKind {
    /// The WIT spelling of the case (`model-not-ready`), for logs and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Validation => "validation",
            Self::Throttled => "throttled",
            Self::ModelNotReady => "model-not-ready",
            Self::ModelTimeout => "model-timeout",
            Self::ModelError => "model-error",
            Self::StreamError => "stream-error",
            Self::ServiceUnavailable => "service-unavailable",
            Self::Internal => "internal",
            Self::AccessDenied => "access-denied",
            Self::NotFound => "not-found",
            Self::BudgetExceeded => "budget-exceeded",
        }
    }

    /// Whether a call that failed this way may succeed if sent again later. Transient
    /// provider states are; anything about the request, the permissions or the budget is not.
    pub fn default_retryable(self) -> bool {
        matches!(
            self,
            Self::Throttled
                | Self::ModelNotReady
                | Self::ModelTimeout
                | Self::ServiceUnavailable
                | Self::Internal
                | Self::StreamError
        )
    }
}

impl std::fmt::Display for ModelErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed model call (WIT `error`).
///
/// `message` is shown to the plugin and possibly to the caller, so it is built only from text
/// that is safe to show: our own wording or the provider's error message (which never carries
/// credentials); SDK internals go to the log, not here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("model {kind}: {message}")]
pub struct ModelError {
    /// What went wrong.
    pub kind: ModelErrorKind,
    /// A safe, human-readable explanation.
    pub message: String,
    /// Whether the same request may succeed if sent again later (the host has already retried
    /// where that was safe).
    pub retryable: bool,
}

/// Longest message we pass on: provider messages are echoed, so keep them bounded.
const MAX_MESSAGE_CHARS: usize = 512;

impl ModelError {
    /// An error of `kind` with the kind's default retryable flag.
    pub fn new(kind: ModelErrorKind, message: impl Into<String>) -> Self {
        let mut message: String = message.into();
        if message.chars().count() > MAX_MESSAGE_CHARS {
            message = message.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…";
        }
        Self { kind, message, retryable: kind.default_retryable() }
    }

    /// Shorthand for a [`ModelErrorKind::Validation`] error.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ModelErrorKind::Validation, message)
    }

    /// Shorthand for a [`ModelErrorKind::BudgetExceeded`] error.
    pub fn budget(message: impl Into<String>) -> Self {
        Self::new(ModelErrorKind::BudgetExceeded, message)
    }

    /// The same error with another retryable flag.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }
}
