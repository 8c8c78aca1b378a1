//! The devstack certificate authority.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// How long generated certificates are valid. A devstack lives for one run; a short validity
/// limits what a copied CA file is good for, and a day of back-dating absorbs clock skew.
const VALIDITY: Duration = Duration::days(30);
const BACKDATE: Duration = Duration::days(1);

/// Why a certificate or TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Key generation, certificate parameters or signing failed.
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls rejected the generated certificate or key.
    #[error("TLS configuration failed: {0}")]
    Config(#[from] rustls::Error),
    /// `server_config` was called without any name to certify.
    #[error("a server certificate needs at least one DNS name or IP address")]
    NoNames,
}

/// A certificate authority generated in memory for one devstack run.
///
/// The signing key stays inside this value (and is not shown by `Debug`); only the CA
/// certificate is exported, as PEM.
pub struct DevCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

impl DevCa {
    /// Generates a fresh CA (ECDSA P-256, valid 30 days, usable only to sign certificates).
    pub fn generate() -> Result<DevCa, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "delegate devstack CA");
        params.distinguished_name.push(DnType::OrganizationName, "delegate devstack");
        // Path length 0: this CA signs leaf certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + VALIDITY;
        let cert = params.self_signed(&key)?;
        Ok(DevCa { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// The CA certificate in PEM form (public; safe to print or ship to clients).
    pub fn ca_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// Writes the CA certificate (PEM) to `path`, for clients configured with an extra CA file.
    pub fn write_ca_pem(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.cert_pem.as_bytes())
    }

    /// A rustls server configuration with a fresh leaf certificate for `names`
    /// (DNS names or IP literals, e.g. `["localhost", "127.0.0.1"]`), signed by this CA,
    /// offering ALPN `http/1.1` only.
    pub fn server_config(&self, names: &[&str]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        if names.is_empty() {
            return Err(TlsError::NoNames);
        }
        let key = KeyPair::generate()?;
        // `CertificateParams::new` turns IP literals into IP SANs and the rest into DNS SANs.
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // Python 3.13+ verifies in X509_STRICT mode, which requires the Authority Key
        // Identifier on leaf certificates (MSAL for Python runs on it).
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + VALIDITY;
        let leaf = params.signed_by(&key, &self.issuer)?;

        let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone()];
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
