//! Hostile outbound HTTP, written against raw `wasi:http` so each mode controls exactly what
//! is written, finished, read or left open.

use delegate_sdk::PluginError;
use delegate_sdk::bindings::wasi::clocks::monotonic_clock;
use delegate_sdk::bindings::wasi::http::outgoing_handler;
use delegate_sdk::bindings::wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, Method, OutgoingBody,
    OutgoingRequest, Scheme, http_error_code,
};
use delegate_sdk::bindings::wasi::io::streams::{InputStream, StreamError};
use serde_json::{Value, json};

fn refused(message: impl std::fmt::Display) -> PluginError {
    PluginError::new("egress_refused", format!("egress_refused {message}"))
}

/// An outgoing request to `url` (`http://authority/path` only: the tests use loopback).
fn request(method: &Method, url: &str) -> Result<OutgoingRequest, PluginError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| PluginError::new("bad_request", "http:// URL"))?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let req = OutgoingRequest::new(Fields::new());
    let bad = |()| PluginError::new("bad_request", format!("URL rejected: {url}"));
    req.set_method(method).map_err(bad)?;
    req.set_scheme(Some(&Scheme::Http)).map_err(bad)?;
    req.set_authority(Some(authority)).map_err(bad)?;
    req.set_path_with_query(Some(path)).map_err(bad)?;
    Ok(req)
}

/// Sends `req`; the body is returned unfinished.
fn start(req: OutgoingRequest) -> Result<(OutgoingBody, FutureIncomingResponse), PluginError> {
    let body = req.body().map_err(|()| refused("request body unavailable"))?;
    let future = outgoing_handler::handle(req, None).map_err(|e| refused(format!("at handle: {e:?}")))?;
    Ok((body, future))
}

fn wait(future: &FutureIncomingResponse) -> Result<IncomingResponse, ErrorCode> {
    future.subscribe().block();
    match future.get() {
        Some(Ok(r)) => r,
        Some(Err(())) | None => Err(ErrorCode::InternalError(Some("response unavailable".into()))),
    }
}

fn stream_error(e: &StreamError) -> String {
    match e {
        StreamError::Closed => "closed".into(),
        StreamError::LastOperationFailed(io) => match http_error_code(io) {
            Some(code) => format!("{code:?}"),
            // wasmtime-wasi-http 48 reports body errors as its own error type, which
            // `http-error-code` does not recognise; the first line of the text names it (the
            // rest may be a host backtrace).
            None => io.to_debug_string().lines().next().unwrap_or("").to_owned(),
        },
    }
}

/// Reads `stream` to its end: bytes read and the error that ended it early, if any.
fn drain(stream: &InputStream) -> (usize, Option<String>) {
    let mut n = 0;
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(bytes) => n += bytes.len(),
            Err(StreamError::Closed) => return (n, None),
            Err(e) => return (n, Some(stream_error(&e))),
        }
    }
}

fn url(v: &Value) -> String {
    v.get("url").and_then(Value::as_str).unwrap_or("http://127.0.0.1:9/").to_owned()
}

fn get_u64(v: &Value, key: &str, default: u64) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(default)
}

/// `flood`: many requests in a row.
pub fn flood(v: &Value) -> Result<String, PluginError> {
    let url = url(v);
    let count = get_u64(v, "count", 5000);
    let keep_going = v.get("keep_going").and_then(Value::as_bool).unwrap_or(false);
    let (mut ok, mut failed, mut first_error) = (0u64, 0u64, None::<String>);
    for _ in 0..count {
        match delegate_sdk::http::Request::get(&url).send() {
            Ok(_) => ok += 1,
            Err(e) if !keep_going => return Err(refused(format!("after {ok} requests: {e}"))),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Ok(json!({"ok": ok, "failed": failed, "first_error": first_error}).to_string())
}

/// `big-request`: a request body bigger than the budget.
pub fn big_request(v: &Value) -> Result<String, PluginError> {
    let kib = get_u64(v, "kib", 1024);
    let (body, future) = start(request(&Method::Post, &url(v))?)?;
    let mut written = 0u64;
    let mut write_error = None;
    {
        let stream = body.write().map_err(|()| refused("request body stream unavailable"))?;
        let chunk = vec![b'b'; 4096];
        while written < kib << 10 {
            if let Err(e) = stream.blocking_write_and_flush(&chunk) {
                write_error = Some(stream_error(&e));
                break;
            }
            written += chunk.len() as u64;
        }
    }
    let finished = OutgoingBody::finish(body, None).err().map(|e| format!("{e:?}"));
    let answer = match wait(&future) {
        Ok(r) => format!("status {}", r.status()),
        Err(code) => format!("{code:?}"),
    };
    Err(refused(format!(
        "request body: wrote {written} of {} bytes (write error {write_error:?}, finish error {finished:?}); response: {answer}",
        kib << 10
    )))
}

/// `big-response`: reads a body bigger than the budget.
pub fn big_response(v: &Value) -> Result<String, PluginError> {
    let (body, future) = start(request(&Method::Get, &url(v))?)?;
    OutgoingBody::finish(body, None).map_err(|e| refused(format!("finish: {e:?}")))?;
    let resp = wait(&future).map_err(|code| refused(format!("no response: {code:?}")))?;
    let incoming = resp.consume().map_err(|()| refused("response body unavailable"))?;
    let (n, error) = {
        let stream = incoming.stream().map_err(|()| refused("response stream unavailable"))?;
        drain(&stream)
    };
    drop(IncomingBody::finish(incoming));
    match error {
        Some(e) => Err(refused(format!("response cut after {n} bytes: {e}"))),
        None => Ok(n.to_string()),
    }
}

/// `slowloris`: a request body that never ends.
pub fn slowloris(v: &Value) -> Result<String, PluginError> {
    let kib = get_u64(v, "kib", 1);
    let (body, future) = start(request(&Method::Post, &url(v))?)?;
    let stream = body.write().map_err(|()| refused("request body stream unavailable"))?;
    let chunk = vec![b's'; 1024];
    for _ in 0..kib {
        stream
            .blocking_write_and_flush(&chunk)
            .map_err(|e| refused(format!("write: {}", stream_error(&e))))?;
    }
    // The body is never finished (stream and body stay alive): only a host limit ends this.
    let answer = wait(&future);
    drop(stream);
    drop(body);
    Err(refused(format!("slowloris answered: {:?}", answer.map(|r| r.status()))))
}

/// `hold-body`: a response body left unread.
pub fn hold_body(v: &Value) -> Result<String, PluginError> {
    let (body, future) = start(request(&Method::Get, &url(v))?)?;
    OutgoingBody::finish(body, None).map_err(|e| refused(format!("finish: {e:?}")))?;
    let resp = wait(&future).map_err(|code| refused(format!("no response: {code:?}")))?;
    let incoming = resp.consume().map_err(|()| refused("response body unavailable"))?;
    let stream = incoming.stream().map_err(|()| refused("response stream unavailable"))?;
    monotonic_clock::subscribe_duration(get_u64(v, "wait_ms", 3_600_000) * 1_000_000).block();
    let (read, read_error) = drain(&stream);
    drop(stream);
    drop(IncomingBody::finish(incoming));
    let (mut again_status, mut again_error) = (None, None);
    if let Some(again) = v.get("again").and_then(Value::as_str) {
        match delegate_sdk::http::Request::get(again).send() {
            Ok(r) => again_status = Some(r.status),
            Err(e) => again_error = Some(e.to_string()),
        }
    }
    Ok(json!({"read": read, "read_error": read_error, "again_status": again_status, "again_error": again_error})
        .to_string())
}

/// `trap-mid-request`: panics while a request body is being sent.
pub fn trap_mid_request(v: &Value) -> Result<String, PluginError> {
    let (body, _future) = start(request(&Method::Post, &url(v))?)?;
    let stream = body.write().map_err(|()| refused("request body stream unavailable"))?;
    stream.blocking_write_and_flush(&[b't'; 1024]).map_err(|e| refused(stream_error(&e)))?;
    panic!("hostile plugin trapped with a request body in flight");
}

/// `trap-mid-response`: panics while a response body is streaming in.
pub fn trap_mid_response(v: &Value) -> Result<String, PluginError> {
    let (body, future) = start(request(&Method::Get, &url(v))?)?;
    OutgoingBody::finish(body, None).map_err(|e| refused(format!("finish: {e:?}")))?;
    let resp = wait(&future).map_err(|code| refused(format!("no response: {code:?}")))?;
    let incoming = resp.consume().map_err(|()| refused("response body unavailable"))?;
    let stream = incoming.stream().map_err(|()| refused("response stream unavailable"))?;
    let first = stream.blocking_read(64 * 1024).map_err(|e| refused(stream_error(&e)))?;
    panic!("hostile plugin trapped after {} bytes of a streaming response", first.len());
}
