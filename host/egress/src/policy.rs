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
///
/// A policy can be [narrowed](EgressPolicy::narrowed) to the rules a plugin requested: it then
/// allows a request only if the requested rules allow it too, and the credential always comes
/// from the first operator rule that matches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// The operator's rules, in order: the first match decides the credential.
    pub(crate) rules: Vec<EgressRule>,
    /// Further rule lists each of which must also allow a request (what a plugin requested);
    /// they only ever narrow, their credentials are never used.
    within: Vec<Vec<EgressRule>>,
}

/// Why a requested egress rule is not covered by any operator rule
/// (see [`EgressPolicy::narrowed`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("requested rule {rule_index}: {reason}")]
pub struct NotGranted {
    /// Index of the refused rule in the requested policy.
    pub rule_index: usize,
    /// What is missing.
    pub reason: NotGrantedReason,
}

/// What an operator rule would need for a requested rule to be covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotGrantedReason {
    /// No operator rule has this scheme, host and port.
    NoRuleForHost {
        /// `https` or `http`.
        scheme: &'static str,
        /// Canonical host.
        host: String,
        /// Port.
        port: u16,
    },
    /// Operator rules for the host exist, but none has a path prefix the requested one is
    /// equal to or below.
    PathOutsidePrefixes {
        /// The requested prefix.
        path: String,
        /// The prefixes the operator grants on this host and port.
        granted: Vec<String>,
    },
    /// No operator rule covering the path allows this method.
    MethodNotGranted(http::Method),
    /// The requested rule allows IP literals; no covering operator rule does.
    IpLiteralNotGranted,
}

impl fmt::Display for NotGrantedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRuleForHost { scheme, host, port } => {
                write!(f, "no operator rule for {scheme} {host}:{port}")
            }
            Self::PathOutsidePrefixes { path, granted } => {
                write!(f, "path {path} is outside the granted prefixes {}", granted.join(", "))
            }
            Self::MethodNotGranted(m) => write!(f, "method {m} is not granted for this path"),
            Self::IpLiteralNotGranted => {
                f.write_str("allow_ip_literal is not granted by the operator rule for this host")
            }
        }
    }
}

/// A request's URL in canonical parts, compared with rules.
struct Parsed {
    https: bool,
    host: HostName,
    port: u16,
    path: String,
}

impl EgressPolicy {
    pub(crate) fn new(rules: Vec<EgressRule>) -> Self {
        Self { rules, within: Vec::new() }
    }

    /// This (operator) policy narrowed to `requested`, e.g. the rules a plugin's manifest asks
    /// for. Every requested rule must be covered by one operator rule (same scheme, host and
    /// port; its methods a subset; its path prefix equal to or below the operator's at a `/`
    /// boundary; `allow_ip_literal` only if the operator's rule has it), else
    /// [`NotGranted`] names the first one that is not.
    ///
    /// The result allows a request only if both the requested rules and the operator rules
    /// allow it; the credential, the rule index and the target always come from the first
    /// operator rule that matches, never from a requested rule. A request outside the
    /// requested rules is denied with [`DenyReason::NoMatchingRule`] or
    /// [`DenyReason::MethodNotAllowed`]. [`EgressPolicy::credential_providers`] still reports
    /// the operator's providers. An empty `requested` policy denies everything.
    pub fn narrowed(&self, requested: &EgressPolicy) -> Result<EgressPolicy, NotGranted> {
        for (rule_index, rule) in requested.rules.iter().enumerate() {
            for rules in std::iter::once(&self.rules).chain(&self.within) {
                covered(rules, rule).map_err(|reason| NotGranted { rule_index, reason })?;
            }
        }
        let mut within = self.within.clone();
        within.push(requested.rules.iter().map(|r| EgressRule { credential: None, ..r.clone() }).collect());
        within.extend(requested.within.iter().cloned());
        Ok(EgressPolicy { rules: self.rules.clone(), within })
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
        let parsed = parse_request(uri)?;
        for rules in &self.within {
            first_match(rules, method, &parsed)?;
        }
        let (rule_index, rule) = first_match(&self.rules, method, &parsed)?;
        let target = build_target(parsed.https, &parsed.host, parsed.port, parsed.path, uri.query())?;
        Ok(Decision::Allow { rule_index, credential: rule.credential.clone(), target })
    }
}

/// Splits a request URL into canonical scheme, host, port and path, or says why it cannot be
/// sent at all.
fn parse_request(uri: &http::Uri) -> Result<Parsed, DenyReason> {
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
    Ok(Parsed { https, host, port, path })
}

/// The first rule of `rules` that allows `method` on the request, or why none does.
fn first_match<'a>(
    rules: &'a [EgressRule],
    method: &http::Method,
    req: &Parsed,
) -> Result<(usize, &'a EgressRule), DenyReason> {
    let mut method_mismatch = false;
    for (rule_index, rule) in rules.iter().enumerate() {
        if rule.https != req.https || rule.port != req.port || rule.host != req.host {
            continue;
        }
        if matches!(req.host, HostName::Ip(_)) && !rule.allow_ip_literal {
            continue;
        }
        if !prefix_matches(&rule.path_prefix, &req.path) {
            continue;
        }
        if !rule.methods.contains(method) {
            method_mismatch = true;
            continue;
        }
        return Ok((rule_index, rule));
    }
    if method_mismatch {
        Err(DenyReason::MethodNotAllowed(method.clone()))
    } else if matches!(req.host, HostName::Ip(_))
        && !rules.iter().any(|r| r.allow_ip_literal && r.host == req.host)
    {
        Err(DenyReason::IpLiteral)
    } else {
        Err(DenyReason::NoMatchingRule)
    }
}

/// Whether one rule of `rules` covers `wanted` (see [`EgressPolicy::narrowed`]); otherwise the
/// most specific reason it is not.
fn covered(rules: &[EgressRule], wanted: &EgressRule) -> Result<(), NotGrantedReason> {
    let same_origin: Vec<&EgressRule> = rules
        .iter()
        .filter(|r| r.https == wanted.https && r.host == wanted.host && r.port == wanted.port)
        .collect();
    if same_origin.is_empty() {
        return Err(NotGrantedReason::NoRuleForHost {
            scheme: if wanted.https { "https" } else { "http" },
            host: wanted.host.as_str().to_owned(),
            port: wanted.port,
        });
    }
    let below: Vec<&EgressRule> =
        same_origin.iter().copied().filter(|r| prefix_matches(&r.path_prefix, &wanted.path_prefix)).collect();
    if below.is_empty() {
        let mut granted: Vec<String> = Vec::new();
        for r in &same_origin {
            if !granted.contains(&r.path_prefix) {
                granted.push(r.path_prefix.clone());
            }
        }
        return Err(NotGrantedReason::PathOutsidePrefixes { path: wanted.path_prefix.clone(), granted });
    }
    let missing = |r: &EgressRule| -> Vec<http::Method> {
        wanted.methods.iter().filter(|m| !r.methods.contains(m)).cloned().collect()
    };
    let all_methods: Vec<&EgressRule> = below.iter().copied().filter(|r| missing(r).is_empty()).collect();
    if all_methods.is_empty() {
        let fewest = below.iter().map(|r| missing(r)).min_by_key(Vec::len).unwrap_or_default();
        let method = fewest.into_iter().next().unwrap_or(http::Method::GET);
        return Err(NotGrantedReason::MethodNotGranted(method));
    }
    if wanted.allow_ip_literal && !all_methods.iter().any(|r| r.allow_ip_literal) {
        return Err(NotGrantedReason::IpLiteralNotGranted);
    }
    Ok(())
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
