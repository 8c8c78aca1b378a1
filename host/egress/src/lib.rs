//! Egress policy for plugin HTTP requests.
//!
//! Every `wasi:http` request a plugin makes is checked here before anything leaves the host:
//!
//! - [`EgressConfig`] (operator config, per plugin) validates into an [`EgressPolicy`];
//!   [`EgressPolicy::decide_request`] refuses host-only headers ([`check_headers`]) and
//!   matches the normalised URL against the rules. Deny by default.
//!   [`EgressPolicy::narrowed`] intersects the operator's rules with the ones a plugin
//!   requested (its manifest); the operator's rules still choose the credential.
//! - [`Scrubber`] / [`ScrubbedBody`] replace any credential the host handled in response
//!   headers and bodies before the guest reads them.
//! - [`AuditRecord`] / [`AuditSink`]: one JSON line per credential use and per denial.
//! - [`EgressBudget`]: per-invocation request count, byte and timeout caps.
//! - [`TraceContext`]: W3C `traceparent`, parsed inbound and set (with a child span id) on
//!   every outbound request by the host; a guest's own trace headers are dropped.
//! - [`EgressGateway::send`] ties it together with the token vault and the pooled client:
//!   decide, inject Token B, send, evict-and-retry once on 401, scrub, meter, audit.
//!
//! This crate knows nothing about wasm: it works on `http` types and `bytes`, so the runtime's
//! one `WasiHttpHooks` implementation calls it and it is testable alone.

mod audit;
mod budget;
mod config;
mod gateway;
mod policy;
mod scrub;
mod trace;
mod url;

#[cfg(test)]
mod gateway_tests;
#[cfg(test)]
mod narrow_tests;
#[cfg(test)]
mod tests;

pub use audit::{
    AuditContext, AuditDecision, AuditError, AuditRecord, AuditSink, CacheOutcome, InvocationRecord,
};
pub use budget::{BudgetExceeded, EgressBudget, EgressLimits};
pub use config::{CredentialConfig, EgressConfig, InvalidSetting, ProviderCredentialConfig, RuleConfig};
pub use gateway::{EgressBody, EgressBodyError, EgressError, EgressGateway, InvocationEgress, MeteredBody};
pub use policy::{
    CredentialRef, Decision, DenyReason, EgressPolicy, NotGranted, NotGrantedReason, Target, check_headers,
};
pub use scrub::{REDACTED, ScrubbedBody, Scrubber};
pub use trace::{TRACEPARENT, TRACESTATE, TraceContext, TraceparentError};
