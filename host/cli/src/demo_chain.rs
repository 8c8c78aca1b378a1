//! `delegate demo --chain`: two agent hosts in one process, Jane → A → B → ServiceNow.
//!
//! Host A serves the dispatcher plugin, which forwards the prompt to host B's `/invocations`
//! and relays B's stream; host B serves the ServiceNow agent. Both are configured by the
//! devstack's chain helpers (`DevStack::chain_host_a_config`, `chain_host_b_config`): RFC 8693
//! token exchange with each host's own actor token, so the token ServiceNow receives names
//! Jane as the user and Agent B ← Agent A as the delegation chain. See docs/chains.md.

use crate::Failure;
use delegate_app::Host;
use delegate_config::Config;
use delegate_devstack::{ChainExchange, ChainHost, DevStack, idp_defaults as defaults};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn write(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    std::fs::write(path, bytes).map_err(|e| Failure::failed(format!("cannot write {}: {e}", path.display())))
}

async fn start(toml: &str, path: &Path) -> Result<Host, Failure> {
    write(path, toml.as_bytes())?;
    let config = Config::load(path).map_err(|e| Failure::failed(format!("chain demo config: {e}")))?;
    Host::start_with(&config, None, delegate_devstack::aws_credentials()).await.map_err(Failure::from)
}

/// Runs hosts A (on `listen_a`) and B (on `listen_b`) against the running `stack` until
/// Ctrl-C.
#[allow(clippy::print_stdout)]
pub(crate) async fn run(
    stack: &DevStack,
    dir: &Path,
    listen_a: SocketAddr,
    listen_b: SocketAddr,
    audit: Option<PathBuf>,
) -> Result<(), Failure> {
    let dispatcher = dir.join("dispatcher.wasm");
    write(&dispatcher, delegate_artifacts::bytes::DISPATCHER)?;
    let servicenow_agent = dir.join("servicenow_agent.wasm");
    write(&servicenow_agent, delegate_artifacts::bytes::SERVICENOW_AGENT)?;
    let audit_a = audit.clone().unwrap_or_else(|| dir.join("audit-a.jsonl"));
    let audit_b = audit.map_or_else(|| dir.join("audit-b.jsonl"), |p| p.with_extension("b.jsonl"));
    let host = |listen, audit: &Path| ChainHost {
        listen,
        audit: audit.display().to_string(),
        max_chain_depth: 2,
        exchange: ChainExchange::TokenExchange,
        hop_key: false,
    };
    let hb = host(listen_b, &audit_b);
    let toml_b = stack.chain_host_b_config(&hb, &servicenow_agent, None).map_err(Failure::failed)?;
    let b = start(&toml_b, &dir.join("delegate-b.toml")).await?;
    let ha = host(listen_a, &audit_a);
    let toml_a = stack.chain_host_a_config(&ha, &dispatcher, b.addr, None, false).map_err(Failure::failed)?;
    let a = start(&toml_a, &dir.join("delegate-a.toml")).await?;

    println!("delegate demo --chain is running (Ctrl-C stops it)\n");
    println!(
        "  host A: dispatcher               http://{}/invocations   config {}",
        a.addr,
        dir.join("delegate-a.toml").display()
    );
    println!(
        "  host B: servicenow-agent         http://{}/invocations   config {}",
        b.addr,
        dir.join("delegate-b.toml").display()
    );
    println!("  identity provider (Entra-like)   {}  tenant {}", stack.idp.url(), defaults::TENANT_ID);
    println!("  ServiceNow sandbox               {}", stack.servicenow_url);
    println!("  audit logs                       {}  {}\n", audit_a.display(), audit_b.display());
    println!("  Jane's token for Agent A is exchanged (RFC 8693, actor: host A) for Agent B, and again");
    println!("  (actor: host B) for ServiceNow: ServiceNow sees jane.smith@company.com, act = B <- A.");
    let exe = std::env::current_exe().map_or_else(|_| "delegate".to_owned(), |p| p.display().to_string());
    println!("\n  try it:");
    println!(
        "    curl -N http://{}/invocations -H \"Authorization: Bearer $({exe} token --user {})\" -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' -d '{{\"prompt\":\"Show me 5 incidents assigned to me\"}}'\n",
        a.addr,
        defaults::JANE
    );

    crate::serve::shutdown_signal().await;
    let (ra, rb) = tokio::join!(a.shutdown(Duration::from_secs(10)), b.shutdown(Duration::from_secs(10)));
    ra.map_err(Failure::from)?;
    rb.map_err(Failure::from)
}
