//! The `[oci]` config section: which registries are plain HTTP, and registry credentials by
//! reference (environment variable or file), never as literals.

use delegate_secret::Secret;
pub use delegate_secret::SecretRef;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `[oci]`, exactly as written.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OciConfig {
    /// Registries (`host[:port]`) reached over plain HTTP instead of HTTPS. Only for loopback
    /// registries in tests and development: anything else needs TLS.
    #[serde(default)]
    pub plain_http: Vec<String>,
    /// Credentials per registry (`host[:port]`).
    #[serde(default)]
    pub registries: BTreeMap<String, RegistryConfig>,
}

/// `[oci.registries."host[:port]"]`: basic (username + password) or a bearer token.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// User name for basic credentials (with `password`); not a secret.
    pub username: Option<String>,
    /// The password, by reference.
    pub password: Option<SecretRef>,
    /// A bearer token (instead of `username`/`password`), by reference.
    pub token: Option<SecretRef>,
}

/// A registry's credentials, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// Basic credentials: sent to the registry, or to its token service (the distribution
    /// token flow) when it answers with a `Bearer` challenge.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// A bearer token sent as is.
    Bearer(Secret),
}

/// `[oci]`, validated: credentials resolved, plain-HTTP registries checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OciSettings {
    /// Registries reached over plain HTTP.
    pub plain_http: BTreeSet<String>,
    /// Credentials per registry.
    pub credentials: BTreeMap<String, Credentials>,
}

/// A setting that failed validation: the dotted key under `oci.` and why (never a secret).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct InvalidSetting {
    /// Key under `oci.`, e.g. `plain_http[0]` or `registries."r.io".password`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> InvalidSetting {
    InvalidSetting { key: key.into(), message: message.into() }
}

/// Whether a registry address is a loopback host.
pub(crate) fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => registry.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Resolves a reference with the shared rules; a relative `file` is relative to the config
/// file's directory.
fn resolve(r: &SecretRef, key: &str, base: &Path) -> Result<Secret, InvalidSetting> {
    r.resolve_relative_to(key, base).map_err(|e| invalid(e.key, e.message))
}

impl OciConfig {
    /// Validates the section; `base` is the config file's directory (for `file` references).
    pub fn validate(self, base: &Path) -> Result<OciSettings, InvalidSetting> {
        let mut plain_http = BTreeSet::new();
        for (i, registry) in self.plain_http.iter().enumerate() {
            let key = format!("plain_http[{i}]");
            crate::reference::check_registry(registry).map_err(|m| invalid(&key, m))?;
            if !is_loopback(registry) {
                return Err(invalid(
                    key,
                    format!(
                        "{registry} is not a loopback address: plain HTTP is only for loopback registries"
                    ),
                ));
            }
            plain_http.insert(registry.clone());
        }
        let mut credentials = BTreeMap::new();
        for (registry, c) in self.registries {
            let key = format!("registries.{registry:?}");
            crate::reference::check_registry(&registry).map_err(|m| invalid(&key, m))?;
            let resolved = match (c.username, c.password, c.token) {
                (Some(username), Some(password), None) if !username.is_empty() && !username.contains(':') => {
                    Credentials::Basic {
                        username,
                        password: resolve(&password, &format!("{key}.password"), base)?,
                    }
                }
                (Some(_), Some(_), None) => {
                    return Err(invalid(format!("{key}.username"), "must be non-empty and contain no `:`"));
                }
                (None, None, Some(token)) => {
                    Credentials::Bearer(resolve(&token, &format!("{key}.token"), base)?)
                }
                _ => {
                    return Err(invalid(key, "give either `username` and `password`, or `token`"));
                }
            };
            credentials.insert(registry, resolved);
        }
        Ok(OciSettings { plain_http, credentials })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn validate(text: &str) -> Result<OciSettings, InvalidSetting> {
        // One directory per call: tests run in parallel.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("delegate-oci-config-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pw"), "s3cret-pw\n").unwrap();
        toml::from_str::<OciConfig>(text).unwrap().validate(&dir)
    }

    #[test]
    fn credentials_are_resolved_from_references() {
        let s = validate(
            "plain_http = [\"127.0.0.1:5000\", \"localhost:1\", \"[::1]:2\"]\n\
             [registries.\"r.io\"]\nusername = \"u\"\npassword = { file = \"pw\" }\n",
        )
        .unwrap();
        assert_eq!(s.plain_http.len(), 3);
        let Some(Credentials::Basic { username, password }) = s.credentials.get("r.io") else { panic!() };
        assert_eq!((username.as_str(), password.expose()), ("u", "s3cret-pw"));
        // Debug output redacts the password.
        assert!(!format!("{s:?}").contains("s3cret-pw"));
    }

    #[test]
    fn bad_settings_name_their_key_and_never_a_secret() {
        let e = validate("plain_http = [\"registry.example.com\"]").unwrap_err();
        assert_eq!(e.key, "plain_http[0]");
        assert!(e.message.contains("loopback"));
        let e = validate("[registries.\"r.io\"]\nusername = \"u\"\n").unwrap_err();
        assert!(e.message.contains("either"), "{e}");
        let e =
            validate("[registries.\"r.io\"]\ntoken = { env = \"DELEGATE_OCI_TEST_UNSET\" }\n").unwrap_err();
        assert_eq!(e.key, "registries.\"r.io\".token.env");
        let e = validate("[registries.\"r.io\"]\ntoken = { env = \"X\", file = \"pw\" }\n").unwrap_err();
        assert!(e.message.contains("exactly one"));
        assert!(toml::from_str::<OciConfig>("[registries.\"r.io\"]\npassword = \"literal\"\n").is_err());
    }
}
