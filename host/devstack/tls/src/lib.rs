//! Devstack TLS: a local CA and server certificates generated at start, and an HTTPS server for
//! axum routers.
//!
//! The devstack stand-ins (identity provider, ServiceNow, Bedrock) serve HTTPS because real client
//! libraries (Microsoft's MSAL, the AWS SDK) refuse plain-HTTP authorities and production
//! endpoints are HTTPS anyway. [`DevCa`] makes a throw-away CA in memory each time the devstack
//! starts; its certificate is written to disk ([`DevCa::write_ca_pem`]) so that delegate's own
//! clients trust it through the same extra-CA-bundle setting an operator uses for a corporate
//! proxy, and the CA's private key never leaves the process.
//!
//! ```no_run
//! # async fn demo(router: axum::Router) -> Result<(), Box<dyn std::error::Error>> {
//! let ca = delegate_devstack_tls::DevCa::generate()?;
//! ca.write_ca_pem(std::path::Path::new("/tmp/devstack-ca.pem"))?;
//! let config = ca.server_config(&["localhost", "127.0.0.1"])?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! delegate_devstack_tls::serve_https(listener, router, config, std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod ca;
mod fault;
mod serve;

pub use ca::{DevCa, TlsError};
pub use fault::{Fault, FaultFilter, FaultSwitch, MALFORMED_JSON};
pub use serve::{HANDSHAKE_TIMEOUT, HEADER_READ_TIMEOUT, serve_http, serve_https, serve_https_with_faults};

#[cfg(test)]
mod tests;
