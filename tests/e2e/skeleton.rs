//! The walking skeleton: events over HTTP → ingest → RabbitMQ → scim-connector → simulator,
//! outcomes → status → gRPC; and a connector stopped by SIGTERM loses nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use scimrelay_proto::v1::{GetEventRequest, ListOutcomesRequest, Operation, OutcomeResult};
use scimrelay_tests::{Stack, StackOptions, expect};

const TOKEN_ENV: &str = "E2E_SCIM_TOKEN";

fn targets(shards: u16) -> String {
    format!(
        r#"targets:
  - id: app
    provider: scim
    tenants: [acme]
    base_url: "{{sim}}/acme/scim/v2"
    auth: {{ kind: bearer, token: {{ env: {TOKEN_ENV} }} }}
    shards: {shards}
    concurrency: {{ min: 1, max: 8 }}
    retry: {{ max_attempts: 10, base_delay_ms: 50, max_delay_ms: 1000 }}
"#
    )
}

async fn stack(label: &str, shards: u16) -> Stack {
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    Stack::start(StackOptions {
        label: label.into(),
        sim_args: vec!["--tenant".into(), format!("acme:scim:bearer={token}")],
        targets_yaml: targets(shards),
        env: BTreeMap::from([(TOKEN_ENV.to_owned(), token)]),
        connectors: vec!["scim-connector".into()],
        dir: None,
        ..Default::default()
    })
    .await
}

fn user(id: &str, version: u64, title: &str) -> Value {
    json!({"kind": "user.upserted", "tenant": "acme", "version": version,
           "user": {"id": id, "userName": format!("{id}@example.com"), "displayName": format!("User {id}"),
                    "name": {"givenName": "Given", "familyName": id},
                    "emails": [{"value": format!("{id}@example.com"), "type": "work", "primary": true}],
                    "title": title}})
}

fn samples() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/samples/events.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("samples")).expect("samples json")
}

#[tokio::test]
async fn sample_events_reach_the_simulator_and_the_status_service() {
    let stack = stack("skeleton", 4).await;
    let events = samples();
    let mut ids = Vec::new();
    for chunk in events.chunks(7) {
        let (status, answer) = stack.post_events(&Value::Array(chunk.to_vec())).await;
        assert_eq!(status, 202, "{answer}");
        ids.extend(Stack::accepted_ids(&answer));
    }
    assert_eq!(ids.len(), events.len());
    let outcomes = stack.wait_outcomes(&ids, 1, Duration::from_secs(60)).await;

    // Every event: exactly one outcome, succeeded, with the operation its kind implies.
    for (event, id) in events.iter().zip(&ids) {
        let o = &outcomes[id];
        assert_eq!(o.len(), 1, "{id}: {o:?}");
        let o = &o[0];
        assert_eq!(o.result, OutcomeResult::Succeeded as i32, "{id}: {o:?}");
        assert_eq!(o.target, "app");
        let want = match (event["kind"].as_str(), event["version"].as_u64()) {
            (Some("user.upserted"), Some(1)) | (Some("group.upserted"), _) => Operation::Created,
            (Some("user.upserted"), _) => Operation::Updated,
            (Some("user.deactivated"), _) => Operation::Deactivated,
            other => panic!("unexpected sample {other:?}"),
        };
        assert_eq!(o.operation, want as i32, "{id}: {o:?}");
        assert!(!o.remote_id.is_empty(), "{id}: remote id recorded");
    }

    // The simulator holds every subject in its final state, nothing twice.
    let (_, _, problems) = stack
        .settled("acme", Duration::from_secs(20), |u, g| {
            expect::check(u, g, &events, false)
        })
        .await;
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(stack.sim_users("acme").await.len(), 22);

    // The status service answers for every event id, and lists them in pages.
    let mut client = stack.status_client().await;
    for id in &ids {
        let r = client
            .get_event(GetEventRequest {
                event_id: id.clone(),
                ..Default::default()
            })
            .await
            .expect("GetEvent")
            .into_inner();
        assert_eq!(r.outcomes.len(), 1, "{id}");
        assert_eq!(&r.outcomes[0].event_id, id);
    }
    let mut seen = 0;
    let mut token = String::new();
    loop {
        let page = client
            .list_outcomes(ListOutcomesRequest {
                target: "app".into(),
                page_size: 10,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("ListOutcomes")
            .into_inner();
        seen += page.outcomes.len();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids.len());

    // A duplicate of an applied event changes nothing: the state of record knows this very
    // event applied its version, so the copy is a succeeded no-op (not "superseded", which would
    // say another event applied it), recorded as a duplicate.
    let (status, answer) = stack.post_events(&events[0]).await;
    assert_eq!(status, 202);
    let dup_id = Stack::accepted_ids(&answer);
    assert_eq!(
        dup_id,
        vec![ids[0].clone()],
        "the event id is the idempotency key"
    );
    let history = stack
        .wait_history(&ids[0], 2, Duration::from_secs(30))
        .await;
    assert!(
        history[1].duplicate,
        "the redelivered copy is marked duplicate: {history:?}"
    );
    assert_eq!(
        history[1].outcome.as_ref().map(|o| (o.result, o.operation)),
        Some((OutcomeResult::Succeeded as i32, Operation::Noop as i32)),
        "{history:?}"
    );
    let terminal = stack
        .wait_outcomes(&dup_id, 1, Duration::from_secs(5))
        .await;
    assert_eq!(
        terminal[&ids[0]].len(),
        1,
        "still exactly one terminal outcome"
    );
    assert_eq!(stack.sim_users("acme").await.len(), 22);

    // A newer version with the same desired state is a no-op: outcome noop, no request sent.
    let stats_before = stack.sim_stats("acme").await["total"].as_u64().unwrap_or(0);
    let mut same = events[0].clone();
    same["id"] = json!("evt-u001-v9");
    same["version"] = json!(9);
    let (status, answer) = stack.post_events(&same).await;
    assert_eq!(status, 202, "{answer}");
    let noop = stack
        .wait_outcomes(&Stack::accepted_ids(&answer), 1, Duration::from_secs(30))
        .await;
    let o = &noop["evt-u001-v9"][0];
    assert_eq!(
        (o.result, o.operation),
        (OutcomeResult::Succeeded as i32, Operation::Noop as i32),
        "{o:?}"
    );
    assert_eq!(
        stack.sim_stats("acme").await["total"].as_u64().unwrap_or(0),
        stats_before,
        "a no-op sends nothing to the provider"
    );
}

#[tokio::test]
async fn sigterm_stops_the_connector_cleanly_and_loses_nothing() {
    let mut stack = stack("sigterm", 4).await;
    // A provider taking 2–5 ms per request, so the 300 events take long enough to be cut.
    stack
        .set_faults("acme", &json!({"latency_ms": {"min": 2, "max": 5}}))
        .await;
    let events: Vec<Value> = (0..300)
        .map(|i| user(&format!("s{i:03}"), 1, "Engineer"))
        .collect();
    let mut ids = Vec::new();
    for chunk in events.chunks(100) {
        let (status, answer) = stack.post_events(&Value::Array(chunk.to_vec())).await;
        assert_eq!(status, 202, "{answer}");
        ids.extend(Stack::accepted_ids(&answer));
    }
    // Let it get going, then stop it mid-stream.
    let start = std::time::Instant::now();
    while stack.sim_users("acme").await.len() < 20 {
        assert!(start.elapsed() < Duration::from_secs(30), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connector = &mut stack.connectors[0];
    let (status, took) = connector
        .terminate(Duration::from_secs(10))
        .expect("connector exits within 10 s of SIGTERM");
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        connector.log()
    );
    assert!(took < Duration::from_secs(10));
    assert!(
        !connector.log().contains("Connection error"),
        "the broker connection closed with an error:\n{}",
        connector.log()
    );
    // The messages draining still reach the state of record: a take whose record were refused
    // would leave its subject claimed, and the next connector would wait out its fence.
    assert!(
        !connector.log().contains("the connector is stopping"),
        "the state of record stopped answering before the drain ended:\n{}",
        connector.log()
    );
    let done_before = stack.sim_users("acme").await.len();
    assert!(done_before < 300, "SIGTERM came after the work was done");

    // Nothing is held unacked: whatever was not processed is back in the queues, ready.
    let mut unacked = u64::MAX;
    for _ in 0..50 {
        unacked = (0..4)
            .filter_map(|s| stack.vhost.queue_depth(&format!("scimrelay.app.{s}")))
            .map(|(_, u)| u)
            .sum();
        if unacked == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        unacked, 0,
        "messages left unacked after the connector exited"
    );

    // A new connector finishes the rest: every event ends with exactly one terminal outcome.
    let mut env = stack.env.clone();
    let port = scimrelay_tests::free_port();
    env.insert(
        "SCIMRELAY_CONNECTOR_HTTP_ADDR".into(),
        format!("127.0.0.1:{port}"),
    );
    let _second =
        scimrelay_tests::Proc::start("scim-connector-2", "scim-connector", &env, &[], &stack.dir);
    let outcomes = stack.wait_outcomes(&ids, 1, Duration::from_secs(90)).await;
    for id in &ids {
        let o = &outcomes[id];
        assert_eq!(o.len(), 1, "{id} has {} outcomes: {o:?}", o.len());
        assert_eq!(o[0].result, OutcomeResult::Succeeded as i32, "{o:?}");
    }
    // Nothing the first connector finished was left unacked: a redelivery of a finished event
    // would be recorded again, as a duplicate, in the event's history.
    let mut client = stack.status_client().await;
    for id in &ids {
        let history = client
            .get_event(GetEventRequest {
                event_id: id.clone(),
                ..Default::default()
            })
            .await
            .expect("GetEvent")
            .into_inner()
            .history;
        assert!(
            history.iter().all(|r| !r.duplicate),
            "{id} was delivered again after its outcome (left unacked by the stopped connector): {history:?}"
        );
    }
    let users = stack.sim_users("acme").await;
    assert_eq!(users.len(), 300, "every user exactly once");
    assert!(expect::check(&users, &[], &events, false).is_empty());
}

/// A publisher channel that is only dropped is closed by the client library in the background;
/// when that close races the connection close the connection ends in an error and the close
/// never completes (a connector once hung on SIGTERM this way). Closing the publisher first
/// gives a clean close every time.
#[tokio::test]
async fn closing_the_publisher_before_the_connection_closes_cleanly() {
    use scimrelay_core::amqp;
    let vhost = scimrelay_tests::TestVhost::create("close");
    let mut unclean = 0;
    for _ in 0..30 {
        let conn = amqp::connect(&vhost.amqp_url(), "close-test")
            .await
            .expect("connect");
        let publisher = amqp::Publisher::new(&conn).await.expect("publisher");
        publisher.close().await;
        drop(publisher);
        let closed =
            tokio::time::timeout(amqp::CLOSE_TIMEOUT, conn.close(200, "test over".into())).await;
        if !matches!(closed, Ok(Ok(()))) {
            unclean += 1;
        }
    }
    assert_eq!(unclean, 0, "connection closes that failed or hung");
}

/// `SCIMRELAY_CONNECTOR_REPLICAS` splits each target's ceiling: one of 4 replicas of a target
/// with `rate_limit_per_sec: 40` sends at most 10 requests/s (plus the governor's burst of 2),
/// and a replica count of 0 stops the connector at start, naming the variable.
#[tokio::test]
async fn replicas_split_the_ceiling_and_zero_is_refused() {
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let stack = Stack::start(StackOptions {
        label: "replicas".into(),
        sim_args: vec!["--tenant".into(), format!("acme:scim:bearer={token}")],
        targets_yaml: targets(2).replace(
            "    shards: 2\n",
            "    shards: 2\n    rate_limit_per_sec: 40\n",
        ),
        env: BTreeMap::from([
            (TOKEN_ENV.to_owned(), token),
            ("SCIMRELAY_CONNECTOR_REPLICAS".to_owned(), "4".to_owned()),
        ]),
        connectors: vec!["scim-connector".into()],
        dir: None,
        ..Default::default()
    })
    .await;
    let events: Vec<Value> = (0..30)
        .map(|i| user(&format!("r{i:02}"), 1, "Engineer"))
        .collect();
    let (status, answer) = stack.post_events(&Value::Array(events)).await;
    assert_eq!(status, 202, "{answer}");
    let ids = Stack::accepted_ids(&answer);
    stack.wait_outcomes(&ids, 1, Duration::from_secs(60)).await;
    let stats = stack.sim_stats("acme").await;
    let (total, peak) = (
        stats["total"].as_u64().unwrap_or(0),
        stats["peak_per_sec"].as_u64().unwrap_or(u64::MAX),
    );
    assert!(total >= 60, "{stats}");
    assert!(
        peak <= 10 + 2,
        "one replica of four sent {peak} requests within a second (its share: 10/s): {stats}"
    );

    let mut env = stack.env.clone();
    env.insert("SCIMRELAY_CONNECTOR_REPLICAS".into(), "0".into());
    env.insert(
        "SCIMRELAY_CONNECTOR_HTTP_ADDR".into(),
        format!("127.0.0.1:{}", scimrelay_tests::free_port()),
    );
    let mut zero =
        scimrelay_tests::Proc::start("scim-connector-0r", "scim-connector", &env, &[], &stack.dir);
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = zero.try_wait() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "a replica count of 0 was accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(2), "{}", zero.log());
    assert!(
        zero.log().contains("SCIMRELAY_CONNECTOR_REPLICAS"),
        "{}",
        zero.log()
    );
}
