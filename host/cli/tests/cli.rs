//! The `delegate` binary as a person runs it: exit codes, one-line errors, plugin checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::{Command, Output};

fn delegate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_delegate")).args(args).env("DELEGATE_LOG", "warn").output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_temp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("delegate-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("delegate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const AUTH: &str = r#"
[auth]
discovery_url = "https://127.0.0.1:1/t/v2.0/.well-known/openid-configuration"
allowed_audiences = ["api"]
allowed_clients = ["app"]
"#;

#[test]
fn version_is_printed() {
    let o = delegate(&["--version"]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("delegate {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_config_is_one_line_naming_the_key_and_exit_2() {
    let plugin = delegate_artifacts::ECHO;
    let cases = [
        (
            "typo",
            format!("[server]\nlisten = \"127.0.0.1:0\"\nmax_conncurrency = 2\n{AUTH}"),
            "unknown field `max_conncurrency`",
        ),
        (
            "range",
            format!("[limits]\ncpu_ms = 0\n{AUTH}[[plugin]]\nname = \"echo\"\ncomponent = \"{plugin}\"\n"),
            "limits.cpu_ms: must be between",
        ),
        (
            "noauth",
            format!("[[plugin]]\nname = \"echo\"\ncomponent = \"{plugin}\"\n"),
            "auth: an [auth] section is required",
        ),
        (
            "missing",
            format!("{AUTH}[[plugin]]\nname = \"echo\"\ncomponent = \"/nope.wasm\"\n"),
            "plugin[0].component: no such file",
        ),
    ];
    for (name, text, expected) in cases {
        let path = write_temp(name, &text);
        for args in [["serve", "--config"], ["config", "check"]] {
            let o = delegate(&[args[0], args[1], path.to_str().unwrap()]);
            assert_eq!(o.status.code(), Some(2), "{name}: {}", stderr(&o));
            let err = stderr(&o);
            assert_eq!(err.lines().count(), 1, "{name}: not one line: {err}");
            assert!(err.contains(expected), "{name}: {err}");
            assert!(err.contains(path.to_str().unwrap()), "{name}: file not named: {err}");
        }
    }
    let o = delegate(&["serve", "--config", "/does/not/exist.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read config file /does/not/exist.toml"));
}

#[test]
fn good_config_check_prints_what_it_resolved() {
    let plugin = delegate_artifacts::ECHO;
    let path = write_temp("good", &format!("{AUTH}[[plugin]]\nname = \"echo\"\ncomponent = \"{plugin}\"\n"));
    let o = delegate(&["config", "check", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("name: \"echo\""), "{out}");
    assert!(out.contains("max_concurrency: 32"), "{out}");
}

#[test]
fn plugin_check_lists_imports_and_exports() {
    let o = delegate(&["plugin", "check", delegate_artifacts::ECHO]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("fits delegate:agent@0.1.0"), "{out}");
    assert!(out.contains("digest:  sha256:"), "{out}");
    assert!(out.contains("delegate:agent/output@0.1.0"), "{out}");
    assert!(out.lines().any(|l| l.trim() == "invoke"), "{out}");
}

#[test]
fn plugin_check_refuses_what_is_not_a_plugin() {
    // Not wasm at all.
    let o = delegate(&["plugin", "check", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a valid wasm component"), "{}", stderr(&o));
    // A core module, not a component.
    let dir = std::env::temp_dir().join(format!("delegate-cli-{}-core", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let o = delegate(&["plugin", "check", core.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    // Missing file: usage error.
    let o = delegate(&["plugin", "check", "/nope.wasm"]);
    assert_eq!(o.status.code(), Some(2));
}
