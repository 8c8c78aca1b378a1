//! Fuzzing the config and manifest parsers (proptest, bounded for CI): a valid file with
//! random edits — lines dropped, duplicated or swapped, values replaced by junk, bytes
//! inserted — is either accepted or refused with one line naming what is wrong; it never
//! panics, and a refusal never echoes a secret value from the file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::{Config, Manifest};
use proptest::prelude::*;
use std::path::Path;

/// Proptest cases: `default`, or `PROPTEST_CASES` for a longer run.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const SECRET_VALUE: &str = "s3cr3t-value-that-must-never-be-echoed";

/// A file holding the client secret, so a refusal that echoed file contents would show.
fn secret_file() -> String {
    // One file per test, written once: tests run in parallel.
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("delegate-config-fuzz-secret-{}", std::process::id()));
        std::fs::write(&path, SECRET_VALUE).unwrap();
        path.display().to_string()
    })
    .clone()
}

fn config_text() -> String {
    let secret = secret_file();
    format!(
        r#"[server]
listen = "127.0.0.1:8080"
max_concurrency = 8
max_body_kib = 64

[engine]
epoch_tick_ms = 10

[limits]
cpu_ms = 500
memory_mib = 32

[auth]
discovery_url = "https://login.example/t/v2.0/.well-known/openid-configuration"
allowed_audiences = ["api://a"]
allowed_clients = ["c"]

[vault.providers.sn]
kind = "entra_obo"
token_endpoint = "https://login.example/t/oauth2/v2.0/token"
client_id = "c"
client_secret = {{ file = {secret:?} }}

[admin]
token_env = "DELEGATE_ADMIN_TOKEN"

[[plugin]]
name = "echo"
default = true
component = "Cargo.toml"
model_ids = ["m1"]

[plugin.settings]
greeting = "hi"

[[plugin.egress.rules]]
methods = ["GET"]
host = "sn.example"
path_prefix = "/api/now/table"
credential = {{ provider = "sn", scopes = ["api://sn/.default"] }}
"#
    )
}

const MANIFEST: &str = r#"name = "echo"
version = "1.2.3"
description = "an echo"
component = "echo.wasm"
digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
model_id = "m1"

[limits]
cpu_ms = 100

[settings]
greeting = "hello"

[[egress.rules]]
methods = ["GET"]
host = "sn.example"
path_prefix = "/api/now/table/incident"
"#;

#[derive(Debug, Clone)]
enum Edit {
    Drop(usize),
    Duplicate(usize),
    Swap(usize, usize),
    ReplaceValue(usize, String),
    Insert(usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    let junk = prop_oneof![
        Just("\"".to_owned()),
        Just("[".to_owned()),
        Just("{".to_owned()),
        Just("-1".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("1e308".to_owned()),
        Just("\"\\u0000\"".to_owned()),
        Just("[[]]".to_owned()),
        Just("true".to_owned()),
        Just("\"../../etc/passwd\"".to_owned()),
        Just("\"0.0.0.0:0\"".to_owned()),
        Just("\"\"".to_owned()),
        "\\PC{0,12}",
    ];
    prop_oneof![
        (0..64usize).prop_map(Edit::Drop),
        (0..64usize).prop_map(Edit::Duplicate),
        (0..64usize, 0..64usize).prop_map(|(a, b)| Edit::Swap(a, b)),
        (0..64usize, junk.clone()).prop_map(|(i, j)| Edit::ReplaceValue(i, j)),
        (0..64usize, junk).prop_map(|(i, j)| Edit::Insert(i, j)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for e in edits {
        let n = lines.len().max(1);
        match e {
            Edit::Drop(i) if !lines.is_empty() => {
                lines.remove(i % n);
            }
            Edit::Duplicate(i) if !lines.is_empty() => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Edit::Swap(a, b) if !lines.is_empty() => lines.swap(a % n, b % n),
            Edit::ReplaceValue(i, junk) if !lines.is_empty() => {
                let l = &mut lines[i % n];
                if let Some(eq) = l.find('=') {
                    l.truncate(eq + 1);
                    l.push(' ');
                    l.push_str(junk);
                }
            }
            Edit::Insert(i, junk) => lines.insert(i % (lines.len() + 1), junk.clone()),
            _ => {}
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1500), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn edited_configs_are_accepted_or_refused_in_one_line(edits in proptest::collection::vec(edit(), 1..5)) {
        let text = apply(&config_text(), &edits);
        if let Err(e) = Config::from_toml(&text, Path::new(env!("CARGO_MANIFEST_DIR"))) {
            let msg = e.to_string();
            prop_assert!(!msg.is_empty() && !msg.contains('\n'), "{msg:?}");
            prop_assert!(!msg.contains(SECRET_VALUE), "a refusal echoed the secret: {msg}");
        }
    }

    #[test]
    fn edited_manifests_are_accepted_or_refused_in_one_line(edits in proptest::collection::vec(edit(), 1..5)) {
        let text = apply(MANIFEST, &edits);
        match Manifest::from_toml(&text, Path::new(".")) {
            Ok(m) => {
                // Whatever survived the edits is still a valid manifest.
                prop_assert!(!m.name.is_empty() && !m.version.is_empty());
                prop_assert!(m.digest.starts_with("sha256:") && m.digest.len() == 71, "{}", m.digest);
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(!msg.is_empty() && !msg.contains('\n'), "{msg:?}");
            }
        }
    }
}

#[test]
fn the_unedited_files_are_valid() {
    Config::from_toml(&config_text(), Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    Manifest::from_toml(MANIFEST, Path::new(".")).unwrap();
}
