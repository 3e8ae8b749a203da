//! The mass-deprovisioning guard: deactivations beyond the configured share of a target's users
//! are held (not sent, no outcome), listed by the status service, and delivered or dropped by an
//! operator with `scimrelayctl held`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use scimrelay_proto::v1::{GetEventRequest, HeldEvent, ListHeldRequest, OutcomeResult};
use scimrelay_tests::{Stack, StackOptions, bin_path};

const TOKEN_ENV: &str = "E2E_SCIM_TOKEN";
const USERS: usize = 20;

async fn stack() -> Stack {
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    Stack::start(StackOptions {
        label: "guard".into(),
        sim_args: vec!["--tenant".into(), format!("acme:scim:bearer={token}")],
        targets_yaml: format!(
            r#"targets:
  - id: app
    provider: scim
    tenants: [acme]
    base_url: "{{sim}}/acme/scim/v2"
    auth: {{ kind: bearer, token: {{ env: {TOKEN_ENV} }} }}
    shards: 2
    concurrency: {{ min: 1, max: 8 }}
    deprovision_guard: {{ max_share: 0.2, window_secs: 600, min_users: 10 }}
"#
        ),
        env: BTreeMap::from([(TOKEN_ENV.to_owned(), token)]),
        connectors: vec!["scim-connector".into()],
        dir: None,
        ..Default::default()
    })
    .await
}

fn user(i: usize) -> Value {
    let id = format!("g{i:02}");
    json!({"id": format!("evt-{id}-v1"), "kind": "user.upserted", "tenant": "acme", "version": 1,
           "user": {"id": id, "userName": format!("{id}@example.com"), "displayName": format!("User {id}"),
                    "name": {"givenName": "G", "familyName": id}}})
}

fn deactivation(i: usize) -> Value {
    let id = format!("g{i:02}");
    json!({"id": format!("evt-{id}-v2"), "kind": "user.deactivated", "tenant": "acme", "version": 2,
           "user": {"id": id}})
}

async fn held(stack: &Stack) -> Vec<HeldEvent> {
    let mut client = stack.status_client().await;
    client
        .list_held(ListHeldRequest {
            target: "app".into(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .expect("ListHeld")
        .into_inner()
        .held
}

/// Waits until exactly `n` events are held and stays there for a moment.
async fn wait_held(stack: &Stack, n: usize) -> Vec<HeldEvent> {
    let start = Instant::now();
    loop {
        let h = held(stack).await;
        if h.len() == n {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let again = held(stack).await;
            assert_eq!(again.len(), n, "held count moved: {again:?}");
            return again;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "expected {n} held, have {}: {h:?}",
            h.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn inactive_users(stack: &Stack) -> usize {
    stack
        .sim_users("acme")
        .await
        .iter()
        .filter(|u| u["active"] == json!(false))
        .count()
}

fn held_id(h: &HeldEvent) -> String {
    h.delivery
        .as_ref()
        .and_then(|d| d.event.as_ref())
        .map(|e| e.id.clone())
        .unwrap_or_default()
}

async fn ctl(stack: &Stack, args: &[&str]) -> String {
    let out = tokio::process::Command::new(bin_path("scimrelayctl"))
        .args(stack.ctl_args())
        .args(args)
        .output()
        .await
        .expect("scimrelayctl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "scimrelayctl {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn deprovisioning_beyond_the_share_is_held_until_an_operator_acts() {
    let stack = stack().await;
    let users: Vec<Value> = (0..USERS).map(user).collect();
    let (status, answer) = stack.post_events(&Value::Array(users)).await;
    assert_eq!(status, 202, "{answer}");
    stack
        .wait_outcomes(&Stack::accepted_ids(&answer), 1, Duration::from_secs(60))
        .await;

    // 10 of 20 users leave at once; 20% of 20 may go within the window.
    let (status, answer) = stack
        .post_events(&Value::Array((0..10).map(deactivation).collect()))
        .await;
    assert_eq!(status, 202, "{answer}");
    let all: BTreeSet<String> = Stack::accepted_ids(&answer).into_iter().collect();
    let held_now = wait_held(&stack, 6).await;
    let held_ids: BTreeSet<String> = held_now.iter().map(held_id).collect();
    assert_eq!(held_ids.len(), 6, "{held_now:?}");
    for h in &held_now {
        assert_eq!(
            h.reason, "4 of 20 users deprovisioned within 600 s (limit 20%)",
            "{h:?}"
        );
        assert!(h.routing_key.starts_with("scim.app."), "{h:?}");
    }
    let admitted: Vec<String> = all.difference(&held_ids).cloned().collect();
    assert_eq!(admitted.len(), 4);
    let done = stack
        .wait_outcomes(&admitted, 1, Duration::from_secs(30))
        .await;
    for id in &admitted {
        assert_eq!(done[id][0].result, OutcomeResult::Succeeded as i32, "{id}");
    }
    assert_eq!(inactive_users(&stack).await, 4, "held events are not sent");

    // A held event has no outcome: GetEvent shows it held.
    let one = held_ids.iter().next().cloned().expect("a held id");
    let ev = stack
        .status_client()
        .await
        .get_event(GetEventRequest {
            event_id: one.clone(),
            ..Default::default()
        })
        .await
        .expect("GetEvent")
        .into_inner();
    assert!(ev.outcomes.is_empty(), "{ev:?}");
    assert_eq!(ev.held.len(), 1, "{ev:?}");

    // The operator lists them, releases three (delivered although the window is full) …
    let listed = ctl(&stack, &["held", "list", "--target", "app"]).await;
    for id in &held_ids {
        assert!(listed.contains(id.as_str()), "{id} not in:\n{listed}");
    }
    let release: Vec<String> = held_ids.iter().take(3).cloned().collect();
    let mut args = vec!["held", "release"];
    for id in &release {
        args.extend(["--event", id.as_str()]);
    }
    ctl(&stack, &args).await;
    let released = stack
        .wait_outcomes(&release, 1, Duration::from_secs(30))
        .await;
    for id in &release {
        assert_eq!(
            released[id][0].result,
            OutcomeResult::Succeeded as i32,
            "{id}"
        );
    }
    assert_eq!(inactive_users(&stack).await, 7);

    // … and drops the rest: a terminal failed outcome each, nothing sent.
    ctl(&stack, &["held", "drop", "--target", "app"]).await;
    let rest: Vec<String> = held_ids
        .difference(&release.iter().cloned().collect())
        .cloned()
        .collect();
    let dropped = stack.wait_outcomes(&rest, 1, Duration::from_secs(30)).await;
    for id in &rest {
        let o = &dropped[id][0];
        assert_eq!(o.result, OutcomeResult::Failed as i32, "{o:?}");
        assert!(o.detail.contains("dropped by operator"), "{o:?}");
    }
    assert!(held(&stack).await.is_empty());
    assert_eq!(inactive_users(&stack).await, 7);

    // Every deactivation ended with exactly one terminal outcome.
    let ids: Vec<String> = all.iter().cloned().collect();
    let finals = stack.wait_outcomes(&ids, 1, Duration::from_secs(5)).await;
    for id in &ids {
        assert_eq!(finals[id].len(), 1, "{id}: {:?}", finals[id]);
    }

    // Releases do not reopen the window: the next deactivation is held again.
    let (status, answer) = stack.post_events(&deactivation(15)).await;
    assert_eq!(status, 202, "{answer}");
    let again = wait_held(&stack, 1).await;
    assert_eq!(held_id(&again[0]), "evt-g15-v2");
}
