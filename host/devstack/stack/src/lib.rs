//! The whole devstack on loopback, for `delegate demo` and the end-to-end tests.
//!
//! One CA generated at start signs the certificates of the Entra-compatible IdP, the ServiceNow
//! sandbox, the Microsoft Graph stand-in and the Bedrock-compatible endpoint (all HTTPS). [`DevStack::delegate_config`]
//! writes the `delegate.toml` that points the production code paths at them: the same file an
//! operator writes for real Entra ID, ServiceNow and Bedrock, with other URLs and the CA.

pub mod agentcore;

use delegate_devstack_bedrock::{BedrockStub, BedrockStubConfig};
use delegate_devstack_graph::{Graph, GraphConfig};
use delegate_devstack_idp::{IdpConfig, IdpServer, defaults};
use delegate_devstack_servicenow::{JwksSource, ServiceNow, ServiceNowConfig};
use delegate_devstack_tls::DevCa;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use delegate_devstack_bedrock::Faults as BedrockFaults;
pub use delegate_devstack_graph::{
    Graph as GraphStandIn, Refusal as GraphRefusal, SeenToken as GraphSeenToken,
};
pub use delegate_devstack_idp::Idp;
pub use delegate_devstack_idp::defaults as idp_defaults;
pub use delegate_devstack_servicenow::seed;
pub use delegate_devstack_tls::{Fault, FaultFilter, FaultSwitch};

/// The model id the devstack endpoint answers for.
pub const MODEL_ID: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";

/// The fixed AWS keys the devstack Bedrock endpoint accepts (it checks the SigV4 header's
/// shape, not the signature). Use them instead of the default credential chain, which would
/// probe the instance metadata service.
pub fn aws_credentials() -> delegate_model::AwsCredentials {
    delegate_model::AwsCredentials::Static {
        access_key_id: "AKIDDEVSTACK".into(),
        secret_access_key: delegate_secret::Secret::new("devstack-secret-key"),
        session_token: None,
    }
}

/// Points a child process's default AWS credential chain at [`aws_credentials`] through the
/// environment provider: no session token, no profile, no instance-metadata probing.
pub fn set_aws_env(cmd: &mut std::process::Command) {
    let delegate_model::AwsCredentials::Static { access_key_id, secret_access_key, .. } = aws_credentials()
    else {
        unreachable!("the devstack's AWS credentials are static keys")
    };
    cmd.env("AWS_ACCESS_KEY_ID", access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret_access_key.expose())
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true");
}

/// Why the devstack could not start.
#[derive(Debug, thiserror::Error)]
#[error("devstack: {0}")]
pub struct DevStackError(String);

fn err(e: impl std::fmt::Display) -> DevStackError {
    DevStackError(e.to_string())
}

/// Where the services listen (port 0 = any free port).
#[derive(Debug, Clone)]
pub struct DevStackOptions {
    /// IdP address.
    pub idp: SocketAddr,
    /// ServiceNow sandbox address.
    pub servicenow: SocketAddr,
    /// Bedrock endpoint address.
    pub bedrock: SocketAddr,
    /// Microsoft Graph stand-in address.
    pub graph: SocketAddr,
    /// Directory for the CA certificate and the agent app's client secret file.
    pub dir: PathBuf,
    /// Pause between streamed model deltas (0 for tests and benchmarks).
    pub delta_delay: Duration,
}

impl DevStackOptions {
    /// Any free loopback ports, files under `dir`.
    pub fn ephemeral(dir: &Path) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            idp: any,
            servicenow: any,
            bedrock: any,
            graph: any,
            dir: dir.to_owned(),
            delta_delay: Duration::ZERO,
        }
    }
}

/// The running devstack.
pub struct DevStack {
    /// The IdP (counters, fault switches, token minting).
    pub idp: IdpServer,
    /// The ServiceNow sandbox (audit records, fault switches).
    pub servicenow: ServiceNow,
    /// The Bedrock endpoint's fault switches and call counter.
    pub bedrock: BedrockFaults,
    /// `https://localhost:<port>` of the ServiceNow sandbox.
    pub servicenow_url: String,
    /// `https://localhost:<port>` of the Bedrock endpoint.
    pub bedrock_url: String,
    /// The Microsoft Graph stand-in (what tokens it saw).
    pub graph: Graph,
    /// `https://localhost:<port>` of the Graph stand-in (where `https://graph.microsoft.com`
    /// would be).
    pub graph_url: String,
    /// The CA certificate every service's certificate is signed by.
    pub ca_path: PathBuf,
    /// File holding the agent app's client secret (referenced by the vault config).
    pub secret_path: PathBuf,
    /// One fault switch per service, all at [`Fault::Pass`] until a test flips them.
    pub faults: DevStackFaults,
    /// A server certificate for `localhost`/`127.0.0.1` signed by the devstack CA, for more
    /// stand-ins started next to these (the AgentCore front door and Identity data plane).
    pub server_tls: std::sync::Arc<rustls::ServerConfig>,
}

/// The fault switches of the three services (see [`FaultSwitch`]): every request each one
/// serves, and its listener, go through its switch.
#[derive(Debug, Clone, Default)]
pub struct DevStackFaults {
    /// The IdP: discovery, JWKS and the token endpoint (filter by path to pick one).
    pub idp: FaultSwitch,
    /// The ServiceNow sandbox.
    pub servicenow: FaultSwitch,
    /// The Bedrock endpoint.
    pub bedrock: FaultSwitch,
    /// The Microsoft Graph stand-in.
    pub graph: FaultSwitch,
}

impl DevStack {
    /// Starts the three services.
    pub async fn start(options: &DevStackOptions) -> Result<Self, DevStackError> {
        std::fs::create_dir_all(&options.dir).map_err(err)?;
        let ca = DevCa::generate().map_err(err)?;
        let ca_path = options.dir.join("devstack-ca.pem");
        ca.write_ca_pem(&ca_path).map_err(err)?;
        let secret_path = options.dir.join("agent-app.secret");
        std::fs::write(&secret_path, defaults::AGENT_APP_SECRET).map_err(err)?;

        let faults = DevStackFaults::default();
        let idp =
            IdpServer::start_with_faults(IdpConfig::default(), options.idp, &ca, Some(faults.idp.clone()))
                .await
                .map_err(err)?;
        let client = delegate_outbound::build_client(&delegate_outbound::OutboundConfig {
            extra_ca_pem_files: vec![ca_path.clone()],
            ..Default::default()
        })
        .map_err(err)?;

        let tls = ca.server_config(&["localhost", "127.0.0.1"]).map_err(err)?;
        let sn_listener = tokio::net::TcpListener::bind(options.servicenow).await.map_err(err)?;
        let servicenow_url = format!("https://localhost:{}", sn_listener.local_addr().map_err(err)?.port());
        let mut sn_config = ServiceNowConfig::new(
            idp.idp().issuer(defaults::TENANT_ID),
            defaults::CONNECTOR_APP_ID,
            JwksSource::Remote { url: idp.idp().jwks_uri(defaults::TENANT_ID), client: client.clone() },
        );
        let graph_client = client;
        sn_config.base_url = Some(servicenow_url.clone());
        let servicenow = ServiceNow::new(sn_config).map_err(err)?;
        tokio::spawn(serve(
            sn_listener,
            servicenow.router(),
            tls.clone(),
            faults.servicenow.clone(),
            "ServiceNow sandbox",
        ));

        // Graph accepts the v1 tokens Entra issues for it (and v2 ones, as Graph does).
        let graph_listener = tokio::net::TcpListener::bind(options.graph).await.map_err(err)?;
        let graph_url = format!("https://localhost:{}", graph_listener.local_addr().map_err(err)?.port());
        let mut graph_config = GraphConfig::new(
            defaults::TENANT_ID,
            vec![idp.idp().issuer_v1(defaults::TENANT_ID), idp.idp().issuer(defaults::TENANT_ID)],
            delegate_devstack_graph::JwksSource::Remote {
                url: idp.idp().jwks_uri(defaults::TENANT_ID),
                client: graph_client,
            },
        );
        graph_config.base_url = Some(graph_url.clone());
        graph_config.authorization_uri = format!("{}/common/oauth2/authorize", idp.url());
        let graph = Graph::new(graph_config).map_err(err)?;
        tokio::spawn(serve(
            graph_listener,
            graph.router(),
            tls.clone(),
            faults.graph.clone(),
            "Graph stand-in",
        ));

        let stub =
            BedrockStub::new(BedrockStubConfig { delta_delay: options.delta_delay, ..Default::default() });
        let bedrock = stub.faults();
        let br_listener = tokio::net::TcpListener::bind(options.bedrock).await.map_err(err)?;
        let bedrock_url = format!("https://localhost:{}", br_listener.local_addr().map_err(err)?.port());
        tokio::spawn(serve(
            br_listener,
            stub.router(),
            tls.clone(),
            faults.bedrock.clone(),
            "Bedrock endpoint",
        ));

        Ok(Self {
            idp,
            servicenow,
            bedrock,
            servicenow_url,
            bedrock_url,
            graph,
            graph_url,
            ca_path,
            secret_path,
            faults,
            server_tls: tls,
        })
    }

    /// A complete `delegate.toml` for a host on `listen` serving the ServiceNow agent
    /// (`component`), pointed at this devstack. `audit` is `"stdout"` or a file path.
    ///
    /// Two downstream audiences, each with its own provider and cached Token B: ServiceNow
    /// (the connector app's `user_impersonation`) and Microsoft Graph (`User.Read`, for the
    /// agent's `who_am_i` / `my_manager` tools, offered because `graph_url` is set).
    pub fn delegate_config(&self, listen: SocketAddr, component: &Path, audit: &str) -> String {
        let idp = self.idp.idp();
        format!(
            r#"# Generated by delegate-devstack: the article's setup, pointed at local stand-ins.
[server]
listen = "{listen}"

[outbound]
ca_files = [{ca:?}]

[auth]
discovery_url = "{discovery}"
allowed_audiences = ["{agent}"]
allowed_clients = ["{agent}"]
required_scopes = ["{agent_scope}"]

[model]
region = "us-east-1"
endpoint_url = "{bedrock}"
ca_bundle = {ca:?}
model_id = "{model}"

[vault.providers.servicenow]
kind = "entra_obo"
token_endpoint = "{token_endpoint}"
client_id = "{agent}"
client_secret = {{ file = {secret:?} }}

[vault.providers.graph]
kind = "entra_obo"
token_endpoint = "{token_endpoint}"
client_id = "{agent}"
client_secret = {{ file = {secret:?} }}

[audit]
sink = {audit:?}

[[plugin]]
name = "servicenow-agent"
component = {component:?}

[plugin.settings]
servicenow_url = "{servicenow}"
graph_url = "{graph}"

[[plugin.egress.rules]]
methods = ["GET", "PATCH"]
host = "localhost"
port = {sn_port}
path_prefix = "/api/now/table"
credential = {{ provider = "servicenow", scopes = ["api://{connector}/{connector_scope}"] }}

[[plugin.egress.rules]]
methods = ["GET"]
host = "localhost"
port = {graph_port}
path_prefix = "/v1.0/me"
credential = {{ provider = "graph", scopes = ["{graph_scope}"] }}
"#,
            ca = self.ca_path.display().to_string(),
            discovery = idp.discovery_url(defaults::TENANT_ID),
            agent = defaults::AGENT_APP_ID,
            agent_scope = defaults::AGENT_SCOPE,
            bedrock = self.bedrock_url,
            model = MODEL_ID,
            token_endpoint = idp.token_endpoint(defaults::TENANT_ID),
            secret = self.secret_path.display().to_string(),
            component = component.display().to_string(),
            servicenow = self.servicenow_url,
            sn_port = self.servicenow_url.rsplit(':').next().unwrap_or("443"),
            connector = defaults::CONNECTOR_APP_ID,
            connector_scope = defaults::CONNECTOR_SCOPE,
            graph = self.graph_url,
            graph_port = self.graph_url.rsplit(':').next().unwrap_or("443"),
            graph_scope = delegate_devstack_graph::USER_READ_SCOPE,
        )
    }
}

impl DevStack {
    /// The article's Python agent (`host/cli/benches/python-stack/main.py` in `app_dir`: Strands,
    /// BedrockModel, BedrockAgentCoreApp) under uvicorn with `workers` processes on
    /// `127.0.0.1:port`, configured with this stack's stand-ins and CA, as [`Self::delegate_config`]
    /// configures `delegate`: the side-by-side baseline of the load bench.
    pub fn python_agent_command(
        &self,
        interpreter: &Path,
        app_dir: &Path,
        workers: usize,
        port: u16,
    ) -> std::process::Command {
        let idp = self.idp.idp();
        let mut cmd = std::process::Command::new(interpreter);
        cmd.current_dir(app_dir)
            .args(["-m", "uvicorn", "main:gated", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--workers")
            .arg(workers.to_string())
            .args(["--log-level", "warning", "--no-access-log"])
            .env("SNOW_INSTANCE_URL", &self.servicenow_url)
            .env("MODEL_ID", MODEL_ID)
            .env("AWS_REGION", "us-east-1")
            .env("BEDROCK_ENDPOINT_URL", &self.bedrock_url)
            .env("AWS_CA_BUNDLE", &self.ca_path)
            .env("DEVSTACK_CA_FILE", &self.ca_path)
            .env("ENTRA_AUTHORITY", format!("{}/{}", idp.base_url(), defaults::TENANT_ID))
            .env("ENTRA_DISCOVERY_URL", idp.discovery_url(defaults::TENANT_ID))
            .env("AGENT_CLIENT_ID", defaults::AGENT_APP_ID)
            .env("AGENT_SCOPE", defaults::AGENT_SCOPE)
            .env("SNOW_SCOPE", format!("api://{}/{}", defaults::CONNECTOR_APP_ID, defaults::CONNECTOR_SCOPE))
            .env("AGENT_CLIENT_SECRET_FILE", &self.secret_path)
            // requests (under MSAL) lets these override the CA it is given.
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE")
            .env("PYTHONUNBUFFERED", "1");
        // The stand-in Bedrock endpoint's fixed keys, for boto3's environment provider.
        set_aws_env(&mut cmd);
        cmd
    }

    /// A Token A for `user`, as the article's client app gets one from Entra: the agent app as
    /// client and audience, its `access_as_user` scope, valid for `lifetime`.
    pub fn token_a(&self, user: &str, lifetime: Duration) -> Result<delegate_secret::Secret, DevStackError> {
        self.idp
            .idp()
            .mint_access_token(
                user,
                defaults::AGENT_APP_ID,
                defaults::AGENT_APP_ID,
                &[defaults::AGENT_SCOPE],
                lifetime,
            )
            .map_err(err)
    }

    /// A plugin manifest for the ServiceNow agent at `component` (whose bytes are
    /// `component_bytes`): version `version`, and the least privilege it needs — GET and
    /// PATCH on the incident table only, narrower than the operator's `/api/now/table` rule
    /// in [`DevStack::delegate_config`], and GET on Graph's `/v1.0/me` (profile and manager).
    pub fn servicenow_manifest(&self, component: &Path, component_bytes: &[u8], version: &str) -> String {
        use sha2::Digest;
        format!(
            r#"# Generated by delegate-devstack: the ServiceNow incident agent's manifest.
name = "servicenow-agent"
version = "{version}"
description = "Lists and updates the caller's ServiceNow incidents, as the caller"
component = {component:?}
digest = "sha256:{digest}"

[[egress.rules]]
methods = ["GET", "PATCH"]
host = "localhost"
port = {sn_port}
path_prefix = "/api/now/table/incident"

[[egress.rules]]
methods = ["GET"]
host = "localhost"
port = {graph_port}
path_prefix = "/v1.0/me"
"#,
            component = component.display().to_string(),
            digest = hex::encode(sha2::Sha256::digest(component_bytes)),
            sn_port = self.servicenow_url.rsplit(':').next().unwrap_or("443"),
            graph_port = self.graph_url.rsplit(':').next().unwrap_or("443"),
        )
    }
}

/// Writes a fresh random admin token (64 hex characters) to `path`, readable only by its
/// owner, and returns nothing else: the token stays in the file.
pub fn write_admin_token(path: &Path) -> std::io::Result<()> {
    use rand::RngCore;
    use std::io::Write;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(hex::encode(raw).as_bytes())?;
    file.write_all(b"\n")
}

async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: std::sync::Arc<rustls::ServerConfig>,
    faults: FaultSwitch,
    what: &'static str,
) {
    let pending = std::future::pending();
    if let Err(e) =
        delegate_devstack_tls::serve_https_with_faults(listener, router, tls, pending, faults).await
    {
        tracing::warn!(error = %e, "devstack {what} stopped");
    }
}

/// How a chain host exchanges the caller's token for the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainExchange {
    /// RFC 8693 token exchange with the host's own client-credentials token as `actor_token`:
    /// the IdP nests this host in the issued token's `act` chain, so the next host can count it.
    TokenExchange,
    /// Entra On-Behalf-Of: no `act` chain (each hop looks like the user's own call); depth
    /// protection sees it only through the signed hop counter ([`ChainHost::hop_key`]).
    OnBehalfOf,
}

/// The parts of a chain host's `delegate.toml` that differ between tests and the demo.
#[derive(Debug, Clone)]
pub struct ChainHost {
    /// Where its AgentCore-contract listener listens (port 0: any free port).
    pub listen: SocketAddr,
    /// `"stdout"` or an audit file path.
    pub audit: String,
    /// `[auth] max_chain_depth`, also the outbound limit of its token-exchange providers.
    pub max_chain_depth: usize,
    /// How it exchanges tokens (for the next agent and for ServiceNow).
    pub exchange: ChainExchange,
    /// Share the devstack's hop key ([`DevStack::hop_key_path`]) with the other chain hosts:
    /// `[auth] hop_key`, the agent clients in `hop_required_from`, and the hops to agent
    /// hosts marked (`max_chain_depth`) on `entra_obo` providers too, so that the signed hop
    /// counter carries the chain depth.
    pub hop_key: bool,
}

/// The outbound limit of a host B provider that calls an Agent A host back: the largest
/// `auth.max_chain_depth` there is. It marks the hop (so the hop counter is sent) and leaves
/// the refusal to A's inbound check.
const LOOP_BACK_LIMIT: usize = 16;

/// `http://127.0.0.1:<port>`-style egress rule fields for an agent host on loopback.
fn loopback_rule(addr: SocketAddr, provider: &str, scope: &str) -> String {
    format!(
        r#"[[plugin.egress.rules]]
methods = ["POST"]
scheme = "http"
host = "{ip}"
allow_ip_literal = true
port = {port}
path_prefix = "/invocations"
credential = {{ provider = "{provider}", scopes = ["{scope}"] }}
"#,
        ip = addr.ip(),
        port = addr.port(),
    )
}

impl DevStack {
    /// The file holding Agent B's client secret (written on first use).
    pub fn agent_b_secret_path(&self) -> Result<PathBuf, DevStackError> {
        let path = self.secret_path.with_file_name("agent-b.secret");
        if !path.exists() {
            std::fs::write(&path, defaults::AGENT_B_APP_SECRET).map_err(err)?;
        }
        Ok(path)
    }

    /// The file holding the chain hosts' shared hop key: base64 of 32 random bytes, written
    /// on first use.
    pub fn hop_key_path(&self) -> Result<PathBuf, DevStackError> {
        use base64::Engine;
        let path = self.secret_path.with_file_name("hop.key");
        if !path.exists() {
            let key: [u8; 32] = rand::random();
            let text = base64::engine::general_purpose::STANDARD.encode(key);
            std::fs::write(&path, format!("{text}\n")).map_err(err)?;
        }
        Ok(path)
    }

    /// The `[auth]` lines of the hop counter for a host that accepts the agent clients
    /// `agents` (they must send one): none without [`ChainHost::hop_key`].
    fn chain_hop_auth(&self, host: &ChainHost, agents: &[&str]) -> Result<String, DevStackError> {
        if !host.hop_key {
            return Ok(String::new());
        }
        let path = self.hop_key_path()?.display().to_string();
        let agents: Vec<String> = agents.iter().map(|a| format!("{a:?}")).collect();
        Ok(format!("hop_key = {{ file = {path:?} }}\nhop_required_from = [{}]\n", agents.join(", ")))
    }

    /// The `[outbound]`, `[model]` and `[audit]` sections every chain host shares.
    fn chain_common(&self, host: &ChainHost) -> String {
        format!(
            r#"[server]
listen = "{listen}"

[outbound]
ca_files = [{ca:?}]

[model]
region = "us-east-1"
endpoint_url = "{bedrock}"
ca_bundle = {ca:?}
model_id = "{model}"

[audit]
sink = {audit:?}
"#,
            listen = host.listen,
            ca = self.ca_path.display().to_string(),
            bedrock = self.bedrock_url,
            model = MODEL_ID,
            audit = host.audit,
        )
    }

    /// A vault provider `name` exchanging as `client` (secret in `secret`) per `host.exchange`.
    /// `limit`: the provider's tokens go to another agent host (the hop is marked) with this
    /// outbound limit; on `entra_obo` only with the hop key (the hop counter is its count).
    fn chain_provider(
        &self,
        host: &ChainHost,
        name: &str,
        client: &str,
        secret: &Path,
        limit: Option<usize>,
    ) -> String {
        let token_endpoint = self.idp.idp().token_endpoint(defaults::TENANT_ID);
        let secret = secret.display().to_string();
        let depth = |marked: bool| match limit {
            Some(max) if marked => format!("max_chain_depth = {max}\n"),
            _ => String::new(),
        };
        match host.exchange {
            ChainExchange::OnBehalfOf => format!(
                "[vault.providers.{name}]\nkind = \"entra_obo\"\ntoken_endpoint = \"{token_endpoint}\"\nclient_id = \"{client}\"\nclient_secret = {{ file = {secret:?} }}\n{depth}",
                depth = depth(host.hop_key)
            ),
            ChainExchange::TokenExchange => {
                let depth = depth(true);
                format!(
                    "[vault.providers.{name}]\nkind = \"token_exchange\"\ntoken_endpoint = \"{token_endpoint}\"\nclient_id = \"{client}\"\nclient_secret = {{ file = {secret:?} }}\nactor_token_scopes = [\"api://{client}/.default\"]\n{depth}"
                )
            }
        }
    }

    /// `delegate.toml` for host A of a two-agent chain: it verifies the user's Token A (as
    /// [`DevStack::delegate_config`] does) and serves the dispatcher plugin (`dispatcher`),
    /// which forwards the prompt to the agent host at `agent_b` (`agent_b_plugin` there, or
    /// its default plugin). Its egress rule to B names the vault provider `agent-b`, which
    /// exchanges the caller's token for one addressed to Agent B. With `accept_agent_b`, A
    /// also accepts tokens Agent B obtained (so that B can call back: a loop, which the
    /// chain-depth limit refuses).
    pub fn chain_host_a_config(
        &self,
        host: &ChainHost,
        dispatcher: &Path,
        agent_b: SocketAddr,
        agent_b_plugin: Option<&str>,
        accept_agent_b: bool,
    ) -> Result<String, DevStackError> {
        let idp = self.idp.idp();
        let hop =
            self.chain_hop_auth(host, if accept_agent_b { &[defaults::AGENT_B_APP_ID] } else { &[] })?;
        let clients = if accept_agent_b {
            format!("\"{}\", \"{}\"", defaults::AGENT_APP_ID, defaults::AGENT_B_APP_ID)
        } else {
            format!("\"{}\"", defaults::AGENT_APP_ID)
        };
        let plugin_setting = agent_b_plugin.map(|p| format!("agent_plugin = \"{p}\"\n")).unwrap_or_default();
        Ok(format!(
            r#"# Generated by delegate-devstack: host A of an agent chain (dispatcher → Agent B).
{common}
[auth]
discovery_url = "{discovery}"
allowed_audiences = ["{agent}"]
allowed_clients = [{clients}]
required_scopes = ["{scope}"]
max_chain_depth = {depth}
{hop}
{provider}
[[plugin]]
name = "dispatcher"
component = {component:?}

[plugin.settings]
agent_url = "http://{agent_b}"
{plugin_setting}
{rule}"#,
            common = self.chain_common(host),
            discovery = idp.discovery_url(defaults::TENANT_ID),
            agent = defaults::AGENT_APP_ID,
            scope = defaults::AGENT_SCOPE,
            depth = host.max_chain_depth,
            provider = self.chain_provider(
                host,
                "agent-b",
                defaults::AGENT_APP_ID,
                &self.secret_path,
                Some(host.max_chain_depth)
            ),
            component = dispatcher.display().to_string(),
            rule = loopback_rule(
                agent_b,
                "agent-b",
                &format!("api://{}/{}", defaults::AGENT_B_APP_ID, defaults::AGENT_SCOPE)
            ),
        ))
    }

    /// `delegate.toml` for host B of a two-agent chain: it accepts tokens Agent A obtained for
    /// Agent B (audience Agent B, client Agent A) and serves the ServiceNow agent
    /// (`servicenow_agent`, the default plugin), whose egress rule exchanges again, as Agent
    /// B, for the ServiceNow connector. With `loop_back` = (dispatcher component, address of
    /// an Agent A host), B also serves `dispatcher`, which calls Agent A back (a loop; its
    /// provider marks the hop with the largest limit, so A's inbound check is what refuses it).
    pub fn chain_host_b_config(
        &self,
        host: &ChainHost,
        servicenow_agent: &Path,
        loop_back: Option<(&Path, SocketAddr)>,
    ) -> Result<String, DevStackError> {
        let idp = self.idp.idp();
        let secret = self.agent_b_secret_path()?;
        let mut toml = format!(
            r#"# Generated by delegate-devstack: host B of an agent chain (ServiceNow agent).
{common}
[auth]
discovery_url = "{discovery}"
allowed_audiences = ["{agent_b}"]
allowed_clients = ["{agent_a}"]
required_scopes = ["{scope}"]
max_chain_depth = {depth}
{hop}
{provider}
[[plugin]]
name = "servicenow-agent"
component = {component:?}
default = true

[plugin.settings]
servicenow_url = "{servicenow}"

[[plugin.egress.rules]]
methods = ["GET", "PATCH"]
host = "localhost"
port = {sn_port}
path_prefix = "/api/now/table"
credential = {{ provider = "servicenow", scopes = ["api://{connector}/{connector_scope}"] }}
"#,
            common = self.chain_common(host),
            discovery = idp.discovery_url(defaults::TENANT_ID),
            agent_b = defaults::AGENT_B_APP_ID,
            agent_a = defaults::AGENT_APP_ID,
            scope = defaults::AGENT_SCOPE,
            depth = host.max_chain_depth,
            // ServiceNow is not an agent host: no outbound depth limit on its provider.
            hop = self.chain_hop_auth(host, &[defaults::AGENT_APP_ID])?,
            provider = self.chain_provider(host, "servicenow", defaults::AGENT_B_APP_ID, &secret, None),
            component = servicenow_agent.display().to_string(),
            servicenow = self.servicenow_url,
            sn_port = self.servicenow_url.rsplit(':').next().unwrap_or("443"),
            connector = defaults::CONNECTOR_APP_ID,
            connector_scope = defaults::CONNECTOR_SCOPE,
        );
        if let Some((dispatcher, agent_a)) = loop_back {
            toml.push_str(&format!(
                "\n{provider}\n[[plugin]]\nname = \"dispatcher\"\ncomponent = {component:?}\n\n[plugin.settings]\nagent_url = \"http://{agent_a}\"\n\n{rule}",
                provider = self.chain_provider(
                    host,
                    "agent-a",
                    defaults::AGENT_B_APP_ID,
                    &secret,
                    Some(LOOP_BACK_LIMIT)
                ),
                component = dispatcher.display().to_string(),
                rule = loopback_rule(
                    agent_a,
                    "agent-a",
                    &format!("api://{}/{}", defaults::AGENT_APP_ID, defaults::AGENT_SCOPE)
                ),
            ));
        }
        Ok(toml)
    }
}
