//! Resource-server authentication, like ServiceNow's OIDC inbound integration: the bearer
//! JWT is verified (RS256) against the IdP's JWKS, `iss` must be the configured issuer and
//! `aud` the API connector's client id (the audience of the OBO Token B). Every failure is
//! the same 401 to the client; the reason goes to the log, the token nowhere.

use std::time::Duration;

use delegate_devstack_jwks::{KeyCache, KeyError};
use delegate_secret::Secret;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Where the sandbox gets the IdP's signing keys.
#[derive(Clone)]
pub enum JwksSource {
    /// A fixed key set (tests).
    Static(JwkSet),
    /// The IdP's `jwks_uri`, fetched with the caller's client (which trusts the devstack CA).
    /// Fetched on first use and again when a token names an unknown `kid` (at most once per
    /// [`ServiceNowConfig::jwks_refetch_interval`](crate::ServiceNowConfig)).
    Remote {
        /// The JWKS URL (http or https).
        url: String,
        /// The HTTP client used to fetch it.
        client: reqwest::Client,
    },
    /// The IdP's OIDC discovery document, as ServiceNow's OIDC provider configuration takes
    /// it ("OIDC Metadata URL", e.g. `.../{tid}/v2.0/.well-known/openid-configuration`): its
    /// `issuer` must equal [`ServiceNowConfig::issuer`](crate::ServiceNowConfig) and its
    /// `jwks_uri` is then fetched and refetched like [`JwksSource::Remote`].
    Discovery {
        /// The discovery document URL (http or https).
        url: String,
        /// The HTTP client used to fetch it and the JWKS.
        client: reqwest::Client,
    },
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static(set) => f.debug_tuple("Static").field(&set.keys.len()).finish(),
            Self::Remote { url, .. } => f.debug_struct("Remote").field("url", url).finish(),
            Self::Discovery { url, .. } => f.debug_struct("Discovery").field("url", url).finish(),
        }
    }
}

/// Why a bearer token was refused (logged, never shown to the client beyond "401").
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("no Authorization: Bearer header")]
    Missing,
    #[error("Authorization header is not a well-formed bearer token")]
    Malformed,
    #[error("token header rejected: {0}")]
    Header(&'static str),
    #[error("no signing key for the token's kid")]
    UnknownKey,
    #[error("could not fetch the JWKS: {0}")]
    Jwks(String),
    #[error("token rejected: {0}")]
    Invalid(&'static str),
    #[error("token lacks the string claim {0}")]
    MissingUserClaim(String),
}

/// A fixed name for a `jsonwebtoken` failure: its JSON/base64 errors can quote parts of the
/// token, and nothing from the token goes into a log.
fn reason(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidToken => "malformed token",
        K::InvalidSignature => "bad signature",
        K::ExpiredSignature => "expired",
        K::ImmatureSignature => "not yet valid (nbf)",
        K::InvalidIssuer => "wrong issuer",
        K::InvalidAudience => "wrong audience",
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::MissingAlgorithm => "algorithm not allowed",
        K::MissingRequiredClaim(_) => "missing required claim",
        K::InvalidClaimFormat(_) => "malformed claim",
        K::InvalidRsaKey(_) | K::InvalidKeyFormat => "unusable key",
        K::Base64(_) | K::Json(_) | K::Utf8(_) => "undecodable token",
        _ => "invalid token",
    }
}

/// Largest accepted Authorization header (Entra tokens with many groups grow large).
const MAX_AUTHORIZATION_LEN: usize = 16 * 1024;
/// Largest accepted JWKS document.
const MAX_JWKS_LEN: usize = 1024 * 1024;

/// The two fields of an OIDC discovery document the sandbox needs.
#[derive(serde::Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// Verifies bearer tokens for one sandbox.
pub(crate) struct Verifier {
    issuer: String,
    audience: String,
    user_claim: String,
    leeway: u64,
    source: JwksSource,
    keys: KeyCache,
    /// Who each accepted token named (never the token): for tests of delegation chains.
    seen: std::sync::Mutex<std::collections::VecDeque<SeenToken>>,
}

/// How many [`SeenToken`]s are kept (the oldest are dropped).
const SEEN_CAPACITY: usize = 256;

/// The identity claims of one token the sandbox accepted: who the user is, which app
/// presented it (`azp`/`appid`) and the delegation chain (`act`), as a test would want to see
/// them. Holds no token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenToken {
    /// The user claim's value (e.g. `preferred_username`).
    pub user: String,
    /// `azp` (v2) or `appid` (v1): the client that obtained the token.
    pub client_id: Option<String>,
    /// The `act` claim (RFC 8693 §4.1), as issued.
    pub act: Option<Value>,
}

impl Verifier {
    pub(crate) fn new(
        issuer: String,
        audience: String,
        user_claim: String,
        leeway: u64,
        refetch_interval: Duration,
        source: JwksSource,
    ) -> Self {
        let keys = match &source {
            JwksSource::Static(set) => Some(set.clone()),
            JwksSource::Remote { .. } | JwksSource::Discovery { .. } => None,
        };
        Self {
            issuer,
            audience,
            user_claim,
            leeway,
            source,
            keys: KeyCache::new(keys, refetch_interval),
            seen: std::sync::Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// The bearer token from an `Authorization` header value, boxed as a [`Secret`].
    pub(crate) fn bearer(header: Option<&http::HeaderValue>) -> Result<Secret, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        if header.len() > MAX_AUTHORIZATION_LEN {
            return Err(AuthError::Malformed);
        }
        let value = header.to_str().map_err(|_| AuthError::Malformed)?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Missing);
        }
        let token = token.trim();
        if token.is_empty() || token.split('.').count() != 3 {
            return Err(AuthError::Malformed);
        }
        Ok(Secret::new(token))
    }

    async fn fetch<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        client: &reqwest::Client,
    ) -> Result<T, AuthError> {
        let response = client
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| AuthError::Jwks(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(AuthError::Jwks(format!("status {}", response.status())));
        }
        if response.content_length().is_some_and(|n| n > MAX_JWKS_LEN as u64) {
            return Err(AuthError::Jwks("document too large".into()));
        }
        let body = response.bytes().await.map_err(|e| AuthError::Jwks(e.without_url().to_string()))?;
        if body.len() > MAX_JWKS_LEN {
            return Err(AuthError::Jwks("document too large".into()));
        }
        serde_json::from_slice(&body).map_err(|e| AuthError::Jwks(format!("unexpected document: {e}")))
    }

    /// The JWKS, from `url` or through the discovery document at `url`.
    async fn fetch_set(&self, url: &str, client: &reqwest::Client) -> Result<JwkSet, AuthError> {
        let jwks_url = match &self.source {
            JwksSource::Discovery { .. } => {
                let doc: Discovery = self.fetch(url, client).await?;
                if doc.issuer != self.issuer {
                    return Err(AuthError::Jwks("discovery document names another issuer".into()));
                }
                doc.jwks_uri
            }
            _ => url.to_owned(),
        };
        self.fetch(&jwks_url, client).await
    }

    /// The RSA signing key with `kid`, refetching a remote JWKS once when it is unknown.
    async fn key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        let fetch = match &self.source {
            JwksSource::Static(_) => None,
            JwksSource::Remote { url, client } | JwksSource::Discovery { url, client } => {
                Some(|| self.fetch_set(url, client))
            }
        };
        self.keys.key(kid, fetch).await.map_err(|e| match e {
            KeyError::Unknown => AuthError::UnknownKey,
            KeyError::Fetch(e) => e,
            KeyError::NotRsa => AuthError::Header("key is not RSA"),
            KeyError::NotSigning => AuthError::Header("key is not a signing key"),
            KeyError::Unusable(e) => AuthError::Invalid(reason(&e)),
        })
    }

    /// Verifies `token` and returns the user claim's value (e.g. `preferred_username`).
    pub(crate) async fn verify(&self, token: &Secret) -> Result<String, AuthError> {
        let header =
            jsonwebtoken::decode_header(token.expose()).map_err(|e| AuthError::Invalid(reason(&e)))?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Header("alg is not RS256"));
        }
        if delegate_devstack_jwks::has_forbidden_parameter(&header) {
            return Err(AuthError::Header("forbidden header parameter"));
        }
        let kid = header.kid.ok_or(AuthError::Header("no kid"))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token.expose(), &key, &validation)
            .map_err(|e| AuthError::Invalid(reason(&e)))?;
        let user = match data.claims.get(&self.user_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(AuthError::MissingUserClaim(self.user_claim.clone())),
        };
        let client_id = ["azp", "appid"]
            .iter()
            .find_map(|c| data.claims.get(*c).and_then(Value::as_str))
            .map(str::to_owned);
        let seen = SeenToken { user: user.clone(), client_id, act: data.claims.get("act").cloned() };
        let mut log = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if log.len() == SEEN_CAPACITY {
            log.pop_front();
        }
        log.push_back(seen);
        Ok(user)
    }

    /// The tokens accepted so far (oldest first, at most [`SEEN_CAPACITY`]).
    pub(crate) fn seen(&self) -> Vec<SeenToken> {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect()
    }
}
