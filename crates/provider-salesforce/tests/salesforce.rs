//! The Salesforce profile against the in-process simulator's salesforce mode: every matrix
//! cell (and the exact `unsupported` outcomes), both OAuth flows, token expiry mid-run, and each
//! quirk docs/providers/salesforce.md lists.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use scimrelay_connector::FailureClass;
use scimrelay_proto::v1::{EventKind, Operation};
use scimrelay_provider_salesforce::Salesforce;
use scimrelay_scim::{Auth, Secret};
use scimrelay_testkit::{Harness, events};

const CLIENT_ID: &str = "3MVG9-test-consumer-key";
const CLIENT_SECRET: &str = "sf-client-secret";
const JWT_USER: &str = "integration@acme.example";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../sim/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

async fn sim(extra: Value) -> String {
    sim_with_orgs(extra, &[]).await
}

/// The simulator with the `acme` org and other salesforce orgs (`auth: none`, default profiles)
/// sharing its global username registry.
async fn sim_with_orgs(extra: Value, others: &[&str]) -> String {
    let mut sf = json!({
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "jwt_public_key_pem": fixture("jwt_public.pem"),
        "jwt_usernames": [JWT_USER],
        "groups": ["Sales", "Support"],
    });
    if let (Some(o), Value::Object(e)) = (sf.as_object_mut(), extra.clone()) {
        o.extend(e.into_iter().filter(|(k, _)| k != "faults"));
    }
    let mut tenant = json!({"id": "acme", "mode": "salesforce", "salesforce": sf});
    if let Some(f) = extra.get("faults") {
        tenant["faults"] = f.clone();
    }
    let mut tenants = vec![tenant];
    tenants.extend(
        others
            .iter()
            .map(|id| json!({"id": id, "mode": "salesforce"})),
    );
    scimrelay_testkit::sim::start(&json!({ "tenants": tenants }).to_string()).await
}

fn client_credentials(origin: &str) -> Auth {
    Auth::OauthClientCredentials {
        token_url: format!("{origin}/acme/services/oauth2/token"),
        client_id: CLIENT_ID.into(),
        client_secret: Secret::new(CLIENT_SECRET.to_string()),
        scope: None,
    }
}

/// The id of the simulator's "Standard User" profile, read through the API.
async fn profile_id(origin: &str) -> String {
    entitlement_id(origin, "Standard User").await
}

/// The id of one of acme's entitlements (profile or permission set), read through the API.
async fn entitlement_id(origin: &str, name: &str) -> String {
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{origin}/acme/services/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}"
        ))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    let list: Value = http
        .get(format!("{origin}/acme/services/scim/v2/Entitlements"))
        .bearer_auth(token["access_token"].as_str().unwrap_or_default())
        .send()
        .await
        .expect("entitlements")
        .json()
        .await
        .expect("entitlements json");
    list["Resources"]
        .as_array()
        .and_then(|r| r.iter().find(|e| e["displayName"] == name))
        .and_then(|e| e["id"].as_str())
        .unwrap_or_else(|| panic!("no entitlement {name:?}: {list}"))
        .to_owned()
}

async fn admin(origin: &str, what: &str) -> Value {
    scimrelay_testkit::sim::admin(origin, "acme", what).await
}

fn count(stats: &Value, method: &str, path: &str) -> u64 {
    scimrelay_testkit::sim::requests(stats, method, path)
}

fn harness(origin: &str, options: &str, auth: Auth) -> Harness {
    Harness::new(
        Arc::new(Salesforce::new()),
        &format!(
            "targets:\n  - id: sf\n    provider: salesforce\n    base_url: \"{origin}/acme/services/scim/v2\"\n    auth: {{kind: none}}\n    rate_limit_per_sec: 1000\n    delete_policy: delete\n    options: {options}\n"
        ),
        auth,
    )
}

#[tokio::test]
async fn user_cells_with_profile_suffix_and_delete_that_deactivates() {
    let origin = sim(json!({})).await;
    let profile = profile_id(&origin).await;
    let h = harness(
        &origin,
        &format!("{{profile_id: \"{profile}\", username_suffix: \".prod\"}}"),
        client_credentials(&origin),
    );
    let mut u = events::user("u1");
    assert_eq!(
        h.ok(&events::upsert(u.clone(), 1)).await.operation,
        Operation::Created
    );
    let users = admin(&origin, "users").await;
    assert_eq!(users[0]["userName"], "u1@example.com.prod");
    assert_eq!(users[0]["entitlements"][0]["value"], profile.as_str());
    u.title = "Account Executive".into();
    assert_eq!(
        h.ok(&events::upsert(u.clone(), 2)).await.operation,
        Operation::Updated
    );
    assert_eq!(
        h.ok(&events::upsert(u.clone(), 3)).await.operation,
        Operation::Noop
    );
    assert_eq!(
        h.ok(&events::user_event("u1", EventKind::UserDeactivated, 4))
            .await
            .operation,
        Operation::Deactivated
    );
    assert_eq!(admin(&origin, "users").await[0]["active"], false);
    u.title = "Back".into();
    assert_eq!(
        h.ok(&events::upsert(u.clone(), 5)).await.operation,
        Operation::Updated,
        "reactivated"
    );
    let users = admin(&origin, "users").await;
    assert_eq!(
        users[0]["active"], true,
        "reactivated at Salesforce: {users}"
    );
    assert_eq!(users[0]["title"], "Back");
    let deleted = h
        .ok(&events::user_event("u1", EventKind::UserDeleted, 6))
        .await;
    assert_eq!(deleted.operation, Operation::Deactivated);
    assert!(
        deleted.detail.contains("cannot delete users"),
        "{deleted:?}"
    );
    let users = admin(&origin, "users").await;
    assert_eq!(users.as_array().map(Vec::len), Some(1), "still there");
    assert_eq!(users[0]["active"], false);
    let s = admin(&origin, "stats").await;
    assert_eq!(
        count(&s, "GET", "ServiceProviderConfigs"),
        1,
        "discovered once at the plural path: {s}"
    );
    assert_eq!(count(&s, "DELETE", "Users/{id}"), 0, "{s}");
}

/// An attribute the platform cleared is removed at Salesforce when the User object lets it be
/// empty (givenName, phone, title, department); the required locale, timezone and language
/// keep their value (the org fills its default when one is left out), so the next event is a
/// no-op instead of removing them again on every update.
#[tokio::test]
async fn cleared_optional_attributes_are_removed_and_required_ones_kept() {
    let origin = sim(json!({})).await;
    let profile = profile_id(&origin).await;
    let h = harness(
        &origin,
        &format!("{{profile_id: \"{profile}\"}}"),
        client_credentials(&origin),
    );
    let mut u = events::user("c1");
    u.title = "Account Executive".into();
    u.department = "Sales".into();
    u.locale = "de_DE".into();
    u.phone_numbers = vec![scimrelay_proto::v1::PhoneNumber {
        value: "+1 555 0100".into(),
        r#type: "work".into(),
        primary: true,
    }];
    h.ok(&events::upsert(u.clone(), 1)).await;
    let before = admin(&origin, "users").await;
    assert_eq!(
        before[0]["timezone"], "America/Los_Angeles",
        "org default: {before}"
    );
    u.title.clear();
    u.department.clear();
    u.given_name.clear();
    u.locale.clear();
    u.phone_numbers.clear();
    assert_eq!(
        h.ok(&events::upsert(u.clone(), 2)).await.operation,
        Operation::Updated
    );
    let users = admin(&origin, "users").await;
    let c1 = &users[0];
    assert!(c1.get("title").is_none(), "{c1}");
    assert!(c1.get("phoneNumbers").is_none(), "{c1}");
    assert!(c1["name"].get("givenName").is_none(), "{c1}");
    assert_eq!(c1["name"]["familyName"], "Familyc1", "{c1}");
    assert!(
        c1["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]
            .get("department")
            .is_none(),
        "{c1}"
    );
    assert_eq!(
        c1["locale"], "de_DE",
        "a required field keeps its value: {c1}"
    );
    assert_eq!(
        h.ok(&events::upsert(u.clone(), 3)).await.operation,
        Operation::Noop,
        "nothing left to clear"
    );
    let s = admin(&origin, "stats").await;
    assert_eq!(count(&s, "PATCH", "Users/{id}"), 1, "{s}");
}

#[tokio::test]
async fn a_user_without_a_profile_is_a_permanent_clear_failure() {
    let origin = sim(json!({})).await;
    let h = harness(&origin, "{}", client_credentials(&origin));
    let err = h
        .run(&events::upsert(events::user("np"), 1))
        .await
        .result
        .expect_err("no profile");
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(
        err.detail
            .starts_with("no Salesforce profile: set options.profile_id"),
        "{err}"
    );
    let s = admin(&origin, "stats").await;
    assert_eq!(
        count(&s, "POST", "Users"),
        0,
        "nothing sent that would 409: {s}"
    );
}

#[tokio::test]
async fn groups_membership_only_and_exact_unsupported_outcomes() {
    let origin = sim(json!({})).await;
    let profile = profile_id(&origin).await;
    let h = harness(
        &origin,
        &format!("{{profile_id: \"{profile}\"}}"),
        client_credentials(&origin),
    );
    let ids: Vec<String> = (0..4).map(|i| format!("m{i}")).collect();
    for id in &ids {
        h.ok(&events::upsert(events::user(id), 1)).await;
    }
    let created = h
        .run(&events::group("g-new", "Brand New Group", &ids, 1))
        .await
        .result
        .expect_err("cannot create");
    assert_eq!(created.class, FailureClass::Unsupported);
    assert!(
        created
            .detail
            .starts_with("Salesforce cannot create groups through SCIM"),
        "{created}"
    );
    assert_eq!(
        h.ok(&events::group("g-sales", "Sales", &ids[0..3], 1))
            .await
            .operation,
        Operation::Updated
    );
    assert_eq!(
        h.ok(&events::group("g-sales", "Sales", &ids[1..4], 2))
            .await
            .operation,
        Operation::Updated
    );
    let groups = admin(&origin, "groups").await;
    let sales = groups
        .as_array()
        .and_then(|g| g.iter().find(|g| g["displayName"] == "Sales"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        sales["members"].as_array().map(Vec::len),
        Some(3),
        "{sales}"
    );
    let deleted = h
        .run(&events::group_deleted("g-sales", 3))
        .await
        .result
        .expect_err("cannot delete");
    assert_eq!(deleted.class, FailureClass::Unsupported);
    assert!(
        deleted
            .detail
            .starts_with("Salesforce cannot delete groups through SCIM"),
        "{deleted}"
    );
    let s = admin(&origin, "stats").await;
    assert_eq!(count(&s, "POST", "Groups"), 0, "{s}");
    assert_eq!(count(&s, "DELETE", "Groups/{id}"), 0, "{s}");
}

#[tokio::test]
async fn jwt_bearer_auth_and_409_adoption() {
    let origin = sim(json!({})).await;
    let profile = profile_id(&origin).await;
    let jwt = Auth::OauthJwtBearer {
        token_url: format!("{origin}/acme/services/oauth2/token"),
        client_id: CLIENT_ID.into(),
        subject: JWT_USER.into(),
        audience: "https://login.salesforce.com".into(),
        private_key_pem: Secret::new(fixture("jwt_private.pem")),
    };
    let options = format!("{{profile_id: \"{profile}\"}}");
    harness(&origin, &options, jwt.clone())
        .ok(&events::upsert(events::user("j1"), 1))
        .await;
    let mut again = events::user("j1");
    again.id = "j1-platform".into();
    let done = harness(&origin, &options, jwt)
        .ok(&events::upsert(again, 1))
        .await;
    assert_eq!(done.operation, Operation::Adopted, "{done:?}");
    assert_eq!(
        admin(&origin, "users").await.as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn an_expiring_token_is_renewed_mid_run_and_nothing_fails() {
    let origin = sim(json!({"token_ttl_secs": 1})).await;
    let profile = profile_id(&origin).await;
    let h = harness(
        &origin,
        &format!("{{profile_id: \"{profile}\"}}"),
        client_credentials(&origin),
    );
    for i in 0..3 {
        h.ok(&events::upsert(events::user(&format!("e{i}")), 1))
            .await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    let s = admin(&origin, "stats").await;
    assert!(
        s["by_status"]["401"].as_u64().unwrap_or(0) >= 1,
        "the token did expire: {s}"
    );
    assert_eq!(
        admin(&origin, "users").await.as_array().map(Vec::len),
        Some(3)
    );
}

#[tokio::test]
async fn request_limit_exceeded_pauses_and_succeeds() {
    let origin = sim(json!({})).await;
    let profile = profile_id(&origin).await;
    let r = reqwest::Client::new()
        .put(format!("{origin}/_admin/tenants/acme/faults"))
        .json(&json!({"rate_limit": {"per_sec": 3, "burst": 1}}))
        .send()
        .await
        .expect("faults");
    assert!(r.status().is_success(), "{r:?}");
    let h = harness(
        &origin,
        &format!("{{profile_id: \"{profile}\"}}"),
        client_credentials(&origin),
    );
    for i in 0..4 {
        h.ok(&events::upsert(events::user(&format!("t{i}")), 1))
            .await;
    }
    let s = admin(&origin, "stats").await;
    assert!(s["by_status"]["403"].as_u64().unwrap_or(0) >= 1, "{s}");
    assert_eq!(
        admin(&origin, "users").await.as_array().map(Vec::len),
        Some(4)
    );
}

#[tokio::test]
async fn a_profile_named_in_the_options_is_resolved_once_from_entitlements() {
    let origin = sim(json!({})).await;
    let h = harness(
        &origin,
        "{profile_name: \"Standard User\"}",
        client_credentials(&origin),
    );
    h.ok(&events::upsert(events::user("pn1"), 1)).await;
    h.ok(&events::upsert(events::user("pn2"), 1)).await;
    let s = admin(&origin, "stats").await;
    assert_eq!(count(&s, "GET", "Entitlements"), 1, "looked up once: {s}");
    let want = profile_id(&origin).await;
    let users = admin(&origin, "users").await;
    let users = users.as_array().cloned().unwrap_or_default();
    assert_eq!(users.len(), 2);
    for u in &users {
        assert_eq!(u["entitlements"][0]["value"], want.as_str(), "{u}");
    }

    let h = harness(
        &origin,
        "{profile_name: \"No Such Profile\"}",
        client_credentials(&origin),
    );
    let err = h
        .run(&events::upsert(events::user("pn3"), 1))
        .await
        .result
        .expect_err("unknown profile");
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.detail.contains("No Such Profile"), "{err}");
}

#[tokio::test]
async fn a_profile_id_salesforce_refuses_is_permanent_and_not_a_duplicate() {
    let origin = sim(json!({"permission_sets": ["Sales Ops"]})).await;
    // A permission set given as the profile: Salesforce answers 409 REQUIRED_FIELD_MISSING.
    let permission_set = entitlement_id(&origin, "Sales Ops").await;
    assert!(permission_set.starts_with("0PS"), "{permission_set}");
    let h = harness(
        &origin,
        &format!("{{profile_id: \"{permission_set}\"}}"),
        client_credentials(&origin),
    );
    let err = h
        .run(&events::upsert(events::user("ps1"), 1))
        .await
        .result
        .expect_err("a permission set is no profile");
    assert_eq!(err.class, FailureClass::Permanent, "{err}");
    assert_eq!(err.http_status, 409);
    for needle in [
        "REQUIRED_FIELD_MISSING",
        permission_set.as_str(),
        "not a profile of this org",
        "options.profile_id",
        "Not a duplicate",
    ] {
        assert!(err.detail.contains(needle), "lacks {needle:?}: {err}");
    }
    assert!(!err.detail.contains("username_suffix"), "{err}");
    let s = admin(&origin, "stats").await;
    assert_eq!(count(&s, "POST", "Users"), 1, "not retried: {s}");
    assert_eq!(
        count(&s, "GET", "Users"),
        1,
        "only the lookup before the create; no adoption lookup after the 409: {s}"
    );
    // An id this org does not have at all: 400 INVALID_CROSS_REFERENCE_KEY, named the same way.
    let h = harness(
        &origin,
        "{profile_id: \"00eNOSUCHPROFILE\"}",
        client_credentials(&origin),
    );
    let err = h
        .run(&events::upsert(events::user("ps2"), 1))
        .await
        .result
        .expect_err("unknown profile id");
    assert_eq!(err.class, FailureClass::Permanent, "{err}");
    assert!(
        err.detail.contains("00eNOSUCHPROFILE") && err.detail.contains("not a profile of this org"),
        "{err}"
    );
    assert_eq!(
        admin(&origin, "users").await.as_array().map(Vec::len),
        Some(0)
    );
}

#[tokio::test]
async fn a_username_taken_in_another_org_fails_naming_the_clash_and_the_suffix() {
    let origin = sim_with_orgs(json!({}), &["sandbox"]).await;
    // The same person already exists in another org of the simulator (a sandbox, say).
    Harness::new(
        Arc::new(Salesforce::new()),
        &format!(
            "targets:\n  - id: sandbox\n    provider: salesforce\n    base_url: \"{origin}/sandbox/services/scim/v2\"\n    auth: {{kind: none}}\n    options: {{profile_name: \"Standard User\"}}\n"
        ),
        Auth::None,
    )
    .ok(&events::upsert(events::user("d1"), 1))
    .await;
    let profile = profile_id(&origin).await;
    let h = harness(
        &origin,
        &format!("{{profile_id: \"{profile}\"}}"),
        client_credentials(&origin),
    );
    let err = h
        .run(&events::upsert(events::user("d1"), 1))
        .await
        .result
        .expect_err("the username belongs to another org");
    assert_eq!(err.class, FailureClass::Permanent, "{err}");
    assert_eq!(err.http_status, 409);
    for needle in [
        "username clash",
        "DUPLICATE_USERNAME",
        "another Salesforce organization",
        "options.username_suffix on target sf",
    ] {
        assert!(err.detail.contains(needle), "lacks {needle:?}: {err}");
    }
    assert!(!err.detail.contains("@example.com"), "no e-mail: {err}");
    let s = admin(&origin, "stats").await;
    assert_eq!(count(&s, "POST", "Users"), 1, "not retried: {s}");
    assert_eq!(
        admin(&origin, "users").await.as_array().map(Vec::len),
        Some(0),
        "nothing adopted in this org"
    );
    // The suggested fix works.
    let h = harness(
        &origin,
        &format!("{{profile_id: \"{profile}\", username_suffix: \".prod\"}}"),
        client_credentials(&origin),
    );
    assert_eq!(
        h.ok(&events::upsert(events::user("d1"), 2)).await.operation,
        Operation::Created
    );
}

/// A user that disappears between the lookup and the deactivation (a 404 to the PATCH) leaves
/// nothing to deactivate: a no-op like every other profile, never a failed outcome that
/// retries a write that can never land. The answers come from a fixed server, as the simulator
/// cannot make a user vanish between two requests of one convergence.
#[tokio::test]
async fn a_user_gone_before_its_deactivation_is_a_noop() {
    let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
        let (status, body) = match (req.method().as_str(), req.uri().path()) {
            ("GET", p) if p.ends_with("/ServiceProviderConfigs") => {
                (200, json!({"filter": {"supported": true, "maxResults": 200}}))
            }
            ("GET", p) if p.ends_with("/Users") => (
                200,
                json!({"totalResults": 1, "Resources": [
                    {"id": "005000000000001", "externalId": "u1", "userName": "u1@example.com", "active": true}
                ]}),
            ),
            ("PATCH", p) if p.ends_with("/Users/005000000000001") => (
                404,
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "404", "detail": "no such user"}),
            ),
            _ => (500, json!({"detail": "unexpected request"})),
        };
        axum::response::Response::builder()
            .status(status)
            .header("content-type", "application/scim+json")
            .body(axum::body::Body::from(body.to_string()))
            .expect("response")
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let origin = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let h = harness(&origin, "{}", Auth::None);
    let done = h
        .ok(&events::user_event("u1", EventKind::UserDeactivated, 1))
        .await;
    assert_eq!(done.operation, Operation::Noop, "{done:?}");
    assert!(done.detail.contains("disappeared"), "{done:?}");
}
