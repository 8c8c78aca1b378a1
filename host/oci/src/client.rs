//! The distribution-API client: pull a plugin artifact by digest (cache first), push one.
//!
//! Four endpoints of the OCI distribution spec are enough: `GET /v2/<repo>/manifests/<digest>`,
//! `GET|HEAD /v2/<repo>/blobs/<digest>`, `POST /v2/<repo>/blobs/uploads/` + `PUT <location>`
//! (a monolithic upload) and `PUT /v2/<repo>/manifests/<ref>`. Authentication is basic, a
//! static bearer token, or the distribution token flow (a `Bearer realm=...` challenge answered
//! by a token from the realm, with the basic credentials if any).
//!
//! The HTTP client comes from `delegate-outbound` (operator CA bundle, bounded timeouts, no
//! automatic redirects). Blob downloads may be redirected to storage (S3, a CDN): those are
//! followed here, at most [`MAX_REDIRECTS`] times, without credentials; the bytes are checked
//! against their digest whoever served them.

use crate::artifact::{self, MANIFEST_MEDIA_TYPE};
use crate::{BlobCache, Credentials, Digest, OciError, OciSettings, Reference, Target};
use delegate_secret::Secret;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Largest manifest accepted (the distribution spec's recommended limit).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest config blob or plugin manifest layer accepted.
pub const MAX_SMALL_BLOB_BYTES: u64 = 1 << 20;
/// Redirects followed for one blob download.
pub const MAX_REDIRECTS: usize = 3;

/// A plugin artifact, verified: every byte hashed to the digest that names it.
#[derive(Debug, Clone)]
pub struct PulledPlugin {
    /// What was pulled.
    pub reference: Reference,
    /// The delegate plugin manifest (`plugin.toml`) text.
    pub plugin_manifest: String,
    /// The component bytes.
    pub component: Vec<u8>,
    /// Whether everything came from the local cache (the registry was not contacted).
    pub from_cache: bool,
}

/// Pulls and pushes plugin artifacts. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    settings: Arc<OciSettings>,
    cache: Option<BlobCache>,
    max_component_bytes: u64,
    /// Bearer tokens from the token flow, by (registry, scope). Kept for the process: a
    /// registry that expires one answers 401 and the flow runs again.
    tokens: Arc<Mutex<HashMap<(String, String), Secret>>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("plain_http", &self.settings.plain_http)
            .field("cache", &self.cache.as_ref().map(BlobCache::dir))
            .finish_non_exhaustive()
    }
}

/// One HTTP request, rebuilt for each try (auth retry, redirect).
struct Call<'a> {
    method: Method,
    url: Url,
    accept: Option<&'static str>,
    body: Option<(&'static str, bytes::Bytes)>,
    what: &'a str,
}

impl RegistryClient {
    /// A client over `http` (build it with `delegate_outbound::build_client`). Without a
    /// cache every pull goes to the registry.
    pub fn new(http: reqwest::Client, settings: OciSettings, cache: Option<BlobCache>) -> Self {
        Self {
            http,
            settings: Arc::new(settings),
            cache,
            max_component_bytes: 64 << 20,
            tokens: Arc::default(),
        }
    }

    /// Sets the largest component layer accepted (default 64 MiB).
    #[must_use]
    pub fn with_max_component_bytes(mut self, limit: u64) -> Self {
        self.max_component_bytes = limit;
        self
    }

    fn base(&self, registry: &str) -> Result<Url, OciError> {
        let scheme = if self.settings.plain_http.contains(registry) { "http" } else { "https" };
        Url::parse(&format!("{scheme}://{registry}/")).map_err(|e| OciError::InvalidReference {
            reference: registry.to_owned(),
            message: e.to_string(),
        })
    }

    fn url(&self, registry: &str, path: &str) -> Result<Url, OciError> {
        self.base(registry)?.join(path).map_err(|e| OciError::InvalidReference {
            reference: format!("{registry}/{path}"),
            message: e.to_string(),
        })
    }

    /// Pulls the artifact `reference` names: each blob from the cache if it is there and
    /// intact, else from the registry; every manifest and blob is checked against its digest
    /// before it is used or cached.
    pub async fn pull(&self, reference: &Reference) -> Result<PulledPlugin, OciError> {
        let mut from_cache = true;
        let repo = &reference.repository;
        let manifest = self
            .fetch(
                reference,
                "manifest",
                &format!("v2/{repo}/manifests/{}", reference.digest),
                &reference.digest,
                None,
                MAX_MANIFEST_BYTES,
                &mut from_cache,
            )
            .await?;
        let layout = artifact::layout(&manifest)?;
        let blob = |d: &Digest| format!("v2/{repo}/blobs/{d}");
        let (config, config_size) = &layout.config;
        let config_bytes = self
            .fetch(
                reference,
                "config blob",
                &blob(config),
                config,
                Some(*config_size),
                MAX_SMALL_BLOB_BYTES,
                &mut from_cache,
            )
            .await?;
        let config_json: serde_json::Value = serde_json::from_slice(&config_bytes)
            .map_err(|e| OciError::InvalidArtifact(format!("the config blob is not JSON: {e}")))?;
        if config_json.get("architecture").and_then(|a| a.as_str()) != Some("wasm") {
            return Err(OciError::InvalidArtifact("the config's architecture is not \"wasm\"".into()));
        }
        let (toml, toml_size) = &layout.plugin_manifest;
        let toml_bytes = self
            .fetch(
                reference,
                "plugin manifest layer",
                &blob(toml),
                toml,
                Some(*toml_size),
                MAX_SMALL_BLOB_BYTES,
                &mut from_cache,
            )
            .await?;
        let plugin_manifest = String::from_utf8(toml_bytes)
            .map_err(|_| OciError::InvalidArtifact("the plugin manifest layer is not UTF-8".into()))?;
        let (wasm, wasm_size) = &layout.component;
        let component = self
            .fetch(
                reference,
                "component layer",
                &blob(wasm),
                wasm,
                Some(*wasm_size),
                self.max_component_bytes,
                &mut from_cache,
            )
            .await?;
        Ok(PulledPlugin { reference: reference.clone(), plugin_manifest, component, from_cache })
    }

    /// One manifest or blob: cached, or downloaded and verified (then cached).
    #[allow(clippy::too_many_arguments)]
    async fn fetch(
        &self,
        reference: &Reference,
        what: &str,
        path: &str,
        digest: &Digest,
        declared: Option<u64>,
        limit: u64,
        from_cache: &mut bool,
    ) -> Result<Vec<u8>, OciError> {
        if let Some(size) = declared.filter(|s| *s > limit) {
            let _ = size;
            return Err(OciError::TooLarge { what: format!("{what} {digest}"), limit });
        }
        let check_size = |bytes: &[u8]| match declared {
            Some(size) if size != bytes.len() as u64 => Err(OciError::InvalidArtifact(format!(
                "{what} {digest} is {} bytes, its descriptor says {size}",
                bytes.len()
            ))),
            _ => Ok(()),
        };
        if let Some(bytes) = self.cache.as_ref().and_then(|c| c.get(digest)) {
            check_size(&bytes)?;
            return Ok(bytes);
        }
        *from_cache = false;
        let is_manifest = declared.is_none();
        let call = Call {
            method: Method::GET,
            url: self.url(&reference.registry, path)?,
            accept: is_manifest.then_some(MANIFEST_MEDIA_TYPE),
            body: None,
            what: &format!("{what} {}/{}@{digest}", reference.registry, reference.repository),
        };
        let response = self.send(&reference.registry, &reference.repository, "pull", call).await?;
        let bytes = read_capped(response, limit, what, digest).await?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(OciError::DigestMismatch {
                what: what.to_owned(),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        check_size(&bytes)?;
        if let Some(cache) = &self.cache {
            cache.put(digest, &bytes);
        }
        Ok(bytes)
    }

    /// Pushes `component` with its `plugin_toml` as a plugin artifact to `target`; returns the
    /// digest reference to deploy.
    pub async fn push(
        &self,
        target: &Target,
        component: &[u8],
        plugin_toml: &str,
    ) -> Result<Reference, OciError> {
        self.push_at(target, component, plugin_toml, std::time::SystemTime::now()).await
    }

    /// [`RegistryClient::push`] with the config's `created` time given: the same component,
    /// plugin manifest and time always give the same manifest digest (reproducible pushes,
    /// e.g. from `SOURCE_DATE_EPOCH`).
    pub async fn push_at(
        &self,
        target: &Target,
        component: &[u8],
        plugin_toml: &str,
        created: std::time::SystemTime,
    ) -> Result<Reference, OciError> {
        let built = artifact::build(component, plugin_toml, created);
        let (registry, repo) = (&target.registry, &target.repository);
        for (descriptor, bytes) in built.blobs {
            let digest = Digest::parse(&descriptor.digest).map_err(OciError::InvalidArtifact)?;
            let head = Call {
                method: Method::HEAD,
                url: self.url(registry, &format!("v2/{repo}/blobs/{digest}"))?,
                accept: None,
                body: None,
                what: "blob check",
            };
            match self.send(registry, repo, "pull,push", head).await {
                Ok(_) => continue,
                Err(OciError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            let start = Call {
                method: Method::POST,
                url: self.url(registry, &format!("v2/{repo}/blobs/uploads/"))?,
                accept: None,
                body: Some(("application/octet-stream", bytes::Bytes::new())),
                what: "blob upload start",
            };
            let response = self.send(registry, repo, "pull,push", start).await?;
            let location =
                response.headers().get(LOCATION).and_then(|l| l.to_str().ok()).ok_or_else(|| {
                    OciError::Registry {
                        registry: registry.clone(),
                        status: response.status().as_u16(),
                        what: "blob upload start".into(),
                        message: "no Location header".into(),
                    }
                })?;
            let mut url = response.url().join(location).map_err(|e| OciError::Registry {
                registry: registry.clone(),
                status: response.status().as_u16(),
                what: "blob upload start".into(),
                message: format!("bad Location: {e}"),
            })?;
            url.query_pairs_mut().append_pair("digest", digest.as_str());
            let put = Call {
                method: Method::PUT,
                url,
                accept: None,
                body: Some(("application/octet-stream", bytes.into())),
                what: "blob upload",
            };
            self.send(registry, repo, "pull,push", put).await?;
        }
        let digest = Digest::of(&built.manifest);
        let manifest: bytes::Bytes = built.manifest.into();
        let mut names = vec![digest.to_string()];
        names.extend(target.tag.clone());
        for name in names {
            let put = Call {
                method: Method::PUT,
                url: self.url(registry, &format!("v2/{repo}/manifests/{name}"))?,
                accept: None,
                body: Some((MANIFEST_MEDIA_TYPE, manifest.clone())),
                what: "manifest upload",
            };
            self.send(registry, repo, "pull,push", put).await?;
        }
        Ok(target.at(digest))
    }

    /// Sends `call` with the registry's credentials, answering one auth challenge and
    /// following blob redirects; any non-success status becomes a typed error.
    async fn send(
        &self,
        registry: &str,
        repository: &str,
        actions: &str,
        call: Call<'_>,
    ) -> Result<reqwest::Response, OciError> {
        let scope = format!("repository:{repository}:{actions}");
        let key = (registry.to_owned(), scope.clone());
        let origin = self.base(registry)?.origin();
        let static_auth = |creds: Option<&Credentials>| match creds {
            Some(Credentials::Bearer(token)) => Some(Secret::new(format!("Bearer {}", token.expose()))),
            _ => None,
        };
        let creds = self.settings.credentials.get(registry);
        let mut auth = self
            .tokens
            .lock()
            .ok()
            .and_then(|t| t.get(&key).map(|s| Secret::new(format!("Bearer {}", s.expose()))))
            .or_else(|| static_auth(creds));
        let mut challenged = false;
        let mut url = call.url.clone();
        let mut redirects = 0;
        loop {
            let same_origin = url.origin() == origin;
            let mut request = self.http.request(call.method.clone(), url.clone());
            if let Some(accept) = call.accept {
                request = request.header(reqwest::header::ACCEPT, accept);
            }
            if let Some((content_type, body)) = &call.body {
                request = request.header(CONTENT_TYPE, *content_type).body(body.clone());
            }
            // Credentials go to the registry's own origin only, never to a redirect target.
            if let (Some(value), true) = (auth.as_ref().and_then(sensitive), same_origin) {
                request = request.header(AUTHORIZATION, value);
            }
            let response = request.send().await.map_err(|e| OciError::Unreachable {
                registry: registry.to_owned(),
                message: transport_message(&e),
            })?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status.is_redirection() && call.method == Method::GET && redirects < MAX_REDIRECTS {
                let next = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                    // Storage behind a plain-HTTP (loopback-only) registry may be plain HTTP too.
                    .filter(|u| {
                        u.scheme() == "https"
                            || u.origin() == origin
                            || self.settings.plain_http.contains(registry)
                    });
                if let Some(next) = next {
                    redirects += 1;
                    url = next;
                    continue;
                }
            }
            if status == StatusCode::UNAUTHORIZED && !challenged && same_origin {
                challenged = true;
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(parse_challenge);
                match (challenge, creds) {
                    (Some(c), Some(Credentials::Basic { username, password })) if c.scheme == "basic" => {
                        auth = Some(basic(username, password));
                        continue;
                    }
                    (Some(c), _) if c.scheme == "bearer" => {
                        let token = self.token(registry, &c.params, &scope, creds).await?;
                        auth = Some(Secret::new(format!("Bearer {}", token.expose())));
                        if let Ok(mut tokens) = self.tokens.lock() {
                            tokens.insert(key.clone(), token);
                        }
                        continue;
                    }
                    _ => {}
                }
            }
            return Err(status_error(registry, call.what, response).await);
        }
    }

    /// The distribution token flow: `GET <realm>?service=..&scope=..`, with basic credentials
    /// if configured, answers `{"token": ...}` (or `access_token`).
    async fn token(
        &self,
        registry: &str,
        params: &HashMap<String, String>,
        scope: &str,
        creds: Option<&Credentials>,
    ) -> Result<Secret, OciError> {
        let unauthorized = || OciError::Unauthorized { registry: registry.to_owned(), status: 401 };
        let realm = params.get("realm").and_then(|r| Url::parse(r).ok()).ok_or_else(unauthorized)?;
        // The realm receives the credentials: it must be HTTPS unless the registry itself is
        // a plain-HTTP (loopback) one.
        if realm.scheme() != "https"
            && !(realm.scheme() == "http" && self.settings.plain_http.contains(registry))
        {
            return Err(OciError::Registry {
                registry: registry.to_owned(),
                status: 401,
                what: "authentication".into(),
                message: "the token realm is not https".into(),
            });
        }
        let mut url = realm;
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = params.get("service") {
                q.append_pair("service", service);
            }
            q.append_pair("scope", params.get("scope").map_or(scope, String::as_str));
        }
        let mut request = self.http.get(url);
        if let Some(Credentials::Basic { username, password }) = creds
            && let Some(value) = sensitive(&basic(username, password))
        {
            request = request.header(AUTHORIZATION, value);
        }
        let response = request.send().await.map_err(|e| OciError::Unreachable {
            registry: registry.to_owned(),
            message: format!("token service: {}", transport_message(&e)),
        })?;
        if !response.status().is_success() {
            return Err(OciError::Unauthorized {
                registry: registry.to_owned(),
                status: response.status().as_u16(),
            });
        }
        let body = read_capped(response, MAX_SMALL_BLOB_BYTES, "token response", &Digest::of(b"")).await?;
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(|_| unauthorized())?;
        let token = value
            .get("token")
            .or_else(|| value.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(unauthorized)?;
        Ok(Secret::new(token))
    }
}

fn basic(username: &str, password: &Secret) -> Secret {
    use base64::Engine as _;
    let raw = Secret::new(format!("{username}:{}", password.expose()));
    Secret::new(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw.expose())))
}

/// An `Authorization` value marked sensitive (kept out of `Debug` output and HPACK tables).
fn sensitive(value: &Secret) -> Option<reqwest::header::HeaderValue> {
    let mut header = reqwest::header::HeaderValue::from_str(value.expose()).ok()?;
    header.set_sensitive(true);
    Some(header)
}

/// The transport error without the URL's query (never holds credentials, but keep it short).
fn transport_message(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() { kind.to_owned() } else { format!("{kind}: {detail}") }
}

/// A parsed `WWW-Authenticate` challenge: scheme (lowercase) and its parameters.
struct Challenge {
    scheme: String,
    params: HashMap<String, String>,
}

fn parse_challenge(header: &str) -> Challenge {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied().filter(|c| *c != ',') {
                value.push(c);
                chars.next();
            }
        }
        params.insert(name.trim().to_ascii_lowercase(), value);
    }
    Challenge { scheme: scheme.to_ascii_lowercase(), params }
}

async fn read_capped(
    mut response: reqwest::Response,
    limit: u64,
    what: &str,
    digest: &Digest,
) -> Result<Vec<u8>, OciError> {
    let too_large = || OciError::TooLarge { what: format!("{what} {digest}"), limit };
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let registry = response.url().host_str().unwrap_or("").to_owned();
    let mut out = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| OciError::Unreachable { registry: registry.clone(), message: transport_message(&e) })?
    {
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn status_error(registry: &str, what: &str, response: reqwest::Response) -> OciError {
    let status = response.status();
    if status == StatusCode::NOT_FOUND {
        return OciError::NotFound { registry: registry.to_owned(), what: what.to_owned() };
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return OciError::Unauthorized { registry: registry.to_owned(), status: status.as_u16() };
    }
    // Only the distribution error codes (e.g. MANIFEST_INVALID), not free text.
    let body = response.bytes().await.unwrap_or_default();
    let codes: Vec<String> = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("errors").and_then(|e| e.as_array()).cloned())
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("code").and_then(|c| c.as_str()).map(str::to_owned))
        .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
        .collect();
    OciError::Registry {
        registry: registry.to_owned(),
        status: status.as_u16(),
        what: what.to_owned(),
        message: if codes.is_empty() { "(no error code)".into() } else { codes.join(", ") },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn challenges_parse() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#,
        );
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example.com/token");
        assert_eq!(c.params["service"], "registry.example.com");
        assert_eq!(c.params["scope"], "repository:a/b:pull");
        let c = parse_challenge(r#"Basic realm="basic-realm""#);
        assert_eq!((c.scheme.as_str(), c.params["realm"].as_str()), ("basic", "basic-realm"));
        let c = parse_challenge("Bearer realm=plain, error=\"insufficient_scope\"");
        assert_eq!((c.params["realm"].as_str(), c.params["error"].as_str()), ("plain", "insufficient_scope"));
    }

    #[test]
    fn basic_credentials_encode() {
        assert_eq!(basic("u", &Secret::new("p")).expose(), "Basic dTpw");
        assert!(sensitive(&Secret::new("Bearer t")).is_some_and(|h| h.is_sensitive()));
    }
}
