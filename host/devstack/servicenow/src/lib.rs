//! Devstack ServiceNow sandbox: the Table API over SQLite, with per-user ACLs and
//! `sys_audit`, authenticated the way ServiceNow's OIDC inbound integration authenticates an
//! Entra OBO token.
//!
//! It stands in for `https://{instance}.service-now.com` in `delegate demo` and the tests, so
//! the chain "Jane → delegate → OBO → ServiceNow as Jane" is exercised for real: a token whose
//! audience is not the API connector (Token A) is refused, the user is the `sys_user` whose
//! email equals the token's `preferred_username`, and Jane sees exactly her five incidents.
//!
//! ```no_run
//! # async fn demo(jwks: jsonwebtoken::jwk::JwkSet) -> Result<(), Box<dyn std::error::Error>> {
//! use delegate_devstack_servicenow::{JwksSource, ServiceNow, ServiceNowConfig};
//! let sandbox = ServiceNow::new(ServiceNowConfig::new(
//!     "https://login.microsoftonline.com/TENANT/v2.0",
//!     "API-CONNECTOR-CLIENT-ID",
//!     JwksSource::Static(jwks),
//! ))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! axum::serve(listener, sandbox.router()).await?;
//! # Ok(()) }
//! ```
//!
//! # Behaviour worth knowing (all deliberate, most faithful to ServiceNow)
//! - Read ACLs are applied row by row **after** the query and paging (protocols.md §5.4), so
//!   pages can be short or empty while later pages still hold rows. `X-Total-Count` and the
//!   `Link` header count the rows the *query* matched, before ACLs, as ServiceNow does: paging
//!   by `sysparm_offset += sysparm_limit` until there is no `next` link (or the offset passes
//!   `X-Total-Count`) sees every visible row. The count can reveal that hidden rows exist
//!   (a query on a hidden row's fields is a yes/no oracle), never their content.
//!   [`AclFiltering::BeforePaging`] switches to query-time filtering (full pages, visible
//!   count) for clients that page by rows received.
//! - Restricted categories (`hr`, `security`) are readable only by members of HR / Security
//!   Operations and by admins. Other incidents are readable by `itil` users and admins; users
//!   without roles read only incidents they are the caller or opener of. `GET` of a record the
//!   user may not read is 404 "No Record found", the same as a missing one.
//! - Writes (PATCH/PUT) to an incident: the assignee, a member of its assignment group, or an
//!   admin; otherwise 403. DELETE: admins. `sys_user` writes: admins. `sys_user_group`,
//!   `sys_user_grmember` and `sys_audit` are read-only; `sys_audit` is readable by `admin` and
//!   `auditor` only.
//! - Unknown or read-only fields in a write body are silently ignored (ServiceNow does the
//!   same); the returned record shows what was written. PUT behaves like PATCH.
//! - Every changed field writes one `sys_audit` row whose `user` is the acting user's
//!   `user_name` (seeded users' user_name is their email).
//! - All values are strings. Display values: incident `state` 1 New, 2 In Progress, 3 On
//!   Hold, 6 Resolved, 7 Closed, 8 Canceled, plus 10 Assigned, an instance-specific choice so
//!   the article's "Assigned" (INC0012478) is a real display value; `priority` "1 - Critical"
//!   … "5 - Planning" as ServiceNow labels them (the article's "P2" is `P` + the value, a
//!   rendering choice of the agent). Reference fields follow protocols.md §5.3 for
//!   `sysparm_display_value` false/true/all × `sysparm_exclude_reference_link`.
//! - Encoded queries: see the `query` module docs; unknown fields are dropped, which widens
//!   the result (as in ServiceNow).
//! - Links in reference fields and the `Link` header use [`ServiceNowConfig::base_url`] or,
//!   when unset, `https://{Host header}`.

mod api;
mod auth;
mod faults;
mod query;
mod schema;
pub mod seed;
mod store;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

pub use auth::{JwksSource, SeenToken};
pub use faults::Faults;
/// Re-exported so callers can build a [`JwksSource::Static`] without naming the crate.
pub use jsonwebtoken::jwk::JwkSet;

use crate::auth::Verifier;
use crate::store::Store;

/// When row-level read ACLs are applied to list results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AclFiltering {
    /// Classic ServiceNow read ACLs (protocols.md §5.4, the default): rows are removed from
    /// each page *after* the query and paging, so pages can be short or empty while later
    /// pages still hold rows; `X-Total-Count` and `Link` count the rows the query matched.
    #[default]
    AfterPaging,
    /// Query-time security, like ServiceNow's security data filters / query ACLs: invisible
    /// rows are removed before paging, pages are full and `X-Total-Count` counts visible
    /// rows. Clients that advance the offset by the number of rows they received (pysnc
    /// does) see duplicates under `AfterPaging` and need this mode.
    BeforePaging,
}

/// How the sandbox is set up.
#[derive(Debug, Clone)]
pub struct ServiceNowConfig {
    /// The exact `iss` accepted (e.g. `https://login.microsoftonline.com/{tid}/v2.0`).
    pub issuer: String,
    /// The `aud` accepted: the API connector app's client id (the audience of OBO Token B).
    pub audience: String,
    /// Where the IdP's signing keys come from.
    pub jwks: JwksSource,
    /// The token claim that names the user (ServiceNow's "user claim"); default
    /// `preferred_username`.
    pub user_claim: String,
    /// The `sys_user` field the claim is matched against (case-insensitively); one of
    /// `email` (default), `user_name`, `oid`, `sys_id`.
    pub user_field: String,
    /// Base URL for links (`https://host:port`, no trailing slash); `None` derives it from the
    /// request's `Host` header with scheme `https`.
    pub base_url: Option<String>,
    /// Clock leeway for `exp`/`nbf`.
    pub leeway: Duration,
    /// Minimum time between two JWKS fetches triggered by unknown `kid`s (a token cannot make
    /// the sandbox hammer the IdP).
    pub jwks_refetch_interval: Duration,
    /// When list results are ACL-filtered; default [`AclFiltering::AfterPaging`].
    pub acl_filtering: AclFiltering,
}

impl ServiceNowConfig {
    /// A configuration with ServiceNow's defaults: user claim `preferred_username` matched
    /// to `sys_user.email`, 60 s leeway, JWKS refetch at most once a second.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>, jwks: JwksSource) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks,
            user_claim: "preferred_username".to_owned(),
            user_field: "email".to_owned(),
            base_url: None,
            leeway: Duration::from_secs(60),
            jwks_refetch_interval: Duration::from_secs(1),
            acl_filtering: AclFiltering::AfterPaging,
        }
    }
}

/// Why the sandbox could not be created or a helper failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceNowError {
    /// The configuration is unusable.
    #[error("invalid ServiceNow sandbox configuration: {0}")]
    Config(String),
    /// The in-memory database failed.
    #[error("ServiceNow sandbox database error: {0}")]
    Database(#[from] rusqlite::Error),
}

/// One `sys_audit` row, as the [`ServiceNow::audit_records`] helper returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// The audited table (`tablename`).
    pub table: String,
    /// The audited record's sys_id (`documentkey`).
    pub document_key: String,
    /// The changed field (`fieldname`).
    pub field: String,
    /// The value before (`oldvalue`, `""` on insert).
    pub old_value: String,
    /// The value after (`newvalue`).
    pub new_value: String,
    /// The acting user's `user_name` (`user`).
    pub user: String,
    /// The record's `sys_mod_count` after the change (`record_checkpoint`).
    pub record_checkpoint: String,
    /// When (`sys_created_on`, UTC).
    pub created_on: String,
}

struct Inner {
    store: Mutex<Store>,
    verifier: Verifier,
    faults: Faults,
    user_field: &'static str,
    acl_filtering: AclFiltering,
    base_url: RwLock<Option<String>>,
}

/// A ServiceNow sandbox instance: a cheap handle (clone it freely) to one seeded in-memory
/// database, its authenticator and its fault switches.
#[derive(Clone)]
pub struct ServiceNow {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServiceNow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceNow").finish_non_exhaustive()
    }
}

fn normalise_base_url(url: &str) -> Result<String, ServiceNowError> {
    let parsed =
        url::Url::parse(url).map_err(|e| ServiceNowError::Config(format!("base_url {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(ServiceNowError::Config(format!("base_url {url:?} must be an http(s) URL with a host")));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

impl ServiceNow {
    /// A sandbox seeded with [`seed`]'s data.
    pub fn new(config: ServiceNowConfig) -> Result<Self, ServiceNowError> {
        if config.issuer.trim().is_empty() {
            return Err(ServiceNowError::Config("issuer is empty".into()));
        }
        if config.audience.trim().is_empty() {
            return Err(ServiceNowError::Config("audience is empty".into()));
        }
        if config.user_claim.trim().is_empty() {
            return Err(ServiceNowError::Config("user_claim is empty".into()));
        }
        let user_field = ["email", "user_name", "oid", "sys_id"]
            .into_iter()
            .find(|f| *f == config.user_field)
            .ok_or_else(|| {
                ServiceNowError::Config(format!(
                    "user_field {:?} is not one of email, user_name, oid, sys_id",
                    config.user_field
                ))
            })?;
        match &config.jwks {
            JwksSource::Static(set) if set.keys.is_empty() => {
                return Err(ServiceNowError::Config("static JWKS has no keys".into()));
            }
            JwksSource::Remote { url, .. } | JwksSource::Discovery { url, .. } => {
                let parsed = url::Url::parse(url)
                    .map_err(|e| ServiceNowError::Config(format!("jwks url {url:?}: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(ServiceNowError::Config(format!("jwks url {url:?} must be http(s)")));
                }
            }
            JwksSource::Static(_) => {}
        }
        let base_url = config.base_url.as_deref().map(normalise_base_url).transpose()?;
        let store = Store::open()?;
        seed::load(&store)?;
        let verifier = Verifier::new(
            config.issuer,
            config.audience,
            config.user_claim,
            config.leeway.as_secs(),
            config.jwks_refetch_interval,
            config.jwks,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                verifier,
                faults: Faults::default(),
                user_field,
                acl_filtering: config.acl_filtering,
                base_url: RwLock::new(base_url),
            }),
        })
    }

    /// The Table API: `/api/now/table/{table}` and `/api/now/table/{table}/{sys_id}` (also
    /// under `/api/now/v1/` and `/api/now/v2/`). Serve it with `axum::serve` or the devstack
    /// TLS helpers.
    pub fn router(&self) -> axum::Router {
        api::router(self.clone())
    }

    /// Sets the base URL used in links, e.g. once the listener's port is known.
    pub fn set_base_url(&self, base_url: Option<&str>) -> Result<(), ServiceNowError> {
        let normalised = base_url.map(normalise_base_url).transpose()?;
        *self.inner.base_url.write().unwrap_or_else(PoisonError::into_inner) = normalised;
        Ok(())
    }

    /// The fault switches (429, 5xx, malformed JSON, wrong content type, delay) and the
    /// request counter.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// The identity claims (user, presenting client, `act` chain) of every token accepted so
    /// far, oldest first (the last 256): what a test of a delegation chain checks.
    pub fn seen_tokens(&self) -> Vec<SeenToken> {
        self.inner.verifier.seen()
    }

    /// How many Table API requests arrived so far (including refused and faulted ones).
    pub fn request_count(&self) -> u64 {
        self.inner.faults.request_count()
    }

    /// Every `sys_audit` row for the record `sys_id`, oldest first (test helper: no ACL).
    pub fn audit_records(&self, sys_id: &str) -> Result<Vec<AuditRecord>, ServiceNowError> {
        let rows = self.with_store(|s| s.all(&schema::SYS_AUDIT))?;
        Ok(rows
            .into_iter()
            .filter(|r| r.get("documentkey").is_some_and(|k| k == sys_id))
            .map(|mut r| {
                let mut take = |k: &str| r.remove(k).unwrap_or_default();
                AuditRecord {
                    table: take("tablename"),
                    document_key: take("documentkey"),
                    field: take("fieldname"),
                    old_value: take("oldvalue"),
                    new_value: take("newvalue"),
                    user: take("user"),
                    record_checkpoint: take("record_checkpoint"),
                    created_on: take("sys_created_on"),
                }
            })
            .collect())
    }

    /// A record's raw values (test helper: no ACL); `None` for an unknown table or sys_id.
    pub fn record(
        &self,
        table: &str,
        sys_id: &str,
    ) -> Result<Option<BTreeMap<String, String>>, ServiceNowError> {
        let Some(def) = schema::table(table) else {
            return Ok(None);
        };
        let row = self.with_store(|s| s.get(def, sys_id))?;
        Ok(row.map(|r| r.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    }

    /// An incident's raw values by number (test helper: no ACL).
    pub fn incident_by_number(
        &self,
        number: &str,
    ) -> Result<Option<BTreeMap<String, String>>, ServiceNowError> {
        let rows = self.with_store(|s| s.all(&schema::INCIDENT))?;
        Ok(rows
            .into_iter()
            .find(|r| r.get("number").is_some_and(|n| n == number))
            .map(|r| r.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    }

    pub(crate) fn with_store<T>(
        &self,
        f: impl FnOnce(&mut Store) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        // A panic while holding the lock cannot leave SQLite half-written (statements are
        // atomic and writes run in transactions), so a poisoned lock is still usable.
        let mut store = self.inner.store.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut store)
    }

    pub(crate) fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }

    pub(crate) fn user_field(&self) -> &'static str {
        self.inner.user_field
    }

    pub(crate) fn acl_filtering(&self) -> AclFiltering {
        self.inner.acl_filtering
    }

    pub(crate) fn configured_base_url(&self) -> Option<String> {
        self.inner.base_url.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
