//! What the devstack's resource-server stand-ins (ServiceNow, Microsoft Graph) do alike when
//! they verify a bearer JWT: find the RSA signing key named by the token's `kid` in the IdP's
//! JWKS, refetching the set (at most once per interval, one fetch at a time) when a token
//! names an unknown key, and refuse JWS headers that bring their own key or extensions.
//!
//! How a set is fetched (a `jwks_uri`, a discovery document) and how each failure is told to
//! the client stay with each stand-in: they answer as the service they stand in for does.

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use jsonwebtoken::{DecodingKey, Header};
use std::future::Future;
use std::time::{Duration, Instant};

/// Why no key could be had for a `kid`. `E` is the stand-in's own fetch error.
#[derive(Debug)]
pub enum KeyError<E> {
    /// No key of that `kid`, in the set held or (when a fetch was allowed) in a fresh one.
    Unknown,
    /// Fetching the set failed.
    Fetch(E),
    /// The key is not an RSA key.
    NotRsa,
    /// The key's `use` is not `sig`.
    NotSigning,
    /// The key could not be turned into a verification key.
    Unusable(jsonwebtoken::errors::Error),
}

struct Held {
    keys: Option<JwkSet>,
    fetched_at: Option<Instant>,
}

/// The signing keys of one IdP, as a stand-in holds them.
pub struct KeyCache {
    refetch_interval: Duration,
    // A tokio mutex so concurrent first requests fetch the JWKS once (single flight).
    held: tokio::sync::Mutex<Held>,
}

impl KeyCache {
    /// A cache starting with `keys` (a fixed set, for tests) or empty (fetched on first use);
    /// a fetch for an unknown `kid` happens at most once per `refetch_interval`.
    pub fn new(keys: Option<JwkSet>, refetch_interval: Duration) -> Self {
        Self { refetch_interval, held: tokio::sync::Mutex::new(Held { keys, fetched_at: None }) }
    }

    /// The RSA signing key `kid`. When the held set lacks it and `fetch` is given (a remote
    /// set), `fetch` is called for a new set, unless one was fetched less than the refetch
    /// interval ago; the new set replaces the held one whether or not it has the key.
    pub async fn key<E, F, Fut>(&self, kid: &str, fetch: Option<F>) -> Result<DecodingKey, KeyError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<JwkSet, E>>,
    {
        let mut held = self.held.lock().await;
        let known = held.keys.as_ref().and_then(|set| set.find(kid)).cloned();
        let jwk = match (known, fetch) {
            (Some(jwk), _) => jwk,
            (None, None) => return Err(KeyError::Unknown),
            (None, Some(fetch)) => {
                if held.fetched_at.is_some_and(|at| at.elapsed() < self.refetch_interval) {
                    return Err(KeyError::Unknown);
                }
                held.fetched_at = Some(Instant::now());
                let set = fetch().await.map_err(KeyError::Fetch)?;
                let jwk = set.find(kid).cloned();
                held.keys = Some(set);
                jwk.ok_or(KeyError::Unknown)?
            }
        };
        drop(held);
        if !matches!(jwk.algorithm, AlgorithmParameters::RSA(_)) {
            return Err(KeyError::NotRsa);
        }
        if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
            return Err(KeyError::NotSigning);
        }
        DecodingKey::from_jwk(&jwk).map_err(KeyError::Unusable)
    }
}

/// Whether a JWS header carries a parameter a resource server must refuse: keys come only
/// from the configured JWKS, so a token naming its own key (`jku`, `jwk`, `x5u`, `x5c`) is
/// refused, and so are extensions not implemented here (`crit`, RFC 7515 §4.1.11; `enc`,
/// `zip`).
pub fn has_forbidden_parameter(header: &Header) -> bool {
    header.jku.is_some()
        || header.jwk.is_some()
        || header.x5u.is_some()
        || header.x5c.is_some()
        || header.crit.is_some()
        || header.enc.is_some()
        || header.zip.is_some()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A JWKS with one RSA signing key `kid` (a fixed public key; no private key needed).
    fn set(kid: &str, use_: &str) -> JwkSet {
        serde_json::from_value(serde_json::json!({ "keys": [{
            "kty": "RSA", "kid": kid, "use": use_, "alg": "RS256", "e": "AQAB",
            "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw"
        }]}))
        .unwrap()
    }

    /// A fetch that never runs: for a fixed set.
    type NoFetch = fn() -> std::future::Ready<Result<JwkSet, ()>>;

    fn no_fetch() -> Option<NoFetch> {
        None
    }

    #[tokio::test]
    async fn a_fixed_set_answers_known_keys_and_refuses_unknown_ones() {
        let cache = KeyCache::new(Some(set("k1", "sig")), Duration::ZERO);
        assert!(cache.key("k1", no_fetch()).await.is_ok());
        assert!(matches!(cache.key("k2", no_fetch()).await, Err(KeyError::Unknown)));
        let enc = KeyCache::new(Some(set("k1", "enc")), Duration::ZERO);
        assert!(matches!(enc.key("k1", no_fetch()).await, Err(KeyError::NotSigning)));
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_at_most_once_per_interval() {
        let fetches = AtomicU32::new(0);
        let fetch = |kid: &'static str| {
            let fetches = &fetches;
            move || async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ()>(set(kid, "sig"))
            }
        };
        let cache = KeyCache::new(None, Duration::from_secs(3600));
        assert!(cache.key("k1", Some(fetch("k1"))).await.is_ok());
        // Known now: no fetch.
        assert!(cache.key("k1", Some(fetch("k1"))).await.is_ok());
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // Unknown, but fetched within the interval: refused without a fetch.
        assert!(matches!(cache.key("k2", Some(fetch("k2"))).await, Err(KeyError::Unknown)));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // With no interval, an unknown kid fetches again; a failed fetch is the fetch's error.
        let cache = KeyCache::new(Some(set("k1", "sig")), Duration::ZERO);
        assert!(cache.key("k2", Some(fetch("k2"))).await.is_ok());
        let failing = || async { Err::<JwkSet, _>("down") };
        assert!(matches!(cache.key("k3", Some(failing)).await, Err(KeyError::Fetch("down"))));
    }

    #[test]
    fn headers_that_bring_their_own_key_are_refused() {
        let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
        assert!(!has_forbidden_parameter(&header));
        header.jku = Some("https://attacker.example/jwks".into());
        assert!(has_forbidden_parameter(&header));
        let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
        header.crit = Some(vec!["exp".into()]);
        assert!(has_forbidden_parameter(&header));
    }
}
