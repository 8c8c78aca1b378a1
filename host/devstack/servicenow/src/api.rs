//! The Table API over HTTP: routing, authentication, ACLs, paging, rendering, writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::auth::Verifier;
use crate::faults::Fault;
use crate::query::{self, Me};
use crate::schema::{self, FieldDef, FieldKind, TableDef};
use crate::seed::RESTRICTED_CATEGORIES;
use crate::store::Row;
use crate::{AclFiltering, ServiceNow};

/// ServiceNow's default and maximum `sysparm_limit`.
const MAX_LIMIT: usize = 10_000;

const JSON_CONTENT_TYPE: &str = "application/json;charset=UTF-8";

pub(crate) fn router(sn: ServiceNow) -> Router {
    let mut router = Router::new();
    for prefix in ["/api/now/table", "/api/now/v1/table", "/api/now/v2/table"] {
        router = router
            .route(&format!("{prefix}/{{table}}"), any(collection))
            .route(&format!("{prefix}/{{table}}/{{sys_id}}"), any(item));
    }
    router.fallback(unknown_resource).with_state(sn)
}

// ---------------------------------------------------------------------------------------
// Responses

/// A Table API failure, rendered as ServiceNow's error envelope.
struct ApiError {
    status: StatusCode,
    message: &'static str,
    detail: String,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    fn new(status: StatusCode, message: &'static str, detail: impl Into<String>) -> Self {
        Self { status, message, detail: detail.into(), headers: Vec::new() }
    }

    fn unauthenticated() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "User Not Authenticated", "Required to provide Auth information")
    }

    fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "No Record found",
            "Record doesn't exist or ACL restricts the record retrieval",
        )
    }

    fn forbidden(operation: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Operation Failed",
            format!("ACL Exception {operation} Failed due to security constraints"),
        )
    }

    fn bad_json() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "Exception while reading request",
            "The payload is not valid JSON.",
        )
    }

    fn internal(e: &rusqlite::Error) -> Self {
        tracing::error!(error = %e, "servicenow sandbox database error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error", "The sandbox database failed")
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        Self::internal(&e)
    }
}

fn json_response(status: StatusCode, body: &Value, headers: HeaderMap) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
    response.headers_mut().extend(headers);
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {"message": self.message, "detail": self.detail},
            "status": "failure",
        });
        let mut headers = HeaderMap::new();
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        json_response(self.status, &body, headers)
    }
}

async fn unknown_resource() -> Response {
    ApiError::new(StatusCode::BAD_REQUEST, "Requested URI does not represent any resource", "")
        .into_response()
}

fn fault_response(fault: Fault) -> Response {
    match fault {
        Fault::TooManyRequests { retry_after_secs } => {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                "Rate limit exceeded for this user; retry later",
            );
            e.headers.push((header::RETRY_AFTER, HeaderValue::from(retry_after_secs)));
            e.into_response()
        }
        Fault::ServerError { status } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            ApiError::new(status, "Internal server error", "Injected fault").into_response()
        }
        Fault::MalformedJson => {
            let mut r = (StatusCode::OK, "{\"result\":[{\"number\":\"INC00").into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
            r
        }
        Fault::WrongContentType => {
            let mut r = (StatusCode::OK, "<html><body><h1>Your instance is hibernating</h1></body></html>")
                .into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html;charset=UTF-8"));
            r
        }
    }
}

// ---------------------------------------------------------------------------------------
// The caller

/// The authenticated `sys_user`, with what the ACLs need.
pub(crate) struct Caller {
    sys_id: String,
    user_name: String,
    roles: Vec<String>,
    groups: Vec<String>,
}

impl Caller {
    fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    fn is_admin(&self) -> bool {
        self.has_role("admin")
    }

    fn in_group(&self, group_sys_id: &str) -> bool {
        self.groups.iter().any(|g| g == group_sys_id)
    }

    fn me(&self) -> Me<'_> {
        Me { sys_id: &self.sys_id, user_name: &self.user_name, groups: &self.groups }
    }
}

fn field<'a>(row: &'a Row, name: &str) -> &'a str {
    row.get(name).map_or("", String::as_str)
}

impl ServiceNow {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let token = Verifier::bearer(headers.get(header::AUTHORIZATION)).map_err(|e| {
            tracing::info!(reason = %e, "servicenow sandbox: request refused");
            ApiError::unauthenticated()
        })?;
        let claim = self.verifier().verify(&token).await.map_err(|e| {
            tracing::info!(reason = %e, "servicenow sandbox: token refused");
            ApiError::unauthenticated()
        })?;
        let user_field = self.user_field();
        let caller = self.with_store(|s| {
            let users = s.all_shared(&schema::SYS_USER)?;
            let Some(user) =
                users.iter().find(|u| field(u, user_field).eq_ignore_ascii_case(&claim) && !claim.is_empty())
            else {
                return Ok(None);
            };
            if field(user, "active") != "true" {
                return Ok(None);
            }
            let sys_id = field(user, "sys_id").to_owned();
            let groups = s
                .all_shared(&schema::SYS_USER_GRMEMBER)?
                .iter()
                .filter(|m| field(m, "user") == sys_id)
                .map(|m| field(m, "group").to_owned())
                .collect();
            Ok(Some(Caller {
                user_name: field(user, "user_name").to_owned(),
                roles: field(user, "roles")
                    .split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned)
                    .collect(),
                groups,
                sys_id,
            }))
        })?;
        caller.ok_or_else(|| {
            tracing::info!("servicenow sandbox: token names no active sys_user");
            ApiError::unauthenticated()
        })
    }

    /// Everything before the table logic: count, delay, faults, authentication, `Accept`.
    async fn admit(&self, headers: &HeaderMap) -> Result<Caller, Response> {
        let (fault, delay) = self.faults().on_request();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if let Some(fault) = fault {
            return Err(fault_response(fault));
        }
        let caller = self.authenticate(headers).await.map_err(IntoResponse::into_response)?;
        if !accepts_json(headers) {
            return Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "Not Acceptable",
                "This resource can only produce application/json",
            )
            .into_response());
        }
        Ok(caller)
    }

    fn base_url(&self, headers: &HeaderMap) -> String {
        self.configured_base_url().unwrap_or_else(|| {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)))
                .unwrap_or("localhost");
            format!("https://{host}")
        })
    }
}

fn accepts_json(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT) else {
        return true;
    };
    let Ok(accept) = accept.to_str() else {
        return false;
    };
    accept.split(',').any(|range| {
        let media = range.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        matches!(media.as_str(), "*/*" | "application/*" | "application/json" | "")
    })
}

fn content_type_is_json(headers: &HeaderMap) -> bool {
    match headers.get(header::CONTENT_TYPE) {
        // ServiceNow parses a body without Content-Type as JSON.
        None => true,
        Some(v) => v.to_str().is_ok_and(|v| {
            v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        }),
    }
}

// ---------------------------------------------------------------------------------------
// ACLs

fn restricted_group(category: &str) -> Option<&'static str> {
    RESTRICTED_CATEGORIES.iter().find(|(c, _)| c.eq_ignore_ascii_case(category.trim())).map(|(_, g)| g.sys_id)
}

fn can_read(caller: &Caller, table: &TableDef, row: &Row) -> bool {
    if caller.is_admin() {
        return true;
    }
    match table.name {
        "incident" => {
            if let Some(group) = restricted_group(field(row, "category")) {
                return caller.in_group(group);
            }
            caller.has_role("itil")
                || field(row, "caller_id") == caller.sys_id
                || field(row, "opened_by") == caller.sys_id
        }
        "sys_audit" => caller.has_role("auditor"),
        _ => true,
    }
}

fn can_write(caller: &Caller, table: &TableDef, row: &Row) -> bool {
    match table.name {
        "incident" => {
            caller.is_admin()
                || (!caller.sys_id.is_empty() && field(row, "assigned_to") == caller.sys_id)
                || caller.in_group(field(row, "assignment_group"))
        }
        "sys_user" => caller.is_admin(),
        _ => false,
    }
}

fn can_create(caller: &Caller, table: &TableDef) -> bool {
    match table.name {
        "incident" => true,
        "sys_user" => caller.is_admin(),
        _ => false,
    }
}

fn can_delete(caller: &Caller, table: &TableDef) -> bool {
    matches!(table.name, "incident" | "sys_user") && caller.is_admin()
}

// ---------------------------------------------------------------------------------------
// Parameters

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DisplayMode {
    False,
    True,
    All,
}

struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    fn parse(raw: Option<&str>) -> Self {
        let pairs = url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Self { pairs }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    fn display_mode(&self) -> DisplayMode {
        match self.get("sysparm_display_value").map(str::to_ascii_lowercase).as_deref() {
            Some("true") => DisplayMode::True,
            Some("all") => DisplayMode::All,
            _ => DisplayMode::False,
        }
    }

    /// Requested fields, trimmed and without duplicates; `None` means all.
    fn fields(&self) -> Option<Vec<String>> {
        let raw = self.get("sysparm_fields")?;
        let mut out: Vec<String> = Vec::new();
        for f in raw.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            if !out.iter().any(|o| o == f) {
                out.push(f.to_owned());
            }
        }
        if out.is_empty() { None } else { Some(out) }
    }

    /// `sysparm_limit`: 1..=10000; absent, non-numeric or out-of-range values fall back to
    /// the 10000 default/maximum (0 and negatives included).
    fn limit(&self) -> usize {
        self.get("sysparm_limit")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| *n > 0)
            .map_or(MAX_LIMIT, |n| n.min(MAX_LIMIT))
    }

    /// `sysparm_offset`: non-negative; anything else is 0.
    fn offset(&self) -> usize {
        self.get("sysparm_offset").and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(0)
    }

    /// The query string with the paging parameters replaced, for `Link` URLs.
    fn with_page(&self, limit: usize, offset: usize) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.pairs {
            if k != "sysparm_limit" && k != "sysparm_offset" {
                s.append_pair(k, v);
            }
        }
        s.append_pair("sysparm_limit", &limit.to_string());
        s.append_pair("sysparm_offset", &offset.to_string());
        s.finish()
    }
}

// ---------------------------------------------------------------------------------------
// Field resolution and rendering

/// The reference targets loaded for one request (small tables; loaded whole).
struct Lookups {
    /// Whole-table snapshots of the reference targets (a handful of rows each in a sandbox).
    tables: HashMap<&'static str, Arc<Vec<Row>>>,
}

impl Lookups {
    fn load(sn: &ServiceNow) -> Result<Self, rusqlite::Error> {
        sn.with_store(|s| {
            let mut tables = HashMap::new();
            for def in [&schema::SYS_USER, &schema::SYS_USER_GROUP] {
                tables.insert(def.name, s.all_shared(def)?);
            }
            Ok(Self { tables })
        })
    }

    fn get(&self, table: &str, sys_id: &str) -> Option<&Row> {
        self.tables.get(table)?.iter().find(|r| field(r, "sys_id") == sys_id)
    }
}

/// The field a (possibly dot-walked) path ends at, checked against the schema only.
fn schema_path(table: &'static TableDef, path: &str) -> Option<&'static FieldDef> {
    let mut current = table;
    let mut segments = path.split('.').peekable();
    while let Some(seg) = segments.next() {
        let def = current.field(seg)?;
        if segments.peek().is_none() {
            return Some(def);
        }
        let FieldKind::Reference(target) = def.kind else {
            return None;
        };
        current = schema::table(target)?;
    }
    None
}

/// A path's field definition and raw value for one row.
fn resolve<'a>(
    table: &'static TableDef,
    row: &'a Row,
    path: &str,
    lookups: &'a Lookups,
) -> Option<(&'static FieldDef, &'a str)> {
    let mut current_table = table;
    let mut current_row = row;
    let mut rest = path;
    loop {
        let (seg, tail) = match rest.split_once('.') {
            Some((seg, tail)) => (seg, Some(tail)),
            None => (rest, None),
        };
        let def = current_table.field(seg)?;
        let value = field(current_row, seg);
        let Some(tail) = tail else {
            return Some((def, value));
        };
        let FieldKind::Reference(target) = def.kind else {
            return None;
        };
        current_table = schema::table(target)?;
        match lookups.get(target, value) {
            Some(next) => current_row = next,
            // An empty or dangling reference: the dot-walked field exists but is empty.
            None => return schema_path(current_table, tail).map(|d| (d, "")),
        }
        rest = tail;
    }
}

struct Render<'a> {
    mode: DisplayMode,
    exclude_link: bool,
    base_url: &'a str,
    lookups: &'a Lookups,
}

impl Render<'_> {
    fn value(&self, def: &FieldDef, raw: &str) -> Value {
        match def.kind {
            FieldKind::Reference(target) => self.reference(target, raw),
            FieldKind::Choice(choices) => {
                let label = schema::choice_label(choices, raw);
                match self.mode {
                    DisplayMode::False => Value::from(raw),
                    DisplayMode::True => Value::from(label),
                    DisplayMode::All => json!({"display_value": label, "value": raw}),
                }
            }
            _ => match self.mode {
                DisplayMode::False | DisplayMode::True => Value::from(raw),
                DisplayMode::All => json!({"display_value": raw, "value": raw}),
            },
        }
    }

    fn reference(&self, target: &str, raw: &str) -> Value {
        if raw.is_empty() {
            return match self.mode {
                DisplayMode::All => json!({"display_value": "", "value": ""}),
                _ => Value::from(""),
            };
        }
        let display = schema::table(target)
            .and_then(|t| self.lookups.get(target, raw).map(|r| field(r, t.display_field)))
            .unwrap_or("");
        let link = format!("{}/api/now/table/{target}/{raw}", self.base_url);
        match (self.mode, self.exclude_link) {
            (DisplayMode::False, true) => Value::from(raw),
            (DisplayMode::False, false) => json!({"link": link, "value": raw}),
            (DisplayMode::True, true) => Value::from(display),
            (DisplayMode::True, false) => json!({"link": link, "display_value": display}),
            (DisplayMode::All, true) => json!({"display_value": display, "value": raw}),
            (DisplayMode::All, false) => {
                json!({"display_value": display, "link": link, "value": raw})
            }
        }
    }

    fn row(&self, table: &'static TableDef, row: &Row, fields: Option<&[String]>) -> Value {
        let mut out = Map::new();
        match fields {
            None => {
                for def in table.fields {
                    out.insert(def.name.to_owned(), self.value(def, field(row, def.name)));
                }
            }
            Some(fields) => {
                for path in fields {
                    // Unknown names are just absent, as in ServiceNow.
                    if let Some((def, raw)) = resolve(table, row, path, self.lookups) {
                        out.insert(path.clone(), self.value(def, raw));
                    }
                }
            }
        }
        Value::Object(out)
    }
}

// ---------------------------------------------------------------------------------------
// Handlers

fn table_def(name: &str) -> Result<&'static TableDef, ApiError> {
    schema::table(name).ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "Invalid table", format!("Invalid table {name}"))
    })
}

fn method_not_allowed(method: &Method, allow: &'static str) -> Response {
    let mut e = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not Supported",
        format!("{method} is not supported for this resource"),
    );
    e.headers.push((header::ALLOW, HeaderValue::from_static(allow)));
    e.into_response()
}

async fn collection(
    State(sn): State<ServiceNow>,
    Path(table): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw_query): RawQuery,
    body: Bytes,
) -> Response {
    let caller = match sn.admit(&headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let params = Params::parse(raw_query.as_deref());
    let result = match method {
        Method::GET | Method::HEAD => list(&sn, &caller, &table, &params, &headers),
        Method::POST => create(&sn, &caller, &table, &params, &headers, &body),
        _ => return method_not_allowed(&method, "GET, POST"),
    };
    let status = result.as_ref().map_or_else(|e| e.status, |r| r.status());
    tracing::info!(%method, table, user = caller.user_name, status = status.as_u16(), "servicenow table api");
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn item(
    State(sn): State<ServiceNow>,
    Path((table, sys_id)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw_query): RawQuery,
    body: Bytes,
) -> Response {
    let caller = match sn.admit(&headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let params = Params::parse(raw_query.as_deref());
    let result = match method {
        Method::GET | Method::HEAD => read(&sn, &caller, &table, &sys_id, &params, &headers),
        Method::PATCH | Method::PUT => update(&sn, &caller, &table, &sys_id, &params, &headers, &body),
        Method::DELETE => delete(&sn, &caller, &table, &sys_id),
        _ => return method_not_allowed(&method, "GET, PUT, PATCH, DELETE"),
    };
    let status = result.as_ref().map_or_else(|e| e.status, |r| r.status());
    tracing::info!(%method, table, sys_id, user = caller.user_name, status = status.as_u16(), "servicenow table api");
    result.unwrap_or_else(IntoResponse::into_response)
}

fn list(
    sn: &ServiceNow,
    caller: &Caller,
    table: &str,
    params: &Params,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let def = table_def(table)?;
    let lookups = Lookups::load(sn)?;
    let rows = sn.with_store(|s| s.all_shared(def))?;
    let query = query::parse(
        params.get("sysparm_query").unwrap_or(""),
        &|path| schema_path(def, path).is_some(),
        &caller.me(),
    );
    let value_of = |row: &Row, path: &str| -> String {
        resolve(def, row, path, &lookups).map(|(_, v)| v.to_owned()).unwrap_or_default()
    };
    let mut matched: Vec<&Row> = rows.iter().filter(|row| query.matches(&|p| value_of(row, p))).collect();
    if !query.order.is_empty() {
        matched.sort_by(|a, b| query.compare_rows(&|p| value_of(a, p), &|p| value_of(b, p)));
    }

    if sn.acl_filtering() == AclFiltering::BeforePaging {
        matched.retain(|row| can_read(caller, def, row));
    }
    let total = matched.len();
    let limit = params.limit();
    let offset = params.offset();
    // Paging first, ACLs second (protocols.md §5.4): pages may be short.
    let page = matched.iter().skip(offset).take(limit);
    let base_url = sn.base_url(headers);
    let render = Render {
        mode: params.display_mode(),
        exclude_link: params.flag("sysparm_exclude_reference_link"),
        base_url: &base_url,
        lookups: &lookups,
    };
    let fields = params.fields();
    let result: Vec<Value> = page
        .filter(|row| can_read(caller, def, row))
        .map(|row| render.row(def, row, fields.as_deref()))
        .collect();

    let mut out = HeaderMap::new();
    if !params.flag("sysparm_no_count") {
        out.insert("x-total-count", HeaderValue::from(total));
    }
    if !params.flag("sysparm_suppress_pagination_header")
        && let Some(link) = link_header(&base_url, def.name, params, total, limit, offset)
    {
        out.insert(header::LINK, link);
    }
    Ok(json_response(StatusCode::OK, &json!({ "result": result }), out))
}

fn link_header(
    base_url: &str,
    table: &str,
    params: &Params,
    total: usize,
    limit: usize,
    offset: usize,
) -> Option<HeaderValue> {
    if offset == 0 && total <= limit {
        return None; // one page
    }
    let url = |o: usize| format!("<{base_url}/api/now/table/{table}?{}>", params.with_page(limit, o));
    let last = if total == 0 { 0 } else { (total - 1) / limit * limit };
    let mut parts = vec![format!("{};rel=\"first\"", url(0))];
    if offset > 0 {
        parts.push(format!("{};rel=\"prev\"", url(offset.saturating_sub(limit))));
    }
    if offset.saturating_add(limit) < total {
        parts.push(format!("{};rel=\"next\"", url(offset + limit)));
    }
    parts.push(format!("{};rel=\"last\"", url(last)));
    HeaderValue::from_str(&parts.join(",")).ok()
}

fn read(
    sn: &ServiceNow,
    caller: &Caller,
    table: &str,
    sys_id: &str,
    params: &Params,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let def = table_def(table)?;
    let row = sn
        .with_store(|s| s.get(def, sys_id))?
        .filter(|row| can_read(caller, def, row))
        .ok_or_else(ApiError::not_found)?;
    respond_record(sn, def, &row, params, headers, StatusCode::OK)
}

fn respond_record(
    sn: &ServiceNow,
    def: &'static TableDef,
    row: &Row,
    params: &Params,
    headers: &HeaderMap,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let lookups = Lookups::load(sn)?;
    let base_url = sn.base_url(headers);
    let render = Render {
        mode: params.display_mode(),
        exclude_link: params.flag("sysparm_exclude_reference_link"),
        base_url: &base_url,
        lookups: &lookups,
    };
    let record = render.row(def, row, params.fields().as_deref());
    let mut out = HeaderMap::new();
    if status == StatusCode::CREATED
        && let Ok(location) =
            HeaderValue::from_str(&format!("{base_url}/api/now/table/{}/{}", def.name, field(row, "sys_id")))
    {
        out.insert(header::LOCATION, location);
    }
    Ok(json_response(status, &json!({ "result": record }), out))
}

/// The writable fields of a request body. Unknown and read-only fields are ignored, as
/// ServiceNow ignores them; values may be strings, numbers, booleans, null (→ `""`) or a
/// `{"value": …}` object.
fn writable_values(def: &'static TableDef, body: &Bytes) -> Result<Vec<(&'static str, String)>, ApiError> {
    let parsed: Value = if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_json());
    } else {
        serde_json::from_slice(body).map_err(|_| ApiError::bad_json())?
    };
    // Only one record per request; extra records in an array are ignored.
    let object = match parsed {
        Value::Object(o) => o,
        Value::Array(mut items) if !items.is_empty() => match items.swap_remove(0) {
            Value::Object(o) => o,
            _ => return Err(ApiError::bad_json()),
        },
        _ => return Err(ApiError::bad_json()),
    };
    let mut out = Vec::new();
    for (name, value) in object {
        let Some(fdef) = def.field(&name).filter(|f| f.writable) else {
            tracing::debug!(field = name, "servicenow sandbox: ignoring non-writable field");
            continue;
        };
        let text = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => String::new(),
            Value::Object(o) => match o.get("value") {
                Some(Value::String(s)) => s.clone(),
                _ => continue,
            },
            Value::Array(_) => continue,
        };
        out.push((fdef.name, text));
    }
    Ok(out)
}

/// UTC now as ServiceNow's `YYYY-MM-DD HH:MM:SS`.
pub(crate) fn glide_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil-from-days (H. Hinnant), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Who and when, shared by the audit rows of one write.
struct Stamp<'a> {
    caller: &'a Caller,
    checkpoint: &'a str,
    now: &'a str,
}

fn audit_row(def: &TableDef, sys_id: &str, field_name: &str, old: &str, new: &str, stamp: &Stamp<'_>) -> Row {
    let mut row = Row::new();
    row.insert("sys_id", uuid::Uuid::new_v4().simple().to_string());
    row.insert("tablename", def.name.to_owned());
    row.insert("documentkey", sys_id.to_owned());
    row.insert("fieldname", field_name.to_owned());
    row.insert("oldvalue", old.to_owned());
    row.insert("newvalue", new.to_owned());
    row.insert("user", stamp.caller.user_name.clone());
    row.insert("reason", String::new());
    row.insert("record_checkpoint", stamp.checkpoint.to_owned());
    row.insert("sys_created_on", stamp.now.to_owned());
    row.insert("sys_created_by", stamp.caller.user_name.clone());
    row
}

/// Incident business rule: `active` follows `state` (Closed and Canceled are inactive).
fn derived_changes(def: &TableDef, changes: &mut Vec<(&'static str, String)>) {
    if def.name != "incident" {
        return;
    }
    if let Some((_, state)) = changes.iter().rev().find(|(f, _)| *f == "state") {
        let active = (!matches!(state.as_str(), "7" | "8")).to_string();
        changes.retain(|(f, _)| *f != "active");
        changes.push(("active", active));
    }
}

fn create(
    sn: &ServiceNow,
    caller: &Caller,
    table: &str,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let def = table_def(table)?;
    if !content_type_is_json(headers) {
        return Err(unsupported_media_type());
    }
    if !can_create(caller, def) {
        return Err(ApiError::forbidden("Insert"));
    }
    let mut values = writable_values(def, body)?;
    derived_changes(def, &mut values);
    let now = glide_now();
    let sys_id = uuid::Uuid::new_v4().simple().to_string();
    let row = sn.with_store(|s| {
        s.in_transaction(|s| {
            let mut row = Row::new();
            for fdef in def.fields {
                row.insert(fdef.name, String::new());
            }
            if def.name == "incident" {
                let next = s
                    .all(def)?
                    .iter()
                    .filter_map(|r| field(r, "number").strip_prefix("INC")?.parse::<u64>().ok())
                    .max()
                    .unwrap_or(0)
                    + 1;
                for (k, v) in [
                    ("number", format!("INC{next:07}")),
                    ("state", "1".to_owned()),
                    ("impact", "3".to_owned()),
                    ("urgency", "3".to_owned()),
                    ("priority", "5".to_owned()),
                    ("category", "inquiry".to_owned()),
                    ("caller_id", caller.sys_id.clone()),
                    ("opened_by", caller.sys_id.clone()),
                    ("active", "true".to_owned()),
                    ("opened_at", now.clone()),
                ] {
                    row.insert(k, v);
                }
            } else if def.name == "sys_user" {
                row.insert("active", "true".to_owned());
            }
            for (k, v) in &values {
                row.insert(k, v.clone());
            }
            row.insert("sys_id", sys_id.clone());
            row.insert("sys_created_on", now.clone());
            row.insert("sys_created_by", caller.user_name.clone());
            row.insert("sys_updated_on", now.clone());
            row.insert("sys_updated_by", caller.user_name.clone());
            row.insert("sys_mod_count", "0".to_owned());
            s.insert(def, &row)?;
            for (k, v) in &values {
                if !v.is_empty() {
                    s.insert(
                        &schema::SYS_AUDIT,
                        &audit_row(def, &sys_id, k, "", v, &Stamp { caller, checkpoint: "0", now: &now }),
                    )?;
                }
            }
            Ok(row)
        })
    })?;
    respond_record(sn, def, &row, params, headers, StatusCode::CREATED)
}

fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Unsupported Media Type",
        "Request body must be application/json",
    )
}

fn update(
    sn: &ServiceNow,
    caller: &Caller,
    table: &str,
    sys_id: &str,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let def = table_def(table)?;
    if !content_type_is_json(headers) {
        return Err(unsupported_media_type());
    }
    let current = sn
        .with_store(|s| s.get(def, sys_id))?
        .filter(|row| can_read(caller, def, row))
        .ok_or_else(ApiError::not_found)?;
    if !can_write(caller, def, &current) {
        return Err(ApiError::forbidden("Update"));
    }
    let mut values = writable_values(def, body)?;
    derived_changes(def, &mut values);
    // Last write of a field wins; unchanged values are not changes (and not audited).
    let mut changes: Vec<(&'static str, String)> = Vec::new();
    for (k, v) in values {
        changes.retain(|(f, _)| *f != k);
        if field(&current, k) != v {
            changes.push((k, v));
        }
    }
    let row = if changes.is_empty() {
        current
    } else {
        let now = glide_now();
        let count = field(&current, "sys_mod_count").parse::<u64>().unwrap_or(0) + 1;
        let checkpoint = count.to_string();
        sn.with_store(|s| {
            s.in_transaction(|s| {
                for (k, v) in &changes {
                    s.insert(
                        &schema::SYS_AUDIT,
                        &audit_row(
                            def,
                            sys_id,
                            k,
                            field(&current, k),
                            v,
                            &Stamp { caller, checkpoint: &checkpoint, now: &now },
                        ),
                    )?;
                }
                let mut all = changes.clone();
                all.push(("sys_updated_on", now.clone()));
                all.push(("sys_updated_by", caller.user_name.clone()));
                all.push(("sys_mod_count", checkpoint.clone()));
                s.update(def, sys_id, &all)?;
                s.get(def, sys_id)
            })
        })?
        .ok_or_else(ApiError::not_found)?
    };
    respond_record(sn, def, &row, params, headers, StatusCode::OK)
}

fn delete(sn: &ServiceNow, caller: &Caller, table: &str, sys_id: &str) -> Result<Response, ApiError> {
    let def = table_def(table)?;
    sn.with_store(|s| s.get(def, sys_id))?
        .filter(|row| can_read(caller, def, row))
        .ok_or_else(ApiError::not_found)?;
    if !can_delete(caller, def) {
        return Err(ApiError::forbidden("Delete"));
    }
    sn.with_store(|s| s.delete(def, sys_id))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
