//! The client against a small distribution-API stand-in on loopback that does what real
//! registries do and the test `docker-registry` (no auth, filesystem storage) does not: the
//! token flow (`401` + `WWW-Authenticate: Bearer realm=...`, a token for basic credentials),
//! blob downloads redirected to storage on another origin, and a storage that lies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use delegate_oci::artifact::{PLUGIN_MANIFEST_MEDIA_TYPE, WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE};
use delegate_oci::{Credentials, Digest, OciError, OciSettings, Reference, RegistryClient};
use delegate_secret::Secret;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

const TOKEN: &str = "registry-token-0123456789";
const PASSWORD: &str = "registry-password-s3cret";

#[derive(Default)]
struct Seen {
    /// (path, Authorization header) of every request, registry and storage alike.
    requests: Vec<(String, Option<String>)>,
    token_requests: usize,
}

struct Fake {
    registry: String,
    storage: String,
    blobs: HashMap<String, Vec<u8>>,
    /// What the storage serves instead of the real bytes, by digest.
    lies: Mutex<HashMap<String, Vec<u8>>>,
    seen: Mutex<Seen>,
}

fn record(fake: &Fake, path: &str, headers: &HeaderMap) {
    let auth = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap().to_owned());
    fake.seen.lock().unwrap().requests.push((path.to_owned(), auth));
}

fn bearer_ok(headers: &HeaderMap) -> bool {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

fn challenge(fake: &Fake, repo: &str) -> Response {
    let value = format!(
        "Bearer realm=\"http://{}/token\",service=\"fake-registry\",scope=\"repository:{repo}:pull\"",
        fake.registry
    );
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, value)],
        "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}",
    )
        .into_response()
}

async fn manifest_route(
    State(fake): State<Arc<Fake>>,
    Path((repo, reference)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    record(&fake, &format!("/v2/{repo}/manifests/{reference}"), &headers);
    if !bearer_ok(&headers) {
        return challenge(&fake, &repo);
    }
    match fake.blobs.get(&reference) {
        Some(bytes) => bytes.clone().into_response(),
        None => (StatusCode::NOT_FOUND, "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\"}]}").into_response(),
    }
}

async fn blob(
    State(fake): State<Arc<Fake>>,
    Path((repo, digest)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    record(&fake, &format!("/v2/{repo}/blobs/{digest}"), &headers);
    if !bearer_ok(&headers) {
        return challenge(&fake, &repo);
    }
    // Like S3-backed registries: the bytes are elsewhere.
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, format!("http://{}/storage/{digest}?sig=x", fake.storage))],
    )
        .into_response()
}

async fn storage(State(fake): State<Arc<Fake>>, Path(digest): Path<String>, headers: HeaderMap) -> Response {
    record(&fake, &format!("/storage/{digest}"), &headers);
    if let Some(lie) = fake.lies.lock().unwrap().get(&digest) {
        return lie.clone().into_response();
    }
    fake.blobs
        .get(&digest)
        .cloned()
        .map_or_else(|| StatusCode::NOT_FOUND.into_response(), IntoResponse::into_response)
}

async fn token(
    State(fake): State<Arc<Fake>>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    use base64::Engine as _;
    record(&fake, "/token", &headers);
    fake.seen.lock().unwrap().token_requests += 1;
    let expected =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("ci:{PASSWORD}")));
    let auth_ok = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(expected.as_str());
    if !auth_ok || q.get("service").map(String::as_str) != Some("fake-registry") || !q.contains_key("scope") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(serde_json::json!({ "token": TOKEN })).into_response()
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({ "mediaType": media_type, "digest": Digest::of(bytes).as_str(), "size": bytes.len() })
}

struct Setup {
    fake: Arc<Fake>,
    reference: Reference,
    component: Vec<u8>,
}

/// A registry and a storage origin, serving one plugin artifact; `edit` may change the
/// manifest JSON before it is stored.
async fn start(edit: impl FnOnce(&mut serde_json::Value)) -> Setup {
    let registry = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let storage_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let component = b"\0asm\x0d\0\x01\0 a component".to_vec();
    let toml = b"name = \"echo\"\nversion = \"1.0.0\"\n".to_vec();
    let config = br#"{"architecture":"wasm","os":"wasip2"}"#.to_vec();
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor(WASM_CONFIG_MEDIA_TYPE, &config),
        "layers": [descriptor(WASM_LAYER_MEDIA_TYPE, &component), descriptor(PLUGIN_MANIFEST_MEDIA_TYPE, &toml)],
    });
    edit(&mut manifest);
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = Digest::of(&manifest);
    let blobs: HashMap<String, Vec<u8>> = [&manifest, &component, &toml, &config]
        .into_iter()
        .map(|b| (Digest::of(b).to_string(), b.clone()))
        .collect();
    let fake = Arc::new(Fake {
        registry: registry.local_addr().unwrap().to_string(),
        storage: storage_listener.local_addr().unwrap().to_string(),
        blobs,
        lies: Mutex::default(),
        seen: Mutex::default(),
    });
    let app = Router::new()
        .route("/v2/{repo}/manifests/{reference}", get(manifest_route))
        .route("/v2/{repo}/blobs/{digest}", get(blob))
        .route("/token", get(token))
        .with_state(Arc::clone(&fake));
    let store = Router::new().route("/storage/{digest}", get(storage)).with_state(Arc::clone(&fake));
    tokio::spawn(async move { axum::serve(registry, app).await });
    tokio::spawn(async move { axum::serve(storage_listener, store).await });
    let reference = Reference::parse(&format!("oci://{}/echo@{manifest_digest}", fake.registry)).unwrap();
    Setup { fake, reference, component }
}

fn client(fake: &Fake, password: &str) -> RegistryClient {
    let mut settings = OciSettings { plain_http: [fake.registry.clone()].into(), ..OciSettings::default() };
    settings.credentials.insert(
        fake.registry.clone(),
        Credentials::Basic { username: "ci".into(), password: Secret::new(password) },
    );
    RegistryClient::new(
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        settings,
        None,
    )
}

#[tokio::test]
async fn the_token_flow_gets_a_token_once_and_redirected_downloads_carry_no_credentials() {
    let s = start(|_| {}).await;
    let c = client(&s.fake, PASSWORD);
    let pulled = c.pull(&s.reference).await.unwrap();
    assert_eq!(pulled.component, s.component);
    assert_eq!(pulled.plugin_manifest, "name = \"echo\"\nversion = \"1.0.0\"\n");
    assert!(!pulled.from_cache);
    // Again (no cache): the token is reused.
    c.pull(&s.reference).await.unwrap();
    let seen = s.fake.seen.lock().unwrap();
    assert_eq!(seen.token_requests, 1);
    for (path, auth) in &seen.requests {
        if path.starts_with("/storage/") {
            assert_eq!(auth, &None, "credentials leaked to the storage origin: {path}");
        }
    }
    assert!(
        seen.requests
            .iter()
            .any(|(p, a)| p.starts_with("/v2/") && a.as_deref() == Some(&format!("Bearer {TOKEN}")))
    );
    assert_eq!(seen.requests.iter().filter(|(p, _)| p.starts_with("/storage/")).count(), 6);
}

#[tokio::test]
async fn wrong_credentials_are_unauthorized_and_never_echoed() {
    let s = start(|_| {}).await;
    let e = client(&s.fake, "wrong-password-123").pull(&s.reference).await.unwrap_err();
    assert!(matches!(e, OciError::Unauthorized { status: 401, .. }), "{e:?}");
    assert_eq!(e.code(), "registry_unauthorized");
    let text = format!("{e} {e:?}");
    assert!(!text.contains("wrong-password-123") && !text.contains(TOKEN), "{text}");
}

#[tokio::test]
async fn a_storage_that_serves_other_bytes_is_refused() {
    let s = start(|_| {}).await;
    let digest = Digest::of(&s.component).to_string();
    let mut lie = s.component.clone();
    lie[0] ^= 1;
    s.fake.lies.lock().unwrap().insert(digest.clone(), lie);
    let e = client(&s.fake, PASSWORD).pull(&s.reference).await.unwrap_err();
    let OciError::DigestMismatch { what, expected, .. } = &e else { panic!("{e:?}") };
    assert_eq!((what.as_str(), expected.as_str()), ("component layer", digest.as_str()));
}

#[tokio::test]
async fn descriptor_sizes_and_limits_are_enforced() {
    // A descriptor whose size is not the blob's.
    let s = start(|m| m["layers"][0]["size"] = 3.into()).await;
    let e = client(&s.fake, PASSWORD).pull(&s.reference).await.unwrap_err();
    assert!(matches!(&e, OciError::InvalidArtifact(m) if m.contains("descriptor says 3")), "{e:?}");
    // A component over the limit is refused from its descriptor, before it is downloaded.
    let s = start(|_| {}).await;
    let e = client(&s.fake, PASSWORD).with_max_component_bytes(4).pull(&s.reference).await.unwrap_err();
    assert!(matches!(e, OciError::TooLarge { limit: 4, .. }), "{e:?}");
    assert!(
        !s.fake
            .seen
            .lock()
            .unwrap()
            .requests
            .iter()
            .any(|(p, _)| p.ends_with(Digest::of(&s.component).as_str()))
    );
    // An unknown digest.
    let unknown = Reference { digest: Digest::of(b"nothing"), ..s.reference.clone() };
    let e = client(&s.fake, PASSWORD).pull(&unknown).await.unwrap_err();
    assert!(matches!(e, OciError::NotFound { .. }), "{e:?}");
}
