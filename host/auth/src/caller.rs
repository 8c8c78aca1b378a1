//! The proof type produced by a successful authorization.

use delegate_secret::Secret;

/// A caller whose token passed every check of the authorizer.
///
/// Fields are private and there is no public constructor: only the authorizer (or, in tests,
/// the `testing` feature's builder) can make one. The raw token is kept as a [`Secret`] for the
/// token vault, which presents it as the On-Behalf-Of assertion; it is never given to a plugin.
/// The one other constructor, [`VerifiedCaller::from_workload_access_token`], is for the
/// opt-in inbound mode where AgentCore Runtime verified the caller and delegate does not; such
/// a caller has no claims and [`VerifiedCaller::is_token_verified`] says so.
#[derive(Clone, Debug)]
pub struct VerifiedCaller {
    pub(crate) issuer: String,
    pub(crate) subject: String,
    pub(crate) username: Option<String>,
    pub(crate) display_name: Option<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) client_id: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) roles: Vec<String>,
    pub(crate) expires_at: u64,
    pub(crate) token: Secret,
    pub(crate) actors: Vec<Actor>,
    /// The verified hop counter (0 without one).
    pub(crate) hop_depth: usize,
    pub(crate) workload: WorkloadContext,
}

/// What AgentCore Runtime passed along with the request: its workload access token, and
/// whether that token is the *only* evidence of the caller (inbound mode
/// `agentcore_workload_token`, no `Authorization` forwarded).
#[derive(Clone, Debug, Default)]
pub(crate) struct WorkloadContext {
    pub(crate) token: Option<Secret>,
    pub(crate) vouched_only: bool,
}

/// How long a caller known only by its workload access token is trusted (delegate cannot see
/// the token's own expiry; AgentCore mints one per invocation): tokens obtained for it are
/// cached no longer than this.
pub const WORKLOAD_ONLY_LIFETIME_SECS: u64 = 300;

/// Prefix of the pseudonymous subject of a caller known only by its workload access token.
pub const WORKLOAD_SUBJECT_PREFIX: &str = "agentcore-workload:";

/// One prior actor of a delegation chain, from a nested `act` claim (RFC 8693 §4.1).
///
/// Informational only: who acted is for logs and audit, never an authorization decision
/// (RFC 8693 §4.1 says so for all but the outermost actor); the host only counts them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub(crate) subject: String,
    pub(crate) client_id: Option<String>,
}

impl Actor {
    /// The actor's `sub` (for a service's client-credentials actor token: its service
    /// principal's object id).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The actor's `client_id`, when the issuer recorded it.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }
}

impl VerifiedCaller {
    /// A caller known only by the workload access token AgentCore Runtime passed
    /// (`WorkloadAccessToken` header) when the operator opted into inbound mode
    /// `agentcore_workload_token` and the request carries no `Authorization`.
    ///
    /// Nothing about the user is verified by delegate: AgentCore's customJWTAuthorizer
    /// verified the user's JWT and bound this token to the user. The caller therefore has no
    /// user claims: its subject is a pseudonym (`agentcore-workload:` and 32 hex digits of
    /// the token's SHA-256, so one token always maps to one subject and distinct tokens never
    /// share one), no username, tenant, client, scopes or roles, an empty [`Self::token`]
    /// (so no On-Behalf-Of or token exchange can be made from it) and an expiry
    /// [`WORKLOAD_ONLY_LIFETIME_SECS`] after `now`. Only `agentcore_identity` credential
    /// providers accept it; see [`Self::is_token_verified`].
    pub fn from_workload_access_token(wat: Secret, now: u64) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(wat.expose().as_bytes());
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Self {
            issuer: String::new(),
            subject: format!("{WORKLOAD_SUBJECT_PREFIX}{hex}"),
            username: None,
            display_name: None,
            tenant: None,
            client_id: String::new(),
            scopes: Vec::new(),
            roles: Vec::new(),
            expires_at: now.saturating_add(WORKLOAD_ONLY_LIFETIME_SECS),
            token: Secret::new(""),
            actors: Vec::new(),
            hop_depth: 0,
            workload: WorkloadContext { token: Some(wat), vouched_only: true },
        }
    }

    /// The same caller, carrying the workload access token AgentCore Runtime passed with the
    /// request (inbound mode `agentcore`), for `agentcore_identity` credential providers. It
    /// adds a credential, not identity: every claim stays the verified token's.
    #[must_use]
    pub fn with_workload_access_token(mut self, wat: Secret) -> Self {
        self.workload.token = Some(wat);
        self
    }

    /// The workload access token AgentCore Runtime passed, if the inbound mode uses it.
    /// For `agentcore_identity` credential providers and the egress scrubber only.
    pub fn workload_access_token(&self) -> Option<&Secret> {
        self.workload.token.as_ref()
    }

    /// Whether delegate verified this caller's JWT itself. `false` only for a caller from
    /// [`Self::from_workload_access_token`]: its claims are placeholders and [`Self::token`]
    /// is empty.
    pub fn is_token_verified(&self) -> bool {
        !self.workload.vouched_only
    }

    /// The token's `iss`, exactly as verified.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Stable subject: Entra `oid` when present, else `sub`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Sign-in name (`preferred_username`, else `upn`); display only, never an authorization key.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// Display name (`name`).
    pub fn display_name(&self) -> Option<&str> {
        self.display_name.as_deref()
    }

    /// Tenant (`tid`).
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The OAuth client the token was issued to (`azp`, `appid` or `client_id`).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Delegated scopes (`scp`, split on spaces).
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// App roles (`roles`).
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    /// The token's `exp` (Unix seconds): nothing derived from it may outlive this.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }

    /// The verified bearer token itself, for the token vault only.
    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// The delegation chain carried in nested `act` claims, outermost (the current actor,
    /// the party that called us) first. Empty for a user's own token.
    pub fn actors(&self) -> &[Actor] {
        &self.actors
    }

    /// How many agents acted for the user before this host: the larger of the number of
    /// nested `act` claims and the verified hop counter ([`Self::hop_depth`]). Limited by
    /// `max_chain_depth`; what audit records carry and what the next hop adds one to.
    pub fn chain_depth(&self) -> usize {
        self.actors.len().max(self.hop_depth)
    }

    /// The depth the request's signed hop counter header asserted, verified under the hop
    /// key; 0 without a hop key or without the header.
    pub fn hop_depth(&self) -> usize {
        self.hop_depth
    }
}

/// Builds a [`VerifiedCaller`] without a token, for tests only (feature `testing`).
#[cfg(feature = "testing")]
#[derive(Debug)]
pub struct VerifiedCallerBuilder(VerifiedCaller);

#[cfg(feature = "testing")]
impl VerifiedCallerBuilder {
    /// A caller with the given subject and test defaults for everything else.
    pub fn new(subject: &str) -> Self {
        Self(VerifiedCaller {
            issuer: "https://idp.test/v2.0".into(),
            subject: subject.into(),
            username: None,
            display_name: None,
            tenant: None,
            client_id: "test-client".into(),
            scopes: Vec::new(),
            roles: Vec::new(),
            expires_at: u64::MAX,
            token: Secret::new("test-token"),
            actors: Vec::new(),
            hop_depth: 0,
            workload: WorkloadContext::default(),
        })
    }

    /// Sets the username.
    pub fn username(mut self, username: &str) -> Self {
        self.0.username = Some(username.into());
        self
    }

    /// Sets the tenant.
    pub fn tenant(mut self, tenant: &str) -> Self {
        self.0.tenant = Some(tenant.into());
        self
    }

    /// Sets the scopes.
    pub fn scopes(mut self, scopes: &[&str]) -> Self {
        self.0.scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Sets the raw token.
    pub fn token(mut self, token: &str) -> Self {
        self.0.token = Secret::new(token);
        self
    }

    /// Adds a prior actor (appended: the first call is the outermost, current actor).
    pub fn actor(mut self, subject: &str, client_id: Option<&str>) -> Self {
        self.0.actors.push(Actor { subject: subject.into(), client_id: client_id.map(str::to_owned) });
        self
    }

    /// Sets the verified hop counter.
    pub fn hop_depth(mut self, depth: usize) -> Self {
        self.0.hop_depth = depth;
        self
    }

    /// Finishes the caller.
    pub fn build(self) -> VerifiedCaller {
        self.0
    }
}
