//! A small blocking HTTP client over `wasi:http/outgoing-handler`.
//!
//! Requests carry no credentials: the host matches each one against the operator's egress rules,
//! attaches the user's delegated token where a rule says so, and refuses everything else
//! (the call then fails with [`HttpError::Denied`]).

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;

/// An outgoing request.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A received response, body read to the end.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response headers, in order.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The URL could not be parsed.
    InvalidUrl(String),
    /// A header was refused (for example `authorization`: the host attaches credentials).
    Header(String),
    /// The host's egress policy denied the request.
    Denied,
    /// Any other transport error, as reported by the host.
    Transport(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidUrl(u) => write!(f, "invalid URL: {u}"),
            Self::Header(h) => write!(f, "header refused: {h}"),
            Self::Denied => f.write_str("request denied by the host's egress policy"),
            Self::Transport(e) => write!(f, "transport error: {e}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl Request {
    /// A request with any method.
    pub fn new(method: &str, url: &str) -> Self {
        Self { method: method.to_owned(), url: url.to_owned(), headers: Vec::new(), body: Vec::new() }
    }

    /// A GET request.
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends the request and reads the whole response.
    pub fn send(self) -> Result<Response, HttpError> {
        let parts = split_url(&self.url)?;
        let entries: Vec<(String, Vec<u8>)> =
            self.headers.iter().map(|(k, v)| (k.clone(), v.as_bytes().to_vec())).collect();
        let fields = Fields::from_list(&entries).map_err(|e| HttpError::Header(format!("{e:?}")))?;
        let req = OutgoingRequest::new(fields);
        let method = match self.method.as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        };
        let bad = |what: &str| HttpError::InvalidUrl(format!("{what} rejected: {}", self.url));
        req.set_method(&method).map_err(|()| bad("method"))?;
        req.set_scheme(Some(&parts.scheme)).map_err(|()| bad("scheme"))?;
        req.set_authority(Some(&parts.authority)).map_err(|()| bad("authority"))?;
        req.set_path_with_query(Some(&parts.path_and_query)).map_err(|()| bad("path"))?;
        let out_body = req.body().map_err(|()| HttpError::Transport("request body".into()))?;
        let future = outgoing_handler::handle(req, None).map_err(map_code)?;
        {
            let stream = out_body.write().map_err(|()| HttpError::Transport("request body stream".into()))?;
            for chunk in self.body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| HttpError::Transport(format!("writing request body: {e:?}")))?;
            }
        }
        OutgoingBody::finish(out_body, None).map_err(map_code)?;
        future.subscribe().block();
        let incoming = match future.get() {
            Some(Ok(Ok(resp))) => resp,
            Some(Ok(Err(code))) => return Err(map_code(code)),
            Some(Err(())) | None => return Err(HttpError::Transport("response unavailable".into())),
        };
        let status = incoming.status();
        let headers = incoming
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let body_res = incoming.consume().map_err(|()| HttpError::Transport("response body".into()))?;
        let mut body = Vec::new();
        {
            let stream = body_res.stream().map_err(|()| HttpError::Transport("response stream".into()))?;
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(bytes) => body.extend_from_slice(&bytes),
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(HttpError::Transport(e.to_debug_string()));
                    }
                }
            }
        }
        let _trailers = IncomingBody::finish(body_res);
        Ok(Response { status, headers, body })
    }
}

impl Response {
    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn map_code(code: ErrorCode) -> HttpError {
    match code {
        ErrorCode::HttpRequestDenied => HttpError::Denied,
        other => HttpError::Transport(format!("{other:?}")),
    }
}

struct UrlParts {
    scheme: Scheme,
    authority: String,
    path_and_query: String,
}

fn split_url(url: &str) -> Result<UrlParts, HttpError> {
    let invalid = || HttpError::InvalidUrl(url.to_owned());
    let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(invalid()),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(invalid());
    }
    let path_and_query = if path.starts_with('?') { format!("/{path}") } else { path.to_owned() };
    Ok(UrlParts { scheme, authority: authority.to_owned(), path_and_query })
}
