//! github-connector against the simulator's github mode (EMU), through ingest, RabbitMQ and
//! status: every cell of the GitHub row of the capability matrix, opt-in permanent delete,
//! 409 adoption, a login clash failing permanently, and 403 throttling that only slows down.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use scimrelay_proto::v1::{Operation, OutcomeResult};

use crate::provider_support::{self as ps, ProviderStack, assert_outcome, count};

const TOKEN_ENV: &str = "E2E_GITHUB_TOKEN";

async fn stack(label: &str, delete_policy: &str, github: Value) -> (ProviderStack, String) {
    let token = format!("ghp_{}", uuid::Uuid::new_v4().simple());
    let mut knobs = json!({"shortcode": "acme", "requests_per_hour": 0});
    if let (Some(k), Value::Object(extra)) = (knobs.as_object_mut(), github) {
        k.extend(extra);
    }
    let sim = json!({"tenants": [{"id": "acme", "mode": "github", "auth": {"kind": "bearer", "token": token}, "github": knobs}]});
    let targets = format!(
        r#"targets:
  - id: gh-emu
    provider: github
    tenants: [acme]
    base_url: "{{sim}}/scim/v2/enterprises/acme"
    auth: {{ kind: bearer, token: {{ env: {TOKEN_ENV} }} }}
    shards: 2
    rate_limit_per_sec: 300
    delete_policy: {delete_policy}
    concurrency: {{ min: 1, max: 8 }}
    retry: {{ max_attempts: 12, base_delay_ms: 100, max_delay_ms: 1000 }}
    options: {{ shortcode: acme }}
"#
    );
    let s = ps::start(
        label,
        &sim,
        &targets,
        BTreeMap::from([(TOKEN_ENV.to_owned(), token.clone())]),
        "github-connector",
    )
    .await;
    (s, token)
}

#[tokio::test]
async fn github_every_matrix_cell_with_opt_in_delete() {
    let (s, _) = stack("gh-cells", "delete", json!({})).await;
    let o = s
        .settle(&[ps::user("g1", 1), ps::user("g2", 1), ps::user("g3", 1)])
        .await;
    o.iter()
        .for_each(|o| assert_outcome(o, OutcomeResult::Succeeded, Operation::Created));
    let metrics = s.connector_metrics("gh-emu", None, 0.0).await;
    let o = s
        .settle(&[
            ps::user("g1", 2),
            ps::user_event("g2", "user.deactivated", 2),
            ps::user_event("g3", "user.deleted", 2),
        ])
        .await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Updated);
    assert_outcome(&o[1], OutcomeResult::Succeeded, Operation::Deactivated);
    assert_outcome(&o[2], OutcomeResult::Succeeded, Operation::Deleted);
    assert!(o[2].detail.contains("permanently"), "{:?}", o[2]);
    let m = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let o = s.settle(&[ps::group("team", "Team", &m(&["g1"]), 1)]).await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Created);
    let o = s
        .settle(&[ps::group("team", "Team Renamed", &m(&["g1", "g2"]), 2)])
        .await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Updated);
    assert_eq!(
        ps::member_external_ids(&s, "acme", "team").await,
        m(&["g1", "g2"])
    );
    let o = s.settle(&[ps::group_deleted("team", 3)]).await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Deleted);
    s.connector_metrics("gh-emu", Some(&metrics), 6.0).await;
    let users = s.admin("acme", "users").await;
    assert_eq!(
        users.as_array().map(Vec::len),
        Some(2),
        "g3 hard-deleted: {users}"
    );
    let stats = s.admin("acme", "stats").await;
    assert_eq!(
        count(&stats, "PUT", "Users/{id}") + count(&stats, "PUT", "Groups/{id}"),
        0,
        "PATCH only: {stats}"
    );
}

#[tokio::test]
async fn github_delete_without_opt_in_suspends() {
    let (s, _) = stack("gh-nodelete", "deactivate", json!({})).await;
    s.settle(&[ps::user("d1", 1)]).await;
    let o = s.settle(&[ps::user_event("d1", "user.deleted", 2)]).await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Deactivated);
    let users = s.admin("acme", "users").await;
    assert_eq!(users[0]["active"], false);
    assert_eq!(
        count(&s.admin("acme", "stats").await, "DELETE", "Users/{id}"),
        0
    );
}

#[tokio::test]
async fn github_409_adopts_and_a_login_clash_fails_permanently() {
    let (s, token) = stack("gh-409", "deactivate", json!({})).await;
    let r = s
        .stack
        .http()
        .post(format!("{}/scim/v2/enterprises/acme/Users", s.stack.sim_url))
        .bearer_auth(&token)
        .header("user-agent", "e2e")
        .header("content-type", "application/scim+json")
        .json(&json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "h1@example.com",
                      "externalId": "made-by-hand", "active": true, "displayName": "Hand Made",
                      "name": {"givenName": "Hand", "familyName": "Made"},
                      "emails": [{"value": "h1@example.com", "type": "work", "primary": true}]}))
        .send()
        .await
        .expect("pre-create");
    assert_eq!(r.status().as_u16(), 201);
    let o = s.settle(&[ps::user("h1", 1)]).await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Adopted);
    // john.smith@a.example and john.smith@b.example both become the login john-smith_acme.
    let mut a = ps::user("c1", 1);
    a["user"]["userName"] = json!("john.smith@a.example");
    let mut b = ps::user("c2", 1);
    b["user"]["userName"] = json!("john.smith@b.example");
    let o = s.settle(&[a]).await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Created);
    let o = s.settle(&[b]).await;
    assert_eq!(o[0].result, OutcomeResult::Failed as i32, "{:?}", o[0]);
    assert_eq!(o[0].attempt, 1);
    assert!(o[0].detail.contains("john-smith_acme"), "{:?}", o[0]);
    assert_eq!(
        s.admin("acme", "users").await.as_array().map(Vec::len),
        Some(2)
    );
}

#[tokio::test]
async fn github_403_throttling_slows_down_and_fails_nothing() {
    let (s, _) = stack("gh-403", "deactivate", json!({"throttle_status": 403})).await;
    let r = s
        .stack
        .http()
        .put(format!("{}/_admin/tenants/acme/faults", s.stack.sim_url))
        .json(&json!({"rate_limit": {"per_sec": 5, "burst": 1}}))
        .send()
        .await
        .expect("faults");
    assert!(r.status().is_success());
    let events: Vec<_> = (0..12).map(|i| ps::user(&format!("t{i:02}"), 1)).collect();
    for o in s.settle(&events).await {
        assert_outcome(&o, OutcomeResult::Succeeded, Operation::Created);
    }
    let stats = s.admin("acme", "stats").await;
    assert!(
        stats["by_status"]["403"].as_u64().unwrap_or(0) >= 1,
        "the sim throttled with 403: {stats}"
    );
}
