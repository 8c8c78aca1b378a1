//! Plugins by reference: `oci://registry[:port]/repository@sha256:<manifest digest>`.
//!
//! A plugin version is published as an OCI artifact (the wasm OCI layout plus the delegate
//! plugin manifest, see [`artifact`]) and deployed by the digest of its manifest. A pull
//! verifies the manifest against that digest and every blob against its descriptor before
//! anything is used, then keeps the blobs in a local content-addressed cache ([`BlobCache`]),
//! so a replica keeps serving (and restarts on) the digests it has, while the registry is down.
//!
//! Why not the `oci-client` crate: it builds its own `reqwest::Client` from its own config,
//! so delegate's one reviewed client builder (`delegate-outbound`: operator CA bundle, bounded
//! timeouts, no automatic redirects) could not be used, and it brings about twenty crates
//! (oci-spec with its derive macros, regex, chrono) for the four distribution-API calls a
//! digest-pinned pull and a monolithic push need.

pub mod artifact;
mod cache;
mod client;
mod config;
mod error;
mod reference;

pub use cache::BlobCache;
pub use client::{MAX_MANIFEST_BYTES, MAX_REDIRECTS, MAX_SMALL_BLOB_BYTES, PulledPlugin, RegistryClient};
pub use config::{Credentials, InvalidSetting, OciConfig, OciSettings, RegistryConfig, SecretRef};
pub use error::OciError;
pub use reference::{Digest, Reference, Target};

/// The scheme prefix of a plugin reference.
pub const SCHEME: &str = "oci://";
