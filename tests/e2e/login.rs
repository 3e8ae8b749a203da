//! Login-time provisioning (docs/design.md, "Login-time provisioning"): a person's first login
//! overtakes a bulk backlog at a saturated target and its outcome comes back in the answer.
//!
//! A target with a quota of 50 requests/s (the simulator refuses more; the targets file sets a
//! ceiling just under it) holds a backlog of bulk creations — 20,000 in `make chaos`
//! (`SCIMRELAY_LOGIN_BACKLOG`), over 13 minutes of work at two requests per creation; 5,000 in
//! `make test`, over 3 minutes of it, far longer than the test looks. An interactive event for a new user is sent with
//! `Prefer: wait=10`: it must come back `created` in under 2 s, while the bulk keeps at least
//! 75% of the quota. Then the ceiling and the quota are lifted (a restarted connector, as an
//! operator would raise them), the backlog drains, and the delivery invariant is checked for
//! every event, the interactive one included.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use scimrelay_tests::{Stack, StackOptions, workload};

use crate::chaos::assert_invariant_of;

const TOKEN_ENV: &str = "LOGIN_SCIM_TOKEN";
/// The provider's quota, requests/s.
const QUOTA: f64 = 50.0;
/// Bulk creations queued before the login (`SCIMRELAY_LOGIN_BACKLOG`, default 5,000).
fn backlog() -> usize {
    std::env::var("SCIMRELAY_LOGIN_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}

fn target(ceiling: Option<f64>) -> String {
    let ceiling = ceiling.map_or(String::new(), |c| format!("    rate_limit_per_sec: {c}\n"));
    format!(
        r#"targets:
  - id: app
    provider: scim
    tenants: [acme]
    base_url: "{{sim}}/acme/scim/v2"
    auth: {{ kind: bearer, token: {{ env: {TOKEN_ENV} }} }}
    shards: 4
    interactive_share: 0.2
{ceiling}    concurrency: {{ min: 1, max: 16 }}
    deprovision_guard: {{ enabled: false }}
"#
    )
}

/// Requests the simulator answered without throttling them.
async fn served(stack: &Stack) -> u64 {
    let s = stack.sim_stats("acme").await;
    s["total"].as_u64().unwrap_or_default() - s["throttled"].as_u64().unwrap_or_default()
}

#[tokio::test]
async fn a_login_overtakes_a_bulk_backlog_and_waits_for_its_outcome() {
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let mut stack = Stack::start(StackOptions {
        label: "login".into(),
        sim_args: vec!["--tenant".into(), format!("acme:scim:bearer={token}")],
        targets_yaml: target(Some(QUOTA * 0.96)),
        env: BTreeMap::from([(TOKEN_ENV.to_owned(), token)]),
        connectors: vec!["scim-connector".into()],
        ..Default::default()
    })
    .await;
    stack
        .set_faults(
            "acme",
            &json!({"rate_limit": {"per_sec": QUOTA, "burst": 5}}),
        )
        .await;

    // The backlog: batches, so bulk by default.
    let bulk: Vec<Value> = (0..backlog())
        .map(|i| workload::user_event(&format!("b{i:05}"), 1, "user.upserted", "acme"))
        .collect();
    let mut ids = Vec::new();
    for chunk in bulk.chunks(1000) {
        let (status, answer) = stack.post_events(&json!({"events": chunk})).await;
        assert_eq!(status, 202, "{answer}");
        ids.extend(Stack::accepted_ids(&answer));
    }
    // Saturated for a while: the connector holds a full window of bulk requests waiting.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (before, began) = (served(&stack).await, Instant::now());
    let login = workload::user_event("first-login", 1, "user.upserted", "acme");
    let answer = stack
        .http()
        .post(format!("{}/v1/events", stack.ingest_http))
        .header("Prefer", "wait=10")
        .json(&login)
        .send()
        .await
        .expect("post the login");
    let took = began.elapsed();
    let status = answer.status().as_u16();
    let answer: Value = answer.json().await.expect("JSON answer");
    eprintln!(
        "login answered {status} in {} ms: {answer}",
        took.as_millis()
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcomes"][0]["operation"], "created", "{answer}");
    assert_eq!(answer["outcomes"][0]["result"], "succeeded", "{answer}");
    assert!(
        !answer["outcomes"][0]["remoteId"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{answer}"
    );
    assert!(took < Duration::from_secs(2), "the login took {took:?}");
    ids.extend(Stack::accepted_ids(&answer));

    // The bulk kept flowing meanwhile.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(began.elapsed())).await;
    let rate = (served(&stack).await - before) as f64 / began.elapsed().as_secs_f64();
    eprintln!(
        "bulk meanwhile: {rate:.1} requests/s of a {QUOTA} requests/s quota ({:.0}%)",
        100.0 * rate / QUOTA
    );
    assert!(rate >= 0.75 * QUOTA, "bulk at {rate:.1} requests/s");

    // Lift the quota and the ceiling, drain, and check every event.
    stack.set_faults("acme", &json!({})).await;
    std::fs::write(
        stack.dir.join("targets.yaml"),
        target(None).replace("{sim}", &stack.sim_url),
    )
    .expect("rewrite the targets file");
    stack
        .restart_connector(0, "scim-connector-unthrottled")
        .await;
    let mut events = bulk;
    events.push(login);
    assert_invariant_of(&stack, "acme", &events, &ids, Duration::from_secs(300)).await;
}
