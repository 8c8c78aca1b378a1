//! Certificate credentials: `client_assertion` (RFC 7523 §2.2, Entra's "private_key_jwt")
//! client authentication against the certificates registered on an app.
//!
//! A certificate is identified by the SHA-256 thumbprint of its DER (`x5t#S256` in the
//! assertion header). Entra also accepts the SHA-1 `x5t`; this crate has no SHA-1, so only
//! `x5t#S256` is supported (what delegate's vault sends).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::token::EntraError;
use crate::{AppConfig, IdpError, time};

/// `client_assertion_type` of a JWT client assertion.
pub(crate) const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A registered certificate's public half.
pub(crate) struct RegisteredCert {
    x5t_s256: String,
    key: DecodingKey,
    ec: bool,
}

/// Parses a PEM certificate into its thumbprint and verification key.
pub(crate) fn parse_certificate(pem: &str) -> Result<RegisteredCert, IdpError> {
    let bad = |why: &str| IdpError::Config(format!("client certificate: {why}"));
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN CERTIFICATE-----")
        .skip(1)
        .take_while(|l| *l != "-----END CERTIFICATE-----")
        .collect();
    let der = STANDARD.decode(body.as_bytes()).map_err(|_| bad("not a PEM certificate"))?;
    let spki = subject_public_key_info(&der).ok_or_else(|| bad("cannot find the public key"))?;
    let spki_pem =
        format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", STANDARD.encode(spki));
    // OIDs inside the SPKI's AlgorithmIdentifier: rsaEncryption, id-ecPublicKey.
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    const EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let (key, ec) = if contains(spki, RSA) {
        (DecodingKey::from_rsa_pem(spki_pem.as_bytes()).map_err(|e| bad(&e.to_string()))?, false)
    } else if contains(spki, EC) {
        (DecodingKey::from_ec_pem(spki_pem.as_bytes()).map_err(|e| bad(&e.to_string()))?, true)
    } else {
        return Err(bad("only RSA and EC keys are supported"));
    };
    Ok(RegisteredCert { x5t_s256: URL_SAFE_NO_PAD.encode(Sha256::digest(&der)), key, ec })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// One DER TLV split off its input: (tag, whole TLV, contents, rest).
type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

/// The first DER TLV of `input`. Definite lengths only, as DER requires.
fn tlv(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, after_tag) = input.split_first()?;
    let (&first, mut after_len) = after_tag.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || after_len.len() < n {
            return None;
        }
        let len = after_len[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        after_len = &after_len[n..];
        len
    };
    if after_len.len() < len {
        return None;
    }
    let header = input.len() - after_len.len();
    Some((tag, &input[..header + len], &after_len[..len], &after_len[len..]))
}

/// The `subjectPublicKeyInfo` TLV of an X.509 certificate (RFC 5280 §4.1).
fn subject_public_key_info(der: &[u8]) -> Option<&[u8]> {
    let (_, _, certificate, _) = tlv(der)?;
    let (_, _, tbs, _) = tlv(certificate)?;
    let mut rest = tbs;
    // Optional explicit version [0].
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.3;
    }
    // serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        rest = tlv(rest)?.3;
    }
    let (tag, whole, _, _) = tlv(rest)?;
    (tag == 0x30).then_some(whole)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct AssertionClaims {
    aud: Audience,
    iss: String,
    sub: String,
    exp: serde_json::Number,
    nbf: Option<serde_json::Number>,
}

/// NumericDate as Unix seconds. MSAL for Python writes `exp`/`iat` as floats
/// (`1796401083.0008438`) and Entra accepts them, so fractions are allowed here (not in
/// access tokens); anything negative, huge or not finite is refused.
fn seconds(n: &serde_json::Number) -> Option<u64> {
    match n.as_u64() {
        Some(s) => Some(s),
        None => n.as_f64().filter(|f| f.is_finite() && *f >= 0.0 && *f < 1e11).map(|f| f as u64),
    }
}

fn invalid(code: u32, description: impl Into<String>) -> EntraError {
    EntraError::invalid_client(code, description)
}

/// Checks a client assertion as Entra does: signed by a certificate registered on `app`
/// (AADSTS700027), `iss` = `sub` = the client id (AADSTS700021), one audience that is this
/// token endpoint or the tenant's issuer (AADSTS5002741 for several, AADSTS700027 otherwise),
/// inside its validity window (AADSTS700024). No `jti` replay cache.
pub(crate) fn verify_client_assertion(
    app: &AppConfig,
    assertion: &str,
    accepted_audiences: &[String],
) -> Result<(), EntraError> {
    let malformed =
        || EntraError::bad_request("invalid_request", 50027, "Client assertion is invalid or malformed.");
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| malformed())?;
    // MSAL for Python sends the thumbprint base64url *with* padding; Entra accepts both.
    let thumbprint = header.x5t_s256.as_deref().map(|t| t.trim_end_matches('='));
    let Some(cert) = thumbprint.and_then(|t| {
        app.client_certificates.iter().filter_map(|pem| parse_certificate(pem).ok()).find(|c| c.x5t_s256 == t)
    }) else {
        return Err(invalid(
            700027,
            format!(
                "Client assertion failed signature validation. [Reason - The key used is not a certificate credential registered on application '{}' (only x5t#S256 is supported).]",
                app.client_id
            ),
        ));
    };
    let allowed: &[Algorithm] =
        if cert.ec { &[Algorithm::ES256] } else { &[Algorithm::RS256, Algorithm::PS256] };
    if !allowed.contains(&header.alg) {
        return Err(invalid(
            700027,
            "Client assertion failed signature validation. [Reason - Unsupported algorithm.]",
        ));
    }
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &cert.key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => invalid(
                700027,
                "Client assertion failed signature validation. [Reason - The provided signature value did not match the expected signature value.]",
            ),
            _ => malformed(),
        })?
        .claims;
    if claims.iss != app.client_id || claims.sub != app.client_id {
        return Err(invalid(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        ));
    }
    let aud = match claims.aud {
        Audience::One(a) => a,
        Audience::Many(mut all) if all.len() == 1 => all.remove(0),
        Audience::Many(_) => {
            return Err(invalid(5002741, "A client assertion must have exactly one audience."));
        }
    };
    if !accepted_audiences.iter().any(|a| a.trim_end_matches('/') == aud.trim_end_matches('/')) {
        return Err(invalid(
            700027,
            format!(
                "Client assertion failed signature validation. [Reason - The audience '{aud}' is not this token endpoint.]"
            ),
        ));
    }
    let exp = seconds(&claims.exp).ok_or_else(malformed)?;
    let nbf = match &claims.nbf {
        Some(n) => Some(seconds(n).ok_or_else(malformed)?),
        None => None,
    };
    let now = time::now();
    // Some clock skew (300 s) for `nbf` only: the assertion was just signed by the client.
    if exp <= now || nbf.is_some_and(|nbf| nbf > now + 300) {
        return Err(invalid(
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.",
                time::entra_iso_time(now),
                nbf.map(time::entra_iso_time).unwrap_or_default(),
                time::entra_iso_time(exp)
            ),
        ));
    }
    Ok(())
}
