//! Inbound authorization: turns the caller's bearer token (Token A) into a [`VerifiedCaller`].
//!
//! A [`VerifiedCaller`] can only be made by this crate, after every check passed, so code that
//! takes one (the runtime, the vault) cannot be reached with an unchecked caller.
//! This crate knows nothing about wasm or HTTP servers.

mod caller;

pub use caller::VerifiedCaller;
#[cfg(feature = "testing")]
pub use caller::VerifiedCallerBuilder;
