//! The generic profile against the in-process simulator (plain RFC 7644 mode): discovery once
//! per target, PATCH with If-Match when offered, 409 adoption, member diffs, plan mode, and
//! how it adapts to a server that announces less (no PATCH, no filtering, no ETags, no
//! discovery document) or changes things underneath it (an interposer between the profile and
//! the simulator makes the read-then-write window deterministic).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use scimrelay_proto::v1::{EventKind, Operation};
use scimrelay_provider_scim::GenericScim;
use scimrelay_scim::{Auth, Secret};
use scimrelay_testkit::{Harness, events};

async fn sim(yaml: &str) -> String {
    scimrelay_testkit::sim::start(yaml).await
}

async fn stats(origin: &str, tenant: &str) -> Value {
    scimrelay_testkit::sim::admin(origin, tenant, "stats").await
}

fn count(stats: &Value, method: &str, path: &str) -> u64 {
    scimrelay_testkit::sim::requests(stats, method, path)
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
    assert_eq!(s["if_match"], 1, "the PATCH carried If-Match: {s}");
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

/// A member not at the target yet is no failure: the group is created with the members that
/// are there, the rest left pending for the state of record to complete.
#[tokio::test]
async fn a_group_converges_with_the_members_there_and_leaves_the_rest_pending() {
    let origin = sim("tenants: [{id: acme, mode: scim}]").await;
    let h = harness(&origin, "", Auth::None);
    h.ok(&events::upsert(events::user("here"), 1)).await;
    let run = h
        .run(&events::group(
            "g1",
            "Eng",
            &["here".to_owned(), "later".to_owned(), "later".to_owned()],
            1,
        ))
        .await;
    let done = run.result.expect("the group converges");
    assert_eq!(done.operation, Operation::Created);
    assert_eq!(done.members.as_ref().map(Vec::len), Some(1));
    let pending = run.pending.expect("references resolved");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].user_id, "later");
    assert_eq!(
        pending[0].kind,
        scimrelay_proto::v1::ReferenceKind::Member as i32
    );
    // The member arrives; the group's next converge adds it and leaves nothing pending.
    h.ok(&events::upsert(events::user("later"), 1)).await;
    let run = h
        .run(&events::group(
            "g1",
            "Eng",
            &["here".to_owned(), "later".to_owned()],
            2,
        ))
        .await;
    assert_eq!(
        run.result.expect("updated").members.as_ref().map(Vec::len),
        Some(2)
    );
    assert_eq!(run.pending, Some(Vec::new()));
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

fn status_count(stats: &Value, status: u16) -> u64 {
    stats["by_status"][status.to_string()].as_u64().unwrap_or(0)
}

/// Creates a user at the simulator directly (another tool's object, outside any ledger).
async fn direct_user(origin: &str, user_name: &str) {
    let resp = reqwest::Client::new()
        .post(format!("{origin}/acme/scim/v2/Users"))
        .json(&serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
            "externalId": format!("other-{user_name}"),
        }))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status().as_u16(), 201);
}

/// What the interposer does to a user at the simulator right before forwarding the first write
/// (PUT or PATCH) of that user.
#[derive(Debug, Clone, Copy)]
enum Underneath {
    /// Another writer sets `nickName` (an attribute scimrelay does not manage).
    Nickname,
    /// Someone deletes the user at the provider.
    Delete,
    /// Nothing underneath, but every PATCH of a user that removes something is refused with
    /// 400 mutability (a server that will not clear an attribute).
    RefuseRemove,
}

/// A reverse proxy in front of the simulator: forwards every request unchanged, except that
/// right before the first PUT or PATCH of `/Users/{id}` it applies `action` to that user at the
/// simulator directly. That is the "changed between the profile's read and its write" window,
/// made deterministic. Returns the proxy's origin (the same tenant paths as the simulator).
async fn interposer(sim_origin: &str, action: Underneath) -> String {
    let fired = Arc::new(AtomicBool::new(false));
    let client = reqwest::Client::new();
    let upstream = sim_origin.to_owned();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (fired, client, upstream) = (fired.clone(), client.clone(), upstream.clone());
        async move { forward(&upstream, &client, &fired, action, req).await }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn forward(
    upstream: &str,
    client: &reqwest::Client,
    fired: &AtomicBool,
    action: Underneath,
    req: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("request body");
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{upstream}{path}");
    let user_write = matches!(parts.method, http::Method::PUT | http::Method::PATCH)
        && parts.uri.path().contains("/Users/");
    if user_write
        && matches!(action, Underneath::RefuseRemove)
        && String::from_utf8_lossy(&body).contains("\"remove\"")
    {
        let refusal = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "400", "scimType": "mutability", "detail": "title cannot be removed"});
        return axum::response::Response::builder()
            .status(400)
            .header("content-type", "application/scim+json")
            .body(axum::body::Body::from(refusal.to_string()))
            .expect("response");
    }
    if user_write && !fired.swap(true, Ordering::SeqCst) {
        match action {
            Underneath::RefuseRemove => {}
            Underneath::Delete => {
                let r = client.delete(&url).send().await.expect("delete underneath");
                assert_eq!(r.status().as_u16(), 204, "delete underneath");
            }
            Underneath::Nickname => {
                let mut user: Value = client
                    .get(&url)
                    .send()
                    .await
                    .expect("read underneath")
                    .json()
                    .await
                    .expect("json");
                user["nickName"] = "Underneath".into();
                let r = client.put(&url).json(&user).send().await.expect("put");
                assert_eq!(r.status().as_u16(), 200, "change underneath");
            }
        }
    }
    let mut out = client.request(parts.method, &url).body(body);
    for (name, value) in &parts.headers {
        if name != http::header::HOST && name != http::header::CONTENT_LENGTH {
            out = out.header(name, value);
        }
    }
    let resp = out.send().await.expect("forward");
    let mut answer = axum::response::Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        if name != http::header::CONTENT_LENGTH && name != http::header::TRANSFER_ENCODING {
            answer = answer.header(name, value);
        }
    }
    let bytes = resp.bytes().await.expect("response body");
    answer
        .body(axum::body::Body::from(bytes))
        .expect("response")
}

/// A server announcing no PATCH gets whole-resource PUTs for user updates, deactivation and
/// group membership (the simulator answers any PATCH with 501, so one would show up).
#[tokio::test]
async fn without_patch_updates_are_puts() {
    let origin = sim("tenants: [{id: acme, mode: scim, scim: {patch: false}}]").await;
    let h = harness(&origin, "", Auth::None);
    let mut u = events::user("n1");
    h.ok(&events::upsert(u.clone(), 1)).await;
    h.ok(&events::upsert(events::user("n2"), 1)).await;
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
    let members = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    h.ok(&events::group("g1", "Eng", &members(&["n1"]), 1))
        .await;
    assert_eq!(
        h.ok(&events::group("g1", "Eng", &members(&["n1", "n2"]), 2))
            .await
            .operation,
        Operation::Updated
    );
    let s = stats(&origin, "acme").await;
    assert_eq!(s["by_method"].get("PATCH"), None, "no PATCH at all: {s}");
    assert_eq!(count(&s, "PUT", "Users/{id}"), 2, "{s}");
    assert_eq!(count(&s, "PUT", "Groups/{id}"), 1, "{s}");
    assert_eq!(status_count(&s, 501), 0, "{s}");
    let all = users(&origin, "acme").await;
    assert_eq!(all.len(), 2, "{all:?}");
    let n1 = all.iter().find(|u| u["externalId"] == "n1").expect("n1");
    assert_eq!(
        (n1["title"].clone(), n1["active"].clone()),
        ("Boss".into(), false.into())
    );
    let groups: Value = reqwest::get(format!("{origin}/_admin/tenants/acme/groups"))
        .await
        .expect("groups")
        .json()
        .await
        .expect("json");
    assert_eq!(
        groups[0]["members"].as_array().map(Vec::len),
        Some(2),
        "{groups}"
    );
}

/// A server announcing no filtering gets page scans for every lookup, never a `filter`, and the
/// scan follows `totalResults` through pages shorter than asked for (the server's
/// `maxResults` is 10, the profile asks for 100): a connector with an empty ledger finds the
/// user by externalId on the third page, and a 409 adopts the user found there by userName.
#[tokio::test]
async fn without_filters_lookups_scan_pages() {
    let origin =
        sim("tenants: [{id: acme, mode: scim, scim: {filter: false, max_results: 10}}]").await;
    for i in 0..25 {
        direct_user(&origin, &format!("other{i:02}@example.com")).await;
    }
    let first = harness(&origin, "", Auth::None);
    let mut u = events::user("f1");
    assert_eq!(
        first.ok(&events::upsert(u.clone(), 1)).await.operation,
        Operation::Created
    );
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
    assert_eq!(s["filtered"], 0, "a filter was sent: {s}");
    assert_eq!(status_count(&s, 400), 0, "{s}");
    // Three lookups of three pages each, and the third harness's userName lookup after a
    // missed externalId lookup: every one read the list page by page.
    assert!(count(&s, "GET", "Users") >= 12, "{s}");
    assert_eq!(
        count(&s, "POST", "Users"),
        25 + 2,
        "one create, one 409: {s}"
    );
    let all = users(&origin, "acme").await;
    assert_eq!(all.len(), 26, "no duplicate");
    let adopted = all.iter().find(|x| x["userName"] == "f1@example.com");
    assert_eq!(
        adopted.map(|x| x["externalId"].clone()),
        Some("f1-new".into()),
        "the adopted user is linked to the new id: {adopted:?}"
    );
}

/// A scan that cannot reach the end of the list within its bound fails the event instead of
/// taking "not seen" for "absent" and creating a duplicate.
#[tokio::test]
async fn a_scan_past_its_bound_fails_instead_of_creating() {
    let origin =
        sim("tenants: [{id: acme, mode: scim, scim: {filter: false, max_results: 1}}]").await;
    let pages = scimrelay_provider_scim::MAX_SCAN_PAGES;
    for i in 0..=pages {
        direct_user(&origin, &format!("other{i:03}@example.com")).await;
    }
    let h = harness(&origin, "", Auth::None);
    let run = h.run(&events::upsert(events::user("late"), 1)).await;
    let err = run.result.expect_err("the lookup cannot finish");
    assert!(err.detail.contains("scan"), "{err:?}");
    let s = stats(&origin, "acme").await;
    assert_eq!(count(&s, "POST", "Users"), pages + 1, "no create: {s}");
    assert_eq!(count(&s, "GET", "Users"), pages, "{s}");
}

/// With ETags on, updates really carry If-Match: another writer changes the user between the
/// profile's read and its PATCH, the simulator answers 412, the profile re-reads and patches
/// what still differs, so the other writer's change survives. Without ETags (announced) no
/// If-Match is sent at all.
#[tokio::test]
async fn if_match_is_sent_and_a_412_rereads() {
    let origin = sim("tenants: [{id: acme, mode: scim}]").await;
    let via = interposer(&origin, Underneath::Nickname).await;
    let h = harness(&via, "", Auth::None);
    let mut u = events::user("e1");
    h.ok(&events::upsert(u.clone(), 1)).await;
    u.title = "From the platform".into();
    let run = h.run(&events::upsert(u.clone(), 2)).await;
    assert_eq!(
        run.result.as_ref().map(|c| c.operation).ok(),
        Some(Operation::Updated),
        "{run:?}"
    );
    let s = stats(&origin, "acme").await;
    assert_eq!(
        status_count(&s, 412),
        1,
        "the stale If-Match was refused: {s}"
    );
    assert_eq!(
        count(&s, "PATCH", "Users/{id}"),
        2,
        "refused, then re-read and sent: {s}"
    );
    assert_eq!(s["if_match"], 2, "{s}");
    let all = users(&origin, "acme").await;
    assert_eq!(
        (all[0]["title"].clone(), all[0]["nickName"].clone()),
        ("From the platform".into(), "Underneath".into()),
        "neither change was lost: {all:?}"
    );

    let origin = sim("tenants: [{id: acme, mode: scim, scim: {etag: false}}]").await;
    let via = interposer(&origin, Underneath::Nickname).await;
    let h = harness(
        &via,
        "    delete_policy: delete
",
        Auth::None,
    );
    h.ok(&events::upsert(events::user("e2"), 1)).await;
    let mut u = events::user("e2");
    u.title = "Boss".into();
    h.ok(&events::upsert(u, 2)).await;
    h.ok(&events::user_event("e2", EventKind::UserDeleted, 3))
        .await;
    let s = stats(&origin, "acme").await;
    assert_eq!(s["if_match"], 0, "no If-Match without ETag support: {s}");
    assert_eq!(status_count(&s, 412), 0, "{s}");
}

/// A server without a ServiceProviderConfig gets [`Caps::FALLBACK`]: PUT updates, filtered
/// lookups, no If-Match (although this server would honour it); events still converge.
///
/// [`Caps::FALLBACK`]: scimrelay_provider_scim::Caps::FALLBACK
#[tokio::test]
async fn without_discovery_the_fallback_converges() {
    let fallback = scimrelay_provider_scim::Caps::FALLBACK;
    assert_eq!(
        (fallback.patch, fallback.filter, fallback.etag),
        (false, true, false)
    );
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
    assert_eq!(
        h.ok(&events::user_event("d1", EventKind::UserDeactivated, 3))
            .await
            .operation,
        Operation::Deactivated
    );
    let s = stats(&origin, "acme").await;
    assert_eq!(
        count(&s, "GET", "ServiceProviderConfig"),
        1,
        "asked once: {s}"
    );
    assert_eq!(
        status_count(&s, 404),
        1,
        "the only 404 is the missing document: {s}"
    );
    assert_eq!(count(&s, "PATCH", "Users/{id}"), 0, "{s}");
    assert_eq!(count(&s, "PUT", "Users/{id}"), 2, "{s}");
    assert!(
        s["filtered"].as_u64().unwrap_or(0) >= 1,
        "lookups filter: {s}"
    );
    assert_eq!(s["if_match"], 0, "no ETags assumed: {s}");
    let all = users(&origin, "acme").await;
    assert_eq!(
        (all[0]["title"].clone(), all[0]["active"].clone()),
        ("Fallback".into(), false.into())
    );
}

/// A user deleted at the provider behind scimrelay's back is created again by the next update:
/// deleted before the event (the read finds nothing), and deleted between the profile's read and
/// its write (the PATCH or PUT answers 404), with PATCH and with PUT updates.
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

    for (caps, write) in [("{}", "PATCH"), ("{patch: false}", "PUT")] {
        let origin = sim(&format!(
            "tenants: [{{id: acme, mode: scim, scim: {caps}}}]"
        ))
        .await;
        let via = interposer(&origin, Underneath::Delete).await;
        let h = harness(&via, "", Auth::None);
        let mut u = events::user("g2");
        let created = h.ok(&events::upsert(u.clone(), 1)).await;
        u.title = "Back".into();
        let again = h.ok(&events::upsert(u, 2)).await;
        assert_eq!(again.operation, Operation::Created, "{write}: {again:?}");
        assert_ne!(again.remote_id, created.remote_id, "{write}");
        let s = stats(&origin, "acme").await;
        let refused: u64 = s["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["method"] == write && r["path"] == "Users/{id}" && r["status"] == 404)
            .map(|r| r["count"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(refused, 1, "{write} answered 404: {s}");
        assert_eq!(count(&s, "POST", "Users"), 2, "{write}: {s}");
        let all = users(&origin, "acme").await;
        assert_eq!(all.len(), 1, "{write}: {all:?}");
        assert_eq!(
            (all[0]["title"].clone(), all[0]["id"].clone()),
            ("Back".into(), again.remote_id.clone().into()),
            "{write}"
        );
    }
}

/// An event carries the whole desired state, so an attribute the platform cleared (title,
/// givenName, phone, department, a second e-mail) is cleared at the server too: by `remove`
/// operations where the server has PATCH, by the PUT that leaves it out where it has not.
/// Afterwards the same state is a no-op (nothing the server holds is removed again).
#[tokio::test]
async fn a_cleared_attribute_is_cleared_at_the_server_by_patch_or_put() {
    for (patch, method) in [(true, "PATCH"), (false, "PUT")] {
        let origin = sim(&format!(
            "tenants: [{{id: acme, mode: scim, scim: {{patch: {patch}}}}}]"
        ))
        .await;
        let h = harness(&origin, "", Auth::None);
        let mut u = events::user("c1");
        u.title = "Boss".into();
        u.department = "Ops".into();
        u.employee_number = "42".into();
        u.phone_numbers = vec![scimrelay_proto::v1::PhoneNumber {
            value: "+1 555 0100".into(),
            r#type: "work".into(),
            primary: true,
        }];
        let mut second = u.emails[0].clone();
        second.value = "c1-home@example.com".into();
        second.r#type = "home".into();
        second.primary = false;
        u.emails.push(second);
        h.ok(&events::upsert(u.clone(), 1)).await;
        let before = users(&origin, "acme").await;
        assert_eq!(before[0]["title"], "Boss", "{before:?}");
        u.title.clear();
        u.given_name.clear();
        u.phone_numbers.clear();
        u.department.clear();
        u.emails.truncate(1);
        assert_eq!(
            h.ok(&events::upsert(u.clone(), 2)).await.operation,
            Operation::Updated,
            "patch: {patch}"
        );
        let after = users(&origin, "acme").await;
        let c1 = &after[0];
        let ext = &c1["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"];
        assert!(c1.get("title").is_none(), "patch {patch}: {c1}");
        assert!(c1.get("phoneNumbers").is_none(), "patch {patch}: {c1}");
        assert!(c1["name"].get("givenName").is_none(), "patch {patch}: {c1}");
        assert_eq!(c1["name"]["familyName"], "Familyc1", "kept: {c1}");
        assert!(ext.get("department").is_none(), "patch {patch}: {c1}");
        assert_eq!(ext["employeeNumber"], "42", "kept: {c1}");
        assert_eq!(c1["emails"].as_array().map(Vec::len), Some(1), "{c1}");
        assert_eq!(
            h.ok(&events::upsert(u.clone(), 3)).await.operation,
            Operation::Noop,
            "patch {patch}: nothing left to clear"
        );
        let s = stats(&origin, "acme").await;
        assert_eq!(count(&s, method, "Users/{id}"), 1, "one update: {s}");
    }
}

/// A server that refuses to clear an attribute (400 to any PATCH with a `remove`) does not block
/// the user: the same PATCH without the removal is sent, the other change lands, and the
/// outcome names what was not cleared — on every later change too, never a permanent failure.
#[tokio::test]
async fn a_refused_clear_applies_the_rest_and_says_so() {
    let origin = sim("tenants: [{id: acme, mode: scim}]").await;
    let proxy = interposer(&origin, Underneath::RefuseRemove).await;
    let h = harness(&proxy, "", Auth::None);
    let mut u = events::user("r1");
    u.title = "Boss".into();
    h.ok(&events::upsert(u.clone(), 1)).await;
    u.title.clear();
    u.display_name = "Renamed".into();
    let done = h.ok(&events::upsert(u.clone(), 2)).await;
    assert_eq!(done.operation, Operation::Updated, "{done:?}");
    assert!(
        done.detail.contains("refused to clear title")
            && done.detail.contains("title cannot be removed"),
        "{done:?}"
    );
    let all = users(&origin, "acme").await;
    assert_eq!(
        all[0]["displayName"], "Renamed",
        "the rest applied: {all:?}"
    );
    assert_eq!(all[0]["title"], "Boss", "the server kept it: {all:?}");
    // Only the clear left: nothing else to send, no failure.
    let again = h.ok(&events::upsert(u.clone(), 3)).await;
    assert_eq!(again.operation, Operation::Noop, "{again:?}");
    assert!(again.detail.contains("refused to clear title"), "{again:?}");
}

/// A server that answers in ways no SCIM server should (an SSO redirect, an HTML page with
/// 200, an id holding a NUL byte) never gets a user recorded as created: each answer is an
/// error that names it, worth retrying, and a redirect counts as an authentication failure.
#[tokio::test]
async fn hostile_answers_are_errors_never_successes() {
    let origin = sim("tenants: [{id: acme, mode: scim, auth: {kind: none}}]").await;
    let h = harness(&origin, "", Auth::None);
    h.ok(&events::upsert(events::user("seed"), 1)).await;
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
    for (hostile, needle) in [
        ("redirect", "a redirect to /login"),
        ("html", "text/html"),
        ("nul_id", "control character"),
    ] {
        faults(serde_json::json!({"hostile": hostile})).await;
        let run = h
            .run(&events::upsert(events::user(&format!("u-{hostile}")), 1))
            .await;
        let err = run.result.expect_err(hostile);
        assert_eq!(
            err.class,
            scimrelay_connector::FailureClass::Retry,
            "{hostile}: {err:?}"
        );
        assert!(err.detail.contains(needle), "{hostile}: {}", err.detail);
        assert!(
            !err.detail.contains("s3cr3t"),
            "the redirect's query stays out: {}",
            err.detail
        );
    }
    faults(serde_json::json!({})).await;
    // The user the NUL-id answer created is found by externalId and linked, not made twice.
    let done = h.ok(&events::upsert(events::user("u-nul_id"), 1)).await;
    assert_eq!(done.operation, Operation::Noop, "{done:?}");
    assert!(!done.remote_id.contains('\0'));
    let all = users(&origin, "acme").await;
    assert_eq!(
        all.iter().filter(|u| u["externalId"] == "u-nul_id").count(),
        1
    );
}
