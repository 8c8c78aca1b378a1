//! Outbound HTTPS clients: the one way delegate builds a `reqwest::Client`.
//!
//! Every client delegate uses to reach another party (OIDC discovery and JWKS, token endpoints,
//! egress to downstream APIs, the model) is built here, so the trust and timeout rules are the
//! same everywhere and reviewable in one place:
//!
//! - TLS is rustls (aws-lc-rs). Certificates are verified against the platform's roots plus the
//!   operator's extra CA bundle (the devstack CA, or a corporate TLS-intercepting proxy's CA).
//!   There is no switch to disable verification.
//! - Connect and whole-request timeouts are always set, so a dead peer never hangs a caller.
//! - Redirects are never followed: a redirect is a new request to a possibly different origin,
//!   and the caller's policy (egress rules, "never fetch a URL the token names") must decide it.
//! - Proxies come from the standard `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` environment variables,
//!   which is how operators route through a corporate proxy.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to build an outbound client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundConfig {
    /// PEM files with CA certificates to trust in addition to the platform roots. Each file may
    /// hold several certificates; every file must hold at least one.
    pub extra_ca_pem_files: Vec<PathBuf>,
    /// Maximum time to establish a TCP + TLS connection.
    pub connect_timeout: Duration,
    /// Maximum time for a whole request, from sending to the last byte of the response body.
    pub request_timeout: Duration,
}

impl OutboundConfig {
    /// Default connect timeout: long enough for a slow TLS handshake across regions.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default request timeout.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            extra_ca_pem_files: Vec::new(),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// Why an outbound client could not be built. Fails at start-up, never per request.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// An extra CA file could not be read.
    #[error("cannot read CA file {}: {source}", path.display())]
    ReadCaFile {
        /// The configured file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An extra CA file is not a PEM bundle of certificates.
    #[error("CA file {} holds no valid PEM certificate", path.display())]
    InvalidCaFile {
        /// The configured file.
        path: PathBuf,
    },
    /// A timeout of zero would mean "no timeout" to some layers; refuse it.
    #[error("{name} must be greater than zero")]
    ZeroTimeout {
        /// `connect_timeout` or `request_timeout`.
        name: &'static str,
    },
    /// reqwest could not build the client (e.g. the TLS backend rejected a root).
    #[error("cannot build HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

/// Builds an HTTPS client per [`OutboundConfig`]; see the crate docs for the rules it enforces.
///
/// The returned client pools connections; build one per purpose at start and clone it
/// (cheap) rather than building one per request.
pub fn build_client(config: &OutboundConfig) -> Result<reqwest::Client, OutboundError> {
    if config.connect_timeout.is_zero() {
        return Err(OutboundError::ZeroTimeout { name: "connect_timeout" });
    }
    if config.request_timeout.is_zero() {
        return Err(OutboundError::ZeroTimeout { name: "request_timeout" });
    }
    let mut extra_roots = Vec::new();
    for path in &config.extra_ca_pem_files {
        extra_roots.extend(read_ca_file(path)?);
    }
    reqwest::Client::builder()
        .tls_backend_rustls()
        .tls_certs_merge(extra_roots)
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("delegate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(OutboundError::Build)
}

fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, OutboundError> {
    let pem =
        std::fs::read(path).map_err(|source| OutboundError::ReadCaFile { path: path.to_owned(), source })?;
    let invalid = || OutboundError::InvalidCaFile { path: path.to_owned() };
    // `from_pem_bundle` skips non-certificate blocks; a file without any certificate is a
    // configuration mistake (wrong file, key instead of cert), so it is an error, not a no-op.
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| invalid())?;
    if certs.is_empty() {
        return Err(invalid());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use axum::Router;
    use axum::routing::get;
    use delegate_devstack_tls::{DevCa, serve_https};

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("outbound-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn devstack_server(ca: &DevCa, router: Router) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = ca.server_config(&["localhost", "127.0.0.1"]).unwrap();
        tokio::spawn(serve_https(listener, router, config, std::future::pending()));
        port
    }

    fn hello() -> Router {
        Router::new()
            .route("/hello", get(|| async { "hello" }))
            .route("/redirect", get(|| async { axum::response::Redirect::temporary("/hello") }))
    }

    #[tokio::test]
    async fn devstack_server_is_trusted_only_when_its_ca_is_configured() {
        let ca = DevCa::generate().unwrap();
        let port = devstack_server(&ca, hello()).await;
        let url = format!("https://127.0.0.1:{port}/hello");

        let untrusting = build_client(&OutboundConfig::default()).unwrap();
        let error = untrusting.get(&url).send().await.unwrap_err();
        assert!(error.is_connect(), "{error:?}");

        let dir = TempDir::new("trust");
        let path = dir.0.join("ca.pem");
        ca.write_ca_pem(&path).unwrap();
        let trusting =
            build_client(&OutboundConfig { extra_ca_pem_files: vec![path], ..OutboundConfig::default() })
                .unwrap();
        let response = trusting.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "hello");
    }

    #[tokio::test]
    async fn a_different_ca_does_not_help() {
        let ca = DevCa::generate().unwrap();
        let other = DevCa::generate().unwrap();
        let port = devstack_server(&ca, hello()).await;
        let dir = TempDir::new("other");
        let path = dir.0.join("other.pem");
        other.write_ca_pem(&path).unwrap();
        let client =
            build_client(&OutboundConfig { extra_ca_pem_files: vec![path], ..OutboundConfig::default() })
                .unwrap();
        let error = client.get(format!("https://127.0.0.1:{port}/hello")).send().await.unwrap_err();
        assert!(error.is_connect(), "{error:?}");
    }

    #[tokio::test]
    async fn redirects_are_returned_not_followed() {
        let ca = DevCa::generate().unwrap();
        let port = devstack_server(&ca, hello()).await;
        let dir = TempDir::new("redirect");
        let path = dir.0.join("ca.pem");
        ca.write_ca_pem(&path).unwrap();
        let client =
            build_client(&OutboundConfig { extra_ca_pem_files: vec![path], ..OutboundConfig::default() })
                .unwrap();
        let response = client.get(format!("https://127.0.0.1:{port}/redirect")).send().await.unwrap();
        assert_eq!(response.status(), 307);
        assert_eq!(response.headers()["location"], "/hello");
    }

    #[tokio::test]
    async fn request_timeout_bounds_a_hanging_server() {
        // A server that accepts TCP but never answers the TLS handshake.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                held.push(socket);
            }
        });
        let client = build_client(&OutboundConfig {
            connect_timeout: Duration::from_millis(200),
            request_timeout: Duration::from_millis(300),
            ..OutboundConfig::default()
        })
        .unwrap();
        let error = client.get(format!("https://127.0.0.1:{port}/")).send().await.unwrap_err();
        assert!(error.is_timeout(), "{error:?}");
        hold.abort();
    }

    #[test]
    fn bad_configuration_is_rejected_at_build_time() {
        let dir = TempDir::new("bad");
        let missing = dir.0.join("missing.pem");
        assert!(matches!(
            build_client(&OutboundConfig { extra_ca_pem_files: vec![missing], ..OutboundConfig::default() }),
            Err(OutboundError::ReadCaFile { .. })
        ));
        let garbage = dir.0.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        assert!(matches!(
            build_client(&OutboundConfig { extra_ca_pem_files: vec![garbage], ..OutboundConfig::default() }),
            Err(OutboundError::InvalidCaFile { .. })
        ));
        assert!(matches!(
            build_client(&OutboundConfig { connect_timeout: Duration::ZERO, ..OutboundConfig::default() }),
            Err(OutboundError::ZeroTimeout { name: "connect_timeout" })
        ));
        assert!(matches!(
            build_client(&OutboundConfig { request_timeout: Duration::ZERO, ..OutboundConfig::default() }),
            Err(OutboundError::ZeroTimeout { name: "request_timeout" })
        ));
    }
}
