//! The AWS IAM Identity Center profile against the in-process simulator's aws mode: every
//! matrix cell and each quirk docs/providers/aws.md lists.

use std::sync::Arc;

use serde_json::Value;

use scimrelay_connector::{FailureClass, Provider};
use scimrelay_proto::v1::{EventKind, Operation};
use scimrelay_provider_aws::Aws;
use scimrelay_scim::{Auth, Secret};
use scimrelay_testkit::{Harness, events};

const TOKEN: &str = "aws-scim-token";

async fn sim(extra: &str) -> String {
    let yaml = format!(
        "tenants: [{{id: acme, mode: aws, auth: {{kind: bearer, token: {TOKEN}}}{extra}}}]"
    );
    scimrelay_testkit::sim::start(&yaml).await
}

async fn admin(origin: &str, what: &str) -> Value {
    scimrelay_testkit::sim::admin(origin, "acme", what).await
}

async fn reset_stats(origin: &str) -> Value {
    admin(origin, "stats").await
}

fn count(stats: &Value, method: &str, path: &str) -> u64 {
    scimrelay_testkit::sim::requests(stats, method, path)
}

fn harness_with(origin: &str, provider: Arc<dyn Provider>, extra: &str) -> Harness {
    Harness::new(
        provider,
        &format!(
            "targets:\n  - id: aws\n    provider: aws\n    base_url: \"{origin}/acme/scim/v2\"\n    auth: {{kind: none}}\n    rate_limit_per_sec: 2000\n{extra}"
        ),
        Auth::Bearer(Secret::new(TOKEN.to_string())),
    )
}

fn harness(origin: &str, extra: &str) -> Harness {
    harness_with(origin, Arc::new(Aws::new()), extra)
}

async fn members_of(origin: &str, external_id: &str) -> Vec<String> {
    let groups = admin(origin, "groups").await;
    let users = admin(origin, "users").await;
    let g = groups
        .as_array()
        .and_then(|a| a.iter().find(|g| g["externalId"] == external_id))
        .cloned()
        .unwrap_or(Value::Null);
    let mut out: Vec<String> = g["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|x| x["value"].as_str())
                .filter_map(|id| {
                    users.as_array()?.iter().find(|u| u["id"] == id)?["externalId"]
                        .as_str()
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test]
async fn user_cells_with_single_attribute_patches() {
    let origin = sim("").await;
    let h = harness(&origin, "    delete_policy: delete\n");
    let mut u = events::user("u1");
    u.title = "Engineer".into();
    u.department = "R&D".into();
    assert_eq!(
        h.ok(&events::upsert(u.clone(), 1)).await.operation,
        Operation::Created
    );
    // Several attributes at once, userName included: the sim refuses a path-less multi-attribute
    // replace and repeated userName/active operations, so success proves explicit paths.
    u.given_name = "Renamed".into();
    u.user_name = "u1-renamed@example.com".into();
    u.title.clear();
    u.department = "Ops".into();
    assert_eq!(
        h.ok(&events::upsert(u.clone(), 2)).await.operation,
        Operation::Updated
    );
    let users = admin(&origin, "users").await;
    assert_eq!(users[0]["name"]["givenName"], "Renamed");
    assert_eq!(users[0]["userName"], "u1-renamed@example.com");
    assert!(
        users[0].get("title").is_none(),
        "title removed: {}",
        users[0]
    );
    assert_eq!(
        h.ok(&events::user_event("u1", EventKind::UserDeactivated, 3))
            .await
            .operation,
        Operation::Deactivated
    );
    assert_eq!(admin(&origin, "users").await[0]["active"], false);
    assert_eq!(
        h.ok(&events::user_event("u1", EventKind::UserDeleted, 4))
            .await
            .operation,
        Operation::Deleted
    );
    assert_eq!(
        admin(&origin, "users").await.as_array().map(Vec::len),
        Some(0)
    );
    let s = admin(&origin, "stats").await;
    assert_eq!(count(&s, "PUT", "Users/{id}"), 0, "{s}");
    assert_eq!(
        s["by_status"]["400"].as_u64().unwrap_or(0),
        0,
        "no 400: {s}"
    );
}

#[tokio::test]
async fn a_user_without_family_name_fails_permanently_before_any_request() {
    let origin = sim("").await;
    let h = harness(&origin, "");
    let mut u = events::user("u2");
    u.family_name.clear();
    let run = h.run(&events::upsert(u, 1)).await;
    let err = run.result.expect_err("no family name");
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.detail.contains("familyName"), "{err}");
    assert_eq!(run.stats.requests, 0);
}

#[tokio::test]
async fn a_150_member_group_takes_two_patches_and_shrinks_without_reading_members() {
    let origin = sim("").await;
    let h = harness(&origin, "");
    let ids: Vec<String> = (0..150).map(|i| format!("m{i:03}")).collect();
    for id in &ids {
        h.ok(&events::upsert(events::user(id), 1)).await;
    }
    let before = reset_stats(&origin).await;
    let c = h.ok(&events::group("g1", "Eng", &ids[0..10], 1)).await;
    assert_eq!(c.operation, Operation::Created);
    let grown = h.ok(&events::group("g1", "Eng", &ids, 2)).await;
    assert_eq!(grown.operation, Operation::Updated);
    let s = admin(&origin, "stats").await;
    assert_eq!(
        count(&s, "PATCH", "Groups/{id}") - count(&before, "PATCH", "Groups/{id}"),
        2,
        "140 additions in two PATCH requests (100 + 40): {s}"
    );
    assert_eq!(members_of(&origin, "g1").await.len(), 150);
    // Shrink to 50: 100 removals, one PATCH, and the members are right although AWS never shows them.
    let shrunk = h.ok(&events::group("g1", "Eng", &ids[100..150], 3)).await;
    assert_eq!(shrunk.operation, Operation::Updated);
    let mut want = ids[100..150].to_vec();
    want.sort();
    assert_eq!(members_of(&origin, "g1").await, want);
    let s = admin(&origin, "stats").await;
    assert_eq!(
        count(&s, "PATCH", "Groups/{id}") - count(&before, "PATCH", "Groups/{id}"),
        3,
        "{s}"
    );
    assert_eq!(
        count(&s, "GET", "Groups/{id}"),
        0,
        "never a GET of the group's members: {s}"
    );
    assert_eq!(count(&s, "PUT", "Groups/{id}"), 0, "{s}");
    assert_eq!(
        s["by_status"]["400"].as_u64().unwrap_or(0),
        0,
        "no chunk over 100: {s}"
    );
    // Created with 150 at once: POST with 100, PATCH with 50.
    let before = admin(&origin, "stats").await;
    assert_eq!(
        h.ok(&events::group("g2", "Big", &ids, 1)).await.operation,
        Operation::Created
    );
    let s = admin(&origin, "stats").await;
    assert_eq!(
        count(&s, "PATCH", "Groups/{id}") - count(&before, "PATCH", "Groups/{id}"),
        1
    );
    assert_eq!(members_of(&origin, "g2").await.len(), 150);
    assert_eq!(
        h.ok(&events::group_deleted("g2", 2)).await.operation,
        Operation::Deleted
    );
    assert!(members_of(&origin, "g2").await.is_empty());
}

#[tokio::test]
async fn after_a_restart_membership_is_learned_by_filter_not_by_get() {
    let origin = sim("").await;
    let ids: Vec<String> = (0..6).map(|i| format!("r{i}")).collect();
    let first = harness(&origin, "");
    for id in &ids {
        first.ok(&events::upsert(events::user(id), 1)).await;
    }
    first.ok(&events::group("g", "Team", &ids[0..4], 1)).await;
    // A new process: empty ledger, no applied member set.
    let second = harness(&origin, "");
    let done = second
        .ok(&events::group("g", "Team renamed", &ids[2..6], 2))
        .await;
    assert_eq!(done.operation, Operation::Updated, "{done:?}");
    let mut want = ids[2..6].to_vec();
    want.sort();
    assert_eq!(members_of(&origin, "g").await, want);
    let s = admin(&origin, "stats").await;
    assert_eq!(count(&s, "GET", "Groups/{id}"), 0, "{s}");
    assert_eq!(
        s["by_status"]["409"].as_u64().unwrap_or(0),
        0,
        "found by externalId, not created twice"
    );
}

/// The member set applied to a group is the state of record's, not a replica's memory: A
/// applies {r0, r1}; B (the shard moved) applies {r0}; when A owns the shard again and the
/// platform wants {r0, r1} back, A diffs against {r0} — a replica trusting what it applied
/// itself would see nothing to do and leave r1 out.
#[tokio::test]
async fn a_replica_that_regains_a_group_diffs_against_the_state_of_record() {
    let origin = sim("").await;
    let ids: Vec<String> = (0..2).map(|i| format!("r{i}")).collect();
    let a = harness(&origin, "");
    for id in &ids {
        a.ok(&events::upsert(events::user(id), 1)).await;
    }
    a.ok(&events::group("g", "Team", &ids, 1)).await;
    let b = a.replica(Arc::new(Aws::new()));
    b.ok(&events::group("g", "Team", &ids[..1], 2)).await;
    assert_eq!(members_of(&origin, "g").await, ["r0"]);
    let done = a.ok(&events::group("g", "Team", &ids, 3)).await;
    assert_eq!(done.operation, Operation::Updated, "{done:?}");
    assert_eq!(members_of(&origin, "g").await, ["r0", "r1"]);
    let s = admin(&origin, "stats").await;
    assert_eq!(count(&s, "GET", "Groups/{id}"), 0, "{s}");
}

/// After a failed attempt the applied member set is unknown (a chunked change may have stopped
/// half-way): the next converge learns it from AWS once instead of trusting it.
#[tokio::test]
async fn after_a_failure_membership_is_learned_again() {
    let origin = sim("").await;
    let ids: Vec<String> = (0..3).map(|i| format!("f{i}")).collect();
    let h = harness(&origin, "");
    for id in &ids {
        h.ok(&events::upsert(events::user(id), 1)).await;
    }
    h.ok(&events::group("g", "Team", &ids[..2], 1)).await;
    let faults = |body: Value| {
        let origin = origin.clone();
        async move {
            reqwest::Client::new()
                .put(format!("{origin}/_admin/tenants/acme/faults"))
                .json(&body)
                .send()
                .await
                .expect("faults");
        }
    };
    faults(serde_json::json!({"after_effect_rate": 1.0, "error_statuses": [500]})).await;
    let failed = h.run(&events::group("g", "Team", &ids, 2)).await;
    assert!(failed.result.is_err(), "{:?}", failed.result);
    assert!(
        h.record(&events::group("g", "Team", &ids, 2))
            .members
            .is_none()
    );
    faults(serde_json::json!({})).await;
    let before = admin(&origin, "stats").await;
    let done = h.ok(&events::group("g", "Team", &ids[..1], 3)).await;
    assert_eq!(done.operation, Operation::Updated, "{done:?}");
    assert_eq!(members_of(&origin, "g").await, ["f0"]);
    let after = admin(&origin, "stats").await;
    assert!(
        count(&after, "GET", "Users") > count(&before, "GET", "Users"),
        "the members were learned by filter"
    );
}

#[tokio::test]
async fn a_409_on_create_adopts_by_user_name() {
    let origin = sim("").await;
    harness(&origin, "")
        .ok(&events::upsert(events::user("u5"), 1))
        .await;
    let mut again = events::user("u5");
    again.id = "u5-platform".into();
    let done = harness(&origin, "").ok(&events::upsert(again, 1)).await;
    assert_eq!(done.operation, Operation::Adopted, "{done:?}");
    let users = admin(&origin, "users").await;
    assert_eq!(users.as_array().map(Vec::len), Some(1));
    assert_eq!(
        users[0]["externalId"], "u5-platform",
        "linked to the platform id"
    );
}

#[tokio::test]
async fn throttling_without_retry_after_backs_off_and_succeeds() {
    let origin = sim(", faults: {rate_limit: {per_sec: 3, burst: 1}}").await;
    let h = harness(&origin, "");
    for i in 0..5 {
        h.ok(&events::upsert(events::user(&format!("t{i}")), 1))
            .await;
    }
    let s = admin(&origin, "stats").await;
    assert!(s["throttled"].as_u64().unwrap_or(0) >= 1, "{s}");
    assert_eq!(
        admin(&origin, "users").await.as_array().map(Vec::len),
        Some(5)
    );
}

#[tokio::test]
async fn plan_mode_reports_the_chunked_requests_and_sends_no_write() {
    let origin = sim("").await;
    let apply = harness(&origin, "");
    let ids: Vec<String> = (0..150).map(|i| format!("p{i:03}")).collect();
    for id in &ids {
        apply.ok(&events::upsert(events::user(id), 1)).await;
    }
    let plan = harness(&origin, "    mode: plan\n");
    let run = plan.run(&events::group("pg", "Planned", &ids, 1)).await;
    assert!(run.result.is_ok(), "{run:?}");
    let methods: Vec<&str> = run.planned.iter().map(|p| p.method.as_str()).collect();
    assert_eq!(
        methods,
        ["POST", "PATCH"],
        "create with 100, PATCH the other 50"
    );
    assert!(
        !run.planned[1].body.contains("@example.com"),
        "bodies are masked"
    );
    assert_eq!(
        admin(&origin, "groups").await.as_array().map(Vec::len),
        Some(0)
    );
}

/// The AWS user id of the user with this externalId (read through the admin API).
async fn user_id(origin: &str, external_id: &str) -> String {
    admin(origin, "users")
        .await
        .as_array()
        .and_then(|a| a.iter().find(|u| u["externalId"] == external_id))
        .and_then(|u| u["id"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no user with externalId {external_id}"))
}

#[tokio::test]
async fn a_409_on_group_create_adopts_the_group_found_by_display_name_and_links_it() {
    let origin = sim("").await;
    let h = harness(&origin, "");
    for id in ["a", "b", "x"] {
        h.ok(&events::upsert(events::user(id), 1)).await;
    }
    // Made by hand at AWS (no externalId), with one member the platform does not want.
    let resp = reqwest::Client::new()
        .post(format!("{origin}/acme/scim/v2/Groups"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "Eng",
            "members": [{"value": user_id(&origin, "x").await}, {"value": user_id(&origin, "a").await}],
        }))
        .send()
        .await
        .expect("create group");
    assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
    let members = ["a".to_string(), "b".to_string()];
    let done = h.ok(&events::group("g1", "Eng", &members, 1)).await;
    assert_eq!(done.operation, Operation::Adopted, "{done:?}");
    let groups = admin(&origin, "groups").await;
    assert_eq!(
        groups.as_array().map(Vec::len),
        Some(1),
        "no duplicate: {groups}"
    );
    assert_eq!(groups[0]["id"].as_str(), Some(done.remote_id.as_str()));
    assert_eq!(
        groups[0]["externalId"], "g1",
        "linked to the platform id: {groups}"
    );
    assert_eq!(
        members_of(&origin, "g1").await,
        ["a", "b"],
        "x removed, b added"
    );
    let s = admin(&origin, "stats").await;
    assert_eq!(s["by_status"]["409"].as_u64(), Some(1), "{s}");
    assert_eq!(count(&s, "GET", "Groups/{id}"), 0, "{s}");
    // After a restart the group is found by externalId: no second 409, nothing to change.
    let again = harness(&origin, "")
        .ok(&events::group("g1", "Eng", &members, 2))
        .await;
    assert_eq!(again.operation, Operation::Noop, "{again:?}");
    assert_eq!(again.remote_id, done.remote_id);
    let s = admin(&origin, "stats").await;
    assert_eq!(s["by_status"]["409"].as_u64(), Some(1), "{s}");
}

#[tokio::test]
async fn membership_is_learned_through_short_cursor_pages() {
    // Every cursor page is cut short (1..count items) although more exist.
    let origin = sim(", aws: {short_page_rate: 1.0}").await;
    let first = harness(&origin, "");
    let ids: Vec<String> = (0..150).map(|i| format!("s{i:03}")).collect();
    for id in &ids {
        first.ok(&events::upsert(events::user(id), 1)).await;
    }
    first.ok(&events::group("g", "Paged", &ids, 1)).await;
    assert_eq!(members_of(&origin, "g").await.len(), 150);
    // A new process knows nothing applied: it must read all 150 members through
    // `groups.value eq` pages, each shorter than the 100 asked for. Stopping at a short page
    // would leave the unseen members in the group.
    let before = admin(&origin, "stats").await;
    let second = harness(&origin, "");
    let done = second.ok(&events::group("g", "Paged", &ids[75..], 2)).await;
    assert_eq!(done.operation, Operation::Updated, "{done:?}");
    let mut want = ids[75..].to_vec();
    want.sort();
    assert_eq!(members_of(&origin, "g").await, want);
    let s = admin(&origin, "stats").await;
    let lists = count(&s, "GET", "Users") - count(&before, "GET", "Users");
    assert!(
        lists >= 75 + 2,
        "75 member lookups plus at least two membership pages: {lists}"
    );
    assert_eq!(
        s["by_status"]["400"].as_u64().unwrap_or(0),
        0,
        "no startIndex: {s}"
    );
    assert_eq!(count(&s, "GET", "Groups/{id}"), 0, "{s}");
}

/// A group renamed with the same members: one PATCH of the name, no member operation, and a
/// group deleted under an id the state of record still holds: one DELETE, then (404) the
/// externalId lookup — never a GET of the group.
#[tokio::test]
async fn a_rename_alone_is_one_patch_and_a_stale_group_id_is_looked_up_not_read() {
    let origin = sim("").await;
    let h = harness(&origin, "");
    let ids: Vec<String> = (0..3).map(|i| format!("r{i}")).collect();
    for id in &ids {
        h.ok(&events::upsert(events::user(id), 1)).await;
    }
    h.ok(&events::group("g1", "Eng", &ids, 1)).await;
    let before = reset_stats(&origin).await;
    let renamed = h.ok(&events::group("g1", "Engineering", &ids, 2)).await;
    assert_eq!(renamed.operation, Operation::Updated, "{renamed:?}");
    let s = admin(&origin, "stats").await;
    assert_eq!(
        count(&s, "PATCH", "Groups/{id}") - count(&before, "PATCH", "Groups/{id}"),
        1,
        "{s}"
    );
    let groups = admin(&origin, "groups").await;
    assert_eq!(groups[0]["displayName"], "Engineering", "{groups}");
    assert_eq!(members_of(&origin, "g1").await.len(), 3);
    // Deleted at AWS behind our back: the remembered id answers 404.
    let id = groups[0]["id"].as_str().expect("id").to_owned();
    let r = reqwest::Client::new()
        .delete(format!("{origin}/acme/scim/v2/Groups/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete underneath");
    assert_eq!(r.status().as_u16(), 204);
    let gone = h.ok(&events::group_deleted("g1", 3)).await;
    assert_eq!(gone.operation, Operation::Noop, "{gone:?}");
    let s = admin(&origin, "stats").await;
    assert_eq!(
        count(&s, "GET", "Groups/{id}"),
        0,
        "never a GET of a group: {s}"
    );
    assert_eq!(
        count(&s, "DELETE", "Groups/{id}") - count(&before, "DELETE", "Groups/{id}"),
        2,
        "ours, then the harness's own DELETE underneath: {s}"
    );
}
