//! The "dispatcher": a delegate plugin that hands the user's prompt to another agent host
//! (a second delegate instance, or anything speaking the AgentCore `/invocations` contract)
//! and relays that agent's answer to its own caller *as it streams*, chunk by chunk.
//!
//! Payload: `{"prompt": "..."}`. The plugin sends `POST <agent_url>/invocations` with
//! `{"prompt": "..."}`, `Accept: text/event-stream`, and reads the server-sent events as they
//! arrive: each text chunk (a JSON string) is emitted at once, the final `{"status":"success",
//! "result":...}` event becomes part of this plugin's result, an error event (or a non-200
//! answer) becomes this plugin's error with the downstream code.
//!
//! Settings (`wasi:config/store`): `agent_url` (required, e.g. `https://agent-b.example` or
//! `http://127.0.0.1:8081` on a test machine) and `agent_plugin` (optional: the plugin to ask
//! for there, sent as `X-Delegate-Plugin`).
//!
//! Like every plugin it holds no credential. The request it makes is matched by the host
//! against the operator's egress rules; the rule for the downstream agent names a vault
//! provider that exchanges the caller's token for one addressed to that agent (On-Behalf-Of,
//! or RFC 8693 with the host's own actor token, which records this hop in the `act` chain).
//! The host also sets `traceparent`, so the downstream agent continues the same trace; any
//! trace header the plugin set would be dropped.
//!
//! Result: `{"relayed_chunks": N, "downstream": {"invocation_id": "...", "plugin": "...",
//! "result": <the downstream result, parsed if it is JSON>}}`.

mod sse;

use delegate_sdk::agent::prompt_from_payload;
use delegate_sdk::bindings::wasi::http::outgoing_handler;
use delegate_sdk::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use delegate_sdk::bindings::wasi::io::streams::StreamError;
use delegate_sdk::{PluginError, emit, settings};
use serde_json::{Value, json};

/// Most bytes read from the downstream agent in one invocation (the host's egress budget
/// applies too; this keeps the plugin's own buffers bounded).
const MAX_STREAM_BYTES: usize = 16 * 1024 * 1024;
/// Most bytes of a non-streamed (error) answer read.
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// Longest downstream error message passed on.
const MAX_MESSAGE_CHARS: usize = 512;

struct Dispatcher;

impl delegate_sdk::Guest for Dispatcher {
    fn invoke(payload: String) -> Result<String, PluginError> {
        let prompt = prompt_from_payload(&payload)?;
        let target = Target::from_settings()?;
        let response = target.send(&json!({ "prompt": prompt }).to_string())?;
        relay(&response)
    }
}

delegate_sdk::export!(Dispatcher);

/// Where the downstream agent is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    https: bool,
    authority: String,
    /// `<base path>/invocations`.
    path: String,
    plugin: Option<String>,
}

fn not_configured(message: impl Into<String>) -> PluginError {
    PluginError::new("not_configured", message)
}

impl Target {
    fn from_settings() -> Result<Target, PluginError> {
        let url = settings::get("agent_url")
            .ok_or_else(|| not_configured("the plugin setting agent_url is not set"))?;
        Target::parse(&url, settings::get("agent_plugin"))
    }

    /// `http(s)://authority[/base]` without query or fragment; the plugin name as the host's
    /// `X-Delegate-Plugin` accepts it.
    fn parse(url: &str, plugin: Option<String>) -> Result<Target, PluginError> {
        let bad = || not_configured(format!("agent_url {url:?} is not an http(s) URL of an agent host"));
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let https = match scheme {
            "https" => true,
            "http" => false,
            _ => return Err(bad()),
        };
        if rest.contains(['?', '#']) {
            return Err(bad());
        }
        let (authority, base) = rest.split_once('/').map_or((rest, ""), |(a, b)| (a, b));
        if authority.is_empty() || authority.contains('@') {
            return Err(bad());
        }
        let base = base.trim_end_matches('/');
        let path = if base.is_empty() { "/invocations".to_owned() } else { format!("/{base}/invocations") };
        if let Some(p) = &plugin {
            let ok = (1..=64).contains(&p.len())
                && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(not_configured(format!(
                    "agent_plugin {p:?} is not a plugin name ([a-z0-9-], 1-64)"
                )));
            }
        }
        Ok(Target { https, authority: authority.to_owned(), path, plugin })
    }

    /// Sends the request and waits for the response head (the body is read by [`relay`]).
    fn send(&self, body: &str) -> Result<IncomingResponse, PluginError> {
        let mut headers: Vec<(String, Vec<u8>)> = vec![
            ("content-type".into(), b"application/json".to_vec()),
            ("accept".into(), b"text/event-stream".to_vec()),
        ];
        if let Some(p) = &self.plugin {
            headers.push(("x-delegate-plugin".into(), p.as_bytes().to_vec()));
        }
        let fields = Fields::from_list(&headers).map_err(|e| transport(format!("headers: {e:?}")))?;
        let request = OutgoingRequest::new(fields);
        let scheme = if self.https { Scheme::Https } else { Scheme::Http };
        let refused = |what: &str| not_configured(format!("the request {what} was refused"));
        request.set_method(&Method::Post).map_err(|()| refused("method"))?;
        request.set_scheme(Some(&scheme)).map_err(|()| refused("scheme"))?;
        request.set_authority(Some(&self.authority)).map_err(|()| refused("authority"))?;
        request.set_path_with_query(Some(&self.path)).map_err(|()| refused("path"))?;
        let out = request.body().map_err(|()| transport("request body"))?;
        let future = outgoing_handler::handle(request, None).map_err(http_error)?;
        {
            let stream = out.write().map_err(|()| transport("request body stream"))?;
            for chunk in body.as_bytes().chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| transport(format!("request body: {e:?}")))?;
            }
        }
        OutgoingBody::finish(out, None).map_err(http_error)?;
        future.subscribe().block();
        match future.get() {
            Some(Ok(Ok(response))) => Ok(response),
            Some(Ok(Err(code))) => Err(http_error(code)),
            Some(Err(())) | None => Err(transport("no response")),
        }
    }
}

fn transport(detail: impl Into<String>) -> PluginError {
    PluginError::new(
        "downstream_unreachable",
        format!("the downstream agent could not be reached: {}", detail.into()),
    )
}

fn http_error(code: ErrorCode) -> PluginError {
    match code {
        ErrorCode::HttpRequestDenied => PluginError::new(
            "egress_denied",
            "the host refused the request to the downstream agent (no egress rule, or no credential for it)",
        ),
        other => transport(format!("{other:?}")),
    }
}

fn header(response: &IncomingResponse, name: &str) -> Option<String> {
    response
        .headers()
        .entries()
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
}

/// Reads the downstream body as it arrives: text chunks are emitted at once.
fn relay(response: &IncomingResponse) -> Result<String, PluginError> {
    let status = response.status();
    let streamed = header(response, "content-type").is_some_and(|t| t.starts_with("text/event-stream"));
    let mut outcome = Outcome {
        downstream_id: header(response, "x-delegate-invocation-id"),
        plugin: header(response, "x-delegate-plugin"),
        ..Outcome::default()
    };
    let body = response.consume().map_err(|()| transport("response body"))?;
    let result = {
        let stream = body.stream().map_err(|()| transport("response stream"))?;
        let limit = if status == 200 && streamed { MAX_STREAM_BYTES } else { MAX_ERROR_BYTES };
        let mut reader = sse::SseReader::default();
        let mut whole = Vec::new();
        let mut total = 0usize;
        let mut result = Ok(());
        loop {
            let bytes = match stream.blocking_read(64 * 1024) {
                Ok(bytes) => bytes,
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    // The host's debug text can be long (a backtrace): its first line says it.
                    let text = e.to_debug_string();
                    result = Err(transport(
                        text.lines().next().unwrap_or("stream failed").chars().take(200).collect::<String>(),
                    ));
                    break;
                }
            };
            total += bytes.len();
            if total > limit {
                result = Err(PluginError::new(
                    "downstream_too_large",
                    "the downstream agent's answer is too large",
                ));
                break;
            }
            if status != 200 || !streamed {
                whole.extend_from_slice(&bytes);
                continue;
            }
            match reader.feed(&bytes) {
                Ok(events) => {
                    if let Err(e) = events.iter().try_for_each(|data| outcome.event(data)) {
                        result = Err(e);
                        break;
                    }
                }
                Err(e) => {
                    result = Err(PluginError::new(
                        "downstream_malformed",
                        format!("the event stream is malformed: {e:?}"),
                    ));
                    break;
                }
            }
        }
        result.and_then(|()| if status == 200 && streamed { Ok(()) } else { Err(refusal(status, &whole)) })
    };
    let _trailers = IncomingBody::finish(body);
    result?;
    outcome.finish()
}

/// What the relay has seen of the stream.
#[derive(Debug, Default)]
struct Outcome {
    chunks: u32,
    downstream_id: Option<String>,
    plugin: Option<String>,
    result: Option<Value>,
}

impl Outcome {
    /// One event's `data`: a JSON string is text for the caller (emitted now), an object is
    /// the final success or error event.
    fn event(&mut self, data: &str) -> Result<(), PluginError> {
        match serde_json::from_str::<Value>(data) {
            Ok(Value::String(text)) => {
                emit(&text);
                self.chunks += 1;
                Ok(())
            }
            Ok(Value::Object(o)) if o.get("status").and_then(Value::as_str) == Some("success") => {
                let result = o.get("result").cloned().unwrap_or(Value::Null);
                // The downstream result is a string; keep it structured when it is JSON.
                let parsed = match &result {
                    Value::String(s) => serde_json::from_str(s).unwrap_or(result),
                    _ => result,
                };
                self.result = Some(parsed);
                Ok(())
            }
            Ok(Value::Object(o)) if o.contains_key("error_type") => Err(downstream_error(&o)),
            _ => Err(PluginError::new(
                "downstream_malformed",
                "an event of the downstream stream is not understood",
            )),
        }
    }

    fn finish(self) -> Result<String, PluginError> {
        let Some(result) = self.result else {
            return Err(PluginError::new(
                "downstream_incomplete",
                "the downstream stream ended without a result",
            ));
        };
        Ok(json!({
            "relayed_chunks": self.chunks,
            "downstream": { "invocation_id": self.downstream_id, "plugin": self.plugin, "result": result },
        })
        .to_string())
    }
}

/// A non-streamed answer: the host's JSON error body (`error`, `error_type`,
/// `plugin_error_code`), or anything else with its status.
fn refusal(status: u16, body: &[u8]) -> PluginError {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) if o.contains_key("error_type") => downstream_error(&o),
        _ => PluginError::new("downstream_error", format!("the downstream agent answered HTTP {status}")),
    }
}

/// The downstream error as this plugin's: its code (the plugin's own code when the downstream
/// error was a plugin error, so a refusal deep in a chain keeps its name) and message.
fn downstream_error(o: &serde_json::Map<String, Value>) -> PluginError {
    let code = |k: &str| {
        o.get(k).and_then(Value::as_str).filter(|c| {
            (1..=64).contains(&c.len())
                && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
    };
    let name = match code("error_type") {
        Some("plugin_error") => code("plugin_error_code").unwrap_or("plugin_error"),
        Some(c) => c,
        None => "downstream_error",
    };
    let message: String = o
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("no message")
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .collect();
    PluginError::new(name, format!("the downstream agent refused: {message} ({name})"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn agent_urls_are_parsed_strictly() {
        let t = Target::parse("http://127.0.0.1:8081", None).unwrap();
        assert_eq!(
            (t.https, t.authority.as_str(), t.path.as_str()),
            (false, "127.0.0.1:8081", "/invocations")
        );
        let t = Target::parse("https://agents.example/b/", Some("servicenow-agent".into())).unwrap();
        assert_eq!((t.https, t.path.as_str()), (true, "/b/invocations"));
        assert_eq!(t.plugin.as_deref(), Some("servicenow-agent"));
        for bad in ["ftp://x", "x", "https://", "https://u:p@x", "https://x/?q", "https://x#f"] {
            assert_eq!(Target::parse(bad, None).unwrap_err().code, "not_configured", "{bad}");
        }
        assert!(Target::parse("https://x", Some("Bad Name".into())).is_err());
    }

    #[test]
    fn downstream_errors_keep_their_code() {
        let host =
            json!({"error": "the delegation chain is 2 agents deep", "error_type": "chain_depth_exceeded"});
        let e = downstream_error(host.as_object().unwrap());
        assert_eq!(e.code, "chain_depth_exceeded");
        assert!(e.message.contains("2 agents deep"), "{}", e.message);
        // A plugin error deep in the chain keeps the plugin's code.
        let plugin =
            json!({"error": "x", "error_type": "plugin_error", "plugin_error_code": "chain_depth_exceeded"});
        assert_eq!(downstream_error(plugin.as_object().unwrap()).code, "chain_depth_exceeded");
        // Codes that are not plain identifiers are not passed on.
        let odd = json!({"error": "x", "error_type": "Weird Code!"});
        assert_eq!(downstream_error(odd.as_object().unwrap()).code, "downstream_error");
        assert_eq!(refusal(502, b"<html>").code, "downstream_error");
        let long = json!({"error": "y".repeat(5000), "error_type": "busy"});
        assert!(downstream_error(long.as_object().unwrap()).message.len() < 600);
    }

    #[test]
    fn final_events_make_the_result_and_garbage_is_refused() {
        let mut o = Outcome::default();
        o.event(r#"{"result":"{\"cycles\":2}","status":"success","invocation_id":"i"}"#).unwrap();
        let r: Value = serde_json::from_str(&o.finish().unwrap()).unwrap();
        assert_eq!(r["downstream"]["result"]["cycles"], 2);
        assert_eq!(r["relayed_chunks"], 0);
        assert_eq!(Outcome::default().finish().unwrap_err().code, "downstream_incomplete");
        assert_eq!(Outcome::default().event("[1]").unwrap_err().code, "downstream_malformed");
        let e = Outcome::default().event(r#"{"error":"busy","error_type":"busy"}"#).unwrap_err();
        assert_eq!(e.code, "busy");
    }
}
