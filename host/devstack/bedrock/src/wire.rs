//! Bedrock wire details: request checks (the ValidationExceptions Bedrock gives for malformed
//! conversations), SigV4 header shape, and `application/vnd.amazon.eventstream` frames.

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use http::HeaderMap;
use rand::Rng;
use serde_json::Value;

/// A request Bedrock would refuse, with the error it would send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} ({status}): {message}")]
pub struct WireError {
    /// HTTP status.
    pub status: u16,
    /// Error name, sent in `x-amzn-ErrorType`.
    pub name: &'static str,
    /// Message, sent as `{"message": ...}`.
    pub message: String,
}

fn validation(message: impl Into<String>) -> WireError {
    WireError { status: 400, name: "ValidationException", message: message.into() }
}

fn is_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

const BLOCK_KINDS: &[&str] = &[
    "text",
    "image",
    "document",
    "video",
    "toolUse",
    "toolResult",
    "guardContent",
    "reasoningContent",
    "cachePoint",
];

/// Checks a Converse / ConverseStream request body the way Bedrock does.
pub fn validate_converse_body(body: &Value) -> Result<(), WireError> {
    let Some(obj) = body.as_object() else {
        return Err(validation("Malformed input request, please reformat your input and try again."));
    };
    let messages = match obj.get("messages") {
        Some(Value::Array(m)) => m,
        None => {
            return Err(validation(
                "1 validation error detected: Value null at 'messages' failed to satisfy constraint: Member must not be null",
            ));
        }
        Some(_) => {
            return Err(validation("Malformed input request: messages must be a list."));
        }
    };
    if messages.is_empty() {
        return Err(validation(
            "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
        ));
    }
    let tool_config = obj.get("toolConfig");
    if let Some(tc) = tool_config {
        let tools = tc
            .get("tools")
            .and_then(Value::as_array)
            .ok_or_else(|| validation("toolConfig.tools must be a non-empty list."))?;
        if tools.is_empty() {
            return Err(validation("toolConfig.tools must be a non-empty list."));
        }
        for t in tools {
            let name = t.pointer("/toolSpec/name").and_then(Value::as_str).unwrap_or_default();
            if !is_tool_name(name) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{name}' at 'toolConfig.tools.member.toolSpec.name' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+"
                )));
            }
            if !t.pointer("/toolSpec/inputSchema/json").is_some_and(Value::is_object) {
                return Err(validation(format!("The input schema of tool {name} must be a JSON object.")));
            }
        }
    }
    if let Some(ic) = obj.get("inferenceConfig") {
        if let Some(m) = ic.get("maxTokens")
            && m.as_u64().is_none_or(|m| m < 1)
        {
            return Err(validation(
                "The maximum tokens you requested exceeds the model limit or is below 1.",
            ));
        }
        for key in ["temperature", "topP"] {
            if let Some(v) = ic.get(key)
                && !v.as_f64().is_some_and(|v| (0.0..=1.0).contains(&v))
            {
                return Err(validation(format!("{key} must be between 0 and 1.")));
            }
        }
    }
    let mut pending: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        if role != "user" && role != "assistant" {
            return Err(validation(format!(
                "Value '{role}' at 'messages.{}.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]",
                i + 1
            )));
        }
        if role != expected {
            return Err(validation(if i == 0 {
                "A conversation must start with a user message. Try again with a conversation that starts with a user message.".to_owned()
            } else {
                "A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.".to_owned()
            }));
        }
        let content = m.get("content").and_then(Value::as_array).filter(|c| !c.is_empty()).ok_or_else(|| {
            validation(format!("The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."))
        })?;
        let mut uses = Vec::new();
        let mut answered = Vec::new();
        for b in content {
            let keys: Vec<&String> = b.as_object().map(|o| o.keys().collect()).unwrap_or_default();
            if keys.len() != 1 || !BLOCK_KINDS.contains(&keys[0].as_str()) {
                return Err(validation(format!(
                    "Malformed input request: content block of messages.{i} must have exactly one member."
                )));
            }
            if let Some(u) = b.get("toolUse") {
                if tool_config.is_none() {
                    return Err(validation(
                        "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
                    ));
                }
                if role != "assistant" {
                    return Err(validation(format!(
                        "messages.{i}: toolUse blocks are only allowed in assistant messages."
                    )));
                }
                let id = u.get("toolUseId").and_then(Value::as_str).unwrap_or_default();
                let name = u.get("name").and_then(Value::as_str).unwrap_or_default();
                if id.is_empty() || !is_tool_name(name) || !u.get("input").is_some_and(Value::is_object) {
                    return Err(validation(format!("messages.{i}: malformed toolUse block.")));
                }
                uses.push(id.to_owned());
            }
            if let Some(r) = b.get("toolResult") {
                if tool_config.is_none() {
                    return Err(validation(
                        "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
                    ));
                }
                let id = r.get("toolUseId").and_then(Value::as_str).unwrap_or_default();
                if !pending.iter().any(|p| p == id) {
                    return Err(validation(format!(
                        "messages.{i}: The toolResult block with toolUseId {id} does not match a toolUse block in the previous turn."
                    )));
                }
                if let Some(s) = r.get("status").and_then(Value::as_str)
                    && s != "success"
                    && s != "error"
                {
                    return Err(validation(format!(
                        "messages.{i}: toolResult status must be success or error."
                    )));
                }
                answered.push(id.to_owned());
            }
        }
        if role == "user" && !pending.iter().all(|p| answered.contains(p)) {
            return Err(validation(format!(
                "messages.{i}: Expected toolResult blocks for every toolUse of the previous assistant turn (ids: {}).",
                pending.join(", ")
            )));
        }
        pending = uses;
    }
    Ok(())
}

/// Checks that the request carries a SigV4 `Authorization` header of the right shape for
/// service `bedrock` (the signature itself is not verified: the stub knows no secret keys).
pub fn check_sigv4(headers: &HeaderMap, region: Option<&str>) -> Result<(), WireError> {
    let denied = |status: u16, name: &'static str, message: String| WireError { status, name, message };
    let Some(auth) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Err(denied(
            403,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token".into(),
        ));
    };
    let Some(params) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return Err(denied(
            400,
            "IncompleteSignatureException",
            "Authorization header requires AWS4-HMAC-SHA256.".into(),
        ));
    };
    let get =
        |key: &str| params.split(',').map(str::trim).find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='));
    let (Some(credential), Some(signed), Some(signature)) =
        (get("Credential"), get("SignedHeaders"), get("Signature"))
    else {
        return Err(denied(
            400,
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'.".into(),
        ));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[0].is_empty() || scope[4] != "aws4_request" {
        return Err(denied(
            400,
            "IncompleteSignatureException",
            "Credential must be <key>/<date>/<region>/<service>/aws4_request.".into(),
        ));
    }
    if scope[3] != "bedrock" {
        return Err(denied(
            403,
            "InvalidSignatureException",
            "Credential should be scoped to correct service: 'bedrock'.".into(),
        ));
    }
    if let Some(r) = region
        && scope[2] != r
    {
        return Err(denied(
            403,
            "InvalidSignatureException",
            format!("Credential should be scoped to a valid region, not '{}'.", scope[2]),
        ));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(denied(403, "InvalidSignatureException", "The request signature is malformed.".into()));
    }
    let amz_date = headers.get("x-amz-date").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if amz_date.len() != 16 || !amz_date.starts_with(scope[1]) {
        return Err(denied(
            403,
            "InvalidSignatureException",
            "X-Amz-Date is missing or does not match the credential scope date.".into(),
        ));
    }
    let signed: Vec<&str> = signed.split(';').collect();
    if !signed.contains(&"host") || !signed.contains(&"x-amz-date") {
        return Err(denied(
            403,
            "InvalidSignatureException",
            "SignedHeaders must include host and x-amz-date.".into(),
        ));
    }
    Ok(())
}

const PAD: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// Bedrock's `p` padding: a random-length prefix of the alphabet, hiding token lengths.
pub fn padding() -> &'static str {
    &PAD[..rand::rng().random_range(1..=PAD.len())]
}

fn frame(message: &Message) -> Bytes {
    let mut buf = Vec::new();
    // Writing to a Vec only fails for headers/payloads beyond the format's limits, which the
    // stub never builds; an empty frame would surface in tests as a decode error.
    if write_message_to(message, &mut buf).is_err() {
        buf.clear();
    }
    Bytes::from(buf)
}

fn string_header(name: &'static str, value: &str) -> Header {
    Header::new(name, HeaderValue::String(value.to_owned().into()))
}

/// An event frame: `:event-type`, `:content-type`, `:message-type = event`; the payload is
/// the member's JSON (not wrapped in the event name) plus `p` padding.
pub fn event_frame(event_type: &str, mut payload: Value) -> Bytes {
    if let Some(o) = payload.as_object_mut() {
        o.insert("p".into(), Value::String(padding().into()));
    }
    // `to_vec`, not `to_string`: the same bytes without `fmt` a token at a time.
    let payload = serde_json::to_vec(&payload).unwrap_or_default();
    frame(
        &Message::new(Bytes::from(payload))
            .add_header(string_header(":event-type", event_type))
            .add_header(string_header(":content-type", "application/json"))
            .add_header(string_header(":message-type", "event")),
    )
}

/// An exception frame (`:message-type = exception`, `:exception-type` = the member name).
pub fn exception_frame(exception_type: &str, message: &str) -> Bytes {
    let payload = serde_json::json!({ "message": message });
    frame(
        &Message::new(Bytes::from(payload.to_string()))
            .add_header(string_header(":exception-type", exception_type))
            .add_header(string_header(":content-type", "application/json"))
            .add_header(string_header(":message-type", "exception")),
    )
}

/// The same frame with its message CRC broken: a decoder must reject it.
pub fn corrupt(frame: &Bytes) -> Bytes {
    let mut v = frame.to_vec();
    if let Some(last) = v.last_mut() {
        *last ^= 0xff;
    }
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder, read_message_from};
    use serde_json::json;

    #[test]
    fn frames_decode_with_padding_and_headers() {
        let f = event_frame("contentBlockDelta", json!({"contentBlockIndex":0,"delta":{"text":"Hel"}}));
        let mut dec = MessageFrameDecoder::new();
        let mut buf = bytes::BytesMut::new();
        let mut got = None;
        for chunk in f.chunks(5) {
            buf.extend_from_slice(chunk);
            if let DecodedFrame::Complete(m) = dec.decode_frame(&mut buf).unwrap() {
                got = Some(m);
            }
        }
        let m = got.unwrap();
        let h = |n: &str| {
            m.headers()
                .iter()
                .find(|h| h.name().as_str() == n)
                .unwrap()
                .value()
                .as_string()
                .unwrap()
                .as_str()
                .to_owned()
        };
        assert_eq!(h(":event-type"), "contentBlockDelta");
        assert_eq!(h(":message-type"), "event");
        let p: Value = serde_json::from_slice(m.payload()).unwrap();
        assert_eq!(p["delta"]["text"], "Hel");
        assert!(PAD.starts_with(p["p"].as_str().unwrap()));
        assert!(read_message_from(&mut corrupt(&f)).is_err());
    }

    #[test]
    fn conversation_rules() {
        let tc =
            json!({"tools":[{"toolSpec":{"name":"get_incident","inputSchema":{"json":{"type":"object"}}}}]});
        let ok = json!({"messages":[{"role":"user","content":[{"text":"hi"}]}]});
        validate_converse_body(&ok).unwrap();
        let msg = |b: Value| validate_converse_body(&b).unwrap_err().message;
        assert!(msg(json!({"messages":[]})).contains("start with a user"));
        assert!(
            msg(json!({"messages":[{"role":"assistant","content":[{"text":"x"}]}]}))
                .contains("start with a user")
        );
        assert!(msg(json!({"messages":[{"role":"user","content":[{"text":"x"}]},{"role":"user","content":[{"text":"x"}]}]})).contains("alternate"));
        let unanswered = json!({"toolConfig":tc,"messages":[
            {"role":"user","content":[{"text":"x"}]},
            {"role":"assistant","content":[{"toolUse":{"toolUseId":"t1","name":"get_incident","input":{}}}]},
            {"role":"user","content":[{"text":"where is my result"}]}]});
        assert!(msg(unanswered.clone()).contains("Expected toolResult"));
        let mut no_tc = unanswered;
        no_tc.as_object_mut().unwrap().remove("toolConfig");
        assert!(msg(no_tc).contains("toolConfig"));
        assert!(
            msg(json!({"toolConfig":{"tools":[{"toolSpec":{"name":"bad name","inputSchema":{"json":{}}}}]},
            "messages":[{"role":"user","content":[{"text":"x"}]}]}))
            .contains("regular expression")
        );
        assert!(msg(json!({"inferenceConfig":{"maxTokens":0},"messages":[{"role":"user","content":[{"text":"x"}]}]})).contains("maximum tokens"));
    }

    #[test]
    fn sigv4_shape() {
        let mut h = HeaderMap::new();
        assert_eq!(check_sigv4(&h, None).unwrap_err().status, 403);
        let sig = "a".repeat(64);
        h.insert("x-amz-date", "20261204T120000Z".parse().unwrap());
        h.insert(
            http::header::AUTHORIZATION,
            format!("AWS4-HMAC-SHA256 Credential=AKID/20261204/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}").parse().unwrap(),
        );
        check_sigv4(&h, Some("us-east-1")).unwrap();
        assert!(check_sigv4(&h, Some("eu-west-1")).unwrap_err().message.contains("region"));
        h.insert(
            http::header::AUTHORIZATION,
            format!("AWS4-HMAC-SHA256 Credential=AKID/20261204/us-east-1/bedrock-runtime/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}").parse().unwrap(),
        );
        assert!(check_sigv4(&h, None).unwrap_err().message.contains("'bedrock'"));
    }
}
