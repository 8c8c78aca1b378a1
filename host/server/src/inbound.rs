//! Inbound modes (`server.inbound`): who verifies the caller, and whether the workload access
//! token AgentCore Runtime passes is used. See docs/agentcore.md, "Inbound modes and what is
//! trusted".
//!
//! [`InboundAuthorizer`] wraps the JWT authorizer:
//! - `standalone`: the JWT authorizer alone; a `WorkloadAccessToken` header is never read.
//! - `agentcore`: the JWT authorizer (an `Authorization` header is required and verified),
//!   and the workload access token, when the request has one, rides on the
//!   [`VerifiedCaller`] to `agentcore_identity` providers.
//! - `agentcore_workload_token` (opt-in): as `agentcore`; a request without `Authorization`
//!   but with a workload access token gets a caller made from that token alone
//!   ([`VerifiedCaller::from_workload_access_token`]), which only `agentcore_identity`
//!   providers accept.
//!
//! The token itself goes nowhere else: request headers never reach a plugin, rejections
//! log only a fixed reason, and the egress gateway scrubs it from downstream responses.

use crate::{AuthFuture, AuthRejection, Authorize};
use axum::http::HeaderMap;
use delegate_auth::VerifiedCaller;
use delegate_config::InboundMode;
use delegate_secret::Secret;
use std::sync::Arc;

/// The header AgentCore Runtime passes the workload access token in.
pub const WORKLOAD_ACCESS_TOKEN_HEADER: &str = "workloadaccesstoken";
/// The alternative header the AgentCore Python SDK also accepts.
pub const WORKLOAD_ACCESS_TOKEN_ALT_HEADER: &str = "x-amz-bedrock-agentcore-identity-wat";
/// Longest workload access token accepted (the `GetResourceOauth2Token` limit).
const MAX_WAT_LEN: usize = 131_072;

/// The JWT authorizer in one of the [`InboundMode`]s.
pub struct InboundAuthorizer {
    jwt: Arc<dyn Authorize>,
    mode: InboundMode,
}

impl InboundAuthorizer {
    /// `jwt` in `mode`.
    pub fn new(jwt: Arc<dyn Authorize>, mode: InboundMode) -> Self {
        Self { jwt, mode }
    }
}

/// The workload access token of the request: `Ok(None)` when absent; an error when it is
/// malformed, repeated, or given in both headers with different values (which token would
/// be meant is ambiguous, so none is used).
fn workload_access_token(headers: &HeaderMap) -> Result<Option<Secret>, AuthRejection> {
    let bad = AuthRejection::Unauthenticated { reason: "malformed workload access token" };
    let mut found: Option<&str> = None;
    for name in [WORKLOAD_ACCESS_TOKEN_HEADER, WORKLOAD_ACCESS_TOKEN_ALT_HEADER] {
        for value in headers.get_all(name) {
            let v = value.to_str().map_err(|_| bad.clone())?.trim();
            if v.is_empty() || v.len() > MAX_WAT_LEN || !v.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad);
            }
            if found.is_some_and(|f| f != v) {
                return Err(bad);
            }
            found = Some(v);
        }
    }
    Ok(found.map(Secret::new))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Authorize for InboundAuthorizer {
    fn authorize<'a>(&'a self, headers: &'a HeaderMap) -> AuthFuture<'a> {
        Box::pin(async move {
            match self.mode {
                InboundMode::Standalone => self.jwt.authorize(headers).await,
                InboundMode::AgentCore => {
                    let wat = workload_access_token(headers)?;
                    let caller = self.jwt.authorize(headers).await?;
                    Ok(attach(caller, wat))
                }
                InboundMode::AgentCoreWorkloadToken => {
                    let wat = workload_access_token(headers)?;
                    if headers.contains_key(http::header::AUTHORIZATION) {
                        // A JWT that is present must verify: a bad one is never replaced by
                        // the weaker evidence of the workload access token.
                        let caller = self.jwt.authorize(headers).await?;
                        return Ok(attach(caller, wat));
                    }
                    match wat {
                        Some(wat) => Ok(VerifiedCaller::from_workload_access_token(wat, now())),
                        None => self.jwt.authorize(headers).await,
                    }
                }
            }
        })
    }
}

fn attach(caller: VerifiedCaller, wat: Option<Secret>) -> VerifiedCaller {
    match wat {
        Some(wat) => caller.with_workload_access_token(wat),
        None => caller,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// Accepts `Authorization: Bearer good` only.
    struct Fake;
    impl Authorize for Fake {
        fn authorize<'a>(&'a self, headers: &'a HeaderMap) -> AuthFuture<'a> {
            Box::pin(async move {
                match headers.get("authorization").map(|v| v.to_str().unwrap()) {
                    Some("Bearer good") => Ok(delegate_auth::VerifiedCallerBuilder::new("oid-jane").build()),
                    _ => Err(AuthRejection::Unauthenticated { reason: "test" }),
                }
            })
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    async fn run(mode: InboundMode, pairs: &[(&'static str, &str)]) -> Result<VerifiedCaller, AuthRejection> {
        InboundAuthorizer::new(Arc::new(Fake), mode).authorize(&headers(pairs)).await
    }

    #[tokio::test]
    async fn standalone_never_reads_the_workload_access_token() {
        let c =
            run(InboundMode::Standalone, &[("authorization", "Bearer good"), ("workloadaccesstoken", "w")])
                .await
                .unwrap();
        assert!(c.workload_access_token().is_none());
        assert!(run(InboundMode::Standalone, &[("workloadaccesstoken", "w")]).await.is_err());
    }

    #[tokio::test]
    async fn agentcore_verifies_the_jwt_and_carries_the_token() {
        let c =
            run(InboundMode::AgentCore, &[("authorization", "Bearer good"), ("WorkloadAccessToken", "w-1")])
                .await
                .unwrap();
        assert_eq!(c.workload_access_token().unwrap().expose(), "w-1");
        assert!(c.is_token_verified());
        let alt = run(
            InboundMode::AgentCore,
            &[("authorization", "Bearer good"), ("x-amz-bedrock-agentcore-identity-wat", "w-2")],
        )
        .await
        .unwrap();
        assert_eq!(alt.workload_access_token().unwrap().expose(), "w-2");
        // The JWT stays mandatory in this mode.
        assert!(run(InboundMode::AgentCore, &[("workloadaccesstoken", "w")]).await.is_err());
        assert!(
            run(InboundMode::AgentCore, &[("authorization", "Bearer bad"), ("workloadaccesstoken", "w")])
                .await
                .is_err()
        );
        // Ambiguous or malformed tokens are refused, not guessed at.
        for bad in [
            vec![("workloadaccesstoken", "a"), ("x-amz-bedrock-agentcore-identity-wat", "b")],
            vec![("workloadaccesstoken", "a"), ("workloadaccesstoken", "b")],
            vec![("workloadaccesstoken", "has space")],
        ] {
            let mut pairs = vec![("authorization", "Bearer good")];
            pairs.extend(bad);
            assert!(run(InboundMode::AgentCore, &pairs).await.is_err(), "{pairs:?}");
        }
    }

    #[tokio::test]
    async fn workload_token_mode_admits_a_token_alone_but_never_a_bad_jwt() {
        let c = run(InboundMode::AgentCoreWorkloadToken, &[("workloadaccesstoken", "w-3")]).await.unwrap();
        assert!(!c.is_token_verified());
        assert!(c.subject().starts_with(delegate_auth::WORKLOAD_SUBJECT_PREFIX));
        assert_eq!(c.workload_access_token().unwrap().expose(), "w-3");
        let both = run(
            InboundMode::AgentCoreWorkloadToken,
            &[("authorization", "Bearer good"), ("workloadaccesstoken", "w")],
        )
        .await
        .unwrap();
        assert!(both.is_token_verified(), "a JWT, when present, decides the identity");
        assert!(
            run(
                InboundMode::AgentCoreWorkloadToken,
                &[("authorization", "Bearer bad"), ("workloadaccesstoken", "w")]
            )
            .await
            .is_err()
        );
        assert!(run(InboundMode::AgentCoreWorkloadToken, &[]).await.is_err());
    }
}
