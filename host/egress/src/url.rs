//! URL normalisation: the one canonical form both rules and requests are compared in.
//!
//! Every spelling trick a guest could use to make a request look like an allowed one
//! (`EXAMPLE.com.`, `%2e%2e`, `//`, `%2F`, `0x7f.1`, Unicode look-alikes) is either folded into
//! the canonical form here or refused. The host forwards the canonical URL, not the guest's
//! spelling, so the server sees exactly what the policy checked.

use crate::policy::DenyReason;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// A canonical host: lower-case punycode domain without trailing dot, or an IP literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostName {
    /// ASCII (punycode) domain name.
    Domain(String),
    /// IP literal in canonical text form (`127.0.0.1`, `[::1]`).
    Ip(String),
}

impl HostName {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::Domain(s) | Self::Ip(s) => s,
        }
    }
}

/// Parses a host the way a WHATWG URL parser does for special schemes (IDNA to punycode,
/// lower-casing, percent-decoding, every IPv4 spelling such as `2130706433` or `0x7f.1`), then
/// drops one trailing dot.
pub(crate) fn parse_host(raw: &str) -> Result<HostName, String> {
    if raw.is_empty() {
        return Err("host is empty".into());
    }
    if raw.contains(['/', '\\', '@', '?', '#', ' ']) || (raw.contains(':') && !raw.starts_with('[')) {
        return Err("host must be a bare host name, without scheme, port, path or userinfo".into());
    }
    match url::Host::parse(raw) {
        Ok(url::Host::Domain(d)) => {
            let d = d.strip_suffix('.').unwrap_or(&d);
            if d.is_empty() || d.ends_with('.') || d.split('.').any(str::is_empty) {
                return Err("host has an empty label".into());
            }
            Ok(HostName::Domain(d.to_owned()))
        }
        Ok(url::Host::Ipv4(ip)) => Ok(HostName::Ip(ip.to_string())),
        Ok(url::Host::Ipv6(ip)) => Ok(HostName::Ip(format!("[{ip}]"))),
        Err(e) => Err(format!("host is not a valid host name ({e})")),
    }
}

/// Characters kept literally in a canonical path segment: RFC 3986 `pchar` minus `%`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// Normalises a path: percent-decodes each segment, resolves `.` and `..`, and re-encodes
/// it canonically. Refuses what different servers would read differently: encoded `/` or
/// `\`, empty segments (`//`), `..` above the root, double encoding, malformed escapes,
/// `..;` (Tomcat-style path parameters), control characters and non-UTF-8 bytes.
pub(crate) fn normalize_path(raw: &str) -> Result<String, DenyReason> {
    let raw = if raw.is_empty() { "/" } else { raw };
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(DenyReason::InvalidPath);
    };
    if raw.contains('\\') {
        return Err(DenyReason::EncodedSlash);
    }
    let mut out: Vec<String> = Vec::new();
    let mut trailing_slash = false;
    let parts: Vec<&str> = rest.split('/').collect();
    let last = parts.len() - 1;
    for (i, seg) in parts.iter().enumerate() {
        check_escapes(seg)?;
        let decoded = percent_decode_str(seg).decode_utf8().map_err(|_| DenyReason::InvalidPath)?;
        if decoded.contains(['/', '\\']) {
            return Err(DenyReason::EncodedSlash);
        }
        if decoded.chars().any(char::is_control) {
            return Err(DenyReason::InvalidPath);
        }
        if has_escape(&decoded) {
            return Err(DenyReason::DoubleEncoding);
        }
        let before_param = decoded.split(';').next().unwrap_or("");
        if (before_param == "." || before_param == "..") && before_param != decoded {
            return Err(DenyReason::Traversal);
        }
        match &*decoded {
            "" if i == last => trailing_slash = true,
            "" => return Err(DenyReason::EmptySegment),
            "." => trailing_slash = i == last,
            ".." => {
                if out.pop().is_none() {
                    return Err(DenyReason::Traversal);
                }
                trailing_slash = i == last;
            }
            _ => {
                out.push(utf8_percent_encode(&decoded, SEGMENT).to_string());
                trailing_slash = false;
            }
        }
    }
    let mut path = String::with_capacity(raw.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if trailing_slash || out.is_empty() {
        path.push('/');
    }
    Ok(path)
}

/// Normalises a configured path prefix with the same rules as request paths.
pub(crate) fn normalize_prefix(raw: &str) -> Result<String, String> {
    if !raw.starts_with('/') {
        return Err("must start with `/`".into());
    }
    if raw.contains('?') || raw.contains('#') {
        return Err("must not contain a query or fragment".into());
    }
    normalize_path(raw).map_err(|why| format!("is not a canonical path: {why}"))
}

/// Whether `path` is `prefix` or continues it at a segment boundary, so `/api/now/table`
/// covers `/api/now/table/incident` but not `/api/now/table-x`.
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// Every `%` must start a two-hex-digit escape; anything else is read differently by
/// different servers.
fn check_escapes(seg: &str) -> Result<(), DenyReason> {
    let b = seg.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() || !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return Err(DenyReason::MalformedEscape);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

fn has_escape(s: &str) -> bool {
    let b = s.as_bytes();
    b.windows(3).any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}
