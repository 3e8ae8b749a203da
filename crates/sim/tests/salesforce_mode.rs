//! Salesforce mode: one test per quirk docs/providers/salesforce.md lists, asserting the status
//! and body Salesforce gives, plus the OAuth 2.0 token endpoint (client credentials and RS256
//! JWT bearer).

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const PUBLIC_PEM: &str = include_str!("fixtures/jwt_public.pem");
const PRIVATE_PEM: &str = include_str!("fixtures/jwt_private.pem");
const OTHER_PRIVATE_PEM: &str = include_str!("fixtures/jwt_other_private.pem");
const NO_PROFILE: &str =
    "REQUIRED_FIELD_MISSING:user_must_have_one_entitlement_which_must_be_a_profileid;";

/// Two salesforce orgs (`org1` with OAuth, `org2` open) and a plain tenant.
fn config(sf_extra: &Value) -> String {
    let mut org1 = json!({
        "client_id": "cid",
        "client_secret": "csecret",
        "jwt_public_key_pem": PUBLIC_PEM,
        "jwt_usernames": ["integration@acme.com"],
        "groups": ["Sales", "Support"],
        "profiles": ["System Administrator", "Standard User"],
        "permission_sets": ["SCIM Admin"],
        "roles": ["CEO"],
    });
    if let (Some(o), Some(extra)) = (org1.as_object_mut(), sf_extra.as_object()) {
        o.extend(extra.clone());
    }
    json!({"tenants": [
        {"id": "org1", "mode": "salesforce", "salesforce": org1},
        {"id": "org2", "mode": "salesforce", "salesforce": {"groups": ["Everyone"]}},
        {"id": "plain", "mode": "scim"},
    ]})
    .to_string()
}

struct Org<'a> {
    sim: &'a Sim,
    id: &'static str,
    token: Option<String>,
}

impl Org<'_> {
    fn url(&self, path: &str) -> String {
        self.sim.at(&format!("/{}/services/scim/v2{path}", self.id))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, HeaderMap, Value) {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        self.sim.send(method, &self.url(path), body, &headers).await
    }

    async fn profile_id(&self, name: &str) -> String {
        let (s, _, b) = self.send(Method::GET, "/Entitlements", None).await;
        assert_eq!(s, 200, "{b}");
        b["Resources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["displayName"] == name)
            .and_then(|e| e["id"].as_str())
            .unwrap_or_default()
            .to_string()
    }

    async fn create_user(&self, user_name: &str) -> (u16, Value) {
        let profile = self.profile_id("Standard User").await;
        let (s, _, b) = self
            .send(
                Method::POST,
                "/Users",
                Some(sf_user(user_name, json!([{"value": profile}]))),
            )
            .await;
        (s, b)
    }

    async fn group_id(&self, name: &str) -> String {
        let (_, _, b) = self.send(Method::GET, "/Groups", None).await;
        b["Resources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g["displayName"] == name)
            .and_then(|g| g["id"].as_str())
            .unwrap_or_default()
            .to_string()
    }
}

fn sf_user(user_name: &str, entitlements: Value) -> Value {
    json!({
        "schemas": [USER],
        "userName": user_name,
        "externalId": format!("ext-{user_name}"),
        "name": {"givenName": "Marc", "familyName": "Benioff"},
        "emails": [{"type": "work", "primary": true, "value": "marc@example.com"}],
        "entitlements": entitlements,
    })
}

async fn token_request(sim: &Sim, org: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = sim
        .http
        .post(sim.at(&format!("/{org}/services/oauth2/token")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            form.iter()
                .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                .collect::<Vec<_>>()
                .join("&"),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("token: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn client_credentials(sim: &Sim) -> String {
    let (s, b) = token_request(
        sim,
        "org1",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "cid"),
            ("client_secret", "csecret"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b["access_token"].as_str().unwrap_or_default().to_string()
}

async fn org1(sim: &Sim) -> Org<'_> {
    Org {
        sim,
        id: "org1",
        token: Some(client_credentials(sim).await),
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn jwt(claims: &Value, pem: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes())
        .unwrap_or_else(|e| panic!("test key: {e}"));
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        claims,
        &key,
    )
    .unwrap_or_else(|e| panic!("sign: {e}"))
}

fn session_error() -> Value {
    json!([{"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}])
}

#[tokio::test]
async fn service_provider_configs_is_plural_and_unknown_urls_are_not_found() {
    let sim = start(&config(&json!({}))).await;
    let org = org1(&sim).await;
    let (s, _, b) = org.send(Method::GET, "/ServiceProviderConfigs", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["filter"]["maxResults"], 200);
    assert_eq!(b["etag"]["supported"], false);
    assert_eq!(b["authenticationSchemes"][0]["type"], "oauth2");
    let not_found = json!({"errorCode": "NOT_FOUND", "message": "Could not find a match for URL"});
    let (s, _, b) = org.send(Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(
        (s, b),
        (404, not_found.clone()),
        "the RFC's singular path does not exist"
    );
    let (s, _, b) = org.send(Method::GET, "/Bulk", None).await;
    assert_eq!((s, b), (404, not_found));
    sim.stop().await;
}

#[tokio::test]
async fn create_without_one_profile_is_409_in_the_broken_envelope() {
    let sim = start(&config(&json!({}))).await;
    let org = org1(&sim).await;
    let admin = org.profile_id("System Administrator").await;
    let standard = org.profile_id("Standard User").await;
    let permset = org.profile_id("SCIM Admin").await;
    assert!(
        admin.starts_with("00e") && permset.starts_with("0PS"),
        "{admin} {permset}"
    );
    let expected = json!({
        "schemas": "[\"urn:ietf:params:scim:api:messages:2.0:Error\"]",
        "detail": NO_PROFILE,
        "status": 409,
    });
    for ents in [
        json!([]),
        json!([{"value": permset}]),
        json!([{"value": admin}, {"value": standard}]),
    ] {
        let body = sf_user("marc@acme.com.prod", ents.clone());
        let (s, _, b) = org.send(Method::POST, "/Users", Some(body)).await;
        assert_eq!((s, b), (409, expected.clone()), "{ents}");
    }
    let mut body = sf_user("marc@acme.com.prod", json!([]));
    body.as_object_mut().map(|o| o.remove("entitlements"));
    let (s, _, b) = org.send(Method::POST, "/Users", Some(body)).await;
    assert_eq!((s, b), (409, expected));
    let (s, _, b) = org
        .send(
            Method::POST,
            "/Users",
            Some(sf_user(
                "marc@acme.com.prod",
                json!([{"value": standard}, {"value": permset}]),
            )),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert!(
        b["id"]
            .as_str()
            .is_some_and(|i| i.starts_with("005") && i.len() == 18),
        "{b}"
    );
    assert_eq!(b["userType"], "Standard");
    assert_eq!(b["nickName"], "marc@acme.com.prod");
    assert_eq!(b["entitlements"][0]["type"], "Profile");
    assert_eq!(b["entitlements"][1]["type"], "PermissionSet");
    assert!(
        b["schemas"].as_array().is_some_and(|s| s.len() == 2),
        "core and enterprise schemas: {b}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn usernames_are_unique_across_all_salesforce_tenants() {
    let sim = start(&config(&json!({}))).await;
    let o1 = org1(&sim).await;
    let o2 = Org {
        sim: &sim,
        id: "org2",
        token: None,
    };
    let (s, b) = o1.create_user("marc@acme.com").await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = o2.create_user("MARC@acme.com").await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["status"], 409);
    assert!(
        b["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("DUPLICATE_USERNAME")),
        "{b}"
    );
    // A plain SCIM tenant is another world.
    let (s, _, _) = sim
        .send(
            Method::POST,
            &sim.at("/plain/scim/v2/Users"),
            Some(json!({"schemas": [USER], "userName": "marc@acme.com"})),
            &[],
        )
        .await;
    assert_eq!(s, 201);
    // Resetting org1 (an org deleted) frees the name.
    let resp = sim
        .http
        .post(sim.at("/_admin/tenants/org1/reset"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 204);
    let (s, b) = o2.create_user("marc@acme.com").await;
    assert_eq!(s, 201, "{b}");
    sim.stop().await;
}

#[tokio::test]
async fn user_name_must_be_an_email_and_only_one_phone() {
    let sim = start(&config(&json!({}))).await;
    let org = org1(&sim).await;
    let (s, b) = org.create_user("marc").await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["status"], 400);
    let profile = org.profile_id("Standard User").await;
    let mut body = sf_user("marc@acme.com", json!([{"value": profile}]));
    body["phoneNumbers"] =
        json!([{"value": "1", "type": "work"}, {"value": "2", "type": "mobile"}]);
    let (s, _, b) = org.send(Method::POST, "/Users", Some(body)).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["schemas"].is_string(), "broken envelope: {b}");
    sim.stop().await;
}

/// LocaleSidKey, TimeZoneSidKey and LanguageLocaleKey are required User fields: a user created
/// without them gets the org's defaults, a value sent is kept, and removing one brings the
/// default back, while an optional attribute (title) can be removed.
#[tokio::test]
async fn required_locale_fields_take_the_org_defaults_and_cannot_be_cleared() {
    let sim = start(&config(&json!({}))).await;
    let org = org1(&sim).await;
    let profile = org.profile_id("Standard User").await;
    let mut body = sf_user("marc@acme.com", json!([{"value": profile}]));
    body["locale"] = json!("de_DE");
    body["title"] = json!("CEO");
    let (s, _, u) = org.send(Method::POST, "/Users", Some(body)).await;
    assert_eq!(s, 201, "{u}");
    assert_eq!(
        (&u["locale"], &u["timezone"], &u["preferredLanguage"]),
        (
            &json!("de_DE"),
            &json!("America/Los_Angeles"),
            &json!("en_US")
        ),
        "{u}"
    );
    let id = u["id"].as_str().unwrap_or_default().to_string();
    let (s, _, u) = org
        .send(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(json!({"schemas": [PATCH], "Operations": [
                {"op": "remove", "path": "locale"}, {"op": "remove", "path": "title"}]})),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["locale"], "en_US", "the default again: {u}");
    assert!(u.get("title").is_none(), "{u}");
    sim.stop().await;
}

#[tokio::test]
async fn delete_only_deactivates_and_active_true_reactivates() {
    let sim = start(&config(&json!({}))).await;
    let org = org1(&sim).await;
    let (_, u) = org.create_user("marc@acme.com").await;
    let id = u["id"].as_str().unwrap_or_default().to_string();
    let (s, _, b) = org
        .send(Method::DELETE, &format!("/Users/{id}"), None)
        .await;
    assert_eq!((s, b), (204, Value::Null));
    let (s, _, u) = org.send(Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!(
        (s, u["active"].clone()),
        (200, json!(false)),
        "still readable, inactive"
    );
    let (s, b) = org.create_user("marc@acme.com").await;
    assert_eq!(s, 409, "the name is still taken: {b}");
    let (s, _, u) = org
        .send(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": true}}]})),
        )
        .await;
    assert_eq!((s, u["active"].clone()), (200, json!(true)), "{u}");
    sim.stop().await;
}

#[tokio::test]
async fn groups_cannot_be_created_or_deleted() {
    let sim = start(&config(&json!({}))).await;
    let org = org1(&sim).await;
    let (s, _, b) = org
        .send(
            Method::POST,
            "/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "New"})),
        )
        .await;
    assert_eq!(s, 405, "{b}");
    assert_eq!(b[0]["errorCode"], "METHOD_NOT_ALLOWED");
    let sales = org.group_id("Sales").await;
    assert!(sales.starts_with("00G") && sales.len() == 18, "{sales}");
    let (s, _, b) = org
        .send(Method::DELETE, &format!("/Groups/{sales}"), None)
        .await;
    assert_eq!(
        (s, b[0]["errorCode"].clone()),
        (405, json!("METHOD_NOT_ALLOWED"))
    );
    let (_, _, list) = org.send(Method::GET, "/Groups", None).await;
    assert_eq!(
        list["totalResults"], 2,
        "seeded Sales and Support only: {list}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn membership_patch_takes_the_members_object() {
    let sim = start(&config(&json!({}))).await;
    let org = org1(&sim).await;
    let (_, u) = org.create_user("marc@acme.com").await;
    let uid = u["id"].as_str().unwrap_or_default().to_string();
    let gid = org.group_id("Sales").await;
    let patch = |op: &str, value: Value| {
        Some(
            json!({"schemas": [PATCH], "Operations": [{"op": op, "path": "members", "value": value}]}),
        )
    };
    let (s, _, g) = org
        .send(
            Method::PATCH,
            &format!("/Groups/{gid}"),
            patch("add", json!({"members": [{"value": uid}]})),
        )
        .await;
    assert_eq!(
        (s, g["members"][0]["value"].clone()),
        (200, json!(uid)),
        "{g}"
    );
    let (s, _, b) = org
        .send(
            Method::PATCH,
            &format!("/Groups/{gid}"),
            patch("add", json!([{"value": uid}])),
        )
        .await;
    assert_eq!(s, 400, "the RFC bare array is not Salesforce's shape: {b}");
    let (s, _, b) = org
        .send(
            Method::PATCH,
            &format!("/Groups/{gid}"),
            patch("add", json!({"members": [{"value": "005000000000000AAA"}]})),
        )
        .await;
    assert_eq!(s, 400, "unknown user: {b}");
    let (s, _, g) = org
        .send(
            Method::PATCH,
            &format!("/Groups/{gid}"),
            patch("remove", json!({"members": [{"value": uid}]})),
        )
        .await;
    assert_eq!((s, g["members"].clone()), (200, json!([])), "{g}");
    sim.stop().await;
}

#[tokio::test]
async fn entitlements_and_roles_are_listed() {
    let sim = start(&config(&json!({}))).await;
    let org = org1(&sim).await;
    let (s, _, b) = org.send(Method::GET, "/Entitlements", None).await;
    assert_eq!((s, b["totalResults"].clone()), (200, json!(3)), "{b}");
    let id = b["Resources"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (s, _, e) = org
        .send(Method::GET, &format!("/Entitlements/{id}"), None)
        .await;
    assert_eq!((s, e["type"].clone()), (200, json!("Profile")));
    let (s, _, r) = org.send(Method::GET, "/Roles", None).await;
    assert_eq!(
        (s, r["Resources"][0]["displayName"].clone()),
        (200, json!("CEO"))
    );
    assert!(
        r["Resources"][0]["id"]
            .as_str()
            .is_some_and(|i| i.starts_with("00E"))
    );
    sim.stop().await;
}

#[tokio::test]
async fn client_credentials_flow() {
    let sim = start(&config(&json!({}))).await;
    let (s, b) = token_request(
        &sim,
        "org1",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "cid"),
            ("client_secret", "nope"),
        ],
    )
    .await;
    assert_eq!(
        (s, b["error"].clone()),
        (400, json!("invalid_client")),
        "{b}"
    );
    let (s, b) = token_request(
        &sim,
        "org1",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "other"),
            ("client_secret", "csecret"),
        ],
    )
    .await;
    assert_eq!((s, b["error"].clone()), (400, json!("invalid_client_id")));
    let (s, b) = token_request(&sim, "org1", &[("grant_type", "password")]).await;
    assert_eq!(
        (s, b["error"].clone()),
        (400, json!("unsupported_grant_type"))
    );
    let (s, b) = token_request(
        &sim,
        "org1",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "cid"),
            ("client_secret", "csecret"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b.get("expires_in").is_none() && b.get("refresh_token").is_none(),
        "{b}"
    );
    assert_eq!(b["token_type"], "Bearer");
    assert!(
        b["instance_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/org1"))
    );
    let org = Org {
        sim: &sim,
        id: "org1",
        token: b["access_token"].as_str().map(str::to_string),
    };
    assert_eq!(org.send(Method::GET, "/Users", None).await.0, 200);
    let anon = Org {
        sim: &sim,
        id: "org1",
        token: None,
    };
    let (s, _, b) = anon.send(Method::GET, "/Users", None).await;
    assert_eq!((s, b), (401, session_error()));
    let forged = Org {
        sim: &sim,
        id: "org1",
        token: Some("00Dforged!x".into()),
    };
    assert_eq!(forged.send(Method::GET, "/Users", None).await.0, 401);
    sim.stop().await;
}

#[tokio::test]
async fn jwt_bearer_flow_checks_signature_and_claims() {
    let sim = start(&config(&json!({}))).await;
    let good = json!({"iss": "cid", "sub": "integration@acme.com",
        "aud": "https://login.salesforce.com", "exp": now() + 120});
    let grant = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    let (s, b) = token_request(
        &sim,
        "org1",
        &[
            ("grant_type", grant),
            ("assertion", &jwt(&good, PRIVATE_PEM)),
        ],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let org = Org {
        sim: &sim,
        id: "org1",
        token: b["access_token"].as_str().map(str::to_string),
    };
    assert_eq!(org.send(Method::GET, "/Users", None).await.0, 200);

    let mut cases: Vec<(&str, String)> = vec![("wrong key", jwt(&good, OTHER_PRIVATE_PEM))];
    for (what, key, value) in [
        ("wrong iss", "iss", json!("someone-else")),
        ("unapproved sub", "sub", json!("intruder@acme.com")),
        ("wrong aud", "aud", json!("https://evil.example.com")),
        ("expired", "exp", json!(now() - 10)),
        ("exp too far ahead", "exp", json!(now() + 3600)),
    ] {
        let mut c = good.clone();
        c[key] = value;
        cases.push((what, jwt(&c, PRIVATE_PEM)));
    }
    cases.push(("not a jwt", "abc.def.ghi".into()));
    for (what, assertion) in cases {
        let (s, b) = token_request(
            &sim,
            "org1",
            &[("grant_type", grant), ("assertion", &assertion)],
        )
        .await;
        assert_eq!(
            (s, b["error"].clone()),
            (400, json!("invalid_grant")),
            "{what}: {b}"
        );
    }
    sim.stop().await;
}

#[tokio::test]
async fn issued_tokens_expire_into_invalid_session_id() {
    let sim = start(&config(&json!({"token_ttl_secs": 1}))).await;
    let org = org1(&sim).await;
    assert_eq!(org.send(Method::GET, "/Users", None).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, _, b) = org.send(Method::GET, "/Users", None).await;
    assert_eq!((s, b), (401, session_error()));
    let fresh = org1(&sim).await;
    assert_eq!(
        fresh.send(Method::GET, "/Users", None).await.0,
        200,
        "a new grant works"
    );
    sim.stop().await;
}

#[tokio::test]
async fn rolling_allocation_is_403_request_limit_exceeded() {
    let sim = start(&config(&json!({"request_limit": 3}))).await;
    let org = org1(&sim).await;
    for i in 1..=3 {
        let (s, h, _) = org.send(Method::GET, "/Users", None).await;
        assert_eq!(s, 200);
        assert_eq!(
            h.get("sforce-limit-info").and_then(|v| v.to_str().ok()),
            Some(format!("api-usage={i}/3").as_str())
        );
    }
    let (s, h, b) = org.send(Method::GET, "/Users", None).await;
    assert_eq!(
        (s, b),
        (
            403,
            json!([{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}])
        )
    );
    assert_eq!(
        h.get("sforce-limit-info").and_then(|v| v.to_str().ok()),
        Some("api-usage=3/3")
    );
    assert!(
        h.get("retry-after").is_none(),
        "Salesforce sends no Retry-After"
    );
    let stats = sim.admin("/_admin/tenants/org1/stats").await;
    assert_eq!(stats["throttled"], 1, "{stats}");
    // OAuth calls do not count against the allocation.
    client_credentials(&sim).await;
    sim.stop().await;
}

#[tokio::test]
async fn token_revocation_invalidates_oauth_tokens() {
    let sim = start(&config(&json!({}))).await;
    let org = org1(&sim).await;
    assert_eq!(org.send(Method::GET, "/Users", None).await.0, 200);
    assert_eq!(
        sim.faults("org1", json!({"token_revoked": true})).await,
        200
    );
    let (s, _, b) = org.send(Method::GET, "/Users", None).await;
    assert_eq!((s, b), (401, session_error()));
    assert_eq!(sim.faults("org1", json!({})).await, 200);
    let (s, _, _) = org.send(Method::GET, "/Users", None).await;
    assert_eq!(s, 401, "a revoked token stays revoked");
    let fresh = org1(&sim).await;
    assert_eq!(fresh.send(Method::GET, "/Users", None).await.0, 200);
    // The rate-limit fault throttles the Salesforce way.
    sim.faults("org1", json!({"rate_limit": {"per_sec": 0.1, "burst": 1}}))
        .await;
    fresh.send(Method::GET, "/Users", None).await;
    let (s, h, b) = fresh.send(Method::GET, "/Users", None).await;
    assert_eq!(
        (s, b[0]["errorCode"].clone()),
        (403, json!("REQUEST_LIMIT_EXCEEDED"))
    );
    assert!(h.get("sforce-limit-info").is_some());
    sim.stop().await;
}

/// `Sforce-Limit-Info` is on every REST answer, not only on successful reads: a 201 create, a
/// 401 without a session and a 404 for an unknown id or URL; each counts against the allocation.
#[tokio::test]
async fn limit_info_on_created_unauthorized_and_not_found_answers() {
    let sim = start(&config(&json!({"request_limit": 100}))).await;
    let org = org1(&sim).await;
    let limit_info = |h: &HeaderMap| {
        h.get("sforce-limit-info")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let profile = org.profile_id("Standard User").await;
    let (s, h, b) = org
        .send(
            Method::POST,
            "/Users",
            Some(sf_user("limits@acme.com", json!([{"value": profile}]))),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(limit_info(&h).as_deref(), Some("api-usage=2/100"), "{h:?}");

    let anonymous = Org {
        sim: &sim,
        id: "org1",
        token: None,
    };
    let (s, h, b) = anonymous.send(Method::GET, "/Users", None).await;
    assert_eq!((s, b), (401, session_error()));
    assert_eq!(limit_info(&h).as_deref(), Some("api-usage=3/100"), "{h:?}");

    let (s, h, b) = org
        .send(Method::GET, "/Users/005000000000000AAA", None)
        .await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(limit_info(&h).as_deref(), Some("api-usage=4/100"), "{h:?}");
    let (s, h, _) = org.send(Method::GET, "/NoSuchEndpoint", None).await;
    assert_eq!(s, 404);
    assert_eq!(limit_info(&h).as_deref(), Some("api-usage=5/100"), "{h:?}");
    sim.stop().await;
}
