//! AWS IAM Identity Center mode: one test per quirk docs/providers/aws.md lists, asserting the
//! status and body AWS gives.

mod common;

use std::collections::HashSet;

use common::*;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const AUTH: (&str, &str) = ("authorization", "Bearer aws-token");
const UNPARSABLE: &str = "Request is unparsable, syntactically incorrect, or violates schema.";
const SINGLE: &str = "Current PATCH support allows omitting \"path\" attribute only for Add and Replace operations modifying a single attribute";

async fn start_aws(extra: &str) -> Sim {
    start(&format!(
        "tenants: [{{id: tid-1, mode: aws, auth: {{kind: bearer, token: aws-token}}{extra}}}, {{id: plain, mode: scim}}]"
    ))
    .await
}

fn url(sim: &Sim, path: &str) -> String {
    sim.at(&format!("/tid-1/scim/v2{path}"))
}

async fn aws(
    sim: &Sim,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, HeaderMap, Value) {
    sim.send(method, &url(sim, path), body, &[AUTH]).await
}

fn user(user_name: &str) -> Value {
    json!({
        "schemas": [USER],
        "userName": user_name,
        "externalId": format!("ext-{user_name}"),
        "name": {"givenName": "Jane", "familyName": "Doe"},
        "displayName": "Jane Doe",
        "emails": [{"value": format!("{user_name}@example.com"), "type": "work", "primary": true}],
        "active": true,
    })
}

async fn create_user(sim: &Sim, user_name: &str) -> String {
    let (s, _, b) = aws(sim, Method::POST, "/Users", Some(user(user_name))).await;
    assert_eq!(s, 201, "{b}");
    b["id"].as_str().unwrap_or_default().to_string()
}

async fn create_group(sim: &Sim, name: &str, members: &[String]) -> String {
    let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
    let (s, _, b) = aws(
        sim,
        Method::POST,
        "/Groups",
        Some(json!({"schemas": [GROUP], "displayName": name, "members": members})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    b["id"].as_str().unwrap_or_default().to_string()
}

fn ops(ops: Value) -> Option<Value> {
    Some(json!({"schemas": [PATCH], "Operations": ops}))
}

/// The exception an AWS answer names in `x-amzn-ErrorType`.
fn error_type(h: &HeaderMap) -> Option<&str> {
    h.get("x-amzn-errortype").and_then(|v| v.to_str().ok())
}

/// AWS's 400 ValidationException body: both `schema` and `schemas`, string status.
fn assert_validation(body: &Value) {
    assert_eq!(body["status"], "400", "{body}");
    assert_eq!(body["schema"], json!([ERROR]), "{body}");
    assert!(body["exceptionRequestId"].is_string(), "{body}");
}

#[tokio::test]
async fn wrong_tenant_is_401_and_every_answer_has_a_request_id() {
    let sim = start_aws("").await;
    let (s, h, b) = sim
        .send(
            Method::GET,
            &sim.at("/wrong-tenant/scim/v2/Users"),
            None,
            &[AUTH],
        )
        .await;
    assert_eq!(s, 401, "{b}");
    assert_eq!(b["status"], "401");
    assert!(h.get("x-amzn-requestid").is_some());
    let (s, h, _) = aws(&sim, Method::GET, "/Users", None).await;
    assert_eq!(s, 200);
    assert!(h.get("x-amzn-requestid").is_some());
    // The plain tenant on the same URL shape still works.
    assert_eq!(
        sim.send(Method::GET, &sim.at("/plain/scim/v2/Users"), None, &[])
            .await
            .0,
        200
    );
    sim.stop().await;
}

#[tokio::test]
async fn bearer_token_only() {
    let sim = start_aws("").await;
    for auth in ["Basic YTpi", "Bearer wrong", ""] {
        let (s, _, b) = sim
            .send(
                Method::GET,
                &url(&sim, "/Users"),
                None,
                &[("authorization", auth)],
            )
            .await;
        assert_eq!(s, 401, "{auth}: {b}");
    }
    sim.stop().await;
}

#[tokio::test]
async fn given_family_and_display_names_are_required() {
    let sim = start_aws("").await;
    for (attr, body) in [
        ("userName", {
            let mut u = user("a");
            u.as_object_mut().map(|o| o.remove("userName"));
            u
        }),
        ("displayName", {
            let mut u = user("a");
            u.as_object_mut().map(|o| o.remove("displayName"));
            u
        }),
        ("name.givenName", {
            let mut u = user("a");
            u["name"] = json!({"familyName": "D"});
            u
        }),
        ("name.familyName", {
            let mut u = user("a");
            u["name"] = json!({"givenName": "J"});
            u
        }),
    ] {
        let (s, _, b) = aws(&sim, Method::POST, "/Users", Some(body)).await;
        assert_eq!(s, 400, "{attr}: {b}");
        assert_validation(&b);
        assert!(
            b["detail"].as_str().is_some_and(|d| d.contains(attr)),
            "{b}"
        );
    }
    sim.stop().await;
}

#[tokio::test]
async fn exactly_one_primary_email_phone_address_without_display() {
    let sim = start_aws("").await;
    let cases = [
        (
            "two emails",
            json!({"emails": [
            {"value": "a@x.com", "primary": true}, {"value": "b@x.com", "primary": false}]}),
        ),
        (
            "two phones",
            json!({"phoneNumbers": [{"value": "1"}, {"value": "2"}]}),
        ),
        (
            "two addresses",
            json!({"addresses": [{"locality": "A"}, {"locality": "B"}]}),
        ),
        (
            "email not primary",
            json!({"emails": [{"value": "a@x.com", "type": "work"}]}),
        ),
        (
            "email display",
            json!({"emails": [{"value": "a@x.com", "primary": true, "display": "A"}]}),
        ),
        (
            "phone display",
            json!({"phoneNumbers": [{"value": "1", "display": "one"}]}),
        ),
    ];
    for (what, patch) in cases {
        let mut body = user("a");
        if let (Some(b), Value::Object(p)) = (body.as_object_mut(), patch) {
            b.extend(p);
        }
        let (s, _, b) = aws(&sim, Method::POST, "/Users", Some(body)).await;
        assert_eq!(s, 400, "{what}: {b}");
        assert_validation(&b);
    }
    let mut one = user("a");
    one["phoneNumbers"] = json!([{"value": "+1 555", "type": "work"}]);
    let (s, _, b) = aws(&sim, Method::POST, "/Users", Some(one)).await;
    assert_eq!(s, 201, "{b}");
    sim.stop().await;
}

#[tokio::test]
async fn unsupported_user_attributes_are_400() {
    let sim = start_aws("").await;
    for (attr, value) in [
        ("password", json!("secret")),
        ("entitlements", json!([{"value": "x"}])),
        ("groups", json!([{"value": "g"}])),
        ("x509Certificates", json!([{"value": "AAAA"}])),
        ("ims", json!([{"value": "im"}])),
        ("photos", json!([{"value": "https://x/p.png"}])),
    ] {
        let mut body = user("a");
        body[attr] = value;
        let (s, _, b) = aws(&sim, Method::POST, "/Users", Some(body)).await;
        assert_eq!(s, 400, "{attr}: {b}");
        assert!(
            b["detail"].as_str().is_some_and(|d| d.contains(attr)),
            "{b}"
        );
    }
    sim.stop().await;
}

#[tokio::test]
async fn conflicts_are_409_with_the_singular_schema_key() {
    let sim = start_aws("").await;
    create_user(&sim, "jane").await;
    let mut same_email = user("other");
    same_email["emails"] = json!([{"value": "JANE@example.com", "primary": true}]);
    let mut same_ext = user("other2");
    same_ext["externalId"] = json!("ext-jane");
    for (what, body) in [
        ("userName", user("jane")),
        ("email", same_email),
        ("externalId", same_ext),
    ] {
        let (s, _, b) = aws(&sim, Method::POST, "/Users", Some(body)).await;
        assert_eq!(s, 409, "{what}: {b}");
        assert_eq!(b["schema"], json!([ERROR]), "{b}");
        assert!(b.get("schemas").is_none(), "no `schemas`: {b}");
        assert!(b.get("scimType").is_none(), "no scimType: {b}");
        assert_eq!(b["detail"], "Refused to create a new, duplicate resource.");
        assert_eq!(b["status"], "409");
        assert!(b["exceptionRequestId"].is_string() && b["timeStamp"].is_string());
    }
    create_group(&sim, "Eng", &[]).await;
    let (s, _, b) = aws(
        &sim,
        Method::POST,
        "/Groups",
        Some(json!({"schemas": [GROUP], "displayName": "Eng"})),
    )
    .await;
    assert_eq!(
        (s, b["detail"].clone()),
        (409, json!("Refused to create a new, duplicate resource."))
    );
    sim.stop().await;
}

#[tokio::test]
async fn patch_without_path_may_change_one_attribute_only() {
    let sim = start_aws("").await;
    let id = create_user(&sim, "jane").await;
    let path = format!("/Users/{id}");
    let (s, _, b) = aws(
        &sim,
        Method::PATCH,
        &path,
        ops(json!([{"op": "replace", "value": {"displayName": "J", "title": "Boss"}}])),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["detail"], SINGLE);
    let (s, _, b) = aws(
        &sim,
        Method::PATCH,
        &path,
        ops(json!([{"op": "replace", "value": {"displayName": "J"}}])),
    )
    .await;
    assert_eq!((s, b["displayName"].clone()), (200, json!("J")), "{b}");
    sim.stop().await;
}

#[tokio::test]
async fn user_name_and_active_cannot_be_removed_or_repeated() {
    let sim = start_aws("").await;
    let id = create_user(&sim, "jane").await;
    let path = format!("/Users/{id}");
    for (what, o) in [
        (
            "remove userName",
            json!([{"op": "remove", "path": "userName"}]),
        ),
        ("remove active", json!([{"op": "remove", "path": "active"}])),
        (
            "two userName ops",
            json!([
            {"op": "replace", "path": "userName", "value": "a"},
            {"op": "replace", "path": "userName", "value": "b"}]),
        ),
        (
            "two active ops",
            json!([
            {"op": "replace", "path": "active", "value": false},
            {"op": "replace", "value": {"active": true}}]),
        ),
    ] {
        let (s, _, b) = aws(&sim, Method::PATCH, &path, ops(o)).await;
        assert_eq!(s, 400, "{what}: {b}");
        assert_validation(&b);
    }
    let (s, _, b) = aws(
        &sim,
        Method::PATCH,
        &path,
        ops(json!([{"op": "replace", "path": "active", "value": false}])),
    )
    .await;
    assert_eq!((s, b["active"].clone()), (200, json!(false)), "{b}");
    sim.stop().await;
}

#[tokio::test]
async fn at_most_100_members_per_create_or_patch() {
    let sim = start_aws("").await;
    let mut ids = Vec::new();
    for i in 0..101 {
        ids.push(create_user(&sim, &format!("u{i}")).await);
    }
    let members: Vec<Value> = ids.iter().map(|m| json!({"value": m})).collect();
    let (s, _, b) = aws(
        &sim,
        Method::POST,
        "/Groups",
        Some(json!({"schemas": [GROUP], "displayName": "Big", "members": members})),
    )
    .await;
    assert_eq!((s, b["detail"].clone()), (400, json!(UNPARSABLE)), "{b}");
    let gid = create_group(&sim, "Big", &ids[..100]).await;
    let (s, _, b) = aws(
        &sim,
        Method::PATCH,
        &format!("/Groups/{gid}"),
        ops(json!([
            {"op": "remove", "path": "members", "value": members[..50]},
            {"op": "add", "path": "members", "value": members[50..]},
        ])),
    )
    .await;
    assert_eq!(
        (s, b["detail"].clone()),
        (400, json!(UNPARSABLE)),
        "101 changes: {b}"
    );
    let (s, _, b) = aws(
        &sim,
        Method::PATCH,
        &format!("/Groups/{gid}"),
        ops(json!([{"op": "add", "path": "members", "value": [members[100]]}])),
    )
    .await;
    assert_eq!((s, b), (204, Value::Null), "PATCH /Groups answers 204");
    sim.stop().await;
}

#[tokio::test]
async fn replace_members_and_remove_all_members_are_400() {
    let sim = start_aws("").await;
    let a = create_user(&sim, "a").await;
    let gid = create_group(&sim, "Eng", std::slice::from_ref(&a)).await;
    for o in [
        json!([{"op": "replace", "path": "members", "value": [{"value": a}]}]),
        json!([{"op": "replace", "value": {"members": [{"value": a}]}}]),
        json!([{"op": "remove", "path": "members"}]),
    ] {
        let (s, _, b) = aws(
            &sim,
            Method::PATCH,
            &format!("/Groups/{gid}"),
            ops(o.clone()),
        )
        .await;
        assert_eq!(s, 400, "{o}: {b}");
        assert_validation(&b);
    }
    let (s, _, _) = aws(
        &sim,
        Method::PATCH,
        &format!("/Groups/{gid}"),
        ops(json!([{"op": "remove", "path": format!("members[value eq \"{a}\"]")}])),
    )
    .await;
    assert_eq!(s, 204, "removing a named member works");
    sim.stop().await;
}

#[tokio::test]
async fn group_put_is_not_supported() {
    let sim = start_aws("").await;
    let gid = create_group(&sim, "Eng", &[]).await;
    let (s, h, b) = aws(
        &sim,
        Method::PUT,
        &format!("/Groups/{gid}"),
        Some(json!({"schemas": [GROUP], "displayName": "Eng2"})),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert_validation(&b);
    assert_eq!(error_type(&h), Some("ValidationException"), "{h:?}");
    assert_eq!(
        sim.admin("/_admin/tenants/tid-1/groups").await[0]["displayName"],
        "Eng"
    );
    sim.stop().await;
}

#[tokio::test]
async fn get_group_never_shows_members_but_member_filters_do() {
    let sim = start_aws("").await;
    let a = create_user(&sim, "a").await;
    let b_id = create_user(&sim, "b").await;
    let gid = create_group(&sim, "Eng", std::slice::from_ref(&a)).await;
    let (s, _, g) = aws(&sim, Method::GET, &format!("/Groups/{gid}"), None).await;
    assert_eq!((s, g["members"].clone()), (200, json!([])), "{g}");
    let (_, _, list) = aws(&sim, Method::GET, "/Groups", None).await;
    assert_eq!(list["Resources"][0]["members"], json!([]));
    assert_eq!(
        sim.admin("/_admin/tenants/tid-1/groups").await[0]["members"][0]["value"],
        a.as_str(),
        "membership is stored"
    );
    let q = |f: String| format!("/Groups?filter={}", enc(&f));
    let (_, _, r) = aws(
        &sim,
        Method::GET,
        &q(format!("id eq \"{gid}\" and members eq \"{a}\"")),
        None,
    )
    .await;
    assert_eq!(r["totalResults"], 1, "{r}");
    let (_, _, r) = aws(
        &sim,
        Method::GET,
        &q(format!("id eq \"{gid}\" and members eq \"{b_id}\"")),
        None,
    )
    .await;
    assert_eq!(r["totalResults"], 0, "{r}");
    let (s, _, _) = aws(
        &sim,
        Method::GET,
        &q(format!("id eq \"{gid}\" and members eq \"nobody\"")),
        None,
    )
    .await;
    assert_eq!(s, 404, "a member that does not exist");
    let (_, _, r) = aws(
        &sim,
        Method::GET,
        &q(format!("members.value eq \"{a}\"")),
        None,
    )
    .await;
    assert_eq!(r["Resources"][0]["id"], gid.as_str());
    let (_, _, r) = aws(
        &sim,
        Method::GET,
        &format!(
            "/Users?filter={}",
            enc(&format!("groups.value eq \"{gid}\""))
        ),
        None,
    )
    .await;
    assert_eq!(
        (r["totalResults"].clone(), r["Resources"][0]["id"].clone()),
        (json!(1), json!(a))
    );
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
async fn filters_eq_on_documented_attributes_only_and_no_start_index() {
    let sim = start_aws("").await;
    let id = create_user(&sim, "jane").await;
    for f in ["userName eq \"jane\"", "externalId eq \"ext-jane\""] {
        let (s, _, r) = aws(
            &sim,
            Method::GET,
            &format!("/Users?filter={}", enc(f)),
            None,
        )
        .await;
        assert_eq!((s, r["totalResults"].clone()), (200, json!(1)), "{f}: {r}");
    }
    for f in [
        "userName co \"ja\"".to_string(),
        "userName eq \"jane\" or userName eq \"x\"".to_string(),
        format!("id eq \"{id}\""),
        "displayName eq \"Jane Doe\"".to_string(),
        "emails.value eq \"jane@example.com\"".to_string(),
    ] {
        let (s, _, r) = aws(
            &sim,
            Method::GET,
            &format!("/Users?filter={}", enc(&f)),
            None,
        )
        .await;
        assert_eq!(s, 400, "{f}: {r}");
    }
    for p in [
        "/Users?startIndex=1",
        "/Users?attributes=userName",
        "/Groups?excludedAttributes=members",
    ] {
        let (s, _, r) = aws(&sim, Method::GET, p, None).await;
        assert_eq!(s, 400, "{p}: {r}");
        assert_validation(&r);
    }
    sim.stop().await;
}

#[tokio::test]
async fn cursor_pagination_with_short_pages() {
    let sim = start_aws(", aws: {short_page_rate: 1.0}").await;
    for i in 0..230 {
        create_user(&sim, &format!("u{i:03}")).await;
    }
    let mut seen = HashSet::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let (s, _, r) = aws(
            &sim,
            Method::GET,
            &format!("/Users?count=100&cursor={cursor}"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{r}");
        pages += 1;
        let n = r["Resources"].as_array().map_or(0, Vec::len);
        assert!(n <= 100);
        assert_eq!(r["itemsPerPage"], n);
        assert_eq!(r["totalResults"], 230);
        for u in r["Resources"].as_array().into_iter().flatten() {
            assert!(
                seen.insert(u["id"].as_str().unwrap_or_default().to_string()),
                "no repeats"
            );
        }
        match r["nextCursor"].as_str() {
            Some(c) => {
                assert!(n < 100, "every page is short with short_page_rate 1.0");
                cursor = c.to_string();
            }
            None => break,
        }
        assert!(pages < 500, "pagination ends");
    }
    assert_eq!(seen.len(), 230, "short pages do not mean the end");
    assert!(pages >= 3, "230 results in pages of at most 99");
    // Without `cursor`: the legacy form, at most 50 and no nextCursor.
    let (_, _, r) = aws(&sim, Method::GET, "/Users", None).await;
    assert_eq!(r["itemsPerPage"], 50);
    assert!(r.get("nextCursor").is_none());
    let (s, _, _) = aws(&sim, Method::GET, "/Users?cursor=garbage!", None).await;
    assert_eq!(s, 400);
    sim.stop().await;
}

#[tokio::test]
async fn throttling_is_429_without_retry_after() {
    let sim = start_aws("").await;
    sim.faults("tid-1", json!({"rate_limit": {"per_sec": 0.1, "burst": 1}}))
        .await;
    aws(&sim, Method::GET, "/Users", None).await;
    let (s, h, b) = aws(&sim, Method::GET, "/Users", None).await;
    assert_eq!(s, 429, "{b}");
    assert_eq!(error_type(&h), Some("ThrottlingException"), "{h:?}");
    assert!(h.get("retry-after").is_none(), "{h:?}");
    assert_eq!(b["status"], "429");
    assert!(h.get("x-amzn-requestid").is_some());
    assert_eq!(
        sim.admin("/_admin/tenants/tid-1/stats").await["throttled"],
        1
    );
    sim.stop().await;
}

#[tokio::test]
async fn delete_is_real_and_faults_use_the_aws_shape() {
    let sim = start_aws("").await;
    let id = create_user(&sim, "jane").await;
    assert_eq!(
        aws(&sim, Method::DELETE, &format!("/Users/{id}"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        aws(&sim, Method::GET, &format!("/Users/{id}"), None)
            .await
            .0,
        404
    );
    assert_eq!(
        aws(&sim, Method::DELETE, &format!("/Users/{id}"), None)
            .await
            .0,
        404
    );
    create_user(&sim, "jane").await;
    sim.faults("tid-1", json!({"error_rate": 1.0, "error_statuses": [500]}))
        .await;
    let (s, _, b) = aws(&sim, Method::GET, "/Users", None).await;
    assert_eq!(
        (s, b["status"].clone(), b["schema"].clone()),
        (500, json!("500"), json!([ERROR]))
    );
    sim.stop().await;
}

#[tokio::test]
async fn discovery_endpoints() {
    let sim = start_aws("").await;
    let (s, _, b) = aws(&sim, Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(
        (
            s,
            b["etag"]["supported"].clone(),
            b["bulk"]["supported"].clone()
        ),
        (200, json!(false), json!(false))
    );
    assert_eq!(aws(&sim, Method::GET, "/Schemas", None).await.0, 200);
    assert_eq!(aws(&sim, Method::GET, "/ResourceTypes", None).await.0, 200);
    assert_eq!(aws(&sim, Method::GET, "/Bulk", None).await.0, 404);
    sim.stop().await;
}

/// Every error names its exception in `x-amzn-ErrorType` (the statuses and exceptions in
/// docs/providers/aws.md, "What AWS documents") while the bodies keep their documented shapes; a
/// success carries no exception.
#[tokio::test]
async fn errors_name_their_exception_in_x_amzn_error_type() {
    let sim = start_aws("").await;
    let (s, h, _) = aws(&sim, Method::GET, "/Users", None).await;
    assert_eq!((s, error_type(&h)), (200, None));
    create_user(&sim, "jane").await;

    let mut incomplete = user("nameless");
    incomplete["name"] = json!({"givenName": "Jane"});
    let (s, h, b) = aws(&sim, Method::POST, "/Users", Some(incomplete)).await;
    assert_eq!(
        (s, error_type(&h)),
        (400, Some("ValidationException")),
        "{b}"
    );
    assert_validation(&b);

    let (s, h, b) = sim
        .send(
            Method::GET,
            &url(&sim, "/Users"),
            None,
            &[("authorization", "Bearer nope")],
        )
        .await;
    assert_eq!(
        (s, error_type(&h)),
        (401, Some("UnauthorizedException")),
        "{b}"
    );
    let (s, h, _) = sim
        .send(
            Method::GET,
            &sim.at("/wrong-tenant/scim/v2/Users"),
            None,
            &[AUTH],
        )
        .await;
    assert_eq!((s, error_type(&h)), (401, Some("UnauthorizedException")));

    let (s, h, b) = aws(&sim, Method::GET, "/Users/no-such-id", None).await;
    assert_eq!(
        (s, error_type(&h)),
        (404, Some("ResourceNotFoundException")),
        "{b}"
    );
    assert_eq!(b["status"], "404");
    let (s, h, _) = aws(&sim, Method::GET, "/Bulk", None).await;
    assert_eq!(
        (s, error_type(&h)),
        (404, Some("ResourceNotFoundException"))
    );
    assert!(h.get("x-amzn-requestid").is_some(), "{h:?}");

    let (s, h, b) = aws(&sim, Method::POST, "/Users", Some(user("jane"))).await;
    assert_eq!((s, error_type(&h)), (409, Some("ConflictException")), "{b}");
    assert!(
        b.get("schemas").is_none(),
        "the 409 body keeps its singular key: {b}"
    );

    sim.faults("tid-1", json!({"error_rate": 1.0, "error_statuses": [500]}))
        .await;
    let (s, h, _) = aws(&sim, Method::GET, "/Users", None).await;
    assert_eq!((s, error_type(&h)), (500, Some("InternalServerException")));
    sim.stop().await;
}

/// Groups filter with `displayName eq` and `externalId eq` (exactly one match each, none for
/// an unknown value); other operators on them are refused.
#[tokio::test]
async fn group_filters_display_name_and_external_id_eq() {
    let sim = start_aws("").await;
    for (name, ext) in [("Engineering", "g-eng"), ("Sales", "g-sales")] {
        let (s, _, b) = aws(
            &sim,
            Method::POST,
            "/Groups",
            Some(json!({"schemas": [GROUP], "displayName": name, "externalId": ext})),
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }
    let names = |r: &Value| -> Vec<String> {
        r["Resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["displayName"].as_str().map(str::to_string))
            .collect()
    };
    for (f, want) in [
        ("displayName eq \"Sales\"", vec!["Sales"]),
        ("externalId eq \"g-eng\"", vec!["Engineering"]),
        ("displayName eq \"Nobody\"", vec![]),
        ("externalId eq \"g-none\"", vec![]),
    ] {
        let (s, _, r) = aws(
            &sim,
            Method::GET,
            &format!("/Groups?filter={}", enc(f)),
            None,
        )
        .await;
        assert_eq!(s, 200, "{f}: {r}");
        assert_eq!(names(&r), want, "{f}: {r}");
        assert_eq!(r["totalResults"], want.len(), "{f}: {r}");
    }
    let (s, _, r) = aws(
        &sim,
        Method::GET,
        &format!("/Groups?filter={}", enc("displayName co \"Sal\"")),
        None,
    )
    .await;
    assert_eq!(s, 400, "{r}");
    assert_validation(&r);
    sim.stop().await;
}

/// `count` is clamped to 1..=100 on cursor pages (AWS documents 1–100): 500 gives a full page
/// of 100 and a `nextCursor`, 0 gives one result; the second page holds the rest.
#[tokio::test]
async fn count_is_clamped_to_1_through_100() {
    let sim = start_aws(", aws: {short_page_rate: 0.0}").await;
    for i in 0..105 {
        create_user(&sim, &format!("c{i:03}")).await;
    }
    let (s, _, r) = aws(&sim, Method::GET, "/Users?cursor=&count=500", None).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (r["itemsPerPage"].clone(), r["totalResults"].clone()),
        (json!(100), json!(105))
    );
    assert_eq!(r["Resources"].as_array().map(Vec::len), Some(100));
    let next = r["nextCursor"].as_str().unwrap_or_default().to_string();
    assert!(!next.is_empty(), "more remain: {}", r["nextCursor"]);
    let (_, _, r) = aws(
        &sim,
        Method::GET,
        &format!("/Users?cursor={next}&count=500"),
        None,
    )
    .await;
    assert_eq!(r["itemsPerPage"], 5, "{r}");
    assert!(r.get("nextCursor").is_none(), "{r}");
    let (s, _, r) = aws(&sim, Method::GET, "/Users?cursor=&count=0", None).await;
    assert_eq!((s, r["itemsPerPage"].clone()), (200, json!(1)), "{r}");
    sim.stop().await;
}
