//! Access-token validation as Microsoft Graph does it: an RS256 JWT signed by a key of the
//! tenant's JWKS, issued for the configured tenant, with Graph's audience, inside its
//! validity window, and carrying a delegated `scp` (or app `roles`) that allows reading users.
//!
//! The signature is checked first; only then are the claims trusted and checked one by one, so
//! each refusal gets Graph's own message and the stand-in can record what audience a refused
//! (but genuine) token had. Nothing from the token reaches a log or an error body.

use std::time::Duration;

use delegate_devstack_jwks::{KeyCache, KeyError};
use delegate_secret::Secret;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Where the stand-in gets the IdP's signing keys.
#[derive(Clone)]
pub enum JwksSource {
    /// A fixed key set (tests).
    Static(JwkSet),
    /// The IdP's `jwks_uri`, fetched on first use and again (at most once per
    /// [`GraphConfig::jwks_refetch_interval`](crate::GraphConfig)) when a token names an
    /// unknown `kid`.
    Remote {
        /// The JWKS URL (http or https).
        url: String,
        /// The HTTP client used to fetch it (it must trust the IdP's CA).
        client: reqwest::Client,
    },
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static(set) => f.debug_tuple("Static").field(&set.keys.len()).finish(),
            Self::Remote { url, .. } => f.debug_struct("Remote").field("url", url).finish(),
        }
    }
}

/// The audiences Graph accepts: its resource URI (v1 tokens, with or without the trailing
/// slash) and its application id.
pub const GRAPH_AUDIENCES: [&str; 3] =
    ["https://graph.microsoft.com", "https://graph.microsoft.com/", crate::GRAPH_APP_ID];

/// Delegated scopes that let the signed-in user read their own profile and manager.
const SELF_SCOPES: [&str; 8] = [
    "User.Read",
    "User.ReadWrite",
    "User.ReadBasic.All",
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
    "Directory.AccessAsUser.All",
];

/// Delegated scopes that let the signed-in user read other users' full profiles.
const ALL_USERS_SCOPES: [&str; 5] = [
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
    "Directory.AccessAsUser.All",
];

/// App roles (client credentials) that let an app read users.
const APP_ROLES: [&str; 4] =
    ["User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"];

/// Why a token was refused; `message()` is the text Graph puts in the error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `Authorization: Bearer` header (or an empty one).
    #[error("no bearer token")]
    Missing,
    /// Not a compact JWS.
    #[error("not a JWT")]
    Malformed,
    /// Bad signature, unknown key, forbidden header, or undecodable claims.
    #[error("signature or header rejected")]
    Signature,
    /// The JWKS could not be fetched.
    #[error("signing keys unavailable")]
    Keys,
    /// `aud` is not Graph's.
    #[error("wrong audience")]
    Audience,
    /// `iss` is not one of the configured issuers.
    #[error("wrong issuer")]
    Issuer,
    /// `tid` is not the configured tenant.
    #[error("wrong tenant")]
    Tenant,
    /// Expired or not yet valid.
    #[error("outside its validity window")]
    Lifetime,
    /// No scope or role that allows reading users.
    #[error("insufficient scope")]
    Scope,
}

impl Refusal {
    /// Graph's HTTP status for this refusal: 401, except 403 for a valid token lacking
    /// permissions.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Self::Scope => 403,
            _ => 401,
        }
    }

    /// Graph's error code.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::Scope => "Authorization_RequestDenied",
            _ => "InvalidAuthenticationToken",
        }
    }

    /// Graph's error message.
    pub(crate) fn message(&self) -> &'static str {
        match self {
            Self::Missing => "Access token is empty.",
            Self::Malformed => {
                "IDX14100: JWT is not well formed, there are no dots (.). The token needs to be in JWS or JWE Compact Serialization Format."
            }
            Self::Signature | Self::Keys => "Access token validation failure.",
            Self::Audience => "Access token validation failure. Invalid audience.",
            Self::Issuer | Self::Tenant => "Access token validation failure. Invalid issuer.",
            Self::Lifetime => "Lifetime validation failed, the token is expired.",
            Self::Scope => "Insufficient privileges to complete the operation.",
        }
    }
}

/// What a verified token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    /// A delegated token for the user with object id `oid`.
    User {
        /// The `oid` claim.
        oid: String,
        /// Whether the scopes allow reading other users' full profiles.
        read_all: bool,
        /// Whether the scopes allow reading other users' basic profiles.
        read_basic: bool,
    },
    /// An app-only token with a role that allows reading every user.
    App,
}

/// The claims of a token whose signature verified, kept for the record of what was seen.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen {
    pub(crate) audience: Option<String>,
    pub(crate) oid: Option<String>,
    pub(crate) scopes: Option<String>,
}

/// Largest accepted Authorization header.
const MAX_AUTHORIZATION_LEN: usize = 16 * 1024;
/// Largest accepted JWKS document.
const MAX_JWKS_LEN: usize = 1024 * 1024;

/// Verifies bearer tokens for one stand-in.
pub(crate) struct Verifier {
    issuers: Vec<String>,
    tenant: String,
    leeway: u64,
    source: JwksSource,
    keys: KeyCache,
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Verifier {
    pub(crate) fn new(
        issuers: Vec<String>,
        tenant: String,
        leeway: u64,
        refetch_interval: Duration,
        source: JwksSource,
    ) -> Self {
        let keys = match &source {
            JwksSource::Static(set) => Some(set.clone()),
            JwksSource::Remote { .. } => None,
        };
        Self { issuers, tenant, leeway, source, keys: KeyCache::new(keys, refetch_interval) }
    }

    /// The bearer token of an `Authorization` header value, boxed as a [`Secret`].
    pub(crate) fn bearer(header: Option<&http::HeaderValue>) -> Result<Secret, Refusal> {
        let header = header.ok_or(Refusal::Missing)?;
        if header.len() > MAX_AUTHORIZATION_LEN {
            return Err(Refusal::Malformed);
        }
        let value = header.to_str().map_err(|_| Refusal::Malformed)?;
        let Some((scheme, token)) = value.split_once(' ') else {
            return Err(Refusal::Missing);
        };
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(Refusal::Missing);
        }
        let token = token.trim();
        if token.split('.').count() != 3 {
            return Err(Refusal::Malformed);
        }
        Ok(Secret::new(token))
    }

    async fn fetch_jwks(url: &str, client: &reqwest::Client) -> Result<JwkSet, Refusal> {
        let fail = |what: &str| {
            tracing::warn!(what, "devstack Graph could not fetch the JWKS");
            Refusal::Keys
        };
        let response = client
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|_| fail("request failed"))?;
        if !response.status().is_success() {
            return Err(fail("non-success status"));
        }
        let body = response.bytes().await.map_err(|_| fail("body failed"))?;
        if body.len() > MAX_JWKS_LEN {
            return Err(fail("document too large"));
        }
        serde_json::from_slice(&body).map_err(|_| fail("not a JWKS"))
    }

    /// The RSA signing key `kid`, refetching a remote JWKS (rate-limited) when it is unknown.
    async fn key(&self, kid: &str) -> Result<DecodingKey, Refusal> {
        let fetch = match &self.source {
            JwksSource::Static(_) => None,
            JwksSource::Remote { url, client } => Some(|| Self::fetch_jwks(url, client)),
        };
        // Graph tells the client "signing keys unavailable" apart; every other key problem is
        // a bad signature.
        self.keys.key(kid, fetch).await.map_err(|e| match e {
            KeyError::Fetch(refusal) => refusal,
            KeyError::Unknown | KeyError::NotRsa | KeyError::NotSigning | KeyError::Unusable(_) => {
                Refusal::Signature
            }
        })
    }

    /// Verifies `token`; `seen` receives its audience, `oid` and `scp` once the signature
    /// checked out (also when a later check refuses it).
    pub(crate) async fn verify(&self, token: &Secret, seen: &mut Seen) -> Result<Principal, Refusal> {
        let header = jsonwebtoken::decode_header(token.expose()).map_err(|_| Refusal::Signature)?;
        if header.alg != Algorithm::RS256 || delegate_devstack_jwks::has_forbidden_parameter(&header) {
            return Err(Refusal::Signature);
        }
        let kid = header.kid.ok_or(Refusal::Signature)?;
        let key = self.key(&kid).await?;
        // The signature only; the claims are checked below so each refusal has its own text.
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token.expose(), &key, &validation)
            .map_err(|_| Refusal::Signature)?
            .claims;
        let string = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let audiences: Vec<String> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(all)) => all.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        seen.audience = (!audiences.is_empty()).then(|| audiences.join(" "));
        seen.oid = string("oid");
        seen.scopes = string("scp");

        if !audiences.iter().any(|a| GRAPH_AUDIENCES.iter().any(|g| g.eq_ignore_ascii_case(a))) {
            return Err(Refusal::Audience);
        }
        if !string("iss").is_some_and(|iss| self.issuers.contains(&iss)) {
            return Err(Refusal::Issuer);
        }
        if !string("tid").is_some_and(|tid| tid.eq_ignore_ascii_case(&self.tenant)) {
            return Err(Refusal::Tenant);
        }
        let now = now();
        let exp = claims.get("exp").and_then(Value::as_u64).ok_or(Refusal::Lifetime)?;
        let nbf = claims.get("nbf").and_then(Value::as_u64);
        if exp.saturating_add(self.leeway) <= now
            || nbf.is_some_and(|nbf| nbf > now.saturating_add(self.leeway))
        {
            return Err(Refusal::Lifetime);
        }
        let scopes: Vec<String> =
            seen.scopes.as_deref().unwrap_or("").split_ascii_whitespace().map(str::to_owned).collect();
        if !scopes.is_empty() {
            let has = |set: &[&str]| scopes.iter().any(|s| set.iter().any(|x| x.eq_ignore_ascii_case(s)));
            if !has(&SELF_SCOPES) {
                return Err(Refusal::Scope);
            }
            let oid = seen.oid.clone().ok_or(Refusal::Signature)?;
            return Ok(Principal::User {
                oid,
                read_all: has(&ALL_USERS_SCOPES),
                read_basic: has(&ALL_USERS_SCOPES) || has(&["User.ReadBasic.All"]),
            });
        }
        let roles: Vec<&str> = claims
            .get("roles")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if roles.iter().any(|r| APP_ROLES.contains(r)) {
            return Ok(Principal::App);
        }
        Err(Refusal::Scope)
    }
}
