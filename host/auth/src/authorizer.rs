//! The authorizer: `Authorization` header in, [`VerifiedCaller`] out.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use delegate_secret::Secret;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http::HeaderMap;

use crate::config::{AuthSettings, ClaimMatch};
use crate::keys::{INITIAL_RETRY, KeySet, Provider, VerifyKey};
use crate::token::{Claims, UnverifiedToken, bearer_token, delegation_chain, is_guid, parse};
use crate::{AuthError, VerifiedCaller};

struct Inner {
    settings: AuthSettings,
    client: reqwest::Client,
    providers: Vec<Provider>,
}

/// Verifies inbound bearer tokens. Cheap to clone (shared caches).
///
/// Start-up does not need the IdP: keys are fetched on first use or by the background task
/// ([`Authorizer::spawn_refresh`]), so the server starts while the IdP is down and starts
/// accepting tokens once it is reachable. Until a key set was loaded, requests fail with
/// [`AuthError::KeysUnavailable`] (503) after at most the fetch timeout.
#[derive(Clone)]
pub struct Authorizer(Arc<Inner>);

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.0.providers.iter().map(|p| p.discovery_url.as_str()).collect();
        f.debug_struct("Authorizer").field("discovery_urls", &urls).finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Authorizer {
    /// An authorizer for `settings`, fetching through `client` (build it with
    /// `delegate_outbound::build_client`; its timeouts apply in addition to the fetch timeout).
    /// Fetches nothing yet.
    pub fn new(settings: AuthSettings, client: reqwest::Client) -> Authorizer {
        let providers = settings.discovery_urls.iter().cloned().map(Provider::new).collect();
        Authorizer(Arc::new(Inner { settings, client, providers }))
    }

    /// Loads every provider's discovery document and key set now (e.g. at start, for a
    /// readiness signal). Errors are also logged; the authorizer keeps working either way.
    pub async fn warm_up(&self) -> Result<(), AuthError> {
        let mut result = Ok(());
        for provider in &self.0.providers {
            let mut state = provider.refresh.lock().await;
            state.last_attempt = Some(Instant::now());
            if let Err(e) = self.fetch(provider, false).await {
                result = Err(e);
            }
        }
        result
    }

    /// Whether every provider has a key set loaded.
    pub fn is_ready(&self) -> bool {
        self.0.providers.iter().all(|p| p.current().is_some())
    }

    /// Starts the background refresh: loads keys now (retrying while the IdP is down), then
    /// refreshes discovery and JWKS at the interval the JWKS `Cache-Control: max-age` asks for,
    /// bounded by `jwks_refresh_min_seconds` and `jwks_refresh_max_seconds`. A failed refresh
    /// keeps the last good key set and is retried sooner. The task ends when the last clone of
    /// the authorizer is dropped.
    pub fn spawn_refresh(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let this = Authorizer(inner);
                let mut next = this.0.settings.refresh_max;
                for provider in &this.0.providers {
                    let wait = {
                        let mut state = provider.refresh.lock().await;
                        state.last_attempt = Some(Instant::now());
                        match this.fetch(provider, false).await {
                            Ok(()) => provider
                                .current()
                                .and_then(|s| s.max_age)
                                .unwrap_or(this.0.settings.refresh_max),
                            // Retry sooner, but never hammer the IdP.
                            Err(_) => this.0.settings.refresh_min.min(Duration::from_secs(30)),
                        }
                    };
                    next = next.min(wait);
                }
                let next = next.clamp(
                    this.0.settings.refresh_min.min(Duration::from_secs(30)),
                    this.0.settings.refresh_max,
                );
                // A successful refresh waits at least refresh_min.
                let next = if this.is_ready() { next.max(this.0.settings.refresh_min) } else { next };
                drop(this);
                tokio::time::sleep(next).await;
            }
        })
    }

    /// One bounded fetch; the caller holds the provider's refresh lock.
    async fn fetch(&self, provider: &Provider, jwks_only: bool) -> Result<(), AuthError> {
        let s = &self.0.settings;
        match tokio::time::timeout(s.fetch_timeout, provider.fetch(&self.0.client, &s.algorithms, jwks_only))
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                tracing::warn!(discovery_url = %provider.discovery_url, %error, "IdP key fetch failed; keeping the last good key set");
                Err(AuthError::KeysUnavailable)
            }
            Err(_) => {
                tracing::warn!(discovery_url = %provider.discovery_url, "IdP key fetch timed out; keeping the last good key set");
                Err(AuthError::KeysUnavailable)
            }
        }
    }

    /// Makes sure `provider` has a key set, fetching once (single-flight; attempts spaced by
    /// [`INITIAL_RETRY`]) if it never had one.
    async fn ensure_loaded(&self, provider: &Provider) -> Option<Arc<KeySet>> {
        if let Some(set) = provider.current() {
            return Some(set);
        }
        let mut state = provider.refresh.lock().await;
        if let Some(set) = provider.current() {
            return Some(set); // another request loaded it while we waited
        }
        if state.last_attempt.is_some_and(|t| t.elapsed() < INITIAL_RETRY) {
            return None;
        }
        state.last_attempt = Some(Instant::now());
        let _ = self.fetch(provider, false).await;
        provider.current()
    }

    /// The key `kid` of `provider`; on a miss, one JWKS refresh per `jwks_refresh_min_seconds`
    /// (single-flight: concurrent misses wait for the same fetch).
    async fn key(&self, provider: &Provider, kid: &str) -> Result<Arc<VerifyKey>, AuthError> {
        if let Some(key) = provider.current().and_then(|s| s.keys.get(kid).cloned()) {
            return Ok(key);
        }
        let mut state = provider.refresh.lock().await;
        if let Some(key) = provider.current().and_then(|s| s.keys.get(kid).cloned()) {
            return Ok(key);
        }
        if state.last_unknown_kid_fetch.is_some_and(|t| t.elapsed() < self.0.settings.refresh_min) {
            return Err(AuthError::UnknownKey);
        }
        state.last_unknown_kid_fetch = Some(Instant::now());
        state.last_attempt = Some(Instant::now());
        let _ = self.fetch(provider, true).await;
        provider.current().and_then(|s| s.keys.get(kid).cloned()).ok_or(AuthError::UnknownKey)
    }

    /// Verifies the request's bearer token and every configured rule.
    ///
    /// Never waits longer than the fetch timeout (plus the time to verify). The returned
    /// caller holds the raw token as a [`Secret`] for the vault.
    pub async fn authorize(&self, headers: &HeaderMap) -> Result<VerifiedCaller, AuthError> {
        let s = &self.0.settings;
        let raw = bearer_token(headers, s.max_token_bytes)?;
        if raw.len() > s.max_token_bytes {
            return Err(AuthError::TokenTooLarge);
        }
        let token = parse(raw, &s.algorithms)?;
        match tokio::time::timeout(s.fetch_timeout, self.verify(&token)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            // Only reachable when waiting for keys: the IdP is slow or down. Without any key
            // set loaded yet, the token cannot be judged at all: "unavailable" (503, retry),
            // not "your token is bad" (401, which sends users to sign in again for nothing).
            Err(_) if self.0.providers.iter().all(|p| p.current().is_none()) => {
                return Err(AuthError::KeysUnavailable);
            }
            Err(_) => return Err(AuthError::UnknownKey),
        }
        let mut caller = self.check_claims(&token, raw)?;
        // The hop counter, verified against the token just verified: only after every token
        // check, so an `invalid_hop` answer says nothing about the token.
        let required = s.hop_required_from.contains(&caller.client_id);
        caller.hop_depth =
            crate::hop::hop_depth(headers, s.hop_key.as_ref(), s.hop_key_previous.as_ref(), raw, required)?;
        let depth = caller.chain_depth();
        if depth > s.max_chain_depth {
            return Err(AuthError::ChainTooDeep { depth, max: s.max_chain_depth });
        }
        Ok(caller)
    }

    /// Selects the issuer by `iss`, the key by `kid`, and verifies the signature.
    async fn verify(&self, token: &UnverifiedToken<'_>) -> Result<(), AuthError> {
        let claims = Claims(&token.claims);
        let iss = claims.string("iss")?.ok_or(AuthError::Issuer)?;
        let tid = claims.string("tid")?;
        // Loaded issuers first, so that a provider whose IdP is down (and never answered)
        // does not delay tokens of the others.
        let mut any_loaded = false;
        let mut chosen = None;
        for provider in &self.0.providers {
            if let Some(set) = provider.current() {
                any_loaded = true;
                if set.matches_issuer(iss, tid) {
                    chosen = Some(provider);
                    break;
                }
            }
        }
        if chosen.is_none() {
            // Load the never-loaded ones concurrently: one IdP that hangs must not use up the
            // time budget of the others. The first one that loads and matches wins; the rest
            // are dropped (cancelled; their attempt still counts for the retry spacing).
            let mut loading: FuturesUnordered<_> = self
                .0
                .providers
                .iter()
                .filter(|p| p.current().is_none())
                .map(|p| async move { (p, self.ensure_loaded(p).await) })
                .collect();
            while let Some((provider, set)) = loading.next().await {
                let Some(set) = set else { continue };
                any_loaded = true;
                if set.matches_issuer(iss, tid) {
                    chosen = Some(provider);
                    break;
                }
            }
        }
        let Some(provider) = chosen else {
            return Err(if any_loaded { AuthError::Issuer } else { AuthError::KeysUnavailable });
        };
        let key = self.key(provider, &token.kid).await?;
        if !key.permits(token.alg) {
            return Err(AuthError::Algorithm);
        }
        // Entra keys may be bound to an issuer (or the tenant template).
        if let Some(key_issuer) = &key.issuer {
            let bound = if key_issuer.contains("{tenantid}") {
                tid.is_some_and(|t| key_issuer.replace("{tenantid}", t) == iss)
            } else {
                key_issuer == iss
            };
            if !bound {
                return Err(AuthError::Issuer);
            }
        }
        match jsonwebtoken::crypto::verify(
            token.signature,
            token.signing_input.as_bytes(),
            &key.decoding,
            token.alg,
        ) {
            Ok(true) => Ok(()),
            _ => Err(AuthError::Signature),
        }
    }

    /// Every claim check, on the signature-verified claims.
    fn check_claims(&self, token: &UnverifiedToken<'_>, raw: &str) -> Result<VerifiedCaller, AuthError> {
        let s = &self.0.settings;
        let c = Claims(&token.claims);
        let now = unix_now();

        // Time: exp required, nbf and iat honoured, all with the configured leeway.
        let exp = c.seconds("exp")?.ok_or(AuthError::Claim("exp"))?;
        if now > exp.saturating_add(s.leeway) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = c.seconds("nbf")?
            && nbf > now.saturating_add(s.leeway)
        {
            return Err(AuthError::NotYetValid);
        }
        if let Some(iat) = c.seconds("iat")?
            && iat > now.saturating_add(s.leeway)
        {
            return Err(AuthError::Claim("iat"));
        }

        // Issuer (already matched to a provider) and tenant.
        let iss = c.string("iss")?.ok_or(AuthError::Issuer)?;
        let tid = c.string("tid")?;
        if let Some(t) = tid {
            // A tenant id must be a GUID and be the tenant the issuer names.
            if !is_guid(t) || !iss.split('/').any(|seg| seg.eq_ignore_ascii_case(t)) {
                return Err(AuthError::Claim("tid"));
            }
        }
        if !s.allowed_tenants.is_empty()
            && !tid.is_some_and(|t| s.allowed_tenants.contains(&t.to_ascii_lowercase()))
        {
            return Err(AuthError::Tenant);
        }
        if let Some(ver) = c.string("ver")? {
            let v2_issuer = iss.ends_with("/v2.0");
            let v1_issuer = iss.starts_with("https://sts.windows.net/");
            if (v2_issuer && ver != "2.0") || (v1_issuer && ver != "1.0") {
                return Err(AuthError::Claim("ver"));
            }
        }

        // Audience: any-of.
        let aud = c.string_or_array("aud")?.ok_or(AuthError::Audience)?;
        if !aud.iter().any(|a| s.allowed_audiences.iter().any(|allowed| allowed == a)) {
            return Err(AuthError::Audience);
        }

        // Identity.
        let subject = match (c.string("oid")?, c.string("sub")?) {
            (Some(oid), _) if !oid.is_empty() => oid,
            (_, Some(sub)) if !sub.is_empty() => sub,
            _ => return Err(AuthError::Claim("sub")),
        };
        let username = match c.string("preferred_username")? {
            Some(u) => Some(u),
            None => c.string("upn")?,
        };
        let display_name = c.string("name")?;
        let scp = match c.string("scp")? {
            Some(v) => Some(v),
            None => c.string("scope")?,
        };
        let scopes: Vec<String> = scp
            .map(|v| v.split(' ').filter(|x| !x.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        let roles: Vec<String> = c.string_array("roles")?.into_iter().map(str::to_owned).collect();

        // Authorization (403 from here on): client, scopes, claim rules.
        let mut client_id: Option<&str> = None;
        for name in ["azp", "appid", "client_id"] {
            if let Some(v) = c.string(name)? {
                if client_id.is_some_and(|existing| existing != v) {
                    return Err(AuthError::Claim("azp"));
                }
                client_id = Some(v);
            }
        }
        let client_id = client_id
            .filter(|id| s.allowed_clients.iter().any(|allowed| allowed == id))
            .ok_or(AuthError::Client)?;
        for required in &s.required_scopes {
            if !scopes.iter().chain(roles.iter()).any(|have| have == required) {
                return Err(AuthError::Scope);
            }
        }
        for (claim, rule) in &s.claim_rules {
            if !claim_rule_holds(token.claims.get(claim), rule) {
                return Err(AuthError::ClaimRule(claim.clone()));
            }
        }
        // Delegation chain: parsed (a malformed `act` is a bad token, 401) and counted; the
        // count is the only use made of it. A malformed chain is refused before its depth,
        // which `authorize` compares with the limit once the hop counter is known.
        let actors = delegation_chain(&token.claims, crate::config::MAX_CHAIN_DEPTH_LIMIT + 1)?;

        Ok(VerifiedCaller {
            issuer: iss.to_owned(),
            subject: subject.to_owned(),
            username: username.map(str::to_owned),
            display_name: display_name.map(str::to_owned),
            tenant: tid.map(str::to_owned),
            client_id: client_id.to_owned(),
            scopes,
            roles,
            expires_at: exp,
            token: Secret::new(raw),
            actors,
            hop_depth: 0,
            workload: Default::default(),
        })
    }
}

fn claim_rule_holds(value: Option<&serde_json::Value>, rule: &ClaimMatch) -> bool {
    use serde_json::Value;
    let items: Vec<&str> = match value {
        Some(Value::String(s)) => match rule {
            ClaimMatch::Equals(_) => vec![s.as_str()],
            _ => s.split(' ').filter(|x| !x.is_empty()).collect(),
        },
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => return false,
    };
    match rule {
        ClaimMatch::Equals(want) => matches!(value, Some(Value::String(s)) if s == want),
        ClaimMatch::Contains(want) => items.contains(&want.as_str()),
        ClaimMatch::ContainsAny(wants) => wants.iter().any(|w| items.contains(&w.as_str())),
    }
}
