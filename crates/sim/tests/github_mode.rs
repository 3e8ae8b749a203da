//! GitHub Enterprise Managed Users mode: one test per quirk docs/providers/github.md lists,
//! asserting the status and body GitHub gives.

mod common;

use common::*;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const UA: (&str, &str) = ("user-agent", "scimrelay-test");
const AUTH: (&str, &str) = ("authorization", "Bearer ghp_test");
const GH_DOCS: &str = "https://docs.github.com/enterprise-cloud@latest/rest/enterprise-admin/scim";

async fn start_gh(extra: &str) -> Sim {
    start(&format!(
        "tenants: [{{id: acme, mode: github, auth: {{kind: bearer, token: ghp_test}}{extra}}}]"
    ))
    .await
}

fn url(sim: &Sim, path: &str) -> String {
    sim.at(&format!("/scim/v2/enterprises/acme{path}"))
}

async fn gh(sim: &Sim, method: Method, path: &str, body: Option<Value>) -> (u16, HeaderMap, Value) {
    sim.send(method, &url(sim, path), body, &[UA, AUTH]).await
}

fn user_body(user_name: &str, external_id: &str) -> Value {
    json!({
        "schemas": [USER],
        "externalId": external_id,
        "userName": user_name,
        "active": true,
        "name": {"givenName": "Mona", "familyName": "Lisa"},
        "displayName": "Mona Lisa",
        "emails": [{"value": format!("{external_id}@example.com"), "type": "work", "primary": true}],
        "roles": [{"value": "user", "primary": false}],
    })
}

async fn create_user(sim: &Sim, user_name: &str, external_id: &str) -> String {
    let (s, _, b) = gh(
        sim,
        Method::POST,
        "/Users",
        Some(user_body(user_name, external_id)),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    b["id"].as_str().unwrap_or_default().to_string()
}

/// GitHub's scim-error body: message, documentation_url, integer status.
fn assert_gh_error(body: &Value, status: u16) {
    assert_eq!(
        body["status"],
        json!(status),
        "status is an integer: {body}"
    );
    assert!(body["message"].is_string(), "{body}");
    assert!(body["documentation_url"].is_string(), "{body}");
    assert_eq!(body["schemas"], json!([ERROR]), "{body}");
}

fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

#[tokio::test]
async fn user_agent_is_required() {
    let sim = start_gh("").await;
    let (s, _, b) = sim
        .send(Method::GET, &url(&sim, "/Users"), None, &[AUTH])
        .await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b["message"]
            .as_str()
            .is_some_and(|m| m.contains("User-Agent")),
        "{b}"
    );
    let (s, _, _) = gh(&sim, Method::GET, "/Users", None).await;
    assert_eq!(s, 200);
    sim.stop().await;
}

#[tokio::test]
async fn bearer_token_required_bad_credentials() {
    let sim = start_gh("").await;
    let (s, _, b) = sim
        .send(
            Method::GET,
            &url(&sim, "/Users"),
            None,
            &[UA, ("authorization", "Bearer wrong")],
        )
        .await;
    assert_eq!(s, 401);
    assert_gh_error(&b, 401);
    assert_eq!(b["message"], "Bad credentials");
    sim.stop().await;
}

/// Edits a valid body into an invalid one.
type Mutation = Box<dyn Fn(&mut Value)>;

#[tokio::test]
async fn create_requires_every_documented_attribute() {
    let sim = start_gh("").await;
    let full = user_body("mona@octo.com", "e1");
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "externalId",
            Box::new(|b| drop(b.as_object_mut().map(|o| o.remove("externalId")))),
        ),
        (
            "userName",
            Box::new(|b| drop(b.as_object_mut().map(|o| o.remove("userName")))),
        ),
        (
            "active",
            Box::new(|b| drop(b.as_object_mut().map(|o| o.remove("active")))),
        ),
        (
            "displayName",
            Box::new(|b| drop(b.as_object_mut().map(|o| o.remove("displayName")))),
        ),
        (
            "name.givenName",
            Box::new(|b| b["name"] = json!({"familyName": "L"})),
        ),
        (
            "name.familyName",
            Box::new(|b| b["name"] = json!({"givenName": "M"})),
        ),
        (
            "emails",
            Box::new(|b| drop(b.as_object_mut().map(|o| o.remove("emails")))),
        ),
        (
            "emails[0].type",
            Box::new(|b| b["emails"] = json!([{"value": "a@b.c", "primary": true}])),
        ),
        (
            "emails[0].primary",
            Box::new(|b| b["emails"] = json!([{"value": "a@b.c", "type": "work"}])),
        ),
    ];
    for (attr, mutate) in cases {
        let mut body = full.clone();
        mutate(&mut body);
        let (s, _, b) = gh(&sim, Method::POST, "/Users", Some(body)).await;
        assert_eq!(s, 400, "without {attr}: {b}");
        assert_gh_error(&b, 400);
        assert!(
            b["detail"].as_str().is_some_and(|d| d.contains(attr)),
            "detail names {attr}: {b}"
        );
    }
    let (s, h, b) = gh(&sim, Method::POST, "/Users", Some(full)).await;
    assert_eq!(s, 201, "{b}");
    assert!(h.get("location").is_some());
    // PUT has the same rules.
    let id = b["id"].as_str().unwrap_or_default().to_string();
    let mut partial = user_body("mona@octo.com", "e1");
    partial.as_object_mut().map(|o| o.remove("displayName"));
    let (s, _, b) = gh(&sim, Method::PUT, &format!("/Users/{id}"), Some(partial)).await;
    assert_eq!(s, 400, "{b}");
    sim.stop().await;
}

#[tokio::test]
async fn only_the_core_user_schema_is_accepted() {
    let sim = start_gh("").await;
    let ext = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    let mut body = user_body("a@x.com", "e1");
    body["schemas"] = json!([USER, ext]);
    let (s, _, b) = gh(&sim, Method::POST, "/Users", Some(body)).await;
    assert_eq!(s, 400, "{b}");
    assert_gh_error(&b, 400);
    let mut body = user_body("a@x.com", "e1");
    body[ext] = json!({"employeeNumber": "7"});
    let (s, _, b) = gh(&sim, Method::POST, "/Users", Some(body)).await;
    assert_eq!(s, 400, "extension attributes are refused: {b}");
    sim.stop().await;
}

#[tokio::test]
async fn duplicate_user_name_or_external_id_is_409() {
    let sim = start_gh("").await;
    create_user(&sim, "mona@octo.com", "e1").await;
    for body in [
        user_body("mona@octo.com", "e2"),
        user_body("other@octo.com", "e1"),
    ] {
        let (s, _, b) = gh(&sim, Method::POST, "/Users", Some(body)).await;
        assert_eq!(s, 409, "{b}");
        assert_gh_error(&b, 409);
        assert!(
            b["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("Duplicate record detected")),
            "{b}"
        );
    }
    sim.stop().await;
}

#[tokio::test]
async fn login_normalisation_clash_is_409_and_too_long_is_400() {
    let sim = start_gh(", github: {shortcode: acme}").await;
    let bob = create_user(&sim, "bob@contoso.com", "e1").await;
    let (s, _, b) = gh(
        &sim,
        Method::POST,
        "/Users",
        Some(user_body("bob@fabrikam.com", "e2")),
    )
    .await;
    assert_eq!(
        s, 409,
        "bob@contoso.com and bob@fabrikam.com share the login bob_acme: {b}"
    );
    assert!(
        b["detail"].as_str().is_some_and(|d| d.contains("login")),
        "{b}"
    );
    let accounts = sim.admin("/_admin/tenants/acme/accounts").await;
    assert_eq!(accounts[0]["id"], bob.as_str());
    assert_eq!(accounts[0]["login"], "bob_acme");
    // 33 characters + "_acme" = 38: fine; 35 + 5 = 40: too long.
    let ok = format!("{}@x.com", "a".repeat(34));
    create_user(&sim, &ok, "e3").await;
    let long = format!("{}@x.com", "b".repeat(35));
    let (s, _, b) = gh(&sim, Method::POST, "/Users", Some(user_body(&long, "e4"))).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["detail"].as_str().is_some_and(|d| d.contains("39")),
        "{b}"
    );
    // DOMAIN\user keeps only the user part, dots become dashes.
    create_user(&sim, "CONTOSO\\jane.doe", "e5").await;
    let accounts = sim.admin("/_admin/tenants/acme/accounts").await;
    assert!(
        accounts
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["login"] == "jane-doe_acme"),
        "{accounts}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn patch_add_replace_remove_and_no_path_deactivation_suspends() {
    let sim = start_gh("").await;
    let id = create_user(&sim, "mona@octo.com", "e1").await;
    let path = format!("/Users/{id}");
    let ops = |ops: Value| Some(json!({"schemas": [PATCH], "Operations": ops}));
    let (s, _, b) = gh(
        &sim,
        Method::PATCH,
        &path,
        ops(json!([
            {"op": "add", "path": "title", "value": "Boss"},
            {"op": "replace", "path": "displayName", "value": "M. Lisa"},
            {"op": "remove", "path": "roles"},
        ])),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["title"].clone(), b["displayName"].clone()),
        (json!("Boss"), json!("M. Lisa"))
    );
    assert!(b.get("roles").is_none(), "{b}");

    let (s, _, b) = gh(
        &sim,
        Method::PATCH,
        &path,
        ops(json!([{"op": "replace", "value": {"active": false}}])),
    )
    .await;
    assert_eq!((s, b["active"].clone()), (200, json!(false)), "{b}");
    let acct = &sim.admin("/_admin/tenants/acme/accounts").await[0];
    assert_eq!(acct["suspended"], true);
    let login = acct["login"].as_str().unwrap_or_default();
    assert!(
        login.ends_with("_acme") && !login.starts_with("mona"),
        "login hashed: {acct}"
    );
    assert_ne!(acct["email"], "e1@example.com", "email obfuscated: {acct}");
    // Soft-deprovisioned users are still listed.
    let (_, _, list) = gh(&sim, Method::GET, "/Users", None).await;
    assert_eq!(list["totalResults"], 1);

    let (s, _, _) = gh(
        &sim,
        Method::PATCH,
        &path,
        ops(json!([{"op": "replace", "value": {"active": true}}])),
    )
    .await;
    assert_eq!(s, 200);
    let acct = &sim.admin("/_admin/tenants/acme/accounts").await[0];
    assert_eq!(
        (
            acct["login"].clone(),
            acct["email"].clone(),
            acct["suspended"].clone()
        ),
        (json!("mona_acme"), json!("e1@example.com"), json!(false)),
        "reactivation restores login and email"
    );
    // PATCH may not remove a required attribute.
    let (s, _, b) = gh(
        &sim,
        Method::PATCH,
        &path,
        ops(json!([{"op": "remove", "path": "emails"}])),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    sim.stop().await;
}

#[tokio::test]
async fn filtered_patch_paths_are_refused() {
    let sim = start_gh("").await;
    let id = create_user(&sim, "mona@octo.com", "e1").await;
    let (s, _, b) = gh(
        &sim,
        Method::PATCH,
        &format!("/Users/{id}"),
        Some(json!({"schemas": [PATCH], "Operations": [
            {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "new@x.com"}
        ]})),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert_gh_error(&b, 400);
    assert_eq!(b["scimType"], "invalidPath");
    let (_, _, u) = gh(&sim, Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!(u["emails"][0]["value"], "e1@example.com", "nothing changed");
    sim.stop().await;
}

#[tokio::test]
async fn delete_is_a_permanent_hard_deprovision() {
    let sim = start_gh("").await;
    let id = create_user(&sim, "mona@octo.com", "e1").await;
    let (s, _, _) = gh(&sim, Method::DELETE, &format!("/Users/{id}"), None).await;
    assert_eq!(s, 204);
    let (s, _, b) = gh(&sim, Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!(s, 404);
    assert_gh_error(&b, 404);
    let (_, _, list) = gh(&sim, Method::GET, "/Users", None).await;
    assert_eq!(list["totalResults"], 0, "hard-deleted users are not listed");
    let deleted = sim.admin("/_admin/tenants/acme/deleted").await;
    assert_eq!(deleted[0]["id"], id.as_str());
    assert_eq!(deleted[0]["userName"], "mona@octo.com");
    // The user name can be reused, by a new account with a new id.
    let again = create_user(&sim, "mona@octo.com", "e1").await;
    assert_ne!(again, id);
    sim.stop().await;
}

#[tokio::test]
async fn group_members_must_be_github_scim_user_ids() {
    let sim = start_gh("").await;
    let id = create_user(&sim, "mona@octo.com", "ext-mona").await;
    let group = |members: Value| {
        Some(
            json!({"schemas": [GROUP], "externalId": "g1", "displayName": "Eng", "members": members}),
        )
    };
    for bad in ["ext-mona", "mona@octo.com", "no-such-id"] {
        let (s, _, b) = gh(
            &sim,
            Method::POST,
            "/Groups",
            group(json!([{"value": bad}])),
        )
        .await;
        assert_eq!(s, 400, "{bad}: {b}");
        assert_gh_error(&b, 400);
    }
    let (s, _, b) = gh(&sim, Method::POST, "/Groups", group(json!([{"value": id}]))).await;
    assert_eq!(s, 201, "{b}");
    // externalId and displayName are required on groups.
    let (s, _, _) = gh(
        &sim,
        Method::POST,
        "/Groups",
        Some(json!({"schemas": [GROUP], "displayName": "NoExt"})),
    )
    .await;
    assert_eq!(s, 400);
    sim.stop().await;
}

#[tokio::test]
async fn group_put_without_members_clears_them() {
    let sim = start_gh("").await;
    let id = create_user(&sim, "mona@octo.com", "e1").await;
    let (_, _, g) = gh(
        &sim,
        Method::POST,
        "/Groups",
        Some(
            json!({"schemas": [GROUP], "externalId": "g1", "displayName": "Eng",
            "members": [{"value": id}]}),
        ),
    )
    .await;
    let gid = g["id"].as_str().unwrap_or_default().to_string();
    let (s, _, g) = gh(
        &sim,
        Method::PUT,
        &format!("/Groups/{gid}"),
        Some(json!({"schemas": [GROUP], "externalId": "g1", "displayName": "Eng"})),
    )
    .await;
    assert_eq!(s, 200, "{g}");
    assert!(g.get("members").is_none(), "{g}");
    assert!(
        sim.admin("/_admin/tenants/acme/groups").await[0]
            .get("members")
            .is_none()
    );
    sim.stop().await;
}

#[tokio::test]
async fn group_patch_answers_200_or_204() {
    let sim = start_gh("").await;
    let id = create_user(&sim, "mona@octo.com", "e1").await;
    let (_, _, g) = gh(
        &sim,
        Method::POST,
        "/Groups",
        Some(json!({"schemas": [GROUP], "externalId": "g1", "displayName": "Eng"})),
    )
    .await;
    let gid = g["id"].as_str().unwrap_or_default().to_string();
    let add = json!({"schemas": [PATCH], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": id}]}]});
    let (s, _, b) = gh(&sim, Method::PATCH, &format!("/Groups/{gid}"), Some(add)).await;
    assert_eq!(s, 200, "default: 200 with the group");
    assert_eq!(b["members"][0]["value"], id.as_str());
    sim.stop().await;

    let sim = start_gh(", github: {group_patch_204_rate: 1.0}").await;
    let id = create_user(&sim, "mona@octo.com", "e1").await;
    let (_, _, g) = gh(
        &sim,
        Method::POST,
        "/Groups",
        Some(json!({"schemas": [GROUP], "externalId": "g1", "displayName": "Eng"})),
    )
    .await;
    let gid = g["id"].as_str().unwrap_or_default().to_string();
    let add = json!({"schemas": [PATCH], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": id}]}]});
    let (s, _, b) = gh(&sim, Method::PATCH, &format!("/Groups/{gid}"), Some(add)).await;
    assert_eq!((s, b), (204, Value::Null));
    assert_eq!(
        sim.admin("/_admin/tenants/acme/groups").await[0]["members"][0]["value"],
        id.as_str(),
        "the change happened"
    );
    sim.stop().await;
}

#[tokio::test]
async fn filters_are_eq_only_on_documented_attributes() {
    let sim = start_gh("").await;
    let id = create_user(&sim, "mona@octo.com", "e1").await;
    create_user(&sim, "hubot@octo.com", "e2").await;
    for f in [
        "userName eq \"mona@octo.com\"",
        "externalId eq \"e1\"",
        &format!("id eq \"{id}\""),
    ] {
        let (s, _, b) = gh(
            &sim,
            Method::GET,
            &format!("/Users?filter={}", enc(f)),
            None,
        )
        .await;
        assert_eq!((s, b["totalResults"].clone()), (200, json!(1)), "{f}: {b}");
    }
    for f in [
        "userName co \"mona\"",
        "userName eq \"a\" and externalId eq \"e1\"",
        "userName eq \"a\" or userName eq \"b\"",
        "title eq \"x\"",
        "emails.value eq \"e1@example.com\"",
    ] {
        let (s, _, b) = gh(
            &sim,
            Method::GET,
            &format!("/Users?filter={}", enc(f)),
            None,
        )
        .await;
        assert_eq!(s, 400, "{f}: {b}");
        assert_eq!(b["scimType"], "invalidFilter");
    }
    let (s, _, _) = gh(
        &sim,
        Method::GET,
        &format!("/Groups?filter={}", enc("userName eq \"x\"")),
        None,
    )
    .await;
    assert_eq!(s, 400, "groups filter on externalId, id, displayName only");
    sim.stop().await;
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn paging_defaults_to_30() {
    let sim = start_gh("").await;
    for i in 0..35 {
        create_user(&sim, &format!("u{i}@x.com"), &format!("e{i}")).await;
    }
    let (_, _, b) = gh(&sim, Method::GET, "/Users", None).await;
    assert_eq!(
        (
            b["totalResults"].clone(),
            b["itemsPerPage"].clone(),
            b["startIndex"].clone()
        ),
        (json!(35), json!(30), json!(1))
    );
    let (_, _, b) = gh(&sim, Method::GET, "/Users?startIndex=31&count=30", None).await;
    assert_eq!(b["itemsPerPage"], 5);
    assert_eq!(b["Resources"][0]["userName"], "u30@x.com");
    sim.stop().await;
}

#[tokio::test]
async fn rate_limit_headers_on_every_answer() {
    let sim = start_gh("").await;
    let (s1, h1, _) = gh(&sim, Method::GET, "/Users", None).await;
    let (s2, h2, _) = gh(&sim, Method::GET, "/Users/nope", None).await;
    let (s3, h3, _) = gh(&sim, Method::POST, "/Users", Some(json!({}))).await;
    assert_eq!((s1, s2, s3), (200, 404, 400));
    for (i, h) in [h1, h2, h3].iter().enumerate() {
        assert_eq!(header_u64(h, "x-ratelimit-limit"), Some(5000), "{h:?}");
        assert_eq!(
            header_u64(h, "x-ratelimit-used"),
            Some(i as u64 + 1),
            "{h:?}"
        );
        assert_eq!(
            header_u64(h, "x-ratelimit-remaining"),
            Some(5000 - i as u64 - 1)
        );
        assert!(header_u64(h, "x-ratelimit-reset").is_some_and(|r| r > 1_700_000_000));
        assert_eq!(
            h.get("x-ratelimit-resource").and_then(|v| v.to_str().ok()),
            Some("core")
        );
    }
    sim.stop().await;
}

#[tokio::test]
async fn primary_budget_throttles_with_403_or_429() {
    for status in [403u16, 429] {
        let sim = start_gh(&format!(
            ", github: {{requests_per_hour: 2, throttle_status: {status}}}"
        ))
        .await;
        gh(&sim, Method::GET, "/Users", None).await;
        gh(&sim, Method::GET, "/Users", None).await;
        let (s, h, b) = gh(&sim, Method::GET, "/Users", None).await;
        assert_eq!(s, status, "{b}");
        assert_gh_error(&b, status);
        assert!(
            b["message"]
                .as_str()
                .is_some_and(|m| m.contains("rate limit")),
            "{b}"
        );
        assert_eq!(header_u64(&h, "x-ratelimit-remaining"), Some(0));
        assert!(
            header_u64(&h, "retry-after").is_some_and(|r| r > 0 && r <= 3600),
            "{h:?}"
        );
        let stats = sim.admin("/_admin/tenants/acme/stats").await;
        assert_eq!(stats["throttled"], 1, "{stats}");
        sim.stop().await;
    }
}

#[tokio::test]
async fn hourly_user_creation_budget_is_403_rate_limit() {
    let sim = start_gh(", github: {user_creates_per_hour: 2}").await;
    create_user(&sim, "a@x.com", "e1").await;
    // A failed create does not use the budget.
    let (s, _, _) = gh(
        &sim,
        Method::POST,
        "/Users",
        Some(user_body("a@x.com", "e1")),
    )
    .await;
    assert_eq!(s, 409);
    create_user(&sim, "b@x.com", "e2").await;
    let (s, h, b) = gh(
        &sim,
        Method::POST,
        "/Users",
        Some(user_body("c@x.com", "e3")),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert_gh_error(&b, 403);
    assert!(
        b["message"]
            .as_str()
            .is_some_and(|m| m.contains("rate limit")),
        "{b}"
    );
    assert!(header_u64(&h, "retry-after").is_some());
    assert!(header_u64(&h, "x-ratelimit-limit").is_some());
    let (s, _, _) = gh(&sim, Method::GET, "/Users", None).await;
    assert_eq!(s, 200, "reads still work");
    assert_eq!(
        sim.admin("/_admin/tenants/acme/stats").await["throttled"],
        1
    );
    sim.stop().await;
}

#[tokio::test]
async fn faults_apply_in_githubs_shape() {
    let sim = start_gh(", github: {throttle_status: 403}").await;
    assert_eq!(
        sim.faults("acme", json!({"rate_limit": {"per_sec": 0.1, "burst": 1}}))
            .await,
        200
    );
    gh(&sim, Method::GET, "/Users", None).await;
    let (s, h, b) = gh(&sim, Method::GET, "/Users", None).await;
    assert_eq!(
        s, 403,
        "the rate-limit fault throttles with the tenant's status: {b}"
    );
    assert!(h.get("retry-after").is_some());
    assert!(h.get("x-ratelimit-limit").is_some());
    assert_eq!(
        sim.admin("/_admin/tenants/acme/stats").await["throttled"],
        1
    );
    sim.faults("acme", json!({"error_rate": 1.0, "error_statuses": [502]}))
        .await;
    let (s, _, b) = gh(&sim, Method::GET, "/Users", None).await;
    assert_eq!(s, 502);
    assert_gh_error(&b, 502);
    sim.faults("acme", json!({"token_revoked": true})).await;
    let (s, _, b) = gh(&sim, Method::GET, "/Users", None).await;
    assert_eq!((s, b["message"].clone()), (401, json!("Bad credentials")));
    sim.stop().await;
}

#[tokio::test]
async fn error_body_links_the_scim_docs() {
    let sim = start_gh("").await;
    let (_, _, b) = gh(&sim, Method::GET, "/Groups/nope", None).await;
    assert_eq!(b["documentation_url"], GH_DOCS);
    sim.stop().await;
}
