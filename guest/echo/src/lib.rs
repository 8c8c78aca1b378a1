//! The echo plugin: streams the payload's `prompt` back to the caller in chunks.
//!
//! Payload: `{"prompt": "text", "chunk_size": 8, "pause_ms": 0}`. Each chunk is one emitted
//! event; `pause_ms` waits between chunks (on the host's clock, not by spinning), which lets
//! tests observe streaming while the plugin is still running. The result is
//! `{"chunks": N, "bytes": M, "caller": "<subject>", "tag": <the `tag` setting or null>}`; the
//! tag lets lifecycle tests see which deployed version (with which settings) answered.

use delegate_sdk::bindings::wasi::clocks::monotonic_clock;
use delegate_sdk::{PluginError, emit};

struct Echo;

impl delegate_sdk::Guest for Echo {
    fn invoke(payload: String) -> Result<String, PluginError> {
        let v: serde_json::Value = serde_json::from_str(&payload)
            .map_err(|e| PluginError::new("bad_request", format!("payload is not JSON: {e}")))?;
        let prompt = v
            .get("prompt")
            .and_then(|p| p.as_str())
            .ok_or_else(|| PluginError::new("bad_request", "payload needs a string `prompt`"))?;
        let chunk_size = v.get("chunk_size").and_then(serde_json::Value::as_u64).unwrap_or(8).max(1);
        let pause_ms = v.get("pause_ms").and_then(serde_json::Value::as_u64).unwrap_or(0);
        let chars: Vec<char> = prompt.chars().collect();
        let mut chunks = 0u64;
        for (i, chunk) in chars.chunks(usize::try_from(chunk_size).unwrap_or(8)).enumerate() {
            if i > 0 && pause_ms > 0 {
                monotonic_clock::subscribe_duration(pause_ms * 1_000_000).block();
            }
            emit(&chunk.iter().collect::<String>());
            chunks += 1;
        }
        let caller = delegate_sdk::caller();
        let tag = delegate_sdk::settings::get("tag");
        Ok(serde_json::json!({"chunks": chunks, "bytes": prompt.len(), "caller": caller.subject, "tag": tag})
            .to_string())
    }
}

delegate_sdk::export!(Echo);
