//! RS256 signing keys, generated at start, with a rotation hook.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use delegate_secret::Secret;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey};
use sha2::{Digest, Sha256};

use crate::IdpError;

/// One signing key: private half for signing, public half as published in the JWKS.
pub(crate) struct SigningKey {
    pub(crate) kid: String,
    encoding: EncodingKey,
    /// Base64url modulus and exponent (JWK `n`, `e`).
    pub(crate) n: String,
    pub(crate) e: String,
    /// Standard base64 DER of a self-signed certificate for the key (JWK `x5c`, like Entra).
    pub(crate) x5c: String,
    /// SPKI PEM of the public key, for "public key used as HMAC secret" attack tokens.
    pub(crate) public_pem: String,
    /// Retired keys are no longer published and never sign again.
    pub(crate) retired: bool,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("retired", &self.retired)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates an RSA-2048 key and its certificate.
    pub(crate) fn generate() -> Result<SigningKey, IdpError> {
        let key_pair = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            .map_err(|e| IdpError::Key(e.to_string()))?;
        let private_pem = Secret::new(key_pair.serialize_pem());
        let encoding = EncodingKey::from_rsa_pem(private_pem.expose().as_bytes())
            .map_err(|e| IdpError::Key(e.to_string()))?;
        let jwk =
            Jwk::from_encoding_key(&encoding, Algorithm::RS256).map_err(|e| IdpError::Key(e.to_string()))?;
        let AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
            return Err(IdpError::Key("generated key is not RSA".into()));
        };
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| IdpError::Key(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        // Entra's signing certificates carry this subject.
        params.distinguished_name.push(rcgen::DnType::CommonName, "accounts.accesscontrol.windows.net");
        let cert = params.self_signed(&key_pair).map_err(|e| IdpError::Key(e.to_string()))?;
        let der = cert.der().to_vec();
        // Entra's kid is the certificate's x5t (20-byte thumbprint, base64url); we use the first
        // 20 bytes of the SHA-256 thumbprint, which has the same shape.
        let digest = Sha256::digest(&der);
        let kid = URL_SAFE_NO_PAD.encode(&digest[..20]);
        Ok(SigningKey {
            kid,
            encoding,
            n: rsa.n,
            e: rsa.e,
            x5c: STANDARD.encode(&der),
            public_pem: key_pair.public_key_pem(),
            retired: false,
        })
    }

    /// Signs `signing_input` (`b64(header).b64(payload)`) and returns the base64url signature.
    pub(crate) fn sign(&self, signing_input: &[u8], alg: Algorithm) -> Result<String, IdpError> {
        jsonwebtoken::crypto::sign(signing_input, &self.encoding, alg)
            .map_err(|e| IdpError::Key(e.to_string()))
    }

    /// The JWK as Entra publishes it (`issuer` only in v2 key documents).
    pub(crate) fn jwk_json(&self, issuer: Option<&str>) -> serde_json::Value {
        let mut jwk = serde_json::json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": self.n,
            "e": self.e,
            "x5c": [self.x5c],
        });
        if let (Some(issuer), Some(map)) = (issuer, jwk.as_object_mut()) {
            map.insert("issuer".into(), issuer.into());
        }
        jwk
    }
}

/// The key ring: all keys ever generated, in order; the newest live key signs.
#[derive(Debug, Default)]
pub(crate) struct KeyRing {
    pub(crate) keys: Vec<SigningKey>,
}

impl KeyRing {
    pub(crate) fn current(&self) -> Option<&SigningKey> {
        self.keys.iter().rev().find(|k| !k.retired)
    }

    pub(crate) fn get(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    pub(crate) fn published(&self) -> impl Iterator<Item = &SigningKey> {
        self.keys.iter().filter(|k| !k.retired)
    }
}

/// `b64url(header).b64url(payload)`.
pub(crate) fn signing_input(header: &[u8], payload: &[u8]) -> String {
    format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload))
}
