//! Runs the devstack IdP standalone over HTTPS, for independent clients (MSAL, PyJWT, curl).
//!
//! `cargo run -p delegate-devstack-idp --example devstack-idp -- [--ca-out PATH] [--config FILE] [--port N]
//! [--agent-cert PEM]...`
//!
//! `--port 443` is needed for MSAL's password flow (it looks up the home realm on port 443 of
//! the authority host); the default is an ephemeral port. `--agent-cert` registers a PEM
//! certificate as a credential of the agent app (for `client_assertion` clients); repeatable.
//!
//! Prints one JSON line on stdout once it is serving:
//! `{"url":"https://127.0.0.1:PORT","ca_pem":"PATH","tenant":"...","agent_app_id":"...", ...}`
//! and serves until stdin is closed (or the process is killed).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Read;
use std::process::ExitCode;

use delegate_devstack_idp::{IdpConfig, IdpServer, defaults};

fn main() -> ExitCode {
    let mut ca_out = std::env::temp_dir().join(format!("devstack-idp-ca-{}.pem", std::process::id()));
    let mut config = IdpConfig::default();
    let mut port: u16 = 0;
    let mut agent_certs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--ca-out", Some(path)) => ca_out = path.into(),
            ("--port", Some(p)) => match p.parse() {
                Ok(p) => port = p,
                Err(_) => {
                    eprintln!("devstack-idp: --port {p}: not a port number");
                    return ExitCode::FAILURE;
                }
            },
            ("--agent-cert", Some(path)) => match std::fs::read_to_string(&path) {
                Ok(pem) => agent_certs.push(pem),
                Err(e) => {
                    eprintln!("devstack-idp: {path}: {e}");
                    return ExitCode::FAILURE;
                }
            },
            ("--config", Some(path)) => {
                let parsed = std::fs::read_to_string(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|text| IdpConfig::from_toml(&text).map_err(|e| e.to_string()));
                match parsed {
                    Ok(c) => config = c,
                    Err(e) => {
                        eprintln!("devstack-idp: {path}: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            _ => {
                eprintln!(
                    "usage: devstack-idp [--ca-out PATH] [--config FILE] [--port N] [--agent-cert PEM]..."
                );
                return ExitCode::FAILURE;
            }
        }
    }
    // Applied after all arguments, so `--config` and `--agent-cert` may come in any order.
    if !agent_certs.is_empty() {
        match config.apps.iter_mut().find(|a| a.client_id == defaults::AGENT_APP_ID) {
            Some(agent) => agent.client_certificates.extend(agent_certs),
            None => {
                eprintln!("devstack-idp: --agent-cert: the directory has no agent app");
                return ExitCode::FAILURE;
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("devstack-idp: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let server = match IdpServer::start_on(config, addr).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("devstack-idp: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = std::fs::write(&ca_out, server.ca_pem()) {
            eprintln!("devstack-idp: writing {}: {e}", ca_out.display());
            return ExitCode::FAILURE;
        }
        let info = serde_json::json!({
            "url": server.url(),
            "ca_pem": ca_out,
            "tenant": defaults::TENANT_ID,
            "tenant_domain": defaults::TENANT_DOMAIN,
            "agent_app_id": defaults::AGENT_APP_ID,
            "agent_app_secret": defaults::AGENT_APP_SECRET,
            "agent_scope": defaults::AGENT_SCOPE,
            "connector_app_id": defaults::CONNECTOR_APP_ID,
            "connector_scope": defaults::CONNECTOR_SCOPE,
            "user": defaults::JANE,
            "password": defaults::PASSWORD,
        });
        println!("{info}");
        // Serve until stdin closes: the parent process controls the lifetime.
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await;
        drop(server);
        ExitCode::SUCCESS
    })
}
