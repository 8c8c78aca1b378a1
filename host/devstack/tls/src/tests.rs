#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::{DevCa, serve_http, serve_https};

fn router() -> Router {
    Router::new().route("/hello", get(|| async { "hello" }))
}

/// Starts an HTTPS server on an ephemeral loopback port; returns its port and a shutdown sender.
async fn start_https(ca: &DevCa) -> (u16, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = ca.server_config(&["localhost", "127.0.0.1"]).unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        serve_https(listener, router(), config, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (port, tx, task)
}

fn client_trusting(pem: &str) -> reqwest::Client {
    let cert = reqwest::Certificate::from_pem(pem.as_bytes()).unwrap();
    reqwest::Client::builder().tls_certs_only([cert]).build().unwrap()
}

#[tokio::test]
async fn https_is_trusted_with_the_ca_as_the_only_root() {
    let ca = DevCa::generate().unwrap();
    let (port, stop, task) = start_https(&ca).await;
    let client = client_trusting(&ca.ca_pem());
    for host in ["127.0.0.1", "localhost"] {
        let response = client.get(format!("https://{host}:{port}/hello")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), reqwest::Version::HTTP_11);
        assert_eq!(response.text().await.unwrap(), "hello");
    }
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn another_ca_is_not_trusted() {
    let ca = DevCa::generate().unwrap();
    let other = DevCa::generate().unwrap();
    let (port, _stop, _task) = start_https(&ca).await;
    let error = client_trusting(&other.ca_pem())
        .get(format!("https://127.0.0.1:{port}/hello"))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
}

#[tokio::test]
async fn name_not_in_certificate_is_rejected() {
    let ca = DevCa::generate().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Certificate only for "localhost": connecting by IP must fail hostname verification.
    let config = ca.server_config(&["localhost"]).unwrap();
    tokio::spawn(serve_https(listener, router(), config, std::future::pending()));
    let client = client_trusting(&ca.ca_pem());
    assert!(client.get(format!("https://127.0.0.1:{port}/hello")).send().await.is_err());
    let ok = client.get(format!("https://localhost:{port}/hello")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn plain_http_serves_and_shuts_down() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_http(listener, router(), async {
        let _ = rx.await;
    }));
    let body = reqwest::get(format!("http://127.0.0.1:{port}/hello")).await.unwrap().text().await.unwrap();
    assert_eq!(body, "hello");
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
    // The listener is closed after shutdown.
    assert!(reqwest::get(format!("http://127.0.0.1:{port}/hello")).await.is_err());
}

#[test]
fn ca_pem_is_written_and_debug_hides_the_key() {
    let ca = DevCa::generate().unwrap();
    let pem = ca.ca_pem();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let dir = std::env::temp_dir().join(format!("devstack-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ca.pem");
    ca.write_ca_pem(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), pem);
    std::fs::remove_dir_all(&dir).unwrap();
    let debug = format!("{ca:?}");
    assert!(!debug.contains("PRIVATE"), "{debug}");
    assert!(ca.server_config(&[]).is_err());
    let _: Arc<rustls::ServerConfig> = ca.server_config(&["127.0.0.1"]).unwrap();
}

/// Every mode of the fault switch, on one HTTPS server, flipped at run time.
#[tokio::test]
async fn fault_switch_modes() {
    use crate::{Fault, FaultFilter, FaultSwitch, MALFORMED_JSON, serve_https_with_faults};
    use std::time::{Duration, Instant};
    let ca = DevCa::generate().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = ca.server_config(&["localhost", "127.0.0.1"]).unwrap();
    let faults = FaultSwitch::new();
    let hits = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = hits.clone();
    let router = Router::new().route(
        "/json",
        get(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { ([("content-type", "application/json")], r#"{"result":[1,2,3,4,5,6,7,8,9]}"#) }
        }),
    );
    tokio::spawn(serve_https_with_faults(listener, router, config, std::future::pending(), faults.clone()));
    faults.settled().await;
    let client = client_trusting(&ca.ca_pem());
    let url = format!("https://localhost:{port}/json");
    let get = || client.get(&url).send();

    let ok = get().await.unwrap();
    assert_eq!(ok.headers()["content-type"], "application/json");
    assert_eq!(ok.text().await.unwrap(), r#"{"result":[1,2,3,4,5,6,7,8,9]}"#);

    faults.set(Fault::Status {
        status: 429,
        headers: vec![("retry-after".into(), "3".into())],
        body: "slow down".into(),
    });
    let r = get().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["retry-after"].to_str().unwrap()), (429, "3"));
    assert_eq!(r.text().await.unwrap(), "slow down");

    // Filters and counts: only the next matching request.
    faults.set_for(FaultFilter::method("GET").path("/json"), Fault::status(503), Some(1));
    assert_eq!(get().await.unwrap().status(), 503);
    assert_eq!(get().await.unwrap().status(), 200);
    faults.set_for(FaultFilter::path_contains("/other"), Fault::status(503), None);
    assert_eq!(get().await.unwrap().status(), 200);

    faults.set(Fault::MalformedJson);
    let r = get().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.headers()["content-type"].to_str().unwrap()),
        (200, "application/json")
    );
    assert_eq!(r.text().await.unwrap(), MALFORMED_JSON);

    faults.set(Fault::WrongContentType);
    let r = get().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(r.text().await.unwrap().starts_with(r#"{"result""#));

    // Reset mid-body: the head and 10 bytes arrive, then the body fails; the handler ran.
    let before = hits.load(std::sync::atomic::Ordering::SeqCst);
    faults.set(Fault::ResetAfter(10));
    let r = get().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.content_length(), Some(30));
    assert!(r.bytes().await.is_err());
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), before + 1);

    // Slow: the client's timeout fires; the handler still runs after the delay.
    faults.set(Fault::Delay(Duration::from_millis(600)));
    let started = Instant::now();
    let e = client.get(&url).timeout(Duration::from_millis(200)).send().await.unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    assert!(started.elapsed() < Duration::from_millis(550));
    let deadline = Instant::now() + Duration::from_secs(5);
    while hits.load(std::sync::atomic::Ordering::SeqCst) < before + 2 {
        assert!(Instant::now() < deadline, "the delayed request was never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Refused, then listening again on the same port.
    faults.set(Fault::Refuse);
    faults.settled().await;
    let e = get().await.unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    faults.clear();
    faults.settled().await;
    assert_eq!(get().await.unwrap().status(), 200);
    assert_eq!(faults.applied(), 6);
}
