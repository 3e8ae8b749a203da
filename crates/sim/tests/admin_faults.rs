//! The admin API (resource listings, statistics, reset) and every injectable fault.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

fn row(stats: &Value, method: &str, path: &str, status: u16) -> u64 {
    stats["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["method"] == method && r["path"] == path && r["status"] == status)
        .and_then(|r| r["count"].as_u64())
        .unwrap_or(0)
}

#[tokio::test]
async fn admin_lists_stats_and_reset() {
    let sim = start("tenants: [{id: t, mode: scim}, {id: other, mode: scim}]").await;
    let a = sim.user("a", json!({"active": false})).await;
    sim.user("b", json!({})).await;
    sim.group("g", &[&a]).await;
    let _ = sim.get(&format!("/Users/{a}")).await;
    let _ = sim.get("/Users/missing").await;
    let _ = sim.get("/Users?filter=userName%20eq%20%22a%22").await;
    let _ = sim
        .patch(
            &format!("/Users/{a}"),
            json!([{"op": "replace", "path": "title", "value": "x"}]),
        )
        .await;

    let users = sim.admin("/_admin/tenants/t/users").await;
    assert_eq!(users.as_array().map(Vec::len), Some(2));
    assert_eq!(users[0]["userName"], "a");
    assert_eq!(users[0]["active"], false, "inactive users are listed");
    let groups = sim.admin("/_admin/tenants/t/groups").await;
    assert_eq!(groups[0]["members"][0]["value"], a.as_str());
    assert_eq!(
        sim.admin("/_admin/tenants/other/users").await,
        json!([]),
        "tenants are separate"
    );

    let stats = sim.admin("/_admin/tenants/t/stats").await;
    assert_eq!(stats["total"], 7, "{stats}");
    assert_eq!(row(&stats, "POST", "Users", 201), 2, "{stats}");
    assert_eq!(row(&stats, "POST", "Groups", 201), 1);
    assert_eq!(row(&stats, "GET", "Users/{id}", 200), 1);
    assert_eq!(row(&stats, "GET", "Users/{id}", 404), 1);
    assert_eq!(row(&stats, "GET", "Users", 200), 1);
    assert_eq!(row(&stats, "PATCH", "Users/{id}", 200), 1);
    assert_eq!(stats["by_method"], json!({"GET": 3, "PATCH": 1, "POST": 3}));
    assert_eq!(stats["by_path"]["Users/{id}"], 3);
    assert_eq!(stats["by_status"]["201"], 3);
    assert_eq!(stats["throttled"], 0);
    let peak = stats["peak_per_sec"].as_u64().unwrap_or(0);
    assert!((2..=7).contains(&peak), "peak {peak}");
    assert_eq!(sim.admin("/_admin/tenants/other/stats").await["total"], 0);
    let tenants = sim.admin("/_admin/tenants").await;
    assert_eq!(
        tenants[0],
        json!({"id": "t", "mode": "scim", "users": 2, "groups": 1})
    );

    let resp = sim
        .http
        .post(sim.at("/_admin/tenants/t/reset"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(sim.admin("/_admin/tenants/t/users").await, json!([]));
    assert_eq!(sim.admin("/_admin/tenants/t/stats").await["total"], 0);
    let (s, _) = sim.get(&format!("/Users/{a}")).await;
    assert_eq!(s, 404);
    let resp = sim
        .http
        .get(sim.at("/_admin/tenants/nope/users"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 404);
    sim.stop().await;
}

#[tokio::test]
async fn peak_rate_counts_a_burst() {
    let sim = start_plain().await;
    let reqs = (0..20).map(|_| sim.get("/Users"));
    futures::future::join_all(reqs).await;
    let stats = sim.admin("/_admin/tenants/t/stats").await;
    assert_eq!(stats["total"], 20);
    assert_eq!(
        stats["peak_per_sec"], 20,
        "20 concurrent requests arrive within one second"
    );
    sim.stop().await;
}

/// A write takes effect and is then answered with the injected error; a read is untouched.
#[tokio::test]
async fn fault_after_effect_lands_the_write_and_answers_an_error() {
    let sim = start_plain().await;
    assert_eq!(
        sim.faults(
            "t",
            json!({"after_effect_rate": 1.0, "error_statuses": [502]})
        )
        .await,
        200
    );
    let (s, e) = sim
        .post("/Users", json!({"schemas": [USER], "userName": "x"}))
        .await;
    assert_eq!((s, e["status"].clone()), (502, json!("502")), "{e}");
    let users = sim.admin("/_admin/tenants/t/users").await;
    assert_eq!(
        users.as_array().map(Vec::len),
        Some(1),
        "the write landed: {users}"
    );
    let (s, list) = sim.get("/Users").await;
    assert_eq!(
        (s, list["totalResults"].clone()),
        (200, json!(1)),
        "reads pass"
    );
    assert_eq!(
        sim.faults("t", json!({"after_effect_rate": 1.5})).await,
        400,
        "rates are checked"
    );
    sim.stop().await;
}

/// Hostile answers in the server's place: a redirect to a login page, an HTML 200, a body of
/// 100 MiB, NUL bytes in ids (the write lands), a body that never ends.
#[tokio::test]
async fn fault_hostile_answers() {
    let sim = start_plain().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let hostile = |kind: &str| json!({"hostile": kind});
    assert_eq!(sim.faults("t", hostile("redirect")).await, 200);
    let r = http.get(sim.url("/Users")).send().await.expect("redirect");
    assert_eq!(r.status().as_u16(), 302);
    assert!(
        r.headers()["location"]
            .to_str()
            .is_ok_and(|l| l.starts_with("/login?"))
    );
    assert_eq!(sim.faults("t", hostile("html")).await, 200);
    let r = http.get(sim.url("/Users")).send().await.expect("html");
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/html"))
    );
    assert_eq!(sim.faults("t", hostile("huge_body")).await, 200);
    let mut r = http.get(sim.url("/Users")).send().await.expect("huge");
    let mut read = 0u64;
    while let Some(chunk) = r.chunk().await.expect("chunk") {
        read += chunk.len() as u64;
    }
    assert_eq!(read, scimrelay_sim::faults::HUGE_BODY_BYTES);
    assert_eq!(sim.faults("t", hostile("nul_id")).await, 200);
    let (s, created) = sim
        .post("/Users", json!({"schemas": [USER], "userName": "nul"}))
        .await;
    assert_eq!(s, 201);
    assert!(
        created["id"].as_str().is_some_and(|id| id.ends_with('\0')),
        "{created}"
    );
    assert_eq!(sim.faults("t", hostile("endless_body")).await, 200);
    let mut r = http.get(sim.url("/Users")).send().await.expect("endless");
    let started = std::time::Instant::now();
    let mut chunks = 0;
    while started.elapsed() < std::time::Duration::from_millis(500) {
        if r.chunk().await.expect("chunk").is_some() {
            chunks += 1;
        }
    }
    assert!(chunks >= 3, "still streaming: {chunks} chunks");
    drop(r);
    assert_eq!(
        sim.faults("t", json!({"hostile": "html", "hostile_rate": 2.0}))
            .await,
        400
    );
    assert_eq!(sim.faults("t", json!({})).await, 200);
    let users = sim.admin("/_admin/tenants/t/users").await;
    assert_eq!(
        users.as_array().map(Vec::len),
        Some(1),
        "the nul_id write landed"
    );
    sim.stop().await;
}

#[tokio::test]
async fn fault_error_rate() {
    let sim = start_plain().await;
    assert_eq!(
        sim.faults("t", json!({"error_rate": 1.0, "error_statuses": [503]}))
            .await,
        200
    );
    let (s, e) = sim
        .post("/Users", json!({"schemas": [USER], "userName": "x"}))
        .await;
    assert_eq!(
        (s, e["status"].clone(), e["schemas"].clone()),
        (503, json!("503"), json!([ERROR])),
        "{e}"
    );
    assert_eq!(
        sim.admin("/_admin/tenants/t/users").await,
        json!([]),
        "an injected error has no effect"
    );
    let faults = sim.admin("/_admin/tenants/t/faults").await;
    assert_eq!(faults["error_rate"], 1.0);
    assert_eq!(sim.faults("t", json!({})).await, 200);
    let (s, _) = sim
        .post("/Users", json!({"schemas": [USER], "userName": "x"}))
        .await;
    assert_eq!(s, 201);
    // A rate of one half injects some errors and lets some requests through.
    assert_eq!(sim.faults("t", json!({"error_rate": 0.5})).await, 200);
    let mut statuses = Vec::new();
    for _ in 0..60 {
        statuses.push(sim.get("/Users").await.0);
    }
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(
        statuses.iter().any(|s| [500, 502, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 500, 502, 503].contains(s)),
        "{statuses:?}"
    );
    // invalid faults are refused, naming the field
    let resp = sim
        .http
        .put(sim.at("/_admin/tenants/t/faults"))
        .json(&json!({"error_rate": 3}))
        .send()
        .await;
    let resp = resp.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap_or_default();
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("error_rate")),
        "{body}"
    );
    assert_eq!(sim.faults("t", json!({"no_such_fault": 1})).await, 400);
    sim.stop().await;
}

#[tokio::test]
async fn fault_latency_and_hang() {
    let sim = start_plain().await;
    assert_eq!(
        sim.faults("t", json!({"latency_ms": {"min": 150, "max": 200}}))
            .await,
        200
    );
    let t0 = Instant::now();
    let (s, _) = sim.get("/Users").await;
    let took = t0.elapsed();
    assert_eq!(s, 200);
    assert!(took >= Duration::from_millis(150), "{took:?}");
    assert_eq!(
        sim.faults("t", json!({"hang_rate": 1.0, "hang_ms": 400}))
            .await,
        200
    );
    let t0 = Instant::now();
    let (s, _) = sim.get("/Users").await;
    assert_eq!(s, 200);
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    // A client with a shorter timeout sees a timeout.
    let r = sim
        .http
        .get(sim.url("/Users"))
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(r.as_ref().is_err_and(reqwest::Error::is_timeout), "{r:?}");
    // A long hang does not hold up shutdown.
    assert_eq!(
        sim.faults("t", json!({"hang_rate": 1.0, "hang_ms": 60000}))
            .await,
        200
    );
    let pending = tokio::spawn({
        let http = sim.http.clone();
        let url = sim.url("/Users");
        async move { http.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    sim.stop().await;
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let _ = pending.await;
}

#[tokio::test]
async fn fault_reset() {
    let sim = start_plain().await;
    assert_eq!(sim.faults("t", json!({"reset_rate": 1.0})).await, 200);
    let r = sim.http.get(sim.url("/Users")).send().await;
    let outcome = match r {
        Err(e) => Err(e),
        Ok(resp) => resp.bytes().await.map(|_| ()),
    };
    assert!(outcome.is_err(), "the client sees a broken connection");
    let stats = sim.admin("/_admin/tenants/t/stats").await;
    assert_eq!(
        row(&stats, "GET", "Users", 0),
        1,
        "resets are recorded with status 0: {stats}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn fault_token_revoked() {
    let sim = start("tenants: [{id: t, mode: scim, auth: {kind: bearer, token: tok}}]").await;
    let auth = [("authorization", "Bearer tok")];
    let (s, _, _) = sim.send(Method::GET, &sim.url("/Users"), None, &auth).await;
    assert_eq!(s, 200);
    assert_eq!(sim.faults("t", json!({"token_revoked": true})).await, 200);
    let (s, _, e) = sim.send(Method::GET, &sim.url("/Users"), None, &auth).await;
    assert_eq!((s, e["status"].clone()), (401, json!("401")), "{e}");
    assert!(
        e["detail"].as_str().is_some_and(|d| d.contains("revoked")),
        "{e}"
    );
    assert_eq!(sim.faults("t", json!({"token_revoked": false})).await, 200);
    let (s, _, _) = sim.send(Method::GET, &sim.url("/Users"), None, &auth).await;
    assert_eq!(s, 200);
    sim.stop().await;
}

#[tokio::test]
async fn fault_rate_limit() {
    let sim = start_plain().await;
    assert_eq!(
        sim.faults("t", json!({"rate_limit": {"per_sec": 1.0, "burst": 2}}))
            .await,
        200
    );
    let (s1, _, _) = sim.send(Method::GET, &sim.url("/Users"), None, &[]).await;
    let (s2, _, _) = sim.send(Method::GET, &sim.url("/Users"), None, &[]).await;
    let (s3, h, e) = sim.send(Method::GET, &sim.url("/Users"), None, &[]).await;
    assert_eq!((s1, s2, s3), (200, 200, 429), "{e}");
    assert_eq!(e["status"], "429");
    let retry: u64 = h
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert_eq!(retry, 1, "{h:?}");
    let stats = sim.admin("/_admin/tenants/t/stats").await;
    assert_eq!(
        (stats["throttled"].clone(), stats["total"].clone()),
        (json!(1), json!(3))
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, _, _) = sim.send(Method::GET, &sim.url("/Users"), None, &[]).await;
    assert_eq!(s, 200, "a token refilled after a second");
    // Faults can also be set at start-up, and reset restores them.
    sim.stop().await;
    let sim =
        start("tenants: [{id: t, mode: scim, faults: {rate_limit: {per_sec: 0.5, burst: 1}}}]")
            .await;
    assert_eq!(sim.get("/Users").await.0, 200);
    assert_eq!(sim.get("/Users").await.0, 429);
    assert_eq!(sim.faults("t", json!({})).await, 200);
    assert_eq!(sim.get("/Users").await.0, 200);
    let resp = sim
        .http
        .post(sim.at("/_admin/tenants/t/reset"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 204);
    assert!(sim.admin("/_admin/tenants/t/faults").await["rate_limit"].is_object());
    sim.stop().await;
}

/// Two writes of one subject in progress at once are counted (creates by `userName`, writes
/// by the stored resource's name), writes of different subjects are not, and a write whose
/// client gave up is still carried out to its end, holding its subject until then.
#[tokio::test]
async fn overlapping_writes_of_a_subject_are_counted() {
    let sim = start_plain().await;
    let a = sim.user("a", json!({})).await;
    let stats = sim.admin("/_admin/tenants/t/stats").await;
    assert_eq!(stats["overlapping_writes"], 0, "{stats}");
    // Only writes are slow.
    assert_eq!(
        sim.faults("t", json!({"write_latency_ms": {"min": 400, "max": 400}}))
            .await,
        200
    );
    let started = Instant::now();
    let _ = sim.get(&format!("/Users/{a}")).await;
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "a read is not slowed"
    );
    let patch = json!([{"op": "replace", "path": "title", "value": "x"}]);
    let path = format!("/Users/{a}");
    // Different subjects at once: no overlap.
    let (p, c) = tokio::join!(
        sim.patch(&path, patch.clone()),
        sim.post("/Users", json!({"schemas": [USER], "userName": "b"})),
    );
    assert_eq!((p.0, c.0), (200, 201));
    let stats = sim.admin("/_admin/tenants/t/stats").await;
    assert_eq!(stats["overlapping_writes"], 0, "{stats}");

    // One subject twice at once: one overlap, named.
    let (p1, p2) = tokio::join!(
        sim.patch(&path, patch.clone()),
        sim.patch(&path, patch.clone())
    );
    assert_eq!((p1.0, p2.0), (200, 200));
    // Two creates of one userName (cased differently) at once.
    let (c1, c2) = tokio::join!(
        sim.post("/Users", json!({"schemas": [USER], "userName": "Dup"})),
        sim.post("/Users", json!({"schemas": [USER], "userName": "dup"})),
    );
    assert_eq!(
        (c1.0.min(c2.0), c1.0.max(c2.0)),
        (201, 409),
        "one create wins"
    );
    let stats = sim.admin("/_admin/tenants/t/stats").await;
    assert_eq!(stats["overlapping_writes"], 2, "{stats}");
    assert_eq!(
        stats["overlapped"],
        json!(["Users:a", "Users:dup"]),
        "{stats}"
    );

    // A client that gives up mid-request: the server still applies the write, and a write of
    // the same subject sent meanwhile overlaps it.
    let http = reqwest::Client::new();
    let abandoned = http
        .patch(sim.url(&path))
        .header("content-type", "application/scim+json")
        .json(
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "title", "value": "late"}]}),
        )
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(abandoned.is_err(), "the client gave up");
    let (s, _) = sim.patch(&path, patch.clone()).await;
    assert_eq!(s, 200);
    let stats = sim.admin("/_admin/tenants/t/stats").await;
    assert_eq!(stats["overlapping_writes"], 3, "{stats}");
    let (_, user) = sim.get(&path).await;
    assert_eq!(
        user["title"], "x",
        "the abandoned write landed first, the later one last"
    );
}
