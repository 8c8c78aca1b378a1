//! Audit records: one JSON line per credential use and per denied request.
//!
//! A record is built from typed parts only: the URL contributes its host and path, never its
//! query (query values can carry search terms, record ids or, from a careless plugin, a
//! token); headers contribute nothing. So a record cannot contain a credential unless
//! someone adds a field for it.

use crate::policy::Decision;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Longest path kept in a record; a guest could otherwise write megabytes per line.
const MAX_PATH: usize = 512;

/// Whether the vault answered from its cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheOutcome {
    /// Served from the cache.
    Hit,
    /// Required a call to the identity provider.
    Miss,
}

/// Allowed or denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditDecision {
    /// The request was sent.
    Allowed,
    /// The request was refused before anything was sent.
    Denied,
}

/// One audit line. Field names are the JSON keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC time the request was decided.
    pub time: String,
    /// The invocation that made the request.
    pub invocation_id: String,
    /// W3C trace id of the invocation (the same in every hop of an agent chain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Verified caller subject (`oid`/`sub`).
    pub caller_subject: String,
    /// Caller sign-in name, if the token had one.
    pub caller_username: Option<String>,
    /// Plugin name.
    pub plugin: String,
    /// Plugin component digest (`sha256:…`).
    pub plugin_digest: String,
    /// Version of the plugin (from its manifest).
    pub plugin_version: String,
    /// Vault provider used, if a credential was injected.
    pub provider: Option<String>,
    /// Cache hit or miss for the credential, if one was injected.
    pub cache: Option<CacheOutcome>,
    /// HTTP method.
    pub method: String,
    /// Canonical host when allowed, else the host as requested (or empty).
    pub host: String,
    /// Canonical path when allowed, else the path as requested; never the query.
    pub path: String,
    /// Downstream status, once known.
    pub status: Option<u16>,
    /// Request body bytes sent.
    pub request_bytes: u64,
    /// Response body bytes received.
    pub response_bytes: u64,
    /// Milliseconds from decision to end of response (or error).
    pub duration_ms: u64,
    /// Allowed or denied.
    pub decision: AuditDecision,
    /// Deny reason code (see [`crate::DenyReason::code`]) or an error code when the send failed.
    pub reason: Option<String>,
    /// Index of the matching rule, when allowed.
    pub rule_index: Option<usize>,
}

/// Who made a request: the parts of an audit record that are fixed for an invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditContext {
    /// Invocation id.
    pub invocation_id: String,
    /// The invocation's trace context (inbound `traceparent`, or a new trace); outbound
    /// requests carry a child of it.
    pub trace: Option<crate::TraceContext>,
    /// Verified caller subject.
    pub caller_subject: String,
    /// Caller sign-in name.
    pub caller_username: Option<String>,
    /// Plugin name.
    pub plugin: String,
    /// Plugin digest.
    pub plugin_digest: String,
    /// Version of the plugin (from its manifest).
    pub plugin_version: String,
}

impl AuditRecord {
    /// Starts a record for a decision on `method uri`. The URL's query is dropped here, and for
    /// allowed requests the canonical host/path of the decision are used.
    pub fn new(ctx: &AuditContext, method: &http::Method, uri: &http::Uri, decision: &Decision) -> Self {
        let (host, path, outcome, reason, rule_index, provider) = match decision {
            Decision::Allow { rule_index, credential, target } => (
                target.host.clone(),
                target.path.clone(),
                AuditDecision::Allowed,
                None,
                Some(*rule_index),
                credential.as_ref().map(|c| c.provider.clone()),
            ),
            Decision::Deny { reason } => (
                uri.host().unwrap_or("").chars().take(MAX_PATH).collect(),
                uri.path().chars().take(MAX_PATH).collect(),
                AuditDecision::Denied,
                Some(reason.code().to_owned()),
                None,
                None,
            ),
        };
        Self {
            time: rfc3339(SystemTime::now()),
            invocation_id: ctx.invocation_id.clone(),
            trace_id: ctx.trace.as_ref().map(crate::TraceContext::trace_id),
            caller_subject: ctx.caller_subject.clone(),
            caller_username: ctx.caller_username.clone(),
            plugin: ctx.plugin.clone(),
            plugin_digest: ctx.plugin_digest.clone(),
            plugin_version: ctx.plugin_version.clone(),
            provider,
            cache: None,
            method: method.as_str().to_owned(),
            host,
            path,
            status: None,
            request_bytes: 0,
            response_bytes: 0,
            duration_ms: 0,
            decision: outcome,
            reason,
            rule_index,
        }
    }

    /// Records the outcome of the send.
    pub fn finish(
        &mut self,
        status: Option<u16>,
        request_bytes: u64,
        response_bytes: u64,
        duration: Duration,
    ) {
        self.status = status;
        self.request_bytes = request_bytes;
        self.response_bytes = response_bytes;
        self.duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    }

    /// Marks a denial decided after the policy (budget exceeded, vault error): `code` is a
    /// stable error code, never a message that could quote a response.
    pub fn deny_with(&mut self, code: &str) {
        self.decision = AuditDecision::Denied;
        self.reason = Some(code.to_owned());
    }
}

fn rfc3339(t: SystemTime) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from(t).format(&Rfc3339).unwrap_or_default()
}

/// Why an audit line could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Opening the audit file failed.
    #[error("cannot open audit log {}: {source}", path.display())]
    Open {
        /// The configured path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing a line failed.
    #[error("cannot write audit record: {0}")]
    Write(#[source] std::io::Error),
    /// Serialising the record failed (cannot happen for these field types).
    #[error("cannot serialise audit record: {0}")]
    Serialize(#[source] serde_json::Error),
}

/// One audit line per invocation, written when it ends: who, which plugin version, the
/// outcome, and what it consumed (model tokens, outbound requests). Never a token or payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InvocationRecord {
    /// RFC 3339 UTC time the invocation ended.
    pub time: String,
    /// Always `"invocation"` (request records have no `kind`).
    pub kind: &'static str,
    /// Invocation id.
    pub invocation_id: String,
    /// W3C trace id of the invocation (the same in every hop of an agent chain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Verified caller subject.
    pub caller_subject: String,
    /// Caller sign-in name.
    pub caller_username: Option<String>,
    /// Length of the caller token's delegation chain (nested `act` claims): 0 when the user
    /// called directly, 1 when one agent called on the user's behalf, and so on.
    pub chain_depth: usize,
    /// Plugin name.
    pub plugin: String,
    /// Plugin digest.
    pub plugin_digest: String,
    /// Version of the plugin (from its manifest).
    pub plugin_version: String,
    /// `ok` or the stable error code.
    pub outcome: String,
    /// Wall-clock duration in milliseconds.
    pub duration_ms: u64,
    /// Model calls made.
    pub model_calls: u32,
    /// Model input tokens.
    pub input_tokens: u64,
    /// Model output tokens.
    pub output_tokens: u64,
    /// Outbound HTTP requests made.
    pub egress_requests: u32,
}

impl InvocationRecord {
    /// A record for `ctx`, stamped now.
    pub fn new(ctx: &AuditContext, outcome: &str, duration: Duration) -> Self {
        Self {
            time: rfc3339(SystemTime::now()),
            kind: "invocation",
            invocation_id: ctx.invocation_id.clone(),
            trace_id: ctx.trace.as_ref().map(crate::TraceContext::trace_id),
            caller_subject: ctx.caller_subject.clone(),
            caller_username: ctx.caller_username.clone(),
            chain_depth: 0,
            plugin: ctx.plugin.clone(),
            plugin_digest: ctx.plugin_digest.clone(),
            plugin_version: ctx.plugin_version.clone(),
            outcome: outcome.to_owned(),
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            model_calls: 0,
            input_tokens: 0,
            output_tokens: 0,
            egress_requests: 0,
        }
    }
}

/// Where audit lines go.
#[derive(Debug)]
pub enum AuditSink {
    /// Standard output, one line per record.
    Stdout,
    /// A file opened for append (created if missing, mode 0600 on Unix).
    File {
        /// The file.
        file: Mutex<std::fs::File>,
        /// Its path, for error messages.
        path: PathBuf,
    },
    /// Discard records (tests of other crates, or audit explicitly disabled).
    Discard,
}

impl AuditSink {
    /// Opens `path` for appending.
    pub fn file(path: &Path) -> Result<Self, AuditError> {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path).map_err(|source| AuditError::Open { path: path.to_owned(), source })?;
        Ok(Self::File { file: Mutex::new(file), path: path.to_owned() })
    }

    /// Writes one record as one line, in one `write` so concurrent writers (and several
    /// processes appending to one file) do not interleave within a line.
    pub fn write(&self, record: &AuditRecord) -> Result<(), AuditError> {
        self.write_line(record)
    }

    /// Writes the end-of-invocation record, one line like [`AuditSink::write`].
    pub fn write_invocation(&self, record: &InvocationRecord) -> Result<(), AuditError> {
        self.write_line(record)
    }

    fn write_line(&self, record: &impl Serialize) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(record).map_err(AuditError::Serialize)?;
        line.push(b'\n');
        match self {
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&line).and_then(|()| out.flush()).map_err(AuditError::Write)
            }
            Self::File { file, .. } => {
                let mut f = file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                f.write_all(&line).map_err(AuditError::Write)
            }
            Self::Discard => Ok(()),
        }
    }
}
