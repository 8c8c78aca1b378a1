//! WIT `model` types ↔ `delegate_model` domain types, field by field (they mirror each other).

use crate::bindings::model as wit;
use delegate_model as m;

pub(crate) fn request(r: wit::Request) -> m::ConverseRequest {
    m::ConverseRequest {
        system: r.system,
        messages: r.messages.into_iter().map(message_in).collect(),
        tool_config: r.tool_config.map(|c| m::ToolConfig {
            tools: c
                .tools
                .into_iter()
                .map(|t| m::ToolSpec {
                    name: t.name,
                    description: t.description,
                    input_schema: t.input_schema,
                })
                .collect(),
            tool_choice: c.tool_choice.map(|tc| match tc {
                wit::ToolChoice::Auto => m::ToolChoice::Auto,
                wit::ToolChoice::Any => m::ToolChoice::Any,
                wit::ToolChoice::Tool(name) => m::ToolChoice::Tool(name),
            }),
        }),
        inference_config: r.inference_config.map(|c| m::InferenceConfig {
            max_tokens: c.max_tokens,
            temperature: c.temperature,
            top_p: c.top_p,
            stop_sequences: c.stop_sequences,
        }),
    }
}

fn role_in(r: wit::Role) -> m::Role {
    match r {
        wit::Role::User => m::Role::User,
        wit::Role::Assistant => m::Role::Assistant,
    }
}

fn role_out(r: m::Role) -> wit::Role {
    match r {
        m::Role::User => wit::Role::User,
        m::Role::Assistant => wit::Role::Assistant,
    }
}

fn message_in(msg: wit::Message) -> m::Message {
    m::Message { role: role_in(msg.role), content: msg.content.into_iter().map(block_in).collect() }
}

fn block_in(b: wit::ContentBlock) -> m::ContentBlock {
    match b {
        wit::ContentBlock::Text(t) => m::ContentBlock::Text(t),
        wit::ContentBlock::ToolUse(t) => {
            m::ContentBlock::ToolUse(m::ToolUse { tool_use_id: t.tool_use_id, name: t.name, input: t.input })
        }
        wit::ContentBlock::ToolResult(r) => m::ContentBlock::ToolResult(m::ToolResult {
            tool_use_id: r.tool_use_id,
            status: match r.status {
                wit::ToolResultStatus::Success => m::ToolResultStatus::Success,
                wit::ToolResultStatus::Error => m::ToolResultStatus::Error,
            },
            content: r
                .content
                .into_iter()
                .map(|c| match c {
                    wit::ToolResultContent::Text(t) => m::ToolResultContent::Text(t),
                    wit::ToolResultContent::Json(j) => m::ToolResultContent::Json(j),
                })
                .collect(),
        }),
    }
}

fn block_out(b: m::ContentBlock) -> wit::ContentBlock {
    match b {
        m::ContentBlock::Text(t) => wit::ContentBlock::Text(t),
        m::ContentBlock::ToolUse(t) => wit::ContentBlock::ToolUse(wit::ToolUse {
            tool_use_id: t.tool_use_id,
            name: t.name,
            input: t.input,
        }),
        m::ContentBlock::ToolResult(r) => wit::ContentBlock::ToolResult(wit::ToolResult {
            tool_use_id: r.tool_use_id,
            status: match r.status {
                m::ToolResultStatus::Success => wit::ToolResultStatus::Success,
                m::ToolResultStatus::Error => wit::ToolResultStatus::Error,
            },
            content: r
                .content
                .into_iter()
                .map(|c| match c {
                    m::ToolResultContent::Text(t) => wit::ToolResultContent::Text(t),
                    m::ToolResultContent::Json(j) => wit::ToolResultContent::Json(j),
                })
                .collect(),
        }),
    }
}

pub(crate) fn response(r: m::ConverseResponse) -> wit::Response {
    wit::Response {
        message: wit::Message {
            role: role_out(r.message.role),
            content: r.message.content.into_iter().map(block_out).collect(),
        },
        stop_reason: match r.stop_reason {
            m::StopReason::EndTurn => wit::StopReason::EndTurn,
            m::StopReason::ToolUse => wit::StopReason::ToolUse,
            m::StopReason::MaxTokens => wit::StopReason::MaxTokens,
            m::StopReason::StopSequence => wit::StopReason::StopSequence,
            m::StopReason::GuardrailIntervened => wit::StopReason::GuardrailIntervened,
            m::StopReason::ContentFiltered => wit::StopReason::ContentFiltered,
            m::StopReason::MalformedModelOutput => wit::StopReason::MalformedModelOutput,
            m::StopReason::MalformedToolUse => wit::StopReason::MalformedToolUse,
            m::StopReason::ContextWindowExceeded => wit::StopReason::ContextWindowExceeded,
            m::StopReason::Other(s) => wit::StopReason::Other(s),
        },
        usage: wit::Usage {
            input_tokens: r.usage.input_tokens,
            output_tokens: r.usage.output_tokens,
            total_tokens: r.usage.total_tokens,
        },
        latency_ms: r.latency_ms,
    }
}

pub(crate) fn error(e: m::ModelError) -> wit::Error {
    use m::ModelErrorKind as K;
    use wit::ErrorKind as W;
    wit::Error {
        kind: match e.kind {
            K::Unavailable => W::Unavailable,
            K::Validation => W::Validation,
            K::Throttled => W::Throttled,
            K::ModelNotReady => W::ModelNotReady,
            K::ModelTimeout => W::ModelTimeout,
            K::ModelError => W::ModelError,
            K::StreamError => W::StreamError,
            K::ServiceUnavailable => W::ServiceUnavailable,
            K::Internal => W::Internal,
            K::AccessDenied => W::AccessDenied,
            K::NotFound => W::NotFound,
            K::BudgetExceeded => W::BudgetExceeded,
        },
        message: e.message,
        retryable: e.retryable,
    }
}
