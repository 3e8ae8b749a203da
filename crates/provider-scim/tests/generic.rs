//! The generic profile against the in-process simulator (plain RFC 7644 mode): discovery once
//! per target, PATCH with If-Match when offered, 409 adoption, member diffs, plan mode.

use std::sync::Arc;

use serde_json::Value;

use scimrelay_proto::v1::{EventKind, Operation};
use scimrelay_provider_scim::GenericScim;
use scimrelay_provider_scim::testkit::{Harness, events};
use scimrelay_scim::{Auth, Secret};

async fn sim(yaml: &str) -> String {
    let config = scimrelay_sim::SimConfig::from_yaml_str(yaml).expect("sim config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(scimrelay_sim::serve(
        config,
        listener,
        std::future::pending(),
    ));
    format!("http://{addr}")
}

async fn stats(origin: &str, tenant: &str) -> Value {
    reqwest::get(format!("{origin}/_admin/tenants/{tenant}/stats"))
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json")
}

fn count(stats: &Value, method: &str, path: &str) -> u64 {
    stats["requests"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|r| {
                    r["method"] == method && r["path"].as_str().is_some_and(|p| p.ends_with(path))
                })
                .map(|r| r["count"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

fn harness(origin: &str, extra: &str, auth: Auth) -> Harness {
    Harness::new(
        Arc::new(GenericScim::new()),
        &format!(
            "targets:\n  - id: app\n    provider: scim\n    base_url: \"{origin}/acme/scim/v2\"\n    auth: {{kind: none}}\n    rate_limit_per_sec: 1000\n{extra}"
        ),
        auth,
    )
}

#[tokio::test]
async fn discovers_once_then_patches_with_if_match() {
    let origin = sim("tenants: [{id: acme, mode: scim, auth: {kind: bearer, token: t0k}}]").await;
    let h = harness(&origin, "", Auth::Bearer(Secret::new("t0k".to_string())));
    let mut u = events::user("u1");
    assert_eq!(
        h.ok(&events::upsert(u.clone(), 1)).await.operation,
        Operation::Created
    );
    u.title = "Boss".into();
    assert_eq!(
        h.ok(&events::upsert(u.clone(), 2)).await.operation,
        Operation::Updated
    );
    // Same state again: the remote matches, nothing is written.
    assert_eq!(
        h.ok(&events::upsert(u.clone(), 3)).await.operation,
        Operation::Noop
    );
    let s = stats(&origin, "acme").await;
    assert_eq!(count(&s, "GET", "ServiceProviderConfig"), 1, "{s}");
    assert_eq!(
        count(&s, "PATCH", "Users/{id}"),
        1,
        "updates use PATCH: {s}"
    );
    assert_eq!(count(&s, "PUT", "Users/{id}"), 0, "{s}");
    // The sim answers 412 to a stale If-Match; nothing failed, so the tag was current.
    assert_eq!(s["by_status"]["412"].as_u64().unwrap_or(0), 0, "{s}");
}

#[tokio::test]
async fn basic_auth_and_409_adoption() {
    let origin =
        sim("tenants: [{id: acme, mode: scim, auth: {kind: basic, username: svc, password: pw}}]")
            .await;
    let auth = Auth::Basic {
        username: "svc".into(),
        password: Secret::new("pw".to_string()),
    };
    let first = harness(&origin, "", auth.clone());
    first.ok(&events::upsert(events::user("u2"), 1)).await;
    // A second connector with an empty ledger whose lookup by externalId misses (the object
    // was made by another tool with another externalId): the 409 adopts it by userName.
    let mut other = events::user("u2");
    other.id = "u2-new".into();
    let second = harness(&origin, "", auth);
    let done = second.ok(&events::upsert(other, 1)).await;
    assert_eq!(done.operation, Operation::Adopted, "{done:?}");
    let users: Value = reqwest::get(format!("{origin}/_admin/tenants/acme/users"))
        .await
        .expect("users")
        .json()
        .await
        .expect("json");
    assert_eq!(
        users.as_array().map(Vec::len),
        Some(1),
        "no duplicate: {users}"
    );
}

#[tokio::test]
async fn groups_are_member_diffs_and_deletes_follow_policy() {
    let origin = sim("tenants: [{id: acme, mode: scim}]").await;
    let h = harness(&origin, "    delete_policy: delete\n", Auth::None);
    for i in 0..4 {
        h.ok(&events::upsert(events::user(&format!("m{i}")), 1))
            .await;
    }
    let ids = |r: std::ops::Range<usize>| r.map(|i| format!("m{i}")).collect::<Vec<_>>();
    assert_eq!(
        h.ok(&events::group("g1", "Eng", &ids(0..3), 1))
            .await
            .operation,
        Operation::Created
    );
    assert_eq!(
        h.ok(&events::group("g1", "Eng", &ids(1..4), 2))
            .await
            .operation,
        Operation::Updated
    );
    let groups: Value = reqwest::get(format!("{origin}/_admin/tenants/acme/groups"))
        .await
        .expect("groups")
        .json()
        .await
        .expect("json");
    assert_eq!(
        groups[0]["members"].as_array().map(Vec::len),
        Some(3),
        "{groups}"
    );
    assert_eq!(
        h.ok(&events::user_event("m0", EventKind::UserDeleted, 2))
            .await
            .operation,
        Operation::Deleted
    );
    assert_eq!(
        h.ok(&events::group_deleted("g1", 3)).await.operation,
        Operation::Deleted
    );
    let s = stats(&origin, "acme").await;
    assert_eq!(count(&s, "PUT", "Groups/{id}"), 0, "{s}");
}

#[tokio::test]
async fn plan_mode_sends_no_write() {
    let origin = sim("tenants: [{id: acme, mode: scim}]").await;
    let h = harness(&origin, "    mode: plan\n", Auth::None);
    let run = h.run(&events::upsert(events::user("p1"), 1)).await;
    assert!(run.result.is_ok(), "{run:?}");
    assert_eq!(run.planned.len(), 1);
    assert_eq!(run.planned[0].method, "POST");
    let s = stats(&origin, "acme").await;
    assert_eq!(count(&s, "POST", "Users"), 0, "{s}");
}

async fn users(origin: &str, tenant: &str) -> Vec<Value> {
    let v: Value = reqwest::get(format!("{origin}/_admin/tenants/{tenant}/users"))
        .await
        .expect("users")
        .json()
        .await
        .expect("json");
    v.as_array().cloned().unwrap_or_default()
}

/// A server announcing no PATCH gets whole-resource PUTs for updates and deactivation (the
/// simulator answers any PATCH with 501).
#[tokio::test]
async fn without_patch_updates_are_puts() {
    let origin = sim("tenants: [{id: acme, mode: scim, scim: {patch: false}}]").await;
    let h = harness(&origin, "", Auth::None);
    let mut u = events::user("n1");
    h.ok(&events::upsert(u.clone(), 1)).await;
    u.title = "Boss".into();
    assert_eq!(
        h.ok(&events::upsert(u, 2)).await.operation,
        Operation::Updated
    );
    assert_eq!(
        h.ok(&events::user_event("n1", EventKind::UserDeactivated, 3))
            .await
            .operation,
        Operation::Deactivated
    );
    let s = stats(&origin, "acme").await;
    assert_eq!(count(&s, "PATCH", "Users/{id}"), 0, "{s}");
    assert!(count(&s, "PUT", "Users/{id}") >= 2, "{s}");
    let all = users(&origin, "acme").await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["title"], "Boss");
    assert_eq!(all[0]["active"], false);
}

/// A server announcing no filtering gets page scans for every lookup (a filter would be 400):
/// a connector with an empty ledger still finds the user by externalId, and a 409 still adopts
/// the user found by userName.
#[tokio::test]
async fn without_filters_lookups_scan_pages() {
    let origin = sim("tenants: [{id: acme, mode: scim, scim: {filter: false}}]").await;
    let first = harness(&origin, "", Auth::None);
    let mut u = events::user("f1");
    first.ok(&events::upsert(u.clone(), 1)).await;
    // Another replica (empty ledger) updates it: found by scanning for externalId.
    u.title = "Scanned".into();
    let second = harness(&origin, "", Auth::None);
    assert_eq!(
        second.ok(&events::upsert(u.clone(), 2)).await.operation,
        Operation::Updated
    );
    // Another externalId, same userName: 409 on create, adopted by scanning for userName.
    let mut other = u.clone();
    other.id = "f1-new".into();
    let third = harness(&origin, "", Auth::None);
    assert_eq!(
        third.ok(&events::upsert(other, 1)).await.operation,
        Operation::Adopted
    );
    let s = stats(&origin, "acme").await;
    assert_eq!(
        s["by_status"]["400"].as_u64().unwrap_or(0),
        0,
        "a filter was sent: {s}"
    );
    assert_eq!(users(&origin, "acme").await.len(), 1, "no duplicate");
}

/// With ETags on, updates carry If-Match: two connectors updating the same user in lockstep
/// (every request takes 50 ms) both read version N; the second write gets 412, re-reads and
/// succeeds.
#[tokio::test]
async fn if_match_is_sent_and_a_412_rereads() {
    let origin =
        sim("tenants: [{id: acme, mode: scim, faults: {latency_ms: {min: 50, max: 50}}}]").await;
    let setup = harness(&origin, "", Auth::None);
    setup.ok(&events::upsert(events::user("e1"), 1)).await;
    let (a, b) = (
        harness(&origin, "", Auth::None),
        harness(&origin, "", Auth::None),
    );
    let mut ua = events::user("e1");
    ua.title = "From A".into();
    let mut ub = events::user("e1");
    ub.department = "From B".into();
    let (ea, eb) = (events::upsert(ua, 2), events::upsert(ub, 2));
    let (ra, rb) = tokio::join!(a.run(&ea), b.run(&eb));
    assert!(ra.result.is_ok() && rb.result.is_ok(), "{ra:?} {rb:?}");
    let s = stats(&origin, "acme").await;
    assert!(
        s["by_status"]["412"].as_u64().unwrap_or(0) >= 1,
        "no If-Match conflict seen: {s}"
    );
    // The later writer re-read and patched what still differed: neither update was lost.
    let all = users(&origin, "acme").await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["title"], "From A", "{all:?}");
    assert_eq!(
        all[0]["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
        "From B",
        "{all:?}"
    );
}

/// A server without a ServiceProviderConfig gets the conservative reading: PUT updates,
/// filters, no ETags; events still converge.
#[tokio::test]
async fn without_discovery_the_fallback_converges() {
    let origin = sim("tenants: [{id: acme, mode: scim, scim: {discovery: false}}]").await;
    let h = harness(&origin, "", Auth::None);
    let mut u = events::user("d1");
    assert_eq!(
        h.ok(&events::upsert(u.clone(), 1)).await.operation,
        Operation::Created
    );
    u.title = "Fallback".into();
    assert_eq!(
        h.ok(&events::upsert(u, 2)).await.operation,
        Operation::Updated
    );
    let s = stats(&origin, "acme").await;
    assert_eq!(count(&s, "PATCH", "Users/{id}"), 0, "{s}");
    assert_eq!(count(&s, "PUT", "Users/{id}"), 1, "{s}");
    assert_eq!(users(&origin, "acme").await[0]["title"], "Fallback");
}

/// A user deleted at the provider behind scimrelay's back is created again by the next update.
#[tokio::test]
async fn a_user_deleted_underneath_is_created_again() {
    let origin = sim("tenants: [{id: acme, mode: scim}]").await;
    let h = harness(&origin, "", Auth::None);
    let mut u = events::user("g1");
    let created = h.ok(&events::upsert(u.clone(), 1)).await;
    let resp = reqwest::Client::new()
        .delete(format!("{origin}/acme/scim/v2/Users/{}", created.remote_id))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status().as_u16(), 204);
    u.title = "Back".into();
    let again = h.ok(&events::upsert(u, 2)).await;
    assert_eq!(again.operation, Operation::Created, "{again:?}");
    assert_ne!(again.remote_id, created.remote_id);
    let all = users(&origin, "acme").await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["title"], "Back");
}
