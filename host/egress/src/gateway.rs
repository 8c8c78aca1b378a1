//! [`EgressGateway`]: the whole egress path for one plugin request, in one call.
//!
//! decide (policy + header rules) → budget → Token B from the vault → send the canonical URL
//! with `Authorization: Bearer` (and, on a hop to another agent host, the signed hop counter)
//! through the shared pooled client → on 401 evict and retry once
//! with a fresh token → scrub response headers and body, drop `set-cookie` → meter response bytes → one audit
//! line (written when the response body ends or is dropped, so it carries bytes and duration).
//!
//! The runtime's `WasiHttpHooks::send_request` collects the guest's request body (bounded by
//! the budget; a body is needed twice for the 401 retry anyway), calls
//! [`EgressGateway::send`], and hands the returned body to the guest:
//!
//! ```ignore
//! fn send_request(&mut self, request: http::Request<WasiBody>, _: Option<RequestOptions>, _: IoFuture) -> SendFuture {
//!     let (gateway, inv, failure) = (self.gateway.clone(), self.egress.clone(), self.vault_failure.clone());
//!     Box::new(async move {
//!         let (parts, body) = request.into_parts();
//!         let room = inv.budget.limits().max_request_bytes.saturating_sub(inv.budget.request_bytes());
//!         let body = http_body_util::Limited::new(body, room as usize).collect().await
//!             .map_err(|_| HttpError::HttpRequestDenied)?.to_bytes();
//!         match gateway.send(&inv, http::Request::from_parts(parts, body)).await {
//!             Ok(response) => Ok((response.map(|b| b.map_err(to_wasi_error).boxed_unsync()), Box::new(async { Ok(()) }) as IoFuture)),
//!             Err(EgressError::Credential(e)) => {
//!                 // The invocation's answer: e.status(), e.code(), e.www_authenticate().
//!                 failure.lock().unwrap().get_or_insert(e);
//!                 Err(HttpError::HttpRequestDenied)
//!             }
//!             Err(EgressError::Denied(_) | EgressError::Budget(_)) => Err(HttpError::HttpRequestDenied),
//!             Err(EgressError::Upstream("upstream_timeout")) => Err(HttpError::ConnectionTimeout),
//!             Err(EgressError::Upstream(_)) => Err(HttpError::ConnectionRefused),
//!         }
//!     })
//! }
//! ```

use crate::audit::{AuditContext, AuditRecord, AuditSink, CacheOutcome};
use crate::budget::{BudgetExceeded, EgressBudget};
use crate::policy::{Decision, DenyReason, EgressPolicy, Target};
use crate::scrub::{ScrubbedBody, Scrubber};
use bytes::Bytes;
use delegate_auth::{HopKey, VerifiedCaller};
use delegate_secret::Secret;
use delegate_vault::{CacheStatus, TokenVault, VaultError};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Why a plugin request did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The policy refused it (tell the guest `HTTP-request-denied`).
    #[error("egress denied: {0}")]
    Denied(DenyReason),
    /// A per-invocation cap was reached.
    #[error("egress budget exceeded: {0}")]
    Budget(BudgetExceeded),
    /// The vault could not provide the credential. The invocation should end with
    /// [`VaultError::status`]/[`VaultError::code`] (e.g. 403 `consent_required`), so the caller
    /// learns what to do; the guest only sees `HTTP-request-denied`.
    #[error("credential unavailable: {0}")]
    Credential(VaultError),
    /// The downstream could not be reached or did not answer in time.
    #[error("downstream request failed: {0}")]
    Upstream(&'static str),
}

impl EgressError {
    /// A stable code for audit records and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Denied(r) => r.code(),
            Self::Budget(b) => b.code(),
            Self::Credential(v) => v.code(),
            Self::Upstream(cause) => cause,
        }
    }
}

/// Everything about one invocation the gateway needs; built once per invocation.
#[derive(Clone, Debug)]
pub struct InvocationEgress {
    /// The plugin's validated rules.
    pub policy: Arc<EgressPolicy>,
    /// The verified caller (its token is the OBO assertion and is scrubbed from responses).
    pub caller: Arc<VerifiedCaller>,
    /// Audit identity fields.
    pub audit: AuditContext,
    /// This invocation's caps, shared by its concurrent requests.
    pub budget: Arc<EgressBudget>,
}

/// The egress path shared by all invocations: vault, pooled client, audit sink.
#[derive(Clone, Debug)]
pub struct EgressGateway {
    vault: Arc<TokenVault>,
    client: reqwest::Client,
    sink: Arc<AuditSink>,
    metrics: Option<Arc<delegate_metrics::Metrics>>,
    hop_key: Option<HopKey>,
}

/// Headers the host never forwards from a guest: hop-by-hop headers, and framing the client
/// recomputes for the body it actually sends.
fn is_dropped_request_header(name: &http::HeaderName) -> bool {
    use http::header::*;
    [HOST, CONNECTION, TRANSFER_ENCODING, UPGRADE, TE, CONTENT_LENGTH, PROXY_AUTHENTICATE].contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
        // Trace context is the host's: a guest must not forge or break the chain's correlation.
        || name.as_str() == crate::TRACEPARENT
        || name.as_str() == crate::TRACESTATE
        // So is the hop counter: a guest must never set (or remove) the chain depth.
        || name.as_str() == delegate_auth::HOP_HEADER
}

impl EgressGateway {
    /// `client` should be one `delegate_outbound::build_client` client (no redirects: a
    /// redirect comes back to the guest, whose next request is checked again).
    pub fn new(vault: Arc<TokenVault>, client: reqwest::Client, sink: Arc<AuditSink>) -> Self {
        Self { vault, client, sink, metrics: None, hop_key: None }
    }

    /// The same gateway, signing the hop counter (`auth.hop_key`): on every request of a rule
    /// whose provider marks the hop (`max_chain_depth`, its tokens go to another agent host),
    /// it sets [`delegate_auth::HOP_HEADER`] to the caller's chain depth + 1, bound to the
    /// token sent. Without a key no hop counter is sent; a guest's header is dropped either way.
    #[must_use]
    pub fn with_hop_key(mut self, key: HopKey) -> Self {
        self.hop_key = Some(key);
        self
    }

    /// The same gateway, counting requests and token exchanges in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<delegate_metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn record_token(&self, provider: &str, result: Result<CacheStatus, &VaultError>) {
        if let Some(m) = &self.metrics {
            let (source, outcome) = match result {
                Ok(CacheStatus::Hit) => (delegate_metrics::TokenSource::Cached, "ok"),
                Ok(CacheStatus::Miss) => (delegate_metrics::TokenSource::Exchanged, "ok"),
                Err(e) => (delegate_metrics::TokenSource::Failed, e.code()),
            };
            m.record_token(provider, source, outcome);
        }
    }

    /// Sends one plugin request; see the module docs. Every outcome is audited.
    pub async fn send(
        &self,
        inv: &InvocationEgress,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<EgressBody>, EgressError> {
        let start = Instant::now();
        let decision = inv.policy.decide_request(&request);
        let mut record = AuditRecord::new(&inv.audit, request.method(), request.uri(), &decision);
        let (credential, target) = match decision {
            Decision::Deny { reason } => {
                self.audit(&record, start);
                return Err(EgressError::Denied(reason));
            }
            Decision::Allow { credential, target, .. } => (credential, target),
        };
        let fail = |record: &mut AuditRecord, err: EgressError| {
            record.deny_with(err.code());
            record.finish(None, 0, 0, start.elapsed());
            self.audit(record, start);
            Err(err)
        };
        if let Err(e) = inv.budget.begin_request() {
            return fail(&mut record, EgressError::Budget(e));
        }
        let (parts, body) = request.into_parts();
        let request_bytes = body.len() as u64;
        if let Err(e) = inv.budget.add_request_bytes(request_bytes) {
            return fail(&mut record, EgressError::Budget(e));
        }

        // The next agent host counts this one: the caller's depth + 1, signed per token sent.
        let hop = credential
            .as_ref()
            .filter(|c| self.hop_key.is_some() && self.vault.marks_hop(&c.provider))
            .map(|_| inv.caller.chain_depth() + 1);
        let mut token: Option<Secret> = None;
        if let Some(c) = &credential {
            let issued = self.vault.token_for(&inv.caller, &c.provider, &c.scopes).await;
            self.record_token(&c.provider, issued.as_ref().map(|i| i.cache));
            match issued {
                Ok(issued) => {
                    record.cache = Some(cache_outcome(issued.cache));
                    token = Some(issued.token);
                }
                Err(e) => return fail(&mut record, EgressError::Credential(e)),
            }
        }
        let mut response = match self.send_once(&parts, &target, body.clone(), token.as_ref(), hop, inv).await
        {
            Ok(r) => r,
            Err(e) => return fail(&mut record, e),
        };
        if response.status() == reqwest::StatusCode::UNAUTHORIZED
            && let Some(c) = &credential
        {
            // The downstream rejected the token (revoked, rotated keys): evict and retry once
            // with a fresh one. A second 401 goes to the guest as is.
            self.vault.evict(&inv.caller, &c.provider, &c.scopes).await;
            let issued = self.vault.token_for(&inv.caller, &c.provider, &c.scopes).await;
            self.record_token(&c.provider, issued.as_ref().map(|i| i.cache));
            match issued {
                Ok(issued) => {
                    record.cache = Some(cache_outcome(issued.cache));
                    token = Some(issued.token);
                }
                Err(e) => return fail(&mut record, EgressError::Credential(e)),
            }
            response = match self.send_once(&parts, &target, body, token.as_ref(), hop, inv).await {
                Ok(r) => r,
                Err(e) => return fail(&mut record, e),
            };
        }

        let mut secrets: Vec<&Secret> = vec![inv.caller.token()];
        // AgentCore Runtime's workload access token, when the inbound mode uses it.
        secrets.extend(inv.caller.workload_access_token());
        secrets.extend(token.as_ref());
        secrets.extend(self.vault.client_secrets());
        let scrubber = Scrubber::new(&secrets);
        let response: http::Response<reqwest::Body> = response.into();
        let (mut parts, body) = response.into_parts();
        scrubber.scrub_headers(&mut parts.headers);
        // A downstream session cookie is a credential for the user's session; the guest cannot
        // send cookies anyway, so it could only leak it.
        parts.headers.remove(http::header::SET_COOKIE);
        record.status = Some(parts.status.as_u16());
        record.request_bytes = request_bytes;
        let metered = MeteredBody {
            inner: body,
            budget: inv.budget.clone(),
            pending: Some(PendingAudit {
                record,
                sink: self.sink.clone(),
                metrics: self.metrics.clone(),
                start,
            }),
            bytes: 0,
        };
        Ok(http::Response::from_parts(parts, ScrubbedBody::new(metered, scrubber)))
    }

    async fn send_once(
        &self,
        parts: &http::request::Parts,
        target: &Target,
        body: Bytes,
        token: Option<&Secret>,
        hop: Option<usize>,
        inv: &InvocationEgress,
    ) -> Result<reqwest::Response, EgressError> {
        let mut headers = http::HeaderMap::with_capacity(parts.headers.len() + 1);
        for (name, value) in &parts.headers {
            if !is_dropped_request_header(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(trace) = &inv.audit.trace
            && let Ok(value) = http::HeaderValue::try_from(trace.child().header_value())
        {
            headers.insert(crate::TRACEPARENT, value);
        }
        if let Some(token) = token {
            let mut value = http::HeaderValue::try_from(format!("Bearer {}", token.expose()))
                .map_err(|_| EgressError::Credential(invalid_token_value()))?;
            // Keeps it out of HPACK tables and `Debug` output of the header map.
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
            if let (Some(key), Some(depth)) = (&self.hop_key, hop) {
                // After the guest's headers (whose copy was dropped above); never logged.
                headers.insert(delegate_auth::HOP_HEADER, key.header_value(depth, token));
            }
        }
        let url = reqwest::Url::parse(&target.uri.to_string())
            .map_err(|_| EgressError::Denied(DenyReason::InvalidPath))?;
        let attempt = |headers: http::HeaderMap, body: Bytes, timeout: std::time::Duration| {
            self.client
                .request(parts.method.clone(), url.clone())
                .headers(headers)
                .timeout(timeout)
                .body(body)
                .send()
        };
        let timeout = inv.budget.request_timeout();
        if !is_safe_method(&parts.method) {
            return attempt(headers, body, timeout).await.map_err(|e| transport_failure(&e, inv));
        }
        let started = Instant::now();
        match attempt(headers.clone(), body.clone(), timeout).await {
            Ok(response) => Ok(response),
            // A safe request whose connection broke before any answer (not a timeout, not a
            // refused connection) is sent once more, on a new connection: the usual cause is a
            // pooled keep-alive connection the server closed just as it was reused, and a
            // safe method changes nothing on the server, so it may be repeated (RFC 9110
            // §9.2.1; Go's HTTP client does the same). Both attempts share the request's
            // timeout, so the bound the operator configured holds.
            Err(e) if !e.is_timeout() && !e.is_connect() && e.status().is_none() => {
                let Some(left) = timeout.checked_sub(started.elapsed()).filter(|t| !t.is_zero()) else {
                    return Err(transport_failure(&e, inv));
                };
                tracing::debug!(
                    target: "delegate::egress",
                    invocation_id = %inv.audit.invocation_id,
                    cause = %error_chain(&e),
                    "safe request failed before an answer; sending it once more"
                );
                attempt(headers, body, left).await.map_err(|e| transport_failure(&e, inv))
            }
            Err(e) => Err(transport_failure(&e, inv)),
        }
    }

    fn audit(&self, record: &AuditRecord, start: Instant) {
        write_audit(&self.sink, self.metrics.as_deref(), record, start);
    }

    /// Writes the end-of-invocation record to the audit sink.
    pub fn audit_invocation(&self, record: &crate::audit::InvocationRecord) {
        if let Err(e) = self.sink.write_invocation(record) {
            tracing::error!(target: "delegate::audit", error = %e, "audit record could not be written");
        }
    }
}

fn invalid_token_value() -> VaultError {
    VaultError::InvalidResponse {
        provider: String::new(),
        detail: "access_token is not a valid header value",
    }
}

fn cache_outcome(c: CacheStatus) -> CacheOutcome {
    match c {
        CacheStatus::Hit => CacheOutcome::Hit,
        CacheStatus::Miss => CacheOutcome::Miss,
    }
}

/// GET, HEAD and OPTIONS: methods that change nothing on the server (RFC 9110 §9.2.1).
fn is_safe_method(method: &http::Method) -> bool {
    matches!(*method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS)
}

/// A transport failure as the gateway's error, with its cause logged for the operator. The
/// chain never holds a header (so no token) and is printed without the URL (whose query may
/// carry the user's search terms).
fn transport_failure(e: &reqwest::Error, inv: &InvocationEgress) -> EgressError {
    let cause = transport_cause(e);
    tracing::warn!(
        target: "delegate::egress",
        invocation_id = %inv.audit.invocation_id,
        reason = cause,
        cause = %error_chain(e),
        "outbound request failed"
    );
    EgressError::Upstream(cause)
}

/// The sources of `e`, joined with ": ": the cause without `e`'s own text, which names the URL.
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

fn transport_cause(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "upstream_timeout"
    } else if e.is_connect() {
        "upstream_unreachable"
    } else {
        "upstream_failed"
    }
}

fn write_audit(
    sink: &AuditSink,
    metrics: Option<&delegate_metrics::Metrics>,
    record: &AuditRecord,
    start: Instant,
) {
    if let Some(m) = metrics {
        let allowed = record.decision == crate::audit::AuditDecision::Allowed;
        m.record_egress(&record.host, allowed, record.status, record.reason.as_deref(), start.elapsed());
    }
    // One readable line per outbound request for people watching the log (the audit sink keeps
    // the full record): which user, which credential (cache hit or an IdP exchange), what status.
    tracing::info!(
        target: "delegate::egress",
        invocation_id = %record.invocation_id,
        user = record.caller_username.as_deref().unwrap_or(&record.caller_subject),
        provider = record.provider.as_deref().unwrap_or("none"),
        token = match record.cache {
            Some(crate::audit::CacheOutcome::Hit) => "cached",
            Some(crate::audit::CacheOutcome::Miss) => "exchanged",
            None => "-",
        },
        decision = ?record.decision,
        reason = record.reason.as_deref().unwrap_or(""),
        status = record.status.unwrap_or(0),
        "{} {}{}",
        record.method,
        record.host,
        record.path
    );
    if let Err(e) = sink.write(record) {
        // The audit trail is a requirement, but failing the user's request because the disk
        // is full would not make the request un-happen; shout instead.
        tracing::error!(target: "delegate::audit", error = %e, "audit record could not be written");
    }
}

/// The response body handed to the guest: scrubbed, metered against the budget, audited.
pub type EgressBody = ScrubbedBody<MeteredBody>;

/// Why the response body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum EgressBodyError {
    /// The response exceeded the invocation's response-byte cap.
    #[error("egress budget exceeded: {0}")]
    Budget(BudgetExceeded),
    /// The downstream connection failed or timed out mid-body.
    #[error("downstream response failed: {0}")]
    Upstream(&'static str),
}

struct PendingAudit {
    record: AuditRecord,
    sink: Arc<AuditSink>,
    metrics: Option<Arc<delegate_metrics::Metrics>>,
    start: Instant,
}

/// A downstream body that counts bytes against the budget and writes the audit record once,
/// when it ends, fails or is dropped.
pub struct MeteredBody {
    inner: reqwest::Body,
    budget: Arc<EgressBudget>,
    pending: Option<PendingAudit>,
    bytes: u64,
}

impl std::fmt::Debug for MeteredBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredBody").field("bytes", &self.bytes).finish_non_exhaustive()
    }
}

impl MeteredBody {
    fn complete(&mut self, failure: Option<&'static str>) {
        if let Some(mut p) = self.pending.take() {
            if let Some(code) = failure {
                p.record.reason = Some(code.to_owned());
            }
            let (status, req) = (p.record.status, p.record.request_bytes);
            p.record.finish(status, req, self.bytes, p.start.elapsed());
            write_audit(&p.sink, p.metrics.as_deref(), &p.record, p.start);
        }
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        self.complete(None);
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = EgressBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.complete(None);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                let cause = transport_cause(&e);
                this.complete(Some(cause));
                Poll::Ready(Some(Err(EgressBodyError::Upstream(cause))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if let Err(e) = this.budget.add_response_bytes(n) {
                        this.complete(Some(e.code()));
                        return Poll::Ready(Some(Err(EgressBodyError::Budget(e))));
                    }
                    this.bytes += n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
