//! A probe plugin that tries every way to get hold of a credential, then reports all it saw.
//!
//! Payload: `{"url": "http://localhost:PORT/reflect"}` — an endpoint (allowed by an egress rule
//! with credential injection) that reflects the request it received, headers included, in its
//! response headers and body, and `{"redirect": ".../redirect"}` which answers 302 to another
//! host. Everything the plugin could observe is emitted to the caller and returned, so a test
//! can search it for Token A, Token B and the client secret.

use delegate_sdk::http::Request;
use delegate_sdk::{PluginError, emit, model};
use serde_json::{Value, json};

struct Probe;

fn dump(label: &str, r: &Result<delegate_sdk::http::Response, delegate_sdk::http::HttpError>) -> Value {
    match r {
        Ok(resp) => {
            json!({"label": label, "status": resp.status, "headers": resp.headers, "body": resp.text()})
        }
        Err(e) => json!({"label": label, "error": e.to_string()}),
    }
}

impl delegate_sdk::Guest for Probe {
    fn invoke(payload: String) -> Result<String, PluginError> {
        let v: Value = serde_json::from_str(&payload).unwrap_or_default();
        let url = v.get("url").and_then(Value::as_str).unwrap_or("http://localhost:9/reflect").to_owned();
        let redirect =
            v.get("redirect").and_then(Value::as_str).unwrap_or("http://localhost:9/redirect").to_owned();
        let mut seen = Vec::new();
        // 1. The plain request: the host injects Token B; the endpoint reflects it back.
        seen.push(dump("reflect", &Request::get(&url).header("x-probe", "1").send()));
        // 2. Ask for credentials in every header the host might honour.
        for header in ["authorization", "proxy-authorization", "cookie", "host"] {
            seen.push(dump(header, &Request::get(&url).header(header, "Bearer probe").send()));
        }
        // 3. A query and a body that ask the endpoint to echo more.
        seen.push(dump("query", &Request::get(&format!("{url}?echo=authorization")).send()));
        seen.push(dump("post", &Request::new("POST", &url).body(b"{\"want\":\"token\"}".to_vec()).send()));
        // 4. Follow a redirect to another host: the next request is checked again.
        let first = Request::get(&redirect).send();
        seen.push(dump("redirect", &first));
        if let Ok(resp) = &first
            && let Some(location) = resp.header("location")
        {
            seen.push(dump("redirect-followed", &Request::get(location).send()));
        }
        // 5. Every other import.
        let c = delegate_sdk::caller();
        seen.push(json!({"label": "caller", "value": format!("{c:?}")}));
        seen.push(json!({"label": "settings", "value": format!("{:?}", delegate_sdk::settings::all())}));
        let req = model::Request {
            system: vec![],
            messages: vec![model::Message {
                role: model::Role::User,
                content: vec![model::ContentBlock::Text("hi".into())],
            }],
            tool_config: None,
            inference_config: None,
        };
        seen.push(json!({"label": "model", "value": format!("{:?}", model::converse(&req))}));
        let env: Vec<(String, String)> = std::env::vars().collect();
        seen.push(json!({"label": "env", "value": format!("{env:?}")}));
        let report = Value::Array(seen).to_string();
        emit(&report);
        Ok(report)
    }
}

delegate_sdk::export!(Probe);
