//! Domain types mirroring the WIT `model` interface (`wit/world.wit`) one to one.
//!
//! They are deliberately plain: the runtime converts the generated WIT bindings into these and
//! back field by field, so every WIT record is a struct with the same fields, every WIT variant
//! an enum with the same cases, and JSON travels as text exactly as in the WIT (`input`,
//! `input-schema`, `json(..)`). Whether that text is valid JSON is checked by
//! [`crate::validate_request`] before anything is sent to a provider.

use serde::{Deserialize, Serialize};

/// Who authored a message (WIT `role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The human (and tool results sent on their behalf).
    User,
    /// The model.
    Assistant,
}

/// A tool invocation requested by the model (WIT `tool-use`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolUse {
    /// Id chosen by the model; the matching [`ToolResult`] carries the same id.
    pub tool_use_id: String,
    /// Name of the tool, one of the [`ToolSpec`] names offered in the request.
    pub name: String,
    /// The tool's input: a JSON object, as text.
    pub input: String,
}

/// Whether a tool succeeded (WIT `tool-result-status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolResultStatus {
    /// The tool ran and the content is its output.
    Success,
    /// The tool failed and the content explains why.
    Error,
}

/// One part of a tool's output (WIT `tool-result-content`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolResultContent {
    /// Plain text.
    Text(String),
    /// A JSON value, as text.
    Json(String),
}

/// The answer to one [`ToolUse`] (WIT `tool-result`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolResult {
    /// The `tool_use_id` of the request being answered.
    pub tool_use_id: String,
    /// Success or failure of the tool.
    pub status: ToolResultStatus,
    /// The tool's output.
    pub content: Vec<ToolResultContent>,
}

/// One block of a message (WIT `content-block`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentBlock {
    /// Text.
    Text(String),
    /// A tool call requested by the model (assistant messages only).
    ToolUse(ToolUse),
    /// The result of a tool call (user messages only).
    ToolResult(ToolResult),
}

/// One turn of the conversation (WIT `message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Author of the turn.
    pub role: Role,
    /// The blocks of the turn, in order.
    pub content: Vec<ContentBlock>,
}

impl Message {
    /// A user message with one text block (the common first turn).
    pub fn user_text(text: impl Into<String>) -> Self {
        Self { role: Role::User, content: vec![ContentBlock::Text(text.into())] }
    }

    /// The concatenated text blocks of this message.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|b| match b {
                ContentBlock::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The tool uses of this message, in order.
    pub fn tool_uses(&self) -> impl Iterator<Item = &ToolUse> {
        self.content.iter().filter_map(|b| match b {
            ContentBlock::ToolUse(t) => Some(t),
            _ => None,
        })
    }
}

/// A tool the model may call (WIT `tool-spec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Tool name: 1-64 characters of `[a-zA-Z0-9_-]`.
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON Schema of the tool's input object, as text.
    pub input_schema: String,
}

/// How the model should choose tools (WIT `tool-choice`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides whether to call a tool.
    Auto,
    /// The model must call at least one tool.
    Any,
    /// The model must call the named tool.
    Tool(String),
}

/// The tools offered to the model (WIT `tool-config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolConfig {
    /// Tool specifications.
    pub tools: Vec<ToolSpec>,
    /// How to choose among them; `None` means [`ToolChoice::Auto`].
    pub tool_choice: Option<ToolChoice>,
}

/// Sampling parameters (WIT `inference-config`). Unset fields use the model's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InferenceConfig {
    /// Maximum number of tokens to generate (at least 1).
    pub max_tokens: Option<u32>,
    /// Sampling temperature, 0.0-1.0.
    pub temperature: Option<f32>,
    /// Nucleus sampling, 0.0-1.0.
    pub top_p: Option<f32>,
    /// Sequences that stop generation.
    pub stop_sequences: Vec<String>,
}

/// A request to the model (WIT `request`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConverseRequest {
    /// System prompts, in order.
    pub system: Vec<String>,
    /// The conversation so far; it must start with a user message and alternate roles.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    pub tool_config: Option<ToolConfig>,
    /// Sampling parameters.
    pub inference_config: Option<InferenceConfig>,
}

/// Why the model stopped (WIT `stop-reason`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model finished its answer.
    EndTurn,
    /// The model wants one or more tools to be called.
    ToolUse,
    /// The `max_tokens` limit was reached.
    MaxTokens,
    /// A stop sequence was generated.
    StopSequence,
    /// A guardrail intervened.
    GuardrailIntervened,
    /// Content was filtered.
    ContentFiltered,
    /// The model produced output that could not be parsed.
    MalformedModelOutput,
    /// The model produced a tool call that could not be parsed.
    MalformedToolUse,
    /// The conversation no longer fits the model's context window.
    ContextWindowExceeded,
    /// A reason this version of the contract does not know, as sent by the provider.
    Other(String),
}

impl StopReason {
    /// Maps Bedrock's wire value (`end_turn`, `tool_use`, ...) to a stop reason; unknown values
    /// become [`StopReason::Other`] so a new provider value never breaks a call.
    pub fn from_wire(value: &str) -> Self {
        match value {
            "end_turn" => Self::EndTurn,
            "tool_use" => Self::ToolUse,
            "max_tokens" => Self::MaxTokens,
            "stop_sequence" => Self::StopSequence,
            "guardrail_intervened" => Self::GuardrailIntervened,
            "content_filtered" => Self::ContentFiltered,
            "malformed_model_output" => Self::MalformedModelOutput,
            "malformed_tool_use" => Self::MalformedToolUse,
            "model_context_window_exceeded" => Self::ContextWindowExceeded,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// Tokens consumed by a call (WIT `usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the request.
    pub input_tokens: u32,
    /// Tokens generated.
    pub output_tokens: u32,
    /// Sum of the above as reported by the provider.
    pub total_tokens: u32,
}

/// The model's answer (WIT `response`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConverseResponse {
    /// The assistant message (text and tool uses).
    pub message: Message,
    /// Why generation stopped.
    pub stop_reason: StopReason,
    /// Tokens consumed by this call.
    pub usage: Usage,
    /// Provider-reported latency in milliseconds, when known.
    pub latency_ms: Option<u64>,
}
