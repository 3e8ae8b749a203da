//! scim-connector (the generic profile) against the simulator's plain RFC 7644 mode: one test
//! per static auth method (HTTP Basic, bearer token), each proving the Generic row of the
//! capability matrix and that the profile adapts to ServiceProviderConfig (discovered once,
//! PATCH instead of PUT, member diffs).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use scimrelay_proto::v1::{Operation, OutcomeResult};

use crate::provider_support::{self as ps, ProviderStack, assert_outcome, count};

const SECRET_ENV: &str = "E2E_GENERIC_SECRET";

async fn stack(label: &str, basic: bool) -> (ProviderStack, String) {
    let secret = format!("s-{}", uuid::Uuid::new_v4().simple());
    let (sim_auth, target_auth) = if basic {
        (
            json!({"kind": "basic", "username": "svc", "password": secret}),
            format!("{{ kind: basic, username: svc, password: {{ env: {SECRET_ENV} }} }}"),
        )
    } else {
        (
            json!({"kind": "bearer", "token": secret}),
            format!("{{ kind: bearer, token: {{ env: {SECRET_ENV} }} }}"),
        )
    };
    let sim = json!({"tenants": [{"id": "acme", "mode": "scim", "auth": sim_auth}]});
    let targets = format!(
        r#"targets:
  - id: app
    provider: scim
    tenants: [acme]
    base_url: "{{sim}}/acme/scim/v2"
    auth: {target_auth}
    shards: 2
    delete_policy: delete
    concurrency: {{ min: 1, max: 8 }}
    retry: {{ max_attempts: 12, base_delay_ms: 100, max_delay_ms: 1000 }}
"#
    );
    let s = ps::start(
        label,
        &sim,
        &targets,
        BTreeMap::from([(SECRET_ENV.to_owned(), secret.clone())]),
        "scim-connector",
    )
    .await;
    (s, secret)
}

/// Neither the connector's log nor any outcome detail carries the credential.
fn assert_no_secret(s: &ProviderStack, secret: &str) {
    let log = s.stack.connectors[0].log();
    assert!(!log.is_empty(), "the connector logged something");
    assert!(
        !log.contains(secret),
        "the secret leaked into the connector log"
    );
}

async fn every_cell(s: &ProviderStack) {
    let o = s
        .settle(&[ps::user("a", 1), ps::user("b", 1), ps::user("c", 1)])
        .await;
    o.iter()
        .for_each(|o| assert_outcome(o, OutcomeResult::Succeeded, Operation::Created));
    let metrics = s.connector_metrics("app", None, 0.0).await;
    let o = s
        .settle(&[
            ps::user("a", 2),
            ps::user_event("b", "user.deactivated", 2),
            ps::user_event("c", "user.deleted", 2),
        ])
        .await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Updated);
    assert_outcome(&o[1], OutcomeResult::Succeeded, Operation::Deactivated);
    assert_outcome(&o[2], OutcomeResult::Succeeded, Operation::Deleted);
    let m = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let o = s.settle(&[ps::group("g", "G", &m(&["a"]), 1)]).await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Created);
    let o = s.settle(&[ps::group("g", "G2", &m(&["a", "b"]), 2)]).await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Updated);
    assert_eq!(
        ps::member_external_ids(s, "acme", "g").await,
        m(&["a", "b"])
    );
    let o = s.settle(&[ps::group_deleted("g", 3)]).await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Deleted);
    // The platform cleared the title: the event leaves it out, and the server loses it too.
    let mut cleared = ps::user("a", 3);
    cleared["user"]
        .as_object_mut()
        .map(|u| u.remove("title"))
        .expect("a user with a title");
    let o = s.settle(&[cleared]).await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Updated);
    let users = s.admin("acme", "users").await;
    let a = users
        .as_array()
        .and_then(|u| u.iter().find(|u| u["externalId"] == "a"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(a["displayName"], "User a v3", "{users}");
    assert!(a.get("title").is_none(), "title cleared: {a}");
    s.connector_metrics("app", Some(&metrics), 6.0).await;
    let stats = s.admin("acme", "stats").await;
    assert_eq!(
        count(&stats, "GET", "ServiceProviderConfig"),
        1,
        "discovered once: {stats}"
    );
    assert!(
        count(&stats, "PATCH", "Users/{id}") >= 3,
        "PATCH, as announced: {stats}"
    );
    assert_eq!(
        count(&stats, "PUT", "Users/{id}") + count(&stats, "PUT", "Groups/{id}"),
        0,
        "{stats}"
    );
    assert_eq!(
        stats["by_status"]["401"].as_u64().unwrap_or(0),
        0,
        "{stats}"
    );
}

#[tokio::test]
async fn generic_scim_with_basic_auth_every_cell() {
    let (s, secret) = stack("generic-basic", true).await;
    every_cell(&s).await;
    assert_no_secret(&s, &secret);
}

#[tokio::test]
async fn generic_scim_with_bearer_auth_every_cell() {
    let (s, secret) = stack("generic-bearer", false).await;
    every_cell(&s).await;
    assert_no_secret(&s, &secret);
}

/// A single event sent with `"plan": true` runs in plan mode at a live target: its outcome is
/// `planned`, listing the requests it would send (e-mails masked); the simulator sees no write,
/// and the ledger is untouched, so the same change sent for real later is applied.
#[tokio::test]
async fn a_single_event_in_plan_mode_sends_no_write() {
    let (s, _) = stack("generic-plan", false).await;
    let o = s.settle(&[ps::user("p1", 1)]).await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Created);
    let writes = |stats: &Value| {
        ["POST", "PUT", "PATCH", "DELETE"]
            .iter()
            .flat_map(|m| {
                ["Users", "Users/{id}"]
                    .iter()
                    .map(move |c| count(stats, m, c))
            })
            .sum::<u64>()
    };
    let before = writes(&s.admin("acme", "stats").await);
    let mut update = ps::user("p1", 2);
    update["plan"] = json!(true);
    let mut new = ps::user("p2", 1);
    new["plan"] = json!(true);
    let o = s.settle(&[update, new]).await;
    for o in &o {
        assert_eq!(o.result, OutcomeResult::Planned as i32, "{o:?}");
    }
    assert!(
        o[0].planned.iter().any(|r| r.method == "PATCH"
            && r.path.contains("/Users/")
            && r.body.contains("Title v2")),
        "{:?}",
        o[0].planned
    );
    assert!(
        o[1].planned
            .iter()
            .any(|r| r.method == "POST" && r.path.ends_with("/Users")),
        "{:?}",
        o[1].planned
    );
    for r in o.iter().flat_map(|o| &o.planned) {
        assert!(
            !r.body.contains("@example.com"),
            "an e-mail in a plan: {r:?}"
        );
    }
    assert_eq!(
        writes(&s.admin("acme", "stats").await),
        before,
        "plan mode wrote to the target"
    );
    let users = s.admin("acme", "users").await;
    let users = users.as_array().cloned().unwrap_or_default();
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0]["title"], "Title v1", "{users:?}");

    // The ledger did not take the plan for a change: the same version for real is applied.
    let o = s
        .settle(&[
            json!({"id": "evt-p1-v2-real", "kind": "user.upserted", "tenant": "acme",
        "version": 2, "user": ps::user("p1", 2)["user"].clone()}),
        ])
        .await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Updated);
    let users = s.admin("acme", "users").await;
    assert_eq!(users[0]["title"], "Title v2", "{users}");
}
