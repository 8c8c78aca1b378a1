//! [`EgressPolicy::narrowed`]: a plugin's requested rules against the operator's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::*;
use http::{Method, Uri};
use proptest::prelude::*;

fn policy(rules: &str) -> EgressPolicy {
    let config: EgressConfig = toml::from_str(rules).unwrap();
    config.validate().unwrap()
}

fn rule(methods: &str, host: &str, extra: &str) -> String {
    format!("[[rules]]\nmethods = {methods}\nhost = {host:?}\n{extra}\n")
}

/// The operator: ServiceNow tables with the user's token, one extra origin without one.
fn operator() -> EgressPolicy {
    policy(&format!(
        "{}{}{}",
        rule(
            r#"["GET", "PATCH"]"#,
            "sn.example.com",
            "path_prefix = \"/api/now/table\"\ncredential = { provider = \"snow\", scopes = [\"s\"] }"
        ),
        rule(r#"["GET"]"#, "10.0.0.7", "port = 8443\nallow_ip_literal = true"),
        rule(r#"["GET"]"#, "plain.example.com", "scheme = \"http\"\nport = 8080\npath_prefix = \"/api\""),
    ))
}

fn refused(requested: &str) -> NotGrantedReason {
    operator().narrowed(&policy(requested)).unwrap_err().reason
}

fn get(p: &EgressPolicy, method: &str, url: &str) -> Decision {
    p.decide(&Method::from_bytes(method.as_bytes()).unwrap(), &url.parse::<Uri>().unwrap())
}

fn deny_code(d: &Decision) -> &'static str {
    match d {
        Decision::Deny { reason } => reason.code(),
        Decision::Allow { .. } => "allow",
    }
}

#[test]
fn the_first_operator_rule_that_matches_chooses_the_credential() {
    // Rule 0 carves sys_user out without a credential; rule 1 grants /api with snow. A plugin
    // asking for all of /api must not get snow's token on the carved-out path.
    let operator = policy(&format!(
        "{}{}",
        rule(r#"["GET"]"#, "sn.example.com", "path_prefix = \"/api/now/table/sys_user\""),
        rule(
            r#"["GET"]"#,
            "sn.example.com",
            "path_prefix = \"/api\"\ncredential = { provider = \"snow\", scopes = [\"s\"] }"
        ),
    ));
    let requested = policy(&rule(r#"["GET"]"#, "sn.example.com", "path_prefix = \"/api\""));
    let narrowed = operator.narrowed(&requested).unwrap();
    match get(&narrowed, "GET", "https://sn.example.com/api/now/table/sys_user/x") {
        Decision::Allow { rule_index, credential, .. } => {
            assert_eq!(rule_index, 0);
            assert_eq!(credential, None, "sys_user must go out without snow's token");
        }
        d => panic!("{d:?}"),
    }
    match get(&narrowed, "GET", "https://sn.example.com/api/now/table/incident") {
        Decision::Allow { rule_index, credential, .. } => {
            assert_eq!(rule_index, 1);
            assert_eq!(credential.unwrap().provider, "snow");
        }
        d => panic!("{d:?}"),
    }
    assert_eq!(narrowed.credential_providers().collect::<Vec<_>>(), ["snow"]);
}

#[test]
fn covered_requests_are_granted_and_narrowed() {
    let requested =
        policy(&rule(r#"["get"]"#, "SN.example.com.", "path_prefix = \"/api/now/table/incident\""));
    let narrowed = operator().narrowed(&requested).unwrap();
    match get(&narrowed, "GET", "https://sn.example.com/api/now/table/incident/1") {
        Decision::Allow { rule_index: 0, credential: Some(c), .. } => assert_eq!(c.provider, "snow"),
        d => panic!("{d:?}"),
    }
    // The operator grants PATCH and other tables; the plugin asked for neither.
    let d = get(&narrowed, "PATCH", "https://sn.example.com/api/now/table/incident/1");
    assert_eq!(deny_code(&d), "method_not_allowed");
    let d = get(&narrowed, "GET", "https://sn.example.com/api/now/table/sys_user");
    assert_eq!(deny_code(&d), "no_matching_rule");
    let d = get(&narrowed, "GET", "http://plain.example.com:8080/api");
    assert_eq!(deny_code(&d), "no_matching_rule");
    // The operator's providers are still reported, so the config can check them.
    assert_eq!(narrowed.credential_providers().collect::<Vec<_>>(), ["snow"]);

    // Equal rules, an exact prefix, the http origin and the IP literal are all covered.
    let all = format!(
        "{}{}{}",
        rule(r#"["PATCH", "GET"]"#, "sn.example.com", "path_prefix = \"/api/now/table\""),
        rule(r#"["GET"]"#, "10.0.0.7", "port = 8443\nallow_ip_literal = true"),
        rule(r#"["GET"]"#, "plain.example.com", "scheme = \"http\"\nport = 8080\npath_prefix = \"/api/v1/\""),
    );
    let narrowed = operator().narrowed(&policy(&all)).unwrap();
    assert!(matches!(
        get(&narrowed, "GET", "https://10.0.0.7:8443/x"),
        Decision::Allow { rule_index: 1, .. }
    ));
    assert!(matches!(
        get(&narrowed, "GET", "http://plain.example.com:8080/api/v1/x"),
        Decision::Allow { rule_index: 2, credential: None, .. }
    ));
    assert_eq!(deny_code(&get(&narrowed, "GET", "http://plain.example.com:8080/api/v2")), "no_matching_rule");
}

#[test]
fn uncovered_requests_are_refused_with_the_reason() {
    let host = |h: &str| NotGrantedReason::NoRuleForHost { scheme: "https", host: h.into(), port: 443 };
    assert_eq!(refused(&rule(r#"["GET"]"#, "evil.example.com", "")), host("evil.example.com"));
    assert_eq!(
        refused(&rule(r#"["GET"]"#, "sn.example.com", "port = 8443")),
        NotGrantedReason::NoRuleForHost { scheme: "https", host: "sn.example.com".into(), port: 8443 }
    );
    assert_eq!(
        refused(&rule(r#"["GET"]"#, "sn.example.com", "scheme = \"http\"\nport = 443")),
        NotGrantedReason::NoRuleForHost { scheme: "http", host: "sn.example.com".into(), port: 443 }
    );
    assert_eq!(
        refused(&rule(r#"["GET", "DELETE"]"#, "sn.example.com", "path_prefix = \"/api/now/table/x\"")),
        NotGrantedReason::MethodNotGranted(Method::DELETE)
    );
    let outside = |path: &str| NotGrantedReason::PathOutsidePrefixes {
        path: path.into(),
        granted: vec!["/api/now/table".into()],
    };
    assert_eq!(refused(&rule(r#"["GET"]"#, "sn.example.com", "")), outside("/"));
    assert_eq!(
        refused(&rule(r#"["GET"]"#, "sn.example.com", "path_prefix = \"/api/now\"")),
        outside("/api/now")
    );
    assert_eq!(
        refused(&rule(r#"["GET"]"#, "sn.example.com", "path_prefix = \"/api/now/tablex\"")),
        outside("/api/now/tablex")
    );
    // `/api` covers `/api/...` but not `/apix`.
    assert_eq!(
        refused(&rule(
            r#"["GET"]"#,
            "plain.example.com",
            "scheme = \"http\"\nport = 8080\npath_prefix = \"/apix\""
        )),
        NotGrantedReason::PathOutsidePrefixes { path: "/apix".into(), granted: vec!["/api".into()] }
    );
    // An IP literal needs the operator's allow_ip_literal on a rule for that address.
    let no_ip = policy(&rule(r#"["GET"]"#, "sn.example.com", ""));
    let requested = policy(&rule(r#"["GET"]"#, "sn.example.com", "allow_ip_literal = true"));
    assert_eq!(no_ip.narrowed(&requested).unwrap_err().reason, NotGrantedReason::IpLiteralNotGranted);
    assert_eq!(
        refused(&rule(r#"["GET"]"#, "10.0.0.8", "port = 8443\nallow_ip_literal = true")),
        NotGrantedReason::NoRuleForHost { scheme: "https", host: "10.0.0.8".into(), port: 8443 }
    );
    // The error names the first refused rule.
    let two = format!(
        "{}{}",
        rule(r#"["GET"]"#, "10.0.0.7", "port = 8443\nallow_ip_literal = true"),
        rule(r#"["GET"]"#, "x.example.com", "")
    );
    let e = operator().narrowed(&policy(&two)).unwrap_err();
    assert_eq!(e.rule_index, 1);
    assert_eq!(e.to_string(), "requested rule 1: no operator rule for https x.example.com:443");
}

#[test]
fn methods_must_be_granted_by_one_rule() {
    let operator = policy(&format!(
        "{}{}",
        rule(r#"["GET"]"#, "sn.example.com", "path_prefix = \"/api\""),
        rule(r#"["PATCH"]"#, "sn.example.com", "path_prefix = \"/api\""),
    ));
    let requested = policy(&rule(r#"["GET", "PATCH"]"#, "sn.example.com", "path_prefix = \"/api/x\""));
    assert!(matches!(
        operator.narrowed(&requested).unwrap_err().reason,
        NotGrantedReason::MethodNotGranted(_)
    ));
}

#[test]
fn a_requested_credential_is_never_used() {
    let requested = policy(&rule(
        r#"["GET"]"#,
        "plain.example.com",
        "scheme = \"http\"\nport = 8080\npath_prefix = \"/api\"\ncredential = { provider = \"evil\" }",
    ));
    let narrowed = operator().narrowed(&requested).unwrap();
    match get(&narrowed, "GET", "http://plain.example.com:8080/api/a") {
        Decision::Allow { credential, .. } => assert_eq!(credential, None),
        d => panic!("{d:?}"),
    }
    assert_eq!(narrowed.credential_providers().collect::<Vec<_>>(), ["snow"]);
}

#[test]
fn an_empty_request_denies_everything() {
    let narrowed = operator().narrowed(&EgressPolicy::deny_all()).unwrap();
    assert_eq!(
        deny_code(&get(&narrowed, "GET", "https://sn.example.com/api/now/table/incident")),
        "no_matching_rule"
    );
    // Malformed URLs are still refused for what they are.
    assert_eq!(deny_code(&get(&narrowed, "GET", "https://sn.example.com/a/../../b")), "traversal");
}

#[test]
fn narrowing_twice_keeps_both_restrictions() {
    let first =
        policy(&rule(r#"["GET", "PATCH"]"#, "sn.example.com", "path_prefix = \"/api/now/table/incident\""));
    let once = operator().narrowed(&first).unwrap();
    // Wider than the first narrowing: refused against it, though the operator grants it.
    let wider = policy(&rule(r#"["GET"]"#, "sn.example.com", "path_prefix = \"/api/now/table\""));
    assert!(matches!(
        once.narrowed(&wider).unwrap_err().reason,
        NotGrantedReason::PathOutsidePrefixes { .. }
    ));
    let second = policy(&rule(r#"["GET"]"#, "sn.example.com", "path_prefix = \"/api/now/table/incident/1\""));
    let twice = once.narrowed(&second).unwrap();
    assert!(matches!(
        get(&twice, "GET", "https://sn.example.com/api/now/table/incident/1"),
        Decision::Allow { rule_index: 0, .. }
    ));
    assert_eq!(
        deny_code(&get(&twice, "PATCH", "https://sn.example.com/api/now/table/incident/1")),
        "method_not_allowed"
    );
    assert_eq!(
        deny_code(&get(&twice, "GET", "https://sn.example.com/api/now/table/incident/2")),
        "no_matching_rule"
    );
}

/// Operator rules with overlapping prefixes and different credentials, to exercise first match.
fn layered_operator() -> EgressPolicy {
    policy(&format!(
        "{}{}{}",
        rule(r#"["GET"]"#, "h.example.com", "path_prefix = \"/a/b\""),
        rule(
            r#"["GET", "PATCH"]"#,
            "h.example.com",
            "path_prefix = \"/a\"\ncredential = { provider = \"p1\" }"
        ),
        rule(r#"["GET", "POST"]"#, "h.example.com", "credential = { provider = \"p2\" }"),
    ))
}

fn requested_strategy() -> impl Strategy<Value = (Vec<&'static str>, &'static str)> {
    (
        proptest::sample::subsequence(vec!["GET", "PATCH", "POST"], 1..=3),
        proptest::sample::select(vec!["/", "/a", "/a/b", "/a/b/c", "/a/c", "/b", "/ab"]),
    )
}

proptest! {
    /// Whatever was requested and granted: the narrowed policy allows a request exactly when
    /// both policies do, and then decides exactly what the operator's policy decides
    /// (same rule, same credential, same target).
    #[test]
    fn narrowed_is_the_intersection_with_the_operators_credential(
        (methods, prefix) in requested_strategy(),
        method in proptest::sample::select(vec!["GET", "PATCH", "POST", "DELETE"]),
        path in proptest::sample::select(vec!["/", "/a", "/a/", "/a/b", "/a/b/c", "/a/bc", "/a/c/d", "/b", "/ab"]),
    ) {
        let operator = layered_operator();
        let methods = format!("{methods:?}");
        let requested = policy(&rule(&methods, "h.example.com", &format!("path_prefix = {prefix:?}")));
        let Ok(narrowed) = operator.narrowed(&requested) else { return Ok(()) };
        let url = format!("https://h.example.com{path}");
        let by_operator = get(&operator, method, &url);
        let by_request = get(&requested, method, &url);
        let by_narrowed = get(&narrowed, method, &url);
        let both = matches!(by_operator, Decision::Allow { .. }) && matches!(by_request, Decision::Allow { .. });
        prop_assert_eq!(matches!(by_narrowed, Decision::Allow { .. }), both);
        if both {
            prop_assert_eq!(by_narrowed, by_operator);
        }
    }
}
