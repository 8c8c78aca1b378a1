//! The deterministic planner that stands in for the LLM.
//!
//! It reads the conversation and the tool specs it was offered, and decides exactly as a
//! (very literal) model would: which tool to call with which input, or what to answer. Final
//! answers are rendered from what the tools actually returned, never canned, so a test that
//! checks what Jane sees checks what ServiceNow gave the plugin.
//!
//! Profile questions ("Who am I?", "Who is my manager?") go to the `who_am_i` / `my_manager`
//! tools when, and only when, the plugin offers them; a request that also asks for incidents
//! ("Who is my manager, and show me my incidents") calls both kinds of tool in one turn, as a
//! model does with parallel tool use. Without those tools every prompt is planned as before.

use serde_json::{Map, Value, json};

/// One block the planner wants to emit.
#[derive(Debug, Clone, PartialEq)]
pub enum PlannedBlock {
    /// Text, pre-split into the deltas a stream sends.
    Text(Vec<String>),
    /// A tool call.
    ToolUse {
        /// Id of this tool use.
        tool_use_id: String,
        /// Tool name (one of the offered tools).
        name: String,
        /// Input object.
        input: Value,
    },
}

/// What the planner decided for one model call.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The assistant message's blocks.
    pub blocks: Vec<PlannedBlock>,
    /// Bedrock stop reason: `end_turn` or `tool_use`.
    pub stop_reason: &'static str,
}

impl Plan {
    fn text(text: &str) -> Self {
        Self { blocks: vec![PlannedBlock::Text(split_deltas(text))], stop_reason: "end_turn" }
    }

    fn tool(lead_in: &str, id: String, name: &str, input: Value) -> Self {
        Self {
            blocks: vec![
                PlannedBlock::Text(split_deltas(lead_in)),
                PlannedBlock::ToolUse { tool_use_id: id, name: name.to_owned(), input },
            ],
            stop_reason: "tool_use",
        }
    }

    /// All text of the plan, concatenated.
    pub fn full_text(&self) -> String {
        self.blocks
            .iter()
            .filter_map(|b| match b {
                PlannedBlock::Text(parts) => Some(parts.concat()),
                PlannedBlock::ToolUse { .. } => None,
            })
            .collect()
    }
}

/// Splits text into stream deltas: one per line, long lines in pieces of about 24 bytes
/// (on char boundaries), as a model emits a few tokens per delta.
pub fn split_deltas(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.split_inclusive('\n') {
        let mut cur = String::new();
        for c in line.chars() {
            cur.push(c);
            if cur.len() >= 24 && c == ' ' {
                out.push(std::mem::take(&mut cur));
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
    }
    if out.is_empty() {
        out.push(String::new());
    }
    out
}

/// A tool as offered in `toolConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct OfferedTool {
    /// Tool name.
    pub name: String,
    /// Property names of its input schema, when the schema lists them.
    pub properties: Option<Vec<String>>,
}

impl OfferedTool {
    /// Reads the offered tools from a Converse `toolConfig` value.
    pub fn from_tool_config(tool_config: Option<&Value>) -> Vec<Self> {
        let Some(tools) = tool_config.and_then(|t| t.get("tools")).and_then(Value::as_array) else {
            return Vec::new();
        };
        tools
            .iter()
            .filter_map(|t| t.get("toolSpec"))
            .filter_map(|s| {
                let name = s.get("name")?.as_str()?.to_owned();
                let properties = s
                    .pointer("/inputSchema/json/properties")
                    .and_then(Value::as_object)
                    .map(|p| p.keys().cloned().collect());
                Some(Self { name, properties })
            })
            .collect()
    }
}

/// What the user asked for, read from their latest text.
#[derive(Debug, Clone, PartialEq)]
enum Intent {
    List { limit: u64, query: String },
    Show { number: String },
    Update { number: String, field: String, value: String },
    Echo { input: Value },
    Unknown,
}

const LIST_FIELDS: &str = "number,short_description,priority,state,assigned_to";

fn find_incident_number(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .find(|w| {
            w.len() > 3 && w[..3].eq_ignore_ascii_case("INC") && w[3..].bytes().all(|b| b.is_ascii_digit())
        })
        .map(str::to_ascii_uppercase)
}

/// Encoded-query terms the user wrote explicitly (`category=HR`, `priority<=2`): passed on
/// verbatim, because stopping them is ServiceNow's ACLs' job, not the model's.
fn explicit_filters(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| w.trim_matches(|c: char| matches!(c, ',' | '.' | '"' | '\'' | '(' | ')' | '?' | '!')))
        .filter(|w| {
            let field_len = w.find(['=', '<', '>', '!']).unwrap_or(0);
            field_len > 0
                && w[..field_len].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        })
        .map(str::to_owned)
        .collect()
}

/// The directory tools a request asks for, in the order they are called.
fn profile_asks(text: &str) -> Vec<&'static str> {
    let lower = text.to_lowercase();
    let words: Vec<&str> =
        lower.split(|c: char| !c.is_alphanumeric() && c != '\'').filter(|w| !w.is_empty()).collect();
    let has = |w: &str| words.contains(&w);
    let mut asks = Vec::new();
    if lower.contains("who am i") || lower.contains("my profile") || lower.contains("about me") {
        asks.push("who_am_i");
    }
    let manager = (has("manager") || has("boss")) && (has("my") || has("i") || has("me"))
        || lower.contains("who do i report to")
        || lower.contains("whom do i report to");
    if manager {
        asks.push("my_manager");
    }
    asks
}

fn parse_intent(text: &str) -> Intent {
    let lower = text.to_lowercase();
    if let Some(rest) = lower.find("echo json:").map(|i| &text[i + "echo json:".len()..])
        && let Ok(input) = serde_json::from_str::<Value>(rest.trim())
    {
        return Intent::Echo { input };
    }
    if let Some(number) = find_incident_number(text) {
        let words: Vec<&str> = lower.split_whitespace().collect();
        let is_update = words.first().is_some_and(|w| matches!(*w, "set" | "update" | "change"));
        if is_update && let Some(to) = lower.rfind(" to ") {
            let after_number = lower.find(&number.to_lowercase()).map_or(0, |i| i + number.len());
            if after_number < to {
                let field = lower[after_number..to].trim().trim_start_matches("'s").trim();
                let field = field.split_whitespace().collect::<Vec<_>>().join("_");
                let value =
                    text[to + 4..].trim().trim_end_matches(['.', '!']).trim_matches(['"', '\'']).to_owned();
                if !field.is_empty() && !value.is_empty() {
                    return Intent::Update { number, field, value };
                }
            }
        }
        return Intent::Show { number };
    }
    if lower.contains("incident") {
        let limit = lower
            .split(|c: char| !c.is_ascii_digit())
            .find(|d| !d.is_empty())
            .and_then(|d| d.parse::<u64>().ok())
            .filter(|n| (1..=1000).contains(n))
            .unwrap_or(10);
        let mine = lower.contains("assigned to me")
            || lower
                .split_whitespace()
                .any(|w| matches!(w.trim_matches(|c: char| !c.is_alphanumeric()), "my" | "me" | "mine"));
        let mut terms = Vec::new();
        if mine {
            terms.push("assigned_to=javascript:gs.getUserID()".to_owned());
        }
        terms.extend(explicit_filters(text));
        terms.push("ORDERBYnumber".to_owned());
        return Intent::List { limit, query: terms.join("^") };
    }
    Intent::Unknown
}

/// A deterministic tool-use id: what matters is that it is unique per conversation turn.
fn tool_use_id(messages: &[Value], salt: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in messages.len().to_string().bytes().chain(salt.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("tooluse_{h:016x}")
}

fn offered<'a>(tools: &'a [OfferedTool], name: &str) -> Option<&'a OfferedTool> {
    tools.iter().find(|t| t.name == name)
}

/// Keeps only the keys the tool's schema declares (when it declares any).
fn fit_input(tool: &OfferedTool, input: Map<String, Value>) -> Value {
    match &tool.properties {
        Some(props) if !props.is_empty() => {
            Value::Object(input.into_iter().filter(|(k, _)| props.contains(k)).collect())
        }
        _ => Value::Object(input),
    }
}

fn text_of(message: &Value) -> String {
    message
        .get("content")
        .and_then(Value::as_array)
        .map(|blocks| {
            blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")
        })
        .unwrap_or_default()
}

const HELP: &str = "I can help with your ServiceNow incidents: ask me to list your incidents, show one \
(for example \"show INC0010001\") or update a field (\"set INC0010001 urgency to 2\").";

/// Decides the assistant's next message for `messages` (Converse JSON) given the offered tools.
pub fn plan(messages: &[Value], tools: &[OfferedTool]) -> Plan {
    let Some(last) = messages.last() else {
        return Plan::text(HELP);
    };
    let results: Vec<&Value> = last
        .get("content")
        .and_then(Value::as_array)
        .map(|b| b.iter().filter_map(|b| b.get("toolResult")).collect())
        .unwrap_or_default();
    // The user's request this turn is their latest message with text.
    let ask = messages
        .iter()
        .rev()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(text_of)
        .find(|t| !t.trim().is_empty())
        .unwrap_or_default();
    let intent = parse_intent(&ask);
    if results.is_empty() {
        let profile: Vec<&OfferedTool> =
            profile_asks(&ask).into_iter().filter_map(|name| offered(tools, name)).collect();
        if !profile.is_empty() {
            return plan_profile_step(messages, tools, &profile, intent);
        }
        return plan_first_step(messages, tools, intent);
    }
    plan_after_results(messages, tools, &intent, &results)
}

fn plan_first_step(messages: &[Value], tools: &[OfferedTool], intent: Intent) -> Plan {
    let cannot =
        |what: &str| Plan::text(&format!("I can't {what}: no suitable tool is available to me. {HELP}"));
    match intent {
        Intent::List { limit, query } => match offered(tools, "query_incidents") {
            Some(t) => {
                let mut input = Map::new();
                input.insert("query".into(), Value::String(query));
                input.insert("limit".into(), json!(limit));
                input.insert("fields".into(), Value::String(LIST_FIELDS.into()));
                Plan::tool(
                    "Let me look up those incidents.",
                    tool_use_id(messages, "query"),
                    &t.name,
                    fit_input(t, input),
                )
            }
            None => cannot("list incidents"),
        },
        Intent::Show { number } | Intent::Update { number, .. } => match offered(tools, "get_incident") {
            Some(t) => {
                let mut input = Map::new();
                input.insert("number".into(), Value::String(number.clone()));
                Plan::tool(
                    &format!("Let me fetch {number}."),
                    tool_use_id(messages, "get"),
                    &t.name,
                    fit_input(t, input),
                )
            }
            None => cannot("look up incidents"),
        },
        Intent::Echo { input } => match offered(tools, "echo") {
            Some(t) if input.is_object() => {
                Plan::tool("Echoing.", tool_use_id(messages, "echo"), &t.name, input)
            }
            _ => cannot("echo that"),
        },
        Intent::Unknown => Plan::text(&format!("Sorry, I'm not sure how to help with that. {HELP}")),
    }
}

/// A first step that calls the directory tools in `profile` and, when the request also names
/// incidents, the incident tool in the same turn.
fn plan_profile_step(
    messages: &[Value],
    tools: &[OfferedTool],
    profile: &[&OfferedTool],
    intent: Intent,
) -> Plan {
    let mut blocks = Vec::new();
    let mut what: Vec<String> = profile
        .iter()
        .map(|t| if t.name == "my_manager" { "your manager".to_owned() } else { "your profile".to_owned() })
        .collect();
    let mut uses = Vec::new();
    for t in profile {
        uses.push(PlannedBlock::ToolUse {
            tool_use_id: tool_use_id(messages, &t.name),
            name: t.name.clone(),
            input: fit_input(t, Map::new()),
        });
    }
    // The incident part of the request, planned as it would be alone.
    let incidents = match intent {
        Intent::List { .. } | Intent::Show { .. } | Intent::Update { .. } => {
            plan_first_step(messages, tools, intent).blocks.into_iter().find_map(|b| match b {
                PlannedBlock::ToolUse { .. } => Some(b),
                PlannedBlock::Text(_) => None,
            })
        }
        Intent::Echo { .. } | Intent::Unknown => None,
    };
    if let Some(b) = incidents {
        what.push("those incidents".to_owned());
        uses.push(b);
    }
    blocks.push(PlannedBlock::Text(split_deltas(&format!("Let me look up {}.", what.join(" and ")))));
    blocks.extend(uses);
    Plan { blocks, stop_reason: "tool_use" }
}

/// A Graph user object's field as text (`""` when absent or null).
fn graph_field(user: &Value, name: &str) -> String {
    match user.get(name) {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// "Name (mail), Job title, Department, Office" from the fields that are present.
fn describe_person(user: &Value) -> String {
    let name = graph_field(user, "displayName");
    let mail = graph_field(user, "mail");
    let mut out = if mail.is_empty() { name } else { format!("{name} ({mail})") };
    for f in ["jobTitle", "department", "officeLocation"] {
        let v = graph_field(user, f);
        if !v.is_empty() {
            out.push_str(", ");
            out.push_str(&v);
        }
    }
    out
}

/// The tool uses of the assistant message before the last one, by id.
fn tool_uses_before(messages: &[Value]) -> Vec<(String, String, Value)> {
    let Some(prev) = messages.len().checked_sub(2).and_then(|i| messages.get(i)) else {
        return Vec::new();
    };
    prev.get("content")
        .and_then(Value::as_array)
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b.get("toolUse"))
                .filter_map(|u| {
                    Some((
                        u.get("toolUseId")?.as_str()?.to_owned(),
                        u.get("name")?.as_str()?.to_owned(),
                        u.get("input").cloned().unwrap_or(Value::Null),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A tool result's content as JSON when it is JSON (a `json` block, or a `text` block holding
/// JSON text, as Python tools that `json.dumps` produce), else as text.
fn result_payload(result: &Value) -> Result<Value, String> {
    let blocks = result.get("content").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut texts = Vec::new();
    for b in &blocks {
        if let Some(j) = b.get("json") {
            return Ok(j.clone());
        }
        if let Some(t) = b.get("text").and_then(Value::as_str) {
            if let Ok(v) = serde_json::from_str::<Value>(t)
                && (v.is_object() || v.is_array())
            {
                return Ok(v);
            }
            texts.push(t.to_owned());
        }
    }
    Err(texts.join("\n"))
}

/// A ServiceNow field value: plain string, or `{display_value, value}` (display preferred).
fn field(record: &Value, name: &str) -> String {
    match record.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("display_value")
            .or_else(|| o.get("value"))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_default(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

fn raw_value(record: &Value, name: &str) -> String {
    match record.get(name) {
        Some(Value::Object(o)) => {
            o.get("value").and_then(Value::as_str).map_or_else(|| field(record, name), str::to_owned)
        }
        _ => field(record, name),
    }
}

/// Records of a Table API response: `{"result":[...]}`, `{"result":{...}}`, or the bare list/record.
fn records(payload: &Value) -> Vec<Value> {
    let inner = payload.get("result").unwrap_or(payload);
    match inner {
        Value::Array(a) => a.clone(),
        Value::Object(o) if !o.is_empty() => vec![inner.clone()],
        _ => Vec::new(),
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn incident_table(recs: &[Value]) -> String {
    let mut out = String::from("| Incident | Description | Priority | State |\n|---|---|---|---|\n");
    for r in recs {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            cell(&field(r, "number")),
            cell(&field(r, "short_description")),
            cell(&field(r, "priority")),
            cell(&field(r, "state"))
        ));
    }
    out
}

/// The text of a failed tool result, with a ServiceNow error envelope unpacked.
fn error_text(result: &Value) -> String {
    match result_payload(result) {
        Ok(v) => {
            let msg = v.pointer("/error/message").and_then(Value::as_str);
            let detail = v.pointer("/error/detail").and_then(Value::as_str);
            match (msg, detail) {
                (Some(m), Some(d)) => format!("{m} ({d})"),
                (Some(m), None) => m.to_owned(),
                _ => v.to_string(),
            }
        }
        Err(t) => t,
    }
}

fn plan_after_results(
    messages: &[Value],
    tools: &[OfferedTool],
    intent: &Intent,
    results: &[&Value],
) -> Plan {
    let uses = tool_uses_before(messages);
    let name_of = |r: &Value| {
        let id = r.get("toolUseId").and_then(Value::as_str).unwrap_or_default();
        uses.iter().find(|(i, _, _)| i == id).map(|(_, n, input)| (n.clone(), input.clone()))
    };
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.get("status").and_then(Value::as_str) == Some("error"))
        .map(|r| {
            let tool = name_of(r).map(|(n, _)| n).unwrap_or_else(|| "tool".into());
            format!("the {tool} call failed: {}", error_text(r))
        })
        .collect();
    // One tool call that failed: nothing to show. With several (parallel tool use), what did
    // succeed is shown and the failures are named after it.
    if !failed.is_empty() && results.len() == 1 {
        return Plan::text(&format!("I couldn't complete your request because {}.", failed.join("; ")));
    }
    let mut answer = String::new();
    for r in results {
        if r.get("status").and_then(Value::as_str) == Some("error") {
            continue;
        }
        let (tool, input) = name_of(r).unwrap_or_else(|| ("tool".into(), Value::Null));
        let payload = result_payload(r);
        match (tool.as_str(), &payload) {
            ("who_am_i", Ok(p)) => {
                answer.push_str(&format!("You are {}.\n", describe_person(p)));
            }
            ("my_manager", Ok(p)) => match p.get("manager") {
                Some(m) if m.is_object() => {
                    answer.push_str(&format!("Your manager is {}.\n", describe_person(m)));
                }
                _ => answer.push_str("No manager is recorded for you in the directory.\n"),
            },
            ("query_incidents", Ok(p)) => {
                let recs = records(p);
                if recs.is_empty() {
                    answer.push_str("I found no incidents matching that request.\n");
                } else {
                    let noun = if recs.len() == 1 { "incident" } else { "incidents" };
                    answer.push_str(&format!("Here are {} {noun}:\n\n{}", recs.len(), incident_table(&recs)));
                }
            }
            ("get_incident", Ok(p)) => {
                let recs = records(p);
                let Some(rec) = recs.first() else {
                    let number = input.get("number").and_then(Value::as_str).unwrap_or("that incident");
                    answer.push_str(&format!(
                        "I couldn't find {number}; it may not exist or you may not have access to it.\n"
                    ));
                    continue;
                };
                if let Intent::Update { number, field: f, value } = intent
                    && let Some(t) = offered(tools, "update_incident")
                {
                    let sys_id = raw_value(rec, "sys_id");
                    if sys_id.is_empty() {
                        answer.push_str(&format!("I found {number} but ServiceNow did not return its sys_id, so I can't update it.\n"));
                        continue;
                    }
                    let mut updates = Map::new();
                    updates.insert(f.clone(), Value::String(value.clone()));
                    let mut input = Map::new();
                    input.insert("sys_id".into(), Value::String(sys_id));
                    input.insert("updates".into(), Value::Object(updates));
                    return Plan::tool(
                        &format!("Updating {f} of {number}."),
                        tool_use_id(messages, "update"),
                        &t.name,
                        fit_input(t, input),
                    );
                }
                answer.push_str(&format!(
                    "Here is {}:\n\n{}",
                    field(rec, "number"),
                    incident_table(std::slice::from_ref(rec))
                ));
                let assigned = field(rec, "assigned_to");
                if !assigned.is_empty() {
                    answer.push_str(&format!("\nAssigned to: {assigned}\n"));
                }
            }
            ("update_incident", Ok(p)) => {
                let recs = records(p);
                let rec = recs.first().cloned().unwrap_or(Value::Null);
                let changed: Vec<String> = input
                    .get("updates")
                    .and_then(Value::as_object)
                    .map(|u| u.keys().map(|k| format!("{k} is now {}", field(&rec, k))).collect())
                    .unwrap_or_default();
                answer.push_str(&format!("Updated {}: {}.\n", field(&rec, "number"), changed.join(", ")));
            }
            (_, Ok(p)) => answer.push_str(&format!("The {tool} tool returned: {p}\n")),
            (_, Err(t)) => answer.push_str(&format!("The {tool} tool said: {t}\n")),
        }
    }
    if !failed.is_empty() {
        answer.push_str(&format!("I couldn't complete all of your request because {}.\n", failed.join("; ")));
    }
    Plan::text(&answer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn snow_tools() -> Vec<OfferedTool> {
        ["query_incidents", "get_incident", "update_incident"]
            .iter()
            .map(|n| OfferedTool { name: (*n).into(), properties: None })
            .collect()
    }

    fn user(text: &str) -> Value {
        json!({"role":"user","content":[{"text":text}]})
    }

    fn tool_input(p: &Plan) -> (&str, &Value) {
        match &p.blocks[1] {
            PlannedBlock::ToolUse { name, input, .. } => (name, input),
            other => panic!("expected a tool use, got {other:?}"),
        }
    }

    #[test]
    fn list_my_incidents() {
        let p = plan(&[user("Show me 5 incidents assigned to me")], &snow_tools());
        assert_eq!(p.stop_reason, "tool_use");
        let (name, input) = tool_input(&p);
        assert_eq!(name, "query_incidents");
        assert_eq!(
            input,
            &json!({"query":"assigned_to=javascript:gs.getUserID()^ORDERBYnumber","limit":5,"fields":LIST_FIELDS})
        );
        let p = plan(&[user("list my incidents")], &snow_tools());
        assert_eq!(tool_input(&p).1["limit"], 10);
    }

    #[test]
    fn explicit_filters_are_passed_on() {
        let p = plan(&[user("show all incidents with category=HR")], &snow_tools());
        assert_eq!(tool_input(&p).1["query"], "category=HR^ORDERBYnumber");
        let p = plan(&[user("show my incidents where priority<=2")], &snow_tools());
        assert_eq!(
            tool_input(&p).1["query"],
            "assigned_to=javascript:gs.getUserID()^priority<=2^ORDERBYnumber"
        );
    }

    #[test]
    fn show_and_update() {
        let p = plan(&[user("show INC0012345")], &snow_tools());
        assert_eq!(tool_input(&p), ("get_incident", &json!({"number":"INC0012345"})));
        let ask = user("Set INC0012345 urgency to 1");
        let p = plan(std::slice::from_ref(&ask), &snow_tools());
        let PlannedBlock::ToolUse { tool_use_id, .. } = p.blocks[1].clone() else { panic!() };
        assert_eq!(tool_input(&p).0, "get_incident");
        let conv = vec![
            ask,
            json!({"role":"assistant","content":[{"toolUse":{"toolUseId":tool_use_id,"name":"get_incident","input":{"number":"INC0012345"}}}]}),
            json!({"role":"user","content":[{"toolResult":{"toolUseId":tool_use_id,"status":"success","content":[{"text":
                r#"{"result":[{"sys_id":"abc123","number":"INC0012345","urgency":"2"}]}"#}]}}]}),
        ];
        let p = plan(&conv, &snow_tools());
        assert_eq!(
            tool_input(&p),
            ("update_incident", &json!({"sys_id":"abc123","updates":{"urgency":"1"}}))
        );
    }

    #[test]
    fn answers_render_tool_results_and_errors() {
        let conv = vec![
            user("list my incidents"),
            json!({"role":"assistant","content":[{"toolUse":{"toolUseId":"t1","name":"query_incidents","input":{}}}]}),
            json!({"role":"user","content":[{"toolResult":{"toolUseId":"t1","status":"success","content":[{"json":
                {"result":[{"number":"INC0012345","short_description":"VPN | dropping","priority":{"display_value":"2 - High","value":"2"},"state":"In Progress"}]}}]}}]}),
        ];
        let p = plan(&conv, &snow_tools());
        assert_eq!(p.stop_reason, "end_turn");
        let PlannedBlock::Text(parts) = &p.blocks[0] else { panic!() };
        assert!(parts.len() > 2, "{parts:?}");
        let text = p.full_text();
        assert!(text.contains("| INC0012345 | VPN \\| dropping | 2 - High | In Progress |"), "{text}");

        let mut conv = conv;
        conv[2] = json!({"role":"user","content":[{"toolResult":{"toolUseId":"t1","status":"error","content":[{"json":
            {"error":{"message":"User Not Authenticated","detail":"Required to provide Auth information"},"status":"failure"}}]}}]});
        let text = plan(&conv, &snow_tools()).full_text();
        assert!(
            text.contains(
                "query_incidents call failed: User Not Authenticated (Required to provide Auth information)"
            ),
            "{text}"
        );
    }

    #[test]
    fn unknown_requests_and_missing_tools_get_text() {
        let p = plan(&[user("what's the weather?")], &snow_tools());
        assert_eq!(p.stop_reason, "end_turn");
        assert!(p.full_text().starts_with("Sorry"));
        let p = plan(&[user("list my incidents")], &[]);
        assert!(p.full_text().contains("no suitable tool"));
    }

    fn snow_and_graph_tools() -> Vec<OfferedTool> {
        let mut tools = snow_tools();
        for name in ["who_am_i", "my_manager"] {
            tools.push(OfferedTool { name: name.into(), properties: Some(Vec::new()) });
        }
        tools
    }

    fn tool_names(p: &Plan) -> Vec<&str> {
        p.blocks
            .iter()
            .filter_map(|b| match b {
                PlannedBlock::ToolUse { name, .. } => Some(name.as_str()),
                PlannedBlock::Text(_) => None,
            })
            .collect()
    }

    #[test]
    fn profile_questions_use_the_graph_tools_only_when_offered() {
        let tools = snow_and_graph_tools();
        let p = plan(&[user("Who am I?")], &tools);
        assert_eq!(p.stop_reason, "tool_use");
        assert_eq!(tool_names(&p), ["who_am_i"]);
        assert_eq!(tool_input(&p).1, &json!({}));
        assert_eq!(tool_names(&plan(&[user("Who is my manager?")], &tools)), ["my_manager"]);
        assert_eq!(tool_names(&plan(&[user("who do I report to")], &tools)), ["my_manager"]);
        let both = plan(&[user("Who is my manager, and show me my incidents")], &tools);
        assert_eq!(tool_names(&both), ["my_manager", "query_incidents"]);
        assert!(both.full_text().starts_with("Let me look up your manager and those incidents"));
        let PlannedBlock::ToolUse { input, .. } = &both.blocks[2] else { panic!() };
        assert_eq!(input["query"], "assigned_to=javascript:gs.getUserID()^ORDERBYnumber");
        // Ids are distinct within the turn.
        let ids: Vec<&str> = both
            .blocks
            .iter()
            .filter_map(|b| match b {
                PlannedBlock::ToolUse { tool_use_id, .. } => Some(tool_use_id.as_str()),
                PlannedBlock::Text(_) => None,
            })
            .collect();
        assert_ne!(ids[0], ids[1]);
        // Without the Graph tools, the same prompts are planned exactly as before.
        assert_eq!(
            plan(&[user("Who is my manager, and show me my incidents")], &snow_tools()),
            plan(&[user("show me my incidents")], &snow_tools())
        );
        assert!(plan(&[user("Who am I?")], &snow_tools()).full_text().starts_with("Sorry"));
        // Incident prompts do not touch the Graph tools even when they are offered.
        assert_eq!(
            tool_names(&plan(&[user("Show me 5 incidents assigned to me")], &tools)),
            ["query_incidents"]
        );
        assert_eq!(
            plan(&[user("Show me 5 incidents assigned to me")], &tools),
            plan(&[user("Show me 5 incidents assigned to me")], &snow_tools())
        );
    }

    #[test]
    fn profile_answers_render_graph_results_and_errors() {
        let conv = |results: Value| {
            vec![
                user("Who is my manager, and show me my incidents"),
                json!({"role":"assistant","content":[
                    {"toolUse":{"toolUseId":"m","name":"my_manager","input":{}}},
                    {"toolUse":{"toolUseId":"q","name":"query_incidents","input":{}}}]}),
                json!({"role":"user","content": results}),
            ]
        };
        let incidents = json!({"toolResult":{"toolUseId":"q","status":"success","content":[{"json":
            {"result":[{"number":"INC0012345","short_description":"VPN","priority":"2 - High","state":"New"}]}}]}});
        let manager = json!({"toolResult":{"toolUseId":"m","status":"success","content":[{"json":
            {"manager":{"displayName":"Priya Shah","mail":"priya.shah@company.com","jobTitle":"IT Service Desk Manager"}}}]}});
        let text = plan(&conv(json!([manager, incidents])), &snow_and_graph_tools()).full_text();
        assert!(
            text.starts_with(
                "Your manager is Priya Shah (priya.shah@company.com), IT Service Desk Manager.\n"
            ),
            "{text}"
        );
        assert!(text.contains("| INC0012345 | VPN | 2 - High | New |"), "{text}");
        let none =
            json!({"toolResult":{"toolUseId":"m","status":"success","content":[{"json":{"manager":null}}]}});
        let text = plan(&conv(json!([none, incidents])), &snow_and_graph_tools()).full_text();
        assert!(text.starts_with("No manager is recorded for you"), "{text}");
        // A Graph failure is named; the incidents are still shown.
        let failed = json!({"toolResult":{"toolUseId":"m","status":"error","content":[{"text":
            "access denied: Microsoft Graph does not allow you to read this"}]}});
        let text = plan(&conv(json!([failed, incidents])), &snow_and_graph_tools()).full_text();
        assert!(text.contains("| INC0012345 |"), "{text}");
        assert!(text.contains("the my_manager call failed: access denied: Microsoft Graph"), "{text}");
        // who_am_i alone.
        let me = vec![
            user("Who am I?"),
            json!({"role":"assistant","content":[{"toolUse":{"toolUseId":"w","name":"who_am_i","input":{}}}]}),
            json!({"role":"user","content":[{"toolResult":{"toolUseId":"w","status":"success","content":[{"json":
                {"displayName":"Jane Smith","mail":"jane.smith@company.com","jobTitle":"Service Desk Analyst","department":"IT"}}]}}]}),
        ];
        assert_eq!(
            plan(&me, &snow_and_graph_tools()).full_text(),
            "You are Jane Smith (jane.smith@company.com), Service Desk Analyst, IT.\n"
        );
    }

    #[test]
    fn split_keeps_every_byte() {
        let t = "Here are 2 incidents:\n\n| a | b |\nünïcödé and a fairly long line that should be split in several parts";
        let parts = split_deltas(t);
        assert!(parts.len() >= 5);
        assert_eq!(parts.concat(), t);
    }
}
