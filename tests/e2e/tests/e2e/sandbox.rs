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

/// Pool slots are reused between invocations: what one user's instance leaves in linear
/// memory (heap and statics, several MiB of it) must not be readable by the next instance in
/// that slot, serving another user — with the pooling settings delegate ships.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_an_instance_leaves_in_memory_is_readable_by_the_next_user() {
    use std::fmt::Write as _;
    // One invocation at a time and a small pool, so instances keep landing in the slots
    // their predecessors used.
    let mut spec = ServerSpec::new(delegate_artifacts::HOSTILE);
    spec.max_concurrency = 1;
    let server = TestServer::start(spec).await;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let secret = format!("alice-only-{nanos}-{}", std::process::id());
    let obf = secret.bytes().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{:02x}", b ^ 0x5a);
        s
    });
    let result =
        |seen: &Seen| -> serde_json::Value { serde_json::from_str(seen.result.as_deref().unwrap()).unwrap() };

    // The control: within one instance, the scan does find the secret.
    let seen =
        invoke(&server.url, "alice", &json!({"mode": "mark-and-scan", "secret_obf": obf, "mib": 4})).await;
    assert_eq!(seen.status, 200, "{seen:?}");
    assert_eq!(result(&seen)["found"], true, "the scan must be able to find the secret: {seen:?}");

    for round in 0..20 {
        let seen = invoke(&server.url, "alice", &json!({"mode": "mark", "secret_obf": obf, "mib": 4})).await;
        assert_eq!(seen.status, 200, "round {round}: {seen:?}");
        let seen = invoke(&server.url, "bob", &json!({"mode": "scan", "secret_obf": obf, "mib": 4})).await;
        assert_eq!(seen.status, 200, "round {round}: {seen:?}");
        let r = result(&seen);
        assert!(r["scanned"].as_u64().unwrap() >= 4 << 20, "round {round}: {r}");
        assert_eq!(r["found"], false, "round {round}: bob's instance read alice's secret");
    }
}
