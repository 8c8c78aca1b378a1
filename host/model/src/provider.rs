//! [`ModelProvider`]: the one trait every model backend implements, and [`call_model`], the
//! host's single entry point that applies validation and the budget around it.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc::Sender;

use crate::budget::ModelBudget;
use crate::error::ModelError;
use crate::types::{ConverseRequest, ConverseResponse};
use crate::validate::{RequestLimits, validate_request};

/// The future a [`ModelProvider`] returns. Boxed so the trait stays dyn-compatible: the runtime
/// holds providers as `Arc<dyn ModelProvider>` chosen per plugin at start.
pub type ModelFuture<'a> = Pin<Box<dyn Future<Output = Result<ConverseResponse, ModelError>> + Send + 'a>>;

/// A language-model backend shaped like the Bedrock Converse API.
///
/// Implementations own credentials, retries and timeouts; they are given requests that
/// [`validate_request`] has already accepted (see [`call_model`]).
pub trait ModelProvider: Send + Sync {
    /// Sends `req` to `model_id` and waits for the whole answer.
    fn converse<'a>(&'a self, model_id: &'a str, req: &'a ConverseRequest) -> ModelFuture<'a>;

    /// Like [`ModelProvider::converse`], but every text delta is sent to `text` as soon as it
    /// arrives (the runtime forwards them to the caller's event stream), and the fully
    /// assembled message is returned at the end. Tool-use inputs are assembled, not forwarded.
    /// If the receiver is gone the deltas are dropped and the message is still assembled.
    fn converse_stream<'a>(
        &'a self,
        model_id: &'a str,
        req: &'a ConverseRequest,
        text: &'a Sender<String>,
    ) -> ModelFuture<'a>;
}

/// Validates `req`, charges one call to `budget`, calls the provider (streaming when `text` is
/// given) and records the usage. This is the path the runtime takes for every guest call, so
/// nothing unvalidated or over budget ever reaches a provider.
///
/// The response that pushes the token count past the limit is still returned (its tokens
/// were already spent); the next call fails with `budget-exceeded`.
pub async fn call_model(
    provider: &dyn ModelProvider,
    model_id: &str,
    req: &ConverseRequest,
    limits: &RequestLimits,
    budget: &ModelBudget,
    text: Option<&Sender<String>>,
) -> Result<ConverseResponse, ModelError> {
    validate_request(req, limits)?;
    budget.check_call()?;
    let result = match text {
        Some(tx) => provider.converse_stream(model_id, req, tx).await,
        None => provider.converse(model_id, req).await,
    };
    if let Ok(resp) = &result {
        budget.record(&resp.usage);
    }
    result
}

/// The provider for plugins the operator gave no model: every call fails with `unavailable`
/// (so a plugin that does not need a model still loads, and one that does learns why).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoModelProvider;

impl NoModelProvider {
    fn refuse<'a>() -> ModelFuture<'a> {
        Box::pin(std::future::ready(Err(ModelError::new(
            crate::error::ModelErrorKind::Unavailable,
            "no model is configured for this plugin",
        ))))
    }
}

impl ModelProvider for NoModelProvider {
    fn converse<'a>(&'a self, _model_id: &'a str, _req: &'a ConverseRequest) -> ModelFuture<'a> {
        Self::refuse()
    }

    fn converse_stream<'a>(
        &'a self,
        _model_id: &'a str,
        _req: &'a ConverseRequest,
        _text: &'a Sender<String>,
    ) -> ModelFuture<'a> {
        Self::refuse()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::error::ModelErrorKind;
    use crate::types::Message;

    #[tokio::test]
    async fn no_provider_is_unavailable_and_not_retryable() {
        let req = ConverseRequest { messages: vec![Message::user_text("hi")], ..Default::default() };
        let budget = ModelBudget::new(1, 100);
        let e = call_model(&NoModelProvider, "m", &req, &RequestLimits::default(), &budget, None)
            .await
            .unwrap_err();
        assert_eq!((e.kind, e.retryable), (ModelErrorKind::Unavailable, false));
    }
}
