//! The hop counter: a count of the agents before this host, signed by the host that sent the
//! request, for delegation chains whose tokens record none (Entra On-Behalf-Of issues tokens
//! without `act`, so an OBO chain A → B → A is invisible to the `act` count).
//!
//! Hosts that call each other share a hop key (`[auth] hop_key`). When a host's egress rule
//! hands a token to another agent host (its provider sets `max_chain_depth`), the egress
//! gateway adds, after the guest's headers and replacing any the guest wrote:
//!
//! ```text
//! X-Amzn-Bedrock-AgentCore-Runtime-Custom-Delegate-Hop: <depth>.<mac>
//! depth = the sending host's own chain depth + 1   (decimal, 0..=99, no leading zero)
//! mac   = base64url-nopad(HMAC-SHA256(hop_key,
//!             "delegate-hop/v1\n" ‖ depth ‖ "\n" ‖ SHA-256(the bearer token sent)))
//! ```
//!
//! The header name is one AgentCore Runtime can forward (only allow-listed
//! `X-Amzn-Bedrock-AgentCore-Runtime-Custom-*` headers reach a container), so the counter
//! survives a hop into a runtime hosted there.
//!
//! The MAC covers the hash of the exact bearer token of the request, so a counter cannot be
//! moved onto another token, and its depth cannot be changed without the key. The receiving
//! authorizer verifies it (constant time) against the token it verified; a malformed or
//! unverifiable header is refused (401 `invalid_hop`), never trusted or ignored. Whoever holds
//! the key can assert any depth: it is as sensitive as a signing key.

use std::sync::Arc;

use aws_lc_rs::{digest, hmac};
use base64::Engine;
use delegate_secret::Secret;
use http::{HeaderMap, HeaderValue};
use zeroize::Zeroizing;

use crate::AuthError;

/// The header carrying the signed hop counter (lowercase, as `http` stores names).
pub const HOP_HEADER: &str = "x-amzn-bedrock-agentcore-runtime-custom-delegate-hop";

/// Fewest bytes a hop key decodes to.
pub const HOP_KEY_MIN_BYTES: usize = 32;
/// Most bytes a hop key decodes to.
const HOP_KEY_MAX_BYTES: usize = 1024;
/// Largest depth a header may carry (two decimal digits; far beyond any accepted limit).
const MAX_HOP_DEPTH: usize = 99;
/// Longest accepted header value: two digits, a dot and the 43 characters of the MAC.
const MAX_HOP_VALUE_BYTES: usize = 2 + 1 + 43;
/// Domain separation of the MAC input (and its format version).
const MAC_LABEL: &[u8] = b"delegate-hop/v1\n";

/// Why a hop key was refused (never the key itself).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HopKeyError {
    /// The value is not standard base64.
    #[error("not base64 (give at least 32 random bytes, base64-encoded, e.g. `openssl rand -base64 32`)")]
    NotBase64,
    /// The value decodes to too few or too many bytes.
    #[error("decodes to {0} bytes; a hop key is 32 to 1024 random bytes")]
    WrongLength(usize),
}

/// The key hosts of one chain share to sign and verify hop counters (HMAC-SHA256).
///
/// `Debug` shows no key material. Behind an `Arc`: the HMAC context is several hundred bytes,
/// and the settings holding it are moved into the host's start-up futures.
#[derive(Clone)]
pub struct HopKey(Arc<hmac::Key>);

impl std::fmt::Debug for HopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HopKey(..)")
    }
}

impl HopKey {
    /// A key from its configured form: standard base64 (surrounding whitespace ignored) of
    /// 32 to 1024 random bytes.
    pub fn from_base64(secret: &Secret) -> Result<HopKey, HopKeyError> {
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(secret.expose().trim())
                .map_err(|_| HopKeyError::NotBase64)?,
        );
        if !(HOP_KEY_MIN_BYTES..=HOP_KEY_MAX_BYTES).contains(&bytes.len()) {
            return Err(HopKeyError::WrongLength(bytes.len()));
        }
        Ok(HopKey(Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &bytes))))
    }

    /// The [`HOP_HEADER`] value telling the next host that `depth` agents acted before it,
    /// bound to the bearer `token` sent with it. Marked sensitive (kept out of HPACK tables
    /// and `Debug` output). `depth` is capped at 99, which every host refuses anyway.
    pub fn header_value(&self, depth: usize, token: &Secret) -> HeaderValue {
        let depth = depth.min(MAX_HOP_DEPTH);
        let tag = hmac::sign(&self.0, &message(depth, token.expose().as_bytes()));
        let value = format!("{depth}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag));
        let mut value =
            HeaderValue::try_from(value).unwrap_or_else(|_| unreachable!("digits, a dot and base64url"));
        value.set_sensitive(true);
        value
    }

    /// Whether `mac` is this key's MAC of `message` (constant time).
    fn verifies(&self, message: &[u8], mac: &[u8]) -> bool {
        hmac::verify(&self.0, message, mac).is_ok()
    }
}

/// A header value's claimed depth and MAC, if its form is canonical (checked before any MAC).
fn parse(value: &HeaderValue) -> Result<(usize, Vec<u8>), AuthError> {
    if value.len() > MAX_HOP_VALUE_BYTES {
        return Err(AuthError::InvalidHop("is too large"));
    }
    let malformed = AuthError::InvalidHop("is malformed");
    let text = value.to_str().map_err(|_| malformed.clone())?;
    let (depth, mac) = text.split_once('.').ok_or_else(|| malformed.clone())?;
    let canonical = !depth.is_empty()
        && depth.len() <= 2
        && depth.bytes().all(|b| b.is_ascii_digit())
        && (depth == "0" || !depth.starts_with('0'));
    if !canonical || mac.len() != 43 {
        return Err(malformed);
    }
    let depth: usize = depth.parse().map_err(|_| malformed.clone())?;
    let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(mac).map_err(|_| malformed)?;
    Ok((depth, mac))
}

/// The MAC input: the label, the decimal depth, a newline, and the token's SHA-256.
fn message(depth: usize, token: &[u8]) -> Vec<u8> {
    let depth = depth.to_string();
    let hash = digest::digest(&digest::SHA256, token);
    let mut message = Vec::with_capacity(MAC_LABEL.len() + depth.len() + 1 + hash.as_ref().len());
    message.extend_from_slice(MAC_LABEL);
    message.extend_from_slice(depth.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(hash.as_ref());
    message
}

/// The verified hop depth of a request whose bearer token is `token`: 0 without a hop key
/// (the header is ignored) or without the header (unless `required`); the header's depth when
/// its MAC verifies under `key` or, during a rotation, under `previous`; an error for anything
/// else.
pub(crate) fn hop_depth(
    headers: &HeaderMap,
    key: Option<&HopKey>,
    previous: Option<&HopKey>,
    token: &str,
    required: bool,
) -> Result<usize, AuthError> {
    let Some(key) = key else { return Ok(0) };
    let mut values = headers.get_all(HOP_HEADER).iter();
    let Some(value) = values.next() else {
        return if required { Err(AuthError::InvalidHop("is missing")) } else { Ok(0) };
    };
    if values.next().is_some() {
        return Err(AuthError::InvalidHop("is repeated"));
    }
    let (depth, mac) = parse(value)?;
    // One MAC input for both keys: the current one, and during a rotation the previous one.
    let message = message(depth, token.as_bytes());
    if key.verifies(&message, &mac) || previous.is_some_and(|p| p.verifies(&message, &mac)) {
        Ok(depth)
    } else {
        Err(AuthError::InvalidHop("does not verify"))
    }
}
