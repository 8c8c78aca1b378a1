//! Inbound authorization: turns the caller's bearer token (Token A) into a [`VerifiedCaller`].
//!
//! A [`VerifiedCaller`] can only be made by this crate, after every check passed, so code that
//! takes one (the runtime, the vault) cannot be reached with an unchecked caller.
//! This crate knows nothing about wasm or HTTP servers.
//!
//! The checks follow protocols.md §4.1 and are all explicit (none is left to a library
//! default):
//! 1. exactly one `Authorization: Bearer <token>` header, size-capped before parsing;
//! 2. exactly three base64url segments, strict JSON objects without duplicate keys;
//! 3. header: `alg` in the configured allow-list (never `none`/HMAC), no `jku`, `x5u`, `jwk`,
//!    `x5c`, `crit`, `b64`, `enc`, `zip`, `cty`; `kid` required;
//! 4. the issuer is chosen by `iss` among the configured discovery documents (multi-tenant
//!    `{tenantid}` templates need `tid` in `allowed_tenants`), the key by `kid` from that
//!    issuer's cached JWKS (one rate-limited, single-flight refresh on a miss), and the key
//!    decides whether the `alg` may be used;
//! 5. signature; then `exp` (required), `nbf`, `iat` with leeway; `tid` consistent with `iss`;
//!    `ver` consistent with the issuer form; `aud` any-of;
//! 6. 403 checks: client (`azp`/`appid`/`client_id`) allow-list, required scopes (`scp`,
//!    `scope`, `roles`), claim rules;
//! 7. the delegation chain: nested `act` claims (RFC 8693 §4.1) are parsed strictly (an
//!    object with a string `sub`, nesting bounded) and counted;
//! 8. with a hop key configured (`hop_key`), the signed hop counter header ([`HOP_HEADER`],
//!    see [`HopKey`]) is verified against the presented token: malformed, unverifiable, or
//!    missing from a client listed in `hop_required_from` → 401 `invalid_hop`;
//! 9. the effective chain depth, the larger of the `act` count and the hop counter, deeper
//!    than `max_chain_depth` is refused (403 `chain_depth_exceeded`).
//!
//! Usage:
//! ```no_run
//! # async fn demo(headers: http::HeaderMap) -> Result<(), Box<dyn std::error::Error>> {
//! use delegate_auth::{AuthConfig, Authorizer};
//! let settings = AuthConfig::new(
//!     "https://login.microsoftonline.com/<tid>/v2.0/.well-known/openid-configuration",
//!     &["<api client id>"],
//!     &["<client app id>"],
//! )
//! .validate()?;
//! let client = reqwest::Client::new(); // in delegate: delegate_outbound::build_client(..)
//! let authorizer = Authorizer::new(settings, client);
//! let _refresh = authorizer.spawn_refresh();
//! match authorizer.authorize(&headers).await {
//!     Ok(caller) => println!("{}", caller.subject()),
//!     Err(e) => println!("{:?} {}", e.status_class(), e.code()),
//! }
//! # Ok(()) }
//! ```

mod authorizer;
mod caller;
mod config;
mod error;
mod hop;
mod keys;
mod token;

pub use authorizer::Authorizer;
#[cfg(feature = "testing")]
pub use caller::VerifiedCallerBuilder;
pub use caller::{Actor, VerifiedCaller, WORKLOAD_ONLY_LIFETIME_SECS, WORKLOAD_SUBJECT_PREFIX};
pub use config::{AuthConfig, AuthSettings, ClaimRule, InvalidSetting};
pub use error::{AuthError, AuthFailure};
pub use hop::{HOP_HEADER, HOP_KEY_MIN_BYTES, HopKey, HopKeyError};

#[cfg(test)]
mod tests;
