//! Hostile use of the model and of the WIT boundary itself.

use delegate_sdk::PluginError;
use delegate_sdk::model::{self, ContentBlock, ErrorKind, Message, Role};
use serde_json::Value;

fn tiny_request() -> model::Request {
    model::Request {
        system: Vec::new(),
        messages: vec![Message { role: Role::User, content: vec![ContentBlock::Text("hi".into())] }],
        tool_config: None,
        inference_config: None,
    }
}

fn kind_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Validation => "validation",
        ErrorKind::Throttled => "throttled",
        ErrorKind::ModelNotReady => "model_not_ready",
        ErrorKind::ModelTimeout => "model_timeout",
        ErrorKind::ModelError => "model_error",
        ErrorKind::StreamError => "stream_error",
        ErrorKind::ServiceUnavailable => "service_unavailable",
        ErrorKind::Internal => "internal",
        ErrorKind::AccessDenied => "access_denied",
        ErrorKind::NotFound => "not_found",
        ErrorKind::BudgetExceeded => "budget_exceeded",
    }
}

fn call(stream: bool) -> Result<model::Response, model::Error> {
    if stream { model::converse_stream(&tiny_request()) } else { model::converse(&tiny_request()) }
}

/// `model-flood`: model calls until one fails.
pub fn model_flood(v: &Value) -> Result<String, PluginError> {
    let count = v.get("count").and_then(Value::as_u64).unwrap_or(1000);
    let stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    for i in 0..count {
        if let Err(e) = call(stream) {
            let code = kind_code(e.kind);
            return Err(PluginError::new(code, format!("{code}: call {}: {}", i + 1, e.message)));
        }
    }
    Ok(count.to_string())
}

/// `squeeze-then-model`: no room left for the model's answer.
pub fn squeeze_then_model(v: &Value) -> Result<String, PluginError> {
    use core::arch::wasm32::{memory_grow, memory_size};
    let fill = usize::try_from(v.get("fill_mib").and_then(Value::as_u64).unwrap_or(28)).unwrap_or(28);
    let want_pages = (fill << 20) / 65_536;
    let have = memory_size(0);
    if have < want_pages {
        memory_grow(0, want_pages - have);
    }
    let stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    match call(stream) {
        Ok(r) => Ok(format!("answer of {} bytes fitted", r.message.content.len())),
        Err(e) => Err(PluginError::new(kind_code(e.kind), e.message)),
    }
}

fn giant(v: &Value, byte: char) -> String {
    let mib = usize::try_from(v.get("mib").and_then(Value::as_u64).unwrap_or(64)).unwrap_or(64);
    std::iter::repeat_n(byte, mib << 20).collect()
}

/// `emit-giant`.
pub fn emit_giant(v: &Value) -> Result<String, PluginError> {
    delegate_sdk::emit(&giant(v, 'g'));
    Ok("emitted".into())
}

/// `result-giant`.
pub fn result_giant(v: &Value) -> Result<String, PluginError> {
    Ok(giant(v, 'r'))
}

/// `error-giant`.
pub fn error_giant(v: &Value) -> Result<String, PluginError> {
    Err(PluginError::new("giant", giant(v, 'e')))
}

// The core import `output.emit` lowers to: (pointer, length) of the string's bytes. A Rust
// `&str` can only hold UTF-8, so the binding cannot send anything else; the raw import can.
#[link(wasm_import_module = "delegate:agent/output@0.1.0")]
unsafe extern "C" {
    #[link_name = "emit"]
    fn raw_emit(ptr: *const u8, len: usize);
}

/// `emit-invalid-utf8`.
pub fn emit_invalid_utf8() -> Result<String, PluginError> {
    let bytes: &[u8] = b"not \xff\xfe utf-8";
    // SAFETY: the pointer and length describe a live byte slice; the canonical ABI reads
    // exactly `len` bytes at `ptr` from this instance's memory and validates them itself.
    unsafe { raw_emit(bytes.as_ptr(), bytes.len()) };
    Ok("the host accepted bytes that are not UTF-8".into())
}
