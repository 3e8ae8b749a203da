//! Plain RFC 7644 mode over HTTP: CRUD, PATCH forms, filters, paging, uniqueness, required
//! attributes, ETags, auth and discovery.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn create_get_delete_user() {
    let sim = start_plain().await;
    let body = json!({"schemas": [USER], "userName": "bjensen", "externalId": "e-1",
        "name": {"givenName": "Barbara", "familyName": "Jensen"}, "password": "secret",
        "emails": [{"value": "b@example.com", "type": "work", "primary": true}]});
    let (status, headers, created) = sim
        .send(Method::POST, &sim.url("/Users"), Some(body), &[])
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap_or_default().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "id {id} is a uuid");
    assert_eq!(created["meta"]["resourceType"], "User");
    assert_eq!(created["meta"]["version"], "W/\"1\"");
    assert_eq!(created["meta"]["created"], created["meta"]["lastModified"]);
    let location = format!("{}/Users/{id}", sim.url(""));
    assert_eq!(created["meta"]["location"], location.as_str());
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some(location.as_str())
    );
    assert_eq!(
        headers.get("etag").and_then(|v| v.to_str().ok()),
        Some("W/\"1\"")
    );
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/scim+json")
    );
    assert!(
        created.get("password").is_none(),
        "password is never returned"
    );
    assert_eq!(created["schemas"], json!([USER]));

    let (status, got) = sim.get(&format!("/Users/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(got, created);

    assert_eq!(sim.delete(&format!("/Users/{id}")).await, 204);
    let (status, err) = sim.get(&format!("/Users/{id}")).await;
    assert_eq!(status, 404);
    assert_eq!(err["schemas"], json!([ERROR]));
    assert_eq!(err["status"], "404");
    assert!(
        err["detail"].as_str().is_some_and(|d| d.contains(&id)),
        "{err}"
    );
    assert_eq!(sim.delete(&format!("/Users/{id}")).await, 404);
    sim.stop().await;
}

#[tokio::test]
async fn put_replaces_the_whole_resource() {
    let sim = start_plain().await;
    let id = sim
        .user(
            "alice",
            json!({"title": "Boss", "name": {"givenName": "A"}}),
        )
        .await;
    let (_, before) = sim.get(&format!("/Users/{id}")).await;
    let (status, after) = sim
        .put(
            &format!("/Users/{id}"),
            json!({"schemas": [USER], "userName": "alice2", "displayName": "Al", "id": "ignored"}),
        )
        .await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["id"], id.as_str());
    assert_eq!(after["userName"], "alice2");
    assert!(after.get("title").is_none(), "attributes not sent are gone");
    assert!(after.get("name").is_none());
    assert_eq!(after["meta"]["version"], "W/\"2\"");
    assert_eq!(after["meta"]["created"], before["meta"]["created"]);
    let (status, _) = sim
        .put("/Users/nope", json!({"schemas": [USER], "userName": "x"}))
        .await;
    assert_eq!(status, 404);
    sim.stop().await;
}

#[tokio::test]
async fn patch_user_every_form() {
    let sim = start_plain().await;
    let id = sim
        .user(
            "carol",
            json!({"name": {"givenName": "Carol", "familyName": "C"}, "active": true,
                   "emails": [{"value": "c@work", "type": "work"}, {"value": "c@home", "type": "home"}]}),
        )
        .await;
    let path = format!("/Users/{id}");
    // replace with a sub-attribute path
    let (s, u) = sim
        .patch(
            &path,
            json!([{"op": "replace", "path": "name.givenName", "value": "Caroline"}]),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(
        u["name"],
        json!({"givenName": "Caroline", "familyName": "C"})
    );
    assert_eq!(u["meta"]["version"], "W/\"2\"");
    // replace without a path
    let (s, u) = sim
        .patch(
            &path,
            json!([{"op": "replace", "value": {"active": false, "displayName": "CC"}}]),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(
        (u["active"].clone(), u["displayName"].clone()),
        (json!(false), json!("CC"))
    );
    // value-filter path with a sub-attribute
    let (s, u) =
        sim.patch(&path, json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "new@work"}])).await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["emails"][0]["value"], "new@work");
    assert_eq!(u["emails"][1]["value"], "c@home");
    // add to a multi-valued attribute, then remove through a filter
    let (s, u) = sim.patch(&path, json!([{"op": "add", "path": "emails", "value": [{"value": "c@other", "type": "other"}]}])).await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["emails"].as_array().map(Vec::len), Some(3));
    let (s, u) = sim
        .patch(
            &path,
            json!([{"op": "remove", "path": "emails[type eq \"home\"]"}]),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    let values: Vec<&str> = u["emails"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["value"].as_str())
        .collect();
    assert_eq!(values, ["new@work", "c@other"]);
    // add without a path, remove a simple attribute
    let (s, u) = sim.patch(&path, json!([{"op": "add", "value": {"title": "CTO"}}, {"op": "remove", "path": "displayName"}])).await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["title"], "CTO");
    assert!(u.get("displayName").is_none());
    // the stored resource is what PATCH answered
    let (_, got) = sim.get(&path).await;
    assert_eq!(got, u);
    // errors: replace through a filter that matches nothing, removing a required attribute
    let (s, e) = sim
        .patch(
            &path,
            json!([{"op": "replace", "path": "emails[type eq \"fax\"].value", "value": "x"}]),
        )
        .await;
    assert_eq!((s, e["scimType"].clone()), (400, json!("noTarget")), "{e}");
    let (s, e) = sim
        .patch(&path, json!([{"op": "remove", "path": "userName"}]))
        .await;
    assert_eq!(
        (s, e["scimType"].clone()),
        (400, json!("invalidValue")),
        "{e}"
    );
    let (s, e) = sim
        .patch(
            &path,
            json!([{"op": "add", "path": "emails[type eq", "value": "x"}]),
        )
        .await;
    assert_eq!(
        (s, e["scimType"].clone()),
        (400, json!("invalidPath")),
        "{e}"
    );
    // a failed PATCH changed nothing
    let (_, after) = sim.get(&path).await;
    assert_eq!(after, got);
    sim.stop().await;
}

#[tokio::test]
async fn patch_group_members_both_remove_forms() {
    let sim = start_plain().await;
    let a = sim.user("a", json!({})).await;
    let b = sim.user("b", json!({})).await;
    let c = sim.user("c", json!({})).await;
    let g = sim.group("devs", &[&a]).await;
    let path = format!("/Groups/{g}");
    let (s, grp) = sim.patch(&path, json!([{"op": "add", "path": "members", "value": [{"value": b}, {"value": c}, {"value": a}]}])).await;
    assert_eq!(s, 200, "{grp}");
    let members = |g: &Value| -> Vec<String> {
        g["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["value"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(members(&grp), [a.clone(), b.clone(), c.clone()]);
    let (s, grp) = sim
        .patch(
            &path,
            json!([{"op": "remove", "path": format!("members[value eq \"{a}\"]")}]),
        )
        .await;
    assert_eq!(s, 200, "{grp}");
    assert_eq!(members(&grp), [b.clone(), c.clone()]);
    let (s, grp) = sim
        .patch(
            &path,
            json!([{"op": "remove", "path": "members", "value": [{"value": b}]}]),
        )
        .await;
    assert_eq!(s, 200, "{grp}");
    assert_eq!(members(&grp), vec![c.clone()]);
    // unknown member → 400 naming the attribute
    let (s, e) = sim
        .patch(
            &path,
            json!([{"op": "add", "path": "members", "value": [{"value": "no-such-id"}]}]),
        )
        .await;
    assert_eq!(
        (s, e["scimType"].clone()),
        (400, json!("invalidValue")),
        "{e}"
    );
    assert!(
        e["detail"].as_str().is_some_and(|d| d.contains("members")),
        "{e}"
    );
    // deleting a user removes it from its groups
    assert_eq!(sim.delete(&format!("/Users/{c}")).await, 204);
    let (_, grp) = sim.get(&path).await;
    assert!(members(&grp).is_empty(), "{grp}");
    sim.stop().await;
}

#[tokio::test]
async fn filters_over_http() {
    let sim = start_plain().await;
    sim.user(
        "Alice",
        json!({"externalId": "X1", "title": "Engineer", "name": {"familyName": "Smith"}}),
    )
    .await;
    sim.user(
        "bob",
        json!({"externalId": "X2", "title": "Manager", "displayName": "Bob \"the\" Builder\\"}),
    )
    .await;
    sim.user("carol", json!({"externalId": "x3", "active": false, "emails": [{"value": "c@example.com", "type": "work"}]})).await;
    let q = |f: &str| {
        let sim = &sim;
        let url = format!("{}?filter={}", sim.url("/Users"), urlencode(f));
        async move { sim.send(Method::GET, &url, None, &[]).await }
    };
    let (s, _, l) = q(r#"userName eq "ALICE""#).await;
    assert_eq!(
        (s, names(&l)),
        (200, vec!["Alice".to_string()]),
        "userName is case-insensitive"
    );
    assert_eq!(l["totalResults"], 1);
    let (_, _, l) = q(r#"externalId eq "x1""#).await;
    assert!(names(&l).is_empty(), "externalId is case-exact");
    let (_, _, l) = q(r#"externalId eq "x3""#).await;
    assert_eq!(names(&l), ["carol"]);
    let (_, _, l) = q(r#"displayName eq "Bob \"the\" Builder\\""#).await;
    assert_eq!(names(&l), ["bob"], "escaped quote and backslash");
    let (_, _, l) = q(r#"title sw "eng" or title ew "ger" and userName eq "nobody""#).await;
    assert_eq!(names(&l), ["Alice"], "and binds tighter than or");
    let (_, _, l) = q(r#"(title sw "eng" or title ew "ger") and not (userName eq "alice")"#).await;
    assert_eq!(names(&l), ["bob"]);
    let (_, _, l) = q(r#"emails[type eq "work" and value co "example"]"#).await;
    assert_eq!(names(&l), ["carol"]);
    let (_, _, l) = q(r#"active eq false"#).await;
    assert_eq!(names(&l), ["carol"]);
    let (_, _, l) = q(r#"name.familyName pr"#).await;
    assert_eq!(names(&l), ["Alice"]);
    let (_, _, l) = q(
        r#"meta.created gt "2000-01-01T00:00:00Z" and meta.created lt "2999-01-01T00:00:00+05:00""#,
    )
    .await;
    assert_eq!(l["totalResults"], 3);
    let (_, _, l) = q(r#"meta.lastModified ge "2999-01-01T00:00:00Z""#).await;
    assert_eq!(l["totalResults"], 0);
    let (s, _, e) = q(r#"userName eq"#).await;
    assert_eq!(
        (s, e["scimType"].clone()),
        (400, json!("invalidFilter")),
        "{e}"
    );
    let (s, _, e) = q(r#"userName zz "a""#).await;
    assert_eq!(
        (s, e["scimType"].clone()),
        (400, json!("invalidFilter")),
        "{e}"
    );
    sim.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn paging() {
    let sim = start_plain().await;
    for i in 1..=7 {
        sim.user(&format!("u{i}"), json!({})).await;
    }
    let (s, l) = sim.get("/Users?startIndex=3&count=2").await;
    assert_eq!(s, 200);
    assert_eq!(
        l["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:ListResponse"])
    );
    assert_eq!(
        (
            l["totalResults"].clone(),
            l["itemsPerPage"].clone(),
            l["startIndex"].clone()
        ),
        (json!(7), json!(2), json!(3))
    );
    assert_eq!(names(&l), ["u3", "u4"]);
    let (_, l) = sim.get("/Users?startIndex=6&count=10").await;
    assert_eq!(names(&l), ["u6", "u7"]);
    let (_, l) = sim.get("/Users?count=0").await;
    assert_eq!(
        (l["totalResults"].clone(), l["itemsPerPage"].clone()),
        (json!(7), json!(0))
    );
    let (_, l) = sim.get("/Users?startIndex=0").await;
    assert_eq!(
        (l["startIndex"].clone(), l["itemsPerPage"].clone()),
        (json!(1), json!(7)),
        "startIndex < 1 means 1"
    );
    let (_, l) = sim
        .get("/Users?startIndex=2&count=2&filter=userName%20sw%20%22u%22")
        .await;
    assert_eq!(names(&l), ["u2", "u3"]);
    let (s, e) = sim.get("/Users?count=abc").await;
    assert_eq!((s, e["scimType"].clone()), (400, json!("invalidValue")));
    let (_, l) = sim.get("/Users?count=1&attributes=userName").await;
    let r = &l["Resources"][0];
    assert!(
        r.get("userName").is_some() && r.get("id").is_some() && r.get("meta").is_some(),
        "{r}"
    );
    let (_, l) = sim
        .get("/Users?count=1&excludedAttributes=meta,userName")
        .await;
    let r = &l["Resources"][0];
    assert!(
        r.get("userName").is_none() && r.get("meta").is_some(),
        "meta is always returned: {r}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn uniqueness_conflicts() {
    let sim = start_plain().await;
    let id = sim.user("dave", json!({})).await;
    let (s, e) = sim
        .post("/Users", json!({"schemas": [USER], "userName": "DAVE"}))
        .await;
    assert_eq!(
        (s, e["scimType"].clone(), e["status"].clone()),
        (409, json!("uniqueness"), json!("409")),
        "{e}"
    );
    let other = sim.user("erin", json!({})).await;
    let (s, _) = sim
        .put(
            &format!("/Users/{other}"),
            json!({"schemas": [USER], "userName": "Dave"}),
        )
        .await;
    assert_eq!(s, 409);
    let (s, _) = sim
        .patch(
            &format!("/Users/{other}"),
            json!([{"op": "replace", "path": "userName", "value": "dave"}]),
        )
        .await;
    assert_eq!(s, 409);
    // renaming to your own name (in another case) is fine
    let (s, _) = sim
        .put(
            &format!("/Users/{id}"),
            json!({"schemas": [USER], "userName": "Dave"}),
        )
        .await;
    assert_eq!(s, 200);
    sim.group("Admins", &[]).await;
    let (s, e) = sim
        .post(
            "/Groups",
            json!({"schemas": [GROUP], "displayName": "admins"}),
        )
        .await;
    assert_eq!(
        (s, e["scimType"].clone()),
        (409, json!("uniqueness")),
        "{e}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn required_attributes_and_bad_bodies() {
    let sim = start_plain().await;
    let (s, e) = sim
        .post("/Users", json!({"schemas": [USER], "displayName": "x"}))
        .await;
    assert_eq!(
        (s, e["scimType"].clone()),
        (400, json!("invalidValue")),
        "{e}"
    );
    assert!(
        e["detail"].as_str().is_some_and(|d| d.contains("userName")),
        "{e}"
    );
    let (s, e) = sim
        .post("/Groups", json!({"schemas": [GROUP], "members": []}))
        .await;
    assert_eq!(
        (s, e["scimType"].clone()),
        (400, json!("invalidValue")),
        "{e}"
    );
    assert!(
        e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("displayName")),
        "{e}"
    );
    let (s, e) = sim
        .post(
            "/Users",
            json!({"schemas": [USER], "userName": "x", "active": "yes"}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        e["detail"].as_str().is_some_and(|d| d.contains("active")),
        "{e}"
    );
    let (s, e) = sim.post("/Users", json!({"userName": "x"})).await;
    assert_eq!(s, 400, "schemas is required: {e}");
    let resp = sim
        .http
        .post(sim.url("/Users"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 400);
    let resp = sim
        .http
        .post(sim.url("/Users"))
        .header("content-type", "application/json")
        .body(json!({"schemas": [USER], "userName": "plainjson"}).to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 201, "application/json is accepted");
    let resp = sim
        .http
        .post(sim.url("/Users"))
        .header("content-type", "text/plain")
        .body(json!({"schemas": [USER], "userName": "text"}).to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 415);
    sim.stop().await;
}

#[tokio::test]
async fn etags_and_preconditions() {
    let sim = start_plain().await;
    let id = sim.user("frank", json!({})).await;
    let url = sim.url(&format!("/Users/{id}"));
    let body = json!({"schemas": [USER], "userName": "frank", "title": "x"});
    let (s, _, e) = sim
        .send(
            Method::PUT,
            &url,
            Some(body.clone()),
            &[("if-match", "W/\"7\"")],
        )
        .await;
    assert_eq!((s, e["status"].clone()), (412, json!("412")), "{e}");
    let (s, h, u) = sim
        .send(Method::PUT, &url, Some(body), &[("if-match", "W/\"1\"")])
        .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(h.get("etag").and_then(|v| v.to_str().ok()), Some("W/\"2\""));
    let patch = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": "y"}]});
    let (s, _, _) = sim
        .send(
            Method::PATCH,
            &url,
            Some(patch.clone()),
            &[("if-match", "W/\"1\"")],
        )
        .await;
    assert_eq!(s, 412);
    let (s, _, _) = sim
        .send(Method::PATCH, &url, Some(patch), &[("if-match", "*")])
        .await;
    assert_eq!(s, 200);
    let (s, _, _) = sim
        .send(Method::GET, &url, None, &[("if-none-match", "W/\"3\"")])
        .await;
    assert_eq!(s, 304);
    let (s, _, _) = sim
        .send(Method::DELETE, &url, None, &[("if-match", "W/\"2\"")])
        .await;
    assert_eq!(s, 412);
    let (s, _, _) = sim
        .send(Method::DELETE, &url, None, &[("if-match", "W/\"3\"")])
        .await;
    assert_eq!(s, 204);
    sim.stop().await;
}

#[tokio::test]
async fn auth_bearer_and_basic() {
    let sim = start(
        "tenants:\n\
         - {id: b, mode: scim, auth: {kind: bearer, token: s3cret}}\n\
         - {id: c, mode: scim, auth: {kind: basic, username: u, password: 'p:w'}}\n",
    )
    .await;
    let users = |t: &str| sim.at(&format!("/{t}/scim/v2/Users"));
    let (s, h, e) = sim.send(Method::GET, &users("b"), None, &[]).await;
    assert_eq!(
        (s, e["schemas"].clone(), e["status"].clone()),
        (401, json!([ERROR]), json!("401")),
        "{e}"
    );
    assert!(h.get("www-authenticate").is_some());
    let (s, _, _) = sim
        .send(
            Method::GET,
            &users("b"),
            None,
            &[("authorization", "Bearer wrong")],
        )
        .await;
    assert_eq!(s, 401);
    let (s, _, _) = sim
        .send(
            Method::GET,
            &users("b"),
            None,
            &[("authorization", "Bearer s3cret")],
        )
        .await;
    assert_eq!(s, 200);
    let (s, _, _) = sim
        .send(
            Method::GET,
            &users("c"),
            None,
            &[("authorization", "Bearer s3cret")],
        )
        .await;
    assert_eq!(s, 401);
    // base64("u:p:w")
    let (s, _, _) = sim
        .send(
            Method::GET,
            &users("c"),
            None,
            &[("authorization", "Basic dTpwOnc=")],
        )
        .await;
    assert_eq!(s, 200);
    // base64("u:nope")
    let (s, _, _) = sim
        .send(
            Method::GET,
            &users("c"),
            None,
            &[("authorization", "Basic dTpub3Bl")],
        )
        .await;
    assert_eq!(s, 401);
    let (s, _, e) = sim.send(Method::GET, &users("nobody"), None, &[]).await;
    assert_eq!((s, e["status"].clone()), (404, json!("404")));
    sim.stop().await;
}

#[tokio::test]
async fn discovery_endpoints() {
    let sim = start_plain().await;
    let (s, spc) = sim.get("/ServiceProviderConfig").await;
    assert_eq!(s, 200);
    assert_eq!(
        spc["schemas"],
        json!(["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"])
    );
    assert_eq!(spc["patch"]["supported"], true);
    assert_eq!(spc["filter"]["supported"], true);
    assert!(spc["filter"]["maxResults"].as_u64().is_some_and(|m| m > 0));
    assert_eq!(spc["etag"]["supported"], true);
    assert_eq!(spc["bulk"]["supported"], false);
    assert!(
        spc["authenticationSchemes"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    let (s, types) = sim.get("/ResourceTypes").await;
    assert_eq!(s, 200);
    assert_eq!(types["totalResults"], 2);
    let (s, user_type) = sim.get("/ResourceTypes/User").await;
    assert_eq!(
        (
            s,
            user_type["endpoint"].clone(),
            user_type["schema"].clone()
        ),
        (200, json!("/Users"), json!(USER))
    );
    let (s, schemas) = sim.get("/Schemas").await;
    assert_eq!(s, 200);
    assert_eq!(schemas["totalResults"], 3);
    let (s, user) = sim.get(&format!("/Schemas/{USER}")).await;
    assert_eq!(s, 200);
    let user_name = user["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == "userName"))
        .cloned();
    let user_name = user_name.unwrap_or_default();
    assert_eq!(
        (
            user_name["required"].clone(),
            user_name["uniqueness"].clone()
        ),
        (json!(true), json!("server"))
    );
    let (s, _) = sim.get("/Schemas/urn:nope").await;
    assert_eq!(s, 404);
    sim.stop().await;
}

#[tokio::test]
async fn post_search_over_one_or_all_resource_types() {
    let sim = start_plain().await;
    let alice = sim.user("alice", json!({"title": "Boss"})).await;
    sim.user("bob", json!({})).await;
    sim.group("admins", &[&alice]).await;
    let search = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": "userName sw \"a\"",
        "attributes": ["userName"],
    });
    let (s, b) = sim.post("/Users/.search", search).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["totalResults"], 1);
    assert_eq!(b["Resources"][0]["userName"], "alice");
    assert!(
        b["Resources"][0].get("title").is_none(),
        "attributes honoured: {b}"
    );
    assert_eq!(
        b["Resources"][0]["id"],
        alice.as_str(),
        "id is always returned"
    );
    // Root search covers users then groups, paged across both.
    let all = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "startIndex": 2, "count": 2});
    let (s, b) = sim.post("/.search", all).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["totalResults"].clone(), b["itemsPerPage"].clone()),
        (json!(3), json!(2))
    );
    assert_eq!(b["Resources"][0]["userName"], "bob");
    assert_eq!(b["Resources"][1]["displayName"], "admins");
    let (s, b) = sim
        .post("/.search", json!({"filter": "userName eq \"x\""}))
        .await;
    assert_eq!(
        (s, b["scimType"].clone()),
        (400, json!("invalidSyntax")),
        "schemas required"
    );
    sim.stop().await;
}

#[tokio::test]
async fn patch_a_whole_extension_by_its_urn() {
    let sim = start_plain().await;
    let id = sim.user("alice", json!({})).await;
    let ext = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    let (s, b) = sim
        .patch(
            &format!("/Users/{id}"),
            json!([{"op": "add", "path": ext, "value": {"employeeNumber": "7", "department": "R&D"}}]),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b[ext]["employeeNumber"], "7");
    assert!(b["schemas"].as_array().is_some_and(|a| a.len() == 2), "{b}");
    let (s, b) = sim
        .patch(
            &format!("/Users/{id}"),
            json!([{"op": "replace", "path": ext, "value": {"department": "Ops"}}]),
        )
        .await;
    assert_eq!(
        (s, b[ext]["department"].clone()),
        (200, json!("Ops")),
        "{b}"
    );
    let (s, b) = sim
        .patch(
            &format!("/Users/{id}"),
            json!([{"op": "remove", "path": ext}]),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b.get(ext).is_none(), "{b}");
    assert_eq!(b["schemas"], json!([USER]));
    sim.stop().await;
}

const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// `ne` over HTTP: case-insensitive on userName, case-exact on externalId, true for a resource
/// without the attribute, false when any value of a multi-valued attribute is equal, and
/// `ne null` as "present".
#[tokio::test]
async fn ne_filter_over_http() {
    let sim = start_plain().await;
    sim.user("Alice", json!({"externalId": "X1", "title": "Engineer"}))
        .await;
    sim.user(
        "bob",
        json!({"externalId": "X2", "title": "Manager",
            "emails": [{"value": "b@example.com"}, {"value": "bob@example.com"}]}),
    )
    .await;
    sim.user("carol", json!({"externalId": "x3"})).await;
    let q = |f: &str| {
        let url = format!("{}?filter={}", sim.url("/Users"), urlencode(f));
        let sim = &sim;
        async move {
            let (s, _, l) = sim.send(Method::GET, &url, None, &[]).await;
            assert_eq!(s, 200, "{l}");
            names(&l)
        }
    };
    assert_eq!(
        q(r#"userName ne "ALICE""#).await,
        ["bob", "carol"],
        "userName is case-insensitive"
    );
    assert_eq!(
        q(r#"externalId ne "x1""#).await,
        ["Alice", "bob", "carol"],
        "externalId is case-exact"
    );
    assert_eq!(
        q(r#"title ne "Engineer""#).await,
        ["bob", "carol"],
        "a missing attribute is not equal"
    );
    assert_eq!(
        q(r#"emails.value ne "bob@example.com""#).await,
        ["Alice", "carol"],
        "one equal value of a multi-valued attribute is enough to fail ne"
    );
    assert_eq!(q(r#"title ne null"#).await, ["Alice", "bob"]);
    assert_eq!(
        q(r#"not (userName ne "bob")"#).await,
        ["bob"],
        "not ne is eq"
    );
    let (s, _, e) = sim
        .send(
            Method::GET,
            &format!("{}?filter={}", sim.url("/Users"), urlencode(r#"title ne"#)),
            None,
            &[],
        )
        .await;
    assert_eq!((s, e["scimType"].clone()), (400, json!("invalidFilter")));
    sim.stop().await;
}

/// `scim: {patch: false}`: announced, and every PATCH (user or group) is 501 Not Implemented
/// with an RFC error body and changes nothing; PUT, filters and ETags still work.
#[tokio::test]
async fn without_patch_every_patch_is_501() {
    let sim = start("tenants: [{id: t, mode: scim, scim: {patch: false}}]").await;
    let (status, spc) = sim.get("/ServiceProviderConfig").await;
    assert_eq!(status, 200, "{spc}");
    assert_eq!(
        (
            spc["patch"]["supported"].clone(),
            spc["filter"]["supported"].clone(),
            spc["etag"]["supported"].clone()
        ),
        (json!(false), json!(true), json!(true)),
        "{spc}"
    );
    let id = sim.user("ada", json!({"title": "Dev"})).await;
    let group = sim.group("eng", &[&id]).await;
    for path in [format!("/Users/{id}"), format!("/Groups/{group}")] {
        let (status, err) = sim
            .patch(
                &path,
                json!([{"op": "replace", "path": "displayName", "value": "X"}]),
            )
            .await;
        assert_eq!(status, 501, "{path}: {err}");
        assert_eq!(err["schemas"], json!([ERROR]), "{err}");
        assert_eq!(err["status"], "501", "{err}");
        assert!(
            err["detail"].as_str().is_some_and(|d| d.contains("PATCH")),
            "{err}"
        );
    }
    let (_, user) = sim.get(&format!("/Users/{id}")).await;
    assert_eq!(
        user["meta"]["version"], "W/\"1\"",
        "nothing changed: {user}"
    );
    let mut body = user.clone();
    body["title"] = json!("Lead");
    let (status, _, replaced) = sim
        .send(
            Method::PUT,
            &sim.url(&format!("/Users/{id}")),
            Some(body),
            &[("if-match", "W/\"1\"")],
        )
        .await;
    assert_eq!((status, replaced["title"].clone()), (200, json!("Lead")));
    let (status, list) = sim.get("/Users?filter=userName%20eq%20%22ada%22").await;
    assert_eq!((status, list["totalResults"].clone()), (200, json!(1)));
    sim.stop().await;
}

/// `scim: {filter: false}`: announced; a non-empty filter on GET (users or groups) or in a
/// `.search` body is 400 invalidFilter — declined, not ignored (an ignored filter would answer
/// every user as a match); lists, paging and `.search` without a filter still work.
#[tokio::test]
async fn without_filtering_a_filter_is_400_invalid_filter() {
    let sim = start("tenants: [{id: t, mode: scim, scim: {filter: false}}]").await;
    let (_, spc) = sim.get("/ServiceProviderConfig").await;
    assert_eq!(spc["filter"]["supported"], false, "{spc}");
    assert_eq!(spc["patch"]["supported"], true, "{spc}");
    sim.user("ada", json!({})).await;
    sim.user("bob", json!({})).await;
    for path in [
        "/Users?filter=userName%20eq%20%22ada%22",
        "/Users?filter=userName%20eq%20%22nobody%22&startIndex=1&count=10",
        "/Groups?filter=displayName%20eq%20%22eng%22",
    ] {
        let (status, err) = sim.get(path).await;
        assert_eq!(status, 400, "{path}: {err}");
        assert_eq!(err["scimType"], "invalidFilter", "{err}");
        assert!(
            err["detail"]
                .as_str()
                .is_some_and(|d| d.contains("not supported")),
            "{err}"
        );
    }
    let (status, err) = sim
        .post(
            "/Users/.search",
            json!({"schemas": [SEARCH], "filter": "userName eq \"ada\""}),
        )
        .await;
    assert_eq!(
        (status, err["scimType"].clone()),
        (400, json!("invalidFilter"))
    );
    let (status, list) = sim.get("/Users?startIndex=2&count=1").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        (list["totalResults"].clone(), names(&list)),
        (json!(2), vec!["bob".to_string()])
    );
    let (status, list) = sim.get("/Users?filter=").await;
    assert_eq!(
        (status, list["totalResults"].clone()),
        (200, json!(2)),
        "an empty filter is no filter"
    );
    let (status, list) = sim
        .post("/.search", json!({"schemas": [SEARCH], "count": 1}))
        .await;
    assert_eq!(
        (status, list["totalResults"].clone()),
        (200, json!(2)),
        "{list}"
    );
    let stats = sim.admin("/_admin/tenants/t/stats").await;
    assert_eq!(
        stats["filtered"], 3,
        "GET filters sent, refused or not: {stats}"
    );
    sim.stop().await;
}

/// `scim: {etag: false}`: announced; no ETag header and no `meta.version` on any answer
/// (create, read, list, replace, patch), `If-Match` with a stale version and `If-None-Match`
/// with the current one are ignored (no 412, no 304). The statistics still count what the
/// client sent.
#[tokio::test]
async fn without_etags_no_versions_and_preconditions_are_ignored() {
    let sim = start("tenants: [{id: t, mode: scim, scim: {etag: false}}]").await;
    let (_, spc) = sim.get("/ServiceProviderConfig").await;
    assert_eq!(spc["etag"]["supported"], false, "{spc}");
    let (status, headers, created) = sim
        .send(
            Method::POST,
            &sim.url("/Users"),
            Some(json!({"schemas": [USER], "userName": "ada"})),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert!(headers.get("etag").is_none(), "{headers:?}");
    assert!(headers.get("location").is_some(), "other headers stay");
    assert!(created["meta"].get("version").is_none(), "{created}");
    assert_eq!(
        created["meta"]["resourceType"], "User",
        "the rest of meta stays"
    );
    let id = created["id"].as_str().unwrap_or_default().to_string();
    let url = sim.url(&format!("/Users/{id}"));

    let (status, headers, user) = sim
        .send(Method::GET, &url, None, &[("if-none-match", "*")])
        .await;
    assert_eq!(status, 200, "If-None-Match ignored: {user}");
    assert!(
        headers.get("etag").is_none() && user["meta"].get("version").is_none(),
        "{user}"
    );
    let (_, list) = sim.get("/Users").await;
    assert!(
        list["Resources"][0]["meta"].get("version").is_none(),
        "{list}"
    );

    let mut body = user.clone();
    body["title"] = json!("Boss");
    let (status, headers, replaced) = sim
        .send(Method::PUT, &url, Some(body), &[("if-match", "W/\"999\"")])
        .await;
    assert_eq!(status, 200, "If-Match ignored: {replaced}");
    assert_eq!(replaced["title"], "Boss");
    assert!(headers.get("etag").is_none() && replaced["meta"].get("version").is_none());
    let patch = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": "CEO"}]});
    let (status, _, patched) = sim
        .send(Method::PATCH, &url, Some(patch), &[("if-match", "W/\"1\"")])
        .await;
    assert_eq!(
        (status, patched["title"].clone()),
        (200, json!("CEO")),
        "{patched}"
    );
    assert_eq!(
        sim.send(Method::DELETE, &url, None, &[("if-match", "W/\"1\"")])
            .await
            .0,
        204
    );
    let stats = sim.admin("/_admin/tenants/t/stats").await;
    assert_eq!(stats["if_match"], 3, "{stats}");
    assert_eq!(stats["by_status"].get("412"), None, "{stats}");
    sim.stop().await;
}

/// `scim: {discovery: false}`: ServiceProviderConfig, Schemas and ResourceTypes (and their
/// `/{id}` forms) are 404 with an RFC error body; everything else stays on.
#[tokio::test]
async fn without_discovery_the_discovery_endpoints_are_404() {
    let sim = start("tenants: [{id: t, mode: scim, scim: {discovery: false}}]").await;
    for path in [
        "/ServiceProviderConfig",
        "/Schemas",
        "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User",
        "/ResourceTypes",
        "/ResourceTypes/User",
    ] {
        let (status, err) = sim.get(path).await;
        assert_eq!(status, 404, "{path}: {err}");
        assert_eq!(err["schemas"], json!([ERROR]), "{err}");
    }
    let id = sim.user("bob", json!({})).await;
    let (status, _) = sim
        .patch(
            &format!("/Users/{id}"),
            json!([{"op": "replace", "path": "title", "value": "Boss"}]),
        )
        .await;
    assert_eq!(status, 200, "PATCH stays on");
    let (status, _, _) = sim
        .send(
            Method::PUT,
            &sim.url(&format!("/Users/{id}")),
            Some(json!({"schemas": [USER], "userName": "bob"})),
            &[("if-match", "W/\"1\"")],
        )
        .await;
    assert_eq!(status, 412, "ETags stay on");
    let (status, list) = sim.get("/Users?filter=userName%20eq%20%22bob%22").await;
    assert_eq!(
        (status, list["totalResults"].clone()),
        (200, json!(1)),
        "filters stay on"
    );
    sim.stop().await;
}

/// `scim: {max_results: N}`: a list or `.search` answers at most N per page whatever `count`
/// asks, `totalResults` still counts every match, and the limit is announced.
#[tokio::test]
async fn max_results_caps_every_page() {
    let sim = start("tenants: [{id: t, mode: scim, scim: {max_results: 2}}]").await;
    let (_, spc) = sim.get("/ServiceProviderConfig").await;
    assert_eq!(spc["filter"]["maxResults"], 2, "{spc}");
    for name in ["a", "b", "c", "d", "e"] {
        sim.user(name, json!({})).await;
    }
    let (_, page) = sim.get("/Users?count=100").await;
    assert_eq!(
        (
            page["totalResults"].clone(),
            page["itemsPerPage"].clone(),
            names(&page)
        ),
        (json!(5), json!(2), vec!["a".to_string(), "b".to_string()]),
        "{page}"
    );
    let (_, page) = sim.get("/Users?startIndex=5&count=100").await;
    assert_eq!(names(&page), ["e"]);
    let (_, page) = sim.post("/.search", json!({"schemas": [SEARCH]})).await;
    assert_eq!(page["itemsPerPage"], 2, "{page}");
    sim.stop().await;
}

/// Without a `scim:` section a tenant supports everything; the switches are refused on another
/// mode, naming the key.
#[tokio::test]
async fn capability_defaults_and_misplaced_switches() {
    let sim = start_plain().await;
    let (_, spc) = sim.get("/ServiceProviderConfig").await;
    for cap in ["patch", "filter", "etag"] {
        assert_eq!(spc[cap]["supported"], true, "{cap}: {spc}");
    }
    assert_eq!(spc["filter"]["maxResults"], 1000, "{spc}");
    let (status, headers, user) = sim
        .send(
            Method::POST,
            &sim.url("/Users"),
            Some(json!({"schemas": [USER], "userName": "ada"})),
            &[],
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        headers.get("etag").and_then(|v| v.to_str().ok()),
        user["meta"]["version"].as_str()
    );
    sim.stop().await;

    let err = scimrelay_sim::SimConfig::from_yaml_str(
        "tenants: [{id: g, mode: github, scim: {patch: false}}]",
    )
    .expect_err("scim knobs on a github tenant");
    assert!(err.to_string().contains("tenants[0].scim"), "{err}");
    let err = scimrelay_sim::SimConfig::from_yaml_str(
        "tenants: [{id: s, mode: scim, scim: {sort: true}}]",
    )
    .expect_err("an unknown switch");
    assert!(err.to_string().contains("sort"), "{err}");
}

/// `scim: {put: false}`: every PUT (user or group) is 405 with an RFC error body naming PATCH
/// and changes nothing; PATCH still works.
#[tokio::test]
async fn without_put_every_put_is_405() {
    let sim = start("tenants: [{id: t, mode: scim, scim: {put: false}}]").await;
    let id = sim.user("ada", json!({"title": "Dev"})).await;
    let group = sim.group("eng", &[&id]).await;
    for path in [format!("/Users/{id}"), format!("/Groups/{group}")] {
        let (_, mut body) = sim.get(&path).await;
        body["displayName"] = json!("X");
        let (status, _, err) = sim
            .send(Method::PUT, &sim.url(&path), Some(body), &[])
            .await;
        assert_eq!(status, 405, "{path}: {err}");
        assert_eq!(err["status"], "405", "{err}");
        assert!(
            err["detail"].as_str().is_some_and(|d| d.contains("PATCH")),
            "{err}"
        );
    }
    let (_, user) = sim.get(&format!("/Users/{id}")).await;
    assert_eq!(user["title"], "Dev", "nothing changed: {user}");
    let (status, _) = sim
        .patch(
            &format!("/Users/{id}"),
            json!([{"op": "replace", "path": "title", "value": "Lead"}]),
        )
        .await;
    assert_eq!(status, 200);
    sim.stop().await;
}
