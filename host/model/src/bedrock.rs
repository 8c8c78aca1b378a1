//! [`BedrockProvider`]: the [`ModelProvider`] on AWS Bedrock Converse / ConverseStream.
//!
//! Retries: the SDK's standard retry (bounded attempts, exponential backoff with full jitter)
//! covers everything up to the moment a response starts. A ConverseStream that breaks *after*
//! it started is not retried by the SDK; the host restarts it itself, but only while no text
//! has reached the caller, at most `max_stream_restarts` times and with SDK retries switched
//! off for the restart, so the two layers add up instead of multiplying.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::{Credentials, Region, StalledStreamProtectionConfig};
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse::ConverseError;
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamError;
use aws_sdk_bedrockruntime::types as bt;
use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError;
use aws_smithy_types::error::display::DisplayErrorContext;
use delegate_secret::Secret;
use tokio::sync::mpsc::Sender;
use tokio::time::Instant;

use crate::config::ModelSettings;
use crate::document::{document_to_json_text, json_text_to_document};
use crate::error::{ModelError, ModelErrorKind};
use crate::provider::{ModelFuture, ModelProvider};
use crate::types::{
    ContentBlock, ConverseRequest, ConverseResponse, Message, Role, StopReason, ToolChoice,
    ToolResultContent, ToolResultStatus, ToolUse, Usage,
};

/// Where the AWS credentials come from.
#[derive(Debug, Clone)]
pub enum AwsCredentials {
    /// The aws-config default chain: environment, shared profile (incl. SSO and
    /// `credential_process`), web identity, ECS/EKS container role, IMDS.
    DefaultChain,
    /// Fixed keys (the devstack, tests). The values stay in [`Secret`] until handed to the SDK,
    /// whose `Credentials` type redacts them as well.
    Static {
        /// Access key id (not secret, but kept out of logs anyway).
        access_key_id: String,
        /// Secret access key.
        secret_access_key: Secret,
        /// Session token for temporary credentials.
        session_token: Option<Secret>,
    },
}

/// Why a [`BedrockProvider`] could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProviderSetupError {
    /// The CA bundle file could not be read.
    #[error("cannot read model.ca_bundle {path}: {source}")]
    CaBundleRead {
        /// The configured path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CA bundle holds no usable certificate.
    #[error("model.ca_bundle {path}: {message}")]
    CaBundleInvalid {
        /// The configured path.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// Neither the config nor the aws-config chain yields a region.
    #[error("no AWS region: set model.region or AWS_REGION")]
    NoRegion,
}

/// AWS Bedrock behind [`ModelProvider`].
#[derive(Debug, Clone)]
pub struct BedrockProvider {
    /// Converse and ConverseStream, the SDK's stalled-stream protection off (see
    /// [`BedrockProvider::connect`]).
    client: Client,
    settings: ModelSettings,
}

/// Parses a PEM bundle the way the SDK's TLS layer will, so a bad file fails at start with a
/// clear error (the SDK itself would panic on first use).
fn check_ca_bundle(path: &str, pem: &[u8]) -> Result<(), ProviderSetupError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let bad = |message: String| ProviderSetupError::CaBundleInvalid { path: path.to_owned(), message };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| bad(format!("unusable certificate: {e}")))?;
    }
    Ok(())
}

impl BedrockProvider {
    /// Builds the client: aws-config defaults (credentials chain, region chain, profile) with
    /// the region, endpoint, extra CA roots, retry and timeout settings of `settings` applied.
    ///
    /// The SDK's stalled-stream protection (which watches body throughput after the headers,
    /// 20 s grace) is switched off, because the host bounds both bodies itself, more tightly:
    /// a Converse response is one JSON document sent after the model has finished, bounded by
    /// the per-attempt timeout (`attempt_timeout`, retried) and the host's own per-request
    /// timeout (`request_timeout`); a ConverseStream is bounded by `stream_idle_timeout`
    /// between any two events (the first included) and by `request_timeout` overall, and ends
    /// with the typed `model_timeout` error "the model stream stalled". The protection's body
    /// wrappers, throughput log and timers cost the host CPU on every stream chunk (Jane's load
    /// profile, BENCHMARKS.md).
    pub async fn connect(
        settings: ModelSettings,
        credentials: AwsCredentials,
    ) -> Result<Self, ProviderSetupError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let AwsCredentials::Static { access_key_id, secret_access_key, session_token } = &credentials {
            loader = loader.credentials_provider(Credentials::new(
                access_key_id.clone(),
                secret_access_key.expose().to_owned(),
                session_token.as_ref().map(|t| t.expose().to_owned()),
                None,
                "delegate-static",
            ));
        }
        if let Some(path) = &settings.ca_bundle {
            let shown = path.display().to_string();
            let pem = std::fs::read(path)
                .map_err(|source| ProviderSetupError::CaBundleRead { path: shown.clone(), source })?;
            check_ca_bundle(&shown, &pem)?;
            use aws_smithy_http_client::tls;
            // System roots stay trusted (a VPC endpoint has a public certificate); the bundle
            // adds the corporate or devstack CA.
            let trust = tls::TrustStore::default().with_pem_certificate(pem);
            let ctx = tls::TlsContext::builder()
                .with_trust_store(trust)
                .build()
                .map_err(|e| ProviderSetupError::CaBundleInvalid { path: shown, message: e.to_string() })?;
            let http = aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
                .tls_context(ctx)
                .build_https();
            loader = loader.http_client(http);
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(ProviderSetupError::NoRegion);
        }
        let mut conf = aws_sdk_bedrockruntime::config::Builder::from(&sdk)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(settings.max_attempts)
                    .with_initial_backoff(settings.initial_backoff)
                    .with_max_backoff(settings.max_backoff),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.connect_timeout)
                    .operation_attempt_timeout(settings.attempt_timeout)
                    .build(),
            );
        if let Some(url) = &settings.endpoint_url {
            conf = conf.endpoint_url(url.clone());
        }
        let conf = conf.stalled_stream_protection(StalledStreamProtectionConfig::disabled()).build();
        Ok(Self { client: Client::from_conf(conf), settings })
    }

    /// The validated settings this provider runs with (the default model id among them).
    pub fn settings(&self) -> &ModelSettings {
        &self.settings
    }

    async fn converse_impl(
        &self,
        model_id: &str,
        req: &ConverseRequest,
    ) -> Result<ConverseResponse, ModelError> {
        let parts = RequestParts::from_request(req)?;
        let send = self
            .client
            .converse()
            .model_id(model_id)
            .set_messages(Some(parts.messages))
            .set_system(parts.system)
            .set_tool_config(parts.tool_config)
            .set_inference_config(parts.inference_config)
            .send();
        let out = match tokio::time::timeout(self.settings.request_timeout, send).await {
            Err(_) => {
                return Err(ModelError::new(
                    ModelErrorKind::ModelTimeout,
                    "the model did not answer in time",
                ));
            }
            Ok(Err(e)) => return Err(map_converse_error(&e)),
            Ok(Ok(out)) => out,
        };
        let message = match out.output {
            Some(bt::ConverseOutput::Message(m)) => message_from_sdk(&m),
            _ => {
                return Err(ModelError::new(ModelErrorKind::ModelError, "the model returned no message"));
            }
        };
        check_size(&message, self.settings.max_response_bytes)?;
        Ok(ConverseResponse {
            message,
            stop_reason: StopReason::from_wire(out.stop_reason.as_str()),
            usage: out.usage.as_ref().map(usage_from_sdk).unwrap_or_default(),
            latency_ms: out.metrics.map(|m| u64::try_from(m.latency_ms).unwrap_or_default()),
        })
    }

    async fn converse_stream_impl(
        &self,
        model_id: &str,
        req: &ConverseRequest,
        text: &Sender<String>,
    ) -> Result<ConverseResponse, ModelError> {
        let deadline = Instant::now() + self.settings.request_timeout;
        let mut restarts = 0u32;
        loop {
            match self.stream_once(model_id, req, text, deadline, restarts > 0).await {
                Ok(resp) => return Ok(resp),
                Err(StreamFailure::BeforeStream(e)) => return Err(e), // the SDK has retried already
                Err(StreamFailure::InStream { error, forwarded_text: true }) => {
                    return Err(ModelError {
                        kind: ModelErrorKind::StreamError,
                        message: format!("the model stream broke after text was sent: {}", error.message),
                        retryable: error.retryable,
                    });
                }
                Err(StreamFailure::InStream { error, forwarded_text: false }) => {
                    if !error.retryable || restarts >= self.settings.max_stream_restarts {
                        return Err(error);
                    }
                    restarts += 1;
                    let backoff =
                        jittered_backoff(self.settings.initial_backoff, self.settings.max_backoff, restarts);
                    if Instant::now() + backoff >= deadline {
                        return Err(error);
                    }
                    tracing::info!(restarts, kind = %error.kind, "restarting model stream that failed before any text was forwarded");
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    async fn stream_once(
        &self,
        model_id: &str,
        req: &ConverseRequest,
        text: &Sender<String>,
        deadline: Instant,
        is_restart: bool,
    ) -> Result<ConverseResponse, StreamFailure> {
        let parts = RequestParts::from_request(req).map_err(StreamFailure::BeforeStream)?;
        let mut call = self
            .client
            .converse_stream()
            .model_id(model_id)
            .set_messages(Some(parts.messages))
            .set_system(parts.system)
            .set_tool_config(parts.tool_config)
            .set_inference_config(parts.inference_config)
            .customize();
        if is_restart {
            // The restart is itself the retry: no second layer of SDK retries under it.
            call = call.config_override(
                aws_sdk_bedrockruntime::config::Builder::new().retry_config(RetryConfig::disabled()),
            );
        }
        let timeout = || {
            StreamFailure::BeforeStream(ModelError::new(
                ModelErrorKind::ModelTimeout,
                "the model did not answer in time",
            ))
        };
        let mut out = match tokio::time::timeout_at(deadline, call.send()).await {
            Err(_) => return Err(timeout()),
            Ok(Err(e)) => return Err(StreamFailure::BeforeStream(map_converse_stream_error(&e))),
            Ok(Ok(out)) => out,
        };
        let mut asm = StreamAssembler::new(self.settings.max_response_bytes);
        loop {
            let idle = Instant::now() + self.settings.stream_idle_timeout;
            let event = match tokio::time::timeout_at(deadline.min(idle), out.stream.recv()).await {
                Err(_) => Err(ModelError::new(ModelErrorKind::ModelTimeout, "the model stream stalled")),
                Ok(Err(e)) => Err(map_stream_event_error(&e)),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(ev))) => Ok(ev),
            };
            let step = event.and_then(|ev| asm.push(&ev));
            match step {
                Ok(Some(delta)) => {
                    asm.forwarded_text = true;
                    // A closed receiver means the caller is gone; keep assembling for the guest.
                    let _ = text.send(delta).await;
                }
                Ok(None) => {}
                Err(error) => {
                    return Err(StreamFailure::InStream { error, forwarded_text: asm.forwarded_text });
                }
            }
        }
        let forwarded_text = asm.forwarded_text;
        asm.finish().map_err(|error| StreamFailure::InStream { error, forwarded_text })
    }
}

impl ModelProvider for BedrockProvider {
    fn converse<'a>(&'a self, model_id: &'a str, req: &'a ConverseRequest) -> ModelFuture<'a> {
        Box::pin(self.converse_impl(model_id, req))
    }

    fn converse_stream<'a>(
        &'a self,
        model_id: &'a str,
        req: &'a ConverseRequest,
        text: &'a Sender<String>,
    ) -> ModelFuture<'a> {
        Box::pin(self.converse_stream_impl(model_id, req, text))
    }
}

enum StreamFailure {
    /// No response stream was opened (the SDK's retries are spent).
    BeforeStream(ModelError),
    /// The stream opened and then broke.
    InStream { error: ModelError, forwarded_text: bool },
}

fn jittered_backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    use rand::Rng;
    let cap = initial.saturating_mul(1u32 << attempt.min(16)).min(max);
    let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

fn check_size(message: &Message, max: usize) -> Result<(), ModelError> {
    let size: usize = message
        .content
        .iter()
        .map(|b| match b {
            ContentBlock::Text(t) => t.len(),
            ContentBlock::ToolUse(u) => u.input.len() + u.name.len() + u.tool_use_id.len(),
            ContentBlock::ToolResult(_) => 0,
        })
        .sum();
    if size > max {
        return Err(too_large(max));
    }
    Ok(())
}

fn too_large(max: usize) -> ModelError {
    ModelError::new(
        ModelErrorKind::ModelError,
        format!("the model response exceeds the host's limit of {max} bytes"),
    )
    .with_retryable(false)
}

// ---------------------------------------------------------------------------------------------
// Domain → SDK

struct RequestParts {
    messages: Vec<bt::Message>,
    system: Option<Vec<bt::SystemContentBlock>>,
    tool_config: Option<bt::ToolConfiguration>,
    inference_config: Option<bt::InferenceConfiguration>,
}

fn build_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::validation(format!("request cannot be encoded: {e}"))
}

fn json_doc(text: &str, what: &str) -> Result<aws_smithy_types::Document, ModelError> {
    json_text_to_document(text).map_err(|_| ModelError::validation(format!("{what} is not valid JSON")))
}

impl RequestParts {
    fn from_request(req: &ConverseRequest) -> Result<Self, ModelError> {
        let mut messages = Vec::with_capacity(req.messages.len());
        for m in &req.messages {
            let mut blocks = Vec::with_capacity(m.content.len());
            for b in &m.content {
                blocks.push(match b {
                    ContentBlock::Text(t) => bt::ContentBlock::Text(t.clone()),
                    ContentBlock::ToolUse(u) => bt::ContentBlock::ToolUse(
                        bt::ToolUseBlock::builder()
                            .tool_use_id(&u.tool_use_id)
                            .name(&u.name)
                            .input(json_doc(&u.input, "tool use input")?)
                            .build()
                            .map_err(build_err)?,
                    ),
                    ContentBlock::ToolResult(r) => {
                        let mut content = Vec::with_capacity(r.content.len());
                        for c in &r.content {
                            content.push(match c {
                                ToolResultContent::Text(t) => bt::ToolResultContentBlock::Text(t.clone()),
                                ToolResultContent::Json(j) => {
                                    bt::ToolResultContentBlock::Json(json_doc(j, "tool result")?)
                                }
                            });
                        }
                        bt::ContentBlock::ToolResult(
                            bt::ToolResultBlock::builder()
                                .tool_use_id(&r.tool_use_id)
                                .status(match r.status {
                                    ToolResultStatus::Success => bt::ToolResultStatus::Success,
                                    ToolResultStatus::Error => bt::ToolResultStatus::Error,
                                })
                                .set_content(Some(content))
                                .build()
                                .map_err(build_err)?,
                        )
                    }
                });
            }
            messages.push(
                bt::Message::builder()
                    .role(match m.role {
                        Role::User => bt::ConversationRole::User,
                        Role::Assistant => bt::ConversationRole::Assistant,
                    })
                    .set_content(Some(blocks))
                    .build()
                    .map_err(build_err)?,
            );
        }
        let system = (!req.system.is_empty())
            .then(|| req.system.iter().map(|s| bt::SystemContentBlock::Text(s.clone())).collect());
        let tool_config = match &req.tool_config {
            None => None,
            Some(tc) => {
                let mut tools = Vec::with_capacity(tc.tools.len());
                for t in &tc.tools {
                    let mut spec = bt::ToolSpecification::builder().name(&t.name).input_schema(
                        bt::ToolInputSchema::Json(json_doc(&t.input_schema, "tool input schema")?),
                    );
                    if !t.description.is_empty() {
                        spec = spec.description(&t.description);
                    }
                    tools.push(bt::Tool::ToolSpec(spec.build().map_err(build_err)?));
                }
                let choice = match &tc.tool_choice {
                    None => None,
                    Some(ToolChoice::Auto) => {
                        Some(bt::ToolChoice::Auto(bt::AutoToolChoice::builder().build()))
                    }
                    Some(ToolChoice::Any) => Some(bt::ToolChoice::Any(bt::AnyToolChoice::builder().build())),
                    Some(ToolChoice::Tool(n)) => Some(bt::ToolChoice::Tool(
                        bt::SpecificToolChoice::builder().name(n).build().map_err(build_err)?,
                    )),
                };
                Some(
                    bt::ToolConfiguration::builder()
                        .set_tools(Some(tools))
                        .set_tool_choice(choice)
                        .build()
                        .map_err(build_err)?,
                )
            }
        };
        let inference_config = req.inference_config.as_ref().map(|ic| {
            bt::InferenceConfiguration::builder()
                .set_max_tokens(ic.max_tokens.map(|m| i32::try_from(m).unwrap_or(i32::MAX)))
                .set_temperature(ic.temperature)
                .set_top_p(ic.top_p)
                .set_stop_sequences((!ic.stop_sequences.is_empty()).then(|| ic.stop_sequences.clone()))
                .build()
        });
        Ok(Self { messages, system, tool_config, inference_config })
    }
}

// ---------------------------------------------------------------------------------------------
// SDK → domain

fn message_from_sdk(m: &bt::Message) -> Message {
    let role = match m.role() {
        bt::ConversationRole::User => Role::User,
        _ => Role::Assistant,
    };
    let content = m
        .content()
        .iter()
        .filter_map(|b| match b {
            bt::ContentBlock::Text(t) => Some(ContentBlock::Text(t.clone())),
            bt::ContentBlock::ToolUse(u) => Some(ContentBlock::ToolUse(ToolUse {
                tool_use_id: u.tool_use_id().to_owned(),
                name: u.name().to_owned(),
                input: document_to_json_text(u.input()),
            })),
            // Reasoning, citations, images ...: not part of the WIT contract (yet).
            _ => None,
        })
        .collect();
    Message { role, content }
}

fn clamp_u32(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn usage_from_sdk(u: &bt::TokenUsage) -> Usage {
    Usage {
        input_tokens: clamp_u32(u.input_tokens),
        output_tokens: clamp_u32(u.output_tokens),
        total_tokens: clamp_u32(u.total_tokens),
    }
}

enum Block {
    Text(String),
    Tool { id: String, name: String, input: String, done: bool },
}

/// Assembles ConverseStream events into the final message. Text blocks may start without a
/// `contentBlockStart`; tool input arrives as JSON fragments, joined per block index and
/// parsed at `contentBlockStop` (no fragments at all means `{}`).
struct StreamAssembler {
    blocks: std::collections::BTreeMap<i32, Block>,
    stop_reason: Option<StopReason>,
    usage: Usage,
    latency_ms: Option<u64>,
    bytes: usize,
    max_bytes: usize,
    forwarded_text: bool,
}

impl StreamAssembler {
    fn new(max_bytes: usize) -> Self {
        Self {
            blocks: Default::default(),
            stop_reason: None,
            usage: Usage::default(),
            latency_ms: None,
            bytes: 0,
            max_bytes,
            forwarded_text: false,
        }
    }

    fn grow(&mut self, n: usize) -> Result<(), ModelError> {
        self.bytes += n;
        if self.bytes > self.max_bytes { Err(too_large(self.max_bytes)) } else { Ok(()) }
    }

    /// Applies one event; returns a text delta to forward.
    fn push(&mut self, ev: &bt::ConverseStreamOutput) -> Result<Option<String>, ModelError> {
        let malformed =
            |m: &str| ModelError::new(ModelErrorKind::StreamError, format!("malformed model stream: {m}"));
        match ev {
            bt::ConverseStreamOutput::ContentBlockStart(s) => {
                if let Some(bt::ContentBlockStart::ToolUse(t)) = s.start() {
                    self.grow(t.tool_use_id().len() + t.name().len())?;
                    let prev = self.blocks.insert(
                        s.content_block_index(),
                        Block::Tool {
                            id: t.tool_use_id().to_owned(),
                            name: t.name().to_owned(),
                            input: String::new(),
                            done: false,
                        },
                    );
                    if prev.is_some() {
                        return Err(malformed("a content block started twice"));
                    }
                }
                Ok(None)
            }
            bt::ConverseStreamOutput::ContentBlockDelta(d) => {
                let idx = d.content_block_index();
                match d.delta() {
                    Some(bt::ContentBlockDelta::Text(t)) => {
                        self.grow(t.len())?;
                        match self.blocks.entry(idx).or_insert_with(|| Block::Text(String::new())) {
                            Block::Text(buf) => buf.push_str(t),
                            Block::Tool { .. } => {
                                return Err(malformed("text delta in a tool-use block"));
                            }
                        }
                        Ok((!t.is_empty()).then(|| t.clone()))
                    }
                    Some(bt::ContentBlockDelta::ToolUse(u)) => {
                        self.grow(u.input().len())?;
                        match self.blocks.get_mut(&idx) {
                            Some(Block::Tool { input, done: false, .. }) => input.push_str(u.input()),
                            _ => {
                                return Err(malformed("tool input delta without a tool-use start"));
                            }
                        }
                        Ok(None)
                    }
                    _ => Ok(None), // reasoning, citations: not forwarded
                }
            }
            bt::ConverseStreamOutput::ContentBlockStop(s) => {
                if let Some(Block::Tool { input, done, .. }) = self.blocks.get_mut(&s.content_block_index()) {
                    if input.trim().is_empty() {
                        "{}".clone_into(input);
                    }
                    match serde_json::from_str::<serde_json::Value>(input) {
                        Ok(serde_json::Value::Object(_)) => *done = true,
                        _ => {
                            return Err(ModelError::new(
                                ModelErrorKind::ModelError,
                                "the model produced a tool call whose input is not a JSON object",
                            )
                            .with_retryable(false));
                        }
                    }
                }
                Ok(None)
            }
            bt::ConverseStreamOutput::MessageStop(m) => {
                self.stop_reason = Some(StopReason::from_wire(m.stop_reason().as_str()));
                Ok(None)
            }
            bt::ConverseStreamOutput::Metadata(m) => {
                if let Some(u) = m.usage() {
                    self.usage = usage_from_sdk(u);
                }
                self.latency_ms = m.metrics().map(|x| u64::try_from(x.latency_ms()).unwrap_or_default());
                Ok(None)
            }
            _ => Ok(None), // MessageStart, and events newer than this SDK
        }
    }

    fn finish(self) -> Result<ConverseResponse, ModelError> {
        let Some(stop_reason) = self.stop_reason else {
            return Err(ModelError::new(
                ModelErrorKind::StreamError,
                "the model stream ended before messageStop",
            ));
        };
        let mut content = Vec::with_capacity(self.blocks.len());
        for (_, b) in self.blocks {
            content.push(match b {
                Block::Text(t) => ContentBlock::Text(t),
                Block::Tool { id, name, input, done } => {
                    if !done {
                        return Err(ModelError::new(
                            ModelErrorKind::StreamError,
                            "a tool-use block was never closed",
                        ));
                    }
                    // Re-render so the guest always gets canonical JSON text.
                    let input = serde_json::from_str::<serde_json::Value>(&input)
                        .map(|v| v.to_string())
                        .unwrap_or(input);
                    ContentBlock::ToolUse(ToolUse { tool_use_id: id, name, input })
                }
            });
        }
        Ok(ConverseResponse {
            message: Message { role: Role::Assistant, content },
            stop_reason,
            usage: self.usage,
            latency_ms: self.latency_ms,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Maps an AWS error code (for errors the SDK does not model) to a kind.
fn kind_for_code(code: Option<&str>) -> ModelErrorKind {
    match code.unwrap_or_default() {
        "ThrottlingException" | "ServiceQuotaExceededException" | "TooManyRequestsException" => {
            ModelErrorKind::Throttled
        }
        "ModelNotReadyException" => ModelErrorKind::ModelNotReady,
        "ModelTimeoutException" => ModelErrorKind::ModelTimeout,
        "ModelErrorException" => ModelErrorKind::ModelError,
        "ModelStreamErrorException" => ModelErrorKind::StreamError,
        "ServiceUnavailableException" => ModelErrorKind::ServiceUnavailable,
        "ValidationException" => ModelErrorKind::Validation,
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignatureException"
        | "MissingAuthenticationTokenException"
        | "ExpiredTokenException"
        | "InvalidClientTokenId" => ModelErrorKind::AccessDenied,
        "ResourceNotFoundException" => ModelErrorKind::NotFound,
        _ => ModelErrorKind::Internal,
    }
}

fn service_message(kind: ModelErrorKind, message: Option<&str>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!("Bedrock: {m}"),
        _ => format!("Bedrock returned {kind}"),
    }
}

/// Transport-level failures, shared by all operations.
fn map_transport<E, R>(err: &SdkError<E, R>) -> Option<ModelError> {
    Some(match err {
        SdkError::TimeoutError(_) => {
            ModelError::new(ModelErrorKind::ModelTimeout, "the model did not answer in time")
        }
        SdkError::DispatchFailure(d) if d.is_timeout() => {
            ModelError::new(ModelErrorKind::ModelTimeout, "the model did not answer in time")
        }
        SdkError::DispatchFailure(_) => {
            ModelError::new(ModelErrorKind::ServiceUnavailable, "could not reach the model endpoint")
        }
        SdkError::ResponseError(_) => {
            ModelError::new(ModelErrorKind::Internal, "unreadable response from the model endpoint")
        }
        SdkError::ConstructionFailure(_) => ModelError::new(
            ModelErrorKind::Internal,
            "the model request could not be prepared (credentials or configuration)",
        )
        .with_retryable(false),
        _ => return None,
    })
}

fn log_failure<E, R>(err: &SdkError<E, R>, mapped: &ModelError)
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    // The SDK's error chain holds no credentials (requests are not part of it); it is detail
    // for operators, not for the guest.
    tracing::warn!(kind = %mapped.kind, retryable = mapped.retryable, error = %DisplayErrorContext(err), "bedrock call failed");
}

fn map_converse_error<R: std::fmt::Debug>(err: &SdkError<ConverseError, R>) -> ModelError {
    let mapped = map_transport(err).unwrap_or_else(|| {
        let Some(se) = err.as_service_error() else {
            return ModelError::new(ModelErrorKind::Internal, "model call failed");
        };
        use ConverseError as E;
        let kind = match se {
            E::ThrottlingException(_) => ModelErrorKind::Throttled,
            E::ModelNotReadyException(_) => ModelErrorKind::ModelNotReady,
            E::ModelTimeoutException(_) => ModelErrorKind::ModelTimeout,
            E::ModelErrorException(_) => ModelErrorKind::ModelError,
            E::ServiceUnavailableException(_) => ModelErrorKind::ServiceUnavailable,
            E::InternalServerException(_) => ModelErrorKind::Internal,
            E::ValidationException(_) => ModelErrorKind::Validation,
            E::AccessDeniedException(_) => ModelErrorKind::AccessDenied,
            E::ResourceNotFoundException(_) => ModelErrorKind::NotFound,
            other => kind_for_code(other.code()),
        };
        ModelError::new(kind, service_message(kind, se.message()))
    });
    log_failure(err, &mapped);
    mapped
}

fn map_converse_stream_error<R: std::fmt::Debug>(err: &SdkError<ConverseStreamError, R>) -> ModelError {
    let mapped = map_transport(err).unwrap_or_else(|| {
        let Some(se) = err.as_service_error() else {
            return ModelError::new(ModelErrorKind::Internal, "model call failed");
        };
        use ConverseStreamError as E;
        let kind = match se {
            E::ThrottlingException(_) => ModelErrorKind::Throttled,
            E::ModelNotReadyException(_) => ModelErrorKind::ModelNotReady,
            E::ModelTimeoutException(_) => ModelErrorKind::ModelTimeout,
            E::ModelErrorException(_) => ModelErrorKind::ModelError,
            E::ModelStreamErrorException(_) => ModelErrorKind::StreamError,
            E::ServiceUnavailableException(_) => ModelErrorKind::ServiceUnavailable,
            E::InternalServerException(_) => ModelErrorKind::Internal,
            E::ValidationException(_) => ModelErrorKind::Validation,
            E::AccessDeniedException(_) => ModelErrorKind::AccessDenied,
            E::ResourceNotFoundException(_) => ModelErrorKind::NotFound,
            other => kind_for_code(other.code()),
        };
        ModelError::new(kind, service_message(kind, se.message()))
    });
    log_failure(err, &mapped);
    mapped
}

/// An error inside an open stream: an exception frame, a broken frame or connection.
fn map_stream_event_error<R: std::fmt::Debug>(err: &SdkError<ConverseStreamOutputError, R>) -> ModelError {
    let mapped = map_transport(err).unwrap_or_else(|| {
        let Some(se) = err.as_service_error() else {
            return ModelError::new(ModelErrorKind::StreamError, "the model stream broke");
        };
        use ConverseStreamOutputError as E;
        let kind = match se {
            E::ThrottlingException(_) => ModelErrorKind::Throttled,
            E::ModelStreamErrorException(_) => ModelErrorKind::StreamError,
            E::ServiceUnavailableException(_) => ModelErrorKind::ServiceUnavailable,
            E::InternalServerException(_) => ModelErrorKind::Internal,
            E::ValidationException(_) => ModelErrorKind::Validation,
            other => match kind_for_code(other.code()) {
                ModelErrorKind::Internal => ModelErrorKind::StreamError,
                k => k,
            },
        };
        ModelError::new(kind, service_message(kind, se.message()))
    });
    // A frame that fails its CRC or does not parse is a broken stream, whatever the SDK calls it.
    let mapped = match (err, mapped.kind) {
        (SdkError::ResponseError(_), ModelErrorKind::Internal) => {
            ModelError::new(ModelErrorKind::StreamError, "the model stream is corrupt")
        }
        _ => mapped,
    };
    log_failure(err, &mapped);
    mapped
}

#[cfg(test)]
mod tests;
