//! `oci://registry[:port]/repository@sha256:<hex>`: what a plugin is pulled by.
//!
//! Only digests: a tag is a mutable name, so two replicas (or one replica before and after a
//! restart) given the same tag could run different code. A digest names exactly one manifest,
//! and the manifest names its blobs by digest, so the whole artifact is immutable.

use crate::OciError;
use std::fmt;

/// A `sha256:<64 lowercase hex>` content digest (the only algorithm accepted).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let hex = text
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("digest {text:?} is not sha256:<hex> (only sha256 is accepted)"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!("digest {text:?} is not sha256: followed by 64 lowercase hex digits"));
        }
        Ok(Self(text.to_owned()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes))))
    }

    /// The 64 hex digits (a safe file name: checked in [`Digest::parse`]).
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `bytes` hash to this digest.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        Self::of(bytes) == *self
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A plugin artifact pinned by its manifest digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`, as the registry is addressed (and as `[oci]` settings name it).
    pub registry: String,
    /// The repository path, e.g. `plugins/servicenow-agent`.
    pub repository: String,
    /// The manifest's digest.
    pub digest: Digest,
}

/// Where `delegate plugin push` writes: a repository, optionally with a tag to set as well
/// (the result is always reported by digest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `host[:port]`.
    pub registry: String,
    /// The repository path.
    pub repository: String,
    /// A tag to point at the pushed manifest, if any.
    pub tag: Option<String>,
}

const SCHEME: &str = "oci://";

fn invalid(reference: &str, message: impl Into<String>) -> OciError {
    OciError::InvalidReference { reference: reference.to_owned(), message: message.into() }
}

/// Splits `oci://registry/rest`, checking the registry part.
fn split(text: &str) -> Result<(&str, &str), OciError> {
    let rest = text.strip_prefix(SCHEME).ok_or_else(|| {
        invalid(text, "must start with oci:// (oci://registry[:port]/repository@sha256:<hex>)")
    })?;
    let (registry, path) =
        rest.split_once('/').ok_or_else(|| invalid(text, "no repository after the registry"))?;
    check_registry(registry).map_err(|m| invalid(text, m))?;
    Ok((registry, path))
}

/// `host[:port]` or `[v6]:port`: DNS-name characters only, so the value is safe in a URL.
pub(crate) fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = if let Some(v6) = registry.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or("unclosed [ in the registry address")?;
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return Err(format!("registry {registry:?} is not a valid IPv6 address"));
        }
        match after.strip_prefix(':') {
            Some(port) => (addr, Some(port)),
            None if after.is_empty() => (addr, None),
            None => return Err(format!("registry {registry:?}: unexpected text after ]")),
        }
    } else {
        let (host, port) = match registry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
            return Err(format!("registry {registry:?} is not host[:port]"));
        }
        (host, port)
    };
    let _ = host;
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 && !port.starts_with('0') => {}
            _ => return Err(format!("registry {registry:?} has an invalid port")),
        }
    }
    Ok(())
}

/// The distribution spec's repository name grammar: lowercase components of `[a-z0-9]`
/// separated by `.`, `_`, `__` or `-`, joined by `/`.
fn check_repository(repository: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        let bytes = c.as_bytes();
        !bytes.is_empty()
            && bytes.first().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && bytes.last().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b))
            && !c.contains("..")
            && !c.contains("___")
    };
    if repository.is_empty() || repository.len() > 255 || !repository.split('/').all(component_ok) {
        return Err(format!(
            "repository {repository:?} is not lowercase [a-z0-9] components separated by . _ - and /"
        ));
    }
    Ok(())
}

impl Reference {
    /// Parses `oci://registry[:port]/repository@sha256:<hex>`. A tag (`:latest`, or a tag
    /// beside the digest) is refused: deploys are pinned by digest only.
    pub fn parse(text: &str) -> Result<Self, OciError> {
        let (registry, path) = split(text)?;
        let Some((repository, digest)) = path.split_once('@') else {
            return Err(invalid(
                text,
                "no digest: plugins are pulled by digest only (…/repository@sha256:<hex>), never by tag",
            ));
        };
        if repository.rsplit('/').next().is_some_and(|last| last.contains(':')) {
            return Err(invalid(text, "a tag beside the digest is ambiguous: give only @sha256:<hex>"));
        }
        check_repository(repository).map_err(|m| invalid(text, m))?;
        let digest = Digest::parse(digest).map_err(|m| invalid(text, m))?;
        Ok(Self { registry: registry.to_owned(), repository: repository.to_owned(), digest })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}@{}", self.registry, self.repository, self.digest)
    }
}

impl Target {
    /// Parses `oci://registry[:port]/repository[:tag]` (no digest: the push computes it).
    pub fn parse(text: &str) -> Result<Self, OciError> {
        let (registry, path) = split(text)?;
        if path.contains('@') {
            return Err(invalid(text, "a push target names a repository (and a tag), not a digest"));
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (path, None),
        };
        check_repository(repository).map_err(|m| invalid(text, m))?;
        if let Some(tag) = tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && tag.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(invalid(text, format!("tag {tag:?} is not [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}")));
            }
        }
        Ok(Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
        })
    }

    /// The reference of the manifest `digest` in this target's repository.
    pub fn at(&self, digest: Digest) -> Reference {
        Reference { registry: self.registry.clone(), repository: self.repository.clone(), digest }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn err(text: &str) -> String {
        Reference::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_digest_reference_parses_and_prints_back() {
        for text in [
            format!("oci://registry.example.com/plugins/servicenow-agent@sha256:{HEX}"),
            format!("oci://127.0.0.1:5000/a/b_c/d.e-f@sha256:{HEX}"),
            format!("oci://[::1]:5000/p@sha256:{HEX}"),
            format!("oci://localhost/p@sha256:{HEX}"),
        ] {
            let r = Reference::parse(&text).unwrap();
            assert_eq!(r.to_string(), text);
            assert_eq!(r.digest.hex(), HEX);
        }
        let r = Reference::parse(&format!("oci://127.0.0.1:5000/a/b@sha256:{HEX}")).unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("127.0.0.1:5000", "a/b"));
    }

    #[test]
    fn tags_and_malformed_references_are_refused() {
        assert!(err("oci://r.io/p:latest").contains("by digest only"), "{}", err("oci://r.io/p:latest"));
        assert!(err("oci://r.io/p").contains("by digest only"));
        assert!(err(&format!("oci://r.io/p:v1@sha256:{HEX}")).contains("tag beside the digest"));
        assert!(err(&format!("https://r.io/p@sha256:{HEX}")).contains("oci://"));
        assert!(err(&format!("oci://r.io@sha256:{HEX}")).contains("no repository"));
        assert!(err(&format!("oci://r.io/P@sha256:{HEX}")).contains("lowercase"));
        assert!(err(&format!("oci://r.io/a//b@sha256:{HEX}")).contains("lowercase"));
        assert!(err(&format!("oci://r.io/../b@sha256:{HEX}")).contains("lowercase"));
        assert!(err(&format!("oci://r.io/p@sha512:{HEX}")).contains("only sha256"));
        assert!(err(&format!("oci://r.io/p@sha256:{}", &HEX[1..])).contains("64 lowercase hex"));
        assert!(err(&format!("oci://r.io/p@sha256:{}", HEX.to_uppercase())).contains("64 lowercase hex"));
        assert!(err(&format!("oci://us er@r.io/p@sha256:{HEX}")).contains("host[:port]"));
        assert!(err(&format!("oci://r.io:0/p@sha256:{HEX}")).contains("invalid port"));
        assert!(err(&format!("oci://r.io:99999/p@sha256:{HEX}")).contains("invalid port"));
        assert!(err(&format!("oci://r.io:x/p@sha256:{HEX}")).contains("invalid port"));
        assert!(err(&format!("oci://[zz]:1/p@sha256:{HEX}")).contains("IPv6"));
    }

    #[test]
    fn push_targets_take_an_optional_tag_but_no_digest() {
        let t = Target::parse("oci://127.0.0.1:5000/plugins/echo:1.0.0").unwrap();
        assert_eq!(
            (t.registry.as_str(), t.repository.as_str(), t.tag.as_deref()),
            ("127.0.0.1:5000", "plugins/echo", Some("1.0.0"))
        );
        let t = Target::parse("oci://127.0.0.1:5000/plugins/echo").unwrap();
        assert_eq!(t.tag, None);
        assert!(Target::parse(&format!("oci://r.io/p@sha256:{HEX}")).is_err());
        assert!(Target::parse("oci://r.io/p:-bad").is_err());
        let d = Digest::of(b"x");
        assert_eq!(t.at(d.clone()).to_string(), format!("oci://127.0.0.1:5000/plugins/echo@{d}"));
    }

    #[test]
    fn digests_hash_and_match() {
        let d = Digest::of(b"hello");
        assert_eq!(d.as_str(), "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert!(d.matches(b"hello"));
        assert!(!d.matches(b"hellO"));
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
    }
}
