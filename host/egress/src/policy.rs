//! The egress decision: which plugin request may leave, and with which credential.

use crate::url::{HostName, normalize_path, parse_host, prefix_matches};
use serde::Serialize;
use std::fmt;

/// A validated egress rule (built by [`crate::EgressConfig::validate`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EgressRule {
    pub(crate) methods: Vec<http::Method>,
    pub(crate) https: bool,
    pub(crate) host: HostName,
    pub(crate) port: u16,
    pub(crate) path_prefix: String,
    pub(crate) credential: Option<CredentialRef>,
    pub(crate) allow_ip_literal: bool,
}

/// Which vault provider, and which scopes, a matching request is sent with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CredentialRef {
    /// Provider name in the vault configuration.
    pub provider: String,
    /// Scopes to request, sorted and de-duplicated.
    pub scopes: Vec<String>,
}

/// The canonical form of an allowed request's URL: what the host must actually send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `https://host[:port]/canonical/path?query`, the URL to forward (the guest's spelling
    /// is never forwarded, so the server sees exactly what the policy checked).
    pub uri: http::Uri,
    /// Whether the scheme is https.
    pub https: bool,
    /// Canonical host (punycode, lower case, no trailing dot; IPv6 in brackets).
    pub host: String,
    /// Effective port.
    pub port: u16,
    /// Canonical path, without the query (safe for audit records).
    pub path: String,
}

/// The result of checking one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The request may be sent, to [`Target::uri`], with the rule's credential (if any).
    Allow {
        /// Index of the matching rule in the configuration, for audit and debugging.
        rule_index: usize,
        /// The credential to inject; `None` means send without one.
        credential: Option<CredentialRef>,
        /// The canonical URL to send.
        target: Target,
    },
    /// The request must not be sent; tell the guest `HTTP-request-denied` and audit `reason`.
    Deny {
        /// Why.
        reason: DenyReason,
    },
}

/// Why a request was denied. `Display` is a message safe for the guest and the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// Scheme other than http/https, or missing.
    UnsupportedScheme,
    /// No host in the URL.
    MissingHost,
    /// `user:pass@` in the authority.
    Userinfo,
    /// The host is not a valid host name.
    InvalidHost,
    /// The host is an IP literal and no rule allows IP literals for it.
    IpLiteral,
    /// The port is not a number in 1..=65535.
    InvalidPort,
    /// An encoded `/` or `\` (`%2F`, `%5C`) or a raw backslash in the path.
    EncodedSlash,
    /// `..` above the root, or a dot segment with path parameters (`..;`).
    Traversal,
    /// An empty path segment (`//`).
    EmptySegment,
    /// A `%` not followed by two hex digits.
    MalformedEscape,
    /// An escape that decodes to another escape (`%252e`).
    DoubleEncoding,
    /// The path is not absolute, has control characters or is not UTF-8 after decoding.
    InvalidPath,
    /// A rule matches the URL but not this method.
    MethodNotAllowed(http::Method),
    /// No rule matches the URL.
    NoMatchingRule,
    /// The guest set a header only the host may set.
    ForbiddenHeader(&'static str),
}

impl DenyReason {
    /// A stable machine-readable code for audit records and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnsupportedScheme => "unsupported_scheme",
            Self::MissingHost => "missing_host",
            Self::Userinfo => "userinfo",
            Self::InvalidHost => "invalid_host",
            Self::IpLiteral => "ip_literal",
            Self::InvalidPort => "invalid_port",
            Self::EncodedSlash => "encoded_slash",
            Self::Traversal => "traversal",
            Self::EmptySegment => "empty_segment",
            Self::MalformedEscape => "malformed_escape",
            Self::DoubleEncoding => "double_encoding",
            Self::InvalidPath => "invalid_path",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::NoMatchingRule => "no_matching_rule",
            Self::ForbiddenHeader(_) => "forbidden_header",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedScheme => f.write_str("only http and https URLs may be requested"),
            Self::MissingHost => f.write_str("the URL has no host"),
            Self::Userinfo => f.write_str("credentials in the URL (user@host) are not allowed"),
            Self::InvalidHost => f.write_str("the URL host is not a valid host name"),
            Self::IpLiteral => f.write_str("IP-literal hosts are not allowed by any egress rule"),
            Self::InvalidPort => f.write_str("the URL port is invalid"),
            Self::EncodedSlash => f.write_str("encoded slashes or backslashes in the path are not allowed"),
            Self::Traversal => f.write_str("the path escapes its root or uses dot-segment parameters"),
            Self::EmptySegment => f.write_str("empty path segments (//) are not allowed"),
            Self::MalformedEscape => f.write_str("the path has a malformed percent-escape"),
            Self::DoubleEncoding => f.write_str("double percent-encoding in the path is not allowed"),
            Self::InvalidPath => f.write_str("the path is not a valid absolute path"),
            Self::MethodNotAllowed(m) => write!(f, "method {m} is not allowed for this URL"),
            Self::NoMatchingRule => f.write_str("no egress rule allows this URL"),
            Self::ForbiddenHeader(h) => {
                write!(
                    f,
                    "the `{h}` header may only be set by the host; credentials are injected by the host"
                )
            }
        }
    }
}

/// The validated egress rules of one plugin. Deny by default: a request is allowed only when
/// a rule matches its scheme, host, port, path prefix and method.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    rules: Vec<EgressRule>,
}

impl EgressPolicy {
    pub(crate) fn new(rules: Vec<EgressRule>) -> Self {
        Self { rules }
    }

    /// A policy that denies everything.
    pub fn deny_all() -> Self {
        Self::default()
    }

    /// The vault providers this policy refers to, so the configuration layer can check that
    /// each one exists before the plugin is deployed.
    pub fn credential_providers(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().filter_map(|r| r.credential.as_ref().map(|c| c.provider.as_str()))
    }

    /// Checks a request's headers and URL; see [`check_headers`] and [`EgressPolicy::decide`].
    pub fn decide_request<B>(&self, request: &http::Request<B>) -> Decision {
        if let Err(reason) = check_headers(request.headers(), request.uri()) {
            return Decision::Deny { reason };
        }
        self.decide(request.method(), request.uri())
    }

    /// Decides whether `method uri` may be sent, on the normalised URL.
    pub fn decide(&self, method: &http::Method, uri: &http::Uri) -> Decision {
        match self.decide_inner(method, uri) {
            Ok(allow) => allow,
            Err(reason) => Decision::Deny { reason },
        }
    }

    fn decide_inner(&self, method: &http::Method, uri: &http::Uri) -> Result<Decision, DenyReason> {
        let https = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(DenyReason::UnsupportedScheme),
        };
        let authority = uri.authority().ok_or(DenyReason::MissingHost)?;
        if authority.as_str().contains('@') {
            return Err(DenyReason::Userinfo);
        }
        let raw_host = authority.host();
        if raw_host.is_empty() {
            return Err(DenyReason::MissingHost);
        }
        let host = parse_host(raw_host).map_err(|_| DenyReason::InvalidHost)?;
        let port = match authority.port() {
            None if authority.as_str().ends_with(':') => return Err(DenyReason::InvalidPort),
            None => default_port(https),
            Some(p) => match p.as_u16() {
                0 => return Err(DenyReason::InvalidPort),
                n => n,
            },
        };
        let path = normalize_path(uri.path())?;

        let mut method_mismatch = false;
        for (rule_index, rule) in self.rules.iter().enumerate() {
            if rule.https != https || rule.port != port || rule.host != host {
                continue;
            }
            if matches!(host, HostName::Ip(_)) && !rule.allow_ip_literal {
                continue;
            }
            if !prefix_matches(&rule.path_prefix, &path) {
                continue;
            }
            if !rule.methods.contains(method) {
                method_mismatch = true;
                continue;
            }
            let target = build_target(https, &host, port, path, uri.query())?;
            return Ok(Decision::Allow { rule_index, credential: rule.credential.clone(), target });
        }
        if method_mismatch {
            Err(DenyReason::MethodNotAllowed(method.clone()))
        } else if matches!(host, HostName::Ip(_))
            && !self.rules.iter().any(|r| r.allow_ip_literal && r.host == host)
        {
            Err(DenyReason::IpLiteral)
        } else {
            Err(DenyReason::NoMatchingRule)
        }
    }
}

fn default_port(https: bool) -> u16 {
    if https { 443 } else { 80 }
}

fn build_target(
    https: bool,
    host: &HostName,
    port: u16,
    path: String,
    query: Option<&str>,
) -> Result<Target, DenyReason> {
    let scheme = if https { "https" } else { "http" };
    let mut s = String::with_capacity(scheme.len() + host.as_str().len() + path.len() + 16);
    s.push_str(scheme);
    s.push_str("://");
    s.push_str(host.as_str());
    if port != default_port(https) {
        s.push(':');
        s.push_str(&port.to_string());
    }
    s.push_str(&path);
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    let uri = http::Uri::try_from(s).map_err(|_| DenyReason::InvalidPath)?;
    Ok(Target { uri, https, host: host.as_str().to_owned(), port, path })
}

/// Refuses headers only the host may set: `authorization`, `proxy-authorization` and `cookie`
/// always (the host injects credentials itself and never lets a guest replace them), and a
/// `host` header unless it is exactly the URL's authority (which is what the wasi:http layer
/// itself adds; anything else would send the request to a different virtual host than the
/// one the policy checked). The host should drop `host` before sending the canonical URL.
pub fn check_headers(headers: &http::HeaderMap, uri: &http::Uri) -> Result<(), DenyReason> {
    for (name, label) in [
        (http::header::AUTHORIZATION, "authorization"),
        (http::header::PROXY_AUTHORIZATION, "proxy-authorization"),
        (http::header::COOKIE, "cookie"),
    ] {
        if headers.contains_key(name) {
            return Err(DenyReason::ForbiddenHeader(label));
        }
    }
    let mut hosts = headers.get_all(http::header::HOST).iter();
    if let Some(value) = hosts.next() {
        let authority = uri.authority().map(http::uri::Authority::as_str);
        if hosts.next().is_some() || Some(value.as_bytes()) != authority.map(str::as_bytes) {
            return Err(DenyReason::ForbiddenHeader("host"));
        }
    }
    Ok(())
}
