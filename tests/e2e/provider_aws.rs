//! aws-connector against the simulator's aws mode, through ingest, RabbitMQ and status: every
//! cell of the AWS row of the capability matrix, the 150-member group synced with two PATCH
//! requests and shrunk without reading members, 409 adoption, and a user without a last name.

use std::collections::BTreeMap;

use serde_json::json;

use scimrelay_proto::v1::{Operation, OutcomeResult};

use crate::provider_support::{self as ps, ProviderStack, assert_outcome, count};

const TOKEN_ENV: &str = "E2E_AWS_TOKEN";

async fn stack(label: &str) -> (ProviderStack, String) {
    let token = format!("aws-{}", uuid::Uuid::new_v4().simple());
    let sim = json!({"tenants": [{"id": "acme", "mode": "aws", "auth": {"kind": "bearer", "token": token}}]});
    let targets = format!(
        r#"targets:
  - id: aws-prod
    provider: aws
    tenants: [acme]
    base_url: "{{sim}}/acme/scim/v2"
    auth: {{ kind: bearer, token: {{ env: {TOKEN_ENV} }} }}
    shards: 2
    rate_limit_per_sec: 300
    delete_policy: delete
    concurrency: {{ min: 1, max: 8 }}
    retry: {{ max_attempts: 12, base_delay_ms: 100, max_delay_ms: 1000 }}
"#
    );
    let s = ps::start(
        label,
        &sim,
        &targets,
        BTreeMap::from([(TOKEN_ENV.to_owned(), token.clone())]),
        "aws-connector",
    )
    .await;
    (s, token)
}

#[tokio::test]
async fn aws_every_matrix_cell() {
    let (s, _) = stack("aws-cells").await;
    let o = s
        .settle(&[ps::user("a1", 1), ps::user("a2", 1), ps::user("a3", 1)])
        .await;
    o.iter()
        .for_each(|o| assert_outcome(o, OutcomeResult::Succeeded, Operation::Created));
    let metrics = s.connector_metrics("aws-prod", None, 0.0).await;
    let o = s
        .settle(&[
            ps::user("a1", 2),
            ps::user_event("a2", "user.deactivated", 2),
            ps::user_event("a3", "user.deleted", 2),
        ])
        .await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Updated);
    assert_outcome(&o[1], OutcomeResult::Succeeded, Operation::Deactivated);
    assert_outcome(&o[2], OutcomeResult::Succeeded, Operation::Deleted);
    let members = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let o = s
        .settle(&[ps::group("g1", "Engineers", &members(&["a1"]), 1)])
        .await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Created);
    let o = s
        .settle(&[ps::group("g1", "Engineering", &members(&["a1", "a2"]), 2)])
        .await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Updated);
    assert_eq!(
        ps::member_external_ids(&s, "acme", "g1").await,
        members(&["a1", "a2"])
    );
    let o = s.settle(&[ps::group_deleted("g1", 3)]).await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Deleted);
    s.connector_metrics("aws-prod", Some(&metrics), 6.0).await;
    let users = s.admin("acme", "users").await;
    let users = users.as_array().cloned().unwrap_or_default();
    assert_eq!(users.len(), 2, "a3 deleted");
    assert!(
        users
            .iter()
            .any(|u| u["externalId"] == "a2" && u["active"] == false)
    );
    assert!(
        users
            .iter()
            .any(|u| u["externalId"] == "a1" && u["title"] == "Title v2")
    );
    assert_eq!(
        s.admin("acme", "groups").await.as_array().map(Vec::len),
        Some(0)
    );
    let stats = s.admin("acme", "stats").await;
    assert_eq!(count(&stats, "PUT", "Groups/{id}"), 0, "{stats}");
    assert_eq!(count(&stats, "GET", "Groups/{id}"), 0, "{stats}");
}

#[tokio::test]
async fn aws_150_member_group_two_patches_then_shrinks_without_reading_members() {
    let (s, _) = stack("aws-150").await;
    let ids: Vec<String> = (0..150).map(|i| format!("m{i:03}")).collect();
    let users: Vec<_> = ids.iter().map(|id| ps::user(id, 1)).collect();
    for o in s.settle(&users).await {
        assert_outcome(&o, OutcomeResult::Succeeded, Operation::Created);
    }
    let o = s.settle(&[ps::group("big", "Big", &ids[..10], 1)]).await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Created);
    let before = s.admin("acme", "stats").await;
    let o = s.settle(&[ps::group("big", "Big", &ids, 2)]).await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Updated);
    let after = s.admin("acme", "stats").await;
    assert_eq!(
        count(&after, "PATCH", "Groups/{id}") - count(&before, "PATCH", "Groups/{id}"),
        2,
        "150 members (140 new) in two PATCH requests: {after}"
    );
    assert_eq!(ps::member_external_ids(&s, "acme", "big").await.len(), 150);
    let o = s.settle(&[ps::group("big", "Big", &ids[100..], 3)]).await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Updated);
    assert_eq!(
        ps::member_external_ids(&s, "acme", "big").await,
        ids[100..].to_vec()
    );
    let end = s.admin("acme", "stats").await;
    assert_eq!(
        count(&end, "PATCH", "Groups/{id}") - count(&after, "PATCH", "Groups/{id}"),
        1,
        "100 removals, one PATCH"
    );
    assert_eq!(
        count(&end, "GET", "Groups/{id}"),
        0,
        "never a GET of the group's members: {end}"
    );
    assert_eq!(
        end["by_status"]["400"].as_u64().unwrap_or(0),
        0,
        "never more than 100 changes: {end}"
    );
}

#[tokio::test]
async fn aws_409_adopts_and_a_resent_event_never_duplicates() {
    let (s, token) = stack("aws-409").await;
    // A user created by hand (another externalId): the event's create gets 409 and adopts it.
    let r = s
        .stack
        .http()
        .post(format!("{}/acme/scim/v2/Users", s.stack.sim_url))
        .bearer_auth(&token)
        .header("content-type", "application/scim+json")
        .json(&json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "h1@example.com",
                      "externalId": "made-by-hand", "displayName": "Hand Made",
                      "name": {"givenName": "Hand", "familyName": "Made"},
                      "emails": [{"value": "h1@example.com", "type": "work", "primary": true}]}))
        .send()
        .await
        .expect("pre-create");
    assert_eq!(r.status().as_u16(), 201);
    let o = s.settle(&[ps::user("h1", 1)]).await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Adopted);
    // The same desired state again under a new event id: no second user.
    let mut again = ps::user("h1", 2);
    again["user"]["title"] = json!("Title v1");
    let o = s.settle(&[again]).await;
    assert_eq!(o[0].result, OutcomeResult::Succeeded as i32, "{:?}", o[0]);
    let users = s.admin("acme", "users").await;
    assert_eq!(users.as_array().map(Vec::len), Some(1), "{users}");
    assert_eq!(users[0]["externalId"], "h1");
}

#[tokio::test]
async fn aws_user_without_family_name_fails_once_with_the_field_named() {
    let (s, _) = stack("aws-noname").await;
    let mut e = ps::user("n1", 1);
    e["user"]["name"] = json!({"givenName": "Only"});
    let o = s.settle(&[e]).await;
    assert_eq!(o[0].result, OutcomeResult::Failed as i32, "{:?}", o[0]);
    assert_eq!(o[0].attempt, 1, "not retried");
    assert!(o[0].detail.contains("familyName"), "{:?}", o[0]);
    let stats = s.admin("acme", "stats").await;
    assert_eq!(count(&stats, "POST", "Users"), 0, "{stats}");
}
