//! `delegate demo` and `delegate token`: the whole chain on one machine, on loopback.
//!
//! The demo starts the devstack (Entra-compatible IdP, ServiceNow sandbox, Microsoft Graph
//! stand-in, Bedrock-compatible endpoint with its planner; one CA) and the host serving the
//! ServiceNow agent plugin (its component embedded in this binary), configured through the same
//! `delegate.toml` an operator writes, so every code path is the production one.

use crate::Failure;
use delegate_app::Host;
use delegate_config::Config;
use delegate_devstack::{DevStack, DevStackOptions, idp_defaults as defaults};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The demo's working directory: CA certificate, generated config, audit log, plugin file.
/// `DELEGATE_DEMO_DIR` moves it (two demos side by side, e.g. in tests); `delegate token`
/// reads the CA from the same place.
pub(crate) fn demo_dir() -> PathBuf {
    std::env::var_os("DELEGATE_DEMO_DIR")
        .map_or_else(|| std::env::temp_dir().join("delegate-demo"), PathBuf::from)
}

/// Where the demo writes its CA certificate, so `delegate token` and `curl --cacert` find it.
pub(crate) fn default_ca_path() -> PathBuf {
    demo_dir().join("devstack-ca.pem")
}

/// Default devstack IdP address (stable, so `delegate token` needs no flags).
pub(crate) const DEFAULT_IDP: &str = "https://127.0.0.1:8443";

/// Where the demo's parts listen.
pub(crate) struct DemoOptions {
    pub listen: SocketAddr,
    pub idp: SocketAddr,
    pub servicenow: SocketAddr,
    pub bedrock: SocketAddr,
    pub admin: SocketAddr,
    pub audit_log: Option<PathBuf>,
    /// `--agentcore`: serve the host as the container behind the AgentCore stand-ins.
    pub agentcore: Option<crate::demo_agentcore::AgentCoreDemo>,
    /// `--chain`: two hosts (dispatcher on `listen`, ServiceNow agent on this address).
    pub chain: Option<SocketAddr>,
}

pub(crate) fn run(options: &DemoOptions) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(demo(options))
}

#[allow(clippy::print_stdout)]
async fn demo(options: &DemoOptions) -> Result<(), Failure> {
    let dir = demo_dir();
    let stack = DevStack::start(&DevStackOptions {
        idp: options.idp,
        servicenow: options.servicenow,
        bedrock: options.bedrock,
        // Any free loopback port: the URL is printed and written into the config.
        graph: SocketAddr::from(([127, 0, 0, 1], 0)),
        dir: dir.clone(),
        delta_delay: Duration::from_millis(15),
    })
    .await
    .map_err(Failure::failed)?;
    if let Some(listen_b) = options.chain {
        return crate::demo_chain::run(&stack, &dir, options.listen, listen_b, options.audit_log.clone())
            .await;
    }
    let component = dir.join("servicenow_agent.wasm");
    std::fs::write(&component, delegate_artifacts::bytes::SERVICENOW_AGENT)
        .map_err(|e| Failure::failed(format!("cannot write {}: {e}", component.display())))?;
    // The agent is deployed like a third-party plugin: through a digest-pinned manifest that
    // asks for less than the operator grants.
    let manifest = dir.join("servicenow-agent.toml");
    let manifest_text = stack.servicenow_manifest(
        &component,
        delegate_artifacts::bytes::SERVICENOW_AGENT,
        env!("CARGO_PKG_VERSION"),
    );
    std::fs::write(&manifest, manifest_text)
        .map_err(|e| Failure::failed(format!("cannot write {}: {e}", manifest.display())))?;
    let token_file = dir.join("admin-token");
    delegate_devstack::write_admin_token(&token_file)
        .map_err(|e| Failure::failed(format!("cannot write {}: {e}", token_file.display())))?;
    let audit = options.audit_log.clone().unwrap_or_else(|| dir.join("audit.jsonl"));
    let toml = stack.delegate_config(options.listen, &component, &audit.display().to_string()).replace(
        &format!("component = {:?}", component.display().to_string()),
        &format!("manifest = {:?}", manifest.display().to_string()),
    ) + &format!(
        "\n[admin]\nlisten = \"{}\"\ntoken_file = {:?}\n",
        options.admin,
        token_file.display().to_string()
    );
    // `--agentcore`: the Identity stand-in first, since the container's config names it.
    let (agentcore, toml) = match &options.agentcore {
        Some(ac) => {
            let (identity, toml) = crate::demo_agentcore::start_identity(&stack, ac, &toml).await?;
            (Some((ac, identity)), toml)
        }
        None => (None, toml),
    };
    let config_path = dir.join("delegate.toml");
    std::fs::write(&config_path, &toml)
        .map_err(|e| Failure::failed(format!("cannot write {}: {e}", config_path.display())))?;
    let config = Config::load(&config_path).map_err(|e| Failure::failed(format!("demo config: {e}")))?;
    let host =
        Host::start_with(&config, None, delegate_devstack::aws_credentials()).await.map_err(Failure::from)?;
    let listen = host.addr;

    println!("delegate demo is running (Ctrl-C stops it)\n");
    println!("  agent host (AgentCore contract)  http://{listen}/invocations   http://{listen}/ping");
    let plugin = host.plugin();
    println!(
        "  plugin                           servicenow-agent {} ({})",
        plugin.as_ref().map_or("", |p| p.version()),
        plugin.as_ref().map_or("", |p| p.digest())
    );
    println!(
        "  admin API (loopback only)        http://{}   token file {}",
        host.admin_addr.map(|a| a.to_string()).unwrap_or_default(),
        token_file.display()
    );
    println!("  identity provider (Entra-like)   {}  tenant {}", stack.idp.url(), defaults::TENANT_ID);
    println!("  ServiceNow sandbox               {}", stack.servicenow_url);
    println!("  Microsoft Graph stand-in         {}", stack.graph_url);
    println!("  Bedrock-compatible endpoint      {}", stack.bedrock_url);
    println!("  devstack CA certificate          {}", stack.ca_path.display());
    println!("  host config                      {}", config_path.display());
    println!("  audit log                        {}\n", audit.display());
    println!("  demo users (password {}):", defaults::PASSWORD);
    println!("    {}   her own five incidents", defaults::JANE);
    println!("    {}  HR analyst: also sees the HR incident", defaults::HR_ANALYST);
    println!("    {}     security analyst", defaults::SECURITY_ANALYST);
    let exe = std::env::current_exe().map_or_else(|_| "delegate".to_owned(), |p| p.display().to_string());
    println!("\n  try it:");
    println!(
        "    curl -N http://{listen}/invocations -H \"Authorization: Bearer $({exe} token --user {})\" -d '{{\"prompt\":\"Show me 5 incidents assigned to me\"}}'",
        defaults::JANE
    );
    println!(
        "    {exe} invoke --user {} \"Who is my manager, and show me my incidents\"   # Graph and ServiceNow, two Token Bs",
        defaults::JANE
    );
    println!(
        "    curl -i http://{listen}/invocations -d '{{\"prompt\":\"no token\"}}'   # 401, no plugin code runs"
    );
    println!(
        "    {exe} plugin list --admin-url http://{} --token-file {}\n",
        host.admin_addr.map(|a| a.to_string()).unwrap_or_default(),
        token_file.display()
    );

    let _front_door = match &agentcore {
        Some((ac, identity)) => {
            Some(crate::demo_agentcore::start_front_door(&stack, ac, identity, listen).await?)
        }
        None => None,
    };

    crate::serve::shutdown_signal().await;
    host.shutdown(Duration::from_secs(10)).await.map_err(Failure::from)
}

/// `delegate token`: a Token A for a devstack user, by the password grant (ROPC) the devstack
/// IdP supports for demos. Printed alone on stdout so `$(delegate token ...)` works.
pub(crate) fn token(user: &str, idp: &str, ca: Option<&Path>, tenant: &str) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the async runtime: {e}")))?;
    let token = rt.block_on(fetch_token(user, idp, ca, tenant))?;
    #[allow(clippy::print_stdout)]
    {
        println!("{token}");
    }
    Ok(())
}

/// A Token A for `user` from the devstack IdP (password grant).
pub(crate) async fn fetch_token(
    user: &str,
    idp: &str,
    ca: Option<&Path>,
    tenant: &str,
) -> Result<String, Failure> {
    let ca = ca.map_or_else(default_ca_path, Path::to_owned);
    {
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
        Ok(token.to_owned())
    }
}
