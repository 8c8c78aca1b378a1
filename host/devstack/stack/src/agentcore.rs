//! The article's AgentCore deployment around a delegate host: the AgentCore Identity data plane
//! stand-in (credential provider `EntraIdServiceNow`, On-Behalf-Of at the devstack IdP) and the
//! AgentCore Runtime front door (the article's customJWTAuthorizer, `Authorization`
//! allow-listed) in front of the host as its container. Both serve HTTPS with the devstack CA.
//! Used by `delegate demo --agentcore` and the e2e tests (docs/agentcore.md).

use crate::{DevStack, DevStackError, err};
use delegate_devstack_agentcore::front_door::{
    FrontDoor, FrontDoorConfig, FrontDoorServer, WorkloadIdentity,
};
use delegate_devstack_agentcore::identity::{
    ARTICLE_PROVIDER, ARTICLE_WORKLOAD, AgentCoreIdentity, IdentityConfig,
};
use delegate_devstack_idp::defaults;
use std::net::SocketAddr;

/// The demo runtime's ARN (account and id are made up; the front door routes on it).
pub const RUNTIME_ARN: &str =
    "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/servicenow_agent-DEMO000001";

/// `toml` (a [`DevStack::delegate_config`]) as the article's container runs it: the
/// `servicenow` provider becomes `kind = "agentcore_identity"` with credential provider
/// `EntraIdServiceNow` at `identity_url` (AgentCore Identity performs the On-Behalf-Of
/// exchange; delegate holds no client secret for ServiceNow), and `server.inbound =
/// "agentcore"` (`Authorization` allow-listed at the front door and verified again by delegate).
pub fn behind_agentcore(toml: &str, identity_url: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in toml.lines() {
        if line.starts_with('[') {
            skipping = line == "[vault.providers.servicenow]";
            if skipping {
                out.push_str(&format!(
                    "{line}\nkind = \"agentcore_identity\"\ncredential_provider = \"{ARTICLE_PROVIDER}\"\n\
                     region = \"us-east-1\"\nendpoint_url = \"{identity_url}\"\n\n"
                ));
                continue;
            }
        }
        if skipping {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line == "[server]" {
            out.push_str("inbound = \"agentcore\"\n");
        }
    }
    out
}

impl DevStack {
    /// The Identity stand-in configured as the article's step 2a: provider `EntraIdServiceNow`
    /// exchanging On-Behalf-Of at this IdP with the agent app's client credentials.
    pub fn agentcore_identity(&self) -> Result<AgentCoreIdentity, DevStackError> {
        let idp = self.idp.idp();
        Ok(AgentCoreIdentity::new(IdentityConfig::article(
            idp.issuer(defaults::TENANT_ID),
            idp.jwks_uri(defaults::TENANT_ID),
            idp.token_endpoint(defaults::TENANT_ID),
            defaults::AGENT_APP_ID,
            delegate_secret::Secret::new(defaults::AGENT_APP_SECRET),
            self.ca_client()?,
        )))
    }

    /// Serves `router` over HTTPS on `addr` with the devstack CA; returns its
    /// `https://localhost:<port>` URL.
    pub async fn serve_https(&self, router: axum::Router, addr: SocketAddr) -> Result<String, DevStackError> {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(err)?;
        let url = format!("https://localhost:{}", listener.local_addr().map_err(err)?.port());
        let tls = self.server_tls.clone();
        tokio::spawn(async move {
            if let Err(e) =
                delegate_devstack_tls::serve_https(listener, router, tls, std::future::pending()).await
            {
                tracing::warn!(error = %e, "devstack AgentCore stand-in stopped");
            }
        });
        Ok(url)
    }

    /// The front door's configuration for the container at `container_url`: the article's
    /// authorizer as the API accepts it for Entra (`allowedAudience` with the agent app's GUID
    /// and App ID URI; no `allowedClients`, which Entra tokens cannot pass), `Authorization`
    /// allow-listed, workload access tokens from `identity_url` for the runtime's workload.
    pub fn front_door_config(
        &self,
        container_url: &str,
        identity_url: &str,
    ) -> Result<FrontDoorConfig, DevStackError> {
        let authorizer = serde_json::json!({"customJWTAuthorizer": {
            "discoveryUrl": self.idp.idp().discovery_url(defaults::TENANT_ID),
            "allowedAudience": [defaults::AGENT_APP_ID, format!("api://{}", defaults::AGENT_APP_ID)],
        }});
        let mut config = FrontDoorConfig::from_api_json(
            RUNTIME_ARN,
            &authorizer.to_string(),
            &["Authorization"],
            container_url,
        )
        .map_err(err)?;
        config.workload_identity = Some(WorkloadIdentity {
            identity_url: identity_url.to_owned(),
            workload_name: ARTICLE_WORKLOAD.into(),
        });
        Ok(config)
    }

    /// Starts the front door on `addr` (HTTPS) with `config`.
    pub async fn start_front_door(
        &self,
        config: FrontDoorConfig,
        addr: SocketAddr,
    ) -> Result<FrontDoorServer, DevStackError> {
        FrontDoor::new(config, self.ca_client()?)
            .map_err(err)?
            .serve(addr, Some(self.server_tls.clone()))
            .await
            .map_err(err)
    }

    fn ca_client(&self) -> Result<reqwest::Client, DevStackError> {
        delegate_outbound::build_client(&delegate_outbound::OutboundConfig {
            extra_ca_pem_files: vec![self.ca_path.clone()],
            ..Default::default()
        })
        .map_err(err)
    }
}
