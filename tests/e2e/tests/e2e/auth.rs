//! Token A is verified before any plugin code runs: the attack corpus over real HTTP against
//! the real authorizer and the devstack IdP, asserting that no rejected request creates a
//! plugin instance.

use delegate_devstack_idp::{CorpusTarget, Expected, IdpConfig, IdpServer, attack_corpus, defaults};
use delegate_e2e::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_corpus_is_rejected_before_any_plugin_instance_exists() {
    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    let mut spec = ServerSpec::new(delegate_artifacts::ECHO);
    spec.authorizer = Some(devstack_authorizer(&idp));
    spec.max_body_bytes = 4096;
    let server = TestServer::start(spec).await;
    let corpus = attack_corpus(idp.idp(), &CorpusTarget::default()).unwrap();
    assert!(corpus.len() >= 35, "only {} cases", corpus.len());
    let http = client();
    let mut accepted = 0;
    for case in &corpus {
        let before = server.plugin.instances_created();
        let mut req = http.post(format!("{}/invocations", server.url)).body(r#"{"prompt":"hi"}"#);
        for value in &case.authorization {
            req = req.header("authorization", value);
        }
        let sent = tokio::time::timeout(Duration::from_secs(10), req.send()).await;
        let sent = sent.unwrap_or_else(|_| panic!("{}: request hung", case.name));
        let created = server.plugin.instances_created() - before;
        match (case.expected, sent) {
            (Expected::Accepted, Ok(resp)) => {
                assert_eq!(resp.status(), 200, "{}", case.name);
                let seen = collect(resp).await;
                assert_eq!(seen.text, "hi", "{}", case.name);
                assert_eq!(server.plugin.instances_created() - before, 1, "{}", case.name);
                accepted += 1;
            }
            (Expected::Unauthenticated, Ok(resp)) => {
                let status = resp.status().as_u16();
                // A header beyond the HTTP server's limit is refused by it (431) before any
                // handler runs; everything else reaches the authorizer and gets its 401.
                assert!(status == 401 || status == 431, "{}: {status}", case.name);
                if status == 401 {
                    assert_eq!(
                        resp.headers()["www-authenticate"],
                        "Bearer error=\"invalid_token\"",
                        "{}",
                        case.name
                    );
                    let body: serde_json::Value = resp.json().await.unwrap();
                    assert_eq!(body["error_type"], "invalid_token", "{}", case.name);
                }
                assert_eq!(created, 0, "{}: a plugin instance was created", case.name);
            }
            (Expected::Forbidden, Ok(resp)) => {
                assert_eq!(resp.status(), 403, "{}", case.name);
                assert_eq!(created, 0, "{}: a plugin instance was created", case.name);
            }
            // The server may close the connection on an oversized header instead of answering.
            (Expected::Unauthenticated, Err(e)) => {
                assert!(case.authorization.iter().any(|v| v.len() > 64 * 1024), "{}: {e}", case.name);
                assert_eq!(created, 0, "{}", case.name);
            }
            (expected, Err(e)) => panic!("{}: expected {expected:?}, transport error {e}", case.name),
        }
    }
    assert!(accepted >= 2, "the corpus should contain accepted controls");
    assert_eq!(ping(&server.url).await["status"], "Healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_grant_token_reaches_the_plugin_as_claims_only() {
    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    let mut spec = ServerSpec::new(delegate_artifacts::PROBE_SANDBOX);
    spec.authorizer = Some(devstack_authorizer(&idp));
    let server = TestServer::start(spec).await;
    let token = idp
        .idp()
        .mint_access_token(
            defaults::JANE,
            defaults::AGENT_APP_ID,
            defaults::AGENT_APP_ID,
            &[defaults::AGENT_SCOPE],
            Duration::from_secs(600),
        )
        .unwrap();
    let resp = client()
        .post(format!("{}/invocations", server.url))
        .bearer_auth(token.expose())
        .body("{}")
        .send()
        .await
        .unwrap();
    let seen = collect(resp).await;
    let result = seen.result.expect("probe result");
    let report: serde_json::Value = serde_json::from_str(&result).unwrap();
    assert_eq!(report["caller"]["subject"], defaults::JANE_OID);
    assert_eq!(report["caller"]["username"], defaults::JANE);
    assert_eq!(report["caller"]["client_id"], defaults::AGENT_APP_ID);
    assert_eq!(report["caller"]["scopes"], serde_json::json!([defaults::AGENT_SCOPE]));
    // The token itself never reaches the plugin: not in anything it reported.
    assert!(!result.contains(token.expose()));
    let signature = token.expose().rsplit('.').next().unwrap();
    assert!(!result.contains(signature));
}
