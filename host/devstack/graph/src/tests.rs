#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use axum::body::Body;
use delegate_devstack_idp::{Idp, IdpConfig, defaults};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::directory::{JANE, PRIYA};
use crate::{Graph, GraphConfig, JwkSet, JwksSource, Refusal};

struct Fixture {
    idp: Idp,
    graph: Graph,
}

fn fixture() -> Fixture {
    let idp = Idp::new(IdpConfig::default()).unwrap();
    let kid = idp.current_kid();
    let (n, e) = idp.public_key_components(&kid).unwrap();
    let jwks: JwkSet = serde_json::from_value(
        json!({"keys":[{"kty":"RSA","use":"sig","alg":"RS256","kid":kid,"n":n,"e":e}]}),
    )
    .unwrap();
    let mut config = GraphConfig::new(
        defaults::TENANT_ID,
        vec![idp.issuer_v1(defaults::TENANT_ID), idp.issuer(defaults::TENANT_ID)],
        JwksSource::Static(jwks),
    );
    config.base_url = Some("https://graph.test".into());
    Fixture { idp, graph: Graph::new(config).unwrap() }
}

impl Fixture {
    /// A Graph token for `user` with `scopes`, as the IdP's OBO issues it (v1, aud Graph).
    fn graph_token(&self, user: &str, scopes: &[&str]) -> String {
        self.idp
            .mint_access_token(
                user,
                defaults::AGENT_APP_ID,
                defaults::GRAPH_RESOURCE,
                scopes,
                Duration::from_secs(600),
            )
            .unwrap()
            .expose()
            .to_owned()
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, http::HeaderMap, Value) {
        let mut req = Request::get(path).header("client-request-id", "test-crid-1");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = self.graph.router().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, body)
    }
}

fn assert_envelope(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    let inner = &body["error"]["innerError"];
    assert_eq!(inner["client-request-id"], "test-crid-1", "{body}");
    assert_eq!(inner["request-id"].as_str().unwrap().len(), 36, "{body}");
    let date = inner["date"].as_str().unwrap();
    assert_eq!(date.len(), 19, "{date}");
    assert_eq!(&date[10..11], "T", "{date}");
}

#[tokio::test]
async fn me_has_graphs_default_shape() {
    let f = fixture();
    let token = f.graph_token(defaults::JANE, &["User.Read"]);
    let (status, headers, body) = f.get("/v1.0/me", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/json;odata.metadata=minimal"));
    assert_eq!(headers["client-request-id"], "test-crid-1");
    assert!(headers.contains_key("request-id"));
    assert_eq!(
        body,
        json!({
            "@odata.context": "https://graph.test/v1.0/$metadata#users/$entity",
            "businessPhones": ["+1 206 555 0142"],
            "displayName": "Jane Smith",
            "givenName": "Jane",
            "jobTitle": "Service Desk Analyst",
            "mail": "jane.smith@company.com",
            "mobilePhone": null,
            "officeLocation": "Building 1, Floor 3",
            "preferredLanguage": "en-US",
            "surname": "Smith",
            "userPrincipalName": "jane.smith@company.com",
            "id": defaults::JANE_OID,
        })
    );
    // What Graph saw: its own audience and Jane's oid.
    let seen = f.graph.tokens_seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].audience.as_deref(), Some("https://graph.microsoft.com"));
    assert_eq!(seen[0].oid.as_deref(), Some(defaults::JANE_OID));
    assert_eq!(seen[0].refused, None);
}

#[tokio::test]
async fn select_narrows_and_widens_the_properties() {
    let f = fixture();
    let token = f.graph_token(defaults::JANE, &["User.Read"]);
    let (status, _, body) = f.get("/v1.0/me?$select=displayName,JOBTITLE,department", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "@odata.context": "https://graph.test/v1.0/$metadata#users(displayName,jobTitle,department)/$entity",
            "displayName": "Jane Smith",
            "jobTitle": "Service Desk Analyst",
            "department": "IT",
        })
    );
    // URL-encoded `$` works too (what clients that encode every reserved character send).
    let (status, _, body) = f.get("/v1.0/me?%24select=id", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], defaults::JANE_OID);
    assert!(body.get("displayName").is_none(), "{body}");
    // An unknown property is Graph's 400.
    let (status, _, body) = f.get("/v1.0/me?$select=displayName,salary", Some(&token)).await;
    assert_eq!(status, 400);
    assert_envelope(&body, "BadRequest");
    assert!(body["error"]["message"].as_str().unwrap().contains("'salary'"), "{body}");
    let (status, _, body) = f.get("/v1.0/me?$filter=x", Some(&token)).await;
    assert_eq!(status, 400);
    assert_envelope(&body, "Request_UnsupportedQuery");
}

#[tokio::test]
async fn manager_is_a_directory_object_and_missing_one_is_404() {
    let f = fixture();
    let token = f.graph_token(defaults::JANE, &["User.Read"]);
    let (status, _, body) = f.get("/v1.0/me/manager", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["@odata.context"], "https://graph.test/v1.0/$metadata#directoryObjects/$entity");
    assert_eq!(body["@odata.type"], "#microsoft.graph.user");
    assert_eq!(body["id"], PRIYA.id);
    assert_eq!(body["id"], defaults::JANE_MANAGER_OID, "the IdP and Graph agree on her");
    assert_eq!(body["displayName"], "Priya Shah");
    assert_eq!(body["mail"], defaults::JANE_MANAGER);
    assert_eq!(body["jobTitle"], "IT Service Desk Manager");
    let (_, _, body) = f.get("/v1.0/me/manager?$select=displayName,mail", Some(&token)).await;
    assert_eq!(
        body,
        json!({
            "@odata.context": "https://graph.test/v1.0/$metadata#directoryObjects(displayName,mail)/$entity",
            "@odata.type": "#microsoft.graph.user",
            "displayName": "Priya Shah",
            "mail": "priya.shah@company.com",
        })
    );
    // Priya has no manager recorded.
    let token = f.graph_token(defaults::JANE_MANAGER, &["User.Read"]);
    let (status, _, body) = f.get("/v1.0/me/manager", Some(&token)).await;
    assert_eq!(status, 404);
    assert_envelope(&body, "Request_ResourceNotFound");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("Resource 'manager' does not exist"));
}

#[tokio::test]
async fn users_by_id_or_upn_with_the_permissions_graph_requires() {
    let f = fixture();
    let user_read = f.graph_token(defaults::JANE, &["User.Read"]);
    // Herself, by id and by UPN (any case).
    for key in [JANE.id, "Jane.Smith@Company.com", "jane.smith%40company.com"] {
        let (status, _, body) = f.get(&format!("/v1.0/users/{key}"), Some(&user_read)).await;
        assert_eq!(status, 200, "{key}: {body}");
        assert_eq!(body["id"], JANE.id);
        assert_eq!(body["@odata.context"], "https://graph.test/v1.0/$metadata#users/$entity");
    }
    // Someone else with User.Read only: 403.
    let (status, headers, body) = f.get(&format!("/v1.0/users/{}", PRIYA.id), Some(&user_read)).await;
    assert_eq!(status, 403);
    assert!(!headers.contains_key("www-authenticate"));
    assert_envelope(&body, "Authorization_RequestDenied");
    assert_eq!(body["error"]["message"], "Insufficient privileges to complete the operation.");
    // User.ReadBasic.All: the basic properties only.
    let basic = f.graph_token(defaults::JANE, &["User.ReadBasic.All"]);
    let (status, _, body) = f.get("/v1.0/users/priya.shah@company.com", Some(&basic)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["displayName"], "Priya Shah");
    assert!(body.get("jobTitle").is_none() && body.get("officeLocation").is_none(), "{body}");
    // User.Read.All: everything, and $select works here too.
    let all = f.graph_token(defaults::JANE, &["User.Read.All"]);
    let (status, _, body) = f.get("/v1.0/users/priya.shah@company.com?$select=jobTitle", Some(&all)).await;
    assert_eq!(status, 200);
    assert_eq!(body["jobTitle"], "IT Service Desk Manager");
    // Unknown users, and users of another tenant, are 404 in Graph's envelope.
    for key in ["00000000-0000-0000-0000-000000000000", "nobody@company.com", "lee.chen@fabrikam.example"] {
        let (status, _, body) = f.get(&format!("/v1.0/users/{key}"), Some(&all)).await;
        assert_eq!(status, 404, "{key}");
        assert_envelope(&body, "Request_ResourceNotFound");
        assert!(body["error"]["message"].as_str().unwrap().contains(key), "{body}");
    }
}

#[tokio::test]
async fn tokens_for_other_audiences_are_refused_with_a_challenge() {
    let f = fixture();
    let token_a = f
        .idp
        .mint_access_token(
            defaults::JANE,
            defaults::AGENT_APP_ID,
            defaults::AGENT_APP_ID,
            &[defaults::AGENT_SCOPE],
            Duration::from_secs(600),
        )
        .unwrap();
    let servicenow = f
        .idp
        .mint_access_token(
            defaults::JANE,
            defaults::AGENT_APP_ID,
            defaults::CONNECTOR_APP_ID,
            &[defaults::CONNECTOR_SCOPE],
            Duration::from_secs(600),
        )
        .unwrap();
    for (what, token) in [("Token A", token_a.expose()), ("ServiceNow token", servicenow.expose())] {
        let (status, headers, body) = f.get("/v1.0/me", Some(token)).await;
        assert_eq!(status, 401, "{what}");
        assert_envelope(&body, "InvalidAuthenticationToken");
        assert_eq!(body["error"]["message"], "Access token validation failure. Invalid audience.", "{what}");
        let challenge = headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer realm=\"\""), "{challenge}");
        assert!(challenge.contains("client_id=\"00000003-0000-0000-c000-000000000000\""), "{challenge}");
        // Nothing of the token in the answer.
        let signature = token.rsplit('.').next().unwrap();
        assert!(!body.to_string().contains(signature));
    }
    let seen = f.graph.tokens_seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].audience.as_deref(), Some(defaults::AGENT_APP_ID));
    assert_eq!(seen[1].audience.as_deref(), Some(defaults::CONNECTOR_APP_ID));
    assert!(seen.iter().all(|s| s.refused == Some(Refusal::Audience)));
}

#[tokio::test]
async fn bad_tokens_scopes_and_paths() {
    let f = fixture();
    let (status, headers, body) = f.get("/v1.0/me", None).await;
    assert_eq!(status, 401);
    assert!(headers.contains_key("www-authenticate"));
    assert_eq!(body["error"]["message"], "Access token is empty.");
    let (status, _, body) = f.get("/v1.0/me", Some("not-a-jwt")).await;
    assert_eq!(status, 401);
    assert!(body["error"]["message"].as_str().unwrap().starts_with("IDX14100"));
    // A forged signature: refused, and not recorded (its claims cannot be trusted).
    let good = f.graph_token(defaults::JANE, &["User.Read"]);
    let (head, _) = good.rsplit_once('.').unwrap();
    let forged = format!("{head}.AAAA");
    let (status, _, body) = f.get("/v1.0/me", Some(&forged)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["message"], "Access token validation failure.");
    assert!(f.graph.tokens_seen().is_empty());
    // Graph's audience but no user-read scope: 403.
    let token = f.graph_token(defaults::JANE, &["Mail.Read"]);
    let (status, _, body) = f.get("/v1.0/me", Some(&token)).await;
    assert_eq!(status, 403);
    assert_envelope(&body, "Authorization_RequestDenied");
    // Expired.
    let idp = &f.idp;
    let spec = delegate_devstack_idp::TokenSpec {
        tenant: defaults::TENANT_ID.into(),
        user: Some(defaults::JANE.into()),
        client_id: defaults::AGENT_APP_ID.into(),
        audience: defaults::GRAPH_RESOURCE.into(),
        scopes: vec!["User.Read".into()],
        roles: Vec::new(),
        version: delegate_devstack_idp::TokenVersion::V1,
        lifetime: Duration::from_secs(600),
        client_authenticated: true,
    };
    let mut claims = idp.access_token_claims(&spec).unwrap();
    claims.insert("exp".into(), json!(1_000_000));
    let expired = idp.sign_claims(&claims).unwrap();
    let (status, _, body) = f.get("/v1.0/me", Some(expired.expose())).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["message"], "Lifetime validation failed, the token is expired.");
    // Another tenant's issuer and tid.
    let mut claims = idp.access_token_claims(&spec).unwrap();
    claims.insert("iss".into(), json!(idp.issuer_v1(defaults::OTHER_TENANT_ID)));
    claims.insert("tid".into(), json!(defaults::OTHER_TENANT_ID));
    let foreign = idp.sign_claims(&claims).unwrap();
    let (status, _, body) = f.get("/v1.0/me", Some(foreign.expose())).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["message"], "Access token validation failure. Invalid issuer.");
    // App-only token: /users works, /me does not.
    let app = idp
        .mint_app_token(
            defaults::AGENT_APP_ID,
            defaults::GRAPH_RESOURCE,
            &["User.Read.All"],
            Duration::from_secs(600),
        )
        .unwrap();
    let (status, _, body) = f.get("/v1.0/me", Some(app.expose())).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = f.get(&format!("/v1.0/users/{}", JANE.id), Some(app.expose())).await;
    assert_eq!(status, 200);
    // Unknown segment, other version, other method.
    let (status, _, body) = f.get("/v1.0/me/drive", Some(&good)).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["message"], "Resource not found for the segment 'drive'.");
    let (status, _, _) = f.get("/beta2/me", Some(&good)).await;
    assert_eq!(status, 400);
    let req = Request::patch("/v1.0/me")
        .header("authorization", format!("Bearer {good}"))
        .body(Body::from("{}"))
        .unwrap();
    let resp = f.graph.router().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 405);
    assert!(f.graph.request_count() >= 10);
}

#[test]
fn dates_are_graphs_format() {
    assert_eq!(crate::api::graph_date(0), "1970-01-01T00:00:00");
    assert_eq!(crate::api::graph_date(1_709_210_096), "2024-02-29T12:34:56");
}

#[test]
fn the_directory_matches_the_idps_users() {
    let idp = IdpConfig::default();
    for user in &crate::directory::USERS {
        let known = idp.users.iter().find(|u| u.oid == user.id).unwrap_or_else(|| panic!("{}", user.id));
        assert!(known.username.eq_ignore_ascii_case(user.user_principal_name));
        assert_eq!(known.display_name, user.display_name);
        assert_eq!(known.tenant.as_deref().unwrap_or(defaults::TENANT_ID), user.tenant);
        if let Some(m) = user.manager {
            assert!(crate::directory::USERS.iter().any(|u| u.id == m));
        }
    }
    assert_eq!(idp.users.len(), crate::directory::USERS.len());
}
