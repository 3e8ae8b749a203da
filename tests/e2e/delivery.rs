//! Delivery under faults: transient provider errors are retried through the delay tiers until
//! every event succeeds, and a poison message is parked with an outcome while its shard flows.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};

use scimrelay_proto::v1::{ListOutcomesRequest, OutcomeResult};
use scimrelay_tests::{Stack, StackOptions, expect};

const TOKEN_ENV: &str = "E2E_SCIM_TOKEN";

async fn stack(label: &str, max_attempts: u32) -> Stack {
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    Stack::start(StackOptions {
        label: label.into(),
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
    retry: {{ max_attempts: {max_attempts}, base_delay_ms: 100, max_delay_ms: 500 }}
"#
        ),
        env: BTreeMap::from([(TOKEN_ENV.to_owned(), token)]),
        connectors: vec!["scim-connector".into()],
        dir: None,
        ..Default::default()
    })
    .await
}

fn user(id: &str, version: u64) -> Value {
    json!({"kind": "user.upserted", "tenant": "acme", "version": version,
           "user": {"id": id, "userName": format!("{id}@example.com"), "displayName": format!("User {id} v{version}"),
                    "name": {"givenName": "G", "familyName": id}}})
}

#[tokio::test]
async fn transient_errors_are_retried_until_every_event_succeeds() {
    // With 30% of requests failing and up to three requests per attempt, an attempt fails
    // about two times in three: 12 attempts would dead-letter one of 80 events in ~5% of runs;
    // 40 make that negligible (0.66^40 ≈ 6e-8 per event) while the test stays about retrying.
    let stack = stack("retry", 40).await;
    stack
        .set_faults(
            "acme",
            &json!({"error_rate": 0.3, "error_statuses": [500, 502, 503]}),
        )
        .await;
    let mut events: Vec<Value> = (0..60).map(|i| user(&format!("r{i:02}"), 1)).collect();
    events.extend((0..20).map(|i| user(&format!("r{i:02}"), 2)));
    let mut ids = Vec::new();
    for chunk in events.chunks(40) {
        let (status, answer) = stack.post_events(&Value::Array(chunk.to_vec())).await;
        assert_eq!(status, 202, "{answer}");
        ids.extend(Stack::accepted_ids(&answer));
    }
    let outcomes = stack.wait_outcomes(&ids, 1, Duration::from_secs(120)).await;
    let mut retried = 0;
    for id in &ids {
        let o = &outcomes[id];
        assert_eq!(o.len(), 1, "{id}: {o:?}");
        let r = OutcomeResult::try_from(o[0].result).unwrap_or(OutcomeResult::Unspecified);
        assert!(
            matches!(r, OutcomeResult::Succeeded | OutcomeResult::Superseded),
            "{id}: {:?}",
            o[0]
        );
        retried += usize::from(o[0].attempt > 1);
    }
    assert!(
        retried > 0,
        "with 30% errors some events needed more than one attempt"
    );
    stack.set_faults("acme", &json!({})).await;
    let users = stack.sim_users("acme").await;
    assert_eq!(users.len(), 60, "no user created twice");
    let problems = expect::check(&users, &[], &events, false);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test]
async fn a_poison_message_is_parked_with_an_outcome_and_its_shard_keeps_flowing() {
    let stack = stack("poison", 12).await;
    let conn = Connection::connect(&stack.vhost.amqp_url(), ConnectionProperties::default())
        .await
        .expect("amqp");
    let ch = conn.create_channel().await.expect("channel");
    for shard in 0..2 {
        ch.basic_publish(
            "scimrelay.events".into(),
            format!("scim.app.{shard}").as_str().into(),
            BasicPublishOptions::default(),
            b"\xff\x00 definitely not protobuf",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    }
    // Both shards keep flowing after their poison message.
    let events: Vec<Value> = (0..10).map(|i| user(&format!("p{i}"), 1)).collect();
    let (status, answer) = stack.post_events(&Value::Array(events.clone())).await;
    assert_eq!(status, 202, "{answer}");
    let ids = Stack::accepted_ids(&answer);
    let outcomes = stack.wait_outcomes(&ids, 1, Duration::from_secs(60)).await;
    assert!(
        ids.iter()
            .all(|id| outcomes[id][0].result == OutcomeResult::Succeeded as i32)
    );

    let mut client = stack.status_client().await;
    let page = client
        .list_outcomes(ListOutcomesRequest {
            target: "app".into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let parked: Vec<_> = page
        .outcomes
        .iter()
        .filter_map(|r| r.outcome.as_ref())
        .filter(|o| o.result == OutcomeResult::DeadLettered as i32)
        .collect();
    assert_eq!(
        parked.len(),
        2,
        "one dead-lettered outcome per poison message"
    );
    assert!(parked.iter().all(|o| o.detail.contains("undecodable")));
    assert!(
        parked
            .iter()
            .all(|o| o.event_id.starts_with("undecodable-")),
        "{parked:?}"
    );
    assert_ne!(
        parked[0].event_id, parked[1].event_id,
        "two poison messages, two outcomes"
    );
    let mut depth = 0;
    for _ in 0..50 {
        depth = stack
            .vhost
            .queue_depth("scimrelay.dead")
            .map(|(ready, _)| ready)
            .unwrap_or(0);
        if depth == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(depth, 2, "both poison messages are in the parking lot");
}
