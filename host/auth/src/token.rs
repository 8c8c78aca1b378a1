//! Untrusted input: the `Authorization` header and the JWS compact token, parsed strictly.
//!
//! Nothing here trusts the token: it only establishes that the bytes have the one shape we
//! accept, so that the verifier can then select a key from *our* key set and check the
//! signature over exactly these bytes.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use jsonwebtoken::Algorithm;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::AuthError;

/// Whether `s` is a GUID in the 8-4-4-4-12 hex form (Entra tenant and object ids).
pub(crate) fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The token from exactly one `Authorization: Bearer <token>` header.
pub(crate) fn bearer_token(headers: &HeaderMap, max_token_bytes: usize) -> Result<&str, AuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::MissingToken)?;
    if values.next().is_some() {
        // Two headers: proxies and frameworks disagree on which one wins; refuse both.
        return Err(AuthError::MalformedHeader);
    }
    let bytes = value.as_bytes();
    // Size first, before any other work on attacker-controlled bytes.
    if bytes.len() > max_token_bytes + "Bearer ".len() {
        return Err(AuthError::TokenTooLarge);
    }
    // RFC 6750 §2.1: `Bearer 1*SP b64token`; the scheme is case-insensitive. We accept exactly
    // one space and a JWS character set, nothing else.
    let (scheme, token) = match bytes.iter().position(|b| *b == b' ') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None if bytes.is_empty() => return Err(AuthError::MissingToken),
        None => return Err(AuthError::MalformedHeader),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(AuthError::MalformedHeader);
    }
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    if !token.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err(AuthError::MalformedHeader);
    }
    // Only ASCII remains, so this cannot fail.
    std::str::from_utf8(token).map_err(|_| AuthError::MalformedHeader)
}

/// A JSON object whose top-level keys are unique (a duplicate is an error, not "last wins").
pub(crate) struct StrictObject(pub(crate) Map<String, Value>);

impl<'de> serde::Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictObject, A::Error> {
                let mut map = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    if map.contains_key(&key) {
                        return Err(serde::de::Error::custom("duplicate key"));
                    }
                    let value: Value = access.next_value()?;
                    map.insert(key, value);
                }
                Ok(StrictObject(map))
            }
        }
        d.deserialize_map(V)
    }
}

fn decode_object(segment: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| AuthError::MalformedToken)?;
    serde_json::from_slice::<StrictObject>(&bytes).map(|o| o.0).map_err(|_| AuthError::MalformedToken)
}

/// Header parameters we refuse outright (protocols.md §4.1 item 4): they name keys we must not
/// fetch or trust, change what is signed, or mark an encrypted/nested token.
const REFUSED_HEADER_PARAMETERS: [&str; 9] = ["jku", "x5u", "jwk", "x5c", "crit", "b64", "enc", "zip", "cty"];

/// A token split and parsed, not yet verified.
pub(crate) struct UnverifiedToken<'a> {
    /// `b64(header).b64(payload)`: exactly the bytes the signature covers.
    pub(crate) signing_input: &'a str,
    pub(crate) signature: &'a str,
    pub(crate) alg: Algorithm,
    pub(crate) kid: String,
    pub(crate) claims: Map<String, Value>,
}

/// Splits and parses a compact JWS, applying every structural check.
pub(crate) fn parse<'a>(token: &'a str, allowed: &[Algorithm]) -> Result<UnverifiedToken<'a>, AuthError> {
    let mut segments = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (segments.next(), segments.next(), segments.next(), segments.next())
    else {
        // Two segments (unsigned), four, or five (JWE): not a JWS we accept.
        return Err(AuthError::MalformedToken);
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(AuthError::MalformedToken);
    }
    let header = decode_object(h)?;
    for name in REFUSED_HEADER_PARAMETERS {
        if header.contains_key(name) {
            return Err(AuthError::HeaderParameter(name));
        }
    }
    if let Some(typ) = header.get("typ") {
        let ok = typ.as_str().is_some_and(|t| {
            t.eq_ignore_ascii_case("JWT")
                || t.eq_ignore_ascii_case("at+jwt")
                || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !ok {
            return Err(AuthError::HeaderParameter("typ"));
        }
    }
    // The header's `alg` is only a claim: it must be one we configured; the key decides later
    // whether it can be used at all.
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(|a| a.parse::<Algorithm>().ok())
        .filter(|a| allowed.contains(a))
        .ok_or(AuthError::Algorithm)?;
    let kid = match header.get("kid") {
        Some(Value::String(k)) if !k.is_empty() && k.len() <= 256 => k.clone(),
        Some(_) => return Err(AuthError::MalformedToken),
        None => return Err(AuthError::MissingKeyId),
    };
    let claims = decode_object(p)?;
    Ok(UnverifiedToken { signing_input: &token[..h.len() + 1 + p.len()], signature: s, alg, kid, claims })
}

/// Typed accessors over the claims map: a present claim of the wrong type is an error, never
/// silently ignored.
pub(crate) struct Claims<'a>(pub(crate) &'a Map<String, Value>);

impl Claims<'_> {
    pub(crate) fn string(&self, name: &'static str) -> Result<Option<&str>, AuthError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(AuthError::Claim(name)),
        }
    }

    /// A NumericDate as a non-negative integer (Entra uses integers; floats, strings and
    /// negative or huge values are refused).
    pub(crate) fn seconds(&self, name: &'static str) -> Result<Option<u64>, AuthError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) => v.as_u64().filter(|n| *n < (1 << 40)).map(Some).ok_or(AuthError::Claim(name)),
        }
    }

    /// A string or a non-empty array of strings.
    pub(crate) fn string_or_array(&self, name: &'static str) -> Result<Option<Vec<&str>>, AuthError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(vec![s.as_str()])),
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|v| v.as_str().ok_or(AuthError::Claim(name)))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(AuthError::Claim(name)),
        }
    }

    /// An array of strings (possibly empty).
    pub(crate) fn string_array(&self, name: &'static str) -> Result<Vec<&str>, AuthError> {
        match self.0.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                items.iter().map(|v| v.as_str().ok_or(AuthError::Claim(name))).collect()
            }
            Some(_) => Err(AuthError::Claim(name)),
        }
    }
}

/// Longest `sub` (or `client_id`) of an actor we keep: ids, not prose.
const MAX_ACTOR_ID: usize = 256;

/// The delegation chain of an `act` claim (RFC 8693 §4.1), outermost (current) actor first.
///
/// Strict, because the depth is the one thing the host decides on: `act` must be an object
/// with a non-empty string `sub`, its optional nested `act` likewise, at most `max_nesting`
/// levels (deeper is refused as malformed rather than counted without bound). `client_id`, if
/// present, must be a string. Other members are ignored.
pub(crate) fn delegation_chain(
    claims: &Map<String, Value>,
    max_nesting: usize,
) -> Result<Vec<crate::Actor>, AuthError> {
    let mut actors = Vec::new();
    let mut next = claims.get("act");
    while let Some(value) = next {
        if actors.len() >= max_nesting {
            return Err(AuthError::Claim("act"));
        }
        let Value::Object(act) = value else { return Err(AuthError::Claim("act")) };
        let subject = match act.get("sub") {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_ACTOR_ID => s.clone(),
            _ => return Err(AuthError::Claim("act")),
        };
        let client_id = match act.get("client_id") {
            None => None,
            Some(Value::String(s)) if s.len() <= MAX_ACTOR_ID => Some(s.clone()),
            Some(_) => return Err(AuthError::Claim("act")),
        };
        actors.push(crate::Actor { subject, client_id });
        next = act.get("act");
    }
    Ok(actors)
}
