//! [`validate_request`]: every guest request is checked here before any provider call, so a
//! hostile or buggy plugin cannot make the host spend money (or AWS throttling quota) on
//! requests Bedrock would refuse, nor send unbounded payloads.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::types::{ContentBlock, ConverseRequest, Role, ToolChoice, ToolResultContent};

/// Size and count limits for one model request. The defaults are generous for a tool loop and
/// far below Bedrock's own caps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestLimits {
    /// Messages in the conversation.
    pub max_messages: usize,
    /// Content blocks over all messages.
    pub max_content_blocks: usize,
    /// Bytes of all text, JSON inputs, tool results, system prompts and tool specs together.
    pub max_total_bytes: usize,
    /// System prompts.
    pub max_system_prompts: usize,
    /// Tools offered.
    pub max_tools: usize,
    /// Stop sequences.
    pub max_stop_sequences: usize,
    /// Largest `max_tokens` a guest may ask for.
    pub max_output_tokens: u32,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_messages: 200,
            max_content_blocks: 1000,
            max_total_bytes: 2 * 1024 * 1024,
            max_system_prompts: 8,
            max_tools: 64,
            max_stop_sequences: 4,
            max_output_tokens: 8192,
        }
    }
}

/// Whether `name` is a valid tool name: 1-64 characters of `[a-zA-Z0-9_-]`.
pub fn is_valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_json_object(text: &str) -> bool {
    matches!(serde_json::from_str::<serde_json::Value>(text), Ok(serde_json::Value::Object(_)))
}

fn unit_interval(v: f32) -> bool {
    v.is_finite() && (0.0..=1.0).contains(&v)
}

/// Checks `req` against `limits` and Bedrock's conversation rules: at least one message, the
/// first from the user, roles alternating, tool uses only from the assistant and each answered
/// by a tool result with the same id in the next user message, tool results only answering
/// those, tool blocks only with a tool config, valid and unique tool names, JSON objects where
/// JSON objects are required, sampling parameters in range.
pub fn validate_request(req: &ConverseRequest, limits: &RequestLimits) -> Result<(), ModelError> {
    let err = |m: String| Err(ModelError::validation(m));
    if req.messages.is_empty() {
        return err("the conversation has no messages".into());
    }
    if req.messages.len() > limits.max_messages {
        return err(format!("too many messages: {} (limit {})", req.messages.len(), limits.max_messages));
    }
    if req.system.len() > limits.max_system_prompts {
        return err(format!(
            "too many system prompts: {} (limit {})",
            req.system.len(),
            limits.max_system_prompts
        ));
    }
    let mut bytes: usize = req.system.iter().map(String::len).sum();

    let mut tool_names = HashSet::new();
    if let Some(tc) = &req.tool_config {
        if tc.tools.is_empty() {
            return err("tool config without tools".into());
        }
        if tc.tools.len() > limits.max_tools {
            return err(format!("too many tools: {} (limit {})", tc.tools.len(), limits.max_tools));
        }
        for t in &tc.tools {
            if !is_valid_tool_name(&t.name) {
                return err("tool names must be 1-64 characters of [a-zA-Z0-9_-]".into());
            }
            if !tool_names.insert(t.name.as_str()) {
                return err(format!("tool {} is offered twice", t.name));
            }
            if !is_json_object(&t.input_schema) {
                return err(format!("input schema of tool {} is not a JSON object", t.name));
            }
            bytes += t.name.len() + t.description.len() + t.input_schema.len();
        }
        if let Some(ToolChoice::Tool(name)) = &tc.tool_choice
            && !tool_names.contains(name.as_str())
        {
            return err("tool choice names a tool that is not offered".into());
        }
    }

    if let Some(ic) = &req.inference_config {
        if let Some(m) = ic.max_tokens
            && !(1..=limits.max_output_tokens).contains(&m)
        {
            return err(format!("max_tokens must be between 1 and {}", limits.max_output_tokens));
        }
        if ic.temperature.is_some_and(|t| !unit_interval(t)) {
            return err("temperature must be between 0 and 1".into());
        }
        if ic.top_p.is_some_and(|t| !unit_interval(t)) {
            return err("top_p must be between 0 and 1".into());
        }
        if ic.stop_sequences.len() > limits.max_stop_sequences {
            return err(format!("too many stop sequences (limit {})", limits.max_stop_sequences));
        }
        if ic.stop_sequences.iter().any(String::is_empty) {
            return err("stop sequences must not be empty".into());
        }
        bytes += ic.stop_sequences.iter().map(String::len).sum::<usize>();
    }

    let mut blocks = 0usize;
    // Tool uses of the previous assistant message still waiting for their results.
    let mut pending: Vec<&str> = Vec::new();
    let mut seen_ids = HashSet::new();
    for (i, msg) in req.messages.iter().enumerate() {
        let expected = if i % 2 == 0 { Role::User } else { Role::Assistant };
        if msg.role != expected {
            return err(if i == 0 {
                "the first message must come from the user".into()
            } else {
                format!("message {i}: roles must alternate between user and assistant")
            });
        }
        if msg.content.is_empty() {
            return err(format!("message {i} has no content"));
        }
        blocks += msg.content.len();
        if blocks > limits.max_content_blocks {
            return err(format!("too many content blocks (limit {})", limits.max_content_blocks));
        }
        let mut answered: Vec<&str> = Vec::new();
        let mut uses: Vec<&str> = Vec::new();
        for block in &msg.content {
            match block {
                ContentBlock::Text(t) => bytes += t.len(),
                ContentBlock::ToolUse(u) => {
                    if msg.role != Role::Assistant {
                        return err(format!("message {i}: only the assistant may use tools"));
                    }
                    if req.tool_config.is_none() {
                        return err("the conversation uses tools but the request has no tool config".into());
                    }
                    if !is_valid_tool_name(&u.name) {
                        return err(format!("message {i}: invalid tool name in tool use"));
                    }
                    if u.tool_use_id.is_empty()
                        || u.tool_use_id.len() > 64
                        || !seen_ids.insert(u.tool_use_id.as_str())
                    {
                        return err(format!("message {i}: tool use ids must be unique and 1-64 characters"));
                    }
                    if !is_json_object(&u.input) {
                        return err(format!("message {i}: tool use input is not a JSON object"));
                    }
                    bytes += u.tool_use_id.len() + u.name.len() + u.input.len();
                    uses.push(&u.tool_use_id);
                }
                ContentBlock::ToolResult(r) => {
                    if msg.role != Role::User {
                        return err(format!("message {i}: tool results must be sent by the user"));
                    }
                    if req.tool_config.is_none() {
                        return err(
                            "the conversation has tool results but the request has no tool config".into()
                        );
                    }
                    if !pending.contains(&r.tool_use_id.as_str())
                        || answered.contains(&r.tool_use_id.as_str())
                    {
                        return err(format!(
                            "message {i}: tool result does not answer a tool use of the previous message"
                        ));
                    }
                    answered.push(&r.tool_use_id);
                    bytes += r.tool_use_id.len();
                    for c in &r.content {
                        match c {
                            ToolResultContent::Text(t) => bytes += t.len(),
                            ToolResultContent::Json(j) => {
                                if serde_json::from_str::<serde_json::Value>(j).is_err() {
                                    return err(format!("message {i}: tool result JSON is not valid JSON"));
                                }
                                bytes += j.len();
                            }
                        }
                    }
                }
            }
            if bytes > limits.max_total_bytes {
                return err(format!("request too large (limit {} bytes)", limits.max_total_bytes));
            }
        }
        if msg.role == Role::User && answered.len() != pending.len() {
            return err(format!("message {i}: every tool use of the previous message needs a tool result"));
        }
        pending = uses;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::types::*;

    fn tools() -> Option<ToolConfig> {
        Some(ToolConfig {
            tools: vec![ToolSpec {
                name: "get_incident".into(),
                description: "d".into(),
                input_schema: r#"{"type":"object"}"#.into(),
            }],
            tool_choice: None,
        })
    }

    fn tool_loop() -> ConverseRequest {
        ConverseRequest {
            messages: vec![
                Message::user_text("show INC0010001"),
                Message {
                    role: Role::Assistant,
                    content: vec![ContentBlock::ToolUse(ToolUse {
                        tool_use_id: "t1".into(),
                        name: "get_incident".into(),
                        input: r#"{"number":"INC0010001"}"#.into(),
                    })],
                },
                Message {
                    role: Role::User,
                    content: vec![ContentBlock::ToolResult(ToolResult {
                        tool_use_id: "t1".into(),
                        status: ToolResultStatus::Success,
                        content: vec![ToolResultContent::Json(r#"{"result":{}}"#.into())],
                    })],
                },
            ],
            tool_config: tools(),
            ..Default::default()
        }
    }

    fn rejected(req: &ConverseRequest) -> String {
        let e = validate_request(req, &RequestLimits::default()).unwrap_err();
        assert_eq!(e.kind, crate::ModelErrorKind::Validation);
        assert!(!e.retryable);
        e.message
    }

    #[test]
    fn a_well_formed_tool_loop_passes() {
        validate_request(&tool_loop(), &RequestLimits::default()).unwrap();
    }

    #[test]
    fn conversation_shape_is_enforced() {
        assert!(rejected(&ConverseRequest::default()).contains("no messages"));

        let mut r = tool_loop();
        r.messages.remove(0);
        assert!(rejected(&r).contains("first message"));

        let mut r = tool_loop();
        r.messages.insert(1, Message::user_text("again"));
        assert!(rejected(&r).contains("alternate"));

        let mut r = tool_loop();
        r.messages[2].content = vec![ContentBlock::Text("no result".into())];
        assert!(rejected(&r).contains("needs a tool result"));

        let mut r = tool_loop();
        if let ContentBlock::ToolResult(t) = &mut r.messages[2].content[0] {
            t.tool_use_id = "other".into();
        }
        assert!(rejected(&r).contains("does not answer"));

        let mut r = tool_loop();
        r.tool_config = None;
        assert!(rejected(&r).contains("no tool config"));
    }

    #[test]
    fn tool_names_json_and_ranges_are_checked() {
        for bad in ["", "has space", "ünï", &"x".repeat(65), "semi;colon"] {
            let mut r = tool_loop();
            r.tool_config.as_mut().unwrap().tools[0].name = bad.to_string();
            assert!(rejected(&r).contains("tool names"), "{bad:?}");
        }
        assert!(is_valid_tool_name(&"a-Z_9".repeat(12)));

        let mut r = tool_loop();
        r.tool_config.as_mut().unwrap().tools[0].input_schema = "[1]".into();
        assert!(rejected(&r).contains("schema"));

        let mut r = tool_loop();
        if let ContentBlock::ToolUse(t) = &mut r.messages[1].content[0] {
            t.input = "{not json".into();
        }
        assert!(rejected(&r).contains("input"));

        let mut r = tool_loop();
        r.inference_config = Some(InferenceConfig { temperature: Some(f32::NAN), ..Default::default() });
        assert!(rejected(&r).contains("temperature"));

        let mut r = tool_loop();
        r.inference_config = Some(InferenceConfig { max_tokens: Some(0), ..Default::default() });
        assert!(rejected(&r).contains("max_tokens"));

        let mut r = tool_loop();
        r.tool_config.as_mut().unwrap().tool_choice = Some(ToolChoice::Tool("nope".into()));
        assert!(rejected(&r).contains("tool choice"));
    }

    #[test]
    fn sizes_and_counts_are_bounded() {
        let limits = RequestLimits { max_total_bytes: 100, max_messages: 3, ..Default::default() };
        let mut r = tool_loop();
        r.messages.push(Message { role: Role::Assistant, content: vec![ContentBlock::Text("x".into())] });
        assert!(validate_request(&r, &limits).unwrap_err().message.contains("too many messages"));
        let r = ConverseRequest { messages: vec![Message::user_text("x".repeat(101))], ..Default::default() };
        assert!(validate_request(&r, &limits).unwrap_err().message.contains("too large"));
    }
}
