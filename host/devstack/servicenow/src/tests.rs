//! Behaviour tests: a real sandbox on 127.0.0.1:0, real signed JWTs, real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::seed::{self, SeedUser};
use crate::{AclFiltering, JwkSet, JwksSource, ServiceNow, ServiceNowConfig};

const ISSUER: &str = "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0";
/// The API connector app: Token B's audience.
const API_CONNECTOR: &str = "6e74172b-be56-4843-9ff4-e66a39bb12e3";
/// The agent app: Token A's audience.
const AGENT_APP: &str = "535fb089-9ff3-47b6-9bfb-4f1264799865";

struct TestKey {
    pair: RsaKeyPair,
    kid: &'static str,
}

fn generate(kid: &'static str) -> TestKey {
    TestKey { pair: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(), kid }
}

fn key1() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| generate("kid-1"))
}

fn key2() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| generate("kid-2"))
}

impl TestKey {
    fn jwk(&self) -> Value {
        let public = self.pair.public_key();
        json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        })
    }

    /// Signs `claims` as an RS256 JWT with this key, under header `kid`.
    fn sign_as(&self, kid: &str, alg: &str, claims: &Value) -> String {
        let header = json!({"typ": "JWT", "alg": alg, "kid": kid});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0; self.pair.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair.sign(&RSA_PKCS1_SHA256, &rng, signing_input.as_bytes(), &mut sig).unwrap();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(self.kid, "RS256", claims)
    }
}

fn jwks(keys: &[&TestKey]) -> JwkSet {
    serde_json::from_value(json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})).unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Entra v2-shaped access-token claims for `user` with audience `aud`.
fn claims(user: &SeedUser, aud: &str) -> Value {
    let t = now();
    json!({
        "aud": aud, "iss": ISSUER, "iat": t, "nbf": t, "exp": t + 3600,
        "azp": AGENT_APP, "azpacr": "1", "name": user.name, "oid": user.oid,
        "preferred_username": user.email, "scp": "user_impersonation",
        "sub": "pairwise-subject", "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "ver": "2.0",
    })
}

/// Token B: what the OBO exchange returns (audience = API connector).
fn token_b(user: &SeedUser) -> String {
    key1().sign(&claims(user, API_CONNECTOR))
}

async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

struct Sandbox {
    sn: ServiceNow,
    base: String,
    http: reqwest::Client,
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    fn numbers(&self) -> Vec<String> {
        self.json()["result"]
            .as_array()
            .unwrap_or_else(|| panic!("no result list: {}", self.text))
            .iter()
            .map(|r| r["number"].as_str().unwrap().to_owned())
            .collect()
    }

    fn number_set(&self) -> BTreeSet<String> {
        self.numbers().into_iter().collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

fn config() -> ServiceNowConfig {
    ServiceNowConfig::new(ISSUER, API_CONNECTOR, JwksSource::Static(jwks(&[key1()])))
}

async fn start_with(config: ServiceNowConfig) -> Sandbox {
    let sn = ServiceNow::new(config).unwrap();
    let addr = serve(sn.router()).await;
    Sandbox { sn, base: format!("http://{addr}"), http: reqwest::Client::new() }
}

async fn start() -> Sandbox {
    start_with(config()).await
}

fn set<const N: usize>(numbers: [&str; N]) -> BTreeSet<String> {
    numbers.iter().map(|s| (*s).to_owned()).collect()
}

fn janes_five() -> BTreeSet<String> {
    seed::JANE_INCIDENTS.iter().map(|i| i.number.to_owned()).collect()
}

impl Sandbox {
    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.unwrap();
        Reply {
            status: response.status(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/now/table/{path}", self.base)
    }

    async fn get_with(&self, path: &str, token: &str, query: &[(&str, &str)]) -> Reply {
        self.send(
            self.http
                .get(url::Url::parse_with_params(&self.url(path), query).unwrap())
                .bearer_auth(token)
                .header("accept", "application/json"),
        )
        .await
    }

    async fn get(&self, user: &SeedUser, path: &str, query: &[(&str, &str)]) -> Reply {
        self.get_with(path, &token_b(user), query).await
    }

    /// Incident numbers `user` gets for `sysparm_query=q`.
    async fn query(&self, user: &SeedUser, q: &str) -> Vec<String> {
        let reply = self.get(user, "incident", &[("sysparm_query", q)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{q}: {}", reply.text);
        reply.numbers()
    }

    async fn patch(&self, user: &SeedUser, path: &str, body: &Value) -> Reply {
        self.send(self.http.patch(self.url(path)).bearer_auth(token_b(user)).json(body)).await
    }
}

fn assert_envelope(reply: &Reply, status: StatusCode, message: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["status"], "failure", "{}", reply.text);
    assert_eq!(body["error"]["message"], message, "{}", reply.text);
    assert!(body["error"]["detail"].is_string(), "{}", reply.text);
}

const ME: &str = seed::ASSIGNED_TO_ME_QUERY;

// ---------------------------------------------------------------------------------------
// What Jane sees

#[tokio::test]
async fn jane_sees_exactly_her_five_incidents() {
    let sb = start().await;
    // The bait is real: the HR incident *is* assigned to Jane in the database, so only the
    // ACL keeps it out.
    let hr = sb.sn.incident_by_number(seed::HR_INCIDENT.number).unwrap().unwrap();
    assert_eq!(hr["assigned_to"], seed::JANE.sys_id);

    let reply = sb.get(&seed::JANE, "incident", &[("sysparm_query", ME)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.number_set(), janes_five());
    assert!(!reply.text.contains("INC0012350") && !reply.text.contains("INC0012399"));
    assert!(!reply.text.contains("Employee complaint"));
    // The total counts what the query matched before ACLs (protocols.md §5.3): 5 + the bait.
    assert_eq!(reply.header("x-total-count"), Some("6"));
    assert_eq!(reply.header("link"), None, "one page has no Link header");
}

#[tokio::test]
async fn jane_never_sees_restricted_incidents_however_she_asks() {
    let sb = start().await;
    for q in [
        "category=hr",
        "category=HR",
        "category=security",
        "categoryINhr,security",
        "number=INC0012350",
        "number=INC0012399^ORnumber=INC0012350",
        "descriptionLIKEjane",
        "assignment_group=d52d5759eec7ddb57c9881b15c41d5c5",
        "short_descriptionLIKEcomplaint^NQshort_descriptionLIKESOC",
        "bogus_field=1",
        "",
    ] {
        let numbers = sb.query(&seed::JANE, q).await;
        assert!(!numbers.iter().any(|n| n == "INC0012350" || n == "INC0012399"), "{q} leaked: {numbers:?}");
    }
    assert!(sb.query(&seed::JANE, "category=hr").await.is_empty());
    for inc in [seed::HR_INCIDENT, seed::SECURITY_INCIDENT] {
        let reply = sb.get(&seed::JANE, &format!("incident/{}", inc.sys_id), &[]).await;
        assert_envelope(&reply, StatusCode::NOT_FOUND, "No Record found");
        assert!(!reply.text.contains(inc.short_description));
    }
}

#[tokio::test]
async fn restricted_incidents_are_visible_to_their_groups_and_admins() {
    let sb = start().await;
    let hr = sb.query(&seed::HR_ANALYST, "category=hr").await;
    assert!(hr.contains(&"INC0012350".to_owned()), "{hr:?}");
    assert!(sb.query(&seed::HR_ANALYST, "category=security").await.is_empty());
    let sec = sb.query(&seed::SECURITY_ANALYST, "category=security").await;
    assert!(sec.contains(&"INC0012399".to_owned()), "{sec:?}");
    assert!(sb.query(&seed::SECURITY_ANALYST, "category=hr").await.is_empty());
    let reply = sb.get(&seed::HR_ANALYST, &format!("incident/{}", seed::HR_INCIDENT.sys_id), &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["result"]["number"], "INC0012350");
    let all = sb.query(&seed::ADMIN, "").await;
    assert_eq!(all.len(), seed::INCIDENT_COUNT);
}

#[tokio::test]
async fn a_user_without_roles_sees_only_incidents_he_raised() {
    let sb = start().await;
    let reply = sb
        .get(&seed::END_USER, "incident", &[("sysparm_fields", "number,caller_id,opened_by,category")])
        .await;
    let rows = reply.json()["result"].as_array().unwrap().clone();
    assert!(!rows.is_empty());
    for row in rows {
        assert_eq!(row["caller_id"]["value"], seed::END_USER.sys_id, "{row}");
        assert!(row["category"] != "hr" && row["category"] != "security", "{row}");
    }
}

// ---------------------------------------------------------------------------------------
// Paging

fn links(reply: &Reply) -> Vec<(String, String)> {
    let Some(link) = reply.header("link") else {
        return Vec::new();
    };
    link.split(',')
        .map(|part| {
            let (url, rel) = part.split_once(';').unwrap();
            let url = url.trim().trim_start_matches('<').trim_end_matches('>');
            let rel = rel.trim().strip_prefix("rel=\"").unwrap().trim_end_matches('"');
            (rel.to_owned(), url.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn short_pages_and_links_page_through_every_visible_row() {
    let sb = start().await;
    let everything = sb.query(&seed::JANE, "ORDERBYnumber").await;
    assert!(everything.len() < seed::INCIDENT_COUNT);

    let q = [("sysparm_query", "ORDERBYnumber"), ("sysparm_limit", "5")];
    let mut reply = sb.get(&seed::JANE, "incident", &q).await;
    let mut seen = Vec::new();
    let mut page_sizes = Vec::new();
    let mut short_page_before_end = false;
    let mut pages = 0;
    loop {
        pages += 1;
        assert_eq!(
            reply.header("x-total-count"),
            Some(seed::INCIDENT_COUNT.to_string().as_str()),
            "total is counted before ACLs"
        );
        let l = links(&reply);
        let rels: Vec<&str> = l.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(rels.first(), Some(&"first"));
        assert_eq!(rels.last(), Some(&"last"));
        assert_eq!(rels.contains(&"prev"), pages > 1, "{rels:?}");
        let numbers = reply.numbers();
        let next = l.iter().find(|(r, _)| r == "next").map(|(_, u)| u.clone());
        if numbers.len() < 5 && next.is_some() {
            short_page_before_end = true;
        }
        page_sizes.push(numbers.len());
        seen.extend(numbers);
        let Some(next) = next else { break };
        // Links repeat the query and are absolute under the base URL (https://Host).
        assert!(next.starts_with("https://127.0.0.1:"), "{next}");
        assert!(next.contains("sysparm_query=ORDERBYnumber"), "{next}");
        assert!(next.contains(&format!("sysparm_offset={}", pages * 5)), "{next}");
        let path_and_query = next.split_once("/api/now/table/").unwrap().1;
        reply = sb
            .send(
                sb.http
                    .get(format!("{}/api/now/table/{path_and_query}", sb.base))
                    .bearer_auth(token_b(&seed::JANE)),
            )
            .await;
        assert!(pages < 20, "paging does not end");
    }
    assert_eq!(pages, seed::INCIDENT_COUNT.div_ceil(5));
    assert!(short_page_before_end, "ACLs after paging must produce a short page");
    assert_eq!(seen, everything);
    // Each page is the query's page with Jane's invisible rows removed from it, not a page
    // of her visible rows (ACLs after paging).
    let unfiltered = sb.query(&seed::ADMIN, "ORDERBYnumber").await;
    let expected_sizes: Vec<usize> =
        unfiltered.chunks(5).map(|chunk| chunk.iter().filter(|n| everything.contains(n)).count()).collect();
    assert_eq!(page_sizes, expected_sizes);
    assert!(expected_sizes.iter().any(|n| *n < 5 && *n > 0));

    // Offset past the end: empty result, still 200, with first/prev/last.
    let reply = sb.get(&seed::JANE, "incident", &[("sysparm_limit", "5"), ("sysparm_offset", "500")]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.numbers().is_empty());
    let rels: Vec<String> = links(&reply).into_iter().map(|(r, _)| r).collect();
    assert_eq!(rels, ["first", "prev", "last"]);

    let last = links(&sb.get(&seed::JANE, "incident", &[("sysparm_limit", "5")]).await)
        .into_iter()
        .find(|(r, _)| r == "last")
        .unwrap()
        .1;
    let expected_last = (seed::INCIDENT_COUNT - 1) / 5 * 5;
    assert!(last.contains(&format!("sysparm_offset={expected_last}")), "{last}");
}

/// The article's question with a page of 5, as the plugin asks it: the HR bait assigned to
/// Jane sorts into the first page and is removed from it, so the page holds 4 rows and a
/// `next` link leads to the fifth. A client must follow `next`, not stop at a short page.
#[tokio::test]
async fn five_of_mine_in_pages_of_five_needs_the_next_link() {
    let sb = start().await;
    let q = format!("{ME}^active=true^ORDERBYnumber");
    let first =
        sb.get(&seed::JANE, "incident", &[("sysparm_query", q.as_str()), ("sysparm_limit", "5")]).await;
    assert_eq!(first.numbers(), ["INC0012345", "INC0012389", "INC0012401", "INC0012455"]);
    assert_eq!(first.header("x-total-count"), Some("6"));
    let next = links(&first).into_iter().find(|(r, _)| r == "next").expect("a next link").1;
    let path_and_query = next.split_once("/api/now/table/").unwrap().1;
    let second = sb
        .send(
            sb.http
                .get(format!("{}/api/now/table/{path_and_query}", sb.base))
                .bearer_auth(token_b(&seed::JANE)),
        )
        .await;
    assert_eq!(second.numbers(), ["INC0012478"]);
    assert!(links(&second).iter().all(|(r, _)| r != "next"));
}

/// Faithful but worth knowing: under `AfterPaging` the pre-ACL `X-Total-Count` answers
/// yes/no questions about rows Jane cannot read (never their content); `BeforePaging`
/// closes that oracle.
#[tokio::test]
async fn the_total_count_is_an_existence_oracle_only_after_paging() {
    let probe = [("sysparm_query", "category=security^descriptionLIKEjane.smith"), ("sysparm_limit", "1")];
    let faithful = start().await;
    let reply = faithful.get(&seed::JANE, "incident", &probe).await;
    assert!(reply.numbers().is_empty());
    assert_eq!(reply.header("x-total-count"), Some("1"));

    let mut cfg = config();
    cfg.acl_filtering = AclFiltering::BeforePaging;
    let filtered = start_with(cfg).await;
    let reply = filtered.get(&seed::JANE, "incident", &probe).await;
    assert!(reply.numbers().is_empty());
    assert_eq!(reply.header("x-total-count"), Some("0"));
}

#[tokio::test]
async fn query_time_acl_filtering_gives_full_pages_and_a_visible_count() {
    let mut cfg = config();
    cfg.acl_filtering = AclFiltering::BeforePaging;
    let sb = start_with(cfg).await;
    let everything = sb.query(&seed::JANE, "ORDERBYnumber").await;
    let mut seen = Vec::new();
    for offset in (0..everything.len()).step_by(5) {
        let offset = offset.to_string();
        let q =
            [("sysparm_query", "ORDERBYnumber"), ("sysparm_limit", "5"), ("sysparm_offset", offset.as_str())];
        let reply = sb.get(&seed::JANE, "incident", &q).await;
        assert_eq!(reply.header("x-total-count"), Some(everything.len().to_string().as_str()));
        let numbers = reply.numbers();
        assert_eq!(numbers.len(), 5.min(everything.len() - seen.len()), "full pages");
        seen.extend(numbers);
    }
    assert_eq!(seen, everything);
    let reply = sb.get(&seed::JANE, "incident", &[("sysparm_query", ME)]).await;
    assert_eq!(reply.header("x-total-count"), Some("5"));
    assert_eq!(reply.number_set(), janes_five());
}

#[tokio::test]
async fn limit_is_capped_and_count_and_link_can_be_suppressed() {
    let sb = start().await;
    let reply = sb.get(&seed::ADMIN, "incident", &[("sysparm_limit", "99999")]).await;
    assert_eq!(reply.numbers().len(), seed::INCIDENT_COUNT);
    let reply = sb
        .get(
            &seed::ADMIN,
            "incident",
            &[
                ("sysparm_limit", "2"),
                ("sysparm_no_count", "true"),
                ("sysparm_suppress_pagination_header", "true"),
            ],
        )
        .await;
    assert_eq!(reply.numbers().len(), 2);
    assert_eq!(reply.header("x-total-count"), None);
    assert_eq!(reply.header("link"), None);
}

// ---------------------------------------------------------------------------------------
// Encoded queries

#[tokio::test]
async fn every_encoded_query_operator() {
    let sb = start().await;
    let jane = &seed::JANE;
    let cases: &[(&str, &[&str])] = &[
        ("priority=2", &["INC0012345", "INC0012401"]),
        ("priority!=2", &["INC0012389", "INC0012455", "INC0012478"]),
        ("short_descriptionLIKEdrive", &["INC0012455"]),
        ("short_descriptionLIKEOUTLOOK", &["INC0012389"]),
        ("short_descriptionNOT LIKEwindows", &["INC0012345", "INC0012389", "INC0012455", "INC0012478"]),
        ("short_descriptionSTARTSWITHvpn", &["INC0012345"]),
        ("short_descriptionENDSWITHteams", &["INC0012478"]),
        ("numberININC0012345,INC0012478,INC0012350", &["INC0012345", "INC0012478"]),
        ("numberNOT ININC0012345,INC0012478", &["INC0012389", "INC0012401", "INC0012455"]),
        ("priority<3", &["INC0012345", "INC0012401"]),
        ("priority<=3", &["INC0012345", "INC0012389", "INC0012401", "INC0012455"]),
        ("priority>3", &["INC0012478"]),
        ("priority>=3", &["INC0012389", "INC0012455", "INC0012478"]),
        ("close_notesISEMPTY", &["INC0012345", "INC0012389", "INC0012401", "INC0012455", "INC0012478"]),
        ("close_notesISNOTEMPTY", &[]),
        ("priority=2^ORpriority=4", &["INC0012345", "INC0012401", "INC0012478"]),
        ("state=10", &["INC0012478"]),
        // Unknown fields are dropped: the query widens to the rest.
        ("bogus_field=1", &["INC0012345", "INC0012389", "INC0012401", "INC0012455", "INC0012478"]),
        ("priority=4^ORbogus=1", &["INC0012478"]),
    ];
    for (extra, expected) in cases {
        let q = format!("{ME}^{extra}");
        let got: BTreeSet<String> = sb.query(jane, &q).await.into_iter().collect();
        let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(got, expected, "query {q}");
    }

    // ^NQ: OR of whole queries.
    let got = sb.query(jane, &format!("{ME}^priority=4^NQnumber=INC0012389")).await;
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), set(["INC0012478", "INC0012389"]));

    // Reference fields match the sys_id; dot-walking matches the referenced record.
    let by_id = sb.query(jane, &format!("assigned_to={}", seed::JANE.sys_id)).await;
    assert_eq!(by_id.into_iter().collect::<BTreeSet<_>>(), janes_five());
    let by_email = sb.query(jane, "assigned_to.email=jane.smith@company.com").await;
    assert_eq!(by_email.into_iter().collect::<BTreeSet<_>>(), janes_five());
    let by_name = sb.query(jane, "assigned_to=Jane Smith").await;
    assert!(by_name.is_empty(), "a display value is not a sys_id");
    // gs.getUserName() resolves too.
    let by_user_name = sb.query(jane, "assigned_to.user_name=javascript:gs.getUserName()").await;
    assert_eq!(by_user_name.into_iter().collect::<BTreeSet<_>>(), janes_five());

    // ORDERBY / ORDERBYDESC, repeated keys.
    assert_eq!(
        sb.query(jane, &format!("{ME}^ORDERBYDESCnumber")).await,
        ["INC0012478", "INC0012455", "INC0012401", "INC0012389", "INC0012345"]
    );
    assert_eq!(
        sb.query(jane, &format!("{ME}^ORDERBYpriority^ORDERBYDESCnumber")).await,
        ["INC0012401", "INC0012345", "INC0012455", "INC0012389", "INC0012478"]
    );

    // My groups: Jane's group holds her five, the unassigned Service Desk incidents and the
    // two bait incidents, which the ACL still removes.
    let mine = sb.query(jane, "assignment_groupINjavascript:gs.getUser().getMyGroups()").await;
    let desk = sb.query(&seed::ADMIN, &format!("assignment_group={}", seed::SERVICE_DESK.sys_id)).await;
    let desk_visible: Vec<String> =
        desk.into_iter().filter(|n| n != "INC0012350" && n != "INC0012399").collect();
    assert_eq!(mine, desk_visible);
    assert!(janes_five().iter().all(|n| mine.contains(n)));
    let eq = sb.query(jane, "assignment_group=javascript:getMyGroups()").await;
    assert_eq!(eq, mine);
    let not_mine = sb.query(jane, "assignment_group!=javascript:gs.getUser().getMyGroups()").await;
    assert!(not_mine.iter().all(|n| !mine.contains(n)) && !not_mine.is_empty());

    // A script the sandbox does not run matches nothing.
    assert!(sb.query(jane, "assigned_to=javascript:gs.getUser().getManagerID()").await.is_empty());
}

// ---------------------------------------------------------------------------------------
// Rendering

#[tokio::test]
async fn values_are_strings_and_display_value_shapes_match_servicenow() {
    let sb = start().await;
    let path = format!("incident/{}", seed::INC0012345.sys_id);
    let user_link = |base: &str| format!("{base}/api/now/table/sys_user/{}", seed::JANE.sys_id);

    let plain = sb.get(&seed::JANE, &path, &[]).await.json()["result"].clone();
    for (name, value) in plain.as_object().unwrap() {
        assert!(value.is_string() || value.is_object(), "{name}: {value}");
    }
    assert_eq!(plain["priority"], "2");
    assert_eq!(plain["state"], "2");
    assert_eq!(plain["sys_mod_count"], "0");
    assert_eq!(plain["active"], "true");
    let host = sb.base.trim_start_matches("http://");
    let base = format!("https://{host}");
    assert_eq!(plain["assigned_to"], json!({"link": user_link(&base), "value": seed::JANE.sys_id}));

    let shown =
        sb.get(&seed::JANE, &path, &[("sysparm_display_value", "true")]).await.json()["result"].clone();
    assert_eq!(shown["state"], "In Progress");
    assert_eq!(shown["priority"], "2 - High");
    assert_eq!(shown["number"], "INC0012345");
    assert_eq!(shown["assigned_to"], json!({"link": user_link(&base), "display_value": "Jane Smith"}));
    assert_eq!(shown["assignment_group"]["display_value"], "Service Desk");

    let all = sb.get(&seed::JANE, &path, &[("sysparm_display_value", "all")]).await.json()["result"].clone();
    assert_eq!(all["state"], json!({"display_value": "In Progress", "value": "2"}));
    assert_eq!(all["number"], json!({"display_value": "INC0012345", "value": "INC0012345"}));
    assert_eq!(
        all["assigned_to"],
        json!({"display_value": "Jane Smith", "link": user_link(&base), "value": seed::JANE.sys_id})
    );

    let no_link = [("sysparm_exclude_reference_link", "true")];
    let r = sb.get(&seed::JANE, &path, &no_link).await.json()["result"].clone();
    assert_eq!(r["assigned_to"], seed::JANE.sys_id);
    let r =
        sb.get(&seed::JANE, &path, &[no_link[0], ("sysparm_display_value", "true")]).await.json()["result"]
            .clone();
    assert_eq!(r["assigned_to"], "Jane Smith");
    let r =
        sb.get(&seed::JANE, &path, &[no_link[0], ("sysparm_display_value", "all")]).await.json()["result"]
            .clone();
    assert_eq!(r["assigned_to"], json!({"display_value": "Jane Smith", "value": seed::JANE.sys_id}));

    // The article's table renders from display values: "Assigned" is INC0012478's state.
    let r = sb
        .get(
            &seed::JANE,
            &format!("incident/{}", seed::INC0012478.sys_id),
            &[("sysparm_display_value", "true")],
        )
        .await
        .json()["result"]
        .clone();
    assert_eq!(r["state"], "Assigned");
    assert_eq!(r["priority"], "4 - Low");

    // Empty references.
    let unassigned = sb.sn.incident_by_number("INC0012311").unwrap().unwrap();
    let p = format!("incident/{}", unassigned["sys_id"]);
    assert_eq!(sb.get(&seed::JANE, &p, &[]).await.json()["result"]["assigned_to"], "");
    assert_eq!(
        sb.get(&seed::JANE, &p, &[("sysparm_display_value", "all")]).await.json()["result"]["assigned_to"],
        json!({"display_value": "", "value": ""})
    );
}

#[tokio::test]
async fn sysparm_fields_selects_known_fields_and_dot_walks() {
    let sb = start().await;
    let reply = sb
        .get(
            &seed::JANE,
            &format!("incident/{}", seed::INC0012345.sys_id),
            &[("sysparm_fields", "number, short_description,bogus,assigned_to.name,number")],
        )
        .await;
    let result = reply.json()["result"].clone();
    let keys: BTreeSet<&str> = result.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["number", "short_description", "assigned_to.name"]));
    assert_eq!(result["assigned_to.name"], "Jane Smith");
    assert_eq!(result["short_description"], "VPN connection dropping");

    // Walking through an empty reference yields empty values, deeper walks included.
    let unassigned = sb.sn.incident_by_number("INC0012311").unwrap().unwrap();
    let reply = sb
        .get(
            &seed::JANE,
            &format!("incident/{}", unassigned["sys_id"]),
            &[("sysparm_fields", "assigned_to.name,assigned_to.manager.email,assigned_to.nope")],
        )
        .await;
    assert_eq!(reply.json()["result"], json!({"assigned_to.name": "", "assigned_to.manager.email": ""}));
}

// ---------------------------------------------------------------------------------------
// Writes and audit

#[tokio::test]
async fn jane_updates_her_incident_and_sys_audit_records_her() {
    let sb = start().await;
    let inc = seed::INC0012345;
    let reply = sb
        .patch(
            &seed::JANE,
            &format!("incident/{}", inc.sys_id),
            &json!({"state": "6", "close_notes": "Replaced VPN profile", "priority": 3,
                    "bogus": "ignored", "number": "INC9999999", "sys_updated_by": "mallory"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let result = reply.json()["result"].clone();
    assert_eq!(result["state"], "6");
    assert_eq!(result["priority"], "3");
    assert_eq!(result["close_notes"], "Replaced VPN profile");
    assert_eq!(result["number"], inc.number, "read-only fields are ignored");
    assert!(result.get("bogus").is_none(), "unknown fields are ignored");
    assert_eq!(result["sys_updated_by"], seed::JANE.email);
    assert_eq!(result["sys_mod_count"], "1");

    let audit = sb.sn.audit_records(inc.sys_id).unwrap();
    let fields: BTreeSet<&str> = audit.iter().map(|a| a.field.as_str()).collect();
    assert_eq!(fields, BTreeSet::from(["state", "close_notes", "priority"]));
    for a in &audit {
        assert_eq!(a.user, "jane.smith@company.com");
        assert_eq!(a.table, "incident");
        assert_eq!(a.record_checkpoint, "1");
    }
    let state = audit.iter().find(|a| a.field == "state").unwrap();
    assert_eq!((state.old_value.as_str(), state.new_value.as_str()), ("2", "6"));

    // The same audit is readable through the Table API by an auditor, not by Jane.
    let q = [("sysparm_query", format!("documentkey={}", inc.sys_id))];
    let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let auditor = sb.get(&seed::AUDITOR, "sys_audit", &q).await;
    let rows = auditor.json()["result"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["user"] == "jane.smith@company.com"));
    let jane = sb.get(&seed::JANE, "sys_audit", &q).await;
    assert_eq!(jane.status, StatusCode::OK);
    assert!(jane.json()["result"].as_array().unwrap().is_empty());

    // Writing the same values again changes nothing and audits nothing.
    let again = sb.patch(&seed::JANE, &format!("incident/{}", inc.sys_id), &json!({"state": "6"})).await;
    assert_eq!(again.json()["result"]["sys_mod_count"], "1");
    assert_eq!(sb.sn.audit_records(inc.sys_id).unwrap().len(), 3);

    // Closing makes the incident inactive (business rule), audited too.
    let closed = sb
        .send(
            sb.http
                .put(sb.url(&format!("incident/{}", inc.sys_id)))
                .bearer_auth(token_b(&seed::JANE))
                .json(&json!({"state": "7"})),
        )
        .await;
    assert_eq!(closed.json()["result"]["active"], "false");
    assert!(sb.sn.audit_records(inc.sys_id).unwrap().iter().any(|a| a.field == "active"));
}

#[tokio::test]
async fn write_acls_refuse_what_jane_may_not_change() {
    let sb = start().await;
    let other = seed::READ_ONLY_FOR_JANE;
    // Jane can read it...
    let read = sb.get(&seed::JANE, &format!("incident/{}", other.sys_id), &[]).await;
    assert_eq!(read.status, StatusCode::OK);
    // ...but not write it.
    let reply = sb.patch(&seed::JANE, &format!("incident/{}", other.sys_id), &json!({"state": "6"})).await;
    assert_envelope(&reply, StatusCode::FORBIDDEN, "Operation Failed");
    let row = sb.sn.record("incident", other.sys_id).unwrap().unwrap();
    assert_eq!(row["state"], other.state);
    assert!(sb.sn.audit_records(other.sys_id).unwrap().is_empty());

    // An incident she cannot read is "not found", even though she is its assignee.
    let reply = sb
        .patch(&seed::JANE, &format!("incident/{}", seed::HR_INCIDENT.sys_id), &json!({"state": "6"}))
        .await;
    assert_envelope(&reply, StatusCode::NOT_FOUND, "No Record found");

    // Group rule: an unassigned incident in Jane's group is hers to update.
    let unassigned = sb.sn.incident_by_number("INC0012311").unwrap().unwrap();
    let reply = sb
        .patch(
            &seed::JANE,
            &format!("incident/{}", unassigned["sys_id"]),
            &json!({"assigned_to": seed::JANE.sys_id}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    // The network engineer may update his own.
    let reply = sb
        .patch(&seed::NETWORK_ENGINEER, &format!("incident/{}", other.sys_id), &json!({"state": "3"}))
        .await;
    assert_eq!(reply.status, StatusCode::OK);

    // Delete: admins only.
    let path = format!("incident/{}", seed::INC0012389.sys_id);
    let reply = sb.send(sb.http.delete(sb.url(&path)).bearer_auth(token_b(&seed::JANE))).await;
    assert_envelope(&reply, StatusCode::FORBIDDEN, "Operation Failed");
    let reply = sb.send(sb.http.delete(sb.url(&path)).bearer_auth(token_b(&seed::ADMIN))).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(sb.sn.record("incident", seed::INC0012389.sys_id).unwrap().is_none());
    let reply = sb.get(&seed::ADMIN, &path, &[]).await;
    assert_envelope(&reply, StatusCode::NOT_FOUND, "No Record found");

    // sys_user: readable by Jane, writable by admins.
    let me = sb.get(&seed::JANE, &format!("sys_user/{}", seed::JANE.sys_id), &[]).await;
    assert_eq!(me.json()["result"]["email"], seed::JANE.email);
    let reply =
        sb.patch(&seed::JANE, &format!("sys_user/{}", seed::JANE.sys_id), &json!({"roles": "admin"})).await;
    assert_envelope(&reply, StatusCode::FORBIDDEN, "Operation Failed");
    let reply = sb
        .patch(&seed::ADMIN, &format!("sys_user/{}", seed::END_USER.sys_id), &json!({"title": "Analyst"}))
        .await;
    assert_eq!(reply.json()["result"]["title"], "Analyst");
}

#[tokio::test]
async fn jane_creates_an_incident() {
    let sb = start().await;
    let reply = sb
        .send(
            sb.http
                .post(sb.url("incident"))
                .bearer_auth(token_b(&seed::JANE))
                .json(&json!({"short_description": "Docking station not charging", "urgency": "2",
                              "number": "INC0000001", "opened_by": seed::ADMIN.sys_id})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let result = reply.json()["result"].clone();
    assert_eq!(result["number"], "INC0012479");
    assert_eq!(result["caller_id"]["value"], seed::JANE.sys_id);
    assert_eq!(result["opened_by"]["value"], seed::JANE.sys_id, "opened_by is not writable");
    assert_eq!(result["state"], "1");
    let sys_id = result["sys_id"].as_str().unwrap();
    assert_eq!(sys_id.len(), 32);
    assert!(reply.header("location").unwrap().ends_with(&format!("/api/now/table/incident/{sys_id}")));
    let audit = sb.sn.audit_records(sys_id).unwrap();
    assert!(audit.iter().any(|a| a.field == "short_description" && a.user == seed::JANE.email));
    // Visible to her afterwards.
    let reply = sb.get(&seed::JANE, &format!("incident/{sys_id}"), &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    // Read-only tables refuse inserts.
    let reply = sb
        .send(
            sb.http
                .post(sb.url("sys_audit"))
                .bearer_auth(token_b(&seed::ADMIN))
                .json(&json!({"fieldname": "x"})),
        )
        .await;
    assert_envelope(&reply, StatusCode::FORBIDDEN, "Operation Failed");
}

// ---------------------------------------------------------------------------------------
// Authentication

#[tokio::test]
async fn only_token_b_for_a_known_active_user_is_accepted() {
    let sb = start().await;
    let ok = sb.get_with("incident", &token_b(&seed::JANE), &[("sysparm_query", ME)]).await;
    assert_eq!(ok.status, StatusCode::OK);

    let mut refused: Vec<(&str, String)> = vec![
        ("token A (audience = agent app)", key1().sign(&claims(&seed::JANE, AGENT_APP))),
        (
            "unknown user",
            key1().sign(&{
                let mut c = claims(&seed::JANE, API_CONNECTOR);
                c["preferred_username"] = json!("nobody@company.com");
                c
            }),
        ),
        ("inactive user", token_b(&seed::INACTIVE_USER)),
        (
            "no user claim",
            key1().sign(&{
                let mut c = claims(&seed::JANE, API_CONNECTOR);
                c.as_object_mut().unwrap().remove("preferred_username");
                c
            }),
        ),
        (
            "expired",
            key1().sign(&{
                let mut c = claims(&seed::JANE, API_CONNECTOR);
                c["exp"] = json!(now() - 3600);
                c
            }),
        ),
        (
            "not yet valid",
            key1().sign(&{
                let mut c = claims(&seed::JANE, API_CONNECTOR);
                c["nbf"] = json!(now() + 3600);
                c
            }),
        ),
        (
            "other issuer",
            key1().sign(&{
                let mut c = claims(&seed::JANE, API_CONNECTOR);
                c["iss"] = json!("https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/");
                c
            }),
        ),
        (
            "signed by another key under the trusted kid",
            key2().sign_as("kid-1", "RS256", &claims(&seed::JANE, API_CONNECTOR)),
        ),
        ("unknown kid", key2().sign(&claims(&seed::JANE, API_CONNECTOR))),
        ("alg RS512 header", key1().sign_as("kid-1", "RS512", &claims(&seed::JANE, API_CONNECTOR))),
        ("alg none", {
            let t = key1().sign(&claims(&seed::JANE, API_CONNECTOR));
            let mut parts: Vec<&str> = t.split('.').collect();
            let none = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"kid-1"}"#);
            parts[0] = &none;
            parts[..2].join(".") + "."
        }),
        ("tampered payload", {
            let t = token_b(&seed::JANE);
            let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
            parts[1] = URL_SAFE_NO_PAD.encode(claims(&seed::ADMIN, API_CONNECTOR).to_string());
            parts.join(".")
        }),
        ("garbage", "not-a-jwt".to_owned()),
    ];
    refused.push(("empty", String::new()));
    for (what, token) in refused {
        let reply = sb.get_with("incident", &token, &[]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}: {}", reply.text);
        assert_eq!(
            reply.json(),
            json!({"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"}, "status": "failure"}),
            "{what}"
        );
    }
    // No Authorization header at all, and a Basic one.
    let reply = sb.send(sb.http.get(sb.url("incident"))).await;
    assert_envelope(&reply, StatusCode::UNAUTHORIZED, "User Not Authenticated");
    let reply =
        sb.send(sb.http.get(sb.url("incident")).basic_auth("jane.smith@company.com", Some("pw"))).await;
    assert_envelope(&reply, StatusCode::UNAUTHORIZED, "User Not Authenticated");
}

#[tokio::test]
async fn an_entra_shaped_jwks_is_accepted() {
    // Entra's members beyond n/e: x5t, x5c and a per-key issuer; no alg.
    let mut jwk = key1().jwk();
    jwk["x5t"] = json!("kid-1");
    jwk["x5c"] = json!(["MIIDBTCCAe2gAwIBAgIQ"]);
    jwk["issuer"] = json!("https://login.microsoftonline.com/{tenantid}/v2.0");
    let set: JwkSet = serde_json::from_value(json!({"keys": [jwk]})).unwrap();
    let sb = start_with(ServiceNowConfig::new(ISSUER, API_CONNECTOR, JwksSource::Static(set))).await;
    let reply = sb.get(&seed::JANE, "incident", &[("sysparm_query", ME)]).await;
    assert_eq!(reply.number_set(), janes_five());
}

#[tokio::test]
async fn user_claim_and_field_are_configurable() {
    let mut cfg = config();
    cfg.user_claim = "oid".into();
    cfg.user_field = "oid".into();
    let sb = start_with(cfg).await;
    let mut c = claims(&seed::JANE, API_CONNECTOR);
    c["preferred_username"] = json!(seed::HR_ANALYST.email); // must not matter now
    let reply = sb.get_with("incident", &key1().sign(&c), &[("sysparm_query", ME)]).await;
    assert_eq!(reply.number_set(), janes_five());

    let mut bad = config();
    bad.user_field = "password".into();
    assert!(ServiceNow::new(bad).is_err());
}

#[tokio::test]
async fn remote_jwks_is_fetched_and_refetched_for_an_unknown_kid() {
    let served = Arc::new(Mutex::new(json!({"keys": [key1().jwk()]})));
    let fetches = Arc::new(AtomicUsize::new(0));
    let jwks_router = {
        let served = served.clone();
        let fetches = fetches.clone();
        axum::Router::new().route(
            "/discovery/v2.0/keys",
            axum::routing::get(move || {
                let served = served.clone();
                let fetches = fetches.clone();
                async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    axum::Json(served.lock().unwrap().clone())
                }
            }),
        )
    };
    let idp = serve(jwks_router).await;
    let mut cfg = ServiceNowConfig::new(
        ISSUER,
        API_CONNECTOR,
        JwksSource::Remote {
            url: format!("http://{idp}/discovery/v2.0/keys"),
            client: reqwest::Client::new(),
        },
    );
    cfg.jwks_refetch_interval = Duration::ZERO;
    let sb = start_with(cfg).await;

    assert_eq!(sb.get(&seed::JANE, "incident", &[]).await.status, StatusCode::OK);
    assert_eq!(sb.get(&seed::JANE, "incident", &[]).await.status, StatusCode::OK);
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "the key set is cached");

    // The IdP rotates to key 2: a token with the new kid triggers one refetch.
    *served.lock().unwrap() = json!({"keys": [key1().jwk(), key2().jwk()]});
    let rotated = key2().sign(&claims(&seed::JANE, API_CONNECTOR));
    assert_eq!(sb.get_with("incident", &rotated, &[]).await.status, StatusCode::OK);
    assert_eq!(fetches.load(Ordering::SeqCst), 2);

    // With a refetch interval, unknown kids cannot make the sandbox hammer the IdP.
    let mut cfg = ServiceNowConfig::new(
        ISSUER,
        API_CONNECTOR,
        JwksSource::Remote {
            url: format!("http://{idp}/discovery/v2.0/keys"),
            client: reqwest::Client::new(),
        },
    );
    cfg.jwks_refetch_interval = Duration::from_secs(3600);
    let sb = start_with(cfg).await;
    let before = fetches.load(Ordering::SeqCst);
    let unknown = key2().sign_as("kid-unknown", "RS256", &claims(&seed::JANE, API_CONNECTOR));
    for _ in 0..3 {
        assert_eq!(sb.get_with("incident", &unknown, &[]).await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(fetches.load(Ordering::SeqCst), before + 1);

    // An unreachable JWKS fails closed.
    let mut cfg = ServiceNowConfig::new(
        ISSUER,
        API_CONNECTOR,
        JwksSource::Remote { url: format!("http://{idp}/nope"), client: reqwest::Client::new() },
    );
    cfg.jwks_refetch_interval = Duration::ZERO;
    let sb = start_with(cfg).await;
    assert_eq!(sb.get(&seed::JANE, "incident", &[]).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn discovery_document_gives_the_jwks_and_must_name_the_issuer() {
    let idp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let idp = idp_listener.local_addr().unwrap();
    let jwks_uri = format!("http://{idp}/tenant/discovery/v2.0/keys");
    let discovery = |issuer: &str| json!({"issuer": issuer, "jwks_uri": jwks_uri.clone()});
    let good = discovery(ISSUER);
    let bad = discovery("https://login.microsoftonline.com/someone-else/v2.0");
    let router = axum::Router::new()
        .route(
            "/tenant/v2.0/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(good) }),
        )
        .route(
            "/evil/v2.0/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(bad) }),
        )
        .route(
            "/tenant/discovery/v2.0/keys",
            axum::routing::get(|| async { axum::Json(json!({"keys": [key1().jwk()]})) }),
        );
    tokio::spawn(async move { axum::serve(idp_listener, router).await });

    let source = |path: &str| JwksSource::Discovery {
        url: format!("http://{idp}/{path}/v2.0/.well-known/openid-configuration"),
        client: reqwest::Client::new(),
    };
    let sb = start_with(ServiceNowConfig::new(ISSUER, API_CONNECTOR, source("tenant"))).await;
    let reply = sb.get(&seed::JANE, "incident", &[("sysparm_query", ME)]).await;
    assert_eq!(reply.number_set(), janes_five());

    let sb = start_with(ServiceNowConfig::new(ISSUER, API_CONNECTOR, source("evil"))).await;
    let reply = sb.get(&seed::JANE, "incident", &[]).await;
    assert_envelope(&reply, StatusCode::UNAUTHORIZED, "User Not Authenticated");
}

// ---------------------------------------------------------------------------------------
// Protocol errors and faults

#[tokio::test]
async fn protocol_errors_use_the_envelope() {
    let sb = start().await;
    let jane = token_b(&seed::JANE);
    let item = sb.url(&format!("incident/{}", seed::INC0012345.sys_id));

    let r = sb.send(sb.http.post(&item).bearer_auth(&jane).json(&json!({}))).await;
    assert_envelope(&r, StatusCode::METHOD_NOT_ALLOWED, "Method not Supported");
    let r = sb.send(sb.http.delete(sb.url("incident")).bearer_auth(&jane)).await;
    assert_envelope(&r, StatusCode::METHOD_NOT_ALLOWED, "Method not Supported");
    let r = sb.send(sb.http.get(&item).bearer_auth(&jane).header("accept", "application/xml")).await;
    assert_envelope(&r, StatusCode::NOT_ACCEPTABLE, "Not Acceptable");
    let r = sb
        .send(sb.http.get(&item).bearer_auth(&jane).header("accept", "application/json;q=0.9, */*;q=0.1"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = sb
        .send(
            sb.http
                .patch(&item)
                .bearer_auth(&jane)
                .header("content-type", "text/plain")
                .body(r#"{"state":"6"}"#),
        )
        .await;
    assert_envelope(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type");
    let r = sb
        .send(
            sb.http
                .patch(&item)
                .bearer_auth(&jane)
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    assert_envelope(&r, StatusCode::BAD_REQUEST, "Exception while reading request");
    let r = sb.get(&seed::JANE, "no_such_table", &[]).await;
    assert_envelope(&r, StatusCode::BAD_REQUEST, "Invalid table");
    let r = sb.send(sb.http.get(format!("{}/api/now/elsewhere", sb.base)).bearer_auth(&jane)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.header("content-type"), Some("application/json;charset=UTF-8"));
    // The versioned path is the same API.
    let r = sb.send(sb.http.get(format!("{}/api/now/v2/table/incident", sb.base)).bearer_auth(&jane)).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn fault_switches_fail_the_next_requests_then_recover() {
    let sb = start().await;
    let start_count = sb.sn.request_count();

    sb.sn.faults().fail_with_429(2, 7);
    for _ in 0..2 {
        let r = sb.get(&seed::JANE, "incident", &[]).await;
        assert_envelope(&r, StatusCode::TOO_MANY_REQUESTS, "Too many requests");
        assert_eq!(r.header("retry-after"), Some("7"));
    }
    assert_eq!(sb.get(&seed::JANE, "incident", &[]).await.status, StatusCode::OK);

    sb.sn.faults().fail_with_status(1, 503);
    let r = sb.get(&seed::JANE, "incident", &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);

    sb.sn.faults().malformed_json(1);
    let r = sb.get(&seed::JANE, "incident", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-type").unwrap().starts_with("application/json"));
    assert!(serde_json::from_str::<Value>(&r.text).is_err());

    sb.sn.faults().wrong_content_type(1);
    let r = sb.get(&seed::JANE, "incident", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));

    // Faults come before authentication, like a gateway in front of the instance.
    sb.sn.faults().fail_with_429(1, 1);
    let r = sb.get_with("incident", "garbage", &[]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);

    let delay = Duration::from_millis(150);
    sb.sn.faults().set_delay(Some(delay));
    let started = Instant::now();
    assert_eq!(sb.get(&seed::JANE, "incident", &[]).await.status, StatusCode::OK);
    assert!(started.elapsed() >= delay, "the delay applies");
    sb.sn.faults().clear();

    assert_eq!(sb.get(&seed::JANE, "incident", &[]).await.status, StatusCode::OK);
    assert_eq!(sb.sn.request_count() - start_count, 9);
}

#[tokio::test]
async fn seed_is_reproducible_and_consistent() {
    let a = start().await;
    let b = start().await;
    let all_a = a.get(&seed::ADMIN, "incident", &[("sysparm_fields", "sys_id,number")]).await.text;
    let all_b = b.get(&seed::ADMIN, "incident", &[("sysparm_fields", "sys_id,number")]).await.text;
    assert_eq!(all_a, all_b);
    for inc in seed::JANE_INCIDENTS {
        let row = a.sn.record("incident", inc.sys_id).unwrap().unwrap();
        assert_eq!(row["number"], inc.number);
        assert_eq!(row["short_description"], inc.short_description);
        assert_eq!(row["priority"], inc.priority);
        assert_eq!(row["state"], inc.state);
        assert_eq!(row["assigned_to"], seed::JANE.sys_id);
    }
    for user in seed::USERS {
        let row = a.sn.record("sys_user", user.sys_id).unwrap().unwrap();
        assert_eq!(row["email"], user.email);
        assert_eq!(row["oid"], user.oid);
    }
    // Separate instances do not share state.
    a.patch(&seed::JANE, &format!("incident/{}", seed::INC0012345.sys_id), &json!({"state": "3"})).await;
    assert_eq!(b.sn.record("incident", seed::INC0012345.sys_id).unwrap().unwrap()["state"], "2");
}

// ---------------------------------------------------------------------------------------
// Interop with ServiceNow's own client

/// pysnc (PyPI) queries, pages, reads and updates incidents as Jane over HTTPS (pysnc
/// refuses `http://`). Needs a Python with pysnc: `python3 -m venv /tmp/pysnc &&
/// /tmp/pysnc/bin/pip install pysnc`, then
/// `PYSNC_PYTHON=/tmp/pysnc/bin/python cargo test -p delegate-devstack-servicenow -- --ignored pysnc`.
#[tokio::test]
#[ignore = "needs python3 with pysnc; see the doc comment"]
async fn pysnc_queries_pages_reads_and_updates_as_jane() {
    let ca = delegate_devstack_tls::DevCa::generate().unwrap();
    let tls = ca.server_config(&["127.0.0.1", "localhost"]).unwrap();
    let sn = ServiceNow::new(config()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    sn.set_base_url(Some(&url)).unwrap();
    tokio::spawn(delegate_devstack_tls::serve_https(listener, sn.router(), tls, std::future::pending()));
    let dir = std::env::temp_dir().join(format!("delegate-pysnc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_path = dir.join("devstack-ca.pem");
    ca.write_ca_pem(&ca_path).unwrap();

    let python = std::env::var("PYSNC_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../tests/interop/pysnc_servicenow.py");
    let before = sn.request_count();
    let output = tokio::process::Command::new(&python)
        .arg(script)
        .env("SN_URL", &url)
        .env("SN_CA", &ca_path)
        .env("SN_TOKEN", token_b(&seed::JANE))
        // requests lets these override a session's `verify` (psf/requests#3829), which would
        // replace the devstack CA that pysnc was given.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "pysnc script failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // batch_size=2 over 6 matching rows: pysnc really paged.
    assert!(sn.request_count() - before >= 8, "{}", sn.request_count() - before);
    let audit = sn.audit_records(seed::INC0012345.sys_id).unwrap();
    assert!(
        audit.iter().any(|a| a.field == "state" && a.new_value == "3" && a.user == seed::JANE.email),
        "{audit:?}"
    );
    let row = sn.record("incident", seed::READ_ONLY_FOR_JANE.sys_id).unwrap().unwrap();
    assert_eq!(row["state"], seed::READ_ONLY_FOR_JANE.state);
}
