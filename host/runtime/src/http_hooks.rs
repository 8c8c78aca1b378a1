//! The one `WasiHttpHooks` implementation: every outbound request of a plugin goes through here.
//!
//! Policy is deny-by-default: until egress rules are configured for a plugin (the egress
//! issue), no rule matches and every request is refused with `HTTP-request-denied` and logged.
//! Credential headers are forbidden outright, so a plugin cannot even try to smuggle one in.

use std::sync::Arc;
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, Error as HttpError, ForbiddenHeaderFilter, RequestOptions, WasiBody,
    WasiHttpHooks,
};

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type SendFuture = Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send>;

/// Headers only the host may set: credentials, and `host`, which must match the URL the
/// policy checked.
pub(crate) fn is_host_only_header(name: &http::HeaderName) -> bool {
    name == http::header::AUTHORIZATION
        || name == http::header::PROXY_AUTHORIZATION
        || name == http::header::COOKIE
        || name == http::header::HOST
        || DEFAULT_FORBIDDEN_HEADERS.contains(name)
}

/// Egress decisions for one invocation.
pub(crate) struct EgressHooks {
    pub(crate) plugin: Arc<str>,
    pub(crate) invocation_id: Arc<str>,
}

impl WasiHttpHooks for EgressHooks {
    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        Arc::new(is_host_only_header)
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        let uri = request.uri();
        tracing::warn!(
            target: "delegate::egress",
            plugin = %self.plugin,
            invocation_id = %self.invocation_id,
            method = %request.method(),
            scheme = uri.scheme_str().unwrap_or(""),
            host = uri.host().unwrap_or(""),
            path = uri.path(),
            decision = "denied",
            reason = "no egress rule matches",
            "outbound request denied"
        );
        Box::new(async { Err(HttpError::HttpRequestDenied) })
    }
}
