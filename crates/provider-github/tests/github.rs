//! The GitHub EMU profile against the in-process simulator's github mode: every matrix cell
//! and each quirk docs/providers/github.md lists.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use scimrelay_connector::FailureClass;
use scimrelay_connector::provider::{ConvergeError, Converged};
use scimrelay_proto::v1::{EventKind, Operation};
use scimrelay_provider_github::Github;
use scimrelay_scim::{Auth, Secret};
use scimrelay_testkit::{Harness, events};

const TOKEN: &str = "ghp_test";

async fn sim(github: &str, faults: &str) -> String {
    let yaml = format!(
        "tenants: [{{id: acme, mode: github, auth: {{kind: bearer, token: {TOKEN}}}, github: {{shortcode: acme, requests_per_hour: 0, {github}}}{faults}}}]"
    );
    scimrelay_testkit::sim::start(&yaml).await
}

async fn admin(origin: &str, what: &str) -> Value {
    scimrelay_testkit::sim::admin(origin, "acme", what).await
}

fn count(stats: &Value, method: &str, path: &str) -> u64 {
    scimrelay_testkit::sim::requests(stats, method, path)
}

fn harness(origin: &str, extra: &str) -> Harness {
    harness_with(origin, extra, "{shortcode: acme}")
}

fn harness_with(origin: &str, extra: &str, options: &str) -> Harness {
    Harness::new(
        Arc::new(Github::new()),
        &format!(
            "targets:\n  - id: gh\n    provider: github\n    base_url: \"{origin}/scim/v2/enterprises/acme\"\n    auth: {{kind: none}}\n    rate_limit_per_sec: 1000\n    options: {options}\n{extra}"
        ),
        Auth::Bearer(Secret::new(TOKEN.to_string())),
    )
}

fn user_named(id: &str, user_name: &str) -> scimrelay_proto::v1::UserState {
    let mut u = events::user(id);
    u.user_name = user_name.into();
    u.emails[0].value = user_name.into();
    u
}

#[tokio::test]
async fn user_cells_create_update_deactivate_and_opt_in_delete() {
    let origin = sim("", "").await;
    let h = harness(&origin, "    delete_policy: delete\n");
    let mut u = events::user("u1");
    u.emails[0].r#type = String::new();
    u.emails[0].primary = false;
    let created = h.ok(&events::upsert(u.clone(), 1)).await;
    assert_eq!(created.operation, Operation::Created);
    u.given_name = "Renamed".into();
    assert_eq!(
        h.ok(&events::upsert(u.clone(), 2)).await.operation,
        Operation::Updated
    );
    assert_eq!(
        h.ok(&events::user_event("u1", EventKind::UserDeactivated, 3))
            .await
            .operation,
        Operation::Deactivated
    );
    let users = admin(&origin, "users").await;
    assert_eq!(users[0]["active"], false);
    assert_eq!(users[0]["name"]["givenName"], "Renamed");
    assert_eq!(users[0]["emails"][0]["type"], "work", "type filled in");
    assert_eq!(users[0]["emails"][0]["primary"], true, "primary filled in");
    let deleted = h
        .ok(&events::user_event("u1", EventKind::UserDeleted, 4))
        .await;
    assert_eq!(deleted.operation, Operation::Deleted);
    assert!(deleted.detail.contains("permanently"), "{deleted:?}");
    assert_eq!(
        admin(&origin, "users").await.as_array().map(Vec::len),
        Some(0)
    );
    let s = admin(&origin, "stats").await;
    assert_eq!(count(&s, "PUT", "Users/{id}"), 0, "updates are PATCH: {s}");
    assert_eq!(count(&s, "PATCH", "Users/{id}"), 2, "{s}");
}

/// Every attribute the GitHub profile sends is one GitHub requires, so a cleared one is never
/// removed: a cleared displayName becomes "givenName familyName" again, and a dropped e-mail
/// leaves the list (the whole `emails` value is replaced, no filtered path).
#[tokio::test]
async fn a_cleared_display_name_and_a_dropped_email_converge() {
    let origin = sim("", "").await;
    let h = harness(&origin, "");
    let mut u = events::user("c1");
    let mut home = u.emails[0].clone();
    home.value = "c1-home@example.com".into();
    home.r#type = "home".into();
    home.primary = false;
    u.emails.push(home);
    h.ok(&events::upsert(u.clone(), 1)).await;
    assert_eq!(admin(&origin, "users").await[0]["displayName"], "User c1");
    u.display_name.clear();
    u.emails.truncate(1);
    assert_eq!(
        h.ok(&events::upsert(u.clone(), 2)).await.operation,
        Operation::Updated
    );
    let users = admin(&origin, "users").await;
    assert_eq!(users[0]["displayName"], "Given Familyc1", "{users}");
    assert_eq!(
        users[0]["emails"],
        serde_json::json!([{"value": "c1@example.com", "type": "work", "primary": true}]),
        "{users}"
    );
    assert_eq!(
        h.ok(&events::upsert(u.clone(), 3)).await.operation,
        Operation::Noop
    );
}

#[tokio::test]
async fn delete_without_opt_in_only_suspends() {
    let origin = sim("", "").await;
    let h = harness(&origin, "");
    h.ok(&events::upsert(events::user("u2"), 1)).await;
    let done = h
        .ok(&events::user_event("u2", EventKind::UserDeleted, 2))
        .await;
    assert_eq!(done.operation, Operation::Deactivated);
    assert!(done.detail.contains("delete_policy"), "{done:?}");
    let users = admin(&origin, "users").await;
    assert_eq!(users[0]["active"], false);
    let s = admin(&origin, "stats").await;
    assert_eq!(count(&s, "DELETE", "Users/{id}"), 0, "{s}");
}

#[tokio::test]
async fn group_cells_by_github_ids_with_patch_diffs() {
    let origin = sim("group_patch_204_rate: 0.5", "").await;
    let h = harness(&origin, "");
    let ids: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    for id in &ids {
        h.ok(&events::upsert(events::user(id), 1)).await;
    }
    assert_eq!(
        h.ok(&events::group("g1", "Eng", &ids[0..3], 1))
            .await
            .operation,
        Operation::Created
    );
    assert_eq!(
        h.ok(&events::group("g1", "Engineering", &ids[2..5], 2))
            .await
            .operation,
        Operation::Updated
    );
    let groups = admin(&origin, "groups").await;
    let users = admin(&origin, "users").await;
    let members: Vec<&str> = groups[0]["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["value"].as_str())
        .collect();
    assert_eq!(members.len(), 3);
    for m in &members {
        assert!(
            users
                .as_array()
                .expect("users")
                .iter()
                .any(|u| u["id"] == *m),
            "members are GitHub SCIM ids"
        );
    }
    assert_eq!(groups[0]["displayName"], "Engineering");
    assert_eq!(
        h.ok(&events::group_deleted("g1", 3)).await.operation,
        Operation::Deleted
    );
    let s = admin(&origin, "stats").await;
    assert_eq!(count(&s, "PUT", "Groups/{id}"), 0, "never PUT a group: {s}");
    assert!(count(&s, "PATCH", "Groups/{id}") >= 1, "{s}");
}

#[tokio::test]
async fn too_long_login_fails_before_any_request() {
    let origin = sim("", "").await;
    let h = harness(&origin, "");
    let u = user_named(
        "u3",
        "an.extraordinarily.long.given-name.and.surname@example.com",
    );
    let run = h.run(&events::upsert(u, 1)).await;
    let err = run.result.expect_err("too long");
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(
        err.detail.contains("_acme") && err.detail.contains("39"),
        "{err}"
    );
    assert_eq!(run.stats.requests, 0, "nothing sent");
}

#[tokio::test]
async fn normalisation_clash_is_a_permanent_failure_naming_the_login() {
    let origin = sim("", "").await;
    let h = harness(&origin, "");
    h.ok(&events::upsert(user_named("a1", "john.smith@a.example"), 1))
        .await;
    let err = h
        .run(&events::upsert(user_named("b1", "john.smith@b.example"), 1))
        .await
        .result
        .expect_err("clash");
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(
        err.detail.contains("john-smith_acme") && err.detail.contains("clash"),
        "{err}"
    );
    assert!(
        !err.detail.contains("@b.example"),
        "no e-mail in the detail: {err}"
    );
}

#[tokio::test]
async fn a_resent_create_adopts_instead_of_duplicating() {
    let origin = sim("", "").await;
    harness(&origin, "")
        .ok(&events::upsert(events::user("u4"), 1))
        .await;
    // A fresh connector (empty ledger) whose lookup misses because the user was made with another
    // externalId: the 409 is resolved by userName.
    let mut again = events::user("u4");
    again.id = "u4-platform".into();
    let done = harness(&origin, "").ok(&events::upsert(again, 1)).await;
    assert_eq!(done.operation, Operation::Adopted);
    assert_eq!(
        admin(&origin, "users").await.as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn a_403_rate_limit_pauses_and_succeeds_without_quarantine() {
    let origin = sim(
        "throttle_status: 403",
        ", faults: {rate_limit: {per_sec: 2, burst: 1}}",
    )
    .await;
    let h = harness(&origin, "");
    for i in 0..4 {
        let done = h
            .ok(&events::upsert(events::user(&format!("t{i}")), 1))
            .await;
        assert_eq!(done.operation, Operation::Created);
    }
    let s = admin(&origin, "stats").await;
    assert!(
        s["by_status"]["403"].as_u64().unwrap_or(0) >= 1,
        "the sim throttled with 403: {s}"
    );
    assert_eq!(
        admin(&origin, "users").await.as_array().map(Vec::len),
        Some(4)
    );
}

/// An event a person is waiting for (the interactive lane).
fn interactive(mut e: scimrelay_proto::v1::IdentityEvent) -> scimrelay_proto::v1::IdentityEvent {
    e.priority = scimrelay_proto::v1::Priority::Interactive as i32;
    e
}

#[tokio::test]
async fn user_creations_have_their_own_hourly_budget_with_an_interactive_reserve() {
    let origin = sim("", "").await;
    // 4 an hour, 20% (one) reserved for interactive events: bulk gets 3.
    let h = harness_with(&origin, "", "{shortcode: acme, user_creates_per_hour: 4}");
    for id in ["c1", "c2", "c3"] {
        h.ok(&events::upsert(events::user(id), 1)).await;
    }
    // The next bulk creation is 20 minutes away: the message is not held that long (past the
    // broker's consumer timeout); the converge is deferred, with the wait, in well under a
    // second.
    let started = std::time::Instant::now();
    let fourth = h.run(&events::upsert(events::user("c4"), 1)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_deferred(&fourth.result, 10 * 60 * 1000);
    // A first login still gets its account: the reserve is the interactive lane's.
    h.ok(&interactive(events::upsert(events::user("login"), 1)))
        .await;
    let after = h
        .run(&interactive(events::upsert(events::user("login-2"), 1)))
        .await;
    assert_deferred(&after.result, 10 * 60 * 1000);
    // Updates are not creations: they pass.
    let mut u = events::user("c1");
    u.display_name = "Changed".into();
    h.ok(&events::upsert(u, 2)).await;
}

/// One of two replicas gets half of the target's creation budget (8 per hour → 4: 3 for bulk,
/// 1 reserved for interactive events).
#[tokio::test]
async fn replicas_share_the_user_creation_budget() {
    let origin = sim("", "").await;
    let h =
        harness_with(&origin, "", "{shortcode: acme, user_creates_per_hour: 8}").with_replicas(2);
    for id in ["r1", "r2", "r3"] {
        h.ok(&events::upsert(events::user(id), 1)).await;
    }
    let fourth = h.run(&events::upsert(events::user("r4"), 1)).await;
    assert_deferred(&fourth.result, 10 * 60 * 1000);
}

/// The converge was deferred (not held) for at least `min_ms`, naming the budget.
fn assert_deferred(result: &Result<Converged, ConvergeError>, min_ms: u64) {
    let Err(e) = result else {
        panic!("the creation was not deferred: {result:?}");
    };
    assert_eq!(e.class, FailureClass::Deferred, "{e:?}");
    assert!(e.retry_after_ms.is_some_and(|ms| ms >= min_ms), "{e:?}");
    assert!(e.detail.contains("user_creates_per_hour"), "{e:?}");
}

#[tokio::test]
async fn a_409_on_group_create_adopts_the_group_found_by_display_name() {
    let origin = sim("", "").await;
    let h = harness(&origin, "");
    for id in ["a", "b", "x"] {
        h.ok(&events::upsert(events::user(id), 1)).await;
    }
    let users = admin(&origin, "users").await;
    let id_of = |external_id: &str| -> String {
        users
            .as_array()
            .and_then(|a| a.iter().find(|u| u["externalId"] == external_id))
            .and_then(|u| u["id"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no user {external_id}"))
    };
    // Made by an earlier tool: same displayName, another externalId, one unwanted member.
    let resp = reqwest::Client::new()
        .post(format!("{origin}/scim/v2/enterprises/acme/Groups"))
        .bearer_auth(TOKEN)
        .header("user-agent", "earlier-tool")
        .json(&serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "externalId": "legacy-eng",
            "displayName": "Eng",
            "members": [{"value": id_of("x")}, {"value": id_of("a")}],
        }))
        .send()
        .await
        .expect("create group");
    assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
    let done = h
        .ok(&events::group("g1", "Eng", &["a".into(), "b".into()], 1))
        .await;
    assert_eq!(done.operation, Operation::Adopted, "{done:?}");
    let groups = admin(&origin, "groups").await;
    assert_eq!(
        groups.as_array().map(Vec::len),
        Some(1),
        "no duplicate: {groups}"
    );
    assert_eq!(groups[0]["id"].as_str(), Some(done.remote_id.as_str()));
    assert_eq!(groups[0]["externalId"], "g1", "linked: {groups}");
    let mut members: Vec<String> = groups[0]["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["value"].as_str().map(str::to_owned))
        .collect();
    members.sort();
    let mut want = vec![id_of("a"), id_of("b")];
    want.sort();
    assert_eq!(members, want, "x removed, b added");
    let s = admin(&origin, "stats").await;
    assert_eq!(s["by_status"]["409"].as_u64(), Some(1), "{s}");
    assert_eq!(count(&s, "PUT", "Groups/{id}"), 0, "{s}");
    // A new process finds it by externalId: no second 409.
    let again = harness(&origin, "")
        .ok(&events::group("g1", "Eng", &["a".into(), "b".into()], 2))
        .await;
    assert_eq!(again.operation, Operation::Noop, "{again:?}");
    let s = admin(&origin, "stats").await;
    assert_eq!(s["by_status"]["409"].as_u64(), Some(1), "{s}");
}

#[tokio::test]
async fn an_organization_level_base_url_is_refused_before_any_request() {
    let origin = sim("", "").await;
    let h = Harness::new(
        Arc::new(Github::new()),
        &format!(
            "targets:\n  - id: gh-org\n    provider: github\n    base_url: \"{origin}/scim/v2/organizations/acme\"\n    auth: {{kind: none}}\n"
        ),
        Auth::Bearer(Secret::new(TOKEN.to_string())),
    );
    for event in [
        events::upsert(events::user("o1"), 1),
        events::group("og", "Org group", &[], 1),
        events::user_event("o1", EventKind::UserDeactivated, 2),
    ] {
        let run = h.run(&event).await;
        let err = run.result.expect_err("org-level SCIM");
        assert_eq!(err.class, FailureClass::Permanent);
        assert!(
            err.detail.contains("target gh-org base_url")
                && err.detail.contains("organization-level")
                && err.detail.contains("/scim/v2/enterprises/"),
            "{err}"
        );
        assert_eq!(run.stats.requests, 0, "nothing sent");
    }
}
