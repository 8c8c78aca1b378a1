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
