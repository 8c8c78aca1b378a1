//! The directory: tenants, app registrations, users and consents, from TOML or the defaults.

use delegate_secret::Secret;
use serde::{Deserialize, Deserializer};

use crate::IdpError;

/// Fixed identifiers of the default directory, so demos and tests are reproducible.
///
/// User object ids match the ServiceNow sandbox's `sys_user` seed (host/devstack/servicenow).
pub mod defaults {
    /// The article's tenant ("Company", `company.com`).
    pub const TENANT_ID: &str = "7f3c2a91-4d5e-4b8a-9c1d-2e6f0a8b3c4d";
    /// Domain of [`TENANT_ID`].
    pub const TENANT_DOMAIN: &str = "company.com";
    /// A second tenant, for multi-tenant tests ("Fabrikam").
    pub const OTHER_TENANT_ID: &str = "2b8e6c4a-9d1f-4e3b-a5c7-8f0d2e4b6a19";
    /// Domain of [`OTHER_TENANT_ID`].
    pub const OTHER_TENANT_DOMAIN: &str = "fabrikam.example";

    /// "ServiceNow Agent": the agent app registration; the audience of Token A and the
    /// confidential client that later performs On-Behalf-Of.
    pub const AGENT_APP_ID: &str = "3f5a8c1e-6b2d-4e9f-a7c0-1d4b8e2f6a93";
    /// The agent app's client secret (devstack only).
    pub const AGENT_APP_SECRET: &str = "devstack-agent-secret-3f5a8c1e";
    /// The delegated scope the agent app exposes (`api://<AGENT_APP_ID>/access_as_user`).
    pub const AGENT_SCOPE: &str = "access_as_user";
    /// "ServiceNow API Connector": represents ServiceNow as a resource; the audience of Token B.
    pub const CONNECTOR_APP_ID: &str = "8b2e4f6a-1c3d-4a5b-9e7f-0a2c4e6b8d1f";
    /// The delegated scope the connector app exposes.
    pub const CONNECTOR_SCOPE: &str = "user_impersonation";

    /// "Agent B": a second agent app registration, for multi-hop chains (Agent A → Agent B →
    /// ServiceNow). Agent A's host exchanges the user's token for one addressed to Agent B
    /// (`api://<AGENT_B_APP_ID>/access_as_user`); Agent B's host verifies it and exchanges it
    /// again for the ServiceNow connector.
    pub const AGENT_B_APP_ID: &str = "c4d2e8f1-7a3b-4c5d-9e6f-2b8a1d3c5e7f";
    /// Agent B's client secret (devstack only).
    pub const AGENT_B_APP_SECRET: &str = "devstack-agent-b-secret-c4d2e8f1";
    /// Object id of Agent B's service principal (the `sub` of its app-only tokens, and so of
    /// its entry in an `act` chain).
    pub const AGENT_B_OBJECT_ID: &str = "a7b9c1d3-e5f7-4a9b-8c1d-3e5f7a9b1c2d";
    /// Object id of the agent app's (Agent A's) service principal.
    pub const AGENT_OBJECT_ID: &str = "e1c7a3b5-2d4f-4a6b-8c9e-1f3a5c7e9b2d";
    /// Microsoft Graph's application id (the same in every tenant). Registered as a resource
    /// issuing v1 tokens, as Entra does for Graph: `aud` is `https://graph.microsoft.com`.
    pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
    /// Graph's resource URI (Application ID URI), the `aud` of the tokens issued for it.
    pub const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";
    /// The Graph scope the agent app is consented for (read the signed-in user's profile).
    pub const GRAPH_USER_READ: &str = "User.Read";
    /// Jane's manager (in the directory only for Graph's `/me/manager`; not a ServiceNow user).
    pub const JANE_MANAGER: &str = "priya.shah@company.com";
    /// Her object id (the devstack Graph's directory uses the same).
    pub const JANE_MANAGER_OID: &str = "5e0c7a2d-8b41-4f6e-9d3a-1c2b4e6f8a0d";

    /// The article's user.
    pub const JANE: &str = "jane.smith@company.com";
    /// Jane's object id.
    pub const JANE_OID: &str = "096d3737-42f9-4039-8320-a4737c2b3abe";
    /// A ServiceNow HR analyst.
    pub const HR_ANALYST: &str = "hannah.reed@company.com";
    /// A ServiceNow security analyst.
    pub const SECURITY_ANALYST: &str = "sam.ortiz@company.com";
    /// A user of [`OTHER_TENANT_ID`].
    pub const OTHER_TENANT_USER: &str = "lee.chen@fabrikam.example";
    /// The password every default user has (devstack only).
    pub const PASSWORD: &str = "devstack-password";
}

/// The identity provider's directory and token settings.
///
/// Every top-level key is optional in TOML; a missing key keeps the article defaults
/// ([`IdpConfig::default`]), a present one replaces that whole list.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdpConfig {
    /// The HTTPS origin the IdP is reached at (e.g. `https://127.0.0.1:8443`), without a trailing
    /// slash. Issuers and every endpoint in discovery documents are built from it.
    pub base_url: String,
    /// Access and id token lifetime in seconds (Entra's default is 60-90 minutes).
    pub token_lifetime_seconds: u64,
    /// `max-age` of the JWKS `Cache-Control` header (Entra sends 86400).
    pub jwks_max_age_seconds: u64,
    /// Tenants; the first one is the home tenant for users that name none.
    pub tenants: Vec<TenantConfig>,
    /// App registrations (global: usable from every tenant, like multi-tenant apps).
    pub apps: Vec<AppConfig>,
    /// Users.
    pub users: Vec<UserConfig>,
    /// Admin-consented delegated permissions.
    pub consents: Vec<ConsentConfig>,
    /// App roles granted to clients (what client-credentials tokens carry in `roles`).
    pub app_role_assignments: Vec<AppRoleAssignment>,
}

/// A tenant (directory).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Tenant id (GUID): the `tid` claim.
    pub id: String,
    /// Verified domain; usable in URLs instead of the id, and the home realm of its users.
    pub domain: String,
    /// Display name.
    pub display_name: String,
}

/// An app registration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Display name.
    pub name: String,
    /// Application (client) id (GUID).
    pub client_id: String,
    /// Object id of the app's service principal (the `oid` of its app-only tokens).
    pub object_id: String,
    /// Client secret; `None` for apps without credentials.
    #[serde(default, deserialize_with = "optional_secret")]
    pub client_secret: Option<Secret>,
    /// Certificate credentials (PEM X.509 certificates, public information): the client may
    /// authenticate with a `client_assertion` JWT signed by one of their keys and naming it by
    /// `x5t#S256` (SHA-256 thumbprint of the DER). RSA (RS256, PS256) or EC P-256 (ES256).
    #[serde(default)]
    pub client_certificates: Vec<String>,
    /// "Allow public client flows": password grant without a client secret.
    #[serde(default)]
    pub public_client: bool,
    /// Application ID URIs (e.g. `api://<client_id>`).
    #[serde(default)]
    pub identifier_uris: Vec<String>,
    /// Delegated scopes the app exposes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// App roles the app defines.
    #[serde(default)]
    pub app_roles: Vec<String>,
    /// Access token version issued for this app as a resource (`accessTokenAcceptedVersion`):
    /// 1 or 2.
    #[serde(default = "two")]
    pub access_token_version: u8,
}

/// A user.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Sign-in name (UPN), e.g. `jane.smith@company.com`.
    pub username: String,
    /// Password for the password grant.
    #[serde(deserialize_with = "secret")]
    pub password: Secret,
    /// Display name (`name` claim).
    pub display_name: String,
    /// Object id (GUID): the `oid` claim.
    pub oid: String,
    /// Tenant id; defaults to the first tenant.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// An admin consent: `client_id` may call `resource` with `scopes` on behalf of any user.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentConfig {
    /// The client app's client id.
    pub client_id: String,
    /// The resource app's client id.
    pub resource: String,
    /// Consented delegated scopes (names as the resource exposes them).
    pub scopes: Vec<String>,
}

/// App roles of `resource` granted to `client_id`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRoleAssignment {
    /// The client app's client id.
    pub client_id: String,
    /// The resource app's client id.
    pub resource: String,
    /// Granted role values.
    pub roles: Vec<String>,
}

fn two() -> u8 {
    2
}

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

fn optional_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Option::<String>::deserialize(d).map(|s| s.map(Secret::new))
}

impl IdpConfig {
    /// Parses a TOML directory file; missing top-level keys keep the defaults.
    pub fn from_toml(text: &str) -> Result<IdpConfig, IdpError> {
        toml::from_str(text).map_err(|e| IdpError::Config(e.to_string()))
    }

    /// The same configuration served at `base_url` (e.g. once the listener's port is known).
    pub fn with_base_url(mut self, base_url: &str) -> Self {
        self.base_url = base_url.trim_end_matches('/').to_owned();
        self
    }

    pub(crate) fn validate(&self) -> Result<(), IdpError> {
        let bad = |m: String| Err(IdpError::Config(m));
        if self.tenants.is_empty() {
            return bad("at least one tenant is required".into());
        }
        if !(self.base_url.starts_with("https://") || self.base_url.starts_with("http://")) {
            return bad(format!("base_url {:?} is not an http(s) URL", self.base_url));
        }
        for t in &self.tenants {
            if !is_guid(&t.id) {
                return bad(format!("tenant id {:?} is not a GUID", t.id));
            }
        }
        for (i, a) in self.apps.iter().enumerate() {
            if !is_guid(&a.client_id) || !is_guid(&a.object_id) {
                return bad(format!("app {:?}: client_id and object_id must be GUIDs", a.name));
            }
            if !matches!(a.access_token_version, 1 | 2) {
                return bad(format!("app {:?}: access_token_version must be 1 or 2", a.name));
            }
            if self.apps[..i].iter().any(|b| b.client_id == a.client_id) {
                return bad(format!("duplicate client_id {}", a.client_id));
            }
            for pem in &a.client_certificates {
                crate::client_cert::parse_certificate(pem)
                    .map_err(|e| IdpError::Config(format!("app {:?}: {e}", a.name)))?;
            }
        }
        for u in &self.users {
            if !is_guid(&u.oid) {
                return bad(format!("user {:?}: oid must be a GUID", u.username));
            }
            if let Some(t) = &u.tenant
                && !self.tenants.iter().any(|x| &x.id == t)
            {
                return bad(format!("user {:?}: unknown tenant {t}", u.username));
            }
        }
        Ok(())
    }
}

/// Whether `s` is a GUID in the 8-4-4-4-12 hex form Entra uses for ids.
pub fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl Default for IdpConfig {
    fn default() -> Self {
        use defaults::*;
        let user = |username: &str, display_name: &str, oid: &str, tenant: Option<&str>| UserConfig {
            username: username.into(),
            password: Secret::new(PASSWORD),
            display_name: display_name.into(),
            oid: oid.into(),
            tenant: tenant.map(Into::into),
        };
        IdpConfig {
            base_url: "https://127.0.0.1:8443".into(),
            token_lifetime_seconds: 3600,
            jwks_max_age_seconds: 86400,
            tenants: vec![
                TenantConfig {
                    id: TENANT_ID.into(),
                    domain: TENANT_DOMAIN.into(),
                    display_name: "Company".into(),
                },
                TenantConfig {
                    id: OTHER_TENANT_ID.into(),
                    domain: OTHER_TENANT_DOMAIN.into(),
                    display_name: "Fabrikam".into(),
                },
            ],
            apps: vec![
                AppConfig {
                    name: "ServiceNow Agent".into(),
                    client_id: AGENT_APP_ID.into(),
                    object_id: AGENT_OBJECT_ID.into(),
                    client_secret: Some(Secret::new(AGENT_APP_SECRET)),
                    client_certificates: Vec::new(),
                    // Lets `delegate token` and MSAL's PublicClientApplication sign users in
                    // with the password grant without holding the secret.
                    public_client: true,
                    identifier_uris: vec![format!("api://{AGENT_APP_ID}")],
                    scopes: vec![AGENT_SCOPE.into()],
                    app_roles: vec!["Agent.Invoke".into()],
                    access_token_version: 2,
                },
                AppConfig {
                    name: "ServiceNow API Connector".into(),
                    client_id: CONNECTOR_APP_ID.into(),
                    object_id: "5d9f1b3c-7e2a-4c6d-9b8f-3a1c5e7d9f2b".into(),
                    client_secret: None,
                    client_certificates: Vec::new(),
                    public_client: false,
                    identifier_uris: vec![format!("api://{CONNECTOR_APP_ID}")],
                    scopes: vec![CONNECTOR_SCOPE.into()],
                    app_roles: Vec::new(),
                    access_token_version: 2,
                },
                AppConfig {
                    name: "Microsoft Graph".into(),
                    client_id: GRAPH_APP_ID.into(),
                    object_id: "0c1e5a7b-3d9f-4b2e-8a6c-4f1d3b5e7a9c".into(),
                    client_secret: None,
                    client_certificates: Vec::new(),
                    public_client: false,
                    identifier_uris: vec![GRAPH_RESOURCE.into()],
                    scopes: vec![GRAPH_USER_READ.into(), "User.ReadBasic.All".into(), "User.Read.All".into()],
                    app_roles: vec!["User.Read.All".into()],
                    access_token_version: 1,
                },
                AppConfig {
                    name: "Agent B".into(),
                    client_id: AGENT_B_APP_ID.into(),
                    object_id: AGENT_B_OBJECT_ID.into(),
                    client_secret: Some(Secret::new(AGENT_B_APP_SECRET)),
                    client_certificates: Vec::new(),
                    public_client: false,
                    identifier_uris: vec![format!("api://{AGENT_B_APP_ID}")],
                    scopes: vec![AGENT_SCOPE.into()],
                    app_roles: Vec::new(),
                    access_token_version: 2,
                },
            ],
            users: vec![
                user(JANE, "Jane Smith", JANE_OID, None),
                user(JANE_MANAGER, "Priya Shah", JANE_MANAGER_OID, None),
                user(HR_ANALYST, "Hannah Reed", "bc1e3ac1-c27d-44ec-b72c-2c2678629522", None),
                user(SECURITY_ANALYST, "Sam Ortiz", "32b7228f-cd4a-4557-bd24-b39645cf8aa4", None),
                user("ravi.patel@company.com", "Ravi Patel", "181e290a-ae9a-4169-8a0c-510089ce5ef7", None),
                user(
                    "maria.garcia@company.com",
                    "Maria Garcia",
                    "a9b3d1a2-43f9-400c-ba98-666ace1c9c17",
                    None,
                ),
                user("tom.baker@company.com", "Tom Baker", "fd802060-55e8-43eb-acb9-185ed822e2f9", None),
                user("it.admin@company.com", "IT Admin", "b31a5bf3-71f9-40cf-801f-e4fcce06294d", None),
                user("audrey.kim@company.com", "Audrey Kim", "18f918e2-4a8b-4188-8be1-9514a28a0aaa", None),
                user(
                    "former.employee@company.com",
                    "Former Employee",
                    "e9a51fb2-a7c8-4e4b-93f1-8766336c7fcd",
                    None,
                ),
                user(
                    OTHER_TENANT_USER,
                    "Lee Chen",
                    "6c2a8e4f-0b1d-4f3a-8c5e-7d9b1f3a5c7e",
                    Some(OTHER_TENANT_ID),
                ),
            ],
            consents: vec![
                ConsentConfig {
                    client_id: AGENT_APP_ID.into(),
                    resource: AGENT_APP_ID.into(),
                    scopes: vec![AGENT_SCOPE.into()],
                },
                ConsentConfig {
                    client_id: AGENT_APP_ID.into(),
                    resource: CONNECTOR_APP_ID.into(),
                    scopes: vec![CONNECTOR_SCOPE.into()],
                },
                // Multi-hop: Agent A may call Agent B as the user, Agent B may call the
                // ServiceNow connector; and Agent B may call Agent A, so that a loop
                // A → B → A can be demonstrated (and refused by the chain-depth limit).
                ConsentConfig {
                    client_id: AGENT_APP_ID.into(),
                    resource: AGENT_B_APP_ID.into(),
                    scopes: vec![AGENT_SCOPE.into()],
                },
                ConsentConfig {
                    client_id: AGENT_B_APP_ID.into(),
                    resource: CONNECTOR_APP_ID.into(),
                    scopes: vec![CONNECTOR_SCOPE.into()],
                },
                ConsentConfig {
                    client_id: AGENT_B_APP_ID.into(),
                    resource: AGENT_APP_ID.into(),
                    scopes: vec![AGENT_SCOPE.into()],
                },
                ConsentConfig {
                    client_id: AGENT_APP_ID.into(),
                    resource: GRAPH_APP_ID.into(),
                    scopes: vec![GRAPH_USER_READ.into()],
                },
            ],
            app_role_assignments: vec![AppRoleAssignment {
                client_id: AGENT_APP_ID.into(),
                resource: AGENT_APP_ID.into(),
                roles: vec!["Agent.Invoke".into()],
            }],
        }
    }
}
