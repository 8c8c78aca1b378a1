//! The three incident tools as plain data: input validation, the Table API request each call
//! makes, and how a ServiceNow response (or a refused request) becomes a tool result.
//!
//! Nothing here performs I/O, so all of it is unit-tested natively; `lib.rs` sends the
//! [`Planned`] requests through the SDK's HTTP client. No request carries credentials: the
//! host's egress layer attaches the caller's delegated ServiceNow token (Token B) itself.

use delegate_sdk::agent::ToolError;
use delegate_sdk::http::HttpError;
use serde_json::{Map, Value, json};

/// The Table API path of the incident table.
const INCIDENT_PATH: &str = "/api/now/table/incident";

/// Fields `query_incidents` returns when the model does not ask for others (the article's).
pub(crate) const DEFAULT_FIELDS: &str = "number,short_description,priority,state,assigned_to";

/// Incident fields `update_incident` may write.
///
/// These are the fields a user edits on the incident form; ServiceNow's write ACLs still decide
/// per record and per user. Left out on purpose: identity and system fields (`sys_id`,
/// `number`, `sys_*`, `opened_by`, `opened_at`: ServiceNow owns them) and derived ones (`active`
/// follows `state`). `priority` is included because the article's users think in priorities,
/// but the description tells the model that ServiceNow usually computes it from impact and
/// urgency.
pub(crate) const WRITABLE_FIELDS: &[&str] = &[
    "short_description",
    "description",
    "state",
    "impact",
    "urgency",
    "priority",
    "category",
    "subcategory",
    "assigned_to",
    "assignment_group",
    "caller_id",
    "contact_type",
    "work_notes",
    "comments",
    "close_code",
    "close_notes",
];

/// Largest value `update_incident` writes to one field (journal fields included); longer text
/// is almost certainly a model loop rather than a note a person wants.
const MAX_VALUE_CHARS: usize = 4000;

/// Server-side `javascript:` values allowed in an encoded query: ServiceNow evaluates them for
/// the authenticated user ("me", "my groups"); anything else would run arbitrary script on
/// the instance, which no incident question needs.
const ALLOWED_SCRIPTS: &[&str] = &[
    "gs.getUserID()",
    "gs.getUser().getID()",
    "gs.getUserName()",
    "gs.getUser().getName()",
    "gs.getUser().getMyGroups()",
];

/// One Table API request, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    /// HTTP method.
    pub(crate) method: &'static str,
    /// Absolute URL, query string percent-encoded.
    pub(crate) url: String,
    /// JSON body (writes only).
    pub(crate) body: Option<String>,
}

/// The JSON-schema input specs offered to the model, by tool name.
pub(crate) fn query_incidents_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "query": {
                "type": "string",
                "maxLength": 2000,
                "default": "",
                "description": "ServiceNow encoded query: conditions joined by ^ (AND) or ^OR, e.g. \
                    `assigned_to=javascript:gs.getUserID()^active=true^ORDERBYnumber` for the user's own \
                    active incidents. Operators: = != < <= > >= LIKE STARTSWITH ENDSWITH IN ISEMPTY \
                    ISNOTEMPTY, sorting with ORDERBY<field> / ORDERBYDESC<field>. Empty for no filter."
            },
            "limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": 100,
                "default": 10,
                "description": "Maximum number of incidents to return (1-100)."
            },
            "fields": {
                "type": "string",
                "maxLength": 1000,
                "default": DEFAULT_FIELDS,
                "description": "Comma-separated incident fields to return (dot-walking like \
                    `assigned_to.email` is allowed); empty for all fields."
            }
        },
        "additionalProperties": false
    })
}

/// Input spec of `get_incident`.
pub(crate) fn get_incident_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "number": {
                "type": "string",
                "maxLength": 32,
                "description": "The incident number: INC followed by 7 digits, e.g. INC0012345."
            }
        },
        "required": ["number"],
        "additionalProperties": false
    })
}

/// Input spec of `update_incident`.
pub(crate) fn update_incident_schema() -> Value {
    let field_spec = json!({"type": ["string", "integer", "number", "boolean", "null"]});
    let props: Map<String, Value> =
        WRITABLE_FIELDS.iter().map(|f| ((*f).to_owned(), field_spec.clone())).collect();
    json!({
        "type": "object",
        "properties": {
            "sys_id": {
                "type": "string",
                "description": "The incident's sys_id (32 hexadecimal characters), as returned by \
                    get_incident or query_incidents."
            },
            "updates": {
                "type": "object",
                "properties": props,
                "additionalProperties": false,
                "description": "Fields to change and their new values. Choice fields take their \
                    values (standard labels are translated): state 1 New, 2 In Progress, 3 On Hold, 6 Resolved, 7 Closed, \
                    8 Canceled; impact and urgency 1 High, 2 Medium, 3 Low (priority is usually computed \
                    from them). work_notes and comments add a journal entry. Reference fields \
                    (assigned_to, assignment_group, caller_id) take a sys_id. Resolving usually needs \
                    close_code and close_notes."
            }
        },
        "required": ["sys_id", "updates"],
        "additionalProperties": false
    })
}

/// The base URL setting, checked and without a trailing `/`.
pub(crate) fn normalize_base_url(raw: &str) -> Result<String, String> {
    plain_base_url(
        raw.trim().trim_end_matches('/'),
        raw,
        "servicenow_url",
        "https://instance.service-now.com",
    )
}

/// `url` (the `setting`'s value `raw`, already trimmed) if it is a plain `http(s)://host[/path]`
/// base URL: no query, fragment, space or user info. The errors name the setting and `example`.
pub(crate) fn plain_base_url(url: &str, raw: &str, setting: &str, example: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{setting} must start with https:// (got {raw:?})"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || url.contains(['?', '#', ' ', '@']) {
        return Err(format!("{setting} must be a plain base URL like {example} (got {raw:?})"));
    }
    Ok(url.to_owned())
}

/// Pages `query_incidents` reads at most to collect `limit` rows. ServiceNow removes rows the
/// user may not read *after* paging, so a page can be short (or empty) while later pages still
/// hold rows; this bounds the walk when most matches are invisible.
pub(crate) const MAX_PAGES: u32 = 10;

/// A validated `query_incidents` call; [`Query::page`] gives the request for each page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    base: String,
    query: String,
    /// Rows wanted, and the page size asked for.
    pub(crate) limit: u64,
    fields: String,
}

/// `query_incidents`: the incident list for the model's encoded query.
///
/// The query is passed on as the model wrote it: which rows the user may see is ServiceNow's
/// ACLs' decision (they filter every row), not the tool's. The tool only refuses server-side
/// script other than the "current user" helpers, and fields that are not field names.
pub(crate) fn query_incidents(base: &str, input: &Value) -> Result<Query, ToolError> {
    let query = input.get("query").and_then(Value::as_str).unwrap_or("").trim();
    check_scripts(query)?;
    let limit = input.get("limit").and_then(Value::as_u64).unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ToolError::invalid_input("`limit` must be between 1 and 100"));
    }
    let fields = input.get("fields").and_then(Value::as_str).unwrap_or(DEFAULT_FIELDS);
    let fields = check_fields(fields)?;
    Ok(Query { base: base.to_owned(), query: query.to_owned(), limit, fields })
}

impl Query {
    /// The GET for the page starting at row `offset` (pages are `limit` rows long).
    pub(crate) fn page(&self, offset: u64) -> Planned {
        let mut params =
            vec![("sysparm_query", self.query.clone()), ("sysparm_limit", self.limit.to_string())];
        if offset > 0 {
            params.push(("sysparm_offset", offset.to_string()));
        }
        if !self.fields.is_empty() {
            params.push(("sysparm_fields", self.fields.clone()));
        }
        Planned { method: "GET", url: table_url(&self.base, INCIDENT_PATH, &params), body: None }
    }

    /// Adds the rows of the page read at `offset` to `rows` (never past `limit`) and says where
    /// the next page starts, if one is needed: only while rows are missing and ServiceNow's
    /// `Link` header has a `next` page. A short page alone proves nothing (ACLs remove rows
    /// after paging), and a missing `next` link is the only reliable end.
    pub(crate) fn absorb(
        &self,
        rows: &mut Vec<Value>,
        page: Value,
        offset: u64,
        link: Option<&str>,
    ) -> Option<u64> {
        if let Value::Object(mut o) = page
            && let Some(Value::Array(items)) = o.remove("result")
        {
            let room = usize::try_from(self.limit).unwrap_or(usize::MAX).saturating_sub(rows.len());
            rows.extend(items.into_iter().take(room));
        }
        let full = rows.len() as u64 >= self.limit;
        (!full && link.is_some_and(has_next_link)).then_some(offset + self.limit)
    }
}

/// Whether a `Link` header announces a next page (`<...>;rel="next"`).
fn has_next_link(link: &str) -> bool {
    let compact: String =
        link.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
    compact.contains(";rel=\"next\"") || compact.contains(";rel=next")
}

/// `get_incident`: the incident with this number (all fields), as a one-element list.
pub(crate) fn get_incident(base: &str, input: &Value) -> Result<Planned, ToolError> {
    let raw = input.get("number").and_then(Value::as_str).unwrap_or("").trim();
    let number = check_number(raw)?;
    let params = [("sysparm_query", format!("number={number}")), ("sysparm_limit", "1".to_owned())];
    Ok(Planned { method: "GET", url: table_url(base, INCIDENT_PATH, &params), body: None })
}

/// `update_incident`: PATCH the allowed fields of one incident.
pub(crate) fn update_incident(base: &str, input: &Value) -> Result<Planned, ToolError> {
    let sys_id = check_sys_id(input.get("sys_id").and_then(Value::as_str).unwrap_or(""))?;
    let Some(updates) = input.get("updates").and_then(Value::as_object) else {
        return Err(ToolError::invalid_input("`updates` must be an object of field names to new values"));
    };
    if updates.is_empty() {
        return Err(ToolError::invalid_input("`updates` is empty: name at least one field to change"));
    }
    let mut body = Map::new();
    for (field, value) in updates {
        if !WRITABLE_FIELDS.contains(&field.as_str()) {
            return Err(ToolError::invalid_input(format!(
                "`{field}` cannot be updated by this tool; writable fields: {}",
                WRITABLE_FIELDS.join(", ")
            )));
        }
        // ServiceNow values are strings; numbers and booleans are what models send for them.
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => String::new(),
            _ => return Err(ToolError::invalid_input(format!("`{field}` must be a string value"))),
        };
        if text.chars().count() > MAX_VALUE_CHARS {
            return Err(ToolError::invalid_input(format!(
                "the value of `{field}` is longer than {MAX_VALUE_CHARS} characters"
            )));
        }
        body.insert(field.clone(), Value::String(choice_value(field, &text)));
    }
    let path = format!("{INCIDENT_PATH}/{sys_id}");
    Ok(Planned {
        method: "PATCH",
        url: table_url(base, &path, &[]),
        body: Some(delegate_sdk::agent::to_json(&Value::Object(body))),
    })
}

/// One choice: its value and the lower-case labels it is known by.
type Choice = (&'static str, &'static [&'static str]);

/// Standard labels of the incident choice fields, by field.
const CHOICE_LABELS: &[(&str, &[Choice])] = &[
    (
        "state",
        &[
            ("1", &["new"]),
            ("2", &["in progress"]),
            ("3", &["on hold"]),
            ("6", &["resolved"]),
            ("7", &["closed"]),
            ("8", &["canceled", "cancelled"]),
        ],
    ),
    ("impact", &[("1", &["high"]), ("2", &["medium"]), ("3", &["low"])]),
    ("urgency", &[("1", &["high"]), ("2", &["medium"]), ("3", &["low"])]),
    (
        "priority",
        &[
            ("1", &["critical", "p1"]),
            ("2", &["high", "p2"]),
            ("3", &["moderate", "p3"]),
            ("4", &["low", "p4"]),
            ("5", &["planning", "p5"]),
        ],
    ),
];

/// The value of a choice field given either its value or a standard label.
///
/// The tools read with display values, so a model naturally writes back what it saw
/// (`"In Progress"`, `"1 - High"`); ServiceNow's Table API expects the value (`"2"`, `"1"`) and
/// would store a label verbatim as an invalid choice. Unknown text (an instance-specific
/// choice, or already a value) is passed on unchanged.
pub(crate) fn choice_value(field: &str, text: &str) -> String {
    let Some((_, choices)) = CHOICE_LABELS.iter().find(|(f, _)| *f == field) else {
        return text.to_owned();
    };
    let lower = text.trim().to_ascii_lowercase();
    // "1 - High" is ServiceNow's own label format for impact, urgency and priority.
    let label = match lower.split_once(" - ") {
        Some((v, rest)) if choices.iter().any(|(value, _)| *value == v.trim()) => rest.trim().to_owned(),
        _ => lower,
    };
    choices
        .iter()
        .find(|(_, labels)| labels.contains(&label.as_str()))
        .map_or_else(|| text.to_owned(), |(value, _)| (*value).to_owned())
}

/// The full URL for `path` with `params` plus the display options every call uses:
/// display values (`"2 - High"`, `"In Progress"`, the assignee's name) are what the model
/// shows the user, and reference links only cost tokens.
fn table_url(base: &str, path: &str, params: &[(&str, String)]) -> String {
    let mut url = format!("{base}{path}?");
    let fixed =
        [("sysparm_display_value", "true".to_owned()), ("sysparm_exclude_reference_link", "true".to_owned())];
    for (i, (k, v)) in params.iter().chain(fixed.iter()).enumerate() {
        if i > 0 {
            url.push('&');
        }
        url.push_str(&encode(k));
        url.push('=');
        url.push_str(&encode(v));
    }
    url
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so `^`, `=`, `&`, `+`, `%`,
/// spaces and non-ASCII text reach ServiceNow exactly as written (`+` would otherwise read as
/// a space and `&` would end the parameter).
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
    out
}

fn check_scripts(query: &str) -> Result<(), ToolError> {
    let lower = query.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("javascript:") {
        let start = from + i + "javascript:".len();
        let end = query[start..].find('^').map_or(query.len(), |j| start + j);
        let script = query[start..end].trim();
        if !ALLOWED_SCRIPTS.contains(&script) {
            return Err(ToolError::invalid_input(format!(
                "`javascript:{script}` is not allowed in a query; only {} are",
                ALLOWED_SCRIPTS.iter().map(|s| format!("javascript:{s}")).collect::<Vec<_>>().join(", ")
            )));
        }
        from = end;
    }
    Ok(())
}

fn check_fields(fields: &str) -> Result<String, ToolError> {
    let names: Vec<&str> = fields.split(',').map(str::trim).filter(|f| !f.is_empty()).collect();
    if names.len() > 50 {
        return Err(ToolError::invalid_input("`fields` lists more than 50 fields"));
    }
    for name in &names {
        let ok = name.len() <= 80
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            && !name.starts_with('.')
            && !name.ends_with('.');
        if !ok {
            return Err(ToolError::invalid_input(format!("`{name}` in `fields` is not a field name")));
        }
    }
    Ok(names.join(","))
}

/// An incident number, upper-cased: `INC` and seven digits. It is spliced into an encoded
/// query, so a `^` (which would start a new condition, e.g. `^NQ` to widen the query) is
/// refused with its own message before the format check.
pub(crate) fn check_number(raw: &str) -> Result<String, ToolError> {
    if raw.contains('^') {
        return Err(ToolError::invalid_input(
            "`number` must not contain `^`: it would change the ServiceNow query instead of naming one incident",
        ));
    }
    let number = raw.to_ascii_uppercase();
    let ok =
        number.len() == 10 && number.starts_with("INC") && number[3..].bytes().all(|b| b.is_ascii_digit());
    if !ok {
        return Err(ToolError::invalid_input(format!(
            "`number` must be INC followed by 7 digits, like INC0012345 (got {raw:?})"
        )));
    }
    Ok(number)
}

/// A sys_id, lower-cased: exactly 32 hexadecimal characters (it becomes a URL path segment).
pub(crate) fn check_sys_id(raw: &str) -> Result<String, ToolError> {
    let id = raw.trim();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ToolError::invalid_input(format!(
            "`sys_id` must be 32 hexadecimal characters (got {raw:?}); look the incident up with get_incident first"
        )));
    }
    Ok(id.to_ascii_lowercase())
}

/// A ServiceNow response as a tool result: the Table API JSON on success, else an error the
/// model can explain. `retry_after` is the response's `Retry-After` header.
pub(crate) fn interpret(status: u16, retry_after: Option<&str>, body: &[u8]) -> Result<Value, ToolError> {
    if (200..300).contains(&status) {
        // An instance that is asleep or behind an SSO page answers 200 with HTML.
        return serde_json::from_slice::<Value>(body).ok().filter(Value::is_object).ok_or_else(|| {
            ToolError::new(format!(
                "ServiceNow answered HTTP {status} with something that is not Table API JSON \
                 (the instance may be hibernating or unavailable)"
            ))
        });
    }
    let sn = servicenow_message(body);
    let with_sn = |text: &str| match &sn {
        Some(m) => format!("{text} (ServiceNow: {m})"),
        None => text.to_owned(),
    };
    let message = match status {
        401 => with_sn("your session has expired, sign in again"),
        403 => with_sn("access denied: ServiceNow does not allow you to do this"),
        404 => "not found or not visible to you".to_owned(),
        429 => match retry_after.map(str::trim).filter(|v| !v.is_empty()) {
            Some(secs) if secs.bytes().all(|b| b.is_ascii_digit()) => {
                format!("ServiceNow is rate-limiting your requests; retry in {secs} seconds")
            }
            Some(when) => format!("ServiceNow is rate-limiting your requests; retry after {when}"),
            None => "ServiceNow is rate-limiting your requests; retry in a little while".to_owned(),
        },
        _ => with_sn(&format!("ServiceNow returned HTTP {status}")),
    };
    Err(ToolError::new(message))
}

/// `error.message` (and `error.detail`) of ServiceNow's error envelope, shortened.
fn servicenow_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let message =
        v.pointer("/error/message").and_then(Value::as_str).map(str::trim).filter(|m| !m.is_empty())?;
    let detail = v.pointer("/error/detail").and_then(Value::as_str).map(str::trim).filter(|d| !d.is_empty());
    let text = match detail {
        Some(d) => format!("{message}: {d}"),
        None => message.to_owned(),
    };
    Some(text.chars().take(300).collect())
}

/// A request that never got a response, as a tool error.
pub(crate) fn transport_error(e: &HttpError, planned: &Planned) -> ToolError {
    // Method and path, never the query string: it is what the model wrote and adds nothing.
    let target = planned.url.split('?').next().unwrap_or(&planned.url);
    match e {
        HttpError::Denied => ToolError::new(format!(
            "the host's egress policy does not allow this request ({} {target}); ask the operator to allow it",
            planned.method
        )),
        HttpError::InvalidUrl(_) => ToolError::new("the plugin's servicenow_url setting is not a usable URL"),
        HttpError::Header(h) => ToolError::new(format!("the host refused a request header ({h})")),
        // A write whose answer was lost may still have been applied (the connection can break
        // after ServiceNow committed it): say so, rather than suggesting nothing happened.
        HttpError::Transport(t) if planned.method != "GET" => ToolError::new(format!(
            "ServiceNow did not confirm the update ({t}); it may have been applied: check the record \
             before trying again"
        )),
        HttpError::Transport(t) => ToolError::new(format!("could not reach ServiceNow ({t})")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use delegate_sdk::agent::validate_input;

    const BASE: &str = "https://dev.example.com";

    /// What the model's input becomes after the SDK applied the schema (defaults, types).
    fn checked(schema: &Value, input: &Value) -> Value {
        validate_input(schema, input).unwrap()
    }

    #[test]
    fn query_urls_are_encoded_and_use_display_values() {
        let input = checked(
            &query_incidents_schema(),
            &json!({"query": "assigned_to=javascript:gs.getUserID()^ORDERBYnumber", "limit": 5,
                   "fields": DEFAULT_FIELDS}),
        );
        let p = query_incidents(BASE, &input).unwrap().page(0);
        assert_eq!(p.method, "GET");
        assert_eq!(
            p.url,
            "https://dev.example.com/api/now/table/incident?sysparm_query=assigned_to%3Djavascript%3Ags.getUserID%28%29%5EORDERBYnumber\
             &sysparm_limit=5&sysparm_fields=number%2Cshort_description%2Cpriority%2Cstate%2Cassigned_to\
             &sysparm_display_value=true&sysparm_exclude_reference_link=true"
        );
        assert!(p.body.is_none());
        // defaults from the schema: the article's fields, limit 10, no filter
        let p = query_incidents(BASE, &checked(&query_incidents_schema(), &json!({}))).unwrap().page(0);
        assert!(p.url.contains("sysparm_query=&sysparm_limit=10&sysparm_fields=number%2C"), "{}", p.url);
        // empty fields → all fields
        let p = query_incidents(BASE, &checked(&query_incidents_schema(), &json!({"fields": " "})))
            .unwrap()
            .page(0);
        assert!(!p.url.contains("sysparm_fields"));
    }

    #[test]
    fn encoding() {
        assert_eq!(encode("a b+c&d=e^f%g"), "a%20b%2Bc%26d%3De%5Ef%25g");
        assert_eq!(encode("ünï"), "%C3%BCn%C3%AF");
        assert_eq!(encode("A-z_0.9~"), "A-z_0.9~");
        let p = query_incidents(BASE, &json!({"query": "short_descriptionLIKEVPN & Wi-Fi", "limit": 1}))
            .unwrap()
            .page(0);
        assert!(p.url.contains("sysparm_query=short_descriptionLIKEVPN%20%26%20Wi-Fi&"), "{}", p.url);
    }

    #[test]
    fn query_validation() {
        let s = query_incidents_schema();
        assert_eq!(validate_input(&s, &json!({"limit": 0})).unwrap_err(), "`limit` must be at least 1");
        assert_eq!(validate_input(&s, &json!({"limit": 101})).unwrap_err(), "`limit` must be at most 100");
        assert!(query_incidents(BASE, &json!({"limit": 500})).is_err(), "the handler checks too");
        assert!(validate_input(&s, &json!({"table": "sys_user"})).unwrap_err().contains("unknown property"));
        let e = query_incidents(BASE, &json!({"query": "caller_id=javascript:new GlideRecord('x')"}))
            .unwrap_err();
        assert!(e.message.contains("is not allowed"), "{e}");
        let e = query_incidents(BASE, &json!({"query": "a=javascript:gs.getUserID()^b=JavaScript:eval(1)"}))
            .unwrap_err();
        assert!(e.message.contains("eval(1)"), "{e}");
        assert!(
            query_incidents(
                BASE,
                &json!({"query": "assignment_groupINjavascript:gs.getUser().getMyGroups()"})
            )
            .is_ok()
        );
        let e = query_incidents(BASE, &json!({"fields": "number,sys_id&x=1"})).unwrap_err();
        assert!(e.message.contains("not a field name"), "{e}");
        assert!(query_incidents(BASE, &json!({"fields": "number, assigned_to.email"})).is_ok());
        // the model's own filters (even for restricted categories) are ServiceNow's ACLs' job
        assert!(query_incidents(BASE, &json!({"query": "category=HR^NQpriority=1"})).is_ok());
    }

    #[test]
    fn paging_follows_next_links_until_limit_rows() {
        let q = query_incidents(BASE, &json!({"query": "active=true", "limit": 5})).unwrap();
        assert!(q.page(5).url.contains("&sysparm_limit=5&sysparm_offset=5&"), "{}", q.page(5).url);
        let next = r#"<https://x/api/now/table/incident?sysparm_offset=0>;rel="first",<https://x/api/now/table/incident?sysparm_offset=5>;rel="next""#;
        let last_only =
            r#"<https://x/api/now/table/incident?sysparm_offset=0>;rel="first", <https://x/...>; rel="prev""#;
        let page = |numbers: &[&str]| json!({"result": numbers.iter().map(|n| json!({"number": n})).collect::<Vec<_>>()});
        let mut rows = Vec::new();
        // the HR bait was removed from the first page: 4 rows, and a next page exists
        assert_eq!(q.absorb(&mut rows, page(&["a", "b", "c", "d"]), 0, Some(next)), Some(5));
        // the second page brings more than needed: only one row is kept, and the walk stops
        assert_eq!(q.absorb(&mut rows, page(&["e", "f"]), 5, Some(next)), None);
        let got: Vec<&str> = rows.iter().map(|r| r["number"].as_str().unwrap()).collect();
        assert_eq!(got, ["a", "b", "c", "d", "e"]);
        // a short page without a next link is the end; so is an empty page without one
        let mut rows = Vec::new();
        assert_eq!(q.absorb(&mut rows, page(&["a"]), 0, Some(last_only)), None);
        assert_eq!(q.absorb(&mut rows, page(&[]), 0, None), None);
        // an empty page *with* a next link is not the end (every row on it was invisible)
        let mut rows = Vec::new();
        assert_eq!(q.absorb(&mut rows, page(&[]), 10, Some("<u>; rel=next")), Some(15));
    }

    #[test]
    fn get_incident_by_number() {
        let p = get_incident(BASE, &json!({"number": "inc0012345"})).unwrap();
        assert_eq!(
            p.url,
            "https://dev.example.com/api/now/table/incident?sysparm_query=number%3DINC0012345&sysparm_limit=1\
             &sysparm_display_value=true&sysparm_exclude_reference_link=true"
        );
        let e = get_incident(BASE, &json!({"number": "INC0012345^NQcategory=HR"})).unwrap_err();
        assert!(e.message.contains("must not contain `^`"), "{e}");
        for bad in ["INC001234", "INC00123456", "CHG0012345", "INC001234X", "", "INC 012345"] {
            assert!(get_incident(BASE, &json!({"number": bad})).is_err(), "{bad}");
        }
        assert_eq!(validate_input(&get_incident_schema(), &json!({})).unwrap_err(), "`number` is required");
    }

    #[test]
    fn update_incident_patches_allowed_fields() {
        let id = "46D44A5DC0A8010E0100C8F1A9D6A3C0";
        let input = checked(
            &update_incident_schema(),
            &json!({"sys_id": id, "updates": {"urgency": 1, "work_notes": "called the user", "state": "2"}}),
        );
        let p = update_incident(BASE, &input).unwrap();
        assert_eq!(p.method, "PATCH");
        assert_eq!(
            p.url,
            "https://dev.example.com/api/now/table/incident/46d44a5dc0a8010e0100c8f1a9d6a3c0\
             ?sysparm_display_value=true&sysparm_exclude_reference_link=true"
        );
        let body: Value = serde_json::from_str(p.body.as_deref().unwrap()).unwrap();
        assert_eq!(body, json!({"urgency": "1", "work_notes": "called the user", "state": "2"}));

        for bad in
            ["", "46d44a5dc0a8010e0100c8f1a9d6a3c", "46d44a5dc0a8010e0100c8f1a9d6a3cz", "../../sys_user/x"]
        {
            let e = update_incident(BASE, &json!({"sys_id": bad, "updates": {"urgency": "1"}})).unwrap_err();
            assert!(e.message.contains("32 hexadecimal"), "{bad}: {e}");
        }
        let e =
            update_incident(BASE, &json!({"sys_id": id, "updates": {"sys_created_by": "x"}})).unwrap_err();
        assert!(e.message.contains("cannot be updated"), "{e}");
        let e =
            validate_input(&update_incident_schema(), &json!({"sys_id": id, "updates": {"number": "INC1"}}))
                .unwrap_err();
        assert!(e.contains("unknown property `updates.number`"), "{e}");
        assert!(update_incident(BASE, &json!({"sys_id": id, "updates": {}})).is_err());
        assert!(update_incident(BASE, &json!({"sys_id": id, "updates": {"state": ["2"]}})).is_err());
        assert!(
            update_incident(BASE, &json!({"sys_id": id, "updates": {"comments": "x".repeat(4001)}})).is_err()
        );
        assert!(update_incident(BASE, &json!({"sys_id": id})).is_err());
    }

    #[test]
    fn choice_labels_become_values() {
        assert_eq!(choice_value("state", "In Progress"), "2");
        assert_eq!(choice_value("state", " resolved "), "6");
        assert_eq!(choice_value("state", "Cancelled"), "8");
        assert_eq!(choice_value("state", "2"), "2");
        assert_eq!(choice_value("state", "10"), "10", "instance-specific values pass");
        assert_eq!(choice_value("state", "Awaiting Vendor"), "Awaiting Vendor");
        assert_eq!(choice_value("urgency", "1 - High"), "1");
        assert_eq!(choice_value("impact", "low"), "3");
        assert_eq!(choice_value("priority", "P2"), "2");
        assert_eq!(choice_value("priority", "4 - Low"), "4");
        assert_eq!(choice_value("urgency", "9 - High"), "9 - High", "mismatched value and label pass");
        assert_eq!(choice_value("short_description", "High"), "High");
        let id = "46d44a5dc0a8010e0100c8f1a9d6a3c0";
        let p = update_incident(BASE, &json!({"sys_id": id, "updates": {"state": "On Hold"}})).unwrap();
        assert_eq!(p.body.as_deref(), Some(r#"{"state":"3"}"#));
    }

    #[test]
    fn responses_and_errors() {
        let ok = interpret(200, None, br#"{"result":[{"number":"INC0012345"}]}"#).unwrap();
        assert_eq!(ok["result"][0]["number"], "INC0012345");
        let e = interpret(200, None, b"<html>hibernating</html>").unwrap_err();
        assert!(e.message.contains("not Table API JSON"), "{e}");
        let envelope = |m: &str, d: &str| {
            format!(r#"{{"error":{{"message":"{m}","detail":"{d}"}},"status":"failure"}}"#)
        };
        let e = interpret(
            401,
            None,
            envelope("User Not Authenticated", "Required to provide Auth information").as_bytes(),
        );
        assert!(e.unwrap_err().message.starts_with("your session has expired, sign in again"));
        let e = interpret(403, None, envelope("Operation Failed", "ACL Exception Update Failed").as_bytes())
            .unwrap_err();
        assert_eq!(
            e.message,
            "access denied: ServiceNow does not allow you to do this (ServiceNow: Operation Failed: ACL Exception Update Failed)"
        );
        let e = interpret(404, None, envelope("No Record found", "x").as_bytes()).unwrap_err();
        assert_eq!(e.message, "not found or not visible to you");
        assert!(interpret(429, Some("30"), b"").unwrap_err().message.ends_with("retry in 30 seconds"));
        assert!(interpret(429, None, b"").unwrap_err().message.contains("retry in a little while"));
        assert!(
            interpret(429, Some("Wed, 21 Oct 2026 07:28:00 GMT"), b"")
                .unwrap_err()
                .message
                .ends_with("retry after Wed, 21 Oct 2026 07:28:00 GMT")
        );
        let e = interpret(500, None, envelope("Internal server error", "").as_bytes()).unwrap_err();
        assert_eq!(e.message, "ServiceNow returned HTTP 500 (ServiceNow: Internal server error)");
        assert_eq!(interpret(502, None, b"bad gateway").unwrap_err().message, "ServiceNow returned HTTP 502");
    }

    #[test]
    fn transport_errors() {
        let p = get_incident(BASE, &json!({"number": "INC0012345"})).unwrap();
        let e = transport_error(&HttpError::Denied, &p);
        assert_eq!(
            e.message,
            "the host's egress policy does not allow this request (GET https://dev.example.com/api/now/table/incident); \
             ask the operator to allow it"
        );
        assert!(
            transport_error(&HttpError::Transport("timeout".into()), &p).message.contains("could not reach")
        );
        let patch = update_incident(
            BASE,
            &json!({"sys_id": "46d44a5dc0a8010e0100c8f1a9d6a3c0", "updates": {"urgency": "1"}}),
        )
        .unwrap();
        let m = transport_error(&HttpError::Transport("reset".into()), &patch).message;
        assert!(m.contains("may have been applied") && !m.contains("could not reach"), "{m}");
    }

    #[test]
    fn base_urls() {
        assert_eq!(normalize_base_url(" https://x.service-now.com/ ").unwrap(), "https://x.service-now.com");
        assert_eq!(normalize_base_url("http://127.0.0.1:8443/sn").unwrap(), "http://127.0.0.1:8443/sn");
        assert!(normalize_base_url("x.service-now.com").is_err());
        assert!(normalize_base_url("https://").is_err());
        assert!(normalize_base_url("https://u:p@x.com").is_err());
        assert!(normalize_base_url("https://x.com?a=1").is_err());
    }

    #[test]
    fn writable_fields_match_the_schema() {
        let s = update_incident_schema();
        let props = s.pointer("/properties/updates/properties").and_then(Value::as_object).unwrap();
        assert_eq!(props.len(), WRITABLE_FIELDS.len());
    }
}
