//! The strict profile against the in-process simulator's scim mode with PUT refused
//! (`scim: {put: false}`): every event kind converges with POST, PATCH and DELETE only.

use std::sync::Arc;

use serde_json::Value;

use scimrelay_proto::v1::{EventKind, Operation};
use scimrelay_provider_strict_scim::StrictScim;
use scimrelay_scim::Auth;
use scimrelay_testkit::{Harness, events, sim};

async fn sim() -> String {
    sim::start("tenants: [{id: acme, mode: scim, scim: {put: false}}]").await
}

async fn admin(origin: &str, what: &str) -> Value {
    sim::admin(origin, "acme", what).await
}

/// Requests by method over the whole run.
fn sent(stats: &Value, method: &str) -> u64 {
    sim::requests(stats, method, "")
}

fn harness(origin: &str, options: &str) -> Harness {
    Harness::new(
        Arc::new(StrictScim::default()),
        &format!(
            "targets:\n  - id: strict\n    provider: strict-scim\n    base_url: \"{origin}/acme/scim/v2\"\n    auth: {{kind: none}}\n    rate_limit_per_sec: 1000\n    delete_policy: delete\n    options: {options}\n"
        ),
        Auth::None,
    )
}

#[tokio::test]
async fn every_event_kind_converges_without_a_put() {
    let origin = sim().await;
    let h = harness(&origin, "{member_chunk: 2}");
    let mut u = events::user("u1");
    assert_eq!(
        h.ok(&events::upsert(u.clone(), 1)).await.operation,
        Operation::Created
    );
    u.display_name = "Renamed".into();
    assert_eq!(
        h.ok(&events::upsert(u.clone(), 2)).await.operation,
        Operation::Updated
    );
    assert_eq!(
        h.ok(&events::upsert(u.clone(), 3)).await.operation,
        Operation::Noop
    );
    let users = admin(&origin, "users").await;
    assert_eq!(users[0]["displayName"], "Renamed", "{users}");
    let ids: Vec<String> = (2..=6).map(|i| format!("u{i}")).collect();
    for id in &ids {
        h.ok(&events::upsert(events::user(id), 1)).await;
    }
    // Five members in PATCHes of at most two changes each.
    let created = h.ok(&events::group("g1", "Eng", &ids, 1)).await;
    assert_eq!(created.operation, Operation::Created);
    assert_eq!(created.members.as_ref().map(Vec::len), Some(5));
    let fewer = h.ok(&events::group("g1", "Eng", &ids[..2], 2)).await;
    assert_eq!(fewer.operation, Operation::Updated);
    let groups = admin(&origin, "groups").await;
    assert_eq!(
        groups[0]["members"].as_array().map(Vec::len),
        Some(2),
        "{groups}"
    );
    assert_eq!(
        h.ok(&events::user_event("u1", EventKind::UserDeactivated, 4))
            .await
            .operation,
        Operation::Deactivated
    );
    assert_eq!(
        h.ok(&events::user_event("u1", EventKind::UserDeleted, 5))
            .await
            .operation,
        Operation::Deleted
    );
    assert_eq!(
        h.ok(&events::group_deleted("g1", 3)).await.operation,
        Operation::Deleted
    );
    let stats = admin(&origin, "stats").await;
    assert_eq!(sent(&stats, "PUT"), 0, "{stats}");
    // The user's update, 5 additions by 2 (3), 3 removals by 2 (2), the deactivation.
    assert_eq!(sent(&stats, "PATCH"), 7, "{stats}");
}

#[tokio::test]
async fn a_user_made_elsewhere_is_adopted_on_409() {
    let origin = sim().await;
    let h = harness(&origin, "{}");
    // The same user created by another link (no externalId match): the 409 adopts it by
    // userName, and the PATCH links it.
    let other = harness(&origin, "{}");
    let mut u = events::user("u9");
    other.ok(&events::upsert(u.clone(), 1)).await;
    let users = admin(&origin, "users").await;
    let id = users[0]["id"].as_str().expect("id").to_owned();
    reqwest::Client::new()
        .patch(format!("{origin}/acme/scim/v2/Users/{id}"))
        .json(&serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "externalId", "value": "elsewhere"}]}))
        .send()
        .await
        .expect("unlink");
    u.title = "ignored by this profile".into();
    let done = h.ok(&events::upsert(u, 2)).await;
    assert_eq!(done.operation, Operation::Adopted, "{done:?}");
    assert_eq!(done.remote_id, id);
    let users = admin(&origin, "users").await;
    assert_eq!(users[0]["externalId"], "u9", "{users}");
}

/// A user deleted under the id the state of record holds: one DELETE (404), one externalId
/// lookup, a no-op — no read by id. A plan of the same deletion reads first and sends nothing.
#[tokio::test]
async fn a_stale_remembered_id_is_looked_up_and_a_plan_reads_first() {
    let origin = sim().await;
    let h = harness(&origin, "{}");
    h.ok(&events::upsert(events::user("u1"), 1)).await;
    h.ok(&events::upsert(events::user("u2"), 1)).await;
    let users = admin(&origin, "users").await;
    let id = users[0]["id"].as_str().expect("id").to_owned();
    let r = reqwest::Client::new()
        .delete(format!("{origin}/acme/scim/v2/Users/{id}"))
        .send()
        .await
        .expect("delete underneath");
    assert_eq!(r.status().as_u16(), 204);
    let before = admin(&origin, "stats").await;
    let gone = h
        .ok(&events::user_event("u1", EventKind::UserDeleted, 2))
        .await;
    assert_eq!(gone.operation, Operation::Noop, "{gone:?}");
    assert!(gone.detail.contains("not present"), "{gone:?}");
    let after = admin(&origin, "stats").await;
    assert_eq!(
        sent(&after, "DELETE") - sent(&before, "DELETE"),
        1,
        "{after}"
    );
    assert_eq!(
        sent(&after, "GET") - sent(&before, "GET"),
        1,
        "the lookup only: {after}"
    );
    let mut plan = events::user_event("u2", EventKind::UserDeleted, 2);
    plan.plan = true;
    let run = h.run(&plan).await;
    let done = run.result.expect("planned");
    assert_eq!(done.operation, Operation::Deleted, "{done:?}");
    assert_eq!(run.planned.len(), 1, "{:?}", run.planned);
    let last = admin(&origin, "stats").await;
    assert_eq!(
        sent(&last, "DELETE"),
        sent(&after, "DELETE"),
        "a plan sends no write"
    );
    assert_eq!(
        sent(&last, "GET") - sent(&after, "GET"),
        1,
        "a plan reads first: {last}"
    );
}
