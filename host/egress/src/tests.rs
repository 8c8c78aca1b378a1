#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::*;
use bytes::Bytes;
use delegate_secret::Secret;
use http::{Method, Uri};
use proptest::prelude::*;

const RULES: &str = r#"
[[rules]]
methods = ["get", "POST", "PATCH"]
host = "dev.service-now.com"
path_prefix = "/api/now/table"
credential = { provider = "servicenow", scopes = ["api://sn/.default"] }

[[rules]]
methods = ["GET"]
scheme = "http"
host = "localhost"
port = 8080
path_prefix = "/devstack/"
credential = "none"

[[rules]]
methods = ["GET"]
host = "127.0.0.1"
port = 9443
allow_ip_literal = true

[[rules]]
methods = ["GET"]
host = "Bücher.Example"
"#;

fn policy() -> EgressPolicy {
    let config: EgressConfig = toml::from_str(RULES).unwrap();
    config.validate().unwrap()
}

enum Want {
    Allow(usize, &'static str),
    Deny(&'static str),
}
use Want::{Allow, Deny};

/// The URL-trickery table: each request is either allowed by the expected rule with the
/// expected canonical URL, or denied with the expected reason.
#[test]
fn url_trickery_table() {
    let p = policy();
    let cases: Vec<(&str, &str, Want)> = vec![
        // baseline, query kept verbatim in the forwarded URL
        (
            "GET",
            "https://dev.service-now.com/api/now/table/incident?sysparm_limit=1",
            Allow(0, "https://dev.service-now.com/api/now/table/incident?sysparm_limit=1"),
        ),
        (
            "GET",
            "https://dev.service-now.com/api/now/table",
            Allow(0, "https://dev.service-now.com/api/now/table"),
        ),
        (
            "GET",
            "https://dev.service-now.com/api/now/table/",
            Allow(0, "https://dev.service-now.com/api/now/table/"),
        ),
        // host case and trailing dot fold into the canonical host
        (
            "GET",
            "https://DEV.Service-Now.COM/api/now/table/incident",
            Allow(0, "https://dev.service-now.com/api/now/table/incident"),
        ),
        (
            "GET",
            "https://dev.service-now.com./api/now/table/incident",
            Allow(0, "https://dev.service-now.com/api/now/table/incident"),
        ),
        ("GET", "https://dev.service-now.com.evil.example/api/now/table/incident", Deny("no_matching_rule")),
        ("GET", "https://evil.example/api/now/table/incident", Deny("no_matching_rule")),
        // default port explicit is the same origin; another port is not
        (
            "GET",
            "https://dev.service-now.com:443/api/now/table/incident",
            Allow(0, "https://dev.service-now.com/api/now/table/incident"),
        ),
        ("GET", "https://dev.service-now.com:8443/api/now/table/incident", Deny("no_matching_rule")),
        // scheme downgrade and foreign schemes
        ("GET", "http://dev.service-now.com/api/now/table/incident", Deny("no_matching_rule")),
        ("GET", "http://dev.service-now.com:443/api/now/table/incident", Deny("no_matching_rule")),
        ("GET", "ftp://dev.service-now.com/api/now/table/incident", Deny("unsupported_scheme")),
        // userinfo, including the classic "allowed host as username" trick
        ("GET", "https://user:pw@dev.service-now.com/api/now/table/incident", Deny("userinfo")),
        ("GET", "https://dev.service-now.com@evil.example/api/now/table/incident", Deny("userinfo")),
        // dot segments: resolved, then matched
        (
            "GET",
            "https://dev.service-now.com/api/now/table/x/../incident",
            Allow(0, "https://dev.service-now.com/api/now/table/incident"),
        ),
        (
            "GET",
            "https://dev.service-now.com/api/now/table/x/%2e%2E/incident",
            Allow(0, "https://dev.service-now.com/api/now/table/incident"),
        ),
        (
            "GET",
            "https://dev.service-now.com/api/now/table/./incident",
            Allow(0, "https://dev.service-now.com/api/now/table/incident"),
        ),
        ("GET", "https://dev.service-now.com/api/now/table/../../../admin", Deny("no_matching_rule")),
        (
            "GET",
            "https://dev.service-now.com/api/now/table/%2e%2e/%2e%2e/%2e%2e/admin",
            Deny("no_matching_rule"),
        ),
        ("GET", "https://dev.service-now.com/../api/now/table/incident", Deny("traversal")),
        ("GET", "https://dev.service-now.com/api/now/table/..;/sys_user", Deny("traversal")),
        // encoded slashes / backslashes, double encoding, malformed escapes, double slash
        ("GET", "https://dev.service-now.com/api/now/table%2Fincident", Deny("encoded_slash")),
        ("GET", "https://dev.service-now.com/api/now/table/x%2f..%2f..%2fadmin", Deny("encoded_slash")),
        ("GET", "https://dev.service-now.com/api/now/table/x%5C..%5Cadmin", Deny("encoded_slash")),
        ("GET", "https://dev.service-now.com/api/now/table/%252e%252e/x", Deny("double_encoding")),
        ("GET", "https://dev.service-now.com/api/now/table/%zz", Deny("malformed_escape")),
        ("GET", "https://dev.service-now.com/api/now/table/%2", Deny("malformed_escape")),
        ("GET", "https://dev.service-now.com/api/now//table/incident", Deny("empty_segment")),
        ("GET", "https://dev.service-now.com/api/now/table//incident", Deny("empty_segment")),
        // percent-decoded then canonically re-encoded path
        (
            "GET",
            "https://dev.service-now.com/api/now/table/inc%69dent",
            Allow(0, "https://dev.service-now.com/api/now/table/incident"),
        ),
        (
            "GET",
            "https://dev.service-now.com/api/now/table/a%20b",
            Allow(0, "https://dev.service-now.com/api/now/table/a%20b"),
        ),
        // path-prefix boundary
        ("GET", "https://dev.service-now.com/api/now/table-x/incident", Deny("no_matching_rule")),
        ("GET", "https://dev.service-now.com/api/now/tablex", Deny("no_matching_rule")),
        ("GET", "https://dev.service-now.com/api/now", Deny("no_matching_rule")),
        // method allow-list
        ("DELETE", "https://dev.service-now.com/api/now/table/incident/1", Deny("method_not_allowed")),
        ("PUT", "https://dev.service-now.com/api/now/table/incident/1", Deny("method_not_allowed")),
        (
            "PATCH",
            "https://dev.service-now.com/api/now/table/incident/1",
            Allow(0, "https://dev.service-now.com/api/now/table/incident/1"),
        ),
        // IP literals: refused unless a rule allows that address; every IPv4 spelling folds
        ("GET", "https://10.0.0.1/api/now/table/incident", Deny("ip_literal")),
        ("GET", "https://[::1]/", Deny("ip_literal")),
        ("GET", "https://0x0a.0.0.1/", Deny("ip_literal")),
        ("GET", "https://0x7f.0.0.1/", Deny("no_matching_rule")),
        ("GET", "https://0x7f.1:9443/x", Allow(2, "https://127.0.0.1:9443/x")),
        ("GET", "https://127.0.0.1:9443/anything", Allow(2, "https://127.0.0.1:9443/anything")),
        ("GET", "https://2130706433:9443/anything", Allow(2, "https://127.0.0.1:9443/anything")),
        ("GET", "https://0177.0.0.1:9443/anything", Allow(2, "https://127.0.0.1:9443/anything")),
        ("GET", "https://127.0.0.1:9444/anything", Deny("no_matching_rule")),
        // IDN: the rule is written in Unicode, requests arrive in punycode (any case)
        ("GET", "https://xn--bcher-kva.example/", Allow(3, "https://xn--bcher-kva.example/")),
        ("GET", "https://XN--BCHER-KVA.example/", Allow(3, "https://xn--bcher-kva.example/")),
        ("GET", "https://bucher.example/", Deny("no_matching_rule")),
        // the explicit-http rule: http only, its port only, its prefix boundary
        ("GET", "http://localhost:8080/devstack/x", Allow(1, "http://localhost:8080/devstack/x")),
        ("GET", "https://localhost:8080/devstack/x", Deny("no_matching_rule")),
        ("GET", "http://localhost/devstack/x", Deny("no_matching_rule")),
        ("GET", "http://localhost:8080/devstack", Deny("no_matching_rule")),
        ("GET", "http://localhost:8080/devstackx", Deny("no_matching_rule")),
        // a redirect the guest follows is a new request, checked again
        ("GET", "https://login.evil.example/redirected?to=dev.service-now.com", Deny("no_matching_rule")),
    ];
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for (method, url, want) in &cases {
        let uri: Uri = url.parse().unwrap_or_else(|e| panic!("{url}: {e}"));
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let got = p.decide(&method, &uri);
        let ok = match (&got, want) {
            (Decision::Allow { rule_index, target, .. }, Allow(i, canon)) => {
                rule_index == i && target.uri == *canon
            }
            (Decision::Deny { reason }, Deny(code)) => reason.code() == *code,
            _ => false,
        };
        if !ok {
            failures.push(format!("{method} {url}: got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn allowed_request_carries_the_rules_credential() {
    let p = policy();
    let uri: Uri = "https://dev.service-now.com/api/now/table/incident".parse().unwrap();
    let Decision::Allow { credential, target, .. } = p.decide(&Method::GET, &uri) else { panic!() };
    assert_eq!(
        credential,
        Some(CredentialRef { provider: "servicenow".into(), scopes: vec!["api://sn/.default".into()] })
    );
    assert_eq!(target.path, "/api/now/table/incident");
    assert_eq!(target.port, 443);
    let uri: Uri = "http://localhost:8080/devstack/x".parse().unwrap();
    let Decision::Allow { credential, .. } = p.decide(&Method::GET, &uri) else { panic!() };
    assert_eq!(credential, None);
    assert_eq!(p.credential_providers().collect::<Vec<_>>(), ["servicenow"]);
}

#[test]
fn empty_policy_denies_everything() {
    let p = EgressConfig::default().validate().unwrap();
    let uri: Uri = "https://dev.service-now.com/".parse().unwrap();
    assert_eq!(p.decide(&Method::GET, &uri), Decision::Deny { reason: DenyReason::NoMatchingRule });
    assert_eq!(
        EgressPolicy::deny_all().decide(&Method::GET, &uri),
        Decision::Deny { reason: DenyReason::NoMatchingRule }
    );
}

#[test]
fn guest_set_credential_and_host_headers_are_refused() {
    let p = policy();
    let url = "https://dev.service-now.com/api/now/table/incident";
    let request = |name: &str, value: &str| {
        http::Request::builder().method("GET").uri(url).header(name, value).body(()).unwrap()
    };
    for (name, value, want) in [
        ("authorization", "Bearer stolen", "authorization"),
        ("Authorization", "Basic dXNlcjpwYXNz", "authorization"),
        ("proxy-authorization", "Basic x", "proxy-authorization"),
        ("cookie", "JSESSIONID=abc", "cookie"),
        ("host", "evil.example", "host"),
        ("host", "DEV.service-now.com", "host"),
    ] {
        let got = p.decide_request(&request(name, value));
        assert_eq!(got, Decision::Deny { reason: DenyReason::ForbiddenHeader(want) }, "{name}: {value}");
        let Decision::Deny { reason } = got else { panic!() };
        assert!(reason.to_string().contains(want));
        assert!(!reason.to_string().contains(value));
    }
    // The Host header wasi:http itself adds (exactly the authority) is fine, once.
    let ok = request("host", "dev.service-now.com");
    assert!(matches!(p.decide_request(&ok), Decision::Allow { .. }));
    let twice = http::Request::builder()
        .uri(url)
        .header("host", "dev.service-now.com")
        .header("host", "dev.service-now.com")
        .body(())
        .unwrap();
    assert_eq!(p.decide_request(&twice), Decision::Deny { reason: DenyReason::ForbiddenHeader("host") });
    // Other headers pass.
    assert!(matches!(p.decide_request(&request("accept", "application/json")), Decision::Allow { .. }));
}

#[test]
fn config_rejects_mistakes_with_the_key() {
    let bad = |toml_src: &str| -> InvalidSetting {
        let config: EgressConfig = toml::from_str(toml_src).unwrap();
        config.validate().unwrap_err()
    };
    let e = bad("[[rules]]\nmethods = []\nhost = \"a.example\"");
    assert_eq!(e.key, "rules[0].methods");
    let e = bad("[[rules]]\nmethods = [\"GE T\"]\nhost = \"a.example\"");
    assert_eq!(e.key, "rules[0].methods");
    let e = bad("[[rules]]\nmethods = [\"CONNECT\"]\nhost = \"a.example\"");
    assert_eq!(e.key, "rules[0].methods");
    let e = bad("[[rules]]\nmethods = [\"GET\"]\nhost = \"a.example\"\nscheme = \"ftp\"");
    assert_eq!(e.key, "rules[0].scheme");
    let e = bad("[[rules]]\nmethods = [\"GET\"]\nhost = \"10.1.2.3\"");
    assert_eq!(e.key, "rules[0].host");
    let e = bad("[[rules]]\nmethods = [\"GET\"]\nhost = \"a.example:443\"");
    assert_eq!(e.key, "rules[0].host");
    let e = bad("[[rules]]\nmethods = [\"GET\"]\nhost = \"user@a.example\"");
    assert_eq!(e.key, "rules[0].host");
    let e = bad("[[rules]]\nmethods = [\"GET\"]\nhost = \"a.example\"\npath_prefix = \"api\"");
    assert_eq!(e.key, "rules[0].path_prefix");
    let e = bad("[[rules]]\nmethods = [\"GET\"]\nhost = \"a.example\"\npath_prefix = \"/a/%2F\"");
    assert_eq!(e.key, "rules[0].path_prefix");
    let e = bad("[[rules]]\nmethods = [\"GET\"]\nhost = \"a.example\"\nport = 0");
    assert_eq!(e.key, "rules[0].port");
    let e = bad("[[rules]]\nmethods = [\"GET\"]\nhost = \"a.example\"\ncredential = \"nope\"");
    assert_eq!(e.key, "rules[0].credential");
    let e = bad(
        "[[rules]]\nmethods = [\"GET\"]\nhost = \"a.example\"\ncredential = { provider = \"p\", scopes = [\"a b\"] }",
    );
    assert_eq!(e.key, "rules[0].credential.scopes");
    assert!(e.to_string().contains("rules[0].credential.scopes"));
    // Unknown keys fail at parse time (typos are errors, not defaults).
    assert!(
        toml::from_str::<EgressConfig>("[[rules]]\nmethods = [\"GET\"]\nhost = \"a.example\"\npath = \"/\"")
            .is_err()
    );
    assert!(
        toml::from_str::<EgressConfig>(
            "[[rules]]\nmethods = [\"GET\"]\nhost = \"a\"\ncredential = { provider = \"p\", scope = [] }"
        )
        .is_err()
    );
    assert!(toml::from_str::<EgressConfig>("rule = []").is_err());
}

#[test]
fn configured_prefix_is_normalised() {
    let config: EgressConfig = toml::from_str(
        "[[rules]]\nmethods = [\"GET\"]\nhost = \"a.example\"\npath_prefix = \"/api/x/../now/\"",
    )
    .unwrap();
    let p = config.validate().unwrap();
    let allowed: Uri = "https://a.example/api/now/table".parse().unwrap();
    let denied: Uri = "https://a.example/api/x/table".parse().unwrap();
    assert!(matches!(p.decide(&Method::GET, &allowed), Decision::Allow { .. }));
    assert!(matches!(p.decide(&Method::GET, &denied), Decision::Deny { .. }));
}

// ---- scrubbing ----

fn scrub_stream(secrets: &[&Secret], chunks: &[&[u8]]) -> Vec<u8> {
    let mut s = Scrubber::new(secrets);
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(&s.push(c));
    }
    out.extend_from_slice(&s.finish());
    out
}

#[test]
fn secret_split_at_every_boundary_is_redacted() {
    let token = Secret::new("eyJ0eXAiOiJKV1QifQ.payload.signature");
    let body = format!("{{\"echo\":\"Bearer {}\",\"n\":1}}", token.expose());
    let want = "{\"echo\":\"Bearer [redacted]\",\"n\":1}";
    for cut in 0..=body.len() {
        let (a, b) = body.as_bytes().split_at(cut);
        assert_eq!(String::from_utf8(scrub_stream(&[&token], &[a, b])).unwrap(), want, "cut at {cut}");
    }
    // One byte at a time.
    let bytes: Vec<&[u8]> = body.as_bytes().chunks(1).collect();
    assert_eq!(String::from_utf8(scrub_stream(&[&token], &bytes)).unwrap(), want);
}

#[test]
fn only_a_possible_secret_start_is_held_back() {
    let token = Secret::new("eyJ0eXAiOiJKV1QifQ.payload.signature");
    let mut s = Scrubber::new(&[&token]);
    // A streamed event that cannot begin the secret passes at once, whole.
    assert_eq!(&s.push(b"data: \"hello\"\n\n")[..], b"data: \"hello\"\n\n");
    // A chunk ending in what may be the secret's start keeps exactly that part back ...
    assert_eq!(&s.push(b"data: \"ey")[..], b"data: \"");
    // ... and releases it once the next chunk shows it is not the secret.
    assert_eq!(&s.push(b"es\"\n\n")[..], b"eyes\"\n\n");
    // Split inside the secret: redacted, never released in part.
    assert_eq!(&s.push(b"x eyJ0eXAiOiJKV1Qi")[..], b"x ");
    assert_eq!(&s.push(b"fQ.payload.signature!")[..], b"[redacted]!");
    assert!(s.finish().is_empty());
}

#[test]
fn several_secrets_and_partial_matches() {
    let a = Secret::new("token-A-value");
    let b = Secret::new("token-B-longer-value");
    let c = Secret::new("client~secret");
    let body = b"token-A-valu token-A-value|token-B-longer-value|client~secret|token-B-longer-valu";
    let out = scrub_stream(&[&a, &b, &c], &[&body[..5], &body[5..30], &body[30..]]);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "token-A-valu [redacted]|[redacted]|[redacted]|token-B-longer-valu"
    );
    // No secrets: a pass-through.
    assert_eq!(scrub_stream(&[], &[b"abc", b"def"]), b"abcdef");
    let empty = Secret::new("");
    assert_eq!(scrub_stream(&[&empty], &[b"abc"]), b"abc");
}

#[test]
fn headers_are_scrubbed() {
    let t = Secret::new("eyJhbGciOi.abc.def");
    let mut headers = http::HeaderMap::new();
    headers.insert("x-echo-authorization", format!("Bearer {}", t.expose()).parse().unwrap());
    headers.insert(
        "www-authenticate",
        format!("Bearer error=\"invalid_token\" token={}", t.expose()).parse().unwrap(),
    );
    headers.insert("content-type", "application/json".parse().unwrap());
    Scrubber::new(&[&t]).scrub_headers(&mut headers);
    assert_eq!(headers["x-echo-authorization"], "Bearer [redacted]");
    assert_eq!(headers["www-authenticate"], "Bearer error=\"invalid_token\" token=[redacted]");
    assert_eq!(headers["content-type"], "application/json");
}

/// A body made of fixed frames, to drive [`ScrubbedBody`].
struct Frames(std::collections::VecDeque<http_body::Frame<Bytes>>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}

#[tokio::test]
async fn scrubbed_body_redacts_across_frames_and_trailers() {
    use http_body_util::BodyExt;
    let t = Secret::new("SECRET-TOKEN-123");
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-trailer", "has SECRET-TOKEN-123 inside".parse().unwrap());
    let frames = Frames(
        vec![
            http_body::Frame::data(Bytes::from_static(b"start SECRET-TO")),
            http_body::Frame::data(Bytes::from_static(b"KEN-123 middle SECRET-TOKEN-12")),
            http_body::Frame::data(Bytes::from_static(b"3")),
            http_body::Frame::trailers(trailers),
        ]
        .into(),
    );
    let collected = ScrubbedBody::new(frames, Scrubber::new(&[&t])).collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap();
    assert_eq!(trailers["x-trailer"], "has [redacted] inside");
    assert_eq!(&collected.to_bytes()[..], b"start [redacted] middle [redacted]");
}

/// Reference implementation: leftmost match, longest secret first, on the whole input.
fn oracle(secrets: &[Vec<u8>], data: &[u8]) -> Vec<u8> {
    let mut sorted: Vec<&Vec<u8>> = secrets.iter().filter(|s| !s.is_empty()).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        if let Some(s) = sorted.iter().find(|s| data[i..].starts_with(s)) {
            out.extend_from_slice(REDACTED);
            i += s.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any chunking of any body gives the same output as scrubbing it whole, and no secret
    /// survives. Secrets use characters the marker does not contain, so "survives" is exact.
    #[test]
    fn chunking_never_leaks(
        secrets in proptest::collection::vec(proptest::collection::vec(prop::sample::select(b"xyz01".to_vec()), 1..24), 1..4),
        pieces in proptest::collection::vec((0usize..4, proptest::collection::vec(prop::sample::select(b"xyz01 ab".to_vec()), 0..12)), 0..20),
        cuts in proptest::collection::vec(0usize..400, 0..12),
    ) {
        // Body: random filler interleaved with whole secrets and their prefixes.
        let mut body = Vec::new();
        for (k, filler) in &pieces {
            body.extend_from_slice(filler);
            if let Some(s) = secrets.get(*k) {
                if k % 2 == 0 { body.extend_from_slice(s) } else { body.extend_from_slice(&s[..s.len() / 2 + 1]) }
            }
        }
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (body.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut prev = 0;
        for c in cuts {
            chunks.push(&body[prev..c]);
            prev = c;
        }
        chunks.push(&body[prev..]);

        let owned: Vec<Secret> = secrets.iter().map(|s| Secret::new(String::from_utf8(s.clone()).unwrap())).collect();
        let refs: Vec<&Secret> = owned.iter().collect();
        let streamed = scrub_stream(&refs, &chunks);
        prop_assert_eq!(&streamed, &oracle(&secrets, &body));
        for s in &secrets {
            prop_assert!(!streamed.windows(s.len()).any(|w| w == &s[..]), "secret survived");
        }
    }
}

// ---- audit ----

#[test]
fn audit_record_never_contains_query_or_headers() {
    let token = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0.sig";
    let ctx = AuditContext {
        invocation_id: "inv-1".into(),
        trace: None,
        caller_subject: "oid-jane".into(),
        caller_username: Some("jane@contoso.example".into()),
        plugin: "servicenow-agent".into(),
        plugin_digest: "sha256:abcd".into(),
        plugin_version: "1.0.0".into(),
    };
    let p = policy();
    let dir = std::env::temp_dir().join(format!("egress-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.jsonl");
    let _ = std::fs::remove_file(&path);
    let sink = AuditSink::file(&path).unwrap();

    // Allowed: the token in the query (and in a header the record never sees).
    let uri: Uri = format!(
        "https://dev.service-now.com/api/now/table/incident?access_token={token}&sysparm_query=caller%3Djane"
    )
    .parse()
    .unwrap();
    let request = http::Request::builder().uri(uri).header("x-token", token).body(()).unwrap();
    let decision = p.decide_request(&request);
    let mut record = AuditRecord::new(&ctx, request.method(), request.uri(), &decision);
    record.cache = Some(CacheOutcome::Hit);
    record.finish(Some(200), 0, 1234, std::time::Duration::from_millis(12));
    sink.write(&record).unwrap();

    // Denied: a token in the query of a URL no rule allows.
    let uri: Uri = format!("https://evil.example/steal?t={token}").parse().unwrap();
    let decision = p.decide(&Method::GET, &uri);
    sink.write(&AuditRecord::new(&ctx, &Method::GET, &uri, &decision)).unwrap();
    drop(sink);

    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!text.contains(token), "{text}");
    assert!(!text.contains("sysparm_query"), "{text}");
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["decision"], "allowed");
    assert_eq!(lines[0]["provider"], "servicenow");
    assert_eq!(lines[0]["cache"], "hit");
    assert_eq!(lines[0]["host"], "dev.service-now.com");
    assert_eq!(lines[0]["path"], "/api/now/table/incident");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["response_bytes"], 1234);
    assert_eq!(lines[0]["caller_subject"], "oid-jane");
    assert_eq!(lines[0]["caller_username"], "jane@contoso.example");
    assert_eq!(lines[0]["plugin_digest"], "sha256:abcd");
    assert_eq!(lines[1]["decision"], "denied");
    assert_eq!(lines[1]["reason"], "no_matching_rule");
    assert_eq!(lines[1]["path"], "/steal");
    assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
}

// ---- budget ----

#[test]
fn budget_caps_are_exact_under_concurrency() {
    let budget = std::sync::Arc::new(EgressBudget::new(EgressLimits {
        max_requests: 10,
        max_request_bytes: 100,
        max_response_bytes: 1000,
        request_timeout: std::time::Duration::from_secs(1),
    }));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let b = budget.clone();
            std::thread::spawn(move || (0..10).filter(|_| b.begin_request().is_ok()).count())
        })
        .collect();
    let granted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(granted, 10);
    assert_eq!(budget.begin_request(), Err(BudgetExceeded::Requests(10)));
    assert_eq!(budget.requests(), 10);

    budget.add_request_bytes(60).unwrap();
    assert_eq!(budget.add_request_bytes(41), Err(BudgetExceeded::RequestBytes(100)));
    budget.add_request_bytes(40).unwrap();
    assert_eq!(budget.request_bytes(), 100);
    budget.add_response_bytes(1000).unwrap();
    assert_eq!(budget.add_response_bytes(1).unwrap_err().code(), "response_bytes_limit");
    assert_eq!(budget.add_response_bytes(u64::MAX), Err(BudgetExceeded::ResponseBytes(1000)));
}

/// Proptest cases: `default`, or `PROPTEST_CASES` for a longer run.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A URL piece drawn from the tricks the table above covers one by one.
fn url_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("api".to_owned()),
        Just("now".to_owned()),
        Just("table".to_owned()),
        Just("incident".to_owned()),
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("%2e%2e".to_owned()),
        Just("%2E".to_owned()),
        Just("%2f".to_owned()),
        Just("%5c".to_owned()),
        Just("\\".to_owned()),
        Just("".to_owned()),
        Just("%00".to_owned()),
        Just("%25".to_owned()),
        Just("%".to_owned()),
        Just(";x=1".to_owned()),
        Just("é".to_owned()),
        "[a-z0-9%._~-]{1,6}",
    ]
}

fn host_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("dev.service-now.com".to_owned()),
        Just("DEV.service-now.com.".to_owned()),
        Just("dev.service-now.com.evil.example".to_owned()),
        Just("evil.example".to_owned()),
        Just("user@dev.service-now.com".to_owned()),
        Just("dev.service-now.com:443".to_owned()),
        Just("dev.service-now.com:8443".to_owned()),
        Just("127.0.0.1:9443".to_owned()),
        Just("0x7f.1:9443".to_owned()),
        Just("[::1]:9443".to_owned()),
        Just("localhost:8080".to_owned()),
        Just("xn--bcher-kva.example".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2000), failure_persistence: None, ..ProptestConfig::default() })]

    /// Fuzzing the URL normaliser and matcher: whatever the URL, an allowed request's
    /// canonical target lies inside the rule that allowed it (scheme, host, port, prefix at a
    /// `/` boundary), has no dot segments, empty segments or encoded separators left, and is a
    /// fixed point: deciding the canonical URL again gives the same rule and the same URL.
    #[test]
    fn allowed_targets_stay_inside_their_rule_and_are_fixed_points(
        scheme in prop_oneof![Just("https"), Just("http"), Just("HTTPS"), Just("ftp")],
        host in host_piece(),
        // Often start inside a rule's prefix, so the tricks get a chance to climb out of it.
        start in prop_oneof![Just(""), Just("api/now/table/"), Just("devstack/"), Just("api/now/tablex/")],
        pieces in proptest::collection::vec(url_piece(), 0..8),
        query in proptest::option::of("[a-z=&%]{0,12}"),
        method in prop_oneof![Just(Method::GET), Just(Method::POST), Just(Method::DELETE)],
    ) {
        let p = policy();
        let mut url = format!("{scheme}://{host}/{start}{}", pieces.join("/"));
        if let Some(q) = &query {
            url.push('?');
            url.push_str(q);
        }
        let Ok(uri) = url.parse::<Uri>() else { return Ok(()) };
        if let Decision::Allow { rule_index, target, .. } = p.decide(&method, &uri) {
            let rule = &p.rules[rule_index];
            prop_assert_eq!(target.https, rule.https);
            prop_assert_eq!(target.port, rule.port);
            prop_assert_eq!(target.host.as_str(), rule.host.as_str());
            prop_assert!(crate::url::prefix_matches(&rule.path_prefix, &target.path), "{} vs {}", target.path, rule.path_prefix);
            prop_assert!(rule.methods.contains(&method));
            let segments: Vec<&str> = target.path.split('/').skip(1).collect();
            prop_assert!(segments.iter().all(|s| *s != "." && *s != ".."), "{}", target.path);
            prop_assert!(!target.path.contains("//") && !target.path.contains('\\'), "{}", target.path);
            let lower = target.path.to_ascii_lowercase();
            prop_assert!(!lower.contains("%2f") && !lower.contains("%5c") && !lower.contains("%2e"), "{}", target.path);
            match p.decide(&method, &target.uri) {
                Decision::Allow { rule_index: again, target: t2, .. } => {
                    prop_assert_eq!(again, rule_index);
                    prop_assert_eq!(t2.uri.to_string(), target.uri.to_string());
                }
                Decision::Deny { reason } => prop_assert!(false, "{} re-decided as {:?}", target.uri, reason),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// However a body with secrets (and near-misses of them) is cut into chunks, the streamed
    /// result equals scrubbing the whole body at once: no secret byte run survives and nothing
    /// else changes.
    #[test]
    fn streamed_scrubbing_equals_scrubbing_the_whole(
        parts in proptest::collection::vec(
            prop_oneof![
                Just(b"eyJhbGciOi.secret-token.sig".to_vec()),
                Just(b"eyJhbGciOi.secret-tok".to_vec()),
                Just(b"c~secret".to_vec()),
                Just(b"c~secre".to_vec()),
                proptest::collection::vec(prop_oneof![Just(b'e'), Just(b'y'), Just(b'c'), Just(b'~'), any::<u8>()], 0..12),
            ],
            0..12,
        ),
        cuts in proptest::collection::vec(1usize..16, 1..40),
    ) {
        let a = Secret::new("eyJhbGciOi.secret-token.sig");
        let b = Secret::new("c~secret");
        let body: Vec<u8> = parts.concat();
        let whole = Scrubber::new(&[&a, &b]).scrub_all(&body).unwrap_or_else(|| body.clone());
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut rest = &body[..];
        for c in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (head, tail) = rest.split_at((*c).min(rest.len()));
            chunks.push(head);
            rest = tail;
        }
        prop_assert_eq!(scrub_stream(&[&a, &b], &chunks), whole);
    }
}
