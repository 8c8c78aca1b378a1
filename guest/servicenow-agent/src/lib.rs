//! The ServiceNow agent of the AgentCore OBO article, as a delegate plugin.
//!
//! Payload: `{"prompt": "Show me 5 incidents assigned to me"}`. The agent answers with the
//! model (text is streamed to the caller by the host) and three tools over ServiceNow's Table
//! API: `query_incidents(query, limit, fields)`, `get_incident(number)` and
//! `update_incident(sys_id, updates)`. The invocation result is a small JSON summary:
//! `{"cycles":N,"tool_calls":M,"tool_errors":E,"stop_reason":"end_turn",...}`.
//!
//! Settings (`wasi:config/store`): `servicenow_url` (required, e.g.
//! `https://instance.service-now.com`), `max_cycles` (optional, 1-32, default 8) and
//! `graph_url` (optional, e.g. `https://graph.microsoft.com`). With `graph_url` the agent also
//! offers `who_am_i` and `my_manager`, which read the caller's profile and manager from
//! Microsoft Graph (`/v1.0/me`, `/v1.0/me/manager`) through a second egress rule: a second
//! downstream audience, with its own delegated token attached by the host.
//!
//! The plugin holds no credential of any kind. It sends plain requests; the host matches them
//! against the operator's egress rules and attaches the calling user's delegated ServiceNow
//! token, so ServiceNow applies that user's ACLs and writes that user into `sys_audit`.

mod graph;
mod snow;

use delegate_sdk::agent::{Agent, Tool, ToolError, prompt_from_payload};
use delegate_sdk::http::Request;
use delegate_sdk::{PluginError, settings};
use serde_json::Value;

/// The article's system prompt, plus what a model needs to use the tools well.
const SYSTEM_PROMPT: &str = "You are a ServiceNow assistant. You help users query and manage their \
incidents. You only see records the user is authorized to access. Be concise.\n\
Use query_incidents to list or search incidents (for the user's own incidents filter with \
assigned_to=javascript:gs.getUserID()), get_incident to read one incident by number, and \
update_incident to change one: look the incident up first to get its sys_id. When a tool \
reports an error, tell the user plainly what happened and what they can do; never guess data \
a tool did not return.";

/// Added to the system prompt when the Graph tools are offered.
const GRAPH_PROMPT: &str = "\nUse who_am_i for questions about the user's own profile (name, email, \
job title, office) and my_manager for who their manager is; both read Microsoft Graph as the user.";

/// Upper bound for the `max_cycles` setting: more rounds than this is a runaway, not a task.
const MAX_CYCLES_CAP: u32 = 32;

struct ServiceNowAgent;

impl delegate_sdk::Guest for ServiceNowAgent {
    fn invoke(payload: String) -> Result<String, PluginError> {
        let prompt = prompt_from_payload(&payload)?;
        let base = settings::get("servicenow_url")
            .ok_or_else(|| PluginError::new("not_configured", "the plugin setting servicenow_url is not set"))
            .and_then(|raw| {
                snow::normalize_base_url(&raw).map_err(|e| PluginError::new("not_configured", e))
            })?;
        let max_cycles = match settings::get("max_cycles") {
            None => delegate_sdk::agent::DEFAULT_MAX_CYCLES,
            Some(raw) => {
                raw.trim().parse::<u32>().ok().filter(|n| (1..=MAX_CYCLES_CAP).contains(n)).ok_or_else(
                    || {
                        PluginError::new(
                            "not_configured",
                            format!("the max_cycles setting must be 1-{MAX_CYCLES_CAP} (got {raw:?})"),
                        )
                    },
                )?
            }
        };
        let graph_base = settings::get("graph_url")
            .map(|raw| graph::normalize_graph_url(&raw).map_err(|e| PluginError::new("not_configured", e)))
            .transpose()?;
        let outcome = agent(&base, graph_base.as_deref()).max_cycles(max_cycles).run_with_stats(&prompt)?;
        Ok(delegate_sdk::agent::to_json(&outcome.summary()))
    }
}

/// The agent with its three incident tools bound to the instance at `base`, and the two Graph
/// tools bound to `graph_base` when it is configured.
fn agent(base: &str, graph_base: Option<&str>) -> Agent {
    let agent = incident_agent(base);
    match graph_base {
        Some(graph_base) => with_graph_tools(agent, graph_base),
        None => agent,
    }
}

/// `who_am_i` and `my_manager` on Graph at `graph_base`, and the system prompt's line on them.
fn with_graph_tools(mut agent: Agent, graph_base: &str) -> Agent {
    agent.system_prompt.push_str(GRAPH_PROMPT);
    let me_base = graph_base.to_owned();
    let manager_base = graph_base.to_owned();
    agent
        .tool(Tool::new(
            "who_am_i",
            "The signed-in user's own directory profile from Microsoft Graph: display name, email, \
             user principal name, job title, department, office and phone. Takes no input.",
            graph::no_input_schema(),
            move |_: &Value| graph_fetch(graph::Call::Me, &graph::who_am_i(&me_base)),
        ))
        .tool(Tool::new(
            "my_manager",
            "The signed-in user's manager from Microsoft Graph: {\"manager\": {displayName, mail, jobTitle, \
             ...}}, or {\"manager\": null} when no manager is recorded. Takes no input.",
            graph::no_input_schema(),
            move |_: &Value| graph_fetch(graph::Call::Manager, &graph::my_manager(&manager_base)),
        ))
}

/// Sends one Graph request (no credentials: the host attaches the Graph token) and interprets
/// the answer.
fn graph_fetch(call: graph::Call, planned: &snow::Planned) -> Result<Value, ToolError> {
    let resp = Request::new(planned.method, &planned.url)
        .header("accept", "application/json")
        .send()
        .map_err(|e| graph::transport_error(&e, planned))?;
    graph::interpret(call, resp.status, resp.header("retry-after"), &resp.body)
}

/// The article's agent: the three incident tools bound to the instance at `base`.
fn incident_agent(base: &str) -> Agent {
    let bind = |plan: fn(&str, &Value) -> Result<snow::Planned, ToolError>| {
        let base = base.to_owned();
        move |input: &Value| plan(&base, input).and_then(|planned| fetch(&planned).map(|(v, _)| v))
    };
    let query_base = base.to_owned();
    Agent::new(SYSTEM_PROMPT)
        .tool(Tool::new(
            "query_incidents",
            "Search for incidents in ServiceNow with an encoded query. Returns the Table API JSON \
             {\"result\":[...]} with display values; only incidents the user may see are returned.",
            snow::query_incidents_schema(),
            move |input: &Value| query(&query_base, input),
        ))
        .tool(Tool::new(
            "get_incident",
            "Get all details of one incident by its number (e.g. INC0012345). Returns {\"result\":[...]} \
             with at most one record; an empty list means it does not exist or the user may not see it.",
            snow::get_incident_schema(),
            bind(snow::get_incident),
        ))
        .tool(Tool::new(
            "update_incident",
            "Update fields of an existing incident, identified by sys_id. Returns the updated record \
             {\"result\":{...}}. ServiceNow decides whether the user may change it.",
            snow::update_incident_schema(),
            bind(snow::update_incident),
        ))
}

/// `query_incidents`: reads pages until `limit` visible rows are collected or ServiceNow has
/// no next page (see [`snow::Query::absorb`]), and answers in the Table API's own shape.
fn query(base: &str, input: &Value) -> Result<Value, ToolError> {
    let q = snow::query_incidents(base, input)?;
    let mut rows = Vec::new();
    let mut offset = 0;
    for _ in 0..snow::MAX_PAGES {
        let (page, link) = fetch(&q.page(offset))?;
        match q.absorb(&mut rows, page, offset, link.as_deref()) {
            Some(next) => offset = next,
            None => break,
        }
    }
    Ok(serde_json::json!({ "result": rows }))
}

/// Sends one planned request (no credentials: the host attaches them) and interprets the
/// answer; also returns the `Link` header, which carries ServiceNow's paging.
fn fetch(planned: &snow::Planned) -> Result<(Value, Option<String>), ToolError> {
    let mut req = Request::new(planned.method, &planned.url).header("accept", "application/json");
    if let Some(body) = &planned.body {
        req = req.header("content-type", "application/json").body(body.as_bytes());
    }
    let resp = req.send().map_err(|e| snow::transport_error(&e, planned))?;
    let value = snow::interpret(resp.status, resp.header("retry-after"), &resp.body)?;
    Ok((value, resp.header("link").map(str::to_owned)))
}

delegate_sdk::export!(ServiceNowAgent);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use delegate_sdk::agent::validate_input;

    #[test]
    fn the_agent_offers_the_articles_three_tools_with_valid_specs() {
        let a = agent("https://x.service-now.com", None);
        a.check().unwrap();
        let names: Vec<&str> = a.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["query_incidents", "get_incident", "update_incident"]);
        assert!(a.system_prompt.starts_with("You are a ServiceNow assistant."));
        // every schema accepts its own defaults (a default outside the schema's range would make
        // the tool unusable without arguments)
        let q = validate_input(&a.tools[0].input_schema, &serde_json::json!({})).unwrap();
        assert_eq!(q["limit"], 10);
        assert_eq!(q["fields"], snow::DEFAULT_FIELDS);
        // input is validated before any request is made (no I/O happens natively)
        let e = a.tools[1].call(&serde_json::json!({"number": "INC1^NQ"})).unwrap_err();
        assert!(e.message.contains("must not contain `^`"), "{e}");
        let e = a.tools[2].call(&serde_json::json!({"sys_id": "x", "updates": {}})).unwrap_err();
        assert!(e.message.starts_with("invalid input"), "{e}");
        assert!(!a.system_prompt.contains("who_am_i"));
    }

    #[test]
    fn a_graph_url_adds_who_am_i_and_my_manager() {
        let a = agent("https://x.service-now.com", Some("https://graph.microsoft.com"));
        a.check().unwrap();
        let names: Vec<&str> = a.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["query_incidents", "get_incident", "update_incident", "who_am_i", "my_manager"]);
        assert!(a.system_prompt.starts_with(SYSTEM_PROMPT));
        assert!(a.system_prompt.contains("who_am_i") && a.system_prompt.contains("my_manager"));
        // They take no input: anything else is refused before a request is made.
        for tool in &a.tools[3..] {
            assert!(validate_input(&tool.input_schema, &serde_json::json!({})).is_ok());
            let e = tool.call(&serde_json::json!({"user": "someone.else@company.com"})).unwrap_err();
            assert!(e.message.starts_with("invalid input"), "{e}");
        }
    }
}
