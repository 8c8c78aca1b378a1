//! `delegate plugin deploy | list | rollback | remove`: clients of the admin API.
//!
//! The admin token is read from a file or the environment, never from the command line
//! (where every user of the machine could read it in the process list).

use crate::Failure;
use base64::Engine as _;
use std::path::{Path, PathBuf};

/// Where the admin API is and how to authenticate.
pub(crate) struct AdminClient {
    /// Base URL, e.g. `http://127.0.0.1:9901`.
    pub url: String,
    /// File holding the admin token (else `DELEGATE_ADMIN_TOKEN`).
    pub token_file: Option<PathBuf>,
}

impl AdminClient {
    /// The admin token, boxed as a [`Secret`](delegate_secret::Secret) (surrounding white
    /// space trimmed).
    fn token(&self) -> Result<delegate_secret::Secret, Failure> {
        let text = match &self.token_file {
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                Failure::usage(format!("cannot read the admin token file {}: {e}", path.display()))
            })?,
            None => std::env::var("DELEGATE_ADMIN_TOKEN").map_err(|_| {
                Failure::usage("no admin token: pass --token-file FILE or set DELEGATE_ADMIN_TOKEN")
            })?,
        };
        let token = delegate_secret::Secret::new(text.trim());
        // The untrimmed copy is wiped too.
        drop(delegate_secret::Secret::new(text));
        Ok(token)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, Failure> {
        let token = self.token()?;
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| Failure::failed(format!("cannot build an HTTP client: {e}")))?;
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let mut request = client.request(method, &url).bearer_auth(token.expose());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failure::failed(format!("cannot reach the admin API at {url}: {e}")))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| Failure::failed(format!("admin API: {e}")))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            return Err(Failure::failed(format!(
                "HTTP {} {}: {}",
                status.as_u16(),
                value["error_type"].as_str().unwrap_or("error"),
                value["error"].as_str().unwrap_or("(no message)")
            )));
        }
        Ok(value)
    }
}

fn block_on<T>(fut: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the async runtime: {e}")))?
        .block_on(fut)
}

fn describe(v: &serde_json::Value) -> String {
    if v.is_null() {
        return "-".to_owned();
    }
    let digest = v["digest"].as_str().unwrap_or("");
    let short = digest.get(..19).unwrap_or(digest);
    format!("{} ({short}…)", v["version"].as_str().unwrap_or("?"))
}

/// A manifest file and the component it names, read for `deploy` and `push`.
struct Loaded {
    /// The manifest's text, as written.
    text: String,
    /// The manifest's directory (its `component` path is relative to it).
    base: PathBuf,
    /// The manifest, parsed and validated.
    manifest: delegate_config::Manifest,
    /// The component's bytes.
    bytes: Vec<u8>,
}

/// Reads the manifest `file` and its component; `verb` says what the component is for in
/// the error when the manifest names none ("upload", "push").
fn load(file: &Path, verb: &str) -> Result<Loaded, Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::usage(format!("cannot read the manifest {}: {e}", file.display())))?;
    let base = file.parent().map_or_else(|| PathBuf::from("."), Path::to_owned);
    let manifest = delegate_config::Manifest::from_toml(&text, &base)
        .map_err(|e| Failure::usage(format!("{}: {e}", file.display())))?;
    let component = manifest.component.as_deref().ok_or_else(|| {
        Failure::usage(format!("{}: the manifest names no `component` file to {verb}", file.display()))
    })?;
    let bytes = std::fs::read(component)
        .map_err(|e| Failure::usage(format!("cannot read the component {}: {e}", component.display())))?;
    Ok(Loaded { text, base, manifest, bytes })
}

/// Deploys the manifest `file` (and the component it names) as plugin `name`.
#[allow(clippy::print_stdout)]
pub(crate) fn deploy(client: &AdminClient, name: &str, file: &Path) -> Result<(), Failure> {
    if file.extension().is_some_and(|e| e == "wasm") {
        return Err(Failure::usage(format!(
            "{} is a component; deploy its manifest (a .toml naming it, its version and digest; see docs/plugins.md)",
            file.display()
        )));
    }
    let Loaded { text, bytes, .. } = load(file, "upload")?;
    let body = serde_json::json!({
        "manifest": text,
        "component": base64::engine::general_purpose::STANDARD.encode(&bytes),
    });
    let answer = block_on(client.send(reqwest::Method::PUT, &format!("/admin/plugins/{name}"), Some(body)))?;
    report_deploy(name, &answer);
    Ok(())
}

/// Deploys the OCI artifact `reference` as plugin `name`: the host pulls and verifies it.
pub(crate) fn deploy_reference(client: &AdminClient, name: &str, reference: &str) -> Result<(), Failure> {
    // Refuse a tag or a typo here, with the same message the host would give.
    delegate_oci::Reference::parse(reference).map_err(|e| Failure::usage(e.to_string()))?;
    let body = serde_json::json!({ "oci": reference });
    let answer = block_on(client.send(reqwest::Method::PUT, &format!("/admin/plugins/{name}"), Some(body)))?;
    report_deploy(name, &answer);
    Ok(())
}

#[allow(clippy::print_stdout)]
fn report_deploy(name: &str, answer: &serde_json::Value) {
    if answer["unchanged"].as_bool() == Some(true) {
        println!("{name}: {} is already active; nothing changed", describe(&answer["active"]));
    } else {
        println!(
            "{name}: {} is active (was {}; {} in {} ms)",
            describe(&answer["active"]),
            describe(&answer["previous"]),
            if answer["active"]["from_cache"].as_bool() == Some(true) {
                "loaded from the cache"
            } else {
                "compiled"
            },
            answer["active"]["load_ms"]
        );
    }
}

/// What `delegate plugin push` was given.
pub(crate) struct PushOptions {
    /// The manifest.
    pub file: PathBuf,
    /// `oci://registry/repository[:tag]`.
    pub target: String,
    /// Plain HTTP (loopback only).
    pub plain_http: bool,
    /// Basic credentials' user name.
    pub username: Option<String>,
    /// The password's file (else `DELEGATE_REGISTRY_PASSWORD`).
    pub password_file: Option<PathBuf>,
    /// A bearer token's file.
    pub token_file: Option<PathBuf>,
    /// Extra CA bundle.
    pub ca_file: Option<PathBuf>,
}

/// Reads the credential file given to `flag` with the config's rules for a `file`
/// reference (trailing newline ignored, empty refused; errors name the flag and the path,
/// never the content).
fn read_secret(path: &Path, flag: &str) -> Result<delegate_secret::Secret, Failure> {
    delegate_secret::SecretRef { env: None, file: Some(path.to_owned()) }
        .resolve(flag)
        .map_err(|e| Failure::usage(format!("{flag}: {}", e.message)))
}

/// Pushes the manifest `file` and its component to `target`; prints the digest reference.
#[allow(clippy::print_stdout)]
pub(crate) fn push(options: &PushOptions) -> Result<(), Failure> {
    let file = &options.file;
    let Loaded { text, base, manifest, bytes } = load(file, "push")?;
    // An artifact whose component does not match its manifest would be refused by every host.
    let actual = delegate_oci::Digest::of(&bytes);
    if actual.as_str() != manifest.digest {
        return Err(Failure::usage(format!(
            "{}: the component's digest is {actual}, the manifest pins {}",
            file.display(),
            manifest.digest
        )));
    }
    // The artifact's plugin.toml must not carry this machine's path to the component: the
    // component is the artifact's wasm layer.
    let portable = without_component_key(&text);
    let check = delegate_config::Manifest::from_toml(&portable, &base)
        .map_err(|e| Failure::failed(format!("{}: {e}", file.display())))?;
    if check.component.is_some() || check.digest != manifest.digest {
        return Err(Failure::usage(format!(
            "{}: write `component` as one top-level `component = \"...\"` line",
            file.display()
        )));
    }
    let target = delegate_oci::Target::parse(&options.target).map_err(|e| Failure::usage(e.to_string()))?;
    let mut config = delegate_oci::OciConfig::default();
    if options.plain_http {
        config.plain_http.push(target.registry.clone());
    }
    let mut settings =
        config.validate(&base).map_err(|e| Failure::usage(format!("--plain-http: {}", e.message)))?;
    let credentials = match (&options.username, &options.token_file) {
        (Some(username), None) => {
            let password = match &options.password_file {
                Some(path) => read_secret(path, "--password-file")?,
                None => std::env::var("DELEGATE_REGISTRY_PASSWORD")
                    .map(delegate_secret::Secret::new)
                    .map_err(|_| {
                        Failure::usage("--username needs --password-file FILE or DELEGATE_REGISTRY_PASSWORD")
                    })?,
            };
            Some(delegate_oci::Credentials::Basic { username: username.clone(), password })
        }
        (None, Some(path)) => Some(delegate_oci::Credentials::Bearer(read_secret(path, "--token-file")?)),
        (None, None) => None,
        (Some(_), Some(_)) => return Err(Failure::usage("give --username or --token-file, not both")),
    };
    if let Some(c) = credentials {
        settings.credentials.insert(target.registry.clone(), c);
    }
    let outbound = delegate_outbound::OutboundConfig {
        extra_ca_pem_files: options.ca_file.iter().cloned().collect(),
        ..delegate_outbound::OutboundConfig::default()
    };
    let http = delegate_outbound::build_client(&outbound).map_err(|e| Failure::usage(e.to_string()))?;
    let client = delegate_oci::RegistryClient::new(http, settings, None);
    // SOURCE_DATE_EPOCH (reproducible builds): the same inputs push the same digest.
    let created = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => {
            v.trim()
                .parse::<u64>()
                .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
                .map_err(|_| Failure::usage(format!("SOURCE_DATE_EPOCH is not a number of seconds: {v:?}")))?
        }
        Err(_) => std::time::SystemTime::now(),
    };
    let reference = block_on(async {
        client.push_at(&target, &bytes, &portable, created).await.map_err(|e| Failure::failed(e.to_string()))
    })?;
    println!("{reference}");
    Ok(())
}

/// Lists the plugins, their versions and where the active one came from (the `oci://`
/// reference it was pulled from, or `-` for an upload or a local file).
#[allow(clippy::print_stdout)]
pub(crate) fn list(client: &AdminClient) -> Result<(), Failure> {
    let answer = block_on(client.send(reqwest::Method::GET, "/admin/plugins", None))?;
    println!("{:<24} {:<8} {:<36} {:<36} SOURCE", "PLUGIN", "DEFAULT", "ACTIVE", "PREVIOUS");
    for p in answer["plugins"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:<8} {:<36} {:<36} {}",
            p["name"].as_str().unwrap_or("?"),
            if p["default"].as_bool() == Some(true) { "yes" } else { "" },
            describe(&p["active"]),
            describe(&p["previous"]),
            p["active"]["source"].as_str().unwrap_or("-")
        );
    }
    Ok(())
}

/// Swaps the active and the previous version of `name`.
#[allow(clippy::print_stdout)]
pub(crate) fn rollback(client: &AdminClient, name: &str) -> Result<(), Failure> {
    let answer =
        block_on(client.send(reqwest::Method::POST, &format!("/admin/plugins/{name}/rollback"), None))?;
    println!("{name}: {} is active (was {})", describe(&answer["active"]), describe(&answer["previous"]));
    Ok(())
}

/// Empties the slot of non-default plugin `name`.
#[allow(clippy::print_stdout)]
pub(crate) fn remove(client: &AdminClient, name: &str) -> Result<(), Failure> {
    let answer = block_on(client.send(reqwest::Method::DELETE, &format!("/admin/plugins/{name}"), None))?;
    println!("{name}: removed {}", describe(&answer["removed"]));
    Ok(())
}

/// `text` without its top-level `component = ...` line.
fn without_component_key(text: &str) -> String {
    let mut in_root = true;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim_start();
        in_root &= !trimmed.starts_with('[');
        let is_component =
            trimmed.strip_prefix("component").is_some_and(|rest| rest.trim_start().starts_with('='));
        if !(in_root && is_component) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    #[test]
    fn the_pushed_manifest_drops_only_the_top_level_component_path() {
        let text = "name = \"echo\"\ncomponent = \"/home/me/echo.wasm\"\ndigest = \"sha256:x\"\n[settings]\ncomponent = \"kept\"\n";
        assert_eq!(
            super::without_component_key(text),
            "name = \"echo\"\ndigest = \"sha256:x\"\n[settings]\ncomponent = \"kept\"\n"
        );
    }
}
