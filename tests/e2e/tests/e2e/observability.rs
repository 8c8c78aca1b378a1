//! `/metrics` after Jane's scenario: the expected series with the counts the audit log
//! (the ground truth of what happened) implies, and no credential in metrics or logs.

use crate::credentials::captured_logs;
use crate::lifecycle::{ADMIN_TOKEN, fleet};
use delegate_devstack::idp_defaults as ids;
use delegate_e2e::*;
use serde_json::json;

/// The value of the sample whose line starts with `series` (name and labels, exactly), if
/// there is one: a missing series is not a zero.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.split_whitespace().next())
        .map(|v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_janes_scenario_match_the_audit_log_and_hold_no_credentials() {
    let logs = captured_logs();
    let fleet = fleet("").await;
    let token = fleet.token_a(ids::JANE);
    for _ in 0..2 {
        let seen = collect(
            client()
                .post(format!("{}/invocations", fleet.url))
                .bearer_auth(&token)
                .json(&json!({ "prompt": "Show me 5 incidents assigned to me" }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(seen.status, 200, "{seen:?}");
        assert!(seen.text.contains("INC0012478"), "{seen:?}");
    }
    let denied =
        client().post(format!("{}/invocations", fleet.url)).json(&json!({"prompt": "x"})).send().await;
    assert_eq!(denied.unwrap().status().as_u16(), 401);

    // Unauthenticated scrapes are refused like every admin call.
    let resp = client().get(format!("{}/metrics", fleet.admin)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp =
        client().get(format!("{}/metrics", fleet.admin)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = resp.text().await.unwrap();

    // What the audit log says happened.
    let audit: Vec<serde_json::Value> = std::fs::read_to_string(&fleet.audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let invocations: Vec<_> = audit.iter().filter(|r| r["kind"] == "invocation").collect();
    let requests: Vec<_> = audit.iter().filter(|r| r["kind"].is_null()).collect();
    assert_eq!(invocations.len(), 2);
    let sum = |field: &str| invocations.iter().map(|r| r[field].as_u64().unwrap()).sum::<u64>() as f64;
    let allowed_200 =
        requests.iter().filter(|r| r["decision"] == "allowed" && r["status"] == 200).count() as f64;
    let cache = |c: &str| requests.iter().filter(|r| r["cache"] == c).count() as f64;
    assert!(allowed_200 >= 2.0 && cache("miss") == 1.0 && cache("hit") >= 1.0, "{requests:?}");

    let expect = [
        (r#"delegate_invocations_total{plugin="servicenow-agent",version="unversioned",outcome="ok"}"#, 2.0),
        (r#"delegate_authorizations_total{outcome="ok"}"#, 2.0),
        (r#"delegate_authorizations_total{outcome="unauthenticated"}"#, 1.0),
        (r#"delegate_phase_duration_seconds_count{phase="authorize"}"#, 3.0),
        (r#"delegate_phase_duration_seconds_count{phase="instantiate"}"#, 2.0),
        (r#"delegate_phase_duration_seconds_count{phase="guest_cpu"}"#, 2.0),
        (r#"delegate_phase_duration_seconds_count{phase="model_call"}"#, sum("model_calls")),
        (r#"delegate_phase_duration_seconds_count{phase="egress_call"}"#, allowed_200),
        (r#"delegate_egress_requests_total{host="localhost",decision="allowed",status="200"}"#, allowed_200),
        (r#"delegate_token_exchanges_total{provider="servicenow",outcome="ok",cache="miss"}"#, cache("miss")),
        (r#"delegate_token_exchanges_total{provider="servicenow",outcome="ok",cache="hit"}"#, cache("hit")),
        (r#"delegate_model_tokens_total{plugin="servicenow-agent",kind="input"}"#, sum("input_tokens")),
        (r#"delegate_model_tokens_total{plugin="servicenow-agent",kind="output"}"#, sum("output_tokens")),
        (r#"delegate_invocation_duration_seconds_count{plugin="servicenow-agent"}"#, 2.0),
        ("delegate_invocations_in_flight", 0.0),
        ("delegate_instances_live", 0.0),
    ];
    for (series, want) in expect {
        assert_eq!(sample(&text, series), Some(want), "{series}\n{text}");
    }
    assert!(sum("model_calls") >= 2.0 && sum("input_tokens") > 0.0);
    assert!(sample(&text, r#"delegate_phase_duration_seconds_sum{phase="model_call"}"#) > Some(0.0));

    // No credential anywhere: not Token A, not the agent's client secret, not a JWT at all.
    let secret = std::fs::read_to_string(&fleet.stack.secret_path).unwrap();
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    for (what, hay) in [("metrics", &text), ("logs", &logs)] {
        assert!(!hay.contains(&token), "Token A in {what}");
        assert!(!hay.contains(secret.trim()), "client secret in {what}");
    }
    assert!(!text.contains("eyJ"), "a JWT-looking value in metrics");
    // The invocation's log lines carry its id (from the invocation span).
    let id = invocations[0]["invocation_id"].as_str().unwrap();
    assert!(
        logs.lines().any(|l| l.contains(id) && l.contains("invocation finished")),
        "no log line for {id}"
    );
}
