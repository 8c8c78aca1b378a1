//! W3C Trace Context (`traceparent`): parsed from the inbound request, carried through the
//! invocation, and set by the host on every outbound request so that one trace id ties the
//! hops of an agent chain together.
//!
//! The header is `version-traceid-parentid-flags` in lowercase hex (W3C Trace Context §3.2):
//! `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`. An inbound value that does not
//! parse starts a new trace (the spec's "restart the trace"), it never fails the request.
//! Outbound, the host writes the header itself with a fresh span id per request; whatever a
//! guest put in `traceparent`/`tracestate` is dropped, so a plugin cannot forge or break the
//! correlation.

use rand::RngCore;

/// One request's trace context: the trace it belongs to and the span that is its parent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

impl std::fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.header_value())
    }
}

/// Why a `traceparent` value was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TraceparentError {
    /// Not `version-traceid-parentid-flags` with the lengths of version 00.
    #[error("traceparent is not version-traceid-parentid-flags")]
    Format,
    /// A field is not lowercase hex.
    #[error("traceparent field is not lowercase hex")]
    Hex,
    /// Version `ff` is forbidden by the spec.
    #[error("traceparent version ff is invalid")]
    Version,
    /// The trace id or parent id is all zeros.
    #[error("traceparent has an all-zero id")]
    ZeroId,
    /// More than one `traceparent` header.
    #[error("more than one traceparent header")]
    Repeated,
}

/// The W3C header name.
pub const TRACEPARENT: &str = "traceparent";
/// The companion vendor header; dropped from guest requests (the host does not forward one).
pub const TRACESTATE: &str = "tracestate";

fn hex_into(s: &str, out: &mut [u8]) -> Result<(), TraceparentError> {
    let b = s.as_bytes();
    if b.len() != out.len() * 2 {
        return Err(TraceparentError::Format);
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(TraceparentError::Hex),
    };
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
    }
    Ok(())
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

impl TraceContext {
    /// Parses one `traceparent` value (W3C Trace Context §3.2, §4.3): version 00 exactly
    /// 55 characters; a higher version at least that, its extra fields ignored.
    pub fn parse(value: &str) -> Result<TraceContext, TraceparentError> {
        if value.len() < 55 || !value.is_ascii() {
            return Err(TraceparentError::Format);
        }
        let mut version = [0u8; 1];
        hex_into(&value[0..2], &mut version)?;
        if version[0] == 0xff {
            return Err(TraceparentError::Version);
        }
        if version[0] == 0 && value.len() != 55 {
            return Err(TraceparentError::Format);
        }
        if value.len() > 55 && value.as_bytes()[55] != b'-' {
            return Err(TraceparentError::Format);
        }
        let b = value.as_bytes();
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(TraceparentError::Format);
        }
        let mut trace_id = [0u8; 16];
        hex_into(&value[3..35], &mut trace_id)?;
        let mut span_id = [0u8; 8];
        hex_into(&value[36..52], &mut span_id)?;
        let mut flags = [0u8; 1];
        hex_into(&value[53..55], &mut flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return Err(TraceparentError::ZeroId);
        }
        Ok(TraceContext { trace_id, span_id, sampled: flags[0] & 1 == 1 })
    }

    /// The context of an inbound request: its one valid `traceparent`, else a new trace (the
    /// error says why the header, if any, was not used, for a debug log).
    pub fn from_headers(headers: &http::HeaderMap) -> (TraceContext, Option<TraceparentError>) {
        let mut values = headers.get_all(TRACEPARENT).iter();
        let Some(first) = values.next() else { return (Self::new_root(), None) };
        if values.next().is_some() {
            return (Self::new_root(), Some(TraceparentError::Repeated));
        }
        match first.to_str().map_err(|_| TraceparentError::Format).and_then(Self::parse) {
            Ok(context) => (context, None),
            Err(e) => (Self::new_root(), Some(e)),
        }
    }

    /// A new trace (random trace id and span id), sampled.
    pub fn new_root() -> TraceContext {
        let mut rng = rand::rng();
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        while trace_id == [0; 16] {
            rng.fill_bytes(&mut trace_id);
        }
        while span_id == [0; 8] {
            rng.fill_bytes(&mut span_id);
        }
        TraceContext { trace_id, span_id, sampled: true }
    }

    /// A child span of this one: same trace, new random span id (what the host sends on an
    /// outbound request).
    #[must_use]
    pub fn child(&self) -> TraceContext {
        let mut span_id = [0u8; 8];
        let mut rng = rand::rng();
        while span_id == [0; 8] || span_id == self.span_id {
            rng.fill_bytes(&mut span_id);
        }
        TraceContext { span_id, ..*self }
    }

    /// The trace id, 32 lowercase hex characters (the audit records' `trace_id`).
    pub fn trace_id(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// The span id, 16 lowercase hex characters.
    pub fn span_id(&self) -> String {
        to_hex(&self.span_id)
    }

    /// The `traceparent` value (always version 00; only the sampled flag is kept).
    pub fn header_value(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id(), self.span_id(), u8::from(self.sampled))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_spec_example_round_trips() {
        let t = TraceContext::parse(EXAMPLE).unwrap();
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id(), "00f067aa0ba902b7");
        assert_eq!(t.header_value(), EXAMPLE);
        let unsampled =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(unsampled.header_value().ends_with("-00"));
        // Unknown flag bits are not propagated.
        let flags = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09").unwrap();
        assert!(flags.header_value().ends_with("-01"));
    }

    #[test]
    fn future_versions_parse_their_known_prefix() {
        let t = TraceContext::parse(&format!("cc{}-what-the-future-holds", &EXAMPLE[2..])).unwrap();
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(TraceContext::parse(&format!("cc{}x", &EXAMPLE[2..])), Err(TraceparentError::Format));
    }

    #[test]
    fn malformed_values_are_refused() {
        let cases = [
            ("", TraceparentError::Format),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", TraceparentError::Format),
            (&format!("{EXAMPLE}-extra") as &str, TraceparentError::Format),
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", TraceparentError::Hex),
            ("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", TraceparentError::Hex),
            ("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceparentError::Format),
            ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceparentError::Version),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", TraceparentError::ZeroId),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", TraceparentError::ZeroId),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x", TraceparentError::Hex),
            ("00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01", TraceparentError::Format),
        ];
        for (value, want) in cases {
            assert_eq!(TraceContext::parse(value), Err(want), "{value:?}");
        }
    }

    #[test]
    fn inbound_headers_keep_a_valid_trace_or_start_a_new_one() {
        let mut h = http::HeaderMap::new();
        let (fresh, why) = TraceContext::from_headers(&h);
        assert_eq!(why, None);
        assert_eq!(fresh.trace_id().len(), 32);
        assert_ne!(fresh.trace_id(), TraceContext::new_root().trace_id());

        h.insert(TRACEPARENT, http::HeaderValue::from_static(EXAMPLE));
        let (kept, why) = TraceContext::from_headers(&h);
        assert_eq!((kept.header_value().as_str(), why), (EXAMPLE, None));

        h.append(TRACEPARENT, http::HeaderValue::from_static(EXAMPLE));
        let (restarted, why) = TraceContext::from_headers(&h);
        assert_eq!(why, Some(TraceparentError::Repeated));
        assert_ne!(restarted.trace_id(), kept.trace_id());

        h.insert(TRACEPARENT, http::HeaderValue::from_static("garbage"));
        let (restarted, why) = TraceContext::from_headers(&h);
        assert_eq!(why, Some(TraceparentError::Format));
        assert_ne!(restarted.trace_id(), kept.trace_id());
    }

    #[test]
    fn a_child_keeps_the_trace_and_gets_a_new_span() {
        let parent = TraceContext::parse(EXAMPLE).unwrap();
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.span_id(), parent.span_id());
        assert_eq!(TraceContext::parse(&child.header_value()), Ok(child));
    }
}
