//! The routes, `$select`, and Graph's response and error shapes.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::auth::{Principal, Refusal, Seen, Verifier};
use crate::directory::{self, BASIC_PROPERTIES, DEFAULT_PROPERTIES, DirectoryUser, SELECTABLE};
use crate::{GRAPH_APP_ID, Graph, SeenToken};

/// Graph's JSON content type (OData minimal metadata).
const JSON_TYPE: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

pub(crate) fn router(graph: Graph) -> Router {
    Router::new()
        .route("/v1.0/me", axum::routing::any(me))
        .route("/v1.0/me/manager", axum::routing::any(my_manager))
        .route("/v1.0/users/{id}", axum::routing::any(user_by_id))
        .fallback(unknown)
        .with_state(graph)
}

/// Ids that tie a response to a request, as Graph sends them in headers and error bodies.
struct RequestIds {
    request_id: String,
    client_request_id: String,
}

impl RequestIds {
    fn new(headers: &HeaderMap) -> Self {
        let request_id = uuid::Uuid::new_v4().to_string();
        // The client's id is echoed only when it is a short, printable token.
        let client_request_id = headers
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map_or_else(|| request_id.clone(), str::to_owned);
        Self { request_id, client_request_id }
    }

    fn apply(&self, response: &mut Response) {
        for (name, value) in
            [("request-id", &self.request_id), ("client-request-id", &self.client_request_id)]
        {
            if let Ok(v) = HeaderValue::from_str(value) {
                response.headers_mut().insert(name, v);
            }
        }
    }
}

/// An error answered in Graph's envelope.
struct GraphFailure {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The `WWW-Authenticate` challenge (401 only).
    challenge: bool,
}

impl GraphFailure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), challenge: false }
    }

    fn not_found(resource: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!(
                "Resource '{resource}' does not exist or one of its queried reference-property objects are not present."
            ),
        )
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    fn denied() -> Self {
        Self::new(StatusCode::FORBIDDEN, "Authorization_RequestDenied", Refusal::Scope.message())
    }

    fn from_refusal(refusal: &Refusal) -> Self {
        let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        Self { status, code: refusal.code(), message: refusal.message().to_owned(), challenge: status == 401 }
    }

    fn into_response(self, graph: &Graph, ids: &RequestIds) -> Response {
        let body = json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": graph_date(now()),
                    "request-id": ids.request_id,
                    "client-request-id": ids.client_request_id,
                }
            }
        });
        let mut response = (self.status, json_body(&body)).into_response();
        if self.challenge {
            let challenge = format!(
                "Bearer realm=\"\", authorization_uri=\"{}\", client_id=\"{GRAPH_APP_ID}\"",
                graph.authorization_uri()
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        ids.apply(&mut response);
        response
    }
}

fn json_body(value: &Value) -> ([(header::HeaderName, &'static str); 2], String) {
    (
        [(header::CONTENT_TYPE, JSON_TYPE), (header::HeaderName::from_static("odata-version"), "4.0")],
        value.to_string(),
    )
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SS`, the form of Graph's `innerError.date`.
pub(crate) fn graph_date(unix: u64) -> String {
    let (days, rem) = (unix / 86_400, unix % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// `$select`: the canonical names of the requested properties, in request order, or `None`
/// when the query has no `$select`.
fn parse_select(query: Option<&str>) -> Result<Option<Vec<&'static str>>, GraphFailure> {
    let mut select = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "$select" | "select" => {
                if select.is_some() {
                    return Err(GraphFailure::bad_request(
                        "Query option '$select' was specified more than once, but it must be specified at most once.",
                    ));
                }
                let mut names: Vec<&'static str> = Vec::new();
                for raw in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let Some(name) = SELECTABLE.iter().find(|p| p.eq_ignore_ascii_case(raw)) else {
                        // The property name comes from the caller: echo it only if it is short
                        // and plain (it could be anything).
                        let shown: String = raw
                            .chars()
                            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                            .take(64)
                            .collect();
                        return Err(GraphFailure::bad_request(format!(
                            "Parsing OData Select and Expand failed: Could not find a property named '{shown}' on type 'microsoft.graph.user'."
                        )));
                    };
                    if !names.contains(name) {
                        names.push(name);
                    }
                }
                select = Some(names);
            }
            "$expand" | "$filter" | "$orderby" | "$search" | "$top" | "$skip" | "$count" | "$format" => {
                return Err(GraphFailure::new(
                    StatusCode::BAD_REQUEST,
                    "Request_UnsupportedQuery",
                    format!("The query option '{key}' is not supported by this resource."),
                ));
            }
            // Other parameters are not OData options; Graph ignores them.
            _ => {}
        }
    }
    Ok(select.filter(|names| !names.is_empty()))
}

/// The `@odata.context` of a user entity (`entity_set` `users` or `directoryObjects`).
fn context(base: &str, entity_set: &str, select: Option<&[&str]>) -> String {
    match select {
        Some(names) => format!("{base}/v1.0/$metadata#{entity_set}({})/$entity", names.join(",")),
        None => format!("{base}/v1.0/$metadata#{entity_set}/$entity"),
    }
}

fn base_url(graph: &Graph, headers: &HeaderMap) -> String {
    graph.configured_base_url().unwrap_or_else(|| {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
            .unwrap_or("graph.microsoft.com");
        format!("https://{host}")
    })
}

/// What every route does first: count, check the method, verify the token and record it.
async fn authenticate(
    graph: &Graph,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Principal, GraphFailure> {
    graph.count_request();
    if method != Method::GET && method != Method::HEAD {
        return Err(GraphFailure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            "Specified HTTP method is not allowed for the request target.",
        ));
    }
    let token = Verifier::bearer(headers.get(header::AUTHORIZATION)).map_err(|r| {
        tracing::info!(reason = %r, "devstack Graph refused a request");
        GraphFailure::from_refusal(&r)
    })?;
    let mut seen = Seen::default();
    let outcome = graph.verifier().verify(&token, &mut seen).await;
    let verified = !matches!(outcome, Err(Refusal::Signature | Refusal::Keys));
    if verified {
        graph.record(SeenToken {
            audience: seen.audience,
            oid: seen.oid,
            scopes: seen.scopes,
            refused: outcome.as_ref().err().cloned(),
        });
    }
    outcome.map_err(|r| {
        tracing::info!(reason = %r, "devstack Graph refused a token");
        GraphFailure::from_refusal(&r)
    })
}

/// The signed-in user of a delegated token; an app-only token cannot use `/me`.
fn signed_in(graph: &Graph, principal: &Principal) -> Result<&'static DirectoryUser, GraphFailure> {
    match principal {
        Principal::User { oid, .. } => {
            directory::find(graph.tenant(), oid).ok_or_else(|| GraphFailure::not_found(oid))
        }
        Principal::App => {
            Err(GraphFailure::bad_request("/me request is only valid with delegated authentication flow."))
        }
    }
}

/// A user entity answer: the selected (or default) properties, limited to `allowed`.
fn user_response(
    user: &DirectoryUser,
    base: &str,
    entity_set: &str,
    select: Option<&[&'static str]>,
    allowed: Option<&[&str]>,
    odata_type: bool,
) -> Value {
    let wanted: Vec<&str> = select
        .map(<[&str]>::to_vec)
        .unwrap_or_else(|| DEFAULT_PROPERTIES.to_vec())
        .into_iter()
        .filter(|p| allowed.is_none_or(|a| a.contains(p)))
        .collect();
    let mut object = Map::new();
    object.insert("@odata.context".into(), context(base, entity_set, select).into());
    if odata_type {
        object.insert("@odata.type".into(), "#microsoft.graph.user".into());
    }
    object.extend(user.object(&wanted));
    Value::Object(object)
}

fn ok(ids: &RequestIds, body: &Value) -> Response {
    let mut response = (StatusCode::OK, json_body(body)).into_response();
    ids.apply(&mut response);
    response
}

async fn me(
    State(graph): State<Graph>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let ids = RequestIds::new(&headers);
    let answer = async {
        let principal = authenticate(&graph, &method, &headers).await?;
        let select = parse_select(query.as_deref())?;
        let user = signed_in(&graph, &principal)?;
        Ok::<_, GraphFailure>(user_response(
            user,
            &base_url(&graph, &headers),
            "users",
            select.as_deref(),
            None,
            false,
        ))
    };
    match answer.await {
        Ok(body) => ok(&ids, &body),
        Err(failure) => failure.into_response(&graph, &ids),
    }
}

async fn my_manager(
    State(graph): State<Graph>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let ids = RequestIds::new(&headers);
    let answer = async {
        let principal = authenticate(&graph, &method, &headers).await?;
        let select = parse_select(query.as_deref())?;
        let user = signed_in(&graph, &principal)?;
        let manager = user
            .manager
            .and_then(|id| directory::find(graph.tenant(), id))
            .ok_or_else(|| GraphFailure::not_found("manager"))?;
        Ok::<_, GraphFailure>(user_response(
            manager,
            &base_url(&graph, &headers),
            "directoryObjects",
            select.as_deref(),
            None,
            true,
        ))
    };
    match answer.await {
        Ok(body) => ok(&ids, &body),
        Err(failure) => failure.into_response(&graph, &ids),
    }
}

async fn user_by_id(
    State(graph): State<Graph>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let ids = RequestIds::new(&headers);
    let answer = async {
        let principal = authenticate(&graph, &method, &headers).await?;
        let select = parse_select(query.as_deref())?;
        let target = directory::find(graph.tenant(), id.trim());
        let allowed: Option<&[&str]> = match &principal {
            Principal::App => None,
            Principal::User { oid, read_all, read_basic } => {
                let is_self = target.is_some_and(|t| t.id.eq_ignore_ascii_case(oid));
                if is_self || *read_all {
                    None
                } else if *read_basic {
                    Some(&BASIC_PROPERTIES)
                } else {
                    // Graph checks permissions before looking the user up: with User.Read alone,
                    // another user is 403 whether or not they exist.
                    return Err(GraphFailure::denied());
                }
            }
        };
        let Some(target) = target else {
            let shown: String =
                id.chars().filter(|c| c.is_ascii_alphanumeric() || "-@._".contains(*c)).take(128).collect();
            return Err(GraphFailure::not_found(&shown));
        };
        Ok::<_, GraphFailure>(user_response(
            target,
            &base_url(&graph, &headers),
            "users",
            select.as_deref(),
            allowed,
            false,
        ))
    };
    match answer.await {
        Ok(body) => ok(&ids, &body),
        Err(failure) => failure.into_response(&graph, &ids),
    }
}

async fn unknown(State(graph): State<Graph>, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    graph.count_request();
    let ids = RequestIds::new(&headers);
    let segment: String = uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .rfind(|s| !s.is_empty() && *s != "v1.0")
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-._$".contains(*c))
        .take(64)
        .collect();
    let failure = if uri.path().starts_with("/v1.0/") || uri.path() == "/v1.0" {
        GraphFailure::bad_request(format!("Resource not found for the segment '{segment}'."))
    } else {
        GraphFailure::bad_request("Invalid version.")
    };
    failure.into_response(&graph, &ids)
}
