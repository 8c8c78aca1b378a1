#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::{Config, ConfigError, Manifest, PluginSettings};
use http::{Method, Uri};
use std::path::Path;
use std::time::Duration;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn base() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The ServiceNow agent's manifest, as in docs/plugins.md.
fn manifest_text() -> String {
    format!(
        r#"name = "servicenow-agent"
version = "1.4.0"
description = "Reads and updates the caller's ServiceNow incidents"
component = "servicenow_agent.wasm"
digest = "{DIGEST}"
model_id = "us.anthropic.claude-sonnet-4-20250514-v1:0"

[limits]
cpu_ms = 1500
model_calls = 8

[settings]
page_size = "20"
servicenow_url = "https://example.invalid"

[[egress.rules]]
methods = ["GET", "PATCH"]
host = "dev.service-now.com"
path_prefix = "/api/now/table/incident"
"#
    )
}

fn manifest() -> Manifest {
    Manifest::from_toml(&manifest_text(), Path::new("/opt/plugins/sn")).unwrap()
}

fn manifest_with(edit: impl FnOnce(String) -> String) -> Result<Manifest, ConfigError> {
    Manifest::from_toml(&edit(manifest_text()), Path::new("/opt/plugins/sn"))
}

fn key_of(r: Result<Manifest, ConfigError>) -> String {
    r.unwrap_err().key().map(str::to_owned).unwrap_or_else(|| "<no key>".into())
}

const AUTH: &str = "[auth]\ndiscovery_url = \"https://login.example.com/t/v2.0/.well-known/openid-configuration\"\nallowed_audiences = [\"api\"]\nallowed_clients = [\"app\"]\n";

/// The operator's entry for the ServiceNow agent (the article's rule, plus a second origin).
fn operator_text() -> String {
    format!(
        r#"{AUTH}
[limits]
cpu_ms = 2000

[vault.providers.servicenow]
kind = "entra_obo"
token_endpoint = "https://login.example.com/t/oauth2/v2.0/token"
client_id = "agent"
client_secret = {{ file = "Cargo.toml" }}

[[plugin]]
name = "servicenow-agent"
component = "Cargo.toml"
model_ids = ["us.anthropic.claude-sonnet-4-20250514-v1:0"]

[plugin.limits]
model_calls = 12

[plugin.settings]
servicenow_url = "https://dev.service-now.com"

[[plugin.egress.rules]]
methods = ["GET", "PATCH"]
host = "dev.service-now.com"
path_prefix = "/api/now/table"
credential = {{ provider = "servicenow", scopes = ["api://connector/user_impersonation"] }}

[[plugin.egress.rules]]
methods = ["GET"]
host = "10.1.2.3"
port = 8443
allow_ip_literal = true
"#
    )
}

fn operator() -> PluginSettings {
    Config::from_toml(&operator_text(), base()).unwrap().plugins.remove(0)
}

#[test]
fn a_manifest_parses_into_domain_types() {
    let m = manifest();
    assert_eq!(m.name, "servicenow-agent");
    assert_eq!(m.version, "1.4.0");
    assert_eq!(m.description.as_deref(), Some("Reads and updates the caller's ServiceNow incidents"));
    assert_eq!(m.component.as_deref(), Some(Path::new("/opt/plugins/sn/servicenow_agent.wasm")));
    assert_eq!(m.digest, DIGEST);
    assert_eq!(m.model_id.as_deref(), Some("us.anthropic.claude-sonnet-4-20250514-v1:0"));
    assert_eq!(m.limits.cpu_ms, Some(1500));
    assert_eq!(m.limits.model_calls, Some(8));
    assert_eq!(m.limits.memory_mib, None);
    assert_eq!(m.settings["page_size"], "20");
    assert!(m.egress.credential_providers().next().is_none());
    let d = m
        .egress
        .decide(&Method::PATCH, &"https://dev.service-now.com/api/now/table/incident/1".parse().unwrap());
    assert!(matches!(d, delegate_egress::Decision::Allow { .. }), "{d:?}");

    let minimal =
        Manifest::from_toml(&format!("name = \"a\"\nversion = \"0\"\ndigest = \"{DIGEST}\"\n"), base())
            .unwrap();
    assert_eq!(minimal.component, None);
    assert!(minimal.settings.is_empty());
    assert_eq!(minimal.limits, crate::LimitRequest::default());
}

#[test]
fn the_digest_is_stored_normalised() {
    let upper = format!("SHA256:{}", DIGEST.trim_start_matches("sha256:").to_ascii_uppercase());
    let m = manifest_with(|t| t.replace(DIGEST, &upper)).unwrap();
    assert_eq!(m.digest, DIGEST);
}

#[test]
fn each_invalid_field_names_its_key() {
    let line = |t: String, prefix: &str, with: &str| -> String {
        t.lines()
            .map(|l| if l.starts_with(prefix) { with.to_owned() } else { l.to_owned() })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let cases: Vec<(&str, &str, &str)> = vec![
        ("name =", "name = \"Servicenow Agent\"", "name"),
        ("name =", "", "name"),
        ("version =", "version = \"\"", "version"),
        ("version =", "version = \"-1.0\"", "version"),
        ("version =", "version = \"1.0 beta\"", "version"),
        ("version =", "", "version"),
        ("description =", "description = \"two\\nlines\"", "description"),
        ("component =", "component = \"\"", "component"),
        ("digest =", "digest = \"sha256:abc\"", "digest"),
        (
            "digest =",
            "digest = \"md5:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"",
            "digest",
        ),
        ("digest =", "", "digest"),
        ("model_id =", "model_id = \"two words\"", "model_id"),
        ("cpu_ms =", "cpu_ms = 0", "limits.cpu_ms"),
        ("model_calls =", "model_calls = 10001", "limits.model_calls"),
        ("host =", "host = \"dev.service-now.com/x\"", "egress.rules[0].host"),
        ("methods =", "methods = [\"CONNECT\"]", "egress.rules[0].methods"),
        ("path_prefix =", "path_prefix = \"api\"", "egress.rules[0].path_prefix"),
    ];
    for (prefix, with, key) in cases {
        let r = manifest_with(|t| line(t, prefix, with));
        assert_eq!(key_of(r), key, "{prefix} -> {with}");
    }
    let long = format!("description = \"{}\"", "x".repeat(257));
    assert_eq!(key_of(manifest_with(|t| line(t, "description =", &long))), "description");
    let ok = format!("description = \"{}\"", "é".repeat(256));
    assert!(manifest_with(|t| line(t, "description =", &ok)).is_ok());
    let e = manifest_with(|t| t.replace("[settings]\n", "[settings]\n\"\" = \"x\"\n")).unwrap_err();
    assert_eq!(e.key(), Some("settings"));
    let e = manifest_with(|t| line(t, "version =", "version = \"1.4.0+build_7-rc.1\"")).unwrap();
    assert_eq!(e.version, "1.4.0+build_7-rc.1");
}

#[test]
fn unknown_keys_are_refused() {
    let e = manifest_with(|t| format!("vesion = \"1\"\n{t}")).unwrap_err().to_string();
    assert!(e.starts_with("1:1: unknown field `vesion`"), "{e}");
    let e = manifest_with(|t| t.replace("cpu_ms", "cpu_msec")).unwrap_err().to_string();
    assert!(e.contains("unknown field `cpu_msec`"), "{e}");
    let e = manifest_with(|t| t.replace("path_prefix", "prefix")).unwrap_err().to_string();
    assert!(e.contains("unknown field `prefix`"), "{e}");
}

#[test]
fn a_credential_in_a_manifest_is_refused() {
    for credential in
        ["credential = \"none\"", "credential = { provider = \"servicenow\", scopes = [\"x\"] }"]
    {
        let e = manifest_with(|t| format!("{t}{credential}\n")).unwrap_err();
        assert_eq!(e.key(), Some("egress.rules[0].credential"));
        assert!(e.to_string().contains("credentials are chosen by the operator"), "{e}");
    }
}

#[test]
fn load_attributes_errors_to_the_file() {
    let dir = std::env::temp_dir().join(format!("delegate-manifest-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("plugin.toml");
    std::fs::write(&path, manifest_text()).unwrap();
    let m = Manifest::load(&path).unwrap();
    assert_eq!(m.component, Some(dir.join("servicenow_agent.wasm")));
    std::fs::write(&path, manifest_text().replace("1.4.0", "")).unwrap();
    let e = Manifest::load(&path).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:version: must be 1-64 of [0-9A-Za-z.+_-] starting with a letter or digit, got \"\"",
            path.display()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(Manifest::load(&path), Err(ConfigError::Read { .. })));
}

#[test]
fn the_grant_of_the_servicenow_manifest() {
    let g = operator().grant(&manifest(), Some("default-model")).unwrap();
    assert_eq!(g.version, "1.4.0");
    assert_eq!(g.digest, DIGEST);
    // asked below the operator: the manifest's value
    assert_eq!(g.limits.cpu, Duration::from_millis(1500));
    assert_eq!(g.limits.model_calls, 8);
    // absent: the operator's
    assert_eq!(g.limits.memory_bytes, 64 << 20);
    assert_eq!(g.limits.egress_requests, 64);
    // the operator's settings win, the manifest's fill in
    assert_eq!(g.settings["servicenow_url"], "https://dev.service-now.com");
    assert_eq!(g.settings["page_size"], "20");
    assert_eq!(g.model_id.as_deref(), Some("us.anthropic.claude-sonnet-4-20250514-v1:0"));
    // egress: what was asked, with the operator's credential
    let uri: Uri = "https://dev.service-now.com/api/now/table/incident/1".parse().unwrap();
    match g.egress.decide(&Method::PATCH, &uri) {
        delegate_egress::Decision::Allow { credential, .. } => {
            assert_eq!(credential.unwrap().provider, "servicenow");
        }
        d => panic!("{d:?}"),
    }
    let sys_user: Uri = "https://dev.service-now.com/api/now/table/sys_user".parse().unwrap();
    assert!(matches!(g.egress.decide(&Method::GET, &sys_user), delegate_egress::Decision::Deny { .. }));
    assert_eq!(g.egress.credential_providers().collect::<Vec<_>>(), ["servicenow"]);
}

#[test]
fn limits_above_the_operator_are_refused() {
    let too_much = manifest_with(|t| t.replace("cpu_ms = 1500", "cpu_ms = 5000")).unwrap();
    let e = operator().grant(&too_much, None).unwrap_err();
    assert_eq!(e.to_string(), "limits.cpu_ms: the manifest asks for 5000, the operator grants at most 2000");
    // the per-plugin override is the bound, not the file default (16)
    let calls = manifest_with(|t| t.replace("model_calls = 8", "model_calls = 13")).unwrap();
    let e = operator().grant(&calls, None).unwrap_err();
    assert_eq!(e.to_string(), "limits.model_calls: the manifest asks for 13, the operator grants at most 12");
    // equal is fine
    let equal = manifest_with(|t| t.replace("cpu_ms = 1500", "cpu_ms = 2000\nmemory_mib = 64")).unwrap();
    assert_eq!(operator().grant(&equal, None).unwrap().limits.cpu, Duration::from_secs(2));
    // a hand-built manifest is range-checked too
    let mut zero = manifest();
    zero.limits.cpu_ms = Some(0);
    assert_eq!(operator().grant(&zero, None).unwrap_err().key(), Some("limits.cpu_ms"));
}

#[test]
fn the_name_must_match() {
    let other = manifest_with(|t| t.replace("name = \"servicenow-agent\"", "name = \"other\"")).unwrap();
    assert_eq!(operator().grant(&other, None).unwrap_err().key(), Some("name"));
}

#[test]
fn the_model_allow_list() {
    let ask = |id: Option<&str>| {
        let mut m = manifest();
        m.model_id = id.map(str::to_owned);
        m
    };
    let op = operator();
    // in model_ids
    assert!(op.grant(&ask(Some("us.anthropic.claude-sonnet-4-20250514-v1:0")), None).is_ok());
    // the operator's default model is always allowed
    let g = op.grant(&ask(Some("default-model")), Some("default-model")).unwrap();
    assert_eq!(g.model_id.as_deref(), Some("default-model"));
    // anything else is refused, with the allowed list
    let e = op.grant(&ask(Some("expensive-model")), Some("default-model")).unwrap_err();
    assert_eq!(e.key(), Some("model_id"));
    assert!(e.to_string().contains("default-model, us.anthropic"), "{e}");
    // no choice: the operator's (None = [model].model_id)
    assert_eq!(op.grant(&ask(None), Some("default-model")).unwrap().model_id, None);
    // the plugin's own model_id replaces the default one in the allowed set
    let mut pinned = operator();
    pinned.model_id = Some("pinned".into());
    pinned.model_ids.clear();
    assert_eq!(pinned.grant(&ask(None), Some("default-model")).unwrap().model_id.as_deref(), Some("pinned"));
    assert!(pinned.grant(&ask(Some("pinned")), Some("default-model")).is_ok());
    assert_eq!(
        pinned.grant(&ask(Some("default-model")), Some("default-model")).unwrap_err().key(),
        Some("model_id")
    );
    // nothing configured at all: no model may be chosen
    pinned.model_id = None;
    let e = pinned.grant(&ask(Some("x")), None).unwrap_err();
    assert!(e.to_string().ends_with("the operator allows: none"), "{e}");
}

#[test]
fn egress_must_be_covered_by_an_operator_rule() {
    let rule = |body: &str| {
        manifest_with(|t| {
            let cut = t.find("[[egress.rules]]").unwrap();
            format!("{}[[egress.rules]]\n{body}\n", &t[..cut])
        })
        .unwrap()
    };
    let refused = |body: &str| operator().grant(&rule(body), None).unwrap_err().to_string();
    let granted = |body: &str| operator().grant(&rule(body), None).map(|_| ()).unwrap();

    granted("methods = [\"GET\"]\nhost = \"dev.service-now.com\"\npath_prefix = \"/api/now/table\"");
    granted("methods = [\"patch\"]\nhost = \"DEV.service-now.com\"\npath_prefix = \"/api/now/table/x/\"");
    granted(
        "methods = [\"GET\"]\nhost = \"10.1.2.3\"\nport = 8443\nallow_ip_literal = true\npath_prefix = \"/a\"",
    );

    assert_eq!(
        refused("methods = [\"GET\"]\nhost = \"evil.example.com\""),
        "egress.rules[0]: no operator rule for https evil.example.com:443"
    );
    assert_eq!(
        refused(
            "methods = [\"GET\"]\nhost = \"dev.service-now.com\"\nport = 444\npath_prefix = \"/api/now/table\""
        ),
        "egress.rules[0]: no operator rule for https dev.service-now.com:444"
    );
    assert_eq!(
        refused(
            "methods = [\"GET\"]\nscheme = \"http\"\nport = 443\nhost = \"dev.service-now.com\"\npath_prefix = \"/api/now/table\""
        ),
        "egress.rules[0]: no operator rule for http dev.service-now.com:443"
    );
    assert_eq!(
        refused(
            "methods = [\"GET\", \"DELETE\"]\nhost = \"dev.service-now.com\"\npath_prefix = \"/api/now/table\""
        ),
        "egress.rules[0]: method DELETE is not granted for this path"
    );
    assert_eq!(
        refused("methods = [\"GET\"]\nhost = \"dev.service-now.com\"\npath_prefix = \"/api/now/tablex\""),
        "egress.rules[0]: path /api/now/tablex is outside the granted prefixes /api/now/table"
    );
    assert_eq!(
        refused("methods = [\"GET\"]\nhost = \"dev.service-now.com\""),
        "egress.rules[0]: path / is outside the granted prefixes /api/now/table"
    );
    assert!(
        refused("methods = [\"GET\"]\nhost = \"dev.service-now.com\"\nallow_ip_literal = true\npath_prefix = \"/api/now/table\"")
            .contains("allow_ip_literal is not granted"),
    );
    // The index is the manifest rule's.
    let two = manifest_with(|t| {
        format!("{t}\n[[egress.rules]]\nmethods = [\"GET\"]\nhost = \"dev.service-now.com\"\npath_prefix = \"/api\"\n")
    })
    .unwrap();
    assert_eq!(operator().grant(&two, None).unwrap_err().key(), Some("egress.rules[1]"));
}

#[test]
fn no_egress_in_the_manifest_means_none() {
    let none = manifest_with(|t| t[..t.find("[[egress.rules]]").unwrap()].to_owned()).unwrap();
    let g = operator().grant(&none, None).unwrap();
    let uri: Uri = "https://dev.service-now.com/api/now/table/incident".parse().unwrap();
    assert!(matches!(g.egress.decide(&Method::GET, &uri), delegate_egress::Decision::Deny { .. }));
}

/// The example in docs/plugins.md parses and is granted as the page says.
#[test]
fn the_plugins_md_example_is_granted() {
    let doc = include_str!("../../../docs/plugins.md");
    // The example's blocks: the operator's entry, then the manifest (the author's guide before
    // it has TOML blocks of its own).
    let doc = &doc[doc.find("## An example: the ServiceNow agent").expect("the example section")..];
    let blocks: Vec<&str> = doc.split("```toml\n").skip(1).map(|b| b.split("```").next().unwrap()).collect();
    let fill = |t: &str| t.replace("<instance>", "dev");
    let operator_entry =
        fill(blocks[0]).replace("/opt/delegate/plugins/servicenow-agent/plugin.toml", "Cargo.toml");
    let config = format!(
        "{AUTH}[vault.providers.servicenow]\nkind = \"entra_obo\"\ntoken_endpoint = \"https://login.example.com/t/oauth2/v2.0/token\"\nclient_id = \"agent\"\nclient_secret = {{ file = \"Cargo.toml\" }}\n{operator_entry}"
    );
    let operator = Config::from_toml(&config, base()).unwrap().plugins.remove(0);
    assert!(matches!(operator.source, Some(crate::PluginSource::Manifest(_))));
    let manifest_text = fill(blocks[1])
        .lines()
        .map(|l| if l.starts_with("digest =") { format!("digest = \"{DIGEST}\"") } else { l.to_owned() })
        .collect::<Vec<_>>()
        .join("\n");
    let m = Manifest::from_toml(&manifest_text, base()).unwrap();
    let g = operator.grant(&m, Some("default-model")).unwrap();
    assert_eq!(g.limits.cpu, Duration::from_secs(1));
    assert_eq!(g.settings["max_cycles"], "8");
    assert_eq!(g.settings["servicenow_url"], "https://dev.service-now.com");
    let incident: Uri = "https://dev.service-now.com/api/now/table/incident/1".parse().unwrap();
    match g.egress.decide(&Method::PATCH, &incident) {
        delegate_egress::Decision::Allow { credential, .. } => {
            assert_eq!(credential.unwrap().provider, "servicenow");
        }
        d => panic!("{d:?}"),
    }
    let sys_user: Uri = "https://dev.service-now.com/api/now/table/sys_user".parse().unwrap();
    match g.egress.decide(&Method::GET, &sys_user) {
        delegate_egress::Decision::Deny { reason } => assert_eq!(reason.code(), "no_matching_rule"),
        d => panic!("{d:?}"),
    }
    let mut greedy = m;
    greedy.limits.cpu_ms = Some(5000);
    assert_eq!(
        operator.grant(&greedy, None).unwrap_err().in_file(Path::new("plugin.toml")).to_string(),
        "plugin.toml:limits.cpu_ms: the manifest asks for 5000, the operator grants at most 2000"
    );
}
