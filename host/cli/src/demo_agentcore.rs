//! `delegate demo --agentcore`: the article's AgentCore deployment on loopback. The demo host
//! becomes the container behind the AgentCore Runtime front door stand-in (the article's
//! customJWTAuthorizer, `Authorization` allow-listed), with an `agentcore_identity` provider
//! for ServiceNow that gets Token B from the AgentCore Identity stand-in (docs/agentcore.md).

use crate::Failure;
use delegate_devstack::DevStack;
use delegate_devstack::agentcore::behind_agentcore;
use std::net::SocketAddr;

/// Where the AgentCore stand-ins listen.
pub(crate) struct AgentCoreDemo {
    /// The Runtime front door (HTTPS).
    pub front_door: SocketAddr,
    /// The Identity data plane (HTTPS).
    pub identity: SocketAddr,
}

/// The running Identity stand-in, before the container starts (its URL goes into the config).
pub(crate) struct Identity {
    url: String,
}

/// Starts the Identity stand-in and rewrites the demo's `toml` for the container.
pub(crate) async fn start_identity(
    stack: &DevStack,
    options: &AgentCoreDemo,
    toml: &str,
) -> Result<(Identity, String), Failure> {
    let identity = stack.agentcore_identity().map_err(Failure::failed)?;
    let url = stack.serve_https(identity.router(), options.identity).await.map_err(Failure::failed)?;
    let toml = behind_agentcore(toml, &url);
    Ok((Identity { url }, toml))
}

/// Starts the front door in front of the container at `container`, prints how to call it and
/// returns a guard that keeps it serving.
#[allow(clippy::print_stdout)]
pub(crate) async fn start_front_door(
    stack: &DevStack,
    options: &AgentCoreDemo,
    identity: &Identity,
    container: SocketAddr,
) -> Result<impl Sized, Failure> {
    let config =
        stack.front_door_config(&format!("http://{container}"), &identity.url).map_err(Failure::failed)?;
    let front = stack.start_front_door(config, options.front_door).await.map_err(Failure::failed)?;
    let exe = std::env::current_exe().map_or_else(|_| "delegate".to_owned(), |p| p.display().to_string());
    println!("  AgentCore (--agentcore): delegate above is the container behind");
    println!("    Runtime front door (customJWTAuthorizer, Authorization allow-listed)  {}", front.base_url);
    println!("    AgentCore Identity data plane (EntraIdServiceNow, On-Behalf-Of)      {}", identity.url);
    println!("    runtime ARN {}", delegate_devstack::agentcore::RUNTIME_ARN);
    println!("    invocation URL {}\n", front.invocation_url);
    println!("  through the front door, as `agentcore invoke --bearer-token` would:");
    println!(
        "    curl -N --cacert {ca} '{url}' -H \"Authorization: Bearer $({exe} token --user {jane})\" -H 'Content-Type: application/json' -d '{{\"prompt\":\"Show me 5 incidents assigned to me\"}}'",
        ca = stack.ca_path.display(),
        url = front.invocation_url,
        jane = delegate_devstack::idp_defaults::JANE,
    );
    println!(
        "    curl -i --cacert {ca} '{url}' -d '{{\"prompt\":\"no token\"}}'   # 401 UnauthorizedException + WWW-Authenticate, the container sees nothing\n",
        ca = stack.ca_path.display(),
        url = front.invocation_url,
    );
    Ok(front)
}
