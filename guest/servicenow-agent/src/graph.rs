//! The Microsoft Graph tools as plain data: `who_am_i` (`GET /v1.0/me`) and `my_manager`
//! (`GET /v1.0/me/manager`), and how a Graph response (or a refused request) becomes a tool
//! result.
//!
//! Like the incident tools, nothing here performs I/O and no request carries credentials: the
//! host's egress rule for Graph attaches the caller's delegated Graph token (its own Token B,
//! cached apart from ServiceNow's), so Graph answers for the calling user and nobody else.

use delegate_sdk::agent::ToolError;
use delegate_sdk::http::HttpError;
use serde_json::{Map, Value, json};

use crate::snow::Planned;

/// Profile properties `who_am_i` asks for (`$select`): what a person means by "who am I".
const ME_PROPERTIES: &str = "id,displayName,givenName,surname,mail,userPrincipalName,jobTitle,department,officeLocation,businessPhones";

/// What `my_manager` asks for about the manager.
const MANAGER_PROPERTIES: &str =
    "id,displayName,mail,userPrincipalName,jobTitle,department,officeLocation,businessPhones";

/// The input spec of both tools: they take no arguments (the user is whoever signed in).
pub(crate) fn no_input_schema() -> Value {
    json!({"type": "object", "properties": {}, "additionalProperties": false})
}

/// The `graph_url` setting (e.g. `https://graph.microsoft.com`), checked, without a trailing
/// `/` or `/v1.0`.
pub(crate) fn normalize_graph_url(raw: &str) -> Result<String, String> {
    let url = raw.trim().trim_end_matches('/');
    let url = url.strip_suffix("/v1.0").unwrap_or(url);
    crate::snow::plain_base_url(url, raw, "graph_url", "https://graph.microsoft.com")
}

/// `who_am_i`: the signed-in user's profile.
pub(crate) fn who_am_i(base: &str) -> Planned {
    Planned { method: "GET", url: format!("{base}/v1.0/me?$select={ME_PROPERTIES}"), body: None }
}

/// `my_manager`: the signed-in user's manager.
pub(crate) fn my_manager(base: &str) -> Planned {
    Planned { method: "GET", url: format!("{base}/v1.0/me/manager?$select={MANAGER_PROPERTIES}"), body: None }
}

/// Which tool a response is for (a missing manager is an answer, not an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// `who_am_i`.
    Me,
    /// `my_manager`.
    Manager,
}

/// A Graph response as a tool result: the user object without OData annotations on success,
/// else an error the model can explain. `retry_after` is the `Retry-After` header.
pub(crate) fn interpret(
    call: Call,
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
) -> Result<Value, ToolError> {
    if (200..300).contains(&status) {
        let Some(Value::Object(object)) = serde_json::from_slice::<Value>(body).ok() else {
            return Err(ToolError::new(format!(
                "Microsoft Graph answered HTTP {status} with something that is not a JSON object"
            )));
        };
        // `@odata.context` and `@odata.type` only cost the model tokens.
        let user: Map<String, Value> =
            object.into_iter().filter(|(k, _)| !k.starts_with("@odata.")).collect();
        return Ok(match call {
            Call::Me => Value::Object(user),
            Call::Manager => json!({ "manager": user }),
        });
    }
    let (code, message) = graph_error(body);
    if call == Call::Manager && status == 404 && code.as_deref() == Some("Request_ResourceNotFound") {
        return Ok(json!({"manager": null, "note": "No manager is recorded for you in the directory."}));
    }
    let with_graph = |text: &str| match (&code, &message) {
        (Some(c), Some(m)) => format!("{text} (Microsoft Graph: {c}: {m})"),
        (Some(c), None) => format!("{text} (Microsoft Graph: {c})"),
        _ => text.to_owned(),
    };
    let text = match status {
        401 => with_graph("Microsoft Graph did not accept your sign-in; sign in again"),
        403 => with_graph("access denied: Microsoft Graph does not allow you to read this"),
        404 => with_graph("not found in the directory"),
        429 | 503 => match retry_after
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        {
            Some(secs) => format!("Microsoft Graph is throttling requests; retry in {secs} seconds"),
            None => with_graph(&format!("Microsoft Graph is busy (HTTP {status}); retry in a little while")),
        },
        _ => with_graph(&format!("Microsoft Graph returned HTTP {status}")),
    };
    Err(ToolError::new(text))
}

/// `error.code` and `error.message` of Graph's error envelope, shortened.
fn graph_error(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let field = |p: &str, max: usize| {
        v.pointer(p)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.chars().take(max).collect::<String>())
    };
    (field("/error/code", 64), field("/error/message", 300))
}

/// A Graph request that never got a response, as a tool error.
pub(crate) fn transport_error(e: &HttpError, planned: &Planned) -> ToolError {
    let target = planned.url.split('?').next().unwrap_or(&planned.url);
    match e {
        HttpError::Denied => ToolError::new(format!(
            "the host's egress policy does not allow this request ({} {target}); ask the operator to allow it",
            planned.method
        )),
        HttpError::InvalidUrl(_) => ToolError::new("the plugin's graph_url setting is not a usable URL"),
        HttpError::Header(h) => ToolError::new(format!("the host refused a request header ({h})")),
        HttpError::Transport(t) => ToolError::new(format!("could not reach Microsoft Graph ({t})")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn requests_select_what_the_answer_needs() {
        let me = who_am_i("https://graph.example");
        assert_eq!(me.method, "GET");
        assert!(me.body.is_none());
        assert_eq!(
            me.url,
            "https://graph.example/v1.0/me?$select=id,displayName,givenName,surname,mail,userPrincipalName,jobTitle,department,officeLocation,businessPhones"
        );
        assert!(
            my_manager("https://graph.example")
                .url
                .starts_with("https://graph.example/v1.0/me/manager?$select=id,displayName,mail,")
        );
    }

    #[test]
    fn graph_urls() {
        assert_eq!(
            normalize_graph_url(" https://graph.microsoft.com/ ").unwrap(),
            "https://graph.microsoft.com"
        );
        assert_eq!(
            normalize_graph_url("https://graph.microsoft.com/v1.0/").unwrap(),
            "https://graph.microsoft.com"
        );
        assert_eq!(normalize_graph_url("https://localhost:8443").unwrap(), "https://localhost:8443");
        for bad in ["graph.microsoft.com", "https://", "https://u:p@graph.microsoft.com", "https://g?x=1"] {
            let e = normalize_graph_url(bad).unwrap_err();
            assert!(e.contains("graph_url"), "{bad}: {e}");
        }
    }

    #[test]
    fn answers_drop_odata_annotations() {
        let body = br#"{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#users/$entity","displayName":"Jane Smith","id":"1"}"#;
        assert_eq!(
            interpret(Call::Me, 200, None, body).unwrap(),
            json!({"displayName":"Jane Smith","id":"1"})
        );
        let body =
            br##"{"@odata.context":"x","@odata.type":"#microsoft.graph.user","displayName":"Priya Shah"}"##;
        assert_eq!(
            interpret(Call::Manager, 200, None, body).unwrap(),
            json!({"manager":{"displayName":"Priya Shah"}})
        );
        let e = interpret(Call::Me, 200, None, b"<html/>").unwrap_err();
        assert!(e.message.contains("not a JSON object"), "{e}");
    }

    fn envelope(code: &str, message: &str) -> Vec<u8> {
        json!({"error":{"code":code,"message":message,"innerError":{"date":"2026-12-04T20:00:00","request-id":"r","client-request-id":"c"}}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn graph_errors_become_tool_errors_the_model_can_explain() {
        let no_manager = envelope(
            "Request_ResourceNotFound",
            "Resource 'manager' does not exist or one of its queried reference-property objects are not present.",
        );
        let none = interpret(Call::Manager, 404, None, &no_manager).unwrap();
        assert_eq!(none["manager"], Value::Null);
        // The same 404 for who_am_i is an error.
        let e = interpret(Call::Me, 404, None, &no_manager).unwrap_err();
        assert!(
            e.message.starts_with("not found in the directory (Microsoft Graph: Request_ResourceNotFound"),
            "{e}"
        );
        let e = interpret(
            Call::Me,
            401,
            None,
            &envelope("InvalidAuthenticationToken", "Access token validation failure. Invalid audience."),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "Microsoft Graph did not accept your sign-in; sign in again (Microsoft Graph: InvalidAuthenticationToken: Access token validation failure. Invalid audience.)"
        );
        let e = interpret(
            Call::Manager,
            403,
            None,
            &envelope("Authorization_RequestDenied", "Insufficient privileges to complete the operation."),
        )
        .unwrap_err();
        assert!(e.message.starts_with("access denied: Microsoft Graph"), "{e}");
        assert!(e.message.contains("Authorization_RequestDenied"), "{e}");
        assert_eq!(
            interpret(Call::Me, 429, Some("7"), &envelope("TooManyRequests", "x")).unwrap_err().message,
            "Microsoft Graph is throttling requests; retry in 7 seconds"
        );
        assert!(interpret(Call::Me, 503, None, b"").unwrap_err().message.contains("busy (HTTP 503)"));
        assert_eq!(
            interpret(Call::Me, 500, None, b"oops").unwrap_err().message,
            "Microsoft Graph returned HTTP 500"
        );
        let long = envelope("X", &"m".repeat(1000));
        assert!(interpret(Call::Me, 500, None, &long).unwrap_err().message.len() < 400);
    }

    #[test]
    fn transport_errors_name_graph() {
        let p = who_am_i("https://graph.example");
        assert_eq!(
            transport_error(&HttpError::Denied, &p).message,
            "the host's egress policy does not allow this request (GET https://graph.example/v1.0/me); ask the operator to allow it"
        );
        assert!(
            transport_error(&HttpError::Transport("reset".into()), &p).message.contains("Microsoft Graph")
        );
    }
}
