//! `delegate demo` and `delegate token`: the whole chain on one machine, on loopback.
//!
//! Today the demo runs the devstack identity provider (HTTPS, with a CA generated at start) and
//! the host serving the echo plugin behind the real JWT authorizer. The ServiceNow agent, the
//! Bedrock-compatible endpoint and the ServiceNow sandbox join it once the token vault and
//! egress land.

use crate::Failure;
use delegate_config::Limits;
use delegate_devstack_idp::{IdpConfig, IdpServer, defaults};
use delegate_runtime::{Runtime, RuntimeOptions};
use delegate_server::{AppState, ServerOptions};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where the demo writes its CA certificate, so `delegate token` and `curl --cacert` find it.
pub(crate) fn default_ca_path() -> PathBuf {
    std::env::temp_dir().join("delegate-demo").join("ca.pem")
}

/// Default devstack IdP address (stable, so `delegate token` needs no flags).
pub(crate) const DEFAULT_IDP: &str = "https://127.0.0.1:8443";

pub(crate) fn run(listen: SocketAddr, idp_listen: SocketAddr) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(demo(listen, idp_listen))
}

#[allow(clippy::print_stdout)]
async fn demo(listen: SocketAddr, idp_listen: SocketAddr) -> Result<(), Failure> {
    let idp_config = IdpConfig::default().with_base_url(&format!("https://{idp_listen}"));
    let idp = IdpServer::start_on(idp_config, idp_listen)
        .await
        .map_err(|e| Failure::failed(format!("devstack IdP on {idp_listen}: {e}")))?;
    let ca_path = default_ca_path();
    write_ca(&ca_path, idp.ca_pem())
        .map_err(|e| Failure::failed(format!("cannot write {}: {e}", ca_path.display())))?;

    let auth = delegate_auth::AuthConfig {
        required_scopes: vec![defaults::AGENT_SCOPE.into()],
        ..delegate_auth::AuthConfig::new(
            &idp.idp().discovery_url(defaults::TENANT_ID),
            &[defaults::AGENT_APP_ID],
            &[defaults::AGENT_APP_ID],
        )
    }
    .validate()
    .map_err(|e| Failure::failed(format!("demo auth config: {e}")))?;
    let outbound =
        delegate_outbound::OutboundConfig { extra_ca_pem_files: vec![ca_path.clone()], ..Default::default() };
    let client =
        delegate_outbound::build_client(&outbound).map_err(|e| Failure::failed(format!("outbound: {e}")))?;
    let authorizer = delegate_auth::Authorizer::new(auth, client);
    drop(authorizer.spawn_refresh());

    let limits = Limits::default();
    let runtime = Runtime::new(&RuntimeOptions {
        epoch_tick: Duration::from_millis(10),
        pool_instances: 16,
        max_memory_bytes: limits.memory_bytes,
        max_table_elements: limits.table_elements,
        guest_debug: false,
    })
    .map_err(Failure::failed)?;
    let plugin = runtime
        .load_plugin_bytes("echo", delegate_artifacts::bytes::ECHO, limits, &BTreeMap::new(), None)
        .map_err(|e| Failure::failed(format!("echo plugin: {e}")))?;
    let state = AppState::new(
        plugin,
        Arc::new(authorizer),
        ServerOptions { max_body_bytes: 1 << 20, max_concurrency: 16, retry_after_seconds: 1 },
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Failure::usage(format!("cannot listen on {listen}: {e}")))?;
    let router = delegate_server::router(Arc::clone(&state));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(delegate_server::serve(listener, router, async move {
        let _ = rx.await;
    }));

    println!("delegate demo is running (Ctrl-C stops it)\n");
    println!("  agent host (AgentCore contract)  http://{listen}/invocations   http://{listen}/ping");
    println!("  identity provider (Entra-like)   {}  tenant {}", idp.url(), defaults::TENANT_ID);
    println!("  devstack CA certificate          {}", ca_path.display());
    println!("  plugin                           echo (streams your prompt back in chunks)\n");
    println!("  demo users (password {}):", defaults::PASSWORD);
    for u in [defaults::JANE, defaults::HR_ANALYST, defaults::SECURITY_ANALYST] {
        println!("    {u}");
    }
    println!("\n  try it:");
    println!(
        "    curl -N http://{listen}/invocations -H \"Authorization: Bearer $(delegate token --user {})\" -d '{{\"prompt\":\"Hello from Jane\",\"pause_ms\":200}}'",
        defaults::JANE
    );
    println!(
        "    curl -i http://{listen}/invocations -d '{{\"prompt\":\"no token\"}}'   # 401, no plugin code runs\n"
    );

    crate::serve::shutdown_signal().await;
    state.start_draining();
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    Ok(())
}

fn write_ca(path: &Path, pem: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, pem)
}

/// `delegate token`: a Token A for a devstack user, by the password grant (ROPC) the devstack
/// IdP supports for demos. Printed alone on stdout so `$(delegate token ...)` works.
pub(crate) fn token(user: &str, idp: &str, ca: Option<&Path>, tenant: &str) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the async runtime: {e}")))?;
    let ca = ca.map_or_else(default_ca_path, Path::to_owned);
    rt.block_on(async {
        let outbound = delegate_outbound::OutboundConfig {
            extra_ca_pem_files: if ca.is_file() { vec![ca.clone()] } else { Vec::new() },
            ..Default::default()
        };
        let client = delegate_outbound::build_client(&outbound)
            .map_err(|e| Failure::usage(format!("outbound: {e}")))?;
        let url = format!("{}/{tenant}/oauth2/v2.0/token", idp.trim_end_matches('/'));
        let scope = format!("api://{}/{} openid profile", defaults::AGENT_APP_ID, defaults::AGENT_SCOPE);
        let form = [
            ("grant_type", "password"),
            ("client_id", defaults::AGENT_APP_ID),
            ("username", user),
            ("password", defaults::PASSWORD),
            ("scope", scope.as_str()),
        ];
        let resp = client.post(&url).form(&form).send().await.map_err(|e| {
            Failure::failed(format!(
                "cannot reach the identity provider at {url}: {e} (is `delegate demo` running?)"
            ))
        })?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.map_err(|e| {
            Failure::failed(format!("identity provider answered {status} with non-JSON: {e}"))
        })?;
        if !status.is_success() {
            let error = body["error"].as_str().unwrap_or("error");
            let description = body["error_description"].as_str().unwrap_or("").lines().next().unwrap_or("");
            return Err(Failure::failed(format!(
                "identity provider refused ({status}): {error}: {description}"
            )));
        }
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| Failure::failed("identity provider answer has no access_token"))?;
        #[allow(clippy::print_stdout)]
        {
            println!("{token}");
        }
        Ok(())
    })
}
