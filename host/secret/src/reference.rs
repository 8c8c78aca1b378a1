//! [`SecretRef`]: how a config file names a credential (an environment variable or a file),
//! never the credential itself, so a config file can be shared, reviewed and logged.
//!
//! Every section that takes a credential (`[vault]`, `[oci]`) uses this one type and its one
//! resolve function, so trimming, the refusal of empty secrets and the error wording cannot
//! drift between them.

use crate::Secret;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where a secret comes from: exactly one of `env` or `file`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Name of an environment variable holding the secret.
    #[serde(default)]
    pub env: Option<String>,
    /// A file holding the secret (a trailing newline is ignored).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// A reference that could not be resolved: the dotted key at fault and why. It never holds
/// the secret's value (only a variable's name or a file's path).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SecretRefError {
    /// The reference's key as the caller named it, plus `.env` or `.file` when that part is
    /// at fault, e.g. `providers.sn.client_secret.env`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl SecretRef {
    /// Reads the referenced secret; a relative `file` is taken as is (relative to the
    /// working directory). `key` names the reference in errors.
    pub fn resolve(&self, key: &str) -> Result<Secret, SecretRefError> {
        self.read(key, None)
    }

    /// Reads the referenced secret; a relative `file` is taken relative to `base` (the
    /// config file's directory). `key` names the reference in errors.
    pub fn resolve_relative_to(&self, key: &str, base: &Path) -> Result<Secret, SecretRefError> {
        self.read(key, Some(base))
    }

    fn read(&self, key: &str, base: Option<&Path>) -> Result<Secret, SecretRefError> {
        let error = |key: String, message: String| SecretRefError { key, message };
        let value = match (&self.env, &self.file) {
            (Some(name), None) => std::env::var(name).map_err(|_| {
                error(format!("{key}.env"), format!("environment variable `{name}` is not set or not UTF-8"))
            })?,
            (None, Some(path)) => {
                let path = match base {
                    Some(base) => base.join(path),
                    None => path.clone(),
                };
                std::fs::read_to_string(&path).map_err(|e| {
                    error(format!("{key}.file"), format!("cannot read {}: {}", path.display(), e.kind()))
                })?
            }
            _ => return Err(error(key.to_owned(), "give exactly one of `env` or `file`".to_owned())),
        };
        let secret = Secret::new(value.trim_end_matches(['\r', '\n']));
        // The untrimmed copy goes through a `Secret` too, so it is wiped when dropped.
        drop(Secret::new(value));
        if secret.is_empty() {
            return Err(error(key.to_owned(), "the referenced secret is empty".to_owned()));
        }
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn dir() -> PathBuf {
        // One directory per call: tests run in parallel.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("delegate-secret-ref-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn parse(text: &str) -> SecretRef {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn files_are_trimmed_and_resolved_relative_to_the_base_when_asked() {
        let dir = dir();
        std::fs::write(dir.join("pw"), "s3cret-pw\r\n").unwrap();
        let r = parse("file = \"pw\"");
        assert_eq!(r.resolve_relative_to("k", &dir).unwrap().expose(), "s3cret-pw");
        // Without a base, the same relative path is taken from the working directory.
        let e = r.resolve("k").unwrap_err();
        assert_eq!(e.key, "k.file");
        let absolute = SecretRef { env: None, file: Some(dir.join("pw")) };
        assert_eq!(absolute.resolve("k").unwrap().expose(), "s3cret-pw");
    }

    #[test]
    fn errors_name_the_key_and_never_the_value() {
        let dir = dir();
        std::fs::write(dir.join("empty"), "\n").unwrap();
        let e = parse("file = \"empty\"").resolve_relative_to("a.b", &dir).unwrap_err();
        assert_eq!((e.key.as_str(), e.message.as_str()), ("a.b", "the referenced secret is empty"));
        let e = parse("env = \"DELEGATE_SECRET_REF_TEST_UNSET\"").resolve("a.b").unwrap_err();
        assert_eq!(e.key, "a.b.env");
        assert!(e.to_string().contains("DELEGATE_SECRET_REF_TEST_UNSET"), "{e}");
        let e = parse("env = \"X\"\nfile = \"f\"").resolve("a.b").unwrap_err();
        assert!(e.message.contains("exactly one"), "{e}");
        assert!(SecretRef::default().resolve("a.b").unwrap_err().message.contains("exactly one"));
        std::fs::write(dir.join("pw"), "hunter2-value\n").unwrap();
        let e = parse("file = \"pw\"").resolve("a.b").unwrap_err();
        assert!(!e.to_string().contains("hunter2-value"), "{e}");
    }

    #[test]
    fn literals_and_unknown_keys_are_refused() {
        assert!(toml::from_str::<SecretRef>("value = \"literal\"").is_err());
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct S {
            password: SecretRef,
        }
        assert!(toml::from_str::<S>("password = \"literal\"").is_err());
    }
}
