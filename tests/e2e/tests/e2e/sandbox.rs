//! A plugin cannot open sockets, resolve names, read files, env vars or args, or reach the
//! network without an egress rule.

use delegate_e2e::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_finds_no_way_out() {
    // Live loopback listeners: a successful escape would reach them.
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let mut spec = ServerSpec::new(delegate_artifacts::PROBE_SANDBOX);
    spec.settings.insert("greeting".into(), "hello".into());
    let server = TestServer::start(spec).await;
    let seen = invoke(
        &server.url,
        "jane",
        &json!({"tcp": tcp_addr.to_string(), "http": format!("http://{http_addr}/steal")}),
    )
    .await;
    let report: serde_json::Value =
        serde_json::from_str(seen.result.as_deref().expect("probe result")).unwrap();
    for attempt in [
        "tcp_connect",
        "tcp_listen",
        "udp_bind",
        "dns_lookup",
        "read_file",
        "read_dir",
        "write_file",
        "env",
        "args",
        "stdin",
        "http",
    ] {
        assert_eq!(report[attempt]["ok"], false, "{attempt} succeeded: {}", report[attempt]);
    }
    assert!(report["http"]["detail"].as_str().unwrap().contains("Denied"), "{}", report["http"]);
    // Settings are the one thing the operator gave it.
    assert!(report["settings"]["detail"].as_str().unwrap().contains("greeting"));
    // Nothing connected to the listeners.
    for listener in [tcp, http] {
        let accepted = tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
        assert!(accepted.is_err(), "the plugin reached a loopback listener");
    }
}
