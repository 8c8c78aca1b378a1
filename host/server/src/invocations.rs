//! `POST /invocations`.

use crate::errors::{ApiError, ErrorResponse, body_for};
use crate::{
    AGENTCORE_PLUGIN_HEADER, AppState, AuthRejection, INVOCATION_ID_HEADER, PLUGIN_HEADER,
    PLUGIN_VERSION_HEADER, REQUEST_ID_HEADER, SESSION_ID_HEADER,
};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use delegate_runtime::{Invocation, InvocationEvent, InvocationRequest};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Visible ASCII, no spaces: safe to log and echo.
fn visible_ascii(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=256).contains(&v.len()) && visible_ascii(v))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

fn session_id(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(SESSION_ID_HEADER).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(ApiError::InvalidSessionId);
    }
    let v = value.to_str().map_err(|_| ApiError::InvalidSessionId)?;
    if !(33..=256).contains(&v.len()) || !visible_ascii(v) {
        return Err(ApiError::InvalidSessionId);
    }
    Ok(Some(v.to_owned()))
}

/// The plugin the request names, if it names one (either header, not both with different
/// values).
fn requested_plugin(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut named = None;
    for name in [PLUGIN_HEADER, AGENTCORE_PLUGIN_HEADER] {
        for value in headers.get_all(name) {
            let v = value.to_str().map_err(|_| ApiError::InvalidPluginName)?;
            let ok = (1..=64).contains(&v.len())
                && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok || named.as_deref().is_some_and(|n: &str| n != v) {
                return Err(ApiError::InvalidPluginName);
            }
            named = Some(v.to_owned());
        }
    }
    Ok(named)
}

/// Whether the client asked for one JSON answer instead of an event stream.
fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    accept.contains("application/json") && !accept.contains("text/event-stream")
}

pub(crate) async fn invoke(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let rid = request_id(request.headers());
    match handle(&state, request, &rid).await {
        Ok(mut resp) => {
            if let Ok(v) = HeaderValue::from_str(&rid) {
                resp.headers_mut().insert(REQUEST_ID_HEADER, v);
            }
            resp
        }
        Err(error) => {
            let mut resp = ErrorResponse { error, request_id: Some(rid.clone()) }.into_response();
            if let Ok(v) = HeaderValue::from_str(&rid) {
                resp.headers_mut().insert(REQUEST_ID_HEADER, v);
            }
            resp
        }
    }
}

async fn handle(state: &Arc<AppState>, request: Request, rid: &str) -> Result<Response, ApiError> {
    if state.draining.load(Ordering::SeqCst) {
        return Err(ApiError::ShuttingDown);
    }
    let (parts, body) = request.into_parts();
    let session = session_id(&parts.headers)?;
    let plugin_name = requested_plugin(&parts.headers)?;

    // Authorization comes before reading the body and long before any plugin code.
    let authorizing = std::time::Instant::now();
    let authorized = state.authorizer.authorize(&parts.headers).await;
    let outcome = match &authorized {
        Ok(_) => "ok",
        Err(AuthRejection::Unauthenticated { .. }) => "unauthenticated",
        Err(AuthRejection::Forbidden { .. }) => "forbidden",
        Err(AuthRejection::Unavailable { .. }) => "unavailable",
        Err(AuthRejection::ChainTooDeep { .. }) => "chain_depth_exceeded",
        Err(AuthRejection::InvalidHop { .. }) => "invalid_hop",
    };
    state.metrics.record_authorization(outcome, authorizing.elapsed());
    let caller = authorized.map_err(|r| {
        tracing::info!(request_id = rid, rejection = ?r, "request not authorized");
        match r {
            AuthRejection::Unauthenticated { .. } => ApiError::Unauthenticated,
            AuthRejection::Forbidden { insufficient_scope, .. } => ApiError::Forbidden { insufficient_scope },
            AuthRejection::Unavailable { .. } => ApiError::AuthUnavailable,
            AuthRejection::ChainTooDeep { depth, max } => ApiError::ChainTooDeep { depth, max },
            AuthRejection::InvalidHop { .. } => ApiError::InvalidHop,
        }
    })?;

    let limit = state.options.max_body_bytes;
    let bytes = axum::body::to_bytes(Body::new(body), limit).await.map_err(|e| {
        if is_length_limit(&e) { ApiError::PayloadTooLarge { limit } } else { ApiError::BodyRead }
    })?;
    let payload = String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::InvalidEncoding)?;
    if serde_json::from_str::<serde::de::IgnoredAny>(&payload).is_err() {
        return Err(ApiError::InvalidJson);
    }

    // The version is fixed here: a deploy or rollback from now on affects later requests only.
    let plugin = match &plugin_name {
        Some(name) => state.plugins.active(name),
        None => state.plugins.default_plugin(),
    }
    .ok_or(ApiError::PluginNotFound)?;
    let permit =
        state.load.try_acquire().ok_or(ApiError::Busy { retry_after: state.options.retry_after_seconds })?;
    let invocation_id = rid.to_owned();
    // W3C trace context: continue the caller's trace (an agent host upstream sets it), or
    // start one when the header is missing or malformed; never an error.
    let (trace, ignored) = delegate_egress::TraceContext::from_headers(&parts.headers);
    if let Some(why) = ignored {
        tracing::debug!(request_id = rid, reason = %why, "inbound traceparent ignored; new trace started");
    }
    let mut invocation = plugin.invoke_traced(
        InvocationRequest {
            caller,
            invocation_id: invocation_id.clone(),
            session_id: session,
            payload,
            guard: Some(Box::new(permit)),
        },
        trace,
    );
    let plugin_tag = format!("{}@{}", plugin.name(), plugin.digest());

    let mut resp = if wants_json(&parts.headers) {
        json_answer(&mut invocation, &invocation_id).await?
    } else {
        // Hold the headers until the first event: a failure before any output gets a real
        // status code; after that, the status is 200 and errors travel as the final event.
        let first = invocation.next().await;
        if let Some(InvocationEvent::Finished(Err(e))) = first {
            return Err(ApiError::Invocation(e));
        }
        sse_answer(first, invocation, invocation_id.clone())
    };
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&invocation_id) {
        headers.insert(INVOCATION_ID_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&plugin_tag) {
        headers.insert(PLUGIN_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(plugin.version()) {
        headers.insert(PLUGIN_VERSION_HEADER, v);
    }
    Ok(resp)
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

async fn json_answer(invocation: &mut Invocation, invocation_id: &str) -> Result<Response, ApiError> {
    let mut text = String::new();
    while let Some(event) = invocation.next().await {
        match event {
            InvocationEvent::Text(t) => text.push_str(&t),
            InvocationEvent::Finished(Ok(outcome)) => {
                let body = serde_json::json!({
                    "response": text,
                    "result": outcome.result,
                    "status": "success",
                    "invocation_id": invocation_id,
                });
                return Ok(axum::Json(body).into_response());
            }
            InvocationEvent::Finished(Err(e)) => return Err(ApiError::Invocation(e)),
        }
    }
    Err(ApiError::Invocation(delegate_runtime::InvocationError::PluginTrap(
        "invocation ended without a result".into(),
    )))
}

/// `value` as compact JSON, serialized into one buffer (what `Value::to_string` gives).
fn json_text(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn event_for(event: InvocationEvent, invocation_id: &str) -> Event {
    match event {
        // A text chunk is a JSON string, as bedrock-agentcore's SDK sends yielded strings.
        // `to_string` of a `Value` would go through `fmt` a token at a time: this is per event.
        InvocationEvent::Text(t) => Event::default().data(json_text(&t)),
        InvocationEvent::Finished(Ok(outcome)) => Event::default().data(
            json_text(&serde_json::json!({ "result": outcome.result, "status": "success", "invocation_id": invocation_id })),
        ),
        InvocationEvent::Finished(Err(e)) => {
            let error = ApiError::Invocation(e);
            let mut body = body_for(&error, Some(invocation_id));
            body["message"] = "An error occurred during streaming".into();
            Event::default().data(body.to_string())
        }
    }
}

fn sse_answer(first: Option<InvocationEvent>, invocation: Invocation, invocation_id: String) -> Response {
    let stream = futures::stream::unfold(
        (first, invocation, invocation_id, false),
        |(pending, mut inv, id, done)| async move {
            if done {
                return None;
            }
            let event = match pending {
                Some(e) => Some(e),
                None => inv.next().await,
            };
            let mut event = event?;
            // Text already queued behind this one goes out in the same SSE event: the caller
            // reads the same text with fewer socket writes and wake-ups, and nothing is held
            // back waiting for more (only what is ready is merged). A `Finished` event found
            // while merging is kept for the next round.
            let mut next = None;
            if let InvocationEvent::Text(text) = &mut event {
                while let Some(more) = inv.try_next() {
                    match more {
                        InvocationEvent::Text(t) => text.push_str(&t),
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
            }
            let finished = matches!(event, InvocationEvent::Finished(_));
            let sse = event_for(event, &id);
            Some((Ok::<_, Infallible>(sse), (next, inv, id, finished)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}
