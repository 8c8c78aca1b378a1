//! The one `WasiHttpHooks` implementation: every outbound request of a plugin goes through here.
//!
//! Without egress configured for a plugin, every request is refused with
//! `HTTP-request-denied` and logged (deny by default). With it, the request body is collected
//! (bounded by the invocation's egress budget) and handed to `delegate_egress::EgressGateway`,
//! which decides, injects the user's delegated token, sends, scrubs and audits. Credential
//! headers are forbidden header names for the guest, so it cannot even build a request with one.

use bytes::Bytes;
use delegate_egress::{EgressBodyError, EgressError, EgressGateway, InvocationEgress};
use delegate_vault::VaultError;
use http_body_util::BodyExt;
use std::sync::{Arc, Mutex, PoisonError};
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

/// The first credential failure of an invocation: it decides the invocation's answer (e.g.
/// 403 `consent_required`), whatever the plugin makes of its denied request.
pub(crate) type CredentialFailure = Arc<Mutex<Option<VaultError>>>;

/// Egress decisions for one invocation.
pub(crate) struct EgressHooks {
    pub(crate) plugin: Arc<str>,
    pub(crate) invocation_id: Arc<str>,
    pub(crate) egress: Option<(EgressGateway, InvocationEgress)>,
    pub(crate) credential_failure: CredentialFailure,
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
        let Some((gateway, invocation)) = self.egress.clone() else {
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
                reason = "no_egress_rules",
                "outbound request denied"
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        };
        let failure = Arc::clone(&self.credential_failure);
        Box::new(async move {
            let (parts, body) = request.into_parts();
            let room = invocation
                .budget
                .limits()
                .max_request_bytes
                .saturating_sub(invocation.budget.request_bytes());
            let body: Bytes = http_body_util::Limited::new(body, usize::try_from(room).unwrap_or(usize::MAX))
                .collect()
                .await
                .map_err(|_| HttpError::HttpRequestBodySize(None))?
                .to_bytes();
            match gateway.send(&invocation, http::Request::from_parts(parts, body)).await {
                Ok(response) => {
                    let response = response.map(|b| {
                        b.map_err(|e| match e {
                            EgressBodyError::Budget(_) => HttpError::HttpResponseBodySize(None),
                            EgressBodyError::Upstream("upstream_timeout") => HttpError::HttpResponseTimeout,
                            EgressBodyError::Upstream(_) => HttpError::HttpResponseIncomplete,
                        })
                        .boxed_unsync()
                    });
                    Ok((response, Box::new(async { Ok(()) }) as IoFuture))
                }
                Err(EgressError::Credential(e)) => {
                    failure.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
                    Err(HttpError::HttpRequestDenied)
                }
                Err(EgressError::Denied(_) | EgressError::Budget(_)) => Err(HttpError::HttpRequestDenied),
                Err(EgressError::Upstream("upstream_timeout")) => Err(HttpError::ConnectionTimeout),
                Err(EgressError::Upstream(_)) => Err(HttpError::ConnectionRefused),
            }
        })
    }
}
