//! A probe plugin: tries every way out of the sandbox and reports what happened.
//!
//! The result is a JSON object with one entry per attempt: `{"ok": bool, "detail": "..."}`.
//! Payload: `{"tcp": "127.0.0.1:PORT", "http": "http://127.0.0.1:PORT/"}` — addresses of
//! loopback listeners the test controls, so a successful escape would be visible.

use delegate_sdk::PluginError;
use serde_json::{Value, json};
use std::io::Read;

struct Probe;

fn attempt<T: std::fmt::Debug, E: std::fmt::Debug>(r: Result<T, E>) -> Value {
    match r {
        Ok(v) => json!({"ok": true, "detail": format!("{v:?}")}),
        Err(e) => json!({"ok": false, "detail": format!("{e:?}")}),
    }
}

impl delegate_sdk::Guest for Probe {
    fn invoke(payload: String) -> Result<String, PluginError> {
        let v: Value = serde_json::from_str(&payload).unwrap_or_default();
        let tcp = v.get("tcp").and_then(Value::as_str).unwrap_or("127.0.0.1:9").to_owned();
        let http = v.get("http").and_then(Value::as_str).unwrap_or("http://127.0.0.1:9/").to_owned();
        let env: Vec<(String, String)> = std::env::vars().collect();
        let args: Vec<String> = std::env::args().collect();
        let mut stdin = String::new();
        let c = delegate_sdk::caller();
        let caller = json!({"subject": c.subject, "username": c.username, "session_id": c.session_id,
                            "invocation_id": c.invocation_id, "client_id": c.client_id, "scopes": c.scopes});
        let report = json!({
            "tcp_connect": attempt(std::net::TcpStream::connect(tcp.as_str())),
            "tcp_listen": attempt(std::net::TcpListener::bind("127.0.0.1:0")),
            "udp_bind": attempt(std::net::UdpSocket::bind("127.0.0.1:0")),
            "dns_lookup": attempt(std::net::ToSocketAddrs::to_socket_addrs("localhost:80").map(Iterator::count)),
            "read_file": attempt(std::fs::read("/etc/passwd")),
            "read_dir": attempt(std::fs::read_dir("/").map(Iterator::count)),
            "write_file": attempt(std::fs::write("/tmp/delegate-probe", b"x")),
            "env": json!({"ok": !env.is_empty(), "detail": format!("{} vars", env.len())}),
            "args": json!({"ok": !args.is_empty(), "detail": format!("{} args", args.len())}),
            "stdin": json!({"ok": std::io::stdin().read_to_string(&mut stdin).map(|n| n > 0).unwrap_or(false), "detail": ""}),
            "http": attempt(delegate_sdk::http::Request::get(&http).send().map(|r| r.status)),
            "caller": caller,
            "settings": json!({"ok": true, "detail": format!("{:?}", delegate_sdk::settings::all())}),
        });
        Ok(report.to_string())
    }
}

delegate_sdk::export!(Probe);
