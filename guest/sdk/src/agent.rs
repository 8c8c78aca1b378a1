//! A reusable tool-use loop on top of the host's `model` interface.
//!
//! An [`Agent`] holds a system prompt, a set of [`Tool`]s and limits. [`Agent::run`] starts a
//! conversation with the user's prompt and calls the model until it gives a final answer:
//! every time the model stops with `tool-use`, each of its tool uses is answered by exactly one
//! tool result (matched by id, all in one user message), including a clear `error` result when
//! the tool is unknown, its input is invalid or the tool itself fails, so the model can explain
//! the failure instead of the conversation breaking.
//!
//! Model text is streamed to the caller by the host while it is generated
//! (`model.converse-stream`); the loop never emits it a second time.
//!
//! Everything except the model call itself is plain data in, plain data out:
//! [`Agent::run_with`] takes the model call as a closure, so the whole loop (message assembly,
//! tool dispatch, argument validation, stop reasons, limits) is unit-tested natively.
//!
//! ```ignore
//! use delegate_sdk::agent::{Agent, Tool, ToolError};
//! use serde_json::json;
//!
//! let agent = Agent::new("You are a helpful assistant. Be concise.").tool(Tool::new(
//!     "add",
//!     "Adds two integers.",
//!     json!({"type": "object",
//!            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
//!            "required": ["a", "b"], "additionalProperties": false}),
//!     |input| Ok(json!({"sum": input["a"].as_i64().unwrap_or(0) + input["b"].as_i64().unwrap_or(0)})),
//! ));
//! let outcome = agent.run_with_stats("what is 2 + 3?")?;
//! ```

use std::collections::HashSet;
use std::fmt;

use serde_json::{Map, Value, json};

use crate::PluginError;
use crate::model::{
    ContentBlock, Error as ModelError, ErrorKind, InferenceConfig, Message, Request, Response, Role,
    StopReason, ToolChoice, ToolConfig, ToolResult, ToolResultContent, ToolResultStatus, ToolSpec, ToolUse,
};

/// Default for [`Agent::max_cycles`]: enough for look-up → update → answer chains, small enough
/// that a model stuck in a loop stops long before the host's model budget is the only brake.
pub const DEFAULT_MAX_CYCLES: u32 = 8;

/// Default for [`Agent::max_result_bytes`]: a tool result larger than this is replaced by an
/// error asking the model to narrow its request, so one huge answer cannot eat the model's
/// context window (or the host's 2 MiB request cap).
pub const DEFAULT_MAX_RESULT_BYTES: usize = 128 * 1024;

/// Why a tool could not produce a result. The message is sent to the model (as an `error`
/// tool result) for it to relay to the user, so it must be short, specific and safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    /// Human-readable explanation, written for the model and the end user.
    pub message: String,
}

impl ToolError {
    /// A tool failure with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }

    /// The tool's input was rejected; prefixed so the model knows to fix its call rather than
    /// report an outage.
    pub fn invalid_input(message: impl fmt::Display) -> Self {
        Self { message: format!("invalid input: {message}") }
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ToolError {}

/// What a tool's handler does: validated input in, JSON result (or a [`ToolError`]) out.
pub type ToolHandler = Box<dyn Fn(&Value) -> Result<Value, ToolError>>;

/// A tool the model may call.
pub struct Tool {
    /// Name offered to the model: 1-64 characters of `[a-zA-Z0-9_-]`.
    pub name: String,
    /// What the tool does and when to use it, for the model.
    pub description: String,
    /// JSON Schema of the input object. Besides being sent to the model, it is enforced before
    /// the handler runs (see [`validate_input`] for the supported subset) and its `default`s are
    /// filled in, so handlers see complete, well-typed input.
    pub input_schema: Value,
    handler: ToolHandler,
}

impl Tool {
    /// A tool named `name` whose calls run `handler`.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: Value,
        handler: impl Fn(&Value) -> Result<Value, ToolError> + 'static,
    ) -> Self {
        Self { name: name.into(), description: description.into(), input_schema, handler: Box::new(handler) }
    }

    /// The tool's specification as sent to the model.
    pub fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name.clone(),
            description: self.description.clone(),
            input_schema: to_json(&self.input_schema),
        }
    }

    /// Validates `input` against the schema and runs the handler on the completed input.
    pub fn call(&self, input: &Value) -> Result<Value, ToolError> {
        let input = validate_input(&self.input_schema, input).map_err(ToolError::invalid_input)?;
        (self.handler)(&input)
    }
}

impl fmt::Debug for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tool").field("name", &self.name).finish_non_exhaustive()
    }
}

/// A tool-using agent: system prompt, tools and limits.
#[derive(Debug)]
pub struct Agent {
    /// The system prompt sent with every model call.
    pub system_prompt: String,
    /// The tools offered to the model.
    pub tools: Vec<Tool>,
    /// Maximum number of model calls per [`Agent::run`]. When the model still wants tools after
    /// the last allowed call, the run ends with the `max_cycles` error (those tools are not run).
    pub max_cycles: u32,
    /// Sampling parameters; `None` uses the host's and model's defaults.
    pub inference: Option<InferenceConfig>,
    /// How the model should choose tools; `None` means `auto`.
    pub tool_choice: Option<ToolChoice>,
    /// Largest serialized tool result sent to the model (see [`DEFAULT_MAX_RESULT_BYTES`]).
    pub max_result_bytes: usize,
}

/// How a run ended, with counters for the plugin's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Text of the final assistant message (already streamed to the caller by the host).
    pub text: String,
    /// Model calls made.
    pub cycles: u32,
    /// Tool uses answered.
    pub tool_calls: u32,
    /// Tool uses answered with an `error` result.
    pub tool_errors: u32,
    /// Why the last model call stopped: `end_turn`, `stop_sequence` or `max_tokens` (the answer
    /// was cut off by the token limit).
    pub stop_reason: String,
    /// Input tokens over all model calls, as reported by the provider.
    pub input_tokens: u64,
    /// Output tokens over all model calls, as reported by the provider.
    pub output_tokens: u64,
}

impl Outcome {
    /// A compact JSON summary, suitable as a plugin's invocation result. The answer text is not
    /// repeated: the caller has already received it as streamed events.
    pub fn summary(&self) -> Value {
        json!({
            "cycles": self.cycles,
            "tool_calls": self.tool_calls,
            "tool_errors": self.tool_errors,
            "stop_reason": self.stop_reason,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        })
    }
}

impl Agent {
    /// An agent with `system_prompt`, no tools and default limits.
    pub fn new(system_prompt: impl Into<String>) -> Self {
        Self {
            system_prompt: system_prompt.into(),
            tools: Vec::new(),
            max_cycles: DEFAULT_MAX_CYCLES,
            inference: None,
            tool_choice: None,
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
        }
    }

    /// Adds a tool.
    #[must_use]
    pub fn tool(mut self, tool: Tool) -> Self {
        self.tools.push(tool);
        self
    }

    /// Sets [`Agent::max_cycles`].
    #[must_use]
    pub fn max_cycles(mut self, max_cycles: u32) -> Self {
        self.max_cycles = max_cycles;
        self
    }

    /// Sets [`Agent::inference`].
    #[must_use]
    pub fn inference(mut self, config: InferenceConfig) -> Self {
        self.inference = Some(config);
        self
    }

    /// Runs the conversation for `user_prompt` with streaming (`model.converse-stream`) and
    /// returns the final answer's text.
    pub fn run(&self, user_prompt: &str) -> Result<String, PluginError> {
        self.run_with_stats(user_prompt).map(|o| o.text)
    }

    /// Like [`Agent::run`], with the counters of the run.
    pub fn run_with_stats(&self, user_prompt: &str) -> Result<Outcome, PluginError> {
        self.run_with(user_prompt, crate::model::converse_stream)
    }

    /// Runs the loop with `call_model` as the model (for example `model::converse` to not
    /// stream, or a scripted fake in tests).
    pub fn run_with(
        &self,
        user_prompt: &str,
        mut call_model: impl FnMut(&Request) -> Result<Response, ModelError>,
    ) -> Result<Outcome, PluginError> {
        self.check().map_err(|e| PluginError::new("agent_misconfigured", e))?;
        if user_prompt.trim().is_empty() {
            return Err(PluginError::new("bad_request", "the prompt is empty"));
        }
        let mut messages =
            vec![Message { role: Role::User, content: vec![ContentBlock::Text(user_prompt.to_owned())] }];
        let mut outcome = Outcome {
            text: String::new(),
            cycles: 0,
            tool_calls: 0,
            tool_errors: 0,
            stop_reason: String::new(),
            input_tokens: 0,
            output_tokens: 0,
        };
        let tool_config = self.tool_config();
        loop {
            let response = call_model(&self.request_with(tool_config.clone(), &messages))
                .map_err(|e| model_error(&e))?;
            outcome.cycles += 1;
            outcome.input_tokens += u64::from(response.usage.input_tokens);
            outcome.output_tokens += u64::from(response.usage.output_tokens);
            // Tools run on what the model really sent; the history gets the sanitized copy.
            let uses = tool_uses(&response.message);
            let assistant = sanitize_assistant(response.message);
            match response.stop_reason {
                StopReason::EndTurn | StopReason::StopSequence | StopReason::MaxTokens => {
                    outcome.stop_reason = stop_reason_name(&response.stop_reason);
                    outcome.text = text_of(&assistant);
                    return Ok(outcome);
                }
                StopReason::ToolUse => {}
                other => return Err(stop_error(&other)),
            }
            if uses.is_empty() {
                return Err(PluginError::new(
                    "model_protocol_error",
                    "the model stopped to use tools but requested none",
                ));
            }
            if self.tools.is_empty() {
                return Err(PluginError::new(
                    "model_protocol_error",
                    "the model requested a tool, but this agent offers none",
                ));
            }
            if outcome.cycles >= self.max_cycles {
                let names: Vec<&str> = uses.iter().map(|u| u.name.as_str()).collect();
                return Err(PluginError::new(
                    "max_cycles",
                    format!(
                        "stopped after {} model calls without a final answer (the model still wanted to call {}); \
                         try a simpler or more specific request",
                        outcome.cycles,
                        names.join(", ")
                    ),
                ));
            }
            let results = answer_tool_uses(&self.tools, &uses, self.max_result_bytes);
            let errors = results.iter().filter(|r| matches!(r.status, ToolResultStatus::Error)).count();
            outcome.tool_calls =
                outcome.tool_calls.saturating_add(u32::try_from(results.len()).unwrap_or(u32::MAX));
            outcome.tool_errors =
                outcome.tool_errors.saturating_add(u32::try_from(errors).unwrap_or(u32::MAX));
            messages.push(assistant);
            messages.push(Message {
                role: Role::User,
                content: results.into_iter().map(ContentBlock::ToolResult).collect(),
            });
        }
    }

    /// The model request for the conversation `messages`.
    pub fn request(&self, messages: &[Message]) -> Request {
        self.request_with(self.tool_config(), messages)
    }

    /// The tool configuration sent with every request (`None` without tools). The loop builds
    /// it once per run: each spec serializes its schema.
    fn tool_config(&self) -> Option<ToolConfig> {
        (!self.tools.is_empty()).then(|| ToolConfig {
            tools: self.tools.iter().map(Tool::spec).collect(),
            tool_choice: self.tool_choice.clone(),
        })
    }

    fn request_with(&self, tool_config: Option<ToolConfig>, messages: &[Message]) -> Request {
        Request {
            system: if self.system_prompt.is_empty() { Vec::new() } else { vec![self.system_prompt.clone()] },
            messages: messages.to_vec(),
            tool_config,
            inference_config: self.inference.clone(),
        }
    }

    /// Checks the configuration the host would otherwise reject on the first model call, with
    /// a message that names the mistake: tool name syntax, duplicate names, object schemas and
    /// a positive cycle limit.
    pub fn check(&self) -> Result<(), String> {
        if self.max_cycles == 0 {
            return Err("max_cycles must be at least 1".into());
        }
        let mut seen = HashSet::new();
        for t in &self.tools {
            if !is_valid_tool_name(&t.name) {
                return Err(format!("tool name {:?} must be 1-64 characters of [a-zA-Z0-9_-]", t.name));
            }
            if !seen.insert(t.name.as_str()) {
                return Err(format!("tool name {:?} is used twice", t.name));
            }
            if !t.input_schema.is_object() {
                return Err(format!("the input schema of tool {:?} must be a JSON object", t.name));
            }
        }
        Ok(())
    }
}

/// Whether `name` is a valid tool name (`[a-zA-Z0-9_-]{1,64}`, as Bedrock requires).
pub fn is_valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The `prompt` of a `{"prompt": "..."}` payload (the AgentCore convention the article uses).
pub fn prompt_from_payload(payload: &str) -> Result<String, PluginError> {
    let v: Value = serde_json::from_str(payload)
        .map_err(|e| PluginError::new("bad_request", format!("the payload is not JSON: {e}")))?;
    match v.get("prompt") {
        Some(Value::String(p)) if !p.trim().is_empty() => Ok(p.clone()),
        Some(Value::String(_)) => Err(PluginError::new("bad_request", "`prompt` is empty")),
        _ => Err(PluginError::new("bad_request", "the payload needs a string `prompt`")),
    }
}

/// `value` as compact JSON text, serialized into one buffer. `Value::to_string` gives the
/// same text but goes through `fmt::Formatter` a token at a time, several times slower in a
/// guest (tool schemas and results are serialized on every model call).
pub fn to_json(value: &Value) -> String {
    // Serializing a `Value` cannot fail (its map keys are strings); keep the slow path anyway.
    serde_json::to_string(value).unwrap_or_else(|_| value.to_string())
}

/// The text blocks of `message`, concatenated.
pub fn text_of(message: &Message) -> String {
    message
        .content
        .iter()
        .filter_map(|b| match b {
            ContentBlock::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// The tool uses of `message`, in order.
pub fn tool_uses(message: &Message) -> Vec<ToolUse> {
    message
        .content
        .iter()
        .filter_map(|b| match b {
            ContentBlock::ToolUse(u) => Some(u.clone()),
            _ => None,
        })
        .collect()
}

/// Makes an assistant message safe to send back in the next request: blank text blocks are
/// dropped (Bedrock rejects them) and a tool use whose input is not a JSON object gets `{}`
/// (the host rejects the whole request otherwise; the bad call itself is answered with an
/// error result by [`answer_tool_uses`], which looks at the original input).
pub fn sanitize_assistant(message: Message) -> Message {
    let content = message
        .content
        .into_iter()
        .filter(|b| !matches!(b, ContentBlock::Text(t) if t.trim().is_empty()))
        .map(|b| match b {
            ContentBlock::ToolUse(mut u) => {
                if parse_object(&u.input).is_err() {
                    u.input = "{}".into();
                }
                ContentBlock::ToolUse(u)
            }
            other => other,
        })
        .collect();
    Message { role: Role::Assistant, content }
}

/// Answers each of `uses` with exactly one result, in order. A repeated tool-use id is
/// answered once (the first time): two results for one id would make the next request invalid.
pub fn answer_tool_uses(tools: &[Tool], uses: &[ToolUse], max_result_bytes: usize) -> Vec<ToolResult> {
    let mut seen = HashSet::new();
    uses.iter()
        .filter(|u| seen.insert(u.tool_use_id.as_str()))
        .map(|u| dispatch(tools, u, max_result_bytes))
        .collect()
}

/// Runs one tool use and wraps the outcome as its tool result.
pub fn dispatch(tools: &[Tool], tool_use: &ToolUse, max_result_bytes: usize) -> ToolResult {
    let outcome = match tools.iter().find(|t| t.name == tool_use.name) {
        None => {
            let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
            Err(ToolError::new(format!(
                "unknown tool `{}`; the available tools are: {}",
                tool_use.name,
                names.join(", ")
            )))
        }
        Some(tool) => parse_object(&tool_use.input).and_then(|input| tool.call(&input)),
    };
    let id = tool_use.tool_use_id.clone();
    match outcome.and_then(|v| result_content(v, max_result_bytes)) {
        Ok(content) => {
            ToolResult { tool_use_id: id, status: ToolResultStatus::Success, content: vec![content] }
        }
        Err(e) => ToolResult {
            tool_use_id: id,
            status: ToolResultStatus::Error,
            content: vec![ToolResultContent::Text(e.message)],
        },
    }
}

/// A tool's output as one content block: objects and arrays as JSON, strings as text (not
/// quoted), other scalars as their JSON text; refused past `max_bytes`.
fn result_content(value: Value, max_bytes: usize) -> Result<ToolResultContent, ToolError> {
    let (content, len) = match value {
        Value::String(s) => {
            let len = s.len();
            (ToolResultContent::Text(s), len)
        }
        v @ (Value::Object(_) | Value::Array(_)) => {
            let s = to_json(&v);
            let len = s.len();
            (ToolResultContent::Json(s), len)
        }
        other => {
            let s = to_json(&other);
            let len = s.len();
            (ToolResultContent::Text(s), len)
        }
    };
    if len > max_bytes {
        return Err(ToolError::new(format!(
            "the result is too large ({len} bytes, the limit is {max_bytes}); ask for fewer records or fields"
        )));
    }
    Ok(content)
}

fn parse_object(input: &str) -> Result<Value, ToolError> {
    // Bedrock sends `{}` for a tool without arguments, but an empty string also means "none".
    if input.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(input) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(ToolError::invalid_input("the tool input must be a JSON object")),
        Err(e) => Err(ToolError::invalid_input(format!("the tool input is not valid JSON ({e})"))),
    }
}

/// Checks `input` against `schema` and returns it with the schema's `default`s filled in.
///
/// Supported subset of JSON Schema (what tool specs use in practice): `type` (a name or a list
/// of names: `object`, `string`, `integer`, `number`, `boolean`, `array`, `null`),
/// `properties`, `required`, `additionalProperties: false`, `default`, `enum`, `minimum`,
/// `maximum`, `minLength`, `maxLength` (in characters), `items` and `minItems`/`maxItems`.
/// Other keywords are ignored, so a schema may carry more than is enforced here; tools still
/// check their own invariants (formats, patterns). Numeric strings are accepted for
/// `integer`/`number` (and converted), because models sometimes quote numbers.
pub fn validate_input(schema: &Value, input: &Value) -> Result<Value, String> {
    check_value(schema, input, "input")
}

fn check_value(schema: &Value, value: &Value, path: &str) -> Result<Value, String> {
    let Some(schema) = schema.as_object() else {
        return Ok(value.clone());
    };
    let value = coerce(schema, value);
    if let Some(types) = schema.get("type") {
        let allowed: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !allowed.is_empty() && !allowed.iter().any(|t| has_type(&value, t)) {
            return Err(format!("`{path}` must be {}, got {}", article_list(&allowed), type_name(&value)));
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(&value)
    {
        let shown: Vec<String> = options.iter().map(Value::to_string).collect();
        return Err(format!("`{path}` must be one of {}", shown.join(", ")));
    }
    match &value {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && x < min
            {
                return Err(format!("`{path}` must be at least {}", show_num(min)));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && x > max
            {
                return Err(format!("`{path}` must be at most {}", show_num(max)));
            }
        }
        Value::String(s) => {
            let chars = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && chars < min
            {
                return Err(if min == 1 {
                    format!("`{path}` must not be empty")
                } else {
                    format!("`{path}` must be at least {min} characters long")
                });
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && chars > max
            {
                return Err(format!("`{path}` must be at most {max} characters long"));
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && n < min
            {
                return Err(format!("`{path}` needs at least {min} items"));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && n > max
            {
                return Err(format!("`{path}` takes at most {max} items"));
            }
            if let Some(item_schema) = schema.get("items") {
                let checked = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| check_value(item_schema, item, &format!("{path}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(Value::Array(checked));
            }
        }
        Value::Object(fields) => return check_object(schema, fields, path),
        Value::Bool(_) | Value::Null => {}
    }
    Ok(value)
}

fn check_object(
    schema: &Map<String, Value>,
    fields: &Map<String, Value>,
    path: &str,
) -> Result<Value, String> {
    let props = schema.get("properties").and_then(Value::as_object);
    let at = |name: &str| if path == "input" { name.to_owned() } else { format!("{path}.{name}") };
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !fields.contains_key(name) {
                return Err(format!("`{}` is required", at(name)));
            }
        }
    }
    let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
    let mut out = Map::new();
    for (name, value) in fields {
        match props.and_then(|p| p.get(name)) {
            Some(prop) => {
                out.insert(name.clone(), check_value(prop, value, &at(name))?);
            }
            None if closed => {
                let known: Vec<&str> =
                    props.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
                return Err(format!("unknown property `{}` (allowed: {})", at(name), known.join(", ")));
            }
            None => {
                out.insert(name.clone(), value.clone());
            }
        }
    }
    if let Some(props) = props {
        for (name, prop) in props {
            if !out.contains_key(name)
                && let Some(default) = prop.get("default")
            {
                out.insert(name.clone(), default.clone());
            }
        }
    }
    Ok(Value::Object(out))
}

/// `"5"` for an `integer`/`number` schema becomes `5`; everything else is left alone.
fn coerce(schema: &Map<String, Value>, value: &Value) -> Value {
    let Value::String(s) = value else {
        return value.clone();
    };
    let wants = |t: &str| match schema.get("type") {
        Some(Value::String(x)) => x == t,
        Some(Value::Array(xs)) => xs.iter().any(|x| x == t) && !xs.iter().any(|x| x == "string"),
        _ => false,
    };
    let s = s.trim();
    if wants("integer")
        && let Ok(i) = s.parse::<i64>()
    {
        return Value::from(i);
    }
    if wants("number")
        && let Ok(f) = s.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Value::Number(n);
    }
    value.clone()
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        // 5.0 counts as an integer, as in JSON Schema.
        "integer" => value.as_i64().is_some() || value.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => true,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn article_list(types: &[&str]) -> String {
    let named: Vec<String> = types
        .iter()
        .map(|t| match *t {
            "object" | "array" | "integer" => format!("an {t}"),
            "null" => "null".to_owned(),
            other => format!("a {other}"),
        })
        .collect();
    named.join(" or ")
}

fn show_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 { format!("{}", x as i64) } else { x.to_string() }
}

/// The snake_case name of a stop reason, as Bedrock spells it.
pub fn stop_reason_name(reason: &StopReason) -> String {
    match reason {
        StopReason::EndTurn => "end_turn".into(),
        StopReason::ToolUse => "tool_use".into(),
        StopReason::MaxTokens => "max_tokens".into(),
        StopReason::StopSequence => "stop_sequence".into(),
        StopReason::GuardrailIntervened => "guardrail_intervened".into(),
        StopReason::ContentFiltered => "content_filtered".into(),
        StopReason::MalformedModelOutput => "malformed_model_output".into(),
        StopReason::MalformedToolUse => "malformed_tool_use".into(),
        StopReason::ContextWindowExceeded => "model_context_window_exceeded".into(),
        StopReason::Other(s) => s.clone(),
    }
}

/// The plugin error for a stop reason that ends the run without an answer.
fn stop_error(reason: &StopReason) -> PluginError {
    let (code, message) = match reason {
        StopReason::GuardrailIntervened => ("guardrail_intervened", "a guardrail stopped the model's answer"),
        StopReason::ContentFiltered => ("content_filtered", "the model's answer was filtered"),
        StopReason::MalformedModelOutput | StopReason::MalformedToolUse => {
            ("model_malformed_output", "the model produced output that could not be used; try again")
        }
        StopReason::ContextWindowExceeded => {
            ("context_window_exceeded", "the conversation no longer fits the model's context window")
        }
        _ => ("model_stopped", "the model stopped for an unexpected reason"),
    };
    PluginError::new(code, format!("{message} ({})", stop_reason_name(reason)))
}

/// Stable plugin error code for a model error kind.
pub fn model_error_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Unavailable => "model_unavailable",
        ErrorKind::Validation => "model_request_invalid",
        ErrorKind::Throttled => "model_throttled",
        ErrorKind::ModelNotReady => "model_not_ready",
        ErrorKind::ModelTimeout => "model_timeout",
        ErrorKind::ModelError => "model_error",
        ErrorKind::StreamError => "model_stream_error",
        ErrorKind::ServiceUnavailable => "model_service_unavailable",
        ErrorKind::Internal => "model_internal_error",
        ErrorKind::AccessDenied => "model_access_denied",
        ErrorKind::NotFound => "model_not_found",
        ErrorKind::BudgetExceeded => "budget_exceeded",
    }
}

/// A failed model call as a plugin error: stable code from the kind, the host's safe message,
/// and a hint when trying again later may help.
pub fn model_error(e: &ModelError) -> PluginError {
    let mut message =
        if e.message.is_empty() { "the model call failed".to_owned() } else { e.message.clone() };
    if e.retryable {
        message.push_str(" (temporary: try again later)");
    }
    PluginError::new(model_error_code(e.kind), message)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::model::Usage;
    use std::cell::RefCell;
    use std::rc::Rc;

    fn schema_ab() -> Value {
        json!({"type":"object",
               "properties":{"a":{"type":"integer","minimum":0,"maximum":10},"b":{"type":"string","default":"x"}},
               "required":["a"],"additionalProperties":false})
    }

    fn echo_tool() -> Tool {
        Tool::new("echo", "Echoes its input.", schema_ab(), |input| Ok(input.clone()))
    }

    fn failing_tool() -> Tool {
        Tool::new("fail", "Always fails.", json!({"type":"object"}), |_| Err(ToolError::new("access denied")))
    }

    fn use_block(id: &str, name: &str, input: &str) -> ContentBlock {
        ContentBlock::ToolUse(ToolUse { tool_use_id: id.into(), name: name.into(), input: input.into() })
    }

    fn response(content: Vec<ContentBlock>, stop: StopReason) -> Response {
        Response {
            message: Message { role: Role::Assistant, content },
            stop_reason: stop,
            usage: Usage { input_tokens: 10, output_tokens: 5, total_tokens: 15 },
            latency_ms: None,
        }
    }

    /// A fake model that plays `script` in order and records every request.
    #[allow(clippy::type_complexity)]
    fn scripted(
        script: Vec<Result<Response, ModelError>>,
    ) -> (impl FnMut(&Request) -> Result<Response, ModelError>, Rc<RefCell<Vec<Request>>>) {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let log = Rc::clone(&seen);
        let mut script = script.into_iter();
        let f = move |req: &Request| {
            log.borrow_mut().push(req.clone());
            script.next().expect("the loop called the model more often than scripted")
        };
        (f, seen)
    }

    fn results_of(msg: &Message) -> Vec<&ToolResult> {
        msg.content
            .iter()
            .filter_map(|b| match b {
                ContentBlock::ToolResult(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn content_text(r: &ToolResult) -> String {
        match &r.content[0] {
            ToolResultContent::Text(t) | ToolResultContent::Json(t) => t.clone(),
        }
    }

    #[test]
    fn end_turn_returns_the_final_text_and_sends_prompt_and_system() {
        let agent = Agent::new("be brief").tool(echo_tool());
        let (model, seen) = scripted(vec![Ok(response(
            vec![ContentBlock::Text("Hello ".into()), ContentBlock::Text("there".into())],
            StopReason::EndTurn,
        ))]);
        let out = agent.run_with("hi", model).unwrap();
        assert_eq!(out.text, "Hello there");
        assert_eq!((out.cycles, out.tool_calls, out.stop_reason.as_str()), (1, 0, "end_turn"));
        let reqs = seen.borrow();
        assert_eq!(reqs[0].system, vec!["be brief".to_owned()]);
        assert_eq!(reqs[0].messages.len(), 1);
        assert!(matches!(reqs[0].messages[0].role, Role::User));
        assert!(matches!(&reqs[0].messages[0].content[0], ContentBlock::Text(t) if t == "hi"));
        let tc = reqs[0].tool_config.as_ref().unwrap();
        assert_eq!(tc.tools[0].name, "echo");
        assert_eq!(serde_json::from_str::<Value>(&tc.tools[0].input_schema).unwrap(), schema_ab());
    }

    #[test]
    fn every_tool_use_of_a_turn_is_answered_once_in_order_by_id() {
        let agent = Agent::new("s").tool(echo_tool()).tool(failing_tool());
        let (model, seen) = scripted(vec![
            Ok(response(
                vec![
                    ContentBlock::Text("Working on it.".into()),
                    use_block("t1", "echo", r#"{"a":1}"#),
                    use_block("t2", "fail", "{}"),
                    use_block("t3", "nope", "{}"),
                    use_block("t4", "echo", r#"{"a":"lots"}"#),
                ],
                StopReason::ToolUse,
            )),
            Ok(response(vec![ContentBlock::Text("done".into())], StopReason::EndTurn)),
        ]);
        let out = agent.run_with("go", model).unwrap();
        assert_eq!((out.cycles, out.tool_calls, out.tool_errors), (2, 4, 3));
        assert_eq!((out.input_tokens, out.output_tokens), (20, 10));
        let reqs = seen.borrow();
        let second = &reqs[1].messages;
        assert_eq!(second.len(), 3);
        assert!(matches!(second[1].role, Role::Assistant));
        assert!(matches!(second[2].role, Role::User));
        let results = results_of(&second[2]);
        assert_eq!(results.len(), 4, "one user message with all results");
        let ids: Vec<&str> = results.iter().map(|r| r.tool_use_id.as_str()).collect();
        assert_eq!(ids, ["t1", "t2", "t3", "t4"]);
        assert!(matches!(results[0].status, ToolResultStatus::Success));
        assert!(matches!(&results[0].content[0], ToolResultContent::Json(j) if j == r#"{"a":1,"b":"x"}"#));
        assert!(matches!(results[1].status, ToolResultStatus::Error));
        assert_eq!(content_text(results[1]), "access denied");
        assert!(content_text(results[2]).contains("unknown tool `nope`"), "{}", content_text(results[2]));
        assert!(content_text(results[2]).contains("echo, fail"));
        assert_eq!(content_text(results[3]), "invalid input: `a` must be an integer, got a string");
    }

    #[test]
    fn bad_tool_input_gets_an_error_result_and_a_sendable_history() {
        let agent = Agent::new("s").tool(echo_tool());
        let (model, seen) = scripted(vec![
            Ok(response(
                vec![ContentBlock::Text("  ".into()), use_block("t1", "echo", "{not json")],
                StopReason::ToolUse,
            )),
            Ok(response(vec![ContentBlock::Text("sorry".into())], StopReason::EndTurn)),
        ]);
        agent.run_with("go", model).unwrap();
        let reqs = seen.borrow();
        let assistant = &reqs[1].messages[1];
        assert_eq!(assistant.content.len(), 1, "blank text dropped");
        assert!(matches!(&assistant.content[0], ContentBlock::ToolUse(u) if u.input == "{}"));
        let r = results_of(&reqs[1].messages[2]);
        assert!(matches!(r[0].status, ToolResultStatus::Error));
        assert!(content_text(r[0]).starts_with("invalid input: the tool input is not valid JSON"));
    }

    #[test]
    fn repeated_ids_are_answered_once() {
        let tools = [echo_tool()];
        let uses = [
            ToolUse { tool_use_id: "x".into(), name: "echo".into(), input: r#"{"a":1}"#.into() },
            ToolUse { tool_use_id: "x".into(), name: "echo".into(), input: r#"{"a":2}"#.into() },
        ];
        let r = answer_tool_uses(&tools, &uses, 1000);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn max_cycles_ends_cleanly_without_running_the_last_tools() {
        let runs = Rc::new(RefCell::new(0));
        let counter = Rc::clone(&runs);
        let tool = Tool::new("echo", "d", json!({"type":"object"}), move |v| {
            *counter.borrow_mut() += 1;
            Ok(v.clone())
        });
        let agent = Agent::new("s").tool(tool).max_cycles(2);
        let turn = || Ok(response(vec![use_block("t", "echo", "{}")], StopReason::ToolUse));
        let (model, seen) = scripted(vec![turn(), turn()]);
        let err = agent.run_with("loop", model).unwrap_err();
        assert_eq!(err.code, "max_cycles");
        assert!(err.message.contains("after 2 model calls"), "{}", err.message);
        assert!(err.message.contains("echo"));
        assert_eq!(seen.borrow().len(), 2);
        assert_eq!(*runs.borrow(), 1, "the tools of the last allowed call are not run");
    }

    #[test]
    fn model_errors_become_stable_codes() {
        for (kind, code) in [
            (ErrorKind::Unavailable, "model_unavailable"),
            (ErrorKind::Throttled, "model_throttled"),
            (ErrorKind::BudgetExceeded, "budget_exceeded"),
            (ErrorKind::Validation, "model_request_invalid"),
        ] {
            let agent = Agent::new("s");
            let (model, _) =
                scripted(vec![Err(ModelError { kind, message: "nope".into(), retryable: true })]);
            let err = agent.run_with("hi", model).unwrap_err();
            assert_eq!(err.code, code);
            assert_eq!(err.message, "nope (temporary: try again later)");
        }
        let e =
            model_error(&ModelError { kind: ErrorKind::NotFound, message: String::new(), retryable: false });
        assert_eq!((e.code.as_str(), e.message.as_str()), ("model_not_found", "the model call failed"));
    }

    #[test]
    fn stop_reasons() {
        let run = |stop: StopReason| {
            let (model, _) = scripted(vec![Ok(response(vec![ContentBlock::Text("partial".into())], stop))]);
            Agent::new("s").tool(echo_tool()).run_with("hi", model)
        };
        let out = run(StopReason::MaxTokens).unwrap();
        assert_eq!((out.text.as_str(), out.stop_reason.as_str()), ("partial", "max_tokens"));
        assert_eq!(run(StopReason::StopSequence).unwrap().stop_reason, "stop_sequence");
        assert_eq!(run(StopReason::GuardrailIntervened).unwrap_err().code, "guardrail_intervened");
        assert_eq!(run(StopReason::ContentFiltered).unwrap_err().code, "content_filtered");
        assert_eq!(run(StopReason::MalformedToolUse).unwrap_err().code, "model_malformed_output");
        assert_eq!(run(StopReason::ContextWindowExceeded).unwrap_err().code, "context_window_exceeded");
        let e = run(StopReason::Other("new_reason".into())).unwrap_err();
        assert_eq!(e.code, "model_stopped");
        assert!(e.message.contains("new_reason"));
        // tool-use without any tool use block is a protocol error, not a hang or an empty turn
        assert_eq!(run(StopReason::ToolUse).unwrap_err().code, "model_protocol_error");
    }

    #[test]
    fn misconfiguration_and_empty_prompts_are_refused_before_the_model() {
        let bad = Agent::new("s").tool(Tool::new("bad name", "d", json!({}), |v| Ok(v.clone())));
        let (model, seen) = scripted(vec![]);
        assert_eq!(bad.run_with("hi", model).unwrap_err().code, "agent_misconfigured");
        assert!(seen.borrow().is_empty());
        let dup = Agent::new("s").tool(echo_tool()).tool(echo_tool());
        assert!(dup.check().unwrap_err().contains("twice"));
        assert!(Agent::new("s").max_cycles(0).check().is_err());
        let (model, _) = scripted(vec![]);
        assert_eq!(Agent::new("s").run_with("   ", model).unwrap_err().code, "bad_request");
        assert!(Agent::new("").request(&[]).system.is_empty());
        assert!(Agent::new("s").request(&[]).tool_config.is_none());
    }

    #[test]
    fn large_and_scalar_results() {
        let tools = [Tool::new("big", "d", json!({"type":"object"}), |_| Ok(json!({"x": "y".repeat(100)})))];
        let u = ToolUse { tool_use_id: "1".into(), name: "big".into(), input: "{}".into() };
        let r = dispatch(&tools, &u, 50);
        assert!(matches!(r.status, ToolResultStatus::Error));
        assert!(content_text(&r).contains("too large"));
        let tools = [Tool::new("s", "d", json!({"type":"object"}), |_| Ok(json!("plain")))];
        let u = ToolUse { tool_use_id: "1".into(), name: "s".into(), input: String::new() };
        let r = dispatch(&tools, &u, 50);
        assert!(matches!(&r.content[0], ToolResultContent::Text(t) if t == "plain"));
    }

    #[test]
    fn schema_validation() {
        let s = schema_ab();
        assert_eq!(validate_input(&s, &json!({"a": 3})).unwrap(), json!({"a":3,"b":"x"}));
        assert_eq!(validate_input(&s, &json!({"a": "4"})).unwrap(), json!({"a":4,"b":"x"}));
        assert_eq!(validate_input(&s, &json!({"a": 5.0})).unwrap()["a"], json!(5.0));
        assert_eq!(validate_input(&s, &json!({})).unwrap_err(), "`a` is required");
        assert_eq!(validate_input(&s, &json!({"a": 11})).unwrap_err(), "`a` must be at most 10");
        assert_eq!(validate_input(&s, &json!({"a": -1})).unwrap_err(), "`a` must be at least 0");
        assert_eq!(
            validate_input(&s, &json!({"a": 1.5})).unwrap_err(),
            "`a` must be an integer, got a number"
        );
        assert_eq!(
            validate_input(&s, &json!({"a": 1, "b": 2})).unwrap_err(),
            "`b` must be a string, got a number"
        );
        assert_eq!(
            validate_input(&s, &json!({"a": 1, "c": 2})).unwrap_err(),
            "unknown property `c` (allowed: a, b)"
        );
        assert_eq!(validate_input(&s, &json!([1])).unwrap_err(), "`input` must be an object, got an array");

        let nested = json!({"type":"object","properties":{
            "u":{"type":"object","properties":{"k":{"type":"string","maxLength":3,"enum":["ab","abc"]}},
                 "minProperties":1},
            "l":{"type":"array","items":{"type":"integer"},"maxItems":2},
            "n":{"type":["string","null"],"minLength":1}}});
        assert!(validate_input(&nested, &json!({"u":{"k":"abc"},"l":[1,2],"n":null})).is_ok());
        assert_eq!(
            validate_input(&nested, &json!({"u":{"k":"abcd"}})).unwrap_err(),
            "`u.k` must be one of \"ab\", \"abc\""
        );
        assert_eq!(
            validate_input(&nested, &json!({"l":[1,"x"]})).unwrap_err(),
            "`l[1]` must be an integer, got a string"
        );
        assert_eq!(validate_input(&nested, &json!({"l":[1,2,3]})).unwrap_err(), "`l` takes at most 2 items");
        assert_eq!(validate_input(&nested, &json!({"n":""})).unwrap_err(), "`n` must not be empty");
        // "5" stays a string when strings are allowed
        let either = json!({"type":"object","properties":{"v":{"type":["string","integer"]}}});
        assert_eq!(validate_input(&either, &json!({"v":"5"})).unwrap(), json!({"v":"5"}));
    }

    #[test]
    fn payload_prompt() {
        assert_eq!(prompt_from_payload(r#"{"prompt":"Show me"}"#).unwrap(), "Show me");
        assert_eq!(prompt_from_payload("nope").unwrap_err().code, "bad_request");
        assert_eq!(prompt_from_payload(r#"{"prompt":5}"#).unwrap_err().code, "bad_request");
        assert_eq!(prompt_from_payload(r#"{"prompt":" "}"#).unwrap_err().message, "`prompt` is empty");
    }

    #[test]
    fn tool_names() {
        assert!(is_valid_tool_name("query_incidents"));
        assert!(is_valid_tool_name("a-B_9"));
        assert!(!is_valid_tool_name(""));
        assert!(!is_valid_tool_name("a.b"));
        assert!(!is_valid_tool_name(&"x".repeat(65)));
    }
}
