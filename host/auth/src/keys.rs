//! Issuers and their key sets: OIDC discovery, JWKS fetching and caching.
//!
//! Each configured discovery URL is one [`Provider`]. Its state (issuer, key set) is read on
//! every request through a `std::sync::RwLock` (uncontended reads, no await), and replaced
//! whole after a successful fetch. Fetches are single-flight per provider (a `tokio` mutex);
//! a failed fetch never replaces the last good key set.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// Discovery documents and key sets larger than this are refused.
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
/// More keys than this in one set is not a real IdP.
const MAX_KEYS: usize = 100;
/// While no key set was ever loaded, fetch attempts are spaced at least this far apart.
pub(crate) const INITIAL_RETRY: Duration = Duration::from_secs(1);

/// What kind of key a JWK is; decides which algorithms may use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
}

/// A verification key from the issuer's JWKS.
pub(crate) struct VerifyKey {
    kind: KeyKind,
    /// The JWK's own `alg`, if it names one: then only that algorithm may use the key.
    alg: Option<Algorithm>,
    /// Entra's per-key `issuer` (possibly the `{tenantid}` template).
    pub(crate) issuer: Option<String>,
    pub(crate) decoding: DecodingKey,
}

impl VerifyKey {
    /// The algorithm is decided by the key: the token's `alg` is used only if this key can
    /// and may be used with it.
    pub(crate) fn permits(&self, alg: Algorithm) -> bool {
        let family_ok = match self.kind {
            KeyKind::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            KeyKind::EcP256 => alg == Algorithm::ES256,
            KeyKind::EcP384 => alg == Algorithm::ES384,
        };
        family_ok && self.alg.is_none_or(|a| a == alg)
    }
}

/// One successfully loaded provider state.
pub(crate) struct KeySet {
    /// The discovery document's `issuer` (exact, or with `{tenantid}`).
    pub(crate) issuer: String,
    pub(crate) jwks_uri: reqwest::Url,
    pub(crate) keys: HashMap<String, Arc<VerifyKey>>,
    /// `Cache-Control: max-age` of the JWKS response, if any.
    pub(crate) max_age: Option<Duration>,
}

impl KeySet {
    pub(crate) fn is_template(&self) -> bool {
        self.issuer.contains("{tenantid}")
    }

    /// Whether `iss` (with its `tid`) is this provider's issuer.
    pub(crate) fn matches_issuer(&self, iss: &str, tid: Option<&str>) -> bool {
        if self.is_template() {
            tid.is_some_and(|t| crate::token::is_guid(t) && self.issuer.replace("{tenantid}", t) == iss)
        } else {
            self.issuer == iss
        }
    }
}

/// Why a fetch failed (logged; never shown to callers).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("response larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("invalid document: {0}")]
    Invalid(&'static str),
}

/// Mutable bookkeeping, only touched while holding the provider's refresh lock.
#[derive(Default)]
pub(crate) struct RefreshState {
    /// When an unknown `kid` last caused a fetch (rate limit).
    pub(crate) last_unknown_kid_fetch: Option<Instant>,
    /// When any fetch was last attempted.
    pub(crate) last_attempt: Option<Instant>,
}

/// One issuer, reached through its discovery URL.
pub(crate) struct Provider {
    pub(crate) discovery_url: reqwest::Url,
    state: RwLock<Option<Arc<KeySet>>>,
    pub(crate) refresh: tokio::sync::Mutex<RefreshState>,
}

impl Provider {
    pub(crate) fn new(discovery_url: reqwest::Url) -> Self {
        Provider {
            discovery_url,
            state: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
        }
    }

    /// The current key set, if one was ever loaded.
    pub(crate) fn current(&self) -> Option<Arc<KeySet>> {
        self.state.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn replace(&self, set: KeySet) {
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(set));
    }

    /// Fetches discovery (unless `jwks_only` and already discovered) and the JWKS, and
    /// installs the result. The caller holds the refresh lock and bounds the time.
    pub(crate) async fn fetch(
        &self,
        client: &reqwest::Client,
        algorithms: &[Algorithm],
        jwks_only: bool,
    ) -> Result<(), FetchError> {
        let (issuer, jwks_uri) = match (jwks_only, self.current()) {
            (true, Some(set)) => (set.issuer.clone(), set.jwks_uri.clone()),
            _ => self.discover(client).await?,
        };
        let (body, max_age) = get(client, jwks_uri.clone()).await?;
        let keys = parse_jwks(&body, algorithms)?;
        tracing::debug!(issuer = %issuer, keys = keys.len(), "JWKS loaded");
        self.replace(KeySet { issuer, jwks_uri, keys, max_age });
        Ok(())
    }

    async fn discover(&self, client: &reqwest::Client) -> Result<(String, reqwest::Url), FetchError> {
        let (body, _) = get(client, self.discovery_url.clone()).await?;
        let doc: Value =
            serde_json::from_slice(&body).map_err(|_| FetchError::Invalid("discovery is not JSON"))?;
        let issuer = doc
            .get("issuer")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(FetchError::Invalid("discovery has no issuer"))?;
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .and_then(|s| reqwest::Url::parse(s).ok())
            .filter(|u| u.scheme() == "https")
            .ok_or(FetchError::Invalid("discovery has no https jwks_uri"))?;
        Ok((issuer.to_owned(), jwks_uri))
    }
}

/// GET with a body size cap; returns the body and the `Cache-Control: max-age`, if any.
async fn get(client: &reqwest::Client, url: reqwest::Url) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
    let mut response = client.get(url).header(http::header::ACCEPT, "application/json").send().await?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    let max_age = response
        .headers()
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_max_age);
    if response.content_length().is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64) {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, max_age))
}

/// `max-age=N` from a Cache-Control value; `no-cache`/`no-store` count as 0.
pub(crate) fn parse_max_age(value: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(Duration::ZERO);
        }
        if let Some(n) = lower.strip_prefix("max-age=") {
            max_age = n.trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    max_age
}

/// Parses a JWKS, keeping only signature keys we can use safely: RSA (≥ 2048 bits) and EC
/// P-256/P-384. Symmetric (`oct`) and other keys are dropped, never turned into HMAC secrets.
pub(crate) fn parse_jwks(
    body: &[u8],
    algorithms: &[Algorithm],
) -> Result<HashMap<String, Arc<VerifyKey>>, FetchError> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| FetchError::Invalid("JWKS is not JSON"))?;
    let list =
        doc.get("keys").and_then(Value::as_array).ok_or(FetchError::Invalid("JWKS has no keys array"))?;
    if list.len() > MAX_KEYS {
        return Err(FetchError::Invalid("JWKS has too many keys"));
    }
    let mut keys = HashMap::new();
    for jwk in list {
        let Some(kid) = jwk.get("kid").and_then(Value::as_str) else {
            continue;
        };
        if jwk.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
            continue;
        }
        let alg = match jwk.get("alg") {
            None => None,
            Some(v) => match v.as_str().and_then(|a| a.parse::<Algorithm>().ok()) {
                Some(a) => Some(a),
                None => continue,
            },
        };
        let Some((kind, decoding)) = key_material(jwk) else {
            continue;
        };
        let key = VerifyKey {
            kind,
            alg,
            issuer: jwk.get("issuer").and_then(Value::as_str).map(str::to_owned),
            decoding,
        };
        if !algorithms.iter().any(|a| key.permits(*a)) {
            continue;
        }
        if keys.contains_key(kid) {
            // Two keys under one kid: ambiguous, so neither is used.
            tracing::warn!(kid, "JWKS has duplicate kid; ignoring both keys");
            keys.insert(kid.to_owned(), None);
            continue;
        }
        keys.insert(kid.to_owned(), Some(Arc::new(key)));
    }
    let keys: HashMap<_, _> = keys.into_iter().filter_map(|(kid, key)| key.map(|k| (kid, k))).collect();
    if keys.is_empty() {
        return Err(FetchError::Invalid("JWKS has no usable signing key"));
    }
    Ok(keys)
}

fn key_material(jwk: &Value) -> Option<(KeyKind, DecodingKey)> {
    let s = |name: &str| jwk.get(name).and_then(Value::as_str);
    match s("kty")? {
        "RSA" => {
            let (n, e) = (s("n")?, s("e")?);
            let modulus = URL_SAFE_NO_PAD.decode(n).ok()?;
            let significant = modulus.iter().skip_while(|b| **b == 0).count();
            if significant < 256 {
                return None; // under 2048 bits
            }
            DecodingKey::from_rsa_components(n, e).ok().map(|k| (KeyKind::Rsa, k))
        }
        "EC" => {
            let (kind, len) = match s("crv")? {
                "P-256" => (KeyKind::EcP256, 32),
                "P-384" => (KeyKind::EcP384, 48),
                _ => return None,
            };
            let (x, y) = (s("x")?, s("y")?);
            let ok = |c: &str| URL_SAFE_NO_PAD.decode(c).is_ok_and(|b| b.len() == len);
            if !ok(x) || !ok(y) {
                return None;
            }
            DecodingKey::from_ec_components(x, y).ok().map(|k| (kind, k))
        }
        _ => None,
    }
}
