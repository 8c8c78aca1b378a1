//! `delegate`: run untrusted agent plugins as the calling user.
//!
//! Exit codes: 0 success, 1 a failed operation (e.g. an invocation or a plugin check), 2 bad
//! usage or configuration.

mod check;
mod demo;
mod demo_agentcore;
mod demo_chain;
mod invoke;
mod plugin;
mod serve;
mod telemetry;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc malloc: −9 µs p50 per model call (host/model/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// delegate — a sandboxed host for AI-agent plugins that act as the calling user.
#[derive(Debug, Parser)]
#[command(name = "delegate", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log format: `text` (one readable line per event) or `json`.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the local demo: the devstack (IdP, ServiceNow, Bedrock) and the host with the ServiceNow agent.
    ///
    /// Example: delegate demo   (then follow the printed curl line)
    Demo {
        /// Address of the agent host.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Address of the devstack identity provider (HTTPS).
        #[arg(long, default_value = "127.0.0.1:8443")]
        idp_listen: std::net::SocketAddr,
        /// Address of the devstack ServiceNow sandbox (HTTPS).
        #[arg(long, default_value = "127.0.0.1:8444")]
        servicenow_listen: std::net::SocketAddr,
        /// Address of the devstack Bedrock endpoint (HTTPS).
        #[arg(long, default_value = "127.0.0.1:8445")]
        bedrock_listen: std::net::SocketAddr,
        /// Address of the admin API (deploy, rollback; loopback only).
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin_listen: std::net::SocketAddr,
        /// Write audit records (one JSON line per credential use or denial) here.
        #[arg(long)]
        audit_log: Option<PathBuf>,
        /// Run the article's AgentCore deployment: the host as the container behind an AgentCore
        /// Runtime front door stand-in, Token B from an AgentCore Identity stand-in.
        #[arg(long)]
        agentcore: bool,
        /// Address of the AgentCore Runtime front door (HTTPS; with --agentcore).
        #[arg(long, default_value = "127.0.0.1:8446")]
        front_door_listen: std::net::SocketAddr,
        /// Address of the AgentCore Identity data plane (HTTPS; with --agentcore).
        #[arg(long, default_value = "127.0.0.1:8447")]
        identity_listen: std::net::SocketAddr,
        /// Run a two-agent chain: the dispatcher plugin on host A (`--listen`), which hands the
        /// prompt to the ServiceNow agent on host B (`--chain-b-listen`), as the user all the way
        /// (docs/chains.md).
        #[arg(long, conflicts_with = "agentcore")]
        chain: bool,
        /// Address of host B (with --chain).
        #[arg(long, default_value = "127.0.0.1:8081")]
        chain_b_listen: std::net::SocketAddr,
    },
    /// Send a prompt to /invocations and print the answer as it streams (exit 1 on failure).
    ///
    /// Example: delegate invoke --user jane.smith@company.com "Show me 5 incidents assigned to me"
    Invoke {
        /// Base URL of the host.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Bearer token (Token A) to send.
        #[arg(long, conflicts_with = "user")]
        token: Option<String>,
        /// Get a Token A for this devstack user from the demo's identity provider.
        #[arg(long)]
        user: Option<String>,
        /// Base URL of the devstack identity provider (with --user).
        #[arg(long, default_value = demo::DEFAULT_IDP)]
        idp: String,
        /// AgentCore session id (33-256 characters).
        #[arg(long)]
        session: Option<String>,
        /// Ask for one JSON answer instead of a stream.
        #[arg(long)]
        json: bool,
        /// The prompt.
        prompt: String,
    },
    /// Print a Token A (access token for the agent) for a devstack demo user.
    ///
    /// Example: delegate token --user jane.smith@company.com
    Token {
        /// The user's sign-in name.
        #[arg(long)]
        user: String,
        /// Base URL of the devstack identity provider.
        #[arg(long, default_value = demo::DEFAULT_IDP)]
        idp: String,
        /// CA certificate to trust for the IdP (default: the one `delegate demo` wrote).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Tenant (id or domain).
        #[arg(long, default_value = delegate_devstack_idp::defaults::TENANT_ID)]
        tenant: String,
    },
    /// Serve the AgentCore Runtime contract (POST /invocations, GET /ping) with a config file.
    ///
    /// Example: delegate serve --config delegate.toml
    Serve {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Work with plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Work with config files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Check that a component fits the delegate:agent world and list its imports and exports.
    ///
    /// Example: delegate plugin check target/wasm-guests/wasm32-wasip2/guest/echo.wasm
    Check {
        /// The component (.wasm) file.
        file: PathBuf,
    },
    /// Deploy a plugin version (its manifest and the component it names, or a plugin artifact
    /// in an OCI registry, by digest) without a restart.
    ///
    /// Example: delegate plugin deploy --name servicenow-agent plugins/servicenow/plugin.toml
    /// Example: delegate plugin deploy --name servicenow-agent --oci oci://registry.example.com/plugins/servicenow-agent@sha256:...
    Deploy {
        /// The operator's plugin name (the manifest must carry the same name).
        #[arg(long)]
        name: String,
        /// The manifest (.toml); its `component` file is uploaded with it.
        #[arg(required_unless_present = "oci", conflicts_with = "oci")]
        file: Option<PathBuf>,
        /// Instead of a manifest file: `oci://registry[:port]/repository@sha256:<digest>`, pulled
        /// and verified by the host (tags are refused).
        #[arg(long)]
        oci: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Push a plugin version (the manifest and the component it names) to an OCI registry as a
    /// plugin artifact; prints the digest reference to deploy.
    ///
    /// Registry credentials come from a file or the environment, never the command line:
    /// `--username` with `--password-file` or `DELEGATE_REGISTRY_PASSWORD`, or `--token-file`.
    ///
    /// Example: delegate plugin push plugin.toml oci://registry.example.com/plugins/servicenow-agent:1.4.0
    Push {
        /// The manifest (.toml) naming the component and its digest.
        file: PathBuf,
        /// `oci://registry[:port]/repository[:tag]`.
        target: String,
        /// Plain HTTP instead of HTTPS (loopback registries only).
        #[arg(long)]
        plain_http: bool,
        /// User name for basic credentials.
        #[arg(long, env = "DELEGATE_REGISTRY_USERNAME")]
        username: Option<String>,
        /// File holding the password (else `DELEGATE_REGISTRY_PASSWORD`).
        #[arg(long, requires = "username")]
        password_file: Option<PathBuf>,
        /// File holding a bearer token (instead of a user name and password).
        #[arg(long, conflicts_with = "username")]
        token_file: Option<PathBuf>,
        /// PEM CA bundle to trust in addition to the platform roots.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// List every plugin with its active and previous version and digest, and the `oci://`
    /// reference the active version was pulled from (`-` for an upload or a local file).
    ///
    /// Example: delegate plugin list
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make the previous version active again (a second rollback undoes the first).
    ///
    /// Example: delegate plugin rollback servicenow-agent
    Rollback {
        /// The plugin.
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove every version of a non-default plugin (requests naming it get 404).
    ///
    /// Example: delegate plugin remove experimental-agent
    Remove {
        /// The plugin.
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// How to reach the admin API.
#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// Base URL of the admin API.
    #[arg(long, env = "DELEGATE_ADMIN_URL", default_value = "http://127.0.0.1:9901")]
    admin_url: String,
    /// File holding the admin token (default: the DELEGATE_ADMIN_TOKEN environment variable).
    #[arg(long, env = "DELEGATE_ADMIN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

impl AdminArgs {
    fn client(self) -> plugin::AdminClient {
        plugin::AdminClient { url: self.admin_url, token_file: self.token_file }
    }
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config file and print what it resolves to (secrets shown as [redacted]).
    ///
    /// Example: delegate config check delegate.toml
    Check {
        /// The TOML config file.
        file: PathBuf,
    },
}

/// A failure with its exit code; printed as one line.
pub(crate) struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub(crate) fn usage(message: impl std::fmt::Display) -> Self {
        Self { code: 2, message: message.to_string() }
    }

    pub(crate) fn failed(message: impl std::fmt::Display) -> Self {
        Self { code: 1, message: message.to_string() }
    }
}

/// The global subscriber: `DELEGATE_LOG` filter, the fmt layer (text or JSON) on stderr and, for
/// `serve` with a `[telemetry]` section, the OTLP layers (src/telemetry.rs) next to it.
pub(crate) fn init_logging(
    format: &str,
    otlp: Option<Box<dyn tracing_subscriber::Layer<LogRegistry> + Send + Sync>>,
) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("DELEGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = (format == "json")
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr).json().flatten_event(true));
    let text =
        (format != "json").then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr).compact());
    tracing_subscriber::registry().with(filter).with(otlp).with(json).with(text).init();
}

/// The subscriber the OTLP layers sit on: the registry behind the `DELEGATE_LOG` filter.
pub(crate) type LogRegistry =
    tracing_subscriber::layer::Layered<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` sets logging up itself, once its config says whether traces are exported.
    if !matches!(cli.command, Command::Serve { .. }) {
        init_logging(&cli.log_format, None);
    }
    let result = match cli.command {
        Command::Demo {
            listen,
            idp_listen,
            servicenow_listen,
            bedrock_listen,
            admin_listen,
            audit_log,
            agentcore,
            front_door_listen,
            identity_listen,
            chain,
            chain_b_listen,
        } => demo::run(&demo::DemoOptions {
            listen,
            idp: idp_listen,
            servicenow: servicenow_listen,
            bedrock: bedrock_listen,
            admin: admin_listen,
            audit_log,
            agentcore: agentcore.then_some(demo_agentcore::AgentCoreDemo {
                front_door: front_door_listen,
                identity: identity_listen,
            }),
            chain: chain.then_some(chain_b_listen),
        }),
        Command::Invoke { url, token, user, idp, session, json, prompt } => {
            invoke::run(&invoke::InvokeOptions { url, token, user, idp, session, json, prompt })
        }
        Command::Token { user, idp, ca, tenant } => demo::token(&user, &idp, ca.as_deref(), &tenant),
        Command::Serve { config } => serve::run(&config, &cli.log_format),
        Command::Plugin { command } => match command {
            PluginCommand::Check { file } => check::plugin(&file),
            PluginCommand::Deploy { name, file, oci, admin } => match (file, oci) {
                (_, Some(reference)) => plugin::deploy_reference(&admin.client(), &name, &reference),
                (Some(file), None) => plugin::deploy(&admin.client(), &name, &file),
                (None, None) => Err(Failure::usage("give a manifest file or --oci REFERENCE")),
            },
            PluginCommand::Push {
                file,
                target,
                plain_http,
                username,
                password_file,
                token_file,
                ca_file,
            } => plugin::push(&plugin::PushOptions {
                file,
                target,
                plain_http,
                username,
                password_file,
                token_file,
                ca_file,
            }),
            PluginCommand::List { admin } => plugin::list(&admin.client()),
            PluginCommand::Rollback { name, admin } => plugin::rollback(&admin.client(), &name),
            PluginCommand::Remove { name, admin } => plugin::remove(&admin.client(), &name),
        },
        Command::Config { command: ConfigCommand::Check { file } } => check::config(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("delegate: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}
