//! Sealing cached tokens for a shared store: AES-256-GCM values under keyed-hash names.
//!
//! A shared store (Redis) is readable by whoever operates it, so it must hold nothing that
//! identifies a user or works as a credential:
//! - the storage name of an entry is `HMAC-SHA256(index_key, encode(issuer, tenant, subject,
//!   provider, scopes))`, hex; each field is length-prefixed (and the scopes counted), so two
//!   different keys never encode to the same bytes, and without the vault key nobody can test
//!   guesses ("is jane@company.com in there?");
//! - the value is `version ‖ nonce ‖ AES-256-GCM(expires_at ‖ fresh_until ‖ token)` with a random
//!   96-bit nonce per value and the storage name as associated data, so a value copied under
//!   another name (another user's entry) fails to open instead of handing out the wrong token.
//!
//! Both subkeys are derived from the operator's 256-bit vault key with HKDF-SHA256 (distinct
//! `info` labels), so one secret is configured and neither use weakens the other. A
//! `previous` key may be given during a rotation: entries written under it are still found
//! and opened, new ones are written under the current key.

use crate::cache::{CacheKey, CachedToken};
use aws_lc_rs::{aead, hkdf, hmac, rand};
use delegate_secret::Secret;
use zeroize::Zeroizing;

/// Length of the vault key in bytes (AES-256).
pub const KEY_LEN: usize = 32;

/// Format version, the first byte of every sealed value (and part of the associated data).
const VERSION: u8 = 1;
const HEADER: usize = 1 + aead::NONCE_LEN;
const HKDF_SALT: &[u8] = b"delegate/vault/shared-cache";
const INFO_INDEX: &[u8] = b"delegate/vault/v1/index-hmac";
const INFO_SEAL: &[u8] = b"delegate/vault/v1/seal-aes256gcm";

/// Why a vault key was refused (never the key itself).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The value is not standard base64.
    #[error("not base64 (give 32 random bytes, base64-encoded, e.g. `openssl rand -base64 32`)")]
    NotBase64,
    /// The value decodes to the wrong number of bytes.
    #[error("decodes to {0} bytes; a vault key is exactly 32 bytes")]
    WrongLength(usize),
}

/// Why a stored value could not be opened. Each is treated as a miss by the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Shorter than a header and a tag, or an unknown format version.
    #[error("malformed sealed value")]
    Malformed,
    /// Authentication failed: another key, another storage name, or tampered bytes.
    #[error("sealed value does not authenticate")]
    Unauthentic,
}

/// One vault key's two subkeys.
struct KeyPair {
    index: hmac::Key,
    seal: aead::LessSafeKey,
}

impl KeyPair {
    fn derive(key: &[u8; KEY_LEN]) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(key);
        let mut index = Zeroizing::new([0u8; KEY_LEN]);
        let mut seal = Zeroizing::new([0u8; KEY_LEN]);
        // HKDF-SHA256 can expand 32 bytes for any info: these cannot fail.
        for (info, out) in [(INFO_INDEX, &mut index), (INFO_SEAL, &mut seal)] {
            let infos = [info];
            let okm = prk.expand(&infos, hkdf::HKDF_SHA256).unwrap_or_else(|_| unreachable!("32-byte HKDF"));
            okm.fill(&mut out[..]).unwrap_or_else(|_| unreachable!("32-byte HKDF"));
        }
        let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, &seal[..])
            .unwrap_or_else(|_| unreachable!("AES-256 takes 32 bytes"));
        Self { index: hmac::Key::new(hmac::HMAC_SHA256, &index[..]), seal: aead::LessSafeKey::new(unbound) }
    }

    fn name(&self, key: &CacheKey) -> String {
        let tag = hmac::sign(&self.index, &encode(key));
        hex_lower(tag.as_ref())
    }
}

/// Seals and opens cached tokens; holds the current key and optionally the previous one.
pub struct Sealer {
    current: KeyPair,
    previous: Option<KeyPair>,
    rng: rand::SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("previous_key", &self.previous.is_some()).finish_non_exhaustive()
    }
}

/// Decodes a base64 vault key into its 32 bytes.
pub fn decode_key(secret: &Secret) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    use base64::Engine;
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(secret.expose().trim())
            .map_err(|_| KeyError::NotBase64)?,
    );
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if bytes.len() != KEY_LEN {
        return Err(KeyError::WrongLength(bytes.len()));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

impl Sealer {
    /// A sealer for `current`, also opening values sealed under `previous`.
    pub fn new(current: &[u8; KEY_LEN], previous: Option<&[u8; KEY_LEN]>) -> Self {
        Self {
            current: KeyPair::derive(current),
            previous: previous.map(KeyPair::derive),
            rng: rand::SystemRandom::new(),
        }
    }

    /// The storage name for `key` under the current key (lowercase hex of the HMAC).
    pub fn name(&self, key: &CacheKey) -> String {
        self.current.name(key)
    }

    /// The storage name for `key` under the previous key, if one is configured.
    pub fn previous_name(&self, key: &CacheKey) -> Option<String> {
        self.previous.as_ref().map(|p| p.name(key))
    }

    /// Seals `token` for storage under `name` (from [`Sealer::name`]); `None` if the system
    /// random number generator fails (the token is then not stored: a reused nonce would be
    /// far worse than a miss).
    pub fn seal(&self, name: &str, token: &CachedToken) -> Option<Vec<u8>> {
        let mut nonce = [0u8; aead::NONCE_LEN];
        rand::SecureRandom::fill(&self.rng, &mut nonce).ok()?;
        let mut out = Vec::with_capacity(HEADER + 16 + token.token.len() + aead::MAX_TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&token.expires_at.to_be_bytes());
        out.extend_from_slice(&token.fresh_until.to_be_bytes());
        out.extend_from_slice(token.token.expose().as_bytes());
        let (header, body) = out.split_at_mut(HEADER);
        let tag = self
            .current
            .seal
            .seal_in_place_separate_tag(aead::Nonce::assume_unique_for_key(nonce), aad(name, header[0]), body)
            .unwrap_or_else(|_| unreachable!("a token is far below the AES-GCM size limit"));
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    /// Opens a value stored under `name` with the current key.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<CachedToken, OpenError> {
        open_with(&self.current, name, sealed)
    }

    /// Opens a value stored under a previous-key `name` (from [`Sealer::previous_name`]).
    pub fn open_previous(&self, name: &str, sealed: &[u8]) -> Result<CachedToken, OpenError> {
        self.previous.as_ref().map_or(Err(OpenError::Unauthentic), |p| open_with(p, name, sealed))
    }
}

fn aad(name: &str, version: u8) -> aead::Aad<Vec<u8>> {
    let mut a = Vec::with_capacity(name.len() + 24);
    a.extend_from_slice(b"delegate/vault/v");
    a.push(version);
    a.push(0);
    a.extend_from_slice(name.as_bytes());
    aead::Aad::from(a)
}

fn open_with(keys: &KeyPair, name: &str, sealed: &[u8]) -> Result<CachedToken, OpenError> {
    if sealed.len() < HEADER + 16 + aead::MAX_TAG_LEN || sealed[0] != VERSION {
        return Err(OpenError::Malformed);
    }
    let mut nonce = [0u8; aead::NONCE_LEN];
    nonce.copy_from_slice(&sealed[1..HEADER]);
    let mut body = Zeroizing::new(sealed[HEADER..].to_vec());
    let plain = keys
        .seal
        .open_in_place(aead::Nonce::assume_unique_for_key(nonce), aad(name, VERSION), &mut body)
        .map_err(|_| OpenError::Unauthentic)?;
    let (times, token) = plain.split_at(16);
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&times[i..i + 8]);
        u64::from_be_bytes(b)
    };
    // Authenticated bytes were written by `seal` from a `&str`: not UTF-8 means another writer.
    let token = std::str::from_utf8(token).map_err(|_| OpenError::Malformed)?;
    Ok(CachedToken { token: Secret::new(token), expires_at: word(0), fresh_until: word(8) })
}

/// The collision-free encoding of a cache key: a domain label, then each field as a 64-bit
/// big-endian length and its bytes, the scopes preceded by their count.
pub(crate) fn encode(key: &CacheKey) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let mut out = Vec::with_capacity(128);
    field(&mut out, b"delegate/vault/cache-key/v1");
    for part in [key.issuer(), key.tenant(), key.subject(), key.provider()] {
        field(&mut out, part.as_bytes());
    }
    out.extend_from_slice(&(key.scopes().len() as u64).to_be_bytes());
    for scope in key.scopes() {
        field(&mut out, scope.as_bytes());
    }
    out
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::collections::HashSet;

    const K1: [u8; KEY_LEN] = [7; KEY_LEN];
    const K2: [u8; KEY_LEN] = [9; KEY_LEN];

    fn key(subject: &str) -> CacheKey {
        CacheKey::new(
            "https://issuer/v2.0",
            Some("tenant-1"),
            subject,
            "servicenow",
            &["api://sn/.default".into()],
        )
    }

    fn token() -> CachedToken {
        CachedToken { token: Secret::new("token-b-secret-value"), expires_at: 2_000, fresh_until: 1_940 }
    }

    #[test]
    fn seal_then_open_round_trips_and_hides_the_token() {
        let s = Sealer::new(&K1, None);
        let name = s.name(&key("jane"));
        let sealed = s.seal(&name, &token()).unwrap();
        let text = String::from_utf8_lossy(&sealed);
        assert!(!text.contains("token-b-secret-value"));
        let opened = s.open(&name, &sealed).unwrap();
        assert_eq!(opened.token.expose(), "token-b-secret-value");
        assert_eq!((opened.expires_at, opened.fresh_until), (2_000, 1_940));
        // A fresh nonce per value: sealing twice gives different bytes.
        assert_ne!(s.seal(&name, &token()).unwrap(), sealed);
    }

    #[test]
    fn every_tampered_byte_is_refused() {
        let s = Sealer::new(&K1, None);
        let name = s.name(&key("jane"));
        let sealed = s.seal(&name, &token()).unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(s.open(&name, &bad).is_err(), "byte {i} flipped still opened");
        }
        assert_eq!(s.open(&name, &sealed[..sealed.len() - 1]).unwrap_err(), OpenError::Unauthentic);
        assert_eq!(s.open(&name, &sealed[..10]).unwrap_err(), OpenError::Malformed);
        assert_eq!(s.open(&name, b"").unwrap_err(), OpenError::Malformed);
    }

    #[test]
    fn another_key_cannot_open_or_find_an_entry() {
        let a = Sealer::new(&K1, None);
        let b = Sealer::new(&K2, None);
        let name = a.name(&key("jane"));
        assert_ne!(name, b.name(&key("jane")), "the storage name depends on the key");
        let sealed = a.seal(&name, &token()).unwrap();
        assert_eq!(b.open(&name, &sealed).unwrap_err(), OpenError::Unauthentic);
    }

    #[test]
    fn a_value_moved_to_another_users_name_does_not_open() {
        let s = Sealer::new(&K1, None);
        let jane = s.name(&key("jane"));
        let ravi = s.name(&key("ravi"));
        let sealed = s.seal(&jane, &token()).unwrap();
        assert_eq!(s.open(&ravi, &sealed).unwrap_err(), OpenError::Unauthentic);
    }

    #[test]
    fn names_are_hex_hmacs_without_identity() {
        let s = Sealer::new(&K1, None);
        let name = s.name(&key("jane.doe@company.com"));
        assert_eq!(name.len(), 64);
        assert!(name.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(name, s.name(&key("jane.doe@company.com")), "deterministic");
    }

    #[test]
    fn length_prefixing_keeps_shifted_fields_apart() {
        let scopes = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        // Each pair would collide under plain concatenation of the fields.
        let keys = [
            CacheKey::new("ab", Some("c"), "d", "p", &scopes(&["s"])),
            CacheKey::new("a", Some("bc"), "d", "p", &scopes(&["s"])),
            CacheKey::new("a", Some("b"), "cd", "p", &scopes(&["s"])),
            CacheKey::new("a", Some("b"), "c", "dp", &scopes(&["s"])),
            CacheKey::new("a", Some("b"), "c", "d", &scopes(&["ps"])),
            CacheKey::new("a", Some("b"), "c", "d", &scopes(&["p", "s"])),
            CacheKey::new("a", Some("b"), "c", "d", &scopes(&["ps", ""])),
            CacheKey::new("a", Some("b"), "c", "d", &scopes(&[])),
            CacheKey::new("a", Some("b"), "c", "d", &scopes(&[""])),
            CacheKey::new("a", None, "bc", "d", &scopes(&[])),
            CacheKey::new("", Some("ab"), "c", "d", &scopes(&[])),
        ];
        let encodings: HashSet<Vec<u8>> = keys.iter().map(encode).collect();
        assert_eq!(encodings.len(), keys.len());
        let s = Sealer::new(&K1, None);
        let names: HashSet<String> = keys.iter().map(|k| s.name(k)).collect();
        assert_eq!(names.len(), keys.len());
        // Scope order and duplicates do not matter (CacheKey normalises them).
        let a = CacheKey::new("i", None, "s", "p", &scopes(&["b", "a", "b"]));
        let b = CacheKey::new("i", None, "s", "p", &scopes(&["a", "b"]));
        assert_eq!(s.name(&a), s.name(&b));
    }

    #[test]
    fn rotation_opens_old_entries_and_writes_new_ones() {
        let old = Sealer::new(&K1, None);
        let rotated = Sealer::new(&K2, Some(&K1));
        let k = key("jane");
        let old_name = old.name(&k);
        let sealed_old = old.seal(&old_name, &token()).unwrap();
        assert_eq!(rotated.previous_name(&k).as_deref(), Some(old_name.as_str()));
        assert_eq!(
            rotated.open_previous(&old_name, &sealed_old).unwrap().token.expose(),
            "token-b-secret-value"
        );
        // The current key does not open it, and what the rotated sealer writes the old key cannot open.
        assert!(rotated.open(&old_name, &sealed_old).is_err());
        let new_name = rotated.name(&k);
        let sealed_new = rotated.seal(&new_name, &token()).unwrap();
        assert!(old.open(&new_name, &sealed_new).is_err());
        assert!(Sealer::new(&K2, None).open_previous(&old_name, &sealed_old).is_err());
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        use base64::Engine;
        let b64 = |n: usize| Secret::new(base64::engine::general_purpose::STANDARD.encode(vec![1u8; n]));
        assert_eq!(*decode_key(&b64(32)).unwrap(), [1u8; 32]);
        assert_eq!(decode_key(&b64(16)).unwrap_err(), KeyError::WrongLength(16));
        assert_eq!(decode_key(&b64(33)).unwrap_err(), KeyError::WrongLength(33));
        assert_eq!(decode_key(&Secret::new("not base64 !")).unwrap_err(), KeyError::NotBase64);
    }
}
