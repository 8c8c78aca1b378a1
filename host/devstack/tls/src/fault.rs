//! Fault injection shared by every devstack stand-in: one [`FaultSwitch`] per server, read by
//! a middleware in front of its router (answers, delays, broken bodies) and by its accept loop
//! (connection refused).
//!
//! A switch starts at [`Fault::Pass`], so a server started with one behaves exactly like one
//! started without. Tests flip it at run time:
//!
//! ```no_run
//! # async fn demo(switch: delegate_devstack_tls::FaultSwitch) {
//! use delegate_devstack_tls::{Fault, FaultFilter};
//! use std::time::Duration;
//! // Every request is held for 5 s before it is served.
//! switch.set(Fault::Delay(Duration::from_secs(5)));
//! // The next PATCH whose path contains this sys_id loses its body after 20 bytes.
//! switch.set_for(FaultFilter::method("PATCH").path("/incident/4a1b"), Fault::ResetAfter(20), Some(1));
//! // Connection refused until the next change.
//! switch.set(Fault::Refuse);
//! switch.settled().await; // listener closed, open connections dropped
//! switch.set(Fault::Pass);
//! switch.settled().await; // listening again, on the same port
//! # }
//! ```

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::Frame;
use tokio::sync::watch;

/// How long a broken body waits after its last good bytes before the connection is dropped,
/// so that the head and those bytes are flushed to the client first.
const FLUSH_PAUSE: Duration = Duration::from_millis(20);

/// The truncated document [`Fault::MalformedJson`] answers with.
pub const MALFORMED_JSON: &str = r#"{"result":[{"number":"INC00"#;

/// What the server does with the requests a [`FaultSwitch`] selects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Serve normally.
    #[default]
    Pass,
    /// Connection refused: the listener is closed and open connections are dropped, until
    /// the switch is set to anything else (then the server listens on the same port again).
    /// Applies to the whole server whatever the filter and count say.
    Refuse,
    /// Hold the request this long, then serve it normally. The handler runs even if the
    /// client gave up meanwhile (a slow server still finishes its work, e.g. commits a write).
    Delay(Duration),
    /// Answer with this status, headers and body instead of running the handler.
    Status {
        /// HTTP status.
        status: u16,
        /// Extra headers (e.g. `retry-after`, `content-type`, `x-amzn-errortype`).
        headers: Vec<(String, String)>,
        /// The body.
        body: String,
    },
    /// Run the handler, send its head (with its full `Content-Length`) and the first `n` bytes
    /// of its body (at most all but one), then drop the connection without a TLS close_notify.
    ResetAfter(usize),
    /// Run the handler and keep its status and headers, but answer `application/json` with a
    /// truncated document ([`MALFORMED_JSON`]).
    MalformedJson,
    /// Run the handler and keep its status and body, but with `Content-Type: text/html`.
    WrongContentType,
}

impl Fault {
    /// [`Fault::Status`] without a body or extra headers.
    pub fn status(status: u16) -> Fault {
        Fault::Status { status, headers: Vec::new(), body: String::new() }
    }
}

/// Which requests a fault applies to (every one by default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultFilter {
    method: Option<String>,
    path_contains: Option<String>,
}

impl FaultFilter {
    /// Only requests with this method.
    pub fn method(method: &str) -> FaultFilter {
        FaultFilter { method: Some(method.to_ascii_uppercase()), path_contains: None }
    }

    /// Only requests whose path contains `fragment`.
    pub fn path_contains(fragment: &str) -> FaultFilter {
        FaultFilter { method: None, path_contains: Some(fragment.to_owned()) }
    }

    /// This filter, also requiring the path to contain `fragment`.
    #[must_use]
    pub fn path(mut self, fragment: &str) -> FaultFilter {
        self.path_contains = Some(fragment.to_owned());
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self.path_contains.as_deref().is_none_or(|p| path.contains(p))
    }
}

#[derive(Debug, Default)]
struct Plan {
    fault: Fault,
    filter: FaultFilter,
    /// Requests it still applies to (`None`: until changed).
    remaining: Option<u32>,
}

#[derive(Debug)]
struct Inner {
    plan: Mutex<Plan>,
    /// Whether the server should refuse connections.
    refusing: watch::Sender<bool>,
    /// Whether the server's listener is bound, and how many connections are open.
    listening: watch::Sender<(bool, usize)>,
    applied: AtomicU64,
}

/// The fault switch of one server. Cloning shares it; one switch belongs to one server.
#[derive(Clone, Debug)]
pub struct FaultSwitch(Arc<Inner>);

impl Default for FaultSwitch {
    fn default() -> Self {
        Self::new()
    }
}

impl FaultSwitch {
    /// A switch at [`Fault::Pass`].
    pub fn new() -> FaultSwitch {
        FaultSwitch(Arc::new(Inner {
            plan: Mutex::new(Plan::default()),
            refusing: watch::channel(false).0,
            listening: watch::channel((false, 0)).0,
            applied: AtomicU64::new(0),
        }))
    }

    fn plan(&self) -> MutexGuard<'_, Plan> {
        // A panicking test thread must not wedge the server for the others.
        self.0.plan.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `fault` to every request until changed.
    pub fn set(&self, fault: Fault) {
        self.set_for(FaultFilter::default(), fault, None);
    }

    /// Applies `fault` to the requests `filter` selects: the next `times` of them, or every
    /// one until changed (`None`). Requests it does not apply to are served normally.
    pub fn set_for(&self, filter: FaultFilter, fault: Fault, times: Option<u32>) {
        let refuse = fault == Fault::Refuse;
        *self.plan() = Plan { fault, filter, remaining: times };
        self.0.refusing.send_if_modified(|r| std::mem::replace(r, refuse) != refuse);
    }

    /// Back to normal service ([`Fault::Pass`]).
    pub fn clear(&self) {
        self.set(Fault::Pass);
    }

    /// How many requests a fault was applied to (refused connections are not requests).
    pub fn applied(&self) -> u64 {
        self.0.applied.load(Ordering::Relaxed)
    }

    /// Waits until the server's connections reflect the switch: for [`Fault::Refuse`], the
    /// listener is closed and every open connection dropped; otherwise it listens.
    pub async fn settled(&self) {
        let refusing = *self.0.refusing.borrow();
        let mut rx = self.0.listening.subscribe();
        let _ = rx
            .wait_for(|&(listening, open)| if refusing { !listening && open == 0 } else { listening })
            .await;
    }

    /// The fault for one request, counting it down.
    fn take(&self, method: &str, path: &str) -> Option<Fault> {
        let mut plan = self.plan();
        if matches!(plan.fault, Fault::Pass | Fault::Refuse) || !plan.filter.matches(method, path) {
            return None;
        }
        match &mut plan.remaining {
            Some(0) => return None,
            Some(n) => *n -= 1,
            None => {}
        }
        self.0.applied.fetch_add(1, Ordering::Relaxed);
        Some(plan.fault.clone())
    }

    /// `router` with this switch's middleware in front of every route.
    pub fn wrap(&self, router: axum::Router) -> axum::Router {
        router.layer(axum::middleware::from_fn_with_state(self.clone(), middleware))
    }

    pub(crate) fn refusing(&self) -> watch::Receiver<bool> {
        self.0.refusing.subscribe()
    }

    pub(crate) fn set_listening(&self, listening: bool) {
        self.0.listening.send_modify(|s| s.0 = listening);
    }

    /// Counts an open connection until the guard is dropped.
    pub(crate) fn connection(&self) -> ConnectionGuard {
        self.0.listening.send_modify(|s| s.1 += 1);
        ConnectionGuard(self.clone())
    }
}

/// Decrements the switch's open-connection count when dropped.
pub(crate) struct ConnectionGuard(FaultSwitch);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.0.listening.send_modify(|s| s.1 = s.1.saturating_sub(1));
    }
}

async fn middleware(State(switch): State<FaultSwitch>, request: Request, next: Next) -> Response {
    let Some(fault) = switch.take(request.method().as_str(), request.uri().path()) else {
        return next.run(request).await;
    };
    match fault {
        Fault::Pass | Fault::Refuse => next.run(request).await,
        Fault::Delay(delay) => {
            // In its own task, so that the work finishes even if the client hangs up.
            let work = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                next.run(request).await
            });
            work.await.unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR))
        }
        Fault::Status { status, headers, body } => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            for (name, value) in headers {
                if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
                    response.headers_mut().append(name, value);
                }
            }
            response
        }
        Fault::ResetAfter(n) => {
            let (mut parts, body) = next.run(request).await.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
                return plain(StatusCode::INTERNAL_SERVER_ERROR);
            };
            let cut = n.min(bytes.len().saturating_sub(1));
            // The full length is announced, so the client knows the body was cut short.
            parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len().max(1)));
            parts.headers.remove(header::TRANSFER_ENCODING);
            let body = Truncated { head: Some(bytes.slice(..cut)), pause: None };
            Response::from_parts(parts, Body::new(body))
        }
        Fault::MalformedJson => {
            let (mut parts, _) = next.run(request).await.into_parts();
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.remove(header::TRANSFER_ENCODING);
            parts.headers.remove(header::CONTENT_ENCODING);
            parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Response::from_parts(parts, Body::from(MALFORMED_JSON))
        }
        Fault::WrongContentType => {
            let mut response = next.run(request).await;
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            response
        }
    }
}

fn plain(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

/// A body that yields its head, pauses (so it is flushed), then fails: the server drops the
/// connection in the middle of the announced length.
struct Truncated {
    head: Option<Bytes>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for Truncated {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(head) = self.head.take()
            && !head.is_empty()
        {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        let pause = self.pause.get_or_insert_with(|| Box::pin(tokio::time::sleep(FLUSH_PAUSE)));
        match pause.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "devstack fault: connection reset mid-body",
            )))),
        }
    }
}
